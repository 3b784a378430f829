# Sourced by scripts/check_cuda_build.sh and benchmarks/gpu_check.sh: finds the CUDA toolkit.
#   find_cuda_home TORCH_CUDA_VERSION   sets CUDA_HOME (unless already set) to the first folder with
#                                       bin/nvcc and include/cuda_runtime.h; returns 1 if there is none
is_toolkit() { [ -x "$1/bin/nvcc" ] && [ -f "$1/include/cuda_runtime.h" ]; }

find_cuda_home() {
  if [ -z "${CUDA_HOME:-}" ]; then
    local candidates=("/usr/local/cuda-$1" /usr/local/cuda) nvcc_path real c
    if nvcc_path=$(command -v nvcc 2>/dev/null); then
      candidates+=("$(dirname "$(dirname "$(readlink -f "$nvcc_path")")")")
      # nvcc on PATH may be a wrapper script: the toolkit is where the nvcc it runs lives
      if real=$(grep -ao '/[^ "]*/bin/nvcc' "$nvcc_path" 2>/dev/null | head -n1); then
        candidates+=("$(dirname "$(dirname "$real")")")
      fi
    fi
    for c in "${candidates[@]}"; do
      if is_toolkit "$c"; then CUDA_HOME=$c; break; fi
    done
  fi
  [ -n "${CUDA_HOME:-}" ] && is_toolkit "$CUDA_HOME"
}
