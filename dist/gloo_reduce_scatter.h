// A real reduce-scatter over Gloo's TCP pairs (GlooProcessGroup's path when the ranks do not
// share one host's memory).
//
// Direct exchange: every rank sends block p of its input straight to rank p and receives its
// own block from every other rank, then folds the size() contributions in rank order,
// ((x0 op x1) op x2) ..., the fold of the shared-memory path (dist/shm_all_reduce.h) and of
// the hierarchical all_reduce, so the block equals theirs bit for bit. Per rank it sends and
// receives (size - 1) blocks: (size - 1) / size of the input, as a ring reduce-scatter, and
// half of what the all_reduce-then-copy it replaces moved (a ring all_reduce sends 2 (size -
// 1) / size of the input). Unlike a ring, no partial sum travels: what crosses the wire is
// each rank's own data in its own dtype, so f16/bf16 go as 2 bytes and are widened to f32
// only by the receiver, which folds in f32 and rounds once (as the widened all_reduce does).
//
// Chunked: at most kChunkBytes per peer are in flight, so the scratch is (size - 1) *
// kChunkBytes whatever the input's size. Every wait honours `timeout` (a dead or silent peer:
// gloo::IoException, which GlooProcessGroup turns into a RuntimeError naming the call).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "dist/process_group.h"
#include "core/dtype.h"

namespace gloo {
class Context;
}

namespace loom::dist {

// Gloo slot prefixes of loom's own point-to-point collectives (Gloo's use 0x01-0x08).
inline constexpr uint8_t kReduceScatterSlotPrefix = 0x21;
inline constexpr uint8_t kHierarchicalSlotPrefix = 0x22;

// out (`block` elements of `dtype`) = the reduction over the context's ranks of block rank()
// of each rank's `in` (size() blocks of `block` elements). Every dtype: f16/bf16 are folded
// in f32 and rounded once; bool sum/max is logical or, min logical and (avg is refused by the
// caller); integer sums wrap; avg divides at the end (integers flooring, reduce_op.h). `out`
// may be this rank's block of `in`, nowhere else in it. `tag` separates concurrent calls.
void gloo_reduce_scatter(gloo::Context& context, const void* in, void* out, int64_t block,
                         DType dtype, ReduceOp op, uint32_t tag, std::chrono::milliseconds timeout);

inline constexpr size_t kReduceScatterChunkBytes = size_t(1) << 20;
// The pipeline chunk of the hierarchical all_reduce's leader chain (hierarchical_all_reduce.cpp):
// small enough that the chain's stages overlap on a DDP bucket (25 MiB by default), large
// enough that each chunk's two shared-memory barriers and TCP message stay amortised.
inline constexpr size_t kHierarchicalChunkBytes = size_t(1) << 20;

}  // namespace loom::dist
