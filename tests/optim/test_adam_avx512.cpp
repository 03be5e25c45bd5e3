// Adam and AdamW's fused f32 update at the avx2 and avx512 levels
// (kernels/cpu/adam_avx512.h) against the update computed in f64 from the same gradients:
// five steps, with L2 or decoupled weight decay, with and without AMSGrad, on lengths that
// leave a masked tail; parameters within 1e-6 relative plus 1e-6 absolute (1e-4 of the
// learning rate: f32 Adam itself is that far from f64 where m cancels to near zero after a
// sign change of the gradient; a wrong lane or term is off by 1e-3 or more). bf16 parameters
// go through the same f32 block: the two levels agree within one bf16 rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/capability.h"
#include "kernels/threads_guard.h"
#include "optim/adam.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {
namespace {

struct Case {
  bool decoupled, amsgrad;
  double weight_decay;
};

std::string name_of(const Case& c) {
  return std::string(c.decoupled ? "AdamW" : "Adam") + (c.amsgrad ? " amsgrad" : "") +
         " wd " + std::to_string(c.weight_decay);
}

std::unique_ptr<optim::Optimizer> make(const Case& c, const Tensor& p, double lr) {
  if (c.decoupled) {
    optim::AdamWOptions o;
    o.weight_decay = c.weight_decay;
    o.amsgrad = c.amsgrad;
    return std::make_unique<optim::AdamW>(std::vector<Tensor>{p}, lr, o);
  }
  optim::AdamOptions o;
  o.weight_decay = c.weight_decay;
  o.amsgrad = c.amsgrad;
  return std::make_unique<optim::Adam>(std::vector<Tensor>{p}, lr, o);
}

// Runs `steps` updates of a fresh parameter with the given gradients; returns the parameter.
Tensor run(const Case& c, const Tensor& init, const std::vector<Tensor>& grads, double lr) {
  Tensor p = native::clone(init);
  p.requires_grad_();
  auto opt = make(c, p, lr);
  for (const Tensor& g : grads) {
    p.set_grad(native::to(g, Device::cpu(), p.dtype()));
    opt->step();
  }
  return p;
}

std::vector<double> reference(const Case& c, const Tensor& init, const std::vector<Tensor>& grads,
                              double lr) {
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = c.weight_decay;
  std::vector<double> p = init.to_double_vector(), m(p.size()), v(p.size()), vmax(p.size());
  int t = 0;
  for (const Tensor& gt : grads) {
    ++t;
    std::vector<double> g = gt.to_double_vector();
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    for (size_t i = 0; i < p.size(); ++i) {
      if (c.decoupled) p[i] *= 1 - lr * wd;
      const double gi = c.decoupled ? g[i] : g[i] + wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * gi;
      v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      vmax[i] = std::max(vmax[i], v[i]);
      const double vh = c.amsgrad ? vmax[i] : v[i];
      p[i] -= (lr / bc1) * m[i] / (std::sqrt(vh) / std::sqrt(bc2) + eps);
    }
  }
  return p;
}

TEST(AdamAvx512, EveryLevelMatchesTheF64Update) {
  ThreadsGuard restore;
  manual_seed(5);
  const double lr = 1e-2;
  const std::vector<Case> cases = {
      {false, false, 0.0}, {false, false, 0.1}, {true, false, 0.1}, {true, true, 0.01}};
  for (int64_t n : {1, 15, 16, 17, 1000, 1027}) {
    Tensor init = randn({n});
    std::vector<Tensor> grads;
    for (int s = 0; s < 5; ++s) grads.push_back(randn({n}));
    for (const Case& c : cases) {
      const std::vector<double> want = reference(c, init, grads, lr);
      for (CpuLevel level : {CpuLevel::avx2, CpuLevel::avx512}) {
        if (int(level) > max_cpu_level_index()) continue;
        CpuLevelGuard cap{level};
        const std::vector<double> got = run(c, init, grads, lr).to_double_vector();
        for (size_t i = 0; i < got.size(); ++i)
          ASSERT_NEAR(got[i], want[i], 1e-6 * std::abs(want[i]) + 1e-6)
              << name_of(c) << " n " << n << " at " << to_string(level) << ", element " << i;
      }
    }
  }
}

TEST(AdamAvx512, Bf16ParametersAgreeAcrossLevelsWithinOneRounding) {
  ThreadsGuard restore;
  manual_seed(6);
  if (int(CpuLevel::avx512) > max_cpu_level_index())
    GTEST_SKIP() << "this CPU has no AVX-512: " << cpu_capability_description();
  const Case c{true, false, 0.1};
  Tensor init = native::to(randn({999}), Device::cpu(), DType::bf16);
  std::vector<Tensor> grads;
  for (int s = 0; s < 3; ++s) grads.push_back(randn({999}));
  auto at = [&](CpuLevel level) {
    CpuLevelGuard cap{level};
    return run(c, init, grads, 1e-2).to_double_vector();
  };
  const std::vector<double> a = at(CpuLevel::avx2), b = at(CpuLevel::avx512);
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_LE(std::abs(a[i] - b[i]), std::abs(a[i]) * std::ldexp(1.0, -7)) << "element " << i;
}

}  // namespace
}  // namespace loom
