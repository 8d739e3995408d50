"""Process lifecycle: graceful shutdown with requests in flight, flag
handling, start-up failures."""

import signal
import socket
import threading
import time

import numpy as np
import pytest

from conftest import IN_FLIGHT_WAIT_S, wait_for, write_identity_model
from e2e_util import assert_tensor_equal, grpc_inputs


def test_sigterm_drains_in_flight_requests(nereid, good_repo):
    """SIGTERM stops intake, lets executing requests finish, exits 0."""
    s = nereid.start(good_repo)
    data = np.array([1.0, 2.0], dtype=np.float32)
    box = {}

    def grpc_call():
        try:
            box["grpc"] = s.grpc().infer("identity_delay", grpc_inputs([data], ["FP32"]), client_timeout=60)
        except Exception as e:  # noqa: BLE001 - reported below
            box["grpc_error"] = e

    def http_call():
        body = {"inputs": [{"name": "INPUT0", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
        try:
            box["http"] = s.request("POST", "/v2/models/identity_delay/infer", body, timeout=60)
        except Exception as e:  # noqa: BLE001 - reported below
            box["http_error"] = e

    threads = [threading.Thread(target=grpc_call), threading.Thread(target=http_call)]
    for t in threads:
        t.start()
    time.sleep(IN_FLIGHT_WAIT_S)  # both requests are now executing (execute_delay_ms)
    s.proc.send_signal(signal.SIGTERM)
    rc = s.wait_exit(30)
    for t in threads:
        t.join(30)
    assert rc == 0, s.log_tail()
    assert "grpc_error" not in box, box.get("grpc_error")
    assert "http_error" not in box, box.get("http_error")
    assert_tensor_equal(box["grpc"].as_numpy("OUTPUT0"), data)
    assert box["http"].status == 200, box["http"]
    assert box["http"].json()["outputs"][0]["data"] == [1.0, 2.0]


def test_sigint_also_shuts_down_gracefully(nereid, good_repo):
    s = nereid.start(good_repo)
    s.proc.send_signal(signal.SIGINT)
    assert s.wait_exit(30) == 0, s.log_tail()


def test_model_store_alias(nereid, good_repo):
    s = nereid.start(None, [f"--model-store={good_repo}"])
    assert s.http().is_model_ready("identity_fp32")


def test_two_repositories(nereid, good_repo, tmp_path):
    """--model-repository is repeatable; models from both are served."""
    second = tmp_path / "second"
    write_identity_model(second, "identity_second", [("INT8", [-1])])
    s = nereid.start(good_repo, [f"--model-repository={second}"])
    assert s.http().is_model_ready("identity_fp32")
    assert s.http().is_model_ready("identity_second")


def test_allow_grpc_false(nereid, good_repo):
    s = nereid.start(good_repo, ["--allow-grpc=false"])
    assert s.http().is_server_live()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.grpc_port), timeout=2).close()


def test_log_verbose_flag_accepted(nereid, good_repo):
    s = nereid.start(good_repo, ["--log-verbose=1", "--log-info=true", "--log-warning=true", "--log-error=true"])
    assert s.http().is_server_live()


@pytest.mark.parametrize(
    "flags",
    [
        ["--model-control-mode=bogus"],
        ["--no-such-flag=1"],
        ["--http-port=not-a-port"],
        ["--exit-on-error=maybe"],
    ],
)
def test_bad_flags_exit_nonzero(nereid, good_repo, flags):
    s = nereid.start(good_repo, flags, wait=False)
    rc = s.wait_exit(30)
    assert rc != 0, s.log_tail()


def test_missing_repository_exits_nonzero(nereid, tmp_path):
    s = nereid.start(tmp_path / "does_not_exist", wait=False)
    assert s.wait_exit(30) != 0, s.log_tail()


def test_ready_after_start(nereid, good_repo):
    """With every model loaded, the server is ready as soon as it is live."""
    s = nereid.start(good_repo)
    wait_for(lambda: s.http().is_server_ready(), timeout=10, what="server ready")
