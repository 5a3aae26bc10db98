#include "core/profile.h"

namespace moesae::profile {
namespace {
bool g_enabled = false;
std::map<std::string, double>& table() {
  static std::map<std::string, double> t;
  return t;
}
}  // namespace

void set_enabled(bool on) { g_enabled = on; }
bool enabled() { return g_enabled; }
void reset() { table().clear(); }
std::map<std::string, double> totals() { return table(); }
void add(const char* phase, double seconds) { table()[phase] += seconds; }

}  // namespace moesae::profile
