// LR scheduler tests: each schedule against its closed form computed here, the lr written
// into every group, state_dict round trips and argument errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <numbers>

#include "optim/lr_scheduler.h"
#include "optim/sgd.h"
#include "tensor/factories.h"

namespace loom::optim {
namespace {

using ::testing::HasSubstr;

Tensor make_param() {
  Tensor p = zeros({3}, DType::f32);
  p.requires_grad_(true);
  return p;
}

// Two groups with base lrs 0.1 and 0.02.
std::shared_ptr<Optimizer> make_optimizer() {
  return std::make_shared<SGD>(
      std::vector<ParamGroup>{ParamGroup({make_param()}), ParamGroup({make_param()}, {{"lr", 0.02}})},
      SGDOptions{.lr = 0.1, .momentum = 0.9});
}

// Steps `sched` 30 times, checking the optimizer's lrs and get_last_lr() against want(epoch, base).
template <class Want>
void expect_schedule(LRScheduler& sched, const Want& want) {
  const double bases[] = {0.1, 0.02};
  for (int64_t epoch = 0; epoch < 30; ++epoch) {
    if (epoch > 0) sched.step();
    ASSERT_EQ(sched.last_epoch(), epoch);
    for (size_t g = 0; g < 2; ++g) {
      EXPECT_NEAR(sched.optimizer()->lr(g), want(epoch, bases[g]), 1e-15)
          << "epoch " << epoch << " group " << g;
      EXPECT_DOUBLE_EQ(sched.get_last_lr()[g], sched.optimizer()->lr(g));
    }
  }
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "(no ValueError)";
}

TEST(LRScheduler, StepLR) {
  StepLR sched(make_optimizer(), /*step_size=*/4, /*gamma=*/0.5);
  expect_schedule(sched, [](int64_t e, double base) { return base * std::pow(0.5, double(e / 4)); });
}

TEST(LRScheduler, CosineAnnealingLR) {
  CosineAnnealingLR sched(make_optimizer(), /*t_max=*/12, /*eta_min=*/0.001);
  expect_schedule(sched, [](int64_t e, double base) {
    return 0.001 + (base - 0.001) * 0.5 * (1.0 + std::cos(std::numbers::pi * double(e) / 12.0));
  });
}

TEST(LRScheduler, CosineAnnealingEndpoints) {
  auto opt = make_optimizer();
  CosineAnnealingLR sched(opt, 10, 0.0);
  EXPECT_DOUBLE_EQ(opt->lr(0), 0.1);
  for (int i = 0; i < 5; ++i) sched.step();
  EXPECT_NEAR(opt->lr(0), 0.05, 1e-15);
  for (int i = 0; i < 5; ++i) sched.step();
  EXPECT_NEAR(opt->lr(0), 0.0, 1e-15);
}

TEST(LRScheduler, LinearWarmupThenCosine) {
  LinearWarmup sched(make_optimizer(), /*warmup_steps=*/5, /*total_steps=*/20, /*min_lr_ratio=*/0.1);
  expect_schedule(sched, [](int64_t e, double base) {
    if (e < 5) return base * double(e + 1) / 5.0;
    if (e >= 20) return base * 0.1;
    const double progress = double(e - 5) / 15.0;
    return base * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
  });
}

TEST(LRScheduler, LinearWarmupShape) {
  auto opt = make_optimizer();
  LinearWarmup sched(opt, 4, 10);
  EXPECT_DOUBLE_EQ(opt->lr(0), 0.025);  // first warm-up step is base / W, not 0
  for (int i = 0; i < 3; ++i) sched.step();
  EXPECT_DOUBLE_EQ(opt->lr(0), 0.1);  // warm-up reaches the base lr
  sched.step();
  EXPECT_DOUBLE_EQ(opt->lr(0), 0.1);  // decay starts from the base lr
  for (int i = 0; i < 6; ++i) sched.step();
  EXPECT_DOUBLE_EQ(opt->lr(0), 0.0);
  LinearWarmup no_warmup(make_optimizer(), 0, 10);
  EXPECT_DOUBLE_EQ(no_warmup.optimizer()->lr(0), 0.1);
}

TEST(LRScheduler, LambdaLR) {
  LambdaLR sched(make_optimizer(), [](int64_t e) { return 1.0 / double(1 + e); });
  expect_schedule(sched, [](int64_t e, double base) { return base / double(1 + e); });
  LambdaLR per_group(make_optimizer(), std::vector<LambdaLR::Fn>{[](int64_t) { return 1.0; },
                                                                 [](int64_t e) { return 0.5 * double(e + 1); }});
  per_group.step();
  EXPECT_DOUBLE_EQ(per_group.get_last_lr()[0], 0.1);
  EXPECT_DOUBLE_EQ(per_group.get_last_lr()[1], 0.02);
}

TEST(LRScheduler, StateDictRoundTrip) {
  auto opt = make_optimizer();
  LinearWarmup sched(opt, 3, 15, 0.05);
  for (int i = 0; i < 7; ++i) sched.step();
  SchedulerStateDict saved = sched.state_dict();
  EXPECT_EQ(saved.last_epoch, 7);
  EXPECT_EQ(saved.base_lrs, (std::vector<double>{0.1, 0.02}));

  auto opt2 = make_optimizer();
  opt2->set_lr(0.7);  // a different base: the loaded base lrs win
  LinearWarmup resumed(opt2, 3, 15, 0.05);
  resumed.load_state_dict(saved);
  EXPECT_EQ(resumed.last_epoch(), 7);
  EXPECT_EQ(resumed.base_lrs(), saved.base_lrs);
  EXPECT_DOUBLE_EQ(opt2->lr(0), opt->lr(0));
  for (int i = 0; i < 5; ++i) {
    sched.step();
    resumed.step();
    EXPECT_EQ(resumed.get_last_lr(), sched.get_last_lr());
  }
}

TEST(LRScheduler, Errors) {
  EXPECT_THAT(error_of([] { StepLR(make_optimizer(), 0); }),
              HasSubstr("StepLR: invalid step_size 0 (must be > 0)"));
  EXPECT_THAT(error_of([] { CosineAnnealingLR(make_optimizer(), -1); }),
              HasSubstr("CosineAnnealingLR: invalid T_max -1"));
  EXPECT_THAT(error_of([] { LinearWarmup(make_optimizer(), 10, 5); }),
              HasSubstr("LinearWarmup: invalid warmup_steps 10 / total_steps 5"));
  EXPECT_THAT(error_of([] { LinearWarmup(make_optimizer(), 1, 5, 2.0); }),
              HasSubstr("invalid min_lr_ratio 2"));
  EXPECT_THAT(error_of([] { StepLR(nullptr, 1); }), HasSubstr("StepLR: got a null optimizer"));
  EXPECT_THAT(error_of([] {
                LambdaLR(make_optimizer(), std::vector<LambdaLR::Fn>{[](int64_t) { return 1.0; }});
              }),
              HasSubstr("LambdaLR: got 1 functions for 2 parameter groups"));
  StepLR sched(make_optimizer(), 2);
  EXPECT_THAT(error_of([&] { sched.load_state_dict({3, {0.1}}); }),
              HasSubstr("StepLR: load_state_dict: the state dict has 1 base lrs but the "
                        "optimizer has 2 parameter groups"));
  sched.optimizer()->add_param_group(ParamGroup({make_param()}));
  EXPECT_THAT(error_of([&] { sched.step(); }),
              HasSubstr("the optimizer has 3 parameter groups but the scheduler was built for 2"));
}

}  // namespace
}  // namespace loom::optim
