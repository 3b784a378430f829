// The polynomial math of polyfit, written once for CPU and CUDA.
//
// Every template here is generic over the value type V: a scalar (float, double) on CUDA and in
// scalar loops, or a SIMD pack on CPU. V must provide V(T) (broadcast), +, -, * and the overloads
// fmadd(a, b, c) = a*b + c, fmsub(a, b, c) = a*b - c, fnmadd(a, b, c) = c - a*b.
//
// Definitions follow numpy.polynomial exactly (physicists' Hermite H, probabilists' HermiteE,
// Laguerre L), so numpy is an independent oracle. All six bases obey a three-term recurrence
//     P_0 = 1,  P_{k+1} = (a_k t + b_k) P_k - g_k P_{k-1}.
// Series are evaluated by Clenshaw (Horner for the power basis). Derivatives are taken on the
// coefficients (the derivative of a series is a series of one degree less in the same basis) by
// recurrences that never divide by t-dependent quantities, so they are exact at t = +-1.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>

// Every function here is C10_ALWAYS_INLINE: each is called once per SIMD pack in the innermost
// loops, where an out-of-line call (which compilers do choose for the bigger ones) costs more than the math.

namespace polyfit {

enum class Basis : int {
  Power = 0,
  Chebyshev = 1,
  Legendre = 2,
  Hermite = 3,
  HermiteE = 4,
  Laguerre = 5,
};

C10_HOST_DEVICE C10_ALWAYS_INLINE float fmadd(float a, float b, float c) { return a * b + c; }
C10_HOST_DEVICE C10_ALWAYS_INLINE double fmadd(double a, double b, double c) { return a * b + c; }
C10_HOST_DEVICE C10_ALWAYS_INLINE float fmsub(float a, float b, float c) { return a * b - c; }
C10_HOST_DEVICE C10_ALWAYS_INLINE double fmsub(double a, double b, double c) { return a * b - c; }
C10_HOST_DEVICE C10_ALWAYS_INLINE float fnmadd(float a, float b, float c) { return c - a * b; }
C10_HOST_DEVICE C10_ALWAYS_INLINE double fnmadd(double a, double b, double c) { return c - a * b; }

// 1/j, needed by the Legendre and Laguerre recurrences. A device may pass a table instead.
template <typename T>
struct Reciprocal {
  C10_HOST_DEVICE T operator()(int j) const { return T(1) / T(j); }
};

// ---------------------------------------------------------------------------------------------
// Domain mapping: t = offset + scale * x (numpy's mapparms onto the window [-1, 1]).
template <typename T>
struct Window {
  T scale = T(1);
  T offset = T(0);
  T lo = T(0);  // the domain [lo, hi]; only meaningful when mapped
  T hi = T(0);
  bool mapped = false;
};

// Points inside the domain map inside [-1, 1]; there, and only there, the rounding overshoot of the
// affine map is clamped, so t = +-1 exactly at the domain ends. Points outside extrapolate.
// Needs select(mask, a, b), inside(x, lo, hi) and clamp_unit(t) for V (scalar versions below).
C10_HOST_DEVICE C10_ALWAYS_INLINE bool inside(float x, float lo, float hi) { return x >= lo && x <= hi; }
C10_HOST_DEVICE C10_ALWAYS_INLINE bool inside(double x, double lo, double hi) { return x >= lo && x <= hi; }
C10_HOST_DEVICE C10_ALWAYS_INLINE float select(bool m, float a, float b) { return m ? a : b; }
C10_HOST_DEVICE C10_ALWAYS_INLINE double select(bool m, double a, double b) { return m ? a : b; }
C10_HOST_DEVICE C10_ALWAYS_INLINE float clamp_unit(float t) { return t < -1.f ? -1.f : (t > 1.f ? 1.f : t); }
C10_HOST_DEVICE C10_ALWAYS_INLINE double clamp_unit(double t) { return t < -1.0 ? -1.0 : (t > 1.0 ? 1.0 : t); }

template <typename T, typename V>
C10_HOST_DEVICE C10_ALWAYS_INLINE V map_to_window(const V& x, const Window<T>& w) {
  if (!w.mapped) return x;
  V t = fmadd(V(w.scale), x, V(w.offset));
  return select(inside(x, V(w.lo), V(w.hi)), clamp_unit(t), t);
}

// ---------------------------------------------------------------------------------------------
// Series: sum_{k<K} coef(k) * P_k(t), K >= 1, by Clenshaw's recurrence
//     b_k = c_k + (a_k t + b_k) b_{k+1} - g_{k+1} b_{k+2},   sum = b_0.
// coef(k) returns a V (a broadcast scalar, or one coefficient per SIMD lane).
template <Basis B, typename T, typename V, typename Coef, typename Inv = Reciprocal<T>>
C10_HOST_DEVICE C10_ALWAYS_INLINE V series(const Coef& coef, int K, const V& t, Inv inv = Inv()) {
  V b1 = coef(K - 1);
  if constexpr (B == Basis::Power) {  // Horner
    for (int k = K - 2; k >= 0; --k) b1 = fmadd(b1, t, coef(k));
    return b1;
  } else {
    V b2(T(0));
    const V tt = t + t;
    for (int k = K - 2; k >= 0; --k) {
      V b0;
      if constexpr (B == Basis::Chebyshev) {  // a_k = 2 (1 at k = 0), g = 1
        V a = tt;  // a copy, not `k == 0 ? t : tt`: a reference to either forces both into
        if (k == 0) a = t;  // memory on GPUs, where U-lane values otherwise stay in registers
        b0 = fmadd(a, b1, coef(k) - b2);
      } else if constexpr (B == Basis::Legendre) {  // a_k = (2k+1)/(k+1), g_{k+1} = (k+1)/(k+2)
        const T a = T(2 * k + 1) * inv(k + 1), g = T(k + 1) * inv(k + 2);
        b0 = fmadd(t * V(a), b1, fnmadd(V(g), b2, coef(k)));
      } else if constexpr (B == Basis::Hermite) {  // a_k = 2, g_{k+1} = 2(k+1)
        b0 = fmadd(tt, b1, fnmadd(V(T(2 * (k + 1))), b2, coef(k)));
      } else if constexpr (B == Basis::HermiteE) {  // a_k = 1, g_{k+1} = k+1
        b0 = fmadd(t, b1, fnmadd(V(T(k + 1)), b2, coef(k)));
      } else {  // Laguerre: (a_k t + b_k) = (2k+1-t)/(k+1), g_{k+1} = (k+1)/(k+2)
        const T r = inv(k + 1), g = T(k + 1) * inv(k + 2);
        const V m = fnmadd(t, V(r), V(T(2 * k + 1) * r));
        b0 = fmadd(m, b1, fnmadd(V(g), b2, coef(k)));
      }
      b2 = b1;
      b1 = b0;
    }
    return b1;
  }
}

// ---------------------------------------------------------------------------------------------
// Legendre series through the monic polynomials Q_k = P_k / A_k, A_k = prod_{j<k} (2j+1)/(j+1),
// whose recurrence Q_{k+1} = t Q_k - beta_k Q_{k-1}, beta_k = k^2 / (4k^2 - 1), is two operations a
// step where P_k's is three: sum_k c_k P_k = sum_k (c_k A_k) Q_k. A_k grows like 2^k, so the caller
// scales the coefficients (legendre_monic_coeffs) and keeps P_k's form where they would grow too large.
template <typename T>
C10_HOST_DEVICE inline T legendre_monic_beta(int k) {
  return T(double(k) * k / (4.0 * k * k - 1.0));
}

// c[k] *= A_k in place, for k < K; false (c then unusable) where sum_k |c_k A_k| is not below
// `limit` or not finite: there the Clenshaw sums of the monic form could overflow before P_k's would.
template <typename T>
C10_HOST_DEVICE inline bool legendre_monic_coeffs(T* c, int K, double limit) {
  double a = 1.0, total = 0.0;
  for (int k = 0; k < K; ++k) {
    c[k] = T(double(c[k]) * a);
    total += ::fabs(double(c[k]));
    a *= double(2 * k + 1) / double(k + 1);
  }
  return total < limit;  // false for NaN and infinity too
}

// sum_{k<K} coef(k) Q_k(t) by Clenshaw, with beta(k) = legendre_monic_beta(k) as a V.
template <typename T, typename V, typename Coef, typename Beta>
C10_HOST_DEVICE C10_ALWAYS_INLINE V series_monic_legendre(const Coef& coef, const Beta& beta, int K, const V& t) {
  V b1 = coef(K - 1), b2(T(0));
  for (int k = K - 2; k >= 0; --k) {
    const V b0 = fmadd(t, b1, fnmadd(beta(k + 1), b2, coef(k)));
    b2 = b1;
    b1 = b0;
  }
  return b1;
}

// ---------------------------------------------------------------------------------------------
// Weighted basis values w P_0(t) .. w P_{K-1}(t) by the forward recurrence (which is linear, so
// starting it from w instead of 1 folds the weight in); sink(k, w P_k) receives each.
template <Basis B, typename T, typename V, typename Sink, typename Inv = Reciprocal<T>>
C10_HOST_DEVICE C10_ALWAYS_INLINE void basis_values(const V& t, const V& w, int K, Sink&& sink, Inv inv = Inv()) {
  V p0 = w;
  sink(0, p0);
  if (K < 2) return;
  V p1;
  if constexpr (B == Basis::Hermite) {
    p1 = (t + t) * w;
  } else if constexpr (B == Basis::Laguerre) {
    p1 = fnmadd(t, w, w);
  } else {
    p1 = t * w;
  }
  sink(1, p1);
  const V tt = t + t;
  for (int k = 1; k + 1 < K; ++k) {
    V p2;
    if constexpr (B == Basis::Power) {
      p2 = p1 * t;
    } else if constexpr (B == Basis::Chebyshev) {
      p2 = fmsub(tt, p1, p0);
    } else if constexpr (B == Basis::Legendre) {  // ((2k+1) t P_k - k P_{k-1}) / (k+1)
      const T r = inv(k + 1);
      p2 = fmsub(t * V(T(2 * k + 1) * r), p1, V(T(k) * r) * p0);
    } else if constexpr (B == Basis::Hermite) {  // 2t H_k - 2k H_{k-1}
      p2 = fmsub(tt, p1, V(T(2 * k)) * p0);
    } else if constexpr (B == Basis::HermiteE) {  // t He_k - k He_{k-1}
      p2 = fmsub(t, p1, V(T(k)) * p0);
    } else {  // Laguerre: ((2k+1-t) L_k - k L_{k-1}) / (k+1)
      const T r = inv(k + 1);
      p2 = fmsub(fnmadd(t, V(r), V(T(2 * k + 1) * r)), p1, V(T(k) * r) * p0);
    }
    sink(k + 1, p2);
    p0 = p1;
    p1 = p2;
  }
}

// ---------------------------------------------------------------------------------------------
// Basis values and first derivatives together: sink(k, P_k, P_k') for k < K. The derivatives follow
// the recurrence differentiated term by term,
//     P'_{k+1} = (a_k t + b_k) P'_k + a_k P_k - g_k P'_{k-1},
// which streams with O(1) state (no coefficient array, so one thread or lane per point suffices)
// and, like the values, never divides by a t-dependent quantity: exact at t = +-1.
template <Basis B, typename T, typename V, typename Sink, typename Inv = Reciprocal<T>>
C10_HOST_DEVICE inline void basis_values_and_derivatives(const V& t, int K, Sink&& sink, Inv inv = Inv()) {
  V p0(T(1)), d0(T(0));
  sink(0, p0, d0);
  if (K < 2) return;
  V p1, d1;
  if constexpr (B == Basis::Hermite) {
    p1 = t + t;
    d1 = V(T(2));
  } else if constexpr (B == Basis::Laguerre) {
    p1 = V(T(1)) - t;
    d1 = V(T(-1));
  } else {
    p1 = t;
    d1 = V(T(1));
  }
  sink(1, p1, d1);
  const V tt = t + t;
  for (int k = 1; k + 1 < K; ++k) {
    V p2, d2;
    if constexpr (B == Basis::Power) {  // x^{k+1}' = t (x^k)' + x^k
      p2 = p1 * t;
      d2 = fmadd(d1, t, p1);
    } else if constexpr (B == Basis::Chebyshev) {  // T'_{k+1} = 2t T'_k + 2 T_k - T'_{k-1}
      p2 = fmsub(tt, p1, p0);
      d2 = fmsub(tt, d1, d0) + (p1 + p1);
    } else if constexpr (B == Basis::Legendre) {  // ((2k+1) (t P'_k + P_k) - k P'_{k-1}) / (k+1)
      const T r = inv(k + 1);
      const V a(T(2 * k + 1) * r), g(T(k) * r);
      p2 = fmsub(t * a, p1, g * p0);
      d2 = fmsub(a, fmadd(t, d1, p1), g * d0);
    } else if constexpr (B == Basis::Hermite) {  // 2t H'_k + 2 H_k - 2k H'_{k-1}
      const V g(T(2 * k));
      p2 = fmsub(tt, p1, g * p0);
      d2 = fmsub(tt, d1, g * d0) + (p1 + p1);
    } else if constexpr (B == Basis::HermiteE) {  // t He'_k + He_k - k He'_{k-1}
      const V g = V(T(k));
      p2 = fmsub(t, p1, g * p0);
      d2 = fmsub(t, d1, g * d0) + p1;
    } else {  // Laguerre: ((2k+1-t) L'_k - L_k - k L'_{k-1}) / (k+1)
      const T r = inv(k + 1);
      const V m = fnmadd(t, V(r), V(T(2 * k + 1) * r)), g(T(k) * r);
      p2 = fmsub(m, p1, g * p0);
      d2 = fnmadd(V(r), p1, fmsub(m, d1, g * d0));
    }
    sink(k + 1, p2, d2);
    p0 = p1;
    p1 = p2;
    d0 = d1;
    d1 = d2;
  }
}

// ---------------------------------------------------------------------------------------------
// Derivative of a series on its coefficients: d[0..K-2] are the coefficients of
// d/dt sum_{k<K} c_k P_k(t), in the same basis (numpy's polyder, chebder, ...). K >= 2;
// c and d must not overlap. Only integer constants multiply; nothing divides.
template <Basis B, typename T, typename V>
C10_HOST_DEVICE C10_ALWAYS_INLINE void derivative(const V* c, int K, V* d) {
  if constexpr (B == Basis::Power || B == Basis::Hermite || B == Basis::HermiteE) {
    // x^k' = k x^{k-1};  H_k' = 2k H_{k-1};  He_k' = k He_{k-1}
    const int f = B == Basis::Hermite ? 2 : 1;
    for (int j = 0; j + 1 < K; ++j) d[j] = V(T(f * (j + 1))) * c[j + 1];
  } else if constexpr (B == Basis::Chebyshev) {
    // d_{k-1} = d_{k+1} + 2k c_k for k = K-1 .. 1, then d_0 halves (T_k' = k U_{k-1}).
    for (int k = K - 1; k >= 1; --k) {
      V v = V(T(2 * k)) * c[k];
      d[k - 1] = k + 1 <= K - 2 ? d[k + 1] + v : v;
    }
    d[0] = V(T(0.5)) * d[0];
  } else if constexpr (B == Basis::Legendre) {
    // P_{k+1}' - P_{k-1}' = (2k+1) P_k:  d_{j-1} = (2j-1) (c_j + c_{j+2} + c_{j+4} + ...)
    V e1(T(0)), e2(T(0));  // running parity sums e_{j+1}, e_{j+2}
    for (int j = K - 1; j >= 1; --j) {
      V e = c[j] + e2;
      d[j - 1] = V(T(2 * j - 1)) * e;
      e2 = e1;
      e1 = e;
    }
  } else {  // Laguerre: L_k' = -(L_0 + ... + L_{k-1}):  d_j = -(c_{j+1} + ... + c_{K-1})
    V s(T(0));
    for (int j = K - 1; j >= 1; --j) {
      s = s + c[j];
      d[j - 1] = V(T(0)) - s;
    }
  }
}

// The transpose of derivative(): h[0..K-1] = D^T g for g[0..K-2]. It carries a gradient with
// respect to derivative coefficients back to the original coefficients. g and h must not overlap.
template <Basis B, typename T, typename V>
C10_HOST_DEVICE C10_ALWAYS_INLINE void derivative_transpose(const V* g, int K, V* h) {
  h[0] = V(T(0));
  if constexpr (B == Basis::Power || B == Basis::Hermite || B == Basis::HermiteE) {
    const int f = B == Basis::Hermite ? 2 : 1;
    for (int j = 0; j + 1 < K; ++j) h[j + 1] = V(T(f * (j + 1))) * g[j];
  } else if constexpr (B == Basis::Chebyshev) {
    // h_k = 2k (g'_{k-1} + g'_{k-3} + ...), g'_0 = g_0 / 2
    V r1(T(0)), r2(T(0));  // r_{k-1}, r_{k-2}
    for (int k = 1; k < K; ++k) {
      V gk = k == 1 ? V(T(0.5)) * g[0] : g[k - 1];
      V r = gk + r2;
      h[k] = V(T(2 * k)) * r;
      r2 = r1;
      r1 = r;
    }
  } else if constexpr (B == Basis::Legendre) {
    // h_k = (2k-1) g_{k-1} + (2k-5) g_{k-3} + ...
    V q1(T(0)), q2(T(0));
    for (int k = 1; k < K; ++k) {
      V q = fmadd(V(T(2 * k - 1)), g[k - 1], q2);
      h[k] = q;
      q2 = q1;
      q1 = q;
    }
  } else {  // Laguerre: h_k = -(g_0 + ... + g_{k-1})
    V p(T(0));
    for (int k = 1; k < K; ++k) {
      p = p + g[k - 1];
      h[k] = V(T(0)) - p;
    }
  }
}

}  // namespace polyfit

// Runs the lambda __VA_ARGS__ with `kBasis` bound to BASIS as a compile-time constant.
#define POLYFIT_BASIS_CASE(NAME, ...)                       \
  case ::polyfit::Basis::NAME: {                             \
    constexpr ::polyfit::Basis kBasis = ::polyfit::Basis::NAME; \
    __VA_ARGS__();                                           \
    break;                                                   \
  }
#define POLYFIT_DISPATCH_BASIS(BASIS, ...)            \
  switch (BASIS) {                                    \
    POLYFIT_BASIS_CASE(Power, __VA_ARGS__)            \
    POLYFIT_BASIS_CASE(Chebyshev, __VA_ARGS__)        \
    POLYFIT_BASIS_CASE(Legendre, __VA_ARGS__)         \
    POLYFIT_BASIS_CASE(Hermite, __VA_ARGS__)          \
    POLYFIT_BASIS_CASE(HermiteE, __VA_ARGS__)         \
    POLYFIT_BASIS_CASE(Laguerre, __VA_ARGS__)         \
  }
