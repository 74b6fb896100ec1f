// `sluice simulate`: runs an arrival pattern through the algorithms on a simulated time
// line and counts what each one allows, so a policy can be tried without traffic.
//
// Nothing here sleeps or reads a clock: arrivals are integer nanosecond timestamps
// computed from the spec, fed straight to the pure functions of core/algorithms.h, so a
// run is a deterministic function of its spec. Each algorithm keeps its own state, as if
// it were the only limiter on one key that receives every arrival.
//
// Thread-safety: every function is pure apart from its arguments; concurrent calls on
// different arguments are safe.
#ifndef SLUICE_SIM_SIMULATE_H_
#define SLUICE_SIM_SIMULATE_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/units.h"
#include "sluice/clock.h"
#include "sluice/limiter.h"

namespace sluice::sim {

// How arrivals are spread over the run, which starts at time 0; every arrival comes
// before `duration`. "Evenly spaced at r" means arrival i (from 0) comes floor(i * 1e9 / r)
// ns after its stream starts, so the first one is at the start itself.
enum class Pattern : uint8_t {
  // Evenly spaced arrivals at `rate` for the whole run.
  kSteady,
  // On/off: each row bucket gets the same arrivals as kSteady, but squeezed (evenly
  // spaced) into the first 10% of the bucket, so every row opens with a tight burst
  // and stays quiet for the rest of it.
  kBurst,
  // A baseline of rate/4, evenly spaced, for the whole run except [40%, 60%) of
  // `duration`, where it is replaced by a spike of rate*4 evenly spaced from 40%.
  kSpike,
};

// "steady", "burst", "spike".
std::string_view PatternName(Pattern pattern);
std::optional<Pattern> ParsePattern(std::string_view name);

// Kept under sim:: for the simulator's callers; they live in core/units.h.
using ::sluice::FormatDuration;
using ::sluice::ParseCount;
using ::sluice::ParseDuration;

// What to simulate. Rows are buckets of `bucket` width from time 0; the last one is
// shorter when `duration` is not a multiple of `bucket`.
struct SimulationSpec {
  std::vector<Algorithm> algorithms;
  Limit limit;
  Pattern pattern = Pattern::kSpike;
  double rate = 0;  // requests per second; used to 1e-6 req/s precision
  Duration duration{0};
  Duration bucket = std::chrono::seconds(1);
  uint64_t cost = 1;  // every arrival asks for this much
};

// Requests, not units of cost: one arrival counts once whatever its cost.
struct RowCounts {
  uint64_t allowed = 0;
  uint64_t denied = 0;
  friend bool operator==(const RowCounts&, const RowCounts&) = default;
};

struct AlgorithmResult {
  Algorithm algorithm = Algorithm::kTokenBucket;
  std::vector<RowCounts> rows;  // one per row bucket
  RowCounts total;
  friend bool operator==(const AlgorithmResult&, const AlgorithmResult&) = default;
};

struct SimulationResult {
  // Empty on success; otherwise why the spec was refused, and the rest is empty.
  std::string error;
  std::vector<uint64_t> offered;  // arrivals per row bucket
  uint64_t total_offered = 0;
  std::vector<AlgorithmResult> algorithms;  // in spec.algorithms order
  friend bool operator==(const SimulationResult&, const SimulationResult&) = default;
};

// Limits that keep one run to a few seconds and its table readable.
inline constexpr uint64_t kMaxArrivals = 20'000'000;
inline constexpr uint64_t kMaxRows = 100'000;
// One request per nanosecond: beyond it steady arrivals would share timestamps.
inline constexpr double kMaxRate = 1e9;

// Why `spec` cannot be simulated, or "" when it can: no algorithm; period, duration or
// bucket not positive; rate not in (0, kMaxRate]; limit, burst or cost above
// kMaxQuantity; a sliding_window_log limit above kMaxLogLimit (its state is one slot
// per unit of limit); more than kMaxArrivals arrivals or kMaxRows rows.
std::string ValidateSpec(const SimulationSpec& spec);

// Runs `spec`; on an invalid spec returns only `error` (as ValidateSpec).
SimulationResult Simulate(const SimulationSpec& spec);

// A human-readable report: the parameters, one row per bucket with "allowed/denied"
// for each algorithm, a totals row, then one sparkline per algorithm of its allowed
// counts (on a scale shared by the algorithms) and one of the offered arrivals (on its
// own scale). REQUIRES: `result` came from Simulate(spec) without error.
std::string FormatTable(const SimulationSpec& spec, const SimulationResult& result);

// "second,algorithm,allowed,denied" then one line per row bucket per algorithm, rows in
// time order; `second` is the start of the row in seconds. Same REQUIRES as FormatTable.
std::string FormatCsv(const SimulationSpec& spec, const SimulationResult& result);

}  // namespace sluice::sim

#endif  // SLUICE_SIM_SIMULATE_H_
