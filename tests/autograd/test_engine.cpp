// The backward engine and the autograd state of tensors: roots and explicit gradients,
// accumulation, retain_graph, detach/NoGradGuard, in-place guards and the version counter,
// hooks (tensor, retain_grad, post-accumulate-grad and their order), mixed dtypes, autocast.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/autocast.h"
#include "tensor/factories.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

Tensor vec(std::initializer_list<double> v, DType dt = DType::f64) { return tensor(v, dt); }

template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<no exception>";
}

// ---------------------------------------------------------------- roots and gradients

TEST(Engine, BackwardFromScalar) {
  Tensor x = vec({1, 2, 3}).requires_grad_();
  Tensor y = (x * x).sum();  // dy/dx = 2x
  EXPECT_FALSE(y.is_leaf());
  EXPECT_TRUE(y.requires_grad());
  y.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2, 4, 6}));
  // A one-element tensor of any rank is an implicit-gradient root too.
  Tensor z = vec({3}).requires_grad_();
  (z * 2.0).view({1, 1}).backward();
  EXPECT_EQ(z.grad().item<double>(), 2.0);
}

TEST(Engine, BackwardWithExplicitGradient) {
  Tensor x = vec({1, 2, 3}).requires_grad_();
  Tensor y = x * 3.0;
  y.backward(vec({1, 10, 100}));  // vector-Jacobian product: 3 * v
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{3, 30, 300}));
}

TEST(Engine, NonScalarWithoutGradientIsAnError) {
  Tensor x = vec({1, 2}).requires_grad_();
  Tensor y = x * 2.0;
  std::string msg = error_of<ValueError>([&] { y.backward(); });
  EXPECT_THAT(msg, HasSubstr("one-element"));
  EXPECT_THAT(msg, HasSubstr("[2]"));
  EXPECT_THAT(error_of<ValueError>([&] { y.backward(vec({1, 2, 3})); }), HasSubstr("does not match"));
}

TEST(Engine, BackwardOnATensorOutsideAnyGraphIsAnError) {
  Tensor x = vec({1, 2});
  EXPECT_THAT(error_of<RuntimeError>([&] { x.sum().backward(); }), HasSubstr("does not require grad"));
}

TEST(Engine, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = vec({1, 2}).requires_grad_();
  (x * 3.0).sum().backward();
  (x * x).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{5, 7}));  // 3 + 2x
  x.set_grad(Tensor());
  EXPECT_FALSE(x.grad().defined());
  (x * 3.0).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{3, 3}));
}

TEST(Engine, GradientOfALeafDoesNotAliasOtherTensors) {
  // d sum(x + y) gives both leaves the same incoming buffer; each .grad() must be its own.
  Tensor x = vec({1, 2}).requires_grad_(), y = vec({3, 4}).requires_grad_();
  (x + y).sum().backward();
  EXPECT_NE(x.grad().storage(), y.grad().storage());
  {
    NoGradGuard g;
    x.grad().mul_(5.0);
  }
  EXPECT_EQ(y.grad().to_vector<double>(), (std::vector<double>{1, 1}));
}

TEST(Engine, RetainGraph) {
  Tensor x = vec({1, 2}).requires_grad_();
  Tensor y = (x * x).sum();
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{4, 8}));
  std::string msg = error_of<RuntimeError>([&] { y.backward(); });
  EXPECT_THAT(msg, HasSubstr("retain_graph"));
  EXPECT_THAT(msg, HasSubstr("second time"));
}

TEST(Engine, SharedSubgraphRunsOnceWithSummedGradient) {
  // h is used by two consumers: its node must wait for both and run once.
  Tensor x = vec({1, 2}).requires_grad_();
  Tensor h = x.exp();
  Tensor y = (h * 2.0 + h * h).sum();  // dy/dx = (2 + 2h) h
  y.backward();
  std::vector<double> g = x.grad().to_vector<double>();
  for (int i = 0; i < 2; ++i) {
    double e = std::exp(double(i + 1));
    EXPECT_NEAR(g[size_t(i)], (2 + 2 * e) * e, 1e-12);
  }
}

// ---------------------------------------------------------------- grad mode, detach, leaves

TEST(Engine, DetachSharesStorageWithoutHistory) {
  Tensor x = vec({1, 2}).requires_grad_();
  Tensor y = x * 2.0;
  Tensor d = y.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
  EXPECT_EQ(d.grad_fn(), nullptr);
  EXPECT_EQ(d.storage(), y.storage());
  d.fill_(7.0);  // d does not require grad: allowed, and visible through y
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{7, 7}));
  // Nothing computed from d reaches x.
  Tensor z = (d * x).sum();
  z.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{7, 7}));
}

TEST(Engine, NoGradGuardRecordsNothing) {
  Tensor x = vec({1, 2}).requires_grad_();
  {
    NoGradGuard g;
    EXPECT_FALSE(GradMode::is_enabled());
    Tensor y = x * 2.0 + x.exp();
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
    {
      EnableGradGuard e;
      EXPECT_TRUE((x * 2.0).requires_grad());
    }
    EXPECT_FALSE(GradMode::is_enabled());
  }
  EXPECT_TRUE(GradMode::is_enabled());
  EXPECT_NE((x * 2.0).grad_fn(), nullptr);
  EXPECT_EQ((x * 2.0).grad_fn()->name(), "MulBackward");
}

TEST(Engine, RequiresGradOnIntegerTensorIsAnError) {
  Tensor i = tensor({1, 2}, DType::i64);
  std::string msg = error_of<ValueError>([&] { i.requires_grad_(); });
  EXPECT_THAT(msg, HasSubstr("floating"));
  EXPECT_THAT(msg, HasSubstr("i64"));
  Tensor b = tensor({1, 0}, DType::bool_);
  EXPECT_THROW(b.requires_grad_(), ValueError);
  EXPECT_NO_THROW(i.requires_grad_(false));
}

TEST(Engine, IsLeaf) {
  Tensor x = vec({1, 2});
  EXPECT_TRUE(x.is_leaf());
  x.requires_grad_();
  EXPECT_TRUE(x.is_leaf());
  Tensor y = x * 2.0;
  EXPECT_FALSE(y.is_leaf());
  EXPECT_TRUE(y.detach().is_leaf());
  // Ops on tensors that need no grad produce leaves.
  EXPECT_TRUE((vec({1}) * 2.0).is_leaf());
  // A non-leaf cannot stop requiring grad.
  EXPECT_THAT(error_of<ValueError>([&] { y.requires_grad_(false); }), HasSubstr("detach"));
  // .grad() of a non-leaf stays undefined without retain_grad.
  y.sum().backward();
  EXPECT_FALSE(y.grad().defined());
  EXPECT_TRUE(x.grad().defined());
}

TEST(Engine, InPlaceOnATensorThatRequiresGradIsRefused) {
  Tensor x = vec({1, 2}).requires_grad_();
  std::string msg = error_of<RuntimeError>([&] { x.add_(1.0); });
  EXPECT_THAT(msg, HasSubstr("in-place"));
  EXPECT_THAT(msg, HasSubstr("leaf"));
  EXPECT_THAT(msg, HasSubstr("NoGradGuard"));
  EXPECT_THROW(x.mul_(2.0), RuntimeError);
  EXPECT_THROW(x.zero_(), RuntimeError);
  EXPECT_THROW(x.copy_(vec({0, 0})), RuntimeError);
  EXPECT_THROW(x += vec({1, 1}), RuntimeError);
  Tensor y = x * 2.0;
  EXPECT_THAT(error_of<RuntimeError>([&] { y.fill_(0.0); }), HasSubstr("graph output"));
  EXPECT_EQ(x.to_vector<double>(), (std::vector<double>{1, 2}));  // nothing was written
  {
    NoGradGuard g;
    x.sub_(vec({1, 1}), 0.5);  // what an optimizer step does
  }
  EXPECT_EQ(x.to_vector<double>(), (std::vector<double>{0.5, 1.5}));
}

TEST(Engine, SavedTensorModifiedInPlaceIsDetected) {
  Tensor x = vec({1, 2}).requires_grad_();
  Tensor y = x.exp();  // ExpBackward saves its output
  Tensor z = y.sum();
  {
    NoGradGuard g;
    y.mul_(2.0);
  }
  std::string msg = error_of<RuntimeError>([&] { z.backward(); });
  EXPECT_THAT(msg, HasSubstr("in-place"));
  EXPECT_THAT(msg, HasSubstr("version"));
  // The same for a saved input that does not itself require grad.
  Tensor c = vec({3, 4});
  Tensor w = (x * c).sum();  // MulBackward saves c for x's gradient
  c.add_(1.0);
  EXPECT_THAT(error_of<RuntimeError>([&] { w.backward(); }), HasSubstr("modified by an in-place"));
  // A write through another view of the same storage counts too.
  Tensor base = vec({1, 2, 3, 4});
  Tensor half = native::slice(base, 0, 0, 2, 1);
  Tensor v = (x * half).sum();
  native::fill_(native::slice(base, 0, 2, 4, 1), 0.0);
  EXPECT_THROW(v.backward(), RuntimeError);
}

// ---------------------------------------------------------------- hooks

TEST(EngineHooks, LeafHookSeesAndCanReplaceTheGradient) {
  Tensor x = vec({1, 2}).requires_grad_();
  std::vector<double> seen;
  int h = x.register_hook([&](const Tensor& g) {
    seen = g.to_vector<double>();
    return g * 10.0;
  });
  (x * 3.0).sum().backward();
  EXPECT_EQ(seen, (std::vector<double>{3, 3}));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{30, 30}));
  x.remove_hook(h);
  x.set_grad(Tensor());
  (x * 3.0).sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{3, 3}));
}

TEST(EngineHooks, NonLeafHookChangesWhatFlowsUpstream) {
  Tensor x = vec({1, 2}).requires_grad_();
  Tensor y = x * 2.0;
  int calls = 0;
  y.register_hook([&](const Tensor& g) {
    ++calls;
    EXPECT_EQ(g.to_vector<double>(), (std::vector<double>{1, 1}));
    return Tensor();  // observe only
  });
  int h = y.register_hook([](const Tensor& g) { return g * -1.0; });
  y.sum().backward(Tensor(), true);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{-2, -2}));
  y.remove_hook(h);
  x.set_grad(Tensor());
  y.sum().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2, 2}));
  EXPECT_THROW(vec({1}).register_hook([](const Tensor&) { return Tensor(); }), ValueError);
}

TEST(EngineHooks, RetainGrad) {
  Tensor x = vec({1, 2}).requires_grad_();
  Tensor y = x * 2.0;
  Tensor z = y * y;
  y.retain_grad();
  z.retain_grad();
  z.sum().backward();
  EXPECT_EQ(z.grad().to_vector<double>(), (std::vector<double>{1, 1}));
  EXPECT_EQ(y.grad().to_vector<double>(), (std::vector<double>{4, 8}));  // 2y
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{8, 16}));
  x.retain_grad();  // a no-op on a leaf
}

TEST(EngineHooks, RetainedGradSeesWhatHooksMadeOfIt) {
  // As PyTorch: the retain_grad hook runs after the tensor's other hooks, even those
  // registered later, so .grad() is the gradient that flows on.
  Tensor x = vec({1, 2}).requires_grad_();
  Tensor y = x * 2.0;
  y.retain_grad();
  y.register_hook([](const Tensor& g) { return g * 3.0; });
  y.sum().backward();
  EXPECT_EQ(y.grad().to_vector<double>(), (std::vector<double>{3, 3}));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{6, 6}));
}

TEST(Engine, LeafRootAndAccumulatedRetainedGrad) {
  Tensor x = vec({4}).requires_grad_();
  x.backward();
  EXPECT_EQ(x.grad().item<double>(), 1.0);
  Tensor a = vec({1, 2}).requires_grad_();
  Tensor y = a * 2.0;
  y.retain_grad();
  Tensor z = y.sum();
  z.backward(Tensor(), true);
  z.backward();
  EXPECT_EQ(y.grad().to_vector<double>(), (std::vector<double>{2, 2}));
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{4, 4}));
}

TEST(EngineHooks, PostAccumulateGradHookRunsOnceAfterGradIsUpdated) {
  Tensor x = vec({1, 2}).requires_grad_();
  int calls = 0;
  std::vector<double> grad_in_hook;
  x.register_post_accumulate_grad_hook([&](Tensor& p) {
    ++calls;
    EXPECT_TRUE(p.is_same(x));
    grad_in_hook = p.grad().to_vector<double>();
  });
  // x is used twice: one accumulation, one hook call, with the summed gradient.
  (x * 2.0 + x * 3.0).sum().backward();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(grad_in_hook, (std::vector<double>{5, 5}));
  // A second backward accumulates first, then calls the hook again.
  (x * 1.0).sum().backward();
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(grad_in_hook, (std::vector<double>{6, 6}));
  Tensor y = x * 2.0;
  EXPECT_THROW(y.register_post_accumulate_grad_hook([](Tensor&) {}), ValueError);
}

TEST(EngineHooks, PostAccumulateGradHooksRunLaterLayersFirst) {
  // A 3-layer MLP: backward reaches layer 3's parameters before it even runs layer 2's
  // LinearBackward (so DDP can all-reduce them while backward continues).
  manual_seed(3);
  std::vector<Tensor> w, b;
  for (int l = 0; l < 3; ++l) {
    w.push_back(randn({4, 4}, DType::f64).requires_grad_());
    b.push_back(randn({4}, DType::f64).requires_grad_());
  }
  std::vector<std::string> events;
  for (int l = 0; l < 3; ++l) {
    w[size_t(l)].register_post_accumulate_grad_hook([&events, l](Tensor& p) {
      EXPECT_TRUE(p.grad().defined());
      events.push_back(detail::concat("w", l));
    });
    b[size_t(l)].register_post_accumulate_grad_hook(
        [&events, l](Tensor&) { events.push_back(detail::concat("b", l)); });
  }
  Tensor h = randn({2, 4}, DType::f64);
  for (int l = 0; l < 3; ++l) {
    h = linear(h, w[size_t(l)], b[size_t(l)]);
    if (l < 2) {
      // Runs when layer l's LinearBackward runs (the hook sits on its output's node).
      h.register_hook([&events, l](const Tensor&) {
        events.push_back(detail::concat("node", l));
        return Tensor();
      });
      h = h.tanh();
    }
  }
  h.sum().backward();
  auto pos = [&](const std::string& e) {
    auto it = std::find(events.begin(), events.end(), e);
    EXPECT_NE(it, events.end()) << e;
    EXPECT_EQ(std::count(events.begin(), events.end(), e), 1) << e;
    return it - events.begin();
  };
  EXPECT_LT(pos("w2"), pos("node1"));
  EXPECT_LT(pos("b2"), pos("node1"));
  EXPECT_LT(pos("w1"), pos("node0"));
  EXPECT_LT(pos("b1"), pos("node0"));
  EXPECT_LT(pos("node1"), pos("w1"));
  EXPECT_LT(std::max(pos("w2"), pos("b2")), std::min(pos("w1"), pos("b1")));
  EXPECT_LT(std::max(pos("w1"), pos("b1")), std::min(pos("w0"), pos("b0")));
  EXPECT_EQ(events.size(), 8u);
}

// ---------------------------------------------------------------- dtypes and autocast

TEST(Engine, MixedDtypeGivesEachLeafAGradOfItsOwnDtype) {
  Tensor w = tensor({1.0, 2.0}, DType::f32).requires_grad_();
  Tensor x = tensor({3.0, 4.0}, DType::f64).requires_grad_();
  Tensor y = (w * x).sum();
  EXPECT_EQ(y.dtype(), DType::f64);
  y.backward();
  EXPECT_EQ(w.grad().dtype(), DType::f32);
  EXPECT_EQ(x.grad().dtype(), DType::f64);
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{3, 4}));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1, 2}));
  // Broadcast and dtype together: an f32 bias against an f64 (3, 2) input.
  Tensor bias = tensor({0.5, 0.5}, DType::f32).requires_grad_();
  (randn({3, 2}, DType::f64) + bias).sum().backward();
  EXPECT_EQ(bias.grad().dtype(), DType::f32);
  EXPECT_EQ(bias.grad().sizes(), (Shape{2}));
  EXPECT_EQ(bias.grad().to_vector<double>(), (std::vector<double>{3, 3}));
}

TEST(Engine, AutocastRunsMatmulLowAndReductionsInF32) {
  manual_seed(1);
  Tensor w = randn({5, 8}).requires_grad_();  // f32 parameters
  Tensor b = randn({5}).requires_grad_();
  Tensor x = randn({4, 8});
  Tensor target = tensor({0, 3, 1, 4}, DType::i64);
  {
    AutocastGuard ac(true, DType::bf16);
    Tensor mm = matmul(x, w.t());
    EXPECT_EQ(mm.dtype(), DType::bf16);
    Tensor logits = linear(x, w, b);
    EXPECT_EQ(logits.dtype(), DType::bf16);
    EXPECT_EQ(logits.sum().dtype(), DType::f32);
    EXPECT_EQ(logits.mean().dtype(), DType::f32);
    EXPECT_EQ(logits.softmax(-1).dtype(), DType::f32);
    EXPECT_EQ(logits.log_softmax(-1).dtype(), DType::f32);
    Tensor loss = loom::cross_entropy(logits, target);
    EXPECT_EQ(loss.dtype(), DType::f32);
    loss.backward();
    {
      AutocastGuard off(false);
      EXPECT_EQ(matmul(x, w.t()).dtype(), DType::f32);
    }
  }
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().dtype(), DType::f32);
  EXPECT_EQ(b.grad().dtype(), DType::f32);
  // The bf16 gradient is close to the f32 one.
  Tensor w32 = w.detach().clone().requires_grad_(), b32 = b.detach().clone().requires_grad_();
  loom::cross_entropy(linear(x, w32, b32), target).backward();
  EXPECT_TRUE(w.grad().allclose(w32.grad(), 5e-2, 2e-2)) << w.grad() << w32.grad();
  EXPECT_FALSE(autocast_state().enabled);
}

}  // namespace
}  // namespace loom
