-- wrk script for bench/http_peers.sh: no per-request hook (so it costs wrk nothing
-- while running); at the end, one machine-readable line with the figures the script
-- needs. Latencies are in microseconds; status = responses that were not 2xx/3xx
-- (wrk's "Non-2xx or 3xx responses").
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
