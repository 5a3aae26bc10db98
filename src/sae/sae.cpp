#include "sae/sae.h"

#include "sae/geometric_median.h"
#include "sae/init.h"

namespace moesae {

Sae::Sae(const ModelConfig& config, Backend& backend) : cfg_(config), be_(backend) {
  validate(cfg_);
  fired_ = &params_.add_buffer(be_, "tokens_since_fired", cfg_.dict_size, DType::I32);
}

void Sae::init_biases_from_batch(const Tensor& host_batch) {
  Tensor median = geometric_median(host_batch);
  for (const char* name : {"b_pre", "b_r"})
    if (Param* p = params_.find(name)) be_.upload(median, p->value);
}

std::vector<float> Sae::omega() {
  std::vector<float> out;
  if (Param* p = params_.find("omega")) {
    Tensor h = be_.to_host(p->value);
    out.assign(h.host<float>(), h.host<float>() + h.numel());
  }
  return out;
}

void Sae::zero_grad() {
  for (Param* p : params_.trainable()) be_.fill(p->grad, 0.f);
}

void Sae::apply_decoder_constraint() {
  for (Param* p : params_.trainable()) {
    if (!p->decoder) continue;
    if (cfg_.decoder_norm == DecoderNorm::Row) {
      be_.normalize_rows(p->value, 1e-8f);
    } else {  // reference code: unit columns within each expert's n x d block
      const int64_t n = cfg_.latents_per_expert();  // the experts this rank holds (all without expert parallelism)
      for (int64_t r = 0; r + n <= p->value.rows(); r += n) be_.normalize_cols(p->value.row_range(r, r + n), 1e-8f);
    }
  }
}

void Sae::project_decoder_gradient() {
  for (Param* p : params_.trainable())
    if (p->decoder) be_.project_out_rows(p->grad, p->value);
}

void Sae::record_firing() {
  be_.update_fired(code_.ids, code_.vals, group_batch(code_.ids.rows()), fired_->value);
  if (group_ && group_->size() > 1) {  // a latent that fired on any member reset everywhere (all counters agree)
    Tensor h = be_.to_host(fired_->value);
    group_->min(h.host<int32_t>(), size_t(h.numel()));
    be_.upload(h, fired_->value);
  }
}

int64_t Sae::dead_count() {
  Tensor mask = be_.empty_vector(cfg_.dict_size, DType::I32);
  return be_.threshold_mask(fired_->value, cfg_.dead_threshold_tokens, mask);
}

double Sae::dead_fraction() { return double(dead_count()) / double(cfg_.dict_size); }

double Sae::recon_scale(int64_t batch) const {
  const double rows = double(group_batch(batch));
  return cfg_.mse_normalization == MseNormalization::Mean ? 1.0 / (rows * cfg_.d) : 1.0 / rows;
}

double Sae::aux_factor() const { return cfg_.mse_normalization == MseNormalization::Mean ? 1.0 : double(cfg_.d); }

void Sae::queue_stats(const Tensor& x, const Tensor& code, std::vector<Backend::Reduction> extra,
                      FinishStats finish) {
  Tensor err = be_.empty_vector(x.rows());
  be_.row_squared_error(x, x_hat_, err);
  extra.push_back({Backend::ReduceOp::Sum, err});
  extra.push_back({Backend::ReduceOp::CountPositive, code});
  stats_pending_ = be_.reduce_many_later(extra);
  stats_rows_ = x.rows();
  finish_stats_ = std::move(finish);
}

SaeStats Sae::stats() {
  MOESAE_CHECK(finish_stats_, "Sae::stats: no forward pass yet");
  std::vector<double> r = stats_pending_.get();
  const int64_t B = stats_rows_;
  SaeStats s;
  s.tokens = B;
  s.sq_error = r[r.size() - 2];
  s.mse = s.sq_error / (double(B) * cfg_.d);
  s.mse_sum = s.sq_error / double(B);
  s.recon = recon_scale(B) * s.sq_error;
  s.l0 = r.back() / double(B);
  r.resize(r.size() - 2);
  finish_stats_(r, s);
  return s;
}

void Sae::reconstruction_grad(const Tensor& x, Tensor dxhat) {
  be_.copy(x_hat_, dxhat);
  be_.axpy(-1.f, x, dxhat);
  be_.scale(dxhat, static_cast<float>(2.0 * recon_scale(x.rows())));
}

void Sae::init_encoder_and_tied_decoder(Param& w_enc, Param& w_dec, Rng& rng) {
  if (!w_enc.sharded()) {
    init_uniform_fan_in(be_, w_enc.value, cfg_.d, rng);
    be_.copy(w_enc.value, w_dec.value);
  } else {  // this rank's rows of the whole encoder's draw (the same numbers at every rank count)
    init_uniform_fan_in_rows(be_, w_enc.value, cfg_.d, w_enc.shard_first, w_enc.full_rows, rng);
    be_.copy(w_enc.value, w_dec.value);
  }
  apply_decoder_constraint();
}

}  // namespace moesae
