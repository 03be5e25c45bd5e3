#include "fabric/wrappers.h"

#include "autograd/grad_mode.h"
#include "data/distributed_sampler.h"
#include "tensor/native.h"

namespace loom {

// ---- FabricModule ----

FabricModule::FabricModule(std::shared_ptr<nn::Module> forward_module,
                           std::shared_ptr<nn::Module> original, Strategy* strategy)
    : WrapperModule(std::move(forward_module), "FabricModule"),
      original_(std::move(original)),
      strategy_(strategy) {}

Tensor FabricModule::forward(const Tensor& input) {
  Precision& p = strategy_->precision();
  ScopeStack ctx = p.forward_context();
  Tensor out = (*inner_)(p.convert_input(input));
  return p.convert_output(out);
}

nn::Module& FabricModule::train(bool on) {
  original_->train(on);  // the original may not be on the forward chain (a compiled module)
  return WrapperModule::train(on);
}

// ---- FabricOptimizer ----

FabricOptimizer::FabricOptimizer(std::shared_ptr<optim::Optimizer> optimizer, Strategy* strategy)
    : optim::Optimizer("Fabric(" + optimizer->name() + ")", optimizer->defaults()),
      optimizer_(std::move(optimizer)),
      strategy_(strategy) {}

void FabricOptimizer::step() { skipped_ = !strategy_->optimizer_step(*optimizer_); }

void FabricOptimizer::zero_grad(bool set_to_none) { optimizer_->zero_grad(set_to_none); }

// ---- FabricDataLoader ----

FabricDataLoader::FabricDataLoader(std::shared_ptr<data::DataLoader> loader, Device device,
                                   bool move_to_device)
    : loader_(std::move(loader)), device_(device), move_(move_to_device) {}

FabricDataLoader::Iterator FabricDataLoader::begin() {
  // A distributed sampler reshuffles per epoch only through set_epoch(); do it for the user
  // unless they manage epochs themselves.
  if (auto ds = std::dynamic_pointer_cast<data::DistributedSampler>(loader_->sampler()))
    if (!ds->epoch_set_explicitly()) ds->advance_epoch(epoch_);
  ++epoch_;
  return Iterator(loader_->begin(), this);
}

FabricDataLoader::Iterator::Iterator(data::DataLoader::Iterator it, const FabricDataLoader* owner)
    : it_(std::move(it)), owner_(owner) {
  load();
}

void FabricDataLoader::Iterator::load() {
  if (it_ == data::DataLoader::Iterator()) return;
  current_ = *it_;
  if (owner_->move_ && owner_->device_ != Device::cpu())
    for (Tensor& t : current_) t = native::to(t, owner_->device_, t.dtype());
}

FabricDataLoader::Iterator& FabricDataLoader::Iterator::operator++() {
  ++it_;
  load();
  return *this;
}

const optim::Optimizer& unwrap_optimizer(const optim::Optimizer& o) {
  const optim::Optimizer* p = &o;
  while (const auto* w = dynamic_cast<const FabricOptimizer*>(p)) p = w->optimizer().get();
  return *p;
}

}  // namespace loom
