#include "store/redis_scripts.h"

#include <algorithm>
#include <chrono>
#include <string>

namespace sluice::store {
namespace {

// Shared by every script: argument parsing, the clock, exact integer division, the
// reply, and the TTL.
constexpr std::string_view kPrelude = R"lua(
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local test_now = ARGV[5] ~= ''
local now
if test_now then
  now = tonumber(ARGV[5])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- floor(a / b) for integers 0 <= a, 0 < b below 2^53. The double quotient is correctly
-- rounded; for a below 2^53 its floor is already exact (a quotient q - f rounds up to
-- q only when f < q * 2^-53, i.e. a > 2^53), so the fix-up is a guard for bounds
-- that change, not a path the tests can reach.
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local function ceil_div(a, b) return idiv(a + b - 1, b) end
local NEVER = -1
local function reply(allowed, capacity, remaining, reset_after, retry_after)
  return {allowed and 1 or 0, capacity, remaining, reset_after, retry_after}
end
-- Keep the state only while it differs from an empty one (real time only: a test's
-- own clock has nothing to do with the server's).
local function keep_until(reset_after)
  if test_now then return end
  if reset_after > 0 then
    redis.call('PEXPIRE', KEYS[1], math.floor((reset_after + 999) / 1000) + 1)
  else
    redis.call('DEL', KEYS[1])
  end
end
if limit == 0 then return reply(false, 0, 0, 0, NEVER) end
)lua";

// DecideFixedWindow.
constexpr std::string_view kFixedWindow = R"lua(
local s = redis.call('HMGET', KEYS[1], 'l', 'c')
local last = tonumber(s[1]) or 0
local count = tonumber(s[2]) or 0
local t = math.max(now, last, 0)
local window = t - t % period
if window ~= last - last % period then count = 0 end
last = t
local used = math.min(count, limit)
local allowed = cost <= limit - used
if allowed then count = used + cost end
local to_window_end = window + period - t
local remaining = limit - math.min(count, limit)
local reset_after = 0
if count ~= 0 then reset_after = to_window_end end
local retry_after = 0
if not allowed then
  if cost > limit then retry_after = NEVER else retry_after = to_window_end end
end
redis.call('HSET', KEYS[1], 'l', last, 'c', count)
keep_until(reset_after)
return reply(allowed, limit, remaining, reset_after, retry_after)
)lua";

// DecideSlidingWindowCounter. Counts weigh in units of 1/period of a request.
constexpr std::string_view kSlidingWindowCounter = R"lua(
local s = redis.call('HMGET', KEYS[1], 'l', 'p', 'c')
local last = tonumber(s[1]) or 0
local previous = tonumber(s[2]) or 0
local current = tonumber(s[3]) or 0
local t = math.max(now, last, 0)
local window = t - t % period
local last_window = last - last % period
if window ~= last_window then
  if window - last_window == period then previous = current else previous = 0 end
  current = 0
end
last = t
previous = math.min(previous, limit)
current = math.min(current, limit)
local elapsed = t - window
local capacity = limit * period
local used = previous * (period - elapsed) + current * period
-- cost > limit never fits, and testing it first keeps cost * period below 2^53.
local allowed = cost <= limit and used + cost * period <= capacity
if allowed then current = current + cost end
local used_after = used
if allowed then used_after = used + cost * period end
local remaining = 0
if used_after < capacity then remaining = idiv(capacity - used_after, period) end
local reset_after = 0
if current > 0 then
  reset_after = window + 2 * period - t
elseif previous > 0 then
  reset_after = window + period - t
end
local retry_after = 0
if not allowed then
  if cost > limit then
    retry_after = NEVER
  elseif current + cost <= limit then
    local room = (limit - current - cost) * period
    local e_min = period - math.min(idiv(room, previous), period)
    retry_after = window + e_min - t
  else
    local room = (limit - cost) * period
    local e_min = period - math.min(idiv(room, current), period)
    retry_after = window + period + e_min - t
  end
end
redis.call('HSET', KEYS[1], 'l', last, 'p', previous, 'c', current)
keep_until(reset_after)
return reply(allowed, limit, remaining, reset_after, retry_after)
)lua";

// Token bucket, leaky bucket and GCRA share BucketDecision (src/core/algorithms.cc):
// a quantity `used` out of `capacity`, in units of 1/period of a request, draining at
// `limit` units per microsecond. Elapsed time times limit is never formed when it could
// pass 2^53: "has the whole quantity drained?" is asked as elapsed >= ceil(q / limit).
constexpr std::string_view kBucketPrelude = R"lua(
local capacity = burst * period
local function drain(quantity, elapsed)
  if elapsed >= ceil_div(quantity, limit) then return 0 end
  return quantity - elapsed * limit
end
local function bucket_reply(allowed, used)
  local remaining = 0
  if used < capacity then remaining = idiv(capacity - used, period) end
  local retry_after = 0
  if not allowed then
    if cost > burst then retry_after = NEVER
    else retry_after = ceil_div(used + cost * period - capacity, limit) end
  end
  local reset_after = ceil_div(used, limit)
  keep_until(reset_after)
  return reply(allowed, burst, remaining, reset_after, retry_after)
end
)lua";

// DecideTokenBucket: the state is the tokens left (x period) and the time they were
// counted; no state is a full bucket.
constexpr std::string_view kTokenBucket = R"lua(
local s = redis.call('HMGET', KEYS[1], 'l', 'k')
local fresh = s[1] == false
local last = tonumber(s[1]) or 0
local t = math.max(now, last, 0)
local tokens = capacity
if not fresh then
  -- the tokens missing from a full bucket, refilled by the time passed
  tokens = capacity - drain(capacity - math.min(tonumber(s[2]), capacity), t - last)
end
local allowed = cost <= burst and cost * period <= tokens
if allowed then tokens = tokens - cost * period end
redis.call('HSET', KEYS[1], 'l', t, 'k', tokens)
return bucket_reply(allowed, capacity - tokens)
)lua";

// DecideLeakyBucket: the level (x period) and the time it was measured.
constexpr std::string_view kLeakyBucket = R"lua(
local s = redis.call('HMGET', KEYS[1], 'l', 'v')
local last = tonumber(s[1]) or 0
local t = math.max(now, last, 0)
local level = drain(math.min(tonumber(s[2]) or 0, capacity), t - math.max(last, 0))
local allowed = cost <= burst and level + cost * period <= capacity
if allowed then level = level + cost * period end
redis.call('HSET', KEYS[1], 'l', t, 'v', level)
return bucket_reply(allowed, level)
)lua";

// DecideGcra. The C++ state keeps the theoretical arrival time as TAT x limit on the
// absolute clock, a product past 2^53 here; the script keeps the same quantity as the
// backlog TAT - last (x limit) and the time `last`, which is equivalent.
constexpr std::string_view kGcra = R"lua(
local s = redis.call('HMGET', KEYS[1], 'l', 'b')
local last = tonumber(s[1]) or 0
local t = math.max(now, last, 0)
local backlog = math.min(drain(tonumber(s[2]) or 0, t - last), capacity)
local allowed = cost <= burst and backlog + cost * period <= capacity
if allowed then backlog = backlog + cost * period end
redis.call('HSET', KEYS[1], 'l', t, 'b', backlog)
return bucket_reply(allowed, backlog)
)lua";

// DecideSlidingWindowLog. The log is one string "last;t1:c1;t2:c2;..." of runs of
// equal times, oldest first: a request of cost c adds one run, not c entries, and
// the walk for "the time of the k-th oldest unit" goes run by run.
constexpr std::string_view kSlidingWindowLog = R"lua(
local raw = redis.call('GET', KEYS[1])
local last = 0
local times, counts = {}, {}
local count = 0
if raw then
  local first = true
  for item in string.gmatch(raw, '[^;]+') do
    if first then
      last = tonumber(item)
      first = false
    else
      local sep = string.find(item, ':', 1, true)
      times[#times + 1] = tonumber(string.sub(item, 1, sep - 1))
      counts[#counts + 1] = tonumber(string.sub(item, sep + 1))
    end
  end
end
local t = math.max(now, last, 0)
-- An entry stays while it is inside (t - period, t]; runs are in time order.
local live_t, live_c = {}, {}
for i = 1, #times do
  if t - times[i] < period then
    live_t[#live_t + 1] = times[i]
    live_c[#live_c + 1] = counts[i]
    count = count + counts[i]
  end
end
local allowed = cost <= limit - math.min(count, limit)
if allowed and cost > 0 then
  if #live_t > 0 and live_t[#live_t] == t then
    live_c[#live_c] = live_c[#live_c] + cost
  else
    live_t[#live_t + 1] = t
    live_c[#live_c + 1] = cost
  end
  count = count + cost
end
-- The time of the k-th oldest unit of cost in the log (1-based).
local function unit_time(k)
  local seen = 0
  for i = 1, #live_t do
    seen = seen + live_c[i]
    if seen >= k then return live_t[i] end
  end
end
local reset_after = 0
if count > 0 then reset_after = live_t[#live_t] + period - t end
local retry_after = 0
if not allowed then
  if cost > limit then retry_after = NEVER
  else retry_after = unit_time(count + cost - limit) + period - t end
end
-- %d, not tostring: Lua's tostring keeps only 14 significant digits.
local parts = {string.format('%d', t)}
for i = 1, #live_t do parts[#parts + 1] = string.format('%d:%d', live_t[i], live_c[i]) end
redis.call('SET', KEYS[1], table.concat(parts, ';'))
keep_until(reset_after)
return reply(allowed, limit, limit - math.min(count, limit), reset_after, retry_after)
)lua";

// Prelude + body, joined once at start-up.
std::string_view Join(std::string_view body, std::string& storage, bool bucket = false) {
  storage.assign(kPrelude);
  if (bucket) storage.append(kBucketPrelude);
  storage.append(body);
  return storage;
}

}  // namespace

bool FitsRedisArithmetic(const Limit& limit) {
  const int64_t ns = std::chrono::nanoseconds(limit.period).count();
  if (ns <= 0 || ns % 1000 != 0) return false;
  const uint64_t period_us = static_cast<uint64_t>(ns / 1000);
  const uint64_t most = std::max(limit.limit, limit.burst);
  return most == 0 || period_us < kRedisMaxUnits / most;
}

std::string_view RedisScript(Algorithm algorithm) {
  static std::string storage[6];
  static const std::string_view fixed = Join(kFixedWindow, storage[0]);
  static const std::string_view sliding = Join(kSlidingWindowCounter, storage[1]);
  static const std::string_view token = Join(kTokenBucket, storage[2], true);
  static const std::string_view leaky = Join(kLeakyBucket, storage[3], true);
  static const std::string_view gcra = Join(kGcra, storage[4], true);
  static const std::string_view log = Join(kSlidingWindowLog, storage[5]);
  switch (algorithm) {
    case Algorithm::kFixedWindow:
      return fixed;
    case Algorithm::kSlidingWindowCounter:
      return sliding;
    case Algorithm::kTokenBucket:
      return token;
    case Algorithm::kLeakyBucket:
      return leaky;
    case Algorithm::kGcra:
      return gcra;
    case Algorithm::kSlidingWindowLog:
      return log;
  }
  return fixed;  // unreachable: every Algorithm is listed
}

}  // namespace sluice::store
