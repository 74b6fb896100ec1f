#include "store/hash_ring.h"

#include <xxhash.h>

#include <algorithm>
#include <limits>

#include "core/check.h"

namespace sluice::store {

HashRing::HashRing(std::vector<std::string> nodes, int virtual_nodes) : nodes_(std::move(nodes)) {
  SLUICE_CHECK(!nodes_.empty() && virtual_nodes >= 1);
  points_ = nodes_.size() * static_cast<size_t>(virtual_nodes);
  SLUICE_CHECK(points_ < std::numeric_limits<uint32_t>::max());
  struct Point {
    uint64_t position;
    uint32_t node;
  };
  std::vector<Point> points;
  points.reserve(points_);
  std::string label;
  for (size_t n = 0; n < nodes_.size(); ++n) {
    for (int v = 0; v < virtual_nodes; ++v) {
      label = nodes_[n];
      label += '#';
      label += std::to_string(v);
      points.push_back({XXH3_64bits(label.data(), label.size()), static_cast<uint32_t>(n)});
    }
  }
  // Ties (two labels hashing alike) are broken by node name, not index, so that the
  // order, and so the routing, does not depend on the order of the node list.
  std::sort(points.begin(), points.end(), [this](const Point& a, const Point& b) {
    return a.position != b.position ? a.position < b.position : nodes_[a.node] < nodes_[b.node];
  });
  positions_.reserve(points_ + 1);
  owners_.reserve(points_);
  for (const Point& p : points) {
    positions_.push_back(p.position);
    owners_.push_back(p.node);
  }
  positions_.push_back(std::numeric_limits<uint64_t>::max());

  // At least twice as many slices as points, so a probe's slice holds half a point on
  // average and the scan in NodeFor is mostly one comparison. At least 2 slices, so
  // that shift_ < 64.
  int bits = 1;
  while ((size_t{1} << bits) < 2 * points_) ++bits;
  shift_ = 64 - bits;
  first_.resize(size_t{1} << bits);
  size_t at = 0;
  for (size_t s = 0; s < first_.size(); ++s) {
    const uint64_t start = static_cast<uint64_t>(s) << shift_;
    while (at < points_ && positions_[at] < start) ++at;
    first_[s] = static_cast<uint32_t>(at);
  }
}

size_t HashRing::NodeFor(std::string_view key) const {
  const XXH128_hash_t h = XXH3_128bits(key.data(), key.size());
  // An odd step makes the probes distinct: i*step differs for every i below 2^64.
  const uint64_t step = h.high64 | 1;
  uint64_t probe = h.low64;
  uint64_t best_distance = 0;
  size_t best = 0;
  for (int i = 0; i < kProbes; ++i, probe += step) {
    size_t at = first_[probe >> shift_];
    // A slice holds at most half a point on average: one step without a branch,
    // then a loop that is seldom entered. The UINT64_MAX at the end stops both.
    at += positions_[at] < probe;
    while (positions_[at] < probe) ++at;
    if (at == points_) at = 0;  // past the last point: wrap round to the first
    const uint64_t distance = positions_[at] - probe;  // modulo 2^64, so wrapping is right
    // On a tie the earlier probe wins; the probes depend only on the key.
    if (i == 0 || distance < best_distance) {
      best_distance = distance;
      best = at;
    }
  }
  return owners_[best];
}

}  // namespace sluice::store
