// Decisions per second through the memory store, against a textbook baseline
// (std::mutex + std::unordered_map<std::string, State>) on the same keys in the same
// run. Run with bench/run.sh; results and commands in docs/benchmarks.md.
//
// Keys are built before timing ("api-per-key:client-N"), each thread picks them uniformly at
// random from a precomputed sequence, and time advances 100 ns per decision on a
// per-thread simulated clock, so neither side pays for key formatting, an RNG or a
// clock read. Limits are generous (1000/min) so states stay live and are not reclaimed.
#include <benchmark/benchmark.h>

#include <cstdio>
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

// All keys in one array of fixed 32-byte slots: fetching a key costs one cache line,
// the same for both stores.
class KeyTable {
 public:
  static constexpr size_t kSlot = 32;
  explicit KeyTable(size_t n) : bytes_(n * kSlot), lengths_(n) {
    for (size_t i = 0; i < n; ++i) {
      const int len = std::snprintf(&bytes_[i * kSlot], kSlot, "api-per-key:client-%zu", i);
      lengths_[i] = static_cast<uint8_t>(len);
    }
  }
  std::string_view operator[](size_t i) const { return {&bytes_[i * kSlot], lengths_[i]}; }

 private:
  std::vector<char> bytes_;
  std::vector<uint8_t> lengths_;
};

const KeyTable& Keys() {
  static const auto* keys = new KeyTable(kManyKeys);
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
    // Heterogeneous lookup: a hit builds no std::string, so the baseline pays for no
    // allocation per decision, only for what its data structure costs.
    auto it = states_.find(r.key);
    if (it == states_.end()) {
      it = states_.try_emplace(std::string(r.key)).first;
      if (r.algorithm == Algorithm::kSlidingWindowLog) it->second.ring.resize(r.limit.limit);
    }
    State& s = it->second;
    if (r.algorithm == Algorithm::kSlidingWindowLog) {
      return core::DecideSlidingWindowLog(r.limit, s.log, s.ring, now, r.cost);
    }
    return core::DecideCompact(r.algorithm, r.limit, s.compact, now, r.cost);
  }

 private:
  struct State {
    core::CompactState compact;
    core::SlidingWindowLogState log;
    std::vector<int64_t> ring;
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view key) const { return std::hash<std::string_view>()(key); }
  };
  std::mutex mu_;
  std::unordered_map<std::string, State, Hash, std::equal_to<>> states_;
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
