// FSDP set-up: the auto-wrap plan and the shards' first values (fabric/fsdp.h, Note
// [Shard-only init]).
#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "autograd/grad_mode.h"
#include "fabric/fsdp.h"
#include "nn/init.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom::fsdp {
namespace {

using Plan = std::vector<std::vector<std::pair<std::string, Tensor>>>;

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// Parameters of m's subtree that no unit below m takes (the size policy's count).
int64_t unwrapped_numel(nn::Module& m, bool is_root, const FSDPOptions& o,
                        std::unordered_set<const nn::Module*>& wrapped) {
  int64_t n = 0;
  for (const auto& [_, p] : m.named_parameters(false)) n += p.numel();
  for (const auto& [_, child] : m.named_children()) n += unwrapped_numel(*child, false, o, wrapped);
  bool by_type = std::find(o.wrap_module_types.begin(), o.wrap_module_types.end(), m.name()) !=
                 o.wrap_module_types.end();
  bool by_size = o.min_num_params > 0 && n >= o.min_num_params;
  if (!is_root && (by_type || by_size)) {
    wrapped.insert(&m);
    return 0;
  }
  return n;
}

void assign(nn::Module& m, const std::string& path, size_t unit,
            const std::unordered_set<const nn::Module*>& wrapped, Plan& plan,
            std::vector<nn::Module*>& modules, std::vector<std::string>& names,
            std::unordered_set<const TensorImpl*>& seen) {
  if (wrapped.count(&m)) {
    unit = plan.size();
    plan.emplace_back();
    modules.push_back(&m);
    names.push_back(path);
  }
  for (const auto& [n, p] : m.named_parameters(false))
    if (seen.insert(p.impl()).second) plan[unit].emplace_back(join(path, n), p);
  for (const auto& [cn, child] : m.named_children())
    assign(*child, join(path, cn), unit, wrapped, plan, modules, names, seen);
}

// ---- shard-only initialisation ----

// Where a parameter lives: its unit and its FlatParam.
struct Slot {
  FlatUnit* unit;
  FlatParam* param;
};

class Materializer;
thread_local Materializer* g_active = nullptr;

class Materializer {
 public:
  explicit Materializer(std::vector<std::unique_ptr<FlatUnit>>& units) {
    for (auto& u : units)
      for (FlatParam& p : u->params()) slots_.emplace(p.param.impl(), Slot{u.get(), &p});
  }

  // Gives every parameter fresh lazy storage of its full size: nothing is allocated until an
  // init function writes it.
  void prepare() {
    for (auto& [impl, slot] : slots_) detach_storage(*slot.param);
  }

  // After an init function wrote `t` (a parameter, or a view of one): copy this rank's slice
  // into the shard and free the full copy.
  void capture(const Tensor& t) {
    auto it = slots_.find(t.impl());
    if (it == slots_.end()) {
      for (auto& [impl, slot] : slots_)
        if (slot.param->param.storage() == t.storage()) return capture_slot(slot);
      return;  // not a parameter of a unit (a buffer, a temporary)
    }
    capture_slot(it->second);
  }

  // After a module's reset_parameters(): parameters it wrote without nn::init.
  void capture_written(nn::Module& m) {
    for (const Tensor& p : m.parameters())
      if (auto it = slots_.find(p.impl()); it != slots_.end() && p.storage()->is_materialized())
        capture_slot(it->second);
  }

 private:
  static void detach_storage(FlatParam& p) {
    TensorImpl* impl = p.param.impl();
    impl->storage = std::make_shared<Storage>(size_t(p.numel) * dtype_size(impl->dtype),
                                              Device::cpu(), /*lazy=*/true);
    impl->offset = 0;
    impl->strides = contiguous_strides(impl->sizes);
  }

  static void capture_slot(const Slot& s) {
    FlatParam& p = *s.param;
    if (!p.param.storage()->is_materialized()) return;
    const int64_t begin = s.unit->shard_begin(), end = begin + s.unit->shard_numel();
    const int64_t lo = std::max(begin, p.offset), hi = std::min(end, p.offset + p.numel);
    if (lo < hi) {
      NoGradGuard no_grad;
      Tensor flat = native::view(p.param.detach(), {p.numel});
      native::copy_(flat_span(s.unit->shard().detach(), lo - begin, hi - lo),
                    flat_span(flat, lo - p.offset, hi - lo));
    }
    detach_storage(p);  // frees the full copy
  }

  std::unordered_map<const TensorImpl*, Slot> slots_;
};

// nn::init entries that let the default initialise, then hand the tensor to the materialiser.
template <class... A>
Tensor captured(Tensor (*nn::init::InitTable::*entry)(const Tensor&, A...), const Tensor& t,
                A... args) {
  Tensor r = (nn::init::default_init_table().*entry)(t, args...);
  if (g_active) g_active->capture(t);
  return r;
}

const nn::init::InitTable& capturing_table() {
  using T = nn::init::InitTable;
  static const T table{
      [](const Tensor& t, double a, double b) { return captured(&T::uniform_, t, a, b); },
      [](const Tensor& t, double m, double s) { return captured(&T::normal_, t, m, s); },
      [](const Tensor& t, double m, double s, double a, double b) {
        return captured(&T::trunc_normal_, t, m, s, a, b);
      },
      [](const Tensor& t, double v) { return captured(&T::constant_, t, v); },
      [](const Tensor& t, double g) { return captured(&T::xavier_uniform_, t, g); },
      [](const Tensor& t, double g) { return captured(&T::xavier_normal_, t, g); },
      [](const Tensor& t, double a, nn::init::FanMode m, const std::string& n) {
        return captured<double, nn::init::FanMode, const std::string&>(&T::kaiming_uniform_, t, a, m, n);
      },
      [](const Tensor& t, double a, nn::init::FanMode m, const std::string& n) {
        return captured<double, nn::init::FanMode, const std::string&>(&T::kaiming_normal_, t, a, m, n);
      },
  };
  return table;
}

// Construction order: children (in registration order) before their parent.
void replay_init(nn::Module& m, Materializer& mat) {
  for (const auto& [_, child] : m.named_children()) replay_init(*child, mat);
  m.reset_parameters();
  mat.capture_written(m);
}

// Makes every rank's default generator draw what rank 0's would; returns this rank's own.
Generator adopt_rank0_generator(dist::ProcessGroup& group) {
  Generator& g = default_generator();
  Generator own = g;
  Tensor state = empty({2}, DType::i64);
  state.data_ptr<int64_t>()[0] = int64_t(g.seed());
  state.data_ptr<int64_t>()[1] = int64_t(g.offset());
  group.broadcast(state, 0);
  g.manual_seed(uint64_t(state.data_ptr<int64_t>()[0]));
  g.set_offset(uint64_t(state.data_ptr<int64_t>()[1]));
  return own;
}

void replicate_buffers(nn::Module& root, dist::ProcessGroup& group) {
  NoGradGuard no_grad;
  for (const auto& [name, b] : root.named_buffers()) {
    if (b.is_meta()) nn::set_data(b, zeros(b.sizes(), b.dtype()));  // no values to keep
    Tensor c = native::contiguous(b);
    group.broadcast(c, 0);
    if (!c.is_same(b)) native::copy_(b, c);
  }
}

}  // namespace

Plan plan_units(nn::Module& root, const FSDPOptions& options, std::vector<nn::Module*>& modules,
                std::vector<std::string>& names) {
  std::unordered_set<const nn::Module*> wrapped;
  unwrapped_numel(root, /*is_root=*/true, options, wrapped);
  Plan plan(1);
  modules = {&root};
  names = {""};
  std::unordered_set<const TensorImpl*> seen;
  assign(root, "", 0, wrapped, plan, modules, names, seen);
  return plan;
}

void materialize_shards(nn::Module& root, std::vector<std::unique_ptr<FlatUnit>>& units,
                        dist::ProcessGroup& group) {
  bool any_meta = false, any_real = false;
  for (auto& u : units)
    for (FlatParam& p : u->params()) (p.param.is_meta() ? any_meta : any_real) = true;
  if (any_meta && any_real)
    throw ValueError("fsdp: the module mixes meta and real parameters; build it entirely under "
                     "fabric.init_module() (meta) or entirely outside it");
  for (auto& u : units) {
    Tensor shard = zeros({u->shard_numel()}, u->master_dtype());
    u->set_shard(nn::Parameter(shard));
  }
  if (any_meta) {
    Materializer mat(units);
    mat.prepare();
    Generator own = adopt_rank0_generator(group);
    {
      nn::init::InitTableGuard table(capturing_table());
      g_active = &mat;
      try {
        replay_init(root, mat);
      } catch (...) {
        g_active = nullptr;
        throw;
      }
      g_active = nullptr;
    }
    if (group.rank() != 0) default_generator() = own;
  } else {
    // Real parameters (each rank may have drawn its own): rank 0's values, unit by unit.
    NoGradGuard no_grad;
    for (auto& u : units) {
      Tensor flat = zeros({u->padded_numel()}, u->shard().dtype());
      for (FlatParam& p : u->params())
        native::copy_(flat_span(flat, p.offset, p.numel),
                      native::view(native::contiguous(p.param.detach()), {p.numel}));
      group.broadcast(flat, 0);
      native::copy_(u->shard().detach(), flat_span(flat, u->shard_begin(), u->shard_numel()));
    }
  }
  replicate_buffers(root, group);
}

}  // namespace loom::fsdp
