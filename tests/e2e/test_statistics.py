"""Statistics extension: exact counts after a known number of requests.

identity_stats and identity_stats_batch are used by no other test, so their
counts are exactly what these tests send.
"""

import shutil

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from e2e_util import assert_tensor_equal, grpc_inputs, http_inputs


def _http_stats(server, model, version=""):
    stats = server.http().get_inference_statistics(model, version)
    (entry,) = stats["model_stats"]
    return entry


def _grpc_stats(server, model):
    stats = server.grpc().get_inference_statistics(model, as_json=True)
    (entry,) = stats["model_stats"]
    return entry


def test_statistics_nonbatching(server):
    data = np.array([1, 2, 3], dtype=np.int32)
    for _ in range(5):
        r = server.http().infer("identity_stats", http_inputs([data], ["INT32"]))
        assert_tensor_equal(r.as_numpy("OUTPUT0"), data)
    for _ in range(3):
        g = server.grpc().infer("identity_stats", grpc_inputs([data], ["INT32"]))
        assert_tensor_equal(g.as_numpy("OUTPUT0"), data)

    s = _http_stats(server, "identity_stats")
    assert s["name"] == "identity_stats"
    assert s["version"] == "1"
    assert s["inference_count"] == 8
    assert s["execution_count"] == 8
    assert s["inference_stats"]["success"]["count"] == 8
    assert s["inference_stats"]["success"]["ns"] > 0
    assert s["inference_stats"]["compute_infer"]["count"] == 8
    assert s["last_inference"] > 0  # ms since the epoch

    # The gRPC view of the same numbers (uint64 are strings in proto JSON).
    g = _grpc_stats(server, "identity_stats")
    assert int(g["inference_count"]) == 8
    assert int(g["execution_count"]) == 8
    assert int(g["inference_stats"]["success"]["count"]) == 8

    # Versioned query.
    assert _http_stats(server, "identity_stats", "1")["inference_count"] == 8


def test_statistics_batching_counts_batch_size(server):
    """inference_count counts batch elements; execution_count executions."""
    data = np.arange(6, dtype=np.float32).reshape(2, 3)  # batch of 2
    for _ in range(3):
        r = server.http().infer("identity_stats_batch", http_inputs([data], ["FP32"]))
        assert_tensor_equal(r.as_numpy("OUTPUT0"), data)
    s = _http_stats(server, "identity_stats_batch")
    assert s["inference_count"] == 6
    assert s["execution_count"] == 3
    assert s["inference_stats"]["success"]["count"] == 3
    batch_sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in s.get("batch_stats", [])}
    assert batch_sizes == {2: 3}


def test_statistics_all_models(server):
    stats = server.http().get_inference_statistics()
    names = {m["name"] for m in stats["model_stats"]}
    assert {"identity_fp32", "identity_bytes", "identity_stats"} <= names


def test_statistics_unknown_model(server):
    # Triton 2.51's answers (checked by make compat): 400 / INVALID_ARGUMENT.
    with pytest.raises(InferenceServerException) as e:
        server.http().get_inference_statistics("no_such_model")
    assert e.value.status() == "400"
    assert "requested model 'no_such_model' is not available" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        server.grpc().get_inference_statistics("no_such_model")
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as e:
        server.http().get_inference_statistics("identity_fp32", "9")
    assert e.value.status() == "400"
    assert "requested model version is not available for model 'identity_fp32'" in e.value.message()


# --------------------------------------------------------------------------
# Python models: their phases. A server of its own, so that the counts are
# exactly what the test sends.


@pytest.fixture
def python_stats_server(nereid, tmp_path):
    from conftest import EXAMPLES

    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "add_sub", repo / "add_sub")
    return nereid.start(repo)


def _counts(entry):
    st = entry["inference_stats"]
    return {
        "success": st["success"]["count"], "fail": st["fail"]["count"],
        "inference_count": entry["inference_count"], "execution_count": entry["execution_count"],
        **{k: st[k]["count"] for k in ("queue", "compute_input", "compute_infer", "compute_output")},
    }


def test_statistics_python_phases(python_stats_server):
    """A Python model's compute_input (its inputs copied into the stub's
    memory) and compute_output (its outputs read back) take time, in
    inference_stats and batch_stats alike, as Triton's do."""
    s = python_stats_server
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    for _ in range(3):
        r = s.http().infer("add_sub", http_inputs([a, a], ["INT32", "INT32"]))
        assert_tensor_equal(r.as_numpy("OUTPUT0"), a + a)
    e = _http_stats(s, "add_sub")
    assert _counts(e) == {"success": 3, "fail": 0, "inference_count": 3, "execution_count": 3, "queue": 3,
                          "compute_input": 3, "compute_infer": 3, "compute_output": 3}
    st = e["inference_stats"]
    (b,) = e["batch_stats"]
    for where, d in (("inference_stats", st), ("batch_stats", b)):
        for phase in ("compute_input", "compute_infer", "compute_output"):
            assert d[phase]["count"] == 3 and d[phase]["ns"] > 0, (where, phase, d[phase])
    assert st["compute_input"]["ns"] + st["compute_infer"]["ns"] + st["compute_output"]["ns"] <= st["success"]["ns"]
