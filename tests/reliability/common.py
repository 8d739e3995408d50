"""What every part of the reliability suite shares: the repository's paths,
child processes that die with the runner, the record of where and how a
part ran, and the JSON files that carry a part's results to the report."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import shlex
import signal
import socket
import subprocess
import sys
import threading

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "tests" / "reliability" / "results"
REPORT_PATH = ROOT / "tests" / "reliability" / "report.md"
PARTS = ("attacks", "soak", "fuzz")


# --------------------------------------------------------------------------
# Child processes


class Children:
    """Every subprocess the runner starts, so that none outlives it.

    Each child leads its own process group: the servers that pytest starts
    and the workers that `go test -fuzz` forks are stopped with it, and a
    Ctrl-C at the terminal reaches only the runner, which then stops the
    groups in order instead of leaving them half-killed.
    """

    def __init__(self):
        self._lock = threading.Lock()  # guards _procs
        self._procs: set[subprocess.Popen] = set()

    def popen(self, argv, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        with self._lock:
            self._procs.add(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig=signal.SIGTERM, grace_s: float = 10.0) -> int | None:
        """Signals the child's group, waits `grace_s`, then kills the group.

        Returns the child's exit status (negative for a signal).
        """
        try:
            if proc.poll() is None:
                _signal_group(proc, sig)
                try:
                    proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    pass
            # The leader may be gone while its group lives on (pytest's servers).
            _signal_group(proc, signal.SIGKILL)
            return proc.wait()
        finally:
            with self._lock:
                self._procs.discard(proc)

    def release(self, proc: subprocess.Popen):
        """Forgets a child that exited on its own, after killing what it left."""
        self.stop(proc, grace_s=0)

    def stop_all(self):
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            self.stop(proc, grace_s=5.0)


def _signal_group(proc: subprocess.Popen, sig):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


CHILDREN = Children()


def run_captured(argv, cwd=ROOT, timeout=120) -> str:
    """A short command's stdout; raises on failure (git, go list)."""
    proc = CHILDREN.popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        CHILDREN.release(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed with status {proc.returncode}:\n{err.strip()}")
    return out


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports free at this moment (as tests/e2e does)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------
# Where and how a part ran


def git_state(repo: pathlib.Path = ROOT) -> dict:
    """The commit and whether the tree differed from it: a figure is only
    as good as knowing which code produced it."""
    try:
        commit = run_captured(["git", "rev-parse", "--short", "HEAD"], cwd=repo).strip()
        dirty = bool(run_captured(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo).strip())
    except (OSError, RuntimeError) as e:
        return {"commit": "unknown", "dirty": None, "error": str(e)}
    return {"commit": commit, "dirty": dirty}


def machine() -> dict:
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "mem_total_gib": round(mem_kib / 2**20, 1),
        "cpu": cpu,
        "kernel": platform.release(),
    }


def command_line() -> str:
    """How this run was started, as a shell would take it back."""
    exe = sys.executable
    try:
        exe = os.path.relpath(exe, ROOT) if pathlib.Path(exe).is_relative_to(ROOT) else exe
    except ValueError:
        pass
    return shlex.join([exe, *sys.argv])


def run_meta() -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        **git_state(),
        "machine": machine(),
        "command": command_line(),
    }


# --------------------------------------------------------------------------
# Results files


def write_result(results_dir: pathlib.Path, part: str, result: dict):
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{part}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


def read_results(results_dir: pathlib.Path) -> dict[str, dict]:
    """Every part's latest result found in results_dir, by part name."""
    found = {}
    for part in PARTS:
        path = results_dir / f"{part}.json"
        if path.exists():
            found[part] = json.loads(path.read_text())
    return found


def log(msg: str):
    """Progress on stdout; make shows it as it happens."""
    print(f"[reliability] {msg}", flush=True)
