"""The polyval and features cases and their peers.

Peers (a peer computes exactly what polyfit computes, in another way):

    polyfit         polyfit.polyval / polyfit.features (the compiled kernels where built)
    seed            the seed's eager formulation: torch.stack of the columns (x**k, or the basis
                    recurrence) then `@ coeffs`; for features the stack alone
    eager_horner    an eager Horner loop (powers) or Clenshaw loop (other bases)
    compile_seed    torch.compile of seed;  compile_horner: torch.compile of eager_horner
    compile_polyfit torch.compile of polyfit's own call: what polyfit costs inside a compiled graph
    torch_vander    torch.linalg.vander (features, powers only)
    numpy           numpy.polynomial *val / *vander on the CPU, forward only, one thread; float64
                    for float64 cases, else float32 (numpy has no bfloat16)
    reference       polyfit.reference, polyfit's pure-PyTorch fallback
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

import torch

import polyfit
from polyfit import _backend, reference

from . import eager
from .registry import Case, Grid, Peer, register
from .roofline import features_bytes, features_fmas, polyval_bytes, polyval_fmas

try:
    import numpy as np
    import numpy.polynomial as npp
except ImportError:  # numpy is optional: its peer is skipped
    np = npp = None

NUMPY_VAL = {"power": ("polynomial", "polyval"), "chebyshev": ("chebyshev", "chebval"),
             "legendre": ("legendre", "legval"), "hermite": ("hermite", "hermval"),
             "hermite_e": ("hermite_e", "hermeval"), "laguerre": ("laguerre", "lagval")}
NUMPY_VANDER = {"power": ("polynomial", "polyvander"), "chebyshev": ("chebyshev", "chebvander"),
                "legendre": ("legendre", "legvander"), "hermite": ("hermite", "hermvander"),
                "hermite_e": ("hermite_e", "hermevander"), "laguerre": ("laguerre", "lagvander")}


# ---------------------------------------------------------------------------------------------
# torch.compile peers: one compiled wrapper per eager function, shared by every case. Dynamo
# caches one graph per shape, dtype, degree and grad mode under the function's code object, so
# its recompile limit must allow one entry per case; dynamic=False keeps every graph static.

_COMPILED: dict = {}


def configure_dynamo(max_entries: int = 4096) -> None:
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max_entries
    torch._dynamo.config.accumulated_recompile_limit = max_entries


def compiled(fn):
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=False)
    return _COMPILED[fn]


# ---------------------------------------------------------------------------------------------
# Peer factories: (case, inputs) -> Peer, callable, or None where the peer does not apply.


def _polyfit_note(case: Case) -> str:
    dev = torch.device(case.device)
    return "" if _backend.compiled_for(dev) else "runs polyfit.reference: no compiled kernels for this device"


def _numpy_arrays(case: Case, inputs: dict, names):
    if np is None or case.mode != "fwd" or case.device != "cpu":
        return None
    tdt = torch.float64 if case.dtype == torch.float64 else torch.float32
    arrays = [inputs[k].detach().to(tdt).numpy() for k in names]
    note = f"numpy {arrays[0].dtype}, 1 thread" + (" (numpy has no bfloat16)" if case.dtype == torch.bfloat16 else "")
    return arrays, note


def polyval_peers(basis: str) -> dict:
    def fn_peer(fn):
        return lambda case, inp: functools.partial(fn, inp["x"], inp["coeffs"], basis)

    def polyfit_peer(case, inp):
        return Peer(functools.partial(polyfit.polyval, inp["x"], inp["coeffs"], basis), note=_polyfit_note(case))

    def numpy_peer(case, inp):
        got = _numpy_arrays(case, inp, ("x", "coeffs"))
        if got is None:
            return None
        (x, c), note = got
        module, name = NUMPY_VAL[basis]
        return Peer(functools.partial(getattr(getattr(npp, module), name), x, c), note=note)

    return {
        "polyfit": polyfit_peer,
        "seed": fn_peer(eager.seed_polyval),
        "eager_horner": fn_peer(eager.horner),
        "compile_seed": lambda case, inp: functools.partial(compiled(eager.seed_polyval), inp["x"], inp["coeffs"], basis),
        "compile_horner": lambda case, inp: functools.partial(compiled(eager.horner), inp["x"], inp["coeffs"], basis),
        "compile_polyfit": lambda case, inp: functools.partial(compiled(polyfit.polyval), inp["x"], inp["coeffs"],
                                                               basis),
        "numpy": numpy_peer,
        "reference": lambda case, inp: functools.partial(reference.polyval, inp["x"], inp["coeffs"], basis),
    }


def features_peers(basis: str, degree: int) -> dict:
    def polyfit_peer(case, inp):
        return Peer(functools.partial(polyfit.features, inp["x"], degree, basis), note=_polyfit_note(case))

    def numpy_peer(case, inp):
        got = _numpy_arrays(case, inp, ("x",))
        if got is None:
            return None
        (x,), note = got
        module, name = NUMPY_VANDER[basis]
        return Peer(functools.partial(getattr(getattr(npp, module), name), x, degree), note=note)

    peers = {
        "polyfit": polyfit_peer,
        "seed": lambda case, inp: functools.partial(eager.seed_features, inp["x"], degree, basis),
        "compile_seed": lambda case, inp: functools.partial(compiled(eager.seed_features), inp["x"], degree, basis),
        "compile_polyfit": lambda case, inp: functools.partial(compiled(polyfit.features), inp["x"], degree, basis),
        "numpy": numpy_peer,
        "reference": lambda case, inp: functools.partial(reference.features, inp["x"], degree, basis),
    }
    def vander_peer(case, inp):
        # torch.linalg.vander needs two columns or more, and has no half-precision kernels
        if degree < 1 or case.dtype in (torch.float16, torch.bfloat16):
            return None
        return functools.partial(eager.vander, inp["x"], degree)

    if basis == "power":
        peers["torch_vander"] = vander_peer
    return peers


# ---------------------------------------------------------------------------------------------
# Inputs: x uniform in [-1, 1] (where every basis is well-scaled), coefficients standard normal.


def _x(n: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(0)
    return (torch.rand(n, generator=g, device=device) * 2 - 1).to(dtype)


def _coeffs(degree: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(1)
    return torch.randn(degree + 1, generator=g).to(dtype=dtype, device=device)


def _axes(grid: Grid):
    for device in grid.devices:
        for dtype in grid.dtypes:
            for basis in grid.bases:
                for mode in grid.modes:
                    for degree in grid.degrees:
                        for n in grid.n:
                            yield device, dtype, basis, mode, int(degree), int(n)


@register("polyval")
def polyval_cases(grid: Grid):
    for device, dtype, basis, mode, degree, n in _axes(grid):
        yield Case(
            op="polyval", mode=mode, device=device, dtype=dtype,
            params={"basis": basis, "degree": degree, "n": n},
            make_inputs=functools.partial(
                lambda n, degree, dtype, device: {"x": _x(n, dtype, device), "coeffs": _coeffs(degree, dtype, device)},
                n, degree, dtype, device),
            grad_inputs=("x", "coeffs"),
            peers=polyval_peers(basis),
            bytes=polyval_bytes(n, degree, dtype.itemsize, mode),
            fmas=polyval_fmas(n, degree, basis, mode),
            # the output's fill: an output over 32 MiB (N >= 2^23 float32) is new pages every call,
            # which the roofline counts from the fill's page faults
            fill_shape=(n,),
        )


@register("features")
def features_cases(grid: Grid):
    for device, dtype, basis, mode, degree, n in _axes(grid):
        if mode == "fwd+bwd" and degree == 0:
            continue  # a column of ones does not depend on x: nothing to differentiate
        yield Case(
            op="features", mode=mode, device=device, dtype=dtype,
            params={"basis": basis, "degree": degree, "n": n},
            make_inputs=functools.partial(lambda n, dtype, device: {"x": _x(n, dtype, device)}, n, dtype, device),
            grad_inputs=("x",),
            peers=features_peers(basis, degree),
            bytes=features_bytes(n, degree, dtype.itemsize, mode),
            fmas=features_fmas(n, degree, basis, mode),
            fill_shape=(n, degree + 1),
        )


# ---------------------------------------------------------------------------------------------
# Other case modules (benchmarks/cases_*.py, e.g. cases_nn.py) register themselves on import.


def load_case_modules() -> list[str]:
    names = []
    for info in pkgutil.iter_modules(importlib.import_module(__package__).__path__):
        if info.name.startswith("cases_"):
            importlib.import_module(f"{__package__}.{info.name}")
            names.append(info.name)
    return names
