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
#           flight, up to MAX_BATCH decisions a call).
#   peer    redis-benchmark -c PEER_CLIENTS -P PEER_PIPELINE, EVALSHA of
#           bench/redis/token_bucket.lua on one random key out of KEYSPACE per call,
#           the same policy.
# Both clients run on CLIENT_CPU. Before each run the keys are flushed; the statistics
# are reset after the warm-up. Redis CPU is used_cpu_user + used_cpu_sys of INFO cpu
# over the run (networking and everything included); "in scripts" is EVALSHA's usec
# in INFO commandstats. sluice's decisions in the window are its EVALSHA calls times
# its decisions per call over the whole run (MAX_BATCH when Redis is the busy side).
# The table gives every round and the medians; the ratio is sluice's Redis CPU per
# decision over the peer's per call, in the same round.
#   bench/redis_capacity.sh                 5 rounds of 5 s (about a minute)
#   ROUNDS=1 DURATION=2 bench/redis_capacity.sh
# Knobs: DURATION (5), ROUNDS (5), KEYSPACE (10000), LIMIT (1000), PERIOD_MS
# (3600000), OUTSTANDING (1024), BATCHES ("256": the max_batch values to run sluice
# with, each every round; 256 is the store's), PEER_CLIENTS (50), PEER_PIPELINE (16), CLIENT_CPU (0),
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
BATCHES=${BATCHES:-256}
PEER_CLIENTS=${PEER_CLIENTS:-50}
PEER_PIPELINE=${PEER_PIPELINE:-16}
CLIENT_CPU=${CLIENT_CPU:-0}
REDIS_CPU=${REDIS_CPU:-1}

sudo=""
[[ $(id -u) == 0 ]] || sudo=sudo
need redis-server redis-server
need redis-tools redis-cli redis-benchmark
need python3 python3
need util-linux taskset
install_needed
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

run_sluice() {  # run_sluice MAX_BATCH
  local max_batch=$1
  cli FLUSHALL >/dev/null
  taskset -c "$CLIENT_CPU" "$BUILD_DIR/redis_store_load" --redis "127.0.0.1:$REDIS_PORT" \
    --seconds $((DURATION + 2)) --keyspace "$KEYSPACE" --outstanding "$OUTSTANDING" \
    --limit "$LIMIT" --period-ms "$PERIOD_MS" --max-batch "$max_batch" >"$WORK/driver.out" &
  CLIENT_PID=$!
  local figures
  figures=$(measure)
  wait "$CLIENT_PID" || { echo "driver failed: $(cat "$WORK/driver.out")" >&2; exit 1; }
  CLIENT_PID=
  local per_call
  per_call=$(sed 's/.*decisions_per_call \([0-9.]*\) .*/\1/' "$WORK/driver.out")
  echo "sluice:$max_batch $figures $per_call"
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
echo "- sluice: $BUILD_DIR/redis_store_load --outstanding $OUTSTANDING --keyspace $KEYSPACE --limit $LIMIT --period-ms $PERIOD_MS --max-batch B, B in: $BATCHES"
echo "- peer: redis-benchmark -c $PEER_CLIENTS -P $PEER_PIPELINE -r $KEYSPACE EVALSHA <bench/redis/token_bucket.lua> 1 tb:__rand_int__ $LIMIT $PEER_RATE 1"
: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
  for who in $( (for b in $BATCHES; do echo "sluice:$b"; done; echo peer) | shuf); do
    case "$who" in
      peer) echo "$round $(run_peer)" >>"$WORK/results" ;;
      sluice:*) echo "$round $(run_sluice "${who#sluice:}")" >>"$WORK/results" ;;
    esac
  done
done

python3 - "$WORK/results" "$DURATION" <<'PY'
import statistics, sys
duration = float(sys.argv[2])
runs = {}  # (round, who) -> figures
for line in open(sys.argv[1]):
    rnd, who, calls, usec, cpu, per_call = line.split()
    calls, usec, cpu, per_call = int(calls), int(usec), float(cpu), float(per_call)
    decisions = calls * per_call
    runs[(rnd, who)] = {"rate": decisions / duration, "per_call": per_call,
                        "cpu": cpu * 1e6 / decisions, "script": usec / decisions}
rounds = sorted({r for r, _ in runs}, key=int)
cases = sorted({w for _, w in runs if w != "peer"}, key=lambda w: int(w.split(":")[1]))
print()
print("| round | client | decisions/s | decisions per EVALSHA | Redis CPU µs/decision | of which in scripts | sluice / peer |")
print("|---|---|---|---|---|---|---|")
ratios = {c: [] for c in cases}
for rnd in rounds:
    peer = runs[(rnd, "peer")]
    for who in cases + ["peer"]:
        f = runs[(rnd, who)]
        ratio = ""
        if who != "peer":
            ratios[who].append(f["cpu"] / peer["cpu"])
            ratio = f"{ratios[who][-1]:.2f}x"
        name = "peer" if who == "peer" else f"sluice, max_batch {who.split(':')[1]}"
        print(f"| {rnd} | {name} | {f['rate']:,.0f} | {f['per_call']:.1f} | {f['cpu']:.2f} | {f['script']:.2f} | {ratio} |")
def med(who, key):
    return statistics.median(runs[(r, who)][key] for r in rounds)
print()
print("| client (medians) | decisions/s | decisions per EVALSHA | Redis CPU µs/decision | of which in scripts | sluice / peer (median of the rounds' ratios) | decisions per Redis CPU second, sluice over peer |")
print("|---|---|---|---|---|---|---|")
for who in cases + ["peer"]:
    name = "peer: one-key EVALSHA, -P 16" if who == "peer" else f"sluice, max_batch {who.split(':')[1]}"
    r = statistics.median(ratios[who]) if who != "peer" else None
    print(f"| {name} | {med(who, 'rate'):,.0f} | {med(who, 'per_call'):.1f} | {med(who, 'cpu'):.2f} | "
          f"{med(who, 'script'):.2f} | {f'{r:.2f}x' if r else ''} | {f'{1 / r:.2f}x' if r else ''} |")
PY
