"""The benchmark suite: its roofline formulas against hand counts, its peers against numpy, its
registry, and one tiny end-to-end run. No timing is asserted (speed is shown by the suite itself)."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.polynomial as npp
import pytest
import torch

from benchmarks import eager, registry
from benchmarks.registry import Case, Grid, Peer, fmt_count, generate, register
from benchmarks import roofline as roofline_module
from benchmarks.roofline import (Limits, base_pages_per_fault, features_bytes, features_fmas, polyval_bytes, polyval_fmas,
                                 roofline_time)
from benchmarks.runner import RunConfig, run_case, saved_bytes

ROOT = Path(__file__).resolve().parents[1]

NUMPY_VAL = {"power": npp.polynomial.polyval, "chebyshev": npp.chebyshev.chebval, "legendre": npp.legendre.legval,
             "hermite": npp.hermite.hermval, "hermite_e": npp.hermite_e.hermeval, "laguerre": npp.laguerre.lagval}
NUMPY_VANDER = {"power": npp.polynomial.polyvander, "chebyshev": npp.chebyshev.chebvander,
                "legendre": npp.legendre.legvander, "hermite": npp.hermite.hermvander,
                "hermite_e": npp.hermite_e.hermevander, "laguerre": npp.laguerre.lagvander}


# ---------------------------------------------------------------------------------------------
# Roofline formulas against hand counts.


def test_polyval_bytes_hand_counts():
    # fwd: x read + y written (2 x 4 MB) + 17 float32 coefficients
    assert polyval_bytes(10**6, 16, 4, "fwd") == 8_000_000 + 68
    # fwd+bwd: x, y, grad, x again, grad_x (5 x 4000 B) + coeffs read twice and grad_coeffs written (3 x 12 B)
    assert polyval_bytes(1000, 2, 4, "fwd+bwd") == 20_000 + 36
    # bfloat16 halves everything
    assert polyval_bytes(1000, 2, 2, "fwd") == 4000 + 6


def test_polyval_fmas_hand_counts():
    n = 10**6
    assert polyval_fmas(n, 16, "power", "fwd") == 16 * n                  # Horner: one FMA per degree
    assert polyval_fmas(n, 16, "power", "fwd+bwd") == 64 * n              # fwd, grad_x series, powers, moments
    assert polyval_fmas(n, 8, "chebyshev", "fwd") == 16 * n               # Clenshaw: 2 per step
    assert polyval_fmas(n, 8, "chebyshev", "fwd+bwd") == 8 * n * (2 + 2 + 1 + 1)
    assert polyval_fmas(n, 4, "legendre", "fwd") == 12 * n


def test_features_hand_counts():
    n = 1000
    assert features_bytes(n, 8, 4, "fwd") == 4 * n + 9 * 4 * n            # x read, (N, 9) written
    assert features_bytes(n, 8, 4, "fwd+bwd") == 40 * n + 36 * n + 8 * n  # + grad read, x read, grad_x written
    assert features_fmas(n, 8, "power", "fwd") == 8 * n
    assert features_fmas(n, 8, "power", "fwd+bwd") == 8 * n + 16 * n
    assert features_fmas(n, 4, "hermite", "fwd") == 8 * n


def test_roofline_is_the_slower_bound():
    assert roofline_time(2e9, 1, bandwidth=1e9, peak=1e9) == pytest.approx(2.0)
    assert roofline_time(1, 3e9, bandwidth=1e9, peak=1e9) == pytest.approx(3.0)
    # new pages from the OS come on top of either bound, and so does torch's call floor
    assert roofline_time(2e9, 1, bandwidth=1e9, peak=1e9, fresh_pages=1000, page_time=1e-6) == pytest.approx(2.001)
    assert roofline_time(1, 3e9, bandwidth=1e9, peak=1e9, call_floor=0.5) == pytest.approx(3.5)


def test_limits_are_the_probes_fastest_blocks(monkeypatch):
    # A limit is the machine's best: a probe's slow blocks (a neighbour's load) must not lower it.
    class Probe:  # a torch.utils.benchmark Measurement's two figures that matter here
        times = [4e-3, 1e-3, 2e-3]
        median = 2e-3

    monkeypatch.setattr(roofline_module, "measure", lambda fn, min_run_time: Probe())
    limits = Limits("cpu", min_run_time=0.01)
    assert limits.fma_peak(torch.float32) == pytest.approx(1024 ** 3 / 1e-3)
    assert limits.call_floor("fwd") == pytest.approx(1e-3)


def test_copy_bandwidth_leaves_the_call_cost_to_the_floor(monkeypatch):
    # A copy of n floats takes 2 us of call cost plus 8n bytes at 10 GB/s (a stand-in probe): the
    # bandwidth is the transfer's, the call cost being the roofline's floor term.
    monkeypatch.setattr(Limits, "_copy_time", lambda self, n: 2e-6 + 8 * n / 1e10)
    limits = Limits("cpu", min_run_time=0.01)
    assert limits.copy_bandwidth(1 << 20) == pytest.approx(1e10, rel=1e-4)
    # within noise of the call cost, the transfer is taken as an eighth of the copy: finite, not a division by ~0
    monkeypatch.setattr(Limits, "_copy_time", lambda self, n: 2e-6)
    assert Limits("cpu", min_run_time=0.01).copy_bandwidth(64) == pytest.approx(64 / (2e-6 / 8))


def test_call_floors_are_torch_calls_of_each_kind():
    limits = Limits("cpu", min_run_time=0.01)
    fwd, bwd1, bwd2 = limits.call_floor("fwd"), limits.call_floor("fwd+bwd", 1), limits.call_floor("fwd+bwd", 2)
    # A multiply called from Python costs at least ~0.1 us, and a backward through the autograd
    # engine costs more than the forward alone.
    assert 1e-7 < fwd < 1e-3 and fwd < bwd1 and fwd < bwd2
    assert limits.call_floor("fwd+bwd", 5) == bwd2  # more inputs than two: the two-input floor, a lower bound
    assert set(limits.summary()["call_floor_us"]) == {"fwd", "fwd+bwd (1 input)", "fwd+bwd (2 inputs)"}


def test_stand_in_peers_are_timed_but_not_checked():
    # A peer whose outputs disagree is flagged; a declared stand-in (a limit doing only the costly
    # part of the op) is timed without the check, so the report does not flag it as wrong.
    n = 1000
    peers = {"polyfit": lambda case, inp: lambda: torch.ones(n),
             "wrong": lambda case, inp: lambda: torch.zeros(n),
             "stand_in": lambda case, inp: Peer(lambda: torch.zeros(n), compared=False)}
    case = Case(op="ones", mode="fwd", device="cpu", dtype=torch.float32, params={"n": n},
                make_inputs=lambda: {}, grad_inputs=(), peers=peers, bytes=4 * n, fmas=0)
    r = run_case(case, Limits("cpu", min_run_time=0.01), RunConfig(min_run_time=0.01))
    assert r["peers"]["wrong"]["agrees"] is False
    assert "agrees" not in r["peers"]["stand_in"] and r["peers"]["stand_in"]["median_s"] > 0


def test_page_time_is_measured_on_linux():
    page = Limits("cpu", min_run_time=0.01).page_time()
    if not sys.platform.startswith("linux"):
        assert page is None
        return
    # Zeroing 4 KiB alone takes ~0.1 us at memory speed; no OS takes a millisecond per page.
    assert page is not None and 1e-8 < page < 1e-3
    assert Limits("cuda").page_time() is None  # the OS's pages are a CPU limit


def test_page_time_is_the_faster_of_base_and_huge_pages(monkeypatch):
    import benchmarks.roofline as roofline
    for base, huge, best in ((9e-7, 2e-7, 2e-7), (9e-7, 1.8e-6, 9e-7), (9e-7, None, 9e-7), (None, None, None)):
        times = {False: base, True: huge}
        monkeypatch.setattr(roofline, "_populate_page_time", lambda nbytes, run, huge=False: times[huge])
        limits = Limits("cpu", min_run_time=0.01)
        assert limits.page_time() == best
        kinds = limits.summary()["fresh_page_us_by_page_kind"]
        assert kinds == {k: v * 1e6 for k, v in (("base", base), ("huge", huge)) if v is not None}


def test_huge_page_route_gets_retried_while_slower_than_base_pages(monkeypatch):
    import benchmarks.roofline as roofline
    huge_times = iter([4e-6, 3e-6, 2e-7, 1e-7])  # the OS compacting memory at first
    calls = []

    def probe(nbytes, run, huge=False):
        calls.append(huge)
        return next(huge_times) if huge else 9e-7
    monkeypatch.setattr(roofline, "_populate_page_time", probe)
    limits = Limits("cpu", min_run_time=0.01)
    assert limits.page_time() == 2e-7  # stops once huge pages beat base pages
    assert calls == [False, True, True, True]


def test_fresh_output_pages_join_the_roofline():
    # 48 MiB: above glibc's largest mmap threshold (32 MiB), so every call's output is new pages.
    n = 12 << 20
    case = Case(op="fresh_ones", mode="fwd", device="cpu", dtype=torch.float32, params={"n": n},
                make_inputs=lambda: {}, grad_inputs=(), peers={"polyfit": lambda case, inp: lambda: torch.ones(n)},
                bytes=4 * n, fmas=0, fill_shape=(n,))
    limits = Limits("cpu", min_run_time=0.01)
    r = run_case(case, limits, RunConfig(min_run_time=0.01))
    page = limits.page_time()
    if page is None or not r.get("fill_page_faults_per_call"):
        assert r["pages_s"] == 0 and "pages" not in r["bound"]
        return
    # The fill's pages: the baseline (a fill itself) met as many.
    pages = r["roofline_pages_per_call"]
    assert pages == pytest.approx(r["fill_page_faults_per_call"], rel=0.05) and pages > 0
    assert r["pages_s"] == pytest.approx(pages * page)
    assert r["bound"] == "memory + pages"
    assert r["roofline_s"] == pytest.approx(r["call_floor_s"] + 4 * n / (r["bandwidth_GBps"] * 1e9) + r["pages_s"])
    assert 0 < r["call_floor_s"] == limits.call_floor("fwd")


def test_pages_the_baseline_did_not_meet_stay_out_of_its_roofline():
    # The baseline writes into memory it keeps; the fill's 48 MiB outputs are new pages every call
    # (above glibc's largest mmap threshold).
    n = 12 << 20
    out = torch.zeros(n)
    case = Case(op="kept_out", mode="fwd", device="cpu", dtype=torch.float32, params={"n": n},
                make_inputs=lambda: {}, grad_inputs=(), peers={"polyfit": lambda case, inp: lambda: out.fill_(1.0)},
                bytes=4 * n, fmas=0, fill_shape=(n,))
    r = run_case(case, Limits("cpu", min_run_time=0.01), RunConfig(min_run_time=0.01))
    assert r["fill_page_faults_per_call"] > n * 4 / 4096 / 2  # the fill met fresh pages
    assert r["peers"]["polyfit"]["page_faults_per_call"] < 5
    assert r["roofline_pages_per_call"] < r["fill_page_faults_per_call"] / 4


@pytest.mark.parametrize("baseline_faults, expected", [
    # polyfit's output recycled in most rounds: the median round's pages, none (a mean: 1200)
    ([0, 0, 0, 10, 10], lambda per_fault: 0),
    # fresh in most: the fill's pages, as far as 10 faults (in huge pages where there are) map them
    ([10, 10, 10, 0, 0], lambda per_fault: min(3000, 10 * per_fault)),
    ([1, 1, 1, 1, 1], lambda per_fault: min(3000, per_fault)),
])
def test_roofline_pages_are_the_median_rounds(monkeypatch, baseline_faults, expected):
    # Stand-in fault counts: the fill meets 3000 fresh pages in every round, the baseline as scripted.
    from benchmarks import runner

    def baseline():
        return torch.ones(8)

    script = {"baseline": iter(baseline_faults), "fill": iter([3000.0] * 5)}
    real = runner._timed_round
    monkeypatch.setattr(runner, "_timed_round", lambda stmt, seconds, device: (
        real(stmt, seconds, device)[0], float(next(script["baseline" if stmt is baseline else "fill"]))))
    case = Case(op="scripted_faults", mode="fwd", device="cpu", dtype=torch.float32, params={"n": 8},
                make_inputs=lambda: {}, grad_inputs=(), peers={"polyfit": lambda case, inp: baseline},
                bytes=32, fmas=0, fill_shape=(8,))
    r = run_case(case, Limits("cpu", min_run_time=0.01), RunConfig(min_run_time=0.01))
    assert r["roofline_pages_per_call"] == expected(base_pages_per_fault())


def test_page_faults_are_counted_over_the_timed_calls(monkeypatch):
    # Each call of the statement faults 7 pages (a stand-in counter): a round's count divides by
    # every call the round made, calibration included, so the figure is exact.
    from benchmarks import runner

    counter = {"faults": 0, "calls": 0}

    def stmt():
        counter["faults"] += 7
        counter["calls"] += 1

    monkeypatch.setattr(runner, "_minor_faults", lambda: counter["faults"])
    m, faults = runner._timed_round(stmt, 0.01, "cpu")
    assert counter["calls"] > len(m.times)  # blocks of several calls, and the calibration's
    assert faults == pytest.approx(7.0)
    assert runner._timed_round(stmt, 0.01, "cuda")[1] is None  # page faults are a CPU figure


def test_fmt_count():
    assert [fmt_count(n) for n in (1000, 10**6, 2000, 2500, 999)] == ["1e3", "1e6", "2e3", "2500", "999"]


# ---------------------------------------------------------------------------------------------
# The peers compute what numpy.polynomial computes.


@pytest.mark.parametrize("basis", list(NUMPY_VAL))
@pytest.mark.parametrize("degree", [0, 1, 2, 7])
def test_eager_peers_match_numpy(basis, degree):
    rng = np.random.default_rng(degree)
    x = rng.uniform(-1, 1, 50)
    c = rng.standard_normal(degree + 1)
    xt, ct = torch.from_numpy(x), torch.from_numpy(c)
    want = NUMPY_VAL[basis](x, c)
    np.testing.assert_allclose(eager.horner(xt, ct, basis).numpy(), want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(eager.seed_polyval(xt, ct, basis).numpy(), want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(eager.seed_features(xt, degree, basis).numpy(), NUMPY_VANDER[basis](x, degree),
                               rtol=1e-10, atol=1e-10)
    if basis == "power" and degree >= 1:  # torch.linalg.vander needs two columns or more
        np.testing.assert_allclose(eager.vander(xt, degree).numpy(), npp.polynomial.polyvander(x, degree))


# ---------------------------------------------------------------------------------------------
# Memory accounting and the registry.


def test_cpu_peak_bytes_follows_the_allocator():
    from benchmarks.runner import cpu_peak_bytes

    n = 1 << 20
    x = torch.ones(n)
    assert 8 * n <= cpu_peak_bytes(lambda: (x * 2) * 3) < 8 * n + 1024  # a temporary, then the output
    assert 4 * n <= cpu_peak_bytes(lambda: (x * 2).mul_(3)) < 4 * n + 1024  # in place: no temporary
    assert cpu_peak_bytes(lambda: None) == 0


def test_saved_bytes_counts_unique_storages():
    x = torch.ones(1000, requires_grad=True)   # 4000 B
    y = torch.ones(250, 2, requires_grad=True)  # 2000 B
    assert saved_bytes(lambda: x * x) == 4000           # x saved twice, one storage
    assert saved_bytes(lambda: x.view(250, 4)[:, :2] * y) == 6000  # a view counts its whole storage
    assert saved_bytes(lambda: x + 1) == 0


def test_quick_preset_cases():
    names = [c.name for c in generate(registry.preset_grids("quick", ("cpu",)))]
    assert "polyval fwd power D=16 N=1e6 float32 cpu" in names
    assert "features fwd+bwd chebyshev D=8 N=1e6 float32 cpu" in names
    assert "polyval fwd power D=16 N=1e6 bfloat16 cpu" in names
    assert "polyval fwd+bwd power D=2 N=1e4 float32 cpu" in names
    assert len(names) == len(set(names))


def test_polyval_and_features_cases_time_a_fill_of_their_output():
    # The fill's page faults are the roofline's fresh pages: an output over 32 MiB is new memory.
    n = 1 << 23
    cases = list(generate([Grid(ops=("polyval", "features"), n=(n,), degrees=(4,), dtypes=(torch.float32,))]))
    assert {c.op for c in cases} == {"polyval", "features"}
    for case in cases:  # polyval's output has x's shape (n,); features' is (n, degree + 1)
        assert case.fill_shape == ((n,) if case.op == "polyval" else (n, 5)), case.name


@pytest.fixture
def dummy_op():
    """A registered op with two peers and one that does not apply, removed afterwards."""

    @register("dummy_square")
    def cases(grid: Grid):
        for n in grid.n:
            for mode in grid.modes:
                yield Case(op="dummy_square", mode=mode, device="cpu", dtype=torch.float32, params={"n": n},
                           make_inputs=lambda n=n: {"x": torch.linspace(-1, 1, n)}, grad_inputs=("x",),
                           peers={"polyfit": lambda case, inp: Peer(lambda: inp["x"] * inp["x"], note="x*x"),
                                  "pow": lambda case, inp: lambda: inp["x"].pow(2),
                                  "wrong": lambda case, inp: lambda: inp["x"] + 1,
                                  "not_here": lambda case, inp: None},
                           bytes=8 * n, fmas=n)

    yield "dummy_square"
    del registry.GENERATORS["dummy_square"]


def test_registered_op_runs(dummy_op):
    cases = generate([Grid(ops=(dummy_op,), n=(4096,))])
    assert [c.name for c in cases] == ["dummy_square fwd N=4096 float32 cpu", "dummy_square fwd+bwd N=4096 float32 cpu"]
    limits = Limits("cpu", min_run_time=0.01)
    for case in cases:
        r = run_case(case, limits, RunConfig(min_run_time=0.01))
        assert set(r["peers"]) == {"polyfit", "pow", "wrong"}
        assert r["peers"]["polyfit"]["note"] == "x*x"
        assert r["peers"]["pow"]["agrees"] and not r["peers"]["wrong"]["agrees"]
        assert all(p["median_s"] > 0 and p["runs"] >= p["rounds"] == 5 for p in r["peers"].values())
        assert r["speedup"]["pow"] == pytest.approx(r["peers"]["pow"]["median_s"] / r["peers"]["polyfit"]["median_s"])
        assert r["roofline_s"] > 0 and r["bandwidth_GBps"] > 0
        if case.mode == "fwd+bwd":
            assert r["peers"]["polyfit"]["saved_bytes"] == 4 * 4096  # x, saved twice
        assert r["peers"]["polyfit"]["page_faults_per_call"] >= 0


# ---------------------------------------------------------------------------------------------
# End to end: python -m benchmarks on a tiny case list.


@pytest.mark.inductor
def test_suite_smoke(tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "benchmarks", "--n", "1000", "--degree", "2", "--op", "polyval",
           "--basis", "power", "--dtype", "float32", "--min-run-time", "0.01", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The terminal: one progress line per case, then the table.
    assert "[1/2] polyval fwd power D=2 N=1e3 float32 cpu" in proc.stdout
    assert "[2/2] polyval fwd+bwd power D=2 N=1e3 float32 cpu" in proc.stdout
    assert "compile_horner" in proc.stdout.split("[2/2]")[1]

    run = json.loads((out / "results.json").read_text())
    assert run["machine"]["torch"] == torch.__version__ and run["machine"]["cores"] >= 1
    assert run["limits"]["cpu"]["large_copy_bandwidth_GBps"] > 0
    by_mode = {r["mode"]: r for r in run["results"]}
    all_peers = {"polyfit", "seed", "eager_horner", "compile_seed", "compile_horner", "compile_polyfit", "numpy",
                 "reference"}
    assert set(by_mode["fwd"]["peers"]) == all_peers
    assert set(by_mode["fwd+bwd"]["peers"]) == all_peers - {"numpy"}  # numpy has no backward
    for r in run["results"]:
        for name, p in r["peers"].items():
            assert "error" not in p, (name, p)
            assert p["median_s"] > 0 and p["iqr_s"] >= 0 and p["runs"] >= 1
            assert p.get("agrees", True), (name, p)
        assert set(r["speedup"]) == set(r["peers"]) - {"polyfit"}
        assert r["roofline_pct"]["polyfit"] > 0
    assert by_mode["fwd+bwd"]["peers"]["polyfit"]["saved_bytes"] > 0
    # Peak memory on the CPU: every torch peer (numpy's arrays are not torch's to count); polyfit's
    # forward allocates its output and nothing else (1000 float32 and the coefficients' row view).
    for r in run["results"]:
        assert {p for p, rec in r["peers"].items() if "peak_bytes" in rec} == set(r["peers"]) - {"numpy"}
    assert 4000 <= by_mode["fwd"]["peers"]["polyfit"]["peak_bytes"] < 4000 + 256
    assert by_mode["fwd"]["peers"]["seed"]["peak_bytes"] >= 3 * 4000  # the stacked (N, 3) powers

    report = (out / "report.md").read_text()
    assert "## polyval fwd" in report and "## polyval fwd+bwd" in report
    assert "| power D=2 N=1e3 float32 cpu |" in report
    assert "## Memory" in report and "### polyval fwd" in report and "### polyval fwd+bwd" in report
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib" in report
    else:
        assert sorted(p.name for p in out.glob("*.png")) == [
            "speedup_polyval_fwd_cpu.png", "speedup_polyval_fwdbwd_cpu.png",
            "time_polyval_fwd_power_float32_cpu.png", "time_polyval_fwdbwd_power_float32_cpu.png"]


def test_edge_cases_run_without_errors():
    """Degree 0 (x unused in fwd+bwd) and bfloat16 (no torch.linalg.vander) run every applicable peer."""
    grids = [Grid(ops=("polyval", "features"), n=(64,), degrees=(0,), dtypes=(torch.float32,)),
             Grid(ops=("features",), modes=("fwd",), n=(64,), degrees=(4,), dtypes=(torch.bfloat16,))]
    cases = generate(grids)
    names = [c.name for c in cases]
    assert "features fwd+bwd power D=0 N=64 float32 cpu" not in names  # nothing depends on x
    assert "polyval fwd+bwd power D=0 N=64 float32 cpu" in names
    limits = Limits("cpu", min_run_time=0.01)
    cfg = RunConfig(min_run_time=0.01, peers={"seed", "eager_horner", "torch_vander", "numpy", "reference"})
    for case in cases:
        r = run_case(case, limits, cfg)
        assert all("error" not in p for p in r["peers"].values()), (case.name, r["peers"])
        assert all(p.get("agrees", True) for p in r["peers"].values()), (case.name, r["peers"])
        if case.dtype == torch.bfloat16:
            assert "torch_vander" not in r["peers"] and "agrees" not in r["peers"]["seed"]
        if case.op == "features":
            assert r["fill_s"] > 0
            assert r["baseline_over_fill"] == pytest.approx(r["peers"]["polyfit"]["median_s"] / r["fill_s"])


@pytest.mark.inductor
def test_layer_and_fit_cases_run_every_peer(caplog):
    """PolyLinear and fit, tiny: every peer runs and agrees with polyfit, torch.compile of polyfit's
    own call included; the fit's expected graph break is a note, not a warning."""
    grids = [Grid(ops=("polylinear",), modes=("fwd", "fwd+bwd"), bases=("chebyshev",), dtypes=(torch.float32,),
                  n=(16,), degrees=(3,), extra={"in_features": (8,), "out_features": (4,)}),
             Grid(ops=("fit",), modes=("fwd",), bases=("power", "legendre"), dtypes=(torch.float64,), n=(24,),
                  degrees=(3,), extra={"curves": (10,)})]
    limits = Limits("cpu", min_run_time=0.01)
    cfg = RunConfig(min_run_time=0.01)
    expected = {"polylinear": {"polyfit", "compile_polyfit", "chebykan", "compile_chebykan", "gemms"},
                "fit": {"polyfit", "compile_polyfit", "numpy_loop", "reference"}}
    for case in generate(grids):
        with caplog.at_level(logging.WARNING):
            r = run_case(case, limits, cfg)
        peers = r["peers"]
        want = expected[case.op] | ({"torch_lstsq"} if case.name.startswith("fit fwd power") else set())
        assert set(peers) == want, case.name
        assert all("error" not in p and p["median_s"] > 0 for p in peers.values()), (case.name, peers)
        assert all(p["agrees"] for name, p in peers.items() if name != "polyfit" and "agrees" in p), (case.name, peers)
        assert "agrees" in peers["compile_polyfit"], case.name
        if case.op == "fit":
            assert "graph break" in peers["compile_polyfit"]["note"]
            assert not [rec for rec in caplog.records if "Graph break" in rec.getMessage()], case.name


def test_a_stopped_run_leaves_the_cases_it_finished(tmp_path):
    # A run cut short (a time limit on a lent GPU machine) must still leave results.json and report.md.
    stop_on_second_case = (
        "import sys\n"
        "from benchmarks import cli, runner\n"
        "real, done = runner.run_case, []\n"
        "def run_case(*args, **kwargs):\n"
        "    if done:\n"
        "        raise SystemExit(3)\n"
        "    done.append(1)\n"
        "    return real(*args, **kwargs)\n"
        "runner.run_case = run_case\n"
        "cli.main(sys.argv[1:])\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-c", stop_on_second_case, "--n", "1000", "--degree", "2", "--op", "polyval",
           "--basis", "power", "--dtype", "float32", "--peers", "compile_horner", "--min-run-time", "0.01",
           "--no-plots", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    run = json.loads((tmp_path / "results.json").read_text())
    assert [r["name"] for r in run["results"]] == ["polyval fwd power D=2 N=1e3 float32 cpu"]
    assert run["partial"].startswith("1 of 2 cases")
    assert set(run["results"][0]["peers"]) == {"polyfit", "compile_horner"}
    assert "**Partial run**: 1 of 2 cases" in (tmp_path / "report.md").read_text()
