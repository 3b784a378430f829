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

// Folds `rows` rows M (rows x (K + 1): basis values, then the right-hand side) into the triangle
// R (K x (K + 1)) and adds the rows' share of the residual to `resid`. M is overwritten.
// The reflection of column j acts on R's row j and M's rows only: R's rows below j are zero there.
// When the column needs it, the reflection is built from the column divided by its scale a
// (v^ = v / a, h^ = |v^|^2 / 2): the update f v = (v.col / h) v equals (v^.col / h^) v^, and only
// R_jj = a alpha^ needs a back.
template <typename T, typename V>
C10_HOST_DEVICE inline void qr_update(const MatRef<V>& R, const MatRef<V>& M, int rows, int K, V& resid) {
  const V zero(T(0)), one(T(1));
  // sigma within [lo, hi]: no square that matters underflowed (rows * min < eps * sigma for up to
  // 1 / eps rows), and neither h <= 2 sigma nor the products v0 R_jl, M_qj M_ql with columns up to
  // max^(3/4) / rows overflow.
  using lim = std::numeric_limits<T>;
  const V lo(lim::min() / (lim::epsilon() * lim::epsilon())), hi(vsqrt(lim::max()));
  for (int j = 0; j < K; ++j) {
    const V rjj = R(j, j);
    V r = rjj, scale = one;
    V sigma = r * r;
    for (int q = 0; q < rows; ++q) sigma = fmadd(M(q, j), M(q, j), sigma);
    if (!all_lanes((sigma > lo) & (sigma < hi))) {  // rare: rescale the column (NaN lanes too)
      V amax = vabs(rjj);
      for (int q = 0; q < rows; ++q) amax = vmax(amax, vabs(M(q, j)));
      scale = column_scale<T>(amax);
      const V inv = one / scale;
      r = rjj * inv;
      sigma = r * r;
      for (int q = 0; q < rows; ++q) {
        const V m = M(q, j) * inv;
        M(q, j) = m;  // M's column j is read again only scaled
        sigma = fmadd(m, m, sigma);
      }
    }
    const V norm = vsqrt(sigma);
    // alpha takes the sign opposite to R_jj, so v0 = R_jj - alpha never cancels and h >= sigma.
    const V alpha = select(rjj < zero, norm, zero - norm);
    const V v0 = r - alpha;
    const V h = sigma - r * alpha;
    // A zero column (h = 0) needs no reflection; the guard keeps 0/0 out of that lane.
    const V hinv = select(h > zero, one / h, zero);
    for (int l = j + 1; l <= K; ++l) {
      V s = v0 * R(j, l);
      for (int q = 0; q < rows; ++q) s = fmadd(M(q, j), M(q, l), s);
      const V f = s * hinv;
      R(j, l) = fnmadd(f, v0, R(j, l));
      for (int q = 0; q < rows; ++q) M(q, l) = fnmadd(f, M(q, j), M(q, l));
    }
    R(j, j) = select(h > zero, alpha * scale, rjj);
  }
  for (int q = 0; q < rows; ++q) resid = fmadd(M(q, K), M(q, K), resid);
}

// c = R^-1 Q^T b by back substitution, c[k * cs] for k < K.
template <typename T, typename V>
C10_HOST_DEVICE inline void qr_back_substitute(const MatRef<V>& R, int K, V* c, int64_t cs) {
  for (int k = K - 1; k >= 0; --k) {
    V v = R(k, K);
    for (int l = k + 1; l < K; ++l) v = fnmadd(R(k, l), c[l * cs], v);
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
    R(j, j) = one / R(j, j);
    const V ajj = zero - R(j, j);
    for (int i = 0; i < j; ++i) {
      V s = zero;
      for (int l = i; l < j; ++l) s = fmadd(R(i, l), R(l, j), s);
      R(i, j) = s * ajj;
    }
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
