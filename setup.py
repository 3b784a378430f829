"""Build of polyfit's compiled kernels against the torch already installed.

    pip install --no-build-isolation .

Knobs (environment):
    FORCE_CUDA=1          build the CUDA kernels even with no GPU present (fails if nvcc is missing)
    POLYFIT_NO_CUDA=1     never build CUDA kernels
    TORCH_CUDA_ARCH_LIST  CUDA architectures (default "8.0;8.6;8.9;9.0+PTX")
    MAX_JOBS              parallel compile jobs
    DEBUG=1               -O0 -g builds
    POLYFIT_CPU_ISAS      development only: build a subset of the CPU libraries, e.g. "avx512"

Extensions:
    polyfit._C               op schemas (TORCH_LIBRARY) and, with CUDA, the CUDA kernels
    polyfit._cpu_<isa>       the CPU kernels, once per instruction set; polyfit loads the best one
                             the running CPU supports (as ATen does for its own kernels)
"""

import os
import platform
from pathlib import Path

from setuptools import find_packages, setup

import torch
from torch.utils import cpp_extension
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

ROOT = Path(__file__).parent.resolve()
CSRC = "csrc"
DEBUG = os.environ.get("DEBUG", "0") == "1"

# Instruction sets for the CPU kernels: (suffix, compiler flags). ATen's own flags for each level.
if platform.machine().lower() in ("x86_64", "amd64"):
    CPU_ISAS = [
        ("default", ["-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT"]),
        ("avx2", ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]),
        ("avx512", ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c",
                    "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]),
    ]
else:  # other architectures: their baseline vector unit (NEON on aarch64) through ATen's defaults
    CPU_ISAS = [("default", ["-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT"])]
if os.environ.get("POLYFIT_CPU_ISAS"):  # development: build only these (comma list), e.g. "avx512"
    _wanted = os.environ["POLYFIT_CPU_ISAS"].split(",")
    CPU_ISAS = [(isa, flags) for isa, flags in CPU_ISAS if isa in _wanted]


def _nvcc_path():
    home = cpp_extension.CUDA_HOME
    if home is None:
        return None
    nvcc = Path(home) / "bin" / "nvcc"
    return str(nvcc) if nvcc.exists() else None


def _want_cuda():
    if os.environ.get("POLYFIT_NO_CUDA", "0") == "1":
        return False
    forced = os.environ.get("FORCE_CUDA", "0") == "1"
    if torch.version.cuda is None:
        if forced:
            raise RuntimeError(
                f"FORCE_CUDA=1 but the installed torch {torch.__version__} is a CPU-only build; "
                "install a CUDA build of torch first")
        return False
    if _nvcc_path() is None:
        if forced:
            raise RuntimeError(
                "FORCE_CUDA=1 but nvcc was not found: set CUDA_HOME to the CUDA toolkit "
                f"(CUDA_HOME is {cpp_extension.CUDA_HOME!r})")
        return False
    return True  # torch has CUDA and a toolkit is present


def _opt_flags():
    return ["-O0", "-g"] if DEBUG else ["-O3"]


def _write_build_info(with_cuda, cpu_isas):
    cuda_version = torch.version.cuda if with_cuda else None
    text = (
        "# Written by setup.py at build time.\n"
        f"TORCH_VERSION = {torch.__version__!r}\n"
        f"CUDA_VERSION = {cuda_version!r}\n"
        f"WITH_CUDA = {with_cuda!r}\n"
        f"CPU_ISAS = {tuple(cpu_isas)!r}\n"
        f"CUDA_ARCH_LIST = {os.environ.get('TORCH_CUDA_ARCH_LIST') if with_cuda else None!r}\n"
        f"DEBUG = {DEBUG!r}\n"
    )
    (ROOT / "polyfit" / "_build_info.py").write_text(text)


def extensions():
    with_cuda = _want_cuda()
    if with_cuda and "TORCH_CUDA_ARCH_LIST" not in os.environ:
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;8.6;8.9;9.0+PTX"
    _write_build_info(with_cuda, [isa for isa, _ in CPU_ISAS])

    common = [f"{CSRC}/ops.cpp", f"{CSRC}/polylinear.cpp", f"{CSRC}/fit.cpp"]
    # at::parallel_for is inline OpenMP: compile with -fopenmp, but do not link a second OpenMP
    # runtime; the symbols resolve to the libgomp that libtorch_cpu already loads.
    cxx = _opt_flags() + ["-fopenmp", "-fvisibility=hidden"]
    exts = []
    main_sources = [f"{CSRC}/polyfit.cpp", f"{CSRC}/autograd.cpp"]
    if with_cuda:
        cu = sorted(str(p.relative_to(ROOT)) for p in (ROOT / CSRC / "cuda").glob("*.cu"))
        exts.append(CUDAExtension(
            "polyfit._C", main_sources + common + cu,
            extra_compile_args={"cxx": cxx, "nvcc": _opt_flags() + ["-lineinfo", "--expt-relaxed-constexpr"]},
        ))
    else:
        exts.append(CppExtension("polyfit._C", main_sources, extra_compile_args={"cxx": cxx}))
    cpu_sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / CSRC / "cpu").glob("*.cpp"))
    for isa, flags in CPU_ISAS:
        exts.append(CppExtension(
            f"polyfit._cpu_{isa}", cpu_sources + common,
            extra_compile_args={"cxx": cxx + flags},
        ))
    return exts


class BuildExtensionPerTemp(BuildExtension):
    """Each extension compiles in its own temp folder: they share sources (csrc/ops.cpp, the CPU
    kernels) with different flags, and one folder would rebuild those objects on every build."""

    def build_extension(self, ext):
        base = self.build_temp
        self.build_temp = os.path.join(base, ext.name.rsplit(".", 1)[-1])
        try:
            super().build_extension(ext)
        finally:
            self.build_temp = base


setup(
    packages=find_packages(include=["polyfit", "polyfit.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtensionPerTemp},
)
