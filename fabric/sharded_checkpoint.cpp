// Sharded checkpoints (fabric/sharded_checkpoint.h): what each rank holds of every tensor, the
// shard files, the index, and the load that validates on every rank before any rank applies.
#include "fabric/sharded_checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <unordered_map>

#include "autograd/grad_mode.h"
#include "fabric/deepspeed.h"
#include "fabric/fsdp.h"
#include "fabric/io/atomic_file.h"
#include "fabric/io/checkpoint_codec.h"
#include "fabric/io/crc32c.h"
#include "fabric/io/safetensors.h"
#include "fabric/wrappers.h"
#include "fabric/zero.h"
#include "tensor/native.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kCrcPrefix = "{\"index_crc32c\":\"";  // the index's first bytes





int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Tensor flat_range(const Tensor& t, int64_t lo, int64_t hi) {
  return native::slice(native::reshape(t, {-1}), 0, lo, hi, 1);
}

// ---- what this rank holds ----

// One tensor of the checkpoint as this rank holds it.
struct Slot {
  std::string name;  // in the checkpoint ("model.fc1.weight")
  Shape shape;       // the whole tensor's
  DType dtype;
  int64_t lo = 0, hi = 0;  // this rank's elements of it, flattened
  Tensor local;            // those elements: saved from, loaded into (numel hi - lo, any shape)
  bool save_here = true;   // false: another rank writes them (replicas: rank 0)
};

// What a module of the state holds here. for_load: the ranges a load fills (a ZeRO replica
// needs whole parameters; a save writes only its partition of them).
std::vector<Slot> module_slots(const std::string& key, nn::Module& module, int rank,
                               bool for_load) {
  std::vector<Slot> out;
  std::set<std::string> sharded;
  nn::Module* inner = &module;
  if (auto* f = unwrap<FullyShardedModule>(&module)) {
    for (const auto& u : f->units()) {
      const int64_t begin = u->shard_begin(), end = begin + u->shard_numel();
      for (const fsdp::FlatParam& p : u->params()) {
        const int64_t lo = std::max(begin, p.offset), hi = std::min(end, p.offset + p.numel);
        Slot s{key + "." + p.name, p.shape, u->master_dtype(), 0, 0, Tensor(), true};
        if (lo < hi) {
          s.lo = lo - p.offset;
          s.hi = hi - p.offset;
          s.local = fsdp::flat_span(u->shard().detach(), lo - begin, hi - lo);
        }
        out.push_back(std::move(s));
        sharded.insert(p.name);
      }
    }
    inner = f->inner().get();
  }
  ZeroPartition* partition = nullptr;
  if (auto* z = unwrap<ZeroDataParallel>(&module)) partition = &z->partition();
  for (const auto& [n, t] : inner->state_dict()) {
    if (sharded.count(n)) continue;
    Slot s{key + "." + n, t.sizes(), t.dtype(), 0, t.numel(), t.detach(), rank == 0};
    if (partition && !for_load)
      if (std::optional<size_t> k = partition->index_of(t)) {
        s.lo = partition->owned_begin(*k);
        s.hi = partition->owned_end(*k);
        s.local = flat_range(t.detach(), s.lo, s.hi);
        s.save_here = true;
      }
    out.push_back(std::move(s));
  }
  return out;
}

// One parameter of an optimizer (a position in its groups): the module parameters it stands
// for and the elements of them it holds here.
struct OptParam {
  std::vector<std::string> names;  // "<module key>.<parameter name>", all of them
  struct Segment {
    size_t name;     // into names
    int64_t lo, hi;  // elements of that parameter
    int64_t at;      // where they sit in this optimizer parameter's flat elements
  };
  std::vector<Segment> segments;
  Shape local_shape;  // of this optimizer parameter (its state buffers')
  bool save_here = true;
};

struct OptimizerView {
  std::shared_ptr<optim::Optimizer> apply_to;  // load_state_dict goes here
  const optim::Optimizer* checker = nullptr;   // check_state_dict, param_groups
  std::vector<OptParam> params;                // by position
};

// Module parameters of the state by identity: plain ones and fsdp shards.
struct ParamNames {
  std::unordered_map<const TensorImpl*, std::pair<std::string, Shape>> plain;
  std::unordered_map<const TensorImpl*, std::pair<std::string, const fsdp::FlatUnit*>> shards;
  std::map<const ZeroPartition*, std::string> partitions;  // -> module key
  std::map<std::string, Shape> shapes;                     // every "<key>.<name>"
};

ParamNames param_names(const CheckpointState& state) {
  ParamNames out;
  for (const auto& [key, value] : state) {
    const auto* m = std::get_if<std::shared_ptr<nn::Module>>(&value);
    if (!m || !*m) continue;
    nn::Module* inner = m->get();
    if (auto* f = unwrap<FullyShardedModule>(m->get())) {
      for (const auto& u : f->units()) {
        out.shards[u->shard().impl()] = {key, u.get()};
        for (const auto& p : u->params()) out.shapes[key + "." + p.name] = p.shape;
      }
      inner = f->inner().get();
    }
    if (auto* z = unwrap<ZeroDataParallel>(m->get())) out.partitions[&z->partition()] = key;
    for (const auto& [n, p] : inner->named_parameters()) {
      out.plain[p.impl()] = {key + "." + n, p.sizes()};
      out.shapes.emplace(key + "." + n, p.sizes());
    }
  }
  return out;
}


OptimizerView optimizer_view(const std::string& key, std::shared_ptr<optim::Optimizer> opt,
                             const ParamNames& names, const ShardedCheckpointContext& ctx,
                             int rank) {
  OptimizerView view;
  if (ctx.resolve_optimizer)
    if (auto r = ctx.resolve_optimizer(opt)) opt = r;
  view.apply_to = opt;
  view.checker = &unwrap_optimizer(*opt);
  auto refuse = [&](size_t position, const std::string& why) {
    throw ValueError(detail::concat(
        "sharded checkpoint: optimizer '", key, "': its parameter ", position, " ", why,
        "; a sharded checkpoint names optimizer state by the module parameter it belongs to, "
        "so put the module whose parameters the optimizer steps in the same state"));
  };
  if (const auto* zero = dynamic_cast<const ZeroOptimizer*>(view.checker)) {
    for (size_t i = 0; i < zero->num_positions(); ++i) {
      const ZeroPartition& part = zero->partition_at(i);
      const size_t k = zero->index_at(i);
      auto it = names.partitions.find(&part);
      if (it == names.partitions.end()) refuse(i, "belongs to a deepspeed module not in the state");
      OptParam p;
      p.names = {it->second + "." + part.name(k)};
      const int64_t lo = part.owned_begin(k), hi = part.owned_end(k);
      p.local_shape = {hi - lo};
      if (hi > lo) p.segments.push_back({0, lo, hi, 0});
      view.params.push_back(std::move(p));
    }
    return view;
  }
  size_t position = 0;
  for (const auto& group : view.checker->param_groups())
    for (const Tensor& t : group.params) {
      OptParam p;
      p.local_shape = t.sizes();
      if (auto s = names.shards.find(t.impl()); s != names.shards.end()) {
        const fsdp::FlatUnit& u = *s->second.second;
        const int64_t begin = u.shard_begin(), end = begin + u.shard_numel();
        for (const fsdp::FlatParam& fp : u.params()) {
          p.names.push_back(s->second.first + "." + fp.name);
          const int64_t lo = std::max(begin, fp.offset), hi = std::min(end, fp.offset + fp.numel);
          if (lo < hi)
            p.segments.push_back({p.names.size() - 1, lo - fp.offset, hi - fp.offset, lo - begin});
        }
      } else if (auto q = names.plain.find(t.impl()); q != names.plain.end()) {
        p.names = {q->second.first};
        p.segments.push_back({0, 0, t.numel(), 0});
        p.save_here = rank == 0;  // a replica
      } else {
        refuse(position, detail::concat("(shape ", shape_str(t.sizes()),
                                        ") belongs to no module of the state"));
      }
      view.params.push_back(std::move(p));
      ++position;
    }
  return view;
}

std::string state_tensor_name(const std::string& key, const std::string& param,
                              const std::string& buf) {
  return key + ".state." + param + "." + buf;
}

// ---- collectives on strings ----

// Every rank's `mine`, by rank (a collective; just `mine` without a group).
std::vector<std::string> all_gather_strings(dist::ProcessGroup* group, const std::string& mine) {
  if (!group) return {mine};
  Tensor len = native::empty({1}, DType::i64, Device::cpu());
  len.data_ptr<int64_t>()[0] = int64_t(mine.size());
  std::vector<int64_t> lens = native::reshape(group->all_gather(len), {-1}).to_vector<int64_t>();
  const int64_t longest = std::max<int64_t>(1, *std::max_element(lens.begin(), lens.end()));
  Tensor bytes = native::empty({longest}, DType::u8, Device::cpu());
  native::fill_(bytes, 0);
  std::memcpy(bytes.raw_data_ptr(), mine.data(), mine.size());
  Tensor every = group->all_gather(bytes);
  const auto* data = static_cast<const char*>(every.raw_data_ptr());
  std::vector<std::string> out;
  for (size_t r = 0; r < lens.size(); ++r)
    out.emplace_back(data + r * size_t(longest), size_t(lens[r]));
  return out;
}

// Runs `body` on every rank, then agrees: when it threw anywhere, every rank throws (its own
// error, or a ValueError quoting the first rank that failed).
void on_every_rank_or_none(dist::ProcessGroup* group, const std::string& what,
                           const std::function<void()>& body) {
  std::exception_ptr error;
  std::string message;
  try {
    body();
  } catch (const std::exception& e) {
    error = std::current_exception();
    message = e.what();
    if (message.empty()) message = "failed";
  }
  std::vector<std::string> all = all_gather_strings(group, message);
  if (error) std::rethrow_exception(error);
  for (size_t r = 0; r < all.size(); ++r)
    if (!all[r].empty())
      throw ValueError(detail::concat(what, ": rank ", r, " failed, so no rank did: ", all[r]));
}

// ---- index ----

std::string index_text(json body) {
  std::string text = std::string(kCrcPrefix) + "00000000\"," + body.dump().substr(1);
  const std::string crc = io::hex8(crc32c(text.data(), text.size()));
  std::memcpy(text.data() + std::strlen(kCrcPrefix), crc.data(), 8);
  return text;
}

std::string shard_file_name(int rank, int world, uint64_t token) {
  char out[96];
  std::snprintf(out, sizeof out, "shard-%05d-of-%05d-%016llx.safetensors", rank, world,
                (unsigned long long)token);
  return out;
}

// The byte offset of every tensor of a safetensors file loom just wrote, from its header.
std::map<std::string, int64_t> data_offsets(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char len_bytes[8] = {};
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  std::string header(n, '\0');
  in.read(header.data(), std::streamsize(n));
  if (!in) throw RuntimeError("save: cannot read back the header of '" + path + "'");
  std::map<std::string, int64_t> out;
  const json parsed = json::parse(header);
  for (const auto& [name, v] : parsed.items())
    if (name != "__metadata__")
      out[name] = int64_t(8 + n) + v.at("data_offsets").at(0).get<int64_t>();
  return out;
}

}  // namespace

void check_state_dict_type(const std::string& type, const char* who) {
  if (type != "full" && type != "sharded")
    throw ValueError(detail::concat(who, ": state_dict_type='", type,
                                    "' is invalid; use \"full\" "
                                    "(one file, gathered on rank 0) or \"sharded\" (a directory "
                                    "with one file per rank, loadable at any world size)"));
}

bool is_sharded_checkpoint_path(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

// ---------------------------------------------------------------------------------------------
// Saving
// ---------------------------------------------------------------------------------------------

void save_sharded_checkpoint(const std::string& path, const CheckpointState& state,
                             const ShardedCheckpointContext& ctx) {
  dist::ProcessGroup* group = ctx.group;
  const int rank = group ? group->rank() : 0, world = group ? group->size() : 1;
  // A token new to this save names its shard files (see "Atomicity").
  Tensor token_t = native::empty({1}, DType::i64, Device::cpu());
  token_t.data_ptr<int64_t>()[0] =
      int64_t(std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32));
  if (group) group->broadcast(token_t, 0);
  const uint64_t token = uint64_t(token_t.data_ptr<int64_t>()[0]);
  const std::string file = shard_file_name(rank, world, token);
  const fs::path file_path = fs::path(path) / file;

  json entries = json::object();
  json report;  // this rank's pieces and optimizer state, for rank 0's index
  bool wrote = false;
  auto remove_mine = [&] {  // a failed save leaves nothing of its own behind
    std::error_code ec;
    if (wrote) fs::remove(file_path, ec);
  };
  try {
    on_every_rank_or_none(group, "save", [&] {
      std::error_code ec;
      if (fs::exists(path, ec) && !fs::is_directory(path, ec))
        throw ValueError("save: '" + path +
                         "' is a file; a sharded checkpoint (state_dict_type="
                         "\"sharded\") is a directory: give another path, or remove the file");
      fs::create_directories(path, ec);
      if (!fs::is_directory(path))
        throw RuntimeError("save: cannot create the checkpoint directory '" + path +
                           "': " + ec.message());
      const ParamNames names = param_names(state);
      std::vector<Slot> slots;
      json opt_report = json::object();
      for (const auto& [key, value] : state) {
        json& e = entries[key];
        if (auto* m = std::get_if<std::shared_ptr<nn::Module>>(&value)) {
          json tensors = json::array();
          for (Slot& s : module_slots(key, **m, rank, /*for_load=*/false)) {
            tensors.push_back(s.name.substr(key.size() + 1));
            slots.push_back(std::move(s));
          }
          e = {{"kind", "module"}, {"tensors", tensors}};
        } else if (auto* o = std::get_if<std::shared_ptr<optim::Optimizer>>(&value)) {
          OptimizerView view = optimizer_view(key, *o, names, ctx, rank);
          optim::OptimizerStateDict sd = view.apply_to->state_dict();
          json groups = json::array();
          size_t position = 0;
          for (const auto& g : sd.param_groups) {
            json options = json::object(), params = json::array();
            for (const auto& [k, v] : g.options) options[k] = io::number_json(v);
            for (size_t i = 0; i < g.params.size(); ++i, ++position)
              for (const auto& n : view.params.at(position).names) params.push_back(n);
            groups.push_back({{"options", options}, {"params", params}});
          }
          json& mine = opt_report[key] = json::object();
          for (const auto& [index, st] : sd.state) {
            const OptParam& p = view.params.at(size_t(index));
            json buffers = json::array();
            for (const auto& [buf, t] : st.buffers) {
              buffers.push_back(buf);
              if (!p.save_here) continue;
              for (const auto& seg : p.segments) {
                const std::string& pname = p.names[seg.name];
                slots.push_back({state_tensor_name(key, pname, buf), names.shapes.at(pname),
                                 t.dtype(), seg.lo, seg.hi,
                                 flat_range(t.detach(), seg.at, seg.at + seg.hi - seg.lo)});
              }
            }
            for (const auto& n : p.names) mine[n] = {{"step", st.step}, {"buffers", buffers}};
          }
          e = {{"kind", "optimizer"}, {"param_groups", groups}};
        } else if (auto* s = std::get_if<std::shared_ptr<optim::LRScheduler>>(&value)) {
          auto sd = (*s)->state_dict();
          json base_lrs = json::array();
          for (double lr : sd.base_lrs) base_lrs.push_back(io::number_json(lr));
          e = {{"kind", "scheduler"}, {"last_epoch", sd.last_epoch}, {"base_lrs", base_lrs}};
        } else if (auto* t = std::get_if<Tensor>(&value)) {
          e = {{"kind", "tensor"}};
          if (!t->defined())
            throw ValueError("save: '" + key +
                             "' has no values (an undefined tensor); give it a "
                             "value or leave it out of the state");
          slots.push_back({key, t->sizes(), t->dtype(), 0, t->numel(), *t, rank == 0});
        } else if (auto* d = std::get_if<double>(&value)) {
          e = {{"kind", "double"}, {"value", io::number_json(*d)}};
        } else if (auto* i = std::get_if<int64_t>(&value)) {
          e = {{"kind", "int"}, {"value", *i}};
        } else {
          e = {{"kind", "string"}, {"value", std::get<std::string>(value)}};
        }
      }
      // This rank's file: its pieces, 1-D, with their CRCs.
      std::vector<Tensor> keep;
      std::vector<SafetensorsEntry> list;
      json pieces = json::array(), crcs = json::object();
      json empty = json::array();  // tensors without elements: in the index, in no file
      for (const Slot& s : slots) {
        if (s.save_here && numel_of(s.shape) == 0)
          empty.push_back({{"name", s.name}, {"dtype", io::safetensors_dtype(s.dtype)}, {"shape", s.shape}});
        if (!s.save_here || s.hi <= s.lo) continue;
        if (!s.local.defined() || s.local.is_meta())
          throw ValueError("save: '" + s.name +
                           "' has no values (undefined or meta); materialise it before saving");
        Tensor c = native::contiguous(
            native::to(native::reshape(s.local, {-1}), Device::cpu(), s.local.dtype()));
        keep.push_back(c);
        const uint32_t crc = crc32c(c.raw_data_ptr(), c.nbytes());
        list.push_back({s.name, io::safetensors_dtype(c.dtype()), {c.numel()}, c.raw_data_ptr(), c.nbytes()});
        crcs[s.name] = crc;
        pieces.push_back({{"name", s.name},
                          {"dtype", io::safetensors_dtype(c.dtype())},
                          {"shape", s.shape},
                          {"lo", s.lo},
                          {"hi", s.hi},
                          {"crc32c", crc}});
      }
      json meta = {{"format", "loom.sharded.shard"},
                   {"rank", rank},
                   {"world_size", world},
                   {"crc32c", crcs}};
      write_safetensors(file_path.string(), list, {{"loom", meta.dump()}},
                        {.header_checksum = true});
      wrote = true;
      std::map<std::string, int64_t> offsets = data_offsets(file_path.string());
      for (json& p : pieces) p["offset"] = offsets.at(p["name"].get<std::string>());
      report = {{"file", file},   {"bytes", int64_t(fs::file_size(file_path))},
                {"rank", rank},   {"pieces", pieces},
                {"empty", empty}, {"optimizers", opt_report}};
    });
  } catch (...) {
    remove_mine();
    throw;
  }
  // Every rank wrote its file. Rank 0 merges the reports into the index and writes it last.
  std::vector<std::string> reports = all_gather_strings(group, report.dump());
  std::set<std::string> named;
  try {
    on_every_rank_or_none(group, "save", [&] {
      if (rank != 0) return;
      json tensors = json::object(), files = json::object();
      std::map<std::string, std::map<std::string, json>> opt_state;  // key -> name -> state
      for (const std::string& text : reports) {
        json r = json::parse(text);
        const std::string f = r.at("file").get<std::string>();
        files[f] = {{"rank", r.at("rank")}, {"bytes", r.at("bytes")}};
        named.insert(f);
        for (const json& e : r.at("empty"))
          tensors[e.at("name").get<std::string>()] = {
              {"dtype", e.at("dtype")}, {"shape", e.at("shape")}, {"pieces", json::array()}};
        for (const json& p : r.at("pieces")) {
          json& t = tensors[p.at("name").get<std::string>()];
          if (t.is_null())
            t = {{"dtype", p.at("dtype")}, {"shape", p.at("shape")}, {"pieces", json::array()}};
          t["pieces"].push_back({{"file", f},
                                 {"lo", p.at("lo")},
                                 {"hi", p.at("hi")},
                                 {"offset", p.at("offset")},
                                 {"crc32c", p.at("crc32c")}});
        }
        for (const auto& [key, params] : r.at("optimizers").items())
          for (const auto& [n, st] : params.items()) {
            json& have = opt_state[key][n];
            if (have.is_null() || have.at("step").get<int64_t>() < st.at("step").get<int64_t>())
              have = st;
          }
      }
      // The pieces of every tensor tile it: a save is complete or not written.
      for (auto& [name, t] : tensors.items()) {
        std::vector<std::pair<int64_t, int64_t>> ranges;
        for (const json& p : t["pieces"])
          ranges.emplace_back(p["lo"].get<int64_t>(), p["hi"].get<int64_t>());
        std::sort(ranges.begin(), ranges.end());
        int64_t next = 0;
        for (auto [lo, hi] : ranges) {
          if (lo != next)
            throw RuntimeError("save: the ranks' pieces of '" + name +
                               "' do not tile it (a strategy bug)");
          next = hi;
        }
        if (next != numel_of(t["shape"].get<Shape>()))
          throw RuntimeError("save: the ranks' pieces of '" + name +
                             "' do not cover it (a strategy bug)");
      }
      for (auto& [key, e] : entries.items())
        if (e["kind"] == "optimizer") {
          json st = json::object();
          for (const auto& [n, s] : opt_state[key]) st[n] = s;
          e["state"] = st;
        }
      json precision = json::object();
      for (const auto& [k, v] : ctx.precision_state) precision[k] = io::number_json(v);
      json body = {{"format", "loom.sharded"}, {"version", 1},       {"world_size", world},
                   {"files", files},           {"tensors", tensors}, {"entries", entries},
                   {"precision", precision}};
      std::string text;
      try {
        text = index_text(std::move(body));
      } catch (const json::exception&) {
        throw ValueError("save: a key or string value of the state given to save('" + path +
                         "') is not valid UTF-8; the index is JSON, which needs UTF-8 text");
      }
      write_file_atomically((fs::path(path) / kShardedCheckpointIndex).string(), text);
    });
  } catch (...) {
    remove_mine();
    throw;
  }
  // The new checkpoint is in place: rank 0 drops the shard files no index names any more, and
  // the temp files of shard files whose writer was killed (each save names its files anew, so
  // no later write of the same name would find them; fabric/io/atomic_file.h).
  if (rank == 0) {
    std::error_code ec;
    std::vector<fs::path> old;
    std::set<std::string> temp_targets;
    for (const auto& e : fs::directory_iterator(path, ec)) {
      const std::string n = e.path().filename().string();
      if (!n.starts_with("shard-")) continue;
      if (n.ends_with(".safetensors") && !named.count(n)) old.push_back(e.path());
      if (size_t at = n.find(".safetensors.tmp."); at != std::string::npos)
        temp_targets.insert(n.substr(0, at + std::strlen(".safetensors")));
    }
    for (const fs::path& p : old) fs::remove(p, ec);
    for (const std::string& t : temp_targets)
      remove_stale_temp_files((fs::path(path) / t).string());
  }
  if (group) group->barrier();
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

namespace {

// Reads index.json and the pieces of its tensors, checking each against its CRC.
class IndexReader {
 public:
  IndexReader(const std::string& path) : dir_(path) {
    const std::string file = (fs::path(path) / kShardedCheckpointIndex).string();
    std::ifstream in(file, std::ios::binary);
    if (!in)
      throw ValueError("load: '" + path + "' has no " + kShardedCheckpointIndex +
                       ": it is not a complete sharded "
                       "checkpoint (a save that did not finish, or another directory); load an "
                       "earlier checkpoint");
    std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    const size_t at = std::strlen(kCrcPrefix);
    if (text.size() < at + 9 || text.compare(0, at, kCrcPrefix) != 0)
      throw ValueError("load: the index of sharded checkpoint '" + path +
                       "' is corrupt: it does "
                       "not start with its checksum (" +
                       kCrcPrefix + "...)");
    const std::string recorded = text.substr(at, 8);
    std::string zeroed = text;
    std::memcpy(zeroed.data() + at, "00000000", 8);
    const std::string actual = io::hex8(crc32c(zeroed.data(), zeroed.size()));
    if (recorded != actual)
      throw ValueError("load: the index of sharded checkpoint '" + path +
                       "' is corrupt: its CRC-32C is " + actual + " but it records " + recorded +
                       "; the file was damaged after it was written");
    try {
      root_ = json::parse(text);
    } catch (const json::exception& e) {
      throw ValueError("load: the index of sharded checkpoint '" + path + "' is not JSON (" +
                       e.what() + ")");
    }
    if (root_.value("format", "") != "loom.sharded" || !root_.contains("version") ||
        root_["version"] != 1)
      malformed("the top level", "is not format loom.sharded version 1");
    for (const char* k : {"files", "tensors", "entries"})
      if (!root_.contains(k) || !root_[k].is_object())
        malformed("the top level", std::string("has no object \"") + k + "\"");
  }
  ~IndexReader() {
    for (auto& [f, fd] : fds_) ::close(fd);
  }
  IndexReader(const IndexReader&) = delete;
  IndexReader& operator=(const IndexReader&) = delete;

  [[noreturn]] void malformed(const std::string& where, const std::string& what) const {
    throw ValueError("load: " + where + " of the index of sharded checkpoint '" + dir_ + "' " +
                     what + "; it was not written by this version of loom (or was edited)");
  }
  const json& root() const { return root_; }
  const json& entries() const { return root_["entries"]; }
  bool has_tensor(const std::string& name) const { return root_["tensors"].contains(name); }
  const std::string& dir() const { return dir_; }

  struct TensorInfo {
    DType dtype;
    Shape shape;
  };
  TensorInfo info(const std::string& name) const {
    const json& t = root_["tensors"][name];
    try {
      std::optional<DType> d = io::dtype_of_safetensors(t.at("dtype").get<std::string>());
      if (!d) malformed("tensor '" + name + "'", "has an unknown dtype");
      Shape s = t.at("shape").get<Shape>();
      for (int64_t x : s)
        if (x < 0) malformed("tensor '" + name + "'", "has a negative dimension");
      return {*d, s};
    } catch (const json::exception&) {
      malformed("tensor '" + name + "'", "has no valid dtype and shape");
    }
  }

  // Copies elements [lo, hi) of tensor `name` into `dst` (hi - lo elements, any dtype).
  void read(const std::string& name, int64_t lo, int64_t hi, const Tensor& dst) {
    if (hi <= lo) return;
    const TensorInfo ti = info(name);
    const size_t esize = dtype_size(ti.dtype);
    int64_t covered = lo;
    std::vector<std::tuple<int64_t, int64_t, const json*>> pieces;
    for (const json& p : root_["tensors"][name]["pieces"]) {
      int64_t plo = 0, phi = 0;
      try {
        plo = p.at("lo").get<int64_t>();
        phi = p.at("hi").get<int64_t>();
      } catch (const json::exception&) {
        malformed("tensor '" + name + "'", "has a piece without lo and hi");
      }
      if (phi > lo && plo < hi) pieces.emplace_back(plo, phi, &p);
    }
    std::sort(pieces.begin(), pieces.end(),
              [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
    for (const auto& [plo, phi, p] : pieces) {
      if (plo > covered) break;
      const std::vector<std::byte>& bytes = piece(name, *p, size_t(phi - plo) * esize);
      const int64_t a = std::max(lo, plo), b = std::min(hi, phi);
      Tensor src = native::empty({b - a}, ti.dtype, Device::cpu());
      std::memcpy(src.raw_data_ptr(), bytes.data() + size_t(a - plo) * esize,
                  size_t(b - a) * esize);
      native::copy_(native::slice(dst, 0, a - lo, b - lo, 1), src);
      covered = std::max(covered, b);
    }
    if (covered < hi)
      malformed("tensor '" + name + "'",
                detail::concat("has no piece holding elements [", covered, ", ", hi, ")"));
  }

 private:
  // The bytes of one piece, read once and checked against its CRC.
  const std::vector<std::byte>& piece(const std::string& name, const json& p, size_t nbytes) {
    std::string file;
    int64_t offset = 0, crc = 0;
    try {
      file = p.at("file").get<std::string>();
      offset = p.at("offset").get<int64_t>();
      crc = p.at("crc32c").get<int64_t>();
    } catch (const json::exception&) {
      malformed("tensor '" + name + "'", "has a piece without file, offset and crc32c");
    }
    if (file.find('/') != std::string::npos || !root_["files"].contains(file))
      malformed("tensor '" + name + "'", "names a file '" + file + "' the index does not list");
    auto key = std::make_pair(file, offset);
    if (auto it = cache_.find(key); it != cache_.end()) return it->second;
    const int fd = open_file(file);
    std::vector<std::byte> bytes(nbytes);
    size_t done = 0;
    while (done < nbytes) {
      ssize_t n = ::pread(fd, bytes.data() + done, nbytes - done, off_t(offset) + off_t(done));
      if (n <= 0)
        throw ValueError(detail::concat("load: shard file '", file, "' of sharded checkpoint '",
                                        dir_, "' ends before tensor '", name,
                                        "' (it was truncated)"));
      done += size_t(n);
    }
    const uint32_t actual = crc32c(bytes.data(), bytes.size());
    if (int64_t(actual) != crc)
      throw ValueError(detail::concat(
          "load: tensor '", name, "' in shard file '", file, "' of sharded checkpoint '", dir_,
          "' is corrupt: its ", nbytes, " bytes have CRC-32C ", io::hex8(actual),
          " but the index recorded ", io::hex8(uint32_t(crc)),
          "; the file was damaged after it was written (use an earlier checkpoint or a backup)"));
    return cache_.emplace(key, std::move(bytes)).first->second;
  }

  int open_file(const std::string& file) {
    if (auto it = fds_.find(file); it != fds_.end()) return it->second;
    const std::string full = (fs::path(dir_) / file).string();
    const int fd = ::open(full.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      throw ValueError("load: shard file '" + file + "' of sharded checkpoint '" + dir_ +
                       "' is missing or "
                       "unreadable (" +
                       std::strerror(errno) +
                       "); the checkpoint is incomplete (use an earlier one)");
    fds_[file] = fd;
    struct stat st {};
    const json& listed = root_["files"][file];
    if (::fstat(fd, &st) == 0 && listed.contains("bytes") && listed["bytes"].is_number_integer() &&
        int64_t(st.st_size) != listed["bytes"].get<int64_t>())
      throw ValueError(
          detail::concat("load: shard file '", file, "' of sharded checkpoint '", dir_, "' has ",
                         int64_t(st.st_size), " bytes, but the index recorded ",
                         listed["bytes"].get<int64_t>(), "; it was replaced or truncated"));
    return fd;
  }

  std::string dir_;
  json root_;
  std::map<std::string, int> fds_;
  std::map<std::pair<std::string, int64_t>, std::vector<std::byte>> cache_;
};

class ShardedLoader {
 public:
  ShardedLoader(const std::string& path, bool strict, const ShardedCheckpointContext& ctx)
      : path_(path), strict_(strict), ctx_(ctx), rank_(ctx.group ? ctx.group->rank() : 0) {}

  // Validates and builds everything (reads included); apply() then cannot fail.
  void prepare(CheckpointState& state, bool want_precision) {
    index_ = std::make_unique<IndexReader>(path_);
    const json& entries = index_->entries();
    names_ = param_names(state);
    for (auto& [key, value] : state) {
      auto e = entries.find(key);
      if (e == entries.end()) {
        if (strict_)
          throw ValueError("load: sharded checkpoint '" + path_ + "' has no entry '" + key +
                           "'; pass strict=false to load the entries it has");
        continue;
      }
      const std::string kind = kind_of(key, *e);
      if (kind != checkpoint_kind(value))
        throw ValueError("load: entry '" + key + "' of sharded checkpoint '" + path_ + "' is a " +
                         kind + ", but the state given to load() holds a " +
                         checkpoint_kind(value) + " under that key");
      if (auto* m = std::get_if<std::shared_ptr<nn::Module>>(&value))
        plan_module(key, *e, **m);
      else if (auto* o = std::get_if<std::shared_ptr<optim::Optimizer>>(&value))
        plan_optimizer(key, *e, *o);
      else if (auto* s = std::get_if<std::shared_ptr<optim::LRScheduler>>(&value))
        plan_scheduler(key, *e, *s);
      else {
        CheckpointValue v = plain_value(key, *e, kind);
        CheckpointValue& slot = value;  // clang 14 cannot capture a structured binding
        apply_.push_back([&slot, v = std::move(v)] { slot = v; });
      }
    }
    for (const auto& [key, e] : entries.items()) {
      if (state.count(key)) continue;
      const std::string kind = kind_of(key, e);
      if (kind == "tensor" || kind == "double" || kind == "int" || kind == "string")
        rest_[key] = plain_value(key, e, kind);
    }
    if (want_precision && index_->root().contains("precision")) {
      std::map<std::string, double> p;
      for (const auto& [k, v] : index_->root()["precision"].items())
        p[k] = number(v, "\"precision\"." + k);
      precision_ = std::move(p);
    }
  }

  CheckpointState apply(std::map<std::string, double>* precision_state) {
    NoGradGuard no_grad;
    for (auto& step : apply_) step();
    if (precision_ && precision_state) *precision_state = std::move(*precision_);
    return rest_;
  }

 private:
  std::string kind_of(const std::string& key, const json& e) const {
    if (!e.is_object() || !e.contains("kind") || !e["kind"].is_string())
      index_->malformed("entry '" + key + "'", "has no kind");
    return e["kind"].get<std::string>();
  }
  double number(const json& v, const std::string& where) const {
    if (std::optional<double> d = io::number_of_json(v)) return *d;
    index_->malformed(where, "is not a number");
  }
  int64_t integer(const json& v, const std::string& where) const {
    if (!v.is_number_integer()) index_->malformed(where, "is not an integer");
    return v.get<int64_t>();
  }

  // Checks the index's tensor against what this rank holds, and reads elements [lo, hi).
  Tensor read_checked(const std::string& what, const std::string& name, const Shape& shape,
                      DType dtype, int64_t lo, int64_t hi) {
    const IndexReader::TensorInfo ti = index_->info(name);
    if (ti.shape != shape)
      throw ValueError("load: shape mismatch for '" + what + "' in sharded checkpoint '" + path_ +
                       "': the checkpoint has " + shape_str(ti.shape) +
                       ", the state given to load() has " + shape_str(shape));
    if (ti.dtype != dtype && strict_)
      throw ValueError(detail::concat("load: dtype mismatch for '", what,
                                      "' in sharded checkpoint '", path_, "': the checkpoint has ",
                                      ti.dtype, ", the state given to load() has ", dtype,
                                      "; convert it or pass strict=false"));
    Tensor out = native::empty({hi - lo}, dtype, Device::cpu());
    index_->read(name, lo, hi, out);
    return out;
  }

  void plan_module(const std::string& key, const json& e, nn::Module& module) {
    std::set<std::string> listed;
    if (e.contains("tensors") && e["tensors"].is_array())
      for (const json& n : e["tensors"])
        if (n.is_string()) listed.insert(n.get<std::string>());
    std::set<std::string> mine;
    for (Slot& s : module_slots(key, module, rank_, /*for_load=*/true)) {
      const std::string local = s.name.substr(key.size() + 1);
      mine.insert(local);
      if (!listed.count(local) || !index_->has_tensor(s.name)) {
        if (strict_)
          throw ValueError("load: sharded checkpoint '" + path_ + "' has no tensor '" + local +
                           "' for module '" + key +
                           "'; pass strict=false to load the tensors it has");
        continue;
      }
      Tensor values = read_checked(s.name, s.name, s.shape, s.dtype, s.lo, s.hi);
      if (s.hi > s.lo)
        apply_.push_back([target = s.local, values] {
          native::copy_(target, native::reshape(values, target.sizes()));
        });
    }
    if (strict_)
      for (const std::string& n : listed)
        if (!mine.count(n))
          throw ValueError("load: unexpected tensor '" + key + "." + n +
                           "' in sharded checkpoint '" + path_ +
                           "' for the module; pass strict=false to ignore it");
  }

  void plan_optimizer(const std::string& key, const json& e,
                      const std::shared_ptr<optim::Optimizer>& opt) {
    OptimizerView view = optimizer_view(key, opt, names_, ctx_, rank_);
    const std::string where = "entry '" + key + "'";
    if (!e.contains("param_groups") || !e["param_groups"].is_array() || !e.contains("state") ||
        !e["state"].is_object())
      index_->malformed(where, "has no param_groups array and state object");
    const json& saved_groups = e["param_groups"];
    const auto& groups = view.checker->param_groups();
    if (saved_groups.size() != groups.size())
      throw ValueError(detail::concat("load: optimizer '", key, "' in sharded checkpoint '", path_,
                                      "' has ", saved_groups.size(),
                                      " parameter groups, the optimizer given ", groups.size(),
                                      "; build the optimizer as it was when saved"));
    optim::OptimizerStateDict sd;
    size_t position = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
      const json& sg = saved_groups[g];
      const std::string gw = detail::concat(where, ".param_groups[", g, "]");
      if (!sg.is_object() || !sg.contains("options") || !sg["options"].is_object() ||
          !sg.contains("params") || !sg["params"].is_array())
        index_->malformed(gw, "has no options and params");
      optim::OptimizerStateDict::Group group;
      for (const auto& [k, v] : sg["options"].items())
        group.options[k] = number(v, gw + ".options." + k);
      for (const auto& [k, v] : view.checker->defaults())
        if (!group.options.count(k))
          throw ValueError(detail::concat("load: optimizer '", key, "' in sharded checkpoint '",
                                          path_, "': group ", g, " has no hyper-parameter '", k,
                                          "'; the checkpoint is incomplete"));
      std::set<std::string> saved_params, given_params;
      for (const json& n : sg["params"])
        if (n.is_string()) saved_params.insert(n.get<std::string>());
      for (size_t i = 0; i < groups[g].params.size(); ++i, ++position) {
        group.params.push_back(int64_t(position));
        for (const auto& n : view.params.at(position).names) {
          given_params.insert(n);
          if (!saved_params.count(n))
            throw ValueError(detail::concat(
                "load: optimizer '", key, "' in sharded checkpoint '", path_, "': parameter '", n,
                "' of group ", g,
                " of the optimizer given is not in "
                "that group in the checkpoint; build the optimizer as it was when saved"));
        }
      }
      if (given_params.size() != saved_params.size())
        throw ValueError(detail::concat(
            "load: optimizer '", key, "' in sharded checkpoint '", path_, "': group ", g, " holds ",
            saved_params.size(), " parameters in the checkpoint but ", given_params.size(),
            " in the optimizer given; build the optimizer as it was when saved"));
      sd.param_groups.push_back(std::move(group));
    }
    const json& saved_state = e["state"];
    for (size_t i = 0; i < view.params.size(); ++i) {
      const OptParam& p = view.params[i];
      size_t with_state = 0;
      for (const auto& n : p.names) with_state += saved_state.contains(n);
      if (with_state == 0) continue;
      if (with_state != p.names.size())
        throw ValueError(detail::concat("load: optimizer '", key, "' in sharded checkpoint '",
                                        path_, "' has state for ", with_state, " of the ",
                                        p.names.size(),
                                        " parameters that one parameter of the "
                                        "optimizer given holds (",
                                        p.names[0], ", ...); they must be stepped together"));
      optim::ParamState st;
      std::vector<std::string> buffers;
      for (size_t j = 0; j < p.names.size(); ++j) {
        const std::string sw = where + ".state." + p.names[j];
        const json& s = saved_state[p.names[j]];
        if (!s.is_object() || !s.contains("step") || !s.contains("buffers") ||
            !s["buffers"].is_array())
          index_->malformed(sw, "has no step and buffers");
        const int64_t step = integer(s["step"], sw + ".step");
        std::vector<std::string> bufs;
        for (const json& b : s["buffers"])
          bufs.push_back(b.is_string() ? b.get<std::string>() : "");
        std::sort(bufs.begin(), bufs.end());
        if (j == 0) {
          st.step = step;
          buffers = bufs;
        } else if (step != st.step || bufs != buffers) {
          throw ValueError(detail::concat("load: optimizer '", key, "' in sharded checkpoint '",
                                          path_, "': parameters '", p.names[0], "' and '",
                                          p.names[j],
                                          "' have different steps or buffers, but the "
                                          "optimizer given steps them as one parameter"));
        }
      }
      for (const std::string& buf : buffers) {
        // The buffer as this optimizer parameter holds it: zero where it holds padding.
        DType dtype = DType::f32;
        const std::string first = state_tensor_name(key, p.names[0], buf);
        if (!index_->has_tensor(first))
          index_->malformed(where + ".state." + p.names[0],
                            "lists buffer '" + buf + "', which has no tensor '" + first + "'");
        dtype = index_->info(first).dtype;
        Tensor local = native::empty(p.local_shape, dtype, Device::cpu());
        native::fill_(local, 0.0);
        Tensor flat = native::reshape(local, {-1});
        for (size_t j = 0; j < p.names.size(); ++j) {
          const std::string name = state_tensor_name(key, p.names[j], buf);
          if (!index_->has_tensor(name))
            index_->malformed(where + ".state." + p.names[j],
                              "lists buffer '" + buf + "', which has no tensor '" + name + "'");
          auto shape = names_.shapes.find(p.names[j]);
          const Shape expected =
              shape != names_.shapes.end() ? shape->second : index_->info(name).shape;
          if (index_->info(name).dtype != dtype)
            index_->malformed("tensor '" + name + "'",
                              "has another dtype than its parameter's other buffers");
          bool held = false;
          for (const auto& seg : p.segments) {
            if (seg.name != j) continue;
            held = true;
            Tensor v = read_checked(name, name, expected, dtype, seg.lo, seg.hi);
            native::copy_(native::slice(flat, 0, seg.at, seg.at + seg.hi - seg.lo, 1), v);
          }
          if (!held) read_checked(name, name, expected, dtype, 0, 0);  // the shape check alone
        }
        st.buffers[buf] = local;
      }
      sd.state[int64_t(i)] = std::move(st);
    }
    try {
      view.checker->check_state_dict(sd, /*exact_dtypes=*/strict_);
    } catch (const ValueError& err) {
      throw ValueError("load: optimizer '" + key + "' in sharded checkpoint '" + path_ +
                       "' cannot take the saved state: " + err.what());
    }
    apply_.push_back([o = view.apply_to, sd = std::move(sd)] { o->load_state_dict(sd); });
  }

  void plan_scheduler(const std::string& key, const json& e,
                      const std::shared_ptr<optim::LRScheduler>& s) {
    const std::string where = "entry '" + key + "'";
    if (!e.contains("last_epoch") || !e.contains("base_lrs") || !e["base_lrs"].is_array())
      index_->malformed(where, "has no last_epoch and base_lrs");
    optim::SchedulerStateDict sd;
    sd.last_epoch = integer(e["last_epoch"], where + ".last_epoch");
    if (sd.last_epoch < 0) index_->malformed(where + ".last_epoch", "is negative");
    for (const json& lr : e["base_lrs"]) sd.base_lrs.push_back(number(lr, where + ".base_lrs"));
    const size_t groups = s->optimizer()->param_groups().size();
    if (sd.base_lrs.size() != s->base_lrs().size() || sd.base_lrs.size() != groups)
      throw ValueError(detail::concat("load: scheduler '", key, "' in sharded checkpoint '", path_,
                                      "' has ", sd.base_lrs.size(),
                                      " base lrs, but the scheduler given has ",
                                      s->base_lrs().size(), "; build it as it was when saved"));
    for (size_t i = 0; i < groups; ++i) {
      double lr = 0;
      try {
        lr = s->lr_at(sd.last_epoch, sd.base_lrs[i], i);
      } catch (const Error& err) {
        throw ValueError(detail::concat("load: scheduler '", key, "' in sharded checkpoint '",
                                        path_, "': ", err.what()));
      }
      if (!(lr >= 0))
        throw ValueError(detail::concat("load: scheduler '", key, "' in sharded checkpoint '",
                                        path_, "' would set group ", i, "'s lr to ", lr,
                                        "; a learning rate must be >= 0"));
    }
    apply_.push_back([s, sd = std::move(sd)] { s->load_state_dict(sd); });
  }

  CheckpointValue plain_value(const std::string& key, const json& e, const std::string& kind) {
    const std::string where = "entry '" + key + "'";
    if (kind == "tensor") {
      if (!index_->has_tensor(key))
        index_->malformed(where, "is a tensor, but the index has no tensor '" + key + "'");
      const IndexReader::TensorInfo ti = index_->info(key);
      Tensor t = read_checked(key, key, ti.shape, ti.dtype, 0, numel_of(ti.shape));
      return native::reshape(t, ti.shape);
    }
    if (!e.contains("value")) index_->malformed(where, "has no value");
    const json& v = e["value"];
    if (kind == "double") return number(v, where + ".value");
    if (kind == "int") return integer(v, where + ".value");
    if (kind == "string") {
      if (!v.is_string()) index_->malformed(where + ".value", "is not a string");
      return v.get<std::string>();
    }
    index_->malformed(where, "has unknown kind '" + kind + "'");
  }

  std::string path_;
  bool strict_;
  const ShardedCheckpointContext& ctx_;
  int rank_;
  std::unique_ptr<IndexReader> index_;
  ParamNames names_;
  std::vector<std::function<void()>> apply_;
  CheckpointState rest_;
  std::optional<std::map<std::string, double>> precision_;
};

}  // namespace

CheckpointState load_sharded_checkpoint(const std::string& path, CheckpointState& state,
                                        bool strict, const ShardedCheckpointContext& ctx,
                                        std::map<std::string, double>* precision_state) {
  ShardedLoader loader(path, strict, ctx);
  // Every rank validates and reads; only when all of them succeeded does any rank apply.
  on_every_rank_or_none(ctx.group, "load", [&] {
    try {
      loader.prepare(state, precision_state != nullptr);
    } catch (const json::exception& e) {  // a JSON value of an unexpected type
      throw ValueError("load: the index of sharded checkpoint '" + path + "' is malformed (" +
                       e.what() + "); it was not written by this version of loom (or was edited)");
    }
  });
  return loader.apply(precision_state);
}

}  // namespace loom
