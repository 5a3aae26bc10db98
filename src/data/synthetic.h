// moesae data: synthetic activations with a known ground-truth dictionary, so that feature recovery can be
// measured exactly.
//
// Dictionary: `features` unit vectors in R^d in `groups` clusters. Feature j belongs to group j % groups; each
// group has a random unit centre c_g and D_j = normalize(t * c_g + (1 - t) * u_j) with u_j a random unit vector
// and t = cluster_tightness (0: unclustered; the mean cosine of two features of one group is about
// t^2 / (t^2 + (1-t)^2) for large d).
// Codes: every token has a primary group (uniform) and, with probability `second_group`, a second one. A feature
// of one of the token's groups fires with probability min(1, s_in * w_j), any other feature with
// min(1, s_out * w_j), where w_j = (j+1)^-alpha (power law: feature 0 is the most frequent). s_in and s_out are
// solved so that a token has `active` active features on average, a fraction `in_group` of them from its own
// groups. Magnitudes are lognormal with mean 1 (sigma = magnitude_sigma).
// Token: x = sum_j c_j D_j + noise * N(0, I).
// Generation works in blocks of kBlockTokens tokens, each with its own RNG stream derived from (seed, block), so
// the output depends only on the config, blocks can be generated in parallel, and memory stays bounded.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace moesae {

struct SynthConfig {
  int64_t tokens = 1 << 20;
  int64_t d = 64;
  int64_t features = 512;
  int64_t groups = 8;
  double cluster_tightness = 0.4;  // in [0, 1)
  double alpha = 1.0;              // power-law exponent of feature frequencies (0: all equally frequent)
  double active = 8.0;             // expected number of active features per token
  double in_group = 0.9;           // expected fraction of a token's active features from its own group(s)
  double second_group = 0.25;      // probability that a token also draws from a second group
  double magnitude_sigma = 0.5;    // lognormal sigma of code magnitudes (mean magnitude 1)
  double noise = 0.0;              // std of isotropic Gaussian noise per coordinate
  uint64_t seed = 0;
  bool f16 = false;                // store activations as f16
};

// Sparse codes of a range of tokens, one CSR row per token (features ascending within a token).
struct SparseCodes {
  std::vector<int64_t> offsets;  // tokens + 1 entries
  std::vector<int32_t> features;
  std::vector<float> values;
};

class SyntheticGenerator {
 public:
  static constexpr int64_t kBlockTokens = 4096;

  explicit SyntheticGenerator(const SynthConfig& config);  // validates the config (errors name the key)

  const SynthConfig& config() const { return config_; }
  const Tensor& dictionary() const { return dictionary_; }        // [features, d], unit rows
  const Tensor& group_centres() const { return centres_; }        // [groups, d], unit rows
  const std::vector<int32_t>& groups() const { return groups_; }  // group of each feature
  // Marginal probability that each feature is active in a token (non-increasing in the feature id).
  const std::vector<double>& frequencies() const { return frequencies_; }

  // Tokens [row0, row0 + out.rows()) into `out` (host f32 [n, d]); row0 must be a multiple of kBlockTokens.
  // If `codes` is given it receives their sparse codes.
  void generate(int64_t row0, Tensor out, SparseCodes* codes = nullptr) const;

 private:
  void generate_block(int64_t block, Tensor out, SparseCodes* codes) const;

  SynthConfig config_;
  Tensor dictionary_, centres_;
  std::vector<int32_t> groups_;
  std::vector<double> frequencies_, p_in_, p_out_;  // marginal, in-group and out-of-group firing probabilities
  std::vector<double> log_miss_in_, log_miss_out_;  // log(1 - p) for geometric skipping
};

// Writes `config.tokens` synthetic activations to an HDF5 activation file (atomically, in bounded memory):
// dataset `activations` [tokens, d] plus /ground_truth/{dictionary [F, d] f32, frequencies [F] f64,
// groups [F] i32, group_centres [G, d] f32}; /ground_truth attributes record every config value.
void write_synthetic(const SynthConfig& config, const std::string& out_path);

struct GroundTruth {
  Tensor dictionary;                // [features, d]
  std::vector<double> frequencies;  // [features]
  std::vector<int32_t> groups;      // [features]
};
GroundTruth load_ground_truth(const std::string& path);
// The ground-truth dictionary [features, d] of a synthetic activation file.
Tensor read_ground_truth(const std::string& path);
// Whether an activation file carries a ground-truth dictionary (it was written by write_synthetic).
bool has_ground_truth(const std::string& path);
// Whether a synthetic activation file was generated with exactly these settings (its /ground_truth attributes).
bool synthetic_file_matches(const std::string& path, const SynthConfig& config);

}  // namespace moesae
