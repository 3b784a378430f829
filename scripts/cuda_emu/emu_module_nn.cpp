// The PolyLinear and fit CUDA kernels (compiled for the CPU emulation in include/cuda_runtime.h)
// behind their shared host code (csrc/polylinear.cpp, csrc/fit.cpp), as plain functions on CPU
// tensors. The kernel files are compiled as their own translation units; each gets an accessor
// appended by test_emulated_nn.py (their kernel tables have internal linkage).
#include <torch/extension.h>

#include <optional>
#include <string>
#include <vector>

#include <cuda_runtime.h>  // the emulation (include/): emu::sm_count

#include "csrc/fit.h"
#include "csrc/polylinear.h"

namespace polyfit::emu_nn {
const PolyLinearKernels& polylinear_kernels();
FitKernel fit_kernel();
}  // namespace polyfit::emu_nn

namespace {

at::Tensor polylinear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                      const std::string& basis, const std::optional<std::string>& input_map) {
  std::optional<c10::string_view> m;
  if (input_map) m = c10::string_view(*input_map);
  return polyfit::polylinear(x, w, bias, basis, m, polyfit::emu_nn::polylinear_kernels());
}

std::tuple<at::Tensor, at::Tensor> polylinear_backward(const at::Tensor& grad, const at::Tensor& x,
                                                       const at::Tensor& w, const std::string& basis,
                                                       const std::optional<std::string>& input_map, bool need_x,
                                                       bool need_w) {
  std::optional<c10::string_view> m;
  if (input_map) m = c10::string_view(*input_map);
  return polyfit::polylinear_backward(grad, x, w, basis, m, {need_x, need_w}, polyfit::emu_nn::polylinear_kernels());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fit(const at::Tensor& x, const at::Tensor& y,
                                                   const std::optional<at::Tensor>& w, int64_t degree,
                                                   const std::string& basis,
                                                   const std::optional<std::vector<double>>& domain) {
  polyfit::OptDomain d;
  if (domain) d = at::ArrayRef<double>(*domain);
  return polyfit::fit(x, y, w, degree, basis, d, polyfit::emu_nn::fit_kernel());
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("polylinear", &polylinear);
  m.def("polylinear_backward", &polylinear_backward);
  m.def("fit", &fit);
  m.def("set_sm_count", [](int n) { emu::sm_count = n; });
}
