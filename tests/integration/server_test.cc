// The real sluice binary over real loopback sockets: limits, response fields, client
// identity, access lists, actions, protocol limits, pipelining, reload, concurrency,
// shutdown, the admin endpoints and check-config. Each test starts its own process on
// ports chosen by the kernel.
//
// Several tests reproduce server bugs this suite found (their comments say which); they
// stay as regression tests.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness.h"

namespace sluice::integration {
namespace {

// Listeners on port 0, quiet access log (unless given), then the test's own settings.
std::string Config(std::string_view rest, int workers = 1, std::string_view access_log = "false") {
  return fmt::format(
             "listen: \"127.0.0.1:0\"\n"
             "admin_listen: \"127.0.0.1:0\"\n"
             "workers: {}\n"
             "access_log: {}\n",
             workers, access_log) +
         std::string(rest);
}

// A rule for WaitForWindowTime: fixed windows of one period all start together, so a
// fresh key under this rule reports (t) how long the current window has left.
constexpr std::string_view kProbeRule = R"(
  - name: probe
    match: {path_prefix: "/probe"}
    key: ["header:x-probe"]
    algorithm: fixed_window
    limit: 1000000
    period: 1m
)";

#define START_SLUICE(name, yaml) \
  SluiceProcess name(yaml);      \
  ASSERT_TRUE(name.started()) << name.error()

std::vector<RateLimitEntry> Field(const HttpResponse& r, std::string_view name) {
  const std::optional<std::string> value = r.Header(name);
  if (!value) {
    ADD_FAILURE() << "no " << name << " field in:\n" << r.Describe();
    return {};
  }
  EXPECT_EQ(r.HeaderCount(name), 1u) << r.Describe();
  std::string error;
  std::optional<std::vector<RateLimitEntry>> entries = ParseRateLimitField(*value, &error);
  if (!entries) {
    ADD_FAILURE() << name << ": \"" << *value << "\" is not a valid RFC 9651 list: " << error;
    return {};
  }
  return *entries;
}

// The one entry of RateLimit (or RateLimit-Policy) for `policy`.
std::optional<RateLimitEntry> Entry(const HttpResponse& r, std::string_view field,
                                    std::string_view policy) {
  for (RateLimitEntry& e : Field(r, field)) {
    if (e.policy == policy) return e;
  }
  ADD_FAILURE() << "no \"" << policy << "\" in " << field << " of:\n" << r.Describe();
  return std::nullopt;
}

int64_t Remaining(const HttpResponse& r, std::string_view policy) {
  const std::optional<RateLimitEntry> e = Entry(r, "RateLimit", policy);
  if (!e || !e->Param("r")) return -1;
  return *e->Param("r");
}

std::string Metrics(const SluiceProcess& p) {
  const HttpResponse r = FetchGet(p.admin_port(), "/metrics");
  EXPECT_EQ(r.status, 200) << r.Describe();
  return r.body;
}

double Metric(const SluiceProcess& p, std::string_view name, std::string_view labels = {}) {
  return MetricValue(Metrics(p), name, labels).value_or(-1);
}

// Makes sure the 1m fixed windows have at least `seconds` left, waiting for the next
// window when they do not, so a test counting within one window cannot straddle two.
void WaitForWindowTime(const SluiceProcess& p, int seconds) {
  static std::atomic<int> probe_key{0};
  int64_t t = -1;
  const bool ok = WaitFor(
      [&] {
        const HttpResponse r =
            FetchGet(p.port(), "/probe", {{"X-Probe", fmt::format("p{}", probe_key++)}});
        const std::optional<RateLimitEntry> e = Entry(r, "RateLimit", "probe");
        t = e && e->Param("t") ? *e->Param("t") : -1;
        return t >= seconds;
      },
      Millis(1000 * (seconds + 5)), Millis(200));
  ASSERT_TRUE(ok) << "the window did not turn; last t=" << t;
}

// Sends `n` GETs on one connection and returns the statuses.
std::vector<int> Statuses(HttpClient& c, std::string_view target, const Headers& headers, int n) {
  std::vector<int> statuses;
  for (int i = 0; i < n; ++i) {
    const HttpResponse r = c.Get(target, headers);
    EXPECT_TRUE(r.ok()) << r.error;
    statuses.push_back(r.status);
  }
  return statuses;
}

std::vector<int> Repeat(int status, int n) {
  return std::vector<int>(static_cast<size_t>(n), status);
}
std::vector<int> Concat(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

bool IsHex32(std::string_view s) {
  if (s.size() != 32) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

int64_t Elapsed(Clock::time_point since) {
  return std::chrono::duration_cast<Millis>(Clock::now() - since).count();
}

// A fresh connection gets 200: the server is alive and serving.
void ExpectServing(const SluiceProcess& p) {
  const HttpResponse r = FetchGet(p.port(), "/still-alive");
  EXPECT_EQ(r.status, 200) << r.Describe();
}

void ExpectClosed(HttpClient& c, Millis timeout = Millis(2000)) {
  std::string data;
  const HttpClient::CloseState state = c.WaitClosed(timeout, &data);
  EXPECT_TRUE(state == HttpClient::CloseState::kClosed || state == HttpClient::CloseState::kReset)
      << "connection still open (state " << static_cast<int>(state) << "), data: " << data;
}

// --- 1. Limits per client key and per rule ----------------------------------------------

TEST(ServerTest, LimitsEachClientKeyAndEachRuleSeparately) {
  START_SLUICE(sluice, Config(std::string(R"(
rules:
  - name: api
    match: {path_prefix: "/api/"}
    key: ["header:x-api-key"]
    algorithm: fixed_window
    limit: 5
    period: 1m
  - name: other
    match: {path_prefix: "/other/"}
    key: ["header:x-api-key"]
    algorithm: fixed_window
    limit: 5
    period: 1m
)") + std::string(kProbeRule)));
  WaitForWindowTime(sluice, 5);
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();

  EXPECT_EQ(Statuses(c, "/api/items", {{"X-API-Key", "key-a"}}, 7),
            Concat(Repeat(200, 5), Repeat(429, 2)));
  // Another key has its own counter.
  EXPECT_EQ(Statuses(c, "/api/items", {{"X-API-Key", "key-b"}}, 6),
            Concat(Repeat(200, 5), Repeat(429, 1)));
  // Another rule counts separately, even for key A.
  EXPECT_EQ(Statuses(c, "/other/x", {{"X-API-Key", "key-a"}}, 6),
            Concat(Repeat(200, 5), Repeat(429, 1)));
  // A path no rule matches is never limited, and says so.
  for (int i = 0; i < 8; ++i) {
    const HttpResponse r = c.Get("/free", {{"X-API-Key", "key-a"}});
    ASSERT_EQ(r.status, 200) << r.Describe();
    EXPECT_EQ(r.body, "{\"allowed\":true,\"rules\":[]}\n");
    EXPECT_FALSE(r.Header("RateLimit")) << r.Describe();
  }
  const HttpResponse allowed = c.Get("/api/items", {{"X-API-Key", "key-c"}});
  EXPECT_EQ(allowed.body, "{\"allowed\":true,\"rules\":[\"api\"]}\n");
  EXPECT_EQ(allowed.Header("Content-Type"), "application/json");
}

// Other spellings of a path under a rule's prefix are the same resource, and must not
// slip past the rule: the absolute form (RFC 9112 section 3.2.2, which a server MUST
// accept), repeated slashes, dot segments and percent-encoded unreserved characters.
// (Found by this suite with the absolute form, which once evaded every path rule.)
TEST(ServerTest, OtherSpellingsOfAPathCannotEvadeItsRule) {
  START_SLUICE(sluice, Config(R"(
rules:
  - name: api
    match: {path_prefix: "/api/"}
    key: [ip]
    algorithm: fixed_window
    limit: 2
    period: 1h
)"));
  HttpClient c(sluice.port());
  EXPECT_EQ(Statuses(c, "/api/items", {}, 2), (std::vector<int>{200, 200}));
  EXPECT_EQ(c.Get("/api/items").status, 429);
  for (const char* target : {"http://127.0.0.1/api/items", "//api/items", "/x/../api/items",
                             "/./api/items", "/%61pi/items", "/api%2Fitems/../api/items"}) {
    const HttpResponse r = c.Get(target);
    EXPECT_EQ(r.status, 429) << "the limit of /api/ was evaded with " << target << ": "
                             << r.Describe();
  }
  // Not every look-alike is the same path.
  EXPECT_EQ(c.Get("/apix/items").status, 200);
  EXPECT_EQ(c.Get("/API/items").status, 200);
}

// Found by this suite. RFC 9112 section 3.2.2: with an absolute-form target "the
// origin server MUST ignore the received Host header field (if any) and instead use
// the host information of the request-target". sluice takes the host from the Host
// header whatever the target says, so a client evades a host-scoped rule (match.host,
// and the host key part) by naming the host in the request line and anything else in
// Host.
TEST(ServerTest, AbsoluteFormAuthorityIsTheHostForRules) {
  START_SLUICE(sluice, Config(R"(
rules:
  - name: one-host
    match: {host: "only.example"}
    key: [ip]
    algorithm: fixed_window
    limit: 1
    period: 1h
)"));
  HttpClient c(sluice.port());
  EXPECT_EQ(c.Get("/x", {{"Host", "only.example"}}).status, 200);
  EXPECT_EQ(c.Get("/x", {{"Host", "only.example"}}).status, 429);
  const HttpResponse evaded = c.Get("http://only.example/x", {{"Host", "else.example"}});
  EXPECT_EQ(evaded.status, 429) << "the limit of only.example was evaded: " << evaded.Describe();
}

// Found by this suite. RFC 9112 section 3.2: "A server MUST respond with a 400 (Bad
// Request) status code to any HTTP/1.1 request message that lacks a Host header field
// and to any request message that contains more than one Host header field line";
// section 5.1: whitespace between a field name and the colon MUST be rejected with
// 400. sluice answers all three with 200. For a limiter this matters because rules
// match and key on Host (the first line wins here, an upstream may take another), and
// "X-API-Key : k" is a key sluice does not see but a lenient upstream might.
TEST(ServerTest, MissingOrDuplicateHostSpaceInNamesAndFoldedValuesGet400) {
  START_SLUICE(sluice, Config(""));
  for (const std::string_view bad : {
           std::string_view("GET / HTTP/1.1\r\n\r\n"),
           std::string_view("GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"),
           std::string_view("GET / HTTP/1.1\r\nHost: a.example\r\nX-API-Key : k\r\n\r\n"),
           // White space before or inside a name, and a value folded over two lines
           // (obs-fold): smuggling vectors for a proxy.
           std::string_view(
               "GET / HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: a.example\r\n\r\n"),
           std::string_view("GET / HTTP/1.1\r\nHost: a.example\r\nX API-Key: k\r\n\r\n"),
           std::string_view(
               "GET / HTTP/1.1\r\nHost: a.example\r\n Transfer-Encoding: chunked\r\n\r\n"),
       }) {
    HttpClient c(sluice.port());
    ASSERT_TRUE(c.Send(bad));
    const HttpResponse r = c.ReadResponse();
    EXPECT_EQ(r.status, 400) << "for \"" << bad << "\": " << r.Describe();
  }
  // HTTP/1.0 does not require Host.
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.Send("GET / HTTP/1.0\r\n\r\n"));
  EXPECT_EQ(c.ReadResponse().status, 200);
}

TEST(ServerTest, KeyPartsAndMatchConditions) {
  START_SLUICE(sluice, Config(R"(
rules:
  - name: by-query
    match: {path_prefix: "/q"}
    key: ["query:user"]
    algorithm: fixed_window
    limit: 1
    period: 1h
  - name: by-host
    match: {path_prefix: "/h/"}
    key: [host]
    algorithm: fixed_window
    limit: 1
    period: 1h
  - name: post-only
    match: {path_prefix: "/m", methods: ["post"]}
    key: [ip]
    algorithm: fixed_window
    limit: 1
    period: 1h
  - name: one-host
    match: {path_prefix: "/hm", host: "Only.Example"}
    key: [ip]
    algorithm: fixed_window
    limit: 1
    period: 1h
  - name: by-path
    match: {path_prefix: "/p/"}
    key: [path]
    algorithm: fixed_window
    limit: 1
    period: 1h
  - name: outer
    match: {path_prefix: "/two/"}
    key: [ip]
    algorithm: fixed_window
    limit: 3
    period: 1h
  - name: inner
    match: {path_prefix: "/two/x"}
    key: [ip]
    algorithm: fixed_window
    limit: 1
    period: 1h
)"));
  HttpClient c(sluice.port());
  const auto status = [&](std::string_view method, std::string_view target,
                          const Headers& headers = {}) {
    return c.Request(method, target, headers).status;
  };
  // query:NAME
  EXPECT_EQ(status("GET", "/q?user=alice"), 200);
  EXPECT_EQ(status("GET", "/q?x=1&user=alice"), 429);
  EXPECT_EQ(status("GET", "/q?user=bob&x=1"), 200);
  EXPECT_EQ(c.Get("/q?x=1").body, "{\"allowed\":true,\"rules\":[]}\n") << "missing: skipped";
  // host: without the port, any case.
  EXPECT_EQ(status("GET", "/h/", {{"Host", "API.example.com:8080"}}), 200);
  EXPECT_EQ(status("GET", "/h/", {{"Host", "api.example.com"}}), 429);
  EXPECT_EQ(status("GET", "/h/", {{"Host", "other.example.com"}}), 200);
  // match.methods
  for (int i = 0; i < 3; ++i) EXPECT_EQ(status("GET", "/m"), 200);
  EXPECT_EQ(status("POST", "/m"), 200);
  EXPECT_EQ(status("POST", "/m"), 429);
  // match.host
  EXPECT_EQ(c.Get("/hm", {{"Host", "else.example"}}).body, "{\"allowed\":true,\"rules\":[]}\n");
  EXPECT_EQ(status("GET", "/hm", {{"Host", "only.example:1234"}}), 200);
  EXPECT_EQ(status("GET", "/hm", {{"Host", "ONLY.EXAMPLE"}}), 429);
  // path: without the query, in its canonical spelling.
  EXPECT_EQ(status("GET", "/p/a"), 200);
  EXPECT_EQ(status("GET", "/p/a?z=1"), 429);
  EXPECT_EQ(status("GET", "/p//a"), 429);
  EXPECT_EQ(status("GET", "/p/b"), 200);
  // Every matching rule applies; the first that refuses is named.
  const HttpResponse both = c.Get("/two/x");
  EXPECT_EQ(both.status, 200);
  EXPECT_EQ(both.body, "{\"allowed\":true,\"rules\":[\"outer\",\"inner\"]}\n");
  EXPECT_EQ(Field(both, "RateLimit-Policy").size(), 2u);
  EXPECT_EQ(Remaining(both, "outer"), 2);
  EXPECT_EQ(Remaining(both, "inner"), 0);
  const HttpResponse refused = c.Get("/two/x");
  EXPECT_EQ(refused.status, 429);
  EXPECT_NE(refused.body.find("\"rule\":\"inner\""), std::string::npos) << refused.body;
  EXPECT_EQ(Field(refused, "RateLimit").size(), 2u);
  EXPECT_EQ(status("GET", "/two/y"), 200);
}

// --- 2. The 429 answer and the rate-limit fields ------------------------------------------

TEST(ServerTest, RateLimitFieldsRetryAfterBodyAndRequestId) {
  START_SLUICE(sluice, Config(std::string(R"(
rules:
  - name: api
    key: ["header:x-api-key"]
    match: {path_prefix: "/api/"}
    algorithm: fixed_window
    limit: 5
    period: 1m
)") + std::string(kProbeRule)));
  WaitForWindowTime(sluice, 5);
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();

  std::string previous_id;
  for (int i = 0; i < 5; ++i) {
    const HttpResponse r = c.Get("/api/x", {{"X-API-Key", "A"}});
    ASSERT_EQ(r.status, 200) << r.Describe();
    const std::vector<RateLimitEntry> policy = Field(r, "RateLimit-Policy");
    ASSERT_EQ(policy.size(), 1u);
    EXPECT_EQ(policy[0].policy, "api");
    EXPECT_EQ(policy[0].params, (std::map<std::string, int64_t>{{"q", 5}, {"w", 60}}));
    EXPECT_EQ(*r.Header("RateLimit-Policy"), "\"api\";q=5;w=60");
    const std::vector<RateLimitEntry> limit = Field(r, "RateLimit");
    ASSERT_EQ(limit.size(), 1u);
    EXPECT_EQ(limit[0].policy, "api");
    EXPECT_EQ(limit[0].Param("r"), 4 - i);
    ASSERT_TRUE(limit[0].Param("t"));
    EXPECT_GE(*limit[0].Param("t"), 1);
    EXPECT_LE(*limit[0].Param("t"), 60);
    EXPECT_FALSE(r.Header("Retry-After"));
    EXPECT_FALSE(r.Header("X-RateLimit-Limit")) << "legacy fields only with headers: legacy";
    // A generated request id: 32 hex digits, a new one each time.
    const std::optional<std::string> id = r.Header("X-Request-Id");
    ASSERT_TRUE(id) << r.Describe();
    EXPECT_TRUE(IsHex32(*id)) << *id;
    EXPECT_NE(*id, previous_id);
    previous_id = *id;
  }

  const HttpResponse limited = c.Get("/api/x", {{"X-API-Key", "A"}});
  ASSERT_EQ(limited.status, 429) << limited.Describe();
  EXPECT_EQ(limited.reason, "Too Many Requests");
  EXPECT_EQ(limited.Header("Content-Type"), "application/json");
  ASSERT_TRUE(limited.Header("Retry-After")) << limited.Describe();
  const std::string retry_after = *limited.Header("Retry-After");
  ASSERT_TRUE(std::regex_match(retry_after, std::regex("[1-9][0-9]*"))) << retry_after;
  const int retry_s = std::stoi(retry_after);
  EXPECT_GE(retry_s, 1);
  EXPECT_LE(retry_s, 60);
  EXPECT_EQ(*limited.Header("RateLimit-Policy"), "\"api\";q=5;w=60");
  const std::optional<RateLimitEntry> rl = Entry(limited, "RateLimit", "api");
  ASSERT_TRUE(rl);
  EXPECT_EQ(rl->Param("r"), 0);
  ASSERT_TRUE(rl->Param("t"));
  EXPECT_GE(*rl->Param("t"), 1);
  EXPECT_LE(*rl->Param("t"), 60);

  std::smatch m;
  ASSERT_TRUE(std::regex_match(
      limited.body, m,
      std::regex(R"(\{"error":"rate_limited","rule":"api","retry_after_ms":([0-9]+)\}\n)")))
      << limited.body;
  const int64_t retry_ms = std::stoll(m[1]);
  EXPECT_GT(retry_ms, 0);
  EXPECT_LE(retry_ms, 60'000);
  EXPECT_EQ((retry_ms + 999) / 1000, retry_s) << "Retry-After is retry_after_ms in whole seconds";
  EXPECT_TRUE(IsHex32(limited.Header("X-Request-Id").value_or(""))) << limited.Describe();

  // A request id the client sends is kept, on allowed and on limited answers.
  const HttpResponse kept =
      c.Get("/api/x", {{"X-API-Key", "B"}, {"X-Request-Id", "client-id-42.a_b:c"}});
  EXPECT_EQ(kept.status, 200);
  EXPECT_EQ(kept.Header("X-Request-Id"), "client-id-42.a_b:c");
  EXPECT_EQ(kept.HeaderCount("X-Request-Id"), 1u);
  const HttpResponse kept_limited =
      c.Get("/api/x", {{"X-API-Key", "A"}, {"X-Request-Id", "limited-id-7"}});
  EXPECT_EQ(kept_limited.status, 429);
  EXPECT_EQ(kept_limited.Header("X-Request-Id"), "limited-id-7");
  // One that is not safe to echo (spaces, quotes, too long) is replaced.
  for (const std::string& unsafe :
       {std::string("has space"), std::string("quo\"te"), std::string(200, 'x')}) {
    const HttpResponse r = c.Get("/free", {{"X-Request-Id", unsafe}});
    EXPECT_TRUE(IsHex32(r.Header("X-Request-Id").value_or(""))) << r.Describe();
  }
}

// --- 3. Legacy fields -----------------------------------------------------------------

TEST(ServerTest, LegacyHeadersAddXRateLimitFields) {
  START_SLUICE(sluice, Config(std::string(R"(
headers: legacy
rules:
  - name: api
    key: ["header:x-api-key"]
    match: {path_prefix: "/api/"}
    algorithm: fixed_window
    limit: 5
    period: 1m
)") + std::string(kProbeRule)));
  WaitForWindowTime(sluice, 5);
  HttpClient c(sluice.port());
  for (int i = 0; i < 6; ++i) {
    const HttpResponse r = c.Get("/api/x", {{"X-API-Key", "A"}});
    ASSERT_EQ(r.status, i < 5 ? 200 : 429) << r.Describe();
    EXPECT_EQ(r.Header("X-RateLimit-Limit"), "5") << r.Describe();
    EXPECT_EQ(r.Header("X-RateLimit-Remaining"), std::to_string(std::max(0, 4 - i)));
    const std::string reset = r.Header("X-RateLimit-Reset").value_or("");
    ASSERT_TRUE(std::regex_match(reset, std::regex("[0-9]+"))) << r.Describe();
    EXPECT_GE(std::stoi(reset), 1);
    EXPECT_LE(std::stoi(reset), 60);
    // The IETF fields stay.
    EXPECT_EQ(Remaining(r, "api"), std::max(0, 4 - i));
    EXPECT_TRUE(r.Header("RateLimit-Policy"));
  }
}

// --- 4. X-Forwarded-For -----------------------------------------------------------------

TEST(ServerTest, ForwardedForFromUntrustedPeerIsIgnored) {
  START_SLUICE(sluice, Config(R"(
clients:
  trusted_proxies: ["10.0.0.0/8"]
rules:
  - name: per-ip
    key: [ip]
    algorithm: fixed_window
    limit: 3
    period: 1h
)"));
  HttpClient c(sluice.port());
  std::vector<int> statuses;
  for (int i = 0; i < 6; ++i) {
    const HttpResponse r = c.Get("/", {{"X-Forwarded-For", fmt::format("203.0.113.{}", i + 1)}});
    statuses.push_back(r.status);
  }
  EXPECT_EQ(statuses, Concat(Repeat(200, 3), Repeat(429, 3)))
      << "a client outside trusted_proxies escaped its per-ip limit by rotating X-Forwarded-For";
}

TEST(ServerTest, ForwardedForFromTrustedProxyUsesRightMostUntrustedAddress) {
  START_SLUICE(sluice, Config(R"(
clients:
  trusted_proxies: ["127.0.0.1/32"]
rules:
  - name: per-ip
    key: [ip]
    algorithm: fixed_window
    limit: 3
    period: 1h
)"));
  HttpClient c(sluice.port());
  // Different forwarded clients: separate counters.
  for (int client = 1; client <= 3; ++client) {
    const Headers xff = {{"X-Forwarded-For", fmt::format("203.0.113.{}", client)}};
    EXPECT_EQ(Statuses(c, "/", xff, 4), Concat(Repeat(200, 3), Repeat(429, 1)))
        << "client 203.0.113." << client;
  }
  // The right-most address that is not a trusted proxy is the client; what lies to its
  // left is the client's own claim and ignored.
  const HttpResponse first =
      c.Get("/", {{"X-Forwarded-For", "198.51.100.7, 203.0.113.9, 127.0.0.1"}});
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(Remaining(first, "per-ip"), 2);
  const HttpResponse second = c.Get("/", {{"X-Forwarded-For", "203.0.113.9, 127.0.0.1"}});
  EXPECT_EQ(Remaining(second, "per-ip"), 1) << "203.0.113.9 was not the client";
  const HttpResponse third = c.Get("/", {{"X-Forwarded-For", "203.0.113.9"}});
  EXPECT_EQ(Remaining(third, "per-ip"), 0);
  EXPECT_EQ(c.Get("/", {{"X-Forwarded-For", "203.0.113.9"}}).status, 429);
  // 198.51.100.7 was never charged.
  EXPECT_EQ(Remaining(c.Get("/", {{"X-Forwarded-For", "198.51.100.7"}}), "per-ip"), 2);
  // No X-Forwarded-For from the proxy: the proxy itself is the client.
  EXPECT_EQ(Remaining(c.Get("/"), "per-ip"), 2);
  // A peer that is not a trusted proxy is itself the client, whatever it forwards.
  HttpClient untrusted(sluice.port(), "127.0.0.2");
  ASSERT_TRUE(untrusted.connected()) << untrusted.error();
  EXPECT_EQ(Remaining(untrusted.Get("/", {{"X-Forwarded-For", "203.0.113.77"}}), "per-ip"), 2);
  EXPECT_EQ(Remaining(untrusted.Get("/", {{"X-Forwarded-For", "203.0.113.78"}}), "per-ip"), 1);
}

// --- 5. Access lists --------------------------------------------------------------------

TEST(ServerTest, AllowListedPeerIsNeverLimitedAndDenyListedPeerGets403) {
  START_SLUICE(sluice, Config(R"(
clients:
  trusted_proxies: ["127.0.0.1/32"]
access:
  allow: ["127.0.0.2/32"]
  deny: ["127.0.0.3/32", "198.51.100.0/24"]
rules:
  - name: per-ip
    key: [ip]
    algorithm: fixed_window
    limit: 2
    period: 1h
)"));
  HttpClient allowed(sluice.port(), "127.0.0.2");
  ASSERT_TRUE(allowed.connected()) << allowed.error();
  EXPECT_EQ(Statuses(allowed, "/", {}, 10), Repeat(200, 10));

  HttpClient denied(sluice.port(), "127.0.0.3");
  ASSERT_TRUE(denied.connected()) << denied.error();
  for (int i = 0; i < 3; ++i) {
    const HttpResponse r = denied.Get("/");
    EXPECT_EQ(r.status, 403) << r.Describe();
    EXPECT_EQ(r.body, "{\"error\":\"forbidden\"}\n");
    EXPECT_TRUE(IsHex32(r.Header("X-Request-Id").value_or("")));
  }

  // Through the trusted proxy, the forwarded client is checked against the lists.
  HttpClient proxy(sluice.port());
  EXPECT_EQ(proxy.Get("/", {{"X-Forwarded-For", "198.51.100.20"}}).status, 403);
  EXPECT_EQ(Statuses(proxy, "/", {{"X-Forwarded-For", "127.0.0.2"}}, 4), Repeat(200, 4));
  // Everyone else is limited as usual.
  EXPECT_EQ(Statuses(proxy, "/", {}, 3), (std::vector<int>{200, 200, 429}));

  const std::string metrics = Metrics(sluice);
  EXPECT_EQ(
      MetricValue(metrics, "sluice_requests_total", R"(rule="access:deny",decision="denied")"), 4)
      << metrics;
  EXPECT_EQ(
      MetricValue(metrics, "sluice_requests_total", R"(rule="access:allow",decision="allowed")"),
      14)
      << metrics;
}

// --- 6. Missing keys, overrides, authorization ------------------------------------------

TEST(ServerTest, OnMissingKeyOverridesAndAuthorizationKey) {
  TempDir logs;
  const std::string log_path = logs.File("access.log");
  START_SLUICE(sluice, Config(std::string(R"(
rules:
  - name: skip-rule
    match: {path_prefix: "/skip/"}
    key: ["header:x-api-key"]
    algorithm: fixed_window
    limit: 2
    period: 1h
    on_missing_key: skip
  - name: reject-rule
    match: {path_prefix: "/reject/"}
    key: ["header:x-api-key"]
    algorithm: fixed_window
    limit: 2
    period: 1h
    on_missing_key: reject
  - name: anon-rule
    match: {path_prefix: "/anon/"}
    key: ["header:x-api-key"]
    algorithm: fixed_window
    limit: 3
    period: 1h
    on_missing_key: anonymous
  - name: tiered
    match: {path_prefix: "/tiered/"}
    key: ["header:x-api-key"]
    algorithm: fixed_window
    limit: 2
    period: 1h
    overrides:
      - {key: "premium-secret-9", limit: 5}
  - name: by-auth
    match: {path_prefix: "/auth/"}
    key: [authorization]
    algorithm: fixed_window
    limit: 2
    period: 1h
  - name: combo
    match: {path_prefix: "/combo/"}
    key: [ip, "header:x-api-key"]
    algorithm: fixed_window
    limit: 1
    period: 1h
    overrides:
      - {key: "127.0.0.1|vip", limit: 3}
  - name: pair
    match: {path_prefix: "/pair/"}
    key: ["header:x-a", "header:x-b"]
    algorithm: fixed_window
    limit: 1
    period: 1h
)"),
                              1, fmt::format("{{enabled: true, path: \"{}\"}}", log_path)));
  HttpClient c(sluice.port());

  // skip: not counted without a key.
  for (int i = 0; i < 5; ++i) {
    const HttpResponse r = c.Get("/skip/x");
    ASSERT_EQ(r.status, 200) << r.Describe();
    EXPECT_EQ(r.body, "{\"allowed\":true,\"rules\":[]}\n");
  }
  EXPECT_EQ(Statuses(c, "/skip/x", {{"X-API-Key", "k1"}}, 3), (std::vector<int>{200, 200, 429}));

  // reject: 400 without a key.
  const HttpResponse missing = c.Get("/reject/x");
  EXPECT_EQ(missing.status, 400) << missing.Describe();
  EXPECT_EQ(missing.body, "{\"error\":\"missing_key\",\"rule\":\"reject-rule\"}\n");
  EXPECT_EQ(c.Get("/reject/x", {{"X-API-Key", "k1"}}).status, 200);

  // anonymous: every keyless client shares one counter, keyed clients have their own.
  HttpClient other_peer(sluice.port(), "127.0.0.2");
  EXPECT_EQ(c.Get("/anon/x").status, 200);
  EXPECT_EQ(other_peer.Get("/anon/x").status, 200);
  EXPECT_EQ(c.Get("/anon/x").status, 200);
  EXPECT_EQ(other_peer.Get("/anon/x").status, 429);
  EXPECT_EQ(c.Get("/anon/x").status, 429);
  EXPECT_EQ(c.Get("/anon/x", {{"X-API-Key", "k1"}}).status, 200);

  // overrides: one key gets a higher limit, reported in RateLimit-Policy.
  const Headers premium = {{"X-API-Key", "premium-secret-9"}};
  const HttpResponse first_premium = c.Get("/tiered/x", premium);
  EXPECT_EQ(Entry(first_premium, "RateLimit-Policy", "tiered")->Param("q"), 5);
  EXPECT_EQ(Statuses(c, "/tiered/x", premium, 5), Concat(Repeat(200, 4), Repeat(429, 1)));
  const Headers basic = {{"X-API-Key", "basic-1"}};
  EXPECT_EQ(Entry(c.Get("/tiered/x", basic), "RateLimit-Policy", "tiered")->Param("q"), 2);
  EXPECT_EQ(Statuses(c, "/tiered/x", basic, 2), (std::vector<int>{200, 429}));

  // authorization: the credentials tell clients apart.
  const Headers token_a = {{"Authorization", "Bearer tok-secret-A"}};
  const Headers token_b = {{"Authorization", "Bearer tok-secret-B"}};
  EXPECT_EQ(Statuses(c, "/auth/x", token_a, 3), (std::vector<int>{200, 200, 429}));
  EXPECT_EQ(Statuses(c, "/auth/x", token_b, 2), (std::vector<int>{200, 200}));
  EXPECT_EQ(c.Get("/auth/x").status, 200) << "no Authorization: skipped";

  // Overrides of a key with several parts name it with the parts joined by '|'.
  const Headers vip = {{"X-API-Key", "vip"}};
  EXPECT_EQ(Entry(c.Get("/combo/x", vip), "RateLimit-Policy", "combo")->Param("q"), 3);
  EXPECT_EQ(Statuses(c, "/combo/x", vip, 3), (std::vector<int>{200, 200, 429}));
  EXPECT_EQ(Entry(other_peer.Get("/combo/x", vip), "RateLimit-Policy", "combo")->Param("q"), 1)
      << "the override is for 127.0.0.1 only";
  EXPECT_EQ(Statuses(c, "/combo/x", {{"X-API-Key", "plain"}}, 2), (std::vector<int>{200, 429}));

  // Different parts never run together into the same client key.
  EXPECT_EQ(c.Get("/pair/x", {{"X-A", "x|y"}, {"X-B", "z"}}).status, 200);
  EXPECT_EQ(c.Get("/pair/x", {{"X-A", "x"}, {"X-B", "y|z"}}).status, 200)
      << "(x|y, z) and (x, y|z) share a counter";
  EXPECT_EQ(c.Get("/pair/x", {{"X-A", "x"}, {"X-B", "y|z"}}).status, 429);

  // Secrets never appear in clear in the access log or the metrics.
  const int expected_lines = 5 + 3 + 2 + 6 + 1 + 5 + 1 + 2 + 3 + 2 + 1 + 1 + 3 + 1 + 2 + 3;
  std::string log;
  EXPECT_TRUE(WaitFor(
      [&] {
        log = ReadFileText(log_path);
        return std::count(log.begin(), log.end(), '\n') >= expected_lines;
      },
      Millis(3000)))
      << "access log:\n"
      << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), expected_lines) << log;
  const std::string metrics = Metrics(sluice);
  for (const char* secret : {"tok-secret-A", "tok-secret-B", "premium-secret-9", "basic-1"}) {
    EXPECT_EQ(log.find(secret), std::string::npos) << secret << " in the access log:\n" << log;
    EXPECT_EQ(metrics.find(secret), std::string::npos) << secret << " in /metrics";
  }
  EXPECT_NE(log.find("\"status\":429"), std::string::npos) << log;
}

// --- 7. action: delay --------------------------------------------------------------------

constexpr std::string_view kDelayRules = R"(
rules:
  - name: smooth
    match: {path_prefix: "/delay/"}
    key: ["header:x-k"]
    algorithm: leaky_bucket
    limit: 10
    period: 1s
    burst: 1
    action: delay
    max_delay_ms: 500
  - name: tight
    match: {path_prefix: "/tight/"}
    key: ["header:x-k"]
    algorithm: gcra
    limit: 1
    period: 1s
    burst: 1
    action: delay
    max_delay_ms: 100
)";

TEST(ServerTest, DelayHoldsRequestUntilItsSlotAndRejectsBeyondMaxDelay) {
  START_SLUICE(sluice, Config(kDelayRules));
  HttpClient c(sluice.port());
  const Headers key = {{"X-K", "a"}};
  auto start = Clock::now();
  EXPECT_EQ(c.Get("/delay/x", key).status, 200);
  EXPECT_LT(Elapsed(start), 1000);
  // The bucket holds one; the next slot is 100 ms later.
  start = Clock::now();
  const HttpResponse held = c.Get("/delay/x", key);
  const int64_t held_ms = Elapsed(start);
  EXPECT_EQ(held.status, 200) << held.Describe();
  EXPECT_GE(held_ms, 40) << "not held";
  EXPECT_LE(held_ms, 1500) << "held far beyond its slot";

  // The next slot of `tight` is a second away, past its max_delay of 100 ms: 429 now.
  EXPECT_EQ(c.Get("/tight/x", key).status, 200);
  start = Clock::now();
  const HttpResponse rejected = c.Get("/tight/x", key);
  const int64_t rejected_ms = Elapsed(start);
  EXPECT_EQ(rejected.status, 429) << rejected.Describe();
  EXPECT_LT(rejected_ms, 90) << "rejected only after waiting";
  EXPECT_EQ(rejected.Header("Retry-After"), "1");

  const std::string metrics = Metrics(sluice);
  EXPECT_EQ(MetricValue(metrics, "sluice_requests_total", R"(rule="smooth",decision="delayed")"), 1)
      << metrics;
  EXPECT_EQ(MetricValue(metrics, "sluice_requests_total", R"(rule="tight",decision="limited")"), 1)
      << metrics;
}

TEST(ServerTest, PipelinedRequestsBehindAHeldOneAreAnsweredInOrder) {
  START_SLUICE(sluice, Config(kDelayRules));
  HttpClient c(sluice.port());
  std::string batch;
  for (int i = 0; i < 3; ++i) {
    batch +=
        BuildRequest("GET", "/delay/x", {{"X-K", "p"}, {"X-Request-Id", fmt::format("d{}", i)}});
  }
  batch += BuildRequest("GET", "/other", {{"X-Request-Id", "d3"}});
  const auto start = Clock::now();
  ASSERT_TRUE(c.Send(batch));
  const std::vector<HttpResponse> responses = c.ReadResponses(4);
  ASSERT_EQ(responses.size(), 4u) << responses.back().error;
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(responses[i].status, 200) << responses[i].Describe();
    EXPECT_EQ(responses[i].Header("X-Request-Id"), fmt::format("d{}", i));
  }
  // Two waits of a slot (100 ms) each, with a generous margin for a busy machine.
  EXPECT_GE(Elapsed(start), 120);
  EXPECT_LE(Elapsed(start), 3000);
}

// A held request is not an idle connection: a hold longer than idle_timeout_ms must
// still end in an answer (the idle deadline armed when the head arrived once closed
// such connections without one).
TEST(ServerTest, DelayHoldLongerThanIdleTimeoutIsStillAnswered) {
  START_SLUICE(sluice, Config(R"(
http:
  idle_timeout_ms: 200
rules:
  - name: slow
    key: ["header:x-k"]
    algorithm: gcra
    limit: 2
    period: 1s
    burst: 1
    action: delay
    max_delay_ms: 2000
)"));
  HttpClient c(sluice.port());
  EXPECT_EQ(c.Get("/", {{"X-K", "a"}}).status, 200);
  const HttpResponse held = c.Get("/", {{"X-K", "a"}}, Millis(3000));
  EXPECT_EQ(held.status, 200) << "a request held 500 ms (max_delay_ms 2000) with "
                                 "idle_timeout_ms 200 got no answer: "
                              << held.Describe();
}

TEST(ServerTest, ConcurrentHeldRequestsAreReleasedAtTheRateAndNeverPastMaxDelay) {
  START_SLUICE(sluice, Config(kDelayRules));
  constexpr int kClients = 10;
  std::vector<std::unique_ptr<HttpClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<HttpClient>(sluice.port()));
    ASSERT_TRUE(clients.back()->connected());
  }
  const auto start = Clock::now();
  for (auto& c : clients) ASSERT_TRUE(c->Send(BuildRequest("GET", "/delay/x", {{"X-K", "q"}})));
  std::vector<int64_t> allowed_at;
  int limited = 0;
  for (auto& c : clients) {
    const HttpResponse r = c->ReadResponse(Millis(3000));
    ASSERT_TRUE(r.ok()) << r.error;
    if (r.status == 200) allowed_at.push_back(Elapsed(start));
    if (r.status == 429) ++limited;
    EXPECT_TRUE(r.status == 200 || r.status == 429) << r.Describe();
  }
  // A response arrives as it is decided; reading them in connection order only delays
  // when we notice it, so take the times sorted.
  std::sort(allowed_at.begin(), allowed_at.end());
  EXPECT_EQ(static_cast<int>(allowed_at.size()) + limited, kClients);
  // burst 1 and 10/s: at most one at once, then one per 100 ms, within max_delay 500.
  EXPECT_LE(allowed_at.size(), 7u);
  EXPECT_GE(allowed_at.size(), 4u);
  for (size_t i = 0; i < allowed_at.size(); ++i) {
    EXPECT_GE(allowed_at[i], static_cast<int64_t>(i) * 100 - 30)
        << "request " << i << " released ahead of the rate";
  }
  EXPECT_LE(Elapsed(start), 500 + 700) << "held past max_delay_ms";
}

// One request a second per X-K value, the next held for up to 3 s: a request that
// stays held long enough for a test to act while it waits.
constexpr const char* kOneASecondDelayRule = R"(
rules:
  - name: slow
    key: ["header:x-k"]
    algorithm: gcra
    limit: 1
    period: 1s
    burst: 1
    action: delay
    max_delay_ms: 3000
)";

// Sends a request for X-K `key` that the rule above holds, after one it lets through,
// and waits until the server reports it held.
void HoldOneRequest(SluiceProcess& sluice, HttpClient& client, const std::string& key) {
  EXPECT_EQ(client.Get("/", {{"X-K", key}}).status, 200);
  ASSERT_TRUE(client.Send(BuildRequest("GET", "/", {{"X-K", key}})));
  ASSERT_TRUE(WaitFor([&] { return Metric(sluice, "sluice_requests_held") == 1; }, Millis(2000)))
      << Metrics(sluice);
}

TEST(ServerTest, HeldRequestWhoseClientLeavesIsForgotten) {
  START_SLUICE(sluice, Config(kOneASecondDelayRule));
  {
    HttpClient c(sluice.port());
    HoldOneRequest(sluice, c, "a");
  }  // the client goes away while held
  EXPECT_TRUE(WaitFor(
      [&] {
        const std::string m = Metrics(sluice);
        return MetricValue(m, "sluice_requests_held") == 0 &&
               MetricValue(m, "sluice_connections_active") == 0;
      },
      Millis(3000)))
      << Metrics(sluice);
  ExpectServing(sluice);
}

// --- 8. action: shadow -------------------------------------------------------------------

TEST(ServerTest, ShadowNeverBlocksButCountsWouldBeLimited) {
  START_SLUICE(sluice, Config(R"(
rules:
  - name: trial
    key: ["header:x-k"]
    algorithm: fixed_window
    limit: 2
    period: 1h
    action: shadow
)"));
  HttpClient c(sluice.port());
  for (int i = 0; i < 6; ++i) {
    const HttpResponse r = c.Get("/", {{"X-K", "a"}});
    EXPECT_EQ(r.status, 200) << r.Describe();
    EXPECT_EQ(Remaining(r, "trial"), std::max(0, 1 - i));
    EXPECT_FALSE(r.Header("Retry-After"));
  }
  const std::string metrics = Metrics(sluice);
  EXPECT_EQ(
      MetricValue(metrics, "sluice_requests_total", R"(rule="trial",decision="shadow_limited")"), 4)
      << metrics;
  EXPECT_EQ(MetricValue(metrics, "sluice_requests_total", R"(rule="trial",decision="allowed")"), 2)
      << metrics;
  EXPECT_FALSE(MetricValue(metrics, "sluice_requests_total", R"(rule="trial",decision="limited")"))
      << metrics;
}

// --- 9. Protocol limits -----------------------------------------------------------------

constexpr std::string_view kProtocolConfig = R"(
http:
  max_header_bytes: 1024
  max_body_bytes: 1024
  header_timeout_ms: 300
  idle_timeout_ms: 500
rules:
  - name: any
    key: [ip]
    algorithm: fixed_window
    limit: 1000
    period: 1h
)";

TEST(ServerTest, HeadersLargerThanMaxHeaderBytesGet431) {
  START_SLUICE(sluice, Config(kProtocolConfig));
  {
    // Just under the limit passes.
    HttpClient c(sluice.port());
    const HttpResponse r = c.Get("/", {{"X-Fill", std::string(800, 'a')}});
    EXPECT_EQ(r.status, 200) << r.Describe();
  }
  {
    HttpClient c(sluice.port());
    const HttpResponse r = c.Get("/", {{"X-Big", std::string(2000, 'a')}});
    EXPECT_EQ(r.status, 431) << r.Describe();
    EXPECT_EQ(r.Header("Connection"), "close");
    EXPECT_TRUE(IsHex32(r.Header("X-Request-Id").value_or("")));
    ExpectClosed(c);
  }
  {
    // Many small fields add up.
    Headers many;
    for (int i = 0; i < 60; ++i) many.emplace_back(fmt::format("X-H{}", i), "0123456789");
    HttpClient c(sluice.port());
    EXPECT_EQ(c.Get("/", many).status, 431);
  }
  ExpectServing(sluice);
}

TEST(ServerTest, BodiesLargerThanMaxBodyBytesGet413) {
  START_SLUICE(sluice, Config(kProtocolConfig));
  {
    HttpClient c(sluice.port());
    // Declared too large: refused before any of it is sent.
    ASSERT_TRUE(c.Send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"));
    const HttpResponse r = c.ReadResponse();
    EXPECT_EQ(r.status, 413) << r.Describe();
    EXPECT_EQ(r.body, "{\"error\":\"body_too_large\"}\n");
    ExpectClosed(c);
  }
  {
    // A body of exactly the limit passes.
    HttpClient c(sluice.port());
    EXPECT_EQ(c.Request("POST", "/upload", {}, std::string(1024, 'b')).status, 200);
  }
  {
    // Chunked, so the size shows only while reading: still 413, and nothing before it.
    HttpClient c(sluice.port());
    std::string request = "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 4; ++i) request += "200\r\n" + std::string(512, 'c') + "\r\n";
    request += "0\r\n\r\n";
    ASSERT_TRUE(c.Send(request));
    const HttpResponse r = c.ReadResponse();
    EXPECT_EQ(r.status, 413) << r.Describe();
    ExpectClosed(c);
  }
  {
    // A small chunked body passes, and the connection goes on.
    HttpClient c(sluice.port());
    ASSERT_TRUE(
        c.Send("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n0\r\n\r\n"));
    EXPECT_EQ(c.ReadResponse().status, 200);
    EXPECT_EQ(c.Get("/").status, 200);
  }
  ExpectServing(sluice);
}

TEST(ServerTest, MalformedRequestsGet400) {
  START_SLUICE(sluice, Config(kProtocolConfig));
  for (const std::string_view bad :
       {std::string_view("HELLO WORLD\r\n\r\n"), std::string_view("GET / HTTP/1.1 extra\r\n\r\n"),
        std::string_view("GET / HTTP/1.1\r\nBad Header Without Colon\r\n\r\n"),
        std::string_view("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")}) {
    HttpClient c(sluice.port());
    ASSERT_TRUE(c.Send(bad));
    const HttpResponse r = c.ReadResponse();
    EXPECT_EQ(r.status, 400) << "for \"" << bad << "\": " << r.Describe();
    EXPECT_EQ(r.Header("Connection"), "close");
    ExpectClosed(c);
  }
  ExpectServing(sluice);
}

TEST(ServerTest, StalledHeadGets408AndIdleKeepAliveIsClosed) {
  START_SLUICE(sluice, Config(kProtocolConfig));
  {
    HttpClient c(sluice.port());
    const auto start = Clock::now();
    ASSERT_TRUE(c.Send("GET / HTTP/1.1\r\nHost: x\r\nX-Part"));
    const HttpResponse r = c.ReadResponse(Millis(3000));
    const int64_t ms = Elapsed(start);
    EXPECT_EQ(r.status, 408) << r.Describe();
    EXPECT_GE(ms, 250);
    EXPECT_LE(ms, 300 + 700) << "header_timeout_ms is 300";
    ExpectClosed(c);
  }
  {
    // A keep-alive connection with nothing more to ask is closed after idle_timeout_ms.
    HttpClient c(sluice.port());
    EXPECT_EQ(c.Get("/").status, 200);
    const auto start = Clock::now();
    ExpectClosed(c, Millis(3000));
    const int64_t ms = Elapsed(start);
    EXPECT_GE(ms, 400);
    EXPECT_LE(ms, 500 + 700) << "idle_timeout_ms is 500";
  }
  ExpectServing(sluice);
}

TEST(ServerTest, TricklingHeadDoesNotExtendHeaderTimeout) {
  START_SLUICE(sluice, Config(kProtocolConfig));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.Send("GET / HTTP/1.1\r\n"));
  const auto start = Clock::now();
  // One header byte every 50 ms, for as long as the server lets it go on (bounded).
  std::string data;
  HttpClient::CloseState state = HttpClient::CloseState::kOpen;
  while (Elapsed(start) < 3000) {
    if (!c.Send("X")) break;  // closed under us: the answer is in the buffer or lost
    state = c.WaitClosed(Millis(50), &data);
    if (state != HttpClient::CloseState::kOpen) break;
  }
  const int64_t ms = Elapsed(start);
  const HttpResponse r = c.ReadResponse(Millis(1000));
  EXPECT_EQ(r.status, 408) << r.Describe() << "\nstate " << static_cast<int>(state);
  EXPECT_LE(ms, 300 + 700) << "a client sending a byte at a time kept its connection";
  ExpectServing(sluice);
}

TEST(ServerTest, ProtocolErrorsLeaveNoConnectionBehind) {
  START_SLUICE(sluice, Config(kProtocolConfig));
  for (const std::string& bad :
       {std::string("HELLO\r\n\r\n"),
        "GET / HTTP/1.1\r\nX-Big: " + std::string(3000, 'a') + "\r\n\r\n",
        std::string("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n"),
        std::string("GET / HTTP/1.1\r\nHost: x\r\n")}) {
    HttpClient c(sluice.port());
    ASSERT_TRUE(c.Send(bad));
    EXPECT_GE(c.ReadResponse(Millis(2000)).status, 400) << bad.substr(0, 40);
  }
  {
    HttpClient idle(sluice.port());
    EXPECT_EQ(idle.Get("/").status, 200);
  }  // closed by us
  EXPECT_TRUE(
      WaitFor([&] { return Metric(sluice, "sluice_connections_active") == 0; }, Millis(3000)))
      << Metrics(sluice);
  const std::string metrics = Metrics(sluice);
  for (const char* code : {"400", "408", "413", "431"}) {
    EXPECT_EQ(MetricValue(metrics, "sluice_http_responses_total", fmt::format("code=\"{}\"", code)),
              1)
        << code << "\n"
        << metrics;
  }
}

// A reload that lowers http.header_timeout_ms applies to the next slow client even
// while an older one waits under the longer timeout. (Found by this suite: deadline
// lists were kept sorted by appending, so the older connection at the head blocked
// the expiry of every later one until its own, 20 s later.)
TEST(ServerTest, HeaderTimeoutLoweredByReloadIsEnforcedAtOnce) {
  const auto config = [](int header_timeout_ms) {
    return Config(fmt::format("http:\n  header_timeout_ms: {}\n", header_timeout_ms));
  };
  START_SLUICE(sluice, config(20000));
  HttpClient before(sluice.port());
  ASSERT_TRUE(before.Send("GET / HTTP/1.1\r\nHost: x\r\n"));  // stalls under 20 s
  ASSERT_TRUE(
      WaitFor([&] { return Metric(sluice, "sluice_connections_active") == 1; }, Millis(2000)));
  ASSERT_TRUE(sluice.RewriteConfig(config(300)));
  ASSERT_EQ(Fetch(sluice.admin_port(), "POST", "/v1/reload").status, 200);

  HttpClient after(sluice.port());
  const auto start = Clock::now();
  ASSERT_TRUE(after.Send("GET / HTTP/1.1\r\nHost: x\r\n"));  // stalls under 300 ms
  const HttpResponse r = after.ReadResponse(Millis(2000));
  EXPECT_EQ(r.status, 408) << "header_timeout_ms 300 (after reload) not enforced within "
                           << Elapsed(start)
                           << " ms while an older slow connection waits: " << r.Describe();
}

TEST(ServerTest, ConnectionsBeyondMaxConnectionsAreClosed) {
  START_SLUICE(sluice, Config(R"(
http:
  max_connections: 3
)"));
  std::vector<std::unique_ptr<HttpClient>> open;
  for (int i = 0; i < 3; ++i) {
    open.push_back(std::make_unique<HttpClient>(sluice.port()));
    ASSERT_EQ(open.back()->Get("/").status, 200) << "connection " << i;
  }
  for (int i = 0; i < 2; ++i) {
    HttpClient extra(sluice.port());
    ASSERT_TRUE(extra.connected()) << extra.error();  // the kernel accepts it first
    ExpectClosed(extra);
  }
  for (auto& c : open) EXPECT_EQ(c->Get("/").status, 200) << "an admitted connection suffered";
  EXPECT_GE(Metric(sluice, "sluice_connections_refused_total"), 2);
  // A slot freed is a slot available.
  open.pop_back();
  EXPECT_TRUE(WaitFor(
      [&] {
        HttpClient again(sluice.port());
        return again.Get("/", {}, Millis(1000)).status == 200;
      },
      Millis(3000), Millis(50)));
}

TEST(ServerTest, ExpectContinueAndHeadRequests) {
  START_SLUICE(sluice, Config(kProtocolConfig));
  HttpClient c(sluice.port());
  ASSERT_TRUE(
      c.Send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
  const HttpResponse interim = c.ReadResponse();
  EXPECT_EQ(interim.status, 100) << interim.Describe();
  ASSERT_TRUE(c.Send("hello"));
  EXPECT_EQ(c.ReadResponse().status, 200);
  // HEAD: the same head, no body; the next request on the connection still parses.
  const HttpResponse head = c.Request("HEAD", "/x");
  EXPECT_EQ(head.status, 200) << head.Describe();
  EXPECT_TRUE(head.body.empty());
  const HttpResponse next = c.Get("/x");
  EXPECT_EQ(next.status, 200) << next.Describe();
  EXPECT_EQ(next.body, "{\"allowed\":true,\"rules\":[\"any\"]}\n");
}

// --- 10. Pipelining and HTTP/1.0 ---------------------------------------------------------

TEST(ServerTest, PipelinedRequestsAreAnsweredInOrder) {
  START_SLUICE(sluice, Config(R"(
rules:
  - name: pipe
    key: ["header:x-k"]
    algorithm: fixed_window
    limit: 10
    period: 1h
)"));
  HttpClient c(sluice.port());
  std::string batch;
  for (int i = 0; i < 20; ++i) {
    batch += BuildRequest("GET", fmt::format("/p/{}", i),
                          {{"X-K", "one"}, {"X-Request-Id", fmt::format("req-{:02d}", i)}});
  }
  ASSERT_TRUE(c.Send(batch));
  const std::vector<HttpResponse> responses = c.ReadResponses(20);
  ASSERT_EQ(responses.size(), 20u) << responses.back().error;
  for (int i = 0; i < 20; ++i) {
    const HttpResponse& r = responses[i];
    EXPECT_EQ(r.Header("X-Request-Id"), fmt::format("req-{:02d}", i)) << "out of order";
    EXPECT_EQ(r.status, i < 10 ? 200 : 429) << "response " << i;
    EXPECT_EQ(Remaining(r, "pipe"), std::max(0, 9 - i));
  }
  EXPECT_TRUE(c.buffered().empty()) << "extra bytes: " << c.buffered();
  // Still usable afterwards.
  EXPECT_EQ(c.Get("/p", {{"X-K", "two"}}).status, 200);
}

TEST(ServerTest, PipelinedRequestBeforeAProtocolErrorIsStillAnswered) {
  START_SLUICE(sluice, Config(kProtocolConfig));
  {
    HttpClient c(sluice.port());
    ASSERT_TRUE(c.Send(BuildRequest("GET", "/ok", {{"X-Request-Id", "first"}}) +
                       BuildRequest("GET", "/big", {{"X-Big", std::string(2000, 'a')}})));
    const std::vector<HttpResponse> r = c.ReadResponses(2);
    ASSERT_EQ(r.size(), 2u) << r.back().error;
    EXPECT_EQ(r[0].status, 200);
    EXPECT_EQ(r[0].Header("X-Request-Id"), "first");
    EXPECT_EQ(r[1].status, 431);
    ExpectClosed(c);
  }
  {
    HttpClient c(sluice.port());
    ASSERT_TRUE(c.Send(BuildRequest("GET", "/ok") + "NOT HTTP AT ALL\r\n\r\n"));
    const std::vector<HttpResponse> r = c.ReadResponses(2);
    ASSERT_EQ(r.size(), 2u) << r.back().error;
    EXPECT_EQ(r[0].status, 200);
    EXPECT_EQ(r[1].status, 400);
    ExpectClosed(c);
  }
}

TEST(ServerTest, ThousandPipelinedRequestsInOneWrite) {
  START_SLUICE(sluice, Config(""));
  HttpClient c(sluice.port());
  std::string batch;
  constexpr int kCount = 1000;
  for (int i = 0; i < kCount; ++i) {
    batch +=
        BuildRequest("GET", fmt::format("/q/{}", i), {{"X-Request-Id", fmt::format("n{}", i)}});
  }
  ASSERT_TRUE(c.Send(batch));
  const std::vector<HttpResponse> responses = c.ReadResponses(kCount, Millis(10000));
  ASSERT_EQ(responses.size(), static_cast<size_t>(kCount)) << responses.back().error;
  for (int i = 0; i < kCount; ++i) {
    ASSERT_EQ(responses[i].status, 200) << i;
    ASSERT_EQ(responses[i].Header("X-Request-Id"), fmt::format("n{}", i));
  }
}

TEST(ServerTest, HeldRequestIsAnsweredAfterClientHalfCloses) {
  START_SLUICE(sluice, Config(kDelayRules));
  HttpClient c(sluice.port());
  EXPECT_EQ(c.Get("/delay/x", {{"X-K", "h"}}).status, 200);
  ASSERT_TRUE(c.Send(BuildRequest("GET", "/delay/x", {{"X-K", "h"}})));
  ASSERT_EQ(shutdown(c.fd(), SHUT_WR), 0);  // done sending, still reading
  const HttpResponse r = c.ReadResponse(Millis(3000));
  EXPECT_EQ(r.status, 200) << r.Describe();
  ExpectClosed(c);
}

TEST(ServerTest, Http10ClosesUnlessKeepAliveAndConnectionCloseIsHonoured) {
  START_SLUICE(sluice, Config(""));
  {
    HttpClient c(sluice.port());
    ASSERT_TRUE(c.Send("GET /a HTTP/1.0\r\n\r\n"));
    const HttpResponse r = c.ReadResponse();
    EXPECT_EQ(r.status, 200) << r.Describe();
    EXPECT_EQ(r.Header("Connection"), "close");
    ExpectClosed(c);
  }
  {
    HttpClient c(sluice.port());
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(c.Send("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
      const HttpResponse r = c.ReadResponse();
      EXPECT_EQ(r.status, 200) << r.Describe();
      EXPECT_EQ(r.Header("Connection"), "keep-alive");
    }
    EXPECT_EQ(c.WaitClosed(Millis(200)), HttpClient::CloseState::kOpen);
  }
  {
    HttpClient c(sluice.port());
    const HttpResponse r = c.Get("/a", {{"Connection", "close"}});
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.Header("Connection"), "close");
    ExpectClosed(c);
  }
}

// --- 11. Reload --------------------------------------------------------------------------

std::string ReloadConfig(int limit, std::string_view algorithm = "fixed_window",
                         std::string_view deny = "[]") {
  return Config(fmt::format(R"(
access:
  deny: {}
rules:
  - name: r
    key: ["header:x-k"]
    algorithm: {}
    limit: {}
    period: 1h
)",
                            deny, algorithm, limit));
}

TEST(ServerTest, ReloadAppliesGoodConfigsAndRefusesBadOnes) {
  START_SLUICE(sluice, ReloadConfig(2));
  EXPECT_EQ(Statuses(*std::make_unique<HttpClient>(sluice.port()), "/", {{"X-K", "k0"}}, 3),
            (std::vector<int>{200, 200, 429}));
  EXPECT_EQ(Metric(sluice, "sluice_config_reloads_total", R"(result="success")"), 1);

  // SIGHUP
  ASSERT_TRUE(sluice.RewriteConfig(ReloadConfig(4)));
  ASSERT_TRUE(sluice.Signal(SIGHUP));
  EXPECT_TRUE(WaitFor(
      [&] { return Metric(sluice, "sluice_config_reloads_total", R"(result="success")") == 2; },
      Millis(5000)))
      << sluice.Stderr();
  {
    HttpClient c(sluice.port());
    const HttpResponse r = c.Get("/", {{"X-K", "k-hup"}});
    EXPECT_EQ(Entry(r, "RateLimit-Policy", "r")->Param("q"), 4);
    EXPECT_EQ(Statuses(c, "/", {{"X-K", "k-hup"}}, 4), (std::vector<int>{200, 200, 200, 429}));
  }

  // POST /v1/reload, which also changes the access lists.
  ASSERT_TRUE(sluice.RewriteConfig(ReloadConfig(6, "fixed_window", R"(["127.0.0.3/32"])")));
  const HttpResponse reloaded = Fetch(sluice.admin_port(), "POST", "/v1/reload");
  EXPECT_EQ(reloaded.status, 200) << reloaded.Describe();
  EXPECT_EQ(reloaded.body, "{\"reloaded\":true}\n");
  {
    HttpClient c(sluice.port());
    EXPECT_EQ(Statuses(c, "/", {{"X-K", "k-post"}}, 7), Concat(Repeat(200, 6), Repeat(429, 1)));
    EXPECT_EQ(FetchGet(sluice.port(), "/", {{"X-K", "k-post2"}}, "127.0.0.3").status, 403);
  }

  // A bad config is refused with FILE:LINE:COL, and the running one stays.
  const std::string bad = ReloadConfig(8, "bogus_bucket");
  ASSERT_TRUE(sluice.RewriteConfig(bad));
  const size_t bad_at = bad.find("bogus_bucket");
  const int line = static_cast<int>(std::count(bad.begin(), bad.begin() + bad_at, '\n')) + 1;
  const int column = static_cast<int>(bad_at - bad.rfind('\n', bad_at));
  const std::string where = fmt::format("{}:{}:{}: ", sluice.config_path(), line, column);
  const HttpResponse refused = Fetch(sluice.admin_port(), "POST", "/v1/reload");
  EXPECT_EQ(refused.status, 400) << refused.Describe();
  EXPECT_NE(refused.body.find(where), std::string::npos)
      << "expected " << where << " in " << refused.body;
  EXPECT_NE(refused.body.find("bogus_bucket"), std::string::npos) << refused.body;
  EXPECT_NE(refused.body.find("\"reloaded\":false"), std::string::npos) << refused.body;
  {
    HttpClient c(sluice.port());
    EXPECT_EQ(Statuses(c, "/", {{"X-K", "k-after"}}, 7), Concat(Repeat(200, 6), Repeat(429, 1)))
        << "the old limit (6) should still apply";
  }
  EXPECT_EQ(Metric(sluice, "sluice_config_reloads_total", R"(result="failure")"), 1);
  // A bad config by SIGHUP is refused the same way.
  ASSERT_TRUE(sluice.Signal(SIGHUP));
  EXPECT_TRUE(WaitFor(
      [&] { return Metric(sluice, "sluice_config_reloads_total", R"(result="failure")") == 2; },
      Millis(5000)));
  EXPECT_EQ(Statuses(*std::make_unique<HttpClient>(sluice.port()), "/", {{"X-K", "k-last"}}, 7),
            Concat(Repeat(200, 6), Repeat(429, 1)));
  EXPECT_EQ(Metric(sluice, "sluice_config_reloads_total", R"(result="success")"), 3);
  EXPECT_NE(sluice.Stderr().find(where), std::string::npos) << sluice.Stderr();
}

TEST(ServerTest, ReloadsUnderLoadDropNothing) {
  const auto config = [](int limit) {
    return Config(fmt::format(R"(
rules:
  - name: r
    key: ["header:x-k"]
    algorithm: token_bucket
    limit: {}
    period: 1s
)",
                              limit),
                  2);
  };
  START_SLUICE(sluice, config(50));
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0}, broken{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      HttpClient c(sluice.port());
      for (int i = 0; i < 2000 && !stop; ++i) {
        const HttpResponse r = c.Get("/", {{"X-K", fmt::format("t{}", t)}});
        if (r.status == 200 || r.status == 429) {
          ++answered;
        } else {
          ++broken;
          return;
        }
      }
    });
  }
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(sluice.RewriteConfig(config(50 + i)));
    if (i % 2 == 0) {
      EXPECT_EQ(Fetch(sluice.admin_port(), "POST", "/v1/reload").status, 200);
    } else {
      ASSERT_TRUE(sluice.Signal(SIGHUP));
      EXPECT_TRUE(WaitFor(
          [&] {
            return Metric(sluice, "sluice_config_reloads_total", R"(result="success")") == i + 2;
          },
          Millis(3000)));
    }
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(broken.load(), 0) << "a request failed or a connection dropped during reloads";
  EXPECT_GT(answered.load(), 0);
  EXPECT_EQ(Metric(sluice, "sluice_config_reloads_total", R"(result="success")"), 7);
}

TEST(ServerTest, CountersSurviveReloadAsDocumented) {
  const auto config = [](int window_limit, int bucket_limit) {
    return Config(fmt::format(R"(
rules:
  - name: window
    match: {{path_prefix: "/w"}}
    key: ["header:x-k"]
    algorithm: fixed_window
    limit: {}
    period: 1h
  - name: bucket
    match: {{path_prefix: "/b"}}
    key: ["header:x-k"]
    algorithm: token_bucket
    limit: {}
    period: 1h
)",
                              window_limit, bucket_limit));
  };
  START_SLUICE(sluice, config(5, 3));
  HttpClient c(sluice.port());
  const Headers k = {{"X-K", "k"}};
  EXPECT_EQ(Statuses(c, "/w", k, 3), Repeat(200, 3));
  EXPECT_EQ(Statuses(c, "/b", k, 4), (std::vector<int>{200, 200, 200, 429}));

  ASSERT_TRUE(sluice.RewriteConfig(config(4, 5)));
  ASSERT_EQ(Fetch(sluice.admin_port(), "POST", "/v1/reload").status, 200);
  // The window keeps its count of 3 under the new limit of 4.
  const HttpResponse last = c.Get("/w", k);
  EXPECT_EQ(last.status, 200);
  EXPECT_EQ(Remaining(last, "window"), 0);
  EXPECT_EQ(c.Get("/w", k).status, 429);
  // A bucket whose limit changed starts afresh.
  EXPECT_EQ(Statuses(c, "/b", k, 6), Concat(Repeat(200, 5), Repeat(429, 1)));
}

// A reload turns the access log on or off and moves it to another file.
// (Found by this suite: the file was opened once at start and a reload that changed
// access_log reported success and changed nothing.)
TEST(ServerTest, ReloadAppliesAccessLogSettings) {
  TempDir logs;
  const std::string first = logs.File("first.log");
  const std::string second = logs.File("second.log");
  const auto with_log = [](std::string_view setting) { return Config("", 1, setting); };
  START_SLUICE(sluice, with_log(fmt::format("{{enabled: true, path: \"{}\"}}", first)));
  const auto logged = [](const std::string& file, std::string_view path) {
    return ReadFileText(file).find(fmt::format("\"path\":\"{}\"", path)) != std::string::npos;
  };
  EXPECT_EQ(FetchGet(sluice.port(), "/one").status, 200);
  EXPECT_TRUE(WaitFor([&] { return logged(first, "/one"); }, Millis(2000)));

  ASSERT_TRUE(
      sluice.RewriteConfig(with_log(fmt::format("{{enabled: true, path: \"{}\"}}", second))));
  ASSERT_EQ(Fetch(sluice.admin_port(), "POST", "/v1/reload").status, 200);
  EXPECT_EQ(FetchGet(sluice.port(), "/two").status, 200);
  EXPECT_TRUE(WaitFor([&] { return logged(second, "/two"); }, Millis(2000)))
      << "the access log did not move to " << second;
  EXPECT_FALSE(logged(first, "/two"));

  ASSERT_TRUE(sluice.RewriteConfig(with_log("false")));
  ASSERT_EQ(Fetch(sluice.admin_port(), "POST", "/v1/reload").status, 200);
  EXPECT_EQ(FetchGet(sluice.port(), "/three").status, 200);
  EXPECT_EQ(FetchGet(sluice.port(), "/four").status, 200);
  // Give a stray line a chance to appear: a later request on the same worker flushes.
  EXPECT_FALSE(
      WaitFor([&] { return logged(first, "/three") || logged(second, "/three"); }, Millis(300)))
      << "logged after access_log: false";
}

// --- 12. Concurrency --------------------------------------------------------------------

TEST(ServerTest, ConcurrentClientsGetExactlyTheLimit) {
  constexpr int kLimit = 200;
  START_SLUICE(sluice, Config(fmt::format(R"(
rules:
  - name: hot
    match: {{path_prefix: "/hot"}}
    key: ["header:x-api-key"]
    algorithm: fixed_window
    limit: {}
    period: 1m
{})",
                                          kLimit, kProbeRule),
                              2));
  WaitForWindowTime(sluice, 5);
  constexpr int kThreads = 4, kConnectionsPerThread = 4, kRequestsPerThread = 250;
  std::atomic<int> allowed{0}, limited{0}, other{0};
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::unique_ptr<HttpClient>> connections;
      for (int i = 0; i < kConnectionsPerThread; ++i) {
        connections.push_back(std::make_unique<HttpClient>(sluice.port()));
      }
      for (int i = 0; i < kRequestsPerThread; ++i) {
        HttpClient& c = *connections[i % kConnectionsPerThread];
        const HttpResponse r = c.Get("/hot", {{"X-API-Key", "shared"}});
        if (r.status == 200) {
          ++allowed;
        } else if (r.status == 429) {
          ++limited;
        } else {
          ++other;
          if (failures[t].empty()) failures[t] = r.Describe();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const std::string& f : failures) EXPECT_TRUE(f.empty()) << f;
  EXPECT_EQ(allowed.load(), kLimit);
  EXPECT_EQ(limited.load(), kThreads * kRequestsPerThread - kLimit);
  EXPECT_EQ(other.load(), 0);
  const std::string metrics = Metrics(sluice);
  EXPECT_EQ(MetricValue(metrics, "sluice_requests_total", R"(rule="hot",decision="allowed")"),
            kLimit);
  EXPECT_EQ(MetricValue(metrics, "sluice_requests_total", R"(rule="hot",decision="limited")"),
            kThreads * kRequestsPerThread - kLimit);
}

// --- 13. SIGTERM ------------------------------------------------------------------------

TEST(ServerTest, SigtermAnswersHeldRequestThenExitsZero) {
  START_SLUICE(sluice, Config(kOneASecondDelayRule));
  const HttpResponse ready = FetchGet(sluice.admin_port(), "/readyz");
  EXPECT_EQ(ready.status, 200) << ready.Describe();
  EXPECT_EQ(ready.body, "{\"status\":\"ready\",\"store\":{\"backend\":\"memory\"}}\n");

  HttpClient idle(sluice.port());
  EXPECT_EQ(idle.Get("/", {{"X-K", "idle"}}).status, 200);
  HttpClient c(sluice.port());
  EXPECT_EQ(c.Get("/", {{"X-K", "a"}}).status, 200);
  const auto start = Clock::now();
  ASSERT_TRUE(c.Send(BuildRequest("GET", "/", {{"X-K", "a"}, {"X-Request-Id", "held-1"}})));
  ASSERT_TRUE(WaitFor([&] { return Metric(sluice, "sluice_requests_held") == 1; }, Millis(2000)))
      << Metrics(sluice);
  ASSERT_TRUE(sluice.Signal(SIGTERM));
  // While it drains it is no longer ready, and idle keep-alive connections go.
  EXPECT_TRUE(
      WaitFor([&] { return FetchGet(sluice.admin_port(), "/readyz").status == 503; }, Millis(500)));
  ExpectClosed(idle, Millis(500));

  const HttpResponse held = c.ReadResponse(Millis(5000));
  EXPECT_EQ(held.status, 200) << held.Describe();
  EXPECT_EQ(held.Header("X-Request-Id"), "held-1");
  EXPECT_EQ(held.Header("Connection"), "close");
  EXPECT_GE(Elapsed(start), 500) << "answered before its slot";
  const std::optional<ExitStatus> exit = sluice.WaitExit(Millis(5000));
  ASSERT_TRUE(exit) << "still running after SIGTERM";
  EXPECT_TRUE(exit->exited && exit->code == 0) << exit->ToString() << "\n" << sluice.Stderr();
}

// Found by the ring_io suites (a timing change let a connection arrive just before the
// drain): the drain walked the worker's connections newest first and stopped at the
// first idle one it closed, so an older connection holding a request was never told
// to drain, was answered keep-alive and kept the process up for the whole grace time.
TEST(ServerTest, SigtermDrainsAHeldConnectionOlderThanAnIdleOne) {
  START_SLUICE(sluice, Config(kOneASecondDelayRule));
  HttpClient held(sluice.port());
  HoldOneRequest(sluice, held, "a");
  HttpClient idle(sluice.port());  // newer: first in the worker's list
  EXPECT_EQ(idle.Get("/", {{"X-K", "idle"}}).status, 200);
  ASSERT_TRUE(sluice.Signal(SIGTERM));
  ExpectClosed(idle, Millis(1000));
  const HttpResponse answer = held.ReadResponse(Millis(3000));
  EXPECT_EQ(answer.status, 200) << answer.Describe();
  EXPECT_EQ(answer.Header("Connection"), "close") << "the held connection was not drained";
  const std::optional<ExitStatus> exit = sluice.WaitExit(Millis(3000));
  ASSERT_TRUE(exit) << "still running after its last request was answered";
  EXPECT_TRUE(exit->exited && exit->code == 0) << exit->ToString() << "\n" << sluice.Stderr();
}

// docs/operations.md: sluice_request_duration_seconds "excludes time held by delay".
// (Found by this suite: a held request was observed from its arrival, so one request
// held ~500 ms put ~0.5 s into the histogram.)
TEST(ServerTest, RequestDurationExcludesDelayHold) {
  START_SLUICE(sluice, Config(R"(
rules:
  - name: slow
    key: ["header:x-k"]
    algorithm: gcra
    limit: 2
    period: 1s
    burst: 1
    action: delay
    max_delay_ms: 2000
)"));
  HttpClient c(sluice.port());
  EXPECT_EQ(c.Get("/", {{"X-K", "a"}}).status, 200);
  const auto start = Clock::now();
  EXPECT_EQ(c.Get("/", {{"X-K", "a"}}).status, 200);
  ASSERT_GE(Elapsed(start), 300) << "not held";
  const std::string metrics = Metrics(sluice);
  EXPECT_EQ(MetricValue(metrics, "sluice_request_duration_seconds_count"), 2);
  EXPECT_LT(MetricValue(metrics, "sluice_request_duration_seconds_sum").value_or(99), 0.2)
      << "the time held by delay is counted as request duration\n"
      << metrics;
}

// Found by this suite. On SIGTERM each worker used to stop polling its listening socket
// but keep it open until exit, so the kernel went on completing handshakes into the
// backlog and a client that connected during the drain (up to 10 s with held
// requests) was neither refused nor served until the process exited. The listeners
// now close when the drain starts, which refuses it at once (or, with SO_REUSEPORT,
// lets a new
// instance on the same port take it).
TEST(ServerTest, ConnectionDuringDrainIsRefusedAtOnce) {
  START_SLUICE(sluice, Config(kOneASecondDelayRule));
  HttpClient held(sluice.port());
  HoldOneRequest(sluice, held, "a");
  ASSERT_TRUE(sluice.Signal(SIGTERM));
  ASSERT_TRUE(WaitFor([&] { return FetchGet(sluice.admin_port(), "/readyz").status == 503; },
                      Millis(1000)));

  HttpClient late(sluice.port(), {}, Millis(300));
  if (late.connected()) {
    ASSERT_TRUE(late.Send(BuildRequest("GET", "/", {{"X-K", "late"}})));
    std::string data;
    const HttpClient::CloseState state = late.WaitClosed(Millis(300), &data);
    EXPECT_NE(state, HttpClient::CloseState::kOpen)
        << "a connection made during the drain was accepted by the kernel and then left "
           "without an answer (it is reset when the process exits)";
  }  // else refused at once: fine
  EXPECT_EQ(held.ReadResponse(Millis(3000)).status, 200);
  const std::optional<ExitStatus> exit = sluice.WaitExit(Millis(5000));
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->code, 0);
}

TEST(ServerTest, SigintStopsLikeSigterm) {
  START_SLUICE(sluice, Config(""));
  HttpClient idle(sluice.port());
  EXPECT_EQ(idle.Get("/").status, 200);
  ASSERT_TRUE(sluice.Signal(SIGINT));
  const std::optional<ExitStatus> exit = sluice.WaitExit(Millis(3000));
  ASSERT_TRUE(exit) << "an idle keep-alive connection held up the shutdown";
  EXPECT_TRUE(exit->exited && exit->code == 0) << exit->ToString();
  EXPECT_NE(sluice.Stderr().find("stopped"), std::string::npos) << sluice.Stderr();
}

// --- 14. Admin --------------------------------------------------------------------------

TEST(ServerTest, AdminEndpoints) {
  START_SLUICE(sluice, Config(R"(
rules:
  - name: r
    key: ["header:x-k"]
    algorithm: token_bucket
    limit: 3
    period: 1h
)"));
  HttpClient c(sluice.port());
  EXPECT_EQ(Statuses(c, "/", {{"X-K", "a"}}, 5), (std::vector<int>{200, 200, 200, 429, 429}));

  const HttpResponse m = FetchGet(sluice.admin_port(), "/metrics");
  ASSERT_EQ(m.status, 200) << m.Describe();
  EXPECT_TRUE(m.Header("Content-Type").value_or("").starts_with("text/plain"));
  EXPECT_EQ(MetricValue(m.body, "sluice_requests_total", R"(rule="r",decision="allowed")"), 3)
      << m.body;
  EXPECT_EQ(MetricValue(m.body, "sluice_requests_total", R"(rule="r",decision="limited")"), 2);
  EXPECT_EQ(MetricValue(m.body, "sluice_request_duration_seconds_bucket", R"(le="+Inf")"), 5);
  EXPECT_EQ(MetricValue(m.body, "sluice_request_duration_seconds_count"), 5);
  EXPECT_NE(m.body.find("# TYPE sluice_request_duration_seconds histogram"), std::string::npos);
  EXPECT_EQ(MetricValue(m.body, "sluice_connections_active"), 1) << "the client above is open";
  EXPECT_EQ(MetricValue(m.body, "sluice_config_reloads_total", R"(result="success")"), 1);
  EXPECT_EQ(MetricValue(m.body, "sluice_config_reloads_total", R"(result="failure")"), 0);
  c.Close();
  EXPECT_TRUE(
      WaitFor([&] { return Metric(sluice, "sluice_connections_active") == 0; }, Millis(3000)))
      << "a closed connection is still counted active";

  EXPECT_EQ(FetchGet(sluice.admin_port(), "/healthz").status, 200);
  EXPECT_EQ(FetchGet(sluice.admin_port(), "/readyz").status, 200);
  EXPECT_EQ(FetchGet(sluice.admin_port(), "/no-such-thing").status, 404);
  EXPECT_EQ(Fetch(sluice.admin_port(), "POST", "/metrics").status, 405);
  EXPECT_EQ(FetchGet(sluice.admin_port(), "/v1/reload").status, 405);
  // The admin listener is not rate limited.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(FetchGet(sluice.admin_port(), "/healthz").status, 200);
}

// --- 15. check-config -------------------------------------------------------------------

TEST(ServerTest, CheckConfigExitStatusAndErrorPositions) {
  TempDir dir;
  const std::string good = dir.File("good.yaml");
  const std::string bad = dir.File("bad.yaml");
  ASSERT_TRUE(WriteFileText(good, ReloadConfig(5)));
  ASSERT_TRUE(WriteFileText(bad, R"(listen: "127.0.0.1:0"
rules:
  - name: r
    algorithm: leaky-bucket
    limit: -5
    period: 1m
)"));
  const CommandResult ok = RunSluice({"check-config", good});
  ASSERT_TRUE(ok.status);
  EXPECT_TRUE(ok.status->exited && ok.status->code == 0) << ok.status->ToString() << ok.err;
  EXPECT_NE(ok.out.find("ok"), std::string::npos) << ok.out;

  const CommandResult refused = RunSluice({"check-config", bad});
  ASSERT_TRUE(refused.status);
  EXPECT_TRUE(refused.status->exited && refused.status->code == 1) << refused.status->ToString();
  EXPECT_NE(refused.err.find(bad + ":4:16: "), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find(bad + ":5:12: "), std::string::npos) << refused.err;

  // serve refuses it the same way.
  const CommandResult serve = RunSluice({"serve", "--config", bad});
  ASSERT_TRUE(serve.status);
  EXPECT_TRUE(serve.status->exited && serve.status->code == 1) << serve.status->ToString();
  EXPECT_NE(serve.err.find(bad + ":4:16: "), std::string::npos) << serve.err;

  const CommandResult missing = RunSluice({"check-config", dir.File("absent.yaml")});
  ASSERT_TRUE(missing.status);
  EXPECT_EQ(missing.status->code, 1);
  EXPECT_NE(missing.err.find("absent.yaml"), std::string::npos) << missing.err;
}

// --- The harness's own parser -------------------------------------------------------------

TEST(HarnessTest, RateLimitFieldParserIsStrict) {
  std::string error;
  const auto good = ParseRateLimitField(R"("a";q=5;w=60, "b-2";r=0;t=17)", &error);
  ASSERT_TRUE(good) << error;
  ASSERT_EQ(good->size(), 2u);
  EXPECT_EQ((*good)[0].policy, "a");
  EXPECT_EQ((*good)[0].Param("q"), 5);
  EXPECT_EQ((*good)[1].Param("t"), 17);
  for (const char* bad : {R"("a";q=5,)", R"("a";q=5;;w=1)", R"(a;q=5)", R"("a";q=1.5)",
                          R"("a";Q=5)", R"("a";q=5 "b")", R"("a;q=5)", R"("a";q=5;q=6)",
                          R"("a";q="5")", R"(("a");q=5)", R"("a";q=1234567890123456)"}) {
    EXPECT_FALSE(ParseRateLimitField(bad, &error)) << bad;
  }
}

}  // namespace
}  // namespace sluice::integration
