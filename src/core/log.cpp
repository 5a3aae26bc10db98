#include "core/log.h"

#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace moesae {

void set_log_level(const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off")
    fail("unknown log level '", level, "' (use trace, debug, info, warn, error or off)");
  spdlog::set_level(lvl);
}

std::string format_duration(double s) {
  char buf[32];
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs", s);
  } else if (s < 3600) {
    int m = static_cast<int>(s / 60);
    std::snprintf(buf, sizeof buf, "%dm%02ds", m, static_cast<int>(s - 60 * m));
  } else {
    int h = static_cast<int>(s / 3600);
    std::snprintf(buf, sizeof buf, "%dh%02dm", h, static_cast<int>((s - 3600 * h) / 60));
  }
  return buf;
}

}  // namespace moesae
