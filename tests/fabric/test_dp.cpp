// The "dp" strategy: one process, the batch split along dim 0 over replica threads, outputs
// gathered in order, gradients summed into the original parameters. References are the same
// module run on the whole batch on one thread.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "autograd/grad_mode.h"
#include "fabric/dp.h"
#include "fabric/fabric.h"
#include "nn/nn.h"
#include "optim/sgd.h"
#include "tensor/autocast.h"
#include "tensor/defaults.h"
#include "tensor/factories.h"
#include "tensor/random.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<nn::Sequential> make_mlp() {
  return std::make_shared<nn::Sequential>(
      std::make_shared<nn::Linear>(5, 16), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(16, 16), std::make_shared<nn::Tanh>(),
      std::make_shared<nn::Linear>(16, 3));
}

Tensor labels(int64_t n) {
  std::vector<int64_t> y;
  for (int64_t i = 0; i < n; ++i) y.push_back((i * 7 + 1) % 3);
  return from_vector<int64_t>(y);
}

// max |a - b| over all elements.
double max_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>();
}

// Records every call: the chunk's rows and the thread it ran on; returns 2x + 1.
class Recorder : public nn::Module {
 public:
  Tensor forward(const Tensor& x) override {
    std::lock_guard<std::mutex> lock(mu);
    rows.insert(x.size(0));
    row_counts.push_back(x.size(0));
    threads.insert(std::this_thread::get_id());
    return x * 2.0 + 1.0;
  }
  std::mutex mu;
  std::multiset<int64_t> rows;
  std::vector<int64_t> row_counts;
  std::set<std::thread::id> threads;
};

struct Case {
  int devices;
  int64_t batch;
};

class DpMatchesSingleDevice : public ::testing::TestWithParam<Case> {};

// Loss and every gradient of a mean-reduced loss equal the single-device values on the
// whole batch: each replica's gradient reaches the shared parameters through the gather.
TEST_P(DpMatchesSingleDevice, LossAndGradients) {
  const Case c = GetParam();
  DefaultDTypeGuard f64(DType::f64);
  manual_seed(3);
  auto model = make_mlp();
  Tensor x = randn({c.batch, 5});
  Tensor y = labels(c.batch);

  Tensor ref_loss = cross_entropy((*model)(x), y);
  ref_loss.backward();
  std::vector<Tensor> ref_grads;
  for (const Tensor& p : model->parameters()) ref_grads.push_back(p.grad().clone());
  model->zero_grad();

  Fabric fabric({.accelerator = "cpu", .strategy = "dp", .devices = c.devices, .precision = "64-true"});
  auto m = fabric.setup(model);
  Tensor loss = cross_entropy((*m)(x), y);
  fabric.backward(loss);

  EXPECT_LE(std::abs(loss.item<double>() - ref_loss.item<double>()), 1e-6);
  auto params = model->parameters();
  ASSERT_EQ(params.size(), ref_grads.size());
  for (size_t i = 0; i < params.size(); ++i) {
    ASSERT_TRUE(params[i].grad().defined()) << "parameter " << i;
    EXPECT_LE(max_diff(params[i].grad(), ref_grads[i]), 1e-6) << "parameter " << i;
  }
}

// 12 splits evenly, 7 and 11 do not, 2 rows leave a device idle, 1 row runs one replica.
INSTANTIATE_TEST_SUITE_P(DevicesAndBatches, DpMatchesSingleDevice,
                         ::testing::Values(Case{2, 12}, Case{3, 12}, Case{2, 7}, Case{3, 7},
                                           Case{3, 11}, Case{3, 2}, Case{2, 1}),
                         [](const auto& info) {
                           return "devices" + std::to_string(info.param.devices) + "_batch" +
                                  std::to_string(info.param.batch);
                         });

TEST(DataParallel, F32GradientsMatchSingleDevice) {
  manual_seed(4);
  auto model = make_mlp();
  Tensor x = randn({9, 5});
  Tensor y = labels(9);
  Tensor ref = cross_entropy((*model)(x), y);
  ref.backward();
  std::vector<Tensor> ref_grads;
  for (const Tensor& p : model->parameters()) ref_grads.push_back(p.grad().clone());
  model->zero_grad();
  DataParallel dp(model, 3);
  Tensor loss = cross_entropy(dp(x), y);
  loss.backward();
  EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-6);
  auto params = model->parameters();
  for (size_t i = 0; i < params.size(); ++i)
    EXPECT_TRUE(params[i].grad().allclose(ref_grads[i], 1e-5, 1e-6)) << "parameter " << i;
}

TEST(DataParallel, OutputsGatheredInOrderFromOneThreadPerChunk) {
  auto rec = std::make_shared<Recorder>();
  DataParallel dp(rec, 3);
  Tensor x = arange(0.0, 21.0).reshape({7, 3});
  Tensor out = dp(x);
  EXPECT_TRUE(out.equal(x * 2.0 + 1.0)) << out;
  // Balanced chunks: 3, 2, 2 rows, each on its own thread.
  EXPECT_EQ(rec->rows, (std::multiset<int64_t>{3, 2, 2}));
  EXPECT_EQ(rec->threads.size(), 3u);
}

TEST(DataParallel, InputGradientFlowsBackThroughTheSplit) {
  auto model = std::make_shared<nn::Linear>(4, 2);
  Tensor x = randn({5, 4}).requires_grad_();
  Tensor ref_x = x.detach().clone().requires_grad_();
  (*model)(ref_x).square().sum().backward();
  Tensor ref = ref_x.grad();
  DataParallel dp(model, 2);
  dp(x).square().sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(x.grad().allclose(ref, 1e-5, 1e-6));
}

// Fails on the chunks whose first value is >= `from`; the message names that value.
class FailFrom : public nn::Module {
 public:
  explicit FailFrom(double f) : from(f) {}
  Tensor forward(const Tensor& x) override {
    double first = x.flatten().select(0, 0).item<double>();
    if (first >= from) throw ValueError("replica saw first value " + std::to_string(int(first)));
    return x;
  }
  double from;
};

TEST(DataParallel, ReplicaExceptionPropagatesLowestChunkFirst) {
  Tensor x = arange(0.0, 6.0).reshape({6, 1});  // chunks start at 0, 2, 4
  DataParallel one(std::make_shared<FailFrom>(4.0), 3);
  EXPECT_THAT([&] { one(x); }, ::testing::ThrowsMessage<ValueError>(HasSubstr("first value 4")));
  DataParallel two(std::make_shared<FailFrom>(2.0), 3);
  EXPECT_THAT([&] { two(x); }, ::testing::ThrowsMessage<ValueError>(HasSubstr("first value 2")));
  // The wrapper stays usable after a failure.
  DataParallel ok(std::make_shared<FailFrom>(100.0), 3);
  EXPECT_TRUE(ok(x).equal(x));
}

TEST(DataParallel, ScalarInputIsRejected) {
  DataParallel dp(std::make_shared<Recorder>(), 2);
  EXPECT_THAT([&] { dp(full({}, 1.0)); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("needs a batch dim")));
}

TEST(DataParallel, ForwardHookRunsOncePerChunk) {
  auto model = std::make_shared<nn::Linear>(3, 2);
  std::atomic<int> calls{0};
  model->register_forward_hook([&](nn::Module&, const Tensor&, const Tensor& out) -> std::optional<Tensor> {
    ++calls;
    return out + 10.0;
  });
  Tensor x = randn({5, 3});
  Tensor ref = (*model)(x);
  EXPECT_EQ(calls.load(), 1);
  calls = 0;
  DataParallel dp(model, 2);
  Tensor out = dp(x);
  EXPECT_EQ(calls.load(), 2);
  EXPECT_TRUE(out.allclose(ref, 1e-6, 1e-6));
}

// Replica threads see the caller's grad mode, autocast and default dtype.
TEST(DataParallel, ReplicasInheritTheCallersThreadState) {
  auto model = std::make_shared<nn::Linear>(3, 2);
  DataParallel dp(model, 2);
  Tensor x = randn({4, 3});
  {
    NoGradGuard no_grad;
    EXPECT_FALSE(dp(x).requires_grad());
  }
  EXPECT_TRUE(dp(x).requires_grad());
  {
    AutocastGuard autocast(true, DType::bf16);
    EXPECT_EQ(dp(x).dtype(), DType::bf16);
  }
  // A module that builds a tensor with the default dtype inside forward.
  class AddOnes : public nn::Module {
   public:
    Tensor forward(const Tensor& x) override { return ones({x.size(0), 1}); }
  };
  DataParallel made(std::make_shared<AddOnes>(), 2);
  DefaultDTypeGuard f64(DType::f64);
  EXPECT_EQ(made(randn({4, 1})).dtype(), DType::f64);
}

// Each chunk and each step draws its own dropout mask; a seed reproduces them.
TEST(DataParallel, DropoutMasksDifferPerChunkAndStepAndFollowTheSeed) {
  DataParallel dp(std::make_shared<nn::Dropout>(0.5), 2);
  Tensor x = ones({2, 256});
  manual_seed(11);
  Tensor a = dp(x), b = dp(x);
  EXPECT_FALSE(a.select(0, 0).equal(a.select(0, 1)));
  EXPECT_FALSE(a.equal(b));
  manual_seed(11);
  EXPECT_TRUE(dp(x).equal(a));
}

TEST(DataParallelStrategy, InitModuleAndSetupWorkWithoutLaunch) {
  Fabric fabric({.accelerator = "cpu", .strategy = "dp", .devices = 3});
  EXPECT_EQ(fabric.strategy().name(), "dp");
  EXPECT_FALSE(fabric.launched());
  EXPECT_EQ(fabric.world_size(), 1);
  EXPECT_EQ(fabric.device(), Device::cpu());
  std::shared_ptr<nn::Sequential> model;
  {
    auto ctx = fabric.init_module();
    model = make_mlp();
  }
  auto opt = std::make_shared<optim::SGD>(model->parameters(), 0.1);
  auto [m, o] = fabric.setup(model, opt);
  auto* dp = dynamic_cast<DataParallel*>(m->forward_module().get());
  ASSERT_NE(dp, nullptr);
  EXPECT_EQ(dp->replicas(), 3);
  EXPECT_EQ(m->state_dict().keys(), model->state_dict().keys());
  EXPECT_EQ(dp->state_dict().keys(), model->state_dict().keys());

  // One SGD step through Fabric equals the same step taken on one thread.
  Tensor x = randn({8, 5});
  Tensor y = labels(8);
  Tensor ref = cross_entropy((*model)(x), y);
  ref.backward();
  std::vector<Tensor> want;
  {
    NoGradGuard no_grad;
    for (const Tensor& p : model->parameters()) want.push_back(p - p.grad() * 0.1);
  }
  model->zero_grad();
  fabric.backward(cross_entropy((*m)(x), y));
  o->step();
  auto params = model->parameters();
  for (size_t i = 0; i < params.size(); ++i)
    EXPECT_TRUE(params[i].allclose(want[i], 1e-5, 1e-6)) << "parameter " << i;
}

// A small GPT (embeddings, attention, layer norms) through 3 replicas: the concurrent graphs
// and the kernels' per-thread scratch buffers give the single-thread gradients.
TEST(DataParallel, GptGradientsMatchSingleDevice) {
  DefaultDTypeGuard f64(DType::f64);
  manual_seed(5);
  auto gpt = std::make_shared<nn::GPT>(nn::GPTConfig{.vocab_size = 32, .block_size = 8, .n_layer = 2,
                                                     .n_head = 2, .n_embd = 16});
  Tensor idx = randint(0, 32, {5, 8});
  Tensor tgt = randint(0, 32, {5, 8});
  auto loss_of = [&](nn::Module& m) {
    return cross_entropy(m(idx).reshape({-1, 32}), tgt.reshape({-1}));
  };
  Tensor ref = loss_of(*gpt);
  ref.backward();
  std::vector<Tensor> ref_grads;
  for (const Tensor& p : gpt->parameters()) ref_grads.push_back(p.grad().clone());
  gpt->zero_grad();
  DataParallel dp(gpt, 3);
  for (int step = 0; step < 3; ++step) {  // repeated: fresh threads and graphs each time
    gpt->zero_grad();
    Tensor loss = loss_of(dp);
    loss.backward();
    EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-9);
    auto params = gpt->parameters();
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_LE(max_diff(params[i].grad(), ref_grads[i]), 1e-9) << "parameter " << i;
  }
}

TEST(DataParallelStrategy, AutoWithSeveralDevicesStillMeansDdp) {
  Fabric fabric({.accelerator = "cpu", .strategy = "auto", .devices = 2});
  EXPECT_EQ(fabric.strategy().name(), "ddp");
}

}  // namespace
}  // namespace loom
