"""Statistics extension: exact counts after a known number of requests.

identity_stats and identity_stats_batch are used by no other test, so their
counts are exactly what these tests send.
"""

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
