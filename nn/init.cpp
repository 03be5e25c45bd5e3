#include "nn/init.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom::nn::init {
namespace {

bool skip(const Tensor& t) { return !t.defined() || t.is_meta() || t.numel() == 0; }

Tensor do_uniform(const Tensor& t, double a, double b) {
  if (!skip(t)) fill_uniform(t, a, b);
  return t;
}
Tensor do_normal(const Tensor& t, double mean, double std) {
  if (!skip(t)) fill_normal(t, mean, std);
  return t;
}
Tensor do_trunc_normal(const Tensor& t, double mean, double std, double a, double b) {
  if (skip(t)) return t;
  // Inverse CDF: u ~ U(Phi(lo), Phi(hi)), x = mean + std * sqrt(2) * erfinv(2u - 1).
  auto phi = [](double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); };
  double lo = phi((a - mean) / std), hi = phi((b - mean) / std);
  Tensor u = native::empty(t.sizes(), DType::f64, Device::cpu());
  fill_uniform(u, 2.0 * lo - 1.0, 2.0 * hi - 1.0);
  double* p = u.data_ptr<double>();
  for (int64_t i = 0; i < u.numel(); ++i) {
    // erfinv by Newton iterations from a good start (Giles 2010 approximation).
    double y = std::clamp(p[i], -1.0 + 1e-15, 1.0 - 1e-15);
    double w = -std::log((1.0 - y) * (1.0 + y)), x;
    if (w < 5.0) {
      w -= 2.5;
      x = 2.81022636e-08;
      for (double c : {3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                       -0.00125372503, -0.00417768164, 0.246640727, 1.50140941})
        x = c + x * w;
    } else {
      w = std::sqrt(w) - 3.0;
      x = -0.000200214257;
      for (double c : {0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                       -0.0076224613, 0.00943887047, 1.00167406, 2.83297682})
        x = c + x * w;
    }
    x *= y;
    for (int k = 0; k < 2; ++k)
      x -= (std::erf(x) - y) / (2.0 / std::sqrt(M_PI) * std::exp(-x * x));
    p[i] = std::clamp(mean + std * std::sqrt(2.0) * x, a, b);
  }
  native::copy_(t, u);
  return t;
}
Tensor do_constant(const Tensor& t, double v) {
  if (!skip(t)) native::fill_(t, v);
  return t;
}

double fan_for(const Tensor& t, FanMode mode) {
  auto [in, out] = calculate_fan_in_and_fan_out(t);
  return double(mode == FanMode::fan_in ? in : out);
}

Tensor do_xavier_uniform(const Tensor& t, double gain) {
  if (skip(t)) return t;
  auto [in, out] = calculate_fan_in_and_fan_out(t);
  double r = gain * std::sqrt(6.0 / double(in + out));
  return do_uniform(t, -r, r);
}
Tensor do_xavier_normal(const Tensor& t, double gain) {
  if (skip(t)) return t;
  auto [in, out] = calculate_fan_in_and_fan_out(t);
  return do_normal(t, 0.0, gain * std::sqrt(2.0 / double(in + out)));
}
Tensor do_kaiming_uniform(const Tensor& t, double a, FanMode mode, const std::string& nl) {
  if (skip(t)) return t;
  double r = calculate_gain(nl, a) * std::sqrt(3.0 / fan_for(t, mode));
  return do_uniform(t, -r, r);
}
Tensor do_kaiming_normal(const Tensor& t, double a, FanMode mode, const std::string& nl) {
  if (skip(t)) return t;
  return do_normal(t, 0.0, calculate_gain(nl, a) / std::sqrt(fan_for(t, mode)));
}

const InitTable kDefault{do_uniform,        do_normal,         do_trunc_normal,
                         do_constant,       do_xavier_uniform, do_xavier_normal,
                         do_kaiming_uniform, do_kaiming_normal};
const InitTable kEmpty{
    [](const Tensor& t, double, double) { return t; },
    [](const Tensor& t, double, double) { return t; },
    [](const Tensor& t, double, double, double, double) { return t; },
    [](const Tensor& t, double) { return t; },
    [](const Tensor& t, double) { return t; },
    [](const Tensor& t, double) { return t; },
    [](const Tensor& t, double, FanMode, const std::string&) { return t; },
    [](const Tensor& t, double, FanMode, const std::string&) { return t; }};

thread_local const InitTable* t_table = &kDefault;

}  // namespace

const InitTable& default_init_table() { return kDefault; }
const InitTable& empty_init_table() { return kEmpty; }
const InitTable& current_init_table() { return *t_table; }

InitTableGuard::InitTableGuard(const InitTable& table) : saved_(t_table) { t_table = &table; }
InitTableGuard::~InitTableGuard() { t_table = saved_; }

std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& t) {
  if (t.dim() < 2)
    throw ValueError(detail::concat("init: fan in and fan out need a tensor with >= 2 dims, got ",
                                    shape_str(t.sizes())));
  int64_t receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

double calculate_gain(const std::string& nl, double param) {
  if (nl == "linear" || nl == "sigmoid" || nl.starts_with("conv")) return 1.0;
  if (nl == "tanh") return 5.0 / 3.0;
  if (nl == "relu") return std::sqrt(2.0);
  if (nl == "leaky_relu") return std::sqrt(2.0 / (1.0 + param * param));
  if (nl == "selu") return 0.75;
  throw ValueError("calculate_gain: unsupported nonlinearity '" + nl +
                   "'; valid: linear, conv*, sigmoid, tanh, relu, leaky_relu, selu");
}

// The public functions: one line each, through the current table, without recording history.
Tensor uniform_(const Tensor& t, double a, double b) {
  NoGradGuard g;
  return t_table->uniform_(t, a, b);
}
Tensor normal_(const Tensor& t, double mean, double std) {
  NoGradGuard g;
  return t_table->normal_(t, mean, std);
}
Tensor trunc_normal_(const Tensor& t, double mean, double std, double a, double b) {
  NoGradGuard g;
  return t_table->trunc_normal_(t, mean, std, a, b);
}
Tensor constant_(const Tensor& t, double value) {
  NoGradGuard g;
  return t_table->constant_(t, value);
}
Tensor zeros_(const Tensor& t) { return constant_(t, 0.0); }
Tensor ones_(const Tensor& t) { return constant_(t, 1.0); }
Tensor xavier_uniform_(const Tensor& t, double gain) {
  NoGradGuard g;
  return t_table->xavier_uniform_(t, gain);
}
Tensor xavier_normal_(const Tensor& t, double gain) {
  NoGradGuard g;
  return t_table->xavier_normal_(t, gain);
}
Tensor kaiming_uniform_(const Tensor& t, double a, FanMode mode, const std::string& nl) {
  NoGradGuard g;
  return t_table->kaiming_uniform_(t, a, mode, nl);
}
Tensor kaiming_normal_(const Tensor& t, double a, FanMode mode, const std::string& nl) {
  NoGradGuard g;
  return t_table->kaiming_normal_(t, a, mode, nl);
}

}  // namespace loom::nn::init
