// Optimizer base: group bookkeeping, state (de)serialisation and the parameter remap.
// The update math lives in each optimizer's own file (sgd.cpp, adam.cpp).
#include "optim/optimizer.h"

#include <algorithm>
#include <limits>
#include <unordered_set>

#include "autograd/grad_mode.h"
#include "tensor/native.h"

namespace loom::optim {

namespace {

std::string buffer_list(const StateBuffers& b) {
  std::string out;
  for (const auto* list : {&b.required, &b.optional})
    for (const auto& key : *list) out += (out.empty() ? "'" : ", '") + key + "'";
  return out.empty() ? "no buffers" : out;
}

std::string known_keys(const HyperParams& defaults) {
  std::string out;
  for (const auto& [key, value] : defaults) out += (out.empty() ? "" : ", ") + key;
  return out;
}

// A contiguous copy of `t` on `like`'s device and dtype; never aliases t (state dicts are
// snapshots, so stepping after saving must not change what was saved).
Tensor copy_like(const Tensor& t, const Tensor& like) {
  Tensor moved = native::to(t, like.device(), like.dtype());
  return moved.is_same(t) ? native::clone(t) : native::contiguous(moved);
}

ParamState clone_state(const ParamState& s) {
  ParamState out;
  out.step = s.step;
  for (const auto& [key, buf] : s.buffers) out.buffers.emplace(key, native::clone(buf));
  return out;
}

}  // namespace

double ParamGroup::get(const std::string& key) const {
  auto it = options.find(key);
  if (it == options.end())
    throw ValueError(detail::concat("ParamGroup: no hyper-parameter '", key,
                                    "' in this group (add the group to an optimizer first: it "
                                    "fills missing keys from the defaults)"));
  return it->second;
}

std::vector<ParamGroup> as_groups(std::vector<Tensor> params) {
  std::vector<ParamGroup> groups;
  if (!params.empty()) groups.emplace_back(std::move(params));
  return groups;
}

Optimizer::Optimizer(std::string name, HyperParams defaults)
    : name_(std::move(name)), defaults_(std::move(defaults)) {}

void Optimizer::add_groups(std::vector<ParamGroup> groups) {
  if (groups.empty())
    throw ValueError(detail::concat(name_, ": got an empty parameter list; pass the model's "
                                           "parameters (e.g. model->parameters())"));
  for (auto& g : groups) add_param_group(std::move(g));
}

void Optimizer::check_param(const Tensor& p, const char* where) const {
  if (!p.defined())
    throw ValueError(detail::concat(name_, ": ", where, " got an undefined tensor as a parameter"));
  if (!p.requires_grad())
    throw ValueError(detail::concat(name_, ": ", where, " got a parameter of shape ",
                                    shape_str(p.sizes()), " that does not require grad; "
                                    "call requires_grad_() on it or leave it out"));
  if (!p.is_leaf())
    throw ValueError(detail::concat(name_, ": ", where, " got a non-leaf tensor of shape ",
                                    shape_str(p.sizes()), " (an op's output); optimize the "
                                    "leaf it was computed from, or detach() it first"));
}

void Optimizer::add_param_group(ParamGroup group) {
  if (group.params.empty())
    throw ValueError(detail::concat(name_, ": add_param_group got a group without parameters"));
  std::unordered_set<TensorImpl*> seen;
  for (const auto& g : groups_)
    for (const auto& p : g.params) seen.insert(p.impl());
  for (const auto& p : group.params) {
    check_param(p, "add_param_group");
    if (!seen.insert(p.impl()).second)
      throw ValueError(detail::concat(name_, ": a parameter of shape ", shape_str(p.sizes()),
                                      " appears more than once across the parameter groups; "
                                      "each parameter may belong to one group only"));
  }
  for (const auto& [key, value] : group.options)
    if (!defaults_.count(key))
      throw ValueError(detail::concat(name_, ": unknown hyper-parameter '", key,
                                      "' in a parameter group; known: ", known_keys(defaults_)));
  for (const auto& [key, value] : defaults_) group.options.emplace(key, value);  // keeps overrides
  check_options(group.options);
  groups_.push_back(std::move(group));
}

int64_t Optimizer::num_params() const {
  int64_t n = 0;
  for (const auto& g : param_groups()) n += int64_t(g.params.size());
  return n;
}

double Optimizer::lr(size_t group) const {
  const auto& groups = param_groups();
  if (group >= groups.size())
    throw ValueError(detail::concat(name_, ": lr: group ", group, " out of range (",
                                    groups.size(), " groups)"));
  return groups[group].lr();
}

void Optimizer::set_lr(double lr) {
  for (size_t i = 0; i < param_groups().size(); ++i) set_lr(i, lr);
}

void Optimizer::set_lr(size_t group, double lr) {
  auto& groups = param_groups();
  if (group >= groups.size())
    throw ValueError(detail::concat(name_, ": set_lr: group ", group, " out of range (",
                                    groups.size(), " groups)"));
  if (!(lr >= 0.0))
    throw ValueError(detail::concat(name_, ": invalid learning rate ", lr, " (must be >= 0)"));
  groups[group].set_lr(lr);
}

const ParamState* Optimizer::state(const Tensor& param) const {
  auto it = state_.find(param.impl());
  return it == state_.end() ? nullptr : &it->second;
}

bool Optimizer::use_fused(const Tensor& p, const Tensor& grad) const {
  return fused_ && p.is_cpu() && grad.is_cpu() && p.dtype() == grad.dtype() &&
         is_floating(p.dtype()) && p.is_contiguous() && grad.is_contiguous();
}

void Optimizer::step() {
  NoGradGuard no_grad;  // updates are in-place writes that autograd must not record
  for (auto& group : groups_) step_group(group);
}

void Optimizer::zero_grad(bool set_to_none) {
  for (auto& group : groups_) {
    for (auto& p : group.params) {
      Tensor g = p.grad();
      if (!g.defined()) continue;
      if (set_to_none)
        p.set_grad(Tensor());
      else
        native::fill_(g, 0.0);
    }
  }
}

OptimizerStateDict Optimizer::state_dict() const {
  OptimizerStateDict dict;
  int64_t index = 0;
  for (const auto& group : groups_) {
    OptimizerStateDict::Group g{group.options, {}};
    for (const auto& p : group.params) {
      if (auto it = state_.find(p.impl()); it != state_.end())
        dict.state.emplace(index, clone_state(it->second));
      g.params.push_back(index++);
    }
    dict.param_groups.push_back(std::move(g));
  }
  return dict;
}

StateBuffers Optimizer::state_buffers(const HyperParams& options) const {
  // loom's own optimizers, by name (their step_group() creates these buffers at a parameter's
  // first step and reads them at every later one).
  auto flag = [&](const char* key) {
    auto it = options.find(key);
    return it != options.end() && it->second != 0.0;
  };
  if (name_ == "SGD") {
    StateBuffers b{.known = true, .required = {}, .optional = {"momentum_buffer"}};
    if (flag("momentum")) b.required.push_back("momentum_buffer");
    return b;
  }
  if (name_ == "Adam" || name_ == "AdamW") {
    StateBuffers b{.known = true, .required = {"exp_avg", "exp_avg_sq"},
                   .optional = {"max_exp_avg_sq"}};
    if (flag("amsgrad")) b.required.push_back("max_exp_avg_sq");
    return b;
  }
  return {};
}

Optimizer::ResolvedState Optimizer::resolve_state_dict(const OptimizerStateDict& dict,
                                                       bool exact_dtypes) const {
  const char* op = "load_state_dict";
  if (dict.param_groups.size() != groups_.size())
    throw ValueError(detail::concat(name_, ": ", op, ": the state dict has ",
                                    dict.param_groups.size(), " parameter groups but the "
                                    "optimizer has ", groups_.size()));
  // Parameters by global index (with their group), and the new options.
  ResolvedState out;
  std::vector<std::pair<const Tensor*, size_t>> params;
  for (size_t i = 0; i < groups_.size(); ++i) {
    const auto& saved = dict.param_groups[i];
    if (saved.params.size() != groups_[i].params.size())
      throw ValueError(detail::concat(name_, ": ", op, ": group ", i, " has ",
                                      saved.params.size(), " parameters in the state dict but ",
                                      groups_[i].params.size(), " in the optimizer"));
    HyperParams merged = groups_[i].options;
    for (const auto& [key, value] : saved.options) {
      if (!defaults_.count(key))
        throw ValueError(detail::concat(name_, ": ", op, ": unknown hyper-parameter '", key,
                                        "' in group ", i, "; known: ", known_keys(defaults_)));
      merged[key] = value;
    }
    check_options(merged);
    out.options.push_back(std::move(merged));
    for (const auto& p : groups_[i].params) params.emplace_back(&p, i);
  }
  // Saved indices say which saved state belongs to which group position; as in PyTorch, the
  // i-th saved index of a group maps to the i-th parameter of that group.
  std::unordered_map<int64_t, std::pair<const Tensor*, size_t>> by_saved_index;
  for (size_t i = 0, k = 0; i < groups_.size(); ++i)
    for (int64_t saved : dict.param_groups[i].params) {
      if (!by_saved_index.emplace(saved, params[k++]).second)
        throw ValueError(detail::concat(name_, ": ", op, ": parameter index ", saved,
                                        " appears twice in the state dict's groups"));
    }
  std::vector<StateBuffers> buffers_of_group;
  for (const auto& o : out.options) buffers_of_group.push_back(state_buffers(o));
  for (const auto& [index, saved] : dict.state) {
    auto it = by_saved_index.find(index);
    if (it == by_saved_index.end())
      throw ValueError(detail::concat(name_, ": ", op, ": state for parameter index ", index,
                                      " which no group lists (", params.size(),
                                      " parameters in the optimizer)"));
    const auto [param, group] = it->second;
    const Tensor& p = *param;
    if (saved.step < 0 || saved.step == std::numeric_limits<int64_t>::max())
      throw ValueError(detail::concat(name_, ": ", op, ": parameter ", index, " has step ",
                                      saved.step, ", which must be >= 0 and less than 2^63 - 1"));
    const StateBuffers& schema = buffers_of_group[group];
    for (const auto& [key, buf] : saved.buffers) {
      bool known = std::count(schema.required.begin(), schema.required.end(), key) ||
                   std::count(schema.optional.begin(), schema.optional.end(), key);
      if (schema.known && !known)
        throw ValueError(detail::concat(name_, ": ", op, ": parameter ", index,
                                        " has an unknown state buffer '", key, "' (", name_,
                                        " keeps ", buffer_list(schema), ")"));
      if (!buf.defined() || buf.sizes() != p.sizes())
        throw ValueError(detail::concat(
            name_, ": ", op, ": state '", key, "' of parameter ", index, " has shape ",
            buf.defined() ? shape_str(buf.sizes()) : std::string("(undefined)"),
            " but the parameter has shape ", shape_str(p.sizes())));
      if (exact_dtypes && buf.dtype() != p.dtype())
        throw ValueError(detail::concat(name_, ": ", op, ": state '", key, "' of parameter ",
                                        index, " has dtype ", buf.dtype(),
                                        " but the parameter has dtype ", p.dtype()));
    }
    for (const auto& key : schema.required)
      if (!saved.buffers.count(key))
        throw ValueError(detail::concat(name_, ": ", op, ": parameter ", index,
                                        " has state (step ", saved.step, ") without its '", key,
                                        "' buffer, which ", name_, "'s step() needs"));
    out.state.emplace_back(&p, &saved);
  }
  return out;
}

void Optimizer::check_state_dict(const OptimizerStateDict& dict, bool exact_dtypes) const {
  (void)resolve_state_dict(dict, exact_dtypes);
}

void Optimizer::load_state_dict(const OptimizerStateDict& dict) {
  ResolvedState resolved = resolve_state_dict(dict, /*exact_dtypes=*/false);
  // Checked; from here on nothing throws (short of running out of memory).
  std::unordered_map<TensorImpl*, ParamState> state;
  for (const auto& [p, saved] : resolved.state) {
    ParamState s;
    s.step = saved->step;
    for (const auto& [key, buf] : saved->buffers) s.buffers.emplace(key, copy_like(buf, *p));
    state.emplace(p->impl(), std::move(s));
  }
  for (size_t i = 0; i < groups_.size(); ++i) groups_[i].options = std::move(resolved.options[i]);
  state_ = std::move(state);
}

int64_t Optimizer::replace_parameters(const std::unordered_map<TensorImpl*, Tensor>& old_to_new) {
  // Validate everything first so that a bad entry leaves the optimizer unchanged.
  int64_t replaced = 0;
  for (const auto& group : groups_) {
    for (const auto& p : group.params) {
      auto it = old_to_new.find(p.impl());
      if (it == old_to_new.end()) continue;
      const Tensor& q = it->second;
      check_param(q, "replace_parameters");
      auto st = state_.find(p.impl());
      if (st != state_.end() && !st->second.buffers.empty() && q.sizes() != p.sizes())
        throw ValueError(detail::concat(
            name_, ": replace_parameters: the parameter of shape ", shape_str(p.sizes()),
            " already has optimizer state, which cannot move to a replacement of shape ",
            shape_str(q.sizes()), "; replace parameters before the first step()"));
      ++replaced;
    }
  }
  for (auto& group : groups_) {
    for (auto& p : group.params) {
      auto it = old_to_new.find(p.impl());
      if (it == old_to_new.end()) continue;
      const Tensor& q = it->second;
      if (auto node = state_.extract(p.impl()); !node.empty()) {
        ParamState s = std::move(node.mapped());
        for (auto& [key, buf] : s.buffers) buf = copy_like(buf, q);
        state_[q.impl()] = std::move(s);
      }
      p = q;
    }
  }
  return replaced;
}

}  // namespace loom::optim
