"""Statistics, Prometheus metrics, logging and trace settings, restricted APIs.

Each test starts its own server on a small repository of identity models, so
every count is exactly what the test sent.
"""

import http.client
import json
import pathlib
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import _free_ports, identity_config, wait_for, write_model
from e2e_util import grpc_inputs, http_inputs, scrape


def build_repo(root: pathlib.Path) -> pathlib.Path:
    repo = root / "obs_repo"
    write_model(
        repo,
        "obs_batch",
        identity_config("obs_batch", [("FP32", [-1])], max_batch_size=8)
        + 'metric_tags { key: "team" value: "vision" }\n',
    )
    write_model(repo, "obs_plain", identity_config("obs_plain", [("INT32", [-1])]))
    write_model(
        repo,
        "obs_slow",
        identity_config("obs_slow", [("FP32", [-1])], parameters={"execute_delay_ms": "3000"}),
    )
    return repo


# --------------------------------------------------------------------------
def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def infer_http(client, model, data, dtype):
    return client.infer(model, http_inputs([data], [dtype]))


def infer_grpc(client, model, data, dtype, **kw):
    return client.infer(model, grpc_inputs([data], [dtype]), **kw)


# --------------------------------------------------------------------------
# Statistics and metrics


def test_statistics_and_metrics_after_known_requests(nereid, tmp_path):
    repo = build_repo(tmp_path)
    (metrics_port,) = _free_ports(1)
    s = nereid.start(
        repo,
        [
            "--model-control-mode=explicit",
            "--load-model=*",
            "--allow-metrics=true",
            f"--metrics-port={metrics_port}",
            "--metrics-address=127.0.0.1",
            "--metrics-interval-ms=200",
            "--metrics-config=summary_latencies=true",
        ],
    )
    http_client, grpc_client = s.http(), s.grpc()
    batch2 = np.arange(6, dtype=np.float32).reshape(2, 3)
    batch1 = np.arange(3, dtype=np.float32).reshape(1, 3)
    for _ in range(4):
        infer_http(http_client, "obs_batch", batch2, "FP32")
    for _ in range(3):
        infer_grpc(grpc_client, "obs_batch", batch1, "FP32")
    # Refused by validation (batch 9 > max_batch_size 8): Triton counts it nowhere.
    with pytest.raises(InferenceServerException):
        infer_http(http_client, "obs_batch", np.zeros((9, 3), dtype=np.float32), "FP32")
    plain = np.array([1, 2, 3], dtype=np.int32)
    for _ in range(2):
        infer_http(http_client, "obs_plain", plain, "INT32")
    # A request cancelled by its deadline while it executes fails with CANCELED.
    with pytest.raises(InferenceServerException):
        infer_grpc(grpc_client, "obs_slow", np.zeros(2, dtype=np.float32), "FP32", client_timeout=0.5)

    def slow_failed():
        st = http_client.get_inference_statistics("obs_slow")["model_stats"][0]
        return st["inference_stats"]["fail"]["count"] == 1

    wait_for(slow_failed, what="the cancelled request to be counted")

    # --- statistics over HTTP
    (st,) = http_client.get_inference_statistics("obs_batch", "1")["model_stats"]
    assert st["name"] == "obs_batch" and st["version"] == "1"
    assert st["inference_count"] == 4 * 2 + 3
    assert st["execution_count"] == 7
    assert st["last_inference"] > 0
    inf = st["inference_stats"]
    assert inf["success"]["count"] == 7 and inf["success"]["ns"] > 0
    assert inf["fail"]["count"] == 0
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert inf[phase]["count"] == 7, phase
    assert inf["compute_infer"]["ns"] > 0
    assert inf["cache_hit"]["count"] == 0 and inf["cache_miss"]["count"] == 0
    batches = {b["batch_size"]: b for b in st["batch_stats"]}
    assert sorted(batches) == [1, 2]
    assert batches[2]["compute_infer"]["count"] == 4 and batches[1]["compute_infer"]["count"] == 3
    assert batches[2]["compute_input"]["count"] == 4 and batches[2]["compute_output"]["count"] == 4
    resp0 = st["response_stats"]["0"]
    assert resp0["success"]["count"] == 7 and resp0["compute_infer"]["count"] == 7
    assert resp0["fail"]["count"] == 0

    # --- the same numbers over gRPC (proto JSON writes uint64 as strings)
    (g,) = grpc_client.get_inference_statistics("obs_batch", as_json=True)["model_stats"]
    assert int(g["inference_count"]) == 11 and int(g["execution_count"]) == 7
    assert int(g["inference_stats"]["success"]["count"]) == 7
    assert int(g["inference_stats"]["queue"]["count"]) == 7
    assert {int(b["batch_size"]) for b in g["batch_stats"]} == {1, 2}
    assert int(g["response_stats"]["0"]["success"]["count"]) == 7

    # --- all models
    names = {m["name"] for m in http_client.get_inference_statistics()["model_stats"]}
    assert names == {"obs_batch", "obs_plain", "obs_slow"}
    (sl,) = http_client.get_inference_statistics("obs_slow")["model_stats"]
    assert sl["inference_stats"]["success"]["count"] == 0
    assert sl["execution_count"] == 0

    # --- metrics
    samples, types, _ = scrape(metrics_port)
    b = {"model": "obs_batch", "version": "1", "_team": "vision"}
    assert value(samples, "nv_inference_request_success", **b) == 7
    assert value(samples, "nv_inference_count", **b) == 11
    assert value(samples, "nv_inference_exec_count", **b) == 7
    assert value(samples, "nv_inference_pending_request_count", **b) == 0
    for reason in ("REJECTED", "CANCELED", "BACKEND", "OTHER"):
        assert value(samples, "nv_inference_request_failure", reason=reason, **b) == 0
    assert value(samples, "nv_inference_request_summary_us_count", **b) == 7
    assert value(samples, "nv_inference_compute_infer_duration_us", **b) is not None
    assert value(samples, "nv_model_load_duration_secs", **b) > 0
    p = {"model": "obs_plain", "version": "1"}
    assert value(samples, "nv_inference_request_success", **p) == 2
    assert value(samples, "nv_inference_count", **p) == 2
    sl = {"model": "obs_slow", "version": "1"}
    assert value(samples, "nv_inference_request_failure", reason="CANCELED", **sl) == 1
    assert value(samples, "nv_inference_request_failure", reason="BACKEND", **sl) == 0
    assert value(samples, "nv_inference_request_success", **sl) == 0
    assert types["nv_inference_request_success"] == "counter"
    assert types["nv_inference_pending_request_count"] == "gauge"
    assert types["nv_inference_request_summary_us"] == "summary"
    assert types["nv_cpu_utilization"] == "gauge"
    assert 0 <= value(samples, "nv_cpu_utilization") <= 1
    assert value(samples, "nv_cpu_memory_total_bytes") > 0
    assert value(samples, "nv_cpu_memory_used_bytes") > 0
    # No GPU on this machine: the GPU metrics are absent, not an error.
    if not pathlib.Path("/dev/nvidiactl").exists():
        assert not any(name.startswith(("nv_gpu_", "nv_energy")) for name, _ in samples)

    # Non-GET on /metrics is refused.
    conn = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=10)
    conn.request("POST", "/metrics", body=b"")
    resp = conn.getresponse()
    assert resp.status == 405 and json.loads(resp.read()) == {"error": "Method Not Allowed"}
    conn.close()

    # Unloading a model deletes its series.
    http_client.unload_model("obs_plain")

    def plain_gone():
        samples, _, _ = scrape(metrics_port)
        return not any(dict(labels).get("model") == "obs_plain" for _, labels in samples)

    wait_for(plain_gone, what="obs_plain's series to be deleted")
    samples, _, _ = scrape(metrics_port)
    assert value(samples, "nv_inference_request_success", **b) == 7


# --------------------------------------------------------------------------
# Logging


def test_log_settings_round_trips(nereid, tmp_path):
    log_file = tmp_path / "server.log"
    s = nereid.start(build_repo(tmp_path), [f"--log-file={log_file}", "--log-format=default"])
    http_client, grpc_client = s.http(), s.grpc()
    initial = {
        "log_file": str(log_file),
        "log_info": True,
        "log_warning": True,
        "log_error": True,
        "log_verbose_level": 0,
        "log_format": "default",
    }
    assert http_client.get_log_settings() == initial
    g = grpc_client.get_log_settings(as_json=True)["settings"]
    assert g["log_file"]["string_param"] == str(log_file) and g["log_info"]["bool_param"] is True

    # A verbose message appears only once the verbose level is raised.
    bad = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1]}]}
    s.request("POST", "/v2/models/obs_batch/infer", bad)
    assert "infer failed" not in log_file.read_text()
    updated = http_client.update_log_settings({"log_verbose_level": 1, "log_info": False})
    assert updated == dict(initial, log_verbose_level=1, log_info=False)
    s.request("POST", "/v2/models/obs_batch/infer", bad)
    wait_for(lambda: "infer failed" in log_file.read_text(), what="a verbose line")

    # gRPC round trip, and the HTTP view of it.
    r = grpc_client.update_log_settings({"log_format": "ISO8601", "log_warning": False}, as_json=True)
    assert r["settings"]["log_format"]["string_param"] == "ISO8601"
    assert http_client.get_log_settings() == dict(
        initial, log_verbose_level=1, log_info=False, log_format="ISO8601", log_warning=False
    )

    # Refusals: the file cannot change over the network; types are checked.
    with pytest.raises(InferenceServerException) as e:
        http_client.update_log_settings({"log_file": "other.log"})
    assert e.value.status() == "501"
    assert "log file location can not be updated through network protocol" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        grpc_client.update_log_settings({"log_file": "other.log"})
    assert e.value.status() == "StatusCode.UNIMPLEMENTED"
    resp = s.request("POST", "/v2/logging", {"log_verbose_level": -1})
    assert resp.status == 400 and "unsigned-integer" in resp.json()["error"]
    resp = s.request("POST", "/v2/logging", {"log_info": "yes"})
    assert resp.status == 400
    resp = s.request("POST", "/v2/logging", {"log_level": 3})
    assert resp.status == 400 and "log_level" in resp.json()["error"]
    assert http_client.get_log_settings()["log_verbose_level"] == 1


# --------------------------------------------------------------------------
# Trace


def test_trace_settings_and_trace_file(nereid, tmp_path):
    trace_file = tmp_path / "trace.json"
    s = nereid.start(
        build_repo(tmp_path),
        [f"--trace-config=triton,file={trace_file}", "--trace-config=level=OFF", "--trace-config=rate=1"],
    )
    http_client, grpc_client = s.http(), s.grpc()
    global_settings = {
        "trace_level": ["OFF"],
        "trace_rate": "1",
        "trace_count": "-1",
        "log_frequency": "0",
        "trace_file": str(trace_file),
        "trace_mode": "triton",
    }
    assert http_client.get_trace_settings() == global_settings
    # Trace obs_batch only, over HTTP; the other fields follow the global settings.
    model_settings = http_client.update_trace_settings("obs_batch", {"trace_level": ["TIMESTAMPS"]})
    assert model_settings == dict(global_settings, trace_level=["TIMESTAMPS"])
    g = grpc_client.get_trace_settings("obs_batch", as_json=True)["settings"]
    assert g["trace_level"]["value"] == ["TIMESTAMPS"] and g["trace_rate"]["value"] == ["1"]
    assert http_client.get_trace_settings() == global_settings

    data = np.arange(3, dtype=np.float32).reshape(1, 3)
    for _ in range(2):
        infer_http(http_client, "obs_batch", data, "FP32")
    infer_grpc(grpc_client, "obs_batch", data, "FP32")
    infer_http(http_client, "obs_plain", np.array([1], dtype=np.int32), "INT32")  # not traced

    # gRPC update: an empty value clears the model's level again.
    r = grpc_client.update_trace_settings("obs_batch", {"trace_level": None}, as_json=True)
    assert r["settings"]["trace_level"]["value"] == ["OFF"]
    with pytest.raises(InferenceServerException) as e:
        http_client.update_trace_settings(settings={"trace_file": "elsewhere.json"})
    assert e.value.status() == "501"
    with pytest.raises(InferenceServerException) as e:
        http_client.update_trace_settings(settings={"trace_rate": "often"})
    assert e.value.status() == "400" and "Unable to parse 'trace_rate', got: often" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        grpc_client.update_trace_settings(settings={"trace_count": "-5"})
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"

    # The traces are written to the trace file when the server stops.
    s.stop_gracefully()
    records = json.loads(trace_file.read_text())
    traces = {}
    for rec in records:
        traces.setdefault(rec["id"], []).append(rec)
    assert len(traces) == 3
    kinds = []
    for recs in traces.values():
        header = [r for r in recs if "model_name" in r]
        assert len(header) == 1 and header[0]["model_name"] == "obs_batch"
        assert header[0]["model_version"] == 1
        names = [t["name"] for r in recs for t in r.get("timestamps", [])]
        core = ["REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_INPUT_END",
                "COMPUTE_OUTPUT_START", "COMPUTE_END", "REQUEST_END"]
        assert [n for n in names if n in core] == core
        ns = [t["ns"] for r in recs for t in r.get("timestamps", []) if t["name"] in core]
        assert ns == sorted(ns)
        kinds.append("HTTP" if "HTTP_RECV_START" in names else "GRPC" if "GRPC_SEND_END" in names else "?")
    assert sorted(kinds) == ["GRPC", "HTTP", "HTTP"]
    # TIMESTAMPS alone records no tensors.
    assert not [r for r in records if "activity" in r or "tensor" in r]


def test_trace_tensors(nereid, tmp_path):
    """trace_level TENSORS set over HTTP: Triton's tensor records, and nothing else."""
    trace_file = tmp_path / "tensors.json"
    repo = tmp_path / "tensor_repo"
    types = ["INT32", "FP32", "BOOL", "BYTES"]
    write_model(repo, "obs_tensors", identity_config("obs_tensors", [(t, [-1]) for t in types], max_batch_size=8))
    s = nereid.start(repo, [f"--trace-config=triton,file={trace_file}", "--trace-config=rate=1"])
    http_client = s.http()
    settings = http_client.update_trace_settings("obs_tensors", {"trace_level": ["TENSORS"]})
    assert settings["trace_level"] == ["TENSORS"] and settings["trace_rate"] == "1"
    arrays = [
        np.array([[7, -8, 2147483647]], dtype=np.int32),
        np.array([[0.5, -1.25, 0.001, 1e6]], dtype=np.float32),
        np.array([[True, False, True]]),
        np.array([[b"hello", "w\u00f6rld".encode(), b'say "hi"']], dtype=np.object_),
    ]
    r = http_client.infer("obs_tensors", http_inputs(arrays, types))
    assert r.as_numpy("OUTPUT0").tolist() == [[7, -8, 2147483647]]
    # The same request over gRPC is a second trace with the same records.
    s.grpc().infer("obs_tensors", grpc_inputs(arrays, types))

    s.stop_gracefully()
    records = json.loads(trace_file.read_text())
    # TENSORS alone: tensor records only, no model record, no timestamps.
    assert records and all(set(r) == {"id", "activity", "tensor"} for r in records), records
    inputs = {
        "INPUT0": {"data": "7,-8,2147483647", "shape": "1,3", "dtype": "INT32"},
        "INPUT1": {"data": "0.5,-1.25,0.001,1e+06", "shape": "1,4", "dtype": "FP32"},
        "INPUT2": {"data": "1,0,1", "shape": "1,3", "dtype": "BOOL"},
        "INPUT3": {"data": '"hello","w\u00f6rld","say "hi""', "shape": "1,3", "dtype": "BYTES"},
    }
    want = {
        "TENSOR_QUEUE_INPUT": inputs,
        "TENSOR_BACKEND_INPUT": inputs,
        "TENSOR_BACKEND_OUTPUT": {n.replace("INPUT", "OUTPUT"): v for n, v in inputs.items()},
    }
    got = {}
    for rec in records:
        tensor = dict(rec["tensor"])
        got.setdefault(rec["id"], {}).setdefault(rec["activity"], {})[tensor.pop("name")] = tensor
    assert len(got) == 2
    for trace in got.values():
        assert trace == want


# --------------------------------------------------------------------------
# Restricted APIs


def test_restricted_apis(nereid, tmp_path):
    s = nereid.start(
        build_repo(tmp_path),
        [
            "--http-restricted-api=inference,logging:infer-key=secret",
            "--grpc-restricted-protocol=inference,statistics:infer-key=secret",
        ],
    )
    data = np.arange(3, dtype=np.float32).reshape(1, 3)
    resp = s.request("POST", "/v2/models/obs_batch/infer", {"inputs": []})
    assert resp.status == 403
    assert resp.json() == {"error": "This API is restricted, expecting header 'infer-key'"}
    resp = s.request("GET", "/v2/logging", headers={"infer-key": "wrong"})
    assert resp.status == 403
    http_client = s.http()
    with pytest.raises(InferenceServerException) as e:
        infer_http(http_client, "obs_batch", data, "FP32")
    assert e.value.status() == "403"
    r = http_client.infer("obs_batch", http_inputs([data], ["FP32"]), headers={"infer-key": "secret"})
    assert r.as_numpy("OUTPUT0").shape == (1, 3)
    assert http_client.is_server_live()  # health is not restricted

    grpc_client = s.grpc()
    with pytest.raises(InferenceServerException) as e:
        infer_grpc(grpc_client, "obs_batch", data, "FP32")
    assert e.value.status() == "StatusCode.UNAVAILABLE"
    assert "triton-grpc-protocol-infer-key" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        grpc_client.get_inference_statistics("obs_batch", headers={"triton-grpc-protocol-infer-key": "nope"})
    assert e.value.status() == "StatusCode.UNAVAILABLE"
    headers = {"triton-grpc-protocol-infer-key": "secret"}
    g = grpc_client.infer("obs_batch", grpc_inputs([data], ["FP32"]), headers=headers)
    assert g.as_numpy("OUTPUT0").shape == (1, 3)
    assert grpc_client.get_inference_statistics("obs_batch", headers=headers).model_stats[0].inference_count == 2
    assert grpc_client.is_server_live()


def _stream_repeat(client, model, n_responses, delay_ms):
    """One streaming request to a repeat model: n responses, delay_ms apart."""
    import queue

    q = queue.Queue()
    client.start_stream(callback=lambda result, error: q.put((result, error)))
    try:
        ins = []
        for name, dt, arr in (("IN", "INT32", np.arange(n_responses, dtype=np.int32)),
                              ("DELAY", "UINT32", np.full(n_responses, delay_ms, dtype=np.uint32)),
                              ("WAIT", "UINT32", np.array([0], dtype=np.uint32))):
            x = grpcclient.InferInput(name, list(arr.shape), dt)
            x.set_data_from_numpy(arr)
            ins.append(x)
        client.async_stream_infer(model, ins)
        for _ in range(n_responses):
            result, error = q.get(timeout=30)
            assert error is None, error
    finally:
        client.stop_stream()


def test_first_response_histogram(nereid, tmp_path):
    repo = tmp_path / "repo"
    examples = pathlib.Path(__file__).resolve().parents[2] / "model_repo_examples"
    cfg = (examples / "repeat_int32" / "config.pbtxt").read_text()
    write_model(repo, "repeat_int32", cfg)
    write_model(repo, "repeat_own", cfg.replace('name: "repeat_int32"', 'name: "repeat_own"') + """
model_metrics { metric_control [ { metric_identifier { family: "nv_inference_first_response_histogram_ms" }
  histogram_options { buckets: [ -1, 0, 1, 2.5, 400 ] } } ] }
""")
    write_model(repo, "plain", identity_config("plain", [("INT32", [-1])]))
    port = _free_ports(1)[0]
    s = nereid.start(repo, ["--allow-metrics=true", f"--metrics-port={port}", "--metrics-address=127.0.0.1",
                            "--metrics-config=histogram_latencies=true"])
    c = s.grpc()
    for _ in range(3):
        # The first of 3 responses comes after its delay of 200 ms.
        _stream_repeat(c, "repeat_int32", 3, 200)
    _stream_repeat(c, "repeat_own", 2, 1)
    infer_grpc(c, "plain", np.array([1], dtype=np.int32), "INT32")
    samples, types, body = scrape(port)
    name = "nv_inference_first_response_histogram_ms"
    assert types[name] == "histogram"
    assert f"# HELP {name} Duration from request to first response in milliseconds" in body
    lab = {"model": "repeat_int32", "version": "1"}
    assert value(samples, name + "_count", **lab) == 3
    assert 600 <= value(samples, name + "_sum", **lab) < 3000
    # Triton's default buckets (ms); none of the 200 ms first responses
    # fits in 100.
    les = sorted(dict(k[1])["le"] for k in samples if k[0] == name + "_bucket" and ("model", "repeat_int32") in k[1])
    assert sorted(les) == sorted(["100", "500", "2000", "5000", "+Inf"]), les
    assert value(samples, name + "_bucket", le="100", **lab) == 0
    assert value(samples, name + "_bucket", le="+Inf", **lab) == 3
    # The configuration's own buckets.
    own = sorted(dict(k[1])["le"] for k in samples if k[0] == name + "_bucket" and ("model", "repeat_own") in k[1])
    assert sorted(own) == sorted(["-1", "0", "1", "2.5", "400", "+Inf"]), own
    assert value(samples, name + "_count", model="repeat_own", version="1") == 1
    # A model that is not decoupled has none.
    assert not [k for k in samples if k[0].startswith(name) and ("model", "plain") in k[1]]


def test_unknown_metrics_config_is_refused(nereid, tmp_path):
    repo = tmp_path / "repo"
    write_model(repo, "plain", identity_config("plain", [("INT32", [-1])]))
    s = nereid.start(repo, ["--metrics-config=histogram_latency=true"], wait=False)
    assert s.proc.wait(timeout=30) != 0
    assert "unknown setting 'histogram_latency'" in s.log_tail()
