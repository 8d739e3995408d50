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

import pytest

from conftest import ROOT
from triton_oracle import Triton, available, triton_env

if not available():
    pytest.skip(
        "the .triton/ install is missing: run scripts/install-triton.sh for the Triton oracle",
        allow_module_level=True,
    )

from test_python_backend import *  # noqa: E402,F401,F403 - the tests to run again


@pytest.fixture(scope="module")
def server_cls():  # noqa: F811 - overrides test_python_backend's
    return Triton


@pytest.fixture(scope="module")
def stub_python():  # noqa: F811 - overrides test_python_backend's
    # Triton's stub was built against numpy 1.x: an execution environment
    # with the tests' numpy 2 gets output tensors with no data.
    return ROOT / ".triton" / "bin" / "python"


assert os.path.exists(triton_env()["TRITONSERVER"]), triton_env()["TRITONSERVER"]
