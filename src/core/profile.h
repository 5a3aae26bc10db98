// moesae core: optional wall-clock accounting of named phases (encoder, selection, decode, ...), used by bench/.
// Disabled by default; when enabled, the backend is synchronised at each phase boundary by the caller's timers.
#pragma once
#include <chrono>
#include <map>
#include <string>

namespace moesae::profile {

void set_enabled(bool on);
bool enabled();
void reset();
// Accumulated seconds per phase since the last reset.
std::map<std::string, double> totals();
void add(const char* phase, double seconds);

// Times the enclosing scope into `phase` when profiling is enabled.
class Scope {
 public:
  explicit Scope(const char* phase) : phase_(enabled() ? phase : nullptr) {
    if (phase_) t0_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (phase_) add(phase_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count());
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* phase_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace moesae::profile
