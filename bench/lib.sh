# Shell functions shared by the benchmark scripts (sourced; not run on its own).
# Callers set `sudo` ("" as root, "sudo" otherwise) before apt_install.

apt_install() {
  $sudo apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 || {
    $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "$@" >/dev/null
  }
}

# need PACKAGE COMMAND...: PACKAGE is installed by install_needed unless every COMMAND
# is found.
needed=()
need() {
  local package=$1 command; shift
  for command in "$@"; do
    command -v "$command" >/dev/null || { needed+=("$package"); return 0; }
  done
}
install_needed() {
  [ ${#needed[@]} -gt 0 ] || return 0
  echo "installing: ${needed[*]}" >&2
  apt_install "${needed[@]}"
  needed=()
}

duration_s() {  # wrk's duration syntax: 10, 10s, 2m, 1h
  local d=$1 n=${1%[smh]}
  case "$d" in *h) echo $((n * 3600)) ;; *m) echo $((n * 60)) ;; *) echo "$n" ;; esac
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait until something accepts connections on the port (connect only, no request, so
# the limiter's counters are untouched); false if `pid` exits first or after 10 s.
wait_port() {
  local port=$1 pid=$2
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

fill() {  # fill TEMPLATE OUT KEY=VALUE...: replace @KEY@ by VALUE
  local in=$1 out=$2 kv; shift 2
  local script=()
  for kv in "$@"; do script+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${script[@]}" "$in" >"$out"
}

# nginx, for the peers and the upstreams: nginx-light when it can be had, else nginx.
install_nginx() {
  command -v nginx >/dev/null && return 0
  echo "installing: nginx-light (or nginx)" >&2
  apt_install nginx-light || apt_install nginx
}

# sluice_binary BUILD_DIR: the sluice binary of that build (made when missing), as an
# absolute path.
sluice_binary() {
  [ -x "$1/sluice" ] || make build BUILD_DIR="$1" >&2
  case "$1" in /*) echo "$1/sluice" ;; *) echo "$ROOT/$1/sluice" ;; esac
}

# warn_shared_core SERVER_CPU CLIENT_CPU: a warning when this machine cannot give the
# server and the client a core each.
warn_shared_core() {
  if [ "$(nproc)" -lt 2 ] && [ "$1" != "$2" ]; then
    echo "warning: $(nproc) CPU(s) online; the server and wrk cannot have a core each" >&2
  fi
}

# stop_pid PID: TERM, up to 5 s, then KILL; reaped and taken off the caller's STARTED
# array (the PIDs its cleanup stops).
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local keep=() p
  for p in "${STARTED[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  STARTED=("${keep[@]+"${keep[@]}"}")
}

# The checkout's commit for a results header: "commit abc1234", with "with uncommitted
# changes" when the tree differs.
commit_description() {
  local commit="not a git checkout"
  if git rev-parse --git-dir >/dev/null 2>&1; then
    commit="commit $(git rev-parse --short HEAD 2>/dev/null || echo none)"
    git diff --quiet HEAD 2>/dev/null || commit="$commit with uncommitted changes"
  fi
  echo "$commit"
}

cpu_ticks() {  # utime+stime (fields 14 and 15 of /proc/PID/stat) summed over PIDs
  # Drop "PID (comm) " first (comm may hold spaces): then state is $1, utime $12.
  # A PID that is gone counts nothing (the caller reports a server that died).
  local pid
  for pid in "$@"; do cat "/proc/$pid/stat" 2>/dev/null || true; done |
    awk '{ sub(/^.*\) /, ""); s += $12 + $13 } END { print s + 0 }'
}

user_ticks() {  # utime alone: how much of the CPU time is the server's own code
  local pid
  for pid in "$@"; do cat "/proc/$pid/stat" 2>/dev/null || true; done |
    awk '{ sub(/^.*\) /, ""); s += $12 } END { print s + 0 }'
}

nginx_workers() {  # nginx_workers MASTER_PID: the PIDs of its (one) worker
  local workers=()
  for _ in $(seq 50); do
    mapfile -t workers < <(pgrep -P "$1")
    [ ${#workers[@]} -ge 1 ] && break
    sleep 0.1
  done
  [ ${#workers[@]} -eq 1 ] || { echo "error: nginx has ${#workers[@]} workers, expected 1" >&2; exit 1; }
  echo "${workers[0]}"
}

# bench_setup NAME: a work directory WORK (sluice-NAME.XXXXXX under TMPDIR, removed at
# exit unless KEEP=1), and an exit trap that stops everything the script started: the
# client runs in WRK_PID, CLIENT_PID, SAMPLER_PID and PERF_PID (when set), then every
# server in STARTED (TERM, KILL after 5 s).
bench_setup() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-$1.XXXXXX")
  STARTED=()  # PIDs of servers started and not yet stopped
  WRK_PID= CLIENT_PID= SAMPLER_PID= PERF_PID=
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
bench_cleanup() {
  local pid
  for pid in $WRK_PID $CLIENT_PID $SAMPLER_PID; do kill -TERM "$pid" 2>/dev/null || true; done
  [ -z "$PERF_PID" ] || kill -INT "$PERF_PID" 2>/dev/null || true
  for pid in "${STARTED[@]+"${STARTED[@]}"}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED[@]+"${STARTED[@]}"}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}

# add_check NAME: marks the round's `check` ("ok" until something fails) with NAME.
add_check() {
  if [ "$check" = ok ]; then check=$1; else check="$check;$1"; fi
}

# wrk_result LABEL FILE: reads the RESULT line that bench/http/report.lua (or a script
# built on it) printed into FILE into the array r (requests, status, connect, read,
# write, timeout, p50_us, ...) and sets sockerr; socket errors fail the round's check.
# False, with wrk's output shown, when there is no RESULT line.
wrk_result() {
  local label=$1 file=$2 line kv
  line=$(grep '^RESULT ' "$file" || true)
  if [ -z "$line" ]; then
    echo "CHECK FAILED: $label: wrk gave no result; its output:" >&2
    cat "$file" >&2
    return 1
  fi
  declare -gA r=()
  for kv in ${line#RESULT }; do r[${kv%%=*}]=${kv#*=}; done
  sockerr=$((r[connect] + r[read] + r[write] + r[timeout]))
  if [ "$sockerr" -ne 0 ]; then
    echo "CHECK FAILED: $label: wrk socket errors connect ${r[connect]} read ${r[read]} write ${r[write]} timeout ${r[timeout]}" >&2
    add_check sockerr
  fi
}

# alive_check LABEL ALIVE LOG: a server that exited during the run (ALIVE=no) fails
# the round's check, with the end of its LOG shown.
alive_check() {
  [ "$2" = no ] || return 0
  echo "CHECK FAILED: $1: the server exited during the run; its output:" >&2
  tail -20 "$3" >&2
  add_check died
}
