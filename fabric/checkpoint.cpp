#include "fabric/checkpoint.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "autograd/grad_mode.h"
#include "fabric/io/safetensors.h"
#include "tensor/native.h"

namespace loom {
namespace {

using json = nlohmann::json;

std::string st_dtype(DType t) {
  switch (t) {
    case DType::f64: return "F64";
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i64: return "I64";
    case DType::i32: return "I32";
    case DType::u8: return "U8";
    case DType::bool_: return "BOOL";
  }
  return "?";
}

DType loom_dtype(const std::string& code) {
  static const std::map<std::string, DType> m{{"F64", DType::f64}, {"F32", DType::f32},
                                              {"F16", DType::f16}, {"BF16", DType::bf16},
                                              {"I64", DType::i64}, {"I32", DType::i32},
                                              {"U8", DType::u8},   {"BOOL", DType::bool_}};
  return m.at(code);
}

// Collects CPU, contiguous copies of tensors and their entries (the copies outlive the write).
struct EntryList {
  std::vector<Tensor> keep;
  std::vector<SafetensorsEntry> entries;
  void add(const std::string& name, const Tensor& t) {
    if (t.is_meta())
      throw ValueError("save: '" + name + "' is a meta tensor with no values; materialise the "
                       "module before saving");
    Tensor c = native::contiguous(native::to(t, Device::cpu(), t.dtype()));
    keep.push_back(c);
    entries.push_back({name, st_dtype(c.dtype()), c.sizes(), c.numel() ? c.raw_data_ptr() : nullptr,
                       c.nbytes()});
  }
};

Tensor read_tensor(const SafetensorsFile& f, const std::string& name) {
  const auto& info = f.info(name);
  Tensor t = native::empty(info.shape, loom_dtype(info.dtype), Device::cpu());
  auto bytes = f.data(name);
  if (!bytes.empty()) std::memcpy(t.raw_data_ptr(), bytes.data(), bytes.size());
  return t;
}

json groups_json(const optim::OptimizerStateDict& sd) {
  json groups = json::array();
  for (const auto& g : sd.param_groups) groups.push_back({{"options", g.options}, {"params", g.params}});
  return groups;
}

}  // namespace

void save_checkpoint(const std::string& path, const CheckpointState& state,
                     const std::map<std::string, double>& precision_state) {
  EntryList list;
  json meta = {{"format", 1}, {"entries", json::object()}, {"precision", precision_state}};
  for (const auto& [key, value] : state) {
    json& e = meta["entries"][key];
    if (auto* m = std::get_if<std::shared_ptr<nn::Module>>(&value)) {
      e = {{"kind", "module"}};
      for (const auto& [n, t] : (*m)->state_dict()) list.add(key + "." + n, t);
    } else if (auto* o = std::get_if<std::shared_ptr<optim::Optimizer>>(&value)) {
      optim::OptimizerStateDict sd = (*o)->state_dict();
      json steps = json::object();
      for (const auto& [idx, st] : sd.state) {
        steps[std::to_string(idx)] = st.step;
        for (const auto& [buf, t] : st.buffers)
          list.add(key + ".state." + std::to_string(idx) + "." + buf, t);
      }
      e = {{"kind", "optimizer"}, {"param_groups", groups_json(sd)}, {"steps", steps}};
    } else if (auto* s = std::get_if<std::shared_ptr<optim::LRScheduler>>(&value)) {
      auto sd = (*s)->state_dict();
      e = {{"kind", "scheduler"}, {"last_epoch", sd.last_epoch}, {"base_lrs", sd.base_lrs}};
    } else if (auto* t = std::get_if<Tensor>(&value)) {
      e = {{"kind", "tensor"}};
      list.add(key, *t);
    } else if (auto* d = std::get_if<double>(&value)) {
      e = {{"kind", "double"}, {"value", *d}};
    } else if (auto* i = std::get_if<int64_t>(&value)) {
      e = {{"kind", "int"}, {"value", *i}};
    } else {
      e = {{"kind", "string"}, {"value", std::get<std::string>(value)}};
    }
  }
  write_safetensors(path, list.entries, {{"loom", meta.dump()}});
}

namespace {

// The kind a state value asks the file for ("module", "double", ...).
const char* expected_kind(const CheckpointValue& v) {
  static_assert(std::variant_size_v<CheckpointValue> == 7, "one kind per CheckpointValue alternative");
  static const char* kinds[] = {"module", "optimizer", "scheduler", "tensor", "double", "int", "string"};
  return kinds[v.index()];
}

optim::OptimizerStateDict optimizer_state(const SafetensorsFile& f, const std::string& key,
                                          const json& e) {
  optim::OptimizerStateDict sd;
  for (const auto& g : e.at("param_groups"))
    sd.param_groups.push_back({g.at("options").get<optim::HyperParams>(),
                               g.at("params").get<std::vector<int64_t>>()});
  for (const auto& [idx, step] : e.at("steps").items()) {
    optim::ParamState st;
    st.step = step.get<int64_t>();
    std::string prefix = key + ".state." + idx + ".";
    for (const auto& n : f.names())
      if (n.starts_with(prefix)) st.buffers[n.substr(prefix.size())] = read_tensor(f, n);
    sd.state[std::stoll(idx)] = std::move(st);
  }
  return sd;
}

}  // namespace

CheckpointState load_checkpoint(const std::string& path, CheckpointState& state, bool strict,
                                std::map<std::string, double>* precision_state) {
  SafetensorsFile f = SafetensorsFile::open(path);  // validates the whole file first
  auto it = f.metadata().find("loom");
  if (it == f.metadata().end())
    throw ValueError("load: '" + path + "' is a safetensors file without loom metadata; it was "
                     "not written by Fabric::save (load its tensors with SafetensorsFile)");

  // Everything the file says is parsed and checked against `state` before anything changes,
  // so a refused load leaves modules, optimizers, schedulers and values as they were.
  json meta;
  std::map<std::string, nn::StateDict> module_states;
  std::map<std::string, optim::OptimizerStateDict> optimizer_states;
  try {
    meta = json::parse(it->second);
    const json& entries = meta.at("entries");
    auto module_state = [&](const std::string& key) {
      nn::StateDict sd;
      std::string prefix = key + ".";
      for (const auto& n : f.names())
        if (n.starts_with(prefix)) sd.insert(n.substr(prefix.size()), read_tensor(f, n));
      return sd;
    };
    for (const auto& [key, value] : state) {
      if (!entries.contains(key)) {
        if (strict)
          throw ValueError("load: '" + path + "' has no entry '" + key +
                           "'; pass strict=false to load the entries it has");
        continue;
      }
      std::string kind = entries.at(key).at("kind");
      if (kind != expected_kind(value))
        throw ValueError("load: entry '" + key + "' of " + path + " is a " + kind +
                         ", but the state given to load() holds a " + expected_kind(value) +
                         " under that key");
      if (auto* m = std::get_if<std::shared_ptr<nn::Module>>(&value)) {
        nn::StateDict sd = module_state(key);
        nn::StateDict mine = (*m)->state_dict();
        for (const auto& [n, t] : mine) {
          const Tensor* src = sd.find(n);
          if (!src) {
            if (strict) throw ValueError("load: '" + key + "' misses key '" + n + "' in " + path);
            continue;
          }
          if (src->sizes() != t.sizes())
            throw ValueError("load: shape mismatch for '" + key + "." + n + "': the file has " +
                             shape_str(src->sizes()) + ", the module has " + shape_str(t.sizes()));
          if (src->dtype() != t.dtype() && strict)
            throw ValueError(detail::concat("load: dtype mismatch for '", key, ".", n,
                                            "': the file has ", src->dtype(), ", the module has ",
                                            t.dtype(), "; convert the module or pass strict=false"));
        }
        if (strict)
          for (const auto& [n, t] : sd)
            if (!mine.contains(n))
              throw ValueError("load: unexpected key '" + key + "." + n + "' in " + path +
                               " for the module; pass strict=false to ignore it");
        module_states.emplace(key, std::move(sd));
      } else if (auto* o = std::get_if<std::shared_ptr<optim::Optimizer>>(&value)) {
        optim::OptimizerStateDict sd = optimizer_state(f, key, entries.at(key));
        const auto& groups = (*o)->param_groups();
        bool fits = sd.param_groups.size() == groups.size();
        for (size_t g = 0; fits && g < groups.size(); ++g)
          fits = sd.param_groups[g].params.size() == groups[g].params.size();
        if (!fits)
          throw ValueError("load: the optimizer '" + key + "' in " + path + " has other parameter "
                           "groups than the optimizer given (different group count or sizes); "
                           "build the optimizer as it was when saved");
        optimizer_states.emplace(key, std::move(sd));
      }
    }
  } catch (const json::exception& e) {
    throw ValueError("load: the loom metadata of '" + path + "' is corrupt (" + e.what() +
                     "); the file was not written by this version of Fabric::save");
  }
  const json& entries = meta.at("entries");

  NoGradGuard no_grad;
  for (auto& [key, value] : state) {
    if (!entries.contains(key)) continue;
    const json& e = entries.at(key);
    if (auto* m = std::get_if<std::shared_ptr<nn::Module>>(&value)) {
      (*m)->load_state_dict(module_states.at(key), strict);
    } else if (auto* o = std::get_if<std::shared_ptr<optim::Optimizer>>(&value)) {
      (*o)->load_state_dict(optimizer_states.at(key));
    } else if (auto* s = std::get_if<std::shared_ptr<optim::LRScheduler>>(&value)) {
      (*s)->load_state_dict({e.at("last_epoch").get<int64_t>(),
                             e.at("base_lrs").get<std::vector<double>>()});
    } else if (std::holds_alternative<Tensor>(value)) {
      value = read_tensor(f, key);
    } else if (std::holds_alternative<double>(value)) {
      value = e.at("value").get<double>();
    } else if (std::holds_alternative<int64_t>(value)) {
      value = e.at("value").get<int64_t>();
    } else {
      value = e.at("value").get<std::string>();
    }
  }
  if (precision_state && meta.contains("precision"))
    *precision_state = meta.at("precision").get<std::map<std::string, double>>();

  CheckpointState rest;
  for (const auto& [key, e] : entries.items()) {
    if (state.count(key)) continue;
    std::string kind = e.at("kind");
    if (kind == "tensor") rest[key] = read_tensor(f, key);
    else if (kind == "double") rest[key] = e.at("value").get<double>();
    else if (kind == "int") rest[key] = e.at("value").get<int64_t>();
    else if (kind == "string") rest[key] = e.at("value").get<std::string>();
  }
  return rest;
}

}  // namespace loom
