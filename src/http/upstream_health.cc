#include "http/upstream_health.h"

#include <limits>

#include "core/check.h"

namespace sluice::http {

namespace {

// splitmix64's finaliser: spreads a seed so that nearby seeds start far apart.
constexpr uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15;

void CountUp(uint32_t& count) {
  if (count < std::numeric_limits<uint32_t>::max()) ++count;
}

}  // namespace

AttemptOutcome ClassifyUpstreamStatus(int status) {
  return status == 502 || status == 503 || status == 504 ? AttemptOutcome::kFailure
                                                         : AttemptOutcome::kSuccess;
}

std::string_view CircuitStateName(CircuitState state) {
  switch (state) {
    case CircuitState::kClosed:
      return "closed";
    case CircuitState::kOpen:
      return "open";
    case CircuitState::kHalfOpen:
      return "half_open";
  }
  return "unknown";
}

UpstreamHealth::UpstreamHealth(size_t server_count, const UpstreamHealthOptions& options,
                               Timestamp now)
    : options_(options), servers_(server_count) {
  SLUICE_CHECK(server_count >= 1);
  SLUICE_CHECK(options_.circuit_consecutive_failures >= 1);
  SLUICE_CHECK(options_.circuit_open > Duration::zero());
  SLUICE_CHECK(options_.check_interval > Duration::zero());
  SLUICE_CHECK(options_.unhealthy_threshold >= 1);
  SLUICE_CHECK(options_.healthy_threshold >= 1);
  SLUICE_CHECK(options_.check_jitter_percent <= 100);
  for (size_t i = 0; i < servers_.size(); ++i) {
    Server& server = servers_[i];
    // Each server its own stream: a stream started at seed + i x golden would be
    // server 0's shifted by i draws, so the servers' jitters would repeat each other.
    server.random_state = Mix(options_.jitter_seed + (i + 1) * kGolden);
    // The first check somewhere in the first interval: the phase that keeps the
    // workers and instances started together apart.
    server.next_check_at = now + RandomBelow(server.random_state, options_.check_interval);
  }
}

// --- Eligibility ----------------------------------------------------------------------

bool UpstreamHealth::Eligible(size_t i, Timestamp now) const {
  SLUICE_CHECK(i < servers_.size());
  const Server& server = servers_[i];
  if (!server.up) return false;
  switch (EffectiveCircuit(server, now)) {
    case CircuitState::kClosed:
      return true;
    case CircuitState::kOpen:
      return false;
    case CircuitState::kHalfOpen:
      return ProbeSlotFree(server, now);
  }
  return false;
}

bool UpstreamHealth::AnyEligible(Timestamp now) const {
  for (size_t i = 0; i < servers_.size(); ++i) {
    if (Eligible(i, now)) return true;
  }
  return false;
}

void UpstreamHealth::FillEligibility(Timestamp now, std::span<ServerStatus> statuses) const {
  SLUICE_CHECK(statuses.size() == servers_.size());
  for (size_t i = 0; i < servers_.size(); ++i) statuses[i].eligible = Eligible(i, now);
}

// --- Passive circuit breaker ----------------------------------------------------------

CircuitState UpstreamHealth::EffectiveCircuit(const Server& server, Timestamp now) const {
  if (!server.open) return CircuitState::kClosed;
  // At exactly opened + circuit_open the wait is over.
  return now - server.opened_at >= options_.circuit_open ? CircuitState::kHalfOpen
                                                         : CircuitState::kOpen;
}

bool UpstreamHealth::ProbeSlotFree(const Server& server, Timestamp now) const {
  // A slot held for a whole open period is taken to be lost (its report never came).
  return !server.probe_taken || now - server.probe_taken_at >= options_.circuit_open;
}

void UpstreamHealth::Open(Server& server, Timestamp now) {
  server.open = true;
  server.opened_at = now;
  server.failures = 0;
  server.probe_taken = false;
}

PickRole UpstreamHealth::OnPicked(size_t i, Timestamp now) {
  SLUICE_CHECK(Eligible(i, now));
  Server& server = servers_[i];
  if (EffectiveCircuit(server, now) != CircuitState::kHalfOpen) return PickRole::kNormal;
  server.probe_taken = true;
  server.probe_taken_at = now;
  return PickRole::kProbe;
}

CircuitTransition UpstreamHealth::Report(size_t i, AttemptOutcome outcome, Timestamp now) {
  SLUICE_CHECK(i < servers_.size());
  Server& server = servers_[i];
  switch (EffectiveCircuit(server, now)) {
    case CircuitState::kClosed:
      if (outcome == AttemptOutcome::kSuccess) {
        server.failures = 0;
      } else if (outcome == AttemptOutcome::kFailure) {
        ++server.failures;
        if (server.failures >= options_.circuit_consecutive_failures) {
          Open(server, now);
          return CircuitTransition::kOpened;
        }
      }
      return CircuitTransition::kNone;
    case CircuitState::kOpen:
      // From requests sent before it opened: the open period stands as it is.
      return CircuitTransition::kNone;
    case CircuitState::kHalfOpen:
      switch (outcome) {
        case AttemptOutcome::kSuccess:
          server.open = false;
          server.failures = 0;
          server.probe_taken = false;
          return CircuitTransition::kClosed;
        case AttemptOutcome::kFailure:
          Open(server, now);
          return CircuitTransition::kReopened;
        case AttemptOutcome::kAbandoned:
          server.probe_taken = false;
          return CircuitTransition::kNone;
      }
  }
  return CircuitTransition::kNone;
}

CircuitState UpstreamHealth::circuit_state(size_t i, Timestamp now) const {
  SLUICE_CHECK(i < servers_.size());
  return EffectiveCircuit(servers_[i], now);
}

uint32_t UpstreamHealth::consecutive_failures(size_t i) const {
  SLUICE_CHECK(i < servers_.size());
  return servers_[i].failures;
}

// --- Active health checks -------------------------------------------------------------

std::optional<UpstreamHealth::DueCheck> UpstreamHealth::NextCheck() const {
  if (!options_.active_checks) return std::nullopt;
  std::optional<DueCheck> earliest;
  for (size_t i = 0; i < servers_.size(); ++i) {
    const Server& server = servers_[i];
    if (server.check_in_flight) continue;
    if (!earliest || server.next_check_at < earliest->at) {
      earliest = DueCheck{i, server.next_check_at};
    }
  }
  return earliest;
}

void UpstreamHealth::StartCheck(size_t i, Timestamp /*now*/) {
  SLUICE_CHECK(options_.active_checks);
  SLUICE_CHECK(i < servers_.size());
  SLUICE_CHECK(!servers_[i].check_in_flight);
  servers_[i].check_in_flight = true;
}

HealthTransition UpstreamHealth::ReportCheck(size_t i, bool passed, Timestamp now) {
  SLUICE_CHECK(options_.active_checks);
  SLUICE_CHECK(i < servers_.size());
  Server& server = servers_[i];
  server.check_in_flight = false;
  const auto jitter =
      Duration(static_cast<int64_t>(static_cast<__int128>(options_.check_interval.count()) *
                                    options_.check_jitter_percent / 100));
  server.next_check_at =
      now + options_.check_interval +
      (jitter > Duration::zero() ? RandomBelow(server.random_state, jitter) : Duration::zero());
  HealthTransition transition = HealthTransition::kNone;
  if (passed) {
    CountUp(server.checks_passed);
    server.checks_failed = 0;
    if (!server.up && server.checks_passed >= options_.healthy_threshold) {
      server.up = true;
      transition = HealthTransition::kMarkedUp;
    }
  } else {
    CountUp(server.checks_failed);
    server.checks_passed = 0;
    if (server.up && server.checks_failed >= options_.unhealthy_threshold) {
      server.up = false;
      transition = HealthTransition::kMarkedDown;
    }
  }
  return transition;
}

bool UpstreamHealth::healthy(size_t i) const {
  SLUICE_CHECK(i < servers_.size());
  return servers_[i].up;
}

bool UpstreamHealth::check_in_flight(size_t i) const {
  SLUICE_CHECK(i < servers_.size());
  return servers_[i].check_in_flight;
}

Timestamp UpstreamHealth::next_check_at(size_t i) const {
  SLUICE_CHECK(i < servers_.size());
  return servers_[i].next_check_at;
}

uint64_t UpstreamHealth::NextRandom(uint64_t& state) { return Mix(state += kGolden); }

Duration UpstreamHealth::RandomBelow(uint64_t& state, Duration bound) {
  // Lemire's multiply-shift, as the balancer draws: the bias is below bound / 2^64.
  const auto n = static_cast<uint64_t>(bound.count());
  return Duration(
      static_cast<int64_t>((static_cast<unsigned __int128>(NextRandom(state)) * n) >> 64));
}

}  // namespace sluice::http
