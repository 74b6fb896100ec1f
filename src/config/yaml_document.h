// YAML helpers shared by the loaders of sluice's own config (config.cc) and of
// envoyproxy/ratelimit's format (rls/ratelimit_config.cc).
#ifndef SLUICE_CONFIG_YAML_DOCUMENT_H_
#define SLUICE_CONFIG_YAML_DOCUMENT_H_

#include <yaml-cpp/yaml.h>

#include <optional>
#include <string>
#include <string_view>

namespace sluice::config {

// Where the second YAML document of `text` starts, if it has one. Throws
// YAML::ParserException on a syntax error, like YAML::Load. YAML::LoadAll is not used:
// in yaml-cpp 0.7 it loops forever, allocating, on a stray ',' outside a flow
// collection (yaml-cpp PR #1319): the parser yields an empty document without
// consuming the token, again and again. Here a document that starts where the previous
// one did is that case, and an error.
std::optional<YAML::Mark> SecondYamlDocument(const std::string& text);

// How a value appears in "expected X, got Y": "nothing", "a list", "a map", or the
// scalar quoted and escaped (so one with spaces, quotes or line breaks reads as one)
// and cut after 60 characters.
std::string DescribeYamlValue(const YAML::Node& node);

// "parent.key", or "key" at the top.
std::string YamlChildPath(const std::string& parent, std::string_view key);

}  // namespace sluice::config

#endif  // SLUICE_CONFIG_YAML_DOCUMENT_H_
