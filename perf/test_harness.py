"""Unit tests of the performance harness (perf/runner.py, perf/report.py,
perf/peers/triton_launcher.py, perf/batching_bench.py): the Triton launcher
against a fake tritonserver, the left-out path when Triton is not installed,
perf_analyzer CSV parsing, the ratio tables, the stability flags and the
batching report. No real server, no perf_analyzer, a few seconds:

    .venv/bin/python -m pytest -q perf/test_harness.py -p no:cacheprovider
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import sys
import textwrap

import pytest

PERF = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(PERF))

import batching_bench  # noqa: E402
import report  # noqa: E402
import runner  # noqa: E402
import triton_launcher  # noqa: E402 - runner put perf/peers on sys.path

EXAMPLES = PERF.parent / "model_repo_examples"

# A stand-in for tritonserver: records its command line and environment,
# waits a little (a start-up to time), then answers Triton's readiness
# endpoints for the models of its repository until SIGTERM.
FAKE_TRITONSERVER = """\
#!{python}
import http.server, json, os, pathlib, signal, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
pathlib.Path(os.environ["FAKE_TRITON_RECORD"]).write_text(json.dumps(
    {{"argv": sys.argv[1:], "backends": os.environ.get("TRITON_BACKENDS")}}))
if os.environ.get("FAKE_TRITON_FAIL"):
    sys.exit(3)
time.sleep(0.3)
models = {{p.name for p in pathlib.Path(args["model-repository"]).iterdir() if (p / "config.pbtxt").exists()}}

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        parts = self.path.strip("/").split("/")
        ok = parts == ["v2", "health", "ready"] or (
            len(parts) == 4 and parts[:2] == ["v2", "models"] and parts[2] in models and parts[3] == "ready")
        body = json.dumps({{"name": "triton", "version": "0.0.0-fake"}}).encode() if parts == ["v2"] else b""
        self.send_response(200 if ok or parts == ["v2"] else 400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
http.server.HTTPServer((args["http-address"], int(args["http-port"])), H).serve_forever()
"""


def fake_triton_dir(tmp: pathlib.Path, fail: bool = False) -> pathlib.Path:
    d = tmp / "triton"
    (d / "backends").mkdir(parents=True)
    binary = d / "tritonserver"
    binary.write_text(FAKE_TRITONSERVER.format(python=sys.executable))
    binary.chmod(0o755)
    record = tmp / "record.json"
    (d / "triton-env.sh").write_text(textwrap.dedent(f"""\
        export TRITONSERVER='{binary}'
        export TRITON_BACKENDS='{d / "backends"}'
        export FAKE_TRITON_RECORD='{record}'
        {"export FAKE_TRITON_FAIL=1" if fail else ""}
        """))
    return d


def context(tmp: pathlib.Path, triton_dir: pathlib.Path, models=("simple", "identity_fp32")):
    ctx = runner.Context()
    ctx.args = argparse.Namespace(triton_dir=str(triton_dir), python=sys.executable, repository=str(EXAMPLES))
    ctx.out = tmp / "out"
    ctx.python_repository = ctx.out / "repository-python"
    ctx.twins = triton_launcher.python_repository(EXAMPLES, ctx.python_repository, models)
    return ctx


# ---- the Triton launcher -------------------------------------------------------


def test_missing_install_is_named(tmp_path):
    why = triton_launcher.missing(tmp_path / "none")
    assert why and "install-triton.sh" in why and str(tmp_path / "none") in why
    with pytest.raises(triton_launcher.NotInstalled):
        triton_launcher.environment(tmp_path / "none")
    ctx = runner.Context()
    ctx.args = argparse.Namespace(triton_dir=str(tmp_path / "none"), python=sys.executable)
    assert runner.SERVERS["triton"].unavailable(ctx) == why


def test_env_file_without_an_executable_is_refused(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    (d / "triton-env.sh").write_text(f"export TRITONSERVER='{d}/nope'\nexport TRITON_BACKENDS='{d}'\n")
    with pytest.raises(triton_launcher.NotInstalled, match="not an executable"):
        triton_launcher.environment(d)
    (d / "triton-env.sh").write_text(f"export TRITONSERVER='{d}/nope'\n")
    with pytest.raises(triton_launcher.NotInstalled, match="TRITON_BACKENDS"):
        triton_launcher.environment(d)


def test_command_line(tmp_path):
    env = triton_launcher.environment(fake_triton_dir(tmp_path))
    argv = triton_launcher.command(env, tmp_path / "repo", 1, 2, 3, "pfx")
    assert argv[0] == env["TRITONSERVER"]
    for flag in (f"--model-repository={tmp_path / 'repo'}", f"--backend-directory={env['TRITON_BACKENDS']}",
                 "--backend-config=python,shm-region-prefix-name=pfx", "--http-address=127.0.0.1",
                 "--http-port=1", "--grpc-address=127.0.0.1", "--grpc-port=2", "--metrics-port=3"):
        assert flag in argv


def test_python_repository_renames_the_twins(tmp_path):
    twins = triton_launcher.python_repository(EXAMPLES, tmp_path, ["simple", "identity_fp32", "mlp_fp32"])
    assert twins == {"simple": "add_sub", "identity_fp32": "identity_python"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity_fp32", "simple"]
    text = (tmp_path / "simple" / "config.pbtxt").read_text()
    assert 'name: "simple"' in text and 'backend: "python"' in text and "add_sub" not in text.split("name:")[1][:20]
    assert (tmp_path / "simple" / "1" / "model.py").exists()
    assert runner.model_format(text) == "Python"
    assert runner.model_format((EXAMPLES / "simple" / "config.pbtxt").read_text()) == "ONNX"


def test_fake_triton_starts_is_timed_and_stops(tmp_path):
    ctx = context(tmp_path, fake_triton_dir(tmp_path))
    ctx.triton_env = triton_launcher.environment(ctx.args.triton_dir)
    server = runner.SERVERS["triton"]
    assert server.unavailable(ctx) is None
    running = runner.Running(server, ctx, ["simple", "identity_fp32"])
    try:
        running.wait_ready(["simple", "identity_fp32"], timeout=30)
        assert running.startup_s >= 0.3
        assert running.idle_rss > 1
        assert runner.server_metadata(running) == {"name": "triton", "version": "0.0.0-fake"}
        record = json.loads((tmp_path / "record.json").read_text())
        http, grpc, metrics = running.ports
        for flag in (f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
                     f"--model-repository={ctx.python_repository}"):
            assert flag in record["argv"]
        assert record["backends"] == ctx.triton_env["TRITON_BACKENDS"]
        pid = running.proc.pid
    finally:
        running.stop()
    assert running.proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert "tritonserver" in (ctx.out / "logs" / "triton.log").read_text().splitlines()[0]


def test_fake_triton_that_exits_is_an_error(tmp_path):
    ctx = context(tmp_path, fake_triton_dir(tmp_path, fail=True))
    ctx.triton_env = triton_launcher.environment(ctx.args.triton_dir)
    running = runner.Running(runner.SERVERS["triton"], ctx, ["simple"])
    try:
        with pytest.raises(RuntimeError, match="exited with status 3"):
            running.wait_ready(["simple"], timeout=30)
    finally:
        running.stop()


def test_run_without_triton_leaves_it_out(tmp_path, monkeypatch):
    """perf/run with Triton selected but not installed: the run goes on,
    the report says why Triton is missing."""

    def no_build(ctx):
        ctx.nereid, ctx.ort_library = "/nonexistent/nereid", "/nonexistent/libonnxruntime.so"

    monkeypatch.setattr(runner, "build", no_build)
    monkeypatch.setattr(runner, "PERF", tmp_path / "perf")
    (tmp_path / "perf" / "pa").mkdir(parents=True)
    (tmp_path / "perf" / "pa" / "VERSIONS").write_text("perf-analyzer (fake)\n")
    out = tmp_path / "results"
    rc = runner.main(["--servers", "triton", "--models", "simple", "--protocols", "grpc", "--quick",
                      "--triton-dir", str(tmp_path / "absent"), "--out", str(out)])
    assert rc == 0
    env = json.loads((out / "environment.json").read_text())
    assert "install-triton.sh" in env["servers"]["triton"]["left_out"]
    summary = (out / "summary.md").read_text()
    assert "| Triton | – | – | left out of this run:" in summary
    assert "install-triton.sh" in summary
    assert not (out / "repository").exists() and not (out / "repository-python").exists()


def test_unknown_server_is_refused():
    with pytest.raises(SystemExit, match="unknown server nope"):
        runner.main(["--servers", "nope", "--out", "/nonexistent"])


# ---- perf_analyzer output -------------------------------------------------------


def test_parse_pa_csv(tmp_path):
    f = tmp_path / "pa.csv"
    f.write_text("Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
                 "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
                 "p50 latency,p90 latency,p95 latency,p99 latency\n"
                 "4,1234.5,3,250,10,5,40,6,2,300,400,450,600\n")
    row = runner.parse_pa_csv(f)
    assert row["throughput"] == 1234.5
    assert row["server_compute_us"] == 51 and row["server_queue_us"] == 10
    assert (row["p50_us"], row["p99_us"]) == (300, 600)
    # A server without the statistics extension: no server-side columns.
    f.write_text("Concurrency,Inferences/Second,Client Send,Client Recv,p50 latency,p90 latency,"
                 "p95 latency,p99 latency\n1,10,1,1,5,6,7,8\n")
    row = runner.parse_pa_csv(f)
    assert row["server_compute_us"] == "" and row["throughput"] == 10
    f.write_text("Concurrency,Inferences/Second\n")
    with pytest.raises(ValueError, match="no data row"):
        runner.parse_pa_csv(f)


# A stand-in for perf_analyzer: records its arguments, fails to stabilise
# unless the spread it is allowed is FAKE_PA_STABLE_AT or more, and writes
# its CSV (-f) when it succeeds.
FAKE_PERF_ANALYZER = """\
#!{python}
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_PA_RECORD"], "a") as f:
    f.write(json.dumps(argv) + "\\n")
if float(argv[argv.index("-s") + 1]) < float(os.environ["FAKE_PA_STABLE_AT"]):
    print("Failed to obtain stable measurement within 3 measurement windows for concurrency 1.")
    print("Failed to obtain stable measurement.")
    sys.exit(99)
with open(argv[argv.index("-f") + 1], "w") as f:
    f.write("Concurrency,Inferences/Second,Client Send,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency\\n")
    f.write("1,500,1,1,2000,2500,2600,3000\\n")
"""


def fake_pa(tmp_path, monkeypatch, stable_at):
    binary = tmp_path / "perf_analyzer"
    binary.write_text(FAKE_PERF_ANALYZER.format(python=sys.executable))
    binary.chmod(0o755)
    monkeypatch.setattr(runner, "PERF_ANALYZER", binary)
    monkeypatch.setenv("FAKE_PA_RECORD", str(tmp_path / "pa.jsonl"))
    monkeypatch.setenv("FAKE_PA_STABLE_AT", str(stable_at))
    ctx = runner.Context()
    ctx.out = tmp_path / "out"
    ctx.args = argparse.Namespace(window_ms=100, stability=10, max_trials=3)

    class FakeRunning:
        server = runner.SERVERS["nereid"]
        url = grpc_url = "127.0.0.1:1"

        class proc:
            pid = os.getpid()

    return ctx, FakeRunning()


def pa_calls(tmp_path):
    return [json.loads(line) for line in (tmp_path / "pa.jsonl").read_text().splitlines()]


def test_perf_analyzer_stable_run(tmp_path, monkeypatch):
    ctx, running = fake_pa(tmp_path, monkeypatch, stable_at=10)
    row = runner.run_perf_analyzer(ctx, running, "grpc", "simple", 16, 1)
    assert row["status"] == "ok" and row["stable"] is True and row["throughput"] == 500
    (call,) = pa_calls(tmp_path)
    assert call[call.index("--warmup-request-count") + 1] == str(runner.WARMUP_REQUESTS)
    assert call[call.index("-s") + 1] == "10" and call[call.index("-p") + 1] == "100"
    assert call[call.index("--concurrency-range") + 1] == "16" and "-i" in call and "grpc" in call


def test_perf_analyzer_unstable_run_is_measured_again_and_marked(tmp_path, monkeypatch):
    ctx, running = fake_pa(tmp_path, monkeypatch, stable_at=runner.ANY_SPREAD)
    row = runner.run_perf_analyzer(ctx, running, "grpc", "simple", 64, 1)
    assert row["status"] == "ok" and row["stable"] is False and row["mode"] == "3 windows, any spread"
    first, retry = pa_calls(tmp_path)
    assert first[first.index("-s") + 1] == "10"
    assert retry[retry.index("-s") + 1] == str(runner.ANY_SPREAD) and retry[retry.index("-r") + 1] == "3"
    assert retry[retry.index("--warmup-request-count") + 1] == "256"  # 4 per concurrent request


def test_perf_analyzer_that_never_stabilises_is_an_error_row(tmp_path, monkeypatch):
    ctx, running = fake_pa(tmp_path, monkeypatch, stable_at=10 ** 6)
    row = runner.run_perf_analyzer(ctx, running, "http", "simple", 1, 2)
    assert row["status"] == "error" and "Failed to obtain stable measurement" in row["error"]
    assert len(pa_calls(tmp_path)) == 2


# ---- the report -------------------------------------------------------------------


def write_run(out: pathlib.Path, rows: list[dict], stability=10, formats=None, servers=None):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=runner.RUN_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({"status": "ok", "stable": True, "protocol": "grpc", "model": "simple", "p50_us": 500,
                        "p99_us": 900, "server_cpu_cores": 1, "server_rss_mib": 50, **r})
    env = {"settings": {"stability": stability, "reps": 3}, "formats": formats or {}, "servers": servers or {}}
    (out / "environment.json").write_text(json.dumps(env))


def rows_of(server, throughputs, concurrency=1, **extra):
    return [{"server": server, "concurrency": concurrency, "rep": i + 1, "throughput": t, **extra}
            for i, t in enumerate(throughputs)]


def test_unsteady_cells_are_flagged_not_quoted(tmp_path):
    formats = {"nereid": {"simple": "ONNX"}, "triton": {"simple": "Python (add_sub)"},
               "nereid-python": {"simple": "Python (add_sub)"}, "ceiling": {"simple": "Go (built in)"}}
    write_run(tmp_path, [
        *rows_of("nereid", [1000, 1010, 1020]),           # 2 % spread
        *rows_of("ceiling", [1000, 1250, 1500]),          # 40 % spread
        *rows_of("triton", [500, 505, 510]),
        *rows_of("nereid-python", [400, 404, 408]),
    ], formats=formats)
    report.write(tmp_path)
    text = (tmp_path / "summary.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| grpc | 1 |")]
    ceiling = next(line for line in table if "| ceiling |" in line)
    assert "⚠ 40 % spread" in ceiling and "1,250" not in ceiling
    nereid = next(line for line in table if "| Nereid | ONNX |" in line)
    assert "1,010" in nereid and "⚠" not in nereid
    ratios = next(line for line in table if "(ONNX vs Python)" in line)
    cells = [c.strip() for c in ratios.split("|")[3:-1]]
    # Nereid / ceiling: per-repetition 1.00, 0.81, 0.68: unsteady, not quoted.
    assert cells[0] == "unsteady (0.68–1.00)"
    # Nereid / Triton: formats differ, said on the row; Nereid Python / Triton: same format.
    assert cells[1] == "2.00 (2.00–2.00) (ONNX vs Python)"
    assert cells[2] == "0.80 (0.80–0.80)"
    assert "Flagged: 1 of 4 cells" in text
    assert "Left out above: 1 ratio(s)" in text
    med = list(csv.DictReader(open(tmp_path / "medians.csv")))
    assert {r["server"]: r["throughput_spread_pct"] for r in med}["ceiling"] == "40.0"


def test_threshold_is_the_runs_stability(tmp_path):
    write_run(tmp_path, [*rows_of("nereid", [1000, 1250, 1500]), *rows_of("ceiling", [1000, 1000, 1000])],
              stability=50)
    report.write(tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert "⚠ " not in text.split("## Targets")[1] and "1,250" in text
    assert "at every concurrency: met (lowest 1.25, simple grpc c=1)" in text


def test_ratios_pair_repetitions(tmp_path):
    """A ratio is taken within each repetition (the servers are
    interleaved), not between medians of different repetitions."""
    write_run(tmp_path, [*rows_of("nereid", [100, 200, 300]), *rows_of("ceiling", [100, 200, 300])],
              stability=200)
    report.write(tmp_path)
    line = next(line for line in (tmp_path / "summary.md").read_text().splitlines()
                if line.startswith("| grpc | 1 | 1.00"))
    assert line.startswith("| grpc | 1 | 1.00 (1.00–1.00) |")


def test_servers_table_names_left_out_and_unserved(tmp_path):
    servers = {"nereid": {"startup_s": [0.1, 0.3, 0.2], "idle_rss_mib": [50, 52, 51], "skipped": [],
                          "models_not_served": []},
               "triton": {"startup_s": [2.5], "idle_rss_mib": [150], "skipped": [],
                          "models_not_served": ["mlp_fp32"], "why_not_served": {"mlp_fp32": "no twin"}},
               "kserve": {"left_out": "not installed here"}}
    write_run(tmp_path, rows_of("nereid", [1000]), servers=servers)
    report.write(tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert "| Nereid | 0.2 | 51 |  |" in text
    assert "| Triton | 2.5 | 150 | mlp_fp32: not served (no twin) |" in text
    assert "| KServe | – | – | left out of this run: not installed here |" in text


def test_warmup_is_stated_only_when_recorded(tmp_path):
    write_run(tmp_path, rows_of("nereid", [1000]))
    report.write(tmp_path)
    assert "warm-up" not in (tmp_path / "summary.md").read_text()
    env = json.loads((tmp_path / "environment.json").read_text())
    env["warmup_requests"] = runner.WARMUP_REQUESTS
    (tmp_path / "environment.json").write_text(json.dumps(env))
    report.write(tmp_path)
    assert f"(inputs/), {runner.WARMUP_REQUESTS} unmeasured warm-up requests before each measurement" in (
        tmp_path / "summary.md").read_text()


def test_spread_pct():
    assert report.spread_pct([1.0]) is None
    assert report.spread_pct([90, 100, 110]) == pytest.approx(20)
    r = report.Ratio([1.0, 1.05, 1.02], 10)
    assert not r.unsteady and str(r) == "1.02 (1.00–1.05)"
    assert str(report.Ratio([0.9], 10)) == "0.90"


# ---- the batching benchmark's report ------------------------------------------------


def test_batching_copies_differ_only_in_their_batcher(tmp_path):
    batching_bench.build_repo(EXAMPLES / "mlp_fp32", tmp_path, [None, 0, 500])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp_fp32_batch_0us", "mlp_fp32_batch_500us",
                                                         "mlp_fp32_batch_off"]
    off = (tmp_path / "mlp_fp32_batch_off" / "config.pbtxt").read_text()
    on = (tmp_path / "mlp_fp32_batch_500us" / "config.pbtxt").read_text()
    assert 'name: "mlp_fp32_batch_off"' in off and "dynamic_batching" not in off
    assert "dynamic_batching { max_queue_delay_microseconds: 500 }" in on
    assert (tmp_path / "mlp_fp32_batch_off" / "1" / "model.onnx").exists()
    original = (EXAMPLES / "mlp_fp32" / "config.pbtxt").read_text()
    assert on.replace("mlp_fp32_batch_500us", "mlp_fp32").replace(
        "dynamic_batching { max_queue_delay_microseconds: 500 }", "dynamic_batching { }") == original


def test_batching_input_spec():
    text = (EXAMPLES / "mlp_fp32" / "config.pbtxt").read_text()
    assert batching_bench.input_spec(text, EXAMPLES / "mlp_fp32") == ("INPUT0", 64)
    with pytest.raises(SystemExit, match="exactly one FP32 input"):
        batching_bench.input_spec((EXAMPLES / "simple" / "config.pbtxt").read_text(), EXAMPLES / "simple")


def batching_row(rnd, c, batcher, throughput, p99):
    return {"round": rnd, "concurrency": c, "batcher": batcher, "throughput": throughput, "p50_ms": p99 / 2,
            "p99_ms": p99, "per_execution": 1.0 if batcher == "off" else 4.0}


def test_batching_ratios_are_taken_within_a_round():
    rows = [batching_row(1, 32, "off", 100, 200), batching_row(1, 32, "on, 0 µs", 300, 100),
            batching_row(2, 32, "off", 200, 100), batching_row(2, 32, "on, 0 µs", 640, 60),
            batching_row(1, 8, "off", 100, 50), batching_row(1, 8, "on, 0 µs", 100, 50),
            batching_row(2, 8, "off", 100, 50), batching_row(2, 8, "on, 0 µs", 200, 50)]
    med = {(r["concurrency"], r["batcher"]): r for r in batching_bench.median_rows(rows)}
    on32 = med[(32, "on, 0 µs")]
    # Per round 3.0 and 3.2, not the ratio of medians (470 / 150).
    assert on32["throughput_ratio"] == [3.0, 3.2] and on32["p99_ratio"] == [0.5, 0.6]
    assert batching_bench.spread(on32["throughput_ratio"], 20) == "3.10 (3.00–3.20)"
    assert batching_bench.spread(med[(8, "on, 0 µs")]["throughput_ratio"], 20) == "unsteady (1.00–2.00)"
    assert batching_bench.spread([1.5], 20) == "1.50" and batching_bench.spread([], 20) == "–"


def test_batching_report_from_saved_json(tmp_path, monkeypatch):
    rows = [batching_row(1, 32, "off", 100, 200), batching_row(1, 32, "on, 500 µs", 350, 100)]
    saved = {"args": {"duration": 10, "warmup": 2, "rounds": 1, "concurrency": "32", "delays": "500"},
             "argv": ["nereid", "--flags"], "rows": rows, "command": ["perf/batching_bench.py", "--rounds", "1"],
             "instances": 2, "model": "mlp_large", "dims": 256, "load_before": "1 1 1", "load_after": "2 2 2",
             "date": "2026-12-03 17:59", "commit": "abc1234", "machine": "box, 2 CPUs"}
    (tmp_path / "run.json").write_text(json.dumps(saved))
    monkeypatch.setattr(sys, "argv", ["batching_bench.py", "--report-only", str(tmp_path / "run.json"),
                                      "--out", str(tmp_path / "run.md")])
    assert batching_bench.main() == 0
    text = (tmp_path / "run.md").read_text()
    assert text.startswith("# Dynamic batching on mlp_large, 2026-12-03 17:59")
    assert "commit abc1234; box, 2 CPUs; load average 1 1 1 before, 2 2 2 after" in text
    assert "| 32 | on, 500 µs | 350 | 50.00 | 100.00 | 4.00 | 3.50 | 0.50 |" in text
    assert "| 32 | off | 100 |" in text and "one [1, 256] FP32 row" in text


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

