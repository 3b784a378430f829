"""Backends: the compiled kernels, each CPU instruction-set library, and the reference fallback agree."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import polyfit
from polyfit import _backend

ROOT = Path(__file__).resolve().parents[1]
compiled = pytest.mark.skipif(not _backend.STATE.loaded, reason="polyfit's compiled ops are not loaded")

# Computes values and gradients for every basis and prints them as JSON; run in a subprocess
# under a given environment (fallback forced, or another CPU instruction set).
PROBE = r"""
import json, torch, polyfit
from polyfit import _backend
out = {"isa": _backend.STATE.cpu_isa, "loaded": _backend.STATE.loaded, "cases": {}}
g = torch.Generator().manual_seed(0)
for basis in polyfit.BASES:
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        x = (torch.rand(3, 37, generator=g, dtype=torch.float64) * 2 - 1).to(dtype).requires_grad_()
        c = torch.randn(3, 7, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
        c1 = torch.randn(9, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
        # a long row too: full SIMD packs, where half types convert in registers
        xl = (torch.rand(1000, generator=g, dtype=torch.float64) * 2 - 1).to(dtype).requires_grad_()
        y = polyfit.polyval(x, c, basis, domain=(-1.0, 1.5)) + polyfit.polyval(x, c1, basis, derivative=1)
        f = polyfit.features(x, 5, basis, increasing=False)
        yl, fl = polyfit.polyval(xl, c1.detach(), basis), polyfit.features(xl, 8, basis)  # c1: no sum of 1000 terms
        # (float16 cannot hold y * y's gradient here: 2.3e5)
        loss = (y if dtype == torch.float16 else y * y).sum() + f.sum() + yl.sum() + fl.sum()
        gx, gc, gc1, gxl = torch.autograd.grad(loss, (x, c, c1, xl))
        out["cases"][f"{basis}-{dtype}"] = [t.double().flatten().tolist() for t in (y, f, gx, gc, gc1, yl, fl, gxl)]
print(json.dumps(out))
"""


def _probe(env_extra):
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _assert_same(a, b, rtol):
    """Every tensor of a within rtol of the same tensor of b, relative to b's largest magnitude (at
    least 1): sums of basis terms cancel, so an element's own size is no scale for its error."""
    assert a.keys() == b.keys()
    for key in a:
        for i, (ta, tb) in enumerate(zip(a[key], b[key])):
            ta, tb = torch.tensor(ta), torch.tensor(tb)
            assert ta.shape == tb.shape, (key, i)
            scale = max(1.0, tb.abs().max().item()) if tb.numel() else 1.0
            err = (ta - tb).abs().max().item() if tb.numel() else 0.0
            assert err <= rtol * scale, f"{key}, output {i}: max difference {err:.3g} > {rtol} x {scale:.3g}"


@pytest.fixture(scope="module")
def compiled_probe():
    return _probe({})


@compiled
def test_fallback_agrees_with_compiled(compiled_probe):
    fallback = _probe({"POLYFIT_FORCE_FALLBACK": "1"})
    assert not fallback["loaded"] and compiled_probe["loaded"]
    ref = {k: v for k, v in fallback["cases"].items() if "float64" in k}
    got = {k: v for k, v in compiled_probe["cases"].items() if "float64" in k}
    _assert_same(got, ref, 1e-10)
    # low precision: both round to the same dtype, from float32 arithmetic in different orders
    _assert_same({k: v for k, v in fallback["cases"].items() if "float64" not in k},
                 {k: v for k, v in compiled_probe["cases"].items() if "float64" not in k}, 0.05)


@compiled
@pytest.mark.parametrize("isa", ["default", "avx2"])
def test_every_cpu_instruction_set_library_agrees(compiled_probe, isa):
    if isa not in _backend.STATE.build.get("CPU_ISAS", ()):
        pytest.skip(f"no {isa} library on this platform")
    if isa == "avx2" and torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("CPU lacks AVX2")
    other = _probe({"ATEN_CPU_CAPABILITY": isa})
    assert other["isa"] == isa
    _assert_same({k: v for k, v in other["cases"].items() if "float64" in k},
                 {k: v for k, v in compiled_probe["cases"].items() if "float64" in k}, 1e-12)
    _assert_same({k: v for k, v in other["cases"].items() if "float32" in k},
                 {k: v for k, v in compiled_probe["cases"].items() if "float32" in k}, 1e-4)
    # half types: float32 arithmetic that agrees to ~1e-6, each rounded once to 8 or 11 bits
    for half, rtol in (("bfloat16", 1e-2), ("float16", 2e-3)):
        _assert_same({k: v for k, v in other["cases"].items() if half in k},
                     {k: v for k, v in compiled_probe["cases"].items() if half in k}, rtol)


def _library(isa):
    return _backend.compiled_library(f"_cpu_{isa}")


@compiled
@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump not installed")
def test_baseline_library_uses_no_avx_and_avx512_library_uses_full_width():
    # The baseline library must run on any x86-64 CPU: not one AVX (ymm) or AVX-512 (zmm) register.
    if "avx512" not in _backend.STATE.build.get("CPU_ISAS", ()):
        pytest.skip("not an x86-64 build")

    def disassembly(isa):
        return subprocess.run(["objdump", "-d", "--no-show-raw-insn", _library(isa)], capture_output=True,
                              text=True, check=True).stdout

    base = disassembly("default")
    assert "%ymm" not in base and "%zmm" not in base
    assert "%ymm" in disassembly("avx2") and "%zmm" not in disassembly("avx2")
    assert "vfmadd" in disassembly("avx512") and "%zmm" in disassembly("avx512")


def test_info_reports_backends():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("POLYFIT_CPU_CACHE_MB", None)  # the default capacity
    res = subprocess.run([sys.executable, "-m", "polyfit", "info"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120, check=True)
    info = json.loads(res.stdout)
    assert info["torch"] == torch.__version__
    assert ("compiled" in info["backend"]["cpu"]) == _backend.STATE.loaded
    assert info["cpu_output_memory"]["capacity_bytes"] == ((256 << 20) if _backend.STATE.loaded else 0)
    res = subprocess.run([sys.executable, "-m", "polyfit", "info"], capture_output=True, text=True, cwd=ROOT,
                         env=dict(env, POLYFIT_CPU_CACHE_MB="x"), timeout=120, check=True)
    if _backend.STATE.loaded:
        assert "POLYFIT_CPU_CACHE_MB" in json.loads(res.stdout)["cpu_output_memory"]
    res = subprocess.run([sys.executable, "-m", "polyfit", "info"], capture_output=True, text=True,
                         env=dict(env, POLYFIT_FORCE_FALLBACK="1"), cwd=ROOT, timeout=120, check=True)
    forced = json.loads(res.stdout)
    assert forced["backend"]["cpu"] == "reference" and "POLYFIT_FORCE_FALLBACK" in forced["fallback_reason"]


@compiled
def test_torch_version_mismatch_is_refused_with_a_clear_message(monkeypatch):
    from polyfit import _build_info

    monkeypatch.setattr(_build_info, "TORCH_VERSION", "1.0.0")
    state = _backend._load()
    assert not state.loaded
    assert "compiled against torch 1.0.0" in state.reason and "rebuild" in state.reason


def test_reference_serves_devices_without_kernels():
    # meta tensors stand in for a device without compiled kernels: the reference runs there.
    x = torch.empty(5, 3, device="meta")
    c = torch.empty(4, device="meta")
    assert polyfit.polyval(x, c, "legendre").shape == (5, 3)
    assert polyfit.features(x, 2).shape == (5, 3, 3)
    assert not _backend.compiled_for(torch.device("meta"))


@pytest.mark.parametrize("missing", ["everything", "cpu kernels"])
def test_missing_compiled_library_warns_once_and_falls_back(tmp_path, missing):
    # A copy of the Python sources without the compiled libraries (or with polyfit._C but no CPU
    # kernel library): one clear warning, then the reference.
    pkg = tmp_path / "polyfit"
    pkg.mkdir()
    for src in (ROOT / "polyfit").glob("*.py"):
        if src.name != "_build_info.py" or missing == "cpu kernels":
            shutil.copy(src, pkg / src.name)
    expected = "not compiled"
    if missing == "cpu kernels":
        schemas = _backend.compiled_library("_C")
        if schemas is None:
            pytest.skip("polyfit._C is not built")
        shutil.copy(schemas, pkg / os.path.basename(schemas))
        expected = "no CPU kernel library"
    script = (
        "import warnings, torch\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import polyfit\n"
        "    y = polyfit.polyval(torch.tensor([2.0]), torch.tensor([3.0, 0.0, 5.0]))\n"
        "    polyfit.features(torch.tensor([2.0]), 3)\n"
        "msgs = [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]\n"
        f"assert len(msgs) == 1 and 'reference' in msgs[0] and {expected!r} in msgs[0], msgs\n"
        "assert y.item() == 23.0\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
