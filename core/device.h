// Device: where a tensor's bytes live. cpu, cuda:N, or meta (shape and dtype only, no bytes).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

namespace loom {

enum class DeviceType : uint8_t { cpu, cuda, meta };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;  // the GPU ordinal for cuda; always 0 otherwise

  constexpr Device() = default;
  constexpr Device(DeviceType t, int i = 0) : type(t), index(i) {}  // NOLINT: implicit
  // "cpu", "meta", "cuda", "cuda:1" (also "gpu:1"): throws ValueError naming the valid forms.
  Device(const char* spec) : Device(parse(spec)) {}         // NOLINT: like torch.device("cpu")
  Device(const std::string& spec) : Device(parse(spec)) {}  // NOLINT

  static Device parse(std::string_view spec);
  static constexpr Device cpu() { return {DeviceType::cpu, 0}; }
  static constexpr Device meta() { return {DeviceType::meta, 0}; }
  static constexpr Device cuda(int i = 0) { return {DeviceType::cuda, i}; }

  constexpr bool is_cpu() const { return type == DeviceType::cpu; }
  constexpr bool is_cuda() const { return type == DeviceType::cuda; }
  constexpr bool is_meta() const { return type == DeviceType::meta; }
  std::string str() const;

  friend constexpr bool operator==(const Device&, const Device&) = default;
};

std::ostream& operator<<(std::ostream& os, const Device& d);

}  // namespace loom
