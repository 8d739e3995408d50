"""The ONNX Runtime backend end to end: Triton's example models, every
datatype through ONNX Identity models, auto-complete, and load and run-time
failures, with the real tritonclient over HTTP and gRPC."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import EXAMPLES, ROOT, NereidFactory, _factory_teardown
from e2e_util import (
    BINARY_ONLY,
    DATATYPES,
    assert_tensor_equal,
    grpc_inputs,
    http_inputs,
    http_outputs,
    sample,
)

ONNX_EXAMPLES = ["simple", "simple_int8", "simple_string", "simple_identity", "identity_fp32", "mlp_fp32"]


def _make_models():
    """scripts/make_models.py as a module: its helpers build test models."""
    spec = importlib.util.spec_from_file_location("make_models", ROOT / "scripts" / "make_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mm = _make_models()


def onnx_identity_name(datatype: str) -> str:
    return "onnx_identity_" + datatype.lower()


def build_onnx_repo(repo: pathlib.Path) -> pathlib.Path:
    """The ONNX examples, an ONNX identity model per datatype, and a model
    without config.pbtxt."""
    for name in ONNX_EXAMPLES:
        shutil.copytree(EXAMPLES / name, repo / name)
    for dt in DATATYPES:
        name = onnx_identity_name(dt)
        mm.write(repo, name, mm.identity_model(name, [(dt, [-1])]), mm.config_text(
            name, 8, [("INPUT0", dt, [-1])], [("OUTPUT0", dt, [-1])]))
    # No config.pbtxt: everything comes from the model.
    mm.write(repo, "onnx_autocomplete", mm.add_sub_model("onnx_autocomplete", "FP32"), None)
    return repo


@pytest.fixture(scope="module")
def onnx_server(tmp_path_factory):
    repo = build_onnx_repo(tmp_path_factory.mktemp("onnx_repo"))
    factory = NereidFactory(tmp_path_factory.mktemp("onnx_server"))
    yield factory.start(repo)
    _factory_teardown(factory)


def _simple_inputs(rng, batch, dtype=np.int32):
    info = np.iinfo(dtype)
    lo, hi = (info.min // 2, info.max // 2) if dtype == np.int32 else (info.min, info.max)
    a = rng.integers(lo, hi, size=(batch, 16), dtype=dtype)
    b = rng.integers(lo, hi, size=(batch, 16), dtype=dtype)
    return a, b


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_simple_http_and_grpc(onnx_server, batch):
    rng = np.random.default_rng(batch)
    a, b = _simple_inputs(rng, batch)
    r = onnx_server.http().infer("simple", http_inputs([a, b], ["INT32", "INT32"]))
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)
    g = onnx_server.grpc().infer("simple", grpc_inputs([a, b], ["INT32", "INT32"]))
    np.testing.assert_array_equal(g.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(g.as_numpy("OUTPUT1"), a - b)
    assert g.as_numpy("OUTPUT0").dtype == np.int32


def test_simple_json_and_requested_output(onnx_server):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    r = onnx_server.http().infer(
        "simple", http_inputs([a, b], ["INT32", "INT32"], binary=False),
        outputs=[httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)],
    )
    assert r.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)


def test_simple_int8_wraps(onnx_server):
    a = np.full((1, 16), 120, dtype=np.int8)
    b = np.arange(16, dtype=np.int8).reshape(1, 16)
    g = onnx_server.grpc().infer("simple_int8", grpc_inputs([a, b], ["INT8", "INT8"]))
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(g.as_numpy("OUTPUT0"), (a + b).astype(np.int8))
        np.testing.assert_array_equal(g.as_numpy("OUTPUT1"), (a - b).astype(np.int8))


def test_simple_string(onnx_server):
    a = np.array([[str(i).encode() for i in range(16)]], dtype=np.object_)
    b = np.array([[str(-7 * i).encode() for i in range(16)]], dtype=np.object_)
    want_sum = [str(i - 7 * i).encode() for i in range(16)]
    want_diff = [str(i + 7 * i).encode() for i in range(16)]
    r = onnx_server.http().infer("simple_string", http_inputs([a, b], ["BYTES", "BYTES"]))
    assert list(r.as_numpy("OUTPUT0").flatten()) == want_sum
    assert list(r.as_numpy("OUTPUT1").flatten()) == want_diff
    g = onnx_server.grpc().infer("simple_string", grpc_inputs([a, b], ["BYTES", "BYTES"]))
    assert list(g.as_numpy("OUTPUT0").flatten()) == want_sum


def test_simple_identity(onnx_server):
    for words in ([[b"hello", b"", b"world \xff\x00 binary"]], [[b"x" * 1000]]):
        data = np.array(words, dtype=np.object_)
        r = onnx_server.http().infer("simple_identity", http_inputs([data], ["BYTES"]))
        assert_tensor_equal(r.as_numpy("OUTPUT0"), data)
        g = onnx_server.grpc().infer("simple_identity", grpc_inputs([data], ["BYTES"]))
        assert_tensor_equal(g.as_numpy("OUTPUT0"), data)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_roundtrips(onnx_server, datatype):
    data = sample(datatype).reshape(1, -1)
    model = onnx_identity_name(datatype)
    r = onnx_server.http().infer(model, http_inputs([data], [datatype]), outputs=http_outputs(1))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), data)
    g = onnx_server.grpc().infer(model, grpc_inputs([data], [datatype]))
    assert_tensor_equal(g.as_numpy("OUTPUT0"), data)
    if datatype not in BINARY_ONLY:
        j = sample(datatype, json_mode=True).reshape(1, -1)
        r = onnx_server.http().infer(
            model, http_inputs([j], [datatype], binary=False), outputs=http_outputs(1, binary=False)
        )
        assert_tensor_equal(r.as_numpy("OUTPUT0"), j)


def test_identity_fp32_variable_length(onnx_server):
    for n in (1, 7, 300):
        data = np.linspace(-1, 1, 2 * n, dtype=np.float32).reshape(2, n)
        r = onnx_server.grpc().infer("identity_fp32", grpc_inputs([data], ["FP32"]))
        assert_tensor_equal(r.as_numpy("OUTPUT0"), data)


def test_mlp(onnx_server):
    x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    r = onnx_server.http().infer("mlp_fp32", http_inputs([x], ["FP32"]))
    y = r.as_numpy("OUTPUT0")
    assert y.shape == (5, 16) and y.dtype == np.float32 and np.all(np.isfinite(y))
    # Each row is computed alone: the same row in a batch of one agrees.
    r1 = onnx_server.http().infer("mlp_fp32", http_inputs([x[2:3]], ["FP32"]))
    np.testing.assert_allclose(r1.as_numpy("OUTPUT0")[0], y[2], rtol=1e-5, atol=1e-6)


def test_autocomplete_without_config(onnx_server):
    cfg = onnx_server.http().get_model_config("onnx_autocomplete")
    assert cfg["platform"] == "onnxruntime_onnx"
    assert cfg["backend"] == "onnxruntime"
    assert cfg["max_batch_size"] == 4  # Triton's default-max-batch-size
    assert [(i["name"], i["data_type"], i["dims"]) for i in cfg["input"]] == [
        ("INPUT0", "TYPE_FP32", [16]), ("INPUT1", "TYPE_FP32", [16])]
    assert [(o["name"], o["data_type"], o["dims"]) for o in cfg["output"]] == [
        ("OUTPUT0", "TYPE_FP32", [16]), ("OUTPUT1", "TYPE_FP32", [16])]
    assert "dynamic_batching" in cfg
    g = onnx_server.grpc().get_model_config("onnx_autocomplete").config
    assert g.max_batch_size == 4 and [i.name for i in g.input] == ["INPUT0", "INPUT1"]
    meta = onnx_server.http().get_model_metadata("onnx_autocomplete")
    assert meta["inputs"][0]["shape"] == [-1, 16]
    a = np.ones((2, 16), dtype=np.float32)
    r = onnx_server.http().infer("onnx_autocomplete", http_inputs([a, 2 * a], ["FP32", "FP32"]))
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), 3 * a)


def test_autocomplete_default_max_batch_size_flag(nereid, tmp_path):
    repo = tmp_path / "repo"
    mm.write(repo, "auto", mm.add_sub_model("auto", "FP32"), None)
    s = nereid.start(repo, ["--backend-config=default-max-batch-size=0"])
    cfg = s.http().get_model_config("auto")
    assert cfg.get("max_batch_size", 0) == 0
    assert cfg["input"][0]["dims"] == [-1, 16]


def test_autocomplete_disabled_requires_config(nereid, tmp_path):
    repo = tmp_path / "repo"
    mm.write(repo, "auto", mm.add_sub_model("auto", "FP32"), None)
    s = nereid.start(repo, ["--disable-auto-complete-config", "--exit-on-error=false"])
    idx = {m["name"]: m for m in s.http().get_model_repository_index()}
    assert idx["auto"]["state"] == "UNAVAILABLE"
    assert "config" in idx["auto"]["reason"]


def test_runtime_error_fails_only_that_request(onnx_server):
    a = np.array([[str(i).encode() for i in range(16)]], dtype=np.object_)
    bad = a.copy()
    bad[0, 5] = b"five"
    with pytest.raises(InferenceServerException) as e:
        onnx_server.http().infer("simple_string", http_inputs([a, bad], ["BYTES", "BYTES"]))
    assert "simple_string" in str(e.value) and "Cast" in str(e.value)
    with pytest.raises(InferenceServerException):
        onnx_server.grpc().infer("simple_string", grpc_inputs([a, bad], ["BYTES", "BYTES"]))
    r = onnx_server.http().infer("simple_string", http_inputs([a, a], ["BYTES", "BYTES"]))
    assert r.as_numpy("OUTPUT0")[0, 3] == b"6"


def test_wrong_shape_is_rejected(onnx_server):
    a = np.ones((1, 15), dtype=np.int32)
    with pytest.raises(InferenceServerException) as e:
        onnx_server.http().infer("simple", http_inputs([a, a], ["INT32", "INT32"]))
    assert "INPUT0" in str(e.value) and "simple" in str(e.value)


def _config_with(src: str, name: str) -> str:
    """An example's config.pbtxt under another model name."""
    return (EXAMPLES / src / "config.pbtxt").read_text().replace(f'name: "{src}"', f'name: "{name}"')


def test_load_failures_reported_in_index(nereid, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "simple", repo / "simple")
    # A file that is not an ONNX model.
    (repo / "corrupt" / "1").mkdir(parents=True)
    (repo / "corrupt" / "1" / "model.onnx").write_bytes(b"\x08\x07garbage, not a model")
    (repo / "corrupt" / "config.pbtxt").write_text(_config_with("simple", "corrupt"))
    # A configuration that contradicts the model.
    shutil.copytree(EXAMPLES / "simple" / "1", repo / "wrong_type" / "1")
    (repo / "wrong_type" / "config.pbtxt").write_text(
        _config_with("simple", "wrong_type").replace("TYPE_INT32", "TYPE_FP32", 1))
    shutil.copytree(EXAMPLES / "simple" / "1", repo / "wrong_dims" / "1")
    (repo / "wrong_dims" / "config.pbtxt").write_text(
        _config_with("simple", "wrong_dims").replace("dims: [ 16 ]", "dims: [ 4, 4 ]", 1))
    # An input type Nereid does not serve.
    (repo / "complex" / "1").mkdir(parents=True)
    x = mm.helper.make_tensor_value_info("INPUT0", mm.TensorProto.COMPLEX64, ["batch", 4])
    y = mm.helper.make_tensor_value_info("OUTPUT0", mm.TensorProto.COMPLEX64, ["batch", 4])
    model = mm.make_model("complex", [mm.helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])], [x], [y])
    (repo / "complex" / "1" / "model.onnx").write_bytes(model.SerializeToString())

    s = nereid.start(repo, ["--exit-on-error=false", "--strict-readiness=false"])
    idx = {m["name"]: m for m in s.http().get_model_repository_index()}
    assert idx["simple"]["state"] == "READY"
    reasons = {name: idx[name]["reason"] for name in ("corrupt", "wrong_type", "wrong_dims", "complex")}
    for name, reason in reasons.items():
        assert idx[name]["state"] == "UNAVAILABLE", (name, idx[name])
    assert "corrupt" in reasons["corrupt"] and "model.onnx" in reasons["corrupt"], reasons["corrupt"]
    assert "expects datatype TYPE_FP32 for input 'INPUT0', model provides TYPE_INT32" in reasons["wrong_type"]
    assert "tensor 'INPUT0'" in reasons["wrong_dims"] and "[-1,4,4]" in reasons["wrong_dims"]
    assert "complex64" in reasons["complex"]
    # The server keeps serving the good model.
    a = np.ones((1, 16), dtype=np.int32)
    r = s.grpc().infer("simple", grpc_inputs([a, a], ["INT32", "INT32"]))
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), 2 * a)


def test_missing_library_fails_only_onnx_models(nereid, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "simple", repo / "simple")
    shutil.copytree(EXAMPLES / "identity_bytes", repo / "identity_bytes")
    s = nereid.start(repo, [
        "--backend-config=onnxruntime,library=/nonexistent/libonnxruntime.so.1",
        "--exit-on-error=false", "--strict-readiness=false",
    ])
    idx = {m["name"]: m for m in s.http().get_model_repository_index()}
    assert idx["identity_bytes"]["state"] == "READY"
    assert idx["simple"]["state"] == "UNAVAILABLE"
    reason = idx["simple"]["reason"]
    assert "/nonexistent/libonnxruntime.so.1" in reason and "make ort" in reason, reason
    assert "--backend-config=onnxruntime,library=" in reason


def test_gpu_instance_group_fails_clearly(nereid, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "simple" / "1", repo / "simple_gpu" / "1")
    (repo / "simple_gpu" / "config.pbtxt").write_text(
        _config_with("simple", "simple_gpu") + "instance_group [ { kind: KIND_GPU count: 1 } ]\n")
    s = nereid.start(repo, ["--exit-on-error=false", "--strict-readiness=false"])
    idx = {m.name: m for m in s.grpc().get_model_repository_index().models}
    assert idx["simple_gpu"].state == "UNAVAILABLE"
    # Triton's text on a machine without GPUs; with GPUs and a CPU build of
    # ONNX Runtime the reason names the CUDA execution provider instead.
    reason = idx["simple_gpu"].reason
    assert ("instance group simple_gpu_0 of model simple_gpu has kind KIND_GPU but no GPUs are available" in reason
            or ("KIND_GPU" in reason and "CUDA" in reason)), reason


def test_grpc_client_batch_of_requests_concurrently(onnx_server):
    """Several clients at once on a model with two instances."""
    import concurrent.futures

    client = onnx_server.grpc()
    rng = np.random.default_rng(7)
    pairs = [_simple_inputs(rng, 1 + i % 3) for i in range(12)]

    def call(pair):
        a, b = pair
        r = client.infer("simple", grpc_inputs([a, b], ["INT32", "INT32"]))
        return r.as_numpy("OUTPUT0"), a + b

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for got, want in pool.map(call, pairs):
            np.testing.assert_array_equal(got, want)
    assert isinstance(client, grpcclient.InferenceServerClient)


def test_mlp_concurrent_requests_match_single(onnx_server):
    """mlp_fp32 has dynamic batching: concurrent requests may run as one
    batch, concatenated along the batch dimension and split back. Each must
    get exactly its own rows."""
    import concurrent.futures

    rng = np.random.default_rng(11)
    xs = [rng.standard_normal((1 + i % 3, 64)).astype(np.float32) for i in range(16)]
    client = onnx_server.http()
    want = [client.infer("mlp_fp32", http_inputs([x], ["FP32"])).as_numpy("OUTPUT0") for x in xs]

    g = onnx_server.grpc()

    def call(x):
        return g.infer("mlp_fp32", grpc_inputs([x], ["FP32"])).as_numpy("OUTPUT0")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(call, xs))
    for x, y, w in zip(xs, got, want):
        assert y.shape == (x.shape[0], 16)
        np.testing.assert_allclose(y, w, rtol=1e-5, atol=1e-5)


def test_model_directory_with_external_data(nereid, tmp_path):
    """default_model_filename may name a directory: its model.onnx loads,
    with weights in a separate file beside it (ONNX external data)."""
    import onnx

    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "mlp_fp32", repo / "mlp_fp32")
    mdir = repo / "mlp_external" / "1" / "model.onnx"
    mdir.mkdir(parents=True)
    onnx.save_model(
        mm.mlp_model("mlp_external"), str(mdir / "model.onnx"),
        save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0,
    )
    assert (mdir / "weights.bin").stat().st_size > 1_000_000
    (repo / "mlp_external" / "config.pbtxt").write_text(_config_with("mlp_fp32", "mlp_external"))
    s = nereid.start(repo)
    x = np.random.default_rng(3).standard_normal((3, 64)).astype(np.float32)
    want = s.http().infer("mlp_fp32", http_inputs([x], ["FP32"])).as_numpy("OUTPUT0")
    got = s.grpc().infer("mlp_external", grpc_inputs([x], ["FP32"])).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(got, want)
