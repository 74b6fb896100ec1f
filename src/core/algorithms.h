// The six rate-limit algorithms as pure functions.
//
// Each algorithm is `Decide(limit, state, now, cost) -> Decision`: it reads and updates
// a small state value and nothing else. No I/O, no clock reads, no allocation, no
// locks; the caller (a store) owns the state and its synchronisation. All arithmetic
// is exact integer arithmetic (128-bit where products need it), so two
// implementations of one rule agree to the nanosecond; docs/algorithms.md gives each
// rule, its state and its error.
//
// Common rules:
// - `now` earlier than the latest time the state has seen counts as that latest time
//   (a clock that goes backwards means no time passed). Negative `now` counts as 0, and times past
//   2^63 - 2 ns as that.
// - limit == 0 denies everything, with retry_after == Decision::kNever, limit and
//   remaining 0, and leaves the state untouched.
// - A cost larger than the capacity is denied with retry_after == Decision::kNever.
// - cost == 0 is a query: it is allowed (unless limit == 0) and changes nothing but the
//   clock bookkeeping.
// - An all-zero state is the empty state: a key never seen before.
// REQUIRES: limit.period > 0; limit.limit, limit.burst, cost <= kMaxQuantity.
#ifndef SLUICE_CORE_ALGORITHMS_H_
#define SLUICE_CORE_ALGORITHMS_H_

#include <cstdint>
#include <span>

#include "sluice/decision.h"
#include "sluice/limiter.h"

namespace sluice::core {

// Token bucket: holds up to `burst` tokens, refilled continuously at limit/period;
// a request takes `cost` tokens or is denied. Tokens are kept in units of
// 1/period_ns of a token so the refill is exact.
struct TokenBucketState {
  uint64_t tokens_lo = 0;  // tokens x period_ns, 128 bits split for 8-byte alignment
  uint64_t tokens_hi = 0;
  int64_t last_plus_one = 0;  // time of the last update + 1; 0 = empty state (full bucket)
};
Decision DecideTokenBucket(const Limit& limit, TokenBucketState& state, Timestamp now,
                           uint64_t cost);

// Leaky bucket as a meter: each request pours `cost` into a bucket of size `burst`
// that drains continuously at limit/period; a request that would overflow is denied.
struct LeakyBucketState {
  uint64_t level_lo = 0;  // level x period_ns
  uint64_t level_hi = 0;
  int64_t last = 0;
};
Decision DecideLeakyBucket(const Limit& limit, LeakyBucketState& state, Timestamp now,
                           uint64_t cost);

// Fixed window counter: windows [k*period, (k+1)*period) on the clock's epoch; at most
// `limit` cost units per window.
struct FixedWindowState {
  int64_t last = 0;  // latest time seen; its window is the current one
  uint64_t count = 0;
};
Decision DecideFixedWindow(const Limit& limit, FixedWindowState& state, Timestamp now,
                           uint64_t cost);

// Sliding window counter: fixed windows as above, but a request is admitted when
// previous * (period - elapsed) / period + current + cost <= limit, i.e. the previous
// window's count weighted by how much of it the sliding window still overlaps.
struct SlidingWindowCounterState {
  int64_t last = 0;  // latest time seen; its window is the current one
  uint64_t previous = 0;
  uint64_t current = 0;
};
Decision DecideSlidingWindowCounter(const Limit& limit, SlidingWindowCounterState& state,
                                    Timestamp now, uint64_t cost);

// GCRA (virtual scheduling): a theoretical arrival time (TAT) advances by
// cost * period/limit per admitted request; a request is admitted when the TAT it would
// set is at most burst * period/limit ahead of now. Time is kept in units of
// 1/limit ns so period/limit is exact.
struct GcraState {
  uint64_t tat_lo = 0;  // TAT x limit
  uint64_t tat_hi = 0;
  int64_t last = 0;
};
Decision DecideGcra(const Limit& limit, GcraState& state, Timestamp now, uint64_t cost);

// Sliding window log: the time of every admitted unit of cost in the last `period`;
// a request is admitted when the log has room for `cost` more. The timestamps live in
// a ring the caller owns (`ring`, at least `limit` long); the state says where.
struct SlidingWindowLogState {
  uint32_t head = 0;   // index in the ring of the oldest timestamp
  uint32_t count = 0;  // timestamps held
  int64_t last = 0;    // latest time seen
};
// REQUIRES: ring.size() >= limit.limit (and limit.limit <= kMaxLogLimit); the ring and
// state are only ever used with one ring size.
Decision DecideSlidingWindowLog(const Limit& limit, SlidingWindowLogState& state,
                                std::span<int64_t> ring, Timestamp now, uint64_t cost);

// The fixed-size states side by side, so a store can keep any of them in one slot.
struct CompactState {
  uint64_t words[3] = {0, 0, 0};
};
static_assert(sizeof(TokenBucketState) <= sizeof(CompactState));
static_assert(sizeof(LeakyBucketState) <= sizeof(CompactState));
static_assert(sizeof(FixedWindowState) <= sizeof(CompactState));
static_assert(sizeof(SlidingWindowCounterState) <= sizeof(CompactState));
static_assert(sizeof(GcraState) <= sizeof(CompactState));

// Runs `algorithm` on a compact state.
// REQUIRES: algorithm != kSlidingWindowLog (it needs its ring).
Decision DecideCompact(Algorithm algorithm, const Limit& limit, CompactState& state, Timestamp now,
                       uint64_t cost);

}  // namespace sluice::core

#endif  // SLUICE_CORE_ALGORITHMS_H_
