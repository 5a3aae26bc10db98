#include "run/flops.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "backend/backend.h"
#include "core/error.h"
#include "core/log.h"

namespace moesae {

FlopsMeasure parse_flops_measure(const std::string& s) {
  if (s == "train") return FlopsMeasure::Train;
  if (s == "forward") return FlopsMeasure::Forward;
  if (s == "encoder") return FlopsMeasure::Encoder;
  fail("unknown FLOPs measure '", s, "' (valid: train, forward, encoder)");
}

const char* to_string(FlopsMeasure m) {
  switch (m) {
    case FlopsMeasure::Train: return "train";
    case FlopsMeasure::Forward: return "forward";
    case FlopsMeasure::Encoder: return "encoder";
  }
  return "?";
}

double FlopsBreakdown::phase(const std::string& p) const {
  double s = 0;
  for (const FlopsTerm& t : terms)
    if (t.phase == p) s += t.flops;
  return s;
}

double FlopsBreakdown::term(const std::string& name, const std::string& p) const {
  double s = 0;
  for (const FlopsTerm& t : terms)
    if (t.name == name && t.phase == p) s += t.flops;
  return s;
}

double FlopsBreakdown::get(FlopsMeasure m) const {
  switch (m) {
    case FlopsMeasure::Train: return train();
    case FlopsMeasure::Encoder: return encoder;
    case FlopsMeasure::Forward: {
      double s = 0;
      for (const FlopsTerm& t : terms)
        if (t.phase == "forward" && !t.train_only) s += t.flops;
      return s;
    }
  }
  return 0;
}

std::string FlopsBreakdown::describe() const {
  std::string out;
  for (const FlopsTerm& t : terms) out += (out.empty() ? "" : " + ") + t.name + "(" + t.phase + ") " + si_count(t.flops);
  return out;
}

int64_t parameter_count(const ModelConfig& m) {
  const int64_t d = m.d, F = m.dict_size, E = m.experts;
  switch (m.arch) {
    case Arch::TopK: return 2 * F * d + d + (m.encoder_bias ? F : 0);  // W_enc, W_dec, b_pre, b_enc
    case Arch::Gated: return 2 * F * d + 3 * F + d;                     // W_gate, W_dec, b_gate, r_mag, b_mag, b_pre
    case Arch::Switch:
    case Arch::Scale: {
      int64_t p = 2 * F * d + d + (m.encoder_bias ? F : 0);  // W_enc, W_dec, b_pre, b_enc
      p += E * d + d + (m.router_bias ? E : 0);               // W_r, b_r, b_g
      if (m.feature_scaling != FeatureScaling::None) p += E;  // omega
      if (m.feature_scaling == FeatureScaling::Reference) p += d * d;  // A_lowpass [d, d]
      if (m.feature_scaling == FeatureScaling::Learned) p += F * d;    // A_lowpass [F, d]
      return p;
    }
  }
  return 0;
}

int64_t buffer_count(const ModelConfig& m) { return m.dict_size; }  // tokens_since_fired (int32 [F])

FlopsBreakdown flops_per_token(const ModelConfig& m, int64_t batch_size) {
  if (m.d <= 0) fail("FLOPs accounting needs the input dimension d (model.d or the data's)");
  const double d = m.d, F = m.dict_size, E = m.experts, e = m.active_experts, k = m.k;
  const double n = F / E, B = double(std::max<int64_t>(batch_size, 1));
  FlopsBreakdown out;
  auto add = [&](const char* name, const char* phase, double v, bool train_only = false) {
    if (v != 0) out.terms.push_back({name, phase, v, train_only});
  };
  switch (m.arch) {
    case Arch::TopK: {
      // Forward (topk_sae.cpp): dense encoder GEMM u W_enc^T, Top-K over the F post-ReLU values, sparse decode.
      out.encoder = 2 * d * F;
      add("encoder", "forward", 2 * d * F);
      add("select", "forward", F);
      add("decode", "forward", 2 * k * d);
      // Backward: sparse_decode_backward (dcoef: k row dots, W_dec gradient: k row updates) and
      // sparse_encoder_backward (W_enc gradient rows of the k selected latents, du = sum of k rows).
      add("decode", "backward", 4 * k * d);
      add("encoder", "backward", 4 * k * d);
      if (m.auxk && m.auxk_alpha > 0) {
        // AuxK (when at least k_aux latents are dead; nothing when none is): Top-k_aux among the dead latents of
        // the same pre-activations, a sparse decode of k_aux rows, and the same four sparse backward products.
        const double ka = std::min<double>(m.resolved_k_aux(), F);
        add("auxk", "forward", F + 2 * ka * d, /*train_only=*/true);
        add("auxk", "backward", 8 * ka * d);
      }
      break;
    }
    case Arch::Gated: {
      // Forward (gated_sae.cpp): one GEMM W_gate u shared by the gate and magnitude paths, a dense decode
      // f W_dec, and the frozen-decoder reconstruction ReLU(pi_gate) W_dec of the auxiliary loss.
      out.encoder = 2 * d * F;
      add("encoder", "forward", 2 * d * F);
      add("decode", "forward", 2 * d * F);
      add("aux_decode", "forward", 2 * d * F);
      // Backward: W_dec gradient f^T dxhat and dL/dpi_mag = dxhat W_dec^T; the gate's dfrozen W_dec^T; W_gate
      // gradient dg^T u and du = dg W_gate.
      add("decode", "backward", 4 * d * F);
      add("aux_decode", "backward", 2 * d * F);
      add("encoder", "backward", 4 * d * F);
      break;
    }
    case Arch::Switch:
    case Arch::Scale: {
      const double c = e * n;  // candidates per token: the e chosen experts' n latents (Eq. 2.3)
      out.encoder = 2 * d * c;
      // Forward (router.cpp, moe_sae.cpp): router logits W_r (x - b_r) and top-e over E experts; only the
      // chosen experts' encoders (one m x n x d GEMM per expert); global Top-K over the e n candidates
      // (select_on: weighted first scales them by w_i); sparse decode of the k selected latents.
      add("router", "forward", 2 * d * E + E);
      add("encoder", "forward", 2 * d * c);
      add("select", "forward", m.select_on == SelectOn::Weighted ? 2 * c : c);
      add("decode", "forward", 2 * k * d);
      // Backward: the same sparse products as TopK, and the router: dW_r = dlogits^T u_r, du_r = dlogits W_r.
      add("decode", "backward", 4 * k * d);
      add("encoder", "backward", 4 * k * d);
      add("router", "backward", 4 * d * E);
      // Feature Scaling (Eq. 2.5, Appendix C) as moe_sae.cpp computes it: W^_i u = (1 + w_i) W_i u - w_i L_i u.
      switch (m.feature_scaling) {
        case FeatureScaling::None: break;
        case FeatureScaling::Mean:
        case FeatureScaling::Reference: {
          // Forward: per step the E mean rows (a sum over all F rows; reference: then a_i = A mean_i, an
          // E x d x d GEMM); per routed (token, expert) pair s = u . a_i (2d) and the rank-1 update of its n
          // candidates (2n).
          double step_fwd = F * d, step_bwd = F * d;
          if (m.feature_scaling == FeatureScaling::Reference) step_fwd += 2 * E * d * d, step_bwd += 4 * E * d * d;
          add("feature_scaling", "forward", 2 * d * e + 2 * c + step_fwd / B);
          // Backward: d omega needs W_j . u of the k selected latents (2kd) and u . a_i for every expert (a dense
          // [B, E] GEMM, 2dE); the low-pass gradient G [B, E] gives d a_i = G^T U (2dE) and du += G L (2dE); per
          // step the mean's gradient is added to every row of W_enc (F d; reference: two E x d x d GEMMs more).
          add("feature_scaling", "backward", 2 * k * d + 6 * d * E + step_bwd / B);
          break;
        }
        case FeatureScaling::Identity:
          // L_i = I_{n x d}: subtract w_i times the first min(n, d) columns of u for each routed pair; backward:
          // the raw dots (2kd) plus one gather and one add per selected latent.
          add("feature_scaling", "forward", 2 * e * std::min(n, d));
          add("feature_scaling", "backward", 2 * k * d + 2 * k);
          break;
        case FeatureScaling::Learned:
          // A second GEMM per expert group with the learned n x d low-pass; backward: raw and low-pass dots,
          // A_lowpass row gradients and du, each k rows of d (2kd).
          add("feature_scaling", "forward", 2 * d * c);
          add("feature_scaling", "backward", 8 * k * d);
          break;
      }
      break;
    }
  }
  // Per step, over every parameter (trainer.cpp): gradient-norm clipping (sum of squares 2, scale 1), Adam
  // (13: both moments, bias correction, sqrt, division, update), and the decoder constraint (row renormalisation
  // 3 F d, removal of the gradient's row-parallel component 4 F d). Amortised over the B tokens of the step.
  const double P = double(parameter_count(m));
  add("optimizer", "step", 16 * P / B);
  add("decoder_constraint", "step", 7 * F * d / B);
  return out;
}

MemoryEstimate memory_estimate(const RunConfig& c, int64_t train_rows) {
  const ModelConfig& m = c.model;
  const double d = m.d, F = m.dict_size, E = m.experts, e = m.active_experts, k = m.k, n = F / E;
  MemoryEstimate mem;
  mem.state = 16.0 * double(parameter_count(m)) + 4.0 * double(buffer_count(m));
  // f32 values per token held by one training step (inputs, pre-activations, codes, reconstruction, gradients).
  double per_token = 0;
  switch (m.arch) {
    case Arch::TopK:
      per_token = F + 8 * d + 3 * k;  // dense pre-activations [B, F] dominate
      if (m.auxk && m.auxk_alpha > 0) per_token += 3 * double(std::min<int64_t>(m.resolved_k_aux(), m.dict_size)) + 2 * d;
      break;
    case Arch::Gated: per_token = 8 * F + 8 * d; break;  // eight dense [B, F] tensors
    case Arch::Switch:
    case Arch::Scale:
      per_token = e * n * (m.select_on == SelectOn::Weighted ? 2 : 1) + n + 8 * d + 4 * E + 16 * k + 6 * e;
      break;
  }
  mem.activations = 4.0 * double(c.train.batch_size) * per_token;
  int64_t buffer = c.data.shuffle_buffer, chunk = c.data.chunk_rows;
  if (train_rows > 0) buffer = std::min(buffer, train_rows), chunk = std::min(chunk, train_rows);
  mem.data = 4.0 * d * double(buffer + chunk);
  return mem;
}

RunCost run_cost(const RunConfig& config, int d, int64_t train_rows) {
  RunCost rc;
  if (config.model.d > 0) d = config.model.d;
  rc.d = d;
  if (d <= 0) return rc;
  RunConfig c = config;
  c.model.d = d;
  rc.known = true;
  rc.flops = flops_per_token(c.model, c.train.batch_size);
  rc.params = parameter_count(c.model);
  rc.memory = memory_estimate(c, train_rows);
  rc.total_flops = double(c.train.steps) * double(c.train.batch_size) * rc.flops.train();
  return rc;
}

double measured_cpu_rate() {
  static double rate = 0;
  if (rate > 0) return rate;
  auto be = make_cpu_backend(0);
  const int64_t n = 384;
  Tensor a = be->empty(n, n), b = be->empty(n, n), c = be->empty(n, n);
  be->fill(a, 0.5f);
  be->fill(b, 0.25f);
  be->gemm(false, true, 1.f, a, b, 0.f, c);  // warm-up (thread pool, page faults)
  Timer t;
  int reps = 0;
  do {
    be->gemm(false, true, 1.f, a, b, 0.f, c);
    ++reps;
  } while (t.seconds() < 0.1);
  rate = kTrainEfficiency * 2.0 * double(n) * n * n * reps / t.seconds();
  return rate;
}

std::string si_count(double v) {
  char buf[32];
  const char* suffix[] = {"", "k", "M", "G", "T", "P", "E"};
  int i = 0;
  double a = std::fabs(v);
  while (a >= 999.5 && i < 6) a /= 1000, v /= 1000, ++i;
  if (i == 0)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, a < 9.995 ? "%.2f%s" : a < 99.95 ? "%.1f%s" : "%.0f%s", v, suffix[i]);
  return buf;
}

std::string bytes_text(double bytes) {
  char buf[32];
  const char* suffix[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int i = 0;
  while (bytes >= 1023.5 && i < 5) bytes /= 1024, ++i;
  std::snprintf(buf, sizeof buf, i == 0 ? "%.0f%s" : bytes < 9.995 ? "%.2f%s" : bytes < 99.95 ? "%.1f%s" : "%.0f%s",
                bytes, suffix[i]);
  return buf;
}

}  // namespace moesae
