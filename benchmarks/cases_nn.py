"""Benchmark cases of polyfit.nn.PolyLinear and polyfit.fit, registered into the suite's registry.

polylinear  a Kolmogorov-Arnold layer y = sum_{i,k} W[o, i, k] T_k(tanh(x[b, i])), forward and
            forward+backward (gradients of x and of the layer's weight). Peers:
    polyfit          polyfit.nn.PolyLinear (fused: basis tiles + GEMMs, basis never saved)
    chebykan         the eager layer people write today (ChebyKAN and cousins): tanh, the
                     recurrence, torch.stack of the columns, einsum with the weight
    compile_chebykan torch.compile of chebykan
    gemms            the layer's three GEMMs alone, on a precomputed basis (basis @ W^T forward;
                     dY^T @ basis and dY @ W backward): the floor the fused layer is measured
                     against. Its grad_x is G's first block, not the layer's gradient, so the
                     report marks it as disagreeing: it is a limit, not an implementation.
fit         least-squares fits of many curves (x, y of shape (curves, N)), forward only. Peers:
    polyfit          polyfit.fit(x, y, degree).coeffs
    numpy_loop       numpy.polynomial's *fit in a Python loop over the curves (CPU, float64)
    torch_lstsq      torch.linalg.lstsq on the stacked Vandermonde (power basis only)
    reference        polyfit.reference.fit: batched SVD in PyTorch (polyfit's fallback)

Inside the suite:   python -m benchmarks --op polylinear,fit
Alone, the issue's target figures (ratios, saved and peak memory) in one run:
                    python -m benchmarks.cases_nn
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys

import torch

import polyfit
from polyfit import _backend, reference

from . import eager
from .cases import compiled, np, npp  # numpy is optional: np is None without it
from .registry import Case, Grid, Peer, add_to_preset, register
from .roofline import RECURRENCE_OPS

NUMPY_FIT = {"power": ("polynomial", "polyfit"), "chebyshev": ("chebyshev", "chebfit"),
             "legendre": ("legendre", "legfit"), "hermite": ("hermite", "hermfit"),
             "hermite_e": ("hermite_e", "hermefit"), "laguerre": ("laguerre", "lagfit")}


def _note(device: str) -> str:
    return "" if _backend.compiled_for(torch.device(device)) else "runs polyfit.reference: no compiled kernels here"


# ---------------------------------------------------------------------------------------------
# PolyLinear.


def chebykan_layer(x, weight, basis: str = "chebyshev"):
    """The eager KAN layer: tanh -> recurrence -> torch.stack -> einsum (the whole (B, in, K)
    basis is formed and autograd keeps it, with every column of the recurrence)."""
    t = torch.tanh(x)
    phi = torch.stack(eager.columns(t, weight.shape[-1] - 1, basis), dim=-1)
    return torch.einsum("bik,oik->bo", phi, weight)


class _GemmsOnly(torch.autograd.Function):
    """basis @ W^T forward; dY^T @ basis and dY @ W backward; nothing else."""

    @staticmethod
    def forward(ctx, x, weight, phi):
        out, n_in, K = weight.shape
        w2 = weight.permute(0, 2, 1).reshape(out, K * n_in)  # a view of the degree-major weight
        ctx.save_for_backward(w2, phi)
        ctx.shape = weight.shape
        return phi @ w2.T

    @staticmethod
    def backward(ctx, dy):
        w2, phi = ctx.saved_tensors
        out, n_in, K = ctx.shape
        gw = (dy.T @ phi).view(out, K, n_in).permute(0, 2, 1)
        g = dy @ w2
        return g[:, :n_in], gw, None


def _degree_major(w):
    return w.detach().permute(0, 2, 1).contiguous().permute(0, 2, 1)


def polylinear_peers(basis: str, degree: int) -> dict:
    def layer_of(case, inp):
        n_in, n_out = inp["x"].shape[1], inp["weight"].shape[0]
        layer = polyfit.nn.PolyLinear(n_in, n_out, degree, basis, device=case.device, dtype=case.dtype)
        with torch.no_grad():
            layer.weight.copy_(inp["weight"])
        return layer

    def polyfit_peer(case, inp):
        layer = layer_of(case, inp)
        return Peer(functools.partial(layer, inp["x"]), wrt=[layer.weight], note=_note(case.device))

    def compile_polyfit_peer(case, inp):
        layer = layer_of(case, inp)
        return Peer(functools.partial(torch.compile(layer, dynamic=False), inp["x"]), wrt=[layer.weight])

    def chebykan_peer(case, inp, fn=chebykan_layer):
        w = inp["weight"].detach().clone().requires_grad_(case.mode == "fwd+bwd")
        return Peer(functools.partial(fn, inp["x"], w, basis), wrt=[w] if case.mode == "fwd+bwd" else [])

    def compile_peer(case, inp):
        return chebykan_peer(case, inp, fn=compiled(chebykan_layer))

    def gemms_peer(case, inp):
        x = inp["x"]
        w = _degree_major(inp["weight"]).requires_grad_(case.mode == "fwd+bwd")
        phi = polyfit.features(torch.tanh(x.detach()), degree, basis).permute(0, 2, 1).reshape(x.shape[0], -1)
        # Its forward is the layer's; its backward's x-gradient is only the GEMM, so that is left unchecked.
        return Peer(lambda: _GemmsOnly.apply(x, w, phi), wrt=[w] if case.mode == "fwd+bwd" else [],
                    note="limit: the three GEMMs alone on a precomputed basis (grad_x not formed)",
                    compared=case.mode == "fwd")

    return {"polyfit": polyfit_peer, "compile_polyfit": compile_polyfit_peer, "chebykan": chebykan_peer,
            "compile_chebykan": compile_peer, "gemms": gemms_peer}


def _polylinear_inputs(batch, n_in, n_out, degree, dtype, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, n_in, generator=g)
    w = torch.randn(n_out, n_in, degree + 1, generator=g) / (n_in * (degree + 1))
    return {"x": x.to(device, dtype), "weight": w.to(device, dtype)}


def polylinear_counts(batch, n_in, n_out, degree, basis, elem, mode):
    """(bytes, FMA-unit operations): x, weight and y once each (fwd); in fwd+bwd also dY, grad_x,
    grad_weight, and x and the weight again. FMAs: the GEMMs (one, or three) plus the basis
    (recurrence per column) and, in backward, its recomputation and the derivative recurrence."""
    K = degree + 1
    gemm = batch * n_in * n_out * K
    basis_ops = batch * n_in * degree * RECURRENCE_OPS[basis]
    if mode == "fwd":
        return (batch * n_in + n_out * n_in * K + batch * n_out) * elem, gemm + basis_ops
    nbytes = (3 * batch * n_in + 3 * n_out * n_in * K + 2 * batch * n_out) * elem
    return nbytes, 3 * gemm + basis_ops * 4 + batch * n_in * K


@register("polylinear")
def polylinear_cases(grid: Grid):
    ins = grid.extra.get("in_features", (256,))
    outs = grid.extra.get("out_features", (256,))
    for device in grid.devices:
        for dtype in grid.dtypes:
            for basis in grid.bases:
                for mode in grid.modes:
                    for degree in grid.degrees:
                        for batch in grid.n:
                            for n_in in ins:
                                for n_out in outs:
                                    nbytes, fmas = polylinear_counts(int(batch), n_in, n_out, int(degree), basis,
                                                                     dtype.itemsize, mode)
                                    yield Case(
                                        op="polylinear", mode=mode, device=device, dtype=dtype,
                                        params={"basis": basis, "degree": int(degree), "n": int(batch),
                                                "in": n_in, "out": n_out},
                                        make_inputs=functools.partial(_polylinear_inputs, int(batch), n_in, n_out,
                                                                      int(degree), dtype, device),
                                        grad_inputs=("x",), peers=polylinear_peers(basis, int(degree)),
                                        bytes=nbytes, fmas=fmas)


# ---------------------------------------------------------------------------------------------
# fit.


def _fit_inputs(curves, n, dtype, device):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(curves, n, generator=g, dtype=torch.float64) * 2 - 1
    y = torch.sin(3 * x) + 0.1 * torch.randn(curves, n, generator=g, dtype=torch.float64)
    return {"x": x.to(device, dtype), "y": y.to(device, dtype)}


@contextlib.contextmanager
def _quiet(logger: str):
    """Warnings of `logger` and its children held back (errors still show)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def fit_peers(basis: str, degree: int) -> dict:
    def polyfit_peer(case, inp):
        return Peer(lambda: polyfit.fit(inp["x"], inp["y"], degree, basis).coeffs, note=_note(case.device))

    def compile_polyfit_peer(case, inp):
        fit = compiled(polyfit.fit)
        first = [True]

        def call():
            # dynamo warns of the graph break as it compiles (the first call); the note says it instead
            quiet = _quiet("torch._dynamo") if first[0] else contextlib.nullcontext()
            first[0] = False
            with quiet:
                return fit(inp["x"], inp["y"], degree, basis).coeffs

        return Peer(call, note="one graph break: the rank check's data-dependent branch (re-solving rank-deficient "
                               "curves by SVD)")

    def numpy_peer(case, inp):
        if np is None or case.device != "cpu":
            return None
        x, y = inp["x"].double().numpy(), inp["y"].double().numpy()
        module, name = NUMPY_FIT[basis]
        fn = getattr(getattr(npp, module), name)
        return Peer(lambda: np.stack([fn(x[r], y[r], degree) for r in range(x.shape[0])]),
                    note="numpy float64, a Python loop over the curves")

    def lstsq_peer(case, inp):
        if basis != "power":
            return None
        return lambda: torch.linalg.lstsq(torch.linalg.vander(inp["x"], N=degree + 1),
                                          inp["y"].unsqueeze(-1)).solution.squeeze(-1)

    def reference_peer(case, inp):
        return lambda: reference.fit(inp["x"], inp["y"], degree, basis)[0]

    return {"polyfit": polyfit_peer, "compile_polyfit": compile_polyfit_peer, "numpy_loop": numpy_peer,
            "torch_lstsq": lstsq_peer,
            "reference": reference_peer}


@register("fit")
def fit_cases(grid: Grid):
    for device in grid.devices:
        for dtype in grid.dtypes:
            for basis in grid.bases:
                for degree in grid.degrees:
                    for n in grid.n:
                        for curves in grid.extra.get("curves", (10000,)):
                            K, elem = int(degree) + 1, dtype.itemsize
                            yield Case(
                                op="fit", mode="fwd", device=device, dtype=dtype,
                                params={"basis": basis, "degree": int(degree), "n": int(n), "curves": curves},
                                make_inputs=functools.partial(_fit_inputs, curves, int(n), dtype, device),
                                peers=fit_peers(basis, int(degree)),
                                bytes=(2 * curves * int(n) + curves * K) * elem,
                                # Householder QR of the (N, K) rows with their right-hand side: per column j
                                # a norm (N) and, for each of the K - j columns to its right, a dot product
                                # and an update (2N); plus the basis recurrence.
                                fmas=curves * int(n) * (K * (K + 2) + int(degree) * RECURRENCE_OPS[basis]))


add_to_preset("quick", Grid(ops=("polylinear",), modes=("fwd", "fwd+bwd"), bases=("chebyshev",),
                            dtypes=(torch.float32,), n=(1024,), degrees=(8,),
                            extra={"in_features": (256,), "out_features": (256,)}))
add_to_preset("quick", Grid(ops=("fit",), modes=("fwd",), bases=("power",), dtypes=(torch.float64,), n=(64,),
                            degrees=(5,), extra={"curves": (10000,)}))
add_to_preset("full", lambda devices: [
    Grid(ops=("polylinear",), bases=("chebyshev", "legendre"), dtypes=(torch.float32, torch.bfloat16),
         devices=devices, n=(256, 1024, 4096), degrees=(4, 8, 16),
         extra={"in_features": (256,), "out_features": (256,)}),
    Grid(ops=("fit",), modes=("fwd",), bases=("power", "chebyshev", "legendre"), dtypes=(torch.float64, torch.float32),
         devices=devices, n=(64, 1024), degrees=(2, 5, 10), extra={"curves": (10000,)}),
])


# ---------------------------------------------------------------------------------------------
# The targets, alone: python -m benchmarks.cases_nn [--threads T] [--out results/nn.json]


def targets(device: str = "cpu", min_run_time: float = 1.0) -> dict:
    from .roofline import Limits
    from .runner import RunConfig, run_case

    limits = Limits(device, min_run_time=0.2)
    cfg = RunConfig(min_run_time=min_run_time)
    out = {"device": device, "threads": torch.get_num_threads(), "loadavg": [os.getloadavg()[0]]}

    pl = Grid(ops=("polylinear",), modes=("fwd+bwd",), bases=("chebyshev",), dtypes=(torch.float32,),
              devices=(device,), n=(1024,), degrees=(8,), extra={"in_features": (256,), "out_features": (256,)})
    (case,) = list(polylinear_cases(pl))
    r = run_case(case, limits, cfg)
    p = r["peers"]
    x_bytes = 1024 * 256 * 4
    out["polylinear"] = {
        "case": case.name,
        "median_ms": {k: v.get("median_s", float("nan")) * 1e3 for k, v in p.items()},
        "saved_MiB": {k: v.get("saved_bytes", 0) / 2**20 for k, v in p.items()},
        "peak_MiB": {k: v["peak_bytes"] / 2**20 for k, v in p.items() if "peak_bytes" in v},
        "x_MiB": x_bytes / 2**20,
        "polyfit_over_gemms": p["polyfit"]["median_s"] / p["gemms"]["median_s"],
        "chebykan_over_polyfit": p["chebykan"]["median_s"] / p["polyfit"]["median_s"],
        "compile_chebykan_over_polyfit": p["compile_chebykan"].get("median_s", float("nan")) / p["polyfit"]["median_s"],
        "errors": {k: v["error"] for k, v in p.items() if "error" in v},
    }
    out["loadavg"].append(os.getloadavg()[0])

    fg = Grid(ops=("fit",), modes=("fwd",), bases=("power",), dtypes=(torch.float64,), devices=(device,), n=(64,),
              degrees=(5,), extra={"curves": (10000,)})
    (case,) = list(fit_cases(fg))
    r = run_case(case, limits, cfg)
    p = r["peers"]
    out["fit"] = {
        "case": case.name,
        "median_ms": {k: v.get("median_s", float("nan")) * 1e3 for k, v in p.items()},
        "numpy_loop_over_polyfit": r["speedup"].get("numpy_loop"),
        "torch_lstsq_over_polyfit": r["speedup"].get("torch_lstsq"),
        "reference_over_polyfit": r["speedup"].get("reference"),
        "agrees": {k: v.get("agrees") for k, v in p.items() if "agrees" in v},
    }
    out["loadavg"].append(os.getloadavg()[0])
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.cases_nn", description="issue 5's target figures")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--min-run-time", type=float, default=1.0)
    ap.add_argument("--out", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from .cases import configure_dynamo

    configure_dynamo()
    res = targets(args.device, args.min_run_time)
    pl, ft = res["polylinear"], res["fit"]
    print(f"device {res['device']}, {res['threads']} threads, 1-min load average {res['loadavg']}")
    print(f"\n{pl['case']}")
    for k, v in pl["median_ms"].items():
        print(f"  {k:17s} {v:9.2f} ms   saved {pl['saved_MiB'].get(k, 0):7.2f} MiB   "
              f"peak {pl['peak_MiB'].get(k, float('nan')):7.2f} MiB")
    print(f"  polyfit / three GEMMs alone = {pl['polyfit_over_gemms']:.3f} (target <= 1.1); "
          f"ChebyKAN eager / polyfit = {pl['chebykan_over_polyfit']:.2f}; "
          f"compiled / polyfit = {pl['compile_chebykan_over_polyfit']:.2f}; x is {pl['x_MiB']:.2f} MiB")
    print(f"\n{ft['case']}")
    for k, v in ft["median_ms"].items():
        print(f"  {k:17s} {v:9.2f} ms")
    print(f"  numpy loop / polyfit = {ft['numpy_loop_over_polyfit']:.0f}x (target >= 100); "
          f"lstsq / polyfit = {ft['torch_lstsq_over_polyfit']:.1f}x (target >= 10)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
