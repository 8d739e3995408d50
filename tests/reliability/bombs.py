"""Compressed-body bombs against bin/nereid: a benchmark-style report, not a
timed test.

A few kilobytes of gzip inflate to many megabytes. This starts a server,
sends rounds of 100 concurrent bombs (HTTP gzip bodies of about 80 KB that
inflate to 80 MiB, past --http-max-input-size's 64 MiB; gRPC gzip messages
that inflate one MiB past --grpc-max-message-size), and samples the
server's resident memory: before the bombs, its peak while they run (the
kernel's high-water mark, reset before each phase), and afterwards until
it settles. Every bomb must be refused (HTTP 400, gRPC RESOURCE_EXHAUSTED,
or the budget's 503 / UNAVAILABLE) and the server must stay up; the memory
figures are reported, with the payload budget they are bounded by, and
compared with that bound, not asserted.

Usage:
  .venv/bin/python tests/reliability/bombs.py [--nereid bin/nereid]
      [--baseline OTHER_BINARY] [--rounds 2] [--concurrency 100] [--kinds http,grpc]
      [--out tests/reliability/results/bombs.md]

With --baseline, the same phases run against a second binary (e.g. one
built from an older commit), the two interleaved phase by phase, and the
report gives both.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import CHILDREN, ROOT, free_ports, log, run_meta  # noqa: E402

MIB = 1 << 20
HTTP_LIMIT = 64 * MIB
GRPC_LIMIT = 16 * MIB
BUDGET = 512 * MIB
CONCURRENCY = 100


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def reset_peak(pid: int):
    """Resets the kernel's RSS high-water mark (VmHWM) of pid."""
    pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")


def http_bomb() -> bytes:
    zero = bytes(MIB)
    buf = gzip.compress(zero * 80, compresslevel=9)
    return buf


def identity_repo(root: pathlib.Path) -> pathlib.Path:
    d = root / "bomb_identity" / "1"
    d.mkdir(parents=True)
    (root / "bomb_identity" / "config.pbtxt").write_text(
        'name: "bomb_identity"\nbackend: "identity"\nmax_batch_size: 0\n'
        'input [ { name: "INPUT0" data_type: TYPE_UINT8 dims: [ -1 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_UINT8 dims: [ -1 ] } ]\n'
    )
    return root


class Server:
    def __init__(self, binary: pathlib.Path, repo: pathlib.Path, log_path: pathlib.Path):
        self.http_port, self.grpc_port = free_ports(2)
        argv = [
            str(binary),
            f"--model-repository={repo}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            f"--http-max-input-size={HTTP_LIMIT}",
            f"--grpc-max-message-size={GRPC_LIMIT}",
            f"--payload-budget-bytes={BUDGET}",
        ]
        self.log = open(log_path, "wb")
        self.proc = CHILDREN.popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{binary} exited with {self.proc.returncode}; see {log_path}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=1)
                c.request("GET", "/v2/health/ready")
                if c.getresponse().status == 200:
                    c.close()
                    break
                c.close()
            except OSError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{binary} not ready within 30 s")
        time.sleep(1.0)  # let start-up garbage settle

    def stop(self) -> int:
        rc = CHILDREN.stop(self.proc, grace_s=30)
        self.log.close()
        return rc


def send_http(port: int, body: bytes) -> str:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        c.request("POST", "/v2/models/bomb_identity/infer", body=body,
                  headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        c.close()
        return str(r.status)
    except OSError as e:
        return f"error: {type(e).__name__}"


def grpc_bomb_message() -> bytes:
    from tritonclient.grpc import service_pb2

    n = GRPC_LIMIT + MIB
    req = service_pb2.ModelInferRequest(model_name="bomb_identity")
    t = req.inputs.add()
    t.name, t.datatype = "INPUT0", "UINT8"
    t.shape.append(n)
    req.raw_input_contents.append(bytes(n))
    return req.SerializeToString()


def send_grpc(channel, message: bytes) -> str:
    import grpc

    call = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        call(message, timeout=120, compression=grpc.Compression.Gzip)
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def phase(server: Server, kind: str, payload: bytes) -> dict:
    """One round of CONCURRENCY concurrent bombs; memory before, peak, after."""
    pid = server.proc.pid
    idle = rss_kib(pid)
    reset_peak(pid)
    outcomes: list[str] = [""] * CONCURRENCY
    barrier = threading.Barrier(CONCURRENCY)
    channels = []
    if kind == "grpc":
        import grpc

        opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        # A few channels: gRPC multiplexes the calls on each.
        channels = [grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=opts) for _ in range(10)]

    def worker(i):
        barrier.wait()
        if kind == "http":
            outcomes[i] = send_http(server.http_port, payload)
        else:
            outcomes[i] = send_grpc(channels[i % len(channels)], payload)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONCURRENCY)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    for ch in channels:
        ch.close()
    peak = rss_kib(pid, "VmHWM")
    after = {}
    start = time.monotonic()
    for at in AFTER_S:
        time.sleep(max(0, start + at - time.monotonic()))
        after[at] = rss_kib(pid)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    return {
        "kind": kind,
        "idle_mib": idle / 1024,
        "peak_mib": peak / 1024,
        "after_mib": {k: v / 1024 for k, v in after.items()},
        "took_s": took,
        "outcomes": counts,
        "alive": server.proc.poll() is None,
    }


REFUSED = {"400", "503", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL"}


AFTER_S = (1, 5, 20, 50)


def render(results: dict[str, list[dict]], meta: dict, took: float) -> str:
    m = meta["machine"]
    dirty = " (modified tree)" if meta.get("dirty") else ""
    body = []
    ok = True
    for name, phases in results.items():
        body += [f"**{name}**", "",
                 "| round | idle MiB | peak MiB | peak - idle MiB | " + " | ".join(f"+{a} s" for a in AFTER_S)
                 + " | took s | outcomes |",
                 "|---|---|---|---|" + "---|" * len(AFTER_S) + "---|---|"]
        rounds: dict[str, int] = {}
        for p in phases:
            rounds[p["kind"]] = rounds.get(p["kind"], 0) + 1
            outcomes = ", ".join(f"{k} x{v}" for k, v in sorted(p["outcomes"].items()))
            ok = ok and all(k in REFUSED for k in p["outcomes"]) and p["alive"]
            body.append(
                f"| {p['kind']} {rounds[p['kind']]} | {p['idle_mib']:.0f} | {p['peak_mib']:.0f} | "
                f"{p['peak_mib'] - p['idle_mib']:.0f} | "
                + " | ".join(f"{p['after_mib'][a]:.0f}" for a in AFTER_S)
                + f" | {p['took_s']:.1f} | {outcomes} |"
            )
        worst = max(p["peak_mib"] - p["idle_mib"] for p in phases)
        body += ["", f"Largest rise over idle: {worst:.0f} MiB; payload budget {BUDGET // MIB} MiB "
                     f"({'within' if worst <= BUDGET / MIB + 64 else 'OVER'} the budget plus 64 MiB).", ""]
    head = [
        "## Compressed-body bombs",
        "",
        f"Run {meta['date']} on commit `{meta['commit']}`{dirty}; {m['nproc']} CPUs, "
        f"{m['mem_total_gib']} GiB memory, Linux {m['kernel']}; took {took:.0f} s.",
        f"Command: `{meta['command']}`",
        "",
        f"**Result: {'PASS' if ok else 'FAIL'}** (every bomb refused, server alive; memory reported, not asserted)",
        "",
        f"{CONCURRENCY} concurrent bombs per round: HTTP bodies of {len(http_bomb()) // 1024} KiB of gzip inflating "
        f"to 80 MiB (--http-max-input-size {HTTP_LIMIT // MIB} MiB); gRPC gzip messages inflating to "
        f"{GRPC_LIMIT // MIB + 1} MiB (--grpc-max-message-size {GRPC_LIMIT // MIB} MiB); "
        f"--payload-budget-bytes {BUDGET // MIB} MiB. Peak is the kernel's RSS high-water mark (VmHWM), "
        "reset before each round; +N s is the RSS N seconds after the round's last answer.",
        "",
    ]
    return "\n".join(head + body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nereid", default=str(ROOT / "bin" / "nereid"))
    ap.add_argument("--baseline", help="a second binary to compare, interleaved")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kinds", default="http,grpc")
    ap.add_argument("--concurrency", type=int, default=100,
                    help="bombs per round (a baseline without bounds may need far more memory than 100 allow)")
    ap.add_argument("--out", default=str(ROOT / "tests" / "reliability" / "results" / "bombs.md"))
    args = ap.parse_args()
    globals()["CONCURRENCY"] = args.concurrency

    meta = run_meta()
    t0 = time.monotonic()
    payloads = {"http": http_bomb()}
    if "grpc" in args.kinds:
        payloads["grpc"] = grpc_bomb_message()
    binaries = {"nereid": pathlib.Path(args.nereid)}
    if args.baseline:
        binaries["baseline"] = pathlib.Path(args.baseline)
    results: dict[str, list[dict]] = {name: [] for name in binaries}
    with tempfile.TemporaryDirectory() as tmp:
        repo = identity_repo(pathlib.Path(tmp) / "repo")
        servers = {name: Server(b, repo, pathlib.Path(tmp) / f"{name}.log") for name, b in binaries.items()}
        try:
            for r in range(args.rounds):
                for kind in args.kinds.split(","):
                    for name, s in servers.items():
                        log(f"{name}: round {r + 1}, {CONCURRENCY} {kind} bombs")
                        p = phase(s, kind, payloads[kind])
                        log(f"  idle {p['idle_mib']:.0f} MiB, peak {p['peak_mib']:.0f} MiB, "
                            f"+{AFTER_S[-1]} s {p['after_mib'][AFTER_S[-1]]:.0f} MiB, outcomes {p['outcomes']}")
                        results[name].append(p)
        finally:
            for name, s in servers.items():
                rc = s.stop()
                log(f"{name} exit status {rc}")
    text = render(results, meta, time.monotonic() - t0)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0 if "**Result: PASS**" in text else 1


if __name__ == "__main__":
    sys.exit(main())
