// The config loader: the example files load, defaults hold, and every class of
// mistake is reported at its exact line and column, all of them in one load.
#include "config/config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace sluice::config {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using Lines = std::vector<std::string>;

constexpr std::string_view kSource = "t.yaml";

// The YAML in these tests starts on the line after R"( so that line 1 is the first
// line shown; this drops that leading newline.
std::string_view Text(std::string_view yaml) {
  if (!yaml.empty() && yaml.front() == '\n') yaml.remove_prefix(1);
  return yaml;
}

std::vector<std::string> Errors(std::string_view yaml) {
  const LoadResult result = LoadConfigText(Text(yaml), kSource);
  EXPECT_EQ(result.config == nullptr, !result.errors.empty());
  std::vector<std::string> lines;
  for (const ConfigError& error : result.errors) lines.push_back(error.ToString());
  return lines;
}

std::shared_ptr<const Config> Load(std::string_view yaml) {
  const LoadResult result = LoadConfigText(Text(yaml), kSource);
  for (const ConfigError& error : result.errors) ADD_FAILURE() << error.ToString();
  return result.config;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

const std::string kQuickstartPath = std::string(SLUICE_SOURCE_DIR) + "/examples/quickstart.yaml";
const std::string kFullPath = std::string(SLUICE_SOURCE_DIR) + "/examples/full.yaml";

net::IpAddress Ip(std::string_view text) { return *net::IpAddress::Parse(text); }

// ---- The shipped files ----

TEST(ConfigExamples, QuickstartLoads) {
  const LoadResult result = LoadConfigFile(kQuickstartPath);
  for (const ConfigError& error : result.errors) ADD_FAILURE() << error.ToString();
  ASSERT_NE(result.config, nullptr);
  const Config& config = *result.config;
  EXPECT_EQ(config.source, kQuickstartPath);
  EXPECT_EQ(config.listen.ToString(), "127.0.0.1:8080");
  EXPECT_EQ(config.admin_listen.ToString(), "127.0.0.1:9090");
  EXPECT_EQ(config.workers, 0u);
  EXPECT_TRUE(config.access_log.enabled);
  EXPECT_EQ(config.access_log.path, "stdout");
  EXPECT_EQ(config.store.backend, StoreConfig::Backend::kMemory);
  // The README's curl loop runs from localhost and must be limited.
  EXPECT_FALSE(config.allow.Contains(Ip("127.0.0.1")));
  EXPECT_FALSE(config.deny.Contains(Ip("127.0.0.1")));

  ASSERT_EQ(config.rules.size(), 2u);
  const Rule& per_ip = config.rules[0];
  EXPECT_EQ(per_ip.name, "per-ip");
  EXPECT_EQ(per_ip.path_prefix, "");
  ASSERT_EQ(per_ip.key.size(), 1u);
  EXPECT_EQ(per_ip.key[0].kind, KeyPartKind::kIp);
  EXPECT_EQ(per_ip.algorithm, Algorithm::kTokenBucket);
  EXPECT_EQ(per_ip.limit, (Limit{.limit = 10, .period = minutes(1), .burst = 10}));
  EXPECT_EQ(per_ip.action, Action::kReject);

  const Rule& api = config.rules[1];
  EXPECT_EQ(api.name, "api-per-key");
  EXPECT_EQ(api.path_prefix, "/api/");
  ASSERT_EQ(api.key.size(), 1u);
  EXPECT_EQ(api.key[0].kind, KeyPartKind::kHeader);
  EXPECT_EQ(api.key[0].name, "x-api-key");
  EXPECT_EQ(api.algorithm, Algorithm::kSlidingWindowCounter);
  EXPECT_EQ(api.limit, Limit::PerPeriod(100, minutes(1)));
  EXPECT_EQ(api.on_missing_key, OnMissingKey::kSkip);
  ASSERT_EQ(api.overrides.size(), 1u);
  EXPECT_EQ(api.overrides[0].key, "premium-123");
  EXPECT_EQ(api.overrides[0].limit, Limit::PerPeriod(1000, minutes(1)));
}

TEST(ConfigExamples, EmbeddedQuickstartIsTheFileAndLoads) {
  const std::string file = ReadFile(kQuickstartPath);
  ASSERT_FALSE(file.empty());
  EXPECT_EQ(EmbeddedQuickstart(), file);
  const LoadResult result = LoadConfigText(EmbeddedQuickstart(), kEmbeddedQuickstartName);
  for (const ConfigError& error : result.errors) ADD_FAILURE() << error.ToString();
  ASSERT_NE(result.config, nullptr);
  EXPECT_EQ(result.config->source, kEmbeddedQuickstartName);
  EXPECT_EQ(result.config->rules.size(), 2u);
}

TEST(ConfigExamples, FullExampleLoadsEveryKey) {
  const LoadResult result = LoadConfigFile(kFullPath);
  for (const ConfigError& error : result.errors) ADD_FAILURE() << error.ToString();
  ASSERT_NE(result.config, nullptr);
  const Config& config = *result.config;
  ASSERT_TRUE(config.grpc_listen.has_value());
  EXPECT_EQ(config.grpc_listen->ToString(), "127.0.0.1:8081");
  EXPECT_TRUE(config.trusted_proxies.Contains(Ip("10.2.3.4")));
  EXPECT_TRUE(config.allow.Contains(Ip("192.0.2.10")));
  EXPECT_TRUE(config.deny.Contains(Ip("198.51.100.7")));
  EXPECT_EQ(config.store.redis.nodes.size(), 2u);
  EXPECT_EQ(config.rules.size(), 6u);
  const Rule& api = config.rules[0];
  EXPECT_EQ(api.methods, (std::vector<std::string>{"GET", "POST"}));
  EXPECT_EQ(api.hosts, (std::vector<std::string>{"api.example.com", "api.example.net"}));
  EXPECT_EQ(api.limit, (Limit{.limit = 100, .period = minutes(1), .burst = 20}));
  ASSERT_EQ(api.overrides.size(), 2u);
  EXPECT_EQ(api.overrides[1].limit, (Limit{.limit = 10, .period = seconds(1), .burst = 50}));
  EXPECT_EQ(config.rules[1].action, Action::kDelay);
  EXPECT_EQ(config.rules[1].max_delay, milliseconds(500));
  ASSERT_EQ(config.routes.size(), 2u);
  EXPECT_EQ(config.routes[0].host, "api.example.com");
  EXPECT_EQ(config.routes[0].upstream, "api");
  ASSERT_EQ(config.upstreams.size(), 3u);  // in file order
  EXPECT_EQ(config.upstreams[0].name, "app");
  EXPECT_EQ(config.upstreams[1].name, "api");
  EXPECT_EQ(config.upstreams[2].name, "static");
  const Upstream& app = config.upstreams[0];
  EXPECT_EQ(app.balance, Upstream::Balance::kWeightedRoundRobin);
  ASSERT_EQ(app.servers.size(), 2u);
  EXPECT_EQ(app.servers[0].weight, 3u);
  EXPECT_EQ(app.health_check_path, "/healthz");
  EXPECT_EQ(app.fallback, "static");
  EXPECT_EQ(config.upstreams[1].balance, Upstream::Balance::kLeastConnections);
}

TEST(ConfigDecisionApis, SwitchAndEnvoyConfigPaths) {
  const auto config = Load(R"(
decision_api: false
envoy_ratelimit_configs: ["/etc/ratelimit/config", "extra.yaml"]
)");
  ASSERT_NE(config, nullptr);
  EXPECT_FALSE(config->decision_api);
  EXPECT_EQ(config->envoy_ratelimit_configs,
            (std::vector<std::string>{"/etc/ratelimit/config", "extra.yaml"}));
  EXPECT_EQ(Errors("decision_api: maybe\nenvoy_ratelimit_configs: [\"\"]\n"),
            (std::vector<std::string>{
                "t.yaml:1:15: decision_api: expected true or false, got \"maybe\"",
                "t.yaml:2:27: envoy_ratelimit_configs[0]: expected a file or directory of "
                "envoyproxy/ratelimit configs"}));
}

TEST(ConfigDecisionApis, GrpcServerChoosesWhoServesGrpcListen) {
  EXPECT_EQ(Load("grpc_server: grpc-cpp\n")->grpc_server, Config::GrpcServer::kGrpcCpp);
  EXPECT_EQ(Load("grpc_server: native\n")->grpc_server, Config::GrpcServer::kNative);
  EXPECT_EQ(Load("{}\n")->grpc_server, Config::GrpcServer::kNative);
  const std::vector<std::string> errors = Errors("grpc_server: grpcpp\n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0],
            "t.yaml:1:14: grpc_server: expected one of: native, grpc-cpp; got \"grpcpp\"");
}

// ---- Defaults ----

TEST(ConfigDefaults, EmptyMapTakesEveryDefault) {
  const auto config = Load("{}\n");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->source, kSource);
  EXPECT_EQ(config->listen.ToString(), "0.0.0.0:8080");
  EXPECT_EQ(config->admin_listen.ToString(), "127.0.0.1:9090");
  EXPECT_FALSE(config->grpc_listen.has_value());
  EXPECT_TRUE(config->envoy_ratelimit_configs.empty());
  EXPECT_TRUE(config->decision_api);
  EXPECT_EQ(config->workers, 0u);
  EXPECT_EQ(config->http.max_header_bytes, 16384u);
  EXPECT_EQ(config->http.max_body_bytes, 10485760u);
  EXPECT_EQ(config->http.header_timeout, milliseconds(10000));
  EXPECT_EQ(config->http.idle_timeout, milliseconds(60000));
  EXPECT_EQ(config->http.max_connections, 100000u);
  EXPECT_TRUE(config->tls.cert_file.empty());
  EXPECT_TRUE(config->trusted_proxies.empty());
  EXPECT_TRUE(config->allow.empty());
  EXPECT_TRUE(config->deny.empty());
  EXPECT_EQ(config->store.backend, StoreConfig::Backend::kMemory);
  EXPECT_EQ(config->store.max_keys, 1'000'000u);
  EXPECT_EQ(config->store.on_failure, StoreConfig::OnFailure::kAllow);
  EXPECT_EQ(config->store.redis.connect_timeout, milliseconds(200));
  EXPECT_EQ(config->store.redis.command_timeout, milliseconds(20));
  EXPECT_TRUE(config->rules.empty());
  EXPECT_FALSE(config->legacy_headers);
  EXPECT_TRUE(config->access_log.enabled);
  EXPECT_EQ(config->access_log.path, "stdout");
  EXPECT_TRUE(config->routes.empty());
  EXPECT_TRUE(config->upstreams.empty());
}

TEST(ConfigDefaults, RuleWithOnlyRequiredKeys) {
  const auto config = Load(R"(
rules:
  - {name: r, algorithm: gcra, limit: 5, period: 2s}
)");
  ASSERT_NE(config, nullptr);
  const Rule& rule = config->rules.at(0);
  EXPECT_EQ(rule.path_prefix, "");
  EXPECT_TRUE(rule.methods.empty());
  EXPECT_TRUE(rule.hosts.empty());
  EXPECT_TRUE(rule.key.empty());
  EXPECT_EQ(rule.limit, Limit::PerPeriod(5, seconds(2)));  // burst = limit
  EXPECT_EQ(rule.action, Action::kReject);
  EXPECT_EQ(rule.on_missing_key, OnMissingKey::kSkip);
  EXPECT_EQ(rule.max_delay, milliseconds(0));
  EXPECT_TRUE(rule.overrides.empty());
}

TEST(ConfigDefaults, EmptySectionsAreEmpty) {
  // A section whose contents are all commented out is empty, not an error.
  const auto config = Load(R"(
store:
rules:
#  - name: x
access:
  allow:
)");
  ASSERT_NE(config, nullptr);
  EXPECT_TRUE(config->rules.empty());
  EXPECT_TRUE(config->allow.empty());
}

TEST(ConfigDefaults, SettingsAreRead) {
  const auto config = Load(R"(
listen: ":8000"
admin_listen: "[::1]:9000"
grpc_listen: "127.0.0.1:0"
workers: 4
http: {max_header_bytes: 1024, max_body_bytes: 0, header_timeout_ms: 1, idle_timeout_ms: 86400000,
       max_connections: 10000000}
tls: {cert_file: c.pem, key_file: k.pem}
store:
  backend: redis
  max_keys: 1000000000
  redis: {mode: cluster, nodes: ["10.0.0.1:6379"], connect_timeout_ms: 50, command_timeout_ms: 5}
  on_failure: local
headers: legacy
access_log: false
)");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->listen.ToString(), "0.0.0.0:8000");
  EXPECT_EQ(config->admin_listen.port, 9000);
  EXPECT_EQ(config->grpc_listen->port, 0);
  EXPECT_EQ(config->workers, 4u);
  EXPECT_EQ(config->http.max_header_bytes, 1024u);
  EXPECT_EQ(config->http.max_body_bytes, 0u);
  EXPECT_EQ(config->http.header_timeout, milliseconds(1));
  EXPECT_EQ(config->http.idle_timeout, milliseconds(86'400'000));
  EXPECT_EQ(config->http.max_connections, 10'000'000u);
  EXPECT_EQ(config->tls.cert_file, "c.pem");
  EXPECT_EQ(config->tls.key_file, "k.pem");
  EXPECT_EQ(config->store.backend, StoreConfig::Backend::kRedis);
  EXPECT_EQ(config->store.max_keys, 1'000'000'000u);
  EXPECT_EQ(config->store.redis.mode, RedisConfig::Mode::kCluster);
  ASSERT_EQ(config->store.redis.nodes.size(), 1u);
  EXPECT_EQ(config->store.redis.nodes[0].ToString(), "10.0.0.1:6379");
  EXPECT_EQ(config->store.redis.connect_timeout, milliseconds(50));
  EXPECT_EQ(config->store.redis.command_timeout, milliseconds(5));
  EXPECT_EQ(config->store.on_failure, StoreConfig::OnFailure::kLocal);
  EXPECT_TRUE(config->legacy_headers);
  EXPECT_FALSE(config->access_log.enabled);
}

TEST(ConfigDefaults, AccessLogAsMap) {
  const auto config = Load("access_log: {enabled: true, path: /var/log/sluice.log}\n");
  ASSERT_NE(config, nullptr);
  EXPECT_TRUE(config->access_log.enabled);
  EXPECT_EQ(config->access_log.path, "/var/log/sluice.log");
}

// ---- Document-level errors ----

TEST(ConfigErrors, YamlSyntaxErrorIsOneErrorAtItsMark) {
  EXPECT_EQ(Errors(R"(
rules:
  - name: [a
)"),
            (Lines{"t.yaml:3:1: invalid YAML: end of sequence flow not found"}));
}

// The Redis scripts count in whole microseconds below 2^53: a limit whose products
// would pass that is refused with the Redis backend, at the rule or override that has it,
// and accepted with the memory store.
TEST(ConfigErrors, RedisBackendRefusesLimitsPastTheScriptsExactRange) {
  const std::string rules = R"(
rules:
  - name: daily
    key: [ip]
    algorithm: token_bucket
    limit: 100000
    period: 1d
  - name: hourly
    key: [ip]
    algorithm: fixed_window
    limit: 1000
    period: 1h
    overrides:
      - key: "10.0.0.1"
        limit: 1000000
)";
  const std::string redis = "store: {backend: redis, redis: {nodes: [\"127.0.0.1:6379\"]}}\n";
  const std::vector<std::string> errors = Errors(redis + rules);
  ASSERT_EQ(errors.size(), 2u) << ::testing::PrintToString(errors);
  EXPECT_TRUE(errors[0].starts_with("t.yaml:4:5: rules[0]: with store.backend redis")) << errors[0];
  EXPECT_TRUE(errors[1].starts_with("t.yaml:15:9: rules[1].overrides[0]: with store.backend redis"))
      << errors[1];
  EXPECT_TRUE(Errors(rules).empty());
}

TEST(ConfigErrors, EmptyDocument) {
  const std::string expected =
      "t.yaml: the configuration is empty; expected a map of settings such as \"listen:\" and "
      "\"rules:\"";
  EXPECT_EQ(Errors(""), (Lines{expected}));
  EXPECT_EQ(Errors("# nothing but a comment\n"), (Lines{expected}));
}

TEST(ConfigErrors, TopLevelMustBeAMap) {
  EXPECT_EQ(Errors("- listen\n"),
            (Lines{"t.yaml:1:1: the configuration must be a map of settings, got a list"}));
  EXPECT_EQ(Errors("hello\n"), (Lines{"t.yaml:1:1: the configuration must be a map of "
                                      "settings, got \"hello\""}));
}

TEST(ConfigErrors, StrayCommaIsASyntaxError) {
  // yaml-cpp 0.7's LoadAll loops forever on this input; the loader must not.
  EXPECT_EQ(Errors(",\n"), (Lines{"t.yaml:1:1: invalid YAML: unexpected character"}));
  EXPECT_EQ(Errors("workers: 1\n...\n,\n"),
            (Lines{"t.yaml:3:1: invalid YAML: unexpected character"}));
}

TEST(ConfigErrors, SecondDocumentIsAnError) {
  EXPECT_EQ(Errors("workers: 1\n---\nworkers: 2\n"),
            (Lines{"t.yaml:2:1: a second YAML document; a configuration is one document "
                   "(remove '---')"}));
}

TEST(ConfigErrors, ToStringWithAndWithoutAPlace) {
  EXPECT_EQ((ConfigError{.file = "a.yaml", .line = 3, .column = 7, .message = "bad"}).ToString(),
            "a.yaml:3:7: bad");
  EXPECT_EQ((ConfigError{.file = "a.yaml", .message = "bad"}).ToString(), "a.yaml: bad");
}

// ---- Unknown and duplicate keys ----

TEST(ConfigErrors, UnknownKeyAtTopLevelPointsAtTheKey) {
  EXPECT_EQ(
      Errors(R"(
workers: 1
  # comment
lisen: ":8080"
)"),
      (Lines{
          "t.yaml:3:1: unknown key \"lisen\" at the top level; expected one of: "
          "listen, admin_listen, grpc_listen, grpc_server, envoy_ratelimit_configs, decision_api, "
          "workers, http, tls, "
          "clients, "
          "access, store, rules, routes, upstreams, headers, access_log"}));
}

TEST(ConfigErrors, UnknownKeyNested) {
  EXPECT_EQ(Errors(R"(
http:
  max_headers: 10
rules:
  - name: r
    algorithm: gcra
    limit: 1
    period: 1s
    match: {path: "/x"}
    foo: 1
)"),
            (Lines{"t.yaml:2:3: unknown key \"max_headers\" in http; expected one of: "
                   "max_header_bytes, max_body_bytes, header_timeout_ms, idle_timeout_ms, "
                   "max_connections",
                   "t.yaml:8:13: unknown key \"path\" in rules[0].match; expected one of: "
                   "path_prefix, methods, host, hosts",
                   "t.yaml:9:5: unknown key \"foo\" in rules[0]; expected one of: name, "
                   "match, key, algorithm, limit, period, burst, action, max_delay_ms, "
                   "on_missing_key, overrides"}));
}

TEST(ConfigErrors, DuplicateYamlKey) {
  EXPECT_EQ(Errors("workers: 1\nworkers: 2\n"),
            (Lines{"t.yaml:2:1: duplicate key \"workers\" at the top level"}));
}

// ---- Wrong types ----

TEST(ConfigErrors, WholeNumbersAreStrict) {
  EXPECT_EQ(Errors(R"(
rules:
  - {name: r, algorithm: gcra, limit: abc, period: 1s}
)"),
            (Lines{"t.yaml:2:39: rules[0].limit: expected a whole number, got \"abc\""}));
  for (const char* bad : {"1.5", "1e3", "0x10", "+5", "true", "1_000"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(Errors(std::string("workers: ") + bad + "\n"),
              std::vector<std::string>{std::string("t.yaml:1:10: workers: expected a whole "
                                                   "number, got \"") +
                                       bad + "\""});
  }
  // Strings are not numbers.
  EXPECT_EQ(Errors("workers: \"4\"\n"),
            (Lines{"t.yaml:1:10: workers: expected a whole number, got \"4\" (quoted, so "
                   "a string; write numbers without quotes)"}));
  EXPECT_EQ(Errors("workers: [4]\n"),
            (Lines{"t.yaml:1:10: workers: expected a whole number, got a list"}));
  EXPECT_EQ(Errors("workers: 99999999999999999999999\n"),
            (Lines{"t.yaml:1:10: workers: 99999999999999999999999 is too large; at most "
                   "1024"}));
}

TEST(ConfigErrors, EmptyValueOfAScalarPointsAtItsKey) {
  EXPECT_EQ(Errors(R"(
workers:
listen: ":1"
)"),
            (Lines{"t.yaml:1:1: workers: expected a whole number, got nothing"}));
}

TEST(ConfigErrors, SectionOfTheWrongShape) {
  EXPECT_EQ(Errors("http: 5\nrules: {name: r}\naccess_log: [1]\n"),
            (Lines{"t.yaml:1:7: http: expected a map, got \"5\"",
                   "t.yaml:2:8: rules: expected a list, got a map",
                   "t.yaml:3:13: access_log: expected true, false or a map {enabled, "
                   "path}, got a list"}));
}

TEST(ConfigErrors, BooleansAreTrueOrFalseOnly) {
  EXPECT_EQ(Errors("access_log: yes\n"),
            (Lines{"t.yaml:1:13: access_log: expected true or false, got \"yes\""}));
  EXPECT_EQ(Errors("access_log: {enabled: \"true\"}\n"),
            (Lines{"t.yaml:1:23: access_log.enabled: expected true or false, got "
                   "\"true\""}));
}

TEST(ConfigErrors, EmptyListElement) {
  EXPECT_EQ(Errors(R"(
rules:
  - {name: r, algorithm: gcra, limit: 1, period: 1s}
  -
)"),
            (Lines{"t.yaml:2:3: rules[1]: expected a map, got nothing"}));
}

// ---- Values out of range ----

TEST(ConfigErrors, RangesOfSettings) {
  EXPECT_EQ(Errors(R"(
workers: 1025
http:
  max_header_bytes: 1023
  max_body_bytes: 1099511627777
  header_timeout_ms: 0
  idle_timeout_ms: 86400001
  max_connections: 0
store: {max_keys: 0}
)"),
            (Lines{"t.yaml:1:10: workers: must be at most 1024, got 1025",
                   "t.yaml:3:21: http.max_header_bytes: must be between 1024 and 65536, "
                   "got 1023",
                   "t.yaml:4:19: http.max_body_bytes: must be at most 1099511627776, got "
                   "1099511627777",
                   "t.yaml:5:22: http.header_timeout_ms: must be between 1 and 86400000, "
                   "got 0",
                   "t.yaml:6:20: http.idle_timeout_ms: must be between 1 and 86400000, "
                   "got 86400001",
                   "t.yaml:7:20: http.max_connections: must be between 1 and 10000000, "
                   "got 0",
                   "t.yaml:8:19: store.max_keys: must be between 1 and 1000000000, got 0"}));
}

TEST(ConfigErrors, BadEndpoints) {
  EXPECT_EQ(Errors("listen: \"localhost\"\nadmin_listen: \"1.2.3.4:70000\"\n"),
            (Lines{"t.yaml:1:9: listen: expected an address and port such as "
                   "\"127.0.0.1:8080\" or \"[::1]:8080\", got \"localhost\"",
                   "t.yaml:2:15: admin_listen: expected an address and port such as "
                   "\"127.0.0.1:8080\" or \"[::1]:8080\", got \"1.2.3.4:70000\""}));
}

TEST(ConfigErrors, TlsNeedsBothFiles) {
  EXPECT_EQ(Errors(R"(
tls:
  cert_file: c.pem
)"),
            (Lines{"t.yaml:2:3: tls: cert_file is set but key_file is not; set both to "
                   "terminate TLS, or neither"}));
  EXPECT_EQ(Errors("tls: {key_file: k.pem}\n"),
            (Lines{"t.yaml:1:6: tls: key_file is set but cert_file is not; set both to "
                   "terminate TLS, or neither"}));
}

TEST(ConfigErrors, BadCidrPointsAtTheListElement) {
  EXPECT_EQ(Errors(R"(
access:
  allow: ["127.0.0.1", "10.0.0.0/33"]
  deny:
    - 10.1.0.0/8
clients: {trusted_proxies: ["::1/128", nope]}
)"),
            (Lines{"t.yaml:2:24: access.allow[1]: expected an IP address or CIDR block "
                   "such as \"10.0.0.0/8\" (no host bits below the prefix), got "
                   "\"10.0.0.0/33\"",
                   "t.yaml:4:7: access.deny[0]: expected an IP address or CIDR block such "
                   "as \"10.0.0.0/8\" (no host bits below the prefix), got \"10.1.0.0/8\"",
                   "t.yaml:5:40: clients.trusted_proxies[1]: expected an IP address or "
                   "CIDR block such as \"10.0.0.0/8\" (no host bits below the prefix), "
                   "got \"nope\""}));
}

TEST(ConfigErrors, StoreEnumsAndRedisNodes) {
  EXPECT_EQ(Errors(R"(
store:
  backend: redis
  on_failure: open
  redis: {mode: sentinel}
)"),
            (Lines{"t.yaml:2:12: store.backend: redis needs at least one node in "
                   "store.redis.nodes",
                   "t.yaml:3:15: store.on_failure: expected one of: allow, deny, local; "
                   "got \"open\"",
                   "t.yaml:4:17: store.redis.mode: expected one of: ring, cluster; got "
                   "\"sentinel\""}));
  EXPECT_EQ(Errors(R"(
store:
  redis: {nodes: ["127.0.0.1:6379", "127.0.0.1:6379", "redis:6379"]}
)"),
            (Lines{"t.yaml:2:37: store.redis.nodes[1]: duplicate node \"127.0.0.1:6379\"",
                   "t.yaml:2:55: store.redis.nodes[2]: expected an address and port such "
                   "as \"127.0.0.1:8080\" or \"[::1]:8080\", got \"redis:6379\""}));
}

TEST(ConfigErrors, ValuesInMessagesAreQuotedAndEscaped) {
  EXPECT_EQ(Errors("headers: \"a \\\"b\\\"\\n\"\n"),
            (Lines{"t.yaml:1:10: headers: expected one of: ietf, legacy; got \"a \\\"b\\\"\\n\""}));
}

TEST(ConfigErrors, HeadersStyle) {
  EXPECT_EQ(Errors("headers: x-ratelimit\n"),
            (Lines{"t.yaml:1:10: headers: expected one of: ietf, legacy; got "
                   "\"x-ratelimit\""}));
}

// ---- Rules ----

TEST(ConfigRules, MissingRequiredKeysPointAtTheRule) {
  EXPECT_EQ(Errors(R"(
rules:
  - match: {path_prefix: "/"}
    key: [ip]
)"),
            (Lines{"t.yaml:2:5: rules[0]: missing required key \"name\"",
                   "t.yaml:2:5: rules[0]: missing required key \"algorithm\"",
                   "t.yaml:2:5: rules[0]: missing required key \"limit\"",
                   "t.yaml:2:5: rules[0]: missing required key \"period\""}));
}

TEST(ConfigRules, NegativeLimit) {
  EXPECT_EQ(Errors(R"(
rules:
  - name: r
    algorithm: token_bucket
    limit: -3
    period: 1s
)"),
            (Lines{"t.yaml:4:12: rules[0].limit: must not be negative, got -3"}));
}

TEST(ConfigRules, LimitBounds) {
  EXPECT_EQ(Errors(R"(
rules:
  - {name: a, algorithm: sliding_window_log, limit: 1048577, period: 1s}
  - {name: b, algorithm: sliding_window_log, limit: 1048576, period: 1s}
  - {name: c, algorithm: fixed_window, limit: 4611686018427387905, period: 1s}
  - {name: d, algorithm: fixed_window, limit: 0, period: 1s}
)"),
            (Lines{"t.yaml:2:53: rules[0].limit: must be at most 1048576 with "
                   "sliding_window_log (it keeps one timestamp per request), got 1048577; "
                   "sliding_window_counter has no such bound",
                   "t.yaml:4:47: rules[2].limit: must be at most 4611686018427387904, got "
                   "4611686018427387905"}));
}

TEST(ConfigRules, UnknownAlgorithmListsTheSix) {
  EXPECT_EQ(Errors(R"(
rules:
  - name: r
    algorithm: token-bucket
    limit: 1
    period: 1s
)"),
            (Lines{"t.yaml:3:16: rules[0].algorithm: unknown algorithm \"token-bucket\"; "
                   "expected one of: token_bucket, leaky_bucket, fixed_window, "
                   "sliding_window_log, sliding_window_counter, gcra"}));
}

TEST(ConfigRules, BadDurations) {
  EXPECT_EQ(Errors(R"(
rules:
  - {name: a, algorithm: gcra, limit: 1, period: 1fortnight}
  - {name: b, algorithm: gcra, limit: 1, period: 60}
  - {name: c, algorithm: gcra, limit: 1, period: 0s}
  - {name: d, algorithm: gcra, limit: 1, period: -1s}
  - {name: e, algorithm: gcra, limit: 1, period: 1.5s}
)"),
            (Lines{"t.yaml:2:50: rules[0].period: expected a duration such as 500ms, 1s, "
                   "1m, 1h or 1d, got \"1fortnight\"",
                   "t.yaml:3:50: rules[1].period: \"60\" has no unit; add one, e.g. "
                   "\"60s\" (units: ms, s, m, h, d)",
                   "t.yaml:4:50: rules[2].period: must be greater than zero",
                   "t.yaml:5:50: rules[3].period: expected a duration such as 500ms, 1s, "
                   "1m, 1h or 1d, got \"-1s\"",
                   "t.yaml:6:50: rules[4].period: expected a duration such as 500ms, 1s, "
                   "1m, 1h or 1d, got \"1.5s\""}));
}

TEST(ConfigRules, BurstOnAWindowAlgorithmIsAnError) {
  EXPECT_EQ(Errors(R"(
rules:
  - name: r
    algorithm: fixed_window
    limit: 10
    period: 1s
    burst: 20
)"),
            (Lines{"t.yaml:6:5: rules[0].burst: fixed_window does not use burst (only "
                   "token_bucket, leaky_bucket and gcra have a bucket capacity); remove "
                   "it"}));
  EXPECT_EQ(Errors(R"(
rules:
  - name: r
    key: [ip]
    algorithm: sliding_window_counter
    limit: 10
    period: 1s
    overrides: [{key: "1.2.3.4", burst: 5}]
)"),
            (Lines{"t.yaml:7:34: rules[0].overrides[0].burst: sliding_window_counter does "
                   "not use burst (only token_bucket, leaky_bucket and gcra have a bucket "
                   "capacity); remove it"}));
}

TEST(ConfigRules, BurstOnABucketAlgorithm) {
  const auto config = Load(R"(
rules:
  - {name: a, algorithm: token_bucket, limit: 10, period: 1s, burst: 1}
  - {name: b, algorithm: leaky_bucket, limit: 10, period: 1s, burst: 4611686018427387904}
  - {name: c, algorithm: fixed_window, limit: 10, period: 1s}
)");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->rules[0].limit.burst, 1u);
  EXPECT_EQ(config->rules[1].limit.burst, kMaxQuantity);
  EXPECT_EQ(config->rules[2].limit.burst, 10u);  // window algorithms: burst == limit
  EXPECT_EQ(Errors(R"(
rules:
  - {name: a, algorithm: gcra, limit: 10, period: 1s, burst: 0}
)"),
            (Lines{"t.yaml:2:62: rules[0].burst: must be between 1 and "
                   "4611686018427387904, got 0"}));
}

TEST(ConfigRules, DelayNeedsMaxDelay) {
  EXPECT_EQ(Errors(R"(
rules:
  - name: r
    algorithm: leaky_bucket
    limit: 10
    period: 1s
    action: delay
)"),
            (Lines{"t.yaml:2:5: rules[0]: action delay needs max_delay_ms (how long a "
                   "request may be held before it is rejected)"}));
  EXPECT_EQ(Errors(R"(
rules:
  - {name: r, algorithm: gcra, limit: 1, period: 1s, action: delay, max_delay_ms: 0}
  - {name: s, algorithm: gcra, limit: 1, period: 1s, max_delay_ms: 100}
  - {name: t, algorithm: gcra, limit: 1, period: 1s, action: wait}
)"),
            (Lines{"t.yaml:2:83: rules[0].max_delay_ms: must be between 1 and 86400000, "
                   "got 0",
                   "t.yaml:3:54: rules[1].max_delay_ms: applies only to action: delay; "
                   "remove it",
                   "t.yaml:4:62: rules[2].action: expected one of: reject, delay, shadow; "
                   "got \"wait\""}));
  const auto config = Load(R"(
rules:
  - {name: r, algorithm: leaky_bucket, limit: 1, period: 1s, action: delay, max_delay_ms: 250}
  - {name: s, algorithm: gcra, limit: 1, period: 1s, action: shadow, on_missing_key: anonymous}
)");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->rules[0].action, Action::kDelay);
  EXPECT_EQ(config->rules[0].max_delay, milliseconds(250));
  EXPECT_EQ(config->rules[1].action, Action::kShadow);
  EXPECT_EQ(config->rules[1].on_missing_key, OnMissingKey::kAnonymous);
}

TEST(ConfigRules, DuplicateAndMalformedRuleNames) {
  EXPECT_EQ(Errors(R"(
rules:
  - {name: api, algorithm: gcra, limit: 1, period: 1s}
  - {name: "my rule", algorithm: gcra, limit: 1, period: 1s}
  - {name: api, algorithm: gcra, limit: 2, period: 1s}
)"),
            (Lines{"t.yaml:3:12: rules[1].name: must be letters, digits, '_', '.' or '-', "
                   "got \"my rule\"",
                   "t.yaml:4:12: rules[2].name: duplicate rule name \"api\" (first used by "
                   "rules[0], line 2)"}));
}

TEST(ConfigRules, MatchIsNormalised) {
  const auto config = Load(R"(
rules:
  - name: r
    match: {path_prefix: "/v1/", methods: [get, Post], hosts: ["API.Example.com:8443", "[::1]:80"]}
    algorithm: gcra
    limit: 1
    period: 1s
  - name: s
    match: {host: "Example.ORG"}
    algorithm: gcra
    limit: 1
    period: 1s
)");
  ASSERT_NE(config, nullptr);
  EXPECT_EQ(config->rules[0].path_prefix, "/v1/");
  EXPECT_EQ(config->rules[0].methods, (std::vector<std::string>{"GET", "POST"}));
  EXPECT_EQ(config->rules[0].hosts, (std::vector<std::string>{"api.example.com", "[::1]"}));
  EXPECT_EQ(config->rules[1].hosts, (std::vector<std::string>{"example.org"}));
}

TEST(ConfigRules, BadMatch) {
  EXPECT_EQ(Errors(R"(
rules:
  - name: r
    match:
      path_prefix: api/
      methods: ["GET", "BAD METHOD"]
      host: a.example
      hosts: [b.example, "c.example:port"]
    algorithm: gcra
    limit: 1
    period: 1s
)"),
            (Lines{"t.yaml:4:20: rules[0].match.path_prefix: must start with '/', got "
                   "\"api/\"",
                   "t.yaml:5:24: rules[0].match.methods[1]: expected an HTTP method such "
                   "as GET, got \"BAD METHOD\"",
                   "t.yaml:7:7: rules[0].match: use either host or hosts, not both"}));
}

TEST(ConfigRules, KeyParts) {
  const auto config = Load(R"(
rules:
  - name: r
    key: [ip, authorization, path, method, host, "header:X-API-Key", "query:Page"]
    algorithm: gcra
    limit: 1
    period: 1s
)");
  ASSERT_NE(config, nullptr);
  const std::vector<KeyPart>& key = config->rules[0].key;
  ASSERT_EQ(key.size(), 7u);
  EXPECT_EQ(key[0].kind, KeyPartKind::kIp);
  EXPECT_EQ(key[1].kind, KeyPartKind::kAuthorization);
  EXPECT_EQ(key[2].kind, KeyPartKind::kPath);
  EXPECT_EQ(key[3].kind, KeyPartKind::kMethod);
  EXPECT_EQ(key[4].kind, KeyPartKind::kHost);
  EXPECT_EQ(key[5].kind, KeyPartKind::kHeader);
  EXPECT_EQ(key[5].name, "x-api-key");  // header names are case-insensitive
  EXPECT_EQ(key[6].kind, KeyPartKind::kQuery);
  EXPECT_EQ(key[6].name, "Page");  // query parameter names are not
}

TEST(ConfigRules, BadKeyParts) {
  EXPECT_EQ(Errors(R"(
rules:
  - name: r
    key: [ip, "header:X-Api-Key", "header:x-api-key", "header:", cookie, "query:", IP]
    algorithm: gcra
    limit: 1
    period: 1s
)"),
            (Lines{"t.yaml:3:35: rules[0].key[2]: duplicate key part \"header:x-api-key\"",
                   "t.yaml:3:55: rules[0].key[3]: expected header:NAME with an HTTP header "
                   "name such as header:x-api-key, got \"header:\"",
                   "t.yaml:3:66: rules[0].key[4]: unknown key part \"cookie\"; expected ip, "
                   "authorization, path, method, host, header:NAME or query:NAME",
                   "t.yaml:3:74: rules[0].key[5]: expected query:NAME with a query "
                   "parameter name such as query:api_key, got \"query:\"",
                   "t.yaml:3:84: rules[0].key[6]: unknown key part \"IP\"; expected ip, "
                   "authorization, path, method, host, header:NAME or query:NAME"}));
  EXPECT_EQ(Errors(R"(
rules:
  - {name: r, key: ip, algorithm: gcra, limit: 1, period: 1s}
)"),
            (Lines{"t.yaml:2:20: rules[0].key: expected a list, got \"ip\""}));
}

TEST(ConfigRules, OverridesInheritTheRulesValues) {
  const auto config = Load(R"(
rules:
  - name: plain
    key: ["header:x-api-key"]
    algorithm: token_bucket
    limit: 100
    period: 1m
    overrides:
      - {key: "premium-123", limit: 1000}
      - {key: "slow", period: 1h}
      - {key: "spiky", burst: 500}
  - name: with-burst
    key: [ip, "header:x-api-key"]
    algorithm: gcra
    limit: 100
    period: 1m
    burst: 20
    overrides:
      - {key: "10.0.0.1|premium-123", limit: 1000}
)");
  ASSERT_NE(config, nullptr);
  const std::vector<Override>& plain = config->rules[0].overrides;
  ASSERT_EQ(plain.size(), 3u);
  EXPECT_EQ(plain[0].key, "premium-123");
  // The rule's burst was "equal to limit", so the override's is its own limit.
  EXPECT_EQ(plain[0].limit, Limit::PerPeriod(1000, minutes(1)));
  EXPECT_EQ(plain[1].limit, Limit::PerPeriod(100, std::chrono::hours(1)));
  EXPECT_EQ(plain[2].limit, (Limit{.limit = 100, .period = minutes(1), .burst = 500}));
  // A burst the rule sets explicitly is inherited like its other fields.
  const std::vector<Override>& with_burst = config->rules[1].overrides;
  ASSERT_EQ(with_burst.size(), 1u);
  EXPECT_EQ(with_burst[0].key, "10.0.0.1|premium-123");
  EXPECT_EQ(with_burst[0].limit, (Limit{.limit = 1000, .period = minutes(1), .burst = 20}));
}

TEST(ConfigRules, BadOverrides) {
  EXPECT_EQ(Errors(R"(
rules:
  - name: r
    key: [ip]
    algorithm: sliding_window_log
    limit: 10
    period: 1m
    overrides:
      - {limit: 5}
      - {key: a, limit: -1, period: 5, colour: red}
      - {key: b, limit: 2000000}
      - {key: c}
      - {key: c, limit: 1}
  - name: global
    algorithm: gcra
    limit: 1
    period: 1s
    overrides: [{key: x, limit: 2}]
)"),
            (Lines{"t.yaml:8:9: rules[0].overrides[0]: missing required key \"key\"",
                   "t.yaml:9:25: rules[0].overrides[1].limit: must not be negative, got -1",
                   "t.yaml:9:37: rules[0].overrides[1].period: \"5\" has no unit; add "
                   "one, e.g. \"5s\" (units: ms, s, m, h, d)",
                   "t.yaml:9:40: unknown key \"colour\" in rules[0].overrides[1]; expected "
                   "one of: key, limit, period, burst",
                   "t.yaml:10:25: rules[0].overrides[2].limit: must be at most 1048576 "
                   "with sliding_window_log (it keeps one timestamp per request), got "
                   "2000000; sliding_window_counter has no such bound",
                   "t.yaml:12:9: rules[0].overrides[4]: duplicate override key \"c\" "
                   "(first on line 11)",
                   "t.yaml:17:5: rules[1].overrides: the rule has no key (all clients "
                   "share one counter), so there is no client key to override"}));
}

// ---- Routes and upstreams ----

TEST(ConfigGateway, RoutesAndUpstreams) {
  const auto config = Load(R"(
routes:
  - {upstream: b}
  - {host: "Shop.Example.com", path_prefix: "/shop/", upstream: a}
upstreams:
  b:
    servers: [{address: "127.0.0.1:1"}]
  a:
    balance: hash
    servers: [{address: "[::1]:2", weight: 1000}]
    circuit_breaker: {consecutive_failures: 1, open_ms: 1}
    health_check: {path: "/up", unhealthy_threshold: 5, healthy_threshold: 1}
    fallback: b
    tls: true
)");
  ASSERT_NE(config, nullptr);
  ASSERT_EQ(config->routes.size(), 2u);
  EXPECT_EQ(config->routes[0].path_prefix, "/");
  EXPECT_EQ(config->routes[0].host, "");
  EXPECT_EQ(config->routes[1].host, "shop.example.com");
  ASSERT_EQ(config->upstreams.size(), 2u);
  EXPECT_EQ(config->upstreams[0].name, "b");
  EXPECT_EQ(config->upstreams[0].balance, Upstream::Balance::kRoundRobin);
  EXPECT_EQ(config->upstreams[0].servers.at(0).weight, 1u);
  const Upstream& a = config->upstreams[1];
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.balance, Upstream::Balance::kHash);
  EXPECT_EQ(a.servers.at(0).weight, 1000u);
  EXPECT_EQ(a.circuit_consecutive_failures, 1u);
  EXPECT_EQ(a.circuit_open, milliseconds(1));
  EXPECT_EQ(a.health_check_path, "/up");
  EXPECT_EQ(a.health_check_interval, milliseconds(2000));
  EXPECT_EQ(a.unhealthy_threshold, 5u);
  EXPECT_EQ(a.healthy_threshold, 1u);
  EXPECT_EQ(config->upstreams[0].health_check_path, "");
  EXPECT_EQ(config->upstreams[0].unhealthy_threshold, 3u);
  EXPECT_EQ(config->upstreams[0].healthy_threshold, 2u);
  EXPECT_EQ(a.fallback, "b");
  EXPECT_TRUE(a.tls);
}

TEST(ConfigGateway, BadRoutesAndUpstreams) {
  EXPECT_EQ(Errors(R"(
routes:
  - {path_prefix: "/"}
  - {upstream: missing, path_prefix: x}
upstreams:
  app:
    balance: fastest
    servers: []
    fallback: app
  web:
    servers: [{address: "127.0.0.1:80", weight: 0}, {weight: 2}]
    health_check: {path: healthz, interval_ms: 0, healthy_threshold: 0}
    fallback: nowhere
)"),
            (Lines{"t.yaml:2:5: routes[0]: missing required key \"upstream\"",
                   "t.yaml:3:16: routes[1].upstream: unknown upstream \"missing\" "
                   "(defined: app, web)",
                   "t.yaml:3:38: routes[1].path_prefix: must start with '/', got \"x\"",
                   "t.yaml:6:14: upstreams.app.balance: expected one of: round_robin, "
                   "weighted_round_robin, least_connections, hash, random; got "
                   "\"fastest\"",
                   "t.yaml:7:14: upstreams.app.servers: needs at least one server",
                   "t.yaml:8:15: upstreams.app.fallback: an upstream cannot be its own "
                   "fallback",
                   "t.yaml:10:49: upstreams.web.servers[0].weight: must be between 1 and "
                   "1000, got 0",
                   "t.yaml:10:53: upstreams.web.servers[1]: missing required key "
                   "\"address\"",
                   "t.yaml:11:26: upstreams.web.health_check.path: must start with '/', "
                   "got \"healthz\"",
                   "t.yaml:11:48: upstreams.web.health_check.interval_ms: must be between "
                   "1 and 86400000, got 0",
                   "t.yaml:11:70: upstreams.web.health_check.healthy_threshold: must be "
                   "between 1 and 1000, got 0",
                   "t.yaml:12:15: upstreams.web.fallback: unknown upstream \"nowhere\" "
                   "(defined: app, web)"}));
}

// ---- Many errors at once ----

TEST(ConfigErrors, EveryErrorIsReportedInFileOrder) {
  const LoadResult result = LoadConfigText(Text(R"(
listen: "0.0.0.0:99999"
rules:
  - name: a
    algorithm: fixed_window
    limit: 10
    period: 10
    burst: 5
  - name: b
    algorithm: leaky_bucket
    limit: 1
    period: 1s
    action: delay
access:
  deny: ["300.0.0.0/8"]
bogus: true
)"),
                                           "multi.yaml");
  EXPECT_EQ(result.config, nullptr);
  std::vector<std::string> lines;
  for (const ConfigError& error : result.errors) lines.push_back(error.ToString());
  EXPECT_EQ(
      lines,
      (Lines{
          "multi.yaml:1:9: listen: expected an address and port such as "
          "\"127.0.0.1:8080\" or \"[::1]:8080\", got \"0.0.0.0:99999\"",
          "multi.yaml:6:13: rules[0].period: \"10\" has no unit; add one, e.g. \"10s\" "
          "(units: ms, s, m, h, d)",
          "multi.yaml:7:5: rules[0].burst: fixed_window does not use burst (only "
          "token_bucket, leaky_bucket and gcra have a bucket capacity); remove it",
          "multi.yaml:8:5: rules[1]: action delay needs max_delay_ms (how long a request "
          "may be held before it is rejected)",
          "multi.yaml:14:10: access.deny[0]: expected an IP address or CIDR block such "
          "as \"10.0.0.0/8\" (no host bits below the prefix), got \"300.0.0.0/8\"",
          "multi.yaml:15:1: unknown key \"bogus\" at the top level; expected one of: "
          "listen, admin_listen, grpc_listen, grpc_server, envoy_ratelimit_configs, decision_api, "
          "workers, http, tls, "
          "clients, access, "
          "store, rules, routes, upstreams, headers, access_log"}));
  ASSERT_EQ(result.errors.size(), 6u);
  EXPECT_EQ(result.errors[1].file, "multi.yaml");
  EXPECT_EQ(result.errors[1].line, 6);
  EXPECT_EQ(result.errors[1].column, 13);
}

// ---- Files ----

TEST(ConfigFiles, MissingFileIsOneError) {
  const LoadResult result = LoadConfigFile("/nonexistent/sluice.yaml");
  EXPECT_EQ(result.config, nullptr);
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].line, 0);
  EXPECT_EQ(result.errors[0].ToString(),
            "/nonexistent/sluice.yaml: cannot read: No such file or directory");
}

TEST(ConfigFiles, DirectoryIsOneError) {
  const LoadResult result = LoadConfigFile(SLUICE_SOURCE_DIR);
  EXPECT_EQ(result.config, nullptr);
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].ToString(),
            std::string(SLUICE_SOURCE_DIR) + ": cannot read: Is a directory");
}

TEST(ConfigFiles, ErrorsNameTheFile) {
  const std::string path = testing::TempDir() + "sluice_config_test.yaml";
  {
    std::ofstream out(path);
    out << "workers: 1\nworkers_count: 2\n";
  }
  const LoadResult result = LoadConfigFile(path);
  std::remove(path.c_str());
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].file, path);
  EXPECT_EQ(result.errors[0].line, 2);
  EXPECT_EQ(result.errors[0].column, 1);
}

}  // namespace
}  // namespace sluice::config
