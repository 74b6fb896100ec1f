#!/usr/bin/env bash
# Envoy's rate limit API on sluice's grpc_listen: decisions per second, latency and the
# server's CPU per decision, with one server core.
#
# sluice (one worker; the gRPC service decides on gRPC's threads, all pinned to
# SERVER_CPU, default core 0) serves a domain with one limit per remote_address far
# above the load, so every call is a real store decision that passes; build/rls_load
# (a C++ gRPC callback client, pinned to CLIENT_CPU, default core 1) keeps CONCURRENCY
# calls in flight over KEYS distinct addresses for DURATION seconds. CPU per decision is
# sluice's utime+stime from /proc over the run divided by the calls completed. ROUNDS
# rounds, medians with (min-max).
#
# The issue's figure: at least 50,000 decisions per second from one server core with the
# memory store. envoyproxy/ratelimit (Go, Redis-backed) is not in Debian; its figures are
# of other machines and are quoted, not measured, in docs/benchmarks.md.
#
#   ROUNDS=3 DURATION=8 bench/rls.sh
# Knobs: ROUNDS (3), DURATION (8, seconds), CONCURRENCY (256), KEYS (10000),
# SERVER_CPU (0), CLIENT_CPU (1), BUILD_DIR (build), SLUICE (another sluice binary).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source bench/lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONCURRENCY=${CONCURRENCY:-256}
KEYS=${KEYS:-10000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BUILD_DIR=${BUILD_DIR:-build}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
need util-linux taskset
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
EOF

results=()
for round in $(seq "$ROUNDS"); do
  port=$(free_port)
  cat >"$WORK/sluice.yaml" <<EOF
listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
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
  # A short warm-up (connections, the store's first keys), not counted.
  taskset -c "$CLIENT_CPU" "$LOAD" --target "127.0.0.1:$port" --domain bench \
    --concurrency "$CONCURRENCY" --keys "$KEYS" --duration 1 >/dev/null
  ticks_before=$(cpu_ticks "$pid")
  out=$(taskset -c "$CLIENT_CPU" "$LOAD" --target "127.0.0.1:$port" --domain bench \
    --concurrency "$CONCURRENCY" --keys "$KEYS" --duration "$DURATION")
  ticks_after=$(cpu_ticks "$pid")
  stop_pid "$pid"
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
echo "- command: ROUNDS=$ROUNDS DURATION=$DURATION CONCURRENCY=$CONCURRENCY KEYS=$KEYS bench/rls.sh"
echo
echo "| decisions/s | p50 µs | p99 µs | server CPU µs/decision |"
echo "|---|---|---|---|"
echo "| $(median 1) | $(median 2) | $(median 3) | $(median 4) |"
