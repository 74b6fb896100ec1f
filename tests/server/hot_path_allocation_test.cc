// The request path allocates nothing once warm (conventions: "no heap allocation per
// request after warm-up"). A real ServerConnection over a socketpair, the gate with a
// real MemoryStore and the RateLimit fields, as a worker runs them; every operator
// new in this binary is counted (tests/testing/allocation_counter.h), and after a
// warm-up round the count must not move.
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "config/config.h"
#include "gate/gate.h"
#include "http/server_connection.h"
#include "metrics/metrics.h"
#include "net/event_loop.h"
#include "store/memory_store.h"
#include "testing/allocation_counter.h"

namespace sluice {
namespace {

constexpr std::string_view kConfig = R"(
rules:
  - name: per-ip
    key: [ip]
    algorithm: token_bucket
    limit: 1000000
    period: 1s
  - name: per-key
    match: {path_prefix: "/api/"}
    key: ["header:x-api-key", method]
    algorithm: sliding_window_counter
    limit: 3
    period: 1m
)";

// What a worker does with a request (src/server/server.cc, Worker::OnRequest and
// Answer), with the same kind of reused scratch space.
class Handler final : public http::RequestHandler {
 public:
  Handler(const gate::Policy& policy, gate::Evaluator& evaluator, const Clock& clock)
      : policy_(policy), evaluator_(evaluator), clock_(clock) {
    headers_.reserve(1024);
    body_.reserve(512);
  }
  void OnRequest(http::ServerConnection& c, const http::Request& r) override {
    evaluator_.Evaluate(policy_, r, clock_.Now(), evaluation_);
    headers_.clear();
    gate::AppendRateLimitHeaders(evaluation_, true, headers_);
    body_ = evaluation_.verdict == gate::Verdict::kLimited ? "{\"error\":\"rate_limited\"}"
                                                           : "{\"allowed\":true}";
    c.Respond(evaluation_.verdict == gate::Verdict::kLimited ? 429 : 200, headers_,
              "application/json", body_);
    ++answered;
  }
  void OnClose(http::ServerConnection&) override { closed = true; }
  void OnProtocolError(http::ServerConnection&, int) override {}
  int answered = 0;
  bool closed = false;

 private:
  const gate::Policy& policy_;
  gate::Evaluator& evaluator_;
  const Clock& clock_;
  gate::Evaluation evaluation_;
  std::string headers_;
  std::string body_;
};

TEST(HotPathAllocationTest, KeepAliveRequestsAllocateNothingOnceWarm) {
  const config::LoadResult loaded = config::LoadConfigText(kConfig, "test.yaml");
  ASSERT_TRUE(loaded.errors.empty());
  metrics::Registry registry;
  const auto policy = gate::Policy::Compile(loaded.config, registry);
  store::MemoryStore store(
      store::MemoryStore::Options{.max_keys = 1024, .shards = 0, .hash_seed = 1});
  metrics::WorkerMetrics& worker_metrics = registry.AddWorker();
  gate::Evaluator evaluator(store, worker_metrics);
  ManualClock clock(Timestamp{} + std::chrono::seconds(1));
  net::EventLoop loop(clock);
  Handler handler(*policy, evaluator, clock);
  http::RequestIdSource ids(42);
  http::ProtocolLimits limits;
  http::ConnectionTimeouts timeouts;

  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
  const net::IpAddress peer = *net::IpAddress::Parse("192.0.2.7");
  http::ServerConnection connection(loop, fds[0], peer, handler, ids, limits, timeouts);
  connection.Start();

  // Two allowed requests and one over the per-key limit, pipelined, then drained.
  const std::string batch =
      "GET /api/items?id=1 HTTP/1.1\r\nHost: example.com\r\nX-Api-Key: k1\r\n\r\n"
      "GET /api/items?id=2 HTTP/1.1\r\nHost: example.com\r\nX-Api-Key: k2\r\n"
      "X-Request-Id: abc-123\r\n\r\n"
      "POST /api/items HTTP/1.1\r\nHost: example.com\r\nX-Api-Key: k1\r\n"
      "Content-Length: 5\r\n\r\nhello";
  std::string out(1 << 16, '\0');
  auto round = [&] {
    ASSERT_EQ(write(fds[1], batch.data(), batch.size()), static_cast<ssize_t>(batch.size()));
    connection.OnIoEvent(EPOLLIN);
    ASSERT_GT(read(fds[1], out.data(), out.size()), 0);
  };
  for (int i = 0; i < 5; ++i) round();  // warm-up: buffers and store entries
  const uint64_t before = testing::AllocationCount();
  for (int i = 0; i < 200; ++i) round();
  const uint64_t after = testing::AllocationCount();
  EXPECT_EQ(after - before, 0u) << "allocations in 600 requests";
  // The counter sees allocations at all (the replacement operator new is in use).
  auto probe = std::make_unique<std::string>(64, 'x');
  EXPECT_GT(testing::AllocationCount(), after);
  EXPECT_EQ(handler.answered, 205 * 3);
  EXPECT_FALSE(handler.closed);
  close(fds[1]);
}

}  // namespace
}  // namespace sluice
