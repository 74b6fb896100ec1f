#include "store/hash_ring.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace sluice::store {
namespace {

std::vector<std::string> Nodes(int count, int first_port = 7000) {
  std::vector<std::string> nodes;
  for (int i = 0; i < count; ++i)
    nodes.push_back("10.0.0." + std::to_string(i + 1) + ":" + std::to_string(first_port + i));
  return nodes;
}

std::string Key(int i) { return "sluice:{api-per-key:client-" + std::to_string(i) + "}"; }

constexpr int kKeys = 200'000;

// The largest node's share over the mean share.
double MaxOverMean(const HashRing& ring) {
  std::vector<int> counts(ring.size());
  for (int i = 0; i < kKeys; ++i) ++counts[ring.NodeFor(Key(i))];
  const double mean = static_cast<double>(kKeys) / static_cast<double>(ring.size());
  return *std::max_element(counts.begin(), counts.end()) / mean;
}

// The default (1024 points a node) keeps the largest share within 10% of the mean.
TEST(HashRingTest, EveryNodeGetsCloseToItsShareAtTheDefaultVirtualNodes) {
  for (int n = 2; n <= 10; ++n) {
    const double ratio = MaxOverMean(HashRing(Nodes(n)));
    EXPECT_LE(ratio, 1.10) << n << " nodes";
  }
}

// At 160 points (the figure issue 4 names, ketama's) a share varies by about
// 1/sqrt(160) = 8%, so the largest of several nodes is often more than 10% above the
// mean: 1.23x for these node names, and up to 1.28x over 30 random name sets in a
// simulation. This pins the measured spread so a change to the hashing shows.
TEST(HashRingTest, At160VirtualNodesTheLargestShareIsWithin25Percent) {
  double worst = 0;
  for (int n = 2; n <= 10; ++n) worst = std::max(worst, MaxOverMean(HashRing(Nodes(n), 160)));
  EXPECT_LE(worst, 1.25);
  EXPECT_GT(worst, 1.10);  // the reason the default is higher
}

TEST(HashRingTest, AddingOrRemovingANodeMovesAboutOneNthOfTheKeys) {
  for (int n = 3; n <= 8; ++n) {
    const HashRing before(Nodes(n));
    const HashRing after(Nodes(n + 1));  // the same n nodes plus one
    int moved = 0;
    for (int i = 0; i < kKeys; ++i) {
      const size_t a = before.NodeFor(Key(i));
      const size_t b = after.NodeFor(Key(i));
      if (a != b) {
        ++moved;
        // A key that moves goes to the new node, never between old ones.
        EXPECT_EQ(b, static_cast<size_t>(n)) << Key(i);
      }
    }
    const double fraction = static_cast<double>(moved) / kKeys;
    const double expected = 1.0 / (n + 1);
    EXPECT_NEAR(fraction, expected, expected * 0.10) << n << " -> " << n + 1 << " nodes";
  }
}

TEST(HashRingTest, RoutingDependsOnlyOnTheNodeNamesNotTheirOrder) {
  std::vector<std::string> nodes = Nodes(5);
  const HashRing ring(nodes);
  std::reverse(nodes.begin(), nodes.end());
  const HashRing reversed(nodes);
  for (int i = 0; i < 10'000; ++i) {
    EXPECT_EQ(ring.node(ring.NodeFor(Key(i))), reversed.node(reversed.NodeFor(Key(i))));
  }
}

TEST(HashRingTest, OneNodeOwnsEverything) {
  const HashRing ring({"127.0.0.1:6379"});
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(ring.NodeFor(Key(i)), 0u);
}

}  // namespace
}  // namespace sluice::store
