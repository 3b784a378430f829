#include "fit.h"

#include <ATen/ExpandUtils.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <vector>

namespace polyfit {

namespace {

constexpr int64_t kMaxFitDegree = 1 << 20;

void check_float(const at::Tensor& t, const char* name) {
  const auto s = t.scalar_type();
  TORCH_CHECK_TYPE(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, name,
                   " must be a floating-point tensor (float16, bfloat16, float32 or float64); got ", s);
}

void check_curves(const at::Tensor& t, const char* name, const at::Tensor& x) {
  check_float(t, name);
  TORCH_CHECK_VALUE(t.device() == x.device(), "x and ", name, " must be on the same device; got ", x.device(),
                    " and ", t.device());
  TORCH_CHECK_VALUE(t.dim() >= 1, name, " must have at least one dimension (..., N); got a 0-dim tensor");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> fit(const at::Tensor& x, const at::Tensor& y,
                                                   const std::optional<at::Tensor>& weight, int64_t degree,
                                                   c10::string_view basis, OptDomain domain, FitKernel kernel) {
  const Basis b = parse_basis(basis);
  const Domain d = parse_domain(domain);
  check_curves(x, "x", x);
  check_curves(y, "y", x);
  const bool weighted = weight.has_value() && weight->defined();
  if (weighted) check_curves(*weight, "weight", x);
  TORCH_CHECK_VALUE(degree >= 0 && degree <= kMaxFitDegree, "degree must be an integer in [0, ", kMaxFitDegree,
                    "]; got ", degree);
  const int64_t N = x.size(-1), K = degree + 1;
  TORCH_CHECK_VALUE(y.size(-1) == N, "y must have as many points per curve as x (last dimension): x has ", N,
                    ", y has ", y.size(-1));
  if (weighted) {
    TORCH_CHECK_VALUE(weight->size(-1) == N, "weight must have as many points per curve as x (last dimension): x has ",
                      N, ", weight has ", weight->size(-1));
  }
  TORCH_CHECK_VALUE(N >= K, "a fit of degree ", degree, " needs at least degree + 1 = ", K,
                    " points per curve; x has ", N, " (last dimension)");

  std::vector<int64_t> batch;
  try {
    batch = at::infer_size(x.sizes().slice(0, x.dim() - 1), y.sizes().slice(0, y.dim() - 1));
    if (weighted) batch = at::infer_size(batch, weight->sizes().slice(0, weight->dim() - 1));
  } catch (const c10::Error&) {
    TORCH_CHECK_VALUE(false, "the batch shapes of x ", x.sizes(), ", y ", y.sizes(),
                      weighted ? " and weight " : "", weighted ? c10::str(weight->sizes()) : std::string(),
                      " do not broadcast (each is (*B, N))");
  }
  auto dtype = c10::promoteTypes(x.scalar_type(), y.scalar_type());
  if (weighted) dtype = c10::promoteTypes(dtype, weight->scalar_type());
  const auto compute = (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
  const int64_t R = c10::multiply_integers(batch);
  auto rows = [&](const at::Tensor& t) {
    auto shape = batch;
    shape.push_back(N);
    // A view whenever the broadcast collapses (stride 0 included); the kernel reads any strides.
    return t.expand(shape).reshape({R, N}).to(compute);
  };
  const auto opts = x.options().dtype(compute);
  at::Tensor coeffs = at::empty({R, K}, opts);
  at::Tensor resid = at::empty({R}, opts);
  at::Tensor ill = at::empty({R}, opts.dtype(at::kBool));
  if (R > 0) kernel(rows(x), rows(y), weighted ? rows(*weight) : at::Tensor(), coeffs, resid, ill, b, d);

  auto cshape = batch;
  cshape.push_back(K);
  return {coeffs.view(cshape).to(dtype), resid.view(batch).to(dtype), ill.view(batch)};
}

}  // namespace polyfit
