"""The seed's curve fit with polyfit as the drop-in.

Samples of f(x) = 5x^2 + 3 on [-10, 10] are fitted by g(x, w) = w0 x^2 + w1 x + w2 with
torch.optim.Adam, 1000 steps of 100 fresh samples each, exactly as the seed does it. The seed builds
the features by hand:

    f = torch.stack([x * x, x, torch.ones_like(x)], 1)
    yhat = torch.squeeze(f @ w, 1)

polyfit replaces that with one fused, differentiable call (coefficients lowest degree first):

    yhat = polyfit.polyval(x, w)

and, since this is a linear least-squares problem, also solves it in closed form on the same kind
of samples (a Householder QR per curve, as numpy.polynomial.polynomial.polyfit would):

    w = polyfit.fit(x, y, degree=2).coeffs
"""

from __future__ import annotations

import time

import torch

import polyfit


def fit_by_adam(steps: int = 1000, seed: int = 0, lr: float = 0.1) -> torch.Tensor:
    """The seed's training loop; returns w = (w2, w1, w0), lowest degree first."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(3, generator=gen).requires_grad_()
    opt = torch.optim.Adam([w], lr)
    for _ in range(steps):
        x = torch.rand(100, generator=gen) * 20 - 10
        y = 5 * x * x + 3
        yhat = polyfit.polyval(x, w)  # the seed: torch.squeeze(torch.stack([x*x, x, 1], 1) @ w, 1)
        loss = torch.nn.functional.mse_loss(yhat, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach()


def run(steps: int = 1000, seed: int = 0) -> dict:
    true = torch.tensor([3.0, 0.0, 5.0])
    print("polyfit demo: samples of f(x) = 5x^2 + 3 on [-10, 10], fitted by g(x, w) = w0 x^2 + w1 x + w2")
    print("  seed:    yhat = torch.squeeze(torch.stack([x * x, x, torch.ones_like(x)], 1) @ w, 1)")
    print("  polyfit: yhat = polyfit.polyval(x, w)        # w lowest degree first: (w2, w1, w0)")
    t0 = time.perf_counter()
    w = fit_by_adam(steps, seed)
    elapsed = time.perf_counter() - t0
    print(f"\nAdam, {steps} steps ({elapsed:.2f} s):")
    print(f"  learned (w0, w1, w2) = ({w[2]:.4f}, {w[1]:.4f}, {w[0]:.4f})   true (5, 0, 3)")
    print(f"  max |error| = {(w - true).abs().max():.4f}")

    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(100, generator=gen) * 20 - 10
    y = 5 * x * x + 3
    t0 = time.perf_counter()
    f = polyfit.fit(x, y, 2)
    elapsed = time.perf_counter() - t0
    c = f.coeffs
    fit_error = float((c - true).abs().max())
    print(f"\npolyfit.fit(x, y, 2) on 100 samples ({elapsed * 1e3:.2f} ms):")
    print(f"  fitted  (w0, w1, w2) = ({c[2]:.4f}, {c[1]:.4f}, {c[0]:.4f})   true (5, 0, 3)")
    print(f"  max |error| = {fit_error:.2e}   residual sum of squares = {float(f.residuals):.2e}")
    return {"adam": w, "fit": c, "fit_error": fit_error}
