// The HTTP fuzz targets: a real ServerConnection over a socketpair, and CanonicalPath.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_targets.h"
#include "fuzz/fuzz_util.h"
#include "http/head_parser.h"
#include "http/head_parser_reference.h"
#include "http/server_connection.h"
#include "net/address.h"
#include "net/event_loop.h"
#include "sluice/clock.h"

namespace sluice::fuzz {
namespace {

using namespace std::chrono_literals;

// HttpConnectionOneInput's input:
//   byte 0   flags: bits 0-1 how often the payload is sent ({1, 1, 3, 8} times, so a
//            short input can fill the read buffer); bit 2 a small send buffer on the
//            server's socket (partial writes, EPOLLOUT); bit 3 once everything is sent
//            the client half-closes, or with bit 2 closes without reading the rest;
//            bit 4 gives control bit 7 its meaning; bit 5 the bystander connection
//            sends a request; bits 5-7 are mixed into every handler choice
//   byte 1   k: the last k bytes of the input are control bytes, one per step
//   then     the payload, the bytes the client sends
// Each step (one loop turn) sends a chunk, reads what the server wrote, and moves the
// clock. A control byte: bits 0-3 chunk size (kChunkSizes), bits 4-6 clock jump
// (kClockJumps), bit 7 Drain the connection (flags bit 4) or else skip reading this
// step. After the control bytes, kFinalSteps steps send the rest, read, and move the
// clock far enough for every timer and timeout to fire.
constexpr size_t kChunkSizes[16] = {1,   2,   3,    5,    8,    13,   32,    64,
                                    128, 256, 1024, 2048, 4096, 8192, 16384, SIZE_MAX};
constexpr Duration kClockJumps[8] = {0ms, 0ms, 0ms, 1ms, 1ms, 10ms, 400ms, 3s};
constexpr int kFinalSteps = 12;
constexpr Duration kFinalClockJump = 2s;
constexpr uint8_t kControlAfterTheLast = 0x0F;  // the rest at once, no clock jump

constexpr http::ProtocolLimits kLimits{
    .max_header_bytes = 1024, .max_body_bytes = 4096, .header_timeout = 1s, .idle_timeout = 5s};

// SLUICE_FUZZ_TRACE=1 in the environment prints what a session does, to follow a
// crashing input step by step.
bool Tracing() {
  static const bool tracing = std::getenv("SLUICE_FUZZ_TRACE") != nullptr;
  return tracing;
}

#define FUZZ_TRACE(...)                                         \
  do {                                                          \
    if (Tracing()) std::fprintf(stderr, "trace: " __VA_ARGS__); \
  } while (false)

bool IsProtocolError(int status) {
  return status == 400 || status == 408 || status == 413 || status == 431;
}

std::string_view ProtocolErrorBody(int status) {
  switch (status) {
    case 400:
      return "{\"error\":\"bad_request\"}\n";
    case 408:
      return "{\"error\":\"request_timeout\"}\n";
    case 413:
      return "{\"error\":\"body_too_large\"}\n";
    default:
      return "{\"error\":\"headers_too_large\"}\n";
  }
}

bool IsTokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

uint64_t Mix(uint64_t x) {  // SplitMix64's finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The body the handler sends for the index-th request, recomputed when checking.
char BodyByte(size_t request_index, size_t i) {
  return static_cast<char>('a' + (i * 7 + request_index) % 26);
}

// What the handler answered (or will answer) to one dispatched request.
struct Planned {
  int status = 200;
  std::string_view headers;
  std::string_view content_type;
  size_t body_size = 0;
  bool head = false;
  std::string request_id;
};

const std::string kBigHeader = "X-Big: " + std::string(3000, 'b') + "\r\n";
const std::string kLongContentType(150, 't');

// Answers every request as the input steers it: at once, or held and answered from a
// loop timer (or never, until the connection closes), or as the gateway does: the body
// streamed to the handler (paused and resumed from timers), then the response written
// in pieces (StartResponse, WriteResponse, EndResponse) or by Respond.
class FuzzHandler final : public http::RequestHandler, public http::StreamHandler {
 public:
  FuzzHandler(const char* name, net::EventLoop& loop, const net::IpAddress& peer, uint8_t flags)
      : name_(name), loop_(loop), peer_(peer), flags_(flags) {}

  void OnRequest(http::ServerConnection& connection, const http::Request& request) override {
    Require(!closed_, "no request after OnClose");
    Require(held_ == nullptr, "no request while another is held");
    CheckRequest(request);

    uint64_t h = 1469598103934665603ull;  // FNV-1a of the target, then mixed
    for (char c : request.target) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    h = Mix(h ^ (planned_.size() << 8) ^ (flags_ >> 5) ^ (request.headers.size() << 20));

    Planned p;
    static constexpr int kStatuses[8] = {200, 200, 404, 429, 503, 204, 301, 500};
    p.status = kStatuses[(h >> 8) & 7];
    // Large bodies only for the first requests: a long pipeline would otherwise write
    // megabytes.
    static constexpr size_t kBodySizes[8] = {0, 2, 23, 300, 1, 4000, 9000, 70000};
    p.body_size = kBodySizes[(h >> 12) & (planned_.size() < 16 ? 7 : 3)];
    if (p.status == 204) p.body_size = 0;
    static const std::string_view kHeaders[4] = {
        "", "X-Fuzz: 1\r\n", "Retry-After: 3\r\nRateLimit: limit=10, remaining=0\r\n", kBigHeader};
    p.headers = kHeaders[(h >> 16) & 3];
    static const std::string_view kContentTypes[4] = {"", "text/plain", "application/json",
                                                      kLongContentType};
    p.content_type = kContentTypes[(h >> 18) & 3];
    p.head = request.head_method;
    p.request_id = std::string(request.request_id);
    planned_.push_back(p);
    const size_t index = planned_.size() - 1;

    // Mostly answered at once; sometimes twice (the second is ignored), held and
    // answered from a timer, or held until the connection closes.
    const unsigned mode = h & 63;
    FUZZ_TRACE("%s request %zu: %.*s %.*s (%zu headers) -> %d, %zu body bytes, mode %u\n", name_,
               index, static_cast<int>(request.method.size()), request.method.data(),
               static_cast<int>(std::min<size_t>(request.target.size(), 60)), request.target.data(),
               request.headers.size(), p.status, p.body_size, mode);
    if (mode < 36) {
      Answer(connection, index);
      if (mode >= 32) connection.Respond(200, "X-Second: 1\r\n", "text/plain", "second");
      return;
    }
    if (mode < 48) {  // streamed, as the gateway does
      connection.Hold();
      connection.StreamBody(*this);
      held_ = &connection;
      held_index_ = index;
      stream_bits_ = h >> 24;
      body_received_ = 0;
      if (mode & 1) {
        connection.ResumeBody();
      } else {
        timer_ = loop_.RunAt(loop_.now() + 50ms, [this] {
          timer_ = net::EventLoop::kNoTimer;
          held_->ResumeBody();
        });
      }
      return;
    }
    connection.Hold();
    Require(connection.held(), "Hold() holds");
    held_ = &connection;
    held_index_ = index;
    if (mode == 63) return;  // until the connection closes
    static constexpr Duration kDelays[3] = {0ms, 300ms, 2500ms};
    timer_ = loop_.RunAt(loop_.now() + kDelays[mode % 3], [this] {
      FUZZ_TRACE("%s timer: answering held request %zu\n", name_, held_index_);
      timer_ = net::EventLoop::kNoTimer;
      http::ServerConnection* c = held_;
      held_ = nullptr;
      Answer(*c, held_index_);
    });
  }

  // http::StreamHandler
  void OnRequestBody(http::ServerConnection& connection, std::string_view bytes) override {
    Require(!closed_ && held_ == &connection, "body pieces only for the streamed request");
    Require(!bytes.empty(), "no empty body pieces");
    body_received_ += bytes.size();
    Require(body_received_ <= kLimits.max_body_bytes, "no more body than the limit");
    // Now and then stop, and go on from a timer, as the gateway does when its upstream
    // is slow to take the body.
    stream_bits_ = Mix(stream_bits_ + bytes.size());
    if ((stream_bits_ & 3) == 0 && timer_ == net::EventLoop::kNoTimer) {
      connection.PauseBody();
      timer_ = loop_.RunAt(loop_.now() + 10ms, [this] {
        timer_ = net::EventLoop::kNoTimer;
        held_->ResumeBody();
      });
    }
  }

  void OnRequestBodyComplete(http::ServerConnection& connection) override {
    Require(!closed_ && held_ == &connection, "the end only for the streamed request");
    Require(connection.request_complete(), "the request is complete at its end");
    if (timer_ != net::EventLoop::kNoTimer) loop_.Cancel(timer_);
    // Answered now or from a timer, by Respond or in pieces.
    const bool later = (stream_bits_ >> 8) & 1;
    auto answer = [this] {
      http::ServerConnection* c = held_;
      held_ = nullptr;
      if ((stream_bits_ >> 9) & 1) {
        Answer(*c, held_index_);
      } else {
        AnswerInPieces(*c, held_index_);
      }
    };
    if (later) {
      timer_ = loop_.RunAt(loop_.now() + 5ms, [this, answer] {
        timer_ = net::EventLoop::kNoTimer;
        answer();
      });
    } else {
      timer_ = net::EventLoop::kNoTimer;
      answer();
    }
  }

  void OnResponseDrained(http::ServerConnection&) override {}

  void OnClose(http::ServerConnection& connection) override {
    FUZZ_TRACE("%s OnClose\n", name_);
    Require(!closed_, "OnClose once");
    Require(connection.closed(), "closed() during OnClose");
    closed_ = true;
    if (timer_ != net::EventLoop::kNoTimer) loop_.Cancel(timer_);
    timer_ = net::EventLoop::kNoTimer;
    held_ = nullptr;
  }

  void OnProtocolError(http::ServerConnection& connection, int status) override {
    FUZZ_TRACE("%s OnProtocolError %d\n", name_, status);
    Require(!closed_, "no protocol error after OnClose");
    Require(IsProtocolError(status), "protocol errors are 400, 408, 413 or 431");
    ++protocol_errors_;
  }

  bool closed() const { return closed_; }
  int protocol_errors() const { return protocol_errors_; }
  const std::vector<Planned>& planned() const { return planned_; }

 private:
  // The planned response as the gateway writes one: a head it built, then the body in
  // pieces of a few sizes, then the end.
  void AnswerInPieces(http::ServerConnection& connection, size_t index) {
    const Planned& p = planned_[index];
    std::string head = "HTTP/1.1 " + std::to_string(p.status) + " Streamed\r\n";
    head += "Content-Length: " + std::to_string(p.body_size) + "\r\n";
    if (!p.content_type.empty()) {
      head += "Content-Type: ";
      head += p.content_type.substr(0, 100);
      head += "\r\n";
    }
    head += "X-Request-Id: " + p.request_id + "\r\n";
    head += p.headers;
    const bool close = connection.closes_after_response();
    if (close) head += "Connection: close\r\n";
    head += "\r\n";
    connection.StartResponse(head, close);
    body_.resize(p.body_size);
    for (size_t i = 0; i < p.body_size; ++i) body_[i] = BodyByte(index, i);
    static constexpr size_t kPieces[4] = {1, 7, 1000, 65536};
    for (size_t at = 0; at < body_.size() && !connection.closed();) {
      const size_t n = std::min(kPieces[(stream_bits_ >> (at % 16)) & 3], body_.size() - at);
      connection.WriteResponse(std::string_view(body_).substr(at, n));
      at += n;
    }
    connection.EndResponse();
  }

  void Answer(http::ServerConnection& connection, size_t index) {
    const Planned& p = planned_[index];
    body_.resize(p.body_size);
    for (size_t i = 0; i < p.body_size; ++i) body_[i] = BodyByte(index, i);
    connection.Respond(p.status, p.headers, p.content_type, body_);
  }

  void CheckRequest(const http::Request& request) {
    Require(!request.method.empty(), "a method");
    Require(request.head_method == (request.method == "HEAD"), "head_method is HEAD");
    Require(request.peer != nullptr && *request.peer == peer_, "the peer");
    Require(request.headers.size() <= 100, "at most 100 header fields");
    Require(request.target.size() <= kLimits.max_header_bytes, "target within the head limit");
    Require(!request.target.empty(), "a target");
    if (request.target.front() == '/') {
      Require(!request.path.empty() && request.path.front() == '/', "an origin-form path");
    }
    Require(request.query.size() < request.target.size(), "query within the target");
    size_t head_bytes = request.target.size();
    std::optional<std::string_view> first_host;
    for (const http::Header& header : request.headers) {
      head_bytes += header.name.size() + header.value.size();
      if (!first_host && EqualsIgnoreCase(header.name, "host")) first_host = header.value;
    }
    Require(head_bytes <= kLimits.max_header_bytes, "the head within max_header_bytes");
    Require(request.FindHeader("HOST") == first_host, "FindHeader finds the first, any case");
    Require(!request.request_id.empty() && request.request_id.size() <= 128, "a request id");
    for (char c : request.request_id) {
      Require(c > ' ' && c < 0x7f && c != ',' && c != ';', "request ids are plain tokens");
    }
  }

  const char* name_;  // for tracing
  net::EventLoop& loop_;
  const net::IpAddress peer_;
  const uint8_t flags_;
  std::vector<Planned> planned_;
  std::string body_;
  http::ServerConnection* held_ = nullptr;
  size_t held_index_ = 0;
  uint64_t stream_bits_ = 0;  // the streamed request's choices
  uint64_t body_received_ = 0;
  net::EventLoop::TimerId timer_ = net::EventLoop::kNoTimer;
  bool closed_ = false;
  int protocol_errors_ = 0;
};

// Reads the responses off `out` and checks them against what the handler planned.
// Everything the server wrote was read, but it may end in the middle of a response
// (the server may close a connection whose client stopped reading or sending).
void CheckOutput(std::string_view out, const FuzzHandler& handler) {
  const std::vector<Planned>& planned = handler.planned();
  size_t pos = 0;
  size_t answers = 0;  // final responses for dispatched requests
  size_t errors = 0;
  size_t continues = 0;
  bool closing = false;
  while (pos < out.size()) {
    Require(!closing, "nothing after a response that closes the connection");
    const size_t head_end = out.find("\r\n\r\n", pos);
    if (head_end == std::string_view::npos) {
      Require(out.substr(pos).starts_with("HTTP/1.1 ") ||
                  std::string_view("HTTP/1.1 ").starts_with(out.substr(pos)),
              "a truncated response starts like one");
      break;
    }
    const std::string_view head = out.substr(pos, head_end - pos);
    const size_t line_end = head.find("\r\n");
    const std::string_view status_line = head.substr(0, line_end);
    Require(status_line.size() > 13 && status_line.starts_with("HTTP/1.1 ") &&
                status_line[9] >= '1' && status_line[9] <= '5' && status_line[10] >= '0' &&
                status_line[10] <= '9' && status_line[11] >= '0' && status_line[11] <= '9' &&
                status_line[12] == ' ',
            "status line: HTTP/1.1 NNN Reason");
    const int status =
        (status_line[9] - '0') * 100 + (status_line[10] - '0') * 10 + (status_line[11] - '0');
    if (status == 100) {
      Require(head == "HTTP/1.1 100 Continue", "100 Continue has no header fields");
      Require(++continues <= planned.size(), "100 Continue only for a dispatched request");
      pos = head_end + 4;
      continue;
    }
    Require(line_end != std::string_view::npos, "a final response has header fields");

    std::optional<uint64_t> content_length;
    std::optional<std::string_view> request_id, content_type, connection;
    int content_lengths = 0, request_ids = 0, content_types = 0, connections = 0;
    for (size_t p = line_end + 2; p <= head.size();) {
      size_t e = head.find("\r\n", p);
      if (e == std::string_view::npos) e = head.size();
      const std::string_view line = head.substr(p, e - p);
      p = e + 2;
      const size_t colon = line.find(':');
      Require(colon != std::string_view::npos && colon > 0, "a header line is Name: value");
      const std::string_view name = line.substr(0, colon);
      for (char c : name) Require(IsTokenChar(c), "header names are tokens");
      std::string_view value = line.substr(colon + 1);
      Require(value.empty() || value.front() == ' ', "a space after the colon");
      if (!value.empty()) value.remove_prefix(1);
      for (char c : value) {
        Require(c == '\t' || (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f),
                "no control characters in header values");
      }
      if (EqualsIgnoreCase(name, "content-length")) {
        ++content_lengths;
        Require(!value.empty() && value.size() <= 19, "Content-Length is a number");
        uint64_t n = 0;
        for (char c : value) {
          Require(c >= '0' && c <= '9', "Content-Length is decimal");
          n = n * 10 + static_cast<uint64_t>(c - '0');
        }
        content_length = n;
      } else if (EqualsIgnoreCase(name, "x-request-id")) {
        ++request_ids;
        request_id = value;
      } else if (EqualsIgnoreCase(name, "content-type")) {
        ++content_types;
        content_type = value;
      } else if (EqualsIgnoreCase(name, "connection")) {
        ++connections;
        connection = value;
      }
    }
    Require(content_lengths == 1, "exactly one Content-Length");
    Require(request_ids == 1, "exactly one X-Request-Id");
    Require(content_types <= 1 && connections <= 1, "at most one Content-Type and Connection");
    Require(!connection || *connection == "close" || *connection == "keep-alive",
            "Connection: close or keep-alive");

    const bool error = IsProtocolError(status);
    const Planned* p = nullptr;
    if (error) {
      Require(++errors == 1, "at most one protocol error response");
      Require(errors <= static_cast<size_t>(handler.protocol_errors()),
              "an error response was reported to OnProtocolError");
      Require(connection == "close", "a protocol error closes the connection");
      Require(content_type == "application/json", "error bodies are JSON");
    } else {
      Require(answers < planned.size(), "no more answers than dispatched requests");
      p = &planned[answers];
      Require(status == p->status, "the status the handler gave, for the request in order");
      Require(*request_id == p->request_id, "the request's id is echoed");
      Require(out.substr(pos, head_end + 2 - pos).find(p->headers) != std::string_view::npos,
              "the handler's header fields");
      if (p->content_type.empty()) {
        Require(!content_type, "no Content-Type when the handler gave none");
      } else {
        Require(content_type == p->content_type.substr(0, 100), "the handler's Content-Type");
      }
      ++answers;
    }
    Require(answers + errors <= planned.size() + 1,
            "responses <= dispatched requests + one protocol error");
    if (connection == "close") closing = true;

    const uint64_t length = *content_length;
    if (p != nullptr) Require(length == p->body_size, "Content-Length is the body's size");
    const bool has_body = p == nullptr || !p->head;
    const size_t body_start = head_end + 4;
    if (has_body && out.size() - body_start < length) break;  // truncated
    const std::string_view body = out.substr(body_start, has_body ? length : 0);
    if (error) {
      Require(body == ProtocolErrorBody(status), "the protocol error's body");
    } else {
      for (size_t i = 0; i < body.size(); ++i) {
        if (body[i] != BodyByte(answers - 1, i)) Require(false, "the handler's body");
      }
    }
    pos = body_start + body.size();
  }
}

// The client's end of one connection and everything read from it.
struct Client {
  int fd = -1;
  std::string output;
  bool eof = false;

  void Read() {
    char buffer[65536];
    while (fd >= 0 && !eof) {
      const ssize_t n = recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n > 0) {
        output.append(buffer, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) eof = true;
      return;
    }
  }
  void Close() {
    if (fd >= 0) close(fd);
    fd = -1;
  }
};

class Session {
 public:
  Session(const uint8_t* data, size_t size)
      : clock_(FromNanos(int64_t{1'000'000'000})), loop_(clock_) {
    Reader in(data, size);
    flags_ = in.Take<uint8_t>();
    const size_t body = size > 2 ? size - 2 : 0;
    control_size_ = std::min<size_t>(in.Take<uint8_t>(), body);
    control_ = data + size - control_size_;
    static constexpr int kRepeats[4] = {1, 1, 3, 8};
    for (int r = 0; r < kRepeats[flags_ & 3]; ++r) {
      payload_.append(reinterpret_cast<const char*>(data) + 2, body - control_size_);
    }
    peer_ = *net::IpAddress::Parse("192.0.2.1");
  }

  void Run() {
    http::RequestIdSource ids(0x5eed);
    http::ConnectionTimeouts timeouts;
    FuzzHandler handler("connection", loop_, peer_, flags_);
    handler_ = &handler;
    // A small send buffer makes partial writes: the server waits for EPOLLOUT.
    std::unique_ptr<http::ServerConnection> connection =
        Connect(client_, handler, ids, timeouts, (flags_ & 4) != 0);
    connection_ = connection.get();
    // A second connection shares the timeout lists, so arming and expiring walk past a
    // neighbour: it sends one request (or nothing, and waits for its 408).
    FuzzHandler bystander_handler("bystander", loop_, peer_, flags_);
    std::unique_ptr<http::ServerConnection> bystander =
        Connect(bystander_, bystander_handler, ids, timeouts, false);
    if (flags_ & 0x20) {
      static constexpr std::string_view kRequest = "GET /b HTTP/1.1\r\nHost: b\r\n\r\n";
      Require(send(bystander_.fd, kRequest.data(), kRequest.size(), MSG_NOSIGNAL) ==
                  static_cast<ssize_t>(kRequest.size()),
              "the bystander's request fits the socket");
    }
    loop_.AddTurnHook([this, &timeouts] {
      const int64_t now = ToNanos(loop_.now());
      loop_.RunDeferredSends();
      timeouts.header.Expire(now);
      timeouts.idle.Expire(now);
    });
    connection->Start();
    bystander->Start();
    loop_.Post([this] { Step(); });
    loop_.Run();

    client_.Read();
    bystander_.Read();
    Require(connection->closed() == handler.closed(), "closed() is OnClose");
    Require(bystander->closed() == bystander_handler.closed(), "closed() is OnClose");
    connection.reset();  // closes the server's end if still open
    bystander.reset();
    client_.Read();  // what it had written before
    bystander_.Read();
    client_.Close();
    bystander_.Close();
    FUZZ_TRACE("output:\n%s\n", client_.output.c_str());
    CheckOutput(client_.output, handler);
    CheckOutput(bystander_.output, bystander_handler);
  }

 private:
  std::unique_ptr<http::ServerConnection> Connect(Client& client, FuzzHandler& handler,
                                                  http::RequestIdSource& ids,
                                                  http::ConnectionTimeouts& timeouts,
                                                  bool small_send_buffer) {
    int fds[2];
    Require(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0,
            "socketpair (out of descriptors: a leak?)");
    if (small_send_buffer) {
      const int size = 4096;
      setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    }
    client.fd = fds[1];
    return std::make_unique<http::ServerConnection>(loop_, fds[0], peer_, handler, ids, kLimits,
                                                    timeouts);
  }

  // One loop turn's worth of client activity; posted again until the session ends.
  void Step() {
    ++steps_;
    const bool final_step = control_pos_ >= control_size_;
    const uint8_t control = final_step ? kControlAfterTheLast : control_[control_pos_++];
    FUZZ_TRACE("step %d: control %02x, sent %zu/%zu, output %zu, now %lld ms\n", steps_, control,
               sent_, payload_.size(), client_.output.size(),
               static_cast<long long>(ToNanos(clock_.Now()) / 1000000));
    if (sent_ < payload_.size() && !peer_gone_ && client_.fd >= 0) {
      const size_t chunk = std::min(kChunkSizes[control & 15], payload_.size() - sent_);
      const ssize_t n = send(client_.fd, payload_.data() + sent_, chunk, MSG_NOSIGNAL);
      if (n > 0) sent_ += static_cast<size_t>(n);
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) peer_gone_ = true;
    } else if ((flags_ & 8) && !half_closed_) {
      // The client is done: it half-closes, or (with flags bit 2 too) it goes away
      // without reading the rest, and the server's writes fail.
      FUZZ_TRACE("client %s\n", (flags_ & 4) ? "closes" : "half-closes");
      if (flags_ & 4) {
        client_.Read();
        client_.Close();
      } else {
        shutdown(client_.fd, SHUT_WR);
      }
      half_closed_ = true;
    }
    const bool drain = (control & 0x80) && (flags_ & 0x10);
    if (final_step || drain || !(control & 0x80)) client_.Read();
    bystander_.Read();
    if (drain && !connection_->closed()) {
      FUZZ_TRACE("Drain\n");
      connection_->Drain();
    }
    clock_.Advance(final_step ? kFinalClockJump : kClockJumps[(control >> 4) & 7]);

    if (final_step) ++final_steps_;
    const bool all_sent = sent_ == payload_.size() || peer_gone_ || client_.fd < 0;
    if ((handler_->closed() && all_sent && (client_.eof || client_.fd < 0)) ||
        final_steps_ > kFinalSteps) {
      loop_.Stop();
      return;
    }
    loop_.Post([this] { Step(); });
  }

  ManualClock clock_;
  net::EventLoop loop_;
  net::IpAddress peer_;
  uint8_t flags_ = 0;
  const uint8_t* control_ = nullptr;
  size_t control_size_ = 0;
  size_t control_pos_ = 0;
  std::string payload_;
  size_t sent_ = 0;
  bool peer_gone_ = false;
  bool half_closed_ = false;
  Client client_;
  Client bystander_;
  int steps_ = 0;
  int final_steps_ = 0;
  FuzzHandler* handler_ = nullptr;
  http::ServerConnection* connection_ = nullptr;
};

}  // namespace

int HttpConnectionOneInput(const uint8_t* data, size_t size) {
  Session session(data, size);
  session.Run();
  return 0;
}

int CanonicalPathOneInput(const uint8_t* data, size_t size) {
  const std::string_view path(reinterpret_cast<const char*>(data), size);
  std::string scratch, scratch_again;
  const std::string once(http::CanonicalPath(path, scratch));
  const std::string twice(http::CanonicalPath(once, scratch_again));
  Require(once == twice, "CanonicalPath is idempotent");
  if (!path.empty() && path.front() == '/') {
    Require(!once.empty() && once.front() == '/', "a path that starts with '/' keeps it");
  }
  if (!path.empty() && path.front() != '/' && path.find("://") != std::string_view::npos) {
    Require(!once.empty() && once.front() == '/', "absolute form becomes a path");
  }
  Require(once.find("//") == std::string::npos, "no empty segment");
  for (size_t slash = once.find('/'); slash != std::string::npos;
       slash = once.find('/', slash + 1)) {
    const size_t end = std::min(once.find('/', slash + 1), once.size());
    const std::string_view segment = std::string_view(once).substr(slash + 1, end - slash - 1);
    Require(segment != "." && segment != "..", "no dot segment");
  }
  return 0;
}

int HeadParserOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const http::MessageKind kind =
      (data[0] & 1) != 0 ? http::MessageKind::kResponse : http::MessageKind::kRequest;
  static constexpr size_t kMaxLengths[4] = {64, 256, 1024, SIZE_MAX};
  const size_t max_length = kMaxLengths[(data[0] >> 1) & 3];
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  // A few bytes in front, so offsets into the buffer are not offsets into the head.
  const std::string buffer = "xyz" + text;
  http::HeaderSpans<8> spans;
  http::SimpleHead head;
  if (!http::ParseSimpleHead(kind, buffer.data(), 3, buffer.size(), max_length, spans, head)) {
    Require(spans.size() == 0, "a head left to the slow path leaves no fields");
    return 0;
  }
  Require(head.length <= text.size() && head.length <= max_length, "the head is in the input");
  const std::string difference =
      http::testing::DifferenceFromHttpParser(kind, buffer.data(), 3, head, spans);
  if (!difference.empty()) {
    std::fprintf(stderr, "HeadParserOneInput: %s in:\n", difference.c_str());
    for (const char c : text.substr(0, head.length)) {
      std::fprintf(stderr, c >= 0x20 && c < 0x7f ? "%c" : "\\x%02x", static_cast<uint8_t>(c));
    }
    std::fprintf(stderr, "\n");
    std::abort();
  }
  http::HeaderSpans<8> shorter_spans;
  http::SimpleHead shorter;
  Require(!http::ParseSimpleHead(kind, buffer.data(), 3, 3 + head.length - 1, max_length,
                                 shorter_spans, shorter),
          "a head is not taken before its blank line");
  return 0;
}

}  // namespace sluice::fuzz
