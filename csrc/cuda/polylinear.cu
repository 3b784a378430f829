// CUDA kernels of the Kolmogorov-Arnold layer: one thread per (row, input feature), consecutive
// threads along in_features, so the degree-major tiles are read and written coalesced. The math is
// basis.h; tiles and GEMMs (cuBLAS through at::mm) are the shared host code, csrc/polylinear.cpp.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../basis.h"
#include "../polylinear.h"

namespace polyfit::cuda {
namespace {

using at::Tensor;

constexpr int kThreads = 256;

inline unsigned grid_for(int64_t work) {
  return static_cast<unsigned>(std::min<int64_t>((work + kThreads - 1) / kThreads, int64_t(1) << 20));
}

template <typename T>
__device__ inline T apply_map(T x, InputMap map) {
  return map == InputMap::Tanh ? ::tanh(x) : x;
}

template <Basis B, typename T>
__global__ void basis_kernel(const T* __restrict__ x, int64_t sr, int64_t si, T* __restrict__ phi, int64_t n,
                             int64_t in, int K, InputMap map) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n * in; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / in, i = e % in;
    const T t = apply_map(x[r * sr + i * si], map);
    T* o = phi + r * K * in + i;
    basis_values<B, T>(t, T(1), K, [&](int k, const T& p) { o[int64_t(k) * in] = p; });
  }
}

template <Basis B, typename T>
__global__ void grad_x_kernel(const T* __restrict__ x, int64_t sr, int64_t si, const T* g, T* __restrict__ gx,
                              T* phi, int64_t n, int64_t in, int K, InputMap map) {  // phi may alias g
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n * in; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / in, i = e % in;
    const T t = apply_map(x[r * sr + i * si], map);
    const T* gr = g + r * K * in + i;
    T* o = phi ? phi + r * K * in + i : nullptr;  // the basis tile too, when grad_weight needs it
    T acc(0);
    basis_values_and_derivatives<B, T>(t, K, [&](int k, const T& p, const T& d) {
      if (k > 0) acc = fmadd(gr[int64_t(k) * in], d, acc);  // read G_k before P_k replaces it
      if (o) o[int64_t(k) * in] = p;
    });
    if (map == InputMap::Tanh) acc *= T(1) - t * t;  // tanh' = 1 - tanh^2, safe at saturation
    gx[e] = acc;
  }
}

void polylinear_basis_cuda(const Tensor& x, Tensor& phi, Basis basis, InputMap map) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0), in = x.size(1);
  const int K = static_cast<int>(phi.size(1));
  if (n * in == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "polyfit_polylinear_basis_cuda", [&] {
    POLYFIT_DISPATCH_BASIS(basis, [&] {
      basis_kernel<kBasis, scalar_t><<<grid_for(n * in), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), x.stride(0), x.stride(1), phi.mutable_data_ptr<scalar_t>(), n, in, K, map);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void polylinear_grad_x_cuda(const Tensor& x, const Tensor& g, Tensor& gx, Tensor& phi, Basis basis, InputMap map) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0), in = x.size(1);
  const int K = static_cast<int>(g.size(1));
  if (n * in == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "polyfit_polylinear_grad_x_cuda", [&] {
    POLYFIT_DISPATCH_BASIS(basis, [&] {
      grad_x_kernel<kBasis, scalar_t><<<grid_for(n * in), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), x.stride(0), x.stride(1), g.const_data_ptr<scalar_t>(),
          gx.mutable_data_ptr<scalar_t>(), phi.defined() ? phi.mutable_data_ptr<scalar_t>() : nullptr, n, in, K,
          map);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

const PolyLinearKernels kCudaPolyLinearKernels{&polylinear_basis_cuda, &polylinear_grad_x_cuda};

}  // namespace
}  // namespace polyfit::cuda

TORCH_LIBRARY_IMPL(polyfit, CUDA, m) {
  POLYFIT_REGISTER_POLYLINEAR(::polyfit::cuda::kCudaPolyLinearKernels);
}
