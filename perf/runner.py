"""The performance harness: perf_analyzer against Nereid, its peers (Triton,
MLServer, KServe) and the ceiling, one server at a time, with the same models
and settings.

Run it through perf/run (which makes .perf/ with perf/setup first):

    perf/run                 # the full run
    perf/run --quick         # a smoke run: short windows, two concurrencies
    perf/run --report-only perf/results/DATE   # redo summary.md and the plot

Every perf_analyzer run is one server x protocol x model x concurrency x
repetition. Its raw CSV lands in RESULTS/raw/, one line per run in
RESULTS/runs.csv (with the server's CPU and memory use read from /proc
during the run), and report.py writes RESULTS/summary.md and
RESULTS/throughput_vs_p99.png from the medians over repetitions.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import pathlib
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import report

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "peers"))
import triton_launcher  # noqa: E402 - perf/peers: the Triton launcher python_bench.py uses too

ROOT = pathlib.Path(__file__).resolve().parent.parent
PERF = ROOT / ".perf"
PERF_ANALYZER = ROOT / "perf" / "perf_analyzer"

# Protocol variants: perf_analyzer flags.
PROTOCOLS = {
    "grpc": ["-i", "grpc"],
    "http": ["-i", "http"],  # binary tensor data, perf_analyzer's default
    "http-json": ["-i", "http", "--input-tensor-format=json", "--output-tensor-format=json"],
}

# Why a server skips a protocol or model (shown in the summary).
NOT_SUPPORTED = {
    ("mlserver", "http"): "MLServer has no binary tensor data over HTTP (SeldonIO/MLServer#324)",
    ("kserve", "http-json"): 'KServe\'s JSON responses carry "parameters": null on every output, '
                             "which Triton's HTTP client (perf_analyzer's) reads as binary data and fails",
    ("nereid-shm", "http-json"): "with shared memory no tensor data travels in the body",
}

# Why a server of the Python twins does not serve a model (shown in the summary).
NO_TWIN = "no Python twin of this model in model_repo_examples (PYTHON_TWINS in perf/peers/triton_launcher.py)"

# Default shapes for inputs with variable dims (perf_analyzer's --shape).
DEFAULT_SHAPES = {("identity_fp32", "INPUT0"): [1024]}


class Server:
    """One server under test: how to start it and what it serves."""

    def __init__(self, name, label, protocols, models=None, shm=False, backend=None, python=False):
        self.name, self.label, self.protocols, self.models, self.shm = name, label, protocols, models, shm
        # backend: serve the models with this Nereid backend instead of the
        # one their configuration names (a repository made for the run).
        self.backend = backend
        # python: serve the models' Python twins (ctx.python_repository).
        self.python = python

    def unavailable(self, ctx):
        """Why this server cannot run here, or None. A server that cannot is
        left out of the run with the reason in the report, not failed."""
        if self.name == "triton":
            return triton_launcher.missing(ctx.args.triton_dir)
        if self.name == "nereid-python" and not pathlib.Path(ctx.args.python).exists():
            return f"{ctx.args.python} is missing (the Python backend's interpreter): run make venv or pass --python"
        if self.name in ("mlserver", "kserve") and not (PERF / self.name / "bin" / "python").exists():
            return f"{PERF / self.name} is missing: run perf/setup {self.name}"
        return None

    def why_not_served(self, model):
        """Why this server does not serve model, when there is a reason to
        give (the report's Servers table)."""
        if not self.python:
            return None
        if self.name == "triton":
            return "the installed Triton has only the Python backend; " + NO_TWIN
        return NO_TWIN

    def env(self, ctx):
        """The server's environment (None: the harness's)."""
        if self.name == "triton":
            return ctx.triton_env
        return None

    def repository(self, ctx):
        if self.python:
            return ctx.python_repository
        return ctx.repository if self.backend is None else ctx.out / f"repository-{self.backend}"

    def supports(self, protocol, model):
        return protocol in self.protocols and (self.models is None or model in self.models)

    def command(self, ctx, ports, models):
        http, grpc, metrics = ports
        if self.name.startswith("nereid"):
            cmd = [ctx.nereid, f"--model-repository={self.repository(ctx)}", "--http-address=127.0.0.1",
                   "--grpc-address=127.0.0.1", f"--http-port={http}", f"--grpc-port={grpc}",
                   f"--metrics-port={metrics}", f"--backend-config=onnxruntime,library={ctx.ort_library}"]
            if self.python:
                cmd.append(f"--backend-config=python,python-executable={ctx.args.python}")
            if self.shm:
                cmd.append("--allow-client-shm=true")
            return cmd
        if self.name == "triton":
            return triton_launcher.command(ctx.triton_env, self.repository(ctx), http, grpc, metrics,
                                           f"nereid_perf_{os.getpid()}_{http}")
        if self.name == "ceiling":
            return [str(PERF / "bin" / "ceiling"), "--address=127.0.0.1", f"--http-port={http}",
                    f"--grpc-port={grpc}", "--models=" + ",".join(models)]
        if self.name == "mlserver":
            return [str(PERF / "mlserver" / "bin" / "python"), str(ROOT / "perf" / "peers" / "mlserver_ort.py"),
                    f"--model-repository={ctx.repository}", "--models=" + ",".join(models),
                    "--address=127.0.0.1", f"--http-port={http}", f"--grpc-port={grpc}",
                    f"--metrics-port={metrics}"]
        if self.name == "kserve":
            return [str(PERF / "kserve" / "bin" / "python"), str(ROOT / "perf" / "peers" / "kserve_ort.py"),
                    f"--model-repository={ctx.repository}", "--models=" + ",".join(models),
                    f"--http-port={http}", f"--grpc-port={grpc}"]
        raise ValueError(self.name)


SERVERS = {s.name: s for s in [
    Server("nereid", "Nereid", ["grpc", "http", "http-json"]),
    Server("nereid-shm", "Nereid + shm", ["grpc", "http"], shm=True),
    # The same server with Nereid's identity backend instead of ONNX Runtime
    # for identity_fp32: Nereid's own cost against the ceiling, without
    # ONNX Runtime's (the ceiling computes in Go, see perf/ceiling).
    Server("nereid-identity", "Nereid, identity backend", ["grpc", "http"], models={"identity_fp32"},
           backend="identity"),
    # The same server on the Python twins of the models (the Python
    # backend, the same model.py files as Triton's rows).
    Server("nereid-python", "Nereid, Python backend", ["grpc", "http", "http-json"],
           models=set(triton_launcher.PYTHON_TWINS), python=True),
    Server("ceiling", "ceiling", ["grpc", "http", "http-json"], models={"simple", "identity_fp32"}),
    # The real Triton (scripts/install-triton.sh): Python backend only.
    Server("triton", "Triton", ["grpc", "http", "http-json"], models=set(triton_launcher.PYTHON_TWINS),
           python=True),
    Server("mlserver", "MLServer", ["grpc", "http-json"]),
    Server("kserve", "KServe", ["grpc", "http"]),
]}

RUN_FIELDS = [
    "server", "protocol", "model", "concurrency", "rep", "status", "stable", "mode",
    "throughput", "p50_us", "p90_us", "p95_us", "p99_us",
    # perf_analyzer's breakdown of the average request (server-side parts
    # only where the server has the statistics extension: Nereid).
    "client_send_us", "network_server_us", "server_queue_us", "server_compute_us", "client_recv_us",
    "server_cpu_cores", "server_cpu_us_per_infer", "server_rss_mib", "client_cpu_cores", "steal_pct", "wall_s",
    "error", "raw_csv",
]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- the process tree of a server, from /proc ------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children():
    """parent pid -> child pids, for every process."""
    kids = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


# perf_analyzer's --warmup-request-count before each measurement (at least
# four per concurrent request).
WARMUP_REQUESTS = 200
# -s for the fallback measurement that accepts any spread (see
# run_perf_analyzer).
ANY_SPREAD = 1000

# A perf_analyzer this large is hung (see run_perf_analyzer); a healthy one
# stays under a few hundred MiB even at concurrency 64.
CLIENT_RSS_LIMIT_MIB = 1024


def steal_ticks():
    """CPU time the hypervisor gave to others (all CPUs, clock ticks)."""
    try:
        with open("/proc/stat") as f:
            return int(f.readline().split()[8])
    except (OSError, ValueError, IndexError):
        return 0


def process_tree(pid):
    kids, tree, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(kids.get(p, []))
    return tree


def cpu_seconds(pids):
    """User + system CPU seconds of the processes."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return total / CLK_TCK


def rss_mib(pids):
    """Sum of the processes' resident set sizes (shared pages counted in
    each process)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            pass
    return total / 1024


class Sampler:
    """Samples a process tree's CPU time and peak RSS while a run lasts."""

    def __init__(self, pid, interval=0.25):
        self.pid, self.interval = pid, interval
        self.peak_rss = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self.tree = process_tree(self.pid)
        self.cpu0, self.t0 = cpu_seconds(self.tree), time.monotonic()
        self.steal0 = steal_ticks()
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.tree = process_tree(self.pid)
            self.peak_rss = max(self.peak_rss, rss_mib(self.tree))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.wall = time.monotonic() - self.t0
        self.steal = steal_ticks() - self.steal0
        self.cpu = cpu_seconds(process_tree(self.pid)) - self.cpu0
        self.peak_rss = max(self.peak_rss, rss_mib(self.tree))


# ---- servers ---------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url, timeout=1.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


class Running:
    """A started server: its process, ports and log."""

    def __init__(self, server, ctx, models):
        self.server = server
        self.ports = (free_port(), free_port(), free_port())
        self.log_path = ctx.out / "logs" / f"{server.name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = server.command(ctx, self.ports, models)
        self.t0 = time.monotonic()
        with open(self.log_path, "ab") as logf:
            logf.write(("$ " + " ".join(map(str, cmd)) + "\n").encode())
            logf.flush()
            # Its own process group, so that stopping it stops its workers
            # too; not its own session: with the kernel's autogroup
            # scheduling (sched_autogroup_enabled, on by default) a new
            # session is a separate CPU group that gets half the machine
            # against perf_analyzer's whole group, which skews every number
            # and made perf_analyzer's HTTP client spin and hang at
            # concurrency 16 and 64.
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT,
                                         process_group=0, env=server.env(ctx), stdin=subprocess.DEVNULL)
        self.url = f"127.0.0.1:{self.ports[0]}"
        self.grpc_url = f"127.0.0.1:{self.ports[1]}"

    def wait_ready(self, models, timeout=180):
        deadline = time.monotonic() + timeout
        urls = [f"http://{self.url}/v2/health/ready"] + [f"http://{self.url}/v2/models/{m}/ready" for m in models]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.server.name} exited with status {self.proc.returncode}; see {self.log_path}")
            if all(http_ok(u) for u in urls):
                self.startup_s = time.monotonic() - self.t0
                time.sleep(0.5)  # let the last model settle (workers, warm-up)
                self.idle_rss = rss_mib(process_tree(self.proc.pid))
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.server.name} not ready after {timeout} s; see {self.log_path}")

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        # Workers that outlived their parent.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def server_metadata(running):
    """The server's name and version (GET /v2), for the report."""
    try:
        with urllib.request.urlopen(f"http://{running.url}/v2", timeout=5) as r:
            meta = json.loads(r.read())
        return {"name": meta.get("name", ""), "version": meta.get("version", "")}
    except (OSError, ValueError):
        return {}


def make_backend_repository(ctx, server, models):
    """A repository of the models the server serves, whose configurations
    name server.backend instead of their platform or backend."""
    repo = ctx.out / f"repository-{server.backend}"
    for m in models:
        if not server.supports(server.protocols[0], m):
            continue
        text = (pathlib.Path(ctx.args.repository) / m / "config.pbtxt").read_text()
        text = re.sub(r'^(platform|backend):\s*"[^"]*"\s*$', "", text, flags=re.M)
        (repo / m / "1").mkdir(parents=True, exist_ok=True)
        (repo / m / "config.pbtxt").write_text(f'backend: "{server.backend}"\n' + text)


def model_format(config_text):
    """What serves a model, from its config.pbtxt: "ONNX", "Python", ..."""
    found = re.search(r'^(platform|backend):\s*"([^"]*)"', config_text, re.M)
    kind = found.group(2) if found else ""
    return {"onnxruntime_onnx": "ONNX", "onnxruntime": "ONNX", "python": "Python",
            "identity": "identity backend"}.get(kind, kind or "?")


def formats(ctx, servers, models):
    """server -> model -> the format it serves the model in (the report puts
    it on each row and says where formats differ)."""
    out = {}
    for server in servers:
        served = {}
        for m in models:
            if server.models is not None and m not in server.models:
                continue
            if server.name == "ceiling":
                served[m] = "Go (built in)"
                continue
            config = server.repository(ctx) / m / "config.pbtxt"
            if config.exists():
                fmt = model_format(config.read_text())
                twin = ctx.twins.get(m) if server.python else None
                served[m] = f"{fmt} ({twin})" if twin else fmt
        out[server.name] = served
    return out


# ---- input data --------------------------------------------------------------

def model_inputs(config_text):
    """(name, datatype, dims) of each input in a config.pbtxt."""
    block = re.search(r"^input\s*\[(.*?)^\]", config_text, re.S | re.M)
    if not block:
        return []
    out = []
    for m in re.finditer(r"name:\s*\"([^\"]+)\".*?data_type:\s*TYPE_(\w+).*?dims:\s*\[([^\]]*)\]", block.group(1), re.S):
        dims = [int(d) for d in m.group(3).replace(",", " ").split()]
        out.append((m.group(1), "BYTES" if m.group(2) == "STRING" else m.group(2), dims))
    return out


def write_input_data(model, config_text, shapes, path, entries=4, seed=7):
    """perf_analyzer --input-data JSON: a few batch-1 requests of
    deterministic values in a realistic range (random bit patterns would be
    NaN or denormal floats, which JSON cannot carry and which slow
    arithmetic down)."""
    rng = random.Random(f"{seed}-{model}")
    data = []
    for _ in range(entries):
        entry = {}
        for name, datatype, dims in model_inputs(config_text):
            shape = shapes.get((model, name)) or dims
            if any(d < 0 for d in shape):
                raise SystemExit(f"{model}: input {name} has variable dims {dims}: give --shape {model}:{name}:N,...")
            n = 1
            for d in shape:
                n *= d
            if datatype.startswith("FP"):
                content = [round(rng.uniform(-1, 1), 4) for _ in range(n)]
            elif datatype.startswith("INT") or datatype.startswith("UINT"):
                content = [rng.randint(0, 100) for _ in range(n)]
            elif datatype == "BOOL":
                content = [rng.random() < 0.5 for _ in range(n)]
            else:
                content = [str(rng.randint(0, 100)) for _ in range(n)]
            entry[name] = {"content": content, "shape": shape} if shape != dims else content
        data.append(entry)
    path.write_text(json.dumps({"data": data}))


# ---- perf_analyzer runs --------------------------------------------------------

def parse_pa_csv(path):
    """perf_analyzer's -f CSV. The server-side columns are there only when
    the server has the statistics extension."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no data row")
    r = rows[0]

    def us(*columns):
        if not all(r.get(c) not in (None, "") for c in columns):
            return ""
        return sum(float(r[c]) for c in columns)

    return {
        "throughput": float(r["Inferences/Second"]),
        "p50_us": us("p50 latency"), "p90_us": us("p90 latency"),
        "p95_us": us("p95 latency"), "p99_us": us("p99 latency"),
        "client_send_us": us("Client Send"), "network_server_us": us("Network+Server Send/Recv"),
        "server_queue_us": us("Server Queue"),
        "server_compute_us": us("Server Compute Input", "Server Compute Infer", "Server Compute Output"),
        "client_recv_us": us("Client Recv"),
    }


def run_perf_analyzer(ctx, running, protocol, model, concurrency, rep):
    """One measurement; returns a runs.csv row."""
    server = running.server
    raw = ctx.out / "raw" / server.name / protocol / model / f"c{concurrency}-r{rep}.csv"
    raw.parent.mkdir(parents=True, exist_ok=True)
    url = running.grpc_url if protocol == "grpc" else running.url
    base = [str(PERF_ANALYZER), "-m", model, "-u", url, *PROTOCOLS[protocol],
            "--input-data", str(ctx.out / "inputs" / f"{model}.json"),
            "--concurrency-range", str(concurrency), "-f", str(raw), "-v",
            # Unmeasured requests first: lazy start-up work (the Python
            # backend's stubs, first allocations, connection set-up) is
            # not measured, for every server alike.
            "--warmup-request-count", str(max(WARMUP_REQUESTS, 4 * concurrency))]
    if server.shm:
        base += ["--shared-memory=system"]
    window = ctx.args.window_ms
    stable_args = ["-p", str(window), "-s", str(ctx.args.stability), "-r", str(ctx.args.max_trials)]
    row = {"server": server.name, "protocol": protocol, "model": model, "concurrency": concurrency,
           "rep": rep, "raw_csv": str(raw.relative_to(ctx.out))}

    def attempt(args):
        # Generous for a slow window, short enough that a hung client
        # costs a minute, not several. perf_analyzer's HTTP client has been
        # seen to hang at concurrency 16 and 64 when the machine is
        # starved of CPU (high steal time): its threads spin and its
        # memory grows by tens of MB a second while responses sit unread
        # in its sockets, against Nereid and the ceiling alike. A client
        # past CLIENT_RSS_LIMIT_MIB is that hang; it is stopped at once.
        timeout = 30 + (ctx.args.max_trials + 2) * window / 1000 * 2
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        with Sampler(running.proc.pid) as s, tempfile.TemporaryFile("w+") as outf:
            p = subprocess.Popen(base + args, stdout=outf, stderr=subprocess.STDOUT, text=True)
            deadline, why = time.monotonic() + timeout, ""
            while p.poll() is None:
                if time.monotonic() > deadline:
                    why = f"timed out after {timeout:.0f} s"
                elif rss_mib([p.pid]) > CLIENT_RSS_LIMIT_MIB:
                    why = f"hung (its memory passed {CLIENT_RSS_LIMIT_MIB} MiB)"
                if why:
                    p.kill()
                    p.wait()
                    break
                time.sleep(0.25)
            outf.seek(0)
            out, rc = outf.read(), p.returncode
            if why:
                out, rc = out + f"\nerror: perf_analyzer {why}", -1
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        return out, rc, s, client_cpu

    out, rc, s, client_cpu = attempt(stable_args)
    (raw.with_suffix(".log")).write_text(out)
    if rc == -1:  # timed out: once more
        log(f"{server.label} {protocol} {model} c={concurrency}: {out.strip().splitlines()[-1]}; trying once more")
        out, rc, s, client_cpu = attempt(stable_args)
        (raw.with_suffix(".again.log")).write_text(out)
    row.update(mode="windows", stable=True)
    if rc != 0 and "Failed to obtain stable measurement" in out:
        # No stable window within max_trials: measure again over three
        # windows with any spread accepted and mark the row unstable.
        # perf_analyzer's -s bounds max / min of the three windows at
        # 1 + s/100, so -s 100 still refused windows of 700 and 2,300
        # inferences/s (seen on a loaded machine); -s 1000 takes up to 11x.
        # perf_analyzer's --request-count mode, used for this before,
        # sometimes never returned: its workers had finished and its main
        # thread slept on, against Nereid and the ceiling alike.
        out, rc, s, client_cpu = attempt(["-p", str(window), "-s", str(ANY_SPREAD), "-r", "3"])
        (raw.with_suffix(".retry.log")).write_text(out)
        row.update(mode="3 windows, any spread", stable=False)
    if rc != 0 or not raw.exists():
        errors = [line.strip() for line in out.splitlines()
                  if re.search(r"error|failed|what\(\)|unable", line, re.I)]
        row.update(status="error", error=(errors[-1] if errors else f"perf_analyzer exit status {rc}")[:300])
        return row
    try:
        row.update(parse_pa_csv(raw))
    except (OSError, ValueError, KeyError) as e:
        row.update(status="error", error=f"unreadable perf_analyzer CSV: {e!r}")
        return row
    row.update(
        status="ok",
        server_cpu_cores=round(s.cpu / s.wall, 3),
        server_cpu_us_per_infer=round(s.cpu / s.wall / row["throughput"] * 1e6, 1) if row["throughput"] else "",
        server_rss_mib=round(s.peak_rss, 1),
        client_cpu_cores=round(client_cpu / s.wall, 3),
        steal_pct=round(100 * s.steal / CLK_TCK / s.wall / (os.cpu_count() or 1), 1),
        wall_s=round(s.wall, 2),
    )
    return row


# ---- the run -----------------------------------------------------------------

class Context:
    pass


def git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def environment(ctx):
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass

    def pinned(path, names):
        found = {}
        for line in (ROOT / path).read_text().splitlines():
            name, _, version = line.partition("==")
            if name.lower() in names:
                found[name] = version
        return found

    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "go": subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip(),
        "cpu": cpu, "cores": os.cpu_count(),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "perf_analyzer": (PERF / "pa" / "VERSIONS").read_text().splitlines(),
        "mlserver": pinned("perf/peers/requirements-mlserver.txt", {"mlserver", "onnxruntime", "uvloop"}),
        "kserve": pinned("perf/peers/requirements-kserve.txt", {"kserve", "onnxruntime", "uvicorn"}),
        "triton": getattr(ctx, "triton_version", {}),
        "settings": {k: v for k, v in vars(ctx.args).items() if k not in ("report_only",)},
        "warmup_requests": WARMUP_REQUESTS,
    }


def results_dir(args):
    if args.out:
        return pathlib.Path(args.out)
    base = ROOT / "perf" / "results" / (datetime.date.today().isoformat() + ("-quick" if args.quick else ""))
    out, n = base, 2
    while out.exists():
        out, n = base.with_name(f"{base.name}-{n}"), n + 1
    return out


def build(ctx):
    (PERF / "bin").mkdir(parents=True, exist_ok=True)
    log("go build perf/ceiling" + ("" if ctx.args.nereid else " and cmd/nereid"))
    subprocess.run(["go", "build", "-o", str(PERF / "bin" / "ceiling"), "./perf/ceiling"], cwd=ROOT, check=True)
    if ctx.args.nereid:
        ctx.nereid = str(pathlib.Path(ctx.args.nereid).resolve())
    else:
        subprocess.run(["go", "build", "-o", str(PERF / "bin" / "nereid"), "./cmd/nereid"], cwd=ROOT, check=True)
        ctx.nereid = str(PERF / "bin" / "nereid")
    ctx.ort_library = str(pathlib.Path(ctx.args.ort_library).resolve())
    if not pathlib.Path(ctx.ort_library).exists():
        raise SystemExit(f"ONNX Runtime library {ctx.ort_library} is missing: run make ort (or pass --ort-library)")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="perf/run", description="perf_analyzer against Nereid, its peers and the ceiling.")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: concurrency 1,16, one repetition, 500 ms windows, 50%% stability, 4 trials")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated, of: " + ", ".join(SERVERS))
    p.add_argument("--models", default="simple,identity_fp32,mlp_fp32")
    p.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated, of: " + ", ".join(PROTOCOLS))
    p.add_argument("--concurrency", default=None, help="comma-separated (default 1,4,16,64)")
    p.add_argument("--reps", type=int, default=None, help="repetitions; medians are reported (default 3)")
    p.add_argument("--window-ms", type=int, default=None, help="perf_analyzer -p (default 1000)")
    p.add_argument("--stability", type=int, default=None,
                   help="perf_analyzer -s, percent (default 10); also the report's threshold: a cell whose "
                        "repetitions disagree by more is flagged, not quoted")
    p.add_argument("--max-trials", type=int, default=None, help="perf_analyzer -r (default 6)")
    p.add_argument("--shape", action="append", default=[], metavar="MODEL:INPUT:D1,D2",
                   help="shape of a variable-size input (default identity_fp32:INPUT0:1024)")
    p.add_argument("--repository", default=str(ROOT / "model_repo_examples"))
    p.add_argument("--nereid", help="a nereid binary (default: build the working tree into .perf/bin)")
    p.add_argument("--ort-library", default=str(ROOT / ".ort" / "lib" / "libonnxruntime.so.1"))
    p.add_argument("--triton-dir", default=str(triton_launcher.DEFAULT_DIR),
                   help="the Triton install (scripts/install-triton.sh); without it Triton is left out")
    p.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"),
                   help="the interpreter of Nereid's Python backend (nereid-python)")
    p.add_argument("--out", help="results directory (default perf/results/DATE[-quick])")
    p.add_argument("--report-only", metavar="DIR", help="only redo summary.md and the plot of DIR")
    args = p.parse_args(argv)
    quick = {"concurrency": "1,16", "reps": 1, "window_ms": 500, "stability": 50, "max_trials": 4}
    full = {"concurrency": "1,4,16,64", "reps": 3, "window_ms": 1000, "stability": 10, "max_trials": 6}
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def log_row(server, row):
    head = f"{server.label:12} {row['protocol']:9} {row['model']:14} c={row['concurrency']:<3} r{row['rep']} "
    if row["status"] != "ok":
        log(head + "ERROR " + row["error"])
        return
    log(head + f"{row['throughput']:9.1f} inf/s  p50 {row['p50_us'] / 1000:7.2f} ms  "
        f"p99 {row['p99_us'] / 1000:7.2f} ms  cpu {row['server_cpu_cores']:.2f}"
        + ("" if row["stable"] else "  (unstable)"))


def main(argv):
    args = parse_args(argv)
    if args.report_only:
        report.write(pathlib.Path(args.report_only))
        return 0
    ctx = Context()
    ctx.args = args
    for name in args.servers.split(","):
        if name not in SERVERS:
            raise SystemExit(f"unknown server {name}: one of {', '.join(SERVERS)}")
    servers = [SERVERS[s] for s in args.servers.split(",")]
    models = args.models.split(",")
    protocols = args.protocols.split(",")
    for p in protocols:
        if p not in PROTOCOLS:
            raise SystemExit(f"unknown protocol {p}")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    shapes = dict(DEFAULT_SHAPES)
    for s in args.shape:
        model, name, dims = s.split(":")
        shapes[(model, name)] = [int(d) for d in dims.split(",")]

    ctx.out = results_dir(args)
    (ctx.out / "inputs").mkdir(parents=True, exist_ok=True)
    build(ctx)
    # The repository every server serves: the selected models only.
    ctx.repository = ctx.out / "repository"
    ctx.repository.mkdir(exist_ok=True)
    for m in models:
        src = pathlib.Path(args.repository) / m
        if not (src / "config.pbtxt").exists():
            raise SystemExit(f"no model {m} in {args.repository}")
        link = ctx.repository / m
        if not link.exists():
            link.symlink_to(src.resolve())
        write_input_data(m, (src / "config.pbtxt").read_text(), shapes, ctx.out / "inputs" / f"{m}.json")
    for server in servers:
        if server.backend is not None:
            make_backend_repository(ctx, server, models)
    # Servers that cannot run here (Triton not installed, ...) are left out
    # with the reason in the report.
    left_out = {}
    for server in servers:
        why = server.unavailable(ctx)
        if why:
            left_out[server.name] = why
            log(f"{server.label}: left out: {why}")
    servers = [s for s in servers if s.name not in left_out]
    ctx.python_repository = ctx.out / "repository-python"
    ctx.twins = {}
    if any(s.python for s in servers):
        ctx.twins = triton_launcher.python_repository(args.repository, ctx.python_repository, models)
    if any(s.name == "triton" for s in servers):
        ctx.triton_env = triton_launcher.environment(args.triton_dir)
    env = environment(ctx)
    env["formats"] = formats(ctx, servers, models)
    log(f"results in {ctx.out.relative_to(ROOT) if ctx.out.is_relative_to(ROOT) else ctx.out}")

    runs_path = ctx.out / "runs.csv"
    servers_info = {}
    # Repetitions are the outer loop and every server restarts in each, so
    # that load that comes and goes on the machine is spread over all of
    # them rather than falling on one.
    with open(runs_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RUN_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for rep in range(1, args.reps + 1):
            for server in servers:
                served = [m for m in models if server.models is None or m in server.models]
                plan = [(p, m) for p in protocols for m in served if server.supports(p, m)]
                if not plan:
                    continue
                info = servers_info.setdefault(server.name, {
                    "startup_s": [], "idle_rss_mib": [],
                    "skipped": sorted({p for p in protocols if (server.name, p) in NOT_SUPPORTED}),
                    "models_not_served": [m for m in models if m not in served],
                    "why_not_served": {m: server.why_not_served(m) for m in models
                                       if m not in served and server.why_not_served(m)}})
                log(f"{server.label}: starting (repetition {rep} of {args.reps})")
                running = Running(server, ctx, served)
                try:
                    running.wait_ready(served)
                    info["startup_s"].append(round(running.startup_s, 2))
                    info["idle_rss_mib"].append(round(running.idle_rss, 1))
                    log(f"{server.label}: ready in {running.startup_s:.1f} s, {running.idle_rss:.0f} MiB")
                    if server.name == "triton" and not getattr(ctx, "triton_version", None):
                        ctx.triton_version = server_metadata(running)
                    for protocol, model in plan:
                        for c in concurrencies:
                            row = run_perf_analyzer(ctx, running, protocol, model, c, rep)
                            writer.writerow(row)
                            f.flush()
                            log_row(server, row)
                except RuntimeError as e:
                    log(f"{server.label}: {e}")
                    info["error"] = str(e)
                finally:
                    running.stop()
    env["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    env["triton"] = getattr(ctx, "triton_version", {})
    for name, why in left_out.items():
        servers_info[name] = {"left_out": why}
    env["servers"] = servers_info
    env["not_supported"] = {f"{s}/{p}": why for (s, p), why in NOT_SUPPORTED.items()}
    (ctx.out / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
    shutil.rmtree(ctx.repository)  # symlinks into the checkout, not results
    shutil.rmtree(ctx.python_repository, ignore_errors=True)  # copies of model_repo_examples
    for server in servers:
        if server.backend is not None:
            shutil.rmtree(ctx.out / f"repository-{server.backend}", ignore_errors=True)
    report.write(ctx.out)
    log(f"wrote {ctx.out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
