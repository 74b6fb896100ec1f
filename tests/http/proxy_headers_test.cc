// The proxy's header work (http/proxy_headers.h): each rule with the exact bytes it
// must produce, the smuggling checks on requests built by hand and on requests as a
// real ServerConnection hands them over (its libhttp-parser lets some shapes through,
// and refuses others before the proxy sees them), and no allocation once the output
// buffer has grown.
//
// The http_test binary counts its allocations (tests/testing/allocation_counter.h).
#include "http/proxy_headers.h"

#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "net/event_loop.h"
#include "testing/allocation_counter.h"
#include "testing/test_request.h"

namespace sluice::http {
namespace {

using sluice::testing::Ip;
using sluice::testing::TestRequest;

std::string UpstreamHead(const TestRequest& test_request, const UpstreamRequestOptions& options,
                         std::optional<BodyFraming> body = std::nullopt) {
  const Request request = test_request.View();
  const RequestFraming framing = CheckRequestFraming(request);
  EXPECT_TRUE(framing.ok()) << RefusalName(framing.refusal);
  std::string out;
  AppendUpstreamRequestHead(request, body.value_or(framing.body), options, out);
  return out;
}

UpstreamRequestOptions Options() {
  UpstreamRequestOptions options;
  options.upstream_authority = "10.0.0.7:8080";
  return options;
}

RequestRefusal Refusal(const TestRequest& request) {
  return CheckRequestFraming(request.View()).refusal;
}

// --- The head sent upstream -----------------------------------------------------------

TEST(UpstreamRequestHeadTest, GoldenGet) {
  const TestRequest request = TestRequest("GET", "/api/items?id=7")
                                  .Header("Host", "api.example.com")
                                  .Header("User-Agent", "curl/8.5.0")
                                  .Header("Accept", "*/*");
  EXPECT_EQ(UpstreamHead(request, Options()),
            "GET /api/items?id=7 HTTP/1.1\r\n"
            "Host: api.example.com\r\n"
            "User-Agent: curl/8.5.0\r\n"
            "Accept: */*\r\n"
            "X-Forwarded-For: 203.0.113.7\r\n"
            "X-Forwarded-Proto: http\r\n"
            "X-Forwarded-Host: api.example.com\r\n"
            "X-Request-Id: req-1\r\n"
            "\r\n");
}

TEST(UpstreamRequestHeadTest, GoldenPostDropsEveryHopByHopFieldAndRewritesContentLength) {
  const TestRequest request = TestRequest("POST", "/upload")
                                  .Header("Host", "api.example.com:8443")
                                  .Header("Connection", "keep-alive")
                                  .Header("Keep-Alive", "timeout=5")
                                  .Header("Proxy-Connection", "keep-alive")
                                  .Header("Content-Type", "text/plain")
                                  .Header("Proxy-Authorization", "Basic Zm9vOmJhcg==")
                                  .Header("Proxy-Authenticate", "Basic")
                                  .Header("TE", "trailers")
                                  .Header("Trailer", "X-Checksum")
                                  .Header("Upgrade", "h2c")
                                  .Header("Expect", "100-continue")
                                  .Header("Content-Length", "005 ")
                                  .Header("Authorization", "Bearer t0ken")
                                  .Header("X-Forwarded-Proto", "https")
                                  .Header("X-Forwarded-Host", "evil.example")
                                  .Header("X-Request-Id", "client-id")
                                  .Id("client-id");
  UpstreamRequestOptions options = Options();
  options.https = true;
  options.via = true;
  options.extra_lines = "X-Sluice-Route: app\r\n";
  EXPECT_EQ(UpstreamHead(request, options),
            "POST /upload HTTP/1.1\r\n"
            "Host: api.example.com:8443\r\n"
            "Content-Type: text/plain\r\n"
            "Authorization: Bearer t0ken\r\n"
            "Content-Length: 5\r\n"
            "X-Forwarded-For: 203.0.113.7\r\n"
            "X-Forwarded-Proto: https\r\n"
            "X-Forwarded-Host: api.example.com:8443\r\n"
            "X-Request-Id: client-id\r\n"
            "Via: 1.1 sluice\r\n"
            "X-Sluice-Route: app\r\n"
            "\r\n");
}

TEST(UpstreamRequestHeadTest, ChunkedBodyIsSentChunked) {
  const TestRequest request = TestRequest("PUT", "/x")
                                  .Header("Host", "a.example")
                                  .Header("Transfer-Encoding", "chunked")
                                  .Header("Trailer", "X-Sum");
  EXPECT_EQ(UpstreamHead(request, Options()),
            "PUT /x HTTP/1.1\r\n"
            "Host: a.example\r\n"
            "Transfer-Encoding: chunked\r\n"
            "X-Forwarded-For: 203.0.113.7\r\n"
            "X-Forwarded-Proto: http\r\n"
            "X-Forwarded-Host: a.example\r\n"
            "X-Request-Id: req-1\r\n"
            "\r\n");
}

TEST(UpstreamRequestHeadTest, CallerChoosesTheFramingItSends) {
  // A chunked body the caller buffered (11 bytes) goes with a length; a length body
  // may go chunked; no body, no framing field, whatever the client sent.
  const TestRequest chunked =
      TestRequest("POST", "/x").Header("Host", "a.example").Header("Transfer-Encoding", "chunked");
  const std::string with_length =
      UpstreamHead(chunked, Options(), BodyFraming{BodyKind::kContentLength, 11});
  EXPECT_NE(with_length.find("\r\nContent-Length: 11\r\n"), std::string::npos);
  EXPECT_EQ(with_length.find("Transfer-Encoding"), std::string::npos);

  const TestRequest sized =
      TestRequest("POST", "/x").Header("Host", "a.example").Header("Content-Length", "11");
  const std::string rechunked = UpstreamHead(sized, Options(), BodyFraming{BodyKind::kChunked});
  EXPECT_NE(rechunked.find("\r\nTransfer-Encoding: chunked\r\n"), std::string::npos);
  EXPECT_EQ(rechunked.find("Content-Length"), std::string::npos);

  const std::string none = UpstreamHead(sized, Options(), BodyFraming{BodyKind::kNone});
  EXPECT_EQ(none.find("Content-Length"), std::string::npos);
  EXPECT_EQ(none.find("Transfer-Encoding"), std::string::npos);
}

TEST(UpstreamRequestHeadTest, ContentLengthZeroIsKept) {
  const TestRequest request =
      TestRequest("POST", "/x").Header("Host", "a").Header("Content-Length", "0");
  EXPECT_NE(UpstreamHead(request, Options()).find("\r\nContent-Length: 0\r\n"), std::string::npos);
}

TEST(UpstreamRequestHeadTest, ConnectionTokensRemoveFieldsCaseInsensitivelyOverSeveralFields) {
  const TestRequest request = TestRequest("GET", "/")
                                  .Header("Host", "a.example")
                                  .Header("X-Hop-One", "1")
                                  .Header("connection", "close, X-HOP-ONE ,, x-hop-two")
                                  .Header("x-hop-two", "2")
                                  .Header("X-End-To-End", "3")
                                  .Header("CONNECTION", "x-hop-three")
                                  .Header("X-Hop-Three", "4")
                                  .Header("x-hop-THREE", "5");
  EXPECT_EQ(UpstreamHead(request, Options()),
            "GET / HTTP/1.1\r\n"
            "Host: a.example\r\n"
            "X-End-To-End: 3\r\n"
            "X-Forwarded-For: 203.0.113.7\r\n"
            "X-Forwarded-Proto: http\r\n"
            "X-Forwarded-Host: a.example\r\n"
            "X-Request-Id: req-1\r\n"
            "\r\n");
}

TEST(UpstreamRequestHeadTest, ConnectionTokensCannotRemoveWhatSluiceWrites) {
  // Host stays (every HTTP/1.1 request needs one); the framing and forwarding fields
  // are sluice's own, written after the client's fields are filtered.
  const TestRequest request =
      TestRequest("POST", "/")
          .Header("Host", "a.example")
          .Header("Connection",
                  "Host, Content-Length, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, "
                  "X-Request-Id, Via")
          .Header("Content-Length", "3");
  UpstreamRequestOptions options = Options();
  options.via = true;
  EXPECT_EQ(UpstreamHead(request, options),
            "POST / HTTP/1.1\r\n"
            "Host: a.example\r\n"
            "Content-Length: 3\r\n"
            "X-Forwarded-For: 203.0.113.7\r\n"
            "X-Forwarded-Proto: http\r\n"
            "X-Forwarded-Host: a.example\r\n"
            "X-Request-Id: req-1\r\n"
            "Via: 1.1 sluice\r\n"
            "\r\n");
}

TEST(UpstreamRequestHeadTest, ForwardedForFromAnUntrustedPeerIsReplaced) {
  const net::CidrList trusted({*net::Cidr::Parse("10.0.0.0/8")});
  const TestRequest request = TestRequest("GET", "/")
                                  .Peer("198.51.100.20")
                                  .Header("Host", "a")
                                  .Header("X-Forwarded-For", "1.2.3.4")
                                  .Header("Forwarded", "for=1.2.3.4")
                                  .Header("Accept", "*/*");
  UpstreamRequestOptions options = Options();
  options.trusted_proxies = &trusted;
  EXPECT_EQ(UpstreamHead(request, options),
            "GET / HTTP/1.1\r\n"
            "Host: a\r\n"
            "Accept: */*\r\n"
            "X-Forwarded-For: 198.51.100.20\r\n"
            "X-Forwarded-Proto: http\r\n"
            "X-Forwarded-Host: a\r\n"
            "X-Request-Id: req-1\r\n"
            "\r\n");
  // No trusted_proxies at all: nobody's list is kept.
  EXPECT_NE(UpstreamHead(request, Options()).find("\r\nX-Forwarded-For: 198.51.100.20\r\n"),
            std::string::npos);
}

TEST(UpstreamRequestHeadTest, ForwardedForFromATrustedPeerIsAppendedTo) {
  const net::CidrList trusted({*net::Cidr::Parse("10.0.0.0/8")});
  const TestRequest request = TestRequest("GET", "/")
                                  .Peer("10.0.0.1")
                                  .Header("Host", "a")
                                  .Header("X-Forwarded-For", "198.51.100.1")
                                  .Header("Forwarded", "for=198.51.100.1")
                                  .Header("x-forwarded-for", " 198.51.100.2, 10.0.0.9 ")
                                  .Header("X-Forwarded-For", "");
  UpstreamRequestOptions options = Options();
  options.trusted_proxies = &trusted;
  EXPECT_EQ(UpstreamHead(request, options),
            "GET / HTTP/1.1\r\n"
            "Host: a\r\n"
            "Forwarded: for=198.51.100.1\r\n"
            "X-Forwarded-For: 198.51.100.1, 198.51.100.2, 10.0.0.9, 10.0.0.1\r\n"
            "X-Forwarded-Proto: http\r\n"
            "X-Forwarded-Host: a\r\n"
            "X-Request-Id: req-1\r\n"
            "\r\n");
}

TEST(UpstreamRequestHeadTest, ForwardedForIsSetWhenATrustedPeerSentNone) {
  const net::CidrList trusted({*net::Cidr::Parse("10.0.0.0/8")});
  UpstreamRequestOptions options = Options();
  options.trusted_proxies = &trusted;
  const TestRequest request = TestRequest("GET", "/").Peer("10.1.2.3").Header("Host", "a");
  EXPECT_NE(UpstreamHead(request, options).find("\r\nX-Forwarded-For: 10.1.2.3\r\n"),
            std::string::npos);
}

TEST(UpstreamRequestHeadTest, ForwardedForNamedByConnectionIsNotPassedOn) {
  const net::CidrList trusted({*net::Cidr::Parse("10.0.0.0/8")});
  UpstreamRequestOptions options = Options();
  options.trusted_proxies = &trusted;
  const TestRequest request = TestRequest("GET", "/")
                                  .Peer("10.0.0.1")
                                  .Header("Host", "a")
                                  .Header("Connection", "x-forwarded-for")
                                  .Header("X-Forwarded-For", "198.51.100.1");
  EXPECT_NE(UpstreamHead(request, options).find("\r\nX-Forwarded-For: 10.0.0.1\r\n"),
            std::string::npos);
}

TEST(UpstreamRequestHeadTest, Ipv6PeersAreWrittenWithoutBrackets) {
  const net::CidrList trusted({*net::Cidr::Parse("2001:db8:1::/48")});
  UpstreamRequestOptions options = Options();
  options.trusted_proxies = &trusted;
  EXPECT_NE(UpstreamHead(TestRequest().Peer("2001:DB8:0:0::1").Header("Host", "a"), options)
                .find("\r\nX-Forwarded-For: 2001:db8::1\r\n"),
            std::string::npos);
  EXPECT_NE(UpstreamHead(TestRequest()
                             .Peer("2001:db8:1::5")
                             .Header("Host", "a")
                             .Header("X-Forwarded-For", "2001:db8:2::7"),
                         options)
                .find("\r\nX-Forwarded-For: 2001:db8:2::7, 2001:db8:1::5\r\n"),
            std::string::npos);
  // A dual-stack socket's IPv4 peer (IPv4-mapped) is written as IPv4.
  EXPECT_NE(UpstreamHead(TestRequest().Peer("::ffff:192.0.2.1").Header("Host", "a"), options)
                .find("\r\nX-Forwarded-For: 192.0.2.1\r\n"),
            std::string::npos);
}

TEST(UpstreamRequestHeadTest, HostIsRewrittenInPlaceWhenAsked) {
  const TestRequest request = TestRequest("GET", "/")
                                  .Header("Accept", "*/*")
                                  .Header("host", "api.example.com")
                                  .Header("Cookie", "a=1");
  UpstreamRequestOptions options = Options();
  options.rewrite_host = true;
  EXPECT_EQ(UpstreamHead(request, options),
            "GET / HTTP/1.1\r\n"
            "Accept: */*\r\n"
            "host: 10.0.0.7:8080\r\n"
            "Cookie: a=1\r\n"
            "X-Forwarded-For: 203.0.113.7\r\n"
            "X-Forwarded-Proto: http\r\n"
            "X-Forwarded-Host: api.example.com\r\n"
            "X-Request-Id: req-1\r\n"
            "\r\n");
}

TEST(UpstreamRequestHeadTest, AbsoluteFormTargetNamesTheHost) {
  // RFC 9112 3.2.2: the target's authority is the host, not the Host field.
  const TestRequest request =
      TestRequest("GET", "http://user@b.example:8080/x?y=1").Header("Host", "a.example");
  EXPECT_EQ(UpstreamHead(request, Options()),
            "GET http://user@b.example:8080/x?y=1 HTTP/1.1\r\n"
            "Host: b.example:8080\r\n"
            "X-Forwarded-For: 203.0.113.7\r\n"
            "X-Forwarded-Proto: http\r\n"
            "X-Forwarded-Host: b.example:8080\r\n"
            "X-Request-Id: req-1\r\n"
            "\r\n");
}

TEST(UpstreamRequestHeadTest, Http10WithoutHostGetsTheUpstreamsAndVia10) {
  UpstreamRequestOptions options = Options();
  options.via = true;
  EXPECT_EQ(UpstreamHead(TestRequest("GET", "/old").Http10().Header("Via", "1.0 edge"), options),
            "GET /old HTTP/1.1\r\n"
            "Via: 1.0 edge\r\n"
            "Host: 10.0.0.7:8080\r\n"
            "X-Forwarded-For: 203.0.113.7\r\n"
            "X-Forwarded-Proto: http\r\n"
            "X-Request-Id: req-1\r\n"
            "Via: 1.0 sluice\r\n"
            "\r\n");
}

TEST(UpstreamRequestHeadTest, GeneratedRequestIdReplacesTheClientsUnusableOne) {
  // The server kept no id from "a b" (not a plain token) and generated one.
  const TestRequest request = TestRequest("GET", "/")
                                  .Header("Host", "a")
                                  .Header("X-Request-Id", "a b")
                                  .Id("00000000000000420000000000000001");
  const std::string head = UpstreamHead(request, Options());
  EXPECT_EQ(head.find("a b"), std::string::npos);
  EXPECT_NE(head.find("\r\nX-Request-Id: 00000000000000420000000000000001\r\n"), std::string::npos);
}

// --- The head sent to the client ------------------------------------------------------

std::string ClientHead(const std::vector<Header>& headers, const BodyFraming& body,
                       const ClientResponseOptions& options, int status = 200,
                       std::string_view reason = "OK") {
  UpstreamResponse response;
  response.status = status;
  response.reason = reason;
  response.headers = headers;
  std::string out;
  AppendClientResponseHead(response, body, options, out);
  return out;
}

TEST(ClientResponseHeadTest, GoldenContentLengthPassedOn) {
  const std::vector<Header> headers = {{"Server", "nginx"},
                                       {"Date", "Sun, 22 Nov 2026 10:00:00 GMT"},
                                       {"Content-Type", "application/json"},
                                       {"Content-Length", "17"},
                                       {"Connection", "keep-alive"},
                                       {"Keep-Alive", "timeout=5"},
                                       {"Cache-Control", "no-store"}};
  ClientResponseOptions options;
  options.request_id = "req-1";
  options.date_line = "Date: Mon, 23 Nov 2026 00:00:00 GMT\r\n";
  options.extra_lines = "RateLimit: \"per-ip\";r=9;t=1\r\n";
  EXPECT_EQ(ClientHead(headers, {BodyKind::kContentLength, 17}, options),
            "HTTP/1.1 200 OK\r\n"
            "Server: nginx\r\n"
            "Date: Sun, 22 Nov 2026 10:00:00 GMT\r\n"
            "Content-Type: application/json\r\n"
            "Cache-Control: no-store\r\n"
            "Content-Length: 17\r\n"
            "X-Request-Id: req-1\r\n"
            "RateLimit: \"per-ip\";r=9;t=1\r\n"
            "\r\n");
}

TEST(ClientResponseHeadTest, ChunkedUpstreamToHttp11ClientStaysChunked) {
  const std::vector<Header> headers = {
      {"Transfer-Encoding", "chunked"}, {"Trailer", "X-Sum"}, {"Content-Type", "text/plain"}};
  EXPECT_EQ(ClientHead(headers, {BodyKind::kChunked}, {}),
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain\r\n"
            "Transfer-Encoding: chunked\r\n"
            "\r\n");
}

TEST(ClientResponseHeadTest, Http10ClientGetsACloseDelimitedBody) {
  const std::vector<Header> headers = {{"Transfer-Encoding", "chunked"},
                                       {"Content-Type", "text/plain"}};
  ClientResponseOptions options;
  options.client_version_minor = 0;
  EXPECT_EQ(ClientHead(headers, {BodyKind::kUntilClose}, options),
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain\r\n"
            "Connection: close\r\n"
            "\r\n");
}

TEST(ClientResponseHeadTest, ConnectionReflectsTheClientConnection) {
  ClientResponseOptions options;
  options.client_version_minor = 0;
  EXPECT_EQ(ClientHead({}, {BodyKind::kContentLength, 0}, options),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n");
  options.close = true;
  EXPECT_EQ(ClientHead({}, {BodyKind::kContentLength, 0}, options),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  options.client_version_minor = 1;
  EXPECT_EQ(ClientHead({}, {BodyKind::kContentLength, 0}, options),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  options.close = false;
  EXPECT_EQ(ClientHead({}, {BodyKind::kContentLength, 0}, options),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
}

TEST(ClientResponseHeadTest, UpstreamConnectionTokensAndHopByHopFieldsAreRemoved) {
  const std::vector<Header> headers = {{"Connection", "X-Internal, close"},
                                       {"X-Internal", "secret"},
                                       {"Upgrade", "h2c"},
                                       {"Proxy-Authenticate", "Basic"},
                                       {"connection", "X-Debug"},
                                       {"x-debug", "1"},
                                       {"X-Public", "yes"}};
  EXPECT_EQ(ClientHead(headers, {BodyKind::kContentLength, 0}, {}),
            "HTTP/1.1 200 OK\r\nX-Public: yes\r\nContent-Length: 0\r\n\r\n");
}

TEST(ClientResponseHeadTest, DateAndRequestIdAddedOnlyWhereMissing) {
  ClientResponseOptions options;
  options.date_line = "Date: Mon, 23 Nov 2026 00:00:00 GMT\r\n";
  options.request_id = "req-1";
  // The upstream's X-Request-Id gives way to the request's; its missing Date is added.
  EXPECT_EQ(
      ClientHead({{"X-Request-Id", "upstream-own"}}, {BodyKind::kNone}, options, 204, "No Content"),
      "HTTP/1.1 204 No Content\r\n"
      "Date: Mon, 23 Nov 2026 00:00:00 GMT\r\n"
      "X-Request-Id: req-1\r\n"
      "\r\n");
  // Without a request id to give, the upstream's stays.
  options.request_id = {};
  options.date_line = {};
  EXPECT_EQ(
      ClientHead({{"X-Request-Id", "upstream-own"}}, {BodyKind::kNone}, options, 204, "No Content"),
      "HTTP/1.1 204 No Content\r\nX-Request-Id: upstream-own\r\n\r\n");
}

TEST(ClientResponseHeadTest, EmptyReasonKeepsItsSpaceAndViaNamesTheUpstreamVersion) {
  UpstreamResponse response;
  response.status = 503;
  response.version_minor = 0;
  std::string out;
  ClientResponseOptions options;
  options.via = true;
  AppendClientResponseHead(response, {BodyKind::kUntilClose}, options, out);
  EXPECT_EQ(out, "HTTP/1.1 503 \r\nConnection: close\r\nVia: 1.0 sluice\r\n\r\n");
}

TEST(ClientResponseHeadTest, HeadResponseKeepsTheRepresentationLength) {
  EXPECT_EQ(ClientHead({{"Content-Length", "1234"}}, {BodyKind::kContentLength, 1234}, {}),
            "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
}

TEST(ClientResponseHeadTest, MalformedUpstreamFieldsAreCleanedAsRfc9112Asks) {
  // What libhttp-parser hands over for "X-A : 1", " X-B: 2" (white space first on
  // the line), "X C: 3", and an obs-fold.
  const std::vector<Header> headers = {
      {"X-A ", "1"}, {" X-B", "2"}, {"X C", "3"}, {"X-Fold", "one\r\n two"}, {"X-Tail", "4 \t"}};
  EXPECT_EQ(ClientHead(headers, {BodyKind::kContentLength, 0}, {}),
            "HTTP/1.1 200 OK\r\n"
            "X-A: 1\r\n"
            "X-Fold: one   two\r\n"
            "X-Tail: 4\r\n"
            "Content-Length: 0\r\n"
            "\r\n");
}

TEST(ClientResponseHeadTest, LineBreaksInLongValuesBecomeSpacesAtEveryPosition) {
  // Values are copied 16 bytes at a time with a byte loop for the rest: a CR or LF at
  // any position of a block or of the tail is replaced, and nothing else changes.
  for (size_t length : {15u, 16u, 17u, 31u, 32u, 33u, 47u}) {
    for (size_t at = 0; at < length; ++at) {
      for (char line_break : {'\r', '\n'}) {
        std::string value;
        for (size_t i = 0; i < length; ++i) value += static_cast<char>('a' + i % 26);
        value[0] = 'v';  // not white space: TrimOws keeps the ends
        value[length - 1] = 'w';
        std::string expected = value;
        if (at > 0 && at + 1 < length) {
          value[at] = line_break;
          expected[at] = ' ';
        }
        const std::string head = ClientHead({{"X-Long", value}}, {BodyKind::kContentLength, 0}, {});
        EXPECT_EQ(head, "HTTP/1.1 200 OK\r\nX-Long: " + expected + "\r\nContent-Length: 0\r\n\r\n")
            << length << " " << at;
      }
    }
  }
}

TEST(ClientResponseHeadTest, ManyConnectionOptionsAreStillHonoured) {
  // Past kMaxConnectionOptions the fields are scanned instead of the gathered tokens.
  std::vector<std::string> names;
  std::string options = "close";
  for (size_t i = 0; i < kMaxConnectionOptions + 4; ++i) {
    names.push_back("X-Hop-" + std::to_string(i));
    options += ", " + names.back();
  }
  std::vector<Header> headers = {{"Connection", options}};
  for (const std::string& name : names) headers.push_back({name, "1"});
  headers.push_back({"X-Kept", "2"});
  EXPECT_EQ(ClientHead(headers, {BodyKind::kContentLength, 0}, {}),
            "HTTP/1.1 200 OK\r\nX-Kept: 2\r\nContent-Length: 0\r\n\r\n");
}

TEST(UpstreamRequestHeadTest, FieldsPastTheCachedOnesAreHandledAlike) {
  // The server hands over at most 100 fields; a longer list still works.
  TestRequest request("GET", "/");
  request.Header("Host", "a").Header("Connection", "X-Hop");
  std::string expected = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 200; ++i) {
    request.Header("X-" + std::to_string(i), std::to_string(i));
    expected += "X-" + std::to_string(i) + ": " + std::to_string(i) + "\r\n";
  }
  request.Header("X-Hop", "1").Header("Keep-Alive", "timeout=5").Header("X-Last", "z");
  expected +=
      "X-Last: z\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: http\r\n"
      "X-Forwarded-Host: a\r\nX-Request-Id: req-1\r\n\r\n";
  EXPECT_EQ(UpstreamHead(request, Options()), expected);
}

// --- Smuggling checks, on requests built by hand --------------------------------------

TEST(CheckRequestFramingTest, BenignRequestsAreAccepted) {
  RequestFraming f = CheckRequestFraming(TestRequest().Header("Host", "a").View());
  EXPECT_TRUE(f.ok());
  EXPECT_EQ(f.body.kind, BodyKind::kNone);

  struct Case {
    std::string name, value;
    BodyKind kind;
    uint64_t length;
  };
  const Case cases[] = {
      {"Content-Length", "5", BodyKind::kContentLength, 5},
      {"content-length", "0", BodyKind::kContentLength, 0},
      {"Content-Length", " 005 ", BodyKind::kContentLength, 5},
      {"Content-Length", "18446744073709551615", BodyKind::kContentLength, UINT64_MAX},
      {"Transfer-Encoding", "chunked", BodyKind::kChunked, 0},
      {"transfer-encoding", "Chunked", BodyKind::kChunked, 0},
      {"Transfer-Encoding", "\tchunked ", BodyKind::kChunked, 0},
  };
  for (const Case& c : cases) {
    f = CheckRequestFraming(
        TestRequest("POST", "/").Header("Host", "a").Header(c.name, c.value).View());
    EXPECT_TRUE(f.ok()) << c.name << ": " << c.value << " -> " << RefusalName(f.refusal);
    EXPECT_EQ(f.body.kind, c.kind) << c.value;
    EXPECT_EQ(f.body.length, c.length) << c.value;
  }
  // HTTP/1.0 with a length; a Connection field with a few options.
  EXPECT_TRUE(
      CheckRequestFraming(TestRequest("POST", "/").Http10().Header("Content-Length", "3").View())
          .ok());
  EXPECT_TRUE(CheckRequestFraming(TestRequest()
                                      .Header("Host", "a")
                                      .Header("Connection", "keep-alive, Upgrade, HTTP2-Settings")
                                      .View())
                  .ok());
}

TEST(CheckRequestFramingTest, ContentLengthWithTransferEncodingIsRefused) {
  EXPECT_EQ(Refusal(TestRequest("POST", "/")
                        .Header("Content-Length", "5")
                        .Header("Transfer-Encoding", "chunked")),
            RequestRefusal::kContentLengthAndTransferEncoding);
  EXPECT_EQ(Refusal(TestRequest("POST", "/")
                        .Header("Transfer-Encoding", "chunked")
                        .Header("Content-Length", "0")),
            RequestRefusal::kContentLengthAndTransferEncoding);
}

TEST(CheckRequestFramingTest, RepeatedContentLengthIsRefusedEvenWhenIdentical) {
  EXPECT_EQ(
      Refusal(TestRequest("POST", "/").Header("Content-Length", "5").Header("Content-Length", "6")),
      RequestRefusal::kRepeatedContentLength);
  EXPECT_EQ(
      Refusal(TestRequest("POST", "/").Header("Content-Length", "5").Header("content-length", "5")),
      RequestRefusal::kRepeatedContentLength);
}

TEST(CheckRequestFramingTest, ContentLengthThatIsNotAPlainDecimalIsRefused) {
  for (const char* value : {"+5", "-5", "0x5", "5a", "5, 5", "5 5", "", " ", "1e3", "٥",
                            "18446744073709551616", "99999999999999999999999"}) {
    EXPECT_EQ(Refusal(TestRequest("POST", "/").Header("Content-Length", value)),
              RequestRefusal::kInvalidContentLength)
        << "'" << value << "'";
  }
}

TEST(CheckRequestFramingTest, TransferEncodingNotEndingInOneChunkedIsRefused) {
  for (const char* value :
       {"chunked, identity", "xchunked", "chunkedx", "chunked, chunked", "chunked;q=1", ",chunked",
        "chunked,", "", "identity", "gzip", "chunked, gzip", "\"chunked\"", "chun ked"}) {
    EXPECT_EQ(Refusal(TestRequest("POST", "/").Header("Transfer-Encoding", value)),
              RequestRefusal::kInvalidTransferEncoding)
        << "'" << value << "'";
  }
  // Over several fields the codings are one list.
  EXPECT_EQ(Refusal(TestRequest("POST", "/")
                        .Header("Transfer-Encoding", "chunked")
                        .Header("Transfer-Encoding", "chunked")),
            RequestRefusal::kInvalidTransferEncoding);
  EXPECT_EQ(Refusal(TestRequest("POST", "/")
                        .Header("Transfer-Encoding", "chunked")
                        .Header("Transfer-Encoding", "identity")),
            RequestRefusal::kInvalidTransferEncoding);
}

TEST(CheckRequestFramingTest, OtherCodingsBeforeChunkedAreNotImplemented) {
  for (const char* value : {"gzip, chunked", "identity, chunked", "x-custom;p=1, chunked"}) {
    const RequestRefusal refusal =
        Refusal(TestRequest("POST", "/").Header("Transfer-Encoding", value));
    EXPECT_EQ(refusal, RequestRefusal::kUnsupportedTransferCoding) << value;
    EXPECT_EQ(RefusalStatus(refusal), 501);
  }
  EXPECT_EQ(Refusal(TestRequest("POST", "/")
                        .Header("Transfer-Encoding", "identity")
                        .Header("Transfer-Encoding", "chunked")),
            RequestRefusal::kUnsupportedTransferCoding);
}

TEST(CheckRequestFramingTest, TransferEncodingInHttp10IsRefused) {
  EXPECT_EQ(Refusal(TestRequest("POST", "/").Http10().Header("Transfer-Encoding", "chunked")),
            RequestRefusal::kTransferEncodingInHttp10);
}

TEST(CheckRequestFramingTest, WhiteSpaceInOrAroundAFieldNameIsRefused) {
  for (const char* name : {"Content-Length ", "Content-Length\t", " Transfer-Encoding", "\tX-A",
                           "X A", "X-A ", "", "X:A"}) {
    EXPECT_EQ(Refusal(TestRequest("POST", "/").Header(name, "5")),
              RequestRefusal::kInvalidFieldName)
        << "'" << name << "'";
  }
}

TEST(CheckRequestFramingTest, LineBreakInAFieldValueIsRefused) {
  // obs-fold as the parser hands it over (CRLF or bare LF kept inside the value).
  for (const char* value : {"one\r\n two", "one\n\ttwo", "one\r\n Content-Length: 5", "a\rb"}) {
    EXPECT_EQ(Refusal(TestRequest().Header("Host", "a").Header("X-A", value)),
              RequestRefusal::kInvalidFieldValue)
        << value;
  }
}

TEST(CheckRequestFramingTest, TooManyConnectionOptionsAreRefused) {
  std::string eight = "a1";
  for (int i = 2; i <= 8; ++i) eight += ", a" + std::to_string(i);
  // Sixteen over two fields, empty elements not counted: accepted.
  EXPECT_TRUE(
      CheckRequestFraming(
          TestRequest().Header("Connection", eight + ",,").Header("Connection", eight).View())
          .ok());
  EXPECT_EQ(
      Refusal(TestRequest().Header("Connection", eight).Header("Connection", eight + ", one-more")),
      RequestRefusal::kTooManyConnectionOptions);
}

TEST(CheckRequestFramingTest, RefusalsHaveAStatusAndADistinctName) {
  const RequestRefusal all[] = {RequestRefusal::kNone,
                                RequestRefusal::kInvalidFieldName,
                                RequestRefusal::kTooManyConnectionOptions,
                                RequestRefusal::kInvalidFieldValue,
                                RequestRefusal::kContentLengthAndTransferEncoding,
                                RequestRefusal::kTransferEncodingInHttp10,
                                RequestRefusal::kRepeatedContentLength,
                                RequestRefusal::kInvalidContentLength,
                                RequestRefusal::kInvalidTransferEncoding,
                                RequestRefusal::kUnsupportedTransferCoding};
  std::vector<std::string_view> names;
  for (RequestRefusal r : all) {
    EXPECT_EQ(RefusalStatus(r), r == RequestRefusal::kUnsupportedTransferCoding ? 501 : 400);
    const std::string_view name = RefusalName(r);
    EXPECT_NE(name, "unknown");
    for (std::string_view seen : names) EXPECT_NE(name, seen);
    names.push_back(name);
  }
}

// --- Smuggling checks, on what a real ServerConnection hands over ---------------------

// One raw request through a ServerConnection on a socketpair: either the connection
// refuses it itself (its libhttp-parser or its own checks: OnProtocolError), or the
// handler sees the first request and runs the check and the head builder on it, as
// the proxy will.
struct Served {
  int protocol_error = 0;                 // the connection's own refusal before dispatching, if any
  int protocol_error_after_dispatch = 0;  // ... or after the handler saw the head
  bool dispatched = false;
  RequestFraming framing;
  std::string upstream_head;  // built only when the check passes
};

class CheckingHandler final : public RequestHandler {
 public:
  void OnRequest(ServerConnection& connection, const Request& request) override {
    if (!served.dispatched) {
      served.dispatched = true;
      served.framing = CheckRequestFraming(request);
      if (served.framing.ok()) {
        AppendUpstreamRequestHead(request, served.framing.body, Options(), served.upstream_head);
      }
    }
    connection.Respond(served.framing.ok() ? 200 : RefusalStatus(served.framing.refusal), "", "",
                       "");
  }
  void OnClose(ServerConnection&) override {}
  void OnProtocolError(ServerConnection&, int status) override {
    int& error = served.dispatched ? served.protocol_error_after_dispatch : served.protocol_error;
    if (error == 0) error = status;
  }
  Served served;
};

Served Serve(std::string_view raw) {
  ManualClock clock(Timestamp{} + std::chrono::seconds(1));
  net::EventLoop loop(clock);
  CheckingHandler handler;
  RequestIdSource ids(42);
  ProtocolLimits limits;
  ConnectionTimeouts timeouts;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) != 0) {
    ADD_FAILURE() << "socketpair";
    return {};
  }
  {
    ServerConnection connection(loop, fds[0], Ip("203.0.113.7"), handler, ids, limits, timeouts);
    connection.Start();
    EXPECT_EQ(write(fds[1], raw.data(), raw.size()), static_cast<ssize_t>(raw.size()));
    connection.OnIoEvent(EPOLLIN);
  }
  close(fds[1]);
  return handler.served;
}

TEST(ServerHandOverTest, LibHttpParserRefusesTheseBeforeTheProxySeesThem) {
  // libhttp-parser 2.9.4 (HPE_UNEXPECTED_CONTENT_LENGTH, HPE_INVALID_CONTENT_LENGTH,
  // HPE_INVALID_HEADER_TOKEN), and the connection's own check for white space before
  // the colon.
  const std::string head = "POST / HTTP/1.1\r\nHost: a\r\n";
  const char* refused[] = {
      "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
      "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
      "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
      "Content-Length: 5, 5\r\n\r\nhello",
      "Content-Length: +5\r\n\r\nhello",
      "Content-Length: 0x5\r\n\r\nhello",
      // libhttp-parser counts any name that starts with Transfer-Encoding as one.
      "Transfer-Encoding-Note: x\r\nContent-Length: 0\r\n\r\n",
      "Content-Length : 5\r\n\r\nhello",
      "Content-Length\t: 5\r\n\r\nhello",
      "X-A : 1\r\n\r\n",
  };
  for (const char* rest : refused) {
    const Served served = Serve(head + rest);
    EXPECT_FALSE(served.dispatched) << rest;
    EXPECT_EQ(served.protocol_error, 400) << rest;
  }
}

TEST(ServerHandOverTest, TheConnectionRefusesWhiteSpaceInNamesAndFoldedValues) {
  // libhttp-parser lets these through: white space first on the first field line (kept
  // in the name: not Transfer-Encoding to the parser, but it may be to an upstream that
  // trims it), inside a name, and obs-fold (the line break handed over inside the
  // value). The connection refuses them before dispatch; CheckRequestFraming would too.
  const char* refused[] = {
      "POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: a\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nX A: 1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n Content-Length: 5\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nX-A: one\n\ttwo\n\n",
  };
  for (const char* raw : refused) {
    const Served served = Serve(raw);
    EXPECT_FALSE(served.dispatched) << raw;
    EXPECT_EQ(served.protocol_error, 400) << raw;
  }
}

TEST(ServerHandOverTest, LibHttpParserRefusesTheseOnlyAfterTheHeadIsDispatched) {
  // libhttp-parser checks that chunked is the final coding (HPE_INVALID_TRANSFER_ENCODING)
  // after on_headers_complete, where the server connection pauses and hands the head
  // to its handler: without the check, the proxy would already have sent it upstream.
  const std::string head = "POST / HTTP/1.1\r\nHost: a\r\n";
  const char* refused[] = {
      "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
      "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
      "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
      "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
      "Transfer-Encoding: identity\r\n\r\nhello",
  };
  for (const char* rest : refused) {
    const Served served = Serve(head + rest);
    EXPECT_TRUE(served.dispatched) << rest;
    EXPECT_EQ(served.framing.refusal, RequestRefusal::kInvalidTransferEncoding) << rest;
    EXPECT_EQ(served.protocol_error_after_dispatch, 400) << rest;
  }
  // The parser's quirk again: a POST with a field named Transfer-Encoding-Note (and no
  // length) passes the check as a request without a body, and the connection then
  // answers 400 itself. A false refusal, not a framing disagreement: the parser does
  // not take such a field for chunked either.
  const Served quirk = Serve(head + "Transfer-Encoding-Note: chunked\r\n\r\n");
  EXPECT_TRUE(quirk.dispatched);
  EXPECT_TRUE(quirk.framing.ok());
  EXPECT_EQ(quirk.framing.body.kind, BodyKind::kNone);
  EXPECT_EQ(quirk.protocol_error_after_dispatch, 400);
}

TEST(ServerHandOverTest, InvalidChunkSizesAreRefusedByTheBodyParser) {
  // The head passes the check; the bad size is caught by the server connection's
  // parser (HPE_INVALID_CHUNK_SIZE) while it reads the body, so the proxy must abandon
  // an upstream request whose body it had begun to stream.
  for (const char* body :
       {"zz\r\nhello\r\n0\r\n\r\n", "-5\r\nhello\r\n0\r\n\r\n", "0x5\r\nhello\r\n0\r\n\r\n",
        "3\r\nhello\r\n0\r\n\r\n", "10000000000000000\r\nhello\r\n0\r\n\r\n"}) {
    const Served served = Serve(
        std::string("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n") + body);
    EXPECT_TRUE(served.dispatched) << body;
    EXPECT_TRUE(served.framing.ok()) << body;
    EXPECT_EQ(served.protocol_error_after_dispatch, 400) << body;
  }
}

TEST(ServerHandOverTest, TheCheckRefusesWhatTheParserLetsThrough) {
  struct Case {
    const char* raw;
    RequestRefusal refusal;
  };
  const Case cases[] = {
      // "chunked" twice over two fields: libhttp-parser de-chunks once.
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
       "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       RequestRefusal::kInvalidTransferEncoding},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n"
       "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       RequestRefusal::kUnsupportedTransferCoding},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
       RequestRefusal::kUnsupportedTransferCoding},
      {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       RequestRefusal::kTransferEncodingInHttp10},
  };
  for (const Case& c : cases) {
    const Served served = Serve(c.raw);
    EXPECT_TRUE(served.dispatched) << c.raw;
    EXPECT_EQ(served.framing.refusal, c.refusal) << c.raw;
  }
}

TEST(ServerHandOverTest, BenignRequestsGoUpstreamCleaned) {
  const Served served = Serve(
      "POST /a?b=1 HTTP/1.1\r\nHost: api.example\r\nConnection: keep-alive, X-Hop\r\n"
      "X-Hop: 1\r\nContent-Length:  005 \r\nX-Request-Id: abc-123\r\n"
      "Accept: */*\r\n\r\nhello");
  ASSERT_TRUE(served.dispatched);
  ASSERT_TRUE(served.framing.ok()) << RefusalName(served.framing.refusal);
  EXPECT_EQ(served.upstream_head,
            "POST /a?b=1 HTTP/1.1\r\n"
            "Host: api.example\r\n"
            "Accept: */*\r\n"
            "Content-Length: 5\r\n"
            "X-Forwarded-For: 203.0.113.7\r\n"
            "X-Forwarded-Proto: http\r\n"
            "X-Forwarded-Host: api.example\r\n"
            "X-Request-Id: abc-123\r\n"
            "\r\n");
  const Served chunked = Serve(
      "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\n");
  ASSERT_TRUE(chunked.framing.ok());
  EXPECT_EQ(chunked.framing.body.kind, BodyKind::kChunked);
  EXPECT_EQ(chunked.protocol_error_after_dispatch, 0);
}

// --- Allocation -----------------------------------------------------------------------

TEST(ProxyHeadersAllocationTest, NothingIsAllocatedOnceTheBufferHasGrown) {
  const net::CidrList trusted({*net::Cidr::Parse("10.0.0.0/8")});
  const TestRequest test_request = TestRequest("POST", "/api/items?id=7")
                                       .Peer("10.0.0.1")
                                       .Header("Host", "api.example.com")
                                       .Header("Connection", "keep-alive, X-Hop")
                                       .Header("X-Hop", "1")
                                       .Header("X-Forwarded-For", "198.51.100.1")
                                       .Header("Content-Length", "5")
                                       .Header("User-Agent", "curl/8.5.0");
  const Request request = test_request.View();
  const std::vector<Header> response_headers = {{"Content-Length", "17"},
                                                {"Connection", "close"},
                                                {"X-Fold", "one\r\n two"},
                                                {"Content-Type", "application/json"}};
  UpstreamResponse response;
  response.headers = response_headers;
  UpstreamRequestOptions request_options = Options();
  request_options.trusted_proxies = &trusted;
  request_options.via = true;
  ClientResponseOptions response_options;
  response_options.request_id = "req-1";
  response_options.date_line = "Date: Mon, 23 Nov 2026 00:00:00 GMT\r\n";

  std::string out;
  out.reserve(4096);
  const size_t capacity = out.capacity();
  const uint64_t before = testing::AllocationCount();
  size_t bytes = 0;
  for (int i = 0; i < 100; ++i) {
    out.clear();
    const RequestFraming framing = CheckRequestFraming(request);
    AppendUpstreamRequestHead(request, framing.body, request_options, out);
    bytes += out.size();
    out.clear();
    AppendClientResponseHead(response, {BodyKind::kContentLength, 17}, response_options, out);
    bytes += out.size();
  }
  const uint64_t after = testing::AllocationCount();
  EXPECT_EQ(after - before, 0u) << "allocations in 100 rounds";
  EXPECT_EQ(out.capacity(), capacity);
  EXPECT_GT(bytes, 0u);
  // The counter sees allocations at all (the replacement operator new is in use).
  auto probe = std::make_unique<std::string>(64, 'x');
  EXPECT_GT(testing::AllocationCount(), after);
}

}  // namespace
TEST(RequestIdSourceTest, TheSeedThenTheCounterAsLowercaseHex) {
  for (const uint64_t seed :
       {uint64_t{0}, uint64_t{0x0123456789abcdef}, uint64_t{0xfedcba9876543210}, ~uint64_t{0},
        uint64_t{0x8000000000000001}}) {
    RequestIdSource ids(seed);
    char seed_hex[17];
    std::snprintf(seed_hex, sizeof(seed_hex), "%016llx", static_cast<unsigned long long>(seed));
    for (unsigned long long counter = 1; counter <= 300; ++counter) {
      char id[RequestIdSource::kLength];
      ids.Generate(id);
      char counter_hex[17];
      std::snprintf(counter_hex, sizeof(counter_hex), "%016llx", counter);
      EXPECT_EQ(std::string_view(id, sizeof(id)), std::string(seed_hex) + counter_hex);
    }
  }
}

}  // namespace sluice::http
