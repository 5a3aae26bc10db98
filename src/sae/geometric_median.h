// moesae models: geometric median of a set of points (Weiszfeld iteration), used to initialise b_pre and b_r.
#pragma once
#include "core/tensor.h"

namespace moesae {

// Weiszfeld: start at the mean; repeat up to max_iter: w_i = 1/||p_i - g||, g = sum w_i p_i / sum w_i; stop when
// ||g - g_prev|| < tol. points: host f32 [N, d]. Returns a host vector [d].
Tensor geometric_median(const Tensor& points, int max_iter = 100, double tol = 1e-5);

}  // namespace moesae
