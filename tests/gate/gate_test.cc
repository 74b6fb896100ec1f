// The gate: client identity behind proxies, access lists, rule matching, client keys,
// overrides, the reject/delay/shadow outcomes, the RateLimit header text and the
// per-rule metrics. Every test decides against a real MemoryStore on a simulated
// clock that moves only when a test advances it.
#include "gate/gate.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"
#include "http/server_connection.h"
#include "metrics/metrics.h"
#include "net/address.h"
#include "sluice/clock.h"
#include "store/memory_store.h"
#include "testing/test_request.h"

namespace sluice::gate {
namespace {

using sluice::testing::Ip;
using sluice::testing::TestRequest;

using namespace std::chrono_literals;
using metrics::Outcome;

net::CidrList Cidrs(std::initializer_list<std::string_view> blocks) {
  std::vector<net::Cidr> parsed;
  for (std::string_view block : blocks) {
    const std::optional<net::Cidr> cidr = net::Cidr::Parse(block);
    EXPECT_TRUE(cidr.has_value()) << block;
    if (cidr) parsed.push_back(*cidr);
  }
  return net::CidrList(std::move(parsed));
}

TestRequest From(std::string_view peer) { return std::move(TestRequest().Peer(peer)); }

// An hour's worth of seconds from the epoch: a whole number of every period used here,
// so window algorithms start at the beginning of a window.
constexpr Timestamp kStart = FromNanos(int64_t{3600} * 1000 * 1'000'000'000);

class GateTest : public ::testing::Test {
 protected:
  void Use(std::string_view yaml) {
    const config::LoadResult loaded = config::LoadConfigText(yaml, "test.yaml");
    for (const config::ConfigError& error : loaded.errors) ADD_FAILURE() << error.ToString();
    ASSERT_NE(loaded.config, nullptr);
    policy_ = Policy::Compile(loaded.config, registry_);
  }

  void EvaluateInto(const TestRequest& request, Evaluation& out) {
    const http::Request view = request.View();
    evaluator_.Evaluate(*policy_, view, clock_.Now(), out);
  }
  const Evaluation& Evaluate(const TestRequest& request) {
    EvaluateInto(request, evaluation_);
    return evaluation_;
  }
  Verdict VerdictOf(const TestRequest& request) { return Evaluate(request).verdict; }
  // How many of `n` requests at the current instant are let through.
  int Admitted(const TestRequest& request, int n) {
    int admitted = 0;
    for (int i = 0; i < n; ++i) admitted += VerdictOf(request) == Verdict::kAllow ? 1 : 0;
    return admitted;
  }

  uint64_t Count(size_t slot, Outcome outcome) const {
    return metrics_.requests[slot][static_cast<size_t>(outcome)].Get();
  }
  uint64_t Count(std::string_view rule, Outcome outcome) {
    return Count(registry_.RuleSlot(rule), outcome);
  }

  metrics::Registry registry_;
  metrics::WorkerMetrics& metrics_ = registry_.AddWorker();
  store::MemoryStore store_{store::MemoryStore::Options{.max_keys = 4096, .hash_seed = 7}};
  Evaluator evaluator_{store_, metrics_};
  ManualClock clock_{kStart};
  std::shared_ptr<const Policy> policy_;
  Evaluation evaluation_;
};

std::vector<std::string> RuleNames(const Evaluation& evaluation) {
  std::vector<std::string> names;
  for (const RuleResult& r : evaluation.results) names.push_back(r.rule->rule->name);
  return names;
}

const RuleResult* ResultOf(const Evaluation& evaluation, std::string_view rule) {
  for (const RuleResult& r : evaluation.results) {
    if (r.rule->rule->name == rule) return &r;
  }
  return nullptr;
}

// ---- ResolveClientIp ----

TEST(ResolveClientIp, UntrustedPeerIgnoresForwardedFor) {
  const net::CidrList trusted = Cidrs({"10.0.0.0/8"});
  const TestRequest request = From("203.0.113.7").Header("X-Forwarded-For", "198.51.100.1");
  EXPECT_EQ(ResolveClientIp(trusted, request.View()), Ip("203.0.113.7"));
}

TEST(ResolveClientIp, NoTrustedProxiesIgnoresForwardedFor) {
  const TestRequest request = From("10.0.0.1").Header("X-Forwarded-For", "198.51.100.1");
  EXPECT_EQ(ResolveClientIp(net::CidrList(), request.View()), Ip("10.0.0.1"));
}

TEST(ResolveClientIp, TrustedPeerWithoutForwardedForIsTheClient) {
  const TestRequest request = From("10.0.0.1").Header("X-Real-Ip", "198.51.100.1");
  EXPECT_EQ(ResolveClientIp(Cidrs({"10.0.0.0/8"}), request.View()), Ip("10.0.0.1"));
}

TEST(ResolveClientIp, TrustedPeerTakesRightMostUntrustedAcrossLinesAndLists) {
  // Three header lines, spelt three ways, with another header between them: the
  // walk goes right to left over the last line first.
  const TestRequest request = From("10.0.0.1")
                                  .Header("X-Forwarded-For", "192.0.2.66, 198.51.100.1")
                                  .Header("x-forwarded-for", "192.0.2.5 ,10.0.0.3")
                                  .Header("X-Other", "192.0.2.99")
                                  .Header("X-FORWARDED-FOR", "10.0.0.2");
  EXPECT_EQ(ResolveClientIp(Cidrs({"10.0.0.0/8"}), request.View()), Ip("192.0.2.5"));
}

TEST(ResolveClientIp, RightMostUntrustedOnAnEarlierLineWhenLaterLinesAreAllTrusted) {
  const TestRequest request = From("10.0.0.1")
                                  .Header("X-Forwarded-For", "192.0.2.66, 198.51.100.1")
                                  .Header("X-Forwarded-For", "10.0.0.3, 10.0.0.2");
  EXPECT_EQ(ResolveClientIp(Cidrs({"10.0.0.0/8"}), request.View()), Ip("198.51.100.1"));
}

TEST(ResolveClientIp, AllTrustedChainGivesTheLeftMost) {
  const TestRequest request = From("10.0.0.1")
                                  .Header("X-Forwarded-For", "10.0.0.9, 10.0.0.8")
                                  .Header("X-Forwarded-For", "10.0.0.7");
  EXPECT_EQ(ResolveClientIp(Cidrs({"10.0.0.0/8"}), request.View()), Ip("10.0.0.9"));
}

TEST(ResolveClientIp, GarbageElementStopsTheWalkAtTheLastTrustedHop) {
  const net::CidrList trusted = Cidrs({"10.0.0.0/8"});
  // Nothing left of "unknown" can be believed; 10.0.0.5 is the last hop we trust.
  const TestRequest behind_hop =
      From("10.0.0.1").Header("X-Forwarded-For", "198.51.100.1, unknown, 10.0.0.5");
  EXPECT_EQ(ResolveClientIp(trusted, behind_hop.View()), Ip("10.0.0.5"));
  // Garbage right next to us: the peer stands.
  const TestRequest at_peer = From("10.0.0.1").Header("X-Forwarded-For", "198.51.100.1, not-an-ip");
  EXPECT_EQ(ResolveClientIp(trusted, at_peer.View()), Ip("10.0.0.1"));
  // Garbage on a later line stops the walk before earlier lines.
  const TestRequest later_line = From("10.0.0.1")
                                     .Header("X-Forwarded-For", "198.51.100.1")
                                     .Header("X-Forwarded-For", "1.2.3.4.5, 10.0.0.6");
  EXPECT_EQ(ResolveClientIp(trusted, later_line.View()), Ip("10.0.0.6"));
}

TEST(ResolveClientIp, EmptyElementsAreSkipped) {
  const TestRequest request =
      From("10.0.0.1").Header("X-Forwarded-For", "198.51.100.1, , 10.0.0.5,");
  EXPECT_EQ(ResolveClientIp(Cidrs({"10.0.0.0/8"}), request.View()), Ip("198.51.100.1"));
}

TEST(ResolveClientIp, AddressesWithPorts) {
  const net::CidrList trusted = Cidrs({"10.0.0.0/8", "2001:db8:ffff::/48"});
  EXPECT_EQ(
      ResolveClientIp(trusted, From("10.0.0.1").Header("X-Forwarded-For", "1.2.3.4:80").View()),
      Ip("1.2.3.4"));
  EXPECT_EQ(ResolveClientIp(trusted,
                            From("10.0.0.1").Header("X-Forwarded-For", "[2001:db8::1]:443").View()),
            Ip("2001:db8::1"));
  EXPECT_EQ(
      ResolveClientIp(trusted, From("10.0.0.1").Header("X-Forwarded-For", "[2001:db8::1]").View()),
      Ip("2001:db8::1"));
  // Trusted hops written with ports are still recognised and skipped.
  EXPECT_EQ(ResolveClientIp(trusted,
                            From("10.0.0.1")
                                .Header("X-Forwarded-For",
                                        "198.51.100.1:5555, [2001:db8:ffff::2]:8443, 10.0.0.4:1234")
                                .View()),
            Ip("198.51.100.1"));
}

TEST(ResolveClientIp, IPv6PeerAndClients) {
  const net::CidrList trusted = Cidrs({"2001:db8:ffff::/48", "10.0.0.0/8"});
  const TestRequest v6_chain =
      From("2001:db8:ffff::1").Header("X-Forwarded-For", "2001:db8::7, 2001:db8:ffff::2");
  EXPECT_EQ(ResolveClientIp(trusted, v6_chain.View()), Ip("2001:db8::7"));
  // An IPv4 proxy forwarding an IPv6 client, and the other way round.
  EXPECT_EQ(
      ResolveClientIp(trusted, From("10.0.0.1").Header("X-Forwarded-For", "2001:db8::8").View()),
      Ip("2001:db8::8"));
  EXPECT_EQ(ResolveClientIp(trusted,
                            From("2001:db8:ffff::1").Header("X-Forwarded-For", "192.0.2.1").View()),
            Ip("192.0.2.1"));
  // An untrusted IPv6 peer is the client whatever it forwards.
  EXPECT_EQ(
      ResolveClientIp(trusted, From("2001:db8::9").Header("X-Forwarded-For", "192.0.2.1").View()),
      Ip("2001:db8::9"));
}

// ---- Access lists ----

constexpr std::string_view kAccessConfig = R"(
clients:
  trusted_proxies: ["10.0.0.0/8"]
access:
  allow: ["192.0.2.0/24"]
  deny: ["198.51.100.0/24", "192.0.2.13"]
rules:
  - name: per-ip
    key: [ip]
    algorithm: token_bucket
    limit: 1
    period: 1m
)";

TEST_F(GateTest, DenyListedClientIsDenied) {
  Use(kAccessConfig);
  const Evaluation& e = Evaluate(From("198.51.100.4"));
  EXPECT_EQ(e.verdict, Verdict::kDenied);
  EXPECT_TRUE(e.results.empty());
  EXPECT_FALSE(e.allow_listed);
  EXPECT_EQ(e.client_ip, Ip("198.51.100.4"));
  EXPECT_EQ(Count(metrics::kSlotAccessDeny, Outcome::kDenied), 1u);
  EXPECT_EQ(metrics_.store_operations_ok.Get(), 0u);
}

TEST_F(GateTest, DenyAppliesToTheForwardedClient) {
  Use(kAccessConfig);
  EXPECT_EQ(VerdictOf(From("10.0.0.1").Header("X-Forwarded-For", "198.51.100.4")),
            Verdict::kDenied);
}

TEST_F(GateTest, DenyWinsOverAllow) {
  Use(kAccessConfig);
  EXPECT_EQ(VerdictOf(From("192.0.2.13")), Verdict::kDenied);
}

TEST_F(GateTest, AllowListedClientIsNeverLimitedAndNoRuleApplies) {
  Use(kAccessConfig);
  for (int i = 0; i < 5; ++i) {
    const Evaluation& e = Evaluate(From("192.0.2.1"));
    EXPECT_EQ(e.verdict, Verdict::kAllow);
    EXPECT_TRUE(e.allow_listed);
    EXPECT_TRUE(e.results.empty());
    EXPECT_EQ(e.deciding, nullptr);
  }
  EXPECT_EQ(Count(metrics::kSlotAccessAllow, Outcome::kAllowed), 5u);
  EXPECT_EQ(Count("per-ip", Outcome::kAllowed), 0u);
  EXPECT_EQ(metrics_.store_operations_ok.Get(), 0u);
  // Anyone else is under the rule (limit 1).
  EXPECT_EQ(VerdictOf(From("203.0.113.1")), Verdict::kAllow);
  EXPECT_FALSE(evaluation_.allow_listed);
  EXPECT_EQ(VerdictOf(From("203.0.113.1")), Verdict::kLimited);
}

// ---- Rule matching ----

constexpr std::string_view kMatchConfig = R"(
rules:
  - name: api
    match: {path_prefix: "/api/"}
    algorithm: token_bucket
    limit: 100
    period: 1m
  - name: writes
    match: {methods: [post, PUT]}
    algorithm: token_bucket
    limit: 100
    period: 1m
  - name: host
    match: {hosts: ["api.example.com", "www.example.com"]}
    algorithm: token_bucket
    limit: 100
    period: 1m
  - name: all
    algorithm: token_bucket
    limit: 100
    period: 1m
)";

TEST_F(GateTest, PathPrefixMatchesOnlyPathsStartingWithIt) {
  Use(kMatchConfig);
  EXPECT_EQ(RuleNames(Evaluate(TestRequest().Path("/api/users"))),
            (std::vector<std::string>{"api", "all"}));
  EXPECT_EQ(RuleNames(Evaluate(TestRequest().Path("/api/"))),
            (std::vector<std::string>{"api", "all"}));
  EXPECT_EQ(RuleNames(Evaluate(TestRequest().Path("/api"))), (std::vector<std::string>{"all"}));
  EXPECT_EQ(RuleNames(Evaluate(TestRequest().Path("/other/api/"))),
            (std::vector<std::string>{"all"}));
  // The query string is not part of the path.
  EXPECT_EQ(RuleNames(Evaluate(TestRequest().Path("/").Query("p=/api/"))),
            (std::vector<std::string>{"all"}));
}

TEST_F(GateTest, MethodsMatchTheListedMethodsOnly) {
  Use(kMatchConfig);
  EXPECT_EQ(RuleNames(Evaluate(TestRequest().Method("POST"))),
            (std::vector<std::string>{"writes", "all"}));
  EXPECT_EQ(RuleNames(Evaluate(TestRequest().Method("PUT"))),
            (std::vector<std::string>{"writes", "all"}));
  EXPECT_EQ(RuleNames(Evaluate(TestRequest().Method("GET"))), (std::vector<std::string>{"all"}));
  EXPECT_EQ(RuleNames(Evaluate(TestRequest().Method("DELETE"))), (std::vector<std::string>{"all"}));
}

TEST_F(GateTest, HostsMatchCaseInsensitivelyWithoutThePort) {
  Use(kMatchConfig);
  EXPECT_EQ(RuleNames(Evaluate(TestRequest().Header("Host", "api.example.com"))),
            (std::vector<std::string>{"host", "all"}));
  EXPECT_EQ(RuleNames(Evaluate(TestRequest().Header("host", "API.Example.COM:8443"))),
            (std::vector<std::string>{"host", "all"}));
  EXPECT_EQ(RuleNames(Evaluate(TestRequest().Header("HOST", " www.example.com "))),
            (std::vector<std::string>{"host", "all"}));
  EXPECT_EQ(RuleNames(Evaluate(TestRequest().Header("Host", "other.example.com"))),
            (std::vector<std::string>{"all"}));
  EXPECT_EQ(RuleNames(Evaluate(TestRequest().Header("Host", "api.example.com.evil"))),
            (std::vector<std::string>{"all"}));
  EXPECT_EQ(RuleNames(Evaluate(TestRequest())), (std::vector<std::string>{"all"}));
}

TEST_F(GateTest, AllConditionsOfAMatchMustHold) {
  Use(R"(
rules:
  - name: narrow
    match: {path_prefix: "/api/", methods: [GET], host: "api.example.com"}
    algorithm: token_bucket
    limit: 1
    period: 1m
)");
  const TestRequest fits = TestRequest().Path("/api/x").Header("Host", "api.example.com");
  EXPECT_EQ(RuleNames(Evaluate(fits)), (std::vector<std::string>{"narrow"}));
  EXPECT_TRUE(RuleNames(Evaluate(TestRequest(fits).Method("POST"))).empty());
  EXPECT_TRUE(RuleNames(Evaluate(TestRequest(fits).Path("/x"))).empty());
  EXPECT_TRUE(
      RuleNames(Evaluate(TestRequest().Path("/api/x").Header("Host", "example.com"))).empty());
}

TEST_F(GateTest, EveryMatchingRuleIsEvaluatedAndChargedInConfigOrder) {
  Use(kMatchConfig);
  const TestRequest request =
      TestRequest().Method("POST").Path("/api/v1").Header("Host", "api.example.com");
  for (int i = 1; i <= 3; ++i) {
    const Evaluation& e = Evaluate(request);
    ASSERT_EQ(RuleNames(e), (std::vector<std::string>{"api", "writes", "host", "all"}));
    for (const RuleResult& r : e.results) {
      EXPECT_TRUE(r.decision.allowed);
      EXPECT_EQ(r.decision.remaining, 100u - i) << r.rule->rule->name;
    }
  }
  EXPECT_EQ(metrics_.store_operations_ok.Get(), 12u);
}

TEST_F(GateTest, NoMatchingRuleAllowsAndCountsTheNoRuleSlot) {
  Use(R"(
rules:
  - name: api
    match: {path_prefix: "/api/"}
    algorithm: token_bucket
    limit: 1
    period: 1m
)");
  for (int i = 0; i < 3; ++i) {
    const Evaluation& e = Evaluate(TestRequest().Path("/public"));
    EXPECT_EQ(e.verdict, Verdict::kAllow);
    EXPECT_TRUE(e.results.empty());
  }
  EXPECT_EQ(Count(metrics::kSlotNoRule, Outcome::kAllowed), 3u);
}

TEST_F(GateTest, LimitedWhenAnyRuleLimitsAndTheOthersAreStillCharged) {
  Use(R"(
rules:
  - name: loose
    algorithm: token_bucket
    limit: 5
    period: 1m
  - name: tight
    algorithm: token_bucket
    limit: 2
    period: 1m
  - name: after
    algorithm: token_bucket
    limit: 5
    period: 1m
)");
  EXPECT_EQ(VerdictOf(TestRequest()), Verdict::kAllow);
  EXPECT_EQ(VerdictOf(TestRequest()), Verdict::kAllow);
  const Evaluation& e = Evaluate(TestRequest());
  EXPECT_EQ(e.verdict, Verdict::kLimited);
  ASSERT_NE(e.deciding, nullptr);
  EXPECT_EQ(e.deciding->rule->rule->name, "tight");
  EXPECT_EQ(e.retry_after, 30s);  // one token of 2/min
  EXPECT_EQ(ResultOf(e, "loose")->outcome, Outcome::kAllowed);
  EXPECT_EQ(ResultOf(e, "loose")->decision.remaining, 2u);
  EXPECT_EQ(ResultOf(e, "tight")->outcome, Outcome::kLimited);
  EXPECT_EQ(ResultOf(e, "after")->outcome, Outcome::kAllowed);
  EXPECT_EQ(ResultOf(e, "after")->decision.remaining, 2u);
}

TEST_F(GateTest, RetryAfterIsTheLongestOfTheLimitingRules) {
  Use(R"(
rules:
  - name: minute
    algorithm: token_bucket
    limit: 1
    period: 1m
  - name: second
    algorithm: token_bucket
    limit: 1
    period: 1s
)");
  EXPECT_EQ(VerdictOf(TestRequest()), Verdict::kAllow);
  const Evaluation& e = Evaluate(TestRequest());
  EXPECT_EQ(e.verdict, Verdict::kLimited);
  EXPECT_EQ(e.deciding->rule->rule->name, "minute");
  EXPECT_EQ(e.retry_after, 60s);
}

// ---- Key parts ----
//
// A client key is checked through an override: the override's limit (7) applies only
// when the joined key parts equal its key exactly, whatever form the store key takes.

// One rule limited to one request per minute with the given key.
std::string OneRule(std::string_view key, std::string_view extra = "") {
  return std::string(R"(
rules:
  - name: r
    key: )") +
         std::string(key) + R"(
    algorithm: token_bucket
    limit: 1
    period: 1m
)" + std::string(extra);
}

// OneRule whose client key `client_key` gets a limit of 7.
std::string OneRuleWithOverride(std::string_view key, std::string_view client_key) {
  return OneRule(key,
                 "    overrides:\n      - {key: \"" + std::string(client_key) + "\", limit: 7}\n");
}

uint64_t LimitOf(const Evaluation& evaluation, std::string_view rule = "r") {
  const RuleResult* result = ResultOf(evaluation, rule);
  EXPECT_NE(result, nullptr) << rule;
  return result == nullptr ? 0 : result->limit.limit;
}

TEST_F(GateTest, IpKeySeparatesClients) {
  Use(OneRuleWithOverride("[ip]", "203.0.113.7"));
  const Evaluation& e = Evaluate(From("203.0.113.7"));
  EXPECT_EQ(e.verdict, Verdict::kAllow);
  EXPECT_EQ(LimitOf(e), 7u);
  EXPECT_EQ(LimitOf(Evaluate(From("203.0.113.8"))), 1u);
  EXPECT_EQ(Admitted(From("203.0.113.9"), 3), 1);
  EXPECT_EQ(Admitted(From("203.0.113.10"), 3), 1);
}

TEST_F(GateTest, IpKeyOfAnIPv6ClientIsItsCanonicalText) {
  Use(OneRuleWithOverride("[ip]", "2001:db8::1"));
  EXPECT_EQ(LimitOf(Evaluate(From("2001:0db8:0000::0001"))), 7u);
}

TEST_F(GateTest, IpKeyUsesTheForwardedClient) {
  Use(std::string(R"(
clients:
  trusted_proxies: ["10.0.0.0/8"]
)") + OneRuleWithOverride("[ip]", "192.0.2.4"));
  EXPECT_EQ(LimitOf(Evaluate(From("10.0.0.1").Header("X-Forwarded-For", "192.0.2.4"))), 7u);
  // Through another proxy, the same client shares the counter.
  EXPECT_EQ(Admitted(From("10.0.0.1").Header("X-Forwarded-For", "192.0.2.5"), 1), 1);
  EXPECT_EQ(VerdictOf(From("10.0.0.2").Header("X-Forwarded-For", "192.0.2.5")), Verdict::kLimited);
}

TEST_F(GateTest, HeaderKeyIsLookedUpCaseInsensitivelyAndTrimmed) {
  Use(OneRuleWithOverride(R"(["header:X-API-Key"])", "k1"));
  const Evaluation& e = Evaluate(TestRequest().Header("x-Api-KEY", " \tk1\t "));
  EXPECT_EQ(e.verdict, Verdict::kAllow);
  EXPECT_EQ(LimitOf(e), 7u);
  // The first header of that name counts.
  EXPECT_EQ(LimitOf(Evaluate(TestRequest().Header("X-API-KEY", "k1").Header("X-Api-Key", "k2"))),
            7u);
  EXPECT_EQ(LimitOf(Evaluate(TestRequest().Header("X-API-KEY", "k2").Header("X-Api-Key", "k1"))),
            1u);
  // Same key from another address, spelt differently and padded: same counter.
  EXPECT_EQ(VerdictOf(From("192.0.2.200").Header("X-API-KEY", "k3")), Verdict::kAllow);
  EXPECT_EQ(VerdictOf(From("192.0.2.201").Header("x-api-key", "  k3")), Verdict::kLimited);
  EXPECT_EQ(VerdictOf(TestRequest().Header("X-API-Key", "k4")), Verdict::kAllow);
}

TEST_F(GateTest, AuthorizationKeyIsTheCredentialsAfterTheScheme) {
  Use(OneRuleWithOverride("[authorization]", "tok-1"));
  EXPECT_EQ(LimitOf(Evaluate(TestRequest().Header("Authorization", "Bearer   tok-1 "))), 7u);
  EXPECT_EQ(LimitOf(Evaluate(TestRequest().Header("authorization", "Basic tok-1"))), 7u);
  EXPECT_EQ(LimitOf(Evaluate(TestRequest().Header("Authorization", "Bearer tok-2"))), 1u);
  // The scheme does not take part: the same credentials share a counter.
  EXPECT_EQ(VerdictOf(TestRequest().Header("Authorization", "Bearer tok-3")), Verdict::kAllow);
  EXPECT_EQ(VerdictOf(TestRequest().Header("authorization", "Token tok-3")), Verdict::kLimited);
  EXPECT_EQ(VerdictOf(TestRequest().Header("Authorization", "Bearer tok-4")), Verdict::kAllow);
}

TEST_F(GateTest, PathMethodHostAndQueryKeys) {
  Use(R"(
rules:
  - name: by-path
    key: [path]
    algorithm: token_bucket
    limit: 9
    period: 1m
    overrides: [{key: "/a/b", limit: 7}]
  - name: by-method
    key: [method]
    algorithm: token_bucket
    limit: 9
    period: 1m
    overrides: [{key: "PATCH", limit: 7}]
  - name: by-host
    key: [host]
    algorithm: token_bucket
    limit: 9
    period: 1m
    overrides: [{key: "api.example.com", limit: 7}]
  - name: by-query
    key: ["query:page"]
    algorithm: token_bucket
    limit: 9
    period: 1m
    overrides: [{key: "7", limit: 7}]
)");
  const Evaluation& e = Evaluate(TestRequest()
                                     .Method("PATCH")
                                     .Path("/a/b")
                                     .Query("x=1&pages=3&page=7&y")
                                     .Header("Host", "api.example.com:8443"));
  ASSERT_EQ(e.results.size(), 4u);
  for (const RuleResult& r : e.results) EXPECT_EQ(r.limit.limit, 7u) << r.rule->rule->name;

  const Evaluation& other = Evaluate(
      TestRequest().Method("GET").Path("/a/b/c").Query("page=8").Header("Host", "example.com"));
  ASSERT_EQ(other.results.size(), 4u);
  for (const RuleResult& r : other.results) EXPECT_EQ(r.limit.limit, 9u) << r.rule->rule->name;

  // The query parameter name is case-sensitive; without it the rule is skipped.
  const Evaluation& no_page = Evaluate(TestRequest().Query("Page=7"));
  EXPECT_EQ(ResultOf(no_page, "by-query"), nullptr);
  EXPECT_NE(ResultOf(no_page, "by-path"), nullptr);
  // A bare parameter name, or an empty value, counts as missing.
  EXPECT_EQ(ResultOf(Evaluate(TestRequest().Query("page")), "by-query"), nullptr);
  EXPECT_EQ(ResultOf(Evaluate(TestRequest().Query("page=")), "by-query"), nullptr);
  // No Host header: the host part is missing.
  EXPECT_EQ(ResultOf(Evaluate(TestRequest()), "by-host"), nullptr);
}

TEST_F(GateTest, CombinedKeyJoinsPartsWithBars) {
  Use(OneRuleWithOverride(R"([ip, "header:x-api-key", method])", "203.0.113.7|k1|GET"));
  const Evaluation& e = Evaluate(From("203.0.113.7").Header("X-Api-Key", "k1"));
  EXPECT_EQ(LimitOf(e), 7u);
  EXPECT_EQ(LimitOf(Evaluate(From("203.0.113.7").Header("X-Api-Key", "k1").Method("POST"))), 1u);
  // Each part tells clients apart.
  const TestRequest base = From("203.0.113.8").Header("X-Api-Key", "k9");
  EXPECT_EQ(VerdictOf(base), Verdict::kAllow);
  EXPECT_EQ(VerdictOf(From("203.0.113.9").Header("X-Api-Key", "k9")), Verdict::kAllow);
  EXPECT_EQ(VerdictOf(From("203.0.113.8").Header("X-Api-Key", "k8")), Verdict::kAllow);
  EXPECT_EQ(VerdictOf(TestRequest(base).Method("POST")), Verdict::kAllow);
  EXPECT_EQ(VerdictOf(base), Verdict::kLimited);
}

TEST_F(GateTest, EmptyKeySharesOneCounterAmongAllClients) {
  Use(OneRule("[]"));
  EXPECT_EQ(VerdictOf(From("203.0.113.1")), Verdict::kAllow);
  EXPECT_EQ(VerdictOf(From("203.0.113.2")), Verdict::kLimited);
}

TEST_F(GateTest, TwoRulesWithTheSameClientKeyDoNotShareState) {
  Use(R"(
rules:
  - name: a
    match: {path_prefix: "/a"}
    key: [ip]
    algorithm: token_bucket
    limit: 1
    period: 1m
  - name: b
    match: {path_prefix: "/b"}
    key: [ip]
    algorithm: token_bucket
    limit: 1
    period: 1m
)");
  Evaluation first;
  EvaluateInto(TestRequest().Path("/a"), first);
  EXPECT_EQ(first.verdict, Verdict::kAllow);
  Evaluation second;
  EvaluateInto(TestRequest().Path("/b"), second);
  EXPECT_EQ(second.verdict, Verdict::kAllow);
  EXPECT_NE(first.KeyOf(first.results[0]), second.KeyOf(second.results[0]));
  EXPECT_EQ(first.results[0].client_hash, second.results[0].client_hash);
  EXPECT_EQ(VerdictOf(TestRequest().Path("/a")), Verdict::kLimited);
  EXPECT_EQ(VerdictOf(TestRequest().Path("/b")), Verdict::kLimited);
}

// ---- on_missing_key ----

TEST_F(GateTest, MissingKeySkipsTheRule) {
  Use(OneRule(R"(["header:x-api-key"])", "    on_missing_key: skip\n"));
  for (int i = 0; i < 3; ++i) {
    const Evaluation& e = Evaluate(TestRequest());
    EXPECT_EQ(e.verdict, Verdict::kAllow);
    EXPECT_TRUE(e.results.empty());
  }
  // An empty (or blank) value is missing too.
  EXPECT_TRUE(Evaluate(TestRequest().Header("X-Api-Key", "")).results.empty());
  EXPECT_TRUE(Evaluate(TestRequest().Header("X-Api-Key", "  ")).results.empty());
  EXPECT_EQ(Count(metrics::kSlotNoRule, Outcome::kAllowed), 5u);
  EXPECT_EQ(metrics_.store_operations_ok.Get(), 0u);
}

TEST_F(GateTest, MissingKeyRejectsAndLaterRulesAreNotCharged) {
  Use(R"(
rules:
  - name: needs-key
    key: ["header:x-api-key", ip]
    algorithm: token_bucket
    limit: 5
    period: 1m
    on_missing_key: reject
  - name: per-ip
    key: [ip]
    algorithm: token_bucket
    limit: 1
    period: 1m
)");
  for (int i = 0; i < 3; ++i) {
    const Evaluation& e = Evaluate(TestRequest());
    EXPECT_EQ(e.verdict, Verdict::kMissingKey);
    ASSERT_NE(e.deciding, nullptr);
    EXPECT_EQ(e.deciding->rule->rule->name, "needs-key");
    EXPECT_EQ(e.deciding->outcome, Outcome::kMissingKey);
  }
  EXPECT_EQ(Count("needs-key", Outcome::kMissingKey), 3u);
  EXPECT_EQ(Count("per-ip", Outcome::kAllowed), 0u);
  EXPECT_EQ(metrics_.store_operations_ok.Get(), 0u);
  // per-ip was never charged: its single request is still there.
  EXPECT_EQ(VerdictOf(TestRequest().Header("X-Api-Key", "k")), Verdict::kAllow);
  EXPECT_EQ(VerdictOf(TestRequest().Header("X-Api-Key", "k")), Verdict::kLimited);
}

TEST_F(GateTest, MissingKeyAnonymousSharesOneCounterAmongKeylessClients) {
  Use(R"(
rules:
  - name: per-key
    key: ["header:x-api-key", method]
    algorithm: token_bucket
    limit: 2
    period: 1m
    on_missing_key: anonymous
)");
  const Evaluation& e = Evaluate(From("203.0.113.1"));
  EXPECT_EQ(e.verdict, Verdict::kAllow);
  ASSERT_EQ(e.results.size(), 1u);
  const std::string anonymous_key(e.KeyOf(e.results[0]));
  EXPECT_EQ(VerdictOf(From("203.0.113.2")), Verdict::kAllow);
  EXPECT_EQ(VerdictOf(From("203.0.113.3")), Verdict::kLimited);
  EXPECT_EQ(evaluation_.KeyOf(evaluation_.results[0]), anonymous_key);
  // Clients with a key have their own counters.
  EXPECT_EQ(VerdictOf(From("203.0.113.3").Header("X-Api-Key", "k1")), Verdict::kAllow);
  EXPECT_EQ(VerdictOf(From("203.0.113.3").Header("X-Api-Key", "k1")), Verdict::kAllow);
  EXPECT_EQ(VerdictOf(From("203.0.113.3").Header("X-Api-Key", "k1")), Verdict::kLimited);
  EXPECT_EQ(VerdictOf(From("203.0.113.3").Header("X-Api-Key", "k2")), Verdict::kAllow);
}

// ---- Overrides ----

TEST_F(GateTest, OverrideKeyGetsItsLimitAndOthersTheRules) {
  Use(R"(
rules:
  - name: per-key
    key: ["header:x-api-key"]
    algorithm: token_bucket
    limit: 2
    period: 1m
    overrides:
      - {key: "premium", limit: 5}
      - {key: "slow", limit: 1, period: 1h}
)");
  EXPECT_EQ(Admitted(TestRequest().Header("X-Api-Key", "premium"), 8), 5);
  EXPECT_EQ(evaluation_.results[0].limit, Limit::PerPeriod(5, 60s));
  EXPECT_EQ(Admitted(TestRequest().Header("X-Api-Key", "basic"), 8), 2);
  EXPECT_EQ(evaluation_.results[0].limit, Limit::PerPeriod(2, 60s));
  EXPECT_EQ(Admitted(TestRequest().Header("X-Api-Key", "slow"), 3), 1);
  EXPECT_EQ(evaluation_.results[0].limit, Limit::PerPeriod(1, 3600s));
  EXPECT_EQ(evaluation_.retry_after, 3600s);
  // Override keys are exact: case and surrounding text matter.
  EXPECT_EQ(Admitted(TestRequest().Header("X-Api-Key", "Premium"), 8), 2);
}

TEST_F(GateTest, OverrideOnACombinedKey) {
  Use(R"(
rules:
  - name: per-ip-key
    key: [ip, "header:x-api-key"]
    algorithm: fixed_window
    limit: 1
    period: 1m
    overrides:
      - {key: "203.0.113.7|premium", limit: 3}
)");
  EXPECT_EQ(Admitted(From("203.0.113.7").Header("X-Api-Key", "premium"), 5), 3);
  EXPECT_EQ(Admitted(From("203.0.113.8").Header("X-Api-Key", "premium"), 5), 1);
}

// ---- Shadow ----

TEST_F(GateTest, ShadowRuleOverItsLimitIsReportedButAllowed) {
  Use(R"(
rules:
  - name: trial
    key: [ip]
    algorithm: token_bucket
    limit: 1
    period: 1m
    action: shadow
)");
  EXPECT_EQ(VerdictOf(TestRequest()), Verdict::kAllow);
  EXPECT_EQ(evaluation_.results[0].outcome, Outcome::kAllowed);
  for (int i = 0; i < 3; ++i) {
    const Evaluation& e = Evaluate(TestRequest());
    EXPECT_EQ(e.verdict, Verdict::kAllow);
    EXPECT_EQ(e.deciding, nullptr);
    ASSERT_EQ(e.results.size(), 1u);
    EXPECT_EQ(e.results[0].outcome, Outcome::kShadowLimited);
    EXPECT_FALSE(e.results[0].decision.allowed);
  }
  EXPECT_EQ(Count("trial", Outcome::kAllowed), 1u);
  EXPECT_EQ(Count("trial", Outcome::kShadowLimited), 3u);
}

// ---- Delay ----

// 10 per second, a token every 100 ms, and a request may wait up to `max_delay_ms`.
std::string DelayRule(int max_delay_ms) {
  return R"(
rules:
  - name: queue
    key: [ip]
    algorithm: token_bucket
    limit: 10
    period: 1s
    action: delay
    max_delay_ms: )" +
         std::to_string(max_delay_ms) + "\n";
}

TEST_F(GateTest, DelayHoldsForRetryAfterThenRecheckAdmits) {
  Use(DelayRule(250));
  EXPECT_EQ(Admitted(TestRequest(), 10), 10);
  Evaluation held;
  EvaluateInto(TestRequest(), held);
  ASSERT_EQ(held.verdict, Verdict::kHold);
  ASSERT_EQ(held.results.size(), 1u);
  EXPECT_TRUE(held.results[0].pending_delay);
  EXPECT_EQ(held.hold_for, 100ms);
  EXPECT_EQ(held.hold_for, held.results[0].decision.retry_after);
  EXPECT_EQ(held.deciding, nullptr);
  EXPECT_EQ(Count("queue", Outcome::kAllowed), 10u);  // the held one is not counted yet

  clock_.Advance(held.hold_for);
  evaluator_.Recheck(held, clock_.Now(), held.hold_for);
  EXPECT_EQ(held.verdict, Verdict::kAllow);
  EXPECT_FALSE(held.results[0].pending_delay);
  EXPECT_EQ(held.results[0].outcome, Outcome::kDelayed);
  EXPECT_TRUE(held.results[0].decision.allowed);
  EXPECT_EQ(Count("queue", Outcome::kDelayed), 1u);
  // The delayed request took the token.
  EXPECT_EQ(VerdictOf(TestRequest()), Verdict::kHold);
}

TEST_F(GateTest, DelayLongerThanMaxDelayIsLimitedAtOnce) {
  Use(DelayRule(99));
  EXPECT_EQ(Admitted(TestRequest(), 10), 10);
  const Evaluation& e = Evaluate(TestRequest());
  EXPECT_EQ(e.verdict, Verdict::kLimited);
  EXPECT_EQ(e.results[0].outcome, Outcome::kLimited);
  EXPECT_FALSE(e.results[0].pending_delay);
  EXPECT_EQ(e.retry_after, 100ms);
  EXPECT_EQ(e.hold_for, 0ns);
  EXPECT_EQ(Count("queue", Outcome::kLimited), 1u);
}

TEST_F(GateTest, DelayExactlyMaxDelayIsHeld) {
  Use(DelayRule(100));
  EXPECT_EQ(Admitted(TestRequest(), 10), 10);
  EXPECT_EQ(VerdictOf(TestRequest()), Verdict::kHold);
}

TEST_F(GateTest, RecheckHoldsAgainWhileWithinMaxDelay) {
  Use(DelayRule(250));
  EXPECT_EQ(Admitted(TestRequest(), 10), 10);
  Evaluation first, second;
  EvaluateInto(TestRequest(), first);
  EvaluateInto(TestRequest(), second);
  ASSERT_EQ(first.verdict, Verdict::kHold);
  ASSERT_EQ(second.verdict, Verdict::kHold);
  EXPECT_EQ(second.hold_for, 100ms);

  clock_.Advance(100ms);
  evaluator_.Recheck(first, clock_.Now(), 100ms);
  EXPECT_EQ(first.verdict, Verdict::kAllow);
  // The first took the token; the second waits another 100 ms (200 <= 250).
  evaluator_.Recheck(second, clock_.Now(), 100ms);
  EXPECT_EQ(second.verdict, Verdict::kHold);
  EXPECT_EQ(second.hold_for, 100ms);
  EXPECT_TRUE(second.results[0].pending_delay);

  clock_.Advance(100ms);
  evaluator_.Recheck(second, clock_.Now(), 200ms);
  EXPECT_EQ(second.verdict, Verdict::kAllow);
  EXPECT_EQ(second.results[0].outcome, Outcome::kDelayed);
  EXPECT_EQ(Count("queue", Outcome::kDelayed), 2u);
}

TEST_F(GateTest, RecheckPastMaxDelayIsLimited) {
  Use(DelayRule(150));
  EXPECT_EQ(Admitted(TestRequest(), 10), 10);
  Evaluation first, second;
  EvaluateInto(TestRequest(), first);
  EvaluateInto(TestRequest(), second);
  ASSERT_EQ(first.verdict, Verdict::kHold);
  ASSERT_EQ(second.verdict, Verdict::kHold);

  clock_.Advance(100ms);
  evaluator_.Recheck(first, clock_.Now(), 100ms);
  EXPECT_EQ(first.verdict, Verdict::kAllow);
  // Another 100 ms would make 200 ms of waiting, past 150.
  evaluator_.Recheck(second, clock_.Now(), 100ms);
  EXPECT_EQ(second.verdict, Verdict::kLimited);
  EXPECT_FALSE(second.results[0].pending_delay);
  EXPECT_EQ(second.results[0].outcome, Outcome::kLimited);
  ASSERT_NE(second.deciding, nullptr);
  EXPECT_EQ(second.deciding->rule->rule->name, "queue");
  EXPECT_EQ(second.retry_after, 100ms);
  EXPECT_EQ(Count("queue", Outcome::kLimited), 1u);
  EXPECT_EQ(Count("queue", Outcome::kDelayed), 1u);
}

TEST_F(GateTest, DelayRuleWithALimitingRejectRuleIsLimitedWithoutHolding) {
  Use(R"(
rules:
  - name: queue
    algorithm: token_bucket
    limit: 1
    period: 1s
    action: delay
    max_delay_ms: 5000
  - name: hard
    algorithm: token_bucket
    limit: 1
    period: 2s
)");
  EXPECT_EQ(VerdictOf(TestRequest()), Verdict::kAllow);
  const Evaluation& e = Evaluate(TestRequest());
  // Not held: the answer is the 429 now (hold_for is only meaningful under kHold).
  EXPECT_EQ(e.verdict, Verdict::kLimited);
  ASSERT_NE(e.deciding, nullptr);
  EXPECT_EQ(e.deciding->rule->rule->name, "hard");
  EXPECT_EQ(e.retry_after, 2s);
  for (const RuleResult& r : e.results) {
    EXPECT_FALSE(r.pending_delay) << r.rule->rule->name;
    EXPECT_EQ(r.outcome, Outcome::kLimited) << r.rule->rule->name;
  }
  EXPECT_EQ(Count("queue", Outcome::kLimited), 1u);
  EXPECT_EQ(Count("hard", Outcome::kLimited), 1u);
}

TEST_F(GateTest, TwoDelayRulesHoldForTheLongerWait) {
  Use(R"(
rules:
  - name: fast
    algorithm: token_bucket
    limit: 1
    period: 100ms
    action: delay
    max_delay_ms: 1000
  - name: slow
    algorithm: token_bucket
    limit: 1
    period: 300ms
    action: delay
    max_delay_ms: 1000
)");
  EXPECT_EQ(VerdictOf(TestRequest()), Verdict::kAllow);
  Evaluation held;
  EvaluateInto(TestRequest(), held);
  ASSERT_EQ(held.verdict, Verdict::kHold);
  EXPECT_EQ(held.hold_for, 300ms);
  clock_.Advance(held.hold_for);
  evaluator_.Recheck(held, clock_.Now(), 300ms);
  EXPECT_EQ(held.verdict, Verdict::kAllow);
  EXPECT_EQ(held.results[0].outcome, Outcome::kDelayed);
  EXPECT_EQ(held.results[1].outcome, Outcome::kDelayed);
}

// ---- Exactness: one client, one instant, the capacity and not one more ----

class GateExactness : public GateTest, public ::testing::WithParamInterface<Algorithm> {};

TEST_P(GateExactness, OneInstantAdmitsExactlyTheCapacity) {
  const Algorithm algorithm = GetParam();
  // Bucket algorithms: a burst of 4 under a rate of 10 a minute; window algorithms
  // have no burst and admit the limit.
  const bool bucket = UsesBurst(algorithm);
  Use(std::string(R"(
rules:
  - name: exact
    key: [ip]
    algorithm: )") +
      std::string(AlgorithmName(algorithm)) + R"(
    limit: 10
    period: 1m
)" + (bucket ? "    burst: 4\n" : ""));
  const int capacity = bucket ? 4 : 10;
  EXPECT_EQ(Admitted(From("203.0.113.7"), 50), capacity);
  EXPECT_EQ(Count("exact", Outcome::kAllowed), static_cast<uint64_t>(capacity));
  EXPECT_EQ(Count("exact", Outcome::kLimited), static_cast<uint64_t>(50 - capacity));
  // Another client has its own capacity.
  EXPECT_EQ(Admitted(From("203.0.113.8"), 50), capacity);
}

INSTANTIATE_TEST_SUITE_P(AllAlgorithms, GateExactness, ::testing::ValuesIn(kAllAlgorithms),
                         [](const ::testing::TestParamInfo<Algorithm>& info) {
                           return std::string(AlgorithmName(info.param));
                         });

// ---- RateLimit headers ----

constexpr std::string_view kTwoRules = R"(
rules:
  - name: a
    key: [ip]
    algorithm: token_bucket
    limit: 10
    period: 1m
  - name: b
    key: [ip]
    algorithm: token_bucket
    limit: 5
    period: 1s
)";

TEST_F(GateTest, HeadersForOneRule) {
  Use(R"(
rules:
  - name: a
    key: [ip]
    algorithm: token_bucket
    limit: 10
    period: 1m
)");
  std::string out;
  AppendRateLimitHeaders(Evaluate(TestRequest()), false, out);
  // One token back every 6 s.
  EXPECT_EQ(out,
            "RateLimit-Policy: \"a\";q=10;w=60\r\n"
            "RateLimit: \"a\";r=9;t=6\r\n");
}

TEST_F(GateTest, HeadersForTwoRules) {
  Use(kTwoRules);
  std::string out;
  AppendRateLimitHeaders(Evaluate(TestRequest()), false, out);
  EXPECT_EQ(out,
            "RateLimit-Policy: \"a\";q=10;w=60, \"b\";q=5;w=1\r\n"
            "RateLimit: \"a\";r=9;t=6, \"b\";r=4;t=1\r\n");
}

TEST_F(GateTest, HeadersAppendToWhatIsThere) {
  Use(kTwoRules);
  std::string out = "X-Request-Id: x\r\n";
  AppendRateLimitHeaders(Evaluate(TestRequest()), false, out);
  EXPECT_TRUE(out.starts_with("X-Request-Id: x\r\nRateLimit-Policy: ")) << out;
}

TEST_F(GateTest, HeadersWhenLimited) {
  Use(kTwoRules);
  EXPECT_EQ(Admitted(TestRequest(), 6), 5);
  std::string out;
  AppendRateLimitHeaders(evaluation_, false, out);
  EXPECT_EQ(out,
            "RateLimit-Policy: \"a\";q=10;w=60, \"b\";q=5;w=1\r\n"
            "RateLimit: \"a\";r=4;t=36, \"b\";r=0;t=1\r\n");
}

TEST_F(GateTest, HeadersRoundASubSecondPeriodUpToOne) {
  Use(R"(
rules:
  - name: tenth
    algorithm: fixed_window
    limit: 3
    period: 100ms
  - name: one-and-a-half
    algorithm: fixed_window
    limit: 3
    period: 1500ms
)");
  std::string out;
  AppendRateLimitHeaders(Evaluate(TestRequest()), false, out);
  EXPECT_TRUE(
      out.starts_with("RateLimit-Policy: \"tenth\";q=3;w=1, \"one-and-a-half\";q=3;w=2\r\n"))
      << out;
}

TEST_F(GateTest, HeadersShowTheOverriddenLimit) {
  Use(R"(
rules:
  - name: per-key
    key: ["header:x-api-key"]
    algorithm: token_bucket
    limit: 2
    period: 1m
    overrides:
      - {key: "premium", limit: 50, period: 1h}
)");
  std::string out;
  AppendRateLimitHeaders(Evaluate(TestRequest().Header("X-Api-Key", "premium")), false, out);
  EXPECT_EQ(out,
            "RateLimit-Policy: \"per-key\";q=50;w=3600\r\n"
            "RateLimit: \"per-key\";r=49;t=72\r\n");
}

TEST_F(GateTest, LegacyHeadersUseTheRuleWithTheLeastRemaining) {
  Use(R"(
rules:
  - name: a
    algorithm: token_bucket
    limit: 10
    period: 1m
  - name: b
    algorithm: token_bucket
    limit: 2
    period: 1s
  - name: c
    algorithm: token_bucket
    limit: 100
    period: 1h
)");
  std::string out;
  AppendRateLimitHeaders(Evaluate(TestRequest()), true, out);
  EXPECT_EQ(out,
            "RateLimit-Policy: \"a\";q=10;w=60, \"b\";q=2;w=1, \"c\";q=100;w=3600\r\n"
            "RateLimit: \"a\";r=9;t=6, \"b\";r=1;t=1, \"c\";r=99;t=36\r\n"
            "X-RateLimit-Limit: 2\r\n"
            "X-RateLimit-Remaining: 1\r\n"
            "X-RateLimit-Reset: 1\r\n");
  // Without legacy, the X- fields are left out.
  std::string ietf;
  AppendRateLimitHeaders(evaluation_, false, ietf);
  EXPECT_EQ(ietf.find("X-RateLimit"), std::string::npos);
}

TEST_F(GateTest, NoHeadersWithoutMatchingRules) {
  Use(R"(
rules:
  - name: api
    match: {path_prefix: "/api/"}
    algorithm: token_bucket
    limit: 1
    period: 1m
)");
  std::string out;
  AppendRateLimitHeaders(Evaluate(TestRequest().Path("/")), true, out);
  EXPECT_EQ(out, "");
}

TEST(CeilSeconds, RoundsUpToWholeSeconds) {
  EXPECT_EQ(CeilSeconds(0ns), 0);
  EXPECT_EQ(CeilSeconds(-5s), 0);
  EXPECT_EQ(CeilSeconds(1ns), 1);
  EXPECT_EQ(CeilSeconds(999ms), 1);
  EXPECT_EQ(CeilSeconds(1s), 1);
  EXPECT_EQ(CeilSeconds(1s + 1ns), 2);
  EXPECT_EQ(CeilSeconds(59500ms), 60);
  EXPECT_EQ(CeilSeconds(3600s), 3600);
  // Decision::kNever does not overflow.
  EXPECT_EQ(CeilSeconds(Decision::kNever), 9'223'372'037);
}

// ---- Metrics ----

TEST_F(GateTest, MetricsCountEachRuleAndOutcome) {
  Use(R"(
rules:
  - name: hard
    key: [ip]
    algorithm: fixed_window
    limit: 2
    period: 1m
  - name: trial
    key: [ip]
    algorithm: fixed_window
    limit: 1
    period: 1m
    action: shadow
  - name: api-only
    match: {path_prefix: "/api/"}
    key: ["header:x-api-key"]
    algorithm: fixed_window
    limit: 5
    period: 1m
    on_missing_key: reject
)");
  for (int i = 0; i < 4; ++i) Evaluate(TestRequest());  // hard: 2 allowed, 2 limited
  Evaluate(TestRequest().Path("/api/x"));               // api-only: missing key
  Evaluate(From("192.0.2.1").Path("/api/x").Header("X-Api-Key", "k"));

  const size_t hard = registry_.RuleSlot("hard");
  const size_t trial = registry_.RuleSlot("trial");
  const size_t api = registry_.RuleSlot("api-only");
  EXPECT_NE(hard, trial);
  EXPECT_EQ(hard, policy_->rules()[0].metric_slot);
  EXPECT_EQ(trial, policy_->rules()[1].metric_slot);
  EXPECT_EQ(api, policy_->rules()[2].metric_slot);

  EXPECT_EQ(Count(hard, Outcome::kAllowed), 3u);
  EXPECT_EQ(Count(hard, Outcome::kLimited), 2u);
  EXPECT_EQ(Count(trial, Outcome::kAllowed), 2u);
  EXPECT_EQ(Count(trial, Outcome::kShadowLimited), 3u);
  EXPECT_EQ(Count(api, Outcome::kMissingKey), 1u);
  EXPECT_EQ(Count(api, Outcome::kAllowed), 1u);
  EXPECT_EQ(Count(metrics::kSlotNoRule, Outcome::kAllowed), 0u);
  // Nothing else was counted anywhere.
  uint64_t total = 0;
  for (const auto& slot : metrics_.requests) {
    for (const metrics::Counter& c : slot) total += c.Get();
  }
  EXPECT_EQ(total, 3u + 2u + 2u + 3u + 1u + 1u);
  EXPECT_EQ(metrics_.store_operations_ok.Get(), 4u * 2u + 3u);
}

TEST_F(GateTest, MetricSlotsSurviveARecompile) {
  Use(OneRule("[ip]"));
  const size_t slot = policy_->rules()[0].metric_slot;
  Evaluate(TestRequest());
  Use(OneRule("[ip]"));
  EXPECT_EQ(policy_->rules()[0].metric_slot, slot);
  Evaluate(TestRequest());
  EXPECT_EQ(Count(slot, Outcome::kAllowed), 1u);
  EXPECT_EQ(Count(slot, Outcome::kLimited), 1u);
}

// ---- Regression tests for bugs found while writing these tests ----

// docs/config.md, key parts: `host` is "The `Host`, lower-case, without the port". The
// gate keys on the Host as sent, so a client gets a fresh counter for every spelling of
// its Host header, and an override written for the lower-case host does not apply.
TEST_F(GateTest, HostKeyPartIsLowerCasedWithoutPort) {
  Use(OneRuleWithOverride("[host]", "api.example.com"));
  EXPECT_EQ(LimitOf(Evaluate(TestRequest().Header("Host", "API.Example.com:8443"))), 7u);
  EXPECT_EQ(VerdictOf(TestRequest().Header("Host", "www.example.com")), Verdict::kAllow);
  EXPECT_EQ(VerdictOf(TestRequest().Header("Host", "WWW.example.com")), Verdict::kLimited);
}

// include/sluice/store.h: StoreRequest::key is "Rule name + client identity, already free
// of secrets (hashed by the caller)"; design.md: secrets are never logged or exported in
// clear. The gate passes the raw Authorization credentials (and API-key header values)
// in the store key, which a Redis store would write into its key names.
TEST_F(GateTest, StoreKeyCarriesNoCredentialsInClear) {
  Use(OneRule("[authorization]"));
  const Evaluation& e = Evaluate(TestRequest().Header("Authorization", "Bearer s3cr3t-token"));
  ASSERT_EQ(e.results.size(), 1u);
  EXPECT_EQ(e.KeyOf(e.results[0]).find("s3cr3t-token"), std::string_view::npos)
      << "store key: " << e.KeyOf(e.results[0]);
}

}  // namespace
}  // namespace sluice::gate
