// moesae models: parameter initialisation shared by the models.
#pragma once
#include "backend/backend.h"
#include "core/rng.h"

namespace moesae {

// Fills w with U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's default Linear init), drawn on the host.
void init_uniform_fan_in(Backend& be, Tensor w, int64_t fan_in, Rng& rng);
// The rows [first_row, first_row + w.rows()) of what init_uniform_fan_in draws for a [total_rows, w.cols()] matrix
// (the same numbers, the same generator state after), holding only those rows in memory.
void init_uniform_fan_in_rows(Backend& be, Tensor w, int64_t fan_in, int64_t first_row, int64_t total_rows, Rng& rng);
// The identity matrix into a square tensor.
void init_identity(Backend& be, Tensor w);

}  // namespace moesae
