// Time as the limiters see it.
//
// Every algorithm takes `now` as an argument and never reads a clock itself, so
// tests drive a simulated time line and the Redis store can use the server's clock.
// A Timestamp counts nanoseconds on one time line from an epoch that the Clock fixes
// (boot for the steady clock, the Unix epoch for Redis TIME); only differences and
// window alignment (multiples of a period since the epoch) matter to the algorithms.
//
// Thread-safety: Clock implementations are safe to call from any thread.
#ifndef SLUICE_CLOCK_H_
#define SLUICE_CLOCK_H_

#include <chrono>
#include <cstdint>

namespace sluice {

using Duration = std::chrono::nanoseconds;

// The limiter time line. It is not a std clock (it has no now()); it only tags
// time points so they cannot be mixed with system_clock or steady_clock points.
struct LimiterTimeline {
  using rep = int64_t;
  using period = std::nano;
  using duration = Duration;
  static constexpr bool is_steady = false;
};
using Timestamp = std::chrono::time_point<LimiterTimeline, Duration>;

// Nanoseconds since the epoch, the representation the algorithms compute with.
constexpr int64_t ToNanos(Timestamp t) { return t.time_since_epoch().count(); }
constexpr Timestamp FromNanos(int64_t ns) { return Timestamp(Duration(ns)); }

class Clock {
 public:
  virtual ~Clock() = default;
  virtual Timestamp Now() const = 0;
};

// Monotonic time since boot (CLOCK_MONOTONIC). With SystemClock, the only places in
// sluice that read std::chrono's clocks.
class SteadyClock final : public Clock {
 public:
  Timestamp Now() const override;
};

// Wall-clock time since the Unix epoch (CLOCK_REALTIME): for counters whose windows
// must line up with other services' (Envoy's rate limit service starts its windows on
// multiples of the unit since the epoch). It may step; the algorithms treat a step
// back as no time passing.
class SystemClock final : public Clock {
 public:
  Timestamp Now() const override;
};

// A clock that moves only when told to: for tests and `sluice simulate`.
// Not thread-safe to Set/Advance while other threads read it.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(Timestamp start = Timestamp{}) : now_(start) {}
  Timestamp Now() const override { return now_; }
  void Set(Timestamp t) { now_ = t; }
  void Advance(Duration d) { now_ += d; }

 private:
  Timestamp now_;
};

}  // namespace sluice

#endif  // SLUICE_CLOCK_H_
