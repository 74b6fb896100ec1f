// One algorithm with its own state, the way a store holds it: the thing the core
// tests drive.
#ifndef SLUICE_TESTS_CORE_ALGORITHM_SUBJECT_H_
#define SLUICE_TESTS_CORE_ALGORITHM_SUBJECT_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/algorithms.h"

namespace sluice::testing {

class Subject {
 public:
  // The log's ring holds `limit` timestamps (at most kMaxLogLimit, the store's cap).
  Subject(Algorithm a, Limit l)
      : algorithm_(a),
        limit_(l),
        ring_(a == Algorithm::kSlidingWindowLog ? std::min<uint64_t>(l.limit, kMaxLogLimit) : 0) {}

  Decision Decide(int64_t now, uint64_t cost) {
    if (algorithm_ == Algorithm::kSlidingWindowLog) {
      return core::DecideSlidingWindowLog(limit_, log_, ring_, FromNanos(now), cost);
    }
    return core::DecideCompact(algorithm_, limit_, state_, FromNanos(now), cost);
  }

 private:
  Algorithm algorithm_;
  Limit limit_;
  core::CompactState state_;
  core::SlidingWindowLogState log_;
  std::vector<int64_t> ring_;
};

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_CORE_ALGORITHM_SUBJECT_H_
