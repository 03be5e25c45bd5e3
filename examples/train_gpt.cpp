// The main job: a byte-level GPT learns to write like The Devil's Dictionary (data/corpus/),
// trained through Fabric in 2 CPU processes by default (`bash tools/main.sh`).
//
// What it shows of Fabric: launch (rank 0 re-executes this program for the other ranks, or
// loomrun / a cluster starts them), init_module, setup, setup_dataloaders (each rank gets its
// share of every step's windows), backward, gradient accumulation with no_backward_sync (only
// the last micro-batch of a step synchronises gradients), clip_gradients, a warm-up + cosine
// learning-rate schedule (optim::LinearWarmup), validation averaged over the ranks, checkpoints
// (save, and resume with --resume), the CSV and TensorBoard loggers, and a text sample at the
// end. Rank 0 shows a progress bar on a terminal, plain lines otherwise, and redraws the loss
// plot (loss.png, next to metrics.csv) after every validation.
//
//   train_gpt [--devices 2] [--strategy ddp|fsdp|...] [--precision 32-true|bf16-mixed|...]
//             [--steps 1000] [--resume [CHECKPOINT]] ...      (train_gpt --help for all flags)
//
// Resuming is exact: the windows of step s depend only on (--seed, s), and the checkpoint holds
// the model, the optimizer, the schedule and the step, so a resumed run's next losses are those
// the uninterrupted run had. Under fsdp a checkpoint is sharded (a directory with one file per
// rank and an index: docs/design.md "Sharded checkpoints"), so that it holds the optimizer's
// state too and loads at another world size.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "examples/gpt/progress.h"
#include "examples/gpt/sample.h"
#include "examples/gpt/text_windows.h"
#include "fabric/fabric.h"
#include "fabric/fsdp.h"
#include "fabric/latest_checkpoint.h"
#include "fabric/loggers/csv_logger.h"
#include "fabric/loggers/line_plot.h"
#include "fabric/loggers/tensorboard_logger.h"
#include "kernels/cpu/capability.h"
#include "loom.h"
#include "nn/gpt.h"
#include "optim/adam.h"

#ifndef LOOM_CORPUS_DIR
#define LOOM_CORPUS_DIR "data/corpus"
#endif

using namespace loom;
namespace fs = std::filesystem;

namespace {

struct Flags {
  std::string accelerator = "cpu", strategy = "ddp", precision = "32-true";
  int devices = 2, num_nodes = 1;
  int64_t layers = 4, d_model = 128, heads = 4, seq = 128, batch = 8, grad_accum = 2;
  int64_t steps = 1000, warmup = 100, eval_every = 100, eval_batches = 4, sample_tokens = 300;
  double lr = 3e-3, clip = 1.0, temperature = 0.8;
  uint64_t seed = 1337;
  std::string checkpoint_dir = "runs/train_gpt/checkpoints", log_dir = "runs/train_gpt";
  std::string data = LOOM_CORPUS_DIR, resume, prompt = "LOVE, n.  ";
  bool resume_given = false;
};

std::string checkpoint_path(const std::string& dir, int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "step_%06lld.safetensors", (long long)step);
  return (fs::path(dir) / name).string();
}

// The whole job, in every process.
void train(Fabric& f, const Flags& a, CSVLogger& csv, TensorBoardLogger& tensorboard) {
  f.print(cpu_capability_description());
  const bool sharded = a.strategy == "fsdp";
  const int64_t world = f.world_size();
  f.seed_everything(a.seed);

  auto train_text = gpt_example::read_bytes(a.data + "/devils_dictionary.train.txt");
  auto val_text = gpt_example::read_bytes(a.data + "/devils_dictionary.val.txt");

  std::shared_ptr<nn::GPT> model;
  {
    auto ctx = f.init_module();  // on the device, in the precision's dtype; meta under fsdp
    model = std::make_shared<nn::GPT>(nn::GPTConfig{.vocab_size = 256,
                                                    .block_size = a.seq,
                                                    .n_layer = a.layers,
                                                    .n_head = a.heads,
                                                    .n_embd = a.d_model});
  }
  const int64_t parameters = model->num_parameters();
  optim::AdamWOptions adamw{.lr = a.lr, .beta2 = 0.95, .weight_decay = 0.1};
  const int64_t warmup = std::min(a.warmup, a.steps);  // a short run is all warm-up
  std::shared_ptr<FabricModule> m;
  std::shared_ptr<optim::Optimizer> opt;
  std::shared_ptr<FabricOptimizer> o;
  std::shared_ptr<optim::LRScheduler> schedule;
  if (!sharded) {
    opt = std::make_shared<optim::AdamW>(model->parameters(), a.lr, adamw);
    schedule = std::make_shared<optim::LinearWarmup>(opt, warmup, a.steps, /*min_lr_ratio=*/0.1);
    std::tie(m, o, schedule) = f.setup(model, opt, schedule);
  } else {
    // fsdp replaces the parameters by shards: the optimizer is built from the set-up module.
    m = f.setup_module(model);
    opt = std::make_shared<optim::AdamW>(m->parameters(), a.lr, adamw);
    o = f.setup_optimizers(opt);
    schedule = std::make_shared<optim::LinearWarmup>(opt, warmup, a.steps, 0.1);
  }

  // ---- resume ----
  int64_t start = 0;
  if (a.resume_given) {
    std::string path = a.resume;
    if (path.empty()) {
      std::optional<std::string> latest = latest_checkpoint(a.checkpoint_dir);  // complete ones only
      if (!latest)
        throw ValueError("train_gpt: --resume found no complete step_<N>.safetensors in '" +
                         a.checkpoint_dir + "'; train first, or pass --resume <checkpoint file>");
      path = *latest;
    }
    CheckpointState state{{"model", std::shared_ptr<nn::Module>(m)},
                          {"optimizer", opt},
                          {"scheduler", schedule},
                          {"step", int64_t(0)}};
    f.load(path, state);
    start = std::get<int64_t>(state.at("step"));
    f.print("resumed from ", path, " at step ", start);
  }

  // ---- data: each step uses batch * grad_accum windows per rank ----
  const int64_t per_step = a.batch * a.grad_accum * world;
  auto train_set = std::make_shared<gpt_example::TextWindows>(
      train_text, a.seq, std::max<int64_t>(a.steps - start, 0) * per_step,
      gpt_example::TextWindows::Placement::random, a.seed, start * per_step);
  auto val_set = std::make_shared<gpt_example::TextWindows>(
      val_text, a.seq, a.eval_batches * a.batch * world,
      gpt_example::TextWindows::Placement::evenly_spaced);
  auto [train, val] = f.setup_dataloaders(
      std::make_shared<data::DataLoader>(train_set, data::DataLoaderOptions{.batch_size = a.batch}),
      std::make_shared<data::DataLoader>(val_set, data::DataLoaderOptions{.batch_size = a.batch}));

  auto lm_loss = [&](const data::Batch& b) {
    Tensor logits = (*m)(b[0]);
    return cross_entropy(logits.view({-1, 256}), b[1].reshape({-1}));
  };
  auto evaluate = [&]() {
    NoGradGuard no_grad;
    m->eval();
    double total = 0;
    int64_t n = 0;
    for (data::Batch& b : *val) {
      total += lm_loss(b).item<double>();
      ++n;
    }
    m->train();
    return f.all_reduce(total / double(n));  // the mean over the ranks
  };

  // Only rank 0 logs, so only rank 0 asks the loggers for their folders.
  const std::string plot = f.is_global_zero() ? csv.log_dir() + "/loss.png" : "";
  auto redraw_plot = [&]() {
    if (f.is_global_zero())
      plot_metrics_csv(csv.metrics_path(), plot,
                       start < a.steps ? std::vector<std::string>{"train_loss", "val_loss"}
                                       : std::vector<std::string>{"val_loss"},
                       {.title = "train_gpt: loss (nats per byte)"});
  };
  auto save = [&](int64_t step) {
    fs::create_directories(a.checkpoint_dir);
    CheckpointState state{{"model", std::shared_ptr<nn::Module>(m)},
                          {"optimizer", opt},
                          {"scheduler", schedule},
                          {"step", step}};
    std::string path = checkpoint_path(a.checkpoint_dir, step);
    f.save(path, state);
    if (f.is_global_zero()) {  // keep the last two (a sharded one is a directory)
      auto found = complete_checkpoints(a.checkpoint_dir);
      for (size_t i = 0; i + 2 < found.size(); ++i) fs::remove_all(found[i].second);
    }
    return path;
  };

  if (f.is_global_zero()) {
    csv.log_hyperparams({{"strategy", a.strategy},
                         {"precision", a.precision},
                         {"world_size", std::to_string(world)},
                         {"layers", std::to_string(a.layers)},
                         {"d_model", std::to_string(a.d_model)},
                         {"heads", std::to_string(a.heads)},
                         {"seq", std::to_string(a.seq)},
                         {"batch", std::to_string(a.batch)},
                         {"grad_accum", std::to_string(a.grad_accum)},
                         {"steps", std::to_string(a.steps)},
                         {"lr", std::to_string(a.lr)},
                         {"warmup", std::to_string(a.warmup)},
                         {"seed", std::to_string(a.seed)},
                         {"parameters", std::to_string(parameters)}});
  }
  f.print("model: ", a.layers, " layers, d_model ", a.d_model, ", ", a.heads, " heads, ",
          parameters, " parameters; ", world, " processes (", a.strategy, ", ",
          f.precision().name(), "); ", per_step * a.seq, " tokens per step; corpus ",
          train_text->size(), " training + ", val_text->size(), " validation bytes");

  gpt_example::Progress progress(start, a.steps, f.is_global_zero(),
                                 std::max<int64_t>(1, a.eval_every / 4));
  double first_val = evaluate(), last_val = first_val;
  f.log("val_loss", first_val, start);
  char line[160];
  std::snprintf(line, sizeof line, "step %lld  validation loss %.4f", (long long)start, first_val);
  progress.message(line);
  if (start >= a.steps)
    progress.message("nothing to train: the checkpoint is at --steps already (raise --steps)");
  std::string last_checkpoint;

  auto it = train->begin();
  for (int64_t step = start + 1; step <= a.steps; ++step) {
    double loss_sum = 0;
    for (int64_t micro = 0; micro < a.grad_accum; ++micro) {
      // Gradients are averaged over the ranks once per step, in the last micro-batch's backward.
      auto sync = f.no_backward_sync(*m, /*enabled=*/micro + 1 < a.grad_accum);
      Tensor loss = lm_loss(*it);
      f.backward(loss / double(a.grad_accum));
      loss_sum += loss.item<double>();
      ++it;
    }
    f.clip_gradients(*m, *o, a.clip);
    const double lr = schedule->get_last_lr()[0];  // the rate this step uses
    o->step();
    o->zero_grad();
    schedule->step();
    double train_loss = f.all_reduce(loss_sum / double(a.grad_accum));
    f.log_dict({{"train_loss", train_loss}, {"lr", lr}}, step);
    progress.update(step, train_loss, per_step * a.seq);
    if (step % a.eval_every == 0 || step == a.steps) {
      last_val = evaluate();
      f.log("val_loss", last_val, step);
      last_checkpoint = save(step);
      redraw_plot();
      std::snprintf(line, sizeof line, "step %lld  validation loss %.4f  (%.1f s)", (long long)step,
                    last_val, progress.seconds());
      progress.message(line);
    }
  }
  progress.finish();
  if (last_checkpoint.empty()) redraw_plot();
  if (f.is_global_zero())
    for (auto& logger : f.loggers()) logger->finalize();

  std::string sample;
  if (a.sample_tokens > 0)
    sample = gpt_example::generate(*m, a.prompt, a.sample_tokens, a.seq, a.temperature, a.seed);
  char summary[200];
  std::snprintf(summary, sizeof summary,
                "validation loss %.4f -> %.4f nats per byte over steps %lld..%lld (%.1f s)",
                first_val, last_val, (long long)start, (long long)a.steps, progress.seconds());
  f.print(summary);
  if (!sample.empty())
    f.print("sample (temperature ", a.temperature, "):\n",
            gpt_example::printable(a.prompt + sample));
  if (f.is_global_zero()) {
    f.print("metrics:     ", csv.metrics_path());
    f.print("tensorboard: ", tensorboard.log_dir(), "  (tensorboard --logdir ", a.log_dir, ")");
    f.print("loss plot:   ", plot);
    if (!last_checkpoint.empty()) f.print("checkpoint:  ", last_checkpoint);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Flags a;
  CLI::App app{"Train a byte-level GPT on The Devil's Dictionary with loom's Fabric"};
  app.add_option("--accelerator", a.accelerator, "cpu, cuda, auto")->capture_default_str();
  app.add_option("--strategy", a.strategy, "ddp, fsdp, ddp_spawn, deepspeed, single_device, auto")
      ->capture_default_str();
  app.add_option("--devices", a.devices, "processes (CPU) or GPUs per node")->capture_default_str();
  app.add_option("--num-nodes", a.num_nodes, "nodes (MASTER_ADDR / NODE_RANK or loomrun set them)")
      ->capture_default_str();
  app.add_option("--precision", a.precision, "32-true, bf16-mixed, 16-mixed, bf16-true, 64-true")
      ->capture_default_str();
  app.add_option("--layers", a.layers, "transformer blocks")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--d-model", a.d_model, "embedding width")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--heads", a.heads, "attention heads (must divide --d-model)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--seq", a.seq, "bytes per training window (the model's block size)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(2), int64_t(1) << 20));
  app.add_option("--batch", a.batch, "windows per micro-batch per process")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--grad-accum", a.grad_accum, "micro-batches per optimizer step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--steps", a.steps, "optimizer steps in all (a resumed run goes on to this step)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--lr", a.lr, "peak learning rate (AdamW)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--warmup", a.warmup, "linear warm-up steps before the cosine decay")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--eval-every", a.eval_every,
                 "validate, checkpoint and redraw the plot every N steps")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--eval-batches", a.eval_batches, "validation micro-batches per process")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--checkpoint-dir", a.checkpoint_dir,
                 "where step_<N>.safetensors go (the last two are kept)")
      ->capture_default_str();
  app.add_option(
         "--resume", a.resume,
         "resume from this checkpoint; without a value, from the newest in --checkpoint-dir")
      ->expected(0, 1);
  app.add_option("--seed", a.seed, "model initialisation, data order and sampling")
      ->capture_default_str();
  app.add_option("--log-dir", a.log_dir,
                 "metrics.csv, TensorBoard events and loss.png go to <dir>/logs/version_N")
      ->capture_default_str();
  app.add_option("--sample-tokens", a.sample_tokens, "bytes to generate at the end (0: none)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--temperature", a.temperature, "sampling temperature; 0 is greedy")
      ->capture_default_str();
  app.add_option("--clip", a.clip, "gradient norm clipping threshold")->capture_default_str();
  app.add_option("--data", a.data, "folder with devils_dictionary.{train,val}.txt")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  a.resume_given = app.count("--resume") > 0;
  if (a.d_model % a.heads != 0) {
    std::fprintf(stderr, "train_gpt: --heads %lld must divide --d-model %lld\n", (long long)a.heads,
                 (long long)a.d_model);
    return 2;
  }

  try {
    auto csv = std::make_shared<CSVLogger>(a.log_dir, "logs");
    auto tensorboard = std::make_shared<TensorBoardLogger>(a.log_dir, "logs");
    // fsdp saves sharded checkpoints, which hold its optimizer's state (a full one cannot).
    StrategyArg strategy = a.strategy;
    if (a.strategy == "fsdp")
      strategy = std::make_shared<FSDPStrategy>(FSDPOptions{.state_dict_type = "sharded"});
    Fabric fabric({.accelerator = a.accelerator,
                   .strategy = strategy,
                   .devices = a.devices,
                   .num_nodes = a.num_nodes,
                   .precision = a.precision,
                   .loggers = {csv, tensorboard}});
    fabric.launch([&](Fabric& f) { train(f, a, *csv, *tensorboard); });
  } catch (const std::exception& e) {
    std::string what = e.what();
    std::fprintf(stderr, "%s%s\n",
                 what.rfind("train_gpt:", 0) == 0 ? "" : "train_gpt: ", what.c_str());
    return 1;
  }
  return 0;
}
