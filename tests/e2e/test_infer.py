"""Inference with the real clients: every datatype over HTTP JSON, HTTP
binary and gRPC; compression; request ids; the raw single-input form."""

import gzip
import json
import zlib

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import per_type_model
from e2e_util import (
    BINARY_ONLY,
    DATATYPES,
    SAMPLES,
    assert_tensor_equal,
    grpc_inputs,
    grpc_outputs,
    http_inputs,
    http_outputs,
    sample,
)

JSON_TYPES = [d for d in DATATYPES if d not in BINARY_ONLY]


# ---- every datatype, three encodings ------------------------------------


@pytest.mark.parametrize("datatype", JSON_TYPES)
def test_http_json_every_datatype(server, datatype):
    data = sample(datatype, json_mode=True)
    result = server.http().infer(
        per_type_model(datatype),
        http_inputs([data], [datatype], binary=False),
        outputs=http_outputs(1, binary=False),
    )
    out = result.get_output("OUTPUT0")
    assert out["datatype"] == datatype
    assert out["shape"] == [len(data)]
    assert "data" in out, "a JSON output was requested"
    assert_tensor_equal(result.as_numpy("OUTPUT0"), data)


@pytest.mark.parametrize("datatype", sorted(BINARY_ONLY))
def test_http_json_rejects_half_precision(server, datatype):
    """Triton accepts FP16 / BF16 only as binary data."""
    body = {"inputs": [{"name": "INPUT0", "shape": [2], "datatype": datatype, "data": [1.0, 2.0]}]}
    resp = server.request("POST", f"/v2/models/{per_type_model(datatype)}/infer", body)
    assert resp.status == 400, resp
    assert "error" in resp.json()


@pytest.mark.parametrize("datatype", DATATYPES)
def test_http_binary_every_datatype(server, datatype):
    data = sample(datatype)
    result = server.http().infer(
        per_type_model(datatype),
        http_inputs([data], [datatype], binary=True),
        outputs=http_outputs(1, binary=True),
    )
    out = result.get_output("OUTPUT0")
    assert out["datatype"] == datatype
    assert out["shape"] == [len(data)]
    assert "binary_data_size" in out.get("parameters", {}), out
    assert_tensor_equal(result.as_numpy("OUTPUT0"), data)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_grpc_every_datatype(server, datatype):
    data = sample(datatype)
    result = server.grpc().infer(
        per_type_model(datatype), grpc_inputs([data], [datatype]), outputs=grpc_outputs(1)
    )
    out = result.get_output("OUTPUT0")
    assert out.datatype == datatype
    assert list(out.shape) == [len(data)]
    assert_tensor_equal(result.as_numpy("OUTPUT0"), data)


@pytest.mark.parametrize("datatype", ["BYTES", "FP32"])
def test_empty_tensor(server, datatype):
    """A zero-element tensor round-trips (binary and gRPC)."""
    data = sample(datatype)[:0]
    r = server.http().infer(per_type_model(datatype), http_inputs([data], [datatype]))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), data)
    g = server.grpc().infer(per_type_model(datatype), grpc_inputs([data], [datatype]))
    assert_tensor_equal(g.as_numpy("OUTPUT0"), data)


# ---- shapes, batching, several inputs -----------------------------------


def _fp32_batch():
    return np.arange(15, dtype=np.float32).reshape(3, 5) / 7


@pytest.mark.parametrize("binary", [False, True])
def test_http_batched(server, binary):
    data = _fp32_batch()
    r = server.http().infer(
        "identity_fp32",
        http_inputs([data], ["FP32"], binary=binary),
        outputs=http_outputs(1, binary=binary),
    )
    assert r.get_output("OUTPUT0")["shape"] == [3, 5]
    assert_tensor_equal(r.as_numpy("OUTPUT0"), data)


def test_grpc_batched(server):
    data = _fp32_batch()
    r = server.grpc().infer("identity_fp32", grpc_inputs([data], ["FP32"]))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), data)


def test_batched_bytes(server):
    data = np.array([[b"a", b"", b"ccc"], [b"\xff", "\u00e9".encode(), b"x" * 1000]], dtype=np.object_)
    r = server.http().infer("identity_bytes", http_inputs([data], ["BYTES"]), outputs=http_outputs(1))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), data)
    g = server.grpc().infer("identity_bytes", grpc_inputs([data], ["BYTES"]))
    assert_tensor_equal(g.as_numpy("OUTPUT0"), data)


@pytest.mark.parametrize("binary", [False, True])
def test_nobatch_2d(server, binary):
    data = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    r = server.http().infer(
        "identity_nobatch_int32",
        http_inputs([data], ["INT32"], binary=binary),
        outputs=http_outputs(1, binary=binary),
    )
    assert r.get_output("OUTPUT0")["shape"] == [3, 4]
    assert_tensor_equal(r.as_numpy("OUTPUT0"), data)
    g = server.grpc().infer("identity_nobatch_int32", grpc_inputs([data], ["INT32"]))
    assert_tensor_equal(g.as_numpy("OUTPUT0"), data)


MULTI_TYPES = ["BOOL", "FP16", "BF16", "INT64"]


def test_multi_http_binary(server):
    arrays = [SAMPLES[t] for t in MULTI_TYPES]
    r = server.http().infer("identity_multi", http_inputs(arrays, MULTI_TYPES), outputs=http_outputs(4))
    for i, arr in enumerate(arrays):
        assert r.get_output(f"OUTPUT{i}")["datatype"] == MULTI_TYPES[i]
        assert_tensor_equal(r.as_numpy(f"OUTPUT{i}"), arr)


def test_multi_http_all_outputs_by_default(server):
    """No outputs requested: the server returns every output (tritonclient
    asks for binary outputs with binary_data_output)."""
    arrays = [SAMPLES[t] for t in MULTI_TYPES]
    r = server.http().infer("identity_multi", http_inputs(arrays, MULTI_TYPES))
    names = sorted(o["name"] for o in r.get_response()["outputs"])
    assert names == ["OUTPUT0", "OUTPUT1", "OUTPUT2", "OUTPUT3"]
    for i, arr in enumerate(arrays):
        assert_tensor_equal(r.as_numpy(f"OUTPUT{i}"), arr)


def test_multi_grpc(server):
    arrays = [SAMPLES[t] for t in MULTI_TYPES]
    r = server.grpc().infer("identity_multi", grpc_inputs(arrays, MULTI_TYPES))
    names = sorted(o.name for o in r.get_response().outputs)
    assert names == ["OUTPUT0", "OUTPUT1", "OUTPUT2", "OUTPUT3"]
    for i, arr in enumerate(arrays):
        assert_tensor_equal(r.as_numpy(f"OUTPUT{i}"), arr)


def test_requested_output_subset(server):
    arrays = [SAMPLES[t] for t in MULTI_TYPES]
    out = [httpclient.InferRequestedOutput("OUTPUT3")]
    r = server.http().infer("identity_multi", http_inputs(arrays, MULTI_TYPES), outputs=out)
    assert [o["name"] for o in r.get_response()["outputs"]] == ["OUTPUT3"]
    assert_tensor_equal(r.as_numpy("OUTPUT3"), arrays[3])

    g = server.grpc().infer(
        "identity_multi", grpc_inputs(arrays, MULTI_TYPES), outputs=[grpcclient.InferRequestedOutput("OUTPUT1")]
    )
    assert [o.name for o in g.get_response().outputs] == ["OUTPUT1"]
    assert_tensor_equal(g.as_numpy("OUTPUT1"), arrays[1])


def test_mixed_json_input_binary_output(server):
    data = SAMPLES["INT64"]
    r = server.http().infer(
        per_type_model("INT64"),
        http_inputs([data], ["INT64"], binary=False),
        outputs=http_outputs(1, binary=True),
    )
    assert "binary_data_size" in r.get_output("OUTPUT0")["parameters"]
    assert_tensor_equal(r.as_numpy("OUTPUT0"), data)


def test_response_model_name_and_version(server):
    data = _fp32_batch()
    r = server.http().infer("identity_fp32", http_inputs([data], ["FP32"]))
    resp = r.get_response()
    assert resp["model_name"] == "identity_fp32"
    assert resp["model_version"] == "1"  # a string, as in Triton
    g = server.grpc().infer("identity_fp32", grpc_inputs([data], ["FP32"])).get_response()
    assert g.model_name == "identity_fp32"
    assert g.model_version == "1"


def test_explicit_version(server):
    data = _fp32_batch()
    r = server.http().infer("identity_fp32", http_inputs([data], ["FP32"]), model_version="1")
    assert_tensor_equal(r.as_numpy("OUTPUT0"), data)
    g = server.grpc().infer("identity_fp32", grpc_inputs([data], ["FP32"]), model_version="1")
    assert_tensor_equal(g.as_numpy("OUTPUT0"), data)


# ---- request ids ----------------------------------------------------------


def test_request_id_echoed(server):
    data = _fp32_batch()
    r = server.http().infer("identity_fp32", http_inputs([data], ["FP32"]), request_id="req-\u00e9-42")
    assert r.get_response()["id"] == "req-\u00e9-42"
    g = server.grpc().infer("identity_fp32", grpc_inputs([data], ["FP32"]), request_id="grpc-7")
    assert g.get_response().id == "grpc-7"


def test_no_request_id_no_id_field(server):
    r = server.http().infer("identity_fp32", http_inputs([_fp32_batch()], ["FP32"]))
    assert "id" not in r.get_response()


# ---- compression ------------------------------------------------------------


COMPRESSIONS = [
    (req, resp)
    for req in (None, "gzip", "deflate")
    for resp in (None, "gzip", "deflate")
    if req or resp
]


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("request_alg,response_alg", COMPRESSIONS)
def test_http_compression(server, request_alg, response_alg, binary):
    data = np.arange(4096, dtype=np.float32).reshape(8, 512)  # compressible
    r = server.http().infer(
        "identity_fp32",
        http_inputs([data], ["FP32"], binary=binary),
        outputs=http_outputs(1, binary=binary),
        request_compression_algorithm=request_alg,
        response_compression_algorithm=response_alg,
    )
    assert_tensor_equal(r.as_numpy("OUTPUT0"), data)


@pytest.mark.parametrize(
    "encoding,compress,decompress",
    [
        ("gzip", gzip.compress, gzip.decompress),
        ("deflate", zlib.compress, zlib.decompress),
    ],
)
def test_http_compression_raw(server, encoding, compress, decompress):
    """The server decompresses Content-Encoding and compresses its response
    when Accept-Encoding asks for it."""
    values = list(range(200))
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 200], "datatype": "FP32", "data": values}]}
    resp = server.request(
        "POST",
        "/v2/models/identity_fp32/infer",
        compress(json.dumps(body).encode()),
        headers={
            "Content-Type": "application/json",
            "Content-Encoding": encoding,
            "Accept-Encoding": encoding,
        },
    )
    assert resp.status == 200, resp
    assert resp.headers.get("content-encoding") == encoding
    out = json.loads(decompress(resp.body))["outputs"][0]
    assert out["name"] == "OUTPUT0"
    assert out["shape"] == [1, 200]
    assert [float(v) for v in out["data"]] == [float(v) for v in values]


# ---- the raw single-input form --------------------------------------------


def test_raw_binary_single_input_batching(server):
    """Inference-Header-Content-Length: 0: the body is the one input tensor;
    a batching model gets batch size 1 and all outputs come back binary."""
    data = np.array([1.5, -2.0, 3.25, 1e-3], dtype=np.float32)
    resp = server.request(
        "POST",
        "/v2/models/identity_fp32/infer",
        data.tobytes(),
        headers={"Inference-Header-Content-Length": "0", "Content-Type": "application/octet-stream"},
    )
    assert resp.status == 200, resp
    n = int(resp.headers["inference-header-content-length"])
    header = json.loads(resp.body[:n])
    (out,) = header["outputs"]
    assert out["name"] == "OUTPUT0"
    assert out["datatype"] == "FP32"
    assert out["shape"] == [1, 4]
    assert out["parameters"]["binary_data_size"] == 16
    assert resp.body[n:] == data.tobytes()


def test_raw_binary_single_input_nobatch(server):
    data = SAMPLES["INT32"]
    resp = server.request(
        "POST",
        f"/v2/models/{per_type_model('INT32')}/infer",
        data.tobytes(),
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert resp.status == 200, resp
    n = int(resp.headers["inference-header-content-length"])
    (out,) = json.loads(resp.body[:n])["outputs"]
    assert out["shape"] == [len(data)]
    assert resp.body[n:] == data.tobytes()


# ---- binary protocol by hand ----------------------------------------------


def test_http_binary_by_hand(server):
    """JSON header, then the tensor bytes; the response mirrors it."""
    data = np.array([[7, -8, 9]], dtype=np.int32)
    header = json.dumps(
        {
            "id": "hand",
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, 3],
                    "datatype": "INT32",
                    "parameters": {"binary_data_size": data.nbytes},
                }
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    resp = server.request(
        "POST",
        "/v2/models/identity_int32_b4/infer",
        header + data.tobytes(),
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert resp.status == 200, resp
    n = int(resp.headers["inference-header-content-length"])
    rh = json.loads(resp.body[:n])
    assert rh["id"] == "hand"
    assert rh["model_name"] == "identity_int32_b4"
    assert rh["outputs"][0]["parameters"]["binary_data_size"] == data.nbytes
    assert resp.body[n:] == data.tobytes()


def test_http_json_by_hand_nested_data(server):
    """KServe v2 allows nested (row-major) as well as flat data arrays."""
    body = {
        "inputs": [
            {"name": "INPUT0", "shape": [2, 3], "datatype": "INT32", "data": [[1, 2, 3], [4, 5, 6]]}
        ]
    }
    resp = server.request("POST", "/v2/models/identity_int32_b4/infer", body)
    assert resp.status == 200, resp
    out = resp.json()["outputs"][0]
    assert out["shape"] == [2, 3]
    assert np.array(out["data"]).flatten().tolist() == [1, 2, 3, 4, 5, 6]
