"""test_python_backend.py against a real Triton Inference Server: the oracle.

Every test of that module runs here a second time with the server swapped for
the tritonserver that scripts/install-triton.sh installs into .triton/ (the
one bundled in the PyPI wheel nvidia-pytriton, Triton 2.51 with only its
Python backend). The ONNX models the examples call are replaced by Python
models with the same configuration (test_python_backend.python_standin).
A test that fails here expects something Triton does not do, so the Nereid
test is wrong, not the server.

Skipped when .triton/ is absent; run `scripts/install-triton.sh` first, then
    .venv/bin/python -m pytest tests/e2e/test_python_oracle.py
"""

import os
import subprocess

import pytest

from conftest import ROOT, Nereid, _free_ports

TRITON_ENV_FILE = ROOT / ".triton" / "triton-env.sh"

if not TRITON_ENV_FILE.exists():
    pytest.skip(
        f"{TRITON_ENV_FILE} is missing: run scripts/install-triton.sh for the Triton oracle",
        allow_module_level=True,
    )

from test_python_backend import *  # noqa: E402,F401,F403 - the tests to run again


def _triton_env() -> dict:
    """os.environ plus what triton-env.sh exports."""
    out = subprocess.run(
        ["bash", "-c", f"source '{TRITON_ENV_FILE}' && env -0"], check=True, capture_output=True, timeout=30
    ).stdout
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    return env


TRITON_ENV = _triton_env()


class Triton(Nereid):
    """A tritonserver process with Nereid's test interface."""

    kind = "triton"

    def argv(self):
        argv = [
            TRITON_ENV["TRITONSERVER"],
            f"--model-repository={self.repo}",
            f"--backend-directory={TRITON_ENV['TRITON_BACKENDS']}",
            # Each server its own shared-memory names: several run at once.
            f"--backend-config=python,shm-region-prefix-name=nereid_oracle_{self.http_port}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
        ]
        return argv + list(self.flags)

    def start(self, wait=True):
        self.http_port, self.grpc_port = _free_ports(2)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=TRITON_ENV
        )
        if wait:
            # Triton opens its endpoints only once the start-up loads are done.
            self.wait_live(timeout=120)
        return self


@pytest.fixture(scope="module")
def server_cls():  # noqa: F811 - overrides test_python_backend's
    return Triton


@pytest.fixture(scope="module")
def stub_python():  # noqa: F811 - overrides test_python_backend's
    # Triton's stub was built against numpy 1.x: an execution environment
    # with the tests' numpy 2 gets output tensors with no data.
    return ROOT / ".triton" / "bin" / "python"


assert os.path.exists(TRITON_ENV["TRITONSERVER"]), TRITON_ENV["TRITONSERVER"]
