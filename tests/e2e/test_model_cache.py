"""The model cache: on-demand loading, a memory budget with LRU eviction,
idle unload, and what the repository index and metrics say about them.
Real ONNX models served by a real bin/nereid, driven by tritonclient."""

from __future__ import annotations

import pathlib
import random
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import NEREID_BIN, _free_ports, wait_for
from e2e_util import scrape

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "model_repo_examples"
MB = 1 << 20


def make_repo(root: pathlib.Path, names, declared_bytes=None, pinned=()):
    """Copies of the identity_fp32 ONNX model under the given names."""
    src = EXAMPLES / "identity_fp32"
    for name in names:
        d = root / name
        shutil.copytree(src, d)
        cfg = (src / "config.pbtxt").read_text().replace('name: "identity_fp32"', f'name: "{name}"')
        if declared_bytes is not None:
            cfg += f'parameters {{ key: "nereid_memory_bytes" value {{ string_value: "{declared_bytes}" }} }}\n'
        if name in pinned:
            cfg += 'parameters { key: "nereid_pinned" value { string_value: "true" } }\n'
        (d / "config.pbtxt").write_text(cfg)
    return root


def infer_http(client, model, value=1.0):
    x = np.full((1, 4), value, dtype=np.float32)
    inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    out = client.infer(model, [inp]).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(out, x)


def infer_grpc(client, model, value=1.0):
    x = np.full((1, 4), value, dtype=np.float32)
    inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    out = client.infer(model, [inp]).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(out, x)


def index(client):
    return {(e["name"], e.get("version", "")): e for e in client.get_model_repository_index()}


def metric(samples, name, **labels):
    want = frozenset(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def cache_flags(*extra):
    (metrics_port,) = _free_ports(1)
    return metrics_port, [
        "--model-control-mode=explicit",
        "--allow-metrics=true",
        f"--metrics-port={metrics_port}",
        "--metrics-address=127.0.0.1",
        *extra,
    ]


def test_on_demand_http_and_grpc(nereid, tmp_path):
    repo = make_repo(tmp_path / "repo", ["m_http", "m_grpc", "m_meta"])
    metrics_port, flags = cache_flags("--model-load-on-demand=true")
    s = nereid.start(repo, flags)
    http, grpc = s.http(), s.grpc()
    assert index(http)[("m_http", "")] == {"name": "m_http"}  # nothing loaded at start

    # Metadata, configuration, readiness and statistics never load.
    with pytest.raises(InferenceServerException, match="m_meta"):
        http.get_model_metadata("m_meta")
    with pytest.raises(InferenceServerException):
        grpc.get_model_config("m_meta")
    assert not http.is_model_ready("m_meta")
    assert ("m_meta", "1") not in index(http)

    infer_http(http, "m_http")
    infer_grpc(grpc, "m_grpc")
    idx = index(http)
    assert idx[("m_http", "1")]["state"] == "READY"
    assert idx[("m_grpc", "1")]["state"] == "READY"
    assert ("m_meta", "1") not in idx

    # The statistics report what the cache counts each version as.
    stats = http.get_inference_statistics("m_http")["model_stats"][0]
    assert int(stats["memory_usage"][0]["byte_size"]) >= (repo / "m_http/1/model.onnx").stat().st_size
    assert stats["memory_usage"][0]["type"] == "CPU"

    # An unknown model is still unknown, with Triton's message.
    with pytest.raises(InferenceServerException, match="Request for unknown model: 'nope' is not found"):
        infer_http(http, "nope")
    samples, _, _ = scrape(metrics_port)
    assert metric(samples, "nereid_model_cache_misses_total", model="m_http") == 1
    assert metric(samples, "nereid_model_cache_loads_total", model="m_grpc", result="success") == 1
    assert metric(samples, "nereid_model_cold_load_seconds_count") == 2


def test_concurrent_first_requests_share_one_load(nereid, tmp_path):
    repo = make_repo(tmp_path / "repo", ["shared"])
    metrics_port, flags = cache_flags("--model-load-on-demand=true")
    s = nereid.start(repo, flags)
    errors = []

    def one():
        try:
            infer_http(s.http(), "shared")
        except Exception as e:  # noqa: BLE001 - collected and reported
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    samples, _, _ = scrape(metrics_port)
    assert metric(samples, "nereid_model_cache_loads_total", model="shared") == 1
    assert s.log_tail(1000).count("successfully loaded model=shared") == 1


def test_eviction_under_traffic_loses_no_request(nereid, tmp_path):
    names = [f"m{i}" for i in range(8)]
    repo = make_repo(tmp_path / "repo", names, declared_bytes=10 * MB)
    metrics_port, flags = cache_flags("--model-load-on-demand=true", f"--model-cache-memory={30 * MB}")
    s = nereid.start(repo, flags)
    failures, done = [], []
    stop = time.monotonic() + 6

    def client(seed):
        rng = random.Random(seed)
        c = s.grpc() if seed % 2 else s.http()
        call = infer_grpc if seed % 2 else infer_http
        n = 0
        while time.monotonic() < stop:
            name = names[min(int(rng.paretovariate(1.1)) - 1, len(names) - 1)]
            try:
                call(c, name, float(n))
            except Exception as e:  # noqa: BLE001 - collected and reported
                failures.append((name, str(e)))
            n += 1
        done.append(n)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    samples, _, _ = scrape(metrics_port)
    evictions = metric(samples, "nereid_model_cache_evictions_total", reason="budget")
    assert evictions > 0, "the budget never made the cache evict"
    assert metric(samples, "nereid_model_cache_bytes") <= 30 * MB
    assert metric(samples, "nereid_model_cache_budget_bytes") == 30 * MB
    reasons = {e.get("reason", "") for e in s.http().get_model_repository_index()}
    assert any(r.startswith("evicted: least recently used, to make room for '") for r in reasons), reasons
    ready = [e for e in s.http().get_model_repository_index() if e.get("state") == "READY"]
    assert len(ready) <= 3, ready


def test_budget_refusals(nereid, tmp_path):
    repo = make_repo(tmp_path / "repo", ["small_a", "small_b"], declared_bytes=10 * MB)
    make_repo(repo, ["huge"], declared_bytes=100 * MB)
    make_repo(repo, ["pinned_a", "pinned_b"], declared_bytes=10 * MB, pinned=("pinned_a", "pinned_b"))
    _, flags = cache_flags("--model-load-on-demand=true", f"--model-cache-memory={25 * MB}")
    s = nereid.start(repo, flags)
    http, grpc = s.http(), s.grpc()
    with pytest.raises(InferenceServerException, match="more than the whole model cache budget") as e:
        infer_http(http, "huge")
    assert e.value.status() == "503"
    with pytest.raises(InferenceServerException, match="more than the whole model cache budget") as e:
        infer_grpc(grpc, "huge")
    assert e.value.status() == "StatusCode.UNAVAILABLE"
    # The explicit load API answers the same way.
    with pytest.raises(InferenceServerException, match="more than the whole model cache budget"):
        http.load_model("huge")
    # Two pinned models fill the budget: nothing else fits, nothing is evicted.
    infer_http(http, "pinned_a")
    infer_http(http, "pinned_b")
    with pytest.raises(InferenceServerException, match="cannot be evicted now"):
        infer_http(http, "small_a")
    assert http.is_model_ready("pinned_a") and http.is_model_ready("pinned_b")
    # The server keeps serving, and an explicit unload makes room.
    http.unload_model("pinned_b")
    wait_for(lambda: not http.is_model_ready("pinned_b"), what="pinned_b unloaded")
    infer_http(http, "small_a")


def test_startup_models_are_pinned(nereid, tmp_path):
    repo = make_repo(tmp_path / "repo", ["started"])
    _, flags = cache_flags("--load-model=started", "--model-idle-unload-secs=1")
    s = nereid.start(repo, flags)
    http = s.http()
    wait_for(lambda: http.is_model_ready("started"), what="started loaded")
    time.sleep(2.5)
    assert http.is_model_ready("started"), "a --load-model model was idle-unloaded"


def test_idle_unload_of_api_loaded_model(nereid, tmp_path):
    repo = make_repo(tmp_path / "repo", ["idle", "busy"])
    metrics_port, flags = cache_flags("--model-idle-unload-secs=1")
    s = nereid.start(repo, flags)
    http = s.http()
    http.load_model("idle")
    http.load_model("busy")
    stop = time.monotonic() + 3
    while time.monotonic() < stop:  # busy stays in use, idle does not
        infer_http(http, "busy")
        time.sleep(0.1)
    idx = index(http)
    assert idx[("idle", "1")]["state"] == "UNAVAILABLE", idx
    assert idx[("idle", "1")]["reason"] == "unloaded: idle for 1 s"
    assert idx[("busy", "1")]["state"] == "READY"
    # Scale to zero and back: the next request loads it again, even with
    # on-demand loading off.
    infer_http(http, "idle")
    assert http.is_model_ready("idle")
    samples, _, _ = scrape(metrics_port)
    assert metric(samples, "nereid_model_cache_evictions_total", model="idle", reason="idle") >= 1
    assert metric(samples, "nereid_model_cache_loads_total", model="idle", result="success") == 1


def test_on_demand_corrupt_model(nereid, tmp_path):
    repo = make_repo(tmp_path / "repo", ["good", "corrupt"])
    (repo / "corrupt/1/model.onnx").write_bytes(b"not an onnx model")
    _, flags = cache_flags("--model-load-on-demand=true")
    s = nereid.start(repo, flags)
    http = s.http()
    with pytest.raises(InferenceServerException, match="load failed for model 'corrupt'") as e:
        infer_http(http, "corrupt")
    assert e.value.status() == "400"
    infer_http(http, "good")
    assert index(http)[("corrupt", "1")]["state"] == "UNAVAILABLE"


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--model-cache-memory=lots", "--model-cache-memory: 'lots' must be a positive number of bytes or a percentage"),
        ("--model-cache-memory=150%", "must be a percentage in (0, 100]"),
        ("--model-cache-gpu-memory=1000", "GPU memory accounting is not implemented"),
        ("--model-idle-unload-secs=-1", "must not be negative"),
        ("--model-load-thread-count=0", "must be positive"),
    ],
)
def test_cache_flags_refused(tmp_path, flag, message):
    out = subprocess.run(
        [str(NEREID_BIN), f"--model-repository={tmp_path}", flag], capture_output=True, text=True, timeout=30
    )
    assert out.returncode != 0
    assert message in out.stderr


def test_python_model_counts_its_stub(nereid, tmp_path):
    """A Python model's footprint includes its stub processes' memory,
    which the server's own growth does not show."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "add_sub", repo / "add_sub")
    _, flags = cache_flags("--model-load-on-demand=true")
    s = nereid.start(repo, flags)
    http = s.http()
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        inp = httpclient.InferInput(name, [1, 16], "INT32")
        inp.set_data_from_numpy(a)
        inputs.append(inp)
    out = http.infer("add_sub", inputs).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(out, a + a)
    usage = http.get_inference_statistics("add_sub")["model_stats"][0]["memory_usage"]
    # A Python interpreter with numpy holds well over 10 MB.
    assert int(usage[0]["byte_size"]) > 10 * MB, usage
