// Host side of every op, shared by all devices: argument checks, broadcasting and the reduction of
// layouts to the canonical 2-D forms the device kernels see. A device file supplies only kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Allocator.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <c10/util/string_view.h>
#include <tuple>
#include <utility>

#include "basis.h"

namespace polyfit {

using OptDomain = std::optional<at::ArrayRef<double>>;

constexpr int64_t kMaxDegree = int64_t(1) << 20;      // keeps 2k+1 and friends far inside int
constexpr int64_t kMaxDerivative = int64_t(1) << 30;  // polyfit/_ops.py's MAX_DERIVATIVE

// The basis called `name`, if there is one (inline: polyfit._C's entry points use it too).
inline std::optional<Basis> find_basis(c10::string_view name) {
  constexpr std::pair<const char*, Basis> kNames[] = {
      {"power", Basis::Power},       {"chebyshev", Basis::Chebyshev}, {"legendre", Basis::Legendre},
      {"hermite", Basis::Hermite},   {"hermite_e", Basis::HermiteE},  {"laguerre", Basis::Laguerre},
  };
  for (const auto& [n, b] : kNames)
    if (name == n) return b;
  return std::nullopt;
}
// The basis called `name`; an error naming the argument otherwise.
Basis parse_basis(c10::string_view name);

// The affine map of domain=(a, b) onto [-1, 1]; identity when no domain is given.
struct Domain {
  double scale = 1.0, offset = 0.0, lo = 0.0, hi = 0.0;
  bool mapped = false;

  template <typename T>
  Window<T> window() const {
    return Window<T>{T(scale), T(offset), T(lo), T(hi), mapped};
  }
};
Domain parse_domain(OptDomain domain);

// Device kernels. Tensors arrive in one floating dtype (the op's result dtype).
//   features:        x (M,) any stride              -> out (M, K) contiguous
//   series:          x (R, N), coeffs (R, K), any strides (0 included) -> y, R x N contiguous (any shape)
//                    y = d^nu/dx^nu sum_k coeffs[r, k] P_k(t(x[r, n])), nu = derivative < K
//   series_backward: grad (R, N) any strides; writes grad_x (R, N) = grad * (order nu+1 series)
//                    and grad_coeffs (R, K) = sum_n grad * d^nu/dx^nu P_k(t), where defined.
using FeaturesKernel = void (*)(const at::Tensor& x, at::Tensor& out, Basis basis,
                                const Domain& domain, bool increasing);
using SeriesKernel = void (*)(const at::Tensor& x, const at::Tensor& coeffs, at::Tensor& y,
                              Basis basis, const Domain& domain, int64_t derivative);
using SeriesBackwardKernel = void (*)(const at::Tensor& grad, const at::Tensor& x,
                                      const at::Tensor& coeffs, at::Tensor& grad_x,
                                      at::Tensor& grad_coeffs, Basis basis, const Domain& domain,
                                      int64_t derivative);

struct Kernels {
  FeaturesKernel features;
  SeriesKernel series;
  SeriesBackwardKernel series_backward;
  c10::Allocator* outputs = nullptr;  // the large outputs' memory; nullptr: torch's allocator
};

at::Tensor features(const at::Tensor& x, int64_t degree, c10::string_view basis, OptDomain domain,
                    bool increasing, const Kernels& kernels);

at::Tensor polyval(const at::Tensor& x, const at::Tensor& coeffs, c10::string_view basis,
                   OptDomain domain, int64_t derivative, const Kernels& kernels);

std::tuple<at::Tensor, at::Tensor> polyval_backward(const at::Tensor& grad, const at::Tensor& x,
                                                    const at::Tensor& coeffs,
                                                    c10::string_view basis, OptDomain domain,
                                                    int64_t derivative,
                                                    std::array<bool, 2> output_mask,
                                                    const Kernels& kernels);

// The ops called through the dispatcher from C++, every dispatch key included (csrc/autograd.cpp).
at::Tensor polyval_op(const at::Tensor& x, const at::Tensor& coeffs, c10::string_view basis, OptDomain domain,
                      int64_t derivative);
at::Tensor features_op(const at::Tensor& x, int64_t degree, c10::string_view basis, OptDomain domain,
                       bool increasing);

// Registers the three ops for one dispatch key with the given kernels.
#define POLYFIT_REGISTER_KERNELS(KERNELS)                                                      \
  m.impl("features", [](const at::Tensor& x, int64_t degree, c10::string_view basis,          \
                        ::polyfit::OptDomain domain, bool increasing) {                        \
    return ::polyfit::features(x, degree, basis, domain, increasing, KERNELS);                  \
  });                                                                                          \
  m.impl("polyval", [](const at::Tensor& x, const at::Tensor& coeffs, c10::string_view basis, \
                       ::polyfit::OptDomain domain, int64_t derivative) {                      \
    return ::polyfit::polyval(x, coeffs, basis, domain, derivative, KERNELS);                   \
  });                                                                                          \
  m.impl("polyval_backward",                                                                   \
         [](const at::Tensor& grad, const at::Tensor& x, const at::Tensor& coeffs,             \
            c10::string_view basis, ::polyfit::OptDomain domain, int64_t derivative,           \
            std::array<bool, 2> output_mask) {                                                 \
           return ::polyfit::polyval_backward(grad, x, coeffs, basis, domain, derivative,      \
                                              output_mask, KERNELS);                           \
         })

}  // namespace polyfit
