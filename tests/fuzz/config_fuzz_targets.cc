// The configuration loader as a fuzz target.
#include <string_view>

#include "config/config.h"
#include "fuzz/fuzz_targets.h"
#include "fuzz/fuzz_util.h"

namespace sluice::fuzz {

int ConfigOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const config::LoadResult result = config::LoadConfigText(text, "fuzz.yaml");
  Require((result.config == nullptr) == !result.errors.empty(),
          "a load yields a config or errors, never both or neither");
  for (const config::ConfigError& error : result.errors) {
    Require(error.file == "fuzz.yaml", "errors name the source");
    Require(error.line >= 0 && error.column >= 0, "line and column >= 0");
    Require(!error.message.empty(), "errors have a message");
    Require(error.ToString().starts_with("fuzz.yaml:"), "FILE:LINE:COL: message");
  }
  if (result.config != nullptr) {
    Require(result.config->source == "fuzz.yaml", "the config names its source");
    for (const config::Rule& rule : result.config->rules) {
      Require(!rule.name.empty(), "rules have names");
    }
  }
  return 0;
}

}  // namespace sluice::fuzz
