"""The soak: one server under steady mixed load (load.py) for a while,
sampled every two seconds, then left alone to settle.

What it holds the server to: no unexpected error, the server alive at the
end, and the goroutines and descriptors that the load created gone again
once it stops (settled goroutines <= baseline + 10, descriptors <=
baseline + 5). Memory and throughput are reported, never asserted: the
machines are shared and noisy, and a threshold on them would only flake.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import load
from common import CHILDREN, ROOT, free_ports, log

SAMPLE_INTERVAL_S = 2.0
READY_TIMEOUT_S = 60
# Slack over the baseline once the load has stopped: the runtime and the
# listeners keep a few goroutines and descriptors that come and go.
GOROUTINE_SLACK = 10
FD_SLACK = 5
BASELINE_WAIT_S = 20
SETTLE_WAIT_S = 30


# --------------------------------------------------------------------------
# The server


@dataclass
class SoakServer:
    """bin/nereid on loopback, every listener on a free port."""

    binary: pathlib.Path
    log_path: pathlib.Path
    ort_library: pathlib.Path | None
    proc: subprocess.Popen | None = None
    ports: dict = field(default_factory=dict)

    def argv(self) -> list[str]:
        argv = [
            str(self.binary),
            f"--model-repository={ROOT / 'model_repo_examples'}",
            "--allow-client-shm=true",
            "--http-address=127.0.0.1",
            f"--http-port={self.ports['http']}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.ports['grpc']}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.ports['metrics']}",
            f"--pprof-address=127.0.0.1:{self.ports['pprof']}",
        ]
        if self.ort_library is not None:
            argv.append(f"--backend-config=onnxruntime,library={self.ort_library}")
        return argv

    @property
    def target(self) -> load.Target:
        return load.Target(f"127.0.0.1:{self.ports['http']}", f"127.0.0.1:{self.ports['grpc']}")

    def start(self):
        self.ports = dict(zip(("http", "grpc", "metrics", "pprof"), free_ports(4)))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as out:
            self.proc = CHILDREN.popen(self.argv(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        try:
            return self.get(self.ports["http"], "/v2/health/ready", timeout=2)[0] == 200
        except OSError:
            return False

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"nereid exited with status {self.proc.returncode} during start-up:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"nereid was not ready within {READY_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> int | None:
        """SIGTERM (a graceful drain), then the exit status."""
        if self.proc is None:
            return None
        return CHILDREN.stop(self.proc, grace_s=40)

    @staticmethod
    def get(port: int, path: str, timeout: float = 5) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, ""

    def goroutine_profile(self) -> str:
        return self.get(self.ports["pprof"], "/debug/pprof/goroutine?debug=1", timeout=10)[1]

    def shm_regions(self) -> int | None:
        """System shared-memory regions still registered (None if unknown)."""
        try:
            status, body = self.get(self.ports["http"], "/v2/systemsharedmemory/status")
            return len(json.loads(body)) if status == 200 else None
        except (OSError, ValueError):
            return None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# --------------------------------------------------------------------------
# Sampling


GOROUTINE_TOTAL = re.compile(r"goroutine profile: total (\d+)")


class Probe:
    """Reads the server's footprint: memory and threads from /proc, open
    descriptors, and goroutines from its pprof listener."""

    def __init__(self, server: SoakServer, requests_so_far):
        self.server = server
        self.requests_so_far = requests_so_far
        self.samples: list[dict] = []
        self._t0 = time.monotonic()

    def sample(self, phase: str) -> dict:
        pid = self.server.proc.pid
        status = _proc_status(pid)
        s = {
            "t_s": round(time.monotonic() - self._t0, 1),
            "phase": phase,
            "rss_mib": round(status.get("VmRSS", 0) / 1024, 1),
            "hwm_mib": round(status.get("VmHWM", 0) / 1024, 1),
            "threads": status.get("Threads", 0),
            "fds": _fd_count(pid),
            "goroutines": self.goroutines(),
            "requests": self.requests_so_far(),
        }
        self.samples.append(s)
        return s

    def goroutines(self) -> int | None:
        try:
            m = GOROUTINE_TOTAL.search(self.server.goroutine_profile()[:200])
        except OSError:
            return None
        return int(m.group(1)) if m else None

    def wait_steady(self, phase: str, timeout_s: float, good=lambda s: True) -> dict:
        """Samples every second until three readings agree on goroutines and
        descriptors and `good` holds, or timeout_s passes; the last reading."""
        deadline = time.monotonic() + timeout_s
        recent = collections.deque(maxlen=3)
        while True:
            s = self.sample(phase)
            recent.append((s["goroutines"], s["fds"]))
            steady = len(recent) == 3 and len(set(recent)) == 1
            if (steady and good(s)) or time.monotonic() >= deadline or not self.server.alive():
                return s
            time.sleep(1)


def _proc_status(pid: int) -> dict:
    """VmRSS and VmHWM (KiB) and Threads from /proc/PID/status."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def _fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Sampler:
    """Takes a sample every SAMPLE_INTERVAL_S on its own thread."""

    def __init__(self, probe: Probe, phase: str):
        self.probe = probe
        self.phase = phase
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            if self.probe.server.alive():
                self.probe.sample(self.phase)


# --------------------------------------------------------------------------
# The run


def run(nereid: pathlib.Path, seconds: float, work_dir: pathlib.Path, ort_library: pathlib.Path | None,
        threads_per_kind: int = 1, seed: int = 1) -> dict:
    """Runs the soak; returns its result (status, failures, figures, samples)."""
    server = SoakServer(nereid, work_dir / "soak-nereid.log", ort_library)
    stats = load.Stats()
    probe = Probe(server, stats.total_requests)
    result: dict = {"duration_s": seconds, "server_log": str(server.log_path), "failures": []}
    try:
        server.start()
        server.wait_ready()
        result["server_argv"] = server.argv()
        probe.sample("ready")
        baseline, baseline_profile = _warm_up(server, probe, seed, result)
        _drive(server, probe, stats, seconds, threads_per_kind, seed, result)
        _settle(server, probe, baseline, baseline_profile, result)
    except Exception as e:  # noqa: BLE001 - the soak fails, the report says why
        result["failures"].append(f"soak aborted: {type(e).__name__}: {e}")
    finally:
        was_alive = server.alive()
        result["exit_status"] = server.stop()
        result["exited_gracefully"] = was_alive and result["exit_status"] == 0
    return _conclude(result, stats, probe, server)


def _warm_up(server: SoakServer, probe: Probe, seed: int, result: dict) -> tuple[dict, str]:
    """Every kind of exchange a few times, then the baseline: the footprint
    of a warm, idle server with no client connected."""
    log("soak: warm-up")
    result["failures"] += [f"warm-up: {e}" for e in load.warm_up(load.kinds(server.target, seed, 1))]
    baseline = probe.wait_steady("baseline", BASELINE_WAIT_S)
    result["baseline"] = baseline
    return baseline, server.goroutine_profile()


def _drive(server: SoakServer, probe: Probe, stats: load.Stats, seconds: float, threads_per_kind: int, seed: int,
           result: dict):
    """The load itself, sampled; ends early if the server dies."""
    log(f"soak: {seconds:g} s of load")
    running = load.Load(load.kinds(server.target, seed, threads_per_kind), stats)
    sampler = Sampler(probe, "load")
    started = time.monotonic()
    running.start()
    sampler.start()
    try:
        while time.monotonic() - started < seconds and server.alive():
            time.sleep(0.5)
        if server.alive():
            probe.sample("load")  # the last reading under load, clients still connected
    finally:  # also on Ctrl-C: the clients unregister and remove their shm objects
        result["load_s"] = round(time.monotonic() - started, 1)
        stuck = running.stop()
        sampler.stop()
    if stuck:
        result["failures"].append(f"client threads did not stop: {', '.join(stuck)}")


def _settle(server: SoakServer, probe: Probe, baseline: dict, baseline_profile: str, result: dict):
    """With every client gone, waits for the goroutines and descriptors the
    load made to go too, then reads what remains."""
    log("soak: waiting for the server to settle")
    result["settled"] = probe.wait_steady("settled", SETTLE_WAIT_S, good=lambda s: _within(s, baseline))
    alive = server.alive() and server.ready()
    result["alive_at_end"] = alive
    if alive:
        result["shm_regions_left"] = server.shm_regions()
        result["goroutine_growth"] = _profile_growth(baseline_profile, server.goroutine_profile())


def _conclude(result: dict, stats: load.Stats, probe: Probe, server: SoakServer) -> dict:
    result["stats"] = stats.snapshot()
    result["samples"] = probe.samples
    result["figures"] = figures(result, probe.samples)
    result["failures"] += check(result)
    if result["failures"]:
        result["server_log_tail"] = server.log_tail()
    result["status"] = "fail" if result["failures"] else "pass"
    return result


def _within(s: dict, baseline: dict) -> bool:
    return (s["goroutines"] is not None and baseline["goroutines"] is not None
            and s["goroutines"] <= baseline["goroutines"] + GOROUTINE_SLACK
            and s["fds"] is not None and s["fds"] <= baseline["fds"] + FD_SLACK)


def check(result: dict) -> list[str]:
    """The soak's assertions; each failure as a sentence."""
    failures = []
    unexpected = result["stats"]["unexpected_errors_total"]
    if unexpected:
        failures.append(f"{unexpected} unexpected errors (see the examples)")
    if not result.get("alive_at_end"):
        failures.append("the server was not alive and ready at the end of the load")
    if not result.get("exited_gracefully"):
        failures.append(f"SIGTERM did not end the server with status 0 (status {result.get('exit_status')})")
    base, settled = result.get("baseline"), result.get("settled")
    if base and settled:
        if settled["goroutines"] is None or settled["goroutines"] > base["goroutines"] + GOROUTINE_SLACK:
            failures.append(f"goroutines did not settle: {settled['goroutines']} > baseline {base['goroutines']} + {GOROUTINE_SLACK}")
        if settled["fds"] is None or settled["fds"] > base["fds"] + FD_SLACK:
            failures.append(f"descriptors did not settle: {settled['fds']} > baseline {base['fds']} + {FD_SLACK}")
    return failures


def figures(result: dict, samples: list[dict]) -> dict:
    """The summary the report shows: request rate, memory, goroutines, fds."""
    under_load = [s for s in samples if s["phase"] == "load"]
    total = result["stats"]["requests_total"]
    load_s = result.get("load_s") or 0
    f = {
        "requests_total": total,
        "requests_per_s": round(total / load_s, 1) if load_s else None,
        "unexpected_errors": result["stats"]["unexpected_errors_total"],
    }
    by_phase = {s["phase"]: s for s in samples}  # the last of each phase
    if under_load:
        f["rss_mib"] = {
            "ready": by_phase.get("ready", {}).get("rss_mib"),
            "start": result.get("baseline", {}).get("rss_mib"),
            "peak": max(s["rss_mib"] for s in samples),
            "hwm": max(s["hwm_mib"] for s in samples),
            "end": under_load[-1]["rss_mib"],
            "settled": result.get("settled", {}).get("rss_mib"),
        }
        f["rss_growth"] = _quarter_growth(under_load)
        for key in ("goroutines", "fds", "threads"):
            values = [s[key] for s in under_load if s[key] is not None]
            f[key] = {
                "baseline": result.get("baseline", {}).get(key),
                "peak": max(values) if values else None,
                "end": under_load[-1][key],
                "settled": result.get("settled", {}).get(key),
            }
    return f


def _quarter_growth(under_load: list[dict]) -> dict | None:
    """Mean RSS of the load's last quarter against its first: a leak shows
    as steady growth, a warm-up as a one-off step."""
    if len(under_load) < 4:
        return None
    t0, t1 = under_load[0]["t_s"], under_load[-1]["t_s"]
    span = t1 - t0
    first = [s["rss_mib"] for s in under_load if s["t_s"] <= t0 + span / 4]
    last = [s["rss_mib"] for s in under_load if s["t_s"] >= t1 - span / 4]
    a, b = sum(first) / len(first), sum(last) / len(last)
    return {"first_quarter_mib": round(a, 1), "last_quarter_mib": round(b, 1),
            "growth_mib": round(b - a, 1), "growth_pct": round(100 * (b - a) / a, 1) if a else None}


STACK_HEAD = re.compile(r"^(\d+) @ ")


def _profile_growth(before: str, after: str, top: int = 8) -> list[dict]:
    """Goroutine stacks (by their innermost frames) that grew between two
    debug=1 profiles: the first place to look when goroutines leak."""

    def groups(text: str) -> collections.Counter:
        counts = collections.Counter()
        blocks = text.split("\n\n")
        for block in blocks:
            lines = block.strip().splitlines()
            m = STACK_HEAD.match(lines[0]) if lines else None
            if not m:
                continue
            frames = [ln.split()[2] for ln in lines[1:] if ln.startswith("#\t") and len(ln.split()) > 2][:3]
            counts[" < ".join(frames)] += int(m.group(1))
        return counts

    b, a = groups(before), groups(after)
    grown = [(k, a[k] - b.get(k, 0)) for k in a if a[k] > b.get(k, 0)]
    grown.sort(key=lambda kv: -kv[1])
    return [{"stack": k, "grew_by": n, "now": a[k]} for k, n in grown[:top]]

