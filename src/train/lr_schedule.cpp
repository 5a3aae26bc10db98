#include <cmath>

#include "train/config.h"

namespace moesae {

double default_lr(int64_t dict_size) { return 2e-4 / std::sqrt(static_cast<double>(dict_size) / 16384.0); }

}  // namespace moesae
