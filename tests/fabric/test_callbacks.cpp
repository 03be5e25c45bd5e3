// Tests for Fabric::call and callbacks (fabric/callback.h): dispatch to every callback that
// defines a hook, in order; unknown hooks; the built-in on_after_setup; typed arguments and
// the errors for arguments a hook cannot take.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fabric_test_util.h"

namespace loom {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace fabric_test;

TEST(Callbacks, CallsEveryCallbackThatDefinesTheHookInOrder) {
  std::vector<std::string> log;
  auto first = std::make_shared<Callback>(), second = std::make_shared<Callback>(),
       silent = std::make_shared<Callback>();
  first->on("on_train_start", [&] { log.push_back("first.start"); });
  first->on("on_epoch_end", [&](int64_t e) { log.push_back("first.epoch" + std::to_string(e)); });
  silent->on("on_other", [&] { log.push_back("silent.other"); });
  second->on("on_epoch_end", [&](int64_t e) { log.push_back("second.epoch" + std::to_string(e)); });
  Fabric fabric({.accelerator = "cpu", .devices = 1, .callbacks = {first, silent, second}});
  EXPECT_EQ(fabric.callbacks().size(), 3u);

  fabric.call("on_train_start");
  fabric.call("on_epoch_end", 2);
  fabric.call("no_such_hook", 1, 2.0, std::string("x"));  // harmless
  EXPECT_THAT(log, ElementsAre("first.start", "first.epoch2", "second.epoch2"));
}

TEST(Callbacks, OnAfterSetupSeesTheWrappedModule) {
  FabricModule* seen = nullptr;
  Fabric* seen_fabric = nullptr;
  auto cb = std::make_shared<Callback>();
  cb->on("on_after_setup", [&](Fabric& f, FabricModule& m) {
    seen_fabric = &f;
    seen = &m;
  });
  Fabric fabric({.accelerator = "cpu", .devices = 1, .callbacks = {cb}});
  auto model = make_mlp();
  auto m = fabric.setup(model);
  EXPECT_EQ(seen, m.get()) << "the FabricModule, after wrapping";
  EXPECT_EQ(seen_fabric, &fabric);
  EXPECT_EQ(seen->original_module(), model);
}

TEST(Callbacks, ConvertsArgumentsToTheHookTypes) {
  auto cb = std::make_shared<Callback>();
  int64_t got_step = 0;
  double got_loss = 0;
  float got_f = 0;
  std::string got_name;
  Fabric* got_fabric = nullptr;
  cb->on("numbers", [&](int64_t step, double loss, float f) {
    got_step = step;
    got_loss = loss;
    got_f = f;
  });
  cb->on("objects", [&](Fabric& f, const std::string& name, std::vector<int>& out, Tensor t) {
    got_fabric = &f;
    got_name = name;
    out.push_back(int(t.item<double>()));
  });
  Fabric fabric({.accelerator = "cpu", .devices = 1, .callbacks = {cb}});
  fabric.call("numbers", 7, 0.25f, 3);  // int -> int64_t, float -> double, int -> float
  EXPECT_EQ(got_step, 7);
  EXPECT_EQ(got_loss, 0.25);
  EXPECT_EQ(got_f, 3.0f);

  std::vector<int> out;
  const std::string name = "run";
  fabric.call("objects", fabric, name, out, scalar_tensor(5.0));
  EXPECT_EQ(got_fabric, &fabric) << "Fabric travels by reference";
  EXPECT_EQ(got_name, "run");
  EXPECT_EQ(out, std::vector<int>{5}) << "a hook taking T& modifies the caller's object";
  fabric.call("objects", fabric, "literal", out, scalar_tensor(6.0));
  EXPECT_EQ(got_name, "literal");
  EXPECT_EQ(out, (std::vector<int>{5, 6}));
}

TEST(Callbacks, RefusesArgumentsAHookCannotTake) {
  auto cb = std::make_shared<Callback>();
  cb->on("on_save", [](const std::string&) {});
  cb->on("on_fabric", [](Fabric&) {});
  cb->on("on_list", [](std::vector<int>&) {});
  Fabric fabric({.accelerator = "cpu", .devices = 1, .callbacks = {cb}});
  EXPECT_THAT([&] { fabric.call("on_save", 5); },
              ::testing::ThrowsMessage<ValueError>(HasSubstr("hook 'on_save': argument 0 has type")));
  EXPECT_THAT([&] { fabric.call("on_save", std::string("a"), 1); },
              ::testing::ThrowsMessage<ValueError>(
                  HasSubstr("hook 'on_save' takes 1 arguments but was called with 2")));
  EXPECT_THAT([&] { fabric.call("on_fabric", 1.5); },
              ::testing::ThrowsMessage<ValueError>(
                  HasSubstr("hook 'on_fabric': argument 0 was not passed as a modifiable reference")));
  const std::vector<int> frozen{1};
  EXPECT_THAT([&] { fabric.call("on_list", frozen); },
              ::testing::ThrowsMessage<ValueError>(
                  HasSubstr("hook 'on_list': argument 0 was not passed as a modifiable reference")));
}

}  // namespace
}  // namespace loom
