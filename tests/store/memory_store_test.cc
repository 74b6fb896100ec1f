#include "store/memory_store.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/algorithms.h"

namespace sluice::store {
namespace {

using std::chrono::seconds;

StoreRequest Request(std::string_view key, Algorithm a, Limit l, uint64_t cost = 1) {
  return StoreRequest{.key = key, .algorithm = a, .limit = l, .cost = cost};
}
Timestamp At(double s) { return FromNanos(static_cast<int64_t>(s * 1e9)); }

TEST(MemoryStore, DecisionsMatchTheAlgorithmOnItsOwnState) {
  const Limit limit{.limit = 5, .period = seconds(1), .burst = 3};
  for (Algorithm a : kAllAlgorithms) {
    MemoryStore store({.max_keys = 1000});
    core::CompactState state;
    core::SlidingWindowLogState log;
    std::vector<int64_t> ring(limit.limit);
    for (int i = 0; i < 40; ++i) {
      const Timestamp now = At(0.05 * i);
      const uint64_t cost = i % 3;
      const Decision want = a == Algorithm::kSlidingWindowLog
                                ? core::DecideSlidingWindowLog(limit, log, ring, now, cost)
                                : core::DecideCompact(a, limit, state, now, cost);
      EXPECT_EQ(store.Decide(Request("k", a, limit, cost), now), want)
          << AlgorithmName(a) << " step " << i;
    }
  }
}

TEST(MemoryStore, KeysAreIndependent) {
  MemoryStore store({.max_keys = 1000});
  const Limit limit = Limit::PerPeriod(1, seconds(10));
  EXPECT_TRUE(store.Decide(Request("a", Algorithm::kFixedWindow, limit), At(1)).allowed);
  EXPECT_FALSE(store.Decide(Request("a", Algorithm::kFixedWindow, limit), At(1)).allowed);
  EXPECT_TRUE(store.Decide(Request("b", Algorithm::kFixedWindow, limit), At(1)).allowed);
  // The same key under another algorithm is another state.
  EXPECT_TRUE(store.Decide(Request("a", Algorithm::kGcra, limit), At(1)).allowed);
}

TEST(MemoryStore, KeysLongerThanAnEntryAreTrackedExactly) {
  MemoryStore store({.max_keys = 100});
  const std::string a(4096, 'x');
  std::string b = a;
  b.back() = 'y';
  const Limit limit = Limit::PerPeriod(1, seconds(10));
  EXPECT_TRUE(store.Decide(Request(a, Algorithm::kTokenBucket, limit), At(1)).allowed);
  EXPECT_TRUE(store.Decide(Request(b, Algorithm::kTokenBucket, limit), At(1)).allowed);
  EXPECT_FALSE(store.Decide(Request(a, Algorithm::kTokenBucket, limit), At(1)).allowed);
}

TEST(MemoryStore, RequestsThatLeaveTheStateWholeCreateNoEntry) {
  MemoryStore store({.max_keys = 10});
  const Limit limit = Limit::PerPeriod(2, seconds(1));
  store.Decide(Request("too-big", Algorithm::kTokenBucket, limit, 3), At(1));
  store.Decide(Request("query", Algorithm::kFixedWindow, limit, 0), At(1));
  EXPECT_EQ(store.GetStats().keys, 0u);
}

TEST(MemoryStore, NeverTracksMoreThanMaxKeysAndEvictsLeastRecentlyUsed) {
  MemoryStore store({.max_keys = 4, .shards = 1});
  const Limit limit = Limit::PerPeriod(1, seconds(100));
  auto hit = [&](const std::string& key) {
    return store.Decide(Request(key, Algorithm::kFixedWindow, limit), At(1)).allowed;
  };
  for (std::string k : {"k0", "k1", "k2", "k3"}) EXPECT_TRUE(hit(k));
  EXPECT_FALSE(hit("k0"));  // k0 is now the most recently used; k1 the least
  EXPECT_TRUE(hit("k4"));   // evicts k1
  EXPECT_EQ(store.GetStats().keys, 4u);
  EXPECT_EQ(store.GetStats().evicted, 1u);
  EXPECT_FALSE(hit("k0"));  // still tracked
  EXPECT_FALSE(hit("k2"));
  EXPECT_FALSE(hit("k3"));
  EXPECT_TRUE(hit("k1"));  // forgotten, so it starts afresh (and evicts k4)
  EXPECT_EQ(store.GetStats().keys, 4u);
}

TEST(MemoryStore, FullStoreReclaimsExpiredStateBeforeEvictingLiveState) {
  MemoryStore store({.max_keys = 3, .shards = 1});
  const Limit brief = Limit::PerPeriod(1, seconds(1));
  const Limit lasting = Limit::PerPeriod(1, seconds(1000));
  store.Decide(Request("brief", Algorithm::kFixedWindow, brief), At(0.5));  // whole at 1 s
  store.Decide(Request("old", Algorithm::kFixedWindow, lasting), At(0.6));
  store.Decide(Request("new", Algorithm::kFixedWindow, lasting), At(0.7));
  // "brief" is the least recently used too, so touch it last to make "old" the LRU.
  store.Decide(Request("brief", Algorithm::kFixedWindow, brief, 0), At(0.8));
  // At 5 s "brief" has expired: it goes, not "old" (the least recently used).
  EXPECT_TRUE(store.Decide(Request("fresh", Algorithm::kFixedWindow, lasting), At(5)).allowed);
  const MemoryStore::Stats stats = store.GetStats();
  EXPECT_EQ(stats.expired, 1u);
  EXPECT_EQ(stats.evicted, 0u);
  EXPECT_FALSE(store.Decide(Request("old", Algorithm::kFixedWindow, lasting), At(5)).allowed);
}

TEST(MemoryStore, ExpiredStateIsReclaimedInPassingWithoutAFullStore) {
  MemoryStore store({.max_keys = 10'000, .shards = 1});
  const Limit limit = Limit::PerPeriod(1, seconds(1));
  for (int i = 0; i < 1000; ++i) {
    store.Decide(Request("k" + std::to_string(i), Algorithm::kGcra, limit), At(10));
  }
  EXPECT_EQ(store.GetStats().keys, 1000u);
  // Later calls each reclaim a few due entries: no call does all the work.
  for (int i = 0; i < 300; ++i) {
    store.Decide(Request("other", Algorithm::kGcra, limit, 0), At(20 + i * 0.001));
  }
  const MemoryStore::Stats stats = store.GetStats();
  EXPECT_GT(stats.expired, 900u);
  EXPECT_LT(stats.keys, 100u);
  EXPECT_EQ(stats.evicted, 0u);
}

TEST(MemoryStore, ReclaimedStateBehavesAsEmpty) {
  MemoryStore store({.max_keys = 1, .shards = 1});
  const Limit limit = Limit::PerPeriod(2, seconds(1));
  EXPECT_TRUE(store.Decide(Request("a", Algorithm::kTokenBucket, limit, 2), At(1)).allowed);
  EXPECT_FALSE(store.Decide(Request("a", Algorithm::kTokenBucket, limit, 1), At(1)).allowed);
  // Whole again at 2 s; another key takes the only slot by reclaiming it, not by
  // evicting live state.
  EXPECT_TRUE(store.Decide(Request("b", Algorithm::kTokenBucket, limit), At(3)).allowed);
  EXPECT_EQ(store.GetStats().evicted, 0u);
  EXPECT_EQ(store.Decide(Request("a", Algorithm::kTokenBucket, limit, 0), At(3)).remaining, 2u);
}

TEST(MemoryStore, SlidingWindowLogKeepsNewestEntriesWhenTheLimitChanges) {
  MemoryStore store({.max_keys = 10});
  const Limit five = Limit::PerPeriod(5, seconds(10));
  const Limit two = Limit::PerPeriod(2, seconds(10));
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(store.Decide(Request("k", Algorithm::kSlidingWindowLog, five), At(i)).allowed);
  }
  // Down to 2: the two newest (3 s and 4 s) stay, so the log is full until 13 s.
  Decision d = store.Decide(Request("k", Algorithm::kSlidingWindowLog, two), At(5));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, seconds(8));
  d = store.Decide(Request("k", Algorithm::kSlidingWindowLog, five), At(5));
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 2u);
}

TEST(MemoryStore, ManyKeysWithChurnStayWithinTheBound) {
  MemoryStore store({.max_keys = 512, .shards = 4});
  const Limit limit = Limit::PerPeriod(3, seconds(2));
  for (int i = 0; i < 20'000; ++i) {
    const Algorithm a = kAllAlgorithms[i % 6];
    store.Decide(Request("key-" + std::to_string(i % 2000), a, limit), At(i * 0.001));
    ASSERT_LE(store.GetStats().keys, 512u);
  }
  EXPECT_GT(store.GetStats().evicted + store.GetStats().expired, 0u);
}

}  // namespace
}  // namespace sluice::store

namespace sluice::store {
namespace {

StoreRequest Req(std::string_view key, Algorithm a, Limit l, uint64_t cost = 1) {
  return StoreRequest{.key = key, .algorithm = a, .limit = l, .cost = cost};
}
Timestamp Sec(double s) { return FromNanos(static_cast<int64_t>(s * 1e9)); }

TEST(MemoryStore, ALateClockReadingDoesNotCutTheExpiryShort) {
  MemoryStore store({.max_keys = 10, .shards = 1});
  const Limit limit = Limit::PerPeriod(2, std::chrono::seconds(10));
  EXPECT_TRUE(store.Decide(Req("k", Algorithm::kTokenBucket, limit), Sec(100)).allowed);
  // A reading from before the last one (another thread's, queued on the lock).
  EXPECT_TRUE(store.Decide(Req("k", Algorithm::kTokenBucket, limit), Sec(95)).allowed);
  // At 105.5 s only one token (refilled from 100 s) is back; the state must still be
  // there, so a request of cost 2 is denied.
  for (int i = 0; i < 50; ++i) store.Decide(Req("other", Algorithm::kGcra, limit, 0), Sec(105));
  EXPECT_FALSE(store.Decide(Req("k", Algorithm::kTokenBucket, limit, 2), Sec(105.5)).allowed);
}

TEST(MemoryStore, LimitsHoldAtTimesPastTwoToThe32Seconds) {
  MemoryStore store({.max_keys = 10, .shards = 1});
  const Limit limit = Limit::PerPeriod(1, std::chrono::seconds(10));
  // 146 years of nanoseconds, at the start of a 10 s window.
  const int64_t late = (int64_t{1} << 62) / 10'000'000'000 * 10'000'000'000;
  EXPECT_TRUE(store.Decide(Req("k", Algorithm::kFixedWindow, limit), FromNanos(late)).allowed);
  for (int i = 1; i < 5; ++i) {
    EXPECT_FALSE(
        store
            .Decide(Req("k", Algorithm::kFixedWindow, limit), FromNanos(late + i * 1'000'000'000LL))
            .allowed);
  }
}

TEST(MemoryStore, SlidingWindowLogQueriesAndImpossibleCostsCreateNoEntry) {
  MemoryStore store({.max_keys = 2, .shards = 1});
  const Limit limit = Limit::PerPeriod(5, std::chrono::seconds(10));
  EXPECT_TRUE(store.Decide(Req("a", Algorithm::kSlidingWindowLog, limit), Sec(1)).allowed);
  EXPECT_TRUE(store.Decide(Req("b", Algorithm::kSlidingWindowLog, limit), Sec(1)).allowed);
  EXPECT_TRUE(store.Decide(Req("c", Algorithm::kSlidingWindowLog, limit, 0), Sec(1)).allowed);
  EXPECT_FALSE(store.Decide(Req("d", Algorithm::kSlidingWindowLog, limit, 6), Sec(1)).allowed);
  EXPECT_EQ(store.GetStats().keys, 2u);
  EXPECT_EQ(store.GetStats().evicted, 0u);
}

TEST(MemoryStore, ABriefZeroLimitKeepsTheSlidingWindowLog) {
  MemoryStore store({.max_keys = 10});
  const Limit five = Limit::PerPeriod(5, std::chrono::seconds(10));
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(store.Decide(Req("k", Algorithm::kSlidingWindowLog, five), Sec(1)).allowed);
  }
  EXPECT_FALSE(store
                   .Decide(Req("k", Algorithm::kSlidingWindowLog,
                               Limit::PerPeriod(0, std::chrono::seconds(10))),
                           Sec(2))
                   .allowed);
  EXPECT_FALSE(store.Decide(Req("k", Algorithm::kSlidingWindowLog, five), Sec(3)).allowed);
}

TEST(MemoryStore, ShardsShareMaxKeysExactly) {
  MemoryStore store({.max_keys = 100, .shards = 64});
  const Limit limit = Limit::PerPeriod(1, std::chrono::seconds(100));
  for (int i = 0; i < 1000; ++i) {
    store.Decide(Req("k" + std::to_string(i), Algorithm::kFixedWindow, limit), Sec(1));
  }
  EXPECT_EQ(store.GetStats().keys, 100u);
}

TEST(MemoryStore, ABucketPolicyChangeStartsAfreshAndWindowCountsCarryOver) {
  MemoryStore store({.max_keys = 10});
  const Limit before = Limit::PerPeriod(2, std::chrono::seconds(10));
  const Limit after = Limit::PerPeriod(3, std::chrono::seconds(10));
  for (Algorithm a : {Algorithm::kTokenBucket, Algorithm::kLeakyBucket, Algorithm::kGcra}) {
    EXPECT_TRUE(store.Decide(Req("k", a, before, 2), Sec(1)).allowed);
    // Token units depend on the policy; a new policy is a new state, not a misread one.
    EXPECT_EQ(store.Decide(Req("k", a, after, 0), Sec(1)).remaining, 3u) << AlgorithmName(a);
  }
  EXPECT_TRUE(store.Decide(Req("k", Algorithm::kFixedWindow, before, 2), Sec(1)).allowed);
  EXPECT_EQ(store.Decide(Req("k", Algorithm::kFixedWindow, after, 0), Sec(1)).remaining, 1u);
}

}  // namespace
}  // namespace sluice::store
