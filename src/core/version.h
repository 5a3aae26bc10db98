// moesae core: the version string (keep equal to project(VERSION) in CMakeLists.txt). Recorded in every run record.
#pragma once

namespace moesae {

inline constexpr const char* kMoesaeVersion = "0.1.0";

}  // namespace moesae
