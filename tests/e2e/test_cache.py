"""Response cache and rate limiter, seen from tritonclient.

With --cache-config local,size=N, a model with response_cache enabled
answers a repeated request from the cache: the statistics count cache hits
and misses, and inference / execution counts leave the hits out, as
Triton's do. With --rate-limit=execution_count, instances that need the
same resource never execute at the same time.
"""

import concurrent.futures
import time

import numpy as np
import pytest

from conftest import _free_ports, identity_config, write_model
from e2e_util import http_inputs, scrape

CACHED = 'response_cache { enable: true }\ninstance_group [ { count: 1 kind: KIND_CPU } ]\n'


def _cached_model(repo, name="cached"):
    write_model(repo, name, identity_config(name, [("INT32", [4])], max_batch_size=8) + CACHED)


def _infer(server, model, values):
    data = np.array([values], dtype=np.int32)
    r = server.http().infer(model, http_inputs([data], ["INT32"]))
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), data)
    return r


def _stats(server, model):
    return server.http().get_inference_statistics(model)["model_stats"][0]


def test_cache_hits_in_statistics(nereid, fresh_repo):
    _cached_model(fresh_repo)
    s = nereid.start(fresh_repo, ["--cache-config=local,size=1048576"])
    for values in ([1, 2, 3, 4], [1, 2, 3, 4], [5, 6, 7, 8], [1, 2, 3, 4], [5, 6, 7, 8]):
        _infer(s, "cached", values)
    st = _stats(s, "cached")
    infer = st["inference_stats"]
    assert infer["cache_hit"]["count"] == 3, infer
    assert infer["cache_miss"]["count"] == 2, infer
    assert infer["success"]["count"] == 5, infer
    # Hits are not inferences nor executions.
    assert st["inference_count"] == 2, st
    assert st["execution_count"] == 2, st
    assert int(infer["cache_hit"]["ns"]) > 0 and int(infer["cache_miss"]["ns"]) > 0, infer

    # The same request to another model, or with another parameter, misses.
    r = s.http().infer(
        "cached", http_inputs([np.array([[1, 2, 3, 4]], dtype=np.int32)], ["INT32"]), parameters={"p": "x"}
    )
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), [[1, 2, 3, 4]])
    assert _stats(s, "cached")["inference_stats"]["cache_miss"]["count"] == 3


def test_cache_hit_over_grpc_serves_request_id(nereid, fresh_repo):
    _cached_model(fresh_repo)
    s = nereid.start(fresh_repo, ["--cache-config", "local,size=1048576"])
    import tritonclient.grpc as grpcclient

    data = np.array([[9, 9, 9, 9]], dtype=np.int32)
    for rid in ("first", "second"):
        inp = grpcclient.InferInput("INPUT0", [1, 4], "INT32")
        inp.set_data_from_numpy(data)
        r = s.grpc().infer("cached", [inp], request_id=rid)
        assert r.get_response().id == rid
        np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), data)
    assert _stats(s, "cached")["inference_stats"]["cache_hit"]["count"] == 1


def test_no_server_cache_no_hits(nereid, fresh_repo):
    _cached_model(fresh_repo)
    s = nereid.start(fresh_repo)
    for _ in range(3):
        _infer(s, "cached", [1, 2, 3, 4])
    st = _stats(s, "cached")
    assert st["inference_stats"]["cache_hit"]["count"] == 0
    assert st["inference_count"] == 3


def test_bad_cache_config_is_a_startup_error(nereid, fresh_repo):
    s = nereid.start(fresh_repo, ["--cache-config=redis,host=localhost"], wait=False)
    assert s.proc.wait(timeout=30) != 0
    assert "--cache-config" in s.log_tail()


DELAY_MS = 300


def _limited_model(repo, name, resource_count=1):
    text = identity_config(name, [("FP32", [1])], max_batch_size=0, parameters={"execute_delay_ms": str(DELAY_MS)})
    text += (
        "instance_group [ { count: 2 kind: KIND_CPU "
        f'rate_limiter {{ resources [ {{ name: "R" count: {resource_count} }} ] priority: 1 }} }} ]\n'
    )
    write_model(repo, name, text)


def _concurrent_seconds(server, model, n):
    data = np.zeros((1,), dtype=np.float32)

    def one(_):
        return server.http().infer(model, http_inputs([data], ["FP32"]))

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        list(pool.map(one, range(n)))
    return time.monotonic() - start


def test_rate_limiter_serializes_instances_sharing_a_resource(nereid, fresh_repo):
    _limited_model(fresh_repo, "limited")
    s = nereid.start(fresh_repo, ["--rate-limit=execution_count", "--rate-limit-resource=R:1"])
    # Two instances, but one copy of R: the two requests run one after the other.
    assert _concurrent_seconds(s, "limited", 2) >= 2 * DELAY_MS / 1000 * 0.95


def test_rate_limiter_off_runs_instances_together(nereid, fresh_repo):
    _limited_model(fresh_repo, "limited")
    s = nereid.start(fresh_repo, ["--rate-limit=off", "--rate-limit-resource=R:1"])
    stats_before = _stats(s, "limited")["execution_count"]
    _concurrent_seconds(s, "limited", 2)
    assert _stats(s, "limited")["execution_count"] == stats_before + 2


@pytest.mark.parametrize("flags", [["--rate-limit=execution_count", "--rate-limit-resource=R:1"]])
def test_rate_limiter_refuses_model_needing_more_than_exists(nereid, fresh_repo, flags):
    _limited_model(fresh_repo, "greedy", resource_count=2)
    s = nereid.start(fresh_repo, flags + ["--exit-on-error=false", "--strict-readiness=false"])
    r = s.request("GET", "/v2/models/greedy/ready")
    assert r.status != 200
    index = s.http().get_model_repository_index()
    entry = next(m for m in index if m["name"] == "greedy")
    assert entry["state"] == "UNAVAILABLE", entry
    assert (
        'Resource count for "R" is limited to 1 which will prevent scheduling of one or more '
        "model instances, the minimum required count is 2" in entry["reason"]
    ), entry


def _samples(port):
    samples, _, _ = scrape(port)
    return samples


def _value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def test_cache_metrics_have_triton_names(nereid, fresh_repo):
    _cached_model(fresh_repo)
    port = _free_ports(1)[0]
    s = nereid.start(fresh_repo, ["--cache-config=local,size=1048576", "--allow-metrics=true",
                                  f"--metrics-port={port}", "--metrics-config=summary_latencies=true"])
    for values in ([1, 2, 3, 4], [1, 2, 3, 4], [5, 6, 7, 8], [1, 2, 3, 4]):
        _infer(s, "cached", values)
    got = _samples(port)
    lab = {"model": "cached", "version": "1"}
    assert _value(got, "nv_cache_num_hits_per_model", **lab) == 2, got
    assert _value(got, "nv_cache_num_misses_per_model", **lab) == 2
    assert _value(got, "nv_cache_hit_duration_per_model", **lab) > 0
    assert _value(got, "nv_cache_miss_duration_per_model", **lab) > 0
    assert _value(got, "nv_cache_hit_summary_per_model_count", **lab) == 2
    # Hits are successful requests (with their duration), not inferences.
    assert _value(got, "nv_inference_request_success", **lab) == 4
    assert _value(got, "nv_inference_count", **lab) == 2
    assert _value(got, "nv_inference_exec_count", **lab) == 2
    # A model without the cache has no cache series.
    assert not [k for k in got if k[0].startswith("nv_cache_") and ("model", "cached") not in k[1]]
