"""The memory polyfit keeps for its large CPU outputs (polyfit/cache.py, csrc/cpu/output_cache.cpp):
reused, bounded, released on request, correct under threads and fork, and seen by the profiler."""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch

import oracle
import polyfit
from polyfit import _backend

pytestmark = pytest.mark.skipif(not _backend.STATE.loaded, reason="needs polyfit's compiled kernels")

N = 10**6  # float32 outputs of 4 MB: above the 2 MB from which polyfit keeps their memory
BLOCK = 2 << 20  # blocks come in whole 2 MB, aligned to 2 MB
KEPT_4MB = 2 * BLOCK  # what a 4,000,000-byte output's block holds


@pytest.fixture
def cache():
    """An empty cache with the default capacity; whatever a test changes is restored."""
    polyfit.empty_cache()
    old = polyfit.set_cache_capacity(256 << 20)
    yield
    polyfit.set_cache_capacity(old)
    polyfit.empty_cache()


def expected(x, c):
    return oracle.val(x.double().numpy(), c.double().numpy(), "power")


def assert_polyval(y, x, c):
    np.testing.assert_allclose(y.double().numpy(), expected(x, c), rtol=1e-5, atol=1e-5)


def test_a_freed_output_is_reused(cache):
    x, c = torch.rand(N), torch.rand(4)
    y = polyfit.polyval(x, c)
    ptr = y.data_ptr()
    assert ptr % BLOCK == 0
    del y
    info = polyfit.cache_info()
    assert (info["kept_blocks"], info["kept_bytes"]) == (1, KEPT_4MB)
    y = polyfit.polyval(x, 2 * c)
    assert y.data_ptr() == ptr
    after = polyfit.cache_info()
    assert after["reuses"] == info["reuses"] + 1 and after["new_blocks"] == info["new_blocks"]
    assert after["kept_blocks"] == 0
    assert_polyval(y, x, 2 * c)


def test_the_most_recently_freed_block_is_reused_first(cache):
    # its lines may still be in cache; taking equal blocks in turn doubled a 68 MB features call
    x, c = torch.rand(N), torch.rand(3)
    a, b = polyfit.polyval(x, c), polyfit.polyval(x, c)
    pa, pb = a.data_ptr(), b.data_ptr()
    del a
    del b  # b freed last
    y = polyfit.polyval(x, c)
    assert y.data_ptr() == pb
    del y
    for _ in range(3):  # a loop of calls keeps to that one block
        y = polyfit.polyval(x, c)
        assert y.data_ptr() == pb
        del y
    assert pa != pb


def test_reused_memory_holds_nothing_of_its_last_tensor(cache):
    # A block last holding 7s serves a slightly smaller output, and features and grad_x after it:
    # every element is the kernel's.
    full = polyfit.polyval(torch.zeros(N), torch.tensor([7.0]))
    del full
    x, c = torch.rand(N - 50_000), torch.rand(3)
    y = polyfit.polyval(x, c)
    assert polyfit.cache_info()["reuses"] >= 1
    assert_polyval(y, x, c)
    del y
    xs = torch.rand(N // 4)  # (N/4, 4) float32: the same 4 MB
    v = polyfit.features(xs, 3)
    np.testing.assert_allclose(v.double().numpy(), oracle.vander(xs.double().numpy(), 3, "power"),
                               rtol=1e-6, atol=1e-7)
    del v
    xg = torch.rand(N, requires_grad=True)
    (gx,) = torch.autograd.grad(polyfit.polyval(xg, c), xg, torch.ones(N))
    np.testing.assert_allclose(gx.double().numpy(),
                               oracle.val(xg.detach().double().numpy(), c.double().numpy(), "power", derivative=1),
                               rtol=1e-5, atol=1e-5)


def test_a_much_larger_block_is_not_taken(cache):
    big = polyfit.features(torch.rand(N), 3)  # 16 MB
    del big
    before = polyfit.cache_info()
    y = polyfit.polyval(torch.rand(N), torch.rand(2))  # 4 MB: a new block, the 16 MB one stays kept
    after = polyfit.cache_info()
    assert after["new_blocks"] == before["new_blocks"] + 1 and after["reuses"] == before["reuses"]
    assert after["kept_bytes"] == before["kept_bytes"] == 8 * BLOCK
    del y


def test_small_outputs_use_torchs_allocator(cache):
    before = polyfit.cache_info()
    y = polyfit.polyval(torch.rand(N // 2 - 1000), torch.rand(3))  # just under 2 MB
    del y
    assert polyfit.cache_info() == before


def test_the_capacity_bounds_what_is_kept(cache):
    polyfit.set_cache_capacity(2 * KEPT_4MB)
    c = torch.rand(3)
    ys = [polyfit.polyval(torch.rand(N), c) for _ in range(3)]
    del ys
    info = polyfit.cache_info()
    assert (info["kept_blocks"], info["kept_bytes"], info["capacity_bytes"]) == (2, 2 * KEPT_4MB, 2 * KEPT_4MB)
    big = polyfit.features(torch.rand(N), 3)  # 16 MB: more than the capacity, never kept
    del big
    assert polyfit.cache_info()["kept_bytes"] == 2 * KEPT_4MB
    assert polyfit.set_cache_capacity(KEPT_4MB) == 2 * KEPT_4MB  # lowering it releases the oldest
    assert polyfit.cache_info()["kept_blocks"] == 1
    polyfit.set_cache_capacity(0)
    assert polyfit.cache_info()["kept_bytes"] == 0
    x = torch.rand(N)
    y = polyfit.polyval(x, c)  # capacity 0: torch's allocator, still correct
    assert_polyval(y, x, c)
    del y
    assert polyfit.cache_info()["kept_bytes"] == 0


def test_empty_cache_leaves_live_outputs_alone(cache):
    x, c = torch.rand(N), torch.rand(5)
    keep = polyfit.polyval(x, c)
    drop = polyfit.polyval(torch.rand(N), c)
    del drop
    assert polyfit.cache_info()["kept_blocks"] == 1
    polyfit.empty_cache()
    assert polyfit.cache_info()["kept_bytes"] == 0
    assert_polyval(keep, x, c)
    del keep
    assert polyfit.cache_info()["kept_blocks"] == 1  # the capacity still holds


def test_numpy_and_resize_keep_their_memory(cache):
    x, c = torch.rand(N), torch.rand(3)
    y = polyfit.polyval(x, c)
    a = y.numpy()
    ptr = y.data_ptr()
    del y  # the array still holds the storage: not kept, not reused
    z = polyfit.polyval(x, -c)
    assert z.data_ptr() != ptr
    np.testing.assert_allclose(a.astype(np.float64), expected(x, c), rtol=1e-5, atol=1e-5)
    w = polyfit.polyval(x, c)
    w.resize_(2 * N)  # a larger block from the same allocator; the values move with it
    assert_polyval(w[:N], x, c)


def test_profiler_counts_kept_memory_like_torchs(cache):
    from benchmarks.runner import cpu_peak_bytes

    x, c = torch.rand(N), torch.rand(3)
    assert cpu_peak_bytes(lambda: polyfit.polyval(x, c)) == 4 * N  # a new block
    assert polyfit.cache_info()["kept_blocks"] == 1
    assert cpu_peak_bytes(lambda: polyfit.polyval(x, c)) == 4 * N  # a reused one


def test_profiler_peak_adds_torchs_and_polyfits_memory(cache):
    # Each allocator reports its own running total; the peak is the running sum of both.
    from benchmarks.runner import cpu_peak_bytes

    x, c = torch.rand(N), torch.rand(3)
    live = [polyfit.polyval(torch.rand(N), c) for _ in range(2)]  # polyfit's total starts at 8 MB
    assert cpu_peak_bytes(lambda: (x * 2, polyfit.polyval(x, c))) == 8 * N
    del live


def test_threads_allocate_and_free_concurrently(cache):
    c = torch.rand(4)
    errors, handoff = [], []

    def work(seed):
        try:
            g = torch.Generator().manual_seed(seed)
            for _ in range(10):
                x = torch.rand(N + seed * 1000, generator=g)
                y = polyfit.polyval(x, c)
                assert_polyval(y, x, c)
                handoff.append(y)  # freed by whichever thread pops it
                if len(handoff) > 2:
                    handoff.pop(0)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    handoff.clear()
    assert 0 < polyfit.cache_info()["kept_bytes"] <= 256 << 20


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_allocates(cache):
    x, c = torch.rand(N), torch.rand(3)
    del_me = polyfit.polyval(x, c)
    del del_me  # the child starts with a kept block
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            torch.set_num_threads(1)
            y = polyfit.polyval(x, c)
            code = 0 if np.allclose(y.double().numpy(), expected(x, c), rtol=1e-5, atol=1e-5) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def run_with_env(code: str, value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, POLYFIT_CPU_CACHE_MB=value)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300)


def test_capacity_from_the_environment():
    r = run_with_env("""
        import torch, polyfit
        y = polyfit.polyval(torch.rand(10**6), torch.rand(3)); del y
        info = polyfit.cache_info()
        print(info["capacity_bytes"], info["kept_bytes"])
    """, "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0"]
    r = run_with_env("import polyfit; print(polyfit.cache_info()['capacity_bytes'])", "8")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(8 << 20)


def test_an_invalid_environment_capacity_is_an_error_naming_it():
    r = run_with_env("""
        import torch, polyfit
        assert polyfit.polyval(torch.rand(10), torch.rand(3)).shape == (10,)  # small outputs never ask
        try:
            polyfit.polyval(torch.rand(10**6), torch.rand(3))
        except ValueError as e:
            print("ValueError:", e)
    """, "lots")
    assert r.returncode == 0, r.stderr
    assert "ValueError: POLYFIT_CPU_CACHE_MB must be a whole number of MB >= 0; got 'lots'" in r.stdout


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("8", TypeError)])
def test_set_cache_capacity_checks_its_argument(bad, error):
    with pytest.raises(error, match="nbytes"):
        polyfit.set_cache_capacity(bad)
