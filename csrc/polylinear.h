// Host side of the Kolmogorov-Arnold layer (polyfit::polylinear), shared by all devices:
//     y[b, o] = bias[o] + sum_i sum_k weight[o, i, k] P_k(map(x[b, i])).
// The batch is cut into tiles; per tile a device kernel writes the basis of map(x) and GEMMs contract
// it with the weight, so the (B, in, K) basis never exists whole and is never kept for backward.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <array>
#include <optional>
#include <tuple>

#include "basis.h"

namespace polyfit {

enum class InputMap : int { Identity = 0, Tanh = 1 };

// Device kernels; tensors arrive in float or double (half types are computed in float).
//   basis:  x (n, in) any strides -> phi (n, K, in) contiguous, phi[r, k, i] = P_k(map(x[r, i]))
//   grad_x: x (n, in), g (n, K, in) contiguous -> gx (n, in) contiguous,
//           gx[r, i] = map'(x[r, i]) * sum_k g[r, k, i] P_k'(map(x[r, i]));
//           when phi is defined, also the basis tile as `basis` writes it (one pass for both:
//           the derivative recurrence runs on the values anyway). phi may be g itself: each
//           element of g is read before its place in phi is written.
// The degree-major (n, K, in) layout lets a kernel write and read whole SIMD vectors / coalesced
// rows along `in`, and pairs with the weight stored degree-major (see polyfit/nn.py).
using PolyLinearBasisKernel = void (*)(const at::Tensor& x, at::Tensor& phi, Basis basis, InputMap map);
using PolyLinearGradXKernel = void (*)(const at::Tensor& x, const at::Tensor& g, at::Tensor& gx, at::Tensor& phi,
                                       Basis basis, InputMap map);

struct PolyLinearKernels {
  PolyLinearBasisKernel basis;
  PolyLinearGradXKernel grad_x;
};

at::Tensor polylinear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      c10::string_view basis, std::optional<c10::string_view> input_map,
                      const PolyLinearKernels& kernels);

// (grad_x, grad_weight), undefined where output_mask is false. The bias gradient is grad.sum(0).
std::tuple<at::Tensor, at::Tensor> polylinear_backward(const at::Tensor& grad, const at::Tensor& x,
                                                       const at::Tensor& weight, c10::string_view basis,
                                                       std::optional<c10::string_view> input_map,
                                                       std::array<bool, 2> output_mask,
                                                       const PolyLinearKernels& kernels);

#define POLYFIT_REGISTER_POLYLINEAR(KERNELS)                                                          \
  m.impl("polylinear", [](const at::Tensor& x, const at::Tensor& weight,                              \
                          const std::optional<at::Tensor>& bias, c10::string_view basis,              \
                          std::optional<c10::string_view> input_map) {                                \
    return ::polyfit::polylinear(x, weight, bias, basis, input_map, KERNELS);                          \
  });                                                                                                 \
  m.impl("polylinear_backward",                                                                       \
         [](const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,                    \
            c10::string_view basis, std::optional<c10::string_view> input_map,                        \
            std::array<bool, 2> output_mask) {                                                        \
           return ::polyfit::polylinear_backward(grad, x, weight, basis, input_map, output_mask,      \
                                                 KERNELS);                                            \
         })

}  // namespace polyfit
