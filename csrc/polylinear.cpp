#include "polylinear.h"

#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <string>

#include "ops.h"

namespace polyfit {

namespace {

// The basis tile of one batch tile (in backward the same buffer first holds G = dY W) stays under
// this many bytes. On the CPU a tile that stays in cache is the point: the basis or G is written
// and read back from cache instead of memory (measured: 8 MiB tiles bring the layer from 1.08x to
// 1.02x of its GEMMs at B=1024, in=out=256, D=8), while a few hundred rows per tile keep the
// GEMMs at full speed (grad_weight re-reads and re-writes itself once per tile). A GPU wants large
// GEMMs and few launches. Results do not depend on the tiling: each output row comes from one
// GEMM row, and grad_weight adds the tiles in batch order.
constexpr int64_t kCpuTileBytes = int64_t(8) << 20;
constexpr int64_t kGpuTileBytes = int64_t(256) << 20;

void check_float(const at::Tensor& t, const char* name) {
  const auto s = t.scalar_type();
  TORCH_CHECK_TYPE(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, name,
                   " must be a floating-point tensor (float16, bfloat16, float32 or float64); got ", s);
}

void check_device(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name) {
  TORCH_CHECK_VALUE(a.device() == b.device(), a_name, " and ", b_name, " must be on the same device; got ",
                    a.device(), " and ", b.device());
}

InputMap parse_input_map(std::optional<c10::string_view> m) {
  if (!m.has_value()) return InputMap::Identity;
  if (*m == "tanh") return InputMap::Tanh;
  TORCH_CHECK_VALUE(false, "input_map must be 'tanh' or None; got '", std::string(*m), "'");
}

// Shapes and the compute dtype, after the checks every entry point shares.
struct Layer {
  int64_t B = 0, in = 0, out = 0, K = 0;
  at::ScalarType compute;  // float for the half types
};

Layer check_layer(const at::Tensor& x, const at::Tensor& weight) {
  check_float(x, "x");
  check_float(weight, "weight");
  check_device(x, "x", weight, "weight");
  TORCH_CHECK_VALUE(x.dim() == 2, "x must be 2-D (batch, in_features); got shape ", x.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 3, "weight must be 3-D (out_features, in_features, degree + 1); got shape ",
                    weight.sizes());
  TORCH_CHECK_VALUE(weight.size(1) == x.size(1), "weight has in_features = ", weight.size(1), " but x has ",
                    x.size(1), " features (last dimension)");
  TORCH_CHECK_VALUE(weight.size(2) >= 1, "weight must have a non-empty last dimension (degree + 1 >= 1); got shape ",
                    weight.sizes());
  Layer L;
  L.B = x.size(0);
  L.in = x.size(1);
  L.out = weight.size(0);
  L.K = weight.size(2);
  const auto dtype = c10::promoteTypes(x.scalar_type(), weight.scalar_type());
  L.compute = (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
  return L;
}

// The weight as the (out, K * in) matrix of the GEMMs, degree-major: a view when the weight is
// stored degree-major (as polyfit.nn.PolyLinear stores it), a copy otherwise.
at::Tensor weight_matrix(const at::Tensor& weight, const Layer& L) {
  return weight.to(L.compute).permute({0, 2, 1}).contiguous().view({L.out, L.K * L.in});
}

int64_t tile_rows(const Layer& L, const at::Device& device) {
  const int64_t budget = device.is_cpu() ? kCpuTileBytes : kGpuTileBytes;
  const int64_t row_bytes = std::max<int64_t>(1, L.K * L.in * int64_t(at::elementSize(L.compute)));
  const int64_t n_tiles = std::max<int64_t>(1, (L.B * row_bytes + budget - 1) / budget);
  return std::max<int64_t>(1, (L.B + n_tiles - 1) / n_tiles);  // equal tiles
}

}  // namespace

at::Tensor polylinear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      c10::string_view basis, std::optional<c10::string_view> input_map,
                      const PolyLinearKernels& kernels) {
  const Basis b = parse_basis(basis);
  const InputMap map = parse_input_map(input_map);
  Layer L = check_layer(x, weight);
  auto dtype = c10::promoteTypes(x.scalar_type(), weight.scalar_type());
  at::Tensor bias_c;
  if (bias.has_value() && bias->defined()) {
    check_float(*bias, "bias");
    check_device(x, "x", *bias, "bias");
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == L.out, "bias must have shape (out_features,) = (",
                      L.out, ",); got ", bias->sizes());
    dtype = c10::promoteTypes(dtype, bias->scalar_type());
    bias_c = bias->to(L.compute);
  }
  const at::Tensor xc = x.to(L.compute);
  const at::Tensor w2 = weight_matrix(weight, L);
  at::Tensor y = at::empty({L.B, L.out}, xc.options());
  if (L.B > 0) {
    const int64_t rows = tile_rows(L, x.device());
    at::Tensor phi = at::empty({std::min(rows, L.B), L.K, L.in}, xc.options());
    for (int64_t r0 = 0; r0 < L.B; r0 += rows) {
      const int64_t n = std::min(rows, L.B - r0);
      at::Tensor ph = phi.narrow(0, 0, n);
      kernels.basis(xc.narrow(0, r0, n), ph, b, map);
      at::Tensor yt = y.narrow(0, r0, n);
      const at::Tensor ph2 = ph.view({n, L.K * L.in});
      if (bias_c.defined()) {
        at::addmm_out(yt, bias_c, ph2, w2.t());
      } else {
        at::mm_out(yt, ph2, w2.t());
      }
    }
  }
  return y.to(dtype);
}

std::tuple<at::Tensor, at::Tensor> polylinear_backward(const at::Tensor& grad, const at::Tensor& x,
                                                       const at::Tensor& weight, c10::string_view basis,
                                                       std::optional<c10::string_view> input_map,
                                                       std::array<bool, 2> output_mask,
                                                       const PolyLinearKernels& kernels) {
  const Basis b = parse_basis(basis);
  const InputMap map = parse_input_map(input_map);
  Layer L = check_layer(x, weight);
  check_float(grad, "grad");
  check_device(grad, "grad", x, "x");
  TORCH_CHECK_VALUE(grad.dim() == 2 && grad.size(0) == L.B && grad.size(1) == L.out,
                    "grad must have shape (batch, out_features) = (", L.B, ", ", L.out, "); got ", grad.sizes());
  const bool need_x = output_mask[0], need_w = output_mask[1];
  const at::Tensor xc = x.to(L.compute);
  const at::Tensor gc = grad.to(L.compute);

  at::Tensor gx, gw, gw_km, gw2;
  if (need_x) gx = at::empty({L.B, L.in}, xc.options());
  if (need_w) {
    // grad_weight takes the weight's memory layout (what the fake kernel's empty_like says), so that
    // a degree-major weight gets a degree-major gradient without a copy.
    gw = at::empty_like(weight, weight.options().dtype(L.compute));
    gw_km = gw.permute({0, 2, 1});
    gw2 = gw_km.is_contiguous() ? gw_km.view({L.out, L.K * L.in}) : at::empty({L.out, L.K * L.in}, xc.options());
  }
  if (need_x || need_w) {
    at::Tensor w2;
    if (need_x) w2 = weight_matrix(weight, L);
    const int64_t rows = tile_rows(L, x.device());
    const int64_t cap = std::min(rows, L.B);
    // One tile buffer: G = dY W, which the grad_x pass overwrites with the basis in place.
    at::Tensor buf = cap > 0 ? at::empty({cap, L.K, L.in}, xc.options()) : at::Tensor();
    for (int64_t r0 = 0; r0 < L.B; r0 += rows) {
      const int64_t n = std::min(rows, L.B - r0);
      const at::Tensor xt = xc.narrow(0, r0, n);
      const at::Tensor dyt = gc.narrow(0, r0, n);
      at::Tensor tile = buf.narrow(0, 0, n);
      at::Tensor ph = need_w ? tile : at::Tensor();
      if (need_x) {  // G = dY W, then one pass: grad_x = map' * sum_k G_k P_k', basis over G
        at::Tensor gt2 = tile.view({n, L.K * L.in});
        at::mm_out(gt2, dyt, w2);
        at::Tensor gxt = gx.narrow(0, r0, n);
        kernels.grad_x(xt, tile, gxt, ph, b, map);
      } else {
        kernels.basis(xt, ph, b, map);
      }
      if (need_w) {  // grad_weight += dY^T basis, tile after tile in batch order
        const at::Tensor ph2 = ph.view({n, L.K * L.in});
        if (r0 == 0) {
          at::mm_out(gw2, dyt.t(), ph2);
        } else {
          gw2.addmm_(dyt.t(), ph2);
        }
      }
    }
    if (need_w) {
      if (L.B == 0) gw2.zero_();
      if (!gw_km.is_contiguous()) gw_km.copy_(gw2.view({L.out, L.K, L.in}));
    }
  }
  if (gx.defined()) gx = gx.to(x.scalar_type());
  if (gw.defined()) gw = gw.to(weight.scalar_type());
  return {gx, gw};
}

}  // namespace polyfit
