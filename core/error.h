// Errors of the public contract (docs/design.md "Errors"), and LOOM_CHECK for internal invariants.
//
// User mistakes throw ValueError (bad argument or state) or RuntimeError (wrong order or
// environment); the message names the op, the offending values and what to do instead.
// LOOM_CHECK is for invariants the library itself keeps; it adds file:line. Nothing here exits.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace loom {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ValueError : Error {
  using Error::Error;
};
struct RuntimeError : Error {
  using Error::Error;
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
[[noreturn]] void check_failed(const char* file, int line, const char* cond, const std::string& msg);
}  // namespace detail

}  // namespace loom

// Throws loom::Error("file:line: check `cond` failed: msg...") when cond is false.
#define LOOM_CHECK(cond, ...)                                                               \
  do {                                                                                      \
    if (!(cond)) [[unlikely]]                                                               \
      ::loom::detail::check_failed(__FILE__, __LINE__, #cond,                               \
                                   ::loom::detail::concat("" __VA_OPT__(, ) __VA_ARGS__));  \
  } while (0)

// Throws loom::ValueError with the concatenated message when cond is false.
#define LOOM_VALUE_CHECK(cond, ...)                                                         \
  do {                                                                                      \
    if (!(cond)) [[unlikely]]                                                               \
      throw ::loom::ValueError(::loom::detail::concat(__VA_ARGS__));                        \
  } while (0)
