#include "store/key_hash.h"

#include <xxhash.h>

#include <random>

namespace sluice::store {

KeyFingerprint FingerprintKey(std::string_view key, Algorithm algorithm, uint64_t seed) {
  // Mixing the algorithm into the seed keeps the key bytes hashed as they are.
  const uint64_t algorithm_seed =
      seed ^ ((static_cast<uint64_t>(algorithm) + 1) * uint64_t{0x9E3779B97F4A7C15});
  const XXH128_hash_t h = XXH3_128bits_withSeed(key.data(), key.size(), algorithm_seed);
  return KeyFingerprint{.lo = h.low64, .hi = h.high64};
}

uint64_t RandomSeed() {
  std::random_device entropy;
  return (uint64_t{entropy()} << 32) ^ entropy();
}

}  // namespace sluice::store
