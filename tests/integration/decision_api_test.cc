// The decision APIs through the real binary over real sockets: POST /v1/check (one
// query, descriptors, batches, bad bodies) and GET /v1/auth (forward-auth as a proxy
// calls it), with the memory store and with real redis-server processes (where every
// answer comes from the store later, so batches are answered only when all are in).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <simdjson.h>

#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness.h"
#include "redis/redis_process.h"

namespace sluice::integration {
namespace {

#define START_SLUICE(name, yaml) \
  SluiceProcess name(yaml);      \
  ASSERT_TRUE(name.started()) << name.error()

std::string Config(std::string_view rest) {
  return fmt::format(R"(listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
workers: 1
access_log: {{enabled: false}}
{})",
                     rest);
}

// Rules for most tests: an hour-long window per API key on /api/ (so the counts do not
// move during a test, whatever the time), and a token bucket per client address.
constexpr std::string_view kRules = R"(rules:
  - name: api-key
    match: {path_prefix: "/api/", methods: [GET, POST]}
    key: ["header:x-api-key"]
    algorithm: fixed_window
    limit: 3
    period: 1h
    overrides:
      - {key: "premium", limit: 5}
  - name: per-ip
    key: [ip]
    algorithm: token_bucket
    limit: 10
    period: 1h
)";

// Hour-long fixed windows turn on the hour: a test that counts within one keeps clear.
void AvoidHourBoundary() {
  const std::time_t now = std::time(nullptr);
  const int left = 3600 - static_cast<int>(now % 3600);
  if (left < 30) std::this_thread::sleep_for(std::chrono::seconds(left + 1));
}

HttpResponse Check(uint16_t port, std::string_view body) {
  return Fetch(port, "POST", "/v1/check", {{"Content-Type", "application/json"}}, body);
}

// A parsed answer; the document lives as long as the Json.
struct Json {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  explicit Json(const std::string& text) {
    if (parser.parse(text).get(root) != simdjson::SUCCESS) ADD_FAILURE() << "not JSON: " << text;
  }
};

bool Allowed(simdjson::dom::element e) { return bool(e["allowed"]); }

// The entry for `rule` in an answer's "rules".
simdjson::dom::element RuleEntry(simdjson::dom::element answer, std::string_view rule) {
  for (simdjson::dom::element r : answer["rules"].get_array()) {
    if (std::string_view(r["rule"]) == rule) return r;
  }
  ADD_FAILURE() << "no rule " << rule << " in " << simdjson::minify(answer);
  return answer;
}

std::vector<std::string_view> RuleNames(simdjson::dom::element answer) {
  std::vector<std::string_view> names;
  for (simdjson::dom::element r : answer["rules"].get_array()) names.push_back(r["rule"]);
  return names;
}

TEST(CheckApiTest, RuleAndKeyCountAndTheLimitedAnswerIs429WithTheGatewaysHeaders) {
  AvoidHourBoundary();
  START_SLUICE(sluice, Config(kRules));
  for (int i = 1; i <= 4; ++i) {
    const HttpResponse r = Check(sluice.port(), R"({"rule":"api-key","key":"k-1"})");
    ASSERT_TRUE(r.ok()) << r.error;
    Json json(r.body);
    const auto entry = RuleEntry(json.root, "api-key");
    EXPECT_EQ(int64_t(entry["limit"]), 3);
    std::string error;
    const auto policy = ParseRateLimitField(r.Header("RateLimit-Policy").value_or(""), &error);
    ASSERT_TRUE(policy) << error << r.Describe();
    EXPECT_EQ((*policy)[0].policy, "api-key");
    EXPECT_EQ((*policy)[0].Param("q"), 3);
    EXPECT_EQ((*policy)[0].Param("w"), 3600);
    const auto limit = ParseRateLimitField(r.Header("RateLimit").value_or(""), &error);
    ASSERT_TRUE(limit) << error << r.Describe();
    if (i <= 3) {
      EXPECT_EQ(r.status, 200) << r.Describe();
      EXPECT_TRUE(Allowed(json.root));
      EXPECT_EQ(int64_t(entry["remaining"]), 3 - i);
      EXPECT_EQ(int64_t(entry["retry_after_ms"]), 0);
      EXPECT_EQ((*limit)[0].Param("r"), 3 - i);
      EXPECT_FALSE(r.Header("Retry-After"));
    } else {
      EXPECT_EQ(r.status, 429) << r.Describe();
      EXPECT_FALSE(Allowed(json.root));
      EXPECT_EQ(std::string_view(json.root["error"]), "rate_limited");
      EXPECT_EQ(std::string_view(json.root["rule"]), "api-key");
      const int64_t wait_ms = json.root["retry_after_ms"];
      EXPECT_GT(wait_ms, 0);
      EXPECT_LE(wait_ms, 3600 * 1000);
      EXPECT_EQ(int64_t(entry["remaining"]), 0);
      ASSERT_TRUE(r.Header("Retry-After")) << r.Describe();
      EXPECT_EQ(std::stoll(*r.Header("Retry-After")), (wait_ms + 999) / 1000);
    }
    EXPECT_TRUE(r.Header("X-Request-Id"));
    EXPECT_EQ(r.Header("Content-Type"), "application/json");
  }
  // Another key has its own count; an override's key its own limit.
  Json other(Check(sluice.port(), R"({"rule":"api-key","key":"k-2"})").body);
  EXPECT_EQ(int64_t(RuleEntry(other.root, "api-key")["remaining"]), 2);
  Json premium(Check(sluice.port(), R"({"rule":"api-key","key":"premium"})").body);
  EXPECT_EQ(int64_t(RuleEntry(premium.root, "api-key")["limit"]), 5);
  EXPECT_EQ(int64_t(RuleEntry(premium.root, "api-key")["remaining"]), 4);
}

TEST(CheckApiTest, DescriptorsAreEvaluatedAgainstEveryRuleTheyMatch) {
  AvoidHourBoundary();
  START_SLUICE(sluice, Config(kRules));
  // Path, method and key match api-key; the address keys per-ip.
  const HttpResponse both = Check(sluice.port(), R"({"descriptors": {"ip": "203.0.113.7",
      "path": "/api/orders", "method": "POST", "header:X-Api-Key": "k-9"}})");
  ASSERT_EQ(both.status, 200) << both.Describe();
  Json j1(both.body);
  EXPECT_EQ(RuleNames(j1.root), (std::vector<std::string_view>{"api-key", "per-ip"}));
  EXPECT_EQ(int64_t(RuleEntry(j1.root, "per-ip")["remaining"]), 9);

  // Another path: only per-ip matches. No address: per-ip's key is missing (skipped).
  Json j2(Check(sluice.port(), R"({"descriptors": {"ip": "203.0.113.7", "path": "/web"}})").body);
  EXPECT_EQ(RuleNames(j2.root), (std::vector<std::string_view>{"per-ip"}));
  EXPECT_EQ(int64_t(RuleEntry(j2.root, "per-ip")["remaining"]), 8);
  Json j3(
      Check(sluice.port(),
            R"({"descriptors": {"path": "/api/x", "method": "GET", "header:x-api-key": "k-9"}})")
          .body);
  EXPECT_EQ(RuleNames(j3.root), (std::vector<std::string_view>{"api-key"}));
  EXPECT_EQ(int64_t(RuleEntry(j3.root, "api-key")["remaining"]), 1);

  // The same client key as a rule-and-key query: one counter.
  Json j4(Check(sluice.port(), R"({"rule":"api-key","key":"k-9"})").body);
  EXPECT_EQ(int64_t(RuleEntry(j4.root, "api-key")["remaining"]), 0);
  // A path that canonicalises onto /api/ matches as the request would.
  const HttpResponse limited = Check(
      sluice.port(),
      R"({"descriptors": {"path": "/static/../api/x", "method": "GET", "header:x-api-key": "k-9"}})");
  EXPECT_EQ(limited.status, 429) << limited.Describe();
}

TEST(CheckApiTest, CostTakesThatMuchZeroOnlyLooksAndTooMuchNeverPasses) {
  START_SLUICE(sluice, Config(kRules));
  Json a(Check(sluice.port(), R"({"rule":"per-ip","key":"c","cost":4})").body);
  EXPECT_EQ(int64_t(RuleEntry(a.root, "per-ip")["remaining"]), 6);
  Json b(Check(sluice.port(), R"({"rule":"per-ip","key":"c","cost":0})").body);
  EXPECT_TRUE(Allowed(b.root));
  EXPECT_EQ(int64_t(RuleEntry(b.root, "per-ip")["remaining"]), 6);
  // More than the bucket holds: waiting never helps, so no Retry-After is promised.
  const HttpResponse r = Check(sluice.port(), R"({"rule":"per-ip","key":"c","cost":11})");
  EXPECT_EQ(r.status, 429) << r.Describe();
  EXPECT_FALSE(r.Header("Retry-After")) << r.Describe();
  Json c(r.body);
  EXPECT_TRUE(c.root["retry_after_ms"].is_null()) << r.body;
  EXPECT_TRUE(RuleEntry(c.root, "per-ip")["retry_after_ms"].is_null()) << r.body;
}

TEST(CheckApiTest, ABatchIsAnsweredInOrderWithEachQuerysOwnAnswer) {
  AvoidHourBoundary();
  START_SLUICE(sluice, Config(kRules));
  const HttpResponse r = Check(sluice.port(), R"([
      {"rule": "api-key", "key": "b"},
      {"rule": "api-key", "key": "b", "cost": 2},
      {"rule": "api-key", "key": "b"},
      {"descriptors": {"ip": "198.51.100.1"}},
      {"rule": "api-key", "key": "other"}])");
  ASSERT_EQ(r.status, 200) << r.Describe();
  EXPECT_FALSE(r.Header("RateLimit")) << "a batch has no one policy to report";
  Json json(r.body);
  simdjson::dom::array answers = json.root.get_array();
  ASSERT_EQ(answers.size(), 5u) << r.body;
  std::vector<bool> allowed;
  for (simdjson::dom::element a : answers) allowed.push_back(Allowed(a));
  EXPECT_EQ(allowed, (std::vector<bool>{true, true, false, true, true})) << r.body;
  EXPECT_EQ(int64_t(RuleEntry(answers.at(1), "api-key")["remaining"]), 0);
  EXPECT_EQ(RuleNames(answers.at(3)), (std::vector<std::string_view>{"per-ip"}));
  EXPECT_EQ(int64_t(RuleEntry(answers.at(4), "api-key")["remaining"]), 2);
}

TEST(CheckApiTest, BadBodiesAre400WithAMessageAndChargeNothing) {
  AvoidHourBoundary();
  START_SLUICE(sluice, Config(kRules));
  const struct {
    const char* body;
    const char* message;
  } cases[] = {
      {R"({"rule":"api-key",)", "malformed JSON"},
      {R"({"rule":"api-key","key":"k","kee":1})", R"(unknown field "kee")"},
      {R"({"rule":"api-key"})", "rule needs key"},
      {R"({"rule":"api-key","key":"k","cost":-1})", "cost must be a whole number"},
      {R"({"descriptors":{"cookie":"x"}})", R"(unknown key part "cookie")"},
      {R"({"descriptors":{"ip":"not-an-ip"}})", "is not an IP address"},
      {R"([{"rule":"api-key","key":"k"},{"rule":"nope","key":"k"}])",
       R"(query 1: unknown rule "nope")"},
      {R"([])", "an empty batch"},
      {"", "malformed JSON"},
  };
  for (const auto& c : cases) {
    const HttpResponse r = Check(sluice.port(), c.body);
    EXPECT_EQ(r.status, 400) << c.body << "\n" << r.Describe();
    Json json(r.body);
    EXPECT_EQ(std::string_view(json.root["error"]), "bad_request");
    EXPECT_NE(std::string_view(json.root["message"]).find(c.message), std::string_view::npos)
        << c.body << " -> " << r.body;
  }
  // The valid first query of the refused batch took nothing.
  Json json(Check(sluice.port(), R"({"rule":"api-key","key":"k"})").body);
  EXPECT_EQ(int64_t(RuleEntry(json.root, "api-key")["remaining"]), 2);
}

TEST(CheckApiTest, OnlyPostAndBodiesWithinTheLimitAndKeepAliveWorks) {
  START_SLUICE(sluice, Config(std::string("http: {max_body_bytes: 200}\n") + std::string(kRules)));
  const HttpResponse get = FetchGet(sluice.port(), "/v1/check");
  EXPECT_EQ(get.status, 405) << get.Describe();
  EXPECT_EQ(get.Header("Allow"), "POST");
  const std::string big = R"({"rule":"per-ip","key":")" + std::string(300, 'x') + R"("})";
  EXPECT_EQ(Check(sluice.port(), big).status, 413);

  // Several on one connection, the last two pipelined, a chunked body among them.
  HttpClient client(sluice.port());
  ASSERT_TRUE(client.connected()) << client.error();
  for (int i = 0; i < 3; ++i) {
    const HttpResponse r =
        client.Request("POST", "/v1/check", {}, R"({"rule":"per-ip","key":"ka"})");
    ASSERT_EQ(r.status, 200) << r.Describe();
  }
  const std::string body = R"({"rule":"per-ip","key":"ka"})";
  std::string pipelined = BuildRequest("POST", "/v1/check", {}, body);
  pipelined += "POST /v1/check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
               fmt::format("{:x}\r\n{}\r\n0\r\n\r\n", body.size(), body);
  ASSERT_TRUE(client.Send(pipelined));
  const std::vector<HttpResponse> two = client.ReadResponses(2);
  ASSERT_EQ(two.size(), 2u);
  Json fourth(two[0].body), fifth(two[1].body);
  EXPECT_EQ(int64_t(RuleEntry(fourth.root, "per-ip")["remaining"]), 6);
  EXPECT_EQ(int64_t(RuleEntry(fifth.root, "per-ip")["remaining"]), 5);
}

TEST(CheckApiTest, SwitchedOffThePathsAreRequestsLikeAnyOther) {
  START_SLUICE(sluice, Config(std::string("decision_api: false\n") + std::string(kRules)));
  // Decided by the rules as any request is (decision mode): per-ip counts them, and the
  // answer is decision mode's, not the check API's.
  const HttpResponse check = Check(sluice.port(), R"({"rule":"api-key","key":"k"})");
  EXPECT_EQ(check.status, 200) << check.Describe();
  Json json(check.body);
  // Decision mode lists rule names, where the check API lists objects.
  EXPECT_EQ(std::string_view(json.root["rules"].at(0)), "per-ip") << check.body;
  const HttpResponse auth =
      FetchGet(sluice.port(), "/v1/auth?refuse_status=403", {{"X-Original-URI", "/api/x"}});
  EXPECT_EQ(auth.status, 200) << auth.Describe();
  EXPECT_FALSE(auth.Header("X-Sluice-Decision")) << auth.Describe();
  std::string error;
  const auto limit = ParseRateLimitField(auth.Header("RateLimit").value_or(""), &error);
  ASSERT_TRUE(limit) << error << auth.Describe();
  EXPECT_EQ((*limit)[0].Param("r"), 8) << "the two requests counted by per-ip";
}

// --- GET /v1/auth ------------------------------------------------------------------------

// What nginx's auth_request or Traefik's forwardAuth sends: the original request's
// fields, and its method and URI in headers of their own.
Headers ForwardAuth(std::string_view client, std::string_view method, std::string_view uri,
                    std::string_view api_key) {
  return {{"X-Forwarded-For", std::string(client)},
          {"X-Original-Method", std::string(method)},
          {"X-Original-URI", std::string(uri)},
          {"X-Api-Key", std::string(api_key)}};
}

TEST(AuthApiTest, DecidesTheOriginalRequestForTheClientBehindATrustedProxy) {
  AvoidHourBoundary();
  START_SLUICE(sluice, Config(std::string("clients: {trusted_proxies: [\"127.0.0.1/32\"]}\n") +
                              std::string(kRules)));
  // api-key counts POST /api/ by key: three pass, the fourth is limited.
  for (int i = 1; i <= 4; ++i) {
    const HttpResponse r = FetchGet(sluice.port(), "/v1/auth",
                                    ForwardAuth("203.0.113.1", "POST", "/api/orders?x=1", "k"));
    EXPECT_EQ(r.status, i <= 3 ? 200 : 429) << r.Describe();
    EXPECT_EQ(r.Header("X-Sluice-Decision"), i <= 3 ? "allowed" : "limited");
    EXPECT_TRUE(r.Header("RateLimit")) << r.Describe();
    if (i == 4) EXPECT_TRUE(r.Header("Retry-After")) << r.Describe();
  }
  // A method the rule does not match is not counted by it; per-ip still counts the
  // client (from X-Forwarded-For: the caller, 127.0.0.1, is a trusted proxy).
  const HttpResponse del =
      FetchGet(sluice.port(), "/v1/auth", ForwardAuth("203.0.113.1", "DELETE", "/api/orders", "k"));
  EXPECT_EQ(del.status, 200) << del.Describe();
  std::string error;
  const auto limit = ParseRateLimitField(del.Header("RateLimit").value_or(""), &error);
  ASSERT_TRUE(limit && limit->size() == 1) << error << del.Describe();
  EXPECT_EQ((*limit)[0].policy, "per-ip");
  EXPECT_EQ((*limit)[0].Param("r"), 10 - 5);
  // Another client behind the same proxy has its own address count.
  const HttpResponse other =
      FetchGet(sluice.port(), "/v1/auth", ForwardAuth("203.0.113.2", "GET", "/web", "k"));
  const auto other_limit = ParseRateLimitField(other.Header("RateLimit").value_or(""), &error);
  ASSERT_TRUE(other_limit) << error;
  EXPECT_EQ((*other_limit)[0].Param("r"), 9);

  // For proxies that pass on only 401 and 403 (nginx): the refusal's status on demand.
  const HttpResponse nginx_style = FetchGet(sluice.port(), "/v1/auth?refuse_status=403",
                                            ForwardAuth("203.0.113.1", "POST", "/api/orders", "k"));
  EXPECT_EQ(nginx_style.status, 403) << nginx_style.Describe();
  EXPECT_EQ(nginx_style.Header("X-Sluice-Decision"), "limited");
  EXPECT_EQ(FetchGet(sluice.port(), "/v1/auth?refuse_status=500").status, 400);
}

TEST(AuthApiTest, AnUntrustedCallerIsTheClientAndTheDenyListApplies) {
  START_SLUICE(sluice,
               Config(std::string("access: {deny: [\"198.51.100.0/24\"]}\n") +
                      "clients: {trusted_proxies: [\"127.0.0.2/32\"]}\n" + std::string(kRules)));
  // From 127.0.0.1, not trusted: X-Forwarded-For is not believed, every client behind
  // the caller shares its count.
  for (int i = 1; i <= 2; ++i) {
    const HttpResponse r = FetchGet(sluice.port(), "/v1/auth",
                                    ForwardAuth(fmt::format("203.0.113.{}", i), "GET", "/", ""));
    std::string error;
    const auto limit = ParseRateLimitField(r.Header("RateLimit").value_or(""), &error);
    ASSERT_TRUE(limit) << error << r.Describe();
    EXPECT_EQ((*limit)[0].Param("r"), 10 - i);
  }
  // From 127.0.0.2, trusted: the deny list applies to the client it names.
  const HttpResponse denied = Fetch(sluice.port(), "GET", "/v1/auth",
                                    ForwardAuth("198.51.100.9", "GET", "/", ""), {}, "127.0.0.2");
  EXPECT_EQ(denied.status, 403) << denied.Describe();
  EXPECT_EQ(denied.Header("X-Sluice-Decision"), "denied");
}

// --- with Redis: every answer comes later ---------------------------------------------------

TEST(CheckApiRedisTest, BatchesAndSingleQueriesAreAnsweredWhenTheStoreHasAnsweredAll) {
  AvoidHourBoundary();
  sluice::testing::RedisProcess redis;
  ASSERT_TRUE(redis.Start()) << redis.error();
  const std::string config = Config(fmt::format(R"(store:
  backend: redis
  redis: {{mode: ring, nodes: ["{}"], connect_timeout_ms: 500, command_timeout_ms: 500}}
  on_failure: deny
{})",
                                                redis.address(), kRules));
  START_SLUICE(a, config);
  START_SLUICE(b, config);
  // Two instances share the counts: a batch on one, single queries on the other.
  const HttpResponse batch = Check(a.port(), R"([{"rule":"api-key","key":"r"},
      {"descriptors":{"path":"/api/","method":"GET","header:x-api-key":"r"}},
      {"rule":"per-ip","key":"r"}])");
  ASSERT_EQ(batch.status, 200) << batch.Describe();
  Json json(batch.body);
  simdjson::dom::array answers = json.root.get_array();
  ASSERT_EQ(answers.size(), 3u) << batch.body;
  EXPECT_EQ(int64_t(RuleEntry(answers.at(0), "api-key")["remaining"]), 2) << batch.body;
  EXPECT_EQ(int64_t(RuleEntry(answers.at(1), "api-key")["remaining"]), 1) << batch.body;
  EXPECT_EQ(int64_t(RuleEntry(answers.at(2), "per-ip")["remaining"]), 9) << batch.body;
  const HttpResponse third = Check(b.port(), R"({"rule":"api-key","key":"r"})");
  EXPECT_EQ(third.status, 200) << third.Describe();
  const HttpResponse fourth = Check(b.port(), R"({"rule":"api-key","key":"r"})");
  EXPECT_EQ(fourth.status, 429) << fourth.Describe();
  // A client that leaves before the store answers costs nothing but its queries.
  {
    HttpClient gone(a.port());
    ASSERT_TRUE(gone.Send(BuildRequest("POST", "/v1/check", {}, R"({"rule":"per-ip","key":"g"})")));
  }
  const HttpResponse after = Check(a.port(), R"({"rule":"per-ip","key":"r"})");
  EXPECT_EQ(after.status, 200) << after.Describe();
}

}  // namespace
}  // namespace sluice::integration
