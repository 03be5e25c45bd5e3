// Forked ranks for the multi-process dist tests: run_ranks() forks one child per rank and runs
// a body there, each child builds its own process group (and threads) after the fork.
//
// A child reports a failed check or exception through a pipe and exits 1; the parent kills
// children still running after a deadline and reports them, so nothing can hang the suite.
// Children never touch gtest's state: they use check(), which throws, and the parent turns
// the reported errors into gtest failures (expect_all_passed).
//
// Header-only and test-only: included by several test files of tests/dist.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dist/gloo_process_group.h"
#include "dist/init.h"
#include "dist/socket.h"
#include "tensor/tensor.h"

namespace loom::dist {

struct CheckFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void check(bool ok, const std::string& what) {
  if (!ok) throw CheckFailed(what);
}

inline std::string vec_str(const std::vector<double>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

inline void check_values(const Tensor& t, const std::vector<double>& expected,
                         const std::string& what) {
  std::vector<double> got = t.to_double_vector();
  check(got == expected, what + ": got " + vec_str(got) + ", expected " + vec_str(expected));
}

// Runs body(rank, port) in `world` forked processes; returns each rank's error ("" = passed).
inline std::vector<std::string> run_ranks(int world, const std::function<void(int, int)>& body,
                                          std::chrono::seconds limit = std::chrono::seconds(10)) {
  const int port = find_free_port();
  std::vector<pid_t> pids;
  std::vector<int> pipes;
  for (int rank = 0; rank < world; ++rank) {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      std::string error;
      try {
        body(rank, port);
      } catch (const std::exception& e) {
        error = e.what();
        if (error.empty()) error = "exception without message";
      }
      if (!error.empty()) write_all(fds[1], error.data(), error.size());
      _exit(error.empty() ? 0 : 1);
    }
    close(fds[1]);
    pids.push_back(pid);
    pipes.push_back(fds[0]);
  }
  std::vector<std::string> errors(static_cast<size_t>(world));
  std::vector<bool> done(static_cast<size_t>(world), false);
  auto deadline = std::chrono::steady_clock::now() + limit;
  int remaining = world;
  while (remaining > 0) {
    for (int r = 0; r < world; ++r) {
      if (done[size_t(r)]) continue;
      int status = 0;
      if (waitpid(pids[size_t(r)], &status, WNOHANG) != pids[size_t(r)]) continue;
      done[size_t(r)] = true;
      --remaining;
      char buf[4096];
      ssize_t n;
      while ((n = read(pipes[size_t(r)], buf, sizeof buf)) > 0)
        errors[size_t(r)].append(buf, size_t(n));
      if (errors[size_t(r)].empty() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        errors[size_t(r)] = "exited abnormally, status " + std::to_string(status);
    }
    if (remaining > 0 && std::chrono::steady_clock::now() > deadline) {
      for (int r = 0; r < world; ++r) {
        if (done[size_t(r)]) continue;
        kill(pids[size_t(r)], SIGKILL);
        waitpid(pids[size_t(r)], nullptr, 0);
        errors[size_t(r)] = "still running after " + std::to_string(limit.count()) + " s: killed";
      }
      remaining = 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int fd : pipes) close(fd);
  return errors;
}

inline void expect_all_passed(const std::vector<std::string>& errors) {
  for (size_t r = 0; r < errors.size(); ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

// A loopback group through init_process_group, as the multi-rank tests build it; the
// options the tests vary are parameters, the rest is fixed.
inline std::shared_ptr<GlooProcessGroup> make_loopback_group(
    int rank, int world, int port, std::chrono::milliseconds timeout,
    std::optional<bool> debug = false, std::optional<bool> shared_memory = std::nullopt) {
  ProcessGroupOptions o;
  o.rank = rank;
  o.world_size = world;
  o.master_addr = "127.0.0.1";
  o.master_port = port;
  o.timeout = timeout;
  o.debug = debug;
  o.shared_memory = shared_memory;
  auto pg = std::dynamic_pointer_cast<GlooProcessGroup>(init_process_group(o));
  check(pg != nullptr, "init_process_group did not return a GlooProcessGroup");
  return pg;
}

// Every rank leaves together so rank 0's store outlives the others' last store call.
inline void finish(ProcessGroup& pg) {
  store_barrier(*store_of(pg), "test/finish", pg.size(), std::chrono::seconds(10));
}

}  // namespace loom::dist
