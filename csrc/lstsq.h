// Least squares by Householder QR, written once for the CPU (SIMD packs, one curve per lane) and
// CUDA (one curve per thread) fit kernels.
//
// A curve's weighted basis matrix A (N x K) and right-hand side b arrive a few rows at a time and are
// folded into a K x (K + 1) triangle [R | Q^T b] by Householder reflections, so no kernel ever holds
// the N x K matrix: each update triangularises [R | Q^T b] stacked on the new rows (a streaming,
// "tall-skinny" QR). The same update merges the triangles of a curve's segments. The squared norm of
// what the reflections push out of the top K rows of the last column is the residual sum of squares.
//
// A reflection whose column's squares would leave the exponent range (float32 squares under 1e-19
// flush towards zero, and a first row's rounding noise of ~1e-22 made 1/h infinite; squares over
// 1e19 overflow) is built from the column divided by its largest magnitude instead.
//
// V is a scalar (float, double) or a CPU SIMD pack; it must provide +, -, *, /, <, >, select(mask, a, b),
// vsqrt(a), vabs(a), vmax(a, b), all_lanes(mask) and fmadd/fnmadd as in basis.h.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "basis.h"

namespace polyfit {

C10_HOST_DEVICE inline float vsqrt(float a) { return ::sqrtf(a); }
C10_HOST_DEVICE inline double vsqrt(double a) { return ::sqrt(a); }
C10_HOST_DEVICE inline float vabs(float a) { return ::fabsf(a); }
C10_HOST_DEVICE inline double vabs(double a) { return ::fabs(a); }
C10_HOST_DEVICE inline float vmax(float a, float b) { return a > b ? a : b; }
C10_HOST_DEVICE inline double vmax(double a, double b) { return a > b ? a : b; }
C10_HOST_DEVICE inline bool all_lanes(bool m) { return m; }

// The scale of a column whose largest magnitude is amax: amax itself, or the smallest normal
// number for a zero or subnormal column, so that 1 / scale stays finite.
template <typename T, typename V>
C10_HOST_DEVICE inline V column_scale(const V& amax) {
  return vmax(amax, V(std::numeric_limits<T>::min()));
}

// Element (i, j) of a row-major matrix with leading dimension ld at p[(i * ld + j) * es]; es > 1
// interleaves the matrices of many threads so that CUDA's accesses coalesce.
template <typename V>
struct MatRef {
  V* p;
  int ld;
  int64_t es;
  C10_HOST_DEVICE V& operator()(int i, int j) const { return p[(int64_t(i) * ld + j) * es]; }
};

// Whether a column's sum of squares sigma lies within [lo, hi]: no square that matters underflowed
// (rows * min < eps * sigma for up to 1 / eps rows), and neither h <= 2 sigma nor the products
// v0 R_jl, M_qj M_ql with columns up to max^(3/4) / rows overflow.
template <typename T, typename V>
C10_HOST_DEVICE C10_ALWAYS_INLINE bool sigma_in_range(const V& sigma) {
  using lim = std::numeric_limits<T>;
  const V lo(lim::min() / (lim::epsilon() * lim::epsilon())), hi(vsqrt(lim::max()));
  return all_lanes((sigma > lo) & (sigma < hi));
}

// The rare case of sigma_in_range failing (NaN lanes too): M's column j (rows q < rows) is divided
// by its scale a in place, returned with r = R_jj / a and the scaled column's sigma.
template <typename T, typename V>
C10_HOST_DEVICE inline V rescale_column(const MatRef<V>& M, int rows, int j, const V& rjj, V& r, V& sigma) {
  V amax = vabs(rjj);
  for (int q = 0; q < rows; ++q) amax = vmax(amax, vabs(M(q, j)));
  const V scale = column_scale<T>(amax);
  const V inv = V(T(1)) / scale;
  r = rjj * inv;
  sigma = r * r;
  for (int q = 0; q < rows; ++q) {
    const V m = M(q, j) * inv;
    M(q, j) = m;  // M's column j is read again only scaled
    sigma = fmadd(m, m, sigma);
  }
  return scale;
}

// The Householder reflection of column j: [R_jj; M's column j] with sigma its (scaled) sum of
// squares, r the scaled R_jj. When the column was rescaled, the reflection is built from the column
// divided by its scale a (v^ = v / a, h^ = |v^|^2 / 2): the update f v = (v.col / h) v equals
// (v^.col / h^) v^, and only R_jj = a alpha^ needs a back.
template <typename T, typename V>
struct Reflection {
  V v0, hinv, rjj;  // v's first entry, 1 / h (0 for a zero column), the new R_jj

  C10_HOST_DEVICE C10_ALWAYS_INLINE Reflection(const V& rjj_old, const V& r, const V& sigma, const V& scale) {
    const V zero(T(0)), one(T(1));
    const V norm = vsqrt(sigma);
    // alpha takes the sign opposite to R_jj, so v0 = R_jj - alpha never cancels and h >= sigma.
    const V alpha = select(rjj_old < zero, norm, zero - norm);
    v0 = r - alpha;
    const V h = sigma - r * alpha;
    // A zero column (h = 0) needs no reflection; the guard keeps 0/0 out of that lane.
    hinv = select(h > zero, one / h, zero);
    rjj = select(h > zero, alpha * scale, rjj_old);
  }
  // Reflects column l given `dot`, the dot product of M's columns j and l: updates R_jl and returns
  // the factor f with which M's column l takes away f times M's column j.
  C10_HOST_DEVICE C10_ALWAYS_INLINE V apply_to_row(V& rjl, const V& dot) const {
    const V f = fmadd(v0, rjl, dot) * hinv;
    rjl = fnmadd(f, v0, rjl);
    return f;
  }
};

// Folds `rows` rows M (rows x (K + 1): basis values, then the right-hand side) into the triangle
// R (K x (K + 1)) and adds the rows' share of the residual to `resid`. M is overwritten.
// The reflection of column j acts on R's row j and M's rows only: R's rows below j are zero there.
template <typename T, typename V>
C10_HOST_DEVICE inline void qr_update(const MatRef<V>& R, const MatRef<V>& M, int rows, int K, V& resid) {
  for (int j = 0; j < K; ++j) {
    const V rjj = R(j, j);
    V r = rjj, scale(T(1));
    V sigma = r * r;
    for (int q = 0; q < rows; ++q) sigma = fmadd(M(q, j), M(q, j), sigma);
    if (!sigma_in_range<T>(sigma)) scale = rescale_column<T>(M, rows, j, rjj, r, sigma);
    const Reflection<T, V> ref(rjj, r, sigma, scale);
    for (int l = j + 1; l <= K; ++l) {
      V dot(T(0));
      for (int q = 0; q < rows; ++q) dot = fmadd(M(q, j), M(q, l), dot);
      const V f = ref.apply_to_row(R(j, l), dot);
      for (int q = 0; q < rows; ++q) M(q, l) = fnmadd(f, M(q, j), M(q, l));
    }
    R(j, j) = ref.rjj;
  }
  for (int q = 0; q < rows; ++q) resid = fmadd(M(q, K), M(q, K), resid);
}

// Calls f(std::integral_constant<int, I>()) for I = From, ..., To - 1 in order: loop bodies whose
// array indices are constants, so that the arrays live in registers.
template <int From, int To, typename F>
C10_ALWAYS_INLINE void static_for(F&& f) {
  if constexpr (From < To) {
    f(std::integral_constant<int, From>());
    static_for<From + 1, To>(f);
  }
}

// qr_update with K + 1 = W1 known at compile time, for a V narrow enough that a row's worth of
// dot products and factors stays in registers (the CPU kernel's single vectors): one pass over M
// per column instead of 2 (K - j) + 1. The pass for column j applies column j - 1's pending update
// to each row, stores the row and accumulates the dot products of column j with itself (sigma) and
// every column right of it. The last pass needs only the updated right-hand side's squares, so it
// stores nothing.
template <typename T, int W1, typename V>
inline void qr_update_fused(const MatRef<V>& R, const MatRef<V>& M, int rows, V& resid) {
  static_assert(W1 >= 2, "one basis column and the right-hand side at least");
  constexpr int K = W1 - 1;
  const V zero(T(0));
  V f[W1] = {};  // column j - 1's factors: M(q, l) -= f[l] M(q, j - 1) for l >= j
  static_for<0, K>([&](auto jc) {
    constexpr int j = decltype(jc)::value;
    V dot[W1], fj[W1];  // fj: f copied into the step's own registers
    static_for<j, W1>([&](auto l) {
      dot[l] = zero;
      fj[l] = f[l];
    });
    for (int q = 0; q < rows; ++q) {
      V prev = zero, mj = zero;
      if constexpr (j > 0) prev = M(q, j - 1);
      static_for<j, W1>([&](auto l) {
        V m = M(q, l);
        if constexpr (j > 0) {
          m = fnmadd(fj[l], prev, m);
          M(q, l) = m;
        }
        if constexpr (l == j) mj = m;
        dot[l] = fmadd(mj, m, dot[l]);
      });
    }
    const V rjj = R(j, j);
    V r = rjj, scale(T(1));
    V sigma = fmadd(r, r, dot[j]);
    if (!sigma_in_range<T>(sigma)) {  // rare: the column divided by its scale, its dots again
      scale = rescale_column<T>(M, rows, j, rjj, r, sigma);
      static_for<j + 1, W1>([&](auto l) {
        dot[l] = zero;
        for (int q = 0; q < rows; ++q) dot[l] = fmadd(M(q, j), M(q, l), dot[l]);
      });
    }
    const Reflection<T, V> ref(rjj, r, sigma, scale);
    static_for<j + 1, W1>([&](auto l) { f[l] = ref.apply_to_row(R(j, l), dot[l]); });
    R(j, j) = ref.rjj;
  });
  for (int q = 0; q < rows; ++q) {
    const V b = fnmadd(f[K], M(q, K - 1), M(q, K));
    resid = fmadd(b, b, resid);
  }
}

// The Gram route (CPU kernel, float64, power, Chebyshev and Legendre bases). For a
// well-conditioned curve the triangle [R | Q^T b] is also the Cholesky factor of the Gram matrix
// [A b]^T [A b] (rows k < K; the corner b^T b is kept apart), whose entries follow from the curve's
// moments: one pass over the rows with every sum in a register, where the reflections above reread
// and rewrite M once per column.
// The normal equations lose cond^2 eps; the caller takes the route only where the condition bound
// says one refinement step brings that back to QR's cond eps, and reflects otherwise.

// Column j of X = R^-1 for an upper-triangular R, given columns < j of X and xjj = 1 / R_jj
// (LAPACK's trti2). X may be R itself: column j is then inverted in place.
template <typename T, typename V>
C10_HOST_DEVICE C10_ALWAYS_INLINE void upper_inverse_column(const MatRef<V>& R, const MatRef<V>& X, int j,
                                                            const V& xjj) {
  const V zero(T(0)), neg = zero - xjj;
  X(j, j) = xjj;
  for (int i = 0; i < j; ++i) {
    V s = zero;
    for (int l = i; l < j; ++l) s = fmadd(X(i, l), R(l, j), s);
    X(i, j) = s * neg;
  }
}

// In place: the Gram matrix A^T A (rows k < K, columns k .. K - 1) becomes its Cholesky factor R,
// and inv[j] = 1 / R_jj. A non-positive pivot leaves NaN or infinity, which the condition test
// (cholesky_inverse_condition2) reports.
template <typename T, typename V>
C10_HOST_DEVICE inline void cholesky_factor(const MatRef<V>& R, int K, V* inv) {
  for (int j = 0; j < K; ++j) {
    V d = R(j, j);
    for (int i = 0; i < j; ++i) d = fnmadd(R(i, j), R(i, j), d);
    R(j, j) = vsqrt(d);
    inv[j] = V(T(1)) / R(j, j);
    for (int l = j + 1; l < K; ++l) {
      V s = R(j, l);
      for (int i = 0; i < j; ++i) s = fnmadd(R(i, j), R(i, l), s);
      R(j, l) = s * inv[j];
    }
  }
}

// x = (R^T R)^-1 h: forward, then back substitution with cholesky_factor's R and inv. x may be h.
template <typename T, typename V>
C10_HOST_DEVICE inline void cholesky_solve(const MatRef<V>& R, const V* inv, int K, const V* h, V* x) {
  for (int j = 0; j < K; ++j) {
    V v = h[j];
    for (int i = 0; i < j; ++i) v = fnmadd(R(i, j), x[i], v);
    x[j] = v * inv[j];
  }
  for (int k = K - 1; k >= 0; --k) {  // x[k + 1], the newest, last: it alone waits for the row before
    V v = x[k];
    for (int l = K - 1; l > k; --l) v = fnmadd(R(k, l), x[l], v);
    x[k] = v * inv[k];
  }
}

// qr_condition_bound's bound, as 1 / bound^2, from a Cholesky factor: R's column norms are sqrt(g),
// g the Gram matrix's diagonal, so ||R D^-1||_F^2 = K and ||D R^-1||_F^2 = sum_i g_i |row i of R^-1|^2,
// with no square root or division beyond inv. X (K x K) receives R^-1.
template <typename T, typename V>
C10_HOST_DEVICE inline V cholesky_inverse_condition2(const MatRef<V>& R, const V* inv, const V* g, int K,
                                                     const MatRef<V>& X) {
  const V zero(T(0));
  for (int j = 0; j < K; ++j) upper_inverse_column<T>(R, X, j, inv[j]);
  V sum = zero;
  for (int i = 0; i < K; ++i) {
    V row = zero;
    for (int j = i; j < K; ++j) row = fmadd(X(i, j), X(i, j), row);
    sum = fmadd(g[i], row, sum);
  }
  return sum * V(T(K));
}

// c = R^-1 Q^T b by back substitution, c[k * cs] for k < K.
template <typename T, typename V>
C10_HOST_DEVICE inline void qr_back_substitute(const MatRef<V>& R, int K, V* c, int64_t cs) {
  for (int k = K - 1; k >= 0; --k) {  // c[k + 1], the newest, last: it alone waits for the row before
    V v = R(k, K);
    for (int l = K - 1; l > k; --l) v = fnmadd(R(k, l), c[l * cs], v);
    c[k * cs] = v / R(k, k);
  }
}

// Zero exactly when R, Q^T b and the residual are all finite (x - x is 0 for finite x, NaN else).
template <typename T, typename V>
C10_HOST_DEVICE inline V qr_nonfinite_probe(const MatRef<V>& R, int K, const V& resid) {
  V s = resid - resid;
  for (int i = 0; i < K; ++i)
    for (int j = i; j <= K; ++j) s = s + (R(i, j) - R(i, j));
  return s;
}

// A lower bound of sigma_min / sigma_max of the column-scaled matrix A D^-1 (numpy's column
// scaling, D the column norms of A, which are those of R): 1 / (||R D^-1||_F ||D R^-1||_F).
// Above numpy's cut-off rcond every singular value survives numpy's rank test, so the QR answer is
// the full-rank least-squares solution; at or below it (or NaN, from a zero pivot) the caller
// re-solves by SVD. Overwrites R with R^-1 (LAPACK's trti2, column by column: column j needs only
// columns < j of the inverse) and its last column with D.
template <typename T, typename V>
C10_HOST_DEVICE inline V qr_condition_bound(const MatRef<V>& R, int K) {
  const V zero(T(0)), one(T(1));
  V scaled_norm2 = zero;  // ||R D^-1||_F^2: the number of non-zero columns
  for (int j = 0; j < K; ++j) {
    V amax = zero;
    for (int i = 0; i <= j; ++i) amax = vmax(amax, vabs(R(i, j)));
    const V scale = column_scale<T>(amax), inv = one / scale;
    V d2 = zero;  // |column / scale|^2
    for (int i = 0; i <= j; ++i) {
      const V e = R(i, j) * inv;
      d2 = fmadd(e, e, d2);
    }
    const V nonzero = amax > zero;
    scaled_norm2 = scaled_norm2 + select(nonzero, one, zero);
    R(j, K) = select(nonzero, vsqrt(d2) * scale, one);  // a zero column keeps scale 1, as numpy does
  }
  V inv_norm2 = zero;  // ||D R^-1||_F^2
  for (int j = 0; j < K; ++j) {
    upper_inverse_column<T>(R, R, j, one / R(j, j));
    for (int i = 0; i <= j; ++i) {
      const V e = R(i, K) * R(i, j);
      inv_norm2 = fmadd(e, e, inv_norm2);
    }
  }
  return one / vsqrt(scaled_norm2 * inv_norm2);
}

// The whole solve for one curve (scalar V = T): writes c, returns true when the curve must be
// re-solved by SVD (finite data, QR cannot certify full rank at rcond). Destroys R.
template <typename T>
C10_HOST_DEVICE inline bool qr_solve(const MatRef<T>& R, int K, T resid, T rcond, T* c, int64_t cs) {
  qr_back_substitute<T>(R, K, c, cs);
  if (!(qr_nonfinite_probe<T>(R, K, resid) == T(0))) return false;  // NaN and Inf propagate, as in torch
  return !(qr_condition_bound<T>(R, K) > rcond);
}

}  // namespace polyfit
