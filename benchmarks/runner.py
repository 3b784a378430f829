"""Running one case: every peer warmed up, timed, checked against the baseline, memory measured."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.benchmark import Measurement

from .registry import Case, Peer, dtype_name
from .roofline import Counted, Limits, base_pages_per_fault, roofline_time, timed_statement, timer_of

# Agreement with the baseline, max |peer - baseline| / max |baseline| over every output: a check
# that the peers compute the same thing. Half types get no verdict, only the figure: eager peers
# round to bfloat16 at every step (Clenshaw at degree 32 loses most digits), polyfit computes in
# float32, so their difference measures the peer's rounding, not a mistake.
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-3}


@dataclass
class RunConfig:
    min_run_time: float = 0.2          # seconds of timed runs per peer, over all rounds
    rounds: int = 5                    # timing rounds, each peer in turn in each round
    peers: Optional[set] = None        # only these peers (the baseline always runs)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _as_tensors(out) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _as_tensors(o)]
    return [torch.from_numpy(out)]  # a numpy peer


def _rel_err(outs: list, refs: list) -> float:
    err = 0.0
    for a, b in zip(outs, refs):
        b = b.detach()
        a = a.detach().to(device=b.device)
        dt = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
        scale = b.to(dt).abs().max().item() if b.numel() else 0.0
        diff = (a.to(dt) - b.to(dt)).abs().max().item() if b.numel() else 0.0
        err = max(err, diff / scale if scale > 0 else diff)
    return err


def saved_bytes(forward) -> int:
    """Bytes autograd saves for backward during forward(): the sum of the unique storages saved."""
    storages = {}

    def pack(t):
        try:
            s = t.untyped_storage()
            storages[(t.device, s.data_ptr())] = s.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without a storage of their own
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(storages.values())


def peak_bytes(stmt, device: str) -> Optional[int]:
    """Peak bytes torch allocated during stmt() beyond what it held before (outputs included); None
    on a device that cannot say."""
    if device == "cpu":
        return cpu_peak_bytes(stmt)
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = stmt()
    torch.cuda.synchronize()
    del out
    return torch.cuda.max_memory_allocated() - base


def cpu_peak_bytes(stmt) -> int:
    """peak_bytes on the CPU, where torch keeps no peak counter: the highest running sum of the
    profiler's allocation events (bytes allocated, negative when freed), in time order. Not their
    "Total Allocated", which is each allocator's own count: torch's counts what it allocated while
    profiling, polyfit's kept output memory everything it has handed out."""
    # The profiler announces every start and stop on stderr, between the suite's progress lines,
    # unless told otherwise before its first use (6: above its loudest level).
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        out = stmt()
        del out
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = sorted((e for e in json.load(f)["traceEvents"]
                             if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0),  # 0: CPU
                            key=lambda e: e["ts"])
    return max(itertools.accumulate((e["args"]["Bytes"] for e in events), initial=0))


def _minor_faults() -> Optional[int]:
    try:
        import resource
    except ImportError:  # not on every platform
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _record_error(rec: dict, e: Exception) -> None:
    rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    if isinstance(e, torch.OutOfMemoryError):
        torch.cuda.empty_cache()


def _peer_order(case: Case, only: Optional[set]) -> list:
    names = [case.baseline] + [p for p in case.peers if p != case.baseline]
    return [p for p in names if p in case.peers and (only is None or p in only or p == case.baseline)]


def _timed_round(stmt, seconds: float, device: str):
    """One round of timed runs of stmt() on all intra-op threads, and on the CPU its minor page faults
    per call (else None), counted over the very calls the round made: whether a large output comes
    as fresh pages depends on the allocator's state (glibc serves blocks over 32 MiB by mmap unless
    its heap has room), which a separate count could meet differently."""
    counted = Counted(stmt)
    before = _minor_faults() if device == "cpu" else None
    m = timer_of(counted).blocked_autorange(min_run_time=seconds)
    faults = None if before is None else (_minor_faults() - before) / counted.calls
    return m, faults


def run_case(case: Case, limits: Limits, cfg: RunConfig) -> dict:
    # A forward is timed with grad mode off for the whole case rather than a `with torch.no_grad()`
    # around each call, which costs 1.5 us a call: more than polyfit's own forward at 10^4 points.
    with torch.set_grad_enabled(case.mode != "fwd"):
        return _run_case(case, limits, cfg)


def _run_case(case: Case, limits: Limits, cfg: RunConfig) -> dict:
    start = time.perf_counter()
    inputs = case.make_inputs()
    wrt_inputs = []
    if case.mode == "fwd+bwd":
        for k in case.grad_inputs:
            inputs[k].requires_grad_(True)
            wrt_inputs.append(inputs[k])
    tol = TOLERANCE.get(case.dtype)

    peers: dict = {}
    stmts: dict = {}  # the peers that ran, ready to time
    reference_outputs = None
    grad_out = None
    for name in _peer_order(case, cfg.peers):
        rec: dict = {}
        try:
            made = case.peers[name](case, inputs)
            if made is None:
                continue  # does not apply to this case
            peer = made if isinstance(made, Peer) else Peer(made)
            if peer.note:
                rec["note"] = peer.note
            wrt = wrt_inputs + list(peer.wrt)

            # First call: torch.compile compiles here (its time is reported, never timed).
            t0 = time.perf_counter()
            if case.mode == "fwd":
                outputs = _as_tensors(peer.fn())
            else:
                out = peer.fn()
                if grad_out is None:  # one upstream gradient for all peers, from the first output
                    g = torch.Generator(device=out.device).manual_seed(2)
                    grad_out = torch.randn(out.shape, generator=g, device=out.device).to(out.dtype)
                outputs = [out.detach()] + list(torch.autograd.grad(out, wrt, grad_out, allow_unused=True,
                                                                    materialize_grads=True))
                del out
            _sync(case.device)
            rec["first_call_s"] = time.perf_counter() - t0

            if reference_outputs is None:
                reference_outputs = outputs
            elif peer.compared:
                err = _rel_err(outputs, reference_outputs)
                rec["rel_err"] = err
                if tol is not None:
                    rec["agrees"] = bool(err <= tol)
            del outputs
            stmt = timed_statement(peer.fn, case.mode, wrt, grad_out)
            stmt()  # warm-up: first touch of pages, lazy initialisation
            stmts[name] = stmt
            if case.mode == "fwd+bwd" and name != "numpy":
                rec["saved_bytes"] = saved_bytes(peer.fn)
        except Exception as e:  # one failing peer (e.g. out of memory) must not end the run
            _record_error(rec, e)
        peers[name] = rec
    del reference_outputs

    # Timing in rounds, every peer in turn in each round, so that a slow spell of a shared machine
    # falls on all of them alike; each peer's runs of all rounds are merged into one median.
    # The fill limit (allocating and filling a tensor of the output's size, like an op's new output)
    # runs right after the baseline in each round: large fresh allocations cost page faults or not
    # depending on the allocator's state (glibc serves blocks over 32 MiB by mmap unless its heap
    # has room), so it must see the baseline's state.
    fill_stmt = None
    if case.fill_shape is not None and case.baseline in stmts:
        shape, dtype = case.fill_shape, case.dtype
        fill_stmt = lambda: torch.ones(shape, dtype=dtype, device=case.device)  # noqa: E731
    rounds: dict = {name: [] for name in stmts}
    faults: dict = {name: [] for name in stmts}
    fill_rounds: list = []
    fill_faults: list = []
    per_round = cfg.min_run_time / cfg.rounds
    for _ in range(cfg.rounds):
        for name in list(stmts):
            try:
                m, f = _timed_round(stmts[name], per_round, case.device)
                rounds[name].append(m)
                faults[name].append(f)
                if name == case.baseline and fill_stmt is not None:
                    m, f = _timed_round(fill_stmt, per_round, case.device)
                    fill_rounds.append(m)
                    fill_faults.append(f)
            except Exception as e:
                _record_error(peers[name], e)
                del stmts[name]

    def mean_faults(per_round_faults):
        return None if None in per_round_faults or not per_round_faults else sum(per_round_faults) / len(per_round_faults)

    fill = {"median_s": Measurement.merge(fill_rounds)[0].median} if fill_rounds else None
    if fill is not None and mean_faults(fill_faults) is not None:
        fill["page_faults_per_call"] = mean_faults(fill_faults)
    for name, stmt in stmts.items():
        m = Measurement.merge(rounds[name])[0]
        peers[name].update(median_s=m.median, iqr_s=m.iqr, mean_s=m.mean, runs=len(m.times),
                           rounds=cfg.rounds)
        if mean_faults(faults[name]) is not None:
            peers[name]["page_faults_per_call"] = mean_faults(faults[name])
        try:
            # numpy's arrays are not torch's to count
            pb = None if name.startswith("numpy") else peak_bytes(stmt, case.device)
            if pb is not None:
                peers[name]["peak_bytes"] = pb
        except Exception as e:
            _record_error(peers[name], e)
    del inputs, grad_out, stmts

    # The limit, measured now on this device (roofline.py). Fresh pages, in each round: those the
    # fill met, but no more than the baseline's own faults in that round could have mapped (one
    # fault maps up to a huge page's worth), since an output the allocator recycled for the
    # baseline cost it no page whatever the fill met after it; then the median round's, as the
    # times are medians (a round of fresh pages among recycled ones would move a mean, not them).
    bw = limits.copy_bandwidth(case.bytes)
    peak = limits.fma_peak(case.compute_dtype)
    floor = limits.call_floor(case.mode, len(case.grad_inputs))
    t_mem, t_fma = case.bytes / bw, case.fmas / peak
    fresh_pages = 0.0
    if fill is not None and "page_faults_per_call" in fill:
        # the fill runs right after the baseline in each round: their counts pair up
        per_round = [min(f, b * base_pages_per_fault()) for f, b in zip(fill_faults, faults[case.baseline])]
        fresh_pages = statistics.median(per_round)
    page_time = limits.page_time() if fresh_pages else None
    t_pages = fresh_pages * page_time if page_time else 0.0
    # The bound named is the largest term; the call floor's where it outweighs the others together.
    bound = "memory" if t_mem >= t_fma else "compute"
    bound = "call" if floor > max(t_mem, t_fma) + t_pages else bound + (" + pages" if t_pages > 0 else "")
    result = {
        "name": case.name, "op": case.op, "mode": case.mode, "device": case.device,
        "dtype": dtype_name(case.dtype), "params": dict(case.params), "baseline": case.baseline,
        "bytes": case.bytes, "fmas": case.fmas,
        "bandwidth_GBps": bw / 1e9, "fma_peak_GFMAps": peak / 1e9,
        "compute_dtype": dtype_name(case.compute_dtype),
        "roofline_s": roofline_time(case.bytes, case.fmas, bw, peak, fresh_pages, page_time or 0.0, floor),
        "bound": bound,
        "pages_s": t_pages,
        "roofline_pages_per_call": fresh_pages,
        "call_floor_s": floor,
        "peers": peers,
    }
    if fill is not None:
        result["fill_s"] = fill["median_s"]
        if "page_faults_per_call" in fill:
            result["fill_page_faults_per_call"] = fill["page_faults_per_call"]
    base = peers.get(case.baseline, {}).get("median_s")
    result["speedup"] = {p: r["median_s"] / base for p, r in peers.items()
                         if base and "median_s" in r and p != case.baseline}
    result["roofline_pct"] = {p: 100.0 * result["roofline_s"] / r["median_s"] for p, r in peers.items() if "median_s" in r}
    if base and "fill_s" in result:
        result["baseline_over_fill"] = base / result["fill_s"]
    result["wall_s"] = time.perf_counter() - start
    return result
