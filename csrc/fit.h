// Host side of polyfit::fit, shared by all devices: batched weighted least squares
//     min_c sum_n (w[r, n] (y[r, n] - sum_k c[r, k] P_k(t(x[r, n]))))^2     for every curve r,
// with numpy.polynomial's meaning of w. Checks, broadcasting of the batch shapes of x, y and w,
// and the reduction to (R, N) layouts; a device kernel does the rest (csrc/lstsq.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>

#include "ops.h"

namespace polyfit {

// x, y (R, N) and w (R, N) or undefined, any strides (0 included), in one compute dtype
// (float or double). Writes coeffs (R, K), resid (R,) and ill (R,) bool, all contiguous:
// ill[r] marks a curve with finite data whose QR cannot certify full rank; its coeffs and
// resid are then meaningless and the caller re-solves it by SVD (polyfit/fit.py).
using FitKernel = void (*)(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w, at::Tensor& coeffs,
                           at::Tensor& resid, at::Tensor& ill, Basis basis, const Domain& domain);

// (coeffs (*B, K), residuals (*B,), ill_conditioned (*B,) bool), *B the broadcast batch shape.
std::tuple<at::Tensor, at::Tensor, at::Tensor> fit(const at::Tensor& x, const at::Tensor& y,
                                                   const std::optional<at::Tensor>& weight, int64_t degree,
                                                   c10::string_view basis, OptDomain domain, FitKernel kernel);

#define POLYFIT_REGISTER_FIT(KERNEL)                                                                  \
  m.impl("fit", [](const at::Tensor& x, const at::Tensor& y, const std::optional<at::Tensor>& weight, \
                   int64_t degree, c10::string_view basis, ::polyfit::OptDomain domain) {              \
    return ::polyfit::fit(x, y, weight, degree, basis, domain, KERNEL);                                \
  })

}  // namespace polyfit
