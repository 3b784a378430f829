"""polyfit's functional API: argument checks, the autograd Functions of torch.ops.polyfit.*,
fake kernels for torch.compile/export, and the choice between compiled and reference backends.

Derivatives: every op here is a series or its derivative, and the derivative of a series is a
series of one degree less. So the backward of polyval(derivative=n) is built from polyval and
polyval_backward of order n + 1, which are differentiable again: gradients of any order exist,
and each order runs the fused kernels.

The autograd.Function classes below define each op's derivative; torch.library.register_autograd
attaches them to the ops themselves, so the public functions call torch.ops.polyfit.* directly
(a quarter of the per-call cost of Function.apply) and direct callers of the op registry get the
same derivatives.
"""

from __future__ import annotations

import math
import operator
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from . import _backend, reference

BASES = ("power", "chebyshev", "legendre", "hermite", "hermite_e", "laguerre")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_DEGREE = 1 << 20

Domain = Optional[Sequence[float]]

# ---------------------------------------------------------------------------------------------
# Argument checks, shared by both backends; messages name the argument.


def _check_tensor(t, name: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64); got {t.dtype}")


def _check_int(value, name: str, low: int = 0, high: int = MAX_DEGREE) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer; got a bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer; got {type(value).__name__} {value!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}]; got {value}")
    return value


def _check_basis(basis) -> str:
    if not isinstance(basis, str) or basis not in BASES:
        raise ValueError(f"basis must be one of {', '.join(repr(b) for b in BASES)}; got {basis!r}")
    return basis


def _check_domain(domain) -> Optional[list]:
    if domain is None:
        return None
    try:
        values = [float(v) for v in domain]
    except (TypeError, ValueError):
        raise TypeError(f"domain must be None or a pair of numbers (a, b); got {domain!r}") from None
    if len(values) != 2:
        raise ValueError(f"domain must be a pair (a, b); got {len(values)} values")
    a, b = values
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"domain must be finite; got ({a}, {b})")
    if a == b:
        raise ValueError(f"domain must have a != b; got ({a}, {b})")
    return values


def _as_coeffs(coeffs, x: Tensor) -> Tensor:
    if isinstance(coeffs, (list, tuple)):  # a plain sequence of numbers takes x's dtype and device
        coeffs = torch.tensor(coeffs, dtype=x.dtype, device=x.device)
    _check_tensor(coeffs, "coeffs")
    if coeffs.dim() == 0:
        raise ValueError("coeffs must have at least one dimension (..., degree + 1); got a 0-dim tensor")
    if coeffs.shape[-1] == 0:
        raise ValueError(f"coeffs must have a non-empty last dimension (degree + 1 >= 1); got shape {tuple(coeffs.shape)}")
    if coeffs.shape[-1] > MAX_DEGREE + 1:
        raise ValueError(f"coeffs has {coeffs.shape[-1]} coefficients; at most {MAX_DEGREE + 1} are supported")
    if coeffs.device != x.device:
        raise ValueError(f"x and coeffs must be on the same device; got {x.device} and {coeffs.device}")
    if coeffs.dim() > 1:
        if x.dim() == 0:
            raise ValueError("x must have at least one dimension (..., N) when coeffs is batched (*B, degree + 1); got a 0-dim x")
        try:
            torch.broadcast_shapes(x.shape[:-1], coeffs.shape[:-1])
        except RuntimeError:
            raise ValueError(f"coeffs batch shape {tuple(coeffs.shape[:-1])} does not broadcast with x batch shape "
                             f"{tuple(x.shape[:-1])} (coeffs (*B, degree + 1) pairs with x (*B, N))") from None
    return coeffs


def _series_shape(x: Tensor, coeffs: Tensor) -> tuple:
    if coeffs.dim() == 1:
        return tuple(x.shape)
    return tuple(torch.broadcast_shapes(x.shape[:-1], coeffs.shape[:-1])) + (x.shape[-1],)


def _sum_to(t: Tensor, shape) -> Tensor:
    return t if tuple(t.shape) == tuple(shape) else t.sum_to_size(shape)


# ---------------------------------------------------------------------------------------------
# Fake kernels: shapes and dtypes only, for torch.compile, torch.export and meta tensors.

if _backend.STATE.loaded:

    @torch.library.register_fake("polyfit::features")
    def _features_fake(x, degree, basis, domain, increasing):
        return x.new_empty(tuple(x.shape) + (degree + 1,))

    @torch.library.register_fake("polyfit::polyval")
    def _polyval_fake(x, coeffs, basis, domain, derivative):
        return x.new_empty(_series_shape(x, coeffs), dtype=torch.promote_types(x.dtype, coeffs.dtype))

    @torch.library.register_fake("polyfit::polyval_backward")
    def _polyval_backward_fake(grad, x, coeffs, basis, domain, derivative, output_mask):
        gx = x.new_empty(x.shape) if output_mask[0] else None
        gc = coeffs.new_empty(coeffs.shape) if output_mask[1] else None
        return gx, gc


# ---------------------------------------------------------------------------------------------
# Autograd over the compiled ops.


class PolyvalFunction(torch.autograd.Function):
    """y = d^n/dx^n sum_k coeffs[..., k] P_k(t(x)); differentiable in x and coeffs."""

    @staticmethod
    def forward(x, coeffs, basis, domain, derivative):
        return torch.ops.polyfit.polyval(x, coeffs, basis, domain, derivative)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, coeffs, basis, domain, derivative = inputs
        ctx.save_for_backward(x, coeffs)
        ctx.args = (basis, domain, derivative)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad):
        need_x, need_c = ctx.needs_input_grad[:2]
        if grad is None or not (need_x or need_c):
            return None, None, None, None, None
        x, coeffs = ctx.saved_tensors
        gx, gc = torch.ops.polyfit.polyval_backward(grad, x, coeffs, *ctx.args, (need_x, need_c))
        return gx, gc, None, None, None


class PolyvalBackwardFunction(torch.autograd.Function):
    """(grad_x, grad_coeffs) of PolyvalFunction, itself differentiable:

        grad_x = sum_to_x(grad * P^(n+1)(x, c)),   grad_c = sum_to_c(moments of grad at order n).
    """

    @staticmethod
    def forward(grad, x, coeffs, basis, domain, derivative, output_mask):
        return torch.ops.polyfit.polyval_backward(grad, x, coeffs, basis, domain, derivative, output_mask)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad, x, coeffs, basis, domain, derivative, output_mask = inputs
        ctx.save_for_backward(grad, x, coeffs)
        ctx.args = (basis, domain, derivative)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, ggx, ggc):
        grad, x, coeffs = ctx.saved_tensors
        basis, domain, n = ctx.args
        need_grad, need_x, need_c = ctx.needs_input_grad[:3]
        d_grad = d_x = d_c = None
        if ggx is not None and (need_x or need_c):
            # grad_x = grad * P^(n+1)(x, c): its x-derivative is order n+2, its c-derivative the
            # order-(n+1) moments of grad * ggx; one fused call gives both.
            d_x, d_c = torch.ops.polyfit.polyval_backward(grad * ggx, x, coeffs, basis, domain, n + 1, (need_x, need_c))
        if ggc is not None and need_x:
            # grad_c's moments are linear in grad: their x-derivative is grad * P^(n+1)(x, ggc).
            extra, _ = torch.ops.polyfit.polyval_backward(grad, x, ggc, basis, domain, n, (True, False))
            d_x = extra if d_x is None else d_x + extra
        if need_grad:
            terms = []
            if ggx is not None:
                terms.append(ggx * torch.ops.polyfit.polyval(x, coeffs, basis, domain, n + 1))
            if ggc is not None:
                terms.append(torch.ops.polyfit.polyval(x, ggc, basis, domain, n))
            if terms:
                d_grad = _sum_to(sum(terms[1:], terms[0]), grad.shape)
        return d_grad, d_x, d_c, None, None, None, None


class FeaturesFunction(torch.autograd.Function):
    """out[..., k] = P_k(t(x)); grad_x = sum_k grad[..., k] P_k'(t) t', a per-point series."""

    @staticmethod
    def forward(x, degree, basis, domain, increasing):
        return torch.ops.polyfit.features(x, degree, basis, domain, increasing)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, degree, basis, domain, increasing = inputs
        ctx.save_for_backward(x)
        ctx.args = (basis, domain, increasing)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad):
        if grad is None or not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        (x,) = ctx.saved_tensors
        basis, domain, increasing = ctx.args
        coeffs = grad if increasing else grad.flip(-1)
        # Each point's own series: x as (..., 1) against coefficients (..., K).
        gx = torch.ops.polyfit.polyval(x.unsqueeze(-1), coeffs, basis, domain, 1).squeeze(-1)
        return gx.to(x.dtype), None, None, None, None


# The same derivatives make torch.ops.polyfit.* differentiable when called directly (torch.export,
# users of the op registry).
if _backend.STATE.loaded:
    for _name, _fn in [("features", FeaturesFunction), ("polyval", PolyvalFunction),
                       ("polyval_backward", PolyvalBackwardFunction)]:
        torch.library.register_autograd(f"polyfit::{_name}", _fn.backward, setup_context=_fn.setup_context)


# ---------------------------------------------------------------------------------------------
# Public functions.


def features(x: Tensor, degree: int, basis: str = "power", *, domain: Domain = None,
             increasing: bool = True) -> Tensor:
    """The basis matrix ("Vandermonde") of x: shape x.shape + (degree + 1,).

    Column k is P_k(t), lowest degree first; increasing=False reverses the columns (like
    torch.vander's default). t = x, or x mapped linearly from domain=(a, b) onto [-1, 1].
    Differentiable in x to any order.
    """
    _check_tensor(x, "x")
    degree = _check_int(degree, "degree")
    basis = _check_basis(basis)
    domain = _check_domain(domain)
    if _backend.compiled_for(x.device):
        return torch.ops.polyfit.features(x, degree, basis, domain, bool(increasing))
    return reference.features(x, degree, basis, domain=domain, increasing=bool(increasing))


def polyval(x: Tensor, coeffs: Union[Tensor, Sequence[float]], basis: str = "power", *,
            domain: Domain = None, derivative: int = 0) -> Tensor:
    """y = sum_k coeffs[..., k] * P_k(t), coefficients lowest degree first (numpy.polynomial order).

    coeffs (D+1,): one polynomial for every element of x; y.shape == x.shape.
    coeffs (*B, D+1): one polynomial per row, x (*B, N) -> y (*B, N); the batch shapes broadcast.
    derivative=n returns the n-th derivative in x instead. Differentiable in x and coeffs to any order.
    """
    _check_tensor(x, "x")
    coeffs = _as_coeffs(coeffs, x)
    basis = _check_basis(basis)
    domain = _check_domain(domain)
    derivative = _check_int(derivative, "derivative", 0, 1 << 30)
    if _backend.compiled_for(x.device):
        return torch.ops.polyfit.polyval(x, coeffs, basis, domain, derivative)
    return reference.polyval(x, coeffs, basis, domain=domain, derivative=derivative)
