#!/usr/bin/env bash
# sluice against nginx (limit_req, one worker) and HAProxy (stick-table http_req_rate,
# one thread) on the same rule: one counter per client IP, in two cases:
#   pass     the limit is far above the request rate: every request gets 200
#   limited  1 request per minute: the first passes, every later one gets 429
# Each server is pinned to one core (taskset -c 0), wrk to the other (taskset -c 1):
#   wrk -t1 -c50 -d$DURATION --latency
# and the figures are requests/s, p50/p99 latency and the server's CPU time per
# request (utime+stime from /proc/PID/stat over the wrk run, divided by the requests
# wrk completed). On a 2-core machine wrk saturates its core first (80-100k
# requests/s), so CPU per request is the figure that compares the servers.
# Each round starts every server afresh for each case, in a shuffled server order;
# the table gives the medians over the rounds. Configs: bench/http/.
#   bench/http_peers.sh                       3 rounds of 10 s (about 3.5 minutes)
#   DURATION=3s ROUNDS=1 bench/http_peers.sh  smoke run
#   SERVERS="sluice nginx" CASES=pass bench/http_peers.sh
# Other knobs: CONNECTIONS (50), SERVER_CPU (0), CLIENT_CPU (1), BUILD_DIR (build),
# KEEP=1 keeps the work directory (configs, logs, raw wrk output) and says where.
# Exit status 1 when a sanity check failed (wrong status codes, socket errors): the
# table is still printed, with the failed measurement marked.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SERVERS=${SERVERS:-sluice nginx haproxy}
CASES=${CASES:-pass limited}
KEEP=${KEEP:-0}
COMMAND_LINE="DURATION=$DURATION ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS SERVERS=\"$SERVERS\" CASES=\"$CASES\" $0${*:+ $*}"
export PATH="$PATH:/usr/sbin:/sbin"

# ---- what is needed ---------------------------------------------------------------
sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
# apt_install, duration_s, free_port, wait_port, fill
source "$ROOT/bench/lib.sh"
need python3 python3
need curl curl
need util-linux taskset
need procps pgrep
need wrk wrk
need haproxy haproxy
install_needed
install_nginx
SLUICE=$(sluice_binary "$BUILD_DIR")
warn_shared_core "$SERVER_CPU" "$CLIENT_CPU"

CLK_TCK=$(getconf CLK_TCK)
RUN_SECONDS=$(duration_s "$DURATION")

# ---- work directory, and stopping everything we start -----------------------------
bench_setup http-peers



# start SERVER CASE: sets PORT, MAIN_PID (what is stopped) and MEASURED (PIDs whose
# CPU time is counted: nginx's master and worker, the process of the others).
start() {
  local server=$1 case=$2 dir="$WORK/$1-$2"
  rm -rf "$dir"; mkdir -p "$dir"
  PORT=$(free_port)
  case "$server" in
    sluice)
      if [ "$case" = pass ]; then set -- LIMIT=100000000 PERIOD=1s; else set -- LIMIT=1 PERIOD=1m; fi
      fill bench/http/sluice.yaml "$dir/sluice.yaml" PORT="$PORT" ADMIN_PORT="$(free_port)" "$@"
      taskset -c "$SERVER_CPU" "$SLUICE" serve --config "$dir/sluice.yaml" >"$dir/server.log" 2>&1 &
      ;;
    nginx)
      if [ "$case" = pass ]; then set -- RATE=100000000r/s "BURST=burst=1000000 nodelay"
      else set -- RATE=1r/m BURST=; fi
      fill bench/http/nginx.conf "$dir/nginx.conf" PORT="$PORT" DIR="$dir" "$@"
      taskset -c "$SERVER_CPU" nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" \
        >"$dir/server.log" 2>&1 &
      ;;
    haproxy)
      if [ "$case" = pass ]; then set -- LIMIT=100000000 PERIOD=1s; else set -- LIMIT=1 PERIOD=1m; fi
      fill bench/http/haproxy.cfg "$dir/haproxy.cfg" PORT="$PORT" "$@"
      taskset -c "$SERVER_CPU" haproxy -db -f "$dir/haproxy.cfg" >"$dir/server.log" 2>&1 &
      ;;
  esac
  MAIN_PID=$!
  STARTED+=("$MAIN_PID")
  if ! wait_port "$PORT" "$MAIN_PID"; then
    echo "error: $server ($case) did not start listening on 127.0.0.1:$PORT; its output:" >&2
    cat "$dir/server.log" "$dir/error.log" 2>/dev/null | tail -20 >&2
    exit 1
  fi
  MEASURED=("$MAIN_PID")
  if [ "$server" = nginx ]; then
    local workers=()
    for _ in $(seq 50); do
      mapfile -t workers < <(pgrep -P "$MAIN_PID")
      [ ${#workers[@]} -ge 1 ] && break
      sleep 0.1
    done
    [ ${#workers[@]} -eq 1 ] || { echo "error: nginx has ${#workers[@]} workers, expected 1" >&2; exit 1; }
    MEASURED+=("${workers[@]}")
  fi
}

stop() { stop_pid "$MAIN_PID"; }

# ---- header -----------------------------------------------------------------------
echo "## machine and versions"
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
commit=$(commit_description)
echo "- sluice: $("$SLUICE" --version 2>&1 | head -1) ($commit, $SLUICE)"
echo "- nginx: $(nginx -v 2>&1 | head -1)"
echo "- haproxy: $(haproxy -v 2>&1 | head -1)"
echo "- wrk: $(wrk -v 2>&1 | head -1 | sed 's/ *$//')"
echo "- command: $COMMAND_LINE"
echo "- each run: taskset -c $SERVER_CPU SERVER; taskset -c $CLIENT_CPU wrk -t1 -c$CONNECTIONS -d$DURATION --latency -s bench/http/report.lua http://127.0.0.1:PORT/"

# ---- runs -------------------------------------------------------------------------
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
FAILED=0
for round in $(seq "$ROUNDS"); do
  order=$(printf '%s\n' $SERVERS | shuf | xargs)
  echo "round $round/$ROUNDS: $order" >&2
  for server in $order; do
    for case in $CASES; do
      start "$server" "$case"
      dir="$WORK/$server-$case"
      # Sanity check: five requests, each on its own connection. pass: all 200;
      # limited: the first passes (a limit of 1 per minute), the other four get 429.
      codes=$(for _ in 1 2 3 4 5; do
        curl -s -o /dev/null -w '%{http_code} ' --max-time 2 "http://127.0.0.1:$PORT/" || true
      done | xargs)
      if [ "$case" = pass ]; then expect="200 200 200 200 200"; else expect="200 429 429 429 429"; fi
      check=ok
      if [ "$codes" != "$expect" ]; then
        echo "CHECK FAILED: $server ($case): curl got [$codes], expected [$expect]" >&2
        check="curl:${codes// /,}"
      fi
      before=$(cpu_ticks "${MEASURED[@]}")
      user_before=$(user_ticks "${MEASURED[@]}")
      # In the background so that a signal reaches the trap at once (it stops wrk too).
      timeout $((RUN_SECONDS + 30)) taskset -c "$CLIENT_CPU" \
        wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/http/report.lua \
        "http://127.0.0.1:$PORT/" >"$dir/wrk.out" 2>&1 &
      WRK_PID=$!
      wait "$WRK_PID" || true
      WRK_PID=
      after=$(cpu_ticks "${MEASURED[@]}")
      user_after=$(user_ticks "${MEASURED[@]}")
      alive=yes; kill -0 "$MAIN_PID" 2>/dev/null || alive=no
      stop
      wrk_result "$server ($case)" "$dir/wrk.out" || { FAILED=1; continue; }
      # limited: every wrk request should be refused, give or take the one token that
      # comes back each minute.
      if [ "$case" = pass ]; then ok_non2xx=$((r[status] == 0))
      else ok_non2xx=$((r[status] >= r[requests] - 1 - RUN_SECONDS / 60)); fi
      if [ "$ok_non2xx" != 1 ]; then
        echo "CHECK FAILED: $server ($case): wrk non-2xx ${r[status]} of ${r[requests]}" >&2
        add_check non2xx
      fi
      alive_check "$server ($case)" "$alive" "$dir/server.log"
      [ "$check" = ok ] || FAILED=1
      cpu_us=$(( (after - before) * 1000000 / CLK_TCK ))
      user_us=$(( (user_after - user_before) * 1000000 / CLK_TCK ))
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$server" "$case" \
        "${r[requests]}" "${r[duration_us]}" "${r[p50_us]}" "${r[p99_us]}" "$cpu_us" \
        "${r[status]}" "$sockerr" "$check" "$user_us" >>"$RESULTS"
      awk -v s="$server" -v c="$case" -v n="${r[requests]}" -v d="${r[duration_us]}" \
        -v p50="${r[p50_us]}" -v p99="${r[p99_us]}" -v cpu="$cpu_us" -v bad="${r[status]}" -v ck="$check" \
        'BEGIN { printf "  %-8s %-8s %8.0f req/s  p50 %6d us  p99 %7d us  cpu %6.2f us/req  non-2xx %d of %d  %s\n",
                 s, c, n * 1e6 / d, p50, p99, cpu / (n > 0 ? n : 1), bad, n, ck }' >&2
      unset r
    done
  done
done

# ---- table ------------------------------------------------------------------------
echo
echo "## medians of $ROUNDS round(s), load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    rnd, server, case, req, dur, p50, p99, cpu, non2xx, sockerr, check, user = line.rstrip("\n").split("\t")
    req, dur = int(req), int(dur)
    rows.setdefault((server, case), []).append(dict(
        rps=req * 1e6 / dur, p50=int(p50), p99=int(p99), cpu=int(cpu) / max(req, 1),
        user=int(user) / max(req, 1),
        non2xx=int(non2xx) / max(req, 1), check=check))
def lat(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"
med = lambda xs: statistics.median(xs)
order_s = ["sluice", "nginx", "haproxy"]
order_c = ["pass", "limited"]
keys = sorted(rows, key=lambda k: (order_c.index(k[1]) if k[1] in order_c else 9,
                                   order_s.index(k[0]) if k[0] in order_s else 9))
print("| server | case | requests/s | p50 | p99 | CPU µs/request | of which user | non-2xx | sluice CPU / best peer |")
print("|---|---|---|---|---|---|---|---|---|")
for server, case in keys:
    rs = rows[(server, case)]
    cpu = med([r["cpu"] for r in rs])
    ratio = ""
    if server == "sluice":
        peers = [med([r["cpu"] for r in rows[(p, case)]]) for p in ("nginx", "haproxy") if (p, case) in rows]
        if peers and min(peers) > 0:
            ratio = f"{cpu / min(peers):.2f}x"
    bad = [r["check"] for r in rs if r["check"] != "ok"]
    mark = f" (check failed: {', '.join(bad)})" if bad else ""
    print(f"| {server} | {case} | {med([r['rps'] for r in rs]):,.0f} | {lat(med([r['p50'] for r in rs]))} | "
          f"{lat(med([r['p99'] for r in rs]))} | {cpu:.2f} | {med([r['user'] for r in rs]):.2f} | {100 * med([r['non2xx'] for r in rs]):.1f}%{mark} | {ratio} |")
PY
echo
echo "CPU µs/request: the server's utime+stime over the wrk run (nginx: master and worker) / requests completed."
echo "Ratio: sluice's CPU µs/request over the lower of nginx's and HAProxy's in the same case (below 1 = sluice cheaper)."
exit "$FAILED"
