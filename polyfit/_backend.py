"""Which implementation serves which device: the compiled kernels or the pure-PyTorch reference.

The compiled part is polyfit._C (op schemas, and CUDA kernels when built with CUDA) plus one of
polyfit._cpu_<isa>, the CPU kernels built for several instruction sets; the best one the running
CPU supports is loaded, following ATen's own choice (torch.backends.cpu.get_cpu_capability(),
which honours ATEN_CPU_CAPABILITY). Anything else runs polyfit.reference.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from dataclasses import dataclass, field

import torch

FORCE_FALLBACK_ENV = "POLYFIT_FORCE_FALLBACK"


@dataclass
class BackendState:
    loaded: bool = False          # polyfit._C and a CPU kernel library are loaded
    cpu_isa: str | None = None    # which CPU kernel library serves the CPU
    with_cuda: bool = False       # CUDA kernels are compiled in
    forced_fallback: bool = False
    reason: str | None = None     # why the compiled kernels are not used, if they are not
    build: dict = field(default_factory=dict)


def _isa_preference() -> list[str]:
    capability = torch.backends.cpu.get_cpu_capability().upper()
    if capability.startswith("AVX512"):
        return ["avx512", "avx2", "default"]
    if capability.startswith("AVX2"):
        return ["avx2", "default"]
    return ["default"]


def _load() -> BackendState:
    state = BackendState()
    if os.environ.get(FORCE_FALLBACK_ENV, "0") == "1":
        state.forced_fallback = True
        state.reason = f"{FORCE_FALLBACK_ENV}=1"
        return state
    try:
        from . import _build_info
    except ImportError:
        state.reason = "polyfit was not compiled (no polyfit._build_info); install with `pip install --no-build-isolation .`"
        return state
    state.build = {k: getattr(_build_info, k) for k in dir(_build_info) if k.isupper()}
    if _build_info.TORCH_VERSION != torch.__version__:
        state.reason = (
            f"polyfit was compiled against torch {_build_info.TORCH_VERSION} but torch {torch.__version__} "
            "is installed; rebuild it: pip install --no-build-isolation --force-reinstall --no-deps torch-polyfit")
        return state
    if _build_info.WITH_CUDA and torch.version.cuda != _build_info.CUDA_VERSION:
        state.reason = (
            f"polyfit was compiled for CUDA {_build_info.CUDA_VERSION} but torch uses CUDA {torch.version.cuda}; "
            "rebuild it against this torch")
        return state
    try:
        importlib.import_module("polyfit._C")
        for isa in _isa_preference():
            if isa not in _build_info.CPU_ISAS:
                continue
            spec = importlib.util.find_spec(f"polyfit._cpu_{isa}")
            if spec is None or spec.origin is None:
                continue
            torch.ops.load_library(spec.origin)
            state.cpu_isa = isa
            break
    except (ImportError, OSError) as e:
        state.reason = f"polyfit's compiled library failed to load ({e}); rebuild it against this torch"
        return state
    if state.cpu_isa is None:
        state.reason = "no CPU kernel library of polyfit was found; rebuild it"
        return state
    state.loaded = True
    state.with_cuda = bool(_build_info.WITH_CUDA)
    return state


STATE = _load()
if STATE.reason is not None and not STATE.forced_fallback:
    warnings.warn(f"polyfit: using the pure-PyTorch reference implementation: {STATE.reason}",
                  RuntimeWarning, stacklevel=2)


def compiled_for(device: torch.device) -> bool:
    """True when polyfit's compiled kernels serve tensors on `device`."""
    if not STATE.loaded:
        return False
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return STATE.with_cuda
    return False


def describe() -> dict:
    """What serves each device, and what the extension was built against."""
    devices = {"cpu": f"compiled ({STATE.cpu_isa} kernels)" if compiled_for(torch.device("cpu")) else "reference"}
    if torch.cuda.is_available():
        devices["cuda"] = "compiled" if compiled_for(torch.device("cuda")) else "reference"
    else:
        devices["cuda"] = ("compiled kernels present; no GPU visible" if STATE.with_cuda
                           else "not built with CUDA; a GPU would run the reference")
    devices["other (mps, xpu, ...)"] = "reference"
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "built_against": STATE.build,
        "backend": devices,
        "fallback_reason": STATE.reason,
    }
