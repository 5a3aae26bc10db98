#include "train/train_step.h"

#include "core/profile.h"

namespace moesae {

StepResult train_step(Sae& sae, Adam& adam, const Tensor& x, const StepOptions& options) {
  sae.apply_decoder_constraint();
  sae.zero_grad();
  sae.forward_pass(x, true);
  sae.backward();
  if (options.reduce_gradients) options.reduce_gradients();
  GradNorm norm(0.0);
  {
    profile::Scope ps("optimizer");
    norm = clip_grad_norm(sae.params(), sae.backend(), options.grad_clip, options.shards);
    sae.project_decoder_gradient();
    adam.step(options.lr);
    sae.record_firing();
  }
  profile::Scope ps("statistics");  // on CUDA: waiting for the device to finish the step
  StepResult out;
  out.stats = sae.stats();  // the step's one wait at its end: the statistics and the norm arrive together
  out.grad_norm = norm.value();
  return out;
}

}  // namespace moesae
