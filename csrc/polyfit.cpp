// polyfit._C: the op schemas (defined once, here) and the eager entry points of the two ops the
// Python API calls most. Kernels register themselves per dispatch key: csrc/cpu (one library per
// CPU instruction set, chosen at import) and csrc/cuda (linked into this module when built with CUDA).
#include <torch/library.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/python.h>

#include <optional>
#include <string>

#include "ops.h"

namespace {

namespace py = pybind11;

// Whether the compiled ops serve tensors on t's device: the CPU, or a GPU when polyfit was built
// with CUDA kernels.
bool kernels_for(const at::Tensor& t) {
  const auto type = t.device().type();
  if (type == c10::DeviceType::CPU) return true;
  static const bool cuda = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("polyfit::polyval", "")
                               .hasKernelForDispatchKey(c10::DispatchKey::CUDA);
  return type == c10::DeviceType::CUDA && cuda;
}

// A plain tensor (or Parameter), with no __torch_function__ mode active.
const at::Tensor* plain_tensor(py::handle h) {
  return THPVariable_CheckExact(h.ptr()) ? &THPVariable_Unpack(h.ptr()) : nullptr;
}

// A basis name the ops know, else nullopt.
std::optional<c10::string_view> known_basis(py::handle h) {
  if (!PyUnicode_CheckExact(h.ptr())) return std::nullopt;
  Py_ssize_t size = 0;
  const char* s = PyUnicode_AsUTF8AndSize(h.ptr(), &size);
  if (s == nullptr) {
    PyErr_Clear();
    return std::nullopt;
  }
  const c10::string_view name(s, static_cast<size_t>(size));
  if (!polyfit::find_basis(name)) return std::nullopt;
  return name;
}

// An int (not a bool) in [lo, hi], else nullopt.
std::optional<int64_t> int_in(py::handle h, int64_t lo, int64_t hi) {
  if (!PyLong_CheckExact(h.ptr())) return std::nullopt;
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(h.ptr(), &overflow);
  if (overflow != 0 || v < lo || v > hi) return std::nullopt;
  return v;
}

// The op's result, wrapped as torch wraps its own.
template <typename Op>
py::object run_released(Op&& op) {
  at::Tensor out;
  {
    py::gil_scoped_release no_gil;  // as torch's ops do
    out = op();
  }
  return py::reinterpret_steal<py::object>(THPVariable_Wrap(std::move(out)));
}

}  // namespace

// polyfit.polyval and polyfit.features call these in eager mode instead of torch.ops.polyfit.*: the
// same ops through the same dispatcher (autograd, functorch and Python dispatch modes included),
// without the op packet's boxed parsing of Python arguments (~1.5 us of a 4 us call at 10^4
// points). They take the common call only: plain tensors on a device with kernels, a known basis,
// an int in range, no __torch_function__ mode; they check that here, in a few tens of ns where the
// same checks in Python took ~250, and return None for anything else, which polyfit/_ops.py then
// takes its general way (its checks and messages, torch.ops for __torch_function__ overrides).
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("polyval", [](py::handle x, py::handle coeffs, py::handle basis, py::handle derivative) -> py::object {
    const at::Tensor* xt = plain_tensor(x);
    const at::Tensor* ct = plain_tensor(coeffs);
    const auto b = known_basis(basis);
    const auto d = int_in(derivative, 0, polyfit::kMaxDerivative);
    if (!xt || !ct || !b || !d || at::impl::torch_function_mode_enabled() || !kernels_for(*xt) ||
        ct->device().type() != xt->device().type())
      return py::none();
    return run_released([&] { return polyfit::polyval_op(*xt, *ct, *b, std::nullopt, *d); });
  });
  m.def("features", [](py::handle x, py::handle degree, py::handle basis, py::handle increasing) -> py::object {
    const at::Tensor* xt = plain_tensor(x);
    const auto b = known_basis(basis);
    const auto d = int_in(degree, 0, polyfit::kMaxDegree);
    const bool is_bool = PyBool_Check(increasing.ptr());  // anything else: the Python path's check
    if (!xt || !b || !d || !is_bool || at::impl::torch_function_mode_enabled() || !kernels_for(*xt))
      return py::none();
    const bool inc = increasing.ptr() == Py_True;
    return run_released([&] { return polyfit::features_op(*xt, *d, *b, std::nullopt, inc); });
  });
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
