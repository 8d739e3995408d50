"""Dynamic batcher, seen from tritonclient: concurrent requests to a model
with dynamic_batching run as fewer, larger executions; statistics show it.
"""

import concurrent.futures

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from conftest import identity_config, write_model
from e2e_util import assert_tensor_equal, http_inputs

DELAY_MS = 300


def _batched_model(repo, name, extra):
    text = identity_config(name, [("FP32", [4])], max_batch_size=8,
                           parameters={"execute_delay_ms": str(DELAY_MS)})
    write_model(repo, name, text + extra)


def test_concurrent_requests_are_batched(nereid, fresh_repo):
    _batched_model(fresh_repo, "batched",
                   "dynamic_batching { max_queue_delay_microseconds: 100000 }\n"
                   'instance_group [ { count: 1 kind: KIND_CPU } ]\n')
    s = nereid.start(fresh_repo)
    n = 8
    data = [np.full((1, 4), i, dtype=np.float32) for i in range(n)]

    def one(i):
        r = s.http().infer("batched", http_inputs([data[i]], ["FP32"]))
        return r.as_numpy("OUTPUT0")

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        outs = list(pool.map(one, range(n)))
    for i, out in enumerate(outs):
        assert_tensor_equal(out, data[i])  # each caller gets its own rows back

    stats = s.http().get_inference_statistics("batched")["model_stats"][0]
    assert stats["inference_count"] == n
    assert stats["inference_stats"]["success"]["count"] == n
    # One instance with a 300 ms execution and a 100 ms queue delay: the 8
    # requests cannot have run one by one.
    assert stats["execution_count"] < n, stats
    assert max(b["batch_size"] for b in stats["batch_stats"]) > 1, stats["batch_stats"]
    assert sum(b["compute_infer"]["count"] for b in stats["batch_stats"]) == stats["execution_count"]


def test_queue_full_is_unavailable(nereid, fresh_repo):
    _batched_model(fresh_repo, "tiny_queue",
                   "dynamic_batching { default_queue_policy { max_queue_size: 1 } }\n"
                   'instance_group [ { count: 1 kind: KIND_CPU } ]\n')
    s = nereid.start(fresh_repo)
    row = np.zeros((1, 4), dtype=np.float32)

    def one(_):
        try:
            s.http().infer("tiny_queue", http_inputs([row], ["FP32"]))
            return "ok"
        except InferenceServerException as e:
            return (e.status(), e.message())

    # Executions take 300 ms and each takes a whole batch; with one request
    # allowed to wait, a burst of 12 must see some refused.
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    refused = [r for r in results if r != "ok"]
    assert refused, results
    for status, message in refused:
        assert status == "503"
        assert "Exceeds maximum queue size" in message
    assert s.http().is_server_live()


def test_priority_and_timeout_parameters_checked(nereid, fresh_repo):
    _batched_model(fresh_repo, "prio",
                   "dynamic_batching { priority_levels: 2 default_priority_level: 2 }\n")
    s = nereid.start(fresh_repo)
    row = np.zeros((1, 4), dtype=np.float32)
    r = s.http().infer("prio", http_inputs([row], ["FP32"]), priority=1)
    assert_tensor_equal(r.as_numpy("OUTPUT0"), row)
    with pytest.raises(InferenceServerException) as e:
        s.http().infer("prio", http_inputs([row], ["FP32"]), priority=3)
    assert e.value.status() == "400"
    assert "priority" in e.value.message()
