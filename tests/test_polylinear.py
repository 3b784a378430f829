"""polyfit.polylinear (the fused Kolmogorov-Arnold layer): values and gradients against numpy's
vander/der + einsum in float64, gradcheck/gradgradcheck, torch.compile, opcheck, saved memory."""

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import polyfit
from polyfit import _backend, reference

import oracle

MAPS = ["tanh", None]
COMPILED = _backend.STATE.loaded


def _inputs(B, n_in, n_out, degree, device, dtype=torch.float64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(B, n_in, generator=g, dtype=torch.float64) * 2 - 1) * scale
    w = torch.randn(n_out, n_in, degree + 1, generator=g, dtype=torch.float64) / (n_in * (degree + 1)) ** 0.5
    b = torch.randn(n_out, generator=g, dtype=torch.float64)
    return x.to(device, dtype), w.to(device, dtype), b.to(device, dtype)


def _np_forward(x, w, b, basis, input_map):
    x, w = x.detach().cpu().double().numpy(), w.detach().cpu().double().numpy()
    t = np.tanh(x) if input_map == "tanh" else x
    V = oracle.vander(t, w.shape[-1] - 1, basis)
    y = np.einsum("bik,oik->bo", V, w)
    return y if b is None else y + b.detach().cpu().double().numpy()


def _np_grads(x, w, dy, basis, input_map):
    """(grad_x, grad_weight) from the chain rule with numpy's vander and *der."""
    x, w, dy = (a.detach().cpu().double().numpy() for a in (x, w, dy))
    K = w.shape[-1]
    t = np.tanh(x) if input_map == "tanh" else x
    s = 1 - t * t if input_map == "tanh" else np.ones_like(x)
    V = oracle.vander(t, K - 1, basis)
    dV = np.stack([oracle.val(t, np.eye(K)[k], basis, derivative=1) for k in range(K)], -1)
    gw = np.einsum("bo,bik->oik", dy, V)
    gx = np.einsum("bo,oik,bik->bi", dy, w, dV) * s
    return gx, gw


@pytest.mark.parametrize("input_map", MAPS)
@pytest.mark.parametrize("bias", [False, True])
def test_values_and_grads_vs_numpy(device, basis, input_map, bias):
    degree = 7
    x, w, b = _inputs(37, 19, 11, degree, device)  # odd sizes: partial SIMD packs
    x.requires_grad_()
    w.requires_grad_()
    b = b.requires_grad_() if bias else None
    y = polyfit.polylinear(x, w, b, basis, input_map)
    assert y.shape == (37, 11) and y.dtype == torch.float64
    ref = _np_forward(x, w, b, basis, input_map)
    np.testing.assert_allclose(y.detach().cpu().numpy(), ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, w] + ([b] if bias else []), dy)
    gx, gw = _np_grads(x, w, dy, basis, input_map)
    np.testing.assert_allclose(grads[0].cpu().numpy(), gx, rtol=1e-10, atol=1e-12 * np.abs(gx).max())
    np.testing.assert_allclose(grads[1].cpu().numpy(), gw, rtol=1e-10, atol=1e-12 * np.abs(gw).max())
    if bias:
        np.testing.assert_allclose(grads[2].cpu().numpy(), dy.sum(0).cpu().numpy(), rtol=1e-12)


@pytest.mark.parametrize("input_map", MAPS)
def test_gradcheck(device, basis, input_map):
    x, w, b = _inputs(5, 4, 3, 4, device, seed=1)
    args = (x.requires_grad_(), w.requires_grad_(), b.requires_grad_())
    f = lambda x, w, b: polyfit.polylinear(x, w, b, basis, input_map)  # noqa: E731
    assert gradcheck(f, args)
    assert gradgradcheck(f, args)


def test_third_order(device):
    # Every derivative is again built from differentiable Functions: a third order still matches the reference.
    x, w, _ = _inputs(3, 2, 2, 3, device, seed=2)
    outs = []
    for fn in (polyfit.polylinear, reference.polylinear):
        xx = x.clone().requires_grad_()
        y = fn(xx, w, None, "chebyshev", "tanh").sum()
        (g1,) = torch.autograd.grad(y, xx, create_graph=True)
        (g2,) = torch.autograd.grad(g1.sum(), xx, create_graph=True)
        (g3,) = torch.autograd.grad(g2.sum(), xx)
        outs.append(g3)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-9, atol=1e-10)


def test_leading_dims_and_strides(device):
    x, w, b = _inputs(24, 6, 5, 3, device, seed=3)
    x3 = x.reshape(2, 12, 6)
    want = reference.polylinear(x, w, b, "legendre", "tanh").reshape(2, 12, 5)
    torch.testing.assert_close(polyfit.polylinear(x3, w, b, "legendre"), want)
    xt = x.t().contiguous().t()  # column-major x
    torch.testing.assert_close(polyfit.polylinear(xt, w, b, "legendre"), want.reshape(24, 5))
    wc = w.contiguous()
    wk = w.permute(0, 2, 1).contiguous().permute(0, 2, 1)  # degree-major storage, same values
    for ww in (wc, wk):
        ww = ww.clone().requires_grad_()
        y = polyfit.polylinear(x, ww, b, "legendre")
        torch.testing.assert_close(y, want.reshape(24, 5))
        y.sum().backward()
        assert ww.grad.stride() == ww.stride()  # gradient layout follows the weight's


def test_many_tiles_high_degree(device):
    # 1200 x 64 x 65 float64 basis = 40 MB: five tiles of the CPU's 8 MiB budget, forward and backward.
    x, w, b = _inputs(1200, 64, 7, 64, device, seed=4)
    x.requires_grad_()
    w.requires_grad_()
    y = polyfit.polylinear(x, w, b, "chebyshev")
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    yr = reference.polylinear(xr, wr, b, "chebyshev")
    torch.testing.assert_close(y, yr, rtol=1e-10, atol=1e-12)
    dy = torch.randn_like(y)
    g = torch.autograd.grad(y, [x, w], dy)
    gr = torch.autograd.grad(yr, [xr, wr], dy)
    torch.testing.assert_close(g[0], gr[0], rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(g[1], gr[1], rtol=1e-9, atol=1e-11)


def test_tanh_saturation_is_finite(device):
    # tanh' = 1 - tanh^2 is exactly 0 at saturation: gradients stay finite (an acos form gives NaN).
    x = torch.tensor([[-40.0, -20.0, 0.3, 20.0, 40.0]], device=device, requires_grad=True)
    w = torch.randn(3, 5, 9, device=device, requires_grad=True)
    y = polyfit.polylinear(x, w, None, "chebyshev", "tanh")
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all() and torch.isfinite(w.grad).all()
    assert x.grad[0, [0, 1, 3, 4]].abs().max() < 1e-6
    # tanh(+-40) rounds to +-1 exactly, where T_k(+-1) = (+-1)^k.
    w1 = w[:, :1].detach()
    sign = torch.tensor([(-1.0) ** k for k in range(9)], device=device)
    for v, s in ((40.0, torch.ones_like(sign)), (-40.0, sign)):
        y1 = polyfit.polylinear(torch.tensor([[v]], device=device), w1, None, "chebyshev", "tanh")
        torch.testing.assert_close(y1[0], (w1[:, 0] * s).sum(-1))


def test_nan_propagates_and_float32_tanh(device):
    x, w, _ = _inputs(6, 5, 3, 4, device, dtype=torch.float32, seed=9)
    x[2, 1] = float("nan")
    x[4, 0] = float("inf")
    y = polyfit.polylinear(x, w, None, "chebyshev", "tanh")
    assert torch.isnan(y[2]).all() and torch.isfinite(y[[0, 1, 3, 4, 5]]).all()
    # float32 tanh inside the layer is within a few ulp of torch's, over the whole range
    xs = torch.linspace(-12, 12, 20001, device=device).unsqueeze(1)
    one = torch.zeros(1, 1, 2, device=device)
    one[0, 0, 1] = 1.0  # y = P_1(tanh(x)) = tanh(x)
    torch.testing.assert_close(polyfit.polylinear(xs, one, None, "chebyshev", "tanh"), torch.tanh(xs),
                               rtol=5e-7, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision(device, dtype):
    x, w, b = _inputs(16, 8, 4, 5, device, seed=5)
    y = polyfit.polylinear(x.to(dtype), w.to(dtype), b.to(dtype), "chebyshev")
    assert y.dtype == dtype
    want = reference.polylinear(x.to(dtype).double(), w.to(dtype).double(), b.to(dtype).double(), "chebyshev")
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(y.double(), want, rtol=tol, atol=tol)
    # backward: gradients come back in the inputs' dtypes, computed in float32
    xl, wl = x.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
    dy = torch.randn(16, 4, device=device, dtype=torch.float64)
    gx, gw = torch.autograd.grad(polyfit.polylinear(xl, wl, None, "chebyshev"), [xl, wl], dy.to(dtype))
    assert gx.dtype == dtype and gw.dtype == dtype
    xr, wr = xl.detach().double().requires_grad_(), wl.detach().double().requires_grad_()
    gxr, gwr = torch.autograd.grad(reference.polylinear(xr, wr, None, "chebyshev"), [xr, wr], dy.to(dtype).double())
    for a, r in ((gx, gxr), (gw, gwr)):
        torch.testing.assert_close(a.double(), r, rtol=tol, atol=tol * max(1.0, r.abs().max().item()))


def test_empty_and_mixed_dtypes(device):
    x, w, b = _inputs(0, 3, 2, 2, device)
    assert polyfit.polylinear(x, w, b).shape == (0, 2)
    x, w, b = _inputs(4, 3, 2, 2, device)
    y = polyfit.polylinear(x.float(), w, None)  # promotes like torch: float32 x, float64 weight -> float64
    assert y.dtype == torch.float64


@pytest.mark.inductor
def test_compile_fullgraph_matches_eager(device):
    x, w, b = _inputs(32, 16, 8, 5, device, dtype=torch.float32, seed=6)

    def step(x, w, b):
        y = polyfit.polylinear(x, w, b, "chebyshev", "tanh")
        return (y * y).mean()

    grads = []
    for fn in (step, torch.compile(step, fullgraph=True)):
        xx, ww, bb = (t.clone().requires_grad_() for t in (x, w, b))
        loss = fn(xx, ww, bb)
        loss.backward()
        grads.append((loss.detach(), xx.grad, ww.grad, bb.grad))
    for a, c in zip(*grads):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not COMPILED, reason="compiled ops not built")
def test_opcheck(device):
    x, w, b = _inputs(9, 5, 3, 4, device, dtype=torch.float32, seed=7)
    dy = torch.randn(9, 3, device=device)
    for input_map in MAPS:
        torch.library.opcheck(torch.ops.polyfit.polylinear.default, (x, w, b, "chebyshev", input_map))
        torch.library.opcheck(torch.ops.polyfit.polylinear.default, (x, w, None, "legendre", input_map))
        wk = w.permute(0, 2, 1).contiguous().permute(0, 2, 1)
        for ww in (w, wk):
            for mask in ([True, True], [True, False], [False, True]):
                torch.library.opcheck(torch.ops.polyfit.polylinear_backward.default,
                                      (dy, x, ww, "hermite_e", input_map, mask))


def test_saved_memory_is_x_and_params():
    # Only x and the parameters are kept for backward (measured on what autograd packs).
    B, n_in, n_out, degree = 256, 64, 32, 8
    layer = polyfit.nn.PolyLinear(n_in, n_out, degree, bias=True)
    x = torch.randn(B, n_in, requires_grad=True)
    param_ptrs = {p.data_ptr() for p in layer.parameters()}
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    extra = sum(t.numel() * t.element_size() for t in saved
                if t.data_ptr() not in param_ptrs and t.data_ptr() != x.data_ptr())
    assert extra <= x.numel() * x.element_size()
    assert extra == 0
    y.sum().backward()
    assert x.grad is not None and layer.weight.grad is not None and layer.bias.grad is not None


def test_bad_inputs():
    x, w, b = _inputs(4, 3, 2, 2, "cpu")
    with pytest.raises(TypeError, match="x must be"):
        polyfit.polylinear(x.long(), w)
    with pytest.raises(TypeError, match="weight must be"):
        polyfit.polylinear(x, w.int())
    with pytest.raises(ValueError, match="weight must be 3-D"):
        polyfit.polylinear(x, w[0])
    with pytest.raises(ValueError, match="in_features"):
        polyfit.polylinear(x[:, :2], w)
    with pytest.raises(ValueError, match="bias must have shape"):
        polyfit.polylinear(x, w, b[:1])
    with pytest.raises(ValueError, match="input_map"):
        polyfit.polylinear(x, w, None, "chebyshev", "relu")
    with pytest.raises(ValueError, match="basis"):
        polyfit.polylinear(x, w, None, "bessel")
    with pytest.raises(ValueError, match="x must have at least one dimension"):
        polyfit.polylinear(x[0, 0], w)
    with pytest.raises(ValueError, match="non-empty last dimension"):
        polyfit.polylinear(x, w[..., :0])
    if COMPILED:  # the op checks too, naming the argument
        with pytest.raises(ValueError, match="input_map"):
            torch.ops.polyfit.polylinear(x, w, None, "chebyshev", "relu")
        with pytest.raises(ValueError, match="x must be 2-D"):
            torch.ops.polyfit.polylinear(x[0], w, None, "chebyshev", None)
        with pytest.raises(ValueError, match="grad must have shape"):
            torch.ops.polyfit.polylinear_backward(x, x, w, "chebyshev", None, [True, True])


def test_matches_chebykan_style_layer():
    # The layer people write today (tanh -> recurrence -> stack -> einsum), independent of polyfit.
    torch.manual_seed(8)
    n_in, n_out, degree = 12, 6, 6
    layer = polyfit.nn.PolyLinear(n_in, n_out, degree).double()
    x = torch.randn(40, n_in, dtype=torch.float64) * 3
    t = torch.tanh(x)
    T = [torch.ones_like(t), t]
    for _ in range(2, degree + 1):
        T.append(2 * t * T[-1] - T[-2])
    want = torch.einsum("bik,oik->bo", torch.stack(T, -1), layer.weight)
    torch.testing.assert_close(layer(x), want)


def test_hypothesis_shapes_and_strides():
    # Random sizes (partial SIMD packs included), degrees, bases, maps, and x transposed or sliced.
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=40, deadline=None)
    @hypothesis.given(B=st.integers(0, 70), n_in=st.integers(1, 40), n_out=st.integers(1, 9),
                      degree=st.integers(0, 12), basis=st.sampled_from(polyfit.BASES), input_map=st.sampled_from(MAPS),
                      layout=st.sampled_from(["contiguous", "transposed", "sliced"]), bias=st.booleans())
    def check(B, n_in, n_out, degree, basis, input_map, layout, bias):
        x, w, b = _inputs(B, n_in, n_out, degree, "cpu", seed=B * 131 + n_in)
        if layout == "transposed":
            x = x.t().contiguous().t()
        elif layout == "sliced":
            x = torch.cat([x, x], 1)[:, ::2]
        b = b if bias else None
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = polyfit.polylinear(xx, ww, b, basis, input_map)
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        yr = reference.polylinear(xr, wr, b, basis, input_map)
        torch.testing.assert_close(y, yr, rtol=1e-10, atol=1e-10)
        if B:
            dy = torch.randn_like(y)
            g = torch.autograd.grad(y, [xx, ww], dy)
            gr = torch.autograd.grad(yr, [xr, wr], dy, allow_unused=True, materialize_grads=True)  # degree 0: no x
            for a, c in zip(g, gr):
                torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-9 * max(1.0, c.abs().max().item()))

    check()
