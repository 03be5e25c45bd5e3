// The restart loop of elastic_restart.h.
#include "dist/elastic_restart.h"

#include "dist/socket.h"
#include "core/error.h"

namespace loom::dist {

RestartResult run_with_restarts(ProcessLauncher& launcher, const GroupFactory& make_group,
                                const RestartOptions& options) {
  LOOM_VALUE_CHECK(options.max_restarts >= 0, options.limit_name, " ", options.max_restarts,
                   " is invalid; it must be >= 0 (0: no restart)");
  RestartResult out;
  for (int attempt = 0;; ++attempt) {
    std::vector<ProcessSpec> ranks = make_group(attempt);
    LOOM_VALUE_CHECK(!ranks.empty(), options.who, ": attempt ", attempt, " has no rank to start");
    for (ProcessSpec& spec : ranks) {
      spec.env_overrides[kRestartCountVariable] = std::to_string(attempt);
      launcher.spawn(spec);
    }
    out.last = launcher.wait();
    out.restarts = attempt;
    if (out.last.ok()) return out;
    // Only a rank's own failure is worth a restart: a forwarded signal means "stop", and
    // nothing in this loop sets wait()'s timeout.
    if (!out.last.first_failure) break;
    out.failures.push_back(*out.last.first_failure);
    if (attempt == options.max_restarts) break;
    const RankExit& failed = *out.last.first_failure;
    std::string line = detail::concat(
        options.who, ": rank ", failed.rank, " ", failed.describe(), "; stopped the ",
        ranks.size() > 1 ? "other ranks" : "job", "; restarting all ", ranks.size(),
        ranks.size() == 1 ? " rank" : " ranks", " (restart ", attempt + 1, " of ",
        options.max_restarts, ", ", kRestartCountVariable, "=", attempt + 1, ")\n");
    write_all(options.log_fd, line.data(), line.size());
  }
  out.message = out.last.message;
  if (out.last.first_failure && options.max_restarts > 0) {
    out.message += detail::concat("; no restart left (", options.limit_name, " ",
                                  options.max_restarts, ", all used)");
  }
  return out;
}

}  // namespace loom::dist
