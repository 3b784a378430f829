"""Outputs of a run: the terminal lines and table, results.json, report.md and PNG plots."""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict

from .registry import fmt_count, params_label

# Column order of peers in tables; peers unknown here (added by other case modules) follow.
PEER_ORDER = ["seed", "eager_horner", "compile_seed", "compile_horner", "torch_vander", "numpy", "reference"]


def _color(peer: str) -> str:
    """The same colour for a peer in every plot (matplotlib's tab10 cycle, in PEER_ORDER)."""
    names = PEER_ORDER + sorted({peer} - set(PEER_ORDER))
    return f"C{names.index(peer) % 10}"


def fmt_time(s) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "—"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_ratio(r) -> str:
    if r is None:
        return "—"
    return f"×{r:.3g}" if r < 1000 else f"×{r:.0f}"


def fmt_bytes(b) -> str:
    if b is None:
        return "—"
    if b < 2**10:
        return f"{b} B"
    return f"{b / 2**10:.3g} KiB" if b < 2**20 else f"{b / 2**20:.3g} MiB"


def case_label(r: dict) -> str:
    """The case name without op and mode (the table's heading says those)."""
    return " ".join(params_label(r["params"]) + [r["dtype"], r["device"]])


def peer_columns(results: list) -> list:
    names = []
    for r in results:
        for p in r["peers"]:
            if p != r["baseline"] and p not in names:
                names.append(p)
    known = [p for p in PEER_ORDER if p in names]
    return known + [p for p in names if p not in known]


# ---------------------------------------------------------------------------------------------
# Terminal.


def progress_head(i: int, total: int, name: str) -> str:
    return f"[{i:>{len(str(total))}}/{total}] {name:<52}"


def progress_tail(r: dict) -> str:
    base = r["peers"].get(r["baseline"], {})
    if "median_s" not in base:
        head = f"{r['baseline']} failed: {base.get('error', 'not run')}"
    else:
        head = f"{r['baseline']} {fmt_time(base['median_s']):>9}  roof {r['roofline_pct'].get(r['baseline'], 0):4.0f}%"
        if "baseline_over_fill" in r:
            head += f"  fill {r['baseline_over_fill']:.2f}x"
    parts = []
    for p in peer_columns([r]):
        rec = r["peers"][p]
        if "error" in rec:
            parts.append(f"{p} error")
        elif p in r["speedup"]:
            flag = "" if rec.get("agrees", True) else "(!)"
            parts.append(f"{p} {fmt_ratio(r['speedup'][p])}{flag}")
    return f"{head} | {'  '.join(parts)}  ({r['wall_s']:.1f} s)"


def terminal_table(results: list) -> str:
    """polyfit's median, % of roofline, and its speedup over each peer, one row per case."""
    cols = peer_columns(results)
    header = ["case", "polyfit", "roof%"] + cols + ["fill"]
    rows = []
    for r in results:
        base = r["peers"].get(r["baseline"], {})
        row = [r["name"], fmt_time(base.get("median_s")),
               f"{r['roofline_pct'][r['baseline']]:.0f}%" if r["baseline"] in r["roofline_pct"] else "—"]
        for p in cols:
            rec = r["peers"].get(p)
            if rec is None:
                row.append("")
            elif "error" in rec:
                row.append("error")
            else:
                row.append(fmt_ratio(r["speedup"].get(p)))
        row.append(f"{r['baseline_over_fill']:.2f}x" if "baseline_over_fill" in r else "")
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(row, widths)))
             for row in [header] + rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# JSON and Markdown.


def write_json(path: str, run: dict) -> None:
    with open(path, "w") as f:
        json.dump(run, f, indent=1, default=str)


def _group(results: list) -> "OrderedDict[tuple, list]":
    groups: OrderedDict = OrderedDict()
    for r in results:
        groups.setdefault((r["op"], r["mode"]), []).append(r)
    return groups


def _faults(n) -> str:
    """', 8.8k page faults' for a CPU figure that faulted noticeably (fresh large outputs)."""
    if n is None or n < 10:
        return ""
    return f", {n / 1000:.1f}k page faults" if n >= 1000 else f", {n:.0f} page faults"


def markdown(run: dict) -> str:
    m = run["machine"]
    lines = ["# polyfit benchmarks", ""]
    lines.append(f"- Machine: {m['cpu']} ({m['cores']} cores, {m['threads']} torch threads)"
                 + (f"; GPU: {m['gpu']}" if m.get("gpu") else "; no GPU"))
    lines.append(f"- torch {m['torch']}, numpy {m.get('numpy') or 'absent'}, CPU capability {m['cpu_capability']}; "
                 f"polyfit backend: " + ", ".join(f"{k}: {v}" for k, v in m["polyfit_backend"].items()))
    c = run["config"]
    if run.get("partial"):
        lines.append(f"- **Partial run**: {run['partial']}")
    lines.append(f"- Run: `{c['command']}`; {len(run['results'])} cases in {run['wall_s']:.0f} s; "
                 f"{c['min_run_time']} s of timed runs per peer, in {c.get('rounds', 1)} interleaved rounds")
    start = m.get("loadavg_start", float("nan"))
    loads = [x for x in (r.get("loadavg_1min", float("nan")) for r in run["results"]) if not math.isnan(x)]
    if loads:
        busy = start > 1.0 or max(loads) > m["cores"]  # the run itself adds up to its thread count
        lines.append(f"- 1-minute load average: {start:.1f} before the run, up to {max(loads):.1f} during it "
                     f"(on {m['cores']} cores)" + (" — other processes competed for the CPU: timings are noisy" if busy else ""))
    lines.append("")
    lines.append("## The machine's limits, measured in this run")
    lines.append("")
    lines.append("| device | copy bandwidth (256 MiB) | FMA peak (GEMM) | fresh page (OS; base / huge pages) "
                 "| call floor (torch) |")
    lines.append("|---|---|---|---|---|")
    for dev, lim in run["limits"].items():
        peaks = ", ".join(f"{k} {v:.1f} GFMA/s" for k, v in lim["fma_peak_GFMAps"].items())
        page = lim.get("fresh_page_us")
        kinds = " / ".join(f"{v:.2f}" for v in lim.get("fresh_page_us_by_page_kind", {}).values())
        floors = ", ".join(f"{k} {v:.1f} µs" for k, v in lim.get("call_floor_us", {}).items()) or "—"
        lines.append(f"| {dev} | {lim['large_copy_bandwidth_GBps']:.1f} GB/s | {peaks} | "
                     + (f"{page:.2f} µs ({kinds})" if page is not None else "—") + f" | {floors} |")
    lines.append("")
    lines.append("polyfit: median time and its interquartile range as a share of the median. "
                 "Each peer cell: median time (polyfit's speedup over that peer = peer median / polyfit median). "
                 "Roofline: torch's call floor (the simplest call of the case's kind, `x * s` on one element, "
                 "through torch.autograd.grad for forward+backward) + max(bytes / copy bandwidth at the case's "
                 "working set, FMAs / FMA peak), plus, "
                 "where the output arrives as new pages (`+ pages`), the pages the fill faulted in (no more than "
                 "polyfit's own page faults in the same round could map; the median of the rounds) times the "
                 "OS's fastest time to hand over a zeroed page (all threads, MADV_POPULATE_WRITE, in base or "
                 "transparent huge pages, per base page), and the "
                 "share of it polyfit reaches. `fill`: time to allocate and fill a tensor of the output's size, "
                 "and polyfit's time over it; both measured one after the other, since a fresh output over 32 MiB "
                 "costs page faults or not depending on the allocator's state (page faults per call are shown "
                 "where there are any). (!) marks a peer whose output disagrees with polyfit's; — a peer "
                 "that does not apply.")
    for (op, mode), rs in _group(run["results"]).items():
        cols = peer_columns(rs)
        has_fill = any("fill_s" in r for r in rs)
        lines += ["", f"## {op} {mode}", ""]
        head = ["case", "polyfit (IQR)", "roofline (% reached)"] + cols + (["fill (polyfit / fill)"] if has_fill else [])
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in rs:
            base = r["peers"].get(r["baseline"], {})
            cells = [case_label(r), f"{fmt_time(base['median_s'])} (IQR {100 * base['iqr_s'] / base['median_s']:.0f}%"
                     + _faults(base.get("page_faults_per_call")) + ")"
                     if "median_s" in base else f"error: {base.get('error')}"]
            pct = r["roofline_pct"].get(r["baseline"])
            cells.append(f"{fmt_time(r['roofline_s'])} {r['bound']}" + (f" ({pct:.0f}%)" if pct is not None else ""))
            for p in cols:
                rec = r["peers"].get(p)
                if rec is None:
                    cells.append("—")
                elif "error" in rec:
                    cells.append("error")
                else:
                    flag = "" if rec.get("agrees", True) else " (!)"
                    sp = r["speedup"].get(p)
                    cells.append(f"{fmt_time(rec['median_s'])} ({fmt_ratio(sp)}){flag}" if sp else fmt_time(rec["median_s"]))
            if has_fill:
                cells.append(f"{fmt_time(r['fill_s'])} (" + (f"{r['baseline_over_fill']:.2f}x" if "baseline_over_fill" in r else "")
                             + _faults(r.get("fill_page_faults_per_call")) + ")" if "fill_s" in r else "—")
            lines.append("| " + " | ".join(cells) + " |")

    # Memory: peak allocation during a call (CPU and CUDA) and, in forward+backward, autograd-saved bytes.
    mem = [r for r in run["results"] if any("saved_bytes" in p or "peak_bytes" in p for p in r["peers"].values())]
    if mem:
        lines += ["", "## Memory", "",
                  "Peak: the most bytes allocated during one call beyond what was held before, by torch's "
                  "allocators and in the memory polyfit keeps for its large CPU outputs (the outputs "
                  "included; forward+backward: the forward, the gradients and everything between). Saved: "
                  "autograd-saved bytes in forward+backward (the sum of the unique storages saved for backward). "
                  "numpy's own arrays are not counted.", ""]
        for (op, mode), rs in _group(mem).items():
            cols = [rs[0]["baseline"]] + peer_columns(rs)
            lines += [f"### {op} {mode}", "", "| case | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
            for r in rs:
                cells = [case_label(r)]
                for p in cols:
                    rec = r["peers"].get(p, {})
                    parts = ([f"peak {fmt_bytes(rec['peak_bytes'])}"] if "peak_bytes" in rec else []) + \
                            ([f"saved {fmt_bytes(rec['saved_bytes'])}"] if "saved_bytes" in rec else [])
                    cells.append(", ".join(parts) or "—")
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")

    notes = []
    first_calls = {}
    for r in run["results"]:
        for p, rec in r["peers"].items():
            if "error" in rec:
                notes.append(f"- {r['name']}: {p} failed: {rec['error']}")
            elif not rec.get("agrees", True):
                notes.append(f"- {r['name']}: {p} differs from {r['baseline']} (relative error {rec['rel_err']:.2g})")
            if p.startswith("compile") and "first_call_s" in rec:
                first_calls.setdefault(p, []).append(rec["first_call_s"])
            if rec.get("note"):
                key = f"- {p}: {rec['note']}"
                if key not in notes:
                    notes.append(key)
    half_errs: dict = {}
    for r in run["results"]:
        if r["dtype"] in ("bfloat16", "float16"):
            for p, rec in r["peers"].items():
                if "rel_err" in rec:
                    half_errs[p] = max(half_errs.get(p, 0.0), rec["rel_err"])
    if half_errs:
        notes.append("- half-precision cases: largest difference from polyfit, relative to its largest output: "
                     + ", ".join(f"{p} {e:.2g}" for p, e in half_errs.items())
                     + " (peers computing in bfloat16/float16 round at every step; polyfit computes in float32)")
    for p, ts in first_calls.items():
        notes.append(f"- {p}: first calls (compilation, excluded from the medians) took {sum(ts):.1f} s in all, "
                     f"{min(ts):.1f}–{max(ts):.1f} s each")
    if run.get("plots_note"):
        notes.append(f"- plots: {run['plots_note']}")
    if notes:
        lines += ["", "## Notes", ""] + notes
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib is optional).


def write_plots(out_dir: str, run: dict) -> tuple[list, str]:
    """PNG files: time vs N per degree (vs degree where one N was run), and polyfit's speedup over each
    peer. Returns (file names, note)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "skipped: matplotlib is not installed (pip install matplotlib)"
    files = []
    results = [r for r in run["results"] if "n" in r["params"] and "degree" in r["params"]]

    # Time vs N, one figure per (op, mode, basis, dtype, device), one panel per degree; a group
    # measured at a single N (the quick preset) is shown against the degree instead.
    groups: OrderedDict = OrderedDict()
    for r in results:
        key = (r["op"], r["mode"], r["params"].get("basis", ""), r["dtype"], r["device"])
        groups.setdefault(key, []).append(r)
    for key, rs in groups.items():
        degrees = sorted({r["params"]["degree"] for r in rs})
        single_n = len({r["params"]["n"] for r in rs}) == 1
        if single_n:
            panels = [("N = " + fmt_count(rs[0]["params"]["n"]), "degree", sorted(rs, key=lambda r: r["params"]["degree"]))]
        else:
            panels = [(f"D = {d}", "n", sorted((r for r in rs if r["params"]["degree"] == d), key=lambda r: r["params"]["n"]))
                      for d in degrees]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.2, 3.8), squeeze=False, sharey=True)
        for ax, (title, axis, sub) in zip(axes[0], panels):
            xs = [r["params"][axis] for r in sub]
            base = sub[0]["baseline"]
            for p in [base] + peer_columns(sub):
                ts = [r["peers"].get(p, {}).get("median_s", float("nan")) for r in sub]
                if not all(math.isnan(t) for t in ts):
                    if p == base:
                        ax.plot(xs, ts, marker="o", ms=8, lw=2.5, color="k", zorder=3, label=p)
                    else:
                        ax.plot(xs, ts, marker="o", ms=4, lw=1.2, color=_color(p), label=p)
            ax.plot(xs, [r["roofline_s"] for r in sub], "k--", marker="x", label="roofline")
            if all("fill_s" in r for r in sub):
                ax.plot(xs, [r["fill_s"] for r in sub], "k:", marker="+", label="fill")
            ax.set_xscale("log", base=2 if axis == "degree" else 10)
            if axis == "degree":
                ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_yscale("log")
            ax.set_xlabel("degree D" if axis == "degree" else "N")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].set_ylabel("median time [s]")
        axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.suptitle(" ".join(key))
        fig.tight_layout()
        name = "time_" + "_".join(k.replace("+", "") for k in key if k) + ".png"
        fig.savefig(os.path.join(out_dir, name), dpi=90)
        plt.close(fig)
        files.append(name)

    # Speedup of polyfit over each peer, one figure per (op, mode, device), one bar group per case.
    groups = OrderedDict()
    for r in run["results"]:
        groups.setdefault((r["op"], r["mode"], r["device"]), []).append(r)
    for key, rs in groups.items():
        cols = [p for p in peer_columns(rs) if any(p in r["speedup"] for r in rs)]
        if not cols:
            continue
        width = 0.8 / len(cols)
        fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rs) * max(1, len(cols)) * 0.35 + 3), 4.5))
        for j, p in enumerate(cols):
            xs = [i + (j - (len(cols) - 1) / 2) * width for i in range(len(rs))]
            ax.bar(xs, [r["speedup"].get(p, float("nan")) for r in rs], width, color=_color(p), label=p)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(rs)))
        ax.set_xticklabels([case_label(r).replace(f" {r['device']}", "") for r in rs], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("polyfit speedup (peer time / polyfit time)")
        ax.set_title(" ".join(key))
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        fig.tight_layout()
        name = "speedup_" + "_".join(k.replace("+", "") for k in key) + ".png"
        fig.savefig(os.path.join(out_dir, name), dpi=90)
        plt.close(fig)
        files.append(name)
    return files, ""
