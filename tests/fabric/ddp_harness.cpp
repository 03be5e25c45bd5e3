// The multi-process harness of ddp_harness.h, and DdpChild.Run, the test each job's processes
// run (skipped in an ordinary test run, where LOOM_DDP_SCENARIO is unset).
#include "tests/fabric/ddp_harness.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "autograd/grad_mode.h"
#include "tensor/native.h"

namespace loom::ddptest {
namespace {

namespace fs = std::filesystem;

std::map<std::string, std::function<void()>>& scenarios() {
  static std::map<std::string, std::function<void()>> s;
  return s;
}

std::string rank_file(int rank) { return job_dir() + "/rank" + std::to_string(rank) + ".txt"; }

void append_line(int rank, const std::string& key, const std::string& value) {
  // Open, append, close: forked ranks end with _exit(), which flushes no stream.
  std::ofstream out(rank_file(rank), std::ios::app);
  out << key << '\t' << value << '\n';
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

bool register_scenario(const std::string& name, std::function<void()> body) {
  scenarios()[name] = std::move(body);
  return true;
}

std::string job_env(const std::string& key, const std::string& fallback) {
  const char* v = std::getenv(key.c_str());
  return v ? std::string(v) : fallback;
}
int job_env_int(const std::string& key, int fallback) {
  std::string v = job_env(key);
  return v.empty() ? fallback : std::stoi(v);
}
double job_env_double(const std::string& key, double fallback) {
  std::string v = job_env(key);
  return v.empty() ? fallback : std::stod(v);
}
std::string job_dir() { return job_env("LOOM_DDP_DIR"); }

void record(int rank, const std::string& key, const std::vector<double>& values) {
  std::ostringstream s;
  s.precision(17);
  for (size_t i = 0; i < values.size(); ++i) s << (i ? " " : "") << values[i];
  append_line(rank, key, s.str());
}
void record(int rank, const std::string& key, double value) {
  record(rank, key, std::vector<double>{value});
}
void record(int rank, const std::string& key, const Tensor& t) {
  Tensor d = native::to(native::contiguous(t.detach()), Device::cpu(), DType::f64);
  record(rank, key, d.to_vector<double>());
}
void record_text(int rank, const std::string& key, const std::string& text) {
  std::string flat = text;
  for (char& c : flat)
    if (c == '\n' || c == '\t') c = ' ';
  append_line(rank, key, flat);
}

std::string RankRecord::text(const std::string& key) const {
  auto it = lines.find(key);
  return it == lines.end() ? "" : it->second;
}
std::vector<double> RankRecord::values(const std::string& key) const {
  std::vector<double> v;
  std::istringstream in(text(key));
  for (double x; in >> x;) v.push_back(x);
  return v;
}
double RankRecord::value(const std::string& key) const {
  std::vector<double> v = values(key);
  return v.size() == 1 ? v[0] : std::numeric_limits<double>::quiet_NaN();
}

RankRecord Job::rank(int r) const {
  RankRecord rec;
  std::istringstream in(read_file(dir + "/rank" + std::to_string(r) + ".txt"));
  for (std::string line; std::getline(in, line);) {
    size_t tab = line.find('\t');
    if (tab != std::string::npos) rec.lines.emplace(line.substr(0, tab), line.substr(tab + 1));
  }
  return rec;
}

std::vector<std::string> Job::rank_files() const {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("rank", 0) == 0) files.push_back(e.path().string());
  return files;
}

std::string Job::describe() const {
  return "job " + (result.ok() ? std::string("succeeded") : result.message) + "\n--- output ---\n" +
         output;
}

std::string self_exe() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "" : p.string();
}

std::string build_output(const std::string& env_override, const std::string& relative) {
  if (const char* v = std::getenv(env_override.c_str()); v && *v) return fs::exists(v) ? v : "";
  fs::path p = fs::path(self_exe()).parent_path() / relative;
  std::error_code ec;
  return fs::is_regular_file(p, ec) ? fs::weakly_canonical(p, ec).string() : "";
}

Job run_job(const std::string& scenario, dist::EnvMap env, std::chrono::milliseconds timeout,
            std::vector<std::string> argv) {
  Job job;
  char tmpl[] = "/tmp/loom_ddp_XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  job.dir = tmpl;
  job.remove_dir = std::shared_ptr<void>(nullptr, [dir = job.dir](void*) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  });
  env["LOOM_DDP_SCENARIO"] = scenario;
  env["LOOM_DDP_DIR"] = job.dir;
  if (argv.empty()) argv = {self_exe(), "--gtest_filter=DdpChild.Run"};
  std::string log_path = job.dir + "/output.log";
  {
    std::ofstream create(log_path);
  }
  FILE* log = std::fopen(log_path.c_str(), "a");
  dist::LauncherOptions o;
  o.stdout_fd = fileno(log);
  o.stderr_fd = fileno(log);
  o.grace_period = std::chrono::seconds(1);
  {
    dist::ProcessLauncher launcher(o);
    launcher.spawn({0, argv, env});
    job.result = launcher.wait(timeout);
  }
  std::fclose(log);
  job.output = read_file(log_path);
  return job;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size() || a.empty()) return std::numeric_limits<double>::infinity();
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

namespace {

TEST(DdpChild, Run) {
  std::string name = job_env("LOOM_DDP_SCENARIO");
  if (name.empty()) GTEST_SKIP() << "runs only inside the processes of a multi-process test";
  auto it = scenarios().find(name);
  ASSERT_NE(it, scenarios().end()) << "unknown scenario " << name;
  it->second();
}

}  // namespace

std::vector<double> flat_state(const nn::Module& m) {
  std::vector<double> out;
  auto add = [&](const Tensor& t) {
    std::vector<double> v = native::to(native::contiguous(t.detach()), Device::cpu(), DType::f64)
                                .to_vector<double>();
    out.insert(out.end(), v.begin(), v.end());
  };
  for (const Tensor& p : m.named_parameters().values()) add(p);
  for (const Tensor& b : m.named_buffers().values()) add(b);
  return out;
}

void load_flat_state(nn::Module& m, const std::vector<double>& values) {
  NoGradGuard no_grad;
  size_t k = 0;
  auto load = [&](const Tensor& t) {
    float* p = t.data_ptr<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = float(values.at(k++));
  };
  for (const Tensor& p : m.named_parameters().values()) load(p);
  for (const Tensor& b : m.named_buffers().values()) load(b);
  ASSERT_EQ(k, values.size());
}

}  // namespace loom::ddptest
