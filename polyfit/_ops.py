"""polyfit's functional API: argument checks, the autograd of the layer's ops, fake kernels for torch.compile/export, and the choice between compiled and reference backends.

Derivatives: every op here is a series or its derivative, and the derivative of a series is a
series of one degree less. So the backward of polyval(derivative=n) is built from polyval and
polyval_backward of order n + 1, which are differentiable again: gradients of any order exist,
and each order runs the fused kernels.

Each op carries its derivative itself, so the public functions call torch.ops.polyfit.* directly
and direct callers of the op registry get the same derivatives: features, polyval and
polyval_backward through C++ autograd kernels (csrc/autograd.cpp; the per-call cost of a Python
autograd.Function exceeded the kernels' below ~1e5 points), the layer's two ops through the
autograd.Function classes below, attached with torch.library.register_autograd.
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
MAX_DERIVATIVE = 1 << 30

Domain = Optional[Sequence[float]]

# The compiled op's overload, called without the op packet's Python-level lookup, and the eager
# entry points of polyfit._C (csrc/polyfit.cpp): the same ops without torch.ops' boxed argument
# parsing. torch.ops stays in charge while torch.compile traces and wherever __torch_function__ is
# in play (a tensor subclass or mode that overrides it), which only torch.ops honours.
_polyval_op = torch.ops.polyfit.polyval.default if _backend.STATE.loaded else None
_features_op = torch.ops.polyfit.features.default if _backend.STATE.loaded else None
_eager = _backend.STATE.module if _backend.STATE.loaded else None
_is_compiling = torch.compiler.is_compiling

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


def _check_bool(value, name: str) -> bool:
    # Only a bool (numpy's too): bool("no") is True, so a string must not pass as one.
    if isinstance(value, bool) or type(value).__name__ in ("bool", "bool_"):
        return bool(value)
    raise TypeError(f"{name} must be a bool; got {type(value).__name__} {value!r}")


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
    shape = coeffs.shape
    if not shape:
        raise ValueError("coeffs must have at least one dimension (..., degree + 1); got a 0-dim tensor")
    if shape[-1] == 0:
        raise ValueError(f"coeffs must have a non-empty last dimension (degree + 1 >= 1); got shape {tuple(shape)}")
    if shape[-1] > MAX_DEGREE + 1:
        raise ValueError(f"coeffs has {shape[-1]} coefficients; at most {MAX_DEGREE + 1} are supported")
    if not (coeffs.is_cpu and x.is_cpu) and coeffs.device != x.device:  # the flags first: cheaper
        raise ValueError(f"x and coeffs must be on the same device; got {x.device} and {coeffs.device}")
    if len(shape) > 1:
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


if _backend.STATE.loaded:

    @torch.library.register_fake("polyfit::polylinear")
    def _polylinear_fake(x, weight, bias, basis, input_map):
        dtype = torch.promote_types(x.dtype, weight.dtype)
        if bias is not None:
            dtype = torch.promote_types(dtype, bias.dtype)
        return x.new_empty((x.shape[0], weight.shape[0]), dtype=dtype)

    @torch.library.register_fake("polyfit::polylinear_backward")
    def _polylinear_backward_fake(grad, x, weight, basis, input_map, output_mask):
        gx = x.new_empty(x.shape) if output_mask[0] else None
        gw = torch.empty_like(weight) if output_mask[1] else None  # the weight's memory layout
        return gx, gw

    @torch.library.register_fake("polyfit::fit")
    def _fit_fake(x, y, weight, degree, basis, domain):
        shapes = [x.shape[:-1], y.shape[:-1]] + ([weight.shape[:-1]] if weight is not None else [])
        batch = tuple(torch.broadcast_shapes(*shapes))
        dtype = torch.promote_types(x.dtype, y.dtype)
        if weight is not None:
            dtype = torch.promote_types(dtype, weight.dtype)
        return (x.new_empty(batch + (degree + 1,), dtype=dtype), x.new_empty(batch, dtype=dtype),
                x.new_empty(batch, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------
# Autograd of features, polyval and polyval_backward: C++ kernels on the Autograd key
# (csrc/autograd.cpp), differentiable to any order; calling torch.ops.polyfit.* is differentiable.


# ---------------------------------------------------------------------------------------------
# Public functions.


def features(x: Tensor, degree: int, basis: str = "power", *, domain: Domain = None,
             increasing: bool = True) -> Tensor:
    """The basis matrix ("Vandermonde") of x: shape x.shape + (degree + 1,).

    Column k is P_k(t), lowest degree first; increasing=False reverses the columns (like
    torch.vander's default). t = x, or x mapped linearly from domain=(a, b) onto [-1, 1].
    Differentiable in x to any order.
    """
    if domain is None and _eager is not None and not _is_compiling():
        # The common call, checked in polyfit._C, which returns None for what takes the way below.
        out = _eager.features(x, degree, basis, increasing)
        if out is not None:
            return out
    _check_tensor(x, "x")
    degree = _check_int(degree, "degree")
    basis = _check_basis(basis)
    domain = _check_domain(domain)
    increasing = _check_bool(increasing, "increasing")
    if _backend.compiled_for(x):
        return _features_op(x, degree, basis, domain, increasing)
    return reference.features(x, degree, basis, domain=domain, increasing=increasing)


def polyval(x: Tensor, coeffs: Union[Tensor, Sequence[float]], basis: str = "power", *,
            domain: Domain = None, derivative: int = 0) -> Tensor:
    """y = sum_k coeffs[..., k] * P_k(t), coefficients lowest degree first (numpy.polynomial order).

    coeffs (D+1,): one polynomial for every element of x; y.shape == x.shape.
    coeffs (*B, D+1): one polynomial per row, x (*B, N) -> y (*B, N); the batch shapes broadcast.
    derivative=n returns the n-th derivative in x instead. Differentiable in x and coeffs to any order.
    """
    if domain is None and _eager is not None and not _is_compiling():
        # The common call goes straight to the compiled op, whose own checks of x and coeffs raise
        # the same errors (~1 us a call saved, a fifth of a forward at 10^4 points). polyfit._C
        # takes plain tensors on a device with kernels (a meta coeffs would reach the shape-only
        # fake kernel), a known basis and an int derivative, and returns None for anything else.
        y = _eager.polyval(x, coeffs, basis, derivative)
        if y is not None:
            return y
    _check_tensor(x, "x")
    coeffs = _as_coeffs(coeffs, x)
    basis = _check_basis(basis)
    domain = _check_domain(domain)
    derivative = _check_int(derivative, "derivative", 0, MAX_DERIVATIVE)
    if _backend.compiled_for(x):
        return _polyval_op(x, coeffs, basis, domain, derivative)
    return reference.polyval(x, coeffs, basis, domain=domain, derivative=derivative)


# ---------------------------------------------------------------------------------------------
# The Kolmogorov-Arnold layer.

INPUT_MAPS = ("tanh", None)


class PolyLinearFunction(torch.autograd.Function):
    """y = bias + sum_{i,k} weight[:, i, k] P_k(map(x[:, i])) for x (B, in). Saves x and weight only:
    the backward op recomputes the basis tile by tile."""

    @staticmethod
    def forward(x, weight, bias, basis, input_map):
        return torch.ops.polyfit.polylinear(x, weight, bias, basis, input_map)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, basis, input_map = inputs
        ctx.save_for_backward(x, weight)
        ctx.args = (basis, input_map)
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad):
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if grad is None:
            return None, None, None, None, None
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        if need_x or need_w:
            gx, gw = torch.ops.polyfit.polylinear_backward(grad, x, weight, *ctx.args, (need_x, need_w))
        if need_b:
            gb = grad.sum(0).to(ctx.bias_dtype)
        return gx, gw, gb, None, None


class PolyLinearBackwardFunction(torch.autograd.Function):
    """(grad_x, grad_weight) of PolyLinearFunction, itself differentiable. With t = map(x), s = map'(x),
    G = grad @ weight (B, in, K) and P the basis of t:

        grad_x = s * sum_k G_k P_k'(t),      grad_weight = grad^T P.

    Its backward is written with polyval's and the layer's own ops, differentiable again, so every
    order of derivative runs fused kernels (the double backward forms G, but never the basis).
    """

    @staticmethod
    def forward(grad, x, weight, basis, input_map, output_mask):
        return torch.ops.polyfit.polylinear_backward(grad, x, weight, basis, input_map, output_mask)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad, x, weight, basis, input_map, output_mask = inputs
        ctx.save_for_backward(grad, x, weight)
        ctx.args = (basis, input_map)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, ggx, ggw):
        grad, x, weight = ctx.saved_tensors
        basis, input_map = ctx.args
        need_g, need_x, need_w = ctx.needs_input_grad[:3]
        ops = torch.ops.polyfit
        d_g = d_x = d_w = None

        def add(acc, term):
            return term if acc is None else acc + term

        if ggx is not None and (need_g or need_x or need_w):
            B, n_in = x.shape
            n_out, K = weight.shape[0], weight.shape[-1]
            w2 = weight.reshape(n_out, n_in * K)
            t = torch.tanh(x) if input_map == "tanh" else x
            s = 1 - t * t if input_map == "tanh" else None
            G = (grad @ w2.to(grad.dtype)).view(B, n_in, K)
            u = ggx if s is None else ggx * s
            # grad_x = s * p with p = polyval'(t; G): one fused call gives d/dt and d/dG of <u, p>.
            d_t, d_G = ops.polyval_backward(u.unsqueeze(-1), t.unsqueeze(-1), G, basis, None, 1,
                                            (need_x, need_g or need_w))
            if d_G is not None:
                d_G2 = d_G.reshape(B, n_in * K)
                if need_g:
                    d_g = add(d_g, d_G2 @ w2.to(d_G2.dtype).T)
                if need_w:
                    d_w = add(d_w, (grad.T.to(d_G2.dtype) @ d_G2).view(n_out, n_in, K))
            if need_x:
                dx = d_t.squeeze(-1)
                if s is not None:  # t' = s and s' = -2 t s
                    p = ops.polyval(t.unsqueeze(-1), G, basis, None, 1).squeeze(-1)
                    dx = dx * s - 2 * ggx * p * t * s
                d_x = add(d_x, dx)
        if ggw is not None:
            # <ggw, grad^T P(t)> is the layer itself with weight ggw: its gradients are the layer's.
            if need_g:
                d_g = add(d_g, ops.polylinear(x, ggw, None, basis, input_map))
            if need_x:
                d_x = add(d_x, ops.polylinear_backward(grad, x, ggw, basis, input_map, (True, False))[0])
        if d_g is not None:
            d_g = d_g.to(grad.dtype)
        if d_x is not None:
            d_x = d_x.to(x.dtype)
        if d_w is not None:
            d_w = d_w.to(weight.dtype)
        return d_g, d_x, d_w, None, None, None


if _backend.STATE.loaded:
    for _name, _fn in [("polylinear", PolyLinearFunction), ("polylinear_backward", PolyLinearBackwardFunction)]:
        torch.library.register_autograd(f"polyfit::{_name}", _fn.backward, setup_context=_fn.setup_context)


def _check_input_map(input_map):
    if input_map not in INPUT_MAPS:
        raise ValueError(f"input_map must be 'tanh' or None; got {input_map!r}")
    return input_map


def polylinear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, basis: str = "chebyshev",
               input_map: Optional[str] = "tanh") -> Tensor:
    """Kolmogorov-Arnold layer: y[..., o] = bias[o] + sum_i sum_k weight[o, i, k] P_k(map(x[..., i])).

    x (..., in_features), weight (out_features, in_features, degree + 1), bias (out_features,) or None;
    map is tanh (input_map="tanh") or the identity (input_map=None). Differentiable in x, weight and
    bias to any order; autograd keeps x and weight only, never the (..., in, degree + 1) basis.
    (The op's derivatives are PolyLinearFunction's, registered on torch.ops.polyfit.polylinear.)
    """
    _check_tensor(x, "x")
    _check_tensor(weight, "weight")
    basis = _check_basis(basis)
    input_map = _check_input_map(input_map)
    if weight.dim() != 3:
        raise ValueError(f"weight must be 3-D (out_features, in_features, degree + 1); got shape {tuple(weight.shape)}")
    if weight.shape[-1] == 0:
        raise ValueError(f"weight must have a non-empty last dimension (degree + 1 >= 1); got shape {tuple(weight.shape)}")
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (..., in_features); got a 0-dim tensor")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x has {x.shape[-1]} features (last dimension) but weight has in_features = {weight.shape[1]}")
    if weight.device != x.device:
        raise ValueError(f"x and weight must be on the same device; got {x.device} and {weight.device}")
    if bias is not None:
        _check_tensor(bias, "bias")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must have shape (out_features,) = ({weight.shape[0]},); got {tuple(bias.shape)}")
        if bias.device != x.device:
            raise ValueError(f"x and bias must be on the same device; got {x.device} and {bias.device}")
    lead = x.shape[:-1]
    x2 = x.reshape(lead.numel(), x.shape[-1])  # (-1 cannot be inferred when in_features is 0)
    if _backend.compiled_for(x):
        y = torch.ops.polyfit.polylinear(x2, weight, bias, basis, input_map)
    else:
        y = reference.polylinear(x2, weight, bias, basis, input_map)
    return y.reshape(*lead, weight.shape[0])
