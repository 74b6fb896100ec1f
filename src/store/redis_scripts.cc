#include "store/redis_scripts.h"

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

// Prelude + body, joined once at start-up.
std::string_view Join(std::string_view body, std::string& storage) {
  storage.assign(kPrelude);
  storage.append(body);
  return storage;
}

}  // namespace

std::optional<std::string_view> RedisScript(Algorithm algorithm) {
  static std::string fixed_window, sliding_window_counter;
  static const std::string_view fixed = Join(kFixedWindow, fixed_window);
  static const std::string_view sliding = Join(kSlidingWindowCounter, sliding_window_counter);
  switch (algorithm) {
    case Algorithm::kFixedWindow:
      return fixed;
    case Algorithm::kSlidingWindowCounter:
      return sliding;
    default:
      return std::nullopt;
  }
}

}  // namespace sluice::store
