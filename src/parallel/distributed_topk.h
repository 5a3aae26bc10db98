// moesae parallel: the exact distributed global Top-K (expert-parallel.md §3.2-3.3), the selection step of an
// expert-parallel MoE SAE (Eq. 2.3 when a token's chosen experts live on several ranks) and of a dense TopK SAE whose
// dictionary is sharded over ranks.
//
// A token's candidates are spread over the ranks that hold them; every candidate has a global latent id, unique
// within the token. Under the total order "larger value first, then smaller id", let L_r be rank r's top min(K, n_r)
// candidates of the token. Every member of the global top K is in some L_r (it has fewer than K candidates above it
// anywhere), and the members on rank r form a prefix of L_r. So each participating rank sends its sorted L_r to the
// token's home rank; home merges them, takes the first K and answers each rank with one number, its kept count.
// The result is exactly the 1-process Top-K over the union, ties included. Tokens with a single participating rank
// skip the round (everything of its L_r is kept).
#pragma once
#include <cstdint>
#include <vector>

#include "comm/communicator.h"

namespace moesae {

// This rank's candidate lists, one per (token, this rank) pair: entry i belongs to token token[i] (an id unique in
// the job, e.g. its global row), whose home rank is home[i] and which has candidates on participants[i] ranks
// (this one included). vals/ids [n, K] row-major hold the rank's local top-K of that token sorted under the total
// order, padded with id -1 when the rank has fewer than K candidates.
struct TopKLists {
  int k = 0;
  std::vector<int64_t> token;
  std::vector<int32_t> home;
  std::vector<int32_t> participants;
  std::vector<float> vals;
  std::vector<int32_t> ids;
  size_t size() const { return token.size(); }
};

// Kept count per entry: the length of the prefix of the entry's list that belongs to its token's global Top-K.
// Collective over `comm` (every rank calls it, with its own lists; two all-to-all-v rounds plus their count
// exchanges). Fails with one message on malformed input found locally (an unsorted list, a home rank or
// participant count out of range) or at home (the same latent of a token kept from two ranks). The ranks must
// agree on each token's home and participant count; that is not checked.
std::vector<int32_t> distributed_topk_keep(comm::Communicator& comm, const TopKLists& lists);

}  // namespace moesae
