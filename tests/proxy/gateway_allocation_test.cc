// The gateway's request path allocates nothing once warm (conventions: "no heap
// allocation per request after warm-up"): a real ServerConnection on a socketpair, a
// real proxy::Gateway forwarding to a real test upstream process over a pooled
// keep-alive connection, on an event loop thread. The test thread only writes requests
// and reads responses on its end of the socketpair (no allocation there), so every
// operator new counted (tests/testing/allocation_counter.h) during the measured
// requests is the loop's.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "config/config.h"
#include "http/server_connection.h"
#include "metrics/metrics.h"
#include "proxy/gateway.h"
#include "testing/allocation_counter.h"
#include "testing/loop_thread.h"
#include "upstream/upstream_process.h"

namespace sluice {
namespace {

// What a worker does with a routed request (src/server/server.cc), less the rules.
class Handler final : public http::RequestHandler, public proxy::ProxyListener {
 public:
  Handler(net::EventLoop& loop, metrics::Registry& registry, metrics::WorkerMetrics& metrics,
          const config::Config& config)
      : gateway_(loop, registry, metrics, *this, 7), config_(config) {
    gateway_.Configure(config);
  }
  void OnRequest(http::ServerConnection& c, const http::Request& r) override {
    const proxy::Gateway::Prepared prepared = gateway_.Prepare(c, r, config_.trusted_proxies, &c);
    if (prepared.request == nullptr) {
      c.Respond(prepared.status, "", "application/json", "{}");
      return;
    }
    pending_ = prepared.request;
    gateway_.Start(*prepared.request, 42, "RateLimit: \"per-ip\";r=9;t=1\r\n");
  }
  void OnClose(http::ServerConnection&) override {
    if (pending_ != nullptr) gateway_.Cancel(*pending_);
    pending_ = nullptr;
  }
  void OnProtocolError(http::ServerConnection&, int) override {}
  void OnProxyDone(void*, int status) override {
    pending_ = nullptr;
    if (status == 200) ++proxied;
  }
  int proxied = 0;

 private:
  proxy::Gateway gateway_;
  const config::Config& config_;
  proxy::ProxyRequest* pending_ = nullptr;
};

// Reads one response with a Content-Length body from `fd` (blocking, bounded).
bool ReadResponse(int fd, std::string& buffer) {
  buffer.clear();
  size_t need = std::string::npos;
  char chunk[4096];
  while (need == std::string::npos || buffer.size() < need) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) return false;
    const ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n <= 0) return false;
    buffer.append(chunk, static_cast<size_t>(n));
    const size_t end = buffer.find("\r\n\r\n");
    if (need == std::string::npos && end != std::string::npos) {
      const size_t cl = buffer.find("Content-Length: ");
      if (cl == std::string::npos || cl > end) return false;
      need = end + 4 + std::strtoul(buffer.c_str() + cl + 16, nullptr, 10);
    }
  }
  return buffer.size() == need && buffer.compare(0, 15, "HTTP/1.1 200 OK") == 0;
}

TEST(GatewayAllocationTest, ProxiedKeepAliveRequestsAllocateNothingOnceWarm) {
  testing::UpstreamProcess upstream;
  ASSERT_TRUE(upstream.Start("a")) << upstream.error();
  const config::LoadResult loaded = config::LoadConfigText(fmt::format(R"(
routes:
  - {{path_prefix: "/", upstream: app}}
upstreams:
  app:
    servers: [{{address: "127.0.0.1:{}"}}]
)",
                                                                       upstream.port()),
                                                           "test.yaml");
  ASSERT_TRUE(loaded.errors.empty());
  metrics::Registry registry;
  metrics::WorkerMetrics& worker_metrics = registry.AddWorker();
  testing::LoopThread loop;
  http::RequestIdSource ids(42);
  http::ProtocolLimits limits;
  http::ConnectionTimeouts timeouts;
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
  const net::IpAddress peer = *net::IpAddress::Parse("192.0.2.7");
  std::unique_ptr<Handler> handler;
  std::unique_ptr<http::ServerConnection> connection;
  loop.Call([&] {
    handler = std::make_unique<Handler>(loop.loop(), registry, worker_metrics, *loaded.config);
    connection = std::make_unique<http::ServerConnection>(loop.loop(), fds[0], peer, *handler, ids,
                                                          limits, timeouts);
    connection->Start();
  });

  // A GET, and a POST with a body, each answered before the next goes.
  const std::string get = "GET /x?y=1 HTTP/1.1\r\nHost: example.com\r\nX-Api-Key: k1\r\n\r\n";
  const std::string post =
      "POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello";
  std::string response;
  response.reserve(1 << 16);
  auto round = [&] {
    for (const std::string* request : {&get, &post}) {
      ASSERT_EQ(write(fds[1], request->data(), request->size()),
                static_cast<ssize_t>(request->size()));
      ASSERT_TRUE(ReadResponse(fds[1], response)) << response;
    }
  };
  for (int i = 0; i < 20; ++i) round();  // warm-up: buffers, the pool's connection
  const uint64_t before = testing::AllocationCount();
  for (int i = 0; i < 200; ++i) round();
  const uint64_t after = testing::AllocationCount();
  EXPECT_EQ(after - before, 0u) << "allocations in 400 proxied requests";
  // The counter sees allocations at all (the replacement operator new is in use).
  auto probe = std::make_unique<std::string>(64, 'x');
  EXPECT_GT(testing::AllocationCount(), after);
  EXPECT_EQ(loop.Call([&] { return handler->proxied; }), 440);
  loop.Call([&] {
    connection.reset();
    handler.reset();
  });
  loop.Stop();  // before `timeouts`, which its turn hook uses, goes
  close(fds[1]);
}

}  // namespace
}  // namespace sluice
