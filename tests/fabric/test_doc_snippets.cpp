// Snippets of the docs/ pages other than the guide, compiled and run. The blocks between
// "[guide: NAME]" and "[end: NAME]" are the pages' snippets line for line (tools/check_docs.sh
// compares them with the blocks marked "<!-- snippet: tests/fabric/test_doc_snippets.cpp NAME -->").
#include <gtest/gtest.h>

#include "fabric/memory_estimate.h"
#include "loom.h"
#include "nn/gpt.h"

using namespace loom;

namespace {

TEST(DocSnippets, EstimateMemoryOfAGptBuiltOnMeta) {
  // [guide: estimate]
  std::shared_ptr<nn::GPT> model;
  {
    DefaultDeviceGuard meta(Device::meta());
    model = std::make_shared<nn::GPT>(nn::GPTConfig{.n_layer = 12, .n_head = 12, .n_embd = 768});
  }
  MemoryEstimate e = estimate_memory(*model, {.strategy = "fsdp", .world_size = 8,
                                              .precision = "bf16-mixed", .batch_size = 8,
                                              .seq_len = 64});
  // [end: estimate]
  // docs/strategies/README.md: fsdp holds 1/N of the f32 parameters (padded by fewer than N
  // elements per unit), and the peak is more than what is held between steps.
  const int64_t p = e.num_parameters;
  EXPECT_GT(p, 80'000'000);
  EXPECT_TRUE(model->parameters()[0].is_meta()) << "estimating must not materialise the model";
  EXPECT_GE(e.parameters, 4 * p / 8);
  EXPECT_LT(e.parameters, 4 * p / 8 + 4 * 8 * int64_t(model->parameters().size()));
  EXPECT_GT(e.peak, e.between_steps);
}

}  // namespace
