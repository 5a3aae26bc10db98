#include "parallel/distributed_topk.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "core/error.h"

namespace moesae {
namespace {

// a ranks before b: larger value first, then smaller id (empty slots, id -1, last).
bool before(float va, int32_t ia, float vb, int32_t ib) {
  if (ia < 0 || ib < 0) return ia >= 0 && ib < 0;
  return va > vb || (va == vb && ia < ib);
}

int32_t valid_length(const int32_t* ids, int k) {
  int32_t n = 0;
  while (n < k && ids[n] >= 0) ++n;
  return n;
}

// One message per entry sent home: [token low, token high, K ids, K value bits] as int32 words.
int64_t words_per_entry(int k) { return 2 + 2 * int64_t(k); }

}  // namespace

std::vector<int32_t> distributed_topk_keep(comm::Communicator& comm, const TopKLists& in) {
  const int P = comm.size(), K = in.k;
  const size_t n = in.size();
  if (K <= 0) fail("distributed_topk_keep: k must be positive, got ", K);
  if (in.home.size() != n || in.participants.size() != n || in.vals.size() != n * size_t(K) ||
      in.ids.size() != n * size_t(K))
    fail("distributed_topk_keep: ", n, " tokens but ", in.home.size(), " homes, ", in.participants.size(),
         " participant counts, ", in.vals.size(), " values and ", in.ids.size(), " ids (k = ", K, ")");
  std::vector<int32_t> kept(n, 0);
  // Entries that must be merged go home, grouped by destination; the others keep their whole list.
  std::vector<int64_t> send_counts(P, 0);
  std::vector<std::vector<size_t>> by_home(P);
  for (size_t i = 0; i < n; ++i) {
    const int32_t* ids = &in.ids[i * K];
    const float* vals = &in.vals[i * K];
    const int32_t len = valid_length(ids, K);
    for (int32_t j = len; j < K; ++j)
      if (ids[j] >= 0) fail("distributed_topk_keep: token ", in.token[i], ": a candidate after an empty slot");
    for (int32_t j = 1; j < len; ++j)
      if (!before(vals[j - 1], ids[j - 1], vals[j], ids[j]))
        fail("distributed_topk_keep: token ", in.token[i], ": the list is not sorted (value desc, id asc)");
    if (in.home[i] < 0 || in.home[i] >= P) fail("distributed_topk_keep: home rank ", in.home[i], " of ", P);
    if (in.participants[i] < 1 || in.participants[i] > P)
      fail("distributed_topk_keep: token ", in.token[i], " has ", in.participants[i], " participants of ", P);
    if (in.participants[i] == 1) {
      kept[i] = len;  // the only holder: its top K is the token's
      continue;
    }
    by_home[in.home[i]].push_back(i);
    send_counts[in.home[i]] += words_per_entry(K);
  }
  std::vector<int32_t> send;
  send.reserve(size_t(n) * size_t(words_per_entry(K)));
  for (int h = 0; h < P; ++h)
    for (size_t i : by_home[h]) {
      const uint64_t t = uint64_t(in.token[i]);
      send.push_back(int32_t(uint32_t(t & 0xffffffffu)));
      send.push_back(int32_t(uint32_t(t >> 32)));
      for (int j = 0; j < K; ++j) send.push_back(in.ids[i * K + j]);
      for (int j = 0; j < K; ++j) {
        int32_t bits;
        std::memcpy(&bits, &in.vals[i * K + j], 4);
        send.push_back(bits);
      }
    }
  std::vector<int64_t> send_offsets = comm::Communicator::packed_offsets(send_counts);
  std::vector<int64_t> recv_counts;
  const std::vector<int32_t> recv = comm.all_to_all_v(send.data(), send_counts, send_offsets, &recv_counts);

  // At home: the lists of each token, merged; the reply is one kept count per received list, in arrival order.
  const int64_t W = words_per_entry(K);
  const size_t lists = recv.size() / size_t(W);
  std::unordered_map<int64_t, std::vector<size_t>> by_token;
  std::vector<int64_t> order;  // tokens in first-arrival order (deterministic)
  for (size_t l = 0; l < lists; ++l) {
    const int32_t* m = &recv[l * W];
    const int64_t t = int64_t(uint64_t(uint32_t(m[0])) | (uint64_t(uint32_t(m[1])) << 32));
    auto [it, fresh] = by_token.try_emplace(t);
    if (fresh) order.push_back(t);
    it->second.push_back(l);
  }
  std::vector<int32_t> reply(lists, 0);
  struct Cand {
    float v;
    int32_t id;
    size_t list;
  };
  std::vector<Cand> pool;
  for (int64_t t : order) {
    const std::vector<size_t>& ls = by_token[t];
    pool.clear();
    for (size_t l : ls) {
      const int32_t* ids = &recv[l * W + 2];
      const int32_t* bits = ids + K;
      for (int j = 0; j < K && ids[j] >= 0; ++j) {
        float v;
        std::memcpy(&v, &bits[j], 4);
        pool.push_back({v, ids[j], l});
      }
    }
    const size_t keep = std::min(pool.size(), size_t(K));
    std::partial_sort(pool.begin(), pool.begin() + long(keep), pool.end(),
                      [](const Cand& a, const Cand& b) { return before(a.v, a.id, b.v, b.id); });
    for (size_t j = 0; j + 1 < keep; ++j)
      if (pool[j].id == pool[j + 1].id && pool[j].v == pool[j + 1].v)
        fail("distributed_topk_keep: token ", t, ": latent ", pool[j].id, " arrived from two ranks");
    for (size_t j = 0; j < keep; ++j) ++reply[pool[j].list];
  }
  // Replies go back the way the lists came: to each source rank, in the order it sent them.
  std::vector<int64_t> reply_counts(P), reply_offsets(P);
  int64_t at = 0;
  for (int s = 0; s < P; ++s) {
    reply_counts[s] = recv_counts[s] / W;
    reply_offsets[s] = at;
    at += reply_counts[s];
  }
  std::vector<int64_t> back_counts;
  const std::vector<int32_t> back = comm.all_to_all_v(reply.data(), reply_counts, reply_offsets, &back_counts);
  size_t b = 0;
  for (int h = 0; h < P; ++h) {
    if (back_counts[h] != int64_t(by_home[h].size()))
      fail("distributed_topk_keep: rank ", h, " answered ", back_counts[h], " of ", by_home[h].size(), " lists");
    for (size_t i : by_home[h]) kept[i] = back[b++];
  }
  return kept;
}

}  // namespace moesae
