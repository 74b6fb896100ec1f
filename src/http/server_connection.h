// One client connection of the HTTP/1.x server: reading, parsing (libhttp-parser),
// protocol limits, keep-alive, pipelining and writing responses.
//
// The parser runs over the connection's own read buffer and the request handed to the
// handler is a set of views into it: no copy of the head, no allocation per request.
// A request is dispatched when its head is complete, so a handler that needs the body
// (the gateway's proxy) can stream it (StreamBody); the body is otherwise read and
// discarded.
// Responses are answered strictly in request order: while a request is held (a
// `delay` rule, later an upstream), parsing stops at the end of that request and
// pipelined requests wait in the buffer.
//
// Output is appended to one buffer and written once per loop turn, so a pipelined
// batch costs one write. A response becomes writable only when its request has been
// read completely, which lets a body that turns out too large still get its 413.
//
// Thread-safety: a connection belongs to one event loop thread.
#ifndef SLUICE_HTTP_SERVER_CONNECTION_H_
#define SLUICE_HTTP_SERVER_CONNECTION_H_

#include <http_parser.h>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "http/header_spans.h"
#include "net/address.h"
#include "net/event_loop.h"

typedef struct ssl_st SSL;

namespace sluice::http {

// A parsed request head. Views stay valid only during RequestHandler::OnRequest.
struct Request {
  std::string_view method;  // "GET"
  std::string_view target;  // as sent: "/api/x?y=1"
  std::string_view path;    // target before '?'
  std::string_view query;   // after '?', without it
  // The host the request is for, without port or trailing dot: from the request
  // target in absolute form ("GET http://host/x"), else from the Host header
  // (RFC 9112 3.2.2). Not lower-cased.
  std::string_view host;
  int version_minor = 1;  // HTTP/1.<minor>
  std::span<const Header> headers;
  std::string_view request_id;  // from X-Request-Id when usable, generated otherwise
  const net::IpAddress* peer = nullptr;
  // `peer` as text (IpAddress::Format), when the connection has it at hand; else empty.
  std::string_view peer_text;
  bool head_method = false;  // HEAD: answer without a body

  // The first header with this name (ASCII case-insensitive).
  std::optional<std::string_view> FindHeader(std::string_view name) const;
};

// The path rules match on (see the definition); `scratch` holds it when it differs.
std::string_view CanonicalPath(std::string_view path, std::string& scratch);

// The authority of a request target in absolute form, without user info:
// "http://user@host:8080/x?y" -> "host:8080"; nullopt for any other form ("/x").
std::optional<std::string_view> AbsoluteFormAuthority(std::string_view target);

// "Date: Sun, 22 Nov 2026 10:00:00 GMT\r\n" for now, formatted once a second per thread.
std::string_view CurrentDateLine();

// A Host value or authority without port, userinfo or trailing dot; not lower-cased.
std::string_view HostWithoutPort(std::string_view host);

struct ProtocolLimits {
  size_t max_header_bytes = 16384;
  size_t max_body_bytes = 10485760;
  Duration header_timeout = std::chrono::seconds(10);
  Duration idle_timeout = std::chrono::seconds(60);
};

class ServerConnection;

// Connections waiting on a timeout, earliest deadline first. Every member of one list
// usually waits on the same timeout, so arming appends at the tail in O(1) and a loop
// tick pops the expired ones from the head without scanning the rest. (After a reload
// shortens the timeout, arming walks back past the longer deadlines to stay sorted.)
class TimeoutList {
 public:
  void Append(ServerConnection* connection);
  void Remove(ServerConnection* connection);
  // Calls OnDeadline() on every connection whose deadline is at or before `now_ns`.
  void Expire(int64_t now_ns);
  // Whether Expire(now_ns) would expire a connection.
  bool Due(int64_t now_ns) const;

 private:
  ServerConnection* head_ = nullptr;
  ServerConnection* tail_ = nullptr;
};

struct ConnectionTimeouts {
  TimeoutList header;  // waiting for a request head to complete
  TimeoutList idle;    // keep-alive with nothing to do, or a slow body
};

// The side of a streamed request that takes its body and feeds its response: the
// gateway's proxy. Called on the connection's loop thread; a call may come from inside
// one of the connection's own methods that the handler called (ResumeBody delivers
// buffered body bytes before it returns).
class StreamHandler {
 public:
  // The next piece of the request body, de-chunked; a view valid during the call.
  // PauseBody() inside the call stops further pieces until ResumeBody().
  virtual void OnRequestBody(ServerConnection& connection, std::string_view bytes) = 0;
  // The request body ended (at once after ResumeBody for a request without one).
  virtual void OnRequestBodyComplete(ServerConnection& connection) = 0;
  // After WriteResponse() returned false: the output waiting for the client is down to
  // kResponseLowWater.
  virtual void OnResponseDrained(ServerConnection& connection) = 0;

 protected:
  ~StreamHandler() = default;
};

class RequestHandler {
 public:
  // A complete request head. Answer with connection.Respond() now, or later (from a
  // timer on the same loop) after calling connection.Hold().
  virtual void OnRequest(ServerConnection& connection, const Request& request) = 0;
  // The connection is closing (after its last response, or on error, timeout or
  // peer close); anything that refers to it (a held request's timer) must go.
  virtual void OnClose(ServerConnection& connection) = 0;
  // A response the connection made itself: 400, 408, 413, 431.
  virtual void OnProtocolError(ServerConnection& connection, int status) = 0;

 protected:
  ~RequestHandler() = default;
};

// Makes request ids: kept from the client when safe to echo, generated otherwise.
class RequestIdSource {
 public:
  explicit RequestIdSource(uint64_t seed) : seed_(seed) {}
  // Writes a fresh id into `out` (kLength bytes).
  static constexpr size_t kLength = 32;
  void Generate(char* out);

 private:
  uint64_t seed_;
  uint64_t counter_ = 0;
};

class ServerConnection final : public net::IoHandler,
                               private net::DeferredSender,
                               private net::IoBatch::Client {
 public:
  // Takes ownership of `fd` (non-blocking, accepted) and of `tls` when given: a
  // server session on `fd` (net::TlsServerContext::NewSession) through which every
  // byte then goes, the handshake first.
  ServerConnection(net::EventLoop& loop, int fd, const net::IpAddress& peer,
                   RequestHandler& handler, RequestIdSource& ids, const ProtocolLimits& limits,
                   ConnectionTimeouts& timeouts, SSL* tls = nullptr);
  ~ServerConnection();
  ServerConnection(const ServerConnection&) = delete;
  ServerConnection& operator=(const ServerConnection&) = delete;

  // Starts reading.
  void Start();

  // Answers the current request. `headers` are complete lines ("Name: value\r\n");
  // Content-Length, Connection and X-Request-Id are added here.
  void Respond(int status, std::string_view headers, std::string_view content_type,
               std::string_view body);
  // Marks the current request as answered later; REQUIRES: inside OnRequest.
  void Hold() { held_ = true; }
  bool held() const { return held_; }

  // --- Streaming (the gateway) ---
  // Hands the current request's body to `handler` as it is read instead of discarding
  // it. Delivery starts paused, so a body is not read before the handler is ready for
  // it (the store may still be deciding): call ResumeBody() to start. Answering with
  // Respond() instead ends the streaming, and the rest of the body is discarded.
  // REQUIRES: inside OnRequest, after Hold().
  void StreamBody(StreamHandler& handler);
  void PauseBody();
  void ResumeBody();
  // The whole request has been read.
  bool request_complete() const { return phase_ == Phase::kDone; }
  // Starts the held request's response: `head` is its status line and fields, through
  // the blank line, as the caller built it (with `Connection: close` when
  // closes_after_response() or `close`). The connection closes after it when `close`
  // (a body delimited by closing) or when closes_after_response() said so.
  void StartResponse(std::string_view head, bool close);
  // Appends response bytes as they are (the caller frames the body). Returns false
  // when more than kResponseHighWater bytes wait for the client, or the connection
  // closed: stop until StreamHandler::OnResponseDrained (which does not follow a
  // close). HEAD requests: the bytes are dropped.
  bool WriteResponse(std::string_view bytes, std::string_view more = {},
                     std::string_view last = {});
  // The response is complete; the connection goes on to the next request.
  void EndResponse();
  // The response cannot be completed (its upstream failed mid-body): what is queued is
  // written and the connection closes, so the client sees a truncated message.
  void AbortResponse();
  bool response_started() const { return response_started_; }
  // The connection closes after the current response whatever its framing: the
  // client asked to, or the server is draining.
  bool closes_after_response() const { return !keep_alive_ || draining_ || close_after_write_; }
  // The current request's id (valid until its response ends).
  std::string_view request_id() const { return {request_id_storage_, request_id_length_}; }
  static constexpr size_t kResponseHighWater = 256 * 1024;
  static constexpr size_t kResponseLowWater = 64 * 1024;

  // Stops reading new requests; the connection closes after the current response
  // (or at once when idle). Used when the server shuts down.
  void Drain();

  bool closed() const { return closed_; }
  const net::IpAddress& peer() const { return peer_; }
  // The connection is TLS (https).
  bool tls() const { return ssl_ != nullptr; }

  // The owner's list of all its connections (intrusive, so no allocation per accept
  // beyond the connection itself).
  ServerConnection* owner_prev = nullptr;
  ServerConnection* owner_next = nullptr;
  // The owner's state for a request answered later (held), if any.
  void* pending = nullptr;

  void OnIoEvent(uint32_t events) override;
  void BeforeIoEvent(uint32_t events, net::IoBatch& batch) override;

 private:
  enum class Phase { kIdle, kHead, kBody, kDone };

  static int OnMessageBegin(http_parser* parser);
  static int OnUrl(http_parser* parser, const char* at, size_t length);
  static int OnHeaderField(http_parser* parser, const char* at, size_t length);
  static int OnHeaderValue(http_parser* parser, const char* at, size_t length);
  static int OnHeadersComplete(http_parser* parser);
  static int OnBody(http_parser* parser, const char* at, size_t length);
  static int OnMessageComplete(http_parser* parser);
  static const http_parser_settings kSettings;

  void ReadAvailable();
  // The socket, or the TLS session over it: bytes moved (> 0), 0 at the end of input,
  // or -1 with errno (EAGAIN when it would block).
  ssize_t ReceiveSome(char* buffer, size_t length);
  ssize_t SendSome(const char* buffer, size_t length);
  // TLS: plaintext already decrypted inside the session is not seen by epoll; reading
  // it is scheduled on the loop when the connection wants input.
  void ReadTlsPendingLater();
  // Runs the parser over buffered input until it needs more, or a request is held.
  void Parse();
  // What Dispatch needs of a head beyond its fields, from libhttp-parser or from the
  // fast path (head_parser.h).
  struct HeadFacts {
    int method = 0;  // an http_method
    int version_major = 1;
    int version_minor = 1;
    bool keep_alive = true;
    std::optional<uint64_t> content_length;
    // The fast path took only token names and values without CR or LF: Dispatch's
    // checks for what libhttp-parser lets through would find nothing.
    bool fields_strict = false;
  };
  // The fast path: a complete, simple head at head_start_ is read without
  // libhttp-parser, dispatched, and its body (Content-Length or none) framed here.
  bool TakeSimpleHead();
  void ParseFramedBody();
  void Dispatch(const HeadFacts& facts);
  // What a body piece, or the message's end, that the parser stopped at means.
  void DeliverBodyEvent();
  void NextMessage();
  void FailProtocol(int status);
  void Flush();
  void Close();
  void UpdateInterest();
  void ArmDeadline(TimeoutList& list, Duration timeout);
  void AppendResponse(int status, std::string_view headers, std::string_view content_type,
                      std::string_view body, bool close);
  bool EnsureReadRoom();

  net::EventLoop& loop_;
  int fd_;
  SSL* ssl_ = nullptr;
  bool tls_failed_ = false;            // a fatal TLS error: no close_notify is sent
  bool tls_read_wants_write_ = false;  // a read (the handshake) waits for the socket to drain
  bool tls_write_wants_read_ = false;  // a write waits for input (TLS 1.3 post-handshake)
  net::EventLoop::TimerId tls_pending_timer_ = net::EventLoop::kNoTimer;
  net::IpAddress peer_;
  // peer_ as text, made once: every request puts it in X-Forwarded-For and most key a
  // rule on it.
  char peer_text_[net::IpAddress::kMaxTextLength];
  uint8_t peer_text_length_ = 0;
  RequestHandler& handler_;
  RequestIdSource& ids_;
  const ProtocolLimits& limits_;

  http_parser parser_;
  Phase phase_ = Phase::kIdle;
  std::vector<char> in_;
  size_t in_keep_ = 0;    // bytes before this may be discarded
  size_t in_parsed_ = 0;  // parser position
  size_t in_end_ = 0;     // end of data read
  size_t head_start_ = 0;

  // The current request head, as offsets into in_ (they survive compaction).
  Span url_;
  HeaderSpans<100> header_spans_;
  bool head_too_large_ = false;
  bool body_too_large_ = false;
  uint64_t body_bytes_ = 0;
  // The fast path read this request's head, so its body is framed here, not by the
  // parser: `framed_body_left_` bytes of it are still to come.
  bool body_framed_here_ = false;
  uint64_t framed_body_left_ = 0;
  std::array<Header, 100> header_views_;
  char request_id_storage_[128];
  std::string normalized_path_;
  size_t request_id_length_ = 0;
  bool keep_alive_ = true;
  bool version_1_0_ = false;
  bool head_method_ = false;

  bool held_ = false;
  bool answered_ = false;
  // Streaming: the body's handler while the request is held for it, and the piece of
  // body the parser stopped at (OnBody pauses the parser so that the handler is called
  // outside it).
  StreamHandler* stream_ = nullptr;
  bool body_paused_ = false;
  bool message_complete_ = false;
  bool response_started_ = false;
  bool drain_wanted_ = false;
  const char* body_piece_ = nullptr;
  size_t body_piece_length_ = 0;
  bool close_after_write_ = false;
  bool draining_ = false;
  bool closed_ = false;
  bool awaiting_first_request_ = true;
  bool in_io_event_ = false;
  // Inside the handler's OnRequest: a response made there (a refusal of a request that
  // was held for the gateway) must not parse the next request from inside Dispatch.
  bool in_dispatch_ = false;
  // Reading or writing now is the caller's to finish: an I/O event, or a dispatch,
  // parses and flushes after the handler returns.
  bool nested() const { return in_io_event_ || in_dispatch_; }
  uint32_t interest_ = 0;

  std::string out_;
  size_t out_sent_ = 0;
  size_t out_ready_ = 0;       // bytes of out_ that may be written (completed requests)
  size_t response_start_ = 0;  // where the current request's response begins in out_

  // Output queued for the end of the turn (EventLoop::SendAtTurnEnd): a streamed
  // response written from another connection's event (the upstream's) goes out in one
  // send for its head and what body came with it, not one send per piece, and in one
  // batch with the turn's other sends.
  void FlushSoon();
  void QueueDeferredSend(net::IoBatch& batch) override;
  void FinishDeferredSend() override;
  bool flush_queued_ = false;
  // The loop's batch ran a receive or send for this connection (BeforeIoEvent,
  // QueueDeferredSend). A receive's result waits in `batch_received_` for ReadAvailable
  // to take as if it had just received it: bytes (in in_ already), the end of input
  // (0) or an error (-errno).
  void OnBatchedReceive(ssize_t result) override;
  void OnBatchedSend(ssize_t result) override;
  std::optional<ssize_t> batch_received_;

  // Membership of one TimeoutList.
  friend class TimeoutList;
  void OnDeadline();
  void DisarmDeadline();
  ConnectionTimeouts& timeouts_;
  TimeoutList* timeout_list_ = nullptr;
  ServerConnection* timeout_prev_ = nullptr;
  ServerConnection* timeout_next_ = nullptr;
  int64_t deadline_ns_ = 0;
  bool deadline_is_header_ = false;
};

}  // namespace sluice::http

#endif  // SLUICE_HTTP_SERVER_CONNECTION_H_
