"""summary.md, medians.csv and throughput_vs_p99.png of a results directory
(from its runs.csv and environment.json). perf/run calls it at the end;
`perf/run --report-only DIR` calls it alone."""

from __future__ import annotations

import csv
import json
import pathlib
import statistics
from collections import defaultdict

LABELS = {"nereid": "Nereid", "nereid-shm": "Nereid + shm", "nereid-identity": "Nereid, identity backend",
          "ceiling": "ceiling", "mlserver": "MLServer", "kserve": "KServe"}
ORDER = list(LABELS)
PROTOCOL_ORDER = ["grpc", "http", "http-json"]
OVERHEAD_MODELS = ("simple", "identity_fp32")
METRICS = ["throughput", "p50_us", "p90_us", "p95_us", "p99_us", "server_cpu_cores",
           "server_cpu_us_per_infer", "server_rss_mib", "client_cpu_cores",
           "server_queue_us", "server_compute_us", "steal_pct"]


def load_runs(out: pathlib.Path) -> list[dict]:
    with open(out / "runs.csv") as f:
        return list(csv.DictReader(f))


def medians(runs: list[dict]) -> dict:
    """(server, protocol, model, concurrency) -> median of each metric over
    the repetitions that succeeded, plus n and stable (all reps stable)."""
    groups = defaultdict(list)
    for r in runs:
        if r["status"] == "ok":
            groups[(r["server"], r["protocol"], r["model"], int(r["concurrency"]))].append(r)
    out = {}
    for key, rows in groups.items():
        m = {"n": len(rows), "stable": all(r["stable"] == "True" for r in rows)}
        for k in METRICS:
            values = [float(r[k]) for r in rows if r.get(k) not in ("", None)]
            m[k] = statistics.median(values) if values else None
        out[key] = m
    return out


def write_medians(out: pathlib.Path, med: dict) -> None:
    with open(out / "medians.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["server", "protocol", "model", "concurrency", "n", "stable", *METRICS])
        for key in sorted(med, key=sort_key):
            m = med[key]
            w.writerow([*key, m["n"], m["stable"], *("" if m[k] is None else round(m[k], 3) for k in METRICS)])


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


def write(out: pathlib.Path) -> None:
    runs = load_runs(out)
    env = json.loads((out / "environment.json").read_text()) if (out / "environment.json").exists() else {}
    med = medians(runs)
    write_medians(out, med)
    plot_ok = plot(out, med)

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
        "requests, batch size 1, the same input data for every server (inputs/). "
        "A value marked ~ did not stabilise within the windows and was measured again without the stability rule "
        "(runs.csv `mode`: `count=N`, a fixed request count; `3 windows, any spread`, three windows accepted "
        "whatever their spread).",
        "",
        "Versions: " + "; ".join(env.get("perf_analyzer", [])[:1] + [
            ", ".join(f"{k} {v}" for k, v in env.get("mlserver", {}).items()),
            ", ".join(f"{k} {v}" for k, v in env.get("kserve", {}).items())]) + ".",
        "",
        "Columns: throughput in inferences/s; p50 / p99 client latency in ms; server CPU in cores "
        "(CPU time of the server's process tree over the run's wall time) and in CPU µs per inference; "
        "peak RSS of the process tree in MiB. Ratios are Nereid's throughput over the other server's "
        "on the same model, protocol and concurrency (> 1: Nereid is faster). "
        "Server queue / compute: perf_analyzer's server-side breakdown of the average request, from the "
        "statistics extension (Nereid only; compute is input + infer + output, which for the ONNX models "
        "is ONNX Runtime's own time). \"Nereid, identity backend\" serves identity_fp32 with Nereid's "
        "identity backend instead of ONNX Runtime: it measures Nereid's own cost against the ceiling, "
        "which computes in Go.",
        "",
    ]
    if plot_ok:
        lines += ["![throughput against p99 latency](throughput_vs_p99.png)", ""]

    lines += targets(med)

    for model in models:
        lines += [f"## {model}", ""]
        lines += ["| protocol | conc. | server | inf/s | p50 ms | p99 ms | CPU cores | CPU µs/inf | RSS MiB "
                  "| server queue µs | server compute µs |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        keys = sorted((k for k in med if k[2] == model), key=sort_key)
        for key in keys:
            m = med[key]
            u = not m["stable"]
            lines.append(f"| {key[1]} | {key[3]} | {LABELS.get(key[0], key[0])} | {fmt(m['throughput'], 0, u)} | "
                         f"{fmt(m['p50_us'] and m['p50_us'] / 1000, 2, u)} | {fmt(m['p99_us'] and m['p99_us'] / 1000, 2, u)} | "
                         f"{fmt(m['server_cpu_cores'], 2)} | {fmt(m['server_cpu_us_per_infer'], 0)} | "
                         f"{fmt(m['server_rss_mib'], 0)} | {fmt(m['server_queue_us'], 0)} | "
                         f"{fmt(m['server_compute_us'], 0)} |")
        lines.append("")
        lines += ratio_table(med, model)
    lines += servers_table(env)
    lines += errors(runs)
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def ratio_table(med, model):
    rows = []
    cells = sorted({(k[1], k[3]) for k in med if k[2] == model},
                   key=lambda pc: (PROTOCOL_ORDER.index(pc[0]) if pc[0] in PROTOCOL_ORDER else 9, pc[1]))
    for protocol, c in cells:
        get = lambda s: med.get((s, protocol, model, c))  # noqa: E731
        n, shm, ceil = get("nereid"), get("nereid-shm"), get("ceiling")
        p50 = (n["p50_us"] / ceil["p50_us"]) if n and ceil and ceil["p50_us"] else None
        ident = get("nereid-identity")
        values = [ratio(n, ceil), ratio(shm, ceil), ratio(ident, ceil), ratio(n, get("mlserver")),
                  ratio(n, get("kserve")), p50]
        if any(v is not None for v in values):
            rows.append(f"| {protocol} | {c} | " + " | ".join(fmt(v, 2) for v in values) + " |")
    if not rows:
        return []
    return [f"Ratios for {model}:", "",
            "| protocol | conc. | Nereid / ceiling | Nereid + shm / ceiling | Nereid identity backend / ceiling "
            "| Nereid / MLServer | Nereid / KServe | p50 Nereid / ceiling |",
            "|---|---:|---:|---:|---:|---:|---:|---:|", *rows, ""]


def targets(med):
    """The issue's targets, as the measurements say."""
    lines = ["## Targets", ""]
    worst, p50s, peers = [], [], defaultdict(list)
    own, own_p50 = [], []
    for (server, protocol, model, c), m in med.items():
        if server == "nereid-identity" and protocol in ("grpc", "http"):
            ceil = med.get(("ceiling", protocol, model, c))
            r = ratio(m, ceil)
            if r is not None:
                own.append((r, f"{protocol} c={c}"))
                if c == 1 and ceil["p50_us"]:
                    own_p50.append((m["p50_us"] / ceil["p50_us"], protocol))
        if server != "nereid" or model not in OVERHEAD_MODELS or protocol not in ("grpc", "http"):
            continue
        ceil = med.get(("ceiling", protocol, model, c))
        r = ratio(m, ceil)
        if r is not None:
            worst.append((r, f"{model} {protocol} c={c}"))
            if c == 1 and ceil["p50_us"]:
                p50s.append((m["p50_us"] / ceil["p50_us"], f"{model} {protocol}"))
        for peer in ("mlserver", "kserve"):
            r = ratio(m, med.get((peer, protocol, model, c)))
            if r is not None:
                peers[peer].append((r, f"{model} {protocol} c={c}"))
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
        lines.append(f"- Nereid / {LABELS[peer]} throughput on the overhead models: at least {r:.1f} × ({where}).")
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
        skipped = "; ".join([f"{p}: {notes.get(f'{name}/{p}', '')}" for p in info.get("skipped", [])]
                            + [f"{m}: not served" for m in info.get("models_not_served", [])])
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
    colors = {"nereid": "tab:blue", "nereid-shm": "tab:cyan", "nereid-identity": "tab:purple", "ceiling": "black",
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
