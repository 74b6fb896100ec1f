#include "api/check_response.h"

#include "api/json_text.h"
#include "core/check.h"
#include "http/ascii.h"

namespace sluice::api {
namespace {

// Whole milliseconds, rounded up (a client that waits that long is not early), or null
// for a wait that never ends.
void AppendMilliseconds(std::string& out, Duration d) {
  if (d == Decision::kNever) {
    out += "null";
    return;
  }
  // Rounded up without adding first: the algorithms' longest finite duration is next
  // to INT64_MAX nanoseconds.
  const int64_t ns = std::chrono::nanoseconds(d).count();
  http::AppendDecimal(out,
                      static_cast<uint64_t>(ns <= 0 ? 0 : ns / 1'000'000 + (ns % 1'000'000 != 0)));
}

}  // namespace

int CheckStatus(const gate::Evaluation& evaluation) {
  switch (evaluation.verdict) {
    case gate::Verdict::kAllow:
      return 200;
    case gate::Verdict::kLimited:
    case gate::Verdict::kHold:
      return 429;
    case gate::Verdict::kDenied:
      return 403;
    case gate::Verdict::kMissingKey:
      return 400;
    case gate::Verdict::kPending:
      break;
  }
  SLUICE_CHECK(false && "answering a query the store has not decided");
  return 500;
}

Duration CheckRetryAfter(const gate::Evaluation& evaluation) {
  return evaluation.verdict == gate::Verdict::kHold ? evaluation.hold_for : evaluation.retry_after;
}

void AppendCheckAnswer(const gate::Evaluation& evaluation, std::string& out) {
  const int status = CheckStatus(evaluation);
  out += status == 200 ? "{\"allowed\":true" : "{\"allowed\":false";
  const gate::RuleResult* deciding = evaluation.deciding;
  if (status == 403) out += ",\"error\":\"forbidden\"";
  if (status == 400) out += ",\"error\":\"missing_key\"";
  if (status == 429) {
    out += ",\"error\":\"rate_limited\"";
    if (deciding == nullptr) {
      // A hold: the first rule that waits is the one to name.
      for (const gate::RuleResult& r : evaluation.results) {
        if (r.pending_delay) {
          deciding = &r;
          break;
        }
      }
    }
  }
  if (deciding != nullptr) {
    out += ",\"rule\":";
    AppendJsonString(out, deciding->rule->rule->name);
  }
  if (status == 429) {
    out += ",\"retry_after_ms\":";
    AppendMilliseconds(out, CheckRetryAfter(evaluation));
  }
  if (evaluation.allow_listed) out += ",\"allow_listed\":true";
  out += ",\"rules\":[";
  bool first = true;
  for (const gate::RuleResult& r : evaluation.results) {
    if (!first) out += ',';
    first = false;
    out += "{\"rule\":";
    AppendJsonString(out, r.rule->rule->name);
    if (r.outcome == metrics::Outcome::kMissingKey) {
      out += ",\"missing_key\":true}";
      continue;
    }
    out += ",\"limit\":";
    http::AppendDecimal(out, r.limit.limit);
    out += ",\"remaining\":";
    http::AppendDecimal(out, r.decision.remaining);
    out += ",\"reset_after_ms\":";
    AppendMilliseconds(out, r.decision.reset_after);
    out += ",\"retry_after_ms\":";
    AppendMilliseconds(out, r.decision.retry_after);
    if (r.outcome == metrics::Outcome::kShadowLimited) out += ",\"shadow_limited\":true";
    out += '}';
  }
  out += "]}";
}

}  // namespace sluice::api
