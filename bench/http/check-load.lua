-- wrk script for bench/decision_api.sh: each request speaks for another client, taken
-- in turn from KEYS clients (10.0.0.0, 10.0.0.1, ...; a counter modulo KEYS), so the
-- memory store reads and updates a different bucket each time. Arguments after `--`:
--   MODE KEYS [BATCH]
-- MODE:
--   single       POST /v1/check {"rule":"per-client","key":"10.a.b.c"}
--   batch        POST /v1/check [ ... BATCH such queries, BATCH consecutive clients ]
--   descriptors  POST /v1/check {"descriptors":{"ip":"10.a.b.c","path":...,"header:x-api-key":...}}
--   auth         GET /v1/auth with X-Forwarded-For: 10.a.b.c, X-Original-Method,
--                X-Original-URI (forward-auth, as nginx auth_request sends it)
--   get          GET /api/items/42 with X-Forwarded-For: 10.a.b.c (plain request
--                decided by the rules, sluice's decision mode and nginx limit_req)
-- The client addresses are made once, in init, so that a request costs wrk a table
-- look-up and a concatenation. At the end, one machine-readable line as
-- bench/http/report.lua writes it.
local mode, keys, batch
local ips = {}
local next_client = 0
local parts = {}

init = function(args)
  mode = args[1] or "single"
  keys = tonumber(args[2] or "100000")
  batch = tonumber(args[3] or "100")
  for n = 0, keys - 1 do
    ips[n] = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256,
                           math.floor(n / 256) % 256, n % 256)
  end
end

local json = {["Content-Type"] = "application/json"}

local function client()
  local ip = ips[next_client]
  next_client = next_client + 1
  if next_client == keys then next_client = 0 end
  return ip
end

request = function()
  if mode == "single" then
    return wrk.format("POST", "/v1/check", json,
                      '{"rule":"per-client","key":"' .. client() .. '"}')
  elseif mode == "batch" then
    parts[1] = "["
    for i = 1, batch do
      parts[2 * i] = (i > 1 and ',{"rule":"per-client","key":"' or '{"rule":"per-client","key":"')
      parts[2 * i + 1] = client() .. '"}'
    end
    parts[2 * batch + 2] = "]"
    return wrk.format("POST", "/v1/check", json, table.concat(parts, "", 1, 2 * batch + 2))
  elseif mode == "descriptors" then
    local n = next_client
    return wrk.format("POST", "/v1/check", json,
                      '{"descriptors":{"ip":"' .. client() ..
                      '","path":"/api/items/42","header:x-api-key":"k-' .. (n % 1000) .. '"}}')
  elseif mode == "auth" then
    return wrk.format("GET", "/v1/auth", {
      ["X-Forwarded-For"] = client(),
      ["X-Original-Method"] = "GET",
      ["X-Original-URI"] = "/api/items/42",
    })
  else  -- get
    return wrk.format("GET", "/api/items/42", {["X-Forwarded-For"] = client()})
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
