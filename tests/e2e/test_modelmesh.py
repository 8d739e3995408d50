"""ModelMesh's model-runtime API (--allow-modelmesh): the calls a ModelMesh
container makes to its serving runtime — runtimeStatus, predictModelSize,
loadModel, modelSize, unloadModel — made with a client generated at test
time from proto/modelmesh/model_runtime.proto by grpcio-tools, as ModelMesh
makes them; inference then goes to Nereid's own gRPC port through
tritonclient with the model id as the model name, which is what ModelMesh's
id injection (the methodInfos of runtimeStatus) writes into each request.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import shutil
import sys

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_tools import protoc
from tritonclient.utils import InferenceServerException

from conftest import EXAMPLES, ROOT, _free_ports, identity_config, write_model

PROTO_DIR = ROOT / "proto" / "modelmesh"
BUDGET = 1 << 30
LOAD_THREADS = 3
MODEL_KEY = json.dumps({"model_type": {"name": "triton"}})


@pytest.fixture(scope="session")
def mmesh(tmp_path_factory):
    """model_runtime_pb2 and model_runtime_pb2_grpc, generated from our proto."""
    out = tmp_path_factory.mktemp("mmesh_stubs")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_DIR / "model_runtime.proto"),
        ]
    )
    assert rc == 0, "protoc failed on proto/modelmesh/model_runtime.proto"
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("model_runtime_pb2")
        pb2_grpc = importlib.import_module("model_runtime_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return pb2, pb2_grpc


class Runtime:
    """A client of the model-runtime port."""

    def __init__(self, mmesh, port: int):
        self.pb2, pb2_grpc = mmesh
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb2_grpc.ModelRuntimeStub(self.channel)

    def status(self):
        return self.stub.runtimeStatus(self.pb2.RuntimeStatusRequest(), timeout=30)

    def load(self, model_id, path, key=MODEL_KEY):
        req = self.pb2.LoadModelRequest(modelId=model_id, modelType="triton", modelPath=str(path), modelKey=key)
        return self.stub.loadModel(req, timeout=60)

    def unload(self, model_id):
        return self.stub.unloadModel(self.pb2.UnloadModelRequest(modelId=model_id), timeout=60)

    def size(self, model_id):
        return self.stub.modelSize(self.pb2.ModelSizeRequest(modelId=model_id), timeout=30).sizeInBytes

    def predict(self, model_id, path, key=MODEL_KEY):
        req = self.pb2.PredictModelSizeRequest(modelId=model_id, modelType="triton", modelPath=str(path), modelKey=key)
        return self.stub.predictModelSize(req, timeout=0.5).sizeInBytes  # ModelMesh's deadline


def start(nereid, tmp_path, mmesh, budget=BUDGET, *flags):
    """A nereid with an empty repository and the model-runtime port; (server, runtime)."""
    repo = tmp_path / "empty_repo"
    repo.mkdir(exist_ok=True)
    (port,) = _free_ports(1)
    s = nereid.start(
        repo,
        [
            "--model-control-mode=explicit",
            f"--model-cache-memory={budget}",
            f"--model-load-thread-count={LOAD_THREADS}",
            "--allow-modelmesh=true",
            "--modelmesh-address=127.0.0.1",
            f"--modelmesh-port={port}",
            *flags,
        ],
    )
    rt = Runtime(mmesh, port)
    grpc.channel_ready_future(rt.channel).result(timeout=10)
    return s, rt


def simple_inputs():
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return a, b, inputs


def infer_simple(server, model_id, headers=None):
    a, b, inputs = simple_inputs()
    client = server.grpc()
    try:
        result = client.infer(model_id, inputs, headers=headers)
    finally:
        client.close()
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def memory_usage(server, model_id) -> int:
    client = server.grpc()
    try:
        stats = client.get_inference_statistics(model_id, as_json=True)
    finally:
        client.close()
    return sum(int(m.get("byte_size", 0)) for s in stats["model_stats"] for m in s.get("memory_usage", []))


def grpc_code(call, *args):
    with pytest.raises(grpc.RpcError) as e:
        call(*args)
    return e.value.code(), e.value.details()


def test_runtime_status(nereid, tmp_path, mmesh):
    s, rt = start(nereid, tmp_path, mmesh, BUDGET, "--modelmesh-load-timeout-secs=45", "--modelmesh-default-model-size=2000000")
    st = rt.status()
    pb2 = rt.pb2
    assert st.status == pb2.RuntimeStatusResponse.READY
    assert st.capacityInBytes == BUDGET
    assert st.maxLoadingConcurrency == LOAD_THREADS
    assert st.modelLoadingTimeoutMs == 45_000
    assert st.defaultModelSizeInBytes == 2_000_000
    assert st.runtimeVersion != ""
    assert not st.limitModelConcurrency and not st.allowAnyMethod
    methods = {k: list(v.idInjectionPath) for k, v in st.methodInfos.items()}
    assert methods == {
        f"inference.GRPCInferenceService/{m}": [1] for m in ("ModelInfer", "ModelMetadata", "ModelReady", "ModelConfig")
    }
    s.stop_gracefully()


def test_load_size_infer_unload(nereid, tmp_path, mmesh):
    s, rt = start(nereid, tmp_path, mmesh)
    rt.status()
    # modelPath is a Triton model directory, as ModelMesh Serving's puller
    # leaves it: a copy of the example, under the puller's kind of path.
    model_dir = tmp_path / "models" / "simple__isvc-6f1e2d"
    shutil.copytree(EXAMPLES / "simple", model_dir)
    onnx_bytes = (model_dir / "1" / "model.onnx").stat().st_size

    assert rt.predict("simple__isvc-6f1e2d", model_dir) == onnx_bytes
    size = rt.load("simple__isvc-6f1e2d", model_dir).sizeInBytes
    assert size >= onnx_bytes  # the measured footprint, never less than the files
    assert rt.size("simple__isvc-6f1e2d") == size
    assert memory_usage(s, "simple__isvc-6f1e2d") == size

    # Inference through the v2 gRPC API under the model id, with the
    # header ModelMesh also sends.
    infer_simple(s, "simple__isvc-6f1e2d")
    infer_simple(s, "simple__isvc-6f1e2d", headers={"mm-model-id": "simple__isvc-6f1e2d"})
    client = s.grpc()
    try:
        assert client.get_model_metadata("simple__isvc-6f1e2d").name == "simple__isvc-6f1e2d"
        # Served only under the id: the plain name is not ready (gRPC
        # ModelReady answers ready=false for an unknown model, as Triton).
        assert not client.is_model_ready("simple")
    finally:
        client.close()

    # A model repository as modelPath: its one model is served under the id.
    repo_dir = tmp_path / "models" / "simple-repo__isvc-77"
    shutil.copytree(EXAMPLES / "simple", repo_dir / "simple")
    assert rt.load("simple-repo__isvc-77", repo_dir).sizeInBytes > 0
    infer_simple(s, "simple-repo__isvc-77")

    rt.unload("simple__isvc-6f1e2d")
    with pytest.raises(InferenceServerException) as e:
        infer_simple(s, "simple__isvc-6f1e2d")
    assert e.value.status() == "StatusCode.NOT_FOUND"  # ModelMesh's "model not here"
    code, _ = grpc_code(rt.size, "simple__isvc-6f1e2d")
    assert code == grpc.StatusCode.NOT_FOUND
    rt.unload("simple__isvc-6f1e2d")  # again: answered without error
    infer_simple(s, "simple-repo__isvc-77")  # the other model is untouched

    # runtimeStatus, as ModelMesh calls it when it (re)starts, drops the
    # models it had loaded.
    assert rt.status().status == rt.pb2.RuntimeStatusResponse.READY
    with pytest.raises(InferenceServerException) as e:
        infer_simple(s, "simple-repo__isvc-77")
    assert e.value.status() == "StatusCode.NOT_FOUND"
    # The files of the models are left alone.
    assert (model_dir / "1" / "model.onnx").stat().st_size == onnx_bytes
    assert (repo_dir / "simple" / "config.pbtxt").exists()
    s.stop_gracefully()


def test_bad_requests(nereid, tmp_path, mmesh):
    s, rt = start(nereid, tmp_path, mmesh, 100_000)
    rt.status()
    good = tmp_path / "good"
    shutil.copytree(EXAMPLES / "simple", good)
    a_file = tmp_path / "model.onnx"
    shutil.copy(good / "1" / "model.onnx", a_file)
    two = tmp_path / "two"
    shutil.copytree(EXAMPLES / "simple", two / "a")
    shutil.copytree(EXAMPLES / "simple", two / "b")
    INVALID = grpc.StatusCode.INVALID_ARGUMENT
    for model_id, path, want in [
        ("", good, "modelId must not be empty"),
        ("a/b", good, "must not contain"),
        ("x", "", "modelPath must not be empty"),
        ("x", "relative/dir", "must be an absolute path"),
        ("x", tmp_path / "missing", "does not exist"),
        ("x", a_file, "is not a directory"),
        ("x", two, "holds 2 models (a, b)"),
        ("x", "/proc/self", "must not be under /proc"),
    ]:
        code, details = grpc_code(rt.load, model_id, path)
        assert code == INVALID and want in details, (model_id, path, code, details)

    # Larger than the capacity: refused before anything loads.
    big = write_model(tmp_path / "big_repo", "big", identity_config("big", [("FP32", [-1])], parameters={"nereid_memory_bytes": "200000"}))
    code, details = grpc_code(rt.load, "big__isvc-1", big)
    assert code == grpc.StatusCode.FAILED_PRECONDITION, details
    assert "--model-cache-memory" in details and "200000" in details
    code, _ = grpc_code(rt.size, "big__isvc-1")
    assert code == grpc.StatusCode.NOT_FOUND
    rt.unload("big__isvc-1")  # ModelMesh unloads after a failed load: no error

    # A configuration that cannot load names the caller's path.
    broken = write_model(tmp_path / "broken_repo", "broken", 'name: "broken"\nbackend: "no_such_backend"\n')
    code, details = grpc_code(rt.load, "broken__isvc-1", broken)
    assert code == INVALID and f"{broken}/config.pbtxt" in details, details

    # Sizes and unloads of ids never loaded.
    code, _ = grpc_code(rt.size, "never")
    assert code == grpc.StatusCode.NOT_FOUND
    rt.unload("never")
    code, _ = grpc_code(rt.size, "")
    assert code == INVALID
    code, _ = grpc_code(rt.unload, "")
    assert code == INVALID
    # predictModelSize on files not pulled yet: the puller's disk size,
    # else the default.
    assert rt.predict("p", tmp_path / "not-pulled", json.dumps({"disk_size_bytes": 4321})) == 4321
    assert rt.predict("p", tmp_path / "not-pulled", "not json") == rt.status().defaultModelSizeInBytes

    # The good model still loads after all of that.
    assert rt.load("good__isvc-1", good).sizeInBytes > 0
    infer_simple(s, "good__isvc-1")
    s.stop_gracefully()


def test_flags_refused_without_explicit_mode(nereid, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    s = nereid.start(repo, ["--allow-modelmesh=true", "--model-cache-memory=1000000"], wait=False)
    assert s.wait_exit(30) == 2
    assert "needs --model-control-mode=explicit" in s.log_tail()
