#include "store/redis_scripts.h"

#include <algorithm>
#include <chrono>
#include <limits>

namespace sluice::store {
namespace {

// What a call costs, measured (docs/architecture.md, "Redis batch script"): Redis makes
// a Lua string of every key and argument, and a SET with PX is the dearest step of a
// decision, so the rest is kept small. The body runs on every EVALSHA: it defines one
// function (idiv), caches the library functions in locals, reads every key with one
// MGET, and writes each distinct key once at the end (SET with PX, or DEL): n decisions
// on distinct keys make n + 1 redis.call, n + 2 with the server's TIME. The algorithms
// run inline in one loop on locals, with no table or closure per decision. States are
// little-endian 64-bit integers (struct.pack): reading one costs about a seventh of
// parsing decimal text, writing about half of formatting it. The log's fixed-size runs
// let a decision keep its live runs as one substring instead of re-encoding them.
constexpr std::string_view kDecideScript = R"lua(
local keys, argv = KEYS, ARGV
local tonumber, fmt, pack, sunpack, sub =
  tonumber, string.format, struct.pack, struct.unpack, string.sub
local n = #keys
if n == 0 then return {} end
local test_now = argv[1] ~= ''
local now
if test_now then
  now = tonumber(argv[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- floor(a / b) for integers 0 <= a, 0 < b below 2^53. The double quotient is correctly
-- rounded; for a below 2^53 its floor is already exact (a quotient q - f rounds up to
-- q only when f < q * 2^-53, i.e. a > 2^53), so the fix-up is a guard for bounds
-- that change, not a path the tests can reach. q - q % 1 is floor(q) for q >= 0, exactly
-- (q % 1 is q - floor(q), exact), without a call to math.floor.
local function idiv(a, b)
  local q = a / b
  q = q - q % 1
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local NEVER = -1
local loaded = redis.call('MGET', unpack(keys))
local state = {}   -- key -> its state so far in this call: a string, or false for none
local ttl_of = {}  -- key -> that state's TTL in ms (server time only)
local reply = {}
-- Decisions under one policy repeat its argument strings, which Lua interns: comparing
-- a string with the previous one is a pointer comparison, so only changed numbers are
-- converted.
local s_limit, s_period, s_burst, s_cost
local limit, period, burst, cost = 0, 0, 0, 0
for i = 1, n do
  local key = keys[i]
  local raw = state[key]
  -- Not decided yet in this call (or only by limit-0 decisions): what MGET found.
  if raw == nil then raw = loaded[i] end
  local a = 5 * i - 3  -- decision i's arguments are ARGV[a .. a + 4]
  local code = argv[a]
  local s = argv[a + 1]
  if s ~= s_limit then s_limit, limit = s, tonumber(s) end
  s = argv[a + 2]
  if s ~= s_period then s_period, period = s, tonumber(s) end
  s = argv[a + 3]
  if s ~= s_burst then s_burst, burst = s, tonumber(s) end
  s = argv[a + 4]
  if s ~= s_cost then s_cost, cost = s, tonumber(s) end
  local r = 5 * i - 5
  if limit == 0 then
    -- Denies everything and leaves the state untouched.
    reply[r + 1] = 0
    reply[r + 2] = 0
    reply[r + 3] = 0
    reply[r + 4] = 0
    reply[r + 5] = NEVER
  else
    local allowed, capacity_reply, remaining, reset_after, retry_after, new
    local last, t = 0, 0
    if code == '0' or code == '1' or code == '5' then
      -- Token bucket (0), leaky bucket (1) and GCRA (5) share BucketDecision
      -- (src/core/algorithms.cc): a quantity q out of `capacity`, in units of 1/period
      -- of a request, draining at `limit` units per microsecond; q is the token
      -- bucket's missing tokens, the leaky bucket's level, GCRA's backlog. The state is
      -- {last, stored}: the tokens left, the level, the backlog. The C++ GCRA keeps its
      -- theoretical arrival time as TAT x limit on the absolute clock, a product past
      -- 2^53 here; the script keeps the same quantity as the backlog TAT - last
      -- (x limit) and the time `last`, which is equivalent.
      local capacity = burst * period
      local stored = 0
      if raw then last, stored = sunpack('<i8i8', raw) end
      t = now
      if t < last then t = last end
      if t < 0 then t = 0 end
      local q = stored
      if code == '0' then
        -- No state is a full bucket; tokens past the capacity count as a full one.
        q = 0
        if raw and stored < capacity then q = capacity - stored end
      elseif code == '1' and q > capacity then
        q = capacity
      end
      -- Elapsed time times limit is never formed when it could pass 2^53: "has the
      -- whole quantity drained?" is asked as elapsed >= ceil(q / limit).
      local elapsed = t - last
      if elapsed >= idiv(q + limit - 1, limit) then q = 0 else q = q - elapsed * limit end
      if code == '5' and q > capacity then q = capacity end
      -- cost > burst never fits, and testing it first keeps cost * period below 2^53.
      allowed = cost <= burst and q + cost * period <= capacity
      if allowed then q = q + cost * period end
      capacity_reply = burst
      remaining = 0
      if q < capacity then remaining = idiv(capacity - q, period) end
      reset_after = idiv(q + limit - 1, limit)
      retry_after = 0
      if not allowed then
        if cost > burst then retry_after = NEVER
        else retry_after = idiv(q + cost * period - capacity + limit - 1, limit) end
      end
      if code == '0' then q = capacity - q end  -- stored as the tokens left
      new = pack('<i8i8', t, q)
    elseif code == '2' then
      -- DecideFixedWindow. The state is {last, count}.
      local count = 0
      if raw then last, count = sunpack('<i8i8', raw) end
      t = now
      if t < last then t = last end
      if t < 0 then t = 0 end
      local window = t - t % period
      if window ~= last - last % period then count = 0 end
      local used = count
      if used > limit then used = limit end
      allowed = cost <= limit - used
      if allowed then count = used + cost end
      local to_window_end = window + period - t
      capacity_reply = limit
      remaining = 0
      if count < limit then remaining = limit - count end
      reset_after = 0
      if count ~= 0 then reset_after = to_window_end end
      retry_after = 0
      if not allowed then
        if cost > limit then retry_after = NEVER else retry_after = to_window_end end
      end
      new = pack('<i8i8', t, count)
    elseif code == '4' then
      -- DecideSlidingWindowCounter. The state is {last, previous, current}. Counts
      -- weigh in units of 1/period of a request.
      local previous, current = 0, 0
      if raw then last, previous, current = sunpack('<i8i8i8', raw) end
      t = now
      if t < last then t = last end
      if t < 0 then t = 0 end
      local window = t - t % period
      local last_window = last - last % period
      if window ~= last_window then
        if window - last_window == period then previous = current else previous = 0 end
        current = 0
      end
      if previous > limit then previous = limit end
      if current > limit then current = limit end
      local elapsed = t - window
      local capacity = limit * period
      local used = previous * (period - elapsed) + current * period
      -- cost > limit never fits, and testing it first keeps cost * period below 2^53.
      allowed = cost <= limit and used + cost * period <= capacity
      if allowed then
        current = current + cost
        used = used + cost * period
      end
      capacity_reply = limit
      remaining = 0
      if used < capacity then remaining = idiv(capacity - used, period) end
      reset_after = 0
      if current > 0 then
        reset_after = window + 2 * period - t
      elseif previous > 0 then
        reset_after = window + period - t
      end
      retry_after = 0
      if not allowed then
        -- Wait until the weighted count has room: e_min = period - min(room / count,
        -- period) into this window (previous > 0 here) or the next (current > 0).
        if cost > limit then
          retry_after = NEVER
        elseif current + cost <= limit then
          local room = idiv((limit - current - cost) * period, previous)
          if room > period then room = period end
          retry_after = window + period - room - t
        else
          local room = idiv((limit - cost) * period, current)
          if room > period then room = period end
          retry_after = window + 2 * period - room - t
        end
      end
      new = pack('<i8i8i8', t, previous, current)
    elseif code == '3' then
      -- DecideSlidingWindowLog. The state is {last, units} and then runs
      -- {time, units} of equal times, oldest first, 16 bytes each: a request of cost c
      -- adds one run, not c entries. An entry stays while it is inside (t - period, t];
      -- runs are in time order, so the expired ones are a prefix: the decision reads
      -- those and the newest, and keeps the live ones as one substring.
      local count, size, live = 0, 0, 17  -- live: where the oldest live run starts
      if raw then
        last, count = sunpack('<i8i8', raw)
        size = #raw
      end
      t = now
      if t < last then t = last end
      if t < 0 then t = 0 end
      while live < size do
        local run_t, run_units = sunpack('<i8i8', raw, live)
        if t - run_t < period then break end
        count = count - run_units
        live = live + 16
      end
      local newest, newest_units = 0, 0
      if live < size then newest, newest_units = sunpack('<i8i8', raw, size - 15) end
      local used = count
      if used > limit then used = limit end
      allowed = cost <= limit - used
      -- The new state is one concatenation, with no intermediate strings: the header,
      -- the live runs, and the request's run, merged with the newest run when their
      -- times are equal.
      local live_end, added = size, ''
      if allowed and cost > 0 then
        if newest == t and live < size then
          live_end = size - 16
          added = pack('<i8i8', t, newest_units + cost)
        else
          added = pack('<i8i8', t, cost)
        end
        newest = t
        count = count + cost
      end
      capacity_reply = limit
      remaining = 0
      if count < limit then remaining = limit - count end
      reset_after = 0
      if count > 0 then reset_after = newest + period - t end
      retry_after = 0
      if not allowed then
        if cost > limit then
          retry_after = NEVER
        else
          -- The request fits once the oldest count + cost - limit units have left: the
          -- time of that unit, found run by run.
          local k, seen, at, run_t, run_units = count + cost - limit, 0, live - 16, 0, 0
          repeat
            at = at + 16
            run_t, run_units = sunpack('<i8i8', raw, at)
            seen = seen + run_units
          until seen >= k
          retry_after = run_t + period - t
        end
      end
      new = pack('<i8i8', t, count) .. (raw and sub(raw, live, live_end) or '') .. added
    else
      -- Nothing has been written yet, so the call fails as a whole.
      return redis.error_reply('sluice: unknown algorithm code ' .. tostring(code))
    end
    reply[r + 1] = allowed and 1 or 0
    reply[r + 2] = capacity_reply
    reply[r + 3] = remaining
    reply[r + 4] = reset_after
    reply[r + 5] = retry_after
    -- Keep the state only while it differs from an empty one (server time only: a
    -- test's own clock has nothing to do with the server's, so its keys stay). The TTL
    -- is reset_after rounded up to whole ms, plus 1.
    if test_now then
      state[key] = new
    elseif reset_after > 0 then
      state[key] = new
      local ms = (reset_after + 999) / 1000
      ttl_of[key] = fmt('%d', ms - ms % 1 + 1)
    else
      state[key] = false
    end
  end
end
-- Each key is written once, with the state (and TTL) its last decision left; a key that
-- ends empty is deleted, unless it did not exist (MGET gives the same answer for every
-- occurrence of a key).
for i = 1, n do
  local key = keys[i]
  local new = state[key]
  if new ~= nil then
    state[key] = nil  -- done: the key's later occurrences skip
    if new then
      if test_now then
        redis.call('SET', key, new)
      else
        redis.call('SET', key, new, 'PX', ttl_of[key])
      end
    elseif loaded[i] then
      redis.call('DEL', key)
    end
  end
end
return reply
)lua";

}  // namespace

bool FitsRedisArithmetic(const Limit& limit) {
  const int64_t ns = std::chrono::nanoseconds(limit.period).count();
  if (ns <= 0 || ns % 1000 != 0) return false;
  const uint64_t period_us = static_cast<uint64_t>(ns / 1000);
  const uint64_t most = std::max(limit.limit, limit.burst);
  return most == 0 || period_us < kRedisMaxUnits / most;
}

std::string_view RedisDecideScript() { return kDecideScript; }

int RedisAlgorithmCode(Algorithm algorithm) {
  // The script's numbering, spelled out rather than taken from the enum's order.
  switch (algorithm) {
    case Algorithm::kTokenBucket:
      return 0;
    case Algorithm::kLeakyBucket:
      return 1;
    case Algorithm::kFixedWindow:
      return 2;
    case Algorithm::kSlidingWindowLog:
      return 3;
    case Algorithm::kSlidingWindowCounter:
      return 4;
    case Algorithm::kGcra:
      return 5;
  }
  return 2;  // unreachable: every Algorithm is listed
}

Decision DecisionFromRedisReply(const long long* five) {
  // Microseconds to a Duration; the script's durations stay below 2^53 us, whose
  // nanoseconds fit 63 bits, but a reply is clamped rather than trusted to.
  static constexpr long long kMaxMicros = std::numeric_limits<int64_t>::max() / 1000;
  auto micros = [](long long us) {
    return Duration(std::chrono::microseconds(std::clamp<long long>(us, 0, kMaxMicros)));
  };
  Decision d;
  d.allowed = five[0] != 0;
  d.limit = static_cast<uint64_t>(std::max<long long>(five[1], 0));
  d.remaining = static_cast<uint64_t>(std::max<long long>(five[2], 0));
  d.reset_after = micros(five[3]);
  d.retry_after = five[4] < 0 ? Decision::kNever : micros(five[4]);
  return d;
}

}  // namespace sluice::store
