// SIMD packs and strided lane loads shared by the CPU kernel files. Each includer is compiled once
// per instruction set (setup.py), so everything here has internal linkage per translation unit.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; an older kernel refuses it and pages fault as before
#endif
#endif

#include "../basis.h"
#include "../ops.h"

namespace polyfit::cpu {
namespace {
using at::Tensor;
using at::vec::Vectorized;

// U independent SIMD vectors advanced in lockstep. Each recurrence is a chain of dependent FMAs;
// U chains in flight keep the FMA units busy instead of waiting on latency: FMA latency (4 cycles)
// times FMAs issued per cycle. A core with two 512-bit FMA ports (Intel Xeon since Skylake-SP,
// Zen 5) needs 8; its 32 vector registers hold them. AVX2's 16 registers hold 4 chains' state.
// Measured on a 2-core AVX-512 Xeon, N = 1e6 float32, 8 chains instead of 4: Legendre D = 8
// forward 240 -> 188 us, its backward op 480-505 -> 396-429 us; power D = 16 backward op 481-496
// -> 446-485 us; bfloat16 D = 16 forward 160 -> 135-138 us.
#if defined(CPU_CAPABILITY_AVX512)
constexpr int kU = 8;
#else
constexpr int kU = 4;
#endif

// U vectors per pack: kU for the element-wise kernels; 1 where a kernel keeps many packs of its own
// in registers (the fit's fused QR, csrc/lstsq.h).
template <typename T, int U = kU>
struct Pack {
  using Vec = Vectorized<T>;
  static constexpr int kWidth = Vec::size();
  static constexpr int kLanes = U * kWidth;
  Vec v[U];

  Pack() = default;
  explicit Pack(T s) {
    for (int u = 0; u < U; ++u) v[u] = Vec(s);
  }
  static Pack load(const T* p) {
    Pack r;
    for (int u = 0; u < U; ++u) r.v[u] = Vec::loadu(p + u * kWidth);
    return r;
  }
  void store(T* p) const {
    for (int u = 0; u < U; ++u) v[u].store(p + u * kWidth);
  }
};

#define POLYFIT_PACK_OP(OP)                                              \
  template <typename T, int U>                                           \
  C10_ALWAYS_INLINE Pack<T, U> operator OP(const Pack<T, U>& a, const Pack<T, U>& b) { \
    Pack<T, U> r;                                                        \
    for (int u = 0; u < U; ++u) r.v[u] = a.v[u] OP b.v[u];               \
    return r;                                                            \
  }
POLYFIT_PACK_OP(+)
POLYFIT_PACK_OP(-)
POLYFIT_PACK_OP(*)
POLYFIT_PACK_OP(&)
POLYFIT_PACK_OP(/)
POLYFIT_PACK_OP(<)  // comparisons give all-ones lanes where true, for select()
POLYFIT_PACK_OP(>)
#undef POLYFIT_PACK_OP

#define POLYFIT_PACK_FMA(NAME)                                                      \
  template <typename T, int U>                                                      \
  C10_ALWAYS_INLINE Pack<T, U> NAME(const Pack<T, U>& a, const Pack<T, U>& b, const Pack<T, U>& c) { \
    Pack<T, U> r;                                                                   \
    for (int u = 0; u < U; ++u) r.v[u] = at::vec::NAME(a.v[u], b.v[u], c.v[u]);     \
    return r;                                                                       \
  }
POLYFIT_PACK_FMA(fmadd)
POLYFIT_PACK_FMA(fmsub)
POLYFIT_PACK_FMA(fnmadd)
#undef POLYFIT_PACK_FMA

// Lane-wise functions for the least-squares and layer kernels (csrc/lstsq.h, cpu/polylinear.cpp).
template <typename T, int U>
C10_ALWAYS_INLINE Pack<T, U> vsqrt(const Pack<T, U>& a) {
  Pack<T, U> r;
  for (int u = 0; u < U; ++u) r.v[u] = a.v[u].sqrt();
  return r;
}
template <typename T, int U>
C10_ALWAYS_INLINE Pack<T, U> vabs(const Pack<T, U>& a) {
  Pack<T, U> r;
  for (int u = 0; u < U; ++u) r.v[u] = a.v[u].abs();
  return r;
}
template <typename T, int U>
C10_ALWAYS_INLINE Pack<T, U> vmax(const Pack<T, U>& a, const Pack<T, U>& b) {
  Pack<T, U> r;
  for (int u = 0; u < U; ++u) r.v[u] = at::vec::maximum(a.v[u], b.v[u]);
  return r;
}
// True when every lane of a comparison mask (all-ones lanes where true) is set.
template <typename T, int U>
C10_ALWAYS_INLINE bool all_lanes(const Pack<T, U>& m) {
  for (int u = 0; u < U; ++u)
    if (m.v[u].zero_mask() != 0) return false;  // zero_mask: a bit per lane equal to 0 (false)
  return true;
}
template <typename T, int U>
C10_ALWAYS_INLINE Pack<T, U> vtanh(const Pack<T, U>& a) {
  Pack<T, U> r;
  for (int u = 0; u < U; ++u) r.v[u] = a.v[u].tanh();
  return r;
}

// The domain-map helpers of basis.h, lane-wise.
template <typename T, int U>
C10_ALWAYS_INLINE Pack<T, U> inside(const Pack<T, U>& x, const Pack<T, U>& lo, const Pack<T, U>& hi) {
  Pack<T, U> r;
  for (int u = 0; u < U; ++u) r.v[u] = (x.v[u] >= lo.v[u]) & (x.v[u] <= hi.v[u]);
  return r;
}
template <typename T, int U>
C10_ALWAYS_INLINE Pack<T, U> select(const Pack<T, U>& mask, const Pack<T, U>& a, const Pack<T, U>& b) {
  Pack<T, U> r;
  for (int u = 0; u < U; ++u) r.v[u] = Vectorized<T>::blendv(b.v[u], a.v[u], mask.v[u]);
  return r;
}
template <typename T, int U>
C10_ALWAYS_INLINE Pack<T, U> clamp_unit(const Pack<T, U>& t) {
  Pack<T, U> r;
  for (int u = 0; u < U; ++u) r.v[u] = at::vec::clamp(t.v[u], Vectorized<T>(T(-1)), Vectorized<T>(T(1)));
  return r;
}

// sum_u p.v[u], lane by lane, as a fixed-shape tree (pairs, then pairs of pairs, ...).
template <typename T, int U>
C10_ALWAYS_INLINE Vectorized<T> fold(const Pack<T, U>& p) {
  static_assert((U & (U - 1)) == 0, "fold sums a power of two vectors");
  Pack<T, U> s = p;
  for (int n = U / 2; n > 0; n /= 2)
    for (int u = 0; u < n; ++u) s.v[u] = s.v[2 * u] + s.v[2 * u + 1];
  return s.v[0];
}

template <typename T>
C10_ALWAYS_INLINE T lane_sum(const Vectorized<T>& v) {  // fixed order
  alignas(64) T buf[Vectorized<T>::size()];
  v.store(buf);
  T s = T(0);
  for (int i = 0; i < Vectorized<T>::size(); ++i) s += buf[i];
  return s;
}

// ---- loads and stores between storage (scalar_t) and compute packs (opmath) -----------------

// Lanes [0, count) from p[i * stride]; lanes past count hold `fill`.
// float16 and bfloat16 computed in float: one storage vector holds two float vectors' lanes.
template <typename T, typename scalar_t>
constexpr bool kHalfInFloat = std::is_same_v<T, float> && at::is_reduced_floating_point_v<scalar_t>;

template <typename T, typename scalar_t>
C10_ALWAYS_INLINE Pack<T> load_lanes(const scalar_t* p, int64_t stride, int count, T fill) {
  if constexpr (std::is_same_v<scalar_t, T>) {
    if (stride == 1 && count == Pack<T>::kLanes) return Pack<T>::load(p);
  } else if constexpr (kHalfInFloat<T, scalar_t>) {
    if (stride == 1 && count == Pack<T>::kLanes) {  // converted in registers, as torch rounds
      static_assert(kU % 2 == 0 && Vectorized<scalar_t>::size() == 2 * Pack<T>::kWidth);
      Pack<T> r;
      for (int u = 0; u < kU; u += 2)
        std::tie(r.v[u], r.v[u + 1]) = at::vec::convert_to_float<scalar_t>(Vectorized<scalar_t>::loadu(p + u * Pack<T>::kWidth));
      return r;
    }
  }
  alignas(64) T buf[Pack<T>::kLanes];
  if (stride == 1) {
    for (int i = 0; i < count; ++i) buf[i] = T(p[i]);
  } else {
    for (int i = 0; i < count; ++i) buf[i] = T(p[i * stride]);
  }
  for (int i = count; i < Pack<T>::kLanes; ++i) buf[i] = fill;
  return Pack<T>::load(buf);
}

// Two float vectors into one storage vector of a half type, rounded as torch rounds. bfloat16 on a
// CPU with AVX512_BF16 takes one instruction (vcvtne2ps2bf16: round to nearest even, as torch) in
// place of torch's 16 integer ops per pair; that instruction flushes subnormals and keeps NaN
// payloads where torch does neither, so a pair holding either goes torch's way. Power polyval
// forward, N = 1e6 bfloat16, Xeon: D = 2 64-65 -> 54-55 us, D = 16 131-133 -> 123 us.
#if defined(CPU_CAPABILITY_AVX512)
inline const bool kHardwareBf16 = [] {
  __builtin_cpu_init();  // this runs in a static initializer, possibly before libgcc's own
  return __builtin_cpu_supports("avx512bf16") != 0;
}();
#endif
template <typename scalar_t>
C10_ALWAYS_INLINE Vectorized<scalar_t> from_float(const Vectorized<float>& a, const Vectorized<float>& b) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    constexpr int kNanOrSubnormal = 0x01 | 0x20 | 0x80;  // vfpclassps: QNaN, denormal, SNaN
    if (kHardwareBf16 && !(_mm512_fpclass_ps_mask(a, kNanOrSubnormal) | _mm512_fpclass_ps_mask(b, kNanOrSubnormal))) {
      __m512i r;  // assembled: the library is built for AVX-512F, and runs where AVX512_BF16 is missing
      asm("vcvtne2ps2bf16 %1, %2, %0" : "=v"(r) : "v"(static_cast<__m512>(a)), "v"(static_cast<__m512>(b)));
      return Vectorized<c10::BFloat16>(r);
    }
  }
#endif
  return at::vec::convert_from_float<scalar_t>(a, b);
}

template <typename T, typename scalar_t>
C10_ALWAYS_INLINE void store_lanes(const Pack<T>& v, scalar_t* p, int count) {
  if constexpr (std::is_same_v<scalar_t, T>) {
    if (count == Pack<T>::kLanes) return v.store(p);
  } else if constexpr (kHalfInFloat<T, scalar_t>) {
    if (count == Pack<T>::kLanes) {
      for (int u = 0; u < kU; u += 2)
        from_float<scalar_t>(v.v[u], v.v[u + 1]).store(p + u * Pack<T>::kWidth);
      return;
    }
  }
  alignas(64) T buf[Pack<T>::kLanes];
  v.store(buf);
  for (int i = 0; i < count; ++i) p[i] = scalar_t(buf[i]);
}

// 1/j for 1 <= j <= n, the values basis.h's Reciprocal divides out (bit for bit), to look up where
// the degree is known only at run time: Legendre's and Laguerre's steps take one or two, and a
// scalar division per step and pack costs more than the step's vector operations (N = 1e6 float32,
// 2-core Xeon, D = 16: Laguerre forward 353-354 -> 310-319 us, Laguerre / Legendre moments 427 /
// 418-419 -> 389 / 375-378 us). A compile-time degree folds them into constants.
template <typename T>
class Reciprocals {
 public:
  explicit Reciprocals(int n) : v_(size_t(n) + 1, T(0)) {
    for (int j = 1; j <= n; ++j) v_[j] = T(1) / T(j);
  }
  struct Lookup {
    const T* v;
    C10_ALWAYS_INLINE T operator()(int j) const { return v[j]; }
  };
  Lookup lookup() const { return {v_.data()}; }

 private:
  c10::SmallVector<T, 72> v_;
};

// For element-wise loops, where a pack's points may sit in any lane order so long as every pack
// loaded and stored together uses the same one. A full contiguous pack of bfloat16 on AVX-512 holds
// each 32 points as their even points, then their odd ones: a bfloat16 is the top half of its
// float, so one shift or one mask per 32 points converts them in place (torch's in-order
// conversion takes five operations), and one word permute restores the order on the way out.
// Power basis, N = 1e6 bfloat16, 2-core Xeon: forward D = 2 / 16 50-53 / 116-117 -> 45-49 / 109 us,
// backward op D = 16 301-305 -> 292-293 us. Anything else: load_lanes and store_lanes.
#if defined(CPU_CAPABILITY_AVX512)
template <typename T, typename scalar_t>
constexpr bool kBf16EvenOdd = std::is_same_v<T, float> && std::is_same_v<scalar_t, c10::BFloat16>;
#endif

template <typename T, typename scalar_t>
C10_ALWAYS_INLINE Pack<T> load_points(const scalar_t* p, int64_t stride, int count, T fill) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (kBf16EvenOdd<T, scalar_t>) {
    if (stride == 1 && count == Pack<T>::kLanes) {
      Pack<T> r;
      for (int u = 0; u < kU; u += 2) {
        const __m512i w = _mm512_loadu_si512(p + u * Pack<T>::kWidth);
        r.v[u] = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
        r.v[u + 1] = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(int32_t(0xFFFF0000u))));
      }
      return r;
    }
  }
#endif
  return load_lanes<T>(p, stride, count, fill);
}

template <typename T, typename scalar_t>
C10_ALWAYS_INLINE void store_points(const Pack<T>& v, scalar_t* p, int count) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (kBf16EvenOdd<T, scalar_t>) {
    if (count == Pack<T>::kLanes) {
      // word i of the result: word i / 2 of the even half, or of the odd half (16 words up)
      alignas(64) static constexpr int16_t kInterleave[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                                              8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
      const __m512i order = _mm512_load_si512(kInterleave);
      for (int u = 0; u < kU; u += 2) {
        const __m512i halves = from_float<scalar_t>(v.v[u], v.v[u + 1]);
        _mm512_storeu_si512(p + u * Pack<T>::kWidth, _mm512_permutexvar_epi16(order, halves));
      }
      return;
    }
  }
#endif
  store_lanes(v, p, count);
}

// Calls f(std::integral_constant<int, K>()) for K = 1..Max, for kernels that keep K vectors per
// point in registers (arrays indexed by constants); other K call nothing.
template <int Max = 9, int I = 1, typename F>
void with_width(int K, F&& f) {
  if constexpr (I <= Max) {
    if (K == I) return f(std::integral_constant<int, I>());
    with_width<Max, I + 1>(K, f);
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Work items per parallel task so that a task does at least kGrainSize element-operations. ATen's
// grain (32768) suits its scalar-rate loops; these vector kernels do it in ~1 us, less than waking
// the other threads costs (a 2-thread region added 3-5 us on a 2-core Zen 4 VM: forward+backward
// at 10^4 points took 47.8 us on 2 threads, 42.6 on 1), so a task gets 8 times as much.
inline int64_t grain(int64_t work_per_item) {
  constexpr int64_t kGrainSize = 1 << 18;
  return std::max<int64_t>(1, kGrainSize / std::max<int64_t>(1, work_per_item));
}

// Asks for the cache lines of [p, p + bytes) ahead of their use (read, into L2).
inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b, 0, 2);
}

#if defined(CPU_CAPABILITY_AVX512)
// In-register transposes: p[i] = lane i of r[0..n), for n x n tiles of one vector per row.
// 16 x 16 float: unpacks pair rows, shuffles make 4 x 4 blocks in each 128-bit lane, and two
// rounds of 128-bit block shuffles put every point's block together.
inline void transpose_16x16(const __m512* r, __m512* p) {
  __m512 t[16], u[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // u[i + j], 128-bit lane L: point 4L + j, columns i..i+3
    u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 a = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88), b = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);
    const __m512 c = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88), d = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
    p[j] = _mm512_shuffle_f32x4(a, c, 0x88);
    p[4 + j] = _mm512_shuffle_f32x4(b, d, 0x88);
    p[8 + j] = _mm512_shuffle_f32x4(a, c, 0xDD);
    p[12 + j] = _mm512_shuffle_f32x4(b, d, 0xDD);
  }
}

// 8 x 8 double: unpacks pair rows, then 256-bit and 128-bit block shuffles.
inline void transpose_8x8(const __m512d* r, __m512d* p) {
  __m512d t[8], u[8];
  for (int j = 0; j < 8; j += 2) {  // t[j] = (r_j,0 r_j+1,0 r_j,2 ...), t[j + 1] the odd columns
    t[j] = _mm512_unpacklo_pd(r[j], r[j + 1]);
    t[j + 1] = _mm512_unpackhi_pd(r[j], r[j + 1]);
  }
  for (int j = 0; j < 8; j += 4) {  // pairs of columns 4 apart, from 4 rows
    u[j] = _mm512_shuffle_f64x2(t[j], t[j + 2], 0x88);
    u[j + 1] = _mm512_shuffle_f64x2(t[j], t[j + 2], 0xDD);
    u[j + 2] = _mm512_shuffle_f64x2(t[j + 1], t[j + 3], 0x88);
    u[j + 3] = _mm512_shuffle_f64x2(t[j + 1], t[j + 3], 0xDD);
  }
  // u[0]: columns 0 and 4 of rows 0-3, u[1]: 2 and 6, u[2]: 1 and 5, u[3]: 3 and 7; u[4..7] rows 4-7.
  constexpr int first[4] = {0, 2, 1, 3};
  for (int k = 0; k < 4; ++k) {
    p[first[k]] = _mm512_shuffle_f64x2(u[k], u[k + 4], 0x88);
    p[first[k] + 4] = _mm512_shuffle_f64x2(u[k], u[k + 4], 0xDD);
  }
}
#endif

// Pages of an output that nothing has written yet (a fresh mapping from the allocator, or heap
// the allocator returned to the system) fault one by one on first write. MADV_POPULATE_WRITE maps a
// run of them in one call instead: on Zen 4, features D=8 N=1e6 (36 MB, 2 threads) 10.2 -> 8.3 ms.
// Mapping a page already mapped still costs that call ~65 ns, so each task asks mincore once
// (1-3 us, hence only for tasks writing 4 MB or more) which of its pages are unmapped, and maps
// those 1 MB at a time just ahead of its writes, while the zeroed lines may still be in cache.
class FreshPages {
 public:
  FreshPages(void* begin, void* end) : base_(page_up(begin)), next_(base_), end_(page_down(end)) {
#if defined(__linux__)
    if (end_ - base_ < kMinBytes) return;
    unmapped_.resize(static_cast<size_t>(end_ - base_) / page());
    if (mincore(base_, end_ - base_, unmapped_.data()) != 0) return;
    for (auto& u : unmapped_) {
      u = !(u & 1);
      fresh_ = fresh_ || u;
    }
#endif
  }
  // Call before writing the bytes below `p`.
  void reach(const void* p) {
#if defined(__linux__)
    if (!fresh_ || static_cast<const char*>(p) <= next_) return;
    char* to = std::min(end_, page_up(std::max<const char*>(static_cast<const char*>(p), next_ + kRun)));
    for (size_t i = page_index(next_), e = page_index(to); i < e;) {  // each run of unmapped pages
      size_t j = i;
      while (j < e && unmapped_[j]) ++j;
      if (j > i && madvise(base_ + i * page(), (j - i) * page(), MADV_POPULATE_WRITE) != 0) {
        fresh_ = false;  // refused (a kernel before 5.14): pages fault as before
        return;
      }
      while (j < e && !unmapped_[j]) ++j;
      i = j;
    }
    next_ = to;
#endif
  }

 private:
  static constexpr int64_t kMinBytes = int64_t(4) << 20, kRun = int64_t(1) << 20;
  static uintptr_t page() {
#if defined(__linux__)
    static const uintptr_t size = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    return size;
#else
    return 4096;
#endif
  }
  static char* page_down(const void* p) { return reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(p) & ~(page() - 1)); }
  static char* page_up(const void* p) { return page_down(static_cast<const char*>(p) + page() - 1); }
  size_t page_index(const char* p) const { return static_cast<size_t>(p - base_) / page(); }
  char* base_;
  char* next_;
  char* end_;
  std::vector<unsigned char> unmapped_;  // per page, from mincore
  bool fresh_ = false;
};

// A lane fill for partial packs that maps to t = 0, where every basis is finite.
template <typename T>
C10_ALWAYS_INLINE T neutral_x(const Domain& d) {
  return d.mapped ? T(0.5 * (d.lo + d.hi)) : T(0);
}

}  // namespace
}  // namespace polyfit::cpu
