// moesae eval: MaxAct (Bricken et al. 2023; paper Appendix A.3, stage 1): for each latent, the rows of an activation
// file on which it activates most strongly, with their token contexts, as JSON for automated-interpretability
// pipelines (schema in docs/metrics.md, "MaxAct").
//
// Activation = the latent's value z in the model's sparse code (unweighted: the router weight w_i is not applied);
// only z > 0 counts. Order: larger z first, ties to the smaller row. Memory: one min-heap of at most `top` entries per
// tracked latent (F * top * 16 bytes for every latent), whatever the number of rows scanned; contexts are read from
// the file afterwards in bounded blocks.
#pragma once
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "data/activation_file.h"
#include "lm/tokenizer.h"

namespace moesae {

struct MaxActEntry {
  float value = 0;
  int64_t row = 0;
};

class MaxActCollector {
 public:
  // Tracks `latents` (each in [0, dict_size), no duplicates; empty: every latent) with `top` >= 1 entries each.
  MaxActCollector(int64_t dict_size, int64_t top, std::vector<int64_t> latents = {});

  // The sparse code (host i32 ids / f32 vals [B, k], -1: empty slot) of file rows [row0, row0 + B).
  void add(const Tensor& ids, const Tensor& vals, int64_t row0);

  int64_t dict_size() const { return dict_size_; }
  int64_t top() const { return top_; }
  int64_t rows_seen() const { return rows_; }
  const std::vector<int64_t>& latents() const { return latents_; }
  // For latents()[t]: its best entries (descending value, ties to the smaller row) and the rows it fired on.
  std::vector<MaxActEntry> best(size_t t) const;
  int64_t fire_count(size_t t) const { return fired_[t]; }

 private:
  int64_t dict_size_, top_, rows_ = 0;
  std::vector<int64_t> latents_;
  std::vector<int32_t> slot_;  // latent -> index in latents_ (-1: not tracked)
  std::vector<std::vector<MaxActEntry>> heaps_;
  std::vector<int64_t> fired_;
};

struct MaxActContext {
  int64_t before = 8;  // tokens shown before the activating one (within its context)
  int64_t after = 4;   // and after it
};

// The `latents` array of the JSON document: one object per tracked latent, in latents() order. With token ids in the
// file, each example carries its context window (clipped to the row's own model context when the file has positions);
// with a tokenizer, the decoded pieces and text too. `latents_per_expert` (n) gives each latent's expert l / n.
nlohmann::json maxact_latents_json(const MaxActCollector& c, const ActivationFile& file, const lm::Tokenizer* tok,
                                   const MaxActContext& ctx, int64_t latents_per_expert);

}  // namespace moesae
