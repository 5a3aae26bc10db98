// moesae lm: causal multi-head attention over a key/value cache, shared by the llama2.c and GPT-2 models.
#pragma once

namespace moesae::lm {

// T queries at positions pos0 .. pos0 + T - 1 attend to the keys and values of positions 0 .. pos0 + T - 1 (the
// query at position p sees keys 0 .. p): for each query head h, with kv head g = h / (n_heads / n_kv_heads),
//   out[:, h] = softmax(scale * Q_h K_g^T, causal) V_g
// q: [T, ldq] with head h in columns [h*hs, (h+1)*hs); K, V: [pos0 + T, ldkv] with kv head g in columns
// [g*hs, (g+1)*hs); out: [T, ldo]. `att` is scratch of at least T * (pos0 + T) floats. Two sgemm per head.
void causal_attention(const float* q, int ldq, const float* K, const float* V, int ldkv, float* out, int ldo, int T,
                      int pos0, int n_heads, int n_kv_heads, int hs, float scale, float* att);

}  // namespace moesae::lm
