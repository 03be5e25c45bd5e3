// What Fabric::setup() returns: FabricModule, FabricOptimizer and FabricDataLoader.
//
// FabricModule is a WrapperModule around the strategy-wrapped module that forward runs (a DDP
// wrapper, say), and keeps the original one the user built. Forward runs inside the
// precision plugin's context; parameters, state_dict() and load_state_dict() go through the
// strategy's wrappers to the original module, with no wrapper prefix in the keys (a sharding
// strategy's wrapper presents its shards instead). FabricOptimizer is an
// optim::Optimizer whose step() goes through the strategy and precision plugin (the f16
// gradient scaler lives there). FabricDataLoader moves each batch to the device.
#pragma once

#include <memory>

#include "data/dataloader.h"
#include "fabric/strategy.h"
#include "fabric/wrapper_module.h"
#include "nn/module.h"
#include "optim/optimizer.h"

namespace loom {

class FabricModule : public WrapperModule {
 public:
  FabricModule(std::shared_ptr<nn::Module> forward_module, std::shared_ptr<nn::Module> original,
               Strategy* strategy);

  Tensor forward(const Tensor& input) override;
  std::string name() const override { return "FabricModule(" + original_->name() + ")"; }

  const std::shared_ptr<nn::Module>& original_module() const { return original_; }
  const std::shared_ptr<nn::Module>& forward_module() const { return inner_; }
  template <class M>
  std::shared_ptr<M> original() const {
    auto m = std::dynamic_pointer_cast<M>(original_);
    if (!m) throw ValueError("FabricModule::original<T>(): the original module is a " +
                             original_->name() + ", not the requested type");
    return m;
  }
  nn::Module& train(bool on = true) override;

 private:
  std::shared_ptr<nn::Module> original_;
  Strategy* strategy_;
};

class FabricOptimizer : public optim::Optimizer {
 public:
  FabricOptimizer(std::shared_ptr<optim::Optimizer> optimizer, Strategy* strategy);

  // Through the strategy and precision plugin; a step the f16 scaler skipped returns normally
  // and leaves the parameters unchanged (last_step_skipped() tells).
  void step() override;
  void zero_grad(bool set_to_none = true) override;
  std::vector<optim::ParamGroup>& param_groups() override { return optimizer_->param_groups(); }
  const std::vector<optim::ParamGroup>& param_groups() const override {
    return std::as_const(*optimizer_).param_groups();
  }
  // Forwarded so that the wrapped optimizer holds every group and all state (the base class
  // would keep them in this wrapper, where step() never looks).
  void add_param_group(optim::ParamGroup group) override { optimizer_->add_param_group(std::move(group)); }
  const optim::ParamState* state(const Tensor& param) const override { return optimizer_->state(param); }
  optim::OptimizerStateDict state_dict() const override { return optimizer_->state_dict(); }
  void load_state_dict(const optim::OptimizerStateDict& d) override { optimizer_->load_state_dict(d); }
  int64_t replace_parameters(const std::unordered_map<TensorImpl*, Tensor>& m) override {
    return optimizer_->replace_parameters(m);
  }

  const std::shared_ptr<optim::Optimizer>& optimizer() const { return optimizer_; }
  bool last_step_skipped() const { return skipped_; }

 protected:
  void check_options(const optim::HyperParams&) const override {}
  void step_group(optim::ParamGroup&) override {}

 private:
  std::shared_ptr<optim::Optimizer> optimizer_;
  Strategy* strategy_;
  bool skipped_ = false;
};

// The optimizer under any FabricOptimizer wrappers: the one that owns the options, the state
// and step() (checkpoint checks go to it; the wrapper only forwards).
const optim::Optimizer& unwrap_optimizer(const optim::Optimizer& o);

// Iterates the wrapped loader and moves every batch to the strategy's device. Each new
// iteration starts a new epoch: a DistributedSampler's epoch advances by itself unless the
// user called set_epoch() explicitly.
class FabricDataLoader {
 public:
  FabricDataLoader(std::shared_ptr<data::DataLoader> loader, Device device, bool move_to_device);

  class Iterator {
   public:
    using value_type = data::Batch;
    Iterator() = default;
    Iterator(data::DataLoader::Iterator it, const FabricDataLoader* owner);
    data::Batch& operator*() { return current_; }
    data::Batch* operator->() { return &current_; }
    Iterator& operator++();
    bool operator==(const Iterator& o) const { return it_ == o.it_; }

   private:
    void load();
    data::DataLoader::Iterator it_;
    const FabricDataLoader* owner_ = nullptr;
    data::Batch current_;
  };

  Iterator begin();
  Iterator end() { return Iterator(); }
  int64_t size() const { return loader_->size(); }
  const std::shared_ptr<data::DataLoader>& loader() const { return loader_; }
  Device device() const { return device_; }

 private:
  std::shared_ptr<data::DataLoader> loader_;
  Device device_;
  bool move_;
  int64_t epoch_ = 0;
};

}  // namespace loom
