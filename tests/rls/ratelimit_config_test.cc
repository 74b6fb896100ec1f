// envoyproxy/ratelimit's config format: every feature its README documents loads and
// matches as the service matches it (Examples 1-9 are reproduced below), and every
// class of mistake is reported at its line and column.
#include "rls/ratelimit_config.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

// tests/testing/allocation_counter.cc replaces operator new for the whole binary, which
// AddressSanitizer cannot share (std::stable_sort's nothrow new is not replaced, its
// delete is): the build that links it defines SLUICE_COUNT_ALLOCATIONS, the sanitizer
// build does not.
#ifdef SLUICE_COUNT_ALLOCATIONS
#include "testing/allocation_counter.h"
#endif

namespace sluice::rls {
namespace {

using namespace std::chrono_literals;
using Entries = std::vector<Entry>;

// The YAML in these tests starts on the line after R"( so that line 1 is the first
// line shown; this drops that leading newline.
std::string_view Text(std::string_view yaml) {
  if (!yaml.empty() && yaml.front() == '\n') yaml.remove_prefix(1);
  return yaml;
}

std::string Format(const config::ConfigError& error) {
  if (error.line == 0) return fmt::format("{}: {}", error.file, error.message);
  return fmt::format("{}:{}:{}: {}", error.file, error.line, error.column, error.message);
}

std::shared_ptr<const RateLimitConfig> LoadAll(std::vector<Source> sources) {
  const LoadResult result = RateLimitConfig::Load(sources);
  for (const config::ConfigError& error : result.errors) ADD_FAILURE() << Format(error);
  return result.config;
}

std::shared_ptr<const RateLimitConfig> Load(std::string_view yaml) {
  return LoadAll({Source{Text(yaml), "rl.yaml"}});
}

std::vector<std::string> ErrorsOf(const LoadResult& result) {
  EXPECT_EQ(result.config == nullptr, !result.errors.empty());
  std::vector<std::string> lines;
  for (const config::ConfigError& error : result.errors) lines.push_back(Format(error));
  return lines;
}

std::vector<std::string> Errors(std::string_view yaml) {
  const Source source{Text(yaml), "rl.yaml"};
  return ErrorsOf(RateLimitConfig::Load(std::span(&source, 1)));
}

using Lines = std::vector<std::string>;

// ---- README examples ----

TEST(RlsMatch, Example1ExactValues) {
  const auto config = Load(R"(
domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit:
      unit: second
      requests_per_unit: 500

  - key: database
    value: default
    rate_limit:
      unit: second
      requests_per_unit: 400
)");
  ASSERT_NE(config, nullptr);
  const RlsLimit* users = config->Match("mongo_cps", Entries{{"database", "users"}});
  ASSERT_NE(users, nullptr);
  EXPECT_EQ(users->requests_per_unit, 500u);
  EXPECT_EQ(users->unit, Unit::kSecond);
  EXPECT_EQ(users->limit, Limit::PerPeriod(500, 1s));
  EXPECT_EQ(users->algorithm, Algorithm::kFixedWindow);
  EXPECT_FALSE(users->unlimited);
  EXPECT_FALSE(users->shadow_mode);
  EXPECT_EQ(users->full_key, "mongo_cps.database_users");
  EXPECT_EQ(users->line, 6);  // the rate_limit block
  EXPECT_EQ(users->column, 7);
  EXPECT_EQ(users->file, "rl.yaml");

  const RlsLimit* fallback = config->Match("mongo_cps", Entries{{"database", "default"}});
  ASSERT_NE(fallback, nullptr);
  EXPECT_EQ(fallback->requests_per_unit, 400u);
  EXPECT_EQ(fallback->full_key, "mongo_cps.database_default");

  // Values are case-sensitive; a value not in the config has no limit.
  EXPECT_EQ(config->Match("mongo_cps", Entries{{"database", "Users"}}), nullptr);
  EXPECT_EQ(config->Match("mongo_cps", Entries{{"database", "orders"}}), nullptr);
  EXPECT_EQ(config->Match("mongo_cps", Entries{{"table", "users"}}), nullptr);
  EXPECT_EQ(config->Match("other_domain", Entries{{"database", "users"}}), nullptr);
  EXPECT_EQ(config->Match("mongo_cps", Entries{}), nullptr);
  EXPECT_EQ(config->limits().size(), 2u);
}

TEST(RlsMatch, Example2NestedAndKeyOnly) {
  const auto config = Load(R"(
domain: messaging
descriptors:
  # Only allow 5 marketing messages a day
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit:
          unit: day
          requests_per_unit: 5

  # Only allow 100 messages a day to any unique phone number
  - key: to_number
    rate_limit:
      unit: day
      requests_per_unit: 100
)");
  ASSERT_NE(config, nullptr);
  const RlsLimit* marketing = config->Match(
      "messaging", Entries{{"message_type", "marketing"}, {"to_number", "2061111111"}});
  ASSERT_NE(marketing, nullptr);
  EXPECT_EQ(marketing->limit, Limit::PerPeriod(5, 24h));
  EXPECT_EQ(marketing->full_key, "messaging.message_type_marketing.to_number");
  // Any number gets the same limit: the nested entry has no value.
  EXPECT_EQ(config->Match("messaging",
                          Entries{{"message_type", "marketing"}, {"to_number", "2062222222"}}),
            marketing);

  const RlsLimit* any_number = config->Match("messaging", Entries{{"to_number", "2061111111"}});
  ASSERT_NE(any_number, nullptr);
  EXPECT_EQ(any_number->requests_per_unit, 100u);
  EXPECT_EQ(any_number->full_key, "messaging.to_number");

  // The placeholder level has no rate_limit of its own.
  EXPECT_EQ(config->Match("messaging", Entries{{"message_type", "marketing"}}), nullptr);
  // Another message type finds no node at the first level.
  EXPECT_EQ(config->Match("messaging",
                          Entries{{"message_type", "transactional"}, {"to_number", "2061111111"}}),
            nullptr);
}

TEST(RlsMatch, Example3KeyValueIsTriedBeforeKeyOnlyWhateverTheOrder) {
  const auto config = Load(R"(
domain: edge_proxy_per_ip
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10

  # Black list IP
  - key: remote_address
    value: 50.0.0.5
    rate_limit:
      unit: second
      requests_per_unit: 0
)");
  ASSERT_NE(config, nullptr);
  const RlsLimit* any = config->Match("edge_proxy_per_ip", Entries{{"remote_address", "50.0.0.1"}});
  ASSERT_NE(any, nullptr);
  EXPECT_EQ(any->requests_per_unit, 10u);
  const RlsLimit* banned =
      config->Match("edge_proxy_per_ip", Entries{{"remote_address", "50.0.0.5"}});
  ASSERT_NE(banned, nullptr);
  // requests_per_unit 0: sluice's algorithms deny everything at limit 0.
  EXPECT_EQ(banned->requests_per_unit, 0u);
  EXPECT_EQ(banned->limit.limit, 0u);
  EXPECT_EQ(banned->full_key, "edge_proxy_per_ip.remote_address_50.0.0.5");
}

TEST(RlsMatch, Example4RequestMustHaveAsManyEntriesAsTheConfigHasLevels) {
  const auto flat = Load(R"(
domain: example4
descriptors:
  - key: key
    value: value
    rate_limit:
      requests_per_unit: 300
      unit: second
)");
  ASSERT_NE(flat, nullptr);
  EXPECT_EQ(flat->Match("example4", Entries{{"key", "value"}, {"subkey", "subvalue"}}), nullptr);
  EXPECT_NE(flat->Match("example4", Entries{{"key", "value"}}), nullptr);

  const auto nested = Load(R"(
domain: example4
descriptors:
  - key: key
    value: value
    descriptors:
      - key: subkey
        rate_limit:
          requests_per_unit: 300
          unit: second
)");
  ASSERT_NE(nested, nullptr);
  const RlsLimit* limit =
      nested->Match("example4", Entries{{"key", "value"}, {"subkey", "subvalue"}});
  ASSERT_NE(limit, nullptr);
  EXPECT_EQ(limit->requests_per_unit, 300u);
  // Fewer entries than levels: the node reached has no rate_limit.
  EXPECT_EQ(nested->Match("example4", Entries{{"key", "value"}}), nullptr);
}

// config_impl.go takes a limit only at the last entry, and stops at the first entry
// that finds no node: a limit on the way down never applies to a longer request.
TEST(RlsMatch, LimitOnlyWhenEveryEntryMatches) {
  const auto config = Load(R"(
domain: d
descriptors:
  - key: tenant
    value: acme
    rate_limit: {unit: minute, requests_per_unit: 1000}
    descriptors:
      - key: user
        value: alice
        rate_limit: {unit: minute, requests_per_unit: 10}
)");
  ASSERT_NE(config, nullptr);
  const RlsLimit* tenant = config->Match("d", Entries{{"tenant", "acme"}});
  ASSERT_NE(tenant, nullptr);
  EXPECT_EQ(tenant->requests_per_unit, 1000u);
  const RlsLimit* alice = config->Match("d", Entries{{"tenant", "acme"}, {"user", "alice"}});
  ASSERT_NE(alice, nullptr);
  EXPECT_EQ(alice->requests_per_unit, 10u);
  EXPECT_EQ(alice->full_key, "d.tenant_acme.user_alice");
  // The second entry finds no node: no limit, not the tenant's.
  EXPECT_EQ(config->Match("d", Entries{{"tenant", "acme"}, {"user", "bob"}}), nullptr);
  // Three entries for two levels: no limit, not alice's.
  EXPECT_EQ(config->Match("d", Entries{{"tenant", "acme"}, {"user", "alice"}, {"path", "/x"}}),
            nullptr);
  // The first entry finds no node.
  EXPECT_EQ(config->Match("d", Entries{{"tenant", "other"}, {"user", "alice"}}), nullptr);
}

TEST(RlsMatch, Example5Unlimited) {
  const auto config = Load(R"(
domain: internal
descriptors:
  - key: ldap
    rate_limit:
      unlimited: true

  - key: azure
    rate_limit:
      unit: minute
      requests_per_unit: 100
)");
  ASSERT_NE(config, nullptr);
  const RlsLimit* ldap = config->Match("internal", Entries{{"ldap", "x"}});
  ASSERT_NE(ldap, nullptr);
  EXPECT_TRUE(ldap->unlimited);
  EXPECT_EQ(ldap->full_key, "internal.ldap");
  const RlsLimit* azure = config->Match("internal", Entries{{"azure", "x"}});
  ASSERT_NE(azure, nullptr);
  EXPECT_FALSE(azure->unlimited);
  EXPECT_EQ(azure->limit, Limit::PerPeriod(100, 60s));
}

TEST(RlsMatch, UnlimitedWithExplicitZeroCountLoads) {
  const auto config = Load(R"(
domain: internal
descriptors:
  - key: ldap
    rate_limit: {unlimited: true, requests_per_unit: 0}
)");
  ASSERT_NE(config, nullptr);
  EXPECT_TRUE(config->Match("internal", Entries{{"ldap", ""}})->unlimited);
}

TEST(RlsMatch, Example6ShadowMode) {
  const auto config = Load(R"(
domain: example6
descriptors:
  - key: service
    descriptors:
      - key: user
        value: user-a
        rate_limit:
          requests_per_unit: 10
          unit: second
        shadow_mode: true
      - key: user
        value: user-b
        rate_limit:
          requests_per_unit: 20
          unit: second
)");
  ASSERT_NE(config, nullptr);
  const RlsLimit* a =
      config->Match("example6", Entries{{"service", "auth-service"}, {"user", "user-a"}});
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(a->shadow_mode);
  EXPECT_EQ(a->requests_per_unit, 10u);
  const RlsLimit* b =
      config->Match("example6", Entries{{"service", "auth-service"}, {"user", "user-b"}});
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE(b->shadow_mode);
  EXPECT_EQ(b->requests_per_unit, 20u);
  // The service level itself is only a placeholder.
  EXPECT_EQ(config->Match("example6", Entries{{"service", "auth-service"}}), nullptr);
}

constexpr std::string_view kExample7 = R"(
domain: example7
descriptors:
  - key: key_1
    value: value_1
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          name: specific_limit
          requests_per_unit: 5
          unit: second
  - key: key_2
    value: value_2
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          replaces:
            - name: specific_limit
          requests_per_unit: 10
          unit: second
)";

TEST(RlsMatch, Example7ReplacesDropsTheNamedLimitOnlyWhenBothMatch) {
  const auto config = Load(kExample7);
  ASSERT_NE(config, nullptr);
  const RlsLimit* specific =
      config->Match("example7", Entries{{"key_1", "value_1"}, {"user", "bkthomps"}});
  const RlsLimit* replacing =
      config->Match("example7", Entries{{"key_2", "value_2"}, {"user", "bkthomps"}});
  ASSERT_NE(specific, nullptr);
  ASSERT_NE(replacing, nullptr);
  EXPECT_EQ(specific->name, "specific_limit");
  EXPECT_TRUE(specific->replaces.empty());
  EXPECT_EQ(replacing->name, "");
  EXPECT_EQ(replacing->replaces, std::vector<std::string>{"specific_limit"});

  // (key_1, value_1), (user, bkthomps) alone: 5 / sec.
  const RlsLimit* alone[] = {specific};
  EXPECT_FALSE(IsReplaced(alone, *specific));
  // (key_2, value_2), (user, bkthomps) alone: 10 / sec.
  const RlsLimit* other_alone[] = {replacing};
  EXPECT_FALSE(IsReplaced(other_alone, *replacing));
  // Both in one request (and a descriptor that matched nothing): only the 10 / sec
  // applies; the 5 / sec is neither checked nor counted.
  const RlsLimit* both[] = {specific, nullptr, replacing};
  EXPECT_TRUE(IsReplaced(both, *specific));
  EXPECT_FALSE(IsReplaced(both, *replacing));
}

TEST(RlsMatch, ReplacesFollowsTheServiceInTheCornerCases) {
  const auto config = Load(R"(
domain: d
descriptors:
  - key: a
    rate_limit: {name: limit_a, replaces: [{name: limit_b}], unit: second, requests_per_unit: 1}
  - key: b
    rate_limit: {name: limit_b, replaces: [{name: limit_a}], unit: second, requests_per_unit: 2}
  - key: free
    rate_limit: {name: free, unlimited: true, replaces: [{name: limit_c}]}
  - key: c
    rate_limit: {name: limit_c, unit: second, requests_per_unit: 3}
  - key: e
    rate_limit: {replaces: [{name: free}], unit: second, requests_per_unit: 4}
)");
  ASSERT_NE(config, nullptr);
  const RlsLimit* a = config->Match("d", Entries{{"a", "1"}});
  const RlsLimit* b = config->Match("d", Entries{{"b", "1"}});
  const RlsLimit* free = config->Match("d", Entries{{"free", "1"}});
  const RlsLimit* c = config->Match("d", Entries{{"c", "1"}});
  const RlsLimit* e = config->Match("d", Entries{{"e", "1"}});
  ASSERT_TRUE(a && b && free && c && e);
  // Each replaces the other: the set of names is gathered before anything is dropped,
  // so both go.
  const RlsLimit* mutual[] = {a, b};
  EXPECT_TRUE(IsReplaced(mutual, *a));
  EXPECT_TRUE(IsReplaced(mutual, *b));
  // An unlimited limit's `replaces` counts...
  const RlsLimit* with_free[] = {free, c};
  EXPECT_TRUE(IsReplaced(with_free, *c));
  // ...but an unlimited limit is never dropped: it stays an unlimited answer.
  const RlsLimit* free_named[] = {free, e};
  EXPECT_FALSE(IsReplaced(free_named, *free));
}

TEST(RlsMatch, Example8DetailedMetricNamesStatsByTheRequestValues) {
  const auto config = Load(R"(
domain: example8
descriptors:
  - key: key1
    detailed_metric: true
    rate_limit:
      unit: minute
      requests_per_unit: 10
  - key: key1
    value: value1
    rate_limit:
      unit: minute
      requests_per_unit: 20
)");
  ASSERT_NE(config, nullptr);
  std::string key;
  const Entries unspecified = {{"key1", "unspecified_value"}};
  const RlsLimit* detailed = config->Match("example8", unspecified);
  ASSERT_NE(detailed, nullptr);
  EXPECT_TRUE(detailed->detailed_metric);
  EXPECT_EQ(detailed->requests_per_unit, 10u);
  EXPECT_EQ(detailed->full_key, "example8.key1");
  StatsKey("example8", unspecified, *detailed, key);
  EXPECT_EQ(key, "example8.key1_unspecified_value");
  const Entries unspecified2 = {{"key1", "unspecified_value2"}};
  StatsKey("example8", unspecified2, *config->Match("example8", unspecified2), key);
  EXPECT_EQ(key, "example8.key1_unspecified_value2");

  const Entries listed = {{"key1", "value1"}};
  const RlsLimit* plain = config->Match("example8", listed);
  ASSERT_NE(plain, nullptr);
  EXPECT_FALSE(plain->detailed_metric);
  StatsKey("example8", listed, *plain, key);
  EXPECT_EQ(key, "example8.key1_value1");
}

TEST(RlsMatch, DetailedMetricOnANestedLevelNamesEveryEntry) {
  const auto config = Load(R"(
domain: d
descriptors:
  - key: route
    descriptors:
      - key: user
        detailed_metric: true
        rate_limit: {unit: minute, requests_per_unit: 10}
)");
  ASSERT_NE(config, nullptr);
  const Entries entries = {{"route", "/a"}, {"user", "alice"}};
  const RlsLimit* limit = config->Match("d", entries);
  ASSERT_NE(limit, nullptr);
  std::string key;
  StatsKey("d", entries, *limit, key);
  EXPECT_EQ(key, "d.route_/a.user_alice");
  // Not detailed: the name of the config entry, whatever the request's values.
  EXPECT_EQ(limit->full_key, "d.route.user");
}

constexpr std::string_view kWildcards = R"(
domain: example9
descriptors:
  - key: key1
    value: value*
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: path
    value: /api/*
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: path
    value: /api/v1/*
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: path
    value: /api/v1/users
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: path
    rate_limit: {unit: minute, requests_per_unit: 4}
  - key: route
    value: /items/*/action
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: route
    value: /api/*/resource/*/action
    rate_limit: {unit: minute, requests_per_unit: 6}
)";

uint32_t CountFor(const RateLimitConfig& config, std::string_view key, std::string_view value) {
  const RlsLimit* limit = config.Match("example9", Entries{{key, value}});
  return limit == nullptr ? 999 : limit->requests_per_unit;
}

TEST(RlsMatch, Example9WildcardValues) {
  const auto config = Load(kWildcards);
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(CountFor(*config, "key1", "value1"), 20u);
  EXPECT_EQ(CountFor(*config, "key1", "valueXYZ"), 20u);
  EXPECT_EQ(CountFor(*config, "key1", "value"), 20u);  // '*' takes zero characters too
  EXPECT_EQ(CountFor(*config, "key1", "valu"), 999u);
  EXPECT_EQ(CountFor(*config, "key1", "xvalue1"), 999u);
  EXPECT_EQ(config->Match("example9", Entries{{"key1", "value1"}})->full_key,
            "example9.key1_value*");

  // The exact value first, then the first wildcard in file order, then the key alone.
  EXPECT_EQ(CountFor(*config, "path", "/api/v1/users"), 3u);
  EXPECT_EQ(CountFor(*config, "path", "/api/v1/orders"), 1u);  // "/api/*" is listed first
  EXPECT_EQ(CountFor(*config, "path", "/api/"), 1u);
  EXPECT_EQ(CountFor(*config, "path", "/health"), 4u);
  EXPECT_EQ(CountFor(*config, "path", ""), 4u);

  // A '*' in the middle, and several.
  EXPECT_EQ(CountFor(*config, "route", "/items/123/action"), 5u);
  EXPECT_EQ(CountFor(*config, "route", "/items/123/other"), 999u);
  EXPECT_EQ(CountFor(*config, "route", "/items/action"), 999u);  // "/items/" and "/action" overlap
  EXPECT_EQ(CountFor(*config, "route", "/api/v1/resource/123/action"), 6u);
  EXPECT_EQ(CountFor(*config, "route", "/api/v1/resource/action"), 999u);
  EXPECT_EQ(CountFor(*config, "route", "/api/v1/thing/123/action"), 999u);
}

TEST(RlsMatch, WildcardOnANestedLevel) {
  const auto config = Load(R"(
domain: d
descriptors:
  - key: tenant
    descriptors:
      - key: path
        value: /files/*
        rate_limit: {unit: hour, requests_per_unit: 100}
      - key: path
        rate_limit: {unit: hour, requests_per_unit: 1000}
)");
  ASSERT_NE(config, nullptr);
  const RlsLimit* files = config->Match("d", Entries{{"tenant", "t1"}, {"path", "/files/a.pdf"}});
  ASSERT_NE(files, nullptr);
  EXPECT_EQ(files->requests_per_unit, 100u);
  EXPECT_EQ(files->limit, Limit::PerPeriod(100, 1h));
  const RlsLimit* other = config->Match("d", Entries{{"tenant", "t1"}, {"path", "/other"}});
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->requests_per_unit, 1000u);
}

// The service looks entries up as the string "key_value"; sluice compares key and value
// apart, so a request cannot reach an entry by splitting the string elsewhere.
TEST(RlsMatch, KeyAndValueAreComparedApart) {
  const auto config = Load(R"(
domain: d
descriptors:
  - key: a
    value: b_c
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: x
    value: "y*"
    rate_limit: {unit: second, requests_per_unit: 2}
)");
  ASSERT_NE(config, nullptr);
  EXPECT_NE(config->Match("d", Entries{{"a", "b_c"}}), nullptr);
  EXPECT_EQ(config->Match("d", Entries{{"a_b", "c"}}), nullptr);
  EXPECT_NE(config->Match("d", Entries{{"x", "yes"}}), nullptr);
  EXPECT_EQ(config->Match("d", Entries{{"x_y", "es"}}), nullptr);
}

TEST(RlsMatch, NumbersAndAddressesAreTextAsWritten) {
  const auto config = Load(R"(
domain: 42
descriptors:
  - key: status
    value: 200
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: status
    value: "0404"
    rate_limit: {unit: second, requests_per_unit: 2}
)");
  ASSERT_NE(config, nullptr);
  EXPECT_TRUE(config->HasDomain("42"));
  EXPECT_EQ(config->Match("42", Entries{{"status", "200"}})->requests_per_unit, 1u);
  EXPECT_EQ(config->Match("42", Entries{{"status", "0404"}})->requests_per_unit, 2u);
  EXPECT_EQ(config->Match("42", Entries{{"status", "404"}}), nullptr);
}

TEST(RlsMatch, DescriptorWithoutRateLimitOrChildrenLimitsNothing) {
  const auto config = Load(R"(
domain: d
descriptors:
  - key: internal
  - key: internal
    value: admin
    shadow_mode: true
)");
  ASSERT_NE(config, nullptr);
  EXPECT_TRUE(config->limits().empty());
  EXPECT_EQ(config->Match("d", Entries{{"internal", "x"}}), nullptr);
  EXPECT_EQ(config->Match("d", Entries{{"internal", "admin"}}), nullptr);
}

TEST(RlsMatch, DomainWithoutDescriptorsLoads) {
  const auto config = Load("domain: empty\n");
  ASSERT_NE(config, nullptr);
  EXPECT_TRUE(config->HasDomain("empty"));
  EXPECT_FALSE(config->HasDomain("empt"));
  EXPECT_EQ(config->Match("empty", Entries{{"a", "b"}}), nullptr);
}

#ifdef SLUICE_COUNT_ALLOCATIONS
TEST(RlsMatch, MatchDoesNotAllocate) {
  const auto config = Load(kWildcards);
  ASSERT_NE(config, nullptr);
  const Entries entries = {{"path", "/api/v1/orders"}};
  std::string key;
  key.reserve(256);
  const uint64_t before = testing::AllocationCount();
  const RlsLimit* limit = nullptr;
  for (int i = 0; i < 100; ++i) {
    limit = config->Match("example9", entries);
    StatsKey("example9", entries, *limit, key);
    const RlsLimit* matched[] = {limit};
    EXPECT_FALSE(IsReplaced(matched, *limit));
  }
  EXPECT_EQ(testing::AllocationCount(), before);
  EXPECT_EQ(limit->requests_per_unit, 1u);
}
#endif  // SLUICE_COUNT_ALLOCATIONS

// ---- Units and the sluice extension ----

TEST(RlsLimits, UnitsInAnyCaseWithTheServiceLengths) {
  const auto config = Load(R"(
domain: units
descriptors:
  - {key: s, rate_limit: {unit: second, requests_per_unit: 1}}
  - {key: m, rate_limit: {unit: MINUTE, requests_per_unit: 2}}
  - {key: h, rate_limit: {unit: Hour, requests_per_unit: 3}}
  - {key: d, rate_limit: {unit: day, requests_per_unit: 4}}
  - {key: w, rate_limit: {unit: week, requests_per_unit: 5}}
  - {key: mo, rate_limit: {unit: month, requests_per_unit: 6}}
  - {key: y, rate_limit: {unit: YEAR, requests_per_unit: 7}}
)");
  ASSERT_NE(config, nullptr);
  const auto period = [&](std::string_view key) {
    return config->Match("units", Entries{{key, "v"}})->limit.period;
  };
  EXPECT_EQ(period("s"), 1s);
  EXPECT_EQ(period("m"), 60s);
  EXPECT_EQ(period("h"), 3600s);
  EXPECT_EQ(period("d"), 86400s);
  EXPECT_EQ(period("w"), 7 * 86400s);
  EXPECT_EQ(period("mo"), 30 * 86400s);
  EXPECT_EQ(period("y"), 365 * 86400s);
  EXPECT_EQ(config->Match("units", Entries{{"mo", "v"}})->unit, Unit::kMonth);
  EXPECT_EQ(UnitName(Unit::kWeek), "week");
}

TEST(RlsLimits, AlgorithmAndBurstExtension) {
  const auto config = Load(R"(
domain: d
descriptors:
  - key: tb
    rate_limit: {unit: second, requests_per_unit: 10, algorithm: token_bucket, burst: 25}
  - key: gcra
    rate_limit: {unit: minute, requests_per_unit: 60, algorithm: gcra}
  - key: swc
    rate_limit: {unit: hour, requests_per_unit: 7, algorithm: sliding_window_counter}
  - key: default
    rate_limit: {unit: second, requests_per_unit: 3}
)");
  ASSERT_NE(config, nullptr);
  const RlsLimit* tb = config->Match("d", Entries{{"tb", "x"}});
  EXPECT_EQ(tb->algorithm, Algorithm::kTokenBucket);
  EXPECT_EQ(tb->limit, (Limit{10, 1s, 25}));
  const RlsLimit* gcra = config->Match("d", Entries{{"gcra", "x"}});
  EXPECT_EQ(gcra->algorithm, Algorithm::kGcra);
  EXPECT_EQ(gcra->limit, (Limit{60, 60s, 60}));  // burst defaults to the count
  EXPECT_EQ(config->Match("d", Entries{{"swc", "x"}})->algorithm, Algorithm::kSlidingWindowCounter);
  EXPECT_EQ(config->Match("d", Entries{{"default", "x"}})->algorithm, Algorithm::kFixedWindow);
}

// ---- Several files ----

TEST(RlsLoad, SeveralFilesAndDomains) {
  const auto config = LoadAll({
      Source{"domain: b\ndescriptors:\n  - {key: k, rate_limit: {unit: second, "
             "requests_per_unit: 2}}\n",
             "b.yaml"},
      Source{"domain: a\ndescriptors:\n  - {key: k, rate_limit: {unit: second, "
             "requests_per_unit: 1}}\n",
             "a.yaml"},
  });
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->Match("a", Entries{{"k", "v"}})->requests_per_unit, 1u);
  EXPECT_EQ(config->Match("b", Entries{{"k", "v"}})->requests_per_unit, 2u);
  EXPECT_EQ(config->Match("a", Entries{{"k", "v"}})->file, "a.yaml");
  EXPECT_EQ(config->Match("c", Entries{{"k", "v"}}), nullptr);
  // limits() keeps load order.
  ASSERT_EQ(config->limits().size(), 2u);
  EXPECT_EQ(config->limits()[0].full_key, "b.k");
}

TEST(RlsLoad, DuplicateDomainAcrossFiles) {
  const std::vector<Source> sources = {
      Source{"domain: shared\n", "one.yaml"},
      Source{"# the same domain again\ndomain: shared\n", "two.yaml"},
  };
  EXPECT_EQ(ErrorsOf(RateLimitConfig::Load(sources)),
            Lines{"two.yaml:2:9: domain: duplicate domain \"shared\" (already defined in "
                  "one.yaml:1); a domain is defined by one file"});
}

TEST(RlsLoad, ErrorsOfEveryFileInFileOrder) {
  const std::vector<Source> sources = {
      Source{"domain: a\nbogus: 1\n", "a.yaml"},
      Source{"descriptors: []\n", "b.yaml"},
  };
  EXPECT_EQ(ErrorsOf(RateLimitConfig::Load(sources)),
            (Lines{"a.yaml:2:1: unknown key \"bogus\" at the top level; expected one of: "
                   "domain, descriptors",
                   "b.yaml:1:1: missing required key \"domain\""}));
}

class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/rls_config_test_XXXXXX";
    path_ = ::mkdtemp(pattern);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, std::string_view text) const {
    const std::string file = path_ + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(file).parent_path());
    std::ofstream(file) << text;
    return file;
  }

 private:
  std::string path_;
};

TEST(RlsLoad, DirectoryTakesYamlFilesSortedAndSkipsTheRest) {
  TempDir dir;
  dir.Write("b.yaml",
            "domain: b\ndescriptors:\n  - {key: k, rate_limit: {unit: second, "
            "requests_per_unit: 2}}\n");
  dir.Write("a.yml",
            "domain: a\ndescriptors:\n  - {key: k, rate_limit: {unit: second, "
            "requests_per_unit: 1}}\n");
  // Not loaded (each would be an error): hidden, another extension, a subdirectory.
  dir.Write(".hidden.yaml", "not: valid\n");
  dir.Write("README.txt", "not: valid\n");
  dir.Write("nested/c.yaml", "not: valid\n");
  const LoadResult result = RateLimitConfig::LoadPaths({dir.path()});
  ASSERT_EQ(ErrorsOf(result), Lines{});
  EXPECT_EQ(result.config->Match("a", Entries{{"k", "v"}})->file, dir.path() + "/a.yml");
  EXPECT_EQ(result.config->Match("b", Entries{{"k", "v"}})->requests_per_unit, 2u);
  // Sorted by name: a.yml was loaded first.
  EXPECT_EQ(result.config->limits()[0].full_key, "a.k");
}

TEST(RlsLoad, FilesAndDirectoriesTogetherWithErrorsNamingTheFile) {
  TempDir dir;
  dir.Write("x.yaml", "domain: x\n");
  dir.Write("y.yaml",
            "domain: y\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, "
            "requests_per_unit: 1}\n");
  const std::string lone = dir.Write("lone.conf", "domain: x\n");
  const LoadResult result = RateLimitConfig::LoadPaths({dir.path(), lone});
  EXPECT_EQ(ErrorsOf(result),
            (Lines{dir.path() + "/y.yaml:4:24: descriptors[0].rate_limit.unit: unknown unit "
                                "\"fortnight\"; expected one of: second, minute, hour, day, "
                                "week, month, year",
                   lone + ":1:9: domain: duplicate domain \"x\" (already defined in " + dir.path() +
                       "/x.yaml:1); a domain is defined by one file"}));
}

TEST(RlsLoad, MissingPathAndEmptyDirectory) {
  TempDir dir;
  std::filesystem::create_directory(dir.path() + "/empty");
  dir.Write("empty/notes.txt", "x");
  const LoadResult result =
      RateLimitConfig::LoadPaths({dir.path() + "/missing.yaml", dir.path() + "/empty"});
  EXPECT_EQ(ErrorsOf(result),
            (Lines{dir.path() + "/empty: no *.yaml or *.yml files in this directory",
                   dir.path() + "/missing.yaml: cannot read: No such file or directory"}));
}

// ---- Errors, each at its line and column ----

TEST(RlsErrors, DomainMissingOrEmpty) {
  EXPECT_EQ(Errors(R"(
descriptors:
  - key: a
)"),
            Lines{"rl.yaml:1:1: missing required key \"domain\""});
  EXPECT_EQ(Errors(R"(
domain: ""
)"),
            Lines{"rl.yaml:1:9: domain: must not be empty"});
}

TEST(RlsErrors, UnknownKeysWhereTheyStand) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - key: a
    vlaue: b
    rate_limit:
      unit: second
      requests_per_unit: 1
      per: minute
)"),
            (Lines{"rl.yaml:4:5: unknown key \"vlaue\" in descriptors[0]; expected one of: key, "
                   "value, rate_limit, descriptors, shadow_mode, detailed_metric",
                   "rl.yaml:8:7: unknown key \"per\" in descriptors[0].rate_limit; expected one "
                   "of: unit, requests_per_unit, unlimited, name, replaces, algorithm, burst"}));
}

TEST(RlsErrors, KeysInTheWrongBlockAndUnsupportedServiceOptions) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - key: a
    replaces: [{name: x}]
    quota_mode: true
    rate_limit:
      unit: second
      requests_per_unit: 1
      shadow_mode: true
)"),
            (Lines{"rl.yaml:4:5: \"replaces\" in descriptors[0]: belongs inside rate_limit",
                   "rl.yaml:5:5: \"quota_mode\" in descriptors[0]: an envoyproxy/ratelimit "
                   "option that sluice does not support; remove it",
                   "rl.yaml:9:7: \"shadow_mode\" in descriptors[0].rate_limit: belongs to the "
                   "descriptor, beside rate_limit"}));
}

TEST(RlsErrors, BadUnitAndMissingUnit) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - key: a
    rate_limit:
      unit: seconds
      requests_per_unit: 1
  - key: b
    rate_limit:
      requests_per_unit: 1
)"),
            (Lines{"rl.yaml:5:13: descriptors[0].rate_limit.unit: unknown unit \"seconds\"; "
                   "expected one of: second, minute, hour, day, week, month, year",
                   "rl.yaml:9:7: descriptors[1].rate_limit: missing required key \"unit\""}));
}

TEST(RlsErrors, RequestsPerUnitMissingOrNotAWholeNumber) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - key: missing
    rate_limit:
      unit: second
  - key: negative
    rate_limit: {unit: second, requests_per_unit: -1}
  - key: words
    rate_limit: {unit: second, requests_per_unit: ten}
  - key: quoted
    rate_limit: {unit: second, requests_per_unit: "10"}
  - key: fraction
    rate_limit: {unit: second, requests_per_unit: 1.5}
  - key: too_large
    rate_limit: {unit: second, requests_per_unit: 4294967296}
)"),
            (Lines{
                "rl.yaml:5:7: descriptors[0].rate_limit: missing required key "
                "\"requests_per_unit\"",
                "rl.yaml:7:51: descriptors[1].rate_limit.requests_per_unit: expected a whole "
                "number, got \"-1\"",
                "rl.yaml:9:51: descriptors[2].rate_limit.requests_per_unit: expected a whole "
                "number, got \"ten\"",
                "rl.yaml:11:51: descriptors[3].rate_limit.requests_per_unit: expected a whole "
                "number, got \"10\" (quoted, so a string)",
                "rl.yaml:13:51: descriptors[4].rate_limit.requests_per_unit: expected a whole "
                "number, got \"1.5\"",
                "rl.yaml:15:51: descriptors[5].rate_limit.requests_per_unit: must be between 0 "
                "and 4294967295, got 4294967296",
            }));
}

TEST(RlsErrors, UnlimitedWithACountOrAUnit) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - key: a
    rate_limit:
      unlimited: true
      requests_per_unit: 5
  - key: b
    rate_limit:
      unlimited: true
      unit: second
      algorithm: gcra
)"),
            (Lines{"rl.yaml:6:7: descriptors[0].rate_limit.requests_per_unit: must not be given "
                   "with unlimited: true (an unlimited descriptor is never counted)",
                   "rl.yaml:10:7: descriptors[1].rate_limit.unit: must not be given with "
                   "unlimited: true",
                   "rl.yaml:11:7: descriptors[1].rate_limit.algorithm: must not be given with "
                   "unlimited: true"}));
}

TEST(RlsErrors, DuplicateCompositeKeyAtOneLevel) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - key: a
    value: b
  - key: a
    value: b
  - key: k
  - key: k
  - key: nested
    descriptors:
      - key: x
        value: y_z
      - key: x_y
        value: z
  - key: a
    value: c
)"),
            (Lines{"rl.yaml:5:10: descriptors[1].key: duplicate descriptor \"a_b\" at this level "
                   "(first at line 3)",
                   "rl.yaml:8:10: descriptors[3].key: duplicate descriptor \"k\" at this level "
                   "(first at line 7)",
                   "rl.yaml:13:14: descriptors[4].descriptors[1].key: key \"x_y\" with value "
                   "\"z\" joins to \"x_y_z\", as key \"x\" with value \"y_z\" at line 11 does; "
                   "envoyproxy/ratelimit names entries \"key_value\" and cannot tell them "
                   "apart"}));
}

TEST(RlsErrors, SameEntryOnDifferentLevelsOrDomainsIsFine) {
  EXPECT_NE(Load(R"(
domain: d
descriptors:
  - key: a
    descriptors:
      - key: a
  - key: b
    descriptors:
      - key: a
)"),
            nullptr);
}

TEST(RlsErrors, KeyMissingOrEmpty) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - value: b
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: ""
  -
  - key: [a]
)"),
            // An empty element has no position of its own: the error points at the list.
            (Lines{"rl.yaml:3:3: descriptors[2]: expected a map, got nothing",
                   "rl.yaml:3:5: descriptors[0]: missing required key \"key\"",
                   "rl.yaml:5:10: descriptors[1].key: must not be empty",
                   "rl.yaml:7:10: descriptors[3].key: expected a string, got a list"}));
}

TEST(RlsErrors, BadAlgorithm) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - key: a
    rate_limit: {unit: second, requests_per_unit: 1, algorithm: token-bucket}
)"),
            Lines{"rl.yaml:4:65: descriptors[0].rate_limit.algorithm: unknown algorithm "
                  "\"token-bucket\"; expected one of: token_bucket, leaky_bucket, fixed_window, "
                  "sliding_window_log, sliding_window_counter, gcra"});
}

TEST(RlsErrors, BurstOnAWindowAlgorithm) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - key: default_is_fixed_window
    rate_limit:
      unit: second
      requests_per_unit: 1
      burst: 5
  - key: sliding
    rate_limit:
      algorithm: sliding_window_counter
      unit: second
      requests_per_unit: 1
      burst: 5
  - key: zero_burst
    rate_limit: {algorithm: token_bucket, unit: second, requests_per_unit: 1, burst: 0}
)"),
            (Lines{"rl.yaml:7:7: descriptors[0].rate_limit.burst: fixed_window does not use "
                   "burst (only token_bucket, leaky_bucket and gcra have a bucket capacity); "
                   "remove it",
                   "rl.yaml:13:7: descriptors[1].rate_limit.burst: sliding_window_counter does "
                   "not use burst (only token_bucket, leaky_bucket and gcra have a bucket "
                   "capacity); remove it",
                   "rl.yaml:15:86: descriptors[2].rate_limit.burst: must be between 1 and "
                   "4611686018427387904, got 0"}));
}

TEST(RlsErrors, SlidingWindowLogCountIsBounded) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - key: a
    rate_limit:
      algorithm: sliding_window_log
      unit: day
      requests_per_unit: 2000000
)"),
            Lines{"rl.yaml:7:26: descriptors[0].rate_limit.requests_per_unit: must be at most "
                  "1048576 with sliding_window_log (it keeps one timestamp per request), got "
                  "2000000"});
}

TEST(RlsErrors, ReplacesEntries) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - key: a
    rate_limit:
      name: mine
      unit: second
      requests_per_unit: 1
      replaces:
        - name: mine
        - name: ""
        - {}
        - other
)"),
            (Lines{"rl.yaml:9:17: descriptors[0].rate_limit.replaces[0].name: \"mine\" is this "
                   "limit's own name; a limit cannot replace itself",
                   "rl.yaml:10:17: descriptors[0].rate_limit.replaces[1].name: must not be empty",
                   "rl.yaml:11:11: descriptors[0].rate_limit.replaces[2]: missing required key "
                   "\"name\"",
                   "rl.yaml:12:11: descriptors[0].rate_limit.replaces[3]: expected a map, got "
                   "\"other\""}));
}

TEST(RlsErrors, BooleansAreTrueOrFalse) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - key: a
    shadow_mode: yes
    detailed_metric: 1
    rate_limit: {unit: second, requests_per_unit: 1}
)"),
            (Lines{"rl.yaml:4:18: descriptors[0].shadow_mode: expected true or false, got \"yes\"",
                   "rl.yaml:5:22: descriptors[0].detailed_metric: expected true or false, got "
                   "\"1\""}));
}

TEST(RlsErrors, NestedErrorsCarryTheirPath) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - key: a
    descriptors:
      - key: b
        descriptors:
          - key: c
            rate_limit: {unit: minute, requests_per_unit: 1, unlimited: maybe}
)"),
            Lines{"rl.yaml:8:73: descriptors[0].descriptors[0].descriptors[0].rate_limit."
                  "unlimited: expected true or false, got \"maybe\""});
}

TEST(RlsErrors, WrongShapes) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  key: a
)"),
            Lines{"rl.yaml:3:3: descriptors: expected a list, got a map"});
  EXPECT_EQ(Errors("- domain: d\n"), Lines{"rl.yaml:1:1: expected a map, got a list"});
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - key: a
    rate_limit: 10
)"),
            Lines{"rl.yaml:4:17: descriptors[0].rate_limit: expected a map, got \"10\""});
}

TEST(RlsErrors, SyntaxErrorsAndDocuments) {
  EXPECT_EQ(Errors("domain: d\ndescriptors: [\n"),
            Lines{"rl.yaml:3:1: invalid YAML: end of sequence flow not found"});
  EXPECT_EQ(Errors("domain: a\n---\ndomain: b\n"),
            Lines{"rl.yaml:2:1: a second YAML document; each file holds one domain (remove "
                  "'---')"});
  EXPECT_EQ(Errors(""),
            Lines{"rl.yaml: the file is empty; expected \"domain:\" and \"descriptors:\""});
  // yaml-cpp 0.7 would loop forever on this one with YAML::LoadAll.
  EXPECT_EQ(Errors("domain: d\n,\n").size(), 1u);
}

TEST(RlsErrors, EveryProblemOfAFileInOneLoad) {
  EXPECT_EQ(Errors(R"(
domain: d
descriptors:
  - key: a
    rate_limit: {unit: sec, requests_per_unit: 1}
  - key: b
    rate_limit: {unit: second}
  - key: a
    value: x
    rate_limit: {unit: second, requests_per_unit: 1, algorithm: gcra, burst: 0}
)")
                .size(),
            3u);
}

}  // namespace
}  // namespace sluice::rls
