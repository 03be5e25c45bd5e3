// nn::Module: registration and traversal order, dotted names, state_dict and loading,
// modes, apply, moves that keep parameter identity, zero_grad, forward hooks, counting,
// meta construction and materialisation, lazy (empty-init) construction.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "autograd/grad_mode.h"
#include "nn/nn.h"
#include "tensor/allocator.h"
#include "tensor/defaults.h"
#include "tensor/factories.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace loom::nn {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<no exception>";
}

// A leaf module with two parameters and two buffers (one integer, one non-persistent).
class Leafy : public Module {
 public:
  Leafy() {
    b = register_parameter("b", zeros({2}));
    a = register_parameter("a", ones({2, 3}));
    steps = register_buffer("steps", zeros({1}, DType::i64));
    scratch = register_buffer("scratch", zeros({3}), /*persistent=*/false);
  }
  Tensor forward(const Tensor& x) override { return matmul(x, a) ; }
  Tensor a, b, steps, scratch;
};

// Two levels of nesting: outer.{w, first.{b, a}, inner.{leaf.{b, a}}}.
class Inner : public Module {
 public:
  Inner() { leaf = register_module("leaf", std::make_shared<Leafy>()); }
  std::shared_ptr<Leafy> leaf;
};

class Outer : public Module {
 public:
  Outer() {
    w = register_parameter("w", ones({3}));
    first = register_module("first", std::make_shared<Leafy>());
    inner = register_module("inner", std::make_shared<Inner>());
  }
  Tensor w;
  std::shared_ptr<Leafy> first;
  std::shared_ptr<Inner> inner;
};

std::shared_ptr<Sequential> mlp(int64_t in, int64_t hidden, int64_t out) {
  return std::make_shared<Sequential>(std::make_shared<Linear>(in, hidden), std::make_shared<ReLU>(),
                                      std::make_shared<Linear>(hidden, out));
}

// ---------------------------------------------------------------- registration, traversal

TEST(Module, RegistrationOrderAndDottedNames) {
  auto m = std::make_shared<Outer>();
  EXPECT_THAT(m->named_parameters().keys(),
              ElementsAre("w", "first.b", "first.a", "inner.leaf.b", "inner.leaf.a"));
  EXPECT_THAT(m->named_parameters(/*recurse=*/false).keys(), ElementsAre("w"));
  EXPECT_THAT(m->named_buffers().keys(),
              ElementsAre("first.steps", "first.scratch", "inner.leaf.steps", "inner.leaf.scratch"));
  std::vector<Tensor> params = m->parameters();
  ASSERT_EQ(params.size(), 5u);
  EXPECT_TRUE(params[1].is_same(m->first->b));
  EXPECT_TRUE(params[4].is_same(m->inner->leaf->a));
  EXPECT_EQ(m->buffers().size(), 4u);
  EXPECT_THAT(m->named_modules().keys(), ElementsAre("", "first", "inner", "inner.leaf"));
  EXPECT_THAT(m->named_modules("model").keys(),
              ElementsAre("model", "model.first", "model.inner", "model.inner.leaf"));
  EXPECT_EQ(m->modules().size(), 4u);
  ASSERT_EQ(m->children().size(), 2u);
  EXPECT_EQ(m->children()[0], m->first);
  EXPECT_EQ(m->children()[1], m->inner);
  EXPECT_THAT(m->named_children().keys(), ElementsAre("first", "inner"));
  // Parameters are leaves that require grad.
  for (const Tensor& p : params) {
    EXPECT_TRUE(p.is_leaf());
    EXPECT_TRUE(p.requires_grad());
  }
  EXPECT_EQ(m->first->name(), "Leafy");
  EXPECT_EQ(std::make_shared<Linear>(2, 2)->name(), "Linear");
}

TEST(Module, RegistrationErrors) {
  Leafy m;
  EXPECT_THAT(error_of<ValueError>([&] { m.register_parameter("a", zeros({1})); }),
              HasSubstr("already registered"));
  EXPECT_THAT(error_of<ValueError>([&] { m.register_buffer("x.y", zeros({1})); }),
              HasSubstr("'.'"));
  EXPECT_THROW(m.register_parameter("", zeros({1})), ValueError);
  EXPECT_THAT(error_of<ValueError>([&] { m.register_parameter("i", zeros({1}, DType::i64)); }),
              HasSubstr("buffer"));
  EXPECT_THROW(m.register_module("child", std::shared_ptr<Module>()), ValueError);
  // A non-leaf registers as a detached leaf.
  Tensor x = ones({2}).requires_grad_();
  Tensor p = m.register_parameter("c", x * 2.0);
  EXPECT_TRUE(p.is_leaf());
  EXPECT_TRUE(p.requires_grad());
  // A frozen parameter.
  Tensor f = m.register_parameter("frozen", ones({4}), /*requires_grad=*/false);
  EXPECT_FALSE(f.requires_grad());
}

TEST(Module, SharedParameterIsListedOnce) {
  auto seq = std::make_shared<Sequential>();
  auto l = std::make_shared<Linear>(3, 3);
  seq->push_back(l);
  auto other = std::make_shared<Linear>(3, 3, false);
  other->replace_parameter("weight", l->weight);
  other->weight = l->weight;
  seq->push_back(other);
  EXPECT_THAT(seq->named_parameters().keys(), ElementsAre("0.weight", "0.bias"));
}

TEST(Module, NumParametersAndBytes) {
  auto m = mlp(4, 8, 3);  // (4*8 + 8) + (8*3 + 3) = 67
  EXPECT_EQ(m->num_parameters(), 67);
  EXPECT_EQ(m->parameter_bytes(), 67 * 4);
  Leafy l;
  l.register_parameter("frozen", ones({10}), false);
  EXPECT_EQ(l.num_parameters(), 18);
  EXPECT_EQ(l.num_parameters(/*trainable_only=*/true), 8);
  l.to(DType::f64);  // a module on the stack can be moved too
  EXPECT_EQ(l.parameter_bytes(), 18 * 8);
  EXPECT_THAT(error_of<RuntimeError>([&] { l.named_modules(); }), HasSubstr("make_shared"));
}

// ---------------------------------------------------------------- state dict

TEST(Module, StateDictRoundTrip) {
  manual_seed(1);
  auto a = mlp(4, 8, 3);
  manual_seed(2);
  auto b = mlp(4, 8, 3);
  EXPECT_THAT(a->state_dict().keys(), ElementsAre("0.weight", "0.bias", "2.weight", "2.bias"));
  EXPECT_FALSE(a->state_dict()["0.weight"].equal(b->state_dict()["0.weight"]));
  Tensor b_weight = b->parameters()[0];
  LoadStateDictResult r = b->load_state_dict(a->state_dict());
  EXPECT_TRUE(r.missing_keys.empty());
  EXPECT_TRUE(r.unexpected_keys.empty());
  for (const auto& [name, t] : a->state_dict()) EXPECT_TRUE(t.equal(b->state_dict()[name])) << name;
  EXPECT_TRUE(b_weight.is_same(b->parameters()[0]));  // loaded in place
  // The state dict holds the parameters themselves (no copy), so it changes with them.
  StateDict sd = a->state_dict();
  {
    NoGradGuard g;
    a->parameters()[1].fill_(5.0);
  }
  EXPECT_EQ(sd["0.bias"].to_vector<float>()[0], 5.0f);
  // Persistent buffers are included, non-persistent ones not.
  EXPECT_THAT(Leafy().state_dict().keys(), ElementsAre("b", "a", "steps"));
}

TEST(Module, LoadStateDictStrictErrors) {
  auto m = mlp(4, 8, 3);
  StateDict sd = m->state_dict();
  StateDict partial;
  partial.insert("0.weight", sd["0.weight"]);
  partial.insert("2.bias", sd["2.bias"]);
  partial.insert("extra.thing", zeros({1}));
  std::string msg = error_of<ValueError>([&] { m->load_state_dict(partial); });
  EXPECT_THAT(msg, HasSubstr("missing keys: '0.bias' '2.weight'"));
  EXPECT_THAT(msg, HasSubstr("unexpected keys: 'extra.thing'"));
  EXPECT_THAT(msg, HasSubstr("strict=false"));

  StateDict wrong = m->state_dict();
  wrong.insert("2.weight", zeros({3, 7}));
  msg = error_of<ValueError>([&] { m->load_state_dict(wrong, /*strict=*/false); });
  EXPECT_THAT(msg, HasSubstr("'2.weight'"));
  EXPECT_THAT(msg, HasSubstr("[3, 7]"));
  EXPECT_THAT(msg, HasSubstr("[3, 8]"));
}

TEST(Module, LoadStateDictNonStrictListsKeys) {
  auto m = mlp(4, 8, 3);
  Tensor w_before = m->state_dict()["2.weight"].clone();
  StateDict partial;
  partial.insert("0.bias", full({8}, 3.0));
  partial.insert("unknown", zeros({1}));
  LoadStateDictResult r = m->load_state_dict(partial, /*strict=*/false);
  EXPECT_THAT(r.missing_keys, ElementsAre("0.weight", "2.weight", "2.bias"));
  EXPECT_THAT(r.unexpected_keys, ElementsAre("unknown"));
  EXPECT_EQ(m->state_dict()["0.bias"].to_vector<float>(), std::vector<float>(8, 3.0f));
  EXPECT_TRUE(m->state_dict()["2.weight"].equal(w_before));
}

TEST(Module, LoadStateDictConvertsDtype) {
  auto m = std::make_shared<Linear>(2, 2);
  StateDict sd;
  sd.insert("weight", from_vector<double>({1, 2, 3, 4}, Shape{2, 2}));
  sd.insert("bias", from_vector<double>({5, 6}));
  m->load_state_dict(sd);
  EXPECT_EQ(m->weight.dtype(), DType::f32);
  EXPECT_EQ(m->weight.to_vector<float>(), (std::vector<float>{1, 2, 3, 4}));
}

// ---------------------------------------------------------------- modes, apply, moves

TEST(Module, TrainEvalPropagates) {
  auto m = std::make_shared<Outer>();
  for (auto& sub : m->modules()) EXPECT_TRUE(sub->is_training());
  m->eval();
  for (auto& sub : m->modules()) EXPECT_FALSE(sub->is_training());
  m->inner->train();
  EXPECT_FALSE(m->is_training());
  EXPECT_TRUE(m->inner->leaf->is_training());
  m->train(true);
  for (auto& sub : m->modules()) EXPECT_TRUE(sub->is_training());
}

TEST(Module, ApplyVisitsChildrenFirst) {
  auto m = std::make_shared<Outer>();
  std::vector<Module*> order;
  m->apply([&](Module& x) { order.push_back(&x); });
  ASSERT_EQ(order.size(), 4u);
  EXPECT_EQ(order[0], m->first.get());
  EXPECT_EQ(order[1], m->inner->leaf.get());
  EXPECT_EQ(order[2], m->inner.get());
  EXPECT_EQ(order[3], m.get());
}

TEST(Module, ToDtypeConvertsOnlyFloatingTensors) {
  auto m = std::make_shared<Outer>();
  Tensor w = m->w, steps = m->first->steps;
  TensorImpl* w_impl = w.impl();
  m->to(DType::bf16);
  for (const Tensor& p : m->parameters()) EXPECT_EQ(p.dtype(), DType::bf16);
  EXPECT_EQ(m->first->scratch.dtype(), DType::bf16);
  EXPECT_EQ(steps.dtype(), DType::i64);
  EXPECT_EQ(m->named_buffers()["first.steps"].dtype(), DType::i64);
  EXPECT_EQ(w.impl(), w_impl);
  EXPECT_EQ(w.dtype(), DType::bf16);  // the old handle sees the conversion
  EXPECT_TRUE(w.requires_grad());
  EXPECT_EQ(w.to_vector<float>(), (std::vector<float>{1, 1, 1}));
}

TEST(Module, MovesKeepParameterIdentityForOptimizers) {
  manual_seed(4);
  auto m = std::make_shared<Linear>(3, 2);
  // An "optimizer" takes its handles before the move.
  std::vector<Tensor> handles = m->parameters();
  std::vector<TensorImpl*> impls;
  for (const Tensor& p : handles) impls.push_back(p.impl());

  m->to(Device::cpu());  // a no-op move
  m->to(Device::cpu(), DType::f64);
  for (size_t i = 0; i < handles.size(); ++i) {
    EXPECT_EQ(m->parameters()[i].impl(), impls[i]);
    EXPECT_EQ(handles[i].dtype(), DType::f64);
  }
  // One SGD step through the old handles changes the module's parameters.
  Tensor x = randn({4, 3}, DType::f64);
  (*m)(x).sum().backward();
  Tensor before = m->weight.clone();
  {
    NoGradGuard g;
    for (Tensor& p : handles) p.sub_(p.grad(), 0.1);
  }
  // d sum(x W^T + b) / dW = column sums of x, broadcast over rows.
  Tensor want = before - x.sum({0}).unsqueeze(0).expand({2, 3}) * 0.1;
  EXPECT_TRUE(m->weight.allclose(want, 1e-12, 1e-12));
  EXPECT_TRUE(m->named_parameters()["bias"].is_same(handles[1]));

  // Through meta and back: still the same handles.
  m->to(Device::meta());
  EXPECT_TRUE(handles[0].is_meta());
  EXPECT_THAT(error_of<RuntimeError>([&] { m->to(Device::cpu()); }), HasSubstr("to_empty"));
  m->to_empty(Device::cpu());
  EXPECT_TRUE(handles[0].is_cpu());
  EXPECT_EQ(m->weight.impl(), impls[0]);
}

TEST(Module, MoveKeepsGradientOfTheSameShape) {
  auto m = std::make_shared<Linear>(2, 2);
  (*m)(ones({1, 2})).sum().backward();
  m->to(DType::f64);
  ASSERT_TRUE(m->weight.grad().defined());
  EXPECT_EQ(m->weight.grad().dtype(), DType::f64);
}

// A wrapper that presents another module's tree as its own (as FabricModule does).
class Presenting : public Module {
 public:
  explicit Presenting(std::shared_ptr<Module> inner) : inner_(std::move(inner)) {}
  void walk_parameters(ParameterWalk& walk, bool recurse) const override {
    inner_->walk_parameters(walk, recurse);
  }
  OrderedDict<std::shared_ptr<Module>> named_modules(const std::string& prefix = "") override {
    return inner_->named_modules(prefix);
  }
  void walk_modules(std::vector<Module*>& out) override { inner_->walk_modules(out); }
  std::shared_ptr<Module> inner_;
};

TEST(Module, MovesFollowAWrappersTree) {
  auto inner = mlp(2, 3, 1);
  auto wrapper = std::make_shared<Presenting>(inner);
  wrapper->to(DType::f64);
  for (const Tensor& p : inner->parameters()) EXPECT_EQ(p.dtype(), DType::f64);
  EXPECT_EQ(wrapper->num_parameters(), inner->num_parameters());
  wrapper->to_empty(Device::meta());
  for (const Tensor& p : inner->parameters()) EXPECT_TRUE(p.is_meta());
  wrapper->materialize(Device::cpu());
  for (const Tensor& p : inner->parameters()) EXPECT_TRUE(p.is_cpu());
}

TEST(Module, ZeroGrad) {
  auto m = mlp(3, 4, 2);
  (*m)(ones({2, 3})).sum().backward();
  for (const Tensor& p : m->parameters()) ASSERT_TRUE(p.grad().defined());
  m->zero_grad(/*set_to_none=*/false);
  for (const Tensor& p : m->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    for (float g : p.grad().to_vector<float>()) EXPECT_EQ(g, 0.0f);
  }
  m->zero_grad();
  for (const Tensor& p : m->parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(Module, ForwardHooksReplaceInputAndOutputAndCanBeRemoved) {
  auto lin = std::make_shared<Linear>(2, 2, false);
  {
    NoGradGuard g;
    lin->weight.copy_(from_vector<float>({1, 0, 0, 1}, Shape{2, 2}));  // identity
  }
  std::vector<std::string> calls;
  int pre = lin->register_forward_pre_hook([&](Module& m, const Tensor& x) -> std::optional<Tensor> {
    EXPECT_EQ(&m, lin.get());
    calls.push_back("pre");
    return x * 2.0;
  });
  int post = lin->register_forward_hook(
      [&](Module&, const Tensor& in, const Tensor& out) -> std::optional<Tensor> {
        calls.push_back("post");
        EXPECT_EQ(in.to_vector<float>(), (std::vector<float>{2, 4}));  // the replaced input
        return out + 1.0;
      });
  int observe = lin->register_forward_hook(
      [&](Module&, const Tensor&, const Tensor& out) -> std::optional<Tensor> {
        calls.push_back("observe");
        EXPECT_EQ(out.to_vector<float>(), (std::vector<float>{3, 5}));  // after the first post
        return std::nullopt;
      });
  Tensor x = from_vector<float>({1, 2}, Shape{1, 2});
  EXPECT_EQ((*lin)(x).to_vector<float>(), (std::vector<float>{3, 5}));
  EXPECT_THAT(calls, ElementsAre("pre", "post", "observe"));
  EXPECT_EQ(lin->forward(x).to_vector<float>(), (std::vector<float>{1, 2}));  // no hooks
  lin->remove_hook(pre);
  lin->remove_hook(post);
  lin->remove_hook(observe);
  calls.clear();
  EXPECT_EQ((*lin)(x).to_vector<float>(), (std::vector<float>{1, 2}));
  EXPECT_TRUE(calls.empty());
}

TEST(Module, ForwardNotImplementedNamesTheModule) {
  ModuleList list;
  EXPECT_THAT(error_of<RuntimeError>([&] { list(ones({1})); }), HasSubstr("ModuleList"));
}

// ---------------------------------------------------------------- meta and lazy construction

TEST(ModuleMeta, MetaConstructionAllocatesNothing) {
  int64_t before = memory_stats().current_bytes;
  std::shared_ptr<Linear> big;
  std::shared_ptr<GPT> gpt;
  {
    DefaultDeviceGuard meta(Device::meta());
    big = std::make_shared<Linear>(4096, 4096);
    GPTConfig cfg;
    cfg.vocab_size = 512;
    cfg.n_embd = 128;
    cfg.n_layer = 2;
    gpt = std::make_shared<GPT>(cfg);
  }
  EXPECT_EQ(memory_stats().current_bytes, before);
  for (const Tensor& p : big->parameters()) EXPECT_TRUE(p.is_meta());
  for (const Tensor& p : gpt->parameters()) EXPECT_TRUE(p.is_meta());
  EXPECT_EQ(big->weight.sizes(), (Shape{4096, 4096}));
  EXPECT_EQ(big->parameter_bytes(), (4096 * 4096 + 4096) * 4);
  EXPECT_THROW(big->weight.to_vector<float>(), Error);

  // to_empty + reset_parameters gives real, initialised values.
  TensorImpl* w_impl = big->weight.impl();
  big->to_empty(Device::cpu());
  EXPECT_EQ(big->weight.impl(), w_impl);
  EXPECT_TRUE(big->weight.is_cpu());
  big->reset_parameters();
  std::vector<float> w = big->weight.to_vector<float>();
  double bound = 1.0 / std::sqrt(4096.0), max_abs = 0;
  for (float v : w) max_abs = std::max(max_abs, double(std::abs(v)));
  EXPECT_LE(max_abs, bound);
  EXPECT_GT(max_abs, 0.99 * bound);

  // materialize() does both for every submodule.
  gpt->materialize(Device::cpu());
  for (const auto& [name, p] : gpt->named_parameters()) {
    EXPECT_TRUE(p.is_cpu()) << name;
    std::vector<float> v = p.to_vector<float>();
    for (float x : v) ASSERT_TRUE(std::isfinite(x)) << name;
  }
  EXPECT_EQ(gpt->ln_f->weight.to_vector<float>(), std::vector<float>(128, 1.0f));
  // (The logits hold the graph, whose saved tensors alias the parameters: drop them first.)
  EXPECT_EQ((*gpt)(zeros({1, 4}, DType::i64)).sizes(), (Shape{1, 4, 512}));
  big.reset();
  gpt.reset();
  EXPECT_EQ(memory_stats().current_bytes, before);
}

TEST(ModuleMeta, LoadStateDictMaterialisesAMetaModule) {
  auto real = std::make_shared<Linear>(3, 2);
  std::shared_ptr<Linear> meta;
  {
    DefaultDeviceGuard g(Device::meta());
    meta = std::make_shared<Linear>(3, 2);
  }
  meta->load_state_dict(real->state_dict());
  EXPECT_TRUE(meta->weight.is_cpu());
  EXPECT_TRUE(meta->weight.equal(real->weight));
  EXPECT_FALSE(meta->weight.storage() == real->weight.storage());  // a copy
}

TEST(ModuleMeta, EmptyInitTableMakesConstructionLazy) {
  int64_t before = memory_stats().current_bytes;
  std::shared_ptr<Linear> big;
  {
    init::InitTableGuard g(init::empty_init_table());
    big = std::make_shared<Linear>(8192, 8192);
  }
  EXPECT_FALSE(big->weight.is_materialized());
  EXPECT_FALSE(big->bias.is_materialized());
  EXPECT_EQ(memory_stats().current_bytes, before);
  EXPECT_TRUE(big->weight.is_cpu());
  // First touch allocates the bytes.
  big->weight.data_ptr<float>();
  EXPECT_TRUE(big->weight.is_materialized());
  EXPECT_GE(memory_stats().current_bytes - before, int64_t(8192) * 8192 * 4);
  big.reset();
  EXPECT_EQ(memory_stats().current_bytes, before);
}

}  // namespace
}  // namespace loom::nn
