// moesae models: the group of processes that split one training batch between them (data parallelism).
// A model given a group takes its batch statistics over the whole group's batch, so that P processes with B/P
// tokens each compute, together, the gradient of the 1-process objective on all B tokens:
//   - the loss normalisation c (1/(B d) or 1/B) uses the group's B;
//   - the router's load f_i and mean probabilities P_i (Eq. 2.2) are the group's;
//   - the dead-latent counters grow by the group's B and reset where a latent fired on any member;
//   - AuxK's normalising variance is the group batch's.
// Implemented over a Communicator in parallel/data_parallel.h; the models never see the communicator.
#pragma once
#include <cstddef>
#include <cstdint>

namespace moesae {

class BatchGroup {
 public:
  virtual ~BatchGroup() = default;
  virtual int size() const = 0;  // members; each holds an equal share of the batch
  // In place, over the members; every member gets the identical result.
  virtual void sum(double* values, size_t n) = 0;
  virtual void min(int32_t* values, size_t n) = 0;
};

}  // namespace moesae
