#include "kernels/cpu/capability.h"

#include <cpuid.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <sstream>
#include <string_view>

#include "core/error.h"  // header only: the error types

namespace loom {
namespace {

constexpr const char* kLevelNames[] = {"default", "avx2", "avx512", "avx512_bf16", "amx"};
constexpr const char* kAccepted = "default, avx2, avx512, avx512_bf16, amx";

uint64_t xgetbv0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

CpuFlags detect_flags() {
  CpuFlags f;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = ecx & (1u << 27), avx = ecx & (1u << 28);
  if (!osxsave || !avx) return f;  // no AVX state saved: nothing beyond SSE is usable
  const uint64_t xcr0 = xgetbv0();
  const bool os_ymm = (xcr0 & 0x6) == 0x6;           // SSE + AVX state
  const bool os_zmm = os_ymm && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_tile = (xcr0 & (3ull << 17)) == (3ull << 17);  // XTILECFG, XTILEDATA
  if (!os_ymm) return f;
  f.fma = ecx & (1u << 12);
  f.f16c = ecx & (1u << 29);
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 7) return f;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const unsigned max_sub = eax;
  f.avx2 = ebx & (1u << 5);
  if (os_zmm) {
    f.avx512f = ebx & (1u << 16);
    f.avx512dq = ebx & (1u << 17);
    f.avx512bw = ebx & (1u << 30);
    f.avx512vl = ebx & (1u << 31);
  }
  if (os_tile && os_zmm) {
    f.amx_bf16 = edx & (1u << 22);
    f.amx_tile = edx & (1u << 24);
  }
  if (max_sub >= 1 && os_zmm) {
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    f.avx512_bf16 = eax & (1u << 5);
  }
  return f;
}

CpuLevel level_of(const CpuFlags& f) {
  if (!(f.avx2 && f.fma && f.f16c)) return CpuLevel::default_;
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq)) return CpuLevel::avx2;
  if (!f.avx512_bf16) return CpuLevel::avx512;
  if (!(f.amx_tile && f.amx_bf16)) return CpuLevel::avx512_bf16;
  return CpuLevel::amx;
}

struct State {
  CpuFlags flags;
  CpuLevel detected;
  CpuLevel allowed;  // min(detected, LOOM_CPU_CAPABILITY)
  std::atomic<int> level;
};

State make_state() {
  CpuFlags f = detect_flags();
  CpuLevel detected = level_of(f);
  CpuLevel cap = parse_cpu_capability(std::getenv("LOOM_CPU_CAPABILITY")).value_or(CpuLevel::amx);
  CpuLevel allowed = std::min(detected, cap);
  return State{f, detected, allowed, {int(allowed)}};
}

// Built by the first call; a bad LOOM_CPU_CAPABILITY throws from that call (and again from the
// next one: a function-local static whose initialiser threw is retried).
State& state() {
  static State s = make_state();
  return s;
}

}  // namespace

const char* to_string(CpuLevel level) { return kLevelNames[int(level)]; }

std::ostream& operator<<(std::ostream& out, CpuLevel level) { return out << to_string(level); }

std::string CpuFlags::to_string() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512vl, "avx512vl");
  add(avx512dq, "avx512dq");
  add(avx512_bf16, "avx512_bf16");
  add(amx_tile, "amx_tile");
  add(amx_bf16, "amx_bf16");
  return s.empty() ? "none" : s;
}

std::string CpuCapability::to_string() const {
  return detail::concat(loom::to_string(level), " (detected ", loom::to_string(detected),
                        "; ", flags.to_string(), ")");
}

std::ostream& operator<<(std::ostream& out, const CpuCapability& cap) {
  return out << cap.to_string();
}

std::optional<CpuLevel> parse_cpu_capability(const char* value) {
  if (!value || !*value) return std::nullopt;
  std::string_view text(value);
  for (int i = 0; i < int(std::size(kLevelNames)); ++i)
    if (text == kLevelNames[i]) return CpuLevel(i);
  throw ValueError(detail::concat("LOOM_CPU_CAPABILITY='", text, "' is invalid: it must be one of ",
                                  kAccepted, " (a cap on the instruction sets loom's kernels use; "
                                  "unset it to use everything the CPU has)"));
}

CpuCapability cpu_capability() {
  State& s = state();
  return {CpuLevel(s.level.load(std::memory_order_relaxed)), s.detected, s.flags};
}

CpuLevel cpu_level() { return CpuLevel(state().level.load(std::memory_order_relaxed)); }

CpuLevel set_cpu_level(CpuLevel cap) {
  State& s = state();
  return CpuLevel(s.level.exchange(int(std::min(cap, s.allowed)), std::memory_order_relaxed));
}

int max_cpu_level_index() { return int(state().allowed); }

std::string cpu_capability_description() {
  return detail::concat("cpu: ", cpu_capability().to_string(),
                        "; gemm: ", kernels::cpu::gemm_backend_description());
}

}  // namespace loom
