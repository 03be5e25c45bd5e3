// Rank 0's progress report for train_gpt (header-only helper of examples/train_gpt.cpp).
//
// On a terminal: one line redrawn in place (carriage return) with a bar, the step, the loss,
// tokens per second and the time left. Elsewhere (a CI log, a file, loomrun's prefixed pipes) a
// redrawn line would be noise, so it prints plain lines, about every `plain_every` steps.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace gpt_example {

class Progress {
 public:
  Progress(int64_t first_step, int64_t last_step, bool enabled, int64_t plain_every)
      : first_(first_step),
        last_(last_step),
        enabled_(enabled),
        tty_(enabled && ::isatty(STDOUT_FILENO) == 1),
        every_(plain_every < 1 ? 1 : plain_every),
        start_(Clock::now()) {}

  bool is_terminal() const { return tty_; }

  // After step `step` (1-based) with this step's mean loss and its tokens over all ranks.
  void update(int64_t step, double loss, int64_t tokens) {
    if (!enabled_) return;
    tokens_ += tokens;
    double elapsed = seconds();
    double rate = elapsed > 0 ? double(tokens_) / elapsed : 0.0;
    int64_t done = step - first_, left = last_ - step;
    double eta = done > 0 ? elapsed / double(done) * double(left) : 0.0;
    char line[200];
    if (tty_) {
      const int width = 24;
      int filled = last_ > 0 ? int(double(width) * double(step) / double(last_)) : width;
      std::string bar = std::string(size_t(filled), '#') + std::string(size_t(width - filled), '.');
      std::snprintf(line, sizeof line, "\r[%s] step %lld/%lld  loss %.4f  %.0f tok/s  ETA %s   ",
                    bar.c_str(), (long long)step, (long long)last_, loss, rate, clock(eta).c_str());
      std::fputs(line, stdout);
      std::fflush(stdout);
      drawn_ = true;
    } else if (step % every_ == 0 || step == last_ || step == first_ + 1) {
      std::snprintf(line, sizeof line, "step %lld/%lld  loss %.4f  %.0f tok/s  ETA %s\n",
                    (long long)step, (long long)last_, loss, rate, clock(eta).c_str());
      std::fputs(line, stdout);
      std::fflush(stdout);
    }
  }

  // A line of its own (validation, checkpoint): on a terminal the bar is cleared first and
  // redrawn by the next update.
  void message(const std::string& text) {
    if (!enabled_) return;
    if (tty_ && drawn_) std::fputs("\r\033[K", stdout);
    std::fputs((text + "\n").c_str(), stdout);
    std::fflush(stdout);
    drawn_ = false;
  }

  void finish() {
    if (enabled_ && tty_ && drawn_) std::fputs("\n", stdout);
    drawn_ = false;
  }

  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

  static std::string clock(double s) {
    long t = long(s + 0.5);
    char buf[32];
    if (t >= 3600)
      std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
      std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
    return buf;
  }

 private:
  using Clock = std::chrono::steady_clock;
  int64_t first_, last_;
  bool enabled_, tty_;
  int64_t every_;
  Clock::time_point start_;
  int64_t tokens_ = 0;
  bool drawn_ = false;
};

}  // namespace gpt_example
