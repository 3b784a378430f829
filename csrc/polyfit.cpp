// polyfit._C: the op schemas (defined once, here) and the Python module stub.
// Kernels register themselves per dispatch key: csrc/cpu (one library per CPU instruction set,
// chosen at import) and csrc/cuda (linked into this module when built with CUDA).
#include <Python.h>
#include <torch/library.h>

// Importing polyfit._C loads this library and with it the TORCH_LIBRARY registrations below.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
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
