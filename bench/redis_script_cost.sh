#!/usr/bin/env bash
# Redis server CPU per decision of the batch script (src/store/redis_scripts.cc), for
# calls of 16 decisions on distinct keys and for one-decision calls, per algorithm.
#
# Starts its own redis-server on a free 127.0.0.1 port (no persistence), loads the
# script straight from the source, drives EVALSHA with redis-cli --pipe (random keys
# from a keyspace of 4096 per algorithm, the server's clock, cost 1 under 100 per
# second), and reads INFO commandstats: usec_per_call of EVALSHA is the time inside the
# script, its redis.call included. "all CPU" is the server's whole CPU time (INFO cpu)
# over the measured run, networking included, per decision. The server is stopped on
# exit, whatever happens.
#
# Usage: [SIZES="16 1"] [CODES="0 1 2 3 4 5"] [KEYSPACE=4096] [LIMIT=100]
# [PERIOD_US=1000000] bench/redis_script_cost.sh [decisions per measurement, default
# 96000]; SIZES are the decisions per call, CODES the algorithms, LIMIT per PERIOD_US
# the policy (burst = limit), cost 1. At 100 a second a token bucket's state is whole
# again before its key comes round, so every write makes a new key with a TTL; at
# LIMIT=1000 PERIOD_US=3600000000 states live and most writes keep their TTL.
# Needs redis-server, redis-cli and python3 (a free port, the calls).
set -euo pipefail
cd "$(dirname "$0")/.."

decisions=${1:-96000}
keyspace=${KEYSPACE:-4096}
limit=${LIMIT:-100}
period_us=${PERIOD_US:-1000000}

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$dir" \
  --daemonize no >"$dir/redis.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cli() { redis-cli -h 127.0.0.1 -p "$port" "$@"; }
for _ in $(seq 100); do
  [[ "$(cli PING 2>/dev/null)" == PONG ]] && break
  sleep 0.05
done
[[ "$(cli PING)" == PONG ]] || { echo "redis-server did not start" >&2; exit 1; }

# The script is the one raw string literal of the source file.
sed -n '/R"lua(/,/)lua"/p' src/store/redis_scripts.cc | sed '1d;$d' >"$dir/decide.lua"
sha=$(cli -x SCRIPT LOAD <"$dir/decide.lua")
[[ "$sha" =~ ^[0-9a-f]{40}$ ]] || { echo "SCRIPT LOAD: $sha" >&2; exit 1; }

cpu_seconds() {
  cli INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ { s += $2 } END { printf "%.6f", s }'
}

echo "redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), $decisions decisions a measurement"
printf '%-24s %4s %8s %12s %14s %14s\n' algorithm n calls us/call us/decision "all CPU/dec"
names=(token_bucket leaky_bucket fixed_window sliding_window_log sliding_window_counter gcra)
for code in ${CODES:-0 1 2 3 4 5}; do
  for n in ${SIZES:-16 1}; do
    calls=$((decisions / n))
    # Calls of n decisions on random keys, as RESP, sent with redis-cli --pipe: a
    # decision's argument is binary (src/store/redis_scripts.h), which
    # redis-benchmark's command line cannot carry.
    run() {
      python3 - "$sha" "$n" "$1" "$code" "$keyspace" "$limit" "$period_us" <<'PY' >"$dir/calls.resp"
import random, struct, sys
sha, n, calls, code, keyspace, limit, period_us = sys.argv[1], *map(int, sys.argv[2:])
arg = struct.pack('<Bqqqq', code, limit, period_us, limit, 1)
def bulk(b): return b'$%d\r\n%s\r\n' % (len(b), b)
head = b'*%d\r\n' % (4 + 2 * n) + bulk(b'EVALSHA') + bulk(sha.encode()) + bulk(str(n).encode())
tail = bulk(b'') + bulk(arg) * n
out = sys.stdout.buffer
rand = random.Random(1)
for _ in range(calls):
    # Keys as the store names them: sluice:{<rule>:<32 hex digits>}.
    out.write(head + b''.join(bulk(b'sluice:{b%d:%032x}' % (code, rand.randrange(keyspace))) for _ in range(n)) + tail)
PY
      cli --pipe <"$dir/calls.resp" >"$dir/pipe.out" 2>&1
      grep -q "errors: 0," "$dir/pipe.out" || { cat "$dir/pipe.out" >&2; exit 1; }
    }
    run $((keyspace * 4 / n))  # every key has a state
    cli CONFIG RESETSTAT >/dev/null
    before=$(cpu_seconds)
    run "$calls"
    after=$(cpu_seconds)
    stats=$(cli INFO commandstats | tr -d '\r' | grep '^cmdstat_evalsha:')
    [[ "$stats" == *"failed_calls=0"* ]] || { echo "failed: $stats" >&2; exit 1; }
    usec=$(sed 's/.*,usec=\([0-9]*\),.*/\1/' <<<"$stats")
    measured=$(sed 's/.*calls=\([0-9]*\),usec=.*/\1/' <<<"$stats")
    awk -v name="${names[$code]}" -v n="$n" -v calls="$measured" -v usec="$usec" \
      -v cpu="$(awk -v a="$after" -v b="$before" 'BEGIN { print a - b }')" 'BEGIN {
        printf "%-24s %4d %8d %12.2f %14.2f %14.2f\n", name, n, calls, usec / calls,
               usec / calls / n, cpu * 1e6 / (calls * n) }'
  done
done
