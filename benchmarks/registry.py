"""The case registry: what a benchmark case is, how ops register their cases, and the presets.

A *case* is one op at one set of sizes, one dtype, one device and one mode ("fwd" or "fwd+bwd"),
with the peers that compute the same thing and the figures its roofline needs. Ops register a
*generator*: a function that takes a `Grid` (the axes a preset or the command line asks for) and
yields `Case` objects. Another module adds its own ops the same way, for example::

    # benchmarks/cases_nn.py
    from benchmarks.registry import Case, Grid, Peer, add_to_preset, register

    @register("polylinear")
    def polylinear_cases(grid: Grid):
        for device in grid.devices:
            for dtype in grid.dtypes:
                yield Case(op="polylinear", mode="fwd+bwd", device=device, dtype=dtype,
                           params={"n": 1024, "degree": 8, "basis": "chebyshev"},
                           make_inputs=lambda: {...}, grad_inputs=("x",),
                           peers={"eager": make_eager, "polyfit": make_polyfit},
                           bytes=..., fmas=...)

    add_to_preset("quick", Grid(ops=("polylinear",), modes=("fwd+bwd",), n=(1024,), degrees=(8,),
                                bases=("chebyshev",), dtypes=(torch.float32,)))

Modules named benchmarks/cases_*.py are imported automatically (`load_cases`), so their
registrations run before the cases are generated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch

MODES = ("fwd", "fwd+bwd")


@dataclass
class Peer:
    """What a peer factory returns: the forward computation, ready to call with no arguments.

    fn    returns a tensor, a tuple of tensors, or a numpy array (numpy peers; fwd only).
    wrt   extra tensors to differentiate in fwd+bwd besides the case's grad_inputs (e.g. module
          parameters the factory created).
    note  shown in the report, e.g. which dtype numpy ran in.
    compared  False for a stand-in that does the op's costly part but not all of its outputs (a
          limit such as "the GEMMs alone"): its outputs are not checked against polyfit's.
    """

    fn: Callable[[], Any]
    wrt: Sequence[torch.Tensor] = ()
    note: str = ""
    compared: bool = True


# A peer factory builds the peer once per case, outside the timed region (conversions, module
# construction, torch.compile wrapping). It returns a Peer, a bare callable, or None when the
# peer does not apply to this case (numpy has no backward, torch.linalg.vander only does powers).
PeerFactory = Callable[["Case", dict], Union[Peer, Callable[[], Any], None]]


@dataclass
class Case:
    """One benchmark case.

    op, mode, device, dtype  what is measured; mode is "fwd" or "fwd+bwd".
    params       the op's own sizes and options (n, degree, basis, ...): shown in the case name,
                 stored in results.json, used by the plots (n and degree) and the report.
    make_inputs  returns the inputs as a dict of tensors on `device`; called once per case. In
                 fwd+bwd the runner sets requires_grad on those named in grad_inputs.
    peers        peer name -> PeerFactory; the factories get (case, inputs).
    bytes        minimal bytes moved to and from memory by the whole computation (roofline).
    fmas         FMA-unit operations (an add, a multiply or a fused multiply-add each count one).
    grad_inputs  the inputs differentiated in fwd+bwd.
    fill_shape   when set, the run also times torch.ones(fill_shape) as a limit (the output's shape).
    compute_dtype  whose FMA peak bounds the case (default: dtype, half types compute in float32).
    baseline     the peer whose speedup over every other peer is reported.
    """

    op: str
    mode: str
    device: str
    dtype: torch.dtype
    params: dict
    make_inputs: Callable[[], dict]
    peers: dict
    bytes: int
    fmas: int
    grad_inputs: tuple = ()
    fill_shape: Optional[tuple] = None
    compute_dtype: Optional[torch.dtype] = None
    baseline: str = "polyfit"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {self.mode!r}")
        if self.compute_dtype is None:
            self.compute_dtype = torch.float32 if self.dtype in (torch.float16, torch.bfloat16) else self.dtype

    @property
    def name(self) -> str:
        return " ".join([self.op, self.mode, *params_label(self.params), dtype_name(self.dtype), self.device])


@dataclass
class Grid:
    """The axes a preset asks for; generators read what applies to their op and may ignore the rest.

    ops and modes select which generators run and which modes they produce. `extra` holds axes
    that only some ops know (e.g. {"in_features": (256,)}).
    """

    ops: tuple = ("polyval", "features")
    modes: tuple = MODES
    bases: tuple = ("power",)
    dtypes: tuple = (torch.float32,)
    devices: tuple = ("cpu",)
    n: tuple = (10**6,)
    degrees: tuple = (2, 8, 16)
    extra: dict = field(default_factory=dict)

    def replace(self, **changes) -> "Grid":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# Registration.

GENERATORS: dict[str, Callable[[Grid], Iterable[Case]]] = {}


def register(op: str):
    """Decorator: register `fn(grid) -> Iterable[Case]` as the case generator of `op`."""

    def deco(fn):
        GENERATORS[op] = fn
        return fn

    return deco


def load_cases() -> list[str]:
    """Import the built-in cases and every benchmarks/cases_*.py module, so that they register."""
    from . import cases

    return cases.load_case_modules()


def generate(grids: Iterable[Grid]) -> list[Case]:
    """All cases of the grids, in order, without duplicates (same name)."""
    load_cases()
    seen, cases = set(), []
    for grid in grids:
        for op in grid.ops:
            gen = GENERATORS.get(op)
            if gen is None:
                raise ValueError(f"no benchmark cases registered for op {op!r}; known: {', '.join(sorted(GENERATORS))}")
            for case in gen(grid):
                if case.mode in grid.modes and case.name not in seen:
                    seen.add(case.name)
                    cases.append(case)
    return cases


# ---------------------------------------------------------------------------------------------
# Presets: lists of grids, given the devices to run on. Other modules append with add_to_preset.

DEGREES = (2, 4, 8, 16, 32)
ALL_DTYPES = (torch.float32, torch.bfloat16, torch.float64)
OTHER_BASES = ("chebyshev", "legendre", "hermite", "hermite_e", "laguerre")


def _quick(devices: tuple) -> list[Grid]:
    # Budget: about 3 minutes on 2 cores, most of it torch.compile warm-up (one compile per
    # peer, shape, dtype and degree), so one N and few degrees.
    return [
        Grid(ops=("polyval", "features"), bases=("power",), dtypes=(torch.float32,), devices=devices,
             n=(10**6,), degrees=(2, 8, 16)),
        Grid(ops=("polyval", "features"), bases=("chebyshev",), dtypes=(torch.float32,), devices=devices,
             n=(10**6,), degrees=(8,)),
        Grid(ops=("polyval",), modes=("fwd",), bases=("power",), dtypes=(torch.bfloat16,), devices=devices,
             n=(10**6,), degrees=(16,)),
        # A small size, where per-call overhead rather than the kernel decides.
        Grid(ops=("polyval",), bases=("power",), dtypes=(torch.float32,), devices=devices,
             n=(10**4,), degrees=(2, 16)),
    ]


def _full(devices: tuple) -> list[Grid]:
    grids = [
        Grid(ops=("polyval", "features"), bases=("power",), dtypes=(torch.float32,), devices=devices,
             n=(10**3, 10**4, 10**5, 10**6, 10**7), degrees=DEGREES),
        Grid(ops=("polyval", "features"), bases=("chebyshev",), dtypes=ALL_DTYPES, devices=devices,
             n=(10**6,), degrees=DEGREES),
        Grid(ops=("polyval", "features"), bases=("power",), dtypes=(torch.bfloat16, torch.float64), devices=devices,
             n=(10**6,), degrees=DEGREES),
        Grid(ops=("polyval", "features"), bases=OTHER_BASES[1:], dtypes=(torch.float32,), devices=devices,
             n=(10**6,), degrees=(4, 16)),
    ]
    if "cuda" in devices:
        grids.append(Grid(ops=("polyval", "features"), bases=("power",), dtypes=(torch.float32,),
                          devices=("cuda",), n=(10**8,), degrees=DEGREES))
    return grids


PRESETS: dict[str, list] = {"quick": [_quick], "full": [_full]}
# Devices a preset runs on unless --device says otherwise ("available": cpu, and cuda if present).
PRESET_DEVICES = {"quick": ("cpu",), "full": "available"}


def add_to_preset(name: str, grid_or_fn: Union[Grid, Callable[[tuple], list]]) -> None:
    """Add a Grid, or a function devices -> [Grid], to a preset. A bare Grid's devices are
    replaced by the run's devices."""
    if isinstance(grid_or_fn, Grid):
        grid = grid_or_fn
        grid_or_fn = lambda devices: [grid.replace(devices=devices)]  # noqa: E731
    PRESETS.setdefault(name, []).append(grid_or_fn)


def preset_grids(name: str, devices: tuple) -> list[Grid]:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return [g for fn in PRESETS[name] for g in fn(devices)]


# ---------------------------------------------------------------------------------------------
# Small formatting helpers shared by the report.

def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def params_label(params: dict) -> list:
    """A case's parameters as name parts: basis, D=degree, N=n, then the rest as key=value."""
    p = dict(params)
    parts = []
    if "basis" in p:
        parts.append(str(p.pop("basis")))
    if "degree" in p:
        parts.append(f"D={p.pop('degree')}")
    if "n" in p:
        parts.append(f"N={fmt_count(p.pop('n'))}")
    return parts + [f"{k}={v}" for k, v in p.items()]


def fmt_count(n: float) -> str:
    """1000000 -> '1e6', 2000 -> '2e3', 2500 -> '2500'."""
    s = str(int(n))
    if int(n) >= 1000 and int(s[1:]) == 0:
        return f"{s[0]}e{len(s) - 1}"
    return s
