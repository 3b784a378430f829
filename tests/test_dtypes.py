"""float32, bfloat16 and float16 against the float64 oracle, and dtype promotion."""

import numpy as np
import pytest
import torch

import polyfit
import oracle

# Per dtype: (unit roundoff of the output, of the compute type). Half types compute in float32.
ROUNDING = {
    torch.float32: (2.0**-24, 2.0**-24),
    torch.bfloat16: (2.0**-8, 2.0**-24),
    torch.float16: (2.0**-11, 2.0**-24),
}
LOW_PRECISION = list(ROUNDING)


def _check(actual, expected, bound, dtype):
    """|actual - expected| <= bound where the exact value is representable; overflow where it is not."""
    actual = actual.double().cpu().numpy()
    over = np.abs(expected) > torch.finfo(dtype).max
    assert np.all(np.isinf(actual[over]) & (np.sign(actual[over]) == np.sign(expected[over])))
    err = np.abs(actual[~over] - expected[~over])
    bound = np.broadcast_to(bound, expected.shape)[~over]
    assert np.all(err <= bound), f"max error ratio {np.max(err / bound):.3g}"


def _inputs(basis, dtype, degree, n=400, device="cpu"):
    gen = torch.Generator().manual_seed(degree)
    lo, hi = (0.0, 4.0) if basis == "laguerre" else (-1.0, 1.0)
    x = (torch.rand(n, generator=gen, dtype=torch.float64) * (hi - lo) + lo).to(dtype)
    c = torch.randn(degree + 1, generator=gen, dtype=torch.float64).to(dtype)
    # the oracle sees exactly the rounded inputs
    return x.to(device), c.to(device), x.double().numpy(), c.double().numpy()


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("degree", [0, 3, 8, 16])
def test_polyval_low_precision_against_float64(device, basis, dtype, degree):
    x, c, xn, cn = _inputs(basis, dtype, degree, device=device)
    y = polyfit.polyval(x, c, basis)
    assert y.dtype == dtype
    out_u, comp_u = ROUNDING[dtype]
    expected = oracle.val(xn, cn, basis)
    bound = out_u * np.abs(expected) + 64 * (degree + 1) * comp_u * oracle.abs_val(xn, cn, basis) + 1e-30
    _check(y, expected, bound, dtype)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("increasing", [True, False])
# float32 rows leave the AVX-512 kernel by chains of permutes up to 9 columns (each K its own
# unrolled code), by 16 x 16 transposes (16 columns at a time) beyond: every K up to 10, and both
# sides of 16 and 32 columns
@pytest.mark.parametrize("degree", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 20, 32])
def test_features_low_precision_against_float64(device, basis, dtype, degree, increasing):
    x, _, xn, _ = _inputs(basis, dtype, degree, device=device)
    V = polyfit.features(x, degree, basis, increasing=increasing)
    assert V.dtype == dtype
    out_u, comp_u = ROUNDING[dtype]
    expected = oracle.vander(xn, degree, basis)
    scale = np.maximum.accumulate(np.abs(expected), axis=1)
    if not increasing:
        expected, scale = expected[:, ::-1], scale[:, ::-1]
    bound = out_u * np.abs(expected) + 64 * (degree + 1) * comp_u * scale + 1e-30
    _check(V, expected, bound, dtype)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_gradients_low_precision_against_float64(device, basis, dtype):
    degree = 6
    x, c, xn, cn = _inputs(basis, dtype, degree, n=300, device=device)
    x.requires_grad_(True)
    c.requires_grad_(True)
    g = torch.randn(300, generator=torch.Generator().manual_seed(1)).to(dtype)
    gn = g.double().numpy()
    y = polyfit.polyval(x, c, basis)
    gx, gc = torch.autograd.grad(y, (x, c), g.to(device))
    assert gx.dtype == dtype and gc.dtype == dtype
    out_u, comp_u = ROUNDING[dtype]
    # grad x = g * p'(x)
    dexp = gn * oracle.val(xn, cn, basis, derivative=1)
    dscale = np.abs(gn) * (oracle.abs_val(xn, np.abs(oracle._fn(basis, "der")(cn, 1)), basis) + np.abs(dexp))
    err = np.abs(gx.double().cpu().numpy() - dexp)
    assert np.all(err <= out_u * np.abs(dexp) + 256 * comp_u * dscale + 1e-30)
    # grad c = V^T g, a sum over 300 points accumulated in float32
    V = oracle.vander(xn, degree, basis)
    cexp = V.T @ gn
    err = np.abs(gc.double().cpu().numpy() - cexp)
    assert np.all(err <= out_u * np.abs(cexp) + 300 * comp_u * (np.abs(V).T @ np.abs(gn)))


# Power-basis coefficient gradients whose terms g x^k go below float32's smallest normal: on AVX-512
# such chains run scaled by a power of two and are scaled back per moment. "uniform": x in [-1, 1]
# and g ~ N(0, 1) over several chunks, where the lifts stay within range; "extreme": terms from below
# the smallest normal up to 2^112, where a chunk's lifted chains overflow and the chunk is redone
# with lifts bounded by its largest |g| and |x|. Every backend must agree with float64 to float32
# rounding; a term below the smallest normal may be off by its subnormal rounding (2^-149 per step
# of a chain) where a backend does not scale.
@pytest.mark.parametrize("data", ["uniform", "extreme"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_power_coeff_gradient_where_terms_go_subnormal(device, dtype, data):
    degree = 16
    rng = np.random.default_rng(11)
    if data == "uniform":
        n = 30000
        x = torch.tensor(rng.uniform(-1, 1, n), dtype=dtype)
        g = torch.tensor(rng.standard_normal(n), dtype=dtype)
    else:
        n = 2000
        x = torch.tensor(rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(-12, 2, n), dtype=dtype)
        g = torch.tensor(rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(-40, 80, n), dtype=dtype)
    c = torch.zeros(degree + 1, dtype=dtype, device=device, requires_grad=True)
    (gc,) = torch.autograd.grad(polyfit.polyval(x.to(device), c), c, g.to(device))
    xn, gn = x.double().numpy(), g.double().numpy()
    V = oracle.vander(xn, degree, "power")
    expected = V.T @ gn
    out_u, comp_u = ROUNDING[dtype]
    bound = out_u * np.abs(expected) + n * comp_u * (np.abs(V).T @ np.abs(gn)) + n * (degree + 1) * 2.0**-149
    _check(gc, expected, bound, dtype)


# Power-basis coefficient gradients where x^2 overflows float32 (|x| >= 2^64) but the low moments
# sum g x^k do not (g ~ 2^-100): a kernel that steps the powers by x^2 must not turn those into inf,
# nor the zeros in g into NaN (0 * inf); the CPU kernel redoes such a chunk with plain steps.
@pytest.mark.parametrize("degree", [2, 3, 5, 12])
def test_power_coeff_gradient_where_x_squared_overflows(device, degree):
    rng = np.random.default_rng(degree)
    n = 3000
    x = torch.tensor(2.0 ** rng.uniform(64, 70, n), dtype=torch.float32)
    g = torch.tensor(2.0 ** rng.uniform(-100, -90, n), dtype=torch.float32)
    g[::7] = 0
    c = torch.zeros(degree + 1, device=device, requires_grad=True)
    (gc,) = torch.autograd.grad(polyfit.polyval(x.to(device), c), c, g.to(device))
    xn, gn = x.double().numpy(), g.double().numpy()
    V = oracle.vander(xn, degree, "power")
    expected = V.T @ gn  # all terms positive: no cancellation; from x^4 on beyond float32
    assert np.all(np.isfinite(expected[:4])) and np.all(np.abs(expected[4:]) > torch.finfo(torch.float32).max)
    u = ROUNDING[torch.float32][1]
    _check(gc, expected, n * u * np.abs(expected), torch.float32)


@pytest.mark.parametrize("increasing", [True, False])
@pytest.mark.parametrize("domain", [None, (-1.0, 4.0)])
# Rows of one point each, float32: on AVX-512, rows of up to 9 coefficients pass through registers
# (each K its own unrolled code), longer ones through a tile (16 x 16 transposes, and a gather for a
# last column: degree 16); 400 rows are three full blocks and a part.
@pytest.mark.parametrize("degree", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16])
def test_one_point_rows_float32_against_float64(device, basis, degree, domain, increasing):
    x, _, _, _ = _inputs(basis, torch.float32, degree, device=device)
    if domain is not None:
        x = x * 5 - 1  # spread over the domain and past its ends
    xn = x.double().cpu().numpy()
    K = degree + 1
    g = torch.randn(len(xn), K, generator=torch.Generator().manual_seed(K)).to(device)
    gn = g.double().cpu().numpy()
    u = ROUNDING[torch.float32][0]
    cols = range(K) if increasing else range(K - 1, -1, -1)  # column j of the output holds P_cols[j]
    unit = np.eye(K)

    # A per-row series: x (R, 1) with coeffs (R, K), each point its own polynomial.
    y = polyfit.polyval(x[:, None], g, basis, domain=domain)[:, 0]
    V = oracle.vander(xn, degree, basis, domain)
    expected = np.sum(gn * V, axis=1)
    bound = u * np.abs(expected) + 64 * K * u * np.sum(np.abs(gn * V), axis=1)
    _check(y, expected, bound, torch.float32)

    # features' x-gradient: row r of the upstream gradient is a series in x[r], differentiated.
    xg = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(polyfit.features(xg, degree, basis, domain=domain, increasing=increasing), xg, g)
    dP = np.stack([oracle.val(xn, unit[k], basis, domain, derivative=1) for k in cols], axis=1)
    expected = np.sum(gn * dP, axis=1)
    # rounding of the derivative series: its coefficients are sums of up to K of the g's, times up to 2K
    scale = np.sum(np.abs(gn), axis=1, keepdims=True) * 2 * K * np.abs(oracle.vander(xn, degree, basis, domain))
    bound = u * np.abs(expected) + 64 * K * u * (np.sum(scale, axis=1) + np.sum(np.abs(gn * dP), axis=1))
    _check(gx, expected, bound, torch.float32)


@pytest.mark.parametrize("x_dtype,c_dtype,expected", [
    (torch.float16, torch.float32, torch.float32),
    (torch.float32, torch.float64, torch.float64),
    (torch.bfloat16, torch.float16, torch.float32),
    (torch.float64, torch.float16, torch.float64),
])
def test_output_dtype_is_promoted_and_gradients_keep_input_dtypes(device, x_dtype, c_dtype, expected):
    x = torch.rand(10, device=device).to(x_dtype).requires_grad_()
    c = torch.randn(4, device=device).to(c_dtype).requires_grad_()
    y = polyfit.polyval(x, c, "chebyshev")
    assert y.dtype == expected
    ref = oracle.val(x.detach().double().cpu().numpy(), c.detach().double().cpu().numpy(), "chebyshev")
    np.testing.assert_allclose(y.detach().double().cpu().numpy(), ref, rtol=2e-3, atol=2e-3)
    y.sum().backward()
    assert x.grad.dtype == x_dtype and c.grad.dtype == c_dtype


# bfloat16 results must be the float32 computation rounded exactly as torch rounds (to nearest, ties
# to even, subnormals kept, NaN stays NaN), whichever conversion a CPU kernel uses: AVX-512 cores
# with AVX512_BF16 round whole vectors in one instruction, which flushes subnormals, so vectors
# holding one must take torch's path. 5000 points: full vectors and a tail.
def test_bfloat16_results_round_as_torch_rounds(device):
    gen = torch.Generator().manual_seed(5)
    bits = lambda t: t.cpu().view(torch.int16)
    x = (torch.rand(5000, generator=gen) * 4 - 2).to(torch.bfloat16).to(device)
    c = torch.randn(9, generator=gen).to(torch.bfloat16).to(device)
    expected = polyfit.polyval(x.float(), c.float()).to(torch.bfloat16)
    assert torch.equal(bits(polyfit.polyval(x, c)), bits(expected))

    # 1 + k 2^-8 for odd k is a tie between two bfloat16 neighbours: even mantissas win
    tx = ((torch.arange(5000) % 128 * 2 + 1) * 2.0**-8).to(torch.bfloat16).to(device)  # exact: 8 bits
    one = torch.ones(2, dtype=torch.bfloat16, device=device)
    tied = (tx.float() + 1).to(torch.bfloat16)
    assert not torch.equal(tied.float(), tx.float() + 1)  # the sums do need rounding
    assert torch.equal(bits(polyfit.polyval(tx, one)), bits(tied))

    # subnormal, infinite and NaN results inside full vectors: 0 + 1 x is x itself
    special = torch.tensor([1e-39, -3e-40, 9e-41, 1.0, float("inf"), -float("inf"), float("nan"), 3e38, -2.0, 0.0])
    sx = special.repeat(500).to(torch.bfloat16).to(device)
    y = polyfit.polyval(sx, torch.tensor([0.0, 1.0], dtype=torch.bfloat16, device=device))
    nan = torch.isnan(sx.cpu())
    assert torch.equal(torch.isnan(y.cpu()), nan)
    assert torch.equal(bits(y)[~nan], bits(sx)[~nan])

    # features, and the x-gradient of the backward
    assert torch.equal(bits(polyfit.features(x, 8)), bits(polyfit.features(x.float(), 8).to(torch.bfloat16)))
    g = torch.randn(5000, generator=gen).to(torch.bfloat16).to(device)
    xg = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(polyfit.polyval(xg, c), xg, g)
    xf = x.float().requires_grad_(True)
    (gxf,) = torch.autograd.grad(polyfit.polyval(xf, c.float()), xf, g.float())
    assert torch.equal(bits(gx), bits(gxf.to(torch.bfloat16)))
