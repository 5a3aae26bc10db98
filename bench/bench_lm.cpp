// Language-model runtime throughput on the CPU: activation extraction and forward passes of stories260K (real
// weights, TinyStories text) and of a GPT-2-small-shaped model (d = 768, 12 blocks, 12 heads, vocabulary 50257,
// random weights written to a temporary model.safetensors), beside the sgemm peak measured in the same run and a
// plain PyTorch GPT-2 forward (bench/torch_lm_reference.py) on the same weights and tokens, whose logits are also
// compared with ours. Prints ratios. Not a test: see docs/performance.md.
#include <omp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "bench_util.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "lm/cross_entropy.h"
#include "lm/data_path.h"
#include "lm/documents.h"
#include "lm/gpt2.h"
#include "lm/llama.h"
#include "lm/llama_tokenizer.h"
#include "run/lm_extract.h"

using namespace moesae;
namespace fs = std::filesystem;

namespace {

// GPT-2 small's shapes with GPT-2's initialisation (N(0, 0.02) matrices and embeddings, unit LayerNorm gains, zero
// biases), as a Hugging Face model.safetensors + config.json in `dir`.
void write_random_gpt2(const std::string& dir, int d, int layers, int heads, int vocab, int n_ctx, uint64_t seed) {
  Rng rng(seed);
  std::vector<safetensors::Entry> entries;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, int fill) {  // fill: 0 zeros, 1 ones, 2 random
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    Tensor t = host_vector(n);
    float* p = t.data<float>();
    for (int64_t i = 0; i < n; ++i) p[i] = fill == 0 ? 0.f : fill == 1 ? 1.f : static_cast<float>(0.02 * rng.normal());
    entries.push_back({name, t, shape});
  };
  const int64_t D = d, H = 4 * d;
  add("wte.weight", {vocab, D}, 2);
  add("wpe.weight", {n_ctx, D}, 2);
  for (int l = 0; l < layers; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    add(h + "ln_1.weight", {D}, 1);
    add(h + "ln_1.bias", {D}, 0);
    add(h + "attn.c_attn.weight", {D, 3 * D}, 2);
    add(h + "attn.c_attn.bias", {3 * D}, 0);
    add(h + "attn.c_proj.weight", {D, D}, 2);
    add(h + "attn.c_proj.bias", {D}, 0);
    add(h + "ln_2.weight", {D}, 1);
    add(h + "ln_2.bias", {D}, 0);
    add(h + "mlp.c_fc.weight", {D, H}, 2);
    add(h + "mlp.c_fc.bias", {H}, 0);
    add(h + "mlp.c_proj.weight", {H, D}, 2);
    add(h + "mlp.c_proj.bias", {D}, 0);
  }
  add("ln_f.weight", {D}, 1);
  add("ln_f.bias", {D}, 0);
  fs::create_directories(dir);
  safetensors::write(dir + "/model.safetensors", entries);
  std::ofstream(dir + "/config.json") << "{\"model_type\": \"gpt2\", \"n_embd\": " << d << ", \"n_layer\": " << layers
                                      << ", \"n_head\": " << heads << ", \"n_positions\": " << n_ctx
                                      << ", \"vocab_size\": " << vocab << "}\n";
}

// Forward FLOPs of one GPT-2 context of T tokens (multiply-adds x 2): per block the qkv, output and MLP projections
// (12 d^2 per token) and causal attention (QK^T and PV over T(T+1)/2 pairs, d wide each); the tied classifier on
// `logit_rows` rows.
double gpt2_flops(int d, int layers, int vocab, int T, int logit_rows, int blocks_run) {
  const double proj = 2.0 * 12.0 * d * double(d) * T;
  const double attn = 2.0 * 2.0 * d * (double(T) * (T + 1) / 2.0);
  return blocks_run * (proj + attn) + 2.0 * d * double(vocab) * logit_rows;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moesae LM runtime benchmark (CPU)"};
  int contexts = 4, ctx = 256, reps = 2, threads = 0, extract_layer = 6;
  long long stories_tokens = 100000;
  std::string python = "/usr/bin/python3", torch_script = std::string(MOESAE_SOURCE_DIR) + "/bench/torch_lm_reference.py";
  bool no_torch = false;
  app.add_option("--contexts", contexts, "GPT-2 contexts per timed forward batch")->capture_default_str();
  app.add_option("--ctx", ctx, "context length (tokens)")->capture_default_str();
  app.add_option("--reps", reps, "timed repetitions (the best counts)")->capture_default_str();
  app.add_option("--extract-layer", extract_layer, "GPT-2 block captured by the extraction-style pass")
      ->capture_default_str();
  app.add_option("--stories-tokens", stories_tokens, "stories260K tokens to extract")->capture_default_str();
  app.add_option("--threads", threads, "threads (0: all cores)");
  app.add_option("--python", python, "python with torch for the peer implementation");
  app.add_flag("--no-torch", no_torch, "skip the PyTorch peer");
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) omp_set_num_threads(threads);
  const int nthreads = threads > 0 ? threads : omp_get_max_threads();
  set_log_level("warn");

  const double peak = bench::sgemm_peak_gflops(2048, 3);
  std::printf("threads %d, sgemm peak %.1f GFLOP/s\n", nthreads, peak);

  // ---- stories260K: extraction and cross-entropy on real text ---------------------------------------------------
  try {
    const lm::LlamaModel m = lm::LlamaModel::load(lm::find_data_file("stories260K/stories260K.bin"));
    const lm::LlamaTokenizer tok = lm::LlamaTokenizer::load(lm::find_data_file("stories260K/tok512.bin"), 512);
    const auto docs = lm::read_documents(lm::find_data_file("text/tinystories_val.txt"));
    LmExtractOptions o;
    o.out = "/tmp/moesae_bench_acts." + std::to_string(::getpid()) + ".h5";
    o.layer = 2;
    o.ctx = ctx;
    o.max_tokens = stories_tokens;
    o.progress_every = 0;
    LmExtractResult r;
    const double s_ext = bench::best_of(reps, [&] { r = lm_extract(m, tok, docs, o); });
    std::remove(o.out.c_str());
    lm::LossResult ce;
    const double s_ce = bench::best_of(reps, [&] { ce = lm::cross_entropy(m, tok, docs, ctx, stories_tokens); });
    std::printf("stories260K extract (layer 2 of 5, ctx %d, to HDF5): %.0f tokens/s (%lld tokens)\n", ctx,
                r.positions / s_ext, r.positions);
    std::printf("stories260K forward + CE (all 5 blocks + logits):     %.0f tokens/s (CE %.4f)\n",
                ce.predicted / s_ce, ce.mean_ce);
  } catch (const Error& e) {
    std::printf("stories260K skipped: %s\n", e.what());
  }

  // ---- GPT-2 small shapes, random weights -----------------------------------------------------------------------
  const int d = 768, layers = 12, heads = 12, vocab = 50257, n_ctx = 1024;
  const std::string dir = "/tmp/moesae_bench_gpt2." + std::to_string(::getpid());
  write_random_gpt2(dir, d, layers, heads, vocab, n_ctx, 7);
  const lm::Gpt2Model g = lm::Gpt2Model::load(dir);
  Rng rng(11);
  std::vector<std::vector<int>> batch(contexts, std::vector<int>(ctx));
  for (auto& c : batch)
    for (int& t : c) t = static_cast<int>(rng.next_u64() % vocab);
  std::vector<float> first_logits;
  const double s_fwd = bench::best_of(reps, [&] {
    for (int c = 0; c < contexts; ++c) {
      std::vector<float> l = g.forward(batch[c]);
      if (c == 0) first_logits = std::move(l);
    }
  });
  lm::ForwardOptions ext;
  std::vector<float> cap;
  ext.hooks.push_back(lm::ResidHook::capture(extract_layer, &cap));
  ext.logits = lm::ForwardOptions::Logits::None;
  const double s_ext = bench::best_of(reps, [&] {
    for (int c = 0; c < contexts; ++c) g.forward(batch[c], ext);
  });
  const double tokens = double(contexts) * ctx;
  const double fwd_gflops = contexts * gpt2_flops(d, layers, vocab, ctx, ctx, layers) / s_fwd / 1e9;
  const double ext_gflops = contexts * gpt2_flops(d, layers, vocab, ctx, 0, extract_layer + 1) / s_ext / 1e9;
  std::printf("GPT-2 small shape forward (%d x %d tokens, logits): %.0f tokens/s, %.1f GFLOP/s = %.0f%% of sgemm peak\n",
              contexts, ctx, tokens / s_fwd, fwd_gflops, 100.0 * fwd_gflops / peak);
  std::printf("GPT-2 small shape extract (blocks 0..%d, no logits): %.0f tokens/s, %.1f GFLOP/s = %.0f%% of peak\n",
              extract_layer, tokens / s_ext, ext_gflops, 100.0 * ext_gflops / peak);

  if (!no_torch) {
    const std::string ids_path = dir + "/ids.i32", logits_path = dir + "/torch_logits0.f32";
    {
      std::ofstream f(ids_path, std::ios::binary);
      for (auto& c : batch) f.write(reinterpret_cast<const char*>(c.data()), sizeof(int) * c.size());
    }
    const std::string cmd = python + " " + torch_script + " --model " + dir + "/model.safetensors --ids " + ids_path +
                            " --contexts " + std::to_string(contexts) + " --ctx " + std::to_string(ctx) +
                            " --heads " + std::to_string(heads) + " --reps " + std::to_string(reps) + " --threads " +
                            std::to_string(nthreads) + " --logits-out " + logits_path;
    const bench::PeerOutput peer = bench::run_peer(cmd);
    const double torch_tps = peer.rc == 0 ? peer.number("tokens_per_s") : 0.0;
    if (torch_tps <= 0) {
      std::printf("PyTorch peer unavailable (%s exited %d); install python3-torch (scripts/setup-deps.sh --bench)\n",
                  python.c_str(), peer.rc);
    } else {
      std::vector<float> tl(first_logits.size());
      std::ifstream(logits_path, std::ios::binary).read(reinterpret_cast<char*>(tl.data()), sizeof(float) * tl.size());
      double max_diff = 0, max_abs = 0;
      for (size_t i = 0; i < tl.size(); ++i) {
        max_diff = std::max(max_diff, double(std::fabs(tl[i] - first_logits[i])));
        max_abs = std::max(max_abs, double(std::fabs(tl[i])));
      }
      std::printf("PyTorch %s", peer.stdout_text.c_str());
      std::printf("GPT-2 forward: moesae %.0f vs PyTorch %.0f tokens/s -> %.2fx; logits of context 0 agree to %.2e "
                  "(max |logit| %.2f)\n",
                  tokens / s_fwd, torch_tps, tokens / s_fwd / torch_tps, max_diff, max_abs);
    }
  }
  fs::remove_all(dir);
  return 0;
}
