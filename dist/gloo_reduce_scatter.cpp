// Direct-exchange reduce-scatter over Gloo's unbound buffers; see the header.
#include "dist/gloo_reduce_scatter.h"

#include <gloo/context.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "dist/elementwise_reduce.h"
#include "dist/reduce_op.h"
#include "core/error.h"

namespace loom::dist {

namespace {

// How an element of T is folded: in Acc, read with widen, written back with narrow.
template <class T>
struct Fold {
  using Acc = T;
  static Acc widen(T v) { return v; }
  static T narrow(Acc v) { return v; }
};
template <>
struct Fold<Half> {
  using Acc = float;
  static float widen(Half h) { return f16_to_f32(h.bits); }
  static Half narrow(float f) { return Half{f32_to_f16(f)}; }
};
template <>
struct Fold<BFloat16> {
  using Acc = float;
  static float widen(BFloat16 h) { return bf16_to_f32(h.bits); }
  static BFloat16 narrow(float f) { return BFloat16{f32_to_bf16(f)}; }
};
// bools are 0/1 bytes: or is max, and is min (as Gloo's path did); avg is refused earlier.
ReduceOp bool_op(ReduceOp op) { return op == ReduceOp::min ? ReduceOp::min : ReduceOp::max; }

void wait_recv(gloo::transport::UnboundBuffer& buf, std::chrono::milliseconds timeout) {
  if (!buf.waitRecv(timeout)) throw RuntimeError("reduce_scatter: a receive was aborted");
}
void wait_send(gloo::transport::UnboundBuffer& buf, std::chrono::milliseconds timeout) {
  if (!buf.waitSend(timeout)) throw RuntimeError("reduce_scatter: a send was aborted");
}

template <class T>
void reduce_scatter_typed(gloo::Context& ctx, const T* in, T* out, int64_t block, ReduceOp op,
                          uint32_t tag, std::chrono::milliseconds timeout) {
  using F = Fold<T>;
  using Acc = typename F::Acc;
  const int rank = ctx.rank;
  const int size = ctx.size;
  const int64_t per = std::max<int64_t>(1, int64_t(kReduceScatterChunkBytes / sizeof(T)));
  // Peer p's chunk lands at scratch + index(p) * per; index skips this rank.
  auto index = [&](int p) { return p < rank ? p : p - 1; };
  const int64_t stride = std::min(per, block);  // elements per peer in the scratch
  std::vector<T> scratch(size_t(size - 1) * size_t(stride));
  std::vector<Acc> acc(static_cast<size_t>(stride));
  auto send_buf =
      ctx.createUnboundBuffer(const_cast<T*>(in), size_t(size) * size_t(block) * sizeof(T));
  auto recv_buf = ctx.createUnboundBuffer(scratch.data(), scratch.size() * sizeof(T));
  const uint64_t base = gloo::Slot::build(kReduceScatterSlotPrefix, tag);
  uint64_t chunk = 0;
  for (int64_t off = 0; off < block; off += per, ++chunk) {
    const int64_t n = std::min(per, block - off);
    // Successive chunks take successive slots, so a fast peer's next chunk can never be
    // matched with this chunk's receive.
    const uint64_t slot = base + (chunk & 0xffffff);
    for (int p = 0; p < size; ++p) {
      if (p == rank) continue;
      recv_buf->recv(p, slot, size_t(index(p)) * size_t(stride) * sizeof(T), size_t(n) * sizeof(T));
    }
    for (int p = 0; p < size; ++p) {
      if (p == rank) continue;
      send_buf->send(p, slot, (size_t(p) * size_t(block) + size_t(off)) * sizeof(T),
                     size_t(n) * sizeof(T));
    }
    for (int p = 0; p < size - 1; ++p) wait_recv(*recv_buf, timeout);
    // Fold in rank order, this rank's own block in its place.
    auto contribution = [&](int r) -> const T* {
      return r == rank ? in + size_t(rank) * size_t(block) + size_t(off)
                       : scratch.data() + size_t(index(r)) * size_t(stride);
    };
    const T* first = contribution(0);
    for (int64_t i = 0; i < n; ++i) acc[size_t(i)] = F::widen(first[i]);
    std::vector<Acc> wide;
    for (int r = 1; r < size; ++r) {
      const T* src = contribution(r);
      if constexpr (std::is_same_v<Acc, T>) {
        combine_into(acc.data(), src, n, op);
      } else {
        wide.resize(size_t(n));
        for (int64_t i = 0; i < n; ++i) wide[size_t(i)] = F::widen(src[i]);
        combine_into(acc.data(), wide.data(), n, op);
      }
    }
    if (op == ReduceOp::avg) divide_by(acc.data(), n, size);
    // Sends read `in`, and `out` may be this rank's block of it: wait for them first.
    for (int p = 0; p < size - 1; ++p) wait_send(*send_buf, timeout);
    for (int64_t i = 0; i < n; ++i) out[off + i] = F::narrow(acc[size_t(i)]);
  }
}

}  // namespace

void gloo_reduce_scatter(gloo::Context& context, const void* in, void* out, int64_t block,
                         DType dtype, ReduceOp op, uint32_t tag,
                         std::chrono::milliseconds timeout) {
  if (block == 0) return;
  visit_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    if (context.size == 1) {  // every op is the identity on one contribution
      std::memmove(out, in, size_t(block) * sizeof(T));
      return;
    }
    if constexpr (std::is_same_v<T, bool>) {
      reduce_scatter_typed(context, static_cast<const uint8_t*>(in), static_cast<uint8_t*>(out),
                           block, bool_op(op), tag, timeout);
    } else {
      reduce_scatter_typed(context, static_cast<const T*>(in), static_cast<T*>(out), block, op, tag,
                           timeout);
    }
  });
}

}  // namespace loom::dist
