// One training step of the byte-level GPT (nn/gpt) through Fabric on one CPU device, in
// 32-true or bf16-mixed: forward, cross-entropy, fabric.backward, AdamW step, zero_grad.
// gpt_step_torch.py is the PyTorch peer (the same model, shapes, optimizer and precision);
// bench/compare.sh runs both at the same thread counts and prints their ratio.
//
// Napkin math at the defaults (4 layers, d 256, T 128, B 8, vocab 256, 4 heads): 3.32 M
// parameters (12 d^2 + 13 d per block, (256 + 128) x d of embeddings, a d x 256 head), of which
// P = 3.21 M are in Linear weights; N = B T = 1024 tokens. The Linear layers cost 6 N P =
// 19.7 GFLOP per step (forward 2 N P, backward 4 N P), attention's QK^T and AV another
// 3 x 4 B T^2 d per layer = 1.6 GFLOP: ~21 GFLOP, ~0.1 s at 200 GFLOP/s. AdamW passes over
// 3.3 M parameters (~50 MB of traffic, a few ms).
// bf16-mixed runs the Linear GEMMs in bf16 (2x f32's rate where the CPU has AVX512-BF16) and
// adds the casts of weights and activations.
//
//   bench_gpt_step [--precision 32-true|bf16-mixed] [--threads 2] [--steps 10] [--warmup 2]
//                  [--layers 4] [--d 256] [--seq 128] [--batch 8]
// Prints the configuration and one line "gpt_step <precision> threads <n> median_ms <t>".
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "fabric/fabric.h"
#include "kernels/cpu/capability.h"
#include "loom.h"
#include "nn/gpt.h"

namespace {

using namespace loom;
using Clock = std::chrono::steady_clock;

std::string string_flag(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; i += 2)
    if (!std::strcmp(argv[i], name)) return argv[i + 1];
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string precision = string_flag(argc, argv, "--precision", "32-true");
  const int threads = bench::int_flag(argc, argv, "--threads", 2);
  const int steps = bench::int_flag(argc, argv, "--steps", 10);
  const int warmup = bench::int_flag(argc, argv, "--warmup", 2);
  const int layers = bench::int_flag(argc, argv, "--layers", 4);
  const int d = bench::int_flag(argc, argv, "--d", 256);
  const int seq = bench::int_flag(argc, argv, "--seq", 128);
  const int batch = bench::int_flag(argc, argv, "--batch", 8);

  Fabric fabric({.accelerator = "cpu", .strategy = "auto", .devices = 1, .precision = precision});
  fabric.launch();
  set_num_threads(threads);  // after launch, which sets its own default
  fabric.seed_everything(0);
  nn::GPTConfig cfg{.vocab_size = 256, .block_size = seq, .n_layer = layers, .n_head = 4,
                    .n_embd = d};
  auto model = std::make_shared<nn::GPT>(cfg);
  auto opt = std::make_shared<optim::AdamW>(model->parameters(), 1e-3);
  auto [m, o] = fabric.setup(model, opt);

  Tensor idx = randint(0, 256, {batch, seq + 1});
  Tensor x = native::contiguous(native::slice(idx, 1, 0, seq, 1));
  Tensor y = native::contiguous(native::slice(idx, 1, 1, seq + 1, 1)).reshape({-1});
  auto step = [&] {
    Tensor loss = cross_entropy((*m)(x).reshape({-1, 256}), y);
    fabric.backward(loss);
    o->step();
    o->zero_grad();
    return loss.item<double>();
  };
  for (int i = 0; i < warmup; ++i) step();  // AdamW's state, first-touch of the gradients
  std::vector<double> times;
  double loss = 0;
  for (int i = 0; i < steps; ++i) {
    auto t0 = Clock::now();
    loss = step();
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::printf("bench_gpt_step: %s\n", cpu_capability_description().c_str());
  std::printf("GPT %d layers, d %d, T %d, B %d, %.2f M parameters, AdamW, %s, %d thread(s), "
              "%d steps (last loss %.4f)\n",
              layers, d, seq, batch, model->num_parameters() / 1e6, precision.c_str(),
              get_num_threads(), steps, loss);
  std::printf("gpt_step %s threads %d median_ms %.3f min_ms %.3f\n", precision.c_str(),
              get_num_threads(), bench::median(times) * 1e3,
              *std::min_element(times.begin(), times.end()) * 1e3);
  return 0;
}
