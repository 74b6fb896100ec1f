#!/usr/bin/env bash
# sluice in gateway mode against nginx and HAProxy as reverse proxies, each limiting
# per client IP with a limit far above the request rate (every request passes) and
# forwarding every request to the same upstream over keep-alive connections:
#   sluice   workers: 1, token_bucket per ip, route "/" to one group of one server
#   nginx    worker_processes 1, limit_req per $binary_remote_addr (burst, nodelay),
#            proxy_pass to an upstream block with keepalive 32 (KEEPALIVE), HTTP/1.1,
#            Connection ""
#   haproxy  nbthread 1, stick-table http_req_rate per src with a deny rule never
#            triggered, a backend with http-reuse always
# Each as configured there: sluice adds X-Forwarded-For/-Proto/-Host and X-Request-Id
# to the upstream request, nginx and HAProxy add nothing (so the upstream's own CPU
# per request, given for reference, differs a little by gateway).
# The upstream is an nginx answering `return 200 "ok"` (one worker, its own process),
# started afresh for each measurement. Each gateway is pinned to one core (taskset -c
# 0); wrk AND the upstream share the other (taskset -c 1), so that the gateway has a
# core to itself and its CPU time is not mixed with the upstream's:
#   wrk -t1 -c50 -d$DURATION --latency
# and the figures are requests/s, p50/p99 latency and the gateway's CPU time per
# request (utime+stime from /proc/PID/stat over the wrk run, divided by the requests
# wrk completed; nginx: master and worker). On a 2-core machine the client core (wrk
# plus the upstream) saturates first, so CPU per request is the figure that compares
# the gateways; requests/s and latency show what each adds on the way.
# Each round starts every gateway (and its upstream) afresh, in a shuffled order; the
# table gives the medians over the rounds (those whose checks passed) and the spread
# (min-max) of requests/s and CPU per request. Configs: bench/http/gateway-*.
#   bench/gateway.sh                        3 rounds of 10 s (about 1.5 minutes)
#   DURATION=3s ROUNDS=1 bench/gateway.sh   smoke run
#   GATEWAYS="sluice haproxy" bench/gateway.sh
#   SYSCALLS=1 bench/gateway.sh             also count the gateway's system calls and
#                                           upstream connects per request (perf stat -e
#                                           raw_syscalls:sys_enter,syscalls:sys_enter_connect
#                                           on its PIDs during the run; it costs the
#                                           gateway a little, so keep it out of runs
#                                           whose CPU figures matter)
#   KEEPALIVE=64 bench/gateway.sh           idle upstream connections kept by sluice
#                                           (max_idle_connections) and nginx
#                                           (keepalive); 32 by default. Below
#                                           CONNECTIONS, both open and close upstream
#                                           connections all along; HAProxy's idle pool
#                                           has no such bound (pool-max-conn -1).
# Other knobs: CONNECTIONS (50), SERVER_CPU (0), CLIENT_CPU (1, wrk and the upstream),
# BUILD_DIR (build), KEEP=1 keeps the work directory (configs, logs, raw wrk output)
# and says where. The sluice binary is copied at the start, so a rebuild during the
# run does not change what is measured.
# Exit status 1 when a sanity check failed (not 200 "ok", wrk's non-2xx count or
# socket errors, a process that died): the table is still printed, with the failed
# measurement marked.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
GATEWAYS=${GATEWAYS:-sluice nginx haproxy}
SYSCALLS=${SYSCALLS:-0}
KEEPALIVE=${KEEPALIVE:-32}
KEEP=${KEEP:-0}
COMMAND_LINE="DURATION=$DURATION ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS GATEWAYS=\"$GATEWAYS\" KEEPALIVE=$KEEPALIVE SYSCALLS=$SYSCALLS $0${*:+ $*}"
export PATH="$PATH:/usr/sbin:/sbin"

# ---- what is needed ---------------------------------------------------------------
sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
# apt_install, need, install_needed, install_nginx, sluice_binary, warn_shared_core,
# duration_s, free_port, wait_port, fill
source "$ROOT/bench/lib.sh"
need python3 python3
need curl curl
need util-linux taskset
need procps pgrep
need wrk wrk
case " $GATEWAYS " in *" haproxy "*) need haproxy haproxy ;; esac
[ "$SYSCALLS" = 1 ] && need linux-perf perf
install_needed
install_nginx
SLUICE_BUILT=$(sluice_binary "$BUILD_DIR")
warn_shared_core "$SERVER_CPU" "$CLIENT_CPU"

CLK_TCK=$(getconf CLK_TCK)
RUN_SECONDS=$(duration_s "$DURATION")

# ---- work directory, and stopping everything we start -----------------------------
bench_setup gateway

# The binary measured: a copy, so that a rebuild by someone else during the run (the
# build directory is shared) cannot swap it between rounds.
mkdir -p "$WORK/bin"
cp "$SLUICE_BUILT" "$WORK/bin/sluice"
SLUICE="$WORK/bin/sluice"

# launch NAME DIR PORT COMMAND...: starts COMMAND in the background, waits until it
# listens on PORT; sets LAUNCHED (its PID).
launch() {
  local name=$1 dir=$2 port=$3; shift 3
  "$@" >"$dir/server.log" 2>&1 &
  LAUNCHED=$!
  STARTED+=("$LAUNCHED")
  if ! wait_port "$port" "$LAUNCHED"; then
    echo "error: $name did not start listening on 127.0.0.1:$port; its output:" >&2
    cat "$dir/server.log" "$dir/error.log" 2>/dev/null | tail -20 >&2
    exit 1
  fi
}

# start GATEWAY: starts a fresh upstream (on the client core) and the gateway (on the
# server core). Sets PORT, GATEWAY_PID and UPSTREAM_PID (what is stopped), MEASURED
# (the gateway's PIDs whose CPU time is counted) and UPSTREAM_MEASURED (the upstream's).
start() {
  local gateway=$1 dir="$WORK/$1"
  rm -rf "$dir"; mkdir -p "$dir/upstream"
  local upstream_port
  upstream_port=$(free_port)
  fill bench/http/gateway-upstream.conf "$dir/upstream/nginx.conf" PORT="$upstream_port" \
    DIR="$dir/upstream"
  launch "the upstream nginx" "$dir/upstream" "$upstream_port" \
    taskset -c "$CLIENT_CPU" nginx -p "$dir/upstream/" -c "$dir/upstream/nginx.conf" \
    -e "$dir/upstream/error.log"
  UPSTREAM_PID=$LAUNCHED
  UPSTREAM_MEASURED=("$UPSTREAM_PID" "$(nginx_workers "$UPSTREAM_PID")")

  PORT=$(free_port)
  local upstream="127.0.0.1:$upstream_port"
  case "$gateway" in
    sluice)
      fill bench/http/gateway-sluice.yaml "$dir/sluice.yaml" PORT="$PORT" \
        ADMIN_PORT="$(free_port)" UPSTREAM="$upstream" KEEPALIVE="$KEEPALIVE"
      launch sluice "$dir" "$PORT" \
        taskset -c "$SERVER_CPU" "$SLUICE" serve --config "$dir/sluice.yaml"
      ;;
    nginx)
      fill bench/http/gateway-nginx.conf "$dir/nginx.conf" PORT="$PORT" DIR="$dir" \
        UPSTREAM="$upstream" KEEPALIVE="$KEEPALIVE"
      launch nginx "$dir" "$PORT" \
        taskset -c "$SERVER_CPU" nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log"
      ;;
    haproxy)
      fill bench/http/gateway-haproxy.cfg "$dir/haproxy.cfg" PORT="$PORT" UPSTREAM="$upstream"
      launch haproxy "$dir" "$PORT" taskset -c "$SERVER_CPU" haproxy -db -f "$dir/haproxy.cfg"
      ;;
    *) echo "error: unknown gateway $gateway (sluice, nginx, haproxy)" >&2; exit 1 ;;
  esac
  GATEWAY_PID=$LAUNCHED
  MEASURED=("$GATEWAY_PID")
  [ "$gateway" = nginx ] && MEASURED+=("$(nginx_workers "$GATEWAY_PID")")
  return 0
}


# ---- header -----------------------------------------------------------------------
echo "## machine and versions"
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
commit=$(commit_description)
echo "- sluice: $("$SLUICE" --version 2>&1 | head -1) ($commit, copy of $SLUICE_BUILT built $(date -r "$SLUICE_BUILT" '+%F %T'))"
echo "- nginx: $(nginx -v 2>&1 | head -1)"
echo "- haproxy: $(haproxy -v 2>&1 | head -1)"
echo "- wrk: $(wrk -v 2>&1 | head -1 | sed 's/ *$//')"
echo "- command: $COMMAND_LINE"
echo "- each run: taskset -c $SERVER_CPU GATEWAY; taskset -c $CLIENT_CPU nginx (upstream, return 200 \"ok\"); taskset -c $CLIENT_CPU wrk -t1 -c$CONNECTIONS -d$DURATION --latency -s bench/http/report.lua http://127.0.0.1:PORT/"

# ---- runs -------------------------------------------------------------------------
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
FAILED=0
for round in $(seq "$ROUNDS"); do
  order=$(printf '%s\n' $GATEWAYS | shuf | xargs)
  echo "round $round/$ROUNDS: $order" >&2
  for gateway in $order; do
    start "$gateway"
    dir="$WORK/$gateway"
    # Sanity check: five requests, each on its own connection: all 200 with the
    # upstream's body.
    got=$(for _ in 1 2 3 4 5; do
      curl -s -w '%{http_code} ' --max-time 2 "http://127.0.0.1:$PORT/" || true
    done | xargs)
    expect="ok200 ok200 ok200 ok200 ok200"
    check=ok
    if [ "$got" != "$expect" ]; then
      echo "CHECK FAILED: $gateway: curl got [$got], expected [$expect]" >&2
      check="curl"
    fi
    if [ "$SYSCALLS" = 1 ]; then
      pids=$(IFS=,; echo "${MEASURED[*]}")
      perf stat -x, -e raw_syscalls:sys_enter,syscalls:sys_enter_connect -p "$pids" \
        -o "$dir/perf-stat.csv" &
      PERF_PID=$!
      sleep 0.5  # attached before wrk starts
    fi
    before=$(cpu_ticks "${MEASURED[@]}")
    user_before=$(user_ticks "${MEASURED[@]}")
    upstream_before=$(cpu_ticks "${UPSTREAM_MEASURED[@]}")
    # In the background so that a signal reaches the trap at once (it stops wrk too).
    timeout $((RUN_SECONDS + 30)) taskset -c "$CLIENT_CPU" \
      wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/http/report.lua \
      "http://127.0.0.1:$PORT/" >"$dir/wrk.out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || true
    WRK_PID=
    after=$(cpu_ticks "${MEASURED[@]}")
    user_after=$(user_ticks "${MEASURED[@]}")
    upstream_after=$(cpu_ticks "${UPSTREAM_MEASURED[@]}")
    syscalls=-1 connects=-1
    if [ -n "$PERF_PID" ]; then
      kill -INT "$PERF_PID" 2>/dev/null || true
      wait "$PERF_PID" 2>/dev/null || true
      PERF_PID=
      syscalls=$(awk -F, '$3 ~ /raw_syscalls:sys_enter/ { print $1 + 0 }' "$dir/perf-stat.csv" 2>/dev/null || true)
      connects=$(awk -F, '$3 ~ /sys_enter_connect/ { print $1 + 0 }' "$dir/perf-stat.csv" 2>/dev/null || true)
      [ -n "$syscalls" ] || syscalls=-1
      [ -n "$connects" ] || connects=-1
    fi
    alive=yes; kill -0 "$GATEWAY_PID" 2>/dev/null || alive=no
    upstream_alive=yes; kill -0 "$UPSTREAM_PID" 2>/dev/null || upstream_alive=no
    stop_pid "$GATEWAY_PID"
    stop_pid "$UPSTREAM_PID"
    wrk_result "$gateway" "$dir/wrk.out" || { FAILED=1; continue; }
    if [ "${r[status]}" -ne 0 ]; then
      echo "CHECK FAILED: $gateway: wrk non-2xx ${r[status]} of ${r[requests]}" >&2
      add_check non2xx
    fi
    alive_check "$gateway" "$alive" "$dir/server.log"
    if [ "$upstream_alive" = no ]; then
      echo "CHECK FAILED: $gateway: the upstream exited during the run" >&2
      add_check upstream-died
    fi
    [ "$check" = ok ] || FAILED=1
    cpu_us=$(( (after - before) * 1000000 / CLK_TCK ))
    user_us=$(( (user_after - user_before) * 1000000 / CLK_TCK ))
    upstream_us=$(( (upstream_after - upstream_before) * 1000000 / CLK_TCK ))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$gateway" \
      "${r[requests]}" "${r[duration_us]}" "${r[p50_us]}" "${r[p99_us]}" "$cpu_us" \
      "${r[status]}" "$sockerr" "$check" "$user_us" "$upstream_us" "$syscalls" "$connects" \
      >>"$RESULTS"
    awk -v s="$gateway" -v n="${r[requests]}" -v d="${r[duration_us]}" \
      -v p50="${r[p50_us]}" -v p99="${r[p99_us]}" -v cpu="$cpu_us" -v up="$upstream_us" \
      -v sc="$syscalls" -v cn="$connects" -v bad="${r[status]}" -v ck="$check" \
      'BEGIN { m = n > 0 ? n : 1
               printf "  %-8s %8.0f req/s  p50 %6d us  p99 %7d us  cpu %6.2f us/req  upstream %5.2f us/req%s  non-2xx %d of %d  %s\n",
               s, n * 1e6 / d, p50, p99, cpu / m, up / m,
               (sc >= 0 ? sprintf("  syscalls %.2f/req, connects %.3f/req", sc / m, cn / m) : ""),
               bad, n, ck }' >&2
    unset r
  done
done

# ---- table ------------------------------------------------------------------------
echo
echo "## medians of $ROUNDS round(s), load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    (rnd, gw, req, dur, p50, p99, cpu, non2xx, sockerr, check, user, upstream,
     syscalls, connects) = line.rstrip("\n").split("\t")
    req, dur = int(req), int(dur)
    n = max(req, 1)
    rows.setdefault(gw, []).append(dict(
        rps=req * 1e6 / dur, p50=int(p50), p99=int(p99), cpu=int(cpu) / n, user=int(user) / n,
        upstream=int(upstream) / n, syscalls=int(syscalls) / n if int(syscalls) >= 0 else None,
        connects=int(connects) / n if int(connects) >= 0 else None,
        non2xx=int(non2xx) / n, check=check))
def lat(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"
med = lambda xs: statistics.median(xs)
order = ["sluice", "nginx", "haproxy"]
gws = sorted(rows, key=lambda g: order.index(g) if g in order else 9)
with_syscalls = any(r["syscalls"] is not None for rs in rows.values() for r in rs)
# Medians over the runs that passed every check (a gateway that died has no CPU time
# to count); over all of them, marked, when none passed.
def used(g):
    ok = [r for r in rows[g] if r["check"] == "ok"]
    return ok or rows[g]
m = {g: {k: med([r[k] for r in used(g)]) for k in ("rps", "p50", "p99", "cpu", "user", "upstream")}
     for g in gws}
head = "| gateway | requests/s (min-max) | p50 | p99 | CPU µs/request (min-max) | of which user | upstream CPU µs/request |"
sep = "|---|---|---|---|---|---|---|"
if with_syscalls:
    head += " syscalls/request | upstream connects/request |"; sep += "---|---|"
head += " checks |"; sep += "---|"
print(head); print(sep)
for g in gws:
    rs = used(g)
    rps = [r["rps"] for r in rs]; cpu = [r["cpu"] for r in rs]
    bad = [r["check"] for r in rows[g] if r["check"] != "ok"]
    checks = f"ok ({len(rs)} runs, all 200)"
    if bad:
        passed = len(rows[g]) - len(bad)
        checks = (f"FAILED in {len(bad)} of {len(rows[g])} runs: {', '.join(bad)}; "
                  + (f"medians of the {passed} that passed" if passed else "medians of all, unreliable"))
    cells = [g, f"{m[g]['rps']:,.0f} ({min(rps):,.0f}-{max(rps):,.0f})", lat(m[g]["p50"]),
             lat(m[g]["p99"]), f"{m[g]['cpu']:.2f} ({min(cpu):.2f}-{max(cpu):.2f})",
             f"{m[g]['user']:.2f}", f"{m[g]['upstream']:.2f}"]
    if with_syscalls:
        sc = [r["syscalls"] for r in rs if r["syscalls"] is not None]
        cn = [r["connects"] for r in rs if r["connects"] is not None]
        cells.append(f"{med(sc):.2f}" if sc else "")
        cells.append(f"{med(cn):.3f}" if cn else "")
    cells.append(checks)
    print("| " + " | ".join(cells) + " |")
if "sluice" in m:
    print()
    print("| sluice / peer | requests/s | p50 | p99 | CPU µs/request |")
    print("|---|---|---|---|---|")
    for peer in ("haproxy", "nginx"):
        if peer not in m: continue
        ratio = lambda k: f"{m['sluice'][k] / m[peer][k]:.2f}x" if m[peer][k] > 0 else "n/a"
        print(f"| sluice / {peer} | {ratio('rps')} | {ratio('p50')} | {ratio('p99')} | {ratio('cpu')} |")
PY
echo
echo "CPU µs/request: the gateway's utime+stime over the wrk run (nginx: master and worker) / requests completed;"
echo "medians over the runs that passed their checks, (min-max) over the same runs."
echo "Upstream CPU: the upstream nginx's (on the client core, with wrk), for reference."
exit "$FAILED"
