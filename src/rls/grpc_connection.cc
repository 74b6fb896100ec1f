#include "rls/grpc_connection.h"

#include <nghttp2/nghttp2.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

#include "envoy/service/ratelimit/v3/rls.pb.h"

namespace sluice::rls {

using envoy::service::ratelimit::v3::RateLimitRequest;
using envoy::service::ratelimit::v3::RateLimitResponse;

namespace {

// A receive's worth: Envoy's calls are a few hundred bytes, so one fills it with many.
constexpr size_t kReceiveBytes = 32 * 1024;
// Output waiting for the client past this: no more input is read, no more output made.
constexpr size_t kMaxPendingOutput = 256 * 1024;
// The request's header fields, as HTTP/2 counts them (name + value + 32 each).
constexpr size_t kMaxHeaderListBytes = 16 * 1024;
// How long a finished connection waits for its client to close after the server shut
// its sending side.
constexpr Duration kLinger = std::chrono::seconds(2);
// A stream's buffers above this are let go when it is reused (Envoy's calls are small).
constexpr size_t kMaxKeptBytes = 16 * 1024;
// The gRPC message prefix: a compressed flag and a 4-byte big-endian length.
constexpr size_t kPrefixBytes = 5;

// gRPC status codes (grpc/status.h), without gRPC's headers.
constexpr int kInvalidArgument = 3;
constexpr int kDeadlineExceeded = 4;
constexpr int kResourceExhausted = 8;
constexpr int kUnimplemented = 12;
constexpr int kInternal = 13;

nghttp2_nv ConstantField(std::string_view name, std::string_view value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

// A field whose value nghttp2 copies when the frame is submitted.
nghttp2_nv CopiedField(std::string_view name, const std::string& value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NO_COPY_NAME};
}

bool IsGrpcContentType(std::string_view value) {
  constexpr std::string_view kGrpc = "application/grpc";
  if (value.substr(0, kGrpc.size()) != kGrpc) return false;
  return value.size() == kGrpc.size() || value[kGrpc.size()] == '+' || value[kGrpc.size()] == ';';
}

// grpc-timeout: at most 8 digits and a unit (H, M, S, m, u, n); nullopt when malformed.
std::optional<int64_t> ParseGrpcTimeoutNanos(std::string_view value) {
  if (value.size() < 2 || value.size() > 9) return std::nullopt;
  int64_t amount = 0;
  for (const char c : value.substr(0, value.size() - 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    amount = amount * 10 + (c - '0');
  }
  int64_t unit;
  switch (value.back()) {
    case 'H':
      unit = int64_t{3600} * 1'000'000'000;
      break;
    case 'M':
      unit = int64_t{60} * 1'000'000'000;
      break;
    case 'S':
      unit = 1'000'000'000;
      break;
    case 'm':
      unit = 1'000'000;
      break;
    case 'u':
      unit = 1'000;
      break;
    case 'n':
      unit = 1;
      break;
    default:
      return std::nullopt;
  }
  // Past about a century (99999999 hours is legal) it is no deadline at all.
  constexpr int64_t kLongest = int64_t{100} * 365 * 24 * 3600 * 1'000'000'000;
  if (amount > kLongest / unit) return std::nullopt;
  return amount * unit;
}

}  // namespace

std::string PercentEncodeGrpcMessage(std::string_view message) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(message.size());
  for (const char c : message) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte <= 0x7e && byte != '%') {
      out += c;
    } else {
      out += '%';
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    }
  }
  return out;
}

// One call: its request as it arrives, the decider's state, and its answer.
struct GrpcConnection::Stream {
  GrpcConnection* connection = nullptr;
  int32_t id = 0;
  // From the request's header fields.
  bool post = false;
  bool known_path = false;
  bool grpc_content = false;
  bool identity_encoding = true;
  std::string encoding;     // grpc-encoding, when not identity
  int64_t deadline_ns = 0;  // 0: no grpc-timeout
  size_t header_bytes = 0;
  // The body: one gRPC message, prefix included.
  std::string body;
  bool too_large = false;
  bool over_budget = false;  // too large for the connection's kMaxBufferedBytes
  bool dispatched = false;   // the request was whole and has been taken on
  bool deciding = false;     // with the store: kept until it answers
  bool answered = false;     // a response was submitted
  bool closed = false;       // nghttp2 is done with the stream
  net::EventLoop::TimerId deadline_timer = net::EventLoop::kNoTimer;
  RateLimitRequest request;
  RateLimitResponse response;
  RlsDecider::CallState state = RlsDecider::NewCallState();
  std::string message;  // the framed response message
  size_t message_sent = 0;

  void Reset() {
    id = 0;
    post = known_path = grpc_content = too_large = over_budget = false;
    dispatched = deciding = answered = closed = false;
    identity_encoding = true;
    encoding.clear();
    deadline_ns = 0;
    header_bytes = 0;
    deadline_timer = net::EventLoop::kNoTimer;
    message_sent = 0;
    if (body.capacity() > kMaxKeptBytes) {
      std::string().swap(body);
      request = RateLimitRequest();
      response = RateLimitResponse();
      std::string().swap(message);
      state = RlsDecider::NewCallState();
    }
    body.clear();
    message.clear();
  }
};

// nghttp2's callbacks, with the connection as the session's user data.
struct Callbacks {
  static GrpcConnection::Stream* StreamOf(nghttp2_session* session, int32_t id) {
    return static_cast<GrpcConnection::Stream*>(nghttp2_session_get_stream_user_data(session, id));
  }

  static int OnBeginHeaders(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    auto* connection = static_cast<GrpcConnection*>(user);
    GrpcConnection::Stream* stream = connection->NewStream(frame->hd.stream_id);
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, stream);
    return 0;
  }

  static int OnHeader(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                      size_t name_length, const uint8_t* value, size_t value_length,
                      uint8_t /*flags*/, void* /*user*/) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    GrpcConnection::Stream* stream = StreamOf(session, frame->hd.stream_id);
    if (stream == nullptr) return 0;
    stream->header_bytes += name_length + value_length + 32;
    if (stream->header_bytes > kMaxHeaderListBytes) {
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // the stream is reset
    }
    const std::string_view n(reinterpret_cast<const char*>(name), name_length);
    const std::string_view v(reinterpret_cast<const char*>(value), value_length);
    if (n == ":method") {
      stream->post = v == "POST";
    } else if (n == ":path") {
      stream->known_path = v == GrpcConnection::kPath;
    } else if (n == "content-type") {
      stream->grpc_content = IsGrpcContentType(v);
    } else if (n == "grpc-encoding") {
      stream->identity_encoding = v == "identity";
      stream->encoding.assign(v.substr(0, 64));
    } else if (n == "grpc-timeout") {
      // A malformed one is ignored, as gRPC C++ does.
      if (const std::optional<int64_t> nanos = ParseGrpcTimeoutNanos(v)) {
        const int64_t now = ToNanos(stream->connection->loop_.now());
        stream->deadline_ns = now + std::max<int64_t>(*nanos, 1);
      }
    }
    return 0;
  }

  static int OnDataChunk(nghttp2_session* session, uint8_t /*flags*/, int32_t stream_id,
                         const uint8_t* data, size_t length, void* /*user*/) {
    GrpcConnection::Stream* stream = StreamOf(session, stream_id);
    if (stream == nullptr || stream->dispatched || stream->too_large) return 0;
    GrpcConnection& connection = *stream->connection;
    if (stream->body.size() + length > GrpcConnection::kMaxMessageBytes + kPrefixBytes ||
        connection.buffered_bytes_ + length > GrpcConnection::kMaxBufferedBytes) {
      // Answered RESOURCE_EXHAUSTED when the request ends; what else comes is dropped.
      stream->too_large = true;
      stream->over_budget =
          stream->body.size() + length <= GrpcConnection::kMaxMessageBytes + kPrefixBytes;
      connection.ReleaseBody(*stream);
      return 0;
    }
    stream->body.append(reinterpret_cast<const char*>(data), length);
    connection.buffered_bytes_ += length;
    return 0;
  }

  static int OnFrameReceived(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
      // The client's greeting (preface, then SETTINGS) is complete.
      auto* connection = static_cast<GrpcConnection*>(user);
      connection->loop_.Cancel(connection->greeting_timer_);
      connection->greeting_timer_ = net::EventLoop::kNoTimer;
      return 0;
    }
    if (frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) return 0;
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
    GrpcConnection::Stream* stream = StreamOf(session, frame->hd.stream_id);
    if (stream == nullptr || stream->dispatched) return 0;
    static_cast<GrpcConnection*>(user)->Dispatch(*stream);
    return 0;
  }

  static int OnStreamClose(nghttp2_session* session, int32_t stream_id, uint32_t /*error*/,
                           void* user) {
    GrpcConnection::Stream* stream = StreamOf(session, stream_id);
    if (stream == nullptr) return 0;
    stream->closed = true;
    // A call still with the store is recycled when the store answers.
    if (!stream->deciding) static_cast<GrpcConnection*>(user)->Recycle(stream);
    return 0;
  }

  // The response message, then the trailers (grpc-status 0) in place of END_STREAM.
  static ssize_t ReadMessage(nghttp2_session* session, int32_t stream_id, uint8_t* buffer,
                             size_t length, uint32_t* data_flags, nghttp2_data_source* source,
                             void* /*user*/) {
    auto* stream = static_cast<GrpcConnection::Stream*>(source->ptr);
    const size_t n = std::min(length, stream->message.size() - stream->message_sent);
    std::memcpy(buffer, stream->message.data() + stream->message_sent, n);
    stream->message_sent += n;
    if (stream->message_sent == stream->message.size()) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      static nghttp2_nv ok[] = {ConstantField("grpc-status", "0")};
      if (nghttp2_submit_trailer(session, stream_id, ok, 1) != 0) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
      }
    }
    return static_cast<ssize_t>(n);
  }

  static nghttp2_session_callbacks* Get() {
    static nghttp2_session_callbacks* callbacks = [] {
      nghttp2_session_callbacks* c = nullptr;
      nghttp2_session_callbacks_new(&c);
      nghttp2_session_callbacks_set_on_begin_headers_callback(c, &OnBeginHeaders);
      nghttp2_session_callbacks_set_on_header_callback(c, &OnHeader);
      nghttp2_session_callbacks_set_on_data_chunk_recv_callback(c, &OnDataChunk);
      nghttp2_session_callbacks_set_on_frame_recv_callback(c, &OnFrameReceived);
      nghttp2_session_callbacks_set_on_stream_close_callback(c, &OnStreamClose);
      return c;
    }();
    return callbacks;
  }
};

GrpcConnection::GrpcConnection(net::EventLoop& loop, int fd, const RlsDecider& decider,
                               RlsStoreAccess& access, GrpcConnectionOwner& owner,
                               Timeouts timeouts)
    : loop_(loop), fd_(fd), decider_(decider), access_(access), owner_(owner), timeouts_(timeouts) {
  in_.resize(kReceiveBytes);
}

GrpcConnection::~GrpcConnection() {
  if (!closed_) {
    if (flush_queued_) loop_.CancelSendAtTurnEnd(this);
    loop_.Remove(fd_);
    close(fd_);
  }
  loop_.Cancel(linger_timer_);
  loop_.Cancel(greeting_timer_);
  loop_.Cancel(progress_timer_);
  for (const auto& stream : streams_) {
    if (stream->deadline_timer != net::EventLoop::kNoTimer) loop_.Cancel(stream->deadline_timer);
  }
  if (session_ != nullptr) nghttp2_session_del(session_);
}

void GrpcConnection::Start() {
  nghttp2_session_server_new(&session_, Callbacks::Get(), this);
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, kMaxConcurrentCalls},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(kMaxHeaderListBytes)},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  // A connection-wide receive window of 1 MiB instead of HTTP/2's 64 KiB: many calls in
  // flight need no window update each.
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, 1 << 20);
  last_progress_ns_ = last_sent_ns_ = ToNanos(loop_.now());
  CheckProgress();
  greeting_timer_ = loop_.RunAt(loop_.now() + timeouts_.greeting, [this] {
    greeting_timer_ = net::EventLoop::kNoTimer;
    Close();
  });
  interest_ = EPOLLIN;
  loop_.Add(fd_, interest_, this);
  FlushSoon();
}

void GrpcConnection::Drain() {
  if (closed_ || draining_ || lingering_) return;
  draining_ = true;
  // The calls taken so far are answered; newer ones the client retries elsewhere.
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  FlushSoon();
}

void GrpcConnection::Close() {
  if (closed_) return;
  closed_ = true;
  if (flush_queued_) loop_.CancelSendAtTurnEnd(this);
  flush_queued_ = false;
  loop_.Cancel(linger_timer_);
  linger_timer_ = net::EventLoop::kNoTimer;
  loop_.Cancel(greeting_timer_);
  greeting_timer_ = net::EventLoop::kNoTimer;
  loop_.Cancel(progress_timer_);
  progress_timer_ = net::EventLoop::kNoTimer;
  loop_.Remove(fd_);
  close(fd_);
  nghttp2_session_del(session_);
  session_ = nullptr;
  MaybeDone();
}

void GrpcConnection::MaybeDone() {
  if (!closed_ || deciding_ > 0 || done_told_) return;
  done_told_ = true;
  owner_.OnGrpcConnectionDone(*this);
}

GrpcConnection::Stream* GrpcConnection::NewStream(int32_t id) {
  Stream* stream;
  if (free_streams_.empty()) {
    streams_.push_back(std::make_unique<Stream>());
    stream = streams_.back().get();
    stream->connection = this;
  } else {
    stream = free_streams_.back();
    free_streams_.pop_back();
  }
  stream->id = id;
  return stream;
}

void GrpcConnection::ReleaseBody(Stream& stream) {
  buffered_bytes_ -= stream.body.size();
  if (stream.body.capacity() > kMaxKeptBytes) {
    std::string().swap(stream.body);
  } else {
    stream.body.clear();
  }
}

void GrpcConnection::Recycle(Stream* stream) {
  ReleaseBody(*stream);
  stream->Reset();
  free_streams_.push_back(stream);
}

void GrpcConnection::Dispatch(Stream& stream) {
  stream.dispatched = true;
  DispatchBody(stream);
  ReleaseBody(stream);  // parsed (or refused): the bytes are not needed any more
}

void GrpcConnection::DispatchBody(Stream& stream) {
  if (!stream.post) return AnswerHttpStatus(stream, 405);
  if (!stream.grpc_content) return AnswerHttpStatus(stream, 415);
  if (!stream.known_path) return AnswerError(stream, kUnimplemented, "unknown method");
  if (stream.too_large) {
    return AnswerError(stream, kResourceExhausted,
                       stream.over_budget ? "the connection's unfinished requests hold over 16 MiB"
                                          : "request message larger than 4194304 bytes");
  }
  const std::string& body = stream.body;
  if (body.size() < kPrefixBytes) return AnswerError(stream, kInternal, "no request message");
  const auto* prefix = reinterpret_cast<const uint8_t*>(body.data());
  const size_t length = (size_t{prefix[1]} << 24) | (size_t{prefix[2]} << 16) |
                        (size_t{prefix[3]} << 8) | size_t{prefix[4]};
  if (length > kMaxMessageBytes) {
    return AnswerError(stream, kResourceExhausted, "request message larger than 4194304 bytes");
  }
  if (kPrefixBytes + length > body.size()) {
    return AnswerError(stream, kInternal, "the request message is cut short");
  }
  if (kPrefixBytes + length < body.size()) {
    return AnswerError(stream, kInternal, "more than one request message for a unary call");
  }
  if (prefix[0] & 1) {
    if (stream.identity_encoding) {
      return AnswerError(stream, kInternal, "a compressed message without grpc-encoding");
    }
    return AnswerError(stream, kUnimplemented,
                       "grpc-encoding " + stream.encoding + " is not supported (identity only)");
  }
  if (!stream.request.ParseFromArray(body.data() + kPrefixBytes, static_cast<int>(length))) {
    return AnswerError(stream, kInternal, "the request is not a RateLimitRequest");
  }
  stream.deciding = true;
  ++deciding_;
  Stream* s = &stream;
  decider_.DecideAsync(
      stream.request, stream.response,
      [s](std::string error) { s->connection->OnDecided(*s, std::move(error)); },
      stream.state.get(), &access_);
  // With the store still: the call's deadline, when it has one, is kept from here.
  if (s->deciding && s->deadline_ns > 0 && !closed_) {
    s->deadline_timer = loop_.RunAt(FromNanos(s->deadline_ns), [this, s] { OnDeadline(*s); });
  }
}

void GrpcConnection::OnDecided(Stream& stream, std::string error) {
  stream.deciding = false;
  --deciding_;
  if (stream.deadline_timer != net::EventLoop::kNoTimer) {
    loop_.Cancel(stream.deadline_timer);
    stream.deadline_timer = net::EventLoop::kNoTimer;
  }
  if (closed_) return MaybeDone();             // the streams go with the connection
  if (stream.closed) return Recycle(&stream);  // the client reset it meanwhile
  if (stream.answered) return;                 // past its deadline, answered so
  if (!error.empty()) {
    AnswerError(stream, kInvalidArgument, error);
  } else {
    Answer(stream);
  }
  FlushSoon();
}

void GrpcConnection::OnDeadline(Stream& stream) {
  stream.deadline_timer = net::EventLoop::kNoTimer;
  if (closed_ || stream.closed || stream.answered) return;
  AnswerError(stream, kDeadlineExceeded, "the store did not answer within the call's deadline");
  FlushSoon();
}

namespace {
// Submits the response (with a body, or ending with its header fields); a stream that
// nghttp2 will not answer is reset instead.
void Respond(nghttp2_session* session, GrpcConnection::Stream& stream, const nghttp2_nv* headers,
             size_t count, const nghttp2_data_provider* body) {
  stream.answered = true;
  if (nghttp2_submit_response(session, stream.id, headers, count, body) != 0) {
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream.id, NGHTTP2_INTERNAL_ERROR);
  }
}
}  // namespace

void GrpcConnection::Answer(Stream& stream) {
  const size_t length = stream.response.ByteSizeLong();
  stream.message.resize(kPrefixBytes + length);
  auto* out = reinterpret_cast<uint8_t*>(stream.message.data());
  out[0] = 0;
  out[1] = static_cast<uint8_t>(length >> 24);
  out[2] = static_cast<uint8_t>(length >> 16);
  out[3] = static_cast<uint8_t>(length >> 8);
  out[4] = static_cast<uint8_t>(length);
  stream.response.SerializeWithCachedSizesToArray(out + kPrefixBytes);
  stream.message_sent = 0;
  static nghttp2_nv headers[] = {ConstantField(":status", "200"),
                                 ConstantField("content-type", "application/grpc")};
  nghttp2_data_provider provider;
  provider.source.ptr = &stream;
  provider.read_callback = &Callbacks::ReadMessage;
  Respond(session_, stream, headers, std::size(headers), &provider);
}

void GrpcConnection::AnswerError(Stream& stream, int grpc_status, std::string_view message) {
  const std::string status = std::to_string(grpc_status);
  const std::string encoded = PercentEncodeGrpcMessage(message);
  const nghttp2_nv headers[] = {
      ConstantField(":status", "200"), ConstantField("content-type", "application/grpc"),
      CopiedField("grpc-status", status), CopiedField("grpc-message", encoded)};
  Respond(session_, stream, headers, std::size(headers), nullptr);
}

void GrpcConnection::AnswerHttpStatus(Stream& stream, int http_status) {
  const std::string status = std::to_string(http_status);
  const nghttp2_nv headers[] = {CopiedField(":status", status)};
  Respond(session_, stream, headers, std::size(headers), nullptr);
}

// --- I/O ------------------------------------------------------------------------------

void GrpcConnection::BeforeIoEvent(uint32_t events, net::IoBatch& batch) {
  if (!(events & EPOLLIN) || (events & (EPOLLERR | EPOLLHUP)) || closed_ || lingering_) return;
  if (out_.size() - out_sent_ > kMaxPendingOutput) return;
  batch_received_.reset();
  batch.QueueReceive(fd_, in_.data(), in_.size(), this);
}

void GrpcConnection::OnBatchedReceive(ssize_t result) {
  // Nothing there (a spurious wake-up): ReadAvailable's own receive finds that out.
  if (closed_ || result == -EAGAIN || result == -EINTR) return;
  batch_received_ = result;
}

void GrpcConnection::OnIoEvent(uint32_t events) {
  if (closed_) return;
  if (events & (EPOLLERR | EPOLLHUP)) return Close();
  if (lingering_) return OnLingerInput();
  if (events & EPOLLIN) ReadAvailable();
  if (!closed_ && (events & EPOLLOUT)) Flush();
  if (!closed_) CloseIfFinished();
  if (!closed_) UpdateInterest();
}

void GrpcConnection::ReadAvailable() {
  for (int i = 0; i < 4 && !closed_; ++i) {
    // The client reads its answers before more of its calls are taken; but bytes the
    // loop's batch already received are taken (BeforeIoEvent checked the same bound).
    if (!batch_received_ && out_.size() - out_sent_ > kMaxPendingOutput) break;
    ssize_t n;
    if (batch_received_) {
      n = *std::exchange(batch_received_, std::nullopt);
      if (n < 0) {
        errno = static_cast<int>(-n);
        n = -1;
      }
    } else {
      n = recv(fd_, in_.data(), in_.size(), 0);
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
      return Close();
    }
    if (n == 0) return Close();  // the client is gone: its calls can no longer be answered
    last_progress_ns_ = ToNanos(loop_.now());
    if (!Feed(in_.data(), static_cast<size_t>(n))) return;
    if (static_cast<size_t>(n) < in_.size()) break;  // likely drained
  }
  if (!closed_ && nghttp2_session_want_write(session_)) FlushSoon();
}

bool GrpcConnection::Feed(const char* bytes, size_t length) {
  const ssize_t used =
      nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(bytes), length);
  if (used >= 0) return true;
  // Not HTTP/2 (another protocol's bytes), or a peer that breaks its rules: a GOAWAY
  // saying so goes out if the socket takes it at once, then the connection closes.
  nghttp2_session_terminate_session(
      session_, used == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR);
  PullOutput();
  if (out_sent_ < out_.size()) {
    (void)send(fd_, out_.data() + out_sent_, out_.size() - out_sent_, MSG_NOSIGNAL);
  }
  Close();
  return false;
}

bool GrpcConnection::PullOutput() {
  if (out_sent_ == out_.size()) {
    out_.clear();
    out_sent_ = 0;
  }
  bool any = false;
  while (out_.size() - out_sent_ < kMaxPendingOutput) {
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n <= 0) break;  // nothing more (an error is nghttp2's own: out of memory)
    out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    any = true;
  }
  return any;
}

void GrpcConnection::FlushSoon() {
  if (flush_queued_ || closed_) return;
  flush_queued_ = true;
  loop_.SendAtTurnEnd(this);
}

void GrpcConnection::QueueDeferredSend(net::IoBatch& batch) {
  if (closed_) return;
  PullOutput();
  if (out_sent_ < out_.size()) {
    batch.QueueSend(fd_, out_.data() + out_sent_, out_.size() - out_sent_, this);
  }
}

void GrpcConnection::OnBatchedSend(ssize_t result) {
  // What the socket took; a failure or a full socket is met again by Flush's own send.
  if (result > 0 && !closed_) {
    out_sent_ += static_cast<size_t>(result);
    last_progress_ns_ = last_sent_ns_ = ToNanos(loop_.now());
  }
}

void GrpcConnection::FinishDeferredSend() {
  flush_queued_ = false;
  if (closed_) return;
  Flush();
  if (!closed_) CloseIfFinished();
  if (!closed_) UpdateInterest();
}

void GrpcConnection::Flush() {
  while (!closed_) {
    PullOutput();
    if (out_sent_ == out_.size()) {
      want_out_ = false;
      return;
    }
    const ssize_t n = send(fd_, out_.data() + out_sent_, out_.size() - out_sent_, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        want_out_ = true;
        return;
      }
      return Close();
    }
    out_sent_ += static_cast<size_t>(n);
    last_progress_ns_ = last_sent_ns_ = ToNanos(loop_.now());
    if (out_sent_ < out_.size()) {
      want_out_ = true;  // the socket is full
      return;
    }
  }
}

void GrpcConnection::UpdateInterest() {
  uint32_t wanted = 0;
  if (lingering_ || out_.size() - out_sent_ <= kMaxPendingOutput) wanted |= EPOLLIN;
  if (want_out_ && !lingering_) wanted |= EPOLLOUT;
  if (wanted == interest_) return;
  interest_ = wanted;
  loop_.Modify(fd_, interest_, this);
}

void GrpcConnection::CloseIfFinished() {
  if (lingering_ || out_sent_ < out_.size()) return;
  if (nghttp2_session_want_read(session_) || nghttp2_session_want_write(session_)) return;
  lingering_ = true;
  shutdown(fd_, SHUT_WR);
  linger_timer_ = loop_.RunAt(loop_.now() + kLinger, [this] {
    linger_timer_ = net::EventLoop::kNoTimer;
    Close();
  });
  batch_received_.reset();  // what the batch took is dropped like the rest
  OnLingerInput();
}

void GrpcConnection::CheckProgress() {
  progress_timer_ = net::EventLoop::kNoTimer;
  if (closed_) return;
  const int64_t now = ToNanos(loop_.now());
  const auto nanos = [](Duration d) { return std::chrono::nanoseconds(d).count(); };
  // A client that does not read what it is sent holds the output (and its calls).
  if (out_sent_ < out_.size() && now - last_sent_ns_ > nanos(timeouts_.stall)) return Close();
  const int64_t quiet = now - last_progress_ns_;
  if (quiet > 2 * nanos(timeouts_.idle)) return Close();  // a GOAWAY did not end it
  if (quiet > nanos(timeouts_.idle) && !idle_drained_ && !lingering_) {
    idle_drained_ = true;
    Drain();
  }
  const Duration every = std::min({timeouts_.stall, timeouts_.idle}) / 4;
  progress_timer_ = loop_.RunAt(loop_.now() + every, [this] { CheckProgress(); });
}

void GrpcConnection::OnLingerInput() {
  while (!closed_) {
    const ssize_t n = recv(fd_, in_.data(), in_.size(), 0);
    if (n > 0) continue;  // dropped: the session is over
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
    return Close();  // the client closed too (or the socket broke)
  }
  if (!closed_) UpdateInterest();
}

}  // namespace sluice::rls
