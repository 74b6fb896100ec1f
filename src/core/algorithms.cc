#include "core/algorithms.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/check.h"

namespace sluice::core {
namespace {

using u128 = unsigned __int128;
using i128 = __int128;

constexpr int64_t kMaxDurationNs = std::numeric_limits<int64_t>::max() - 1;  // < kNever

u128 Join(uint64_t lo, uint64_t hi) { return (u128{hi} << 64) | lo; }
void Split(u128 v, uint64_t& lo, uint64_t& hi) {
  lo = static_cast<uint64_t>(v);
  hi = static_cast<uint64_t>(v >> 64);
}
// Division is where the 128-bit arithmetic costs: a library call for each. Almost
// every real policy's numbers fit 64 bits, where the CPU divides directly.
u128 Div(u128 a, u128 b) {
  if ((a >> 64) == 0 && (b >> 64) == 0) return static_cast<uint64_t>(a) / static_cast<uint64_t>(b);
  return a / b;
}
u128 CeilDiv(u128 a, u128 b) {
  if ((a >> 64) == 0 && (b >> 64) == 0) {
    const uint64_t a64 = static_cast<uint64_t>(a), b64 = static_cast<uint64_t>(b);
    return a64 / b64 + (a64 % b64 != 0 ? 1 : 0);
  }
  return a / b + (a % b != 0 ? 1 : 0);
}

// Durations too long for 64 bits are reported as the longest finite duration.
Duration Nanos(u128 ns) {
  return Duration(static_cast<int64_t>(std::min<u128>(ns, kMaxDurationNs)));
}
Duration Nanos(i128 ns) { return ns <= 0 ? Duration(0) : Nanos(static_cast<u128>(ns)); }

uint64_t ToCount(u128 v) {
  return static_cast<uint64_t>(std::min<u128>(v, std::numeric_limits<uint64_t>::max()));
}

// The request's time, never earlier than what the state has seen, and inside
// [0, 2^63 - 2] so that the token bucket's last + 1 stamp cannot overflow.
int64_t EffectiveNow(Timestamp now, int64_t latest_seen) {
  return std::min(std::max({ToNanos(now), latest_seen, int64_t{0}}),
                  std::numeric_limits<int64_t>::max() - 1);
}

Decision DenyForever(uint64_t capacity, uint64_t remaining, Duration reset_after) {
  return Decision{.allowed = false,
                  .limit = capacity,
                  .remaining = remaining,
                  .reset_after = reset_after,
                  .retry_after = Decision::kNever};
}

// Start of the period-aligned window holding `now_ns` (now_ns >= 0).
int64_t WindowStart(int64_t now_ns, int64_t period_ns) { return now_ns - now_ns % period_ns; }

// Token bucket, leaky bucket and GCRA all describe "a quantity `used` out of `capacity`,
// in units of 1/period_ns of a request, that drains at `limit` units per ns". This
// computes the decision numbers from that description; the three keep their own state.
Decision BucketDecision(bool allowed, const Limit& limit, u128 used_units, uint64_t cost) {
  const u128 period = static_cast<u128>(limit.period.count());
  const u128 capacity = u128{limit.burst} * period;
  Decision d;
  d.allowed = allowed;
  d.limit = limit.burst;
  d.remaining = used_units >= capacity ? 0 : ToCount(Div(capacity - used_units, period));
  d.reset_after = Nanos(CeilDiv(used_units, limit.limit));
  if (!allowed) {
    const u128 over = used_units + u128{cost} * period - capacity;
    d.retry_after = cost > limit.burst ? Decision::kNever : Nanos(CeilDiv(over, limit.limit));
  }
  return d;
}

template <typename State>
State Load(const CompactState& compact) {
  static_assert(std::is_trivially_copyable_v<State>);
  State s;
  std::memcpy(static_cast<void*>(&s), &compact, sizeof(State));
  return s;
}
template <typename State>
void Store(const State& s, CompactState& compact) {
  std::memcpy(static_cast<void*>(&compact), &s, sizeof(State));
}

}  // namespace

Decision DecideTokenBucket(const Limit& limit, TokenBucketState& state, Timestamp now,
                           uint64_t cost) {
  const u128 period = static_cast<u128>(limit.period.count());
  const u128 capacity = u128{limit.burst} * period;
  if (limit.limit == 0) return DenyForever(0, 0, Duration(0));

  // A non-positive stamp can only be the empty state (or bytes that are not a token
  // bucket's, which are treated the same).
  const bool fresh = state.last_plus_one <= 0;
  const int64_t last = fresh ? 0 : state.last_plus_one - 1;
  const int64_t t = EffectiveNow(now, last);
  u128 tokens = capacity;
  if (!fresh) {
    tokens = std::min(Join(state.tokens_lo, state.tokens_hi), capacity);
    // Refill without forming tokens + elapsed*limit, which could pass 2^128.
    const u128 refill = static_cast<u128>(t - last) * limit.limit;
    tokens = refill >= capacity - tokens ? capacity : tokens + refill;
  }
  const u128 need = u128{cost} * period;
  const bool allowed = need <= tokens;
  if (allowed) tokens -= need;
  Split(tokens, state.tokens_lo, state.tokens_hi);
  state.last_plus_one = t + 1;
  return BucketDecision(allowed, limit, capacity - tokens, cost);
}

Decision DecideLeakyBucket(const Limit& limit, LeakyBucketState& state, Timestamp now,
                           uint64_t cost) {
  const u128 period = static_cast<u128>(limit.period.count());
  const u128 capacity = u128{limit.burst} * period;
  if (limit.limit == 0) return DenyForever(0, 0, Duration(0));

  const int64_t t = EffectiveNow(now, state.last);
  u128 level = std::min(Join(state.level_lo, state.level_hi), capacity);
  const u128 drained = static_cast<u128>(t - std::max<int64_t>(state.last, 0)) * limit.limit;
  level = drained >= level ? 0 : level - drained;
  const u128 pour = u128{cost} * period;
  const bool allowed = level + pour <= capacity;
  if (allowed) level += pour;
  Split(level, state.level_lo, state.level_hi);
  state.last = t;
  return BucketDecision(allowed, limit, level, cost);
}

Decision DecideGcra(const Limit& limit, GcraState& state, Timestamp now, uint64_t cost) {
  // One request's emission interval period/limit ns is exactly `period` units of
  // 1/limit ns; the tolerance burst*period/limit ns is burst*period units.
  const u128 period = static_cast<u128>(limit.period.count());
  const u128 tolerance = u128{limit.burst} * period;
  if (limit.limit == 0) return DenyForever(0, 0, Duration(0));

  const int64_t t = EffectiveNow(now, state.last);
  const u128 now_units = static_cast<u128>(t) * limit.limit;
  // Clamp the backlog to the tolerance so a state left by a larger burst (before a
  // config reload) cannot hold a client back longer than the new policy allows.
  const u128 backlog =
      std::min(std::max(Join(state.tat_lo, state.tat_hi), now_units) - now_units, tolerance);
  const u128 increment = u128{cost} * period;
  const bool allowed = backlog + increment <= tolerance;
  const u128 new_backlog = allowed ? backlog + increment : backlog;
  Split(now_units + new_backlog, state.tat_lo, state.tat_hi);
  state.last = t;
  return BucketDecision(allowed, limit, new_backlog, cost);
}

Decision DecideFixedWindow(const Limit& limit, FixedWindowState& state, Timestamp now,
                           uint64_t cost) {
  if (limit.limit == 0) return DenyForever(0, 0, Duration(0));
  const int64_t period = limit.period.count();
  const int64_t t = EffectiveNow(now, state.last);
  const int64_t window = WindowStart(t, period);
  if (window != WindowStart(std::max<int64_t>(state.last, 0), period)) state.count = 0;
  state.last = t;
  const uint64_t used = std::min(state.count, limit.limit);
  const bool allowed = cost <= limit.limit - used;
  if (allowed) state.count = used + cost;
  const Duration to_window_end = Nanos(i128{window} + period - t);

  Decision d;
  d.allowed = allowed;
  d.limit = limit.limit;
  d.remaining = limit.limit - std::min(state.count, limit.limit);
  d.reset_after = state.count == 0 ? Duration(0) : to_window_end;
  if (!allowed) d.retry_after = cost > limit.limit ? Decision::kNever : to_window_end;
  return d;
}

Decision DecideSlidingWindowCounter(const Limit& limit, SlidingWindowCounterState& state,
                                    Timestamp now, uint64_t cost) {
  if (limit.limit == 0) return DenyForever(0, 0, Duration(0));
  const int64_t period = limit.period.count();
  const u128 p = static_cast<u128>(period);
  const int64_t t = EffectiveNow(now, state.last);
  const int64_t window = WindowStart(t, period);
  const int64_t last_window = WindowStart(std::max<int64_t>(state.last, 0), period);
  if (window != last_window) {
    const bool adjacent = i128{window} - last_window == period;
    state.previous = adjacent ? state.current : 0;
    state.current = 0;
  }
  state.last = t;
  // Counts never pass the limit while it is unchanged; after a reload that lowered it
  // they are held to the new one, so a client is never held back longer than the new
  // policy allows (and the sums below cannot wrap).
  state.previous = std::min(state.previous, limit.limit);
  state.current = std::min(state.current, limit.limit);
  // Counts are in units of 1/period of a request: the previous window weighs
  // (period - elapsed) / period.
  const u128 elapsed = static_cast<u128>(t - window);
  const u128 weighted_previous = u128{state.previous} * (p - elapsed);
  const u128 capacity = u128{limit.limit} * p;
  const u128 used = weighted_previous + u128{state.current} * p;
  const bool allowed = used + u128{cost} * p <= capacity;
  if (allowed) state.current += cost;
  const u128 used_after = allowed ? used + u128{cost} * p : used;

  Decision d;
  d.allowed = allowed;
  d.limit = limit.limit;
  d.remaining = used_after >= capacity ? 0 : ToCount(Div(capacity - used_after, p));
  // The current window's count weighs until the end of the next window.
  if (state.current > 0) {
    d.reset_after = Nanos(i128{window} + 2 * i128{period} - t);
  } else if (state.previous > 0) {
    d.reset_after = Nanos(i128{window} + period - t);
  }
  if (!allowed) {
    if (cost > limit.limit) {
      d.retry_after = Decision::kNever;
    } else if (state.current + cost <= limit.limit) {
      // Wait inside this window until previous * (period - e) <= room * period.
      // previous > 0 here, or the request would have passed.
      const u128 room = u128{limit.limit - state.current - cost} * p;
      const u128 e_min = p - std::min<u128>(room / state.previous, p);
      d.retry_after = Nanos(i128{window} + static_cast<i128>(e_min) - t);
    } else {
      // Wait for the next window, where the current count becomes the previous one:
      // current * (period - e) <= (limit - cost) * period. current >= 1 here.
      const u128 room = u128{limit.limit - cost} * p;
      const u128 e_min = p - std::min<u128>(room / state.current, p);
      d.retry_after = Nanos(i128{window} + period + static_cast<i128>(e_min) - t);
    }
  }
  return d;
}

Decision DecideSlidingWindowLog(const Limit& limit, SlidingWindowLogState& state,
                                std::span<int64_t> ring, Timestamp now, uint64_t cost) {
  if (limit.limit == 0) return DenyForever(0, 0, Duration(0));
  const int64_t period = limit.period.count();
  const size_t size = ring.size();
  const int64_t t = EffectiveNow(now, state.last);
  state.last = t;
  auto at = [&](uint64_t i) -> int64_t& { return ring[(state.head + i) % size]; };
  // An entry stays in the log while it is inside (t - period, t].
  while (state.count > 0 && t - at(0) >= period) {
    state.head = static_cast<uint32_t>((state.head + 1) % size);
    --state.count;
  }
  const bool allowed = cost <= limit.limit - std::min<uint64_t>(state.count, limit.limit);
  if (allowed) {
    for (uint64_t i = 0; i < cost; ++i) at(state.count + i) = t;
    state.count += static_cast<uint32_t>(cost);
  }

  Decision d;
  d.allowed = allowed;
  d.limit = limit.limit;
  d.remaining = limit.limit - std::min<uint64_t>(state.count, limit.limit);
  if (state.count > 0) d.reset_after = Nanos(i128{at(state.count - 1)} + period - t);
  if (!allowed) {
    if (cost > limit.limit) {
      d.retry_after = Decision::kNever;
    } else {
      // The request fits once the oldest (count + cost - limit) entries have left.
      const uint64_t must_leave = state.count + cost - limit.limit;
      d.retry_after = Nanos(i128{at(must_leave - 1)} + period - t);
    }
  }
  return d;
}

Decision DecideCompact(Algorithm algorithm, const Limit& limit, CompactState& state, Timestamp now,
                       uint64_t cost) {
  auto run = [&](auto decide, auto typed_state) {
    const Decision d = decide(limit, typed_state, now, cost);
    Store(typed_state, state);
    return d;
  };
  switch (algorithm) {
    case Algorithm::kTokenBucket:
      return run(DecideTokenBucket, Load<TokenBucketState>(state));
    case Algorithm::kLeakyBucket:
      return run(DecideLeakyBucket, Load<LeakyBucketState>(state));
    case Algorithm::kFixedWindow:
      return run(DecideFixedWindow, Load<FixedWindowState>(state));
    case Algorithm::kSlidingWindowCounter:
      return run(DecideSlidingWindowCounter, Load<SlidingWindowCounterState>(state));
    case Algorithm::kGcra:
      return run(DecideGcra, Load<GcraState>(state));
    case Algorithm::kSlidingWindowLog:
      break;
  }
  SLUICE_CHECK(false && "the sliding window log needs its ring: DecideSlidingWindowLog");
  return DenyForever(0, 0, Duration(0));
}

}  // namespace sluice::core
