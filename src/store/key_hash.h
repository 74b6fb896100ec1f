// Fingerprints of store keys.
//
// The memory store keeps a 96-bit fingerprint of each key instead of the key bytes,
// which is what lets a tracked key cost under 64 bytes whatever its length. The hash
// is XXH3-128 seeded with a per-store random seed, so clients cannot precompute keys
// that collide; with 96 compared bits two of 1,000,000 live keys share a fingerprint
// with probability about n^2 / 2^97 = 6e-18. The algorithm is part of the hash, so a
// rule that changes algorithm on reload starts from fresh state instead of reading
// another algorithm's bytes.
#ifndef SLUICE_STORE_KEY_HASH_H_
#define SLUICE_STORE_KEY_HASH_H_

#include <cstdint>
#include <string_view>

#include "sluice/limiter.h"

namespace sluice::store {

struct KeyFingerprint {
  uint64_t lo = 0;
  uint64_t hi = 0;
};

KeyFingerprint FingerprintKey(std::string_view key, Algorithm algorithm, uint64_t seed);

// A seed from the operating system's entropy source.
uint64_t RandomSeed();

}  // namespace sluice::store

#endif  // SLUICE_STORE_KEY_HASH_H_
