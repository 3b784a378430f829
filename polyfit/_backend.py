"""Which implementation serves which device: the compiled kernels or the pure-PyTorch reference.

The compiled part is polyfit._C (op schemas, and CUDA kernels when built with CUDA) plus one of
polyfit._cpu_<isa>, the CPU kernels built for several instruction sets; the best one the running
CPU supports is loaded, following ATen's own choice (torch.backends.cpu.get_cpu_capability(),
which honours ATEN_CPU_CAPABILITY). Anything else runs polyfit.reference.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from typing import Union

import torch

FORCE_FALLBACK_ENV = "POLYFIT_FORCE_FALLBACK"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def compiled_library(name: str) -> str | None:
    """Path of the compiled library `name` in this package's own folder, or None.

    Looked up by path, not by import: an editable install's import hook would otherwise hand a copy
    of the Python sources the libraries of another tree.
    """
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(PACKAGE_DIR, name + suffix)
        if os.path.isfile(path):
            return path
    return None


@dataclass
class BackendState:
    loaded: bool = False          # polyfit._C and a CPU kernel library are loaded
    cpu_isa: str | None = None    # which CPU kernel library serves the CPU
    with_cuda: bool = False       # CUDA kernels are compiled in
    forced_fallback: bool = False
    reason: str | None = None     # why the compiled kernels are not used, if they are not
    build: dict = field(default_factory=dict)
    module: object = None         # polyfit._C as a Python module: the ops' eager entry points


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
    if not os.path.isfile(os.path.join(PACKAGE_DIR, "_build_info.py")):
        state.reason = "polyfit was not compiled (no polyfit._build_info); install with `pip install --no-build-isolation .`"
        return state
    from . import _build_info
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
    schemas = compiled_library("_C")
    if schemas is None:
        state.reason = "polyfit's compiled library polyfit._C is missing; rebuild it"
        return state
    try:
        torch.ops.load_library(schemas)
        # The same file imported as a module (one load: the loader finds it open) for its entry points.
        spec = importlib.util.spec_from_file_location("polyfit._C", schemas)
        state.module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(state.module)
        for isa in _isa_preference():
            path = compiled_library(f"_cpu_{isa}") if isa in _build_info.CPU_ISAS else None
            if path is not None:
                torch.ops.load_library(path)
                state.cpu_isa = isa
                break
    except (OSError, ImportError) as e:
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


def compiled_for(device: Union[torch.device, torch.Tensor]) -> bool:
    """True when polyfit's compiled kernels serve tensors on `device` (a device, or a tensor's)."""
    if not STATE.loaded:
        return False
    if isinstance(device, torch.Tensor):  # a tensor's flags read faster than its device object
        return device.is_cpu or (device.is_cuda and STATE.with_cuda)
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
