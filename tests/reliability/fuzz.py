"""The fuzz part: every native Go fuzz target of the module for a while.

`make test` fuzzes each target for seconds; this gives each one minutes,
which is where the inputs that take several mutations to reach are found.
With --fuzz-isolated the targets are built from a fresh git worktree of
HEAD, so that a run of an hour is not broken by code being edited in the
working tree meanwhile (and states exactly which commit it fuzzed).
"""

from __future__ import annotations

import os
import pathlib
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time

from common import CHILDREN, ROOT, git_state, log, run_captured

# go test prints this every few seconds while fuzzing; the last one counts.
PROGRESS = re.compile(r"fuzz: elapsed: (\S+), execs: (\d+) \([\d.]+/sec\), new interesting: (\d+) \(total: (\d+)\)")
FAILING_INPUT = re.compile(r"Failing input written to (\S+)")
SKIPPED = re.compile(r"--- SKIP: \S+ \([^)]*\)\n\s*(.*)")
GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
# Room for compiling the target and minimizing a failure, over -fuzztime.
SLACK_S = 900


def go_seconds(text: str) -> float | None:
    """A Go duration ("10m", "1m30s", "500ms") in seconds; None for "100x"."""
    if text.endswith("x"):
        return None
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Go duration: {text!r}")
    return sum(float(n) * scale[u] for n, u in parts)


def list_targets(module_dir: pathlib.Path) -> list[tuple[str, str]]:
    """(package, target) for every Fuzz function, as the Makefile's test-fuzz
    lists them: `go test -list` prints a package's names, then its ok line."""
    out = run_captured(["nice", "-n", "10", "go", "test", "-list", "^Fuzz", "./..."], cwd=module_dir, timeout=1800)
    targets, names = [], []
    for line in out.splitlines():
        if line.startswith("Fuzz"):
            names.append(line.strip())
        elif line.startswith("ok "):
            pkg = line.split()[1]
            targets += [(pkg, n) for n in names]
            names = []
    return targets


def package_dirs(module_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    out = run_captured(["go", "list", "-f", "{{.ImportPath}} {{.Dir}}", "./..."], cwd=module_dir)
    return {imp: pathlib.Path(d) for imp, d in (line.split(" ", 1) for line in out.splitlines() if " " in line)}


def fuzz_one(module_dir: pathlib.Path, pkg: str, name: str, fuzz_time: str, log_path: pathlib.Path,
             env: dict) -> dict:
    """Runs one target; its outcome and figures from go test's output (-v,
    so that a target that skips itself says why)."""
    argv = ["nice", "-n", "10", "go", "test", "-v", "-run=^$", f"-fuzz=^{name}$", f"-fuzztime={fuzz_time}",
            "-parallel=1", pkg]
    limit = go_seconds(fuzz_time)
    limit = (limit if limit is not None else 3 * 3600) + SLACK_S
    started = time.monotonic()
    with open(log_path, "w") as out:
        proc = CHILDREN.popen(argv, cwd=module_dir, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        timed_out = False
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            status = CHILDREN.stop(proc)
    result = {"package": pkg, "name": name, "duration_s": round(time.monotonic() - started, 1),
              "command": " ".join(argv), "log": str(log_path), "exit_status": status}
    text = log_path.read_text(errors="replace")
    progress = PROGRESS.findall(text)
    if progress:
        elapsed, execs, new, total = progress[-1]
        result.update(fuzz_s=go_seconds(elapsed), execs=int(execs), new_interesting=int(new), corpus_total=int(total))
    failing = FAILING_INPUT.findall(text)
    skipped = SKIPPED.search(text)
    if timed_out:
        result.update(outcome="fail", reason=f"still running after {limit:.0f} s; stopped")
    elif status != 0 and not failing and deadline_race(text):
        # Go 1.26's coordinator race at the -fuzztime boundary
        # (golang/go#75804): nothing was found, and the run was complete.
        result.update(outcome="pass", note="ended by Go's fuzztime deadline race (golang/go#75804); no failing input")
    elif status != 0 or failing:
        result.update(outcome="fail", reason=f"go test exited with status {status}")
    elif skipped:
        # A target that skips fuzzes nothing: not a pass.
        result.update(outcome="fail", reason=f"skipped: {skipped.group(1).strip()}")
    elif not progress:
        result.update(outcome="fail", reason="fuzzed nothing (no progress line; still gathering the baseline?)")
    else:
        result["outcome"] = "pass"
    if failing:
        result["failing_input"] = failing[-1]
    if result["outcome"] != "pass":
        result["output_tail"] = "\n".join(text.splitlines()[-40:])
    return result


def deadline_race(text: str) -> bool:
    """Whether a failed run failed only by the fuzzing coordinator's bare
    'context deadline exceeded': no panic, no test error line."""
    return "context deadline exceeded" in text and not re.search(r"panic:|_test\.go:\d+:", text)


def keep_failing_input(result: dict, dirs: dict[str, pathlib.Path], results_dir: pathlib.Path):
    """Copies a failing input out of the (perhaps temporary) checkout into
    results/fuzz-failures/, from where it can become a regression seed in
    the package's testdata/fuzz/<target>/."""
    rel = result.get("failing_input")
    pkg_dir = dirs.get(result["package"])
    if not rel or pkg_dir is None:
        return
    src = pkg_dir / rel
    if src.is_file():
        dest = results_dir / "fuzz-failures" / result["name"] / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        result["kept_input"] = str(dest.relative_to(ROOT)) if dest.is_relative_to(ROOT) else str(dest)


class Worktree:
    """A detached git worktree of HEAD, removed on exit."""

    def __init__(self, where: pathlib.Path | None):
        self.path = where or pathlib.Path(tempfile.mkdtemp(prefix="nereid-fuzz-worktree-"))

    def __enter__(self) -> pathlib.Path:
        run_captured(["git", "worktree", "add", "--detach", str(self.path), "HEAD"])
        return self.path

    def __exit__(self, *exc):
        try:
            run_captured(["git", "worktree", "remove", "--force", str(self.path)])
        except (OSError, RuntimeError) as e:
            log(f"fuzz: could not remove the worktree {self.path}: {e}")
        shutil.rmtree(self.path, ignore_errors=True)
        try:
            run_captured(["git", "worktree", "prune"])
        except (OSError, RuntimeError):
            pass


def run_targets(module_dir: pathlib.Path, targets, fuzz_time: str, jobs: int, log_dir: pathlib.Path,
                env: dict) -> list[dict]:
    """Runs the targets `jobs` at a time; results in the targets' order."""
    todo: queue.Queue = queue.Queue()
    for i, t in enumerate(targets):
        todo.put((i, t))
    results: list[dict | None] = [None] * len(targets)
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            try:
                i, (pkg, name) = todo.get_nowait()
            except queue.Empty:
                return
            log(f"fuzz: {name} ({pkg}) for {fuzz_time}")
            try:
                r = fuzz_one(module_dir, pkg, name, fuzz_time, log_dir / f"{pkg.rsplit('/', 1)[-1]}-{name}.log", env)
            except Exception as e:  # noqa: BLE001 - this target fails, the others go on
                r = {"package": pkg, "name": name, "duration_s": 0, "outcome": "fail",
                     "reason": f"could not run: {type(e).__name__}: {e}"}
            if not stop.is_set():
                results[i] = r
                log(f"fuzz: {name}: {r['outcome']}, {r.get('execs')} execs, {r.get('new_interesting')} new interesting")

    threads = [threading.Thread(target=worker, name=f"fuzz-{n}", daemon=True) for n in range(jobs)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(timeout=1)
    finally:
        stop.set()  # on Ctrl-C: no new target starts; run.py stops the running ones
    return [r for r in results if r is not None]


def run(fuzz_time: str, jobs: int, log_dir: pathlib.Path, results_dir: pathlib.Path, ort_library: pathlib.Path,
        isolated: bool = False, worktree: pathlib.Path | None = None) -> dict:
    """Fuzzes every target; ort_library is the ONNX Runtime library the
    onnxruntime package's targets need (a worktree has no .ort/ of its own;
    with the variable set they fail instead of skipping, as in make test)."""
    go_seconds(fuzz_time)  # refuse a bad duration before building anything
    log_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(results_dir / "fuzz-failures", ignore_errors=True)
    env = {**os.environ, "NEREID_ORT_LIBRARY": str(ort_library)}
    if isolated:
        with Worktree(worktree) as module_dir:
            return _run_in(module_dir, True, fuzz_time, jobs, log_dir, results_dir, env)
    return _run_in(worktree or ROOT, False, fuzz_time, jobs, log_dir, results_dir, env)


def _run_in(module_dir, isolated, fuzz_time, jobs, log_dir, results_dir, env) -> dict:
    fuzzed = {"dir": str(module_dir), "isolated": isolated, **git_state(module_dir)}
    log(f"fuzz: listing the targets in {module_dir} (commit {fuzzed['commit']})")
    targets = list_targets(module_dir)
    dirs = package_dirs(module_dir)
    results = run_targets(module_dir, targets, fuzz_time, jobs, log_dir, env)
    for r in results:
        if r["outcome"] != "pass":
            keep_failing_input(r, dirs, results_dir)
    failures = [f"{r['name']} ({r['package']}): {r.get('reason')}"
                + (f"; failing input {r['failing_input']}" if r.get("failing_input") else "")
                for r in results if r["outcome"] != "pass"]
    if not targets:
        failures.append("no fuzz targets found")
    return {"status": "fail" if failures else "pass", "failures": failures, "fuzzed": fuzzed,
            "fuzz_time": fuzz_time, "jobs": jobs, "targets": results}
