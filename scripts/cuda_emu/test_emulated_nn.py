"""polyfit's PolyLinear and fit CUDA kernels (csrc/cuda/polylinear.cu, fit.cu), run on the CPU under
the emulation of include/cuda_runtime.h, against polyfit.reference.

    python scripts/cuda_emu/test_emulated_nn.py

A few minutes on 2 cores. Needs no GPU: the emulation runs each CUDA thread as a host thread, with
the same shared host code (tiles and GEMMs of csrc/polylinear.cpp, checks and layouts of
csrc/fit.cpp) the CUDA build registers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("POLYFIT_FORCE_FALLBACK", "1")  # only polyfit.reference is used
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import build  # noqa: E402
from polyfit import reference  # noqa: E402

BASES = ("power", "chebyshev", "legendre", "hermite", "hermite_e", "laguerre")
ACCESSORS = {
    "polylinear.cu": "namespace polyfit::emu_nn {\n"
                     "const PolyLinearKernels& polylinear_kernels() { return polyfit::cuda::kCudaPolyLinearKernels; }\n}\n",
    "fit.cu": "namespace polyfit::emu_nn {\nFitKernel fit_kernel() { return &polyfit::cuda::fit_cuda; }\n}\n",
}


def load():
    return build.load(name="polyfit_cuda_emu_nn",
                      build_dir=Path(os.environ.get("POLYFIT_EMU_NN_BUILD", "/tmp/polyfit_cuda_emu_nn")),
                      host=("ops.cpp", "polylinear.cpp", "fit.cpp"), kernels=ACCESSORS, module="emu_module_nn.cpp")


failures = []


def check(name, got, want, tol):
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    err = (got.double() - want.double()).abs().max().item() if want.numel() else 0.0
    ok = got.shape == want.shape and got.dtype == want.dtype and err <= tol * scale
    if not ok:
        failures.append(f"{name}: err {err:.3g}, shapes {tuple(got.shape)} {tuple(want.shape)}, "
                        f"dtypes {got.dtype} {want.dtype}")
        print("FAIL", failures[-1], flush=True)


def test_polylinear(emu):
    g = torch.Generator().manual_seed(0)
    for dtype, tol in ((torch.float64, 1e-11), (torch.float32, 2e-5)):
        for basis in BASES:
            for input_map in ("tanh", None):
                B, n_in, n_out, K = 7, 37, 5, 6
                x = (torch.rand(B, n_in, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
                x = x.t().contiguous().t() if basis == "legendre" else x  # strided x too
                w = (torch.randn(n_out, n_in, K, generator=g, dtype=torch.float64) / 10).to(dtype)
                w = w.permute(0, 2, 1).contiguous().permute(0, 2, 1) if basis == "chebyshev" else w
                b = torch.randn(n_out, generator=g, dtype=torch.float64).to(dtype)
                dy = torch.randn(B, n_out, generator=g, dtype=torch.float64).to(dtype)
                name = f"polylinear {basis} {input_map} {dtype}"
                check(name + " y", emu.polylinear(x, w, b, basis, input_map),
                      reference.polylinear(x, w, b, basis, input_map), tol)
                xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
                gx_ref, gw_ref = torch.autograd.grad(reference.polylinear(xr, wr, None, basis, input_map), [xr, wr], dy)
                for need_x, need_w in ((True, True), (True, False), (False, True)):
                    gx, gw = emu.polylinear_backward(dy, x, w, basis, input_map, need_x, need_w)
                    if need_x:
                        check(name + f" grad_x {need_w}", gx, gx_ref, tol)
                    if need_w:
                        check(name + f" grad_w {need_x}", gw, gw_ref, tol)
                        if gw.stride() != w.stride():
                            failures.append(f"{name}: grad_weight strides {gw.stride()} vs weight {w.stride()}")


VANDER = {"power": np.polynomial.polynomial.polyvander, "chebyshev": np.polynomial.chebyshev.chebvander,
          "legendre": np.polynomial.legendre.legvander, "hermite": np.polynomial.hermite.hermvander,
          "hermite_e": np.polynomial.hermite_e.hermevander, "laguerre": np.polynomial.laguerre.lagvander}


def forward_error_bound(x, w, degree, basis, domain):
    # Two backward-stable least-squares solvers that round differently (the CUDA kernel merges point
    # segments; the reference does not) agree to about N cond eps, relative; 1e-8 when well conditioned.
    worst = 0.0
    for xr, wr in zip(x.numpy(), w.numpy()):
        t = xr if domain is None else (2 * xr - (domain[0] + domain[1])) / (domain[1] - domain[0])
        worst = max(worst, np.linalg.cond(wr[:, None] * VANDER[basis](t, degree)))
    return max(1e-8, 10 * x.shape[-1] * worst * np.finfo(np.float64).eps)


def test_fit(emu):
    g = torch.Generator().manual_seed(1)
    # N = 300 > the CUDA segment (256): two segments per curve, merged in order.
    for R, N, degree in ((5, 20, 3), (3, 300, 5), (1, 7, 6)):
        for basis in BASES:
            for domain in (None, [-2.0, 3.0]):
                lo, hi = (0.0, 4.0) if basis == "laguerre" and domain is None else (-1.0, 1.0)
                if domain is not None:
                    lo, hi = domain
                x = torch.rand(R, N, generator=g, dtype=torch.float64) * (hi - lo) + lo
                y = torch.sin(x) + 0.1 * torch.randn(R, N, generator=g, dtype=torch.float64)
                w = torch.rand(R, N, generator=g, dtype=torch.float64) + 0.5
                c, r, ill = emu.fit(x, y, w, degree, basis, domain)
                cr, rr, _ = reference.fit(x, y, degree, basis, w, domain)
                name = f"fit R={R} N={N} D={degree} {basis} domain={domain}"
                check(name + " coeffs", c, cr, forward_error_bound(x, w, degree, basis, domain))
                check(name + " residuals", r, rr, 1e-8)
                if ill.any():
                    failures.append(f"{name}: flagged ill-conditioned")
    # float32 with weights whose squares leave float32's range; N = 64 is one segment, folded a row at
    # a time from an empty triangle (whose first rows' rounding noise once squared to zero)
    x = torch.rand(40, 64, generator=g) * 2 - 1
    y = torch.sin(3 * x) + 0.1 * torch.randn(40, 64, generator=g)
    w = torch.rand(40, 64, generator=g) + 0.5
    cr, _, _ = reference.fit(x.double(), y.double(), 5, "chebyshev", w.double())
    for s in (1e-20, 1.0, 1e20):
        c, _, ill = emu.fit(x, y, w * s, 5, "chebyshev", None)
        check(f"fit float32 weights x {s:g} coeffs", c.double(), cr, 1e-4)
        if ill.any():
            failures.append(f"fit float32 weights x {s:g}: flagged ill-conditioned")
    # rank deficient: three distinct x, degree 5 -> flagged for the SVD path; NaN data -> not flagged
    x = torch.tensor([[-0.5, 0.1, 0.7] * 6], dtype=torch.float64)
    y = torch.randn(1, 18, generator=g, dtype=torch.float64)
    _, _, ill = emu.fit(x, y, None, 5, "chebyshev", None)
    if not bool(ill[0]):
        failures.append("fit: a rank-3 problem of degree 5 was not flagged")
    y[0, 3] = float("nan")
    c, _, ill = emu.fit(x, y, None, 5, "chebyshev", None)
    if bool(ill[0]) or not torch.isnan(c).all():
        failures.append("fit: NaN data should give NaN coefficients, unflagged")


def main() -> int:
    torch.set_num_threads(1)
    emu = load()
    emu.set_sm_count(2)
    test_polylinear(emu)
    test_fit(emu)
    print(f"{len(failures)} failures" if failures else "all emulated PolyLinear and fit kernel checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
