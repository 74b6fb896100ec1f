// The fast head path (src/http/head_parser.h): what it takes it reads exactly as
// libhttp-parser does (checked by head_parser_reference.h), and what it does not take
// it leaves whole to the slow path.
#include "http/head_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "http/head_parser_reference.h"

namespace sluice::http {
namespace {

using testing::DifferenceFromHttpParser;

constexpr size_t kNoLimit = SIZE_MAX;

struct Parsed {
  bool taken = false;
  SimpleHead head;
  std::vector<std::pair<std::string, std::string>> fields;
  std::string difference;  // from libhttp-parser, when taken
};

// Parses `text` placed after a few bytes of something else (offsets are the buffer's).
Parsed Parse(MessageKind kind, std::string_view text, size_t max_length = kNoLimit) {
  const std::string buffer = "prev" + std::string(text);
  HeaderSpans<16> spans;
  Parsed parsed;
  parsed.taken =
      ParseSimpleHead(kind, buffer.data(), 4, buffer.size(), max_length, spans, parsed.head);
  if (!parsed.taken) {
    EXPECT_EQ(spans.size(), 0u) << "a head left to the slow path leaves no fields";
    return parsed;
  }
  std::vector<Header> views(spans.size());
  spans.Views(buffer.data(), views.data());
  for (const Header& h : views) parsed.fields.emplace_back(h.name, h.value);
  parsed.difference = DifferenceFromHttpParser(kind, buffer.data(), 4, parsed.head, spans);
  return parsed;
}

Parsed Request(std::string_view text, size_t max_length = kNoLimit) {
  return Parse(MessageKind::kRequest, text, max_length);
}
Parsed Response(std::string_view text) { return Parse(MessageKind::kResponse, text); }

TEST(HeadParserTest, TakesWrksRequestAndAgreesWithLibhttpParser) {
  const std::string head = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
  const Parsed p = Request(head + "GET /next HTTP/1.1\r\n");
  ASSERT_TRUE(p.taken);
  EXPECT_EQ(p.difference, "");
  EXPECT_EQ(p.head.length, head.size());
  EXPECT_EQ(p.head.method, HTTP_GET);
  EXPECT_EQ(p.head.version_minor, 1);
  EXPECT_EQ(p.head.target.offset, 8u);  // "prev" + "GET "
  EXPECT_EQ(p.head.target.length, 1u);
  EXPECT_FALSE(p.head.content_length.has_value());
  ASSERT_EQ(p.fields.size(), 1u);
  EXPECT_EQ(p.fields[0].first, "Host");
  EXPECT_EQ(p.fields[0].second, "127.0.0.1:8080");
}

TEST(HeadParserTest, TakesEachCommonMethod) {
  const std::pair<std::string_view, int> methods[] = {
      {"GET", HTTP_GET},       {"HEAD", HTTP_HEAD},       {"POST", HTTP_POST},  {"PUT", HTTP_PUT},
      {"DELETE", HTTP_DELETE}, {"OPTIONS", HTTP_OPTIONS}, {"PATCH", HTTP_PATCH}};
  for (const auto& [name, method] : methods) {
    const Parsed p = Request(std::string(name) + " /a/b?c=d&e=%20 HTTP/1.1\r\nHost: h\r\n\r\n");
    ASSERT_TRUE(p.taken) << name;
    EXPECT_EQ(p.difference, "") << name;
    EXPECT_EQ(p.head.method, method) << name;
  }
}

TEST(HeadParserTest, ReadsFramingAndConnectionFields) {
  Parsed p = Request(
      "POST /x HTTP/1.1\r\nhost: h\r\ncontent-length: 0042\r\nConnection: Close\r\n"
      "X-Empty:\r\nX-Inner:  a \t b\r\n\r\n");
  ASSERT_TRUE(p.taken);
  EXPECT_EQ(p.difference, "");
  EXPECT_EQ(p.head.content_length, 42u);
  EXPECT_TRUE(p.head.connection_close);
  ASSERT_EQ(p.fields.size(), 5u);
  EXPECT_EQ(p.fields[3].second, "");
  EXPECT_EQ(p.fields[4].second, "a \t b");

  p = Request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  ASSERT_TRUE(p.taken);
  EXPECT_EQ(p.difference, "");
  EXPECT_EQ(p.head.version_minor, 0);
  EXPECT_TRUE(p.head.connection_keep_alive);
}

TEST(HeadParserTest, TakesNginxsResponseAndAgreesWithLibhttpParser) {
  const std::string head =
      "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 10:00:00 GMT\r\n"
      "Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n";
  const Parsed p = Response(head + "ok");
  ASSERT_TRUE(p.taken);
  EXPECT_EQ(p.difference, "");
  EXPECT_EQ(p.head.length, head.size());
  EXPECT_EQ(p.head.status, 200);
  EXPECT_EQ(p.head.content_length, 2u);
  EXPECT_TRUE(p.head.connection_keep_alive);
  EXPECT_EQ(p.fields.size(), 5u);

  const Parsed not_found = Response("HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
  ASSERT_TRUE(not_found.taken);
  EXPECT_EQ(not_found.difference, "");
  EXPECT_EQ(not_found.head.status, 404);
  EXPECT_EQ(not_found.head.version_minor, 0);
}

TEST(HeadParserTest, LeavesUnusualRequestsToTheSlowPath) {
  const std::string_view heads[] = {
      "GET / HTTP/1.1\r\nHost: h\r\n",                                 // still arriving
      "GET / HTTP/1.1\r\nHost: h\r\n\r",                               // still arriving
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",         // chunked
      "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: ws\r\n\r\n",  // upgrade
      "GET / HTTP/1.1\r\nUpgrade: ws\r\n\r\n",
      "GET / HTTP/1.1\r\nProxy-Connection: close\r\n\r\n",
      // libhttp-parser takes these names for Transfer-Encoding or may: slow path.
      "GET / HTTP/1.1\r\nTransfer-Encodingx: chunked\r\n\r\n",
      "GET / HTTP/1.1\r\nContent-Lengthx: 1\r\n\r\n",
      "GET / HTTP/1.1\r\nConnection-x: close\r\n\r\n",
      "CONNECT h:443 HTTP/1.1\r\n\r\n",  // other methods
      "PROPFIND / HTTP/1.1\r\n\r\n",
      "get / HTTP/1.1\r\n\r\n",
      "GET http://h/ HTTP/1.1\r\n\r\n",  // absolute form
      "OPTIONS * HTTP/1.1\r\n\r\n",      // asterisk form
      "GET /a#b HTTP/1.1\r\n\r\n",       // odd target bytes
      "GET /a\"b HTTP/1.1\r\n\r\n",
      "GET  / HTTP/1.1\r\n\r\n",  // spacing
      "GET / HTTP/2.0\r\n\r\n",   // versions
      "GET / HTTP/1.2\r\n\r\n",
      "GET / HTTP/1.1\n\n",  // bare LF
      "GET / HTTP/1.1\r\nA: b\n\r\n",
      "GET / HTTP/1.1\r\nA: b \r\n\r\n",         // trailing white space
      "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",    // obs-fold
      "GET / HTTP/1.1\r\nA: \xe9t\xe9\r\n\r\n",  // obs-text
      "GET / HTTP/1.1\r\nA : b\r\n\r\n",         // white space in a name
      "GET / HTTP/1.1\r\n: b\r\n\r\n",           // no name
      "GET / HTTP/1.1\r\nA\r\n\r\n",             // no colon
      "GET / HTTP/1.1\r\nA: b\0c\r\n\r\n",       // control bytes
      "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n",
      "GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n",
      "GET / HTTP/1.1\r\nConnection: close\r\nConnection: close\r\n\r\n",
  };
  for (const std::string_view head : heads) {
    EXPECT_FALSE(Request(std::string(head)).taken) << head;
  }
}

TEST(HeadParserTest, LeavesUnusualResponsesToTheSlowPath) {
  const std::string_view heads[] = {
      "HTTP/1.1 200 OK\r\n\r\n",  // to the close
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
      "HTTP/1.1 100 Continue\r\n\r\n",  // no body rules
      "HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
      "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",  // no reason
      "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 600 X\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 2000 X\r\nContent-Length: 0\r\n\r\n",
      "HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",  // still arriving
  };
  for (const std::string_view head : heads) {
    EXPECT_FALSE(Response(std::string(head)).taken) << head;
  }
}

TEST(HeadParserTest, LeavesHeadsOverTheLimitOrWithTooManyFields) {
  const std::string head = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
  EXPECT_TRUE(Request(head, head.size()).taken);
  EXPECT_FALSE(Request(head, head.size() - 1).taken);

  std::string many = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 16; ++i) many += "A" + std::to_string(i) + ": v\r\n";
  EXPECT_TRUE(Request(many + "\r\n").taken);
  EXPECT_FALSE(Request(many + "B: v\r\n\r\n").taken);  // HeaderSpans<16> is full
}

TEST(HeadParserTest, NoProperPrefixOfATakenHeadIsTaken) {
  const std::string head =
      "POST /api?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX-A: b\r\n\r\n";
  ASSERT_TRUE(Request(head).taken);
  for (size_t n = 0; n < head.size(); ++n) {
    EXPECT_FALSE(Request(head.substr(0, n)).taken) << n;
  }
}

// Every single-byte change of a few typical heads: whatever the fast path still takes,
// libhttp-parser reads the same way. (HeadParserOneInput does this with any input.)
TEST(HeadParserTest, AgreesWithLibhttpParserOnEverySingleByteChange) {
  const std::pair<MessageKind, std::string> heads[] = {
      {MessageKind::kRequest,
       "PUT /a/b?c=%41 HTTP/1.1\r\nHost: h:1\r\nContent-Length: 12\r\nConnection: close\r\n"
       "X-Request-Id: abc\r\nAccept: */*\r\n\r\n"},
      {MessageKind::kResponse,
       "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 7\r\nRetry-After: 1\r\n"
       "Connection: keep-alive\r\n\r\n"},
  };
  const std::string replacements = std::string("\r\n :\t\0aZ0/?#%,\x7f\x80", 17);
  int taken = 0;
  for (const auto& [kind, head] : heads) {
    for (size_t at = 0; at < head.size(); ++at) {
      for (const char c : replacements) {
        std::string changed = head;
        changed[at] = c;
        const Parsed p = Parse(kind, changed);
        if (!p.taken) continue;
        ++taken;
        EXPECT_EQ(p.difference, "") << at << " -> " << static_cast<int>(c) << ": " << changed;
      }
    }
  }
  EXPECT_GT(taken, 100);  // the loop checked something
}

}  // namespace
}  // namespace sluice::http
