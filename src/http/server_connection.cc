#include "http/server_connection.h"

#include <errno.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "core/check.h"
#include "http/ascii.h"
#include "http/head_parser.h"
#include "net/tls.h"

namespace sluice::http {
namespace {

constexpr size_t kInitialReadBuffer = 8192;
constexpr size_t kReadChunk = 8192;
// Stop reading while this much output waits for a client that does not read.
constexpr size_t kMaxPendingOutput = 1 << 20;
// One event reads at most this much before other connections get their turn.
constexpr int kMaxReadsPerEvent = 8;

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

// A request id is echoed into our response and logs, so only a plain token is kept.
bool IsUsableRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == ':' || c == '/' || c == '+' ||
                    c == '=';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::string_view CurrentDateLine() {
  thread_local time_t cached_second = -1;
  thread_local char line[64];
  thread_local size_t length = 0;
  const time_t now = time(nullptr);
  if (now != cached_second) {
    cached_second = now;
    tm utc;
    gmtime_r(&now, &utc);
    length = strftime(line, sizeof(line), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &utc);
  }
  return {line, length};
}

namespace {

char* AppendDecimal(char* out, uint64_t value) {
  char digits[20];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (n > 0) *out++ = digits[--n];
  return out;
}

// "http://host:port/path" -> "host:port"; nullopt for any other form.
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsUnreserved(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

}  // namespace

// The path that rules match: the request target's path in one canonical spelling, so
// that "/%61pi/x", "//api/x", "/x/../api/x" and "http://host/api/x" cannot slip past
// a rule for "/api/". Percent-encoded unreserved characters are decoded (RFC 3986
// 6.2.2.2), dot segments removed (5.2.4) and repeated slashes merged, as nginx does
// before matching locations. Other escapes ("%2F") stay as they are. Most paths need
// none of this and are returned as they are, without a copy.
std::optional<std::string_view> AbsoluteFormAuthority(std::string_view target) {
  if (target.empty() || target.front() == '/') return std::nullopt;
  const size_t scheme_end = target.find("://");
  if (scheme_end == std::string_view::npos) return std::nullopt;
  std::string_view authority = target.substr(scheme_end + 3);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  const size_t at = authority.rfind('@');
  if (at != std::string_view::npos) authority.remove_prefix(at + 1);
  return authority;
}

std::string_view CanonicalPath(std::string_view path, std::string& scratch) {
  // Absolute form (a proxy-style request): the path starts after the authority.
  if (!path.empty() && path.front() != '/') {
    const size_t scheme_end = path.find("://");
    if (scheme_end != std::string_view::npos) {
      const size_t slash = path.find('/', scheme_end + 3);
      path = slash == std::string_view::npos ? std::string_view("/") : path.substr(slash);
    }
  }
  bool plain = true;
  for (size_t i = 0; i < path.size() && plain; ++i) {
    if (path[i] == '%') plain = false;
    if (path[i] == '/' && i + 1 < path.size() && (path[i + 1] == '/' || path[i + 1] == '.')) {
      plain = false;
    }
  }
  if (plain) return path;

  // Decoding can make a new escape ("%6%61" -> "%6a"); decode again until nothing
  // changes, so the result is a fixed point (each pass that changes anything is
  // shorter, so this ends) and a double-encoded spelling cannot differ from it.
  std::string decoded(path);
  std::string next;
  for (bool changed = true; changed;) {
    changed = false;
    next.clear();
    for (size_t i = 0; i < decoded.size(); ++i) {
      if (decoded[i] == '%' && i + 2 < decoded.size()) {
        const int hi = HexValue(decoded[i + 1]), lo = HexValue(decoded[i + 2]);
        if (hi >= 0 && lo >= 0 && IsUnreserved(static_cast<char>(hi * 16 + lo))) {
          next += static_cast<char>(hi * 16 + lo);
          i += 2;
          changed = true;
          continue;
        }
      }
      next += decoded[i];
    }
    decoded.swap(next);
  }
  // Segments between slashes: "" and "." are dropped, ".." drops the one before; a
  // path that ended in a slash (or in "." or "..") keeps its trailing slash.
  scratch.clear();
  bool trailing_slash = false;
  size_t start = decoded.empty() || decoded.front() != '/' ? 0 : 1;
  while (start <= decoded.size()) {
    size_t end = decoded.find('/', start);
    if (end == std::string::npos) end = decoded.size();
    const std::string_view segment(decoded.data() + start, end - start);
    trailing_slash = segment.empty() || segment == "." || segment == "..";
    if (segment == "..") {
      const size_t cut = scratch.rfind('/');
      scratch.resize(cut == std::string::npos ? 0 : cut);
    } else if (!trailing_slash) {
      scratch += '/';
      scratch.append(segment);
    }
    start = end + 1;
  }
  if (scratch.empty() || trailing_slash) scratch += '/';
  return scratch;
}

// "Example.com:8080" -> "Example.com", "[::1]:80" -> "[::1]", "example.com." ->
// "example.com" (the root label's dot names the same host).
std::string_view HostWithoutPort(std::string_view host) {
  host = TrimOws(host);
  const size_t at = host.rfind('@');  // userinfo in an absolute-form authority
  if (at != std::string_view::npos) host.remove_prefix(at + 1);
  if (!host.empty() && host.front() == '[') {
    const size_t close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  const size_t colon = host.rfind(':');
  if (colon != std::string_view::npos) host = TrimOws(host.substr(0, colon));
  if (host.size() > 1 && host.back() == '.') host.remove_suffix(1);
  return host;
}

namespace {

ServerConnection* Self(http_parser* parser) { return static_cast<ServerConnection*>(parser->data); }

// A name without white space and a value without a line break (see Dispatch).
bool IsCleanField(std::string_view name, std::string_view value) {
  if (name.empty()) return false;
  for (const char c : name) {
    if (c == ' ' || c == '\t') return false;
  }
  for (const char c : value) {
    if (c == '\r' || c == '\n') return false;
  }
  return true;
}

// 16 lowercase hex digits of `value`, most significant first. Every generated request
// id takes two; SSE2 does the 16 digits at once where a table lookup each costs more.
void WriteHex64(uint64_t value, char* out) {
#if defined(__SSE2__)
  // Bytes most significant first, each split into its two nibbles, high one first.
  const __m128i bytes = _mm_cvtsi64_si128(static_cast<int64_t>(__builtin_bswap64(value)));
  const __m128i low_nibble = _mm_set1_epi8(0x0f);
  const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), low_nibble);
  const __m128i low = _mm_and_si128(bytes, low_nibble);
  const __m128i nibbles = _mm_unpacklo_epi8(high, low);
  // '0' + n, and 'a' - '0' - 10 more for n above 9.
  const __m128i letters =
      _mm_and_si128(_mm_cmpgt_epi8(nibbles, _mm_set1_epi8(9)), _mm_set1_epi8('a' - '0' - 10));
  const __m128i digits = _mm_add_epi8(_mm_add_epi8(nibbles, _mm_set1_epi8('0')), letters);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), digits);
#else
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 16; ++i) out[i] = kHex[(value >> (60 - 4 * i)) & 0xf];
#endif
}

}  // namespace

std::optional<std::string_view> Request::FindHeader(std::string_view name) const {
  for (const Header& header : headers) {
    if (EqualsIgnoreCase(header.name, name)) return header.value;
  }
  return std::nullopt;
}

void RequestIdSource::Generate(char* out) {
  // seed (per worker, random) then a counter: unique within a process, and across
  // processes with high probability.
  WriteHex64(seed_, out);
  WriteHex64(++counter_, out + 16);
}

// --- TimeoutList ----------------------------------------------------------------------

void TimeoutList::Append(ServerConnection* c) {
  // Sorted insertion from the tail. With one timeout per list every new deadline is
  // the latest and this is O(1); after a reload shortens the timeout, a new deadline
  // walks back past the older, longer ones so the head is still the earliest.
  ServerConnection* after = tail_;
  while (after != nullptr && after->deadline_ns_ > c->deadline_ns_) after = after->timeout_prev_;
  c->timeout_list_ = this;
  c->timeout_prev_ = after;
  c->timeout_next_ = after != nullptr ? after->timeout_next_ : head_;
  if (c->timeout_next_ != nullptr) {
    c->timeout_next_->timeout_prev_ = c;
  } else {
    tail_ = c;
  }
  if (after != nullptr) {
    after->timeout_next_ = c;
  } else {
    head_ = c;
  }
}

void TimeoutList::Remove(ServerConnection* c) {
  if (c->timeout_prev_ != nullptr) {
    c->timeout_prev_->timeout_next_ = c->timeout_next_;
  } else {
    head_ = c->timeout_next_;
  }
  if (c->timeout_next_ != nullptr) {
    c->timeout_next_->timeout_prev_ = c->timeout_prev_;
  } else {
    tail_ = c->timeout_prev_;
  }
  c->timeout_list_ = nullptr;
  c->timeout_prev_ = c->timeout_next_ = nullptr;
}

bool TimeoutList::Due(int64_t now_ns) const {
  return head_ != nullptr && head_->deadline_ns_ <= now_ns;
}

void TimeoutList::Expire(int64_t now_ns) {
  while (head_ != nullptr && head_->deadline_ns_ <= now_ns) {
    ServerConnection* c = head_;
    Remove(c);
    c->OnDeadline();
  }
}

// --- ServerConnection -----------------------------------------------------------------

const http_parser_settings ServerConnection::kSettings = [] {
  http_parser_settings settings;
  http_parser_settings_init(&settings);
  settings.on_message_begin = &ServerConnection::OnMessageBegin;
  settings.on_url = &ServerConnection::OnUrl;
  settings.on_header_field = &ServerConnection::OnHeaderField;
  settings.on_header_value = &ServerConnection::OnHeaderValue;
  settings.on_headers_complete = &ServerConnection::OnHeadersComplete;
  settings.on_body = &ServerConnection::OnBody;
  settings.on_message_complete = &ServerConnection::OnMessageComplete;
  return settings;
}();

ServerConnection::ServerConnection(net::EventLoop& loop, int fd, const net::IpAddress& peer,
                                   RequestHandler& handler, RequestIdSource& ids,
                                   const ProtocolLimits& limits, ConnectionTimeouts& timeouts,
                                   SSL* tls)
    : loop_(loop),
      fd_(fd),
      ssl_(tls),
      peer_(peer),
      handler_(handler),
      ids_(ids),
      limits_(limits),
      timeouts_(timeouts) {
  peer_text_length_ = static_cast<uint8_t>(peer_.Format(peer_text_));
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
  in_.resize(kInitialReadBuffer);
}

void ServerConnection::FlushSoon() {
  if (flush_queued_) return;
  flush_queued_ = true;
  loop_.SendAtTurnEnd(this);
}

void ServerConnection::QueueDeferredSend(net::IoBatch& batch) {
  if (closed_ || ssl_ != nullptr || out_sent_ == out_ready_) return;
  batch.QueueSend(fd_, out_.data() + out_sent_, out_ready_ - out_sent_, this);
}

void ServerConnection::OnBatchedSend(ssize_t result) {
  // What the socket took; a failure or a full socket is met again by Flush's own send.
  if (result > 0 && !closed_) out_sent_ += static_cast<size_t>(result);
}

void ServerConnection::FinishDeferredSend() {
  flush_queued_ = false;
  if (closed_) return;
  Flush();
  // Input that waited for output room (pipelined requests, bytes the batch received)
  // goes on once the output has drained; what it answers goes at the next round.
  if (!closed_ && !nested() && in_parsed_ < in_end_ &&
      out_.size() - out_sent_ <= kMaxPendingOutput) {
    const size_t ready_before = out_ready_;
    Parse();
    // Only for output the parse added: output the socket refused waits for EPOLLOUT.
    if (!closed_ && out_ready_ != ready_before) FlushSoon();
  }
  if (!closed_) UpdateInterest();
}

void ServerConnection::BeforeIoEvent(uint32_t events, net::IoBatch& batch) {
  // What ReadAvailable would receive first, when the buffer already has room for it.
  if (!(events & EPOLLIN) || (events & (EPOLLERR | EPOLLHUP)) || ssl_ != nullptr) return;
  if (closed_ || close_after_write_ || out_.size() - out_sent_ > kMaxPendingOutput) return;
  if (in_end_ == in_.size()) return;
  batch_received_.reset();  // one a pause left untaken is stale now (its bytes stay)
  batch.QueueReceive(fd_, in_.data() + in_end_, in_.size() - in_end_, this);
}

void ServerConnection::OnBatchedReceive(ssize_t result) {
  // Nothing there (a spurious wake-up): ReadAvailable's own receive finds that out.
  if (closed_ || result == -EAGAIN || result == -EINTR) return;
  if (result > 0) in_end_ += static_cast<size_t>(result);
  batch_received_ = result;
}

ServerConnection::~ServerConnection() {
  if (flush_queued_) loop_.CancelSendAtTurnEnd(this);
  loop_.Cancel(tls_pending_timer_);
  if (!closed_) {
    DisarmDeadline();
    loop_.Remove(fd_);
    close(fd_);
  }
  if (ssl_ != nullptr) SSL_free(ssl_);
}

ssize_t ServerConnection::ReceiveSome(char* buffer, size_t length) {
  // recv rather than read: the socket call skips the file layer (position lock, VFS).
  if (ssl_ == nullptr) return recv(fd_, buffer, length, 0);
  net::TlsWants wants;
  const ssize_t n = net::TlsRead(ssl_, buffer, length, wants);
  if (wants.write) tls_read_wants_write_ = true;  // the handshake's answer did not fit
  if (wants.fatal) tls_failed_ = true;
  return n;
}

ssize_t ServerConnection::SendSome(const char* buffer, size_t length) {
  if (ssl_ == nullptr) return send(fd_, buffer, length, MSG_NOSIGNAL);
  net::TlsWants wants;
  const ssize_t n = net::TlsWrite(ssl_, buffer, length, wants);
  tls_write_wants_read_ = wants.read;  // (TLS 1.3 post-handshake): input is watched
  if (wants.fatal) tls_failed_ = true;
  return n;
}

void ServerConnection::ReadTlsPendingLater() {
  if (tls_pending_timer_ != net::EventLoop::kNoTimer) return;
  tls_pending_timer_ = loop_.RunAt(loop_.now(), [this] {
    tls_pending_timer_ = net::EventLoop::kNoTimer;
    if (!closed_) OnIoEvent(EPOLLIN);
  });
}

void ServerConnection::Start() {
  interest_ = EPOLLIN;
  loop_.Add(fd_, interest_, this);
  ArmDeadline(timeouts_.header, limits_.header_timeout);
}

void ServerConnection::ArmDeadline(TimeoutList& list, Duration timeout) {
  DisarmDeadline();
  deadline_ns_ = ToNanos(loop_.now()) + std::chrono::nanoseconds(timeout).count();
  deadline_is_header_ = &list == &timeouts_.header;
  list.Append(this);
}

void ServerConnection::DisarmDeadline() {
  if (timeout_list_ != nullptr) timeout_list_->Remove(this);
}

void ServerConnection::OnDeadline() {
  if (closed_) return;
  if (ssl_ != nullptr && !SSL_is_init_finished(ssl_)) {
    Close();  // no handshake, so no channel to answer on
    return;
  }
  // A head that did not arrive in time (also on a new connection that sent nothing),
  // or a body that stopped coming before it was answered: 408. An idle keep-alive
  // connection, or one whose answer is out and whose body stalled: just close.
  // A streamed request whose body stalls gets its 408 too, unless its response has
  // begun; a client that stopped reading a streamed response is closed.
  if (deadline_is_header_ || (phase_ == Phase::kBody && !answered_ && !response_started_ &&
                              (!held_ || stream_ != nullptr))) {
    FailProtocol(408);
    return;
  }
  Close();
}

void ServerConnection::OnIoEvent(uint32_t events) {
  in_io_event_ = true;
  if (events & (EPOLLERR | EPOLLHUP)) {
    in_io_event_ = false;
    Close();
    return;
  }
  if ((events & EPOLLIN) || ((events & EPOLLOUT) && tls_read_wants_write_)) {
    tls_read_wants_write_ = false;
    ReadAvailable();
  }
  if (!closed_) Flush();
  // Input already buffered (bytes the loop's batch received while output was short of
  // room, pipelined requests) goes on once the output has room again.
  if (!closed_ && in_parsed_ < in_end_ && out_.size() - out_sent_ <= kMaxPendingOutput) {
    Parse();
    if (!closed_) Flush();
  }
  in_io_event_ = false;
  // Outside the in-event section, so that what the handler writes now is flushed now.
  if (!closed_ && drain_wanted_ && out_.size() - out_sent_ <= kResponseLowWater) {
    drain_wanted_ = false;
    if (stream_ != nullptr) stream_->OnResponseDrained(*this);
  }
  if (!closed_) UpdateInterest();
}

bool ServerConnection::EnsureReadRoom() {
  if (in_end_ < in_.size()) return true;
  if (in_keep_ > 0) {
    const size_t delta = in_keep_;
    std::memmove(in_.data(), in_.data() + delta, in_end_ - delta);
    in_end_ -= delta;
    in_parsed_ -= delta;
    in_keep_ = 0;
    head_start_ = head_start_ >= delta ? head_start_ - delta : 0;
    if (phase_ == Phase::kHead) {
      url_.offset -= delta;
      header_spans_.Shift(delta);
    }
    return true;
  }
  const size_t max_size = limits_.max_header_bytes + kReadChunk;
  if (in_.size() < max_size) {
    in_.resize(std::min(max_size, in_.size() * 2));
    return true;
  }
  return false;
}

void ServerConnection::ReadAvailable() {
  // What the loop's batch received (its bytes in the buffer already) is the first
  // round's, instead of a receive. (Bytes left unparsed here are Parse's next time.)
  std::optional<ssize_t> batched = std::exchange(batch_received_, std::nullopt);
  for (int i = 0; i < kMaxReadsPerEvent && !closed_ && !close_after_write_; ++i) {
    if (out_.size() - out_sent_ > kMaxPendingOutput) return;
    ssize_t n;
    if (batched.has_value()) {
      n = *std::exchange(batched, std::nullopt);
      if (n < 0) {
        errno = static_cast<int>(-n);
        n = -1;
      }
    } else {
      if (!EnsureReadRoom()) {
        if (phase_ == Phase::kHead) FailProtocol(431);
        return;  // held with a full buffer: wait for the response
      }
      n = ReceiveSome(in_.data() + in_end_, in_.size() - in_end_);
      if (n > 0) in_end_ += static_cast<size_t>(n);
    }
    if (n > 0) {
      // A body that keeps coming is not a stalled one, however long it takes.
      if (phase_ == Phase::kBody && !body_paused_ && !answered_) {
        ArmDeadline(timeouts_.idle, limits_.idle_timeout);
      }
      Parse();
      if (static_cast<size_t>(n) < kReadChunk / 2 && (ssl_ == nullptr || SSL_pending(ssl_) == 0)) {
        return;  // likely drained
      }
      continue;
    }
    if (n == 0) {
      // The client closed its side. A complete request still being answered (held)
      // gets its answer; anything else ends here after what is ready is written.
      close_after_write_ = true;
      // (Also a request held for the gateway with its body paused: a GET whose end the
      // parser has not reached yet; its answer still goes out.)
      const bool answer_pending =
          held_ && (phase_ == Phase::kDone || (phase_ == Phase::kBody && body_paused_));
      if (!answer_pending) {
        Flush();
        Close();
      }
      return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    if (errno == EINTR) continue;
    Close();
    return;
  }
}

void ServerConnection::Parse() {
  while (!closed_ && !close_after_write_) {
    if (phase_ == Phase::kDone) {
      if (!answered_) return;  // held: pipelined requests wait
      NextMessage();
      if (close_after_write_) return;
    }
    if (phase_ == Phase::kBody && body_paused_) return;
    if (phase_ == Phase::kBody && body_framed_here_) {
      // Checked before the end of input: a body that is complete (or empty) ends the
      // message with no more bytes to read.
      if (framed_body_left_ > 0 &&
          (in_parsed_ == in_end_ || out_.size() - out_sent_ > kMaxPendingOutput)) {
        return;
      }
      ParseFramedBody();
      continue;
    }
    if (in_parsed_ == in_end_) return;
    if (out_.size() - out_sent_ > kMaxPendingOutput) return;
    if (phase_ == Phase::kIdle) {
      phase_ = Phase::kHead;
      head_start_ = in_parsed_;
      in_keep_ = in_parsed_;
      // A new connection's head deadline runs from the accept; a keep-alive one's from
      // the first byte of its next request.
      if (timeout_list_ != &timeouts_.header) ArmDeadline(timeouts_.header, limits_.header_timeout);
      if (TakeSimpleHead()) continue;
    }
    const size_t n =
        http_parser_execute(&parser_, &kSettings, in_.data() + in_parsed_, in_end_ - in_parsed_);
    in_parsed_ += n;
    const http_errno error = HTTP_PARSER_ERRNO(&parser_);
    if (error == HPE_PAUSED) {
      http_parser_pause(&parser_, 0);
      if (phase_ == Phase::kHead) {
        // Head complete.
        Dispatch({.method = static_cast<int>(parser_.method),
                  .version_major = parser_.http_major,
                  .version_minor = parser_.http_minor,
                  .keep_alive = http_should_keep_alive(&parser_) != 0,
                  .content_length = (parser_.flags & F_CONTENTLENGTH) != 0
                                        ? std::optional<uint64_t>(parser_.content_length)
                                        : std::nullopt});
      } else if (phase_ == Phase::kBody) {
        DeliverBodyEvent();
      }
      continue;
    }
    if (error != HPE_OK) {
      if (head_too_large_ || error == HPE_HEADER_OVERFLOW) {
        FailProtocol(431);
      } else if (body_too_large_) {
        FailProtocol(413);
      } else {
        FailProtocol(400);
      }
      return;
    }
    if (n == 0 && in_parsed_ < in_end_) {
      // The parser stopped without an error (after an Upgrade request): what follows
      // is not HTTP/1.1 that this server speaks.
      FailProtocol(400);
      return;
    }
    if (phase_ == Phase::kHead && in_parsed_ - head_start_ > limits_.max_header_bytes) {
      FailProtocol(431);
      return;
    }
    if (phase_ == Phase::kBody) in_keep_ = in_parsed_;  // body bytes are not kept
  }
}

bool ServerConnection::TakeSimpleHead() {
  SimpleHead head;
  if (!ParseSimpleHead(MessageKind::kRequest, in_.data(), head_start_, in_end_,
                       limits_.max_header_bytes, header_spans_, head)) {
    return false;  // libhttp-parser reads it, from its first byte
  }
  in_parsed_ = head_start_ + head.length;
  url_ = head.target;
  body_framed_here_ = true;
  framed_body_left_ = head.content_length.value_or(0);
  // libhttp-parser's http_should_keep_alive, for a request.
  const bool keep_alive =
      head.version_minor >= 1 ? !head.connection_close : head.connection_keep_alive;
  Dispatch({.method = head.method,
            .version_major = 1,
            .version_minor = head.version_minor,
            .keep_alive = keep_alive,
            .content_length = head.content_length,
            .fields_strict = true});
  return true;
}

// What OnBody and OnMessageComplete do for a body libhttp-parser frames.
void ServerConnection::ParseFramedBody() {
  if (framed_body_left_ == 0) {
    body_framed_here_ = false;
    message_complete_ = true;
    DeliverBodyEvent();
    return;
  }
  const size_t take =
      static_cast<size_t>(std::min<uint64_t>(framed_body_left_, in_end_ - in_parsed_));
  const char* piece = in_.data() + in_parsed_;
  in_parsed_ += take;
  framed_body_left_ -= take;
  body_bytes_ += take;  // within max_body_bytes: Dispatch checked the Content-Length
  in_keep_ = in_parsed_;
  if (stream_ != nullptr && !answered_) {
    body_piece_ = piece;
    body_piece_length_ = take;
    DeliverBodyEvent();
  }
}

void ServerConnection::DeliverBodyEvent() {
  in_keep_ = in_parsed_;  // body bytes are not kept once parsed
  if (body_piece_ != nullptr) {
    const std::string_view piece(body_piece_, body_piece_length_);
    body_piece_ = nullptr;
    if (stream_ != nullptr && !answered_) stream_->OnRequestBody(*this, piece);
    return;
  }
  if (!message_complete_) return;
  phase_ = Phase::kDone;
  // No timeout while the answer is pending: a held request waits for its rule, or for
  // its upstream, whose own deadlines apply.
  DisarmDeadline();
  if (answered_ || response_started_) out_ready_ = out_.size();
  if (stream_ != nullptr && !answered_) stream_->OnRequestBodyComplete(*this);
}

void ServerConnection::NextMessage() {
  phase_ = Phase::kIdle;
  answered_ = false;
  stream_ = nullptr;
  body_paused_ = false;
  message_complete_ = false;
  body_framed_here_ = false;
  response_started_ = false;
  drain_wanted_ = false;
  header_spans_.Clear();
  url_ = {};
  body_bytes_ = 0;
  request_id_length_ = 0;
  in_keep_ = in_parsed_;
  if (in_parsed_ == in_end_) in_keep_ = in_parsed_ = in_end_ = 0;
  if (!keep_alive_ || draining_) {
    close_after_write_ = true;
    DisarmDeadline();
    return;
  }
  ArmDeadline(timeouts_.idle, limits_.idle_timeout);
}

int ServerConnection::OnMessageBegin(http_parser* parser) { return 0; }

int ServerConnection::OnUrl(http_parser* parser, const char* at, size_t length) {
  ServerConnection* self = Self(parser);
  const size_t offset = static_cast<size_t>(at - self->in_.data());
  if (self->url_.length == 0) self->url_.offset = offset;
  self->url_.length = offset + length - self->url_.offset;
  if (offset + length - self->head_start_ > self->limits_.max_header_bytes) {
    self->head_too_large_ = true;
    return 1;
  }
  return 0;
}

int ServerConnection::OnHeaderField(http_parser* parser, const char* at, size_t length) {
  ServerConnection* self = Self(parser);
  const size_t offset = static_cast<size_t>(at - self->in_.data());
  if (offset + length - self->head_start_ > self->limits_.max_header_bytes) {
    self->head_too_large_ = true;
    return 1;
  }
  if (!self->header_spans_.AddName(offset, length)) {
    self->head_too_large_ = true;  // too many header fields: 431 as well
    return 1;
  }
  return 0;
}

int ServerConnection::OnHeaderValue(http_parser* parser, const char* at, size_t length) {
  ServerConnection* self = Self(parser);
  const size_t offset = static_cast<size_t>(at - self->in_.data());
  if (offset + length - self->head_start_ > self->limits_.max_header_bytes) {
    self->head_too_large_ = true;
    return 1;
  }
  self->header_spans_.AddValue(offset, length);
  return 0;
}

int ServerConnection::OnHeadersComplete(http_parser* parser) {
  http_parser_pause(parser, 1);
  return 0;
}

int ServerConnection::OnBody(http_parser* parser, const char* at, size_t length) {
  ServerConnection* self = Self(parser);
  self->body_bytes_ += length;
  if (self->body_bytes_ > self->limits_.max_body_bytes) {
    self->body_too_large_ = true;
    return 1;
  }
  if (self->stream_ != nullptr && !self->answered_) {
    // Delivered by Parse, outside the parser, which then stops wherever the handler
    // paused.
    self->body_piece_ = at;
    self->body_piece_length_ = length;
    http_parser_pause(parser, 1);
  }
  return 0;
}

int ServerConnection::OnMessageComplete(http_parser* parser) {
  Self(parser)->message_complete_ = true;
  http_parser_pause(parser, 1);
  return 0;
}

void ServerConnection::Dispatch(const HeadFacts& facts) {
  phase_ = Phase::kBody;
  ArmDeadline(timeouts_.idle, limits_.idle_timeout);  // a slow body is an idle client
  const char* base = in_.data();
  Request request;
  request.method = http_method_str(static_cast<http_method>(facts.method));
  request.head_method = facts.method == HTTP_HEAD;
  head_method_ = request.head_method;
  request.target = {base + url_.offset, url_.length};
  const size_t question = request.target.find('?');
  request.path = request.target.substr(0, question);
  if (question != std::string_view::npos) request.query = request.target.substr(question + 1);
  request.path = CanonicalPath(request.path, normalized_path_);
  header_spans_.Views(base, header_views_.data());
  request.headers = {header_views_.data(), header_spans_.size()};

  // RFC 9112: a header name with white space in it (before the colon, or before the
  // name, which libhttp-parser keeps in the name), a value folded over lines
  // (obs-fold, which the parser hands over with the line break inside), and an
  // HTTP/1.1 request with no Host or several, are refused; letting them through would
  // let a client show the rules one field and an upstream another
  // (" Transfer-Encoding: chunked" is not Transfer-Encoding to the parser, but may be
  // to an upstream that trims it).
  // One pass finds the headers this layer needs (Host, X-Request-Id, Expect).
  size_t host_count = 0;
  std::string_view host_header;
  std::optional<std::string_view> id;
  std::optional<std::string_view> expect;
  for (size_t i = 0; i < header_spans_.size(); ++i) {
    const std::string_view name = header_views_[i].name;
    if (!facts.fields_strict && !IsCleanField(name, header_views_[i].value)) {
      FailProtocol(400);
      return;
    }
    if (name.size() == 4 && EqualsIgnoreCase(name, "host")) {
      ++host_count;
      host_header = header_views_[i].value;
    } else if (name.size() == 12 && !id && EqualsIgnoreCase(name, "x-request-id")) {
      id = header_views_[i].value;
    } else if (name.size() == 6 && !expect && EqualsIgnoreCase(name, "expect")) {
      expect = header_views_[i].value;
    }
  }
  if (host_count > 1 || (host_count == 0 && facts.version_major == 1 && facts.version_minor >= 1)) {
    FailProtocol(400);
    return;
  }
  request.host = HostWithoutPort(AbsoluteFormAuthority(request.target).value_or(host_header));
  request.version_minor = facts.version_minor;
  version_1_0_ = facts.version_major == 1 && facts.version_minor == 0;

  request.peer = &peer_;
  request.peer_text = std::string_view(peer_text_, peer_text_length_);
  keep_alive_ = facts.keep_alive;

  if (id && IsUsableRequestId(*id)) {
    request_id_length_ = id->size();
    std::memcpy(request_id_storage_, id->data(), id->size());
  } else {
    ids_.Generate(request_id_storage_);
    request_id_length_ = RequestIdSource::kLength;
  }
  request.request_id = {request_id_storage_, request_id_length_};

  // A declared body over the limit is refused before any of it is read.
  if (facts.content_length && *facts.content_length > limits_.max_body_bytes) {
    FailProtocol(413);
    return;
  }
  if (expect && EqualsIgnoreCase(*expect, "100-continue") && !version_1_0_) {
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    out_.append(kContinue);
    out_ready_ = out_.size();
  }
  in_dispatch_ = true;
  handler_.OnRequest(*this, request);
  in_dispatch_ = false;
  if (closed_) return;
  if (!answered_ && !held_) Respond(500, "", "application/json", "{\"error\":\"internal\"}\n");
}

void ServerConnection::Respond(int status, std::string_view headers, std::string_view content_type,
                               std::string_view body) {
  if (closed_ || answered_) return;
  answered_ = true;
  const bool was_held = held_;
  held_ = false;
  // A streamed request answered by sluice itself (a 502): the rest of its body is
  // read and discarded.
  stream_ = nullptr;
  body_paused_ = false;
  drain_wanted_ = false;
  const bool close = !keep_alive_ || draining_ || close_after_write_;
  if (close) keep_alive_ = false;
  AppendResponse(status, headers, content_type, body, close);
  if (phase_ == Phase::kDone) out_ready_ = out_.size();
  // The rest of a body that was paused for the gateway is read and discarded now: a
  // client that never sends it is an idle one.
  if (phase_ == Phase::kBody) ArmDeadline(timeouts_.idle, limits_.idle_timeout);
  if (was_held && !nested()) {
    // Answered from a timer or the store: go on with any pipelined requests; the
    // output goes at the end of the turn, in one batch with the turn's other sends.
    Parse();
    if (!closed_) FlushSoon();
  }
}

void ServerConnection::StreamBody(StreamHandler& handler) {
  stream_ = &handler;
  body_paused_ = true;
  // Until the handler wants the body, waiting is not the client's fault.
  if (phase_ == Phase::kBody) DisarmDeadline();
}

void ServerConnection::PauseBody() {
  if (stream_ == nullptr || body_paused_) return;
  body_paused_ = true;
  if (phase_ == Phase::kBody) DisarmDeadline();
}

void ServerConnection::ResumeBody() {
  if (stream_ == nullptr || !body_paused_ || closed_) return;
  body_paused_ = false;
  if (phase_ == Phase::kBody) ArmDeadline(timeouts_.idle, limits_.idle_timeout);
  if (nested()) return;  // the event's (or dispatch's) own parse goes on
  Parse();
  if (!closed_) Flush();
  if (!closed_) UpdateInterest();
}

void ServerConnection::StartResponse(std::string_view head, bool close) {
  if (closed_ || answered_ || response_started_) return;
  response_started_ = true;
  if (close || closes_after_response()) keep_alive_ = false;
  response_start_ = out_.size();
  out_.append(head);
  // A streamed response goes out as it comes, whether or not the request has been
  // read to its end (an upstream may answer before it has read the whole body); at
  // the end of this loop turn, with whatever body follows in the same turn.
  out_ready_ = out_.size();
  if (!nested()) FlushSoon();
}

bool ServerConnection::WriteResponse(std::string_view bytes, std::string_view more,
                                     std::string_view last) {
  if (closed_ || answered_ || !response_started_) return false;
  if (!head_method_) {
    out_.append(bytes);
    out_.append(more);
    out_.append(last);
  }
  out_ready_ = out_.size();
  if (!nested()) {
    // Small pieces wait for the end of the turn to go out together; a large one goes
    // now, so that the output stays near the high-water mark at most.
    if (out_.size() - out_sent_ < kResponseLowWater) {
      FlushSoon();
    } else {
      Flush();
      if (closed_) return false;
      UpdateInterest();
    }
  }
  if (out_.size() - out_sent_ <= kResponseHighWater) return true;
  drain_wanted_ = true;
  return false;
}

void ServerConnection::EndResponse() {
  if (closed_ || answered_ || !response_started_) return;
  answered_ = true;
  held_ = false;
  stream_ = nullptr;
  body_paused_ = false;
  drain_wanted_ = false;
  if (!keep_alive_) close_after_write_ = true;
  out_ready_ = out_.size();
  if (phase_ == Phase::kBody) ArmDeadline(timeouts_.idle, limits_.idle_timeout);
  if (!nested()) {
    // Go on with any pipelined requests (or the rest of the body); the output goes at
    // the end of the turn, in one batch with the turn's other sends.
    Parse();
    if (!closed_) FlushSoon();
  }
}

void ServerConnection::AbortResponse() {
  if (closed_) return;
  answered_ = true;
  held_ = false;
  stream_ = nullptr;
  drain_wanted_ = false;
  keep_alive_ = false;
  close_after_write_ = true;
  out_ready_ = out_.size();
  DisarmDeadline();
  if (!nested()) {
    Flush();
    if (!closed_) UpdateInterest();
  }
}

void ServerConnection::AppendResponse(int status, std::string_view headers,
                                      std::string_view content_type, std::string_view body,
                                      bool close) {
  response_start_ = out_.size();
  const std::string_view reason = ReasonPhrase(status);
  const std::string_view date = CurrentDateLine();
  const std::string_view request_id{request_id_storage_, request_id_length_};
  // Everything but the caller's headers and the body has a known bound.
  char line[512];
  char* p = line;
  auto put = [&p](std::string_view s) {
    std::memcpy(p, s.data(), s.size());
    p += s.size();
  };
  put("HTTP/1.1 ");
  p = AppendDecimal(p, static_cast<uint64_t>(status));
  *p++ = ' ';
  put(reason);
  put("\r\nServer: sluice\r\n");
  put(date);
  put("Content-Length: ");
  p = AppendDecimal(p, body.size());
  put("\r\n");
  if (!content_type.empty()) {
    put("Content-Type: ");
    put(content_type.substr(0, 100));
    put("\r\n");
  }
  out_.append(line, static_cast<size_t>(p - line));
  if (request_id_length_ > 0) {
    out_.append("X-Request-Id: ");
    out_.append(request_id);
    out_.append("\r\n");
  }
  out_.append(headers);
  if (close) {
    out_.append("Connection: close\r\n");
  } else if (version_1_0_) {
    out_.append("Connection: keep-alive\r\n");
  }
  out_.append("\r\n");
  if (!head_method_) out_.append(body);
}

void ServerConnection::FailProtocol(int status) {
  handler_.OnProtocolError(*this, status);
  if (closed_) return;
  if (response_started_) {
    // Part of a streamed response may be out already: no second response can follow
    // it, so the connection ends after what is queued.
    AbortResponse();
    return;
  }
  // A response already made for this request is replaced: its body turned out too
  // large, and the client must hear that rather than the earlier answer.
  if (answered_ && out_ready_ <= response_start_) out_.resize(response_start_);
  held_ = false;
  answered_ = true;
  keep_alive_ = false;
  close_after_write_ = true;
  if (request_id_length_ == 0) {
    ids_.Generate(request_id_storage_);
    request_id_length_ = RequestIdSource::kLength;
  }
  char body[96];
  const int length = snprintf(body, sizeof(body), "{\"error\":\"%s\"}\n",
                              status == 400   ? "bad_request"
                              : status == 408 ? "request_timeout"
                              : status == 413 ? "body_too_large"
                              : status == 431 ? "headers_too_large"
                                              : "error");
  head_method_ = false;
  AppendResponse(status, "", "application/json", {body, static_cast<size_t>(length)}, true);
  out_ready_ = out_.size();
  DisarmDeadline();
  if (!nested()) {
    Flush();
    if (!closed_) UpdateInterest();
  }
}

void ServerConnection::Flush() {
  while (out_sent_ < out_ready_) {
    const ssize_t n = SendSome(out_.data() + out_sent_, out_ready_ - out_sent_);
    if (n > 0) {
      out_sent_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Output waiting on a client that does not read: the idle timeout runs from the
      // last write that made progress (unless the head's deadline is running).
      if (timeout_list_ != &timeouts_.header) ArmDeadline(timeouts_.idle, limits_.idle_timeout);
      // Written bytes at the front are dropped once they outweigh what waits, so a
      // long streamed response does not grow the buffer by what it has sent.
      if (out_sent_ >= 65536 && out_sent_ >= out_.size() - out_sent_) {
        out_.erase(0, out_sent_);
        out_ready_ -= out_sent_;
        response_start_ = response_start_ > out_sent_ ? response_start_ - out_sent_ : 0;
        out_sent_ = 0;
      }
      return;
    }
    Close();
    return;
  }
  if (response_started_ && !answered_ && phase_ == Phase::kDone) DisarmDeadline();
  if (out_sent_ == out_.size()) {
    out_.clear();
    out_sent_ = out_ready_ = 0;
    response_start_ = 0;
    if (close_after_write_ && !held_ && (answered_ || phase_ == Phase::kIdle)) {
      // Send FIN first and drop what the client already sent, so the kernel does not
      // answer unread input with a reset that could destroy our last response.
      if (ssl_ != nullptr && !tls_failed_) SSL_shutdown(ssl_);  // close_notify, not awaited
      shutdown(fd_, SHUT_WR);
      char discard[4096];
      while (read(fd_, discard, sizeof(discard)) > 0) {
      }
      Close();
    }
  }
}

void ServerConnection::Drain() {
  if (closed_) return;
  draining_ = true;
  if ((phase_ == Phase::kIdle || phase_ == Phase::kHead) && !held_ && out_sent_ == out_.size()) {
    Close();
  }
}

void ServerConnection::UpdateInterest() {
  const bool room =
      in_end_ < in_.size() || in_keep_ > 0 || in_.size() < limits_.max_header_bytes + kReadChunk;
  const bool want_read =
      !close_after_write_ && room && out_.size() - out_sent_ <= kMaxPendingOutput;
  const uint32_t wanted = (want_read || tls_write_wants_read_ ? EPOLLIN : 0u) |
                          (out_sent_ < out_ready_ || tls_read_wants_write_ ? EPOLLOUT : 0u);
  if (want_read && ssl_ != nullptr && SSL_pending(ssl_) > 0) ReadTlsPendingLater();
  if (wanted != interest_) {
    interest_ = wanted;
    loop_.Modify(fd_, wanted, this);
  }
}

void ServerConnection::Close() {
  if (closed_) return;
  closed_ = true;
  loop_.Cancel(tls_pending_timer_);
  tls_pending_timer_ = net::EventLoop::kNoTimer;
  DisarmDeadline();
  loop_.Remove(fd_);
  close(fd_);
  handler_.OnClose(*this);
}

}  // namespace sluice::http
