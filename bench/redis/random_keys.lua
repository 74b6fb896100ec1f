-- wrk script for bench/redis_store.sh: every request carries a random X-API-Key out
-- of KEYSPACE ("k1" .. "kKEYSPACE", uniform), and optionally a pipeline depth
-- (requests written at once on a connection, default 1), given after the URL:
--   wrk ... -s bench/redis/random_keys.lua http://127.0.0.1:PORT/ -- 1000000 [DEPTH]
-- The request is built by concatenating three strings (no wrk.format per request),
-- so the hook costs wrk little. At the end, the same RESULT line as
-- bench/http/report.lua.
local head, tail
local keyspace = 1000000
local depth = 1
local random = math.random

init = function(args)
  keyspace = tonumber(args[1]) or keyspace
  depth = tonumber(args[2]) or depth
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 1000)
  local r = wrk.format("GET", "/", { ["X-API-Key"] = "@KEY@" })
  local at = r:find("@KEY@", 1, true)
  head, tail = r:sub(1, at - 1), r:sub(at + 5)
end

request = function()
  if depth == 1 then return head .. "k" .. random(keyspace) .. tail end
  local parts = {}
  for i = 1, depth do parts[i] = head .. "k" .. random(keyspace) .. tail end
  return table.concat(parts)
end

-- The report line bench/http/report.lua prints (the scripts run from the checkout's root).
dofile("bench/http/report.lua")
