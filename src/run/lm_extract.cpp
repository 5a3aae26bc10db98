#include "run/lm_extract.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "core/tensor.h"
#include "data/activation_file.h"
#include "lm/data_path.h"
#include "lm/documents.h"
#include "lm/load.h"

namespace moesae {

LmExtractResult lm_extract(const lm::LanguageModel& model, const lm::Tokenizer& tok,
                           const std::vector<std::string>& documents, const LmExtractOptions& o) {
  const lm::LmShape& c = model.shape();
  if (o.layer < 0 || o.layer >= c.n_layers)
    fail("lm extract: --layer ", o.layer, " is out of range: model '", model.path(), "' has ", c.n_layers,
         " blocks (0..", c.n_layers - 1, ")");
  if (o.ctx < 2 || o.ctx > c.seq_len) fail("lm extract: --ctx ", o.ctx, " must be in [2, ", c.seq_len, "] (seq_len)");
  if (o.out.empty()) fail("lm extract: no output path (--out)");

  const int d = c.dim;
  ActivationWriter::Options wo;
  wo.d = d;
  wo.token_ids = true;
  wo.positions = true;
  wo.meta = {o.model_name, std::to_string(o.layer), "resid_post", o.tokenizer_name};
  ActivationWriter w(o.out, wo);
  w.file().set_attr(w.dataset(), "ctx", static_cast<int64_t>(o.ctx));
  w.file().set_attr(w.dataset(), "bos", std::string(o.exclude_bos ? "bos_excluded" : "bos_included"));
  w.file().set_attr(w.dataset(), "text", o.text_name);
  w.file().set_attr(w.dataset(), "max_tokens", static_cast<int64_t>(o.max_tokens));

  std::vector<float> acts;
  lm::ForwardOptions fo;
  fo.hooks.push_back(lm::ResidHook::capture(o.layer, &acts));
  fo.logits = lm::ForwardOptions::Logits::None;

  // Rows are gathered into a bounded buffer and appended when it fills.
  const int64_t cap = std::max<int64_t>(4096, o.ctx);
  Tensor buf = host_tensor(cap, d);
  Tensor ids_buf = host_vector(cap, DType::I32);
  Tensor pos_buf = host_vector(cap, DType::I32);
  int64_t filled = 0;
  auto flush = [&] {
    if (filled == 0) return;
    w.append(buf.row_range(0, filled), ids_buf.row_range(0, filled), pos_buf.row_range(0, filled));
    filled = 0;
  };

  LmExtractResult r;
  Timer t;
  long long next_report = o.progress_every;
  lm::for_each_context(tok, documents, o.ctx, [&](const std::vector<int>& ids, int start, int len, size_t) {
    if (o.max_tokens > 0) len = static_cast<int>(std::min<long long>(len, o.max_tokens - r.positions));
    if (len <= 0) return false;
    if (start == 0) ++r.documents;
    const std::vector<int> window(ids.begin() + start, ids.begin() + start + len);
    model.forward(window, fo);
    if (static_cast<int64_t>(acts.size()) != static_cast<int64_t>(len) * d)
      fail("lm extract: internal error: captured ", acts.size(), " values, expected ", len, " x ", d);
    ++r.contexts;
    r.positions += len;
    const int skip = (o.exclude_bos && window[0] == tok.bos_id()) ? 1 : 0;
    r.bos_dropped += skip;
    if (filled + len > cap) flush();
    for (int j = skip; j < len; ++j) {
      std::memcpy(buf.data<float>() + filled * d, acts.data() + static_cast<size_t>(j) * d, sizeof(float) * d);
      ids_buf.data<int32_t>()[filled] = window[j];
      pos_buf.data<int32_t>()[filled] = j;
      ++filled;
      ++r.rows;
    }
    if (o.progress_every > 0 && r.positions >= next_report) {
      spdlog::info("lm extract: {} tokens, {} contexts, {} documents ({:.0f} tokens/s)", r.positions, r.contexts,
                   r.documents, r.positions / std::max(1e-9, t.seconds()));
      while (next_report <= r.positions) next_report += o.progress_every;
    }
    return !(o.max_tokens > 0 && r.positions >= o.max_tokens);
  });
  flush();
  // Documents the rows come from (the first r.documents of the text): evaluations skip them to stay held out.
  w.file().set_attr(w.dataset(), "documents", static_cast<int64_t>(r.documents));
  if (r.rows == 0) fail("lm extract: no activation to write (no document has two tokens or more)");
  w.commit();
  return r;
}

namespace {

std::string file_name(const std::string& path) { return std::filesystem::path(path).filename().string(); }

struct ResolvedSpec {
  std::string model, tokenizer, text;
};

// The three files of a spec on the data search path (the default tokenizer follows the model's architecture, known
// from its path alone).
ResolvedSpec resolve(const ExtractSpec& s) {
  ResolvedSpec r;
  r.model = lm::resolve_data_path(s.model);
  const std::string tok = s.tokenizer.empty() ? lm::default_tokenizer(lm::model_arch(r.model)) : s.tokenizer;
  r.tokenizer = lm::resolve_data_path(tok);
  r.text = lm::resolve_data_path(s.text);
  return r;
}

}  // namespace

LmExtractResult extract_activations(const ExtractSpec& spec, const std::string& out) {
  lm::check_text_format(spec.format);
  const ResolvedSpec files = resolve(spec);
  const std::unique_ptr<lm::LanguageModel> model = lm::load_language_model(files.model);
  const std::unique_ptr<lm::Tokenizer> tok = lm::load_tokenizer(files.tokenizer, *model);
  const std::vector<std::string> docs = lm::read_documents(files.text, spec.format);
  LmExtractOptions o;
  o.out = out;
  o.layer = spec.layer;
  o.ctx = spec.ctx;
  o.max_tokens = spec.max_tokens;
  o.exclude_bos = spec.exclude_bos;
  o.model_name = file_name(files.model);
  o.tokenizer_name = file_name(files.tokenizer);
  o.text_name = file_name(files.text);
  Timer t;
  const LmExtractResult r = lm_extract(*model, *tok, docs, o);
  spdlog::info("{}: {} rows x {} (layer {} resid_post of {}, {}) from {} contexts of <= {} tokens, {} documents of "
               "{} ({:.1f}s, {:.0f} tokens/s)",
               out, r.rows, model->shape().dim, spec.layer, o.model_name,
               spec.exclude_bos ? "bos_excluded" : "bos_included", r.contexts, spec.ctx, r.documents, files.text,
               t.seconds(), r.positions / std::max(1e-9, t.seconds()));
  return r;
}

bool extracted_file_matches(const std::string& path, const ExtractSpec& spec) {
  const ActivationFile f(path);
  const ResolvedSpec files = resolve(spec);
  return f.meta().model == file_name(files.model) && f.meta().tokenizer == file_name(files.tokenizer) &&
         f.attribute("text") == file_name(files.text) && f.meta().layer == std::to_string(spec.layer) &&
         f.meta().hook == "resid_post" && f.attribute("ctx") == std::to_string(spec.ctx) &&
         f.attribute("max_tokens") == std::to_string(spec.max_tokens) &&
         f.attribute("bos") == (spec.exclude_bos ? "bos_excluded" : "bos_included");
}

}  // namespace moesae
