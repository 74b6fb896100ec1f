#include "store/hash_ring.h"

#include <xxhash.h>

#include <algorithm>

#include "core/check.h"

namespace sluice::store {

HashRing::HashRing(std::vector<std::string> nodes, int virtual_nodes) : nodes_(std::move(nodes)) {
  SLUICE_CHECK(!nodes_.empty() && virtual_nodes >= 1);
  points_.reserve(nodes_.size() * static_cast<size_t>(virtual_nodes));
  std::string label;
  for (size_t n = 0; n < nodes_.size(); ++n) {
    for (int v = 0; v < virtual_nodes; ++v) {
      label = nodes_[n];
      label += '#';
      label += std::to_string(v);
      points_.push_back({XXH3_64bits(label.data(), label.size()), static_cast<uint32_t>(n)});
    }
  }
  // Ties (two labels hashing alike) are broken by node index so that the order, and
  // so the routing, is the same on every instance.
  std::sort(points_.begin(), points_.end(), [](const Point& a, const Point& b) {
    return a.position != b.position ? a.position < b.position : a.node < b.node;
  });
}

size_t HashRing::NodeFor(std::string_view key) const {
  const uint64_t h = XXH3_64bits(key.data(), key.size());
  auto it = std::lower_bound(points_.begin(), points_.end(), h,
                             [](const Point& p, uint64_t value) { return p.position < value; });
  if (it == points_.end()) it = points_.begin();
  return it->node;
}

}  // namespace sluice::store
