// Meta inference for every native op family (Note [Meta tensors]): each case runs an op on
// CPU inputs and on meta inputs of the same shapes and dtypes, and asserts the outputs agree
// in shape, strides and dtype, that the meta outputs are meta, that the meta run allocated
// nothing, and that an input the CPU op rejects is rejected on meta too.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {
namespace {

using native::BinaryOp;
using native::UnaryOp;

// One input: its shape and dtype; integer inputs with `high` > 0 hold valid indices in
// [0, high), bool inputs hold random bits, floating inputs standard normal values.
struct In {
  Shape shape;
  DType dtype = DType::f32;
  int64_t high = 0;
};

struct Case {
  std::string name;
  std::vector<In> inputs;
  std::function<TensorList(const TensorList&)> op;
};

Tensor make_input(const In& in, Device device) {
  if (device.is_meta()) return empty(in.shape, in.dtype, Device::meta());
  if (in.dtype == DType::bool_) return native::binary(BinaryOp::lt, rand(in.shape), scalar_tensor(0.5));
  if (in.high > 0) return randint(0, in.high, in.shape, in.dtype);
  if (!is_floating(in.dtype)) return randint(0, 5, in.shape, in.dtype);
  return randn(in.shape, in.dtype);
}

TensorList one(const Tensor& t) { return {t}; }
template <class... T>
TensorList many(const std::tuple<T...>& t) {
  return std::apply([](const auto&... x) { return TensorList{x...}; }, t);
}

void run_case(const Case& c) {
  SCOPED_TRACE(c.name);
  TensorList cpu_in, meta_in;
  for (const In& in : c.inputs) {
    cpu_in.push_back(make_input(in, Device::cpu()));
    meta_in.push_back(make_input(in, Device::meta()));
  }
  TensorList cpu_out;
  bool cpu_threw = false;
  try {
    cpu_out = c.op(cpu_in);
  } catch (const Error&) {
    cpu_threw = true;
  }
  MemoryStats before = memory_stats();
  TensorList meta_out;
  bool meta_threw = false;
  try {
    meta_out = c.op(meta_in);
  } catch (const Error&) {
    meta_threw = true;
  }
  MemoryStats after = memory_stats();
  EXPECT_EQ(after.current_bytes, before.current_bytes) << "the meta run allocated";
  EXPECT_EQ(after.num_allocs, before.num_allocs) << "the meta run allocated";
  ASSERT_EQ(meta_threw, cpu_threw) << (cpu_threw ? "only the CPU run threw" : "only the meta run threw");
  if (cpu_threw) return;
  ASSERT_EQ(meta_out.size(), cpu_out.size());
  for (size_t i = 0; i < cpu_out.size(); ++i) {
    SCOPED_TRACE("output " + std::to_string(i));
    ASSERT_EQ(meta_out[i].defined(), cpu_out[i].defined());
    if (!cpu_out[i].defined()) continue;
    EXPECT_TRUE(meta_out[i].is_meta());
    EXPECT_TRUE(cpu_out[i].is_cpu());
    EXPECT_EQ(meta_out[i].sizes(), cpu_out[i].sizes());
    EXPECT_EQ(meta_out[i].dtype(), cpu_out[i].dtype());
    EXPECT_EQ(meta_out[i].strides(), cpu_out[i].strides());
    EXPECT_FALSE(meta_out[i].is_materialized());
  }
}

void run_all(const std::vector<Case>& cases) {
  manual_seed(0);
  for (const Case& c : cases) run_case(c);
}

std::string str(const Shape& s) { return shape_str(s); }

TEST(MetaOps, ElementwiseBinaryWithBroadcasting) {
  const BinaryOp ops[] = {BinaryOp::add, BinaryOp::sub,     BinaryOp::mul,     BinaryOp::div,
                          BinaryOp::pow, BinaryOp::maximum, BinaryOp::minimum, BinaryOp::eq,
                          BinaryOp::ne,  BinaryOp::lt,      BinaryOp::le,      BinaryOp::gt,
                          BinaryOp::ge};
  const std::pair<Shape, Shape> shapes[] = {
      {{2, 3}, {2, 3}}, {{2, 3}, {3}},    {{4, 1, 5}, {3, 1}}, {{}, {2, 2}},
      {{0, 3}, {1, 3}}, {{7}, {}},        {{2, 3}, {4}},       {{1}, {5, 1, 2}}};
  const std::pair<DType, DType> dtypes[] = {{DType::f32, DType::f32}, {DType::f32, DType::f64},
                                            {DType::i64, DType::f16}, {DType::bool_, DType::i32},
                                            {DType::bf16, DType::f16}, {DType::u8, DType::i64}};
  std::vector<Case> cases;
  for (BinaryOp op : ops)
    for (auto [a, b] : shapes)
      for (auto [da, db] : dtypes)
        cases.push_back({"binary " + std::to_string(int(op)) + " " + str(a) + str(b) + " " +
                             std::string(dtype_name(da)) + "," + std::string(dtype_name(db)),
                         {{a, da}, {b, db}},
                         [op](const TensorList& x) { return one(native::binary(op, x[0], x[1])); }});
  // In place: the result goes into the first operand.
  for (auto [a, b] : {std::pair<Shape, Shape>{{2, 3}, {3}}, {{2, 3}, {4}}, {{3}, {2, 3}}})
    cases.push_back({"binary_ " + str(a) + str(b), {{a}, {b}}, [](const TensorList& x) {
                       native::binary_(BinaryOp::add, x[0], x[1]);
                       return one(x[0]);
                     }});
  cases.push_back({"wrap_scalar", {{{2, 3}, DType::bf16}},
                   [](const TensorList& x) { return one(native::wrap_scalar(2.0, x[0])); }});
  cases.push_back({"add_scaled", {{{2, 3}}, {{3}}},
                   [](const TensorList& x) { return one(native::add_scaled(x[0], x[1], 0.5)); }});
  run_all(cases);
}

TEST(MetaOps, UnaryWhereClampMaskedFill) {
  const UnaryOp ops[] = {UnaryOp::neg,  UnaryOp::exp,     UnaryOp::log,       UnaryOp::sqrt,
                         UnaryOp::rsqrt, UnaryOp::abs,    UnaryOp::tanh,      UnaryOp::sigmoid,
                         UnaryOp::relu, UnaryOp::gelu_tanh, UnaryOp::gelu_erf, UnaryOp::square,
                         UnaryOp::sign, UnaryOp::logical_not};
  std::vector<Case> cases;
  for (UnaryOp op : ops)
    for (DType d : {DType::f32, DType::bf16, DType::f64, DType::i64, DType::bool_})
      for (Shape s : {Shape{2, 3}, Shape{}, Shape{0, 4}}) {
        std::string name = "unary " + std::to_string(int(op)) + " " + std::string(dtype_name(d)) + str(s);
        cases.push_back({name, {{s, d}}, [op](const TensorList& x) { return one(native::unary(op, x[0])); }});
        cases.push_back({name + " backward", {{s, d}, {s, d}}, [op](const TensorList& x) {
                           Tensor out = native::unary(op, x[1]);
                           return one(native::unary_backward(op, native::empty_like(out), x[1], out));
                         }});
      }
  for (auto [c, a, b] : {std::tuple<Shape, Shape, Shape>{{2, 3}, {2, 3}, {2, 3}},
                         {{3}, {2, 1}, {}}, {{4, 1}, {1, 5}, {4, 5}}, {{2}, {3}, {2}}})
    for (auto [da, db] : {std::pair{DType::f32, DType::f32}, {DType::f16, DType::f64}, {DType::i64, DType::f32}})
      cases.push_back({"where " + str(c) + str(a) + str(b), {{c, DType::bool_}, {a, da}, {b, db}},
                       [](const TensorList& x) { return one(native::where(x[0], x[1], x[2])); }});
  cases.push_back({"where non-bool cond", {{{2}, DType::f32}, {{2}}, {{2}}},
                   [](const TensorList& x) { return one(native::where(x[0], x[1], x[2])); }});
  for (DType d : {DType::f32, DType::i64, DType::bf16}) {
    cases.push_back({"clamp", {{{3, 4}, d}},
                     [](const TensorList& x) { return one(native::clamp(x[0], -0.5, 0.5)); }});
    cases.push_back({"clamp lo", {{{3, 4}, d}},
                     [](const TensorList& x) { return one(native::clamp(x[0], 0.0, std::nullopt)); }});
  }
  for (auto [s, m] : {std::pair<Shape, Shape>{{3, 4}, {3, 4}}, {{3, 4}, {4}}, {{3, 4}, {3, 1}},
                      {{3, 4}, {2, 4}}, {{4}, {3, 4}}})
    cases.push_back({"masked_fill " + str(s) + str(m), {{s}, {m, DType::bool_}},
                     [](const TensorList& x) { return one(native::masked_fill(x[0], x[1], -1e9)); }});
  run_all(cases);
}

TEST(MetaOps, Reductions) {
  std::vector<Case> cases;
  const Shape x = {3, 4, 5};
  for (Shape dims : {Shape{}, Shape{0}, Shape{-1}, Shape{0, 2}, Shape{1, 0, 2}, Shape{3}})
    for (bool keep : {false, true})
      for (DType d : {DType::f32, DType::bf16, DType::i32, DType::bool_}) {
        std::string tag = str(dims) + (keep ? " keep " : " ") + std::string(dtype_name(d));
        cases.push_back({"sum " + tag, {{x, d}}, [=](const TensorList& t) { return one(native::sum(t[0], dims, keep)); }});
        cases.push_back({"sum f64 " + tag, {{x, d}},
                         [=](const TensorList& t) { return one(native::sum(t[0], dims, keep, DType::f64)); }});
        cases.push_back({"mean " + tag, {{x, d}}, [=](const TensorList& t) { return one(native::mean(t[0], dims, keep)); }});
        cases.push_back({"var " + tag, {{x, d}}, [=](const TensorList& t) { return one(native::var(t[0], dims, 1, keep)); }});
        cases.push_back({"amax " + tag, {{x, d}}, [=](const TensorList& t) { return one(native::amax(t[0], dims, keep)); }});
        cases.push_back({"amin " + tag, {{x, d}}, [=](const TensorList& t) { return one(native::amin(t[0], dims, keep)); }});
      }
  for (int64_t dim : {0, 1, -1, 3})
    for (bool keep : {false, true})
      for (DType d : {DType::f32, DType::f16, DType::i64}) {
        std::string tag = std::to_string(dim) + (keep ? " keep " : " ") + std::string(dtype_name(d));
        cases.push_back({"max_dim " + tag, {{x, d}}, [=](const TensorList& t) { return many(native::max_dim(t[0], dim, keep)); }});
        cases.push_back({"min_dim " + tag, {{x, d}}, [=](const TensorList& t) { return many(native::min_dim(t[0], dim, keep)); }});
        cases.push_back({"argmax " + tag, {{x, d}}, [=](const TensorList& t) { return one(native::argmax(t[0], dim, keep)); }});
      }
  cases.push_back({"max_dim of a 0-dim", {{{}}}, [](const TensorList& t) { return many(native::max_dim(t[0], 0, false)); }});
  cases.push_back({"max_dim of an empty dim", {{{0, 3}}}, [](const TensorList& t) { return many(native::max_dim(t[0], 0, false)); }});
  cases.push_back({"argmax of an empty dim", {{{0, 3}}}, [](const TensorList& t) { return one(native::argmax(t[0], 0, true)); }});
  cases.push_back({"max_dim along a non-empty dim", {{{0, 3}}}, [](const TensorList& t) { return many(native::max_dim(t[0], 1, false)); }});
  for (Shape dims : {Shape{0}, Shape{}, Shape{1}})
    for (Shape s : {Shape{0, 3}, Shape{2, 0}}) {
      cases.push_back({"amax empty " + str(s) + str(dims), {{s}}, [=](const TensorList& t) { return one(native::amax(t[0], dims, false)); }});
      cases.push_back({"amin empty " + str(s) + str(dims), {{s}}, [=](const TensorList& t) { return one(native::amin(t[0], dims, true)); }});
      cases.push_back({"sum empty " + str(s) + str(dims), {{s}}, [=](const TensorList& t) { return one(native::sum(t[0], dims, false)); }});
      cases.push_back({"mean empty " + str(s) + str(dims), {{s}}, [=](const TensorList& t) { return one(native::mean(t[0], dims, false)); }});
      cases.push_back({"var empty " + str(s) + str(dims), {{s}}, [=](const TensorList& t) { return one(native::var(t[0], dims, 1, false)); }});
    }
  for (auto [g, s] : {std::pair<Shape, Shape>{{2, 3, 4}, {3, 4}}, {{2, 3, 4}, {1, 4}}, {{2, 3, 4}, {}},
                      {{2, 3, 4}, {2, 1, 1}}, {{5}, {5}}})
    cases.push_back({"sum_to " + str(g) + str(s), {{g}}, [s](const TensorList& t) { return one(native::sum_to(t[0], s)); }});
  run_all(cases);
}

TEST(MetaOps, SoftmaxLossNorm) {
  std::vector<Case> cases;
  for (Shape s : {Shape{4, 10}, Shape{2, 3, 5}, Shape{7}, Shape{0, 3}})
    for (int64_t dim : {0, -1})
      for (DType d : {DType::f32, DType::bf16, DType::f64}) {
        std::string tag = str(s) + std::to_string(dim) + std::string(dtype_name(d));
        cases.push_back({"softmax " + tag, {{s, d}}, [dim](const TensorList& x) { return one(native::softmax(x[0], dim)); }});
        cases.push_back({"log_softmax " + tag, {{s, d}}, [dim](const TensorList& x) { return one(native::log_softmax(x[0], dim)); }});
        cases.push_back({"softmax_backward " + tag, {{s, d}, {s, d}}, [dim](const TensorList& x) {
                           return one(native::softmax_backward(x[0], native::softmax(x[1], dim), dim));
                         }});
        cases.push_back({"log_softmax_backward " + tag, {{s, d}, {s, d}}, [dim](const TensorList& x) {
                           return one(native::log_softmax_backward(x[0], native::log_softmax(x[1], dim), dim));
                         }});
      }
  // cross_entropy: (N, C) / (N, C, d) / (C) logits with matching targets.
  const std::pair<Shape, Shape> ce[] = {{{8, 5}, {8}}, {{2, 5, 3}, {2, 3}}, {{5}, {}}, {{2, 5, 3, 4}, {2, 3, 4}}};
  for (auto [l, t] : ce)
    for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum})
      for (DType d : {DType::f32, DType::bf16}) {
        std::string tag = str(l) + std::to_string(int(r)) + std::string(dtype_name(d));
        cases.push_back({"cross_entropy " + tag, {{l, d}, {t, DType::i64, 5}}, [r](const TensorList& x) {
                           return one(native::cross_entropy(x[0], x[1], -100, 0.1, r));
                         }});
        cases.push_back({"cross_entropy_backward " + tag, {{l, d}, {t, DType::i64, 5}}, [r](const TensorList& x) {
                           Tensor loss = native::cross_entropy(x[0], x[1], 3, 0.0, r);
                           return one(native::cross_entropy_backward(native::empty_like(loss), x[0], x[1], 3, 0.0, r));
                         }});
      }
  cases.push_back({"cross_entropy bad target shape", {{{8, 5}}, {{7}, DType::i64, 5}},
                   [](const TensorList& x) { return one(native::cross_entropy(x[0], x[1], -100, 0, Reduction::mean)); }});
  cases.push_back({"cross_entropy float target", {{{8, 5}}, {{8}}},
                   [](const TensorList& x) { return one(native::cross_entropy(x[0], x[1], -100, 0, Reduction::mean)); }});
  // layer_norm with and without affine parameters, over one and two trailing dims.
  for (auto [s, ns] : {std::pair<Shape, Shape>{{2, 3, 8}, {8}}, {{2, 3, 8}, {3, 8}}, {{8}, {8}}, {{4, 8}, {4, 8}}})
    for (bool affine : {false, true})
      for (DType d : {DType::f32, DType::bf16}) {
        std::string tag = str(s) + str(ns) + (affine ? " affine " : " ") + std::string(dtype_name(d));
        std::vector<In> in = {{s, d}, {s, d}};
        if (affine) in.insert(in.end(), {{ns, d}, {ns, d}});
        cases.push_back({"layer_norm " + tag, in, [ns, affine](const TensorList& x) {
                           return many(native::layer_norm(x[0], ns, affine ? x[2] : Tensor(),
                                                          affine ? x[3] : Tensor(), 1e-5));
                         }});
        cases.push_back({"layer_norm_backward " + tag, in, [ns, affine](const TensorList& x) {
                           Tensor w = affine ? x[2] : Tensor(), b = affine ? x[3] : Tensor();
                           auto [out, mean, rstd] = native::layer_norm(x[0], ns, w, b, 1e-5);
                           return many(native::layer_norm_backward(x[1], x[0], ns, mean, rstd, w, b));
                         }});
      }
  cases.push_back({"layer_norm shape mismatch", {{{2, 8}}}, [](const TensorList& x) {
                     return many(native::layer_norm(x[0], {4}, Tensor(), Tensor(), 1e-5));
                   }});
  run_all(cases);
}

TEST(MetaOps, IndexingAndJoins) {
  std::vector<Case> cases;
  for (Shape idx : {Shape{6}, Shape{2, 3}, Shape{}, Shape{0}})
    for (DType d : {DType::f32, DType::bf16}) {
      cases.push_back({"embedding " + str(idx), {{{10, 4}, d}, {idx, DType::i64, 10}},
                       [](const TensorList& x) { return one(native::embedding(x[0], x[1])); }});
      Shape g = idx;
      g.push_back(4);
      cases.push_back({"embedding_backward " + str(idx), {{g, d}, {idx, DType::i64, 10}},
                       [](const TensorList& x) { return one(native::embedding_backward(x[0], x[1], 10)); }});
    }
  cases.push_back({"embedding float indices", {{{10, 4}}, {{3}}},
                   [](const TensorList& x) { return one(native::embedding(x[0], x[1])); }});
  for (int64_t dim : {0, 1, -1}) {
    cases.push_back({"index_select " + std::to_string(dim), {{{3, 4, 5}}, {{7}, DType::i64, 3}},
                     [dim](const TensorList& x) { return one(native::index_select(x[0], dim, x[1])); }});
    Shape src = {3, 4, 5};
    src[size_t(dim < 0 ? dim + 3 : dim)] = 7;
    cases.push_back({"index_add " + std::to_string(dim), {{{3, 4, 5}}, {{7}, DType::i64, 3}, {src}},
                     [dim](const TensorList& x) { return one(native::index_add(x[0], dim, x[1], x[2])); }});
  }
  cases.push_back({"index_select 2-D index", {{{3, 4}}, {{2, 2}, DType::i64, 3}},
                   [](const TensorList& x) { return one(native::index_select(x[0], 0, x[1])); }});
  for (Shape s : {Shape{4, 4}, Shape{3, 5}, Shape{2, 3, 4}, Shape{4}})
    for (int64_t k : {-1, 0, 2}) {
      cases.push_back({"tril " + str(s), {{s}}, [k](const TensorList& x) { return one(native::tril(x[0], k)); }});
      cases.push_back({"triu " + str(s), {{s, DType::i64}}, [k](const TensorList& x) { return one(native::triu(x[0], k)); }});
    }
  for (int64_t dim : {0, 1, -1}) {
    cases.push_back({"cat " + std::to_string(dim), {{{2, 3}}, {{2, 3}, DType::f64}, {{2, 3}}},
                     [dim](const TensorList& x) { return one(native::cat(x, dim)); }});
    cases.push_back({"stack " + std::to_string(dim), {{{2, 3}}, {{2, 3}}},
                     [dim](const TensorList& x) { return one(native::stack(x, dim)); }});
  }
  cases.push_back({"cat uneven", {{{2, 3}}, {{5, 3}}, {{0, 3}}},
                   [](const TensorList& x) { return one(native::cat(x, 0)); }});
  cases.push_back({"cat mismatch", {{{2, 3}}, {{2, 4}}}, [](const TensorList& x) { return one(native::cat(x, 0)); }});
  cases.push_back({"stack mismatch", {{{2, 3}}, {{3, 2}}}, [](const TensorList& x) { return one(native::stack(x, 0)); }});
  for (int64_t n : {1, 2, 3, 7}) {
    cases.push_back({"split " + std::to_string(n), {{{7, 4}}}, [n](const TensorList& x) { return native::split(x[0], n, 0); }});
    cases.push_back({"chunk " + std::to_string(n), {{{4, 7}}}, [n](const TensorList& x) { return native::chunk(x[0], n, -1); }});
  }
  cases.push_back({"split_with_sizes", {{{7, 4}}}, [](const TensorList& x) { return native::split_with_sizes(x[0], {2, 0, 5}, 0); }});
  cases.push_back({"split_with_sizes bad", {{{7, 4}}}, [](const TensorList& x) { return native::split_with_sizes(x[0], {2, 4}, 0); }});
  run_all(cases);
}

TEST(MetaOps, MatmulAndLinear) {
  std::vector<Case> cases;
  const std::pair<Shape, Shape> shapes[] = {
      {{5}, {5}},          {{3, 5}, {5}},          {{5}, {5, 4}},         {{3, 5}, {5, 4}},
      {{2, 3, 5}, {5, 4}}, {{3, 5}, {2, 5, 4}},    {{2, 3, 5}, {2, 5, 4}}, {{6, 1, 3, 5}, {2, 5, 4}},
      {{5}, {2, 5, 4}},    {{2, 3, 5}, {5}},       {{1, 5}, {5, 1}},      {{0, 5}, {5, 4}},
      {{3, 0}, {0, 4}},    {{3, 5}, {4, 5}},       {{2, 3, 5}, {3, 5, 4}}, {{}, {5}}};
  for (auto [a, b] : shapes)
    for (auto [da, db] : {std::pair{DType::f32, DType::f32}, {DType::bf16, DType::bf16}, {DType::f64, DType::f64},
                          {DType::f32, DType::f16}})
      cases.push_back({"matmul " + str(a) + str(b) + std::string(dtype_name(da)) + std::string(dtype_name(db)),
                       {{a, da}, {b, db}}, [](const TensorList& x) { return one(native::matmul(x[0], x[1])); }});
  for (Shape x : {Shape{3, 5}, Shape{2, 3, 5}, Shape{5}, Shape{0, 5}})
    for (bool bias : {false, true})
      for (DType d : {DType::f32, DType::bf16}) {
        std::vector<In> in = {{x, d}, {{4, 5}, d}};
        if (bias) in.push_back({{4}, d});
        cases.push_back({"linear " + str(x) + (bias ? " bias" : ""), in, [bias](const TensorList& t) {
                           return one(native::linear(t[0], t[1], bias ? t[2] : Tensor()));
                         }});
      }
  cases.push_back({"linear bad weight", {{{3, 5}}, {{4, 6}}}, [](const TensorList& t) { return one(native::linear(t[0], t[1], Tensor())); }});
  run_all(cases);
}

TEST(MetaOps, ViewsCopiesAndConversions) {
  std::vector<Case> cases;
  auto add = [&](std::string name, Shape s, std::function<Tensor(const Tensor&)> f) {
    cases.push_back({std::move(name), {{s}}, [f](const TensorList& x) { return one(f(x[0])); }});
  };
  add("view", {4, 6}, [](const Tensor& t) { return native::view(t, {2, -1, 3}); });
  add("view incompatible", {4, 6}, [](const Tensor& t) { return native::view(native::transpose(t, 0, 1), {24}); });
  add("reshape copy", {4, 6}, [](const Tensor& t) { return native::reshape(native::transpose(t, 0, 1), {24}); });
  add("reshape view", {4, 6}, [](const Tensor& t) { return native::reshape(t, {6, 4}); });
  add("transpose", {2, 3, 4}, [](const Tensor& t) { return native::transpose(t, 0, 2); });
  add("permute", {2, 3, 4}, [](const Tensor& t) { return native::permute(t, {2, 0, 1}); });
  add("permute repeated", {2, 3, 4}, [](const Tensor& t) { return native::permute(t, {0, 0, 1}); });
  add("slice", {10, 3}, [](const Tensor& t) { return native::slice(t, 0, -8, std::nullopt, 3); });
  add("select", {10, 3}, [](const Tensor& t) { return native::select(t, 1, -1); });
  add("select out of range", {10, 3}, [](const Tensor& t) { return native::select(t, 1, 3); });
  add("expand", {3, 1}, [](const Tensor& t) { return native::expand(t, {2, 3, 5}); });
  add("expand bad", {3, 2}, [](const Tensor& t) { return native::expand(t, {3, 5}); });
  add("squeeze", {1, 3, 1}, [](const Tensor& t) { return native::squeeze(t, std::nullopt); });
  add("unsqueeze", {3, 4}, [](const Tensor& t) { return native::unsqueeze(t, 1); });
  add("contiguous", {3, 4}, [](const Tensor& t) { return native::contiguous(native::transpose(t, 0, 1)); });
  add("clone", {3, 4}, [](const Tensor& t) { return native::clone(native::slice(t, 1, 0, 4, 2)); });
  add("to f16", {3, 4}, [](const Tensor& t) { return native::to(t, t.device(), DType::f16); });
  add("as_strided", {12}, [](const Tensor& t) { return native::as_strided(t, {3, 3}, {3, 1}, 2); });
  add("fill_", {3, 4}, [](const Tensor& t) {
    native::fill_(t, 2.0);
    return t;
  });
  cases.push_back({"copy_ broadcast", {{{3, 4}}, {{4}, DType::i64}}, [](const TensorList& x) {
                     native::copy_(x[0], x[1]);
                     return one(x[0]);
                   }});
  cases.push_back({"copy_ bad shape", {{{3, 4}}, {{3}}}, [](const TensorList& x) {
                     native::copy_(x[0], x[1]);
                     return one(x[0]);
                   }});
  run_all(cases);
}

TEST(MetaOps, ABillionParameterForwardAllocatesNothing) {
  // A GPT-sized step on meta: embedding, layer_norm, linear, softmax, cross_entropy.
  MemoryStats before = memory_stats();
  Device m = Device::meta();
  Tensor wte = empty({50304, 4096}, DType::bf16, m);
  Tensor idx = empty({8, 2048}, DType::i64, m);
  Tensor h = native::embedding(wte, idx);  // (8, 2048, 4096)
  auto [n, mu, rs] = native::layer_norm(h, {4096}, empty({4096}, DType::bf16, m), Tensor(), 1e-5);
  Tensor w = empty({16384, 4096}, DType::bf16, m);
  Tensor up = native::linear(n, w, Tensor());  // (8, 2048, 16384)
  Tensor logits = native::matmul(native::slice(up, -1, 0, 4096, 1), native::transpose(wte, 0, 1));
  Tensor loss = native::cross_entropy(native::view(logits, {-1, 50304}), native::view(idx, {-1}), -100, 0.0,
                                      Reduction::mean);
  EXPECT_EQ(logits.sizes(), (Shape{8, 2048, 50304}));
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_TRUE(loss.is_meta());
  EXPECT_EQ(memory_stats().current_bytes, before.current_bytes);
  EXPECT_EQ(memory_stats().num_allocs, before.num_allocs);
}

}  // namespace
}  // namespace loom
