// moesae core: a small, fully serializable random number generator (xoshiro256**, seeded by splitmix64).
// Its whole state is four 64-bit words, so checkpoints restore it exactly.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>

namespace moesae {

class Rng {
 public:
  using State = std::array<uint64_t, 4>;
  explicit Rng(uint64_t seed = 0) { seed_with(seed); }

  void seed_with(uint64_t seed) {
    uint64_t z = seed;
    for (auto& w : s_) w = splitmix64(z);
    has_spare_ = false;
  }
  uint64_t next_u64() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return (next_u64() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return n == 0 ? 0 : next_u64() % n; }
  // Standard normal (Box-Muller; the spare value is part of the state).
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(6.283185307179586 * u2);
    has_spare_ = true;
    return r * std::cos(6.283185307179586 * u2);
  }

  // Serialization: 4 state words + spare flag + spare value bits.
  std::array<uint64_t, 6> save() const {
    uint64_t bits;
    static_assert(sizeof(double) == sizeof(uint64_t));
    __builtin_memcpy(&bits, &spare_, 8);
    return {s_[0], s_[1], s_[2], s_[3], has_spare_ ? 1ull : 0ull, bits};
  }
  void load(const std::array<uint64_t, 6>& a) {
    for (int i = 0; i < 4; ++i) s_[i] = a[i];
    has_spare_ = a[4] != 0;
    __builtin_memcpy(&spare_, &a[5], 8);
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  State s_{};
  bool has_spare_ = false;
  double spare_ = 0.0;
};

// A well-mixed seed for an independent stream `stream` of `seed` (splitmix64 finaliser), e.g. one RNG per data
// block, rank or epoch: mix_seed(mix_seed(seed, kStreamTag), index).
inline uint64_t mix_seed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (stream + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace moesae
