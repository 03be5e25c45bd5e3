// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) and the
// normal / uniform fills built on it, vectorised with AVX-512, AVX2 or plain C++ by
// cpu_level() (docs/design.md "CPU capabilities").
//
// Which random word an element gets depends only on (seed, its position p), never on the
// thread count or the instruction set: positions come in groups of 64, and position
// p = 64 g + 16 l + v takes word l of the Philox block with counter (16 g + v) (as two 32-bit
// halves, the upper two counter words 0) and key (seed's two halves). So one 16-lane vector of
// counters gives four vectors of words, each stored as 16 consecutive positions.
//   normal:  words 0 and 1 (and 2 and 3) of a block are one Box-Muller pair: with
//            u1 = 1 - (w0 >> 8) 2^-24 in (0, 1] and u2 = (w1 >> 8) 2^-24, the position of
//            word 0 gets sqrt(-2 ln u1) cos(2 pi u2), that of word 1 the sine (likewise 2, 3);
//   uniform: lo + span (w >> 8) 2^-24, never above `cap` (the largest value below hi).
// Every variant computes this with the same f32 operations in the same order (log and sincos
// are loom's own polynomials, fused multiply-adds explicit), so AVX-512, AVX2 and the scalar
// code give the same bits; tests compare them. The normal values span +-5.77 (24-bit u1).
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// One Philox4x32-10 block.
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

// The Philox word of position p under `seed` (the mapping above).
uint32_t philox_word(uint64_t seed, uint64_t p);

// out[i] = the normal / uniform value of position first + i, for i in [0, n), on this thread.
void philox_normal_f32(float* out, int64_t n, uint64_t seed, uint64_t first, float mean,
                       float std);
void philox_uniform_f32(float* out, int64_t n, uint64_t seed, uint64_t first, float lo,
                        float span, float cap);

}  // namespace loom::kernels::cpu
