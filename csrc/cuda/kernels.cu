// CUDA kernels of polyfit: registration of every op for the CUDA dispatch key, and `features`.
// series.cu evaluates series (forward and x-gradient), moments.cu reduces coefficient gradients.
// The math is csrc/basis.h; these files move data: lanes per thread, shared-memory tiles,
// coalesced stores and a deterministic reduction.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "common.cuh"

namespace polyfit::cuda {
namespace {

using at::Tensor;

constexpr int kFeatThreads = 256;

// One tile = P points. Each point's thread runs the recurrence and writes its K values into a
// shared-memory tile laid out like the output rows (row pitch `pitch`, odd so that threads writing
// the same column hit distinct banks); then the whole block streams the tile out, so global stores
// are contiguous and coalesced instead of K-strided per thread.
template <Basis B, typename scalar_t>
__global__ void __launch_bounds__(kFeatThreads)
    features_tile_kernel(const scalar_t* __restrict__ x, int64_t sx, int64_t M, int K, int pitch, int P,
                         bool increasing, Window<at::opmath_type<scalar_t>> win, int ninv,
                         scalar_t* __restrict__ out) {
  using T = at::opmath_type<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* s_inv = reinterpret_cast<T*>(smem);
  scalar_t* s_tile = reinterpret_cast<scalar_t*>(s_inv + ninv);
  fill_reciprocals(s_inv, ninv);

  const int tid = threadIdx.x;
  // Stepping a flat index e by the block size moves (row, column) by (q, rem): no division per element.
  const int q = kFeatThreads / K, rem = kFeatThreads % K;
  const bool dense = pitch == K && aligned_to(out, 16);
  constexpr int kVec = 16 / sizeof(scalar_t);
  const int64_t tiles = ceil_div(M, P);
  // x of the next tile is loaded while this one is streamed out, so its latency is hidden.
  auto load_x = [&](int64_t tile) {
    const int64_t i = tile * P + tid;
    return tile < tiles && tid < P && i < M ? T(x[i * sx]) : T(0);
  };
  T xn = load_x(blockIdx.x);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t i0 = tile * P;
    const int n = static_cast<int>(min(int64_t(P), M - i0));
    const T xv = xn;
    __syncthreads();  // the previous tile is out (and, the first time, the table is filled)
    if (tid < n) {
      const T t = map_to_window(xv, win);
      scalar_t* row = s_tile + tid * pitch;
      basis_values<B, T>(
          t, T(1), K, [&](int k, T p) { row[increasing ? k : K - 1 - k] = scalar_t(p); }, TableInv<T>{s_inv});
    }
    __syncthreads();
    xn = load_x(tile + gridDim.x);
    scalar_t* dst = out + i0 * K;
    const int total = n * K;
    if (dense && aligned_to(dst, 16)) {  // the tile is the output block byte for byte: 16-byte copies
      const int nvec = total / kVec;
      const uint4* src4 = reinterpret_cast<const uint4*>(s_tile);
      uint4* dst4 = reinterpret_cast<uint4*>(dst);
      for (int v = tid; v < nvec; v += kFeatThreads) dst4[v] = src4[v];
      for (int e = nvec * kVec + tid; e < total; e += kFeatThreads) dst[e] = s_tile[e];
    } else {
      int j = tid / K, k = tid - (tid / K) * K;
      for (int e = tid; e < total; e += kFeatThreads) {
        dst[e] = s_tile[j * pitch + k];
        j += q;
        k += rem;
        if (k >= K) k -= K, ++j;
      }
    }
  }
}

// Degrees too large for a shared-memory tile of even a few points: one thread per point, rows
// written directly (each row is long and contiguous there).
template <Basis B, typename scalar_t>
__global__ void __launch_bounds__(kFeatThreads)
    features_direct_kernel(const scalar_t* __restrict__ x, int64_t sx, int64_t M, int K, bool increasing,
                           Window<at::opmath_type<scalar_t>> win, int ninv, scalar_t* __restrict__ out) {
  using T = at::opmath_type<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* s_inv = reinterpret_cast<T*>(smem);
  fill_reciprocals(s_inv, ninv);
  __syncthreads();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < M; i += int64_t(gridDim.x) * blockDim.x) {
    const T t = map_to_window(T(x[i * sx]), win);
    scalar_t* row = out + i * K;
    basis_values<B, T>(
        t, T(1), K, [&](int k, T p) { row[increasing ? k : K - 1 - k] = scalar_t(p); }, TableOrDivInv<T>{s_inv, ninv});
  }
}

template <typename scalar_t>
void launch_features(const Tensor& x, Tensor& out, Basis basis, const Domain& dom, bool increasing) {
  using T = at::opmath_type<scalar_t>;
  const int64_t M = x.size(0), sx = x.stride(0);
  const int K = static_cast<int>(out.size(1));
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  const Window<T> w = dom.window<T>();
  const int device = x.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device);

  POLYFIT_DISPATCH_BASIS(basis, [&] {
    const int ninv = table_len<kBasis, T>(K);
    const size_t inv_bytes = size_t(ninv) * sizeof(T);
    const int pitch = K | 1;
    // Points per tile: as many as fit, a multiple of 16 (keeps tile starts 16-byte aligned), <= threads.
    int64_t P = (kSmemBudget - int64_t(inv_bytes)) / (int64_t(pitch) * int64_t(sizeof(scalar_t)));
    P = std::min<int64_t>(P, kFeatThreads) / 16 * 16;
    const bool table_complete = !needs_reciprocals<kBasis>() || int64_t(K) + 1 <= kMaxTable;
    if (P >= 16 && table_complete) {
      const size_t smem = inv_bytes + size_t(P) * pitch * sizeof(scalar_t);
      const unsigned grid = grid_for(M, P, 8, device);
      features_tile_kernel<kBasis, scalar_t><<<grid, kFeatThreads, smem, stream>>>(
          xp, sx, M, K, pitch, static_cast<int>(P), increasing, w, ninv, op);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      const unsigned grid = grid_for(M, kFeatThreads, 8, device);
      features_direct_kernel<kBasis, scalar_t><<<grid, kFeatThreads, inv_bytes, stream>>>(
          xp, sx, M, K, increasing, w, ninv, op);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

}  // namespace

void features_cuda(const Tensor& x, Tensor& out, Basis basis, const Domain& dom, bool increasing) {
  TORCH_INTERNAL_ASSERT(out.is_contiguous() && out.dim() == 2 && x.dim() == 1);
  if (out.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "polyfit_features_cuda", [&] {
    launch_features<scalar_t>(x, out, basis, dom, increasing);
  });
}

void series_cuda(const Tensor& x, const Tensor& coeffs, Tensor& y, Basis basis, const Domain& dom,
                 int64_t derivative) {
  eval_series_cuda(x, coeffs, nullptr, y, basis, dom, static_cast<int>(derivative));
}

void series_backward_cuda(const Tensor& grad, const Tensor& x, const Tensor& coeffs, Tensor& grad_x,
                          Tensor& grad_coeffs, Basis basis, const Domain& dom, int64_t derivative) {
  const int order = static_cast<int>(derivative);
  // Both gradients in one pass over x and grad where the moments fit in registers.
  const bool fused = grad_x.defined() && grad_coeffs.defined() && coeffs.size(1) - order <= kMaxMomentsInRegisters;
  if (grad_coeffs.defined()) coeff_grad_cuda(grad, x, coeffs, grad_coeffs, fused ? &grad_x : nullptr, basis, dom, order);
  if (grad_x.defined() && !fused) eval_series_cuda(x, coeffs, &grad, grad_x, basis, dom, order + 1);
}

namespace {
const Kernels kCudaKernels{&features_cuda, &series_cuda, &series_backward_cuda};
}  // namespace

}  // namespace polyfit::cuda

TORCH_LIBRARY_IMPL(polyfit, CUDA, m) {
  POLYFIT_REGISTER_KERNELS(::polyfit::cuda::kCudaKernels);
}
