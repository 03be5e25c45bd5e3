// Differentiable matmul and linear. Under autocast both run in the low dtype (f16/bf16).
#include "autograd/node.h"
#include "tensor/autocast.h"
#include "tensor/ops.h"

namespace loom {

using autograd::record;
using autograd::SavedTensor;

namespace {

// f32 and the other 16-bit dtype are cast; f64 is left alone (an explicit request for
// precision, as PyTorch's autocast leaves it).
Tensor low_under_autocast(const Tensor& x) {
  AutocastState s = autocast_state();
  if (s.enabled && x.defined() && is_floating(x.dtype()) && x.dtype() != DType::f64 &&
      x.dtype() != s.dtype)
    return x.to(s.dtype);
  return x;
}

Tensor mT(const Tensor& t) { return native::transpose(t, -2, -1); }

// a (..., M, K) @ b (..., K, N) with both at least 2-D; batch dims broadcast and the engine
// sums gradients back over them.
Tensor matmul_2d_up(const Tensor& a, const Tensor& b) {
  Tensor out = native::matmul(a, b);
  if (autograd::needs_grad(a, b)) {
    SavedTensor sa(b.requires_grad() ? a : Tensor()), sb(a.requires_grad() ? b : Tensor());
    record("MatmulBackward", {a, b}, out, [sa, sb](const TensorList& g) {
      // dA = dC @ B^T;  dB = A^T @ dC
      return TensorList{sb.defined() ? native::matmul(g[0], mT(sb.unpack())) : Tensor(),
                        sa.defined() ? native::matmul(mT(sa.unpack()), g[0]) : Tensor()};
    });
  }
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a0, const Tensor& b0) {
  Tensor a = low_under_autocast(a0), b = low_under_autocast(b0);
  if (a.dim() == 0 || b.dim() == 0)
    throw ValueError(detail::concat("matmul: both arguments need at least 1 dim, got shapes ",
                                    shape_str(a.sizes()), " and ", shape_str(b.sizes())));
  // 1-D operands become matrices (a row, b a column), then the added dim is dropped again,
  // through differentiable views, so one backward formula serves every case.
  if (a.dim() >= 2 && b.dim() >= 2) return matmul_2d_up(a, b);
  if (a.dim() == 1 && b.dim() == 1) {
    if (a.size(0) != b.size(0))
      throw ValueError(detail::concat("matmul: shapes ", shape_str(a.sizes()), " and ",
                                      shape_str(b.sizes()), " cannot be multiplied (",
                                      a.size(0), " != ", b.size(0), ")"));
    return matmul_2d_up(a.unsqueeze(0), b.unsqueeze(1)).reshape({});
  }
  if (a.dim() == 1) return matmul_2d_up(a.unsqueeze(0), b).squeeze(-2);
  return matmul_2d_up(a, b.unsqueeze(1)).squeeze(-1);
}

Tensor linear(const Tensor& x0, const Tensor& w0, const Tensor& b0) {
  Tensor x = low_under_autocast(x0), w = low_under_autocast(w0), b = low_under_autocast(b0);
  Tensor out = native::linear(x, w, b);
  if (autograd::needs_grad({&x, &w, &b}))
    record("LinearBackward", {x, w, b}, out,
           [sx = SavedTensor(w.requires_grad() ? x : Tensor()), sw = SavedTensor(w),
            need_dx = x.requires_grad(), has_bias = b.defined()](const TensorList& g) {
             // y = x W^T + b:  dx = dy W;  dW = dy^T x (over all leading dims);  db = sum dy
             Tensor dy = g[0];
             Tensor dx, dw, db;
             if (need_dx) dx = native::matmul(dy, sw.unpack());
             int64_t out_f = dy.size(-1);
             Tensor dy2 = native::reshape(dy, {-1, out_f});
             if (sx.defined()) {
               Tensor xv = sx.unpack();
               dw = native::matmul(mT(dy2), native::reshape(xv, {-1, xv.size(-1)}));
             }
             if (has_bias) db = native::sum(dy2, {0}, false);
             return TensorList{dx, dw, db};
           });
  return out;
}

Tensor Tensor::matmul(const Tensor& other) const { return loom::matmul(*this, other); }

}  // namespace loom
