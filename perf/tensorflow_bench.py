#!/usr/bin/env python3
"""The TensorFlow backend's cost per request, against TensorFlow itself.

    .venv/bin/python perf/tensorflow_bench.py --tf-python /path/to/python-with-tensorflow \
        [--duration 5] [--rounds 3] [--batches 1,32] [--concurrency 1,4]

On the dense example (model_repo_examples/mlp_savedmodel: 64 -> 512 -> 512
-> 16, ReLU, FP32) it measures, for each batch size (rows per request) and
each concurrency (closed-loop clients, one request at a time each):

- `nereid-tf`: bin/nereid's TensorFlow backend on mlp_savedmodel, gRPC;
- `nereid-onnx`: bin/nereid's ONNX Runtime backend on mlp_fp32, the same
  network and weights as ONNX, gRPC, in the same server;
- `tf-python`: TensorFlow's own Python call of the same SavedModel's
  serving_default signature (tf.saved_model.load, then the concrete
  function on a prepared tf.constant), in a separate process run by
  --tf-python (an interpreter with tensorflow-cpu 2.21.0, the version
  `make tf` installs the library of). It is the ceiling of what TensorFlow
  does here; its threads are set as Nereid sets each instance's (one
  intra-op and one inter-op thread), and each client thread calls the
  function directly.

The three run in turn within a round, --rounds times, so that they see the
same machine; the report takes each one's median over the rounds of
requests per second, rows per second, and p50 / p99 latency, with the
spread (min–max over the rounds) of req/s and p50, the throughput ratios
within each round, and the overhead the server adds: nereid-tf's p50
minus tf-python's. The gRPC
clients send one prebuilt ModelInferRequest through tritonclient's
generated stub (as perf/batching_bench.py does), on the same machine as the
server. The report goes to stdout and, with --out, to a Markdown file. A
benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
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

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from batching_bench import free_ports  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "model_repo_examples"

# The ceiling: runs in --tf-python, reads "batch concurrency seconds" lines
# and answers each with a JSON line of latencies.
CEILING = r'''
import json, os, sys, threading, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
print(json.dumps({"ready": tf.__version__}), flush=True)
for line in sys.stdin:
    batch, conc, seconds = line.split()
    batch, conc, seconds = int(batch), int(conc), float(seconds)
    x = tf.constant(np.random.default_rng(7).standard_normal((batch, 64)).astype(np.float32))
    for _ in range(20):
        fn(INPUT0=x)["OUTPUT0"].numpy()
    lats = [[] for _ in range(conc)]
    stop = threading.Event()
    def work(k):
        mine = lats[k]
        while not stop.is_set():
            t0 = time.perf_counter()
            fn(INPUT0=x)["OUTPUT0"].numpy()
            mine.append(time.perf_counter() - t0)
    ts = [threading.Thread(target=work, args=(k,)) for k in range(conc)]
    t0 = time.perf_counter()
    for t in ts: t.start()
    time.sleep(seconds); stop.set()
    for t in ts: t.join()
    print(json.dumps({"lats": [v for l in lats for v in l], "elapsed": time.perf_counter() - t0}), flush=True)
'''


def start_nereid(binary, repo, log, tf_lib, ort_lib):
    http_port, grpc_port = free_ports(2)
    argv = [binary, f"--model-repository={repo}", "--http-address=127.0.0.1", f"--http-port={http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}", "--allow-metrics=false"]
    if tf_lib:
        argv.append(f"--backend-config=tensorflow,library={tf_lib}")
    if ort_lib:
        argv.append(f"--backend-config=onnxruntime,library={ort_lib}")
    out = open(log, "wb")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"127.0.0.1:{grpc_port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"nereid exited with status {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with grpcclient.InferenceServerClient(url) as c:
                if c.is_model_ready("mlp_savedmodel") and c.is_model_ready("mlp_fp32"):
                    return proc, url
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"nereid did not get ready within 120 s:\n{log.read_text()[-3000:]}")


def grpc_load(url, model, batch, conc, seconds):
    """conc closed-loop gRPC clients for seconds: (latencies, elapsed)."""
    data = np.random.default_rng(7).standard_normal((batch, 64)).astype(np.float32)
    lats = [[] for _ in range(conc)]
    errors = []
    gate = threading.Barrier(conc + 1)
    stop = threading.Event()

    def worker(k):
        channel = grpc.insecure_channel(url)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        req = service_pb2.ModelInferRequest(model_name=model)
        req.inputs.add(name="INPUT0", datatype="FP32", shape=[batch, 64])
        req.outputs.add(name="OUTPUT0")
        req.raw_input_contents.append(data.tobytes())
        for _ in range(20):
            stub.ModelInfer(req)
        mine = lats[k]
        try:
            gate.wait()
            while not stop.is_set():
                t0 = time.perf_counter()
                stub.ModelInfer(req)
                mine.append(time.perf_counter() - t0)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            stop.set()
        finally:
            channel.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conc)]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [x for per in lats for x in per], time.perf_counter() - t0


def summary(lats, elapsed, batch):
    lats = sorted(lats)
    return {
        "rps": len(lats) / elapsed,
        "rows": len(lats) * batch / elapsed,
        "p50_us": lats[len(lats) // 2] * 1e6,
        "p99_us": lats[min(len(lats) - 1, int(len(lats) * 0.99))] * 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--nereid", default=str(ROOT / "bin" / "nereid"))
    ap.add_argument("--tf-library", default=str(ROOT / ".tf" / "lib" / "libtensorflow_cc.so.2"))
    ap.add_argument("--ort-library", default=str(ROOT / ".ort" / "lib" / "libonnxruntime.so.1"))
    ap.add_argument("--tf-python", required=True, help="a Python interpreter with tensorflow-cpu 2.21.0")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()
    batches = [int(x) for x in args.batches.split(",")]
    concs = [int(x) for x in args.concurrency.split(",")]

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="nereid-tf-bench-"))
    repo = tmp / "repo"
    for name in ("mlp_savedmodel", "mlp_fp32"):
        shutil.copytree(EXAMPLES / name, repo / name)
    proc, url = start_nereid(args.nereid, repo, tmp / "nereid.log", args.tf_library, args.ort_library)
    ceiling = subprocess.Popen([args.tf_python, "-c", CEILING, str(EXAMPLES / "mlp_savedmodel" / "1" / "model.savedmodel")],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    tf_version = json.loads(ceiling.stdout.readline())["ready"]
    results: dict[tuple, list[dict]] = {}
    load_start = os.getloadavg()[0]
    try:
        for r in range(args.rounds):
            for batch in batches:
                for conc in concs:
                    for who in ("nereid-tf", "nereid-onnx", "tf-python"):
                        if who == "tf-python":
                            ceiling.stdin.write(f"{batch} {conc} {args.duration}\n")
                            ceiling.stdin.flush()
                            reply = json.loads(ceiling.stdout.readline())
                            lats, elapsed = reply["lats"], reply["elapsed"]
                        else:
                            model = "mlp_savedmodel" if who == "nereid-tf" else "mlp_fp32"
                            lats, elapsed = grpc_load(url, model, batch, conc, args.duration)
                        s = summary(lats, elapsed, batch)
                        results.setdefault((batch, conc, who), []).append(s)
                        print(f"round {r + 1} batch {batch} conc {conc} {who}: {s['rps']:.0f} req/s "
                              f"p50 {s['p50_us']:.0f} us p99 {s['p99_us']:.0f} us", file=sys.stderr, flush=True)
    finally:
        ceiling.stdin.close()
        ceiling.wait(30)
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)

    def med(batch, conc, who, key):
        return statistics.median(x[key] for x in results[(batch, conc, who)])

    def spread(batch, conc, who, key):
        vals = [x[key] for x in results[(batch, conc, who)]]
        return f"{min(vals):.0f}–{max(vals):.0f}"

    def ratios(batch, conc, a, b, key):
        # Round by round: a and b ran minutes apart at most, on the same machine.
        return [x[key] / y[key] for x, y in zip(results[(batch, conc, a)], results[(batch, conc, b)]) if y[key]]

    lines = [
        f"# TensorFlow backend benchmark, {time.strftime('%Y-%m-%d')}",
        "",
        f"`perf/tensorflow_bench.py --duration {args.duration:g} --rounds {args.rounds} --batches {args.batches} "
        f"--concurrency {args.concurrency}` on {platform.node()} ({platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} CPUs), TensorFlow {tf_version}; medians over the rounds.",
        "",
        f"Load average (1 min) at the start and the end: {load_start:.1f}, {os.getloadavg()[0]:.1f}.",
        "",
        "| batch | clients | who | req/s | req/s min–max | rows/s | p50 µs | p50 min–max | p99 µs |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for batch in batches:
        for conc in concs:
            for who in ("tf-python", "nereid-tf", "nereid-onnx"):
                lines.append(f"| {batch} | {conc} | {who} | {med(batch, conc, who, 'rps'):.0f} | "
                             f"{spread(batch, conc, who, 'rps')} | "
                             f"{med(batch, conc, who, 'rows'):.0f} | {med(batch, conc, who, 'p50_us'):.0f} | "
                             f"{spread(batch, conc, who, 'p50_us')} | {med(batch, conc, who, 'p99_us'):.0f} |")
    lines += ["", "Throughput ratios within each round (median, min–max over the rounds):", ""]
    for batch in batches:
        for conc in concs:
            parts = []
            for a, b in (("nereid-tf", "tf-python"), ("nereid-tf", "nereid-onnx")):
                r = ratios(batch, conc, a, b, "rps")
                parts.append(f"{a} / {b} {statistics.median(r):.2f} ({min(r):.2f}–{max(r):.2f})")
            lines.append(f"- batch {batch}, {conc} client(s): " + "; ".join(parts))
    lines += ["", "Overhead of the server over TensorFlow's own call (nereid-tf p50 − tf-python p50):", ""]
    for batch in batches:
        for conc in concs:
            d = med(batch, conc, "nereid-tf", "p50_us") - med(batch, conc, "tf-python", "p50_us")
            lines.append(f"- batch {batch}, {conc} client(s): {d:+.0f} µs per request")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
