"""polyfit's CUDA kernels, run on the CPU under emulation, against polyfit.reference.

    python scripts/cuda_emu/test_emulated.py [-q] [--quick]

About 15 minutes on 2 cores (most of it the emulation's thread switches); --quick runs a subset
(float32, fewer derivative orders) in about a quarter of that.

Covers every kernel and launch path (rows/lanes series, vector/scalar loads, pre-derived and
per-thread-derived coefficients, feature tiles and direct rows, register and window moments,
chunk reduction, derivative transposes), every basis and dtype, strided and broadcast inputs, and
bitwise repeatability. Needs no GPU; the emulation runs each CUDA thread as a host thread.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("POLYFIT_FORCE_FALLBACK", "1")  # only polyfit.reference is used
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

import build  # noqa: E402
from polyfit import reference  # noqa: E402

BASES = ("power", "chebyshev", "legendre", "hermite", "hermite_e", "laguerre")
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}
class Failures(list):
    def append(self, msg):  # report as they happen
        print("FAIL", msg, flush=True)
        super().append(msg)


failures: list[str] = Failures()
checks = 0


def close(name, got, want, dtype, scale=None):
    global checks
    checks += 1
    got64, want64 = got.double(), want.double()
    if got.shape != want.shape or got.dtype != want.dtype:
        failures.append(f"{name}: shape/dtype {tuple(got.shape)} {got.dtype} vs {tuple(want.shape)} {want.dtype}")
        return
    same = (got64 == want64) | (torch.isnan(got64) & torch.isnan(want64))  # equal infinities, NaNs
    if scale is None:
        finite = want64[torch.isfinite(want64)]
        scale = finite.abs().max().item() if finite.numel() else 1.0
    err = torch.where(same, torch.zeros_like(got64), (got64 - want64).abs())
    bad = err.max().item() if err.numel() else 0.0
    if not bad <= TOL[dtype] * max(scale, 1.0):
        failures.append(f"{name}: max abs err {bad:.3g} (scale {scale:.3g})")


def ref_backward(grad, x, c, basis, domain, derivative, need_x=True, need_c=True):
    dtype = torch.promote_types(x.dtype, c.dtype)
    xr = x.detach().double().requires_grad_(need_x)
    cr = c.detach().double().requires_grad_(need_c)
    y = reference.polyval(xr, cr, basis, domain=domain, derivative=derivative)
    ins = [t for t in (xr, cr) if t.requires_grad]
    if y.requires_grad:
        gs = torch.autograd.grad(y, ins, grad.double().expand(y.shape), allow_unused=True)
    else:  # y does not depend on the inputs asked for (derivative order at or past the degree)
        gs = [None] * len(ins)
    gs = [torch.zeros_like(t) if g is None else g for g, t in zip(gs, ins)]
    it = iter(gs)
    gx = next(it).to(x.dtype) if need_x else None
    gc = next(it).to(c.dtype) if need_c else None
    return gx, gc, dtype


def rand(shape, dtype, lo=-1.0, hi=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(dtype)


def main(quiet: bool, quick: bool) -> int:
    t0 = time.time()
    emu = build.load()
    print(f"built in {time.time() - t0:.0f}s", flush=True)

    def log(msg):
        if not quiet:
            print(msg, flush=True)

    dtypes = (torch.float32, torch.float16) if quick else (torch.float64, torch.float32, torch.bfloat16, torch.float16)
    layout_dtypes = (torch.float32,) if quick else (torch.float64, torch.float32, torch.bfloat16)
    moment_dtypes = (torch.float32,) if quick else (torch.float64, torch.float32, torch.float16)
    orders = [(0, None), (1, (-1.5, 1.2)), (2, None), (3, (-2.0, 2.0))][: 3 if quick else 4]
    masks = [(True, True), (True, False)] if quick else [(True, True), (False, True), (True, False)]

    # ---- features: tile kernel (dense and padded pitch), direct kernel, strided x ----
    for basis, dtype in itertools.product(BASES, dtypes):
        for degree, M, domain, inc in [(0, 5, None, True), (1, 7, None, False), (8, 300, (0.0, 2.0), True),
                                       (7, 33, None, False), (16, 517, (-3.0, 1.0), False), (9, 1, None, True)]:
            lo, hi = (domain if domain else (-1.0, 1.0))
            x = rand((2 * M,), dtype, lo, hi, seed=degree)[::2]  # stride 2
            got = emu.features(x, degree, basis, list(domain) if domain else None, inc)
            want = reference.features(x.double(), degree, basis, domain=domain, increasing=inc).to(dtype)
            close(f"features {basis} {dtype} D={degree} M={M} inc={inc}", got, want, dtype)
    for basis in BASES:  # large degrees: direct kernel; beyond the 1/j table
        for degree in (700, 5000):
            x = rand((5,), torch.float64, -0.9, 0.9)
            got = emu.features(x, degree, basis, None, True)
            want = reference.features(x, degree, basis)
            close(f"features {basis} D={degree}", got, want, torch.float64)
    log(f"features done ({time.time() - t0:.0f}s)")

    # ---- polyval forward and backward over layouts ----
    layouts = [
        # name, x shape, coeffs shape, x transform
        ("shared N=1", (1,), (4,), None),
        ("shared N=1029", (1029,), (6,), None),
        ("shared N=2048 vector", (2048,), (5,), None),
        ("shared N=2048 offset", (2049,), (5,), "offset"),
        ("shared 2-D strided", (40, 60), (5,), "transpose"),
        ("per-row long", (3, 2100), (3, 6), None),
        ("per-row long, coeffs broadcast", (3, 1030), (1, 6), None),
        ("per-row short", (50, 3), (50, 7), None),
        ("per-row N=1 (features backward)", (200, 1), (200, 9), None),
        ("per-row short broadcast x", (3, 1, 7), (4, 5), None),
        ("per-row transposed coeffs", (6, 5), (6, 4), "coeffs_t"),
    ]
    for (name, xs, cs, tf), basis in itertools.product(layouts, BASES):
        for dtype in layout_dtypes:
            x = rand(xs if tf != "transpose" else xs[::-1], dtype, -1.2, 1.1, seed=1)
            if tf == "transpose":
                x = x.t()
            if tf == "offset":
                x = x[1:]
            c = rand(cs if tf != "coeffs_t" else cs[::-1], dtype, seed=2)
            if tf == "coeffs_t":
                c = c.t()
            for derivative, domain in orders:
                dom = list(domain) if domain else None
                want = reference.polyval(x.double(), c.double(), basis, domain=domain, derivative=derivative)
                got = emu.polyval(x, c, basis, dom, derivative)
                close(f"polyval {name} {basis} {dtype} d={derivative}", got, want.to(dtype), dtype)
                grad = rand(want.shape, dtype, seed=3)
                for need_x, need_c in masks:
                    gx, gc = emu.polyval_backward(grad, x, c, basis, dom, derivative, need_x, need_c)
                    rx, rc, _ = ref_backward(grad, x, c, basis, domain, derivative, need_x, need_c)
                    if need_x:
                        close(f"grad_x {name} {basis} {dtype} d={derivative}", gx, rx, dtype)
                    elif gx is not None:
                        failures.append(f"grad_x {name}: returned although not requested")
                    if need_c:
                        close(f"grad_c {name} {basis} {dtype} d={derivative}", gc, rc, dtype)
        log(f"polyval {name} {basis} done ({time.time() - t0:.0f}s)")

    # ---- coefficient gradients: chunked reduction (N = 1e5: 391 chunks, the block-wide sum's tail),
    # window kernel, expanded grad, half ----
    for basis, dtype in itertools.product(BASES, moment_dtypes):
        for N, K, R in [(5000, 6, 1), (100_000, 6, 1), (5000, 40, 1), (9000, 12, 2), (300, 33, 3), (70, 20, 40)]:
            x = rand((R, N), dtype, -1.0, 1.0, seed=4)
            c = rand((R, K), dtype, seed=5)
            grad = rand((R, N), dtype, seed=6)
            for derivative in (0, 1):
                gx, gc = emu.polyval_backward(grad, x, c, basis, None, derivative, True, True)
                rx, rc, _ = ref_backward(grad, x, c, basis, None, derivative)
                close(f"moments {basis} {dtype} R={R} N={N} K={K} d={derivative} gc", gc, rc, dtype)
                close(f"moments {basis} {dtype} R={R} N={N} K={K} d={derivative} gx", gx, rx, dtype)
        # grad broadcast with stride 0
        x = rand((3000,), dtype, -1.0, 1.0, seed=7)
        c = rand((10,), dtype, seed=8)
        grad = torch.ones((), dtype=dtype).expand(3000)
        _, gc = emu.polyval_backward(grad, x, c, basis, [-1.0, 1.0], 0, False, True)
        _, rc, _ = ref_backward(grad, x, c, basis, (-1.0, 1.0), 0, False, True)
        close(f"moments {basis} {dtype} expanded grad", gc, rc, dtype)
        log(f"moments {basis} {dtype} done ({time.time() - t0:.0f}s)")

    # a sum of 2344 chunks: the block-wide reduction with full rounds of 8 loads per thread
    for dtype in moment_dtypes:
        x = rand((1, 600_000), dtype, -1.0, 1.0, seed=4)
        c = rand((1, 6), dtype, seed=5)
        grad = rand((1, 600_000), dtype, seed=6)
        _, gc = emu.polyval_backward(grad, x, c, "power", None, 0, False, True)
        _, rc, _ = ref_backward(grad, x, c, "power", None, 0, False, True)
        close(f"moments power {dtype} N=600000 (2344 chunks) gc", gc, rc, dtype)
    log(f"moments of 2344 chunks done ({time.time() - t0:.0f}s)")

    # ---- huge degree: rows kernel beyond shared memory, lanes with derivation scratch ----
    for basis in ("power", "chebyshev", "legendre"):
        x = rand((300,), torch.float64, -0.5, 0.5, seed=9)
        c = rand((3000,), torch.float64, seed=10) / 3000
        for derivative in (0, 1):
            want = reference.polyval(x, c, basis, derivative=derivative)
            got = emu.polyval(x, c, basis, None, derivative)
            close(f"polyval {basis} K=3000 d={derivative}", got, want, torch.float64)
        xr = rand((4, 3), torch.float64, -0.5, 0.5, seed=11)
        cr = rand((4, 5000), torch.float64, seed=12) / 5000
        want = reference.polyval(xr, cr, basis, derivative=1)
        close(f"polyval {basis} per-row K=5000 d=1", emu.polyval(xr, cr, basis, None, 1), want, torch.float64)
    log(f"large degrees done ({time.time() - t0:.0f}s)")

    # ---- bitwise repeatability, and independence from the grid size ----
    x = rand((2, 7000), torch.float32, -1, 1, seed=13)
    c = rand((2, 9), torch.float32, seed=14)
    grad = rand((2, 7000), torch.float32, seed=15)
    runs = []
    for sms in (3, 3, 1, 7):
        emu.set_sm_count(sms)
        runs.append(emu.polyval_backward(grad, x, c, "legendre", None, 1, True, True))
    emu.set_sm_count(3)
    global checks
    for gx, gc in runs[1:]:
        checks += 1
        if not (torch.equal(gx, runs[0][0]) and torch.equal(gc, runs[0][1])):
            failures.append("backward is not bitwise identical across runs and grid sizes")

    print(f"{checks} checks, {len(failures)} failures, {time.time() - t0:.0f}s")
    for f in failures[:50]:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main("-q" in sys.argv, "--quick" in sys.argv))
