// CPU kernels of the Kolmogorov-Arnold layer: the basis tile of map(x), and grad_x from G = dY W.
// Lanes run along in_features, so the degree-major tiles are read and written whole SIMD packs at
// a time. The math is basis.h; the host side (tiles, GEMMs) is csrc/polylinear.cpp.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../basis.h"
#include "../polylinear.h"
#include "pack.h"

namespace polyfit::cpu {
namespace {

// tanh of float lanes, within a few ulp of float64 tanh, at a fraction of Sleef's 1-ulp tanhf (which
// was a third of the layer's non-GEMM time). |x| < 0.55: x + x^3 P(x^2), P a degree-4 least-squares
// fit of (tanh x - x) / x^3 (1 ulp); beyond: (1 - e) / (1 + e), e = exp(-2|x|), free of cancellation
// there, and exactly +-1 once e underflows. NaN propagates. Doubles keep Sleef's tanh.
inline Pack<float> tanh_lanes(const Pack<float>& x) {
  using V = Vectorized<float>;
  const V p0(-0.33333316445350647f), p1(0.13332565128803253f), p2(-0.053850289434194565f),
      p3(0.02106410823762417f), p4(-0.006264324299991131f);
  Pack<float> r;
  for (int u = 0; u < kU; ++u) {
    const V ax = x.v[u].abs();
    const V z = x.v[u] * x.v[u];
    V p = at::vec::fmadd(z, p4, p3);
    p = at::vec::fmadd(z, p, p2);
    p = at::vec::fmadd(z, p, p1);
    p = at::vec::fmadd(z, p, p0);
    const V small = at::vec::fmadd(x.v[u] * z, p, x.v[u]);
    const V e = (V(-2.f) * ax).exp_u20();
    const V large = ((V(1.f) - e) / (V(1.f) + e)) | (x.v[u] & V(-0.f));  // sign of x
    r.v[u] = V::blendv(large, small, ax < V(0.55f));
  }
  return r;
}
inline Pack<double> tanh_lanes(const Pack<double>& x) { return vtanh(x); }

template <typename T>
inline Pack<T> apply_map(const Pack<T>& x, InputMap map) {
  return map == InputMap::Tanh ? tanh_lanes(x) : x;
}

template <typename scalar_t>
void polylinear_basis_kernel(const Tensor& x, Tensor& phi, Basis basis, InputMap map) {
  using T = scalar_t;
  using P = Pack<T>;
  constexpr int L = P::kLanes;
  const int64_t n = x.size(0), in = x.size(1), sr = x.stride(0), si = x.stride(1);
  const int K = static_cast<int>(phi.size(1));
  const int64_t blocks = ceil_div(in, L);
  const T* xp = x.const_data_ptr<T>();
  T* op = phi.mutable_data_ptr<T>();
  POLYFIT_DISPATCH_BASIS(basis, [&] {
    at::parallel_for(0, n * blocks, grain(int64_t(L) * K), [&](int64_t b0, int64_t b1) {
      const Reciprocals<T> inv(K);
      for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t r = blk / blocks, i0 = (blk % blocks) * L;
        const int cnt = static_cast<int>(std::min<int64_t>(L, in - i0));
        const P t = apply_map(load_lanes<T>(xp + r * sr + i0 * si, si, cnt, T(0)), map);
        T* o = op + r * K * in + i0;
        basis_values<kBasis, T>(t, P(T(1)), K,
                                [&](int k, const P& p) { store_lanes(p, o + int64_t(k) * in, cnt); }, inv.lookup());
      }
    });
  });
}

template <typename scalar_t, bool kWritePhi>
void polylinear_grad_x_kernel(const Tensor& x, const Tensor& g, Tensor& gx, Tensor& phi, Basis basis, InputMap map) {
  using T = scalar_t;
  using P = Pack<T>;
  constexpr int L = P::kLanes;
  const int64_t n = x.size(0), in = x.size(1), sr = x.stride(0), si = x.stride(1);
  const int K = static_cast<int>(g.size(1));
  const int64_t blocks = ceil_div(in, L);
  const T* xp = x.const_data_ptr<T>();
  const T* gp = g.const_data_ptr<T>();
  T* op = gx.mutable_data_ptr<T>();
  T* php = kWritePhi ? phi.mutable_data_ptr<T>() : nullptr;
  POLYFIT_DISPATCH_BASIS(basis, [&] {
    at::parallel_for(0, n * blocks, grain(int64_t(L) * K * 3), [&](int64_t b0, int64_t b1) {
      const Reciprocals<T> inv(K);
      for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t r = blk / blocks, i0 = (blk % blocks) * L;
        const int cnt = static_cast<int>(std::min<int64_t>(L, in - i0));
        const P t = apply_map(load_lanes<T>(xp + r * sr + i0 * si, si, cnt, T(0)), map);
        const T* gr = gp + r * K * in + i0;
        T* o = kWritePhi ? php + r * K * in + i0 : nullptr;
        P acc(T(0));
        basis_values_and_derivatives<kBasis, T>(t, K, [&](int k, const P& p, const P& d) {
          // read G_k before P_k is stored: phi may overwrite g in place
          if (k > 0) acc = fmadd(load_lanes<T>(gr + int64_t(k) * in, 1, cnt, T(0)), d, acc);
          if constexpr (kWritePhi) store_lanes(p, o + int64_t(k) * in, cnt);
        }, inv.lookup());
        if (map == InputMap::Tanh) acc = acc * fnmadd(t, t, P(T(1)));  // tanh' = 1 - tanh^2, safe at saturation
        store_lanes(acc, op + r * in + i0, cnt);
      }
    });
  });
}

void polylinear_basis_cpu(const Tensor& x, Tensor& phi, Basis basis, InputMap map) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "polyfit_polylinear_basis",
                             [&] { polylinear_basis_kernel<scalar_t>(x, phi, basis, map); });
}

void polylinear_grad_x_cpu(const Tensor& x, const Tensor& g, Tensor& gx, Tensor& phi, Basis basis, InputMap map) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "polyfit_polylinear_grad_x", [&] {
    if (phi.defined()) {
      polylinear_grad_x_kernel<scalar_t, true>(x, g, gx, phi, basis, map);
    } else {
      polylinear_grad_x_kernel<scalar_t, false>(x, g, gx, phi, basis, map);
    }
  });
}

const PolyLinearKernels kCpuPolyLinearKernels{&polylinear_basis_cpu, &polylinear_grad_x_cpu};

}  // namespace
}  // namespace polyfit::cpu

TORCH_LIBRARY_IMPL(polyfit, CPU, m) {
  POLYFIT_REGISTER_POLYLINEAR(::polyfit::cpu::kCpuPolyLinearKernels);
}
