"""The Helm chart: helm lint and helm template for every values example,
kubeconform on what it renders, nereid started with the command line it
renders, and the values that make no sense refused with a clear message."""

from __future__ import annotations

import pathlib
import re

import pytest

from deploy_util import (
    CHART, KUBE_VERSION, NEREID_BIN, ROOT, free_ports, helm_template, kubeconform, localize_args,
    nereid_flag_names, run, simple_repo, tool, yaml_docs,
)

EXAMPLES = sorted((CHART / "ci").glob("*.yaml"))
BAD = sorted((pathlib.Path(__file__).parent / "bad-values").glob("*.yaml"))


def rendered(values) -> dict:
    """The chart rendered with one values file: {kind: [objects]}."""
    by_kind: dict = {}
    for d in yaml_docs(helm_template([values]).stdout):
        by_kind.setdefault(d["kind"], []).append(d)
    return by_kind


def nereid_container(objs) -> dict:
    (dep,) = objs["Deployment"]
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "nereid")


def test_examples_exist():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("values", EXAMPLES, ids=lambda p: p.stem)
def test_lint(values):
    p = run([tool("helm"), "lint", "--strict", "--kube-version", KUBE_VERSION, CHART, "-f", values])
    assert "0 chart(s) failed" in p.stdout


@pytest.mark.parametrize("values", EXAMPLES, ids=lambda p: p.stem)
def test_rendered_manifests_validate(values):
    out = kubeconform([], stdin=helm_template([values]).stdout)
    s = out["summary"]
    assert s["valid"] >= 2 and s["invalid"] == 0 and s["errors"] == 0 and s["skipped"] == 0, out


@pytest.mark.parametrize("values", EXAMPLES, ids=lambda p: p.stem)
def test_probes_and_ports(values):
    objs = rendered(values)
    c = nereid_container(objs)
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == 8000
    (svc,) = objs["Service"]
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= set(ports)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]


@pytest.mark.parametrize("values", EXAMPLES, ids=lambda p: p.stem)
def test_nereid_accepts_the_rendered_command_line(values, tmp_path, servers):
    """The chart's args, with the repository and ports made local, start
    the real nereid: every flag exists and its value is one nereid takes."""
    args = nereid_container(rendered(values))["args"]
    known = nereid_flag_names()
    unknown = [a for a in args if a.split("=")[0].lstrip("-") not in known]
    assert not unknown, f"flags nereid does not know: {unknown}"
    http, grpc, metrics = free_ports(3)
    repo = simple_repo(tmp_path / "models", ("simple", "simple_ensemble"))
    argv = [NEREID_BIN] + localize_args(args, repo, {"http": http, "grpc": grpc, "metrics": metrics})
    servers(argv, http).wait_ready()


def test_pvc_example():
    objs = rendered(CHART / "ci" / "pvc-values.yaml")
    (dep,) = objs["Deployment"]
    spec = dep["spec"]["template"]["spec"]
    vol = next(v for v in spec["volumes"] if v["name"] == "model-repository")
    assert vol["persistentVolumeClaim"] == {"claimName": "nereid-models", "readOnly": True}
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    (hpa,) = objs["HorizontalPodAutoscaler"]
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "8002"
    assert objs["PodDisruptionBudget"]


def test_gpu_example():
    objs = rendered(CHART / "ci" / "gpu-image-values.yaml")
    (dep,) = objs["Deployment"]
    spec = dep["spec"]["template"]["spec"]
    c = nereid_container(objs)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    (init,) = spec["initContainers"]
    assert init["image"] == "registry.example.com/team/models:2026-01"
    assert init["command"] == ["cp", "-R", "/models/.", "/models-init/"]
    (hpa,) = objs["HorizontalPodAutoscaler"]
    names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert names == ["nv_inference_pending_request_count", "nv_inference_queue_us_per_request"]
    assert not any(m["type"] == "Resource" for m in hpa["spec"]["metrics"])
    (sm,) = objs["ServiceMonitor"]
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert c["lifecycle"]["preStop"]["sleep"]["seconds"] == 5
    assert spec["terminationGracePeriodSeconds"] == 30 + 5 + 10


def test_model_cache_example():
    objs = rendered(CHART / "ci" / "model-cache-values.yaml")
    c = nereid_container(objs)
    assert c["image"] == "nereid:0.1.0-python"
    args = c["args"]
    for flag in ("--model-load-on-demand=true", "--model-cache-memory=60%", "--model-idle-unload-secs=600",
                 "--model-control-mode=explicit", "--backend-config=python,stub-timeout-seconds=60",
                 "--rate-limit=execution_count"):
        assert flag in args
    (dep,) = objs["Deployment"]
    (init,) = dep["spec"]["template"]["spec"]["initContainers"]
    assert init["name"] == "fetch-models"
    assert init["volumeMounts"] == [{"name": "model-repository", "mountPath": "/models-init"}]
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "model-repository")
    assert vol["emptyDir"]["sizeLimit"] == "20Gi"


def test_explicit_example():
    objs = rendered(CHART / "ci" / "explicit-values.yaml")
    c = nereid_container(objs)
    assert "--load-model=simple" in c["args"] and "--load-model=simple_ensemble" in c["args"]
    assert "--allow-grpc=false" in c["args"]
    assert [p["name"] for p in c["ports"]] == ["http", "metrics"]
    (dep,) = objs["Deployment"]
    assert "annotations" not in dep["spec"]["template"]["metadata"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "model-repository")
    assert mount["subPath"] == "triton"
    assert objs["ServiceAccount"]


@pytest.mark.parametrize("values", BAD, ids=lambda p: p.stem)
def test_nonsense_values_are_refused(values):
    expect = re.search(r"^# expect: (.+)$", values.read_text(), re.M).group(1)
    p = helm_template([values], check=False)
    assert p.returncode != 0, f"helm template accepted {values.name}:\n{p.stdout[:2000]}"
    assert expect in p.stderr, p.stderr


def test_no_repository_is_refused_by_default():
    # The chart alone, no values: a model repository must be chosen.
    p = helm_template(check=False)
    assert p.returncode != 0
    assert "at '/modelRepository/source': value must be one of 'pvc', 'image', 'init'" in p.stderr
