// Gateway mode: the worker's side of forwarding a request the rules allowed to an
// upstream server, and streaming its response back (issue 5, ../shared/design.md).
//
// Per worker, built from the config's `routes` and `upstreams` (and rebuilt when a
// reload changes them): for each upstream group a Balancer (http/balancer.h), an
// UpstreamHealth (passive breaker and active checks, http/upstream_health.h), its own
// UpstreamPool of keep-alive connections with the group's timeouts, and the timers of
// its health checks. Workers share nothing here: each balances, counts and checks
// from its own traffic, as nginx's workers do without a shared zone.
//
// A request goes through the gateway in two steps, since the rules may decide later
// (Redis) than the head is parsed, and the head's views are valid only while it is:
//   Prepare  (in OnRequest): route by host and path, the smuggling checks, the
//            upstream request head built into the request's own buffer; the client
//            connection is held with its body paused.
//   Start    (once the rules allow it): pick a server, send the head, stream the body
//            both ways; answer 502/503/504 for an upstream that cannot.
// Cancel ends a prepared or started request early (refused by the rules, or the
// client went away).
//
// Retries: a request that failed before any response byte arrived is sent once more,
// to another server, when it is idempotent (GET, HEAD, PUT, DELETE, OPTIONS, TRACE)
// or nothing of it can have reached the upstream (the connect failed), and no byte of
// its body has been taken from the client yet: bodies are streamed, not kept, so one
// that has begun to go out cannot be sent again. (nginx retries the same cases, with
// a buffered body.)
//
// Thread-safety: one Gateway per worker, on its loop thread.
#ifndef SLUICE_PROXY_GATEWAY_H_
#define SLUICE_PROXY_GATEWAY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "http/server_connection.h"
#include "metrics/metrics.h"
#include "net/event_loop.h"

namespace sluice::proxy {

class ProxyRequest;
struct Routing;

// Hears how each proxied request ended.
class ProxyListener {
 public:
  // The request that Prepare was given `owner` for is over: `status` is what the
  // client was answered (the upstream's status, or sluice's 502/503/504), or 0 when
  // it went away first. Called before the client connection goes on to its next
  // request, and not for a Cancel.
  virtual void OnProxyDone(void* owner, int status) = 0;

 protected:
  ~ProxyListener() = default;
};

class Gateway {
 public:
  Gateway(net::EventLoop& loop, metrics::Registry& registry, metrics::WorkerMetrics& metrics,
          ProxyListener& listener, uint64_t seed);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Takes the routes and upstreams of `config`. A group whose definition is unchanged
  // keeps its health state and connections; requests in flight finish on the groups
  // they started with.
  void Configure(const config::Config& config);
  // Routes are configured: allowed requests go upstream, not a local 200.
  bool enabled() const;

  struct Prepared {
    ProxyRequest* request = nullptr;  // null: answer `status` with `error`
    int status = 0;
    std::string_view error;  // a snake_case code for the JSON body
  };
  // Routes `request` and prepares its forwarding: on success the connection is held
  // and its body paused until Start. `trusted_proxies` and `https` shape the
  // X-Forwarded-* fields. REQUIRES: enabled(); inside RequestHandler::OnRequest.
  Prepared Prepare(http::ServerConnection& connection, const http::Request& request,
                   const net::CidrList& trusted_proxies, void* owner);
  // Forwards a prepared request. `client_key` places the client on the `hash` ring;
  // `response_lines` (the RateLimit fields, complete lines) go on the response.
  void Start(ProxyRequest& request, uint64_t client_key, std::string_view response_lines);
  // Ends a prepared or started request without answering it: the upstream side is
  // dropped and the request recycled. The caller answers the client (if it can).
  void Cancel(ProxyRequest& request);

  // Requests started and not yet done.
  size_t active() const { return active_; }

 private:
  friend class ProxyRequest;
  ProxyRequest& NewRequest();
  void Recycle(ProxyRequest& request);
  // Lets go of a routing. The last reference to one a reload replaced is not dropped
  // here: that would destroy its groups' pools, and with them the connection whose
  // callback may be on the stack; it is dropped from the loop instead.
  void Release(std::shared_ptr<Routing>& routing);

  net::EventLoop& loop_;
  metrics::Registry& registry_;
  metrics::WorkerMetrics& metrics_;
  ProxyListener& listener_;
  uint64_t seed_;
  std::shared_ptr<Routing> routing_;
  std::vector<std::shared_ptr<Routing>> retired_;  // dropped by retire_timer_
  net::EventLoop::TimerId retire_timer_ = net::EventLoop::kNoTimer;
  std::vector<std::unique_ptr<ProxyRequest>> requests_;  // every one made
  std::vector<ProxyRequest*> free_;
  size_t active_ = 0;
};

}  // namespace sluice::proxy

#endif  // SLUICE_PROXY_GATEWAY_H_
