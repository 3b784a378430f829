// CPU kernel of polyfit::fit: many small least-squares problems, one per SIMD lane.
//
// Work items are (curve, segment) pairs: a curve longer than kSegment points is cut into equal
// segments so that a few long curves still fill the lanes and the threads. Each lane builds its
// item's weighted basis rows a chunk at a time in per-thread scratch (basis.h) and folds them into
// its triangle [R | Q^T b] (lstsq.h); the batch's basis matrix is never formed. A second pass, one
// curve per task, merges a curve's segment triangles in segment order and solves. The segment
// split depends on N alone, so results do not depend on the number of threads. Whole curves of
// power, Chebyshev and Legendre series in float64 first try the Gram route (lstsq.h): their
// moments in one pass, Cholesky and one refinement step, where their condition allows it.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../basis.h"
#include "../fit.h"
#include "../lstsq.h"
#include "pack.h"

namespace polyfit::cpu {
namespace {

constexpr int64_t kSegment = 1024;

// Up to this K + 1 (degree 10) each lane's QR runs qr_update_fused with one vector per pack, its dot
// products and factors in registers; wider fits run qr_update on packs of kU vectors, whose
// independent vectors hide the latency of its one dot product at a time. The one pass per column
// wins at every width measured (10k curves x 64 points, 2 threads, Zen 4: degree 8 4.7 -> 2.9 ms,
// 10 7.6 -> 4.0, 15 10.9 -> 7.8, 20 in float32 16 -> 7.6), but each width is code of its own:
// compiling fit.cpp for one ISA took 30 s up to degree 7, 38 s up to 10, 68 s up to 15.
constexpr int kMaxFusedWidth = 12;

// dst[q * L + j] = src[j][q] for q < n: L lanes' contiguous points, lane-minor. With AVX-512 they
// move by L x L transposes in registers (float64 8 x 8, float32 16 x 16), L times fewer
// instructions than element moves.
template <typename T, int L>
void transpose_lanes(const T* const* src, int n, T* dst) {
  int q0 = 0;
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<T, double> && L == 8) {
    for (; q0 + 8 <= n; q0 += 8) {
      __m512d r[8], p[8];
      for (int j = 0; j < 8; ++j) r[j] = _mm512_loadu_pd(src[j] + q0);
      transpose_8x8(r, p);
      for (int q = 0; q < 8; ++q) _mm512_storeu_pd(dst + (q0 + q) * 8, p[q]);
    }
  } else if constexpr (std::is_same_v<T, float> && L == 16) {
    for (; q0 + 16 <= n; q0 += 16) {
      __m512 r[16], p[16];
      for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(src[j] + q0);
      transpose_16x16(r, p);
      for (int q = 0; q < 16; ++q) _mm512_storeu_ps(dst + (q0 + q) * 16, p[q]);
    }
  }
#endif
  for (int j = 0; j < L; ++j) {
    const T* s = src[j];
    for (int q = q0; q < n; ++q) dst[q * L + j] = s[q];
  }
}

// The next group's first chunk of points, asked into the cache while this group's rows are built:
// rows of 64 points (8 cache lines) are too short for the hardware prefetcher, and waiting for
// them took a fifth of a fit of 10k curves x 64 points on one thread while other tenants crowded
// the L3. A few lines per row: a burst of 128 requests at once stalled the core on its misses.
template <typename T, int L>
class NextChunk {
 public:
  NextChunk(int points) : bytes_(int64_t(points) * sizeof(T)) {}
  void reset() { spans_ = span_ = 0, at_ = 0; }
  void add(const T* p) { span_start_[spans_++] = reinterpret_cast<const char*>(p); }
  // Lines per row to ask for so that all are asked for within `rows` rows.
  int per_row(int rows) const { return static_cast<int>(ceil_div(spans_ * ceil_div(bytes_, 64), int64_t(rows))); }
  void fetch(int lines) {
    for (; lines > 0 && span_ < spans_; --lines) {
      prefetch_bytes(span_start_[span_] + at_, 64);  // one line, into L2: this group's rows fill L1
      if ((at_ += 64) >= bytes_) at_ = 0, ++span_;
    }
  }

 private:
  const char* span_start_[3 * L];  // x, y and weights of each lane
  int64_t bytes_, at_ = 0;
  int spans_ = 0, span_ = 0;
};

// The Gram route's bases: those whose products of basis functions are sums of basis functions,
// P_k P_l = sum_r lin(k, l, r) P_(k+l-2r), so that the Gram matrix follows from the moments.
template <Basis B>
constexpr bool kGramBasis = B == Basis::Power || B == Basis::Chebyshev || B == Basis::Legendre;

// The route's basis values V_m = P_m / gram_scale<B>(m): the monic polynomials for Legendre, whose
// recurrence takes two operations a step where P_m's takes three (basis.h); P_m itself otherwise.
template <Basis B>
constexpr double gram_scale(int m) {
  double a = 1.0;  // Legendre: A_m = prod_{j<m} (2j+1)/(j+1), P_m's leading coefficient
  if constexpr (B == Basis::Legendre)
    for (int j = 0; j < m; ++j) a *= double(2 * j + 1) / double(j + 1);
  return a;
}

// lin(k, l, r) for k <= l, r <= k: powers 1 (r = 0 only); Chebyshev 1/2 at r = 0 and r = k
// (T_k T_l = (T_(k+l) + T_(l-k)) / 2); Legendre Adams' coefficients
// A_(k-r) A_r A_(l-r) / A_(k+l-r) (2k+2l-4r+1) / (2k+2l-2r+1), A_m = gram_scale<Legendre>(m).
template <Basis B>
constexpr double gram_linearisation(int k, int l, int r) {
  if constexpr (B == Basis::Power) {
    return r == 0 ? 1.0 : 0.0;
  } else if constexpr (B == Basis::Chebyshev) {
    return k == 0 ? 1.0 : (r == 0 || r == k) ? 0.5 : 0.0;
  } else {
    const auto A = gram_scale<Basis::Legendre>;
    return A(k - r) * A(r) * A(l - r) / A(k + l - r) * double(2 * k + 2 * l - 4 * r + 1) /
           double(2 * k + 2 * l - 2 * r + 1);
  }
}

constexpr int highest_power_of_two(int m) {  // in m >= 1
  int p = 1;
  while (2 * p <= m) p *= 2;
  return p;
}

// u V_0(t) .. u V_(n-1)(t) (basis_values' recurrences, unrolled for a count known at compile time
// so that the sums they feed stay in registers); sink(m, value) with m an integral constant.
// kUnit: u is 1. Powers then multiply as a tree, t^m = t^(m - 2^j) t^(2^j) with 2^j the highest
// power of two in m: the same multiplies as the chain t^m = t t^(m-1), but at most log2(m) + 1 of
// them deep where the chain's latency stalled the moments' pass.
template <Basis B, int n, bool kUnit = false, typename P, typename Sink>
C10_ALWAYS_INLINE void gram_basis_values(const P& t, const P& u, Sink&& sink) {
  static_assert(kGramBasis<B>);
  using T = typename P::Vec::value_type;
  if constexpr (B == Basis::Power && kUnit) {
    P v[n];
    static_for<0, n>([&](auto m) {
      constexpr int hi = highest_power_of_two(m);
      if constexpr (m == 0) v[m] = P(T(1));
      else if constexpr (m == 1) v[m] = t;
      else if constexpr (hi == m) v[m] = v[m / 2] * v[m / 2];
      else v[m] = v[m - hi] * v[hi];
      sink(m, v[m]);
    });
    return;
  }
  const P tt = t + t;
  P p1 = u, p2 = u;  // the two values before
  static_for<0, n>([&](auto m) {
    P p = u;
    if constexpr (m == 1 || (m > 1 && B == Basis::Power)) p = p1 * t;
    if constexpr (m > 1 && B == Basis::Chebyshev) p = fmsub(tt, p1, p2);  // T_m = 2t T_(m-1) - T_(m-2)
    if constexpr (m > 1 && B == Basis::Legendre)  // Q_m = t Q_(m-1) - beta_(m-1) Q_(m-2)
      p = fnmadd(P(legendre_monic_beta<T>(m - 1)), p2, p1 * t);
    sink(m, p);
    p2 = p1;
    p1 = p;
  });
}

template <Basis B, typename T, int U>
void fit_kernel(const Tensor& x, const Tensor& y, const Tensor& w, Tensor& coeffs, Tensor& resid, Tensor& ill,
                const Domain& dom) {
  using P = Pack<T, U>;
  constexpr int L = P::kLanes;
  const int64_t R = x.size(0), N = x.size(1);
  const int K = static_cast<int>(coeffs.size(1)), W1 = K + 1;
  const int64_t RS = int64_t(K) * W1;  // one triangle [R | Q^T b]
  const int64_t nseg = ceil_div(N, kSegment), seg_len = ceil_div(N, nseg);
  const int64_t items = R * nseg;
  // Rows per chunk: each chunk costs K square roots and divisions, and each pass of a reflection
  // over R's rows adds rounding; 64 rows make a typical curve one chunk (the plain Householder QR)
  // while the chunk stays in L2 for moderate degrees.
  const int C = static_cast<int>(std::max<int64_t>(8, std::min<int64_t>({64, seg_len, 4096 / W1})));
  const Window<T> win = dom.window<T>();
  const T fill = neutral_x<T>(dom);
  const T rcond = T(N) * std::numeric_limits<T>::epsilon();  // numpy.polynomial's default
  const T* xp = x.const_data_ptr<T>();
  const T* yp = y.const_data_ptr<T>();
  const T* wp = w.defined() ? w.const_data_ptr<T>() : nullptr;
  const int64_t sxr = x.stride(0), sxn = x.stride(1), syr = y.stride(0), syn = y.stride(1);
  const int64_t swr = wp ? w.stride(0) : 0, swn = wp ? w.stride(1) : 0;
  T* cp = coeffs.mutable_data_ptr<T>();
  T* rp = resid.mutable_data_ptr<T>();
  bool* ip = ill.mutable_data_ptr<bool>();
  // One segment per curve (N <= kSegment, the common case): each lane solves its curve at once.
  // Otherwise the lanes' triangles go to `tri` and a second pass merges each curve's segments.
  const bool whole = nseg == 1;
  std::vector<T> tri(whole ? 0 : size_t(items) * (RS + 1));  // per item: triangle, then residual

  at::parallel_for(0, ceil_div(items, L), 1, [&](int64_t g0, int64_t g1) {
    std::vector<P> Rm(RS), Rinv(size_t(K) * K), M(size_t(C) * W1), c(K);
    // A chunk's x, y and weights, lane-minor: each lane's points are read in order, and the rows'
    // packs load from stores long retired (a pack loaded right after its lanes' scalar stores
    // waits for them to reach the cache).
    std::vector<T> xs(size_t(C) * L), ys(size_t(C) * L), ws(size_t(C) * L);
    alignas(64) T out[L], probe[L], bound[L];
    int64_t xo[L], yo[L], wo[L], len[L];
    NextChunk<T, L> next(C);
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t i0 = g * L;
      const int cnt = static_cast<int>(std::min<int64_t>(L, items - i0));
      int64_t longest = 0;
      for (int j = 0; j < L; ++j) {
        // A lane past the last item repeats item i0 (valid memory, finite); its result is dropped.
        const int64_t item = i0 + (j < cnt ? j : 0);
        const int64_t r = whole ? item : item / nseg, n0 = whole ? 0 : (item % nseg) * seg_len;
        xo[j] = r * sxr + n0 * sxn;
        yo[j] = r * syr + n0 * syn;
        wo[j] = r * swr + n0 * swn;
        len[j] = std::min(seg_len, N - n0);
        longest = std::max(longest, len[j]);
      }
      next.reset();
      if (g + 1 < g1 && sxn == 1 && syn == 1 && (!wp || swn == 1)) {
        for (int j = 0; j < L; ++j) {
          const int64_t item = std::min(i0 + L + j, items - 1);
          const int64_t r = whole ? item : item / nseg, n0 = whole ? 0 : (item % nseg) * seg_len;
          next.add(xp + r * sxr + n0);
          next.add(yp + r * syr + n0);
          if (wp) next.add(wp + r * swr + n0);
        }
      }
      P res(T(0));
      const MatRef<P> Rref{Rm.data(), W1, 1}, Mref{M.data(), W1, 1};
      // Chunk q0's x, y and weights into xs, ys and ws, lane-minor; returns whether its weights are
      // all 1 (then ws is not written).
      auto load_chunk = [&](int64_t q0, int c_rows) {
        // A lane whose segment ends inside the chunk adds zero rows (weight 0) after it: no change.
        bool all_live = true;
        for (int j = 0; j < L; ++j) all_live = all_live && len[j] - q0 >= c_rows;
        const bool unit = !wp && all_live;                    // weights all 1: no weights' scratch
        const bool full = all_live && sxn == 1 && syn == 1;  // contiguous rows: transposes
        if (full) {
          const T* xsrc[L];
          const T* ysrc[L];
          for (int j = 0; j < L; ++j) {
            xsrc[j] = xp + xo[j] + q0;
            ysrc[j] = yp + yo[j] + q0;
          }
          transpose_lanes<T, L>(xsrc, c_rows, xs.data());
          transpose_lanes<T, L>(ysrc, c_rows, ys.data());
        }
        if (!(full && unit)) {
          for (int j = 0; j < L; ++j) {
            const int live = static_cast<int>(std::clamp<int64_t>(len[j] - q0, 0, c_rows));
            if (!full) {
              const T* xj = xp + xo[j] + q0 * sxn;
              const T* yj = yp + yo[j] + q0 * syn;
              for (int q = 0; q < live; ++q) {
                xs[q * L + j] = xj[q * sxn];
                ys[q * L + j] = yj[q * syn];
              }
            }
            if (!unit) {
              const T* wj = wp ? wp + wo[j] + q0 * swn : nullptr;
              for (int q = 0; q < live; ++q) ws[q * L + j] = wj ? wj[q * swn] : T(1);
            }
            for (int q = live; q < c_rows; ++q) {
              xs[q * L + j] = fill;
              ys[q * L + j] = T(0);
              ws[q * L + j] = T(0);
            }
          }
        }
        return unit;
      };
      // The loaded chunk's rows M (basis values, then y; all times the weight). A width known at
      // compile time unrolls each row's recurrence, so that the rows' chains of dependent
      // multiplies overlap.
      auto build_rows = [&](auto width, int c_rows, bool unit) {
        const int fetch_per_row = next.per_row(c_rows);
        for (int q = 0; q < c_rows; ++q) {
          next.fetch(fetch_per_row);
          const P wv = unit ? P(T(1)) : P::load(ws.data() + q * L);
          const P t = map_to_window(P::load(xs.data() + q * L), win);
          basis_values<B, T>(t, wv, width - 1, [&](int k, const P& p) { Mref(q, k) = p; });
          Mref(q, width - 1) = P::load(ys.data() + q * L) * wv;
        }
      };
      auto chunk_rows = [&](int64_t q0) { return static_cast<int>(std::min<int64_t>(C, longest - q0)); };

      // The Gram route (lstsq.h) for a group of whole curves: power, Chebyshev and Legendre series
      // in float64 (kGramBasis). Pass one sums the moments S_m = sum u P_m(t) (m <= 2K - 2,
      // u = w^2), from which the Gram matrix follows, (A^T A)_kl = sum_r lin(k, l, r) S_(k+l-2r),
      // with A^T b = sum u y P_k and b^T b = sum u y^2; pass two sums A^T r and r^T r for the
      // refinement step. False where a lane's data could leave the exponent range or its condition
      // bound exceeds the route's limit (nothing is written then): the group takes the reflections.
      auto gram_solve = [&](auto width, auto unit_weights) {
        constexpr int Kc = decltype(width)::value - 1, NM = 2 * Kc - 1;
        // No weights: u = 1 in every row, known at compile time.
        constexpr bool kUnit = decltype(unit_weights)::value;
        // Sizes known at compile time keep the passes' sums in registers.
        const MatRef<P> G{Rm.data(), Kc + 1, 1}, X{Rinv.data(), Kc, 1};
        P S[NM], h[Kc], bb(T(0));
        static_for<0, NM>([&](auto m) { S[m] = P(T(0)); });
        static_for<0, Kc>([&](auto k) { h[k] = P(T(0)); });
        bool unit = true;
        // Row q's t, u and y from the loaded chunk.
        auto row = [&](int q, P& t, P& u, P& yv) {
          t = map_to_window(P::load(xs.data() + q * L), win);
          yv = P::load(ys.data() + q * L);
          if (kUnit || unit) {
            u = P(T(1));
          } else {
            const P wv = P::load(ws.data() + q * L);
            u = wv * wv;
          }
        };
        for (int64_t q0 = 0; q0 < longest; q0 += C) {
          const int c_rows = chunk_rows(q0);
          unit = load_chunk(q0, c_rows);
          const int fetch_per_row = next.per_row(c_rows);
          for (int q = 0; q < c_rows; ++q) {
            next.fetch(fetch_per_row);
            P t, u, yv;
            row(q, t, u, yv);
            bb = fmadd(u * yv, yv, bb);
            gram_basis_values<B, NM, kUnit>(t, u, [&](auto m, const P& p) {
              if constexpr (kUnit && m == 0) {  // V_0 = 1: S_0 is the count
                h[0] = h[0] + yv;
              } else {
                S[m] = S[m] + p;
                if constexpr (m < Kc) h[m] = fmadd(p, yv, h[m]);
              }
            });
          }
        }
        if constexpr (kUnit) S[0] = P(T(longest));
        // From the sums over V_m to those over P_m = A_m V_m (Legendre; A_m = 1 otherwise).
        const auto to_basis = [](P* v, auto count) {
          if constexpr (B == Basis::Legendre)
            static_for<1, decltype(count)::value>([&](auto m) { v[m] = v[m] * P(T(gram_scale<B>(m))); });
        };
        to_basis(S, std::integral_constant<int, NM>{});
        to_basis(h, std::integral_constant<int, Kc>{});
        // Each column's sum of squares where sigma_in_range keeps QR's products finite and exact
        // enough, so are the Gram matrix's; a zero column (y = 0, say) reflects instead.
        P g[Kc], inv[Kc], cr[Kc], rr(T(0));
        bool in_range = sigma_in_range<T>(bb);
        static_for<0, Kc>([&](auto k) {
          static_for<k, Kc>([&](auto l) {  // G(k, l) = sum_r lin(k, l, r) S_(k+l-2r)
            P sum(T(0));
            static_for<0, k + 1>([&](auto r) {
              constexpr double lin = gram_linearisation<B>(k, l, r);
              if constexpr (lin == 1.0) sum = sum + S[k + l - 2 * r];
              else if constexpr (lin != 0.0) sum = fmadd(P(T(lin)), S[k + l - 2 * r], sum);
            });
            G(k, l) = sum;
          });
          g[k] = G(k, k);
          in_range = in_range && sigma_in_range<T>(g[k]);
        });
        if (!in_range) return false;
        cholesky_factor<T>(G, Kc, inv);
        // Normal equations leave an error of about cond^2 eps and one refinement step squares it:
        // below QR's cond eps while cond^3 eps < 1. The bound is never below cond (it overstates
        // it by up to a factor K), and the 4 leaves room for the solves' own constants: the route
        // needs a bound under eps^(-1/3) / 4, about 4e4 in float64.
        const T eps = std::numeric_limits<T>::epsilon();
        const P limit2(T(1) / (T(16) * std::cbrt(eps * eps)));
        if (!all_lanes(cholesky_inverse_condition2<T>(G, inv, g, Kc, X) < limit2))
          return false;
        cholesky_solve<T>(G, inv, Kc, h, cr);
        P crv[Kc];  // the fit's coefficients of the V_m
        static_for<0, Kc>([&](auto k) { crv[k] = cr[k] * P(T(gram_scale<B>(k))); });
        static_for<0, Kc>([&](auto k) { h[k] = P(T(0)); });  // now A^T r
        for (int64_t q0 = 0; q0 < longest; q0 += C) {
          const int c_rows = chunk_rows(q0);
          if (longest > C) unit = load_chunk(q0, c_rows);  // else the chunk is still the curve's
          for (int q = 0; q < c_rows; ++q) {
            P t, u, yv;
            row(q, t, u, yv);
            // The row's basis values once, for the fit and for A^T r.
            P v[Kc], fit = crv[0];
            gram_basis_values<B, Kc, true>(t, P(T(1)), [&](auto k, const P& p) {
              v[k] = p;
              if constexpr (k > 0) fit = fmadd(crv[k], p, fit);
            });
            const P r = yv - fit;
            const P ur = kUnit ? r : u * r;
            rr = fmadd(ur, r, rr);
            h[0] = h[0] + ur;
            static_for<1, Kc>([&](auto k) { h[k] = fmadd(ur, v[k], h[k]); });
          }
        }
        to_basis(h, std::integral_constant<int, Kc>{});
        // c += (R^T R)^-1 A^T r; the residual sum of squares drops by the step's share, dc . A^T r.
        P dc[Kc];
        cholesky_solve<T>(G, inv, Kc, h, dc);
        static_for<0, Kc>([&](auto k) {
          c[k] = cr[k] + dc[k];
          rr = fnmadd(dc[k], h[k], rr);
        });
        res = vmax(rr, P(T(0)));
        return true;
      };
      bool gram = false;
      if constexpr (U == 1 && kGramBasis<B> && std::is_same_v<T, double>) {
        if (whole) {
          with_width<kMaxFusedWidth>(W1, [&](auto w) {
            // Whole curves all have N points: without weights every row's u is 1. Powers alone
            // have code of their own for it (their tree; measured neutral for the others).
            if constexpr (decltype(w)::value >= 2 && B == Basis::Power)
              gram = wp ? gram_solve(w, std::false_type{}) : gram_solve(w, std::true_type{});
            else if constexpr (decltype(w)::value >= 2)
              gram = gram_solve(w, std::false_type{});
          });
        }
      }

      if (!gram) {
        std::fill(Rm.begin(), Rm.end(), P(T(0)));
        res = P(T(0));
        for (int64_t q0 = 0; q0 < longest; q0 += C) {
          const int c_rows = chunk_rows(q0);
          const bool unit = load_chunk(q0, c_rows);
          // The chunk's rows folded into [R | Q^T b] (lstsq.h).
          if constexpr (U == 1) {
            with_width<kMaxFusedWidth>(W1, [&](auto w) {
              if constexpr (decltype(w)::value >= 2) {
                build_rows(w, c_rows, unit);
                qr_update_fused<T, decltype(w)::value>(Rref, Mref, c_rows, res);
              }
            });
          } else {
            build_rows(W1, c_rows, unit);
            qr_update<T>(Rref, Mref, c_rows, K, res);
          }
        }
      }
      if (whole) {
        if (gram) {
          // The route was taken only where the bound is far above rcond and everything finite.
          for (int j = 0; j < cnt; ++j) ip[i0 + j] = false;
        } else {
          qr_back_substitute<T>(Rref, K, c.data(), 1);
          qr_nonfinite_probe<T>(Rref, K, res).store(probe);
          qr_condition_bound<T>(Rref, K).store(bound);
          // Finite data that QR cannot certify as full rank: the caller re-solves by SVD.
          for (int j = 0; j < cnt; ++j) ip[i0 + j] = probe[j] == T(0) && !(bound[j] > rcond);
        }
        res.store(out);
        for (int j = 0; j < cnt; ++j) rp[i0 + j] = out[j];
        for (int k = 0; k < K; ++k) {
          c[k].store(out);
          for (int j = 0; j < cnt; ++j) cp[(i0 + j) * K + k] = out[j];
        }
      } else {
        for (int64_t e = 0; e <= RS; ++e) {
          (e < RS ? Rm[e] : res).store(out);
          for (int j = 0; j < cnt; ++j) tri[size_t(i0 + j) * (RS + 1) + e] = out[j];
        }
      }
    }
  });
  if (whole) return;

  at::parallel_for(0, R, grain(RS * (nseg + K)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* t0 = tri.data() + size_t(r * nseg) * (RS + 1);
      const MatRef<T> acc{t0, W1, 1};
      T res = t0[RS];
      for (int64_t s = 1; s < nseg; ++s) {  // merge the segments' triangles, in order
        T* ts = t0 + size_t(s) * (RS + 1);
        qr_update<T>(acc, MatRef<T>{ts, W1, 1}, K, K, res);
        res += ts[RS];
      }
      rp[r] = res;
      ip[r] = qr_solve<T>(acc, K, res, rcond, cp + r * K, 1);
    }
  });
}

void fit_cpu(const Tensor& x, const Tensor& y, const Tensor& w, Tensor& coeffs, Tensor& resid, Tensor& ill,
             Basis basis, const Domain& dom) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "polyfit_fit", [&] {
    POLYFIT_DISPATCH_BASIS(basis, [&] {
      if (coeffs.size(1) + 1 <= kMaxFusedWidth) {
        fit_kernel<kBasis, scalar_t, 1>(x, y, w, coeffs, resid, ill, dom);
      } else {
        fit_kernel<kBasis, scalar_t, kU>(x, y, w, coeffs, resid, ill, dom);
      }
    });
  });
}

}  // namespace
}  // namespace polyfit::cpu

TORCH_LIBRARY_IMPL(polyfit, CPU, m) {
  POLYFIT_REGISTER_FIT(&::polyfit::cpu::fit_cpu);
}
