// envoyproxy/ratelimit's own YAML configuration (a `domain` and a tree of
// `descriptors`), loaded and matched the way that service does, so that sluice can
// stand in for it behind Envoy's rate limit filter with the same config files.
//
// The format and the matching rules follow the service's README ("The configuration
// format", Examples 1-9) and src/config/config_impl.go. On top of it, sluice accepts
// two keys inside `rate_limit`: `algorithm` (default fixed_window, which is what the
// service counts: windows of one unit aligned to the Unix epoch) and `burst` (only for
// token_bucket, leaky_bucket and gcra, as in sluice's own config).
//
// Where this deliberately differs from the service (all of them stricter at load, none
// changes what a config the service accepts means for a request):
// - Keys and values are compared as a pair. The service joins them into one string
//   "key_value" before looking up, so there (key "a", value "b_c") and (key "a_b",
//   value "c") are the same entry; here they are kept apart at match time, and a config
//   that holds both is refused, as the service refuses it.
// - `*` is a wildcard only in values. (The service's string join makes a `*` in a
//   key-only entry a wildcard over "key_value"; nothing documents that.)
// - Unknown keys are errors where they stand, not only when unknown anywhere in the
//   file. The service's newer keys quota_mode, value_to_metric, share_threshold and
//   metadata are refused by name, as sluice does not implement them.
// - A missing requests_per_unit is an error (the service reads it as 0, which refuses
//   every request); an explicit 0 is kept and denies everything, as README Example 3
//   ("Black list IP") uses it.
// - Booleans are true/false (YAML 1.2), not yes/no/on/off.
//
// A RateLimitConfig is built once per load, fully validated, and never changed; a load
// yields either a config or a list of errors, each with FILE:LINE:COL.
//
// Thread-safety: a const RateLimitConfig may be read from any thread. Match() does not
// allocate.
#ifndef SLUICE_RLS_RATELIMIT_CONFIG_H_
#define SLUICE_RLS_RATELIMIT_CONFIG_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"
#include "sluice/clock.h"
#include "sluice/limiter.h"

namespace sluice::rls {

// rate_limit.unit. The service's time dividers (src/utils/utilities.go,
// UnitToDivider): a week is 7 days, a month 30 days and a year 365 days, with no
// calendar; sluice uses the same lengths, so the windows line up with the service's.
enum class Unit : uint8_t { kSecond, kMinute, kHour, kDay, kWeek, kMonth, kYear };

// "second", "minute", ...
std::string_view UnitName(Unit unit);
Duration UnitDuration(Unit unit);

// The limit of one config descriptor (one `rate_limit` block).
struct RlsLimit {
  // rate_limit.name: what another limit's `replaces` names. "" = cannot be replaced.
  std::string name;
  // rate_limit.replaces[*].name: matched limits of the same request with one of these
  // names are dropped (IsReplaced).
  std::vector<std::string> replaces;
  // Never limited: answer OK without counting. requests_per_unit, unit, algorithm and
  // limit are then unused.
  bool unlimited = false;
  uint32_t requests_per_unit = 0;  // 0 denies every request
  Unit unit = Unit::kSecond;
  Algorithm algorithm = Algorithm::kFixedWindow;
  Limit limit;  // requests_per_unit per UnitDuration(unit); burst as configured
  // The descriptor's shadow_mode: count and report, but always answer OK.
  bool shadow_mode = false;
  // The descriptor's detailed_metric: name stats by the request's values (StatsKey).
  bool detailed_metric = false;
  // The name the service gives this limit's stats: the domain and each level's "key" or
  // "key_value" as written in the config, joined with '.' ("messaging.to_number",
  // "mongo_cps.database_users", "example9.key1_value*").
  std::string full_key;
  // Where the rate_limit block is written, for errors found later (e.g. a store that
  // cannot hold this limit exactly).
  std::string file;
  int line = 0;  // 1-based
  int column = 0;
};

// One YAML document and the name errors give it (a file path, usually).
struct Source {
  std::string_view text;
  std::string_view name;
};

// One (key, value) entry of a request descriptor, in request order.
using Entry = std::pair<std::string_view, std::string_view>;

class RateLimitConfig;

struct LoadResult {
  std::shared_ptr<const RateLimitConfig> config;  // null when errors is not empty
  std::vector<config::ConfigError> errors;        // in file order, then line and column
};

class RateLimitConfig {
 public:
  // Each source is one file with one domain. Every problem in every file is reported.
  static LoadResult Load(std::span<const Source> files);
  // Reads each path; a directory contributes every *.yaml and *.yml file directly in it
  // (not in subdirectories, not names starting with '.'), sorted by name. A file named
  // directly is read whatever its name. An unreadable path, or a directory without
  // such files, is an error naming it.
  static LoadResult LoadPaths(const std::vector<std::string>& files_or_directories);

  // The limit for one request descriptor, found as the service finds it: each entry
  // descends one level of the domain's tree, preferring the config entry whose key
  // and value equal the entry's, then the first (in file order) whose wildcard value
  // matches, then the one with the key and no value. The limit is that of the node the
  // last entry reaches; nullptr when an entry finds no node, when the request has more
  // entries than the tree has levels there, or when the node reached has no
  // rate_limit. An unlimited limit is returned (check `unlimited`).
  // The result points into this config and lives as long as it. Allocation-free.
  const RlsLimit* Match(std::string_view domain, std::span<const Entry> entries) const;

  // Every limit of every domain, in load order.
  std::span<const RlsLimit> limits() const { return limits_; }
  bool HasDomain(std::string_view domain) const;

  RateLimitConfig(const RateLimitConfig&) = delete;
  RateLimitConfig& operator=(const RateLimitConfig&) = delete;
  ~RateLimitConfig();

 private:
  struct Node;
  // The config entries of one level of a domain's tree.
  struct Level {
    // Entries with a value (wildcard values too, compared literally here, as the
    // service's map lookup does), sorted by (key, value).
    std::vector<uint32_t> valued;
    // Entries whose value holds '*', in file order: the first that matches wins.
    std::vector<uint32_t> wildcards;
    // Entries without a value, sorted by key.
    std::vector<uint32_t> key_only;
  };
  struct Domain {
    std::string name;
    Level root;
  };
  class Loader;

  RateLimitConfig();
  const Node* FindChild(const Level& level, std::string_view key, std::string_view value) const;

  std::vector<Node> nodes_;
  std::vector<Domain> domains_;  // sorted by name
  std::vector<RlsLimit> limits_;
};

// Whether `limit`, matched for one request, is dropped by `replaces`: `matched` holds
// every limit matched for that request, one slot per request descriptor (nullptr where
// none matched), `limit` among them. As in the service (src/service/ratelimit.go), a
// limited (not unlimited) limit with a name is dropped when any matched limit,
// unlimited ones included, names it in its `replaces`; a dropped limit is neither
// checked nor counted, and the replacing one applies as usual. The decision reads the
// whole set, so two limits that replace each other are both dropped, as there.
// Allocation-free.
bool IsReplaced(std::span<const RlsLimit* const> matched, const RlsLimit& limit);

// The key the service files this match's stats under: `limit.full_key`, or, when the
// limit has detailed_metric, the domain followed by ".key_value" for each request entry
// ("example8.key1_unspecified_value"). Written into `out` (cleared first), so a caller
// that reuses `out` does not allocate once it is large enough.
void StatsKey(std::string_view domain, std::span<const Entry> entries, const RlsLimit& limit,
              std::string& out);

// With store.backend redis: one error for each limit that the Redis scripts cannot
// decide exactly (store::FitsRedisArithmetic), at its rate_limit block.
std::vector<config::ConfigError> RedisLimitErrors(const RateLimitConfig& config);

}  // namespace sluice::rls

#endif  // SLUICE_RLS_RATELIMIT_CONFIG_H_
