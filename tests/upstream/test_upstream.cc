// sluice_test_upstream: the upstream server that the gateway-mode tests (issue 5) start as
// real processes. A small HTTP/1.1 server whose behaviour each request chooses by its path,
// so a test can make an upstream delay, fail, close mid-body, stream, or say who answered.
//
// Usage:
//   sluice_test_upstream --listen 127.0.0.1:0 --name a
//
// --listen HOST:PORT  an IPv4 address, or [IPv6]; port 0 lets the kernel pick a free one.
//                     SO_REUSEADDR is set, so a test can kill a server and start another
//                     on the same port at once.
// --name NAME         reported in every response's `X-Upstream: NAME` header.
//
// Once the socket listens, it prints `listening 127.0.0.1:<port>` (`[::1]:<port>` for IPv6)
// on stdout and flushes it: a harness reads the port from that line. It exits with status 0
// on SIGTERM or SIGINT, dropping whatever connections are open.
//
// Behaviours, by request path (the query string is ignored unless said otherwise). Every
// response carries `X-Upstream: NAME`; every response is sent after the whole request,
// body included, has been read.
//   /                      200, body `NAME\n`. So does any path not listed here.
//   /headers               200, body: the request line and the request header lines as they
//                          arrived, one per line, each line's bytes unchanged with its CR LF
//                          (or bare LF) ending replaced by LF. Stray empty lines before the
//                          request line and the empty line ending the head are left out.
//   /status/<code>         that status (200-599), body `<code>\n` (for 204 and 304 no body
//                          and no Content-Length).
//   /delay/<ms>            waits <ms> milliseconds, then answers as `/`.
//   /close                 closes the connection without answering.
//   /close-mid-body        200 with `Content-Length: 100000`, then 1000 bytes, then closes.
//   /bytes/<n>             200 with `Content-Length: n`; byte i of the body is i % 251,
//                          written in 64 KiB pieces, so n can be any size.
//   /chunked/<count>/<size>[?gap_ms=<ms>]
//                          200 chunked: <count> chunks of <size> bytes (the same i % 251
//                          pattern running through the whole body), each chunk written out
//                          at once, waiting <ms> between two data chunks; then the last
//                          chunk. count or size 0: no data chunks. An HTTP/1.0 request gets
//                          the same bytes unchunked, ended by closing the connection.
//   /upload                POST or PUT (else 405): streams the body (Content-Length or
//                          chunked) through FNV-1a 64 without keeping it; 200, body
//                          `<bytes> <fnv1a64 as 16 lowercase hex digits>\n`.
//   /healthz               200 `ok\n`, or 503 `unhealthy\n` while unhealthy.
//   /admin/unhealthy       POST (else 405): /healthz answers 503 from now on; 200.
//   /admin/healthy         POST (else 405): /healthz answers 200 again; 200.
//   /admin/count           200, body `<n>\n`: how many responses this process has begun to
//                          send to requests whose path does not start with /admin/ (so
//                          /healthz counts, /close does not, /close-mid-body does).
// A bad number in a path (`/status/abc`, `/delay/-1`) gets 400 on a connection kept open.
//
// Connections: HTTP/1.1 keep-alive unless the request says `Connection: close` (or is
// HTTP/1.0 without `Connection: keep-alive`); pipelined requests are answered in order.
// A request the parser refuses (bad syntax, both Content-Length and Transfer-Encoding, a
// bad chunk size, headers over 80 KiB) gets 400 with `Connection: close`, and the
// connection is closed. A request with `Expect: 100-continue` and a body gets
// `100 Continue` when its head has been read. A request that asks to upgrade is answered
// as usual, then the connection is closed. A HEAD request gets the GET response's head.
// There are no timeouts: an idle connection stays open until the client closes it.
//
// Threads: one accepting thread, one thread per connection with blocking sockets (this
// serves tests; simplicity over speed), and the main thread waiting for the signal. The
// threads share only the options and the pattern (both read-only once threads start), the
// response count and the health flag (atomics).
#include <arpa/inet.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

namespace sluice::test_upstream {
namespace {

// Size of a socket read and of each piece of a streamed body.
constexpr size_t kPieceSize = 64 * 1024;
// Body byte i is i % kPatternPeriod: a prime, so that a lost or repeated 64 KiB piece
// shifts the pattern and a test sees it.
constexpr uint64_t kPatternPeriod = 251;
constexpr uint64_t kCloseMidBodyDeclared = 100000;
constexpr uint64_t kCloseMidBodySent = 1000;
// Bound on /delay and gap_ms, so a typo cannot wedge a connection for days.
constexpr uint64_t kMaxWaitMs = 3'600'000;

constexpr uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

// What every connection thread reads or updates.
struct Shared {
  std::string name;
  // kPieceSize + kPatternPeriod bytes of the pattern: the bytes for body offsets
  // [o, o + kPieceSize) are pattern[o % kPatternPeriod ...].
  std::vector<char> pattern;
  std::atomic<uint64_t> answered{0};
  std::atomic<bool> healthy{true};
};

std::string_view PatternAt(const Shared& shared, uint64_t offset, size_t length) {
  return std::string_view(shared.pattern.data() + offset % kPatternPeriod, length);
}

// A decimal number made of digits only (no sign, no spaces), within uint64_t.
std::optional<uint64_t> ParseNumber(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::string Hex16(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(value));
  return text;
}

std::string ReasonPhrase(int status) {
  const char* reason = http_status_str(static_cast<enum http_status>(status));
  if (reason == nullptr || reason[0] == '<') return "Status";  // "<unknown>"
  return reason;
}

// The value of `key` in a query string "a=1&b=2".
std::optional<std::string_view> QueryParam(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) == key) {
      return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

// Writes all of `iov` (modified on the way). MSG_NOSIGNAL: a peer gone away is an error
// to return, not a SIGPIPE. `more`: more bytes follow at once (MSG_MORE keeps the kernel
// from sending a small segment before they come).
bool SendAll(int fd, iovec* iov, size_t count, bool more) {
  while (count > 0) {
    msghdr message{};
    message.msg_iov = iov;
    message.msg_iovlen = count;
    const ssize_t sent = sendmsg(fd, &message, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
    if (sent < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    size_t left = static_cast<size_t>(sent);
    while (count > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --count;
    }
    if (count > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return true;
}

bool SendAll(int fd, std::string_view bytes, bool more = false) {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  return SendAll(fd, &iov, 1, more);
}

// Closes our side with a FIN. Whatever the client already sent is read and dropped first
// (without waiting): closing a socket with unread input makes the kernel send a reset,
// which can destroy the response in the client's receive buffer.
void CloseGracefully(int fd) {
  shutdown(fd, SHUT_WR);
  char sink[4096];
  while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0) {
  }
  close(fd);
}

// One client connection: reads requests with http_parser and answers each in turn.
class Connection {
 public:
  Connection(int fd, Shared& shared) : fd_(fd), shared_(shared), input_(new char[kPieceSize]) {
    http_parser_settings_init(&settings_);
    settings_.on_message_begin = [](http_parser* p) { return Self(p)->OnMessageBegin(); };
    settings_.on_url = [](http_parser* p, const char* at, size_t n) {
      Self(p)->url_.append(at, n);
      return 0;
    };
    settings_.on_header_field = [](http_parser* p, const char* at, size_t n) {
      return Self(p)->OnHeaderField(std::string_view(at, n));
    };
    settings_.on_header_value = [](http_parser* p, const char* at, size_t n) {
      Self(p)->headers_.back().second.append(at, n);
      Self(p)->in_header_value_ = true;
      return 0;
    };
    settings_.on_headers_complete = [](http_parser* p) { return Self(p)->Pause(Event::kHead); };
    settings_.on_body = [](http_parser* p, const char* at, size_t n) {
      Self(p)->OnBody(std::string_view(at, n));
      return 0;
    };
    settings_.on_message_complete = [](http_parser* p) { return Self(p)->Pause(Event::kMessage); };
    http_parser_init(&parser_, HTTP_REQUEST);
    parser_.data = this;
  }

  // Serves requests until the client closes, an error, or a response that ends the
  // connection; then closes the socket.
  void Serve() {
    if (ServeRequests()) {
      CloseGracefully(fd_);
    } else {
      close(fd_);
    }
  }

 private:
  enum class Event { kNone, kHead, kMessage };

  static Connection* Self(http_parser* parser) { return static_cast<Connection*>(parser->data); }

  // The parser stops (HPE_PAUSED) after the head and after the whole message, so that
  // Serve() knows which bytes were the head (for /headers) and answers each request
  // before the parser moves on to the next one.
  int Pause(Event event) {
    event_ = event;
    http_parser_pause(&parser_, 1);
    return 0;
  }

  int OnMessageBegin() {
    url_.clear();
    headers_.clear();
    in_header_value_ = false;
    body_bytes_ = 0;
    body_hash_ = kFnvOffsetBasis;
    return 0;
  }

  int OnHeaderField(std::string_view piece) {
    if (headers_.empty() || in_header_value_) headers_.emplace_back();
    in_header_value_ = false;
    headers_.back().first.append(piece);
    return 0;
  }

  void OnBody(std::string_view piece) {
    body_bytes_ += piece.size();
    uint64_t hash = body_hash_;
    for (const char c : piece) {
      hash ^= static_cast<unsigned char>(c);
      hash *= kFnvPrime;
    }
    body_hash_ = hash;
  }

  // true: close gracefully (FIN); false: close at once (read error, peer gone).
  bool ServeRequests() {
    size_t begin = 0;  // input_[begin, end) is read but not yet parsed
    size_t end = 0;
    bool reading_head = true;
    while (true) {
      if (begin == end) {
        const ssize_t got = recv(fd_, input_.get(), kPieceSize, 0);
        if (got < 0 && errno == EINTR) continue;
        // The client closed (or failed): a request cut short has no one to answer.
        if (got <= 0) return false;
        begin = 0;
        end = static_cast<size_t>(got);
      }
      event_ = Event::kNone;
      const size_t parsed =
          http_parser_execute(&parser_, &settings_, input_.get() + begin, end - begin);
      if (reading_head) raw_head_.append(input_.get() + begin, parsed);
      begin += parsed;

      const enum http_errno error = HTTP_PARSER_ERRNO(&parser_);
      if (error != HPE_OK && error != HPE_PAUSED) {
        SendBadRequest(error);
        return true;
      }
      if (error != HPE_PAUSED) continue;
      http_parser_pause(&parser_, 0);
      if (event_ == Event::kHead) {
        reading_head = false;
        if (!OnHead()) return false;
      } else if (event_ == Event::kMessage) {
        const bool keep_open = Respond();
        raw_head_.clear();
        reading_head = true;
        if (!keep_open) return true;
      }
    }
  }

  // Called once the head is read, before the body.
  bool OnHead() {
    keep_alive_ = http_should_keep_alive(&parser_) != 0 && parser_.upgrade == 0;
    http_major_ = parser_.http_major;
    http_minor_ = parser_.http_minor;
    method_ = static_cast<enum http_method>(parser_.method);
    const bool has_body = (parser_.flags & F_CHUNKED) != 0 ||
                          (parser_.content_length > 0 && parser_.content_length != ULLONG_MAX);
    if (has_body && (http_major_ > 1 || (http_major_ == 1 && http_minor_ >= 1))) {
      for (const auto& [field, value] : headers_) {
        if (EqualsIgnoreCase(field, "expect") && EqualsIgnoreCase(value, "100-continue")) {
          return SendAll(fd_, "HTTP/1.1 100 Continue\r\nX-Upstream: " + shared_.name + "\r\n\r\n");
        }
      }
    }
    return true;
  }

  // The status line and headers. `content_length` empty: chunked (HTTP/1.1) or ended by
  // closing (HTTP/1.0). Counts the response unless it answers /admin/*.
  std::string Head(int status, std::optional<uint64_t> content_length, bool close_after,
                   std::string_view extra_headers = {},
                   std::string_view content_type = "text/plain") {
    if (counted_) shared_.answered.fetch_add(1, std::memory_order_relaxed);
    std::string head = "HTTP/1.1 " + std::to_string(status) + " " + ReasonPhrase(status) + "\r\n";
    head += "X-Upstream: " + shared_.name + "\r\n";
    if (status != 204 && status != 304) {
      head += "Content-Type: ";
      head += content_type;
      head += "\r\n";
    }
    if (content_length.has_value()) {
      if (status != 204 && status != 304)
        head += "Content-Length: " + std::to_string(*content_length) + "\r\n";
    } else if (!close_after) {
      head += "Transfer-Encoding: chunked\r\n";
    }
    if (close_after) {
      head += "Connection: close\r\n";
    } else if (http_major_ == 1 && http_minor_ == 0) {
      head += "Connection: keep-alive\r\n";
    }
    head += extra_headers;
    head += "\r\n";
    return head;
  }

  // A whole response with a small body. Returns whether the connection stays open.
  bool SendSimple(int status, std::string_view body, std::string_view extra_headers = {}) {
    const bool no_body = status == 204 || status == 304;
    std::string response = Head(status, no_body ? 0 : body.size(), !keep_alive_, extra_headers);
    if (!no_body && method_ != HTTP_HEAD) response += body;
    return SendAll(fd_, response) && keep_alive_;
  }

  void SendBadRequest(enum http_errno error) {
    counted_ = false;  // not a request with a path
    keep_alive_ = false;
    method_ = HTTP_GET;
    SendSimple(400, std::string("bad request: ") + http_errno_description(error) + "\n");
  }

  // The request line and header lines of raw_head_, each ended by LF.
  std::string HeadLines() const {
    std::string out;
    std::string_view rest = raw_head_;
    bool started = false;
    while (!rest.empty()) {
      const size_t lf = rest.find('\n');
      std::string_view line = rest.substr(0, lf);
      rest = lf == std::string_view::npos ? std::string_view() : rest.substr(lf + 1);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty()) {
        if (started) break;
        continue;
      }
      started = true;
      out.append(line);
      out += '\n';
    }
    return out;
  }

  // Answers the request just read. Returns whether the connection stays open.
  bool Respond() {
    std::string_view path = url_;
    std::string_view query;
    http_parser_url parts;
    http_parser_url_init(&parts);
    if (http_parser_parse_url(url_.data(), url_.size(), method_ == HTTP_CONNECT, &parts) == 0) {
      path = (parts.field_set & (1 << UF_PATH))
                 ? std::string_view(url_).substr(parts.field_data[UF_PATH].off,
                                                 parts.field_data[UF_PATH].len)
                 : std::string_view();
      if (parts.field_set & (1 << UF_QUERY)) {
        query = std::string_view(url_).substr(parts.field_data[UF_QUERY].off,
                                              parts.field_data[UF_QUERY].len);
      }
    }
    counted_ = !path.starts_with("/admin/");
    const std::string name_line = shared_.name + "\n";

    if (path == "/headers") return SendSimple(200, HeadLines());
    if (path.starts_with("/status/")) {
      const auto code = ParseNumber(path.substr(8));
      if (!code || *code < 200 || *code > 599) return SendSimple(400, "bad status code\n");
      return SendSimple(static_cast<int>(*code), std::to_string(*code) + "\n");
    }
    if (path.starts_with("/delay/")) {
      const auto ms = ParseNumber(path.substr(7));
      if (!ms || *ms > kMaxWaitMs) return SendSimple(400, "bad delay\n");
      std::this_thread::sleep_for(std::chrono::milliseconds(*ms));
      return SendSimple(200, name_line);
    }
    if (path == "/close") return false;
    if (path == "/close-mid-body") {
      const std::string head =
          Head(200, kCloseMidBodyDeclared, /*close_after=*/true, {}, "application/octet-stream");
      if (method_ == HTTP_HEAD) {
        SendAll(fd_, head);
        return false;
      }
      if (SendAll(fd_, head, /*more=*/true)) SendAll(fd_, PatternAt(shared_, 0, kCloseMidBodySent));
      return false;
    }
    if (path.starts_with("/bytes/")) {
      const auto size = ParseNumber(path.substr(7));
      if (!size) return SendSimple(400, "bad size\n");
      return SendBytes(*size);
    }
    if (path.starts_with("/chunked/")) {
      const std::string_view numbers = path.substr(9);
      const size_t slash = numbers.find('/');
      const auto count = ParseNumber(numbers.substr(0, slash));
      const auto size =
          slash == std::string_view::npos ? std::nullopt : ParseNumber(numbers.substr(slash + 1));
      if (!count || !size) return SendSimple(400, "bad chunk count or size\n");
      uint64_t gap_ms = 0;
      if (const auto gap = QueryParam(query, "gap_ms")) {
        const auto parsed = ParseNumber(*gap);
        if (!parsed || *parsed > kMaxWaitMs) return SendSimple(400, "bad gap_ms\n");
        gap_ms = *parsed;
      }
      return SendChunks(*count, *size, gap_ms);
    }
    if (path == "/upload") {
      if (method_ != HTTP_POST && method_ != HTTP_PUT) {
        return SendSimple(405, "use POST or PUT\n", "Allow: POST, PUT\r\n");
      }
      return SendSimple(200, std::to_string(body_bytes_) + " " + Hex16(body_hash_) + "\n");
    }
    if (path == "/healthz") {
      if (shared_.healthy.load()) return SendSimple(200, "ok\n");
      return SendSimple(503, "unhealthy\n");
    }
    if (path == "/admin/count") {
      return SendSimple(200, std::to_string(shared_.answered.load()) + "\n");
    }
    if (path == "/admin/healthy" || path == "/admin/unhealthy") {
      if (method_ != HTTP_POST) return SendSimple(405, "use POST\n", "Allow: POST\r\n");
      const bool healthy = path == "/admin/healthy";
      shared_.healthy.store(healthy);
      return SendSimple(200, healthy ? "healthy\n" : "unhealthy\n");
    }
    return SendSimple(200, name_line);
  }

  bool SendBytes(uint64_t size) {
    const std::string head = Head(200, size, !keep_alive_, {}, "application/octet-stream");
    if (method_ == HTTP_HEAD || size == 0) return SendAll(fd_, head) && keep_alive_;
    if (!SendAll(fd_, head, /*more=*/true)) return false;
    for (uint64_t offset = 0; offset < size;) {
      const size_t piece = static_cast<size_t>(std::min<uint64_t>(kPieceSize, size - offset));
      if (!SendAll(fd_, PatternAt(shared_, offset, piece), offset + piece < size)) return false;
      offset += piece;
    }
    return keep_alive_;
  }

  bool SendChunks(uint64_t count, uint64_t size, uint64_t gap_ms) {
    if (size == 0) count = 0;
    // HTTP/1.0 knows no chunked encoding: the body ends when the connection does.
    const bool chunked = http_major_ > 1 || (http_major_ == 1 && http_minor_ >= 1);
    const bool close_after = !keep_alive_ || !chunked;
    const std::string head = Head(200, std::nullopt, close_after, {}, "application/octet-stream");
    if (method_ == HTTP_HEAD) return SendAll(fd_, head) && !close_after;
    if (!SendAll(fd_, head, /*more=*/count > 0 || chunked)) return false;
    uint64_t offset = 0;
    char size_line[32];
    std::snprintf(size_line, sizeof(size_line), "%llx\r\n", static_cast<unsigned long long>(size));
    for (uint64_t chunk = 0; chunk < count; ++chunk) {
      if (chunk > 0 && gap_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms));
      if (chunked && !SendAll(fd_, size_line, /*more=*/true)) return false;
      for (uint64_t written = 0; written < size;) {
        const size_t piece = static_cast<size_t>(std::min<uint64_t>(kPieceSize, size - written));
        const bool last_piece = written + piece == size;
        if (!SendAll(fd_, PatternAt(shared_, offset, piece), chunked || !last_piece)) {
          return false;
        }
        written += piece;
        offset += piece;
      }
      if (chunked && !SendAll(fd_, "\r\n")) return false;
    }
    if (chunked && !SendAll(fd_, "0\r\n\r\n")) return false;
    return !close_after;
  }

  const int fd_;
  Shared& shared_;
  std::unique_ptr<char[]> input_;
  http_parser parser_;
  http_parser_settings settings_;
  Event event_ = Event::kNone;

  // The request being read or answered.
  std::string raw_head_;  // the bytes of its head as they arrived
  std::string url_;
  std::vector<std::pair<std::string, std::string>> headers_;
  bool in_header_value_ = false;
  enum http_method method_ = HTTP_GET;
  int http_major_ = 1;
  int http_minor_ = 1;
  bool keep_alive_ = true;
  bool counted_ = true;  // whether its response counts in /admin/count
  uint64_t body_bytes_ = 0;
  uint64_t body_hash_ = kFnvOffsetBasis;
};

struct Options {
  std::string listen;
  std::string name;
};

int Usage(const char* program, const std::string& problem) {
  std::fprintf(stderr, "%s: %s\nusage: %s --listen HOST:PORT --name NAME\n", program,
               problem.c_str(), program);
  return 2;
}

// "127.0.0.1:8080" or "[::1]:0".
bool ParseListen(const std::string& text, sockaddr_storage* address, socklen_t* length) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = text.substr(0, colon);
  const auto port = ParseNumber(std::string_view(text).substr(colon + 1));
  if (!port || *port > 65535) return false;
  *address = {};
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(address);
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(*port));
    *length = sizeof(sockaddr_in6);
    return inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1;
  }
  auto* v4 = reinterpret_cast<sockaddr_in*>(address);
  v4->sin_family = AF_INET;
  v4->sin_port = htons(static_cast<uint16_t>(*port));
  *length = sizeof(sockaddr_in);
  return inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1;
}

std::string FormatAddress(const sockaddr_storage& address) {
  char host[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(address);
    inet_ntop(AF_INET6, &v6.sin6_addr, host, sizeof(host));
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(v6.sin6_port));
  }
  const auto& v4 = reinterpret_cast<const sockaddr_in&>(address);
  inet_ntop(AF_INET, &v4.sin_addr, host, sizeof(host));
  return std::string(host) + ":" + std::to_string(ntohs(v4.sin_port));
}

[[noreturn]] void AcceptLoop(int listen_fd, Shared* shared) {
  while (true) {
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: give connections a moment to close instead of spinning.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      std::fprintf(stderr, "accept: %s\n", std::strerror(errno));
      _exit(1);
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    try {
      std::thread([fd, shared] { Connection(fd, *shared).Serve(); }).detach();
    } catch (const std::system_error& e) {
      std::fprintf(stderr, "cannot start a connection thread: %s\n", e.what());
      close(fd);
    }
  }
}

int Main(int argc, char** argv) {
  // Blocked before any thread starts, so every thread inherits the mask and the signals
  // reach only sigwait() below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    std::string* target = nullptr;
    std::string flag = arg;
    std::optional<std::string> value;
    if (const size_t eq = arg.find('='); eq != std::string::npos) {
      flag = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    if (flag == "--listen") {
      target = &options.listen;
    } else if (flag == "--name") {
      target = &options.name;
    } else if (flag == "--help" || flag == "-h") {
      return Usage(argv[0], "help");
    } else {
      return Usage(argv[0], "unknown argument " + arg);
    }
    if (!value) {
      if (i + 1 >= argc) return Usage(argv[0], flag + " needs a value");
      value = argv[++i];
    }
    *target = *value;
  }
  if (options.listen.empty()) return Usage(argv[0], "--listen is required");
  if (options.name.empty()) return Usage(argv[0], "--name is required");
  for (const char c : options.name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return Usage(argv[0], "--name must be printable (it goes into a header)");
    }
  }
  sockaddr_storage address;
  socklen_t address_length = 0;
  if (!ParseListen(options.listen, &address, &address_length)) {
    return Usage(argv[0], "bad --listen address " + options.listen);
  }

  const int listen_fd = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  if (listen_fd < 0 || setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      bind(listen_fd, reinterpret_cast<const sockaddr*>(&address), address_length) != 0 ||
      listen(listen_fd, SOMAXCONN) != 0) {
    std::fprintf(stderr, "cannot listen on %s: %s\n", options.listen.c_str(), std::strerror(errno));
    return 1;
  }
  address_length = sizeof(address);
  getsockname(listen_fd, reinterpret_cast<sockaddr*>(&address), &address_length);

  // Never freed: the threads use it until the process exits.
  auto* shared = new Shared;
  shared->name = options.name;
  shared->pattern.resize(kPieceSize + kPatternPeriod);
  for (size_t i = 0; i < shared->pattern.size(); ++i) {
    shared->pattern[i] = static_cast<char>(i % kPatternPeriod);
  }

  std::thread(AcceptLoop, listen_fd, shared).detach();
  std::printf("listening %s\n", FormatAddress(address).c_str());
  std::fflush(stdout);

  int signal_number = 0;
  while (sigwait(&stop_signals, &signal_number) != 0) {
  }
  // _exit: connection threads may be in the middle of a send; nothing needs tearing down.
  _exit(0);
}

}  // namespace
}  // namespace sluice::test_upstream

int main(int argc, char** argv) { return sluice::test_upstream::Main(argc, argv); }
