#include "ops.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ExpandUtils.h>
#include <ATen/core/DimVector.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace polyfit {

namespace {

void check_floating(const at::Tensor& t, const char* name) {
  const auto s = t.scalar_type();
  TORCH_CHECK_TYPE(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16,
                   name, " must be a floating-point tensor (float16, bfloat16, float32 or float64); got ",
                   s);
}

void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                       const char* b_name) {
  TORCH_CHECK_VALUE(a.device() == b.device(), a_name, " and ", b_name,
                    " must be on the same device; got ", a.device(), " and ", b.device());
}

// x and coeffs reduced to y[r, n] = series(coeffs[r, :], x[r, n]).
struct SeriesLayout {
  at::Tensor x;       // (R, N), any strides
  at::Tensor coeffs;  // (R, K), any strides
  at::DimVector out_shape;    // the shape of y (small vectors: no heap allocation a call)
  at::DimVector batch_shape;  // out_shape without N; empty for one shared polynomial
  int64_t R = 1, N = 0, K = 0;
};

// t in dtype `type`. Each ATen call goes through the dispatcher (~0.1-0.2 us, a tenth of a call at
// 10^4 points), so a conversion that would change nothing is not called.
at::Tensor as_type(const at::Tensor& t, at::ScalarType type) { return t.scalar_type() == type ? t : t.to(type); }

// A new output, in the device's memory for outputs where it has one (kernels.outputs: on the CPU,
// polyfit's kept blocks for large outputs, cpu/output_cache.h).
at::Tensor new_output(at::IntArrayRef shape, const at::TensorOptions& options, const Kernels& kernels) {
  if (kernels.outputs == nullptr) return at::empty(shape, options);
  return at::detail::empty_generic(shape, kernels.outputs, c10::DispatchKeySet(options.computeDispatchKey()),
                                   c10::typeMetaToScalarType(options.dtype()), std::nullopt);
}

// A 1-D t as the kernels' one row of points (1, n), made without a dispatcher call (a reshape or
// unsqueeze costs ~0.1 us through it, with a forward at 10^4 points ~2 us). It shares t's storage
// and nothing else (no autograd or version bookkeeping), so it must not leave the op.
at::Tensor one_row(const at::Tensor& t) {
  auto impl = c10::make_intrusive<c10::TensorImpl>(c10::TensorImpl::VIEW, c10::Storage(t.storage()), t.key_set(),
                                                  t.dtype());
  const int64_t n = t.size(0), sizes[] = {1, n}, strides[] = {n * t.stride(0), t.stride(0)};
  impl->set_sizes_and_strides(sizes, strides, t.storage_offset());
  return at::Tensor(std::move(impl));
}

SeriesLayout series_layout(const at::Tensor& x, const at::Tensor& coeffs) {
  check_floating(x, "x");
  check_floating(coeffs, "coeffs");
  check_same_device(x, "x", coeffs, "coeffs");
  TORCH_CHECK_VALUE(coeffs.dim() >= 1, "coeffs must have at least one dimension (..., degree + 1); got a 0-dim tensor");
  TORCH_CHECK_VALUE(coeffs.size(-1) >= 1, "coeffs must have a non-empty last dimension (degree + 1 >= 1); got shape ",
                    coeffs.sizes());
  TORCH_CHECK_VALUE(coeffs.size(-1) <= kMaxDegree + 1, "coeffs has ", coeffs.size(-1),
                    " coefficients; at most ", kMaxDegree + 1, " are supported");
  const auto dtype = c10::promoteTypes(x.scalar_type(), coeffs.scalar_type());

  SeriesLayout L;
  L.K = coeffs.size(-1);
  if (coeffs.dim() == 1) {  // one polynomial for every element of x
    L.out_shape.assign(x.sizes().begin(), x.sizes().end());
    L.N = x.numel();
    L.x = x.dim() == 1 ? one_row(x) : x.reshape({1, L.N});
    L.coeffs = one_row(coeffs);
  } else {  // one polynomial per row: x (*Bx, N), coeffs (*Bc, K), Bx and Bc broadcast
    TORCH_CHECK_VALUE(x.dim() >= 1,
                      "x must have at least one dimension (..., N) when coeffs is batched; got a 0-dim x");
    const auto bx = x.sizes().slice(0, x.dim() - 1);
    const auto bc = coeffs.sizes().slice(0, coeffs.dim() - 1);
    std::vector<int64_t> batch;
    try {
      batch = at::infer_size(bx, bc);
    } catch (const c10::Error&) {
      TORCH_CHECK_VALUE(false, "coeffs batch shape ", bc, " does not broadcast with x batch shape ", bx,
                        " (coeffs (*B, degree + 1) pairs with x (*B, N))");
    }
    L.N = x.size(-1);
    L.R = c10::multiply_integers(batch);
    L.batch_shape.assign(batch.begin(), batch.end());
    L.out_shape = L.batch_shape;
    L.out_shape.push_back(L.N);
    auto xs = batch, cs = batch;
    xs.push_back(L.N);
    cs.push_back(L.K);
    // reshape keeps a view whenever the broadcast collapses (stride 0 included); copies otherwise.
    L.x = x.expand(xs).reshape({L.R, L.N});
    L.coeffs = coeffs.expand(cs).reshape({L.R, L.K});
  }
  L.x = as_type(L.x, dtype);
  L.coeffs = as_type(L.coeffs, dtype);
  return L;
}

void check_derivative(int64_t derivative) {
  TORCH_CHECK_VALUE(derivative >= 0, "derivative must be a non-negative integer; got ", derivative);
}

}  // namespace

Basis parse_basis(c10::string_view name) {
  if (const auto b = find_basis(name)) return *b;
  TORCH_CHECK_VALUE(false, "basis must be one of 'power', 'chebyshev', 'legendre', 'hermite', ",
                    "'hermite_e', 'laguerre'; got '", std::string(name), "'");
}

Domain parse_domain(OptDomain domain) {
  Domain d;
  if (!domain.has_value()) return d;
  const auto v = *domain;
  TORCH_CHECK_VALUE(v.size() == 2, "domain must be a pair (a, b); got ", v.size(), " values");
  const double a = v[0], b = v[1];
  TORCH_CHECK_VALUE(std::isfinite(a) && std::isfinite(b), "domain must be finite; got (", a, ", ", b, ")");
  TORCH_CHECK_VALUE(a != b, "domain must have a != b; got (", a, ", ", b, ")");
  // numpy.polynomial's mapparms onto the window [-1, 1]
  d.scale = 2.0 / (b - a);
  d.offset = -(a + b) / (b - a);
  d.lo = std::min(a, b);
  d.hi = std::max(a, b);
  d.mapped = true;
  return d;
}

at::Tensor features(const at::Tensor& x, int64_t degree, c10::string_view basis, OptDomain domain,
                    bool increasing, const Kernels& kernels) {
  check_floating(x, "x");
  TORCH_CHECK_VALUE(degree >= 0 && degree <= kMaxDegree, "degree must be an integer in [0, ", kMaxDegree,
                    "]; got ", degree);
  const Basis b = parse_basis(basis);
  const Domain d = parse_domain(domain);
  auto shape = x.sizes().vec();
  shape.push_back(degree + 1);
  at::Tensor out = new_output(shape, x.options(), kernels);
  if (out.numel() == 0) return out;
  if (x.dim() == 1) {  // already the kernels' layout: no views through the dispatcher
    kernels.features(x, out, b, d, increasing);
    return out;
  }
  at::Tensor out2 = out.view({x.numel(), degree + 1});
  kernels.features(x.reshape({-1}), out2, b, d, increasing);
  return out;
}

at::Tensor polyval(const at::Tensor& x, const at::Tensor& coeffs, c10::string_view basis,
                   OptDomain domain, int64_t derivative, const Kernels& kernels) {
  const Basis b = parse_basis(basis);
  const Domain d = parse_domain(domain);
  check_derivative(derivative);
  SeriesLayout L = series_layout(x, coeffs);
  at::Tensor y = new_output(L.out_shape, L.x.options(), kernels);  // contiguous: the kernels' (R, N) rows
  if (y.numel() > 0) {
    if (derivative >= L.K) {
      y.zero_();
    } else {
      kernels.series(L.x, L.coeffs, y, b, d, derivative);
    }
  }
  return y;
}

std::tuple<at::Tensor, at::Tensor> polyval_backward(const at::Tensor& grad, const at::Tensor& x,
                                                    const at::Tensor& coeffs, c10::string_view basis,
                                                    OptDomain domain, int64_t derivative,
                                                    std::array<bool, 2> output_mask,
                                                    const Kernels& kernels) {
  const Basis b = parse_basis(basis);
  const Domain d = parse_domain(domain);
  check_derivative(derivative);
  SeriesLayout L = series_layout(x, coeffs);
  check_floating(grad, "grad");
  check_same_device(grad, "grad", x, "x");
  TORCH_CHECK_VALUE(at::is_expandable_to(grad.sizes(), L.out_shape), "grad of shape ", grad.sizes(),
                    " does not broadcast to the output shape ", L.out_shape);
  at::Tensor g2 = as_type(grad, L.x.scalar_type());
  if (g2.sizes() != c10::IntArrayRef(L.out_shape)) g2 = g2.expand(L.out_shape);
  g2 = g2.dim() == 1 && L.R == 1 ? one_row(g2) : g2.reshape({L.R, L.N});

  at::Tensor gx2, gc2;
  if (output_mask[0]) gx2 = new_output({L.R, L.N}, L.x.options(), kernels);
  if (output_mask[1]) gc2 = at::empty({L.R, L.K}, L.x.options());
  if (L.R * L.N > 0) {
    // Orders at or beyond the degree vanish; the kernel computes only what is left.
    at::Tensor kx = gx2, kc = gc2;
    if (gx2.defined() && derivative + 1 >= L.K) {
      gx2.zero_();
      kx = at::Tensor();
    }
    if (gc2.defined() && derivative >= L.K) {
      gc2.zero_();
      kc = at::Tensor();
    }
    if (kx.defined() || kc.defined()) kernels.series_backward(g2, L.x, L.coeffs, kx, kc, b, d, derivative);
  } else if (gc2.defined()) {
    gc2.zero_();
  }

  at::Tensor gx, gc;
  if (gx2.defined()) gx = as_type(at::sum_to(gx2.view(L.out_shape), x.sizes()), x.scalar_type());
  if (gc2.defined()) {
    auto cs = L.batch_shape;
    cs.push_back(L.K);
    gc = as_type(at::sum_to(gc2.view(cs), coeffs.sizes()), coeffs.scalar_type());
  }
  return {gx, gc};
}

}  // namespace polyfit
