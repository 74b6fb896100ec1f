-- The peer of bench/redis_store.sh: the usual one-key token bucket, one EVALSHA per
-- decision, as a client library would run it (redis-benchmark drives it with -P 16).
-- KEYS[1]: the bucket (a hash: tokens, ts). ARGV: capacity, refill per second, cost.
-- The clock is the server's (TIME), in milliseconds; the bucket expires when it would
-- be full again. Returns {allowed (1/0), tokens left}.
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
if now > ts then tokens = math.min(capacity, tokens + (now - ts) * rate / 1000) end
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1)
return {allowed, math.floor(tokens)}
