"""The memory polyfit keeps for its large CPU outputs.

An output of 2 MiB or more (a float32 polyval of 2^19 = 524,288 points or more, features at degree
8 from 58,255 points) is written into memory polyfit maps itself; when the tensor is freed polyfit
keeps that memory, up to a capacity, for the next output of about the same size, instead of handing
it back to the C library, which may return it to the OS so that the next output faults in and
zeroes every 4 KB page again. In a loop of same-sized calls the outputs' pages are then mapped
once. The idea of torch's CUDA caching allocator, bounded by a capacity:

    POLYFIT_CPU_CACHE_MB=256       the capacity at start-up, in MB (default 256; 0 keeps nothing)
    polyfit.cache_info()           what is kept now
    polyfit.empty_cache()          hand everything kept back to the OS
    polyfit.set_cache_capacity(n)  a new capacity in bytes

torch.profiler's memory events count these outputs like any other tensor's memory.
"""

from __future__ import annotations

import operator

import torch

from . import _backend

__all__ = ["cache_info", "empty_cache", "set_cache_capacity"]

_FIELDS = ("kept_bytes", "kept_blocks", "capacity_bytes", "reuses", "new_blocks")


def _call(capacity: int = -1, release: bool = False) -> dict:
    if not _backend.STATE.loaded:  # the reference implementation keeps nothing
        return dict.fromkeys(_FIELDS, 0)
    return dict(zip(_FIELDS, torch.ops.polyfit._cpu_output_cache(capacity, release)))


def cache_info() -> dict:
    """What polyfit keeps for its large CPU outputs: kept_bytes and kept_blocks (free, ready for reuse),
    capacity_bytes, and since start-up reuses (outputs served from kept memory) and new_blocks
    (outputs that needed a new mapping)."""
    return _call()


def empty_cache() -> None:
    """Hands all memory kept for polyfit's CPU outputs back to the OS; outputs still alive keep theirs."""
    _call(release=True)


def set_cache_capacity(nbytes: int) -> int:
    """Keeps at most `nbytes` of freed output memory from now on (0: keep nothing, every output's
    memory goes back when its tensor dies); returns the previous capacity in bytes."""
    if isinstance(nbytes, bool):
        raise TypeError("nbytes must be an int number of bytes >= 0; got a bool")
    try:
        nbytes = operator.index(nbytes)
    except TypeError:
        raise TypeError(f"nbytes must be an int number of bytes >= 0; got {type(nbytes).__name__}") from None
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0; got {nbytes}")
    previous = cache_info()["capacity_bytes"]
    _call(capacity=nbytes)
    return previous
