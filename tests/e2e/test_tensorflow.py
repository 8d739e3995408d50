"""The TensorFlow backend end to end: the TensorFlow example models
(SavedModels and a GraphDef), every datatype through a GraphDef of Identity
ops, auto-complete from a SavedModel's signature, dynamic batching of
concurrent requests, warm-up, and load and run-time failures, with the real
tritonclient over HTTP and gRPC."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import pathlib
import shutil

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from conftest import EXAMPLES, ROOT, NereidFactory, _factory_teardown
from e2e_util import BINARY_ONLY, assert_tensor_equal, grpc_inputs, http_inputs, http_outputs, sample

TF_EXAMPLES = ["simple_savedmodel", "simple_string_savedmodel", "simple_graphdef", "mlp_savedmodel"]
TESTDATA = ROOT / "backends" / "tensorflow" / "testdata" / "models"
# The order of the types in testdata/models/all_types.graphdef (INPUTi ->
# Identity -> OUTPUTi), as scripts/make_models.py writes it.
ALL_TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES", "BF16"]


def _make_models():
    spec = importlib.util.spec_from_file_location("make_models", ROOT / "scripts" / "make_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mm = _make_models()


def _config_with(src: str, name: str) -> str:
    return (EXAMPLES / src / "config.pbtxt").read_text().replace(f'name: "{src}"', f'name: "{name}"')


def _graphdef_model(repo: pathlib.Path, name: str, testdata: str, config: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    shutil.copy(TESTDATA / testdata, repo / name / "1" / "model.graphdef")
    (repo / name / "config.pbtxt").write_text(config)


def build_tf_repo(repo: pathlib.Path) -> pathlib.Path:
    """The TensorFlow examples, mlp_fp32 (the ONNX twin of mlp_savedmodel),
    a GraphDef of every type, one that fails on NaN, and a SavedModel with
    no config.pbtxt at all."""
    for name in TF_EXAMPLES + ["mlp_fp32"]:
        shutil.copytree(EXAMPLES / name, repo / name)
    ins = [(f"INPUT{i}", dt, [-1]) for i, dt in enumerate(ALL_TYPES)]
    outs = [(f"OUTPUT{i}", dt, [-1]) for i, dt in enumerate(ALL_TYPES)]
    _graphdef_model(repo, "tf_all_types", "all_types.graphdef",
                    mm.tf_config_text("tf_all_types", "tensorflow_graphdef", 8, ins, outs))
    _graphdef_model(repo, "tf_numerics", "check_numerics.graphdef", mm.tf_config_text(
        "tf_numerics", "tensorflow_graphdef", 8, [("INPUT0", "FP32", [4])], [("OUTPUT0", "FP32", [4])]))
    shutil.copytree(EXAMPLES / "simple_savedmodel" / "1", repo / "tf_noconfig" / "1")
    return repo


@pytest.fixture(scope="module")
def tf_server(tmp_path_factory):
    repo = build_tf_repo(tmp_path_factory.mktemp("tf_repo"))
    factory = NereidFactory(tmp_path_factory.mktemp("tf_server"))
    yield factory.start(repo)
    _factory_teardown(factory)


def _ints(rng, batch, dtype):
    info = np.iinfo(dtype)
    lo, hi = (info.min // 2, info.max // 2) if dtype == np.int32 else (info.min, info.max)
    return rng.integers(lo, hi, size=(batch, 16), dtype=dtype), rng.integers(lo, hi, size=(batch, 16), dtype=dtype)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_simple_savedmodel(tf_server, batch):
    a, b = _ints(np.random.default_rng(batch), batch, np.int32)
    r = tf_server.http().infer("simple_savedmodel", http_inputs([a, b], ["INT32", "INT32"]))
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)
    g = tf_server.grpc().infer("simple_savedmodel", grpc_inputs([a, b], ["INT32", "INT32"]))
    np.testing.assert_array_equal(g.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(g.as_numpy("OUTPUT1"), a - b)
    assert g.as_numpy("OUTPUT0").dtype == np.int32


def test_simple_savedmodel_json_and_requested_output(tf_server):
    import tritonclient.http as httpclient

    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    r = tf_server.http().infer(
        "simple_savedmodel", http_inputs([a, b], ["INT32", "INT32"], binary=False),
        outputs=[httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)],
    )
    assert r.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)


def test_simple_graphdef_int8_wraps(tf_server):
    a = np.full((2, 16), 120, dtype=np.int8)
    b = np.arange(32, dtype=np.int8).reshape(2, 16)
    for client, inputs in ((tf_server.http(), http_inputs), (tf_server.grpc(), grpc_inputs)):
        r = client.infer("simple_graphdef", inputs([a, b], ["INT8", "INT8"]))
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), (a + b).astype(np.int8))
            np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), (a - b).astype(np.int8))


def test_simple_string_savedmodel_autocompleted(tf_server):
    cfg = tf_server.http().get_model_config("simple_string_savedmodel")
    assert cfg["platform"] == "tensorflow_savedmodel" and cfg["backend"] == "tensorflow"
    assert cfg["max_batch_size"] == 4 and "dynamic_batching" in cfg
    assert [(i["name"], i["data_type"], i["dims"]) for i in cfg["input"]] == [
        ("INPUT0", "TYPE_STRING", [16]), ("INPUT1", "TYPE_STRING", [16])]
    assert [(o["name"], o["data_type"], o["dims"]) for o in cfg["output"]] == [
        ("OUTPUT0", "TYPE_STRING", [16]), ("OUTPUT1", "TYPE_STRING", [16])]
    a = np.array([[str(i).encode() for i in range(16)]] * 2, dtype=np.object_)
    b = np.array([[str(-7 * i).encode() for i in range(16)]] * 2, dtype=np.object_)
    want_sum = [str(i - 7 * i).encode() for i in range(16)] * 2
    want_diff = [str(i + 7 * i).encode() for i in range(16)] * 2
    r = tf_server.http().infer("simple_string_savedmodel", http_inputs([a, b], ["BYTES", "BYTES"]))
    assert list(r.as_numpy("OUTPUT0").flatten()) == want_sum
    assert list(r.as_numpy("OUTPUT1").flatten()) == want_diff
    g = tf_server.grpc().infer("simple_string_savedmodel", grpc_inputs([a, b], ["BYTES", "BYTES"]))
    assert list(g.as_numpy("OUTPUT1").flatten()) == want_diff


def test_savedmodel_without_config(tf_server):
    cfg = tf_server.grpc().get_model_config("tf_noconfig").config
    assert cfg.platform == "tensorflow_savedmodel" and cfg.backend == "tensorflow"
    assert cfg.max_batch_size == 4 and [i.name for i in cfg.input] == ["INPUT0", "INPUT1"]
    meta = tf_server.http().get_model_metadata("tf_noconfig")
    assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]}
    a = np.ones((2, 16), dtype=np.int32)
    r = tf_server.grpc().infer("tf_noconfig", grpc_inputs([a, 3 * a], ["INT32", "INT32"]))
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), 4 * a)


@pytest.mark.parametrize("protocol", ["http", "grpc", "json"])
def test_every_datatype(tf_server, protocol):
    arrays = [sample(dt, json_mode=protocol == "json").reshape(1, -1) for dt in ALL_TYPES]
    if protocol == "json":
        # JSON carries neither FP16 nor BF16: those two go as binary data.
        import tritonclient.http as httpclient

        inputs = []
        for i, (arr, dt) in enumerate(zip(arrays, ALL_TYPES)):
            inp = httpclient.InferInput(f"INPUT{i}", list(arr.shape), dt)
            inp.set_data_from_numpy(arr, binary_data=dt in BINARY_ONLY)
            inputs.append(inp)
        outputs = [httpclient.InferRequestedOutput(f"OUTPUT{i}", binary_data=dt in BINARY_ONLY)
                   for i, dt in enumerate(ALL_TYPES)]
        r = tf_server.http().infer("tf_all_types", inputs, outputs=outputs)
    elif protocol == "http":
        r = tf_server.http().infer("tf_all_types", http_inputs(arrays, ALL_TYPES), outputs=http_outputs(len(ALL_TYPES)))
    else:
        r = tf_server.grpc().infer("tf_all_types", grpc_inputs(arrays, ALL_TYPES))
    for i, arr in enumerate(arrays):
        assert_tensor_equal(r.as_numpy(f"OUTPUT{i}"), arr)


def test_mlp_savedmodel_matches_onnx(tf_server):
    """The SavedModel and the ONNX model of the same network agree."""
    x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    tf_out = tf_server.http().infer("mlp_savedmodel", http_inputs([x], ["FP32"])).as_numpy("OUTPUT0")
    onnx_out = tf_server.grpc().infer("mlp_fp32", grpc_inputs([x], ["FP32"])).as_numpy("OUTPUT0")
    assert tf_out.shape == (5, 16) and tf_out.dtype == np.float32
    np.testing.assert_allclose(tf_out, onnx_out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", ["mlp_savedmodel", "simple_savedmodel"])
def test_concurrent_batched_requests_match_single(tf_server, model):
    """Concurrent requests to a model with dynamic batching (mlp_savedmodel)
    may run as one batch, concatenated along the
    batch dimension and split back: each gets exactly its own rows."""
    rng = np.random.default_rng(11)
    if model == "mlp_savedmodel":
        reqs = [[rng.standard_normal((1 + i % 3, 64)).astype(np.float32)] for i in range(24)]
        types = ["FP32"]
    else:
        reqs = [list(_ints(rng, 1 + i % 3, np.int32)) for i in range(24)]
        types = ["INT32", "INT32"]
    http = tf_server.http()
    want = [http.infer(model, http_inputs(r, types)).as_numpy("OUTPUT0") for r in reqs]
    g = tf_server.grpc()
    stats_before = tf_server.http().get_inference_statistics(model)["model_stats"][0]

    def call(args):
        i, r = args
        if i % 2:
            return g.infer(model, grpc_inputs(r, types)).as_numpy("OUTPUT0")
        return tf_server.http().infer(model, http_inputs(r, types)).as_numpy("OUTPUT0")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(call, enumerate(reqs)))
    for r, y, w in zip(reqs, got, want):
        assert y.shape == (r[0].shape[0], 16)
        np.testing.assert_allclose(y, w, rtol=1e-5, atol=1e-5)
    stats = tf_server.http().get_inference_statistics(model)["model_stats"][0]
    assert stats["inference_count"] - stats_before["inference_count"] == sum(r[0].shape[0] for r in reqs)


def test_runtime_failures_fail_only_that_request(tf_server):
    a = np.array([[str(i).encode() for i in range(16)]], dtype=np.object_)
    bad = a.copy()
    bad[0, 5] = b"five"
    with pytest.raises(InferenceServerException) as e:
        tf_server.http().infer("simple_string_savedmodel", http_inputs([a, bad], ["BYTES", "BYTES"]))
    assert "simple_string_savedmodel" in str(e.value) and "five" in str(e.value)
    assert e.value.status() == "400"
    with pytest.raises(InferenceServerException) as e:
        tf_server.grpc().infer("simple_string_savedmodel", grpc_inputs([a, bad], ["BYTES", "BYTES"]))
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    nan = np.full((1, 4), np.nan, dtype=np.float32)
    with pytest.raises(InferenceServerException) as e:
        tf_server.grpc().infer("tf_numerics", grpc_inputs([nan], ["FP32"]))
    assert "NaN" in str(e.value)
    # Both models keep serving.
    r = tf_server.http().infer("simple_string_savedmodel", http_inputs([a, a], ["BYTES", "BYTES"]))
    assert r.as_numpy("OUTPUT0")[0, 3] == b"6"
    ok = np.ones((1, 4), dtype=np.float32)
    assert_tensor_equal(tf_server.grpc().infer("tf_numerics", grpc_inputs([ok], ["FP32"])).as_numpy("OUTPUT0"), ok)


def test_malformed_bytes_element_is_rejected(tf_server):
    """A BYTES element whose length prefix runs past the data fails that
    request with INVALID_ARGUMENT."""
    import json
    import struct

    a = b"".join(struct.pack("<I", 1) + b"1" for _ in range(16))
    bad = a[:-5] + struct.pack("<I", 100) + b"1"
    header = {"inputs": [
        {"name": "INPUT0", "datatype": "BYTES", "shape": [1, 16], "parameters": {"binary_data_size": len(a)}},
        {"name": "INPUT1", "datatype": "BYTES", "shape": [1, 16], "parameters": {"binary_data_size": len(bad)}},
    ]}
    head = json.dumps(header).encode()
    resp = tf_server.request("POST", "/v2/models/simple_string_savedmodel/infer", head + a + bad,
                             {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"})
    assert resp.status == 400, (resp.status, resp.body)
    r = tf_server.http().infer("simple_savedmodel", http_inputs([np.ones((1, 16), np.int32)] * 2, ["INT32", "INT32"]))
    assert r.as_numpy("OUTPUT0")[0, 0] == 2


def test_wrong_shape_and_type_are_rejected(tf_server):
    a = np.ones((1, 15), dtype=np.int32)
    with pytest.raises(InferenceServerException) as e:
        tf_server.http().infer("simple_savedmodel", http_inputs([a, a], ["INT32", "INT32"]))
    assert "INPUT0" in str(e.value)
    f = np.ones((1, 16), dtype=np.float32)
    with pytest.raises(InferenceServerException) as e:
        tf_server.grpc().infer("simple_savedmodel", grpc_inputs([f, f], ["FP32", "FP32"]))
    assert "INPUT0" in str(e.value)


def test_load_failures_reported_in_index(nereid, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "simple_savedmodel", repo / "simple_savedmodel")

    def savedmodel_copy(name, config):
        shutil.copytree(EXAMPLES / "simple_savedmodel" / "1", repo / name / "1")
        (repo / name / "config.pbtxt").write_text(config)

    def cfg(name):
        return _config_with("simple_savedmodel", name)

    savedmodel_copy("no_signature", cfg("no_signature")
                    + 'parameters { key: "TF_SIGNATURE_DEF" value { string_value: "predict" } }\n')
    savedmodel_copy("no_tag", cfg("no_tag") + 'parameters { key: "TF_GRAPH_TAG" value { string_value: "gpu" } }\n')
    savedmodel_copy("wrong_type", cfg("wrong_type").replace("TYPE_INT32", "TYPE_FP32", 1))
    savedmodel_copy("wrong_dims", cfg("wrong_dims").replace("dims: [ 16 ]", "dims: [ 4, 4 ]", 1))
    savedmodel_copy("bad_warmup", cfg("bad_warmup") + (
        'model_warmup [ { name: "short" batch_size: 1 inputs { key: "INPUT0" value {'
        ' data_type: TYPE_INT32 dims: [ 16 ] zero_data: true } } } ]\n'))
    (repo / "corrupt" / "1" / "model.savedmodel").mkdir(parents=True)
    (repo / "corrupt" / "1" / "model.savedmodel" / "saved_model.pb").write_bytes(b"\x08\x07garbage")
    (repo / "corrupt" / "config.pbtxt").write_text(cfg("corrupt"))
    shutil.copytree(EXAMPLES / "simple_graphdef" / "1", repo / "missing_tensor" / "1")
    (repo / "missing_tensor" / "config.pbtxt").write_text(
        _config_with("simple_graphdef", "missing_tensor").replace('name: "OUTPUT1"', 'name: "SUM"'))

    s = nereid.start(repo, ["--exit-on-error=false", "--strict-readiness=false"])
    idx = {m["name"]: m for m in s.http().get_model_repository_index()}
    assert idx["simple_savedmodel"]["state"] == "READY"
    reason = {n: idx[n]["reason"] for n in idx if n != "simple_savedmodel"}
    for n in reason:
        assert idx[n]["state"] == "UNAVAILABLE", (n, idx[n])
    assert "no signature 'predict'" in reason["no_signature"] and "serving_default" in reason["no_signature"]
    assert "model.savedmodel" in reason["no_signature"]
    assert "tag 'gpu'" in reason["no_tag"]
    assert "expects datatype TYPE_FP32 for input 'INPUT0', model provides TYPE_INT32" in reason["wrong_type"]
    assert "tensor 'INPUT0'" in reason["wrong_dims"] and "[-1,4,4]" in reason["wrong_dims"]
    assert "warm-up sample 'short'" in reason["bad_warmup"] and "INPUT1" in reason["bad_warmup"]
    assert "unable to load the SavedModel" in reason["corrupt"] and "model.savedmodel" in reason["corrupt"]
    assert "no tensor 'SUM'" in reason["missing_tensor"] and "model.graphdef" in reason["missing_tensor"]
    a = np.ones((1, 16), dtype=np.int32)
    r = s.grpc().infer("simple_savedmodel", grpc_inputs([a, a], ["INT32", "INT32"]))
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), 2 * a)


def test_missing_library_fails_only_tensorflow_models(nereid, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "simple_savedmodel", repo / "simple_savedmodel")
    shutil.copytree(EXAMPLES / "simple", repo / "simple")
    s = nereid.start(repo, [
        "--backend-config=tensorflow,library=/nonexistent/libtensorflow_cc.so.2",
        "--exit-on-error=false", "--strict-readiness=false",
    ])
    idx = {m["name"]: m for m in s.http().get_model_repository_index()}
    assert idx["simple"]["state"] == "READY"
    assert idx["simple_savedmodel"]["state"] == "UNAVAILABLE"
    reason = idx["simple_savedmodel"]["reason"]
    assert "/nonexistent/libtensorflow_cc.so.2" in reason and "make tf" in reason, reason


def test_instances_and_thread_parameters(nereid, tmp_path):
    """Three instances with two intra-op threads each serve concurrent
    requests; a warm-up sample runs on every instance before the model is
    ready."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "mlp_savedmodel" / "1", repo / "mlp3" / "1")
    (repo / "mlp3" / "config.pbtxt").write_text(
        _config_with("mlp_savedmodel", "mlp3")
        + "instance_group [ { count: 3 kind: KIND_CPU } ]\n"
        + 'parameters { key: "TF_NUM_INTRA_THREADS" value { string_value: "2" } }\n')
    s = nereid.start(repo)
    cfg = s.http().get_model_config("mlp3")
    assert cfg["instance_group"][0]["count"] == 3
    x = np.random.default_rng(5).standard_normal((4, 64)).astype(np.float32)
    want = s.http().infer("mlp3", http_inputs([x], ["FP32"])).as_numpy("OUTPUT0")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        for y in pool.map(lambda _: s.grpc().infer("mlp3", grpc_inputs([x], ["FP32"])).as_numpy("OUTPUT0"), range(12)):
            np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)  # batches of other sizes round differently
