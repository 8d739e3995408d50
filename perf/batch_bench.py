#!/usr/bin/env python3
"""Batch transform benchmark: `nereid batch` on mlp_fp32 against a client loop.

    .venv/bin/python perf/batch_bench.py [--records 20000] [--rounds 3] [--concurrency 4]

It writes a JSONL data set of --records mlp_fp32 records (64 FP32 values
each, one a line, as `nereid batch` reads them), starts one bin/nereid on
loopback serving mlp_fp32, and then, --rounds times, runs every mode below
on the whole data set, the modes' order rotated from round to round so that
none always runs first (interleaved: the machine's load falls on all):

  batch in process          nereid batch --model-repository=... (no network hop;
                            --batch-size default: 64 records a request)
  batch in process, b=1     the same with --batch-size=1
  batch by URL              nereid batch --url against the server (64 a request)
  batch by URL, b=1         the same with --batch-size=1
  client loop, HTTP         --concurrency processes, each with one keep-alive
                            connection, send their share of the records one
                            request each to the real-time endpoint
                            (POST /v2/models/mlp_fp32/infer, the record's line
                            as the JSON data of INPUT0), and write each response's
                            outputs as a line of their output file

Every mode has --concurrency requests in flight and writes one output line
per record; the outputs are counted. Records/s is over the job's own time
(`nereid batch`'s summary: from reading the model's configuration to the
last shard written; for the loop, from its start to its last line) and over
the command's wall time (with the process start, and for in process the
model load). A benchmark, not a test: it asserts nothing but the line
counts. It prints a Markdown report, and with --report writes it to a file.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import multiprocessing
import os
import pathlib
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "model_repo_examples" / "mlp_fp32"

MODES = ["batch in process", "batch in process, b=1", "batch by URL", "batch by URL, b=1", "client loop, HTTP"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary: str, repo: pathlib.Path, log: pathlib.Path, ort: str | None):
    port = free_port()
    argv = [binary, f"--model-repository={repo}", "--http-address=127.0.0.1", f"--http-port={port}",
            "--allow-grpc=false", "--allow-metrics=false", "--log-info=false"]
    if ort:
        argv.append(f"--backend-config=onnxruntime,library={ort}")
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"nereid exited with status {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/v2/models/mlp_fp32/ready")
            if c.getresponse().status == 200:
                return proc, argv, port
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"nereid did not get ready within 60 s:\n{log.read_text()[-3000:]}")


SUMMARY = re.compile(r"batch: (\d+) records, (\d+) errors in (\S+) \(")
UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6}


def go_duration(text: str) -> float:
    """Seconds of a Go duration's text ("1m2.5s", "682ms")."""
    return sum(float(v) * UNITS[u] for v, u in re.findall(r"([\d.]+)(ms|µs|h|m|s)", text))


def run_batch(binary: str, args: list[str], out: pathlib.Path, ort: str | None) -> tuple[float, float, int]:
    """Runs nereid batch: (job seconds, wall seconds, output lines)."""
    shutil.rmtree(out, ignore_errors=True)
    argv = [binary, "batch", *args, f"--output={out}"]
    if ort and "--url" not in " ".join(args):
        argv.append(f"--backend-config=onnxruntime,library={ort}")
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(argv)}: exit {p.returncode}\n{p.stderr[-3000:]}")
    m = SUMMARY.search(p.stderr)
    if not m:
        sys.exit(f"no summary in:\n{p.stderr[-3000:]}")
    job = go_duration(m.group(3))
    lines = sum(1 for f in out.glob("*.out.jsonl") for _ in f.open())
    return job, wall, lines


def loop_worker(port: int, lines: list[str], out: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}
    with open(out, "w") as f:
        for n, line in enumerate(lines, 1):
            body = '{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,64],"data":' + line.strip() + "}]}"
            conn.request("POST", "/v2/models/mlp_fp32/infer", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{resp.status}: {data[:200]!r}")
            outputs = json.loads(data)["outputs"]
            f.write(json.dumps({"line": n, "outputs": outputs}) + "\n")
    conn.close()


def run_loop(port: int, data: pathlib.Path, out: pathlib.Path, workers: int) -> tuple[float, float, int]:
    """The client loop: (seconds, seconds, output lines)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    t0 = time.perf_counter()
    lines = data.read_text().splitlines()
    share = -(-len(lines) // workers)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=loop_worker, args=(port, lines[k * share:(k + 1) * share], str(out / f"part{k}.jsonl")))
             for k in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            sys.exit(f"a client loop worker exited with status {p.exitcode}")
    wall = time.perf_counter() - t0
    n = sum(1 for f in out.glob("part*.jsonl") for _ in f.open())
    return wall, wall, n


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return rev + (" plus the working tree" if dirty else "")
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--nereid", default=str(ROOT / "bin" / "nereid"), help="the nereid binary")
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4, help="--max-concurrency of nereid batch; processes of the loop")
    ap.add_argument("--ort-library", default=os.environ.get("NEREID_ORT_LIBRARY")
                    or str(ROOT / ".ort" / "lib" / "libonnxruntime.so.1"))
    ap.add_argument("--report", help="also write the Markdown report to this file")
    args = ap.parse_args()
    ort = args.ort_library if pathlib.Path(args.ort_library).exists() else None

    started = datetime.datetime.now()
    load_before = os.getloadavg()
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="nereid-batch-bench-") as tmp:
        tmp = pathlib.Path(tmp)
        repo = tmp / "repo"
        repo.mkdir()
        shutil.copytree(EXAMPLE, repo / "mlp_fp32")
        data = tmp / "mlp.jsonl"
        rng = np.random.default_rng(1)
        with data.open("w") as f:
            for row in rng.standard_normal((args.records, 64), dtype=np.float32):
                f.write(json.dumps([round(float(v), 6) for v in row]) + "\n")
        proc, server_argv, port = start_server(args.nereid, repo, tmp / "nereid.log", ort)
        url = f"http://127.0.0.1:{port}"
        common = ["--model=mlp_fp32", f"--input={data}", f"--max-concurrency={args.concurrency}"]
        inproc = [f"--model-repository={repo}"]
        runs = {
            "batch in process": lambda: run_batch(args.nereid, common + inproc, tmp / "o", ort),
            "batch in process, b=1": lambda: run_batch(args.nereid, common + inproc + ["--batch-size=1"], tmp / "o", ort),
            "batch by URL": lambda: run_batch(args.nereid, common + [f"--url={url}"], tmp / "o", ort),
            "batch by URL, b=1": lambda: run_batch(args.nereid, common + [f"--url={url}", "--batch-size=1"], tmp / "o", ort),
            "client loop, HTTP": lambda: run_loop(port, data, tmp / "o", args.concurrency),
        }
        try:
            for r in range(args.rounds):
                order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
                for mode in order:
                    job, wall, lines = runs[mode]()
                    if lines != args.records:
                        sys.exit(f"{mode}: {lines} output lines for {args.records} records")
                    results[mode].append((job, wall))
                    print(f"round {r + 1} {mode:<24} {args.records / job:8.0f} records/s (job)  "
                          f"{args.records / wall:8.0f} records/s (wall)", file=sys.stderr)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    load_after = os.getloadavg()

    loop = statistics.median(args.records / j for j, _ in results["client loop, HTTP"])
    report = [
        f"# nereid batch on mlp_fp32, {started:%Y-%m-%d %H:%M}",
        "",
        f"`perf/batch_bench.py --records {args.records} --rounds {args.rounds} --concurrency {args.concurrency}`; "
        f"commit {git_rev()}; {platform.node()}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        "",
        f"{args.records} records of 64 FP32 values; {args.concurrency} requests in flight in every mode. "
        "Median of the rounds (min–max); job = the job's own time, wall = the command's.",
        "",
        "| mode | records/s (job) | min–max | records/s (wall) | vs. client loop |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        job = [args.records / j for j, _ in results[mode]]
        wall = [args.records / w for _, w in results[mode]]
        report.append(f"| {mode} | {statistics.median(job):.0f} | {min(job):.0f}–{max(job):.0f} | "
                      f"{statistics.median(wall):.0f} | {statistics.median(job) / loop:.2f}× |")
    report += ["", "Per round (records/s, job):", "", "| mode | " + " | ".join(f"round {r + 1}" for r in range(args.rounds)) + " |",
               "|---|" + "---:|" * args.rounds]
    for mode in MODES:
        report.append(f"| {mode} | " + " | ".join(f"{args.records / j:.0f}" for j, _ in results[mode]) + " |")
    report += ["", f"Server: `{' '.join(server_argv)}`", ""]
    text = "\n".join(report)
    print(text)
    if args.report:
        pathlib.Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.report).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
