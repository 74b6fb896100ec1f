#include "core/hash_ring.h"

#include <xxhash.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "core/check.h"

namespace sluice::core {

HashRing::HashRing(std::vector<std::string> nodes, int virtual_nodes)
    : HashRing(std::move(nodes), {}, virtual_nodes) {}

HashRing::HashRing(std::vector<std::string> nodes, std::span<const uint32_t> weights,
                   int virtual_nodes)
    : nodes_(std::move(nodes)) {
  SLUICE_CHECK(!nodes_.empty() && virtual_nodes >= 1);
  SLUICE_CHECK(weights.empty() || weights.size() == nodes_.size());
  // The number of points of node n.
  const auto count = [&](size_t n) -> uint64_t {
    return uint64_t{weights.empty() ? 1 : weights[n]} * static_cast<uint64_t>(virtual_nodes);
  };
  uint64_t total = 0;
  for (size_t n = 0; n < nodes_.size(); ++n) {
    SLUICE_CHECK(weights.empty() || weights[n] >= 1);
    total += count(n);
  }
  // Below 2^31, so that point indices fit the uint32_t of owners_ and first_.
  SLUICE_CHECK(total < (uint64_t{1} << 31));
  points_ = static_cast<size_t>(total);
  struct Point {
    uint64_t position;
    uint32_t node;
  };
  std::vector<Point> points;
  points.reserve(points_);
  std::string label;
  for (size_t n = 0; n < nodes_.size(); ++n) {
    for (uint64_t v = 0, end = count(n); v < end; ++v) {
      label = nodes_[n];
      label += '#';
      label += std::to_string(v);
      points.push_back({XXH3_64bits(label.data(), label.size()), static_cast<uint32_t>(n)});
    }
  }
  // Ties (two labels hashing alike) are broken by node name, not index, so that the
  // order, and so the routing, does not depend on the order of the node list; by index
  // only when the names are equal too.
  std::sort(points.begin(), points.end(), [this](const Point& a, const Point& b) {
    if (a.position != b.position) return a.position < b.position;
    const std::string& name_a = nodes_[a.node];
    const std::string& name_b = nodes_[b.node];
    return name_a != name_b ? name_a < name_b : a.node < b.node;
  });
  positions_.reserve(points_ + 1);
  owners_.reserve(points_);
  for (const Point& p : points) {
    positions_.push_back(p.position);
    owners_.push_back(p.node);
  }
  positions_.push_back(std::numeric_limits<uint64_t>::max());

  // At least twice as many slices as points, so a probe's slice holds half a point on
  // average and the scan in FirstAtOrAfter is mostly one comparison. At least 2
  // slices, so that shift_ < 64.
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

HashRing::KeyHash HashRing::HashKey(std::string_view key) {
  const XXH128_hash_t h = XXH3_128bits(key.data(), key.size());
  return {h.low64, h.high64};
}

size_t HashRing::NodeFor(std::string_view key) const {
  // Every node is eligible: the walk past ruled-out points compiles away.
  return NodeFor(key, [](size_t) { return true; });
}

}  // namespace sluice::core
