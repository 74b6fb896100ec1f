#include "gate/gate.h"

#include <xxhash.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "core/check.h"
#include "http/ascii.h"

namespace sluice::gate {
namespace {

using config::KeyPartKind;

// Separates the rule name from the client key in a store key; rule names cannot
// contain it, so two rules never share state.
constexpr char kRuleSeparator = '\x1f';
// Between key parts in the client key: a control character, which HTTP header values
// and request targets cannot carry, so two different lists of parts never give the
// same key. Overrides are written with '|' and translated when compiled.
constexpr char kPartSeparator = '\x1e';
constexpr char kOverridePartSeparator = '|';

// An X-Forwarded-For element: an address, possibly with a port ("1.2.3.4:80",
// "[2001:db8::1]:443") as some proxies write it.
std::optional<net::IpAddress> ParseForwardedAddress(std::string_view text) {
  text = http::TrimOws(text);
  if (auto address = net::IpAddress::Parse(text)) return address;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close != std::string_view::npos) return net::IpAddress::Parse(text.substr(1, close - 1));
    return std::nullopt;
  }
  const size_t colon = text.find(':');
  if (colon != std::string_view::npos && text.find(':', colon + 1) == std::string_view::npos) {
    return net::IpAddress::Parse(text.substr(0, colon));
  }
  return std::nullopt;
}

bool RuleMatches(const config::Rule& rule, const http::Request& request) {
  if (!rule.path_prefix.empty() && !request.path.starts_with(rule.path_prefix)) return false;
  if (!rule.methods.empty() &&
      std::find(rule.methods.begin(), rule.methods.end(), request.method) == rule.methods.end()) {
    return false;
  }
  if (!rule.hosts.empty()) {
    const std::string_view host = request.host;
    if (std::none_of(rule.hosts.begin(), rule.hosts.end(),
                     [host](const std::string& h) { return http::EqualsIgnoreCase(h, host); })) {
      return false;
    }
  }
  return true;
}

// The client key as the store sees it: its XXH3-128, so secrets
// (API keys, credentials) never leave the gate in clear, whatever the store does
// with its keys. The hash is unseeded so every instance of a fleet agrees on it.
XXH128_hash_t HashClient(std::string_view text) { return XXH3_128bits(text.data(), text.size()); }

}  // namespace

std::optional<std::string_view> QueryParam(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

const CompiledRule* Policy::FindRule(std::string_view name) const {
  for (const CompiledRule& rule : rules_) {
    if (rule.rule->name == name) return &rule;
  }
  return nullptr;
}

std::shared_ptr<const Policy> Policy::Compile(std::shared_ptr<const config::Config> config,
                                              metrics::Registry& registry) {
  auto policy = std::make_shared<Policy>();
  policy->config_ = std::move(config);
  for (const config::Rule& rule : policy->config_->rules) {
    CompiledRule compiled;
    compiled.rule = &rule;
    compiled.metric_slot = registry.RuleSlot(rule.name);
    for (const config::Override& o : rule.overrides) {
      std::string key = o.key;
      if (rule.key.size() > 1)
        std::replace(key.begin(), key.end(), kOverridePartSeparator, kPartSeparator);
      compiled.overrides.emplace(std::move(key), o.limit);
    }
    policy->rules_.push_back(std::move(compiled));
  }
  return policy;
}

void Evaluation::Clear() {
  verdict = Verdict::kAllow;
  results.clear();
  keys.clear();
  deciding = nullptr;
  retry_after = Duration(0);
  hold_for = Duration(0);
  allow_listed = false;
  has_client_ip = false;
  cost = 1;
  outstanding = 0;
  rechecking = false;
  waited = Duration(0);
}

uint64_t ClientIpHash(const net::IpAddress& ip) {
  const auto& b = ip.bytes();
  return XXH3_64bits(b.data(), b.size());
}

net::IpAddress ResolveClientIp(const net::CidrList& trusted_proxies, const http::Request& request) {
  net::IpAddress client = *request.peer;
  if (trusted_proxies.empty() || !trusted_proxies.Contains(client)) return client;
  // Walk X-Forwarded-For from the right (the hop nearest to us), over every header
  // line in order, skipping addresses of trusted proxies. The first untrusted address
  // is the client; an element that is not an address stops the walk, and the last
  // trusted hop stands (nothing to its left can be believed).
  const http::Header* headers = request.headers.data();
  for (size_t h = request.headers.size(); h-- > 0;) {
    if (!http::EqualsIgnoreCase(headers[h].name, "x-forwarded-for")) continue;
    std::string_view list = headers[h].value;
    while (true) {
      const size_t comma = list.rfind(',');
      const std::string_view element =
          comma == std::string_view::npos ? list : list.substr(comma + 1);
      if (!http::TrimOws(element).empty()) {
        const std::optional<net::IpAddress> address = ParseForwardedAddress(element);
        if (!address) return client;
        client = *address;
        if (!trusted_proxies.Contains(client)) return client;
      }
      if (comma == std::string_view::npos) break;
      list = list.substr(0, comma);
    }
  }
  return client;
}

void RuleResult::OnDecision(const Decision& d) {
  decision = d;
  evaluation->evaluator->OnRuleDecided(*evaluation, *this);
}

// Every decision the evaluation needs goes to the store at once; the verdict is
// concluded when the last answer is in, which for the memory store is before
// AskStore returns. `outstanding` starts one high so that answers arriving during
// the loop cannot conclude before every request was made.
void Evaluator::AskStore(Evaluation& out, bool rechecking, Duration waited, Timestamp now) {
  out.evaluator = this;
  out.rechecking = rechecking;
  out.waited = waited;
  out.outstanding = 1;
  for (RuleResult& result : out.results) {
    if (rechecking && !result.pending_delay) continue;
    result.evaluation = &out;
    ++out.outstanding;
    StoreRequest request{out.KeyOf(result), result.rule->rule->algorithm, result.limit, out.cost};
    metrics_.store_operations_ok.Add();
    store_.Decide(request, now, result);
  }
  if (--out.outstanding == 0) {
    Conclude(out, waited);
  } else {
    out.verdict = Verdict::kPending;
  }
}

void Evaluator::OnRuleDecided(Evaluation& out, RuleResult& result) {
  const config::Rule& rule = *result.rule->rule;
  if (!out.rechecking) {
    if (result.decision.allowed) {
      result.outcome = metrics::Outcome::kAllowed;
    } else if (rule.action == config::Action::kShadow) {
      result.outcome = metrics::Outcome::kShadowLimited;
    } else if (rule.action == config::Action::kDelay &&
               result.decision.retry_after <= rule.max_delay) {
      result.pending_delay = true;
    } else {
      result.outcome = metrics::Outcome::kLimited;
    }
  } else if (result.decision.allowed) {
    result.pending_delay = false;
    result.outcome = metrics::Outcome::kDelayed;
  } else if (out.waited + result.decision.retry_after > rule.max_delay) {
    result.pending_delay = false;
    result.outcome = metrics::Outcome::kLimited;
  }
  if (--out.outstanding > 0) return;
  // The last answer, after AskStore returned: the store answered later.
  Conclude(out, out.waited);
  if (listener_ != nullptr) listener_->OnEvaluated(out);
}

void Evaluator::Evaluate(const Policy& policy, const http::Request& request, Timestamp now,
                         Evaluation& out, uint64_t cost) {
  out.Clear();
  out.cost = cost;
  const config::Config& config = policy.config();
  if (request.peer != nullptr) {
    out.client_ip = ResolveClientIp(config.trusted_proxies, request);
    out.has_client_ip = true;
  }
  if (!out.has_client_ip) {
    // No address to check the access lists against.
  } else if (config.deny.Contains(out.client_ip)) {
    out.verdict = Verdict::kDenied;
    metrics_.CountRequest(metrics::kSlotAccessDeny, metrics::Outcome::kDenied);
    return;
  }
  if (out.has_client_ip && config.allow.Contains(out.client_ip)) {
    out.allow_listed = true;
    metrics_.CountRequest(metrics::kSlotAccessAllow, metrics::Outcome::kAllowed);
    return;
  }

  char ip_text[net::IpAddress::kMaxTextLength];
  std::string_view ip;  // the client's address as text, made when a rule needs it
  for (const CompiledRule& compiled : policy.rules()) {
    const config::Rule& rule = *compiled.rule;
    if (!RuleMatches(rule, request)) continue;

    // The client key: the parts' values joined with '|'.
    client_key_.clear();
    bool missing = false;
    for (size_t i = 0; i < rule.key.size(); ++i) {
      if (i > 0) client_key_ += kPartSeparator;
      const config::KeyPart& part = rule.key[i];
      std::optional<std::string_view> value;
      switch (part.kind) {
        case KeyPartKind::kIp:
          if (!out.has_client_ip) break;  // missing
          if (ip.empty()) {
            // The connection's text of its peer when that is the client (no trusted
            // proxy in between): made once per connection, not per request.
            ip = !request.peer_text.empty() && out.client_ip == *request.peer
                     ? request.peer_text
                     : std::string_view(ip_text, out.client_ip.Format(ip_text));
          }
          value = ip;
          break;
        case KeyPartKind::kHeader:
          value = request.FindHeader(part.name);
          if (value) value = http::TrimOws(*value);
          break;
        case KeyPartKind::kAuthorization:
          // The credentials: what follows the scheme ("Bearer <token>").
          if ((value = request.FindHeader("authorization"))) {
            std::string_view v = http::TrimOws(*value);
            const size_t space = v.find(' ');
            value = space == std::string_view::npos ? v : http::TrimOws(v.substr(space + 1));
          }
          break;
        case KeyPartKind::kPath:
          value = request.path;
          break;
        case KeyPartKind::kMethod:
          value = request.method;
          break;
        case KeyPartKind::kHost:
          value = request.host;
          break;
        case KeyPartKind::kQuery:
          value = QueryParam(request.query, part.name);
          break;
      }
      if (!value || value->empty()) {
        missing = true;
        continue;
      }
      const size_t start = client_key_.size();
      client_key_.append(*value);
      if (part.kind == KeyPartKind::kHost) {
        // Host names are case-insensitive: one host, one counter.
        for (size_t c = start; c < client_key_.size(); ++c) {
          if (client_key_[c] >= 'A' && client_key_[c] <= 'Z') client_key_[c] += 'a' - 'A';
        }
      }
    }

    if (missing) {
      if (rule.on_missing_key == config::OnMissingKey::kSkip) continue;
      if (rule.on_missing_key == config::OnMissingKey::kReject) {
        RuleResult& result = out.results.emplace_back();
        result.rule = &compiled;
        result.limit = rule.limit;
        result.outcome = metrics::Outcome::kMissingKey;
        metrics_.CountRequest(compiled.metric_slot, result.outcome);
        out.verdict = Verdict::kMissingKey;
        out.deciding = &result;
        // Later rules are not charged for a request that is refused anyway.
        return;
      }
      // anonymous: every client without a key shares one counter.
      client_key_.assign("\x01anonymous");
    }
    AddResult(compiled, out);
  }

  AskStore(out, /*rechecking=*/false, Duration(0), now);
}

void Evaluator::AddResult(const CompiledRule& compiled, Evaluation& out) {
  RuleResult& result = out.results.emplace_back();
  result.rule = &compiled;
  result.limit = compiled.rule->limit;
  if (!compiled.overrides.empty()) {
    const auto it = compiled.overrides.find(std::string_view(client_key_));
    if (it != compiled.overrides.end()) result.limit = it->second;
  }
  const XXH128_hash_t hash = HashClient(client_key_);
  result.client_hash = hash.low64;
  result.key_offset = out.keys.size();
  out.keys.append(compiled.rule->name);
  out.keys += kRuleSeparator;
  // The 16 bytes of the hash as they are: the memory store fingerprints the key
  // anyway, and a store that needs text (Redis) encodes it there.
  out.keys.append(reinterpret_cast<const char*>(&hash), sizeof(hash));
  result.key_length = out.keys.size() - result.key_offset;
}

void Evaluator::EvaluateRule(const CompiledRule& rule, std::string_view client_key, uint64_t cost,
                             Timestamp now, Evaluation& out) {
  out.Clear();
  out.cost = cost;
  // Spelled as the rule's overrides spell it: the parts of a key of several joined
  // with '|'.
  client_key_.assign(client_key);
  if (rule.rule->key.size() > 1) {
    std::replace(client_key_.begin(), client_key_.end(), kOverridePartSeparator, kPartSeparator);
  }
  AddResult(rule, out);
  AskStore(out, /*rechecking=*/false, Duration(0), now);
}

void Evaluator::Recheck(Evaluation& held, Timestamp now, Duration waited) {
  AskStore(held, /*rechecking=*/true, waited, now);
}

void Evaluator::Conclude(Evaluation& out, Duration waited) {
  out.verdict = Verdict::kAllow;
  out.deciding = nullptr;
  out.retry_after = Duration(0);
  out.hold_for = Duration(0);
  bool pending = false;
  for (const RuleResult& result : out.results) {
    if (result.outcome == metrics::Outcome::kLimited) {
      out.verdict = Verdict::kLimited;
      if (out.deciding == nullptr) out.deciding = &result;
      out.retry_after = std::max(out.retry_after, result.decision.retry_after);
    } else if (result.pending_delay) {
      pending = true;
      out.hold_for = std::max(out.hold_for, result.decision.retry_after);
    }
  }
  // A request that is refused by one rule is not held for another.
  if (out.verdict != Verdict::kLimited && pending) {
    out.verdict = Verdict::kHold;
    return;
  }
  for (RuleResult& result : out.results) {
    if (result.pending_delay) {  // refused anyway: the delay rule's wait is moot
      result.pending_delay = false;
      result.outcome = metrics::Outcome::kLimited;
      out.retry_after = std::max(out.retry_after, result.decision.retry_after);
    }
    metrics_.CountRequest(result.rule->metric_slot, result.outcome);
  }
  if (out.results.empty()) metrics_.CountRequest(metrics::kSlotNoRule, metrics::Outcome::kAllowed);
}

int64_t CeilSeconds(Duration d) {
  const int64_t ns = std::chrono::nanoseconds(d).count();
  if (ns <= 0) return 0;
  return ns / 1'000'000'000 + (ns % 1'000'000'000 != 0 ? 1 : 0);
}

namespace {

// Decimal text without printf: this runs for every response.
}  // namespace

// An RFC 9651 string: printable ASCII with '"' and '\\' escaped; anything else becomes
// '?' (config restricts rule names so that nothing needs it; an Envoy limit's name
// comes from a config value that could hold anything).
static void AppendSfString(std::string_view text, std::string& out) {
  out += '"';
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c >= 0x20 && c < 0x7f ? c : '?';
  }
  out += '"';
}

void AppendPolicyItem(std::string_view name, const Limit& limit, std::string& out) {
  AppendSfString(name, out);
  out.append(";q=");
  http::AppendDecimal(out, limit.limit);
  out.append(";w=");
  http::AppendDecimal(out, static_cast<uint64_t>(std::max<int64_t>(1, CeilSeconds(limit.period))));
}

void AppendLimitItem(std::string_view name, uint64_t remaining, Duration reset, std::string& out) {
  AppendSfString(name, out);
  out.append(";r=");
  http::AppendDecimal(out, remaining);
  out.append(";t=");
  http::AppendDecimal(out, static_cast<uint64_t>(CeilSeconds(reset)));
}

void AppendRetryAfter(Duration wait, std::string& out) {
  out.append("Retry-After: ");
  AppendRetryAfterValue(wait, out);
  out.append("\r\n");
}

void AppendRetryAfterValue(Duration wait, std::string& out) {
  http::AppendDecimal(out, static_cast<uint64_t>(std::max<int64_t>(1, CeilSeconds(wait))));
}

void AppendRateLimitHeaders(const Evaluation& evaluation, bool legacy, std::string& out) {
  if (evaluation.results.empty()) return;
  // RFC 9651 lists of items: a string (the rule name, which config restricts to
  // characters that need no escaping) with integer parameters.
  out.append("RateLimit-Policy: ");
  bool first = true;
  for (const RuleResult& r : evaluation.results) {
    if (r.outcome == metrics::Outcome::kMissingKey) continue;
    if (!first) out.append(", ");
    AppendPolicyItem(r.rule->rule->name, r.limit, out);
    first = false;
  }
  out.append("\r\nRateLimit: ");
  first = true;
  const RuleResult* tightest = nullptr;
  for (const RuleResult& r : evaluation.results) {
    if (r.outcome == metrics::Outcome::kMissingKey) continue;
    if (!first) out.append(", ");
    AppendLimitItem(r.rule->rule->name, r.decision.remaining, r.decision.reset_after, out);
    first = false;
    if (tightest == nullptr || r.decision.remaining < tightest->decision.remaining) tightest = &r;
  }
  out.append("\r\n");
  if (legacy && tightest != nullptr) {
    out.append("X-RateLimit-Limit: ");
    http::AppendDecimal(out, tightest->limit.limit);
    out.append("\r\nX-RateLimit-Remaining: ");
    http::AppendDecimal(out, tightest->decision.remaining);
    out.append("\r\nX-RateLimit-Reset: ");
    http::AppendDecimal(out, static_cast<uint64_t>(CeilSeconds(tightest->decision.reset_after)));
    out.append("\r\n");
  }
}

}  // namespace sluice::gate
