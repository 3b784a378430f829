"""The physical limit of each case: bytes it must move, FMAs it must do, and the machine's speed at both.

Counting conventions (N points, degree D, K = D + 1 coefficients or columns, s = element size):

Bytes are the minimum traffic to memory: every input read once, every output written once, no
temporaries. A fused forward+backward still runs as two passes (autograd calls them separately),
so the backward reads x again.

    polyval  fwd       x read, y written, coeffs read:                  2·N·s + K·s
             fwd+bwd   fwd, then grad and x read, grad_x written,
                       coeffs read and grad_coeffs written:             5·N·s + 3·K·s
    features fwd       x read, (N, K) written:                          N·s + N·K·s
             fwd+bwd   fwd, then (N, K) grad and x read, grad_x written: 3·N·s + 2·N·K·s

FMAs are "FMA-unit operations": an add, a multiply or a fused multiply-add each count one (a
vector unit issues one of them per lane per slot). Per point and per degree step:

    series step (Horner / Clenshaw, SERIES_OPS):  power 1 (one FMA), chebyshev 2, hermite 2,
                                                   hermite_e 2, legendre 3, laguerre 3
    recurrence step (next column, RECURRENCE_OPS): power 1 (one multiply), chebyshev 1,
                                                   hermite 2, hermite_e 2, legendre 3, laguerre 3

    polyval  fwd       N·D·series
             fwd+bwd   N·D·(2·series + recurrence + 1): the forward series, the derivative series
                       for grad_x (degree D-1, counted as D), and for grad_coeffs the basis
                       recurrence plus one FMA per moment. Power basis: 4·N·D.
    features fwd       N·D·recurrence
             fwd+bwd   fwd + N·D·(series + 1): each point's gradient row is a series of its own
                       whose derivative coefficients cost one operation each.

The roofline time of a case is call floor + max(bytes / bandwidth, FMAs / peak) + fresh pages x
page time, each limit the fastest block of its probe (the machine's best, where the cases report
medians). The call floor is what torch itself takes for the simplest call of the case's kind, on
one element: a multiply `x * s` for a forward; for a forward+backward, the same multiply through
`torch.autograd.grad` as the cases are called, differentiated in as many inputs as the case (at
most two: x and s). No op called from Python, nor any gradient through autograd, comes cheaper;
at 10^4 points it is most of the time (a latency-plus-throughput model: the floor is paid once
per call, the transfer and the arithmetic on top). Bandwidth is the copy bandwidth
(`dst.copy_(src)`, bytes read + written over the copy's time less a one-element copy's, so
that the call cost is counted once, in the floor) measured at the case's own working set (a copy
moving the same number of bytes, so cache-resident sizes are judged against cache speed); peak
is a GEMM's FMA rate in the case's compute dtype (half types compute in float32). The last term is the operating
system's: an output the allocator takes from it as new pages (a large tensor, on Linux) must be
zeroed and mapped page by page before any kernel can write it, a cost no byte count includes. The
pages counted are those a plain `torch.ones` of the output's size faults in, measured in the same
allocator state (runner.py); the page time is the fastest way the OS hands pages over, measured
by Limits.page_time (Linux: `MADV_POPULATE_WRITE` of a fresh mapping, one call for many pages, no
trap per page, in base pages or in transparent huge pages where the OS offers them, whichever is
faster, per base page). Where the OS gives no such measure the term is left out, making the
roofline stricter, never looser.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch
from torch.utils.benchmark import Timer

SERIES_OPS = {"power": 1, "chebyshev": 2, "hermite": 2, "hermite_e": 2, "legendre": 3, "laguerre": 3}
RECURRENCE_OPS = {"power": 1, "chebyshev": 1, "hermite": 2, "hermite_e": 2, "legendre": 3, "laguerre": 3}


def polyval_bytes(n: int, degree: int, elem: int, mode: str) -> int:
    k = degree + 1
    if mode == "fwd":
        return 2 * n * elem + k * elem
    return 5 * n * elem + 3 * k * elem


def polyval_fmas(n: int, degree: int, basis: str, mode: str) -> int:
    fwd = n * degree * SERIES_OPS[basis]
    if mode == "fwd":
        return fwd
    return fwd + n * degree * (SERIES_OPS[basis] + RECURRENCE_OPS[basis] + 1)


def features_bytes(n: int, degree: int, elem: int, mode: str) -> int:
    k = degree + 1
    fwd = n * elem + n * k * elem
    if mode == "fwd":
        return fwd
    return fwd + n * k * elem + 2 * n * elem


def features_fmas(n: int, degree: int, basis: str, mode: str) -> int:
    fwd = n * degree * RECURRENCE_OPS[basis]
    if mode == "fwd":
        return fwd
    return fwd + n * degree * (SERIES_OPS[basis] + 1)


def roofline_time(nbytes: int, fmas: int, bandwidth: float, peak: float, fresh_pages: float = 0.0,
                  page_time: float = 0.0, call_floor: float = 0.0) -> float:
    """Seconds at the limit: call_floor [s] + max(bytes / bandwidth [B/s], FMAs / peak [FMA/s])
    + fresh_pages x page_time [s]."""
    return call_floor + max(nbytes / bandwidth, fmas / peak) + fresh_pages * page_time


# ---------------------------------------------------------------------------------------------
# Probes of the machine, measured in the same run as the cases.


def timer_of(fn) -> Timer:
    """A torch.utils.benchmark Timer of fn() on all intra-op threads (Timer defaults to 1)."""
    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())


class Counted:
    """stmt() with its calls counted: the shell every timed statement runs in (runner.py counts page
    faults per call with it), the call floor's included."""

    def __init__(self, stmt):
        self.stmt, self.calls = stmt, 0

    def __call__(self):
        self.calls += 1
        return self.stmt()


def timed_statement(fn, mode: str, wrt=(), grad_out=None):
    """What the suite times of fn: the call itself for a forward (timed with grad mode off), and for
    a forward+backward fn()'s gradients in wrt through torch.autograd.grad."""
    if mode == "fwd":
        return fn

    def stmt():
        # materialize_grads: zeros for an input the output does not use (degree 0)
        return torch.autograd.grad(fn(), wrt, grad_out, allow_unused=True, materialize_grads=True)
    return stmt


def measure(fn, min_run_time: float):
    """A torch.utils.benchmark measurement of fn(), after a warm-up call."""
    fn()  # warm-up: first touch of pages, lazy initialisation
    timer = timer_of(fn)
    # Runs until the IQR is within 10% of the median, at least min_run_time, at most 3x that.
    return timer.adaptive_autorange(threshold=0.1, min_run_time=min_run_time, max_run_time=3 * min_run_time)


def fastest(m) -> float:
    """Seconds per call of a limit probe: its fastest block, not its median. A limit is the best the
    machine does; a probe slowed by a neighbour (on a shared machine the GEMM peak has measured 51
    and 99 GFMA/s in consecutive runs) would otherwise make every case look closer to its limit."""
    return min(m.times)


def _round_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


class Limits:
    """Copy bandwidth and FMA peak of one device, measured lazily and cached."""

    # Large enough to leave every cache on CPUs and GPUs.
    LARGE_COPY_BYTES = 1 << 28
    # Copy probes stop growing here: far beyond any cache, and small enough to fit beside a case.
    MAX_COPY_BYTES = 1 << 30

    def __init__(self, device: str, min_run_time: float = 0.2):
        self.device = device
        self.min_run_time = min_run_time
        self._bw: dict[int, float] = {}
        self._peak: dict[torch.dtype, float] = {}
        self._page: Optional[float] = None  # NaN once measured and unavailable
        self._page_by_kind: dict[str, Optional[float]] = {}  # "base", "huge": each route's page time
        self._copy_call: Optional[float] = None  # a one-element copy's seconds
        self._floor: dict[tuple, float] = {}

    def _copy_time(self, n: int) -> float:
        """Seconds of dst.copy_(src) for n float32 elements."""
        src = torch.rand(n, device=self.device)
        dst = torch.empty_like(src)
        return fastest(measure(lambda: dst.copy_(src), self.min_run_time))

    def copy_bandwidth(self, nbytes: int) -> float:
        """Bytes/s of dst.copy_(src) moving about `nbytes` (read + written), rounded up to a power of two
        and at most 2 x MAX_COPY_BYTES: over the copy's time less a one-element copy's (the call cost,
        which the roofline counts in its floor). Where the two are within noise of each other (a few
        KB), the transfer is taken as at least an eighth of the copy."""
        half = min(_round_pow2(max(nbytes // 2, 4)), self.MAX_COPY_BYTES)
        if half not in self._bw:
            if self._copy_call is None:
                self._copy_call = self._copy_time(1)
            n = max(half // 4, 1)
            t = self._copy_time(n)
            self._bw[half] = 2 * n * 4 / max(t - self._copy_call, t / 8)
        return self._bw[half]

    def call_floor(self, mode: str, grads: int = 1) -> float:
        """Seconds of torch's simplest call of a case's kind on one element (module docstring): `x * s`
        for mode "fwd"; for "fwd+bwd" the multiply through torch.autograd.grad, called as the runner
        calls the cases, differentiated in x alone (grads <= 1) or in x and s (grads >= 2)."""
        key = (mode, 0 if mode == "fwd" else min(max(grads, 1), 2))
        if key not in self._floor:
            x = torch.rand(1, device=self.device, requires_grad=mode != "fwd")
            s = torch.rand((), device=self.device, requires_grad=key[1] == 2)
            wrt = (x, s) if key[1] == 2 else (x,)
            stmt = timed_statement(lambda: x * s, mode, wrt, torch.ones(1, device=self.device))
            with torch.set_grad_enabled(mode != "fwd"):  # as the runner times the cases
                self._floor[key] = fastest(measure(Counted(stmt), self.min_run_time))
        return self._floor[key]

    def large_copy_bandwidth(self) -> float:
        return self.copy_bandwidth(2 * self.LARGE_COPY_BYTES)

    def fma_peak(self, dtype: torch.dtype) -> float:
        """FMA/s of a square GEMM (n^3 FMAs) in dtype; TF32 off on CUDA."""
        if dtype not in self._peak:
            n = 1024 if self.device == "cpu" else 8192
            a = torch.rand(n, n, device=self.device, dtype=dtype)
            b = torch.rand(n, n, device=self.device, dtype=dtype)
            c = torch.empty(n, n, device=self.device, dtype=dtype)
            with _no_tf32():
                m = measure(lambda: torch.mm(a, b, out=c), self.min_run_time)
            self._peak[dtype] = n ** 3 / fastest(m)
        return self._peak[dtype]

    # A fresh mapping this large gives a page time free of the mapping's own fixed costs.
    PAGE_PROBE_BYTES = 64 << 20
    HUGE_PAGE_TRIES = 4

    def page_time(self) -> Optional[float]:
        """Seconds for the OS to hand over fresh zeroed memory, per page of its base size, by the fastest
        route (Linux 5.14+: MADV_POPULATE_WRITE of a new anonymous mapping, in base pages or in
        transparent huge pages, which polyfit asks for its large outputs); None where there is no
        such measure (other systems, older kernels, CUDA)."""
        if self._page is None:
            if self.device == "cpu":
                base = _populate_page_time(self.PAGE_PROBE_BYTES, self.min_run_time)
                # Right after large allocations the OS may first compact memory to find free huge
                # pages (here ~1 s at 20x the base route's page time), so the huge route gets a
                # few tries: the limit is the best the OS does.
                tries = []
                for _ in range(self.HUGE_PAGE_TRIES):
                    tries.append(_populate_page_time(self.PAGE_PROBE_BYTES, self.min_run_time, huge=True))
                    if tries[-1] is None or base is None or tries[-1] < base:
                        break
                huge = min((t for t in tries if t is not None), default=None)
                self._page_by_kind = {"base": base, "huge": huge}
            self._page = min((t for t in self._page_by_kind.values() if t is not None), default=float("nan"))
        return None if math.isnan(self._page) else self._page

    def summary(self) -> dict:
        page = self.page_time() if self._page is not None else None
        return {
            "device": self.device,
            "fresh_page_us": page * 1e6 if page is not None else None,
            "fresh_page_us_by_page_kind": {k: v * 1e6 for k, v in self._page_by_kind.items()
                                           if v is not None},
            "copy_bandwidth_GBps": {str(2 * k): v / 1e9 for k, v in sorted(self._bw.items())},
            "large_copy_bandwidth_GBps": self._bw.get(self.LARGE_COPY_BYTES, float("nan")) / 1e9,
            "fma_peak_GFMAps": {str(k).replace("torch.", ""): v / 1e9 for k, v in self._peak.items()},
            "call_floor_us": {mode + (f" ({grads} input{'s' if grads > 1 else ''})" if grads else ""): v * 1e6
                              for (mode, grads), v in sorted(self._floor.items())},
        }


def base_pages_per_fault() -> int:
    """The most base pages one page fault can map: a transparent huge page's worth where the OS
    offers them (polyfit asks for them for its large outputs), else 1."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") as f:
            return max(1, int(f.read()) // os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError):
        return 1


def _populate_page_time(nbytes: int, min_run_time: float, huge: bool = False) -> Optional[float]:
    """Seconds per base page of mmap + MADV_POPULATE_WRITE + munmap of `nbytes`, the pages split among
    as many threads as torch uses (a kernel's output is written by all of them), in base pages or
    (huge=True) with transparent huge pages asked for; None where the OS cannot say."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    # The flags' values differ between architectures: Python's mmap module has this platform's.
    PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    MADV_PAGE_KIND = getattr(mmap, "MADV_HUGEPAGE" if huge else "MADV_NOHUGEPAGE", None)
    MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux 5.14; Python names it from 3.13
    page = os.sysconf("SC_PAGE_SIZE")
    threads = max(1, torch.get_num_threads())
    part = -(-nbytes // page // threads) * page  # each thread's share, whole pages
    failed = []

    def populate(p):  # ctypes releases the GIL for the call: the threads run in parallel
        if libc.madvise(p, part, MADV_POPULATE_WRITE) != 0:
            failed.append("madvise")

    def fresh_pages(pool):
        p = libc.mmap(None, part * threads, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0)
        if p is None or p == ctypes.c_void_p(-1).value:
            failed.append("mmap")
            return
        try:
            if MADV_PAGE_KIND is not None:
                libc.madvise(p, part * threads, MADV_PAGE_KIND)
            list(pool.map(populate, [p + i * part for i in range(threads)]))
        finally:
            libc.munmap(p, part * threads)

    with ThreadPoolExecutor(threads) as pool:
        fresh_pages(pool)
        if failed:  # a kernel before 5.14 refuses MADV_POPULATE_WRITE
            return None
        m = measure(lambda: fresh_pages(pool), min_run_time)
    return None if failed else fastest(m) / (part * threads // page)


class _no_tf32:
    """Full float32 GEMMs on CUDA, so the peak is an FMA peak and not a TF32 tensor-core rate."""

    def __enter__(self):
        with warnings.catch_warnings():  # the flag is deprecated in favour of fp32_precision in newer torch
            warnings.simplefilter("ignore")
            self._old = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32 = self._old
