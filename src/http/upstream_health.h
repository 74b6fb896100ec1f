// Whether each server of an upstream group may take traffic: the `health_check` and
// `circuit_breaker` blocks of the `upstreams` config. It computes the `eligible` flag
// that the balancer (http/balancer.h) takes per server. Pure and I/O-free: the caller
// reports what happened (an attempt's outcome, a health check's result) and passes the
// time in; this class keeps only the per-server state machines.
//
// A server is eligible when both hold:
// - Active health: up. The caller sends GET <health_check.path> to each server when
//   NextCheck says it is due and reports up or down. `unhealthy_threshold` consecutive
//   failed checks mark an up server down; `healthy_threshold` consecutive passed checks
//   mark a down server up; a result that agrees with the state only resets the other
//   count. Every server starts up: a new group (at start and at every reload) has no
//   evidence yet, and starting down would answer 503 (or send every request to the
//   fallback) for healthy_threshold intervals after every reload. A server that is in
//   fact dead at start is caught sooner by the breaker below than by the checks. With
//   no health_check.path configured, every server is always up.
// - Passive circuit breaker: not open. Each attempt the proxy sends to a server is
//   reported as a success or a failure (ClassifyUpstreamStatus says which status codes
//   are failures).
//     closed    --`consecutive_failures` failures in a row-->  open  (a success resets
//                                                                     the count)
//     open      --`circuit_open` elapsed (now >= opened + open)-->  half-open
//     half-open --one pick takes the probe slot; further picks see the server
//                 ineligible until the probe's outcome is reported-->
//                 success: closed; failure: open again for `circuit_open`.
//   Reports that arrive while open (requests sent before it opened) are ignored: they
//   neither extend nor shorten the open time. In half-open the first verdict decides,
//   even a late one from a request sent before the breaker opened, since it is just as
//   much evidence about the server as the probe's. An attempt that ends without a
//   verdict (the client went away before the upstream answered) is reported as
//   kAbandoned, which gives the probe slot back. As a safety net for an outcome that is
//   never reported, a probe slot held for `circuit_open` is given back too, so a lost
//   report delays recovery by at most one open period instead of for ever.
//   The two signals are independent: a passing health check does not close an open
//   breaker, and a closed breaker does not bring a server that checks down back.
//
// Use, on the worker's loop, per request:
//   health.FillEligibility(now, statuses);         // the balancer's ServerStatus array
//   if (!health.AnyEligible(now)) -> fallback upstream, or 503
//   i = balancer.Pick({statuses, key});
//   health.OnPicked(i, now);                       // takes the half-open probe slot
//   ... forward ...
//   if (health.Report(i, outcome, now) != CircuitTransition::kNone) log, set the gauge
// and for the checks: arm a timer for NextCheck()->at; when it fires, StartCheck(i,
// now) for each server due, send the GET, and ReportCheck(i, up, now) when it ends (a
// timeout is a failed check).
//
// Check schedule: server i's first check is due at a random point of the first
// interval, [start, start + interval), and each next one at the time its result was
// reported plus interval plus a random jitter in [0, interval x jitter_percent / 100).
// The random draws come from a seed the caller injects (give each worker of each
// instance its own), so the workers of a fleet restarted at once spread their checks
// over the interval instead of checking each server in lockstep, and they do not fall
// back into step; the same seed and the same reports give the same schedule. Counting
// from the report rather than from the due time means a check slower than the interval
// is not followed by another at once.
//
// Cost: one vector of per-server state, allocated in the constructor; no allocation
// afterwards. Each call is O(1) except AnyEligible, FillEligibility and NextCheck,
// which scan the servers (a group has a handful).
//
// Thread-safety: none, by design. Like the Balancer, each worker builds its own
// UpstreamHealth per upstream group and uses it from its event loop thread only; no
// locks. Workers therefore judge servers independently (each from its own traffic and
// its own checks), and a group with W workers receives W checks per server per
// interval.
#ifndef SLUICE_HTTP_UPSTREAM_HEALTH_H_
#define SLUICE_HTTP_UPSTREAM_HEALTH_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "http/balancer.h"
#include "sluice/clock.h"

namespace sluice::http {

struct UpstreamHealthOptions {
  // Defaults as HAProxy's (`fall 3`, `rise 2`, `inter 2000`): a server is marked down
  // about 6 s after it stops answering checks (the breaker usually reacts first, after
  // a few requests) and comes back 4 s after it answers again. One failed check alone
  // does not take a server out, so a single slow check does not shed a server; two
  // passed checks, not one, so a flapping server does not bounce straight back in.
  static constexpr uint32_t kDefaultUnhealthyThreshold = 3;
  static constexpr uint32_t kDefaultHealthyThreshold = 2;
  // Envoy's interval_jitter_percent in spirit: enough to drift apart, small enough that
  // the checks stay close to the configured rate.
  static constexpr uint32_t kDefaultCheckJitterPercent = 10;

  // Config::Upstream's circuit_consecutive_failures and circuit_open.
  uint32_t circuit_consecutive_failures = 5;                  // REQUIRES >= 1
  Duration circuit_open = std::chrono::milliseconds(10'000);  // REQUIRES > 0 (config: >= 1 ms)

  // Config::Upstream's health_check_path != "", and health_check_interval.
  bool active_checks = false;
  Duration check_interval = std::chrono::milliseconds(2000);   // REQUIRES > 0
  uint32_t unhealthy_threshold = kDefaultUnhealthyThreshold;   // REQUIRES >= 1
  uint32_t healthy_threshold = kDefaultHealthyThreshold;       // REQUIRES >= 1
  uint32_t check_jitter_percent = kDefaultCheckJitterPercent;  // REQUIRES <= 100

  // Starts the check schedule's random draws. Give each worker of each instance its own.
  uint64_t jitter_seed = 0;
};

// How an attempt to a server ended, as the proxy saw it.
enum class AttemptOutcome {
  kSuccess,    // the upstream answered (any status ClassifyUpstreamStatus calls success)
  kFailure,    // connect error or refused, reset or closed before a complete response
               // head, connect or first-byte timeout, or a 502, 503 or 504 from it
  kAbandoned,  // ended without a verdict (the client went away first): gives a
               // half-open probe slot back and otherwise changes nothing
};

// An upstream's status code as a breaker outcome: 502, 503 and 504 are failures (the
// server or what it depends on is unreachable or overloaded, Envoy's "gateway
// failure"); everything else, 500 included, is a success: the server is up and
// answering, and an application error on one endpoint must not take every server out.
AttemptOutcome ClassifyUpstreamStatus(int status);

enum class CircuitState { kClosed, kOpen, kHalfOpen };
std::string_view CircuitStateName(CircuitState state);  // "closed", "open", "half_open"

// What a report changed, for the caller's log line and the sluice_circuit_open gauge.
enum class CircuitTransition {
  kNone,
  kOpened,    // closed -> open (the gauge goes to 1)
  kReopened,  // half-open probe failed -> open again
  kClosed,    // half-open probe succeeded -> closed (the gauge goes to 0)
};

enum class HealthTransition {
  kNone,
  kMarkedDown,  // up -> down after unhealthy_threshold failed checks
  kMarkedUp,    // down -> up after healthy_threshold passed checks
};

// What OnPicked made of a pick.
enum class PickRole {
  kNormal,  // the breaker is closed
  kProbe,   // the half-open probe: the server's other picks wait for its outcome
};

class UpstreamHealth {
 public:
  // REQUIRES: server_count >= 1 and the options' REQUIREs. `now` starts the check
  // schedule.
  UpstreamHealth(size_t server_count, const UpstreamHealthOptions& options, Timestamp now);

  size_t size() const { return servers_.size(); }
  const UpstreamHealthOptions& options() const { return options_; }

  // --- Eligibility ------------------------------------------------------------------
  // Health up and the breaker closed, or half-open with its probe slot free.
  // REQUIRES (for every `i` below): i < size().
  bool Eligible(size_t i, Timestamp now) const;
  // Is any server eligible? When not, the group answers from its fallback or with 503.
  bool AnyEligible(Timestamp now) const;
  // Sets statuses[i].eligible = Eligible(i, now) for every server; leaves `active`.
  // REQUIRES: statuses.size() == size().
  void FillEligibility(Timestamp now, std::span<ServerStatus> statuses) const;

  // --- Passive circuit breaker ------------------------------------------------------
  // The balancer picked server i: in half-open this takes the probe slot.
  // REQUIRES: Eligible(i, now).
  PickRole OnPicked(size_t i, Timestamp now);
  // How an attempt to server i ended (every OnPicked is followed by one Report).
  CircuitTransition Report(size_t i, AttemptOutcome outcome, Timestamp now);
  CircuitState circuit_state(size_t i, Timestamp now) const;
  // The sluice_circuit_open{upstream,server} gauge: 1 while open or half-open, since
  // the server takes no traffic beyond the single probe until the breaker closes.
  bool circuit_open(size_t i, Timestamp now) const {
    return circuit_state(i, now) != CircuitState::kClosed;
  }
  // Failures in a row while closed (resets on a success and when the breaker opens).
  uint32_t consecutive_failures(size_t i) const;

  // --- Active health checks ---------------------------------------------------------
  struct DueCheck {
    size_t server;
    Timestamp at;  // may be in the past: the check is due now
  };
  // The earliest due check among servers with no check in flight (the lowest index on
  // a tie); nullopt when active checks are off or every server has one in flight.
  std::optional<DueCheck> NextCheck() const;
  // The caller starts server i's check: it is not offered by NextCheck until reported.
  // REQUIRES: active checks on.
  void StartCheck(size_t i, Timestamp now);
  // Server i's check ended (passed = 2xx in time; a timeout or anything else fails).
  // Schedules its next check. REQUIRES: active checks on.
  HealthTransition ReportCheck(size_t i, bool passed, Timestamp now);
  bool healthy(size_t i) const;
  bool check_in_flight(size_t i) const;
  // When server i's next check is due (meaningless while one is in flight).
  Timestamp next_check_at(size_t i) const;

 private:
  struct Server {
    // Breaker.
    // Half-open is not stored: it is open with circuit_open elapsed (EffectiveCircuit),
    // so no timer has to move a server out of open.
    bool open = false;
    uint32_t failures = 0;     // consecutive, while closed
    Timestamp opened_at{};     // when it last opened
    bool probe_taken = false;  // half-open: the slot is held
    Timestamp probe_taken_at{};
    // Health.
    bool up = true;
    uint32_t checks_passed = 0;  // consecutive
    uint32_t checks_failed = 0;  // consecutive
    bool check_in_flight = false;
    Timestamp next_check_at{};
    uint64_t random_state = 0;  // splitmix64, for this server's jitter
  };

  // The breaker's state at `now`: a stored kOpen is half-open once circuit_open has
  // elapsed.
  CircuitState EffectiveCircuit(const Server& server, Timestamp now) const;
  bool ProbeSlotFree(const Server& server, Timestamp now) const;
  void Open(Server& server, Timestamp now);
  static uint64_t NextRandom(uint64_t& state);
  static Duration RandomBelow(uint64_t& state, Duration bound);  // [0, bound); bound > 0

  UpstreamHealthOptions options_;
  std::vector<Server> servers_;
};

}  // namespace sluice::http

#endif  // SLUICE_HTTP_UPSTREAM_HEALTH_H_
