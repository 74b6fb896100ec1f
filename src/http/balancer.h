// Which server of an upstream group takes the next request: the `balance` policies of
// the `upstreams` config block. Pure and I/O-free: the caller says, per server, whether
// it may take traffic now (health check up, circuit breaker not open) and how many
// requests this worker has in flight to it; the balancer keeps only its own policy
// state (round-robin cursor, smooth-WRR weights, the ring, a random generator).
//
// Policies:
// - round_robin: eligible servers in list order, one each; weights are ignored.
// - weighted_round_robin: nginx's smooth weighted round robin. Each pick, every eligible
//   server's `current` grows by its weight, the largest `current` wins (the first in the
//   list on a tie) and loses the total of the eligible weights. Weights 5,1,1 give
//   a a b a c a a, interleaved rather than a a a a a b c. An ineligible server's
//   `current` is left as it was, as nginx leaves a down peer's, so the sum of all
//   `current`s stays 0 and a returning server rejoins the rotation without a burst.
// - least_connections: the fewest active requests per unit of weight (active/weight).
//   Ties are broken at random in proportion to weight, so equal servers share evenly
//   and an idle group (every active count 0) still follows the weights.
// - hash: consistent hashing of the client key on core::HashRing, the Redis store's
//   ring (core/hash_ring.h): each server stands at p x weight points (XXH3 of
//   "<name>#<i>") and a key is placed by multi-probe consistent hashing (8 probes; each
//   finds the first point at or after it, and the key goes to the nearest of those),
//   which keeps a server's share within a few percent of its share of the points where
//   one probe strays by 20% or more. A probe whose point belongs to a server that may
//   not take the pick (ineligible, or `exclude`) walks on round the ring to the next
//   eligible point, so only that server's keys move, and they come back when it does.
//   Adding a server moves about 1/(N+1) of the keys, all to it. The mapping depends
//   only on the names, weights and key (no seed), so every worker and every instance
//   of a fleet sends a client to the same server.
//
//   Points per unit of weight, p: 160 while the group's largest weight is at most 64,
//   halved at each doubling past that (80 up to 128, 40 up to 256, 20 up to 512, 10 up
//   to 1000), so that no server stands at more than 160 x 64 = 10,240 points. At 160
//   for every weight, 8 servers of weight 1000 took 1.28M points, 32 MB and 190 ms to
//   build in each worker on each reload; with the bound they take 80,000 points, 2 MB
//   and 10 ms (and a pick 94 ns instead of 195, the smaller ring staying in cache).
//   Every server of a group has the same p, so the shares of points still follow the
//   weights exactly. What the bound gives up:
//   - Precision for light servers beside heavy ones. A server's share strays from its
//     share of the points by about what its point count allows. Every server of at
//     least 1/32 of the largest weight keeps 160 points or more, within 10% (at most
//     4.8% off at 160 points, counted over 20 name sets); but a server of weight 1
//     beside one of 1000 has 10 points, and its share measured 0.68x to 1.14x its
//     weight's over 20 name sets: 0.07% of the keys where 0.1% was due.
//   - Stability across a step. p follows the largest weight, not the total or the
//     average, so adding, removing or reweighting servers other than the heaviest
//     moves only the keys of the servers that changed, as without a bound (a canary of
//     weight 1 added to a group of 1000s moves keys only to itself); but when the
//     largest weight crosses a step (a server raised from 64 to 65, or the only one of
//     weight 1000 removed from a group of 500s), every server's points halve or
//     double and a large part of all keys moves once (44% for 64 -> 65 among 8
//     servers). The steps are powers of two apart so that this stays rare. Bounding
//     by the average weight would keep light servers more precise but would move
//     many keys whenever an added or removed server carries the average across a step.
// - random: power of two choices. Two distinct eligible servers drawn uniformly; the
//   one with fewer active requests per unit of weight wins; a tie is a coin weighted
//   by the two weights.
//
// `exclude` serves the proxy's one retry: that server is passed over while any other
// is eligible. It is returned only when it is the only eligible server, so the caller
// decides whether a retry on the same server (on a fresh connection) is wanted.
//
// Cost: no allocation per pick. With 8 servers of weight 1, measured by a timing loop
// on a 3.2 GHz x86 (GCC 12, -O2), a pick took about 12 ns for round_robin, 17 for
// weighted_round_robin, 17 for least_connections (30 when all 8 tie, one random draw
// a tie), 25 for random (37 with a server down and one excluded, which costs a scan)
// and 39 for hash (one XXH3-128 of a 20-byte key and 8 probes). Memory for hash: 20
// to 28 bytes a point, so 32 KB for 8 servers of weight 1 and at most 10,240 x 28 =
// 280 KB a server at any weight (see p above).
//
// Thread-safety: none, by design. Pick changes the cursor, the WRR weights and the
// random state, so each worker builds its own Balancer per upstream group (workers are
// shared-nothing, and the active counts are that worker's own view) and uses it from
// its event loop thread only. No locks.
#ifndef SLUICE_HTTP_BALANCER_H_
#define SLUICE_HTTP_BALANCER_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/balance_policy.h"
#include "core/hash_ring.h"

namespace sluice::http {

// BalancePolicy: core/balance_policy.h, shared with the config.

// "round_robin", "weighted_round_robin", "least_connections", "hash", "random";
// nullopt for anything else (names are case-sensitive, as in the config).
std::optional<BalancePolicy> ParseBalancePolicy(std::string_view name);
std::string_view BalancePolicyName(BalancePolicy policy);

struct BalancerServer {
  std::string name;  // "host:port"; places the server's points on the hash ring
  uint32_t weight = 1;
};

// What the caller knows of server i at the time of a pick.
struct ServerStatus {
  bool eligible = true;  // health check up and circuit breaker not open
  uint32_t active = 0;   // requests this worker has in flight to it
};

struct PickContext {
  // REQUIRES: one entry per server, in the constructor's order.
  std::span<const ServerStatus> servers = {};
  std::string_view key = {};           // the client key; read by `hash` only
  std::optional<size_t> exclude = {};  // the server that just failed, for a retry
};

class Balancer {
 public:
  static constexpr uint32_t kMaxWeight = 1000;  // as the config allows
  // hash: points per unit of weight while the largest weight is at most 64, and the
  // most points a server has (see the header comment).
  static constexpr uint32_t kHashPointsPerWeight = core::HashRing::kDefaultVirtualNodes;
  static constexpr uint32_t kHashMaxPointsPerServer = kHashPointsPerWeight * 64;
  static constexpr int kHashProbes = core::HashRing::kProbes;

  // hash: the points per unit of weight, p, for a group whose largest weight is
  // `largest_weight`: kHashPointsPerWeight halved until p x largest_weight is at most
  // kHashMaxPointsPerServer.
  static uint32_t HashPointsPerWeight(uint32_t largest_weight);

  // REQUIRES: `servers` not empty, each weight in [1, kMaxWeight]. Names should be
  // distinct (two equal names share their ring points). `seed` starts the random
  // generator (tie-breaks, random): give each worker its own.
  Balancer(BalancePolicy policy, std::vector<BalancerServer> servers, uint64_t seed);

  // The index (into the constructor's list) of the server for the next request, or
  // nullopt when no server is eligible (the caller answers 503 or tries the fallback).
  std::optional<size_t> Pick(const PickContext& context) {
    // Inline so that the optional does not cross a call: GCC 12 returns one through
    // a byte store and a word load, a store-forwarding stall of about 4 ns a pick.
    const size_t picked = PickIndex(context);
    if (picked == kNone) return std::nullopt;
    return picked;
  }

  BalancePolicy policy() const { return policy_; }
  size_t size() const { return servers_.size(); }
  const BalancerServer& server(size_t index) const { return servers_[index]; }
  // hash: the points on the ring (0 for the other policies).
  size_t hash_points() const { return ring_ ? ring_->points() : 0; }

 private:
  static constexpr size_t kNone = SIZE_MAX;
  size_t PickIndex(const PickContext& context);  // kNone when no server is eligible
  // Each returns kNone when no server but `exclude` (if that) is eligible.
  size_t PickRoundRobin(const PickContext& context);
  size_t PickWeightedRoundRobin(const PickContext& context);
  size_t PickLeastConnections(const PickContext& context);
  size_t PickHash(const PickContext& context) const;
  size_t PickRandom(const PickContext& context);
  uint64_t NextRandom();
  uint64_t RandomBelow(uint64_t bound);  // uniform in [0, bound); REQUIRES bound >= 1

  BalancePolicy policy_;
  std::vector<BalancerServer> servers_;
  size_t cursor_ = 0;                   // round_robin: where the next scan starts
  std::vector<int64_t> current_;        // weighted_round_robin: nginx's current_weight
  uint64_t random_state_;               // splitmix64
  std::optional<core::HashRing> ring_;  // hash only
};

}  // namespace sluice::http

#endif  // SLUICE_HTTP_BALANCER_H_
