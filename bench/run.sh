#!/usr/bin/env bash
# The memory store against the textbook baseline (std::mutex + unordered_map), in one
# run, interleaved, and the resident memory per key of each. Prints the tables that
# docs/benchmarks.md records.
#   bench/run.sh                 everything (about 10 minutes on 2 cores)
#   REPS=1 FILTER=keys:1000000 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
REPS=${REPS:-3}
FILTER=${FILTER:-.}
OUT=${OUT:-$BUILD_DIR/bench-results}
mkdir -p "$OUT"

command -v python3 >/dev/null || {
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get install -y --no-install-recommends python3
}
cmake --build "$BUILD_DIR" --target store_bench memory_per_key >/dev/null

echo "## machine"
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "transparent huge pages: $(cat /sys/kernel/mm/transparent_hugepage/enabled)"

echo
echo "## decisions per second (median of $REPS, random interleaving)"
"$BUILD_DIR"/store_bench --benchmark_filter="$FILTER" --benchmark_repetitions="$REPS" \
  --benchmark_enable_random_interleaving=true --benchmark_format=json \
  --benchmark_out="$OUT/store_bench.json" --benchmark_out_format=json >/dev/null
python3 - "$OUT/store_bench.json" <<'PY'
import json, re, sys
runs = json.load(open(sys.argv[1]))["benchmarks"]
rate = {}
for r in runs:
    if r.get("aggregate_name") != "median":
        continue
    m = re.match(r"BM_Decide<(\w+::)?(\w+)>/algorithm:(\d)/keys:(\d+)/.*threads:(\d)", r["name"])
    store, algo, keys, threads = m.group(2), r.get("label", m.group(3)), m.group(4), m.group(5)
    rate[(store, algo, keys, threads)] = r["items_per_second"]
algos = sorted({k[1] for k in rate}, key=lambda a: ["token_bucket", "leaky_bucket", "fixed_window",
    "sliding_window_log", "sliding_window_counter", "gcra"].index(a))
print("| algorithm | keys | threads | memory store (M/s) | baseline (M/s) | ratio |")
print("|---|---|---|---|---|---|")
for keys in sorted({k[2] for k in rate}, key=int):
    for threads in sorted({k[3] for k in rate}):
        for a in algos:
            s = rate.get(("MemoryStore", a, keys, threads))
            b = rate.get(("BaselineStore", a, keys, threads))
            if s and b:
                print(f"| {a} | {int(keys):,} | {threads} | {s/1e6:.2f} | {b/1e6:.2f} | {s/b:.1f}x |")
PY

echo
echo "## resident memory per tracked key, 1,000,000 keys"
echo "| algorithm | memory store | baseline |"
echo "|---|---|---|"
for a in token_bucket leaky_bucket fixed_window sliding_window_log sliding_window_counter gcra; do
  m=$("$BUILD_DIR"/memory_per_key "$a" memory | sed 's/.*bytes_per_key=//')
  b=$("$BUILD_DIR"/memory_per_key "$a" baseline | sed 's/.*bytes_per_key=//')
  echo "| $a | $m B | $b B |"
done
