"""The ways people write polynomial code in PyTorch today: the peers polyfit is compared with.

Written here independently of polyfit (polyfit.reference is a peer of its own). Every basis is a
three-term recurrence with numpy.polynomial's definitions:

    P_0 = 1,  P_1 = alpha_0(t),  P_{k+1} = alpha_k(t) P_k + beta_k P_{k-1}

so one stack of columns and one Clenshaw loop serve all bases; for powers the loop is Horner's.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _alphas(basis: str, t: Tensor):
    """k -> alpha_k(t); products with t that do not depend on k are formed once."""
    if basis in ("power", "hermite_e"):
        return lambda k: t
    if basis == "chebyshev":
        two_t = 2 * t
        return lambda k: t if k == 0 else two_t
    if basis == "hermite":
        two_t = 2 * t
        return lambda k: two_t
    if basis == "legendre":
        return lambda k: ((2 * k + 1) / (k + 1)) * t
    if basis == "laguerre":
        return lambda k: ((2 * k + 1) - t) / (k + 1)
    raise ValueError(f"unknown basis {basis!r}")


def beta(basis: str, k: int) -> float:
    if basis == "power":
        return 0.0
    if basis == "chebyshev":
        return -1.0
    if basis in ("legendre", "laguerre"):
        return -k / (k + 1)
    if basis == "hermite":
        return -2.0 * k
    if basis == "hermite_e":
        return -float(k)
    raise ValueError(f"unknown basis {basis!r}")


def columns(x: Tensor, degree: int, basis: str) -> list[Tensor]:
    """[P_0(x), ..., P_degree(x)]: powers as the seed writes them (x**k), other bases by recurrence."""
    if basis == "power":
        return [torch.ones_like(x)] + [x if k == 1 else x ** k for k in range(1, degree + 1)]
    alpha = _alphas(basis, x)
    cols = [torch.ones_like(x)]
    if degree >= 1:
        cols.append(alpha(0) * cols[0])
    for k in range(1, degree):
        cols.append(alpha(k) * cols[k] + beta(basis, k) * cols[k - 1])
    return cols


def seed_features(x: Tensor, degree: int, basis: str = "power") -> Tensor:
    """The seed's feature matrix, generalised: torch.stack of the columns, shape (N, degree + 1)."""
    return torch.stack(columns(x, degree, basis), 1)


def seed_polyval(x: Tensor, c: Tensor, basis: str = "power") -> Tensor:
    """The seed's formulation, generalised to degree D: torch.stack([1, x, x**2, ...], 1) @ c."""
    return seed_features(x, c.shape[0] - 1, basis) @ c


def horner(x: Tensor, c: Tensor, basis: str = "power") -> Tensor:
    """An eager Horner loop (powers) or Clenshaw loop (other bases): y = sum_k c[k] P_k(x)."""
    D = c.shape[0] - 1
    if D == 0:
        return c[0] + torch.zeros_like(x)
    alpha = _alphas(basis, x)
    b2, b1 = None, c[D]
    for k in range(D - 1, -1, -1):
        b0 = alpha(k) * b1 + c[k]
        if b2 is not None and basis != "power":
            b0 = b0 + beta(basis, k + 1) * b2
        b2, b1 = b1, b0
    return b1


def vander(x: Tensor, degree: int, basis: str = "power") -> Tensor:
    """torch.linalg.vander (increasing powers); powers only."""
    assert basis == "power"
    return torch.linalg.vander(x, N=degree + 1)
