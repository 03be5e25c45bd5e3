// What the CPU can run, detected once per process (docs/design.md "CPU capabilities").
//
// cpuid says what the CPU implements and xgetbv what the operating system saves on a context
// switch: AVX-512 counts only when XCR0 enables the opmask and ZMM state, AMX only when it
// enables the tile state. The flags collapse into one level, the highest ISA family whose
// every flag is present; kernels with variants pick theirs from cpu_level().
//
// LOOM_CPU_CAPABILITY=default|avx2|avx512|avx512_bf16|amx caps the level (a cap above what the
// machine has changes nothing); any other value is a loom::ValueError, thrown by the first call
// that reads the level, naming the variable, the value and the accepted values. Tests lower the
// level in process with CpuCapabilityGuard, never above the cap of the environment.
//
// "default" is the build's baseline: AVX2 + FMA + F16C when loom is built with LOOM_AVX2 (the
// default), SSE2 otherwise; it differs from "avx2" only for code that checks for avx2 itself.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

namespace loom {

enum class CpuLevel : int { default_ = 0, avx2 = 1, avx512 = 2, avx512_bf16 = 3, amx = 4 };

// The raw flags, each true only when the OS also enables the register state it needs.
struct CpuFlags {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_bf16 = false;
  bool amx_tile = false, amx_bf16 = false;
  std::string to_string() const;  // "avx2 fma f16c avx512f ..." (those present)
};

struct CpuCapability {
  CpuLevel level = CpuLevel::default_;     // what kernels use: detected, capped
  CpuLevel detected = CpuLevel::default_;  // what the machine supports
  CpuFlags flags;
  std::string to_string() const;  // "avx512_bf16 (detected avx512_bf16; flags avx2 fma ...)"
};

const char* to_string(CpuLevel level);
std::ostream& operator<<(std::ostream& out, CpuLevel level);
std::ostream& operator<<(std::ostream& out, const CpuCapability& cap);

// The capability in force. The first call detects and reads LOOM_CPU_CAPABILITY.
CpuCapability cpu_capability();
// cpu_capability().level, cheap enough for every kernel call.
CpuLevel cpu_level();

// A level name as LOOM_CPU_CAPABILITY takes it: nullopt for unset or empty, else the level or
// a loom::ValueError naming the variable, the value and the accepted values.
std::optional<CpuLevel> parse_cpu_capability(const char* value);

// Caps the level in this process at min(cap, detected, the environment's cap); returns the
// level before. For tests and benchmarks that compare variants.
CpuLevel set_cpu_level(CpuLevel cap);

// Restores the level on scope exit.
class CpuLevelGuard {
 public:
  explicit CpuLevelGuard(CpuLevel cap) : saved_(set_cpu_level(cap)) {}
  ~CpuLevelGuard() { set_cpu_level(saved_); }
  CpuLevelGuard(const CpuLevelGuard&) = delete;
  CpuLevelGuard& operator=(const CpuLevelGuard&) = delete;

 private:
  CpuLevel saved_;
};

// Every level from default_ up to the highest this process may use (for tests).
int max_cpu_level_index();

// One line for logs and benchmark headers: the level, the detected level, the flags and the
// GEMM backend, e.g. "cpu: avx512_bf16 (detected avx512_bf16; avx2 fma f16c avx512f avx512bw
// avx512vl avx512dq avx512_bf16); gemm: oneDNN 2.6.3 f32/bf16, OpenBLAS f64".
std::string cpu_capability_description();

namespace kernels::cpu {
// Set by kernels/cpu/gemm.cpp: the GEMM backends at the current level, for the description.
std::string gemm_backend_description();
}  // namespace kernels::cpu

}  // namespace loom
