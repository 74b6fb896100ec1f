#include "http/upstream_connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <utility>

#include "core/check.h"
#include "http/ascii.h"
#include "http/head_parser.h"

namespace sluice::http {
namespace {

// One event reads at most this many times before other connections get their turn.
constexpr int kMaxReadsPerEvent = 8;

UpstreamConnection* Self(http_parser* parser) {
  return static_cast<UpstreamConnection*>(parser->data);
}

}  // namespace

std::string_view ToString(UpstreamErrorKind kind) {
  switch (kind) {
    case UpstreamErrorKind::kConnectFailed:
      return "connect_failed";
    case UpstreamErrorKind::kConnectTimeout:
      return "connect_timeout";
    case UpstreamErrorKind::kFirstByteTimeout:
      return "first_byte_timeout";
    case UpstreamErrorKind::kIdleTimeout:
      return "idle_timeout";
    case UpstreamErrorKind::kClosed:
      return "closed";
    case UpstreamErrorKind::kReset:
      return "reset";
    case UpstreamErrorKind::kProtocol:
      return "protocol";
  }
  return "?";
}

std::optional<std::string_view> ResponseHead::FindHeader(std::string_view name) const {
  for (const Header& header : headers) {
    if (EqualsIgnoreCase(header.name, name)) return header.value;
  }
  return std::nullopt;
}

const http_parser_settings UpstreamConnection::kSettings = [] {
  http_parser_settings settings;
  http_parser_settings_init(&settings);
  settings.on_message_begin = &UpstreamConnection::OnMessageBegin;
  settings.on_status = &UpstreamConnection::OnStatus;
  settings.on_header_field = &UpstreamConnection::OnHeaderField;
  settings.on_header_value = &UpstreamConnection::OnHeaderValue;
  settings.on_headers_complete = &UpstreamConnection::OnHeadersComplete;
  settings.on_body = &UpstreamConnection::OnBody;
  settings.on_message_complete = &UpstreamConnection::OnMessageComplete;
  return settings;
}();

UpstreamConnection::UpstreamConnection(net::EventLoop& loop, const net::Endpoint& server,
                                       const UpstreamConnectionOptions& options, Handler& handler)
    : loop_(loop),
      server_(server),
      options_(options),
      handler_(&handler),
      in_(new char[kReadBufferSize]) {
  http_parser_init(&parser_, HTTP_RESPONSE);
  parser_.data = this;
}

UpstreamConnection::~UpstreamConnection() {
  if (send_queued_) loop_.CancelSendAtTurnEnd(this);
  Close();
}

// --- Connecting -------------------------------------------------------------------------

void UpstreamConnection::Connect() {
  SLUICE_CHECK(!connect_started_);
  connect_started_ = true;
  state_ = State::kConnecting;
  sockaddr_storage address;
  const socklen_t length = server_.ToSockaddr(&address);
  fd_ = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    Fail(UpstreamErrorKind::kConnectFailed, errno, "socket");
    return;
  }
  const int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  connect_deadline_ = loop_.now() + options_.timeouts.connect;
  if (connect(fd_, reinterpret_cast<const sockaddr*>(&address), length) == 0) {
    FinishConnect();  // loopback may connect at once
    return;
  }
  if (errno != EINPROGRESS) {
    Fail(UpstreamErrorKind::kConnectFailed, errno, "connect");
    return;
  }
  UpdateInterest();
}

void UpstreamConnection::FinishConnect() {
  int error = 0;
  socklen_t length = sizeof(error);
  if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
  if (error != 0) {
    Fail(UpstreamErrorKind::kConnectFailed, error, "connect");
    return;
  }
  if (options_.tls != nullptr) {
    ssl_ = options_.tls->NewSession(fd_);
    if (ssl_ == nullptr) {
      Fail(UpstreamErrorKind::kConnectFailed, 0, "TLS session");
      return;
    }
    handshaking_ = true;
    ContinueHandshake();
    return;
  }
  ConnectionUp();
}

void UpstreamConnection::ContinueHandshake() {
  tls_wants_read_ = tls_wants_write_ = false;
  const int result = SSL_do_handshake(ssl_);
  if (result == 1) {
    handshaking_ = false;
    ConnectionUp();
    return;
  }
  const int error = SSL_get_error(ssl_, result);
  if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
    tls_wants_read_ = error == SSL_ERROR_WANT_READ;
    tls_wants_write_ = error == SSL_ERROR_WANT_WRITE;
    UpdateInterest();
    return;
  }
  // Nothing of the request has gone out: as retriable as a refused connect.
  Fail(UpstreamErrorKind::kConnectFailed, error == SSL_ERROR_SYSCALL ? errno : 0,
       "TLS handshake with the upstream failed");
}

void UpstreamConnection::ConnectionUp() {
  state_ = request_active_ ? State::kBusy : State::kIdle;
  last_progress_ = loop_.now();
  if (unsent_bytes() > 0) Flush();  // a request queued while connecting
  NoteRequestSentIfDone();
  UpdateInterest();
}

ssize_t UpstreamConnection::ReceiveSome(char* buffer, size_t length) {
  // recv rather than read: the socket call skips the file layer.
  if (ssl_ == nullptr) return recv(fd_, buffer, length, 0);
  net::TlsWants wants;
  const ssize_t n = net::TlsRead(ssl_, buffer, length, wants);
  if (n < 0 && errno == EAGAIN && wants.write) tls_wants_write_ = true;
  return n;
}

ssize_t UpstreamConnection::SendSome(const char* buffer, size_t length) {
  if (ssl_ == nullptr) return send(fd_, buffer, length, MSG_NOSIGNAL);
  net::TlsWants wants;
  const ssize_t n = net::TlsWrite(ssl_, buffer, length, wants);
  tls_wants_read_ = n < 0 && wants.read;
  return n;
}

// --- Sending ----------------------------------------------------------------------------

void UpstreamConnection::StartRequest(Handler& handler, const UpstreamRequest& request) {
  handler_ = &handler;
  if (state_ == State::kClosed) {
    // Failed before the request could start (a connect refused at once): the error is
    // on its way to `handler`.
    SLUICE_CHECK(error_timer_ != net::EventLoop::kNoTimer);
    return;
  }
  SLUICE_CHECK(state_ == State::kIdle || (state_ == State::kConnecting && !request_active_));
  SLUICE_CHECK(request.body.kind != BodyKind::kUntilClose);
  ++requests_;
  ++generation_;
  request_active_ = true;
  request_body_ = request.body.kind;
  request_body_left_ = request.body.kind == BodyKind::kContentLength ? request.body.length : 0;
  request_body_finished_ = request.body.kind == BodyKind::kNone;
  request_sent_ = false;
  output_failed_ = false;
  send_blocked_ = false;
  head_method_ = request.head_method;
  paused_ = false;
  response_bytes_ = 0;
  batch_received_.reset();  // (one a pause left untaken: its bytes are in the buffer)

  http_parser_init(&parser_, HTTP_RESPONSE);
  parser_.data = this;
  event_ = ParseEvent::kNone;
  in_head_ = true;
  head_start_ = in_parsed_;
  body_framed_here_ = false;
  response_body_ = {};
  response_content_length_.reset();
  response_keep_alive_ = false;

  if (state_ == State::kIdle) state_ = State::kBusy;
  last_progress_ = loop_.now();
  iovec piece{const_cast<char*>(request.head.data()), request.head.size()};
  Write(&piece, 1);
  NoteRequestSentIfDone();
  UpdateInterest();
}

bool UpstreamConnection::SendBody(std::string_view bytes) {
  if (!request_active_ || state_ == State::kClosed) return false;  // the response ended first
  SLUICE_CHECK(!request_body_finished_);
  if (output_failed_) return false;
  if (!bytes.empty()) {
    if (request_body_ == BodyKind::kContentLength) {
      SLUICE_CHECK(bytes.size() <= request_body_left_);
      request_body_left_ -= bytes.size();
      iovec piece{const_cast<char*>(bytes.data()), bytes.size()};
      Write(&piece, 1);
    } else {
      char size_line[24];
      const int line_length = std::snprintf(size_line, sizeof(size_line), "%zx\r\n", bytes.size());
      static constexpr char kCrLf[] = "\r\n";
      iovec pieces[3] = {{size_line, static_cast<size_t>(line_length)},
                         {const_cast<char*>(bytes.data()), bytes.size()},
                         {const_cast<char*>(kCrLf), 2}};
      Write(pieces, 3);
    }
    UpdateInterest();
  }
  if (output_failed_ || state_ == State::kClosed) return false;
  if (unsent_bytes() > options_.send_high_water) {
    send_blocked_ = true;
    return false;
  }
  return true;
}

void UpstreamConnection::FinishBody() {
  if (!request_active_ || state_ == State::kClosed) return;
  SLUICE_CHECK(!request_body_finished_);
  if (request_body_ == BodyKind::kContentLength) {
    SLUICE_CHECK(request_body_left_ == 0);
  } else if (!output_failed_) {
    static constexpr char kLastChunk[] = "0\r\n\r\n";
    iovec piece{const_cast<char*>(kLastChunk), 5};
    Write(&piece, 1);
  }
  request_body_finished_ = true;
  NoteRequestSentIfDone();
  UpdateInterest();
}

void UpstreamConnection::Write(const iovec* pieces, int count) {
  if (output_failed_) return;
  const bool queued_before = unsent_bytes() > 0;
  if (state_ == State::kConnecting || unsent_bytes() > 0 || ssl_ != nullptr) {
    // Behind queued output (or before the connection is up): queue. The sent prefix is
    // dropped once it outweighs the rest, so the buffer stays within the high-water mark
    // plus a piece, and compacting costs O(1) a byte.
    if (out_sent_ > 0 && out_sent_ >= unsent_bytes()) {
      out_.erase(0, out_sent_);
      out_sent_ = 0;
    }
    for (int i = 0; i < count; ++i) {
      out_.append(static_cast<const char*>(pieces[i].iov_base), pieces[i].iov_len);
    }
    // TLS encrypts from the buffer: one write (one record when it fits) for all pieces.
    if (ssl_ != nullptr && state_ != State::kConnecting && !queued_before) Flush();
    return;
  }
  // Nothing queued on a connection that is up: to the end of the turn, where the
  // turn's sends go out in one batch (the pieces are copied: the caller's may not live
  // that long).
  out_.clear();
  out_sent_ = 0;
  for (int i = 0; i < count; ++i) {
    out_.append(static_cast<const char*>(pieces[i].iov_base), pieces[i].iov_len);
  }
  if (!send_queued_) {
    send_queued_ = true;
    loop_.SendAtTurnEnd(this);
  }
}

void UpstreamConnection::QueueDeferredSend(net::IoBatch& batch) {
  if (state_ == State::kClosed || state_ == State::kConnecting || output_failed_) return;
  if (unsent_bytes() == 0) return;
  batch.QueueSend(fd_, out_.data() + out_sent_, unsent_bytes(), this);
}

void UpstreamConnection::OnBatchedSend(ssize_t result) {
  // What the socket took; a failure or a full socket is met again by Flush's own send.
  if (result <= 0 || state_ == State::kClosed) return;
  out_sent_ += static_cast<size_t>(result);
  last_progress_ = loop_.now();
}

void UpstreamConnection::FinishDeferredSend() {
  send_queued_ = false;
  if (state_ == State::kClosed || state_ == State::kConnecting) return;
  Flush();  // the rest, if the socket took part; clears the buffer when all went
  if (state_ == State::kClosed) return;
  NoteRequestSentIfDone();
  if (!NotifyBodyDrained()) return;
  UpdateInterest();
}

bool UpstreamConnection::NotifyBodyDrained() {
  if (!send_blocked_ || output_failed_ || unsent_bytes() > options_.send_low_water) return true;
  const uint64_t generation = generation_;
  send_blocked_ = false;
  handler_->OnRequestBodyDrained(*this);
  if (generation == generation_) return true;
  UpdateInterest();
  return false;
}

void UpstreamConnection::Flush() {
  while (out_sent_ < out_.size()) {
    const ssize_t n = SendSome(out_.data() + out_sent_, out_.size() - out_sent_);
    if (n > 0) {
      out_sent_ += static_cast<size_t>(n);
      last_progress_ = loop_.now();
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    OutputFailed();
    return;
  }
  out_.clear();
  out_sent_ = 0;
}

// The server no longer takes our bytes (it closed or reset the connection). Its answer
// may already be on its way, as when it refuses a body early: keep reading, and let the
// end of input or the idle deadline decide how the request ends.
void UpstreamConnection::OutputFailed() {
  output_failed_ = true;
  send_blocked_ = false;
  out_.clear();
  out_sent_ = 0;
}

void UpstreamConnection::NoteRequestSentIfDone() {
  if (state_ != State::kBusy || !request_active_ || request_sent_ || output_failed_) return;
  if (!request_body_finished_ || unsent_bytes() > 0) return;
  request_sent_ = true;
  request_sent_at_ = loop_.now();
}

// --- Receiving --------------------------------------------------------------------------

void UpstreamConnection::OnIoEvent(uint32_t events) {
  if (state_ == State::kClosed) return;  // closed earlier this turn
  if (state_ == State::kConnecting) {
    if (handshaking_) {
      ContinueHandshake();
    } else {
      FinishConnect();  // flushes a request queued meanwhile (or starts the handshake)
    }
    if (state_ != State::kBusy) return;
    events &= ~static_cast<uint32_t>(EPOLLOUT);
  } else {
    if ((events & EPOLLOUT) && tls_wants_write_) {  // a TLS read waited for output room
      tls_wants_write_ = false;
      events |= EPOLLIN;
    }
    if (((events & EPOLLOUT) || ((events & EPOLLIN) && tls_wants_read_)) && unsent_bytes() > 0) {
      Flush();
      NoteRequestSentIfDone();
    }
  }
  if (!NotifyBodyDrained()) return;
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
    if (state_ == State::kIdle || !paused_) {
      ReadAvailable();
    } else if (events & EPOLLERR) {
      // Paused, so not reading; a reset will not wait for us.
      int error = 0;
      socklen_t length = sizeof(error);
      getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length);
      Fail(UpstreamErrorKind::kReset, error, "socket error");
    }
  }
  UpdateInterest();
}

bool UpstreamConnection::EnsureReadRoom() {
  if (in_end_ < kReadBufferSize) return true;
  // Keep the head being read (its spans point into the buffer), else only what the
  // parser has not consumed yet.
  const size_t keep_from = in_head_ ? head_start_ : in_parsed_;
  if (keep_from == 0) return false;
  std::memmove(in_.get(), in_.get() + keep_from, in_end_ - keep_from);
  in_end_ -= keep_from;
  in_parsed_ -= keep_from;
  if (in_head_) {
    head_start_ = 0;
    if (status_.length > 0) status_.offset -= keep_from;
    header_spans_.Shift(keep_from);
  }
  return true;
}

void UpstreamConnection::BeforeIoEvent(uint32_t events, net::IoBatch& batch) {
  // What ReadAvailable would receive first, for a response being read.
  if (!(events & EPOLLIN) || (events & (EPOLLERR | EPOLLHUP)) || ssl_ != nullptr) return;
  if (state_ != State::kBusy || paused_ || in_end_ == kReadBufferSize) return;
  batch_received_.reset();  // one a pause left untaken is stale now (its bytes stay)
  batch_room_ = kReadBufferSize - in_end_;
  batch.QueueReceive(fd_, in_.get() + in_end_, batch_room_, this);
}

void UpstreamConnection::OnBatchedReceive(ssize_t result) {
  // Nothing there (a spurious wake-up): ReadAvailable's own receive finds that out.
  // The connection is busy: nothing ran since BeforeIoEvent.
  if (result == -EAGAIN || result == -EINTR || state_ != State::kBusy) return;
  if (result > 0) {
    const size_t n = static_cast<size_t>(result);
    response_bytes_ += n;
    last_progress_ = loop_.now();
    in_end_ += n;
    batch_filled_ = n == batch_room_;
  }
  batch_received_ = result;
}

void UpstreamConnection::ReadAvailable() {
  const uint64_t generation = generation_;
  // What the loop's batch received (its bytes in the buffer and counted already) is
  // the first round's, instead of a receive. (Bytes left unparsed here are the next
  // Parse's.)
  std::optional<ssize_t> batched = std::exchange(batch_received_, std::nullopt);
  for (int i = 0; i < kMaxReadsPerEvent; ++i) {
    if (generation != generation_ || state_ == State::kClosed) return;
    if (state_ == State::kBusy && paused_) return;
    bool more;  // the receive filled the room it had: more may wait
    ssize_t n;
    if (batched.has_value()) {
      n = *std::exchange(batched, std::nullopt);
      more = n > 0 && batch_filled_;
      if (n < 0) {
        errno = static_cast<int>(-n);
        n = -1;
      }
    } else {
      if (!EnsureReadRoom()) {
        Fail(UpstreamErrorKind::kProtocol, 0, "response head larger than the read buffer");
        return;
      }
      const size_t room = kReadBufferSize - in_end_;
      n = ReceiveSome(in_.get() + in_end_, room);
      more = static_cast<size_t>(n) == room;
      if (n > 0) {
        if (state_ != State::kBusy) {
          Fail(UpstreamErrorKind::kProtocol, 0, "bytes from the server with no request");
          return;
        }
        response_bytes_ += static_cast<uint64_t>(n);
        last_progress_ = loop_.now();
        in_end_ += static_cast<size_t>(n);
      }
    }
    if (n > 0) {
      Parse();
      if (!more && (ssl_ == nullptr || SSL_pending(ssl_) == 0)) {
        return;  // drained; epoll says when more comes
      }
      continue;
    }
    if (n == 0) {
      OnEndOfInput();
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    Fail(UpstreamErrorKind::kReset, errno, "recv");
    return;
  }
}

void UpstreamConnection::OnEndOfInput() {
  if (state_ == State::kIdle) {
    Fail(UpstreamErrorKind::kClosed, 0, "closed by the server while idle");
    return;
  }
  if (!in_head_ && response_body_.kind == BodyKind::kUntilClose && in_parsed_ == in_end_) {
    response_keep_alive_ = false;
    CompleteResponse();  // a close-delimited body ends here
    return;
  }
  Fail(UpstreamErrorKind::kClosed, 0,
       response_bytes_ > 0 ? "closed by the server mid-response"
                           : "closed by the server before responding");
}

void UpstreamConnection::Parse() {
  const uint64_t generation = generation_;
  while (state_ == State::kBusy && !paused_) {
    if (body_framed_here_) {
      // Checked before the end of input: a complete (or empty) body ends the response
      // with no more bytes to read.
      if (framed_body_left_ == 0) {
        body_framed_here_ = false;
        CompleteResponse();
        return;
      }
      if (in_parsed_ == in_end_) break;
      const size_t take =
          static_cast<size_t>(std::min<uint64_t>(framed_body_left_, in_end_ - in_parsed_));
      const char* piece = in_.get() + in_parsed_;
      in_parsed_ += take;
      framed_body_left_ -= take;
      handler_->OnResponseBody(*this, {piece, take});
      if (generation != generation_) return;
      continue;
    }
    if (in_parsed_ == in_end_) break;
    if (in_head_ && in_parsed_ == head_start_ && TakeSimpleHead()) {
      if (generation != generation_) return;
      continue;
    }
    event_ = ParseEvent::kNone;
    const size_t n =
        http_parser_execute(&parser_, &kSettings, in_.get() + in_parsed_, in_end_ - in_parsed_);
    in_parsed_ += n;
    const http_errno error = HTTP_PARSER_ERRNO(&parser_);
    if (error == HPE_PAUSED) {
      http_parser_pause(&parser_, 0);
      switch (event_) {
        case ParseEvent::kHead:
          if (interim_) {
            // A 1xx: its message completes next, without a body; nothing to deliver.
            continue;
          }
          DeliverHead(static_cast<int>(parser_.status_code), parser_.http_minor);
          break;
        case ParseEvent::kBody:
          handler_->OnResponseBody(*this, {body_at_, body_length_});
          break;
        case ParseEvent::kComplete:
          if (interim_) {
            // The final response follows the interim one.
            interim_ = false;
            in_head_ = true;
            head_start_ = in_parsed_;
            continue;
          }
          CompleteResponse();
          return;
        case ParseEvent::kNone:
          break;
      }
      if (generation != generation_) return;
      continue;
    }
    if (error != HPE_OK) {
      Fail(UpstreamErrorKind::kProtocol, 0,
           bad_status_       ? "status 101 (no upgrade was asked for) or below 100"
           : head_too_large_ ? "too many response header fields"
                             : http_errno_description(error));
      return;
    }
    if (n == 0) {
      Fail(UpstreamErrorKind::kProtocol, 0, "the parser stopped");
      return;
    }
  }
  // Body bytes are not kept once delivered.
  if (state_ == State::kBusy && !in_head_ && in_parsed_ == in_end_) in_parsed_ = in_end_ = 0;
}

int UpstreamConnection::OnMessageBegin(http_parser* parser) {
  UpstreamConnection* self = Self(parser);
  self->header_spans_.Clear();
  self->status_ = {};
  self->interim_ = false;
  self->response_content_length_.reset();
  return 0;
}

int UpstreamConnection::OnStatus(http_parser* parser, const char* at, size_t length) {
  UpstreamConnection* self = Self(parser);
  const size_t offset = static_cast<size_t>(at - self->in_.get());
  if (self->status_.length == 0) self->status_.offset = offset;
  self->status_.length = offset + length - self->status_.offset;
  return 0;
}

int UpstreamConnection::OnHeaderField(http_parser* parser, const char* at, size_t length) {
  UpstreamConnection* self = Self(parser);
  const size_t offset = static_cast<size_t>(at - self->in_.get());
  if (!self->header_spans_.AddName(offset, length)) {
    self->head_too_large_ = true;  // too many header fields
    return 1;
  }
  return 0;
}

int UpstreamConnection::OnHeaderValue(http_parser* parser, const char* at, size_t length) {
  UpstreamConnection* self = Self(parser);
  const size_t offset = static_cast<size_t>(at - self->in_.get());
  self->header_spans_.AddValue(offset, length);
  return 0;
}

// Decides the body's framing. Returning 1 tells the parser there is no body whatever the
// headers say (HEAD, 1xx, 204, 304).
int UpstreamConnection::OnHeadersComplete(http_parser* parser) {
  UpstreamConnection* self = Self(parser);
  const unsigned status = parser->status_code;
  self->event_ = ParseEvent::kHead;
  http_parser_pause(parser, 1);
  if (status == 101 || status < 100) {
    self->bad_status_ = true;
    return -1;
  }
  if (status / 100 == 1) {
    self->interim_ = true;
    return 1;
  }
  BodyFraming& body = self->response_body_;
  body = {};
  if ((parser->flags & F_CONTENTLENGTH) && parser->content_length != ULLONG_MAX) {
    self->response_content_length_ = parser->content_length;
  }
  bool skip_body = false;
  if (self->head_method_ || status == 204 || status == 304) {
    skip_body = true;
  } else if (parser->flags & F_CHUNKED) {
    body.kind = BodyKind::kChunked;
  } else if (parser->uses_transfer_encoding) {
    // A transfer coding other than chunked last: the parser reads to the end.
    body.kind = BodyKind::kUntilClose;
  } else if (parser->content_length != ULLONG_MAX) {
    body = {BodyKind::kContentLength, parser->content_length};
  } else {
    body.kind = BodyKind::kUntilClose;
  }
  self->response_keep_alive_ = parser->http_major == 1 && parser->http_minor >= 1 &&
                               !(parser->flags & F_CONNECTION_CLOSE) &&
                               body.kind != BodyKind::kUntilClose;
  return skip_body ? 1 : 0;
}

int UpstreamConnection::OnBody(http_parser* parser, const char* at, size_t length) {
  UpstreamConnection* self = Self(parser);
  self->body_at_ = at;
  self->body_length_ = length;
  self->event_ = ParseEvent::kBody;
  http_parser_pause(parser, 1);
  return 0;
}

int UpstreamConnection::OnMessageComplete(http_parser* parser) {
  Self(parser)->event_ = ParseEvent::kComplete;
  http_parser_pause(parser, 1);
  return 0;
}

// The fast path (head_parser.h): a complete, simple response head at head_start_, read
// without libhttp-parser; its body (Content-Length) is framed in Parse.
bool UpstreamConnection::TakeSimpleHead() {
  SimpleHead head;
  if (!ParseSimpleHead(MessageKind::kResponse, in_.get(), head_start_, in_end_, SIZE_MAX,
                       header_spans_, head)) {
    return false;  // libhttp-parser reads it, from its first byte
  }
  in_parsed_ = head_start_ + head.length;
  status_ = head.reason;
  interim_ = false;
  response_content_length_ = head.content_length;
  // As OnHeadersComplete decides for a 2xx-5xx (not 204 or 304) with a Content-Length.
  response_body_ = {};
  if (!head_method_) response_body_ = {BodyKind::kContentLength, *head.content_length};
  response_keep_alive_ = head.version_minor >= 1 && !head.connection_close;
  body_framed_here_ = true;
  framed_body_left_ = head_method_ ? 0 : *head.content_length;
  DeliverHead(head.status, head.version_minor);
  return true;
}

void UpstreamConnection::DeliverHead(int status, int version_minor) {
  in_head_ = false;
  const char* base = in_.get();
  header_spans_.Views(base, header_views_.data());
  ResponseHead head;
  head.status = status;
  head.version_minor = version_minor;
  head.reason = {base + status_.offset, status_.length};
  head.headers = {header_views_.data(), header_spans_.size()};
  head.body = response_body_;
  head.content_length = response_content_length_;
  head.keep_alive = response_keep_alive_;
  handler_->OnResponseHead(*this, head);
}

void UpstreamConnection::CompleteResponse() {
  // Reusable only if nothing of this exchange is left on the wire in either direction.
  const bool reusable = response_keep_alive_ && request_body_finished_ && unsent_bytes() == 0 &&
                        !output_failed_ && in_parsed_ == in_end_;
  request_active_ = false;
  paused_ = false;
  body_framed_here_ = false;
  ++generation_;
  in_parsed_ = in_end_ = 0;
  // The deadline timer stays armed: an idle connection has no deadline, so it lapses when
  // it fires, and meanwhile the next request's later deadlines reuse it instead of
  // arming (and allocating) a timer of their own.
  if (reusable) {
    state_ = State::kIdle;
  } else {
    CloseSocket();
  }
  handler_->OnResponseComplete(*this);
}

void UpstreamConnection::PauseReading() {
  if (!request_active_ || paused_) return;
  paused_ = true;
  UpdateInterest();
}

void UpstreamConnection::ResumeReading() {
  if (!paused_) return;
  paused_ = false;
  batch_received_.reset();  // its bytes are parsed below; the socket says the rest
  if (state_ != State::kBusy) return;
  // Time spent paused was the client's; the upstream's idle clock starts again.
  last_progress_ = loop_.now();
  const uint64_t generation = generation_;
  // A body framed here may be complete with no byte left to parse: Parse ends it.
  if (in_parsed_ < in_end_ || body_framed_here_) Parse();
  // TLS: plaintext the session decrypted before the pause is invisible to epoll.
  if (generation == generation_ && state_ == State::kBusy && !paused_ && ssl_ != nullptr &&
      SSL_pending(ssl_) > 0) {
    ReadAvailable();
  }
  if (state_ == State::kClosed) return;
  // Also after the response completed: an idle connection watches for the server closing.
  UpdateInterest();
}

// --- Interest, deadlines, failure -------------------------------------------------------

void UpstreamConnection::UpdateInterest() {
  if (state_ == State::kClosed) return;
  uint32_t wanted = 0;
  if (state_ == State::kConnecting) {
    wanted = !handshaking_ ? EPOLLOUT : tls_wants_read_ ? EPOLLIN : EPOLLOUT;
  } else {
    // Idle: watch for the server closing. Busy: read unless the caller paused us.
    if (state_ == State::kIdle || !paused_ || tls_wants_read_) wanted |= EPOLLIN;
    // (Output waiting for the turn's end needs no readiness; a send that found the
    // socket full does.)
    if ((unsent_bytes() > 0 && !send_queued_) || tls_wants_write_) wanted |= EPOLLOUT;
  }
  // A paused connection with nothing to send leaves the epoll set: with no interest,
  // level-triggered epoll would still report a hang-up over and over.
  if (wanted == 0) {
    if (registered_) loop_.Remove(fd_);
    registered_ = false;
  } else if (!registered_) {
    loop_.Add(fd_, wanted, this);
    registered_ = true;
  } else if (wanted != interest_) {
    loop_.Modify(fd_, wanted, this);
  }
  interest_ = wanted;
  ArmTimer();
}

std::optional<Timestamp> UpstreamConnection::FirstByteDeadline() const {
  if (state_ != State::kBusy || !request_sent_ || response_bytes_ > 0) return std::nullopt;
  return request_sent_at_ + options_.timeouts.first_byte;
}

std::optional<Timestamp> UpstreamConnection::IdleDeadline() const {
  if (state_ != State::kBusy) return std::nullopt;
  // Waiting on the upstream: to take our output, or to send more of its response. Not
  // while the caller has paused the response or has not pushed more of the request.
  const bool waiting = unsent_bytes() > 0 || output_failed_ || (response_bytes_ > 0 && !paused_);
  if (!waiting) return std::nullopt;
  return last_progress_ + options_.timeouts.idle;
}

std::optional<Timestamp> UpstreamConnection::NextDeadline() const {
  if (state_ == State::kConnecting) return connect_deadline_;
  const std::optional<Timestamp> first_byte = FirstByteDeadline();
  const std::optional<Timestamp> idle = IdleDeadline();
  if (first_byte && idle) return std::min(*first_byte, *idle);
  return first_byte ? first_byte : idle;
}

void UpstreamConnection::ArmTimer() {
  const std::optional<Timestamp> next = NextDeadline();
  if (!next) return;  // a timer still armed finds nothing due and lapses
  // An armed timer at or before the deadline stays: it re-arms when it fires early.
  if (timer_ != net::EventLoop::kNoTimer) {
    if (timer_at_ <= *next) return;
    loop_.Cancel(timer_);
  }
  timer_at_ = *next;
  timer_ = loop_.RunAt(*next, [this] { OnTimer(); });
}

// Every deadline that NextDeadline() can return and that has passed fails here, so the
// re-armed timer is always in the future.
void UpstreamConnection::OnTimer() {
  timer_ = net::EventLoop::kNoTimer;
  const Timestamp now = loop_.now();
  if (state_ == State::kConnecting && now >= connect_deadline_) {
    Fail(UpstreamErrorKind::kConnectTimeout, 0, "connect timed out");
    return;
  }
  if (const auto deadline = FirstByteDeadline(); deadline && now >= *deadline) {
    Fail(UpstreamErrorKind::kFirstByteTimeout, 0, "no response byte in time");
    return;
  }
  if (const auto deadline = IdleDeadline(); deadline && now >= *deadline) {
    Fail(UpstreamErrorKind::kIdleTimeout, 0, "no progress in time");
    return;
  }
  ArmTimer();
}

void UpstreamConnection::Fail(UpstreamErrorKind kind, int error_number, std::string_view detail) {
  if (state_ == State::kClosed) return;
  error_ = UpstreamError{};
  error_.kind = kind;
  error_.error_number = error_number;
  error_.response_started = request_active_ && response_bytes_ > 0;
  error_.reused = request_active_ ? requests_ > 1 : requests_ > 0;
  error_.idle = !request_active_;
  const int length = error_number != 0
                         ? std::snprintf(error_detail_, sizeof(error_detail_), "%.*s: %s",
                                         static_cast<int>(detail.size()), detail.data(),
                                         std::strerror(error_number))
                         : std::snprintf(error_detail_, sizeof(error_detail_), "%.*s",
                                         static_cast<int>(detail.size()), detail.data());
  error_.detail = {error_detail_,
                   std::min(static_cast<size_t>(std::max(length, 0)), sizeof(error_detail_) - 1)};
  request_active_ = false;
  CloseSocket();
  // Reported from the loop, so that no caller sees it from inside its own call.
  error_timer_ = loop_.RunAt(loop_.now(), [this] {
    error_timer_ = net::EventLoop::kNoTimer;
    handler_->OnUpstreamError(*this, error_);
  });
}

void UpstreamConnection::CloseSocket() {
  ++generation_;
  if (registered_) loop_.Remove(fd_);
  registered_ = false;
  interest_ = 0;
  if (ssl_ != nullptr) SSL_free(ssl_);
  ssl_ = nullptr;
  handshaking_ = tls_wants_read_ = tls_wants_write_ = false;
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  state_ = State::kClosed;
  if (timer_ != net::EventLoop::kNoTimer) loop_.Cancel(timer_);
  timer_ = net::EventLoop::kNoTimer;
  out_.clear();
  out_sent_ = 0;
  in_parsed_ = in_end_ = 0;
  batch_received_.reset();
  send_blocked_ = false;
}

void UpstreamConnection::Close() {
  if (error_timer_ != net::EventLoop::kNoTimer) loop_.Cancel(error_timer_);
  error_timer_ = net::EventLoop::kNoTimer;
  request_active_ = false;
  if (state_ != State::kClosed) CloseSocket();
}

}  // namespace sluice::http
