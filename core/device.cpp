#include "core/device.h"

#include <charconv>

#include "core/error.h"

namespace loom {

Device Device::parse(std::string_view spec) {
  auto bad = [&] {
    return ValueError(detail::concat("invalid device '", spec,
                                     "'; expected 'cpu', 'meta', 'cuda' or 'cuda:N' (N >= 0)"));
  };
  if (spec == "cpu") return cpu();
  if (spec == "meta") return meta();
  std::string_view head = spec.substr(0, spec.find(':'));
  if (head != "cuda" && head != "gpu") throw bad();
  if (head.size() == spec.size()) return cuda(0);
  std::string_view num = spec.substr(head.size() + 1);
  int index = -1;
  auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), index);
  if (ec != std::errc() || ptr != num.data() + num.size() || index < 0) throw bad();
  return cuda(index);
}

std::string Device::str() const {
  switch (type) {
    case DeviceType::cpu: return "cpu";
    case DeviceType::meta: return "meta";
    case DeviceType::cuda: return "cuda:" + std::to_string(index);
  }
  return "?";
}

std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

}  // namespace loom
