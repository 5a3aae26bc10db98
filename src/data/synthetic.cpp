// moesae data: the synthetic ground-truth generator (see synthetic.h).
#include "data/synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/h5.h"
#include "core/rng.h"
#include "data/activation_file.h"

namespace moesae {
namespace {

constexpr uint64_t kDictionaryStream = 11, kCodeStream = 12;

void validate(const SynthConfig& c) {
  const auto need = [](bool ok, const char* key, const char* rule, double got) {
    if (!ok) fail("synthetic.", key, " must be ", rule, " (got ", got, ")");
  };
  need(c.tokens >= 1, "tokens", ">= 1", static_cast<double>(c.tokens));
  need(c.d >= 1, "d", ">= 1", static_cast<double>(c.d));
  need(c.features >= 1 && c.features <= (int64_t{1} << 31) - 1, "features", "in [1, 2^31)",
       static_cast<double>(c.features));
  need(c.groups >= 1 && c.groups <= c.features, "groups", "in [1, features]", static_cast<double>(c.groups));
  need(c.cluster_tightness >= 0 && c.cluster_tightness < 1, "cluster_tightness", "in [0, 1)", c.cluster_tightness);
  need(c.alpha >= 0, "alpha", ">= 0", c.alpha);
  need(c.active > 0, "active", "> 0", c.active);
  need(c.in_group >= 0 && c.in_group <= 1, "in_group", "in [0, 1]", c.in_group);
  need(c.second_group >= 0 && c.second_group <= 1, "second_group", "in [0, 1]", c.second_group);
  need(c.magnitude_sigma >= 0, "magnitude_sigma", ">= 0", c.magnitude_sigma);
  need(c.noise >= 0, "noise", ">= 0", c.noise);
}

void random_unit(Rng& r, float* v, int64_t d) {
  double norm2 = 0;
  std::vector<double> tmp(static_cast<size_t>(d));
  do {
    norm2 = 0;
    for (int64_t i = 0; i < d; ++i) {
      tmp[i] = r.normal();
      norm2 += tmp[i] * tmp[i];
    }
  } while (norm2 == 0);
  const double inv = 1.0 / std::sqrt(norm2);
  for (int64_t i = 0; i < d; ++i) v[i] = static_cast<float>(tmp[i] * inv);
}

// The scale s with sum_j min(1, s * w_j) = target (w descending, target <= w.size()), by bisection.
double solve_scale(const std::vector<double>& w, double target) {
  const auto expected = [&](double s) {
    double e = 0;
    for (double x : w) e += std::min(1.0, s * x);
    return e;
  };
  double lo = 0, hi = 1.0 / w.back();  // at hi every feature always fires
  for (int it = 0; it < 200; ++it) {
    const double mid = 0.5 * (lo + hi);
    (expected(mid) < target ? lo : hi) = mid;
  }
  return hi;
}

}  // namespace

SyntheticGenerator::SyntheticGenerator(const SynthConfig& config) : config_(config) {
  validate(config);
  const int64_t F = config.features, d = config.d, G = config.groups;
  // Dictionary.
  Rng r(mix_seed(config.seed, kDictionaryStream));
  centres_ = host_tensor(G, d);
  for (int64_t g = 0; g < G; ++g) random_unit(r, centres_.data<float>() + g * d, d);
  dictionary_ = host_tensor(F, d);
  groups_.resize(static_cast<size_t>(F));
  std::vector<float> u(static_cast<size_t>(d));
  const double t = config.cluster_tightness;
  for (int64_t j = 0; j < F; ++j) {
    groups_[j] = static_cast<int32_t>(j % G);
    random_unit(r, u.data(), d);
    const float* c = centres_.data<float>() + groups_[j] * d;
    float* row = dictionary_.data<float>() + j * d;
    double norm2 = 0;
    for (int64_t i = 0; i < d; ++i) {
      const double v = t * c[i] + (1 - t) * u[i];
      row[i] = static_cast<float>(v);
      norm2 += v * v;
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(norm2));
    for (int64_t i = 0; i < d; ++i) row[i] *= inv;
  }
  // Firing probabilities. m = expected number of groups a token belongs to; P(group g is one of them) = m / G.
  std::vector<double> w(static_cast<size_t>(F));
  for (int64_t j = 0; j < F; ++j) w[j] = std::pow(static_cast<double>(j + 1), -config.alpha);
  const double m = G >= 2 ? 1.0 + config.second_group : 1.0;
  const double share_in = m / static_cast<double>(G), share_out = 1.0 - share_in;
  const double frac_in = share_out < 1e-12 ? 1.0 : config.in_group;  // every group active: all in-group
  const double target_in = config.active * frac_in / share_in;
  const double target_out = share_out < 1e-12 ? 0.0 : config.active * (1.0 - frac_in) / share_out;
  if (target_in > static_cast<double>(F) || target_out > static_cast<double>(F))
    fail("synthetic.active = ", config.active, " is unreachable with ", F, " features in ", G,
         " groups (in_group = ", config.in_group, "); use fewer active features or more features");
  const double s_in = target_in > 0 ? solve_scale(w, target_in) : 0.0;
  const double s_out = target_out > 0 ? solve_scale(w, target_out) : 0.0;
  p_in_.resize(F);
  p_out_.resize(F);
  frequencies_.resize(F);
  log_miss_in_.resize(F);
  log_miss_out_.resize(F);
  for (int64_t j = 0; j < F; ++j) {
    p_in_[j] = std::min(1.0, s_in * w[j]);
    p_out_[j] = std::min(1.0, s_out * w[j]);
    frequencies_[j] = share_in * p_in_[j] + share_out * p_out_[j];
    log_miss_in_[j] = std::log1p(-p_in_[j]);  // -inf when p = 1: every trial succeeds
    log_miss_out_[j] = std::log1p(-p_out_[j]);
  }
}

void SyntheticGenerator::generate(int64_t row0, Tensor out, SparseCodes* codes) const {
  if (row0 % kBlockTokens != 0)
    fail("synthetic: generation must start at a multiple of ", kBlockTokens, " tokens (got ", row0, ")");
  if (out.rank() != 2 || out.cols() != config_.d || out.dtype() != DType::F32 || out.device() != Device::CPU)
    fail("synthetic: output must be a host f32 [n, ", config_.d, "] tensor (got ", out.shape_str(), ")");
  const int64_t n = out.rows(), blocks = (n + kBlockTokens - 1) / kBlockTokens;
  std::vector<SparseCodes> block_codes(codes ? static_cast<size_t>(blocks) : 0);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r0 = b * kBlockTokens, r1 = std::min(n, r0 + kBlockTokens);
    generate_block(row0 / kBlockTokens + b, out.row_range(r0, r1), codes ? &block_codes[b] : nullptr);
  }
  if (!codes) return;
  codes->offsets.assign(1, 0);
  codes->features.clear();
  codes->values.clear();
  for (const SparseCodes& bc : block_codes) {
    const int64_t base = codes->offsets.back();
    for (size_t i = 1; i < bc.offsets.size(); ++i) codes->offsets.push_back(base + bc.offsets[i]);
    codes->features.insert(codes->features.end(), bc.features.begin(), bc.features.end());
    codes->values.insert(codes->values.end(), bc.values.begin(), bc.values.end());
  }
}

// One block of tokens. Features are visited in id order; for each, the tokens where it fires are found by
// geometric skipping (expected work: active features + 2 per feature), first among the tokens of its group,
// then among the other tokens.
void SyntheticGenerator::generate_block(int64_t block, Tensor out, SparseCodes* codes) const {
  const int64_t T = out.rows(), d = config_.d, G = config_.groups, F = config_.features, ld = out.ld();
  Rng r(mix_seed(mix_seed(config_.seed, kCodeStream), static_cast<uint64_t>(block)));
  // Token groups and, per group, its member tokens (CSR).
  std::vector<int32_t> g1(T), g2(T, -1);
  std::vector<int64_t> member_start(G + 1, 0);
  for (int64_t t = 0; t < T; ++t) {
    g1[t] = static_cast<int32_t>(r.below(G));
    if (G >= 2 && r.uniform() < config_.second_group)
      g2[t] = static_cast<int32_t>((g1[t] + 1 + static_cast<int64_t>(r.below(G - 1))) % G);
    ++member_start[g1[t] + 1];
    if (g2[t] >= 0) ++member_start[g2[t] + 1];
  }
  for (int64_t g = 0; g < G; ++g) member_start[g + 1] += member_start[g];
  std::vector<int64_t> members(member_start[G]), fill(member_start.begin(), member_start.end() - 1);
  for (int64_t t = 0; t < T; ++t) {
    members[fill[g1[t]]++] = t;
    if (g2[t] >= 0) members[fill[g2[t]]++] = t;
  }
  for (int64_t t = 0; t < T; ++t) std::memset(out.data<float>() + t * ld, 0, d * sizeof(float));

  const double mu = -0.5 * config_.magnitude_sigma * config_.magnitude_sigma;  // lognormal with mean 1
  std::vector<std::pair<int64_t, int32_t>> fired;                               // (token, feature) if codes
  std::vector<float> fired_values;
  // Trials until the next success minus one: floor(log U / log(1 - p)).
  const auto skip = [&](double log_miss) -> int64_t {
    if (log_miss == -INFINITY) return 0;
    const double u = 1.0 - r.uniform();  // (0, 1]
    const double k = std::floor(std::log(u) / log_miss);
    return k > 4e18 ? int64_t{4000000000000000000} : static_cast<int64_t>(k);
  };
  const auto fire = [&](int64_t t, int64_t j) {
    const float c = static_cast<float>(std::exp(mu + config_.magnitude_sigma * r.normal()));
    const float* dj = dictionary_.data<float>() + j * d;
    float* x = out.data<float>() + t * ld;
    for (int64_t i = 0; i < d; ++i) x[i] += c * dj[i];
    if (codes) {
      fired.emplace_back(t, static_cast<int32_t>(j));
      fired_values.push_back(c);
    }
  };
  for (int64_t j = 0; j < F; ++j) {
    const int32_t g = groups_[j];
    if (p_in_[j] > 0) {
      const int64_t n = member_start[g + 1] - member_start[g];
      for (int64_t k = skip(log_miss_in_[j]); k < n; k += 1 + skip(log_miss_in_[j]))
        fire(members[member_start[g] + k], j);
    }
    if (p_out_[j] > 0) {
      for (int64_t t = skip(log_miss_out_[j]); t < T; t += 1 + skip(log_miss_out_[j]))
        if (g1[t] != g && g2[t] != g) fire(t, j);  // a token of group g had its trial in the in-group pass
    }
  }
  if (config_.noise > 0)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < d; ++i) out.data<float>()[t * ld + i] += static_cast<float>(config_.noise * r.normal());
  if (!codes) return;
  std::vector<size_t> order(fired.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return fired[a].first < fired[b].first; });
  codes->offsets.assign(T + 1, 0);
  for (const auto& f : fired) ++codes->offsets[f.first + 1];
  for (int64_t t = 0; t < T; ++t) codes->offsets[t + 1] += codes->offsets[t];
  codes->features.resize(fired.size());
  codes->values.resize(fired.size());
  for (size_t i = 0; i < order.size(); ++i) {
    codes->features[i] = fired[order[i]].second;
    codes->values[i] = fired_values[order[i]];
  }
}

namespace {

// The generation settings recorded as /ground_truth attributes (and compared by synthetic_file_matches).
struct ConfigAttr {
  const char* name;
  double value;
  bool integral;
};
std::vector<ConfigAttr> config_attrs(const SynthConfig& c) {
  return {{"tokens", double(c.tokens), true},          {"d", double(c.d), true},
          {"features", double(c.features), true},      {"groups", double(c.groups), true},
          {"cluster_tightness", c.cluster_tightness, false}, {"alpha", c.alpha, false},
          {"active", c.active, false},                 {"in_group", c.in_group, false},
          {"second_group", c.second_group, false},     {"magnitude_sigma", c.magnitude_sigma, false},
          {"noise", c.noise, false},                   {"seed", double(c.seed), true}};
}

}  // namespace

void write_synthetic(const SynthConfig& config, const std::string& out_path) {
  const SyntheticGenerator gen(config);
  ActivationWriter::Options opt;
  opt.d = config.d;
  opt.f16 = config.f16;
  opt.meta = {"synthetic", "", "", ""};
  ActivationWriter w(out_path, opt);
  // About 16 MiB of rows per piece, a whole number of generation blocks.
  const int64_t block = SyntheticGenerator::kBlockTokens;
  const int64_t piece = std::max<int64_t>(1, (int64_t{16} << 20) / (4 * config.d) / block) * block;
  Tensor rows = host_tensor(std::min(piece, config.tokens), config.d);
  for (int64_t r0 = 0; r0 < config.tokens; r0 += piece) {
    Tensor part = rows.row_range(0, std::min(piece, config.tokens - r0));
    gen.generate(r0, part);
    w.append(part);
  }
  h5::File& f = w.file();
  f.write("/ground_truth/dictionary", gen.dictionary());
  f.write("/ground_truth/group_centres", gen.group_centres());
  f.write_f64("/ground_truth/frequencies", gen.frequencies());
  Tensor groups = host_vector(config.features, DType::I32);
  std::memcpy(groups.data<int32_t>(), gen.groups().data(), gen.groups().size() * sizeof(int32_t));
  f.write("/ground_truth/groups", groups);
  for (const ConfigAttr& a : config_attrs(config)) {
    if (a.integral)
      f.set_attr("/ground_truth", a.name, static_cast<int64_t>(a.value));
    else
      f.set_attr("/ground_truth", a.name, a.value);
  }
  f.set_attr("/", "seed", static_cast<int64_t>(config.seed));
  w.commit();
}

GroundTruth load_ground_truth(const std::string& path) {
  h5::File f(path, h5::File::Mode::Read);
  if (!f.exists("/ground_truth"))
    fail("'", path, "' has no /ground_truth group (it is not a synthetic activation file)");
  GroundTruth gt;
  gt.dictionary = f.read("/ground_truth/dictionary");
  if (gt.dictionary.rank() != 2 || gt.dictionary.dtype() != DType::F32)
    fail("'", path, "': /ground_truth/dictionary must be a 2-D float dataset [features, d]");
  gt.frequencies = f.read_f64("/ground_truth/frequencies");
  Tensor groups = f.read("/ground_truth/groups");
  if (groups.dtype() != DType::I32 || groups.numel() != gt.dictionary.rows() ||
      static_cast<int64_t>(gt.frequencies.size()) != gt.dictionary.rows())
    fail("'", path, "': /ground_truth/frequencies and /ground_truth/groups must have one entry per dictionary row");
  gt.groups.assign(groups.data<int32_t>(), groups.data<int32_t>() + groups.numel());
  return gt;
}

Tensor read_ground_truth(const std::string& path) { return load_ground_truth(path).dictionary; }

bool has_ground_truth(const std::string& path) {
  return h5::File(path, h5::File::Mode::Read).exists("/ground_truth/dictionary");
}

bool synthetic_file_matches(const std::string& path, const SynthConfig& config) {
  h5::File f(path, h5::File::Mode::Read);
  if (!f.exists("/ground_truth")) return false;
  for (const ConfigAttr& a : config_attrs(config))
    if (!f.has_attr("/ground_truth", a.name) || f.attr_double("/ground_truth", a.name) != a.value) return false;
  return true;
}

}  // namespace moesae
