// The Redis store: limiter state shared by a fleet, in Redis primaries on a
// consistent-hashing ring (docs/architecture.md, "Redis store").
//
// One RedisStore belongs to one worker's event loop and keeps its own connection to
// every node, opened at start and re-opened with backoff, so no request ever waits
// for a connection to be set up. A decision goes to the node that owns its key
// (`sluice:{<rule>:<client>}`) and joins that node's batch for the current loop
// turn; when the turn ends the node's batch is sent as one EVALSHA of the batch script
// (src/store/redis_scripts.h), which decides the batch's requests in order against
// Redis's clock, atomically, unless a call to the node is still unanswered: then the
// batches wait and go together, up to max_batch a call, when its reply is in. The
// replies come back in order on the same connection.
//
// Failure: every command has `command_timeout`; a decision whose node is down, whose
// breaker is open, whose command timed out or failed is decided by `on_failure`
// (allow, deny, or the local memory store) and never waits longer than the timeout.
// Each node has a circuit breaker: kFailuresToOpen failures in a row open it (the
// connection is closed and requests for the node are decided by the policy at
// once); after a backoff a new connection is made and SCRIPT LOAD is its probe
// (half-open); its answer closes the breaker.
//
// Deny cache: a request refused until T by Redis makes later requests for the same
// key, policy and at least the same cost be refused locally until T without asking
// Redis. T counts from when the batch was sent, never later than Redis decided, so
// the cache never refuses what Redis would admit (docs/algorithms.md).
//
// Thread-safety: everything on the loop's thread; Decide's completion is called on
// it too (at once for the policy's and the deny cache's answers).
#ifndef SLUICE_STORE_REDIS_STORE_H_
#define SLUICE_STORE_REDIS_STORE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/hash_ring.h"
#include "metrics/metrics.h"
#include "net/address.h"
#include "net/event_loop.h"
#include "sluice/store.h"
#include "store/redis_connection.h"

namespace sluice::store {

enum class OnFailure { kAllow, kDeny, kLocal };

class RedisStore final : public Store {
 public:
  struct Options {
    // Ring mode: the primaries. Cluster mode: seed nodes, from which the slot map
    // (CLUSTER SLOTS) is learnt; the primaries it names are connected to as well.
    std::vector<net::Endpoint> nodes;
    bool cluster = false;
    Duration connect_timeout = std::chrono::milliseconds(200);
    Duration command_timeout = std::chrono::milliseconds(20);
    OnFailure on_failure = OnFailure::kAllow;
    Store* local = nullptr;  // REQUIRED for kLocal: the process's memory store
    size_t max_batch = 256;  // decisions per script call
    size_t deny_cache_entries = 65536;
    // Breaker: failures in a row that open it, and the backoff before a new
    // connection is tried (doubling up to the maximum, with +-20% jitter).
    int failures_to_open = 3;
    Duration min_backoff = std::chrono::milliseconds(100);
    Duration max_backoff = std::chrono::seconds(1);
  };

  // Connects to every node at once. `metrics` may be null (tests).
  RedisStore(net::EventLoop& loop, Options options, metrics::Registry* registry,
             metrics::WorkerMetrics* metrics);
  // Completions not yet called are dropped without being called.
  ~RedisStore() override;

  void Decide(const StoreRequest& request, Timestamp now, Completion& done) override;

  // Sends every batch of this loop turn. Called by the loop's turn hook (installed
  // by the constructor); public for tests that drive the loop themselves.
  void Flush();

  // For tests and /readyz: whether the node's breaker is closed.
  bool node_up(size_t node) const;
  size_t node_count() const { return nodes_.size(); }
  const std::string& node_name(size_t node) const;
  // The Redis key of a store key: "sluice:{<rule>:<client in hex>}".
  static void RedisKey(std::string_view store_key, std::string& out);
  // Redis Cluster's hash slot of a key: CRC16 (XMODEM) of its hash tag, mod 16384.
  static int KeyHashSlot(std::string_view key);
  static constexpr int kSlots = 16384;
  // Cluster mode: the node index serving `slot` as last learnt, or -1.
  int slot_owner(int slot) const { return slot_owner_[static_cast<size_t>(slot)]; }

  struct Stats {
    uint64_t calls = 0;           // script calls sent
    uint64_t decided = 0;         // decisions answered by Redis
    uint64_t deny_cached = 0;     // refused by the deny cache
    uint64_t by_policy = 0;       // decided by on_failure
    uint64_t timeouts = 0;        // batches answered by the policy at their deadline,
                                  // sent or still queued
    uint64_t moved = 0;           // cluster: MOVED redirections followed
    uint64_t asked = 0;           // cluster: ASK redirections followed
    uint64_t slot_refreshes = 0;  // cluster: slot maps received
    uint64_t largest_call = 0;    // decisions in the largest script call sent
  };
  const Stats& stats() const { return stats_; }

 private:
  struct Batch;
  struct Node;
  struct InFlight;
  struct DenyEntry;
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };

  Batch* NewBatch(size_t node);
  void Recycle(Batch* batch);
  void Send(Node& node, Batch& batch);
  void MarkDirty(Node& node);
  void Queue(Node& node, Batch& batch);
  void SendQueued(Node& node);
  Node& NodeAt(const net::Endpoint& endpoint);
  void RefreshSlots();
  void RefreshTick();
  void OnSlotsReply(Node& from, const RedisReply& reply);
  bool FollowRedirect(Node& node, Batch& batch, const RedisReply& reply);
  void OnBatchReply(Node& node, Batch& batch, const RedisReply& reply);
  void DecideByPolicy(const StoreRequest& request, Timestamp now, Completion& done);
  void AnswerByPolicy(Batch& batch);
  bool DenyCached(const StoreRequest& request, Timestamp now, Completion& done);
  void RememberDenial(std::string_view store_key, const StoreRequest& request,
                      const Decision& decision, Timestamp sent);
  void ArmTimeout(Node& node);
  void OnTimeoutTimer(Node& node);
  void RecordFailure(Node& node, std::string_view why);
  void OpenBreaker(Node& node, std::string_view why);
  void Reconnect(Node& node);
  void SetUp(Node& node, bool up);
  // Adds `decisions` to sluice_store_operations_total{result}.
  void Count(metrics::StoreResult result, uint64_t decisions = 1);

  net::EventLoop& loop_;
  Options options_;
  metrics::Registry* registry_;
  metrics::WorkerMetrics* metrics_;
  core::HashRing ring_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<Node*> dirty_;                     // nodes with something to seal, send or write
  std::vector<Node*> flushing_;                  // scratch for Flush
  std::vector<Batch*> sending_;                  // scratch for SendQueued
  std::vector<std::unique_ptr<Batch>> batches_;  // every batch made, for ownership
  std::vector<Batch*> free_batches_;
  std::unordered_map<std::string, DenyEntry, StringHash, std::equal_to<>> deny_cache_;
  std::string key_scratch_;
  std::string sha_;                // of the batch script, from SCRIPT LOAD
  std::vector<const char*> argv_;  // scratch for Send
  std::vector<size_t> lengths_;
  std::vector<Batch*> timed_out_;  // scratch for OnTimeoutTimer
  // Cluster mode: the owner of each slot (node index, -1 unknown), this turn's batch
  // of each slot (a script call may only touch keys of one slot), and the slots with
  // a batch.
  std::vector<int> slot_owner_;
  std::vector<Batch*> slot_batches_;
  std::vector<Batch*> merge_targets_;  // scratch for SendQueued: a slot's latest batch
  std::vector<int> touched_slots_;
  bool refresh_pending_ = false;
  Timestamp refresh_sent_{};
  net::EventLoop::TimerId refresh_timer_ = net::EventLoop::kNoTimer;
  uint64_t random_state_;
  Stats stats_;
};

}  // namespace sluice::store

#endif  // SLUICE_STORE_REDIS_STORE_H_
