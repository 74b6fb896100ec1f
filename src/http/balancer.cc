#include "http/balancer.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "core/check.h"

namespace sluice::http {

namespace {

constexpr std::pair<std::string_view, BalancePolicy> kPolicyNames[] = {
    {"round_robin", BalancePolicy::kRoundRobin},
    {"weighted_round_robin", BalancePolicy::kWeightedRoundRobin},
    {"least_connections", BalancePolicy::kLeastConnections},
    {"hash", BalancePolicy::kHash},
    {"random", BalancePolicy::kRandom},
};

// May server i take this pick?
inline bool Usable(const PickContext& context, size_t i) {
  return context.servers[i].eligible && i != context.exclude;
}

// active_a / weight_a < active_b / weight_b, exactly (both products fit in 64 bits).
inline bool LessLoaded(const ServerStatus& a, uint32_t weight_a, const ServerStatus& b,
                       uint32_t weight_b) {
  return uint64_t{a.active} * weight_b < uint64_t{b.active} * weight_a;
}

}  // namespace

std::optional<BalancePolicy> ParseBalancePolicy(std::string_view name) {
  for (const auto& [spelling, policy] : kPolicyNames) {
    if (spelling == name) return policy;
  }
  return std::nullopt;
}

std::string_view BalancePolicyName(BalancePolicy policy) {
  for (const auto& [spelling, p] : kPolicyNames) {
    if (p == policy) return spelling;
  }
  return "unknown";
}

Balancer::Balancer(BalancePolicy policy, std::vector<BalancerServer> servers, uint64_t seed)
    : policy_(policy), servers_(std::move(servers)), random_state_(seed) {
  SLUICE_CHECK(!servers_.empty());
  for (const BalancerServer& s : servers_) SLUICE_CHECK(s.weight >= 1 && s.weight <= kMaxWeight);
  if (policy_ == BalancePolicy::kWeightedRoundRobin) current_.assign(servers_.size(), 0);
  if (policy_ == BalancePolicy::kHash) {
    std::vector<std::string> names;
    std::vector<uint32_t> weights;
    uint32_t largest = 0;
    for (const BalancerServer& s : servers_) {
      names.push_back(s.name);
      weights.push_back(s.weight);
      largest = std::max(largest, s.weight);
    }
    ring_.emplace(std::move(names), weights, static_cast<int>(HashPointsPerWeight(largest)));
  }
}

size_t Balancer::PickIndex(const PickContext& context) {
  SLUICE_CHECK(context.servers.size() == servers_.size());
  size_t picked = kNone;
  switch (policy_) {
    case BalancePolicy::kRoundRobin:
      picked = PickRoundRobin(context);
      break;
    case BalancePolicy::kWeightedRoundRobin:
      picked = PickWeightedRoundRobin(context);
      break;
    case BalancePolicy::kLeastConnections:
      picked = PickLeastConnections(context);
      break;
    case BalancePolicy::kHash:
      picked = PickHash(context);
      break;
    case BalancePolicy::kRandom:
      picked = PickRandom(context);
      break;
  }
  if (picked != kNone) [[likely]] {
    return picked;
  }
  // Nothing but `exclude` is eligible: the retry may still go to it (see the header).
  if (context.exclude && *context.exclude < servers_.size() &&
      context.servers[*context.exclude].eligible) {
    return *context.exclude;
  }
  return kNone;
}

size_t Balancer::PickRoundRobin(const PickContext& context) {
  const size_t n = servers_.size();
  size_t i = cursor_;
  for (size_t k = 0; k < n; ++k, i = i + 1 == n ? 0 : i + 1) {
    if (Usable(context, i)) {
      cursor_ = i + 1 == n ? 0 : i + 1;
      return i;
    }
  }
  return kNone;
}

size_t Balancer::PickWeightedRoundRobin(const PickContext& context) {
  // ngx_http_upstream_get_peer with effective_weight = weight: failures are the
  // caller's to report through `eligible`, not through a reduced weight.
  int64_t total = 0;
  size_t best = kNone;
  int64_t best_current = std::numeric_limits<int64_t>::min();
  for (size_t i = 0; i < servers_.size(); ++i) {
    if (!Usable(context, i)) continue;
    const int64_t weight = servers_[i].weight;
    const int64_t current = current_[i] += weight;
    total += weight;
    if (current > best_current) {  // strictly: the first of equals wins, as in nginx
      best = i;
      best_current = current;
    }
  }
  if (best != kNone) current_[best] -= total;
  return best;
}

size_t Balancer::PickLeastConnections(const PickContext& context) {
  size_t best = kNone;
  uint64_t tied_weight = 0;  // the weights of the servers tied with `best` so far
  for (size_t i = 0; i < servers_.size(); ++i) {
    if (!Usable(context, i)) continue;
    const uint32_t weight = servers_[i].weight;
    if (best == kNone ||
        LessLoaded(context.servers[i], weight, context.servers[best], servers_[best].weight)) {
      best = i;
      tied_weight = weight;
    } else if (!LessLoaded(context.servers[best], servers_[best].weight, context.servers[i],
                           weight)) {
      // A tie: weighted reservoir sampling, so each tied server ends up chosen with
      // probability weight / (sum of the tied weights), in one pass.
      tied_weight += weight;
      if (RandomBelow(tied_weight) < weight) best = i;
    }
  }
  return best;
}

size_t Balancer::PickRandom(const PickContext& context) {
  const size_t n = servers_.size();
  size_t usable = 0;
  size_t last = kNone;
  for (size_t i = 0; i < n; ++i) {
    if (Usable(context, i)) {
      ++usable;
      last = i;
    }
  }
  if (usable <= 1) return last;
  // The r1-th and r2-th usable servers, r1 != r2, each pair equally likely.
  const uint64_t r1 = RandomBelow(usable);
  uint64_t r2 = RandomBelow(usable - 1);
  if (r2 >= r1) ++r2;
  size_t a = r1, b = r2;  // when every server is usable, rank and index are one
  if (usable < n) {
    a = b = kNone;
    for (size_t i = 0, rank = 0; i < n && (a == kNone || b == kNone); ++i) {
      if (!Usable(context, i)) continue;
      if (rank == r1) a = i;
      if (rank == r2) b = i;
      ++rank;
    }
  }
  const uint32_t weight_a = servers_[a].weight, weight_b = servers_[b].weight;
  if (LessLoaded(context.servers[a], weight_a, context.servers[b], weight_b)) return a;
  if (LessLoaded(context.servers[b], weight_b, context.servers[a], weight_a)) return b;
  return RandomBelow(uint64_t{weight_a} + weight_b) < weight_a ? a : b;
}

uint32_t Balancer::HashPointsPerWeight(uint32_t largest_weight) {
  uint32_t points = kHashPointsPerWeight;
  while (points > 1 && uint64_t{points} * largest_weight > kHashMaxPointsPerServer) points /= 2;
  return points;
}

size_t Balancer::PickHash(const PickContext& context) const {
  static_assert(core::HashRing::kNoNode == kNone);  // the ring's "no server eligible"
  return ring_->NodeFor(context.key, [&context](size_t i) { return Usable(context, i); });
}

uint64_t Balancer::NextRandom() {
  // splitmix64 (Steele, Lea and Flood, 2014): one add and a mix, full period 2^64.
  uint64_t z = (random_state_ += 0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

uint64_t Balancer::RandomBelow(uint64_t bound) {
  // Lemire's multiply-shift: the bias is below bound / 2^64, nothing at these sizes.
  return static_cast<uint64_t>((static_cast<unsigned __int128>(NextRandom()) * bound) >> 64);
}

}  // namespace sluice::http
