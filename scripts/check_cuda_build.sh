#!/usr/bin/env bash
# CI check of the CUDA build, without a GPU: compiles and links polyfit's CUDA kernels against the
# CUDA build of torch in a scratch copy of the tree (the repository's own CPU build is untouched),
# imports the result and fails unless every polyfit op that has a CPU kernel has a CUDA kernel too.
#
#   scripts/check_cuda_build.sh
#
# Knobs (environment):
#   POLYFIT_CUDA_VENV    venv with a CUDA build of torch (default ~/.cache/polyfit/venv-cuda; created
#                        when missing, which downloads about 5.5 GB once)
#   POLYFIT_CUDA_TORCH   torch requirement for a new venv (default torch==2.14.1, CUDA 13.0)
#   POLYFIT_CUDA_BUILD   scratch build folder (default ~/.cache/polyfit/cuda-build); kept between runs,
#                        so kernels whose sources did not change are not compiled again
#   CUDA_HOME            the CUDA toolkit (default: found from torch's CUDA version or nvcc on PATH)
#   TORCH_CUDA_ARCH_LIST default: setup.py's ("8.0;8.6;8.9;9.0+PTX")
#   MAX_JOBS             parallel compile jobs (default 2)
#   POLYFIT_CPU_ISAS     CPU kernel libraries to build beside (default "default": one is needed to
#                        import polyfit; the CPU build itself is checked by the main CI run)
#   PIP_ARGS             extra pip arguments for creating the venv
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/polyfit
VENV=${POLYFIT_CUDA_VENV:-$CACHE/venv-cuda}
TORCH_SPEC=${POLYFIT_CUDA_TORCH:-torch==2.14.1}
SCRATCH=${POLYFIT_CUDA_BUILD:-$CACHE/cuda-build}
PY=$VENV/bin/python
t_start=$(date +%s)
stamp() { echo "[check_cuda_build] $(( $(date +%s) - t_start ))s: $*"; }

# ---- the CUDA venv (persistent, outside the clone) ----------------------------------------------
if [ ! -x "$PY" ] || ! "$PY" -c 'import torch, ninja' 2>/dev/null; then
  stamp "creating $VENV with $TORCH_SPEC"
  python3 -m venv "$VENV"
  "$PY" -m pip install --disable-pip-version-check -q ${PIP_ARGS:-} "$TORCH_SPEC" numpy ninja setuptools wheel
fi
TORCH_CUDA=$("$PY" -c 'import torch; print(torch.version.cuda or "")')
if [ -z "$TORCH_CUDA" ]; then
  echo "error: $VENV has a CPU-only torch ($("$PY" -c 'import torch; print(torch.__version__)')); a CUDA build is needed" >&2
  exit 1
fi
stamp "torch $("$PY" -c 'import torch; print(torch.__version__)') (CUDA $TORCH_CUDA) from $VENV"

# ---- the toolkit -----------------------------------------------------------------------------------
source "$ROOT/scripts/cuda_home.sh"
if ! find_cuda_home "$TORCH_CUDA"; then
  echo "error: no CUDA toolkit found (set CUDA_HOME to a folder with bin/nvcc and include/cuda_runtime.h)" >&2
  exit 1
fi
export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
stamp "toolkit $CUDA_HOME ($("$CUDA_HOME/bin/nvcc" --version | grep -o 'release [0-9.]*'))"

# ---- scratch copy of the tree (file times kept, so the build there is incremental) ----------------
mkdir -p "$SCRATCH"
rm -rf "$SCRATCH/csrc" "$SCRATCH/polyfit" "$SCRATCH/setup.py" "$SCRATCH/pyproject.toml"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$ROOT" && git ls-files -z -co --exclude-standard -- csrc polyfit setup.py pyproject.toml README.md |
    tar --null -T - -cf -) | tar -xpf - -C "$SCRATCH"
else
  (cd "$ROOT" && tar --exclude='*.so' --exclude=__pycache__ -cf - csrc polyfit setup.py pyproject.toml) |
    tar -xpf - -C "$SCRATCH"
fi

# ---- build -----------------------------------------------------------------------------------------
stamp "building in $SCRATCH (TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-setup.py default}, MAX_JOBS=${MAX_JOBS:-2})"
t_build=$(date +%s)
if ! (cd "$SCRATCH" && FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-2} POLYFIT_CPU_ISAS=${POLYFIT_CPU_ISAS:-default} \
      "$PY" setup.py -q build_ext --inplace \
      >"$SCRATCH/build.log" 2>&1); then
  tail -n 60 "$SCRATCH/build.log" >&2
  echo "error: the CUDA build failed (full log: $SCRATCH/build.log)" >&2
  exit 1
fi
stamp "built in $(( $(date +%s) - t_build ))s"

# ---- import and op coverage (no GPU needed) --------------------------------------------------------
cd "$SCRATCH"
"$PY" - <<'EOF'
import sys
import warnings

import torch

warnings.simplefilter("error", RuntimeWarning)  # a fallback to the reference must fail this check
import polyfit  # noqa: E402
from polyfit import _backend  # noqa: E402

state = _backend.STATE
if not state.loaded or not state.with_cuda:
    sys.exit(f"error: polyfit's compiled CUDA build did not load: {state.reason or 'built without CUDA'}")
print(f"polyfit._C built for CUDA {state.build.get('CUDA_VERSION')}, arch {state.build.get('CUDA_ARCH_LIST')}, "
      f"CPU kernels {state.cpu_isa}")

names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("polyfit::"))
if not names:
    sys.exit("error: no polyfit ops are registered")
has = torch._C._dispatch_has_kernel_for_dispatch_key
missing = []
print(f"{'op':40s} CPU   CUDA  composite")
for name in names:
    cpu, cuda = has(name, "CPU"), has(name, "CUDA")
    composite = has(name, "CompositeImplicitAutograd") or has(name, "CompositeExplicitAutograd")
    print(f"{name:40s} {'yes' if cpu else '-':5s} {'yes' if cuda else '-':5s} {'yes' if composite else '-'}")
    if (cpu and not cuda) or not (cuda or composite):
        missing.append(name)
if missing:
    sys.exit(f"error: no CUDA kernel for {', '.join(missing)}")
print(f"ok: all {len(names)} polyfit ops have a CUDA kernel")
EOF
stamp "done"
