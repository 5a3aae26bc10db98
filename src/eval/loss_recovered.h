// moesae eval: the SAE spliced into a language model (paper Appendix A.2).
//   CE_clean: the model as is; CE_sae: block L's resid_post replaced by the SAE reconstruction x^(x);
//   CE_zero: block L's resid_post set to zero.
//   Loss Recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean)      (1: the SAE loses nothing; 0: as bad as zeroing)
//   Delta CE       = CE_sae - CE_clean
// Position 0 of every context carries a residual of much larger norm (an attention sink), which SAEs reconstruct
// poorly; both are reported with the SAE spliced at every position and with position 0 left clean (*_keep_pos0).
// All variants run on exactly the same contexts and predicted tokens. While splicing, the clean activations and the
// SAE's reconstructions of every position run through the model are accumulated too (MSE, FVU, L0; with and
// without position 0): the reconstruction metrics on that text.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "eval/config.h"
#include "lm/language_model.h"
#include "lm/tokenizer.h"
#include "sae/sae.h"

namespace moesae {

struct SpliceOptions {
  int layer = 0;
  int ctx = 256;
  long long max_tokens = 0;  // predicted tokens (0: every document)
};

struct SpliceResult {
  double ce_clean = 0, ce_sae = 0, ce_zero = 0, ce_sae_keep_pos0 = 0;
  double loss_recovered = 0, loss_recovered_keep_pos0 = 0;
  double delta_ce = 0, delta_ce_keep_pos0 = 0;
  long long predicted = 0, contexts = 0, documents = 0;
  // Reconstruction of the activations at block `layer` over the positions run (clean residual stream).
  double mse = 0, fvu = 0, mse_no_pos0 = 0, fvu_no_pos0 = 0, l0 = 0;
  long long positions = 0;
};

// (CE_zero - CE_sae) / (CE_zero - CE_clean); fails when zero-ablation does not raise the loss (no signal).
double loss_recovered_from(double ce_clean, double ce_sae, double ce_zero);

// Runs the four variants (clean, zero, SAE at every position, SAE except position 0). The SAE's d must be the
// model's width. One error for a bad layer / ctx, a width mismatch, or no token to predict.
SpliceResult splice_sae(const lm::LanguageModel& model, const lm::Tokenizer& tok,
                        const std::vector<std::string>& documents, Sae& sae, const SpliceOptions& options);

// The `lm:` section of a run config applied to a trained SAE (`loaded`: its model and tokenizer, load_eval_lm): loads the texts
// (data search path), resolves the layer (-1: `activation_layer`, the layer attribute of the SAE's training activations) and the
// in-domain documents to skip, and returns the /final scalars: loss_recovered, loss_recovered_keep_pos0, delta_ce,
// delta_ce_keep_pos0, ce_clean, ce_sae, ce_zero, lm_layer, lm_tokens; with an out-of-domain text the same with the
// suffix _ood, plus mse_ood, fvu_ood, mse_ood_no_pos0, fvu_ood_no_pos0, l0_ood.
// `activation_text` and `activation_documents` are the `text` and `documents` attributes of the training activation
// file (empty / -1 when absent).
// Resolves every file the `lm:` section names (model, tokenizer when given, texts) on the data search path; one
// error for the first one missing. Runs check this before training.
void check_lm_eval_files(const LmEvalConfig& cfg);

// The `lm:` section's model and tokenizer (lm.tokenizer, else the model's default), resolved on the data search path
// and loaded once for every LM metric of a run; both null when the section names no model.
struct EvalLm {
  std::string model_path;
  std::unique_ptr<lm::LanguageModel> model;
  std::unique_ptr<lm::Tokenizer> tokenizer;
};
EvalLm load_eval_lm(const LmEvalConfig& cfg);

std::map<std::string, double> evaluate_lm(Sae& sae, const LmEvalConfig& cfg, const EvalLm& loaded,
                                          const std::string& activation_layer,
                                          const std::string& activation_text, long long activation_documents);

}  // namespace moesae
