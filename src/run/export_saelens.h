// moesae run: export to the SAELens on-disk format: `cfg.json` + `sae_weights.safetensors` with
// W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in].
// A dense TopK SAE exports as SAELens architecture "topk" (loadable by SAELens' TopK SAE; ReLU-then-TopK equals
// its TopK-then-ReLU). Gated SAEs export as "gated" (b_gate, r_mag, b_mag). MoE SAEs (switch, scale) have no SAELens
// counterpart: they export every tensor (router included) under architecture "moesae_<arch>", with the routing
// settings in cfg.json, for tools that implement the routing themselves.
#pragma once
#include <string>

namespace moesae {

void export_saelens(const std::string& record_path, const std::string& out_dir);

}  // namespace moesae
