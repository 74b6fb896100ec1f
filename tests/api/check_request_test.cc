// The POST /v1/check body parser: every form it accepts, with the values it reads, and
// every refusal with the exact message a client sees (and its position in a batch).
#include "api/check_request.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "sluice/limiter.h"

namespace sluice::api {
namespace {

using config::KeyPartKind;

// Parses `text` with a fresh parser per call; the parser (and the body the views point
// into) live in the fixture so the views stay valid for the test's checks.
class CheckRequestTest : public ::testing::Test {
 protected:
  bool Parse(std::string_view text) {
    body_ = std::string(text);
    return parser_.Parse(body_);
  }
  // The error for a body that must be refused ("" and a test failure if it parsed).
  std::string Error(std::string_view text) {
    if (Parse(text)) {
      ADD_FAILURE() << "parsed, expected a refusal: " << text;
      return "";
    }
    return parser_.error();
  }
  const CheckQuery& Only() {
    EXPECT_EQ(parser_.queries().size(), 1u);
    return parser_.queries()[0];
  }
  std::vector<Descriptor> Descriptors(const CheckQuery& query) {
    const std::span<const Descriptor> d = parser_.descriptors(query);
    return std::vector<Descriptor>(d.begin(), d.end());
  }

  CheckRequestParser parser_;
  std::string body_;
};

void ExpectDescriptor(const Descriptor& d, KeyPartKind kind, std::string_view name,
                      std::string_view value) {
  EXPECT_EQ(static_cast<int>(d.kind), static_cast<int>(kind));
  EXPECT_EQ(d.name, name);
  EXPECT_EQ(d.value, value);
}

constexpr std::string_view kCostMessage =
    "cost must be a whole number from 0 to 4611686018427387904, got ";

// --- Accepted forms ---------------------------------------------------------------------

TEST_F(CheckRequestTest, RuleAndKeyWithDefaultCost) {
  ASSERT_TRUE(Parse(R"({"rule": "api-per-key", "key": "k-123"})")) << parser_.error();
  EXPECT_FALSE(parser_.batch());
  EXPECT_TRUE(parser_.error().empty());
  const CheckQuery& q = Only();
  EXPECT_TRUE(q.by_rule);
  EXPECT_EQ(q.rule, "api-per-key");
  EXPECT_EQ(q.key, "k-123");
  EXPECT_EQ(q.cost, 1u);
  EXPECT_EQ(q.descriptor_count, 0u);
  EXPECT_TRUE(parser_.descriptors(q).empty());
}

TEST_F(CheckRequestTest, FieldOrderIsIrrelevant) {
  ASSERT_TRUE(Parse(R"({"cost": 3, "key": "k", "rule": "r"})")) << parser_.error();
  const CheckQuery& q = Only();
  EXPECT_TRUE(q.by_rule);
  EXPECT_EQ(q.rule, "r");
  EXPECT_EQ(q.key, "k");
  EXPECT_EQ(q.cost, 3u);

  ASSERT_TRUE(Parse(R"({"cost": 2, "descriptors": {"method": "GET", "ip": "10.0.0.1"}})"))
      << parser_.error();
  const CheckQuery& d = Only();
  EXPECT_FALSE(d.by_rule);
  EXPECT_EQ(d.cost, 2u);
  const std::vector<Descriptor> ds = Descriptors(d);
  ASSERT_EQ(ds.size(), 2u);
  ExpectDescriptor(ds[0], KeyPartKind::kMethod, "", "GET");  // in the order written
  ExpectDescriptor(ds[1], KeyPartKind::kIp, "", "10.0.0.1");
}

TEST_F(CheckRequestTest, CostZeroOneAndTheMaximum) {
  ASSERT_TRUE(Parse(R"({"rule": "r", "key": "k", "cost": 0})")) << parser_.error();
  EXPECT_EQ(Only().cost, 0u);
  ASSERT_TRUE(Parse(R"({"rule": "r", "key": "k", "cost": 1})")) << parser_.error();
  EXPECT_EQ(Only().cost, 1u);
  ASSERT_TRUE(Parse(R"({"rule": "r", "key": "k", "cost": 4611686018427387904})"))
      << parser_.error();
  EXPECT_EQ(Only().cost, kMaxQuantity);
  EXPECT_EQ(Only().cost, uint64_t{1} << 62);
  // simdjson reads -0 as the integer 0.
  ASSERT_TRUE(Parse(R"({"rule": "r", "key": "k", "cost": -0})")) << parser_.error();
  EXPECT_EQ(Only().cost, 0u);
}

TEST_F(CheckRequestTest, EveryDescriptorName) {
  ASSERT_TRUE(Parse(R"({"descriptors": {
      "ip": "203.0.113.7",
      "authorization": "Bearer t-1",
      "path": "/api/x",
      "method": "POST",
      "host": "api.example.com:8443",
      "header:X-Api-Key": "k-123",
      "query:api_key": "q-9"
  }})"))
      << parser_.error();
  const CheckQuery& q = Only();
  EXPECT_FALSE(q.by_rule);
  EXPECT_TRUE(q.rule.empty());
  EXPECT_TRUE(q.key.empty());
  EXPECT_EQ(q.cost, 1u);
  EXPECT_EQ(q.first_descriptor, 0u);
  EXPECT_EQ(q.descriptor_count, 7u);
  const std::vector<Descriptor> d = Descriptors(q);
  ASSERT_EQ(d.size(), 7u);
  ExpectDescriptor(d[0], KeyPartKind::kIp, "", "203.0.113.7");
  ExpectDescriptor(d[1], KeyPartKind::kAuthorization, "", "Bearer t-1");
  ExpectDescriptor(d[2], KeyPartKind::kPath, "", "/api/x");
  ExpectDescriptor(d[3], KeyPartKind::kMethod, "", "POST");
  ExpectDescriptor(d[4], KeyPartKind::kHost, "", "api.example.com:8443");  // as written
  ExpectDescriptor(d[5], KeyPartKind::kHeader, "X-Api-Key", "k-123");      // case kept
  ExpectDescriptor(d[6], KeyPartKind::kQuery, "api_key", "q-9");
}

TEST_F(CheckRequestTest, IpDescriptorTakesIpv6) {
  ASSERT_TRUE(Parse(R"({"descriptors": {"ip": "2001:db8::7"}})")) << parser_.error();
  const std::vector<Descriptor> d = Descriptors(Only());
  ASSERT_EQ(d.size(), 1u);
  ExpectDescriptor(d[0], KeyPartKind::kIp, "", "2001:db8::7");
}

TEST_F(CheckRequestTest, EmptyDescriptorsObjectIsAQueryWithoutParts) {
  ASSERT_TRUE(Parse(R"({"descriptors": {}, "cost": 5})")) << parser_.error();
  const CheckQuery& q = Only();
  EXPECT_FALSE(q.by_rule);
  EXPECT_EQ(q.descriptor_count, 0u);
  EXPECT_EQ(q.cost, 5u);
}

TEST_F(CheckRequestTest, DescriptorValuesMayBeEmpty) {
  // An empty value is a key part the gate treats as missing, as for a request.
  ASSERT_TRUE(Parse(R"({"descriptors": {"header:x-a": "", "query:q": ""}})")) << parser_.error();
  const std::vector<Descriptor> d = Descriptors(Only());
  ASSERT_EQ(d.size(), 2u);
  ExpectDescriptor(d[0], KeyPartKind::kHeader, "x-a", "");
  ExpectDescriptor(d[1], KeyPartKind::kQuery, "q", "");
}

TEST_F(CheckRequestTest, EscapesAndUnicodeAreDecoded) {
  ASSERT_TRUE(Parse(R"({"rule": "r\u00e9gle", "key": "a\"b\\c\/d\n\t\ud83d\ude00"})"))
      << parser_.error();
  EXPECT_EQ(Only().rule, "r\xc3\xa9gle");
  EXPECT_EQ(Only().key, "a\"b\\c/d\n\t\xf0\x9f\x98\x80");

  // Raw UTF-8 passes through; escapes in descriptor names are decoded before the name is
  // read ("header:X\u002dA" is header:X-A).
  ASSERT_TRUE(
      Parse("{\"descriptors\": {\"header:X\\u002dA\": \"caf\xc3\xa9\", "
            "\"query:k\\u00e9y\": \"v\\u0000w\", \"path\": \"/\\u0061pi\"}}"))
      << parser_.error();
  const std::vector<Descriptor> d = Descriptors(Only());
  ASSERT_EQ(d.size(), 3u);
  ExpectDescriptor(d[0], KeyPartKind::kHeader, "X-A", "caf\xc3\xa9");
  ExpectDescriptor(d[1], KeyPartKind::kQuery, "k\xc3\xa9y", std::string_view("v\0w", 3));
  ExpectDescriptor(d[2], KeyPartKind::kPath, "", "/api");
}

TEST_F(CheckRequestTest, QueryNamesAreCaseSensitiveSoBothCasesAreKept) {
  ASSERT_TRUE(Parse(R"({"descriptors": {"query:a": "1", "query:A": "2"}})")) << parser_.error();
  const std::vector<Descriptor> d = Descriptors(Only());
  ASSERT_EQ(d.size(), 2u);
  ExpectDescriptor(d[0], KeyPartKind::kQuery, "a", "1");
  ExpectDescriptor(d[1], KeyPartKind::kQuery, "A", "2");
}

TEST_F(CheckRequestTest, SameHeaderNameInTwoQueriesOfABatchIsNoDuplicate) {
  ASSERT_TRUE(Parse(R"([{"descriptors": {"header:x-a": "1"}},
                        {"descriptors": {"header:X-A": "2"}}])"))
      << parser_.error();
  ASSERT_EQ(parser_.queries().size(), 2u);
}

TEST_F(CheckRequestTest, BatchOfMixedForms) {
  ASSERT_TRUE(Parse(R"([
      {"rule": "r1", "key": "k1"},
      {"descriptors": {"ip": "10.0.0.1", "header:x-api-key": "a"}, "cost": 2},
      {"key": "k3", "rule": "r3", "cost": 0},
      {"descriptors": {"path": "/p"}}
  ])"))
      << parser_.error();
  EXPECT_TRUE(parser_.batch());
  const std::span<const CheckQuery> q = parser_.queries();
  ASSERT_EQ(q.size(), 4u);

  EXPECT_TRUE(q[0].by_rule);
  EXPECT_EQ(q[0].rule, "r1");
  EXPECT_EQ(q[0].key, "k1");
  EXPECT_EQ(q[0].cost, 1u);
  EXPECT_EQ(q[0].descriptor_count, 0u);

  EXPECT_FALSE(q[1].by_rule);
  EXPECT_EQ(q[1].cost, 2u);
  std::vector<Descriptor> d = Descriptors(q[1]);
  ASSERT_EQ(d.size(), 2u);
  ExpectDescriptor(d[0], KeyPartKind::kIp, "", "10.0.0.1");
  ExpectDescriptor(d[1], KeyPartKind::kHeader, "x-api-key", "a");

  EXPECT_TRUE(q[2].by_rule);
  EXPECT_EQ(q[2].rule, "r3");
  EXPECT_EQ(q[2].key, "k3");
  EXPECT_EQ(q[2].cost, 0u);

  EXPECT_FALSE(q[3].by_rule);
  EXPECT_EQ(q[3].first_descriptor, 2u);  // after the second query's two
  d = Descriptors(q[3]);
  ASSERT_EQ(d.size(), 1u);
  ExpectDescriptor(d[0], KeyPartKind::kPath, "", "/p");
}

TEST_F(CheckRequestTest, BatchOfOneIsStillABatch) {
  ASSERT_TRUE(Parse(R"([{"rule": "r", "key": "k"}])")) << parser_.error();
  EXPECT_TRUE(parser_.batch());
  EXPECT_EQ(Only().rule, "r");
}

TEST_F(CheckRequestTest, BatchOfExactlyTheMaximum) {
  std::string body = "[";
  for (size_t i = 0; i < CheckRequestParser::kMaxBatch; ++i) {
    if (i > 0) body += ',';
    body += R"({"rule":"r","key":"k)" + std::to_string(i) + R"("})";
  }
  body += ']';
  ASSERT_TRUE(Parse(body)) << parser_.error();
  ASSERT_EQ(parser_.queries().size(), 1000u);
  EXPECT_EQ(parser_.queries()[999].key, "k999");
}

TEST_F(CheckRequestTest, WhiteSpaceAroundTheBody) {
  ASSERT_TRUE(Parse(" \r\n\t{\"rule\":\"r\",\"key\":\"k\"}\n ")) << parser_.error();
  EXPECT_EQ(Only().key, "k");
}

// --- Refusals ---------------------------------------------------------------------------

TEST_F(CheckRequestTest, MalformedJson) {
  const std::string structure =
      "malformed JSON: The JSON document has an improper structure: missing or superfluous "
      "commas, braces, missing keys, etc.";
  EXPECT_EQ(Error("{"), structure);
  EXPECT_EQ(Error("["), structure);
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k",})"), structure);
  EXPECT_EQ(Error(R"({"rule": "r"} x)"), structure);
  EXPECT_EQ(Error(""), "malformed JSON: Empty: no JSON found");
  EXPECT_EQ(Error("  \n"), "malformed JSON: Empty: no JSON found");
  EXPECT_EQ(Error("nul"),
            "malformed JSON: Problem while parsing an atom starting with the letter 'n'");
  EXPECT_EQ(Error("{\"rule\": \"\xc3\", \"key\": \"k\"}"),
            "malformed JSON: The input is not valid UTF-8");
  EXPECT_FALSE(parser_.batch());
}

TEST_F(CheckRequestTest, NotAnObject) {
  EXPECT_EQ(Error("42"), "expected an object with rule and key, or with descriptors; got a number");
  EXPECT_EQ(Error(R"("rule")"),
            "expected an object with rule and key, or with descriptors; got a string");
  EXPECT_EQ(Error("null"), "expected an object with rule and key, or with descriptors; got null");
  EXPECT_EQ(Error("true"),
            "expected an object with rule and key, or with descriptors; got a boolean");
  // In a batch: named by position.
  EXPECT_EQ(Error(R"([{"rule": "r", "key": "k"}, [1]])"),
            "query 1: expected an object with rule and key, or with descriptors; got an array");
}

TEST_F(CheckRequestTest, EmptyBatch) {
  EXPECT_EQ(Error("[]"), "an empty batch: expected at least one query");
  EXPECT_EQ(Error(" [ ] "), "an empty batch: expected at least one query");
}

TEST_F(CheckRequestTest, BatchOverTheMaximum) {
  std::string body = "[";
  for (size_t i = 0; i <= CheckRequestParser::kMaxBatch; ++i) {
    if (i > 0) body += ',';
    body += R"({"rule":"r","key":"k"})";
  }
  body += ']';
  EXPECT_EQ(Error(body), "a batch of 1001 queries; at most 1000 in one request");
}

TEST_F(CheckRequestTest, UnknownField) {
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "weight": 1})"),
            R"(unknown field "weight"; expected rule, key, descriptors or cost)");
  EXPECT_EQ(Error(R"({"Rule": "r", "key": "k"})"),
            R"(unknown field "Rule"; expected rule, key, descriptors or cost)");
  // A long name is cut short in the message.
  const std::string long_name(100, 'x');
  EXPECT_EQ(
      Error(R"({")" + long_name + R"(": 1})"),
      "unknown field \"" + std::string(64, 'x') + "...\"; expected rule, key, descriptors or cost");
}

TEST_F(CheckRequestTest, FieldGivenTwice) {
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "rule": "s"})"), "field rule given twice");
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "key": "k"})"), "field key given twice");
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "cost": 1, "cost": 1})"), "field cost given twice");
  EXPECT_EQ(Error(R"({"descriptors": {"ip": "10.0.0.1"}, "descriptors": {"ip": "10.0.0.1"}})"),
            "field descriptors given twice");
}

TEST_F(CheckRequestTest, RuleAndKeyNeedEachOther) {
  EXPECT_EQ(Error(R"({"rule": "r"})"), "rule needs key: the client key to check it for");
  EXPECT_EQ(Error(R"({"key": "k", "cost": 2})"), "key needs rule: the rule to check it against");
  // A missing partner is named before the clash with descriptors.
  EXPECT_EQ(Error(R"({"rule": "r", "descriptors": {}})"),
            "rule needs key: the client key to check it for");
}

TEST_F(CheckRequestTest, BothFormsOrNeither) {
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "descriptors": {"ip": "10.0.0.1"}})"),
            "either rule and key, or descriptors, not both");
  EXPECT_EQ(Error("{}"), "expected rule and key, or descriptors");
  EXPECT_EQ(Error(R"({"cost": 1})"), "expected rule and key, or descriptors");
}

TEST_F(CheckRequestTest, WrongTypes) {
  EXPECT_EQ(Error(R"({"rule": 1, "key": "k"})"), "rule must be a string, got a number");
  EXPECT_EQ(Error(R"({"rule": "r", "key": null})"), "key must be a string, got null");
  EXPECT_EQ(Error(R"({"rule": ["r"], "key": "k"})"), "rule must be a string, got an array");
  EXPECT_EQ(Error(R"({"rule": "r", "key": {"k": 1}})"), "key must be a string, got an object");
  EXPECT_EQ(Error(R"({"rule": "r", "key": false})"), "key must be a string, got a boolean");
  EXPECT_EQ(Error(R"({"descriptors": ["ip", "10.0.0.1"]})"),
            "descriptors must be an object of strings, got an array");
  EXPECT_EQ(Error(R"({"descriptors": "ip=10.0.0.1"})"),
            "descriptors must be an object of strings, got a string");
  EXPECT_EQ(Error(R"({"descriptors": null})"),
            "descriptors must be an object of strings, got null");
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "cost": "1"})"),
            std::string(kCostMessage) + "\"1\"");
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "cost": true})"),
            std::string(kCostMessage) + "true");
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "cost": null})"),
            std::string(kCostMessage) + "null");
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "cost": [1, 2]})"),
            std::string(kCostMessage) + "[1,2]");
}

TEST_F(CheckRequestTest, EmptyRuleOrKey) {
  EXPECT_EQ(Error(R"({"rule": "", "key": "k"})"), "rule must not be empty");
  EXPECT_EQ(Error(R"({"rule": "r", "key": ""})"), "key must not be empty");
}

TEST_F(CheckRequestTest, CostOutOfDomain) {
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "cost": -1})"), std::string(kCostMessage) + "-1");
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "cost": 1.5})"), std::string(kCostMessage) + "1.5");
  // A whole number written as a float is still a float.
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "cost": 1.0})"), std::string(kCostMessage) + "1.0");
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "cost": 1e3})"),
            std::string(kCostMessage) + "1000.0");
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "cost": 4611686018427387905})"),
            std::string(kCostMessage) + "4611686018427387905");
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "cost": 18446744073709551615})"),
            std::string(kCostMessage) + "18446744073709551615");
  // Past 64 bits simdjson itself refuses the number.
  EXPECT_EQ(Error(R"({"rule": "r", "key": "k", "cost": 18446744073709551616})"),
            "malformed JSON: Problem while parsing a number");
}

TEST_F(CheckRequestTest, DescriptorValueNotAString) {
  EXPECT_EQ(Error(R"({"descriptors": {"ip": 167772161}})"),
            R"(descriptor "ip" must be a string, got a number)");
  EXPECT_EQ(Error(R"({"descriptors": {"header:x-a": ["1"]}})"),
            R"(descriptor "header:x-a" must be a string, got an array)");
  EXPECT_EQ(Error(R"({"descriptors": {"path": null}})"),
            R"(descriptor "path" must be a string, got null)");
}

TEST_F(CheckRequestTest, UnknownDescriptorName) {
  EXPECT_EQ(Error(R"({"descriptors": {"user": "u"}})"),
            R"(descriptors: unknown key part "user"; expected ip, authorization, path, method, )"
            R"(host, header:NAME or query:NAME)");
  EXPECT_EQ(Error(R"({"descriptors": {"IP": "10.0.0.1"}})"),
            R"(descriptors: unknown key part "IP"; expected ip, authorization, path, method, )"
            R"(host, header:NAME or query:NAME)");
}

TEST_F(CheckRequestTest, BadHeaderName) {
  const std::string expected =
      "descriptors: expected header:NAME with an HTTP header name such as header:x-api-key, got ";
  EXPECT_EQ(Error(R"({"descriptors": {"header:": "v"}})"), expected + "\"header:\"");
  EXPECT_EQ(Error(R"({"descriptors": {"header:x a": "v"}})"), expected + "\"header:x a\"");
  EXPECT_EQ(Error(R"({"descriptors": {"header:x:y": "v"}})"), expected + "\"header:x:y\"");
}

TEST_F(CheckRequestTest, BadQueryName) {
  const std::string expected =
      "descriptors: expected query:NAME with a query parameter name such as query:api_key, got ";
  EXPECT_EQ(Error(R"({"descriptors": {"query:": "v"}})"), expected + "\"query:\"");
  EXPECT_EQ(Error(R"({"descriptors": {"query:a=b": "v"}})"), expected + "\"query:a=b\"");
  EXPECT_EQ(Error(R"({"descriptors": {"query:a&b": "v"}})"), expected + "\"query:a&b\"");
  EXPECT_EQ(Error(R"({"descriptors": {"query:a#": "v"}})"), expected + "\"query:a#\"");
  EXPECT_EQ(Error(R"({"descriptors": {"query:a b": "v"}})"), expected + "\"query:a b\"");
}

TEST_F(CheckRequestTest, IpNotAnAddress) {
  EXPECT_EQ(Error(R"({"descriptors": {"ip": "nope"}})"),
            R"(descriptor ip: "nope" is not an IP address)");
  EXPECT_EQ(Error(R"({"descriptors": {"ip": "256.1.1.1"}})"),
            R"(descriptor ip: "256.1.1.1" is not an IP address)");
  EXPECT_EQ(Error(R"({"descriptors": {"ip": "1.2.3.4:80"}})"),
            R"(descriptor ip: "1.2.3.4:80" is not an IP address)");
  EXPECT_EQ(Error(R"({"descriptors": {"ip": " 1.2.3.4"}})"),
            R"(descriptor ip: " 1.2.3.4" is not an IP address)");
  EXPECT_EQ(Error(R"({"descriptors": {"ip": ""}})"), R"(descriptor ip: "" is not an IP address)");
}

TEST_F(CheckRequestTest, DuplicateDescriptor) {
  EXPECT_EQ(Error(R"({"descriptors": {"ip": "10.0.0.1", "ip": "10.0.0.2"}})"),
            R"(descriptor "ip" given twice)");
  EXPECT_EQ(Error(R"({"descriptors": {"path": "/a", "method": "GET", "path": "/b"}})"),
            R"(descriptor "path" given twice)");
  // Header names are case-insensitive: the second spelling is the same field.
  EXPECT_EQ(Error(R"({"descriptors": {"header:X-A": "1", "header:x-a": "2"}})"),
            R"(descriptor "header:x-a" given twice)");
  EXPECT_EQ(Error(R"({"descriptors": {"query:a": "1", "query:a": "2"}})"),
            R"(descriptor "query:a" given twice)");
}

TEST_F(CheckRequestTest, ErrorsInABatchNameTheQuery) {
  EXPECT_EQ(Error(R"([{"rule": "r", "key": "k"}, {"descriptors": {}},
                      {"rule": "r"}, {"bogus": 1}])"),
            "query 2: rule needs key: the client key to check it for");
  EXPECT_EQ(Error(R"([{"rule": "", "key": "k"}])"), "query 0: rule must not be empty");
  EXPECT_EQ(Error(R"([{"rule": "r", "key": "k"}, {"rule": "r", "key": "k", "cost": -2}])"),
            std::string("query 1: ") + std::string(kCostMessage) + "-2");
  EXPECT_EQ(Error(R"([{"descriptors": {"ip": "x"}}])"),
            R"(query 0: descriptor ip: "x" is not an IP address)");
  EXPECT_EQ(Error(R"([{"descriptors": {"header:a": "1"}}, {"descriptors": {"nope": "1"}}])"),
            R"(query 1: descriptors: unknown key part "nope"; expected ip, authorization, )"
            R"(path, method, host, header:NAME or query:NAME)");
  EXPECT_EQ(Error(R"([{"rule": "r", "key": "k"}, {"rule": "r", "key": "k", "x": 1}])"),
            R"(query 1: unknown field "x"; expected rule, key, descriptors or cost)");
}

// --- Reuse and the body -----------------------------------------------------------------

TEST_F(CheckRequestTest, ReusedParserKeepsOnlyTheSecondBodysQueries) {
  ASSERT_TRUE(Parse(R"([{"descriptors": {"ip": "10.0.0.1", "path": "/a", "method": "GET"}},
                        {"rule": "r1", "key": "k1"},
                        {"descriptors": {"header:x": "1"}}])"))
      << parser_.error();
  ASSERT_EQ(parser_.queries().size(), 3u);
  ASSERT_TRUE(Parse(R"({"descriptors": {"host": "h"}, "cost": 7})")) << parser_.error();
  EXPECT_FALSE(parser_.batch());
  const CheckQuery& q = Only();
  EXPECT_FALSE(q.by_rule);
  EXPECT_EQ(q.cost, 7u);
  EXPECT_EQ(q.first_descriptor, 0u);
  const std::vector<Descriptor> d = Descriptors(q);
  ASSERT_EQ(d.size(), 1u);
  ExpectDescriptor(d[0], KeyPartKind::kHost, "", "h");

  // A failure clears the previous queries too, and a success clears the previous error.
  EXPECT_EQ(Error(R"({"rule": "r"})"), "rule needs key: the client key to check it for");
  ASSERT_TRUE(Parse(R"({"rule": "r2", "key": "k2"})"));
  EXPECT_TRUE(parser_.error().empty());
  EXPECT_EQ(Only().rule, "r2");
}

TEST_F(CheckRequestTest, FailureLateInABatchFailsTheWholeBody) {
  // (queries() then still holds the queries before the failing one; the header does not
  // promise either way, and the server does not read them after a failure.)
  EXPECT_EQ(Error(R"([{"rule": "r", "key": "k"}, {"descriptors": {"ip": "10.0.0.1"}}, 7])"),
            "query 2: expected an object with rule and key, or with descriptors; got a number");
  EXPECT_TRUE(parser_.batch());
}

TEST_F(CheckRequestTest, ParseLeavesTheBodyTextUnchanged) {
  const std::string text =
      R"([{"rule": "r\u00e9", "key": "a\"b"}, {"descriptors": {"header:X\u002dA": "v\n"}}])";
  std::string body = text;
  body.shrink_to_fit();
  CheckRequestParser parser;
  ASSERT_TRUE(parser.Parse(body)) << parser.error();
  EXPECT_EQ(body, text);
  EXPECT_EQ(body.size(), text.size());
  // The capacity grew for simdjson's padding, so the next parse of this buffer need not.
  EXPECT_GE(body.capacity(), body.size() + simdjson::SIMDJSON_PADDING);

  std::string bad = R"({"rule": "r", "key": 1})";
  const std::string bad_text = bad;
  EXPECT_FALSE(parser.Parse(bad));
  EXPECT_EQ(bad, bad_text);
}

TEST_F(CheckRequestTest, QueriesDoNotDependOnTheBodyBuffer) {
  // The views point into the parser's own buffers: overwriting the body afterwards does
  // not change them.
  std::string body = R"({"rule": "rule-x", "key": "key-y"})";
  CheckRequestParser parser;
  ASSERT_TRUE(parser.Parse(body));
  body.assign(body.size(), '#');
  ASSERT_EQ(parser.queries().size(), 1u);
  EXPECT_EQ(parser.queries()[0].rule, "rule-x");
  EXPECT_EQ(parser.queries()[0].key, "key-y");
}

}  // namespace
}  // namespace sluice::api
