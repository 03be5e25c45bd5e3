// ClusterEnvironment: where this process sits in the job (world size, ranks, node) and where
// rank 0's rendezvous store listens, read from whatever launched the job.
//
// Implementations, and the variables each reads:
//   LoomrunEnvironment  loomrun / torchrun style: RANK, WORLD_SIZE, LOCAL_RANK,
//                       LOCAL_WORLD_SIZE, NODE_RANK (or GROUP_RANK), MASTER_ADDR, MASTER_PORT.
//   SlurmEnvironment    srun: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID,
//                       SLURM_NODELIST / SLURM_JOB_NODELIST, SLURM_LAUNCH_NODE_IPADDR,
//                       SLURM_JOB_ID, SLURM_JOB_NAME; MASTER_ADDR / MASTER_PORT override.
//   MPIEnvironment      Open MPI's mpirun: OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE};
//                       MASTER_ADDR / MASTER_PORT.
//   LocalEnvironment    nothing launched us: Fabric starts the processes itself and sets the
//                       world size and rank; LOCAL_RANK, NODE_RANK, MASTER_ADDR, MASTER_PORT
//                       are read when present.
// detect_cluster_environment() picks one; see its comment for the order.
//
// Defaults: MASTER_ADDR 127.0.0.1 (kDefaultMainAddress); MASTER_PORT 29500 (kDefaultMainPort,
// PyTorch's convention) for loomrun and MPI, where every process must derive the same port
// without talking to each other; 15000 + (SLURM_JOB_ID mod 10000) for SLURM, so that two jobs
// sharing a node rarely collide; a free port picked at construction for LocalEnvironment,
// whose launcher hands it to the processes it starts.
//
// Values are parsed and validated at construction: a non-numeric value, a rank outside
// [0, world size) or a port outside 1..65535 throws loom::ValueError naming the variable.
// The environment is passed in as a map so tests need not touch the real one.
//
// Not here: starting processes (process_launcher.h), the store (tcp_store.h), devices.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

namespace loom::dist {

using EnvMap = std::map<std::string, std::string>;

// A snapshot of this process's environment (environ).
EnvMap process_environment();

inline constexpr char kDefaultMainAddress[] = "127.0.0.1";
inline constexpr int kDefaultMainPort = 29500;

class ClusterEnvironment {
 public:
  virtual ~ClusterEnvironment() = default;

  // Short name for messages and logs: "loomrun", "slurm", "mpi", "local".
  virtual std::string name() const = 0;
  // True when the processes already exist (srun, mpirun, loomrun started them) and Fabric
  // must not launch more; false when Fabric starts them itself.
  virtual bool creates_processes_externally() const = 0;
  // The layout each environment reads at construction (or its launcher sets); virtual so a
  // user environment may compute it instead.
  virtual int world_size() const { return world_size_; }
  virtual int global_rank() const { return global_rank_; }
  virtual int local_rank() const { return local_rank_; }
  virtual int node_rank() const { return node_rank_; }
  virtual std::string main_address() const { return main_address_; }
  virtual int main_port() const { return main_port_; }

 protected:
  int world_size_ = 1;
  int global_rank_ = 0;
  int local_rank_ = 0;
  int node_rank_ = 0;
  std::string main_address_;
  int main_port_ = 0;
};

// Fabric launches the processes itself; the launcher sets world size and global rank.
class LocalEnvironment final : public ClusterEnvironment {
 public:
  explicit LocalEnvironment(const EnvMap& env = process_environment());
  // Always true: the fallback when nothing else matched.
  static bool detect(const EnvMap& env);

  std::string name() const override { return "local"; }
  bool creates_processes_externally() const override { return false; }

  // Set by the launcher once it knows the job's shape; throw loom::ValueError when the rank
  // would fall outside [0, world size).
  void set_world_size(int world_size);
  void set_global_rank(int rank);

};

// Processes started by loomrun (or torchrun, which sets the same variables).
class LoomrunEnvironment final : public ClusterEnvironment {
 public:
  explicit LoomrunEnvironment(const EnvMap& env = process_environment());
  // True when RANK and WORLD_SIZE are both set.
  static bool detect(const EnvMap& env);

  std::string name() const override { return "loomrun"; }
  bool creates_processes_externally() const override { return true; }
  // LOCAL_WORLD_SIZE; 1 when unset.
  int local_world_size() const { return local_world_size_; }

 private:
  int local_world_size_ = 1;
};

// Processes started by SLURM's srun.
class SlurmEnvironment final : public ClusterEnvironment {
 public:
  explicit SlurmEnvironment(const EnvMap& env = process_environment());
  // True when SLURM_NTASKS > 1 and the job is not an interactive shell (SLURM_JOB_NAME
  // "bash" or "interactive"), where the user runs the program by hand and srun did not
  // start one process per task.
  static bool detect(const EnvMap& env);

  std::string name() const override { return "slurm"; }
  bool creates_processes_externally() const override { return true; }

  // The first host of a SLURM node list in its common forms: "n1,n2", "n[1-4]",
  // "gpu[003-010,012]", "rack[1-2]-n[5-6]", "a[1-2],b7". Throws loom::ValueError for an
  // empty list or unbalanced brackets.
  static std::string first_host(const std::string& nodelist);

};

// Processes started by Open MPI's mpirun.
class MPIEnvironment final : public ClusterEnvironment {
 public:
  explicit MPIEnvironment(const EnvMap& env = process_environment());
  // True when OMPI_COMM_WORLD_RANK and OMPI_COMM_WORLD_SIZE are set.
  static bool detect(const EnvMap& env);

  std::string name() const override { return "mpi"; }
  bool creates_processes_externally() const override { return true; }
  // node_rank(): Open MPI exports no node index; global_rank / OMPI_COMM_WORLD_LOCAL_SIZE is
  // exact for the default by-slot mapping with the same number of ranks on every node.

};

// Picks the environment, first match wins:
//   1. loomrun variables (RANK and WORLD_SIZE set): checked first because loomrun or torchrun
//      may itself run inside a SLURM or MPI allocation, and then its variables describe the
//      processes that actually exist;
//   2. SLURM (SlurmEnvironment::detect);
//   3. Open MPI (MPIEnvironment::detect);
//   4. LocalEnvironment.
std::unique_ptr<ClusterEnvironment> detect_cluster_environment(
    const EnvMap& env = process_environment());

// Where one process sits in a loomrun-style launch; the inverse of LoomrunEnvironment.
struct RankLayout {
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  int local_rank = 0;
  std::string master_addr = kDefaultMainAddress;
  int master_port = kDefaultMainPort;
};

// The variables loomrun sets for one process: RANK = node_rank * nproc_per_node + local_rank,
// WORLD_SIZE = nproc_per_node * nnodes, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK,
// MASTER_ADDR, MASTER_PORT. Throws loom::ValueError for an inconsistent layout.
EnvMap loomrun_variables(const RankLayout& layout);

}  // namespace loom::dist
