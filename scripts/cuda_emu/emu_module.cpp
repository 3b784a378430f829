// The CUDA kernels (compiled for the CPU emulation in include/cuda_runtime.h) behind polyfit's
// host code (csrc/ops.cpp), as plain functions on CPU tensors: features, polyval, polyval_backward.
#include <torch/extension.h>

#include <optional>
#include <string>
#include <vector>

#include "csrc/cuda/common.cuh"

namespace {

const polyfit::Kernels kEmu{&polyfit::cuda::features_cuda, &polyfit::cuda::series_cuda,
                            &polyfit::cuda::series_backward_cuda};

polyfit::OptDomain as_domain(const std::optional<std::vector<double>>& d) {
  if (!d) return std::nullopt;
  return at::ArrayRef<double>(*d);
}

at::Tensor features(const at::Tensor& x, int64_t degree, const std::string& basis,
                    const std::optional<std::vector<double>>& domain, bool increasing) {
  return polyfit::features(x, degree, basis, as_domain(domain), increasing, kEmu);
}

at::Tensor polyval(const at::Tensor& x, const at::Tensor& coeffs, const std::string& basis,
                   const std::optional<std::vector<double>>& domain, int64_t derivative) {
  return polyfit::polyval(x, coeffs, basis, as_domain(domain), derivative, kEmu);
}

std::tuple<at::Tensor, at::Tensor> polyval_backward(const at::Tensor& grad, const at::Tensor& x,
                                                    const at::Tensor& coeffs, const std::string& basis,
                                                    const std::optional<std::vector<double>>& domain,
                                                    int64_t derivative, bool need_x, bool need_c) {
  return polyfit::polyval_backward(grad, x, coeffs, basis, as_domain(domain), derivative, {need_x, need_c}, kEmu);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("features", &features);
  m.def("polyval", &polyval);
  m.def("polyval_backward", &polyval_backward);
  m.def("set_sm_count", [](int n) { emu::sm_count = n; });
}
