// `sluice simulate` end to end below the command line: the arrival patterns, the counts
// each algorithm produces on them (worked out by hand in the comments), the parsers and
// the two output formats.
#include "sim/simulate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace sluice::sim {
namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::nanoseconds;
using std::chrono::seconds;

std::vector<Algorithm> All() { return {std::begin(kAllAlgorithms), std::end(kAllAlgorithms)}; }

SimulationSpec Spec(Pattern pattern, double rate, Duration duration, Limit limit,
                    std::vector<Algorithm> algorithms = All()) {
  SimulationSpec spec;
  spec.algorithms = std::move(algorithms);
  spec.limit = limit;
  spec.pattern = pattern;
  spec.rate = rate;
  spec.duration = duration;
  return spec;
}

const AlgorithmResult& Find(const SimulationResult& result, Algorithm algorithm) {
  for (const AlgorithmResult& a : result.algorithms) {
    if (a.algorithm == algorithm) return a;
  }
  ADD_FAILURE() << "no result for " << AlgorithmName(algorithm);
  static const AlgorithmResult kNone;
  return kNone;
}

std::vector<uint64_t> Allowed(const AlgorithmResult& a) {
  std::vector<uint64_t> out;
  for (const RowCounts& r : a.rows) out.push_back(r.allowed);
  return out;
}

std::vector<uint64_t> Denied(const AlgorithmResult& a) {
  std::vector<uint64_t> out;
  for (const RowCounts& r : a.rows) out.push_back(r.denied);
  return out;
}

int CountLines(const std::string& s) {
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

// --- Parsers ------------------------------------------------------------------------

TEST(ParseDurationTest, AcceptsEveryUnit) {
  EXPECT_EQ(ParseDuration("100ns"), nanoseconds(100));
  EXPECT_EQ(ParseDuration("250us"), microseconds(250));
  EXPECT_EQ(ParseDuration("500ms"), milliseconds(500));
  EXPECT_EQ(ParseDuration("1s"), seconds(1));
  EXPECT_EQ(ParseDuration("10s"), seconds(10));
  EXPECT_EQ(ParseDuration("1m"), minutes(1));
  EXPECT_EQ(ParseDuration("1h"), hours(1));
  EXPECT_EQ(ParseDuration("1d"), hours(24));
  EXPECT_EQ(ParseDuration("0s"), nanoseconds(0));
  EXPECT_EQ(ParseDuration("007ms"), milliseconds(7));
}

TEST(ParseDurationTest, AcceptsTheLargestThatFits) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(ParseDuration(std::to_string(kMax) + "ns"), nanoseconds(kMax));
  EXPECT_EQ(ParseDuration("106751d"), hours(24) * 106751);
  EXPECT_EQ(ParseDuration("106752d"), std::nullopt);  // 2^63 ns is about 106751.99 days
}

TEST(ParseDurationTest, RejectsMalformedText) {
  for (const char* bad : {"", "s", "10", "-1s", "+1s", "1.5s", " 1s", "1s ", "1 s", "1S", "1sec",
                          "1fortnight", "1ms5", "1µs", "0x10s", "ms10"}) {
    EXPECT_EQ(ParseDuration(bad), std::nullopt) << '"' << bad << '"';
  }
}

TEST(ParseDurationTest, RejectsOverflow) {
  EXPECT_EQ(ParseDuration("99999999999999999999d"), std::nullopt);  // more than 64 bits
  EXPECT_EQ(ParseDuration("9223372036854775808ns"), std::nullopt);  // 2^63
  EXPECT_EQ(ParseDuration("9223372036855s"), std::nullopt);         // fits 64 bits, not ns
  EXPECT_EQ(ParseDuration("18446744073709551615h"), std::nullopt);
}

TEST(FormatDurationTest, UsesTheLargestExactUnitAndRoundTrips) {
  EXPECT_EQ(FormatDuration(seconds(0)), "0s");
  EXPECT_EQ(FormatDuration(milliseconds(1500)), "1500ms");
  EXPECT_EQ(FormatDuration(seconds(120)), "2m");
  EXPECT_EQ(FormatDuration(hours(48)), "2d");
  EXPECT_EQ(FormatDuration(nanoseconds(4'000'000'001)), "4000000001ns");
  for (const char* text : {"1ns", "999us", "500ms", "59s", "59m", "23h", "7d"}) {
    const std::optional<Duration> d = ParseDuration(text);
    ASSERT_TRUE(d.has_value()) << text;
    EXPECT_EQ(FormatDuration(*d), text);
  }
}

TEST(ParseCountTest, AcceptsDecimalDigitsOnly) {
  EXPECT_EQ(ParseCount("0"), 0u);
  EXPECT_EQ(ParseCount("010"), 10u);  // decimal, not octal
  EXPECT_EQ(ParseCount("18446744073709551615"), std::numeric_limits<uint64_t>::max());
  for (const char* bad : {"", "-5", "+5", "0x10", "1e3", "5 ", "18446744073709551616"}) {
    EXPECT_EQ(ParseCount(bad), std::nullopt) << '"' << bad << '"';
  }
}

TEST(PatternTest, NamesRoundTrip) {
  for (Pattern p : {Pattern::kSteady, Pattern::kBurst, Pattern::kSpike}) {
    EXPECT_EQ(ParsePattern(PatternName(p)), p);
  }
  EXPECT_EQ(ParsePattern("wave"), std::nullopt);
  EXPECT_EQ(ParsePattern("Steady"), std::nullopt);
}

// --- Validation ---------------------------------------------------------------------

TEST(ValidateSpecTest, AcceptsTheDefaults) {
  const Limit limit{10, seconds(1), 5};
  EXPECT_EQ(ValidateSpec(Spec(Pattern::kSpike, 30, seconds(10), limit)), "");
}

TEST(ValidateSpecTest, RefusesImpossibleSpecs) {
  const Limit ok = Limit::PerPeriod(10, seconds(1));
  auto error_for = [&](auto mutate) {
    SimulationSpec spec = Spec(Pattern::kSteady, 30, seconds(10), ok);
    mutate(spec);
    const SimulationResult result = Simulate(spec);
    EXPECT_EQ(result.error, ValidateSpec(spec));
    EXPECT_TRUE(result.algorithms.empty());
    return result.error;
  };
  EXPECT_NE(error_for([](SimulationSpec& s) { s.algorithms.clear(); }), "");
  EXPECT_NE(error_for([](SimulationSpec& s) { s.rate = 0; }), "");
  EXPECT_NE(error_for([](SimulationSpec& s) { s.rate = -3; }), "");
  EXPECT_NE(error_for([](SimulationSpec& s) { s.rate = std::nan(""); }), "");
  EXPECT_NE(error_for([](SimulationSpec& s) { s.rate = 1e-9; }), "");  // rounds to 0
  EXPECT_NE(error_for([](SimulationSpec& s) { s.rate = 2e9; }), "");
  EXPECT_NE(error_for([](SimulationSpec& s) { s.duration = seconds(0); }), "");
  EXPECT_NE(error_for([](SimulationSpec& s) { s.bucket = seconds(0); }), "");
  EXPECT_NE(error_for([](SimulationSpec& s) { s.limit.period = seconds(0); }), "");
  EXPECT_NE(error_for([](SimulationSpec& s) { s.limit.limit = kMaxQuantity + 1; }), "");
  EXPECT_NE(error_for([](SimulationSpec& s) { s.limit.burst = kMaxQuantity + 1; }), "");
  EXPECT_NE(error_for([](SimulationSpec& s) { s.cost = kMaxQuantity + 1; }), "");
}

TEST(ValidateSpecTest, LogLimitAboveItsMemoryBoundIsRefusedOnlyWithTheLog) {
  const Limit huge = Limit::PerPeriod(kMaxLogLimit + 1, seconds(1));
  const std::string error = ValidateSpec(Spec(Pattern::kSteady, 30, seconds(2), huge));
  EXPECT_NE(error.find("sliding_window_log"), std::string::npos) << error;
  EXPECT_EQ(ValidateSpec(Spec(Pattern::kSteady, 30, seconds(2), huge, {Algorithm::kGcra})), "");
  const Limit at_bound = Limit::PerPeriod(kMaxLogLimit, seconds(1));
  EXPECT_EQ(ValidateSpec(Spec(Pattern::kSteady, 30, seconds(2), at_bound)), "");
}

TEST(ValidateSpecTest, TooManyArrivalsOrRowsIsRefused) {
  const Limit limit = Limit::PerPeriod(10, seconds(1));
  EXPECT_NE(ValidateSpec(Spec(Pattern::kSteady, 1e9, hours(1), limit)), "");
  EXPECT_NE(ValidateSpec(Spec(Pattern::kSteady, 0.001, hours(24 * 30), limit)), "");  // rows
  // Exactly kMaxArrivals is allowed; one more is not.
  EXPECT_EQ(ValidateSpec(Spec(Pattern::kSteady, 2e6, seconds(10), limit)), "");
  EXPECT_NE(ValidateSpec(Spec(Pattern::kSteady, 2e6, seconds(10) + nanoseconds(1), limit)), "");
}

// --- Arrival patterns ---------------------------------------------------------------

TEST(PatternTest, SteadySpreadsExactlyRatePerSecond) {
  const SimulationResult r =
      Simulate(Spec(Pattern::kSteady, 30, seconds(10), Limit::PerPeriod(10, seconds(1))));
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.offered, std::vector<uint64_t>(10, 30));
  EXPECT_EQ(r.total_offered, 300u);
}

TEST(PatternTest, FractionalRateKeepsItsLongRunAverage) {
  // 7.5/s evenly spaced: arrivals every 133.33 ms, so rows alternate 8 and 7.
  const SimulationResult r =
      Simulate(Spec(Pattern::kSteady, 7.5, seconds(4), Limit::PerPeriod(10, seconds(1))));
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.offered, (std::vector<uint64_t>{8, 7, 8, 7}));
}

TEST(PatternTest, BurstKeepsEachRowsCountButFrontLoadsIt) {
  const Limit limit = Limit::PerPeriod(10, seconds(1));
  const SimulationResult burst = Simulate(Spec(Pattern::kBurst, 30, seconds(5), limit));
  const SimulationResult steady = Simulate(Spec(Pattern::kSteady, 30, seconds(5), limit));
  ASSERT_EQ(burst.error, "");
  EXPECT_EQ(burst.offered, steady.offered);
  // All 30 come within 96.7 ms, in which a bucket regains less than one token: each row
  // admits the 10 a full bucket holds, and the quiet 900 ms refill it.
  EXPECT_EQ(Allowed(Find(burst, Algorithm::kTokenBucket)), std::vector<uint64_t>(5, 10));
  // The sliding window counter assumes the previous row's 10 were spread over it, so
  // in the first 96.7 ms of the next row they still weigh more than 9 and nothing
  // passes; that row's 0 then weighs nothing in the row after.
  EXPECT_EQ(Allowed(Find(burst, Algorithm::kSlidingWindowCounter)),
            (std::vector<uint64_t>{10, 0, 10, 0, 10}));
  // Fixed windows line up with the rows, so each burst still gets its 10.
  EXPECT_EQ(Allowed(Find(burst, Algorithm::kFixedWindow)), std::vector<uint64_t>(5, 10));
}

TEST(PatternTest, SpikeIsSixteenTimesTheBaselineFromFortyToSixtyPercent) {
  const SimulationResult r =
      Simulate(Spec(Pattern::kSpike, 30, seconds(10), Limit::PerPeriod(10, seconds(1))));
  ASSERT_EQ(r.error, "");
  // Baseline 7.5/s alternates 8 and 7 from time 0; the spike is 120/s over [4s, 6s).
  EXPECT_EQ(r.offered, (std::vector<uint64_t>{8, 7, 8, 7, 120, 120, 8, 7, 8, 7}));
  EXPECT_EQ(r.total_offered, 300u);
}

TEST(PatternTest, LastRowIsShorterWhenDurationIsNotAMultiple) {
  const SimulationResult r =
      Simulate(Spec(Pattern::kSteady, 30, milliseconds(2500), Limit::PerPeriod(10, seconds(1))));
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.offered, (std::vector<uint64_t>{30, 30, 15}));
  for (const AlgorithmResult& a : r.algorithms) EXPECT_EQ(a.rows.size(), 3u);
}

TEST(PatternTest, NarrowerRowsSplitTheSameArrivals) {
  SimulationSpec spec = Spec(Pattern::kSteady, 30, seconds(2), Limit::PerPeriod(10, seconds(1)));
  spec.bucket = milliseconds(500);
  const SimulationResult r = Simulate(spec);
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.offered, (std::vector<uint64_t>{15, 15, 15, 15}));
  // The fixed window of 1s admits its 10 in the first half of each second.
  EXPECT_EQ(Allowed(Find(r, Algorithm::kFixedWindow)), (std::vector<uint64_t>{10, 0, 10, 0}));
}

// --- What the algorithms do with them -----------------------------------------------

// Arrivals every 100 ms against 10 per second. The buckets (token, leaky, GCRA) regain
// exactly one request's worth between arrivals; the fixed windows hold exactly 10
// arrivals each; the log drops each entry exactly 1 s later, just as the arrival 10
// places on comes. So all five admit everything, from the first period on.
TEST(SimulateTest, SteadyAtTheLimitIsAllAllowed) {
  const SimulationResult r =
      Simulate(Spec(Pattern::kSteady, 10, seconds(10), Limit::PerPeriod(10, seconds(1))));
  ASSERT_EQ(r.error, "");
  ASSERT_EQ(r.total_offered, 100u);
  for (Algorithm a : {Algorithm::kTokenBucket, Algorithm::kGcra, Algorithm::kLeakyBucket,
                      Algorithm::kFixedWindow, Algorithm::kSlidingWindowLog}) {
    EXPECT_EQ(Find(r, a).total, (RowCounts{100, 0})) << AlgorithmName(a);
  }
  // The sliding window counter is the exception: it assumes the previous window's
  // requests were spread evenly, so at 1.0 s it still weighs all 10 of them and refuses
  // the arrival. From then on each window's 9 weigh in a little less every 100 ms than
  // the next arrival adds (9 * 0.9 + 1 + 1 > 10 at 0.1 s only), so it admits 9 of 10.
  EXPECT_EQ(Allowed(Find(r, Algorithm::kSlidingWindowCounter)),
            (std::vector<uint64_t>{10, 9, 9, 9, 9, 9, 9, 9, 9, 9}));
}

// Arrivals every 33.3 ms (30 a second, t_i = floor(i * 1e9 / 30) ns) against 10/s.
TEST(SimulateTest, SteadyAtThreeTimesTheLimitAllowsAThird) {
  const SimulationResult r =
      Simulate(Spec(Pattern::kSteady, 30, seconds(10), Limit::PerPeriod(10, seconds(1))));
  ASSERT_EQ(r.error, "");
  // Fixed window: the first 10 arrivals of each window, 20 denied.
  EXPECT_EQ(Allowed(Find(r, Algorithm::kFixedWindow)), std::vector<uint64_t>(10, 10));
  EXPECT_EQ(Denied(Find(r, Algorithm::kFixedWindow)), std::vector<uint64_t>(10, 20));
  // Log: arrival i + 30 comes exactly 1 s after arrival i, which it evicts, so the
  // arrivals 30k .. 30k+9 are admitted in every second.
  EXPECT_EQ(Allowed(Find(r, Algorithm::kSlidingWindowLog)), std::vector<uint64_t>(10, 10));
  // Buckets of 10: a full bucket plus a third of a token per arrival, so arrival i is
  // admitted while the admissions stay within 10 + floor(i / 3): arrivals 0..13, then
  // every third. That is 10 + 9 in the first second and 10 in each one after (the
  // refill is exactly 1 token per 3 arrivals because t_{i+3} - t_i is exactly 100 ms).
  const std::vector<uint64_t> bucket = {19, 10, 10, 10, 10, 10, 10, 10, 10, 10};
  EXPECT_EQ(Allowed(Find(r, Algorithm::kTokenBucket)), bucket);
  EXPECT_EQ(Allowed(Find(r, Algorithm::kLeakyBucket)), bucket);
  EXPECT_EQ(Allowed(Find(r, Algorithm::kGcra)), bucket);
  EXPECT_EQ(Find(r, Algorithm::kGcra).total, (RowCounts{109, 191}));
  // Sliding window counter: 10 in the first window. With `p` previous and `c` current
  // admissions, it admits at elapsed e when p(1 - e) + c + 1 <= 10: with p = 10 that is
  // e >= (c + 1) / 10, arrivals 3, 6, .., 27 (9); with p = 9 it is e >= c / 9, nine
  // arrivals again (c = 0..8), and c = 9 would need e = 1. So 10, then 9 a second.
  EXPECT_EQ(Allowed(Find(r, Algorithm::kSlidingWindowCounter)),
            (std::vector<uint64_t>{10, 9, 9, 9, 9, 9, 9, 9, 9, 9}));
}

TEST(SimulateTest, SpikeDeniesOnlyDuringTheSpikeForTokenBucket) {
  // The defaults of `sluice simulate`: 10/s, burst 5, spike pattern at 30.
  const SimulationResult r =
      Simulate(Spec(Pattern::kSpike, 30, seconds(10), Limit{10, seconds(1), 5}));
  ASSERT_EQ(r.error, "");
  const AlgorithmResult& tb = Find(r, Algorithm::kTokenBucket);
  // The 7.5/s baseline never drains a bucket refilled at 10/s, and the bucket is
  // emptied by the spike but refills 1.33 tokens before the first baseline arrival
  // after it.
  EXPECT_EQ(Denied(tb), (std::vector<uint64_t>{0, 0, 0, 0, 106, 110, 0, 0, 0, 0}));
  // Into the spike with a full bucket of 5, plus floor(119 / 12) refilled during the
  // first spike second; then the sustained 10.
  EXPECT_EQ(tb.rows[4].allowed, 14u);
  EXPECT_EQ(tb.rows[5].allowed, 10u);
  for (const AlgorithmResult& a : r.algorithms) {
    EXPECT_EQ(a.total.allowed + a.total.denied, r.total_offered) << AlgorithmName(a.algorithm);
    for (size_t row : {0, 1, 2, 3, 6, 7, 8, 9}) {
      EXPECT_EQ(a.rows[row].denied, 0u) << AlgorithmName(a.algorithm) << " row " << row;
    }
  }
}

TEST(SimulateTest, CostAboveCapacityIsAlwaysDenied) {
  SimulationSpec spec = Spec(Pattern::kSteady, 5, seconds(3), Limit::PerPeriod(10, seconds(1)));
  spec.cost = 11;
  const SimulationResult r = Simulate(spec);
  ASSERT_EQ(r.error, "");
  for (const AlgorithmResult& a : r.algorithms) {
    EXPECT_EQ(a.total, (RowCounts{0, 15})) << AlgorithmName(a.algorithm);
  }
}

TEST(SimulateTest, ZeroLimitDeniesEverything) {
  const SimulationResult r =
      Simulate(Spec(Pattern::kSteady, 5, seconds(2), Limit::PerPeriod(0, seconds(1))));
  ASSERT_EQ(r.error, "");
  for (const AlgorithmResult& a : r.algorithms) {
    EXPECT_EQ(a.total, (RowCounts{0, 10})) << AlgorithmName(a.algorithm);
  }
}

TEST(SimulateTest, ResultsAreInSpecOrder) {
  const std::vector<Algorithm> order = {Algorithm::kGcra, Algorithm::kFixedWindow};
  const SimulationResult r =
      Simulate(Spec(Pattern::kSteady, 5, seconds(2), Limit::PerPeriod(10, seconds(1)), order));
  ASSERT_EQ(r.algorithms.size(), 2u);
  EXPECT_EQ(r.algorithms[0].algorithm, Algorithm::kGcra);
  EXPECT_EQ(r.algorithms[1].algorithm, Algorithm::kFixedWindow);
}

TEST(SimulateTest, IsDeterministic) {
  for (Pattern p : {Pattern::kSteady, Pattern::kBurst, Pattern::kSpike}) {
    const SimulationSpec spec = Spec(p, 37.25, seconds(7), Limit{10, milliseconds(700), 4});
    const SimulationResult first = Simulate(spec);
    const SimulationResult second = Simulate(spec);
    ASSERT_EQ(first.error, "");
    EXPECT_EQ(first, second) << PatternName(p);
    EXPECT_EQ(FormatTable(spec, first), FormatTable(spec, second));
    EXPECT_EQ(FormatCsv(spec, first), FormatCsv(spec, second));
  }
}

// --- Output -------------------------------------------------------------------------

TEST(FormatTableTest, AllAlgorithmsSideBySideWithTotalsAndChart) {
  const SimulationSpec spec = Spec(Pattern::kSpike, 30, seconds(10), Limit{10, seconds(1), 5});
  const std::string table = FormatTable(spec, Simulate(spec));
  const std::string header_line = table.substr(table.find("second"));
  const std::string header = header_line.substr(0, header_line.find('\n'));
  size_t last = 0;
  for (Algorithm a : kAllAlgorithms) {
    const size_t at = header.find(AlgorithmName(a), last);
    EXPECT_NE(at, std::string::npos) << AlgorithmName(a) << " in " << header;
    last = at;
    // And a sparkline labelled with the name.
    EXPECT_NE(table.find(std::string(AlgorithmName(a)) + "  "), std::string::npos);
  }
  EXPECT_NE(table.find("pattern spike, rate 30/s"), std::string::npos) << table;
  EXPECT_NE(table.find("limit 10 per 1s, burst 5, cost 1"), std::string::npos) << table;
  EXPECT_NE(table.find("\n total      300        84/216"), std::string::npos) << table;
  // Offered: 8, 7, ... on the scale of the 120 of the spike.
  EXPECT_NE(table.find("offered                 |▁▁▁▁██▁▁▁▁|"), std::string::npos) << table;
  // Token bucket: 14 is the most any algorithm allowed in a row, so its first spike
  // second is the full bar; 8 of 14 is ceil(4.6) = 5 eighths, 7 of 14 is 4, 10 is 6.
  EXPECT_NE(table.find("token_bucket            |▅▄▅▄█▆▅▄▅▄|"), std::string::npos) << table;
}

TEST(FormatTableTest, OneAlgorithmHasNoBurstWhenItIgnoresIt) {
  const SimulationSpec spec =
      Spec(Pattern::kSteady, 30, seconds(2), Limit{10, seconds(1), 5}, {Algorithm::kFixedWindow});
  const std::string table = FormatTable(spec, Simulate(spec));
  EXPECT_EQ(table.find("burst"), std::string::npos) << table;
  EXPECT_EQ(table.find("token_bucket"), std::string::npos) << table;
  EXPECT_NE(table.find("fixed_window"), std::string::npos) << table;
}

TEST(FormatTableTest, NothingAllowedDrawsBlankBars) {
  const SimulationSpec spec =
      Spec(Pattern::kSteady, 5, seconds(3), Limit::PerPeriod(0, seconds(1)), {Algorithm::kGcra});
  const std::string table = FormatTable(spec, Simulate(spec));
  EXPECT_NE(table.find("gcra     |   |"), std::string::npos) << table;
}

TEST(FormatCsvTest, HeaderThenOneLinePerSecondPerAlgorithm) {
  const SimulationSpec spec = Spec(Pattern::kSpike, 30, seconds(10), Limit{10, seconds(1), 5});
  const std::string csv = FormatCsv(spec, Simulate(spec));
  EXPECT_EQ(csv.rfind("second,algorithm,allowed,denied\n", 0), 0u) << csv;
  EXPECT_EQ(CountLines(csv), 1 + 10 * 6);
  for (int second = 0; second < 10; ++second) {
    for (Algorithm a : kAllAlgorithms) {
      const std::string prefix =
          "\n" + std::to_string(second) + "," + std::string(AlgorithmName(a)) + ",";
      EXPECT_NE(csv.find(prefix), std::string::npos) << prefix;
    }
  }
  EXPECT_NE(csv.find("\n4,token_bucket,14,106\n"), std::string::npos) << csv;
  EXPECT_NE(csv.find("\n5,fixed_window,10,110\n"), std::string::npos) << csv;
}

TEST(FormatCsvTest, FractionalRowStartsInSeconds) {
  SimulationSpec spec =
      Spec(Pattern::kSteady, 4, seconds(1), Limit::PerPeriod(10, seconds(1)), {Algorithm::kGcra});
  spec.bucket = milliseconds(250);
  EXPECT_EQ(FormatCsv(spec, Simulate(spec)),
            "second,algorithm,allowed,denied\n"
            "0,gcra,1,0\n"
            "0.25,gcra,1,0\n"
            "0.5,gcra,1,0\n"
            "0.75,gcra,1,0\n");
}

}  // namespace
}  // namespace sluice::sim
