#include "sae/params.h"

namespace moesae {

Param& ParamSet::add(Backend& be, const std::string& name, int64_t rows, int64_t cols, bool decoder) {
  MOESAE_CHECK(!find(name), "duplicate parameter ", name);
  params_.push_back(Param{name, be.zeros(rows, cols), be.zeros(rows, cols), decoder});
  return params_.back();
}

Param& ParamSet::add_vector(Backend& be, const std::string& name, int64_t n) {
  MOESAE_CHECK(!find(name), "duplicate parameter ", name);
  params_.push_back(Param{name, be.zeros_vector(n), be.zeros_vector(n), false});
  return params_.back();
}

Param& ParamSet::add_buffer(Backend& be, const std::string& name, int64_t n, DType dt) {
  MOESAE_CHECK(!find(name), "duplicate buffer ", name);
  buffers_.push_back(Param{name, be.zeros_vector(n, dt), Tensor(), false});
  return buffers_.back();
}

Param* ParamSet::find(const std::string& name) {
  for (auto& p : params_)
    if (p.name == name) return &p;
  for (auto& p : buffers_)
    if (p.name == name) return &p;
  return nullptr;
}

Param& ParamSet::get(const std::string& name) {
  Param* p = find(name);
  if (!p) fail("model has no parameter '", name, "'");
  return *p;
}

std::vector<Param*> ParamSet::trainable() {
  std::vector<Param*> out;
  for (auto& p : params_) out.push_back(&p);
  return out;
}

std::vector<Param*> ParamSet::buffers() {
  std::vector<Param*> out;
  for (auto& p : buffers_) out.push_back(&p);
  return out;
}

std::vector<Param*> ParamSet::all() {
  auto out = trainable();
  for (auto& p : buffers_) out.push_back(&p);
  return out;
}

}  // namespace moesae
