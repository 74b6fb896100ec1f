// Envoy's gRPC rate limit service (envoy.service.ratelimit.v3.RateLimitService,
// proto/) on grpc_listen: the drop-in for envoyproxy/ratelimit that Envoy's
// envoy.filters.http.ratelimit filter calls, deciding with the limits of
// `envoy_ratelimit_configs` (RateLimitConfig) and sluice's store and algorithms.
//
// Per request descriptor, as the service does it: the config's limit for its entries
// (RateLimitConfig::Match), or the descriptor's own `limit` override; `replaces` drops
// limits another matched one replaces; an unlimited limit, or none, answers OK without
// counting. What a descriptor takes is its hits_addend, else the request's, else 1 (0
// looks without taking). The answer is OVER_LIMIT when any descriptor outside shadow
// mode is, with one status per descriptor (its limit, what remains, the time until
// the count is whole again) and the RateLimit-Policy, RateLimit and, when over,
// Retry-After fields in response_headers_to_add for Envoy to put on its answer.
//
// Counters are keyed by domain and the descriptor's entries (key and value, in order),
// hashed as the gate hashes client keys: one counter per distinct descriptor, shared by
// every sluice instance on the same store.
//
// Thread-safety: DecideAsync may run on any number of threads at once (gRPC's); the
// store is used only through RlsStoreAccess. Swapping the config (SetConfig) is safe
// at any time; a call in flight keeps the config it started with.
#ifndef SLUICE_RLS_RLS_SERVICE_H_
#define SLUICE_RLS_RLS_SERVICE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "metrics/metrics.h"
#include "net/address.h"
#include "rls/ratelimit_config.h"
#include "sluice/clock.h"
#include "sluice/store.h"

namespace envoy::service::ratelimit::v3 {
class RateLimitRequest;
class RateLimitResponse;
}  // namespace envoy::service::ratelimit::v3

namespace grpc {
class Server;
class ServerCompletionQueue;
}  // namespace grpc

namespace sluice::rls {

// Where the store may be used. The memory store answers on any thread at once; the
// Redis store belongs to an event loop, and its work must be posted there.
class RlsStoreAccess {
 public:
  virtual ~RlsStoreAccess() = default;
  // Runs `work` with the store and the time to decide at, now or later, on a thread
  // where the store may be used.
  virtual void Run(std::function<void(Store& store, Timestamp now)> work) = 0;
  // Whether the store decides `limit` exactly (the Redis scripts have a range).
  virtual bool Decides(const Limit& limit) const { return true; }
};

// The memory store, used on the caller's thread.
class InlineStoreAccess final : public RlsStoreAccess {
 public:
  InlineStoreAccess(Store& store, const Clock& clock) : store_(store), clock_(clock) {}
  void Run(std::function<void(Store& store, Timestamp now)> work) override {
    work(store_, clock_.Now());
  }

 private:
  Store& store_;
  const Clock& clock_;
};

class RlsDecider {
 public:
  // Told the outcome of a call: "" (the response is filled) or why it was refused.
  using Done = std::function<void(std::string error)>;

  // `wall_clock`: Unix time, on which the service's windows are laid (a fixed window's
  // end is reported even before anything is counted in it).
  // `registry`, when given, counts every decision in sluice_requests_total under the
  // limit's name (rate_limit.name, else its stats key, "domain.key_value").
  RlsDecider(RlsStoreAccess& access, const Clock& wall_clock,
             metrics::Registry* registry = nullptr);

  void SetConfig(std::shared_ptr<const RateLimitConfig> config);
  std::shared_ptr<const RateLimitConfig> config() const;
  // The metric slot of each of the config's limits, in limits() order.
  struct Loaded {
    std::shared_ptr<const RateLimitConfig> config;
    std::vector<size_t> slots;
  };

  // A call's working state (each descriptor's limit, counter key and answer), which a
  // caller with a steady stream of calls keeps from one to the next: its buffers keep
  // their size, so a call allocates nothing of its own.
  struct Call;
  struct CallDeleter {
    void operator()(Call* call) const;
  };
  using CallState = std::unique_ptr<Call, CallDeleter>;
  static CallState NewCallState();

  // Fills `response` (cleared first) for `request` and then calls `done`: at once
  // with a store access that runs its work at once, else from the store's thread.
  // `request` and `response` must stay until then, and so must `state` when given (it
  // is the caller's again when `done` is called); without it the call makes its own.
  // `access`, when given, is the store for this call in place of the decider's (a
  // worker's own Redis store, for a call taken on that worker's loop).
  void DecideAsync(const envoy::service::ratelimit::v3::RateLimitRequest& request,
                   envoy::service::ratelimit::v3::RateLimitResponse& response, Done done,
                   Call* state = nullptr, RlsStoreAccess* access = nullptr) const;

  // The same, for a store access that runs its work at once (tests): "" or the error.
  std::string Decide(const envoy::service::ratelimit::v3::RateLimitRequest& request,
                     envoy::service::ratelimit::v3::RateLimitResponse& response) const;

 private:
  // Each descriptor's limit, key and cost; "" or why the call is refused.
  std::string Plan(Call& call, const RlsStoreAccess& access) const;
  void Answer(const Call& call) const;

  std::shared_ptr<const Loaded> loaded() const;
  // The metric slot of a detailed_metric stats key ("domain.key_value..."), from a
  // per-thread cache in front of the registry (whose lookup scans and locks).
  size_t DetailedSlot(std::string_view stats_key) const;

  RlsStoreAccess& access_;
  const Clock& wall_clock_;
  metrics::Registry* registry_;
  // Written by every thread that answers (AddShared); null without a registry.
  metrics::WorkerMetrics* metrics_ = nullptr;
  const uint64_t serial_;  // tells deciders apart in DetailedSlot's per-thread cache
  // detailed_metric names taken from the registry (by any thread; a name two threads
  // meet at once counts twice, which only ends the budget a little early).
  static constexpr size_t kMaxDetailedNames = 256;
  mutable std::atomic<size_t> detailed_names_{0};
  mutable std::mutex config_mutex_;
  std::shared_ptr<const Loaded> loaded_;  // guarded by config_mutex_
};

// The gRPC server around a decider: `threads` completion queues, each polled by a
// thread of its own that decides the calls it receives.
class RlsServer {
 public:
  class Service;
  struct Slots;  // a queue's calls, finished ones kept for reuse (rls_service.cc)
  // Calls handed to the store's threads and not yet back on their queue, and whether
  // they may still come back: a hand-over after the queues closed would be lost in
  // gRPC (Stop waits for them first, for a while).
  struct HandOver {
    std::atomic<int> deciding{0};
    std::mutex mutex;
    bool open = true;  // guarded by mutex
  };
  RlsServer(RlsDecider& decider, int threads);
  ~RlsServer();
  RlsServer(const RlsServer&) = delete;
  RlsServer& operator=(const RlsServer&) = delete;

  // Binds `endpoint` (port 0: one the kernel picks) and starts serving; "" or the error.
  std::string Start(const net::Endpoint& endpoint);
  uint16_t port() const { return port_; }
  // Finishes the calls in flight (up to a short grace) and stops.
  void Stop();

 private:
  void DrainQueues();

  RlsDecider& decider_;
  const int threads_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues_;
  std::vector<std::unique_ptr<Slots>> slots_;  // one per queue, used by its poller only
  HandOver hand_over_;
  std::vector<std::thread> pollers_;
  uint16_t port_ = 0;
};

}  // namespace sluice::rls

#endif  // SLUICE_RLS_RLS_SERVICE_H_
