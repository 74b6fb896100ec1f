// The answer a limiter gives for one request.
//
// A plain value, cheap to copy; the hot path returns it by value and never throws.
#ifndef SLUICE_DECISION_H_
#define SLUICE_DECISION_H_

#include <cstdint>

#include "sluice/clock.h"

namespace sluice {

struct Decision {
  // Means "no amount of waiting helps": the cost exceeds the capacity, or the limit is 0.
  static constexpr Duration kNever = Duration::max();

  bool allowed = false;
  // The most a client can take at once under this policy: the burst (bucket capacity)
  // for token_bucket, leaky_bucket and gcra; the limit for the window algorithms.
  uint64_t limit = 0;
  // What is left for further requests right now, after this request was applied.
  uint64_t remaining = 0;
  // Time until the quota is whole again (remaining == limit) if nothing more is taken.
  Duration reset_after{0};
  // Zero when allowed; otherwise how long until a request of the same cost could pass
  // (kNever when it never can).
  Duration retry_after{0};

  friend bool operator==(const Decision&, const Decision&) = default;
};

}  // namespace sluice

#endif  // SLUICE_DECISION_H_
