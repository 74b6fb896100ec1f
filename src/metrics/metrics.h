// Counters and histograms, and their Prometheus text exposition
// (../shared/design.md, "Metrics").
//
// Each worker owns one WorkerMetrics and is its only writer, so an increment is a
// plain load and store (no locked instruction, no shared cache line between
// workers); the admin thread reads all of them and sums when /metrics is scraped.
// Label values that come from config (rule names) are resolved to fixed slots when a
// config is compiled, never on the request path.
//
// Thread-safety: Counter::Add and Histogram::Observe from the owning thread only;
// reads from any thread. Registry methods from any thread.
#ifndef SLUICE_METRICS_METRICS_H_
#define SLUICE_METRICS_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::metrics {

class Counter {
 public:
  void Add(uint64_t n = 1) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  // For a counter several threads write (Envoy's rate limit service's, which gRPC's
  // threads and the workers' loops update): every writer of it must use this.
  void AddShared(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Get() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// Latency histogram with fixed bounds from 10 µs to 1 s.
class Histogram {
 public:
  static constexpr std::array<int64_t, 14> kBoundsNs = {
      10'000,    25'000,    50'000,     100'000,    250'000,     500'000,     1'000'000,
      2'500'000, 5'000'000, 10'000'000, 25'000'000, 100'000'000, 250'000'000, 1'000'000'000};
  void Observe(int64_t nanos);
  struct Snapshot {
    std::array<uint64_t, kBoundsNs.size() + 1> buckets{};  // last: above every bound
    uint64_t count = 0;
    uint64_t sum_ns = 0;
    void Merge(const Histogram& histogram);
  };

 private:
  std::array<Counter, kBoundsNs.size() + 1> buckets_;
  Counter count_;
  Counter sum_ns_;
};

// What happened to a request under one rule, or under the access lists.
enum class Outcome : uint8_t {
  kAllowed,        // within the limit
  kLimited,        // over the limit: 429
  kShadowLimited,  // over the limit, shadow rule: passed anyway
  kDelayed,        // held, then admitted
  kMissingKey,     // on_missing_key: reject
  kDenied,         // access.deny: 403
  kCount
};
std::string_view OutcomeName(Outcome outcome);

// Rule-name slots, shared by every worker: slot 0 is "" (no rule matched), then the
// access lists, then rule names in order of first appearance in any config.
inline constexpr size_t kMaxRuleSlots = 1024;
inline constexpr size_t kSlotNoRule = 0;
inline constexpr size_t kSlotAccessAllow = 1;
inline constexpr size_t kSlotAccessDeny = 2;

// What became of one decision the Redis store was asked for.
enum class StoreResult : uint8_t {
  kOk,           // answered by Redis
  kError,        // Redis answered with an error, or the connection broke: on_failure
  kTimeout,      // no answer within command_timeout_ms: on_failure
  kUnavailable,  // the node was down (breaker open): on_failure at once
  kDenyCached,   // refused by the local deny cache without asking Redis
  kCount
};
std::string_view StoreResultName(StoreResult result);

// Redis nodes as label values: a slot per node name, like rules.
inline constexpr size_t kMaxNodeSlots = 256;

// Upstream groups (gateway mode) as label values, and (upstream, server) pairs for
// the circuit gauge: slots like rules and nodes.
inline constexpr size_t kMaxUpstreamSlots = 64;
inline constexpr size_t kMaxCircuitSlots = 1024;
// sluice_upstream_requests_total's code label: the upstream's status (100-599), or
// the status sluice answered for an attempt that got none (502, 504).
inline constexpr size_t kUpstreamCodes = 600;

struct WorkerMetrics {
  std::array<std::array<Counter, static_cast<size_t>(Outcome::kCount)>, kMaxRuleSlots> requests;
  Histogram request_duration;                 // the decision path: head parsed to answer known
  std::array<Counter, 6> responses_by_class;  // unused slot 0, then 1xx..5xx
  std::array<Counter, 600> responses_by_status;
  Counter store_operations_ok;  // decisions asked of the store (memory: all succeed)
  std::array<Counter, static_cast<size_t>(StoreResult::kCount)> store_results;  // redis
  Histogram store_latency;  // redis: one script call, sent to answered
  // redis: per node slot, -1 when this worker has no connection to it, else 0/1.
  std::array<std::atomic<int8_t>, kMaxNodeSlots> node_up;
  WorkerMetrics() {
    for (auto& up : node_up) up.store(-1, std::memory_order_relaxed);
    for (auto& open : circuit_open) open.store(-1, std::memory_order_relaxed);
  }
  // Gateway: attempts per upstream slot and code. Pages never written stay untouched,
  // so the 300 KB this reserves per worker costs memory only for the slots in use.
  std::array<std::array<Counter, kUpstreamCodes>, kMaxUpstreamSlots> upstream_requests;
  // Per circuit slot, -1 when this worker has no such server, else 0/1 (open or
  // half-open).
  std::array<std::atomic<int8_t>, kMaxCircuitSlots> circuit_open;
  void CountUpstream(size_t slot, int code) {
    if (code >= 100 && code < static_cast<int>(kUpstreamCodes)) upstream_requests[slot][code].Add();
  }
  Counter connections_accepted;
  Counter connections_refused;  // over max_connections
  std::atomic<int64_t> connections_active{0};
  std::atomic<int64_t> requests_held{0};

  void CountRequest(size_t slot, Outcome outcome) {
    requests[slot][static_cast<size_t>(outcome)].Add();
  }
  void CountResponse(int status) {
    if (status >= 100 && status < 600) responses_by_status[status].Add();
  }
};

class Registry {
 public:
  Registry();
  // The slot of a rule name; a new name takes the next free slot. Names past
  // kMaxRuleSlots share the last slot, reported as rule="(other)".
  size_t RuleSlot(std::string_view name);
  // A new worker's metrics; the address stays valid for the registry's life.
  WorkerMetrics& AddWorker();

  Counter reloads_succeeded;  // also counts the first load
  Counter reloads_failed;
  std::atomic<int> store_up{1};
  // The slot of a Redis node's name ("host:port"); past kMaxNodeSlots, the last.
  size_t NodeSlot(std::string_view name);
  size_t UpstreamSlot(std::string_view name);
  // The slot of one server of an upstream group, for sluice_circuit_open.
  size_t CircuitSlot(std::string_view upstream, std::string_view server);
  // Which backend the store operations are reported for ("memory" or "redis").
  void SetStoreBackend(std::string_view backend);
  std::string store_backend() const;
  // Each Redis node a worker has reported on, up only when every reporting worker's
  // breaker for it is closed (as sluice_store_node_up).
  struct NodeStatus {
    std::string name;
    bool up = false;
  };
  std::vector<NodeStatus> StoreNodes() const;

  // The Prometheus text exposition (format 0.0.4) of everything.
  std::string Render() const;

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> slot_names_;              // guarded by mutex_
  std::vector<NodeStatus> StoreNodesLocked() const;  // REQUIRES: mutex_ held
  std::vector<std::string> node_names_;              // guarded by mutex_
  std::vector<std::string> upstream_names_;          // guarded by mutex_
  // "upstream\nserver" per circuit slot; guarded by mutex_
  std::vector<std::string> circuit_names_;
  std::string store_backend_ = "memory";                // guarded by mutex_
  std::deque<std::unique_ptr<WorkerMetrics>> workers_;  // guarded by mutex_
};

}  // namespace sluice::metrics

#endif  // SLUICE_METRICS_METRICS_H_
