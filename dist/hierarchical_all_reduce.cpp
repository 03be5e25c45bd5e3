// GlooProcessGroup's all_reduce, broadcast and all_gather across nodes: shared memory within
// each node, one leader per node on TCP. Note [Hierarchical all_reduce] in
// gloo_process_group.h says what and why.
#include <gloo/context.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "dist/elementwise_reduce.h"
#include "dist/gloo_process_group.h"
#include "dist/gloo_reduce_scatter.h"
#include "dist/reduce_op.h"
#include "dist/shm_all_reduce.h"
#include "core/error.h"

namespace loom::dist {

namespace {

void wait_recv(gloo::transport::UnboundBuffer& buf, std::chrono::milliseconds timeout) {
  if (!buf.waitRecv(timeout)) throw RuntimeError("hierarchical collective: a receive was aborted");
}
void wait_send(gloo::transport::UnboundBuffer& buf, std::chrono::milliseconds timeout) {
  if (!buf.waitSend(timeout)) throw RuntimeError("hierarchical collective: a send was aborted");
}

// Note [Hierarchical all_reduce], pipelined: the buffer goes down the chain in chunks of
// kHierarchicalChunkBytes, so node k folds chunk c + 1 while chunk c is on the wire to node
// k + 1 and the final chunks come back while later ones are still being folded. Every receive
// is posted up front into a buffer of its own; every chunk has its own slot (two per chunk:
// forward and back), so nothing depends on message order.
template <class T>
void hierarchical_typed(gloo::Context& ctx, ShmAllReduce* node_shm, const NodeTopology& topo,
                        int world, T* data, int64_t numel, ReduceOp op, uint32_t tag,
                        std::chrono::milliseconds timeout) {
  using Buffer = std::unique_ptr<gloo::transport::UnboundBuffer>;
  // The fold runs as sum for avg; the division comes once, at the end, on every rank.
  const ReduceOp fold = op == ReduceOp::avg ? ReduceOp::sum : op;
  const int n_nodes = int(topo.nodes.size());
  const int last = n_nodes - 1;
  const int me = topo.node;
  const bool leader = topo.is_leader();
  const int64_t chunk = std::max<int64_t>(1, int64_t(kHierarchicalChunkBytes / sizeof(T)));
  const int64_t n_chunks = (numel + chunk - 1) / chunk;
  auto offset = [&](int64_t c) { return c * chunk; };
  auto count = [&](int64_t c) { return std::min(chunk, numel - c * chunk); };
  const uint64_t base = gloo::Slot::build(kHierarchicalSlotPrefix, tag);
  auto forward_slot = [&](int64_t c) { return base + 2 * uint64_t(c); };
  auto back_slot = [&](int64_t c) { return base + 2 * uint64_t(c) + 1; };
  auto region = [&](T* p, int64_t c) {
    return ctx.createUnboundBuffer(p + offset(c), size_t(count(c)) * sizeof(T));
  };

  // Receives, posted before anything is sent: the fold so far from leader me - 1, and (not
  // the last node) the whole fold from the last leader.
  // Scratch left uninitialised: every element is received before it is read.
  std::unique_ptr<T[]> before, final_fold;
  std::vector<Buffer> before_bufs, final_bufs, send_bufs;
  if (leader && me > 0) {
    before.reset(new T[size_t(numel)]);
    for (int64_t c = 0; c < n_chunks; ++c) {
      before_bufs.push_back(region(before.get(), c));
      before_bufs.back()->recv(topo.leader(me - 1), forward_slot(c));
    }
  }
  if (leader && me < last) {
    final_fold.reset(new T[size_t(numel)]);
    for (int64_t c = 0; c < n_chunks; ++c) {
      final_bufs.push_back(region(final_fold.get(), c));
      final_bufs.back()->recv(topo.leader(last), back_slot(c));
    }
  }
  for (int64_t c = 0; c < n_chunks; ++c) {
    T* p = data + offset(c);
    if (leader && me > 0) {
      // Continue the fold of nodes 0..me-1 with this leader's own data (local rank 0).
      wait_recv(*before_bufs[size_t(c)], timeout);
      T* q = before.get() + offset(c);
      combine_into(q, p, count(c), fold);
      std::copy(q, q + count(c), p);
    }
    if (node_shm) node_shm->run(p, count(c), dtype_of<T>(), fold);
    if (leader) {
      send_bufs.push_back(region(data, c));
      if (me < last) {
        send_bufs.back()->send(topo.leader(me + 1), forward_slot(c));
      } else {
        for (int n = 0; n < last; ++n) send_bufs.back()->send(topo.leader(n), back_slot(c));
      }
    }
  }
  // Sends read `data`; they finish before it is overwritten (or returned).
  for (auto& buf : send_bufs)
    for (int k = 0; k < (me < last ? 1 : last); ++k) wait_send(*buf, timeout);
  if (me < last) {
    for (int64_t c = 0; c < n_chunks; ++c) {
      T* p = data + offset(c);
      if (leader) {
        wait_recv(*final_bufs[size_t(c)], timeout);
        std::copy(final_fold.get() + offset(c), final_fold.get() + offset(c) + count(c), p);
      }
      if (node_shm) node_shm->broadcast(p, count(c) * int64_t(sizeof(T)), 0);
    }
  }
  if (op == ReduceOp::avg) divide_by(data, numel, world);
}

}  // namespace

void GlooProcessGroup::run_hierarchical_broadcast(void* data, int64_t nbytes, int src,
                                                  uint32_t tag) {
  const NodeTopology& topo = topology_;
  int src_node = 0;
  while (std::find(topo.nodes[size_t(src_node)].begin(), topo.nodes[size_t(src_node)].end(), src) ==
         topo.nodes[size_t(src_node)].end())
    ++src_node;
  const auto& src_ranks = topo.nodes[size_t(src_node)];
  const int src_local = int(std::find(src_ranks.begin(), src_ranks.end(), src) - src_ranks.begin());
  const uint64_t slot = gloo::Slot::build(kHierarchicalSlotPrefix, tag);
  // 1. In src's node, src's bytes reach its leader (and the rest of the node).
  if (topo.node == src_node && node_shm_ && src_local != 0)
    node_shm_->broadcast(data, nbytes, src_local);
  // 2. src's leader sends them to every other leader.
  if (topo.is_leader()) {
    auto buf = context_->createUnboundBuffer(data, size_t(nbytes));
    if (topo.node == src_node) {
      for (int n = 0; n < int(topo.nodes.size()); ++n)
        if (n != src_node) buf->send(topo.leader(n), slot);
      for (int n = 0; n < int(topo.nodes.size()) - 1; ++n) wait_send(*buf, timeout_);
    } else {
      buf->recv(topo.leader(src_node), slot);
      wait_recv(*buf, timeout_);
    }
  }
  // 3. Every other node: from its leader over shared memory. In src's node, a leader src
  // still has to hand its bytes to the others.
  if (node_shm_ && (topo.node != src_node || src_local == 0)) node_shm_->broadcast(data, nbytes, 0);
}

void GlooProcessGroup::run_hierarchical_all_gather(void* out, const void* in, int64_t nbytes,
                                                   uint32_t tag) {
  const NodeTopology& topo = topology_;
  auto* dst = static_cast<unsigned char*>(out);
  const auto& mine = topo.nodes[size_t(topo.node)];
  // 1. The node's inputs, in local rank order, then into their ranks' places in out.
  std::vector<unsigned char> local(mine.size() * size_t(nbytes));
  if (node_shm_)
    node_shm_->all_gather(local.data(), in, nbytes);
  else
    std::memcpy(local.data(), in, size_t(nbytes));
  for (size_t i = 0; i < mine.size(); ++i)
    std::memcpy(dst + size_t(mine[i]) * size_t(nbytes), local.data() + i * size_t(nbytes),
                size_t(nbytes));
  // 2. Leaders swap their nodes' blocks.
  if (topo.is_leader() && topo.nodes.size() > 1) {
    const uint64_t slot = gloo::Slot::build(kHierarchicalSlotPrefix, tag);
    auto send = context_->createUnboundBuffer(local.data(), local.size());
    std::vector<std::vector<unsigned char>> theirs(topo.nodes.size());
    std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>> recvs(topo.nodes.size());
    for (int n = 0; n < int(topo.nodes.size()); ++n) {
      if (n == topo.node) continue;
      theirs[size_t(n)].resize(topo.nodes[size_t(n)].size() * size_t(nbytes));
      recvs[size_t(n)] =
          context_->createUnboundBuffer(theirs[size_t(n)].data(), theirs[size_t(n)].size());
      recvs[size_t(n)]->recv(topo.leader(n), slot);
      send->send(topo.leader(n), slot);
    }
    for (int n = 0; n < int(topo.nodes.size()); ++n) {
      if (n == topo.node) continue;
      wait_recv(*recvs[size_t(n)], timeout_);
      const auto& ranks = topo.nodes[size_t(n)];
      for (size_t i = 0; i < ranks.size(); ++i)
        std::memcpy(dst + size_t(ranks[i]) * size_t(nbytes),
                    theirs[size_t(n)].data() + i * size_t(nbytes), size_t(nbytes));
    }
    for (int n = 0; n < int(topo.nodes.size()) - 1; ++n) wait_send(*send, timeout_);
  }
  // 3. The whole output from the leader to its node.
  if (node_shm_) node_shm_->broadcast(out, nbytes * size_, 0);
}

void GlooProcessGroup::run_hierarchical_all_reduce(void* data, int64_t numel, DType dtype,
                                                   ReduceOp op, uint32_t tag) {
  auto go = [&](auto* p) {
    hierarchical_typed(*context_, node_shm_.get(), topology_, size_, p, numel, op, tag, timeout_);
  };
  switch (dtype) {
    case DType::f32:
      return go(static_cast<float*>(data));
    case DType::f64:
      return go(static_cast<double*>(data));
    case DType::i64:
      return go(static_cast<int64_t*>(data));
    case DType::i32:
      return go(static_cast<int32_t*>(data));
    default:
      LOOM_CHECK(false, "hierarchical all_reduce: ", dtype_name(dtype),
                 " is not reduced here (ShmAllReduce::supports)");
  }
}

}  // namespace loom::dist
