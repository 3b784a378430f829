// Shared pieces of the CUDA kernels: the lane-vector type that lets basis.h's templates run U
// independent recurrences per thread, reciprocal tables, launch sizing and the host entry points.
// The polynomial math itself is csrc/basis.h, used unchanged.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "../basis.h"
#include "../ops.h"

namespace polyfit::cuda {

// ---- U lanes per thread ------------------------------------------------------------------------
// Each recurrence is a chain of dependent FMAs; U independent chains per thread hide their latency
// without relying on occupancy alone, and per-k constants (Legendre's (2k+1)/(k+1), ...) are
// computed once for U points. Satisfies basis.h's requirements on V.
template <typename T, int U>
struct Lanes {
  T v[U];
  Lanes() = default;
  C10_DEVICE explicit Lanes(T s) {
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = s;
  }
};

template <int U>
struct LaneMask {
  bool m[U];
};

#define POLYFIT_LANES_OP(OP)                                                       \
  template <typename T, int U>                                                     \
  C10_DEVICE inline Lanes<T, U> operator OP(const Lanes<T, U>& a, const Lanes<T, U>& b) { \
    Lanes<T, U> r;                                                                 \
    _Pragma("unroll") for (int u = 0; u < U; ++u) r.v[u] = a.v[u] OP b.v[u];       \
    return r;                                                                      \
  }
POLYFIT_LANES_OP(+)
POLYFIT_LANES_OP(-)
POLYFIT_LANES_OP(*)
#undef POLYFIT_LANES_OP

// The scalar overloads of basis.h, lane by lane, so rounding equals the scalar path.
#define POLYFIT_LANES_FMA(NAME)                                                              \
  template <typename T, int U>                                                               \
  C10_DEVICE inline Lanes<T, U> NAME(const Lanes<T, U>& a, const Lanes<T, U>& b, const Lanes<T, U>& c) { \
    Lanes<T, U> r;                                                                           \
    _Pragma("unroll") for (int u = 0; u < U; ++u) r.v[u] = ::polyfit::NAME(a.v[u], b.v[u], c.v[u]); \
    return r;                                                                                \
  }
POLYFIT_LANES_FMA(fmadd)
POLYFIT_LANES_FMA(fmsub)
POLYFIT_LANES_FMA(fnmadd)
#undef POLYFIT_LANES_FMA

template <typename T, int U>
C10_DEVICE inline LaneMask<U> inside(const Lanes<T, U>& x, const Lanes<T, U>& lo, const Lanes<T, U>& hi) {
  LaneMask<U> r;
#pragma unroll
  for (int u = 0; u < U; ++u) r.m[u] = ::polyfit::inside(x.v[u], lo.v[u], hi.v[u]);
  return r;
}
template <typename T, int U>
C10_DEVICE inline Lanes<T, U> select(const LaneMask<U>& m, const Lanes<T, U>& a, const Lanes<T, U>& b) {
  Lanes<T, U> r;
#pragma unroll
  for (int u = 0; u < U; ++u) r.v[u] = ::polyfit::select(m.m[u], a.v[u], b.v[u]);
  return r;
}
template <typename T, int U>
C10_DEVICE inline Lanes<T, U> clamp_unit(const Lanes<T, U>& t) {
  Lanes<T, U> r;
#pragma unroll
  for (int u = 0; u < U; ++u) r.v[u] = ::polyfit::clamp_unit(t.v[u]);
  return r;
}

// ---- 1/j for the Legendre and Laguerre recurrences -----------------------------------------------
// A per-block table in shared memory replaces a division per recurrence step. Entries are
// T(1) / T(j), bit for bit the value basis.h's Reciprocal computes.
template <Basis B>
constexpr bool needs_reciprocals() {
  return B == Basis::Legendre || B == Basis::Laguerre;
}

template <typename T>
struct TableInv {  // every index the caller uses is in the table
  const T* tab;
  C10_DEVICE T operator()(int j) const { return tab[j]; }
};

template <typename T>
struct TableOrDivInv {  // the table may be shorter than the degree (huge degrees): divide beyond it
  const T* tab;
  int n;
  C10_DEVICE T operator()(int j) const { return j < n ? tab[j] : T(1) / T(j); }
};

template <typename T>
C10_DEVICE inline void fill_reciprocals(T* tab, int n) {
  for (int j = threadIdx.x; j < n; j += blockDim.x) tab[j] = j == 0 ? T(0) : T(1) / T(j);
}

// Table length for indices 0..max_index, rounded so that what follows in shared memory stays
// 16-byte aligned; 0 for bases without reciprocals; capped (TableOrDivInv divides beyond).
constexpr int kMaxTable = 4096;
constexpr int kSmemBudget = 40 * 1024;  // dynamic shared memory per block, under the 48 KiB default
template <Basis B, typename T>
inline int table_len(int64_t max_index) {
  if (!needs_reciprocals<B>()) return 0;
  constexpr int q = 16 / sizeof(T);
  const int64_t n = std::min<int64_t>(max_index + 1, kMaxTable);
  return static_cast<int>((n + q - 1) / q * q);
}

// ---- launch helpers ------------------------------------------------------------------------------

C10_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Streaming-multiprocessor count of a device, cached (a grid-size input only, never a result input).
inline int sm_count(int device) {
  static std::atomic<int> cache[64];
  if (device < 0 || device >= 64) device = 0;
  int n = cache[device].load(std::memory_order_relaxed);
  if (n == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    n = std::max(n, 1);
    cache[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

// Grid for a grid-stride loop over `work` items handled `per_block` at a time: enough blocks to
// fill the device `waves` times, never more than there is work.
inline unsigned grid_for(int64_t work, int64_t per_block, int blocks_per_sm, int device) {
  const int64_t want = std::max<int64_t>(1, ceil_div(work, per_block));
  const int64_t cap = int64_t(sm_count(device)) * blocks_per_sm;
  return static_cast<unsigned>(std::min(want, cap));
}

template <typename T>
inline T neutral_x(const Domain& d) {  // a lane fill that maps to t = 0, where every basis is finite
  return d.mapped ? T(0.5 * (d.lo + d.hi)) : T(0);
}

template <typename P>
C10_HOST_DEVICE inline bool aligned_to(const P* p, int bytes) {
  return (reinterpret_cast<uintptr_t>(p) & uintptr_t(bytes - 1)) == 0;
}

// Coefficients of the order-`order` derivative series with the chain-rule factor scale^order
// folded in, in place in work[0, 2K): returns where the K - order values are. As the CPU kernels do.
template <Basis B, typename T>
C10_DEVICE inline T* derive_in_place(T* work, int K, int order, T scale_pow) {
  T* cur = work;
  T* nxt = work + K;
  for (int o = 0; o < order; ++o) {
    derivative<B, T>(cur, K - o, nxt);
    T* tmp = cur;
    cur = nxt;
    nxt = tmp;
  }
  for (int k = 0; k < K - order; ++k) cur[k] = scale_pow * cur[k];
  return cur;
}

// ---- host entry points (kernels.cu, series.cu, moments.cu) --------------------------------------

// Coefficients of the order-`order` derivative series times scale^order, in opmath precision: row r
// at data<T>() + r * row_stride (row_stride 0 when all rows are one broadcast row), K - order values.
struct Derived {
  at::Tensor buf;  // (rows, 2K) work space of the derivation
  int64_t offset = 0;
  int64_t row_stride = 0;
  template <typename T>
  const T* data() const {
    return buf.const_data_ptr<T>() + offset;
  }
};
Derived derive_coeffs_cuda(const at::Tensor& coeffs, Basis basis, const Domain& dom, int order);

void features_cuda(const at::Tensor& x, at::Tensor& out, Basis basis, const Domain& dom, bool increasing);
void series_cuda(const at::Tensor& x, const at::Tensor& coeffs, at::Tensor& y, Basis basis, const Domain& dom,
                 int64_t derivative);
void series_backward_cuda(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& coeffs,
                          at::Tensor& grad_x, at::Tensor& grad_coeffs, Basis basis, const Domain& dom,
                          int64_t derivative);

// y[r, n] = weight[r, n] * series_order(coeffs[r], t(x[r, n])) (weight optional): the forward, and
// the x-gradient with order + 1 and weight = grad.
void eval_series_cuda(const at::Tensor& x, const at::Tensor& coeffs, const at::Tensor* weight, at::Tensor& y,
                      Basis basis, const Domain& dom, int order);
// grad_coeffs (R, K) = scale^order (D^T)^order moments of grad at order `order`. With grad_x, the
// same pass also writes grad_x = grad * series_{order+1}(coeffs) (only when K - order is at most
// kMaxMomentsInRegisters).
constexpr int kMaxMomentsInRegisters = 32;
void coeff_grad_cuda(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& coeffs, at::Tensor& grad_coeffs,
                     at::Tensor* grad_x, Basis basis, const Domain& dom, int order);

}  // namespace polyfit::cuda
