// The test upstream (tests/upstream/test_upstream.cc) as the gateway tests will use it: a
// real child process, its port read from its stdout, every behaviour checked over a real
// loopback socket with a small raw HTTP/1.1 client of our own (not the server's parser, so
// a bug in one is not mirrored by the other).
//
// Nothing here can hang the suite: every connect, send and receive polls against a
// deadline, and the fixture kills the child in TearDown (and the child gets SIGKILL when
// the test process dies, PR_SET_PDEATHSIG). The few tests about time only assert that a
// wait took at least as long as asked, never an upper bound.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "upstream/upstream_process.h"

namespace sluice::test_upstream {
namespace {

using sluice::testing::UpstreamProcess;
using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

// Bound on one network wait.
constexpr Millis kIoTimeout{5000};
constexpr uint64_t kPatternPeriod = 251;
constexpr uint64_t kMiB = 1024 * 1024;

int RemainingMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left + 1, 60'000));
}

Millis ElapsedSince(Clock::time_point start) {
  return std::chrono::duration_cast<Millis>(Clock::now() - start);
}

uint64_t Fnv1a64(std::string_view bytes, uint64_t hash = 0xcbf29ce484222325ULL) {
  for (const char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

std::string Hex16(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(value));
  return text;
}

// The upstream's body pattern: byte i is i % 251. ExpectedPattern(offset, n) is what the
// n bytes at body offset `offset` must be.
class Pattern {
 public:
  Pattern() : bytes_(kMiB + kPatternPeriod) {
    for (size_t i = 0; i < bytes_.size(); ++i) bytes_[i] = static_cast<char>(i % kPatternPeriod);
  }
  // REQUIRES: length <= 1 MiB.
  bool Matches(uint64_t offset, std::string_view bytes) const {
    return std::memcmp(bytes_.data() + offset % kPatternPeriod, bytes.data(), bytes.size()) == 0;
  }
  // Checks `bytes` (any length) against the pattern from `offset`.
  bool MatchesAll(uint64_t offset, std::string_view bytes) const {
    while (!bytes.empty()) {
      const size_t piece = std::min<size_t>(bytes.size(), kMiB);
      if (!Matches(offset, bytes.substr(0, piece))) return false;
      offset += piece;
      bytes.remove_prefix(piece);
    }
    return true;
  }

 private:
  std::vector<char> bytes_;
};

const Pattern& ThePattern() {
  static const Pattern* pattern = new Pattern;
  return *pattern;
}

// --- The upstream process (UpstreamProcess: tests/upstream/upstream_process.h) -------------

// The server's resident memory, from /proc (0 if unreadable).
uint64_t ResidentKiB(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

// --- A raw HTTP/1.1 client ------------------------------------------------------------------

struct Response {
  int status = 0;
  std::string error;  // empty: a complete response was read
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // unless a sink took it
  uint64_t body_bytes = 0;
  bool chunked = false;
  std::vector<uint64_t> chunk_sizes;  // as the chunk-size lines said

  bool complete() const { return status != 0 && error.empty(); }
  std::optional<std::string> Header(std::string_view name) const {
    for (const auto& [field, value] : headers) {
      if (field.size() == name.size() &&
          std::equal(field.begin(), field.end(), name.begin(),
                     [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
        return value;
      }
    }
    return std::nullopt;
  }
  std::string Describe() const {
    std::string text =
        "status " + std::to_string(status) + (error.empty() ? "" : " (" + error + ")");
    for (const auto& [field, value] : headers) text += "\n" + field + ": " + value;
    text += "\n\n" + body.substr(0, 500);
    return text;
  }
};

using BodySink = std::function<void(std::string_view)>;

// One non-blocking socket to 127.0.0.1:port; every call waits at most its timeout.
class Client {
 public:
  explicit Client(uint16_t port, Millis timeout = kIoTimeout) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
      error_ = std::string("socket: ") + std::strerror(errno);
      return;
    }
    const int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      if (errno != EINPROGRESS) {
        Fail(std::string("connect: ") + std::strerror(errno));
        return;
      }
      pollfd p{fd_, POLLOUT, 0};
      if (poll(&p, 1, static_cast<int>(timeout.count())) != 1) {
        Fail("connect timed out");
        return;
      }
      int error = 0;
      socklen_t length = sizeof(error);
      getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length);
      if (error != 0) Fail(std::string("connect: ") + std::strerror(error));
    }
  }
  ~Client() { Close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return fd_ >= 0; }
  const std::string& error() const { return error_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  bool Send(std::string_view bytes, Millis timeout = kIoTimeout) {
    const auto deadline = Clock::now() + timeout;
    while (!bytes.empty()) {
      if (fd_ < 0) return false;
      const ssize_t sent = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (sent > 0) {
        bytes.remove_prefix(static_cast<size_t>(sent));
        continue;
      }
      if (sent < 0 && errno != EAGAIN && errno != EINTR) {
        error_ = std::string("send: ") + std::strerror(errno);
        return false;
      }
      pollfd p{fd_, POLLOUT, 0};
      if (poll(&p, 1, RemainingMs(deadline)) == 0) {
        error_ = "send timed out";
        return false;
      }
    }
    return true;
  }

  // Waits until the first response byte is readable (or EOF); false on timeout.
  bool WaitReadable(Millis timeout) {
    if (pos_ < buffer_.size()) return true;
    pollfd p{fd_, POLLIN, 0};
    return poll(&p, 1, static_cast<int>(timeout.count())) == 1;
  }

  // Reads one response. `head_request`: no body whatever the headers say. `sink`: body
  // bytes go there instead of into Response::body.
  Response Read(Millis timeout = kIoTimeout, bool head_request = false, const BodySink& sink = {}) {
    const auto deadline = Clock::now() + timeout;
    Response response;
    size_t head_end;
    while ((head_end = Available().find("\r\n\r\n")) == std::string_view::npos) {
      if (!Fill(deadline)) {
        response.error = "no complete head: " + error_;
        return response;
      }
    }
    const std::string head(Available().substr(0, head_end));
    Consume(head_end + 4);
    if (!ParseHead(head, &response)) return response;

    const auto take = [&](std::string_view bytes) {
      response.body_bytes += bytes.size();
      if (sink) {
        sink(bytes);
      } else {
        response.body.append(bytes);
      }
    };
    const bool no_body =
        head_request || response.status < 200 || response.status == 204 || response.status == 304;
    const auto transfer_encoding = response.Header("Transfer-Encoding");
    const auto content_length = response.Header("Content-Length");
    if (no_body) return response;
    if (transfer_encoding) {
      if (*transfer_encoding != "chunked") {
        response.error = "unexpected Transfer-Encoding " + *transfer_encoding;
        return response;
      }
      response.chunked = true;
      ReadChunked(deadline, take, &response);
    } else if (content_length) {
      uint64_t length = 0;
      if (std::from_chars(content_length->data(), content_length->data() + content_length->size(),
                          length)
              .ec != std::errc()) {
        response.error = "bad Content-Length " + *content_length;
        return response;
      }
      ReadExactly(length, deadline, take, &response);
    } else {
      // Ended by closing the connection.
      while (true) {
        take(Available());
        Consume(Available().size());
        if (!Fill(deadline)) break;
      }
      if (!eof_) response.error = "body not ended by EOF: " + error_;
    }
    return response;
  }

  Response Request(std::string_view method, std::string_view target,
                   std::string_view extra_headers = {}, std::string_view body = {},
                   Millis timeout = kIoTimeout) {
    std::string request = std::string(method) + " " + std::string(target) + " HTTP/1.1\r\n";
    request += "Host: upstream.test\r\n";
    request += extra_headers;
    if (!body.empty() || method == "POST" || method == "PUT") {
      request += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    }
    request += "\r\n";
    request += body;
    if (!Send(request, timeout)) {
      Response failed;
      failed.error = "send failed: " + error_;
      return failed;
    }
    return Read(timeout, method == "HEAD");
  }
  Response Get(std::string_view target, std::string_view extra_headers = {}) {
    return Request("GET", target, extra_headers);
  }

  // Appends whatever arrives next (waiting until the deadline) to *out.
  bool ReadSome(Clock::time_point deadline, std::string* out) {
    if (Available().empty() && !Fill(deadline)) return false;
    out->append(Available());
    Consume(Available().size());
    return true;
  }

  enum class Peer { kClosed, kData, kOpen, kError };
  // Waits for the server to close: kClosed (EOF and no bytes before it), kData (bytes
  // came instead), kOpen (nothing by the deadline), kError (reset).
  Peer WaitClosed(Millis timeout = kIoTimeout) {
    if (pos_ < buffer_.size()) return Peer::kData;
    const auto deadline = Clock::now() + timeout;
    if (Fill(deadline)) return Peer::kData;
    if (eof_) return Peer::kClosed;
    return error_ == "timed out" ? Peer::kOpen : Peer::kError;
  }

 private:
  void Fail(std::string message) {
    error_ = std::move(message);
    Close();
  }

  std::string_view Available() const { return std::string_view(buffer_).substr(pos_); }
  void Consume(size_t count) {
    pos_ += count;
    if (pos_ == buffer_.size()) {
      buffer_.clear();
      pos_ = 0;
    }
  }

  // Reads what is there (waiting until the deadline for something). False at EOF, on an
  // error or at the deadline, with error_ saying which.
  bool Fill(Clock::time_point deadline) {
    if (fd_ < 0) {
      error_ = "not connected";
      return false;
    }
    if (pos_ > 0) {
      buffer_.erase(0, pos_);
      pos_ = 0;
    }
    while (true) {
      char chunk[256 * 1024];
      const ssize_t got = recv(fd_, chunk, sizeof(chunk), 0);
      if (got > 0) {
        buffer_.append(chunk, static_cast<size_t>(got));
        return true;
      }
      if (got == 0) {
        eof_ = true;
        error_ = "EOF";
        return false;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        error_ = std::string("recv: ") + std::strerror(errno);
        return false;
      }
      pollfd p{fd_, POLLIN, 0};
      const int ready = poll(&p, 1, RemainingMs(deadline));
      if (ready == 0) {
        error_ = "timed out";
        return false;
      }
    }
  }

  bool ParseHead(const std::string& head, Response* response) {
    std::string_view rest = head;
    const auto next_line = [&rest] {
      const size_t end = rest.find("\r\n");
      const std::string_view line = rest.substr(0, end);
      rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 2);
      return line;
    };
    const std::string_view status_line = next_line();
    if (status_line.size() < 12 || status_line.substr(0, 9) != "HTTP/1.1 " ||
        std::from_chars(status_line.data() + 9, status_line.data() + 12, response->status).ec !=
            std::errc()) {
      response->error = "bad status line: " + std::string(status_line);
      response->status = 0;
      return false;
    }
    while (!rest.empty()) {
      const std::string_view line = next_line();
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos) {
        response->error = "bad header line: " + std::string(line);
        return false;
      }
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      response->headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
    }
    return true;
  }

  void ReadExactly(uint64_t length, Clock::time_point deadline,
                   const std::function<void(std::string_view)>& take, Response* response) {
    uint64_t left = length;
    while (left > 0) {
      const std::string_view bytes = Available().substr(0, left);
      take(bytes);
      Consume(bytes.size());
      left -= bytes.size();
      if (left > 0 && !Fill(deadline)) {
        response->error = "body cut short after " + std::to_string(length - left) + " of " +
                          std::to_string(length) + " bytes: " + error_;
        return;
      }
    }
  }

  // Reads a line ending in CRLF into *line (without it).
  bool ReadLine(Clock::time_point deadline, std::string* line) {
    size_t end;
    while ((end = Available().find("\r\n")) == std::string_view::npos) {
      if (Available().size() > 4096 || !Fill(deadline)) return false;
    }
    *line = std::string(Available().substr(0, end));
    Consume(end + 2);
    return true;
  }

  void ReadChunked(Clock::time_point deadline, const std::function<void(std::string_view)>& take,
                   Response* response) {
    while (true) {
      std::string size_line;
      if (!ReadLine(deadline, &size_line)) {
        response->error = "no chunk-size line: " + error_;
        return;
      }
      uint64_t size = 0;
      const auto [end, ec] =
          std::from_chars(size_line.data(), size_line.data() + size_line.size(), size, 16);
      if (ec != std::errc() || (end != size_line.data() + size_line.size() && *end != ';')) {
        response->error = "bad chunk-size line: " + size_line;
        return;
      }
      if (size == 0) break;
      response->chunk_sizes.push_back(size);
      ReadExactly(size, deadline, take, response);
      if (!response->error.empty()) return;
      std::string crlf;
      if (!ReadLine(deadline, &crlf) || !crlf.empty()) {
        response->error = "chunk not followed by CRLF";
        return;
      }
    }
    // Trailer fields, up to the empty line.
    std::string line;
    do {
      if (!ReadLine(deadline, &line)) {
        response->error = "no end of trailer: " + error_;
        return;
      }
    } while (!line.empty());
  }

  int fd_ = -1;
  std::string buffer_;
  size_t pos_ = 0;
  bool eof_ = false;
  std::string error_;
};

// --- Tests ----------------------------------------------------------------------------------

class TestUpstreamTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(upstream_.Start("a")) << upstream_.error(); }
  void TearDown() override { upstream_.Kill(); }

  uint16_t port() const { return upstream_.port(); }

  uint64_t AdminCount() {
    Client client(port());
    const Response response = client.Get("/admin/count");
    EXPECT_EQ(response.status, 200) << response.Describe();
    uint64_t count = 0;
    std::from_chars(response.body.data(), response.body.data() + response.body.size(), count);
    return count;
  }

  UpstreamProcess upstream_;
};

TEST_F(TestUpstreamTest, PrintsListeningLineWithTheKernelChosenPort) {
  EXPECT_EQ(upstream_.line(), "listening 127.0.0.1:" + std::to_string(port()));
  Client client(port());
  EXPECT_TRUE(client.connected()) << client.error();
}

TEST_F(TestUpstreamTest, RootAndUnknownPathsAnswerTheNameWithXUpstream) {
  Client client(port());
  for (const char* target : {"/", "/some/other/path?x=1", "/admin/unknown", "/statusx"}) {
    const Response response = client.Get(target);
    ASSERT_TRUE(response.complete()) << target << ": " << response.Describe();
    EXPECT_EQ(response.status, 200) << target;
    EXPECT_EQ(response.body, "a\n") << target;
    EXPECT_EQ(response.Header("X-Upstream"), "a") << target;
    EXPECT_EQ(response.Header("Content-Length"), "2") << target;
  }
  const Response head = client.Request("HEAD", "/");
  ASSERT_TRUE(head.complete()) << head.Describe();
  EXPECT_EQ(head.Header("Content-Length"), "2");
  EXPECT_EQ(head.body, "");
  // The HEAD response really had no body: the next response starts right after its head.
  EXPECT_EQ(client.Get("/status/201").status, 201);
}

TEST_F(TestUpstreamTest, KeepAliveServesSequentialAndPipelinedRequestsOnOneConnection) {
  Client client(port());
  for (int i = 0; i < 5; ++i) {
    const Response response = client.Get("/");
    ASSERT_TRUE(response.complete()) << i << ": " << response.Describe();
    EXPECT_EQ(response.Header("Connection"), std::nullopt);
  }
  ASSERT_TRUE(
      client.Send("GET /status/201 HTTP/1.1\r\nHost: h\r\n\r\n"
                  "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                  "GET /status/202 HTTP/1.1\r\nHost: h\r\n\r\n"));
  EXPECT_EQ(client.Read().status, 201);
  const Response second = client.Read();
  EXPECT_EQ(second.status, 200);
  EXPECT_EQ(second.body, "a\n");
  EXPECT_EQ(client.Read().status, 202);
  EXPECT_EQ(client.WaitClosed(Millis(50)), Client::Peer::kOpen);
}

TEST_F(TestUpstreamTest, ConnectionCloseIsAnsweredThenTheConnectionCloses) {
  Client client(port());
  const Response response = client.Get("/", "Connection: close\r\n");
  ASSERT_TRUE(response.complete()) << response.Describe();
  EXPECT_EQ(response.Header("Connection"), "close");
  EXPECT_EQ(client.WaitClosed(), Client::Peer::kClosed);
}

TEST_F(TestUpstreamTest, Http10ClosesUnlessKeepAliveIsAsked) {
  Client keep(port());
  ASSERT_TRUE(keep.Send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  const Response kept = keep.Read();
  EXPECT_EQ(kept.status, 200) << kept.Describe();
  EXPECT_EQ(kept.Header("Connection"), "keep-alive");
  ASSERT_TRUE(keep.Send("GET / HTTP/1.0\r\n\r\n"));
  const Response last = keep.Read();
  EXPECT_EQ(last.status, 200) << last.Describe();
  EXPECT_EQ(last.Header("Connection"), "close");
  EXPECT_EQ(keep.WaitClosed(), Client::Peer::kClosed);
}

TEST_F(TestUpstreamTest, HeadersEchoesTheRequestLineAndHeaderLinesAsReceived) {
  Client client(port());
  // A stray empty line before the request (allowed, and left out), odd spacing, a
  // lower-case name and a repeated field: all must come back as they were sent.
  ASSERT_TRUE(
      client.Send("\r\nGET /headers?q=1 HTTP/1.1\r\n"
                  "Host: upstream.test:8080\r\n"
                  "X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n"
                  "x-lower:   spaced value  \r\n"
                  "Via: 1.1 sluice\r\n"
                  "Via: 1.1 other\r\n"
                  "Connection: keep-alive\r\n"
                  "\r\n"));
  const Response response = client.Read();
  ASSERT_TRUE(response.complete()) << response.Describe();
  EXPECT_EQ(response.body,
            "GET /headers?q=1 HTTP/1.1\n"
            "Host: upstream.test:8080\n"
            "X-Forwarded-For: 10.0.0.1, 10.0.0.2\n"
            "x-lower:   spaced value  \n"
            "Via: 1.1 sluice\n"
            "Via: 1.1 other\n"
            "Connection: keep-alive\n");
  // A head split over many writes, with a body, on the same connection.
  const std::string request =
      "POST /headers HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nX-Request-Id: r1\r\n\r\nbody";
  for (const char c : request) ASSERT_TRUE(client.Send(std::string_view(&c, 1)));
  const Response split = client.Read();
  ASSERT_TRUE(split.complete()) << split.Describe();
  EXPECT_EQ(split.body, "POST /headers HTTP/1.1\nHost: h\nContent-Length: 4\nX-Request-Id: r1\n");
}

TEST_F(TestUpstreamTest, StatusAnswersTheCodeAsStatusAndBody) {
  Client client(port());
  for (const int code : {200, 201, 302, 404, 429, 500, 502, 503, 504, 599}) {
    const Response response = client.Get("/status/" + std::to_string(code));
    ASSERT_TRUE(response.complete()) << code << ": " << response.Describe();
    EXPECT_EQ(response.status, code);
    EXPECT_EQ(response.body, std::to_string(code) + "\n");
    EXPECT_EQ(response.Header("X-Upstream"), "a");
  }
  for (const int code : {204, 304}) {
    const Response no_body = client.Get("/status/" + std::to_string(code));
    EXPECT_EQ(no_body.status, code);
    EXPECT_EQ(no_body.Header("Content-Length"), std::nullopt) << code;
  }
  // Out of range or not a number: 400, and the connection stays usable.
  for (const char* bad : {"/status/99", "/status/600", "/status/abc", "/status/", "/status/-1"}) {
    EXPECT_EQ(client.Get(bad).status, 400) << bad;
  }
  EXPECT_EQ(client.Get("/").status, 200);
}

TEST_F(TestUpstreamTest, DelayWaitsAtLeastTheDelayBeforeTheFirstByte) {
  Client client(port());
  const auto start = Clock::now();
  ASSERT_TRUE(client.Send("GET /delay/300 HTTP/1.1\r\nHost: h\r\n\r\n"));
  ASSERT_TRUE(client.WaitReadable(kIoTimeout));
  EXPECT_GE(ElapsedSince(start), Millis(300));
  const Response response = client.Read();
  EXPECT_EQ(response.status, 200) << response.Describe();
  EXPECT_EQ(response.body, "a\n");
  EXPECT_EQ(client.Get("/delay/0").status, 200);
  EXPECT_EQ(client.Get("/delay/x").status, 400);
}

TEST_F(TestUpstreamTest, DelayOnOneConnectionDoesNotHoldBackAnother) {
  Client slow(port());
  ASSERT_TRUE(slow.Send("GET /delay/60000 HTTP/1.1\r\nHost: h\r\n\r\n"));
  Client fast(port());
  const Response response = fast.Get("/");
  EXPECT_EQ(response.status, 200) << response.Describe();
  EXPECT_FALSE(slow.WaitReadable(Millis(0)));
}

TEST_F(TestUpstreamTest, CloseClosesTheConnectionWithoutAnAnswer) {
  Client client(port());
  ASSERT_TRUE(client.Send("GET /close HTTP/1.1\r\nHost: h\r\n\r\n"));
  EXPECT_EQ(client.WaitClosed(), Client::Peer::kClosed);
  // It still reads the whole request first, body included.
  Client with_body(port());
  ASSERT_TRUE(
      with_body.Send("POST /close HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"));
  ASSERT_TRUE(with_body.Send("3\r\nabc\r\n"));
  EXPECT_EQ(with_body.WaitClosed(Millis(100)), Client::Peer::kOpen);
  ASSERT_TRUE(with_body.Send("0\r\n\r\n"));
  EXPECT_EQ(with_body.WaitClosed(), Client::Peer::kClosed);
}

TEST_F(TestUpstreamTest, CloseMidBodySendsFewerBytesThanContentLengthThenEof) {
  Client client(port());
  const Response response = client.Get("/close-mid-body");
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.Header("Content-Length"), "100000");
  EXPECT_EQ(response.body.size(), 1000u);
  EXPECT_TRUE(ThePattern().MatchesAll(0, response.body));
  EXPECT_NE(response.error.find("body cut short after 1000 of 100000 bytes: EOF"),
            std::string::npos)
      << response.error;
}

TEST_F(TestUpstreamTest, BytesTenMiBHasTheLengthAndThePattern) {
  Client client(port());
  constexpr uint64_t kSize = 10 * kMiB;
  const Response response = client.Get("/bytes/" + std::to_string(kSize));
  ASSERT_TRUE(response.complete()) << response.Describe();
  EXPECT_EQ(response.Header("Content-Length"), std::to_string(kSize));
  ASSERT_EQ(response.body.size(), kSize);
  EXPECT_TRUE(ThePattern().MatchesAll(0, response.body));
  // Odd sizes and zero, on the same connection.
  const Response odd = client.Get("/bytes/65537");
  ASSERT_EQ(odd.body.size(), 65537u) << odd.Describe();
  EXPECT_TRUE(ThePattern().MatchesAll(0, odd.body));
  const Response empty = client.Get("/bytes/0");
  EXPECT_EQ(empty.status, 200);
  EXPECT_EQ(empty.Header("Content-Length"), "0");
  EXPECT_EQ(client.Get("/bytes/1x").status, 400);
}

TEST_F(TestUpstreamTest, BytesOneGiBStreamsWithoutHoldingTheBodyInMemory) {
  Client client(port());
  constexpr uint64_t kSize = 1024 * kMiB;
  ASSERT_TRUE(client.Send("GET /bytes/" + std::to_string(kSize) + " HTTP/1.1\r\nHost: h\r\n\r\n"));
  uint64_t offset = 0;
  uint64_t next_sample = 0;
  uint64_t max_rss_kib = 0;
  bool pattern_ok = true;
  const Response response = client.Read(Millis(60000), false, [&](std::string_view bytes) {
    pattern_ok = pattern_ok && ThePattern().MatchesAll(offset, bytes);
    offset += bytes.size();
    if (offset >= next_sample) {
      max_rss_kib = std::max(max_rss_kib, ResidentKiB(upstream_.pid()));
      next_sample += 64 * kMiB;
    }
  });
  ASSERT_TRUE(response.complete()) << response.Describe();
  EXPECT_EQ(response.body_bytes, kSize);
  EXPECT_TRUE(pattern_ok);
  EXPECT_GT(max_rss_kib, 0u);
  EXPECT_LT(max_rss_kib, 64u * 1024) << "the server seems to hold the body";
}

TEST_F(TestUpstreamTest, ChunkedSendsCountChunksOfSize) {
  Client client(port());
  const Response response = client.Get("/chunked/5/1000");
  ASSERT_TRUE(response.complete()) << response.Describe();
  EXPECT_TRUE(response.chunked);
  EXPECT_EQ(response.Header("Content-Length"), std::nullopt);
  EXPECT_EQ(response.chunk_sizes, std::vector<uint64_t>(5, 1000));
  EXPECT_TRUE(ThePattern().MatchesAll(0, response.body));
  // Chunks larger than the server's 64 KiB write pieces are still one chunk each.
  const Response large = client.Get("/chunked/2/100000");
  ASSERT_TRUE(large.complete()) << large.Describe();
  EXPECT_EQ(large.chunk_sizes, std::vector<uint64_t>(2, 100000));
  EXPECT_TRUE(ThePattern().MatchesAll(0, large.body));
  for (const char* none : {"/chunked/0/10", "/chunked/3/0"}) {
    const Response empty = client.Get(none);
    ASSERT_TRUE(empty.complete()) << none << ": " << empty.Describe();
    EXPECT_TRUE(empty.chunked);
    EXPECT_TRUE(empty.chunk_sizes.empty());
  }
  EXPECT_EQ(client.Get("/chunked/3").status, 400);
  EXPECT_EQ(client.Get("/chunked/3/4?gap_ms=x").status, 400);
}

TEST_F(TestUpstreamTest, ChunkedGapWaitsBetweenChunksAndEachChunkArrivesAlone) {
  Client client(port());
  const auto start = Clock::now();
  ASSERT_TRUE(client.Send("GET /chunked/4/10?gap_ms=100 HTTP/1.1\r\nHost: h\r\n\r\n"));
  const Response response = client.Read();
  ASSERT_TRUE(response.complete()) << response.Describe();
  EXPECT_GE(ElapsedSince(start), Millis(300));
  EXPECT_EQ(response.chunk_sizes, std::vector<uint64_t>(4, 10));
  // Each chunk is flushed before the gap: the first one can be read while the second
  // waits a minute.
  ASSERT_TRUE(client.Send("GET /chunked/2/10?gap_ms=60000 HTTP/1.1\r\nHost: h\r\n\r\n"));
  std::string seen;
  const auto deadline = Clock::now() + kIoTimeout;
  while (seen.find("\r\n\r\na\r\n") == std::string::npos ||
         seen.size() - seen.find("\r\n\r\na\r\n") < 7 + 10 + 2) {
    ASSERT_TRUE(client.ReadSome(deadline, &seen)) << client.error() << "; got: " << seen;
  }
  EXPECT_TRUE(ThePattern().MatchesAll(0, seen.substr(seen.find("\r\n\r\na\r\n") + 7, 10)));
  EXPECT_EQ(seen.substr(seen.size() - 2), "\r\n");
}

TEST_F(TestUpstreamTest, ChunkedToHttp10IsUnchunkedAndEndedByClose) {
  Client client(port());
  ASSERT_TRUE(client.Send("GET /chunked/3/7 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  const Response response = client.Read();
  ASSERT_TRUE(response.complete()) << response.Describe();
  EXPECT_FALSE(response.chunked);
  EXPECT_EQ(response.Header("Connection"), "close");
  EXPECT_EQ(response.body.size(), 21u);
  EXPECT_TRUE(ThePattern().MatchesAll(0, response.body));
}

TEST_F(TestUpstreamTest, UploadOfAChunkedFiveMiBBodyReturnsItsLengthAndChecksum) {
  Client client(port());
  std::string body(5 * kMiB + 123, '\0');
  uint64_t state = 0x9e3779b97f4a7c15ULL;
  for (char& c : body) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    c = static_cast<char>(state);
  }
  ASSERT_TRUE(
      client.Send("POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"));
  // Chunks of uneven sizes, one with an extension; a trailer at the end.
  const size_t sizes[] = {1, 100, 65536, 65535, 1 << 20, 7};
  size_t offset = 0;
  for (size_t i = 0; offset < body.size(); ++i) {
    const size_t size = std::min(sizes[i % std::size(sizes)], body.size() - offset);
    char line[32];
    std::snprintf(line, sizeof(line), i == 3 ? "%zx;name=value\r\n" : "%zX\r\n", size);
    ASSERT_TRUE(client.Send(line));
    ASSERT_TRUE(client.Send(std::string_view(body).substr(offset, size)));
    ASSERT_TRUE(client.Send("\r\n"));
    offset += size;
  }
  ASSERT_TRUE(client.Send("0\r\nX-Trailer: t\r\n\r\n"));
  const Response response = client.Read(Millis(30000));
  ASSERT_TRUE(response.complete()) << response.Describe();
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, std::to_string(body.size()) + " " + Hex16(Fnv1a64(body)) + "\n");
  // The connection goes on.
  EXPECT_EQ(client.Get("/").status, 200);
}

TEST_F(TestUpstreamTest, UploadOfTwoHundredMiBDoesNotHoldTheBodyInMemory) {
  Client client(port());
  constexpr uint64_t kSize = 200 * kMiB;
  ASSERT_TRUE(client.Send(
      "PUT /upload HTTP/1.1\r\nHost: h\r\nContent-Length: " + std::to_string(kSize) + "\r\n\r\n"));
  const std::string piece(kMiB, 'x');
  uint64_t hash = 0xcbf29ce484222325ULL;
  uint64_t max_rss_kib = 0;
  for (uint64_t sent = 0; sent < kSize; sent += piece.size()) {
    ASSERT_TRUE(client.Send(piece)) << client.error();
    hash = Fnv1a64(piece, hash);
    if (sent % (16 * kMiB) == 0) max_rss_kib = std::max(max_rss_kib, ResidentKiB(upstream_.pid()));
  }
  const Response response = client.Read(Millis(30000));
  ASSERT_TRUE(response.complete()) << response.Describe();
  EXPECT_EQ(response.body, std::to_string(kSize) + " " + Hex16(hash) + "\n");
  max_rss_kib = std::max(max_rss_kib, ResidentKiB(upstream_.pid()));
  EXPECT_GT(max_rss_kib, 0u);
  EXPECT_LT(max_rss_kib, 64u * 1024) << "the server seems to hold the body";
}

TEST_F(TestUpstreamTest, UploadWithContentLengthOrEmptyBodyAndWrongMethod) {
  Client client(port());
  const std::string body = "hello, upstream";
  const Response put = client.Request("PUT", "/upload", {}, body);
  EXPECT_EQ(put.body, std::to_string(body.size()) + " " + Hex16(Fnv1a64(body)) + "\n");
  const Response empty = client.Request("POST", "/upload");
  EXPECT_EQ(empty.body, "0 cbf29ce484222325\n");
  const Response get = client.Get("/upload");
  EXPECT_EQ(get.status, 405);
  EXPECT_EQ(get.Header("Allow"), "POST, PUT");
}

TEST_F(TestUpstreamTest, ExpectContinueGetsAnInterimResponseBeforeTheBody) {
  Client client(port());
  ASSERT_TRUE(client.Send(
      "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"));
  const Response interim = client.Read();
  EXPECT_EQ(interim.status, 100) << interim.Describe();
  EXPECT_EQ(interim.Header("X-Upstream"), "a");
  ASSERT_TRUE(client.Send("abc"));
  const Response final_response = client.Read();
  EXPECT_EQ(final_response.body, "3 " + Hex16(Fnv1a64("abc")) + "\n");
}

TEST_F(TestUpstreamTest, HealthzTogglesWithAdminUnhealthyAndHealthy) {
  Client client(port());
  EXPECT_EQ(client.Get("/healthz").body, "ok\n");
  // Only POST changes it.
  EXPECT_EQ(client.Get("/admin/unhealthy").status, 405);
  EXPECT_EQ(client.Get("/healthz").status, 200);

  EXPECT_EQ(client.Request("POST", "/admin/unhealthy").status, 200);
  const Response down = client.Get("/healthz");
  EXPECT_EQ(down.status, 503);
  EXPECT_EQ(down.body, "unhealthy\n");
  // Another connection sees the same state; other paths are unaffected.
  Client other(port());
  EXPECT_EQ(other.Get("/healthz").status, 503);
  EXPECT_EQ(other.Get("/").status, 200);

  EXPECT_EQ(client.Request("POST", "/admin/healthy").status, 200);
  const Response up = client.Get("/healthz");
  EXPECT_EQ(up.status, 200);
  EXPECT_EQ(up.body, "ok\n");
}

TEST_F(TestUpstreamTest, AdminCountCountsAnsweredRequestsExceptAdminOnes) {
  EXPECT_EQ(AdminCount(), 0u);
  {
    Client client(port());
    EXPECT_EQ(client.Get("/").status, 200);
    EXPECT_EQ(client.Get("/status/500").status, 500);
    EXPECT_EQ(client.Get("/healthz").status, 200);
    EXPECT_EQ(client.Request("POST", "/admin/unhealthy").status, 200);
    EXPECT_EQ(client.Request("POST", "/admin/healthy").status, 200);
  }
  EXPECT_EQ(AdminCount(), 3u);
  {
    Client closed(port());
    ASSERT_TRUE(closed.Send("GET /close HTTP/1.1\r\nHost: h\r\n\r\n"));
    EXPECT_EQ(closed.WaitClosed(), Client::Peer::kClosed);
  }
  EXPECT_EQ(AdminCount(), 3u) << "/close answers nothing";
  {
    Client cut(port());
    EXPECT_EQ(cut.Get("/close-mid-body").status, 200);
  }
  EXPECT_EQ(AdminCount(), 4u);
  // Many connections at once, each one request.
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([this] {
      Client client(port());
      for (int j = 0; j < 10; ++j) EXPECT_EQ(client.Get("/").status, 200);
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(AdminCount(), 84u);
}

TEST_F(TestUpstreamTest, MalformedRequestsGet400AndTheConnectionCloses) {
  const char* const bad_requests[] = {
      "GARBAGE\r\n\r\n",
      "GET / HTTP/9.x\r\n\r\n",
      "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
      // Framing a proxy must not pass on: both lengths, bad chunk size.
      ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
       "0\r\n\r\n"),
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n",
  };
  for (const char* request : bad_requests) {
    Client client(port());
    ASSERT_TRUE(client.Send(request)) << request;
    const Response response = client.Read();
    EXPECT_EQ(response.status, 400) << request << "\n" << response.Describe();
    EXPECT_EQ(response.Header("Connection"), "close") << request;
    EXPECT_EQ(response.Header("X-Upstream"), "a") << request;
    EXPECT_EQ(client.WaitClosed(), Client::Peer::kClosed) << request;
  }
  // After a good request on the same connection: the good one is answered first.
  Client client(port());
  ASSERT_TRUE(client.Send("GET / HTTP/1.1\r\nHost: h\r\n\r\nNOT HTTP\r\n\r\n"));
  EXPECT_EQ(client.Read().status, 200);
  EXPECT_EQ(client.Read().status, 400);
  EXPECT_EQ(client.WaitClosed(), Client::Peer::kClosed);
  // Bad requests are not counted; the good one is.
  EXPECT_EQ(AdminCount(), 1u);
}

TEST_F(TestUpstreamTest, SigtermExitsWithStatusZeroWithConnectionsOpen) {
  Client idle(port());
  Client busy(port());
  ASSERT_TRUE(busy.Send("GET /delay/60000 HTTP/1.1\r\nHost: h\r\n\r\n"));
  EXPECT_EQ(idle.Get("/").status, 200);
  const std::optional<int> status = upstream_.Stop(SIGTERM);
  ASSERT_TRUE(status.has_value()) << "did not exit on SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0);
}

TEST_F(TestUpstreamTest, SigintExitsWithStatusZero) {
  const std::optional<int> status = upstream_.Stop(SIGINT);
  ASSERT_TRUE(status.has_value()) << "did not exit on SIGINT";
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0);
}

TEST_F(TestUpstreamTest, RestartsOnTheSamePortRightAfterBeingKilled) {
  const uint16_t old_port = port();
  {
    // Leave a connection behind in TIME_WAIT on the server side.
    Client client(old_port);
    EXPECT_EQ(client.Get("/", "Connection: close\r\n").status, 200);
    EXPECT_EQ(client.WaitClosed(), Client::Peer::kClosed);
  }
  ASSERT_TRUE(upstream_.Restart("b")) << upstream_.error();
  EXPECT_EQ(port(), old_port);
  Client client(port());
  const Response response = client.Get("/");
  EXPECT_EQ(response.body, "b\n");
  EXPECT_EQ(response.Header("X-Upstream"), "b");
}

TEST(TestUpstreamUsageTest, BadArgumentsExitWithStatusTwo) {
  UpstreamProcess upstream;
  EXPECT_FALSE(upstream.Start("a", "not-an-address"));
  EXPECT_NE(upstream.error().find("stdout closed"), std::string::npos) << upstream.error();
  ASSERT_TRUE(upstream.early_exit().has_value());
  EXPECT_TRUE(WIFEXITED(*upstream.early_exit()));
  EXPECT_EQ(WEXITSTATUS(*upstream.early_exit()), 2);
}

}  // namespace
}  // namespace sluice::test_upstream
