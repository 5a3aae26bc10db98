#include "sae/topk_sae.h"

#include <algorithm>

#include "core/profile.h"
#include "sae/sparse_codec.h"

namespace moesae {

TopKSae::TopKSae(const ModelConfig& config, Backend& backend, ExpertExchange* shards)
    : Sae(config, backend), shards_(shards) {
  const int64_t F = cfg_.dict_size, d = cfg_.d;
  int64_t Fl = F;
  if (shards_) {  // block r of R: latents [F r / R, F (r+1) / R)
    const int64_t r = shards_->first_expert(), blocks = shards_->experts();
    first_latent_ = F * r / blocks;
    Fl = F * (r + 1) / blocks - first_latent_;
    MOESAE_CHECK(shards_->local_experts() == 1 && Fl >= 1, "TopKSae: a dictionary of ", F, " latents over ", blocks,
                 " ranks");
  }
  const auto shard = [&](Param& p) -> Param& {
    if (shards_) {
      p.shard_first = first_latent_;
      p.full_rows = F;
    }
    return p;
  };
  w_enc_ = &shard(params_.add(be_, "W_enc", Fl, d));
  if (cfg_.encoder_bias) b_enc_ = &shard(params_.add_vector(be_, "b_enc", Fl));
  w_dec_ = &shard(params_.add(be_, "W_dec", Fl, d, /*decoder=*/true));
  b_pre_ = &params_.add_vector(be_, "b_pre", d);
}

void TopKSae::init(Rng& rng) {
  init_encoder_and_tied_decoder(*w_enc_, *w_dec_, rng);
}

Tensor TopKSae::select(const Tensor& pre, int k, Tensor& vals, Tensor& ids, const Tensor* col_mask) {
  const int64_t M = pre.rows();
  vals = be_.empty(M, k);
  ids = be_.empty(M, k, DType::I32);
  be_.topk_rows(pre, k, vals, ids, col_mask);
  if (!shards_) return ids;
  return keep_global_topk(be_, *shards_, first_latent_, vals, ids, vals);
}

void TopKSae::forward_pass(const Tensor& x, bool train) {
  const int64_t B = x.rows(), k = cfg_.k, d = cfg_.d;
  MOESAE_CHECK(x.cols() == d, "input has d=", x.cols(), ", model expects ", d);
  x_ = x;
  u_ = be_.empty(B, d);
  subtract_bias(be_, x, b_pre_->value, u_);
  xu_ = u_;
  if (shards_) {  // every token to every rank (each holds one block of the dictionary)
    profile::Scope ps("dispatch");
    const int blocks = shards_->experts();
    Tensor all = host_tensor(B, blocks, DType::I32), ones = host_tensor(B, blocks);
    for (int64_t b = 0; b < B; ++b)
      for (int r = 0; r < blocks; ++r) {
        all.host<int32_t>()[b * blocks + r] = r;
        ones.host<float>()[b * blocks + r] = 1.f;
      }
    xu_ = shards_->dispatch(u_, be_.from_host(all), be_.from_host(ones)).u;
  }
  // Dense encoder: pre = u W_enc^T (+ b_enc), then ReLU, then TopK (ReLU before TopK, as the references).
  Tensor pre = be_.empty(xu_.rows(), w_enc_->value.rows());
  {
    profile::Scope ps("encoder");
    be_.gemm(false, true, 1.f, xu_, w_enc_->value, 0.f, pre);
    if (b_enc_) be_.add_row_vector(pre, b_enc_->value, 1.f);
    be_.relu(pre);
  }
  profile::Scope select_scope("select+decode");
  x_hat_ = be_.empty(B, d);
  const Tensor gids = select(pre, static_cast<int>(k), coef_, ids_, nullptr);
  if (!shards_) {
    code_.vals = coef_;
    code_.ids = ids_;
    sparse_decode(be_, coef_, ids_, w_dec_->value, b_pre_->value, x_hat_);
  } else {  // x^ = b_pre + the ranks' partial decodes
    Tensor partial = be_.empty(xu_.rows(), d);
    be_.sparse_rows_matmul(coef_, ids_, w_dec_->value, 0.f, partial);
    code_.vals = be_.empty(B, k);
    code_.ids = be_.empty(B, k, DType::I32);
    shards_->combine(partial, gids, coef_, coef_, x_hat_, code_.ids, code_.vals);
    be_.add_row_vector(x_hat_, b_pre_->value, 1.f);
  }

  aux_k_ = 0;
  const double aux = train && cfg_.auxk && cfg_.auxk_alpha > 0 ? auxk_forward(x, pre) : 0.0;
  queue_stats(x, code_.vals, {}, [aux](const auto&, SaeStats& s) {
    s.aux = aux;
    s.loss = s.recon + s.aux;
  });
}

double TopKSae::auxk_forward(const Tensor& x, const Tensor& pre) {
  const int64_t B = x.rows(), d = cfg_.d;
  Tensor dead_mask = be_.empty_vector(cfg_.dict_size, DType::I32);
  const int64_t n_dead = be_.threshold_mask(fired_->value, cfg_.dead_threshold_tokens, dead_mask);
  if (n_dead == 0) return 0.0;  // the counters are the whole job's: every rank agrees
  aux_k_ = static_cast<int>(std::min<int64_t>(cfg_.resolved_k_aux(), n_dead));
  const Tensor my_mask = dead_mask.row_range(first_latent_, first_latent_ + w_enc_->value.rows());
  const Tensor gids = select(pre, aux_k_, aux_vals_, aux_ids_, &my_mask);
  // e = x - x^ (not detached: see backward), e^ = W_dec^T z_aux (no bias).
  aux_resid_ = be_.empty(B, d);
  be_.copy(x, aux_resid_);
  be_.axpy(-1.f, x_hat_, aux_resid_);
  aux_hat_ = be_.empty(B, d);
  if (!shards_) {
    be_.sparse_rows_matmul(aux_vals_, aux_ids_, w_dec_->value, 0.f, aux_hat_);
  } else {
    Tensor partial = be_.empty(xu_.rows(), d);
    be_.sparse_rows_matmul(aux_vals_, aux_ids_, w_dec_->value, 0.f, partial);
    Tensor ids = be_.empty(B, aux_k_, DType::I32), vals = be_.empty(B, aux_k_);
    shards_->combine(partial, gids, aux_vals_, aux_vals_, aux_hat_, ids, vals);
  }
  Tensor err = be_.empty_vector(B);
  be_.row_squared_error(aux_hat_, aux_resid_, err);
  // Total variance of x around its batch mean: sum ||x||^2 - B ||mean||^2.
  Tensor mean = be_.empty_vector(d);
  double total_var = 0, err_sum = 0;
  if (!group_ || group_->size() == 1) {
    be_.sum_rows(x, mean, 1.f / float(B), 0.f);
    using Op = Backend::ReduceOp;
    const std::vector<double> r =  // one host round trip
        be_.reduce_many({{Op::SumSquares, x}, {Op::SumSquares, mean}, {Op::Sum, err}});
    total_var = r[0] - double(B) * r[1];
    err_sum = r[2];
  } else {  // over the group's batch: column sums and the sum of squares, added over the members
    be_.sum_rows(x, mean, 1.f, 0.f);
    const std::vector<double> r =
        be_.reduce_many({{Backend::ReduceOp::SumSquares, x}, {Backend::ReduceOp::Sum, err}});
    err_sum = r[1];
    Tensor h = be_.to_host(mean);
    std::vector<double> sums(d + 1);
    for (int64_t t = 0; t < d; ++t) sums[t] = h.host<float>()[t];
    sums[d] = r[0];
    group_->sum(sums.data(), sums.size());
    const double rows = double(group_batch(B));
    double mean_sq = 0;
    for (int64_t t = 0; t < d; ++t) {
      const double m = double(float(sums[t] / rows));
      mean_sq += m * m;
    }
    total_var = sums[d] - rows * mean_sq;
  }
  total_var = std::max(total_var, 1e-12);
  const double weight = cfg_.auxk_alpha * aux_factor() / total_var;
  aux_coef_ = 2.0 * weight;
  return weight * err_sum;
}

void TopKSae::backward() {
  const int64_t B = x_.rows(), M = xu_.rows(), k = cfg_.k, d = cfg_.d;
  profile::Scope ps("backward");
  Tensor dxhat = be_.empty(B, d);
  reconstruction_grad(x_, dxhat);
  Tensor dhat;  // AuxK: dL/de^ = aux_coef (e^ - e); e = x - x^ is not detached (as the reference code), so
  if (aux_k_ > 0) {  // the same vector also flows into x^.
    dhat = be_.empty(B, d);
    be_.copy(aux_hat_, dhat);
    be_.axpy(-1.f, aux_resid_, dhat);
    be_.scale(dhat, static_cast<float>(aux_coef_));
    be_.axpy(1.f, dhat, dxhat);
  }
  Tensor xdxhat = dxhat, xdhat = dhat;  // the same for the tokens this rank's latents serve
  if (shards_) {
    be_.sum_rows(dxhat, b_pre_->grad, 1.f, 1.f);
    xdxhat = shards_->dispatch_rows(dxhat);
    if (aux_k_ > 0) xdhat = shards_->dispatch_rows(dhat);
  }
  Tensor dcoef = be_.empty(M, k);
  sparse_decode_backward(be_, xdxhat, coef_, ids_, w_dec_->value, w_dec_->grad, shards_ ? Tensor() : b_pre_->grad,
                         dcoef);
  be_.relu_backward(coef_, dcoef);  // dL/dpre at the selected latents (ReLU mask)
  Tensor du = be_.empty(M, d);
  sparse_encoder_backward(be_, dcoef, dcoef, ids_, xu_, w_enc_->value, w_enc_->grad,
                          b_enc_ ? b_enc_->grad : Tensor(), du);
  Tensor du_aux;
  if (aux_k_ > 0) {
    Tensor daux = be_.empty(M, aux_k_);
    sparse_decode_backward(be_, xdhat, aux_vals_, aux_ids_, w_dec_->value, w_dec_->grad, Tensor(), daux);
    be_.relu_backward(aux_vals_, daux);
    du_aux = be_.empty(M, d);
    sparse_encoder_backward(be_, daux, daux, aux_ids_, xu_, w_enc_->value, w_enc_->grad,
                            b_enc_ ? b_enc_->grad : Tensor(), du_aux);
  }
  if (shards_) {  // back to the origin, summed over the ranks (the main and AuxK paths together)
    if (aux_k_ > 0) be_.axpy(1.f, du_aux, du);
    du_aux = Tensor();
    Tensor odu = be_.empty(B, d), odw = be_.empty(B, shards_->experts());
    shards_->combine_backward(du, be_.zeros(M, shards_->experts()), odu, odw);
    du = odu;
  }
  be_.sum_rows(du, b_pre_->grad, -1.f, 1.f);  // u = x - b_pre
  if (du_aux.defined()) be_.sum_rows(du_aux, b_pre_->grad, -1.f, 1.f);
}

}  // namespace moesae
