// UpstreamConnection and UpstreamPool against real sluice_test_upstream processes
// (tests/upstream/test_upstream.cc) over loopback: no mocks. The event loop runs on its
// own thread; the test hands it work (LoopThread::Call) and polls for results. The few
// response shapes the test upstream never sends (heads larger than the read buffer, 101,
// an HTTP/1.0 status line, bytes after the response) come from ScriptedServer, a raw
// socket that writes a fixed reply.
//
// Nothing here can hang the suite: every wait has a bound, the fixture stops the loop and
// kills the upstream in TearDown, and the upstream gets SIGKILL when the test process dies
// (PR_SET_PDEATHSIG). Tests about time assert only that a deadline was not reported early.
#include "http/upstream_connection.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "http/ascii.h"
#include "http/upstream_pool.h"
#include "testing/allocation_counter.h"
#include "testing/loop_thread.h"
#include "upstream/upstream_process.h"

namespace sluice::http {
namespace {

using namespace std::chrono_literals;
using SteadyTime = std::chrono::steady_clock;
using sluice::testing::LoopThread;
using sluice::testing::UpstreamProcess;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kPatternPeriod = 251;

// 127.0.0.1:port, where the upstream processes and scripted servers listen.
net::Endpoint LoopbackEndpoint(uint16_t port) {
  net::Endpoint endpoint;
  endpoint.address = *net::IpAddress::Parse("127.0.0.1");
  endpoint.port = port;
  return endpoint;
}

// --- A scripted server, for what the test upstream never sends -----------------------------

// Accepts one connection, reads one request head, writes `response` in one send, then
// holds the connection until the client closes it (or closes it itself).
class ScriptedServer {
 public:
  explicit ScriptedServer(std::string response) : response_(std::move(response)) {
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof(address));
    listen(listener_, 4);
    socklen_t length = sizeof(address);
    getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    thread_.join();
    close(listener_);
  }
  net::Endpoint endpoint() const { return LoopbackEndpoint(port_); }

 private:
  // Waits for `fd` to be readable, 10 ms at a time, until stopped or 10 s pass.
  bool WaitReadable(int fd) {
    for (int i = 0; i < 1000 && !stop_; ++i) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 10) == 1) return true;
    }
    return false;
  }
  void Serve() {
    if (!WaitReadable(listener_)) return;
    const int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    std::string request;
    char buffer[4096];
    while (request.find("\r\n\r\n") == std::string::npos && WaitReadable(fd)) {
      const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      request.append(buffer, static_cast<size_t>(n));
    }
    std::string_view rest = response_;
    while (!rest.empty()) {
      const ssize_t n = send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
      if (n <= 0) break;
      rest.remove_prefix(static_cast<size_t>(n));
    }
    while (WaitReadable(fd) && recv(fd, buffer, sizeof(buffer), 0) > 0) {
    }
    close(fd);
  }

  std::string response_;
  int listener_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// `count` header lines "X-Big-<i>: <size bytes>".
std::string BigHeaders(int count, size_t size) {
  std::string lines;
  for (int i = 0; i < count; ++i) {
    lines +=
        "X-Big-" + std::to_string(i) + ": " + std::string(size, static_cast<char>('a' + i % 26));
    lines += "\r\n";
  }
  return lines;
}

// --- Checking bodies -----------------------------------------------------------------------

// The upstream's body pattern: byte i is i % 251.
bool MatchesPattern(uint64_t offset, std::string_view bytes) {
  static const std::vector<char>* pattern = [] {
    auto* p = new std::vector<char>(kMiB + kPatternPeriod);
    for (size_t i = 0; i < p->size(); ++i) (*p)[i] = static_cast<char>(i % kPatternPeriod);
    return p;
  }();
  while (!bytes.empty()) {
    const size_t piece = std::min<size_t>(bytes.size(), kMiB);
    if (std::memcmp(pattern->data() + offset % kPatternPeriod, bytes.data(), piece) != 0) {
      return false;
    }
    offset += piece;
    bytes.remove_prefix(piece);
  }
  return true;
}

uint64_t Fnv1a64(std::string_view bytes, uint64_t hash) {
  for (const char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}
constexpr uint64_t kFnvBasis = 0xcbf29ce484222325ULL;

std::string Hex16(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(value));
  return text;
}

uint64_t ResidentKiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

// --- One exchange, as the proxy would see it -----------------------------------------------

// Records what a connection reports about one request (loop thread only). With `pool`
// set, gives the connection back when the request ends, as the proxy will.
struct Exchange final : UpstreamConnection::Handler {
  UpstreamPool* pool = nullptr;
  bool keep_body = true;
  std::function<void(UpstreamConnection&, std::string_view)> body_hook;
  std::function<void(UpstreamConnection&)> drained_hook;

  UpstreamConnection* connection = nullptr;
  UpstreamConnection::State state_at_acquire = UpstreamConnection::State::kClosed;
  int heads = 0;
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;
  BodyKind body_kind = BodyKind::kNone;
  uint64_t body_length = 0;                // with kContentLength
  std::optional<uint64_t> content_length;  // the field's value
  bool keep_alive = false;
  std::string body;
  uint64_t body_bytes = 0;
  bool body_before_head = false;
  bool complete = false;
  UpstreamConnection::State state_after = UpstreamConnection::State::kClosed;
  std::optional<UpstreamError> error;
  std::string error_detail;
  int events_after_end = 0;
  SteadyTime::time_point ended_at;

  bool done() const { return complete || error.has_value(); }
  std::optional<std::string> Header(std::string_view name) const {
    for (const auto& [field, value] : headers) {
      if (EqualsIgnoreCase(field, name)) return value;
    }
    return std::nullopt;
  }
  std::string Describe() const {
    std::string text = "status " + std::to_string(status) + " framing " +
                       std::to_string(static_cast<int>(body_kind)) + " body " +
                       std::to_string(body_bytes) + (complete ? " complete" : "");
    if (error) {
      text += " error " + std::string(ToString(error->kind)) + " (" + error_detail + ")" +
              (error->response_started ? " started" : " not-started");
    }
    return text;
  }

  void OnResponseHead(UpstreamConnection& c, const ResponseHead& head) override {
    if (done()) ++events_after_end;
    ++heads;
    status = head.status;
    reason = std::string(head.reason);
    headers.clear();
    for (const auto& h : head.headers) headers.emplace_back(h.name, h.value);
    body_kind = head.body.kind;
    body_length = head.body.length;
    content_length = head.content_length;
    keep_alive = head.keep_alive;
  }
  void OnResponseBody(UpstreamConnection& c, std::string_view bytes) override {
    if (done()) ++events_after_end;
    if (heads == 0) body_before_head = true;
    if (keep_body) body.append(bytes);
    if (body_hook) body_hook(c, bytes);
    body_bytes += bytes.size();
  }
  void OnResponseComplete(UpstreamConnection& c) override {
    if (done()) ++events_after_end;
    complete = true;
    state_after = c.state();
    ended_at = SteadyTime::now();
    if (pool) pool->Release(c);
  }
  void OnRequestBodyDrained(UpstreamConnection& c) override {
    if (drained_hook) drained_hook(c);
  }
  void OnUpstreamError(UpstreamConnection& c, const UpstreamError& e) override {
    if (done()) ++events_after_end;
    error = e;
    error_detail = std::string(e.detail);
    ended_at = SteadyTime::now();
    if (pool) pool->Release(c);
  }
};

std::string GetHead(std::string_view path, std::string_view method = "GET",
                    std::string_view extra = "", std::string_view version = "HTTP/1.1") {
  std::string head(method);
  head += " ";
  head += path;
  head += " ";
  head += version;
  head += "\r\nHost: upstream.test\r\n";
  head += extra;
  head += "\r\n";
  return head;
}

class UpstreamConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(upstream_.Start("a")) << upstream_.error(); }

  void TearDown() override {
    // The loop stops first, so no callback runs while the pool and exchanges go.
    loop_.Stop();
    pool_.reset();
    connections_.clear();
    upstream_.Kill();
  }

  UpstreamPool& MakePool(UpstreamPool::Options options = {}) {
    loop_.Call([&] { pool_ = std::make_unique<UpstreamPool>(loop_.loop(), options); });
    return *pool_;
  }

  Exchange& NewExchange(bool with_pool = true) {
    exchanges_.emplace_back();
    if (with_pool) exchanges_.back().pool = pool_.get();
    return exchanges_.back();
  }

  // Takes a connection from the pool and sends `request` (loop thread).
  void Start(Exchange& ex, const UpstreamRequest& request) {
    ex.connection = &pool_->Acquire(LoopbackEndpoint(upstream_.port()), ex);
    ex.state_at_acquire = ex.connection->state();
    ex.connection->StartRequest(ex, request);
  }

  bool WaitDone(Exchange& ex, std::chrono::milliseconds timeout = 10s) {
    return loop_.WaitFor([&] { return ex.done(); }, timeout);
  }

  // A bodiless request through the pool, waited for.
  Exchange& Fetch(const std::string& head, bool head_method = false) {
    Exchange& ex = NewExchange();
    loop_.Call([&] { Start(ex, {head, {}, head_method}); });
    EXPECT_TRUE(WaitDone(ex)) << head;
    return ex;
  }

  // A standalone connection (no pool), connecting.
  UpstreamConnection* Connect(Exchange& ex, UpstreamConnectionOptions options = {},
                              std::optional<net::Endpoint> server = std::nullopt) {
    return loop_.Call([&] {
      connections_.push_back(std::make_unique<UpstreamConnection>(
          loop_.loop(), server.value_or(LoopbackEndpoint(upstream_.port())), options, ex));
      connections_.back()->Connect();
      return connections_.back().get();
    });
  }

  // Sends a bodiless request on `connection` and waits for its end.
  void Exchange1(UpstreamConnection* connection, Exchange& ex, const std::string& head,
                 bool head_method = false) {
    loop_.Call([&] {
      ex.connection = connection;
      connection->StartRequest(ex, {head, {}, head_method});
    });
    EXPECT_TRUE(WaitDone(ex)) << head;
  }

  LoopThread loop_;
  UpstreamProcess upstream_;
  std::deque<Exchange> exchanges_;
  std::unique_ptr<UpstreamPool> pool_;
  std::vector<std::unique_ptr<UpstreamConnection>> connections_;
};

// --- Round trips ---------------------------------------------------------------------------

TEST_F(UpstreamConnectionTest, GetRoundTripQueuedWhileConnecting) {
  Exchange& ex = NewExchange(false);
  UpstreamConnection* c = Connect(ex);
  // The request is handed over before the connect finishes and goes out once it does.
  Exchange1(c, ex, GetHead("/"));
  ASSERT_TRUE(ex.complete) << ex.Describe();
  EXPECT_EQ(ex.status, 200);
  EXPECT_EQ(ex.reason, "OK");
  EXPECT_EQ(ex.Header("X-Upstream"), "a");
  EXPECT_EQ(ex.body, "a\n");
  EXPECT_EQ(ex.body_kind, BodyKind::kContentLength);
  EXPECT_EQ(ex.body_length, 2u);
  EXPECT_EQ(ex.content_length, 2u);
  EXPECT_TRUE(ex.keep_alive);
  EXPECT_EQ(ex.state_after, UpstreamConnection::State::kIdle);
  EXPECT_FALSE(ex.body_before_head);
  EXPECT_EQ(ex.heads, 1);
}

TEST_F(UpstreamConnectionTest, ErrorStatusIsAResponseNotAFailure) {
  MakePool();
  Exchange& ex = Fetch(GetHead("/status/503"));
  ASSERT_TRUE(ex.complete) << ex.Describe();
  EXPECT_EQ(ex.status, 503);
  EXPECT_EQ(ex.body, "503\n");
  EXPECT_EQ(ex.state_after, UpstreamConnection::State::kIdle);
}

TEST_F(UpstreamConnectionTest, KeepAliveReusesOneConnectionForTenRequests) {
  UpstreamPool& pool = MakePool();
  std::optional<uint16_t> local_port;
  for (int i = 0; i < 10; ++i) {
    Exchange& ex = Fetch(GetHead("/"));
    ASSERT_TRUE(ex.complete) << i << ": " << ex.Describe();
    EXPECT_EQ(ex.body, "a\n");
    // Once warm, a request gets an idle connection: it never waits on a connect.
    if (i > 0) {
      EXPECT_EQ(ex.state_at_acquire, UpstreamConnection::State::kIdle) << i;
    }
    // The same socket every time, as the kernel sees it.
    const uint16_t port = loop_.Call([&] {
      sockaddr_in local{};
      socklen_t length = sizeof(local);
      getsockname(ex.connection->fd(), reinterpret_cast<sockaddr*>(&local), &length);
      return ntohs(local.sin_port);
    });
    if (!local_port) local_port = port;
    EXPECT_EQ(port, *local_port) << i;
  }
  // The upstream answered ten requests, on the one connection the pool made.
  Exchange& count = Fetch(GetHead("/admin/count"));
  EXPECT_EQ(count.body, "10\n");
  loop_.Call([&] {
    EXPECT_EQ(pool.stats().connects, 1u);
    EXPECT_EQ(pool.stats().reuses, 10u);
    EXPECT_EQ(pool.idle_count(LoopbackEndpoint(upstream_.port())), 1u);
  });
}

TEST_F(UpstreamConnectionTest, ChunkedResponseIsDechunked) {
  MakePool();
  Exchange& small = Fetch(GetHead("/chunked/5/1000"));
  ASSERT_TRUE(small.complete) << small.Describe();
  EXPECT_EQ(small.body_kind, BodyKind::kChunked);
  EXPECT_EQ(small.body.size(), 5000u);
  EXPECT_TRUE(MatchesPattern(0, small.body));
  EXPECT_TRUE(small.keep_alive);
  EXPECT_EQ(small.state_after, UpstreamConnection::State::kIdle);

  // Chunks larger than the read buffer, and chunks that arrive apart.
  Exchange& large = Fetch(GetHead("/chunked/3/100000"));
  ASSERT_TRUE(large.complete) << large.Describe();
  EXPECT_EQ(large.body.size(), 300000u);
  EXPECT_TRUE(MatchesPattern(0, large.body));
  Exchange& gaps = Fetch(GetHead("/chunked/4/10?gap_ms=20"));
  ASSERT_TRUE(gaps.complete) << gaps.Describe();
  EXPECT_EQ(gaps.body.size(), 40u);
  EXPECT_TRUE(MatchesPattern(0, gaps.body));

  Exchange& empty = Fetch(GetHead("/chunked/0/0"));
  ASSERT_TRUE(empty.complete) << empty.Describe();
  EXPECT_EQ(empty.body_kind, BodyKind::kChunked);
  EXPECT_EQ(empty.body_bytes, 0u);
  loop_.Call([&] { EXPECT_EQ(pool_->stats().connects, 1u); });
}

TEST_F(UpstreamConnectionTest, HeadResponseHasNoBodyAndKeepsTheConnection) {
  Exchange& head = NewExchange(false);
  UpstreamConnection* c = Connect(head);
  // Content-Length: 1000000 and chunked heads, no body bytes after either.
  Exchange1(c, head, GetHead("/bytes/1000000", "HEAD"), /*head_method=*/true);
  ASSERT_TRUE(head.complete) << head.Describe();
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.Header("Content-Length"), "1000000");
  EXPECT_EQ(head.content_length, 1000000u);  // for the client's HEAD response
  EXPECT_EQ(head.body_kind, BodyKind::kNone);
  EXPECT_EQ(head.body_bytes, 0u);
  EXPECT_EQ(head.state_after, UpstreamConnection::State::kIdle);

  Exchange& chunked_head = NewExchange(false);
  Exchange1(c, chunked_head, GetHead("/chunked/3/10", "HEAD"), /*head_method=*/true);
  ASSERT_TRUE(chunked_head.complete) << chunked_head.Describe();
  EXPECT_EQ(chunked_head.body_kind, BodyKind::kNone);
  EXPECT_EQ(chunked_head.content_length, std::nullopt);
  EXPECT_EQ(chunked_head.state_after, UpstreamConnection::State::kIdle);

  // The next response on the same connection is read from its first byte.
  Exchange& get = NewExchange(false);
  Exchange1(c, get, GetHead("/bytes/10"));
  ASSERT_TRUE(get.complete) << get.Describe();
  EXPECT_EQ(get.body.size(), 10u);
  EXPECT_TRUE(MatchesPattern(0, get.body));
  loop_.Call([&] { EXPECT_EQ(c->requests(), 3u); });
}

TEST_F(UpstreamConnectionTest, NoContentAndNotModifiedHaveNoBody) {
  Exchange& no_content = NewExchange(false);
  UpstreamConnection* c = Connect(no_content);
  Exchange1(c, no_content, GetHead("/status/204"));
  ASSERT_TRUE(no_content.complete) << no_content.Describe();
  EXPECT_EQ(no_content.status, 204);
  EXPECT_EQ(no_content.body_kind, BodyKind::kNone);
  EXPECT_EQ(no_content.state_after, UpstreamConnection::State::kIdle);

  Exchange& not_modified = NewExchange(false);
  Exchange1(c, not_modified, GetHead("/status/304"));
  ASSERT_TRUE(not_modified.complete) << not_modified.Describe();
  EXPECT_EQ(not_modified.status, 304);
  EXPECT_EQ(not_modified.body_kind, BodyKind::kNone);

  Exchange& after = NewExchange(false);
  Exchange1(c, after, GetHead("/"));
  EXPECT_EQ(after.body, "a\n");
}

TEST_F(UpstreamConnectionTest, ZeroContentLengthCompletesAtTheHead) {
  MakePool();
  Exchange& ex = Fetch(GetHead("/bytes/0"));
  ASSERT_TRUE(ex.complete) << ex.Describe();
  EXPECT_EQ(ex.body_kind, BodyKind::kContentLength);
  EXPECT_EQ(ex.body_length, 0u);
  EXPECT_EQ(ex.state_after, UpstreamConnection::State::kIdle);
}

TEST_F(UpstreamConnectionTest, ConnectionCloseResponseIsNotReused) {
  UpstreamPool& pool = MakePool();
  Exchange& ex = Fetch(GetHead("/", "GET", "Connection: close\r\n"));
  ASSERT_TRUE(ex.complete) << ex.Describe();
  EXPECT_EQ(ex.Header("Connection"), "close");
  EXPECT_FALSE(ex.keep_alive);
  EXPECT_EQ(ex.state_after, UpstreamConnection::State::kClosed);
  Exchange& next = Fetch(GetHead("/"));
  ASSERT_TRUE(next.complete) << next.Describe();
  EXPECT_EQ(next.state_at_acquire, UpstreamConnection::State::kConnecting);
  loop_.Call([&] {
    EXPECT_EQ(pool.stats().connects, 2u);
    EXPECT_EQ(pool.open_count(), 1u);
  });
}

TEST_F(UpstreamConnectionTest, CloseDelimitedBodyEndsAtEofAndClosesTheConnection) {
  MakePool();
  // To an HTTP/1.0 request the upstream streams /chunked unchunked, ended by closing.
  Exchange& ex = Fetch(GetHead("/chunked/3/1000", "GET", "", "HTTP/1.0"));
  ASSERT_TRUE(ex.complete) << ex.Describe();
  EXPECT_EQ(ex.body_kind, BodyKind::kUntilClose);
  EXPECT_FALSE(ex.keep_alive);
  EXPECT_EQ(ex.body.size(), 3000u);
  EXPECT_TRUE(MatchesPattern(0, ex.body));
  EXPECT_EQ(ex.state_after, UpstreamConnection::State::kClosed);
}

TEST_F(UpstreamConnectionTest, InterimContinueIsSkipped) {
  MakePool();
  Exchange& ex = NewExchange();
  const std::string head =
      "POST /upload HTTP/1.1\r\nHost: upstream.test\r\nExpect: 100-continue\r\n"
      "Content-Length: 5\r\n\r\n";
  loop_.Call([&] {
    Start(ex, {head, {BodyKind::kContentLength, 5}});
    EXPECT_TRUE(ex.connection->SendBody("hello"));
    ex.connection->FinishBody();
  });
  ASSERT_TRUE(WaitDone(ex));
  ASSERT_TRUE(ex.complete) << ex.Describe();
  EXPECT_EQ(ex.heads, 1);  // the 100 Continue was read and not delivered
  EXPECT_EQ(ex.status, 200);
  EXPECT_EQ(ex.body, "5 " + Hex16(Fnv1a64("hello", kFnvBasis)) + "\n");
  EXPECT_EQ(ex.state_after, UpstreamConnection::State::kIdle);
}

// --- Streaming with back-pressure ----------------------------------------------------------

TEST_F(UpstreamConnectionTest, HundredMiBResponseWithPauseResumeKeepsBufferingBounded) {
  MakePool();
  // A slow client: it holds up to 1 MiB, then the proxy pauses the upstream until the
  // client has taken it (a millisecond later).
  constexpr uint64_t kTotal = 100 * kMiB;
  constexpr uint64_t kClientBuffer = 1 * kMiB;
  struct SlowClient {
    uint64_t buffered = 0;
    uint64_t max_buffered = 0;
    uint64_t received = 0;
    uint64_t pauses = 0;
    uint64_t delivered_while_paused = 0;
    bool pattern_ok = true;
  };
  auto client = std::make_shared<SlowClient>();
  Exchange& ex = NewExchange();
  ex.keep_body = false;
  net::EventLoop& loop = loop_.loop();
  ex.body_hook = [client, &loop](UpstreamConnection& c, std::string_view bytes) {
    if (c.reading_paused()) ++client->delivered_while_paused;
    if (!MatchesPattern(client->received, bytes)) client->pattern_ok = false;
    client->received += bytes.size();
    client->buffered += bytes.size();
    client->max_buffered = std::max(client->max_buffered, client->buffered);
    if (client->buffered >= kClientBuffer) {
      c.PauseReading();
      ++client->pauses;
      UpstreamConnection* connection = &c;
      loop.RunAt(loop.now() + 1ms, [client, connection] {
        client->buffered = 0;
        connection->ResumeReading();
      });
    }
  };
  const uint64_t rss_before = ResidentKiB();
  loop_.Call([&] { Start(ex, {GetHead("/bytes/" + std::to_string(kTotal))}); });
  ASSERT_TRUE(WaitDone(ex, 60s));
  const uint64_t rss_after = ResidentKiB();
  ASSERT_TRUE(ex.complete) << ex.Describe();
  loop_.Call([&] {
    EXPECT_EQ(client->received, kTotal);
    EXPECT_TRUE(client->pattern_ok);
    EXPECT_GE(client->pauses, 50u);
    EXPECT_EQ(client->delivered_while_paused, 0u);
    // At most the client's buffer plus one read of the connection's.
    EXPECT_LE(client->max_buffered, kClientBuffer + UpstreamConnection::kReadBufferSize);
  });
  EXPECT_EQ(ex.state_after, UpstreamConnection::State::kIdle);
  // Nothing near the body's size was held anywhere in the process.
  EXPECT_LT(rss_after, rss_before + 32 * 1024) << rss_before << " KiB -> " << rss_after << " KiB";
}

// Pushes a 20 MiB request body in 64 KiB pieces, stopping whenever SendBody says so and
// going on at OnRequestBodyDrained (loop thread).
struct Uploader {
  static constexpr uint64_t kTotal = 20 * kMiB;
  static constexpr size_t kPiece = 64 * kKiB;
  UpstreamConnection* connection = nullptr;
  uint64_t sent = 0;
  uint64_t hash = kFnvBasis;
  uint64_t blocked = 0;
  size_t max_unsent = 0;
  bool finished = false;
  std::string piece;

  // Not the upstream's pattern, and not periodic: a lost or repeated piece changes the sum.
  static char ByteAt(uint64_t i) {
    return static_cast<char>(((i ^ (i >> 8) ^ (i >> 17)) * 31 + (i >> 20)) & 0xff);
  }
  void Push() {
    while (sent < kTotal) {
      const size_t size = static_cast<size_t>(std::min<uint64_t>(kPiece, kTotal - sent));
      piece.resize(size);
      for (size_t i = 0; i < size; ++i) piece[i] = ByteAt(sent + i);
      hash = Fnv1a64(piece, hash);
      sent += size;
      const bool more = connection->SendBody(piece);
      max_unsent = std::max(max_unsent, connection->unsent_bytes());
      if (!more) {
        ++blocked;
        return;  // OnRequestBodyDrained calls Push again
      }
    }
    connection->FinishBody();
    finished = true;
  }
};

class UploadTest : public UpstreamConnectionTest, public ::testing::WithParamInterface<bool> {};

TEST_P(UploadTest, TwentyMiBBodyPushedWithBackPressure) {
  const bool chunked = GetParam();
  MakePool();
  auto uploader = std::make_shared<Uploader>();
  Exchange& ex = NewExchange();
  ex.drained_hook = [uploader](UpstreamConnection&) { uploader->Push(); };
  const std::string head =
      chunked ? GetHead("/upload", "POST", "Transfer-Encoding: chunked\r\n")
              : GetHead("/upload", "POST",
                        "Content-Length: " + std::to_string(Uploader::kTotal) + "\r\n");
  loop_.Call([&] {
    const BodyFraming body = chunked ? BodyFraming{BodyKind::kChunked, 0}
                                     : BodyFraming{BodyKind::kContentLength, Uploader::kTotal};
    Start(ex, {head, body});
    uploader->connection = ex.connection;
    uploader->Push();
  });
  ASSERT_TRUE(WaitDone(ex, 60s));
  ASSERT_TRUE(ex.complete) << ex.Describe();
  loop_.Call([&] {
    EXPECT_TRUE(uploader->finished);
    EXPECT_GE(uploader->blocked, 1u);  // the upstream could not take 20 MiB at once
    const UpstreamConnectionOptions defaults;
    EXPECT_LE(uploader->max_unsent, defaults.send_high_water + Uploader::kPiece + 32);
  });
  EXPECT_EQ(ex.status, 200);
  EXPECT_EQ(ex.body, std::to_string(Uploader::kTotal) + " " + Hex16(uploader->hash) + "\n");
  EXPECT_EQ(ex.state_after, UpstreamConnection::State::kIdle);
}

INSTANTIATE_TEST_SUITE_P(Framing, UploadTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Chunked" : "ContentLength"; });

// --- Failures ------------------------------------------------------------------------------

TEST_F(UpstreamConnectionTest, ConnectRefusedFailsBeforeAnyByte) {
  // A port bound but not listening: connecting to it is refused.
  const int holder = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(holder, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(holder, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  socklen_t length = sizeof(address);
  getsockname(holder, reinterpret_cast<sockaddr*>(&address), &length);
  net::Endpoint refused = LoopbackEndpoint(upstream_.port());
  refused.port = ntohs(address.sin_port);

  UpstreamPool& pool = MakePool();
  Exchange& ex = NewExchange();
  loop_.Call([&] {
    ex.connection = &pool.Acquire(refused, ex);
    ex.connection->StartRequest(ex, {GetHead("/")});
  });
  ASSERT_TRUE(WaitDone(ex));
  close(holder);
  ASSERT_TRUE(ex.error) << ex.Describe();
  EXPECT_EQ(ex.error->kind, UpstreamErrorKind::kConnectFailed) << ex.error_detail;
  EXPECT_EQ(ex.error->error_number, ECONNREFUSED);
  EXPECT_FALSE(ex.error->response_started);
  EXPECT_FALSE(ex.error->timeout());
  EXPECT_EQ(ex.heads, 0);
  loop_.WaitFor([&] { return pool.open_count() == 0; });
  loop_.Call([&] { EXPECT_EQ(pool.open_count(), 0u); });
}

TEST_F(UpstreamConnectionTest, ConnectTimeoutWhenTheServerNeverAnswersTheSyn) {
  // A listener that never accepts, with a backlog of 0: once one connection waits in its
  // queue, Linux drops further SYNs, so a connect neither succeeds nor fails.
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(listener, 0), 0);
  socklen_t length = sizeof(address);
  getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
  std::vector<int> fillers;
  for (int i = 0; i < 3; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
    fillers.push_back(fd);
  }
  // The first filler's handshake completes into the queue; the others' SYNs are dropped.
  pollfd first{fillers[0], POLLOUT, 0};
  ASSERT_EQ(poll(&first, 1, 5000), 1);
  net::Endpoint silent = LoopbackEndpoint(upstream_.port());
  silent.port = ntohs(address.sin_port);

  UpstreamConnectionOptions options;
  options.timeouts.connect = 200ms;
  Exchange& ex = NewExchange(false);
  const auto started = SteadyTime::now();
  UpstreamConnection* c = Connect(ex, options, silent);
  loop_.Call([&] { c->StartRequest(ex, {GetHead("/")}); });
  ASSERT_TRUE(WaitDone(ex));
  for (int fd : fillers) close(fd);
  close(listener);
  ASSERT_TRUE(ex.error) << ex.Describe();
  EXPECT_EQ(ex.error->kind, UpstreamErrorKind::kConnectTimeout) << ex.error_detail;
  EXPECT_TRUE(ex.error->timeout());
  EXPECT_FALSE(ex.error->response_started);
  EXPECT_GE(ex.ended_at - started, 200ms);
}

TEST_F(UpstreamConnectionTest, ServerClosingWithoutAnsweringFailsBeforeAnyByte) {
  MakePool();
  Exchange& ex = Fetch(GetHead("/close"));
  ASSERT_TRUE(ex.error) << ex.Describe();
  EXPECT_EQ(ex.error->kind, UpstreamErrorKind::kClosed) << ex.error_detail;
  EXPECT_FALSE(ex.error->response_started);  // the proxy may retry an idempotent request
  EXPECT_FALSE(ex.error->reused);
  EXPECT_EQ(ex.heads, 0);
  loop_.WaitFor([&] { return pool_->open_count() == 0; });
  loop_.Call([&] { EXPECT_EQ(pool_->open_count(), 0u); });
}

TEST_F(UpstreamConnectionTest, ServerClosingMidBodyFailsAfterBytes) {
  MakePool();
  Exchange& ex = Fetch(GetHead("/close-mid-body"));
  ASSERT_TRUE(ex.error) << ex.Describe();
  EXPECT_EQ(ex.error->kind, UpstreamErrorKind::kClosed) << ex.error_detail;
  EXPECT_TRUE(ex.error->response_started);  // no retry: the client has seen a response
  EXPECT_EQ(ex.heads, 1);
  EXPECT_EQ(ex.status, 200);
  EXPECT_EQ(ex.body_length, 100000u);
  EXPECT_EQ(ex.body_bytes, 1000u);
  EXPECT_TRUE(MatchesPattern(0, ex.body));
  EXPECT_FALSE(ex.complete);
}

TEST_F(UpstreamConnectionTest, FirstByteTimeoutWhenTheUpstreamIsSlow) {
  UpstreamPool::Options options;
  options.connection.timeouts.first_byte = 200ms;
  MakePool(options);
  Exchange& ex = NewExchange();
  const auto started = SteadyTime::now();
  loop_.Call([&] { Start(ex, {GetHead("/delay/3000")}); });
  ASSERT_TRUE(WaitDone(ex));
  ASSERT_TRUE(ex.error) << ex.Describe();
  EXPECT_EQ(ex.error->kind, UpstreamErrorKind::kFirstByteTimeout) << ex.error_detail;
  EXPECT_TRUE(ex.error->timeout());
  EXPECT_FALSE(ex.error->response_started);
  EXPECT_GE(ex.ended_at - started, 200ms);
  EXPECT_EQ(ex.heads, 0);
}

TEST_F(UpstreamConnectionTest, IdleTimeoutWhenTheBodyStalls) {
  UpstreamPool::Options options;
  options.connection.timeouts.idle = 200ms;
  MakePool(options);
  Exchange& ex = NewExchange();
  loop_.Call([&] { Start(ex, {GetHead("/chunked/3/100?gap_ms=3000")}); });
  ASSERT_TRUE(WaitDone(ex));
  ASSERT_TRUE(ex.error) << ex.Describe();
  EXPECT_EQ(ex.error->kind, UpstreamErrorKind::kIdleTimeout) << ex.error_detail;
  EXPECT_TRUE(ex.error->response_started);
  EXPECT_EQ(ex.heads, 1);
  EXPECT_EQ(ex.body_bytes, 100u);
}

TEST_F(UpstreamConnectionTest, PausedReadingIsNotAnIdleTimeout) {
  UpstreamConnectionOptions options;
  options.timeouts.idle = 100ms;
  Exchange& ex = NewExchange(false);
  // The client stalls for three idle periods after the first piece.
  net::EventLoop& loop = loop_.loop();
  auto paused_once = std::make_shared<bool>(false);
  ex.keep_body = false;
  ex.body_hook = [paused_once, &loop](UpstreamConnection& c, std::string_view) {
    if (*paused_once) return;
    *paused_once = true;
    c.PauseReading();
    UpstreamConnection* connection = &c;
    loop.RunAt(loop.now() + 300ms, [connection] { connection->ResumeReading(); });
  };
  UpstreamConnection* c = Connect(ex, options);
  Exchange1(c, ex, GetHead("/bytes/1000000"));
  ASSERT_TRUE(ex.complete) << ex.Describe();
  EXPECT_EQ(ex.body_bytes, 1000000u);
}

// A small body arrives with its head, in one piece: the client pauses at that piece,
// which is the body's end, and the response completes when it resumes, with no byte
// left to parse (the fast head path frames the body itself; libhttp-parser kept its
// last byte pending).
TEST_F(UpstreamConnectionTest, PauseAtTheLastBodyByteCompletesOnResume) {
  MakePool();
  Exchange& ex = NewExchange();
  net::EventLoop& loop = loop_.loop();
  auto pauses = std::make_shared<int>(0);
  ex.body_hook = [pauses, &loop](UpstreamConnection& c, std::string_view) {
    ++*pauses;
    c.PauseReading();
    UpstreamConnection* connection = &c;
    loop.RunAt(loop.now() + 20ms, [connection] { connection->ResumeReading(); });
  };
  loop_.Call([&] { Start(ex, {GetHead("/bytes/1000")}); });
  ASSERT_TRUE(WaitDone(ex, 5s));
  ASSERT_TRUE(ex.complete) << ex.Describe();
  EXPECT_EQ(ex.body.size(), 1000u);
  loop_.Call([&] { EXPECT_GE(*pauses, 1); });
  EXPECT_EQ(ex.state_after, UpstreamConnection::State::kIdle);
}

// --- The pool and idle connections ---------------------------------------------------------

TEST_F(UpstreamConnectionTest, IdleConnectionClosedByTheServerIsNotReused) {
  UpstreamPool& pool = MakePool();
  Exchange& first = Fetch(GetHead("/"));
  ASSERT_TRUE(first.complete) << first.Describe();
  loop_.Call([&] { EXPECT_EQ(pool.idle_count(LoopbackEndpoint(upstream_.port())), 1u); });

  // A new upstream process on the same port; the old one's connections are gone.
  ASSERT_TRUE(upstream_.Restart("b")) << upstream_.error();
  // The loop sees the idle connection's end of input and drops it.
  EXPECT_TRUE(
      loop_.WaitFor([&] { return pool.idle_count(LoopbackEndpoint(upstream_.port())) == 0; }));

  Exchange& second = Fetch(GetHead("/"));
  ASSERT_TRUE(second.complete) << second.Describe();
  EXPECT_EQ(second.body, "b\n");
  EXPECT_EQ(second.state_at_acquire, UpstreamConnection::State::kConnecting);
  loop_.Call([&] {
    EXPECT_EQ(pool.stats().connects, 2u);
    EXPECT_EQ(pool.stats().closed_while_idle, 1u);
    EXPECT_EQ(pool.stats().reuses, 0u);
  });
}

TEST_F(UpstreamConnectionTest, IdleConnectionThatFailedThisTurnIsNotHandedOut) {
  UpstreamPool& pool = MakePool();
  Exchange& first = Fetch(GetHead("/"));
  ASSERT_TRUE(first.complete) << first.Describe();
  UpstreamConnection* idle = first.connection;
  // In one loop turn: the server is replaced, the idle connection reads its close (it
  // fails, and its report to the pool waits for the loop), then a request acquires a
  // connection to the same server. It must get a new one, not the failed one (this
  // aborted the process on a check before).
  Exchange& ex = NewExchange();
  loop_.Call([&] {
    ASSERT_TRUE(upstream_.Restart("b")) << upstream_.error();
    pollfd p{idle->fd(), POLLIN | POLLRDHUP, 0};
    ASSERT_EQ(poll(&p, 1, 5000), 1);
    idle->OnIoEvent(EPOLLIN);
    ASSERT_TRUE(idle->closed());
    Start(ex, {GetHead("/")});
  });
  ASSERT_TRUE(WaitDone(ex));
  ASSERT_TRUE(ex.complete) << ex.Describe();
  EXPECT_EQ(ex.body, "b\n");
  EXPECT_EQ(ex.state_at_acquire, UpstreamConnection::State::kConnecting);
  loop_.Call([&] {
    EXPECT_EQ(pool.stats().connects, 2u);
    EXPECT_EQ(pool.stats().closed_while_idle, 1u);
    EXPECT_EQ(pool.stats().reuses, 0u);
  });
}

TEST_F(UpstreamConnectionTest, IdleConnectionClosedAsTheRequestGoesOutFailsRetriably) {
  UpstreamPool& pool = MakePool();
  Exchange& first = Fetch(GetHead("/"));
  ASSERT_TRUE(first.complete) << first.Describe();
  // The upstream dies and the request goes out on the pooled connection in the same loop
  // turn, before the loop can notice: the race every keep-alive pool has.
  Exchange& ex = NewExchange();
  loop_.Call([&] {
    upstream_.Kill();
    Start(ex, {GetHead("/")});
  });
  ASSERT_TRUE(WaitDone(ex));
  ASSERT_TRUE(ex.error) << ex.Describe();
  EXPECT_TRUE(ex.error->kind == UpstreamErrorKind::kClosed ||
              ex.error->kind == UpstreamErrorKind::kReset)
      << ex.error_detail;
  EXPECT_FALSE(ex.error->response_started);
  EXPECT_TRUE(ex.error->reused);
  EXPECT_EQ(ex.state_at_acquire, UpstreamConnection::State::kIdle);
  loop_.Call([&] { EXPECT_EQ(pool.stats().reuses, 1u); });
}

TEST_F(UpstreamConnectionTest, PoolBoundHonouredAndLeastRecentlyUsedEvicted) {
  UpstreamPool::Options options;
  options.max_idle_per_server = 4;
  options.surplus_linger = 200ms;
  UpstreamPool& pool = MakePool(options);
  // Six requests at once need six connections.
  std::vector<Exchange*> batch;
  for (int i = 0; i < 6; ++i) batch.push_back(&NewExchange());
  loop_.Call([&] {
    for (Exchange* ex : batch) Start(*ex, {GetHead("/delay/50")});
  });
  ASSERT_TRUE(loop_.WaitFor([&] {
    for (Exchange* ex : batch) {
      if (!ex->done()) return false;
    }
    return true;
  }));
  for (Exchange* ex : batch) ASSERT_TRUE(ex->complete) << ex->Describe();
  // All six wait idle for a moment (a burst's surplus), then the two least recently
  // used beyond the bound are closed.
  loop_.Call([&] {
    EXPECT_EQ(pool.stats().connects, 6u);
    EXPECT_EQ(pool.idle_count(LoopbackEndpoint(upstream_.port())), 6u);
    EXPECT_EQ(pool.stats().evicted, 0u);
  });
  ASSERT_TRUE(
      loop_.WaitFor([&] { return pool.idle_count(LoopbackEndpoint(upstream_.port())) == 4u; }));
  loop_.Call([&] {
    EXPECT_EQ(pool.stats().evicted, 2u);
    EXPECT_EQ(pool.open_count(), 4u);
  });
  // Four more, one after the other, reuse what is idle.
  for (int i = 0; i < 4; ++i) {
    Exchange& ex = Fetch(GetHead("/"));
    ASSERT_TRUE(ex.complete) << ex.Describe();
    EXPECT_EQ(ex.state_at_acquire, UpstreamConnection::State::kIdle);
  }
  loop_.Call([&] { EXPECT_EQ(pool.stats().connects, 6u); });
}

TEST_F(UpstreamConnectionTest, PoolSurplusBeyondFourTimesTheBoundIsClosedAtOnce) {
  UpstreamPool::Options options;
  options.max_idle_per_server = 1;
  options.surplus_linger = 60s;  // nothing lingers out during the test
  UpstreamPool& pool = MakePool(options);
  std::vector<Exchange*> batch;
  for (int i = 0; i < 6; ++i) batch.push_back(&NewExchange());
  loop_.Call([&] {
    for (Exchange* ex : batch) Start(*ex, {GetHead("/delay/50")});
  });
  ASSERT_TRUE(loop_.WaitFor([&] {
    for (Exchange* ex : batch) {
      if (!ex->done()) return false;
    }
    return true;
  }));
  loop_.Call([&] {
    EXPECT_EQ(pool.idle_count(LoopbackEndpoint(upstream_.port())), 4u);
    EXPECT_EQ(pool.stats().evicted, 2u);
  });
}

TEST_F(UpstreamConnectionTest, PoolReusesTheMostRecentlyReleasedConnection) {
  UpstreamPool& pool = MakePool();
  Exchange& slow = NewExchange();
  Exchange& fast = NewExchange();
  loop_.Call([&] {
    Start(slow, {GetHead("/delay/100")});
    Start(fast, {GetHead("/")});
  });
  ASSERT_TRUE(WaitDone(slow));
  ASSERT_TRUE(WaitDone(fast));
  ASSERT_TRUE(slow.complete && fast.complete);
  Exchange& next = Fetch(GetHead("/"));
  EXPECT_EQ(next.connection, slow.connection);  // released last
  loop_.Call([&] { EXPECT_EQ(pool.stats().connects, 2u); });
}

TEST_F(UpstreamConnectionTest, ZeroIdleBoundClosesEveryConnection) {
  UpstreamPool::Options options;
  options.max_idle_per_server = 0;
  UpstreamPool& pool = MakePool(options);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Fetch(GetHead("/")).complete);
  loop_.WaitFor([&] { return pool.open_count() == 0; });
  loop_.Call([&] {
    EXPECT_EQ(pool.stats().connects, 3u);
    EXPECT_EQ(pool.idle_count(), 0u);
    EXPECT_EQ(pool.open_count(), 0u);
  });
}

// --- Response heads the test upstream never sends ------------------------------------------

TEST_F(UpstreamConnectionTest, LargeInterimAndFinalHeadsCrossTheReadBuffer) {
  // 20 KiB of 103 Early Hints, then a 50 KiB final head: the read buffer fills in the
  // middle of the final head, which moves to the front so the head stays whole.
  ScriptedServer server("HTTP/1.1 103 Early Hints\r\n" + BigHeaders(20, 1000) + "\r\n" +
                        "HTTP/1.1 200 OK\r\n" + BigHeaders(50, 1000) +
                        "Content-Length: 5\r\n\r\nhello");
  Exchange& ex = NewExchange(false);
  UpstreamConnection* c = Connect(ex, {}, server.endpoint());
  Exchange1(c, ex, GetHead("/"));
  ASSERT_TRUE(ex.complete) << ex.Describe();
  EXPECT_EQ(ex.heads, 1);
  EXPECT_EQ(ex.status, 200);
  ASSERT_EQ(ex.headers.size(), 51u);
  EXPECT_EQ(ex.Header("X-Big-0"), std::string(1000, 'a'));
  EXPECT_EQ(ex.Header("X-Big-49"), std::string(1000, 'a' + 49 % 26));
  EXPECT_EQ(ex.body, "hello");
  EXPECT_EQ(ex.state_after, UpstreamConnection::State::kIdle);
}

TEST_F(UpstreamConnectionTest, ResponseHeadLargerThanTheReadBufferIsAProtocolError) {
  ScriptedServer server("HTTP/1.1 200 OK\r\n" + BigHeaders(70, 1000) + "Content-Length: 0\r\n\r\n");
  Exchange& ex = NewExchange(false);
  UpstreamConnection* c = Connect(ex, {}, server.endpoint());
  Exchange1(c, ex, GetHead("/"));
  ASSERT_TRUE(ex.error) << ex.Describe();
  EXPECT_EQ(ex.error->kind, UpstreamErrorKind::kProtocol) << ex.error_detail;
  EXPECT_TRUE(ex.error->response_started);
  EXPECT_EQ(ex.heads, 0);
}

TEST_F(UpstreamConnectionTest, SwitchingProtocolsIsAProtocolError) {
  ScriptedServer server(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
  Exchange& ex = NewExchange(false);
  UpstreamConnection* c = Connect(ex, {}, server.endpoint());
  Exchange1(c, ex, GetHead("/"));
  ASSERT_TRUE(ex.error) << ex.Describe();
  EXPECT_EQ(ex.error->kind, UpstreamErrorKind::kProtocol) << ex.error_detail;
  EXPECT_EQ(ex.heads, 0);
}

TEST_F(UpstreamConnectionTest, Http10ResponseClosesTheConnectionWhateverItSays) {
  ScriptedServer server("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok");
  Exchange& ex = NewExchange(false);
  UpstreamConnection* c = Connect(ex, {}, server.endpoint());
  Exchange1(c, ex, GetHead("/"));
  ASSERT_TRUE(ex.complete) << ex.Describe();
  EXPECT_EQ(ex.body, "ok");
  EXPECT_FALSE(ex.keep_alive);
  EXPECT_EQ(ex.state_after, UpstreamConnection::State::kClosed);
}

TEST_F(UpstreamConnectionTest, StrayBytesAfterTheResponseCloseTheConnection) {
  ScriptedServer server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA");
  Exchange& ex = NewExchange(false);
  UpstreamConnection* c = Connect(ex, {}, server.endpoint());
  Exchange1(c, ex, GetHead("/"));
  ASSERT_TRUE(ex.complete) << ex.Describe();
  EXPECT_EQ(ex.body, "ok");
  EXPECT_EQ(ex.state_after, UpstreamConnection::State::kClosed);  // not reused
}

// --- Allocation ----------------------------------------------------------------------------

// Runs requests back to back on the loop thread alone: each completion gives the
// connection back and starts the next request, as a busy proxy would.
struct Repeater final : UpstreamConnection::Handler {
  UpstreamPool* pool = nullptr;
  net::Endpoint server;
  std::string head;
  int remaining = 0;
  int measured = 0;  // the last `measured` requests are counted
  uint64_t allocations_before = 0;
  uint64_t allocations_after = 0;
  uint64_t body_bytes = 0;
  std::optional<UpstreamError> error;
  std::promise<void> finished;

  void Next() {
    UpstreamConnection& c = pool->Acquire(server, *this);
    c.StartRequest(*this, {head});
  }
  void OnResponseHead(UpstreamConnection&, const ResponseHead&) override {}
  void OnResponseBody(UpstreamConnection&, std::string_view bytes) override {
    body_bytes += bytes.size();
  }
  void OnResponseComplete(UpstreamConnection& c) override {
    pool->Release(c);
    if (--remaining == measured) allocations_before = sluice::testing::AllocationCount();
    if (remaining == 0) {
      allocations_after = sluice::testing::AllocationCount();
      finished.set_value();
      return;
    }
    Next();
  }
  void OnRequestBodyDrained(UpstreamConnection&) override {}
  void OnUpstreamError(UpstreamConnection& c, const UpstreamError& e) override {
    error = e;
    pool->Release(c);
    finished.set_value();
  }
};

TEST_F(UpstreamConnectionTest, NoAllocationPerRequestOnceWarm) {
  UpstreamPool& pool = MakePool();
  auto repeater = std::make_shared<Repeater>();
  repeater->pool = &pool;
  repeater->server = LoopbackEndpoint(upstream_.port());
  repeater->head = GetHead("/bytes/20000");
  repeater->remaining = 120;
  repeater->measured = 100;
  std::future<void> finished = repeater->finished.get_future();
  loop_.Call([&] { repeater->Next(); });
  // The test thread only waits (allocating nothing) while the loop thread runs them all.
  ASSERT_EQ(finished.wait_for(30s), std::future_status::ready);
  loop_.Call([&] {
    ASSERT_FALSE(repeater->error) << repeater->error->detail;
    EXPECT_EQ(repeater->body_bytes, 120u * 20000u);
    EXPECT_EQ(repeater->allocations_after - repeater->allocations_before, 0u);
    EXPECT_EQ(pool.stats().connects, 1u);
  });
}

}  // namespace
}  // namespace sluice::http
