// libFuzzer target: load_checkpoint of arbitrary input into a small model + AdamW + StepLR +
// plain values (fuzz_state.h has the input encoding).
//
// Oracles, besides the sanitizers and "no exception but loom::Error escapes":
//   * refused: the state (parameters, optimizer state_dict, scheduler, plain values, precision
//     state) is byte-identical to before the load;
//   * accepted: the load was complete -- the state, saved again, holds for every key the file
//     has exactly what the file held (tensors byte for byte, after the dtype conversion a
//     non-strict load makes), keys the file lacks are as they were, and the returned rest is
//     exactly the file's other plain entries. This comparison reads the file with its own code
//     below, not with the loader's.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "checkpoint_test_util.h"
#include "fabric/io/crc32c.h"
#include "fabric/io/safetensors.h"
#include "fuzz_state.h"
#include "kernels/cpu/parallel.h"
#include "tensor/native.h"

namespace {

using namespace loom;
using json = nlohmann::json;
using checkpoint_test::state_bytes;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_checkpoint: ORACLE FAILED: %s\n", what.c_str());
  std::abort();
}

void check(bool ok, const std::string& what) {
  if (!ok) fail(what);
}

void write_file(const std::string& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) fail("cannot write " + path);
}

struct RawTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

struct Harness {
  std::string dir;
  std::string file_a;  // what is loaded
  std::string file_b;  // the loaded state saved again
  std::map<std::string, RawTensor> pristine;  // tensors of the pristine checkpoint
  std::vector<std::string> pristine_order;
  fuzz::State state;
  bool dirty = true;  // rebuild the state before the next load

  Harness() {
    const char* shm = "/dev/shm";
    std::string base = ::access(shm, W_OK) == 0 ? shm : std::filesystem::temp_directory_path().string();
    dir = base + "/loom_fuzz_checkpoint_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir);
    file_a = dir + "/a.safetensors";
    file_b = dir + "/b.safetensors";
    fuzz::State saved = fuzz::make_state(1, 3);
    save_checkpoint(file_a, saved.values);
    auto f = SafetensorsFile::open(file_a);
    for (const auto& n : f.names()) {
      auto d = f.data(n);
      pristine[n] = {f.info(n).dtype, f.info(n).shape,
                     std::string(reinterpret_cast<const char*>(d.data()), d.size())};
      pristine_order.push_back(n);
    }
  }
  ~Harness() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

Harness* harness = nullptr;

// LOOM_FUZZ_VERBOSE=1: say for each input whether it loaded or why not (to check seeds).
bool verbose() {
  static const bool on = std::getenv("LOOM_FUZZ_VERBOSE") != nullptr;
  return on;
}

// ---- structured inputs ----

std::vector<int64_t> parse_dims(const std::string& s, bool* ok) {
  std::vector<int64_t> dims;
  *ok = true;
  if (s.empty()) return dims;  // a 0-dim tensor
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    std::string d = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (d.empty() || d.size() > 3 || d.find_first_not_of("0123456789") != std::string::npos) {
      *ok = false;
      return dims;
    }
    dims.push_back(std::stoll(d));  // at most 3 digits: cannot throw
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return dims;
}

// Writes a valid safetensors file (header checksum included) from a structured input; false
// when the input describes nothing writable (the input is then uninteresting).
bool write_structured(const uint8_t* data, size_t size, bool reseal) {
  std::string in(reinterpret_cast<const char*>(data), size);
  size_t nul = in.find('\0');
  std::string text = in.substr(0, nul);
  std::vector<std::pair<std::string, RawTensor>> tensors;
  if (nul == std::string::npos) {
    for (const auto& n : harness->pristine_order) tensors.emplace_back(n, harness->pristine.at(n));
  } else {
    std::set<std::string> names;
    size_t total = 0;
    size_t pos = nul + 1;
    while (pos < in.size() && tensors.size() < 64) {
      size_t end = in.find('\n', pos);
      std::string line = in.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
      pos = end == std::string::npos ? in.size() : end + 1;
      size_t bar1 = line.find('|'), bar2 = line.find('|', bar1 + 1);
      if (bar1 == std::string::npos || bar2 == std::string::npos) continue;
      std::string name = line.substr(0, bar1), dtype = line.substr(bar1 + 1, bar2 - bar1 - 1);
      bool ok = false;
      std::vector<int64_t> shape = parse_dims(line.substr(bar2 + 1), &ok);
      if (!ok || name.empty() || name == "__metadata__" || !names.insert(name).second) continue;
      size_t element = 0;
      try {
        element = safetensors_dtype_size(dtype);
      } catch (const ValueError&) {
        continue;
      }
      size_t n = element;
      for (int64_t d : shape) n *= size_t(d);
      if (shape.size() > 4 || n > 4096 || (total += n) > 16384) continue;
      RawTensor t{dtype, shape, {}};
      auto it = harness->pristine.find(name);
      if (it != harness->pristine.end() && it->second.bytes.size() == n) {
        t.bytes = it->second.bytes;
      } else {
        t.bytes.resize(n);
        for (size_t i = 0; i < n; ++i) t.bytes[i] = static_cast<char>(i * 31 + 7);
      }
      tensors.emplace_back(name, std::move(t));
    }
  }
  if (reseal) {
    try {
      json loom = json::parse(text);
      if (loom.is_object()) {
        json crcs = json::object();
        for (const auto& [n, t] : tensors) crcs[n] = crc32c(t.bytes.data(), t.bytes.size());
        loom["crc32c"] = crcs;
        text = loom.dump();
      }
    } catch (const json::exception&) {
      // unparsable: written as it is, for the loader to refuse
    }
  }
  std::vector<SafetensorsEntry> entries;
  for (const auto& [n, t] : tensors) entries.push_back({n, t.dtype, t.shape, t.bytes.data(), t.bytes.size()});
  try {
    write_safetensors(harness->file_a, entries, {{"loom", text}}, {.header_checksum = true});
  } catch (const ValueError&) {
    return false;  // e.g. text that is not UTF-8: no file to load
  }
  return true;
}

// ---- the completeness oracle: the file read with code of its own ----

struct File {
  std::unique_ptr<SafetensorsFile> st;
  json loom;
  int64_t format = 0;
  const json& entries() const { return loom.at("entries"); }
  RawTensor tensor(const std::string& name) const {
    auto d = st->data(name);
    return {st->info(name).dtype, st->info(name).shape,
            std::string(reinterpret_cast<const char*>(d.data()), d.size())};
  }
};

File read_file(const std::string& path) {
  File f;
  f.st = std::make_unique<SafetensorsFile>(SafetensorsFile::open(path));
  f.loom = json::parse(f.st->metadata().at("loom"));
  f.format = f.loom.at("format").get<int64_t>();
  return f;
}

double number_of(const json& v) {
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s == "nan") return std::nan("");
    return s == "inf" ? INFINITY : -INFINITY;
  }
  return v.get<double>();
}

bool same_double(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0 || (a != a && b != b); }

std::string dtype_code(DType d) {
  switch (d) {
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

DType dtype_of(const std::string& code) {
  for (DType d : {DType::f64, DType::f32, DType::f16, DType::bf16, DType::i64, DType::i32, DType::u8,
                  DType::bool_})
    if (dtype_code(d) == code) return d;
  fail("unknown dtype " + code);
}

// `t` as the loaded tensor should hold it: converted to `dtype` (a no-op when equal).
RawTensor converted(const RawTensor& t, DType dtype) {
  if (t.dtype == dtype_code(dtype)) return t;
  Tensor x = native::empty(t.shape, dtype_of(t.dtype), Device::cpu());
  if (!t.bytes.empty()) std::memcpy(x.raw_data_ptr(), t.bytes.data(), t.bytes.size());
  Tensor y = native::contiguous(native::to(x, Device::cpu(), dtype));
  return {dtype_code(dtype), t.shape,
          std::string(static_cast<const char*>(y.raw_data_ptr()), y.nbytes())};
}

bool same_tensor(const RawTensor& a, const RawTensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.bytes == b.bytes;
}

// The module tensors of entry `key` in `f`: name in module -> file tensor name.
std::map<std::string, std::string> module_tensors(const File& f, const std::string& key) {
  std::map<std::string, std::string> out;
  if (f.format == 1) {
    for (const auto& n : f.st->names())
      if (n.rfind(key + ".", 0) == 0) out[n.substr(key.size() + 1)] = n;
  } else {
    for (const auto& n : f.entries().at(key).at("tensors")) out[n.get<std::string>()] = key + "." + n.get<std::string>();
  }
  return out;
}

// Saved parameter index -> (step, buffer -> file tensor name).
std::map<int64_t, std::pair<int64_t, std::map<std::string, std::string>>> optimizer_state(
    const File& f, const std::string& key) {
  std::map<int64_t, std::pair<int64_t, std::map<std::string, std::string>>> out;
  const json& e = f.entries().at(key);
  if (f.format == 1) {
    for (const auto& [idx, step] : e.at("steps").items()) {
      auto& s = out[std::stoll(idx)];
      s.first = step.get<int64_t>();
      std::string prefix = key + ".state." + idx + ".";
      for (const auto& n : f.st->names())
        if (n.rfind(prefix, 0) == 0) s.second[n.substr(prefix.size())] = n;
    }
  } else {
    for (const auto& [idx, st] : e.at("state").items()) {
      auto& s = out[std::stoll(idx)];
      s.first = st.at("step").get<int64_t>();
      for (const auto& b : st.at("buffers")) s.second[b.get<std::string>()] = key + ".state." + idx + "." + b.get<std::string>();
    }
  }
  return out;
}

// What a load leaves alone for a key the file lacks: a scheduler's epoch and lrs (not its
// optimizer's options), an optimizer's state and options but "lr" (a loaded scheduler sets
// it), anything else whole.
std::string untouched_bytes(const std::string& key, const CheckpointValue& value) {
  std::string out;
  if (auto* s = std::get_if<std::shared_ptr<optim::LRScheduler>>(&value)) {
    checkpoint_test::put(out, (*s)->last_epoch());
    for (double lr : (*s)->base_lrs()) checkpoint_test::put(out, lr);
    for (double lr : (*s)->get_last_lr()) checkpoint_test::put(out, lr);
    return out;
  }
  if (auto* o = std::get_if<std::shared_ptr<optim::Optimizer>>(&value)) {
    optim::OptimizerStateDict sd = (*o)->state_dict();
    for (auto& g : sd.param_groups) g.options.erase("lr");
    for (const auto& g : sd.param_groups) checkpoint_test::put(out, g.options);
    for (const auto& [i, st] : sd.state) {
      checkpoint_test::put(out, i);
      checkpoint_test::put(out, st.step);
      for (const auto& [n, t] : st.buffers) {
        checkpoint_test::put(out, n);
        checkpoint_test::put(out, t);
      }
    }
    return out;
  }
  return state_bytes({{key, value}});
}

void check_complete(bool strict, const std::map<std::string, std::string>& before_by_key,
                    const CheckpointState& rest, bool with_precision,
                    const std::map<std::string, double>& precision) {
  File a = read_file(harness->file_a);
  const CheckpointState& state = harness->state.values;
  save_checkpoint(harness->file_b, state);  // a state that loaded must save
  File b = read_file(harness->file_b);
  const json& ea = a.entries();
  const bool sched_loaded = ea.contains("sched");

  for (const auto& [key, value] : state) {
    if (!ea.contains(key)) {
      check(!strict, "strict load accepted a file without entry " + key);
      check(untouched_bytes(key, value) == before_by_key.at(key), "absent entry " + key + " changed");
      continue;
    }
    const json& x = ea.at(key);
    const std::string kind = x.at("kind").get<std::string>();
    if (kind == "tensor") {
      check(same_tensor(a.tensor(key), b.tensor(key)), "tensor " + key + " not loaded exactly");
    } else if (kind == "double") {
      check(same_double(number_of(x.at("value")), std::get<double>(value)), "double " + key);
    } else if (kind == "int") {
      check(x.at("value").get<int64_t>() == std::get<int64_t>(value), "int " + key);
    } else if (kind == "string") {
      check(x.at("value").get<std::string>() == std::get<std::string>(value), "string " + key);
    } else if (kind == "scheduler") {
      const auto& s = *std::get<std::shared_ptr<optim::LRScheduler>>(value);
      check(s.last_epoch() == x.at("last_epoch").get<int64_t>(), "scheduler epoch");
      const json& lrs = x.at("base_lrs");
      check(lrs.size() == s.base_lrs().size(), "scheduler base lrs");
      for (size_t i = 0; i < lrs.size(); ++i)
        check(same_double(number_of(lrs[i]), s.base_lrs()[i]), "scheduler base lr");
    } else if (kind == "module") {
      auto ta = module_tensors(a, key), tb = module_tensors(b, key);
      if (strict) {
        check(ta.size() == tb.size(), "strict module load with other keys: " + key);
        for (const auto& [n, name] : ta) check(tb.count(n), "strict module load: missing " + n);
      }
      for (const auto& [n, name] : tb) {
        auto it = ta.find(n);
        if (it == ta.end()) continue;  // non-strict: kept as it was
        RawTensor loaded = b.tensor(name);
        check(same_tensor(converted(a.tensor(it->second), dtype_of(loaded.dtype)), loaded),
              "module tensor " + name + " not loaded exactly");
      }
    } else if (kind == "optimizer") {
      const auto& opt = *std::get<std::shared_ptr<optim::Optimizer>>(value);
      const json& ga = x.at("param_groups");
      const json& gb = b.entries().at(key).at("param_groups");
      check(ga.size() == gb.size(), "optimizer group count");
      std::map<int64_t, int64_t> position;  // saved index -> loaded index
      for (size_t g = 0; g < ga.size(); ++g) {
        const json& oa = ga[g].at("options");
        const json& ob = gb[g].at("options");
        check(oa.size() == ob.size(), "optimizer options of group " + std::to_string(g));
        for (const auto& [k, v] : oa.items()) {
          double loaded = number_of(ob.at(k));
          if (k == "lr" && sched_loaded) {
            auto* s = std::get_if<std::shared_ptr<optim::LRScheduler>>(&state.at("sched"));
            check(same_double(loaded, (*s)->get_last_lr().at(g)), "lr not the scheduler's");
          } else {
            check(same_double(number_of(v), loaded), "optimizer option " + k);
          }
        }
        const json& pa = ga[g].at("params");
        const json& pb = gb[g].at("params");
        check(pa.size() == pb.size(), "optimizer group sizes");
        for (size_t i = 0; i < pa.size(); ++i) position[pa[i].get<int64_t>()] = pb[i].get<int64_t>();
      }
      auto sa = optimizer_state(a, key), sb = optimizer_state(b, key);
      check(sa.size() == sb.size(), "optimizer state count");
      std::vector<Tensor> params;
      for (const auto& g : opt.param_groups())
        for (const auto& p : g.params) params.push_back(p);
      for (const auto& [saved, st] : sa) {
        check(position.count(saved), "optimizer state of an unlisted index");
        int64_t k = position.at(saved);
        check(sb.count(k), "optimizer state not loaded for a parameter");
        const auto& [step_b, bufs_b] = sb.at(k);
        check(st.first == step_b, "optimizer step");
        check(st.second.size() == bufs_b.size(), "optimizer buffer count");
        for (const auto& [buf, name] : st.second) {
          check(bufs_b.count(buf), "optimizer buffer " + buf);
          RawTensor loaded = b.tensor(bufs_b.at(buf));
          check(loaded.dtype == dtype_code(params.at(size_t(k)).dtype()), "buffer dtype");
          check(same_tensor(converted(a.tensor(name), params.at(size_t(k)).dtype()), loaded),
                "optimizer buffer " + buf + " not loaded exactly");
        }
      }
    }
  }
  if (with_precision && a.loom.contains("precision")) {
    const json& p = a.loom.at("precision");
    check(p.size() == precision.size(), "precision state size");
    for (const auto& [k, v] : p.items())
      check(precision.count(k) && same_double(number_of(v), precision.at(k)), "precision " + k);
  }
  size_t expected_rest = 0;
  for (const auto& [key, x] : ea.items()) {
    if (state.count(key)) continue;
    const std::string kind = x.at("kind").get<std::string>();
    if (kind != "tensor" && kind != "double" && kind != "int" && kind != "string") continue;
    ++expected_rest;
    check(rest.count(key), "rest lacks " + key);
    const CheckpointValue& r = rest.at(key);
    if (kind == "tensor") {
      const Tensor& t = std::get<Tensor>(r);
      RawTensor got{dtype_code(t.dtype()), t.sizes(),
                    std::string(static_cast<const char*>(t.numel() ? t.raw_data_ptr() : nullptr), t.nbytes())};
      check(same_tensor(a.tensor(key), got), "rest tensor " + key);
    } else if (kind == "double") {
      check(same_double(number_of(x.at("value")), std::get<double>(r)), "rest double " + key);
    } else if (kind == "int") {
      check(x.at("value").get<int64_t>() == std::get<int64_t>(r), "rest int " + key);
    } else {
      check(x.at("value").get<std::string>() == std::get<std::string>(r), "rest string " + key);
    }
  }
  check(rest.size() == expected_rest, "rest has entries the file does not");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  loom::set_num_threads(1);
  static Harness h;
  harness = &h;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > (1 << 16)) return -1;
  const uint8_t flags = data[0];
  const bool strict = flags & fuzz::kStrict;
  ++data;
  --size;
  if (flags & fuzz::kStructured) {
    if (!write_structured(data, size, flags & fuzz::kResealTensors)) return -1;
  } else {
    write_file(harness->file_a, data, size);
  }
  if (harness->dirty) {
    harness->state = fuzz::make_state(2, 1);
    harness->dirty = false;
  }
  const bool with_precision = flags & fuzz::kPrecision;
  std::map<std::string, double> precision{{"untouched", 1.0}};
  const std::string before = state_bytes(harness->state.values, precision);
  std::map<std::string, std::string> before_by_key;
  for (const auto& [key, value] : harness->state.values) before_by_key[key] = untouched_bytes(key, value);

  CheckpointState rest;
  try {
    rest = load_checkpoint(harness->file_a, harness->state.values, strict,
                           with_precision ? &precision : nullptr);
  } catch (const loom::Error& e) {
    if (state_bytes(harness->state.values, precision) != before)
      fail(std::string("a refused load changed the state: ") + e.what());
    if (verbose()) std::fprintf(stderr, "fuzz_checkpoint: refused: %s\n", e.what());
    return 0;
  }
  if (verbose()) std::fprintf(stderr, "fuzz_checkpoint: loaded (%zu entries returned)\n", rest.size());
  harness->dirty = true;
  check_complete(strict, before_by_key, rest, with_precision, precision);
  return 0;
}
