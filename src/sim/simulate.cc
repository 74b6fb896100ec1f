#include "sim/simulate.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <iterator>
#include <span>

#include "core/algorithms.h"

namespace sluice::sim {
namespace {

using u128 = unsigned __int128;
using i128 = __int128;

constexpr int64_t kNanosPerSecond = 1'000'000'000;
// The rate is taken in micro-requests per second so fractional rates ("7.5") stay
// integer arithmetic from here on: one request per second is 1e6 of them, and one
// request every `x` ns at `rate_micro` is x = 1e15 / rate_micro.
constexpr int64_t kMicroPerUnit = 1'000'000;
constexpr u128 kNanosPerSecondMicro = u128{kNanosPerSecond} * kMicroPerUnit;

// The spike replaces the baseline over [2/5, 3/5) of the run at 16 times its rate.
constexpr int64_t kSpikeStartFifths = 2;
constexpr int64_t kSpikeEndFifths = 3;
constexpr uint64_t kBaselineDivisor = 4;
constexpr uint64_t kSpikeMultiplier = 4;
// Burst rows squeeze their arrivals into the first 1/10 of the row.
constexpr int64_t kBurstSqueeze = 10;

// Evenly spaced arrivals: arrival i comes at start + floor(i * step_num / step_den) ns.
// Keeping the step as a fraction (1e15 / rate_micro, times the pattern's factor) means
// every arrival time is exact and the count before any time is exact too.
struct EvenStream {
  int64_t start = 0;
  u128 step_num = 1;
  u128 step_den = 1;

  // `rate_micro` micro-requests per second, times factor_num / factor_den.
  static EvenStream At(int64_t start, uint64_t rate_micro, uint64_t factor_num,
                       uint64_t factor_den) {
    return EvenStream{start, kNanosPerSecondMicro * factor_den, u128{rate_micro} * factor_num};
  }
  int64_t Time(uint64_t i) const {
    return start + static_cast<int64_t>(u128{i} * step_num / step_den);
  }
  // How many arrivals come before start + length: i * step_num / step_den < length
  // exactly when i < length * step_den / step_num.
  uint64_t CountBefore(int64_t length) const {
    if (length <= 0) return 0;
    const u128 scaled = static_cast<u128>(length) * step_den;
    return static_cast<uint64_t>(scaled / step_num + (scaled % step_num != 0 ? 1 : 0));
  }
};

// The validated spec's numbers in the integer forms the generator uses.
struct Plan {
  uint64_t rate_micro = 0;
  int64_t duration_ns = 0;
  int64_t bucket_ns = 0;
  int64_t spike_start_ns = 0;
  int64_t spike_end_ns = 0;
};

Plan MakePlan(const SimulationSpec& spec) {
  Plan plan;
  plan.rate_micro = static_cast<uint64_t>(std::llround(spec.rate * kMicroPerUnit));
  plan.duration_ns = spec.duration.count();
  plan.bucket_ns = spec.bucket.count();
  plan.spike_start_ns = static_cast<int64_t>(i128{plan.duration_ns} * kSpikeStartFifths / 5);
  plan.spike_end_ns = static_cast<int64_t>(i128{plan.duration_ns} * kSpikeEndFifths / 5);
  return plan;
}

EvenStream SteadyStream(const Plan& plan) { return EvenStream::At(0, plan.rate_micro, 1, 1); }
EvenStream BaselineStream(const Plan& plan) {
  return EvenStream::At(0, plan.rate_micro, 1, kBaselineDivisor);
}
EvenStream SpikeStream(const Plan& plan) {
  return EvenStream::At(plan.spike_start_ns, plan.rate_micro, kSpikeMultiplier, 1);
}

uint64_t CountArrivals(const SimulationSpec& spec, const Plan& plan) {
  switch (spec.pattern) {
    case Pattern::kSteady:
    case Pattern::kBurst:
      return SteadyStream(plan).CountBefore(plan.duration_ns);
    case Pattern::kSpike: {
      const EvenStream baseline = BaselineStream(plan);
      return baseline.CountBefore(plan.spike_start_ns) +
             (baseline.CountBefore(plan.duration_ns) - baseline.CountBefore(plan.spike_end_ns)) +
             SpikeStream(plan).CountBefore(plan.spike_end_ns - plan.spike_start_ns);
    }
  }
  return 0;
}

// Calls `arrive(t_ns)` for every arrival in time order.
template <typename Arrive>
void ForEachArrival(const SimulationSpec& spec, const Plan& plan, Arrive&& arrive) {
  auto emit = [&](const EvenStream& stream, uint64_t from, uint64_t to) {
    for (uint64_t i = from; i < to; ++i) arrive(stream.Time(i));
  };
  switch (spec.pattern) {
    case Pattern::kSteady: {
      const EvenStream steady = SteadyStream(plan);
      emit(steady, 0, steady.CountBefore(plan.duration_ns));
      break;
    }
    case Pattern::kBurst: {
      // The steady arrivals, each moved towards the start of its row; the mapping is
      // monotonic, so the order is kept and no arrival leaves its row.
      const EvenStream steady = SteadyStream(plan);
      const uint64_t count = steady.CountBefore(plan.duration_ns);
      for (uint64_t i = 0; i < count; ++i) {
        const int64_t t = steady.Time(i);
        const int64_t row_start = t - t % plan.bucket_ns;
        arrive(row_start + (t - row_start) / kBurstSqueeze);
      }
      break;
    }
    case Pattern::kSpike: {
      const EvenStream baseline = BaselineStream(plan);
      const EvenStream spike = SpikeStream(plan);
      emit(baseline, 0, baseline.CountBefore(plan.spike_start_ns));
      emit(spike, 0, spike.CountBefore(plan.spike_end_ns - plan.spike_start_ns));
      emit(baseline, baseline.CountBefore(plan.spike_end_ns),
           baseline.CountBefore(plan.duration_ns));
      break;
    }
  }
}

// One algorithm with its own state, as a store would keep it for one key.
class Subject {
 public:
  Subject(Algorithm algorithm, const Limit& limit)
      : algorithm_(algorithm),
        limit_(limit),
        ring_(algorithm == Algorithm::kSlidingWindowLog ? limit.limit : 0) {}

  bool Allow(int64_t t_ns, uint64_t cost) {
    if (algorithm_ == Algorithm::kSlidingWindowLog) {
      return core::DecideSlidingWindowLog(limit_, log_, ring_, FromNanos(t_ns), cost).allowed;
    }
    return core::DecideCompact(algorithm_, limit_, compact_, FromNanos(t_ns), cost).allowed;
  }

 private:
  Algorithm algorithm_;
  Limit limit_;
  core::CompactState compact_;
  core::SlidingWindowLogState log_;
  std::vector<int64_t> ring_;
};

// Seconds with no trailing zeros: "3", "0.5", "0.000000001".
std::string FormatSeconds(int64_t ns) {
  std::string out = fmt::format("{}", ns / kNanosPerSecond);
  if (const int64_t fraction = ns % kNanosPerSecond; fraction != 0) {
    std::string digits = fmt::format("{:09}", fraction);
    digits.erase(digits.find_last_not_of('0') + 1);
    out += "." + digits;
  }
  return out;
}

std::string FormatRate(double rate) { return fmt::format("{}/s", rate); }

// One character per value, from " " (zero) to "█" (`scale`); any non-zero value shows
// at least "▁" so a trickle is not mistaken for nothing.
std::string Sparkline(std::span<const uint64_t> values, uint64_t scale) {
  static constexpr std::array<std::string_view, 9> kLevels = {" ", "▁", "▂", "▃", "▄",
                                                              "▅", "▆", "▇", "█"};
  constexpr uint64_t kTop = kLevels.size() - 1;
  std::string out;
  for (uint64_t v : values) {
    const uint64_t level =
        scale == 0
            ? 0
            : static_cast<uint64_t>(std::min<u128>((u128{v} * kTop + scale - 1) / scale, kTop));
    out += kLevels[level];
  }
  return out;
}

}  // namespace

std::string_view PatternName(Pattern pattern) {
  switch (pattern) {
    case Pattern::kSteady:
      return "steady";
    case Pattern::kBurst:
      return "burst";
    case Pattern::kSpike:
      return "spike";
  }
  return "unknown";
}

std::optional<Pattern> ParsePattern(std::string_view name) {
  for (Pattern p : {Pattern::kSteady, Pattern::kBurst, Pattern::kSpike}) {
    if (PatternName(p) == name) return p;
  }
  return std::nullopt;
}

std::string ValidateSpec(const SimulationSpec& spec) {
  if (spec.algorithms.empty()) return "no algorithm to simulate";
  if (spec.limit.period <= Duration(0)) return "the period must be positive";
  if (spec.duration <= Duration(0)) return "the duration must be positive";
  if (spec.bucket <= Duration(0)) return "the row width must be positive";
  // Written so NaN fails too.
  if (!(spec.rate > 0 && spec.rate <= kMaxRate)) {
    return fmt::format("the rate must be more than 0 and at most {} requests per second", kMaxRate);
  }
  if (std::llround(spec.rate * kMicroPerUnit) == 0) {
    return "the rate must be at least 0.000001 requests per second";
  }
  if (spec.limit.limit > kMaxQuantity) {
    return fmt::format("the limit must be at most {} (2^62)", kMaxQuantity);
  }
  if (spec.limit.burst > kMaxQuantity) {
    return fmt::format("the burst must be at most {} (2^62)", kMaxQuantity);
  }
  if (spec.cost > kMaxQuantity)
    return fmt::format("the cost must be at most {} (2^62)", kMaxQuantity);
  const bool has_log = std::find(spec.algorithms.begin(), spec.algorithms.end(),
                                 Algorithm::kSlidingWindowLog) != spec.algorithms.end();
  if (has_log && spec.limit.limit > kMaxLogLimit) {
    return fmt::format(
        "sliding_window_log keeps one timestamp per unit of limit, so its limit must be at "
        "most {}; got {}",
        kMaxLogLimit, spec.limit.limit);
  }
  const Plan plan = MakePlan(spec);
  const int64_t rows = plan.duration_ns / plan.bucket_ns + (plan.duration_ns % plan.bucket_ns != 0);
  if (static_cast<uint64_t>(rows) > kMaxRows) {
    return fmt::format("{} rows of {} is more than {}; shorten the duration", rows,
                       FormatDuration(spec.bucket), kMaxRows);
  }
  if (const uint64_t arrivals = CountArrivals(spec, plan); arrivals > kMaxArrivals) {
    return fmt::format("{} arrivals is more than {}; lower the rate or the duration", arrivals,
                       kMaxArrivals);
  }
  return "";
}

SimulationResult Simulate(const SimulationSpec& spec) {
  SimulationResult result;
  result.error = ValidateSpec(spec);
  if (!result.error.empty()) return result;

  const Plan plan = MakePlan(spec);
  const size_t rows = static_cast<size_t>(plan.duration_ns / plan.bucket_ns +
                                          (plan.duration_ns % plan.bucket_ns != 0));
  result.offered.assign(rows, 0);
  std::vector<Subject> subjects;
  subjects.reserve(spec.algorithms.size());
  for (Algorithm algorithm : spec.algorithms) {
    subjects.emplace_back(algorithm, spec.limit);
    result.algorithms.push_back(
        AlgorithmResult{.algorithm = algorithm, .rows = std::vector<RowCounts>(rows), .total = {}});
  }

  ForEachArrival(spec, plan, [&](int64_t t_ns) {
    const size_t row = static_cast<size_t>(t_ns / plan.bucket_ns);
    ++result.offered[row];
    ++result.total_offered;
    for (size_t a = 0; a < subjects.size(); ++a) {
      AlgorithmResult& out = result.algorithms[a];
      if (subjects[a].Allow(t_ns, spec.cost)) {
        ++out.rows[row].allowed;
        ++out.total.allowed;
      } else {
        ++out.rows[row].denied;
        ++out.total.denied;
      }
    }
  });
  return result;
}

std::string FormatTable(const SimulationSpec& spec, const SimulationResult& result) {
  std::string out;
  auto line = std::back_inserter(out);
  const Plan plan = MakePlan(spec);

  // The parameters, so a pasted table says what produced it.
  fmt::format_to(line, "pattern {}, rate {}", PatternName(spec.pattern), FormatRate(spec.rate));
  if (spec.pattern == Pattern::kSpike) {
    fmt::format_to(
        line, " (baseline {}, spike {} from {} to {})", FormatRate(spec.rate / kBaselineDivisor),
        FormatRate(spec.rate * kSpikeMultiplier), FormatDuration(Duration(plan.spike_start_ns)),
        FormatDuration(Duration(plan.spike_end_ns)));
  } else if (spec.pattern == Pattern::kBurst) {
    fmt::format_to(line, " (each row's arrivals in its first 10%)");
  }
  fmt::format_to(line, ", duration {}\n", FormatDuration(spec.duration));
  fmt::format_to(line, "limit {} per {}", spec.limit.limit, FormatDuration(spec.limit.period));
  if (std::any_of(spec.algorithms.begin(), spec.algorithms.end(), UsesBurst)) {
    fmt::format_to(line, ", burst {}", spec.limit.burst);
  }
  fmt::format_to(line, ", cost {}\n", spec.cost);
  fmt::format_to(line, "{} requests offered; each cell is allowed/denied per {}\n\n",
                 result.total_offered, FormatDuration(spec.bucket));

  // The table: every cell is formatted first so each column can be as wide as its
  // widest cell.
  std::vector<std::vector<std::string>> cells;
  std::vector<std::string> header = {"second", "offered"};
  for (const AlgorithmResult& a : result.algorithms)
    header.emplace_back(AlgorithmName(a.algorithm));
  cells.push_back(std::move(header));
  for (size_t row = 0; row < result.offered.size(); ++row) {
    std::vector<std::string> r = {FormatSeconds(static_cast<int64_t>(row) * plan.bucket_ns),
                                  fmt::format("{}", result.offered[row])};
    for (const AlgorithmResult& a : result.algorithms) {
      r.push_back(fmt::format("{}/{}", a.rows[row].allowed, a.rows[row].denied));
    }
    cells.push_back(std::move(r));
  }
  std::vector<std::string> totals = {"total", fmt::format("{}", result.total_offered)};
  for (const AlgorithmResult& a : result.algorithms) {
    totals.push_back(fmt::format("{}/{}", a.total.allowed, a.total.denied));
  }
  cells.push_back(std::move(totals));

  std::vector<size_t> widths(cells.front().size(), 0);
  for (const auto& r : cells) {
    for (size_t c = 0; c < r.size(); ++c) widths[c] = std::max(widths[c], r[c].size());
  }
  for (const auto& r : cells) {
    for (size_t c = 0; c < r.size(); ++c) {
      fmt::format_to(line, "{}{:>{}}", c == 0 ? "" : "  ", r[c], widths[c]);
    }
    out += '\n';
  }

  // The chart. The algorithms share one scale so their bars compare; the offered
  // arrivals get their own, as a spike would otherwise flatten every other bar.
  uint64_t max_allowed = 0;
  size_t label_width = std::string_view("offered").size();
  for (const AlgorithmResult& a : result.algorithms) {
    for (const RowCounts& r : a.rows) max_allowed = std::max(max_allowed, r.allowed);
    label_width = std::max(label_width, AlgorithmName(a.algorithm).size());
  }
  const uint64_t max_offered =
      result.offered.empty() ? 0 : *std::max_element(result.offered.begin(), result.offered.end());
  fmt::format_to(line, "\noffered per {} (█ = {}):\n", FormatDuration(spec.bucket), max_offered);
  fmt::format_to(line, "{:<{}}  |{}|\n", "offered", label_width,
                 Sparkline(result.offered, max_offered));
  fmt::format_to(line, "allowed per {} (█ = {}):\n", FormatDuration(spec.bucket), max_allowed);
  std::vector<uint64_t> allowed(result.offered.size());
  for (const AlgorithmResult& a : result.algorithms) {
    for (size_t row = 0; row < a.rows.size(); ++row) allowed[row] = a.rows[row].allowed;
    fmt::format_to(line, "{:<{}}  |{}|\n", AlgorithmName(a.algorithm), label_width,
                   Sparkline(allowed, max_allowed));
  }
  return out;
}

std::string FormatCsv(const SimulationSpec& spec, const SimulationResult& result) {
  std::string out = "second,algorithm,allowed,denied\n";
  auto line = std::back_inserter(out);
  const int64_t bucket_ns = spec.bucket.count();
  for (size_t row = 0; row < result.offered.size(); ++row) {
    const std::string second = FormatSeconds(static_cast<int64_t>(row) * bucket_ns);
    for (const AlgorithmResult& a : result.algorithms) {
      fmt::format_to(line, "{},{},{},{}\n", second, AlgorithmName(a.algorithm), a.rows[row].allowed,
                     a.rows[row].denied);
    }
  }
  return out;
}

}  // namespace sluice::sim
