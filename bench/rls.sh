#!/usr/bin/env bash
# Envoy's rate limit API on sluice's grpc_listen: decisions per second, latency and the
# server's CPU per decision, with one server core.
#
# sluice (one worker, pinned with all its threads to SERVER_CPU, default core 0;
# grpc_server native, or gRPC's C++ server with SLUICE_GRPC_SERVER=grpc-cpp) serves a
# domain with one limit per remote_address far above the load, so every call is a
# real store decision that passes; build/rls_load (a C++ gRPC callback client, pinned
# to CLIENT_CPU, default core 1) keeps CONCURRENCY
# calls in flight over KEYS distinct addresses for DURATION seconds. CPU per decision is
# sluice's utime+stime from /proc over the run divided by the calls completed. ROUNDS
# rounds, medians with (min-max).
#
# CLIENT=h2load measures the server's own ceiling instead: h2load (nghttp2-client, a
# C++ HTTP/2 load generator far cheaper per call than a gRPC client) sends the same
# ShouldRateLimit call (DESCRIPTORS descriptors, encoded once) on one connection with
# CONCURRENCY streams; every call is checked in sluice's own counters.
#
# The issue's figure: at least 50,000 decisions per second from one server core with the
# memory store. envoyproxy/ratelimit (Go, Redis-backed) is not in Debian; its figures are
# of other machines and are quoted, not measured, in docs/benchmarks.md.
#
#   ROUNDS=3 DURATION=8 bench/rls.sh
# Knobs: ROUNDS (3), DURATION (8, seconds), CONCURRENCY (256), KEYS (10000), DESCRIPTORS
# (1 to 3 a call: remote_address, path, user; each one decision),
# SERVER_CPU (0), CLIENT_CPU (1), BUILD_DIR (build), SLUICE (another sluice binary).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source bench/lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONCURRENCY=${CONCURRENCY:-256}
KEYS=${KEYS:-10000}
DESCRIPTORS=${DESCRIPTORS:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BUILD_DIR=${BUILD_DIR:-build}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
CLIENT=${CLIENT:-rls_load}
need util-linux taskset
[ "$CLIENT" != h2load ] || need nghttp2-client h2load
install_needed
warn_shared_core "$SERVER_CPU" "$CLIENT_CPU"

SLUICE=${SLUICE:-$(sluice_binary "$BUILD_DIR")}
LOAD="$ROOT/$BUILD_DIR/rls_load"
[ -x "$LOAD" ] || cmake --build "$BUILD_DIR" --target rls_load >&2

WORK=$(mktemp -d)
STARTED=()
cleanup() {
  local p
  for p in "${STARTED[@]+"${STARTED[@]}"}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/bench.yaml" <<'EOF'
domain: bench
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 1000000000}
  - key: path
    rate_limit: {unit: second, requests_per_unit: 1000000000}
  - key: user
    rate_limit: {unit: second, requests_per_unit: 1000000000}
EOF

results=()
for round in $(seq "$ROUNDS"); do
  port=$(free_port)
  admin_port=$(free_port)
  cat >"$WORK/sluice.yaml" <<EOF
listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:$admin_port"
grpc_listen: "127.0.0.1:$port"
workers: 1
access_log: {enabled: false}
envoy_ratelimit_configs: ["$WORK/bench.yaml"]
rules: []
EOF
  taskset -c "$SERVER_CPU" "$SLUICE" serve --config "$WORK/sluice.yaml" 2>"$WORK/sluice.err" &
  pid=$!
  STARTED+=("$pid")
  wait_port "$port" "$pid" || { cat "$WORK/sluice.err" >&2; exit 1; }
  if [ "$CLIENT" = h2load ]; then
    # One call, as Envoy would send it: a gRPC frame (uncompressed, length) around a
    # RateLimitRequest {domain "bench", descriptors [{entries [{remote_address, 10.0.0.1}]},
    # then {path, /api} and {user, u1} for DESCRIPTORS 2 and 3]}, encoded with Envoy's
    # field numbers.
    /usr/bin/python3 -c '
import struct, sys
def ld(field, b): return bytes([(field << 3) | 2, len(b)]) + b
entries = [(b"remote_address", b"10.0.0.1"), (b"path", b"/api"), (b"user", b"u1")]
request = ld(1, b"bench")
for key, value in entries[:int(sys.argv[1])]:
    request += ld(2, ld(1, ld(1, key) + ld(2, value)))
sys.stdout.buffer.write(b"\x00" + struct.pack(">I", len(request)) + request)' "$DESCRIPTORS" >"$WORK/call.bin"
    h2() {
      taskset -c "$CLIENT_CPU" h2load -c 1 -t 1 -m "$CONCURRENCY" -D "$1" \
        --data="$WORK/call.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
        --log-file="$WORK/h2load.log" \
        "http://127.0.0.1:$port/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
    }
    allowed() {
      curl -s "http://127.0.0.1:$admin_port/metrics" |
        awk '/^sluice_requests_total\{rule="bench.remote_address",decision="allowed"\}/ {print $2}'
    }
    h2 1 >/dev/null  # warm-up, not counted
    allowed_before=$(allowed)
    ticks_before=$(cpu_ticks "$pid")
    h2out=$(h2 "$DURATION")
    ticks_after=$(cpu_ticks "$pid")
    allowed_after=$(allowed)
    stop_pid "$pid"
    calls=$(awk '/^requests:/ {print $8}' <<<"$h2out")  # "N succeeded"
    seconds=$(awk '/^finished in/ {sub(/s,/, "", $3); print $3}' <<<"$h2out")
    # h2load's log: start time, status, microseconds, per request.
    read -r p50 p99 < <(awk '{print $3}' "$WORK/h2load.log" | sort -n |
      awk '{v[NR] = $1} END { print v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1] }')
    out="calls $calls failed 0 over_limit 0 seconds $seconds calls_per_s $(awk -v c="$calls" -v s="$seconds" 'BEGIN { printf "%d", c / s }') p50_us $p50 p99_us $p99 max_us 0"
    # Every call answered, and decided once: sluice counted as many allowed decisions
    # (those of the warm-up still finishing aside: within CONCURRENCY).
    counted=$(awk -v a="$allowed_after" -v b="$allowed_before" 'BEGIN { printf "%d", a - b }')
    if [ "$counted" -lt "$calls" ] || [ "$counted" -gt $((calls + CONCURRENCY)) ]; then
      echo "sanity check failed: h2load completed $calls calls, sluice counted $counted decisions" >&2
      exit 1
    fi
  else
    # A short warm-up (connections, the store's first keys), not counted.
    taskset -c "$CLIENT_CPU" "$LOAD" --target "127.0.0.1:$port" --domain bench \
      --concurrency "$CONCURRENCY" --keys "$KEYS" --descriptors "$DESCRIPTORS" --duration 1 >/dev/null
    ticks_before=$(cpu_ticks "$pid")
    out=$(taskset -c "$CLIENT_CPU" "$LOAD" --target "127.0.0.1:$port" --domain bench \
      --concurrency "$CONCURRENCY" --keys "$KEYS" --descriptors "$DESCRIPTORS" --duration "$DURATION")
    ticks_after=$(cpu_ticks "$pid")
    stop_pid "$pid"
  fi
  echo "round $round: $out" >&2
  calls=$(sed -E 's/.*calls ([0-9]+) .*/\1/' <<<"$out")
  over=$(sed -E 's/.*over_limit ([0-9]+) .*/\1/' <<<"$out")
  failed=$(sed -E 's/.*failed ([0-9]+) .*/\1/' <<<"$out")
  if [ "$failed" != 0 ] || [ "$over" != 0 ]; then
    echo "sanity check failed: $failed failed calls, $over over limit" >&2
    exit 1
  fi
  tick_us=$((1000000 / $(getconf CLK_TCK)))
  cpu_us=$(awk -v t=$((ticks_after - ticks_before)) -v u="$tick_us" -v c="$calls" \
    'BEGIN { printf "%.2f", t * u / c }')
  rate=$(sed -E 's/.*calls_per_s ([0-9]+) .*/\1/' <<<"$out")
  p50=$(sed -E 's/.*p50_us ([0-9]+) .*/\1/' <<<"$out")
  p99=$(sed -E 's/.*p99_us ([0-9]+) .*/\1/' <<<"$out")
  results+=("$rate $p50 $p99 $cpu_us")
done

median() {  # median COLUMN: "median (min-max)" of that column of the results
  printf '%s\n' "${results[@]}" | awk -v c="$1" '{print $c}' | sort -g |
    awk '{v[NR] = $1} END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
                            printf "%s (%s-%s)", m, v[1], v[NR] }'
}

echo "## Envoy rate limit API on grpc_listen, $(commit_description), $(date -u +%F)"
echo "- $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); sluice on core $SERVER_CPU, rls_load on core $CLIENT_CPU"
echo "- command: CLIENT=$CLIENT ROUNDS=$ROUNDS DURATION=$DURATION CONCURRENCY=$CONCURRENCY KEYS=$KEYS DESCRIPTORS=$DESCRIPTORS bench/rls.sh"
echo
echo "(calls/s and CPU per call; with DESCRIPTORS=$DESCRIPTORS each call is that many decisions)"
echo "| calls/s | p50 µs | p99 µs | server CPU µs/call |"
echo "|---|---|---|---|"
echo "| $(median 1) | $(median 2) | $(median 3) | $(median 4) |"
