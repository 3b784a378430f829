"""Every bad input of the contract raises a clear error that names the argument."""

import pytest
import torch

import polyfit
from polyfit import _backend

X = torch.linspace(-1, 1, 5)
C = torch.tensor([1.0, 2.0, 3.0])

CASES = [
    # (call, exception, words the message must contain)
    (lambda: polyfit.polyval([0.1, 0.2], C), TypeError, ["x", "torch.Tensor"]),
    (lambda: polyfit.polyval(torch.arange(5), C), TypeError, ["x", "floating-point"]),
    (lambda: polyfit.polyval(X, torch.tensor([1, 2, 3])), TypeError, ["coeffs", "floating-point"]),
    (lambda: polyfit.polyval(X.to(torch.complex64), C), TypeError, ["x", "floating-point"]),
    (lambda: polyfit.polyval(X, torch.tensor(2.0)), ValueError, ["coeffs", "0-dim"]),
    (lambda: polyfit.polyval(X, torch.empty(0)), ValueError, ["coeffs", "non-empty"]),
    (lambda: polyfit.polyval(X, torch.empty(3, 0)), ValueError, ["coeffs", "non-empty"]),
    (lambda: polyfit.polyval(torch.rand(4, 5), torch.rand(3, 2)), ValueError, ["coeffs", "batch shape", "broadcast"]),
    (lambda: polyfit.polyval(torch.tensor(0.5), torch.rand(3, 2)), ValueError, ["x", "0-dim"]),
    (lambda: polyfit.polyval(X, C, "chebychev"), ValueError, ["basis", "chebychev"]),
    (lambda: polyfit.polyval(X, C, domain=(1.0, 1.0)), ValueError, ["domain", "a != b"]),
    (lambda: polyfit.polyval(X, C, domain=(0.0, 1.0, 2.0)), ValueError, ["domain", "pair"]),
    (lambda: polyfit.polyval(X, C, domain=(0.0, float("inf"))), ValueError, ["domain", "finite"]),
    (lambda: polyfit.polyval(X, C, domain="ab"), TypeError, ["domain"]),
    (lambda: polyfit.polyval(X, C, domain=3.0), TypeError, ["domain"]),
    (lambda: polyfit.polyval(X, C, derivative=-1), ValueError, ["derivative"]),
    (lambda: polyfit.polyval(X, C, derivative=1.5), TypeError, ["derivative", "integer"]),
    (lambda: polyfit.polyval(X, C.to("meta")), ValueError, ["same device", "x", "coeffs"]),
    (lambda: polyfit.features(X, -1), ValueError, ["degree"]),
    (lambda: polyfit.features(X, 2.5), TypeError, ["degree", "integer"]),
    (lambda: polyfit.features(X, True), TypeError, ["degree"]),
    (lambda: polyfit.features(X, "3"), TypeError, ["degree"]),
    (lambda: polyfit.features(torch.arange(3), 2), TypeError, ["x", "floating-point"]),
    (lambda: polyfit.features(X, 2, "hermit"), ValueError, ["basis"]),
    (lambda: polyfit.features(X, 2, domain=(2.0, 2.0)), ValueError, ["domain"]),
    (lambda: polyfit.features(X, 2, increasing="no"), TypeError, ["increasing", "bool"]),  # bool("no") is True
    (lambda: polyfit.features(X, 2, increasing=None), TypeError, ["increasing", "bool"]),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_public_api_errors(case):
    call, exc, words = CASES[case]
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), f"{w!r} not in {info.value}"


OP_CASES = [
    (lambda: torch.ops.polyfit.polyval(torch.arange(3), C, "power", None, 0), TypeError, ["x", "floating-point"]),
    (lambda: torch.ops.polyfit.polyval(X, C.int(), "power", None, 0), TypeError, ["coeffs"]),
    (lambda: torch.ops.polyfit.polyval(X, C, "cheb", None, 0), ValueError, ["basis", "cheb"]),
    (lambda: torch.ops.polyfit.polyval(X, C, "power", [1.0, 1.0], 0), ValueError, ["domain"]),
    (lambda: torch.ops.polyfit.polyval(X, C, "power", [1.0], 0), ValueError, ["domain", "pair"]),
    (lambda: torch.ops.polyfit.polyval(X, C, "power", None, -2), ValueError, ["derivative"]),
    (lambda: torch.ops.polyfit.polyval(X, torch.empty(0), "power", None, 0), ValueError, ["coeffs"]),
    (lambda: torch.ops.polyfit.polyval(torch.rand(4, 5), torch.rand(3, 2), "power", None, 0), ValueError,
     ["coeffs", "broadcast"]),
    (lambda: torch.ops.polyfit.features(X, -3, "power", None, True), ValueError, ["degree"]),
    (lambda: torch.ops.polyfit.polyval_backward(torch.rand(7), X, C, "power", None, 0, [True, True]), ValueError,
     ["grad"]),
]


@pytest.mark.skipif(not _backend.STATE.loaded, reason="polyfit's compiled ops are not loaded")
@pytest.mark.parametrize("case", range(len(OP_CASES)))
def test_direct_op_errors(case):
    call, exc, words = OP_CASES[case]
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), f"{w!r} not in {info.value}"
