// envoyproxy/ratelimit YAML -> validated RateLimitConfig, and the descriptor matcher.
//
// The loader walks each document once and keeps going after an error, so one load
// lists every problem of every file, each at the node that causes it. Scalars are read
// as text and checked here: yaml-cpp's own conversions accept "0x10" and "yes".
#include "rls/ratelimit_config.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <limits>
#include <optional>
#include <sstream>

#include "config/yaml_document.h"
#include "core/units.h"
#include "store/redis_scripts.h"

namespace sluice::rls {

using config::ConfigError;
using namespace std::chrono_literals;

struct RateLimitConfig::Node {
  std::string key;
  std::string value;  // "" = the key with any value
  // A value holding '*' split at each '*': "/api/*/x" -> {"/api/", "/x"}. Empty for a
  // value without '*'.
  std::vector<std::string> wildcard_parts;
  int32_t limit = -1;  // index into limits_; -1 = no rate_limit here
  Level children;
};

namespace {

constexpr std::string_view kAlgorithmNames =
    "token_bucket, leaky_bucket, fixed_window, sliding_window_log, sliding_window_counter, gcra";

struct UnitChoice {
  std::string_view name;
  Unit unit;
};
constexpr UnitChoice kUnits[] = {
    {"second", Unit::kSecond}, {"minute", Unit::kMinute}, {"hour", Unit::kHour},
    {"day", Unit::kDay},       {"week", Unit::kWeek},     {"month", Unit::kMonth},
    {"year", Unit::kYear},
};

bool EqualsIgnoringCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           const auto lower = [](char c) {
             return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
           };
           return lower(x) == lower(y);
         });
}

// A value with '*' against a request value: each '*' stands for zero or more
// characters, the pieces between them must appear in order (the service's
// wildcardMatch, README Example 9). REQUIRES: parts.size() >= 2.
bool WildcardMatches(const std::vector<std::string>& parts, std::string_view value) {
  const std::string& head = parts.front();
  const std::string& tail = parts.back();
  if (value.size() < head.size() + tail.size()) return false;
  if (!value.starts_with(head) || !value.ends_with(tail)) return false;
  std::string_view middle = value.substr(head.size(), value.size() - head.size() - tail.size());
  for (size_t i = 1; i + 1 < parts.size(); ++i) {
    const size_t at = middle.find(parts[i]);
    if (at == std::string_view::npos) return false;
    middle.remove_prefix(at + parts[i].size());
  }
  return true;
}

// The service's name for a config entry: "key", or "key_value" when it has a value.
std::string CompositeKey(std::string_view key, std::string_view value) {
  return value.empty() ? std::string(key) : fmt::format("{}_{}", key, value);
}

// ---- YAML structure ----

// A node with what an error about it needs: where to point and how to name it.
struct Item {
  YAML::Node node;
  YAML::Mark mark;            // the node's own position, or its key's when the value is empty
  std::string path;           // "descriptors[0].rate_limit"; "" for the document itself
  bool list_element = false;  // an empty list element ("- " alone) is a mistake
};

struct Field {
  std::string name;
  YAML::Mark key_mark;
  Item value;
};

struct Fields {
  Item self;
  std::vector<Field> fields;

  const Field* Find(std::string_view name) const {
    for (const Field& field : fields) {
      if (field.name == name) return &field;
    }
    return nullptr;
  }
  const Item* Value(std::string_view name) const {
    const Field* field = Find(name);
    return field == nullptr ? nullptr : &field->value;
  }
};

}  // namespace

// ---- Units ----

std::string_view UnitName(Unit unit) {
  for (const UnitChoice& choice : kUnits) {
    if (choice.unit == unit) return choice.name;
  }
  return "unknown";
}

Duration UnitDuration(Unit unit) {
  constexpr Duration kDay = 24h;
  switch (unit) {
    case Unit::kSecond:
      return 1s;
    case Unit::kMinute:
      return 1min;
    case Unit::kHour:
      return 1h;
    case Unit::kDay:
      return kDay;
    case Unit::kWeek:
      return 7 * kDay;
    case Unit::kMonth:
      return 30 * kDay;  // the service's month, not a calendar month
    case Unit::kYear:
      return 365 * kDay;  // the service's year, leap or not
  }
  return 1s;
}

// ---- Loading ----

class RateLimitConfig::Loader {
 public:
  explicit Loader(RateLimitConfig& config) : config_(config) {}

  void LoadFile(const Source& source);
  std::vector<ConfigError> TakeErrors() { return std::move(errors_); }

 private:
  struct SeenDomain {
    std::string name;
    std::string file;
    int line;
  };
  // An entry of one level, as written: for duplicate detection.
  struct Written {
    std::string composite;
    std::string key;
    std::string value;
    int line;
  };

  void ErrorAt(const YAML::Mark& mark, std::string message) {
    ConfigError error{.file = std::string(file_), .message = std::move(message)};
    if (!mark.is_null()) {
      error.line = mark.line + 1;
      error.column = mark.column + 1;
    }
    file_errors_.push_back(std::move(error));
  }
  void Error(const Item& item, std::string_view message) {
    ErrorAt(item.mark,
            item.path.empty() ? std::string(message) : fmt::format("{}: {}", item.path, message));
  }

  // A map whose keys are among `allowed`. `hint` may explain an unknown key better than
  // the list of allowed ones.
  std::optional<Fields> Map(
      const Item& item, std::initializer_list<std::string_view> allowed,
      const std::function<std::optional<std::string>(std::string_view)>& hint = nullptr);
  std::optional<std::vector<Item>> List(const Item& item);
  const Item* Required(const Fields& fields, std::string_view name);
  std::optional<std::string> Text(const Item& item);
  std::optional<bool> Bool(const Item& item);
  std::optional<uint64_t> Whole(const Item& item, uint64_t min, uint64_t max);

  void LoadDocument(const Item& root);
  // Loads `item` (a descriptors list) into `level`; `parent_key` is the full key of the
  // level's owner ("domain" or "domain.key_value").
  void LoadDescriptors(const Item& item, const std::string& parent_key, Level& level);
  // Returns the index of the new node, or nullopt when the entry is unusable.
  std::optional<uint32_t> LoadDescriptor(const Item& item, const std::string& parent_key,
                                         std::vector<Written>& written);
  std::optional<RlsLimit> LoadRateLimit(const Item& item, const Fields& descriptor);
  void SortLevel(Level& level);

  RateLimitConfig& config_;
  std::string_view file_;
  std::vector<ConfigError> file_errors_;
  std::vector<ConfigError> errors_;
  std::vector<SeenDomain> domains_seen_;
};

std::optional<Fields> RateLimitConfig::Loader::Map(
    const Item& item, std::initializer_list<std::string_view> allowed,
    const std::function<std::optional<std::string>(std::string_view)>& hint) {
  Fields result{item, {}};
  if (item.node.IsNull() && !item.list_element) return result;
  if (!item.node.IsMap()) {
    Error(item, fmt::format("expected a map, got {}", config::DescribeYamlValue(item.node)));
    return std::nullopt;
  }
  const std::string where = item.path.empty() ? "at the top level" : "in " + item.path;
  for (const auto& pair : item.node) {
    const YAML::Node& key = pair.first;
    if (!key.IsScalar()) {
      ErrorAt(key.Mark(), fmt::format("keys must be plain strings {}, got {}", where,
                                      config::DescribeYamlValue(key)));
      continue;
    }
    const std::string name = key.Scalar();
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      std::optional<std::string> better = hint ? hint(name) : std::nullopt;
      if (better) {
        ErrorAt(key.Mark(), fmt::format("\"{}\" {}: {}", name, where, *better));
      } else {
        std::string names;
        for (std::string_view allowed_name : allowed) {
          if (!names.empty()) names += ", ";
          names += allowed_name;
        }
        ErrorAt(key.Mark(),
                fmt::format("unknown key \"{}\" {}; expected one of: {}", name, where, names));
      }
      continue;
    }
    if (result.Find(name) != nullptr) {
      ErrorAt(key.Mark(), fmt::format("duplicate key \"{}\" {}", name, where));
      continue;
    }
    YAML::Mark value_mark = pair.second.Mark();
    if (pair.second.IsNull() || value_mark.is_null()) value_mark = key.Mark();
    result.fields.push_back(Field{
        name, key.Mark(), Item{pair.second, value_mark, config::YamlChildPath(item.path, name)}});
  }
  return result;
}

std::optional<std::vector<Item>> RateLimitConfig::Loader::List(const Item& item) {
  if (item.node.IsNull()) return std::vector<Item>{};
  if (!item.node.IsSequence()) {
    Error(item, fmt::format("expected a list, got {}", config::DescribeYamlValue(item.node)));
    return std::nullopt;
  }
  std::vector<Item> items;
  for (const YAML::Node& element : item.node) {
    // An empty element ("- ") has no position of its own; point at the list.
    const YAML::Mark mark =
        element.IsNull() || element.Mark().is_null() ? item.mark : element.Mark();
    items.push_back(Item{element, mark, fmt::format("{}[{}]", item.path, items.size()), true});
  }
  return items;
}

const Item* RateLimitConfig::Loader::Required(const Fields& fields, std::string_view name) {
  const Item* value = fields.Value(name);
  if (value == nullptr) {
    Error(fields.self, fmt::format("missing required key \"{}\"", name));
  }
  return value;
}

// Any scalar, as written: keys and values are often numbers or addresses ("200",
// "50.0.0.5"), and the service reads them as strings too.
std::optional<std::string> RateLimitConfig::Loader::Text(const Item& item) {
  if (item.node.IsNull()) return std::string();
  if (!item.node.IsScalar()) {
    Error(item, fmt::format("expected a string, got {}", config::DescribeYamlValue(item.node)));
    return std::nullopt;
  }
  return item.node.Scalar();
}

std::optional<bool> RateLimitConfig::Loader::Bool(const Item& item) {
  const YAML::Node& node = item.node;
  if (node.IsScalar() && (node.Tag() == "?" || node.Tag() == "tag:yaml.org,2002:bool")) {
    const std::string& text = node.Scalar();
    if (text == "true" || text == "True" || text == "TRUE") return true;
    if (text == "false" || text == "False" || text == "FALSE") return false;
  }
  Error(item, fmt::format("expected true or false, got {}", config::DescribeYamlValue(node)));
  return std::nullopt;
}

std::optional<uint64_t> RateLimitConfig::Loader::Whole(const Item& item, uint64_t min,
                                                       uint64_t max) {
  const YAML::Node& node = item.node;
  const bool plain =
      node.IsScalar() && (node.Tag() == "?" || node.Tag() == "tag:yaml.org,2002:int");
  const std::optional<uint64_t> value = plain ? ParseCount(node.Scalar()) : std::nullopt;
  if (!value) {
    Error(item, fmt::format("expected a whole number, got {}{}", config::DescribeYamlValue(node),
                            node.IsScalar() && !plain ? " (quoted, so a string)" : ""));
    return std::nullopt;
  }
  if (*value < min || *value > max) {
    Error(item, fmt::format("must be between {} and {}, got {}", min, max, *value));
    return std::nullopt;
  }
  return value;
}

void RateLimitConfig::Loader::LoadFile(const Source& source) {
  file_ = source.name;
  file_errors_.clear();
  try {
    const std::string yaml(source.text);
    const std::optional<YAML::Mark> second = config::SecondYamlDocument(yaml);
    const YAML::Node root = second ? YAML::Node() : YAML::Load(yaml);
    if (second) {
      ErrorAt(*second, "a second YAML document; each file holds one domain (remove '---')");
    } else if (root.IsNull()) {
      ErrorAt(YAML::Mark::null_mark(),
              "the file is empty; expected \"domain:\" and \"descriptors:\"");
    } else {
      LoadDocument(Item{root, root.Mark(), ""});
    }
  } catch (const YAML::Exception& e) {
    ErrorAt(e.mark, "invalid YAML: " + e.msg);
  }
  std::stable_sort(file_errors_.begin(), file_errors_.end(),
                   [](const ConfigError& a, const ConfigError& b) {
                     return std::pair(a.line, a.column) < std::pair(b.line, b.column);
                   });
  for (ConfigError& error : file_errors_) errors_.push_back(std::move(error));
}

void RateLimitConfig::Loader::LoadDocument(const Item& root) {
  const std::optional<Fields> top = Map(root, {"domain", "descriptors"});
  if (!top) return;
  std::optional<std::string> domain;
  if (const Item* v = Required(*top, "domain")) {
    domain = Text(*v);
    if (domain && domain->empty()) {
      Error(*v, "must not be empty");
      domain.reset();
    }
  }
  if (domain) {
    // Each domain lives in one file (the service's default; it merges only with
    // MERGE_DOMAIN_CONFIG): two files with one domain are most likely a copy left over.
    const auto seen = std::find_if(domains_seen_.begin(), domains_seen_.end(),
                                   [&](const SeenDomain& d) { return d.name == *domain; });
    if (seen != domains_seen_.end()) {
      Error(*top->Value("domain"),
            fmt::format("duplicate domain \"{}\" (already defined in {}:{}); a domain is "
                        "defined by one file",
                        *domain, seen->file, seen->line));
      domain.reset();
    } else {
      domains_seen_.push_back(
          SeenDomain{*domain, std::string(file_), top->Value("domain")->mark.line + 1});
    }
  }
  Domain loaded{domain.value_or(""), {}};
  if (const Item* v = top->Value("descriptors")) {
    LoadDescriptors(*v, loaded.name, loaded.root);
  }
  if (domain) config_.domains_.push_back(std::move(loaded));
}

void RateLimitConfig::Loader::LoadDescriptors(const Item& item, const std::string& parent_key,
                                              Level& level) {
  const std::optional<std::vector<Item>> elements = List(item);
  if (!elements) return;
  std::vector<Written> written;
  std::vector<uint32_t> loaded;
  for (const Item& element : *elements) {
    if (std::optional<uint32_t> index = LoadDescriptor(element, parent_key, written)) {
      loaded.push_back(*index);
    }
  }
  for (uint32_t index : loaded) {
    const Node& node = config_.nodes_[index];
    if (node.value.empty()) {
      level.key_only.push_back(index);
    } else {
      level.valued.push_back(index);
      if (!node.wildcard_parts.empty()) level.wildcards.push_back(index);
    }
  }
  SortLevel(level);
}

void RateLimitConfig::Loader::SortLevel(Level& level) {
  const std::vector<Node>& nodes = config_.nodes_;
  std::sort(level.valued.begin(), level.valued.end(), [&](uint32_t a, uint32_t b) {
    return std::tie(nodes[a].key, nodes[a].value) < std::tie(nodes[b].key, nodes[b].value);
  });
  std::sort(level.key_only.begin(), level.key_only.end(),
            [&](uint32_t a, uint32_t b) { return nodes[a].key < nodes[b].key; });
  // level.wildcards stays in file order: the first match wins.
}

std::optional<uint32_t> RateLimitConfig::Loader::LoadDescriptor(const Item& item,
                                                                const std::string& parent_key,
                                                                std::vector<Written>& written) {
  const auto hint = [](std::string_view name) -> std::optional<std::string> {
    if (name == "quota_mode" || name == "value_to_metric" || name == "share_threshold" ||
        name == "metadata") {
      return "an envoyproxy/ratelimit option that sluice does not support; remove it";
    }
    if (name == "replaces" || name == "name" || name == "unit" || name == "requests_per_unit" ||
        name == "unlimited" || name == "algorithm" || name == "burst") {
      return "belongs inside rate_limit";
    }
    return std::nullopt;
  };
  const std::optional<Fields> fields = Map(
      item, {"key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric"}, hint);
  if (!fields) return std::nullopt;

  std::optional<std::string> key;
  if (const Item* v = Required(*fields, "key")) {
    key = Text(*v);
    if (key && key->empty()) {
      Error(*v, "must not be empty");
      key.reset();
    }
  }
  std::string value;
  if (const Item* v = fields->Value("value")) {
    if (std::optional<std::string> text = Text(*v)) value = std::move(*text);
  }

  Node node;
  bool usable = key.has_value();
  std::string full_key = parent_key;
  if (key) {
    node.key = *key;
    node.value = value;
    const std::string composite = CompositeKey(node.key, node.value);
    full_key = fmt::format("{}.{}", parent_key, composite);
    // The service files entries under "key_value", so two entries that join to the same
    // string are one to it, and it refuses them; so does sluice.
    const auto same = std::find_if(written.begin(), written.end(),
                                   [&](const Written& w) { return w.composite == composite; });
    const Item& at = *fields->Value("key");
    if (same != written.end()) {
      if (same->key == node.key && same->value == node.value) {
        Error(at, fmt::format("duplicate descriptor \"{}\" at this level (first at line {})",
                              composite, same->line));
      } else {
        Error(at, fmt::format("key \"{}\" with value \"{}\" joins to \"{}\", as key \"{}\" with "
                              "value \"{}\" at line {} does; envoyproxy/ratelimit names entries "
                              "\"key_value\" and cannot tell them apart",
                              node.key, node.value, composite, same->key, same->value, same->line));
      }
      usable = false;
    } else {
      written.push_back(Written{composite, node.key, node.value, at.mark.line + 1});
    }
    if (node.value.find('*') != std::string::npos) {
      size_t start = 0;
      while (true) {
        const size_t star = node.value.find('*', start);
        node.wildcard_parts.push_back(node.value.substr(start, star - start));
        if (star == std::string::npos) break;
        start = star + 1;
      }
    }
  }

  if (const Item* v = fields->Value("rate_limit")) {
    if (std::optional<RlsLimit> limit = LoadRateLimit(*v, *fields)) {
      limit->full_key = full_key;
      node.limit = static_cast<int32_t>(config_.limits_.size());
      config_.limits_.push_back(std::move(*limit));
    }
  } else {
    // Without rate_limit these would not apply to anything; still checked for type.
    if (const Item* v = fields->Value("shadow_mode")) Bool(*v);
    if (const Item* v = fields->Value("detailed_metric")) Bool(*v);
  }

  // Reserve the node's slot before its children take theirs: nodes_ grows while they
  // load, so the node is written into place afterwards rather than referenced.
  const auto index = static_cast<uint32_t>(config_.nodes_.size());
  config_.nodes_.emplace_back();
  if (const Item* v = fields->Value("descriptors")) {
    LoadDescriptors(*v, full_key, node.children);
  }
  config_.nodes_[index] = std::move(node);
  if (!usable) return std::nullopt;
  return index;
}

std::optional<RlsLimit> RateLimitConfig::Loader::LoadRateLimit(const Item& item,
                                                               const Fields& descriptor) {
  const auto hint = [](std::string_view name) -> std::optional<std::string> {
    if (name == "shadow_mode" || name == "detailed_metric") {
      return "belongs to the descriptor, beside rate_limit";
    }
    return std::nullopt;
  };
  const std::optional<Fields> fields = Map(
      item, {"unit", "requests_per_unit", "unlimited", "name", "replaces", "algorithm", "burst"},
      hint);
  if (!fields) return std::nullopt;
  const size_t errors_before = file_errors_.size();
  RlsLimit limit;
  limit.file = std::string(file_);
  limit.line = item.mark.line + 1;
  limit.column = item.mark.column + 1;

  if (const Item* v = fields->Value("unlimited")) limit.unlimited = Bool(*v).value_or(false);
  if (limit.unlimited) {
    // The service refuses a unit beside unlimited; a count or an algorithm would be
    // just as unused.
    for (std::string_view name : {"unit", "algorithm", "burst"}) {
      if (const Field* field = fields->Find(name)) {
        ErrorAt(field->key_mark,
                fmt::format("{}: must not be given with unlimited: true", field->value.path));
      }
    }
    if (const Field* field = fields->Find("requests_per_unit")) {
      const std::optional<uint64_t> count =
          Whole(field->value, 0, std::numeric_limits<uint32_t>::max());
      if (count && *count != 0) {
        ErrorAt(field->key_mark,
                fmt::format("{}: must not be given with unlimited: true (an unlimited "
                            "descriptor is never counted)",
                            field->value.path));
      }
    }
  } else {
    // Unknown after a bad `algorithm:`; checks that depend on it are then skipped.
    bool algorithm_known = true;
    if (const Item* v = fields->Value("algorithm")) {
      const std::optional<std::string> name = Text(*v);
      const std::optional<Algorithm> parsed = name ? ParseAlgorithm(*name) : std::nullopt;
      if (parsed) {
        limit.algorithm = *parsed;
      } else {
        algorithm_known = false;
        if (name) {
          Error(*v, fmt::format("unknown algorithm {}; expected one of: {}",
                                config::DescribeYamlValue(v->node), kAlgorithmNames));
        }
      }
    }
    if (const Item* v = Required(*fields, "unit")) {
      const std::optional<std::string> name = Text(*v);
      const auto* choice = std::find_if(std::begin(kUnits), std::end(kUnits), [&](auto& c) {
        return name && EqualsIgnoringCase(c.name, *name);
      });
      if (choice != std::end(kUnits)) {
        limit.unit = choice->unit;
      } else if (name) {
        Error(*v, fmt::format("unknown unit {}; expected one of: second, minute, hour, day, "
                              "week, month, year",
                              config::DescribeYamlValue(v->node)));
      }
    }
    if (const Item* v = Required(*fields, "requests_per_unit")) {
      // 0 is kept: it refuses every request (README Example 3, "Black list IP").
      if (std::optional<uint64_t> count = Whole(*v, 0, std::numeric_limits<uint32_t>::max())) {
        if (limit.algorithm == Algorithm::kSlidingWindowLog && *count > kMaxLogLimit) {
          Error(*v, fmt::format("must be at most {} with sliding_window_log (it keeps one "
                                "timestamp per request), got {}",
                                kMaxLogLimit, *count));
        } else {
          limit.requests_per_unit = static_cast<uint32_t>(*count);
        }
      }
    }
    limit.limit = Limit::PerPeriod(limit.requests_per_unit, UnitDuration(limit.unit));
    if (const Field* field = fields->Find("burst")) {
      if (algorithm_known && !UsesBurst(limit.algorithm)) {
        ErrorAt(field->key_mark,
                fmt::format("{}: {} does not use burst (only token_bucket, leaky_bucket and "
                            "gcra have a bucket capacity); remove it",
                            field->value.path, AlgorithmName(limit.algorithm)));
      } else if (std::optional<uint64_t> burst = Whole(field->value, 1, kMaxQuantity)) {
        limit.limit.burst = *burst;
      }
    }
  }

  if (const Item* v = fields->Value("name")) {
    if (std::optional<std::string> name = Text(*v)) limit.name = std::move(*name);
  }
  if (const Item* v = fields->Value("replaces")) {
    if (std::optional<std::vector<Item>> elements = List(*v)) {
      for (const Item& element : *elements) {
        const std::optional<Fields> entry = Map(element, {"name"});
        if (!entry) continue;
        const Item* name_item = Required(*entry, "name");
        if (name_item == nullptr) continue;
        std::optional<std::string> name = Text(*name_item);
        if (!name) continue;
        if (name->empty()) {
          Error(*name_item, "must not be empty");
        } else if (*name == limit.name) {
          Error(
              *name_item,
              fmt::format("\"{}\" is this limit's own name; a limit cannot replace itself", *name));
        } else {
          limit.replaces.push_back(std::move(*name));
        }
      }
    }
  }

  if (const Item* v = descriptor.Value("shadow_mode")) {
    limit.shadow_mode = Bool(*v).value_or(false);
  }
  if (const Item* v = descriptor.Value("detailed_metric")) {
    limit.detailed_metric = Bool(*v).value_or(false);
  }
  if (file_errors_.size() != errors_before) return std::nullopt;
  return limit;
}

RateLimitConfig::RateLimitConfig() = default;
RateLimitConfig::~RateLimitConfig() = default;

LoadResult RateLimitConfig::Load(std::span<const Source> files) {
  std::shared_ptr<RateLimitConfig> config(new RateLimitConfig());
  Loader loader(*config);
  for (const Source& source : files) loader.LoadFile(source);
  LoadResult result;
  result.errors = loader.TakeErrors();
  if (!result.errors.empty()) return result;
  std::sort(config->domains_.begin(), config->domains_.end(),
            [](const Domain& a, const Domain& b) { return a.name < b.name; });
  result.config = std::move(config);
  return result;
}

namespace {

std::optional<std::string> ReadWholeFile(const std::string& path, int& error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = errno;
    return std::nullopt;
  }
  std::string text;
  char buffer[65536];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      error = errno;
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return text;
}

}  // namespace

LoadResult RateLimitConfig::LoadPaths(const std::vector<std::string>& files_or_directories) {
  namespace fs = std::filesystem;
  std::vector<ConfigError> errors;
  std::vector<std::string> files;
  for (const std::string& path : files_or_directories) {
    std::error_code ec;
    if (!fs::is_directory(path, ec)) {
      files.push_back(path);  // read below; a missing file is reported there
      continue;
    }
    std::vector<std::string> found;
    for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      const std::string extension = it->path().extension().string();
      // Names starting with '.' are skipped: editors' files, and the "..data" links of
      // a Kubernetes ConfigMap volume, whose files also appear under their own names.
      if (name.starts_with('.') || (extension != ".yaml" && extension != ".yml")) continue;
      std::error_code type_ec;
      if (fs::is_regular_file(it->path(), type_ec)) found.push_back(it->path().string());
    }
    if (ec) {
      errors.push_back(
          ConfigError{.file = path, .message = fmt::format("cannot list: {}", ec.message())});
      continue;
    }
    if (found.empty()) {
      errors.push_back(
          ConfigError{.file = path, .message = "no *.yaml or *.yml files in this directory"});
      continue;
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }

  std::vector<std::string> texts;
  std::vector<Source> sources;
  texts.reserve(files.size());  // sources point into texts
  for (const std::string& file : files) {
    int error = 0;
    std::optional<std::string> text = ReadWholeFile(file, error);
    if (!text) {
      errors.push_back(ConfigError{
          .file = file, .message = fmt::format("cannot read: {}", std::strerror(error))});
      continue;
    }
    texts.push_back(std::move(*text));
    sources.push_back(Source{texts.back(), file});
  }
  LoadResult result = Load(sources);
  if (!errors.empty()) {
    result.config.reset();
    errors.insert(errors.end(), std::make_move_iterator(result.errors.begin()),
                  std::make_move_iterator(result.errors.end()));
    result.errors = std::move(errors);
  }
  return result;
}

// ---- Matching ----

bool RateLimitConfig::HasDomain(std::string_view domain) const {
  const auto it =
      std::lower_bound(domains_.begin(), domains_.end(), domain,
                       [](const Domain& d, std::string_view name) { return d.name < name; });
  return it != domains_.end() && it->name == domain;
}

const RateLimitConfig::Node* RateLimitConfig::FindChild(const Level& level, std::string_view key,
                                                        std::string_view value) const {
  // 1. The entry with this key and this value ("key_value is always attempted as a match
  //    before just key", README Example 3).
  if (!value.empty()) {
    const auto it = std::lower_bound(
        level.valued.begin(), level.valued.end(), std::pair(key, value),
        [&](uint32_t index, const std::pair<std::string_view, std::string_view>& wanted) {
          const Node& node = nodes_[index];
          return std::pair<std::string_view, std::string_view>(node.key, node.value) < wanted;
        });
    if (it != level.valued.end() && nodes_[*it].key == key && nodes_[*it].value == value) {
      return &nodes_[*it];
    }
  }
  // 2. The first wildcard value, in file order, that matches (config_impl.go tries its
  //    wildcard entries after the exact lookup and before the key alone).
  for (uint32_t index : level.wildcards) {
    const Node& node = nodes_[index];
    if (node.key == key && WildcardMatches(node.wildcard_parts, value)) return &node;
  }
  // 3. The key without a value: any value.
  const auto it = std::lower_bound(
      level.key_only.begin(), level.key_only.end(), key,
      [&](uint32_t index, std::string_view wanted) { return nodes_[index].key < wanted; });
  if (it != level.key_only.end() && nodes_[*it].key == key) return &nodes_[*it];
  return nullptr;
}

const RlsLimit* RateLimitConfig::Match(std::string_view domain,
                                       std::span<const Entry> entries) const {
  const auto found =
      std::lower_bound(domains_.begin(), domains_.end(), domain,
                       [](const Domain& d, std::string_view name) { return d.name < name; });
  if (found == domains_.end() || found->name != domain) return nullptr;
  const Level* level = &found->root;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Node* node = FindChild(*level, entries[i].first, entries[i].second);
    if (node == nullptr) return nullptr;
    // Only the node of the last entry gives the limit: a request must have as many
    // entries as the config has levels on its path (README Example 4).
    if (i + 1 == entries.size()) return node->limit < 0 ? nullptr : &limits_[node->limit];
    level = &node->children;
  }
  return nullptr;  // no entries
}

bool IsReplaced(std::span<const RlsLimit* const> matched, const RlsLimit& limit) {
  if (limit.unlimited || limit.name.empty()) return false;
  for (const RlsLimit* other : matched) {
    if (other == nullptr) continue;
    for (const std::string& replaced : other->replaces) {
      if (replaced == limit.name) return true;
    }
  }
  return false;
}

void StatsKey(std::string_view domain, std::span<const Entry> entries, const RlsLimit& limit,
              std::string& out) {
  out.clear();
  if (!limit.detailed_metric) {
    out.append(limit.full_key);
    return;
  }
  // The service joins key and value with '_' here even when the value is empty.
  out.append(domain);
  for (const Entry& entry : entries) {
    out.push_back('.');
    out.append(entry.first);
    out.push_back('_');
    out.append(entry.second);
  }
}

std::vector<config::ConfigError> RedisLimitErrors(const RateLimitConfig& config) {
  std::vector<config::ConfigError> errors;
  for (const RlsLimit& limit : config.limits()) {
    if (limit.unlimited || store::FitsRedisArithmetic(limit.limit)) continue;
    errors.push_back(config::ConfigError{
        limit.file, limit.line, limit.column,
        fmt::format("rate_limit: {} per {} is too many for store.backend redis (max(limit, "
                    "burst) x period in microseconds must stay below 2^51, about 26,000 per "
                    "day, 625,000 per hour or 2.2 billion per second), so that Redis's Lua "
                    "decides exactly; use the memory store, or a shorter unit",
                    limit.requests_per_unit, UnitName(limit.unit))});
  }
  return errors;
}

}  // namespace sluice::rls
