"""`nereid analyze`, the configuration recommender, end to end: a short
sweep of mlp_fp32 (ONNX Runtime) in-process and against a running
bin/nereid by URL, with report.json, report.md and report.svg checked
against each other and against the recommendation rule recomputed here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import EXAMPLES, NEREID_BIN

MODEL = "mlp_fp32"
# A short sweep: 2 instance counts x (no batching, batches of 64) x 2
# concurrency levels = 8 points of 0.3 s each.
SWEEP = [
    "--window=250ms",
    "--warmup=50ms",
    "--instances=1,2",
    "--max-batch-sizes=1,64",
    "--queue-delays-us=0",
    "--concurrency=1,4",
]
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of model_repo_examples (the sweep reloads mlp_fp32 in it)."""
    dst = tmp_path_factory.mktemp("analyze") / "repo"
    shutil.copytree(EXAMPLES, dst)
    return dst


@pytest.fixture(scope="module")
def mlp_repo(tmp_path_factory):
    """mlp_fp32 alone, for a server that loads its whole repository."""
    dst = tmp_path_factory.mktemp("analyze") / "mlp_repo"
    shutil.copytree(EXAMPLES / MODEL, dst / MODEL)
    return dst


def analyze(*args, timeout=60):
    if not NEREID_BIN.exists():
        pytest.fail(f"{NEREID_BIN} does not exist: run `make build` first")
    proc = subprocess.run(
        [str(NEREID_BIN), "analyze", "--model", MODEL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"nereid analyze exited {proc.returncode}\n{proc.stderr}"
    return proc


def measured(p):
    return not p.get("error") and p["errors"] == 0 and p["requests"] > 0


def dominated(p, points):
    tput, p99 = p["throughput_infer_per_s"], p["latency_ms"]["p99"]
    for q in points:
        tq, lq = q["throughput_infer_per_s"], q["latency_ms"]["p99"]
        if measured(q) and tq >= tput and lq <= p99 and (tq > tput or lq < p99):
            return True
    return False


def expected_recommendation(points, budget):
    """The rule, recomputed: within the budget the least cost, then the
    highest throughput; without one the highest throughput, then the least
    cost; then the lower p99, the lower concurrency, the earlier point."""
    cands = [
        i for i, p in enumerate(points)
        if measured(p) and (not budget or p["latency_ms"]["p99"] <= budget)
    ]
    if not cands:
        return -1

    def key(i):
        p = points[i]
        tie = (p["latency_ms"]["p99"], p["concurrency"], i)
        if budget:
            return (p["cost"], -p["throughput_infer_per_s"], *tie)
        return (-p["throughput_infer_per_s"], p["cost"], *tie)

    return min(cands, key=key)


def check_report(out, stdout, n_points, budget=None):
    """report.json, .md and .svg exist and say the same thing; returns the
    report."""
    rep = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    svg = ET.parse(out / "report.svg").getroot()  # well-formed, or this raises
    assert svg.tag == SVG + "svg"

    assert rep["model"] == MODEL
    points = rep["points"]
    assert len(points) == n_points
    for i, p in enumerate(points):
        assert measured(p), f"point {i} not measured: {p}"
        lat = p["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"], (i, lat)
        assert p["throughput_infer_per_s"] > 0
        assert p["pareto"] == (not dominated(p, points)), f"point {i}: pareto flag"
        if budget:
            assert p["meets_budget"] == (lat["p99"] <= budget)
    mpi = rep["memory_per_instance_bytes"]
    assert mpi > 0 and rep["cost_unit"] == "bytes", "the model cache measures mlp_fp32's memory"
    for p in points:
        assert p["memory_bytes"] > 0
        assert p["cost"] == p["config"]["instances"] * mpi
    assert any(p["pareto"] for p in points)

    rec = rep["recommendation"]
    assert rec["point"] == expected_recommendation(points, budget), rec

    # report.md: one table row per point, the recommended one in bold.
    assert md.startswith(f"# nereid analyze: {MODEL}\n")
    assert "](report.svg)" in md
    rows = re.findall(r"^\| (\**\d+\**) \|", md, re.M)
    assert len(rows) == n_points
    assert sum(1 for row in md.splitlines() if row.startswith("| ") and row.endswith(" | ✓ |")) == sum(
        p["pareto"] for p in points
    )
    # report.svg: a marker per point, the same Pareto set, the same pick.
    markers = [c for c in svg.iter(SVG + "circle") if c.get("class") == "point"]
    assert sorted(int(c.get("data-index")) for c in markers) == list(range(n_points))
    assert {int(c.get("data-index")) for c in markers if c.get("data-pareto") == "true"} == {
        i for i, p in enumerate(points) if p["pareto"]
    }
    ringed = [c for c in svg.iter(SVG + "circle") if c.get("class") == "recommended"]
    if rec["point"] >= 0:
        assert rows[rec["point"]] == f"**{rec['point']}**"
        assert [int(c.get("data-index")) for c in ringed] == [rec["point"]]
        assert f"Recommended: point {rec['point']}" in stdout
    else:
        assert "**None**" in md and not ringed
        assert "No recommendation" in stdout
    if budget:
        assert any(e.get("class") == "budget" for e in svg.iter(SVG + "line"))
    # The table on stdout has a line per point.
    assert len(re.findall(r"^\s+\d+\s+\d+\s", stdout, re.M)) == n_points
    return rep


def test_analyze_in_process(repo, tmp_path):
    out = tmp_path / "report"
    proc = analyze("--model-repository", str(repo), "--latency-budget-ms=50", "--output", str(out), *SWEEP)
    rep = check_report(out, proc.stdout, 8, budget=50)
    assert rep["target"] == "in-process Nereid"
    assert rep["swept"] == ["instances", "max_batch_size", "max_queue_delay_microseconds", "concurrency"]
    configs = {(p["config"]["instances"], p["config"]["max_batch_size"], p["config"]["dynamic_batching"]) for p in rep["points"]}
    assert configs == {(1, 1, False), (1, 64, True), (2, 1, False), (2, 64, True)}
    assert all(p["resident_bytes"] > 0 for p in rep["points"])
    # Progress went to stderr, a line per point.
    assert len(re.findall(r"^\[\d+/8\] ", proc.stderr, re.M)) == 8


def test_analyze_by_url(nereid, repo, tmp_path):
    server = nereid.start(repo, ["--model-control-mode=explicit", f"--load-model={MODEL}"])
    before = server.request("GET", f"/v2/models/{MODEL}/config").json()
    out = tmp_path / "report"
    proc = analyze("--url", server.http_url, "--output", str(out), *SWEEP)
    rep = check_report(out, proc.stdout, 8)
    assert rep["target"] == f"http://{server.http_url}"
    assert "instances" in rep["swept"]
    # Afterwards the model serves its repository configuration again.
    after = server.request("GET", f"/v2/models/{MODEL}/config").json()
    for key in ("max_batch_size", "dynamic_batching", "instance_group"):
        assert after.get(key) == before.get(key), key


def test_analyze_by_url_without_explicit_mode(nereid, mlp_repo, tmp_path):
    """A server that cannot reload is swept over concurrency only, and a
    budget no point meets gives no recommendation."""
    server = nereid.start(mlp_repo, ["--model-control-mode=none"])
    out = tmp_path / "report"
    proc = analyze("--url", server.http_url, "--output", str(out), "--latency-budget-ms=0.0001", *SWEEP)
    rep = check_report(out, proc.stdout, 2, budget=0.0001)
    assert rep["swept"] == ["concurrency"]
    assert any("only concurrency is swept" in n for n in rep["notes"])
    assert rep["recommendation"]["point"] == -1
    assert "no configuration meets the p99 budget" in rep["recommendation"]["reason"]
