#!/usr/bin/env python3
"""Asynchronous inference: accepted requests per second and end-to-end latency, 1 KiB and 100 MiB.

    .venv/bin/python perf/async_bench.py [--quick] [--nereid bin/nereid] [--out FILE]
        [--seconds 10] [--concurrency 1,4,16] [--small-iters 300] [--large-iters 5]

(perf/async.md explains the figures). It starts one bin/nereid with
--allow-async=true on a fresh --async-dir serving `ident` (the identity
backend, FP32 [-1], no batching: no model compute, so what is measured is
the async machinery and the bytes) and, in the same process as the
clients, a webhook receiver: completion is taken from the notification,
not from polling. Bodies are binary tensor data (Inference-Header-Content-
Length), the output asked as binary data.

  latency     one client, one request at a time: submit (until 202),
              submit -> webhook (queued, run, stored, notified), submit ->
              result fetched; the server's own created / started / finished
              times split the middle part; the same payload on the real-time
              /v2/models/ident/infer of the HTTP port is the baseline
  throughput  N client threads submit back to back for --seconds (1 KiB),
              or a fixed number of requests (100 MiB): accepted/s, submit
              latency, and how fast the queue drains (completions/s), with
              --async-max-concurrent-invocations 1 and 4

A fsync of 4 KiB on the --async-dir's disk is timed too: it is what a
small request's durability costs. A benchmark, not a test: it asserts
nothing. Client and server share the machine's cores. The report goes to
perf/results/async/<date>.md (<date>-quick with --quick).
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import http.server
import json
import os
import pathlib
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
KIB, MIB = 1 << 10, 1 << 20


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def body_for(size):
    """A binary v2 request of `size` bytes of FP32 data, and its JSON length."""
    n = size // 4
    header = json.dumps({
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [n], "parameters": {"binary_data_size": 4 * n}}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
    }).encode()
    data = (bytes(range(256)) * (4 * n // 256 + 1))[: 4 * n]
    return header + data, len(header)


class Hooks(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self):
        self.arrived = {}
        self.cond = threading.Condition()
        super().__init__(("127.0.0.1", 0), HookHandler)

    def wait(self, rid, timeout=600):
        with self.cond:
            if not self.cond.wait_for(lambda: rid in self.arrived, timeout):
                raise TimeoutError(f"no notification for {rid}")
            return self.arrived[rid]

    def count(self):
        with self.cond:
            return len(self.arrived)


class HookHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        now = time.monotonic()
        with self.server.cond:
            self.server.arrived[body["id"]] = (now, body["status"])
            self.server.cond.notify_all()
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Conn:
    """A keep-alive connection; reconnects once when the server closed it."""

    def __init__(self, port):
        self.port = port
        self.c = None

    def req(self, method, path, body=None, headers=None):
        for attempt in range(2):
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            try:
                self.c.request(method, path, body=body, headers=headers or {})
                r = self.c.getresponse()
                return r.status, r.getheaders(), r.read()
            except (ConnectionError, http.client.HTTPException):
                self.c.close()
                self.c = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def ms(x):
    return f"{x * 1000:.1f}"


def parse_time(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class Server:
    def __init__(self, args, work, concurrent):
        self.work = work
        repo = work / "repo"
        (repo / "ident" / "1").mkdir(parents=True, exist_ok=True)
        (repo / "ident" / "config.pbtxt").write_text(
            'name: "ident"\nbackend: "identity"\nmax_batch_size: 0\n'
            'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
            'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n')
        self.adir = work / f"async-{concurrent}"
        shutil.rmtree(self.adir, ignore_errors=True)
        self.http_port, self.async_port = free_ports(2)
        self.log = open(work / f"nereid-{concurrent}.log", "wb")
        argv = [args.nereid, f"--model-repository={repo}", "--http-address=127.0.0.1", f"--http-port={self.http_port}",
                "--allow-grpc=false", "--allow-metrics=false", "--allow-async=true", f"--async-port={self.async_port}",
                f"--async-dir={self.adir}", "--async-max-queue=1000000", f"--async-max-concurrent-invocations={concurrent}",
                f"--http-max-input-size={256 * MIB}", "--log-info=false"]
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if Conn(self.http_port).req("GET", "/v2/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("nereid did not start: see " + str(work))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()
        shutil.rmtree(self.adir, ignore_errors=True)


def submit(conn, body, hdr_len, hook_url):
    st, _, out = conn.req("POST", "/v2/models/ident/infer", body,
                          {"Inference-Header-Content-Length": str(hdr_len), "X-Nereid-Notify-Url": hook_url,
                           "Content-Length": str(len(body))})
    if st != 202:
        raise RuntimeError(f"submit: {st} {out[:200]!r}")
    return json.loads(out)["id"]


def latency(server, hooks, size, iters):
    body, hdr_len = body_for(size)
    conn = Conn(server.async_port)
    rows = []
    for _ in range(iters):
        t0 = time.monotonic()
        rid = submit(conn, body, hdr_len, hooks.url)
        t1 = time.monotonic()
        t2, status = hooks.wait(rid)
        st, headers, out = conn.req("GET", f"/v2/async/results/{rid}")
        t3 = time.monotonic()
        if st != 200 or status != "done" or len(out) < size:
            raise RuntimeError(f"result: {st} {status} {len(out)}")
        _, _, meta = conn.req("GET", f"/v2/async/requests/{rid}")
        m = json.loads(meta)
        created, started, finished = (parse_time(m[k]) for k in ("created", "started", "finished"))
        rows.append({"submit": t1 - t0, "notified": t2 - t0, "fetched": t3 - t0, "fetch": t3 - t2,
                     "wait": started - created, "run": finished - started})
        conn.req("DELETE", f"/v2/async/requests/{rid}")
    rt = Conn(server.http_port)
    real = []
    for _ in range(iters):
        t0 = time.monotonic()
        st, _, out = rt.req("POST", "/v2/models/ident/infer", body,
                            {"Inference-Header-Content-Length": str(hdr_len), "Content-Length": str(len(body))})
        real.append(time.monotonic() - t0)
        if st != 200:
            raise RuntimeError(f"real-time: {st} {out[:200]!r}")
    return rows, real


def throughput(server, hooks, size, threads, seconds=None, count=None):
    body, hdr_len = body_for(size)
    lat, lock = [], threading.Lock()
    stop = threading.Event()
    done_before = hooks.count()
    per_thread = None if count is None else max(1, count // threads)

    def client():
        conn = Conn(server.async_port)
        mine = []
        n = 0
        while not stop.is_set() and (per_thread is None or n < per_thread):
            t0 = time.monotonic()
            submit(conn, body, hdr_len, hooks.url)
            mine.append(time.monotonic() - t0)
            n += 1
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=client) for _ in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    if seconds is not None:
        time.sleep(seconds)
        stop.set()
    for t in ts:
        t.join()
    took = time.monotonic() - t0
    accepted = len(lat)
    completed_in_window = hooks.count() - done_before
    # Let the queue drain, and time it.
    target = done_before + accepted
    with hooks.cond:
        hooks.cond.wait_for(lambda: len(hooks.arrived) >= target, 3600)
    drained = time.monotonic() - t0
    return {"threads": threads, "accepted": accepted, "seconds": took, "rate": accepted / took,
            "p50": pct(lat, 50), "p99": pct(lat, 99), "completed_in_window": completed_in_window,
            "drain_rate": accepted / drained, "drained": drained}


def fsync_cost(directory):
    path = pathlib.Path(directory) / "fsync-probe"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        t0 = time.monotonic()
        for _ in range(100):
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
        return (time.monotonic() - t0) / 100
    finally:
        os.close(fd)
        path.unlink()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nereid", default=os.environ.get("NEREID_BIN", str(ROOT / "bin" / "nereid")))
    ap.add_argument("--quick", action="store_true", help="3 s windows, fewer iterations")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--small-iters", type=int, default=300)
    ap.add_argument("--large-iters", type=int, default=5)
    ap.add_argument("--work", help="work folder: the repository, the --async-dir and the logs (default: a temporary one)")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.small_iters, args.large_iters = 3, 50, 2
    threads = [int(x) for x in args.concurrency.split(",")]
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="async-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    hooks = Hooks()
    hooks.url = f"http://127.0.0.1:{hooks.server_address[1]}/notify"
    threading.Thread(target=hooks.serve_forever, daemon=True).start()

    report = []
    out = lambda s="": report.append(s)  # noqa: E731
    date = datetime.date.today().isoformat()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip() != ""
    out(f"# Asynchronous inference — {date}{' (quick)' if args.quick else ''}")
    out()
    out(f"Commit {commit}{' (modified tree)' if dirty else ''}; {platform.node()}, {os.cpu_count()} CPUs, "
        f"{platform.platform()}; `{' '.join([pathlib.Path(sys.executable).name, *sys.argv])}`.")
    out(f"fsync of 4 KiB on the work disk: {ms(fsync_cost(work))} ms; load average at the start "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1 / 5 / 15 min).")
    out()

    server = Server(args, work, 1)
    try:
        out("## Latency, one request at a time (ms)")
        out()
        out("| payload | submit p50 | submit → notified p50 / p99 | queued (server) p50 | run + store (server) p50 | "
            "fetch p50 | submit → fetched p50 / p99 | real-time /infer p50 / p99 |")
        out("|---|---|---|---|---|---|---|---|")
        for label, size, iters in (("1 KiB", KIB, args.small_iters), ("100 MiB", 100 * MIB, args.large_iters)):
            rows, real = latency(server, hooks, size, iters)
            col = lambda k: [r[k] for r in rows]  # noqa: E731
            out(f"| {label} ({iters}×) | {ms(pct(col('submit'), 50))} | {ms(pct(col('notified'), 50))} / "
                f"{ms(pct(col('notified'), 99))} | {ms(pct(col('wait'), 50))} | {ms(pct(col('run'), 50))} | "
                f"{ms(pct(col('fetch'), 50))} | {ms(pct(col('fetched'), 50))} / {ms(pct(col('fetched'), 99))} | "
                f"{ms(pct(real, 50))} / {ms(pct(real, 99))} |")
            print(report[-1], flush=True)
        out()
    finally:
        server.stop()

    out("## Throughput (accepted requests per second)")
    out()
    out("| payload | max concurrent invocations | client threads | accepted | accepted/s | submit p50 / p99 ms | "
        "completed in the window | queue drained at (requests/s, submit to last outcome) |")
    out("|---|---|---|---|---|---|---|---|")
    for concurrent in (1, 4):
        server = Server(args, work, concurrent)
        try:
            for n in threads:
                r = throughput(server, hooks, KIB, n, seconds=args.seconds)
                out(f"| 1 KiB | {concurrent} | {n} | {r['accepted']} in {r['seconds']:.1f} s | {r['rate']:.0f} | "
                    f"{ms(r['p50'])} / {ms(r['p99'])} | {r['completed_in_window']} | {r['drain_rate']:.0f} |")
                print(report[-1], flush=True)
            for n in (1, 2):
                count = 4 if args.quick else 10
                r = throughput(server, hooks, 100 * MIB, n, count=count)
                out(f"| 100 MiB | {concurrent} | {n} | {r['accepted']} in {r['seconds']:.1f} s | {r['rate']:.1f} | "
                    f"{ms(r['p50'])} / {ms(r['p99'])} | {r['completed_in_window']} | {r['drain_rate']:.1f} |")
                print(report[-1], flush=True)
        finally:
            server.stop()
    out(f"Load average at the end {' / '.join(f'{x:.1f}' for x in os.getloadavg())}.")
    out()
    text = "\n".join(report) + "\n"
    dest = pathlib.Path(args.out) if args.out else ROOT / "perf" / "results" / "async" / (date + ("-quick" if args.quick else "") + ".md")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    print(text)
    print("wrote", dest)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    hooks.shutdown()


if __name__ == "__main__":
    main()
