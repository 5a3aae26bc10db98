#include "eval/maxact.h"

#include <algorithm>
#include <numeric>

namespace moesae {
namespace {

// a ranks before b: larger value, then smaller row.
bool better(const MaxActEntry& a, const MaxActEntry& b) { return a.value > b.value || (a.value == b.value && a.row < b.row); }

// Rows of the file read in blocks of at least this many rows when building contexts.
constexpr int64_t kContextBlockRows = 1 << 16;

}  // namespace

MaxActCollector::MaxActCollector(int64_t dict_size, int64_t top, std::vector<int64_t> latents)
    : dict_size_(dict_size), top_(top), latents_(std::move(latents)) {
  if (dict_size <= 0) fail("maxact: dict_size must be positive (got ", dict_size, ")");
  if (top < 1) fail("maxact: --top must be at least 1 (got ", top, ")");
  if (latents_.empty()) {
    latents_.resize(static_cast<size_t>(dict_size));
    std::iota(latents_.begin(), latents_.end(), int64_t{0});
  }
  slot_.assign(static_cast<size_t>(dict_size), -1);
  for (size_t t = 0; t < latents_.size(); ++t) {
    const int64_t l = latents_[t];
    if (l < 0 || l >= dict_size) fail("maxact: latent ", l, " is outside [0, ", dict_size, ")");
    if (slot_[static_cast<size_t>(l)] >= 0) fail("maxact: latent ", l, " is listed twice");
    slot_[static_cast<size_t>(l)] = static_cast<int32_t>(t);
  }
  heaps_.resize(latents_.size());
  fired_.assign(latents_.size(), 0);
}

void MaxActCollector::add(const Tensor& ids, const Tensor& vals, int64_t row0) {
  if (ids.device() != Device::CPU || vals.device() != Device::CPU || ids.dtype() != DType::I32 ||
      vals.dtype() != DType::F32 || ids.rows() != vals.rows() || ids.cols() != vals.cols())
    fail("maxact: expected host i32 ids and f32 vals of one shape (got ", ids.shape_str(), " and ", vals.shape_str(),
         ")");
  const size_t top = static_cast<size_t>(top_);
  for (int64_t r = 0; r < ids.rows(); ++r) {
    const int32_t* ip = ids.data<int32_t>() + r * ids.ld();
    const float* vp = vals.data<float>() + r * vals.ld();
    for (int64_t j = 0; j < ids.cols(); ++j) {
      const int32_t id = ip[j];
      if (id < -1 || id >= dict_size_) fail("maxact: latent id ", id, " of row ", row0 + r, " is outside [-1, ", dict_size_, ")");
      if (id < 0 || !(vp[j] > 0.f)) continue;
      const int32_t t = slot_[static_cast<size_t>(id)];
      if (t < 0) continue;
      ++fired_[static_cast<size_t>(t)];
      std::vector<MaxActEntry>& h = heaps_[static_cast<size_t>(t)];  // heap front = the worst kept entry
      const MaxActEntry e{vp[j], row0 + r};
      if (h.size() < top) {
        h.push_back(e);
        std::push_heap(h.begin(), h.end(), better);
      } else if (better(e, h.front())) {
        std::pop_heap(h.begin(), h.end(), better);
        h.back() = e;
        std::push_heap(h.begin(), h.end(), better);
      }
    }
  }
  rows_ += ids.rows();
}

std::vector<MaxActEntry> MaxActCollector::best(size_t t) const {
  std::vector<MaxActEntry> v = heaps_.at(t);
  std::sort(v.begin(), v.end(), better);
  return v;
}

nlohmann::json maxact_latents_json(const MaxActCollector& c, const ActivationFile& file, const lm::Tokenizer* tok,
                                   const MaxActContext& ctx, int64_t latents_per_expert) {
  if (ctx.before < 0 || ctx.after < 0) fail("maxact: context sizes must be >= 0");
  if (latents_per_expert < 1) fail("maxact: latents_per_expert must be >= 1");
  const bool ids = file.has_token_ids(), pos = file.has_positions();
  // Every example, sorted by row, so the file's token ids and positions are read once, in blocks.
  struct Ref {
    int64_t row;
    size_t latent, rank;
  };
  std::vector<std::vector<MaxActEntry>> best(c.latents().size());
  std::vector<Ref> refs;
  for (size_t t = 0; t < best.size(); ++t) {
    best[t] = c.best(t);
    for (size_t i = 0; i < best[t].size(); ++i) refs.push_back({best[t][i].row, t, i});
  }
  std::vector<std::vector<nlohmann::json>> examples(best.size());
  for (size_t t = 0; t < best.size(); ++t) examples[t].resize(best[t].size());
  std::sort(refs.begin(), refs.end(), [](const Ref& a, const Ref& b) { return a.row < b.row; });
  int64_t b0 = 0, b1 = 0;  // the block of rows held in memory
  Tensor block_ids, block_pos;
  const auto at_id = [&](int64_t r) { return block_ids.data<int32_t>()[r - b0]; };
  const auto at_pos = [&](int64_t r) { return block_pos.data<int32_t>()[r - b0]; };
  for (const Ref& ref : refs) {
    const MaxActEntry& e = best[ref.latent][ref.rank];
    nlohmann::json ex = {{"row", e.row}, {"activation", e.value}};
    if (ids || pos) {
      const int64_t lo = std::max<int64_t>(0, e.row - ctx.before), hi = std::min(file.tokens(), e.row + ctx.after + 1);
      if (lo < b0 || hi > b1) {  // read the next block: from lo, at least kContextBlockRows rows
        b0 = lo;
        b1 = std::min(file.tokens(), std::max(hi, lo + kContextBlockRows));
        if (ids) file.read_token_ids(b0, block_ids = host_vector(b1 - b0, DType::I32));
        if (pos) file.read_positions(b0, block_pos = host_vector(b1 - b0, DType::I32));
      }
      // The window stays inside the row's own model context: neighbours must have consecutive positions.
      int64_t w0 = e.row, w1 = e.row + 1;
      while (w0 > lo && (!pos || at_pos(w0 - 1) == at_pos(w0) - 1)) --w0;
      while (w1 < hi && (!pos || at_pos(w1) == at_pos(w1 - 1) + 1)) ++w1;
      if (pos) ex["position"] = at_pos(e.row);
      if (ids) {
        ex["token_id"] = at_id(e.row);
        std::vector<int> window;
        for (int64_t r = w0; r < w1; ++r) window.push_back(at_id(r));
        nlohmann::json context = {{"start_row", w0}, {"index", e.row - w0}, {"token_ids", window}};
        if (tok) {
          std::vector<std::string> pieces;
          std::string text;
          for (size_t i = 0; i < window.size(); ++i) {
            if (window[i] < 0 || window[i] >= tok->vocab_size())
              fail("maxact: token id ", window[i], " of row ", w0 + int64_t(i), " of '", file.path(),
                   "' is outside the tokenizer's vocabulary of ", tok->vocab_size());
            pieces.push_back(tok->decode_piece(i == 0 ? -1 : window[i - 1], window[i]));
            text += pieces.back();
          }
          ex["token"] = pieces[static_cast<size_t>(e.row - w0)];
          context["tokens"] = pieces;
          context["text"] = text;
        }
        ex["context"] = std::move(context);
      }
    }
    examples[ref.latent][ref.rank] = std::move(ex);
  }
  nlohmann::json out = nlohmann::json::array();
  for (size_t t = 0; t < best.size(); ++t) {
    const int64_t l = c.latents()[t];
    out.push_back({{"latent", l},
                   {"expert", l / latents_per_expert},
                   {"fired", c.fire_count(t)},
                   {"max_activation", best[t].empty() ? 0.0 : double(best[t].front().value)},
                   {"examples", examples[t]}});
  }
  return out;
}

}  // namespace moesae
