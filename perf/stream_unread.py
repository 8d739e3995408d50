#!/usr/bin/env python3
"""A gRPC stream whose client sends 100,000 requests and reads nothing:
Nereid's memory must stay bounded (perf/streaming.md reports the figure).

Usage: .venv/bin/python perf/stream_unread.py [--requests N] [--model M] [--seconds S]

Starts bin/nereid on loopback ports over model_repo_examples, opens one
ModelStreamInfer stream with the raw gRPC stub, and has a thread send the
requests as fast as gRPC's flow control lets it while nobody reads the
responses. It samples the server's resident memory (VmRSS) for S seconds,
then reads every response, and prints the RSS before, the peak while
unread, the number of requests the client got onto the wire, and the
number of responses finally read.
"""

import argparse
import os
import pathlib
import queue
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def request(model, i):
    req = service_pb2.ModelInferRequest(model_name=model, id=str(i))
    if model == "square_int32":
        t = req.inputs.add(name="IN", datatype="INT32", shape=[1])
        req.raw_input_contents.append(np.array([1], dtype=np.int32).tobytes())
    else:  # identity_fp32
        t = req.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
        req.raw_input_contents.append(np.arange(16, dtype=np.float32).tobytes())
    del t
    return req


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--model", default="square_int32", choices=["square_int32", "identity_fp32"])
    p.add_argument("--seconds", type=float, default=15)
    args = p.parse_args()

    http_port, grpc_port = free_port(), free_port()
    env = dict(os.environ, NEREID_ORT_LIBRARY=str(ROOT / ".ort/lib/libonnxruntime.so.1"))
    srv = subprocess.Popen(
        [str(ROOT / "bin/nereid"), f"--model-repository={ROOT / 'model_repo_examples'}",
         "--http-address=127.0.0.1", f"--http-port={http_port}", "--grpc-address=127.0.0.1",
         f"--grpc-port={grpc_port}", "--allow-metrics=false", "--log-info=false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        time.sleep(0.5)
        before = rss_kib(srv.pid)

        sent = 0

        def requests():
            nonlocal sent
            for i in range(args.requests):
                yield request(args.model, i)
                sent += 1

        responses = stub.ModelStreamInfer(requests())
        peak, t0 = before, time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            peak = max(peak, rss_kib(srv.pid))
            time.sleep(0.25)
        sent_unread = sent
        got = 0
        done = queue.Queue()

        def drain():
            nonlocal got
            for r in responses:
                if r.error_message:
                    print("error:", r.error_message, file=sys.stderr)
                got += 1
                if got == args.requests:
                    break
            done.put(True)

        threading.Thread(target=drain, daemon=True).start()
        while done.empty():
            peak = max(peak, rss_kib(srv.pid))
            time.sleep(0.25)
        after = rss_kib(srv.pid)
        channel.close()
        print(f"model {args.model}: RSS before {before / 1024:.1f} MiB, peak while unread "
              f"{peak / 1024:.1f} MiB, after draining {after / 1024:.1f} MiB")
        print(f"requests on the wire before the client read: {sent_unread} of {args.requests}; "
              f"responses read: {got}")
    finally:
        srv.terminate()
        srv.wait(timeout=30)


if __name__ == "__main__":
    main()
