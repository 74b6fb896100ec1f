// A consistent-hashing ring: which of N nodes owns a key. The Redis store places keys
// on its independent primaries with it (store/redis_store.h), and the HTTP balancer's
// `hash` policy places client keys on the servers of an upstream group
// (http/balancer.h). Pure: no I/O, no allocation after construction.
//
// Each node stands at `virtual_nodes` points on a 64-bit circle (XXH3 of "<name>#<i>").
// A key is placed by multi-probe consistent hashing (Appleton and O'Reilly, 2015):
// XXH3-128 of the key gives kProbes positions h1 + i*h2 on the circle, each probe finds
// the first point at or after it, and the key belongs to the point nearest (clockwise)
// to its probe. With one probe a node's share is the sum of the arcs before its points
// and varies by about 1/sqrt(virtual_nodes): at 160 points the largest of 2 to 10 nodes
// reached 1.23x the mean share for our test names, 1.31x over 500 random name sets.
// With several probes a long arc wins little more often than a short one, since the
// winning probe is nearly always close to its point, so a node's share tends to its
// share of the points. At 160 points and 8 probes the largest of 2 to 10 nodes was
// counted at most 1.064x the mean over the 23 name sets of tests/core/hash_ring_test.cc,
// and computed at most 1.077x over 3000 random name sets. 6 probes were the fewest that
// stayed within 1.10x on those sets (1.096x at worst, 5 reached 1.109x); 8 leave room
// for the noise of counting real keys.
//
// Weights: a node of weight w stands at virtual_nodes * w points ("<name>#0" up to
// "<name>#<virtual_nodes * w - 1>"), so its share tends to its share of the weight. At
// weight 1, the default, the ring is the one described above, point for point.
//
// Adding a node only adds points, so a probe's distance only shrinks, and only where
// the new node's points land: a key that moves goes to the new node, about 1/(N+1) of
// the keys; removing a node moves only its own keys. Points, ties included, depend only
// on node names (and weights), so every instance of a fleet with the same node list
// routes alike.
//
// Eligibility: NodeFor with a predicate passes over the points of the nodes the caller
// rules out for this lookup: a probe whose point belongs to one walks on round the
// circle to the next eligible point. Ruling a node out only lengthens the probes that
// ended on its points, so a key whose nearest probe ended on another node keeps that
// node: only the ruled-out node's keys move, spread over the others by their points,
// and they come back when it is eligible again.
//
// Cost: NodeFor hashes the key once and, for each probe, reads a slice index (the
// first point in each of 2^b >= 2x points equal slices of the circle) and steps past
// the points of the slice that lie before the probe, usually none or one: about 50 ns
// at 160 points for 2 to 10 nodes, no allocation (one probe with a binary search was
// 43 to 58 ns at 160 points, 61 to 79 at 1024; bench/hash_ring_bench.cc). A node ruled
// out costs a step per point walked past, about N/(eligible nodes) steps a probe on
// average. Memory: 12 bytes a point and 8 to 16 for the index, 35 KB for 10 nodes at
// 160 points.
//
// Thread-safety: immutable after construction; any thread may call NodeFor.
#ifndef SLUICE_CORE_HASH_RING_H_
#define SLUICE_CORE_HASH_RING_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::core {

class HashRing {
 public:
  static constexpr int kDefaultVirtualNodes = 160;
  static constexpr int kProbes = 8;  // chosen by measurement, see above
  static constexpr size_t kNoNode = SIZE_MAX;

  // Every node at weight 1.
  // REQUIRES: `nodes` not empty; virtual_nodes >= 1. Names should be distinct: equal
  // names stand at the same points, where the first of them in the list wins.
  explicit HashRing(std::vector<std::string> nodes, int virtual_nodes = kDefaultVirtualNodes);
  // Node i at virtual_nodes * weights[i] points.
  // REQUIRES: as above; one weight per node, each >= 1; fewer than 2^31 points in all.
  HashRing(std::vector<std::string> nodes, std::span<const uint32_t> weights, int virtual_nodes);

  // The index (into the constructor's list) of the node that owns `key`.
  size_t NodeFor(std::string_view key) const;

  // The same among the nodes i for which `eligible(i)` is true, or kNoNode when there
  // is none. `eligible` is called with indices below size(), up to size() times to
  // see that one node is eligible and then once for each point a probe lands on or
  // walks past; it must answer alike for the whole lookup.
  template <typename Eligible>
  size_t NodeFor(std::string_view key, const Eligible& eligible) const;

  size_t size() const { return nodes_.size(); }
  const std::string& node(size_t index) const { return nodes_[index]; }
  size_t points() const { return points_; }

 private:
  struct KeyHash {
    uint64_t low;
    uint64_t high;
  };
  static KeyHash HashKey(std::string_view key);  // XXH3-128
  // The index of the first point at or after `probe`, wrapping round to 0.
  size_t FirstAtOrAfter(uint64_t probe) const {
    size_t at = first_[probe >> shift_];
    // A slice holds at most half a point on average: one step without a branch,
    // then a loop that is seldom entered. The UINT64_MAX at the end stops both.
    at += positions_[at] < probe;
    while (positions_[at] < probe) ++at;
    return at == points_ ? 0 : at;  // past the last point: wrap round to the first
  }

  std::vector<std::string> nodes_;
  // The points sorted by position, then by node name, then by index; one more position
  // at the end, UINT64_MAX, stops the scan in FirstAtOrAfter without a bounds check.
  std::vector<uint64_t> positions_;
  std::vector<uint32_t> owners_;  // owners_[i]: the node at positions_[i]
  size_t points_ = 0;
  // first_[s]: the index of the first point at or after the start of slice s, where
  // slice s is the positions whose top bits (64 - shift_) are s.
  std::vector<uint32_t> first_;
  int shift_ = 0;
};

template <typename Eligible>
size_t HashRing::NodeFor(std::string_view key, const Eligible& eligible) const {
  // With no node eligible the walk below would not end.
  bool any = false;
  for (size_t n = 0; n < nodes_.size() && !any; ++n) any = eligible(n);
  if (!any) return kNoNode;

  const KeyHash h = HashKey(key);
  // An odd step makes the probes distinct: i*step differs for every i below 2^64.
  const uint64_t step = h.high | 1;
  uint64_t probe = h.low;
  uint64_t best_distance = 0;
  size_t best = 0;
  for (int i = 0; i < kProbes; ++i, probe += step) {
    size_t at = FirstAtOrAfter(probe);
    // Past the points of nodes ruled out (see the header comment); every node has a
    // point and one is eligible, so this ends.
    while (!eligible(size_t{owners_[at]})) at = at + 1 == points_ ? 0 : at + 1;
    const uint64_t distance = positions_[at] - probe;  // modulo 2^64, so wrapping is right
    // On a tie the earlier probe wins; the probes depend only on the key.
    if (i == 0 || distance < best_distance) {
      best_distance = distance;
      best = at;
    }
  }
  return owners_[best];
}

}  // namespace sluice::core

#endif  // SLUICE_CORE_HASH_RING_H_
