// A consistent-hashing ring: which of N independent Redis primaries owns a key.
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
// counted at most 1.064x the mean over the 23 name sets of tests/store/hash_ring_test.cc,
// and computed at most 1.077x over 3000 random name sets. 6 probes were the fewest that
// stayed within 1.10x on those sets (1.096x at worst, 5 reached 1.109x); 8 leave room
// for the noise of counting real keys.
//
// Adding a node only adds points, so a probe's distance only shrinks, and only where
// the new node's points land: a key that moves goes to the new node, about 1/(N+1) of
// the keys; removing a node moves only its own keys. Points, ties included, depend only
// on node names, so every instance of a fleet with the same node list routes alike.
//
// Cost: NodeFor hashes the key once and, for each probe, reads a slice index (the
// first point in each of 2^b >= 2x points equal slices of the circle) and steps past
// the points of the slice that lie before the probe, usually none or one: about 50 ns
// at 160 points for 2 to 10 nodes, no allocation (one probe with a binary search was
// 43 to 58 ns at 160 points, 61 to 79 at 1024; bench/hash_ring_bench.cc). Memory: 12
// bytes a point and 8 to 16 for the index, 35 KB for 10 nodes at 160 points.
//
// Thread-safety: immutable after construction; any thread may call NodeFor.
#ifndef SLUICE_STORE_HASH_RING_H_
#define SLUICE_STORE_HASH_RING_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::store {

class HashRing {
 public:
  static constexpr int kDefaultVirtualNodes = 160;
  static constexpr int kProbes = 8;  // chosen by measurement, see above

  // REQUIRES: `nodes` not empty, names distinct; virtual_nodes >= 1.
  explicit HashRing(std::vector<std::string> nodes, int virtual_nodes = kDefaultVirtualNodes);

  // The index (into the constructor's list) of the node that owns `key`.
  size_t NodeFor(std::string_view key) const;

  size_t size() const { return nodes_.size(); }
  const std::string& node(size_t index) const { return nodes_[index]; }

 private:
  std::vector<std::string> nodes_;
  // The points sorted by position, then by node name; one more position at the end,
  // UINT64_MAX, stops the scan in NodeFor without a bounds check.
  std::vector<uint64_t> positions_;
  std::vector<uint32_t> owners_;  // owners_[i]: the node at positions_[i]
  size_t points_ = 0;
  // first_[s]: the index of the first point at or after the start of slice s, where
  // slice s is the positions whose top bits (64 - shift_) are s.
  std::vector<uint32_t> first_;
  int shift_ = 0;
};

}  // namespace sluice::store

#endif  // SLUICE_STORE_HASH_RING_H_
