#include "core/units.h"

#include <algorithm>
#include <array>
#include <charconv>

namespace sluice {
namespace {

constexpr int64_t kNanosPerSecond = 1'000'000'000;

struct DurationUnit {
  std::string_view suffix;
  int64_t nanos;
};
// Largest first, so FormatDuration picks the largest exact unit.
constexpr std::array<DurationUnit, 7> kDurationUnits = {{
    {"d", 86'400 * kNanosPerSecond},
    {"h", 3'600 * kNanosPerSecond},
    {"m", 60 * kNanosPerSecond},
    {"s", kNanosPerSecond},
    {"ms", 1'000'000},
    {"us", 1'000},
    {"ns", 1},
}};

}  // namespace

std::optional<uint64_t> ParseCount(std::string_view text) {
  // std::from_chars alone would accept a leading '-' for signed types and stop at the
  // first non-digit; requiring digits only and the whole text makes "1e3", "+5", "0x10"
  // and "5 " errors rather than surprises.
  if (text.empty() ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<Duration> ParseDuration(std::string_view text) {
  const size_t digits_end = text.find_first_not_of("0123456789");
  if (digits_end == 0 || digits_end == std::string_view::npos) return std::nullopt;
  const std::optional<uint64_t> count = ParseCount(text.substr(0, digits_end));
  if (!count) return std::nullopt;  // more digits than 64 bits hold
  const std::string_view suffix = text.substr(digits_end);
  for (const DurationUnit& unit : kDurationUnits) {
    if (unit.suffix != suffix) continue;
    const uint64_t max_count = static_cast<uint64_t>(Duration::max().count() / unit.nanos);
    if (*count > max_count) return std::nullopt;
    return Duration(static_cast<int64_t>(*count) * unit.nanos);
  }
  return std::nullopt;
}

std::string FormatDuration(Duration duration) {
  const int64_t ns = duration.count();
  for (const DurationUnit& unit : kDurationUnits) {
    if (ns != 0 && ns % unit.nanos == 0)
      return std::to_string(ns / unit.nanos) + std::string(unit.suffix);
  }
  return std::to_string(ns) + (ns == 0 ? "s" : "ns");
}

}  // namespace sluice
