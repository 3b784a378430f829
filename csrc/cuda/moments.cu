// Coefficient gradient on CUDA: gc[r, :] = s^nu (D^T)^nu m_r, moments m_r[k] = sum_n g[r, n] P_k(t).
//
// Deterministic, no floating-point atomics: every row is cut into chunks whose length depends on the
// shape (R, N, K) only, never on the device or the grid. One tile = (row, chunk), reduced in a fixed
// order (per-thread sums over its points, a shuffle tree in each warp, warps in index order) into
// its own slot of a partial buffer (double); a second kernel sums the chunks of each row in a fixed
// order, and a third applies (D^T)^nu and the chain-rule factor in double, as the CPU does.
//   - Ke <= 32: accumulators in registers. basis_values runs to a compile-time bound KMAX >= Ke so
//     it unrolls fully and acc[k] stays in registers; values past Ke are computed and dropped.
//     A tile is a block (long rows), a warp, or a single thread (rows of at most 32 points).
//     The same pass can also write grad_x = grad * series_{nu+1}: x and grad are read once for both.
//   - Ke > 32: a warp-shared window of 32 degrees in shared memory, flushed every 32 degrees.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>

#include <cmath>

#include "common.cuh"

namespace polyfit::cuda {
namespace {

using at::Tensor;

constexpr int kMomThreads = 256;  // 8 warps
constexpr int kMomWarps = kMomThreads / 32;
constexpr int kMomU = 4;          // loads issued together per thread
constexpr int kWinThreads = 128;  // 4 warps
constexpr int kWinWarps = kWinThreads / 32;
constexpr int kWin = 32;  // degrees per shared-memory window

template <typename scalar_t>
struct MomArgs {
  using T = at::opmath_type<scalar_t>;
  const scalar_t* x;
  int64_t sxr, sxn;
  const scalar_t* g;
  int64_t sgr, sgn;
  int64_t R, N;
  int Ke;
  int64_t chunk, chunks;  // row r, chunk c covers points [c * chunk, min(N, (c + 1) * chunk))
  int gw;                 // warps per tile: kMomWarps or 1; 0: one thread per tile
  T fill;
  Window<T> win;
  double* partial;  // tile's moments at partial + tile * ppitch
  int64_t ppitch;
  int ninv;
  scalar_t* gx;  // (R, N) contiguous: grad_x written in the same pass, or null
  const T* cx;   // coefficients of the order nu + 1 derivative (times scale^(nu+1)): row r at cx + r * scx
  int64_t scx;
  int Kx;
};

template <typename T>
C10_DEVICE inline T warp_sum(T v) {  // fixed tree; lane 0 holds the sum
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

template <Basis B, typename scalar_t, int KMAX>
__global__ void __launch_bounds__(kMomThreads) moments_reg_kernel(const MomArgs<scalar_t> a) {
  using T = at::opmath_type<scalar_t>;
  using V = Lanes<T, kMomU>;
  __shared__ T s_red[kMomWarps][KMAX];
  __shared__ T s_cx[kMomWarps][kMaxMomentsInRegisters];
  __shared__ T s_inv[kMaxMomentsInRegisters + 4];
  fill_reciprocals(s_inv, kMaxMomentsInRegisters + 4);
  __syncthreads();

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int gt = a.gw == 0 ? 1 : 32 * a.gw;  // threads per tile
  const int per_block = kMomThreads / gt;    // tiles a block works on at once
  const int tig = tid % gt;                  // thread in tile
  const int64_t tiles = a.R * a.chunks;
  int64_t loaded = -1;  // the row whose grad_x coefficients are in s_cx[warp]
  // Uniform across the block when a tile is the block, across the warp when it is the warp.
  for (int64_t tile = int64_t(blockIdx.x) * per_block + tid / gt; tile < tiles;
       tile += int64_t(gridDim.x) * per_block) {
    const int64_t r = tile / a.chunks;
    const int64_t c0 = (tile - r * a.chunks) * a.chunk;
    const int64_t c1 = min(a.N, c0 + a.chunk);
    const scalar_t* xr = a.x + r * a.sxr;
    const scalar_t* gr = a.g + r * a.sgr;

    const T* cxr = nullptr;
    if (a.gx) {
      const int64_t crow = a.scx == 0 ? 0 : r;
      if (a.gw == 0) {  // every thread its own row: read through L1
        cxr = a.cx + crow * a.scx;
      } else {
        if (crow != loaded) {
          __syncwarp();
          for (int k = lane; k < a.Kx; k += 32) s_cx[warp][k] = a.cx[crow * a.scx + k];
          __syncwarp();
          loaded = crow;
        }
        cxr = s_cx[warp];
      }
    }

    T acc[KMAX];
#pragma unroll
    for (int k = 0; k < KMAX; ++k) acc[k] = T(0);
    for (int64_t n = c0 + tig; n < c1; n += int64_t(gt) * kMomU) {
      V t;
      T gs[kMomU];
#pragma unroll
      for (int u = 0; u < kMomU; ++u) {  // all loads first
        const int64_t m = n + int64_t(u) * gt;
        t.v[u] = m < c1 ? T(xr[m * a.sxn]) : a.fill;
        gs[u] = m < c1 ? T(gr[m * a.sgn]) : T(0);
      }
      t = map_to_window(t, a.win);
      if (cxr) {  // grad_x = grad * series_{nu+1}, as eval_series computes it
        const V y = series<B, T>([&](int k) { return V(cxr[k]); }, a.Kx, t, TableInv<T>{s_inv});
        scalar_t* gxr = a.gx + r * a.N;
#pragma unroll
        for (int u = 0; u < kMomU; ++u) {
          const int64_t m = n + int64_t(u) * gt;
          if (m < c1) gxr[m] = scalar_t(y.v[u] * gs[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < kMomU; ++u) {
        if (n + int64_t(u) * gt < c1) {
          // The recurrence started from g gives g P_k directly (as on the CPU).
          basis_values<B, T>(t.v[u], gs[u], KMAX, [&](int k, T p) {
            if (k < a.Ke) acc[k] = acc[k] + p;
          });
        }
      }
    }

    double* dst = a.partial + tile * a.ppitch;
    if (a.gw == 0) {
#pragma unroll
      for (int k = 0; k < KMAX; ++k) {
        if (k < a.Ke) dst[k] = double(acc[k]);
      }
      continue;
    }
#pragma unroll
    for (int k = 0; k < KMAX; ++k) {
      if (k < a.Ke) acc[k] = warp_sum(acc[k]);
    }
    if (a.gw == 1) {
      if (lane == 0) {
#pragma unroll
        for (int k = 0; k < KMAX; ++k) {
          if (k < a.Ke) dst[k] = double(acc[k]);
        }
      }
    } else {
      if (lane == 0) {
#pragma unroll
        for (int k = 0; k < KMAX; ++k) {
          if (k < a.Ke) s_red[warp][k] = acc[k];
        }
      }
      __syncthreads();
      if (tid < a.Ke) {
        double s = 0;
#pragma unroll
        for (int w = 0; w < kMomWarps; ++w) s += double(s_red[w][tid]);
        dst[tid] = s;
      }
      __syncthreads();
    }
  }
}

// Any Ke: one tile per warp, 32 points at a time (one per lane). The recurrence is uniform across
// the warp, so inside basis_values' sink the warp writes g P_k into a 32 x 32 window and, when it
// is full, lane j sums row j of it (fixed order) into the tile's slot for degree k0 + j.
template <Basis B, typename scalar_t>
__global__ void __launch_bounds__(kWinThreads) moments_window_kernel(const MomArgs<scalar_t> a) {
  using T = at::opmath_type<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* s_inv = reinterpret_cast<T*>(smem);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  T* slab = s_inv + a.ninv + warp * kWin * (kWin + 1);  // row pitch 33: both access patterns conflict-free
  fill_reciprocals(s_inv, a.ninv);
  __syncthreads();
  const TableOrDivInv<T> inv{s_inv, a.ninv};

  const int64_t tiles = a.R * a.chunks;
  for (int64_t tile = int64_t(blockIdx.x) * kWinWarps + warp; tile < tiles; tile += int64_t(gridDim.x) * kWinWarps) {
    const int64_t r = tile / a.chunks;
    const int64_t c0 = (tile - r * a.chunks) * a.chunk;
    const int64_t c1 = min(a.N, c0 + a.chunk);
    const scalar_t* xr = a.x + r * a.sxr;
    const scalar_t* gr = a.g + r * a.sgr;
    double* dst = a.partial + tile * a.ppitch;
    for (int k = lane; k < a.Ke; k += 32) dst[k] = 0.0;  // slot k belongs to lane k % 32 throughout
    for (int64_t n0 = c0; n0 < c1; n0 += 32) {
      const int64_t n = n0 + lane;
      const bool ok = n < c1;
      const T t = map_to_window(ok ? T(xr[n * a.sxn]) : a.fill, a.win);
      const T g = ok ? T(gr[n * a.sgn]) : T(0);
      basis_values<B, T>(
          t, g, a.Ke,
          [&](int k, T p) {  // p = g P_k
            const int kk = k & (kWin - 1);
            slab[kk * (kWin + 1) + lane] = ok ? p : T(0);
            if (kk == kWin - 1 || k == a.Ke - 1) {  // uniform across the warp
              __syncwarp();
              if (lane <= kk) {
                T s = T(0);
                for (int i = 0; i < 32; ++i) s += slab[lane * (kWin + 1) + i];
                dst[k - kk + lane] += double(s);
              }
              __syncwarp();
            }
          },
          inv);
    }
  }
}

// m[r, k] = sum over chunks c of partial[r, c, k], each (r, k) by a group of G threads in a fixed
// order: thread t of the group adds chunks t, t + G, ... in 8 chains (8 loads in flight), and the
// group's sums meet in a fixed tree. G is a warp, or the whole block for long sums: one row (R = 1)
// has only Ke sums, and a warp each left 9 warps on the GPU, waiting on one load round after
// another (54 us at N = 2^26 on an H200 with one chain, 22.8 with 8). G follows from the problem's
// shape alone, so the result does not depend on the device.
constexpr int kReduceThreads = 256;

template <int G>
__global__ void __launch_bounds__(kReduceThreads) reduce_chunks_kernel(const double* __restrict__ partial, int64_t R,
                                                                       int64_t chunks, int Ke,
                                                                       double* __restrict__ m, int64_t mpitch) {
  constexpr int kChains = 8;
  constexpr int kGroups = kReduceThreads / G;  // groups in a block
  __shared__ double s_warp[kReduceThreads / 32];
  const int tig = threadIdx.x % G, lane = threadIdx.x & 31;
  const int64_t groups = int64_t(gridDim.x) * kGroups;
  // Uniform across the block when the group is the block (the __syncthreads below).
  for (int64_t w = int64_t(blockIdx.x) * kGroups + threadIdx.x / G; w < R * Ke; w += groups) {
    const int64_t r = w / Ke, k = w - r * Ke;
    const double* p = partial + r * chunks * Ke + k;
    double acc[kChains] = {};
    int64_t c = tig;
    for (; c + (kChains - 1) * G < chunks; c += kChains * G) {
#pragma unroll
      for (int u = 0; u < kChains; ++u) acc[u] += p[(c + u * G) * Ke];
    }
#pragma unroll
    for (int u = 0; u < kChains - 1; ++u)  // the tail: fewer than kChains loads per thread
      if (c + u * G < chunks) acc[u] += p[(c + u * G) * Ke];
    static_assert(kChains == 8, "the sum below adds 8 chains");
    double s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    s = warp_sum(s);
    if constexpr (G == 32) {
      if (lane == 0) m[r * mpitch + k] = s;
    } else {
      static_assert(G == kReduceThreads, "a group is a warp or the block");
      if (lane == 0) s_warp[threadIdx.x >> 5] = s;
      __syncthreads();
      if (threadIdx.x == 0) {
        double t = 0.0;
        for (int i = 0; i < kReduceThreads / 32; ++i) t += s_warp[i];
        m[r * mpitch + k] = t;
      }
      __syncthreads();  // s_warp is rewritten by the next sum
    }
  }
}

// derivative = 0: gc = m (the chain-rule factor is 1).
template <typename scalar_t>
__global__ void finalize_plain_kernel(const double* __restrict__ m, int64_t total, scalar_t* __restrict__ gc) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x)
    gc[e] = scalar_t(m[e]);
}

// derivative = nu > 0: back through each derivative in double, in place in m's (R, 2K) rows.
template <Basis B, typename scalar_t>
__global__ void finalize_transpose_kernel(double* __restrict__ m, int64_t R, int K, int order, double scale_pow,
                                          scalar_t* __restrict__ gc) {
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < R; r += int64_t(gridDim.x) * blockDim.x) {
    double* cur = m + r * 2 * K;
    double* nxt = cur + K;
    for (int o = order; o > 0; --o) {  // Ke .. K coefficients
      derivative_transpose<B, double>(cur, K - o + 1, nxt);
      double* tmp = cur;
      cur = nxt;
      nxt = tmp;
    }
    for (int k = 0; k < K; ++k) gc[r * K + k] = scalar_t(scale_pow * cur[k]);
  }
}

template <typename scalar_t>
void launch_coeff_grad(const Tensor& grad, const Tensor& x, const Tensor& coeffs, Tensor& gc, Tensor* gx,
                       Basis basis, const Domain& dom, int order) {
  using T = at::opmath_type<scalar_t>;
  MomArgs<scalar_t> a{};
  a.x = x.const_data_ptr<scalar_t>();
  a.sxr = x.stride(0);
  a.sxn = x.stride(1);
  a.g = grad.const_data_ptr<scalar_t>();
  a.sgr = grad.stride(0);
  a.sgn = grad.stride(1);
  a.R = x.size(0);
  a.N = x.size(1);
  const int K = static_cast<int>(gc.size(1));
  a.Ke = K - order;
  a.fill = neutral_x<T>(dom);
  a.win = dom.window<T>();
  const int device = x.get_device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device);
  const auto f64 = x.options().dtype(at::kDouble);

  Derived derived;  // grad_x's coefficients, alive until the launches below are queued
  if (gx) {
    TORCH_INTERNAL_ASSERT(a.Ke <= kMaxMomentsInRegisters && gx->is_contiguous());
    derived = derive_coeffs_cuda(coeffs, basis, dom, order + 1);
    a.gx = gx->mutable_data_ptr<scalar_t>();
    a.cx = derived.data<T>();
    a.scx = derived.row_stride;
    a.Kx = K - order - 1;
  }

  POLYFIT_DISPATCH_BASIS(basis, [&] {
    const bool in_registers = a.Ke <= kMaxMomentsInRegisters;
    // Tile shape from (R, N, Ke) alone, never from the device: about 4096 tiles when the problem
    // allows (enough to fill any GPU), at most 64 (registers) or 128 (window) points per thread.
    if (in_registers && a.N <= 32) {  // rows of a few points: one thread per row, no reduction
      a.gw = 0;
      a.chunk = a.N;
      a.chunks = 1;
    } else {
      a.gw = in_registers && a.N >= 4096 ? kMomWarps : 1;
      const int64_t gt = 32 * a.gw;
      const int64_t max_chunk = gt * (in_registers ? 64 : 128);
      int64_t chunk = std::max(gt, ceil_div(a.N, ceil_div(4096, a.R)));
      chunk = std::min(ceil_div(chunk, gt) * gt, max_chunk);
      a.chunk = chunk;
      a.chunks = ceil_div(a.N, chunk);
    }

    const int64_t mpitch = order > 0 ? 2 * int64_t(K) : K;
    Tensor m = at::empty({a.R, mpitch}, f64);
    Tensor partial = a.chunks > 1 ? at::empty({a.R * a.chunks, int64_t(a.Ke)}, f64) : m;
    a.partial = partial.mutable_data_ptr<double>();
    a.ppitch = a.chunks > 1 ? a.Ke : mpitch;
    const int64_t tiles = a.R * a.chunks;

    if (in_registers) {
      const int64_t per_block = a.gw == 0 ? kMomThreads : kMomWarps / a.gw;
      const unsigned grid = grid_for(tiles, per_block, 8, device);
      // Recurrence steps past Ke are wasted work: buckets close enough to keep that under a third.
      if (a.Ke <= 8) {
        moments_reg_kernel<kBasis, scalar_t, 8><<<grid, kMomThreads, 0, stream>>>(a);
      } else if (a.Ke <= 12) {
        moments_reg_kernel<kBasis, scalar_t, 12><<<grid, kMomThreads, 0, stream>>>(a);
      } else if (a.Ke <= 16) {
        moments_reg_kernel<kBasis, scalar_t, 16><<<grid, kMomThreads, 0, stream>>>(a);
      } else if (a.Ke <= 24) {
        moments_reg_kernel<kBasis, scalar_t, 24><<<grid, kMomThreads, 0, stream>>>(a);
      } else {
        moments_reg_kernel<kBasis, scalar_t, 32><<<grid, kMomThreads, 0, stream>>>(a);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      // The 1/j table fills what the windows leave of the budget; TableOrDivInv divides beyond it.
      constexpr int q = 16 / sizeof(T);
      const int64_t win_elems = int64_t(kWinWarps) * kWin * (kWin + 1);
      const int64_t room = (kSmemBudget / int64_t(sizeof(T)) - win_elems) / q * q;
      a.ninv = static_cast<int>(std::min<int64_t>(table_len<kBasis, T>(a.Ke), room));
      const size_t smem = size_t(a.ninv + win_elems) * sizeof(T);
      const unsigned grid = grid_for(tiles, kWinWarps, 16, device);
      moments_window_kernel<kBasis, scalar_t><<<grid, kWinThreads, smem, stream>>>(a);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }

    if (a.chunks > 1) {
      double* msum = m.mutable_data_ptr<double>();
      if (a.chunks > 8 * 32) {  // more than one round of loads for a warp: the block shares each sum
        const unsigned grid = grid_for(a.R * a.Ke, 1, 8, device);
        reduce_chunks_kernel<kReduceThreads><<<grid, kReduceThreads, 0, stream>>>(a.partial, a.R, a.chunks, a.Ke,
                                                                                 msum, mpitch);
      } else {
        const unsigned grid = grid_for(a.R * a.Ke, kReduceThreads / 32, 8, device);
        reduce_chunks_kernel<32><<<grid, kReduceThreads, 0, stream>>>(a.partial, a.R, a.chunks, a.Ke, msum, mpitch);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }

    scalar_t* out = gc.mutable_data_ptr<scalar_t>();
    if (order == 0) {
      const unsigned grid = grid_for(a.R * K, 256, 8, device);
      finalize_plain_kernel<scalar_t><<<grid, 256, 0, stream>>>(m.const_data_ptr<double>(), a.R * K, out);
    } else {
      const unsigned grid = grid_for(a.R, 128, 16, device);
      finalize_transpose_kernel<kBasis, scalar_t><<<grid, 128, 0, stream>>>(
          m.mutable_data_ptr<double>(), a.R, K, order, std::pow(dom.scale, order), out);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

void coeff_grad_cuda(const Tensor& grad, const Tensor& x, const Tensor& coeffs, Tensor& grad_coeffs, Tensor* grad_x,
                     Basis basis, const Domain& dom, int order) {
  TORCH_INTERNAL_ASSERT(grad_coeffs.is_contiguous() && x.dim() == 2 && grad.dim() == 2 &&
                        order < grad_coeffs.size(1));
  if (grad_coeffs.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  if (x.numel() == 0) {  // no points: every moment is 0 (the host handles this; kept for safety)
    grad_coeffs.zero_();
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "polyfit_coeff_grad_cuda", [&] {
    launch_coeff_grad<scalar_t>(grad, x, coeffs, grad_coeffs, grad_x, basis, dom, order);
  });
}

}  // namespace polyfit::cuda
