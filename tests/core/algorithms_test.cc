// Every algorithm against its reference model on long randomized traces, plus the
// worked examples of docs/algorithms.md.
#include "core/algorithms.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "core/algorithm_subject.h"
#include "core/reference_models.h"

namespace sluice::core {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::ModelLimiter;

using testing::Subject;

std::string Describe(const Decision& d) {
  return "allowed=" + std::to_string(d.allowed) + " limit=" + std::to_string(d.limit) +
         " remaining=" + std::to_string(d.remaining) +
         " reset_after=" + std::to_string(d.reset_after.count()) +
         " retry_after=" + std::to_string(d.retry_after.count());
}

struct TraceCase {
  Algorithm algorithm;
  uint32_t seed;
};

class TraceTest : public ::testing::TestWithParam<TraceCase> {};

// Thousands of steps with varied limits, costs (including 0 and more than the
// capacity) and gaps (including none, huge ones and negative ones), every Decision
// compared field by field with the model.
TEST_P(TraceTest, EveryDecisionMatchesTheReferenceModel) {
  const auto [algorithm, seed] = GetParam();
  std::mt19937_64 rng(seed);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const int64_t periods[] = {1, 7, 1000, 999'983, 1'000'000'000, 60'000'000'000};
  constexpr int kPolicies = 8;
  constexpr int kSteps = 1500;
  int allowed = 0, denied = 0;
  for (int policy = 0; policy < kPolicies; ++policy) {
    Limit limit;
    limit.limit = static_cast<uint64_t>(uniform(1, 40));
    limit.period = Duration(periods[uniform(0, std::size(periods) - 1)]);
    limit.burst = uniform(0, 1) ? limit.limit : static_cast<uint64_t>(uniform(1, 3 * 40));
    const uint64_t capacity = Capacity(algorithm, limit);
    Subject subject(algorithm, limit);
    ModelLimiter model(algorithm, limit);
    const int64_t interval = std::max<int64_t>(1, limit.period.count() / limit.limit);
    int64_t now = uniform(0, 5 * limit.period.count());
    for (int step = 0; step < kSteps; ++step) {
      const int64_t gap_kind = uniform(0, 99);
      if (gap_kind < 20) {
        // same instant
      } else if (gap_kind < 70) {
        now += uniform(1, 2 * interval);
      } else if (gap_kind < 85) {
        now += uniform(1, 3 * limit.period.count());
      } else if (gap_kind < 90) {
        now += uniform(1, 1000) * limit.period.count();
      } else {
        now = std::max<int64_t>(0, now - uniform(1, limit.period.count()));  // clock jumps back
      }
      const int64_t cost_kind = uniform(0, 99);
      const uint64_t cost = cost_kind < 5    ? 0
                            : cost_kind < 65 ? 1
                            : cost_kind < 90 ? uniform(1, capacity)
                                             : capacity + uniform(1, 3);
      const Decision want = model.Decide(now, cost);
      const Decision got = subject.Decide(now, cost);
      ASSERT_EQ(got, want) << AlgorithmName(algorithm) << " seed=" << seed << " policy=" << policy
                           << " step=" << step << " now=" << now << " cost=" << cost
                           << " limit=" << limit.limit << " period=" << limit.period.count()
                           << " burst=" << limit.burst << "\n got:  " << Describe(got)
                           << "\n want: " << Describe(want);
      (got.allowed ? allowed : denied)++;
    }
  }
  // A trace that only ever allows (or only denies) would prove little.
  EXPECT_GT(allowed, kPolicies * kSteps / 10);
  EXPECT_GT(denied, kPolicies * kSteps / 10);
}

std::vector<TraceCase> AllTraceCases() {
  std::vector<TraceCase> cases;
  for (Algorithm a : kAllAlgorithms) {
    for (uint32_t seed : {1u, 2u, 3u, 20261122u}) cases.push_back({a, seed});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllAlgorithms, TraceTest, ::testing::ValuesIn(AllTraceCases()),
                         [](const auto& info) {
                           return std::string(AlgorithmName(info.param.algorithm)) + "_seed" +
                                  std::to_string(info.param.seed);
                         });

// Token bucket, leaky bucket (meter) and GCRA are three statements of one policy; on
// the same trace they must agree on every decision.
TEST(BucketEquivalence, TokenLeakyAndGcraAgreeOnRandomTraces) {
  std::mt19937_64 rng(7);
  const Limit limit{.limit = 7, .period = milliseconds(700), .burst = 11};
  Subject token(Algorithm::kTokenBucket, limit), leaky(Algorithm::kLeakyBucket, limit),
      gcra(Algorithm::kGcra, limit);
  int64_t now = 0;
  for (int i = 0; i < 20000; ++i) {
    now += static_cast<int64_t>(rng() % 200'000'000);
    const uint64_t cost = rng() % 4;
    const Decision a = token.Decide(now, cost);
    ASSERT_EQ(a, leaky.Decide(now, cost)) << "step " << i;
    ASSERT_EQ(a, gcra.Decide(now, cost)) << "step " << i;
  }
}

// The worked examples in docs/algorithms.md, step by step.
TEST(WorkedExample, TokenBucket) {
  const Limit limit{.limit = 10, .period = seconds(1), .burst = 5};
  TokenBucketState s;
  Decision d;
  for (int i = 0; i < 5; ++i) d = DecideTokenBucket(limit, s, FromNanos(0), 1);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 0u);
  EXPECT_EQ(d.reset_after, milliseconds(500));  // 5 tokens at 10/s
  d = DecideTokenBucket(limit, s, FromNanos(0), 1);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, milliseconds(100));
  d = DecideTokenBucket(limit, s, FromNanos(250'000'000), 2);  // 2.5 tokens back
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 0u);  // 0.5 left
  d = DecideTokenBucket(limit, s, FromNanos(250'000'000), 1);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, milliseconds(50));
}

TEST(WorkedExample, FixedWindow) {
  const Limit limit = Limit::PerPeriod(3, seconds(1));
  FixedWindowState s;
  const auto at = [](int64_t ms) { return FromNanos(ms * 1'000'000); };
  EXPECT_TRUE(DecideFixedWindow(limit, s, at(100), 1).allowed);
  EXPECT_TRUE(DecideFixedWindow(limit, s, at(900), 2).allowed);
  Decision d = DecideFixedWindow(limit, s, at(950), 1);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, milliseconds(50));
  // The boundary: 3 more pass right after it, 6 within 150 ms (the known 2x burst).
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(DecideFixedWindow(limit, s, at(1000), 1).allowed);
  EXPECT_FALSE(DecideFixedWindow(limit, s, at(1000), 1).allowed);
}

TEST(WorkedExample, SlidingWindowCounter) {
  const Limit limit = Limit::PerPeriod(10, seconds(1));
  SlidingWindowCounterState s;
  const auto at = [](int64_t ms) { return FromNanos(ms * 1'000'000); };
  EXPECT_TRUE(DecideSlidingWindowCounter(limit, s, at(500), 8).allowed);
  // At 1.250 s the previous window's 8 weigh 8 * 0.75 = 6, so 4 more fit.
  Decision d = DecideSlidingWindowCounter(limit, s, at(1250), 4);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 0u);
  d = DecideSlidingWindowCounter(limit, s, at(1250), 1);
  EXPECT_FALSE(d.allowed);
  // 8 * (1000 - e) / 1000 + 4 + 1 <= 10  <=>  e >= 375 ms.
  EXPECT_EQ(d.retry_after, milliseconds(125));
  EXPECT_EQ(d.reset_after, milliseconds(1750));  // the 4 weigh until the end of 2 s
}

TEST(WorkedExample, SlidingWindowLog) {
  const Limit limit = Limit::PerPeriod(3, seconds(1));
  SlidingWindowLogState s;
  std::vector<int64_t> ring(3);
  const auto at = [](int64_t ms) { return FromNanos(ms * 1'000'000); };
  EXPECT_TRUE(DecideSlidingWindowLog(limit, s, ring, at(100), 1).allowed);
  EXPECT_TRUE(DecideSlidingWindowLog(limit, s, ring, at(900), 2).allowed);
  Decision d = DecideSlidingWindowLog(limit, s, ring, at(1050), 1);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, milliseconds(50));  // the entry of 0.1 s leaves at 1.1 s
  d = DecideSlidingWindowLog(limit, s, ring, at(1100), 1);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.reset_after, seconds(1));  // the newest entry leaves at 2.1 s
}

TEST(WorkedExample, GcraEmissionInterval) {
  const Limit limit{.limit = 10, .period = seconds(1), .burst = 5};  // T = 100 ms
  GcraState s;
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(DecideGcra(limit, s, FromNanos(0), 1).allowed);
  Decision d = DecideGcra(limit, s, FromNanos(0), 1);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, milliseconds(100));
  EXPECT_EQ(d.reset_after, milliseconds(500));
}

}  // namespace
}  // namespace sluice::core
