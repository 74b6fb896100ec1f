#include "fuzz/fuzz_targets.h"

#include <string>
#include <string_view>
#include <vector>

#include "core/algorithms.h"
#include "fuzz/fuzz_util.h"
#include "sim/simulate.h"

namespace sluice::fuzz {

int AlgorithmsOneInput(const uint8_t* data, size_t size) {
  Reader in(data, size);
  const Algorithm algorithm = kAllAlgorithms[in.Take<uint8_t>() % std::size(kAllAlgorithms)];
  const bool log = algorithm == Algorithm::kSlidingWindowLog;
  Limit limit;
  // Small values are the interesting ones most of the time; the top bit of the
  // selector lets the whole domain through.
  const uint8_t scale = in.Take<uint8_t>();
  const uint64_t quantity_mask = (scale & 1) ? kMaxQuantity : 63;
  limit.limit = in.Take<uint64_t>() % (quantity_mask + 1);
  limit.burst = in.Take<uint64_t>() % (quantity_mask + 1);
  if (log) limit.limit %= 257;  // the ring is allocated here
  const int64_t period_mask = (scale & 2) ? INT64_MAX : 0xFFFFFFFF;
  limit.period = Duration(1 + (in.Take<int64_t>() & period_mask) % period_mask);
  const uint64_t capacity = Capacity(algorithm, limit);

  core::CompactState state;
  core::SlidingWindowLogState log_state;
  std::vector<int64_t> ring(log ? std::max<uint64_t>(limit.limit, 1) : 1);
  if ((scale & 4) && !log) {
    // Arbitrary leftover bytes, as a reload that changed the policy leaves them. (The
    // log's ring is only ever written in time order by the algorithm itself, and the
    // store rebuilds it on a limit change, so its states come from the steps below.)
    state = in.Take<core::CompactState>();
  }

  int64_t now = in.Take<int64_t>() & ((scale & 8) ? INT64_MAX : 0xFFFFFFFFFF);
  for (int step = 0; step < 64 && !in.empty(); ++step) {
    const int32_t delta = in.Take<int32_t>();
    now = delta < 0 ? std::max<int64_t>(0, now + delta)
                    : (now > INT64_MAX - delta ? INT64_MAX : now + delta);
    const uint64_t cost = in.Take<uint8_t>() % (std::min<uint64_t>(capacity, 250) + 3);
    const Decision d =
        log ? core::DecideSlidingWindowLog(limit, log_state, ring, FromNanos(now), cost)
            : core::DecideCompact(algorithm, limit, state, FromNanos(now), cost);
    Require(d.limit == (limit.limit == 0 ? 0 : capacity), "limit is the capacity (0 if no rate)");
    Require(d.remaining <= capacity, "remaining <= capacity");
    Require(d.reset_after >= Duration(0), "reset_after >= 0");
    Require(d.retry_after >= Duration(0), "retry_after >= 0");
    Require(!d.allowed || d.retry_after == Duration(0), "allowed means retry_after 0");
    if (limit.limit == 0 || cost > capacity) {
      Require(!d.allowed && d.retry_after == Decision::kNever, "impossible cost never passes");
    }
    if (!d.allowed && limit.limit > 0 && cost <= capacity) {
      Require(d.retry_after > Duration(0) && d.retry_after < Decision::kNever,
              "a possible cost gets a finite, positive retry_after");
    }
  }
  return 0;
}

int DurationOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  sim::ParseCount(text);
  const std::optional<Duration> parsed = sim::ParseDuration(text);
  if (parsed) {
    Require(*parsed >= Duration(0), "durations are not negative");
    Require(sim::ParseDuration(sim::FormatDuration(*parsed)) == parsed, "format round-trips");
  }
  return 0;
}

}  // namespace sluice::fuzz
