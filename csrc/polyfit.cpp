// polyfit._C: the op schemas (defined once, here) and the eager entry points of the two ops the
// Python API calls most. Kernels register themselves per dispatch key: csrc/cpu (one library per
// CPU instruction set, chosen at import) and csrc/cuda (linked into this module when built with CUDA).
#include <torch/library.h>
#include <torch/python.h>

#include <string>

#include "ops.h"

// polyfit.polyval and polyfit.features call these in eager mode instead of torch.ops.polyfit.*: the
// same ops through the same dispatcher (autograd, functorch and Python dispatch modes included),
// without the op packet's boxed parsing of Python arguments, which cost ~1.5 us of a 4 us call at
// 10^4 points. polyfit/_ops.py keeps torch.ops for what only it handles: torch.compile's tracing
// and __torch_function__ overrides. The GIL is released while the op runs, as torch's ops do.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.def(
      "polyval",
      [](const at::Tensor& x, const at::Tensor& coeffs, const std::string& basis, int64_t derivative) {
        return polyfit::polyval_op(x, coeffs, basis, std::nullopt, derivative);
      },
      py::arg("x"), py::arg("coeffs"), py::arg("basis"), py::arg("derivative"),
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "features",
      [](const at::Tensor& x, int64_t degree, const std::string& basis, bool increasing) {
        return polyfit::features_op(x, degree, basis, std::nullopt, increasing);
      },
      py::arg("x"), py::arg("degree"), py::arg("basis"), py::arg("increasing"),
      py::call_guard<py::gil_scoped_release>());
}

TORCH_LIBRARY(polyfit, m) {
  // Column k of the result is P_k(t) (reversed when increasing=False); shape x.shape + (degree+1,).
  m.def("features(Tensor x, int degree, str basis, float[]? domain, bool increasing) -> Tensor");
  // d^derivative/dx^derivative of sum_k coeffs[..., k] P_k(t); coeffs (K,) or (*B, K) with x (*B, N).
  m.def("polyval(Tensor x, Tensor coeffs, str basis, float[]? domain, int derivative) -> Tensor");
  // Gradients of polyval(derivative) for x and coeffs (None where output_mask is False).
  m.def(
      "polyval_backward(Tensor grad, Tensor x, Tensor coeffs, str basis, float[]? domain, "
      "int derivative, bool[2] output_mask) -> (Tensor, Tensor)");
  // Kolmogorov-Arnold layer: y[b, o] = bias[o] + sum_i sum_k weight[o, i, k] P_k(map(x[b, i])), x (B, in),
  // weight (out, in, degree + 1), map tanh or identity (input_map None). Nothing of the basis is kept.
  m.def("polylinear(Tensor x, Tensor weight, Tensor? bias, str basis, str? input_map) -> Tensor");
  // (grad_x, grad_weight) of polylinear (None where output_mask is False); grad_bias is grad.sum(0).
  m.def(
      "polylinear_backward(Tensor grad, Tensor x, Tensor weight, str basis, str? input_map, "
      "bool[2] output_mask) -> (Tensor, Tensor)");
  // Weighted least squares per curve: x, y, weight (*B, N) -> (coeffs (*B, degree+1), residuals (*B,),
  // ill_conditioned (*B,) bool: curves to re-solve by SVD, see polyfit/fit.py).
  m.def(
      "fit(Tensor x, Tensor y, Tensor? weight, int degree, str basis, float[]? domain) "
      "-> (Tensor, Tensor, Tensor)");
}
