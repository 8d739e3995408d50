#!/usr/bin/env python3
"""What traffic routing and shadow mirroring cost the primary.

    .venv/bin/python perf/traffic_bench.py [--rounds 3] [--seconds 10]
        [--threads 4] [--fraction 0.1]

It starts bin/nereid on loopback with --traffic-config over a repository
holding mlp_fp32 as `primary` and as `candidate`, and measures, in turn
within each round: requests for `primary` itself (not routed), for the
route `r` with no shadow, and for the route `r` mirroring --fraction of
its requests to `candidate`. The three configurations are switched by
rewriting the routing file (Nereid re-reads it within a second), so one
server sees the same machine conditions for all. Clients: tritonclient
gRPC, closed loop, --threads threads. It prints, and writes to
perf/results/traffic/<date>.md, throughput and p50 / p99 per case (medians
over rounds) and the ratios against the unrouted case.

A benchmark, not a test: it asserts nothing. The client shares the
machine's cores with the server.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient

from batching_bench import free_ports  # perf/ is on sys.path: this script's folder

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "model_repo_examples"


def make_repo(root: pathlib.Path, intra_op: int | None) -> pathlib.Path:
    src = EXAMPLES / "mlp_fp32"
    cfg = (src / "config.pbtxt").read_text()
    if intra_op is not None:
        cfg += f'parameters {{ key: "intra_op_thread_count" value {{ string_value: "{intra_op}" }} }}\n'
    for name in ("primary", "candidate"):
        shutil.copytree(src, root / name)
        (root / name / "config.pbtxt").write_text(cfg.replace('name: "mlp_fp32"', f'name: "{name}"'))
    return root


def routes(fraction: float | None) -> dict:
    r = {"variants": [{"model": "primary", "weight": 100}]}
    if fraction:
        r["shadow"] = {"model": "candidate", "fraction": fraction, "tolerance": 1e-4}
    return {"routes": {"r": r}}


def write_routes(path: pathlib.Path, body: dict, stamp: float):
    path.write_text(json.dumps(body))
    os.utime(path, (stamp, stamp))


def scrape(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name + "{"))


def measure(url: str, model: str, seconds: float, threads: int, shape) -> tuple[float, list[float]]:
    stop = time.monotonic() + seconds
    lat: list[float] = []
    lock = threading.Lock()
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)

    def client():
        c = grpcclient.InferenceServerClient(url)
        inp = grpcclient.InferInput("INPUT0", list(shape), "FP32")
        inp.set_data_from_numpy(x)
        mine = []
        while time.monotonic() < stop:
            t = time.perf_counter()
            c.infer(model, [inp])
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=client) for _ in range(threads)]
    start = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return len(lat) / (time.monotonic() - start), lat


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far (/proc/PID/stat)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(v: list[float], q: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nereid", default=str(ROOT / "bin" / "nereid"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--intra-op", type=int, default=None,
                    help="intra_op_thread_count of both models (default: ONNX Runtime's, a thread per core)")
    ap.add_argument("--out", default=str(ROOT / "perf" / "results" / "traffic" / f"{datetime.date.today()}.md"))
    a = ap.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="nereid-traffic-"))
    repo = make_repo(work / "repo", a.intra_op)
    cfg = work / "traffic.json"
    stamp = time.time()
    write_routes(cfg, routes(None), stamp)
    http_port, grpc_port, metrics_port = free_ports(3)
    log = work / "nereid.log"
    env = dict(os.environ)
    env.setdefault("NEREID_ORT_LIBRARY", str(ROOT / ".ort" / "lib" / "libonnxruntime.so.1"))
    proc = subprocess.Popen(
        [a.nereid, f"--model-repository={repo}", f"--traffic-config={cfg}", "--http-address=127.0.0.1",
         f"--http-port={http_port}", "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}",
         "--metrics-address=127.0.0.1", f"--metrics-port={metrics_port}"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit(f"server did not start; log {log}")
            time.sleep(0.1)
        meta = json.load(urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/primary"))
        dims = [1] + [int(d) for d in meta["inputs"][0]["shape"][1:]]
        url = f"127.0.0.1:{grpc_port}"
        cases = {"unrouted": ("primary", None), "routed": ("r", None), f"routed, {a.fraction:.0%} shadow": ("r", a.fraction)}
        results: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in cases}
        measure(url, "primary", 2, a.threads, dims)  # warm-up
        shadow_before = scrape(metrics_port, "nereid_traffic_shadow_total")
        for rnd in range(a.rounds):
            for name, (model, fraction) in cases.items():
                stamp += 10
                write_routes(cfg, routes(fraction), stamp)
                time.sleep(1.5)  # the file is re-read within a second
                cpu = cpu_seconds(proc.pid)
                rps, lat = measure(url, model, a.seconds, a.threads, dims)
                # The server's CPU per client request: the primary's and,
                # with a shadow, the mirrored share's.
                cpu_us = (cpu_seconds(proc.pid) - cpu) / max(len(lat), 1) * 1e6
                results[name].append((rps, pct(lat, 0.5), pct(lat, 0.99), cpu_us))
                print(f"round {rnd + 1} {name}: {rps:.0f} req/s, p50 {pct(lat, .5):.2f} ms, p99 {pct(lat, .99):.2f} ms, "
                      f"server CPU {cpu_us:.0f} µs/req", flush=True)
        shadows = scrape(metrics_port, "nereid_traffic_shadow_total") - shadow_before
        outcomes = {o: scrape(metrics_port, f'nereid_traffic_shadow_total{{outcome="{o}"') for o in ()}
        del outcomes
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    base = [statistics.median(x[i] for x in results["unrouted"]) for i in range(4)]
    lines = [
        f"# Traffic routing and shadow mirroring, {datetime.date.today()}", "",
        "```sh", "." + "/".join(["", ".venv", "bin", "python"])[0:] + " perf/traffic_bench.py " + " ".join(sys.argv[1:]), "```", "",
        f"- Revision `{rev}`; machine: {os.cpu_count()} cores, a noisy shared VM; client and server share the cores.",
        f"- Model: mlp_fp32 (ONNX Runtime) as `primary` and `candidate`; input {dims}; gRPC, {a.threads} client threads, "
        f"closed loop; {a.seconds:.0f} s per case, {a.rounds} rounds, the cases in turn within a round; medians over rounds.",
        f"- Mirrored requests compared during the run: {shadows:.0f}. intra_op_thread_count: "
        f"{a.intra_op if a.intra_op is not None else 'ONNX Runtime default'}.", "",
        "| case | req/s | p50 ms | p99 ms | server CPU µs/req | req/s ÷ unrouted | p99 ÷ unrouted | CPU ÷ unrouted |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in cases:
        med = [statistics.median(x[i] for x in results[name]) for i in range(4)]
        lines.append(f"| {name} | {med[0]:.0f} | {med[1]:.2f} | {med[2]:.2f} | {med[3]:.0f} | {med[0] / base[0]:.2f} | "
                     f"{med[2] / base[2]:.2f} | {med[3] / base[3]:.2f} |")
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
