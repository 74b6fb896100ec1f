// Decisions per second through the memory store, against a textbook baseline
// (std::mutex + std::unordered_map<std::string, State>) on the same keys in the same
// run. Run with bench/run.sh; results and commands in docs/benchmarks.md.
//
// Keys are built before timing ("rule:client-N"), each thread picks them uniformly at
// random from a precomputed sequence, and time advances 100 ns per decision on a
// per-thread simulated clock, so neither side pays for key formatting, an RNG or a
// clock read. Limits are generous (1000/min) so states stay live and are not reclaimed.
#include <benchmark/benchmark.h>

#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/algorithms.h"
#include "store/memory_store.h"

namespace sluice {
namespace {

constexpr size_t kManyKeys = 1'000'000;
const Limit kLimit{.limit = 1000, .period = std::chrono::minutes(1), .burst = 1000};

const std::vector<std::string>& Keys() {
  static const auto* keys = [] {
    auto* k = new std::vector<std::string>();
    k->reserve(kManyKeys);
    for (size_t i = 0; i < kManyKeys; ++i) k->push_back("api-per-key:client-" + std::to_string(i));
    return k;
  }();
  return *keys;
}

// A per-thread sequence of key indices, uniform over [0, n).
std::vector<uint32_t> Sequence(size_t n, int thread) {
  std::mt19937_64 rng(1234 + thread);
  std::vector<uint32_t> seq(1 << 20);
  for (uint32_t& i : seq) i = static_cast<uint32_t>(rng() % n);
  return seq;
}

// The textbook limiter store: one mutex, one node-based hash map keyed by the string.
class BaselineStore {
 public:
  Decision Decide(const StoreRequest& r, Timestamp now) {
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, inserted] = states_.try_emplace(std::string(r.key));
    if (r.algorithm == Algorithm::kSlidingWindowLog) {
      if (inserted) it->second.ring.resize(r.limit.limit);
      return core::DecideSlidingWindowLog(r.limit, it->second.log, it->second.ring, now, r.cost);
    }
    return core::DecideCompact(r.algorithm, r.limit, it->second.compact, now, r.cost);
  }

 private:
  struct State {
    core::CompactState compact;
    core::SlidingWindowLogState log;
    std::vector<int64_t> ring;
  };
  std::mutex mu_;
  std::unordered_map<std::string, State> states_;
};

template <typename StoreT>
std::unique_ptr<StoreT> MakeStore();
template <>
std::unique_ptr<store::MemoryStore> MakeStore() {
  // Room for every key with the per-shard slack hashing needs.
  return std::make_unique<store::MemoryStore>(
      store::MemoryStore::Options{.max_keys = kManyKeys * 5 / 4});
}
template <>
std::unique_ptr<BaselineStore> MakeStore() {
  return std::make_unique<BaselineStore>();
}

template <typename StoreT>
StoreT* shared_store = nullptr;

// Args: algorithm, key count (1 = one hot key).
template <typename StoreT>
void BM_Decide(benchmark::State& state) {
  const auto algorithm = static_cast<Algorithm>(state.range(0));
  const size_t keys = static_cast<size_t>(state.range(1));
  const auto& names = Keys();
  if (state.thread_index() == 0) {
    shared_store<StoreT> = MakeStore<StoreT>().release();
    // Warm up: every key tracked before timing starts.
    for (size_t i = 0; i < keys; ++i) {
      shared_store<StoreT>->Decide(
          StoreRequest{.key = names[i], .algorithm = algorithm, .limit = kLimit, .cost = 1},
          FromNanos(1));
    }
  }
  const std::vector<uint32_t> seq = Sequence(keys, state.thread_index());
  int64_t now = 1'000'000;
  size_t i = 0;
  uint64_t allowed = 0;
  for (auto _ : state) {
    const StoreRequest request{
        .key = names[seq[i++ & (seq.size() - 1)]], .algorithm = algorithm, .limit = kLimit};
    now += 100;
    allowed += shared_store<StoreT>->Decide(request, FromNanos(now)).allowed;
  }
  benchmark::DoNotOptimize(allowed);
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(std::string(AlgorithmName(algorithm)));
  if (state.thread_index() == 0) {
    delete shared_store<StoreT>;
    shared_store<StoreT> = nullptr;
  }
}

void Args(benchmark::internal::Benchmark* b) {
  for (Algorithm a : kAllAlgorithms) {
    for (int64_t keys : {int64_t{1}, static_cast<int64_t>(kManyKeys)}) {
      b->Args({static_cast<int64_t>(a), keys});
    }
  }
  b->ArgNames({"algorithm", "keys"})->Threads(1)->Threads(2)->UseRealTime()->MinTime(0.5);
}

BENCHMARK_TEMPLATE(BM_Decide, store::MemoryStore)->Apply(Args);
BENCHMARK_TEMPLATE(BM_Decide, BaselineStore)->Apply(Args);

}  // namespace
}  // namespace sluice

BENCHMARK_MAIN();
