// The answer to one /v1/check query, as JSON:
//   {"allowed":false,"error":"rate_limited","rule":"api","retry_after_ms":1000,
//    "rules":[{"rule":"api","limit":100,"remaining":0,"reset_after_ms":60000,
//              "retry_after_ms":1000}]}
// `rules` lists every rule the query was evaluated against, in config order; `limit` is
// the rule's limit after overrides (RateLimit-Policy's q), `remaining` and
// `reset_after_ms` what RateLimit's r and t say, `retry_after_ms` 0 when the rule
// passed and null when waiting never helps (a cost above the capacity). A refused
// query names the rule that refused it and why ("rate_limited", "missing_key",
// "forbidden" for a deny-listed address). A delay rule cannot hold a question the way
// the gateway holds a request, so a query it would hold is answered as limited, with
// the wait in retry_after_ms: the caller decides whether to wait.
#ifndef SLUICE_API_CHECK_RESPONSE_H_
#define SLUICE_API_CHECK_RESPONSE_H_

#include <string>

#include "gate/gate.h"

namespace sluice::api {

// REQUIRES: evaluation.verdict != kPending.
void AppendCheckAnswer(const gate::Evaluation& evaluation, std::string& out);

// 200 when allowed, 429 when limited (a delay rule's hold included), 403 when the
// address is deny-listed, 400 when a rule that rejects a missing key had none.
int CheckStatus(const gate::Evaluation& evaluation);

// How long until the query could pass: the limit's wait, or a delay rule's hold.
Duration CheckRetryAfter(const gate::Evaluation& evaluation);

}  // namespace sluice::api

#endif  // SLUICE_API_CHECK_RESPONSE_H_
