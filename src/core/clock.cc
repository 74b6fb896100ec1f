#include "sluice/clock.h"

namespace sluice {

Timestamp SteadyClock::Now() const {
  return Timestamp(
      std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now().time_since_epoch()));
}

const SteadyClock& SteadyClock::Instance() {
  static const SteadyClock clock;
  return clock;
}

}  // namespace sluice
