"""Malformed and impossible requests: exact HTTP status codes and gRPC
status codes, JSON error bodies, and a server that is still live after
all of them."""

import json
import struct

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from conftest import per_type_model
from e2e_util import assert_tensor_equal, grpc_inputs, http_inputs

INFER = "/v2/models/identity_fp32/infer"
JSON_CT = {"Content-Type": "application/json"}


def _input(name="INPUT0", shape=(1, 4), datatype="FP32", data=None, **params):
    t = {"name": name, "shape": list(shape), "datatype": datatype}
    if data is not None:
        t["data"] = data
    if params:
        t["parameters"] = params
    return t


def _binary_request(header: dict, payload: bytes, declared_len=None):
    h = json.dumps(header).encode()
    return h + payload, {
        "Inference-Header-Content-Length": str(len(h) if declared_len is None else declared_len),
        "Content-Type": "application/octet-stream",
    }


def _assert_error(resp, status):
    assert resp.status == status, f"want {status}, got {resp.status}: {resp.body[:300]!r}"
    body = resp.json()  # every error body is {"error": "<message>"}
    assert isinstance(body.get("error"), str) and body["error"], body


# ---- HTTP: the request body ---------------------------------------------------

HTTP_400_CASES = {
    "unparseable_json": (INFER, b'{"inputs": [', JSON_CT),
    "json_not_an_object": (INFER, b"[1, 2, 3]", JSON_CT),
    "no_inputs_key": (INFER, b"{}", JSON_CT),
    "data_count_mismatch": (INFER, {"inputs": [_input(data=[1.0, 2.0, 3.0])]}, JSON_CT),
    "data_wrong_json_type": (INFER, {"inputs": [_input(data=["a", "b", "c", "d"])]}, JSON_CT),
    "negative_shape": (INFER, {"inputs": [_input(shape=(1, -2), data=[1.0, 2.0])]}, JSON_CT),
    "unknown_datatype": (INFER, {"inputs": [_input(datatype="FP128", data=[1, 2, 3, 4])]}, JSON_CT),
    "datatype_not_the_models": (INFER, {"inputs": [_input(datatype="INT32", data=[1, 2, 3, 4])]}, JSON_CT),
    "wrong_rank": (INFER, {"inputs": [_input(shape=(4,), data=[1.0, 2.0, 3.0, 4.0])]}, JSON_CT),
    "missing_input": (
        "/v2/models/identity_multi/infer",
        {"inputs": [_input(shape=(2,), datatype="BOOL", data=[True, False])]},
        JSON_CT,
    ),
    "unexpected_input": (
        INFER,
        {"inputs": [_input(data=[1.0] * 4), _input(name="INPUT9", data=[1.0] * 4)]},
        JSON_CT,
    ),
    "duplicate_input": (
        INFER,
        {"inputs": [_input(data=[1.0] * 4), _input(data=[1.0] * 4)]},
        JSON_CT,
    ),
    "unknown_requested_output": (
        INFER,
        {"inputs": [_input(data=[1.0] * 4)], "outputs": [{"name": "OUTPUT9"}]},
        JSON_CT,
    ),
    "batch_above_max_batch_size": (
        "/v2/models/identity_int32_b4/infer",
        {"inputs": [_input(shape=(5, 1), datatype="INT32", data=[1, 2, 3, 4, 5])]},
        JSON_CT,
    ),
    "no_data_at_all": (INFER, {"inputs": [_input()]}, JSON_CT),
}


@pytest.mark.parametrize("case", sorted(HTTP_400_CASES))
def test_http_bad_request_400(server, case):
    path, body, headers = HTTP_400_CASES[case]
    _assert_error(server.request("POST", path, body, headers), 400)


def test_http_header_length_larger_than_body(server):
    header = {"inputs": [_input(binary_data_size=16)]}
    body, headers = _binary_request(header, b"\0" * 16)
    headers["Inference-Header-Content-Length"] = str(len(body) + 100)
    _assert_error(server.request("POST", INFER, body, headers), 400)


def test_http_header_length_not_a_number(server):
    body, headers = _binary_request({"inputs": [_input(binary_data_size=16)]}, b"\0" * 16)
    headers["Inference-Header-Content-Length"] = "twelve"
    _assert_error(server.request("POST", INFER, body, headers), 400)


def test_http_binary_size_not_matching_shape(server):
    # shape [1, 4] FP32 needs 16 bytes; 8 are declared and sent.
    body, headers = _binary_request({"inputs": [_input(binary_data_size=8)]}, b"\0" * 8)
    _assert_error(server.request("POST", INFER, body, headers), 400)


def test_http_binary_size_past_end_of_body(server):
    body, headers = _binary_request({"inputs": [_input(binary_data_size=16)]}, b"\0" * 8)
    _assert_error(server.request("POST", INFER, body, headers), 400)


def test_http_binary_trailing_bytes(server):
    body, headers = _binary_request({"inputs": [_input(binary_data_size=16)]}, b"\0" * 20)
    _assert_error(server.request("POST", INFER, body, headers), 400)


def test_http_bytes_length_prefix_past_buffer(server):
    # One BYTES element claiming 100 bytes, followed by only 4.
    payload = struct.pack("<I", 100) + b"abcd"
    header = {"inputs": [_input(shape=(1,), datatype="BYTES", binary_data_size=len(payload))]}
    body, headers = _binary_request(header, payload)
    path = f"/v2/models/{per_type_model('BYTES')}/infer"
    _assert_error(server.request("POST", path, body, headers), 400)


def test_http_bytes_element_count_mismatch(server):
    # shape [3] but only two length-prefixed elements.
    payload = struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"b"
    header = {"inputs": [_input(shape=(3,), datatype="BYTES", binary_data_size=len(payload))]}
    body, headers = _binary_request(header, payload)
    path = f"/v2/models/{per_type_model('BYTES')}/infer"
    _assert_error(server.request("POST", path, body, headers), 400)


def test_http_raw_input_for_multi_input_model(server):
    """The raw single-input form needs a model with exactly one input."""
    resp = server.request(
        "POST", "/v2/models/identity_multi/infer", b"\x01\x00", {"Inference-Header-Content-Length": "0"}
    )
    _assert_error(resp, 400)


def test_http_raw_input_shape_cannot_be_deduced(server):
    """Two variable dimensions: the raw input's shape cannot be deduced."""
    resp = server.request(
        "POST",
        "/v2/models/identity_nobatch_int32/infer",
        b"\0" * 16,
        {"Inference-Header-Content-Length": "0"},
    )
    _assert_error(resp, 400)


def test_http_corrupt_gzip_body(server):
    resp = server.request(
        "POST", INFER, b"this is not gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    _assert_error(resp, 400)


def test_http_max_input_size(nereid, good_repo):
    s = nereid.start(good_repo, ["--http-max-input-size=4096"])
    small = {"inputs": [_input(data=[1.0, 2.0, 3.0, 4.0])]}
    ok = s.request("POST", INFER, small, JSON_CT)
    assert ok.status == 200, ok

    big = {"inputs": [_input(shape=(1, 2000), data=[1.0] * 2000)]}  # ~10 KiB of JSON
    _assert_error(s.request("POST", INFER, big, JSON_CT), 400)

    # Also binary data past the limit.
    payload = np.zeros((1, 2048), np.float32).tobytes()
    body, headers = _binary_request({"inputs": [_input(shape=(1, 2048), binary_data_size=len(payload))]}, payload)
    _assert_error(s.request("POST", INFER, body, headers), 400)

    assert s.http().is_server_live()
    assert s.request("POST", INFER, small, JSON_CT).status == 200


# ---- HTTP: routing -------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("POST", "/v2/models/no_such_model/infer", 404),
        ("GET", "/v2/models/no_such_model", 404),
        ("GET", "/v2/models/no_such_model/config", 404),
        # Triton 2.51 answers readiness of an unknown model 400 "Model version not ready".
        ("GET", "/v2/models/no_such_model/ready", 400),
        ("GET", "/v2/nothing_here", 404),
        ("GET", "/v3/health/live", 404),
        ("GET", "/", 404),
        ("GET", "/v2/models/identity_fp32/infer", 405),
        ("PUT", "/v2/models/identity_fp32/infer", 405),
        ("POST", "/v2/health/live", 405),
        ("DELETE", "/v2/health/ready", 405),
        ("POST", "/v2", 405),
        ("POST", "/v2/models/identity_fp32/config", 405),
    ],
)
def test_http_routing_errors(server, method, path, status):
    body = {"inputs": [_input(data=[1.0] * 4)]} if method == "POST" else b""
    _assert_error(server.request(method, path, body, JSON_CT if body else {}), status)


def test_http_unknown_model_message(server):
    resp = server.request("POST", "/v2/models/no_such_model/infer", {"inputs": [_input(data=[1.0] * 4)]})
    assert resp.status == 404
    assert "no_such_model" in resp.json()["error"]


@pytest.mark.parametrize("path", ["/v2/models/identity_fp32/versions/7/infer", "/v2/models/identity_fp32/versions/7"])
def test_http_unknown_version(server, path):
    method = "POST" if path.endswith("infer") else "GET"
    body = {"inputs": [_input(data=[1.0] * 4)]} if method == "POST" else b""
    resp = server.request(method, path, body)
    assert resp.status in (404, 503), resp  # NOT_FOUND or UNAVAILABLE, as Triton
    assert resp.json()["error"]


def test_tritonclient_sees_status_codes(server):
    """What a tritonclient user sees: InferenceServerException with the status."""
    data = np.ones((5, 1), np.int32)
    with pytest.raises(InferenceServerException) as e:
        server.http().infer("identity_int32_b4", http_inputs([data], ["INT32"]))
    assert e.value.status() == "400"
    assert e.value.message()
    with pytest.raises(InferenceServerException) as e:
        server.http().infer("no_such_model", http_inputs([data], ["INT32"]))
    assert e.value.status() == "404"
    with pytest.raises(InferenceServerException) as e:
        server.grpc().infer("identity_int32_b4", grpc_inputs([data], ["INT32"]))
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as e:
        server.grpc().infer("no_such_model", grpc_inputs([data], ["INT32"]))
    assert e.value.status() == "StatusCode.NOT_FOUND"


# ---- gRPC ----------------------------------------------------------------------


def _tensor(name="INPUT0", datatype="FP32", shape=(1, 4)):
    return service_pb2.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=list(shape))


F16 = b"\0" * 16

GRPC_CASES = {
    "raw_size_mismatch": (
        service_pb2.ModelInferRequest(model_name="identity_fp32", inputs=[_tensor()], raw_input_contents=[b"\0" * 8]),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "fewer_raw_contents_than_inputs": (
        service_pb2.ModelInferRequest(model_name="identity_fp32", inputs=[_tensor()]),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "more_raw_contents_than_inputs": (
        service_pb2.ModelInferRequest(model_name="identity_fp32", inputs=[_tensor()], raw_input_contents=[F16, F16]),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "negative_shape": (
        service_pb2.ModelInferRequest(
            model_name="identity_fp32", inputs=[_tensor(shape=(1, -4))], raw_input_contents=[F16]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "unknown_datatype": (
        service_pb2.ModelInferRequest(
            model_name="identity_fp32", inputs=[_tensor(datatype="FP128")], raw_input_contents=[F16]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "datatype_not_the_models": (
        service_pb2.ModelInferRequest(
            model_name="identity_fp32", inputs=[_tensor(datatype="INT32")], raw_input_contents=[F16]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "missing_input": (
        service_pb2.ModelInferRequest(
            model_name="identity_multi",
            inputs=[_tensor(datatype="BOOL", shape=(2,))],
            raw_input_contents=[b"\x01\x00"],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "unexpected_input": (
        service_pb2.ModelInferRequest(
            model_name="identity_fp32", inputs=[_tensor(), _tensor(name="INPUT9")], raw_input_contents=[F16, F16]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "batch_above_max_batch_size": (
        service_pb2.ModelInferRequest(
            model_name="identity_int32_b4",
            inputs=[_tensor(datatype="INT32", shape=(5, 1))],
            raw_input_contents=[b"\0" * 20],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "bytes_length_prefix_past_buffer": (
        service_pb2.ModelInferRequest(
            model_name=per_type_model("BYTES"),
            inputs=[_tensor(datatype="BYTES", shape=(1,))],
            raw_input_contents=[struct.pack("<I", 100) + b"abcd"],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "unknown_requested_output": (
        service_pb2.ModelInferRequest(
            model_name="identity_fp32",
            inputs=[_tensor()],
            raw_input_contents=[F16],
            outputs=[service_pb2.ModelInferRequest.InferRequestedOutputTensor(name="OUTPUT9")],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "unknown_model": (
        service_pb2.ModelInferRequest(model_name="no_such_model", inputs=[_tensor()], raw_input_contents=[F16]),
        grpc.StatusCode.NOT_FOUND,
    ),
}


@pytest.mark.parametrize("case", sorted(GRPC_CASES))
def test_grpc_bad_request(server, case):
    request, code = GRPC_CASES[case]
    channel, stub = server.grpc_stub()
    try:
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(request, timeout=30)
        assert e.value.code() == code, e.value.details()
        assert e.value.details()
    finally:
        channel.close()


def test_grpc_unknown_version(server):
    channel, stub = server.grpc_stub()
    try:
        request = service_pb2.ModelInferRequest(
            model_name="identity_fp32", model_version="7", inputs=[_tensor()], raw_input_contents=[F16]
        )
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(request, timeout=30)
        assert e.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE)
    finally:
        channel.close()


@pytest.mark.parametrize(
    "rpc,request_msg",
    [
        ("ModelMetadata", service_pb2.ModelMetadataRequest(name="no_such_model")),
        ("ModelConfig", service_pb2.ModelConfigRequest(name="no_such_model")),
    ],
)
def test_grpc_unknown_model_metadata(server, rpc, request_msg):
    channel, stub = server.grpc_stub()
    try:
        with pytest.raises(grpc.RpcError) as e:
            getattr(stub, rpc)(request_msg, timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        channel.close()


# ---- still alive ------------------------------------------------------------------


def test_zz_server_still_live_after_errors(server):
    """Runs after the error tests of this module (pytest keeps file order)."""
    http, g = server.http(), server.grpc()
    assert http.is_server_live() and http.is_server_ready()
    assert g.is_server_live() and g.is_server_ready()
    data = np.ones((1, 4), np.float32)
    assert_tensor_equal(http.infer("identity_fp32", http_inputs([data], ["FP32"])).as_numpy("OUTPUT0"), data)
    assert_tensor_equal(g.infer("identity_fp32", grpc_inputs([data], ["FP32"])).as_numpy("OUTPUT0"), data)
