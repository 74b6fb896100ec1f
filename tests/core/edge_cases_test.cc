// The edge cases the algorithms define, for all six at once.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "core/algorithm_subject.h"
#include "core/algorithms.h"

namespace sluice::core {
namespace {

using std::chrono::seconds;

using testing::Subject;

class EdgeCaseTest : public ::testing::TestWithParam<Algorithm> {};

TEST_P(EdgeCaseTest, FirstRequestOnEmptyStateSeesTheWholeQuota) {
  const Limit limit = Limit::PerPeriod(5, seconds(1));
  for (int64_t now : {int64_t{0}, int64_t{123'456'789}, int64_t{1} << 60}) {
    Subject s(GetParam(), limit);
    const Decision d = s.Decide(now, 1);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.limit, 5u);
    EXPECT_EQ(d.remaining, 4u);
    EXPECT_EQ(d.retry_after, Duration(0));
    EXPECT_GT(d.reset_after, Duration(0));
  }
}

TEST_P(EdgeCaseTest, ZeroCostIsAQueryThatTakesNothing) {
  Subject s(GetParam(), Limit::PerPeriod(2, seconds(1)));
  EXPECT_EQ(s.Decide(10, 0).remaining, 2u);
  EXPECT_EQ(s.Decide(10, 0).reset_after, Duration(0));
  EXPECT_TRUE(s.Decide(10, 2).allowed);
  const Decision d = s.Decide(10, 0);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 0u);
}

TEST_P(EdgeCaseTest, CostLargerThanCapacityIsDeniedForeverAndTakesNothing) {
  Subject s(GetParam(), Limit::PerPeriod(3, seconds(1)));
  const Decision d = s.Decide(0, 4);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, Decision::kNever);
  EXPECT_EQ(d.remaining, 3u);
  EXPECT_TRUE(s.Decide(0, 3).allowed);
}

TEST_P(EdgeCaseTest, ZeroLimitAlwaysDenies) {
  Subject s(GetParam(), Limit{.limit = 0, .period = seconds(1), .burst = 0});
  for (int64_t now : {int64_t{0}, int64_t{1'000'000'000'000}}) {
    for (uint64_t cost : {0u, 1u, 2u}) {
      const Decision d = s.Decide(now, cost);
      EXPECT_FALSE(d.allowed);
      EXPECT_EQ(d.remaining, 0u);
      EXPECT_EQ(d.retry_after, Decision::kNever);
    }
  }
}

TEST_P(EdgeCaseTest, ClockGoingBackwardsCountsAsNoTimePassing) {
  const Limit limit = Limit::PerPeriod(2, seconds(1));
  Subject s(GetParam(), limit), reference(GetParam(), limit);
  const int64_t t = 5'500'000'000;
  s.Decide(t, 2);
  reference.Decide(t, 2);
  // Ten seconds back: the same answer as at t itself, and no quota comes back.
  const Decision back = s.Decide(t - 10'000'000'000, 1);
  EXPECT_EQ(back, reference.Decide(t, 1));
  EXPECT_FALSE(back.allowed);
  // Time then resumes from t, not from the earlier reading.
  EXPECT_EQ(s.Decide(t + 300'000'000, 0), reference.Decide(t + 300'000'000, 0));
}

TEST_P(EdgeCaseTest, HugeLimitsPeriodsAndTimesDoNotOverflow) {
  const int64_t huge_period = std::numeric_limits<int64_t>::max() / 2;
  const uint64_t huge = GetParam() == Algorithm::kSlidingWindowLog ? kMaxLogLimit : kMaxQuantity;
  const Limit limit{.limit = huge, .period = Duration(huge_period), .burst = huge};
  Subject s(GetParam(), limit);
  const int64_t late = std::numeric_limits<int64_t>::max() - 10;
  Decision d = s.Decide(late - 5, huge / 2);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, huge - huge / 2);
  EXPECT_GT(d.reset_after, Duration(0));
  EXPECT_LT(d.reset_after, Decision::kNever);
  d = s.Decide(late, huge);
  EXPECT_FALSE(d.allowed);
  EXPECT_GT(d.retry_after, Duration(0));
  EXPECT_LT(d.retry_after, Decision::kNever);
  EXPECT_FALSE(s.Decide(late, huge + 1).allowed);
  EXPECT_EQ(s.Decide(late, huge + 1).retry_after, Decision::kNever);
}

TEST_P(EdgeCaseTest, OneNanosecondPeriodRefillsEveryNanosecond) {
  Subject s(GetParam(), Limit::PerPeriod(1, Duration(1)));
  // The sliding window counter weighs the previous window fully at the first instant
  // of a window, so at one request per period it admits every other period.
  const int64_t step = GetParam() == Algorithm::kSlidingWindowCounter ? 2 : 1;
  for (int64_t t = 0; t < 100; t += step) {
    EXPECT_TRUE(s.Decide(t, 1).allowed) << t;
    EXPECT_FALSE(s.Decide(t, 1).allowed) << t;
  }
}

INSTANTIATE_TEST_SUITE_P(AllAlgorithms, EdgeCaseTest, ::testing::ValuesIn(kAllAlgorithms),
                         [](const auto& info) { return std::string(AlgorithmName(info.param)); });

// Window boundaries: windows are [k*period, (k+1)*period) on the clock's epoch.
TEST(WindowBoundary, FixedWindowResetsExactlyAtTheBoundary) {
  const Limit limit = Limit::PerPeriod(1, seconds(1));
  FixedWindowState s;
  EXPECT_TRUE(DecideFixedWindow(limit, s, FromNanos(999'999'999), 1).allowed);
  const Decision d = DecideFixedWindow(limit, s, FromNanos(999'999'999), 1);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, Duration(1));
  EXPECT_TRUE(DecideFixedWindow(limit, s, FromNanos(1'000'000'000), 1).allowed);
}

TEST(WindowBoundary, SlidingWindowCounterCarriesOnlyTheAdjacentWindow) {
  const Limit limit = Limit::PerPeriod(4, seconds(1));
  SlidingWindowCounterState s;
  EXPECT_TRUE(DecideSlidingWindowCounter(limit, s, FromNanos(0), 4).allowed);
  // At the start of the next window the previous 4 weigh fully.
  EXPECT_FALSE(DecideSlidingWindowCounter(limit, s, FromNanos(1'000'000'000), 1).allowed);
  // Two windows later nothing is carried.
  EXPECT_EQ(DecideSlidingWindowCounter(limit, s, FromNanos(2'000'000'000), 0).remaining, 4u);
}

TEST(WindowBoundary, SlidingWindowLogEntryLeavesExactlyOnePeriodLater) {
  const Limit limit = Limit::PerPeriod(1, seconds(1));
  SlidingWindowLogState s;
  std::vector<int64_t> ring(1);
  EXPECT_TRUE(DecideSlidingWindowLog(limit, s, ring, FromNanos(7), 1).allowed);
  EXPECT_FALSE(DecideSlidingWindowLog(limit, s, ring, FromNanos(1'000'000'006), 1).allowed);
  EXPECT_TRUE(DecideSlidingWindowLog(limit, s, ring, FromNanos(1'000'000'007), 1).allowed);
}

TEST(AlgorithmNames, RoundTrip) {
  for (Algorithm a : kAllAlgorithms) EXPECT_EQ(ParseAlgorithm(AlgorithmName(a)), a);
  EXPECT_EQ(ParseAlgorithm("token-bucket"), std::nullopt);
}

}  // namespace
}  // namespace sluice::core

namespace sluice::core {
namespace {

TEST(EdgeCase, TheLastRepresentableInstantIsSafeForAll) {
  for (Algorithm a : kAllAlgorithms) {
    const Limit limit = Limit::PerPeriod(3, std::chrono::seconds(1));
    CompactState state;
    SlidingWindowLogState log;
    std::vector<int64_t> ring(3);
    const Timestamp end = Timestamp::max();
    for (int i = 0; i < 4; ++i) {
      const Decision d = a == Algorithm::kSlidingWindowLog
                             ? DecideSlidingWindowLog(limit, log, ring, end, 1)
                             : DecideCompact(a, limit, state, end, 1);
      EXPECT_EQ(d.allowed, i < 3) << AlgorithmName(a) << " " << i;
    }
  }
}

}  // namespace
}  // namespace sluice::core
