// CPU kernels of polyfit. This file is compiled once per instruction set (setup.py: baseline,
// AVX2+FMA, AVX-512) into its own library; polyfit/_backend.py loads the one the CPU supports,
// as ATen does for its own kernels. The math is csrc/basis.h; this file only moves data:
// SIMD packs, strided loads, threads and a deterministic reduction.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "../basis.h"
#include "../ops.h"
#include "output_cache.h"
#include "pack.h"

namespace polyfit::cpu {
namespace {

// Coefficients of the order-`order` derivative series with the chain-rule factor scale^order
// folded in: K - order values written to out. `work` holds 2K scratch values.
template <Basis B, typename T, typename V>
inline V* derived_coeffs(V* work, int K, int order, T scale_pow) {
  V* cur = work;
  V* nxt = work + K;
  for (int o = 0; o < order; ++o) {
    derivative<B, T>(cur, K - o, nxt);
    std::swap(cur, nxt);
  }
  for (int k = 0; k < K - order; ++k) cur[k] = V(scale_pow) * cur[k];
  return cur;
}

// One row's series, summed as its basis allows best: Legendre through the monic polynomials (two
// vector operations a Clenshaw step where P_k's take three and two divisions; basis.h), unless the
// scaled coefficients could overflow; every basis with its reciprocals looked up, not divided.
// Legendre, N = 1e6 float32, 2-core Xeon: forward D = 8 / 16 / 32 185-188 / 358 / 710-714 -> 144-145 /
// 202-218 / 356-395 us; backward op for grad_x alone, D = 16, 376-389 -> 251-275 us.
template <Basis B, typename T>
class RowSeries {
 public:
  explicit RowSeries(int K) : inv_(K), beta_(B == Basis::Legendre ? size_t(K) : 0) {
    for (int k = 1; k < int(beta_.size()); ++k) beta_[k] = legendre_monic_beta<T>(k);
  }
  // The row's K >= 1 coefficients; `spare` holds K values the monic form's copy may take.
  void set(const T* coef, T* spare, int K) {
    coef_ = coef, K_ = K, monic_ = false;
    if constexpr (B == Basis::Legendre) {
      std::copy(coef, coef + K, spare);
      monic_ = legendre_monic_coeffs(spare, K, 1e-6 * double(std::numeric_limits<T>::max()));
      if (monic_) coef_ = spare;
    }
  }
  template <typename V>
  C10_ALWAYS_INLINE V operator()(const V& t) const {
    const auto coef = [&](int k) { return V(coef_[k]); };
    if constexpr (B == Basis::Legendre) {
      if (monic_) return series_monic_legendre<T>(coef, [&](int k) { return V(beta_[k]); }, K_, t);
    }
    return series<B, T>(coef, K_, t, inv_.lookup());
  }
  typename Reciprocals<T>::Lookup inv() const { return inv_.lookup(); }

 private:
  Reciprocals<T> inv_;
  c10::SmallVector<T, 32> beta_;
  const T* coef_ = nullptr;
  int K_ = 0;
  bool monic_ = false;
};

// ---- features --------------------------------------------------------------------------------

#if defined(CPU_CAPABILITY_AVX512)
// One AVX-512 register of W floats (16) or doubles (8): what transpose_to_rows needs of each.
template <typename T>
struct Zmm;
template <>
struct Zmm<float> {
  using V = __m512;
  static constexpr int W = 16;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V zero() { return _mm512_setzero_ps(); }
  static void transpose(const V* r, V* p) { transpose_16x16(r, p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store_first(float* p, int n, V v) { _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), v); }
  static V load_first(const float* p, int n) { return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p); }
  // p[i * stride] = lane i, and back
  static __m512i index(int stride) {
    return _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(stride));
  }
  static void scatter(float* p, int stride, V v) { _mm512_i32scatter_ps(p, index(stride), v, 4); }
  static V gather(const float* p, int stride) { return _mm512_i32gather_ps(index(stride), p, 4); }
};
template <>
struct Zmm<double> {
  using V = __m512d;
  static constexpr int W = 8;
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static V zero() { return _mm512_setzero_pd(); }
  static void transpose(const V* r, V* p) { transpose_8x8(r, p); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
  static void store_first(double* p, int n, V v) { _mm512_mask_storeu_pd(p, __mmask8((1u << n) - 1), v); }
  static V load_first(const double* p, int n) { return _mm512_maskz_loadu_pd(__mmask8((1u << n) - 1), p); }
  static __m256i index(int stride) {
    return _mm256_mullo_epi32(_mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0), _mm256_set1_epi32(stride));
  }
  static void scatter(double* p, int stride, V v) { _mm512_i32scatter_pd(p, index(stride), v, 8); }
  static V gather(const double* p, int stride) { return _mm512_i32gather_pd(index(stride), p, 8); }
};

// cols (K rows of W points, row stride ld) -> rows (W rows of K, contiguous): W x W register
// transposes and a masked store per point, W columns at a time. For doubles it replaced a scalar
// copy (Zen 4, 2 threads, N = 1e5 in cache: features D = 4 / 32 took 4.7 / 6.0 times a fill).
// A last chunk of one column (K = 2^m + 1: D = 8, 16, 32) is scattered where the rows are an L1
// stage, instead of a whole transpose for it: 2-core Xeon, 1e5 points, bfloat16 D = 16 / 32: 189-191
// -> 150-162 / 347-360 -> 303-308 us, float64 D = 16 / 32: 450-454 -> 428-444 / 907-925 -> 863-899
// us. Scattered straight into the output, float32 D = 16 measured slower (155 -> 169 us).
template <typename T>
void transpose_to_rows(const T* cols, int64_t ld, int K, T* rows, bool rows_in_l1) {
  using Z = Zmm<T>;
  for (int k0 = 0; k0 < K; k0 += Z::W) {
    const int w = std::min(Z::W, K - k0);
    if (w == 1 && rows_in_l1) {
      Z::scatter(rows + k0, K, Z::load(cols + k0 * ld));
      continue;
    }
    typename Z::V c[Z::W], p[Z::W];
    for (int k = 0; k < Z::W; ++k) c[k] = k < w ? Z::load(cols + (k0 + k) * ld) : Z::zero();
    Z::transpose(c, p);
    for (int i = 0; i < Z::W; ++i) Z::store_first(rows + int64_t(i) * K + k0, w, p[i]);
  }
}

// The inverse: rows (W rows of K, row i at rows + i * row_stride) -> cols (K rows of W, stride ld).
template <typename T>
void transpose_to_columns(const T* rows, int64_t row_stride, int K, T* cols, int64_t ld) {
  using Z = Zmm<T>;
  for (int k0 = 0; k0 < K; k0 += Z::W) {
    const int w = std::min(Z::W, K - k0);
    if (w == 1) {  // one column left: a gather, not a transpose (features' backward, 1e5 rows, Xeon:
      // float32 D = 16 268-307 -> 249-250 us, float64 D = 8 282-305 -> 263-272 us)
      Z::store(cols + k0 * ld, Z::gather(rows + k0, int(row_stride)));
      continue;
    }
    typename Z::V r[Z::W], c[Z::W];
    for (int i = 0; i < Z::W; ++i) r[i] = Z::load_first(rows + i * row_stride + k0, w);
    Z::transpose(r, c);
    for (int k = 0; k < w; ++k) Z::store(cols + (k0 + k) * ld, c[k]);
  }
}

// Turns the tile's K rows (row k: column k of 16 points, row stride ld) into the 16 output rows of
// K floats at `rows`, and back (columns()). Up to K = 9 the K vectors of
// either side are gathered from the K of the other by chains of K - 1 two-source permutes each
// (K (K - 1) per 16 points); beyond, a 16 x 16 transpose (64 shuffles) and a masked store (load)
// per point, 16 columns at a time. Measured on Zen 4, one thread, N = 1e5 in cache, features D = 1
// / 2 / 4 / 5 / 6: 40 / 53 / 119 / 146 / 166 us with one masked permute per (vector, column) up to
// K = 6 (K^2 mask registers spill) and transposes beyond, 34 / 44 / 77-94 / 107-117 / 144-148 us
// with the chains. At K = 8 and 9 the chains, read from the tile, lost to the transpose for rows (2
// threads, D = 7 / 8: 69-75 / 84-102 vs 80-87 / 83-117 us) but won for columns in features'
// backward (114-125 / 126-133 vs 78-83 / 108-110 us). Computed in registers and chained straight
// to the output (features_blocks_in_registers), they win for rows too (2-core Xeon, 1e5 points, D =
// 7 / 8: float32 66-75 / 77-88 -> 55 / 70 us, bfloat16 92-94 / 97-99 -> 67-68 / 84-85 us).
class Interleave16 {
 public:
  static constexpr int kMaxChainK = 9;
  explicit Interleave16(int K) : K_(K) {
    if (K_ > kMaxChainK) return;
    // rows vector q, lane i holds point (16q + i) / K, column (16q + i) % K; a column vector k,
    // lane i, is element i K + k of the rows, i.e. rows vector (iK + k) / 16, lane (iK + k) % 16.
    build_chain(to_rows_, [K](int q, int i) { return std::pair{(16 * q + i) % K, (16 * q + i) / K}; });
    build_chain(to_cols_, [K](int k, int i) { return std::pair{(i * K + k) / 16, (i * K + k) % 16}; });
  }
  // cols (K rows of 16 points, row stride ld) -> rows (16 rows of K, contiguous).
  // Full blocks of up to 9 columns never come here: they are chained in registers
  // (features_blocks_in_registers, through store_rows).
  void operator()(const float* cols, int64_t ld, float* rows) const {
    transpose_to_rows(cols, ld, K_, rows, /*rows_in_l1=*/false);
  }

  // The inverse: rows (16 rows of K, row i at rows + i * row_stride) -> cols (K rows, stride ld).
  void columns(const float* rows, int64_t row_stride, float* cols, int64_t ld) const {
    if (K_ <= kMaxChainK && row_stride == K_) return chains(to_cols_, rows, 16, cols, ld);
    transpose_to_columns(rows, row_stride, K_, cols, ld);
  }

  // The chains' permute indices for one K, copied out of the object so that a kernel's loop can keep
  // them in registers (a store through the output's float* could otherwise alias the members).
  template <int K>
  struct Fixed {
    __m512i to_rows[K][K], to_cols[K][K];
  };
  template <int K>
  Fixed<K> fixed() const {
    static_assert(K <= kMaxChainK);
    Fixed<K> f;
    for (int o = 0; o < K; ++o)
      for (int s = 1; s < K; ++s) f.to_rows[o][s] = to_rows_[o][s], f.to_cols[o][s] = to_cols_[o][s];  // step 0 is unused
    return f;
  }
  // v[k] (column k of 16 points, in registers) -> 16 rows of K at `rows`, float or a half type (two
  // row vectors convert into one storage vector).
  template <int K, typename scalar_t>
  static C10_ALWAYS_INLINE void store_rows(const Fixed<K>& f, const __m512 (&v)[K], scalar_t* rows) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      for (int o = 0; o < K; ++o) _mm512_storeu_ps(rows + o * 16, permute_chain<K>(f.to_rows[o], v));
    } else {
      for (int o = 0; o < K; o += 2) {
        const __m512 a = permute_chain<K>(f.to_rows[o], v);
        const __m512 b = o + 1 < K ? permute_chain<K>(f.to_rows[o + 1], v) : a;
        from_float<scalar_t>(Vectorized<float>(a), Vectorized<float>(b)).store(rows + o * 16, o + 1 < K ? 32 : 16);
      }
    }
  }
  // The inverse: 16 contiguous rows of K at `rows` -> v[k], column k.
  template <int K>
  static C10_ALWAYS_INLINE void load_columns(const Fixed<K>& f, const float* rows, __m512 (&v)[K]) {
    __m512 r[K];
    for (int q = 0; q < K; ++q) r[q] = _mm512_loadu_ps(rows + q * 16);
    for (int k = 0; k < K; ++k) v[k] = permute_chain<K>(f.to_cols[k], r);
  }

 private:
  using Chain = __m512i[kMaxChainK][kMaxChainK];

  // chain[o][s], s = 1..K-1: step s of output vector o's chain. Output lane i wants lane `lane` of
  // input vector `src` (from(o, i)); step s keeps the lanes already gathered (src < s, index i; step
  // 1 takes input 0 directly) and brings in input s's (16 + lane). No masks needed.
  template <typename From>
  void build_chain(Chain& chain, From from) const {
    for (int o = 0; o < K_; ++o) {
      for (int s = 1; s < K_; ++s) {
        alignas(64) int32_t j[16];
        for (int i = 0; i < 16; ++i) {
          const auto [src, lane] = from(o, i);
          j[i] = src == s ? 16 + lane : src < s ? (s == 1 ? lane : i) : 0;
        }
        chain[o][s] = _mm512_load_si512(j);
      }
    }
  }

  void chains(const Chain& chain, const float* in, int64_t in_stride, float* out, int64_t out_stride) const {
    switch (K_) {  // a fixed K unrolls the chains
      case 1: return chains<1>(chain, in, in_stride, out, out_stride);
      case 2: return chains<2>(chain, in, in_stride, out, out_stride);
      case 3: return chains<3>(chain, in, in_stride, out, out_stride);
      case 4: return chains<4>(chain, in, in_stride, out, out_stride);
      case 5: return chains<5>(chain, in, in_stride, out, out_stride);
      case 6: return chains<6>(chain, in, in_stride, out, out_stride);
      case 7: return chains<7>(chain, in, in_stride, out, out_stride);
      case 8: return chains<8>(chain, in, in_stride, out, out_stride);
      default: return chains<9>(chain, in, in_stride, out, out_stride);
    }
  }

  template <int K>
  static void chains(const Chain& chain, const float* in, int64_t in_stride, float* out, int64_t out_stride) {
    static_assert(K <= kMaxChainK);
    __m512 v[K];
    for (int s = 0; s < K; ++s) v[s] = _mm512_loadu_ps(in + s * in_stride);
    for (int o = 0; o < K; ++o) _mm512_storeu_ps(out + o * out_stride, permute_chain<K>(chain[o], v));
  }

  // One output vector: its chain of K - 1 two-source permutes over the K inputs.
  template <int K>
  static C10_ALWAYS_INLINE __m512 permute_chain(const __m512i* steps, const __m512 (&v)[K]) {
    if constexpr (K == 1) return v[0];  // the one vector is both sides
    __m512 r = _mm512_permutex2var_ps(v[0], steps[1], v[1]);
    for (int s = 2; s < K; ++s) r = _mm512_permutex2var_ps(r, steps[s], v[s]);
    return r;
  }

  int K_;
  Chain to_rows_, to_cols_;
};
#endif

#if defined(CPU_CAPABILITY_AVX512)
// features computed in float32 (float32 and half types), K <= 9: each 16 points' K columns stay in
// registers and go straight through the permute chains to the output rows (no tile round trip; for
// bfloat16 at 1e5 points, D = 4, 2 threads: 63-69 -> 45-46 us). Runs the task's full blocks of L
// points from blk on and returns the first block left (a partial last one).
template <Basis B, int K, typename scalar_t>
int64_t features_blocks_in_registers(const scalar_t* x, int64_t sx, int64_t M, scalar_t* out, int64_t blk,
                                     int64_t blk_end, const Window<float>& w, bool increasing,
                                     const Interleave16& il, FreshPages& pages) {
  constexpr int L = Pack<float>::kLanes;
  const auto chains = il.fixed<K>();
  for (; blk < blk_end && (blk + 1) * L <= M; ++blk) {
    scalar_t* o = out + blk * L * K;
    pages.reach(o + L * K);
    const Pack<float> t = map_to_window(load_lanes<float>(x + blk * L * sx, sx, L, 0.f), w);
    for (int u = 0; u < kU; ++u) {
      __m512 v[K];
      basis_values<B, float>(t.v[u], Vectorized<float>(1.f), K, [&](int k, const Vectorized<float>& p) { v[k] = p; });
      if (!increasing)
        for (int k = 0; k < K / 2; ++k) std::swap(v[k], v[K - 1 - k]);
      Interleave16::store_rows<K>(chains, v, o + u * 16 * K);
    }
  }
  return blk;
}
#endif

template <typename scalar_t>
void features_kernel(const Tensor& x, Tensor& out, Basis basis, const Domain& dom, bool increasing) {
  using T = at::opmath_type<scalar_t>;
  constexpr int L = Pack<T>::kLanes;
  const int64_t M = x.size(0), sx = x.stride(0);
  const int K = static_cast<int>(out.size(1));
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  const Window<T> w = dom.window<T>();
  const T fill = neutral_x<T>(dom);

  POLYFIT_DISPATCH_BASIS(basis, [&] {
    // An output element, interleaved into rows and stored, costs about 8 of a series' FMAs (Zen 4,
    // 2 threads: D = 16 at 10^4 points took 20 us split, 32 us on one thread when counted as 1).
    // K and increasing by copy: by reference, the tile's stores could alias them, and they were
    // reloaded for every column (float64 D = 8 at 1e5 points: 247-264 -> 231-236 us).
    at::parallel_for(0, ceil_div(M, L), grain(int64_t(L) * K * 8), [&, K, increasing](int64_t b0, int64_t b1) {
      // Column k of L points lands in row k of the tile (row K-1-k for decreasing order); the
      // output wants L rows of K: Interleave16 on AVX-512 (float lanes; half types then convert
      // the rows in registers), 8 x 8 transposes for doubles, else a scalar copy, which measured faster than at::vec's
      // masked-store transpose or gathers on AMD Zen 4. float32 blocks of up to 9 columns skip the
      // tile (features_blocks_in_registers); the loop below takes what they leave.
      std::vector<T> tile(size_t(K) * L);
#if defined(CPU_CAPABILITY_AVX512)
      constexpr bool kHalf = kHalfInFloat<T, scalar_t>;
      std::optional<Interleave16> interleave;
      std::vector<float> rows(kHalf ? size_t(K) * L : 0);  // half types: float rows, then converted
      std::vector<T> stage(std::is_same_v<scalar_t, double> ? size_t(K) * L : 0);
      if (std::is_same_v<T, float>) interleave.emplace(K);
#endif
      FreshPages pages(op + b0 * L * K, op + std::min(b1 * L, M) * K);
      const Reciprocals<T> inv(K);
      int64_t blk = b0;
#if defined(CPU_CAPABILITY_AVX512)
      if constexpr (std::is_same_v<T, float>) {
        with_width(K, [&](auto k) {
          if constexpr (k <= Interleave16::kMaxChainK)
            blk = features_blocks_in_registers<kBasis, k>(xp, sx, M, op, blk, b1, w, increasing, *interleave, pages);
        });
      }
#endif
      for (; blk < b1; ++blk) {
        const int64_t i0 = blk * L;
        const int n = static_cast<int>(std::min<int64_t>(L, M - i0));
        pages.reach(op + (i0 + n) * K);
        const Pack<T> t = map_to_window(load_lanes<T>(xp + i0 * sx, sx, n, fill), w);
        basis_values<kBasis, T>(t, Pack<T>(T(1)), K, [&](int k, const Pack<T>& p) {
          p.store(tile.data() + size_t(increasing ? k : K - 1 - k) * L);
        }, inv.lookup());
        scalar_t* o = op + i0 * K;
        // Pages FreshPages leaves unmapped (tasks under its 4 MB, partial pages) fault on first touch;
        // a fault taken by an AVX-512 masked store measured ~100 ns dearer than by a plain store
        // (Zen 4, 36 MB output: 17.5 -> 16.4 ms on one thread), so a plain byte store touches the
        // block's end first (the interleave then overwrites it).
        *reinterpret_cast<volatile char*>(o + int64_t(n) * K - 1) = 0;
#if defined(CPU_CAPABILITY_AVX512)
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (n == L) {  // straight into the output (through the stage, D = 16 at 1e5 points: 155 -> 229 us)
            for (int g = 0; g < L; g += 16) (*interleave)(tile.data() + g, L, o + int64_t(g) * K);
            continue;
          }
        } else if constexpr (std::is_same_v<scalar_t, double>) {
          if (n == L) {
            // Rows of K doubles go to an L1 stage, then out as whole vectors on whole cache lines (a
            // block of L points starts on a line). Zen 4, one thread, 1e5 points, D = 32: 3.4-3.8 ms
            // with a scalar copy, 2.7-3.2 with the transposes' rows stored straight into the output
            // (a store covering a line in part), 2.0-2.3 through the stage.
            for (int g = 0; g < L; g += Zmm<double>::W)
              transpose_to_rows(tile.data() + g, L, K, stage.data() + g * K, /*rows_in_l1=*/true);
            for (int e = 0; e < L * K; e += Zmm<double>::W) Zmm<double>::store(o + e, Zmm<double>::load(stage.data() + e));
            continue;
          }
        } else if constexpr (kHalf) {
          if (n == L) {  // L rows of K floats (K > 9 here), then stored as K packs, converted
            for (int g = 0; g < L; g += 16) transpose_to_rows(tile.data() + g, L, K, rows.data() + g * K, /*rows_in_l1=*/true);
            for (int e = 0; e < L * K; e += L) store_lanes(Pack<T>::load(rows.data() + e), o + e, L);
            continue;
          }
        }
#endif
        for (int j = 0; j < n; ++j)
          for (int k = 0; k < K; ++k) o[int64_t(j) * K + k] = scalar_t(tile[size_t(k) * L + j]);
      }
    });
  });
}

void features_cpu(const Tensor& x, Tensor& out, Basis basis, const Domain& dom, bool increasing) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "polyfit_features", [&] {
    features_kernel<scalar_t>(x, out, basis, dom, increasing);
  });
}

// ---- series: evaluation (forward) and its backward ----------------------------------------------

template <typename scalar_t>
struct SeriesView {
  using T = at::opmath_type<scalar_t>;
  const scalar_t* x;
  int64_t sxr, sxn;
  const scalar_t* c;
  int64_t scr, sck;
  int64_t R, N;
  int K;

  SeriesView(const Tensor& xt, const Tensor& ct)
      : x(xt.const_data_ptr<scalar_t>()), sxr(xt.stride(0)), sxn(xt.stride(1)),
        c(ct.const_data_ptr<scalar_t>()), scr(ct.stride(0)), sck(ct.stride(1)),
        R(xt.size(0)), N(xt.size(1)), K(static_cast<int>(ct.size(1))) {}

  void load_row_coeffs(int64_t r, T* dst) const {
    const scalar_t* p = c + r * scr;
    for (int k = 0; k < K; ++k) dst[k] = T(p[k * sck]);
  }
};

#if defined(CPU_CAPABILITY_AVX512)
// Rows of one point each (features' backward), float32, K <= 9 contiguous coefficients, derivative
// order Order <= 1: each 16 rows' coefficients go through the inverse interleave into registers,
// where the derivative and the series run (no tile round trip). Runs full blocks of L rows from blk
// on and returns the first block left.
template <Basis B, int K, int Order>
int64_t one_point_rows_in_registers(const float* x, int64_t sx, const float* c, int64_t M, float* out, int64_t blk,
                                    int64_t blk_end, const Window<float>& w, float scale_pow, const Interleave16& il) {
  using V = Vectorized<float>;
  constexpr int L = Pack<float>::kLanes;
  const auto chains = il.fixed<K>();
  for (; blk < blk_end && (blk + 1) * L <= M; ++blk) {
    const int64_t e0 = blk * L;
    const Pack<float> t = map_to_window(load_lanes<float>(x + e0 * sx, sx, L, 0.f), w);
    for (int u = 0; u < kU; ++u) {
      __m512 r[K];
      Interleave16::load_columns<K>(chains, c + (e0 + u * 16) * K, r);
      V cv[K];
      for (int k = 0; k < K; ++k) cv[k] = r[k];
      if constexpr (Order == 0) {
        series<B, float>([&](int k) { return cv[k]; }, K, t.v[u]).store(out + e0 + u * 16);
      } else {
        V d[K - 1];
        derivative<B, float>(cv, K, d);
        for (int k = 0; k < K - 1; ++k) d[k] = V(scale_pow) * d[k];
        series<B, float>([&](int k) { return d[k]; }, K - 1, t.v[u]).store(out + e0 + u * 16);
      }
    }
  }
  return blk;
}
#endif

// out[r, n] = weight[r, n] * s^order * series_order(coeffs[r], t(x[r, n])); weight optional.
// Rows at least one pack long are walked row by row with broadcast coefficients; shorter rows
// are packed across rows, each lane with its own coefficients (e.g. features' backward, N = 1).
template <Basis B, typename scalar_t>
void eval_series(const SeriesView<scalar_t>& s, int order, const scalar_t* wp, int64_t swr, int64_t swn,
                 scalar_t* out, const Domain& dom) {
  using T = at::opmath_type<scalar_t>;
  using P = Pack<T>;
  constexpr int L = P::kLanes;
  const int K = s.K, Ke = K - order;
  const Window<T> w = dom.window<T>();
  const T scale_pow = T(std::pow(dom.scale, order));
  const T fill = neutral_x<T>(dom);

  if (s.N >= L || s.R == 1) {
    const int64_t blocks_per_row = ceil_div(s.N, L);
    // Full packs of contiguous float/double rows take a lean loop: plain vector loads and stores.
    const bool direct = std::is_same_v<scalar_t, T> && s.sxn == 1 && wp == nullptr;
    at::parallel_for(0, s.R * blocks_per_row, grain(int64_t(L) * K), [&](int64_t b0, int64_t b1) {
      c10::SmallVector<T, 64> work(2 * size_t(K));  // on the stack up to degree 31
      RowSeries<B, T> sum(K);
      const scalar_t* coef_row = nullptr;  // the row `sum` was set for
      const auto out_at = [&](int64_t blk) {  // output of block blk's first point (rows are contiguous)
        const int64_t r = blk / blocks_per_row;
        return out + r * s.N + std::min(s.N, (blk - r * blocks_per_row) * L);
      };
      FreshPages pages(out_at(b0), out_at(b1));
      for (int64_t b = b0; b < b1;) {  // one row's run of blocks at a time
        const int64_t r = b / blocks_per_row;
        const int64_t b_end = std::min(b1, (r + 1) * blocks_per_row);
        if (s.c + r * s.scr != coef_row) {  // rows broadcast with stride 0 are derived once
          coef_row = s.c + r * s.scr;
          s.load_row_coeffs(r, work.data());
          const T* coef = derived_coeffs<B, T>(work.data(), K, order, scale_pow);
          sum.set(coef, coef == work.data() ? work.data() + K : work.data(), Ke);  // the other half spare
        }
        const scalar_t* xr = s.x + r * s.sxr;
        scalar_t* yr = out + r * s.N;
        int64_t n0 = (b - r * blocks_per_row) * L;
        const int64_t n1 = std::min(s.N, (b_end - r * blocks_per_row) * L);
        if (direct) {
          for (; n0 + L <= n1; n0 += L) {
            pages.reach(yr + n0 + L);
            const P t = map_to_window(P::load(reinterpret_cast<const T*>(xr) + n0), w);
            sum(t).store(reinterpret_cast<T*>(yr) + n0);
          }
        }
        for (; n0 < n1; n0 += L) {
          const int n = static_cast<int>(std::min<int64_t>(L, n1 - n0));
          pages.reach(yr + n0 + n);
          const P t = map_to_window(load_points<T>(xr + n0 * s.sxn, s.sxn, n, fill), w);
          P y = sum(t);
          if (wp) y = y * load_points<T>(wp + r * swr + n0 * swn, swn, n, T(0));
          store_points(y, yr + n0, n);
        }
        b = b_end;
      }
    });
    return;
  }

  const int64_t M = s.R * s.N;
  at::parallel_for(0, ceil_div(M, L), grain(int64_t(L) * K * (order + 2)), [&](int64_t b0, int64_t b1) {
    std::vector<T> tile(size_t(K) * L);
    std::vector<P> work(2 * size_t(K));
    const Reciprocals<T> inv(K);
    alignas(64) T xs[L], ws[L];
#if defined(CPU_CAPABILITY_AVX512)
    std::optional<Interleave16> columns;  // one-point float rows: the features kernel's interleave, inverted
    if (std::is_same_v<T, float> && s.N == 1) columns.emplace(K);
    std::vector<float> rows(kHalfInFloat<T, scalar_t> && s.N == 1 ? size_t(K) * L : 0);  // half rows in float
#endif
    int64_t blk = b0;
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (columns && s.sck == 1 && s.scr == K && !wp && order <= 1) {
        with_width(K, [&](auto k) {
          if (order == 0)
            blk = one_point_rows_in_registers<B, k, 0>(s.x, s.sxr, s.c, M, out, blk, b1, w, scale_pow, *columns);
          else if constexpr (k > 1)
            blk = one_point_rows_in_registers<B, k, 1>(s.x, s.sxr, s.c, M, out, blk, b1, w, scale_pow, *columns);
        });
      }
    }
#endif
    for (; blk < b1; ++blk) {
      const int64_t e0 = blk * L;
      const int n = static_cast<int>(std::min<int64_t>(L, M - e0));
      if (s.N == 1) {  // one point per row (features' backward): lane j is row e0 + j
        for (int j = 0; j < n; ++j) xs[j] = T(s.x[(e0 + j) * s.sxr]);
        if (wp)
          for (int j = 0; j < n; ++j) ws[j] = T(wp[(e0 + j) * swr]);
        const scalar_t* cb = s.c + e0 * s.scr;
        bool gathered = false;
#if defined(CPU_CAPABILITY_AVX512)
        // The transposes read W rows a vector per row at a time, which leaves the hardware
        // prefetcher behind: with each W rows, the same rows of the block after next are asked for
        // (float64, D = 32, 1e5 rows, one thread: 39-57 -> 21-25 ns a row; all of a block's rows
        // at once: 30-35).
        const bool ahead = s.sck == 1 && e0 + 3 * L <= M;
        const auto prefetch_rows = [&](int g, int rows) {
          if (ahead) prefetch_bytes(cb + (2 * L + g) * s.scr, int64_t(rows) * s.scr * sizeof(scalar_t));
        };
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (columns && n == L && s.sck == 1) {
            for (int g = 0; g < L; g += 16) {
              prefetch_rows(g, 16);
              columns->columns(cb + g * s.scr, s.scr, tile.data() + g, L);
            }
            gathered = true;
          }
        } else if constexpr (std::is_same_v<scalar_t, double>) {
          // 8 x 8 transposes; a scalar gather before (features fwd+bwd, 1e5 points, D = 4, 2 threads:
          // 404-435 -> 300 us; bfloat16 through the float rows below: 310 -> 166 us)
          if (n == L && s.sck == 1) {
            for (int g = 0; g < L; g += Zmm<double>::W) {
              prefetch_rows(g, Zmm<double>::W);
              transpose_to_columns(cb + g * s.scr, s.scr, K, tile.data() + g, L);
            }
            gathered = true;
          }
        } else if constexpr (kHalfInFloat<T, scalar_t>) {
          if (columns && n == L && s.sck == 1 && s.scr == K) {  // the block's rows are contiguous
            for (int e = 0; e < L * K; e += Pack<T>::kLanes) load_lanes<T>(cb + e, 1, Pack<T>::kLanes, T(0)).store(rows.data() + e);
            for (int g = 0; g < L; g += 16) columns->columns(rows.data() + g * K, K, tile.data() + g, L);
            gathered = true;
          }
        }
#endif
        for (int j = 0; j < n && !gathered; ++j) {
          const scalar_t* cp = cb + j * s.scr;
          for (int k = 0; k < K; ++k) tile[size_t(k) * L + j] = T(cp[k * s.sck]);
        }
      } else {
        int64_t r = e0 / s.N, i = e0 % s.N;
        for (int j = 0; j < n; ++j) {
          xs[j] = T(s.x[r * s.sxr + i * s.sxn]);
          if (wp) ws[j] = T(wp[r * swr + i * swn]);
          const scalar_t* cp = s.c + r * s.scr;
          for (int k = 0; k < K; ++k) tile[size_t(k) * L + j] = T(cp[k * s.sck]);
          if (++i == s.N) i = 0, ++r;
        }
      }
      for (int j = n; j < L; ++j) {
        xs[j] = fill;
        ws[j] = T(0);
        for (int k = 0; k < K; ++k) tile[size_t(k) * L + j] = T(0);
      }
      for (int k = 0; k < K; ++k) work[k] = P::load(tile.data() + size_t(k) * L);
      const P* coef = derived_coeffs<B, T>(work.data(), K, order, scale_pow);
      const P t = map_to_window(P::load(xs), w);
      P y = series<B, T>([&](int k) { return coef[k]; }, Ke, t, inv.lookup());
      if (wp) y = y * P::load(ws);
      store_lanes(y, out + e0, n);
    }
  });
}

void series_cpu(const Tensor& x, const Tensor& coeffs, Tensor& y, Basis basis, const Domain& dom,
                int64_t derivative) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "polyfit_polyval", [&] {
    const SeriesView<scalar_t> s(x, coeffs);
    POLYFIT_DISPATCH_BASIS(basis, [&] {
      eval_series<kBasis, scalar_t>(s, static_cast<int>(derivative), nullptr, 0, 0,
                                    y.mutable_data_ptr<scalar_t>(), dom);
    });
  });
}

// Power-basis moments g t^k fall below FLT_MIN where |t| is small (x in [0, 1) at degree 16:
// |x| < 0.0042), and on Intel cores a multiply whose input or result is subnormal takes a microcode
// assist (4.5-40 ns on the Xeon here); an FMA whose result is normal, or an add, takes none. A pack
// whose chains could go there runs them on g 2^s instead of g, lane by lane, and each lane's moment
// sums are scaled back by 2^-s inside the accumulating FMA. A power of two commutes with rounding in
// the normal range, so wherever the plain chains stay normal the result is the same to the bit, and
// where they would not it is more accurate. With e = floor(log2 |.|) over the pack's points in each
// lane, |g t^j| >= 2^lo for j < terms, lo = e_g + (terms - 1) min(e_t, 0); s lifts 2^lo to
// 2^(kLiftMargin - 126), the margin keeping a cancelling fold sum normal.
// The branch on whether a pack needs s is mispredicted wherever some packs do and others not (x in
// [0, 1) at degree 16: 42% of them, at random), and the need is a long chain of dependent steps
// after the pack's loads; so once a chunk has lifted, the next computes each pack's need while the
// pack before runs. Lifts are unbounded above (to 2^100: t = 0 gives lo = -inf); a lane spanning
// over ~2^240 can overflow, and a chunk that lifted and ends with a non-finite sum is redone
// Bounded, with lifts that keep every term under 2^124.
// Power D = 16 backward op, N = 1e6 float32, Xeon, moments only / with grad_x: x in [0, 1) 347-351
// us unscaled, 227-251 / 313-356 with the need tested on the spot only, 206-214 / 300-315 now; x in
// [0.5, 1), where nothing is lifted, 174-179 unscaled, 181-195 / 264-287 either way. AVX-512 only.
#if defined(CPU_CAPABILITY_AVX512)
template <Basis B, typename T>
constexpr bool kScaleSubnormalChains = B == Basis::Power && std::is_same_v<T, float>;
constexpr float kLiftMargin = 8.f, kMaxLift = 100.f;  // unbounded lifts stop at 2^100: zeros in t give lo = -inf

constexpr int kAbsMin = 0x0A, kAbsMax = 0x0B;  // vrangeps: the smaller / larger magnitude, sign cleared

// Lane by lane, the smallest (kAbsMin) or largest (kAbsMax) magnitude over a pack's vectors: a tree,
// 3 dependent steps for 8.
template <int Op, int U>
C10_ALWAYS_INLINE __m512 lane_bound(const Pack<float, U>& p) {
  Pack<float, U> r = p;
  for (int n = U / 2; n > 0; n /= 2)
    for (int u = 0; u < n; ++u) r.v[u] = _mm512_range_ps(r.v[u], r.v[u + n], Op);
  return r.v[0];
}

// How far each lane of a pack's chains g t^j, j < terms, must be lifted: kLiftMargin - 126 - lo,
// positive where a term could fall under 2^(kLiftMargin - 126).
template <int U>
C10_ALWAYS_INLINE __m512 chain_lift_need(const Pack<float, U>& t, const Pack<float, U>& g, int terms) {
  const __m512 n = _mm512_set1_ps(float(terms - 1));
  const __m512 lo = _mm512_fmadd_ps(_mm512_min_ps(_mm512_getexp_ps(lane_bound<kAbsMin>(t)), _mm512_setzero_ps()), n,
                                    _mm512_getexp_ps(lane_bound<kAbsMin>(g)));
  return _mm512_sub_ps(_mm512_set1_ps(kLiftMargin - 126.f), lo);
}

// The lane-wise scale exponents s (0 <= s <= 126) for that need.
template <bool Bounded, int U>
C10_ALWAYS_INLINE __m512 chain_lift(__m512 need, const Pack<float, U>& t, const Pack<float, U>& g, int terms) {
  // vminps / vmaxps return their second operand when one is NaN: a NaN bound ends as s = 0.
  __m512 s = _mm512_min_ps(_mm512_set1_ps(Bounded ? 126.f : kMaxLift), need);
  if constexpr (Bounded) {  // and every term below 2^124, so that a fold of 8 stays finite
    const __m512 one = _mm512_set1_ps(1.f);
    const __m512 hi = _mm512_add_ps(
        _mm512_fmadd_ps(_mm512_max_ps(_mm512_add_ps(_mm512_getexp_ps(lane_bound<kAbsMax>(t)), one), _mm512_setzero_ps()),
                        _mm512_set1_ps(float(terms)), _mm512_getexp_ps(lane_bound<kAbsMax>(g))),
        one);
    s = _mm512_min_ps(_mm512_sub_ps(_mm512_set1_ps(124.f), hi), s);
  }
  return _mm512_max_ps(s, _mm512_setzero_ps());
}
#endif

// A pack's moment partials sum_u g P_k(t), lane by lane, for k < Km, each to sink(k, partial).
// Power basis, Paired: the even powers run the chain q <- q t^2 and each odd one is an FMA chain
// sum_u q_u t_u off the even power below it, 1.5 vector ops a moment instead of a multiply and an
// add each. t^2 can overflow (|t| >= 2^64) where (q t) t stays finite: a chunk whose sums end
// non-finite is redone the plain way.
template <Basis B, typename T, bool Paired, typename Sink, typename Inv>
C10_ALWAYS_INLINE void moment_partials(const Pack<T>& t, const Pack<T>& g, int Km, Sink&& sink, Inv inv) {
  if constexpr (B == Basis::Power && Paired) {
    Pack<T> q = g;
    const Pack<T> t2 = t * t;
    for (int k = 0; k < Km; k += 2) {
      sink(k, fold(q));
      if (k + 1 < Km) {
        Vectorized<T> odd = q.v[0] * t.v[0];
        for (int u = 1; u < kU; ++u) odd = at::vec::fmadd(q.v[u], t.v[u], odd);
        sink(k + 1, odd);
      }
      if (k + 2 < Km) q = q * t2;
    }
  } else {
    basis_values<B, T>(t, g, Km, [&](int k, const Pack<T>& q) { sink(k, fold(q)); }, inv);
  }
}

// Backward in one pass over (x, grad), row by row:
//   grad_x[r, n] = grad * s^(nu+1) series_(nu+1)(coeffs[r], t)           (when gx is given)
//   grad_c[r, :] = s^nu (D^T)^nu m_r,  m_r[k] = sum_n grad[r, n] P_k(t)   (when gc is given)
// Each row is cut into fixed chunks whose partial moments are summed in a fixed order, so the
// result does not depend on the number of threads.
template <Basis B, typename scalar_t>
void backward_rows(const SeriesView<scalar_t>& s, int order, const scalar_t* gp, int64_t sgr, int64_t sgn,
                   scalar_t* gx, scalar_t* gc, const Domain& dom) {
  using T = at::opmath_type<scalar_t>;
  using P = Pack<T>;
  constexpr int L = P::kLanes;
  constexpr int64_t kChunk = 64 * L;
  const int K = s.K, Km = K - order;  // moments needed: P_0 .. P_{K-order-1}
  const Window<T> w = dom.window<T>();
  const T fill = neutral_x<T>(dom);
  const T scale_pow_x = T(std::pow(dom.scale, order + 1));
  const int64_t chunks = std::max<int64_t>(1, ceil_div(s.N, kChunk));
  std::vector<double> partial(gc ? size_t(s.R * chunks) * Km : 0);

  const int64_t work = std::min(s.N, kChunk) * ((gx ? 2 * K : 0) + (gc ? 2 * Km : 0));
  const bool direct = std::is_same_v<scalar_t, T> && s.sxn == 1 && sgn == 1;
  at::parallel_for(0, s.R * chunks, grain(work), [&](int64_t t0, int64_t t1) {
    // One vector of lane partials per moment: the U vectors of a pack are folded on the way in,
    // keeping the per-moment load/store traffic to one vector per pack. The basis recurrence
    // starts from grad, so it yields grad * P_k directly.
    std::vector<Vectorized<T>> acc(gc ? Km : 0);  // aligned new (a SmallVector grows by malloc: 16-byte aligned)
    RowSeries<B, T> dseries(K);  // grad_x's derivative series
    const auto inv = dseries.inv();
    c10::SmallVector<T, 66> cwork(2 * size_t(K));
    const T* coef = nullptr;
    const scalar_t* coef_row = nullptr;
    const auto gx_at = [&](int64_t task) {  // grad_x of the task's first point (rows are contiguous)
      return gx + (task / chunks) * s.N + std::min(s.N, (task % chunks) * kChunk);
    };
    std::optional<FreshPages> pages;
    if (gx) pages.emplace(gx_at(t0), gx_at(t1));
    // Whether the last chunk lifted any chain: if so, the next computes each pack's need a pack ahead.
    // Needs and lifts are the same either way (a function of each pack): the result does not depend on it.
    bool lift_ahead = false;
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t r = task / chunks, c0 = (task % chunks) * kChunk;
      const int64_t c1 = std::min(s.N, c0 + kChunk);
      if (pages) pages->reach(gx + r * s.N + c1);
      if (gx && s.c + r * s.scr != coef_row) {
        coef_row = s.c + r * s.scr;
        s.load_row_coeffs(r, cwork.data());
        coef = derived_coeffs<B, T>(cwork.data(), K, order + 1, scale_pow_x);
        dseries.set(coef, coef == cwork.data() ? cwork.data() + K : cwork.data(), K - order - 1);
      }
      const scalar_t* xr = s.x + r * s.sxr;
      const scalar_t* gr = gp + r * sgr;
      scalar_t* gxr = gx ? gx + r * s.N : nullptr;
      // Careful, the redo of a chunk whose sums ended non-finite: the plain chains (no t^2), with
      // lifts that also bound the largest terms.
      const auto run_chunk = [&](auto careful_tag) {
        constexpr bool kCareful = decltype(careful_tag)::value;
#if defined(CPU_CAPABILITY_AVX512)
        constexpr bool kLift = kScaleSubnormalChains<B, T>;
        __m512 lifted = _mm512_setzero_ps();  // the largest lift of the chunk, lane by lane
        const auto need_of = [&](const P& t, const P& g) {
          if constexpr (kLift) return chain_lift_need(t, g, Km);
          else return _mm512_setzero_ps();
        };
#else
        constexpr bool kLift = false;
        const auto need_of = [](const P&, const P&) { return 0; };
#endif
        using Need = decltype(need_of(P(), P()));
        // need: the pack's chain_lift_need (unused unless kLift)
        const auto body = [&](const P& t, const P& g, int64_t n0, int n, auto need) {
          if constexpr (B != Basis::Power) {
            // Both gradients: grad_x = sum_j coef[j] g P_j(t) off the moments' own recurrence, one
            // FMA a term where Clenshaw takes two to four (the power basis's Horner already takes one).
            // Backward op, N = 1e6 float32, 2-core Xeon: Legendre D = 8 439-465 -> 307-322 us, Hermite
            // D = 16 584 -> 391-401 us, Chebyshev D = 16 403-407 -> 342-348 us (D = 8: memory-bound, 3%).
            if (gx && gc && Km >= 2) {
              P dx(T(0));
              basis_values<B, T>(t, g, Km, [&](int k, const P& q) {
                acc[k] = acc[k] + fold(q);
                if (k + 1 < Km) dx = fmadd(P(coef[k]), q, dx);
              }, inv);
              store_points(dx, gxr + n0, n);
              return;
            }
          }
          if (gx) store_points(g * dseries(t), gxr + n0, n);
          if (!gc) return;
#if defined(CPU_CAPABILITY_AVX512)
          // after a chunk that lifted, need was computed a pack ahead: a mispredicted branch waits for nothing
          if constexpr (kLift) if (_mm512_cmp_ps_mask(need, _mm512_setzero_ps(), _CMP_GT_OQ)) {
            const __m512 lift = chain_lift<kCareful>(need, t, g, Km);
            lifted = _mm512_max_ps(lifted, lift);
            const __m512 up = _mm512_scalef_ps(_mm512_set1_ps(1.f), lift);
            const __m512 back = _mm512_scalef_ps(_mm512_set1_ps(1.f), _mm512_sub_ps(_mm512_setzero_ps(), lift));
            P gs;
            for (int u = 0; u < kU; ++u) gs.v[u] = _mm512_mul_ps(g.v[u], up);
            moment_partials<B, T, !kCareful>(t, gs, Km, [&](int k, const Vectorized<T>& m) {
              acc[k] = Vectorized<T>(_mm512_fmadd_ps(m, back, acc[k]));
            }, inv);
            return;
          }
#endif
          moment_partials<B, T, !kCareful>(t, g, Km, [&](int k, const Vectorized<T>& m) { acc[k] = acc[k] + m; },
                                           inv);
        };
        if (gc) std::fill(acc.begin(), acc.end(), Vectorized<T>(T(0)));
        int64_t n0 = c0;
        if (direct) {  // full packs of contiguous float/double rows: plain vector loads
          const T* xd = reinterpret_cast<const T*>(xr);
          const T* gd = reinterpret_cast<const T*>(gr);
          const auto t_at = [&](int64_t m) { return map_to_window(P::load(xd + m), w); };
          const auto g_at = [&](int64_t m) { return P::load(gd + m); };
          // Where the last chunk lifted, each pack's need is computed while the one before runs.
          const bool ahead = kLift && gc && lift_ahead;
          Need need{};
          if (ahead && n0 + L <= c1) need = need_of(t_at(n0), g_at(n0));
          for (; n0 + L <= c1; n0 += L) {
            const P t = t_at(n0), g = g_at(n0);
            if (kLift && gc && !ahead) need = need_of(t, g);  // on the spot: the branch predicts no lift
            const Need next = ahead && n0 + 2 * L <= c1 ? need_of(t_at(n0 + L), g_at(n0 + L)) : need;
            body(t, g, n0, L, need);
            need = next;
          }
        }
        for (; n0 < c1; n0 += L) {
          const int n = static_cast<int>(std::min<int64_t>(L, c1 - n0));
          const P t = map_to_window(load_points<T>(xr + n0 * s.sxn, s.sxn, n, fill), w);
          const P g = load_points<T>(gr + n0 * sgn, sgn, n, T(0));
          body(t, g, n0, n, kLift && gc ? need_of(t, g) : Need{});
        }
#if defined(CPU_CAPABILITY_AVX512)
        if constexpr (kLift) lift_ahead = _mm512_cmp_ps_mask(lifted, _mm512_setzero_ps(), _CMP_GT_OQ);
#endif
        // true: a sum is non-finite, where a lifted chain or t^2 may have overflowed
        if (B != Basis::Power || !gc || kCareful) return false;
        for (int k = 0; k < Km; ++k) {
          const Vectorized<T> d = acc[k] - acc[k];  // NaN in the lanes of an infinite or NaN sum
          if ((d == d).zero_mask()) return true;
        }
        return false;
      };
      if (run_chunk(std::false_type{})) run_chunk(std::true_type{});
      if (gc) {
        double* dst = partial.data() + size_t(task) * Km;
        for (int k = 0; k < Km; ++k) dst[k] = double(lane_sum(acc[k]));
      }
    }
  });
  if (!gc) return;

  const double scale_pow = std::pow(dom.scale, order);
  at::parallel_for(0, s.R, grain(int64_t(K) * (chunks + order)), [&](int64_t r0, int64_t r1) {
    std::vector<double> work(2 * size_t(K));
    for (int64_t r = r0; r < r1; ++r) {
      double* m = work.data();
      double* h = work.data() + K;
      for (int k = 0; k < Km; ++k) {
        double v = 0;
        for (int64_t ch = 0; ch < chunks; ++ch) v += partial[size_t(r * chunks + ch) * Km + k];
        m[k] = v;
      }
      for (int o = order; o > 0; --o) {  // back through each derivative: Km .. K coefficients
        derivative_transpose<B, double>(m, K - o + 1, h);
        std::swap(m, h);
      }
      for (int k = 0; k < K; ++k) gc[r * K + k] = scalar_t(scale_pow * m[k]);
    }
  });
}

void series_backward_cpu(const Tensor& grad, const Tensor& x, const Tensor& coeffs, Tensor& grad_x,
                         Tensor& grad_coeffs, Basis basis, const Domain& dom, int64_t derivative) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "polyfit_polyval_backward", [&] {
    const SeriesView<scalar_t> s(x, coeffs);
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const int64_t sgr = grad.stride(0), sgn = grad.stride(1);
    const int order = static_cast<int>(derivative);
    scalar_t* gx = grad_x.defined() ? grad_x.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gc = grad_coeffs.defined() ? grad_coeffs.mutable_data_ptr<scalar_t>() : nullptr;
    POLYFIT_DISPATCH_BASIS(basis, [&] {
      if (gx && s.N < Pack<at::opmath_type<scalar_t>>::kLanes && s.R > 1) {
        // Short rows: grad_x packs lanes across rows; the moments still go row by row.
        eval_series<kBasis, scalar_t>(s, order + 1, gp, sgr, sgn, gx, dom);
        gx = nullptr;
      }
      if (gx || gc) backward_rows<kBasis, scalar_t>(s, order, gp, sgr, sgn, gx, gc, dom);
    });
  });
}

const Kernels kCpuKernels{&features_cpu, &series_cpu, &series_backward_cpu, output_allocator()};

}  // namespace
}  // namespace polyfit::cpu

TORCH_LIBRARY_IMPL(polyfit, CPU, m) {
  POLYFIT_REGISTER_KERNELS(::polyfit::cpu::kCpuKernels);
}
