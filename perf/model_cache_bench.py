#!/usr/bin/env python3
"""The model cache under Zipf traffic over 10,000 models, against a client-side LRU and a preloaded server.

    .venv/bin/python perf/model_cache_bench.py [--quick] [--duration 45] [--warmup 15] [--rounds 1]
        [--models 10000] [--capacity 500] [--zipf 1.1] [--seed 1] [--threads 4]
        [--scenarios cache,lru,cache-measured,preloaded] [--repo DIR] [--pprof] [--out FILE]

(or `make bench-model-cache`, options in BENCH_MODEL_CACHE_ARGS;
perf/model_cache.md explains the figures). It writes a repository of
--models distinct ONNX models (`mNNNNN`: OUTPUT0 = INPUT0 + NNNNN, FP32
[4], one CPU instance, opset of scripts/make_models.py), measures the
memory one of them takes in a running server, and then runs, --rounds
times in turn, each on a fresh bin/nereid:

  cache           --model-control-mode=explicit --model-load-on-demand=true
                  --model-cache-memory=capacity x footprint, every model
                  declaring the footprint (nereid_memory_bytes, through
                  --model-config-name=declared)
  lru             explicit mode, no cache: the client keeps its own LRU of
                  --capacity models over the repository API (load_model on a
                  miss, unload_model of the least recently used idle model)
  cache-measured  as cache, but the models declare nothing: the cache
                  measures each load (process RSS growth)
  preloaded       --model-control-mode=none: every model loaded at start
                  (its start-up time is the none-mode figure)

--threads client threads in one process send the same Zipf(--zipf) sequences
of models (fixed --seed) in a closed loop over gRPC (tritonclient's
generated stub, one prebuilt ModelInferRequest per thread, and
tritonclient.grpc.InferenceServerClient for the repository API), and check
every answer. The first --warmup seconds of a scenario are not measured.
A request "missed" when it waited for a load: the client's LRU knows; for
the server's cache it is a request during which a load of its model
finished (from the server's log, checked against
nereid_model_cache_misses_total). The report and a time-series plot go
to perf/results/model_cache/<date>.md and .png (<date>-quick with --quick).

A benchmark, not a test: it asserts nothing. Client and server share the
machine's cores.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import datetime
import json
import os
import pathlib
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
try:
    import grpc
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    import make_models  # the example models' opset and helpers
    from batching_bench import free_ports  # perf/ is on sys.path: this script's folder
except ImportError:
    if "--plot-only" not in sys.argv:  # what the report venv (.perf/venv, matplotlib) runs
        raise

REPORT_PYTHON = ROOT / ".perf" / "venv" / "bin" / "python"  # matplotlib (perf/setup venv)
DECLARED = "declared"  # --model-config-name of the configurations that declare a size
STAMP = ".model_cache_bench"
X = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
REQUEST_TIMEOUT_S = 30


# ---- the repository ----------------------------------------------------------------------------

def model_name(i: int) -> str:
    return f"m{i:05d}"


def config(name: str, declared: int | None) -> str:
    extra = 'instance_group [ { kind: KIND_CPU count: 1 } ]\n'
    if declared:
        extra += f'parameters {{ key: "nereid_memory_bytes" value {{ string_value: "{declared}" }} }}\n'
    return make_models.config_text(name, 0, [("INPUT0", "FP32", [4])], [("OUTPUT0", "FP32", [4])], extra=extra)


def build_repo(repo: pathlib.Path, n: int) -> float:
    """Writes n models unless repo already holds them; returns the seconds taken."""
    t0 = time.monotonic()
    key = f"models={n} opset={make_models.OPSET} ir={make_models.IR_VERSION} v1"
    stamp = repo / STAMP
    if stamp.exists() and stamp.read_text().splitlines()[0] == key:
        return 0.0
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    graph_in = make_models.value_info("INPUT0", "FP32", [4])
    graph_out = make_models.value_info("OUTPUT0", "FP32", [4])
    const = make_models.numpy_helper.from_array(np.zeros(4, np.float32), "C")
    add = make_models.helper.make_node("Add", ["INPUT0", "C"], ["OUTPUT0"], name="add")
    model = make_models.make_model("add_constant", [add], [graph_in], [graph_out], [const])
    init = model.graph.initializer[0]
    for i in range(n):
        name = model_name(i)
        (repo / name / "1").mkdir(parents=True)
        init.raw_data = np.full(4, float(i), np.float32).tobytes()  # a distinct file per model
        (repo / name / "1" / "model.onnx").write_bytes(model.SerializeToString())
        (repo / name / "config.pbtxt").write_text(config(name, None))
    stamp.write_text(key + "\n")
    return time.monotonic() - t0


def write_declared(repo: pathlib.Path, n: int, size: int) -> None:
    """configs/declared.pbtxt of every model: the same configuration, declaring size bytes."""
    lines = (repo / STAMP).read_text().splitlines()
    if len(lines) > 1 and lines[1] == f"declared={size}":
        return
    for i in range(n):
        d = repo / model_name(i) / "configs"
        d.mkdir(exist_ok=True)
        (d / f"{DECLARED}.pbtxt").write_text(config(model_name(i), size))
    (repo / STAMP).write_text(lines[0] + f"\ndeclared={size}\n")


# ---- the server --------------------------------------------------------------------------------

class Server:
    """One bin/nereid on loopback, its log, its ports and its start-up time."""

    def __init__(self, args, repo: pathlib.Path, work: pathlib.Path, label: str, flags: list[str],
                 timeout: float = 60):
        self.http, self.grpc, self.metrics, pprof = free_ports(4)
        self.log = work / f"{label}.log"
        self.pprof = f"127.0.0.1:{pprof}"
        self.argv = [
            args.nereid, f"--model-repository={repo}",
            "--http-address=127.0.0.1", f"--http-port={self.http}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc}", f"--metrics-port={self.metrics}",
            f"--backend-config=onnxruntime,library={args.ort_library}",
            *flags,
        ]
        if args.load_threads:
            self.argv.append(f"--model-load-thread-count={args.load_threads}")
        if args.pprof:
            self.argv.append(f"--pprof-address={self.pprof}")
        env = dict(os.environ, NEREID_ORT_LIBRARY=args.ort_library)
        t0 = time.monotonic()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env)
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"nereid exited with status {self.proc.returncode}; {self.log}:\n"
                         f"{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - t0 > timeout:
                self.stop()
                sys.exit(f"nereid not ready after {timeout:.0f} s; {self.log}")
            time.sleep(0.01)
        self.ready_s = time.monotonic() - t0
        self.url = f"127.0.0.1:{self.grpc}"

    def status_kb(self, key: str) -> int:
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def scrape(self) -> tuple[dict, int]:
        """The metrics, summed over labels (histogram buckets kept by le), and the page's size."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=30) as r:
            text = r.read().decode()
        out: dict = collections.defaultdict(float)
        for line in text.splitlines():
            if not line.startswith("nereid_model_c"):
                continue
            m = METRIC_LINE.match(line)
            if not m:
                continue
            name, labels, value = m.groups()
            if name.endswith("_bucket"):
                name += "{" + re.search(r'le="([^"]*)"', labels).group(1) + "}"
            elif name == "nereid_model_cache_evictions_total":
                name += "{" + re.search(r'reason="([^"]*)"', labels or "").group(1) + "}"
            out[name] += float(value)
        return out, len(text)

    def cpu_profile(self, seconds: int, dest: pathlib.Path) -> None:
        url = f"http://{self.pprof}/debug/pprof/profile?seconds={seconds}"
        with urllib.request.urlopen(url, timeout=seconds + 30) as r:
            dest.write_bytes(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LOG_LINE = re.compile(r"^I(\d{4} \d\d:\d\d:\d\d\.\d{6}) \d+\] (successfully loaded|successfully unloaded|loading|"
                      r"model cache: unloading) .*?model=(\S+)")


def parse_log(path: pathlib.Path) -> dict[str, list[tuple[float, str]]]:
    """Events of the server's log by kind: (wall-clock time, model)."""
    year = datetime.date.today().year
    out = collections.defaultdict(list)
    for line in path.read_text(errors="replace").splitlines():
        m = LOG_LINE.match(line)
        if m:
            stamp, kind, model = m.groups()
            t = datetime.datetime.strptime(f"{year}{stamp}", "%Y%m%d %H:%M:%S.%f").timestamp()
            out[kind].append((t, model))
    return out


def cpu_snapshot(server_pid: int) -> dict:
    """Clock ticks so far: the machine's busy and steal time, the server's and this client's CPU time."""
    f = [int(x) for x in pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = f

    def proc(path):
        fields = pathlib.Path(path).read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    return {"busy": user + nice + system + irq + softirq, "steal": steal, "total": sum(f),
            "server": proc(f"/proc/{server_pid}/stat"), "client": proc("/proc/self/stat"), "t": time.monotonic()}


def cpu_use(a: dict, b: dict) -> dict:
    """Cores used between two snapshots, by the server, the client and everything else; steal %."""
    hz = os.sysconf("SC_CLK_TCK")
    secs = b["t"] - a["t"]
    server = (b["server"] - a["server"]) / hz / secs
    client = (b["client"] - a["client"]) / hz / secs
    busy = (b["busy"] - a["busy"]) / hz / secs
    return {"cpu_server": server, "cpu_client": client, "cpu_other": max(busy - server - client, 0.0),
            "steal_pct": 100 * (b["steal"] - a["steal"]) / max(b["total"] - a["total"], 1)}


# ---- the client --------------------------------------------------------------------------------

def zipf_sequences(args) -> tuple[list[np.ndarray], np.ndarray]:
    """Per thread, a sequence of model indices; and the models by popularity rank."""
    ranks = np.arange(1, args.models + 1, dtype=np.float64)
    p = ranks ** -args.zipf
    p /= p.sum()
    rng = np.random.default_rng(args.seed)
    by_rank = rng.permutation(args.models)  # the rank-r model is by_rank[r - 1]
    seqs = [by_rank[np.random.default_rng(args.seed + 1 + k).choice(args.models, size=args.sequence, p=p)]
            for k in range(args.threads)]
    return seqs, by_rank


class ClientLRU:
    """What a Triton user puts in front of a server today: the capacity
    most recently used models loaded, through the repository API. Threads
    asking for the same model share one load; a model with requests in
    flight is not unloaded; a load waits for the unload of the same name."""

    class Entry:
        def __init__(self):
            self.refs = 0
            self.ready = threading.Event()
            self.error: str | None = None

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.mu = threading.Lock()
        self.entries: collections.OrderedDict[str, ClientLRU.Entry] = collections.OrderedDict()
        self.unloading: dict[str, threading.Event] = {}
        self.unloads: list[float] = []  # wall-clock times
        self.load_s: list[tuple[float, float]] = []  # load_model calls: (wall-clock end, seconds)

    def acquire(self, ctl: grpcclient.InferenceServerClient, name: str) -> tuple[bool, str | None]:
        """(hit, error) for a request about to be sent; release afterwards (also on error)."""
        with self.mu:
            e = self.entries.get(name)
            if e is not None:
                self.entries.move_to_end(name)
                e.refs += 1
                hit = e.ready.is_set()
                loader = False
            else:
                e = self.entries[name] = ClientLRU.Entry()
                e.refs, hit, loader = 1, False, True
                victims = []
                for victim, ve in self.entries.items():
                    if len(self.entries) - len(victims) <= self.capacity:
                        break
                    if ve.refs == 0 and ve.ready.is_set():
                        victims.append(victim)
                for v in victims:
                    del self.entries[v]
                    self.unloading[v] = threading.Event()
                before = self.unloading.get(name)
        if hit:
            return True, e.error
        if not loader:
            e.ready.wait()
            return False, e.error
        try:
            for v in victims:
                try:
                    ctl.unload_model(v)
                    self.unloads.append(time.time())
                finally:
                    with self.mu:
                        self.unloading.pop(v).set()
            if before is not None:
                before.wait()
            t0 = time.perf_counter()
            ctl.load_model(name)
            self.load_s.append((time.time(), time.perf_counter() - t0))
        except Exception as err:  # noqa: BLE001 - reported as the requests' failure
            e.error = f"client LRU: {err}"
            with self.mu:
                if self.entries.get(name) is e:
                    del self.entries[name]
        e.ready.set()
        return False, e.error

    def release(self, name: str) -> None:
        with self.mu:
            e = self.entries.get(name)
            if e is not None:
                e.refs -= 1


def drive(url: str, seqs: list[np.ndarray], seconds: float, lru: ClientLRU | None):
    """Closed-loop clients for seconds. Returns rows (wall-clock send time,
    latency s, model index, hit: True / False / None when the client
    cannot tell) and failures (wall-clock time, model, message)."""
    rows: list[list] = [[] for _ in seqs]
    failures: list[tuple] = []
    gate = threading.Barrier(len(seqs) + 1)
    stop = threading.Event()

    def worker(k: int) -> None:
        channel = grpc.insecure_channel(url)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        ctl = grpcclient.InferenceServerClient(url) if lru else None
        request = service_pb2.ModelInferRequest()
        request.inputs.add(name="INPUT0", datatype="FP32", shape=[4])
        request.outputs.add(name="OUTPUT0")
        request.raw_input_contents.append(X.tobytes())
        seq, mine = seqs[k], rows[k]
        gate.wait()
        j = 0
        while not stop.is_set():
            i = int(seq[j % len(seq)])
            j += 1
            name = model_name(i)
            request.model_name = name
            t_wall = time.time()
            t0 = time.perf_counter()
            hit, err = (None, None)
            if lru:
                hit, err = lru.acquire(ctl, name)
            try:
                if err is None:
                    resp = stub.ModelInfer(request, timeout=REQUEST_TIMEOUT_S)
                    got = np.frombuffer(resp.raw_output_contents[0], np.float32)
                    if not np.array_equal(got, X + np.float32(i)):
                        err = f"wrong answer from {name}: {got.tolist()}"
            except grpc.RpcError as e:
                err = f"{e.code().name}: {e.details()}"
            finally:
                if lru:
                    lru.release(name)
            lat = time.perf_counter() - t0
            if err is None:
                mine.append((t_wall, lat, i, hit))
            else:
                failures.append((t_wall, name, err))
        channel.close()
        if ctl:
            ctl.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(len(seqs))]
    for t in threads:
        t.start()
    gate.wait()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(REQUEST_TIMEOUT_S + 30)
    return [r for per in rows for r in per], failures


class Sampler:
    """The server's RSS every 0.25 s, in a thread."""

    def __init__(self, server: Server):
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, args=(server,), daemon=True)
        self.thread.start()

    def run(self, server: Server) -> None:
        while not self.stop.is_set():
            try:
                self.samples.append((time.time(), server.status_kb("VmRSS")))
            except OSError:
                return
            self.stop.wait(0.25)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


# ---- measuring ---------------------------------------------------------------------------------

def footprint(args, repo: pathlib.Path, work: pathlib.Path) -> dict:
    """The memory a loaded model takes: RSS growth over a sample of loads
    (after one load that starts ONNX Runtime), and what the server's own
    measure (memory_usage) says for the same loads, and for as many more
    loaded after the first ones were unloaded."""
    s = Server(args, repo, work, "footprint", ["--model-control-mode=explicit"])
    try:
        c = grpcclient.InferenceServerClient(s.url)
        idle = s.status_kb("VmRSS")
        c.load_model(model_name(0))  # ONNX Runtime's environment starts with the first model
        first = s.status_kb("VmRSS")
        n = args.sample
        names = [model_name(i) for i in range(1, n + 1)]
        for name in names:
            c.load_model(name)
        after = s.status_kb("VmRSS")

        def usage(models):
            stats = {m["name"]: m for m in c.get_inference_statistics(as_json=True)["model_stats"]}
            return sorted(int(stats[m]["memory_usage"][0]["byte_size"]) for m in models)

        first_usage = usage([model_name(0)])[0]
        wave1 = usage(names)
        for name in names:
            c.unload_model(name)
        time.sleep(1)
        names2 = [model_name(i) for i in range(n + 1, 2 * n + 1)]
        for name in names2:
            c.load_model(name)
        wave2 = usage(names2)
        c.close()
    finally:
        s.stop()
    per_model = (after - first) * 1024 / n
    return {
        "sample": n, "rss_idle_kib": idle, "rss_first_kib": first, "rss_after_kib": after,
        "per_model_bytes": per_model, "first_usage": first_usage,
        "wave1": [wave1[0], statistics.median(wave1), wave1[-1], sum(wave1)],
        "wave2": [wave2[0], statistics.median(wave2), wave2[-1], sum(wave2)],
        "file_bytes": sum(f.stat().st_size for f in (repo / model_name(1) / "1").iterdir()),
    }


def histogram_quantile(q: float, before: dict, after: dict, name: str) -> float | None:
    """Prometheus' histogram_quantile over the increase between two scrapes."""
    prefix = name + "_bucket{"
    buckets = sorted((float(k[len(prefix):-1]), after[k] - before.get(k, 0)) for k in after if k.startswith(prefix))
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_b, prev_c = 0.0, 0.0
    for b, c in buckets:
        if c >= rank:
            if b == float("inf"):
                return prev_b
            return prev_b + (b - prev_b) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_b, prev_c = b, c
    return None


def pct(values, q):
    return float(np.percentile(values, q)) if len(values) else None


def run_scenario(args, kind: str, repo: pathlib.Path, work: pathlib.Path, seqs, by_rank, hot: set, fp: dict,
                 round_no: int) -> dict:
    label = f"{kind}-r{round_no}"
    declared_budget = args.capacity * fp["declared"]
    measured_budget = int(args.capacity * fp["per_model_bytes"])
    flags = {
        "cache": ["--model-control-mode=explicit", "--model-load-on-demand=true",
                  f"--model-cache-memory={declared_budget}", f"--model-config-name={DECLARED}"],
        "cache-measured": ["--model-control-mode=explicit", "--model-load-on-demand=true",
                           f"--model-cache-memory={measured_budget}"],
        "lru": ["--model-control-mode=explicit", f"--model-config-name={DECLARED}"],
        "preloaded": ["--model-control-mode=none", f"--model-config-name={DECLARED}"],
    }[kind]
    print(f"[{label}] starting nereid {' '.join(flags)}", file=sys.stderr, flush=True)
    server = Server(args, repo, work, label, flags, timeout=args.start_timeout)
    print(f"[{label}] ready in {server.ready_s:.2f} s, RSS {server.status_kb('VmRSS') / 1024:.0f} MiB",
          file=sys.stderr, flush=True)
    rss_start = server.status_kb("VmRSS")
    lru = ClientLRU(args.capacity) if kind == "lru" else None
    sampler = Sampler(server)
    marks: dict = {}

    def at_warmup_end():
        # The measured window starts: the counters' values, and a profile of the cache.
        marks["t"] = time.time()
        marks["cpu"] = cpu_snapshot(server.proc.pid)
        marks["metrics"], _ = server.scrape()
        marks["unloads"] = len(lru.unloads) if lru else 0
        if args.pprof and kind == "cache" and round_no == 1:
            prof = work / "cache.cpu.pprof"
            seconds = max(int(args.duration) - 5, 5)
            threading.Thread(target=server.cpu_profile, args=(seconds, prof), daemon=True).start()
            marks["profile"] = prof

    timer = threading.Timer(args.warmup, at_warmup_end)
    t_start = time.time()
    timer.start()
    try:
        rows, failures = drive(server.url, seqs, args.warmup + args.duration, lru)
        t_end = time.time()
        cpu_end = cpu_snapshot(server.proc.pid)
        timer.join()
        end_metrics, metrics_size = server.scrape()
        hwm = server.status_kb("VmHWM")
        probe = []
        if kind != "preloaded" and args.probe:
            # Models not loaded now: the least popular first, none of the
            # Zipf traffic's recent ones.
            if lru:
                resident = set(lru.entries)
            else:
                ev = parse_log(server.log)
                resident = set()
                for t, k, m in sorted([(t, 1, m) for t, m in ev["successfully loaded"]]
                                      + [(t, -1, m) for t, m in ev["model cache: unloading"]]):
                    (resident.add if k > 0 else resident.discard)(m)
            candidates = [int(i) for i in by_rank[::-1] if model_name(int(i)) not in resident]
            probe = cold_probe(server.url, candidates, args.probe, lru)
    finally:
        sampler.close()
        server.stop()
    events = parse_log(server.log)

    # Which requests missed: the client LRU knows; for the server's cache, a
    # request missed when a load of its model finished while it was in flight.
    if lru is None:
        loaded = collections.defaultdict(list)
        for t, m in events["successfully loaded"]:
            loaded[m].append(t)
        for r in range(len(rows)):
            t0, lat, i, _ = rows[r]
            ts = loaded.get(model_name(i), [])
            k = bisect.bisect_left(ts, t0)
            rows[r] = (t0, lat, i, not (k < len(ts) and ts[k] <= t0 + lat))

    t_meas = marks["t"]
    measured = [r for r in rows if r[0] >= t_meas]
    fails = [f for f in failures if f[0] >= t_meas]
    lat_ms = np.array([r[1] for r in measured]) * 1e3
    hits = np.array([r[3] for r in measured], bool)
    hot_mask = np.array([r[2] in hot for r in measured], bool)
    seconds = t_end - t_meas
    m0, m1 = marks["metrics"], end_metrics

    def delta(name):
        return m1.get(name, 0) - m0.get(name, 0)

    res = {
        "scenario": kind, "round": round_no, "flags": flags, "ready_s": server.ready_s,
        "requests": len(measured), "seconds": seconds, "throughput": len(measured) / seconds,
        "hit_rate_client": float(hits.mean()) if len(hits) else None,
        "misses_client": int((~hits).sum()),
        "p50": pct(lat_ms, 50), "p99": pct(lat_ms, 99),
        "warm_p99": pct(lat_ms[hits], 99), "warm_p50": pct(lat_ms[hits], 50),
        "hot_p99": pct(lat_ms[hot_mask & hits], 99),
        "cold_p50": pct(lat_ms[~hits], 50), "cold_p99": pct(lat_ms[~hits], 99),
        "failed": len(fails), "failed_warmup": len(failures) - len(fails),
        "failure_messages": collections.Counter(f[2] for f in failures).most_common(5),
        "rss_start_mib": rss_start / 1024, "rss_hwm_mib": hwm / 1024,
        "rss_end_mib": sampler.samples[-1][1] / 1024 if sampler.samples else None,
        "metrics_page_bytes": metrics_size,
    }
    res.update(cpu_use(marks["cpu"], cpu_end))
    res["loadavg_end"] = float(pathlib.Path("/proc/loadavg").read_text().split()[0])
    loads_in = [t for t, _ in events["successfully loaded"] if t_meas <= t <= t_end]
    res["loads_per_s"] = len(loads_in) / seconds
    if lru is None and kind != "preloaded":
        h, mi = delta("nereid_model_cache_hits_total"), delta("nereid_model_cache_misses_total")
        res["hit_rate_server"] = h / (h + mi) if h + mi else None
        res["misses_server"] = int(mi)
        res["evictions_per_s"] = delta("nereid_model_cache_evictions_total{budget}") / seconds
        res["server_load_p50"] = histogram_quantile(0.5, m0, m1, "nereid_model_cold_load_seconds")
        res["server_load_p99"] = histogram_quantile(0.99, m0, m1, "nereid_model_cold_load_seconds")
        res["cache_bytes_end"] = m1.get("nereid_model_cache_bytes")
        res["budget_bytes"] = m1.get("nereid_model_cache_budget_bytes")
    elif lru is not None:
        res["evictions_per_s"] = (len(lru.unloads) - marks["unloads"]) / seconds
        calls = [d for t, d in lru.load_s if t >= t_meas]
        res["server_load_p50"], res["server_load_p99"] = pct(calls, 50), pct(calls, 99)
    else:
        res["evictions_per_s"] = 0.0
    # Load time inside the server: from its "loading" line to "successfully loaded".
    started: dict = {}
    durations = []
    for t, kind_, m in sorted((t, k, m) for k in ("loading", "successfully loaded") for t, m in events[k]):
        if kind_ == "loading":
            started[m] = t
        elif m in started and t_meas <= t <= t_end:
            durations.append(t - started.pop(m))
    res["log_load_p50"] = pct(np.array(durations) * 1e3, 50)
    res["log_load_p99"] = pct(np.array(durations) * 1e3, 99)

    # Resident models over time (from the log), and the time series.
    changes = sorted([(t, 1) for t, _ in events["successfully loaded"] if t <= t_end]
                     + [(t, -1) for t, _ in events["successfully unloaded"] if t <= t_end])
    res["resident_peak"] = int(max(np.cumsum([c for _, c in changes]), default=0))
    res["records"] = len({m for t, m in events["successfully loaded"] if t <= t_end})
    res["series"] = series(rows, events, sampler.samples, t_start, t_end, args.bin)
    res["probe_p50"], res["probe_p99"] = pct(probe, 50), pct(probe, 99)
    res["probe_n"] = len(probe)
    res["warmup_s"] = t_meas - t_start
    if "profile" in marks:
        res["profile"] = str(marks["profile"])
    show(res)
    return res


def series(rows, events, rss, t_start: float, t_end: float, width: float) -> dict:
    """Per bin of width seconds since t_start, up to t_end: requests/s, hit
    rate, p99 of all requests and of warm ones, p50 of cold ones (ms),
    models loaded and distinct models loaded so far (from the log), RSS MiB."""
    changes = sorted([(t, 1, m) for t, m in events["successfully loaded"]]
                     + [(t, -1, m) for t, m in events["successfully unloaded"]])
    nb = max(int((t_end - t_start) // width), 1)
    bins = [[] for _ in range(nb)]
    for t0, lat, _, hit in rows:
        b = int((t0 - t_start) // width)
        if 0 <= b < nb:
            bins[b].append((lat * 1e3, hit))
    out = {k: [] for k in ("t", "rate", "hit", "p99", "warm_p99", "cold_p50", "resident", "records", "rss")}
    ci, resident, seen = 0, 0, set()
    ri, last_rss = 0, None
    for b in range(nb):
        edge = t_start + (b + 1) * width
        while ci < len(changes) and changes[ci][0] < edge:
            resident += changes[ci][1]
            seen.add(changes[ci][2])
            ci += 1
        while ri < len(rss) and rss[ri][0] < edge:
            last_rss = rss[ri][1] / 1024
            ri += 1
        lats = [x[0] for x in bins[b]]
        warm = [x[0] for x in bins[b] if x[1]]
        cold = [x[0] for x in bins[b] if not x[1]]
        out["t"].append((b + 0.5) * width)
        out["rate"].append(len(lats) / width)
        out["hit"].append(len(warm) / len(lats) if lats else None)
        out["p99"].append(pct(lats, 99))
        out["warm_p99"].append(pct(warm, 99))
        out["cold_p50"].append(pct(cold, 50))
        out["resident"].append(resident)
        out["records"].append(len(seen))
        out["rss"].append(last_rss)
    return out


def cold_probe(url: str, candidates: list[int], n: int, lru: ClientLRU | None) -> list[float]:
    """n requests in a row from one client, each for a model that is not
    loaded, with no other traffic: latencies in ms."""
    channel = grpc.insecure_channel(url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    ctl = grpcclient.InferenceServerClient(url) if lru else None
    request = service_pb2.ModelInferRequest()
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[4])
    request.outputs.add(name="OUTPUT0")
    request.raw_input_contents.append(X.tobytes())
    out = []
    try:
        for i in candidates[:n]:
            request.model_name = model_name(i)
            t0 = time.perf_counter()
            if lru:
                hit, err = lru.acquire(ctl, model_name(i))
                lru.release(model_name(i))
                if err:
                    continue
            try:
                stub.ModelInfer(request, timeout=REQUEST_TIMEOUT_S)
            except grpc.RpcError:
                continue
            out.append((time.perf_counter() - t0) * 1e3)
    finally:
        channel.close()
        if ctl:
            ctl.close()
    return out


def show(r: dict) -> None:
    def f(v, spec=".2f"):
        return "–" if v is None else format(v, spec)

    print(f"[{r['scenario']}-r{r['round']}] {r['requests']} requests in {r['seconds']:.1f} s, "
          f"{r['throughput']:.0f}/s; hit rate {f(r['hit_rate_client'], '.3f')} (server "
          f"{f(r.get('hit_rate_server'), '.3f')}); p50 {f(r['p50'])} p99 {f(r['p99'])} ms; warm p99 "
          f"{f(r['warm_p99'])}; cold p50 {f(r['cold_p50'])} p99 {f(r['cold_p99'])} ms; "
          f"{f(r['evictions_per_s'], '.1f')} evictions/s; peak RSS {r['rss_hwm_mib']:.0f} MiB; "
          f"resident peak {r['resident_peak']}; failed {r['failed']}", file=sys.stderr, flush=True)
    for msg, n in r["failure_messages"]:
        print(f"    {n} x {msg}", file=sys.stderr)


# ---- the report --------------------------------------------------------------------------------

def pooled(results: list[dict], kind: str, key: str):
    """Median over rounds of one figure."""
    v = [r[key] for r in results if r["scenario"] == kind and r.get(key) is not None]
    return statistics.median(v) if v else None


def report(args, results, fp, repo_s, cmd, plot_name: str | None,
           profile_top: str | None) -> str:
    kinds = [k for k in args.scenarios if any(r["scenario"] == k for r in results)]

    def f(v, spec=".1f", unit=""):
        return "–" if v is None else format(v, spec) + unit

    rev, dirty = args.revision
    load1 = pathlib.Path("/proc/loadavg").read_text().split()[:3]
    ranks = np.arange(1, args.models + 1, dtype=np.float64) ** -args.zipf
    top_mass = ranks[: args.capacity].sum() / ranks.sum()
    L = [
        f"# Model cache, {datetime.date.today()}{' (quick)' if args.quick else ''}",
        "",
        "```sh",
        cmd,
        "```",
        "",
        f"- Revision `{rev}` (`git rev-parse --short HEAD` when the run started)"
        + (f"; the working tree had uncommitted changes in {', '.join(f'`{d}`' for d in dirty)}" if dirty else "")
        + f". Server binary `{args.nereid}`." + (f" {args.note}" if args.note else ""),
        f"- Machine: {os.cpu_count()} cores, {mem_gib():.0f} GiB, {platform.platform()}; a noisy shared VM. "
        f"Client (Python, {args.threads} threads, gRPC) and server share the cores. Load average at the end: "
        f"{' '.join(load1)}.",
        f"- Repository: {args.models:,} models (`Add` of a distinct constant, FP32 [4], opset "
        f"{make_models.OPSET}, one CPU instance each, {fp['file_bytes']} B of ONNX each), written in "
        f"{repo_s:.1f} s" + (" (reused)" if repo_s == 0 else "") + ".",
        f"- Traffic: Zipf s = {args.zipf} over the {args.models:,} models (seed {args.seed}); the "
        f"{args.capacity} most popular carry {top_mass:.1%} of the requests. Closed loop, {args.threads} "
        f"threads, no think time. Each scenario: {args.warmup:g} s warm-up (not measured), then "
        f"{args.duration:g} s measured; {args.rounds} round(s), scenarios in turn within a round, each on a "
        f"fresh server. Figures are medians over rounds.",
        "",
        "## Per-model footprint and the budget",
        "",
        f"A server in explicit mode loaded one model (ONNX Runtime's environment starts then: RSS "
        f"{fp['rss_idle_kib'] / 1024:.0f} → {fp['rss_first_kib'] / 1024:.0f} MiB), then {fp['sample']} more "
        f"one at a time: RSS grew by {(fp['rss_after_kib'] - fp['rss_first_kib']) / 1024:.1f} MiB, "
        f"**{fp['per_model_bytes'] / 1024:.0f} KiB per model**. The budget is {args.capacity} × that "
        f"(rounded up to 4 KiB: {fp['declared']:,} B) = **{args.capacity * fp['declared']:,} B** "
        f"(`--model-cache-memory`).",
        "",
        f"The `cache` scenario's models declare that size (`nereid_memory_bytes` in "
        f"`configs/{DECLARED}.pbtxt`, `--model-config-name={DECLARED}`), because the server's own measure "
        f"(RSS growth during the load, never less than the files) is not a per-model footprint here:",
        "",
        "| loads | memory_usage min | median | max | sum |",
        "|---|---:|---:|---:|---:|",
        f"| the first model (starts ONNX Runtime) | {fp['first_usage']:,} | | | |",
        f"| {fp['sample']} more | {fp['wave1'][0]:,} | {fp['wave1'][1]:,.0f} | {fp['wave1'][2]:,} | "
        f"{fp['wave1'][3]:,} |",
        f"| {fp['sample']} others, after unloading those | {fp['wave2'][0]:,} | {fp['wave2'][1]:,.0f} | "
        f"{fp['wave2'][2]:,} | {fp['wave2'][3]:,} |",
        "",
        "The first load is charged for the runtime, and once models have been unloaded the allocator reuses "
        "their pages, so later loads measure a page or nothing (then the file size). `cache-measured` runs "
        f"the cache on those measures with the same {int(args.capacity * fp['per_model_bytes']):,} B budget "
        "and shows how many models it then keeps.",
        "",
        "## Results",
        "",
        "| | " + " | ".join(kinds) + " |",
        "|---|" + "---:|" * len(kinds),
    ]

    def row(title, key, spec=".1f", unit="", scale=1.0):
        cells = []
        for k in kinds:
            v = pooled(results, k, key)
            cells.append(f(None if v is None else v * scale, spec, unit))
        L.append(f"| {title} | " + " | ".join(cells) + " |")

    row("hit rate (client's count)", "hit_rate_client", ".1%")
    row("hit rate (server's counters)", "hit_rate_server", ".1%")
    row("cold p50 ms (requests that missed)", "cold_p50", ".2f")
    row("cold p99 ms", "cold_p99", ".2f")
    row("load p50 ms (server: cold-load histogram; LRU: load_model call)", "server_load_p50", ".2f", scale=1e3)
    row("load p99 ms", "server_load_p99", ".2f", scale=1e3)
    row("load p50 ms in the server (log: loading → loaded)", "log_load_p50", ".2f")
    row("warm p50 ms (requests that did not wait for a load)", "warm_p50", ".2f")
    row("warm p99 ms", "warm_p99", ".2f")
    row(f"warm p99 ms, the {args.capacity} hottest models", "hot_p99", ".2f")
    row("overall p50 ms", "p50", ".2f")
    row("overall p99 ms", "p99", ".2f")
    row("throughput req/s", "throughput", ".0f")
    row("loads /s", "loads_per_s", ".1f")
    row("evictions /s", "evictions_per_s", ".1f")
    row("models resident at peak", "resident_peak", ".0f")
    row("distinct models loaded (records the server keeps)", "records", ".0f")
    row(f"isolated cold load p50 ms ({args.probe} in a row, one client, after the traffic)", "probe_p50", ".2f")
    row("isolated cold load p99 ms", "probe_p99", ".2f")
    row("server CPU cores", "cpu_server", ".2f")
    row("client CPU cores", "cpu_client", ".2f")
    row("CPU cores used by other processes", "cpu_other", ".2f")
    row("steal %", "steal_pct", ".1f")
    row("server RSS at start MiB", "rss_start_mib", ".0f")
    row("server peak RSS MiB (VmHWM)", "rss_hwm_mib", ".0f")
    row("failed requests (measured window)", "failed", ".0f")
    row("failed requests (warm-up)", "failed_warmup", ".0f")
    row("start until /v2/health/ready s", "ready_s", ".2f")
    row("metrics page at the end KiB", "metrics_page_bytes", ".0f", scale=1 / 1024)
    L.append("")

    msgs = collections.Counter()
    for r in results:
        for m, n in r["failure_messages"]:
            msgs[(r["scenario"], m)] += n
    if msgs:
        L += ["Failures (all rounds, warm-up included):", ""]
        for (k, m), n in msgs.most_common(10):
            L.append(f"- {k}: {n} × `{m}`")
        L.append("")

    # Goals.
    cold = pooled(results, "cache", "cold_p50")
    warm = pooled(results, "cache", "warm_p99")
    pre = pooled(results, "preloaded", "p99")
    failed = sum(r["failed"] + r["failed_warmup"] for r in results if r["scenario"] == "cache")
    L += ["## Goals", "", "| goal | figure | |", "|---|---|---|"]
    if cold is not None:
        L.append(f"| cold load p50 < 20 ms (tiny model) | {cold:.2f} ms (requests that missed, client side) | "
                 f"{'met' if cold < 20 else 'not met'} |")
    if warm is not None and pre:
        L.append(f"| warm p99 within 1.2 × the preloaded server's | {warm:.2f} ms / {pre:.2f} ms = "
                 f"{warm / pre:.2f} × | {'met' if warm <= 1.2 * pre else 'not met'} |")
    if any(r["scenario"] == "cache" for r in results):
        L.append(f"| no request failed by eviction | {failed} failed | {'met' if failed == 0 else 'not met'} |")
    L.append("")

    L += ["## Per round", "", "| scenario | round | start s | req/s | hit rate | cold p50 ms | warm p99 ms | "
          "p99 ms | evictions/s | peak RSS MiB | failed | other CPU cores | load avg |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        L.append(f"| {r['scenario']} | {r['round']} | {r['ready_s']:.2f} | {r['throughput']:.0f} | "
                 f"{f(r['hit_rate_client'], '.1%')} | {f(r['cold_p50'], '.2f')} | {f(r['warm_p99'], '.2f')} | "
                 f"{f(r['p99'], '.2f')} | {f(r['evictions_per_s'], '.1f')} | {r['rss_hwm_mib']:.0f} | "
                 f"{r['failed'] + r['failed_warmup']} | {r['cpu_other']:.2f} | {r['loadavg_end']:.1f} |")
    L.append("")
    L += ["## Servers", ""]
    for k in kinds:
        flags = next(r["flags"] for r in results if r["scenario"] == k)
        L.append(f"- `{k}`: `bin/nereid --model-repository=REPO " + " ".join(flags) + "` (plus loopback ports"
                 + (f", `--model-load-thread-count={args.load_threads}`" if args.load_threads else "") + ")")
    L.append("")
    if plot_name:
        L += ["## Over time", "", f"![hit rate and latency over time]({plot_name})", "",
              f"Round 1, {args.bin:g} s bins from the moment each server was ready; the shaded part is the "
              "warm-up. Warm p99: requests that did not wait for a load; cold p50: those that did. Models "
              "loaded and distinct models loaded so far (the records the manager keeps) are counted from the "
              "server's log.", ""]
    if profile_top:
        L += ["## Where the cache server's CPU goes", "",
              f"`go tool pprof -top` of a CPU profile of the `cache` server over its measured window "
              "(`--pprof`), first lines:", "", "```", profile_top, "```", ""]
    return "\n".join(L)


def revision() -> tuple[str, list[str]]:
    """HEAD's short hash, and the top-level paths with uncommitted changes, when the run starts."""
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                            text=True).stdout.split("\n")
    return rev, sorted({line[3:].split("/")[0] for line in status if line.strip()})


def mem_gib() -> float:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def plot(data: dict, dest: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    def nan(v):
        return [np.nan if x is None else x for x in v]

    fig, (ax1, ax2, ax3, ax4) = plt.subplots(4, 1, figsize=(9, 11), sharex=True,
                                             gridspec_kw={"height_ratios": [2, 3, 2, 1.5]})
    colors = {"cache": "tab:blue", "lru": "tab:orange", "cache-measured": "tab:green", "preloaded": "tab:gray"}
    for kind, s in data["series"].items():
        if not s:
            continue
        c, t = colors.get(kind, "black"), s["t"]
        if kind == "preloaded":
            ax2.plot(t, nan(s["p99"]), color=c, ls="-.", label="preloaded p99")
        else:
            ax1.plot(t, nan(s["hit"]), color=c, label=kind)
            ax2.plot(t, nan(s["warm_p99"]), color=c, label=f"{kind} warm p99")
            ax2.plot(t, nan(s["cold_p50"]), color=c, ls=":", label=f"{kind} cold p50")
            ax3.plot(t, s["resident"], color=c, label=f"{kind}: loaded")
            if kind == "cache":
                ax3.plot(t, s["records"], color=c, ls="--", label="cache: distinct models loaded so far")
        ax4.plot(t, nan(s["rss"]), color=c, label=kind)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for ax in (ax1, ax2, ax3, ax4):
        ax.axvspan(0, data["warmup"], color="0.92")
        ax.grid(alpha=0.3)
    for ax in (ax2, ax4):
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=7)
    ax1.set_ylabel("hit rate")
    ax1.set_ylim(0, 1)
    ax1.legend(loc="lower right", fontsize=8)
    ax2.set_ylabel("latency ms")
    ax2.set_yscale("log")
    ax2.legend(loc="upper left", fontsize=7, ncol=3)
    ax3.set_ylabel("models")
    ax3.legend(loc="upper left", fontsize=8)
    ax4.set_ylabel("server RSS MiB")
    ax4.set_yscale("log")
    ax4.legend(loc="center right", fontsize=8)
    ax4.set_xlabel("seconds since the server was ready (shaded: warm-up, not measured)")
    fig.suptitle(data["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(dest, dpi=100)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--nereid", default=str(ROOT / "bin" / "nereid"), help="server binary (default bin/nereid)")
    ap.add_argument("--ort-library", default=os.environ.get("NEREID_ORT_LIBRARY")
                    or str(ROOT / ".ort" / "lib" / "libonnxruntime.so.1"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 s warm-up + 15 s per scenario, one round")
    ap.add_argument("--duration", type=float, default=45, help="measured seconds per scenario")
    ap.add_argument("--warmup", type=float, default=15, help="unmeasured seconds at the start of each scenario")
    ap.add_argument("--rounds", type=int, default=1, help="times each scenario runs, in turn")
    ap.add_argument("--scenarios", default="cache,lru,cache-measured,preloaded")
    ap.add_argument("--models", type=int, default=10000, help="models in the repository")
    ap.add_argument("--capacity", type=int, default=500, help="models the cache budget and the client LRU hold")
    ap.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent s of the model popularity")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=4, help="client threads (closed loop)")
    ap.add_argument("--sequence", type=int, default=200_000, help="requests drawn per thread (then repeated)")
    ap.add_argument("--sample", type=int, default=200, help="models loaded to measure the footprint")
    ap.add_argument("--load-threads", type=int, default=0, help="--model-load-thread-count (0: the server's default)")
    ap.add_argument("--start-timeout", type=float, default=600, help="seconds a server may take to get ready")
    ap.add_argument("--bin", type=float, default=2.0, help="seconds per point of the time series (1 with --quick)")
    ap.add_argument("--probe", type=int, default=100,
                    help="after the traffic, requests in a row from one client for models not loaded (0: none)")
    ap.add_argument("--repo", type=pathlib.Path, help="repository folder to write or reuse (default: a temporary one)")
    ap.add_argument("--pprof", action="store_true", help="profile the cache server's CPU over its measured window")
    ap.add_argument("--note", default="", help="a sentence for the report's header (how the binary was built, …)")
    ap.add_argument("--out", type=pathlib.Path,
                    help="report path (default perf/results/model_cache/<date>[-quick].md; the plot next to it)")
    ap.add_argument("--plot-only", nargs=2, metavar=("JSON", "PNG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads(pathlib.Path(args.plot_only[0]).read_text()), pathlib.Path(args.plot_only[1]))
        return 0
    if args.quick:
        args.warmup, args.duration, args.rounds, args.bin = 5, 15, 1, 1.0
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for s in args.scenarios:
        if s not in ("cache", "lru", "cache-measured", "preloaded"):
            sys.exit(f"unknown scenario {s}")
    if not pathlib.Path(args.nereid).exists():
        sys.exit(f"{args.nereid} is missing: make build")
    if not pathlib.Path(args.ort_library).exists():
        sys.exit(f"{args.ort_library} is missing: make ort")
    cmd = shlex.join([".venv/bin/python", "perf/model_cache_bench.py"] + sys.argv[1:])
    args.revision = revision()

    work = pathlib.Path(tempfile.mkdtemp(prefix="nereid-model-cache-"))
    repo = args.repo or work / "repo"
    repo_s = build_repo(repo, args.models)
    print(f"repository {repo}: {args.models} models" + (f", written in {repo_s:.1f} s" if repo_s else ", reused"),
          file=sys.stderr, flush=True)
    fp = footprint(args, repo, work)
    fp["declared"] = -(-int(fp["per_model_bytes"]) // 4096) * 4096
    print(f"footprint: {fp['per_model_bytes'] / 1024:.0f} KiB per model (RSS growth over {fp['sample']} loads); "
          f"memory_usage of the first model {fp['first_usage']:,} B, then median {fp['wave1'][1]:,.0f} B, "
          f"after unloads median {fp['wave2'][1]:,.0f} B", file=sys.stderr, flush=True)
    write_declared(repo, args.models, fp["declared"])
    seqs, by_rank = zipf_sequences(args)
    hot = set(int(i) for i in by_rank[: args.capacity])

    results = []
    for r in range(1, args.rounds + 1):
        for kind in args.scenarios:
            results.append(run_scenario(args, kind, repo, work, seqs, by_rank, hot, fp, r))

    out = args.out or ROOT / "perf" / "results" / "model_cache" / (
        f"{datetime.date.today()}{'-quick' if args.quick else ''}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    first = {r["scenario"]: r["series"] for r in results if r["round"] == 1}
    data = {"series": first, "warmup": args.warmup + 0.0,
            "title": f"{args.models:,} models, Zipf s={args.zipf}, capacity {args.capacity}, {args.threads} client "
                     f"threads (gRPC), round 1"}
    data_file = work / "series.json"
    data_file.write_text(json.dumps(data))
    plot_name = None
    try:
        import matplotlib  # noqa: F401
        plot(data, png)
        plot_name = png.name
    except ImportError:
        if REPORT_PYTHON.exists():
            res = subprocess.run([str(REPORT_PYTHON), __file__, "--plot-only", str(data_file), str(png)])
            plot_name = png.name if res.returncode == 0 else None
        else:
            print("no matplotlib here nor in .perf/venv (perf/setup venv): no plot", file=sys.stderr)

    profile_top = None
    prof = next((r.get("profile") for r in results if r.get("profile")), None)
    if prof and pathlib.Path(prof).exists():
        top = subprocess.run(["go", "tool", "pprof", "-top", "-nodecount=25", args.nereid, prof],
                             capture_output=True, text=True)
        profile_top = "\n".join(line for line in top.stdout.splitlines() if line.strip())

    text = report(args, results, fp, repo_s, cmd, plot_name, profile_top)
    out.write_text(text + "\n")
    print(text)
    print(f"\nwritten to {out}" + (f" and {png}" if plot_name else ""), file=sys.stderr)
    (work / "results.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "series"} for r in results], indent=1, default=str))
    if any(r["failed"] + r["failed_warmup"] for r in results):
        print(f"some requests failed: logs in {work}", file=sys.stderr)
    elif not args.repo and not args.pprof:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs in {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
