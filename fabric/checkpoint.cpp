// Fabric checkpoints: save, and a load that validates everything before it applies anything
// (see checkpoint.h for the layout and the rules).
#include "fabric/checkpoint.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "autograd/grad_mode.h"
#include "fabric/io/checkpoint_codec.h"
#include "fabric/io/crc32c.h"
#include "fabric/io/safetensors.h"
#include "fabric/wrappers.h"
#include "tensor/native.h"

namespace loom {

const char* checkpoint_kind(const CheckpointValue& v) {
  static_assert(std::variant_size_v<CheckpointValue> == 7, "one kind per CheckpointValue alternative");
  static const char* kinds[] = {"module", "optimizer", "scheduler", "tensor", "double", "int", "string"};
  return kinds[v.index()];
}

namespace {

using json = nlohmann::json;

constexpr int64_t kFormat = 2;  // written by save; loads read 1 and 2





json numbers_json(const std::map<std::string, double>& m) {
  json out = json::object();
  for (const auto& [k, v] : m) out[k] = io::number_json(v);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Saving
// ---------------------------------------------------------------------------------------------

// Collects CPU, contiguous copies of tensors (which outlive the write), their entries and CRCs.
struct EntryList {
  std::vector<Tensor> keep;
  std::vector<SafetensorsEntry> entries;
  json crcs = json::object();
  void add(const std::string& name, const Tensor& t) {
    if (!t.defined())
      throw ValueError("save: '" + name + "' is an undefined tensor; give it a value or leave it "
                       "out of the state");
    if (t.is_meta())
      throw ValueError("save: '" + name + "' is a meta tensor with no values; materialise the "
                       "module before saving");
    Tensor c = native::contiguous(native::to(t, Device::cpu(), t.dtype()));
    keep.push_back(c);
    const void* data = c.numel() ? c.raw_data_ptr() : nullptr;
    entries.push_back({name, io::safetensors_dtype(c.dtype()), c.sizes(), data, c.nbytes()});
    crcs[name] = data ? crc32c(data, c.nbytes()) : crc32c(nullptr, 0);
  }
};

}  // namespace

void save_checkpoint(const std::string& path, const CheckpointState& state,
                     const std::map<std::string, double>& precision_state) {
  EntryList list;
  json entries = json::object();
  for (const auto& [key, value] : state) {
    json& e = entries[key];
    if (auto* m = std::get_if<std::shared_ptr<nn::Module>>(&value)) {
      json names = json::array();
      for (const auto& [n, t] : (*m)->state_dict()) {
        list.add(key + "." + n, t);
        names.push_back(n);
      }
      e = {{"kind", "module"}, {"tensors", names}};
    } else if (auto* o = std::get_if<std::shared_ptr<optim::Optimizer>>(&value)) {
      optim::OptimizerStateDict sd = (*o)->state_dict();
      json groups = json::array();
      for (const auto& g : sd.param_groups)
        groups.push_back({{"options", numbers_json(g.options)}, {"params", g.params}});
      json params_state = json::object();
      for (const auto& [idx, st] : sd.state) {
        json buffers = json::array();
        for (const auto& [buf, t] : st.buffers) {
          list.add(key + ".state." + std::to_string(idx) + "." + buf, t);
          buffers.push_back(buf);
        }
        params_state[std::to_string(idx)] = {{"step", st.step}, {"buffers", buffers}};
      }
      e = {{"kind", "optimizer"}, {"param_groups", groups}, {"state", params_state}};
    } else if (auto* s = std::get_if<std::shared_ptr<optim::LRScheduler>>(&value)) {
      auto sd = (*s)->state_dict();
      json base_lrs = json::array();
      for (double lr : sd.base_lrs) base_lrs.push_back(io::number_json(lr));
      e = {{"kind", "scheduler"}, {"last_epoch", sd.last_epoch}, {"base_lrs", base_lrs}};
    } else if (auto* t = std::get_if<Tensor>(&value)) {
      e = {{"kind", "tensor"}};
      list.add(key, *t);
    } else if (auto* d = std::get_if<double>(&value)) {
      e = {{"kind", "double"}, {"value", io::number_json(*d)}};
    } else if (auto* i = std::get_if<int64_t>(&value)) {
      e = {{"kind", "int"}, {"value", *i}};
    } else {
      e = {{"kind", "string"}, {"value", std::get<std::string>(value)}};
    }
  }
  json meta = {{"format", kFormat},
               {"entries", std::move(entries)},
               {"precision", numbers_json(precision_state)},
               {"crc32c", std::move(list.crcs)}};
  std::string text;
  try {
    text = meta.dump();
  } catch (const json::exception&) {
    throw ValueError("save: a key or string value of the state given to save('" + path +
                     "') is not valid UTF-8; checkpoint metadata is JSON, which needs UTF-8 text");
  }
  write_safetensors(path, list.entries, {{"loom", text}}, {.header_checksum = true});
}

namespace {

// ---------------------------------------------------------------------------------------------
// Loading: reading the metadata with exact types
// ---------------------------------------------------------------------------------------------

bool known_kind(const std::string& kind) {
  for (const char* k : {"module", "optimizer", "scheduler", "tensor", "double", "int", "string"})
    if (kind == k) return true;
  return false;
}

const char* type_name(const json& v) {
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_null()) return "null";
  if (v.is_array()) return "an array";
  return "an object";
}

// Reads the loom JSON of one file. Every accessor checks the JSON type (nothing is converted
// silently: 2.5 is not an int, 1e300 does not become one) and throws ValueError naming the
// file and the place ("entry 'opt': param_groups[0].options.lr").
class Meta {
 public:
  explicit Meta(const std::string& path) : path_(path) {}

  [[noreturn]] void malformed(const std::string& where, const std::string& what) const {
    throw ValueError(detail::concat("load: ", where, " in the loom metadata of '", path_, "' ", what,
                                    "; the file was not written by this version of Fabric::save "
                                    "(or was edited)"));
  }

  const json& member(const json& obj, const std::string& name, const std::string& where) const {
    if (!obj.is_object()) malformed(where, detail::concat("is ", type_name(obj), ", not an object"));
    auto it = obj.find(name);
    if (it == obj.end()) malformed(where, "has no \"" + name + "\"");
    return *it;
  }
  const json& object(const json& v, const std::string& where) const {
    if (!v.is_object()) malformed(where, detail::concat("is ", type_name(v), ", not an object"));
    return v;
  }
  const json& array(const json& v, const std::string& where) const {
    if (!v.is_array()) malformed(where, detail::concat("is ", type_name(v), ", not an array"));
    return v;
  }
  int64_t integer(const json& v, const std::string& where) const {
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
        malformed(where, detail::concat("is ", v.get<uint64_t>(), ", more than an int64 holds"));
      return int64_t(v.get<uint64_t>());
    }
    if (v.is_number_integer()) return v.get<int64_t>();
    malformed(where, detail::concat("is ", type_name(v), ", not an integer"));
  }
  // A number, or one of the strings "nan", "inf", "-inf".
  double number(const json& v, const std::string& where) const {
    if (std::optional<double> d = io::number_of_json(v)) return *d;
    malformed(where, detail::concat("is ", type_name(v), ", not a number"));
  }
  double finite(const json& v, const std::string& where) const {
    double d = number(v, where);
    if (!std::isfinite(d)) malformed(where, detail::concat("is ", d, ", not a finite number"));
    return d;
  }
  const std::string& string(const json& v, const std::string& where) const {
    if (!v.is_string()) malformed(where, detail::concat("is ", type_name(v), ", not a string"));
    return v.get_ref<const std::string&>();
  }
  // A non-negative decimal integer written as an object key ("0", "17").
  int64_t index(const std::string& s, const std::string& where) const {
    int64_t out = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || out < 0 ||
        (s.size() > 1 && s[0] == '0'))
      malformed(where, "has key '" + s + "', which is not a parameter index (0, 1, ...)");
    return out;
  }
  // Distinct strings.
  std::vector<std::string> names(const json& v, const std::string& where) const {
    std::vector<std::string> out;
    std::set<std::string> seen;
    for (size_t i = 0; i < array(v, where).size(); ++i) {
      const std::string& s = string(v[i], detail::concat(where, "[", i, "]"));
      if (!seen.insert(s).second) malformed(where, "lists '" + s + "' twice");
      out.push_back(s);
    }
    return out;
  }

 private:
  const std::string& path_;
};

// The loom JSON text parsed; errors (bad syntax, a number that overflows a double such as
// 1e400) name the path of keys to the last key read ("entries.loss.value").
json parse_loom_json(const std::string& text, const std::string& path) {
  std::vector<std::string> keys;  // by depth; "" for the levels of arrays
  auto track = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth >= 1) {
      keys.resize(size_t(depth - 1));
      keys.push_back(parsed.get<std::string>());
    }
    return true;
  };
  try {
    return json::parse(text, track);
  } catch (const json::exception& e) {
    std::string at;
    for (const auto& k : keys)
      if (!k.empty()) at += (at.empty() ? "" : ".") + k;
    throw ValueError(detail::concat("load: the loom metadata of '", path, "' is corrupt (", e.what(),
                                    at.empty() ? std::string() : ", at key '" + at + "'",
                                    "); the file was not written by this version of Fabric::save"));
  }
}

Tensor read_tensor(const SafetensorsFile& f, const std::string& name) {
  const auto& info = f.info(name);
  std::optional<DType> dtype = io::dtype_of_safetensors(info.dtype);
  if (!dtype)  // SafetensorsFile accepts loom's dtypes only; kept as a check all the same
    throw ValueError("load: tensor '" + name + "' in '" + f.path() + "' has dtype " + info.dtype +
                     ", which loom does not support");
  Tensor t = native::empty(info.shape, *dtype, Device::cpu());
  auto bytes = f.data(name);
  if (!bytes.empty()) std::memcpy(t.raw_data_ptr(), bytes.data(), bytes.size());
  return t;
}


// The precision plugin's state: finite numbers; when there is any, a gradient scaler's five
// keys, which Fabric::load hands to GradScaler::load_state_dict (it needs all of them and
// converts the two counters to integers).
std::map<std::string, double> precision_state_of(const Meta& meta, const json& v) {
  const std::string where = "\"precision\"";
  std::map<std::string, double> out;
  for (const auto& [k, x] : meta.object(v, where).items())
    out[k] = meta.finite(x, where + "." + k);
  if (out.empty()) return out;
  for (const char* k : {"scale", "growth_factor", "backoff_factor", "growth_interval", "growth_tracker"})
    if (!out.count(k))
      meta.malformed(where, std::string("has no \"") + k + "\" (a gradient scaler's state has "
                     "scale, growth_factor, backoff_factor, growth_interval and growth_tracker)");
  if (!(out["scale"] > 0)) meta.malformed(where + ".scale", detail::concat("is ", out["scale"], ", not > 0"));
  for (const char* k : {"growth_interval", "growth_tracker"}) {
    double x = out[k];
    if (!(x >= 0 && x <= 9007199254740992.0 && x == std::floor(x)))
      meta.malformed(where + "." + k, detail::concat("is ", x, ", not an integer in [0, 2^53]"));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Loading: validation, building everything that will be applied
// ---------------------------------------------------------------------------------------------

class Loader {
 public:
  Loader(const std::string& path, bool strict)
      : path_(path), strict_(strict), file_(SafetensorsFile::open(path)), meta_(path_) {}

  CheckpointState load(CheckpointState& state, std::map<std::string, double>* precision_state) {
    auto it = file_.metadata().find("loom");
    if (it == file_.metadata().end())
      throw ValueError("load: '" + path_ + "' is a safetensors file without loom metadata; it was "
                       "not written by Fabric::save (load its tensors with SafetensorsFile)");
    root_ = parse_loom_json(it->second, path_);
    format_ = meta_.integer(meta_.member(root_, "format", "the top level"), "\"format\"");
    if (format_ != 1 && format_ != 2)
      throw ValueError(detail::concat("load: '", path_, "' is a checkpoint of format ", format_,
                                      "; this version of loom reads formats 1 and 2 (use the loom "
                                      "that wrote it, or a newer one)"));
    if (format_ >= 2) verify_checksums();
    const json& entries = meta_.object(meta_.member(root_, "entries", "the top level"), "\"entries\"");

    // Everything below builds what will be applied; nothing changes until all of it passed.
    std::vector<std::function<void()>> apply;
    for (auto& [key, value] : state) {
      auto e = entries.find(key);
      if (e == entries.end()) {
        if (strict_)
          throw ValueError("load: '" + path_ + "' has no entry '" + key +
                           "'; pass strict=false to load the entries it has");
        continue;
      }
      const std::string kind = kind_of(key, *e);
      if (kind != checkpoint_kind(value))
        throw ValueError("load: entry '" + key + "' of " + path_ + " is a " + kind +
                         ", but the state given to load() holds a " + checkpoint_kind(value) +
                         " under that key");
      apply.push_back(plan(key, *e, value));
    }
    std::optional<std::map<std::string, double>> precision;
    if (precision_state && root_.contains("precision"))
      precision = precision_state_of(meta_, root_["precision"]);

    CheckpointState rest;
    for (const auto& [key, e] : entries.items()) {
      if (state.count(key)) continue;
      const std::string kind = kind_of(key, e);
      if (kind == "tensor" || kind == "double" || kind == "int" || kind == "string")
        rest[key] = plain_value(key, e, kind);
    }

    // Apply: every step below was checked above and cannot fail on this data.
    NoGradGuard no_grad;
    for (auto& step : apply) step();
    if (precision) *precision_state = std::move(*precision);
    return rest;
  }

 private:
  static std::string entry(const std::string& key) { return "entry '" + key + "'"; }

  // Format 2: every tensor has a checksum and matches it.
  void verify_checksums() {
    if (!file_.header_checksum_verified())
      throw ValueError("the header of checkpoint '" + path_ + "' is corrupt: its loom metadata "
                       "is format 2, which Fabric::save writes with a header checksum, but the "
                       "checksum key at the start of the header is damaged or missing; the file "
                       "was damaged after it was written (use an earlier checkpoint or a backup)");
    const json& crcs = meta_.object(meta_.member(root_, "crc32c", "the top level"), "\"crc32c\"");
    for (const auto& [name, v] : crcs.items())
      if (!file_.has(name)) meta_.malformed("\"crc32c\"", "has a checksum for tensor '" + name +
                                            "', which the file does not have");
    for (const auto& name : file_.names()) {
      auto it = crcs.find(name);
      if (it == crcs.end())
        meta_.malformed("\"crc32c\"", "has no checksum for tensor '" + name + "'");
      int64_t expected = meta_.integer(*it, "\"crc32c\".\"" + name + "\"");
      if (expected < 0 || expected > int64_t(UINT32_MAX))
        meta_.malformed("\"crc32c\".\"" + name + "\"", "is not a CRC-32C (0 to 2^32 - 1)");
      auto bytes = file_.data(name);
      uint32_t actual = crc32c(bytes.data(), bytes.size());
      if (actual != uint32_t(expected))
        throw ValueError(detail::concat(
            "load: tensor '", name, "' in checkpoint '", path_, "' is corrupt: its ", bytes.size(),
            " bytes have CRC-32C ", io::hex8(actual), " but the checkpoint recorded ",
            io::hex8(uint32_t(expected)), "; the file was damaged after it was written (use an earlier "
            "checkpoint or a backup)"));
    }
  }

  std::string kind_of(const std::string& key, const json& e) const {
    const std::string& kind = meta_.string(meta_.member(e, "kind", entry(key)), entry(key) + ".kind");
    if (!known_kind(kind)) meta_.malformed(entry(key), "has unknown kind '" + kind + "'");
    return kind;
  }

  // The file's tensors of a module entry, by the name within the module.
  std::vector<std::pair<std::string, std::string>> module_tensors(const std::string& key,
                                                                  const json& e) const {
    std::vector<std::pair<std::string, std::string>> out;  // (name in module, name in file)
    if (format_ == 1) {  // by prefix
      const std::string prefix = key + ".";
      for (const auto& n : file_.names())
        if (n.starts_with(prefix)) out.emplace_back(n.substr(prefix.size()), n);
      return out;
    }
    const std::string where = entry(key) + ".tensors";
    for (const auto& n : meta_.names(meta_.member(e, "tensors", entry(key)), where)) {
      if (!file_.has(key + "." + n))
        meta_.malformed(where, "lists '" + n + "', but the file has no tensor '" + key + "." + n + "'");
      out.emplace_back(n, key + "." + n);
    }
    return out;
  }

  std::function<void()> plan(const std::string& key, const json& e, CheckpointValue& value) {
    if (auto* m = std::get_if<std::shared_ptr<nn::Module>>(&value)) return plan_module(key, e, *m);
    if (auto* o = std::get_if<std::shared_ptr<optim::Optimizer>>(&value))
      return plan_optimizer(key, e, *o);
    if (auto* s = std::get_if<std::shared_ptr<optim::LRScheduler>>(&value))
      return plan_scheduler(key, e, *s);
    CheckpointValue v = plain_value(key, e, checkpoint_kind(value));
    return [&value, v = std::move(v)] { value = v; };
  }

  std::function<void()> plan_module(const std::string& key, const json& e,
                                    std::shared_ptr<nn::Module> m) {
    nn::StateDict sd;
    for (const auto& [n, file_name] : module_tensors(key, e)) sd.insert(n, read_tensor(file_, file_name));
    nn::StateDict mine = m->state_dict();
    for (const auto& [n, t] : mine) {
      const Tensor* src = sd.find(n);
      if (!src) {
        if (strict_) throw ValueError("load: '" + key + "' misses key '" + n + "' in " + path_);
        continue;
      }
      if (src->sizes() != t.sizes())
        throw ValueError("load: shape mismatch for '" + key + "." + n + "': the file has " +
                         shape_str(src->sizes()) + ", the module has " + shape_str(t.sizes()));
      if (src->dtype() != t.dtype() && strict_)
        throw ValueError(detail::concat("load: dtype mismatch for '", key, ".", n,
                                        "': the file has ", src->dtype(), ", the module has ",
                                        t.dtype(), "; convert the module or pass strict=false"));
    }
    if (strict_)
      for (const auto& [n, t] : sd)
        if (!mine.contains(n))
          throw ValueError("load: unexpected key '" + key + "." + n + "' in " + path_ +
                           " for the module; pass strict=false to ignore it");
    return [m = std::move(m), sd = std::move(sd), strict = strict_] { m->load_state_dict(sd, strict); };
  }

  optim::OptimizerStateDict optimizer_state(const std::string& key, const json& e,
                                            const optim::Optimizer& opt) const {
    const std::string where = entry(key);
    optim::OptimizerStateDict sd;
    const json& groups = meta_.array(meta_.member(e, "param_groups", where), where + ".param_groups");
    for (size_t g = 0; g < groups.size(); ++g) {
      const std::string gw = detail::concat(where, ".param_groups[", g, "]");
      optim::OptimizerStateDict::Group group;
      const json& options = meta_.object(meta_.member(groups[g], "options", gw), gw + ".options");
      for (const auto& [k, v] : options.items()) group.options[k] = meta_.number(v, gw + ".options." + k);
      // The saved options replace the group's whole: all must be there, so that what is
      // loaded never depends on what the optimizer held before.
      for (const auto& [k, v] : opt.defaults())
        if (!group.options.count(k))
          throw ValueError(detail::concat("load: optimizer '", key, "' in '", path_, "': group ", g,
                                          " has no hyper-parameter '", k, "' (", opt.name(),
                                          " has ", opt.defaults().size(), "); the checkpoint is "
                                          "incomplete"));
      const json& params = meta_.array(meta_.member(groups[g], "params", gw), gw + ".params");
      for (size_t i = 0; i < params.size(); ++i)
        group.params.push_back(meta_.integer(params[i], detail::concat(gw, ".params[", i, "]")));
      sd.param_groups.push_back(std::move(group));
    }
    if (format_ == 1) {  // "steps": {"<i>": step}, buffers found by name prefix
      const json& steps = meta_.object(meta_.member(e, "steps", where), where + ".steps");
      for (const auto& [idx, step] : steps.items()) {
        optim::ParamState st;
        st.step = meta_.integer(step, where + ".steps." + idx);
        const std::string prefix = key + ".state." + idx + ".";
        for (const auto& n : file_.names())
          if (n.starts_with(prefix)) st.buffers[n.substr(prefix.size())] = read_tensor(file_, n);
        sd.state[meta_.index(idx, where + ".steps")] = std::move(st);
      }
      return sd;
    }
    const json& state = meta_.object(meta_.member(e, "state", where), where + ".state");
    for (const auto& [idx, s] : state.items()) {
      const std::string sw = where + ".state." + idx;
      int64_t index = meta_.index(idx, where + ".state");
      optim::ParamState st;
      st.step = meta_.integer(meta_.member(s, "step", sw), sw + ".step");
      for (const auto& buf : meta_.names(meta_.member(s, "buffers", sw), sw + ".buffers")) {
        const std::string name = key + ".state." + idx + "." + buf;
        if (!file_.has(name))
          meta_.malformed(sw + ".buffers", "lists '" + buf + "', but the file has no tensor '" + name + "'");
        st.buffers[buf] = read_tensor(file_, name);
      }
      if (!sd.state.emplace(index, std::move(st)).second)
        meta_.malformed(where + ".state", detail::concat("has parameter index ", index, " twice"));
    }
    return sd;
  }

  std::function<void()> plan_optimizer(const std::string& key, const json& e,
                                       std::shared_ptr<optim::Optimizer> o) {
    const optim::Optimizer& inner = unwrap_optimizer(*o);
    optim::OptimizerStateDict sd = optimizer_state(key, e, inner);
    const auto& groups = inner.param_groups();
    bool fits = sd.param_groups.size() == groups.size();
    for (size_t g = 0; fits && g < groups.size(); ++g)
      fits = sd.param_groups[g].params.size() == groups[g].params.size();
    if (!fits)
      throw ValueError("load: the optimizer '" + key + "' in " + path_ + " has other parameter "
                       "groups than the optimizer given (different group count or sizes); "
                       "build the optimizer as it was when saved");
    try {
      // What load_state_dict() checks, plus (strict) each buffer's dtype.
      inner.check_state_dict(sd, /*exact_dtypes=*/strict_);
    } catch (const ValueError& err) {
      throw ValueError("load: optimizer '" + key + "' in '" + path_ + "' cannot take the saved "
                       "state: " + err.what());
    }
    return [o = std::move(o), sd = std::move(sd)] { o->load_state_dict(sd); };
  }

  std::function<void()> plan_scheduler(const std::string& key, const json& e,
                                       std::shared_ptr<optim::LRScheduler> s) {
    const std::string where = entry(key);
    optim::SchedulerStateDict sd;
    sd.last_epoch = meta_.integer(meta_.member(e, "last_epoch", where), where + ".last_epoch");
    if (sd.last_epoch < 0 || sd.last_epoch > (int64_t(1) << 62))
      meta_.malformed(where + ".last_epoch", detail::concat("is ", sd.last_epoch, ", not in [0, 2^62]"));
    const json& lrs = meta_.array(meta_.member(e, "base_lrs", where), where + ".base_lrs");
    for (size_t i = 0; i < lrs.size(); ++i)
      sd.base_lrs.push_back(meta_.finite(lrs[i], detail::concat(where, ".base_lrs[", i, "]")));
    const size_t groups = s->optimizer()->param_groups().size();
    if (sd.base_lrs.size() != s->base_lrs().size() || sd.base_lrs.size() != groups)
      throw ValueError(detail::concat("load: scheduler '", key, "' in '", path_, "' has ",
                                      sd.base_lrs.size(), " base lrs, but the scheduler given has ",
                                      s->base_lrs().size(), " and its optimizer ", groups,
                                      " parameter groups; build them as they were when saved"));
    // LRScheduler::load_state_dict writes lr_at(last_epoch) into each group through set_lr,
    // which refuses a negative (or NaN) lr.
    for (size_t i = 0; i < groups; ++i) {
      double lr = 0;
      try {
        lr = s->lr_at(sd.last_epoch, sd.base_lrs[i], i);
      } catch (const Error& err) {
        throw ValueError(detail::concat("load: scheduler '", key, "' in '", path_, "': ", err.what()));
      }
      if (!(lr >= 0))
        throw ValueError(detail::concat("load: scheduler '", key, "' in '", path_, "' would set group ",
                                        i, "'s lr to ", lr, " at epoch ", sd.last_epoch, " (base lr ",
                                        sd.base_lrs[i], "); a learning rate must be >= 0"));
    }
    return [s = std::move(s), sd = std::move(sd)] { s->load_state_dict(sd); };
  }

  CheckpointValue plain_value(const std::string& key, const json& e, const std::string& kind) const {
    const std::string where = entry(key);
    if (kind == "tensor") {
      if (!file_.has(key)) meta_.malformed(where, "is a tensor, but the file has no tensor '" + key + "'");
      return read_tensor(file_, key);
    }
    const json& v = meta_.member(e, "value", where);
    if (kind == "double") return meta_.number(v, where + ".value");
    if (kind == "int") return meta_.integer(v, where + ".value");
    if (kind == "string") return meta_.string(v, where + ".value");
    meta_.malformed(where, "is a " + kind + ", which has no plain value");
  }

  std::string path_;
  bool strict_;
  SafetensorsFile file_;
  Meta meta_;
  json root_;
  int64_t format_ = 0;
};

}  // namespace

CheckpointState load_checkpoint(const std::string& path, CheckpointState& state, bool strict,
                                std::map<std::string, double>* precision_state) {
  return Loader(path, strict).load(state, precision_state);
}

}  // namespace loom
