"""summary.md, medians.csv and throughput_vs_p99.png of a results directory
(from its runs.csv and environment.json). perf/run calls it at the end;
`perf/run --report-only DIR` calls it alone.

Repetitions are interleaved (every server once per repetition), so a ratio
is taken per repetition and reported as the median with its range. A cell
whose repetitions disagree by more than the stability threshold (the run's
--stability, perf_analyzer's own) is flagged, not quoted."""

from __future__ import annotations

import csv
import json
import pathlib
import statistics
from collections import defaultdict

LABELS = {"nereid": "Nereid", "nereid-shm": "Nereid + shm", "nereid-identity": "Nereid, identity backend",
          "nereid-python": "Nereid, Python backend", "ceiling": "ceiling", "triton": "Triton",
          "mlserver": "MLServer", "kserve": "KServe"}
ORDER = list(LABELS)
PROTOCOL_ORDER = ["grpc", "http", "http-json"]
OVERHEAD_MODELS = ("simple", "identity_fp32")
METRICS = ["throughput", "p50_us", "p90_us", "p95_us", "p99_us", "server_cpu_cores",
           "server_cpu_us_per_infer", "server_rss_mib", "client_cpu_cores",
           "server_queue_us", "server_compute_us", "steal_pct"]


def load_runs(out: pathlib.Path) -> list[dict]:
    with open(out / "runs.csv") as f:
        return list(csv.DictReader(f))


# The metrics whose spread over the repetitions is checked against the
# stability threshold.
SPREAD_METRICS = ("throughput", "p50_us", "p99_us")
DEFAULT_THRESHOLD = 10.0


def spread_pct(values: list[float]) -> float | None:
    """(max - min) / median in percent; None for fewer than two values."""
    if len(values) < 2:
        return None
    med = statistics.median(values)
    return 100 * (max(values) - min(values)) / med if med else None


def medians(runs: list[dict]) -> dict:
    """(server, protocol, model, concurrency) -> median of each metric over
    the repetitions that succeeded, plus n, stable (all reps stable),
    spread (metric -> spread_pct) and reps (repetition -> throughput)."""
    groups = defaultdict(list)
    for r in runs:
        if r["status"] == "ok":
            groups[(r["server"], r["protocol"], r["model"], int(r["concurrency"]))].append(r)
    out = {}
    for key, rows in groups.items():
        m = {"n": len(rows), "stable": all(r["stable"] == "True" for r in rows), "spread": {},
             "reps": {int(r["rep"]): float(r["throughput"]) for r in rows if r.get("throughput") not in ("", None)}}
        for k in METRICS:
            values = [float(r[k]) for r in rows if r.get(k) not in ("", None)]
            m[k] = statistics.median(values) if values else None
            if k in SPREAD_METRICS:
                m["spread"][k] = spread_pct(values)
        out[key] = m
    return out


class Ratio:
    """A throughput ratio of two servers from interleaved repetitions: the
    median of the per-repetition ratios, their range, and whether they
    disagree by more than the threshold."""

    def __init__(self, values: list[float], threshold: float):
        self.values = sorted(values)
        self.value = statistics.median(values)
        self.spread = spread_pct(values)
        self.unsteady = self.spread is not None and self.spread > threshold

    def __str__(self):
        if self.unsteady:
            return f"unsteady ({self.values[0]:.2f}–{self.values[-1]:.2f})"
        if len(self.values) > 1:
            return f"{self.value:.2f} ({self.values[0]:.2f}–{self.values[-1]:.2f})"
        return f"{self.value:.2f}"


def rep_ratio(a, b, threshold) -> Ratio | None:
    """a's throughput over b's, repetition by repetition (both ran in each:
    the servers are interleaved); None when they share no repetition."""
    if not a or not b:
        return None
    values = [a["reps"][r] / b["reps"][r] for r in a["reps"] if r in b["reps"] and b["reps"][r]]
    return Ratio(values, threshold) if values else None


def write_medians(out: pathlib.Path, med: dict) -> None:
    with open(out / "medians.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["server", "protocol", "model", "concurrency", "n", "stable", *METRICS,
                    *(f"{k}_spread_pct" for k in SPREAD_METRICS)])
        for key in sorted(med, key=sort_key):
            m = med[key]
            w.writerow([*key, m["n"], m["stable"], *("" if m[k] is None else round(m[k], 3) for k in METRICS),
                        *("" if m["spread"].get(k) is None else round(m["spread"][k], 1) for k in SPREAD_METRICS)])


def sort_key(key):
    server, protocol, model, c = key
    return (model, PROTOCOL_ORDER.index(protocol) if protocol in PROTOCOL_ORDER else 9, c,
            ORDER.index(server) if server in ORDER else 9)


def fmt(v, digits=1, unstable=False):
    if v is None:
        return "–"
    s = f"{v:,.{digits}f}"
    return "~" + s if unstable else s


def ratio(a, b):
    if not a or not b:
        return None
    return a["throughput"] / b["throughput"] if b["throughput"] else None


def cell(m, metric, threshold, scale=1.0, digits=1):
    """A median, marked ~ when perf_analyzer did not stabilise, or flagged
    instead of quoted when the repetitions disagree by more than the
    threshold."""
    v = m[metric]
    sp = m["spread"].get(metric)
    if v is not None and sp is not None and sp > threshold:
        return f"⚠ {sp:.0f} % spread"
    return fmt(v if v is None else v / scale, digits, not m["stable"])


def threshold_of(env) -> float:
    try:
        return float(env.get("settings", {}).get("stability", DEFAULT_THRESHOLD))
    except (TypeError, ValueError):
        return DEFAULT_THRESHOLD


def write(out: pathlib.Path) -> None:
    runs = load_runs(out)
    env = json.loads((out / "environment.json").read_text()) if (out / "environment.json").exists() else {}
    med = medians(runs)
    write_medians(out, med)
    plot_ok = plot(out, med)
    threshold = threshold_of(env)
    formats = env.get("formats", {})

    models = sorted({k[2] for k in med}, key=lambda m: (m not in OVERHEAD_MODELS, m))
    settings = env.get("settings", {})
    lines = [f"# Nereid performance — {env.get('date', '?')}", ""]
    lines += [
        f"Commit `{env.get('commit', '?')}`{' (with uncommitted changes)' if env.get('dirty') else ''}; "
        f"{env.get('cpu', '?')}, {env.get('cores', '?')} cores; {env.get('go', '')}.",
        f"Load average at start {' '.join(env.get('loadavg_start', []))}, at end {' '.join(env.get('loadavg_end', []))} "
        "(perf_analyzer and the server share the machine; other load skews absolute numbers, "
        "the servers are measured one after the other).",
        "",
        steal_line(runs),
        "",
        f"perf_analyzer settings: concurrency {settings.get('concurrency')}, "
        f"{settings.get('reps')} repetition(s) (medians shown), measurement window {settings.get('window_ms')} ms, "
        f"stability {settings.get('stability')} %, at most {settings.get('max_trials')} windows; synchronous "
        "requests, batch size 1, the same input data for every server (inputs/)"
        + (f", {env['warmup_requests']} unmeasured warm-up requests before each measurement (or 4 per "
           "concurrent request if more). " if env.get("warmup_requests") else ". ")
        + "A value marked ~ did not stabilise within the windows and was measured again without the stability rule "
        "(runs.csv `mode`: `count=N`, a fixed request count; `3 windows, any spread`, three windows accepted "
        "whatever their spread).",
        "",
        "Versions: " + "; ".join(env.get("perf_analyzer", [])[:1] + [
            ", ".join(f"{k} {v}" for k, v in env.get("mlserver", {}).items()),
            ", ".join(f"{k} {v}" for k, v in env.get("kserve", {}).items())]
            + ([f"Triton {env['triton'].get('version', '?')} (tritonserver of nvidia-pytriton, Python backend only)"]
               if env.get("triton") else [])) + ".",
        "",
        f"Noise: repetitions are interleaved (every server once per repetition, restarted each time) and a "
        f"ratio is taken per repetition: shown as the median (lowest–highest). A cell whose repetitions "
        f"disagree by more than the stability threshold ({threshold:g} %: (max − min) / median) is flagged "
        "⚠ with its spread instead of quoted, and a ratio whose per-repetition values do is marked unsteady; "
        "neither counts for the targets. With one repetition nothing can be flagged.",
        "",
        "Columns: throughput in inferences/s; p50 / p99 client latency in ms; server CPU in cores "
        "(CPU time of the server's process tree over the run's wall time) and in CPU µs per inference; "
        "peak RSS of the process tree in MiB. Ratios are Nereid's throughput over the other server's "
        "on the same model, protocol and concurrency (> 1: Nereid is faster). "
        "Server queue / compute: perf_analyzer's server-side breakdown of the average request, from the "
        "statistics extension (Nereid and Triton; compute is input + infer + output, which for the ONNX models "
        "is ONNX Runtime's own time). \"Nereid, identity backend\" serves identity_fp32 with Nereid's "
        "identity backend instead of ONNX Runtime: it measures Nereid's own cost against the ceiling, "
        "which computes in Go. \"Nereid, Python backend\" and Triton serve the models' Python twins (the "
        "same model.py files; the installed Triton has only the Python backend); the format column says "
        "what each server ran, and a ratio of servers that ran different formats says so.",
        "",
    ]
    if plot_ok:
        lines += ["![throughput against p99 latency](throughput_vs_p99.png)", ""]

    lines += targets(med, threshold, formats)
    lines += flagged_summary(med, threshold)

    for model in models:
        lines += [f"## {model}", ""]
        lines += ["| protocol | conc. | server | format | inf/s | p50 ms | p99 ms | CPU cores | CPU µs/inf | RSS MiB "
                  "| server queue µs | server compute µs |",
                  "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        keys = sorted((k for k in med if k[2] == model), key=sort_key)
        for key in keys:
            m = med[key]
            lines.append(f"| {key[1]} | {key[3]} | {LABELS.get(key[0], key[0])} | "
                         f"{formats.get(key[0], {}).get(model, '–')} | {cell(m, 'throughput', threshold, 1, 0)} | "
                         f"{cell(m, 'p50_us', threshold, 1000, 2)} | {cell(m, 'p99_us', threshold, 1000, 2)} | "
                         f"{fmt(m['server_cpu_cores'], 2)} | {fmt(m['server_cpu_us_per_infer'], 0)} | "
                         f"{fmt(m['server_rss_mib'], 0)} | {fmt(m['server_queue_us'], 0)} | "
                         f"{fmt(m['server_compute_us'], 0)} |")
        lines.append("")
        lines += ratio_table(med, model, threshold, formats)
    lines += servers_table(env)
    lines += errors(runs)
    (out / "summary.md").write_text("\n".join(lines) + "\n")


# The ratio table's columns: (heading, numerator server, denominator server).
RATIO_COLUMNS = [
    ("Nereid / ceiling", "nereid", "ceiling"),
    ("Nereid + shm / ceiling", "nereid-shm", "ceiling"),
    ("Nereid identity backend / ceiling", "nereid-identity", "ceiling"),
    ("Nereid / Triton", "nereid", "triton"),
    ("Nereid Python / Triton", "nereid-python", "triton"),
    ("Nereid / MLServer", "nereid", "mlserver"),
    ("Nereid / KServe", "nereid", "kserve"),
]


def formats_differ(formats, a, b, model):
    """"(ONNX vs Python)" when servers a and b ran model in different
    formats, else ""."""
    fa, fb = formats.get(a, {}).get(model), formats.get(b, {}).get(model)
    if not fa or not fb or "ceiling" in (a, b):  # the ceiling computes in Go, always (README)
        return ""
    ka, kb = fa.split(" (")[0], fb.split(" (")[0]
    return "" if ka == kb else f" ({ka} vs {kb})"


def with_formats(where, formats, a, b, model):
    """where, plus ", ONNX vs Python" when the formats differ."""
    differ = formats_differ(formats, a, b, model)
    return where + (", " + differ.strip()[1:-1] if differ else "")


def ratio_table(med, model, threshold=DEFAULT_THRESHOLD, formats=None):
    formats = formats or {}
    cells = sorted({(k[1], k[3]) for k in med if k[2] == model},
                   key=lambda pc: (PROTOCOL_ORDER.index(pc[0]) if pc[0] in PROTOCOL_ORDER else 9, pc[1]))
    present = {k[0] for k in med if k[2] == model}
    columns = [c for c in RATIO_COLUMNS if c[1] in present and c[2] in present]
    with_p50 = "nereid" in present and "ceiling" in present
    rows = []
    for protocol, c in cells:
        get = lambda s: med.get((s, protocol, model, c))  # noqa: E731
        n, ceil = get("nereid"), get("ceiling")
        p50 = (n["p50_us"] / ceil["p50_us"]) if n and ceil and ceil["p50_us"] else None
        p50_text = fmt(p50, 2)
        if p50 is not None and any((m["spread"].get("p50_us") or 0) > threshold for m in (n, ceil)):
            p50_text = "unsteady"
        values = []
        for _, a, b in columns:
            r = rep_ratio(get(a), get(b), threshold)
            values.append("–" if r is None else f"{r}{formats_differ(formats, a, b, model)}")
        if any(v != "–" for v in values) or p50 is not None:
            rows.append(f"| {protocol} | {c} | " + " | ".join(values + ([p50_text] if with_p50 else [])) + " |")
    if not rows:
        return []
    return [f"Ratios for {model} (median of the per-repetition ratios, lowest–highest):", "",
            "| protocol | conc. | " + " | ".join([h for h, _, _ in columns]
                                               + (["p50 Nereid / ceiling"] if with_p50 else [])) + " |",
            "|---|---:|" + "---:|" * (len(columns) + with_p50), *rows, ""]


def flagged_summary(med, threshold):
    """How many cells the threshold flagged, or nothing."""
    flagged = [k for k, m in med.items()
               if any(v is not None and v > threshold for v in m["spread"].values())]
    if not flagged:
        return []
    worst = max(flagged, key=lambda k: max(v or 0 for v in med[k]["spread"].values()))
    w = max(v or 0 for v in med[worst]["spread"].values())
    return [f"Flagged: {len(flagged)} of {len(med)} cells have repetitions that disagree by more than "
            f"{threshold:g} % (the widest: {LABELS.get(worst[0], worst[0])} {worst[1]} {worst[2]} c={worst[3]}, "
            f"{w:.0f} %); their values are in medians.csv and runs.csv, not quoted here.", ""]


def targets(med, threshold=DEFAULT_THRESHOLD, formats=None):
    """The issue's targets, as the measurements say. Ratios whose
    repetitions disagree by more than the threshold do not count."""
    formats = formats or {}
    lines = ["## Targets", ""]
    worst, p50s, peers = [], [], defaultdict(list)
    own, own_p50 = [], []
    unsteady = 0

    def steady(r):
        nonlocal unsteady
        if r is None:
            return None
        if r.unsteady:
            unsteady += 1
            return None
        return r.value

    for (server, protocol, model, c), m in med.items():
        if server == "nereid-identity" and protocol in ("grpc", "http"):
            ceil = med.get(("ceiling", protocol, model, c))
            r = steady(rep_ratio(m, ceil, threshold))
            if r is not None:
                own.append((r, f"{protocol} c={c}"))
                if c == 1 and ceil["p50_us"]:
                    own_p50.append((m["p50_us"] / ceil["p50_us"], protocol))
        if server == "nereid-python":
            r = steady(rep_ratio(m, med.get(("triton", protocol, model, c)), threshold))
            if r is not None:
                peers["triton-python"].append((r, f"{model} {protocol} c={c}"))
        if server != "nereid" or model not in OVERHEAD_MODELS or protocol not in ("grpc", "http", "http-json"):
            continue
        for peer in ("mlserver", "kserve", "triton"):
            r = steady(rep_ratio(m, med.get((peer, protocol, model, c)), threshold))
            if r is not None:
                peers[peer].append((r, with_formats(f"{model} {protocol} c={c}", formats, server, peer, model)))
        if protocol == "http-json":
            continue
        ceil = med.get(("ceiling", protocol, model, c))
        r = steady(rep_ratio(m, ceil, threshold))
        if r is not None:
            worst.append((r, f"{model} {protocol} c={c}"))
            if c == 1 and ceil["p50_us"]:
                p50s.append((m["p50_us"] / ceil["p50_us"], f"{model} {protocol}"))
    if worst:
        r, where = min(worst)
        lines.append(f"- Nereid ≥ 80 % of the ceiling's throughput on simple / identity_fp32, gRPC and HTTP, "
                     f"at every concurrency: {'met' if r >= 0.8 else 'not met'} (lowest {r:.2f}, {where}).")
    if p50s:
        r, where = max(p50s)
        lines.append(f"- p50 at concurrency 1 within 1.3 × the ceiling's: {'met' if r <= 1.3 else 'not met'} "
                     f"(highest {r:.2f}, {where}).")
    if own:
        r, where = min(own)
        line = (f"- Without ONNX Runtime (identity_fp32 on Nereid's identity backend): Nereid / ceiling "
                f"throughput at least {r:.2f} ({where})")
        if own_p50:
            p, pw = max(own_p50)
            line += f"; p50 at concurrency 1 at most {p:.2f} × the ceiling's ({pw})"
        lines.append(line + ".")
    for peer, values in peers.items():
        r, where = min(values)
        hi, hwhere = max(values)
        if peer == "triton-python":
            lines.append(f"- Nereid / Triton, both on the Python twins (the same model.py): throughput "
                         f"{r:.2f} × ({where}) to {hi:.2f} × ({hwhere}).")
        elif peer == "triton":
            lines.append(f"- Nereid / Triton on the overhead models, Nereid's own models against Triton's "
                         f"Python twins: {r:.2f} × ({where}) to {hi:.2f} × ({hwhere}).")
        else:
            lines.append(f"- Nereid / {LABELS[peer]} throughput on the overhead models: at least {r:.1f} × ({where}).")
    if unsteady:
        lines.append(f"- Left out above: {unsteady} ratio(s) whose repetitions disagree by more than "
                     f"{threshold:g} %.")
    if len(lines) == 2:
        lines.append("- (no Nereid and ceiling measurements on simple / identity_fp32 in this run)")
    return lines + [""]


def steal_line(runs):
    """How much CPU the hypervisor took for other guests during the runs:
    on a shared virtual machine this, more than anything in the servers,
    moves absolute numbers between runs."""
    values = sorted(float(r["steal_pct"]) for r in runs if r.get("steal_pct") not in ("", None))
    if not values:
        return "CPU steal time was not recorded in this run."
    return (f"CPU stolen by the hypervisor (other guests) during the runs: median {statistics.median(values):.1f} %, "
            f"highest {values[-1]:.1f} % of the machine's CPU time (`steal_pct` in runs.csv).")


def servers_table(env):
    servers = env.get("servers", {})
    if not servers:
        return []
    lines = ["## Servers", "", "Start-up (process start to every model ready) and memory before the first request, "
             "medians over the repetitions.", "",
             "| server | ready after s | idle RSS MiB | not measured |", "|---|---:|---:|---|"]
    notes = env.get("not_supported", {})
    for name in ORDER:
        info = servers.get(name)
        if info is None:
            continue
        if "left_out" in info:
            lines.append(f"| {LABELS[name]} | – | – | left out of this run: {info['left_out']} |")
            continue
        why = info.get("why_not_served", {})
        skipped = "; ".join([f"{p}: {notes.get(f'{name}/{p}', '')}" for p in info.get("skipped", [])]
                            + [f"{m}: not served" + (f" ({why[m]})" if m in why else "")
                               for m in info.get("models_not_served", [])])
        if "error" in info:
            skipped = "failed: " + info["error"]
        lines.append(f"| {LABELS[name]} | {fmt(_median(info.get('startup_s')), 1)} | "
                     f"{fmt(_median(info.get('idle_rss_mib')), 0)} | {skipped} |")
    return lines + [""]


def _median(v):
    if isinstance(v, list):
        return statistics.median(v) if v else None
    return v


def errors(runs):
    bad = [r for r in runs if r["status"] != "ok"]
    if not bad:
        return []
    lines = ["## Failed runs", ""]
    for r in bad:
        lines.append(f"- {LABELS.get(r['server'], r['server'])} {r['protocol']} {r['model']} c={r['concurrency']} "
                     f"r{r['rep']}: {r['error']} (raw/{r['server']}/{r['protocol']}/{r['model']}/)")
    return lines + [""]


def plot(out: pathlib.Path, med: dict) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        print("report: matplotlib is missing (run perf/setup venv); no plot")
        return False
    models = sorted({k[2] for k in med}, key=lambda m: (m not in OVERHEAD_MODELS, m))
    protocols = [p for p in PROTOCOL_ORDER if any(k[1] == p for k in med)]
    if not models or not protocols:
        return False
    fig, axes = plt.subplots(len(models), len(protocols), figsize=(5 * len(protocols), 3.8 * len(models)),
                             squeeze=False)
    colors = {"nereid": "tab:blue", "nereid-shm": "tab:cyan", "nereid-identity": "tab:purple",
              "nereid-python": "tab:olive", "ceiling": "black", "triton": "tab:red",
              "mlserver": "tab:orange", "kserve": "tab:green"}
    for i, model in enumerate(models):
        for j, protocol in enumerate(protocols):
            ax = axes[i][j]
            for server in ORDER:
                pts = sorted((k[3], m) for k, m in med.items() if k[0] == server and k[1] == protocol and k[2] == model)
                if not pts:
                    continue
                xs = [m["p99_us"] / 1000 for _, m in pts]
                ys = [m["throughput"] for _, m in pts]
                ax.plot(xs, ys, marker="o", color=colors[server], label=LABELS[server],
                        linestyle="--" if server == "ceiling" else "-")
                for (c, _), x, y in zip(pts, xs, ys):
                    ax.annotate(str(c), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_ylim(bottom=0)
            ax.set_title(f"{model} — {protocol}", fontsize=10)
            ax.set_xlabel("p99 latency (ms, log)")
            ax.set_ylabel("inferences / s")
            ax.grid(True, which="both", alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
    fig.suptitle("Throughput against p99 latency (points: concurrency)", fontsize=12)
    fig.tight_layout()
    fig.savefig(out / "throughput_vs_p99.png", dpi=90)
    plt.close(fig)
    return True
