// Resident memory per tracked key: RSS growth while 1,000,000 distinct keys are
// tracked, divided by the keys. One algorithm per process run (so freed memory of one
// run cannot flatter the next): memory_per_key ALGORITHM [memory|baseline] [KEYS]
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/algorithms.h"
#include "store/memory_store.h"

namespace {

long ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * sysconf(_SC_PAGESIZE);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace sluice;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s ALGORITHM [memory|baseline] [KEYS]\n", argv[0]);
    return 2;
  }
  const auto algorithm = ParseAlgorithm(argv[1]);
  if (!algorithm) {
    std::fprintf(stderr, "unknown algorithm %s\n", argv[1]);
    return 2;
  }
  const std::string which = argc > 2 ? argv[2] : "memory";
  const size_t keys = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1'000'000;
  const Limit limit{.limit = 10, .period = std::chrono::minutes(1), .burst = 10};

  // Key strings are made one at a time and dropped: only the store's own memory counts.
  char key[64];
  const long before = ResidentBytes();
  size_t tracked = 0;
  if (which == "memory") {
    // max_keys with room for hashing's per-shard slack, as a deployment would set it.
    store::MemoryStore store({.max_keys = keys * 5 / 4});
    for (size_t i = 0; i < keys; ++i) {
      const int n = std::snprintf(key, sizeof key, "api-per-key:client-%zu", i);
      store.Decide(
          StoreRequest{.key = std::string_view(key, n), .algorithm = *algorithm, .limit = limit},
          FromNanos(1));
    }
    tracked = store.GetStats().keys;
    const long after = ResidentBytes();
    std::printf("%s memory keys=%zu tracked=%zu evicted=%lu bytes_per_key=%.1f\n", argv[1], keys,
                tracked, static_cast<unsigned long>(store.GetStats().evicted),
                static_cast<double>(after - before) / static_cast<double>(tracked));
  } else {
    struct State {
      core::CompactState compact;
      core::SlidingWindowLogState log;
      std::vector<int64_t> ring;
    };
    std::unordered_map<std::string, State> states;
    for (size_t i = 0; i < keys; ++i) {
      const int n = std::snprintf(key, sizeof key, "api-per-key:client-%zu", i);
      State& s = states[std::string(key, n)];
      if (*algorithm == Algorithm::kSlidingWindowLog) {
        s.ring.resize(limit.limit);
        core::DecideSlidingWindowLog(limit, s.log, s.ring, FromNanos(1), 1);
      } else {
        core::DecideCompact(*algorithm, limit, s.compact, FromNanos(1), 1);
      }
    }
    tracked = states.size();
    const long after = ResidentBytes();
    std::printf("%s baseline keys=%zu tracked=%zu bytes_per_key=%.1f\n", argv[1], keys, tracked,
                static_cast<double>(after - before) / static_cast<double>(tracked));
  }
  return 0;
}
