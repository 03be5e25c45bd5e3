// GlooProcessGroup's all_reduce across nodes: shared memory within each node, one leader per
// node on TCP. Note [Hierarchical all_reduce] in gloo_process_group.h says what and why.
#include <gloo/context.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>

#include <algorithm>
#include <vector>

#include "dist/elementwise_reduce.h"
#include "dist/gloo_process_group.h"
#include "dist/gloo_reduce_scatter.h"
#include "dist/reduce_op.h"
#include "dist/shm_all_reduce.h"
#include "tensor/error.h"

namespace loom::dist {

namespace {

void wait_recv(gloo::transport::UnboundBuffer& buf, std::chrono::milliseconds timeout) {
  if (!buf.waitRecv(timeout)) throw RuntimeError("hierarchical all_reduce: a receive was aborted");
}
void wait_send(gloo::transport::UnboundBuffer& buf, std::chrono::milliseconds timeout) {
  if (!buf.waitSend(timeout)) throw RuntimeError("hierarchical all_reduce: a send was aborted");
}

template <class T>
void hierarchical_typed(gloo::Context& ctx, ShmAllReduce* node_shm, const NodeTopology& topo,
                        int world, T* data, int64_t numel, ReduceOp op, uint32_t tag,
                        std::chrono::milliseconds timeout) {
  // The fold runs as sum for avg; the division comes once, at the end, on every rank.
  const ReduceOp fold = op == ReduceOp::avg ? ReduceOp::sum : op;
  const int n_nodes = int(topo.nodes.size());
  const int last = n_nodes - 1;
  const size_t bytes = size_t(numel) * sizeof(T);
  const uint64_t forward_slot = gloo::Slot::build(kHierarchicalSlotPrefix, tag);
  const uint64_t back_slot = forward_slot + 1;
  if (topo.is_leader() && topo.node > 0) {
    // The fold of nodes 0..node-1 arrives from the previous leader; ours continues it, this
    // leader's own contribution first (it is the node's local rank 0).
    std::vector<T> before(static_cast<size_t>(numel));
    auto buf = ctx.createUnboundBuffer(before.data(), bytes);
    buf->recv(topo.leader(topo.node - 1), forward_slot);
    wait_recv(*buf, timeout);
    combine_into(before.data(), data, numel, fold);
    std::copy(before.begin(), before.end(), data);
  }
  if (node_shm) node_shm->run(data, numel, dtype_of<T>(), fold);
  if (topo.is_leader()) {
    auto buf = ctx.createUnboundBuffer(data, bytes);
    if (topo.node < last) {
      buf->send(topo.leader(topo.node + 1), forward_slot);
      wait_send(*buf, timeout);
      buf->recv(topo.leader(last), back_slot);  // the whole fold, from the last node
      wait_recv(*buf, timeout);
    } else {
      for (int n = 0; n < last; ++n) buf->send(topo.leader(n), back_slot);
      for (int n = 0; n < last; ++n) wait_send(*buf, timeout);
    }
  }
  if (node_shm && topo.node < last) node_shm->broadcast(data, int64_t(bytes), 0);
  if (op == ReduceOp::avg) divide_by(data, numel, world);
}

}  // namespace

void GlooProcessGroup::run_hierarchical_all_reduce(void* data, int64_t numel, DType dtype,
                                                   ReduceOp op, uint32_t tag) {
  auto go = [&](auto* p) {
    hierarchical_typed(*context_, node_shm_.get(), topology_, size_, p, numel, op, tag, timeout_);
  };
  switch (dtype) {
    case DType::f32: return go(static_cast<float*>(data));
    case DType::f64: return go(static_cast<double*>(data));
    case DType::i64: return go(static_cast<int64_t*>(data));
    case DType::i32: return go(static_cast<int32_t*>(data));
    default:
      LOOM_CHECK(false, "hierarchical all_reduce: ", dtype_name(dtype),
                 " is not reduced here (ShmAllReduce::supports)");
  }
}

}  // namespace loom::dist
