// Cluster environments and their detection; see cluster_environment.h.
#include "dist/cluster_environment.h"

#include <cctype>
#include <charconv>

#include "dist/socket.h"
#include "core/error.h"

extern char** environ;

namespace loom::dist {
namespace {

const std::string* lookup(const EnvMap& env, const std::string& name) {
  auto it = env.find(name);
  return it == env.end() ? nullptr : &it->second;
}

int parse_int_value(const std::string& name, const std::string& text) {
  int value = 0;
  const char* begin = text.data();
  const char* end = begin + text.size();
  while (begin < end && std::isspace(static_cast<unsigned char>(*begin))) ++begin;
  while (end > begin && std::isspace(static_cast<unsigned char>(end[-1]))) --end;
  auto [stop, ec] = std::from_chars(begin, end, value);
  LOOM_VALUE_CHECK(begin != end && ec == std::errc() && stop == end, "environment variable ", name,
                   "='", text, "' is not an integer; fix or unset it");
  return value;
}

// The integer in `name`, or `fallback` when unset; throws when unset without a fallback.
int read_int(const EnvMap& env, const std::string& name, std::optional<int> fallback,
             const char* hint) {
  const std::string* text = lookup(env, name);
  if (text == nullptr) {
    LOOM_VALUE_CHECK(fallback.has_value(), "environment variable ", name, " is not set; ", hint);
    return *fallback;
  }
  return parse_int_value(name, *text);
}

void check_world_size(const std::string& name, int world_size) {
  LOOM_VALUE_CHECK(world_size >= 1, "environment variable ", name, "=", world_size,
                   " must be at least 1");
}

void check_rank(const std::string& rank_name, int rank, const std::string& size_name, int size) {
  LOOM_VALUE_CHECK(rank >= 0 && rank < size, "environment variable ", rank_name, "=", rank,
                   " is out of range for ", size_name, "=", size, ": ranks are 0..", size - 1,
                   "; check how the processes were launched");
}

std::string read_address(const EnvMap& env, const std::string& fallback) {
  const std::string* text = lookup(env, "MASTER_ADDR");
  if (text == nullptr) return fallback;
  LOOM_VALUE_CHECK(!text->empty(),
                   "environment variable MASTER_ADDR is empty; set it to the "
                   "address of the machine running rank 0, or unset it");
  return *text;
}

int read_port(const EnvMap& env, int fallback) {
  int port = read_int(env, "MASTER_PORT", fallback, "");
  LOOM_VALUE_CHECK(port >= 1 && port <= 65535, "environment variable MASTER_PORT=", port,
                   " is not a valid TCP port; use 1..65535");
  return port;
}

}  // namespace

EnvMap process_environment() {
  EnvMap env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string text(*entry);
    auto eq = text.find('=');
    if (eq == std::string::npos) continue;
    env.emplace(text.substr(0, eq), text.substr(eq + 1));
  }
  return env;
}

// ---- LocalEnvironment ----------------------------------------------------------------------

LocalEnvironment::LocalEnvironment(const EnvMap& env) {
  local_rank_ = read_int(env, "LOCAL_RANK", 0, "");
  node_rank_ = read_int(env, "NODE_RANK", 0, "");
  LOOM_VALUE_CHECK(local_rank_ >= 0, "environment variable LOCAL_RANK=", local_rank_,
                   " must not be negative");
  LOOM_VALUE_CHECK(node_rank_ >= 0, "environment variable NODE_RANK=", node_rank_,
                   " must not be negative");
  main_address_ = read_address(env, kDefaultMainAddress);
  // Only this process knows the port before the others exist, so any free one will do; the
  // launcher exports it as MASTER_PORT to the processes it starts.
  main_port_ = lookup(env, "MASTER_PORT") ? read_port(env, 0) : find_free_port();
}

bool LocalEnvironment::detect(const EnvMap&) { return true; }

void LocalEnvironment::set_world_size(int world_size) {
  LOOM_VALUE_CHECK(world_size >= 1, "LocalEnvironment: world size must be at least 1, got ",
                   world_size);
  LOOM_VALUE_CHECK(global_rank_ < world_size, "LocalEnvironment: world size ", world_size,
                   " is too small for the current global rank ", global_rank_,
                   "; set the rank first");
  world_size_ = world_size;
}

void LocalEnvironment::set_global_rank(int rank) {
  LOOM_VALUE_CHECK(rank >= 0 && rank < world_size_, "LocalEnvironment: global rank ", rank,
                   " is out of range for world size ", world_size_, "; set the world size first");
  global_rank_ = rank;
}

// ---- LoomrunEnvironment --------------------------------------------------------------------

LoomrunEnvironment::LoomrunEnvironment(const EnvMap& env) {
  const char* hint = "start the program with loomrun (or torchrun), or unset RANK and WORLD_SIZE";
  world_size_ = read_int(env, "WORLD_SIZE", std::nullopt, hint);
  check_world_size("WORLD_SIZE", world_size_);
  global_rank_ = read_int(env, "RANK", std::nullopt, hint);
  check_rank("RANK", global_rank_, "WORLD_SIZE", world_size_);
  local_world_size_ = read_int(env, "LOCAL_WORLD_SIZE", 1, "");
  check_world_size("LOCAL_WORLD_SIZE", local_world_size_);
  LOOM_VALUE_CHECK(local_world_size_ <= world_size_,
                   "environment variable LOCAL_WORLD_SIZE=", local_world_size_,
                   " is larger than WORLD_SIZE=", world_size_);
  local_rank_ = read_int(env, "LOCAL_RANK", 0, "");
  check_rank("LOCAL_RANK", local_rank_, "LOCAL_WORLD_SIZE", local_world_size_);
  // torchrun calls the node index GROUP_RANK; without either, nodes are filled in rank order.
  if (lookup(env, "NODE_RANK")) {
    node_rank_ = read_int(env, "NODE_RANK", 0, "");
  } else {
    node_rank_ = read_int(env, "GROUP_RANK", global_rank_ / local_world_size_, "");
  }
  LOOM_VALUE_CHECK(node_rank_ >= 0, "environment variable NODE_RANK=", node_rank_,
                   " must not be negative");
  main_address_ = read_address(env, kDefaultMainAddress);
  main_port_ = read_port(env, kDefaultMainPort);
}

bool LoomrunEnvironment::detect(const EnvMap& env) {
  return lookup(env, "RANK") != nullptr && lookup(env, "WORLD_SIZE") != nullptr;
}

// ---- SlurmEnvironment ----------------------------------------------------------------------

SlurmEnvironment::SlurmEnvironment(const EnvMap& env) {
  const char* hint = "start one process per task with srun";
  world_size_ = read_int(env, "SLURM_NTASKS", std::nullopt, hint);
  check_world_size("SLURM_NTASKS", world_size_);
  global_rank_ = read_int(env, "SLURM_PROCID", std::nullopt, hint);
  check_rank("SLURM_PROCID", global_rank_, "SLURM_NTASKS", world_size_);
  local_rank_ = read_int(env, "SLURM_LOCALID", std::nullopt, hint);
  LOOM_VALUE_CHECK(local_rank_ >= 0 && local_rank_ < world_size_,
                   "environment variable SLURM_LOCALID=", local_rank_,
                   " is out of range for SLURM_NTASKS=", world_size_);
  node_rank_ = read_int(env, "SLURM_NODEID", std::nullopt, hint);
  LOOM_VALUE_CHECK(node_rank_ >= 0, "environment variable SLURM_NODEID=", node_rank_,
                   " must not be negative");
  // Rank 0 runs on the first node of the allocation. SLURM_LAUNCH_NODE_IPADDR is only a
  // fallback: it names where srun was typed, which may be a login node outside the job.
  std::string fallback = kDefaultMainAddress;
  const std::string* nodes = lookup(env, "SLURM_NODELIST");
  if (nodes == nullptr) nodes = lookup(env, "SLURM_JOB_NODELIST");
  if (nodes != nullptr) {
    fallback = first_host(*nodes);
  } else if (const std::string* ip = lookup(env, "SLURM_LAUNCH_NODE_IPADDR")) {
    fallback = *ip;
  }
  main_address_ = read_address(env, fallback);
  // Jobs sharing a node get different ports as long as their ids differ in the last 4 digits.
  int port = kDefaultMainPort;
  if (lookup(env, "SLURM_JOB_ID")) {
    int job_id = read_int(env, "SLURM_JOB_ID", 0, "");
    LOOM_VALUE_CHECK(job_id >= 0, "environment variable SLURM_JOB_ID=", job_id,
                     " must not be negative");
    port = 15000 + job_id % 10000;
  }
  main_port_ = read_port(env, port);
}

bool SlurmEnvironment::detect(const EnvMap& env) {
  if (lookup(env, "SLURM_NTASKS") == nullptr) return false;
  int ntasks = read_int(env, "SLURM_NTASKS", std::nullopt, "");
  const std::string* job_name = lookup(env, "SLURM_JOB_NAME");
  bool interactive = job_name != nullptr && (*job_name == "bash" || *job_name == "interactive");
  return ntasks > 1 && !interactive;
}

std::string SlurmEnvironment::first_host(const std::string& nodelist) {
  // Only the first comma-separated entry at bracket depth 0 matters; within it, each bracket
  // group contributes its first element ("003" of "[003-010,012]", zero padding kept).
  std::string host;
  std::size_t i = 0;
  while (i < nodelist.size() && nodelist[i] != ',') {
    char c = nodelist[i];
    if (c == ']') break;
    if (c != '[') {
      host += c;
      ++i;
      continue;
    }
    std::size_t close = nodelist.find(']', i);
    LOOM_VALUE_CHECK(close != std::string::npos, "SLURM node list '", nodelist,
                     "' has an unclosed '['; set MASTER_ADDR to rank 0's host instead");
    std::string group = nodelist.substr(i + 1, close - i - 1);
    std::size_t end = group.find_first_of(",-");
    host += group.substr(0, end);
    i = close + 1;
  }
  LOOM_VALUE_CHECK(!host.empty() && (i == nodelist.size() || nodelist[i] == ','),
                   "cannot read the first host of the SLURM node list '", nodelist,
                   "'; set MASTER_ADDR to rank 0's host instead");
  return host;
}

// ---- MPIEnvironment ------------------------------------------------------------------------

MPIEnvironment::MPIEnvironment(const EnvMap& env) {
  const char* hint = "start the processes with Open MPI's mpirun";
  world_size_ = read_int(env, "OMPI_COMM_WORLD_SIZE", std::nullopt, hint);
  check_world_size("OMPI_COMM_WORLD_SIZE", world_size_);
  global_rank_ = read_int(env, "OMPI_COMM_WORLD_RANK", std::nullopt, hint);
  check_rank("OMPI_COMM_WORLD_RANK", global_rank_, "OMPI_COMM_WORLD_SIZE", world_size_);
  int local_size = read_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", std::nullopt, hint);
  check_world_size("OMPI_COMM_WORLD_LOCAL_SIZE", local_size);
  local_rank_ = read_int(env, "OMPI_COMM_WORLD_LOCAL_RANK", std::nullopt, hint);
  check_rank("OMPI_COMM_WORLD_LOCAL_RANK", local_rank_, "OMPI_COMM_WORLD_LOCAL_SIZE", local_size);
  node_rank_ = global_rank_ / local_size;
  // On several nodes 127.0.0.1 would send every rank to its own machine: require the address.
  bool multi_node = local_size < world_size_;
  LOOM_VALUE_CHECK(!multi_node || lookup(env, "MASTER_ADDR") != nullptr,
                   "MPI job spans several nodes (OMPI_COMM_WORLD_SIZE=", world_size_,
                   ", OMPI_COMM_WORLD_LOCAL_SIZE=", local_size,
                   ") but MASTER_ADDR is not set; "
                   "export it to every rank, e.g. mpirun -x MASTER_ADDR=<rank 0 host>");
  main_address_ = read_address(env, kDefaultMainAddress);
  main_port_ = read_port(env, kDefaultMainPort);
}

bool MPIEnvironment::detect(const EnvMap& env) {
  return lookup(env, "OMPI_COMM_WORLD_RANK") != nullptr &&
         lookup(env, "OMPI_COMM_WORLD_SIZE") != nullptr;
}

// ---- detection and the loomrun variables ---------------------------------------------------

std::unique_ptr<ClusterEnvironment> detect_cluster_environment(const EnvMap& env) {
  if (LoomrunEnvironment::detect(env)) return std::make_unique<LoomrunEnvironment>(env);
  if (SlurmEnvironment::detect(env)) return std::make_unique<SlurmEnvironment>(env);
  if (MPIEnvironment::detect(env)) return std::make_unique<MPIEnvironment>(env);
  return std::make_unique<LocalEnvironment>(env);
}

EnvMap loomrun_variables(const RankLayout& layout) {
  LOOM_VALUE_CHECK(layout.nproc_per_node >= 1, "nproc_per_node must be at least 1, got ",
                   layout.nproc_per_node);
  LOOM_VALUE_CHECK(layout.nnodes >= 1, "nnodes must be at least 1, got ", layout.nnodes);
  LOOM_VALUE_CHECK(layout.node_rank >= 0 && layout.node_rank < layout.nnodes, "node_rank ",
                   layout.node_rank, " is out of range for nnodes=", layout.nnodes, ": use 0..",
                   layout.nnodes - 1);
  LOOM_VALUE_CHECK(layout.local_rank >= 0 && layout.local_rank < layout.nproc_per_node,
                   "local_rank ", layout.local_rank,
                   " is out of range for nproc_per_node=", layout.nproc_per_node);
  LOOM_VALUE_CHECK(layout.master_port >= 1 && layout.master_port <= 65535, "master port ",
                   layout.master_port, " is not a valid TCP port; use 1..65535");
  LOOM_VALUE_CHECK(!layout.master_addr.empty(), "master address is empty");
  int rank = layout.node_rank * layout.nproc_per_node + layout.local_rank;
  return {
      {"RANK", std::to_string(rank)},
      {"WORLD_SIZE", std::to_string(layout.nproc_per_node * layout.nnodes)},
      {"LOCAL_RANK", std::to_string(layout.local_rank)},
      {"LOCAL_WORLD_SIZE", std::to_string(layout.nproc_per_node)},
      {"NODE_RANK", std::to_string(layout.node_rank)},
      {"MASTER_ADDR", layout.master_addr},
      {"MASTER_PORT", std::to_string(layout.master_port)},
  };
}

}  // namespace loom::dist
