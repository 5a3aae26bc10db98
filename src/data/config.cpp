#include "data/config.h"

#include "core/error.h"

namespace moesae {

Prefetch parse_prefetch(const std::string& name) {
  if (name == "auto") return Prefetch::Auto;
  if (name == "on") return Prefetch::On;
  if (name == "off") return Prefetch::Off;
  fail("unknown prefetch '", name, "' (expected auto, on or off)");
}

const char* prefetch_name(Prefetch p) { return p == Prefetch::On ? "on" : p == Prefetch::Off ? "off" : "auto"; }

}  // namespace moesae
