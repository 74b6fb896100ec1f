// Units as users type them in flags and config: counts and durations.
//
// Thread-safety: pure functions.
#ifndef SLUICE_CORE_UNITS_H_
#define SLUICE_CORE_UNITS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "sluice/clock.h"

namespace sluice {

// An integer count followed by a unit: ns, us, ms, s, m, h or d ("500ms", "10s", "1d").
// nullopt for anything else: empty, a sign, a fraction, spaces, no or an unknown unit,
// or more nanoseconds than a Duration holds. "0s" parses; callers that need a positive
// duration check for it.
std::optional<Duration> ParseDuration(std::string_view text);
// The inverse of ParseDuration for non-negative durations, in the largest unit that
// divides it exactly ("1500ms", "2m", "0s").
std::string FormatDuration(Duration duration);
// A plain decimal count ("0", "42"): no sign, base prefix, spaces or overflow.
std::optional<uint64_t> ParseCount(std::string_view text);

}  // namespace sluice

#endif  // SLUICE_CORE_UNITS_H_
