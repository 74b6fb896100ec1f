#!/usr/bin/env bash
# What a Redis core decides through sluice's Redis store, against the usual one-key
# EVALSHA token bucket, with the Redis server kept busy by both (issue 4's figure:
# Redis CPU per decision for many distinct keys in ring mode).
#
# One redis-server (free 127.0.0.1 port, no persistence) alone on REDIS_CPU. Each round
# runs, in a shuffled order, for DURATION seconds after one second of warm-up:
#   sluice  bench/redis_store_load (src/store/redis_store.h driven by one event loop,
#           no HTTP): OUTSTANDING decisions in flight, token bucket LIMIT per
#           PERIOD_MS (states live, so most writes keep their key's TTL), a random key
#           out of KEYSPACE each; the store batches as in the server (one call in
#           flight, up to 64 decisions a call).
#   peer    redis-benchmark -c PEER_CLIENTS -P PEER_PIPELINE, EVALSHA of
#           bench/redis/token_bucket.lua on one random key out of KEYSPACE per call,
#           the same policy.
# Both clients run on CLIENT_CPU. Before each run the keys are flushed; the statistics
# are reset after the warm-up. Redis CPU is used_cpu_user + used_cpu_sys of INFO cpu
# over the run (networking and everything included); "in scripts" is EVALSHA's usec
# in INFO commandstats. sluice's decisions in the window are its EVALSHA calls times
# its decisions per call over the whole run (64 when Redis is the busy side).
# The table gives every round and the medians; the ratio is sluice's Redis CPU per
# decision over the peer's per call, in the same round.
#   bench/redis_capacity.sh                 5 rounds of 5 s (about a minute)
#   ROUNDS=1 DURATION=2 bench/redis_capacity.sh
# Knobs: DURATION (5), ROUNDS (5), KEYSPACE (10000), LIMIT (1000), PERIOD_MS
# (3600000), OUTSTANDING (1024), PEER_CLIENTS (50), PEER_PIPELINE (16), CLIENT_CPU (0),
# REDIS_CPU (1), BUILD_DIR (build).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BUILD_DIR=${BUILD_DIR:-build}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-5}
KEYSPACE=${KEYSPACE:-10000}
LIMIT=${LIMIT:-1000}
PERIOD_MS=${PERIOD_MS:-3600000}
OUTSTANDING=${OUTSTANDING:-1024}
MAX_BATCH=${MAX_BATCH:-64}
PEER_CLIENTS=${PEER_CLIENTS:-50}
PEER_PIPELINE=${PEER_PIPELINE:-16}
CLIENT_CPU=${CLIENT_CPU:-0}
REDIS_CPU=${REDIS_CPU:-1}

sudo=""
[[ $(id -u) == 0 ]] || sudo=sudo
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null ||
  apt_install redis-server redis-tools
cmake --build "$BUILD_DIR" --target redis_store_load >/dev/null

WORK=$(mktemp -d)
REDIS_PORT=$(free_port)
taskset -c "$REDIS_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
  --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
CLIENT_PID=
cleanup() {
  [[ -n "$CLIENT_PID" ]] && kill "$CLIENT_PID" 2>/dev/null
  kill "$REDIS_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
wait_port "$REDIS_PORT" "$REDIS_PID" || { echo "redis-server did not start" >&2; exit 1; }
cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
PEER_SHA=$(cli -x SCRIPT LOAD <bench/redis/token_bucket.lua)
PEER_RATE=$(python3 -c "print(repr($LIMIT / ($PERIOD_MS / 1000)))")

cpu_seconds() {
  cli INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.6f", s }'
}
evalsha() {  # calls usec
  cli INFO commandstats | tr -d '\r' | grep '^cmdstat_evalsha:' |
    sed 's/.*calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2/'
}

# measure NAME: after the client's warm-up, the Redis figures over DURATION seconds.
# Prints "calls usec cpu_seconds".
measure() {
  sleep 1
  cli CONFIG RESETSTAT >/dev/null
  local before after
  before=$(cpu_seconds)
  sleep "$DURATION"
  after=$(cpu_seconds)
  echo "$(evalsha) $(awk -v a="$after" -v b="$before" 'BEGIN { print a - b }')"
}

run_sluice() {
  cli FLUSHALL >/dev/null
  taskset -c "$CLIENT_CPU" "$BUILD_DIR/redis_store_load" --redis "127.0.0.1:$REDIS_PORT" \
    --seconds $((DURATION + 2)) --keyspace "$KEYSPACE" --outstanding "$OUTSTANDING" \
    --limit "$LIMIT" --period-ms "$PERIOD_MS" --max-batch "$MAX_BATCH" >"$WORK/driver.out" &
  CLIENT_PID=$!
  local figures
  figures=$(measure)
  wait "$CLIENT_PID" || { echo "driver failed: $(cat "$WORK/driver.out")" >&2; exit 1; }
  CLIENT_PID=
  local per_call
  per_call=$(sed 's/.*decisions_per_call \([0-9.]*\) .*/\1/' "$WORK/driver.out")
  echo "sluice $figures $per_call"
}

run_peer() {
  cli FLUSHALL >/dev/null
  taskset -c "$CLIENT_CPU" redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$PEER_CLIENTS" \
    -P "$PEER_PIPELINE" -n 2000000000 -r "$KEYSPACE" -q \
    EVALSHA "$PEER_SHA" 1 "tb:__rand_int__" "$LIMIT" "$PEER_RATE" 1 >/dev/null 2>&1 &
  CLIENT_PID=$!
  local figures
  figures=$(measure)
  kill "$CLIENT_PID" 2>/dev/null || true
  wait "$CLIENT_PID" 2>/dev/null || true
  CLIENT_PID=
  echo "peer $figures 1"
}

echo "redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on cpu $REDIS_CPU, clients on cpu $CLIENT_CPU; $ROUNDS rounds of ${DURATION}s; token bucket $LIMIT per ${PERIOD_MS}ms, $KEYSPACE keys"
echo "- sluice: $BUILD_DIR/redis_store_load --outstanding $OUTSTANDING --keyspace $KEYSPACE --limit $LIMIT --period-ms $PERIOD_MS"
echo "- peer: redis-benchmark -c $PEER_CLIENTS -P $PEER_PIPELINE -r $KEYSPACE EVALSHA <bench/redis/token_bucket.lua> 1 tb:__rand_int__ $LIMIT $PEER_RATE 1"
: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
  for who in $(printf 'sluice\npeer\n' | shuf); do
    echo "$round $(run_"$who")" >>"$WORK/results"
  done
done

python3 - "$WORK/results" "$DURATION" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
duration = float(sys.argv[2])
by_round = {}
for r in rows:
    rnd, who, calls, usec, cpu, per_call = r[0], r[1], int(r[2]), int(r[3]), float(r[4]), float(r[5])
    decisions = calls * per_call
    by_round.setdefault(rnd, {})[who] = {
        "rate": decisions / duration, "calls": calls / duration, "per_call": per_call,
        "cpu": cpu * 1e6 / decisions, "script": usec / decisions}
print()
print("| round | sluice decisions/s | decisions per EVALSHA | sluice Redis CPU µs/decision (in scripts) | peer decisions/s | peer Redis CPU µs/decision (in scripts) | sluice / peer |")
print("|---|---|---|---|---|---|---|")
ratios = []
for rnd, w in by_round.items():
    s, p = w["sluice"], w["peer"]
    ratio = s["cpu"] / p["cpu"]
    ratios.append(ratio)
    print(f"| {rnd} | {s['rate']:,.0f} | {s['per_call']:.1f} | {s['cpu']:.2f} ({s['script']:.2f}) | "
          f"{p['rate']:,.0f} | {p['cpu']:.2f} ({p['script']:.2f}) | {ratio:.2f}x |")
med = lambda who, k: statistics.median(w[who][k] for w in by_round.values())
print(f"| median | {med('sluice', 'rate'):,.0f} | {med('sluice', 'per_call'):.1f} | "
      f"{med('sluice', 'cpu'):.2f} ({med('sluice', 'script'):.2f}) | {med('peer', 'rate'):,.0f} | "
      f"{med('peer', 'cpu'):.2f} ({med('peer', 'script'):.2f}) | {statistics.median(ratios):.2f}x |")
print(f"\nsluice decides {1 / statistics.median(ratios):.2f}x as many per Redis CPU second as one EVALSHA per decision (median of the rounds' ratios).")
PY
