#include "metrics/metrics.h"

#include <fmt/format.h>

#include <iterator>

namespace sluice::metrics {
namespace {

// Prometheus label values escape backslash, double quote and newline.
std::string EscapeLabel(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void RenderHistogram(std::string& out, std::string_view name, std::string_view help,
                     const Histogram::Snapshot& h) {
  auto it = std::back_inserter(out);
  fmt::format_to(it, "# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < Histogram::kBoundsNs.size(); ++i) {
    cumulative += h.buckets[i];
    fmt::format_to(it, "{}_bucket{{le=\"{}\"}} {}\n", name,
                   static_cast<double>(Histogram::kBoundsNs[i]) / 1e9, cumulative);
  }
  cumulative += h.buckets.back();
  fmt::format_to(it, "{}_bucket{{le=\"+Inf\"}} {}\n", name, cumulative);
  fmt::format_to(it, "{}_sum {}\n{}_count {}\n", name, static_cast<double>(h.sum_ns) / 1e9, name,
                 h.count);
}

}  // namespace

void Histogram::Observe(int64_t nanos) {
  if (nanos < 0) nanos = 0;
  size_t i = 0;
  while (i < kBoundsNs.size() && nanos > kBoundsNs[i]) ++i;
  buckets_[i].Add();
  count_.Add();
  sum_ns_.Add(static_cast<uint64_t>(nanos));
}

void Histogram::Snapshot::Merge(const Histogram& histogram) {
  for (size_t i = 0; i < buckets.size(); ++i) buckets[i] += histogram.buckets_[i].Get();
  count += histogram.count_.Get();
  sum_ns += histogram.sum_ns_.Get();
}

std::string_view StoreResultName(StoreResult result) {
  switch (result) {
    case StoreResult::kOk:
      return "ok";
    case StoreResult::kError:
      return "error";
    case StoreResult::kTimeout:
      return "timeout";
    case StoreResult::kUnavailable:
      return "unavailable";
    case StoreResult::kDenyCached:
      return "deny_cached";
    case StoreResult::kCount:
      break;
  }
  return "unknown";
}

std::string_view OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kAllowed:
      return "allowed";
    case Outcome::kLimited:
      return "limited";
    case Outcome::kShadowLimited:
      return "shadow_limited";
    case Outcome::kDelayed:
      return "delayed";
    case Outcome::kMissingKey:
      return "missing_key";
    case Outcome::kDenied:
      return "denied";
    case Outcome::kCount:
      break;
  }
  return "unknown";
}

Registry::Registry() { slot_names_ = {"", "access:allow", "access:deny"}; }

namespace {

// The slot of `name` in `names`, appending it when new; past `max` slots, the last one,
// named "(other)".
size_t SlotOf(std::vector<std::string>& names, std::string_view name, size_t max) {
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) return i;
  }
  if (names.size() + 1 >= max) {
    if (names.size() < max) names.push_back("(other)");
    return max - 1;
  }
  names.emplace_back(name);
  return names.size() - 1;
}

}  // namespace

size_t Registry::RuleSlot(std::string_view name) {
  std::lock_guard lock(mutex_);
  return SlotOf(slot_names_, name, kMaxRuleSlots);
}

size_t Registry::NodeSlot(std::string_view name) {
  std::lock_guard lock(mutex_);
  return SlotOf(node_names_, name, kMaxNodeSlots);
}

size_t Registry::UpstreamSlot(std::string_view name) {
  std::lock_guard lock(mutex_);
  return SlotOf(upstream_names_, name, kMaxUpstreamSlots);
}

size_t Registry::CircuitSlot(std::string_view upstream, std::string_view server) {
  std::string name(upstream);
  name += '\n';
  name += server;
  std::lock_guard lock(mutex_);
  return SlotOf(circuit_names_, name, kMaxCircuitSlots);
}

void Registry::SetStoreBackend(std::string_view backend) {
  std::lock_guard lock(mutex_);
  store_backend_ = backend;
}

std::string Registry::store_backend() const {
  std::lock_guard lock(mutex_);
  return store_backend_;
}

std::vector<Registry::NodeStatus> Registry::StoreNodes() const {
  std::lock_guard lock(mutex_);
  return StoreNodesLocked();
}

std::vector<Registry::NodeStatus> Registry::StoreNodesLocked() const {
  std::vector<NodeStatus> nodes;
  for (size_t n = 0; n < node_names_.size(); ++n) {
    int up = -1;  // no worker has reported on the node yet
    for (const auto& w : workers_) {
      const int v = w->node_up[n].load(std::memory_order_relaxed);
      if (v >= 0) up = up < 0 ? v : std::min(up, v);
    }
    if (up >= 0) nodes.push_back({node_names_[n], up == 1});
  }
  return nodes;
}

WorkerMetrics& Registry::AddWorker() {
  std::lock_guard lock(mutex_);
  workers_.push_back(std::make_unique<WorkerMetrics>());
  return *workers_.back();
}

std::string Registry::Render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  out.reserve(8192);
  auto it = std::back_inserter(out);

  out +=
      "# HELP sluice_requests_total Requests by rule and outcome; a request counts once per "
      "rule it matched.\n# TYPE sluice_requests_total counter\n";
  for (size_t slot = 0; slot < slot_names_.size(); ++slot) {
    for (size_t o = 0; o < static_cast<size_t>(Outcome::kCount); ++o) {
      uint64_t total = 0;
      for (const auto& w : workers_) total += w->requests[slot][o].Get();
      if (total == 0) continue;
      fmt::format_to(it, "sluice_requests_total{{rule=\"{}\",decision=\"{}\"}} {}\n",
                     EscapeLabel(slot_names_[slot]), OutcomeName(static_cast<Outcome>(o)), total);
    }
  }

  Histogram::Snapshot duration;
  for (const auto& w : workers_) duration.Merge(w->request_duration);
  RenderHistogram(out, "sluice_request_duration_seconds",
                  "Time from a complete request head to a known answer.", duration);

  out +=
      "# HELP sluice_http_responses_total Responses by status code.\n"
      "# TYPE sluice_http_responses_total counter\n";
  for (int status = 100; status < 600; ++status) {
    uint64_t total = 0;
    for (const auto& w : workers_) total += w->responses_by_status[status].Get();
    if (total != 0)
      fmt::format_to(it, "sluice_http_responses_total{{code=\"{}\"}} {}\n", status, total);
  }

  uint64_t store_ok = 0, accepted = 0, refused = 0;
  int64_t active = 0, held = 0;
  for (const auto& w : workers_) {
    store_ok += w->store_operations_ok.Get();
    accepted += w->connections_accepted.Get();
    refused += w->connections_refused.Get();
    active += w->connections_active.load(std::memory_order_relaxed);
    held += w->requests_held.load(std::memory_order_relaxed);
  }
  out +=
      "# HELP sluice_store_operations_total Limiter store decisions by result.\n"
      "# TYPE sluice_store_operations_total counter\n";
  if (store_backend_ == "memory") {
    fmt::format_to(it, "sluice_store_operations_total{{backend=\"memory\",result=\"ok\"}} {}\n",
                   store_ok);
  } else {
    for (size_t r = 0; r < static_cast<size_t>(StoreResult::kCount); ++r) {
      uint64_t total = 0;
      for (const auto& w : workers_) total += w->store_results[r].Get();
      fmt::format_to(it, "sluice_store_operations_total{{backend=\"{}\",result=\"{}\"}} {}\n",
                     store_backend_, StoreResultName(static_cast<StoreResult>(r)), total);
    }
    Histogram::Snapshot latency;
    for (const auto& w : workers_) latency.Merge(w->store_latency);
    RenderHistogram(out, "sluice_store_latency_seconds",
                    "Redis script calls, from sent to answered.", latency);
    out +=
        "# HELP sluice_store_node_up Whether every worker's connection to the node is up "
        "(breaker closed).\n# TYPE sluice_store_node_up gauge\n";
    for (const NodeStatus& node : StoreNodesLocked())
      fmt::format_to(it, "sluice_store_node_up{{node=\"{}\"}} {}\n", EscapeLabel(node.name),
                     node.up ? 1 : 0);
  }
  fmt::format_to(it,
                 "# HELP sluice_connections_active Client connections open now.\n"
                 "# TYPE sluice_connections_active gauge\nsluice_connections_active {}\n"
                 "# HELP sluice_connections_total Client connections accepted.\n"
                 "# TYPE sluice_connections_total counter\nsluice_connections_total {}\n"
                 "# HELP sluice_connections_refused_total Connections closed at once because "
                 "max_connections were open.\n"
                 "# TYPE sluice_connections_refused_total counter\n"
                 "sluice_connections_refused_total {}\n"
                 "# HELP sluice_requests_held Requests held by delay rules now.\n"
                 "# TYPE sluice_requests_held gauge\nsluice_requests_held {}\n",
                 active, accepted, refused, held);
  if (!upstream_names_.empty()) {
    out +=
        "# HELP sluice_upstream_requests_total Attempts sent to upstream servers, by the "
        "upstream's status code (502 or 504 when it gave none).\n"
        "# TYPE sluice_upstream_requests_total counter\n";
    for (size_t u = 0; u < upstream_names_.size(); ++u) {
      for (size_t code = 100; code < kUpstreamCodes; ++code) {
        uint64_t total = 0;
        for (const auto& w : workers_) total += w->upstream_requests[u][code].Get();
        if (total == 0) continue;
        fmt::format_to(it, "sluice_upstream_requests_total{{upstream=\"{}\",code=\"{}\"}} {}\n",
                       EscapeLabel(upstream_names_[u]), code, total);
      }
    }
    out +=
        "# HELP sluice_circuit_open Whether a server's circuit breaker is open (or half-open) "
        "in any worker.\n# TYPE sluice_circuit_open gauge\n";
    for (size_t c = 0; c < circuit_names_.size(); ++c) {
      int open = -1;
      for (const auto& w : workers_) open = std::max<int>(open, w->circuit_open[c].load());
      if (open < 0) continue;  // a server of an old config no worker uses any more
      const size_t split = circuit_names_[c].find('\n');
      fmt::format_to(
          it, "sluice_circuit_open{{upstream=\"{}\",server=\"{}\"}} {}\n",
          EscapeLabel(circuit_names_[c].substr(0, split)),
          EscapeLabel(split == std::string::npos ? "" : circuit_names_[c].substr(split + 1)), open);
    }
  }
  fmt::format_to(it,
                 "# HELP sluice_config_reloads_total Configuration loads by result.\n"
                 "# TYPE sluice_config_reloads_total counter\n"
                 "sluice_config_reloads_total{{result=\"success\"}} {}\n"
                 "sluice_config_reloads_total{{result=\"failure\"}} {}\n",
                 reloads_succeeded.Get(), reloads_failed.Get());
  return out;
}

}  // namespace sluice::metrics
