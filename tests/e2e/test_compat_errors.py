"""Client mistakes answered as Triton answers them, with bounded texts.

- Error texts echo what the client sent, bounded: a 100,000-character name
  or a 10,000-dimension shape comes back cut, with a "…(N more bytes)"
  marker, so that gRPC clients get INVALID_ARGUMENT / NOT_FOUND instead of
  a reset stream (a whole echo does not fit in a trailer).
- A file name no file system can hold (too long, a NUL byte) in a load's
  `file:` parameter is the client's mistake: 400 / INVALID_ARGUMENT naming
  it, not 500.
- A datatype that disagrees with the model is reported as that, even when
  the data's byte size (computed from the wrong datatype) disagrees too.
- ModelReady on a known but unloaded (or unknown) model is "not ready":
  gRPC ready=false, HTTP 400 "Model version not ready", as Triton.
- The server logs one "started HTTP service" line.
"""

import base64
import json

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from conftest import write_identity_model

LONG = "n" * 100_000
MARKER = "more bytes)"
# Texts are bounded well below gRPC's default 8 KiB metadata limit.
MAX_TEXT = 4096


@pytest.fixture
def explicit_server(nereid, tmp_path):
    repo = tmp_path / "repo"
    write_identity_model(repo, "id_int32", [("INT32", [-1])])
    write_identity_model(repo, "id_fp32", [("FP32", [4])])
    write_identity_model(repo, "spare", [("FP32", [-1])])
    return nereid.start(repo, ["--model-control-mode=explicit", "--load-model=id_int32", "--load-model=id_fp32"])


def _grpc_error(call):
    with pytest.raises(InferenceServerException) as e:
        call()
    return e.value.status(), e.value.message()


def test_long_model_name_is_echoed_bounded(explicit_server):
    g = explicit_server.grpc()
    x = grpcclient.InferInput("INPUT0", [1], "INT32")
    x.set_data_from_numpy(np.zeros(1, np.int32))
    status, msg = _grpc_error(lambda: g.infer(LONG, [x]))
    assert status == "StatusCode.NOT_FOUND", (status, msg[:300])
    assert MARKER in msg and len(msg) < MAX_TEXT

    # The same over HTTP, with the name in the JSON body's input.
    body = {"inputs": [{"name": LONG, "shape": [1], "datatype": "INT32", "data": [1]}]}
    r = explicit_server.request("POST", "/v2/models/id_int32/infer", body)
    assert r.status == 400, r.body[:300]
    err = r.json()["error"]
    assert err.startswith("unexpected inference input 'nnn") and MARKER in err and len(err) < MAX_TEXT


def test_long_tensor_name_and_huge_shape_grpc(explicit_server):
    g = explicit_server.grpc()
    x = grpcclient.InferInput(LONG, [1], "INT32")
    x.set_data_from_numpy(np.zeros(1, np.int32))
    status, msg = _grpc_error(lambda: g.infer("id_int32", [x]))
    assert status == "StatusCode.INVALID_ARGUMENT", (status, msg[:300])
    assert MARKER in msg and len(msg) < MAX_TEXT

    # 10,000 dimensions of 1: one element, echoed in the shape error.
    y = grpcclient.InferInput("INPUT0", [1] * 10_000, "FP32")
    y._raw_content = np.zeros(1, np.float32).tobytes()
    status, msg = _grpc_error(lambda: g.infer("id_fp32", [y]))
    assert status == "StatusCode.INVALID_ARGUMENT", (status, msg[:300])
    assert msg.startswith("unexpected shape for input 'INPUT0' for model 'id_fp32'")
    assert MARKER in msg and len(msg) < MAX_TEXT


def test_huge_shape_http(explicit_server):
    body = {"inputs": [{"name": "INPUT0", "shape": [1] * 10_000, "datatype": "FP32", "data": [1.0]}]}
    r = explicit_server.request("POST", "/v2/models/id_fp32/infer", body)
    assert r.status == 400, r.body[:300]
    err = r.json()["error"]
    assert MARKER in err and len(err) < MAX_TEXT, err[:300]


@pytest.mark.parametrize(
    "key,want",
    [
        ("file:1/" + "a" * 300, "file name too long"),
        ("file:1/model\x00.onnx", "contains a NUL byte"),
    ],
    ids=["too-long", "nul"],
)
def test_bad_file_parameter_names_are_client_errors(explicit_server, key, want):
    config = json.dumps({"name": "spare", "backend": "identity",
                         "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
                         "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}]})
    body = {"parameters": {"config": config, key: base64.b64encode(b"x").decode()}}
    r = explicit_server.request("POST", "/v2/repository/models/spare/load", body)
    assert r.status == 400, r.body[:300]
    assert want in r.json()["error"]

    channel, stub = explicit_server.grpc_stub()
    try:
        req = service_pb2.RepositoryModelLoadRequest(model_name="spare")
        req.parameters["config"].string_param = config
        req.parameters[key].bytes_param = b"x"
        with pytest.raises(grpc.RpcError) as e:
            stub.RepositoryModelLoad(req, timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
        assert want in e.value.details()
    finally:
        channel.close()
    # The server is fine and the model loads with a good name.
    body["parameters"] = {"config": config, "file:1/model.txt": base64.b64encode(b"x").decode()}
    assert explicit_server.request("POST", "/v2/repository/models/spare/load", body).status == 200


def test_datatype_mismatch_is_named_over_byte_size(explicit_server):
    want = "inference input 'INPUT0' data-type is 'FP64', but model 'id_int32' expects 'INT32'"
    # INT32-sized data declared FP64: the byte size disagrees too.
    data = np.arange(4, dtype=np.int32).tobytes()
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [4], "datatype": "FP64",
                                      "parameters": {"binary_data_size": len(data)}}]}).encode()
    r = explicit_server.request("POST", "/v2/models/id_int32/infer", header + data,
                                {"Inference-Header-Content-Length": str(len(header))})
    assert r.status == 400 and r.json()["error"] == want, r.body[:300]

    g = explicit_server.grpc()
    x = grpcclient.InferInput("INPUT0", [4], "FP64")
    x._raw_content = data
    status, msg = _grpc_error(lambda: g.infer("id_int32", [x]))
    assert status == "StatusCode.INVALID_ARGUMENT" and msg == want, (status, msg)

    # A byte size that is wrong for the right datatype is still a size error.
    x = grpcclient.InferInput("INPUT0", [4], "INT32")
    x._raw_content = data[:12]
    status, msg = _grpc_error(lambda: g.infer("id_int32", [x]))
    assert status == "StatusCode.INVALID_ARGUMENT" and "byte size" in msg, (status, msg)


def test_model_ready_on_unloaded_model_is_not_ready(explicit_server):
    h, g = explicit_server.http(), explicit_server.grpc()
    assert h.is_model_ready("id_int32") and g.is_model_ready("id_int32")
    g.unload_model("id_int32")

    def unloaded():
        r = explicit_server.request("GET", "/v2/models/id_int32/ready")
        return r.status == 400 and r.json() == {"error": "Model version not ready"}

    from conftest import wait_for

    wait_for(unloaded, what="id_int32 unloaded")
    # Known but unloaded, never loaded, unknown: ready=false, not an error.
    for name in ("id_int32", "spare", "no_such_model"):
        assert g.is_model_ready(name) is False
        assert not h.is_model_ready(name)
        r = explicit_server.request("GET", f"/v2/models/{name}/ready")
        assert r.status == 400 and r.json() == {"error": "Model version not ready"}, (name, r)
    assert g.is_model_ready("id_fp32", "7") is False
    g.load_model("id_int32")
    assert g.is_model_ready("id_int32") and h.is_model_ready("id_int32")


def test_one_started_http_service_line(explicit_server):
    lines = [line for line in explicit_server.log_tail(10_000).splitlines() if "started HTTP service" in line]
    assert len(lines) == 1, lines
