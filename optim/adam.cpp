// Adam / AdamW update, as PyTorch documents it
// (https://pytorch.org/docs/stable/generated/torch.optim.Adam.html and .AdamW.html;
// Kingma & Ba 2015, "Adam", Algorithm 1; Loshchilov & Hutter 2019, "Decoupled Weight Decay
// Regularization", Algorithm 2; Reddi et al. 2018 for AMSGrad). Per parameter, at step t:
//
//   θ = θ (1 - γλ)                 AdamW (decoupled weight decay)
//   g = g + λ θ                    Adam with weight_decay λ != 0 (L2)
//   m = β1 m + (1 - β1) g          first moment
//   v = β2 v + (1 - β2) g²         second moment
//   v̂ = max(v̂, v)  (amsgrad)  or  v̂ = v
//   θ = θ - (γ / (1 - β1^t)) m / (sqrt(v̂) / sqrt(1 - β2^t) + ε)
//
// The last line is PyTorch's arrangement of the bias correction (ε is added after dividing
// by sqrt(1 - β2^t)), which matters for matching its numbers.
#include "optim/adam.h"

#include <cmath>

#include "optim/fused_loop.h"
#include "tensor/native.h"

namespace loom::optim {

namespace {

constexpr const char* kExpAvg = "exp_avg";
constexpr const char* kExpAvgSq = "exp_avg_sq";
constexpr const char* kMaxExpAvgSq = "max_exp_avg_sq";

// Per-step scalars shared by both paths.
struct AdamStep {
  double step_size;    // γ / (1 - β1^t)
  double bc2_sqrt;     // sqrt(1 - β2^t)
  double decay;        // 1 - γλ for AdamW, unused for Adam
};

AdamStep adam_step(const AdamOptions& o, int64_t t) {
  const double bc1 = 1.0 - std::pow(o.beta1, double(t));
  const double bc2 = 1.0 - std::pow(o.beta2, double(t));
  return {o.lr / bc1, std::sqrt(bc2), 1.0 - o.lr * o.weight_decay};
}

// One fused pass; `vmax` is null without amsgrad.
template <class T>
void adam_fused(T* param, const T* grad, T* m, T* v, T* vmax, int64_t n, const AdamOptions& o,
                const AdamStep& s, bool decoupled) {
  using C = fused::ComputeType<T>;
  using kernels::elem_cast;
  const C b1 = C(o.beta1), b2 = C(o.beta2), eps = C(o.eps), wd = C(o.weight_decay);
  const C step_size = C(s.step_size), bc2_sqrt = C(s.bc2_sqrt), decay = C(s.decay);
  const bool l2 = !decoupled && o.weight_decay != 0.0;
  const bool decay_weights = decoupled && o.weight_decay != 0.0;
  fused::for_each_element(n, [&](int64_t i) {
    C p = elem_cast<C>(param[i]);
    C g = elem_cast<C>(grad[i]);
    if (decay_weights) p *= decay;  // AdamW: θ = θ (1 - γλ)
    if (l2) g += wd * p;            // Adam: g = g + λ θ
    const C mi = b1 * elem_cast<C>(m[i]) + (C(1) - b1) * g;      // m = β1 m + (1 - β1) g
    const C vi = b2 * elem_cast<C>(v[i]) + (C(1) - b2) * g * g;  // v = β2 v + (1 - β2) g²
    m[i] = elem_cast<T>(mi);
    v[i] = elem_cast<T>(vi);
    C vhat = vi;
    if (vmax) {  // AMSGrad: v̂ = max(v̂, v)
      vhat = std::max(elem_cast<C>(vmax[i]), vi);
      vmax[i] = elem_cast<T>(vhat);
    }
    const C denom = std::sqrt(vhat) / bc2_sqrt + eps;  // sqrt(v̂ / (1 - β2^t)) + ε
    param[i] = elem_cast<T>(p - step_size * mi / denom);  // θ = θ - γ m̂ / denom
  });
}

Tensor zero_state(const Tensor& p) {
  Tensor t = native::empty(p.sizes(), p.dtype(), p.device());
  native::fill_(t, 0.0);
  return t;
}

}  // namespace

HyperParams AdamOptions::to_map() const {
  return {{"lr", lr},   {"beta1", beta1},  {"beta2", beta2},
          {"eps", eps}, {"weight_decay", weight_decay}, {"amsgrad", amsgrad ? 1.0 : 0.0}};
}

AdamOptions AdamOptions::from_map(const HyperParams& m) {
  AdamOptions o;
  o.lr = m.at("lr");
  o.beta1 = m.at("beta1");
  o.beta2 = m.at("beta2");
  o.eps = m.at("eps");
  o.weight_decay = m.at("weight_decay");
  o.amsgrad = m.at("amsgrad") != 0.0;
  return o;
}

Adam::Adam(std::vector<Tensor> params, double lr, AdamOptions options)
    : Adam("Adam", false, as_groups(std::move(params)), [&] {
        options.lr = lr;
        return options;
      }()) {}

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions options)
    : Adam("Adam", false, std::move(groups), options) {}

Adam::Adam(const char* name, bool decoupled, std::vector<ParamGroup> groups, AdamOptions options)
    : Optimizer(name, options.to_map()), decoupled_(decoupled) {
  check_options(defaults());
  add_groups(std::move(groups));
}

AdamW::AdamW(std::vector<Tensor> params, double lr, AdamWOptions options)
    : Adam("AdamW", true, as_groups(std::move(params)), [&] {
        options.lr = lr;
        return options.as_adam();
      }()) {}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions options)
    : Adam("AdamW", true, std::move(groups), options.as_adam()) {}

void Adam::check_options(const HyperParams& m) const {
  const AdamOptions o = AdamOptions::from_map(m);
  const std::string& n = name();
  if (!(o.lr >= 0.0))
    throw ValueError(detail::concat(n, ": invalid learning rate ", o.lr, " (must be >= 0)"));
  if (!(o.eps >= 0.0))
    throw ValueError(detail::concat(n, ": invalid eps ", o.eps, " (must be >= 0)"));
  if (!(o.beta1 >= 0.0 && o.beta1 < 1.0))
    throw ValueError(detail::concat(n, ": invalid beta1 ", o.beta1, " (must be in [0, 1))"));
  if (!(o.beta2 >= 0.0 && o.beta2 < 1.0))
    throw ValueError(detail::concat(n, ": invalid beta2 ", o.beta2, " (must be in [0, 1))"));
  if (!(o.weight_decay >= 0.0))
    throw ValueError(
        detail::concat(n, ": invalid weight_decay ", o.weight_decay, " (must be >= 0)"));
}

void Adam::step_group(ParamGroup& group) {
  const AdamOptions o = AdamOptions::from_map(group.options);
  for (Tensor& p : group.params) {
    const Tensor grad = p.grad();
    if (!grad.defined()) continue;
    ParamState& st = state_for(p);
    if (!st.buffers.count(kExpAvg)) {  // first step: zero moments (m_0 = v_0 = 0)
      st.buffers[kExpAvg] = zero_state(p);
      st.buffers[kExpAvgSq] = zero_state(p);
    }
    if (o.amsgrad && !st.buffers.count(kMaxExpAvgSq)) st.buffers[kMaxExpAvgSq] = zero_state(p);
    const AdamStep s = adam_step(o, ++st.step);
    Tensor& m = st.buffers[kExpAvg];
    Tensor& v = st.buffers[kExpAvgSq];
    if (use_fused(p, grad)) {
      fused::visit_floating(p.dtype(), name().c_str(), [&](auto tag) {
        using T = decltype(tag);
        T* vmax = o.amsgrad ? st.buffers[kMaxExpAvgSq].data_ptr<T>() : nullptr;
        adam_fused<T>(p.data_ptr<T>(), grad.data_ptr<T>(), m.data_ptr<T>(), v.data_ptr<T>(), vmax,
                      p.numel(), o, s, decoupled_);
      });
      p.storage()->bump_version();
      continue;
    }
    // Tensor-op path (CUDA, non-contiguous or mixed-dtype parameters): same math, one op a line.
    Tensor g = grad;
    if (decoupled_) {
      if (o.weight_decay != 0.0) p.mul_(s.decay);  // AdamW: θ = θ (1 - γλ)
    } else if (o.weight_decay != 0.0) {
      g = native::add_scaled(g, p, o.weight_decay);  // Adam: g = g + λ θ
    }
    m.mul_(o.beta1).add_(g, 1.0 - o.beta1);  // m = β1 m + (1 - β1) g
    v.mul_(o.beta2).add_(native::binary(native::BinaryOp::mul, g, g), 1.0 - o.beta2);  // v = β2 v + (1 - β2) g²
    Tensor vhat = v;
    if (o.amsgrad) {  // AMSGrad: v̂ = max(v̂, v)
      vhat = st.buffers[kMaxExpAvgSq];
      native::binary_(native::BinaryOp::maximum, vhat, v);
    }
    Tensor denom = native::unary(native::UnaryOp::sqrt, vhat);
    denom.div_(s.bc2_sqrt).add_(o.eps);  // sqrt(v̂) / sqrt(1 - β2^t) + ε
    p.add_(native::binary(native::BinaryOp::div, m, denom), -s.step_size);  // θ = θ - γ m̂ / denom
  }
}

}  // namespace loom::optim
