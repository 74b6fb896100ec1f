// YAML -> validated Config. The loader walks the document once, checks every key
// against the contract (../shared/design.md, "Configuration (YAML)") and keeps going
// after an error, so one `sluice check-config` run lists every problem in the file,
// each at the node that causes it. Only when no error was found is a Config handed
// out; a half-checked Config never leaves this file.
//
// yaml-cpp's own conversions (`as<uint64_t>`, `as<bool>`) accept too much ("0x10",
// "1e3" and "yes" all convert), so scalars are read as text and checked here.
#include "config/config.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <sstream>
#include <utility>

#include "config/yaml_document.h"
#include "core/units.h"
#include "store/redis_scripts.h"

namespace sluice::config {
namespace {

constexpr uint64_t kMaxMillis = 86'400'000;  // one day: the ceiling of every *_ms field

// A node with what an error about it needs: where to point and how to name it.
struct Item {
  YAML::Node node;
  YAML::Mark mark;   // the node's own position, or its key's when the value is empty
  std::string path;  // "rules[0].limit"; "" for the document itself
  // An empty map value (`store:`) reads as an empty map or list; an empty list
  // element ("- " alone) is a mistake.
  bool list_element = false;
};

// One key of a YAML map, as written.
struct Entry {
  std::string name;
  YAML::Mark key_mark;
  Item value;
};

// The entries of a map whose keys were checked against an allowed set.
class Fields {
 public:
  Fields(Item self, std::vector<Entry> entries)
      : self_(std::move(self)), entries_(std::move(entries)) {}
  const Item& self() const { return self_; }
  const Entry* Find(std::string_view name) const {
    for (const Entry& entry : entries_) {
      if (entry.name == name) return &entry;
    }
    return nullptr;
  }
  const Item* Value(std::string_view name) const {
    const Entry* entry = Find(name);
    return entry == nullptr ? nullptr : &entry->value;
  }

 private:
  Item self_;
  std::vector<Entry> entries_;
};

std::string Join(std::initializer_list<std::string_view> names, std::string_view separator) {
  std::string out;
  for (std::string_view name : names) {
    if (!out.empty()) out += separator;
    out += name;
  }
  return out;
}

std::string IndexPath(const std::string& parent, size_t index) {
  return fmt::format("{}[{}]", parent, index);
}

// A plain (unquoted, untagged) scalar, or one tagged explicitly with `tag`. A quoted
// "100" is a string: numbers and booleans are written without quotes.
bool IsPlainOrTagged(const YAML::Node& node, std::string_view tag) {
  return node.Tag() == "?" || node.Tag() == tag;
}

// RFC 9110 token characters: header field names and methods.
bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsToken(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), IsTokenChar);
}

// Rule and upstream names: [A-Za-z0-9_.-]+ (they appear in metrics labels and headers).
bool IsName(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string Upper(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

// A Host as the request carries it ("Api.Example.com:8443", "[::1]:80") -> the form
// rules compare with: lower-case, without the port. nullopt when it cannot be a host.
std::optional<std::string> NormalizeHost(std::string_view text) {
  const auto is_port = [](std::string_view port) { return ParseCount(port).has_value(); };
  std::string_view host = text;
  if (!host.empty() && host.front() == '[') {
    const size_t close = host.find(']');
    if (close == std::string_view::npos || close == 1) return std::nullopt;
    const std::string_view rest = host.substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' || !is_port(rest.substr(1)))) return std::nullopt;
    host = host.substr(0, close + 1);
  } else if (std::count(host.begin(), host.end(), ':') == 1) {
    // One colon separates a port; more than one is a bare IPv6 address.
    const size_t colon = host.find(':');
    if (!is_port(host.substr(colon + 1))) return std::nullopt;
    host = host.substr(0, colon);
  }
  if (host.empty()) return std::nullopt;
  for (char c : host) {
    if (static_cast<unsigned char>(c) <= ' ' || c == '/' || c == '\x7f') return std::nullopt;
  }
  return Lower(host);
}

template <typename T>
struct Choice {
  std::string_view name;
  T value;
};

class Loader {
 public:
  explicit Loader(std::string_view source) : source_(source) {}

  std::vector<ConfigError> TakeErrors() {
    std::stable_sort(errors_.begin(), errors_.end(),
                     [](const ConfigError& a, const ConfigError& b) {
                       return std::pair(a.line, a.column) < std::pair(b.line, b.column);
                     });
    return std::move(errors_);
  }

  void ErrorAt(const YAML::Mark& mark, std::string message) {
    ConfigError error{.file = source_, .message = std::move(message)};
    if (!mark.is_null()) {
      error.line = mark.line + 1;
      error.column = mark.column + 1;
    }
    errors_.push_back(std::move(error));
  }
  void Error(const Item& item, std::string_view message) {
    ErrorAt(item.mark,
            item.path.empty() ? std::string(message) : fmt::format("{}: {}", item.path, message));
  }

  void LoadDocument(const Item& root, Config& config);

 private:
  // ---- Structure ----

  // The entries of a map in file order. An empty value (`store:`) is an empty map.
  std::optional<std::vector<Entry>> Entries(const Item& item) {
    if (item.node.IsNull() && !item.list_element) return std::vector<Entry>{};
    if (!item.node.IsMap()) {
      Error(item, fmt::format("expected a map, got {}", DescribeYamlValue(item.node)));
      return std::nullopt;
    }
    std::vector<Entry> entries;
    for (const auto& pair : item.node) {
      const YAML::Node& key = pair.first;
      if (!key.IsScalar()) {
        ErrorAt(key.Mark(),
                fmt::format("{}: keys must be plain strings, got {}",
                            item.path.empty() ? "top level" : item.path, DescribeYamlValue(key)));
        continue;
      }
      const std::string name = key.Scalar();
      if (std::any_of(entries.begin(), entries.end(),
                      [&](const Entry& e) { return e.name == name; })) {
        ErrorAt(key.Mark(),
                fmt::format("duplicate key \"{}\" {}", name,
                            item.path.empty() ? "at the top level" : "in " + item.path));
        continue;
      }
      YAML::Mark value_mark = pair.second.Mark();
      if (pair.second.IsNull() || value_mark.is_null()) value_mark = key.Mark();
      entries.push_back(
          Entry{name, key.Mark(), Item{pair.second, value_mark, YamlChildPath(item.path, name)}});
    }
    return entries;
  }

  // A map whose keys must be among `allowed`; unknown keys are errors at the key.
  std::optional<Fields> Map(const Item& item, std::initializer_list<std::string_view> allowed) {
    std::optional<std::vector<Entry>> entries = Entries(item);
    if (!entries) return std::nullopt;
    std::vector<Entry> known;
    for (Entry& entry : *entries) {
      if (std::find(allowed.begin(), allowed.end(), entry.name) == allowed.end()) {
        ErrorAt(entry.key_mark,
                fmt::format("unknown key \"{}\" {}; expected one of: {}", entry.name,
                            item.path.empty() ? "at the top level" : "in " + item.path,
                            Join(allowed, ", ")));
        continue;
      }
      known.push_back(std::move(entry));
    }
    return Fields(item, std::move(known));
  }

  const Item* Required(const Fields& fields, std::string_view name) {
    const Item* value = fields.Value(name);
    if (value == nullptr) {
      const Item& self = fields.self();
      ErrorAt(self.mark, fmt::format("{}missing required key \"{}\"",
                                     self.path.empty() ? "" : self.path + ": ", name));
    }
    return value;
  }

  // The elements of a list. An empty value (`key:`) is an empty list.
  std::optional<std::vector<Item>> List(const Item& item) {
    if (item.node.IsNull() && !item.list_element) return std::vector<Item>{};
    if (!item.node.IsSequence()) {
      Error(item, fmt::format("expected a list, got {}", DescribeYamlValue(item.node)));
      return std::nullopt;
    }
    std::vector<Item> items;
    for (const YAML::Node& element : item.node) {
      // An empty element ("- ") has no position of its own (yaml-cpp gives the next
      // token's), so errors about it point at the list and name the index.
      const YAML::Mark mark =
          element.IsNull() || element.Mark().is_null() ? item.mark : element.Mark();
      items.push_back(Item{element, mark, IndexPath(item.path, items.size()), true});
    }
    return items;
  }

  // ---- Scalars ----

  std::optional<std::string> String(const Item& item) {
    if (!item.node.IsScalar()) {
      Error(item, fmt::format("expected a string, got {}", DescribeYamlValue(item.node)));
      return std::nullopt;
    }
    return item.node.Scalar();
  }

  std::optional<uint64_t> Whole(const Item& item, uint64_t min, uint64_t max) {
    const YAML::Node& node = item.node;
    if (!node.IsScalar()) {
      Error(item, fmt::format("expected a whole number, got {}", DescribeYamlValue(node)));
      return std::nullopt;
    }
    const std::string& text = node.Scalar();
    if (!IsPlainOrTagged(node, "tag:yaml.org,2002:int")) {
      Error(item, fmt::format("expected a whole number, got {} (quoted, so a string; write "
                              "numbers without quotes)",
                              DescribeYamlValue(node)));
      return std::nullopt;
    }
    const bool all_digits =
        !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
    if (text.size() > 1 && text[0] == '-' &&
        text.find_first_not_of("0123456789", 1) == std::string::npos) {
      Error(item, fmt::format("must not be negative, got {}", text));
      return std::nullopt;
    }
    const std::optional<uint64_t> value = ParseCount(text);
    if (!value) {
      if (all_digits) {
        Error(item, fmt::format("{} is too large; at most {}", text, max));
      } else {
        Error(item, fmt::format("expected a whole number, got {}", DescribeYamlValue(node)));
      }
      return std::nullopt;
    }
    if (*value < min || *value > max) {
      if (min == 0) {
        Error(item, fmt::format("must be at most {}, got {}", max, *value));
      } else {
        Error(item, fmt::format("must be between {} and {}, got {}", min, max, *value));
      }
      return std::nullopt;
    }
    return value;
  }

  std::optional<Duration> Millis(const Item& item, uint64_t min = 1, uint64_t max = kMaxMillis) {
    const std::optional<uint64_t> ms = Whole(item, min, max);
    if (!ms) return std::nullopt;
    return std::chrono::milliseconds(static_cast<int64_t>(*ms));
  }

  std::optional<bool> Bool(const Item& item) {
    const YAML::Node& node = item.node;
    if (node.IsScalar() && IsPlainOrTagged(node, "tag:yaml.org,2002:bool")) {
      // The YAML 1.2 core schema's booleans; not YAML 1.1's yes/no/on/off.
      const std::string& text = node.Scalar();
      if (text == "true" || text == "True" || text == "TRUE") return true;
      if (text == "false" || text == "False" || text == "FALSE") return false;
    }
    Error(item, fmt::format("expected true or false, got {}", DescribeYamlValue(node)));
    return std::nullopt;
  }

  // `period`: a count with a unit, more than zero.
  std::optional<Duration> Period(const Item& item) {
    const std::optional<std::string> text = String(item);
    if (!text) return std::nullopt;
    const std::optional<Duration> duration = ParseDuration(*text);
    if (!duration) {
      if (ParseCount(*text)) {
        Error(item, fmt::format("\"{}\" has no unit; add one, e.g. \"{}s\" (units: ms, s, m, "
                                "h, d)",
                                *text, *text));
      } else {
        Error(item, fmt::format("expected a duration such as 500ms, 1s, 1m, 1h or 1d, got {}",
                                DescribeYamlValue(item.node)));
      }
      return std::nullopt;
    }
    if (duration->count() <= 0) {
      Error(item, "must be greater than zero");
      return std::nullopt;
    }
    return duration;
  }

  template <typename T>
  std::optional<T> Enum(const Item& item, std::initializer_list<Choice<T>> choices) {
    if (item.node.IsScalar()) {
      for (const Choice<T>& choice : choices) {
        if (choice.name == item.node.Scalar()) return choice.value;
      }
    }
    std::string names;
    for (const Choice<T>& choice : choices) {
      if (!names.empty()) names += ", ";
      names += choice.name;
    }
    Error(item, fmt::format("expected one of: {}; got {}", names, DescribeYamlValue(item.node)));
    return std::nullopt;
  }

  std::optional<net::Endpoint> Endpoint(const Item& item) {
    const std::optional<std::string> text = String(item);
    if (!text) return std::nullopt;
    std::optional<net::Endpoint> endpoint = net::Endpoint::Parse(*text);
    if (!endpoint) {
      Error(item, fmt::format("expected an address and port such as \"127.0.0.1:8080\" or "
                              "\"[::1]:8080\", got {}",
                              DescribeYamlValue(item.node)));
    }
    return endpoint;
  }

  std::optional<net::CidrList> Cidrs(const Item& item) {
    const std::optional<std::vector<Item>> elements = List(item);
    if (!elements) return std::nullopt;
    std::vector<net::Cidr> blocks;
    bool ok = true;
    for (const Item& element : *elements) {
      const std::optional<std::string> text = String(element);
      if (!text) {
        ok = false;
        continue;
      }
      const std::optional<net::Cidr> cidr = net::Cidr::Parse(*text);
      if (!cidr) {
        Error(element, fmt::format("expected an IP address or CIDR block such as \"10.0.0.0/8\" "
                                   "(no host bits below the prefix), got {}",
                                   DescribeYamlValue(element.node)));
        ok = false;
        continue;
      }
      blocks.push_back(*cidr);
    }
    if (!ok) return std::nullopt;
    return net::CidrList(std::move(blocks));
  }

  // A path prefix: "/" or more.
  std::optional<std::string> PathPrefix(const Item& item) {
    std::optional<std::string> text = String(item);
    if (text && (text->empty() || text->front() != '/')) {
      Error(item, fmt::format("must start with '/', got {}", DescribeYamlValue(item.node)));
      return std::nullopt;
    }
    return text;
  }

  std::optional<std::string> Host(const Item& item) {
    const std::optional<std::string> text = String(item);
    if (!text) return std::nullopt;
    std::optional<std::string> host = NormalizeHost(*text);
    if (!host) {
      Error(item, fmt::format("expected a host name such as \"api.example.com\", got {}",
                              DescribeYamlValue(item.node)));
    }
    return host;
  }

  // ---- Sections ----

  void LoadHttp(const Item& item, HttpLimits& http);
  void LoadTls(const Item& item, TlsConfig& tls);
  void LoadStore(const Item& item, StoreConfig& store);
  void LoadRules(const Item& item, std::vector<Rule>& rules);
  bool LoadRule(const Item& item, Rule& rule, std::optional<Item>& name_item);
  void LoadMatch(const Item& item, Rule& rule);
  bool LoadKey(const Item& item, std::vector<KeyPart>& key);
  std::optional<Override> LoadOverride(const Item& item, const Rule& rule, bool algorithm_known,
                                       bool rule_has_burst);
  std::optional<uint64_t> RuleLimit(const Item& item, std::optional<Algorithm> algorithm);
  std::optional<uint64_t> Burst(const Entry& entry, std::optional<Algorithm> algorithm);
  void LoadAccessLog(const Item& item, AccessLogConfig& access_log);
  void LoadUpstreams(const Item& item, std::vector<Upstream>& upstreams,
                     std::vector<std::string>& names,
                     std::vector<std::pair<Item, std::string>>& fallbacks);
  bool LoadUpstream(const Item& item, Upstream& upstream, std::optional<Item>& fallback_item);
  void LoadRoutes(const Item& item, std::vector<Route>& routes,
                  std::vector<std::pair<Item, std::string>>& references);

  std::string source_;
  std::vector<ConfigError> errors_;
  // Every limit of the document (rules and overrides), where it is written: with the
  // Redis backend each must fit the scripts' exact arithmetic, which is known only
  // once both sections are read.
  struct LimitSite {
    Limit limit;
    YAML::Mark mark;
    std::string path;
  };
  std::vector<LimitSite> limit_sites_;
};

void Loader::LoadDocument(const Item& root, Config& config) {
  const std::optional<Fields> top =
      Map(root, {"listen", "admin_listen", "grpc_listen", "grpc_server", "envoy_ratelimit_configs",
                 "decision_api", "workers", "http", "tls", "clients", "access", "store", "rules",
                 "routes", "upstreams", "headers", "access_log"});
  if (!top) return;
  if (const Item* v = top->Value("listen")) {
    if (auto endpoint = Endpoint(*v)) config.listen = *endpoint;
  }
  if (const Item* v = top->Value("admin_listen")) {
    if (auto endpoint = Endpoint(*v)) config.admin_listen = *endpoint;
  }
  if (const Item* v = top->Value("grpc_listen")) {
    // An empty string says "no gRPC listener" as plainly as leaving the key out.
    if (!(v->node.IsScalar() && v->node.Scalar().empty())) {
      if (auto endpoint = Endpoint(*v)) config.grpc_listen = *endpoint;
    }
  }
  if (const Item* v = top->Value("grpc_server")) {
    if (auto server = Enum<Config::GrpcServer>(*v, {{"native", Config::GrpcServer::kNative},
                                                    {"grpc-cpp", Config::GrpcServer::kGrpcCpp}})) {
      config.grpc_server = *server;
    }
  }
  if (const Item* v = top->Value("envoy_ratelimit_configs")) {
    if (const std::optional<std::vector<Item>> paths = List(*v)) {
      for (const Item& path : *paths) {
        const std::optional<std::string> text = String(path);
        if (!text) continue;
        if (text->empty()) {
          Error(path, "expected a file or directory of envoyproxy/ratelimit configs");
          continue;
        }
        config.envoy_ratelimit_configs.push_back(*text);
      }
    }
  }
  if (const Item* v = top->Value("decision_api")) {
    if (auto enabled = Bool(*v)) config.decision_api = *enabled;
  }
  if (const Item* v = top->Value("workers")) {
    if (auto workers = Whole(*v, 0, 1024)) config.workers = static_cast<unsigned>(*workers);
  }
  if (const Item* v = top->Value("http")) LoadHttp(*v, config.http);
  if (const Item* v = top->Value("tls")) LoadTls(*v, config.tls);
  if (const Item* v = top->Value("clients")) {
    if (auto clients = Map(*v, {"trusted_proxies"})) {
      if (const Item* list = clients->Value("trusted_proxies")) {
        if (auto cidrs = Cidrs(*list)) config.trusted_proxies = std::move(*cidrs);
      }
    }
  }
  if (const Item* v = top->Value("access")) {
    if (auto access = Map(*v, {"allow", "deny"})) {
      if (const Item* list = access->Value("allow")) {
        if (auto cidrs = Cidrs(*list)) config.allow = std::move(*cidrs);
      }
      if (const Item* list = access->Value("deny")) {
        if (auto cidrs = Cidrs(*list)) config.deny = std::move(*cidrs);
      }
    }
  }
  if (const Item* v = top->Value("store")) LoadStore(*v, config.store);
  if (const Item* v = top->Value("rules")) LoadRules(*v, config.rules);
  if (config.store.backend == StoreConfig::Backend::kRedis) {
    for (const LimitSite& site : limit_sites_) {
      if (store::FitsRedisArithmetic(site.limit)) continue;
      ErrorAt(site.mark,
              fmt::format("{}: with store.backend redis, the period must be a whole number of "
                          "microseconds and max(limit, burst) x period in microseconds below "
                          "2^51 (about 26,000 per day or 625,000 per hour), so that Redis's Lua "
                          "decides exactly; use the memory store, or a shorter period",
                          site.path));
    }
  }
  if (const Item* v = top->Value("headers")) {
    if (auto legacy = Enum<bool>(*v, {{"ietf", false}, {"legacy", true}})) {
      config.legacy_headers = *legacy;
    }
  }
  if (const Item* v = top->Value("access_log")) LoadAccessLog(*v, config.access_log);

  // Routes name upstreams and upstreams name fallbacks; both are checked once every
  // upstream is known, so the order of the sections in the file does not matter. An
  // upstream with mistakes of its own still counts as defined: one mistake, one error.
  std::vector<std::string> names;
  std::vector<std::pair<Item, std::string>> references;
  if (const Item* v = top->Value("upstreams")) {
    LoadUpstreams(*v, config.upstreams, names, references);
  }
  if (const Item* v = top->Value("routes")) LoadRoutes(*v, config.routes, references);
  std::string defined;
  for (const std::string& name : names) defined += defined.empty() ? name : ", " + name;
  defined = defined.empty() ? "no upstreams are defined" : "defined: " + defined;
  for (const auto& [item, name] : references) {
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      Error(item, fmt::format("unknown upstream \"{}\" ({})", name, defined));
    }
  }
}

void Loader::LoadHttp(const Item& item, HttpLimits& http) {
  const std::optional<Fields> fields =
      Map(item, {"max_header_bytes", "max_body_bytes", "header_timeout_ms", "idle_timeout_ms",
                 "max_connections"});
  if (!fields) return;
  // The HTTP parser library refuses headers past 80 KiB on its own; 64 KiB keeps our
  // limit, and so our 431, the one that applies.
  if (const Item* v = fields->Value("max_header_bytes")) {
    if (auto n = Whole(*v, 1024, 65536)) http.max_header_bytes = *n;
  }
  if (const Item* v = fields->Value("max_body_bytes")) {
    if (auto n = Whole(*v, 0, uint64_t{1} << 40)) http.max_body_bytes = *n;
  }
  if (const Item* v = fields->Value("header_timeout_ms")) {
    if (auto d = Millis(*v)) http.header_timeout = *d;
  }
  if (const Item* v = fields->Value("idle_timeout_ms")) {
    if (auto d = Millis(*v)) http.idle_timeout = *d;
  }
  if (const Item* v = fields->Value("max_connections")) {
    if (auto n = Whole(*v, 1, 10'000'000)) http.max_connections = *n;
  }
}

void Loader::LoadTls(const Item& item, TlsConfig& tls) {
  const std::optional<Fields> fields = Map(item, {"cert_file", "key_file"});
  if (!fields) return;
  bool ok = true;
  if (const Item* v = fields->Value("cert_file")) {
    if (auto s = String(*v))
      tls.cert_file = *s;
    else
      ok = false;
  }
  if (const Item* v = fields->Value("key_file")) {
    if (auto s = String(*v))
      tls.key_file = *s;
    else
      ok = false;
  }
  if (ok && tls.cert_file.empty() != tls.key_file.empty()) {
    Error(item, tls.cert_file.empty() ? "key_file is set but cert_file is not; set both to "
                                        "terminate TLS, or neither"
                                      : "cert_file is set but key_file is not; set both to "
                                        "terminate TLS, or neither");
  }
}

void Loader::LoadStore(const Item& item, StoreConfig& store) {
  const std::optional<Fields> fields = Map(item, {"backend", "max_keys", "redis", "on_failure"});
  if (!fields) return;
  if (const Item* v = fields->Value("backend")) {
    if (auto backend = Enum<StoreConfig::Backend>(*v, {{"memory", StoreConfig::Backend::kMemory},
                                                       {"redis", StoreConfig::Backend::kRedis}})) {
      store.backend = *backend;
    }
  }
  if (const Item* v = fields->Value("max_keys")) {
    if (auto n = Whole(*v, 1, 1'000'000'000)) store.max_keys = *n;
  }
  if (const Item* v = fields->Value("on_failure")) {
    if (auto on_failure =
            Enum<StoreConfig::OnFailure>(*v, {{"allow", StoreConfig::OnFailure::kAllow},
                                              {"deny", StoreConfig::OnFailure::kDeny},
                                              {"local", StoreConfig::OnFailure::kLocal}})) {
      store.on_failure = *on_failure;
    }
  }
  bool nodes_ok = true;
  if (const Item* v = fields->Value("redis")) {
    if (auto redis = Map(*v, {"mode", "nodes", "connect_timeout_ms", "command_timeout_ms"})) {
      if (const Item* m = redis->Value("mode")) {
        if (auto mode = Enum<RedisConfig::Mode>(*m, {{"ring", RedisConfig::Mode::kRing},
                                                     {"cluster", RedisConfig::Mode::kCluster}})) {
          store.redis.mode = *mode;
        }
      }
      if (const Item* n = redis->Value("nodes")) {
        if (auto nodes = List(*n)) {
          for (const Item& node : *nodes) {
            const std::optional<net::Endpoint> endpoint = Endpoint(node);
            if (!endpoint) {
              nodes_ok = false;
              continue;
            }
            // A node listed twice would take two shares of the ring.
            const bool twice = std::any_of(
                store.redis.nodes.begin(), store.redis.nodes.end(), [&](const net::Endpoint& e) {
                  return e.address == endpoint->address && e.port == endpoint->port;
                });
            if (twice) {
              Error(node, fmt::format("duplicate node {}", DescribeYamlValue(node.node)));
              nodes_ok = false;
              continue;
            }
            store.redis.nodes.push_back(*endpoint);
          }
        } else {
          nodes_ok = false;
        }
      }
      if (const Item* t = redis->Value("connect_timeout_ms")) {
        if (auto d = Millis(*t)) store.redis.connect_timeout = *d;
      }
      if (const Item* t = redis->Value("command_timeout_ms")) {
        if (auto d = Millis(*t)) store.redis.command_timeout = *d;
      }
    } else {
      nodes_ok = false;
    }
  }
  if (store.backend == StoreConfig::Backend::kRedis && nodes_ok && store.redis.nodes.empty()) {
    Error(*fields->Value("backend"), "redis needs at least one node in store.redis.nodes");
  }
}

void Loader::LoadRules(const Item& item, std::vector<Rule>& rules) {
  const std::optional<std::vector<Item>> elements = List(item);
  if (!elements) return;
  struct Seen {
    std::string name;
    std::string path;
    int line;
  };
  std::vector<Seen> names;
  for (const Item& element : *elements) {
    Rule rule;
    std::optional<Item> name_item;
    const bool ok = LoadRule(element, rule, name_item);
    if (!rule.name.empty()) {
      const auto previous = std::find_if(names.begin(), names.end(),
                                         [&](const Seen& seen) { return seen.name == rule.name; });
      if (previous != names.end()) {
        Error(*name_item, fmt::format("duplicate rule name \"{}\" (first used by {}, line {})",
                                      rule.name, previous->path, previous->line));
        continue;
      }
      names.push_back(Seen{rule.name, element.path, element.mark.line + 1});
    }
    if (ok) rules.push_back(std::move(rule));
  }
}

std::optional<uint64_t> Loader::RuleLimit(const Item& item, std::optional<Algorithm> algorithm) {
  const std::optional<uint64_t> limit = Whole(item, 0, kMaxQuantity);
  if (limit && algorithm == Algorithm::kSlidingWindowLog && *limit > kMaxLogLimit) {
    Error(item, fmt::format("must be at most {} with sliding_window_log (it keeps one timestamp "
                            "per request), got {}; sliding_window_counter has no such bound",
                            kMaxLogLimit, *limit));
    return std::nullopt;
  }
  return limit;
}

std::optional<uint64_t> Loader::Burst(const Entry& entry, std::optional<Algorithm> algorithm) {
  if (algorithm && !UsesBurst(*algorithm)) {
    ErrorAt(entry.key_mark,
            fmt::format("{}: {} does not use burst (only token_bucket, leaky_bucket and gcra "
                        "have a bucket capacity); remove it",
                        entry.value.path, AlgorithmName(*algorithm)));
    return std::nullopt;
  }
  return Whole(entry.value, 1, kMaxQuantity);
}

bool Loader::LoadRule(const Item& item, Rule& rule, std::optional<Item>& name_item) {
  const std::optional<Fields> fields =
      Map(item, {"name", "match", "key", "algorithm", "limit", "period", "burst", "action",
                 "max_delay_ms", "on_missing_key", "overrides"});
  if (!fields) return false;
  const size_t errors_before = errors_.size();
  if (const Item* v = Required(*fields, "name")) {
    if (auto name = String(*v)) {
      if (IsName(*name)) {
        rule.name = *name;
        name_item = *v;
      } else {
        Error(*v, fmt::format("must be letters, digits, '_', '.' or '-', got {}",
                              DescribeYamlValue(v->node)));
      }
    }
  }
  if (const Item* v = fields->Value("match")) LoadMatch(*v, rule);
  bool key_ok = true;
  if (const Item* v = fields->Value("key")) key_ok = LoadKey(*v, rule.key);

  std::optional<Algorithm> algorithm;
  if (const Item* v = Required(*fields, "algorithm")) {
    if (auto name = String(*v)) {
      algorithm = ParseAlgorithm(*name);
      if (!algorithm) {
        Error(*v, fmt::format("unknown algorithm {}; expected one of: token_bucket, "
                              "leaky_bucket, fixed_window, sliding_window_log, "
                              "sliding_window_counter, gcra",
                              DescribeYamlValue(v->node)));
      }
    }
  }
  if (algorithm) rule.algorithm = *algorithm;
  if (const Item* v = Required(*fields, "limit")) {
    if (auto limit = RuleLimit(*v, algorithm)) rule.limit.limit = *limit;
  }
  if (const Item* v = Required(*fields, "period")) {
    if (auto period = Period(*v)) rule.limit.period = *period;
  }
  const Entry* burst_entry = fields->Find("burst");
  rule.limit.burst = rule.limit.limit;
  if (burst_entry != nullptr) {
    if (auto burst = Burst(*burst_entry, algorithm)) rule.limit.burst = *burst;
  }
  limit_sites_.push_back({rule.limit, fields->self().mark, item.path});

  bool action_ok = true;
  if (const Item* v = fields->Value("action")) {
    const std::optional<Action> action = Enum<Action>(
        *v, {{"reject", Action::kReject}, {"delay", Action::kDelay}, {"shadow", Action::kShadow}});
    if (action) rule.action = *action;
    action_ok = action.has_value();
  }
  if (const Entry* entry = fields->Find("max_delay_ms")) {
    if (rule.action == Action::kDelay) {
      if (auto d = Millis(entry->value)) rule.max_delay = *d;
    } else if (action_ok) {
      ErrorAt(entry->key_mark,
              fmt::format("{}: applies only to action: delay; remove it", entry->value.path));
    }
  } else if (rule.action == Action::kDelay && action_ok) {
    ErrorAt(fields->self().mark,
            fmt::format("{}: action delay needs max_delay_ms (how long a request may be held "
                        "before it is rejected)",
                        item.path));
  }
  if (const Item* v = fields->Value("on_missing_key")) {
    if (auto on_missing = Enum<OnMissingKey>(*v, {{"skip", OnMissingKey::kSkip},
                                                  {"reject", OnMissingKey::kReject},
                                                  {"anonymous", OnMissingKey::kAnonymous}})) {
      rule.on_missing_key = *on_missing;
    }
  }
  if (const Entry* entry = fields->Find("overrides")) {
    if (auto overrides = List(entry->value)) {
      if (!overrides->empty() && rule.key.empty() && key_ok) {
        ErrorAt(entry->key_mark,
                fmt::format("{}: the rule has no key (all clients share one counter), so there "
                            "is no client key to override",
                            entry->value.path));
      } else {
        std::vector<std::pair<std::string, int>> keys;
        for (const Item& element : *overrides) {
          std::optional<Override> override_ =
              LoadOverride(element, rule, algorithm.has_value(), burst_entry != nullptr);
          if (!override_) continue;
          const auto previous = std::find_if(keys.begin(), keys.end(), [&](const auto& seen) {
            return seen.first == override_->key;
          });
          if (previous != keys.end()) {
            Error(element, fmt::format("duplicate override key \"{}\" (first on line {})",
                                       override_->key, previous->second));
            continue;
          }
          keys.emplace_back(override_->key, element.mark.line + 1);
          rule.overrides.push_back(std::move(*override_));
        }
      }
    }
  }
  return errors_.size() == errors_before;
}

void Loader::LoadMatch(const Item& item, Rule& rule) {
  const std::optional<Fields> fields = Map(item, {"path_prefix", "methods", "host", "hosts"});
  if (!fields) return;
  if (const Item* v = fields->Value("path_prefix")) {
    if (auto prefix = PathPrefix(*v)) rule.path_prefix = *prefix;
  }
  if (const Item* v = fields->Value("methods")) {
    if (auto methods = List(*v)) {
      for (const Item& method : *methods) {
        const std::optional<std::string> text = String(method);
        if (!text) continue;
        if (!IsToken(*text)) {
          Error(method, fmt::format("expected an HTTP method such as GET, got {}",
                                    DescribeYamlValue(method.node)));
          continue;
        }
        std::string upper = Upper(*text);
        if (std::find(rule.methods.begin(), rule.methods.end(), upper) == rule.methods.end()) {
          rule.methods.push_back(std::move(upper));
        }
      }
    }
  }
  const Entry* host = fields->Find("host");
  const Entry* hosts = fields->Find("hosts");
  if (host != nullptr && hosts != nullptr) {
    const Entry* later = host->key_mark.pos > hosts->key_mark.pos ? host : hosts;
    ErrorAt(later->key_mark, fmt::format("{}: use either host or hosts, not both", item.path));
    return;
  }
  if (host != nullptr) {
    if (auto name = Host(host->value)) rule.hosts.push_back(*name);
  }
  if (hosts != nullptr) {
    if (auto list = List(hosts->value)) {
      for (const Item& element : *list) {
        if (auto name = Host(element)) rule.hosts.push_back(*name);
      }
    }
  }
}

bool Loader::LoadKey(const Item& item, std::vector<KeyPart>& key) {
  const std::optional<std::vector<Item>> parts = List(item);
  if (!parts) return false;
  const size_t errors_before = errors_.size();
  for (const Item& element : *parts) {
    const std::optional<std::string> text = String(element);
    if (!text) continue;
    std::string error;
    const std::optional<KeyPartText> parsed =
        ParseKeyPartText(*text, DescribeYamlValue(element.node), &error);
    if (!parsed) {
      Error(element, error);
      continue;
    }
    KeyPart part{parsed->kind, parsed->kind == KeyPartKind::kHeader ? Lower(parsed->name)
                                                                    : std::string(parsed->name)};
    const bool twice = std::any_of(key.begin(), key.end(), [&](const KeyPart& p) {
      return p.kind == part.kind && p.name == part.name;
    });
    if (twice) {
      Error(element, fmt::format("duplicate key part {}", DescribeYamlValue(element.node)));
      continue;
    }
    key.push_back(std::move(part));
  }
  return errors_.size() == errors_before;
}

std::optional<Override> Loader::LoadOverride(const Item& item, const Rule& rule,
                                             bool algorithm_known, bool rule_has_burst) {
  const std::optional<Fields> fields = Map(item, {"key", "limit", "period", "burst"});
  if (!fields) return std::nullopt;
  const size_t errors_before = errors_.size();
  const std::optional<Algorithm> algorithm =
      algorithm_known ? std::optional<Algorithm>(rule.algorithm) : std::nullopt;
  Override result;
  result.limit = rule.limit;
  if (const Item* v = Required(*fields, "key")) {
    if (auto key = String(*v)) {
      if (key->empty()) {
        Error(*v, "must not be empty");
      } else {
        result.key = *key;
      }
    }
  }
  if (const Item* v = fields->Value("limit")) {
    if (auto limit = RuleLimit(*v, algorithm)) result.limit.limit = *limit;
  }
  if (const Item* v = fields->Value("period")) {
    if (auto period = Period(*v)) result.limit.period = *period;
  }
  // Burst: the override's own, else the rule's when the rule set one, else (the
  // rule's burst being "equal to limit") the override's limit.
  if (const Entry* entry = fields->Find("burst")) {
    if (auto burst = Burst(*entry, algorithm)) result.limit.burst = *burst;
  } else if (!rule_has_burst) {
    result.limit.burst = result.limit.limit;
  }
  if (errors_.size() != errors_before) return std::nullopt;
  limit_sites_.push_back({result.limit, fields->self().mark, item.path});
  return result;
}

void Loader::LoadAccessLog(const Item& item, AccessLogConfig& access_log) {
  if (item.node.IsScalar()) {
    if (auto enabled = Bool(item)) access_log.enabled = *enabled;
    return;
  }
  if (!item.node.IsMap()) {
    Error(item, fmt::format("expected true, false or a map {{enabled, path}}, got {}",
                            DescribeYamlValue(item.node)));
    return;
  }
  const std::optional<Fields> fields = Map(item, {"enabled", "path"});
  if (!fields) return;
  if (const Item* v = fields->Value("enabled")) {
    if (auto enabled = Bool(*v)) access_log.enabled = *enabled;
  }
  if (const Item* v = fields->Value("path")) {
    if (auto path = String(*v)) {
      if (path->empty()) {
        Error(*v, "must not be empty; use \"stdout\" or a file path");
      } else {
        access_log.path = *path;
      }
    }
  }
}

void Loader::LoadUpstreams(const Item& item, std::vector<Upstream>& upstreams,
                           std::vector<std::string>& names,
                           std::vector<std::pair<Item, std::string>>& fallbacks) {
  const std::optional<std::vector<Entry>> entries = Entries(item);
  if (!entries) return;
  for (const Entry& entry : *entries) {
    if (!IsName(entry.name)) {
      ErrorAt(entry.key_mark,
              fmt::format("{}: upstream names must be letters, digits, '_', '.' or '-'",
                          entry.value.path));
      continue;
    }
    names.push_back(entry.name);
    Upstream upstream;
    upstream.name = entry.name;
    std::optional<Item> fallback_item;
    const bool ok = LoadUpstream(entry.value, upstream, fallback_item);
    if (fallback_item) {
      if (upstream.fallback == upstream.name) {
        Error(*fallback_item, "an upstream cannot be its own fallback");
      } else {
        fallbacks.emplace_back(*fallback_item, upstream.fallback);
      }
    }
    if (ok) upstreams.push_back(std::move(upstream));
  }
}

bool Loader::LoadUpstream(const Item& item, Upstream& upstream,
                          std::optional<Item>& fallback_item) {
  const std::optional<Fields> fields =
      Map(item, {"balance", "servers", "health_check", "circuit_breaker", "fallback", "tls",
                 "timeouts", "max_idle_connections"});
  if (!fields) return false;
  const size_t errors_before = errors_.size();
  if (const Item* v = fields->Value("balance")) {
    if (auto balance = Enum<Upstream::Balance>(
            *v, {{"round_robin", Upstream::Balance::kRoundRobin},
                 {"weighted_round_robin", Upstream::Balance::kWeightedRoundRobin},
                 {"least_connections", Upstream::Balance::kLeastConnections},
                 {"hash", Upstream::Balance::kHash},
                 {"random", Upstream::Balance::kRandom}})) {
      upstream.balance = *balance;
    }
  }
  if (const Item* v = Required(*fields, "servers")) {
    if (auto servers = List(*v)) {
      if (servers->empty()) Error(*v, "needs at least one server");
      for (const Item& element : *servers) {
        const std::optional<Fields> server = Map(element, {"address", "weight"});
        if (!server) continue;
        UpstreamServer parsed;
        bool ok = true;
        if (const Item* a = Required(*server, "address")) {
          if (auto address = Endpoint(*a))
            parsed.address = *address;
          else
            ok = false;
        } else {
          ok = false;
        }
        if (const Item* w = server->Value("weight")) {
          if (auto weight = Whole(*w, 1, 1000))
            parsed.weight = static_cast<uint32_t>(*weight);
          else
            ok = false;
        }
        if (ok) upstream.servers.push_back(parsed);
      }
    }
  }
  if (const Item* v = fields->Value("health_check")) {
    if (auto check = Map(*v, {"path", "interval_ms", "unhealthy_threshold", "healthy_threshold"})) {
      if (const Item* p = check->Value("path")) {
        if (auto path = PathPrefix(*p)) upstream.health_check_path = *path;
      }
      if (const Item* i = check->Value("interval_ms")) {
        if (auto interval = Millis(*i)) upstream.health_check_interval = *interval;
      }
      if (const Item* t = check->Value("unhealthy_threshold")) {
        if (auto n = Whole(*t, 1, 1000)) upstream.unhealthy_threshold = static_cast<uint32_t>(*n);
      }
      if (const Item* t = check->Value("healthy_threshold")) {
        if (auto n = Whole(*t, 1, 1000)) upstream.healthy_threshold = static_cast<uint32_t>(*n);
      }
    }
  }
  if (const Item* v = fields->Value("circuit_breaker")) {
    if (auto breaker = Map(*v, {"consecutive_failures", "open_ms"})) {
      if (const Item* f = breaker->Value("consecutive_failures")) {
        if (auto failures = Whole(*f, 1, 1'000'000)) {
          upstream.circuit_consecutive_failures = static_cast<uint32_t>(*failures);
        }
      }
      if (const Item* o = breaker->Value("open_ms")) {
        if (auto open = Millis(*o)) upstream.circuit_open = *open;
      }
    }
  }
  if (const Item* v = fields->Value("fallback")) {
    if (auto fallback = String(*v); fallback && !fallback->empty()) {
      upstream.fallback = *fallback;
      fallback_item = *v;
    }
  }
  if (const Item* v = fields->Value("tls")) {
    if (auto tls = Bool(*v)) upstream.tls = *tls;
  }
  if (const Item* v = fields->Value("timeouts")) {
    if (auto timeouts = Map(*v, {"connect_ms", "first_byte_ms", "idle_ms"})) {
      if (const Item* t = timeouts->Value("connect_ms")) {
        if (auto d = Millis(*t)) upstream.connect_timeout = *d;
      }
      if (const Item* t = timeouts->Value("first_byte_ms")) {
        if (auto d = Millis(*t)) upstream.first_byte_timeout = *d;
      }
      if (const Item* t = timeouts->Value("idle_ms")) {
        if (auto d = Millis(*t)) upstream.idle_timeout = *d;
      }
    }
  }
  if (const Item* v = fields->Value("max_idle_connections")) {
    if (auto n = Whole(*v, 0, 10'000)) upstream.max_idle_connections = static_cast<uint32_t>(*n);
  }
  return errors_.size() == errors_before;
}

void Loader::LoadRoutes(const Item& item, std::vector<Route>& routes,
                        std::vector<std::pair<Item, std::string>>& references) {
  const std::optional<std::vector<Item>> elements = List(item);
  if (!elements) return;
  for (const Item& element : *elements) {
    const std::optional<Fields> fields = Map(element, {"host", "path_prefix", "upstream"});
    if (!fields) continue;
    Route route;
    if (const Item* v = fields->Value("host")) {
      if (auto host = Host(*v)) route.host = *host;
    }
    if (const Item* v = fields->Value("path_prefix")) {
      if (auto prefix = PathPrefix(*v)) route.path_prefix = *prefix;
    }
    if (const Item* v = Required(*fields, "upstream")) {
      if (auto upstream = String(*v)) {
        route.upstream = *upstream;
        references.emplace_back(*v, *upstream);
      }
    }
    routes.push_back(std::move(route));
  }
}

}  // namespace

namespace {

// Where each YAML document of a stream starts; the parse events are otherwise ignored.
class DocumentStarts : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> marks;
  void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

}  // namespace

std::string DescribeYamlValue(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return "nothing";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Scalar:
      break;
  }
  // Quoted and escaped so that a value with spaces, quotes or line breaks reads as one.
  constexpr size_t kShown = 60;
  const std::string& text = node.Scalar();
  std::string out = "\"";
  for (size_t i = 0; i < text.size() && i < kShown; ++i) {
    const char c = text[i];
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += c;
    }
  }
  out += text.size() > kShown ? "...\"" : "\"";
  return out;
}

std::string YamlChildPath(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : fmt::format("{}.{}", parent, key);
}

std::optional<YAML::Mark> SecondYamlDocument(const std::string& text) {
  std::istringstream stream(text);
  YAML::Parser parser(stream);
  DocumentStarts starts;
  // Two documents are enough to tell; a third call catches the stuck parser.
  for (int i = 0; i < 3 && parser.HandleNextDocument(starts); ++i) {
    const std::vector<YAML::Mark>& marks = starts.marks;
    if (marks.size() >= 2 && marks[marks.size() - 1].pos == marks[marks.size() - 2].pos) {
      throw YAML::ParserException(marks.back(), "unexpected character");
    }
  }
  if (starts.marks.size() < 2) return std::nullopt;
  return starts.marks[1];
}

std::string ConfigError::ToString() const {
  if (line == 0) return fmt::format("{}: {}", file, message);
  return fmt::format("{}:{}:{}: {}", file, line, column, message);
}

std::optional<KeyPartText> ParseKeyPartText(std::string_view text, std::string_view shown,
                                            std::string* error) {
  struct Named {
    std::string_view name;
    KeyPartKind kind;
  };
  static constexpr Named kPlain[] = {{"ip", KeyPartKind::kIp},
                                     {"authorization", KeyPartKind::kAuthorization},
                                     {"path", KeyPartKind::kPath},
                                     {"method", KeyPartKind::kMethod},
                                     {"host", KeyPartKind::kHost}};
  constexpr std::string_view kHeader = "header:";
  constexpr std::string_view kQuery = "query:";
  for (const Named& named : kPlain) {
    if (text == named.name) return KeyPartText{named.kind, {}};
  }
  if (text.starts_with(kHeader)) {
    const std::string_view name = text.substr(kHeader.size());
    if (IsToken(name)) return KeyPartText{KeyPartKind::kHeader, name};
    *error = fmt::format(
        "expected header:NAME with an HTTP header name such as header:x-api-key, got {}", shown);
    return std::nullopt;
  }
  if (text.starts_with(kQuery)) {
    const std::string_view name = text.substr(kQuery.size());
    if (!name.empty() && name.find_first_of("&=# \t") == std::string_view::npos) {
      return KeyPartText{KeyPartKind::kQuery, name};
    }
    *error = fmt::format(
        "expected query:NAME with a query parameter name such as query:api_key, got {}", shown);
    return std::nullopt;
  }
  *error = fmt::format(
      "unknown key part {}; expected ip, authorization, path, method, host, header:NAME or "
      "query:NAME",
      shown);
  return std::nullopt;
}

LoadResult LoadConfigText(std::string_view text, std::string_view source) {
  LoadResult result;
  Loader loader(source);
  auto config = std::make_shared<Config>();
  config->source = std::string(source);
  config->listen = *net::Endpoint::Parse("0.0.0.0:8080");
  config->admin_listen = *net::Endpoint::Parse("127.0.0.1:9090");
  try {
    const std::string yaml(text);
    const std::optional<YAML::Mark> second = SecondYamlDocument(yaml);
    const YAML::Node root = second ? YAML::Node() : YAML::Load(yaml);
    if (second) {
      // Reported alone: the first document may be only half of what was meant.
      loader.ErrorAt(*second,
                     "a second YAML document; a configuration is one document (remove '---')");
    } else if (root.IsNull()) {
      loader.ErrorAt(YAML::Mark::null_mark(),
                     "the configuration is empty; expected a map of settings such as "
                     "\"listen:\" and \"rules:\"");
    } else if (!root.IsMap()) {
      loader.ErrorAt(root.Mark(), fmt::format("the configuration must be a map of settings, got {}",
                                              DescribeYamlValue(root)));
    } else {
      loader.LoadDocument(Item{root, root.Mark(), ""}, *config);
    }
  } catch (const YAML::Exception& e) {
    // A syntax error: yaml-cpp stops at the first one, and so does the report.
    loader.ErrorAt(e.mark, "invalid YAML: " + e.msg);
  }
  result.errors = loader.TakeErrors();
  if (result.errors.empty()) result.config = std::move(config);
  return result;
}

LoadResult LoadConfigFile(const std::string& path) {
  const auto cannot_read = [&](int error) {
    LoadResult result;
    result.errors.push_back(
        ConfigError{.file = path, .message = fmt::format("cannot read: {}", std::strerror(error))});
    return result;
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return cannot_read(errno);
  std::string text;
  char buffer[65536];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      return cannot_read(error);
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return LoadConfigText(text, path);
}

}  // namespace sluice::config
