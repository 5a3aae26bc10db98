#include "lm/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace moesae::lm {

void causal_attention(const float* q, int ldq, const float* K, const float* V, int ldkv, float* out, int ldo, int T,
                      int pos0, int n_heads, int n_kv_heads, int hs, float scale, float* att) {
  const int S = pos0 + T;  // keys visible to the last query
  const int group = n_heads / n_kv_heads;
  for (int h = 0; h < n_heads; ++h) {
    const int g = h / group;
    // att[T, S] = scale * Q_h K_g^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, S, hs, scale, q + h * hs, ldq, K + g * hs, ldkv, 0.f, att,
                S);
    // Causal softmax: the query at position pos0 + t sees keys 0 .. pos0 + t. Rows are independent.
#pragma omp parallel for schedule(static) if (T >= 16)
    for (int t = 0; t < T; ++t) {
      float* a = att + static_cast<size_t>(t) * S;
      const int last = pos0 + t;
      float mx = a[0];
      for (int s = 1; s <= last; ++s) mx = std::max(mx, a[s]);
      float sum = 0.f;
      for (int s = 0; s <= last; ++s) {
        a[s] = std::exp(a[s] - mx);
        sum += a[s];
      }
      const float inv = 1.f / sum;
      for (int s = 0; s <= last; ++s) a[s] *= inv;
      for (int s = last + 1; s < S; ++s) a[s] = 0.f;
    }
    // out[:, head h] = att V_g
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, S, 1.f, att, S, V + g * hs, ldkv, 0.f,
                out + h * hs, ldo);
  }
}

}  // namespace moesae::lm
