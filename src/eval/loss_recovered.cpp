#include "eval/loss_recovered.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "eval/reconstruction.h"
#include "eval/sparsity.h"
#include "lm/cross_entropy.h"
#include "lm/data_path.h"
#include "lm/documents.h"
#include "lm/load.h"

namespace moesae {

double loss_recovered_from(double ce_clean, double ce_sae, double ce_zero) {
  if (!(ce_zero > ce_clean))
    fail("loss recovered: zero-ablating the layer does not raise the loss (CE_zero ", ce_zero, " <= CE_clean ",
         ce_clean, "); Loss Recovered is undefined at this layer");
  return (ce_zero - ce_sae) / (ce_zero - ce_clean);
}

SpliceResult splice_sae(const lm::LanguageModel& model, const lm::Tokenizer& tok,
                        const std::vector<std::string>& documents, Sae& sae, const SpliceOptions& o) {
  const lm::LmShape& shape = model.shape();
  if (o.layer < 0 || o.layer >= shape.n_layers)
    fail("loss recovered: layer ", o.layer, " is out of range: model '", model.path(), "' has ", shape.n_layers,
         " blocks (0..", shape.n_layers - 1, ")");
  const int d = shape.dim;
  if (sae.config().d != d)
    fail("loss recovered: the SAE has d=", sae.config().d, " but model '", model.path(), "' has width ", d);
  Backend& be = sae.backend();
  ReconstructionAccumulator rec(d), rec_no_pos0(d);
  SparsityAccumulator sparsity(sae.config().dict_size);

  // x[T, d] (the clean residual after block `layer`) -> x^ written back, from position `first` on. Both SAE variants
  // of a context see the same clean residual (cross_entropies runs them one after the other), so the second reuses
  // the first's reconstruction when its input is bit-identical.
  Tensor last_x, last_x_hat;
  auto splice = [&](float* x, int T, int first, bool accumulate) {
    const size_t bytes = sizeof(float) * static_cast<size_t>(T) * d;
    const bool reuse = last_x.defined() && last_x.rows() == T && std::memcmp(last_x.data<float>(), x, bytes) == 0;
    if (!reuse) {
      last_x = host_tensor(T, d);
      std::memcpy(last_x.data<float>(), x, bytes);
      sae.forward(be.from_host(last_x), false);
      last_x_hat = be.to_host(sae.reconstruction());
      for (int t = 0; t < T; ++t)
        for (int j = 0; j < d; ++j)
          if (!std::isfinite(last_x_hat.data<float>()[t * last_x_hat.ld() + j]))
            fail("loss recovered: the SAE's reconstruction is not finite (NaN or Inf) at context position ", t);
    }
    if (accumulate) {  // (the SAE's code is still that of last_x: the SAE runs nowhere else meanwhile)
      rec.add(last_x, last_x_hat);
      if (T > 1) rec_no_pos0.add(last_x.row_range(1, T), last_x_hat.row_range(1, T));
      sparsity.add(be.to_host(sae.code().ids), be.to_host(sae.code().vals));
    }
    for (int t = first; t < T; ++t)
      std::memcpy(x + static_cast<size_t>(t) * d, last_x_hat.data<float>() + t * last_x_hat.ld(), sizeof(float) * d);
  };
  std::vector<lm::ForwardOptions> variants(4);
  variants[1].hooks.push_back(lm::ResidHook::zero(o.layer));
  variants[2].hooks.push_back(lm::ResidHook::rewrite(o.layer, [&](float* x, int T, int) { splice(x, T, 0, true); }));
  variants[3].hooks.push_back(lm::ResidHook::rewrite(o.layer, [&](float* x, int T, int) { splice(x, T, 1, false); }));
  const std::vector<lm::LossResult> ce = lm::cross_entropies(model, tok, documents, o.ctx, o.max_tokens, variants);

  SpliceResult r;
  r.ce_clean = ce[0].mean_ce;
  r.ce_zero = ce[1].mean_ce;
  r.ce_sae = ce[2].mean_ce;
  r.ce_sae_keep_pos0 = ce[3].mean_ce;
  r.loss_recovered = loss_recovered_from(r.ce_clean, r.ce_sae, r.ce_zero);
  r.loss_recovered_keep_pos0 = loss_recovered_from(r.ce_clean, r.ce_sae_keep_pos0, r.ce_zero);
  r.delta_ce = r.ce_sae - r.ce_clean;
  r.delta_ce_keep_pos0 = r.ce_sae_keep_pos0 - r.ce_clean;
  r.predicted = ce[0].predicted;
  r.contexts = ce[0].contexts;
  r.documents = ce[0].documents;
  r.positions = rec.tokens();
  r.mse = rec.mse();
  r.fvu = rec.fvu();
  if (rec_no_pos0.tokens() > 0) {
    r.mse_no_pos0 = rec_no_pos0.mse();
    r.fvu_no_pos0 = rec_no_pos0.fvu();
  }
  r.l0 = sparsity.l0();
  return r;
}

void check_lm_eval_files(const LmEvalConfig& cfg) {
  if (!cfg.enabled()) return;
  lm::resolve_data_path(cfg.model);
  if (!cfg.tokenizer.empty()) lm::resolve_data_path(cfg.tokenizer);
  lm::resolve_data_path(cfg.text);
  if (!cfg.ood_text.empty()) lm::resolve_data_path(cfg.ood_text);
}

EvalLm load_eval_lm(const LmEvalConfig& cfg) {
  EvalLm e;
  if (!cfg.enabled()) return e;
  e.model_path = lm::resolve_data_path(cfg.model);
  e.model = lm::load_language_model(e.model_path);
  const std::string tok_path =
      lm::resolve_data_path(cfg.tokenizer.empty() ? lm::default_tokenizer(*e.model) : cfg.tokenizer);
  e.tokenizer = lm::load_tokenizer(tok_path, *e.model);
  return e;
}

std::map<std::string, double> evaluate_lm(Sae& sae, const LmEvalConfig& cfg, const EvalLm& loaded,
                                          const std::string& activation_layer, const std::string& activation_text,
                                          long long activation_documents) {
  if (!cfg.enabled() || !loaded.model) fail("lm eval: no language model configured (lm.model)");
  const std::string& model_path = loaded.model_path;
  const lm::LanguageModel* const model = loaded.model.get();
  const lm::Tokenizer* const tok = loaded.tokenizer.get();

  SpliceOptions so;
  so.ctx = cfg.ctx;
  so.max_tokens = cfg.max_tokens;
  so.layer = cfg.layer;
  if (so.layer < 0) {
    if (activation_layer.empty())
      fail("lm eval: lm.layer is -1 (the activation file's layer) but the activation file records no layer; set "
           "lm.layer");
    try {
      size_t used = 0;
      so.layer = std::stoi(activation_layer, &used);
      if (used != activation_layer.size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      fail("lm eval: the activation file's layer '", activation_layer, "' is not a block index; set lm.layer");
    }
  }

  std::map<std::string, double> out;
  auto put = [&](const SpliceResult& r, const std::string& sfx, bool ood) {
    out["loss_recovered" + sfx] = r.loss_recovered;
    out["loss_recovered_keep_pos0" + sfx] = r.loss_recovered_keep_pos0;
    out["delta_ce" + sfx] = r.delta_ce;
    out["delta_ce_keep_pos0" + sfx] = r.delta_ce_keep_pos0;
    out["ce_clean" + sfx] = r.ce_clean;
    out["ce_sae" + sfx] = r.ce_sae;
    out["ce_zero" + sfx] = r.ce_zero;
    out["lm_tokens" + sfx] = static_cast<double>(r.predicted);
    if (ood) {
      out["mse_ood"] = r.mse;
      out["fvu_ood"] = r.fvu;
      out["mse_ood_no_pos0"] = r.mse_no_pos0;
      out["fvu_ood_no_pos0"] = r.fvu_no_pos0;
      out["l0_ood"] = r.l0;
    }
  };

  // In-domain: skip the documents the SAE was trained on.
  const std::string text_path = lm::resolve_data_path(cfg.text);
  std::vector<std::string> docs = lm::read_documents(text_path, cfg.text_format);
  long long skip = cfg.skip_documents;
  if (skip < 0) {
    namespace fs = std::filesystem;
    const bool same_text =
        !activation_text.empty() && fs::path(activation_text).filename() == fs::path(text_path).filename();
    skip = same_text && activation_documents > 0 ? activation_documents : 0;
  }
  if (skip >= static_cast<long long>(docs.size()))
    fail("lm eval: text '", text_path, "' has ", docs.size(), " documents and ", skip,
         " are skipped (the SAE's training documents): none is left to evaluate on; use a longer text or set "
         "lm.skip_documents");
  docs.erase(docs.begin(), docs.begin() + skip);
  Timer t;
  const SpliceResult in = splice_sae(*model, *tok, docs, sae, so);
  put(in, "", false);
  out["lm_layer"] = so.layer;
  out["lm_skipped_documents"] = static_cast<double>(skip);
  spdlog::info("lm eval: {} layer {}: CE clean {:.4f}, SAE {:.4f}, zero {:.4f}: loss recovered {:.4f} "
               "({:.4f} with position 0 kept) on {} tokens of {} ({:.1f}s)",
               model_path, so.layer, in.ce_clean, in.ce_sae, in.ce_zero, in.loss_recovered,
               in.loss_recovered_keep_pos0, in.predicted, text_path, t.seconds());
  if (!cfg.ood_text.empty()) {
    const std::string ood_path = lm::resolve_data_path(cfg.ood_text);
    const std::vector<std::string> ood_docs = lm::read_documents(ood_path, cfg.ood_format);
    const SpliceResult ood = splice_sae(*model, *tok, ood_docs, sae, so);
    put(ood, "_ood", true);
    spdlog::info("lm eval (out of domain): CE clean {:.4f}, SAE {:.4f}, zero {:.4f}: loss recovered {:.4f}, "
                 "FVU {:.4f} on {} tokens of {}",
                 ood.ce_clean, ood.ce_sae, ood.ce_zero, ood.loss_recovered, ood.fvu, ood.predicted, ood_path);
  }
  return out;
}

}  // namespace moesae
