// The gate: what happens to a request between its parsed head and its answer.
// Access lists, client identity, rule matching, one limiter decision per matching
// rule, and the verdict with the RateLimit fields that go on the answer.
//
// A Policy is compiled once from a Config (rule lookups, override tables, metric
// slots, the RateLimit-Policy text) and shared read-only by every worker; a reload
// builds a new one. An Evaluator belongs to one worker and keeps the scratch space a
// request needs, so a decision allocates nothing once warm.
//
// Thread-safety: a const Policy from any thread; an Evaluator from its owner only.
#ifndef SLUICE_GATE_GATE_H_
#define SLUICE_GATE_GATE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "http/server_connection.h"
#include "metrics/metrics.h"
#include "sluice/decision.h"
#include "sluice/store.h"

namespace sluice::gate {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

struct CompiledRule {
  const config::Rule* rule = nullptr;  // owned by Policy::config
  size_t metric_slot = 0;
  // Effective limits by client key (the '|'-joined raw parts).
  std::unordered_map<std::string, Limit, StringHash, std::equal_to<>> overrides;
};

class Policy {
 public:
  static std::shared_ptr<const Policy> Compile(std::shared_ptr<const config::Config> config,
                                               metrics::Registry& registry);
  const config::Config& config() const { return *config_; }
  const std::vector<CompiledRule>& rules() const { return rules_; }
  // The rule of that name, or null.
  const CompiledRule* FindRule(std::string_view name) const;

 private:
  std::shared_ptr<const config::Config> config_;
  std::vector<CompiledRule> rules_;
};

struct Evaluation;
class Evaluator;

// One matching rule's part in a request. It is also the store's completion for the
// rule's decision, which may arrive after Evaluate has returned (the Redis store).
struct RuleResult final : Store::Completion {
  const CompiledRule* rule = nullptr;
  Limit limit;  // after overrides
  Decision decision;
  metrics::Outcome outcome = metrics::Outcome::kAllowed;
  bool pending_delay = false;  // a delay rule that must be asked again later
  size_t key_offset = 0;       // the store key in Evaluation::keys
  size_t key_length = 0;
  uint64_t client_hash = 0;  // of the raw client key, for logs
  Evaluation* evaluation = nullptr;

  void OnDecision(const Decision& decision) override;
};

enum class Verdict {
  kAllow,       // every matching rule passed (or only shadow rules were over)
  kLimited,     // 429
  kDenied,      // access.deny: 403
  kMissingKey,  // a rule with on_missing_key: reject had no key: 400
  kHold,        // delay rules over their limit but within max_delay: ask again later
  kPending,     // the store has not answered yet: EvaluationListener::OnEvaluated follows
};

// An Evaluation must stay where it is (not be moved or destroyed) while its verdict
// is kPending: the store answers into its results.
struct Evaluation {
  Verdict verdict = Verdict::kAllow;
  std::vector<RuleResult> results;       // matching rules, in config order
  std::string keys;                      // store keys of all results, back to back
  const RuleResult* deciding = nullptr;  // the first rule that limited (or lacked a key)
  Duration retry_after{0};               // kLimited: until every limiting rule allows
  Duration hold_for{0};                  // kHold: until the next try
  bool allow_listed = false;
  net::IpAddress client_ip;  // unset when the request named no client address
  bool has_client_ip = false;
  // Units of quota the request takes from each rule: 1 for a proxied request; a
  // decision API may ask for more, or 0 to look without taking.
  uint64_t cost = 1;
  void* owner = nullptr;  // the caller's; kept by Clear

  // While the store decides: answers still to come, and what they are for.
  int outstanding = 0;
  bool rechecking = false;
  Duration waited{0};
  Evaluator* evaluator = nullptr;

  std::string_view KeyOf(const RuleResult& r) const {
    return {keys.data() + r.key_offset, r.key_length};
  }
  void Clear();
};

// Told when an evaluation that was kPending has its verdict.
class EvaluationListener {
 public:
  virtual void OnEvaluated(Evaluation& evaluation) = 0;

 protected:
  ~EvaluationListener() = default;
};

// The client address: the socket peer, or, when the peer is a trusted proxy, the
// right-most X-Forwarded-For address that is not one.
net::IpAddress ResolveClientIp(const net::CidrList& trusted_proxies, const http::Request& request);

// The value of the first query parameter `name` ("a=1&b=2"), as written (not
// percent-decoded); empty for "name" without '='; nullopt when absent.
std::optional<std::string_view> QueryParam(std::string_view query, std::string_view name);

// The client address as logs show it: XXH3-64, unseeded so a fleet agrees. Computed
// only when a line is written.
uint64_t ClientIpHash(const net::IpAddress& ip);

class Evaluator {
 public:
  // `listener` hears of evaluations that went kPending; it may be null when the
  // store always answers at once (the memory store).
  Evaluator(Store& store, metrics::WorkerMetrics& metrics, EvaluationListener* listener = nullptr)
      : store_(store), metrics_(metrics), listener_(listener) {}

  // Decides `request` under `policy` at `now` into `out` (cleared first). The
  // verdict is kPending when the store answers later; `policy` must then live until
  // the listener is told.
  // `request.peer` may be null (a decision API asking about a client it did not name
  // by address): the access lists are then skipped and `ip` keys are missing.
  // `cost` (REQUIRES: <= kMaxQuantity) is what the request takes from each rule.
  void Evaluate(const Policy& policy, const http::Request& request, Timestamp now, Evaluation& out,
                uint64_t cost = 1);
  // One rule with the client key given as it is (POST /v1/check {"rule", "key"}): no
  // matching, no access lists, the rule's overrides apply to `client_key`.
  void EvaluateRule(const CompiledRule& rule, std::string_view client_key, uint64_t cost,
                    Timestamp now, Evaluation& out);
  // Asks the pending delay rules of a held evaluation again. `waited` is how long the
  // request has been held so far; a rule whose next chance lies beyond its
  // max_delay_ms turns the verdict into kLimited. May also end kPending.
  void Recheck(Evaluation& held, Timestamp now, Duration waited);

 private:
  friend struct RuleResult;
  void AskStore(Evaluation& out, bool rechecking, Duration waited, Timestamp now);
  void OnRuleDecided(Evaluation& out, RuleResult& result);
  void Conclude(Evaluation& out, Duration waited);
  // Adds `rule`'s result for the client key in client_key_ (overrides applied).
  void AddResult(const CompiledRule& rule, Evaluation& out);

  Store& store_;
  metrics::WorkerMetrics& metrics_;
  EvaluationListener* listener_;
  std::string client_key_;  // scratch
};

// The IETF RateLimit-Policy and RateLimit fields (and the legacy X-RateLimit-* ones
// when asked) for the rules a request matched, as header lines appended to `out`.
void AppendRateLimitHeaders(const Evaluation& evaluation, bool legacy, std::string& out);

// Whole seconds, rounded up (Retry-After, the t and w parameters).
int64_t CeilSeconds(Duration d);

// One member of RateLimit-Policy (`"name";q=limit;w=period-in-seconds`) and of RateLimit
// (`"name";r=remaining;t=seconds-until-whole`), for every place that writes them (the
// HTTP answers, Envoy's rate limit service).
void AppendPolicyItem(std::string_view name, const Limit& limit, std::string& out);
void AppendLimitItem(std::string_view name, uint64_t remaining, Duration reset, std::string& out);
// "Retry-After: N\r\n", and N alone: whole seconds, rounded up, at least 1.
// REQUIRES: wait != Decision::kNever (nothing to promise then).
void AppendRetryAfter(Duration wait, std::string& out);
void AppendRetryAfterValue(Duration wait, std::string& out);

}  // namespace sluice::gate

#endif  // SLUICE_GATE_GATE_H_
