#!/usr/bin/env python3
"""The Python backend's per-request overhead, against the ONNX identity.

    .venv/bin/python perf/python_bench.py [--rounds 3] [--window 4000]
        [--sizes 4,16384,1048576] [--concurrency 1,16] [--triton]

(or `make bench-python`). It starts bin/nereid on loopback serving
`identity_python` (model_repo_examples, Python backend) and `identity_fp32`
(the same tensors, ONNX Runtime). With --triton it also starts the real
Triton that scripts/install-triton.sh installs, on other ports, serving the
same `identity_python` directory with Triton's own Python backend. perf_analyzer (perf/perf_analyzer) then measures each
(server, model) pair over gRPC for every FP32 input size (elements; 4 is
16 B, 16384 is 64 KiB, 1048576 is 4 MiB) and concurrency, the pairs in
turn within a round and --rounds rounds, so the servers see the same
machine conditions. It prints, and writes to perf/results/python/<date>.md:
throughput and p50 latency per case (the median over rounds), the latency
Python adds over the ONNX identity, the throughput ratio, and Nereid's
Python against Triton's.

A benchmark, not a test: it asserts nothing. The client runs on the same
machine as the servers and shares its cores.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from batching_bench import free_ports  # perf/ is on sys.path: this script's folder

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "peers"))
import triton_launcher  # noqa: E402 - perf/peers, the Triton launcher perf/run uses too

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "model_repo_examples"
PA = ROOT / "perf" / "perf_analyzer"


def wait_ready(http_port: int, models: list[str], proc: subprocess.Popen, log: pathlib.Path, timeout=120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}; log {log}:\n{log.read_text()[-3000:]}")
        try:
            ok = all(
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/{m}/ready", timeout=1).status == 200
                for m in models
            )
            if ok:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"server not ready after {timeout} s; log {log}")


def rss_kb(pid: int) -> int:
    """RSS of a process and all its descendants (the stubs), in KiB."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in pathlib.Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for t in pathlib.Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (t / "children").read_text().split()]
        except OSError:
            pass
    return total


def start_nereid(tmp: pathlib.Path):
    repo = tmp / "nereid_repo"
    for m in ("identity_python", "identity_fp32"):
        shutil.copytree(EXAMPLES / m, repo / m)
    http, grpc, metrics = free_ports(3)
    log = tmp / "nereid.log"
    argv = [
        str(ROOT / "bin" / "nereid"), f"--model-repository={repo}",
        "--http-address=127.0.0.1", f"--http-port={http}", "--grpc-address=127.0.0.1", f"--grpc-port={grpc}",
        f"--metrics-port={metrics}", f"--backend-config=python,python-executable={sys.executable}",
    ]
    env = dict(os.environ, NEREID_ORT_LIBRARY=str(ROOT / ".ort" / "lib" / "libonnxruntime.so.1"))
    proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    ready = wait_ready(http, ["identity_python", "identity_fp32"], proc, log)
    return proc, grpc, ready


def start_triton(tmp: pathlib.Path):
    try:
        env = triton_launcher.environment()
    except triton_launcher.NotInstalled as e:
        sys.exit(f"no Triton: {e} (or leave out --triton)")
    repo = tmp / "triton_repo"
    shutil.copytree(EXAMPLES / "identity_python", repo / "identity_python")
    http, grpc, metrics = free_ports(3)
    log = tmp / "triton.log"
    argv = triton_launcher.command(env, repo, http, grpc, metrics, f"bench{os.getpid()}")
    proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    ready = wait_ready(http, ["identity_python"], proc, log)
    return proc, grpc, ready


def measure(grpc_port: int, model: str, elements: int, concurrency: int, window_ms: int, tmp: pathlib.Path):
    out = tmp / f"pa_{grpc_port}_{model}_{elements}_{concurrency}.csv"
    argv = [
        str(PA), "-m", model, "-i", "grpc", "-u", f"127.0.0.1:{grpc_port}", "-b", "1",
        "--shape", f"INPUT0:{elements}", "--concurrency-range", str(concurrency),
        "--measurement-interval", str(window_ms), "--stability-percentage", "50", "--max-trials", "8",
        "-f", str(out),
    ]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if res.returncode != 0 or not out.exists():
        (tmp / f"pa_{grpc_port}_{model}_{elements}_{concurrency}.log").write_text(res.stdout + res.stderr)
        return None
    row = next(csv.DictReader(out.open()))
    return float(row["Inferences/Second"]), float(row["p50 latency"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=int, default=4000, help="perf_analyzer measurement interval, ms")
    ap.add_argument("--sizes", default="4,16384,1048576")
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--triton", action="store_true",
                    help="also measure the Triton that scripts/install-triton.sh installs, as a peer")
    ap.add_argument("--out", type=pathlib.Path, help="report path (default perf/results/python/<date>.md)")
    args = ap.parse_args()
    if not PA.exists():
        sys.exit("perf_analyzer is missing: run perf/setup pa")
    sizes = [int(s) for s in args.sizes.split(",")]
    concs = [int(c) for c in args.concurrency.split(",")]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="python-bench-"))
    servers = {}
    procs = []
    try:
        p, port, ready = start_nereid(tmp)
        procs.append(p)
        servers["nereid"] = (p, port, ready, ["identity_python", "identity_fp32"])
        if args.triton:
            p, port, ready = start_triton(tmp)
            procs.append(p)
            servers["triton"] = (p, port, ready, ["identity_python"])
        idle = {name: rss_kb(s[0].pid) for name, s in servers.items()}
        results: dict[tuple, list] = {}
        for r in range(args.rounds):
            for elements in sizes:
                for c in concs:
                    for name, (_, port, _, models) in servers.items():
                        for model in models:
                            m = measure(port, model, elements, c, args.window, tmp)
                            key = (name, model, elements, c)
                            if m:
                                results.setdefault(key, []).append(m)
                            print(f"round {r + 1} {name:7s} {model:16s} {elements * 4:>8d} B c={c:<3d} "
                                  + (f"{m[0]:9.1f}/s p50 {m[1]:9.0f} us" if m else "failed"), flush=True)
        peak = {name: rss_kb(s[0].pid) for name, s in servers.items()}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()

    def med(key, i):
        v = results.get(key)
        return statistics.median(x[i] for x in v) if v else float("nan")

    lines = [
        f"# Python backend overhead, {datetime.date.today()}",
        "",
        f"`{' '.join(['.venv/bin/python', 'perf/python_bench.py'] + sys.argv[1:])}` — {args.rounds} rounds, "
        f"perf_analyzer gRPC, `-b 1`, {args.window} ms windows, medians over rounds; "
        f"{os.cpu_count()} cores shared by client and servers.",
        "",
        "| server | ready in | RSS idle (with stubs) | RSS after |",
        "|---|---|---|---|",
    ]
    for name, (_, _, ready, _) in servers.items():
        lines.append(f"| {name} | {ready:.2f} s | {idle[name] / 1024:.0f} MiB | {peak[name] / 1024:.0f} MiB |")
    lines += [
        "",
        "| input | c | ONNX identity /s | Python /s | ratio | ONNX p50 µs | Python p50 µs | added µs |"
        + (" Triton Python /s | Nereid ÷ Triton | Triton p50 µs |" if "triton" in servers else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|---|---|" if "triton" in servers else ""),
    ]
    for elements in sizes:
        for c in concs:
            o_t, o_l = med(("nereid", "identity_fp32", elements, c), 0), med(("nereid", "identity_fp32", elements, c), 1)
            p_t, p_l = med(("nereid", "identity_python", elements, c), 0), med(("nereid", "identity_python", elements, c), 1)
            row = (f"| {elements * 4} B | {c} | {o_t:.0f} | {p_t:.0f} | {p_t / o_t:.2f} | {o_l:.0f} | {p_l:.0f} | "
                   f"{p_l - o_l:.0f} |")
            if "triton" in servers:
                t_t, t_l = med(("triton", "identity_python", elements, c), 0), med(("triton", "identity_python", elements, c), 1)
                row += f" {t_t:.0f} | {p_t / t_t:.2f} | {t_l:.0f} |"
            lines.append(row)
    report = "\n".join(lines) + "\n"
    print()
    print(report)
    out = args.out or ROOT / "perf" / "results" / "python" / f"{datetime.date.today()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"written to {out}")
    if any(len(v) < args.rounds for v in results.values()) or len(results) < len(sizes) * len(concs) * sum(
        len(s[3]) for s in servers.values()
    ):
        print(f"some measurements failed: logs in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
