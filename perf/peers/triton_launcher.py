"""The real Triton Inference Server as a peer: how to start the tritonserver
that scripts/install-triton.sh installs into .triton/, and the repository of
Python-backend models it serves.

The install is the PyPI wheel nvidia-pytriton's bundled Triton 2.51, whose
only backend is Python. So Triton serves the Python twins of the harness's
ONNX models (PYTHON_TWINS: the same tensors, shapes and batching), under the
ONNX models' names so that one perf_analyzer command line measures every
server. Nereid serves the same Python repository as `nereid-python`.

Standard library only: perf/runner.py (the report venv) and
perf/python_bench.py (the project venv) both use it.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / ".triton"

# Harness model -> the example Python model with the same tensors: add_sub is
# `simple` (OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 over 16
# INT32), identity_python is identity_fp32 (FP32 [-1] echoed). Both have one
# CPU instance.
PYTHON_TWINS = {"simple": "add_sub", "identity_fp32": "identity_python"}


class NotInstalled(Exception):
    """The Triton install is missing or incomplete."""


def env_file(triton_dir: pathlib.Path = DEFAULT_DIR) -> pathlib.Path:
    return pathlib.Path(triton_dir) / "triton-env.sh"


def missing(triton_dir: pathlib.Path = DEFAULT_DIR) -> str | None:
    """Why Triton cannot run from triton_dir, or None when it can."""
    f = env_file(triton_dir)
    if not f.exists():
        return f"{f} is missing: run scripts/install-triton.sh to measure Triton"
    return None


def environment(triton_dir: pathlib.Path = DEFAULT_DIR) -> dict:
    """os.environ plus what triton-env.sh exports (TRITONSERVER,
    TRITON_BACKENDS, the library path and the venv's bin on PATH, whose
    python the Python backend's stubs run in)."""
    why = missing(triton_dir)
    if why:
        raise NotInstalled(why)
    out = subprocess.run(["bash", "-c", 'source "$1" && env -0', "bash", str(env_file(triton_dir))],
                         check=True, capture_output=True, timeout=30).stdout
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    for key in ("TRITONSERVER", "TRITON_BACKENDS"):
        if not env.get(key):
            raise NotInstalled(f"{env_file(triton_dir)} does not set {key}: rerun scripts/install-triton.sh")
    if not os.access(env["TRITONSERVER"], os.X_OK):
        raise NotInstalled(f"{env['TRITONSERVER']} is not an executable: rerun scripts/install-triton.sh")
    return env


def command(env: dict, repository: pathlib.Path, http_port: int, grpc_port: int, metrics_port: int,
            shm_prefix: str) -> list[str]:
    """tritonserver's command line: loopback only, every model of the
    repository loaded at start-up, per-request logging off (its default).
    shm_prefix names the Python backend's shared-memory regions: each
    server started at the same time needs its own."""
    return [
        env["TRITONSERVER"],
        f"--model-repository={repository}",
        f"--backend-directory={env['TRITON_BACKENDS']}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        "--http-address=127.0.0.1", f"--http-port={http_port}",
        "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        "--log-verbose=0",
    ]


def python_repository(examples: pathlib.Path, dst: pathlib.Path, models) -> dict[str, str]:
    """Copies the Python twin of each of models that has one into dst,
    named after the model; returns model -> twin for those copied."""
    copied = {}
    for model in models:
        twin = PYTHON_TWINS.get(model)
        if twin is None:
            continue
        src = pathlib.Path(examples) / twin
        if not (src / "config.pbtxt").exists():
            raise FileNotFoundError(f"{src}/config.pbtxt: the Python twin of {model} is missing")
        target = pathlib.Path(dst) / model
        shutil.copytree(src, target, dirs_exist_ok=True)
        text = (src / "config.pbtxt").read_text()
        text, n = re.subn(r'^name:\s*"[^"]*"', f'name: "{model}"', text, count=1, flags=re.M)
        if n != 1:
            raise ValueError(f"{src}/config.pbtxt has no name line to rename")
        (target / "config.pbtxt").write_text(text)
        copied[model] = twin
    return copied
