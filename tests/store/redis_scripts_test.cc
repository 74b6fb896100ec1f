// Differential test: the Lua scripts in a real redis-server against the C++ algorithms,
// on the same random traces of (key, cost, time), every Decision field compared.
// The scripts count whole microseconds; the C++ algorithms do not care about the unit,
// so they are fed the same microsecond values as if they were nanoseconds.
#include "store/redis_scripts.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "core/algorithms.h"
#include "redis/redis_process.h"

namespace sluice::store {
namespace {

using testing::RedisClient;
using testing::RedisProcess;
using testing::RedisReply;

struct Reference {
  Algorithm algorithm;
  core::FixedWindowState fixed;
  core::SlidingWindowCounterState sliding;
  core::TokenBucketState token;
  core::LeakyBucketState leaky;
  core::GcraState gcra;
  core::SlidingWindowLogState log;
  std::vector<int64_t> ring;
  Decision Decide(const Limit& limit, int64_t now_us, uint64_t cost) {
    const Timestamp now = FromNanos(now_us);  // microseconds as the unit
    switch (algorithm) {
      case Algorithm::kFixedWindow:
        return core::DecideFixedWindow(limit, fixed, now, cost);
      case Algorithm::kSlidingWindowCounter:
        return core::DecideSlidingWindowCounter(limit, sliding, now, cost);
      case Algorithm::kTokenBucket:
        return core::DecideTokenBucket(limit, token, now, cost);
      case Algorithm::kLeakyBucket:
        return core::DecideLeakyBucket(limit, leaky, now, cost);
      case Algorithm::kGcra:
        return core::DecideGcra(limit, gcra, now, cost);
      case Algorithm::kSlidingWindowLog:
        // The C++ log keeps one slot per unit of the limit, in a ring the caller owns.
        if (ring.size() != std::max<uint64_t>(limit.limit, 1)) {
          ring.assign(std::max<uint64_t>(limit.limit, 1), 0);
        }
        return core::DecideSlidingWindowLog(limit, log, ring, now, cost);
      default:
        ADD_FAILURE() << "no reference for " << AlgorithmName(algorithm);
        return {};
    }
  }
};

int64_t Micros(Duration d) {
  return d == Decision::kNever ? -1 : std::chrono::nanoseconds(d).count();
}

class RedisScriptTest : public ::testing::TestWithParam<Algorithm> {
 protected:
  static void SetUpTestSuite() {
    redis_ = new RedisProcess();
    ASSERT_TRUE(redis_->Start()) << "redis-server did not start";
  }
  static void TearDownTestSuite() {
    delete redis_;
    redis_ = nullptr;
  }
  static RedisProcess* redis_;
};
RedisProcess* RedisScriptTest::redis_ = nullptr;

TEST_P(RedisScriptTest, EveryDecisionMatchesTheCppAlgorithm) {
  const Algorithm algorithm = GetParam();
  const std::string script(RedisScript(algorithm));
  RedisClient client(redis_->port());
  ASSERT_TRUE(client.connected()) << client.error();
  const RedisReply loaded = client.Command("SCRIPT", "LOAD", script);
  ASSERT_FALSE(loaded.is_error()) << loaded.ToString();
  const std::string sha = loaded.text;

  std::mt19937_64 random(static_cast<uint64_t>(algorithm) * 7919 + 1);
  int compared = 0;
  for (int trace = 0; trace < 40; ++trace) {
    // A policy per trace: small and large limits, periods from 1 ms to a day.
    const uint64_t limits[] = {0, 1, 2, 3, 5, 10, 100, 1000, 100000};
    const int64_t periods_us[] = {1000, 250'000, 1'000'000, 60'000'000, 86'400'000'000};
    uint64_t l = 0, b = 0;
    int64_t period_us = 0;
    Limit limit;
    do {  // policies within the scripts' exact range (FitsRedisArithmetic)
      l = limits[random() % std::size(limits)];
      period_us = periods_us[random() % std::size(periods_us)];
      // Bucket algorithms get a burst of their own: smaller, equal or larger.
      b = !UsesBurst(algorithm) ? l : std::max<uint64_t>(1, l / 2 + random() % (l + 2));
      limit = Limit{l, std::chrono::microseconds(period_us), b};
    } while (!FitsRedisArithmetic(limit));
    limit.period = Duration(period_us);  // microseconds as the unit, for the C++ side
    Reference reference{algorithm};
    const std::string key =
        "t:" + std::to_string(static_cast<int>(algorithm)) + ":" + std::to_string(trace);
    // Times near today's clock (about 1.8e15 us), moving by steps from 0 to 2 periods,
    // sometimes backwards (which must count as no time passing).
    int64_t now_us = 1'800'000'000'000'000 + static_cast<int64_t>(random() % 1'000'000'000);
    for (int step = 0; step < 150; ++step) {
      const uint64_t r = random() % 100;
      if (r < 5) {
        now_us -= static_cast<int64_t>(random() % 1000);
      } else if (r < 60) {
        now_us += static_cast<int64_t>(random() % std::max<int64_t>(1, period_us / 8));
      } else if (r < 95) {
        now_us += static_cast<int64_t>(random() % (2 * period_us + 1));
      }
      const uint64_t capacity = std::max(l, b);
      const uint64_t cost = random() % 10 == 0 ? capacity + 1 : random() % (capacity + 1);
      const Decision want = reference.Decide(limit, now_us, cost);
      const RedisReply got = client.Command("EVALSHA", sha, 1, key, l, period_us, b, cost, now_us);
      ASSERT_EQ(got.elements.size(), 5u) << got.ToString();
      const std::string where = "trace " + std::to_string(trace) + " step " + std::to_string(step) +
                                " limit " + std::to_string(l) + " period_us " +
                                std::to_string(period_us) + " cost " + std::to_string(cost) +
                                " now_us " + std::to_string(now_us);
      ASSERT_EQ(got.elements[0].integer, want.allowed ? 1 : 0) << where;
      ASSERT_EQ(static_cast<uint64_t>(got.elements[1].integer), want.limit) << where;
      ASSERT_EQ(static_cast<uint64_t>(got.elements[2].integer), want.remaining) << where;
      ASSERT_EQ(got.elements[3].integer, Micros(want.reset_after)) << where;
      ASSERT_EQ(got.elements[4].integer, Micros(want.retry_after)) << where;
      ++compared;
    }
  }
  EXPECT_EQ(compared, 40 * 150);
}

// With the server's clock, a key lives only while its state differs from an empty one.
TEST_P(RedisScriptTest, RealTimeKeysExpireWhenTheirStateIsWhole) {
  const std::string script(RedisScript(GetParam()));
  RedisClient client(redis_->port());
  const std::string key = "ttl:" + std::to_string(static_cast<int>(GetParam()));
  const RedisReply got = client.Command("EVAL", script, 1, key, 5, 60'000'000, 5, 1, "");
  ASSERT_EQ(got.elements.size(), 5u) << got.ToString();
  EXPECT_EQ(got.elements[0].integer, 1);
  const RedisReply ttl = client.Command("PTTL", key);
  EXPECT_GT(ttl.integer, 0);
  EXPECT_LE(ttl.integer, 2 * 60'000 + 2);  // at most two windows (sliding counter)
  // A query (cost 0) on a fresh key leaves nothing behind.
  client.Command("EVAL", script, 1, key + ":q", 5, 60'000'000, 5, 0, "");
  EXPECT_EQ(client.Command("EXISTS", key + ":q").integer, 0);
}

TEST(RedisArithmeticTest, PoliciesPastTheExactRangeAreRefused) {
  using std::chrono::hours;
  using std::chrono::nanoseconds;
  EXPECT_TRUE(FitsRedisArithmetic(Limit{26'000, hours(24), 26'000}));   // 2.246e15 < 2^51
  EXPECT_FALSE(FitsRedisArithmetic(Limit{27'000, hours(24), 27'000}));  // 2.333e15 > 2^51
  EXPECT_TRUE(FitsRedisArithmetic(Limit{600'000, hours(1), 600'000}));  // 2.16e15
  EXPECT_FALSE(FitsRedisArithmetic(Limit{10, hours(24), 1'000'000}));   // the burst counts
  EXPECT_FALSE(FitsRedisArithmetic(Limit{10, nanoseconds(1500), 10}));  // not whole us
  EXPECT_TRUE(FitsRedisArithmetic(Limit{0, hours(24), 0}));
}

INSTANTIATE_TEST_SUITE_P(Scripts, RedisScriptTest,
                         ::testing::Values(Algorithm::kTokenBucket, Algorithm::kLeakyBucket,
                                           Algorithm::kFixedWindow,
                                           Algorithm::kSlidingWindowCounter, Algorithm::kGcra,
                                           Algorithm::kSlidingWindowLog),
                         [](const auto& info) { return std::string(AlgorithmName(info.param)); });

}  // namespace
}  // namespace sluice::store
