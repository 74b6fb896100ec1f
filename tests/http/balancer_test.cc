// Each policy of http/balancer.h checked against its definition over many picks.
//
// The random policies draw from the balancer's seeded generator, so every run is the
// same; the statistical checks use Pearson's chi-square at p = 0.001, which a correct
// policy fails on one seed in a thousand and a biased one (always the first of a tie,
// two draws that may be the same server) fails by orders of magnitude.
//
// The http_test binary counts its allocations (tests/testing/allocation_counter.h), so
// that a test can show a pick allocates nothing.
#include "http/balancer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "testing/allocation_counter.h"

namespace sluice::http {
namespace {

constexpr BalancePolicy kAllPolicies[] = {
    BalancePolicy::kRoundRobin, BalancePolicy::kWeightedRoundRobin,
    BalancePolicy::kLeastConnections, BalancePolicy::kHash, BalancePolicy::kRandom};

std::vector<BalancerServer> Servers(const std::vector<uint32_t>& weights) {
  std::vector<BalancerServer> servers;
  for (size_t i = 0; i < weights.size(); ++i) {
    servers.push_back({"10.0.1." + std::to_string(i + 1) + ":8080", weights[i]});
  }
  return servers;
}

std::vector<BalancerServer> EqualServers(size_t count) {
  return Servers(std::vector<uint32_t>(count, 1));
}

std::vector<ServerStatus> AllUp(size_t count) { return std::vector<ServerStatus>(count); }

size_t MustPick(Balancer& balancer, const PickContext& context) {
  const std::optional<size_t> picked = balancer.Pick(context);
  EXPECT_TRUE(picked.has_value());
  return picked.value_or(0);
}

std::string Key(int i) { return "client-" + std::to_string(i); }

// Pearson's chi-square of `counts` against the expected shares (which sum to 1).
double ChiSquare(const std::vector<int>& counts, const std::vector<double>& shares) {
  double total = 0;
  for (int c : counts) total += c;
  double chi = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double expected = total * shares[i];
    chi += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi;
}

// The chi-square a correct distribution exceeds with probability 0.001, by degrees of
// freedom (1 to 7).
double Critical(size_t degrees) {
  static constexpr double kTable[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32};
  return kTable[degrees];
}

TEST(BalancePolicyTest, ParsesTheConfigNamesAndNothingElse) {
  for (BalancePolicy policy : kAllPolicies) {
    EXPECT_EQ(ParseBalancePolicy(BalancePolicyName(policy)), policy);
  }
  EXPECT_EQ(ParseBalancePolicy("round_robin"), BalancePolicy::kRoundRobin);
  EXPECT_EQ(ParseBalancePolicy("weighted_round_robin"), BalancePolicy::kWeightedRoundRobin);
  EXPECT_EQ(ParseBalancePolicy("least_connections"), BalancePolicy::kLeastConnections);
  EXPECT_EQ(ParseBalancePolicy("hash"), BalancePolicy::kHash);
  EXPECT_EQ(ParseBalancePolicy("random"), BalancePolicy::kRandom);
  for (std::string_view unknown : std::initializer_list<std::string_view>{
           "", "Round_Robin", "round_robin ", "least_conn", "ip_hash", "weighted", "random2",
           std::string_view("hash\0", 5)}) {
    EXPECT_EQ(ParseBalancePolicy(unknown), std::nullopt) << unknown;
  }
}

// ---- round_robin

TEST(RoundRobinTest, VisitsEveryServerInOrder) {
  Balancer balancer(BalancePolicy::kRoundRobin, EqualServers(4), 1);
  const std::vector<ServerStatus> state = AllUp(4);
  for (size_t i = 0; i < 400; ++i) ASSERT_EQ(MustPick(balancer, {.servers = state}), i % 4);
}

TEST(RoundRobinTest, SkipsIneligibleServersAndTakesThemBackInTurn) {
  Balancer balancer(BalancePolicy::kRoundRobin, Servers({1, 5, 1, 1, 1}), 1);  // weight unused
  std::vector<ServerStatus> state = AllUp(5);
  state[1].eligible = false;
  state[2].eligible = false;
  for (size_t i = 0; i < 300; ++i) {
    ASSERT_EQ(MustPick(balancer, {.servers = state}), (std::vector<size_t>{0, 3, 4})[i % 3]);
  }
  // The cursor is past 4, so 0 comes next, then the returning 2 in its place.
  state[2].eligible = true;
  for (size_t i = 0; i < 400; ++i) {
    ASSERT_EQ(MustPick(balancer, {.servers = state}), (std::vector<size_t>{0, 2, 3, 4})[i % 4]);
  }
}

// ---- weighted_round_robin

// nginx's loop (ngx_http_upstream_get_peer), written out from its definition.
class ReferenceSmoothWrr {
 public:
  explicit ReferenceSmoothWrr(std::vector<int64_t> weights)
      : weights_(std::move(weights)), current_(weights_.size(), 0) {}
  size_t Pick(const std::vector<ServerStatus>& state) {
    int64_t total = 0;
    int best = -1;
    for (size_t i = 0; i < weights_.size(); ++i) {
      if (!state[i].eligible) continue;
      current_[i] += weights_[i];
      total += weights_[i];
      if (best == -1 || current_[i] > current_[best]) best = static_cast<int>(i);
    }
    current_[best] -= total;
    return static_cast<size_t>(best);
  }

 private:
  std::vector<int64_t> weights_;
  std::vector<int64_t> current_;
};

TEST(WeightedRoundRobinTest, InterleavesWeights511AsNginxDoes) {
  Balancer balancer(BalancePolicy::kWeightedRoundRobin, Servers({5, 1, 1}), 1);
  const std::vector<ServerStatus> state = AllUp(3);
  std::string sequence;
  for (int i = 0; i < 70; ++i) sequence += "abc"[MustPick(balancer, {.servers = state})];
  std::string expected;
  for (int i = 0; i < 10; ++i) expected += "aabacaa";
  EXPECT_EQ(sequence, expected);
}

TEST(WeightedRoundRobinTest, GivesExactSharesInEveryRoundOfTotalWeight) {
  const std::vector<std::vector<uint32_t>> weight_sets = {
      {4, 2, 1}, {3, 3, 1}, {2, 2, 2, 1},    {1, 1, 1, 1, 1, 1, 1},
      {6, 1},    {10, 1},   {7, 3, 5, 1, 2}, {1, 2, 3, 4, 5, 6, 7, 8}};
  for (const std::vector<uint32_t>& weights : weight_sets) {
    Balancer balancer(BalancePolicy::kWeightedRoundRobin, Servers(weights), 1);
    const std::vector<ServerStatus> state = AllUp(weights.size());
    uint32_t total = 0;
    for (uint32_t w : weights) total += w;
    const int rounds = 7000 / static_cast<int>(total) + 1;  // 7k picks or a little more
    std::vector<int> counts(weights.size(), 0);
    for (int round = 1; round <= rounds; ++round) {
      for (uint32_t i = 0; i < total; ++i) ++counts[MustPick(balancer, {.servers = state})];
      for (size_t s = 0; s < weights.size(); ++s) {
        ASSERT_EQ(counts[s], round * static_cast<int>(weights[s]))
            << "server " << s << " after round " << round << " of weights set "
            << ::testing::PrintToString(weights);
      }
    }
  }
}

TEST(WeightedRoundRobinTest, MatchesNginxWhileServersComeAndGo) {
  const std::vector<uint32_t> weights = {5, 1, 3, 2, 8, 1};
  Balancer balancer(BalancePolicy::kWeightedRoundRobin, Servers(weights), 1);
  ReferenceSmoothWrr reference({5, 1, 3, 2, 8, 1});
  std::vector<ServerStatus> state = AllUp(weights.size());
  std::mt19937_64 rng(42);
  for (int i = 0; i < 20'000; ++i) {
    if (i % 37 == 0) {  // flip one server, keeping at least one eligible
      const size_t s = rng() % weights.size();
      state[s].eligible = !state[s].eligible;
      bool any = false;
      for (const ServerStatus& st : state) any |= st.eligible;
      if (!any) state[s].eligible = true;
    }
    ASSERT_EQ(MustPick(balancer, {.servers = state}), reference.Pick(state)) << "pick " << i;
  }
}

TEST(WeightedRoundRobinTest, StillInterleavesAfterAServerLeavesAndReturns) {
  for (int before = 0; before < 7; ++before) {
    for (int away : {1, 2, 3, 5, 8, 13, 100}) {
      Balancer balancer(BalancePolicy::kWeightedRoundRobin, Servers({5, 1, 1}), 1);
      std::vector<ServerStatus> state = AllUp(3);
      for (int i = 0; i < before; ++i) MustPick(balancer, {.servers = state});
      state[0].eligible = false;
      // b and c share while a is away. Not in strict turns: they carry the `current`s
      // of before, which nginx leaves as they were, so one may lead by a few picks
      // (4 at most over these cases), never more.
      int b_minus_c = 0;
      for (int i = 0; i < away; ++i) {
        const size_t picked = MustPick(balancer, {.servers = state});
        ASSERT_NE(picked, 0u);
        b_minus_c += picked == 1 ? 1 : -1;
        ASSERT_LE(std::abs(b_minus_c), 4) << "before " << before << " away " << away;
      }
      state[0].eligible = true;
      std::vector<size_t> after;
      for (int i = 0; i < 700; ++i) after.push_back(MustPick(balancer, {.servers = state}));
      // Shares right to within a pick, a never more than 4 in a row (the most in nginx's
      // cycle, aa|aabacaa), 4 to 6 a's in any 7 in a row, and b and c at most 8 apart:
      // a clumping a a a a a b c has runs of 5.
      std::vector<int> counts(3, 0);
      for (size_t s : after) ++counts[s];
      EXPECT_NEAR(counts[0], 500, 1);
      EXPECT_NEAR(counts[1], 100, 1);
      EXPECT_NEAR(counts[2], 100, 1);
      int run = 0;
      std::vector<int> since(3, 0);
      for (size_t i = 0; i < after.size(); ++i) {
        run = after[i] == 0 ? run + 1 : 0;
        ASSERT_LE(run, 4) << "before " << before << " away " << away << " at " << i;
        for (size_t s = 1; s < 3; ++s) {
          since[s] = after[i] == s ? 0 : since[s] + 1;
          ASSERT_LT(since[s], 8) << "server " << s << " before " << before << " away " << away;
        }
        if (i + 7 <= after.size()) {
          int a = 0;
          for (size_t j = i; j < i + 7; ++j) a += after[j] == 0;
          ASSERT_GE(a, 4);
          ASSERT_LE(a, 6);
        }
      }
    }
  }
}

// ---- least_connections

TEST(LeastConnectionsTest, PicksTheFewestActivePerWeightAmongEligible) {
  const std::vector<uint32_t> weights = {1, 1, 2, 1, 3, 1, 1, 4};
  Balancer balancer(BalancePolicy::kLeastConnections, Servers(weights), 7);
  std::vector<ServerStatus> state = AllUp(weights.size());
  std::mt19937_64 rng(1);
  for (int i = 0; i < 20'000; ++i) {
    for (ServerStatus& s : state) {
      s.active = static_cast<uint32_t>(rng() % 6);
      s.eligible = rng() % 4 != 0;
    }
    state[rng() % state.size()].eligible = true;
    const size_t picked = MustPick(balancer, {.servers = state});
    ASSERT_TRUE(state[picked].eligible);
    for (size_t s = 0; s < state.size(); ++s) {
      if (!state[s].eligible) continue;
      // active[picked] / w[picked] <= active[s] / w[s]
      ASSERT_LE(uint64_t{state[picked].active} * weights[s],
                uint64_t{state[s].active} * weights[picked])
          << "picked " << picked << " over " << s;
    }
  }
}

TEST(LeastConnectionsTest, EqualServersShareTiesEvenly) {
  // Four of six servers tie at the minimum; the other two are busier or down.
  for (uint64_t seed : {1, 2, 3}) {
    Balancer balancer(BalancePolicy::kLeastConnections, EqualServers(6), seed);
    std::vector<ServerStatus> state = AllUp(6);
    for (ServerStatus& s : state) s.active = 3;
    state[1].active = 4;
    state[4].eligible = false;
    state[4].active = 0;
    std::vector<int> counts(6, 0);
    for (int i = 0; i < 40'000; ++i) ++counts[MustPick(balancer, {.servers = state})];
    EXPECT_EQ(counts[1], 0);
    EXPECT_EQ(counts[4], 0);
    const std::vector<int> tied = {counts[0], counts[2], counts[3], counts[5]};
    EXPECT_LT(ChiSquare(tied, {0.25, 0.25, 0.25, 0.25}), Critical(3))
        << ::testing::PrintToString(tied);
  }
}

TEST(LeastConnectionsTest, TiesFollowTheWeightsWhenIdle) {
  Balancer balancer(BalancePolicy::kLeastConnections, Servers({3, 1, 4}), 5);
  const std::vector<ServerStatus> state = AllUp(3);  // every server at 0 active
  std::vector<int> counts(3, 0);
  for (int i = 0; i < 40'000; ++i) ++counts[MustPick(balancer, {.servers = state})];
  EXPECT_LT(ChiSquare(counts, {3 / 8.0, 1 / 8.0, 4 / 8.0}), Critical(2))
      << ::testing::PrintToString(counts);
}

TEST(LeastConnectionsTest, KeepsLoadLevelWhenRequestsPileUp) {
  // Requests that never finish: each pick goes to the least loaded, so the active
  // counts (per unit of weight) never differ by more than one request.
  const std::vector<uint32_t> weights = {1, 2, 1, 1};
  Balancer balancer(BalancePolicy::kLeastConnections, Servers(weights), 9);
  std::vector<ServerStatus> state = AllUp(4);
  for (int i = 0; i < 5000; ++i) {
    ++state[MustPick(balancer, {.servers = state})].active;
    uint32_t low = UINT32_MAX, high = 0;
    for (size_t s = 0; s < state.size(); ++s) {
      const uint32_t per_weight = state[s].active / weights[s];
      low = std::min(low, per_weight);
      high = std::max(high, per_weight);
    }
    ASSERT_LE(high - low, 1u) << "after " << i;
  }
}

// ---- hash

// The server each of the first `keys` client keys goes to.
std::vector<size_t> Assign(Balancer& balancer, const std::vector<ServerStatus>& state,
                           int keys = 100'000) {
  std::vector<size_t> owner;
  owner.reserve(keys);
  for (int k = 0; k < keys; ++k) {
    const std::string key = Key(k);
    owner.push_back(MustPick(balancer, {.servers = state, .key = key}));
  }
  return owner;
}

TEST(HashTest, SameKeySameServerWhateverElseHappens) {
  Balancer balancer(BalancePolicy::kHash, EqualServers(5), 1);
  const std::vector<ServerStatus> state = AllUp(5);
  const std::vector<size_t> first = Assign(balancer, state, 2000);
  // Again, interleaved with other keys, on another balancer with another seed, and on
  // one built from the list in reverse order (an instance with the same servers).
  std::vector<BalancerServer> reversed = EqualServers(5);
  std::reverse(reversed.begin(), reversed.end());
  Balancer other(BalancePolicy::kHash, EqualServers(5), 99);
  Balancer reordered(BalancePolicy::kHash, reversed, 1);
  for (int k = 0; k < 2000; ++k) {
    const std::string key = Key(k);
    MustPick(balancer, {.servers = state, .key = Key(k + 5000)});
    ASSERT_EQ(MustPick(balancer, {.servers = state, .key = key}), first[k]);
    ASSERT_EQ(MustPick(other, {.servers = state, .key = key}), first[k]);
    ASSERT_EQ(reordered.server(MustPick(reordered, {.servers = state, .key = key})).name,
              balancer.server(first[k]).name);
  }
}

TEST(HashTest, SpreadsKeysWithinTenPercentOfWeightShare) {
  std::vector<std::vector<uint32_t>> weight_sets;
  for (size_t n = 3; n <= 8; ++n) weight_sets.push_back(std::vector<uint32_t>(n, 1));
  weight_sets.push_back({1, 2, 3, 4});
  weight_sets.push_back({1, 1, 2});
  weight_sets.push_back({5, 1, 1});
  for (const std::vector<uint32_t>& weights : weight_sets) {
    Balancer balancer(BalancePolicy::kHash, Servers(weights), 1);
    std::vector<int> counts(weights.size(), 0);
    for (size_t s : Assign(balancer, AllUp(weights.size()))) ++counts[s];
    double total_weight = 0;
    for (uint32_t w : weights) total_weight += w;
    for (size_t s = 0; s < weights.size(); ++s) {
      const double expected = 100'000 * weights[s] / total_weight;
      EXPECT_NEAR(counts[s] / expected, 1.0, 0.10)
          << "server " << s << " of weights " << ::testing::PrintToString(weights);
    }
  }
}

TEST(HashTest, AddingAServerMovesAboutOneOverNPlusOneOfKeysAllToIt) {
  for (size_t n = 3; n <= 8; ++n) {
    Balancer before(BalancePolicy::kHash, EqualServers(n), 1);
    Balancer after(BalancePolicy::kHash, EqualServers(n + 1), 1);  // the same n, one more
    const std::vector<size_t> old_owner = Assign(before, AllUp(n));
    const std::vector<size_t> new_owner = Assign(after, AllUp(n + 1));
    int moved = 0;
    for (size_t k = 0; k < old_owner.size(); ++k) {
      if (old_owner[k] == new_owner[k]) continue;
      ++moved;
      ASSERT_EQ(new_owner[k], n) << "key " << k << " moved between old servers";
    }
    // The keys that move are the new server's share: 1/(n+1), within the 10% of the
    // spread test.
    EXPECT_NEAR(moved / (100'000.0 / (n + 1)), 1.0, 0.10) << n << " servers";
  }
}

TEST(HashTest, PointsPerWeightHalveAtEachDoublingOfTheLargestWeightPast64) {
  const std::vector<std::pair<uint32_t, uint32_t>> expected = {
      {1, 160},  {64, 160}, {65, 80},  {128, 80}, {129, 40},
      {256, 40}, {257, 20}, {512, 20}, {513, 10}, {Balancer::kMaxWeight, 10}};
  for (const auto& [largest, points] : expected) {
    EXPECT_EQ(Balancer::HashPointsPerWeight(largest), points) << "largest weight " << largest;
  }
  for (uint32_t largest = 1; largest <= Balancer::kMaxWeight; ++largest) {
    const uint32_t points = Balancer::HashPointsPerWeight(largest);
    ASSERT_LE(points * largest, Balancer::kHashMaxPointsPerServer) << largest;
    // Halved no further than the bound needs.
    if (points < Balancer::kHashPointsPerWeight) {
      ASSERT_GT(2 * points * largest, Balancer::kHashMaxPointsPerServer) << largest;
    }
  }
}

TEST(HashTest, MaxWeightServersStayWithin10240PointsEach) {
  // 8 of weight 1000 took 1.28M points (32 MB) at 160 per unit of weight.
  const Balancer heavy(BalancePolicy::kHash, Servers(std::vector<uint32_t>(8, 1000)), 1);
  EXPECT_EQ(heavy.hash_points(), 8u * 10'000);
  // Up to weight 64 the ring is as it was: 160 points per unit of weight.
  const Balancer light(BalancePolicy::kHash, Servers({1, 2, 3, 64}), 1);
  EXPECT_EQ(light.hash_points(), 160u * 70);
  EXPECT_EQ(Balancer(BalancePolicy::kRoundRobin, Servers({1000}), 1).hash_points(), 0u);
}

TEST(HashTest, AtLargeWeightsSpreadsKeysWithinTenPercentOfWeightShare) {
  // 10 points per unit of weight; the lightest, at 1/25 of the largest, has 400 points.
  const std::vector<uint32_t> weights = {1000, 600, 300, 100, 40};
  Balancer balancer(BalancePolicy::kHash, Servers(weights), 1);
  constexpr int kKeys = 400'000;
  std::vector<int> counts(weights.size(), 0);
  for (size_t s : Assign(balancer, AllUp(weights.size()), kKeys)) ++counts[s];
  for (size_t s = 0; s < weights.size(); ++s) {
    const double expected = kKeys * weights[s] / 2040.0;
    EXPECT_NEAR(counts[s] / expected, 1.0, 0.10) << "server " << s;
  }
}

TEST(HashTest, AtLargeWeightsAddingALighterServerMovesKeysOnlyToIt) {
  // The largest weight stays 1000, so every server keeps its points.
  Balancer before(BalancePolicy::kHash, Servers({1000, 500, 200}), 1);
  Balancer after(BalancePolicy::kHash, Servers({1000, 500, 200, 300}), 1);
  const std::vector<size_t> old_owner = Assign(before, AllUp(3));
  const std::vector<size_t> new_owner = Assign(after, AllUp(4));
  int moved = 0;
  for (size_t k = 0; k < old_owner.size(); ++k) {
    if (old_owner[k] == new_owner[k]) continue;
    ++moved;
    ASSERT_EQ(new_owner[k], 3u) << "key " << k << " moved between old servers";
  }
  EXPECT_NEAR(moved / (100'000 * 300 / 2000.0), 1.0, 0.10);
}

TEST(HashTest, IneligibleServerLosesOnlyItsOwnKeysAndGetsThemBack) {
  constexpr size_t kServers = 6;
  Balancer balancer(BalancePolicy::kHash, EqualServers(kServers), 1);
  std::vector<ServerStatus> state = AllUp(kServers);
  const std::vector<size_t> owner = Assign(balancer, state);
  for (size_t down = 0; down < kServers; ++down) {
    state[down].eligible = false;
    const std::vector<size_t> moved_owner = Assign(balancer, state);
    std::vector<int> received(kServers, 0);
    for (size_t k = 0; k < owner.size(); ++k) {
      if (owner[k] != down) {
        ASSERT_EQ(moved_owner[k], owner[k]) << "key " << k << " moved though its server is up";
      } else {
        ASSERT_NE(moved_owner[k], down);
        ++received[moved_owner[k]];
      }
    }
    // Its keys spread over the others rather than all landing on one neighbour.
    for (size_t s = 0; s < kServers; ++s) {
      if (s != down) {
        EXPECT_GT(received[s], 1000) << "server " << s << " with " << down << " down";
      }
    }
    state[down].eligible = true;
    ASSERT_EQ(Assign(balancer, state), owner);
  }
}

TEST(HashTest, TwoServersDownMoveOnlyTheirKeys) {
  Balancer balancer(BalancePolicy::kHash, EqualServers(8), 1);
  std::vector<ServerStatus> state = AllUp(8);
  const std::vector<size_t> owner = Assign(balancer, state, 20'000);
  state[2].eligible = false;
  state[3].eligible = false;
  const std::vector<size_t> moved_owner = Assign(balancer, state, 20'000);
  for (size_t k = 0; k < owner.size(); ++k) {
    if (owner[k] != 2 && owner[k] != 3) {
      ASSERT_EQ(moved_owner[k], owner[k]);
    }
    ASSERT_NE(moved_owner[k], 2u);
    ASSERT_NE(moved_owner[k], 3u);
  }
}

// ---- random (power of two choices)

TEST(RandomTest, NeverPicksTheBusierOfTwo) {
  // With distinct loads, the server of rank r (0 = least busy) of n wins exactly the
  // pairs it forms with the n - 1 - r busier ones: a share of (n - 1 - r) / C(n, 2).
  // The busiest is never picked; two draws that could be the same server would give
  // it 1/n^2.
  for (size_t n : {2, 3, 5, 8}) {
    Balancer balancer(BalancePolicy::kRandom, EqualServers(n), 3);
    std::vector<ServerStatus> state = AllUp(n);
    std::vector<size_t> order(n);  // order[rank] = server
    for (size_t r = 0; r < n; ++r) order[r] = r;
    std::mt19937_64 rng(n);
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t r = 0; r < n; ++r) state[order[r]].active = static_cast<uint32_t>(10 * r + 2);
    std::vector<int> by_rank(n, 0);
    constexpr int kPicks = 40'000;
    std::vector<size_t> rank_of(n);
    for (size_t r = 0; r < n; ++r) rank_of[order[r]] = r;
    for (int i = 0; i < kPicks; ++i) ++by_rank[rank_of[MustPick(balancer, {.servers = state})]];
    EXPECT_EQ(by_rank[n - 1], 0) << n << " servers";
    std::vector<double> shares;
    std::vector<int> counts;
    const double pairs = n * (n - 1) / 2.0;
    for (size_t r = 0; r + 1 < n; ++r) {
      shares.push_back((n - 1 - r) / pairs);
      counts.push_back(by_rank[r]);
    }
    if (n == 2) {
      EXPECT_EQ(by_rank[0], kPicks);
    } else {
      EXPECT_LT(ChiSquare(counts, shares), Critical(n - 2))
          << n << " servers: " << ::testing::PrintToString(counts);
    }
  }
}

TEST(RandomTest, EquallyLoadedServersShareEvenly) {
  for (uint64_t seed : {1, 2, 3}) {
    Balancer balancer(BalancePolicy::kRandom, EqualServers(8), seed);
    std::vector<ServerStatus> state = AllUp(8);
    for (ServerStatus& s : state) s.active = 7;
    std::vector<int> counts(8, 0);
    for (int i = 0; i < 80'000; ++i) ++counts[MustPick(balancer, {.servers = state})];
    EXPECT_LT(ChiSquare(counts, std::vector<double>(8, 1 / 8.0)), Critical(7))
        << ::testing::PrintToString(counts);
  }
}

TEST(RandomTest, MuchBusierServerGetsAlmostNothing) {
  // A live mix: requests start on the picked server and finish at random; server 0 is
  // stuck with 50 slow requests. It can only win a pair in which the other server is
  // at least as busy, which never happens at these loads.
  Balancer balancer(BalancePolicy::kRandom, EqualServers(8), 11);
  std::vector<ServerStatus> state = AllUp(8);
  state[0].active = 50;
  std::mt19937_64 rng(5);
  std::vector<int> counts(8, 0);
  for (int i = 0; i < 80'000; ++i) {
    const size_t picked = MustPick(balancer, {.servers = state});
    ++counts[picked];
    ++state[picked].active;
    const size_t finishing = 1 + rng() % 7;  // server 0's requests never finish
    if (state[finishing].active > 0) --state[finishing].active;
  }
  EXPECT_LE(counts[0], 80) << ::testing::PrintToString(counts);  // at most 0.1%
  for (size_t s = 1; s < 8; ++s) EXPECT_NEAR(counts[s], 80'000 / 7.0, 80'000 / 7.0 * 0.05);
}

TEST(RandomTest, SameSeedSameChoices) {
  Balancer a(BalancePolicy::kRandom, EqualServers(8), 1234);
  Balancer b(BalancePolicy::kRandom, EqualServers(8), 1234);
  const std::vector<ServerStatus> state = AllUp(8);
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(MustPick(a, {.servers = state}), MustPick(b, {.servers = state}));
  }
}

// ---- every policy

TEST(BalancerTest, ExcludedServerIsNotPickedWhileAnotherIsEligible) {
  for (BalancePolicy policy : kAllPolicies) {
    Balancer balancer(policy, Servers({1, 3, 1, 2, 1, 1, 5, 1}), 1);
    std::vector<ServerStatus> state = AllUp(8);
    state[5].eligible = false;
    std::vector<int> counts(8, 0);
    for (int i = 0; i < 8000; ++i) {
      const size_t exclude = static_cast<size_t>(i) % 8;
      const std::string key = Key(i / 8);  // each key tried with every exclusion
      // Half the time the excluded server is the least loaded, half the time all tie.
      for (size_t s = 0; s < 8; ++s) state[s].active = i % 2 && s != exclude ? 1 : 0;
      const size_t picked = MustPick(balancer, {.servers = state, .key = key, .exclude = exclude});
      ASSERT_NE(picked, exclude) << BalancePolicyName(policy) << " pick " << i;
      ASSERT_NE(picked, 5u) << BalancePolicyName(policy);
      ++counts[picked];
    }
    // The retry went to every other eligible server at some point.
    for (size_t s = 0; s < 8; ++s) {
      if (s != 5) {
        EXPECT_GT(counts[s], 0) << BalancePolicyName(policy) << " server " << s;
      }
    }
  }
}

TEST(BalancerTest, ExcludedHashKeyGoesWhereItWouldIfItsServerWereDown) {
  Balancer balancer(BalancePolicy::kHash, EqualServers(6), 1);
  const std::vector<ServerStatus> up = AllUp(6);
  for (int k = 0; k < 5000; ++k) {
    const std::string key = Key(k);
    const size_t home = MustPick(balancer, {.servers = up, .key = key});
    std::vector<ServerStatus> down = up;
    down[home].eligible = false;
    ASSERT_EQ(MustPick(balancer, {.servers = up, .key = key, .exclude = home}),
              MustPick(balancer, {.servers = down, .key = key}));
  }
}

TEST(BalancerTest, ExcludedServerIsReturnedOnlyWhenNothingElseIsEligible) {
  for (BalancePolicy policy : kAllPolicies) {
    Balancer balancer(policy, EqualServers(4), 1);
    std::vector<ServerStatus> state(4, ServerStatus{.eligible = false});
    state[2].eligible = true;
    for (int i = 0; i < 50; ++i) {
      EXPECT_EQ(balancer.Pick({.servers = state, .key = Key(i), .exclude = 2}), 2u)
          << BalancePolicyName(policy);
      // Excluding a server that is itself down leaves nothing.
      state[2].eligible = false;
      state[1].eligible = false;
      EXPECT_EQ(balancer.Pick({.servers = state, .key = Key(i), .exclude = 1}), std::nullopt)
          << BalancePolicyName(policy);
      state[2].eligible = true;
    }
  }
}

TEST(BalancerTest, NoEligibleServerGivesNothing) {
  for (BalancePolicy policy : kAllPolicies) {
    Balancer balancer(policy, Servers({1, 2, 3}), 1);
    std::vector<ServerStatus> state(3, ServerStatus{.eligible = false, .active = 1});
    for (int i = 0; i < 20; ++i) {
      EXPECT_EQ(balancer.Pick({.servers = state, .key = Key(i)}), std::nullopt)
          << BalancePolicyName(policy);
      EXPECT_EQ(balancer.Pick({.servers = state, .key = Key(i), .exclude = i % 3}), std::nullopt);
    }
    // And the balancer still works once one comes back.
    state[1].eligible = true;
    EXPECT_EQ(balancer.Pick({.servers = state, .key = "k"}), 1u) << BalancePolicyName(policy);
  }
}

TEST(BalancerTest, SingleServerAlwaysWins) {
  for (BalancePolicy policy : kAllPolicies) {
    Balancer balancer(policy, Servers({7}), 1);
    std::vector<ServerStatus> state = AllUp(1);
    for (int i = 0; i < 1000; ++i) {
      state[0].active = static_cast<uint32_t>(i % 13);
      EXPECT_EQ(balancer.Pick({.servers = state, .key = Key(i)}), 0u);
      EXPECT_EQ(balancer.Pick({.servers = state, .key = Key(i), .exclude = 0}), 0u);
    }
  }
}

TEST(BalancerTest, PicksAllocateNothing) {
  std::vector<ServerStatus> state = AllUp(8);
  state[3].eligible = false;
  const std::string key = "client-with-a-rather-longer-key-than-usual-0123456789";
  for (BalancePolicy policy : kAllPolicies) {
    Balancer balancer(policy, Servers({1, 2, 1, 1, 3, 1, 1, 1}), 1);
    const uint64_t before = sluice::testing::AllocationCount();
    size_t sum = 0;
    for (int i = 0; i < 10'000; ++i) {
      state[i % 8].active = static_cast<uint32_t>(i % 5);
      sum += balancer.Pick({.servers = state, .key = key, .exclude = i % 8}).value_or(0);
    }
    EXPECT_EQ(sluice::testing::AllocationCount(), before) << BalancePolicyName(policy);
    EXPECT_GT(sum, 0u);
  }
}

}  // namespace
}  // namespace sluice::http
