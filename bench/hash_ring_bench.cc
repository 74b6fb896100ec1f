// Nanoseconds per HashRing::NodeFor, the ring lookup on the Redis store's request path,
// for fleets of 2, 5 and 10 nodes at 160 and 1024 virtual nodes a node.
//
// Keys are built before timing, in the Redis store's hash-tag form
// ("api-per-key:client-N", what NodeFor is given), and visited in a precomputed random
// order so the key bytes are not always in cache. The ring itself (tens of KB) stays in
// cache, as it does in a worker that routes every request through it.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/hash_ring.h"

namespace sluice::core {
namespace {

constexpr size_t kKeys = 1 << 16;

const std::vector<std::string>& Keys() {
  static const auto* keys = [] {
    auto* v = new std::vector<std::string>;
    std::mt19937_64 rng(42);
    for (size_t i = 0; i < kKeys; ++i) v->push_back("api-per-key:client-" + std::to_string(rng()));
    return v;
  }();
  return *keys;
}

std::vector<std::string> Nodes(int count) {
  std::vector<std::string> nodes;
  for (int i = 0; i < count; ++i)
    nodes.push_back("10.0.0." + std::to_string(i + 1) + ":" + std::to_string(7000 + i));
  return nodes;
}

// Args: node count, virtual nodes a node.
void BM_NodeFor(benchmark::State& state) {
  const HashRing ring(Nodes(static_cast<int>(state.range(0))), static_cast<int>(state.range(1)));
  const std::vector<std::string>& keys = Keys();
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ring.NodeFor(keys[i]));
    i = (i + 1) & (kKeys - 1);
  }
}
BENCHMARK(BM_NodeFor)
    ->ArgNames({"nodes", "vnodes"})
    ->ArgsProduct({{2, 5, 10}, {160, 1024}})
    ->MinTime(0.5);

}  // namespace
}  // namespace sluice::core

BENCHMARK_MAIN();
