// Series evaluation on CUDA: y[r, n] = weight[r, n] * s^order * series_order(coeffs[r], t(x[r, n])).
// The forward is order = derivative with no weight; the x-gradient is order = derivative + 1 with
// weight = grad. Two layouts, as on the CPU:
//   rows:  long rows (or one shared polynomial): a block works on 1024 points of one row at a time,
//          the row's coefficients and the 1/j table in shared memory, 4 lanes per thread, vector
//          loads and stores where the row is contiguous and aligned;
//   lanes: short rows (features' backward has N = 1): one point per thread over all R * N points,
//          each thread with its own row's coefficients.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>

#include <cmath>

#include "common.cuh"

namespace polyfit::cuda {
namespace {

using at::Tensor;

constexpr int kRowsThreads = 256;
constexpr int kU = 4;  // lanes (points) per thread in the rows kernel
constexpr int kRowsTile = kRowsThreads * kU;
constexpr int kLanesThreads = 128;

template <typename scalar_t>
struct SeriesArgs {
  using T = at::opmath_type<scalar_t>;
  const scalar_t* x;
  int64_t sxr, sxn;
  const scalar_t* w;  // weight, or null
  int64_t swr, swn;
  const scalar_t* c;  // coefficients as given (read when d is null)
  int64_t scr, sck;
  const T* d;  // derived coefficients from derive_kernel: row r at d + r * sdr (sdr = 0: one shared row)
  int64_t sdr;
  scalar_t* y;  // (R, N) contiguous
  int64_t R, N;
  int K, Ke, order;  // Ke = K - order coefficients remain after differentiating
  T scale_pow;       // chain-rule factor scale^order
  T fill;            // x of lanes past the end: maps to t = 0
  Window<T> win;
  int ninv;  // length of the 1/j table at the start of shared memory
};

template <typename scalar_t, int U>
struct alignas(sizeof(scalar_t) * U) Packed {
  scalar_t v[U];
};

// q = e / N, r = e % N; 32-bit division (a few instructions instead of ~70) when both fit.
C10_DEVICE inline void divmod(int64_t e, int64_t N, int64_t& q, int64_t& r) {
  if (((static_cast<uint64_t>(e) | static_cast<uint64_t>(N)) >> 32) == 0) {  // 32-bit division is much cheaper
    const uint32_t q32 = static_cast<uint32_t>(e) / static_cast<uint32_t>(N);
    q = q32;
  } else {
    q = e / N;
  }
  r = e - q * N;
}

template <Basis B, typename scalar_t>
__global__ void __launch_bounds__(kRowsThreads) series_rows_kernel(const SeriesArgs<scalar_t> a) {
  using T = at::opmath_type<scalar_t>;
  using V = Lanes<T, kU>;
  using P = Packed<scalar_t, kU>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* s_inv = reinterpret_cast<T*>(smem);
  T* s_coef = s_inv + a.ninv;
  fill_reciprocals(s_inv, a.ninv);

  const int tid = threadIdx.x;
  const int64_t tiles_per_row = ceil_div(a.N, kRowsTile);
  const int64_t tiles = a.R * tiles_per_row;
  int64_t loaded = -1;  // the coefficient row now in shared memory
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int64_t r, n0;
    divmod(tile, tiles_per_row, r, n0);
    n0 *= kRowsTile;
    const int64_t crow = (a.d ? a.sdr : a.scr) == 0 ? 0 : r;  // broadcast rows are loaded once
    if (crow != loaded) {  // uniform across the block
      __syncthreads();
      if (a.d) {
        for (int k = tid; k < a.Ke; k += kRowsThreads) s_coef[k] = a.d[crow * a.sdr + k];
      } else {
        for (int k = tid; k < a.Ke; k += kRowsThreads) s_coef[k] = T(a.c[crow * a.scr + k * a.sck]);
      }
      __syncthreads();
      loaded = crow;
    }

    const scalar_t* xr = a.x + r * a.sxr;
    const scalar_t* wr = a.w ? a.w + r * a.swr : nullptr;
    scalar_t* yr = a.y + r * a.N;
    constexpr int kAlign = sizeof(P);
    const bool vec = n0 + kRowsTile <= a.N && a.sxn == 1 && aligned_to(xr + n0, kAlign) &&
                     aligned_to(yr + n0, kAlign) && (!wr || (a.swn == 1 && aligned_to(wr + n0, kAlign)));
    // Thread tid holds points n0 + kU*tid + u (vector loads), else n0 + u*threads + tid (still coalesced).
    const auto load = [&](const scalar_t* p, int64_t stride, T fill) {
      V v;
      if (vec) {
        const P q = *reinterpret_cast<const P*>(p + n0 + kU * tid);
#pragma unroll
        for (int u = 0; u < kU; ++u) v.v[u] = T(q.v[u]);
      } else {
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          const int64_t n = n0 + u * kRowsThreads + tid;
          v.v[u] = n < a.N ? T(p[n * stride]) : fill;
        }
      }
      return v;
    };
    const V xv = load(xr, a.sxn, a.fill);
    const V t = map_to_window(xv, a.win);
    V yv = series<B, T>([&](int k) { return V(s_coef[k]); }, a.Ke, t, TableInv<T>{s_inv});
    if (wr) yv = yv * load(wr, a.swn, T(0));
    if (vec) {
      P p;
#pragma unroll
      for (int u = 0; u < kU; ++u) p.v[u] = scalar_t(yv.v[u]);
      *reinterpret_cast<P*>(yr + n0 + kU * tid) = p;
    } else {
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int64_t n = n0 + u * kRowsThreads + tid;
        if (n < a.N) yr[n] = scalar_t(yv.v[u]);
      }
    }
  }
}


// pitch > 0: each thread derives its row's coefficients itself in its own `pitch`-long slice of
// shared memory (no (R, 2K) scratch for features' backward); otherwise a.d (pre-derived) or a.c.
template <Basis B, typename scalar_t>
__global__ void __launch_bounds__(kLanesThreads) series_lanes_kernel(const SeriesArgs<scalar_t> a, int pitch) {
  using T = at::opmath_type<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* s_inv = reinterpret_cast<T*>(smem);
  T* own = s_inv + a.ninv + threadIdx.x * pitch;
  fill_reciprocals(s_inv, a.ninv);
  __syncthreads();
  const TableOrDivInv<T> inv{s_inv, a.ninv};

  const int64_t total = a.R * a.N;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    int64_t r, n;
    divmod(e, a.N, r, n);
    const T t = map_to_window(T(a.x[r * a.sxr + n * a.sxn]), a.win);
    T y;
    if (a.d || pitch > 0) {
      const T* cr;
      if (a.d) {
        cr = a.d + r * a.sdr;
      } else {
        const scalar_t* src = a.c + r * a.scr;
        for (int k = 0; k < a.K; ++k) own[k] = T(src[k * a.sck]);
        cr = derive_in_place<B, T>(own, a.K, a.order, a.scale_pow);
      }
      y = series<B, T>([&](int k) { return cr[k]; }, a.Ke, t, inv);
    } else {  // order 0: the coefficients as given
      const scalar_t* cr = a.c + r * a.scr;
      y = series<B, T>([&](int k) { return T(cr[k * a.sck]); }, a.Ke, t, inv);
    }
    if (a.w) y = y * T(a.w[r * a.swr + n * a.swn]);
    a.y[e] = scalar_t(y);
  }
}

template <typename scalar_t>
void launch_series(const Tensor& x, const Tensor& coeffs, const Tensor* weight, Tensor& y, Basis basis,
                   const Domain& dom, int order) {
  using T = at::opmath_type<scalar_t>;
  SeriesArgs<scalar_t> a{};
  a.x = x.const_data_ptr<scalar_t>();
  a.sxr = x.stride(0);
  a.sxn = x.stride(1);
  if (weight) {
    a.w = weight->const_data_ptr<scalar_t>();
    a.swr = weight->stride(0);
    a.swn = weight->stride(1);
  }
  a.c = coeffs.const_data_ptr<scalar_t>();
  a.scr = coeffs.stride(0);
  a.sck = coeffs.stride(1);
  a.y = y.mutable_data_ptr<scalar_t>();
  a.R = x.size(0);
  a.N = x.size(1);
  a.K = static_cast<int>(coeffs.size(1));
  a.order = order;
  a.Ke = a.K - order;
  a.scale_pow = T(std::pow(dom.scale, order));
  a.fill = neutral_x<T>(dom);
  a.win = dom.window<T>();
  const int device = x.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device);

  Derived derived;  // keeps the derived coefficients alive until the launches below are queued
  auto derive = [&] {
    derived = derive_coeffs_cuda(coeffs, basis, dom, order);
    a.d = derived.data<T>();
    a.sdr = derived.row_stride;
  };

  POLYFIT_DISPATCH_BASIS(basis, [&] {
    const int ninv = table_len<kBasis, T>(a.Ke);  // Clenshaw on Ke coefficients reads 1/j for j <= Ke
    const bool table_complete = !needs_reciprocals<kBasis>() || int64_t(a.Ke) + 1 <= kMaxTable;
    const size_t rows_smem = (size_t(ninv) + a.Ke) * sizeof(T);
    if ((a.R == 1 || a.N >= kRowsTile) && table_complete && rows_smem <= size_t(kSmemBudget)) {
      if (order > 0) derive();
      a.ninv = ninv;
      const unsigned grid = grid_for(a.R * ceil_div(a.N, kRowsTile), 1, 8, device);
      series_rows_kernel<kBasis, scalar_t><<<grid, kRowsThreads, rows_smem, stream>>>(a);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      a.ninv = ninv;
      int pitch = 0;
      if (order > 0) {
        const int64_t p = 2 * int64_t(a.K) + 1;  // odd: threads' slices start in distinct banks
        if ((ninv + p * kLanesThreads) * int64_t(sizeof(T)) <= kSmemBudget) {
          pitch = static_cast<int>(p);
        } else {
          derive();
        }
      }
      const size_t smem = (size_t(ninv) + size_t(pitch) * kLanesThreads) * sizeof(T);
      const unsigned grid = grid_for(a.R * a.N, kLanesThreads, 16, device);
      series_lanes_kernel<kBasis, scalar_t><<<grid, kLanesThreads, smem, stream>>>(a, pitch);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

}  // namespace

// ---- derived coefficients -------------------------------------------------------------------------

namespace {

// One thread per coefficient row, as the CPU derives once per row: the row in opmath precision,
// then derive_in_place (basis.h's derivative, then the chain-rule factor).
template <Basis B, typename scalar_t>
__global__ void derive_kernel(const scalar_t* __restrict__ c, int64_t scr, int64_t sck, int64_t rows, int K,
                              int order, at::opmath_type<scalar_t> scale_pow, at::opmath_type<scalar_t>* out) {
  using T = at::opmath_type<scalar_t>;
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < rows; r += int64_t(gridDim.x) * blockDim.x) {
    T* w = out + r * 2 * K;
    const scalar_t* cr = c + r * scr;
    for (int k = 0; k < K; ++k) w[k] = T(cr[k * sck]);
    derive_in_place<B, T>(w, K, order, scale_pow);  // lands at w + (order & 1) * K
  }
}

}  // namespace

Derived derive_coeffs_cuda(const Tensor& coeffs, Basis basis, const Domain& dom, int order) {
  Derived out;
  const int64_t R = coeffs.size(0), K = coeffs.size(1);
  const int64_t rows = coeffs.stride(0) == 0 ? 1 : R;  // broadcast rows: derived once
  const int device = coeffs.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, coeffs.scalar_type(), "polyfit_derive_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    out.buf = at::empty({rows, 2 * K}, coeffs.options().dtype(c10::CppTypeToScalarType<T>::value));
    out.offset = (order & 1) * K;
    out.row_stride = rows == 1 ? 0 : 2 * K;
    const T scale_pow = T(std::pow(dom.scale, order));  // as the CPU kernels round it
    POLYFIT_DISPATCH_BASIS(basis, [&] {
      derive_kernel<kBasis, scalar_t><<<grid_for(rows, 128, 16, device), 128, 0, stream>>>(
          coeffs.const_data_ptr<scalar_t>(), coeffs.stride(0), coeffs.stride(1), rows, static_cast<int>(K), order,
          scale_pow, out.buf.mutable_data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

void eval_series_cuda(const Tensor& x, const Tensor& coeffs, const Tensor* weight, Tensor& y, Basis basis,
                      const Domain& dom, int order) {
  TORCH_INTERNAL_ASSERT(y.is_contiguous() && x.dim() == 2 && coeffs.dim() == 2 && order < coeffs.size(1));
  if (y.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "polyfit_series_cuda", [&] {
    launch_series<scalar_t>(x, coeffs, weight, y, basis, dom, order);
  });
}

}  // namespace polyfit::cuda
