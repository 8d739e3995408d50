"""The metrics the autoscaling manifests scale on exist on a running
nereid: every nv_* and nereid_* name that deploy/autoscaling/ and the
chart's HPA read is scraped from bin/nereid's /metrics after it served a
request and its model cache unloaded an idle model."""

from __future__ import annotations

import re
import time

from deploy_util import CHART, DEPLOY, NEREID_BIN, check_simple_infer, free_ports, http_get, simple_repo, yaml_file

NAME = re.compile(r"\b((?:nv|nereid)_[a-z_]+)\b")


def referenced_metrics() -> tuple[set[str], set[str]]:
    """(names the manifests read, names a custom-metrics adapter makes)."""
    texts = [p.read_text() for p in sorted((DEPLOY / "autoscaling").glob("*.yaml"))]
    texts.append((CHART / "templates" / "hpa.yaml").read_text())
    names = set(NAME.findall("\n".join(texts)))
    derived = set()
    for doc in yaml_file(DEPLOY / "autoscaling" / "prometheus-adapter-rules.yaml"):
        if doc["kind"] == "ConfigMap":
            derived |= set(re.findall(r'as: "([a-z_]+)"', doc["data"]["config.yaml"]))
    derived -= set(re.findall(r'matches: "\^([a-z_]+)\$"', "\n".join(texts)))
    return names - derived, derived


def scrape(port) -> dict[str, list[str]]:
    status, body = http_get(port, "/metrics")
    assert status == 200
    series: dict = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            series.setdefault(name, []).append(line)
    return series


def test_autoscaling_metrics_exist(tmp_path, servers):
    wanted, derived = referenced_metrics()
    # The manifests scale on queue, pending requests and the cache.
    assert {"nv_inference_pending_request_count", "nv_inference_queue_duration_us",
            "nereid_model_cache_bytes", "nereid_model_cache_budget_bytes",
            "nereid_model_cache_evictions_total"} <= wanted
    assert "nv_inference_queue_us_per_request" in derived
    http, grpc, metrics = free_ports(3)
    repo = simple_repo(tmp_path / "models")
    s = servers([NEREID_BIN, f"--model-repository={repo}", f"--http-port={http}", f"--grpc-port={grpc}",
                 "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
                 "--allow-metrics=true", f"--metrics-port={metrics}", "--model-control-mode=explicit",
                 "--model-load-on-demand=true", f"--model-cache-memory={256 << 20}",
                 "--model-idle-unload-secs=1"], http)
    s.wait_ready()
    check_simple_infer(http)  # loads simple on demand, then serves it
    loaded = scrape(metrics)
    for name in ("nv_inference_pending_request_count", "nv_inference_queue_duration_us",
                 "nv_inference_request_success"):
        assert any('model="simple"' in line for line in loaded.get(name, [])), name
    # The idle unload counts an eviction; its series exists from then on.
    deadline = time.monotonic() + 15
    while "nereid_model_cache_evictions_total" not in scrape(metrics):
        assert time.monotonic() < deadline, "no idle eviction within 15 s of --model-idle-unload-secs=1"
        time.sleep(0.2)
    final = scrape(metrics)
    seen = set(final) | set(loaded)
    missing = sorted(n for n in wanted if n not in seen and n + "_total" not in seen)
    assert not missing, f"metrics the manifests read that nereid does not export: {missing}"
    assert any('reason="idle"' in line for line in final["nereid_model_cache_evictions_total"])
    (budget,) = final["nereid_model_cache_budget_bytes"]
    assert float(budget.split()[-1]) == 256 << 20
