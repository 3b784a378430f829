"""gradcheck/gradgradcheck on every op and layout, opcheck on every op, and torch.compile."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.utils._python_dispatch import TorchDispatchMode

import polyfit
from polyfit import _backend

compiled = pytest.mark.skipif(not _backend.STATE.loaded, reason="polyfit's compiled ops are not loaded")

LAYOUTS = {
    # name: (x shape, coeffs shape)
    "shared": ((11,), (5,)),
    "shared_2d_x": ((3, 4), (4,)),
    "per_row": ((3, 6), (3, 5)),
    "broadcast_x": ((6,), (2, 3, 4)),
    "broadcast_both": ((2, 1, 5), (1, 3, 4)),
}


def _leaf(shape, device, lo=-1.0, hi=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(device).requires_grad_()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("domain", [None, (-2.0, 3.0)])
def test_polyval_gradcheck_and_gradgradcheck(device, basis, layout, domain):
    xs, cs = LAYOUTS[layout]
    x = _leaf(xs, device, -2.0, 3.0)
    c = _leaf(cs, device, seed=1)
    f = lambda x, c: polyfit.polyval(x, c, basis, domain=domain)  # noqa: E731
    assert gradcheck(f, (x, c))
    assert gradgradcheck(f, (x, c))


@pytest.mark.parametrize("derivative", [1, 2])
def test_polyval_derivative_argument_gradcheck(device, basis, derivative):
    x = _leaf((3, 7), device)
    c = _leaf((3, 6), device, seed=2)
    f = lambda x, c: polyfit.polyval(x, c, basis, domain=(-1.5, 1.0), derivative=derivative)  # noqa: E731
    assert gradcheck(f, (x, c))
    assert gradgradcheck(f, (x, c))


@pytest.mark.parametrize("increasing", [True, False])
@pytest.mark.parametrize("domain", [None, (0.0, 2.0)])
def test_features_gradcheck_and_gradgradcheck(device, basis, increasing, domain):
    x = _leaf((4, 3), device, 0.0, 2.0)
    f = lambda x: polyfit.features(x, 6, basis, domain=domain, increasing=increasing)  # noqa: E731
    assert gradcheck(f, (x,))
    assert gradgradcheck(f, (x,))


def test_third_order_derivatives(device, basis):
    # Gradients of any order: the third x-derivative through three nested autograd.grad calls
    # equals the derivative=3 series, and the mixed x-x-coeffs derivative passes gradcheck.
    x = _leaf((9,), device)
    c = _leaf((7,), device, seed=3)
    y = polyfit.polyval(x, c, basis)
    (d1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x, create_graph=True)
    (d3,) = torch.autograd.grad(d2.sum(), x, create_graph=True)
    torch.testing.assert_close(d3, polyfit.polyval(x, c, basis, derivative=3))

    def second_derivative(x, c):
        y = polyfit.polyval(x, c, basis)
        (d1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        (d2,) = torch.autograd.grad(d1.sum(), x, create_graph=True)
        return d2

    assert gradcheck(second_derivative, (x, c))


# ---------------------------------------------------------------------------------------------
# torch.library.opcheck: schema, fake kernels, autograd registration, AOT dispatch.


def _op_cases(device):
    x = torch.rand(3, 5, dtype=torch.float64, device=device)
    c1 = torch.randn(4, dtype=torch.float64, device=device)
    c2 = torch.randn(3, 4, dtype=torch.float64, device=device)
    g = torch.randn(3, 5, dtype=torch.float64, device=device)
    dom = [-1.0, 2.0]
    ops = torch.ops.polyfit
    return [
        (ops.features.default, (x, 4, "legendre", dom, True)),
        (ops.features.default, (x.t(), 3, "hermite", None, False)),
        (ops.polyval.default, (x, c1, "chebyshev", dom, 0)),
        (ops.polyval.default, (x, c2, "laguerre", None, 2)),
        (ops.polyval_backward.default, (g, x, c2, "power", dom, 1, [True, True])),
        (ops.polyval_backward.default, (g, x, c1, "hermite_e", None, 0, [True, False])),
        (ops.polyval_backward.default, (g, x, c1, "chebyshev", None, 0, [False, True])),
    ]


@compiled
@pytest.mark.parametrize("case", range(7))
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, case, requires_grad):
    op, args = _op_cases(device)[case]
    args = tuple(a.clone().requires_grad_(requires_grad) if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(op, args)


@compiled
def test_every_polyfit_op_is_opchecked():
    names = {n.split("::")[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names() if n.startswith("polyfit::")}
    covered = {op._schema.name.split("::")[1] for op, _ in _op_cases("cpu")}
    # _cpu_output_cache takes and returns no tensors (test_output_cache.py)
    assert names <= covered | {"polylinear", "polylinear_backward", "fit", "_cpu_output_cache"}, names - covered


# ---------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True): forward and backward equal eager, with no graph break.


@pytest.mark.parametrize("layout", ["shared", "per_row"])
def test_compile_fullgraph_forward_backward(device, basis, layout):
    torch._dynamo.reset()
    xs, cs = LAYOUTS[layout]
    x = _leaf(xs, device).float().detach().requires_grad_()
    c = _leaf(cs, device, seed=1).float().detach().requires_grad_()

    def loss(x, c):
        return (polyfit.polyval(x, c, basis, domain=(-1.0, 1.0)) ** 2).sum() + polyfit.features(x, 3, basis).sum()

    eager = loss(x, c)
    gx, gc = torch.autograd.grad(eager, (x, c))
    compiled_loss = torch.compile(loss, fullgraph=True, backend="aot_eager" if device.type == "cpu" else "inductor")
    got = compiled_loss(x, c)
    cgx, cgc = torch.autograd.grad(got, (x, c))
    torch.testing.assert_close(got, eager)
    torch.testing.assert_close(cgx, gx)
    torch.testing.assert_close(cgc, gc)


@pytest.mark.inductor
def test_compile_inductor_fullgraph(device):
    torch._dynamo.reset()
    x = torch.rand(64, device=device, requires_grad=True)
    c = torch.randn(6, device=device, requires_grad=True)

    def f(x, c):
        y = polyfit.polyval(torch.sin(x), c, "chebyshev")
        return (y * y).mean()

    eager = f(x, c)
    eg = torch.autograd.grad(eager, (x, c))
    got = torch.compile(f, fullgraph=True)(x, c)
    cg = torch.autograd.grad(got, (x, c))
    torch.testing.assert_close(got, eager)
    for a, b in zip(cg, eg):
        torch.testing.assert_close(a, b)


@compiled
def test_direct_op_calls_are_differentiable(device):
    # The op registry itself carries the derivative (torch.export and direct callers).
    x = _leaf((5,), device)
    c = _leaf((4,), device, seed=1)
    assert gradcheck(lambda x, c: torch.ops.polyfit.polyval(x, c, "legendre", None, 0), (x, c))
    assert gradgradcheck(lambda x: torch.ops.polyfit.features(x, 3, "chebyshev", None, True), (x,))


@compiled
def test_torch_export(device):
    class M(torch.nn.Module):
        def forward(self, x, c):
            return polyfit.polyval(x, c, "hermite") + polyfit.features(x, 2).sum(-1)

    x = torch.rand(8, device=device)
    c = torch.randn(3, device=device)
    ep = torch.export.export(M(), (x, c))
    torch.testing.assert_close(ep.module()(x, c), M()(x, c))
    assert any("polyfit" in str(n.target) for n in ep.graph.nodes)


@pytest.mark.parametrize("impl", ["polyfit", "reference"])
def test_derivative_beyond_the_degree_is_zero_and_still_differentiable(device, basis, impl):
    # A degree-1 series differentiated twice is zero. On either backend the result stays a function
    # of x and coeffs, so gradients (zero) reach both and loss.backward() works on it.
    fn = polyfit.polyval if impl == "polyfit" else polyfit.reference.polyval
    for xshape, cshape in [((3, 5), (3, 2)), ((3, 5), (2,)), ((), (2,))]:
        x, c = _leaf(xshape, device), _leaf(cshape, device, seed=1)
        y = fn(x, c, basis, derivative=2)
        assert y.requires_grad
        torch.testing.assert_close(y, torch.zeros_like(x), rtol=0, atol=0)  # x's shape too
        gx, gc = torch.autograd.grad(y.sum(), (x, c))
        torch.testing.assert_close(gx, torch.zeros_like(x), rtol=0, atol=0)
        torch.testing.assert_close(gc, torch.zeros_like(c), rtol=0, atol=0)


@pytest.mark.parametrize("impl", ["polyfit", "reference"])
def test_degree_zero_features_are_ones_and_still_differentiable(device, basis, impl):
    fn = polyfit.features if impl == "polyfit" else polyfit.reference.features
    x = _leaf((3, 5), device)
    f = fn(x, 0, basis)
    assert f.requires_grad
    torch.testing.assert_close(f, torch.ones(3, 5, 1, dtype=x.dtype, device=device), rtol=0, atol=0)
    (gx,) = torch.autograd.grad(f.sum(), (x,))
    torch.testing.assert_close(gx, torch.zeros_like(x), rtol=0, atol=0)


@compiled
@pytest.mark.parametrize("grad_mode", [True, False])
@pytest.mark.parametrize("needs", [(False, False), (True, False), (False, True), (True, True)])
def test_graph_recorded_exactly_when_a_gradient_is_needed(device, needs, grad_mode):
    # Calls that need no graph skip the autograd Function; those that do must still get the right gradients.
    x = _leaf((3, 7), device).requires_grad_(needs[0])
    c = _leaf((3, 4), device, seed=1).requires_grad_(needs[1])
    with torch.set_grad_enabled(grad_mode):
        y = polyfit.polyval(x, c, "legendre")
        f = polyfit.features(x, 3, "chebyshev")
        want_y = polyfit.reference.polyval(x, c, "legendre")
        want_f = polyfit.reference.features(x, 3, "chebyshev")
    torch.testing.assert_close(y, want_y)
    torch.testing.assert_close(f, want_f)
    records = grad_mode and any(needs)
    assert y.requires_grad == records and (y.grad_fn is not None) == records
    assert f.requires_grad == (grad_mode and needs[0])
    if records:
        wrt = [t for t in (x, c) if t.requires_grad]
        g = torch.randn_like(y)
        for got, want in zip(torch.autograd.grad(y, wrt, g), torch.autograd.grad(want_y, wrt, g)):
            torch.testing.assert_close(got, want)


@compiled
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # torch's forward_ad import
def test_forward_mode_ad_is_refused_by_argument_name(device):
    import torch.autograd.forward_ad as fwAD

    x = torch.rand(5, device=device)
    c = torch.randn(3, device=device)
    with fwAD.dual_level():
        with pytest.raises(NotImplementedError, match="forward-mode AD.*x carries a tangent"):
            polyfit.polyval(fwAD.make_dual(x, torch.ones_like(x)), c)
        with pytest.raises(NotImplementedError, match="forward-mode AD.*coeffs carries a tangent"):
            polyfit.polyval(x, fwAD.make_dual(c, torch.ones_like(c)))
        with pytest.raises(NotImplementedError, match="polyfit.features: forward-mode AD.*x carries a tangent"):
            polyfit.features(fwAD.make_dual(x, torch.ones_like(x)), 3)


@compiled
def test_torch_func_transforms_fail_loudly(device):
    # The ops' autograd is a C++ Function, which functorch refuses: an error, never a silent wrong value.
    x = torch.rand(5, dtype=torch.float64, device=device)
    c = torch.randn(3, dtype=torch.float64, device=device)
    with pytest.raises(RuntimeError, match="functorch"):
        torch.func.grad(lambda x: polyfit.polyval(x, c).sum())(x)
    with pytest.raises(RuntimeError, match="functorch"):
        torch.func.grad(lambda x: polyfit.features(x, 2).sum())(x)


# ---------------------------------------------------------------------------------------------
# Eager calls: polyfit.polyval and polyfit.features go through polyfit._C's entry points (the same
# ops without torch.ops' argument parsing); torch.ops stays in charge wherever it does more.


class _Recorder:
    """A mode that notes every function it sees, then runs it."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def _run(self, func, args, kwargs):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


class _RecordFunctions(_Recorder, torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self._run(func, args, kwargs)


class _RecordDispatch(_Recorder, TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self._run(func, args, kwargs)


@compiled
def test_eager_calls_skip_the_op_packet_and_keep_the_derivatives(device, monkeypatch):
    from polyfit import _ops

    def refuse(*args):
        raise AssertionError("the eager call went through torch.ops")

    x = _leaf((7,), device)
    c = _leaf((4,), device, seed=1)
    want_y = torch.ops.polyfit.polyval(x, c, "legendre", None, 1)
    want_g = torch.autograd.grad(want_y.sum(), (x, c))
    want_f = torch.ops.polyfit.features(x, 3, "legendre", None, False)
    monkeypatch.setattr(_ops, "_polyval_op", refuse)
    monkeypatch.setattr(_ops, "_features_op", refuse)
    y = polyfit.polyval(x, c, "legendre", derivative=1)
    torch.testing.assert_close(y, want_y, rtol=0, atol=0)
    for got, want in zip(torch.autograd.grad(y.sum(), (x, c)), want_g):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(polyfit.features(x, 3, "legendre", increasing=False), want_f, rtol=0, atol=0)
    # The entry points take the common call only and hand everything else back (None) to the
    # general path, whose checks and messages apply.
    eager = _backend.STATE.module
    declined = [eager.polyval(x, c, "lagrange", 0), eager.polyval(x, c, "power", True),
                eager.polyval(x, c, "power", -1), eager.polyval(x, [1.0, 2.0], "power", 0),
                eager.polyval(x.detach().as_subclass(_Sub), c, "power", 0),
                eager.polyval(x, c.to("meta"), "power", 0), eager.features(x, -1, "power", True),
                eager.features(x, 2.0, "power", True), eager.features(x, 2, None, True)]
    assert all(d is None for d in declined)
    with pytest.raises(ValueError, match="basis must be one of"):
        polyfit.polyval(x, c, "lagrange")
    with pytest.raises(ValueError, match="degree"):
        polyfit.features(x, -1)


class _Sub(torch.Tensor):
    pass


@compiled
def test_torch_function_modes_and_subclasses_still_see_the_ops(device):
    x = torch.rand(5, device=device)
    c = torch.randn(3, device=device)
    with _RecordFunctions() as mode:
        polyfit.polyval(x, c)
        polyfit.features(x, 2)
    assert torch.ops.polyfit.polyval.default in mode.seen and torch.ops.polyfit.features.default in mode.seen

    class Traced(torch.Tensor):  # a subclass overriding __torch_function__
        seen = []

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            cls.seen.append(func)
            return super().__torch_function__(func, types, args, kwargs or {})

    polyfit.polyval(x.as_subclass(Traced), c)
    assert torch.ops.polyfit.polyval.default in Traced.seen


@compiled
def test_dispatch_modes_see_the_eager_calls(device):
    x = torch.rand(5, device=device)
    c = torch.randn(3, device=device)
    with _RecordDispatch() as mode:
        y = polyfit.polyval(x, c)
        polyfit.features(x, 2)
    assert torch.ops.polyfit.polyval.default in mode.seen and torch.ops.polyfit.features.default in mode.seen
    torch.testing.assert_close(y, torch.ops.polyfit.polyval(x, c, "power", None, 0))
