#include "data/config.h"

#include "core/error.h"

namespace moesae {

Prefetch parse_prefetch(const std::string& name) {
  if (name == "auto") return Prefetch::Auto;
  if (name == "true") return Prefetch::On;
  if (name == "false") return Prefetch::Off;
  fail("unknown prefetch '", name, "' (expected auto, true or false)");
}

const char* prefetch_name(Prefetch p) { return p == Prefetch::On ? "true" : p == Prefetch::Off ? "false" : "auto"; }

}  // namespace moesae
