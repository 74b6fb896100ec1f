// The request a decision API asks the gate about: built from a /v1/check query's
// descriptors, or from the headers of a forward-auth call. Each test checks the fields
// of the built http::Request; the last ones check, through a real gate, that a query
// keys the same client as the request it describes.
#include "api/decision_request.h"

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/check_request.h"
#include "config/config.h"
#include "gate/gate.h"
#include "http/server_connection.h"
#include "metrics/metrics.h"
#include "net/address.h"
#include "sluice/clock.h"
#include "store/memory_store.h"
#include "testing/test_request.h"

namespace sluice::api {
namespace {

using config::KeyPartKind;
using sluice::testing::Ip;
using sluice::testing::TestRequest;

std::string HeaderList(const http::Request& request) {
  std::string out;
  for (const http::Header& h : request.headers) {
    out += std::string(h.name) + ": " + std::string(h.value) + "\n";
  }
  return out;
}

std::string Canonical(std::string_view path) {
  std::string scratch;
  return std::string(http::CanonicalPath(path, scratch));
}

// --- FromDescriptors --------------------------------------------------------------------

TEST(FromDescriptors, NoDescriptorsIsAnEmptyRequest) {
  DecisionRequestBuilder builder;
  const http::Request& r = builder.FromDescriptors({});
  EXPECT_EQ(r.peer, nullptr);
  EXPECT_TRUE(r.peer_text.empty());
  EXPECT_TRUE(r.method.empty());
  EXPECT_TRUE(r.target.empty());
  EXPECT_TRUE(r.path.empty());
  EXPECT_TRUE(r.query.empty());
  EXPECT_TRUE(r.host.empty());
  EXPECT_TRUE(r.headers.empty());
  EXPECT_TRUE(r.request_id.empty());
}

TEST(FromDescriptors, PeerIsSetOnlyWithIp) {
  DecisionRequestBuilder builder;
  const Descriptor with_ip[] = {{KeyPartKind::kIp, "", "203.0.113.7"}};
  const http::Request& r = builder.FromDescriptors(with_ip);
  ASSERT_NE(r.peer, nullptr);
  EXPECT_EQ(*r.peer, Ip("203.0.113.7"));

  const Descriptor v6[] = {{KeyPartKind::kIp, "", "2001:db8::7"}};
  ASSERT_NE(builder.FromDescriptors(v6).peer, nullptr);
  EXPECT_EQ(*builder.FromDescriptors(v6).peer, Ip("2001:db8::7"));

  // The next request without ip names no client, though the builder kept the address.
  const Descriptor no_ip[] = {{KeyPartKind::kMethod, "", "GET"}};
  const http::Request& r2 = builder.FromDescriptors(no_ip);
  EXPECT_EQ(r2.peer, nullptr);
  EXPECT_EQ(r2.method, "GET");

  // A value that is not an address (the parser refuses it; a caller that did not ask
  // the parser) leaves the client unnamed rather than failing.
  const Descriptor bad_ip[] = {{KeyPartKind::kIp, "", "not-an-ip"}};
  EXPECT_EQ(builder.FromDescriptors(bad_ip).peer, nullptr);
}

TEST(FromDescriptors, MethodIsKeptAsGiven) {
  DecisionRequestBuilder builder;
  const Descriptor d[] = {{KeyPartKind::kMethod, "", "PATCH"}};
  EXPECT_EQ(builder.FromDescriptors(d).method, "PATCH");
}

TEST(FromDescriptors, PathIsCanonicalisedAsARequestsIs) {
  // What CanonicalPath does (tests/http/canonical_path_test.cc), checked here first so a
  // change there shows up as such rather than as a builder failure.
  ASSERT_EQ(Canonical("/a/../b"), "/b");
  ASSERT_EQ(Canonical("/%2e%2e/api"), "/api");

  struct Case {
    std::string_view given, path;
  };
  const Case cases[] = {
      {"/api/x", "/api/x"},
      {"/a/../b", "/b"},
      {"/a/./b//c/", "/a/b/c/"},
      {"/%2e%2e/api", "/api"},
      {"/a/%2E%2e/b", "/b"},
      {"/%61pi/items", "/api/items"},
      {"/api%2Fitems", "/api%2Fitems"},  // an encoded slash is data
      {"/..", "/"},
      {"http://example.com/api/x", "/api/x"},
  };
  DecisionRequestBuilder builder;
  for (const Case& c : cases) {
    const Descriptor d[] = {{KeyPartKind::kPath, "", c.given}};
    const http::Request& r = builder.FromDescriptors(d);
    EXPECT_EQ(r.path, c.path) << c.given;
    EXPECT_EQ(r.path, Canonical(c.given)) << c.given;
    EXPECT_EQ(r.target, c.given) << c.given;  // as given
    EXPECT_TRUE(r.query.empty()) << c.given;
  }
}

TEST(FromDescriptors, PlainPathIsNotCopied) {
  DecisionRequestBuilder builder;
  const std::string path = "/api/items/7";
  const Descriptor d[] = {{KeyPartKind::kPath, "", path}};
  EXPECT_EQ(builder.FromDescriptors(d).path.data(), path.data());
}

TEST(FromDescriptors, HostWithoutPort) {
  struct Case {
    std::string_view given, host;
  };
  const Case cases[] = {
      {"api.example.com", "api.example.com"}, {"api.example.com:8443", "api.example.com"},
      {"Example.COM:80", "Example.COM"},  // not lower-cased here
      {"example.com.", "example.com"},        {"[::1]:8080", "[::1]"},
      {"[2001:db8::1]", "[2001:db8::1]"},     {" h.example :81 ", "h.example"}};
  DecisionRequestBuilder builder;
  for (const Case& c : cases) {
    const Descriptor d[] = {{KeyPartKind::kHost, "", c.given}};
    EXPECT_EQ(builder.FromDescriptors(d).host, c.host) << c.given;
  }
}

TEST(FromDescriptors, AuthorizationAndHeadersBecomeFields) {
  DecisionRequestBuilder builder;
  const Descriptor d[] = {{KeyPartKind::kAuthorization, "", "Bearer t-1"},
                          {KeyPartKind::kHeader, "X-Api-Key", "k-123"},
                          {KeyPartKind::kHeader, "x-tenant", "acme"}};
  const http::Request& r = builder.FromDescriptors(d);
  EXPECT_EQ(HeaderList(r), "Authorization: Bearer t-1\nX-Api-Key: k-123\nx-tenant: acme\n");
  EXPECT_EQ(r.FindHeader("authorization"), "Bearer t-1");
  EXPECT_EQ(r.FindHeader("x-api-key"), "k-123");
  EXPECT_EQ(r.FindHeader("X-TENANT"), "acme");
  EXPECT_FALSE(r.FindHeader("host").has_value());
}

TEST(FromDescriptors, QueryParametersAreJoined) {
  DecisionRequestBuilder builder;
  const Descriptor d[] = {{KeyPartKind::kQuery, "a", "1"}, {KeyPartKind::kQuery, "b", "2"}};
  const http::Request& r = builder.FromDescriptors(d);
  EXPECT_EQ(r.query, "a=1&b=2");
  EXPECT_EQ(gate::QueryParam(r.query, "a"), "1");
  EXPECT_EQ(gate::QueryParam(r.query, "b"), "2");
  EXPECT_FALSE(gate::QueryParam(r.query, "c").has_value());
  EXPECT_TRUE(r.path.empty());  // no path descriptor: no path
}

TEST(FromDescriptors, AmpersandInAQueryValueIsEscaped) {
  DecisionRequestBuilder builder;
  const Descriptor d[] = {{KeyPartKind::kQuery, "key", "x&b=evil"},
                          {KeyPartKind::kQuery, "b", "2"},
                          {KeyPartKind::kQuery, "eq", "p=q"},
                          {KeyPartKind::kQuery, "empty", ""},
                          {KeyPartKind::kQuery, "amps", "&&"}};
  const http::Request& r = builder.FromDescriptors(d);
  EXPECT_EQ(r.query, "key=x%26b=evil&b=2&eq=p=q&empty=&amps=%26%26");
  // Every parameter reads back, and the '&' did not make a parameter of its own.
  EXPECT_EQ(gate::QueryParam(r.query, "key"), "x%26b=evil");
  EXPECT_EQ(gate::QueryParam(r.query, "b"), "2");
  EXPECT_EQ(gate::QueryParam(r.query, "eq"), "p=q");
  EXPECT_EQ(gate::QueryParam(r.query, "empty"), "");
  EXPECT_EQ(gate::QueryParam(r.query, "amps"), "%26%26");
  // What a request would have to send for the same value reads the same.
  EXPECT_EQ(gate::QueryParam(r.query, "key"), gate::QueryParam("key=x%26b=evil", "key"));
}

TEST(FromDescriptors, EachCallStartsAfresh) {
  DecisionRequestBuilder builder;
  const Descriptor first[] = {
      {KeyPartKind::kIp, "", "10.0.0.1"}, {KeyPartKind::kPath, "", "/a/../b"},
      {KeyPartKind::kHost, "", "h:1"},    {KeyPartKind::kMethod, "", "GET"},
      {KeyPartKind::kHeader, "x-a", "1"}, {KeyPartKind::kQuery, "q", "1"}};
  const http::Request& r1 = builder.FromDescriptors(first);
  EXPECT_EQ(r1.path, "/b");
  EXPECT_EQ(r1.headers.size(), 1u);
  EXPECT_EQ(r1.query, "q=1");

  const Descriptor second[] = {{KeyPartKind::kQuery, "z", "9"}};
  const http::Request& r2 = builder.FromDescriptors(second);
  EXPECT_EQ(r2.peer, nullptr);
  EXPECT_TRUE(r2.path.empty());
  EXPECT_TRUE(r2.target.empty());
  EXPECT_TRUE(r2.host.empty());
  EXPECT_TRUE(r2.method.empty());
  EXPECT_TRUE(r2.headers.empty());
  EXPECT_EQ(r2.query, "z=9");
}

TEST(FromDescriptors, FromParsedBody) {
  CheckRequestParser parser;
  std::string body = R"({"descriptors": {
      "ip": "198.51.100.4", "method": "POST", "path": "/v1/%2e/orders",
      "host": "shop.example:443", "authorization": "Basic YTpi",
      "header:X-Api-Key": "k\u00e9", "query:page": "2&x"}})";
  ASSERT_TRUE(parser.Parse(body)) << parser.error();
  DecisionRequestBuilder builder;
  const http::Request& r = builder.FromDescriptors(parser.descriptors(parser.queries()[0]));
  ASSERT_NE(r.peer, nullptr);
  EXPECT_EQ(*r.peer, Ip("198.51.100.4"));
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.path, "/v1/orders");
  EXPECT_EQ(r.host, "shop.example");
  EXPECT_EQ(HeaderList(r), "Authorization: Basic YTpi\nX-Api-Key: k\xc3\xa9\n");
  EXPECT_EQ(r.query, "page=2%26x");
}

// --- FromForwardAuth --------------------------------------------------------------------

TEST(FromForwardAuth, NothingSetWithoutTheHeaders) {
  const TestRequest auth = TestRequest("GET", "/v1/auth?refuse_status=401")
                               .Header("Host", "sluice.internal:8080")
                               .Header("X-Api-Key", "k")
                               .Id("rid-7");
  const http::Request view = auth.View();
  DecisionRequestBuilder builder;
  const http::Request& r = builder.FromForwardAuth(view);
  EXPECT_TRUE(r.method.empty());
  EXPECT_TRUE(r.target.empty());
  EXPECT_TRUE(r.path.empty());
  EXPECT_TRUE(r.query.empty());
  EXPECT_EQ(r.host, "sluice.internal");  // the call's own host
  // Passed through as they are.
  EXPECT_EQ(r.headers.data(), view.headers.data());
  EXPECT_EQ(r.headers.size(), 2u);
  EXPECT_EQ(r.request_id, "rid-7");
  EXPECT_EQ(r.peer, view.peer);
}

TEST(FromForwardAuth, ForwardedHeaders) {
  const TestRequest auth = TestRequest("GET", "/v1/auth")
                               .Header("Host", "sluice:8080")
                               .Header("X-Forwarded-Method", "POST")
                               .Header("X-Forwarded-Uri", "/api/../v2/items?page=3&key=k1")
                               .Header("X-Forwarded-Host", "Api.Example.com:443")
                               .Header("X-Forwarded-For", "198.51.100.9")
                               .Header("X-Api-Key", "abc")
                               .Peer("10.0.0.2")
                               .Id("req-42");
  http::Request view = auth.View();
  view.peer_text = "10.0.0.2";
  view.version_minor = 0;
  DecisionRequestBuilder builder;
  const http::Request& r = builder.FromForwardAuth(view);
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/api/../v2/items?page=3&key=k1");
  EXPECT_EQ(r.path, "/v2/items");
  EXPECT_EQ(r.query, "page=3&key=k1");
  EXPECT_EQ(gate::QueryParam(r.query, "key"), "k1");
  EXPECT_EQ(r.host, "Api.Example.com");
  EXPECT_EQ(r.headers.data(), view.headers.data());
  EXPECT_EQ(r.headers.size(), 6u);
  EXPECT_EQ(r.FindHeader("x-api-key"), "abc");
  EXPECT_EQ(r.FindHeader("x-forwarded-for"), "198.51.100.9");  // the gate resolves it
  ASSERT_EQ(r.peer, view.peer);
  EXPECT_EQ(*r.peer, Ip("10.0.0.2"));
  EXPECT_EQ(r.peer_text, "10.0.0.2");
  EXPECT_EQ(r.request_id, "req-42");
  EXPECT_EQ(r.version_minor, 0);
}

TEST(FromForwardAuth, OriginalHeadersAsNginxSendsThem) {
  const TestRequest auth = TestRequest("GET", "/v1/auth")
                               .Header("Host", "api.example.com")
                               .Header("X-Original-Method", "DELETE")
                               .Header("X-Original-URI", "/%61pi/x?id=5");
  const http::Request view = auth.View();
  DecisionRequestBuilder builder;
  const http::Request& r = builder.FromForwardAuth(view);
  EXPECT_EQ(r.method, "DELETE");
  EXPECT_EQ(r.target, "/%61pi/x?id=5");
  EXPECT_EQ(r.path, "/api/x");
  EXPECT_EQ(r.query, "id=5");
  EXPECT_EQ(r.host, "api.example.com");  // no X-Forwarded-Host: the call's Host
}

TEST(FromForwardAuth, UriWithoutQueryAndWithEmptyQuery) {
  DecisionRequestBuilder builder;
  const TestRequest plain = TestRequest().Header("X-Forwarded-Uri", "/a/b");
  const http::Request v1 = plain.View();
  const http::Request& r1 = builder.FromForwardAuth(v1);
  EXPECT_EQ(r1.path, "/a/b");
  EXPECT_TRUE(r1.query.empty());

  const TestRequest empty = TestRequest().Header("X-Forwarded-Uri", "/a?");
  const http::Request v2 = empty.View();
  const http::Request& r2 = builder.FromForwardAuth(v2);
  EXPECT_EQ(r2.path, "/a");
  EXPECT_TRUE(r2.query.empty());
  EXPECT_EQ(r2.target, "/a?");

  // A '?' encoded in the path is not the query's start.
  const TestRequest encoded = TestRequest().Header("X-Forwarded-Uri", "/a%3Fb?c=1");
  const http::Request v3 = encoded.View();
  const http::Request& r3 = builder.FromForwardAuth(v3);
  EXPECT_EQ(r3.path, "/a%3Fb");
  EXPECT_EQ(r3.query, "c=1");
}

TEST(FromForwardAuth, ForwardedSpellingWinsOverOriginalAndTheFirstOfANameCounts) {
  // X-Forwarded-* (Traefik) wins over X-Original-* (nginx) whatever the order; of one
  // name, the first field counts (docs/decision-api.md).
  const TestRequest auth = TestRequest()
                               .Header("Host", "call.example")
                               .Header("x-original-method", "PUT")
                               .Header("X-Forwarded-Method", "GET")
                               .Header("X-ORIGINAL-METHOD", "HEAD")
                               .Header("X-Forwarded-Uri", "/first?a=1")
                               .Header("X-Original-URI", "/second?a=2")
                               .Header("X-Forwarded-Uri", "/third")
                               .Header("X-Forwarded-Host", "one.example")
                               .Header("X-Forwarded-Host", "two.example");
  const http::Request view = auth.View();
  DecisionRequestBuilder builder;
  const http::Request& r = builder.FromForwardAuth(view);
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.path, "/first");
  EXPECT_EQ(r.query, "a=1");
  EXPECT_EQ(r.host, "one.example");

  const TestRequest reversed = TestRequest()
                                   .Header("X-Original-URI", "/orig")
                                   .Header("X-Forwarded-Uri", "/fwd")
                                   .Header("X-Forwarded-Method", "PATCH")
                                   .Header("X-Original-Method", "POST");
  const http::Request v2 = reversed.View();
  const http::Request& r2 = builder.FromForwardAuth(v2);
  EXPECT_EQ(r2.path, "/fwd");
  EXPECT_EQ(r2.method, "PATCH");

  // Only the nginx spelling: it is used.
  const TestRequest nginx =
      TestRequest().Header("X-Original-Method", "POST").Header("X-Original-URI", "/orig?q=1");
  const http::Request v3 = nginx.View();
  const http::Request& r3 = builder.FromForwardAuth(v3);
  EXPECT_EQ(r3.method, "POST");
  EXPECT_EQ(r3.path, "/orig");
  EXPECT_EQ(r3.query, "q=1");
}

TEST(FromForwardAuth, ValuesAreTrimmed) {
  const TestRequest auth = TestRequest()
                               .Header("Host", "call.example")
                               .Header("X-Forwarded-Method", " \tGET \t")
                               .Header("X-Forwarded-Uri", "  /a/./b?x=1  ")
                               .Header("X-Forwarded-Host", "\t h.example:8080 ");
  const http::Request view = auth.View();
  DecisionRequestBuilder builder;
  const http::Request& r = builder.FromForwardAuth(view);
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target, "/a/./b?x=1");
  EXPECT_EQ(r.path, "/a/b");
  EXPECT_EQ(r.query, "x=1");
  EXPECT_EQ(r.host, "h.example");
}

TEST(FromForwardAuth, EachCallStartsAfresh) {
  DecisionRequestBuilder builder;
  const TestRequest full = TestRequest()
                               .Header("X-Forwarded-Method", "POST")
                               .Header("X-Forwarded-Uri", "/a?b=1")
                               .Header("X-Forwarded-Host", "h");
  const http::Request v1 = full.View();
  EXPECT_EQ(builder.FromForwardAuth(v1).method, "POST");
  const TestRequest bare = TestRequest().Header("Host", "call");
  const http::Request v2 = bare.View();
  const http::Request& r = builder.FromForwardAuth(v2);
  EXPECT_TRUE(r.method.empty());
  EXPECT_TRUE(r.path.empty());
  EXPECT_TRUE(r.query.empty());
  EXPECT_EQ(r.host, "call");
}

// --- Through the gate: a query keys the client its request would --------------------

constexpr Timestamp kStart = FromNanos(int64_t{3600} * 1000 * 1'000'000'000);

class DescriptorsThroughGateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const config::LoadResult loaded = config::LoadConfigText(R"(
rules:
  - name: by-all
    match: {path_prefix: "/api/", methods: [POST]}
    key: [ip, "header:x-api-key", "query:api_key", host, authorization, path, method]
    algorithm: token_bucket
    limit: 100
    period: 1m
)",
                                                             "test.yaml");
    for (const config::ConfigError& error : loaded.errors) ADD_FAILURE() << error.ToString();
    ASSERT_NE(loaded.config, nullptr);
    policy_ = gate::Policy::Compile(loaded.config, registry_);
  }
  std::string KeyOf(const http::Request& request) {
    gate::Evaluation evaluation;
    evaluator_.Evaluate(*policy_, request, kStart, evaluation);
    EXPECT_EQ(evaluation.results.size(), 1u);
    if (evaluation.results.size() != 1) return "";
    EXPECT_NE(evaluation.results[0].outcome, metrics::Outcome::kMissingKey);
    return std::string(evaluation.KeyOf(evaluation.results[0]));
  }

  metrics::Registry registry_;
  metrics::WorkerMetrics& metrics_ = registry_.AddWorker();
  store::MemoryStore store_{store::MemoryStore::Options{.max_keys = 64, .hash_seed = 7}};
  gate::Evaluator evaluator_{store_, metrics_};
  std::shared_ptr<const gate::Policy> policy_;
};

TEST_F(DescriptorsThroughGateTest, QueryKeysTheSameClientAsTheRequest) {
  CheckRequestParser parser;
  std::string body = R"({"descriptors": {
      "ip": "203.0.113.7", "header:X-Api-Key": "k-1", "query:api_key": "a&b",
      "host": "API.example.com:8443", "authorization": "Bearer tok",
      "path": "/api/./x/../items", "method": "POST"}})";
  ASSERT_TRUE(parser.Parse(body)) << parser.error();
  DecisionRequestBuilder builder;
  const std::string from_query =
      KeyOf(builder.FromDescriptors(parser.descriptors(parser.queries()[0])));

  const TestRequest request = TestRequest("POST", "/api/items?x=1&api_key=a%26b")
                                  .Header("Host", "api.EXAMPLE.com")
                                  .Header("x-api-key", "k-1")
                                  .Header("Authorization", "Bearer tok")
                                  .Peer("203.0.113.7");
  const std::string from_request = KeyOf(request.View());
  EXPECT_FALSE(from_query.empty());
  EXPECT_EQ(from_query, from_request);

  // And a different value keys a different client.
  const TestRequest other = TestRequest("POST", "/api/items?api_key=a%26c")
                                .Header("Host", "api.example.com")
                                .Header("x-api-key", "k-1")
                                .Header("Authorization", "Bearer tok")
                                .Peer("203.0.113.7");
  EXPECT_NE(KeyOf(other.View()), from_query);
}

TEST_F(DescriptorsThroughGateTest, ForwardAuthKeysTheSameClientAsTheRequest) {
  const TestRequest auth = TestRequest("GET", "/v1/auth")
                               .Header("Host", "sluice.internal")
                               .Header("X-Original-Method", "POST")
                               .Header("X-Original-URI", "/api/items?api_key=a%26b")
                               .Header("X-Forwarded-Host", "api.example.com")
                               .Header("X-Api-Key", "k-1")
                               .Header("Authorization", "Bearer tok")
                               .Peer("203.0.113.7");
  const http::Request view = auth.View();
  DecisionRequestBuilder builder;
  const std::string from_auth = KeyOf(builder.FromForwardAuth(view));

  const TestRequest request = TestRequest("POST", "/api/items?api_key=a%26b")
                                  .Header("Host", "api.example.com")
                                  .Header("x-api-key", "k-1")
                                  .Header("Authorization", "Bearer tok")
                                  .Peer("203.0.113.7");
  EXPECT_EQ(from_auth, KeyOf(request.View()));
}

}  // namespace
}  // namespace sluice::api
