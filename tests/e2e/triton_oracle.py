"""A real Triton Inference Server with the test interface of conftest.Nereid.

The tritonserver that scripts/install-triton.sh installs into .triton/ (the
one bundled in the PyPI wheel nvidia-pytriton, Triton 2.51 with only its
Python backend). Used by tests/e2e/test_python_oracle.py (Nereid's Python
backend tests run against Triton) and tests/compat/ (the same requests sent
to both servers, answers compared).

`available()` says whether the install is there; nothing here runs the
installer.
"""

from __future__ import annotations

import functools
import subprocess

from conftest import ROOT, Nereid, _free_ports

TRITON_ENV_FILE = ROOT / ".triton" / "triton-env.sh"

# Triton opens its endpoints only once the start-up loads are done.
TRITON_START_TIMEOUT_S = 120


def available() -> bool:
    return TRITON_ENV_FILE.exists()


@functools.cache
def triton_env() -> dict:
    """os.environ plus what triton-env.sh exports."""
    out = subprocess.run(
        ["bash", "-c", f"source '{TRITON_ENV_FILE}' && env -0"], check=True, capture_output=True, timeout=30
    ).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


class Triton(Nereid):
    """A tritonserver process with Nereid's test interface."""

    kind = "triton"

    def argv(self):
        env = triton_env()
        argv = [
            env["TRITONSERVER"],
            f"--model-repository={self.repo}",
            f"--backend-directory={env['TRITON_BACKENDS']}",
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
            self.argv(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=triton_env()
        )
        if wait:
            self.wait_live(timeout=TRITON_START_TIMEOUT_S)
        return self
