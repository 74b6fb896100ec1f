// One worker's upstream connections: for each server address, the idle keep-alive
// connections waiting for the next request, reused most recently released first (LIFO:
// the warmest connection, and the one least likely to have been timed out by the server),
// `max_idle_per_server` of them kept for as long as the server keeps them. A burst may
// leave more idle for a moment: the surplus (the least recently used beyond the bound)
// is closed once it has been idle for `surplus_linger`, so a load that keeps more
// requests in flight than the bound does not close connections after every burst and
// open them again for the next (what HAProxy's idle purge does); four times the bound
// is a hard cap, beyond which the least recently used goes at once. A request takes an
// idle connection when there is one, so once warm no request waits on a connect;
// otherwise it gets a new connection that is still connecting, and its request goes out
// when the connection is up.
//
// While a connection sits idle the pool is its handler: the server closing it (EOF,
// reset, or stray bytes) is seen by the event loop at once and the connection is dropped,
// so it is not handed out again. (A server that closes as a request goes out still makes
// that request fail with no response byte and UpstreamError::reused set; the proxy's
// retry covers that race, as nginx's does.)
//
// The pool owns every connection it made. Connections are freed later in the loop turn,
// never inside a call, so Release() may be called from the connection's own callbacks.
//
// Thread-safety: one pool per worker, used on its event loop's thread only.
#ifndef SLUICE_HTTP_UPSTREAM_POOL_H_
#define SLUICE_HTTP_UPSTREAM_POOL_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "http/upstream_connection.h"
#include "net/address.h"
#include "net/event_loop.h"

namespace sluice::http {

class UpstreamPool final : private UpstreamConnection::Handler {
 public:
  struct Options {
    size_t max_idle_per_server = 32;
    Duration surplus_linger = std::chrono::seconds(1);
    UpstreamConnectionOptions connection;
  };
  struct Stats {
    uint64_t connects = 0;           // new connections made
    uint64_t reuses = 0;             // requests given an idle connection
    uint64_t closed_while_idle = 0;  // idle connections the server closed (or broke)
    uint64_t evicted = 0;            // idle connections closed to honour the bound
  };

  UpstreamPool(net::EventLoop& loop, const Options& options);
  // Closes every connection, busy ones included, without calling their handlers.
  ~UpstreamPool();
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // A connection to `server` for one request, whose events go to `handler`: the most
  // recently released idle one, or a new one (connecting). Call StartRequest on it next.
  // A new connection that fails at once reports the failure to `handler` from the loop.
  UpstreamConnection& Acquire(const net::Endpoint& server, UpstreamConnection::Handler& handler);
  // Gives a connection back once its request is over (after OnResponseComplete or
  // OnUpstreamError), or abandons it mid-request. An idle connection is kept for reuse;
  // any other is closed and freed. REQUIRES: `connection` came from Acquire and has not
  // been released since; the caller does not use it after this.
  void Release(UpstreamConnection& connection);

  size_t idle_count(const net::Endpoint& server) const;
  size_t idle_count() const;
  // Connections made and not yet released closed: busy and idle ones.
  size_t open_count() const { return connections_.size(); }
  const Stats& stats() const { return stats_; }

 private:
  struct ServerKey {
    std::array<uint8_t, 16> address;
    uint16_t port;
    bool operator==(const ServerKey&) const = default;
  };
  struct ServerKeyHash {
    size_t operator()(const ServerKey& key) const;
  };
  static ServerKey KeyOf(const net::Endpoint& server);
  // The idle list of `server` (made empty on first use).
  std::vector<UpstreamConnection*>& IdleOf(const net::Endpoint& server);

  // Closes `connection` and frees it once the current loop turn's callbacks are done.
  void Free(UpstreamConnection* connection);
  // Closes the surplus idle connections whose linger is over; re-arms for the rest.
  void PurgeSurplus();
  void ArmPurge(Timestamp at);

  // UpstreamConnection::Handler, for the idle connections.
  void OnResponseHead(UpstreamConnection&, const ResponseHead&) override {}
  void OnResponseBody(UpstreamConnection&, std::string_view) override {}
  void OnResponseComplete(UpstreamConnection&) override {}
  void OnRequestBodyDrained(UpstreamConnection&) override {}
  void OnUpstreamError(UpstreamConnection& connection, const UpstreamError& error) override;

  net::EventLoop& loop_;
  const Options options_;
  // Every connection not yet released closed; UpstreamConnection::pool_slot_ is the index.
  std::vector<std::unique_ptr<UpstreamConnection>> connections_;
  // Per server, its idle connections, least recently released first.
  std::unordered_map<ServerKey, std::vector<UpstreamConnection*>, ServerKeyHash> idle_;
  ServerKey last_key_{};
  std::vector<UpstreamConnection*>* last_idle_ = nullptr;
  // Closed connections waiting to be freed by free_timer_.
  std::vector<std::unique_ptr<UpstreamConnection>> closed_;
  net::EventLoop::TimerId free_timer_ = net::EventLoop::kNoTimer;
  net::EventLoop::TimerId purge_timer_ = net::EventLoop::kNoTimer;
  Timestamp purge_at_{};
  Stats stats_;
};

}  // namespace sluice::http

#endif  // SLUICE_HTTP_UPSTREAM_POOL_H_
