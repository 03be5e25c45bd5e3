// loomrun: starts N processes of a program on this node with the rank variables set
// (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR, MASTER_PORT),
// prefixes their output with "[rank R] ", and stops all of them when one fails.
//
//   loomrun --nproc-per-node 2 ./train --epochs 3
//   loomrun --nproc-per-node 8 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 ./train
//   (and the same with --node-rank 1 on the second node)
//
//   loomrun --nproc-per-node 2 --max-restarts 3 ./train --resume-from ckpts/
//   (when a rank fails, stop them all and start the group again, up to 3 times; each attempt
//   gets a fresh MASTER_PORT and LOOM_RESTART_COUNT=0, 1, ...: dist/elastic_restart.h)
//
// A thin command line over dist::ProcessLauncher; the process supervision lives there so
// Fabric can reuse it. Exit code: 0 when every rank succeeded, else the failed rank's status
// (128 + signal when it was killed; the last attempt's when restarts ran out), 128 + signal
// when interrupted, 2 for usage errors.
#include <CLI/CLI.hpp>
#include <iostream>

#include "dist/cluster_environment.h"
#include "dist/elastic_restart.h"
#include "dist/init.h"
#include "dist/process_launcher.h"
#include "dist/socket.h"
#include "core/error.h"

int main(int argc, char** argv) {
  using namespace loom::dist;
  CLI::App app{"loomrun: start the ranks of a loom program on this node"};
  app.prefix_command();  // everything from the program name on belongs to the program
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = kDefaultMainAddress;
  int master_port = 0;
  double grace_seconds = 5.0;
  bool no_prefix = false;
  int max_restarts = 0;
  std::string socket_ifname, socket_addr;
  app.add_option("--nproc-per-node,--nproc_per_node", nproc_per_node,
                 "processes (ranks) to start on this node")
      ->required()
      ->check(CLI::PositiveNumber);
  app.add_option("--nnodes", nnodes, "number of nodes in the job")->check(CLI::PositiveNumber);
  app.add_option("--node-rank,--node_rank", node_rank, "index of this node, 0..nnodes-1")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--master-addr,--master_addr", master_addr,
                 "address of node 0, where rank 0 hosts the rendezvous store");
  app.add_option("--master-port,--master_port", master_port,
                 "port of the rendezvous store; default: a free port on a single node, 29500 "
                 "with several nodes (it must be the same on every node)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--grace-period", grace_seconds,
                 "seconds between SIGTERM and SIGKILL when stopping the ranks")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--no-prefix", no_prefix, "do not prefix output lines with [rank R]");
  app.add_option("--max-restarts,--max_restarts", max_restarts,
                 "when a rank fails, stop every rank and start the group again (fresh "
                 "rendezvous port, LOOM_RESTART_COUNT set), at most this many times; single "
                 "node only")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--socket-ifname,--socket_ifname", socket_ifname,
                 "network interface whose IPv4 address the ranks advertise to each other "
                 "(sets LOOM_SOCKET_IFNAME); default: the address that routes to --master-addr");
  app.add_option("--socket-addr,--socket_addr", socket_addr,
                 "IPv4 address of this node that the ranks advertise to each other (sets "
                 "LOOM_SOCKET_ADDR; wins over --socket-ifname)");
  app.footer("Positional: program [args...]: the program each rank runs, with its arguments.");
  CLI11_PARSE(app, argc, argv);

  std::vector<std::string> command = app.remaining();
  if (command.empty()) {
    std::cerr << "loomrun: error: no program given; usage: loomrun --nproc-per-node N program "
                 "[args...]\n";
    return 2;
  }
  if (max_restarts > 0 && nnodes > 1) {
    std::cerr << "loomrun: error: --max-restarts works on a single node (--nnodes 1): the "
                 "launchers of several nodes have no rendezvous of their own to restart "
                 "together; restart the job from outside (e.g. the cluster scheduler)\n";
    return 2;
  }
  try {
    if (master_port == 0) master_port = nnodes == 1 ? find_free_port() : kDefaultMainPort;
    LauncherOptions options;
    options.output = no_prefix ? OutputMode::kInherit : OutputMode::kPrefixLines;
    options.grace_period = std::chrono::milliseconds(static_cast<int64_t>(grace_seconds * 1000.0));
    options.forward_signals = true;
    ProcessLauncher launcher(options);
    auto make_group = [&](int attempt) {
      // A fresh rendezvous per restart: the old store's port may still be held, and no peer of
      // a stopped attempt may join the new one.
      if (attempt > 0) master_port = find_free_port();
      std::vector<ProcessSpec> ranks;
      for (int local_rank = 0; local_rank < nproc_per_node; ++local_rank) {
        RankLayout layout{nproc_per_node, nnodes, node_rank, local_rank, master_addr, master_port};
        EnvMap vars = loomrun_variables(layout);
        if (!socket_ifname.empty()) vars[kSocketIfnameVariable] = socket_ifname;
        if (!socket_addr.empty()) vars[kSocketAddrVariable] = socket_addr;
        ranks.push_back(ProcessSpec{std::stoi(vars.at("RANK")), command, vars});
      }
      return ranks;
    };
    RestartResult result = run_with_restarts(launcher, make_group, {.max_restarts = max_restarts});
    if (!result.ok()) std::cerr << "loomrun: " << result.message << "\n";
    return result.exit_code();
  } catch (const loom::ValueError& e) {
    std::cerr << "loomrun: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "loomrun: " << e.what() << "\n";
    return 1;
  }
}
