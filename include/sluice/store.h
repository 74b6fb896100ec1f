// Where limiter state lives: the seam between the request path and the counters.
//
// A Store applies one request to the state kept under a key and answers with a
// Decision. Two implementations: the memory store (src/store/memory_store.h), shared by
// all worker threads of one process, and the Redis store (shared by a fleet).
//
// Thread-safety: every Store may be called from any number of threads at once; each
// call is atomic with respect to the others on the same key (no update is lost and no
// more than the policy allows is admitted).
#ifndef SLUICE_STORE_H_
#define SLUICE_STORE_H_

#include <cstdint>
#include <string_view>

#include "sluice/clock.h"
#include "sluice/decision.h"
#include "sluice/limiter.h"

namespace sluice {

// One request against one limit.
struct StoreRequest {
  // Rule name + client identity, already free of secrets (hashed by the caller).
  std::string_view key;
  Algorithm algorithm = Algorithm::kTokenBucket;
  Limit limit;
  uint64_t cost = 1;  // REQUIRES: cost <= kMaxQuantity
};

class Store {
 public:
  // Receives the answer to Decide. Called exactly once per Decide; the memory store
  // calls it before Decide returns.
  class Completion {
   public:
    virtual void OnDecision(const Decision& decision) = 0;

   protected:
    ~Completion() = default;
  };

  virtual ~Store() = default;

  // Applies `request` at time `now` (the caller's clock reading for this loop turn;
  // a store with a clock of its own, such as Redis, uses that instead) and answers
  // through `done`. `request.key` need only live until Decide returns.
  virtual void Decide(const StoreRequest& request, Timestamp now, Completion& done) = 0;
};

}  // namespace sluice

#endif  // SLUICE_STORE_H_
