#!/usr/bin/env bash
# Runs each fuzz target under libFuzzer (clang, ASan, UBSan) for SECONDS seconds
# (default 60), keeping the corpus in build-fuzz/corpus/<target> and starting from the
# seeds in tests/fuzz/seeds/<target> (and examples/ for the config). A crash leaves its
# input in build-fuzz/<target>-crash-* and fails the script once every target has run.
#
#   scripts/fuzz.sh [SECONDS]
#   FUZZ_TARGETS="HttpConnectionOneInput ConfigOneInput" make fuzz FUZZ_SECONDS=60
#
# The full output of each run is in build-fuzz/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
OUT=build-fuzz
ALL_TARGETS="AlgorithmsOneInput DurationOneInput HttpConnectionOneInput CanonicalPathOneInput HeadParserOneInput
             ConfigOneInput AddressOneInput CheckRequestOneInput GrpcConnectionOneInput"
TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}
mkdir -p "$OUT/obj"
missing=""
for p in clang libclang-rt-14-dev libfmt-dev libyaml-cpp-dev libhttp-parser-dev libxxhash-dev libssl-dev \
         libsimdjson-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc \
         libnghttp2-dev liburing-dev pkg-config; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=" $p"
done
if [ -n "$missing" ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get install -y --no-install-recommends $missing
fi

# Everything but the entry point is compiled once, instrumented for the fuzzer but
# without its main, and each target's binary links those objects with its own
# libfuzzer_main.cc. An object is rebuilt when any source or header is newer.
# Envoy's rate limit API (GrpcConnectionOneInput): the protos compiled here, as CMake
# does for the build.
PROTO_OUT=$OUT/proto
PROTOS=(envoy/type/v3/ratelimit_unit envoy/config/core/v3/base
        envoy/extensions/common/ratelimit/v3/ratelimit envoy/service/ratelimit/v3/rls)
mkdir -p "$PROTO_OUT"
PROTO_SOURCES=()
for name in "${PROTOS[@]}"; do
  PROTO_SOURCES+=("$PROTO_OUT/$name.pb.cc" "$PROTO_OUT/$name.grpc.pb.cc")
  if [ ! -f "$PROTO_OUT/$name.grpc.pb.cc" ] || [ "proto/$name.proto" -nt "$PROTO_OUT/$name.grpc.pb.cc" ]; then
    protoc -I proto --cpp_out="$PROTO_OUT" --grpc_out="$PROTO_OUT" \
      --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" "proto/$name.proto"
  fi
done
FLAGS=(-std=c++20 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all
       -Iinclude -Isrc -Itests -I"$PROTO_OUT")
SOURCES=(src/core/algorithms.cc src/core/clock.cc src/core/limiter.cc src/core/units.cc
         src/sim/simulate.cc src/store/memory_store.cc src/store/key_hash.cc
         src/store/redis_scripts.cc
         src/net/address.cc src/net/event_loop.cc src/net/io_batch.cc src/net/tls.cc src/http/server_connection.cc
         src/http/head_parser.cc
         src/metrics/metrics.cc src/config/config.cc src/gate/gate.cc
         src/api/check_request.cc src/api/decision_request.cc
         tests/fuzz/fuzz_targets.cc tests/fuzz/http_fuzz_targets.cc
         tests/fuzz/config_fuzz_targets.cc tests/fuzz/address_fuzz_targets.cc
         tests/fuzz/api_fuzz_targets.cc
         src/rls/ratelimit_config.cc src/rls/rls_service.cc src/rls/grpc_connection.cc
         tests/fuzz/grpc_fuzz_targets.cc "${PROTO_SOURCES[@]}")
changed_header=all
if [ -f "$OUT/obj/.stamp" ]; then
  changed_header=$(find include src tests/fuzz -name '*.h' -newer "$OUT/obj/.stamp" | head -1)
fi
object_of() { echo "$OUT/obj/$(echo "$1" | tr / _).o"; }
OBJECTS=()
stale=()
for source in "${SOURCES[@]}"; do
  OBJECTS+=("$(object_of "$source")")
  if [ -n "$changed_header" ] || [ ! -f "$(object_of "$source")" ] ||
     [ "$source" -nt "$(object_of "$source")" ]; then
    stale+=("$source")
  fi
done
if [ ${#stale[@]} -gt 0 ]; then
  echo "fuzz: compiling ${#stale[@]} sources"
  pids=()
  for source in "${stale[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$(nproc)" ]; do wait -n; done
    clang++ "${FLAGS[@]}" -fsanitize=fuzzer-no-link -c "$source" -o "$(object_of "$source")" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
fi
touch "$OUT/obj/.stamp"

# Per target: the largest input worth trying, a dictionary, and extra seed directories.
options_for() {
  case "$1" in
    HttpConnectionOneInput) echo "-max_len=20000 -dict=tests/fuzz/http.dict" ;;
    ConfigOneInput) echo "-max_len=16384 -dict=tests/fuzz/config.dict" ;;
    AddressOneInput) echo "-max_len=1024" ;;
    CanonicalPathOneInput) echo "-max_len=512" ;;
    HeadParserOneInput) echo "-max_len=2048 -dict=tests/fuzz/http.dict" ;;
    CheckRequestOneInput) echo "-max_len=65536 -dict=tests/fuzz/check.dict" ;;
    GrpcConnectionOneInput) echo "-max_len=8192" ;;
  esac
}
seeds_for() {
  [ -d "tests/fuzz/seeds/$1" ] && echo "tests/fuzz/seeds/$1"
  [ "$1" = ConfigOneInput ] && echo examples
  true
}

failed=""
for target in $TARGETS; do
  clang++ "${FLAGS[@]}" -fsanitize=fuzzer -DSLUICE_FUZZ_TARGET="$target" \
    tests/fuzz/libfuzzer_main.cc "${OBJECTS[@]}" \
    -lyaml-cpp -lsimdjson -lhttp_parser -luring -lssl -lcrypto -lxxhash -lfmt -lnghttp2 \
    $(pkg-config --libs grpc++ protobuf) -lpthread \
    -o "$OUT/fuzz_$target"
  mkdir -p "$OUT/corpus/$target"
  echo "== $target (${SECONDS_EACH}s)"
  # shellcheck disable=SC2046
  if ! "$OUT/fuzz_$target" -max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=20 \
      -artifact_prefix="$OUT/$target-" $(options_for "$target") \
      "$OUT/corpus/$target" $(seeds_for "$target") >"$OUT/$target.log" 2>&1; then
    failed+=" $target"
  fi
  grep -aE '^#[0-9]+[[:space:]]+(INITED|DONE)|^Done|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|ERROR|invariant broken|SUMMARY|Test unit written' \
    "$OUT/$target.log" || true
done
if [ -n "$failed" ]; then
  echo "fuzz: crashes in:$failed (inputs in $OUT/, logs in $OUT/<target>.log)"
  exit 1
fi
