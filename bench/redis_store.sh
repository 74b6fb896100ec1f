#!/usr/bin/env bash
# sluice's Redis store: what it costs Redis and sluice, against the usual one-key
# token-bucket script, and against sluice's memory store, all in one run.
#
# One redis-server (started here on a free 127.0.0.1 port, --save "" --appendonly no)
# serves every measurement; before each one its keys are flushed and its statistics
# reset. Measurements (each DURATION long; every round runs them all afresh, in a
# shuffled order, and the tables give the medians over ROUNDS):
#   redis   pass      sluice, backend redis, token_bucket PASS_LIMIT/PASS_PERIOD
#                     (1000000/1s) on X-API-Key, every request a random key out of
#                     KEYSPACE (bench/redis/random_keys.lua): every request passes,
#                     every one is a decision Redis makes (batched per event-loop turn
#                     into one EVALSHA). At 1000000/1s a state is full again, and
#                     expires, a few µs after its decision, so nearly every decision
#                     writes a new key; PASS_LIMIT=100 PASS_PERIOD=1h keeps states.
#   memory  pass      the same with backend memory.
#   redis   flood-tb  one key (X-API-Key: flood), token_bucket 100/1s: all but about
#                     100/s get 429; the deny cache should answer nearly all of them.
#   redis   flood-fw  one key, fixed_window 10/1m: all but 10 get 429.
#   memory  flood-tb, memory flood-fw: the same with backend memory.
#   peer              redis-benchmark -P 16 -c PEER_CLIENTS running bench/redis/
#                     token_bucket.lua (HMGET/HSET/PEXPIRE, TIME) with EVALSHA on one
#                     random key out of KEYSPACE per call (-r), same rule
#                     (capacity PASS_LIMIT, PASS_LIMIT per PASS_PERIOD).
# Placement (2 cores): sluice, one worker, alone on SERVER_CPU (0); wrk -t1
# -cCONNECTIONS, redis-benchmark and redis-server on CLIENT_CPU (1). REDIS_CPU=0 puts
# Redis on sluice's core instead: sluice then waits while Redis runs, its requests pile
# up, and its batches grow (about 21 decisions a call instead of 4).
# Figures: requests/s and p50/p99 (wrk); sluice's CPU per request (utime+stime from
# /proc/PID/stat over the wrk run); Redis's CPU per request, decision or call
# (used_cpu_user+used_cpu_sys of INFO cpu over the run, µs resolution, networking and
# expiry included) and the part inside scripts (EVALSHA's usec in INFO commandstats,
# then the commands the scripts called); EVALSHA calls per request; decisions per
# EVALSHA (sluice_store_operations_total{result="ok"} over the calls).
#   bench/redis_store.sh                        3 rounds of 10 s (about 4.5 minutes)
#   DURATION=3s ROUNDS=1 bench/redis_store.sh   smoke run
#   CASES="redis:pass peer" REDIS_CPU=0 bench/redis_store.sh
# Other knobs: CONNECTIONS (50); DEPTH (1): requests pipelined per wrk connection in
# the pass case, which makes sluice's batches larger (wrk reports no latency then);
# KEYSPACE (1000000); PASS_LIMIT (1000000) and PASS_PERIOD (1s; s, m or h) of the
# pass case and the peer; PEER_CLIENTS (50); PEER_PIPELINE (16); SERVER_CPU (0);
# CLIENT_CPU (1); REDIS_CPU (CLIENT_CPU); BUILD_DIR (build); BUSY_CHECK=0 skips the
# check for other load on the machine; PROFILE=1 runs perf record -e cpu-clock on
# redis-server for 5 s of the first redis:pass run and prints the top DSOs and symbols
# (that run is marked); KEEP=1 keeps the work directory (configs, logs, INFO and
# /metrics snapshots, raw client output).
# Exit status 1 when a sanity check failed (wrong status codes, socket errors, store
# errors, more passes than the limit allows): the tables are still printed, with the
# failed measurement marked.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
DEPTH=${DEPTH:-1}
KEYSPACE=${KEYSPACE:-1000000}
PASS_LIMIT=${PASS_LIMIT:-1000000}
PASS_PERIOD=${PASS_PERIOD:-1s}
PEER_CLIENTS=${PEER_CLIENTS:-50}
PEER_PIPELINE=${PEER_PIPELINE:-16}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
REDIS_CPU=${REDIS_CPU:-$CLIENT_CPU}
CASES=${CASES:-redis:pass memory:pass redis:flood-tb memory:flood-tb redis:flood-fw memory:flood-fw peer}
PROFILE=${PROFILE:-0}
BUSY_CHECK=${BUSY_CHECK:-1}
KEEP=${KEEP:-0}
COMMAND_LINE="DURATION=$DURATION ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS DEPTH=$DEPTH KEYSPACE=$KEYSPACE PASS_LIMIT=$PASS_LIMIT PASS_PERIOD=$PASS_PERIOD PEER_CLIENTS=$PEER_CLIENTS PEER_PIPELINE=$PEER_PIPELINE SERVER_CPU=$SERVER_CPU CLIENT_CPU=$CLIENT_CPU REDIS_CPU=$REDIS_CPU CASES=\"$CASES\" $0${*:+ $*}"
export PATH="$PATH:/usr/sbin:/sbin"

# ---- what is needed ---------------------------------------------------------------
sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
# apt_install, duration_s, free_port, wait_port, fill
source "$ROOT/bench/lib.sh"
need python3 python3
need curl curl
need util-linux taskset
need procps ps
need wrk wrk
need redis-server redis-server
need redis-tools redis-cli redis-benchmark
[ "$PROFILE" = 1 ] && need linux-perf perf
install_needed
SLUICE_BUILT=$(sluice_binary "$BUILD_DIR")
warn_shared_core "$SERVER_CPU" "$CLIENT_CPU"

CLK_TCK=$(getconf CLK_TCK)
RUN_SECONDS=$(duration_s "$DURATION")
PASS_RATE=$(python3 -c "print(repr($PASS_LIMIT / $(duration_s "$PASS_PERIOD")))")  # per second, for the peer

# ---- work directory, and stopping everything we start -----------------------------
bench_setup redis-store

# The binary is copied, so that a rebuild during the run changes nothing.
SLUICE="$WORK/sluice"
cp "$SLUICE_BUILT" "$SLUICE"


proc_ticks() {  # "utime stime" of PID (fields 14 and 15 of /proc/PID/stat), 0 0 if gone
  { cat "/proc/$1/stat" 2>/dev/null || true; } |
    awk '{ sub(/^.*\) /, ""); u = $12; s = $13 } END { print u + 0, s + 0 }'
}



# ---- redis-server -----------------------------------------------------------------
REDIS_PORT=$(free_port)
mkdir -p "$WORK/redis"
taskset -c "$REDIS_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
  --appendonly no --dir "$WORK/redis" --daemonize no >"$WORK/redis/redis.log" 2>&1 &
REDIS_PID=$!
STARTED+=("$REDIS_PID")
cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
for _ in $(seq 100); do
  [ "$(cli PING 2>/dev/null)" = PONG ] && break
  kill -0 "$REDIS_PID" 2>/dev/null || break
  sleep 0.05
done
if [ "$(cli PING 2>/dev/null)" != PONG ]; then
  echo "error: redis-server did not start on 127.0.0.1:$REDIS_PORT; its output:" >&2
  tail -20 "$WORK/redis/redis.log" >&2
  exit 1
fi
PEER_SHA=$(cli -x SCRIPT LOAD <bench/redis/token_bucket.lua)
[[ "$PEER_SHA" =~ ^[0-9a-f]{40}$ ]] || { echo "error: SCRIPT LOAD: $PEER_SHA" >&2; exit 1; }

# ---- one measurement --------------------------------------------------------------
# Snapshots go to $dir/{redis,metrics,sluice_cpu}.{before,after} and the client's
# output to $dir/client.out; the table at the end reads them all.
# The machine may be shared: a compiler, test run or benchmark that is not ours, seen
# at either end of a measurement or half-way through it, marks it busy; the tables
# take the medians over the quiet runs when there are any (and say so), over all runs
# otherwise (marked "machine busy"). One look is one ps: looking every second doubled
# the memory store's p99.
others() {
  ps -eo pid=,ppid=,stat=,comm= 2>/dev/null |
    awk -v ours="$REDIS_PID ${SLUICE_PID:-}" -v client="${CLIENT_PID:-0}" '
      BEGIN { n = split(ours, a, " "); for (i = 1; i <= n; i++) skip[a[i]] = 1 }
      $1 in skip || $2 == client { next }
      $4 ~ /^(cc1plus|ld|ctest|redis-benchmark|wrk|make|ninja|memory_per_key)$/ || $4 ~ /_tes|_bench|fuzz/ ||
        (($4 == "sluice" || $4 == "redis-server") && $3 ~ /^R/) { print $4 }' |  # idle servers do not count
    sort -u | xargs
}

start_sampler() {  # start_sampler DIR: once the client runs (its PID is ours)
  [ "$BUSY_CHECK" = 1 ] || return 0
  (
    trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    sleep $((RUN_SECONDS / 2)) & nap=$!
    wait "$nap"
    others >"$1/busy.samples"
  ) 2>/dev/null &
  SAMPLER_PID=$!
}

snapshot() {  # snapshot DIR WHEN
  local dir=$1 when=$2 busy=""
  if [ "$when" = after ] && [ -n "$SAMPLER_PID" ]; then
    kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=
  fi
  [ "$BUSY_CHECK" = 1 ] && busy=$( { others; cat "$dir/busy.samples" 2>/dev/null || true; } | xargs -n1 | sort -u | xargs)
  [ -z "$busy" ] || echo "busy=$busy" >>"$dir/meta"
  cli INFO all | tr -d '\r' >"$dir/redis.$when"
  date +%s.%N >"$dir/time.$when"
  if [ -n "${ADMIN_PORT:-}" ]; then
    curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$dir/metrics.$when" || true
  fi
  if [ -n "${SLUICE_PID:-}" ]; then proc_ticks "$SLUICE_PID" >"$dir/sluice_cpu.$when"; fi
}

reset_redis() {
  cli FLUSHALL >/dev/null
  cli CONFIG RESETSTAT >/dev/null
}

# perf on redis-server for 5 s, from 2 s into the run, in the background.
maybe_profile() {
  local dir=$1
  if [ "$PROFILE" = 1 ] && [ ! -e "$WORK/redis.perf.data" ] && [ "$RUN_SECONDS" -ge 8 ]; then
    (sleep 2; exec perf record -q -e cpu-clock -p "$REDIS_PID" -o "$WORK/redis.perf.data" -- sleep 5) \
      >"$WORK/perf.log" 2>&1 &
    PERF_PID=$!
    echo "profiled=1" >>"$dir/meta"
  fi
}

run_sluice() {  # run_sluice ROUND BACKEND CASE
  local round=$1 backend=$2 case=$3 dir="$WORK/$1-$2-$3"
  mkdir -p "$dir"
  local algorithm limit period
  case "$case" in
    pass) algorithm=token_bucket limit=$PASS_LIMIT period=$PASS_PERIOD ;;
    flood-tb) algorithm=token_bucket limit=100 period=1s ;;
    flood-fw) algorithm=fixed_window limit=10 period=1m ;;
    *) echo "error: unknown case $case" >&2; exit 1 ;;
  esac
  PORT=$(free_port); ADMIN_PORT=$(free_port)
  fill "bench/redis/sluice-$backend.yaml" "$dir/sluice.yaml" PORT="$PORT" ADMIN_PORT="$ADMIN_PORT" \
    REDIS_PORT="$REDIS_PORT" ALGORITHM=$algorithm LIMIT=$limit PERIOD=$period
  printf 'round=%s\nkind=sluice\nbackend=%s\ncase=%s\nlimit=%s\nperiod=%s\nalgorithm=%s\n' \
    "$round" "$backend" "$case" "$limit" "$period" "$algorithm" >"$dir/meta"
  reset_redis
  taskset -c "$SERVER_CPU" "$SLUICE" serve --config "$dir/sluice.yaml" >"$dir/server.log" 2>&1 &
  SLUICE_PID=$!
  STARTED+=("$SLUICE_PID")
  if ! wait_port "$PORT" "$SLUICE_PID"; then
    echo "error: sluice ($backend $case) did not start listening on 127.0.0.1:$PORT; its output:" >&2
    tail -20 "$dir/server.log" >&2
    exit 1
  fi
  # Sanity check: three requests on keys of their own (not the flood key) pass. With
  # Redis this also waits for the connection and SCRIPT LOAD: a request decided by
  # on_failure (deny) before the node is up would get 429.
  local codes="" _i
  for _i in $(seq 50); do
    codes=$(for k in check-1 check-2 check-3; do
      curl -s -o /dev/null -w '%{http_code} ' --max-time 2 -H "X-API-Key: $k-$_i" "http://127.0.0.1:$PORT/" || true
    done | xargs)
    [ "$codes" = "200 200 200" ] && break
    sleep 0.1
  done
  echo "curl=${codes// /,}" >>"$dir/meta"
  local script=(-s bench/redis/random_keys.lua "http://127.0.0.1:$PORT/" -- "$KEYSPACE" "$DEPTH")
  [ "$case" = pass ] || script=(-H "X-API-Key: flood" -s bench/http/report.lua "http://127.0.0.1:$PORT/")
  snapshot "$dir" before
  [ "$backend:$case" = redis:pass ] && maybe_profile "$dir"
  # In the background so that a signal reaches the trap at once (it stops wrk too).
  timeout $((RUN_SECONDS + 30)) taskset -c "$CLIENT_CPU" \
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${script[@]}" >"$dir/client.out" 2>&1 &
  CLIENT_PID=$!
  start_sampler "$dir"
  wait "$CLIENT_PID" || true
  CLIENT_PID=
  snapshot "$dir" after
  if [ -n "$PERF_PID" ]; then wait "$PERF_PID" || true; PERF_PID=; fi
  kill -0 "$SLUICE_PID" 2>/dev/null && echo "alive=yes" >>"$dir/meta" || echo "alive=no" >>"$dir/meta"
  stop_pid "$SLUICE_PID"
  SLUICE_PID=; ADMIN_PORT=
  python3 "$WORK/summarise.py" line "$dir" >&2 || true
}

run_peer() {  # run_peer ROUND: redis-benchmark for a second of warm-up, then DURATION
  local round=$1 dir="$WORK/$1-peer"
  mkdir -p "$dir"
  printf 'round=%s\nkind=peer\nbackend=peer\ncase=peer\nlimit=%s\nperiod=%s\nalgorithm=token_bucket\n' \
    "$round" "$PASS_LIMIT" "$PASS_PERIOD" >"$dir/meta"
  reset_redis
  timeout $((RUN_SECONDS + 30)) taskset -c "$CLIENT_CPU" \
    redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$PEER_CLIENTS" -P "$PEER_PIPELINE" \
    -n 2000000000 -r "$KEYSPACE" -q \
    EVALSHA "$PEER_SHA" 1 "tb:__rand_int__" "$PASS_LIMIT" "$PASS_RATE" 1 >"$dir/client.out" 2>&1 &
  CLIENT_PID=$!
  sleep 1
  snapshot "$dir" before
  start_sampler "$dir"
  sleep "$RUN_SECONDS"
  snapshot "$dir" after
  kill -0 "$CLIENT_PID" 2>/dev/null && echo "alive=yes" >>"$dir/meta" || echo "alive=no" >>"$dir/meta"
  kill -TERM "$CLIENT_PID" 2>/dev/null || true
  wait "$CLIENT_PID" 2>/dev/null || true
  CLIENT_PID=
  python3 "$WORK/summarise.py" line "$dir" >&2 || true
}

# ---- the figures: one line per measurement as it ends, the tables at the end -------
cat >"$WORK/summarise.py" <<'PY'
import glob, json, os, re, statistics, sys

def kv(path):
    out = {}
    if os.path.exists(path):
        for line in open(path):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                out[k] = v
    return out

def info(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if ":" not in line or line.startswith("#"):
            continue
        k, v = line.split(":", 1)
        if k.startswith("cmdstat_"):
            f = dict(x.split("=", 1) for x in v.split(","))
            out[k + ".calls"] = int(f["calls"])
            out[k + ".usec"] = int(f["usec"])
        else:
            out[k] = v
    return out

def metrics(path):
    out = {}
    if os.path.exists(path):
        for line in open(path):
            m = re.match(r'sluice_store_operations_total\{backend="[^"]*",result="([^"]*)"\} (\d+)', line)
            if m:
                out["store." + m.group(1)] = int(m.group(2))
            m = re.match(r'sluice_store_node_up\{node="[^"]*"\} (\d+)', line)
            if m:
                out["node_up"] = min(out.get("node_up", 1), int(m.group(1)))
            m = re.match(r'sluice_requests_total\{rule="[^"]*",decision="([^"]*)"\} (\d+)', line)
            if m:
                out["requests." + m.group(1)] = out.get("requests." + m.group(1), 0) + int(m.group(2))
    return out

CLK_TCK = os.sysconf("SC_CLK_TCK")

def measure(d):
    meta = kv(os.path.join(d, "meta"))
    r = dict(meta)
    rb, ra = info(os.path.join(d, "redis.before")), info(os.path.join(d, "redis.after"))
    cpu = lambda i: float(i["used_cpu_user"]) + float(i["used_cpu_sys"])
    r["redis_cpu_us"] = (cpu(ra) - cpu(rb)) * 1e6
    r["redis_user_us"] = (float(ra["used_cpu_user"]) - float(rb["used_cpu_user"])) * 1e6
    d_ = lambda k: ra.get(k, 0) - rb.get(k, 0)
    r["evalsha"] = d_("cmdstat_evalsha.calls")
    r["evalsha_usec"] = d_("cmdstat_evalsha.usec")
    r["inner"] = {c: d_(f"cmdstat_{c}.calls") for c in ("mget", "set", "del", "time", "hmget", "hset", "pexpire")}
    r["inner_usec"] = {c: d_(f"cmdstat_{c}.usec") for c in ("mget", "set", "del", "time", "hmget", "hset", "pexpire")}
    r["expired"] = int(ra.get("expired_keys", 0)) - int(rb.get("expired_keys", 0))
    r["wall_s"] = float(open(os.path.join(d, "time.after")).read()) - float(open(os.path.join(d, "time.before")).read())
    check = []
    out = open(os.path.join(d, "client.out"), errors="replace").read() if os.path.exists(os.path.join(d, "client.out")) else ""
    if meta["kind"] == "peer":
        r["decisions"] = r["evalsha"]
        r["rps"] = r["evalsha"] / r["wall_s"]
        if meta.get("alive") != "yes":
            check.append("redis-benchmark ended early")
        if "ERR" in out or "NOSCRIPT" in out:
            check.append("redis-benchmark error")
    else:
        m = re.search(r"^RESULT (.*)$", out, re.M)
        if not m:
            r["check"] = "wrk gave no result"
            r["rps"] = 0
            return r
        w = {k: int(v) for k, v in (x.split("=") for x in m.group(1).split())}
        r.update(requests=w["requests"], p50=w["p50_us"], p99=w["p99_us"], non2xx=w["status"])
        r["rps"] = w["requests"] * 1e6 / w["duration_us"]
        run_s = w["duration_us"] / 1e6
        (ub, sb), (ua, sa) = [map(int, open(os.path.join(d, f"sluice_cpu.{x}")).read().split()) for x in ("before", "after")]
        r["sluice_cpu_us"] = ((ua - ub) + (sa - sb)) * 1e6 / CLK_TCK
        r["sluice_user_us"] = (ua - ub) * 1e6 / CLK_TCK
        mb, ma = metrics(os.path.join(d, "metrics.before")), metrics(os.path.join(d, "metrics.after"))
        md = lambda k: ma.get(k, 0) - mb.get(k, 0)
        r["decisions"] = md("store.ok")
        r["deny_cached"] = md("store.deny_cached")
        r["store_failed"] = md("store.error") + md("store.timeout") + md("store.unavailable")
        if meta.get("curl") != "200,200,200":
            check.append("curl " + meta.get("curl", "?"))
        sockerr = w["connect"] + w["read"] + w["write"] + w["timeout"]
        if sockerr:
            check.append(f"socket errors {sockerr}")
        if meta.get("alive") != "yes":
            check.append("sluice died")
        if meta["backend"] == "redis":
            if r["store_failed"]:
                check.append(f"store errors {r['store_failed']}")
            if ma.get("node_up") != 1:
                check.append("node down")
        passed = w["requests"] - w["status"]
        if meta["case"] == "pass":
            if w["status"]:
                check.append(f"non-2xx {w['status']}")
        else:
            # Passes allowed over the run (the flood key is fresh): the burst, plus the
            # refill (token bucket) or one more window per window boundary crossed.
            limit, period = int(meta["limit"]), meta["period"]
            secs = {"s": 1, "m": 60, "h": 3600}[period[-1]] * int(period[:-1])
            if meta["algorithm"] == "token_bucket":
                most = limit + limit * (run_s + 1) / secs
            else:
                most = limit * (int(run_s // secs) + 2)
            r["passed"] = passed
            if passed > most:
                check.append(f"{passed} passed, at most {most:.0f} allowed")
            if passed < 1:
                check.append("none passed")
    r["check"] = "; ".join(check) or "ok"
    return r

def line(d):
    r = measure(d)
    if r["kind"] == "peer":
        s = (f"  peer             {r['rps']:9.0f} calls/s  redis {r['redis_cpu_us'] / max(r['evalsha'], 1):5.2f} us/call"
             f"  script {r['evalsha_usec'] / max(r['evalsha'], 1):5.2f} us/call")
    else:
        n = max(r.get("requests", 0), 1)
        s = (f"  {r['backend']:6} {r['case']:9} {r['rps']:9.0f} req/s  p99 {r.get('p99', 0):6d} us"
             f"  sluice {r.get('sluice_cpu_us', 0) / n:5.2f} us/req")
        if r["backend"] == "redis":
            s += (f"  redis {r['redis_cpu_us'] / n:5.2f} us/req {r['redis_cpu_us'] / max(r['decisions'], 1):5.2f} us/decision"
                  f"  evalsha/req {r['evalsha'] / n:.4f}  decisions/evalsha {r['decisions'] / max(r['evalsha'], 1):.1f}")
    s += "" if r["check"] == "ok" else "  CHECK FAILED: " + r["check"]
    print(s + (f"  (machine busy: {r['busy']})" if r.get("busy") else ""))

def tables(work, rounds):
    rs = [measure(d) for d in sorted(glob.glob(os.path.join(work, "*-*"))) if os.path.exists(os.path.join(d, "meta"))]
    rs = [r for r in rs if "kind" in r]
    med = statistics.median
    total = {}
    def group(pred):
        # The quiet runs when there are any: another process's load spoils a run's
        # rates and latencies (CPU per request much less).
        g = [r for r in rs if pred(r)]
        quiet = [r for r in g if not r.get("busy")]
        chosen = quiet or g
        for r in chosen:
            total[id(r)] = len(g)
        return chosen
    def flag(g):
        bad = sorted({r["check"] for r in g if r["check"] != "ok"})
        prof = " (one run profiled)" if any(r.get("profiled") for r in g) else ""
        busy = sorted({r["busy"] for r in g if r.get("busy")})
        n = total.get(id(g[0]), len(g)) if g else 0
        used = f" ({len(g)} quiet run{'s' if len(g) > 1 else ''} of {n})" if g and not busy and len(g) < n else ""
        return ((f" (check failed: {'; '.join(bad)})" if bad else "") + prof + used +
                (f" (machine busy: {'; '.join(busy)})" if busy else ""))
    def rate(x):
        return f"{x:,.0f}" if x >= 10 else f"{x:.1f}"
    def lat(us):
        if us <= 0:
            return "n/a"  # wrk measures no latency with a pipeline (DEPTH > 1)
        return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"
    failed = any(r["check"] != "ok" for r in rs)

    print(f"### Redis CPU per decision: sluice (many distinct keys) against one-key EVALSHA (medians of {rounds} round(s))")
    print()
    print("| client | decisions/s | EVALSHA calls/s | decisions per EVALSHA | Redis CPU µs/decision | of which in scripts (commandstats) | sluice / peer |")
    print("|---|---|---|---|---|---|---|")
    peer = group(lambda r: r["kind"] == "peer")
    sl = group(lambda r: r["kind"] == "sluice" and r["backend"] == "redis" and r["case"] == "pass")
    peer_cpu = med([r["redis_cpu_us"] / max(r["evalsha"], 1) for r in peer]) if peer else None
    for name, g in (("sluice, redis store, wrk random keys", sl), ("peer: redis-benchmark, one-key token bucket", peer)):
        if not g:
            continue
        cpu = med([r["redis_cpu_us"] / max(r["decisions"], 1) for r in g])
        ratio = f"{cpu / peer_cpu:.2f}x" if peer_cpu and g is sl else ""
        print(f"| {name} | {med([r['decisions'] / r['wall_s'] for r in g]):,.0f} | "
              f"{med([r['evalsha'] / r['wall_s'] for r in g]):,.0f} | "
              f"{med([r['decisions'] / max(r['evalsha'], 1) for r in g]):.1f} | {cpu:.2f} | "
              f"{med([r['evalsha_usec'] / max(r['decisions'], 1) for r in g]):.2f} | {ratio}{flag(g)} |")
    print()
    print(f"### HTTP: memory and Redis store (medians of {rounds} round(s))")
    print()
    print("| store | case | requests/s | p50 | p99 | sluice CPU µs/request | of which user | Redis CPU µs/request | EVALSHA per request (calls/s) | decisions per EVALSHA | deny-cached | non-2xx |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case in ("pass", "flood-tb", "flood-fw"):
        for backend in ("memory", "redis"):
            g = group(lambda r: r["kind"] == "sluice" and r["backend"] == backend and r["case"] == case)
            if not g:
                continue
            n = lambda r: max(r.get("requests", 0), 1)
            redis_cols = ["", "", "", ""]
            if backend == "redis":
                redis_cols = [f"{med([r['redis_cpu_us'] / n(r) for r in g]):.2f}",
                              f"{med([r['evalsha'] / n(r) for r in g]):.4f} ({rate(med([r['evalsha'] / r['wall_s'] for r in g]))}/s)",
                              f"{med([r['decisions'] / max(r['evalsha'], 1) for r in g]):.1f}",
                              f"{100 * med([r['deny_cached'] / n(r) for r in g]):.1f}%"]
            pl = [r for r in g if r["case"] == "pass"]
            pass_rule = f"{pl[0]['limit']}/{pl[0]['period']}" if pl else ""
            label = {"pass": f"pass (token_bucket {pass_rule}, random keys)",
                     "flood-tb": "flood, one key (token_bucket 100/1s)",
                     "flood-fw": "flood, one key (fixed_window 10/1m)"}[case]
            print(f"| {backend} | {label} | {med([r['rps'] for r in g]):,.0f} | {lat(med([r['p50'] for r in g]))} | "
                  f"{lat(med([r['p99'] for r in g]))} | {med([r['sluice_cpu_us'] / n(r) for r in g]):.2f} | "
                  f"{med([r['sluice_user_us'] / n(r) for r in g]):.2f} | {' | '.join(redis_cols)} | "
                  f"{100 * med([r['non2xx'] / n(r) for r in g]):.2f}%{flag(g)} |")
    print()
    # Where Redis's CPU goes, per decision (commandstats: a redis.call inside a script
    # counts under its own command too, and inside EVALSHA's usec).
    def breakdown(name, g, commands):
        if not g:
            return
        per = lambda x, r: x / max(r["decisions"], 1)
        parts = [(c.upper(), med([per(r["inner_usec"][c], r) for r in g]), med([per(r["inner"][c], r) for r in g]))
                 for c in commands]
        script = med([per(r["evalsha_usec"], r) for r in g])
        total = med([per(r["redis_cpu_us"], r) for r in g])
        lua = med([per(r["evalsha_usec"] - sum(r["inner_usec"][c] for c in commands), r) for r in g])
        print(f"{name}, Redis CPU per decision {total:.2f} µs: in EVALSHA {script:.2f} (" +
              ", ".join(f"{c} {u:.2f} µs for {n:.2f} calls" for c, u, n in parts) +
              f", the rest, Lua and the KEYS/ARGV tables, {lua:.2f}); outside scripts (network, "
              f"parsing, replies, expiry) {total - script:.2f}; keys expired per decision "
              f"{med([per(r['expired'], r) for r in g]):.2f}.")
    breakdown("sluice (pass)", sl, ("time", "mget", "set", "del"))
    breakdown("peer", peer, ("time", "hmget", "hset", "pexpire"))
    return failed

if __name__ == "__main__":
    if sys.argv[1] == "line":
        line(sys.argv[2])
    else:
        sys.exit(1 if tables(sys.argv[2], sys.argv[3]) else 0)
PY

# ---- header -----------------------------------------------------------------------
echo "## machine and versions"
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
commit=$(commit_description)
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- sluice: $("$SLUICE" --version 2>&1 | head -1) ($commit, $SLUICE_BUILT)"
echo "- redis: $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') (127.0.0.1:$REDIS_PORT, --save \"\" --appendonly no, taskset -c $REDIS_CPU)"
echo "- wrk: $(wrk -v 2>&1 | head -1 | sed 's/ *$//')"
echo "- command: $COMMAND_LINE"
echo "- sluice runs: taskset -c $SERVER_CPU sluice serve (workers: 1); taskset -c $CLIENT_CPU wrk -t1 -c$CONNECTIONS -d$DURATION --latency -s bench/redis/random_keys.lua URL -- $KEYSPACE $DEPTH (pass) or -H 'X-API-Key: flood' -s bench/http/report.lua URL (flood)"
echo "- peer runs: taskset -c $CLIENT_CPU redis-benchmark -c $PEER_CLIENTS -P $PEER_PIPELINE -r $KEYSPACE EVALSHA <bench/redis/token_bucket.lua> 1 tb:__rand_int__ $PASS_LIMIT $PASS_RATE 1 (1 s warm-up, then $RUN_SECONDS s measured)"

# ---- runs -------------------------------------------------------------------------
SLUICE_PID=; ADMIN_PORT=
for round in $(seq "$ROUNDS"); do
  order=$(printf '%s\n' $CASES | shuf | xargs)
  echo "round $round/$ROUNDS: $order" >&2
  for c in $order; do
    case "$c" in
      peer) run_peer "$round" ;;
      redis:* | memory:*) run_sluice "$round" "${c%%:*}" "${c#*:}" ;;
      *) echo "error: unknown case $c" >&2; exit 1 ;;
    esac
  done
done

# ---- tables -----------------------------------------------------------------------
echo
echo "## medians of $ROUNDS round(s) × $DURATION, load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo
FAILED=0
python3 "$WORK/summarise.py" tables "$WORK" "$ROUNDS" || FAILED=1
echo
echo "Redis CPU: used_cpu_user+used_cpu_sys (INFO cpu) over the run, network and expiry included; \"in scripts\": EVALSHA's usec in INFO commandstats."
echo "sluice CPU: utime+stime of the sluice process over the wrk run / requests wrk completed."
if [ -e "$WORK/redis.perf.data" ]; then
  echo
  echo "## redis-server profile (perf record -e cpu-clock, 5 s of the first redis pass run)"
  perf report -i "$WORK/redis.perf.data" --no-children --sort dso --stdio 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -8
  perf report -i "$WORK/redis.perf.data" --no-children --sort sym --stdio 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -30
fi
exit "$FAILED"
