"""Compile polyfit's CUDA kernels for the CPU emulation (include/cuda_runtime.h) and load them.

    python scripts/cuda_emu/build.py      # builds; prints the module path

Used by scripts/cuda_emu/test_emulated.py. The .cu sources are copied with three mechanical
rewrites a host compiler needs: `kernel<<<g, b, s, st>>>(args)` -> `emu::launch(kernel, g, b, s,
st, args)`, `__shared__` arrays -> block-wide statics, the dynamic `extern __shared__` array ->
the emulated block's buffer; and without the TORCH_LIBRARY_IMPL registration.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;]*>)?)<<<(.*?)>>>\(", re.S)
DYN_SMEM = re.compile(r"extern\s+__shared__\s+__align__\(\d+\)\s+unsigned char (\w+)\[\];")


def rewrite(src: str) -> str:
    out = DYN_SMEM.sub(r"unsigned char* \1 = ::emu::block->smem;", src)
    out = out.replace("__shared__", "static")
    out = LAUNCH.sub(r"::emu::launch(\1, \2, ", out)
    cut = out.find("TORCH_LIBRARY_IMPL(")
    if cut >= 0:
        out = out[:cut]
    if "<<<" in out or "__shared__" in out:
        raise RuntimeError("emulation rewrite left CUDA syntax behind")
    return out


# The kernels of features, polyval and polyval_backward, each with nothing appended (test_emulated_nn.py
# passes the layer's and fit's, each with an accessor for its internal-linkage kernel table).
KERNELS = {"kernels.cu": "", "series.cu": "", "moments.cu": ""}


def prepare(build_dir: Path, host=("ops.cpp",), kernels=KERNELS, module="emu_module.cpp") -> list[str]:
    """Copies csrc's headers and `host` sources, the rewritten `kernels` and `module` into build_dir/src."""
    src_dir = build_dir / "src"
    if src_dir.exists():
        shutil.rmtree(src_dir)
    (src_dir / "csrc" / "cuda").mkdir(parents=True)
    for header in (ROOT / "csrc").glob("*.h"):
        shutil.copy(header, src_dir / "csrc" / header.name)
    sources = []
    for name in host:
        shutil.copy(ROOT / "csrc" / name, src_dir / "csrc" / name)
        sources.append(str(src_dir / "csrc" / name))
    for header in (ROOT / "csrc" / "cuda").glob("*.cuh"):
        (src_dir / "csrc" / "cuda" / header.name).write_text(rewrite(header.read_text()))
    for name, appended in kernels.items():
        dst = src_dir / "csrc" / "cuda" / (Path(name).stem + "_cu.cpp")
        dst.write_text(rewrite((ROOT / "csrc" / "cuda" / name).read_text()) + appended)
        sources.append(str(dst))
    shutil.copy(HERE / module, src_dir / module)
    sources.append(str(src_dir / module))
    return sources


def load(verbose: bool = False, name: str = "polyfit_cuda_emu", build_dir: Path | None = None, **files):
    """Builds and imports the emulated module; `files` as prepare()'s host, kernels and module."""
    from torch.utils import cpp_extension

    if build_dir is None:
        build_dir = Path(os.environ.get("POLYFIT_EMU_BUILD", "/tmp/polyfit_cuda_emu"))
    build_dir.mkdir(parents=True, exist_ok=True)
    sources = prepare(build_dir, **files)
    return cpp_extension.load(
        name=name,
        sources=sources,
        extra_include_paths=[str(HERE / "include"), str(build_dir / "src")],
        # -march=native -ffp-contract=fast: a*b+c fused as nvcc fuses it by default (a float32 fit went
        # NaN on a GPU, and only so here)
        extra_cflags=["-O1", "-march=native", "-ffp-contract=fast", "-std=c++20", "-pthread", "-Wno-unknown-pragmas"],
        extra_ldflags=["-pthread"],
        build_directory=str(build_dir),
        verbose=verbose,
    )


if __name__ == "__main__":
    mod = load(verbose="-v" in sys.argv)
    print(mod.__file__)
