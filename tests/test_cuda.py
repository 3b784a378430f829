"""CUDA kernels: agreement with the CPU kernels, determinism, devices, streams, CUDA graphs, sizes.

Every test here needs a GPU and skips cleanly without one (the device-parametrised tests in the
other files also run on CUDA through the `device` fixture). Select them with `pytest -m cuda`.
"""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import polyfit
from polyfit import _backend

BASES = polyfit.BASES
HAS_CUDA = torch.cuda.is_available()
COMPILED = HAS_CUDA and _backend.compiled_for(torch.device("cuda"))

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device"),
    pytest.mark.skipif(HAS_CUDA and not COMPILED, reason="polyfit was built without its CUDA kernels"),
]

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
# Relative to the largest |value| of the float64 result (rounding errors of a series scale with it).
TOL = {torch.float64: 1e-11, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}

LAYOUTS = {
    # name: (x shape, coeffs shape, transform); transforms make strided, offset and expanded inputs
    "shared": ((5000,), (7,), None),
    "shared_n1": ((1,), (4,), None),
    "shared_offset": ((4097,), (6,), "offset"),
    "shared_2d_transposed": ((64, 48), (5,), "transpose"),
    "per_row_long": ((3, 3000), (3, 6), None),
    "per_row_long_broadcast": ((4, 2000), (1, 6), None),
    "per_row_short": ((300, 5), (300, 8), None),
    "per_row_n1": ((1000, 1), (1000, 9), None),
    "broadcast_both": ((2, 1, 37), (1, 3, 5), None),
    "coeffs_transposed": ((6, 50), (6, 4), "coeffs_t"),
}


def _rand(shape, dtype, device, lo=-1.0, hi=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(dtype).to(device)


def _make(layout, dtype, device):
    xs, cs, tf = LAYOUTS[layout]
    x = _rand(xs[::-1] if tf == "transpose" else xs, dtype, device, -1.1, 1.2, seed=1)
    c = _rand(cs[::-1] if tf == "coeffs_t" else cs, dtype, device, seed=2)
    if tf == "transpose":
        x = x.t()
    elif tf == "offset":
        x = x[1:]
    elif tf == "coeffs_t":
        c = c.t()
    return x, c


def _assert_close(got, want, dtype, what="", rtol_factor=1.0):
    assert got.device.type == "cuda" and got.dtype == want.dtype and got.shape == want.shape, what
    got, want = got.double().cpu(), want.double().cpu()
    same = (got == want) | (torch.isnan(got) & torch.isnan(want))  # equal infinities and NaNs
    finite = want[torch.isfinite(want)]
    scale = max(finite.abs().max().item() if finite.numel() else 0.0, 1.0)
    err = torch.where(same, torch.zeros_like(got), (got - want).abs())
    bad = err.max().item() if err.numel() else 0.0
    assert bad <= TOL[dtype] * rtol_factor * scale, f"{what}: max error {bad:.3g}, scale {scale:.3g}"


def _value_and_grads(x, c, basis, domain, derivative, g):
    x = x.detach().requires_grad_()
    c = c.detach().requires_grad_()
    y = polyfit.polyval(x, c, basis, domain=domain, derivative=derivative)
    gx, gc = torch.autograd.grad(y, (x, c), g, allow_unused=True)
    gx = torch.zeros_like(x) if gx is None else gx
    gc = torch.zeros_like(c) if gc is None else gc
    return y.detach(), gx, gc


# ---- CPU vs CUDA agreement -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("basis", BASES)
def test_polyval_and_grads_match_cpu(basis, layout, dtype):
    x, c = _make(layout, dtype, "cuda")
    for derivative, domain in [(0, None), (1, (-1.5, 1.3)), (2, None), (3, (-2.0, 2.0))]:
        y = polyfit.polyval(x, c, basis, domain=domain, derivative=derivative)
        g = _rand(y.shape, dtype, "cuda", seed=3)
        y, gx, gc = _value_and_grads(x, c, basis, domain, derivative, g)
        # The CPU kernels in float64 are the reference: they are tested against numpy elsewhere.
        y64, gx64, gc64 = _value_and_grads(x.cpu().double(), c.cpu().double(), basis, domain, derivative,
                                           g.cpu().double())
        what = f"{basis} {layout} {dtype} derivative={derivative}"
        _assert_close(y, y64.to(dtype), dtype, "y " + what)
        _assert_close(gx, gx64.to(dtype), dtype, "grad x " + what)
        _assert_close(gc, gc64.to(dtype), dtype, "grad coeffs " + what)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("degree", [0, 1, 7, 8, 16, 40])
def test_features_and_backward_match_cpu(basis, degree, dtype):
    x = _rand((3001,), dtype, "cuda", -0.5, 2.5, seed=4)[::3]  # strided
    for domain, increasing in [(None, True), ((-0.5, 2.5), False), ((2.5, -0.5), True)]:
        if domain is None and basis != "power":
            xx = x / 2.5  # keep orthogonal bases near their window
        else:
            xx = x
        xg = xx.detach().requires_grad_()
        out = polyfit.features(xg, degree, basis, domain=domain, increasing=increasing)
        g = _rand(out.shape, dtype, "cuda", seed=5)
        (gx,) = torch.autograd.grad(out, xg, g)
        x64 = xx.detach().cpu().double().requires_grad_()
        out64 = polyfit.features(x64, degree, basis, domain=domain, increasing=increasing)
        (gx64,) = torch.autograd.grad(out64, x64, g.cpu().double())
        what = f"{basis} degree={degree} {dtype} domain={domain} increasing={increasing}"
        # x's rounding moves P_k(t) by up to |P_k'(t)| |t| eps, and |T_k'(+-1)| = k^2: the error grows
        # with the degree squared (float32, degree 16, domain ends: 1.05e-5 seen on an H200)
        loose = max(1.0, (degree / 8) ** 2)
        _assert_close(out, out64.to(dtype), dtype, "features " + what, loose)
        _assert_close(gx, gx64.to(dtype), dtype, "features backward " + what, loose)


@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("n,degree", [(1 << 20, 5), (1 << 20, 40), (70_001, 20), (3, 3000)])
def test_large_shapes_match_cpu(basis, n, degree):
    # Chunked coefficient reductions, the window kernel (degree > 31), huge degrees (direct paths).
    if degree > 1000 and basis in ("hermite", "hermite_e"):
        pytest.skip("H_3000 overflows float64")
    x = _rand((n,), torch.float64, "cuda", -0.9, 0.9, seed=6)
    c = _rand((degree + 1,), torch.float64, "cuda", seed=7) / (degree + 1)
    g = _rand((n,), torch.float64, "cuda", seed=8)
    for derivative in (0, 1):
        y, gx, gc = _value_and_grads(x, c, basis, None, derivative, g)
        y64, gx64, gc64 = _value_and_grads(x.cpu(), c.cpu(), basis, None, derivative, g.cpu())
        for got, want, name in [(y, y64, "y"), (gx, gx64, "grad x"), (gc, gc64, "grad coeffs")]:
            scale = max(want.abs().max().item(), 1.0)
            err = (got.cpu() - want).abs().max().item()
            assert err <= 1e-9 * scale, f"{name} {basis} n={n} degree={degree} d={derivative}: {err:.3g} / {scale:.3g}"


def test_empty_and_zero_dim_inputs():
    for x in (torch.empty(0, device="cuda"), torch.tensor(0.5, device="cuda")):
        c = torch.tensor([1.0, 2.0, 3.0], device="cuda")
        y = polyfit.polyval(x, c)
        assert y.shape == x.shape and y.device.type == "cuda"
        assert polyfit.features(x, 3).shape == x.shape + (4,)
    c = torch.randn(3, 4, device="cuda", requires_grad=True)
    y = polyfit.polyval(torch.empty(3, 0, device="cuda"), c)
    y.sum().backward()
    assert torch.equal(c.grad, torch.zeros_like(c))


# ---- determinism -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,degree", [((1 << 22,), 9), ((8, 100_000), 40), ((20_000, 30), 6)])
def test_backward_is_bitwise_deterministic(shape, degree, dtype):
    x = _rand(shape, dtype, "cuda", seed=9)
    c = _rand(shape[:-1] + (degree + 1,) if len(shape) > 1 else (degree + 1,), dtype, "cuda", seed=10)
    g = _rand(shape, dtype, "cuda", seed=11)
    first = _value_and_grads(x, c, "legendre", None, 1, g)
    for _ in range(3):
        again = _value_and_grads(x, c, "legendre", None, 1, g)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


# ---- devices, streams, CUDA graphs ---------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_gpu_while_first_is_current():
    assert torch.cuda.current_device() == 0
    x0, c0 = _make("per_row_long", torch.float32, "cuda:0")
    f0 = _value_and_grads(x0, c0, "chebyshev", (-1.5, 1.3), 1, torch.ones_like(x0))
    x1, c1 = x0.to("cuda:1"), c0.to("cuda:1")
    f1 = _value_and_grads(x1, c1, "chebyshev", (-1.5, 1.3), 1, torch.ones_like(x1))
    torch.cuda.synchronize(1)
    for a, b in zip(f0, f1):
        assert b.device == torch.device("cuda:1")
        assert torch.equal(a, b.to("cuda:0"))
    v1 = polyfit.features(x1[0], 6, "legendre")
    assert v1.device == torch.device("cuda:1")
    assert torch.equal(v1.cpu(), polyfit.features(x0[0], 6, "legendre").cpu())


def test_work_runs_on_the_current_stream():
    # x is produced on a side stream after a long sleep; polyval on that stream must wait for it.
    # A kernel launched on the default stream would read x before it is written.
    n = 1 << 22
    src = _rand((n,), torch.float32, "cuda", seed=12)
    c = torch.tensor([0.5, -1.0, 2.0, 0.25], device="cuda")
    want = polyfit.polyval(src, c)
    g = torch.ones_like(src)
    _, want_gx, want_gc = _value_and_grads(src, c, "power", None, 0, g)
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        x = torch.zeros_like(src)
        torch.cuda._sleep(100_000_000)  # some tens of milliseconds of GPU time
        x.copy_(src)
        y = polyfit.polyval(x, c)
        v = polyfit.features(x, 3)
        _, gx, gc = _value_and_grads(x, c, "power", None, 0, g)
    s.synchronize()
    assert torch.equal(y, want)
    assert torch.equal(v, polyfit.features(src, 3))
    assert torch.equal(gx, want_gx) and torch.equal(gc, want_gc)


def test_compile_reduce_overhead_forward_backward():
    basis = "legendre"
    x = _rand((4, 1000), torch.float32, "cuda", seed=13)
    c0 = _rand((4, 6), torch.float32, "cuda", seed=14)

    def step(x, c):
        y = polyfit.polyval(x, c, basis, domain=(-1.0, 1.0))
        v = polyfit.features(x, 5, basis)
        return (y * y).sum() + v.square().mean()

    compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)
    for i in range(4):  # warm-up, recording, then replays of the CUDA graph
        c = (c0 + 0.01 * i).requires_grad_()
        xe = (x + 0.001 * i).requires_grad_()
        loss = compiled(xe, c)
        gx, gc = torch.autograd.grad(loss, (xe, c))
        ce = c.detach().requires_grad_()
        xr = xe.detach().requires_grad_()
        ref = step(xr, ce)
        rgx, rgc = torch.autograd.grad(ref, (xr, ce))
        torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gx, rgx, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gc, rgc, rtol=1e-5, atol=1e-5)


# ---- 64-bit indexing -----------------------------------------------------------------------------


def _free_bytes():
    free, _ = torch.cuda.mem_get_info()
    return free


@pytest.mark.slow
def test_more_than_2_pow_31_elements():
    n = (1 << 31) + 4097
    # float16 x, grad and y, plus the features output of a slice: about 13 GiB with headroom
    if _free_bytes() < 20 * (1 << 30):
        pytest.skip("needs about 20 GiB of free GPU memory")
    x = torch.empty(n, dtype=torch.float16, device="cuda").uniform_(-1, 1)
    x[-1] = 0.5
    c = torch.tensor([0.25, -0.5, 1.0], dtype=torch.float16, device="cuda")
    y = polyfit.polyval(x, c)
    idx = torch.tensor([0, 1 << 30, (1 << 31) - 1, 1 << 31, n - 2, n - 1], device="cuda")
    xs = x[idx].double()
    want = 0.25 - 0.5 * xs + xs * xs
    torch.testing.assert_close(y[idx].double(), want, rtol=2e-3, atol=2e-3)
    del y
    # grad_coeffs: a sum over > 2^31 points (int64 indices in the reduction) with an expanded
    # (stride 0) grad, small enough that the float16 result stays finite; against float64 sums
    g0 = torch.tensor(1e-5, dtype=torch.float16, device="cuda")
    _, gc = torch.ops.polyfit.polyval_backward(g0.expand(n), x, c, "power", None, 0, [False, True])
    sums = torch.zeros(3, dtype=torch.float64, device="cuda")
    for chunk in x.split(1 << 28):
        cd = chunk.double()
        sums += torch.stack([torch.full((), float(cd.numel()), device="cuda", dtype=torch.float64),
                             cd.sum(), (cd * cd).sum()])
    torch.testing.assert_close(gc.double(), g0.double() * sums, rtol=2e-3, atol=1e-2)
    # features: output (M, 3) with more than 2^31 elements
    m = (1 << 29) + 3
    v = polyfit.features(x[-m:], 3, "chebyshev")
    assert v.shape == (m, 4)
    last = x[-1].double()
    torch.testing.assert_close(v[-1].double(), torch.stack([torch.ones((), device="cuda", dtype=torch.float64),
                                                            last, 2 * last * last - 1, 4 * last**3 - 3 * last]),
                               rtol=2e-3, atol=2e-3)


# ---- gradcheck in float64 on CUDA ----------------------------------------------------------------


@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("layout", ["shared", "per_row_short", "per_row_n1"])
def test_gradcheck_cuda(basis, layout):
    xs, cs, _ = LAYOUTS[layout]
    xs = tuple(min(s, 7) for s in xs)
    cs = tuple(min(s, 7) for s in cs[:-1]) + (cs[-1],)
    x = _rand(xs, torch.float64, "cuda", seed=15).requires_grad_()
    c = _rand(cs, torch.float64, "cuda", seed=16).requires_grad_()
    for derivative in (0, 2):
        f = lambda x, c: polyfit.polyval(x, c, basis, domain=(-1.5, 1.2), derivative=derivative)  # noqa: E731
        assert gradcheck(f, (x, c))
        assert gradgradcheck(f, (x, c))
    xf = _rand((5,), torch.float64, "cuda", seed=17).requires_grad_()
    assert gradcheck(lambda x: polyfit.features(x, 5, basis, increasing=False), (xf,))
    assert gradgradcheck(lambda x: polyfit.features(x, 5, basis, increasing=False), (xf,))
