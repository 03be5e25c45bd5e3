#include "core/error.h"

namespace loom::detail {

void check_failed(const char* file, int line, const char* cond, const std::string& msg) {
  throw Error(concat(file, ":", line, ": check `", cond, "` failed", msg.empty() ? "" : ": ", msg));
}

}  // namespace loom::detail
