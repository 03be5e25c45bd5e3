// The memory estimator (fabric/memory_estimate.h; docs/design.md "Memory estimator"): the
// strategies' layouts rebuilt from the parameter list, and one steady training step walked
// phase by phase for its peak.
#include "fabric/memory_estimate.h"

#include <algorithm>
#include <deque>
#include <map>
#include <unordered_map>

#include "core/error.h"
#include "fabric/fsdp_unit.h"
#include "nn/gpt.h"

namespace loom {
namespace {

int64_t mib(double mb) { return std::max<int64_t>(1, int64_t(mb * 1024.0 * 1024.0)); }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Dtypes {
  int64_t param;  // stored parameters, their gradients and the optimizer's state
  int64_t act;    // activations (the compute dtype)
  bool mixed;     // autocast: matmul inputs are cast to `act`, the rest stays f32
};

Dtypes dtypes_of(const std::string& precision) {
  if (precision == "32-true" || precision == "32") return {4, 4, false};
  if (precision == "64-true" || precision == "64") return {8, 8, false};
  if (precision == "bf16-true" || precision == "16-true") return {2, 2, false};
  if (precision == "bf16-mixed" || precision == "16-mixed" || precision == "bf16" ||
      precision == "16")
    return {4, 2, true};
  throw ValueError("estimate_memory: unknown precision '" + precision +
                   "'; use 32-true, bf16-mixed, 16-mixed, bf16-true, 16-true or 64-true");
}

int state_buffers(const MemoryEstimateOptions& o) {
  switch (o.optimizer) {
    case OptimizerKind::sgd:
      return 0;
    case OptimizerKind::sgd_momentum:
      return 1;
    case OptimizerKind::adam:
    case OptimizerKind::adamw:
      return o.amsgrad ? 3 : 2;
  }
  return 0;
}

struct Param {
  std::string name;
  int64_t numel;
  int segment;  // backward segment (0 runs first in backward)
};

// ---- activations (nn::GPT) ----
//
// Per block, the tensors its forward saves (N = B T tokens, C channels, H heads, e bytes per
// activation element): ln1's output, qkv's output (q, k, v are views of it), the attention
// output before proj, h = x + attn, ln2's output, fc's and GELU's outputs (4C each) and the
// block's output: 16 N C e; the softmax output B H T^2 e; four LayerNorm statistics per token
// (mean, rstd of ln1 and ln2) in f32; the causal mask (T^2 bools) and the 1/sqrt(D) scalar.
// Outside the blocks: the embeddings' sum and ln_f's output (N C e each), ln_f's statistics,
// the logits (N V e, which cross_entropy keeps), the positions (T i64) and the loss.
struct GptShape {
  int64_t B, T, C, H, V, L;
};

int64_t gpt_block_saved(const GptShape& g, const Dtypes& d) {
  const int64_t N = g.B * g.T;
  int64_t bytes = 16 * N * g.C * d.act + g.B * g.H * g.T * g.T * d.act + 4 * N * 4 + g.T * g.T + 4;
  // Autocast: each Linear also keeps its input cast to the low dtype (the f32 original is
  // kept by the op that made it); the weights' casts are counted by the caller.
  if (d.mixed) bytes += (N * g.C + N * g.C + N * g.C + N * 4 * g.C) * d.act;
  return bytes;
}

int64_t gpt_outer_saved(const GptShape& g, const Dtypes& d) {
  const int64_t N = g.B * g.T;
  int64_t bytes = 2 * N * g.C * d.act + 2 * N * 4 + N * g.V * d.act + g.T * 8 + 4;
  if (d.mixed) bytes += N * g.C * d.act;  // lm_head's input cast
  return bytes;
}

// Moments inside one backward segment: how many of the segment's own gradient elements exist
// by then, and the transient bytes on top of the saved tensors (the gradients flowing between
// the segment's ops). Measured against the allocator on one process (32-true):
//   head        the logits' gradient (N V) and the gradient into ln_f (N C), all its gradients
//   block, MLP  the (N, 4C) gradients of GELU's and fc's outputs and one (N, C); mlp.proj's
//               gradients exist
//   block, attention  the two (B, H, T, T) gradients of the softmax and the scores and two
//               (N, C) ones; mlp, ln2 and attn.proj's gradients exist
//   block, end  two (N, C) gradients, all its gradients
//   embeddings  the gradient of their sum (N C), all their gradients
struct Moment {
  int64_t grad_numel;  // of the segment's own parameters
  int64_t bytes;       // transient
};

std::vector<Moment> gpt_moments(const GptShape& g, const Dtypes& d, int kind, int64_t own) {
  const int64_t N = g.B * g.T, C = g.C, e = d.act;
  switch (kind) {
    case 0:
      return {{own, N * g.V * e + N * C * e}};
    case 1:
      return {{4 * C * C + C, 2 * N * 4 * C * e + N * C * e},
              {9 * C * C + 8 * C, 2 * g.B * g.H * g.T * g.T * e + 2 * N * C * e},
              {own, 2 * N * C * e}};
    default:
      return {{own, N * C * e + 4}};
  }
}

// ---- the strategies' layouts ----

struct Bucket {
  std::vector<size_t> params;  // indices into the trainable list
  int64_t numel = 0;
};

// ZeRO's partition buckets (fabric/zero.cpp): reverse registration order, each closed once
// it reaches `cap` bytes; one dtype throughout here.
std::vector<Bucket> plan_buckets(const std::vector<Param>& params, int64_t elem, int64_t cap) {
  std::vector<Bucket> out;
  int64_t bytes = 0;
  for (size_t k = params.size(); k-- > 0;) {
    if (out.empty() || bytes >= cap) {
      out.emplace_back();
      bytes = 0;
    }
    out.back().params.push_back(k);
    out.back().numel += params[k].numel;
    bytes += params[k].numel * elem;
  }
  return out;
}

// What the walk tracks: gradient bytes, communication bytes, activation bytes at one moment.
struct Walk {
  int64_t base = 0;  // parameters + optimizer state
  MemoryEstimate best;
  void point(int64_t grads, int64_t comm, int64_t act, const char* phase) {
    int64_t total = base + grads + comm + act;
    if (total > best.peak) {
      best.peak = total;
      best.gradients = grads;
      best.communication = comm;
      best.activations = act;
      best.peak_phase = phase;
    }
  }
};

}  // namespace

int64_t zero_paper_bytes(int64_t n, int stage, int world) {
  const int64_t w = std::max(1, world);
  switch (stage) {
    case 0:
      return 16 * n;
    case 1:
      return 4 * n + 12 * n / w;
    case 2:
      return 2 * n + 14 * n / w;
    default:
      return 16 * n / w;
  }
}

MemoryEstimate estimate_memory(nn::Module& model, const MemoryEstimateOptions& o) {
  const std::string& s = o.strategy;
  if (s != "single" && s != "ddp" && s != "fsdp" && s != "deepspeed")
    throw ValueError("estimate_memory: unknown strategy '" + s +
                     "'; use single, ddp, fsdp or deepspeed (with deepspeed.stage 1, 2 or 3)");
  if (o.world_size < 1)
    throw ValueError(detail::concat("estimate_memory: world_size=", o.world_size, " must be >= 1"));
  const int stage = s == "deepspeed" ? o.deepspeed.stage : 0;
  if (s == "deepspeed" && (stage < 1 || stage > 3))
    throw ValueError(
        detail::concat("estimate_memory: deepspeed stage ", stage, " is invalid; use 1, 2 or 3"));
  if (s == "deepspeed" && (o.precision == "16-mixed" || o.precision == "16"))
    throw ValueError(
        "estimate_memory: the deepspeed strategy refuses precision '16-mixed' (its gradient "
        "scaler would see one partition per rank); estimate 'bf16-mixed' instead");
  const int64_t W = s == "single" ? 1 : o.world_size;
  const Dtypes d = dtypes_of(o.precision);
  const int64_t pb = d.param;  // parameter, gradient and state bytes per element
  const int k_state = state_buffers(o);
  const bool sharded = s == "fsdp" || stage == 3;

  // The trainable parameters in registration order, each with its backward segment.
  auto* gpt = dynamic_cast<nn::GPT*>(&model);
  const int64_t L = gpt ? gpt->config.n_layer : 0;
  const int num_segments = gpt ? int(L) + 2 : 1;
  std::vector<Param> params;
  int64_t total = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    total += p.numel();
    if (!p.requires_grad()) continue;
    int seg = 0;
    if (gpt) {
      if (name.rfind("blocks.", 0) == 0)
        seg = 1 + int(L - 1 - std::stoll(name.substr(7, name.find('.', 7) - 7)));
      else if (name.rfind("wte.", 0) == 0 || name.rfind("wpe.", 0) == 0)
        seg = int(L) + 1;
    }
    params.push_back({name, p.numel(), seg});
  }
  int64_t trainable = 0;
  for (const Param& p : params) trainable += p.numel;

  MemoryEstimate e;
  e.num_parameters = total;
  e.zero_paper_bytes = zero_paper_bytes(total, stage, int(W));

  // Activations.
  // Gradient elements each segment produces.
  std::vector<int64_t> seg_numel(size_t(num_segments), 0);
  for (const Param& p : params) seg_numel[size_t(p.segment)] += p.numel;
  std::vector<std::vector<Moment>> moments(static_cast<size_t>(num_segments));
  for (int k = 0; k < num_segments; ++k) moments[size_t(k)] = {{seg_numel[size_t(k)], 0}};
  int64_t saved = 0;
  if (gpt && o.batch_size > 0 && o.seq_len > 0) {
    if (o.seq_len > gpt->config.block_size)
      throw ValueError(detail::concat("estimate_memory: seq_len ", o.seq_len,
                                      " exceeds the GPT's block_size ", gpt->config.block_size));
    GptShape g{o.batch_size,           o.seq_len, gpt->config.n_embd, gpt->config.n_head,
               gpt->config.vocab_size, L};
    saved = gpt_outer_saved(g, d) + L * gpt_block_saved(g, d);
    if (d.mixed) saved += trainable * d.act;  // every weight's low-dtype cast, kept for backward
    for (int k = 0; k < num_segments; ++k)
      moments[size_t(k)] = gpt_moments(g, d,
                                       k == 0                  ? 0
                                       : k == num_segments - 1 ? 2
                                                               : 1,
                                       seg_numel[size_t(k)]);
    e.activation_note =
        detail::concat("nn::GPT, ", o.batch_size, " x ", o.seq_len, " tokens per rank",
                       d.mixed ? " (autocast: approximate)" : "");
  } else {
    e.activation_note = gpt ? "not estimated: set batch_size and seq_len"
                            : "not estimated: activations are modelled for nn::GPT only";
  }
  e.saved_activations = saved;

  Walk w;
  if (!sharded) {
    e.parameters = total * pb;
    e.optimizer_state = k_state * trainable * pb;
  }

  if (s == "single" || s == "ddp" || stage == 1 || stage == 2) {
    // Buckets as the reducer (ddp, stage 1) or the partition (stages 1, 2) lay them out.
    std::vector<Bucket> partition;
    if (stage == 1 || stage == 2) {
      partition = plan_buckets(params, pb, mib(o.deepspeed.reduce_bucket_mb));
      // Every rank holds its shard of every bucket; rank 0 owns a full shard of each (the
      // largest share: later ranks may own padding only), and steps its pieces.
      int64_t shard_total = 0, owned = 0;
      for (const Bucket& b : partition) {
        int64_t shard = std::max<int64_t>(1, ceil_div(b.numel, W));
        shard_total += shard;
        owned += std::min(shard, b.numel);
      }
      e.parameters += shard_total * pb;
      e.optimizer_state = k_state * owned * pb;
    }
    // DDP's reducer (ddp, stage 1) allocates its bucket flats at set-up; however the
    // buckets are cut (bucket_cap_mb, the 1 MiB first one), together they hold every gradient.
    if (s == "ddp" || stage == 1) e.persistent_buffers = trainable * pb;
    w.base = e.parameters + e.optimizer_state;  // the buckets count as communication
    const int64_t pers = e.persistent_buffers;

    if (stage != 2) {
      // Forward's end, then backward: autograd's gradients pile up next to the saved tensors.
      w.point(0, pers, saved, "forward");
      int64_t grads = 0;
      for (int k = 0; k < num_segments; ++k) {
        for (const Moment& m : moments[size_t(k)])
          w.point(grads + m.grad_numel * pb, pers, saved + m.bytes, "backward");
        grads += seg_numel[size_t(k)] * pb;
      }
      // The step: ddp's gradients are views of its buckets; stage 1 gathers updated shards.
      int64_t step_grads = s == "single" ? grads : 0;
      int64_t gather = 0;
      if (stage == 1) {
        // gather_parameters: bucket outputs (W x shard) held while over allgather_bucket_mb.
        int64_t held = 0;
        std::vector<int64_t> flights;
        for (const Bucket& b : partition) {
          int64_t bytes = std::max<int64_t>(1, ceil_div(b.numel, W)) * W * pb;
          flights.push_back(bytes);
          held += bytes;
          gather = std::max(gather, held);
          while (flights.size() > 1 && held > mib(o.deepspeed.allgather_bucket_mb)) {
            held -= flights.front();
            flights.erase(flights.begin());
          }
        }
      }
      w.point(step_grads, pers + gather, 0, "optimizer step");
    } else {
      // Stage 2. Forward: last step's partition gradients are still held (before_backward
      // drops them once zero_grad has cleared the parameters' gradients).
      int64_t shard_total = 0;
      for (const Bucket& b : partition) shard_total += std::max<int64_t>(1, ceil_div(b.numel, W));
      e.between_steps = w.base + pers + shard_total * pb;
      w.point(shard_total * pb, 0, saved, "forward");
      // Backward: a bucket launches once all its parameters have gradients (and every bucket
      // before it has): its flat buffer is filled while the gradients still exist, then they
      // are released; two flats at most in flight; each launch adds the (shard,) output.
      std::vector<int> pending(partition.size());
      std::vector<size_t> bucket_of(params.size());
      for (size_t b = 0; b < partition.size(); ++b) {
        pending[b] = int(partition[b].params.size());
        for (size_t k : partition[b].params) bucket_of[k] = b;
      }
      int64_t grads = 0, flats = 0, reduced = 0;
      std::vector<int64_t> in_flight;
      size_t next = 0;
      for (int seg = 0; seg < num_segments; ++seg) {
        for (const Moment& m : moments[size_t(seg)])
          w.point(grads + m.grad_numel * pb + reduced, flats, saved + m.bytes, "backward");
        grads += seg_numel[size_t(seg)] * pb;
        for (size_t k = 0; k < params.size(); ++k)
          if (params[k].segment == seg) --pending[bucket_of[k]];
        while (next < partition.size() && pending[next] == 0) {
          const Bucket& b = partition[next++];
          const int64_t shard = std::max<int64_t>(1, ceil_div(b.numel, W));
          const int64_t flat = shard * W * pb;
          flats += flat;
          w.point(grads + reduced, flats, saved, "backward");  // the output comes after
          grads -= b.numel * pb;
          reduced += shard * pb;
          in_flight.push_back(flat);
          while (in_flight.size() > 2) {
            flats -= in_flight.front();
            in_flight.erase(in_flight.begin());
          }
        }
      }
      // The step: partition gradients, a full-shape gradient for each parameter that
      // straddles rank 0's shard boundary, and the gathered buckets.
      int64_t straddle = 0, gather = 0, held = 0;
      std::vector<int64_t> flights;
      for (const Bucket& b : partition) {
        const int64_t shard = std::max<int64_t>(1, ceil_div(b.numel, W));
        int64_t offset = 0;
        for (size_t k : b.params) {
          const int64_t n = params[k].numel;
          if (offset < shard && offset + n > shard) straddle += n * pb;
          offset += n;
        }
        flights.push_back(shard * W * pb);
        held += shard * W * pb;
        gather = std::max(gather, held);
        while (flights.size() > 1 && held > mib(o.deepspeed.allgather_bucket_mb)) {
          held -= flights.front();
          flights.erase(flights.begin());
        }
      }
      w.point(shard_total * pb + straddle, gather, 0, "optimizer step");
    }
  } else {
    // fsdp and stage 3: units as fsdp::plan_units groups them.
    FSDPOptions fo = o.fsdp;
    if (stage == 3) {
      fo.wrap_module_types = o.deepspeed.stage3_wrap_module_types;
      fo.min_num_params = o.deepspeed.stage3_min_num_params;
      fo.reshard_after_forward = true;
      fo.prefetch = true;
    }
    std::vector<nn::Module*> modules;
    std::vector<std::string> names;
    auto plan = fsdp::plan_units(model, fo, modules, names);
    const int64_t cb = fo.param_dtype ? int64_t(dtype_size(*fo.param_dtype)) : pb;  // gathered
    const int64_t rb = fo.reduce_dtype ? int64_t(dtype_size(*fo.reduce_dtype)) : cb;
    struct Unit {
      int64_t padded, shard;
      int last_segment = 0;  // its gradients are all there after this segment
      int first_segment = 1 << 30;
      int64_t grad_numel = 0;
    };
    std::vector<Unit> units;
    std::unordered_map<std::string, int> segment_of;
    for (const Param& p : params) segment_of[p.name] = p.segment;
    int64_t shards = 0;
    for (const auto& list : plan) {
      int64_t n = 0;
      Unit u{};
      for (const auto& [name, t] : list) {
        n += t.numel();
        auto it = segment_of.find(name);
        if (it == segment_of.end()) continue;
        u.last_segment = std::max(u.last_segment, it->second);
        u.first_segment = std::min(u.first_segment, it->second);
        u.grad_numel += t.numel();
      }
      u.padded = std::max<int64_t>(W, ceil_div(n, W) * W);
      u.shard = u.padded / W;
      shards += u.shard;
      units.push_back(u);
      e.largest_unit_gathered = std::max(e.largest_unit_gathered, u.padded * cb);
    }
    e.parameters = shards * pb;
    e.optimizer_state = k_state * shards * pb;
    w.base = e.parameters + e.optimizer_state;
    const int64_t root_full = units[0].padded * cb;
    // Forward's end: the root unit stays gathered until the end of backward.
    w.point(0, root_full, saved, "forward");
    // Backward: a unit is gathered for its segment, with the unit before it prefetched; its
    // gradients (gathered dtype) wait until all are there, then go into a padded flat buffer
    // (both alive a moment) whose reduce-scatter runs, with its (shard,) output, while at most
    // kMaxReducesInFlight units are in flight: starting one more finishes the oldest, which
    // frees its flat buffer and keeps its output as the shard's gradient (converted to the
    // master dtype when the reduce dtype differs) (FullyShardedModule::on_parameter_gradient).
    int64_t grads = 0, flats = 0;
    std::deque<const Unit*> in_flight;
    for (int seg = 0; seg < num_segments; ++seg) {
      int64_t gathered = root_full;
      if (num_segments > 1) {
        for (size_t u = 1; u < units.size(); ++u) {
          const Unit& unit = units[u];
          bool current = seg >= unit.first_segment && seg <= unit.last_segment;
          bool prefetched = fo.prefetch && unit.first_segment == seg + 1 && seg > 0;
          if (current || prefetched) gathered += unit.padded * cb;
        }
      } else {
        // A model without segments: at most the current unit and the prefetched one, taken
        // as the two largest.
        std::vector<int64_t> sizes;
        for (size_t u = 1; u < units.size(); ++u) sizes.push_back(units[u].padded * cb);
        std::sort(sizes.rbegin(), sizes.rend());
        for (size_t i = 0; i < sizes.size() && i < (fo.prefetch ? 2u : 1u); ++i)
          gathered += sizes[i];
      }
      for (const Moment& m : moments[size_t(seg)])
        w.point(grads + m.grad_numel * cb, gathered + flats, saved + m.bytes, "backward");
      grads += seg_numel[size_t(seg)] * cb;
      for (const Unit& unit : units)
        if (unit.grad_numel > 0 && unit.last_segment == seg) {
          flats += unit.padded * rb;
          w.point(grads, gathered + flats, saved, "backward");
          grads -= unit.grad_numel * cb;
          flats += unit.shard * rb;
          in_flight.push_back(&unit);
          while (in_flight.size() > fsdp::kMaxReducesInFlight) {
            const Unit& done = *in_flight.front();
            in_flight.pop_front();
            flats -= done.padded * rb;
            if (rb != pb) {  // the output converted to the master dtype, then released
              flats += done.shard * pb;
              w.point(grads, gathered + flats, saved, "backward");
              flats -= done.shard * rb;
            }
          }
        }
    }
    // The step: each shard's gradient (master dtype).
    w.point(shards * pb, 0, 0, "optimizer step");
  }

  if (e.between_steps == 0) e.between_steps = w.base + e.persistent_buffers;
  e.peak = w.best.peak;
  e.gradients = w.best.gradients;
  e.communication = w.best.communication;
  e.activations = w.best.activations;
  e.peak_phase = w.best.peak_phase;
  return e;
}

}  // namespace loom
