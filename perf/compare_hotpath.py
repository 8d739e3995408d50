#!/usr/bin/env python3
"""Compare the hot-path benchmarks (perf/hotpath) of two revisions of Nereid.

Usage: perf/compare_hotpath.py BASE_REV [--rounds N] [--benchtime 2s] [--bench REGEX]

Builds the perf/hotpath test binary of BASE_REV (in a temporary git
worktree) and of the working tree, then runs them alternately, round after
round, in the same session, so that the machine's noise falls on both alike.
Prints, per benchmark, the median ns/op and allocs/op of each and the
throughput ratio base/new (above 1: the working tree is faster).
"""

import argparse
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op.*?(?:([\d.]+) allocs/op)?\s*$")


def build(tree: pathlib.Path, out: pathlib.Path):
    subprocess.run(["go", "test", "-c", "-o", str(out), "./perf/hotpath"], cwd=tree, check=True)


def run(binary: pathlib.Path, tree: pathlib.Path, args) -> dict:
    env = dict(os.environ)
    env.setdefault("NEREID_ORT_LIBRARY", str(ROOT / ".ort" / "lib" / "libonnxruntime.so.1"))
    proc = subprocess.run(
        [str(binary), "-test.run=^$", f"-test.bench={args.bench}", f"-test.benchtime={args.benchtime}", "-test.benchmem"],
        cwd=tree / "perf" / "hotpath", env=env, capture_output=True, text=True, check=True,
    )
    found = {}
    for line in proc.stdout.splitlines():
        m = LINE.match(line)
        if m:
            found[m.group(1)] = (float(m.group(2)), float(m.group(3) or 0))
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--benchtime", default="2s")
    p.add_argument("--bench", default="BenchmarkHTTPBinary|BenchmarkGRPCRaw")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        wt = tmp / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(wt), args.base], cwd=ROOT, check=True, capture_output=True)
        try:
            # Both trees run with this checkout's ONNX Runtime library (NEREID_ORT_LIBRARY).
            build(wt, tmp / "base.test")
            build(ROOT, tmp / "new.test")
            results = {"base": {}, "new": {}}
            for r in range(args.rounds):
                for name, binary, tree in (("base", tmp / "base.test", wt), ("new", tmp / "new.test", ROOT)):
                    for bench, v in run(binary, tree, args).items():
                        results[name].setdefault(bench, []).append(v)
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=ROOT, check=False)
    print(f"{'benchmark':<52} {'base ns/op':>11} {'new ns/op':>11} {'ratio':>6} {'base allocs':>11} {'new allocs':>10}")
    for bench in sorted(results["new"]):
        if bench not in results["base"]:
            continue
        b_ns = statistics.median(v[0] for v in results["base"][bench])
        n_ns = statistics.median(v[0] for v in results["new"][bench])
        b_al = statistics.median(v[1] for v in results["base"][bench])
        n_al = statistics.median(v[1] for v in results["new"][bench])
        print(f"{bench:<52} {b_ns:>11.0f} {n_ns:>11.0f} {b_ns / n_ns:>6.3f} {b_al:>11.0f} {n_al:>10.0f}")


if __name__ == "__main__":
    main()
