// Restores the thread count (kernels/cpu/parallel.h) a test changes, also when an assertion
// ends the test early.
#pragma once

#include "kernels/cpu/parallel.h"

namespace loom {

struct ThreadsGuard {
  int saved = get_num_threads();
  ~ThreadsGuard() { set_num_threads(saved); }
};

}  // namespace loom
