// nn::init: parameter initialisation, all routed through one interception table.
//
// Note [Init interception]: every function below calls through a thread-local table of
// function pointers. InitTableGuard installs a replacement table for a scope; Fabric's
// init_module(empty_init=true) installs empty_init_table(), whose entries return their
// tensor untouched, so building a huge model costs no initialisation work (and, with lazy
// storage, no memory until first touch). Layers initialise only through these functions,
// so the guard covers them all. Meta tensors are always left untouched.
#pragma once

#include <string>

#include "tensor/tensor.h"

namespace loom::nn::init {

enum class FanMode { fan_in, fan_out };

struct InitTable {
  Tensor (*uniform_)(const Tensor&, double a, double b);
  Tensor (*normal_)(const Tensor&, double mean, double std);
  Tensor (*trunc_normal_)(const Tensor&, double mean, double std, double a, double b);
  Tensor (*constant_)(const Tensor&, double value);
  Tensor (*xavier_uniform_)(const Tensor&, double gain);
  Tensor (*xavier_normal_)(const Tensor&, double gain);
  Tensor (*kaiming_uniform_)(const Tensor&, double a, FanMode mode, const std::string& nonlinearity);
  Tensor (*kaiming_normal_)(const Tensor&, double a, FanMode mode, const std::string& nonlinearity);
};

const InitTable& default_init_table();
const InitTable& empty_init_table();  // every entry returns its tensor untouched
const InitTable& current_init_table();

class InitTableGuard {
 public:
  explicit InitTableGuard(const InitTable& table);
  ~InitTableGuard();
  InitTableGuard(const InitTableGuard&) = delete;
  InitTableGuard& operator=(const InitTableGuard&) = delete;

 private:
  const InitTable* saved_;
};

// (fan_in, fan_out) of a weight: dims 1 and 0 times the receptive field (dims 2..).
std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& t);
// Recommended gain for a nonlinearity (PyTorch's table): linear/sigmoid 1, tanh 5/3,
// relu sqrt(2), leaky_relu sqrt(2 / (1 + a^2)), selu 3/4.
double calculate_gain(const std::string& nonlinearity, double param = 0.01);

// U(a, b).
Tensor uniform_(const Tensor& t, double a = 0.0, double b = 1.0);
// N(mean, std^2).
Tensor normal_(const Tensor& t, double mean = 0.0, double std = 1.0);
// N(mean, std^2) redrawn until inside [a, b] (inverse-CDF method, as PyTorch).
Tensor trunc_normal_(const Tensor& t, double mean = 0.0, double std = 1.0, double a = -2.0,
                     double b = 2.0);
Tensor zeros_(const Tensor& t);
Tensor ones_(const Tensor& t);
Tensor constant_(const Tensor& t, double value);
// Glorot & Bengio 2010: U(-r, r), r = gain * sqrt(6 / (fan_in + fan_out)).
Tensor xavier_uniform_(const Tensor& t, double gain = 1.0);
// Glorot & Bengio 2010: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)).
Tensor xavier_normal_(const Tensor& t, double gain = 1.0);
// He et al. 2015: U(-r, r), r = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a).
Tensor kaiming_uniform_(const Tensor& t, double a = 0.0, FanMode mode = FanMode::fan_in,
                        const std::string& nonlinearity = "leaky_relu");
// He et al. 2015: N(0, std^2), std = gain / sqrt(fan).
Tensor kaiming_normal_(const Tensor& t, double a = 0.0, FanMode mode = FanMode::fan_in,
                       const std::string& nonlinearity = "leaky_relu");

}  // namespace loom::nn::init
