// moesae eval: row-normalised host copies of dictionaries, the input of every cosine-similarity metric
// (decoder redundancy, ground-truth recovery). Cosines are then plain dot products, computed blockwise by sgemm.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace moesae {

// Checks that `m` is a host f32 matrix [rows, cols] with finite entries; `what` names it in the error message.
void check_host_matrix(const Tensor& m, const char* what);

// Contiguous copy of the rows of `m` scaled to unit L2 norm (norms accumulated in double). A zero row stays zero,
// so its cosine with every row is 0. Fails (naming `what`) on a non-host, non-f32 or non-finite matrix.
std::vector<float> unit_rows(const Tensor& m, const char* what);

// Rows per block of the blockwise cosine computations: a block pair is one 2048 x 2048 sgemm (16 MiB of output).
constexpr int64_t kCosineBlockRows = 2048;

}  // namespace moesae
