"""Random shapes, strides, degrees, bases, domains and dtypes: polyfit against polyfit.reference."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import polyfit
from polyfit import reference

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
UNIT = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def strided(draw, shape, dtype, lo=-1.0, hi=1.0):
    """A tensor of `shape` with a random memory layout: transposed, sliced or expanded."""
    kind = draw(st.sampled_from(["contiguous", "transposed", "sliced", "expanded"]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)

    def rand(s):
        return (torch.rand(s, generator=gen, dtype=torch.float64) * (hi - lo) + lo).to(dtype)

    if kind == "transposed" and len(shape) >= 2:
        return rand(shape[:-2] + (shape[-1], shape[-2])).transpose(-1, -2)
    if kind == "sliced" and len(shape) >= 1:
        return rand(shape[:-1] + (shape[-1] * 2,))[..., ::2]
    if kind == "expanded" and len(shape) >= 1 and shape[0] > 0:
        return rand((1,) + shape[1:]).expand(shape)
    return rand(shape)


def _scale(x, c, basis, domain):
    """sum_k |c_k| |P_k(t)| in float64: the size rounding errors are measured against."""
    V = reference.features(x.double(), c.shape[-1] - 1, basis, domain=domain).abs()
    cc = c.double().abs()
    if c.dim() == 1:
        return V @ cc
    return (V * cc.unsqueeze(-2)).sum(-1)


@st.composite
def polyval_case(draw):
    basis = draw(st.sampled_from(polyfit.BASES))
    dtype = draw(st.sampled_from(DTYPES))
    degree = draw(st.integers(0, 20))
    domain = draw(st.one_of(st.none(), st.tuples(st.floats(-5, 5), st.floats(0.5, 5)).map(lambda t: (t[0], t[0] + t[1]))))
    lo, hi = domain if domain else ((0.0, 3.0) if basis == "laguerre" else (-1.2, 1.2))
    if draw(st.booleans()):  # one polynomial for every element
        xshape = tuple(draw(st.lists(st.integers(0, 6), max_size=3)))
        cshape = (degree + 1,)
    else:  # one per row, with broadcasting batch shapes
        batch = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
        xb = tuple(b if draw(st.booleans()) else 1 for b in batch)
        cb = tuple(b if draw(st.booleans()) else 1 for b in batch)
        xshape = xb + (draw(st.integers(0, 40)),)
        cshape = cb + (degree + 1,)
    x = draw(strided(xshape, dtype, lo, hi))
    c = draw(strided(cshape, dtype, -1.0, 1.0))
    return basis, domain, x, c


@SETTINGS
@given(polyval_case(), st.integers(0, 2))
def test_polyval_matches_reference(case, derivative):
    basis, domain, x, c = case
    y = polyfit.polyval(x, c, basis, domain=domain, derivative=derivative)
    exact = reference.polyval(x.double(), c.double(), basis, domain=domain, derivative=derivative)
    assert y.dtype == x.dtype and y.shape == exact.shape
    K = c.shape[-1]
    scl = (2.0 / (domain[1] - domain[0])) if domain else 1.0
    scale = _scale(x, c, basis, domain) * (K * K * max(scl, 1.0)) ** derivative
    tol = UNIT[x.dtype] * exact.abs() + 64 * K * max(UNIT[x.dtype], 2.0**-24) * (scale + exact.abs()) + 1e-12
    finite = exact.abs() < torch.finfo(x.dtype).max / 2
    err = (y.double() - exact).abs()
    assert bool((err[finite] <= tol[finite]).all()), f"max err ratio {(err / tol)[finite].max():.3g}"


@SETTINGS
@given(polyval_case())
def test_polyval_gradients_match_reference_float64(case):
    basis, domain, x, c = case
    x = x.double().detach().requires_grad_()
    c = c.double().detach().requires_grad_()
    y = polyfit.polyval(x, c, basis, domain=domain)
    g = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gx, gc = torch.autograd.grad(y, (x, c), g)
    rx, rc = torch.autograd.grad(reference.polyval(x, c, basis, domain=domain), (x, c), g, allow_unused=True,
                                 materialize_grads=True)
    assert gx.shape == x.shape and gc.shape == c.shape
    torch.testing.assert_close(gx, rx, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gc, rc, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(st.sampled_from(polyfit.BASES), st.sampled_from(DTYPES), st.integers(0, 20),
       st.lists(st.integers(0, 5), max_size=3), st.booleans(), st.data())
def test_features_matches_reference(basis, dtype, degree, shape, increasing, data):
    x = data.draw(strided(tuple(shape), dtype, 0.0 if basis == "laguerre" else -1.0, 1.0))
    V = polyfit.features(x, degree, basis, increasing=increasing)
    exact = reference.features(x.double(), degree, basis, increasing=increasing)
    assert V.dtype == dtype and V.shape == exact.shape
    cols = exact.abs() if increasing else exact.abs().flip(-1)
    scale = cols.cummax(-1).values if cols.dim() else cols  # rounding grows with the largest value met so far
    scale = scale if increasing else scale.flip(-1)
    tol = UNIT[dtype] * exact.abs() + 64 * (degree + 1) * 2.0**-24 * (scale + 1)
    finite = exact.abs() < torch.finfo(dtype).max / 2
    assert bool(((V.double() - exact).abs() <= tol)[finite].all())
    assert bool((~torch.isfinite(V[exact.abs() > 2 * torch.finfo(dtype).max])).all())
