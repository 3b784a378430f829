"""polyfit.nn modules: forward semantics, torch.nn conventions (factory kwargs, reset_parameters,
extra_repr, state_dict round-trip), and training."""

import io

import pytest
import torch

import polyfit
from polyfit import reference


def test_polynomial(device):
    m = polyfit.nn.Polynomial(3, "legendre", domain=(0, 4), device=device, dtype=torch.float64)
    assert m.coeffs.shape == (4,) and m.coeffs.dtype == torch.float64 and m.coeffs.device.type == device.type
    assert m.coeffs.abs().max() <= 0.5  # uniform in +-1/sqrt(4)
    x = torch.linspace(0, 4, 11, device=device, dtype=torch.float64)
    torch.testing.assert_close(m(x), reference.polyval(x, m.coeffs.detach(), "legendre", domain=(0, 4)))
    assert repr(m) == "Polynomial(degree=3, basis='legendre', domain=(0.0, 4.0))"
    m(x).sum().backward()
    assert m.coeffs.grad is not None


def test_polyfeatures(device):
    m = polyfit.nn.PolyFeatures(4, "hermite_e")
    x = torch.randn(3, 5, device=device)
    assert m(x).shape == (3, 5, 5)
    torch.testing.assert_close(m(x), reference.features(x, 4, "hermite_e"))
    r = polyfit.nn.PolyFeatures(2, increasing=False)
    torch.testing.assert_close(r(x), reference.features(x, 2, "power").flip(-1))
    assert "increasing=False" in repr(r) and list(m.parameters()) == []


def test_polylinear_module_conventions(device):
    torch.manual_seed(0)
    m = polyfit.nn.PolyLinear(64, 32, 8, bias=True, device=device, dtype=torch.float64)
    assert m.weight.shape == (32, 64, 9) and m.bias.shape == (32,)
    assert m.weight.dtype == torch.float64 and m.weight.device.type == device.type
    assert m.weight.permute(0, 2, 1).is_contiguous()  # degree-major storage
    assert abs(m.weight.std().item() - 1 / (64 * 9)) < 0.05 / (64 * 9)  # ChebyKAN's init
    assert (m.bias == 0).all()
    assert repr(m) == ("PolyLinear(in_features=64, out_features=32, degree=8, basis='chebyshev', bias=True, "
                       "input_map='tanh')")
    x = torch.randn(5, 64, device=device, dtype=torch.float64)
    torch.testing.assert_close(m(x), reference.polylinear(x, m.weight, m.bias, "chebyshev", "tanh"))
    m.reset_parameters()
    assert m.weight.permute(0, 2, 1).is_contiguous()
    assert polyfit.nn.PolyLinear(4, 3, 2).bias is None


def test_state_dict_round_trip(device):
    torch.manual_seed(1)
    a = polyfit.nn.PolyLinear(6, 4, 3, basis="legendre", bias=True, input_map=None, device=device)
    b = polyfit.nn.PolyLinear(6, 4, 3, basis="legendre", bias=True, input_map=None, device=device)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    x = torch.randn(3, 6, device=device)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    # a contiguous (out, in, K) checkpoint loads into the degree-major parameter
    b.load_state_dict({k: v.contiguous() for k, v in a.state_dict().items()})
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert b.weight.permute(0, 2, 1).is_contiguous()
    p = polyfit.nn.Polynomial(2, device=device)
    q = polyfit.nn.Polynomial(2, device=device)
    q.load_state_dict(p.state_dict())
    torch.testing.assert_close(p.coeffs, q.coeffs)
    c = a.to(torch.float64)
    assert c.weight.dtype == torch.float64 and c.weight.permute(0, 2, 1).is_contiguous()


def test_no_input_features_gives_the_bias(device):
    # As torch.nn.Linear(0, n): an empty sum, so y is the bias for every row, and autograd still runs.
    m = polyfit.nn.PolyLinear(0, 3, 4, bias=True, device=device, dtype=torch.float64)
    with torch.no_grad():
        m.bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
    x = torch.rand(5, 0, device=device, dtype=torch.float64, requires_grad=True)
    y = m(x)
    torch.testing.assert_close(y, m.bias.detach().expand(5, 3))
    y.sum().backward()
    torch.testing.assert_close(m.bias.grad, torch.full((3,), 5.0, device=device, dtype=torch.float64))
    assert x.grad.shape == (5, 0) and m.weight.grad.shape == (3, 0, 5)


def test_bad_module_args():
    with pytest.raises(ValueError, match="input_map"):
        polyfit.nn.PolyLinear(3, 2, 2, input_map="sigmoid")
    with pytest.raises(ValueError, match="basis"):
        polyfit.nn.PolyLinear(3, 2, 2, basis="fourier")
    with pytest.raises(ValueError, match="degree"):
        polyfit.nn.Polynomial(-1)
    with pytest.raises(TypeError, match="in_features"):
        polyfit.nn.PolyLinear(3.5, 2, 2)
    with pytest.raises(ValueError, match="domain"):
        polyfit.nn.PolyFeatures(2, domain=(1, 1))
    with pytest.raises(TypeError, match="increasing"):
        polyfit.nn.PolyFeatures(2, increasing="no")


def test_kan_trains():
    # A two-layer KAN learns a smooth 2-D function; the loss must drop by a large factor.
    torch.manual_seed(2)
    model = torch.nn.Sequential(polyfit.nn.PolyLinear(2, 8, 5), polyfit.nn.PolyLinear(8, 1, 5, bias=True))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    x = torch.rand(512, 2) * 2 - 1
    y = (torch.sin(2 * x[:, :1]) * x[:, 1:] + 0.5 * x[:, 1:] ** 2)
    losses = []
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
