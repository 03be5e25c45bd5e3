// TensorBoardLogger (see tensorboard_logger.h).
#include "fabric/loggers/tensorboard_logger.h"

#include <filesystem>

namespace loom {

TensorBoardLogger::TensorBoardLogger(std::string root_dir, std::string name,
                                     std::optional<int> version)
    : dir_(std::move(root_dir), std::move(name), version) {}

void TensorBoardLogger::log_metrics(const std::map<std::string, double>& metrics, int64_t step) {
  if (!writer_) writer_ = std::make_unique<EventFileWriter>(dir_.path());
  writer_->write_scalars(step, metrics, wall_time_now());
}

void TensorBoardLogger::log_hyperparams(const std::map<std::string, std::string>& params) {
  for (const auto& [key, value] : params) hparams_[key] = value;
  write_hparams_yaml((std::filesystem::path(dir_.path()) / "hparams.yaml").string(), hparams_);
}

void TensorBoardLogger::finalize() { writer_.reset(); }

}  // namespace loom
