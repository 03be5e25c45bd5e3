// Harness for the multi-process Fabric tests (DDP on CPU over loopback).
//
// A test that needs several ranks runs a *scenario* in a fresh copy of the test binary:
// run_job() starts `<this binary> --gtest_filter=DdpChild.Run` with LOOM_DDP_SCENARIO naming
// the scenario, and DdpChild.Run (skipped unless that variable is set) runs it. The scenario
// builds a Fabric and calls launch(): with strategy "ddp" Fabric re-executes its own command
// line, which names DdpChild.Run again, so every rank runs exactly the same scenario with the
// rank variables set; with "ddp_spawn" it forks. A fresh process per job also keeps fork()
// away from this process's threads.
//
// Ranks report through files: record() appends "key<TAB>value" lines to <dir>/rank<R>.txt,
// and the parent test reads them back with Job::rank(R) and checks them against references it
// computes itself. Every job has a deadline after which the whole job is killed (the first
// rank's process group; the ranks it started die with it through PR_SET_PDEATHSIG).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dist/cluster_environment.h"
#include "dist/process_launcher.h"
#include "nn/module.h"
#include "tensor/tensor.h"

namespace loom::ddptest {

// ---- child side ----
bool register_scenario(const std::string& name, std::function<void()> body);
// The scenario `name`: a function run by DdpChild.Run in every rank of a job.
#define LOOM_DDP_SCENARIO(name)                                                     \
  static void ddp_scenario_##name();                                                \
  [[maybe_unused]] static const bool ddp_scenario_registered_##name =               \
      ::loom::ddptest::register_scenario(#name, ddp_scenario_##name);               \
  static void ddp_scenario_##name()

// A variable of the job's environment (run_job's `env`), or `fallback`.
std::string job_env(const std::string& key, const std::string& fallback = "");
int job_env_int(const std::string& key, int fallback);
double job_env_double(const std::string& key, double fallback);
// The job's scratch folder (shared by all ranks).
std::string job_dir();

void record(int rank, const std::string& key, const std::vector<double>& values);
void record(int rank, const std::string& key, double value);
void record(int rank, const std::string& key, const Tensor& t);  // flattened
void record_text(int rank, const std::string& key, const std::string& text);

// ---- parent side ----
struct RankRecord {
  std::multimap<std::string, std::string> lines;
  bool has(const std::string& key) const { return lines.count(key) > 0; }
  size_t count(const std::string& key) const { return lines.count(key); }
  std::string text(const std::string& key) const;  // "" when absent
  std::vector<double> values(const std::string& key) const;
  double value(const std::string& key) const;  // the single value; NaN when absent
};

struct Job {
  std::string dir;
  dist::LaunchResult result;
  std::string output;  // every process's output, "[rank 0] "-prefixed
  bool ok() const { return result.ok(); }
  RankRecord rank(int r) const;
  // Paths of the rank files present, to count the processes that reported.
  std::vector<std::string> rank_files() const;
  // For failure messages.
  std::string describe() const;
  std::shared_ptr<void> remove_dir;  // deletes `dir` with the last copy
};

// Runs `argv` (default: this binary's DdpChild.Run) with LOOM_DDP_SCENARIO=scenario,
// LOOM_DDP_DIR=<fresh temp dir> and `env`; kills it after `timeout`.
Job run_job(const std::string& scenario, dist::EnvMap env = {},
            std::chrono::milliseconds timeout = std::chrono::seconds(40),
            std::vector<std::string> argv = {});
// This test binary, and a sibling build output (relative to it, e.g. "../tools/loomrun");
// "" when missing.
std::string self_exe();
std::string build_output(const std::string& env_override, const std::string& relative);

// A model's parameters then buffers, flattened in registration order, in f64: what ranks
// record and references compare. load_flat_state() writes such a vector back (f32 models).
std::vector<double> flat_state(const nn::Module& m);
void load_flat_state(nn::Module& m, const std::vector<double>& values);

// max |a - b| (infinity when the sizes differ).
double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace loom::ddptest
