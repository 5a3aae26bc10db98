#include "lm/cross_entropy.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "lm/documents.h"

namespace moesae::lm {

std::vector<LossResult> cross_entropies(const LanguageModel& model, const Tokenizer& tok,
                                        const std::vector<std::string>& documents, int ctx, long long max_predicted,
                                        const std::vector<ForwardOptions>& variants) {
  const LmShape& s = model.shape();
  if (ctx < 2 || ctx > s.seq_len) fail("cross-entropy: --ctx ", ctx, " must be in [2, ", s.seq_len, "] (seq_len)");
  if (variants.empty()) fail("cross-entropy: no forward variant given");
  const size_t nv = variants.size();
  std::vector<ForwardOptions> opts = variants;
  for (auto& o : opts) o.logits = ForwardOptions::Logits::All;
  LossResult counts;
  std::vector<double> sums(nv, 0.0);
  const int V = s.vocab_size;
  for_each_context(tok, documents, ctx, [&](const std::vector<int>& ids, int start, int len, size_t) {
    const int n = static_cast<int>(ids.size());
    if (start == 0) ++counts.documents;
    ++counts.contexts;
    // Positions of this context that predict a token (the budget applies to all variants alike).
    int m = 0;
    while (m < len && start + m + 1 < n && !(max_predicted > 0 && counts.predicted + m >= max_predicted)) ++m;
    const std::vector<int> window(ids.begin() + start, ids.begin() + start + len);
    for (size_t v = 0; v < nv; ++v) {
      const std::vector<float> logits = model.forward(window, opts[v]);
      for (int j = 0; j < m; ++j) {
        const float* row = logits.data() + static_cast<size_t>(j) * V;
        double mx = row[0];
        for (int i = 1; i < V; ++i) mx = std::max(mx, static_cast<double>(row[i]));
        double se = 0;
        for (int i = 0; i < V; ++i) se += std::exp(static_cast<double>(row[i]) - mx);
        sums[v] += (mx + std::log(se)) - static_cast<double>(row[ids[start + j + 1]]);
      }
    }
    counts.predicted += m;
    return !(max_predicted > 0 && counts.predicted >= max_predicted);
  });
  if (counts.predicted == 0) fail("cross-entropy: no token to predict (no document has two tokens or more)");
  std::vector<LossResult> out(nv, counts);
  for (size_t v = 0; v < nv; ++v) out[v].mean_ce = sums[v] / static_cast<double>(counts.predicted);
  return out;
}

LossResult cross_entropy(const LanguageModel& model, const Tokenizer& tok, const std::vector<std::string>& documents,
                         int ctx, long long max_predicted, const ForwardOptions& opt) {
  return cross_entropies(model, tok, documents, ctx, max_predicted, {opt})[0];
}

}  // namespace moesae::lm
