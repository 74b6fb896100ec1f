#include "store/key_hash.h"

#include <xxhash.h>

#include <random>

namespace sluice::store {
namespace {

// A 64-bit mixer (the splitmix64 finaliser): distinct policies give unrelated seeds.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= uint64_t{0xBF58476D1CE4E5B9};
  x ^= x >> 27;
  x *= uint64_t{0x94D049BB133111EB};
  return x ^ (x >> 31);
}

}  // namespace

KeyFingerprint FingerprintKey(std::string_view key, Algorithm algorithm, const Limit& limit,
                              uint64_t seed) {
  // The policy goes into the seed, so the key bytes are hashed as they are, once.
  uint64_t policy = Mix(seed ^ (static_cast<uint64_t>(algorithm) + 1));
  if (UsesBurst(algorithm)) {
    policy = Mix(policy ^ limit.limit);
    policy = Mix(policy ^ static_cast<uint64_t>(limit.period.count()));
    policy = Mix(policy ^ limit.burst);
  }
  const XXH128_hash_t h = XXH3_128bits_withSeed(key.data(), key.size(), policy);
  return KeyFingerprint{.lo = h.low64, .hi = h.high64};
}

uint64_t RandomSeed() {
  std::random_device entropy;
  return (uint64_t{entropy()} << 32) ^ entropy();
}

}  // namespace sluice::store
