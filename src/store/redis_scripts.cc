#include "store/redis_scripts.h"

#include <algorithm>
#include <chrono>
#include <limits>

namespace sluice::store {
namespace {

// What a call costs, measured (docs/architecture.md, "Redis batch script"): every
// redis.call is dear (about 0.75 µs for a GET here, 1.65 µs for a SET with PX), Redis
// makes a Lua string of every key and argument, and a new TTL is the dearest part of a
// write, so the rest is kept small. The body runs on every EVALSHA: it caches the
// library functions in locals, reads every key with one MGET, and writes each
// distinct key once at the end (SET, or DEL): n decisions on
// distinct keys make n + 1 redis.call, n + 2 with the server's TIME. A decision's
// policy and cost come as one binary argument, unpacked only when it differs from the
// previous decision's (Lua interns strings, so that is a pointer comparison). The
// algorithms run inline in one loop on locals, with no table or closure per decision.
// States are little-endian doubles holding integers (struct.pack '<d'): reading one
// costs about a seventh of parsing decimal text, writing about half of formatting it,
// and doubles pack and unpack faster than 64-bit integers (260 against 300-350 ns to
// pack three, 110-175 against 200-240 to unpack them, in a loop inside Redis). Each state
// starts with the time its key expires (ms), so a write that does not need a longer
// TTL keeps the key's (SET KEEPTTL) instead of setting a new one (SET PX): a new TTL
// reaches twice the state's useful life, so a key in use gets one about once per
// useful life instead of at every decision. The log's fixed-size runs let a decision
// keep its live runs as one substring instead of re-encoding them.
constexpr std::string_view kDecideScript = R"lua(
local keys, argv = KEYS, ARGV
local tonumber, fmt, pack, sunpack, sub, call =
  tonumber, string.format, struct.pack, struct.unpack, string.sub, redis.call
local n = #keys
if n == 0 then return {} end
local test_now = argv[1] ~= ''
local now
if test_now then
  now = tonumber(argv[1])
else
  local t = call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local now_ms = (now - now % 1000) / 1000
-- floor(a / b) for integers 0 <= a, 0 < b below 2^53 is written inline as
-- `x = a / b; x = x - x % 1`: the double quotient is correctly rounded, and for a
-- below 2^53 its floor is exact (a quotient q - f rounds up to q only when
-- f < q * 2^-53, i.e. a > 2^53); x - x % 1 is floor(x) for x >= 0, exactly. Inline,
-- because a Lua function call costs about twice the division (measured 80 against
-- 35 ns), and a token bucket decision divides three times.
local NEVER = -1
local loaded = call('MGET', unpack(keys))
local state = {}  -- key -> its state so far in this call: a string, or false for none
local px_of = {}  -- key -> the expiry (ms) its write must set, when it needs a new TTL
local reply = {}
local s_arg
local code, limit, period, burst, cost = 0, 0, 0, 0, 0
for i = 1, n do
  local key = keys[i]
  local raw = state[key]
  -- Not decided yet in this call (or only by limit-0 decisions): what MGET found.
  if raw == nil then raw = loaded[i] end
  -- Decision i's policy and cost: struct.pack('<Bi8i8i8i8', RedisAlgorithmCode,
  -- limit, period in microseconds, burst, cost).
  local a = argv[i + 1]
  if a ~= s_arg then
    if #a ~= 33 then return redis.error_reply('sluice: bad decision argument ' .. i) end
    s_arg = a
    code, limit, period, burst, cost = sunpack('<Bi8i8i8i8', a)
  end
  local r = 3 * i - 3
  if limit == 0 then
    -- Denies everything and leaves the state untouched.
    reply[r + 1] = -1
    reply[r + 2] = 0
    reply[r + 3] = NEVER
  else
    -- Every state starts with its key's expiry in ms (0: no TTL, test times) times 8
    -- plus the algorithm's code, then `last`, the latest time the state has seen. A
    -- string of the wrong size or of another algorithm (a rule whose algorithm a
    -- reload changed, an older format) counts as no state.
    local size = raw and #raw or 0
    local expires, last, t = 0, 0, 0
    local allowed, remaining, reset_after, retry_after
    local f3, f4 = 0, 0  -- the state's third and fourth numbers, read then written
    local tail = ''       -- the log's runs
    if raw then
      local valid
      if code == 4 then
        valid = size == 32
      elseif code == 3 then
        valid = size >= 24 and (size - 24) % 16 == 0
      else
        valid = size == 24
      end
      if valid then
        local tag
        if code == 4 then
          tag, last, f3, f4 = sunpack('<dddd', raw)
        else
          tag, last, f3 = sunpack('<ddd', raw)
        end
        valid = tag % 8 == code
        expires = (tag - code) / 8
      end
      if not valid then raw, expires, last, f3, f4 = false, 0, 0, 0, 0 end
    end
    if not raw then size = 0 end
    if code == 0 or code == 1 or code == 5 then
      -- Token bucket (0), leaky bucket (1) and GCRA (5) share BucketDecision
      -- (src/core/algorithms.cc): a quantity q out of `capacity`, in units of 1/period
      -- of a request, draining at `limit` units per microsecond; q is the token
      -- bucket's missing tokens, the leaky bucket's level, GCRA's backlog. The state is
      -- {expires, last, stored}: the tokens left, the level, the backlog. The C++ GCRA
      -- keeps its theoretical arrival time as TAT x limit on the absolute clock, a
      -- product past 2^53 here; the script keeps the same quantity as the backlog
      -- TAT - last (x limit) and the time `last`, which is equivalent.
      local capacity = burst * period
      local stored = f3
      t = now
      if t < last then t = last end
      if t < 0 then t = 0 end
      local q = stored
      if code == 0 then
        -- No state is a full bucket; tokens past the capacity count as a full one.
        q = 0
        if raw and stored < capacity then q = capacity - stored end
      elseif code == 1 and q > capacity then
        q = capacity
      end
      -- Elapsed time times limit is never formed when it could pass 2^53: "has the
      -- whole quantity drained?" is asked as elapsed >= ceil(q / limit).
      local elapsed = t - last
      local drained = (q + limit - 1) / limit  -- ceil(q / limit): when q is gone
      if elapsed >= drained - drained % 1 then q = 0 else q = q - elapsed * limit end
      if code == 5 and q > capacity then q = capacity end
      -- cost > burst never fits, and testing it first keeps cost * period below 2^53.
      allowed = cost <= burst and q + cost * period <= capacity
      if allowed then q = q + cost * period end
      remaining = 0
      if q < capacity then
        remaining = (capacity - q) / period
        remaining = remaining - remaining % 1
      end
      reset_after = (q + limit - 1) / limit
      reset_after = reset_after - reset_after % 1
      retry_after = 0
      if not allowed then
        if cost > burst then
          retry_after = NEVER
        else
          retry_after = (q + cost * period - capacity + limit - 1) / limit
          retry_after = retry_after - retry_after % 1
        end
      end
      if code == 0 then q = capacity - q end  -- stored as the tokens left
      f3 = q
    elseif code == 2 then
      -- DecideFixedWindow. The state is {expires, last, count}.
      local count = f3
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
      remaining = 0
      if count < limit then remaining = limit - count end
      reset_after = 0
      if count ~= 0 then reset_after = to_window_end end
      retry_after = 0
      if not allowed then
        if cost > limit then retry_after = NEVER else retry_after = to_window_end end
      end
      f3 = count
    elseif code == 4 then
      -- DecideSlidingWindowCounter. The state is {expires, last, previous, current}.
      -- Counts weigh in units of 1/period of a request.
      local previous, current = f3, f4
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
      remaining = 0
      if used < capacity then
        remaining = (capacity - used) / period
        remaining = remaining - remaining % 1
      end
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
          local room = (limit - current - cost) * period / previous
          room = room - room % 1
          if room > period then room = period end
          retry_after = window + period - room - t
        else
          local room = (limit - cost) * period / current
          room = room - room % 1
          if room > period then room = period end
          retry_after = window + 2 * period - room - t
        end
      end
      f3, f4 = previous, current
    elseif code == 3 then
      -- DecideSlidingWindowLog. The state is {expires, last, units in the log} and then
      -- runs {time, units} of equal times, oldest first, 16 bytes each: a request of
      -- cost c adds one run, not c entries. An entry stays while it is inside
      -- (t - period, t]; runs are in time order, so the expired ones are a prefix: the
      -- decision reads those and the newest, and keeps the live ones as one substring.
      local count, live = f3, 25  -- live: where the oldest live run starts
      t = now
      if t < last then t = last end
      if t < 0 then t = 0 end
      while live < size do
        local run_t, run_units = sunpack('<dd', raw, live)
        if t - run_t < period then break end
        count = count - run_units
        live = live + 16
      end
      local newest, newest_units = 0, 0
      if live < size then newest, newest_units = sunpack('<dd', raw, size - 15) end
      local used = count
      if used > limit then used = limit end
      allowed = cost <= limit - used
      -- The runs are the live ones and the request's, merged with the newest run when
      -- their times are equal.
      local live_end, added = size, ''
      if allowed and cost > 0 then
        if newest == t and live < size then
          live_end = size - 16
          added = pack('<dd', t, newest_units + cost)
        else
          added = pack('<dd', t, cost)
        end
        newest = t
        count = count + cost
      end
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
            run_t, run_units = sunpack('<dd', raw, at)
            seen = seen + run_units
          until seen >= k or at + 16 > size - 15  -- (a consistent log ends it first)
          retry_after = run_t + period - t
        end
      end
      f3 = count
      if raw then tail = sub(raw, live, live_end) .. added else tail = added end
    else
      -- Nothing has been written yet, so the call fails as a whole.
      return redis.error_reply('sluice: unknown algorithm code ' .. tostring(code))
    end
    -- The capacity is the policy's (DecisionFromRedisReply), and whether it was
    -- allowed rides on the sign: every integer of the reply costs Redis a conversion.
    if allowed then reply[r + 1] = remaining else reply[r + 1] = -1 - remaining end
    reply[r + 2] = reset_after
    reply[r + 3] = retry_after
    -- Keep the state only while it differs from an empty one. With the server's time
    -- the key must live at least until t + reset_after; when its TTL is shorter than
    -- that (or it has none yet), the write sets one to twice the state's useful life
    -- (whole ms, plus a margin). A test's own time has nothing to do with the
    -- server's, so its keys get no TTL and stay.
    if test_now or reset_after > 0 then
      local keep_until = 0
      if not test_now then
        local need = t + reset_after
        need = (need - need % 1000) / 1000 + 2
        keep_until = expires
        if keep_until < need then
          keep_until = need + (reset_after - reset_after % 1000) / 1000
          px_of[key] = keep_until
        end
      end
      if code == 4 then
        state[key] = pack('<dddd', keep_until * 8 + code, t, f3, f4)
      else
        state[key] = pack('<ddd', keep_until * 8 + code, t, f3) .. tail
      end
    else
      state[key] = false
    end
  end
end
-- Each key is written once, with the state its last decision left, and a new TTL if a
-- decision of this call needed one; a key that ends empty is deleted, unless it did not
-- exist (MGET gives the same answer for every occurrence of a key).
for i = 1, n do
  local key = keys[i]
  local new = state[key]
  if new ~= nil then
    state[key] = nil  -- done: the key's later occurrences skip
    if new then
      local expires = px_of[key]
      if test_now then
        call('SET', key, new)
      elseif expires then
        call('SET', key, new, 'PX', fmt('%d', expires - now_ms))
      else
        call('SET', key, new, 'KEEPTTL')
      end
    elseif loaded[i] then
      call('DEL', key)
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

void AppendRedisDecisionArg(std::string& out, Algorithm algorithm, const Limit& limit,
                            uint64_t cost) {
  auto append = [&out](uint64_t value) {
    for (int byte = 0; byte < 8; ++byte) out += static_cast<char>((value >> (8 * byte)) & 0xff);
  };
  out += static_cast<char>(RedisAlgorithmCode(algorithm));
  append(limit.limit);
  append(static_cast<uint64_t>(std::chrono::nanoseconds(limit.period).count() / 1000));
  append(limit.burst);
  // The script reads signed numbers exact below 2^53; any cost past the capacity is
  // refused for ever, and 2^53 is past every capacity FitsRedisArithmetic allows.
  append(std::min<uint64_t>(cost, uint64_t{1} << 53));
}

Decision DecisionFromRedisReply(const long long* three, Algorithm algorithm, const Limit& limit) {
  // Microseconds to a Duration; the script's durations stay below 2^53 us, whose
  // nanoseconds fit 63 bits, but a reply is clamped rather than trusted to.
  static constexpr long long kMaxMicros = std::numeric_limits<int64_t>::max() / 1000;
  auto micros = [](long long us) {
    return Duration(std::chrono::microseconds(std::clamp<long long>(us, 0, kMaxMicros)));
  };
  Decision d;
  d.allowed = three[0] >= 0;
  d.remaining = static_cast<uint64_t>(d.allowed ? three[0] : -1 - three[0]);
  // What the algorithms answer as the limit (src/core/algorithms.cc): the capacity,
  // or 0 for a limit of 0, which refuses everything.
  d.limit = limit.limit == 0 ? 0 : Capacity(algorithm, limit);
  d.reset_after = micros(three[1]);
  d.retry_after = three[2] < 0 ? Decision::kNever : micros(three[2]);
  return d;
}

}  // namespace sluice::store
