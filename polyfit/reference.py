"""Pure-PyTorch implementation of polyfit's contract.

It serves every case the compiled kernels do not (no compiler at install time, devices without
kernels such as MPS, ``POLYFIT_FORCE_FALLBACK=1``) and is the tests' second oracle beside
numpy.polynomial. It is plain tensor code, so autograd differentiates it to any order.
Inputs are assumed valid: polyfit's public functions check them first.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

_HALF = (torch.float16, torch.bfloat16)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _HALF else dtype


def map_domain(x: Tensor, domain: Optional[Sequence[float]]) -> tuple[Tensor, float]:
    """t = offset + scale * x for domain (a, b) -> [-1, 1]; returns (t, scale)."""
    if domain is None:
        return x, 1.0
    a, b = float(domain[0]), float(domain[1])
    scale, offset = 2.0 / (b - a), -(a + b) / (b - a)
    t = offset + scale * x
    inside = (x >= min(a, b)) & (x <= max(a, b))
    # The clamp only undoes the map's rounding overshoot at the domain's ends; its derivative must
    # stay the map's, as in the compiled kernels (a clamped t would carry none where it overshot).
    return torch.where(inside, t + (t.clamp(-1.0, 1.0) - t).detach(), t), scale


def _first(basis: str, t: Tensor) -> Tensor:
    if basis == "hermite":
        return 2 * t
    if basis == "laguerre":
        return 1 - t
    return t


def _next(basis: str, k: int, t: Tensor, p1: Tensor, p0: Tensor) -> Tensor:
    """P_{k+1} from P_k = p1 and P_{k-1} = p0."""
    if basis == "power":
        return p1 * t
    if basis == "chebyshev":
        return 2 * t * p1 - p0
    if basis == "legendre":
        return ((2 * k + 1) * t * p1 - k * p0) / (k + 1)
    if basis == "hermite":
        return 2 * t * p1 - 2 * k * p0
    if basis == "hermite_e":
        return t * p1 - k * p0
    if basis == "laguerre":
        return ((2 * k + 1 - t) * p1 - k * p0) / (k + 1)
    raise ValueError(f"unknown basis {basis!r}")


def basis_columns(t: Tensor, degree: int, basis: str) -> list[Tensor]:
    """[P_0(t), ..., P_degree(t)]."""
    cols = [torch.ones_like(t)]
    if degree >= 1:
        cols.append(_first(basis, t))
    for k in range(1, degree):
        cols.append(_next(basis, k, t, cols[k], cols[k - 1]))
    return cols


def features(x: Tensor, degree: int, basis: str = "power", *, domain=None, increasing: bool = True) -> Tensor:
    t, _ = map_domain(x.to(_compute_dtype(x.dtype)), domain)
    cols = basis_columns(t, degree, basis)
    if degree == 0:  # P_0 = 1 alone: still a function of x (gradient zero), as the compiled op's output is
        cols[0] = cols[0] + _attached_zero(t)
    out = torch.stack(cols, dim=-1)
    if not increasing:
        out = out.flip(-1)
    return out.to(x.dtype)


def derivative_coeffs(c: Tensor, basis: str) -> Tensor:
    """Coefficients (last dim) of d/dt of the series, one fewer; like numpy's polyder, chebder, ..."""
    K = c.shape[-1]
    if K == 1:
        return torch.zeros_like(c)
    col = [c[..., k] for k in range(K)]
    if basis in ("power", "hermite", "hermite_e"):
        f = 2 if basis == "hermite" else 1
        d = [f * (j + 1) * col[j + 1] for j in range(K - 1)]
    elif basis == "chebyshev":
        d = [None] * (K - 1)
        for k in range(K - 1, 0, -1):
            d[k - 1] = 2 * k * col[k] + (d[k + 1] if k + 1 <= K - 2 else 0)
        d[0] = d[0] / 2
    elif basis == "legendre":
        d = [None] * (K - 1)
        e = list(col)
        for j in range(K - 1, 0, -1):
            d[j - 1] = (2 * j - 1) * e[j]
            if j >= 2:
                e[j - 2] = e[j - 2] + e[j]
    elif basis == "laguerre":
        d = [None] * (K - 1)
        s = torch.zeros_like(col[0])
        for j in range(K - 1, 0, -1):
            s = s + col[j]
            d[j - 1] = -s
    else:
        raise ValueError(f"unknown basis {basis!r}")
    return torch.stack(d, -1)


def _clenshaw(t: Tensor, cols: list[Tensor], basis: str) -> Tensor:
    """sum_k cols[k] * P_k(t) by the three-term recurrence, from the top coefficient down."""
    K = len(cols)
    if basis == "power":
        y = cols[K - 1] + torch.zeros_like(t)
        for k in range(K - 2, -1, -1):
            y = y * t + cols[k]
        return y
    b1 = cols[K - 1] + torch.zeros_like(t)
    b2 = torch.zeros_like(b1)
    for k in range(K - 2, -1, -1):
        if basis == "chebyshev":
            b0 = cols[k] + (t if k == 0 else 2 * t) * b1 - b2
        elif basis == "legendre":
            b0 = cols[k] + (2 * k + 1) / (k + 1) * t * b1 - (k + 1) / (k + 2) * b2
        elif basis == "hermite":
            b0 = cols[k] + 2 * t * b1 - 2 * (k + 1) * b2
        elif basis == "hermite_e":
            b0 = cols[k] + t * b1 - (k + 1) * b2
        elif basis == "laguerre":
            b0 = cols[k] + (2 * k + 1 - t) / (k + 1) * b1 - (k + 1) / (k + 2) * b2
        else:
            raise ValueError(f"unknown basis {basis!r}")
        b2, b1 = b1, b0
    return b1


def polyval(x: Tensor, coeffs: Tensor, basis: str = "power", *, domain=None, derivative: int = 0) -> Tensor:
    """sum_k coeffs[..., k] P_k(t), or its derivative-th derivative in x; polyfit.polyval's layouts."""
    out_dtype = torch.promote_types(x.dtype, coeffs.dtype)
    dtype = _compute_dtype(out_dtype)
    t, scale = map_domain(x.to(dtype), domain)
    c = coeffs.to(dtype)
    for _ in range(derivative):
        c = derivative_coeffs(c, basis) * scale
    if c.dim() == 1:
        cols = [c[k] for k in range(c.shape[-1])]
    else:
        t = t.expand(torch.broadcast_shapes(t.shape[:-1], c.shape[:-1]) + t.shape[-1:])
        cols = [c[..., k:k + 1] for k in range(c.shape[-1])]
    y = _clenshaw(t, cols, basis)
    if derivative >= coeffs.shape[-1]:
        # The series is identically zero, but still a function of x and coeffs, as the compiled op's
        # output is: gradients (zero) reach both, and loss.backward() works on either backend.
        # where() with a false condition keeps exact zeros even for infinite inputs.
        c0 = coeffs[0] if coeffs.dim() == 1 else coeffs[..., :1]  # broadcasts as the columns do
        y = y + _attached_zero(t) + _attached_zero(c0.to(dtype))
    return y.to(out_dtype)


def _attached_zero(t: Tensor) -> Tensor:
    """Zeros of t's shape that autograd connects to t (gradient zero)."""
    return torch.where(torch.zeros_like(t, dtype=torch.bool), t, 0.0)


def polylinear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, basis: str = "chebyshev",
               input_map: Optional[str] = "tanh") -> Tensor:
    """y[b, o] = bias[o] + sum_{i,k} weight[o, i, k] P_k(map(x[b, i])) for x (B, in); the unfused
    form (the whole (B, in, K) basis, kept by autograd), differentiable to any order."""
    dtype = torch.promote_types(x.dtype, weight.dtype)
    if bias is not None:
        dtype = torch.promote_types(dtype, bias.dtype)
    cd = _compute_dtype(dtype)
    t = x.to(cd)
    if input_map == "tanh":
        t = torch.tanh(t)
    phi = torch.stack(basis_columns(t, weight.shape[-1] - 1, basis), dim=-1)
    y = torch.einsum("bik,oik->bo", phi, weight.to(cd))
    if bias is not None:
        y = y + bias.to(cd)
    return y.to(dtype)


def fit(x: Tensor, y: Tensor, degree: int, basis: str = "power", weight: Optional[Tensor] = None,
        domain=None) -> tuple[Tensor, Tensor, Tensor]:
    """Weighted least squares per curve, as numpy.polynomial's *fit computes it: the weighted basis
    matrix with unit-norm columns, solved by SVD with numpy's cut-off rcond = N * eps (minimum-norm
    answer where that leaves fewer than degree + 1 singular values). x, y, weight (*B, N) broadcast
    in *B. Returns (coeffs (*B, K), residuals (*B,), rank (*B,) int64); residuals are
    sum((weight * (y - fit))**2). Curves with non-finite data get NaN coefficients and residuals."""
    tensors = [x, y] + ([weight] if weight is not None else [])
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    cd = _compute_dtype(dtype)
    N, K = x.shape[-1], degree + 1
    batch = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    x = x.to(cd).expand(*batch, N)
    b = y.to(cd).expand(*batch, N)
    A = features(x, degree, basis, domain=domain)
    if weight is not None:
        w = weight.to(cd).expand(*batch, N)
        A = A * w.unsqueeze(-1)
        b = b * w
    finite = torch.isfinite(A).all(-1).all(-1) & torch.isfinite(b).all(-1)
    A = torch.where(finite[..., None, None], A, 0)
    b = torch.where(finite[..., None], b, 0)
    # Column norms through the columns divided by their largest magnitude: the squares of float32
    # entries beyond ~1e+-19 would overflow or flush to zero.
    amax = A.abs().amax(-2)
    amax = torch.where(amax == 0, torch.ones_like(amax), amax)
    scl = amax * (A / amax.unsqueeze(-2)).square().sum(-2).sqrt()
    scl = torch.where(scl == 0, torch.ones_like(scl), scl)
    U, S, Vh = torch.linalg.svd(A / scl.unsqueeze(-2), full_matrices=False)
    rcond = N * torch.finfo(cd).eps
    keep = S > rcond * S[..., :1]
    s_inv = torch.where(keep, S, torch.ones_like(S)).reciprocal() * keep
    z = s_inv * (U.mT @ b.unsqueeze(-1)).squeeze(-1)
    coeffs = (Vh.mT @ z.unsqueeze(-1)).squeeze(-1) / scl
    r = b - (A @ coeffs.unsqueeze(-1)).squeeze(-1)
    resid = r.square().sum(-1)
    rank = torch.where(finite, keep.sum(-1), K)
    nan = torch.full_like(resid, float("nan"))
    coeffs = torch.where(finite.unsqueeze(-1), coeffs, nan.unsqueeze(-1))
    resid = torch.where(finite, resid, nan)
    return coeffs.to(dtype), resid.to(dtype), rank
