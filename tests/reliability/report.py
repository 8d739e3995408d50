"""Renders report.md from the parts' JSON results.

The report is rebuilt from every results/<part>.json present, so that its
sections can come from runs made at different times (the fuzz part alone
takes an hour); each section names the date, commit and machine of its own
run.
"""

from __future__ import annotations

import collections
import pathlib

from common import PARTS, ROOT, read_results

TITLES = {"attacks": "Attacks", "soak": "Soak", "fuzz": "Fuzzing"}


def write(results_dir: pathlib.Path, report_path: pathlib.Path):
    results = read_results(results_dir)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(render(results))


def render(results: dict[str, dict]) -> str:
    out = [
        "# Nereid reliability report",
        "",
        "Written by `tests/reliability/run.py` (`make reliability`; README.md,",
        '"Reliability suite"). Each section is rendered from',
        "`tests/reliability/results/<part>.json` and names the run it comes from.",
        "",
        "| part | result | date | commit |",
        "|---|---|---|---|",
    ]
    for part in PARTS:
        r = results.get(part)
        if r is None:
            out.append(f"| {TITLES[part]} | not run | | |")
        else:
            out.append(f"| {TITLES[part]} | {r['status'].upper()} | {r['meta']['date']} | {_commit(r['meta'])} |")
    for part in PARTS:
        out += ["", f"## {TITLES[part]}", ""]
        r = results.get(part)
        if r is None:
            out.append(f"Not run yet: `run.py --parts {part}`.")
            continue
        out += _meta(r) + [""] + RENDERERS[part](r)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Shared pieces


def _commit(meta: dict) -> str:
    dirty = meta.get("dirty")
    return f"`{meta.get('commit')}`" + (" (modified tree)" if dirty else "")


def _meta(r: dict) -> list[str]:
    m = r["meta"]
    mc = m["machine"]
    lines = [
        f"Run {m['date']} on commit {_commit(m)}; {mc['nproc']} CPUs ({mc['cpu'] or 'unknown CPU'}),",
        f"{mc['mem_total_gib']} GiB memory, Linux {mc['kernel']}; took {r.get('wall_s', 0):.0f} s.",
        f"Command: `{m['command']}`",
        "",
        f"**Result: {r['status'].upper()}**",
    ]
    for f in r.get("failures", []):
        lines.append(f"- {f}")
    return lines


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join("" if v is None else str(v) for v in row) + " |")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------
# Attacks


def _attacks(r: dict) -> list[str]:
    out = [f"pytest exit status {r.get('pytest_status')}; files: " + ", ".join(f"`{f}`" for f in r.get("files", [])), ""]
    rows = [[f"`{t['file']}::{t['name']}`", t["outcome"], f"{t['duration_s']:.1f}", _cell(t.get("message", ""))[:200]]
            for t in r.get("tests", [])]
    out += _table(["test", "outcome", "s", "message"], rows)
    reports = r.get("report_lines", [])
    if reports:
        out += ["", "Figures the tests reported (`REPORT:` lines):", ""]
        out += [f"- {_cell(line)}" for line in reports]
    if r.get("output_tail") and r["status"] != "pass":
        out += ["", "Last lines of pytest's output:", "", "```", r["output_tail"], "```"]
    return out


# --------------------------------------------------------------------------
# Soak


def _soak(r: dict) -> list[str]:
    f = r.get("figures", {})
    st = r.get("stats", {})
    out = [
        f"{r.get('load_s', 0):.0f} s of load ({r['duration_s']:g} s asked) from {r.get('client_threads', '?')} client threads;",
        f"{f.get('requests_total', 0)} requests ({f.get('requests_per_s')}/s); "
        f"**unexpected errors: {f.get('unexpected_errors')}**; server alive at the end: "
        f"{'yes' if r.get('alive_at_end') else 'NO'}; exit status after SIGTERM: {r.get('exit_status')}; "
        f"shared-memory regions left registered: {r.get('shm_regions_left')}.",
        "",
    ]
    if "rss_mib" in f:
        rss = f["rss_mib"]
        g, fd, th = f["goroutines"], f["fds"], f["threads"]
        out += _table(
            ["", "baseline (load start)", "peak", "end of load", "settled"],
            [
                ["RSS MiB", rss["start"], rss["peak"], rss["end"], rss["settled"]],
                ["goroutines", g["baseline"], g["peak"], g.get("end"), g["settled"]],
                ["descriptors", fd["baseline"], fd["peak"], fd.get("end"), fd["settled"]],
                ["OS threads", th["baseline"], th["peak"], th.get("end"), th["settled"]],
            ],
        )
        out.append("")
        grow = f.get("rss_growth")
        line = f"RSS at ready {rss['ready']} MiB, high-water mark {rss['hwm']} MiB."
        if grow:
            line += (f" Mean RSS over the load's first quarter {grow['first_quarter_mib']} MiB, last quarter "
                     f"{grow['last_quarter_mib']} MiB: {grow['growth_mib']:+} MiB ({grow['growth_pct']:+}%).")
        out += [line, "Asserted: no unexpected error, alive at the end, graceful exit, settled goroutines <= baseline + 10,",
                "settled descriptors <= baseline + 5. Memory and rates are reported, not asserted.", ""]
    load_s = r.get("load_s") or 0
    rows = [[k, st["exchanges"].get(k, 0), n, round(n / load_s, 1) if load_s else None]
            for k, n in sorted(st.get("requests", {}).items())]
    out += _table(["kind", "exchanges", "requests", "requests/s"], rows)
    if st.get("expected_errors"):
        out += ["", "Failures provoked on purpose, each answered with the expected status:", ""]
        out += _table(["request", "count"], [[k, n] for k, n in sorted(st["expected_errors"].items())])
    if st.get("unexpected_errors"):
        out += ["", "Unexpected errors:", ""]
        out += _table(["kind: error", "count"], [[_cell(k), n] for k, n in st["unexpected_errors"].items()])
    if r.get("goroutine_growth"):
        out += ["", "Goroutine stacks more numerous when settled than at the baseline:", ""]
        out += _table(["innermost frames", "grew by", "now"],
                      [[f"`{g['stack']}`", g["grew_by"], g["now"]] for g in r["goroutine_growth"]])
    out += ["", "Samples (t from server start):", ""]
    out += _table(["t s", "phase", "requests", "RSS MiB", "goroutines", "fds", "threads"],
                  [[s["t_s"], s["phase"], s["requests"], s["rss_mib"], s["goroutines"], s["fds"], s["threads"]]
                   for s in _sample_rows(r.get("samples", []), r["duration_s"])])
    if r.get("server_log_tail") and r["status"] != "pass":
        out += ["", "Last lines of the server log:", "", "```", r["server_log_tail"], "```"]
    return out


def _sample_rows(samples: list[dict], duration_s: float) -> list[dict]:
    """The baseline, a load sample every 30 s (fewer rows for a short run),
    and the last reading of every other phase."""
    step = 30 if duration_s >= 300 else max(2, duration_s / 10)
    rows, next_t, load_t0 = [], None, None
    for i, s in enumerate(samples):
        last_of_phase = i + 1 == len(samples) or samples[i + 1]["phase"] != s["phase"]
        if s["phase"] == "load":
            if load_t0 is None:
                load_t0 = next_t = s["t_s"]
            if s["t_s"] >= next_t or last_of_phase:
                rows.append(s)
                next_t = s["t_s"] + step - 1  # tolerate sampling jitter
        elif last_of_phase:
            rows.append(s)
    return rows


# --------------------------------------------------------------------------
# Fuzzing


def _fuzz(r: dict) -> list[str]:
    fz = r.get("fuzzed", {})
    out = [
        f"Fuzzed commit `{fz.get('commit')}`" + (" (modified tree)" if fz.get("dirty") else "")
        + (" in a separate worktree" if fz.get("isolated") else " in the working tree")
        + f"; `-fuzztime={r.get('fuzz_time')}` per target, {r.get('jobs')} at once, each `-parallel=1`, under `nice -n 10`.",
        "",
    ]
    rows = []
    for t in r.get("targets", []):
        rate = f"{t['execs'] / t['fuzz_s']:.0f}" if t.get("execs") and t.get("fuzz_s") else None
        rows.append([f"`{_short_package(t['package'])}`", f"`{t['name']}`", f"{t['duration_s']:.0f}", t.get("execs"), rate,
                     t.get("new_interesting"), t.get("corpus_total"), t["outcome"]])
    out += _table(["package", "target", "wall s", "execs", "execs/s", "new interesting", "corpus", "result"], rows)
    failed = [t for t in r.get("targets", []) if t["outcome"] != "pass"]
    for t in failed:
        out += ["", f"**{t['name']}** ({t['package']}): {t.get('reason', 'failed')}"]
        if t.get("failing_input"):
            out.append(f"failing input: `{t['failing_input']}`, kept as `{t.get('kept_input')}`")
        if t.get("output_tail"):
            out += ["", "```", t["output_tail"], "```"]
    return out


def summary(part: str, r: dict) -> str:
    """One line for the runner's output."""
    if part == "attacks":
        outcomes = collections.Counter(t["outcome"] for t in r.get("tests", []))
        return ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) or "no tests"
    if part == "soak":
        f = r.get("figures", {})
        if "rss_mib" not in f:
            return "no figures"
        rss, g, fd = f["rss_mib"], f["goroutines"], f["fds"]
        return (f"{f['requests_total']} requests ({f['requests_per_s']}/s), {f['unexpected_errors']} unexpected errors; "
                f"RSS MiB start/peak/end/settled {rss['start']}/{rss['peak']}/{rss['end']}/{rss['settled']}; "
                f"goroutines baseline/peak/settled {g['baseline']}/{g['peak']}/{g['settled']}; "
                f"fds {fd['baseline']}/{fd['peak']}/{fd['settled']}")
    targets = r.get("targets", [])
    execs = sum(t.get("execs") or 0 for t in targets)
    new = sum(t.get("new_interesting") or 0 for t in targets)
    bad = sum(t["outcome"] != "pass" for t in targets)
    return f"{len(targets)} targets, {bad} failed, {execs} execs, {new} new interesting inputs"


def _short_package(pkg: str) -> str:
    """./server/http for the module's own packages."""
    module = next((line.split()[1] for line in (ROOT / "go.mod").read_text().splitlines()
                   if line.startswith("module ")), "")
    return "./" + pkg[len(module) + 1:] if module and pkg.startswith(module + "/") else pkg


RENDERERS = {"attacks": _attacks, "soak": _soak, "fuzz": _fuzz}
