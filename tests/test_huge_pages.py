"""Large CPU outputs are offered transparent huge pages before their first write
(csrc/cpu/output_cache.cpp), as numpy does for its arrays, whether they come from the memory polyfit
keeps for them or, with a capacity of 0, from torch's allocator; and the values written there are
the reference's."""

import sys
from pathlib import Path

import pytest
import torch

import polyfit
from polyfit import _backend, reference

HPAGE = Path("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")
pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux") or not HPAGE.exists(),
                       reason="transparent huge pages are a Linux feature this kernel lacks"),
    pytest.mark.skipif(not _backend.STATE.loaded, reason="polyfit's compiled ops are not loaded"),
]


def vm_flags(address: int) -> list:
    """The VmFlags of this process's mapping that holds `address` (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if not head.endswith(":"):  # a mapping's first line: "lo-hi perms offset ..."
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def advised_huge(t: torch.Tensor) -> bool:
    """Whether the middle of t's memory lies in a mapping advised MADV_HUGEPAGE ("hg")."""
    return "hg" in vm_flags(t.data_ptr() + t.nbytes // 2)


@pytest.fixture(autouse=True, params=["kept memory", "capacity 0"])
def output_memory(request):
    old = polyfit.set_cache_capacity(0 if request.param == "capacity 0" else 256 << 20)
    yield
    polyfit.set_cache_capacity(old)


def test_large_features_output_is_advised_huge_pages_and_exact():
    x = torch.rand(1_000_000, dtype=torch.float64) * 2 - 1  # output 72 MB: new memory
    out = polyfit.features(x, 8, "chebyshev")
    assert advised_huge(out)
    torch.testing.assert_close(out, reference.features(x, 8, "chebyshev"), rtol=1e-12, atol=1e-12)


def test_large_polyval_output_and_gradient_are_advised_huge_pages():
    # 40 MB: over glibc's largest mmap threshold (32 MiB), so new memory no one else advised
    x = (torch.rand(10_000_000) * 2 - 1).requires_grad_()
    c = torch.randn(6)
    y = polyfit.polyval(x, c, "legendre")
    assert advised_huge(y)
    (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert advised_huge(gx)
    torch.testing.assert_close(y, reference.polyval(x.detach(), c, "legendre"))
