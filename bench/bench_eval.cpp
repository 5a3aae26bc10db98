// Evaluation metrics on the CPU beside a numpy implementation of the same definitions (bench/numpy_eval_reference.py)
// in the same run, on the same inputs:
//   1. decoder redundancy at the paper's size (F = 24576, d = 768, E = 64): global (max cosine over all latents),
//      intra-expert and inter-expert (seeded random groups of n = F / E);
//   2. activation similarity (Eq. A.3, by counting) and the exact Appendix D histogram of pairwise overlaps k_ij, on a
//      realistic sparse code: N tokens, k = 32 of F = 24576 latents with power-law frequencies (a few latents on a large
//      share of tokens, a long tail), as trained SAEs have;
//   3. with --record RUN.h5: the time evaluate_sae adds to the reconstruction pass on that run's held-out data (the
//      quickstart-size check: d = 64, F = 2048, 20000 tokens), with the verb metrics when the run has an lm: section.
// Results of both sides are compared. Prints ratios. Not a test: see docs/performance.md.
#include <omp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "bench_util.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/activation_stream.h"
#include "eval/activation_similarity.h"
#include "eval/evaluate.h"
#include "eval/redundancy.h"
#include "eval/similarity.h"
#include "eval/specialization.h"
#include "run/train_run.h"

using namespace moesae;
namespace fs = std::filesystem;

namespace {

template <typename T>
void write_raw(const std::string& path, const T* data, size_t n) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data), std::streamsize(n * sizeof(T)));
}


// Random decoder rows with planted near-duplicates: pairs inside experts and across them.
Tensor decoder_with_duplicates(int64_t f, int64_t d, int64_t n, int64_t pairs, uint64_t seed) {
  Tensor w = host_tensor(f, d);
  Rng rng(seed);
  for (int64_t i = 0; i < w.numel(); ++i) w.host<float>()[i] = static_cast<float>(rng.normal());
  for (int64_t p = 0; p < pairs; ++p) {
    const int64_t src = int64_t(rng.below(uint64_t(f)));
    const int64_t dst = p % 2 == 0 ? (src / n) * n + int64_t(rng.below(uint64_t(n))) : int64_t(rng.below(uint64_t(f)));
    if (dst == src) continue;
    for (int64_t c = 0; c < d; ++c)
      w.host<float>()[dst * d + c] = w.host<float>()[src * d + c] + 0.2f * static_cast<float>(rng.normal());
  }
  return w;
}

// ids [N, k]: per token k distinct latents drawn with probability proportional to (rank + 1)^-alpha, ranks assigned
// to latent ids by a random permutation.
std::vector<int32_t> power_law_code(int64_t n, int64_t k, int64_t f, double alpha, uint64_t seed) {
  std::vector<double> cdf(static_cast<size_t>(f));
  double total = 0;
  for (int64_t r = 0; r < f; ++r) cdf[size_t(r)] = total += std::pow(double(r + 1), -alpha);
  const std::vector<int64_t> id_of_rank = random_latent_permutation(f, seed + 1);
  std::vector<int32_t> ids(static_cast<size_t>(n * k));
  Rng rng(seed);
  std::vector<int32_t> row;
  for (int64_t t = 0; t < n; ++t) {
    row.clear();
    while (int64_t(row.size()) < k) {
      const int64_t r = std::lower_bound(cdf.begin(), cdf.end(), rng.uniform() * total) - cdf.begin();
      const int32_t id = static_cast<int32_t>(id_of_rank[size_t(std::min(r, f - 1))]);
      if (std::find(row.begin(), row.end(), id) == row.end()) row.push_back(id);
    }
    std::copy(row.begin(), row.end(), ids.begin() + t * k);
  }
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moesae evaluation metrics vs numpy"};
  int64_t latents = 24576, d = 768, experts = 64, tokens = 20000, k = 32, overlap_tokens = 20000, pairs = 400;
  double alpha = 0.6;
  int threads = 0, reps = 2;
  std::string python = "/usr/bin/python3",
              script = std::string(MOESAE_SOURCE_DIR) + "/bench/numpy_eval_reference.py", record;
  bool no_numpy = false, skip_redundancy = false;
  app.add_option("--latents", latents, "F")->capture_default_str();
  app.add_option("--d", d, "decoder width")->capture_default_str();
  app.add_option("--experts", experts, "E")->capture_default_str();
  app.add_option("--pairs", pairs, "planted near-duplicate pairs")->capture_default_str();
  app.add_option("--tokens", tokens, "tokens of the sparse code")->capture_default_str();
  app.add_option("--k", k, "active latents per token")->capture_default_str();
  app.add_option("--alpha", alpha, "power-law exponent of the latent frequencies")->capture_default_str();
  app.add_option("--overlap-tokens", overlap_tokens, "tokens of the k_ij histogram (0: all)")->capture_default_str();
  app.add_option("--reps", reps, "timed repetitions of our side (best kept)")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0: all)");
  app.add_option("--python", python, "python with numpy (and scipy) for the peer");
  app.add_option("--record", record, "also time evaluate_sae on this run record's held-out data");
  app.add_flag("--no-numpy", no_numpy, "skip the numpy peer");
  app.add_flag("--skip-redundancy", skip_redundancy, "skip part 1");
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) omp_set_num_threads(threads);
  const int nt = omp_get_max_threads();
  const std::string dir = (fs::temp_directory_path() / ("moesae-bench-eval-" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  std::printf("threads %d, sgemm peak %.0f GFLOP/s\n", nt, bench::sgemm_peak_gflops(2048, 3));
  const std::string env = "OMP_NUM_THREADS=" + std::to_string(nt) + " OPENBLAS_NUM_THREADS=" + std::to_string(nt) + " ";

  if (!skip_redundancy) {
    const int64_t n = latents / experts;
    const Tensor w = decoder_with_duplicates(latents, d, n, pairs, 1);
    std::vector<float> best;
    const double t_global = bench::best_of(reps, [&] { best = max_cosine_per_latent(w); });
    const Redundancy red = summarize_redundancy(best, 0.9);
    ExpertSimilarity es;
    const double t_experts = bench::best_of(reps, [&] { es = expert_similarity(w, n, 0.9, 0); });
    // Exact work of the global pass: the upper-triangle blocks of the F x F product.
    const double flops = double(latents) * double(latents + 2048) * double(d);
    std::printf("\n1. decoder redundancy, F=%lld d=%lld E=%lld (n=%lld), %lld planted pairs\n", (long long)latents,
                (long long)d, (long long)experts, (long long)n, (long long)pairs);
    std::printf("   ours   global %.2f s (%.0f GFLOP/s on the upper-triangle blocks), intra+inter %.3f s\n", t_global,
                flops / t_global / 1e9, t_experts);
    std::printf("          redundancy %.6f (%lld latents), intra %.6f, inter %.6f\n", red.redundant_fraction,
                (long long)red.redundant, es.intra, es.inter);
    if (!no_numpy) {
      write_raw(dir + "/w.f32", w.host<float>(), size_t(w.numel()));
      const std::vector<int64_t> perm = random_latent_permutation(latents, 0);
      write_raw(dir + "/perm.i64", perm.data(), perm.size());
      const bench::PeerOutput peer = bench::run_peer(
          env + python + " " + script + " --w-dec " + dir + "/w.f32 --perm " + dir + "/perm.i64 --latents " +
          std::to_string(latents) + " --d " + std::to_string(d) + " --experts " + std::to_string(experts));
      if (peer.rc != 0) {
        std::printf("   numpy peer unavailable (exit %d)\n", peer.rc);
      } else {
        const nlohmann::json j = nlohmann::json::parse(peer.stdout_text);
        const double ng = j["global_s"], ne = j["experts_s"];
        std::printf("   numpy  global %.2f s, intra+inter %.3f s (numpy %s)\n", ng, ne,
                    j["numpy"].get<std::string>().c_str());
        std::printf("   ratio  global %.2fx, intra+inter %.2fx faster than numpy\n", ng / t_global, ne / t_experts);
        const bool same = j["redundant"] == red.redundant &&
                          j["intra_redundant"].get<double>() == es.intra * double(latents) &&
                          j["inter_redundant"].get<double>() == es.inter * double(latents);
        double ours_sum = 0;
        for (float v : best) ours_sum += v;
        std::printf("   same result: %s (redundant %lld/%lld, intra %lld, inter %lld; sum of max cosines differs by "
                    "%.2e)\n",
                    same ? "yes" : "NO", (long long)j["redundant"].get<int64_t>(), (long long)red.redundant,
                    (long long)j["intra_redundant"].get<int64_t>(), (long long)j["inter_redundant"].get<int64_t>(),
                    std::fabs(ours_sum - j["max_cosine_sum"].get<double>()));
      }
    }
  }

  {
    const std::vector<int32_t> ids = power_law_code(tokens, k, latents, alpha, 7);
    ActiveSets all(latents), head(latents);
    for (int64_t t = 0; t < tokens; ++t) {
      std::vector<int32_t> s(ids.begin() + t * k, ids.begin() + (t + 1) * k);
      all.add_set(s);
      if (overlap_tokens <= 0 || t < overlap_tokens) head.add_set(s);
    }
    const std::vector<int64_t> counts = all.fire_counts();
    const int64_t max_count = *std::max_element(counts.begin(), counts.end());
    double eq = 0;
    const double t_eq = bench::best_of(reps, [&] { eq = activation_similarity_from_counts(all.fire_counts(), tokens, double(k)); });
    OverlapDistribution od;
    const double t_hist = bench::best_of(reps, [&] { od = overlap_distribution(head, double(k)); });
    std::printf("\n2. activation similarity, N=%lld tokens, k=%lld of F=%lld, power law alpha %.2f (most frequent "
                "latent on %.1f%% of tokens)\n",
                (long long)tokens, (long long)k, (long long)latents, alpha, 100.0 * double(max_count) / double(tokens));
    std::printf("   ours   Eq. A.3 by counting %.4f s = %.6g; histogram over %lld tokens (%lld pairs, %lld shared "
                "incidences) %.3f s, mean k_ij %.4f\n",
                t_eq, eq, (long long)head.tokens(), (long long)od.pairs, (long long)od.shared, t_hist, od.mean_overlap);
    std::printf("          histogram k_ij = 0..4: %lld %lld %lld %lld %lld\n", (long long)od.pairs_with_overlap[0],
                (long long)(od.pairs_with_overlap.size() > 1 ? od.pairs_with_overlap[1] : 0),
                (long long)(od.pairs_with_overlap.size() > 2 ? od.pairs_with_overlap[2] : 0),
                (long long)(od.pairs_with_overlap.size() > 3 ? od.pairs_with_overlap[3] : 0),
                (long long)(od.pairs_with_overlap.size() > 4 ? od.pairs_with_overlap[4] : 0));
    if (!no_numpy) {
      write_raw(dir + "/ids.i32", ids.data(), ids.size());
      const bench::PeerOutput peer =
          bench::run_peer(env + python + " " + script + " --ids " + dir + "/ids.i32 --tokens " + std::to_string(tokens) +
                          " --k " + std::to_string(k) + " --latents " + std::to_string(latents) +
                          " --overlap-tokens " + std::to_string(overlap_tokens));
      if (peer.rc != 0) {
        std::printf("   numpy peer unavailable (exit %d)\n", peer.rc);
      } else {
        const nlohmann::json j = nlohmann::json::parse(peer.stdout_text);
        const double ne = j["eq_a3_s"], nh = j["histogram_s"];
        std::printf("   numpy  Eq. A.3 by np.bincount %.4f s = %.6g; histogram (scipy.sparse A A^T in row blocks) %s\n",
                    ne, j["eq_a3"].get<double>(), nh < 0 ? "unavailable (no scipy)" : (std::to_string(nh) + " s").c_str());
        std::printf("   ratio  Eq. A.3 %.1fx, histogram %.1fx faster than numpy\n", ne / t_eq, nh > 0 ? nh / t_hist : 0.0);
        bool same = std::fabs(j["eq_a3"].get<double>() - eq) <= 1e-12 * std::fabs(eq);
        if (j.contains("histogram")) {
          std::vector<int64_t> h = j["histogram"];
          std::vector<int64_t> ours = od.pairs_with_overlap;
          ours.resize(h.size(), 0);
          same = same && h == ours;
        }
        std::printf("   same result: %s\n", same ? "yes" : "NO");
      }
    }
  }

  if (!record.empty()) {
    auto be = make_cpu_backend(threads);
    RunConfig cfg;
    auto sae = load_sae_from_record(record, *be, &cfg);
    ActivationStream stream(cfg.data, cfg.train.seed);
    std::unique_ptr<lm::Tokenizer> tok;
    if (cfg.lm.enabled()) tok = load_eval_tokenizer(cfg.lm);
    EvalResult r0, r1;
    const double t_rec = bench::best_of(reps, [&] {
      EvalReader reader = stream.eval_reader();
      r0 = evaluate_reconstruction(*sae, reader, cfg.train.batch_size, cfg.eval.max_tokens);
    });
    const double t_all = bench::best_of(reps, [&] {
      EvalReader reader = stream.eval_reader();
      r1 = evaluate_sae(*sae, reader, cfg.eval, cfg.train.batch_size, nullptr, EvalTokens{&stream.file(), tok.get()});
    });
    std::printf("\n3. evaluate_sae on %s (%s, F=%d, E=%d, k=%d, d=%d, %.0f held-out tokens)\n", record.c_str(),
                to_string(cfg.model.arch), cfg.model.dict_size, cfg.model.experts, cfg.model.k, cfg.model.d,
                r1.scalars["eval_tokens"]);
    std::printf("   reconstruction pass %.3f s; everything %.3f s: %.3f s added (redundancy, similarity, overlaps%s)\n",
                t_rec, t_all, t_all - t_rec, tok ? ", verbs" : "");
    for (const char* key : {"activation_similarity", "overlap_mean", "redundancy", "intra_expert_redundancy",
                            "inter_expert_redundancy", "specialization_tokens", "specialization_top10",
                            "activation_similarity_verbs"})
      if (r1.scalars.count(key)) std::printf("   %-28s %.6g\n", key, r1.scalars[key]);
  }
  fs::remove_all(dir);
  return 0;
}
