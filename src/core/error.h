// moesae core: error type and checks. Every user-facing failure is a moesae::Error with one clear message.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace moesae {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

// Builds a message from the pieces (streamed) and throws moesae::Error.
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  throw Error(os.str());
}

}  // namespace moesae

// Internal invariant (a bug in moesae if it fires, not a user error).
#define MOESAE_CHECK(cond, ...)                                                          \
  do {                                                                                   \
    if (!(cond)) ::moesae::fail("internal check failed: " #cond " (", __FILE__, ":",     \
                                __LINE__, ") ", ##__VA_ARGS__);                          \
  } while (0)
