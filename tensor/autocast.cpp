#include "tensor/autocast.h"

#include "core/error.h"

namespace loom {
namespace {
thread_local AutocastState t_state;
}

AutocastState autocast_state() { return t_state; }

AutocastGuard::AutocastGuard(bool enabled, DType dtype) : saved_(t_state) {
  if (enabled && !is_low_precision(dtype))
    throw ValueError(detail::concat("autocast: dtype must be f16 or bf16, got ", dtype));
  t_state = {enabled, dtype};
}
AutocastGuard::~AutocastGuard() { t_state = saved_; }

}  // namespace loom
