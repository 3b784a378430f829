"""polyfit.fit against numpy.polynomial's *fit(..., w=..., full=True), float64, on random weighted
batches; rank deficiency, bad inputs, the Fit object, and the SVD reference as a second oracle."""

import warnings

import numpy as np
import pytest
import torch

import polyfit
from polyfit import _backend, reference

import oracle

COMPILED = _backend.STATE.loaded
DOMAIN = (-3.0, 7.0)


def _curves(R, N, seed, domain=None, weighted=True, lo_hi=(-1.0, 1.0)):
    rng = np.random.default_rng(seed)
    lo, hi = domain if domain is not None else lo_hi
    x = rng.uniform(lo, hi, (R, N))
    y = np.sin(3 * x / (hi - lo)) + 0.3 * rng.standard_normal((R, N))  # noisy: non-zero residuals
    w = rng.uniform(0.2, 2.0, (R, N)) if weighted else None
    return x, y, w


def _numpy_fits(x, y, degree, basis, w=None, domain=None):
    cs, rs = [], []
    for r in range(x.shape[0]):
        c, res = oracle.fit(x[r], y[r], degree, basis, None if w is None else w[r], domain)
        cs.append(c)
        rs.append(res[0] if len(res) else np.nan)
    return np.array(cs), np.array(rs)


def _cond(x, w, degree, basis, domain=None):
    """Condition numbers of the column-scaled weighted basis matrices (numpy's problem)."""
    out = []
    for r in range(x.shape[0]):
        A = oracle.vander(x[r], degree, basis, domain) * (1.0 if w is None else w[r][:, None])
        s = np.linalg.svd(A / np.linalg.norm(A, axis=0), compute_uv=False)
        out.append(s[0] / s[-1])
    return np.array(out)


def _assert_close_fits(coeffs, resid, c_np, r_np, rtol=1e-8, cond=None):
    """Coefficients within rtol in norm, per curve; where the problem is ill-conditioned (cond > 1e5),
    within 100 cond eps, the size of the difference between any two backward-stable solvers."""
    coeffs, resid = coeffs.cpu().numpy(), resid.cpu().numpy()
    err = np.linalg.norm(coeffs - c_np, axis=-1) / np.linalg.norm(c_np, axis=-1)
    tol = rtol if cond is None else np.maximum(rtol, 100 * cond * np.finfo(np.float64).eps)
    assert (err <= tol).all(), (err.max(), np.max(tol))
    np.testing.assert_allclose(resid, r_np, rtol=rtol)


@pytest.mark.parametrize("domain", [None, DOMAIN])
@pytest.mark.parametrize("degree", [0, 3, 6])
def test_matches_numpy_weighted(device, basis, domain, degree):
    # Laguerre lives on [0, inf): without a domain its data sit there. With a domain (mapped onto
    # [-1, 1], by contract) its degree-6 problem has cond ~ 1e7 and the tolerance widens with it.
    x, y, w = _curves(70, 40, seed=degree, domain=domain, lo_hi=(0.0, 6.0) if basis == "laguerre" else (-1.0, 1.0))
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RankWarning on well-posed data
        f = polyfit.fit(t(x), t(y), degree, basis, weight=t(w), domain=domain)
    assert f.coeffs.shape == (70, degree + 1) and f.residuals.shape == (70,)
    assert f.coeffs.dtype == torch.float64 and f.basis == basis and f.domain == domain
    assert (f.rank == degree + 1).all()
    c_np, r_np = _numpy_fits(x, y, degree, basis, w, domain)
    _assert_close_fits(f.coeffs, f.residuals, c_np, r_np, cond=_cond(x, w, degree, basis, domain))


def _errors_against_exact(x, y, w, degree, basis, coeffs):
    """Relative errors of coeffs and of numpy's answer against the exact least-squares solution
    (50-digit arithmetic), one per curve."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    c_np, _ = _numpy_fits(x, y, degree, basis, w)
    ours, theirs = [], []
    for r in range(len(x)):
        A = mpmath.matrix((oracle.vander(x[r], degree, basis) * w[r][:, None]).tolist())
        b = mpmath.matrix((y[r] * w[r]).tolist())
        exact = np.array([float(v) for v in mpmath.lu_solve(A.T * A, A.T * b)], dtype=np.float64)
        n = np.linalg.norm(exact)
        ours.append(np.linalg.norm(coeffs[r] - exact) / n)
        theirs.append(np.linalg.norm(c_np[r] - exact) / n)
    return np.array(ours), np.array(theirs)


def test_ill_conditioned_as_accurate_as_numpy():
    # Laguerre of degree 6 on [-1, 1]: cond ~ 1e7. Against the exact answer the fused QR is as
    # accurate as numpy's SVD over many curves. One curve's two errors are both of order cond x eps
    # and differ by luck (either one up to 17x the other on single curves here), so the claim is
    # about their spread: median and worst case. A solve through the normal equations (cond
    # squared) would miss it by orders of magnitude.
    x, y, w = _curves(48, 40, seed=6)
    f = polyfit.fit(*(torch.from_numpy(a) for a in (x, y)), 6, "laguerre", weight=torch.from_numpy(w))
    ours, theirs = _errors_against_exact(x, y, w, 6, "laguerre", f.coeffs.numpy())
    assert np.median(ours) <= 2 * np.median(theirs), (np.median(ours), np.median(theirs))
    assert max(ours) <= 4 * max(theirs), (max(ours), max(theirs))


@pytest.mark.parametrize("basis,degree", [("power", 5), ("power", 8), ("chebyshev", 8), ("legendre", 5),
                                          ("legendre", 10)])
def test_gram_route_as_accurate_as_numpy(basis, degree):
    # Power, Chebyshev and Legendre series in float64 go through the normal equations on the CPU
    # (csrc/lstsq.h, the Gram route) where their condition allows: for power series cond ~ 30 at
    # degree 5 and ~ 500 at degree 8 here. The normal equations alone would be off by cond^2 eps,
    # cond times numpy's error; with the refinement step the errors against the exact answer are
    # numpy's, as for QR.
    x, y, w = _curves(48, 40, seed=20 + degree)
    f = polyfit.fit(*(torch.from_numpy(a) for a in (x, y)), degree, basis, weight=torch.from_numpy(w))
    ours, theirs = _errors_against_exact(x, y, w, degree, basis, f.coeffs.numpy())
    assert np.median(ours) <= 2 * np.median(theirs), (np.median(ours), np.median(theirs))
    assert max(ours) <= 4 * max(theirs), (max(ours), max(theirs))


@pytest.mark.parametrize("basis", ["power", "chebyshev", "legendre"])
def test_fits_of_mixed_condition(device, basis):
    # Series of degree 6 on x in [-1, 1] (cond ~ 100 for power series) beside others on [2, 4]
    # (cond ~ 1e6 and more, too ill-conditioned for the normal equations even with a refinement
    # step), in whole SIMD groups of either kind and in groups that mix them: every curve is as
    # accurate as numpy's.
    x, y, w = _curves(40, 40, seed=21)
    ill = np.r_[np.zeros(16, bool), np.ones(8, bool), np.arange(16) % 3 == 0]
    x[ill] = 3 + x[ill]
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    f = polyfit.fit(t(x), t(y), 6, basis, weight=t(w))
    c_np, r_np = _numpy_fits(x, y, 6, basis, w)
    _assert_close_fits(f.coeffs, f.residuals, c_np, r_np, cond=_cond(x, w, 6, basis))


def test_matches_numpy_unweighted_shared_x(device, basis):
    x, y, _ = _curves(1, 50, seed=11, weighted=False)
    ys = y + np.random.default_rng(1).standard_normal((25, 50))
    f = polyfit.fit(torch.from_numpy(x[0]).to(device), torch.from_numpy(ys).to(device), 4, basis)
    c_np, r_np = _numpy_fits(np.broadcast_to(x, ys.shape), ys, 4, basis)
    _assert_close_fits(f.coeffs, f.residuals, c_np, r_np)


def test_batch_shapes_and_long_curves(device):
    # (2, 3) batch broadcast against a (3, N) weight; N = 5000 splits each curve into segments.
    x, y, w = _curves(6, 5000, seed=12, domain=DOMAIN)
    x, y = x.reshape(2, 3, 5000), y.reshape(2, 3, 5000)
    w = w[:3]
    f = polyfit.fit(*(torch.from_numpy(a).to(device) for a in (x, y)), 5, "legendre",
                    weight=torch.from_numpy(w).to(device), domain=DOMAIN)
    assert f.coeffs.shape == (2, 3, 6) and f.residuals.shape == (2, 3) and f.rank.shape == (2, 3)
    c_np, r_np = _numpy_fits(x.reshape(6, -1), y.reshape(6, -1), 5, "legendre",
                             np.broadcast_to(w, (2, 3, 5000)).reshape(6, -1), DOMAIN)
    _assert_close_fits(f.coeffs.reshape(6, -1), f.residuals.reshape(6), c_np, r_np)


def test_exact_data_and_call(device, basis):
    rng = np.random.default_rng(13)
    c_true = rng.standard_normal((8, 4))
    x = rng.uniform(-1, 1, (8, 30))
    y = np.stack([oracle.val(x[r], c_true[r], basis) for r in range(8)])
    f = polyfit.fit(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device), 3, basis)
    np.testing.assert_allclose(f.coeffs.cpu().numpy(), c_true, rtol=1e-10, atol=1e-10)
    assert f.residuals.abs().max() < 1e-20
    xn = torch.from_numpy(rng.uniform(-1, 1, (8, 5))).to(device)
    torch.testing.assert_close(f(xn), polyfit.polyval(xn, f.coeffs, basis))
    g = f.to(torch.float32)
    assert g.coeffs.dtype == torch.float32 and g.residuals.dtype == torch.float32 and g.rank.dtype == torch.int64
    assert g.degree == 3


def test_float32(device):
    x, y, w = _curves(50, 64, seed=14)
    t = lambda a: torch.from_numpy(a).to(device, torch.float32)  # noqa: E731
    f = polyfit.fit(t(x), t(y), 5, "chebyshev", weight=t(w))
    assert f.coeffs.dtype == torch.float32
    c_np, r_np = _numpy_fits(x, y, 5, "chebyshev", w)
    err = np.linalg.norm(f.coeffs.cpu().double().numpy() - c_np, axis=-1) / np.linalg.norm(c_np, axis=-1)
    assert err.max() < 1e-4


@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1e-25), (torch.float32, 1e-20), (torch.float32, 1e20),
                                         (torch.float64, 1e-200), (torch.float64, 1e-160), (torch.float64, 1e160),
                                         (torch.float64, 1e200)])
@pytest.mark.parametrize("basis", ["chebyshev", "power", "legendre"])
def test_weight_scale_leaves_coefficients_unchanged(device, dtype, scale, basis):
    # A common factor of the weights scales A and b alike; the coefficients do not move. The squares
    # of such weights leave the dtype's range (float32: (1e-20)^2 is subnormal, (1e20)^2 overflows),
    # so every solver path must scale its columns: the kernel's QR and the SVD of polyfit.reference;
    # the Gram route (float64) must leave such curves to QR (squares of 1e-160 are subnormal).
    x, y, w = _curves(20, 64, seed=16)
    c_np, _ = _numpy_fits(x, y, 5, basis, w)
    t = lambda a: torch.from_numpy(a).to(device, dtype)  # noqa: E731
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for name, coeffs in (("fit", polyfit.fit(t(x), t(y), 5, basis, weight=t(w * scale)).coeffs),
                         ("reference", reference.fit(t(x), t(y), 5, basis, t(w * scale))[0])):
        err = np.linalg.norm(coeffs.cpu().double().numpy() - c_np, axis=-1) / np.linalg.norm(c_np, axis=-1)
        assert err.max() < tol, f"{name}: relative error {err.max():.3g}"


def test_rank_deficient_matches_numpy(device):
    rng = np.random.default_rng(15)
    R, N, degree = 6, 20, 5
    x = rng.uniform(-1, 1, (R, N))
    y = rng.standard_normal((R, N))
    x[1] = rng.choice([-0.5, 0.1, 0.7], N)     # three distinct points: rank 3
    x[3] = 0.25                                  # one point: rank 1
    w = np.ones((R, N))
    w[4, 3:] = 0.0                               # three points left with weight: rank 3
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    with pytest.warns(polyfit.RankWarning, match="3 of 6 curves are rank deficient"):
        f = polyfit.fit(t(x), t(y), degree, "chebyshev", weight=t(w))
    assert f.rank.tolist() == [6, 3, 6, 1, 3, 6]
    for r in range(R):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c_np = np.polynomial.chebyshev.chebfit(x[r], y[r], degree, w=w[r])
        np.testing.assert_allclose(f.coeffs[r].cpu().numpy(), c_np, rtol=1e-7, atol=1e-9)
        fitted = np.polynomial.chebyshev.chebval(x[r], c_np)
        np.testing.assert_allclose(f.residuals[r].item(), np.sum((w[r] * (y[r] - fitted)) ** 2), rtol=1e-8,
                                   atol=1e-12)


def test_nan_curve_propagates(device):
    x, y, w = _curves(4, 16, seed=16)
    y[2, 5] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = polyfit.fit(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device), 3, "legendre")
    assert torch.isnan(f.coeffs[2]).all() and torch.isnan(f.residuals[2])
    keep = [0, 1, 3]
    c_np, r_np = _numpy_fits(x[keep], y[keep], 3, "legendre")
    _assert_close_fits(f.coeffs[keep], f.residuals[keep], c_np, r_np)


def test_empty_batch(device):
    f = polyfit.fit(torch.zeros(0, 10, device=device), torch.zeros(0, 10, device=device), 2)
    assert f.coeffs.shape == (0, 3) and f.residuals.shape == (0,)


def test_reference_matches_numpy():
    # The SVD reference is the fallback on other devices and the rank-deficient path: check it alone.
    x, y, w = _curves(20, 30, seed=17, domain=DOMAIN)
    c, r, k = reference.fit(torch.from_numpy(x), torch.from_numpy(y), 4, "hermite", torch.from_numpy(w), DOMAIN)
    c_np, r_np = _numpy_fits(x, y, 4, "hermite", w, DOMAIN)
    _assert_close_fits(c, r, c_np, r_np)
    assert (k == 5).all()


@pytest.mark.skipif(not COMPILED, reason="compiled ops not built")
def test_kernel_matches_reference_many_shapes():
    # Batch sizes around the SIMD width and the segment length, against the SVD reference.
    for R, N, degree in [(1, 7, 6), (31, 33, 2), (33, 64, 5), (65, 1025, 3), (3, 2049, 8)]:
        x, y, w = _curves(R, N, seed=R + N)
        args = [torch.from_numpy(a) for a in (x, y, w)]
        c, r, ill = torch.ops.polyfit.fit(args[0], args[1], args[2], degree, "chebyshev", None)
        cr, rr, _ = reference.fit(args[0], args[1], degree, "chebyshev", args[2])
        assert not ill.any()
        torch.testing.assert_close(c, cr, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(r, rr, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not COMPILED, reason="compiled ops not built")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_every_width_against_reference(dtype):
    # Each K + 1 up to the fused QR's limit (degree 10) has code of its own (csrc/lstsq.h,
    # qr_update_fused); wider fits take the generic QR. Every degree on both sides of the limit, R
    # around the lanes.
    for degree in range(0, 13):
        for R in (1, 9, 40):
            x, y, w = _curves(R, 3 * degree + 5, seed=100 * degree + R)
            args = [torch.from_numpy(a) for a in (x, y, w)]
            c, r, ill = torch.ops.polyfit.fit(*(a.to(dtype) for a in args), degree, "legendre", None)
            cr, rr, _ = reference.fit(args[0], args[1], degree, "legendre", args[2])
            assert not ill.any()
            tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-3, atol=2e-3)
            torch.testing.assert_close(c.double(), cr, **tol, msg=f"degree {degree}, {R} curves")
            torch.testing.assert_close(r.double(), rr, **tol, msg=f"degree {degree}, {R} curves")


@pytest.mark.skipif(not COMPILED, reason="compiled ops not built")
def test_opcheck(device):
    x, y, w = (torch.from_numpy(a).to(device) for a in _curves(5, 12, seed=18))
    torch.library.opcheck(torch.ops.polyfit.fit.default, (x, y, w, 3, "chebyshev", None))
    torch.library.opcheck(torch.ops.polyfit.fit.default, (x[0], y, None, 2, "power", [0.0, 2.0]))


def test_requires_grad_uses_differentiable_path():
    x, y, w = (torch.from_numpy(a) for a in _curves(3, 20, seed=19))
    y = y.clone().requires_grad_()
    f = polyfit.fit(x, y, 3, "power", weight=w)
    f.coeffs.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()
    # coefficients are linear in y: the gradient of sum(coeffs) is that of the pseudo-inverse rows.
    V = torch.from_numpy(np.stack([oracle.vander(x[r].numpy(), 3, "power") for r in range(3)]))
    A = V * w.unsqueeze(-1)
    pinv = torch.linalg.pinv(A)
    want = pinv.sum(-2) * w
    torch.testing.assert_close(y.grad, want, rtol=1e-8, atol=1e-10)


def test_bad_inputs():
    x, y, w = (torch.from_numpy(a) for a in _curves(3, 10, seed=20))
    with pytest.raises(TypeError, match="x must be"):
        polyfit.fit(x.long(), y, 2)
    with pytest.raises(TypeError, match="y must be"):
        polyfit.fit(x, y.int(), 2)
    with pytest.raises(TypeError, match="weight must be"):
        polyfit.fit(x, y, 2, weight=[1.0] * 10)
    with pytest.raises(ValueError, match="needs at least degree \\+ 1 = 11 points"):
        polyfit.fit(x, y, 10)
    with pytest.raises(ValueError, match="degree must be"):
        polyfit.fit(x, y, -1)
    with pytest.raises(TypeError, match="degree must be an integer"):
        polyfit.fit(x, y, 2.5)
    with pytest.raises(ValueError, match="y must have as many points"):
        polyfit.fit(x, y[:, :5], 2)
    with pytest.raises(ValueError, match="weight must have as many points"):
        polyfit.fit(x, y, 2, weight=w[:, :4])
    with pytest.raises(ValueError, match="do not broadcast"):
        polyfit.fit(x, y[:2], 2)
    with pytest.raises(ValueError, match="basis"):
        polyfit.fit(x, y, 2, "spline")
    with pytest.raises(ValueError, match="domain"):
        polyfit.fit(x, y, 2, domain=(1, 1))
    with pytest.raises(ValueError, match="x must have at least one dimension"):
        polyfit.fit(x[0, 0], y, 2)
    if COMPILED:  # the op's own checks name the argument too
        with pytest.raises(ValueError, match="needs at least"):
            torch.ops.polyfit.fit(x, y, None, 10, "power", None)
        with pytest.raises(ValueError, match="do not broadcast"):
            torch.ops.polyfit.fit(x, y[:2], None, 2, "power", None)


def test_hypothesis_batches_against_reference():
    # Random batch shapes, N around the SIMD width, degrees, bases, domains and weights.
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=40, deadline=None)
    @hypothesis.given(R=st.integers(1, 45), extra=st.integers(0, 40), degree=st.integers(0, 7),
                      basis=st.sampled_from(polyfit.BASES), mapped=st.booleans(), weighted=st.booleans(),
                      shared_x=st.booleans())
    def check(R, extra, degree, basis, mapped, weighted, shared_x):
        N = degree + 1 + extra
        domain = DOMAIN if mapped else None
        x, y, w = _curves(R, N, seed=R * 7 + N, domain=domain, weighted=weighted,
                          lo_hi=(0.0, 6.0) if basis == "laguerre" else (-1.0, 1.0))
        if shared_x:
            x = x[0]
        t = [torch.from_numpy(a) if a is not None else None for a in (x, y, w)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", polyfit.RankWarning)  # tiny N can be near-deficient
            f = polyfit.fit(t[0], t[1], degree, basis, weight=t[2], domain=domain)
        c, r, k = reference.fit(t[0], t[1], degree, basis, t[2], domain)
        assert f.coeffs.shape == (R, degree + 1)
        torch.testing.assert_close(f.rank, k)
        ok = k == degree + 1
        scale = c.abs().amax(-1, keepdim=True).clamp_min(1.0)
        cond = _cond(np.broadcast_to(x, y.shape), w, degree, basis, domain)
        tol = torch.from_numpy(np.maximum(1e-8, 100 * cond * np.finfo(np.float64).eps)).unsqueeze(-1)
        assert ((f.coeffs - c).abs()[ok] <= (tol * scale)[ok]).all()
        # Residuals of (near-)interpolations are rounding noise: fitted values agree to tol |wy|,
        # so sums of squares agree to N (tol |wy|)^2 beyond their relative agreement.
        wy = t[1].abs() if t[2] is None else (t[2] * t[1]).abs()
        noise = N * (tol.squeeze(-1) * wy.amax(-1)) ** 2
        assert ((f.residuals - r).abs() <= 1e-7 * r.abs() + noise + 1e-12).all(), (f.residuals, r, noise)

    check()
