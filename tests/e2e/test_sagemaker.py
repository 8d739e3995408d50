"""The SageMaker port: /ping, /invocations and the multi-model endpoint
(MME) contract (POST/GET/DELETE /models, POST /models/{name}/invoke), spoken
with `requests` as SageMaker's model server client does, with the headers it
sends (Content-Type, X-Amzn-SageMaker-Target-Model), and with tritonclient's
request-body builder for the binary form (the JSON length in the
Content-Type). Artefacts are laid out as SageMaker unpacks them:
<root>/<hash>/model.
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient

from conftest import (
    DELAY_MS,
    EXAMPLES,
    IN_FLIGHT_WAIT_S,
    NEREID_BIN,
    PYTHON_STUB_EXE,
    _free_ports,
    identity_config,
    wait_for,
    write_identity_model,
)

BINARY_TYPE = "application/vnd.sagemaker-triton.binary+json"
TARGET = "X-Amzn-SageMaker-Target-Model"


class SageMaker:
    """A client of the SageMaker port."""

    def __init__(self, port: int):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.http = requests.Session()

    def clone(self) -> "SageMaker":
        """Another client (a session of its own, for another thread)."""
        return SageMaker(self.port)

    def get(self, path, **kw):
        return self.http.get(self.base + path, timeout=60, **kw)

    def post(self, path, body=b"", headers=None, **kw):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        return self.http.post(self.base + path, data=body, headers=headers or {}, timeout=60, **kw)

    def delete(self, path):
        return self.http.delete(self.base + path, timeout=400)

    def load(self, name, url, target=None):
        headers = {TARGET: target} if target else {}
        return self.post("/models", {"model_name": name, "url": str(url)}, headers)


def start(nereid, repo, *flags):
    """A nereid with the SageMaker port on loopback; returns (server, client)."""
    (port,) = _free_ports(1)
    s = nereid.start(
        repo,
        ["--allow-sagemaker=true", "--sagemaker-address=127.0.0.1", f"--sagemaker-port={port}", "--allow-grpc=false", *flags],
    )
    sm = SageMaker(port)
    assert sm.get("/ping").status_code == 200
    return s, sm


@pytest.fixture
def mme(nereid, tmp_path):
    """A multi-model endpoint as `nereid serve` starts one: an empty
    repository, explicit control, ping mode live; artefacts under root."""
    root = tmp_path / "models"
    root.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    s, sm = start(nereid, empty, "--model-control-mode=explicit", "--sagemaker-ping-mode=live", f"--sagemaker-model-root={root}")
    sm.root = root
    sm.server = s
    return sm


def artefact(root: pathlib.Path, name: str, *models: str) -> pathlib.Path:
    """<root>/<name>/model holding example models: one model is the
    artefact itself (config.pbtxt directly in it), several sit side by
    side in it."""
    url = root / name / "model"
    if len(models) == 1:
        shutil.copytree(EXAMPLES / models[0], url)
    else:
        for m in models:
            shutil.copytree(EXAMPLES / m, url / m)
    return url


def bytes_request(text="hello"):
    return {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1], "data": [text]}]}


def simple_inputs():
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    inputs = []
    for name, arr in (("INPUT0", a), ("INPUT1", b)):
        i = httpclient.InferInput(name, list(arr.shape), "INT32")
        i.set_data_from_numpy(arr, binary_data=True)
        inputs.append(i)
    return a, b, inputs


def binary_request(inputs, outputs=None):
    """tritonclient's request body and the SageMaker Content-Type for it."""
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    return body, {"Content-Type": f"{BINARY_TYPE};json-header-size={json_size}"}


def parse_binary(r):
    """The response of a binary request: its header size from Content-Type."""
    ct = r.headers["Content-Type"]
    media, _, param = ct.partition(";")
    assert media == BINARY_TYPE and param.startswith("json-header-size="), ct
    size = int(param.split("=", 1)[1])
    return httpclient.InferenceServerClient.parse_response_body(r.content, header_length=size)


def error_of(r):
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    return r.json()["error"]


# --------------------------------------------------------------------------
# Single-model endpoints


def test_single_model_invocations_json_and_binary(nereid, tmp_path):
    repo = tmp_path / "repo"
    for m in ("simple", "identity_bytes"):
        shutil.copytree(EXAMPLES / m, repo / m)
    _, sm = start(nereid, repo, "--model-control-mode=explicit", "--load-model=simple", "--sagemaker-default-model=simple")

    a, b, inputs = simple_inputs()
    body = {"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a.flatten().tolist()},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b.flatten().tolist()},
    ]}
    r = sm.post("/invocations", body)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    out = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert out["OUTPUT0"] == (a + b).flatten().tolist()
    assert out["OUTPUT1"] == (a - b).flatten().tolist()

    # The binary form both ways, built and read by tritonclient.
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("OUTPUT0", "OUTPUT1")]
    data, headers = binary_request(inputs, outputs)
    r = sm.post("/invocations", data, headers)
    assert r.status_code == 200, r.text
    res = parse_binary(r)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)
    # Binary inputs, JSON outputs: a plain JSON answer.
    data, headers = binary_request(inputs, [httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)])
    r = sm.post("/invocations", data, headers)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json", r.text

    # Compressed both ways.
    r = sm.post("/invocations", gzip.compress(json.dumps(body).encode()),
                {"Content-Type": "application/json", "Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip", r.text
    assert {o["name"]: o["data"] for o in r.json()["outputs"]}["OUTPUT0"] == out["OUTPUT0"]  # requests decompresses

    # Bad requests: a clear status and message, and the server serves on.
    r = sm.post("/invocations", b'{"inputs": [', {"Content-Type": "application/json"})
    assert r.status_code == 400 and "Unable to parse 'inputs'" in error_of(r)
    r = sm.post("/invocations", b"not json", {"Content-Type": "application/json"})
    assert r.status_code == 400 and "failed to parse the request JSON buffer" in error_of(r)
    r = sm.post("/invocations", data, {"Content-Type": BINARY_TYPE})
    assert r.status_code == 400 and "json-header-size" in error_of(r)
    r = sm.post("/invocations", data, {"Content-Type": f"{BINARY_TYPE};json-header-size={len(data) + 1}"})
    assert r.status_code == 400 and "inference header size should be in range" in error_of(r)
    r = sm.post("/invocations", {"inputs": [{"name": "NOPE", "datatype": "INT32", "shape": [1], "data": [1]}]})
    assert r.status_code == 400 and "NOPE" in error_of(r)
    r = sm.post("/invocations", body, {"Content-Encoding": "br"})
    assert r.status_code == 501 and error_of(r) == "Unsupported compression type"
    r = sm.post("/invocations", body)
    assert r.status_code == 200, r.text

    # Any other path is 400, not 404; the HTTP port's paths are not here.
    for method, path in (("GET", "/v2/health/ready"), ("GET", "/"), ("POST", "/ping"), ("GET", "/invocations")):
        r = sm.http.request(method, sm.base + path, timeout=10)
        assert r.status_code == 400, (method, path, r.text)
        assert "unknown SageMaker endpoint" in error_of(r)


def test_single_model_not_loaded_is_404(nereid, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "identity_bytes", repo / "identity_bytes")
    _, sm = start(nereid, repo, "--model-control-mode=explicit", "--sagemaker-default-model=identity_bytes")
    r = sm.post("/invocations", bytes_request())
    assert r.status_code == 404, r.text
    assert "identity_bytes" in error_of(r)


def test_invocations_generate_and_generate_stream(nereid, tmp_path):
    repo = tmp_path / "repo"
    for m in ("identity_bytes", "repeat_int32"):
        shutil.copytree(EXAMPLES / m, repo / m)
    _, sm = start(nereid, repo, "--sagemaker-inference-type=generate", "--sagemaker-default-model=identity_bytes")
    r = sm.post("/invocations", {"id": "g1", "INPUT0": "hello"})
    assert r.status_code == 200, r.text
    assert r.json() == {"id": "g1", "model_name": "identity_bytes", "model_version": "1", "OUTPUT0": "hello"}
    r = sm.post("/invocations", {"NOT_AN_INPUT": 1})
    assert r.status_code == 400 and "INPUT0" in error_of(r)

    _, st = start(nereid, repo, "--sagemaker-inference-type=generate_stream", "--sagemaker-default-model=repeat_int32")
    r = st.post("/invocations", {"IN": [4, 5, 6], "DELAY": [10, 10, 10], "WAIT": 0}, stream=True)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = [json.loads(line[len(b"data: "):]) for line in r.iter_lines() if line]
    assert [(e["OUT"], e["IDX"]) for e in events] == [(4, 0), (5, 1), (6, 2)]


# --------------------------------------------------------------------------
# Multi-model endpoints


def test_mme_load_invoke_list_unload(mme):
    url = artefact(mme.root, "0a1b2c", "identity_bytes")
    r = mme.load("0a1b2c", url, target="bytes.tar.gz")
    assert r.status_code == 200, r.text
    r = mme.load("0a1b2c", url, target="bytes.tar.gz")
    assert r.status_code == 409, r.text
    assert "already loaded" in error_of(r)

    assert mme.get("/models").json() == {"models": [{"modelName": "0a1b2c", "modelUrl": str(url)}]}
    r = mme.get("/models/0a1b2c")
    assert r.status_code == 200 and r.json() == {"modelName": "0a1b2c", "modelUrl": str(url)}

    # Served under the TargetModel name, on the SageMaker and HTTP ports.
    r = mme.post("/models/0a1b2c/invoke", bytes_request("hi"), {TARGET: "bytes.tar.gz"})
    assert r.status_code == 200, r.text
    assert r.json()["model_name"] == "bytes.tar.gz"
    assert r.json()["outputs"][0]["data"] == ["hi"]
    assert mme.server.http().is_model_ready("bytes.tar.gz")

    # Binary, and compressed.
    arr = np.array([[b"one", b"two"]], dtype=np.object_)
    i = httpclient.InferInput("INPUT0", [1, 2], "BYTES")
    i.set_data_from_numpy(arr, binary_data=True)
    data, headers = binary_request([i], [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)])
    r = mme.post("/models/0a1b2c/invoke", data, {**headers, TARGET: "bytes.tar.gz"})
    assert r.status_code == 200, r.text
    assert parse_binary(r).as_numpy("OUTPUT0").tolist() == arr.tolist()
    r = mme.post("/models/0a1b2c/invoke", gzip.compress(json.dumps(bytes_request()).encode()),
                 {"Content-Type": "application/json", "Content-Encoding": "gzip", TARGET: "bytes.tar.gz"})
    assert r.status_code == 200, r.text
    r = mme.post("/models/0a1b2c/invoke", b"{}", {"Content-Encoding": "br", TARGET: "bytes.tar.gz"})
    assert r.status_code == 415 and error_of(r) == "Unsupported compression type"

    # Errors of an invoke are 400, whatever the HTTP port would say.
    r = mme.post("/models/0a1b2c/invoke", b'{"inputs": 5}', {"Content-Type": "application/json"})
    assert r.status_code == 400 and "Unable to parse 'inputs'" in error_of(r)
    r = mme.post("/models/0a1b2c/invoke", {"inputs": [{"name": "X", "datatype": "BYTES", "shape": [1], "data": ["a"]}]})
    assert r.status_code == 400 and "X" in error_of(r)
    r = mme.post("/models/nothash/invoke", bytes_request())
    assert r.status_code == 404 and "not loaded" in error_of(r)

    r = mme.delete("/models/0a1b2c")
    assert r.status_code == 200, r.text
    r = mme.get("/models/0a1b2c")
    assert r.status_code == 404 and r.content == b""
    assert mme.post("/models/0a1b2c/invoke", bytes_request()).status_code == 404
    r = mme.delete("/models/0a1b2c")
    assert r.status_code == 404 and "not loaded" in error_of(r)
    assert mme.get("/models").json() == {"models": []}
    assert not mme.server.http().is_model_ready("bytes.tar.gz")

    # The repository was unregistered: the artefact loads again, and
    # without a TargetModel header it is served under the hash.
    r = mme.load("0a1b2c", url)
    assert r.status_code == 200, r.text
    r = mme.post("/models/0a1b2c/invoke", bytes_request())
    assert r.status_code == 200 and r.json()["model_name"] == "0a1b2c", r.text


def test_mme_ensemble_inside_artefact(mme):
    """An artefact holding an ensemble and its step: the ensemble is the
    model served, its step loads with it under its own name, and both go
    with the unload."""
    url = artefact(mme.root, "ens1", "simple_ensemble", "simple")
    r = mme.load("ens1", url, target="pipeline.tar.gz")
    assert r.status_code == 200, r.text
    a, b, inputs = simple_inputs()
    data, headers = binary_request(inputs, [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("OUTPUT0", "OUTPUT1")])
    r = mme.post("/models/ens1/invoke", data, {**headers, TARGET: "pipeline.tar.gz"})
    assert r.status_code == 200, r.text
    res = parse_binary(r)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), 2 * a)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), 2 * b)
    assert res.get_response()["model_name"] == "pipeline.tar.gz"

    r = mme.delete("/models/ens1")
    assert r.status_code == 200, r.text
    index = {e["name"]: e for e in mme.server.http().get_model_repository_index()}
    assert index.get("simple", {}).get("state") != "READY", index
    assert mme.load("ens1", url, target="pipeline.tar.gz").status_code == 200


def test_mme_delete_waits_for_in_flight_requests(mme):
    url = mme.root / "slow" / "model"
    url.mkdir(parents=True)
    (url / "config.pbtxt").write_text(identity_config("slow", [("FP32", [-1])], parameters={"execute_delay_ms": str(DELAY_MS)}))
    (url / "1").mkdir()
    (url / "1" / "README").write_text("identity\n")
    assert mme.load("slow", url, target="slow.tar.gz").status_code == 200

    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}]}
    results = [None] * 3

    def call(i):
        results[i] = mme.clone().post("/models/slow/invoke", body, {TARGET: "slow.tar.gz"})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(IN_FLIGHT_WAIT_S)  # executing now (execute_delay_ms)
    start = time.monotonic()
    r = mme.delete("/models/slow")
    took = time.monotonic() - start
    for t in threads:
        t.join(60)
    assert r.status_code == 200, r.text
    for res in results:
        assert res is not None and res.status_code == 200, res and res.text
        assert res.json()["outputs"][0]["data"] == [1.0, 2.0]
    # The unload waited for them: they had most of DELAY_MS left.
    assert took >= DELAY_MS / 1000 - IN_FLIGHT_WAIT_S - 0.25, took
    assert mme.post("/models/slow/invoke", body).status_code == 404
    assert mme.get("/ping").status_code == 200


def test_mme_bad_loads(mme, tmp_path):
    root = mme.root
    good = artefact(root, "good", "identity_bytes")
    outside = tmp_path / "outside"
    shutil.copytree(EXAMPLES / "identity_bytes", outside / "model")
    (root / "escape").mkdir()
    os.symlink(outside / "model", root / "escape" / "model")
    corrupt = root / "corrupt" / "model"
    corrupt.mkdir(parents=True)
    (corrupt / "config.pbtxt").write_text('name: "corrupt"\nbackend: "identity"\nmax_batch_size: eight\n')
    noensemble = artefact(root, "two", "identity_bytes", "identity_multi")

    cases = [
        (b"", "must be a JSON object"),
        (b'{"model_name": "x", "url": ', "failed to parse the request JSON buffer"),
        (b'{"url": "%s"}' % str(good).encode(), "has no 'model_name'"),
        (b'{"model_name": "good"}', "has no 'url'"),
        (b'{"model_name": 7, "url": "%s"}' % str(good).encode(), "'model_name' must be a string"),
        ({"model_name": "a/b", "url": str(good)}, "must not contain a path separator"),
        ({"model_name": "..", "url": str(good)}, "must not contain '..'"),
        ({"model_name": "x", "url": str(root / "good" / ".." / "good" / "model")}, "must not contain '..'"),
        ({"model_name": "x", "url": str(outside / "model")}, "is not of the form"),
        ({"model_name": "x", "url": "/proc/self/model"}, "must not point under /proc"),
        ({"model_name": "x", "url": str(root / "good")}, "is not of the form"),
        ({"model_name": "x", "url": str(root / "missing" / "model")}, "cannot be read"),
        ({"model_name": "x", "url": str(root / "escape" / "model")}, "outside the model root"),
        ({"model_name": "x", "url": str(noensemble)}, "none is an ensemble"),
        ({"model_name": "x", "url": "relative/model"}, "must be an absolute path"),
    ]
    for body, want in cases:
        if isinstance(body, dict):
            r = mme.post("/models", body)
        else:
            r = mme.post("/models", body, {"Content-Type": "application/json"})
        assert r.status_code == 400, (body, r.status_code, r.text)
        assert want in error_of(r), (body, r.text)
    r = mme.load("good", good, target="a/b")
    assert r.status_code == 400 and "must not contain a path separator" in error_of(r)

    # Corrupt model files: the load fails with the config error, and the
    # repository is unregistered again, so that the fixed artefact loads.
    r = mme.load("corrupt", corrupt)
    assert r.status_code == 400, r.text
    assert "corrupt" in error_of(r)
    assert mme.get("/models/corrupt").status_code == 404
    (corrupt / "config.pbtxt").write_text(identity_config("corrupt", [("FP32", [-1])]))
    (corrupt / "1").mkdir()
    (corrupt / "1" / "README").write_text("identity\n")
    r = mme.load("corrupt", corrupt)
    assert r.status_code == 200, r.text

    # Still serving.
    assert mme.get("/ping").status_code == 200
    assert mme.load("good", good).status_code == 200
    assert mme.post("/models/good/invoke", bytes_request()).status_code == 200
    names = sorted(m["modelName"] for m in mme.get("/models").json()["models"])
    assert names == ["corrupt", "good"]


def test_mme_load_that_cannot_fit_is_507(nereid, tmp_path):
    """A load the model-cache memory budget cannot hold is 507, which makes
    SageMaker evict models and retry."""
    root = tmp_path / "models"
    url = root / "big" / "model"
    write_identity_model(root / "big", "model", [("FP32", [-1])])
    empty = tmp_path / "empty"
    empty.mkdir()
    _, sm = start(nereid, empty, "--model-control-mode=explicit", f"--sagemaker-model-root={root}", "--model-cache-memory=1")
    r = sm.load("big", url)
    assert r.status_code == 507, r.text
    assert "model cache budget" in error_of(r)
    assert sm.get("/models/big").status_code == 404


def test_mme_restricted_api(nereid, tmp_path):
    root = tmp_path / "models"
    url = artefact(root, "h", "identity_bytes")
    empty = tmp_path / "empty"
    empty.mkdir()
    _, sm = start(nereid, empty, "--model-control-mode=explicit", f"--sagemaker-model-root={root}",
                  "--http-restricted-api=model-repository:admin-key=s3cret", "--http-restricted-api=inference:infer-key=k")
    r = sm.load("h", url)
    assert r.status_code == 403 and error_of(r) == "This API is restricted, expecting header 'admin-key'"
    r = sm.post("/models", {"model_name": "h", "url": str(url)}, {"admin-key": "s3cret"})
    assert r.status_code == 200, r.text
    assert sm.get("/models").status_code == 403
    assert sm.get("/models", headers={"admin-key": "s3cret"}).status_code == 200
    r = sm.post("/models/h/invoke", bytes_request())
    assert r.status_code == 403 and "infer-key" in error_of(r)
    assert sm.post("/models/h/invoke", bytes_request(), {"infer-key": "k"}).status_code == 200
    assert sm.get("/ping").status_code == 200


def test_safe_port_range_refuses_a_port_outside(nereid, tmp_path):
    s = nereid.start(tmp_path, ["--allow-sagemaker=true", "--sagemaker-address=127.0.0.1", "--sagemaker-port=0",
                                "--sagemaker-safe-port-range=1-2", "--allow-grpc=false"], wait=False)
    rc = s.wait_exit(30)
    assert rc != 0
    assert f"--http-port={s.http_port} is outside --sagemaker-safe-port-range=1-2" in s.log_tail()


# --------------------------------------------------------------------------
# nereid serve


def serve(tmp_path, env):
    log = open(tmp_path / "serve.log", "wb")
    full = {k: v for k, v in os.environ.items() if not k.startswith("SAGEMAKER_")}
    full.update(env)
    proc = subprocess.Popen([str(NEREID_BIN), "serve"], env=full, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, log


def test_serve_multi_model_from_environment(tmp_path):
    root = tmp_path / "models"
    url = artefact(root, "h1", "identity_bytes")
    (port,) = _free_ports(1)
    proc, log = serve(tmp_path, {
        "SAGEMAKER_MULTI_MODEL": "true",
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_SAFE_PORT_RANGE": f"{port}-{port}",
        "SAGEMAKER_TRITON_LOG_VERBOSE": "false",
        "SAGEMAKER_TRITON_ADDITIONAL_ARGS": f"--sagemaker-address=127.0.0.1 --sagemaker-model-root={root} "
                                            f"--backend-config=python,python-executable={PYTHON_STUB_EXE}",
    })
    try:
        sm = SageMaker(port)
        wait_for(lambda: sm.get("/ping").status_code == 200, timeout=30, what="/ping")
        assert sm.load("h1", url, target="t.tar.gz").status_code == 200
        r = sm.post("/models/h1/invoke", bytes_request("x"), {TARGET: "t.tar.gz"})
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == ["x"], r.text
        assert sm.delete("/models/h1").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert rc == 0, text
    assert "--allow-http=false" in text and "--sagemaker-ping-mode=live" in text


def test_serve_refuses_what_it_cannot_honour(tmp_path):
    proc, log = serve(tmp_path, {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_TRITON_MODEL_LOAD_GPU_LIMIT": "0.8"})
    rc = proc.wait(30)
    log.close()
    text = (tmp_path / "serve.log").read_text()
    assert rc == 1, text
    assert "SAGEMAKER_TRITON_MODEL_LOAD_GPU_LIMIT" in text
