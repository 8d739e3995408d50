"""The attacks part: the end-to-end tests that attack the server on
purpose, run with pytest, each test's outcome and duration taken from the
JUnit XML, and the figures the tests print as `REPORT: ...` lines kept for
the report.

The tests live in tests/e2e and run in `make test` too; here they are
gathered in one place with their timings, so that a report shows that the
attacks were tried against the commit it names.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import threading
import xml.etree.ElementTree as ET

from common import CHILDREN, ROOT, log

# The attack tests; a file that does not exist (yet) is left out.
FILES = (
    "tests/e2e/test_shm_truncate.py",  # a client shrinks its shm object mid-request
    "tests/e2e/test_connection_flood.py",  # idle floods, past the fd limit, SIGTERM under keep-alive load
    "tests/e2e/test_payload_memory.py",  # large gRPC / HTTP payloads, RSS sampled
)
PYTHON = ROOT / ".venv" / "bin" / "python"
# With -s a test's print lands mid-line after pytest's progress dots.
REPORT_LINE = re.compile(r"REPORT:\s*(.*)")


def run(nereid: pathlib.Path, work_dir: pathlib.Path, timeout_s: float = 1800) -> dict:
    work_dir.mkdir(parents=True, exist_ok=True)
    files = [f for f in FILES if (ROOT / f).exists()]
    junit = work_dir / "junit.xml"
    junit.unlink(missing_ok=True)
    argv = [str(PYTHON), "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *files, f"--junitxml={junit}"]
    env = {**os.environ, "NEREID_BIN": str(nereid)}
    log(f"attacks: {' '.join(argv[1:])}")

    output, status, timed_out = _run_teed(argv, env, work_dir / "pytest.log", timeout_s)
    tests = parse_junit(junit) if junit.exists() else []
    failures = [f"{t['file']}::{t['name']}: {t['outcome']}" for t in tests if t["outcome"] in ("failed", "error")]
    if timed_out:
        failures.append(f"pytest did not finish within {timeout_s:.0f} s; stopped")
    elif status != 0 and not failures:
        failures.append(f"pytest exited with status {status}")
    if not tests and not timed_out:
        failures.append("no test results (no JUnit XML)")
    return {
        "status": "fail" if failures else "pass",
        "failures": failures,
        "files": files,
        "pytest_status": status,
        "tests": tests,
        "report_lines": report_lines(output),
        "output_tail": "\n".join(output.splitlines()[-40:]),
    }


def _run_teed(argv, env, log_path: pathlib.Path, timeout_s: float) -> tuple[str, int | None, bool]:
    """Runs argv with its output shown live and kept; (output, status, timed out)."""
    lines: list[str] = []
    with open(log_path, "w") as log_file:
        proc = CHILDREN.popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace")

        def pump():
            for line in proc.stdout:
                lines.append(line)
                log_file.write(line)
                print(line, end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            status = CHILDREN.stop(proc)
            reader.join(timeout=10)
    return "".join(lines), status, timed_out


def parse_junit(path: pathlib.Path) -> list[dict]:
    """Each test case: file, name, outcome (passed, failed, error, skipped),
    duration and the failure's message."""
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (el.get("message") or el.text or "").strip()
                break
        file, name = _split_classname(case.get("classname", ""), case.get("name", ""))
        tests.append({
            "file": file,
            "name": name,
            "outcome": outcome,
            "duration_s": float(case.get("time") or 0),
            "message": message[:500],
        })
    return tests


def _split_classname(classname: str, name: str) -> tuple[str, str]:
    """JUnit's "tests.e2e.test_x.TestClass" back into the file and, for a
    test in a class, "TestClass::test_name"."""
    parts = classname.split(".")
    for n in range(len(parts), 0, -1):
        path = "/".join(parts[:n]) + ".py"
        if (ROOT / path).exists():
            return path, "::".join(parts[n:] + [name])
    return classname, name


def report_lines(output: str) -> list[str]:
    """The figures the tests printed as `REPORT: ...`, in order."""
    return [m.group(1).rstrip() for m in map(REPORT_LINE.search, output.splitlines()) if m]
