// moesae core: logging (spdlog underneath) and a wall-clock timer. Host-only: never include from .cu files.
#pragma once
#include <chrono>
#include <string>

#include <spdlog/spdlog.h>

namespace moesae {

// Sets the global log level from a name (trace|debug|info|warn|error|off); unknown names are an error.
void set_log_level(const std::string& level);

class Timer {
 public:
  Timer() : t0_(std::chrono::steady_clock::now()) {}
  void reset() { t0_ = std::chrono::steady_clock::now(); }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_;
};

// "1h02m", "3m05s", "12.3s": a compact duration for progress lines.
std::string format_duration(double seconds);

}  // namespace moesae
