// Fingerprints of store keys.
//
// The memory store keeps a 95-bit fingerprint of each key instead of the key bytes,
// which is what lets a tracked key cost under 64 bytes whatever its length. The hash
// is XXH3-128 seeded with a per-store random seed, so clients cannot precompute keys
// that collide; two of 1,000,000 live keys share a fingerprint with probability about
// n^2 / 2^96 = 1e-17.
//
// Besides the key bytes, the fingerprint covers what the stored state's meaning
// depends on: the algorithm always, and for token_bucket, leaky_bucket and gcra also
// the limit, period and burst, because their state is kept in units of the policy
// (1/period_ns of a token, 1/limit ns). A reload that changes such a policy therefore
// starts its keys afresh instead of misreading old state; the window algorithms count
// requests, which keep their meaning, so their counts carry over a reload.
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

KeyFingerprint FingerprintKey(std::string_view key, Algorithm algorithm, const Limit& limit,
                              uint64_t seed);

// A seed from the operating system's entropy source.
uint64_t RandomSeed();

}  // namespace sluice::store

#endif  // SLUICE_STORE_KEY_HASH_H_
