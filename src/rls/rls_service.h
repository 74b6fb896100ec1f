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
// Thread-safety: Decide may run on any number of threads at once (gRPC's); the store
// must be one that answers at once and from any thread (the memory store). Swapping
// the config (SetConfig) is safe at any time.
#ifndef SLUICE_RLS_RLS_SERVICE_H_
#define SLUICE_RLS_RLS_SERVICE_H_

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

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

class RlsDecider {
 public:
  RlsDecider(Store& store, const Clock& clock) : store_(store), clock_(clock) {}

  void SetConfig(std::shared_ptr<const RateLimitConfig> config);
  std::shared_ptr<const RateLimitConfig> config() const;

  // Fills `response` (cleared first) for `request`; or, for a request the service
  // refuses (no domain, no descriptors), returns why and leaves `response` empty.
  std::string Decide(const envoy::service::ratelimit::v3::RateLimitRequest& request,
                     envoy::service::ratelimit::v3::RateLimitResponse& response) const;

 private:
  Store& store_;
  const Clock& clock_;
  mutable std::mutex config_mutex_;
  std::shared_ptr<const RateLimitConfig> config_;  // guarded by config_mutex_
};

// The gRPC server around a decider: `threads` completion queues, each polled by a
// thread of its own that decides the calls it receives.
class RlsServer {
 public:
  class Service;
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
  std::vector<std::thread> pollers_;
  uint16_t port_ = 0;
};

}  // namespace sluice::rls

#endif  // SLUICE_RLS_RLS_SERVICE_H_
