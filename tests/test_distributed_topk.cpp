// The exact distributed global Top-K (src/parallel/distributed_topk.h) at whatever rank count the binary runs with
// (alone: 1 rank; tests/cli/distributed_topk.sh runs it under mpirun at 2, 3 and 4): every rank's kept counts must
// select exactly the 1-process Top-K over the union of all ranks' candidates, ties (by the smaller id) included.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <vector>

#include "mpi_gtest.h"
#include "parallel/distributed_topk.h"

using namespace moesae;

namespace {

comm::Communicator* g_comm = nullptr;

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

constexpr int kIdsPerRank = 100;  // rank r owns latent ids [r*100, r*100 + 100) of every token

struct Cand {
  float v;
  int32_t id;
};
bool before(const Cand& a, const Cand& b) { return a.v > b.v || (a.v == b.v && a.id < b.id); }

// Rank r's candidates of token t, as every rank can recompute them: a random count (often 0, so that some tokens
// live on one rank only) of coarse values after ReLU (many ties and zeros). `spread` = false puts every token on
// its home rank alone.
std::vector<Cand> candidates(uint64_t seed, int64_t t, int r, int P, bool spread) {
  const uint64_t h = mix(seed * 1000003ull + uint64_t(t) * 7919ull + uint64_t(r));
  int m = int(h % 31);
  if (h % 5 == 0) m = 0;
  if (!spread && r != int(t % P)) m = 0;
  if (!spread && r == int(t % P) && m == 0) m = 3;
  std::vector<Cand> c;
  for (int j = 0; j < m; ++j) {
    const uint64_t g = mix(h + uint64_t(j) * 31);
    const float v = std::max(0.f, float(int64_t(g % 13) - 4) * 0.25f);  // {0, 0.25, ..., 2}: ties and zeros
    c.push_back({v, int32_t(r * kIdsPerRank + int(mix(g) % kIdsPerRank))});
  }
  std::sort(c.begin(), c.end(), [](const Cand& a, const Cand& b) { return a.id < b.id; });
  c.erase(std::unique(c.begin(), c.end(), [](const Cand& a, const Cand& b) { return a.id == b.id; }), c.end());
  std::sort(c.begin(), c.end(), before);
  return c;
}

// Runs the distributed selection on this rank's lists and checks every kept count against the 1-process Top-K.
void check_against_one_process(int64_t tokens, int K, uint64_t seed, bool spread) {
  const int P = g_comm->size(), me = g_comm->rank();
  TopKLists lists;
  lists.k = K;
  std::vector<int32_t> expected;
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<Cand> all;
    int participants = 0;
    for (int r = 0; r < P; ++r) {
      const auto c = candidates(seed, t, r, P, spread);
      participants += c.empty() ? 0 : 1;
      all.insert(all.end(), c.begin(), c.end());
    }
    const auto mine = candidates(seed, t, me, P, spread);
    if (mine.empty()) continue;
    std::sort(all.begin(), all.end(), before);
    int from_me = 0;
    for (size_t j = 0; j < std::min(all.size(), size_t(K)); ++j)
      from_me += all[j].id / kIdsPerRank == me ? 1 : 0;
    expected.push_back(from_me);
    lists.token.push_back(t);
    lists.home.push_back(int32_t(t % P));
    lists.participants.push_back(participants);
    for (int j = 0; j < K; ++j) {
      const bool has = j < int(mine.size());
      lists.vals.push_back(has ? mine[size_t(j)].v : 0.f);
      lists.ids.push_back(has ? mine[size_t(j)].id : -1);
    }
  }
  const std::vector<int32_t> kept = distributed_topk_keep(*g_comm, lists);
  ASSERT_EQ(kept.size(), expected.size());
  int64_t wrong = 0;
  for (size_t i = 0; i < kept.size(); ++i) {
    if (kept[i] != expected[i] && wrong++ < 5)
      ADD_FAILURE() << "rank " << me << " token " << lists.token[i] << " (k=" << K << "): kept " << kept[i]
                    << ", the 1-process Top-K has " << expected[i] << " of this rank's candidates";
  }
  EXPECT_EQ(wrong, 0) << "of " << kept.size() << " lists on rank " << me;
}

}  // namespace

TEST(DistributedTopK, EqualsOneProcessTopKWithTies) {
  for (int K : {1, 4, 16, 40}) check_against_one_process(400, K, 11 + uint64_t(K), true);
}

TEST(DistributedTopK, TokensOnOneRankSkipTheMerge) {
  check_against_one_process(200, 8, 5, false);
}

TEST(DistributedTopK, NoListsAnywhere) {
  TopKLists lists;
  lists.k = 4;
  EXPECT_TRUE(distributed_topk_keep(*g_comm, lists).empty());
}

TEST(DistributedTopK, RejectsAnUnsortedList) {  // every rank passes the same bad list: all fail before any exchange
  TopKLists lists;
  lists.k = 2;
  lists.token = {0};
  lists.home = {0};
  lists.participants = {1};
  lists.vals = {0.5f, 1.f};
  lists.ids = {3, 4};
  try {
    distributed_topk_keep(*g_comm, lists);
    ADD_FAILURE() << "an unsorted list was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not sorted"), std::string::npos) << e.what();
  }
}

int main(int argc, char** argv) { return moesae::testing::run_mpi_gtest(argc, argv, "distributed_topk", &g_comm); }
