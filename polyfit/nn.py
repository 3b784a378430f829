"""torch.nn modules on polyfit's fused ops.

    head = polyfit.nn.Polynomial(degree=2)                        # y = c0 + c1 x + c2 x^2, learnable c
    feats = polyfit.nn.PolyFeatures(degree=8, basis="legendre")   # x -> (..., 9) basis values
    kan = polyfit.nn.PolyLinear(256, 256, degree=8)               # Kolmogorov-Arnold layer (Chebyshev)
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ._ops import (_check_basis, _check_bool, _check_domain, _check_input_map, _check_int, features, polylinear,
                   polyval)

__all__ = ["Polynomial", "PolyFeatures", "PolyLinear"]


def _domain_tuple(domain):
    domain = _check_domain(domain)
    return None if domain is None else tuple(domain)


class Polynomial(nn.Module):
    """A learnable polynomial series applied elementwise: y = sum_k coeffs[k] P_k(t(x)).

    Args:
        degree: the degree D; the module holds D + 1 coefficients, lowest degree first.
        basis: one of polyfit.BASES.
        domain: (a, b) maps x from [a, b] onto [-1, 1] before evaluation; None uses x as is.

    Shape: any x; the output has x's shape. Coefficients start uniform in +-1/sqrt(D + 1)
    (nn.Linear's rule for D + 1 inputs).
    """

    def __init__(self, degree: int, basis: str = "power", domain=None, *, device=None, dtype=None) -> None:
        super().__init__()
        self.degree = _check_int(degree, "degree")
        self.basis = _check_basis(basis)
        self.domain = _domain_tuple(domain)
        self.coeffs = nn.Parameter(torch.empty(self.degree + 1, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.degree + 1)
        nn.init.uniform_(self.coeffs, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return polyval(x, self.coeffs, self.basis, domain=self.domain)

    def extra_repr(self) -> str:
        return f"degree={self.degree}, basis={self.basis!r}, domain={self.domain}"


class PolyFeatures(nn.Module):
    """The basis values of x: (...) -> (..., degree + 1), column k = P_k(t(x)) (no parameters)."""

    def __init__(self, degree: int, basis: str = "power", domain=None, *, increasing: bool = True) -> None:
        super().__init__()
        self.degree = _check_int(degree, "degree")
        self.basis = _check_basis(basis)
        self.domain = _domain_tuple(domain)
        self.increasing = _check_bool(increasing, "increasing")

    def forward(self, x: Tensor) -> Tensor:
        return features(x, self.degree, self.basis, domain=self.domain, increasing=self.increasing)

    def extra_repr(self) -> str:
        s = f"degree={self.degree}, basis={self.basis!r}, domain={self.domain}"
        return s if self.increasing else s + ", increasing=False"


class PolyLinear(nn.Module):
    """Kolmogorov-Arnold layer with a polynomial basis (ChebyKAN and its cousins), fused:

        y[..., o] = bias[o] + sum_i sum_k weight[o, i, k] P_k(map(x[..., i]))

    Args:
        in_features, out_features: sizes of the last dimension of input and output.
        degree: the degree D of each edge's polynomial; weight has shape (out, in, D + 1).
        basis: one of polyfit.BASES (default Chebyshev).
        bias: add a learnable bias (default False, as ChebyKAN).
        input_map: "tanh" squashes x into (-1, 1), where the orthogonal bases live; None uses x as is.

    Autograd keeps only x and the parameters: the basis is rebuilt tile by tile in backward.
    The weight is initialised as ChebyKAN does, normal with std 1 / (in_features * (D + 1)), so that
    a PolyLinear drops into a ChebyKAN model and trains the same. It is stored degree-major in
    memory (its shape is (out, in, D + 1), its strides those of an (out, D + 1, in) tensor): each
    weight[:, :, k] is then a contiguous block and the fused GEMMs use it without a copy. state_dict,
    .to() and optimizers keep working as for any parameter.
    """

    def __init__(self, in_features: int, out_features: int, degree: int, basis: str = "chebyshev",
                 bias: bool = False, input_map: Optional[str] = "tanh", *, device=None, dtype=None) -> None:
        super().__init__()
        self.in_features = _check_int(in_features, "in_features", 0, 1 << 62)
        self.out_features = _check_int(out_features, "out_features", 0, 1 << 62)
        self.degree = _check_int(degree, "degree")
        self.basis = _check_basis(basis)
        self.input_map = _check_input_map(input_map)
        factory = {"device": device, "dtype": dtype}
        K = self.degree + 1
        self.weight = nn.Parameter(torch.empty(self.out_features, K, self.in_features, **factory).permute(0, 2, 1))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = 1.0 / (max(1, self.in_features) * (self.degree + 1))
        nn.init.normal_(self.weight, mean=0.0, std=std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return polylinear(x, self.weight, self.bias, self.basis, self.input_map)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, degree={self.degree}, "
                f"basis={self.basis!r}, bias={self.bias is not None}, input_map={self.input_map!r}")
