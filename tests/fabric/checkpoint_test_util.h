// A byte-exact picture of a checkpoint state, for tests and fuzzers that check "a refused load
// changed nothing" and "an accepted load restored exactly what was saved". No GoogleTest here:
// fuzz/fuzz_checkpoint.cpp includes it too.
#pragma once

#include <cstring>
#include <map>
#include <string>

#include "fabric/checkpoint.h"
#include "tensor/native.h"

namespace loom::checkpoint_test {

// Appends a length-prefixed field, so that different states never serialise alike.
inline void put(std::string& out, const void* data, size_t n) {
  out.append(reinterpret_cast<const char*>(&n), sizeof n);
  out.append(static_cast<const char*>(data), n);
}
inline void put(std::string& out, const std::string& s) { put(out, s.data(), s.size()); }
inline void put(std::string& out, int64_t v) { put(out, &v, sizeof v); }
inline void put(std::string& out, double v) { put(out, &v, sizeof v); }  // the bits: NaN == NaN

inline void put(std::string& out, const Tensor& t) {
  if (!t.defined()) return put(out, std::string("undefined"));
  Tensor c = native::contiguous(native::to(t, Device::cpu(), t.dtype()));
  put(out, static_cast<int64_t>(c.dtype()));
  put(out, static_cast<int64_t>(c.dim()));
  for (int64_t d : c.sizes()) put(out, d);
  put(out, c.numel() ? c.raw_data_ptr() : nullptr, c.nbytes());
}

inline void put(std::string& out, const std::map<std::string, double>& m) {
  put(out, static_cast<int64_t>(m.size()));
  for (const auto& [k, v] : m) {
    put(out, k);
    put(out, v);
  }
}

inline void put(std::string& out, const optim::Optimizer& o) {
  optim::OptimizerStateDict sd = o.state_dict();
  put(out, static_cast<int64_t>(sd.param_groups.size()));
  for (const auto& g : sd.param_groups) {
    put(out, g.options);
    for (int64_t i : g.params) put(out, i);
  }
  put(out, static_cast<int64_t>(sd.state.size()));
  for (const auto& [i, st] : sd.state) {
    put(out, i);
    put(out, st.step);
    put(out, static_cast<int64_t>(st.buffers.size()));
    for (const auto& [name, t] : st.buffers) {
      put(out, name);
      put(out, t);
    }
  }
}

// Everything a load may change: module tensors (parameters and buffers), optimizer options
// and state, scheduler epoch, base and last lrs (and its optimizer's lrs), plain values, and
// the precision state. Equal strings mean byte-identical states.
inline std::string state_bytes(const CheckpointState& state,
                               const std::map<std::string, double>& precision = {}) {
  std::string out;
  for (const auto& [key, value] : state) {
    put(out, key);
    put(out, static_cast<int64_t>(value.index()));
    if (auto* m = std::get_if<std::shared_ptr<nn::Module>>(&value)) {
      for (const auto& [n, t] : (*m)->state_dict()) {
        put(out, n);
        put(out, t);
      }
    } else if (auto* o = std::get_if<std::shared_ptr<optim::Optimizer>>(&value)) {
      put(out, **o);
    } else if (auto* s = std::get_if<std::shared_ptr<optim::LRScheduler>>(&value)) {
      put(out, (*s)->last_epoch());
      for (double lr : (*s)->base_lrs()) put(out, lr);
      for (double lr : (*s)->get_last_lr()) put(out, lr);
      for (const auto& g : (*s)->optimizer()->param_groups()) put(out, g.options);
    } else if (auto* t = std::get_if<Tensor>(&value)) {
      put(out, *t);
    } else if (auto* d = std::get_if<double>(&value)) {
      put(out, *d);
    } else if (auto* i = std::get_if<int64_t>(&value)) {
      put(out, *i);
    } else {
      put(out, std::get<std::string>(value));
    }
  }
  put(out, precision);
  return out;
}

}  // namespace loom::checkpoint_test
