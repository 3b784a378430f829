"""python -m benchmarks [--quick | --full] [filters] [--out DIR]"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "f32": torch.float32,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
          "float64": torch.float64, "fp64": torch.float64, "f64": torch.float64, "double": torch.float64}


def _list(kind):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        try:
            return tuple(kind(t) for t in items)
        except (ValueError, KeyError) as e:
            raise argparse.ArgumentTypeError(f"bad value in {text!r}: {e}") from None
    return parse


def _count(text: str) -> int:
    value = float(text)  # accepts 1e6
    if value < 1 or value != int(value):
        raise ValueError(f"{text} is not a positive integer")
    return int(value)


def _dtype(text: str) -> torch.dtype:
    if text.lower() not in DTYPES:
        raise KeyError(f"{text}; known: float32, bfloat16, float16, float64")
    return DTYPES[text.lower()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="polyfit against the ways people write polynomial code today, and against the "
                    "machine's limit, measured side by side in one run.",
        epilog="--op, --mode and --peers select among the preset's cases and peers; --basis, --dtype, --device, "
               "--n and --degree set those axes, replacing the preset's values. Lists are comma-separated.")
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", dest="preset", action="store_const", const="quick",
                        help="N = 1e6, degrees 2, 8, 16, float32 (+ chebyshev, + bfloat16), CPU; about 3 minutes (default)")
    preset.add_argument("--full", dest="preset", action="store_const", const="full",
                        help="N 1e3..1e7 (1e8 on CUDA), degrees 2..32, float32/bfloat16/float64, every device")
    p.add_argument("--op", type=_list(str), help="ops: polyval, features, and any registered later")
    p.add_argument("--mode", type=_list(str), help="fwd, fwd+bwd")
    p.add_argument("--basis", type=_list(str), help="power, chebyshev, legendre, hermite, hermite_e, laguerre")
    p.add_argument("--device", type=_list(str), help="cpu, cuda")
    p.add_argument("--dtype", type=_list(_dtype), help="float32, bfloat16, float16, float64")
    p.add_argument("--n", type=_list(_count), help="number of points, e.g. 1e4,1e6")
    p.add_argument("--degree", type=_list(int), help="polynomial degrees, e.g. 2,8,16")
    p.add_argument("--peers", type=_list(str), help="only these peers (polyfit always runs)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's default)")
    p.add_argument("--out", default="results", help="output folder (default: results/)")
    p.add_argument("--min-run-time", type=float,
                   help="seconds of timed runs per peer, over 5 interleaved rounds (default 0.2 quick, 0.5 full); "
                        "tiny values give fast, noisy runs for tests")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.set_defaults(preset="quick")
    return p


def machine_info() -> dict:
    import polyfit
    from polyfit import _backend

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import numpy
        np_version = numpy.__version__
    except ImportError:
        np_version = None
    desc = _backend.describe()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np_version, "cpu_capability": desc["cpu_capability"],
        "polyfit": polyfit.__version__, "polyfit_backend": desc["backend"], "polyfit_build": desc["built_against"],
        "polyfit_fallback_reason": desc["fallback_reason"],
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda,
    }


def _loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on every platform
        return float("nan")


def _write_outputs(out: str, run: dict) -> None:
    from .report import markdown, write_json

    write_json(os.path.join(out, "results.json"), run)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown(run))


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from . import cases as _cases
    from .registry import GENERATORS, PRESET_DEVICES, generate, load_cases, preset_grids
    from .report import progress_head, progress_tail, terminal_table, write_plots
    from .roofline import Limits
    from .runner import RunConfig, run_case

    extra = load_cases()  # registers polyval, features and the ops of benchmarks/cases_*.py
    available = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    devices = args.device or PRESET_DEVICES[args.preset]
    devices = available if devices == "available" else tuple(devices)
    missing = [d for d in devices if d not in available]
    if missing:
        print(f"note: skipping unavailable device(s) {', '.join(missing)}", flush=True)
        devices = tuple(d for d in devices if d in available)

    grids = []
    for g in preset_grids(args.preset, devices):
        changes = {"devices": devices}
        for axis, value in (("bases", args.basis), ("dtypes", args.dtype), ("n", args.n), ("degrees", args.degree)):
            if value:
                changes[axis] = value
        if args.op:
            changes["ops"] = tuple(o for o in g.ops if o in args.op)
        if args.mode:
            changes["modes"] = tuple(m for m in g.modes if m in args.mode)
        g = g.replace(**changes)
        if g.ops and g.modes:
            grids.append(g)
    unknown = [o for o in (args.op or ()) if o not in GENERATORS]
    if unknown:
        print(f"error: unknown op(s) {', '.join(unknown)}; known: {', '.join(sorted(GENERATORS))}", file=sys.stderr)
        return 2
    cases = generate(grids)
    if args.list or not cases:
        for c in cases:
            print(c.name)
        if not cases:
            print("no cases match", file=sys.stderr)
            return 1 if not args.list else 0
        return 0

    min_run_time = args.min_run_time if args.min_run_time is not None else (0.2 if args.preset == "quick" else 0.5)
    cfg = RunConfig(min_run_time=min_run_time, peers=set(args.peers) if args.peers else None)
    _cases.configure_dynamo()
    os.makedirs(args.out, exist_ok=True)

    start = time.perf_counter()
    info = machine_info()
    info["loadavg_start"] = _loadavg()
    if info["loadavg_start"] > 1.0:
        print(f"warning: 1-minute load average {info['loadavg_start']:.1f} on {os.cpu_count()} cores before the run: "
              "other processes compete for the CPU and timings will be noisy", flush=True)
    print(f"polyfit benchmarks: {len(cases)} cases, preset {args.preset}, {info['cpu']}, "
          f"{info['threads']} threads, torch {info['torch']}, polyfit CPU backend: {info['polyfit_backend']['cpu']}"
          + (f", GPU {info['gpu']}" if info["gpu"] else ""), flush=True)
    limits = {}
    for dev in sorted({c.device for c in cases}):
        lim = limits[dev] = Limits(dev, min_run_time=max(min_run_time, 0.05))
        bw = lim.large_copy_bandwidth()
        peaks = {dt: lim.fma_peak(dt) for dt in sorted({c.compute_dtype for c in cases if c.device == dev}, key=str)}
        page = lim.page_time()
        print(f"limits on {dev}: copy {bw / 1e9:.1f} GB/s (256 MiB), FMA peak "
              + ", ".join(f"{str(dt).replace('torch.', '')} {v / 1e9:.1f} GFMA/s" for dt, v in peaks.items())
              + (f", fresh page {page * 1e6:.2f} µs" if page is not None else ""), flush=True)

    results = []

    def snapshot() -> dict:
        return {
            "machine": info,
            "config": {"preset": args.preset,
                       "command": "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv),
                       "min_run_time": min_run_time, "rounds": cfg.rounds, "devices": list(devices),
                       "case_modules": extra,
                       "timer": "torch.utils.benchmark.Timer.blocked_autorange in interleaved rounds, merged; "
                                "num_threads=torch.get_num_threads()"},
            "limits": {dev: lim.summary() for dev, lim in limits.items()},
            "results": results,
            "wall_s": time.perf_counter() - start,
        }

    for i, case in enumerate(cases, 1):
        print(progress_head(i, len(cases), case.name), end=" ", flush=True)
        r = run_case(case, limits[case.device], cfg)
        r["loadavg_1min"] = _loadavg()
        results.append(r)
        print(progress_tail(r), flush=True)
        if i < len(cases):  # a run stopped early (a time limit) still leaves the cases it finished
            partial = snapshot()
            partial["partial"] = f"{i} of {len(cases)} cases: the run had not finished when this was written"
            _write_outputs(args.out, partial)
    loads = [r["loadavg_1min"] for r in results]
    if info["loadavg_start"] > 1.0 or max(loads) > (os.cpu_count() or 1):  # this run alone adds its threads
        print(f"warning: the 1-minute load average was {info['loadavg_start']:.1f} before and up to {max(loads):.1f} "
              f"during the run on {os.cpu_count()} cores: "
              "other processes competed for the CPU, so these timings are noisy", flush=True)

    print()
    print(terminal_table(results))
    run = snapshot()
    files = []
    if not args.no_plots:
        files, note = write_plots(args.out, run)
        if note:
            run["plots_note"] = note
            print(f"plots {note}")
    run["wall_s"] = time.perf_counter() - start
    _write_outputs(args.out, run)
    print(f"\nwrote {args.out}/results.json, {args.out}/report.md"
          + (f" and {len(files)} plots" if files else "") + f" in {run['wall_s']:.0f} s", flush=True)
    return 0
