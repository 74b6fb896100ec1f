#!/usr/bin/env bash
# Installs the Debian 12 packages sluice builds and tests with, and nothing when all
# are present. Used by `make test` and `make run`; safe to run again.
set -euo pipefail

packages=(
  g++ cmake ninja-build ccache pkg-config make
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev
  libfmt-dev libcli11-dev libxxhash-dev libhttp-parser-dev libyaml-cpp-dev libsimdjson-dev
  libhiredis-dev redis-server libssl-dev openssl curl liburing-dev
  nginx  # tests/integration/nginx_auth_test.cc: sluice as nginx's auth_request service
  # Envoy's rate limit service API (proto/) and the Python client of its conformance test
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libnghttp2-dev  # the same API on the workers' own loops (src/rls/grpc_connection.h)
  python3-grpcio python3-grpc-tools
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# Packages that come with a service (nginx, redis-server) are not started by the
# install: the tests start their own on free loopback ports, and a system nginx on
# port 80 is not ours to leave running. policy-rc.d is Debian's switch for that; one
# already there is left alone.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  trap '$sudo rm -f "$policy"' EXIT
fi
# Try without refreshing the index first: a fresh machine may already have it.
if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}"; then
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
