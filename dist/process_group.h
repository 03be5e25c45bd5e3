// ProcessGroup: collectives over the ranks of a job (DESIGN.md "Strategies").
//
// The interface is backend-neutral: Gloo over TCP for CPU tensors (dist/gloo_process_group),
// NCCL for CUDA tensors later. Every operation has a timeout; a peer that never arrives
// turns into a RuntimeError naming the operation and the timeout, never a silent hang.
// Tensors must be contiguous and are reduced in place (all_reduce, broadcast) or written into
// a fresh output (all_gather, reduce_scatter). f16/bf16 are reduced in f32 and rounded once.
//
// Asynchronous forms return a Work whose wait() rethrows the operation's error. Operations
// run in the order they were issued on every rank (one background thread per group), which
// is what keeps the ranks' collectives matched.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace loom::dist {

enum class ReduceOp { sum, avg, max, min };

class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the operation finished; rethrows its error.
  virtual void wait() = 0;
  virtual bool is_completed() const = 0;
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;
  std::chrono::milliseconds timeout() const { return timeout_; }

  // In place on every rank.
  virtual std::shared_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) = 0;
  virtual std::shared_ptr<Work> broadcast_async(const Tensor& t, int src) = 0;
  // out: (size, *t.shape), rank r's input in out[r].
  virtual std::shared_ptr<Work> all_gather_async(const Tensor& out, const Tensor& t) = 0;
  // input: (size * n, ...) split along dim 0; out (n, ...) gets this rank's reduced block.
  virtual std::shared_ptr<Work> reduce_scatter_async(const Tensor& out, const Tensor& input,
                                                     ReduceOp op) = 0;
  virtual std::shared_ptr<Work> barrier_async() = 0;

  // Blocking forms.
  void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::sum) { all_reduce_async(t, op)->wait(); }
  void broadcast(const Tensor& t, int src = 0) { broadcast_async(t, src)->wait(); }
  Tensor all_gather(const Tensor& t);  // returns (size, *t.shape)
  Tensor reduce_scatter(const Tensor& input, ReduceOp op = ReduceOp::sum);
  void barrier() { barrier_async()->wait(); }

 protected:
  std::chrono::milliseconds timeout_{std::chrono::seconds(60)};
};

}  // namespace loom::dist
