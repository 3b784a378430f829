#!/usr/bin/env bash
# The whole GPU check in one go, on any machine with a CUDA GPU, a CUDA toolkit and torch installed:
# builds polyfit in place against that machine's torch (CUDA kernels for the GPU found), runs the
# CUDA tests, then the GPU benchmarks, and writes a log and JSON results into OUTDIR.
#
#   benchmarks/gpu_check.sh OUTDIR
#
# Sized to finish in under 8 minutes on one H100 (each stage has its own time limit; a stage that
# fails or times out is recorded and the next one still runs). Knobs: PYTHON (default: the first
# python3/python that imports torch), CUDA_HOME, TORCH_CUDA_ARCH_LIST (default: the GPU's own
# capability), MAX_JOBS (default: the number of cores), PYTEST_ARGS (extra pytest arguments),
# GPU_CHECK_BENCH=0 (skip the benchmark suite, for a short lease).
# Outputs in OUTDIR: gpu_check.log (everything), gpu_check.json (summary: stages, status, seconds,
# device), pytest_cuda.xml and pytest_device.xml, roofline.json (benchmarks/gpu_roofline.py), bench/ (python -m benchmarks).
set -uo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
LOG=$OUT/gpu_check.log
exec > >(tee "$LOG") 2>&1
cd "$ROOT"
T0=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-460}  # seconds for everything; the benchmarks get what is left
STAGES=()                         # "name status seconds" records for the JSON summary
now() { echo $(( $(date +%s) - T0 )); }
say() { echo "[gpu_check $(now)s] $*"; }
record() { STAGES+=("$1|$2|$3"); say "stage $1: $2 ($3 s)"; }

# Runs a stage under a time limit: run_stage NAME LIMIT_SECONDS command...
run_stage() {
  local name=$1 limit=$2 t rc
  shift 2
  t=$(date +%s)
  say "stage $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  local status=ok
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="timeout"; elif [ $rc -ne 0 ]; then status="failed rc=$rc"; fi
  record "$name" "$status" $(( $(date +%s) - t ))
  return $rc
}

# ---- python with torch and a GPU -------------------------------------------------------------------
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3 python; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import torch' 2>/dev/null; then PY=$(command -v "$cand"); break; fi
  done
fi
if [ -z "$PY" ]; then
  say "error: no python with torch found (set PYTHON)"
  exit 1
fi
# GPU_CHECK_DRY_RUN=1 walks through every stage on a machine without a GPU (to test this script).
GPU_CHECK_DRY_RUN=${GPU_CHECK_DRY_RUN:-0} "$PY" - <<'EOF' || { say "error: torch sees no CUDA GPU"; exit 1; }
import os, sys, torch
print(f"python {sys.version.split()[0]} at {sys.executable}; torch {torch.__version__} (CUDA {torch.version.cuda})")
assert torch.cuda.is_available() or os.environ["GPU_CHECK_DRY_RUN"] == "1", "torch.cuda.is_available() is False"
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB")
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv || true

# ---- test dependencies (the GPU machine may be offline: try briefly, never fail here) -------------
missing=$("$PY" -c '
import importlib.util as u
print(" ".join(m for m in ("pytest", "hypothesis", "numpy", "expecttest") if u.find_spec(m) is None))')
if [ -n "$missing" ]; then
  say "installing missing test packages: $missing"
  timeout 60 "$PY" -m pip install --disable-pip-version-check -q --retries 0 --timeout 10 $missing ||
    say "warning: could not install $missing (offline?); the stages that need them will say so"
fi

# ---- toolkit and build ---------------------------------------------------------------------------------
source "$ROOT/scripts/cuda_home.sh"
if find_cuda_home "$("$PY" -c 'import torch; print(torch.version.cuda or "")')"; then
  export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
  say "toolkit: $CUDA_HOME ($("$CUDA_HOME/bin/nvcc" --version | grep -o 'release [0-9.]*'))"
else
  say "error: no CUDA toolkit (nvcc) found; set CUDA_HOME"
fi
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$("$PY" -c '
import torch
print("%d.%d" % torch.cuda.get_device_capability() if torch.cuda.is_available() else "9.0")')
fi
export TORCH_CUDA_ARCH_LIST
say "building for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST with MAX_JOBS=${MAX_JOBS:-$(nproc)}"
# Only the CPU kernel library this CPU runs (the others would add minutes of compiling).
if [ -z "${POLYFIT_CPU_ISAS:-}" ]; then
  POLYFIT_CPU_ISAS=$("$PY" -c '
import torch
cap = torch.backends.cpu.get_cpu_capability().upper()
print("avx512" if cap.startswith("AVX512") else "avx2" if cap.startswith("AVX2") else "default")')
fi
export POLYFIT_CPU_ISAS
say "CPU kernels: $POLYFIT_CPU_ISAS"
rm -f polyfit/*.so polyfit/_build_info.py
FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} run_stage build 300 "$PY" setup.py -q build_ext --inplace
build_rc=$?
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [ $build_rc -eq 0 ]; then
  run_stage kernels 60 "$PY" - <<'EOF'
import sys, torch, polyfit
from polyfit import _backend
print(polyfit.__file__)
if not _backend.compiled_for(torch.device("cuda")):
    sys.exit(f"polyfit's CUDA kernels are not in use: {_backend.STATE.reason or 'built without CUDA'}")
names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("polyfit::"))
missing = [n for n in names if torch._C._dispatch_has_kernel_for_dispatch_key(n, "CPU")
           and not torch._C._dispatch_has_kernel_for_dispatch_key(n, "CUDA")]
print(f"ops: {', '.join(names)}")
sys.exit(f"no CUDA kernel for {missing}" if missing else 0)
EOF
  [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ] && say "dry run: no GPU, so the CUDA tests below skip and the benchmarks fail"

  # ---- CUDA tests: tests/test_cuda.py first, then the CUDA case of every device-parametrised test ---
  if "$PY" -c 'import pytest' 2>/dev/null; then
    run_stage tests_cuda 170 "$PY" -m pytest -q -m cuda --maxfail=25 -p no:cacheprovider \
      --junitxml="$OUT/pytest_cuda.xml" ${PYTEST_ARGS:-} tests/test_cuda.py
    run_stage tests_device 130 "$PY" -m pytest -q -m cuda --maxfail=25 -p no:cacheprovider \
      --junitxml="$OUT/pytest_device.xml" --ignore=tests/test_cuda.py ${PYTEST_ARGS:-} tests
  else
    record tests "skipped: pytest is not installed" 0
  fi

  # ---- benchmarks ------------------------------------------------------------------------------------
  run_stage roofline 90 "$PY" benchmarks/gpu_roofline.py --out "$OUT/roofline.json"
  left=$(( BUDGET - $(now) ))
  if [ ! -f benchmarks/__main__.py ]; then
    record bench "skipped: the benchmarks package (python -m benchmarks) is not in this tree" 0
  elif [ "${GPU_CHECK_BENCH:-1}" = 0 ]; then
    record bench "skipped: GPU_CHECK_BENCH=0" 0
  elif [ $left -lt 30 ]; then
    record bench "skipped: only ${left}s of the time budget left" 0
  else
    run_stage bench $left "$PY" -m benchmarks --device cuda --quick --out "$OUT/bench"
  fi
else
  say "the build failed: no tests or benchmarks"
fi

# ---- summary -----------------------------------------------------------------------------------------
printf '%s\n' "${STAGES[@]}" | "$PY" -c '
import json, sys, torch
stages = []
for line in sys.stdin.read().splitlines():
    if line:
        name, status, seconds = line.split("|")
        stages.append({"stage": name, "status": status, "seconds": int(seconds)})
props = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None
out = {
    "device": props.name if props else None,
    "capability": f"{props.major}.{props.minor}" if props else None,
    "torch": torch.__version__, "torch_cuda": torch.version.cuda,
    "arch_list": sys.argv[2], "stages": stages,
    "ok": bool(stages) and all(s["status"] == "ok" or s["status"].startswith("skipped") for s in stages),
    "seconds": int(sys.argv[3]),
}
json.dump(out, open(sys.argv[1], "w"), indent=2)
print(json.dumps(out, indent=2))
' "$OUT/gpu_check.json" "$TORCH_CUDA_ARCH_LIST" "$(now)"
say "done; log and results in $OUT"
