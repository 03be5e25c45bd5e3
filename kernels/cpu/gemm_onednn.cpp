#include "kernels/cpu/gemm_onednn.h"

#include "core/error.h"  // header only: LOOM_CHECK

#if LOOM_WITH_ONEDNN

#include <dlfcn.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/capability.h"

namespace loom::kernels::cpu {
namespace {

using OmpSetNumThreads = void (*)(int);

// oneDNN's OpenMP runtime is found through the process's symbols rather than linked: loom
// does not build with -fopenmp, and must call the very runtime oneDNN was built against.
OmpSetNumThreads omp_set_num_threads_fn() {
  static OmpSetNumThreads fn =
      reinterpret_cast<OmpSetNumThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  return fn;
}

// Before the first JIT kernel: oneDNN may use no more than the highest level this process may
// use (LOOM_CPU_CAPABILITY's cap). A level lowered in process (CpuLevelGuard) is followed by
// gemm.cpp, which stops calling oneDNN for what that level lacks.
void cap_isa_once() {
  static const bool done = [] {
    dnnl_cpu_isa_t isa = dnnl_cpu_isa_all;
    switch (CpuLevel(max_cpu_level_index())) {
      case CpuLevel::avx512: isa = dnnl_cpu_isa_avx512_core; break;
      case CpuLevel::avx512_bf16: isa = dnnl_cpu_isa_avx512_core_bf16; break;
      case CpuLevel::amx: isa = dnnl_cpu_isa_avx512_core_amx; break;
      default: isa = dnnl_cpu_isa_avx2; break;
    }
    (void)dnnl_set_max_cpu_isa(isa);  // refused once a kernel exists: nothing to do then
    return true;
  }();
  (void)done;
}

// Every thread that calls oneDNN: one OpenMP thread, so no team (and no spinning workers).
void single_threaded() {
  thread_local bool set = false;
  if (!set) {
    omp_set_num_threads_fn()(1);
    cap_isa_once();
    set = true;
  }
}

// ---- matmul primitives (bf16, and f32 where brgemm wins), cached by shape ----

struct MatmulKey {
  bool bf16, ta, tb, bias;
  int64_t m, n, k, lda, ldb, ldc;
  float beta;
  auto tie() const { return std::tie(bf16, ta, tb, bias, m, n, k, lda, ldb, ldc, beta); }
  bool operator<(const MatmulKey& o) const { return tie() < o.tie(); }
};

struct MatmulPrimitive {
  dnnl::matmul prim;
  dnnl::memory::desc a, b, c, bias, scratchpad;
};

constexpr size_t kMaxCachedPrimitives = 256;
std::mutex g_cache_mu;
std::map<MatmulKey, std::shared_ptr<const MatmulPrimitive>> g_cache;
std::atomic<int64_t> g_created{0}, g_created_f32{0};

const dnnl::engine& engine() {
  static const dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// The primitive for `key`, or null when oneDNN has no kernel worth calling for it: for bf16 one
// that multiplies in bf16 (a reference or f32-emulating implementation would be slower than
// loom's converting path), for f32 its brgemm kernel (else dnnl_sgemm is as good).
std::shared_ptr<const MatmulPrimitive> matmul_primitive(const MatmulKey& key) {
  {
    std::lock_guard<std::mutex> lock(g_cache_mu);
    auto it = g_cache.find(key);
    if (it != g_cache.end()) return it->second;
  }
  using dt = dnnl::memory::data_type;
  using dims = dnnl::memory::dims;
  const dt type = key.bf16 ? dt::bf16 : dt::f32;
  std::shared_ptr<const MatmulPrimitive> p;
  try {
    // Row-major (m, k) and (k, n), each read transposed (unit row stride) when ta / tb.
    dnnl::memory::desc a({key.m, key.k}, type, key.ta ? dims{1, key.lda} : dims{key.lda, 1});
    dnnl::memory::desc b({key.k, key.n}, type, key.tb ? dims{1, key.ldb} : dims{key.ldb, 1});
    dnnl::memory::desc c({key.m, key.n}, type, dims{key.ldc, 1});
    dnnl::memory::desc bias;
    if (key.bias) bias = dnnl::memory::desc({1, key.n}, type, dims{key.n, 1});
    dnnl::primitive_attr attr;
    // The caller's scratchpad, not the library's: a cached primitive runs on several pool
    // threads at once (the blocks of one split GEMM share a shape), and oneDNN's own
    // scratchpad is one buffer per primitive in this build, so two threads would share it
    // (wrong values in about one 512 x 40 x 1024 product in 20 on two threads).
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (key.beta != 0.0f) {
      dnnl::post_ops ops;
      ops.append_sum(key.beta);
      attr.set_post_ops(ops);
    }
    dnnl::matmul::primitive_desc pd(
        key.bias ? dnnl::matmul::desc(a, b, bias, c) : dnnl::matmul::desc(a, b, c), attr, engine());
    const std::string impl = pd.impl_info_str();
    const bool wanted = key.bf16 ? impl.find("bf16") != std::string::npos ||
                                       impl.find("amx") != std::string::npos
                                 : impl.find("brg") != std::string::npos;
    if (wanted) {
      p = std::make_shared<const MatmulPrimitive>(
          MatmulPrimitive{dnnl::matmul(pd), a, b, c, bias, pd.scratchpad_desc()});
      (key.bf16 ? g_created : g_created_f32).fetch_add(1, std::memory_order_relaxed);
    }
  } catch (const dnnl::error&) {
    p = nullptr;  // no kernel for this shape: remembered as such
  }
  std::lock_guard<std::mutex> lock(g_cache_mu);
  if (g_cache.size() >= kMaxCachedPrimitives) g_cache.clear();
  g_cache.emplace(key, p);
  return p;
}

bool run_matmul(const MatmulKey& key, const void* a, const void* b, const void* bias, void* c) {
  single_threaded();
  std::shared_ptr<const MatmulPrimitive> p = matmul_primitive(key);
  if (!p) return false;
  thread_local dnnl::stream stream(engine());
  // This thread's scratchpad, grown to the largest a primitive has asked for, 64-byte aligned.
  thread_local std::vector<char> scratch;
  const size_t need = p->scratchpad.get_size() + 64;
  if (need > scratch.size()) scratch.resize(need);
  void* scratch_at = scratch.data() + (64 - reinterpret_cast<uintptr_t>(scratch.data()) % 64) % 64;
  dnnl::memory am(p->a, engine(), const_cast<void*>(a));
  dnnl::memory bm(p->b, engine(), const_cast<void*>(b));
  dnnl::memory cm(p->c, engine(), c);
  dnnl::memory sm(p->scratchpad, engine(), scratch_at);
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}, {DNNL_ARG_SCRATCHPAD, sm}};
  if (key.bias)
    args.emplace(DNNL_ARG_BIAS, dnnl::memory(p->bias, engine(), const_cast<void*>(bias)));
  p->prim.execute(stream, args);
  stream.wait();
  return true;
}

}  // namespace

bool onednn_available() {
  static const bool ok = omp_set_num_threads_fn() != nullptr;
  return ok;
}

std::string onednn_version() {
  if (!onednn_available()) return "oneDNN unusable (no OpenMP runtime symbol)";
  const dnnl_version_t* v = dnnl_version();
  return detail::concat("oneDNN ", v->major, ".", v->minor, ".", v->patch);
}

void onednn_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  single_threaded();
  dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, a, lda, b, ldb,
                                beta, c, ldc);
  LOOM_CHECK(st == dnnl_success, "gemm: dnnl_sgemm failed with status ", int(st));
}

bool onednn_bf16_gemm(int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda,
                      const uint16_t* b, int64_t ldb, float beta, uint16_t* c, int64_t ldc) {
  return run_matmul({true, false, false, false, m, n, k, lda, ldb, ldc, beta}, a, b, nullptr, c);
}

bool onednn_matmul_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a,
                       int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                       const float* bias) {
  return run_matmul({false, ta, tb, bias != nullptr, m, n, k, lda, ldb, ldc, beta}, a, b, bias, c);
}

int64_t onednn_primitives_created() { return g_created.load(std::memory_order_relaxed); }
int64_t onednn_f32_primitives_created() { return g_created_f32.load(std::memory_order_relaxed); }

}  // namespace loom::kernels::cpu

#else  // built without oneDNN

namespace loom::kernels::cpu {

bool onednn_available() { return false; }
std::string onednn_version() { return "oneDNN not built in"; }
void onednn_sgemm(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                  int64_t, float, float*, int64_t) {
  LOOM_CHECK(false, "gemm: loom was built without oneDNN");
}
bool onednn_bf16_gemm(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*,
                      int64_t, float, uint16_t*, int64_t) {
  return false;
}
bool onednn_matmul_f32(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                       int64_t, float, float*, int64_t, const float*) {
  return false;
}
int64_t onednn_primitives_created() { return 0; }
int64_t onednn_f32_primitives_created() { return 0; }

}  // namespace loom::kernels::cpu

#endif
