#include "sae/expert_exchange.h"

namespace moesae {

Tensor keep_global_topk(Backend& be, ExpertExchange& ex, int64_t first_latent, const Tensor& scores, Tensor ids,
                        Tensor vals, Tensor* slots) {
  const int64_t M = ids.rows(), k = ids.cols();
  Tensor hi = be.to_host(ids), hv = be.to_host(vals);
  Tensor hs = slots ? be.to_host(*slots) : Tensor();
  Tensor gids = host_tensor(M, k, DType::I32);
  int32_t *ip = hi.host<int32_t>(), *gp = gids.host<int32_t>();
  for (int64_t i = 0; i < M * k; ++i) gp[i] = ip[i] < 0 ? -1 : int32_t(ip[i] + first_latent);
  Tensor global = be.from_host(gids);
  const std::vector<int32_t> kept = ex.keep(scores, global);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = kept[m]; j < k; ++j) {
      ip[m * k + j] = -1;
      gp[m * k + j] = -1;
      hv.host<float>()[m * k + j] = 0.f;
      if (slots) hs.host<int32_t>()[m * k + j] = hs.host<int32_t>()[m * k];
    }
  be.upload(hi, ids);
  be.upload(gids, global);
  be.upload(hv, vals);
  if (slots) be.upload(hs, *slots);
  return global;
}

}  // namespace moesae
