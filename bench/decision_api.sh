#!/usr/bin/env bash
# sluice's decision APIs (POST /v1/check, GET /v1/auth) on its `listen` port, and, in
# the same run, the plain-GET decision mode they stand beside and nginx limit_req as
# the peer. Every case uses one rule keyed on the client IP, the memory store, and a
# limit far above the load (every decision is "allowed"); each request speaks for
# another client, taken in turn from KEYS (100000) clients, so that each decision
# reads and updates a different bucket (bench/http/check-load.lua):
#   check-single  POST /v1/check {"rule":"per-client","key":"10.a.b.c"}
#   check-batch   POST /v1/check, a JSON array of BATCH (100) such queries for BATCH
#                 distinct clients: one request, BATCH decisions
#   check-desc    POST /v1/check {"descriptors":{"ip":"10.a.b.c","path":"/api/items/42",
#                 "header:x-api-key":"k-N"}}
#   auth          GET /v1/auth with X-Forwarded-For: 10.a.b.c, X-Original-Method: GET,
#                 X-Original-URI: /api/items/42 (wrk's 127.0.0.1 is a trusted proxy)
#   get-sluice    GET /api/items/42 with X-Forwarded-For: 10.a.b.c, decided by the
#                 rules (decision mode, no routes: 200)
#   get-nginx     the same request to nginx, limit_req on $binary_remote_addr with
#                 realip from X-Forwarded-For (bench/http/decision-nginx.conf)
#   get1-sluice   GET / without X-Forwarded-For: every request for one client, as
#   get1-nginx    bench/http_peers.sh's pass case (same configs: bench/http/nginx.conf)
# sluice: bench/http/decision-sluice.yaml, one worker, access log off. Each server is
# pinned to one core (taskset -c 0), wrk to the other (taskset -c 1):
#   wrk -t1 -c50 -d$DURATION --latency
# and the figures are requests/s, decisions/s, p50/p99 latency and the server's CPU
# time per request and per decision (utime+stime from /proc/PID/stat over the wrk run,
# nginx: master and worker; divided by the requests wrk completed, and by BATCH for
# check-batch). "core busy" is that CPU time over the run's wall time: below 100%, wrk
# (whose Lua builds every request) is what limits the rate.
# Each round starts every case's server afresh, in a shuffled case order; the tables
# give the medians over the rounds whose checks passed and the spread (min-max).
#   bench/decision_api.sh                        3 rounds of 8 s (about 4 minutes)
#   DURATION=3s ROUNDS=1 bench/decision_api.sh   smoke run
#   CASES="check-single check-batch get-nginx" bench/decision_api.sh
#   PROFILE=1 bench/decision_api.sh              after the rounds, one more check-batch
#                                                run under perf record -e cpu-clock -g
#                                                (not in the table), and its top symbols
# Other knobs: KEYS (100000, at most 16777216), BATCH (100, at most 1000),
# CONNECTIONS (50), SERVER_CPU (0), CLIENT_CPU (1), BUILD_DIR (build), KEEP=1 keeps the
# work directory (configs, logs, raw wrk output, perf data) and says where, COMMIT
# (text) replaces the git look-up in the header's commit line. The sluice binary is
# copied at the start, so a rebuild during the run does not change what is
# measured. Everything listens on 127.0.0.1.
# Checks: before and after each run, three requests from Python (200, allowed by the
# rule; a batch answered with a JSON array of BATCH answers, all allowed; /v1/auth's
# X-Sluice-Decision); after it, wrk's non-2xx count and socket errors, and for sluice
# its own counters: every decision of the run allowed, as many as wrk's requests ×
# queries (give or take those in flight when wrk stopped), nothing but 200 answered.
# Exit status 1 when a check failed: the tables are still printed, with the failed
# measurement marked.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
KEYS=${KEYS:-100000}
BATCH=${BATCH:-100}
CASES=${CASES:-check-single check-batch check-desc auth get-sluice get-nginx get1-sluice get1-nginx}
PROFILE=${PROFILE:-0}
KEEP=${KEEP:-0}
COMMAND_LINE="DURATION=$DURATION ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS KEYS=$KEYS BATCH=$BATCH CASES=\"$CASES\" PROFILE=$PROFILE $0${*:+ $*}"
export PATH="$PATH:/usr/sbin:/sbin"

[ "$KEYS" -ge "$BATCH" ] && [ "$KEYS" -le 16777216 ] ||
  { echo "error: KEYS must be between BATCH and 16777216" >&2; exit 2; }
[ "$BATCH" -ge 1 ] && [ "$BATCH" -le 1000 ] ||
  { echo "error: BATCH must be between 1 and 1000 (/v1/check's limit)" >&2; exit 2; }
for c in $CASES; do
  case "$c" in
    check-single|check-batch|check-desc|auth|get-sluice|get-nginx|get1-sluice|get1-nginx) ;;
    *) echo "error: unknown case $c" >&2; exit 2 ;;
  esac
done

# ---- what is needed ---------------------------------------------------------------
sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
# apt_install, need, install_needed, install_nginx, sluice_binary, warn_shared_core,
# duration_s, free_port, wait_port, fill, stop_pid, commit_description
source "$ROOT/bench/lib.sh"
need python3 python3
need curl curl
need util-linux taskset
need procps pgrep
need wrk wrk
[ "$PROFILE" = 1 ] && need linux-perf perf
install_needed
case " $CASES " in *" get-nginx "*|*" get1-nginx "*) install_nginx ;; esac
SLUICE_BUILT=$(sluice_binary "$BUILD_DIR")
warn_shared_core "$SERVER_CPU" "$CLIENT_CPU"

CLK_TCK=$(getconf CLK_TCK)
RUN_SECONDS=$(duration_s "$DURATION")
# Every bucket of the run stays in the store, and in nginx's zone (about 128 bytes a
# client with its tree node; 16 MB at least).
MAX_KEYS=$((KEYS * 2 > 1000000 ? KEYS * 2 : 1000000))
ZONE="$(( (KEYS * 256 / 1048576) > 16 ? KEYS * 256 / 1048576 : 16 ))m"

# ---- work directory, and stopping everything we start -----------------------------
bench_setup decision-api

# The binary measured: a copy, so that a rebuild by someone else during the run (the
# build directory is shared) cannot swap it between rounds.
mkdir -p "$WORK/bin"
cp "$SLUICE_BUILT" "$WORK/bin/sluice"
SLUICE="$WORK/bin/sluice"

# start CASE: starts the case's server, fresh. Sets PORT, ADMIN_PORT (sluice), SERVER
# (sluice or nginx), MAIN_PID (what is stopped) and MEASURED (the PIDs whose CPU time
# is counted).
start() {
  local case=$1 dir="$WORK/$1"
  rm -rf "$dir"; mkdir -p "$dir"
  PORT=$(free_port)
  ADMIN_PORT=
  case "$case" in
    *-nginx)
      SERVER=nginx
      if [ "$case" = get-nginx ]; then
        fill bench/http/decision-nginx.conf "$dir/nginx.conf" PORT="$PORT" DIR="$dir" ZONE="$ZONE"
      else
        fill bench/http/nginx.conf "$dir/nginx.conf" PORT="$PORT" DIR="$dir" \
          RATE=100000000r/s "BURST=burst=1000000 nodelay"
      fi
      taskset -c "$SERVER_CPU" nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" \
        >"$dir/server.log" 2>&1 &
      ;;
    *)
      SERVER=sluice
      ADMIN_PORT=$(free_port)
      fill bench/http/decision-sluice.yaml "$dir/sluice.yaml" PORT="$PORT" \
        ADMIN_PORT="$ADMIN_PORT" MAX_KEYS="$MAX_KEYS"
      taskset -c "$SERVER_CPU" "$SLUICE" serve --config "$dir/sluice.yaml" \
        >"$dir/server.log" 2>&1 &
      ;;
  esac
  MAIN_PID=$!
  STARTED+=("$MAIN_PID")
  if ! wait_port "$PORT" "$MAIN_PID"; then
    echo "error: $case: $SERVER did not start listening on 127.0.0.1:$PORT; its output:" >&2
    cat "$dir/server.log" "$dir/error.log" 2>/dev/null | tail -20 >&2
    exit 1
  fi
  MEASURED=("$MAIN_PID")
  [ "$SERVER" = nginx ] && MEASURED+=("$(nginx_workers "$MAIN_PID")")
  if [ -n "$ADMIN_PORT" ] && ! wait_port "$ADMIN_PORT" "$MAIN_PID"; then
    echo "error: $case: sluice's admin port 127.0.0.1:$ADMIN_PORT does not answer" >&2
    exit 1
  fi
}

# The wrk script's mode, and how many decisions one request asks for.
wrk_mode() {
  case "$1" in
    check-single) echo single ;; check-batch) echo batch ;; check-desc) echo descriptors ;;
    auth) echo auth ;; get-sluice|get-nginx) echo get ;; *) echo "" ;;
  esac
}
per_request() { [ "$1" = check-batch ] && echo "$BATCH" || echo 1; }

# sanity CASE: asks what the load will ask, three times (clients 10.254.0.x, outside
# the load's range unless KEYS is huge); prints "ok" or what went wrong. Every answer
# must be 200 and allowed by the one rule; for check-batch, a JSON array of BATCH
# answers (BATCH distinct clients 10.255.x.y), all allowed; for auth, also
# X-Sluice-Decision: allowed.
sanity() {
  python3 - "$1" "$PORT" "$BATCH" <<'PY' 2>&1 | tail -1
import http.client, json, sys
case, port, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def ask(method, path, body=None, headers={}):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    answer = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    c.close()
    return answer
def allowed(a):
    return a.get("allowed") is True and [x if isinstance(x, str) else x["rule"] for x in a["rules"]] == ["per-client"]
json_type = {"Content-Type": "application/json"}
for i in range(1, 4):
    ip = f"10.254.0.{i}"
    if case in ("check-single", "check-desc"):
        q = ({"rule": "per-client", "key": ip} if case == "check-single" else
             {"descriptors": {"ip": ip, "path": "/api/items/42", "header:x-api-key": f"k-{i}"}})
        status, _, body = ask("POST", "/v1/check", json.dumps(q), json_type)
        if status != 200 or not allowed(json.loads(body)):
            sys.exit(f"bad: {status} {body[:300]!r}")
    elif case == "check-batch":
        q = [{"rule": "per-client", "key": f"10.255.{j // 256}.{j % 256}"} for j in range(batch)]
        status, _, body = ask("POST", "/v1/check", json.dumps(q), json_type)
        a = json.loads(body)
        n = len(a) if isinstance(a, list) else -1
        ok = sum(1 for x in a if allowed(x)) if n >= 0 else 0
        if status != 200 or n != batch or ok != batch:
            sys.exit(f"bad: {status}, {n} answers, {ok} allowed by per-client; expected {batch}")
    elif case == "auth":
        status, h, body = ask("GET", "/v1/auth", headers={
            "X-Forwarded-For": ip, "X-Original-Method": "GET", "X-Original-URI": "/api/items/42"})
        if status != 200 or h.get("x-sluice-decision") != "allowed" or not allowed(json.loads(body)):
            sys.exit(f"bad: {status} X-Sluice-Decision {h.get('x-sluice-decision')} {body[:300]!r}")
    elif case.startswith("get1-"):
        status, _, body = ask("GET", "/")
        if status != 200: sys.exit(f"bad: {status}")
    else:
        status, _, body = ask("GET", "/api/items/42", headers={"X-Forwarded-For": ip})
        if status != 200: sys.exit(f"bad: {status}")
print("ok")
PY
}

# counters: sluice's decisions and answers so far, from its admin port: "ALLOWED
# OTHER_DECISIONS OK_ANSWERS OTHER_ANSWERS".
counters() {
  curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '
    /^sluice_requests_total\{/ { if ($1 ~ /decision="allowed"/) a += $2; else o += $2 }
    /^sluice_http_responses_total\{/ { if ($1 ~ /code="200"/) ok += $2; else bad += $2 }
    END { printf "%d %d %d %d\n", a, o, ok, bad }'
}

# wrk_run CASE OUT: the load, in the background so that a signal reaches the trap at
# once (it stops wrk too).
wrk_run() {
  local case=$1 out=$2 mode
  mode=$(wrk_mode "$case")
  if [ -n "$mode" ]; then
    timeout $((RUN_SECONDS + 30)) taskset -c "$CLIENT_CPU" \
      wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/http/check-load.lua \
      "http://127.0.0.1:$PORT/" -- "$mode" "$KEYS" "$BATCH" >"$out" 2>&1 &
  else
    timeout $((RUN_SECONDS + 30)) taskset -c "$CLIENT_CPU" \
      wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/http/report.lua \
      "http://127.0.0.1:$PORT/" >"$out" 2>&1 &
  fi
  WRK_PID=$!
  wait "$WRK_PID" || true
  WRK_PID=
}

# ---- header -----------------------------------------------------------------------
echo "## machine and versions"
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
commit=${COMMIT:-$(commit_description)}
echo "- sluice: $("$SLUICE" --version 2>&1 | head -1) ($commit, copy of $SLUICE_BUILT built $(date -r "$SLUICE_BUILT" '+%F %T'))"
command -v nginx >/dev/null && echo "- nginx: $(nginx -v 2>&1 | head -1)"
echo "- wrk: $(wrk -v 2>&1 | head -1 | sed 's/ *$//')"
echo "- command: $COMMAND_LINE"
echo "- each run: taskset -c $SERVER_CPU SERVER; taskset -c $CLIENT_CPU wrk -t1 -c$CONNECTIONS -d$DURATION --latency -s bench/http/check-load.lua http://127.0.0.1:PORT/ -- MODE $KEYS $BATCH (get1-*: -s bench/http/report.lua, GET /)"
echo "- clients: $KEYS (10.0.0.0 on), in turn; batch: $BATCH queries for $BATCH distinct clients"

# ---- runs -------------------------------------------------------------------------
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
FAILED=0
for round in $(seq "$ROUNDS"); do
  order=$(printf '%s\n' $CASES | shuf | xargs)
  echo "round $round/$ROUNDS: $order" >&2
  for case in $order; do
    start "$case"
    dir="$WORK/$case"
    per=$(per_request "$case")
    check=ok
    got=$(sanity "$case" || true)
    if [ "$got" != ok ]; then
      echo "CHECK FAILED: $case: curl: $got" >&2
      check=curl
    fi
    [ "$SERVER" = sluice ] && counters_before=$(counters)
    before=$(cpu_ticks "${MEASURED[@]}")
    user_before=$(user_ticks "${MEASURED[@]}")
    wrk_run "$case" "$dir/wrk.out"
    after=$(cpu_ticks "${MEASURED[@]}")
    user_after=$(user_ticks "${MEASURED[@]}")
    alive=yes; kill -0 "$MAIN_PID" 2>/dev/null || alive=no
    [ "$SERVER" = sluice ] && [ "$alive" = yes ] && counters_after=$(counters)
    # One more sanity check after the load (a batch now finds every bucket in use).
    if [ "$alive" = yes ]; then
      got=$(sanity "$case" || true)
      if [ "$got" != ok ]; then
        echo "CHECK FAILED: $case: curl after the run: $got" >&2
        add_check curl-after
      fi
    fi
    stop_pid "$MAIN_PID"
    wrk_result "$case" "$dir/wrk.out" || { FAILED=1; continue; }
    if [ "${r[status]}" -ne 0 ]; then
      echo "CHECK FAILED: $case: wrk non-2xx ${r[status]} of ${r[requests]}" >&2
      add_check non2xx
    fi
    alive_check "$case" "$alive" "$dir/server.log"
    if [ "$alive" != no ] && [ "$SERVER" = sluice ]; then
      # The run's decisions: all allowed, wrk's requests × queries of them, plus at
      # most one request per connection in flight when wrk stopped; only 200s.
      read -r a0 o0 ok0 bad0 <<<"$counters_before"
      read -r a1 o1 ok1 bad1 <<<"$counters_after"
      allowed=$((a1 - a0)) others=$((o1 - o0)) oks=$((ok1 - ok0)) bads=$((bad1 - bad0))
      low=$((r[requests] * per)) high=$(((r[requests] + CONNECTIONS) * per))
      if [ "$others" -ne 0 ] || [ "$bads" -ne 0 ] || [ "$allowed" -lt "$low" ] ||
         [ "$allowed" -gt "$high" ] || [ "$oks" -lt "${r[requests]}" ] ||
         [ "$oks" -gt $((r[requests] + CONNECTIONS)) ]; then
        echo "CHECK FAILED: $case: sluice counted $allowed allowed and $others other decisions, $oks 200 and $bads other answers; wrk completed ${r[requests]} requests of $per decision(s)" >&2
        add_check counters
      fi
    fi
    [ "$check" = ok ] || FAILED=1
    cpu_us=$(( (after - before) * 1000000 / CLK_TCK ))
    user_us=$(( (user_after - user_before) * 1000000 / CLK_TCK ))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$case" "$per" \
      "${r[requests]}" "${r[duration_us]}" "${r[p50_us]}" "${r[p99_us]}" "$cpu_us" \
      "$user_us" "$check" "$SERVER" >>"$RESULTS"
    awk -v c="$case" -v per="$per" -v n="${r[requests]}" -v d="${r[duration_us]}" \
      -v p50="${r[p50_us]}" -v p99="${r[p99_us]}" -v cpu="$cpu_us" -v ck="$check" \
      'BEGIN { m = n > 0 ? n : 1
               printf "  %-12s %8.0f req/s %9.0f decisions/s  p50 %6d us  p99 %7d us  cpu %6.2f us/req %5.2f us/decision  busy %3.0f%%  %s\n",
               c, n * 1e6 / d, n * per * 1e6 / d, p50, p99, cpu / m, cpu / m / per, 100 * cpu / d, ck }' >&2
    unset r
  done
done

# ---- profile (optional, not in the tables) ----------------------------------------
if [ "$PROFILE" = 1 ]; then
  echo "profile: check-batch under perf record -e cpu-clock -g" >&2
  start check-batch
  dir="$WORK/check-batch"
  perf record -e cpu-clock -g -o "$dir/perf.data" -p "$MAIN_PID" >"$dir/perf.log" 2>&1 &
  PERF_PID=$!
  sleep 0.5  # attached before wrk starts
  wrk_run check-batch "$dir/wrk-profile.out"
  kill -INT "$PERF_PID" 2>/dev/null || true
  wait "$PERF_PID" 2>/dev/null || true
  PERF_PID=
  stop_pid "$MAIN_PID"
  PROFILE_OUT="$WORK/profile.txt"
  {
    echo "### top symbols (self), check-batch, perf record -e cpu-clock -g"
    perf report -i "$dir/perf.data" --no-children --sort sym --stdio --percent-limit 1 \
      -g none 2>/dev/null | grep -E '^ +[0-9]' | head -30
    echo
    echo "### by DSO (self)"
    perf report -i "$dir/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
      grep -E '^ +[0-9]' | head -8
  } >"$PROFILE_OUT"
fi

# ---- tables -----------------------------------------------------------------------
echo
echo "## medians of $ROUNDS round(s), load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RESULTS" "$BATCH" <<'PY'
import statistics, sys
batch = int(sys.argv[2])
rows = {}
for line in open(sys.argv[1]):
    rnd, case, per, req, dur, p50, p99, cpu, user, check, server = line.rstrip("\n").split("\t")
    per, req, dur = int(per), int(req), int(dur)
    n = max(req, 1)
    rows.setdefault(case, []).append(dict(
        rps=req * 1e6 / dur, dps=req * per * 1e6 / dur, p50=int(p50), p99=int(p99),
        cpu=int(cpu) / n, dec=int(cpu) / n / per, user=int(user) / n / per,
        busy=100 * int(cpu) / dur, check=check, server=server))
what = {
    "check-single": "sluice POST /v1/check, rule+key",
    "check-batch": f"sluice POST /v1/check, batch of {batch}",
    "check-desc": "sluice POST /v1/check, descriptors",
    "auth": "sluice GET /v1/auth (forward-auth)",
    "get-sluice": "sluice plain GET, decision mode",
    "get-nginx": "nginx plain GET, limit_req",
    "get1-sluice": "sluice plain GET, one client (http_peers)",
    "get1-nginx": "nginx plain GET, one client (http_peers)",
}
order = list(what)
cases = sorted(rows, key=lambda c: order.index(c) if c in order else 99)
med = statistics.median
def lat(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"
def used(c):  # the runs that passed every check; all of them, marked, if none did
    ok = [r for r in rows[c] if r["check"] == "ok"]
    return ok or rows[c]
m = {c: {k: med([r[k] for r in used(c)]) for k in ("rps", "dps", "p50", "p99", "cpu", "dec", "user", "busy")}
     for c in cases}
print("| case | what | requests/s (min-max) | decisions/s | p50 | p99 | CPU µs/request | CPU µs/decision (min-max) | of which user | core busy | checks |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for c in cases:
    rs = used(c)
    rps = [r["rps"] for r in rs]; dec = [r["dec"] for r in rs]
    bad = [r["check"] for r in rows[c] if r["check"] != "ok"]
    checks = f"ok ({len(rs)} runs)"
    if bad:
        passed = len(rows[c]) - len(bad)
        checks = (f"FAILED in {len(bad)} of {len(rows[c])} runs: {', '.join(bad)}; "
                  + (f"medians of the {passed} that passed" if passed else "medians of all, unreliable"))
    print(f"| {c} | {what.get(c, c)} | {m[c]['rps']:,.0f} ({min(rps):,.0f}-{max(rps):,.0f}) | "
          f"{m[c]['dps']:,.0f} | {lat(m[c]['p50'])} | {lat(m[c]['p99'])} | {m[c]['cpu']:.2f} | "
          f"{m[c]['dec']:.3f} ({min(dec):.3f}-{max(dec):.3f}) | {m[c]['user']:.3f} | "
          f"{m[c]['busy']:.0f}% | {checks} |")
pairs = [
    ("check-batch", "check-single", "batch, per decision / single"),
    ("check-batch", "get-nginx", "batch, per decision / nginx limit_req per request"),
    ("check-single", "get-nginx", "/v1/check single / nginx limit_req"),
    ("check-single", "get-sluice", "/v1/check single / sluice plain GET"),
    ("check-desc", "check-single", "descriptors / rule+key"),
    ("auth", "get-nginx", "/v1/auth / nginx limit_req"),
    ("auth", "get-sluice", "/v1/auth / sluice plain GET"),
    ("get-sluice", "get-nginx", "sluice plain GET / nginx limit_req"),
    ("get1-sluice", "get1-nginx", "one client: sluice / nginx (http_peers pass case)"),
]
shown = [(a, b, t) for a, b, t in pairs if a in m and b in m]
if shown:
    print()
    print("| same-run ratio | CPU per decision | requests/s | decisions/s | p99 |")
    print("|---|---|---|---|---|")
    for a, b, t in shown:
        r = lambda k: f"{m[a][k] / m[b][k]:.2f}x" if m[b][k] > 0 else "n/a"
        print(f"| {t} | {r('dec')} | {r('rps')} | {r('dps')} | {r('p99')} |")
if "check-batch" in m:
    d = m["check-batch"]["dec"]
    print()
    print(f"Batch target (at most 1 µs of server CPU per decision in a batch of {batch}): "
          f"{d:.3f} µs, {'met' if d <= 1.0 else 'MISSED'}.")
PY
echo
echo "CPU µs/request: the server's utime+stime over the wrk run (nginx: master and worker) / requests wrk completed;"
echo "per decision: / $BATCH more for check-batch. Core busy: that CPU time / the run's wall time."
echo "Medians over the runs that passed their checks, (min-max) over the same runs."
if [ -n "${PROFILE_OUT:-}" ]; then echo; cat "$PROFILE_OUT"; fi
exit "$FAILED"
