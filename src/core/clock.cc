#include "sluice/clock.h"

namespace sluice {

Timestamp SteadyClock::Now() const {
  return Timestamp(
      std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now().time_since_epoch()));
}

Timestamp SystemClock::Now() const {
  return Timestamp(
      std::chrono::duration_cast<Duration>(std::chrono::system_clock::now().time_since_epoch()));
}

}  // namespace sluice
