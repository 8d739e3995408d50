#!/usr/bin/env python3
"""Nereid's reliability suite: keeps the server's reliability properties
true and writes tests/reliability/report.md with the figures.

Parts (--parts, default all):
  attacks  the attack end-to-end tests (shared-memory truncation, connection
           floods, SIGTERM under load, large payloads), per-test results;
  soak     one server under steady mixed HTTP / gRPC / streaming /
           shared-memory load, sampled (memory, goroutines, descriptors),
           then left to settle; asserts no unexpected error and no leak;
  fuzz     every native Go fuzz target for --fuzz-time.

Each part writes <results-dir>/<part>.json; report.md is then rendered from
every part's JSON present, so a report can gather parts run at different
times. Exit status 0 when every part run passed.

  make reliability          all parts, full length (about an hour and a half)
  make reliability-short    a 20 s soak into a temporary folder (part of make test)
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import signal
import sys
import tempfile
import time

import report
from common import CHILDREN, PARTS, REPORT_PATH, RESULTS_DIR, ROOT, log, run_meta, write_result


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of: " + ", ".join(PARTS))
    p.add_argument("--nereid", type=pathlib.Path, default=ROOT / "bin" / "nereid", help="server binary (default bin/nereid)")
    p.add_argument("--ort-library", type=pathlib.Path, default=ROOT / ".ort" / "lib" / "libonnxruntime.so.1",
                   help="ONNX Runtime library for the soak's server and the onnxruntime fuzz target "
                        "(default .ort/lib/libonnxruntime.so.1)")
    p.add_argument("--results-dir", type=pathlib.Path, default=RESULTS_DIR,
                   help="where <part>.json go (default tests/reliability/results)")
    p.add_argument("--report", type=pathlib.Path, default=None,
                   help="report to write (default tests/reliability/report.md, or <results-dir>/report.md "
                        "when --results-dir is given)")
    p.add_argument("--render", action="store_true",
                   help="only render the report from the results present; run nothing")
    p.add_argument("--work-dir", type=pathlib.Path, default=None,
                   help="logs of the servers, pytest and go test (default: a temporary folder, kept when a part fails)")

    p.add_argument("--soak-seconds", type=float, default=600, help="seconds of load (default 600)")
    p.add_argument("--soak-threads-per-kind", type=int, default=1,
                   help="client threads for each kind of exchange (default 1; 8 kinds)")
    p.add_argument("--soak-seed", type=int, default=1, help="seed of the load's random choices")

    p.add_argument("--attacks-timeout", type=float, default=1800, help="seconds before pytest is stopped (default 1800)")

    p.add_argument("--fuzz-time", default="10m", help="go test -fuzztime for each target (default 10m)")
    p.add_argument("--fuzz-jobs", type=int, default=1, help="fuzz targets run at once, each -parallel=1 (default 1)")
    p.add_argument("--fuzz-isolated", action="store_true",
                   help="fuzz a fresh git worktree of HEAD (at --worktree, or a temporary folder), removed afterwards, "
                        "so that uncommitted or half-edited code is not compiled")
    p.add_argument("--worktree", type=pathlib.Path, default=None,
                   help="fuzz in this folder: an existing checkout, or where --fuzz-isolated creates the worktree")
    args = p.parse_args(argv)

    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = [s for s in args.parts if s not in PARTS]
    if unknown or not args.parts:
        p.error(f"--parts: unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    if args.fuzz_jobs < 1:
        p.error("--fuzz-jobs must be at least 1")
    args.results_dir = args.results_dir.resolve()
    if args.report is None:
        args.report = REPORT_PATH if args.results_dir == RESULTS_DIR.resolve() else args.results_dir / "report.md"
    args.nereid = args.nereid.resolve()
    return args


# --------------------------------------------------------------------------
# The parts


def run_attacks(args, work_dir: pathlib.Path) -> dict:
    import attacks

    return attacks.run(args.nereid, work_dir / "attacks", timeout_s=args.attacks_timeout)


def run_soak(args, work_dir: pathlib.Path) -> dict:
    import soak

    ort = args.ort_library.resolve() if args.ort_library.exists() else None
    result = soak.run(args.nereid, args.soak_seconds, work_dir, ort,
                      threads_per_kind=args.soak_threads_per_kind, seed=args.soak_seed)
    result["client_threads"] = 8 * args.soak_threads_per_kind
    return result


def run_fuzz(args, work_dir: pathlib.Path) -> dict:
    import fuzz

    return fuzz.run(args.fuzz_time, args.fuzz_jobs, work_dir / "fuzz", args.results_dir, args.ort_library.resolve(),
                    isolated=args.fuzz_isolated, worktree=args.worktree)


RUNNERS = {"attacks": run_attacks, "soak": run_soak, "fuzz": run_fuzz}


def preflight(args) -> list[str]:
    """What must exist before a part can start."""
    problems = []
    if {"attacks", "soak"} & set(args.parts) and not args.nereid.exists():
        problems.append(f"{args.nereid} does not exist: run `make build` or pass --nereid")
    return problems


# --------------------------------------------------------------------------


def _terminate(signum, _frame):
    """SIGTERM ends the run like Ctrl-C: the finally clauses stop every child."""
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        report.write(args.results_dir, args.report)
        log(f"report: {args.report}")
        return 0
    problems = preflight(args)
    if problems:
        for p in problems:
            log(p)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    work_dir = args.work_dir or pathlib.Path(tempfile.mkdtemp(prefix="nereid-reliability-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    log(f"parts {', '.join(args.parts)}; logs in {work_dir}")
    failed = []
    try:
        for part in args.parts:
            log(f"--- {part}")
            meta = run_meta()
            started = time.monotonic()
            result = RUNNERS[part](args, work_dir)
            result = {"part": part, "meta": meta, "wall_s": round(time.monotonic() - started, 1), **result}
            write_result(args.results_dir, part, result)
            report.write(args.results_dir, args.report)
            log(f"{part}: {result['status'].upper()}: {report.summary(part, result)}" + "".join(f"\n  - {f}" for f in result.get("failures", [])))
            if result["status"] != "pass":
                failed.append(part)
    except KeyboardInterrupt:
        log(f"interrupted; logs kept in {work_dir}")
        return 130
    finally:
        CHILDREN.stop_all()
    log(f"report: {args.report}")
    if failed:
        log(f"FAILED: {', '.join(failed)}; logs kept in {work_dir}")
        return 1
    if args.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
