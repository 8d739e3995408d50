"""Nereid's .proto files must describe the same wire as Triton's.

tritonclient ships Triton's compiled descriptors. This test compiles Nereid's
own proto/ sources with protoc and compares every message, enum, field name,
number, type, label, oneof membership and map-ness, plus every RPC of the
service, and fails on any difference in either direction.
"""

import pathlib
import tempfile

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc
import grpc_tools

from tritonclient.grpc import model_config_pb2, service_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"


def _compile_ours():
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "set.pb"
        include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
        rc = protoc.main([
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            "model_config.proto",
            "grpc_service.proto",
            "health.proto",
        ])
        assert rc == 0, "protoc failed on proto/"
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(out.read_bytes())
        return {f.name: f for f in fds.file}


def _theirs(module):
    fdp = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fdp)
    return fdp


def _messages(fdp):
    """Flatten messages and enums to {full_name: summary}."""
    out = {}

    def enum_summary(prefix, e):
        out[f"enum {prefix}{e.name}"] = sorted((v.name, v.number) for v in e.value)

    def walk(prefix, msg):
        name = prefix + msg.name
        fields = {}
        for f in msg.field:
            oneof = None
            if f.HasField("oneof_index") and not f.proto3_optional:
                oneof = msg.oneof_decl[f.oneof_index].name
            fields[f.name] = (f.number, f.type, f.label, f.type_name, oneof)
        out[f"message {name}"] = fields
        if msg.options.map_entry:
            out[f"message {name}"]["<map_entry>"] = True
        for n in msg.nested_type:
            walk(name + ".", n)
        for e in msg.enum_type:
            enum_summary(name + ".", e)

    pkg = "." + fdp.package + "."
    for m in fdp.message_type:
        walk(pkg, m)
    for e in fdp.enum_type:
        enum_summary(pkg, e)
    return out


def _services(fdp):
    out = {}
    for s in fdp.service:
        for m in s.method:
            out[f"{fdp.package}.{s.name}/{m.name}"] = (
                m.input_type,
                m.output_type,
                m.client_streaming,
                m.server_streaming,
            )
    return out


def _diff(ours, theirs):
    problems = []
    for key in sorted(set(ours) | set(theirs)):
        if key not in ours:
            problems.append(f"missing in Nereid: {key} = {theirs[key]}")
        elif key not in theirs:
            problems.append(f"not in Triton: {key} = {ours[key]}")
        elif isinstance(ours[key], dict):
            o, t = ours[key], theirs[key]
            for f in sorted(set(o) | set(t)):
                if o.get(f) != t.get(f):
                    problems.append(f"{key}.{f}: Nereid {o.get(f)} != Triton {t.get(f)}")
        elif ours[key] != theirs[key]:
            problems.append(f"{key}: Nereid {ours[key]} != Triton {theirs[key]}")
    return problems


@pytest.fixture(scope="module")
def ours():
    return _compile_ours()


@pytest.mark.parametrize(
    "filename,module",
    [("model_config.proto", model_config_pb2), ("grpc_service.proto", service_pb2)],
)
def test_messages_and_enums_match(ours, filename, module):
    theirs = _theirs(module)
    mine = ours[filename]
    assert mine.package == theirs.package
    problems = _diff(_messages(mine), _messages(theirs))
    assert not problems, "\n".join(problems)


def test_service_rpcs_match(ours):
    theirs = _theirs(service_pb2)
    problems = _diff(_services(ours["grpc_service.proto"]), _services(theirs))
    assert not problems, "\n".join(problems)


def test_health_service_shape(ours):
    health = ours["health.proto"]
    assert health.package == "grpc.health.v1"
    msgs = _messages(health)
    assert msgs["message .grpc.health.v1.HealthCheckRequest"]["service"][:3] == (1, 9, 1)
    assert msgs["message .grpc.health.v1.HealthCheckResponse"]["status"][:2] == (1, 14)
    assert msgs["enum .grpc.health.v1.HealthCheckResponse.ServingStatus"] == [
        ("NOT_SERVING", 2), ("SERVICE_UNKNOWN", 3), ("SERVING", 1), ("UNKNOWN", 0)]
    assert _services(health) == {
        "grpc.health.v1.Health/Check": (
            ".grpc.health.v1.HealthCheckRequest", ".grpc.health.v1.HealthCheckResponse", False, False)
    }
