"""Values and derivatives against numpy.polynomial in float64, for every basis and layout."""

import numpy as np
import pytest
import torch

import polyfit
import oracle
from polyfit import reference

EPS64 = np.finfo(np.float64).eps

# Points where each basis is well scaled; a domain maps its own interval onto [-1, 1].
RANGES = {"power": (-1.5, 1.5), "chebyshev": (-1, 1), "legendre": (-1, 1), "hermite": (-2.5, 2.5),
          "hermite_e": (-3, 3), "laguerre": (0, 8)}
DEGREES = [0, 1, 2, 3, 5, 8, 13, 21, 30]


def points(basis, n, seed, domain=None):
    lo, hi = domain if domain is not None else RANGES[basis]
    rng = np.random.default_rng(seed)
    x = rng.uniform(lo, hi, n)
    x[:2] = [lo, hi]  # domain ends: t = -1, +1 exactly
    return x


def assert_close_scaled(actual, expected, scale, rtol):
    """|actual - expected| <= rtol * scale elementwise, where scale bounds the terms of the sum."""
    actual = np.asarray(actual, dtype=np.float64)
    err = np.abs(actual - expected)
    bound = rtol * (np.asarray(scale) + 1e-300)
    worst = np.max(err / bound) if err.size else 0.0
    assert np.all(err <= bound), f"error {worst:.3g}x the bound (rtol {rtol:.3g}); max err {err.max():.3g}"


def rtol64(degree):
    return 64 * (degree + 1) * EPS64


@pytest.mark.parametrize("degree", DEGREES)
@pytest.mark.parametrize("domain", [None, (2.0, 7.0)])
def test_polyval_shared_coeffs_matches_numpy(device, basis, degree, domain):
    x = points(basis, 257, degree, domain)
    c = np.random.default_rng(100 + degree).standard_normal(degree + 1)
    y = polyfit.polyval(torch.tensor(x, device=device), torch.tensor(c, device=device), basis, domain=domain)
    assert y.shape == x.shape and y.dtype == torch.float64
    assert_close_scaled(y.cpu(), oracle.val(x, c, basis, domain), oracle.abs_val(x, c, basis, domain), rtol64(degree))


# The CPU sums Legendre series in the monic basis, whose coefficients are c_k A_k with A_k ~ 2^k /
# sqrt(pi k): where those would come near the dtype's largest value it keeps P_k's form. At degree
# 20, coefficients of ~1e36 (float32) and ~1e306 (float64) scaled so would overflow; the sums do not.
@pytest.mark.parametrize("dtype, magnitude", [(torch.float32, 1e36), (torch.float64, 1e306)])
def test_legendre_coefficients_near_the_dtype_limit(device, dtype, magnitude):
    degree = 20
    x = torch.tensor(points("legendre", 1000, 7), dtype=dtype, device=device)
    c = torch.tensor(np.random.default_rng(8).standard_normal(degree + 1) * magnitude / (degree + 1),
                     dtype=dtype, device=device)
    y = polyfit.polyval(x, c, "legendre")
    assert torch.isfinite(y).all()
    xs, cs = x.cpu().double().numpy(), c.cpu().double().numpy()  # the values as the kernel sees them
    eps = torch.finfo(dtype).eps
    assert_close_scaled(y.cpu(), oracle.val(xs, cs, "legendre"), oracle.abs_val(xs, cs, "legendre"),
                        64 * (degree + 1) * eps)


@pytest.mark.parametrize("degree", [0, 2, 7, 30])
@pytest.mark.parametrize("domain", [None, (-4.0, 1.0)])
def test_polyval_per_row_coeffs_matches_numpy(device, basis, degree, domain):
    B, N = 5, 33
    x = np.stack([points(basis, N, 10 * degree + b, domain) for b in range(B)])
    c = np.random.default_rng(degree).standard_normal((B, degree + 1))
    y = polyfit.polyval(torch.tensor(x, device=device), torch.tensor(c, device=device), basis, domain=domain).cpu()
    assert y.shape == (B, N)
    for b in range(B):
        assert_close_scaled(y[b], oracle.val(x[b], c[b], basis, domain), oracle.abs_val(x[b], c[b], basis, domain),
                            rtol64(degree))


def test_polyval_per_row_broadcasts_batch_shapes(device, basis):
    # coeffs (3, 1, K) against x (4, N): y (3, 4, N), row (i, j) uses coeffs[i, 0] at x[j].
    x = np.stack([points(basis, 9, s) for s in range(4)])
    c = np.random.default_rng(1).standard_normal((3, 1, 6))
    y = polyfit.polyval(torch.tensor(x, device=device), torch.tensor(c, device=device), basis).cpu()
    assert y.shape == (3, 4, 9)
    for i in range(3):
        for j in range(4):
            assert_close_scaled(y[i, j], oracle.val(x[j], c[i, 0], basis), oracle.abs_val(x[j], c[i, 0], basis), rtol64(5))


@pytest.mark.parametrize("degree", DEGREES)
@pytest.mark.parametrize("domain", [None, (2.0, 7.0)])
@pytest.mark.parametrize("increasing", [True, False])
def test_features_matches_numpy_vander(device, basis, degree, domain, increasing):
    x = points(basis, 129, degree, domain)
    V = polyfit.features(torch.tensor(x, device=device), degree, basis, domain=domain, increasing=increasing).cpu()
    expected = oracle.vander(x, degree, basis, domain)
    if not increasing:
        expected = expected[:, ::-1]
    assert V.shape == (129, degree + 1)
    # A recurrence term's rounding scales with the largest basis value met so far.
    scale = np.maximum.accumulate(np.abs(expected[:, ::1 if increasing else -1]), axis=1)[:, ::1 if increasing else -1]
    assert_close_scaled(V, expected, scale + 1.0, rtol64(degree))


def test_features_keeps_leading_shape(device, basis):
    x = torch.rand(2, 3, 4, dtype=torch.float64, device=device)
    V = polyfit.features(x, 4, basis)
    assert V.shape == (2, 3, 4, 5)
    expected = oracle.vander(x.cpu().numpy().ravel(), 4, basis).reshape(2, 3, 4, 5)
    np.testing.assert_allclose(V.cpu().numpy(), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("degree", [1, 2, 5, 12, 30])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("domain", [None, (-3.0, 5.0)])
def test_derivative_argument_matches_numpy_der(device, basis, degree, order, domain):
    x = points(basis, 101, degree, domain)
    c = np.random.default_rng(degree + order).standard_normal(degree + 1)
    y = polyfit.polyval(torch.tensor(x, device=device), torch.tensor(c, device=device), basis, domain=domain,
                        derivative=order)
    expected = oracle.val(x, c, basis, domain, derivative=order)
    scale = 2.0 / (domain[1] - domain[0]) if domain else 1.0
    der_c = oracle._fn(basis, "der")(c, order, scl=scale) if degree >= order else np.zeros(1)
    assert_close_scaled(y.cpu(), expected, oracle.abs_val(x, der_c, basis, domain) + np.abs(expected),
                        16 * rtol64(degree) * (degree + 1) ** order)


@pytest.mark.parametrize("degree", [0, 1, 4, 17])
@pytest.mark.parametrize("domain", [None, (0.5, 2.0)])
def test_autograd_first_and_second_x_derivatives_match_numpy(device, basis, degree, domain):
    x = torch.tensor(points(basis, 65, degree, domain), device=device, requires_grad=True)
    c = np.random.default_rng(degree).standard_normal(degree + 1)
    y = polyfit.polyval(x, torch.tensor(c, device=device), basis, domain=domain)
    (dy,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (d2y,) = torch.autograd.grad(dy.sum(), x)
    xn = x.detach().cpu().numpy()
    for got, order in [(dy, 1), (d2y, 2)]:
        expected = oracle.val(xn, c, basis, domain, derivative=order)
        tol = 1e-11 * (degree + 1) ** (order + 1) * (np.abs(expected) + oracle.abs_val(xn, c, basis, domain) + 1)
        np.testing.assert_array_less(np.abs(got.detach().cpu().numpy() - expected), tol)


@pytest.mark.parametrize("degree", [0, 3, 11, 30])
@pytest.mark.parametrize("domain", [None, (1.0, 3.0)])
def test_coeff_gradient_is_vander_transpose_times_grad(device, basis, degree, domain):
    x = points(basis, 300, degree, domain)
    g = np.random.default_rng(3).standard_normal(300)
    c = torch.zeros(degree + 1, dtype=torch.float64, device=device, requires_grad=True)
    y = polyfit.polyval(torch.tensor(x, device=device), c, basis, domain=domain)
    (gc,) = torch.autograd.grad(y, c, torch.tensor(g, device=device))
    V = oracle.vander(x, degree, basis, domain)
    expected = V.T @ g
    assert_close_scaled(gc.cpu(), expected, np.abs(V).T @ np.abs(g), rtol64(degree) * 10)


@pytest.mark.parametrize("order", [1, 2])
def test_coeff_gradient_of_derivative_series(device, basis, order):
    # d/dc of sum(g * d^n y/dx^n) = (vander of the derivative basis)^T g, via numpy's *der per unit vector.
    degree, domain = 7, (-2.0, 3.0)
    x = points(basis, 80, order, domain)
    g = np.random.default_rng(5).standard_normal(80)
    c = torch.zeros(degree + 1, dtype=torch.float64, device=device, requires_grad=True)
    y = polyfit.polyval(torch.tensor(x, device=device), c, basis, domain=domain, derivative=order)
    (gc,) = torch.autograd.grad(y, c, torch.tensor(g, device=device))
    expected = [g @ oracle.val(x, np.eye(degree + 1)[k], basis, domain, derivative=order) for k in range(degree + 1)]
    np.testing.assert_allclose(gc.cpu().numpy(), expected, rtol=1e-10, atol=1e-8)


# 300 rows: full blocks of the CPU kernels (64 rows of float64 on AVX-512) and a partial one; degree
# 9 and 16 leave a last chunk of 2 and 1 columns after 8 x 8 transposes.
@pytest.mark.parametrize("degree", [9, 16])
def test_features_x_gradient_matches_numpy(device, basis, degree):
    domain = (-1.0, 4.0)
    x = torch.tensor(points(basis, 300, 0, domain), device=device, requires_grad=True)
    g = np.random.default_rng(0).standard_normal((300, degree + 1))
    V = polyfit.features(x, degree, basis, domain=domain, increasing=False)
    (gx,) = torch.autograd.grad(V, x, torch.tensor(g, device=device))
    xn = x.detach().cpu().numpy()
    # column j of the reversed basis is P_{degree-j}
    expected = sum(g[:, degree - k] * oracle.val(xn, np.eye(degree + 1)[k], basis, domain, derivative=1)
                   for k in range(degree + 1))
    np.testing.assert_allclose(gx.cpu().numpy(), expected, rtol=1e-10, atol=1e-9)


def test_exact_at_window_ends(device, basis):
    # At t = +-1 (the domain's ends) values and derivatives are finite and exact to rounding.
    degree, domain = 24, (3.0, 11.0)
    x = torch.tensor([3.0, 11.0], dtype=torch.float64, device=device, requires_grad=True)
    c = np.random.default_rng(2).standard_normal(degree + 1)
    y = polyfit.polyval(x, torch.tensor(c, device=device), basis, domain=domain)
    (dy,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(y).all() and torch.isfinite(dy).all()
    t = np.array([-1.0, 1.0])
    assert_close_scaled(y.detach().cpu(), oracle.val(t, c, basis), oracle.abs_val(t, c, basis), rtol64(degree))
    np.testing.assert_allclose(dy.cpu().numpy(), oracle._fn(basis, "val")(t, oracle._fn(basis, "der")(c, 1, scl=0.25)),
                               rtol=1e-10, atol=1e-9)


def test_derivative_beyond_degree_is_zero(device, basis):
    x = torch.linspace(-1, 1, 7, dtype=torch.float64, device=device)
    c = torch.randn(3, dtype=torch.float64, device=device)
    assert torch.equal(polyfit.polyval(x, c, basis, derivative=3), torch.zeros_like(x))
    assert torch.equal(polyfit.polyval(x, c, basis, derivative=10), torch.zeros_like(x))


@pytest.mark.parametrize("basis", ["power", "chebyshev"])
def test_large_fresh_outputs_match_numpy(basis):
    """Outputs of tens of MB come from fresh mappings, which the CPU kernels map ahead of writing
    (in runs, per thread): every value, including those at run, task and row boundaries, is checked."""
    x = points(basis, 600_003, 1)
    f = polyfit.features(torch.tensor(x), 8, basis)  # 43 MB
    assert_close_scaled(f, oracle.vander(x, 8, basis), np.abs(oracle.vander(x, 8, basis)) + 1, rtol64(8))

    rows = np.stack([points(basis, 750_001, 2), points(basis, 750_001, 3)])  # two rows, 12 MB
    c = np.random.default_rng(4).standard_normal((2, 6))
    xt = torch.tensor(rows, requires_grad=True)
    g = np.random.default_rng(5).standard_normal(rows.shape)
    y = polyfit.polyval(xt, torch.tensor(c), basis)
    (gx,) = torch.autograd.grad(y, xt, torch.tensor(g))
    for r in range(2):
        assert_close_scaled(y[r].detach(), oracle.val(rows[r], c[r], basis), oracle.abs_val(rows[r], c[r], basis),
                            rtol64(5))
        dy = oracle.val(rows[r], c[r], basis, derivative=1)
        assert_close_scaled(gx[r], g[r] * dy, np.abs(g[r]) * (np.abs(dy) + 40), rtol64(5))


@pytest.mark.parametrize("use_reference", [False, True])
def test_x_gradient_at_a_domain_end_where_the_map_overshoots(basis, use_reference):
    # 1.5 + 2.75 and 2 / 1.25 round so that x = 2.75 maps a hair past t = 1: the value is clamped
    # to the window, the derivative must still be the polynomial's (a clamp would zero it).
    domain, c = (1.5, 2.75), np.array([0.9414, 0.416, -0.3])
    x = torch.tensor([1.5, 2.0, 2.75], dtype=torch.float64, requires_grad=True)
    fn = reference.polyval if use_reference else polyfit.polyval
    (gx,) = torch.autograd.grad(fn(x, torch.tensor(c), basis, domain=domain).sum(), x)
    expected = oracle.val(x.detach().numpy(), c, basis, domain, derivative=1)
    np.testing.assert_allclose(gx.numpy(), expected, rtol=1e-12, atol=1e-12)
