// ProcessGroup: collectives over the ranks of a job (docs/design.md "Strategies").
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
  // output (1-D, contiguous) = the reduction over ranks of the concatenation of `parts`
  // (contiguous, output's dtype and device, numels adding up to output's). A part may be
  // output's own slice at its own offset (then it is read before being overwritten), but
  // must not overlap output anywhere else. DDP reduces a bucket of gradients this way
  // without first gathering them into the bucket. The parts must stay unchanged until the
  // Work completes. Default: copy the parts into output here, then all_reduce_async(output).
  virtual std::shared_ptr<Work> all_reduce_coalesced_async(const Tensor& output,
                                                           const std::vector<Tensor>& parts,
                                                           ReduceOp op);

  // Blocking forms.
  void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::sum) { all_reduce_async(t, op)->wait(); }
  void broadcast(const Tensor& t, int src = 0) { broadcast_async(t, src)->wait(); }
  Tensor all_gather(const Tensor& t);  // returns (size, *t.shape)
  Tensor reduce_scatter(const Tensor& input, ReduceOp op = ReduceOp::sum);
  void barrier() { barrier_async()->wait(); }

 protected:
  // The argument checks of all_reduce_coalesced_async (ValueError naming the problem).
  static void check_coalesced(const Tensor& output, const std::vector<Tensor>& parts);

  std::chrono::milliseconds timeout_{std::chrono::seconds(60)};
};

}  // namespace loom::dist
