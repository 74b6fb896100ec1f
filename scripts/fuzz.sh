#!/usr/bin/env bash
# Runs each fuzz target under libFuzzer (clang, ASan, UBSan) for SECONDS seconds
# (default 60), keeping the corpus in build-fuzz/corpus/<target>. A crash leaves its
# input in build-fuzz/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
OUT=build-fuzz
mkdir -p "$OUT"
for p in clang libclang-rt-14-dev libfmt-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=" $p"
done
if [ -n "${missing:-}" ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get install -y --no-install-recommends $missing
fi
for target in AlgorithmsOneInput DurationOneInput; do
  clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -DSLUICE_FUZZ_TARGET="$target" -Iinclude -Isrc -Itests \
    src/core/algorithms.cc src/core/clock.cc src/core/limiter.cc src/sim/simulate.cc \
    tests/fuzz/fuzz_targets.cc tests/fuzz/libfuzzer_main.cc -lfmt -o "$OUT/fuzz_$target"
  mkdir -p "$OUT/corpus/$target"
  "$OUT/fuzz_$target" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
    -artifact_prefix="$OUT/" "$OUT/corpus/$target" 2>&1 | grep -E '^(Done|stat::number_of_executed_units)|ERROR|invariant'
done
