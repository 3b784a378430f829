// Autograd of polyfit's series and basis ops, as C++ kernels on the Autograd dispatch key: the
// same derivatives a Python torch.autograd.Function would give, at a fraction of its per-call cost
// (the Python form cost ~80 us per forward+backward, more than the kernels themselves below ~1e5
// points). Every backward is written with polyfit's own ops, so it is differentiable again through
// these same kernels: derivatives of any order run fused kernels.
#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ops.h"

namespace polyfit {

using at::Tensor;

// The ops through the dispatcher, every key included (autograd records them when a graph is being
// built); declared in ops.h for polyfit._C's eager entry points.
Tensor polyval_op(const Tensor& x, const Tensor& coeffs, c10::string_view basis, OptDomain domain,
                  int64_t derivative) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("polyfit::polyval", "")
                             .typed<Tensor(const Tensor&, const Tensor&, c10::string_view, OptDomain, int64_t)>();
  return op.call(x, coeffs, basis, domain, derivative);
}

Tensor features_op(const Tensor& x, int64_t degree, c10::string_view basis, OptDomain domain, bool increasing) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("polyfit::features", "")
                             .typed<Tensor(const Tensor&, int64_t, c10::string_view, OptDomain, bool)>();
  return op.call(x, degree, basis, domain, increasing);
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<Tensor, Tensor> polyval_backward_op(const Tensor& grad, const Tensor& x, const Tensor& coeffs,
                                               c10::string_view basis, OptDomain domain, int64_t derivative,
                                               std::array<bool, 2> output_mask) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("polyfit::polyval_backward", "")
          .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, c10::string_view,
                                            OptDomain, int64_t, std::array<bool, 2>)>();
  return op.call(grad, x, coeffs, basis, domain, derivative, output_mask);
}

// The non-tensor arguments of a series op, kept in the autograd context past the forward (the
// domain arrives as a borrowed view).
void save_args(AutogradContext* ctx, c10::string_view basis, OptDomain domain, int64_t derivative) {
  ctx->saved_data["basis"] = std::string(basis);
  ctx->saved_data["domain"] = domain ? c10::IValue(domain->vec()) : c10::IValue();
  ctx->saved_data["derivative"] = derivative;
}

struct SeriesArgs {
  std::string basis;
  std::optional<std::vector<double>> domain;
  int64_t derivative;

  explicit SeriesArgs(AutogradContext* ctx)
      : basis(ctx->saved_data["basis"].toStringRef()), derivative(ctx->saved_data["derivative"].toInt()) {
    const c10::IValue& d = ctx->saved_data["domain"];
    if (!d.isNone()) domain = d.toDoubleVector();
  }
  OptDomain dom() const { return domain ? OptDomain(*domain) : std::nullopt; }
};

Tensor accumulate(const Tensor& acc, const Tensor& term) { return acc.defined() ? acc + term : term; }

// y = d^n/dx^n sum_k coeffs[..., k] P_k(t(x)); differentiable in x and coeffs.
struct Polyval : torch::autograd::Function<Polyval> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& coeffs, c10::string_view basis,
                        OptDomain domain, int64_t derivative) {
    ctx->save_for_backward({x, coeffs});
    save_args(ctx, basis, domain, derivative);
    ctx->set_materialize_grads(false);
    at::AutoDispatchBelowADInplaceOrView guard;
    return polyval_op(x, coeffs, basis, domain, derivative);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const bool need_x = ctx->needs_input_grad(0), need_c = ctx->needs_input_grad(1);
    variable_list out(5);
    if (!grads[0].defined() || !(need_x || need_c)) return out;
    const auto saved = ctx->get_saved_variables();
    const SeriesArgs a(ctx);
    std::tie(out[0], out[1]) =
        polyval_backward_op(grads[0], saved[0], saved[1], a.basis, a.dom(), a.derivative, {need_x, need_c});
    return out;
  }
};

// (grad_x, grad_coeffs) of Polyval, itself differentiable:
//     grad_x = sum_to_x(grad * P^(n+1)(x, c)),   grad_c = sum_to_c(order-n moments of grad).
struct PolyvalBackward : torch::autograd::Function<PolyvalBackward> {
  static variable_list forward(AutogradContext* ctx, const Tensor& grad, const Tensor& x, const Tensor& coeffs,
                               c10::string_view basis, OptDomain domain, int64_t derivative,
                               std::array<bool, 2> output_mask) {
    ctx->save_for_backward({grad, x, coeffs});
    save_args(ctx, basis, domain, derivative);
    ctx->set_materialize_grads(false);
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [gx, gc] = polyval_backward_op(grad, x, coeffs, basis, domain, derivative, output_mask);
    // Only the requested gradients are outputs (autograd cannot wrap undefined ones).
    ctx->saved_data["mask"] = c10::List<bool>({output_mask[0], output_mask[1]});
    variable_list out;
    if (output_mask[0]) out.push_back(gx);
    if (output_mask[1]) out.push_back(gc);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto mask = ctx->saved_data["mask"].toBoolList();
    const Tensor ggx = mask[0] ? grads[0] : Tensor(), ggc = mask[1] ? grads[mask[0] ? 1 : 0] : Tensor();
    const auto saved = ctx->get_saved_variables();
    const Tensor &grad = saved[0], &x = saved[1], &coeffs = saved[2];
    const SeriesArgs a(ctx);
    const int64_t n = a.derivative;
    const bool need_grad = ctx->needs_input_grad(0), need_x = ctx->needs_input_grad(1),
               need_c = ctx->needs_input_grad(2);
    variable_list out(7);
    if (ggx.defined() && (need_x || need_c)) {
      // grad_x = grad * P^(n+1)(x, c): its x-derivative is of order n+2, its c-derivative the
      // order-(n+1) moments of grad * ggx; one fused call gives both.
      std::tie(out[1], out[2]) = polyval_backward_op(grad * ggx, x, coeffs, a.basis, a.dom(), n + 1, {need_x, need_c});
    }
    if (ggc.defined() && need_x) {
      // grad_c's moments are linear in grad: their x-derivative is grad * P^(n+1)(x, ggc).
      out[1] = accumulate(out[1], std::get<0>(polyval_backward_op(grad, x, ggc, a.basis, a.dom(), n, {true, false})));
    }
    if (need_grad) {
      Tensor d_grad;
      if (ggx.defined()) d_grad = ggx * polyval_op(x, coeffs, a.basis, a.dom(), n + 1);
      if (ggc.defined()) d_grad = accumulate(d_grad, polyval_op(x, ggc, a.basis, a.dom(), n));
      if (d_grad.defined()) out[0] = d_grad.sizes() == grad.sizes() ? d_grad : at::sum_to(d_grad, grad.sizes());
    }
    return out;
  }
};

// out[..., k] = P_k(t(x)); grad_x = sum_k grad[..., k] P_k'(t) t', each point's own series.
struct Features : torch::autograd::Function<Features> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, int64_t degree, c10::string_view basis,
                        OptDomain domain, bool increasing) {
    ctx->save_for_backward({x});
    save_args(ctx, basis, domain, 0);
    ctx->saved_data["increasing"] = increasing;
    ctx->set_materialize_grads(false);
    at::AutoDispatchBelowADInplaceOrView guard;
    return features_op(x, degree, basis, domain, increasing);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(5);
    if (!grads[0].defined() || !ctx->needs_input_grad(0)) return out;
    const Tensor x = ctx->get_saved_variables()[0];
    const SeriesArgs a(ctx);
    const Tensor coeffs = ctx->saved_data["increasing"].toBool() ? grads[0] : grads[0].flip(-1);
    out[0] = polyval_op(x.unsqueeze(-1), coeffs, a.basis, a.dom(), 1).squeeze(-1).to(x.scalar_type());
    return out;
  }
};

// Whether a call must go through its autograd Function: some input needs a gradient while grad
// mode is on. Otherwise the op runs directly below autograd, skipping the Function's node and
// saved arguments (~1 us a call). Forward-mode AD is not implemented: a tangent is refused here
// by name rather than dropped.
bool records_graph(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> inputs) {
  bool any = false;
  for (const auto& [name, t] : inputs) {
    TORCH_CHECK_NOT_IMPLEMENTED(!t->defined() || !t->_fw_grad(/*level=*/0).defined(), "polyfit.", op,
                                ": forward-mode AD (a dual tensor) is not supported; ", name,
                                " carries a tangent. Use reverse mode (backward, torch.autograd.grad).");
    any = any || (t->defined() && t->requires_grad());
  }
  return any && at::GradMode::is_enabled();
}

}  // namespace

TORCH_LIBRARY_IMPL(polyfit, Autograd, m) {
  m.impl("polyval", [](const Tensor& x, const Tensor& coeffs, c10::string_view basis, OptDomain domain,
                       int64_t derivative) {
    if (!records_graph("polyval", {{"x", &x}, {"coeffs", &coeffs}})) {
      at::AutoDispatchBelowADInplaceOrView guard;
      return polyval_op(x, coeffs, basis, domain, derivative);
    }
    return Polyval::apply(x, coeffs, basis, domain, derivative);
  });
  m.impl("polyval_backward", [](const Tensor& grad, const Tensor& x, const Tensor& coeffs, c10::string_view basis,
                                OptDomain domain, int64_t derivative, std::array<bool, 2> output_mask) {
    if (!(output_mask[0] || output_mask[1]) ||
        !records_graph("polyval_backward", {{"grad", &grad}, {"x", &x}, {"coeffs", &coeffs}})) {
      at::AutoDispatchBelowADInplaceOrView guard;
      return polyval_backward_op(grad, x, coeffs, basis, domain, derivative, output_mask);
    }
    auto r = PolyvalBackward::apply(grad, x, coeffs, basis, domain, derivative, output_mask);
    return std::make_tuple(output_mask[0] ? r[0] : Tensor(), output_mask[1] ? r.back() : Tensor());
  });
  m.impl("features", [](const Tensor& x, int64_t degree, c10::string_view basis, OptDomain domain,
                        bool increasing) {
    if (!records_graph("features", {{"x", &x}})) {
      at::AutoDispatchBelowADInplaceOrView guard;
      return features_op(x, degree, basis, domain, increasing);
    }
    return Features::apply(x, degree, basis, domain, increasing);
  });
}

}  // namespace polyfit
