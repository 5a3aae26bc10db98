// moesae models: named parameters (value + gradient) and non-trained state buffers of a model.
#pragma once
#include <deque>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace moesae {

struct Param {
  std::string name;
  Tensor value;
  Tensor grad;           // same shape as value (undefined for buffers)
  bool decoder = false;  // decoder weights: unit-norm constraint + gradient projection (Section 2.1)
  // Expert parallelism (sae/expert_exchange.h): a parameter sharded over the ranks along its first dimension holds
  // rows [shard_first, shard_first + rows) of full_rows (for vectors: elements). full_rows == 0: the whole
  // parameter, replicated on every rank.
  int64_t shard_first = 0;
  int64_t full_rows = 0;
  bool sharded() const { return full_rows > 0; }
  // Rows (vectors: elements) of the whole parameter, and elements per row.
  int64_t global_rows() const { return sharded() ? full_rows : value.rank() == 1 ? value.numel() : value.rows(); }
  int64_t row_elems() const { return value.rank() == 1 ? 1 : value.cols(); }
};

// Owns the parameters of one model. References returned by add() stay valid for the model's lifetime.
class ParamSet {
 public:
  Param& add(Backend& be, const std::string& name, int64_t rows, int64_t cols, bool decoder = false);
  Param& add_vector(Backend& be, const std::string& name, int64_t n);
  Param& add_buffer(Backend& be, const std::string& name, int64_t n, DType dt);  // no gradient
  Param* find(const std::string& name);
  Param& get(const std::string& name);
  std::vector<Param*> trainable();
  std::vector<Param*> buffers();
  std::vector<Param*> all();

 private:
  std::deque<Param> params_;
  std::deque<Param> buffers_;
};

}  // namespace moesae
