// The rate-limit policy vocabulary shared by the algorithms, the stores and config:
// which algorithm, and the numbers it enforces.
//
// Plain values; safe to share read-only between threads.
#ifndef SLUICE_LIMITER_H_
#define SLUICE_LIMITER_H_

#include <cstdint>
#include <optional>
#include <string_view>

#include "sluice/clock.h"

namespace sluice {

enum class Algorithm : uint8_t {
  kTokenBucket,
  kLeakyBucket,  // as a meter: requests fill the bucket, it drains at the rate
  kFixedWindow,
  kSlidingWindowLog,
  kSlidingWindowCounter,
  kGcra,
};
inline constexpr Algorithm kAllAlgorithms[] = {
    Algorithm::kTokenBucket,      Algorithm::kLeakyBucket,          Algorithm::kFixedWindow,
    Algorithm::kSlidingWindowLog, Algorithm::kSlidingWindowCounter, Algorithm::kGcra,
};

// The config spelling: "token_bucket", "leaky_bucket", "fixed_window",
// "sliding_window_log", "sliding_window_counter", "gcra".
std::string_view AlgorithmName(Algorithm algorithm);
std::optional<Algorithm> ParseAlgorithm(std::string_view name);
// True for the algorithms whose capacity is `burst` rather than `limit`.
bool UsesBurst(Algorithm algorithm);

// Largest limit, burst or cost the algorithms accept. Every intermediate product
// (quantity x period in nanoseconds, time x limit) then fits in 128 bits, so the
// arithmetic is exact integer arithmetic with no overflow anywhere in the domain.
inline constexpr uint64_t kMaxQuantity = uint64_t{1} << 62;
// The sliding window log keeps one timestamp per admitted unit of cost, so its limit
// is bounded by memory rather than arithmetic (8 bytes per unit, 8 MiB per key here).
inline constexpr uint64_t kMaxLogLimit = uint64_t{1} << 20;

// `limit` units of cost per `period` is the sustained rate. `burst` is the capacity
// of token_bucket, leaky_bucket and gcra (the most that may pass at once); the window
// algorithms ignore it.
// REQUIRES: period > 0; limit, burst <= kMaxQuantity.
struct Limit {
  uint64_t limit = 0;
  Duration period{0};
  uint64_t burst = 0;

  // The usual case: burst equal to limit.
  static constexpr Limit PerPeriod(uint64_t limit, Duration period) {
    return Limit{limit, period, limit};
  }
  friend bool operator==(const Limit&, const Limit&) = default;
};

// The most one request can take under `limit` with `algorithm`.
inline uint64_t Capacity(Algorithm algorithm, const Limit& limit) {
  return UsesBurst(algorithm) ? limit.burst : limit.limit;
}

}  // namespace sluice

#endif  // SLUICE_LIMITER_H_
