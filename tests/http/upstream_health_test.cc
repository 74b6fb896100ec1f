// http/upstream_health.h: the circuit breaker's and the health checks' state machines
// and the check schedule. Time is passed in as Timestamps on a simulated time line;
// nothing sleeps or reads a clock.
#include "http/upstream_health.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "http/balancer.h"
#include "sluice/clock.h"
#include "testing/allocation_counter.h"

namespace sluice::http {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

constexpr uint32_t kFailures = 3;
constexpr Duration kOpen = milliseconds(10'000);
constexpr Duration kInterval = milliseconds(2000);
const Timestamp kStart = FromNanos(1'000'000'000'000);  // any point of the time line

UpstreamHealthOptions BreakerOnly() {
  UpstreamHealthOptions options;
  options.circuit_consecutive_failures = kFailures;
  options.circuit_open = kOpen;
  return options;
}

UpstreamHealthOptions WithChecks(uint64_t seed = 1) {
  UpstreamHealthOptions options = BreakerOnly();
  options.active_checks = true;
  options.check_interval = kInterval;
  options.jitter_seed = seed;
  return options;
}

// Reports `count` failures to server i at `now`; returns the last transition.
CircuitTransition Fail(UpstreamHealth& health, size_t i, Timestamp now, uint32_t count) {
  CircuitTransition last = CircuitTransition::kNone;
  for (uint32_t n = 0; n < count; ++n) {
    if (!health.Eligible(i, now)) {
      ADD_FAILURE() << "server " << i << " ineligible before failure " << n;
      return last;
    }
    health.OnPicked(i, now);
    last = health.Report(i, AttemptOutcome::kFailure, now);
  }
  return last;
}

// Opens server i's breaker at `now` (from closed).
void OpenAt(UpstreamHealth& health, size_t i, Timestamp now) {
  ASSERT_EQ(Fail(health, i, now, kFailures), CircuitTransition::kOpened);
  ASSERT_EQ(health.circuit_state(i, now), CircuitState::kOpen);
}

// Reports `count` check results to server i at `now`; returns the last transition.
HealthTransition Checks(UpstreamHealth& health, size_t i, bool passed, Timestamp now,
                        uint32_t count) {
  HealthTransition last = HealthTransition::kNone;
  for (uint32_t n = 0; n < count; ++n) {
    health.StartCheck(i, now);
    last = health.ReportCheck(i, passed, now);
  }
  return last;
}

// --- Circuit breaker ------------------------------------------------------------------

TEST(UpstreamHealthBreaker, StartsClosedHealthyAndEligible) {
  UpstreamHealth health(3, BreakerOnly(), kStart);
  ASSERT_EQ(health.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(health.Eligible(i, kStart));
    EXPECT_TRUE(health.healthy(i));
    EXPECT_EQ(health.circuit_state(i, kStart), CircuitState::kClosed);
    EXPECT_FALSE(health.circuit_open(i, kStart));
    EXPECT_EQ(health.OnPicked(i, kStart), PickRole::kNormal);
  }
  EXPECT_TRUE(health.AnyEligible(kStart));
}

TEST(UpstreamHealthBreaker, OpensAfterExactlyConsecutiveFailures) {
  UpstreamHealth health(2, BreakerOnly(), kStart);
  EXPECT_EQ(Fail(health, 0, kStart, kFailures - 1), CircuitTransition::kNone);
  EXPECT_EQ(health.consecutive_failures(0), kFailures - 1);
  EXPECT_TRUE(health.Eligible(0, kStart));
  EXPECT_EQ(health.circuit_state(0, kStart), CircuitState::kClosed);

  health.OnPicked(0, kStart);
  EXPECT_EQ(health.Report(0, AttemptOutcome::kFailure, kStart), CircuitTransition::kOpened);
  EXPECT_EQ(health.circuit_state(0, kStart), CircuitState::kOpen);
  EXPECT_TRUE(health.circuit_open(0, kStart));
  EXPECT_FALSE(health.Eligible(0, kStart));
  EXPECT_EQ(health.consecutive_failures(0), 0u);
  // The other server is untouched.
  EXPECT_TRUE(health.Eligible(1, kStart));
  EXPECT_EQ(health.circuit_state(1, kStart), CircuitState::kClosed);
}

TEST(UpstreamHealthBreaker, SuccessWhileClosedResetsTheCount) {
  UpstreamHealth health(1, BreakerOnly(), kStart);
  Fail(health, 0, kStart, kFailures - 1);
  health.OnPicked(0, kStart);
  EXPECT_EQ(health.Report(0, AttemptOutcome::kSuccess, kStart), CircuitTransition::kNone);
  EXPECT_EQ(health.consecutive_failures(0), 0u);
  // Failures that are not consecutive never open it.
  for (int round = 0; round < 10; ++round) {
    EXPECT_EQ(Fail(health, 0, kStart, kFailures - 1), CircuitTransition::kNone);
    ASSERT_TRUE(health.Eligible(0, kStart)) << "round " << round;
    health.OnPicked(0, kStart);
    health.Report(0, AttemptOutcome::kSuccess, kStart);
  }
  EXPECT_EQ(health.circuit_state(0, kStart), CircuitState::kClosed);
  EXPECT_EQ(Fail(health, 0, kStart, kFailures), CircuitTransition::kOpened);
}

TEST(UpstreamHealthBreaker, AbandonedWhileClosedNeitherCountsNorResets) {
  UpstreamHealth health(1, BreakerOnly(), kStart);
  Fail(health, 0, kStart, kFailures - 1);
  for (int n = 0; n < 5; ++n) {
    health.OnPicked(0, kStart);
    EXPECT_EQ(health.Report(0, AttemptOutcome::kAbandoned, kStart), CircuitTransition::kNone);
  }
  EXPECT_EQ(health.consecutive_failures(0), kFailures - 1);
  EXPECT_EQ(Fail(health, 0, kStart, 1), CircuitTransition::kOpened);
}

TEST(UpstreamHealthBreaker, OpenUntilOpenMsThenHalfOpenExactlyAtTheBoundary) {
  UpstreamHealth health(1, BreakerOnly(), kStart);
  OpenAt(health, 0, kStart);
  const Timestamp boundary = kStart + kOpen;
  EXPECT_EQ(health.circuit_state(0, boundary - nanoseconds(1)), CircuitState::kOpen);
  EXPECT_FALSE(health.Eligible(0, boundary - nanoseconds(1)));
  EXPECT_FALSE(health.AnyEligible(boundary - nanoseconds(1)));
  EXPECT_EQ(health.circuit_state(0, boundary), CircuitState::kHalfOpen);
  EXPECT_TRUE(health.Eligible(0, boundary));
  EXPECT_TRUE(health.AnyEligible(boundary));
  // Half-open still counts as open for the gauge: only a probe goes through.
  EXPECT_TRUE(health.circuit_open(0, boundary));
}

TEST(UpstreamHealthBreaker, HalfOpenLetsExactlyOneProbeThrough) {
  UpstreamHealth health(1, BreakerOnly(), kStart);
  OpenAt(health, 0, kStart);
  const Timestamp t = kStart + kOpen;
  ASSERT_TRUE(health.Eligible(0, t));
  EXPECT_EQ(health.OnPicked(0, t), PickRole::kProbe);
  // The second pick, and every later one until the probe's outcome, sees it ineligible.
  EXPECT_FALSE(health.Eligible(0, t));
  EXPECT_FALSE(health.Eligible(0, t + kOpen / 2));
  EXPECT_FALSE(health.AnyEligible(t));
  EXPECT_EQ(health.circuit_state(0, t), CircuitState::kHalfOpen);
}

TEST(UpstreamHealthBreaker, TwoPicksThroughTheBalancerSendOneProbe) {
  UpstreamHealth health(2, BreakerOnly(), kStart);
  Balancer balancer(BalancePolicy::kRoundRobin, {{"a:1", 1}, {"b:1", 1}}, 7);
  OpenAt(health, 0, kStart);
  const Timestamp t = kStart + kOpen;
  std::vector<ServerStatus> statuses(2);
  std::vector<size_t> picked;
  std::vector<PickRole> roles;
  for (int n = 0; n < 4; ++n) {
    health.FillEligibility(t, statuses);
    const std::optional<size_t> i = balancer.Pick({statuses});
    ASSERT_TRUE(i.has_value());
    picked.push_back(*i);
    roles.push_back(health.OnPicked(*i, t));
  }
  EXPECT_EQ(std::count(picked.begin(), picked.end(), 0u), 1) << "one probe to server 0";
  EXPECT_EQ(std::count(roles.begin(), roles.end(), PickRole::kProbe), 1);
}

TEST(UpstreamHealthBreaker, ProbeSuccessCloses) {
  UpstreamHealth health(1, BreakerOnly(), kStart);
  OpenAt(health, 0, kStart);
  const Timestamp t = kStart + kOpen + milliseconds(5);
  ASSERT_TRUE(health.Eligible(0, t));
  ASSERT_EQ(health.OnPicked(0, t), PickRole::kProbe);
  EXPECT_EQ(health.Report(0, AttemptOutcome::kSuccess, t + milliseconds(1)),
            CircuitTransition::kClosed);
  const Timestamp after = t + milliseconds(1);
  EXPECT_EQ(health.circuit_state(0, after), CircuitState::kClosed);
  EXPECT_FALSE(health.circuit_open(0, after));
  for (int n = 0; n < 5; ++n) {
    EXPECT_TRUE(health.Eligible(0, after));
    EXPECT_EQ(health.OnPicked(0, after), PickRole::kNormal);
  }
  // Closed again from scratch: it takes the full count to open it once more.
  EXPECT_EQ(health.consecutive_failures(0), 0u);
  EXPECT_EQ(Fail(health, 0, after, kFailures - 1), CircuitTransition::kNone);
  EXPECT_EQ(Fail(health, 0, after, 1), CircuitTransition::kOpened);
}

TEST(UpstreamHealthBreaker, ProbeFailureReopensForAnotherOpenPeriod) {
  UpstreamHealth health(1, BreakerOnly(), kStart);
  OpenAt(health, 0, kStart);
  const Timestamp probe_at = kStart + kOpen;
  const Timestamp failed_at = probe_at + milliseconds(300);
  ASSERT_TRUE(health.Eligible(0, probe_at));
  ASSERT_EQ(health.OnPicked(0, probe_at), PickRole::kProbe);
  EXPECT_EQ(health.Report(0, AttemptOutcome::kFailure, failed_at), CircuitTransition::kReopened);
  EXPECT_EQ(health.circuit_state(0, failed_at), CircuitState::kOpen);
  // The new period counts from the failure, not from the first opening.
  EXPECT_FALSE(health.Eligible(0, failed_at + kOpen - nanoseconds(1)));
  EXPECT_EQ(health.circuit_state(0, failed_at + kOpen), CircuitState::kHalfOpen);
  ASSERT_TRUE(health.Eligible(0, failed_at + kOpen));
  EXPECT_EQ(health.OnPicked(0, failed_at + kOpen), PickRole::kProbe);
}

TEST(UpstreamHealthBreaker, ReportsWhileOpenNeitherExtendNorEndIt) {
  UpstreamHealth health(1, BreakerOnly(), kStart);
  OpenAt(health, 0, kStart);
  // Requests sent before it opened come back during the open period.
  const Timestamp late = kStart + kOpen / 2;
  EXPECT_EQ(health.Report(0, AttemptOutcome::kFailure, late), CircuitTransition::kNone);
  EXPECT_EQ(health.Report(0, AttemptOutcome::kSuccess, late), CircuitTransition::kNone);
  EXPECT_EQ(health.Report(0, AttemptOutcome::kFailure, late), CircuitTransition::kNone);
  EXPECT_EQ(health.circuit_state(0, late), CircuitState::kOpen);
  EXPECT_EQ(health.circuit_state(0, kStart + kOpen), CircuitState::kHalfOpen);
}

TEST(UpstreamHealthBreaker, FirstVerdictInHalfOpenDecidesEvenWithoutAProbe) {
  // A request sent before the breaker opened answers after the open period: it is
  // evidence about the server as good as the probe's.
  UpstreamHealth health(2, BreakerOnly(), kStart);
  OpenAt(health, 0, kStart);
  OpenAt(health, 1, kStart);
  const Timestamp t = kStart + kOpen;
  EXPECT_EQ(health.Report(0, AttemptOutcome::kSuccess, t), CircuitTransition::kClosed);
  EXPECT_EQ(health.Report(1, AttemptOutcome::kFailure, t), CircuitTransition::kReopened);
  EXPECT_EQ(health.circuit_state(0, t), CircuitState::kClosed);
  EXPECT_EQ(health.circuit_state(1, t), CircuitState::kOpen);
}

TEST(UpstreamHealthBreaker, AbandonedProbeGivesTheSlotBack) {
  UpstreamHealth health(1, BreakerOnly(), kStart);
  OpenAt(health, 0, kStart);
  const Timestamp t = kStart + kOpen;
  ASSERT_TRUE(health.Eligible(0, t));
  ASSERT_EQ(health.OnPicked(0, t), PickRole::kProbe);
  ASSERT_FALSE(health.Eligible(0, t));
  EXPECT_EQ(health.Report(0, AttemptOutcome::kAbandoned, t), CircuitTransition::kNone);
  EXPECT_EQ(health.circuit_state(0, t), CircuitState::kHalfOpen);
  ASSERT_TRUE(health.Eligible(0, t));
  EXPECT_EQ(health.OnPicked(0, t), PickRole::kProbe);
  EXPECT_FALSE(health.Eligible(0, t));
}

TEST(UpstreamHealthBreaker, ProbeWhoseReportNeverComesIsGivenBackAfterAnOpenPeriod) {
  UpstreamHealth health(1, BreakerOnly(), kStart);
  OpenAt(health, 0, kStart);
  const Timestamp probe_at = kStart + kOpen + milliseconds(7);
  ASSERT_TRUE(health.Eligible(0, probe_at));
  ASSERT_EQ(health.OnPicked(0, probe_at), PickRole::kProbe);
  EXPECT_FALSE(health.Eligible(0, probe_at + kOpen - nanoseconds(1)));
  ASSERT_TRUE(health.Eligible(0, probe_at + kOpen));
  EXPECT_EQ(health.OnPicked(0, probe_at + kOpen), PickRole::kProbe);
  EXPECT_FALSE(health.Eligible(0, probe_at + kOpen));
}

TEST(UpstreamHealthBreaker, OneFailureThresholdOpensOnTheFirstFailure) {
  UpstreamHealthOptions options = BreakerOnly();
  options.circuit_consecutive_failures = 1;
  UpstreamHealth health(1, options, kStart);
  EXPECT_EQ(Fail(health, 0, kStart, 1), CircuitTransition::kOpened);
  EXPECT_FALSE(health.Eligible(0, kStart));
}

TEST(UpstreamHealthBreaker, ClockBeforeTheOpeningKeepsItOpen) {
  UpstreamHealth health(1, BreakerOnly(), kStart);
  OpenAt(health, 0, kStart);
  EXPECT_EQ(health.circuit_state(0, kStart - milliseconds(1)), CircuitState::kOpen);
  EXPECT_FALSE(health.Eligible(0, kStart - kOpen * 2));
}

TEST(UpstreamHealthBreaker, ClassifiesOnlyGatewayFailuresAsFailures) {
  for (int status : {502, 503, 504}) {
    EXPECT_EQ(ClassifyUpstreamStatus(status), AttemptOutcome::kFailure) << status;
  }
  for (int status : {200, 204, 301, 304, 400, 404, 429, 500, 501, 505}) {
    EXPECT_EQ(ClassifyUpstreamStatus(status), AttemptOutcome::kSuccess) << status;
  }
}

TEST(UpstreamHealthBreaker, StateNames) {
  EXPECT_EQ(CircuitStateName(CircuitState::kClosed), "closed");
  EXPECT_EQ(CircuitStateName(CircuitState::kOpen), "open");
  EXPECT_EQ(CircuitStateName(CircuitState::kHalfOpen), "half_open");
}

// --- Active health checks -------------------------------------------------------------

TEST(UpstreamHealthChecks, DefaultThresholdsAreThreeDownTwoUp) {
  const UpstreamHealthOptions options;
  EXPECT_EQ(options.unhealthy_threshold, 3u);
  EXPECT_EQ(options.healthy_threshold, 2u);
  EXPECT_EQ(options.check_jitter_percent, 10u);
  EXPECT_FALSE(options.active_checks);
}

TEST(UpstreamHealthChecks, WithoutChecksEveryServerStaysUpAndNothingIsDue) {
  UpstreamHealth health(2, BreakerOnly(), kStart);
  EXPECT_FALSE(health.NextCheck().has_value());
  EXPECT_TRUE(health.healthy(0));
  EXPECT_TRUE(health.healthy(1));
}

TEST(UpstreamHealthChecks, StartsUpBeforeAnyCheck) {
  UpstreamHealth health(2, WithChecks(), kStart);
  EXPECT_TRUE(health.healthy(0));
  EXPECT_TRUE(health.Eligible(0, kStart));
  EXPECT_TRUE(health.Eligible(1, kStart));
}

TEST(UpstreamHealthChecks, MarkedDownAfterUnhealthyThresholdFailedChecks) {
  UpstreamHealth health(2, WithChecks(), kStart);
  EXPECT_EQ(Checks(health, 0, false, kStart, 2), HealthTransition::kNone);
  EXPECT_TRUE(health.healthy(0));
  EXPECT_TRUE(health.Eligible(0, kStart));
  EXPECT_EQ(Checks(health, 0, false, kStart, 1), HealthTransition::kMarkedDown);
  EXPECT_FALSE(health.healthy(0));
  EXPECT_FALSE(health.Eligible(0, kStart));
  // Further failures report nothing new.
  EXPECT_EQ(Checks(health, 0, false, kStart, 3), HealthTransition::kNone);
  EXPECT_TRUE(health.healthy(1));
}

TEST(UpstreamHealthChecks, PassedCheckResetsTheFailedCount) {
  UpstreamHealth health(1, WithChecks(), kStart);
  for (int round = 0; round < 5; ++round) {
    EXPECT_EQ(Checks(health, 0, false, kStart, 2), HealthTransition::kNone);
    EXPECT_EQ(Checks(health, 0, true, kStart, 1), HealthTransition::kNone);
  }
  EXPECT_TRUE(health.healthy(0));
}

TEST(UpstreamHealthChecks, MarkedUpAfterHealthyThresholdPassedChecks) {
  UpstreamHealth health(1, WithChecks(), kStart);
  ASSERT_EQ(Checks(health, 0, false, kStart, 3), HealthTransition::kMarkedDown);
  EXPECT_EQ(Checks(health, 0, true, kStart, 1), HealthTransition::kNone);
  EXPECT_FALSE(health.healthy(0));
  // A failure in between starts the count again.
  EXPECT_EQ(Checks(health, 0, false, kStart, 1), HealthTransition::kNone);
  EXPECT_EQ(Checks(health, 0, true, kStart, 1), HealthTransition::kNone);
  EXPECT_FALSE(health.healthy(0));
  EXPECT_EQ(Checks(health, 0, true, kStart, 1), HealthTransition::kMarkedUp);
  EXPECT_TRUE(health.healthy(0));
  EXPECT_TRUE(health.Eligible(0, kStart));
  // Down again takes the full unhealthy threshold once more.
  EXPECT_EQ(Checks(health, 0, false, kStart, 2), HealthTransition::kNone);
  EXPECT_EQ(Checks(health, 0, false, kStart, 1), HealthTransition::kMarkedDown);
}

TEST(UpstreamHealthChecks, ThresholdsOfOneFlipOnEachChange) {
  UpstreamHealthOptions options = WithChecks();
  options.unhealthy_threshold = 1;
  options.healthy_threshold = 1;
  UpstreamHealth health(1, options, kStart);
  EXPECT_EQ(Checks(health, 0, false, kStart, 1), HealthTransition::kMarkedDown);
  EXPECT_EQ(Checks(health, 0, true, kStart, 1), HealthTransition::kMarkedUp);
  EXPECT_EQ(Checks(health, 0, true, kStart, 1), HealthTransition::kNone);
}

TEST(UpstreamHealthChecks, FirstChecksFallInTheFirstIntervalAndComeInOrder) {
  constexpr size_t kServers = 8;
  UpstreamHealth health(kServers, WithChecks(42), kStart);
  std::vector<Timestamp> due;
  for (size_t i = 0; i < kServers; ++i) {
    EXPECT_GE(health.next_check_at(i), kStart);
    EXPECT_LT(health.next_check_at(i), kStart + kInterval);
    due.push_back(health.next_check_at(i));
  }
  // NextCheck offers the servers in due order, each once, while their checks are in
  // flight; then nothing.
  std::vector<Timestamp> offered;
  while (std::optional<UpstreamHealth::DueCheck> next = health.NextCheck()) {
    EXPECT_EQ(next->at, health.next_check_at(next->server));
    ASSERT_FALSE(health.check_in_flight(next->server)) << "offered while in flight";
    ASSERT_LT(offered.size(), kServers);
    offered.push_back(next->at);
    health.StartCheck(next->server, next->at);
    EXPECT_TRUE(health.check_in_flight(next->server));
  }
  std::sort(due.begin(), due.end());
  EXPECT_EQ(offered, due);
}

TEST(UpstreamHealthChecks, NextCheckCountsFromTheReportWithinTheJitter) {
  UpstreamHealth health(3, WithChecks(5), kStart);
  const Duration jitter = kInterval / 10;
  const Timestamp reported = kStart + milliseconds(12'345);
  health.StartCheck(1, kStart);
  health.ReportCheck(1, true, reported);
  EXPECT_FALSE(health.check_in_flight(1));
  EXPECT_GE(health.next_check_at(1), reported + kInterval);
  EXPECT_LT(health.next_check_at(1), reported + kInterval + jitter);
  // The other servers keep their first-interval slots and come before it.
  const std::optional<UpstreamHealth::DueCheck> next = health.NextCheck();
  ASSERT_TRUE(next.has_value());
  EXPECT_NE(next->server, 1u);
  EXPECT_LT(next->at, kStart + kInterval);
}

TEST(UpstreamHealthChecks, SlowCheckIsNotFollowedByAnotherAtOnce) {
  UpstreamHealth health(1, WithChecks(), kStart);
  const Timestamp due = health.next_check_at(0);
  health.StartCheck(0, due);
  const Timestamp answered = due + kInterval * 3;  // took three intervals
  health.ReportCheck(0, false, answered);
  EXPECT_GE(health.next_check_at(0), answered + kInterval);
}

TEST(UpstreamHealthChecks, JitterStaysWithinBoundsAndCoversThem) {
  UpstreamHealth health(4, WithChecks(99), kStart);
  const Duration bound = kInterval / 10;
  Duration low = Duration::max();
  Duration high = Duration::min();
  Timestamp now = kStart;
  for (int n = 0; n < 4000; ++n) {
    const size_t i = static_cast<size_t>(n) % 4;
    now += milliseconds(1);
    health.StartCheck(i, now);
    health.ReportCheck(i, n % 3 != 0, now);
    const Duration jitter = health.next_check_at(i) - (now + kInterval);
    ASSERT_GE(jitter, Duration::zero()) << n;
    ASSERT_LT(jitter, bound) << n;
    low = std::min(low, jitter);
    high = std::max(high, jitter);
  }
  // 1000 draws a server over [0, 200 ms): the extremes lie within 2% of the ends
  // unless the draws are stuck (a constant, or a range far narrower than the bound).
  EXPECT_LT(low, bound / 50);
  EXPECT_GT(high, bound - bound / 50);
}

TEST(UpstreamHealthChecks, JitterPercentFollowsTheOption) {
  UpstreamHealthOptions options = WithChecks();
  options.check_jitter_percent = 50;
  UpstreamHealth health(1, options, kStart);
  Duration high = Duration::zero();
  for (int n = 0; n < 500; ++n) {
    health.StartCheck(0, kStart);
    health.ReportCheck(0, true, kStart);
    const Duration jitter = health.next_check_at(0) - (kStart + kInterval);
    ASSERT_GE(jitter, Duration::zero());
    ASSERT_LT(jitter, kInterval / 2);
    high = std::max(high, jitter);
  }
  EXPECT_GT(high, kInterval / 10) << "more than the default 10% is used";
}

TEST(UpstreamHealthChecks, ZeroJitterPercentChecksExactlyEveryInterval) {
  UpstreamHealthOptions options = WithChecks();
  options.check_jitter_percent = 0;
  UpstreamHealth health(2, options, kStart);
  for (int n = 0; n < 20; ++n) {
    const Timestamp now = kStart + milliseconds(n * 100);
    health.StartCheck(0, now);
    health.ReportCheck(0, true, now);
    EXPECT_EQ(health.next_check_at(0), now + kInterval);
  }
}

// The schedule of server checks produced by one seed over many reports.
std::vector<Timestamp> Schedule(uint64_t seed) {
  constexpr size_t kServers = 4;
  UpstreamHealth health(kServers, WithChecks(seed), kStart);
  std::vector<Timestamp> schedule;
  for (size_t i = 0; i < kServers; ++i) schedule.push_back(health.next_check_at(i));
  for (int n = 0; n < 40; ++n) {
    const std::optional<UpstreamHealth::DueCheck> next = health.NextCheck();
    if (!next) {
      ADD_FAILURE() << "nothing due";
      break;
    }
    health.StartCheck(next->server, next->at);
    health.ReportCheck(next->server, n % 5 != 0, next->at + milliseconds(3));
    schedule.push_back(health.next_check_at(next->server));
  }
  return schedule;
}

TEST(UpstreamHealthChecks, ScheduleIsDeterministicPerSeedAndDiffersAcrossSeeds) {
  EXPECT_EQ(Schedule(1), Schedule(1));
  EXPECT_EQ(Schedule(12345), Schedule(12345));
  EXPECT_NE(Schedule(1), Schedule(2));
  // Adjacent seeds do not give shifted copies of one another's first checks.
  const std::vector<Timestamp> a = Schedule(1);
  const std::vector<Timestamp> b = Schedule(2);
  for (size_t i = 0; i < 4; ++i) {
    for (size_t j = 0; j < 4; ++j) EXPECT_NE(a[i], b[j]) << i << " " << j;
  }
}

TEST(UpstreamHealthChecks, ServersOfOneGroupGetDifferentPhases) {
  constexpr size_t kServers = 16;
  UpstreamHealth health(kServers, WithChecks(0), kStart);
  std::vector<Timestamp> first;
  for (size_t i = 0; i < kServers; ++i) first.push_back(health.next_check_at(i));
  std::sort(first.begin(), first.end());
  EXPECT_EQ(std::adjacent_find(first.begin(), first.end()), first.end());
  // Spread over the interval, not bunched in one part of it.
  EXPECT_GT(first.back() - first.front(), kInterval / 2);
}

TEST(UpstreamHealthChecks, ServersDrawIndependentStreamsNotShiftedCopies) {
  // Each server's draws as fractions of their bounds: the phase, then the jitters.
  constexpr size_t kServers = 4;
  constexpr int kReports = 12;
  UpstreamHealth health(kServers, WithChecks(3), kStart);
  const Duration bound = kInterval / 10;
  std::vector<std::vector<double>> draws(kServers);
  for (size_t i = 0; i < kServers; ++i) {
    draws[i].push_back(static_cast<double>((health.next_check_at(i) - kStart).count()) /
                       static_cast<double>(kInterval.count()));
  }
  for (int n = 0; n < kReports; ++n) {
    for (size_t i = 0; i < kServers; ++i) {
      health.StartCheck(i, kStart);
      health.ReportCheck(i, true, kStart);
      draws[i].push_back(
          static_cast<double>((health.next_check_at(i) - kStart - kInterval).count()) /
          static_cast<double>(bound.count()));
    }
  }
  // Server k's stream must not be server i's a few draws later (as it would be if each
  // server's generator started a fixed step further along one sequence).
  for (size_t i = 0; i < kServers; ++i) {
    for (size_t k = 0; k < kServers; ++k) {
      if (i == k) continue;
      for (size_t shift = 1; shift <= kServers; ++shift) {
        int matches = 0;
        for (size_t n = 0; n + shift < draws[i].size(); ++n) {
          if (std::abs(draws[i][n + shift] - draws[k][n]) < 1e-6) ++matches;
        }
        EXPECT_LE(matches, 1) << "server " << k << " repeats server " << i << " shifted by "
                              << shift;
      }
    }
  }
}

// --- Both together ----------------------------------------------------------------------

TEST(UpstreamHealthBoth, DownByHealthCheckStaysIneligibleWithTheBreakerClosed) {
  UpstreamHealth health(2, WithChecks(), kStart);
  ASSERT_EQ(Checks(health, 0, false, kStart, 3), HealthTransition::kMarkedDown);
  EXPECT_EQ(health.circuit_state(0, kStart), CircuitState::kClosed);
  EXPECT_FALSE(health.Eligible(0, kStart));
  EXPECT_FALSE(health.Eligible(0, kStart + kOpen * 10));
  EXPECT_TRUE(health.AnyEligible(kStart));
}

TEST(UpstreamHealthBoth, OpenBreakerStaysIneligibleWithHealthUp) {
  UpstreamHealth health(1, WithChecks(), kStart);
  OpenAt(health, 0, kStart);
  EXPECT_EQ(Checks(health, 0, true, kStart + milliseconds(1), 10), HealthTransition::kNone);
  EXPECT_TRUE(health.healthy(0));
  EXPECT_FALSE(health.Eligible(0, kStart + milliseconds(1)));
  // Passing checks do not close the breaker: it still goes through half-open.
  EXPECT_EQ(health.circuit_state(0, kStart + kOpen), CircuitState::kHalfOpen);
}

TEST(UpstreamHealthBoth, HalfOpenServerThatIsDownKeepsItsProbeForLater) {
  UpstreamHealth health(1, WithChecks(), kStart);
  OpenAt(health, 0, kStart);
  ASSERT_EQ(Checks(health, 0, false, kStart, 3), HealthTransition::kMarkedDown);
  const Timestamp t = kStart + kOpen * 3;
  EXPECT_EQ(health.circuit_state(0, t), CircuitState::kHalfOpen);
  EXPECT_FALSE(health.Eligible(0, t));
  ASSERT_EQ(Checks(health, 0, true, t, 2), HealthTransition::kMarkedUp);
  EXPECT_TRUE(health.Eligible(0, t));
  EXPECT_EQ(health.OnPicked(0, t), PickRole::kProbe);
  EXPECT_FALSE(health.Eligible(0, t));
}

TEST(UpstreamHealthBoth, AnyEligibleIsFalseOnlyWhenEveryServerIsOut) {
  UpstreamHealth health(3, WithChecks(), kStart);
  ASSERT_EQ(Checks(health, 0, false, kStart, 3), HealthTransition::kMarkedDown);  // down
  OpenAt(health, 1, kStart);                                                      // open
  EXPECT_TRUE(health.AnyEligible(kStart));
  OpenAt(health, 2, kStart);
  EXPECT_FALSE(health.AnyEligible(kStart));         // the caller turns to the fallback
  EXPECT_TRUE(health.AnyEligible(kStart + kOpen));  // 1 and 2 half-open: a probe each
}

TEST(UpstreamHealthBoth, FillEligibilitySetsTheFlagsAndKeepsActiveCounts) {
  UpstreamHealth health(3, WithChecks(), kStart);
  ASSERT_EQ(Checks(health, 0, false, kStart, 3), HealthTransition::kMarkedDown);
  OpenAt(health, 2, kStart);
  std::vector<ServerStatus> statuses = {{true, 4}, {false, 5}, {true, 6}};
  health.FillEligibility(kStart, statuses);
  EXPECT_FALSE(statuses[0].eligible);
  EXPECT_TRUE(statuses[1].eligible);
  EXPECT_FALSE(statuses[2].eligible);
  EXPECT_EQ(statuses[0].active, 4u);
  EXPECT_EQ(statuses[1].active, 5u);
  EXPECT_EQ(statuses[2].active, 6u);
}

TEST(UpstreamHealthBoth, NothingAllocatesAfterConstruction) {
  UpstreamHealth health(4, WithChecks(), kStart);
  std::vector<ServerStatus> statuses(4);
  const uint64_t before = testing::AllocationCount();
  Timestamp now = kStart;
  for (int n = 0; n < 1000; ++n) {
    now += milliseconds(7);
    health.FillEligibility(now, statuses);
    for (size_t i = 0; i < 4; ++i) {
      if (!health.Eligible(i, now)) continue;
      health.OnPicked(i, now);
      health.Report(i, n % 4 == 0 ? AttemptOutcome::kFailure : AttemptOutcome::kSuccess, now);
    }
    if (std::optional<UpstreamHealth::DueCheck> next = health.NextCheck();
        next && next->at <= now) {
      health.StartCheck(next->server, now);
      health.ReportCheck(next->server, n % 2 == 0, now);
    }
    (void)health.AnyEligible(now);
  }
  EXPECT_EQ(testing::AllocationCount(), before);
}

// --- Misuse ---------------------------------------------------------------------------

TEST(UpstreamHealthDeathTest, ZeroServersAreRefused) {
  EXPECT_DEATH(UpstreamHealth(0, BreakerOnly(), kStart), "server_count >= 1");
}

TEST(UpstreamHealthDeathTest, PickingAnIneligibleServerIsRefused) {
  UpstreamHealth health(1, BreakerOnly(), kStart);
  OpenAt(health, 0, kStart);
  EXPECT_DEATH(health.OnPicked(0, kStart), "Eligible");
}

TEST(UpstreamHealthDeathTest, SecondProbeIsRefused) {
  UpstreamHealth health(1, BreakerOnly(), kStart);
  OpenAt(health, 0, kStart);
  ASSERT_TRUE(health.Eligible(0, kStart + kOpen));
  ASSERT_EQ(health.OnPicked(0, kStart + kOpen), PickRole::kProbe);
  EXPECT_DEATH(health.OnPicked(0, kStart + kOpen), "Eligible");
}

TEST(UpstreamHealthDeathTest, BadOptionsAreRefused) {
  UpstreamHealthOptions no_failures = BreakerOnly();
  no_failures.circuit_consecutive_failures = 0;
  EXPECT_DEATH(UpstreamHealth(1, no_failures, kStart), "circuit_consecutive_failures");
  UpstreamHealthOptions no_open = BreakerOnly();
  no_open.circuit_open = Duration::zero();
  EXPECT_DEATH(UpstreamHealth(1, no_open, kStart), "circuit_open");
  UpstreamHealthOptions no_interval = WithChecks();
  no_interval.check_interval = Duration::zero();
  EXPECT_DEATH(UpstreamHealth(1, no_interval, kStart), "check_interval");
  UpstreamHealthOptions no_threshold = WithChecks();
  no_threshold.healthy_threshold = 0;
  EXPECT_DEATH(UpstreamHealth(1, no_threshold, kStart), "healthy_threshold");
}

TEST(UpstreamHealthDeathTest, ChecksWhenChecksAreOffAreRefused) {
  UpstreamHealth health(1, BreakerOnly(), kStart);
  EXPECT_DEATH(health.StartCheck(0, kStart), "active_checks");
  EXPECT_DEATH(health.ReportCheck(0, true, kStart), "active_checks");
}

TEST(UpstreamHealthDeathTest, OutOfRangeServerIsRefused) {
  UpstreamHealth health(2, BreakerOnly(), kStart);
  EXPECT_DEATH((void)health.Eligible(2, kStart), "i < servers_.size");
  EXPECT_DEATH(health.Report(2, AttemptOutcome::kSuccess, kStart), "i < servers_.size");
}

}  // namespace
}  // namespace sluice::http
