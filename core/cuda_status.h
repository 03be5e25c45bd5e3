// What a request for CUDA meets in this build, as one phrase that every such error ends with.
//
// This version of loom has no CUDA backend yet (docs/design.md "CUDA"): every build is CPU-only
// whatever LOOM_CUDA says (cmake/LoomCuda.cmake). Keeping the advice in one place keeps it true:
// when kernels/cuda/ lands, builds without it will advise -DLOOM_CUDA=ON here.
#pragma once

namespace loom {

inline constexpr char kNoCudaBackend[] =
    "this version of loom has no CUDA backend yet; run on the CPU (accelerator 'cpu')";

}  // namespace loom
