#include "fabric/ddp.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <thread>

#include "autograd/grad_mode.h"
#include "dist/gloo_process_group.h"
#include "dist/init.h"
#include "dist/launcher_watch.h"
#include "dist/process_launcher.h"
#include "fabric/compile.h"
#include "fabric/wrappers.h"
#include "kernels/cpu/parallel.h"
#include "tensor/factories.h"
#include "tensor/native.h"

namespace loom {
namespace {

// Threads per process: LOOM_NUM_THREADS when the user set it (a bad value throws its
// ValueError), else the cores shared evenly by the local ranks (one thread budget).
int threads_per_rank(int local_world) {
  if (std::optional<int> n = num_threads_from_env()) return *n;
  int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, local_world));
}

struct SyncOffGuard {
  explicit SyncOffGuard(Reducer* r) : reducer(r), saved(r->sync()) { r->set_sync(false); }
  ~SyncOffGuard() { reducer->set_sync(saved); }
  Reducer* reducer;
  bool saved;
};

}  // namespace

DistributedDataParallel::DistributedDataParallel(std::shared_ptr<nn::Module> module,
                                                 std::shared_ptr<Reducer> reducer)
    : WrapperModule(std::move(module), "DistributedDataParallel"), reducer_(std::move(reducer)) {}

Tensor DistributedDataParallel::forward(const Tensor& x) {
  if (GradMode::is_enabled()) pending_backward = true;
  return (*inner_)(x);
}

DDPStrategy::DDPStrategy(DDPOptions options) : options_(options) {
  // The same rule as the process group's own (dist::debug_collectives_from_env), since the
  // strategy passes its decision down explicitly.
  if (dist::debug_collectives_from_env()) options_.debug_collectives = true;
}

DDPStrategy::~DDPStrategy() {
  if (!launcher_) return;
  // Rank 0 of a "ddp" launch: the other ranks run the same program and finish on their own.
  dist::LaunchResult r = launcher_->wait(options_.timeout);
  if (!r.ok()) std::cerr << "loom ddp: " << r.message << std::endl;
}

void DDPStrategy::launch(const std::function<void()>& fn) {
  (void)num_threads_from_env();  // a bad LOOM_NUM_THREADS fails here, before any rank starts
  if (!env_) env_ = dist::detect_cluster_environment();
  int expected = int(devices_.size()) * num_nodes_;
  if (env_->creates_processes_externally()) {
    world_size_ = env_->world_size();
    global_rank_ = env_->global_rank();
    local_rank_ = env_->local_rank();
    node_rank_ = env_->node_rank();
    master_addr_ = env_->main_address();
    master_port_ = env_->main_port();
    if (world_size_ != expected)
      throw ValueError(detail::concat(
          name(), ": the launcher started ", world_size_, " processes (", env_->name(),
          ") but devices x num_nodes = ", devices_.size(), " x ", num_nodes_, " = ", expected,
          "; make them agree (e.g. loomrun --nproc-per-node ", devices_.size(), ")"));
    // Started by a loom launcher (loomrun, or rank 0 below): if it dies, say so and stop.
    dist::watch_launcher(global_rank_);
    fn();
    return;
  }
  if (num_nodes_ > 1)
    throw RuntimeError(detail::concat(
        name(), ": num_nodes=", num_nodes_, " needs the processes started on every node by a "
        "launcher (loomrun --nnodes, SLURM or mpirun); none was detected"));
  world_size_ = expected;
  master_addr_ = env_->main_address();
  master_port_ = env_->main_port();
  if (options_.spawn)
    spawn_processes(fn);
  else
    launch_processes(fn);
}

void DDPStrategy::launch_processes(const std::function<void()>& fn) {
  if (world_size_ > 1) {
    std::vector<std::string> argv = dist::this_program_argv();
    launcher_ = std::make_unique<dist::ProcessLauncher>(
        dist::LauncherOptions{.output = dist::OutputMode::kInherit, .name = "rank 0"});
    for (int r = 1; r < world_size_; ++r) {
      dist::RankLayout layout{.nproc_per_node = world_size_, .nnodes = 1, .node_rank = 0,
                              .local_rank = r, .master_addr = master_addr_,
                              .master_port = master_port_};
      dist::EnvMap env = dist::loomrun_variables(layout);
      env["LOOM_NUM_THREADS"] = std::to_string(threads_per_rank(world_size_));
      launcher_->spawn({r, argv, env});
    }
  }
  try {
    fn();
  } catch (...) {
    // The other ranks cannot finish without rank 0 (it hosts the rendezvous): stop them now
    // rather than let the destructor wait for them until the collective timeout.
    if (launcher_) {
      launcher_->stop_all();
      launcher_.reset();
    }
    throw;
  }
}

void DDPStrategy::spawn_processes(const std::function<void()>& fn) {
  std::cout.flush();
  std::fflush(nullptr);
  struct Child {
    int rank;
    pid_t pid;
    int fd;  // read end of the child's error pipe
  };
  std::vector<Child> children;
  pid_t rank0 = ::getpid();
  for (int r = 1; r < world_size_; ++r) {
    int fds[2];
    if (pipe(fds) != 0) throw RuntimeError("ddp_spawn: pipe() failed");
    pid_t pid = fork();
    if (pid < 0) throw RuntimeError("ddp_spawn: fork() failed");
    if (pid == 0) {
      close(fds[0]);
      // No rank outlives rank 0, and each says so in one line if rank 0 dies first.
      dist::watch_parent(r, rank0, "rank 0");
      global_rank_ = local_rank_ = r;
      int status = 0;
      try {
        fn();
      } catch (const std::exception& e) {
        std::string msg = e.what();
        ssize_t ignored = write(fds[1], msg.data(), msg.size());
        (void)ignored;
        status = 1;
      }
      std::cout.flush();
      std::fflush(nullptr);
      _exit(status);  // the child never returns into the parent's code
    }
    close(fds[1]);
    children.push_back({r, pid, fds[0]});
  }
  auto reap = [&](bool kill_them) {
    std::string failures;
    for (Child& c : children) {
      // A child that already ended, or that a signal other than our SIGTERM ended, failed
      // on its own (it may have been killed while rank 0 was failing because of it).
      int status = 0;
      bool stopped_by_us = false;
      if (kill_them && waitpid(c.pid, &status, WNOHANG) == 0) {
        ::kill(c.pid, SIGTERM);
        stopped_by_us = true;
      }
      std::string msg;
      char buf[4096];
      for (ssize_t n; (n = read(c.fd, buf, sizeof(buf))) > 0;) msg.append(buf, size_t(n));
      close(c.fd);
      if (!kill_them || stopped_by_us) waitpid(c.pid, &status, 0);
      bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      bool our_sigterm = stopped_by_us && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM;
      if (!ok && (!our_sigterm || !msg.empty())) {
        failures += detail::concat("\n  rank ", c.rank, ": ",
                                   !msg.empty() ? msg
                                   : WIFSIGNALED(status)
                                       ? detail::concat("killed by signal ", WTERMSIG(status))
                                       : detail::concat("exited with status ", WEXITSTATUS(status)));
      }
    }
    return failures;
  };
  try {
    fn();  // rank 0
  } catch (const std::exception& e) {
    // Rank 0's failure is often the consequence (its collective lost a peer) of a child's
    // failure, the cause: report the children that failed on their own with it.
    std::string failures = reap(/*kill_them=*/true);
    if (failures.empty()) throw;
    throw RuntimeError(detail::concat("ddp_spawn: a process failed:\n  rank 0: ", e.what(), failures));
  } catch (...) {
    reap(/*kill_them=*/true);
    throw;
  }
  std::string failures = reap(false);
  if (!failures.empty()) throw RuntimeError("ddp_spawn: a process failed:" + failures);
}

void DDPStrategy::setup_environment() {
  set_num_threads(threads_per_rank(world_size_ / std::max(1, num_nodes_)));
  if (world_size_ == 1 && !env_) return;
  dist::ProcessGroupOptions o;
  o.rank = global_rank_;
  o.world_size = world_size_;
  o.master_addr = master_addr_;
  o.master_port = master_port_;
  o.timeout = options_.timeout;
  o.debug = options_.debug_collectives;
  group_ = dist::init_process_group(o);
}

void DDPStrategy::broadcast_module(nn::Module& module) {
  // Large contiguous tensors are broadcast in place: copying megabytes into a staging buffer
  // and back costs more than the broadcast itself. The small ones are coalesced into one
  // flat buffer per dtype, so a model of many small tensors pays one collective's latency,
  // not one per tensor. Everything is launched before anything is waited on; the group's
  // worker runs the collectives in launch order on every rank.
  constexpr int64_t kInPlaceBytes = int64_t(256) << 10;
  NoGradGuard no_grad;
  std::vector<Tensor> tensors = module.parameters();
  for (const Tensor& b : module.buffers()) tensors.push_back(b);
  std::vector<std::pair<Tensor, std::shared_ptr<dist::Work>>> in_place;
  std::map<DType, std::vector<Tensor>> by_dtype;
  for (const Tensor& t : tensors) {
    if (int64_t(t.nbytes()) >= kInPlaceBytes && t.is_contiguous())
      in_place.emplace_back(t, group_->broadcast_async(t, 0));
    else
      by_dtype[t.dtype()].push_back(t);
  }
  struct Flat {
    std::vector<Tensor> tensors;
    Tensor flat;
    std::shared_ptr<dist::Work> work;
  };
  std::vector<Flat> flats;
  for (auto& [dtype, list] : by_dtype) {
    int64_t n = 0;
    for (const Tensor& t : list) n += t.numel();
    Tensor flat = native::empty({n}, dtype, root_device());
    int64_t off = 0;
    for (const Tensor& t : list) {
      native::copy_(native::slice(flat, 0, off, off + t.numel(), 1), native::reshape(t, {-1}));
      off += t.numel();
    }
    flats.push_back({list, flat, group_->broadcast_async(flat, 0)});
  }
  for (auto& [t, work] : in_place) {
    work->wait();
    t.storage()->bump_version();  // written behind autograd's back
  }
  for (Flat& f : flats) {
    f.work->wait();
    int64_t off = 0;
    for (const Tensor& t : f.tensors) {
      native::copy_(t, native::reshape(native::slice(f.flat, 0, off, off + t.numel(), 1), t.sizes()));
      off += t.numel();
    }
  }
}

std::shared_ptr<nn::Module> DDPStrategy::setup_module(std::shared_ptr<nn::Module> module) {
  if (!group_) throw RuntimeError("ddp: the process group is not set up; call fabric.launch() first");
  broadcast_module(*module);
  auto named = module->named_parameters();
  auto reducer = std::make_shared<Reducer>(named.values(), named.keys(), group_,
                                           int64_t(options_.bucket_cap_mb * 1024 * 1024),
                                           options_.find_unused_parameters,
                                           options_.gradient_as_bucket_view);
  auto ddp = std::make_shared<DistributedDataParallel>(module, reducer);
  wrapped_.push_back(ddp);
  return ddp;
}

void DDPStrategy::backward(const Tensor& loss) {
  precision_->pre_backward(loss).backward();
  for (auto& weak : wrapped_)
    if (auto ddp = weak.lock(); ddp && ddp->pending_backward) {
      ddp->pending_backward = false;
      ddp->reducer().finalize();
    }
}

ScopeStack DDPStrategy::no_backward_sync(nn::Module& module) {
  ScopeStack s;
  auto* ddp = unwrap<DistributedDataParallel>(&module);
  if (!ddp) throw ValueError("no_backward_sync: the module was not set up with the ddp strategy");
  s.push<SyncOffGuard>(&ddp->reducer());
  return s;
}

void DDPStrategy::save_checkpoint(const std::string& path, const CheckpointState& state) {
  if (!group_) return Strategy::save_checkpoint(path, state);
  // Rank 0's outcome is broadcast, so a failed write ends every rank's save() at once with an
  // error instead of leaving them in a barrier until the timeout.
  Tensor ok = scalar_tensor(1.0, DType::f64);
  std::exception_ptr error;
  if (global_rank_ == 0) {
    try {
      Strategy::save_checkpoint(path, state);
    } catch (...) {
      error = std::current_exception();
      native::fill_(ok, 0.0);
    }
  }
  group_->broadcast(ok, 0);
  if (error) std::rethrow_exception(error);
  if (ok.item_double() == 0.0)
    throw RuntimeError("save: rank 0 failed to write '" + path + "' (its error says why); "
                       "nothing was written");
}

Tensor DDPStrategy::all_reduce(const Tensor& t, ReduceOp op) {
  if (!group_) return t;
  Tensor c = native::clone(t);
  group_->all_reduce(c, op);
  return c;
}

Tensor DDPStrategy::all_gather(const Tensor& t) {
  if (!group_) return native::unsqueeze(t, 0);
  return group_->all_gather(native::contiguous(t));
}

Tensor DDPStrategy::broadcast(const Tensor& t, int src) {
  if (!group_) return t;
  Tensor c = native::clone(t);
  group_->broadcast(c, src);
  return c;
}

void DDPStrategy::barrier(const std::string&) {
  if (group_) group_->barrier();
}

}  // namespace loom
