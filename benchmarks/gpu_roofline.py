"""polyfit's CUDA kernels against the GPU's measured limit and against the eager/compiled baselines.

    python benchmarks/gpu_roofline.py [--out roofline.json] [--log2n 26] [--no-compile] [--min-run-time 0.3]

Standalone (needs only torch and polyfit built with CUDA), so the targets of issue 3 can be checked
without the full benchmark suite. Measured side by side in one run, medians of
torch.utils.benchmark (which synchronises the device), float32:
  - copy: dst.copy_(src), bytes read + written over time: the bandwidth a streaming kernel can reach;
  - polyval forward, N = 2^log2n, degrees 4, 8, 16, power/chebyshev/legendre: bytes (x read, y
    written) over time, as a share of copy bandwidth (target >= 0.85 on an H100);
  - features forward, degree 8: bytes (x read, N x 9 written) over time, share of copy bandwidth
    (target >= 0.80);
  - polyval forward + backward (grad of x and coeffs), degree 8: against torch.compile of a Horner loop
    (target >= 3x) and the seed's eager torch.stack([x**D, ..., x, 1], 1) @ w (target >= 50x); its
    share of copy counts the least any forward + backward moves (x twice, y, grad, grad_x), and
    torch.profiler splits polyfit's time into its kernels (at N = 2^log2n and at N = 1e4).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch
from torch.utils import benchmark


def median_seconds(fn, min_run_time: float) -> float:
    fn()  # warm-up (and compilation where there is any)
    torch.cuda.synchronize()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn})
    return timer.blocked_autorange(min_run_time=min_run_time).median


def horner(x, c):
    y = c[-1].expand_as(x)
    for k in range(c.shape[0] - 2, -1, -1):
        y = y * x + c[k]
    return y


def seed_stack(x, c):
    # the seed's formulation, generalised: columns x^D .. x^0, then a matrix-vector product
    degree = c.shape[0] - 1
    cols = [x**k for k in range(degree, 0, -1)] + [torch.ones_like(x)]
    return torch.stack(cols, 1) @ c.flip(0)


def fwd_bwd(f, x, c, g):
    xg = x.detach().requires_grad_()
    cg = c.detach().requires_grad_()
    return torch.autograd.grad(f(xg, cg), (xg, cg), g)


def kernel_breakdown(fn, results: dict, label: str, calls: int = 20) -> None:
    """Each CUDA kernel's mean time per call of fn, and the wall time per call, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t) / calls
    kernels = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels.setdefault(e.name, []).append(e.device_time)
    rows = sorted(((sum(v) / calls, len(v) / calls, k) for k, v in kernels.items()), reverse=True)
    print(f"kernels of polyfit polyval {label}: wall {wall * 1e6:.1f} us per call (under the profiler), "
          f"GPU {sum(r[0] for r in rows):.1f} us")
    for us, count, name in rows[:8]:
        print(f"    {us:9.1f} us  x{count:g}  {name[:90]}")
    results.setdefault("kernel_breakdown", {})[label] = {
        "wall_us": wall * 1e6, "kernels": [{"name": k, "us_per_call": us, "launches_per_call": c} for us, c, k in rows]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="roofline.json")
    p.add_argument("--log2n", type=int, default=26)
    p.add_argument("--min-run-time", type=float, default=0.3)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    args = p.parse_args(argv)

    if not torch.cuda.is_available():
        print("gpu_roofline: no CUDA device", file=sys.stderr)
        return 2
    import polyfit
    from polyfit import _backend

    compiled = _backend.compiled_for(torch.device("cuda"))
    if not compiled:
        print("gpu_roofline: warning: polyfit's CUDA kernels are not built; measuring the reference", file=sys.stderr)

    dev = torch.device("cuda")
    n = 1 << args.log2n
    f32 = 4
    mrt = args.min_run_time
    results = {
        "device": torch.cuda.get_device_name(dev),
        "capability": ".".join(map(str, torch.cuda.get_device_capability(dev))),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "polyfit_compiled_cuda": compiled,
        "n": n,
        "dtype": "float32",
        "cases": [],
    }
    t0 = time.time()

    def record(name, seconds, nbytes=None, **extra):
        row = {"case": name, "median_s": seconds, **extra}
        if nbytes is not None:
            row["bytes"] = nbytes
            row["gbps"] = nbytes / seconds / 1e9
            row["share_of_copy"] = row["gbps"] / results["copy_gbps"]
        results["cases"].append(row)
        share = f"  {row['share_of_copy']:.1%} of copy" if "share_of_copy" in row else ""
        more = "  " + "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items())
        print(f"{name:42s} {seconds * 1e6:10.1f} us{share}{more if extra else ''}", flush=True)
        return row

    x = torch.rand(n, device=dev) * 2 - 1
    src = torch.empty_like(x).copy_(x)
    dst = torch.empty_like(x)
    copy_s = median_seconds(lambda: dst.copy_(src), mrt)
    results["copy_gbps"] = 2 * n * f32 / copy_s / 1e9
    print(f"device {results['device']} (sm_{results['capability']}), N = 2^{args.log2n}")
    print(f"{'copy (read + write)':42s} {copy_s * 1e6:10.1f} us  {results['copy_gbps']:.0f} GB/s", flush=True)

    targets = {}
    with torch.no_grad():
        for basis in ("power", "chebyshev", "legendre"):
            for degree in (4, 8, 16):
                c = torch.randn(degree + 1, device=dev)
                s = median_seconds(lambda: polyfit.polyval(x, c, basis), mrt)
                row = record(f"polyval fwd {basis} D={degree}", s, 2 * n * f32)
                if basis == "power":
                    targets.setdefault("polyval_fwd_share_min_D<=16", []).append(row["share_of_copy"])
        for basis in ("power", "legendre"):
            m = n // 4  # keeps the output (m x 9 floats) near 2.4 GB at 2^26
            xs = x[:m]
            s = median_seconds(lambda: polyfit.features(xs, 8, basis), mrt)
            row = record(f"features fwd {basis} D=8 (N/4 points)", s, m * f32 + m * 9 * f32)
            if basis == "power":
                targets["features_fwd_share_D=8"] = row["share_of_copy"]

    degree = 8
    c = torch.randn(degree + 1, device=dev)
    g = torch.randn_like(x)
    pf = median_seconds(lambda: fwd_bwd(lambda a, b: polyfit.polyval(a, b), x, c, g), mrt)
    # the floor of any forward + backward: x read twice, y written, g read, grad_x written
    record("polyval fwd+bwd polyfit D=8", pf, 5 * n * f32)
    xs, gs = x[:10_000], g[:10_000]
    try:
        kernel_breakdown(lambda: fwd_bwd(polyfit.polyval, x, c, g), results, "fwd+bwd 2^%d" % args.log2n)
        kernel_breakdown(lambda: fwd_bwd(polyfit.polyval, xs, c, gs), results, "fwd+bwd 1e4")
    except Exception as e:  # noqa: BLE001 - the breakdown is a diagnosis, not a measurement to fail on
        print(f"kernel breakdown failed: {type(e).__name__}: {e}", file=sys.stderr)
    eager = median_seconds(lambda: fwd_bwd(horner, x, c, g), mrt)
    record("polyval fwd+bwd eager Horner D=8", eager, speedup_of_polyfit=eager / pf)
    seed = median_seconds(lambda: fwd_bwd(seed_stack, x, c, g), mrt)
    record("polyval fwd+bwd seed stack@w D=8", seed, speedup_of_polyfit=seed / pf)
    targets["fwd_bwd_speedup_vs_seed"] = seed / pf
    if not args.no_compile:
        try:
            t_c = time.time()
            ch = torch.compile(horner, dynamic=False)
            fwd_bwd(ch, x, c, g)
            compile_time = time.time() - t_c
            comp = median_seconds(lambda: fwd_bwd(ch, x, c, g), mrt)
            record("polyval fwd+bwd torch.compile Horner D=8", comp, speedup_of_polyfit=comp / pf,
                   compile_s=compile_time)
            targets["fwd_bwd_speedup_vs_compile_horner"] = comp / pf
        except Exception as e:  # noqa: BLE001 - report, do not fail the whole run
            print(f"torch.compile baseline failed: {type(e).__name__}: {e}", file=sys.stderr)
            results["compile_error"] = f"{type(e).__name__}: {e}"

    if "polyval_fwd_share_min_D<=16" in targets:
        targets["polyval_fwd_share_min_D<=16"] = min(targets["polyval_fwd_share_min_D<=16"])
    goals = {"polyval_fwd_share_min_D<=16": 0.85, "features_fwd_share_D=8": 0.80,
             "fwd_bwd_speedup_vs_compile_horner": 3.0, "fwd_bwd_speedup_vs_seed": 50.0}
    results["targets"] = {k: {"value": v, "goal": goals[k], "met": v >= goals[k]} for k, v in targets.items()}
    results["seconds"] = time.time() - t0
    print("targets (issue 3, H100):")
    for k, v in results["targets"].items():
        print(f"  {k:40s} {v['value']:8.3f}  goal {v['goal']:g}  {'met' if v['met'] else 'NOT met'}")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out} ({results['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
