#!/usr/bin/env python3
"""Dynamic batching benchmark: one model with the dynamic batcher off and on.

    .venv/bin/python perf/batching_bench.py [--model-dir DIR] [--duration 20]
        [--concurrency 1,8,32,64] [--delays 0,500,2000] [--rounds 1] [--out FILE.md]

(or `make bench-batching`, options in BENCH_BATCHING_ARGS; it runs on
mlp_large, which `scripts/make_models.py --mlp-large` writes into
.perf/models). The model is the one in --model-dir (default
model_repo_examples/mlp_fp32): a one-input FP32 model whose config.pbtxt has
`dynamic_batching { }`. It starts one bin/nereid on loopback with a
temporary repository holding copies of that model that differ only in their
dynamic_batching block: `<model>_batch_off` has none, `<model>_batch_<D>us`
has `dynamic_batching { max_queue_delay_microseconds: D }` for each D of
--delays (0 is the example's own `dynamic_batching { }`). The instance
groups are the example's (none: Triton's default, two CPU instances).

For each round, each concurrency N and each copy in turn, N threads each
send one request at a time (one [1, dims] FP32 row, gRPC), first for
--warmup seconds, then for --duration measured seconds. It reports
completed requests per second, the p50 and p99 client-side latency and,
from the server's statistics, the average number of requests per execution:
medians over the rounds, and each batching copy's throughput and p99 as a
ratio to the batcher-off copy's in the same round (median and range over
the rounds). The copies of one round and concurrency run back to back, so
that load which comes and goes on the machine falls on all of them.

The client runs on the same machine as the server and competes with it for
the CPU. To keep its share small each thread sends one prebuilt
ModelInferRequest through tritonclient's generated gRPC stub (tritonclient's
infer() rebuilds the message on every call). A benchmark, not a test: it
asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
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
import threading
import time

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "model_repo_examples" / "mlp_fp32"


def model_name(base: str, delay_us: int | None) -> str:
    return f"{base}_batch_off" if delay_us is None else f"{base}_batch_{delay_us}us"


def input_spec(config_text: str, where: pathlib.Path) -> tuple[str, int]:
    """The name and the (fixed) element count of the model's one FP32 input."""
    block = re.search(r"^input\s*\[(.*?)^\]", config_text, re.S | re.M)
    found = re.findall(r'name:\s*"([^"]+)"\s*data_type:\s*TYPE_FP32\s*dims:\s*\[\s*(\d+)\s*\]',
                       block.group(1) if block else "")
    if len(found) != 1:
        sys.exit(f"{where}: the batching benchmark needs exactly one FP32 input of fixed dims [N]")
    return found[0][0], int(found[0][1])


def build_repo(example: pathlib.Path, repo: pathlib.Path, delays: list[int | None]) -> None:
    text = (example / "config.pbtxt").read_text()
    base = example.name
    if "dynamic_batching { }\n" not in text:
        sys.exit(f"{example}/config.pbtxt has no 'dynamic_batching {{ }}' line for the benchmark to replace")
    for d in delays:
        name = model_name(base, d)
        block = "" if d is None else f"dynamic_batching {{ max_queue_delay_microseconds: {d} }}\n"
        shutil.copytree(example, repo / name)
        cfg = text.replace(f'name: "{base}"', f'name: "{name}"').replace("dynamic_batching { }\n", block)
        (repo / name / "config.pbtxt").write_text(cfg)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_server(binary: str, repo: pathlib.Path, log: pathlib.Path, ort: str | None, models: list[str]):
    http_port, grpc_port = free_ports(2)
    argv = [
        binary,
        f"--model-repository={repo}",
        "--http-address=127.0.0.1",
        f"--http-port={http_port}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc_port}",
        "--allow-metrics=false",
    ]
    if ort:
        argv.append(f"--backend-config=onnxruntime,library={ort}")
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"127.0.0.1:{grpc_port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"nereid exited with status {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with grpcclient.InferenceServerClient(url) as c:
                if all(c.is_model_ready(m) for m in models):
                    return proc, argv, url
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"nereid did not get ready within 60 s:\n{log.read_text()[-3000:]}")


def load(url: str, model: str, concurrency: int, seconds: float, input_name: str = "INPUT0", dims: int = 64):
    """`concurrency` closed-loop clients for `seconds`: (latencies in s, elapsed s)."""
    data = np.random.default_rng(7).standard_normal((1, dims)).astype(np.float32)
    lats: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    start_gate = threading.Barrier(concurrency + 1)
    stop = threading.Event()

    def worker(k: int) -> None:
        channel = grpc.insecure_channel(url)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name=model)
        request.inputs.add(name=input_name, datatype="FP32", shape=[1, dims])
        request.outputs.add(name="OUTPUT0")
        request.raw_input_contents.append(data.tobytes())
        mine = lats[k]
        try:
            start_gate.wait()
            while not stop.is_set():
                t0 = time.perf_counter()
                stub.ModelInfer(request)
                mine.append(time.perf_counter() - t0)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            stop.set()
        finally:
            channel.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return [x for per_thread in lats for x in per_thread], elapsed


def counts(url: str, model: str) -> tuple[int, int]:
    """The model's (inference_count, execution_count)."""
    with grpcclient.InferenceServerClient(url) as c:
        s = c.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))


def spread(values: list[float], threshold: float) -> str:
    """median (min–max) of a few ratios; the median alone for one;
    "unsteady (min–max)" when they disagree by more than threshold percent
    ((max − min) / median), instead of a median that means nothing."""
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.2f}"
    if med and 100 * (max(values) - min(values)) / med > threshold:
        return f"unsteady ({min(values):.2f}–{max(values):.2f})"
    return f"{med:.2f} ({min(values):.2f}–{max(values):.2f})"


def median_rows(rows: list[dict]) -> list[dict]:
    """One row per (concurrency, batcher): medians over the rounds, and the
    per-round ratios to the batcher-off copy of the same round."""
    off = {(r["round"], r["concurrency"]): r for r in rows if r["batcher"] == "off"}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["concurrency"], r["batcher"]), []).append(r)
    out = []
    for (c, batcher), rs in groups.items():
        base = [off.get((r["round"], c)) for r in rs]
        pairs = [(r, b) for r, b in zip(rs, base) if b and b["throughput"] and b["p99_ms"]]
        tput = [r["throughput"] for r in rs]
        out.append({
            "concurrency": c, "batcher": batcher, "rounds": len(rs),
            "throughput": statistics.median(tput),
            "throughput_spread_pct": 100 * (max(tput) - min(tput)) / statistics.median(tput) if len(rs) > 1 else None,
            "p50_ms": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms": statistics.median(r["p99_ms"] for r in rs),
            "per_execution": statistics.median(r["per_execution"] for r in rs),
            "throughput_ratio": [r["throughput"] / b["throughput"] for r, b in pairs],
            "p99_ratio": [r["p99_ms"] / b["p99_ms"] for r, b in pairs],
        })
    return out


def report(args, argv, instances: int, model: str, dims: int, rows: list[dict], load0, load1,
           date: str | None = None, commit: str | None = None, machine: str | None = None) -> str:
    med = median_rows(rows)
    lines = [
        f"# Dynamic batching on {model}, {date or datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
        f"`{' '.join(['perf/batching_bench.py'] + sys.argv[1:])}`; commit {commit or git_head()}; "
        f"{machine or this_machine()}; load average {load0} before, {load1} after.",
        "",
        f"gRPC, one [1, {dims}] FP32 row per request, {args.duration:g} s measured per point after "
        f"{args.warmup:g} s of warm-up, {args.rounds} round(s) (medians shown), {instances} instance(s) per copy. "
        "Ratios: the copy's throughput (p99) over the batcher-off copy's in the same round and concurrency, "
        "median (min–max over the rounds); throughput > 1 and p99 < 1 favour the batcher. A ratio whose rounds "
        f"disagree by more than {args.stability:g} % ((max − min) / median) is marked unsteady instead.",
        "",
        "| concurrency | dynamic batcher | infer/s | p50 ms | p99 ms | requests / execution "
        "| infer/s ÷ off | p99 ÷ off |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in med:
        lines.append(
            f"| {r['concurrency']} | {r['batcher']} | {r['throughput']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['per_execution']:.2f} | "
            + ("–" if r["batcher"] == "off" else spread(r["throughput_ratio"], args.stability)) + " | "
            + ("–" if r["batcher"] == "off" else spread(r["p99_ratio"], args.stability)) + " |")
    if args.rounds > 1:
        lines += ["", "Spread of throughput over the rounds ((max − min) / median):", "",
                  "| concurrency | dynamic batcher | spread |", "|---:|---|---:|"]
        lines += [f"| {r['concurrency']} | {r['batcher']} | {r['throughput_spread_pct']:.0f} % |" for r in med]
    lines += ["", f"Server: `{' '.join(argv)}`", ""]
    return "\n".join(lines)


def this_machine() -> str:
    return f"{platform.node()}, {os.cpu_count()} CPUs"


def git_head() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + (" plus the working tree" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--nereid", default=str(ROOT / "bin" / "nereid"), help="server binary")
    ap.add_argument("--model-dir", default=str(EXAMPLE),
                    help="the model to copy (default model_repo_examples/mlp_fp32)")
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds per point")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each point")
    ap.add_argument("--concurrency", default="1,8,32,64", help="comma-separated client counts")
    ap.add_argument("--delays", default="0,500,2000",
                    help="comma-separated max_queue_delay_microseconds, one batching copy each")
    ap.add_argument("--rounds", type=int, default=1, help="rounds; medians and per-round ratios are reported")
    ap.add_argument("--ort-library", default=os.environ.get("NEREID_ORT_LIBRARY")
                    or str(ROOT / ".ort" / "lib" / "libonnxruntime.so.1"))
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--out", help="also write the report (markdown) to this file")
    ap.add_argument("--stability", type=float, default=20.0,
                    help="percent: ratios whose rounds disagree by more are marked unsteady (default 20)")
    ap.add_argument("--report-only", metavar="JSON", help="only redo the report from a --json file of a run")
    args = ap.parse_args()
    if args.report_only:
        saved = json.loads(pathlib.Path(args.report_only).read_text())
        for k, v in saved["args"].items():
            if k not in ("out", "stability", "report_only", "json"):
                setattr(args, k, v)
        sys.argv = saved.get("command", sys.argv)
        rows = saved["rows"]
        text = report(args, saved["argv"], saved.get("instances", 2), saved.get("model", "?"), saved.get("dims", 0),
                      rows, saved.get("load_before", "?"), saved.get("load_after", "?"), saved.get("date"),
                      saved.get("commit"), saved.get("machine"))
        print(text)
        if args.out:
            pathlib.Path(args.out).write_text(text)
        return 0
    levels = [int(x) for x in args.concurrency.split(",")]
    delays: list[int | None] = [None] + [int(x) for x in args.delays.split(",") if x != ""]
    example = pathlib.Path(args.model_dir).resolve()
    if not (example / "config.pbtxt").exists():
        sys.exit(f"no model in {example}: for mlp_large run `make bench-batching` "
                 "(or scripts/make_models.py --mlp-large .perf/models)")
    input_name, dims = input_spec((example / "config.pbtxt").read_text(), example)
    models = [model_name(example.name, d) for d in delays]
    ort = args.ort_library if pathlib.Path(args.ort_library).exists() else None
    load0 = " ".join(open("/proc/loadavg").read().split()[:3])
    started = datetime.datetime.now()

    rows = []
    with tempfile.TemporaryDirectory(prefix="nereid-batching-") as tmp:
        tmp = pathlib.Path(tmp)
        build_repo(example, tmp / "repo", delays)
        proc, argv, url = start_server(args.nereid, tmp / "repo", tmp / "nereid.log", ort, models)
        try:
            with grpcclient.InferenceServerClient(url) as c:
                groups = {m: c.get_model_config(m, as_json=True)["config"].get("instance_group", []) for m in models}
            instances = {m: sum(int(g.get("count", 1)) for g in gs) for m, gs in groups.items()}
            print(f"server: {' '.join(argv)}", file=sys.stderr)
            print(f"instances: {instances}", file=sys.stderr)
            for rnd in range(1, args.rounds + 1):
                for n in levels:
                    for d, model in zip(delays, models):
                        load(url, model, n, args.warmup, input_name, dims)
                        inf0, exe0 = counts(url, model)
                        lats, elapsed = load(url, model, n, args.duration, input_name, dims)
                        inf1, exe1 = counts(url, model)
                        lat_ms = np.array(lats) * 1e3
                        row = {
                            "round": rnd,
                            "concurrency": n,
                            "batcher": "off" if d is None else f"on, {d} µs",
                            "model": model,
                            "requests": len(lats),
                            "seconds": round(elapsed, 2),
                            "throughput": len(lats) / elapsed,
                            "p50_ms": float(np.percentile(lat_ms, 50)),
                            "p99_ms": float(np.percentile(lat_ms, 99)),
                            "per_execution": (inf1 - inf0) / max(exe1 - exe0, 1),
                        }
                        rows.append(row)
                        print(f"r{rnd} c={n:<3} {row['batcher']:<12} {row['throughput']:8.1f} infer/s  "
                              f"p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
                              f"{row['per_execution']:5.2f} requests/execution", file=sys.stderr)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    load1 = " ".join(open("/proc/loadavg").read().split()[:3])
    date, commit = started.strftime("%Y-%m-%d %H:%M"), git_head()
    text = report(args, argv, instances[models[0]], example.name, dims, rows, load0, load1, date, commit)
    print("\n" + text)
    if args.out:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    if args.json:
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(json.dumps({
            "args": vars(args), "argv": argv, "rows": rows, "command": sys.argv, "instances": instances[models[0]],
            "model": example.name, "dims": dims, "load_before": load0, "load_after": load1, "date": date,
            "commit": commit, "machine": this_machine()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
