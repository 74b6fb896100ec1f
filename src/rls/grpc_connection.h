// Envoy's rate limit service on a worker's event loop: one client connection on
// grpc_listen, spoken as gRPC speaks it (HTTP/2 without TLS, with prior knowledge),
// framed by libnghttp2, each ShouldRateLimit call decided by the RlsDecider.
//
// Why not the gRPC C++ server: through it one core answers about 36,000 calls a
// second, a fixed ~25 us a call of which sluice's decision is ~2.5 us, and no server
// option changes that (docs/benchmarks.md, "Envoy's rate limit API"). Here a call
// costs the decision, protobuf and HTTP/2 framing: a loop turn's responses for one
// connection go out in one send, with the loop's other output (net/event_loop.h).
//
// What a client sees is a gRPC server's behaviour for one unary method:
// - the answer in one message, then trailers with grpc-status 0;
// - an error as a trailers-only response: grpc-status and a percent-encoded
//   grpc-message (UNIMPLEMENTED for another method or a compressed message,
//   RESOURCE_EXHAUSTED over 4 MiB, INTERNAL for a message that does not parse,
//   INVALID_ARGUMENT for a call the decider refuses, DEADLINE_EXCEEDED when the
//   store is not done within the call's grpc-timeout);
// - HTTP 415 for a request that is not gRPC (content-type), as gRPC servers do.
// HTTP/2 itself (SETTINGS, flow control, PING, GOAWAY, the checks of the protocol's
// rules) is nghttp2's.
//
// Thread-safety: everything runs on the loop's thread. The decider's store access
// must answer there too (the memory store at once; a worker's Redis store later).
#ifndef SLUICE_RLS_GRPC_CONNECTION_H_
#define SLUICE_RLS_GRPC_CONNECTION_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/event_loop.h"
#include "rls/rls_service.h"

struct nghttp2_session;

namespace sluice::rls {

class GrpcConnection;

// The worker that owns the connections.
class GrpcConnectionOwner {
 public:
  // The connection is closed and holds nothing more: the owner frees it, after the
  // loop turn (never from inside this call).
  virtual void OnGrpcConnectionDone(GrpcConnection& connection) = 0;

 protected:
  ~GrpcConnectionOwner() = default;
};

// How long a client may take: to send its preface and SETTINGS (gRPC clients send both
// at once); to let output pending for it move; with nothing received or sent, before a
// GOAWAY (and as long again before the connection is closed).
struct GrpcConnectionTimeouts {
  Duration greeting = std::chrono::seconds(10);
  Duration stall = std::chrono::seconds(30);
  Duration idle = std::chrono::minutes(5);
};

class GrpcConnection final : public net::IoHandler,
                             public net::DeferredSender,
                             public net::IoBatch::Client {
 public:
  // The gRPC method served, and the largest message taken (gRPC's default).
  static constexpr std::string_view kPath =
      "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
  static constexpr size_t kMaxMessageBytes = 4 * 1024 * 1024;
  // Calls open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).
  static constexpr uint32_t kMaxConcurrentCalls = 1024;

  // Request bytes a connection holds at once (bodies of calls not yet whole): past
  // this a call is refused RESOURCE_EXHAUSTED and its bytes dropped. nghttp2 opens the
  // flow-control window as bytes arrive, so this, not the window, bounds the memory.
  static constexpr size_t kMaxBufferedBytes = 16 * 1024 * 1024;

  using Timeouts = GrpcConnectionTimeouts;

  // Takes `fd` (connected, non-blocking); decides with `decider` through `access`.
  GrpcConnection(net::EventLoop& loop, int fd, const RlsDecider& decider, RlsStoreAccess& access,
                 GrpcConnectionOwner& owner, Timeouts timeouts = Timeouts{});
  ~GrpcConnection();
  GrpcConnection(const GrpcConnection&) = delete;
  GrpcConnection& operator=(const GrpcConnection&) = delete;

  // Registers with the loop and sends the server's SETTINGS.
  void Start();
  // Graceful end: a GOAWAY naming the last call taken; the calls in flight are
  // answered, then the connection closes.
  void Drain();
  // Closes at once (the calls with the store end when it answers).
  void Close();
  bool closed() const { return closed_; }

  // The owner's list of its connections.
  GrpcConnection* owner_prev = nullptr;
  GrpcConnection* owner_next = nullptr;

  // net::IoHandler
  void OnIoEvent(uint32_t events) override;
  void BeforeIoEvent(uint32_t events, net::IoBatch& batch) override;
  // net::DeferredSender
  void QueueDeferredSend(net::IoBatch& batch) override;
  void FinishDeferredSend() override;
  // net::IoBatch::Client
  void OnBatchedReceive(ssize_t result) override;
  void OnBatchedSend(ssize_t result) override;

  struct Stream;  // one call (grpc_connection.cc)

 private:
  friend struct Callbacks;

  void ReadAvailable();
  // Hands `bytes` to the session; false when the connection must close.
  bool Feed(const char* bytes, size_t length);
  // Pulls the session's output into out_ (up to a bound); true when some came.
  bool PullOutput();
  void Flush();
  void FlushSoon();
  void UpdateInterest();
  // Ends when the session wants nothing more and the output is out: the sending side
  // first, then the socket once the client closes its own (or after kLinger). Closing
  // a socket with unread input would send a reset, and the kernel would drop what was
  // not yet delivered (the GOAWAY, a drain's last answers).
  void CloseIfFinished();
  void OnLingerInput();
  // Every few seconds: closes a stalled connection, drains an idle one.
  void CheckProgress();
  void ReleaseBody(Stream& stream);
  void DispatchBody(Stream& stream);
  void MaybeDone();

  Stream* NewStream(int32_t id);
  void Recycle(Stream* stream);
  // The request is whole: decides it, or answers the error.
  void Dispatch(Stream& stream);
  void OnDecided(Stream& stream, std::string error);
  void OnDeadline(Stream& stream);
  void Answer(Stream& stream);
  // A trailers-only answer.
  void AnswerError(Stream& stream, int grpc_status, std::string_view message);
  void AnswerHttpStatus(Stream& stream, int http_status);

  net::EventLoop& loop_;
  int fd_;
  const RlsDecider& decider_;
  RlsStoreAccess& access_;
  GrpcConnectionOwner& owner_;
  nghttp2_session* session_ = nullptr;

  std::string in_;                         // received bytes (one receive's worth)
  std::optional<ssize_t> batch_received_;  // the loop's batch's receive, not yet taken
  std::string out_;                        // the session's output, from out_sent_ on still to send
  size_t out_sent_ = 0;
  bool flush_queued_ = false;
  bool want_out_ = false;  // EPOLLOUT registered
  uint32_t interest_ = 0;
  bool closed_ = false;
  bool draining_ = false;
  const Timeouts timeouts_;
  size_t buffered_bytes_ = 0;     // of the streams' bodies
  int64_t last_progress_ns_ = 0;  // the last byte received or sent
  int64_t last_sent_ns_ = 0;
  bool idle_drained_ = false;
  net::EventLoop::TimerId progress_timer_ = net::EventLoop::kNoTimer;
  net::EventLoop::TimerId greeting_timer_ = net::EventLoop::kNoTimer;  // until SETTINGS
  bool lingering_ = false;  // output shut down; input read and dropped until the end
  net::EventLoop::TimerId linger_timer_ = net::EventLoop::kNoTimer;
  bool done_told_ = false;
  int deciding_ = 0;  // calls with the store: the connection stays until they end

  std::vector<std::unique_ptr<Stream>> streams_;  // every stream made, for reuse
  std::vector<Stream*> free_streams_;
};

// For tests: the text of a grpc-message value (percent-encoded, as gRPC sends it).
std::string PercentEncodeGrpcMessage(std::string_view message);

}  // namespace sluice::rls

#endif  // SLUICE_RLS_GRPC_CONNECTION_H_
