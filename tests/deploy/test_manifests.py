"""KServe, ModelMesh and autoscaling manifests: kubeconform against the
CRD schemas of the pinned KServe, KEDA and Prometheus Operator modules and
Kubernetes' own OpenAPI; what KServe's webhooks would check on top; and
the runtimes' command lines run by the real nereid."""

from __future__ import annotations

import pathlib
import re

import pytest

from deploy_util import (
    DEPLOY, NEREID_BIN, free_ports, kubeconform, localize_args, nereid_flag_names, simple_repo,
    check_simple_infer, yaml_file,
)

MANIFESTS = sorted(p for d in ("kserve", "modelmesh", "autoscaling") for p in (DEPLOY / d).glob("*.yaml"))
BAD = sorted((pathlib.Path(__file__).parent / "bad-manifests").glob("*.yaml"))
# KServe's protocol names (constants.ProtocolV1, ProtocolV2, ProtocolGRPCV1, ProtocolGRPCV2).
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}


def objects(kind=None) -> list[dict]:
    out = []
    for p in MANIFESTS:
        for d in yaml_file(p):
            if kind is None or d["kind"] == kind:
                out.append(d)
    return out


def runtimes() -> dict[str, dict]:
    return {r["metadata"]["name"]: r for r in objects("ServingRuntime") + objects("ClusterServingRuntime")}


def test_every_manifest_validates():
    out = kubeconform(MANIFESTS)
    s = out["summary"]
    assert s["valid"] == len(objects()) and s["invalid"] == 0 and s["errors"] == 0 and s["skipped"] == 0, out


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_schemas_catch_mistakes(path):
    """Each bad manifest holds one mistake the schemas must find: a schema
    that let everything through would pass the test above."""
    expect = re.search(r"^# expect: (.+)$", path.read_text(), re.M).group(1)
    out = kubeconform([path], check=False)
    (res,) = out["resources"]
    assert res["status"] == "statusInvalid", res
    assert expect in res["msg"], res["msg"]


def test_cluster_runtime_declares_nereids_formats():
    rt = runtimes()["kserve-nereid"]
    assert rt["kind"] == "ClusterServingRuntime"
    formats = {f["name"] for f in rt["spec"]["supportedModelFormats"]}
    assert formats == {"onnx", "tensorflow", "python", "triton"}
    assert rt["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    (c,) = rt["spec"]["containers"]
    assert c["name"] == "kserve-container"  # the name KServe merges the predictor into
    # Triton's flag names and KServe's ports, as kserve-tritonserver.
    assert {"--model-store=/mnt/models", "--http-port=8080", "--grpc-port=9000"} <= set(c["args"])
    assert rt["spec"]["annotations"]["prometheus.kserve.io/port"] == "8002"


def test_runtimes_are_consistent():
    for name, rt in runtimes().items():
        spec = rt["spec"]
        assert set(spec["protocolVersions"]) <= PROTOCOLS, name
        for f in spec["supportedModelFormats"]:
            assert f.get("priority", 1) >= 1, name
        if spec.get("multiModel"):
            assert re.fullmatch(r"port:\d+", spec["grpcEndpoint"]), name
            assert re.fullmatch(r"port:\d+", spec["grpcDataEndpoint"]), name


def test_inference_services_use_a_runtime_that_serves_them():
    rts = runtimes()
    isvcs = objects("InferenceService")
    assert len(isvcs) >= 3
    for isvc in isvcs:
        model = isvc["spec"]["predictor"]["model"]
        rt = rts[model["runtime"]]
        formats = {f["name"] for f in rt["spec"]["supportedModelFormats"]}
        assert model["modelFormat"]["name"] in formats, isvc["metadata"]["name"]
        assert model.get("protocolVersion", "v2") in rt["spec"]["protocolVersions"] or \
            model.get("protocolVersion") is None
        mode = isvc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode")
        assert (mode == "ModelMesh") == bool(rt["spec"].get("multiModel")), isvc["metadata"]["name"]


def runtime_args(name):
    (c,) = runtimes()[name]["spec"]["containers"]
    return c["args"]


@pytest.mark.parametrize("name", ["kserve-nereid", "nereid-onnx"])
def test_nereid_serves_with_the_runtimes_command_line(name, tmp_path, servers):
    args = runtime_args(name)
    known = nereid_flag_names()
    assert all(a.split("=")[0].lstrip("-") in known for a in args), args
    http, grpc, metrics = free_ports(3)
    repo = simple_repo(tmp_path / "mnt-models")
    argv = [NEREID_BIN] + localize_args(args, repo, {"http": http, "grpc": grpc, "metrics": metrics})
    servers(argv, http).wait_ready()
    # Both serve simple: loaded at start, or on its first request.
    check_simple_infer(http)


def test_modelmesh_runtime_command_line(tmp_path, servers):
    """The ModelMesh runtime's flags are this nereid's, and it starts with
    them."""
    args = runtime_args("nereid-modelmesh")
    known = nereid_flag_names()
    missing = [a for a in args if a.split("=")[0].lstrip("-") not in known]
    assert not missing
    http, grpc, metrics, mm = free_ports(4)
    argv = [NEREID_BIN] + localize_args(args, tmp_path, {"http": http, "grpc": grpc, "metrics": metrics,
                                                        "modelmesh": mm})
    servers(argv, http).wait_ready()
