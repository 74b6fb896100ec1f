// Many threads on one key with a frozen clock: exactly the capacity passes, never one
// more. Built twice: plainly, and under ThreadSanitizer (store_tsan_test).
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <string>
#include <thread>
#include <vector>

#include "store/memory_store.h"

namespace sluice::store {
namespace {

using std::chrono::seconds;

struct HammerCase {
  Algorithm algorithm;
  int threads;
};

class OneHotKey : public ::testing::TestWithParam<HammerCase> {};

TEST_P(OneHotKey, ExactlyTheCapacityIsAllowedInTotal) {
  const auto [algorithm, threads] = GetParam();
  constexpr uint64_t kLimit = 1000;
  constexpr int kAttemptsPerThread = 2000;
  const Limit limit{.limit = kLimit, .period = seconds(60), .burst = kLimit};
  MemoryStore store({.max_keys = 1024});
  const Timestamp frozen = FromNanos(int64_t{42} * 1'000'000'000);
  std::atomic<uint64_t> allowed{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      while (!go.load(std::memory_order_acquire)) {
      }
      uint64_t mine = 0;
      const StoreRequest request{.key = "hot", .algorithm = algorithm, .limit = limit};
      for (int i = 0; i < kAttemptsPerThread; ++i) mine += store.Decide(request, frozen).allowed;
      allowed.fetch_add(mine);
    });
  }
  go.store(true, std::memory_order_release);
  for (std::thread& w : workers) w.join();
  EXPECT_EQ(allowed.load(), kLimit);
}

std::vector<HammerCase> Cases() {
  std::vector<HammerCase> cases;
  for (Algorithm a : kAllAlgorithms) {
    for (int threads : {2, 4, 8}) cases.push_back({a, threads});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllAlgorithms, OneHotKey, ::testing::ValuesIn(Cases()),
                         [](const auto& info) {
                           return std::string(AlgorithmName(info.param.algorithm)) + "_" +
                                  std::to_string(info.param.threads) + "threads";
                         });

// Threads on many keys at once, with time moving and the store small enough to expire
// and evict all the time: the paths where entries are recycled run concurrently.
// Each thread owns its keys, so each key still sees an exact count.
TEST(ManyKeys, ConcurrentChurnKeepsPerKeyCountsExact) {
  constexpr int kThreads = 4;
  constexpr int kKeysPerThread = 64;
  MemoryStore store({.max_keys = 4 * kThreads * kKeysPerThread, .shards = 8});
  const Limit limit = Limit::PerPeriod(3, seconds(3600));
  std::vector<std::thread> workers;
  std::atomic<int> wrong{0};
  // A shard's time only moves forward (memory_store.h), so a thread still on its
  // rounds at 0-2 s would be decided at the later time of another's churn: the
  // rounds finish everywhere before the churn starts.
  std::barrier rounds_done(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (int k = 0; k < kKeysPerThread; ++k) {
          const std::string key = std::to_string(t) + ":" + std::to_string(k);
          const StoreRequest request{
              .key = key, .algorithm = kAllAlgorithms[k % 6], .limit = limit};
          const Decision d = store.Decide(request, FromNanos(round * 1'000'000'000LL));
          if (!d.allowed || d.remaining != 2u - round) wrong.fetch_add(1);
        }
      }
      rounds_done.arrive_and_wait();
      // Short-lived keys that expire and are reclaimed while others still work.
      const Limit brief = Limit::PerPeriod(1, std::chrono::milliseconds(1));
      for (int i = 0; i < 5000; ++i) {
        const std::string key = "brief-" + std::to_string(t) + "-" + std::to_string(i);
        const StoreRequest request{.key = key, .algorithm = kAllAlgorithms[i % 6], .limit = brief};
        if (!store.Decide(request, FromNanos((10 + i / 100) * 1'000'000'000LL)).allowed) {
          wrong.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& w : workers) w.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_LE(store.GetStats().keys, 4u * kThreads * kKeysPerThread);
  EXPECT_GT(store.GetStats().expired, 0u);
}

}  // namespace
}  // namespace sluice::store
