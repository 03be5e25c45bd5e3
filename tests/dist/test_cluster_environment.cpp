// Tests of the cluster environments: detection order, values read from injected environment
// maps, defaults, and the errors for bad values (each must name the variable).
#include <gtest/gtest.h>

#include "dist/cluster_environment.h"
#include "core/error.h"

namespace loom::dist {
namespace {

std::string value_error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "<no ValueError>";
}

TEST(ClusterEnvironment, DetectsLoomrunFirstEvenInsideSlurmOrMpi) {
  EnvMap env = {{"RANK", "3"},
                {"WORLD_SIZE", "4"},
                {"LOCAL_RANK", "1"},
                {"LOCAL_WORLD_SIZE", "2"},
                {"NODE_RANK", "1"},
                {"MASTER_ADDR", "10.0.0.1"},
                {"MASTER_PORT", "1234"},
                {"SLURM_NTASKS", "8"},
                {"OMPI_COMM_WORLD_SIZE", "2"}};
  auto cluster = detect_cluster_environment(env);
  EXPECT_EQ(cluster->name(), "loomrun");
  EXPECT_TRUE(cluster->creates_processes_externally());
  EXPECT_EQ(cluster->world_size(), 4);
  EXPECT_EQ(cluster->global_rank(), 3);
  EXPECT_EQ(cluster->local_rank(), 1);
  EXPECT_EQ(cluster->node_rank(), 1);
  EXPECT_EQ(cluster->main_address(), "10.0.0.1");
  EXPECT_EQ(cluster->main_port(), 1234);
}

TEST(ClusterEnvironment, LoomrunDefaults) {
  LoomrunEnvironment env({{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_WORLD_SIZE", "4"}});
  EXPECT_EQ(env.local_rank(), 0);
  EXPECT_EQ(env.node_rank(), 1);  // 5 / 4: nodes filled in rank order
  EXPECT_EQ(env.main_address(), "127.0.0.1");
  EXPECT_EQ(env.main_port(), kDefaultMainPort);
  LoomrunEnvironment torchrun({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"GROUP_RANK", "0"}});
  EXPECT_EQ(torchrun.node_rank(), 0);
}

TEST(ClusterEnvironment, LoomrunBadValuesNameTheVariable) {
  auto msg = value_error_of([] { LoomrunEnvironment({{"RANK", "x1"}, {"WORLD_SIZE", "2"}}); });
  EXPECT_NE(msg.find("RANK='x1'"), std::string::npos) << msg;
  msg = value_error_of([] { LoomrunEnvironment({{"RANK", "2"}, {"WORLD_SIZE", "2"}}); });
  EXPECT_NE(msg.find("RANK=2 is out of range for WORLD_SIZE=2"), std::string::npos) << msg;
  msg = value_error_of([] { LoomrunEnvironment({{"RANK", "0"}, {"WORLD_SIZE", "0"}}); });
  EXPECT_NE(msg.find("WORLD_SIZE=0"), std::string::npos) << msg;
  msg = value_error_of([] {
    LoomrunEnvironment({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}});
  });
  EXPECT_NE(msg.find("MASTER_PORT=70000"), std::string::npos) << msg;
  msg = value_error_of([] {
    LoomrunEnvironment(
        {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}});
  });
  EXPECT_NE(msg.find("LOCAL_RANK=2"), std::string::npos) << msg;
  msg = value_error_of([] { LoomrunEnvironment(EnvMap{{"RANK", "0"}}); });
  EXPECT_NE(msg.find("WORLD_SIZE is not set"), std::string::npos) << msg;
  msg = value_error_of([] {
    LoomrunEnvironment({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", ""}});
  });
  EXPECT_NE(msg.find("MASTER_ADDR"), std::string::npos) << msg;
}

EnvMap slurm_env() {
  return {{"SLURM_NTASKS", "4"},
          {"SLURM_PROCID", "2"},
          {"SLURM_LOCALID", "0"},
          {"SLURM_NODEID", "1"},
          {"SLURM_JOB_ID", "123456"},
          {"SLURM_JOB_NAME", "train"},
          {"SLURM_NODELIST", "gpu[007-008,012],cpu1"}};
}

TEST(ClusterEnvironment, Slurm) {
  auto cluster = detect_cluster_environment(slurm_env());
  ASSERT_EQ(cluster->name(), "slurm");
  EXPECT_TRUE(cluster->creates_processes_externally());
  EXPECT_EQ(cluster->world_size(), 4);
  EXPECT_EQ(cluster->global_rank(), 2);
  EXPECT_EQ(cluster->local_rank(), 0);
  EXPECT_EQ(cluster->node_rank(), 1);
  EXPECT_EQ(cluster->main_address(), "gpu007");
  EXPECT_EQ(cluster->main_port(), 15000 + 3456);
  EnvMap env = slurm_env();
  env["MASTER_ADDR"] = "head";
  env["MASTER_PORT"] = "4000";
  SlurmEnvironment overridden(env);
  EXPECT_EQ(overridden.main_address(), "head");
  EXPECT_EQ(overridden.main_port(), 4000);
  env = slurm_env();
  env.erase("SLURM_NODELIST");
  env.erase("SLURM_JOB_ID");
  env["SLURM_LAUNCH_NODE_IPADDR"] = "10.1.2.3";
  SlurmEnvironment by_launch_ip(env);
  EXPECT_EQ(by_launch_ip.main_address(), "10.1.2.3");
  EXPECT_EQ(by_launch_ip.main_port(), kDefaultMainPort);
}

TEST(ClusterEnvironment, SlurmNotDetectedForOneTaskOrInteractiveShell) {
  EnvMap env = slurm_env();
  env["SLURM_NTASKS"] = "1";
  env["SLURM_PROCID"] = "0";
  EXPECT_FALSE(SlurmEnvironment::detect(env));
  EXPECT_EQ(detect_cluster_environment(env)->name(), "local");
  env = slurm_env();
  env["SLURM_JOB_NAME"] = "bash";
  EXPECT_FALSE(SlurmEnvironment::detect(env));
  env = slurm_env();
  env["SLURM_NTASKS"] = "four";
  auto msg = value_error_of([&] { SlurmEnvironment::detect(env); });
  EXPECT_NE(msg.find("SLURM_NTASKS='four'"), std::string::npos) << msg;
}

TEST(ClusterEnvironment, SlurmBadValues) {
  EnvMap env = slurm_env();
  env["SLURM_PROCID"] = "4";
  auto msg = value_error_of([&] { SlurmEnvironment{env}; });
  EXPECT_NE(msg.find("SLURM_PROCID=4"), std::string::npos) << msg;
  env = slurm_env();
  env.erase("SLURM_LOCALID");
  msg = value_error_of([&] { SlurmEnvironment{env}; });
  EXPECT_NE(msg.find("SLURM_LOCALID is not set"), std::string::npos) << msg;
  env = slurm_env();
  env["SLURM_NODELIST"] = "gpu[1-2";
  msg = value_error_of([&] { SlurmEnvironment{env}; });
  EXPECT_NE(msg.find("MASTER_ADDR"), std::string::npos) << msg;
}

TEST(ClusterEnvironment, SlurmFirstHost) {
  EXPECT_EQ(SlurmEnvironment::first_host("node1"), "node1");
  EXPECT_EQ(SlurmEnvironment::first_host("node1,node2"), "node1");
  EXPECT_EQ(SlurmEnvironment::first_host("node[1-4]"), "node1");
  EXPECT_EQ(SlurmEnvironment::first_host("gpu[003-010,012]"), "gpu003");
  EXPECT_EQ(SlurmEnvironment::first_host("n[5,7]"), "n5");
  EXPECT_EQ(SlurmEnvironment::first_host("rack[1-2]-n[5-6]"), "rack1-n5");
  EXPECT_EQ(SlurmEnvironment::first_host("a[1-2],b7"), "a1");
  EXPECT_EQ(SlurmEnvironment::first_host("host-ib.cluster"), "host-ib.cluster");
  EXPECT_THROW(SlurmEnvironment::first_host(""), ValueError);
  EXPECT_THROW(SlurmEnvironment::first_host("x]"), ValueError);
}

EnvMap mpi_env() {
  return {{"OMPI_COMM_WORLD_RANK", "3"},
          {"OMPI_COMM_WORLD_SIZE", "4"},
          {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
          {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
          {"MASTER_ADDR", "node0"}};
}

TEST(ClusterEnvironment, OpenMpi) {
  auto cluster = detect_cluster_environment(mpi_env());
  ASSERT_EQ(cluster->name(), "mpi");
  EXPECT_TRUE(cluster->creates_processes_externally());
  EXPECT_EQ(cluster->world_size(), 4);
  EXPECT_EQ(cluster->global_rank(), 3);
  EXPECT_EQ(cluster->local_rank(), 1);
  EXPECT_EQ(cluster->node_rank(), 1);
  EXPECT_EQ(cluster->main_address(), "node0");
  EXPECT_EQ(cluster->main_port(), kDefaultMainPort);
  MPIEnvironment single_node({{"OMPI_COMM_WORLD_RANK", "1"},
                              {"OMPI_COMM_WORLD_SIZE", "2"},
                              {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                              {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_EQ(single_node.main_address(), "127.0.0.1");
  EXPECT_EQ(single_node.node_rank(), 0);
}

TEST(ClusterEnvironment, OpenMpiBadValues) {
  EnvMap env = mpi_env();
  env["OMPI_COMM_WORLD_LOCAL_RANK"] = "-1";
  auto msg = value_error_of([&] { MPIEnvironment{env}; });
  EXPECT_NE(msg.find("OMPI_COMM_WORLD_LOCAL_RANK=-1"), std::string::npos) << msg;
  env = mpi_env();
  env.erase("MASTER_ADDR");
  msg = value_error_of([&] { MPIEnvironment{env}; });
  EXPECT_NE(msg.find("MASTER_ADDR is not set"), std::string::npos) << msg;
  env = mpi_env();
  env["OMPI_COMM_WORLD_SIZE"] = "4.5";
  msg = value_error_of([&] { MPIEnvironment{env}; });
  EXPECT_NE(msg.find("OMPI_COMM_WORLD_SIZE='4.5'"), std::string::npos) << msg;
}

TEST(ClusterEnvironment, LocalIsTheFallbackAndTakesRanksFromTheLauncher) {
  auto cluster = detect_cluster_environment(EnvMap{});
  ASSERT_EQ(cluster->name(), "local");
  EXPECT_FALSE(cluster->creates_processes_externally());
  EXPECT_EQ(cluster->world_size(), 1);
  EXPECT_EQ(cluster->global_rank(), 0);
  EXPECT_EQ(cluster->main_address(), "127.0.0.1");
  EXPECT_GT(cluster->main_port(), 0);  // a free port, handed to the started processes
  LocalEnvironment local({{"MASTER_PORT", "5555"}, {"LOCAL_RANK", "0"}});
  EXPECT_EQ(local.main_port(), 5555);
  local.set_world_size(4);
  local.set_global_rank(3);
  EXPECT_EQ(local.global_rank(), 3);
  EXPECT_THROW(local.set_global_rank(4), ValueError);
  EXPECT_THROW(local.set_world_size(2), ValueError);
  auto msg = value_error_of([] { LocalEnvironment(EnvMap{{"NODE_RANK", "one"}}); });
  EXPECT_NE(msg.find("NODE_RANK='one'"), std::string::npos) << msg;
}

TEST(ClusterEnvironment, LoomrunVariablesRoundTrip) {
  RankLayout layout{.nproc_per_node = 4,
                    .nnodes = 2,
                    .node_rank = 1,
                    .local_rank = 2,
                    .master_addr = "10.0.0.9",
                    .master_port = 29600};
  EnvMap vars = loomrun_variables(layout);
  EXPECT_EQ(vars.at("RANK"), "6");
  EXPECT_EQ(vars.at("WORLD_SIZE"), "8");
  LoomrunEnvironment env(vars);
  EXPECT_EQ(env.global_rank(), 6);
  EXPECT_EQ(env.local_rank(), 2);
  EXPECT_EQ(env.local_world_size(), 4);
  EXPECT_EQ(env.node_rank(), 1);
  EXPECT_EQ(env.main_address(), "10.0.0.9");
  EXPECT_EQ(env.main_port(), 29600);
  layout.node_rank = 2;
  EXPECT_THROW(loomrun_variables(layout), ValueError);
}

TEST(ClusterEnvironment, ReadsTheRealEnvironmentByDefault) {
  EnvMap env = process_environment();
  EXPECT_FALSE(env.empty());
  EXPECT_NO_THROW(detect_cluster_environment());
}

}  // namespace
}  // namespace loom::dist
