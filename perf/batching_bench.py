#!/usr/bin/env python3
"""Dynamic batching benchmark: mlp_fp32 with the dynamic batcher off and on.

    .venv/bin/python perf/batching_bench.py [--duration 20] [--concurrency 1,8,32] [--delays 0,1000]

(or `make bench-batching`, options in BENCH_BATCHING_ARGS). It starts one
bin/nereid on loopback with a temporary repository holding copies of
model_repo_examples/mlp_fp32 that differ only in their dynamic_batching
block: `mlp_batch_off` has none, `mlp_batch_<D>us` has
`dynamic_batching { max_queue_delay_microseconds: D }` for each D of
--delays (0 is the example's own `dynamic_batching { }`). The instance
groups are the example's (none: Triton's default, two CPU instances).

For each concurrency N, and for each copy in turn, N threads each send one
request at a time (one [1, 64] FP32 row, gRPC), first for --warmup seconds,
then for --duration measured seconds. It reports completed requests per
second, the p50 and p99 client-side latency and, from the server's
statistics, the average number of requests per execution.

The client runs on the same machine as the server and competes with it for
the CPU. To keep its share small each thread sends one prebuilt
ModelInferRequest through tritonclient's generated gRPC stub (tritonclient's
infer() rebuilds the message on every call). A benchmark, not a test: it
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import socket
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


def model_name(delay_us: int | None) -> str:
    return "mlp_batch_off" if delay_us is None else f"mlp_batch_{delay_us}us"


def build_repo(repo: pathlib.Path, delays: list[int | None]) -> None:
    text = (EXAMPLE / "config.pbtxt").read_text()
    if "dynamic_batching { }\n" not in text:
        sys.exit(f"{EXAMPLE}/config.pbtxt no longer has 'dynamic_batching {{ }}': update {__file__}")
    for d in delays:
        name = model_name(d)
        block = "" if d is None else f"dynamic_batching {{ max_queue_delay_microseconds: {d} }}\n"
        shutil.copytree(EXAMPLE, repo / name)
        cfg = text.replace('name: "mlp_fp32"', f'name: "{name}"').replace("dynamic_batching { }\n", block)
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


def load(url: str, model: str, concurrency: int, seconds: float):
    """`concurrency` closed-loop clients for `seconds`: (latencies in s, elapsed s)."""
    data = np.random.default_rng(7).standard_normal((1, 64)).astype(np.float32)
    lats: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    start_gate = threading.Barrier(concurrency + 1)
    stop = threading.Event()

    def worker(k: int) -> None:
        channel = grpc.insecure_channel(url)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name=model)
        request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 64])
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--nereid", default=str(ROOT / "bin" / "nereid"), help="server binary")
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds per point")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each point")
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    ap.add_argument("--delays", default="0,1000",
                    help="comma-separated max_queue_delay_microseconds, one batching copy each")
    ap.add_argument("--ort-library", default=os.environ.get("NEREID_ORT_LIBRARY")
                    or str(ROOT / ".ort" / "lib" / "libonnxruntime.so.1"))
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    delays: list[int | None] = [None] + [int(x) for x in args.delays.split(",") if x != ""]
    models = [model_name(d) for d in delays]
    ort = args.ort_library if pathlib.Path(args.ort_library).exists() else None

    rows = []
    with tempfile.TemporaryDirectory(prefix="nereid-batching-") as tmp:
        tmp = pathlib.Path(tmp)
        build_repo(tmp / "repo", delays)
        proc, argv, url = start_server(args.nereid, tmp / "repo", tmp / "nereid.log", ort, models)
        try:
            with grpcclient.InferenceServerClient(url) as c:
                groups = {m: c.get_model_config(m, as_json=True)["config"].get("instance_group", []) for m in models}
            instances = {m: sum(int(g.get("count", 1)) for g in gs) for m, gs in groups.items()}
            print(f"server: {' '.join(argv)}", file=sys.stderr)
            print(f"instances: {instances}", file=sys.stderr)
            for n in levels:
                for d, model in zip(delays, models):
                    load(url, model, n, args.warmup)
                    inf0, exe0 = counts(url, model)
                    lats, elapsed = load(url, model, n, args.duration)
                    inf1, exe1 = counts(url, model)
                    lat_ms = np.array(lats) * 1e3
                    row = {
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
                    print(f"c={n:<3} {row['batcher']:<12} {row['throughput']:8.1f} infer/s  "
                          f"p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
                          f"{row['per_execution']:5.2f} requests/execution", file=sys.stderr)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    print(f"\nmlp_fp32 over gRPC, {args.duration:g} s per point after {args.warmup:g} s of warm-up, "
          f"{instances[models[0]]} instances per copy; {platform.node()}, {os.cpu_count()} CPUs\n")
    print("| concurrency | dynamic batcher | infer/s | p50 ms | p99 ms | requests / execution |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['batcher']} | {r['throughput']:.0f} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['per_execution']:.2f} |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"args": vars(args), "argv": argv, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
