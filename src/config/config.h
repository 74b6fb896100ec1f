// The validated, immutable configuration of a sluice process (../shared/design.md,
// "Configuration (YAML)"), and the loader that builds it from YAML.
//
// A Config is built once per load, completely validated, and never changed; workers
// hold it through std::shared_ptr<const Config> and swap to a new one on reload. A
// load either yields a Config or a list of errors, each with FILE:LINE:COL, never a
// partly valid Config.
//
// Thread-safety: a const Config may be read from any thread.
#ifndef SLUICE_CONFIG_CONFIG_H_
#define SLUICE_CONFIG_CONFIG_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/balance_policy.h"
#include "net/address.h"
#include "sluice/clock.h"
#include "sluice/limiter.h"

namespace sluice::config {

using namespace std::chrono_literals;

struct HttpLimits {
  size_t max_header_bytes = 16384;     // request line + headers; larger: 431
  size_t max_body_bytes = 10485760;    // larger: 413
  Duration header_timeout = 10'000ms;  // headers not complete by then: 408 and close
  Duration idle_timeout = 60'000ms;    // keep-alive connection with no request: close
  size_t max_connections = 100000;     // per process, over all workers
};

struct TlsConfig {
  std::string cert_file;  // both empty: no TLS
  std::string key_file;
};

enum class KeyPartKind { kIp, kHeader, kAuthorization, kPath, kMethod, kHost, kQuery };

struct KeyPart {
  KeyPartKind kind = KeyPartKind::kIp;
  // kHeader: the header name, lower-cased; kQuery: the parameter name as written.
  std::string name;
};

// A key part as written: "ip", "authorization", "path", "method", "host",
// "header:NAME" (an HTTP field name) or "query:NAME". `name` views `text` (a header
// name not lower-cased). nullopt, with the reason in `error`, for anything else; the
// message shows the text as `shown` (quoted, or as the config wrote it).
struct KeyPartText {
  KeyPartKind kind = KeyPartKind::kIp;
  std::string_view name;
};
std::optional<KeyPartText> ParseKeyPartText(std::string_view text, std::string_view shown,
                                            std::string* error);

enum class Action { kReject, kDelay, kShadow };
enum class OnMissingKey { kSkip, kReject, kAnonymous };

// Replaces a rule's limit for one client key. `key` is compared with the client key
// before hashing: the key parts' values joined with '|' (for a one-part key, just
// its value, e.g. the API key "premium-123").
struct Override {
  std::string key;
  Limit limit;  // absent limit/period: the rule's; absent burst: the rule's if set, else this limit
};

struct Rule {
  std::string name;  // unique among rules; [A-Za-z0-9_.-]+
  // match: all given conditions must hold; absent ones match everything.
  std::string path_prefix;           // "" = every path
  std::vector<std::string> methods;  // upper-case; empty = every method
  std::vector<std::string> hosts;    // lower-case, without port; empty = every host
  std::vector<KeyPart> key;          // in order; empty = one shared counter for the rule
  Algorithm algorithm = Algorithm::kTokenBucket;
  Limit limit;  // burst == limit when absent; window algorithms: burst == limit
  Action action = Action::kReject;
  Duration max_delay = 0ms;  // delay only
  OnMissingKey on_missing_key = OnMissingKey::kSkip;
  std::vector<Override> overrides;
};

struct RedisConfig {
  enum class Mode { kRing, kCluster };
  Mode mode = Mode::kRing;
  std::vector<net::Endpoint> nodes;
  Duration connect_timeout = 200ms;
  Duration command_timeout = 20ms;
};

struct StoreConfig {
  enum class Backend { kMemory, kRedis };
  enum class OnFailure { kAllow, kDeny, kLocal };
  Backend backend = Backend::kMemory;
  size_t max_keys = 1'000'000;
  RedisConfig redis;
  OnFailure on_failure = OnFailure::kAllow;
};

struct AccessLogConfig {
  bool enabled = true;
  std::string path = "stdout";  // "stdout" or a file path, appended to
};

// Gateway mode (a later issue): parsed and validated now so the contract's example
// config loads; the server refuses to start with routes until proxying exists.
struct Route {
  std::string host;  // "" = any
  std::string path_prefix = "/";
  std::string upstream;  // a key of Config::upstreams
};

struct UpstreamServer {
  net::Endpoint address;
  uint32_t weight = 1;
};

struct Upstream {
  std::string name;
  using Balance = BalancePolicy;
  Balance balance = Balance::kRoundRobin;
  std::vector<UpstreamServer> servers;
  std::string health_check_path;  // "" = no active checks
  Duration health_check_interval = 2000ms;
  // Failed checks in a row that mark a server down, passed ones that mark it up
  // (HAProxy's fall 3 / rise 2; src/http/upstream_health.h).
  uint32_t unhealthy_threshold = 3;
  uint32_t healthy_threshold = 2;
  uint32_t circuit_consecutive_failures = 5;
  Duration circuit_open = 10'000ms;
  std::string fallback;  // another upstream's name, or ""
  bool tls = false;
  // timeouts: {connect_ms, first_byte_ms, idle_ms}, as nginx's proxy_connect_timeout
  // and proxy_read_timeout (first byte, then between reads).
  Duration connect_timeout = 5000ms;
  Duration first_byte_timeout = 60'000ms;
  Duration idle_timeout = 60'000ms;
  // Idle keep-alive connections each worker keeps per server (nginx's `keepalive`).
  uint32_t max_idle_connections = 32;
};

struct Config {
  std::string source;  // file name, or "<embedded quickstart>"

  net::Endpoint listen;        // default 0.0.0.0:8080
  net::Endpoint admin_listen;  // default 127.0.0.1:9090
  std::optional<net::Endpoint> grpc_listen;
  // Who serves grpc_listen: sluice's own HTTP/2 on the workers' loops (nghttp2), or
  // the gRPC C++ library on a completion queue per worker (docs/decision-api.md).
  enum class GrpcServer { kNative, kGrpcCpp };
  GrpcServer grpc_server = GrpcServer::kNative;
  // Files or directories (every *.yaml/*.yml in it) in envoyproxy/ratelimit's own
  // format, served on grpc_listen (docs/decision-api.md); paths as given, like tls's.
  std::vector<std::string> envoy_ratelimit_configs;
  // POST /v1/check and GET /v1/auth answered on `listen` (docs/decision-api.md); false
  // leaves those paths to the rules and routes like any other (a gateway whose
  // upstreams use them).
  bool decision_api = true;
  unsigned workers = 0;  // 0 = one per core
  HttpLimits http;
  TlsConfig tls;
  net::CidrList trusted_proxies;
  net::CidrList allow;  // never limited
  net::CidrList deny;   // always 403
  StoreConfig store;
  std::vector<Rule> rules;
  // `headers: legacy` adds X-RateLimit-Limit/-Remaining/-Reset to the IETF fields.
  bool legacy_headers = false;
  AccessLogConfig access_log;
  std::vector<Route> routes;
  std::vector<Upstream> upstreams;
};

struct ConfigError {
  std::string file;
  int line = 0;    // 1-based; 0 when the error is not tied to a place
  int column = 0;  // 1-based
  std::string message;
  // "FILE:LINE:COL: message"
  std::string ToString() const;
};

struct LoadResult {
  std::shared_ptr<const Config> config;  // null when errors is not empty
  std::vector<ConfigError> errors;
};

// Parses and validates YAML text; `source` names it in errors.
LoadResult LoadConfigText(std::string_view text, std::string_view source);
// Reads FILE and loads it; an unreadable file is one error naming the file.
LoadResult LoadConfigFile(const std::string& path);
// The text of examples/quickstart.yaml, built into the binary.
std::string_view EmbeddedQuickstart();
constexpr std::string_view kEmbeddedQuickstartName = "<embedded quickstart>";

}  // namespace sluice::config

#endif  // SLUICE_CONFIG_CONFIG_H_
