// One HTTP/1.1 client connection from a worker to one upstream server, on that worker's
// event loop: the proxy's side of a request that goes to an upstream (issue 5).
//
// The connection sends a request head the caller built, then the body pieces the caller
// pushes, and parses the response with libhttp-parser (HTTP_RESPONSE). It streams in both
// directions with back-pressure and never holds a whole body:
// - Request body: SendBody() returns false once more than `send_high_water` bytes wait
//   in the connection's output buffer; the caller then stops reading its client until
//   Handler::OnRequestBodyDrained() says the buffer is down to `send_low_water`.
//   The connection frames the body (it writes the chunk-size lines of a chunked body and
//   checks a Content-Length body's size); the caller's head carries the matching
//   `Content-Length` or `Transfer-Encoding: chunked` header.
// - Response body: delivered as it is parsed, de-chunked, in views into the connection's
//   fixed 64 KiB read buffer. PauseReading() stops watching the socket for input (and
//   stops the parser at once, mid-buffer), so a slow client holds the upstream back
//   through TCP instead of making sluice buffer the body; ResumeReading() goes on.
//
// Response heads are parsed in place: the status line and header views handed to
// Handler::OnResponseHead point into the read buffer and are valid only during that call
// (no copy of the head, as in the server connection). Interim 1xx responses (100
// Continue, 103 Early Hints) are read and skipped: the server connection answers a
// client's `Expect: 100-continue` itself, and AppendUpstreamRequestHead drops Expect.
// A 101 is an error (we never ask to upgrade), as is a status below 100.
//
// Keep-alive: after a complete response the connection is idle again when both sides
// allow it: an HTTP/1.1 response without `Connection: close`, a body with its own end
// (Content-Length, chunked, or none), the whole request body sent, and no stray bytes
// after the response. Anything else (HTTP/1.0 responses included, whatever they say
// about keep-alive) closes it.
//
// Deadlines: connect (from Connect()), first byte (from the moment the whole request has
// been handed to the kernel to the first response byte) and idle (no progress in either
// direction while the connection waits on the upstream: while output is queued, or while
// the response body is being read and reading is not paused). Time the connection spends
// waiting on the caller (a paused response, a request body the caller has not pushed yet)
// is the client side's to judge, and does not count.
//
// Failures reach Handler::OnUpstreamError with their kind (connect failed or timed out,
// first-byte or idle timeout, closed, reset, protocol) and whether any response byte
// had arrived, so the proxy can answer 502 or 504 and retry only what the upstream cannot
// have begun to answer. Errors are always reported from the event loop (a zero-delay
// timer), never from inside a call the caller made, so a caller never sees its own
// objects change under it in the middle of StartRequest or SendBody.
//
// Thread-safety: a connection belongs to one event loop and is used on its thread only.
// REQUIRES: the connection is not destroyed inside one of its own Handler callbacks
// (UpstreamPool defers frees for this reason).
#ifndef SLUICE_HTTP_UPSTREAM_CONNECTION_H_
#define SLUICE_HTTP_UPSTREAM_CONNECTION_H_

#include <http_parser.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "http/header_spans.h"
#include "http/proxy_headers.h"  // BodyFraming, UpstreamResponse
#include "net/address.h"
#include "net/event_loop.h"
#include "net/tls.h"

struct iovec;

namespace sluice::http {

struct UpstreamTimeouts {
  Duration connect = std::chrono::seconds(5);
  Duration first_byte = std::chrono::seconds(60);
  Duration idle = std::chrono::seconds(60);
};

struct UpstreamConnectionOptions {
  UpstreamTimeouts timeouts;
  // SendBody() asks the caller to stop above this many unsent bytes, and
  // OnRequestBodyDrained() follows when at most `send_low_water` remain.
  size_t send_high_water = 256 * 1024;
  size_t send_low_water = 64 * 1024;
  // TLS to the server (`upstreams.<name>.tls`): the handshake follows the connect,
  // within the same connect timeout, and every byte then goes through the session.
  const net::TlsClientContext* tls = nullptr;
};

// A request to send. The head is complete ("GET /x HTTP/1.1\r\nHost: ...\r\n\r\n") and
// carries the framing field for `body` (AppendUpstreamRequestHead writes it from the same
// BodyFraming): `Content-Length: <body.length>` or `Transfer-Encoding: chunked`. The
// connection copies what it cannot send at once.
struct UpstreamRequest {
  std::string_view head;
  BodyFraming body = {};  // kNone, kContentLength or kChunked
  // A HEAD request: its response has no body whatever its headers say.
  bool head_method = false;
};

// A final response's head: status line and fields (the UpstreamResponse that
// AppendClientResponseHead takes), and how its body comes. Views are valid only during
// Handler::OnResponseHead.
struct ResponseHead : UpstreamResponse {
  // The bytes that follow the head on the wire: kNone (HEAD, 204, 304), kContentLength
  // with body.length (0 included), kChunked (delivered de-chunked) or kUntilClose.
  BodyFraming body;
  // The Content-Length field's value when there is one, also where no body follows
  // (HEAD, 304): what proxy_headers passes on to the client for those.
  std::optional<uint64_t> content_length;
  // The response lets the connection be reused (HTTP/1.1, no `Connection: close`, a
  // self-delimited body). Whether it is also depends on the request body being sent.
  bool keep_alive = false;

  // The first field with this name (ASCII case-insensitive).
  std::optional<std::string_view> FindHeader(std::string_view name) const;
};

enum class UpstreamErrorKind : uint8_t {
  kConnectFailed,     // refused, unreachable, no socket: nothing was sent
  kConnectTimeout,    // no connection within timeouts.connect: nothing was sent
  kFirstByteTimeout,  // the request was sent and no response byte came in time
  kIdleTimeout,       // no progress for timeouts.idle while waiting on the upstream
  kClosed,            // the server closed the connection before the response ended
  kReset,             // the connection was reset, or another socket error
  kProtocol,          // the bytes received are not a response we accept
};
std::string_view ToString(UpstreamErrorKind kind);

struct UpstreamError {
  UpstreamErrorKind kind = UpstreamErrorKind::kReset;
  int error_number = 0;  // errno, where one applies
  // Any byte of a response (an interim 1xx included) had arrived: the upstream has begun
  // to answer, so the request must not be retried.
  bool response_started = false;
  // The connection had served an earlier request: a keep-alive connection that the
  // server closed as the request went out fails this way with no response byte.
  bool reused = false;
  // The connection was idle (between requests) when it failed.
  bool idle = false;
  // A view of a static string, or of text valid during the callback.
  std::string_view detail;

  bool timeout() const {
    return kind == UpstreamErrorKind::kConnectTimeout ||
           kind == UpstreamErrorKind::kFirstByteTimeout || kind == UpstreamErrorKind::kIdleTimeout;
  }
};

class UpstreamConnection final : public net::IoHandler,
                                 private net::DeferredSender,
                                 private net::IoBatch::Client {
 public:
  // What the connection tells the user of the current request. After a request's
  // OnResponseComplete (or OnUpstreamError) nothing more is said about it; an idle
  // connection's handler still hears OnUpstreamError if the server closes it, until the
  // next StartRequest or set_handler() names another handler.
  class Handler {
   public:
    // The final response's head. Called once per request, before any body.
    virtual void OnResponseHead(UpstreamConnection& connection, const ResponseHead& head) = 0;
    // The next piece of the response body, de-chunked; a view valid during the call.
    virtual void OnResponseBody(UpstreamConnection& connection, std::string_view bytes) = 0;
    // The response ended. The connection is idle again (reusable) or closed.
    virtual void OnResponseComplete(UpstreamConnection& connection) = 0;
    // After SendBody() returned false: the output buffer is down to send_low_water.
    virtual void OnRequestBodyDrained(UpstreamConnection& connection) = 0;
    // The connection failed and is closed; the request, if any, is over.
    virtual void OnUpstreamError(UpstreamConnection& connection, const UpstreamError& error) = 0;

   protected:
    ~Handler() = default;
  };

  enum class State : uint8_t {
    kConnecting,  // connect in progress (a request may already be queued)
    kIdle,        // connected, no request
    kBusy,        // a request in progress
    kClosed,
  };

  // REQUIRES: `handler` outlives its use (see set_handler).
  UpstreamConnection(net::EventLoop& loop, const net::Endpoint& server,
                     const UpstreamConnectionOptions& options, Handler& handler);
  ~UpstreamConnection();
  UpstreamConnection(const UpstreamConnection&) = delete;
  UpstreamConnection& operator=(const UpstreamConnection&) = delete;

  // Starts a non-blocking connect. REQUIRES: never connected before (a connection is used
  // for one socket; make a new one to reconnect).
  void Connect();

  // Sends `request`: now when idle, once connected when connecting. With a body, push it
  // with SendBody() and end it with FinishBody(). REQUIRES: state idle or connecting
  // without a request, or closed with its error not yet reported (then nothing is sent
  // and `handler` hears the error).
  void StartRequest(Handler& handler, const UpstreamRequest& request);
  // Queues body bytes (framed as the request said). Returns false when the caller should
  // stop until OnRequestBodyDrained (above the high-water mark), and also once the
  // request can no longer be sent (the connection failed, or the response ended first):
  // then no drain follows, and the response or error says how the request ended.
  // REQUIRES: a request with a body, not finished; for kContentLength no more bytes than
  // declared.
  bool SendBody(std::string_view bytes);
  // Ends the request body. REQUIRES: for kContentLength, exactly the declared bytes sent.
  void FinishBody();

  // Stop and restart reading the response. Resuming may deliver buffered body bytes, and
  // even complete the response, before it returns.
  void PauseReading();
  void ResumeReading();

  // Closes the socket at once; no callback follows (a pending error report is dropped).
  void Close();

  // Who hears about the connection from now on (the pool, while it holds it idle).
  void set_handler(Handler& handler) { handler_ = &handler; }

  State state() const { return state_; }
  bool idle() const { return state_ == State::kIdle; }
  bool closed() const { return state_ == State::kClosed; }
  bool reading_paused() const { return paused_; }
  const net::Endpoint& server() const { return server_; }
  // The socket, or -1 when closed (for getsockname and the like; do not read or write).
  int fd() const { return fd_; }
  // Request body and framing bytes queued and not yet handed to the kernel.
  size_t unsent_bytes() const { return out_.size() - out_sent_; }
  // Requests started on this connection.
  uint64_t requests() const { return requests_; }

  // The read buffer's fixed size, which also bounds a response head.
  static constexpr size_t kReadBufferSize = 64 * 1024;
  static constexpr size_t kMaxHeaders = 100;

  // net::IoHandler
  void OnIoEvent(uint32_t events) override;
  void BeforeIoEvent(uint32_t events, net::IoBatch& batch) override;

 private:
  friend class UpstreamPool;
  enum class ParseEvent : uint8_t { kNone, kHead, kBody, kComplete };

  static int OnMessageBegin(http_parser* parser);
  static int OnStatus(http_parser* parser, const char* at, size_t length);
  static int OnHeaderField(http_parser* parser, const char* at, size_t length);
  static int OnHeaderValue(http_parser* parser, const char* at, size_t length);
  static int OnHeadersComplete(http_parser* parser);
  static int OnBody(http_parser* parser, const char* at, size_t length);
  static int OnMessageComplete(http_parser* parser);
  static const http_parser_settings kSettings;

  void FinishConnect();
  // TLS: drives the handshake; once done, the connection is up as FinishConnect's is.
  void ContinueHandshake();
  void ConnectionUp();
  // The socket, or the TLS session over it, as recv and send answer.
  ssize_t ReceiveSome(char* buffer, size_t length);
  ssize_t SendSome(const char* buffer, size_t length);
  void ReadAvailable();
  // Runs the parser over buffered input, delivering what it finds, until it needs more
  // input, reading is paused, or the response ends.
  void Parse();
  bool TakeSimpleHead();
  void DeliverHead(int status, int version_minor);
  void CompleteResponse();
  void OnEndOfInput();
  bool EnsureReadRoom();
  // Sends `count` pieces, or queues what the socket does not take.
  void Write(const iovec* pieces, int count);
  void Flush();
  void OutputFailed();
  void NoteRequestSentIfDone();
  void UpdateInterest();
  // Closes the socket and reports `kind` to the handler from the loop.
  void Fail(UpstreamErrorKind kind, int error_number, std::string_view detail);
  void CloseSocket();
  void ArmTimer();
  void OnTimer();
  std::optional<Timestamp> FirstByteDeadline() const;
  std::optional<Timestamp> IdleDeadline() const;
  std::optional<Timestamp> NextDeadline() const;

  net::EventLoop& loop_;
  const net::Endpoint server_;
  SSL* ssl_ = nullptr;
  bool handshaking_ = false;
  bool tls_wants_read_ = false;   // the handshake, or a write, waits for input
  bool tls_wants_write_ = false;  // the handshake waits for output room
  const UpstreamConnectionOptions options_;
  Handler* handler_;
  State state_ = State::kClosed;
  int fd_ = -1;
  uint32_t interest_ = 0;
  bool registered_ = false;  // fd_ in the loop's epoll set
  bool connect_started_ = false;
  // Bumped whenever a callback may have changed what the connection is doing (closed,
  // completed, started another request): a loop that called out stops when it changed.
  uint64_t generation_ = 0;
  uint64_t requests_ = 0;

  // The current request.
  bool request_active_ = false;
  BodyKind request_body_ = BodyKind::kNone;
  uint64_t request_body_left_ = 0;  // kContentLength: bytes still to come
  bool request_body_finished_ = true;
  bool request_sent_ = false;   // all of it handed to the kernel
  bool output_failed_ = false;  // the socket refused more output; what is queued is dropped
  bool send_blocked_ = false;   // SendBody returned false: a drain notification is owed
  bool head_method_ = false;
  bool paused_ = false;
  uint64_t response_bytes_ = 0;  // bytes received for the current request

  // Output not yet written: out_[out_sent_, size).
  std::string out_;
  size_t out_sent_ = 0;
  // Output of a connection that is up waits for the end of the turn
  // (EventLoop::SendAtTurnEnd), to go out in one batch with the turn's other sends.
  bool send_queued_ = false;
  void QueueDeferredSend(net::IoBatch& batch) override;
  void FinishDeferredSend() override;
  void OnBatchedSend(ssize_t result) override;
  // A receive run by the loop's batch (BeforeIoEvent): its result waits in
  // `batch_received_` for ReadAvailable to take first, as if it had just received it:
  // bytes (in in_ and counted already), the end of input (0) or an error (-errno).
  // `batch_filled_`: the bytes filled the room offered, so more may wait in the socket.
  void OnBatchedReceive(ssize_t result) override;
  std::optional<ssize_t> batch_received_;
  bool batch_filled_ = false;
  size_t batch_room_ = 0;
  // A request body that drained below the low-water mark: tells the handler. False
  // when that callback changed what the connection is doing.
  bool NotifyBodyDrained();

  // Input: in_[in_parsed_, in_end_) is read and not yet parsed; while a head is being
  // read, in_[head_start_, ...) holds it.
  std::unique_ptr<char[]> in_;
  size_t in_parsed_ = 0;
  size_t in_end_ = 0;
  size_t head_start_ = 0;

  http_parser parser_;
  ParseEvent event_ = ParseEvent::kNone;
  bool in_head_ = true;      // parsing a head (interim or final), not yet delivered
  bool interim_ = false;     // the head being parsed is a 1xx
  bool bad_status_ = false;  // a 101 or below 100, refused in OnHeadersComplete
  bool head_too_large_ = false;
  Span status_;
  HeaderSpans<kMaxHeaders> header_spans_;
  std::array<Header, kMaxHeaders> header_views_;
  const char* body_at_ = nullptr;
  size_t body_length_ = 0;
  BodyFraming response_body_;
  std::optional<uint64_t> response_content_length_;
  bool response_keep_alive_ = false;
  // The fast path read this response's head, so its body is framed in Parse, not by
  // the parser: `framed_body_left_` bytes of it are still to come.
  bool body_framed_here_ = false;
  uint64_t framed_body_left_ = 0;

  // Deadlines: one loop timer at a time, at or before the earliest deadline that applies;
  // it re-arms itself when progress moved the deadline on, and stays armed across
  // requests, so neither progress nor a request on a warm connection costs a timer
  // operation (an allocation in the loop's timer map).
  net::EventLoop::TimerId timer_ = net::EventLoop::kNoTimer;
  Timestamp timer_at_{};
  Timestamp connect_deadline_{};
  Timestamp request_sent_at_{};
  Timestamp last_progress_{};

  // An error waiting for its report (from the loop, never from inside a caller's call).
  net::EventLoop::TimerId error_timer_ = net::EventLoop::kNoTimer;
  UpstreamError error_;
  char error_detail_[96] = {};

  // The pool's bookkeeping (UpstreamPool): index in its list of all connections.
  size_t pool_slot_ = 0;
  Timestamp idle_since_{};  // when the pool last took it back
};

}  // namespace sluice::http

#endif  // SLUICE_HTTP_UPSTREAM_CONNECTION_H_
