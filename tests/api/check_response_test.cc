// The JSON answer to a /v1/check query, its status and its wait, for evaluations built
// by hand (every verdict, a delay rule's hold, allow-listed and shadow rules), each
// checked as exact text and as JSON that simdjson parses back.
#include "api/check_response.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>

#include "config/config.h"
#include "gate/gate.h"
#include "metrics/metrics.h"
#include "sluice/decision.h"
#include "store/memory_store.h"

namespace sluice::api {
namespace {

using namespace std::chrono_literals;
using metrics::Outcome;

// A rule and its compiled form, as a Policy would hold them.
struct TestRule {
  explicit TestRule(std::string name) {
    rule.name = std::move(name);
    rule.limit = Limit::PerPeriod(100, 60s);
    compiled.rule = &rule;
  }
  config::Rule rule;
  gate::CompiledRule compiled;
};

gate::RuleResult& AddResult(gate::Evaluation& e, const TestRule& rule, Outcome outcome,
                            Decision decision, Limit limit = Limit::PerPeriod(100, 60s)) {
  gate::RuleResult& r = e.results.emplace_back();
  r.rule = &rule.compiled;
  r.limit = limit;
  r.decision = decision;
  r.outcome = outcome;
  return r;
}

Decision Allowed(uint64_t remaining, Duration reset_after) {
  return Decision{.allowed = true,
                  .limit = 100,
                  .remaining = remaining,
                  .reset_after = reset_after,
                  .retry_after = 0ns};
}
Decision Refused(Duration retry_after, Duration reset_after = 60s) {
  return Decision{.allowed = false,
                  .limit = 100,
                  .remaining = 0,
                  .reset_after = reset_after,
                  .retry_after = retry_after};
}

std::string Answer(const gate::Evaluation& e) {
  std::string out = "prefix:";  // appended, not assigned
  AppendCheckAnswer(e, out);
  EXPECT_EQ(out.substr(0, 7), "prefix:");
  return out.substr(7);
}

// The answer parses as JSON; returns the parsed "allowed".
bool ParsesAsJson(const std::string& text) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  const simdjson::error_code error = parser.parse(text).get(root);
  EXPECT_EQ(error, simdjson::SUCCESS) << text;
  if (error != simdjson::SUCCESS) return false;
  bool allowed = false;
  EXPECT_EQ(root["allowed"].get(allowed), simdjson::SUCCESS) << text;
  simdjson::dom::array rules;
  EXPECT_EQ(root["rules"].get(rules), simdjson::SUCCESS) << text;
  return allowed;
}

TEST(CheckAnswer, Allowed) {
  TestRule api("api"), global("global");
  gate::Evaluation e;
  AddResult(e, api, Outcome::kAllowed, Allowed(99, 600ms));
  AddResult(e, global, Outcome::kAllowed, Allowed(4, 59'000'000'001ns), Limit::PerPeriod(5, 60s));
  const std::string answer = Answer(e);
  EXPECT_EQ(answer,
            R"({"allowed":true,"rules":[)"
            R"({"rule":"api","limit":100,"remaining":99,"reset_after_ms":600,"retry_after_ms":0},)"
            R"({"rule":"global","limit":5,"remaining":4,"reset_after_ms":59001,)"
            R"("retry_after_ms":0}]})");
  EXPECT_TRUE(ParsesAsJson(answer));
  EXPECT_EQ(CheckStatus(e), 200);
  EXPECT_EQ(CheckRetryAfter(e), 0ns);
}

TEST(CheckAnswer, NoMatchingRule) {
  gate::Evaluation e;
  EXPECT_EQ(Answer(e), R"({"allowed":true,"rules":[]})");
  EXPECT_EQ(CheckStatus(e), 200);
}

TEST(CheckAnswer, LimitShowsTheLimitAfterOverrides) {
  TestRule api("api");
  gate::Evaluation e;
  AddResult(e, api, Outcome::kAllowed, Allowed(999, 1s), Limit::PerPeriod(1000, 60s));
  EXPECT_EQ(Answer(e), R"({"allowed":true,"rules":[{"rule":"api","limit":1000,"remaining":999,)"
                       R"("reset_after_ms":1000,"retry_after_ms":0}]})");
}

TEST(CheckAnswer, Limited) {
  TestRule first("first"), api("api");
  gate::Evaluation e;
  AddResult(e, first, Outcome::kAllowed, Allowed(7, 2s));
  const gate::RuleResult& limiting =
      AddResult(e, api, Outcome::kLimited, Refused(1'500'000'001ns, 60s));
  e.verdict = gate::Verdict::kLimited;
  e.deciding = &limiting;
  e.retry_after = 1'500'000'001ns;
  const std::string answer = Answer(e);
  EXPECT_EQ(answer, R"({"allowed":false,"error":"rate_limited","rule":"api","retry_after_ms":1501,)"
                    R"("rules":[{"rule":"first","limit":100,"remaining":7,"reset_after_ms":2000,)"
                    R"("retry_after_ms":0},{"rule":"api","limit":100,"remaining":0,)"
                    R"("reset_after_ms":60000,"retry_after_ms":1501}]})");
  EXPECT_FALSE(ParsesAsJson(answer));
  EXPECT_EQ(CheckStatus(e), 429);
  EXPECT_EQ(CheckRetryAfter(e), 1'500'000'001ns);
}

TEST(CheckAnswer, MillisecondsRoundUp) {
  struct Case {
    Duration wait;
    std::string_view ms;
  };
  const Case cases[] = {
      {0ns, "0"},         {1ns, "1"},       {999'999ns, "1"}, {1ms, "1"},
      {1'000'001ns, "2"}, {1999ms, "1999"}, {-5ms, "0"},      {Decision::kNever, "null"}};
  TestRule api("api");
  for (const Case& c : cases) {
    gate::Evaluation e;
    const gate::RuleResult& r = AddResult(e, api, Outcome::kLimited, Refused(c.wait, c.wait));
    e.verdict = gate::Verdict::kLimited;
    e.deciding = &r;
    e.retry_after = c.wait;
    const std::string ms(c.ms);
    const std::string answer = Answer(e);
    EXPECT_EQ(answer, R"({"allowed":false,"error":"rate_limited","rule":"api","retry_after_ms":)" +
                          ms + R"(,"rules":[{"rule":"api","limit":100,"remaining":0,)" +
                          R"("reset_after_ms":)" + ms + R"(,"retry_after_ms":)" + ms + "}]}")
        << c.wait.count();
    ParsesAsJson(answer);
  }
}

TEST(CheckAnswer, WaitThatNeverEndsIsNull) {
  TestRule api("api");
  gate::Evaluation e;
  const gate::RuleResult& r = AddResult(e, api, Outcome::kLimited, Refused(Decision::kNever, 0ns));
  e.verdict = gate::Verdict::kLimited;
  e.deciding = &r;
  e.retry_after = Decision::kNever;
  const std::string answer = Answer(e);
  EXPECT_EQ(answer, R"({"allowed":false,"error":"rate_limited","rule":"api","retry_after_ms":null,)"
                    R"("rules":[{"rule":"api","limit":100,"remaining":0,"reset_after_ms":0,)"
                    R"("retry_after_ms":null}]})");
  EXPECT_FALSE(ParsesAsJson(answer));
  EXPECT_EQ(CheckStatus(e), 429);
  EXPECT_EQ(CheckRetryAfter(e), Decision::kNever);
}

// BUG (src/api/check_response.cc, AppendMilliseconds): the core algorithms report a
// duration too long for 64 bits as the longest finite one, INT64_MAX - 1 ns
// (src/core/algorithms.cc, kMaxDurationNs, "< kNever"); `ns + 999'999` then overflows
// int64 (undefined behaviour; UBSan: "signed integer overflow"), and in practice the
// answer says 18446734850337514 ms or so instead of 9223372036855. Fails until fixed.
TEST(CheckAnswer, LongestFiniteDurationRoundsUpWithoutOverflow) {
  const Duration longest(std::numeric_limits<int64_t>::max() - 1);
  TestRule api("api");
  gate::Evaluation e;
  AddResult(e, api, Outcome::kAllowed, Allowed(0, longest));
  EXPECT_EQ(Answer(e), R"({"allowed":true,"rules":[{"rule":"api","limit":100,"remaining":0,)"
                       R"("reset_after_ms":9223372036855,"retry_after_ms":0}]})");
}

TEST(CheckAnswer, Denied) {
  gate::Evaluation e;
  e.verdict = gate::Verdict::kDenied;
  const std::string answer = Answer(e);
  EXPECT_EQ(answer, R"({"allowed":false,"error":"forbidden","rules":[]})");
  EXPECT_FALSE(ParsesAsJson(answer));
  EXPECT_EQ(CheckStatus(e), 403);
  EXPECT_EQ(CheckRetryAfter(e), 0ns);
}

TEST(CheckAnswer, MissingKey) {
  TestRule first("first"), keyed("keyed");
  gate::Evaluation e;
  AddResult(e, first, Outcome::kAllowed, Allowed(3, 1s));
  const gate::RuleResult& missing = AddResult(e, keyed, Outcome::kMissingKey, Decision{});
  e.verdict = gate::Verdict::kMissingKey;
  e.deciding = &missing;
  const std::string answer = Answer(e);
  EXPECT_EQ(answer, R"({"allowed":false,"error":"missing_key","rule":"keyed","rules":[)"
                    R"({"rule":"first","limit":100,"remaining":3,"reset_after_ms":1000,)"
                    R"("retry_after_ms":0},{"rule":"keyed","missing_key":true}]})");
  EXPECT_FALSE(ParsesAsJson(answer));
  EXPECT_EQ(CheckStatus(e), 400);
}

TEST(CheckAnswer, DelayHoldIsAnsweredAsLimited) {
  TestRule plain("plain"), slow("slow"), slower("slower");
  gate::Evaluation e;
  AddResult(e, plain, Outcome::kAllowed, Allowed(50, 3s));
  gate::RuleResult& held = AddResult(e, slow, Outcome::kAllowed, Refused(250ms, 10s));
  held.pending_delay = true;
  gate::RuleResult& held2 = AddResult(e, slower, Outcome::kAllowed, Refused(400ms, 20s));
  held2.pending_delay = true;
  e.verdict = gate::Verdict::kHold;
  e.deciding = nullptr;  // as Conclude leaves it for a hold
  e.hold_for = 400ms;
  e.retry_after = 0ns;
  const std::string answer = Answer(e);
  // The first rule that waits is named; the wait is the hold.
  EXPECT_EQ(answer, R"({"allowed":false,"error":"rate_limited","rule":"slow","retry_after_ms":400,)"
                    R"("rules":[{"rule":"plain","limit":100,"remaining":50,"reset_after_ms":3000,)"
                    R"("retry_after_ms":0},{"rule":"slow","limit":100,"remaining":0,)"
                    R"("reset_after_ms":10000,"retry_after_ms":250},{"rule":"slower","limit":100,)"
                    R"("remaining":0,"reset_after_ms":20000,"retry_after_ms":400}]})");
  EXPECT_FALSE(ParsesAsJson(answer));
  EXPECT_EQ(CheckStatus(e), 429);
  EXPECT_EQ(CheckRetryAfter(e), 400ms);
}

TEST(CheckAnswer, AllowListed) {
  gate::Evaluation e;
  e.allow_listed = true;
  const std::string answer = Answer(e);
  EXPECT_EQ(answer, R"({"allowed":true,"allow_listed":true,"rules":[]})");
  EXPECT_TRUE(ParsesAsJson(answer));
  EXPECT_EQ(CheckStatus(e), 200);
}

TEST(CheckAnswer, ShadowLimitedPassesAndSaysSo) {
  TestRule shadow("shadow");
  gate::Evaluation e;
  AddResult(e, shadow, Outcome::kShadowLimited, Refused(2s, 12s), Limit::PerPeriod(5, 60s));
  const std::string answer = Answer(e);
  EXPECT_EQ(answer, R"({"allowed":true,"rules":[{"rule":"shadow","limit":5,"remaining":0,)"
                    R"("reset_after_ms":12000,"retry_after_ms":2000,"shadow_limited":true}]})");
  EXPECT_TRUE(ParsesAsJson(answer));
  EXPECT_EQ(CheckStatus(e), 200);
  EXPECT_EQ(CheckRetryAfter(e), 0ns);
}

TEST(CheckAnswer, DelayedThenAdmittedIsPlainAllowed) {
  TestRule slow("slow");
  gate::Evaluation e;
  AddResult(e, slow, Outcome::kDelayed, Allowed(0, 5s));
  EXPECT_EQ(Answer(e), R"({"allowed":true,"rules":[{"rule":"slow","limit":100,"remaining":0,)"
                       R"("reset_after_ms":5000,"retry_after_ms":0}]})");
}

TEST(CheckAnswer, RuleNamesAreEscaped) {
  // Config restricts rule names, but the answer must be JSON whatever they hold.
  TestRule odd(std::string("a\"b\\c\x80\x01\x7f/"));
  gate::Evaluation e;
  const gate::RuleResult& r = AddResult(e, odd, Outcome::kLimited, Refused(1s));
  e.verdict = gate::Verdict::kLimited;
  e.deciding = &r;
  e.retry_after = 1s;
  const std::string answer = Answer(e);
  const std::string quoted = R"("a\"b\\c\u0080\u0001\u007f/")";
  EXPECT_EQ(answer, R"({"allowed":false,"error":"rate_limited","rule":)" + quoted +
                        R"(,"retry_after_ms":1000,"rules":[{"rule":)" + quoted +
                        R"(,"limit":100,"remaining":0,"reset_after_ms":60000,)"
                        R"("retry_after_ms":1000}]})");
  for (const char c : answer) {
    EXPECT_TRUE(c >= 0x20 && c < 0x7f) << static_cast<int>(static_cast<unsigned char>(c));
  }
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  ASSERT_EQ(parser.parse(answer).get(root), simdjson::SUCCESS) << answer;
  std::string_view name;
  ASSERT_EQ(root["rule"].get(name), simdjson::SUCCESS);
  // Bytes above 0x7e come back as the code points of the same number (json_text.h).
  EXPECT_EQ(name, "a\"b\\c\xc2\x80\x01\x7f/");
  ASSERT_EQ(root["rules"].at(0)["rule"].get(name), simdjson::SUCCESS);
  EXPECT_EQ(name, "a\"b\\c\xc2\x80\x01\x7f/");
}

TEST(CheckAnswer, BatchOfAnswersIsJson) {
  // The server writes a batch as '[' answers joined by ',' ']'.
  TestRule api("api");
  gate::Evaluation allowed, limited, denied;
  AddResult(allowed, api, Outcome::kAllowed, Allowed(1, 1s));
  const gate::RuleResult& r = AddResult(limited, api, Outcome::kLimited, Refused(Decision::kNever));
  limited.verdict = gate::Verdict::kLimited;
  limited.deciding = &r;
  limited.retry_after = Decision::kNever;
  denied.verdict = gate::Verdict::kDenied;
  std::string out = "[";
  AppendCheckAnswer(allowed, out);
  out += ',';
  AppendCheckAnswer(limited, out);
  out += ',';
  AppendCheckAnswer(denied, out);
  out += ']';
  simdjson::dom::parser parser;
  simdjson::dom::array array;
  ASSERT_EQ(parser.parse(out).get(array), simdjson::SUCCESS) << out;
  ASSERT_EQ(array.size(), 3u);
  EXPECT_EQ(array.at(1)["retry_after_ms"].is_null(), true);
  EXPECT_EQ(std::string_view(array.at(2)["error"]), "forbidden");
}

// --- From a real gate evaluation --------------------------------------------------------

constexpr Timestamp kStart = FromNanos(int64_t{3600} * 1000 * 1'000'000'000);

class CheckAnswerFromGateTest : public ::testing::Test {
 protected:
  void Use(std::string_view yaml) {
    const config::LoadResult loaded = config::LoadConfigText(yaml, "test.yaml");
    for (const config::ConfigError& error : loaded.errors) ADD_FAILURE() << error.ToString();
    ASSERT_NE(loaded.config, nullptr);
    policy_ = gate::Policy::Compile(loaded.config, registry_);
  }
  metrics::Registry registry_;
  metrics::WorkerMetrics& metrics_ = registry_.AddWorker();
  store::MemoryStore store_{store::MemoryStore::Options{.max_keys = 64, .hash_seed = 7}};
  gate::Evaluator evaluator_{store_, metrics_};
  std::shared_ptr<const gate::Policy> policy_;
};

TEST_F(CheckAnswerFromGateTest, NamedRuleLimitedAfterItsQuota) {
  Use(R"(
rules:
  - name: api
    algorithm: token_bucket
    limit: 2
    period: 1s
)");
  gate::Evaluation e;
  evaluator_.EvaluateRule(*policy_->FindRule("api"), "k", 2, kStart, e);
  ASSERT_EQ(e.verdict, gate::Verdict::kAllow);
  EXPECT_EQ(Answer(e), R"({"allowed":true,"rules":[{"rule":"api","limit":2,"remaining":0,)"
                       R"("reset_after_ms":1000,"retry_after_ms":0}]})");
  evaluator_.EvaluateRule(*policy_->FindRule("api"), "k", 1, kStart, e);
  ASSERT_EQ(e.verdict, gate::Verdict::kLimited);
  EXPECT_EQ(CheckStatus(e), 429);
  EXPECT_EQ(Answer(e), R"({"allowed":false,"error":"rate_limited","rule":"api",)"
                       R"("retry_after_ms":500,"rules":[{"rule":"api","limit":2,"remaining":0,)"
                       R"("reset_after_ms":1000,"retry_after_ms":500}]})");
}

// BUG, as LongestFiniteDurationRoundsUpWithoutOverflow, reached from a valid config: a
// token bucket refilling 1 per 100000 days, burst 2, asked for cost 2 has a reset time
// past 2^63 ns, which the algorithm reports as INT64_MAX - 1 ns. Fails until fixed.
TEST_F(CheckAnswerFromGateTest, SaturatedResetTimeFromAValidConfig) {
  Use(R"(
rules:
  - name: slow
    algorithm: token_bucket
    limit: 1
    burst: 2
    period: 100000d
)");
  gate::Evaluation e;
  evaluator_.EvaluateRule(*policy_->FindRule("slow"), "k", 2, kStart, e);
  ASSERT_EQ(e.verdict, gate::Verdict::kAllow);
  ASSERT_EQ(e.results.size(), 1u);
  ASSERT_EQ(e.results[0].decision.reset_after.count(), std::numeric_limits<int64_t>::max() - 1);
  EXPECT_EQ(Answer(e), R"({"allowed":true,"rules":[{"rule":"slow","limit":1,"remaining":0,)"
                       R"("reset_after_ms":9223372036855,"retry_after_ms":0}]})");
}

}  // namespace
}  // namespace sluice::api
