"""Batched weighted least-squares fits of polynomial series: polyfit.fit and its result, polyfit.Fit.

    fit = polyfit.fit(x, y, degree=5, basis="chebyshev", weight=w, domain=(0, 10))
    fit.coeffs        # (*B, 6), lowest degree first
    fit(x_new)        # evaluates each curve's fit

Each curve r solves min_c sum_n (w[r, n] * (y[r, n] - sum_k c[k] P_k(t(x[r, n]))))**2, the problem of
numpy.polynomial's *fit with the same w. The compiled kernels run one Householder QR per curve on
rows built on the fly (never the batch's basis matrix); on the CPU, well-conditioned power,
Chebyshev and Legendre fits in float64 solve their normal equations instead, with one refinement
step that gives QR's accuracy back. A curve whose column-scaled basis matrix QR cannot certify as
full rank at numpy's cut-off (rcond = N * eps) is re-solved by SVD, which gives numpy's
minimum-norm answer, and a RankWarning says so. Other devices run the SVD path throughout.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Optional

import torch
from torch import Tensor

from . import _backend, reference
from ._ops import _check_basis, _check_domain, _check_int, _check_tensor, polyval


class RankWarning(UserWarning):
    """Some curves' least-squares problems are rank deficient (numpy.polynomial's RankWarning)."""


@dataclasses.dataclass
class Fit:
    """The result of polyfit.fit: one fitted series per curve.

    coeffs     (*B, degree + 1), lowest degree first, in `basis`, for t = x mapped from `domain`
    residuals  (*B,): sum((weight * (y - fit))**2) per curve (numpy's full=True residuals)
    basis      the basis name
    domain     (a, b) or None
    rank       (*B,) int64: the numerical rank of each curve's column-scaled basis matrix
    """

    coeffs: Tensor
    residuals: Tensor
    basis: str
    domain: Optional[tuple] = None
    rank: Optional[Tensor] = None

    @property
    def degree(self) -> int:
        return self.coeffs.shape[-1] - 1

    def __call__(self, x: Tensor) -> Tensor:
        """Evaluates the fits: x (*B, M) gives (*B, M), one curve per row; x of any shape works
        with a single fit (coeffs of shape (degree + 1,))."""
        return polyval(x, self.coeffs, self.basis, domain=self.domain)

    def to(self, *args, **kwargs) -> "Fit":
        """A copy with coeffs and residuals moved/cast as Tensor.to does (rank moves device only)."""
        coeffs = self.coeffs.to(*args, **kwargs)
        rank = None if self.rank is None else self.rank.to(coeffs.device)
        return dataclasses.replace(self, coeffs=coeffs, residuals=self.residuals.to(*args, **kwargs), rank=rank)


def _check_curves(t, name: str, x: Optional[Tensor] = None) -> Tensor:
    _check_tensor(t, name)
    if t.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension (..., N); got a 0-dim tensor")
    if x is not None:
        if t.device != x.device:
            raise ValueError(f"x and {name} must be on the same device; got {x.device} and {t.device}")
        if t.shape[-1] != x.shape[-1]:
            raise ValueError(f"{name} must have as many points per curve as x (last dimension): "
                             f"x has {x.shape[-1]}, {name} has {t.shape[-1]}")
    return t


def fit(x: Tensor, y: Tensor, degree: int, basis: str = "power", *, weight: Optional[Tensor] = None,
        domain=None) -> Fit:
    """Weighted least-squares fit of a degree-`degree` series in `basis` to every curve.

    x, y (*B, N) and weight (*B, N) or None: batch shapes broadcast (a shared x of shape (N,) works),
    each curve may have its own x. weight means numpy.polynomial's w: it multiplies the unsquared
    residual of each point. With domain=(a, b), x is mapped onto [-1, 1] first, and the coefficients
    are for the mapped variable (as numpy's Chebyshev.fit(..., domain=(a, b)).coef); polyval and
    Fit.__call__ with the same domain evaluate them.

    Needs N >= degree + 1. Rank-deficient curves get numpy's minimum-norm answer and a RankWarning.
    Results agree with numpy.polynomial's *fit(x, y, degree, w=weight). The compiled path does not
    propagate gradients; inputs that require grad use the (differentiable) SVD path.
    """
    _check_curves(x, "x")
    _check_curves(y, "y", x)
    if weight is not None:
        _check_curves(weight, "weight", x)
    degree = _check_int(degree, "degree")
    basis = _check_basis(basis)
    domain = _check_domain(domain)
    N, K = x.shape[-1], degree + 1
    if N < K:
        raise ValueError(f"a fit of degree {degree} needs at least degree + 1 = {K} points per curve; "
                         f"x has {N} (last dimension)")
    tensors = [x, y] + ([weight] if weight is not None else [])
    try:
        # Equal batch shapes (the common call) need no broadcast_shapes, ~10 us of a small fit.
        shapes = [t.shape[:-1] for t in tensors]
        batch = tuple(shapes[0]) if all(s == shapes[0] for s in shapes) else tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        names = "x, y and weight" if weight is not None else "x and y"
        raise ValueError(f"the batch shapes of {names} ({', '.join(str(tuple(t.shape)) for t in tensors)}) "
                         "do not broadcast (each is (*B, N))") from None

    wants_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if _backend.compiled_for(x) and not wants_grad:
        coeffs, residuals, ill = torch.ops.polyfit.fit(x, y, weight, degree, basis, domain)
        rank = torch.full(batch, K, dtype=torch.int64, device=x.device)
        deficient = 0  # QR certified every curve as full rank unless some are ill
        if bool(ill.any()):
            # QR could not certify these curves as full rank: SVD decides, as numpy does.
            idx = ill.reshape(-1).nonzero().squeeze(1)
            pick = [t.expand(*batch, N).reshape(-1, N)[idx] for t in tensors]
            c, r, k = reference.fit(pick[0], pick[1], degree, basis, pick[2] if weight is not None else None, domain)
            coeffs.view(-1, K)[idx] = c.to(coeffs.dtype)
            residuals.view(-1)[idx] = r.to(residuals.dtype)
            rank.view(-1)[idx] = k
            deficient = int((k < K).sum())
    else:
        coeffs, residuals, rank = reference.fit(x, y, degree, basis, weight, domain)
        deficient = int((rank < K).sum())

    if deficient:
        warnings.warn(
            f"polyfit.fit: {deficient} of {rank.numel()} curves are rank deficient (rank < degree + 1 = {K} at "
            f"numpy's cut-off rcond = N * eps); their coefficients are the minimum-norm least-squares "
            "solution, as numpy.polynomial's fit gives (Fit.rank has each curve's rank)",
            RankWarning, stacklevel=2)
    return Fit(coeffs, residuals, basis, None if domain is None else tuple(domain), rank)
