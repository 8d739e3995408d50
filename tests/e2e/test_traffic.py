"""Traffic splitting between model versions and models (--traffic-config):
weighted canary, a blue/green switch by editing the file, shadow mirroring
with divergence counted, and refusals of bad routing files. A real
bin/nereid with ONNX and Python models, driven by tritonclient."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import textwrap
import threading
import time

import numpy as np
import tritonclient.http as httpclient

from conftest import NEREID_BIN, _free_ports, wait_for
from e2e_util import scrape

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "model_repo_examples"

PLUS_ONE = textwrap.dedent(
    """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            out = []
            for r in requests:
                x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", (x + 1).astype(np.float32))]))
            return out
    """
)


def make_repo(root: pathlib.Path) -> pathlib.Path:
    """m: identity_fp32 with versions 1 and 2; twin: the same model;
    plus_one: a Python model with the same tensors that adds one."""
    src = EXAMPLES / "identity_fp32"
    cfg = (src / "config.pbtxt").read_text()
    m = root / "m"
    m.mkdir(parents=True)
    (m / "config.pbtxt").write_text(
        cfg.replace('name: "identity_fp32"', 'name: "m"') + "version_policy { all {} }\n")
    for v in ("1", "2"):
        shutil.copytree(src / "1", m / v)
    twin = root / "twin"
    shutil.copytree(src, twin)
    (twin / "config.pbtxt").write_text(cfg.replace('name: "identity_fp32"', 'name: "twin"'))
    plus = root / "plus_one"
    (plus / "1").mkdir(parents=True)
    (plus / "1" / "model.py").write_text(PLUS_ONE)
    (plus / "config.pbtxt").write_text(
        cfg.replace('name: "identity_fp32"', 'name: "plus_one"').replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
    return root


def write_routes(path: pathlib.Path, routes: dict, bump: int = 0):
    path.write_text(json.dumps({"routes": routes}))
    if bump:  # a distinct modification time, so that the reload sees it
        t = time.time() + bump
        os.utime(path, (t, t))


def infer(client, model="m", value=1.0):
    x = np.full((1, 4), value, dtype=np.float32)
    inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    res = client.infer(model, [inp])
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), x)
    return res.get_response()["model_version"]


def metric(samples, name, **labels):
    want = frozenset(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def start(nereid, tmp_path, routes):
    repo = make_repo(tmp_path / "repo")
    cfg = tmp_path / "traffic.json"
    write_routes(cfg, routes)
    (metrics_port,) = _free_ports(1)
    s = nereid.start(repo, [
        f"--traffic-config={cfg}", "--allow-metrics=true", f"--metrics-port={metrics_port}",
        "--metrics-address=127.0.0.1",
    ])
    return s, cfg, metrics_port


def test_canary_split_under_load(nereid, tmp_path):
    s, _, metrics_port = start(nereid, tmp_path, {"m": {"variants": [
        {"name": "stable", "model": "m", "version": "1", "weight": 70},
        {"name": "canary", "model": "m", "version": "2", "weight": 30},
    ]}})
    versions, errors = [], []

    def client():
        c = s.http()
        for i in range(100):
            try:
                versions.append(infer(c, value=float(i)))
            except Exception as e:  # noqa: BLE001 - collected and reported
                errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    canary = versions.count("2")
    # 400 requests at 30 %: 120 expected, far outside [70, 170] only by a bug.
    assert 70 <= canary <= 170, (canary, len(versions))
    samples, _, _ = scrape(metrics_port)
    assert metric(samples, "nereid_traffic_requests_total", route="m", variant="canary", result="success") == canary
    assert metric(samples, "nereid_traffic_requests_total", route="m", variant="stable") == 400 - canary
    assert metric(samples, "nereid_traffic_weight", route="m", variant="canary") == 30
    # A request that names a version is not routed.
    assert infer(s.http()) in ("1", "2")
    x = np.zeros((1, 4), dtype=np.float32)
    inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    assert s.http().infer("m", [inp], model_version="1").get_response()["model_version"] == "1"


def test_blue_green_switch_by_editing_the_file(nereid, tmp_path):
    blue = {"m": {"variants": [{"model": "m", "version": "1", "weight": 100}, {"model": "m", "version": "2", "weight": 0}]}}
    s, cfg, _ = start(nereid, tmp_path, blue)
    c = s.http()
    assert {infer(c) for _ in range(20)} == {"1"}
    green = {"m": {"variants": [{"model": "m", "version": "1", "weight": 0}, {"model": "m", "version": "2", "weight": 100}]}}
    write_routes(cfg, green, bump=10)
    wait_for(lambda: infer(c) == "2", timeout=10, what="the switch to version 2")
    assert {infer(c) for _ in range(20)} == {"2"}
    # A broken edit keeps the routes in force.
    cfg.write_text("{not json")
    t = time.time() + 20
    os.utime(cfg, (t, t))
    time.sleep(2.5)
    assert {infer(c) for _ in range(10)} == {"2"}
    assert "traffic config not reloaded" in s.log_tail(400)


def test_shadow_mirrors_and_counts_divergence(nereid, tmp_path):
    routes = {
        "m": {"variants": [{"model": "m", "version": "1", "weight": 100}],
              "shadow": {"model": "plus_one", "fraction": 1.0}},
        "twin_route": {"variants": [{"model": "m", "version": "2", "weight": 100}],
                       "shadow": {"model": "twin", "fraction": 1.0}},
    }
    s, _, metrics_port = start(nereid, tmp_path, routes)
    c = s.http()
    for i in range(20):
        infer(c, "m", float(i))  # the client always gets the primary's answer
        assert infer(c, "twin_route", float(i)) == "2"

    def counted():
        samples, _, _ = scrape(metrics_port)
        return (metric(samples, "nereid_traffic_shadow_total", route="m", outcome="diverged")
                + metric(samples, "nereid_traffic_shadow_total", route="m", outcome="dropped") == 20
                and metric(samples, "nereid_traffic_shadow_total", route="twin_route", outcome="matched")
                + metric(samples, "nereid_traffic_shadow_total", route="twin_route", outcome="dropped") == 20)

    wait_for(counted, timeout=30, what="every mirrored request compared")
    samples, _, _ = scrape(metrics_port)
    assert metric(samples, "nereid_traffic_shadow_total", route="m", outcome="diverged") > 0
    assert metric(samples, "nereid_traffic_shadow_total", route="twin_route", outcome="diverged") == 0


def test_bad_routing_files_refused(tmp_path):
    repo = make_repo(tmp_path / "repo")
    cases = {
        '{"routes": {"m": {"variants": [{"model": "m", "version": "1", "weight": 60}]}}}': "weights sum to 60, not 100",
        '{"routes": {"m": {"variants": [{"model": "m", "version": "7", "weight": 100}]}}}': "has no version directory '7'",
        '{"routes": {"m": {"variants": [{"model": "nope", "weight": 100}]}}}': "variant 'nope'",
    }
    for body, want in cases.items():
        cfg = tmp_path / "bad.json"
        cfg.write_text(body)
        http_port, grpc_port = _free_ports(2)
        out = subprocess.run(
            [str(NEREID_BIN), f"--model-repository={repo}", f"--traffic-config={cfg}", "--allow-metrics=false",
             f"--http-port={http_port}", f"--grpc-port={grpc_port}"],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode != 0
        assert want in out.stderr + out.stdout and "bad.json" in out.stderr + out.stdout, out.stderr[-2000:]
