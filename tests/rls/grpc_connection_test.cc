// GrpcConnection (src/rls/grpc_connection.h): Envoy's ShouldRateLimit over one h2c
// connection, as a gRPC client sees it on the wire.
//
// How: the connection runs on an EventLoop on its own thread (testing::LoopThread),
// serving the server end of a real TCP loopback connection; the test thread speaks
// HTTP/2 to it with a small blocking libnghttp2 client that can send what gRPC clients
// never send (any header fields, any DATA bytes) and records, per stream, the response
// header fields, DATA, trailers, RST_STREAM and, per connection, GOAWAY and the end of
// the byte stream. Every wait is bounded (kWait), so a broken server fails a test
// instead of hanging it.
//
// The decider counts in a memory store at a fixed wall-clock time, so every figure is
// exact. The store-is-slow cases use DeferredStoreAccess, which keeps the decider's
// work until the test runs it on the loop: a seam fake standing in for a worker's Redis
// store (which answers later, on the same loop), not a model of Redis.
#include "rls/grpc_connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "rls/ratelimit_config.h"
#include "rls/rls_service.h"
#include "sluice/clock.h"
#include "store/memory_store.h"
#include "testing/loop_thread.h"

namespace sluice::rls {
namespace {

using envoy::service::ratelimit::v3::RateLimitRequest;
using envoy::service::ratelimit::v3::RateLimitResponse;
using namespace std::chrono_literals;

// The longest any one wait for the server may take.
constexpr std::chrono::milliseconds kWait = 5s;

constexpr std::string_view kConfig = R"(domain: test
descriptors:
  - key: client
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: bulk
    rate_limit: {unit: minute, requests_per_unit: 150}
)";

// --- gRPC messages --------------------------------------------------------------------

// A gRPC length-prefixed message: the flags byte, a 4-byte big-endian length (by
// default the payload's), then the payload.
std::string GrpcFrame(std::string_view payload, uint8_t flags = 0,
                      std::optional<uint32_t> claimed_length = std::nullopt) {
  const uint32_t length = claimed_length.value_or(static_cast<uint32_t>(payload.size()));
  std::string framed;
  framed += static_cast<char>(flags);
  framed += static_cast<char>(length >> 24);
  framed += static_cast<char>(length >> 16);
  framed += static_cast<char>(length >> 8);
  framed += static_cast<char>(length);
  framed.append(payload);
  return framed;
}

RateLimitRequest LimitRequest(std::string key, std::string value, std::string domain = "test") {
  RateLimitRequest request;
  request.set_domain(std::move(domain));
  auto* entry = request.add_descriptors()->add_entries();
  entry->set_key(std::move(key));
  entry->set_value(std::move(value));
  return request;
}

std::string GrpcMessage(const RateLimitRequest& request) {
  return GrpcFrame(request.SerializeAsString());
}

// The response DATA as exactly one uncompressed RateLimitResponse, or nullopt.
std::optional<RateLimitResponse> ParseGrpcResponse(std::string_view data) {
  if (data.size() < 5 || data[0] != 0) return std::nullopt;
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  const size_t length = (size_t{p[1]} << 24) | (size_t{p[2]} << 16) | (size_t{p[3]} << 8) | p[4];
  if (5 + length != data.size()) return std::nullopt;
  RateLimitResponse response;
  if (!response.ParseFromArray(data.data() + 5, static_cast<int>(length))) return std::nullopt;
  return response;
}

// --- A blocking HTTP/2 client ---------------------------------------------------------

// A request: its header fields in order (pseudo-header fields included) and its body
// (nullopt: the HEADERS frame ends the stream; otherwise DATA frames, possibly empty).
struct H2Request {
  std::vector<std::pair<std::string, std::string>> fields;
  std::optional<std::string> body;

  // A copy with `name` set to `value` (replacing the field of that name, if any).
  H2Request With(std::string_view name, std::string value) const {
    H2Request copy = *this;
    for (auto& [n, v] : copy.fields) {
      if (n == name) {
        v = std::move(value);
        return copy;
      }
    }
    copy.fields.emplace_back(name, std::move(value));
    return copy;
  }
};

// A ShouldRateLimit call as gRPC clients make it, with `body` as its DATA.
H2Request GrpcCall(std::optional<std::string> body) {
  return H2Request{{{":method", "POST"},
                    {":scheme", "http"},
                    {":authority", "sluice.test"},
                    {":path", std::string(GrpcConnection::kPath)},
                    {"content-type", "application/grpc"},
                    {"te", "trailers"}},
                   std::move(body)};
}

// What the client saw of one stream.
struct StreamResult {
  std::map<std::string, std::string> headers;   // the response's first header block
  std::map<std::string, std::string> trailers;  // a second header block
  std::string data;
  bool trailers_only = false;         // the response's HEADERS frame ended the stream
  std::optional<uint32_t> rst_error;  // a RST_STREAM received
  bool closed = false;
  uint32_t close_error = 0;

  std::string header(const std::string& name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  std::string trailer(const std::string& name) const {
    const auto it = trailers.find(name);
    return it == trailers.end() ? "" : it->second;
  }
};

std::string Describe(const StreamResult& r) {
  std::ostringstream out;
  out << "{closed=" << r.closed << " close_error=" << r.close_error
      << " trailers_only=" << r.trailers_only
      << " rst=" << (r.rst_error ? std::to_string(*r.rst_error) : "none") << " headers={";
  for (const auto& [n, v] : r.headers) out << n << ": " << v.substr(0, 100) << "; ";
  out << "} data=" << r.data.size() << " bytes trailers={";
  for (const auto& [n, v] : r.trailers) out << n << ": " << v.substr(0, 100) << "; ";
  out << "}}";
  return out.str();
}

// Counts the frames the server sent per stream, from the raw bytes (independently of
// nghttp2, which drops frames on streams it has closed without telling).
class FrameCounter {
 public:
  void Feed(const uint8_t* bytes, size_t length) {
    while (length > 0) {
      if (skip_ > 0) {
        const size_t n = std::min(skip_, length);
        skip_ -= n;
        bytes += n;
        length -= n;
        continue;
      }
      const size_t n = std::min(kHeaderBytes - header_.size(), length);
      header_.insert(header_.end(), bytes, bytes + n);
      bytes += n;
      length -= n;
      if (header_.size() < kHeaderBytes) break;
      skip_ = (size_t{header_[0]} << 16) | (size_t{header_[1]} << 8) | header_[2];
      const int32_t stream = static_cast<int32_t>(((uint32_t{header_[5]} & 0x7f) << 24) |
                                                  (uint32_t{header_[6]} << 16) |
                                                  (uint32_t{header_[7]} << 8) | header_[8]);
      ++frames_[stream];
      header_.clear();
    }
  }
  int FramesOn(int32_t stream) const {
    const auto it = frames_.find(stream);
    return it == frames_.end() ? 0 : it->second;
  }

 private:
  static constexpr size_t kHeaderBytes = 9;
  std::vector<uint8_t> header_;
  size_t skip_ = 0;
  std::map<int32_t, int> frames_;
};

// An nghttp2 client session over a connected TCP socket, driven from the test thread:
// Submit queues a request, RunUntil moves bytes both ways until a condition holds.
class H2Client {
 public:
  explicit H2Client(int fd) : fd_(fd) {
    fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
    nghttp2_session_callbacks* callbacks = nullptr;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, &OnHeader);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &OnDataChunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &OnFrameReceived);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &OnStreamClose);
    nghttp2_session_client_new(&session_, callbacks, this);
    nghttp2_session_callbacks_del(callbacks);
    // The client preface (the magic, which nghttp2 sends itself, and SETTINGS).
    const nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  }
  ~H2Client() {
    nghttp2_session_del(session_);
    if (fd_ >= 0) close(fd_);
  }
  H2Client(const H2Client&) = delete;
  H2Client& operator=(const H2Client&) = delete;

  int32_t Submit(const H2Request& request) {
    std::vector<nghttp2_nv> nva;
    for (const auto& [name, value] : request.fields) {
      nva.push_back(nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                               reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())),
                               name.size(), value.size(), NGHTTP2_NV_FLAG_NONE});
    }
    nghttp2_data_provider provider{};
    if (request.body) {
      bodies_.push_back(std::make_unique<Body>(Body{*request.body, 0}));
      provider.source.ptr = bodies_.back().get();
      provider.read_callback = &ReadBody;
    }
    const int32_t id = nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(),
                                              request.body ? &provider : nullptr, nullptr);
    if (id > 0) streams_[id];
    return id;
  }

  void Reset(int32_t id, uint32_t error_code) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, error_code);
  }

  // Moves bytes until `condition` holds (true), or kWait passes or the connection ends
  // without it (false).
  bool RunUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout = kWait) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!condition()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      // Short polls: `condition` may depend on more than this socket (the loop's state).
      if (left <= 0ms || !Pump(static_cast<int>(std::min<int64_t>(left.count(), 10)) + 1)) {
        return condition();
      }
    }
    return true;
  }

  bool WaitClosed(int32_t id) {
    return RunUntil([&] { return streams_[id].closed; });
  }

  // One request, answered (or not, which fails the test) within kWait.
  StreamResult Call(const H2Request& request) {
    const int32_t id = Submit(request);
    if (id <= 0) {
      ADD_FAILURE() << "nghttp2_submit_request: " << nghttp2_strerror(id);
      return {};
    }
    if (!WaitClosed(id))
      ADD_FAILURE() << "stream " << id << " not closed: " << Describe(result(id));
    return result(id);
  }

  // A PING answered: every frame sent before it has been processed by the server.
  bool RoundTrip() {
    const int acks = ping_acks_;
    nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr);
    return RunUntil([&] { return ping_acks_ > acks; });
  }

  // A PING sent, its answer not awaited.
  bool SendPing() {
    nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr);
    return RunUntil(
        [&] { return !nghttp2_session_want_write(session_) && out_sent_ == out_.size(); });
  }

  // Until the server ends the connection (a FIN or a reset).
  bool WaitForServerClose() {
    return RunUntil([&] { return end_ != End::kOpen; });
  }

  void CloseSocket() {
    close(fd_);
    fd_ = -1;
  }

  const StreamResult& result(int32_t id) { return streams_[id]; }
  bool goaway_received() const { return goaway_received_; }
  int32_t goaway_last_stream_id() const { return goaway_last_stream_id_; }
  uint32_t goaway_error() const { return goaway_error_; }
  bool ended_with_fin() const { return end_ == End::kFin; }
  int FramesOn(int32_t stream) const { return frames_.FramesOn(stream); }
  // nghttp2's verdict on what the server sent (0: it kept HTTP/2's rules).
  int session_error() const { return session_error_; }

 private:
  struct Body {
    std::string bytes;
    size_t sent;
  };
  enum class End { kOpen, kFin, kReset };

  // One poll: sends what the session has, receives what the server sent. False when no
  // progress is possible any more.
  bool Pump(int timeout_ms) {
    if (fd_ < 0 || session_error_ != 0) return false;
    for (;;) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n <= 0) break;
      out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    const bool sending = out_sent_ < out_.size();
    if (end_ != End::kOpen && !sending) return false;
    pollfd p{fd_, static_cast<short>((end_ == End::kOpen ? POLLIN : 0) | (sending ? POLLOUT : 0)),
             0};
    if (poll(&p, 1, timeout_ms) <= 0) return true;
    if (p.revents & POLLOUT) {
      const ssize_t n = send(fd_, out_.data() + out_sent_, out_.size() - out_sent_, MSG_NOSIGNAL);
      if (n > 0) out_sent_ += static_cast<size_t>(n);
      if (n < 0 && errno != EAGAIN && errno != EINTR) out_sent_ = out_.size();  // gone
      if (out_sent_ == out_.size()) {
        out_.clear();
        out_sent_ = 0;
      }
    }
    if (end_ == End::kOpen && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
      uint8_t buffer[64 * 1024];
      const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n == 0) {
        end_ = End::kFin;
        shutdown(fd_, SHUT_WR);  // and closes its own side, as a client does on a FIN
      } else if (n < 0) {
        if (errno != EAGAIN && errno != EINTR) end_ = End::kReset;
      } else {
        frames_.Feed(buffer, static_cast<size_t>(n));
        const ssize_t used = nghttp2_session_mem_recv(session_, buffer, static_cast<size_t>(n));
        if (used < 0) session_error_ = static_cast<int>(used);
      }
    }
    return true;
  }

  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buffer, size_t length,
                          uint32_t* data_flags, nghttp2_data_source* source, void*) {
    auto* body = static_cast<Body*>(source->ptr);
    const size_t n = std::min(length, body->bytes.size() - body->sent);
    std::memcpy(buffer, body->bytes.data() + body->sent, n);
    body->sent += n;
    if (body->sent == body->bytes.size()) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t name_length, const uint8_t* value, size_t value_length, uint8_t,
                      void* user) {
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    StreamResult& r = static_cast<H2Client*>(user)->streams_[frame->hd.stream_id];
    auto& fields = frame->headers.cat == NGHTTP2_HCAT_RESPONSE ? r.headers : r.trailers;
    fields[std::string(reinterpret_cast<const char*>(name), name_length)] =
        std::string(reinterpret_cast<const char*>(value), value_length);
    return 0;
  }

  static int OnDataChunk(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                         size_t length, void* user) {
    static_cast<H2Client*>(user)->streams_[stream_id].data.append(
        reinterpret_cast<const char*>(data), length);
    return 0;
  }

  static int OnFrameReceived(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    auto* client = static_cast<H2Client*>(user);
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
        if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE &&
            (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
          client->streams_[frame->hd.stream_id].trailers_only = true;
        }
        break;
      case NGHTTP2_RST_STREAM:
        client->streams_[frame->hd.stream_id].rst_error = frame->rst_stream.error_code;
        break;
      case NGHTTP2_GOAWAY:
        client->goaway_received_ = true;
        client->goaway_last_stream_id_ = frame->goaway.last_stream_id;
        client->goaway_error_ = frame->goaway.error_code;
        break;
      case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) ++client->ping_acks_;
        break;
      default:
        break;
    }
    return 0;
  }

  static int OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user) {
    StreamResult& r = static_cast<H2Client*>(user)->streams_[stream_id];
    r.closed = true;
    r.close_error = error_code;
    return 0;
  }

  int fd_;
  nghttp2_session* session_ = nullptr;
  std::string out_;
  size_t out_sent_ = 0;
  End end_ = End::kOpen;
  int session_error_ = 0;
  std::vector<std::unique_ptr<Body>> bodies_;
  std::map<int32_t, StreamResult> streams_;
  FrameCounter frames_;
  bool goaway_received_ = false;
  int32_t goaway_last_stream_id_ = -1;
  uint32_t goaway_error_ = 0;
  int ping_acks_ = 0;
};

// --- Checks ---------------------------------------------------------------------------

// A gRPC error as gRPC servers send it: one HEADERS frame ending the stream, with
// :status 200, grpc-status and grpc-message, and no DATA.
::testing::AssertionResult IsTrailersOnlyError(const StreamResult& r, std::string_view status,
                                               std::string_view message) {
  if (r.closed && !r.rst_error && r.close_error == NGHTTP2_NO_ERROR && r.trailers_only &&
      r.data.empty() && r.trailers.empty() && r.header(":status") == "200" &&
      r.header("content-type") == "application/grpc" && r.header("grpc-status") == status &&
      r.header("grpc-message") == message) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "expected a trailers-only grpc-status " << status << " grpc-message \"" << message
         << "\", got " << Describe(r);
}

// A complete answer: :status 200, one message, then trailers with grpc-status 0.
::testing::AssertionResult IsAnswered(const StreamResult& r) {
  if (r.closed && !r.rst_error && r.close_error == NGHTTP2_NO_ERROR && !r.trailers_only &&
      r.header(":status") == "200" && r.header("content-type") == "application/grpc" &&
      !r.headers.contains("grpc-status") && r.trailer("grpc-status") == "0" &&
      !r.trailers.contains("grpc-message") && ParseGrpcResponse(r.data)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "expected an answer with grpc-status 0, got " << Describe(r);
}

// The answer for one descriptor of the `client` limit (3 a minute).
void ExpectClientLimitAnswer(const StreamResult& r, uint32_t remaining,
                             RateLimitResponse::Code code) {
  ASSERT_TRUE(IsAnswered(r));
  const RateLimitResponse response = *ParseGrpcResponse(r.data);
  EXPECT_EQ(response.overall_code(), code);
  ASSERT_EQ(response.statuses_size(), 1);
  const auto& status = response.statuses(0);
  EXPECT_EQ(status.code(), code);
  EXPECT_EQ(status.limit_remaining(), remaining);
  EXPECT_EQ(status.current_limit().requests_per_unit(), 3u);
  EXPECT_EQ(status.current_limit().unit(), RateLimitResponse::RateLimit::MINUTE);
  EXPECT_EQ(status.duration_until_reset().seconds(), 60);
}

// --- The store that answers later -----------------------------------------------------

// Keeps the decider's store work until RunHeld (on the loop thread, as a worker's Redis
// store answers on its loop).
class DeferredStoreAccess final : public RlsStoreAccess {
 public:
  DeferredStoreAccess(Store& store, const Clock& clock) : store_(store), clock_(clock) {}
  void Run(std::function<void(Store& store, Timestamp now)> work) override {
    held_.push_back(std::move(work));
  }
  bool Decides(const Limit&) const override { return true; }

  // Loop thread only, all three.
  size_t held() const { return held_.size(); }
  void RunHeld() {
    std::vector<std::function<void(Store&, Timestamp)>> works;
    works.swap(held_);
    for (auto& work : works) work(store_, clock_.Now());
  }
  void DropHeld() { held_.clear(); }

 private:
  Store& store_;
  const Clock& clock_;
  std::vector<std::function<void(Store&, Timestamp)>> held_;
};

// --- The fixture ----------------------------------------------------------------------

class GrpcConnectionTest : public ::testing::Test, public GrpcConnectionOwner {
 protected:
  void SetUp() override {
    const Source source{kConfig, "test.yaml"};
    LoadResult loaded = RateLimitConfig::Load(std::span<const Source>(&source, 1));
    ASSERT_TRUE(loaded.errors.empty()) << loaded.errors[0].ToString();
    decider_.SetConfig(loaded.config);

    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(listen_fd_, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    ASSERT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    ASSERT_EQ(listen(listen_fd_, 4), 0);
    socklen_t length = sizeof(listen_address_);
    ASSERT_EQ(getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&listen_address_), &length), 0);
  }

  void TearDown() override {
    if (client_ != nullptr) {
      EXPECT_EQ(client_->session_error(), 0) << "the server broke HTTP/2";
    }
    loop_.Call([&] {
      deferred_access_.DropHeld();
      if (connection_ != nullptr) {
        connection_->Close();
        delete connection_;
        connection_ = nullptr;
      }
    });
    client_.reset();
    loop_.Stop();
    if (listen_fd_ >= 0) close(listen_fd_);
  }

  // Connects to the listening socket and serves the accepted end with a GrpcConnection
  // made on the loop, deciding through `access`. Returns the client's socket.
  int ConnectRaw(RlsStoreAccess& access,
                 GrpcConnection::Timeouts timeouts = GrpcConnection::Timeouts{}) {
    const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(connect(client, reinterpret_cast<const sockaddr*>(&listen_address_),
                      sizeof(listen_address_)),
              0);
    const int server = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    EXPECT_GE(server, 0);
    server_fd_ = server;
    const int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    loop_.Call([&] {
      connection_ = new GrpcConnection(loop_.loop(), server, decider_, access, *this, timeouts);
      connection_->Start();
    });
    return client;
  }
  void Connect(RlsStoreAccess& access) { client_ = std::make_unique<H2Client>(ConnectRaw(access)); }

  // GrpcConnectionOwner (on the loop thread). The connection is deleted at TearDown.
  void OnGrpcConnectionDone(GrpcConnection& connection) override {
    EXPECT_EQ(&connection, connection_);
    done_calls_.fetch_add(1);
  }

  size_t HeldByStore() {
    return loop_.Call([&] { return deferred_access_.held(); });
  }
  // Moves the client's bytes until the store holds `calls` calls.
  bool WaitUntilHeldByStore(size_t calls) {
    return client_->RunUntil([&] { return HeldByStore() == calls; });
  }
  void RunHeldStoreWork() {
    loop_.Call([&] { deferred_access_.RunHeld(); });
  }

  // On a whole hour: the minute windows start there, so remaining counts are exact.
  ManualClock wall_clock_{Timestamp{} + 1000h};
  store::MemoryStore store_{store::MemoryStore::Options{}};
  InlineStoreAccess inline_access_{store_, wall_clock_};
  DeferredStoreAccess deferred_access_{store_, wall_clock_};
  RlsDecider decider_{inline_access_, wall_clock_};
  sluice::testing::LoopThread loop_{kWait};

  int listen_fd_ = -1;
  sockaddr_in listen_address_{};
  int server_fd_ = -1;                    // the connection's socket
  GrpcConnection* connection_ = nullptr;  // used on the loop thread only
  std::atomic<int> done_calls_{0};
  std::unique_ptr<H2Client> client_;
};

// --- Tests ----------------------------------------------------------------------------

TEST_F(GrpcConnectionTest, AnswersShouldRateLimitWithOneMessageThenGrpcStatusOk) {
  Connect(inline_access_);
  const H2Request call = GrpcCall(GrpcMessage(LimitRequest("client", "alice")));
  for (const uint32_t remaining : {2u, 1u, 0u}) {
    SCOPED_TRACE(remaining);
    ExpectClientLimitAnswer(client_->Call(call), remaining, RateLimitResponse::OK);
  }
  ExpectClientLimitAnswer(client_->Call(call), 0, RateLimitResponse::OVER_LIMIT);
  // Another value of the key is another counter.
  ExpectClientLimitAnswer(client_->Call(GrpcCall(GrpcMessage(LimitRequest("client", "bob")))), 2,
                          RateLimitResponse::OK);
}

TEST_F(GrpcConnectionTest, AnswersTwoHundredConcurrentCallsOnOneConnection) {
  Connect(inline_access_);
  constexpr int kCalls = 200;  // on a limit of 150 a minute
  const H2Request call = GrpcCall(GrpcMessage(LimitRequest("bulk", "shared")));
  std::vector<int32_t> ids;
  for (int i = 0; i < kCalls; ++i) {
    ids.push_back(client_->Submit(call));
    ASSERT_GT(ids.back(), 0);
  }
  ASSERT_TRUE(client_->RunUntil([&] {
    return std::all_of(ids.begin(), ids.end(),
                       [&](int32_t id) { return client_->result(id).closed; });
  }));
  std::multiset<uint32_t> ok_remaining;
  int over_limit = 0;
  for (const int32_t id : ids) {
    const StreamResult& r = client_->result(id);
    ASSERT_TRUE(IsAnswered(r)) << "stream " << id;
    const RateLimitResponse response = *ParseGrpcResponse(r.data);
    ASSERT_EQ(response.statuses_size(), 1);
    if (response.overall_code() == RateLimitResponse::OK) {
      ok_remaining.insert(response.statuses(0).limit_remaining());
    } else {
      EXPECT_EQ(response.overall_code(), RateLimitResponse::OVER_LIMIT);
      EXPECT_EQ(response.statuses(0).limit_remaining(), 0u);
      ++over_limit;
    }
  }
  std::multiset<uint32_t> expected;
  for (uint32_t i = 0; i < 150; ++i) expected.insert(i);
  EXPECT_EQ(ok_remaining, expected);  // 149 down to 0, each once
  EXPECT_EQ(over_limit, kCalls - 150);
}

TEST_F(GrpcConnectionTest, AnswersAnotherMethodTrailersOnlyUnimplemented) {
  Connect(inline_access_);
  const H2Request call = GrpcCall(GrpcMessage(LimitRequest("client", "alice")))
                             .With(":path", "/envoy.service.ratelimit.v3.RateLimitService/Other");
  const int32_t id = client_->Submit(call);
  ASSERT_TRUE(client_->WaitClosed(id));
  EXPECT_TRUE(IsTrailersOnlyError(client_->result(id), "12", "unknown method"));
  EXPECT_EQ(client_->FramesOn(id), 1) << "one HEADERS frame, nothing else";
}

TEST_F(GrpcConnectionTest, AnswersHttpStatusForRequestsThatAreNotGrpc) {
  Connect(inline_access_);
  const H2Request call = GrpcCall(GrpcMessage(LimitRequest("client", "alice")));

  const StreamResult text = client_->Call(call.With("content-type", "text/plain"));
  EXPECT_EQ(text.header(":status"), "415") << Describe(text);
  EXPECT_TRUE(text.trailers_only);
  EXPECT_TRUE(text.data.empty());
  EXPECT_FALSE(text.rst_error.has_value());

  const StreamResult get = client_->Call(call.With(":method", "GET"));
  EXPECT_EQ(get.header(":status"), "405") << Describe(get);
  EXPECT_TRUE(get.trailers_only);
  EXPECT_TRUE(get.data.empty());

  // gRPC's content-type with a subtype or parameters is gRPC.
  ExpectClientLimitAnswer(client_->Call(call.With("content-type", "application/grpc+proto")), 2,
                          RateLimitResponse::OK);
  // Neither was counted.
  ExpectClientLimitAnswer(client_->Call(call), 1, RateLimitResponse::OK);
}

TEST_F(GrpcConnectionTest, RefusesCompressedMessages) {
  Connect(inline_access_);
  const std::string compressed =
      GrpcFrame(LimitRequest("client", "alice").SerializeAsString(), /*flags=*/1);

  EXPECT_TRUE(IsTrailersOnlyError(client_->Call(GrpcCall(compressed).With("grpc-encoding", "gzip")),
                                  "12", "grpc-encoding gzip is not supported (identity only)"));
  EXPECT_TRUE(IsTrailersOnlyError(client_->Call(GrpcCall(compressed)), "13",
                                  "a compressed message without grpc-encoding"));
  EXPECT_TRUE(
      IsTrailersOnlyError(client_->Call(GrpcCall(compressed).With("grpc-encoding", "identity")),
                          "13", "a compressed message without grpc-encoding"));
  // The encoding's name comes back percent-encoded in grpc-message.
  EXPECT_TRUE(IsTrailersOnlyError(client_->Call(GrpcCall(compressed).With("grpc-encoding", "x%y")),
                                  "12", "grpc-encoding x%25y is not supported (identity only)"));
  // An uncompressed message is taken whatever grpc-encoding says.
  ExpectClientLimitAnswer(
      client_->Call(
          GrpcCall(GrpcMessage(LimitRequest("client", "alice"))).With("grpc-encoding", "gzip")),
      2, RateLimitResponse::OK);
}

TEST_F(GrpcConnectionTest, AnswersInternalForMalformedRequestMessages) {
  Connect(inline_access_);
  const std::string message = GrpcMessage(LimitRequest("client", "alice"));
  struct Case {
    std::string name;
    std::optional<std::string> body;
    std::string grpc_message;
  };
  const Case cases[] = {
      {"not a RateLimitRequest", GrpcFrame("\xff\xff\xff"),
       "the request is not a RateLimitRequest"},
      {"no DATA at all", std::nullopt, "no request message"},
      {"an empty DATA frame", "", "no request message"},
      {"half a prefix", message.substr(0, 3), "no request message"},
      {"two messages", message + message, "more than one request message for a unary call"},
      {"a prefix claiming more than is sent", GrpcFrame("0123456789", 0, 100),
       "the request message is cut short"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_TRUE(IsTrailersOnlyError(client_->Call(GrpcCall(c.body)), "13", c.grpc_message));
  }
  // None was counted.
  ExpectClientLimitAnswer(client_->Call(GrpcCall(message)), 2, RateLimitResponse::OK);
}

TEST_F(GrpcConnectionTest, RefusesMessagesOverFourMebibytesAndKeepsServing) {
  Connect(inline_access_);
  const std::string refused = "request message larger than 4194304 bytes";
  constexpr size_t kMax = GrpcConnection::kMaxMessageBytes;

  // Sent whole: 4 MiB and a byte, through HTTP/2's flow control windows.
  EXPECT_TRUE(IsTrailersOnlyError(client_->Call(GrpcCall(GrpcFrame(std::string(kMax + 1, 'x')))),
                                  "8", refused));
  // Only announced by the prefix.
  EXPECT_TRUE(IsTrailersOnlyError(
      client_->Call(GrpcCall(GrpcFrame("short", 0, static_cast<uint32_t>(kMax + 1)))), "8",
      refused));
  // Exactly 4 MiB is taken (and then does not parse).
  EXPECT_TRUE(IsTrailersOnlyError(client_->Call(GrpcCall(GrpcFrame(std::string(kMax, '\xff')))),
                                  "13", "the request is not a RateLimitRequest"));

  ExpectClientLimitAnswer(client_->Call(GrpcCall(GrpcMessage(LimitRequest("client", "alice")))), 2,
                          RateLimitResponse::OK);
}

TEST_F(GrpcConnectionTest, AnswersInvalidArgumentForACallTheDeciderRefuses) {
  Connect(inline_access_);
  EXPECT_TRUE(IsTrailersOnlyError(
      client_->Call(GrpcCall(GrpcMessage(LimitRequest("client", "alice", /*domain=*/"")))), "3",
      PercentEncodeGrpcMessage("rate limit domain must not be empty")));
  RateLimitRequest no_descriptors;
  no_descriptors.set_domain("test");
  EXPECT_TRUE(IsTrailersOnlyError(client_->Call(GrpcCall(GrpcMessage(no_descriptors))), "3",
                                  "rate limit descriptor list must not be empty"));
}

TEST(PercentEncodeGrpcMessageTest, EncodesPercentControlAndNonAsciiBytesOnly) {
  EXPECT_EQ(PercentEncodeGrpcMessage("a%b\n"), "a%25b%0A");
  EXPECT_EQ(PercentEncodeGrpcMessage("plain ASCII: (ok) ~!"), "plain ASCII: (ok) ~!");
  EXPECT_EQ(PercentEncodeGrpcMessage("caf\xc3\xa9\x7f"), "caf%C3%A9%7F");
  EXPECT_EQ(PercentEncodeGrpcMessage(""), "");
}

TEST_F(GrpcConnectionTest, AnswersDeadlineExceededWhenTheStoreIsLateAndStaysHealthy) {
  Connect(deferred_access_);
  const H2Request call = GrpcCall(GrpcMessage(LimitRequest("client", "alice")));

  const auto start = std::chrono::steady_clock::now();
  const int32_t late = client_->Submit(call.With("grpc-timeout", "50m"));
  ASSERT_TRUE(client_->WaitClosed(late));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
  EXPECT_TRUE(IsTrailersOnlyError(client_->result(late), "4",
                                  "the store did not answer within the call's deadline"));
  EXPECT_EQ(HeldByStore(), 1u);

  // The store answers the late call: nothing more goes out on its stream.
  RunHeldStoreWork();
  ASSERT_TRUE(client_->RoundTrip());
  EXPECT_EQ(client_->FramesOn(late), 1);

  // The next call, answered once its store work runs (the late one counted: 1 remains).
  const int32_t next = client_->Submit(call);
  ASSERT_TRUE(WaitUntilHeldByStore(1));
  RunHeldStoreWork();
  ASSERT_TRUE(client_->WaitClosed(next));
  ExpectClientLimitAnswer(client_->result(next), 1, RateLimitResponse::OK);
}

TEST_F(GrpcConnectionTest, ClientResetWhileTheStoreHoldsTheCallSendsNothingOnIt) {
  Connect(deferred_access_);
  const int32_t reset = client_->Submit(GrpcCall(GrpcMessage(LimitRequest("client", "alice"))));
  ASSERT_TRUE(WaitUntilHeldByStore(1));
  client_->Reset(reset, NGHTTP2_CANCEL);
  ASSERT_TRUE(client_->RoundTrip());  // the server has taken the RST_STREAM
  EXPECT_TRUE(client_->result(reset).closed);

  RunHeldStoreWork();
  ASSERT_TRUE(client_->RoundTrip());  // anything the answer made has arrived
  EXPECT_EQ(client_->FramesOn(reset), 0);
  EXPECT_FALSE(loop_.Call([&] { return connection_->closed(); }));
  EXPECT_EQ(done_calls_.load(), 0);

  const int32_t next = client_->Submit(GrpcCall(GrpcMessage(LimitRequest("client", "bob"))));
  ASSERT_TRUE(WaitUntilHeldByStore(1));
  RunHeldStoreWork();
  ASSERT_TRUE(client_->WaitClosed(next));
  ExpectClientLimitAnswer(client_->result(next), 2, RateLimitResponse::OK);
}

TEST_F(GrpcConnectionTest, ClientGoneWhileTheStoreHoldsACallIsDoneOnlyWhenTheStoreAnswers) {
  Connect(deferred_access_);
  client_->Submit(GrpcCall(GrpcMessage(LimitRequest("client", "alice"))));
  ASSERT_TRUE(WaitUntilHeldByStore(1));
  ASSERT_TRUE(client_->RoundTrip());  // nothing unread: the close is a FIN
  client_->CloseSocket();

  ASSERT_TRUE(loop_.WaitFor([&] { return connection_->closed(); }, kWait));
  EXPECT_EQ(done_calls_.load(), 0) << "done while the store still holds a call";

  RunHeldStoreWork();
  EXPECT_TRUE(loop_.WaitFor([&] { return done_calls_.load() == 1; }, kWait));
  loop_.Call([] {});  // a further loop turn
  EXPECT_EQ(done_calls_.load(), 1);
}

TEST_F(GrpcConnectionTest, DrainSendsGoawayAnswersTheCallInFlightThenCloses) {
  Connect(deferred_access_);
  const int32_t id = client_->Submit(GrpcCall(GrpcMessage(LimitRequest("client", "alice"))));
  ASSERT_TRUE(WaitUntilHeldByStore(1));

  loop_.Call([&] { connection_->Drain(); });
  ASSERT_TRUE(client_->RunUntil([&] { return client_->goaway_received(); }));
  EXPECT_EQ(client_->goaway_error(), NGHTTP2_NO_ERROR);
  EXPECT_EQ(client_->goaway_last_stream_id(), id);
  EXPECT_FALSE(client_->result(id).closed);
  EXPECT_EQ(done_calls_.load(), 0);

  RunHeldStoreWork();
  ASSERT_TRUE(client_->WaitClosed(id));
  ExpectClientLimitAnswer(client_->result(id), 2, RateLimitResponse::OK);
  ASSERT_TRUE(client_->WaitForServerClose());
  EXPECT_TRUE(client_->ended_with_fin());
  EXPECT_TRUE(loop_.WaitFor([&] { return done_calls_.load() == 1; }, kWait));
}

TEST_F(GrpcConnectionTest, DrainWithNoCallInFlightClosesAfterTheGoaway) {
  Connect(inline_access_);
  const StreamResult answered =
      client_->Call(GrpcCall(GrpcMessage(LimitRequest("client", "alice"))));
  EXPECT_TRUE(IsAnswered(answered));
  ASSERT_TRUE(client_->RoundTrip());  // the client has nothing more to send

  loop_.Call([&] { connection_->Drain(); });
  ASSERT_TRUE(client_->WaitForServerClose());
  EXPECT_TRUE(client_->ended_with_fin());
  EXPECT_TRUE(client_->goaway_received());
  EXPECT_EQ(client_->goaway_error(), NGHTTP2_NO_ERROR);
  EXPECT_EQ(client_->goaway_last_stream_id(), 1);
  EXPECT_TRUE(loop_.WaitFor([&] { return done_calls_.load() == 1; }, kWait));
}

// A drained connection closes in stages (RFC 9112 section 9.6, "Tear-down"): a close()
// with client bytes still unread makes the kernel send a RST, which may discard the
// GOAWAY and the last responses before the client reads them. Here the client's PING
// (a keepalive) arrives as the server closes: the loop is held until it is in the
// socket, unread, so the race is the same every run.
TEST_F(GrpcConnectionTest, DrainEndsWithFinWhenClientBytesArriveAsItCloses) {
  Connect(inline_access_);
  EXPECT_TRUE(IsAnswered(client_->Call(GrpcCall(GrpcMessage(LimitRequest("client", "alice"))))));
  ASSERT_TRUE(client_->RoundTrip());

  std::promise<void> drained;
  loop_.loop().Post([&] {
    connection_->Drain();
    drained.set_value();
    pollfd p{server_fd_, POLLIN, 0};
    poll(&p, 1, static_cast<int>(kWait.count()));  // until the client's PING is there
  });
  drained.get_future().wait();
  ASSERT_TRUE(client_->SendPing());

  ASSERT_TRUE(client_->WaitForServerClose());
  EXPECT_TRUE(client_->goaway_received());
  EXPECT_TRUE(client_->ended_with_fin()) << "the connection was reset, not closed";
  EXPECT_TRUE(loop_.WaitFor([&] { return done_calls_.load() == 1; }, kWait));
}

// Reads (and drops) what the server sends on `fd` until it closes or resets the
// connection: true, or false after kWait.
bool ReadUntilTheServerEnds(int fd) {
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    char buffer[4096];
    const ssize_t n = recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
  }
  return false;
}

TEST_F(GrpcConnectionTest, ClosesAConnectionThatDoesNotSpeakHttp2) {
  const int fd = ConnectRaw(inline_access_);
  constexpr std::string_view kHttp1 = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(send(fd, kHttp1.data(), kHttp1.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(kHttp1.size()));

  // Whatever the server sends (its SETTINGS, a GOAWAY) is read until the end.
  const bool ended = ReadUntilTheServerEnds(fd);
  close(fd);
  EXPECT_TRUE(ended) << "the connection was not closed";
  EXPECT_TRUE(loop_.WaitFor([&] { return done_calls_.load() == 1; }, kWait));
}

// A client that connects and says nothing (or only part of the preface) is closed once
// the greeting timeout passes; one that greeted in time is not.
TEST_F(GrpcConnectionTest, ClosesAClientThatDoesNotGreetInTime) {
  const int silent = ConnectRaw(inline_access_, {.greeting = 100ms});
  ASSERT_EQ(send(silent, "PRI * HTTP/2.0", 14, MSG_NOSIGNAL), 14);
  const bool ended = ReadUntilTheServerEnds(silent);
  close(silent);
  EXPECT_TRUE(ended) << "a silent client kept its connection";
  EXPECT_TRUE(loop_.WaitFor([&] { return done_calls_.load() == 1; }, kWait));
}

TEST_F(GrpcConnectionTest, AClientThatGreetedOutlivesTheGreetingTimeout) {
  client_ = std::make_unique<H2Client>(ConnectRaw(inline_access_, {.greeting = 50ms}));
  const H2Request call = GrpcCall(GrpcMessage(LimitRequest("client", "alice")));
  EXPECT_EQ(client_->Call(call).trailer("grpc-status"), "0");
  std::this_thread::sleep_for(150ms);  // past the timeout: nothing may fire now
  EXPECT_EQ(client_->Call(call).trailer("grpc-status"), "0");
  EXPECT_EQ(done_calls_.load(), 0);
}

// Bodies of calls still arriving count against the connection's 16 MiB: five calls of
// almost 4 MiB each, sent together, cannot all be held; a later call is served.
TEST_F(GrpcConnectionTest, RefusesCallsOverTheConnectionsBufferedBytes) {
  Connect(inline_access_);
  const std::string big = GrpcFrame(std::string(GrpcConnection::kMaxMessageBytes - 16, 'x'));
  std::vector<int32_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(client_->Submit(GrpcCall(big)));
  int over_budget = 0;
  for (const int32_t id : ids) {
    ASSERT_TRUE(client_->WaitClosed(id));
    const StreamResult r = client_->result(id);
    if (r.header("grpc-status") == "8") {
      EXPECT_EQ(r.header("grpc-message"), "the connection's unfinished requests hold over 16 MiB");
      ++over_budget;
    } else {
      // Taken whole: "xx..." reads as unknown fields, so a request without a domain.
      EXPECT_EQ(r.header("grpc-status"), "3") << Describe(r);
    }
  }
  EXPECT_GE(over_budget, 1);
  const H2Request call = GrpcCall(GrpcMessage(LimitRequest("client", "alice")));
  EXPECT_EQ(client_->Call(call).trailer("grpc-status"), "0");
}

// A connection on which nothing moves for the idle timeout gets a GOAWAY and ends.
TEST_F(GrpcConnectionTest, AnIdleConnectionIsSentAGoawayAndEnds) {
  client_ = std::make_unique<H2Client>(ConnectRaw(inline_access_, {.idle = 200ms}));
  const H2Request call = GrpcCall(GrpcMessage(LimitRequest("client", "alice")));
  EXPECT_EQ(client_->Call(call).trailer("grpc-status"), "0");
  ASSERT_TRUE(client_->WaitForServerClose());
  EXPECT_TRUE(client_->goaway_received());
  EXPECT_TRUE(client_->ended_with_fin());
  EXPECT_TRUE(loop_.WaitFor([&] { return done_calls_.load() == 1; }, kWait));
}

TEST_F(GrpcConnectionTest, ResetsAStreamWhoseHeadersAreTooLargeAndKeepsServing) {
  Connect(inline_access_);
  const H2Request call = GrpcCall(GrpcMessage(LimitRequest("client", "alice")));

  const StreamResult big = client_->Call(call.With("x-big", std::string(20'000, 'a')));
  EXPECT_TRUE(big.closed);
  const bool refused = big.rst_error.has_value() || big.header(":status") != "200" ||
                       (big.headers.contains("grpc-status") && big.header("grpc-status") != "0");
  EXPECT_TRUE(refused) << Describe(big);

  // The connection serves on; the refused call was not counted.
  ExpectClientLimitAnswer(client_->Call(call), 2, RateLimitResponse::OK);
}

}  // namespace
}  // namespace sluice::rls
