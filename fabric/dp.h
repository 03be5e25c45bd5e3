// DP ("dp"): one process, one replica per device; each forward splits the batch along dim 0,
// runs the replicas concurrently (one thread each) and gathers their outputs along dim 0.
//
// The gather is the differentiable cat, so a single backward from the gathered output runs
// through every chunk's graph and sums each chunk's gradients into the original parameters.
// On the CPU all replicas are the same module (same parameters): devices=N gives N replica
// threads over one set of weights, which is exactly the replicas-summed-into-the-original
// contract. Replicas on distinct CUDA devices need per-device parameter copies, which loom's
// modules cannot make yet; setup_module says so instead of silently using one device.
//
// A worker thread starts with the calling thread's grad mode, autocast state and default
// dtype/device, and draws random numbers (dropout) from its own counter range of the calling
// thread's default generator, so masks differ per chunk and per step yet stay reproducible
// under manual_seed.
#pragma once

#include <memory>
#include <vector>

#include "fabric/strategy.h"
#include "fabric/wrapper_module.h"

namespace loom {

class DataParallel : public WrapperModule {
 public:
  // replicas: how many chunks a batch is split into at most (one per device).
  DataParallel(std::shared_ptr<nn::Module> module, int replicas);
  // Splits x along dim 0 into min(replicas, x.size(0)) chunks whose sizes differ by at most
  // one, runs the module on each in its own thread, and concatenates the outputs in chunk
  // order. An exception in a replica is rethrown here (the lowest failing chunk's) after
  // every replica has finished.
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "DataParallel"; }
  const std::shared_ptr<nn::Module>& module() const { return inner_; }
  int replicas() const { return replicas_; }

 private:
  int replicas_;
};

class DataParallelStrategy : public Strategy {
 public:
  std::string name() const override { return "dp"; }
  bool works_without_launch() const override { return true; }
  // The first device: parameters, inputs and the gathered outputs live there.
  Device root_device() const override;
  std::shared_ptr<nn::Module> setup_module(std::shared_ptr<nn::Module> module) override;
};

}  // namespace loom
