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
