"""Strided, transposed, expanded, sliced, empty and 0-dim inputs; NaN and Inf propagation."""

import math

import numpy as np
import pytest
import torch

import polyfit
import oracle


def _val(x, c, basis, domain=None):
    return oracle.val(x.detach().cpu().numpy(), c.detach().cpu().numpy(), basis, domain)


def _strided_views(device):
    base = torch.rand(6, 10, dtype=torch.float64, device=device) * 2 - 1
    return {
        "transposed": base.t(),
        "sliced": base[:, ::3],
        "expanded": base[:1].expand(4, 10),
        "column": base[:, 2],
        "negative_offset_slice": base[2:5, 1:9:2],
    }


@pytest.mark.parametrize("view", ["transposed", "sliced", "expanded", "column", "negative_offset_slice"])
def test_polyval_and_features_on_strided_x(device, basis, view):
    x = _strided_views(device)[view]
    c = torch.randn(5, dtype=torch.float64, device=device)
    y = polyfit.polyval(x, c, basis, domain=(-1.0, 1.0))
    assert y.shape == x.shape
    np.testing.assert_allclose(y.cpu().numpy(), _val(x, c, basis, (-1.0, 1.0)), rtol=1e-12, atol=1e-12)
    V = polyfit.features(x, 4, basis)
    np.testing.assert_allclose(V.cpu().numpy(), oracle.vander(x.cpu().numpy(), 4, basis), rtol=1e-12, atol=1e-12)


def test_per_row_with_strided_and_expanded_coeffs(device, basis):
    x = (torch.rand(7, 4, dtype=torch.float64, device=device) * 2 - 1).t()  # (4, 7), transposed
    c = torch.randn(6, 4, dtype=torch.float64, device=device).t()  # (4, 6), transposed
    y = polyfit.polyval(x, c, basis)
    for r in range(4):
        np.testing.assert_allclose(y[r].cpu().numpy(), _val(x[r], c[r], basis), rtol=1e-12, atol=1e-12)
    c_exp = torch.randn(6, dtype=torch.float64, device=device).expand(4, 6)  # stride 0 rows
    y = polyfit.polyval(x, c_exp, basis)
    np.testing.assert_allclose(y.cpu().numpy(), _val(x, c_exp[0], basis), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("K", [3, 7, 20])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "wide_slice"])
def test_one_point_rows_with_their_own_coefficients(device, basis, dtype, K, layout):
    # x (R, 1), coeffs (R, K): the CPU packs lanes across rows (features' backward has this shape);
    # float32 rows of contiguous coefficients are gathered by permutes (K <= 6, dense rows) or 16 x 16
    # transposes. R = 200 is three full packs and a tail; values and both gradients.
    R = 200
    gen = torch.Generator().manual_seed(K)
    x = (torch.rand(1, R, generator=gen, dtype=torch.float64) * 2 - 1).to(device, dtype).t().requires_grad_()
    c = torch.randn(R, K + 3, generator=gen, dtype=torch.float64).to(device, dtype)
    c = {"contiguous": c[:, :K].contiguous(), "transposed": c[:, :K].t().contiguous().t(), "wide_slice": c[:, 1:K + 1]}[layout]
    c = c.detach().requires_grad_()
    g = torch.randn(R, 1, generator=gen, dtype=torch.float64).to(device, dtype)
    y = polyfit.polyval(x, c, basis)
    gx, gc = torch.autograd.grad(y, (x, c), g)
    xn, cn, gn = (t.detach().double().cpu().numpy() for t in (x, c, g))
    V = oracle.vander(xn[:, 0], K - 1, basis)
    d = np.array([oracle.val(xn[r], cn[r], basis, derivative=1)[0] for r in range(R)])
    # Rounding of a recurrence term scales with the largest basis value met so far (a few eps of it
    # per step); the derivative's terms carry a further factor of up to K.
    u = torch.finfo(dtype).eps / 2
    scale = np.maximum.accumulate(np.abs(V), axis=1)
    row = (np.abs(cn) * scale).sum(1)
    assert np.all(np.abs(y.detach().cpu().double().numpy()[:, 0] - (V * cn).sum(1)) <= 8 * K * u * row)
    assert np.all(np.abs(gx.cpu().double().numpy()[:, 0] - gn[:, 0] * d) <= 8 * K * K * u * np.abs(gn[:, 0]) * row)
    assert np.all(np.abs(gc.cpu().double().numpy() - gn * V) <= 8 * K * u * np.abs(gn) * scale)


def test_gradients_on_strided_inputs_match_contiguous(device, basis):
    xt = (torch.rand(5, 8, dtype=torch.float64, device=device) * 2 - 1).t().requires_grad_()
    ct = torch.randn(4, 8, dtype=torch.float64, device=device).t().requires_grad_()  # (8, 4)
    g = torch.randn(8, 5, dtype=torch.float64, device=device)
    y = polyfit.polyval(xt, ct, basis)
    gx, gc = torch.autograd.grad(y, (xt, ct), g)
    xc, cc = xt.detach().contiguous().requires_grad_(), ct.detach().contiguous().requires_grad_()
    ex, ec = torch.autograd.grad(polyfit.polyval(xc, cc, basis), (xc, cc), g)
    torch.testing.assert_close(gx, ex)
    torch.testing.assert_close(gc, ec)
    # an expanded (stride-0) upstream gradient, as from y.sum().backward()
    y = polyfit.polyval(xt, ct, basis)
    gx2, gc2 = torch.autograd.grad(y.sum(), (xt, ct))
    ex2, ec2 = torch.autograd.grad(polyfit.polyval(xc, cc, basis), (xc, cc), torch.ones(8, 5, dtype=torch.float64,
                                                                                        device=device))
    torch.testing.assert_close(gx2, ex2)
    torch.testing.assert_close(gc2, ec2)


def test_gradient_of_x_broadcast_over_coefficient_rows(device, basis):
    # x (N,) shared by B polynomials: its gradient sums over the B rows.
    x = (torch.rand(9, dtype=torch.float64, device=device) * 2 - 1).requires_grad_()
    c = torch.randn(3, 5, dtype=torch.float64, device=device, requires_grad=True)
    y = polyfit.polyval(x, c, basis)
    assert y.shape == (3, 9)
    (gx,) = torch.autograd.grad(y.sum(), x)
    xn = x.detach().cpu().numpy()
    expected = sum(oracle.val(xn, c[b].detach().cpu().numpy(), basis, derivative=1) for b in range(3))
    np.testing.assert_allclose(gx.cpu().numpy(), expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4)])
def test_empty_inputs(device, basis, shape):
    x = torch.empty(shape, dtype=torch.float32, device=device, requires_grad=True)
    c = torch.randn(3, device=device, requires_grad=True)
    y = polyfit.polyval(x, c, basis)
    assert y.shape == shape
    y.sum().backward()
    assert torch.equal(c.grad, torch.zeros_like(c))
    assert x.grad.shape == shape
    assert polyfit.features(x, 3, basis).shape == shape + (4,)
    cb = torch.randn(shape[:-1] + (3,), device=device) if len(shape) > 1 else torch.randn(0, 3, device=device)
    xb = x if len(shape) > 1 else torch.empty(0, 5, device=device)
    assert polyfit.polyval(xb, cb, basis).shape == torch.broadcast_shapes(xb.shape[:-1], cb.shape[:-1]) + xb.shape[-1:]


def test_zero_dim_x(device, basis):
    x = torch.tensor(0.3, dtype=torch.float64, device=device, requires_grad=True)
    c = torch.randn(4, dtype=torch.float64, device=device)
    y = polyfit.polyval(x, c, basis)
    assert y.shape == ()
    np.testing.assert_allclose(y.item(), _val(x, c, basis), rtol=1e-13)
    (gx,) = torch.autograd.grad(y, x)
    assert gx.shape == ()
    np.testing.assert_allclose(gx.item(), oracle.val(0.3, c.cpu().numpy(), basis, derivative=1), rtol=1e-12)
    V = polyfit.features(x, 3, basis)
    assert V.shape == (4,)
    (gx,) = torch.autograd.grad(V.sum(), x)
    assert gx.shape == ()


def test_degree_zero(device, basis):
    x = torch.rand(5, device=device, requires_grad=True)
    V = polyfit.features(x, 0, basis)
    assert torch.equal(V, torch.ones(5, 1, device=device))
    c = torch.tensor([2.5], device=device, requires_grad=True)
    y = polyfit.polyval(x, c, basis)
    assert torch.equal(y, torch.full((5,), 2.5, device=device))
    gx, gc = torch.autograd.grad(y.sum(), (x, c))
    assert torch.equal(gx, torch.zeros(5, device=device)) and gc.item() == 5.0


def test_high_degree_64_every_path(device, basis):
    degree = 64
    x = torch.linspace(-1, 1, 33, dtype=torch.float64, device=device)
    if basis == "laguerre":
        x = x + 1
    c = torch.randn(degree + 1, dtype=torch.float64, device=device) / (1 + torch.arange(degree + 1, device=device)) ** 2
    y = polyfit.polyval(x, c, basis)
    exp = _val(x, c, basis)
    scale = oracle.abs_val(x.cpu().numpy(), c.cpu().numpy(), basis)
    assert np.all(np.abs(y.cpu().numpy() - exp) <= 1e-12 * degree * scale)
    V = polyfit.features(x, degree, basis)
    Vn = oracle.vander(x.cpu().numpy(), degree, basis)
    assert np.all(np.abs(V.cpu().numpy() - Vn) <= 1e-12 * degree * np.maximum.accumulate(np.abs(Vn), axis=1))
    xr = x.clone().requires_grad_()
    cr = c.clone().requires_grad_()
    gx, gc = torch.autograd.grad(polyfit.polyval(xr, cr, basis).sum(), (xr, cr))
    np.testing.assert_allclose(gc.cpu().numpy(), Vn.sum(0), rtol=1e-10, atol=1e-10 * np.abs(Vn).sum(0).max())
    assert torch.isfinite(gx).all()


def test_nan_and_inf_propagate(device, basis):
    x = torch.tensor([0.5, math.nan, math.inf, -math.inf], dtype=torch.float64, device=device)
    c = torch.randn(4, dtype=torch.float64, device=device)
    y = polyfit.polyval(x, c, basis, domain=(-1.0, 1.0))
    assert not torch.isnan(y[0])
    assert torch.isnan(y[1])
    assert not torch.isfinite(y[2:]).any()  # inf in, inf or nan out (as the reference's tensor ops give)
    torch.testing.assert_close(y, polyfit.reference.polyval(x, c, basis, domain=(-1.0, 1.0)), equal_nan=True)
    cn = c.clone()
    cn[1] = math.nan
    assert torch.isnan(polyfit.polyval(x[:1], cn, basis)).all()
    V = polyfit.features(x, 3, basis)
    assert torch.isnan(V[1, 1:]).all() and V[1, 0] == 1


def test_coefficient_sequence_takes_x_dtype(device):
    x = torch.linspace(-2, 2, 9, device=device)
    y = polyfit.polyval(x, [3, 0, 5])
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, 5 * x * x + 3)
