// CUDA kernel of polyfit::fit: one thread per (curve, segment) folds its rows, one at a time, into
// its triangle [R | Q^T b] (lstsq.h); then one thread per curve merges its segments in order and
// solves. Triangles live in a workspace interleaved across threads (element e of item i at
// e * items + i) so that the threads of a warp access consecutive addresses.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "../basis.h"
#include "../fit.h"
#include "../lstsq.h"

namespace polyfit::cuda {
namespace {

using at::Tensor;

constexpr int kThreads = 128;
constexpr int64_t kSegment = 256;  // shorter than the CPU's: a thread per segment, so more threads

template <Basis B, typename T>
__global__ void fit_items_kernel(const T* __restrict__ x, int64_t sxr, int64_t sxn, const T* __restrict__ y,
                                 int64_t syr, int64_t syn, const T* __restrict__ w, int64_t swr, int64_t swn,
                                 int64_t N, int64_t nseg, int64_t seg_len, int64_t items, int K, Window<T> win,
                                 T* __restrict__ tri, T* __restrict__ rowbuf) {
  const int64_t item = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (item >= items) return;
  const int W1 = K + 1;
  const int64_t r = item / nseg, n0 = (item % nseg) * seg_len;
  const int64_t len = seg_len < N - n0 ? seg_len : N - n0;
  const MatRef<T> Rm{tri + item, W1, items}, M{rowbuf + item, W1, items};
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < W1; ++j) Rm(i, j) = T(0);
  T res(0);
  for (int64_t q = 0; q < len; ++q) {
    const int64_t n = n0 + q;
    const T wv = w ? w[r * swr + n * swn] : T(1);
    const T t = map_to_window(x[r * sxr + n * sxn], win);
    basis_values<B, T>(t, wv, K, [&](int k, const T& p) { M(0, k) = p; });  // rows carry the weight
    M(0, K) = y[r * syr + n * syn] * wv;
    qr_update<T>(Rm, M, 1, K, res);
  }
  tri[int64_t(K) * W1 * items + item] = res;
}

template <typename T>
__global__ void fit_solve_kernel(T* __restrict__ tri, int64_t items, int64_t nseg, int64_t R, int K, T rcond,
                                 T* __restrict__ coeffs, T* __restrict__ resid, bool* __restrict__ ill) {
  const int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (r >= R) return;
  const int W1 = K + 1;
  const int64_t last = int64_t(K) * W1 * items;  // the residuals' row of the workspace
  const int64_t i0 = r * nseg;
  const MatRef<T> acc{tri + i0, W1, items};
  T res = tri[last + i0];
  for (int64_t s = 1; s < nseg; ++s) {  // merge the segments' triangles, in order
    qr_update<T>(acc, MatRef<T>{tri + i0 + s, W1, items}, K, K, res);
    res += tri[last + i0 + s];
  }
  resid[r] = res;
  ill[r] = qr_solve<T>(acc, K, res, rcond, coeffs + r * K, 1);
}

void fit_cuda(const Tensor& x, const Tensor& y, const Tensor& w, Tensor& coeffs, Tensor& resid, Tensor& ill,
              Basis basis, const Domain& dom) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t R = x.size(0), N = x.size(1);
  const int K = static_cast<int>(coeffs.size(1));
  const int64_t nseg = (N + kSegment - 1) / kSegment, seg_len = (N + nseg - 1) / nseg;
  const int64_t items = R * nseg;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "polyfit_fit_cuda", [&] {
    using T = scalar_t;
    const int64_t W1 = K + 1;
    Tensor tri = at::empty({(int64_t(K) * W1 + 1) * items}, x.options());
    Tensor rowbuf = at::empty({W1 * items}, x.options());
    const T* wp = w.defined() ? w.const_data_ptr<T>() : nullptr;
    const int64_t swr = w.defined() ? w.stride(0) : 0, swn = w.defined() ? w.stride(1) : 0;
    POLYFIT_DISPATCH_BASIS(basis, [&] {
      fit_items_kernel<kBasis, T><<<(items + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
          x.const_data_ptr<T>(), x.stride(0), x.stride(1), y.const_data_ptr<T>(), y.stride(0), y.stride(1), wp,
          swr, swn, N, nseg, seg_len, items, K, dom.window<T>(), tri.mutable_data_ptr<T>(),
          rowbuf.mutable_data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    const T rcond = T(N) * std::numeric_limits<T>::epsilon();  // numpy.polynomial's default
    fit_solve_kernel<T><<<(R + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
        tri.mutable_data_ptr<T>(), items, nseg, R, K, rcond, coeffs.mutable_data_ptr<T>(),
        resid.mutable_data_ptr<T>(), ill.mutable_data_ptr<bool>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace
}  // namespace polyfit::cuda

TORCH_LIBRARY_IMPL(polyfit, CUDA, m) {
  POLYFIT_REGISTER_FIT(&::polyfit::cuda::fit_cuda);
}
