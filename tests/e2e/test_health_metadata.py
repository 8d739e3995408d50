"""Health, server and model metadata, model configuration, model readiness."""

import json

import pytest
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from conftest import DELAY_MS

REQUIRED_EXTENSIONS = {
    "binary_tensor_data",
    "model_repository",
    "model_configuration",
    "statistics",
    "parameters",
    "trace",
    "logging",
}


def test_health_http(server):
    client = server.http()
    assert client.is_server_live()
    assert client.is_server_ready()


def test_health_grpc(server):
    client = server.grpc()
    assert client.is_server_live()
    assert client.is_server_ready()


def test_health_raw_status_codes(server):
    for path in ("/v2/health/live", "/v2/health/ready"):
        resp = server.request("GET", path)
        assert resp.status == 200, (path, resp)


def test_grpc_standard_health_service(server):
    """grpc.health.v1.Health/Check, which Kubernetes gRPC probes call."""
    import grpc

    channel = grpc.insecure_channel(server.grpc_url)
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda _: b"",  # empty HealthCheckRequest: service ""
        response_deserializer=lambda b: b,
    )
    raw = check(None, timeout=10)
    # HealthCheckResponse{status: SERVING(1)} is field 1, varint 1.
    assert raw == b"\x08\x01"
    channel.close()


def test_server_metadata_http(server):
    meta = server.http().get_server_metadata()
    assert meta["name"] == "triton"  # --id default, as Triton, for client compatibility
    assert isinstance(meta["version"], str) and meta["version"]
    assert REQUIRED_EXTENSIONS <= set(meta["extensions"]), meta["extensions"]


def test_server_metadata_grpc(server):
    meta = server.grpc().get_server_metadata()
    assert meta.name == "triton"
    assert meta.version
    assert REQUIRED_EXTENSIONS <= set(meta.extensions)


def test_server_id_flag(nereid, good_repo):
    s = nereid.start(good_repo, ["--id=nereid-e2e"])
    assert s.http().get_server_metadata()["name"] == "nereid-e2e"
    assert s.grpc().get_server_metadata().name == "nereid-e2e"


@pytest.mark.parametrize(
    "model,inputs",
    [
        ("identity_backend_fp32", [("INPUT0", "FP32", [-1, -1])]),  # batch dim first
        ("identity_bytes", [("INPUT0", "BYTES", [-1, -1])]),
        ("identity_nobatch_int32", [("INPUT0", "INT32", [-1, -1])]),
        (
            "identity_multi",
            [
                ("INPUT0", "BOOL", [-1]),
                ("INPUT1", "FP16", [-1]),
                ("INPUT2", "BF16", [-1]),
                ("INPUT3", "INT64", [-1]),
            ],
        ),
    ],
)
def test_model_metadata(server, model, inputs):
    outputs = [("OUTPUT" + name[len("INPUT"):], dt, shape) for name, dt, shape in inputs]

    meta = server.http().get_model_metadata(model)
    assert meta["name"] == model
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "identity"  # no platform in the config: the backend name
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == inputs
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == outputs

    gmeta = server.grpc().get_model_metadata(model)
    assert gmeta.name == model
    assert list(gmeta.versions) == ["1"]
    assert gmeta.platform == "identity"
    assert [(t.name, t.datatype, list(t.shape)) for t in gmeta.inputs] == inputs
    assert [(t.name, t.datatype, list(t.shape)) for t in gmeta.outputs] == outputs


def test_model_metadata_versioned(server):
    meta = server.http().get_model_metadata("identity_fp32", model_version="1")
    assert meta["name"] == "identity_fp32"


def test_model_config_http(server):
    cfg = server.http().get_model_config("identity_backend_fp32")
    assert cfg["name"] == "identity_backend_fp32"
    assert cfg["backend"] == "identity"
    assert cfg["max_batch_size"] == 8
    assert cfg["input"][0]["name"] == "INPUT0"
    assert cfg["input"][0]["data_type"] == "TYPE_FP32"
    assert cfg["input"][0]["dims"] == [-1]  # config dims exclude the batch dim
    assert cfg["output"][0]["dims"] == [-1]


def _int64_lists(obj, path=""):
    """Yields (path, list) for every dims / shape list in a config JSON."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("dims", "shape") and isinstance(v, list):
                yield f"{path}.{k}", v
            else:
                yield from _int64_lists(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _int64_lists(v, f"{path}[{i}]")


@pytest.mark.parametrize("model", ["identity_backend_fp32", "identity_nobatch_int32", "identity_delay"])
def test_model_config_http_raw_json_numbers(server, model):
    """Triton prints 64-bit integers as JSON numbers, not protobuf-JSON strings."""
    resp = server.request("GET", f"/v2/models/{model}/config")
    assert resp.status == 200, resp
    assert resp.headers.get("content-type", "").startswith("application/json")
    cfg = json.loads(resp.body)
    lists = list(_int64_lists(cfg))
    assert lists, "no dims in the configuration JSON"
    for path, values in lists:
        assert all(type(v) is int for v in values), f"{path} = {values!r} must be JSON numbers"
    assert type(cfg["max_batch_size"]) is int
    # Triton prints every primitive field, defaults included.
    assert cfg["platform"] == ""


def test_model_config_parameters(server):
    cfg = server.http().get_model_config("identity_delay")
    assert cfg["parameters"]["execute_delay_ms"] == {"string_value": str(DELAY_MS)}


def test_model_config_grpc(server):
    resp = server.grpc().get_model_config("identity_backend_fp32")
    cfg = resp.config
    assert cfg.name == "identity_backend_fp32"
    assert cfg.backend == "identity"
    assert cfg.max_batch_size == 8
    assert cfg.input[0].name == "INPUT0"
    assert cfg.input[0].data_type == model_config_pb2.TYPE_FP32
    assert list(cfg.input[0].dims) == [-1]
    assert cfg.output[0].data_type == model_config_pb2.TYPE_FP32

    multi = server.grpc().get_model_config("identity_multi").config
    assert [i.data_type for i in multi.input] == [
        model_config_pb2.TYPE_BOOL,
        model_config_pb2.TYPE_FP16,
        model_config_pb2.TYPE_BF16,
        model_config_pb2.TYPE_INT64,
    ]


def _ready(client, model, version=""):
    # Triton 2.51 answers ready=false over gRPC (HTTP: 400, which
    # tritonclient reads as False) for a model it does not know, an unloaded
    # one or a missing version; an error status here is a difference.
    return client.is_model_ready(model, version)


def test_model_ready(server):
    for client in (server.http(), server.grpc()):
        assert _ready(client, "identity_fp32")
        assert _ready(client, "identity_fp32", "1")
        assert not _ready(client, "identity_fp32", "2")
        assert not _ready(client, "no_such_model")


def test_model_ready_raw_status(server):
    assert server.request("GET", "/v2/models/identity_fp32/ready").status == 200
    assert server.request("GET", "/v2/models/identity_fp32/versions/1/ready").status == 200
    assert server.request("GET", "/v2/models/no_such_model/ready").status == 400
