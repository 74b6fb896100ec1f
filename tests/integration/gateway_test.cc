// Gateway mode end to end (issue 5): the real sluice binary in front of real
// sluice_test_upstream processes (tests/upstream/test_upstream.cc), all on loopback.
//
// Each test starts its own upstreams and its own sluice on ports the kernel picks, and
// checks what a client and the upstreams see against ../shared/design.md and the
// gateway's definitions (src/proxy/gateway.h, src/http/balancer.h,
// src/http/upstream_health.h, src/http/proxy_headers.h): proxying and its headers,
// routing, rate limiting in front, streaming without buffering, re-framing, each
// balancing policy, retries, the circuit breaker, active health checks, 502/503/504,
// fallback, smuggling refusals, the upstream metrics, and clients that go away.
//
// Which server answered is read from the X-Upstream field the test upstream puts on
// every response; what an upstream received is read from its /headers echo and its
// /admin/count of responses. Nothing sleeps to synchronise: waits are bounded polls.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "integration/harness.h"
#include "upstream/upstream_process.h"

namespace sluice::integration {
namespace {

using sluice::testing::UpstreamProcess;

// The test upstream's body pattern: byte i of /bytes and /chunked bodies is i % 251.
constexpr uint64_t kPatternPeriod = 251;
constexpr uint64_t kHundredMiB = uint64_t{100} << 20;  // 104857600
// How much sluice's resident memory may grow while 100 MB stream through it.
constexpr int64_t kRssGrowthLimitKb = 64 * 1024;
constexpr size_t kPiece = 64 * 1024;

// Listeners on port 0, one worker (so one balancer, one breaker and one pool see all
// the traffic), no access log; then the test's own sections.
std::string Config(std::string_view rest) {
  return std::string(
             "listen: \"127.0.0.1:0\"\n"
             "admin_listen: \"127.0.0.1:0\"\n"
             "workers: 1\n"
             "access_log: {enabled: false}\n") +
         std::string(rest);
}

// One shared counter over every path, far above what any test sends.
constexpr std::string_view kOpenRule = R"(
rules:
  - name: all
    match: {path_prefix: "/"}
    algorithm: token_bucket
    limit: 1000000
    period: 1s
)";

// When a test has failed, shows what sluice wrote to stderr (a failed CHECK, the
// breaker and health-check lines) and whether it is still running.
class StderrOnFailure {
 public:
  explicit StderrOnFailure(SluiceProcess& p) : p_(p) {}
  ~StderrOnFailure() {
    if (!::testing::Test::HasFailure()) return;
    const bool running = p_.running();
    std::fprintf(stderr, "sluice %s; its stderr:\n%s\n", running ? "still running" : "HAS EXITED",
                 p_.Stderr().c_str());
  }
  StderrOnFailure(const StderrOnFailure&) = delete;
  StderrOnFailure& operator=(const StderrOnFailure&) = delete;

 private:
  SluiceProcess& p_;
};

// A group's `servers:` line, from Server() items.
std::string ServersLine(const std::vector<std::string>& servers) {
  std::string out = "    servers: [";
  for (size_t i = 0; i < servers.size(); ++i) out += (i > 0 ? ", " : "") + servers[i];
  return out + "]\n";
}

// sluice in front of one upstream group, `app`, that takes every path. `group` is the
// group's settings, its `servers` list included, as YAML lines indented four spaces;
// `top` adds top-level sections.
std::string AppConfig(std::string_view group, std::string_view top = {}) {
  return Config(std::string(top) + std::string(kOpenRule) +
                "routes:\n  - {path_prefix: \"/\", upstream: app}\nupstreams:\n  app:\n" +
                std::string(group));
}

#define START_SLUICE(name, yaml)                                                 \
  SluiceProcess name(yaml);                                                      \
  ASSERT_TRUE(name.started()) << name.error() << "\nstderr:\n" << name.Stderr(); \
  StderrOnFailure name##_stderr_on_failure(name)

#define START_UPSTREAM(var, label) \
  UpstreamProcess var;             \
  ASSERT_TRUE(var.Start(label)) << var.error()

std::string Address(const UpstreamProcess& u) { return fmt::format("127.0.0.1:{}", u.port()); }

// `{address: "127.0.0.1:<port>"}` for a server list.
std::string Server(const UpstreamProcess& u, int weight = 1) {
  return fmt::format("{{address: \"{}\", weight: {}}}", Address(u), weight);
}

// Which upstream answered: its X-Upstream, or a description of what came instead.
std::string Who(const HttpResponse& r) {
  if (const auto name = r.Header("X-Upstream")) return *name;
  return fmt::format("<no upstream: status {} {}>", r.status, r.error);
}

// How many responses the upstream has begun (its /admin/count, asked directly).
int64_t AnsweredBy(const UpstreamProcess& u) {
  const HttpResponse r = FetchGet(u.port(), "/admin/count");
  if (r.status != 200) {
    ADD_FAILURE() << "/admin/count of port " << u.port() << ": " << r.Describe();
    return -1;
  }
  return std::stoll(r.body);
}

// Makes the upstream's /healthz answer 200 (healthy) or 503.
void SetHealthy(const UpstreamProcess& u, bool healthy) {
  const HttpResponse r = Fetch(u.port(), "POST", healthy ? "/admin/healthy" : "/admin/unhealthy");
  ASSERT_EQ(r.status, 200) << r.Describe();
}

std::string MetricsText(const SluiceProcess& p) {
  const HttpResponse r = FetchGet(p.admin_port(), "/metrics");
  EXPECT_EQ(r.status, 200) << r.Describe();
  return r.body;
}

std::optional<double> Metric(const SluiceProcess& p, std::string_view name,
                             std::string_view labels) {
  return MetricValue(MetricsText(p), name, labels);
}

std::string CircuitLabels(std::string_view upstream, const UpstreamProcess& server) {
  return fmt::format("upstream=\"{}\",server=\"{}\"", upstream, Address(server));
}

// The process's resident set (VmRSS) in KiB, or -1.
int64_t RssKb(pid_t pid) {
  const std::string status = ReadFileText(fmt::format("/proc/{}/status", pid));
  const size_t at = status.find("VmRSS:");
  if (at == std::string::npos) return -1;
  return std::strtoll(status.c_str() + at + 6, nullptr, 10);
}

int64_t MillisSince(Clock::time_point since) {
  return std::chrono::duration_cast<Millis>(Clock::now() - since).count();
}

// `length` bytes of the test upstream's pattern starting at body offset `offset`.
std::string Pattern(uint64_t offset, size_t length) {
  std::string out(length, '\0');
  for (size_t i = 0; i < length; ++i) out[i] = static_cast<char>((offset + i) % kPatternPeriod);
  return out;
}

// Checks a body against the pattern as it arrives, without keeping it.
class PatternCheck {
 public:
  PatternCheck() : pattern_(Pattern(0, kPiece + kPatternPeriod)) {}

  void Feed(std::string_view bytes) {
    while (!bytes.empty()) {
      const size_t n = std::min(bytes.size(), kPiece);
      if (!mismatch_ && std::memcmp(bytes.data(), pattern_.data() + phase_, n) != 0) {
        for (size_t i = 0; i < n; ++i) {
          if (bytes[i] != pattern_[phase_ + i]) {
            mismatch_ = size_ + i;
            break;
          }
        }
      }
      size_ += n;
      phase_ = (phase_ + n) % kPatternPeriod;
      bytes.remove_prefix(n);
    }
  }
  uint64_t size() const { return size_; }
  // The offset of the first wrong byte, if any.
  std::optional<uint64_t> mismatch() const { return mismatch_; }

 private:
  std::string pattern_;
  uint64_t size_ = 0;
  size_t phase_ = 0;
  std::optional<uint64_t> mismatch_;
};

constexpr uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ULL;
uint64_t Fnv1a(uint64_t hash, std::string_view bytes) {
  for (const char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

// Parses "HTTP/1.x NNN reason\r\nName: value\r\n..." (without the blank line).
bool ParseHead(std::string_view text, HttpResponse* out) {
  const size_t line_end = text.find("\r\n");
  const std::string_view status_line = text.substr(0, line_end);
  if (status_line.size() < 12 || !status_line.starts_with("HTTP/1.") || status_line[8] != ' ') {
    return false;
  }
  out->version = std::string(status_line.substr(0, 8));
  out->status = std::atoi(std::string(status_line.substr(9, 3)).c_str());
  out->reason = status_line.size() > 13 ? std::string(status_line.substr(13)) : "";
  out->headers.clear();
  size_t at = line_end == std::string_view::npos ? text.size() : line_end + 2;
  while (at < text.size()) {
    size_t end = text.find("\r\n", at);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(at, end - at);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    out->headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
    at = end + 2;
  }
  return out->status >= 100;
}

// Reads a response from a connected socket piece by piece (the harness's HttpClient
// reads whole Content-Length bodies only): the head, then body bytes as they come, so a
// chunked or close-delimited body can be decoded and a 100 MB one checked on the fly.
class StreamReader {
 public:
  explicit StreamReader(int fd) : fd_(fd) {}
  const std::string& error() const { return error_; }

  bool ReadHead(HttpResponse* head, Clock::time_point deadline) {
    size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (buffer_.size() > (1u << 20)) return Fail("response head over 1 MiB");
      if (!Fill(deadline)) return false;
    }
    const std::string text = buffer_.substr(0, end);
    buffer_.erase(0, end + 4);
    if (!ParseHead(text, head)) return Fail("malformed response head: " + text);
    return true;
  }

  // Up to `max` body bytes: how many, 0 at the end of the stream, -1 on error.
  ssize_t Read(char* out, size_t max, Clock::time_point deadline) {
    if (!buffer_.empty()) {
      const size_t n = std::min(max, buffer_.size());
      std::memcpy(out, buffer_.data(), n);
      buffer_.erase(0, n);
      return static_cast<ssize_t>(n);
    }
    if (eof_) return 0;
    while (true) {
      const ssize_t n = recv(fd_, out, max, 0);
      if (n > 0) return n;
      if (n == 0) {
        eof_ = true;
        return 0;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        Fail(fmt::format("recv: {}", std::strerror(errno)));
        return -1;
      }
      if (!WaitReadable(deadline)) return -1;
    }
  }

  // A line through CRLF, without it.
  bool ReadLine(std::string* line, Clock::time_point deadline) {
    size_t end;
    while ((end = buffer_.find("\r\n")) == std::string::npos) {
      if (buffer_.size() > 8192) return Fail("line over 8 KiB");
      if (!Fill(deadline)) return false;
    }
    *line = buffer_.substr(0, end);
    buffer_.erase(0, end + 2);
    return true;
  }

  bool ReadExact(size_t n, std::string* out, Clock::time_point deadline) {
    while (buffer_.size() < n) {
      if (!Fill(deadline)) return false;
    }
    out->append(buffer_, 0, n);
    buffer_.erase(0, n);
    return true;
  }

  // Everything until the server closes.
  bool ReadToEof(std::string* out, Clock::time_point deadline) {
    char chunk[65536];
    while (true) {
      const ssize_t n = Read(chunk, sizeof(chunk), deadline);
      if (n == 0) return true;
      if (n < 0) return false;
      out->append(chunk, static_cast<size_t>(n));
    }
  }

  // A chunked body to its end (last chunk and trailer section): the data appended to
  // `*body`, the number of data chunks in `*chunks`.
  bool ReadChunked(std::string* body, size_t* chunks, Clock::time_point deadline) {
    std::string line;
    while (true) {
      if (!ReadLine(&line, deadline)) return false;
      const std::string size_text = line.substr(0, line.find(';'));
      if (size_text.empty() || size_text.size() > 15 ||
          size_text.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
        return Fail("bad chunk-size line \"" + line + "\"");
      }
      const size_t size = std::stoull(size_text, nullptr, 16);
      if (size == 0) break;
      ++*chunks;
      if (!ReadExact(size, body, deadline)) return false;
      if (!ReadLine(&line, deadline)) return false;
      if (!line.empty()) return Fail("chunk data not followed by CRLF");
    }
    while (true) {  // trailer section
      if (!ReadLine(&line, deadline)) return false;
      if (line.empty()) return true;
    }
  }

 private:
  bool Fail(std::string why) {
    error_ = std::move(why);
    return false;
  }

  bool WaitReadable(Clock::time_point deadline) {
    const int64_t left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
    if (left <= 0) return Fail("timed out waiting for the server");
    pollfd p{fd_, POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(left));
    if (ready == 0) return Fail("timed out waiting for the server");
    if (ready < 0 && errno != EINTR) return Fail(fmt::format("poll: {}", std::strerror(errno)));
    return true;
  }

  bool Fill(Clock::time_point deadline) {
    if (eof_) return Fail("connection closed by the server");
    char chunk[65536];
    while (true) {
      const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n > 0) {
        buffer_.append(chunk, static_cast<size_t>(n));
        return true;
      }
      if (n == 0) {
        eof_ = true;
        return Fail("connection closed by the server");
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        return Fail(fmt::format("recv: {}", std::strerror(errno)));
      }
      if (!WaitReadable(deadline)) return false;
    }
  }

  const int fd_;
  std::string buffer_;
  bool eof_ = false;
  std::string error_;
};

// A TCP port on 127.0.0.1 with nothing listening: bound (so nobody else gets it) but
// never listen()ed, so a connect to it is refused. Released when destroyed.
class DeadPort {
 public:
  DeadPort() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(a);
    if (fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
        getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &length) == 0) {
      port_ = ntohs(a.sin_port);
    }
  }
  ~DeadPort() {
    if (fd_ >= 0) close(fd_);
  }
  DeadPort(const DeadPort&) = delete;
  DeadPort& operator=(const DeadPort&) = delete;
  uint16_t port() const { return port_; }
  std::string address() const { return fmt::format("127.0.0.1:{}", port_); }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// The lines of a /headers echo whose field name is `name` (ASCII case-insensitive).
std::vector<std::string> EchoedFields(std::string_view echo, std::string_view name) {
  std::vector<std::string> out;
  size_t at = echo.find('\n');  // after the request line
  while (at != std::string_view::npos && at + 1 < echo.size()) {
    const size_t end = echo.find('\n', at + 1);
    const std::string_view line = echo.substr(at + 1, end - at - 1);
    const size_t colon = line.find(':');
    if (colon == name.size()) {
      bool same = true;
      for (size_t i = 0; i < colon; ++i) {
        same = same && std::tolower(static_cast<unsigned char>(line[i])) ==
                           std::tolower(static_cast<unsigned char>(name[i]));
      }
      if (same) out.emplace_back(line);
    }
    at = end;
  }
  return out;
}

bool IsHex32(std::string_view s) {
  return s.size() == 32 && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

void ExpectClosed(HttpClient& c, Millis timeout = Millis(3000)) {
  std::string data;
  const HttpClient::CloseState state = c.WaitClosed(timeout, &data);
  EXPECT_TRUE(state == HttpClient::CloseState::kClosed || state == HttpClient::CloseState::kReset)
      << "connection still open (state " << static_cast<int>(state) << "), data: " << data;
}

// --- 1. Basic proxying ------------------------------------------------------------------

TEST(GatewayTest, ProxiesStatusBodyAndHeadersBothWays) {
  START_UPSTREAM(a, "a");
  START_SLUICE(sluice, Config(fmt::format(R"(
rules:
  - name: all
    match: {{path_prefix: "/"}}
    algorithm: token_bucket
    limit: 1000
    period: 1d
routes:
  - {{path_prefix: "/", upstream: app}}
upstreams:
  app:
    servers: [{}]
)",
                                          Server(a))));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();

  // Status, body and the upstream's own fields come through; sluice adds the RateLimit
  // fields of the rule that let the request pass, counted from the first request.
  HttpResponse r = c.Get("/");
  ASSERT_EQ(r.status, 200) << r.Describe();
  EXPECT_EQ(r.body, "a\n");
  EXPECT_EQ(r.Header("X-Upstream"), "a");
  EXPECT_EQ(r.Header("Content-Type"), "text/plain");
  EXPECT_EQ(r.Header("RateLimit-Policy"), "\"all\";q=1000;w=86400") << r.Describe();
  ASSERT_TRUE(r.Header("RateLimit")) << r.Describe();
  EXPECT_TRUE(r.Header("RateLimit")->starts_with("\"all\";r=999;t=")) << r.Describe();
  EXPECT_EQ(r.HeaderCount("Date"), 1u) << r.Describe();

  r = c.Get("/status/418");
  EXPECT_EQ(r.status, 418) << r.Describe();
  EXPECT_EQ(r.body, "418\n");
  ASSERT_TRUE(r.Header("RateLimit")) << r.Describe();
  EXPECT_TRUE(r.Header("RateLimit")->starts_with("\"all\";r=998;t=")) << r.Describe();

  // The client's request id goes to the upstream and comes back, once each way.
  r = c.Get("/headers", {{"X-Request-Id", "req-abc-123"}});
  ASSERT_EQ(r.status, 200) << r.Describe();
  EXPECT_EQ(r.Header("X-Request-Id"), "req-abc-123");
  EXPECT_EQ(r.HeaderCount("X-Request-Id"), 1u);
  EXPECT_EQ(EchoedFields(r.body, "X-Request-Id"),
            std::vector<std::string>{"X-Request-Id: req-abc-123"})
      << r.body;

  // Without one, sluice makes one up, and the upstream sees the same.
  r = c.Get("/headers");
  ASSERT_EQ(r.status, 200) << r.Describe();
  const std::string id = r.Header("X-Request-Id").value_or("");
  EXPECT_TRUE(IsHex32(id)) << r.Describe();
  EXPECT_EQ(EchoedFields(r.body, "X-Request-Id"), std::vector<std::string>{"X-Request-Id: " + id})
      << r.body;

  // X-Forwarded-*: sluice's own, whatever an untrusted client claims.
  r = c.Get("/headers", {{"Host", "shop.example:8080"},
                         {"X-Forwarded-For", "203.0.113.9"},
                         {"X-Forwarded-Proto", "https"},
                         {"X-Forwarded-Host", "evil.example"}});
  ASSERT_EQ(r.status, 200) << r.Describe();
  EXPECT_TRUE(r.body.starts_with("GET /headers HTTP/1.1\n")) << r.body;
  EXPECT_EQ(EchoedFields(r.body, "Host"), std::vector<std::string>{"Host: shop.example:8080"})
      << r.body;
  EXPECT_EQ(EchoedFields(r.body, "X-Forwarded-For"),
            std::vector<std::string>{"X-Forwarded-For: 127.0.0.1"})
      << r.body;
  EXPECT_EQ(EchoedFields(r.body, "X-Forwarded-Proto"),
            std::vector<std::string>{"X-Forwarded-Proto: http"})
      << r.body;
  EXPECT_EQ(EchoedFields(r.body, "X-Forwarded-Host"),
            std::vector<std::string>{"X-Forwarded-Host: shop.example:8080"})
      << r.body;
  EXPECT_EQ(r.body.find("203.0.113.9"), std::string::npos) << r.body;
  EXPECT_EQ(r.body.find("evil.example"), std::string::npos) << r.body;

  // Hop-by-hop fields stay on the client's hop; end-to-end ones go on.
  r = c.Get("/headers", {{"Connection", "keep-alive, X-Hop-Secret"},
                         {"X-Hop-Secret", "s3cret"},
                         {"Keep-Alive", "timeout=5, max=100"},
                         {"TE", "trailers"},
                         {"Proxy-Authorization", "Basic Zm9vOmJhcg=="},
                         {"Proxy-Connection", "keep-alive"},
                         {"X-Kept", "yes"}});
  ASSERT_EQ(r.status, 200) << r.Describe();
  for (const std::string_view name :
       {"X-Hop-Secret", "Keep-Alive", "TE", "Proxy-Authorization", "Proxy-Connection"}) {
    EXPECT_EQ(EchoedFields(r.body, name), std::vector<std::string>{}) << name << " was forwarded:\n"
                                                                      << r.body;
  }
  for (const std::string& line : EchoedFields(r.body, "Connection")) {
    EXPECT_EQ(line.find("Hop"), std::string::npos) << line;
    EXPECT_EQ(line.find("hop"), std::string::npos) << line;
  }
  EXPECT_EQ(r.body.find("s3cret"), std::string::npos) << r.body;
  EXPECT_EQ(r.body.find("Zm9vOmJhcg"), std::string::npos) << r.body;
  EXPECT_EQ(EchoedFields(r.body, "X-Kept"), std::vector<std::string>{"X-Kept: yes"}) << r.body;

  // The client's connection stays open over many proxied requests.
  for (int i = 0; i < 100; ++i) {
    r = c.Get(i % 2 == 0 ? "/" : "/status/201");
    ASSERT_EQ(r.status, i % 2 == 0 ? 200 : 201) << "request " << i << ": " << r.Describe();
    ASSERT_EQ(r.Header("X-Upstream"), "a");
    ASSERT_FALSE(r.Header("Connection") == "close") << r.Describe();
  }
}

// --- 2. Routing -------------------------------------------------------------------------

TEST(GatewayTest, RoutesByHostAndLongestPathPrefix) {
  START_UPSTREAM(api, "api-1");
  START_UPSTREAM(web, "web-1");
  START_SLUICE(sluice, Config(std::string(kOpenRule) + fmt::format(R"(
routes:
  - {{path_prefix: "/v1/", upstream: api}}
  - {{path_prefix: "/v1/static/", upstream: web}}
  - {{path_prefix: "/web/", upstream: web}}
  - {{host: "api.example", path_prefix: "/", upstream: api}}
upstreams:
  api:
    servers: [{}]
  web:
    servers: [{}]
)",
                                                                   Server(api), Server(web))));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  const struct {
    std::string host;
    std::string target;
    std::string expected;  // X-Upstream, or "404"
  } cases[] = {
      {"127.0.0.1", "/v1/users", "api-1"},
      {"127.0.0.1", "/v1/static/logo.png", "web-1"},  // the longer prefix wins
      {"127.0.0.1", "/v1/staticfile", "api-1"},
      {"127.0.0.1", "/web/index.html", "web-1"},
      {"api.example", "/anything", "api-1"},
      // A route for the host wins over any-host routes, even with a longer prefix.
      {"api.example", "/web/index.html", "api-1"},
      {"API.Example:8080", "/web/x", "api-1"},  // host without case or port
      {"www.example", "/web/x", "web-1"},
      {"127.0.0.1", "/v1", "404"},  // "/v1/" does not cover "/v1"
      {"127.0.0.1", "/", "404"},
      {"www.example", "/other", "404"},
  };
  for (const auto& t : cases) {
    const HttpResponse r = c.Get(t.target, {{"Host", t.host}});
    if (t.expected == "404") {
      EXPECT_EQ(r.status, 404) << t.host << t.target << ": " << r.Describe();
      EXPECT_EQ(r.body, "{\"error\":\"no_route\"}\n") << t.host << t.target;
      EXPECT_FALSE(r.Header("X-Upstream")) << t.host << t.target << ": " << r.Describe();
    } else {
      EXPECT_EQ(r.status, 200) << t.host << t.target << ": " << r.Describe();
      EXPECT_EQ(Who(r), t.expected) << t.host << t.target;
    }
  }
}

// --- 3. Rate limiting in front ------------------------------------------------------------

TEST(GatewayTest, LimitedRequestsNeverReachTheUpstream) {
  START_UPSTREAM(a, "a");
  // A token bucket of 3 that refills one token in 20 minutes: exactly 3 pass.
  START_SLUICE(sluice, Config(fmt::format(R"(
rules:
  - name: tight
    match: {{path_prefix: "/limited"}}
    algorithm: token_bucket
    limit: 3
    period: 1h
routes:
  - {{path_prefix: "/", upstream: app}}
upstreams:
  app:
    servers: [{}]
)",
                                          Server(a))));
  const int64_t before = AnsweredBy(a);
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  std::vector<int> statuses;
  for (int i = 0; i < 6; ++i) {
    const HttpResponse r = c.Get("/limited/x");
    statuses.push_back(r.status);
    if (r.status == 429) {
      EXPECT_FALSE(r.Header("X-Upstream")) << r.Describe();
      EXPECT_TRUE(r.Header("Retry-After")) << r.Describe();
      EXPECT_NE(r.body.find("\"rule\":\"tight\""), std::string::npos) << r.body;
      ASSERT_TRUE(r.Header("RateLimit")) << r.Describe();
      EXPECT_TRUE(r.Header("RateLimit")->starts_with("\"tight\";r=0;")) << r.Describe();
    } else {
      EXPECT_EQ(Who(r), "a");
    }
  }
  EXPECT_EQ(statuses, (std::vector<int>{200, 200, 200, 429, 429, 429}));
  EXPECT_EQ(AnsweredBy(a) - before, 3);
  // A path no rule limits still goes through.
  const HttpResponse free = c.Get("/free");
  EXPECT_EQ(free.status, 200) << free.Describe();
  EXPECT_EQ(AnsweredBy(a) - before, 4);
}

// Pipelined behind a proxied request, two requests the rules refuse and two more
// proxied ones: five answers in order, nothing more (a refusal made while the connection was
// held for the gateway once parsed the next request from inside the dispatch, queued a
// stray 500 and lost the third).
TEST(GatewayTest, PipelinedRefusalBetweenProxiedRequestsKeepsTheOrder) {
  START_UPSTREAM(a, "a");
  START_SLUICE(sluice, Config(fmt::format(R"(
rules:
  - name: none
    match: {{path_prefix: "/limited"}}
    algorithm: fixed_window
    limit: 0
    period: 1h
routes:
  - {{path_prefix: "/", upstream: app}}
upstreams:
  app:
    servers: [{}]
)",
                                          Server(a))));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  for (int round = 0; round < 3; ++round) {
    // The refusals last in the pipeline, then (after their answers) two more.
    ASSERT_TRUE(c.Send(BuildRequest("GET", "/delay/50") + BuildRequest("GET", "/limited/x") +
                       BuildRequest("GET", "/limited/y")));
    std::vector<HttpResponse> responses = c.ReadResponses(3);
    ASSERT_EQ(responses.size(), 3u);
    std::string extra;
    EXPECT_EQ(c.WaitClosed(Millis(200), &extra), HttpClient::CloseState::kOpen) << extra;
    ASSERT_TRUE(c.Send(BuildRequest("GET", "/third") + BuildRequest("POST", "/upload", {}, "abc")));
    for (HttpResponse& r : c.ReadResponses(2)) responses.push_back(std::move(r));
    ASSERT_EQ(responses.size(), 5u);
    EXPECT_EQ(responses[0].status, 200) << responses[0].Describe();
    EXPECT_EQ(Who(responses[0]), "a");
    EXPECT_EQ(responses[1].status, 429) << responses[1].Describe();
    EXPECT_EQ(responses[2].status, 429) << responses[2].Describe();
    EXPECT_EQ(responses[3].status, 200) << responses[3].Describe();
    EXPECT_EQ(responses[3].body, "a\n");
    EXPECT_EQ(responses[4].status, 200) << responses[4].Describe();
    EXPECT_EQ(responses[4].body.substr(0, 2), "3 ") << responses[4].Describe();
  }
  // Nothing more came.
  std::string extra;
  EXPECT_EQ(c.WaitClosed(Millis(300), &extra), HttpClient::CloseState::kOpen) << extra;
}

// --- 4. Streaming large bodies ------------------------------------------------------------

// 100 MB from the upstream to a client that at first does not read: sluice must stop
// reading the upstream (back-pressure) instead of buffering, and every byte arrives.
TEST(GatewayTest, Streams100MBResponseWithBoundedMemory) {
  START_UPSTREAM(a, "a");
  START_SLUICE(sluice, AppConfig(ServersLine({Server(a)})));
  ASSERT_EQ(FetchGet(sluice.port(), "/bytes/65536").status, 200);  // warm up
  const int64_t baseline = RssKb(sluice.pid());
  ASSERT_GT(baseline, 0);
  int64_t peak = baseline;
  auto sample = [&] { peak = std::max(peak, RssKb(sluice.pid())); };

  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  ASSERT_TRUE(c.Send(BuildRequest("GET", fmt::format("/bytes/{}", kHundredMiB)))) << c.error();
  const auto deadline = Clock::now() + std::chrono::seconds(40);
  StreamReader reader(c.fd());
  HttpResponse head;
  ASSERT_TRUE(reader.ReadHead(&head, deadline)) << reader.error();
  ASSERT_EQ(head.status, 200) << head.Describe();
  EXPECT_EQ(head.Header("Content-Length"), std::to_string(kHundredMiB)) << head.Describe();
  EXPECT_EQ(head.Header("X-Upstream"), "a");

  // The slow client: once data flows, read nothing for a while and watch sluice. (What
  // can queue up unread is bounded by the receive window, 64 KiB before any read.)
  int queued = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        ioctl(c.fd(), FIONREAD, &queued);
        return queued >= 32 * 1024;
      },
      Millis(10000)))
      << "only " << queued << " bytes arrived";
  const auto pause_end = Clock::now() + Millis(700);
  while (Clock::now() < pause_end) {
    sample();
    std::this_thread::sleep_for(Millis(20));  // the client's pause, not a synchronisation
  }

  PatternCheck check;
  std::vector<char> buffer(kPiece);
  uint64_t next_sample = 0;
  while (check.size() < kHundredMiB) {
    const ssize_t n = reader.Read(buffer.data(), buffer.size(), deadline);
    ASSERT_GT(n, 0) << "after " << check.size()
                    << " bytes: " << (n == 0 ? "connection closed" : reader.error());
    check.Feed(std::string_view(buffer.data(), static_cast<size_t>(n)));
    if (check.size() >= next_sample) {
      sample();
      next_sample += 4 << 20;
    }
  }
  EXPECT_EQ(check.size(), kHundredMiB);
  EXPECT_FALSE(check.mismatch()) << "first wrong byte at offset " << *check.mismatch();
  sample();
  EXPECT_LT(peak - baseline, kRssGrowthLimitKb)
      << "sluice grew from " << baseline << " KiB to " << peak << " KiB";
  // The connection is still usable after the whole body.
  const HttpResponse after = c.Get("/");
  EXPECT_EQ(after.status, 200) << after.Describe();
}

// Sends a 100 MB upload of the pattern to /upload, Content-Length or chunked, sampling
// sluice's RSS on the way; checks the upstream's byte count and FNV-1a hash.
void Upload100MB(const SluiceProcess& sluice, bool chunked) {
  ASSERT_EQ(Fetch(sluice.port(), "POST", "/upload", {}, "warm").status, 200);
  const int64_t baseline = RssKb(sluice.pid());
  ASSERT_GT(baseline, 0);
  int64_t peak = baseline;

  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  std::string head = "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  head += chunked ? std::string("Transfer-Encoding: chunked\r\n")
                  : fmt::format("Content-Length: {}\r\n", kHundredMiB);
  head += "\r\n";
  ASSERT_TRUE(c.Send(head)) << c.error();
  const std::string pattern = Pattern(0, kPiece + kPatternPeriod);
  const std::string chunk_line = fmt::format("{:x}\r\n", kPiece);
  uint64_t hash = kFnvOffsetBasis;
  for (uint64_t offset = 0; offset < kHundredMiB; offset += kPiece) {
    const std::string_view piece(pattern.data() + offset % kPatternPeriod, kPiece);
    hash = Fnv1a(hash, piece);
    if (chunked) {
      ASSERT_TRUE(c.Send(chunk_line)) << c.error();
    }
    ASSERT_TRUE(c.Send(piece, Millis(10000))) << "at offset " << offset << ": " << c.error();
    if (chunked) {
      ASSERT_TRUE(c.Send("\r\n")) << c.error();
    }
    if (offset % (4 << 20) == 0) peak = std::max(peak, RssKb(sluice.pid()));
  }
  if (chunked) {
    ASSERT_TRUE(c.Send("0\r\n\r\n")) << c.error();
  }
  const HttpResponse r = c.ReadResponse(Millis(20000));
  peak = std::max(peak, RssKb(sluice.pid()));
  ASSERT_EQ(r.status, 200) << r.Describe();
  EXPECT_EQ(r.body, fmt::format("{} {:016x}\n", kHundredMiB, hash));
  EXPECT_LT(peak - baseline, kRssGrowthLimitKb)
      << "sluice grew from " << baseline << " KiB to " << peak << " KiB";
}

constexpr std::string_view kUploadHttp = R"(
http:
  max_body_bytes: 209715200
)";

TEST(GatewayTest, Streams100MBContentLengthUploadWithBoundedMemory) {
  START_UPSTREAM(a, "a");
  START_SLUICE(sluice, AppConfig(ServersLine({Server(a)}), kUploadHttp));
  Upload100MB(sluice, /*chunked=*/false);
}

TEST(GatewayTest, Streams100MBChunkedUploadWithBoundedMemory) {
  START_UPSTREAM(a, "a");
  START_SLUICE(sluice, AppConfig(ServersLine({Server(a)}), kUploadHttp));
  Upload100MB(sluice, /*chunked=*/true);
}

// --- 5. Re-framing a chunked response ---------------------------------------------------------

TEST(GatewayTest, ChunkedResponseIsRechunkedForHttp11AndCloseDelimitedForHttp10) {
  START_UPSTREAM(a, "a");
  START_SLUICE(sluice, AppConfig(ServersLine({Server(a)})));
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  {
    // HTTP/1.1: chunked, the same bytes, and the connection stays open.
    HttpClient c(sluice.port());
    ASSERT_TRUE(c.connected()) << c.error();
    for (const auto& [target, size] :
         std::vector<std::pair<std::string, size_t>>{{"/chunked/5/1000?gap_ms=20", 5000},
                                                     {"/chunked/64/65536", 64 * 65536},
                                                     {"/chunked/0/0", 0}}) {
      ASSERT_TRUE(c.Send(BuildRequest("GET", target))) << c.error();
      StreamReader reader(c.fd());
      HttpResponse head;
      ASSERT_TRUE(reader.ReadHead(&head, deadline)) << target << ": " << reader.error();
      EXPECT_EQ(head.status, 200) << head.Describe();
      EXPECT_EQ(head.version, "HTTP/1.1");
      EXPECT_EQ(head.Header("Transfer-Encoding"), "chunked") << target << ": " << head.Describe();
      EXPECT_EQ(head.HeaderCount("Transfer-Encoding"), 1u) << head.Describe();
      EXPECT_FALSE(head.Header("Content-Length")) << head.Describe();
      EXPECT_FALSE(head.Header("Connection") == "close") << head.Describe();
      std::string body;
      size_t chunks = 0;
      ASSERT_TRUE(reader.ReadChunked(&body, &chunks, deadline)) << target << ": " << reader.error();
      EXPECT_EQ(body.size(), size) << target;
      EXPECT_TRUE(body == Pattern(0, size)) << target << ": the body differs from the pattern";
      if (size > 0) {
        EXPECT_GE(chunks, 1u);
      }
      // Nothing beyond the message: the next response starts clean.
      const HttpResponse next = c.Get("/status/202");
      ASSERT_EQ(next.status, 202) << target << ": " << next.Describe();
    }
  }
  for (const std::string_view connection : {"", "keep-alive"}) {
    // HTTP/1.0 knows no chunks: the body ends with the connection.
    HttpClient c(sluice.port());
    ASSERT_TRUE(c.connected()) << c.error();
    Headers headers;
    if (!connection.empty()) headers.emplace_back("Connection", std::string(connection));
    ASSERT_TRUE(c.Send(BuildRequest("GET", "/chunked/5/1000?gap_ms=20", headers, {}, "HTTP/1.0")))
        << c.error();
    StreamReader reader(c.fd());
    HttpResponse head;
    ASSERT_TRUE(reader.ReadHead(&head, deadline)) << reader.error();
    EXPECT_EQ(head.status, 200) << head.Describe();
    EXPECT_FALSE(head.Header("Transfer-Encoding")) << head.Describe();
    EXPECT_FALSE(head.Header("Content-Length")) << head.Describe();
    EXPECT_EQ(head.Header("Connection"), "close") << head.Describe();
    std::string body;
    ASSERT_TRUE(reader.ReadToEof(&body, deadline)) << reader.error();
    EXPECT_EQ(body.size(), 5000u);
    EXPECT_TRUE(body == Pattern(0, 5000)) << "the body differs from the pattern";
  }
}

// HEAD, 204 and 304 responses carry no body, whatever their fields say; the next
// response on the connection must start clean.
TEST(GatewayTest, HeadAnd204And304ResponsesHaveNoBody) {
  START_UPSTREAM(a, "a");
  START_SLUICE(sluice, AppConfig(ServersLine({Server(a)})));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  HttpResponse r = c.Request("HEAD", "/bytes/1000");
  EXPECT_EQ(r.status, 200) << r.Describe();
  EXPECT_EQ(r.Header("Content-Length"), "1000") << r.Describe();
  EXPECT_EQ(r.body, "");
  r = c.Get("/");
  EXPECT_EQ(r.status, 200) << r.Describe();
  EXPECT_EQ(r.body, "a\n");

  r = c.Request("HEAD", "/chunked/3/10");
  EXPECT_EQ(r.status, 200) << r.Describe();
  EXPECT_EQ(r.body, "");
  r = c.Get("/status/201");
  EXPECT_EQ(r.status, 201) << r.Describe();
  EXPECT_EQ(r.body, "201\n");

  for (const int status : {204, 304}) {
    r = c.Get(fmt::format("/status/{}", status));
    EXPECT_EQ(r.status, status) << r.Describe();
    EXPECT_FALSE(r.Header("Transfer-Encoding")) << r.Describe();
    EXPECT_EQ(r.body, "");
    r = c.Get("/status/202");
    EXPECT_EQ(r.status, 202) << "after " << status << ": " << r.Describe();
    EXPECT_EQ(r.body, "202\n");
  }
}

// --- 6. Balancing policies ------------------------------------------------------------------

// The X-Upstream of `n` GETs of `target` on one connection.
std::vector<std::string> Sequence(uint16_t port, int n, std::string_view target = "/") {
  std::vector<std::string> out;
  HttpClient c(port);
  EXPECT_TRUE(c.connected()) << c.error();
  for (int i = 0; i < n; ++i) {
    const HttpResponse r = c.Get(target);
    EXPECT_EQ(r.status, 200) << r.Describe();
    out.push_back(Who(r));
  }
  return out;
}

std::string Joined(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += n;
  return out;
}

TEST(GatewayTest, RoundRobinTakesServersInTurn) {
  START_UPSTREAM(a, "a");
  START_UPSTREAM(b, "b");
  START_UPSTREAM(c, "c");
  START_SLUICE(sluice, AppConfig(fmt::format(R"(
    balance: round_robin
    servers: [{}, {}, {}]
)",
                                             Server(a, 5), Server(b), Server(c))));
  // Weights are ignored: one each, in list order, from wherever the turn starts.
  const std::vector<std::string> seq = Sequence(sluice.port(), 30);
  const std::string order = "abc";
  ASSERT_EQ(seq.size(), 30u);
  const size_t start = order.find(seq[0]);
  ASSERT_NE(start, std::string::npos) << seq[0];
  std::string expected;
  for (size_t i = 0; i < 30; ++i) expected += order[(start + i) % 3];
  EXPECT_EQ(Joined(seq), expected);
}

TEST(GatewayTest, WeightedRoundRobinFollowsSmoothSequence) {
  START_UPSTREAM(a, "a");
  START_UPSTREAM(b, "b");
  START_UPSTREAM(c, "c");
  START_SLUICE(sluice, AppConfig(fmt::format(R"(
    balance: weighted_round_robin
    servers: [{}, {}, {}]
)",
                                             Server(a, 5), Server(b, 1), Server(c, 1))));
  // nginx's smooth weighted round robin from a fresh start: a a b a c a a, per cycle of
  // the total weight.
  EXPECT_EQ(Joined(Sequence(sluice.port(), 28)), "aabacaaaabacaaaabacaaaabacaa");
}

TEST(GatewayTest, LeastConnectionsPrefersTheIdleServer) {
  START_UPSTREAM(a, "a");
  START_UPSTREAM(b, "b");
  START_SLUICE(sluice, AppConfig(fmt::format(R"(
    balance: least_connections
    servers: [{}, {}]
)",
                                             Server(a), Server(b))));
  constexpr int kDelayMs = 1500;
  // Connections opened (and accepted) first, so the slow request is read before the
  // fast ones that follow it.
  HttpClient slow1(sluice.port()), slow2(sluice.port()), fast(sluice.port());
  for (HttpClient* c : {&slow1, &slow2, &fast}) {
    ASSERT_TRUE(c->connected()) << c->error();
    ASSERT_EQ(c->Get("/").status, 200);
  }
  const auto t0 = Clock::now();
  ASSERT_TRUE(slow1.Send(BuildRequest("GET", fmt::format("/delay/{}", kDelayMs))));
  // While it is in flight (it ends no sooner than t0 + kDelayMs), every request goes to
  // the other server.
  std::map<std::string, int> during;
  int counted = 0;
  for (int i = 0; i < 20; ++i) {
    const HttpResponse r = fast.Get("/");
    ASSERT_EQ(r.status, 200) << r.Describe();
    if (MillisSince(t0) < kDelayMs) {
      ++during[Who(r)];
      ++counted;
    }
  }
  ASSERT_GE(counted, 5) << "the machine is too slow for this test's timing";
  ASSERT_EQ(during.size(), 1u) << "both servers took requests while one was busy";
  const std::string idle = during.begin()->first;
  // A second slow request goes to the idle one as well: 0 in flight against 1.
  const auto sent2 = Clock::now();
  ASSERT_TRUE(slow2.Send(BuildRequest("GET", fmt::format("/delay/{}", kDelayMs))));
  ASSERT_LT(std::chrono::duration_cast<Millis>(sent2 - t0).count(), kDelayMs - 300);
  const HttpResponse r1 = slow1.ReadResponse(Millis(10000));
  const HttpResponse r2 = slow2.ReadResponse(Millis(10000));
  ASSERT_EQ(r1.status, 200) << r1.Describe();
  ASSERT_EQ(r2.status, 200) << r2.Describe();
  EXPECT_NE(Who(r1), idle);
  EXPECT_EQ(Who(r2), idle);
}

TEST(GatewayTest, HashKeepsEachClientAddressOnOneServerAndSpreadsClients) {
  START_UPSTREAM(a, "a");
  START_UPSTREAM(b, "b");
  START_SLUICE(sluice, AppConfig(fmt::format(R"(
    balance: hash
    servers: [{}, {}]
)",
                                             Server(a), Server(b))));
  // Distinct peers on loopback: 127.0.0.2 ... 127.0.0.41, each over several connections.
  std::map<std::string, int> clients_per_server;
  for (int i = 2; i < 42; ++i) {
    const std::string source = fmt::format("127.0.0.{}", i);
    std::set<std::string> servers;
    for (int k = 0; k < 3; ++k) {
      const HttpResponse r = FetchGet(sluice.port(), "/", {}, source);
      ASSERT_EQ(r.status, 200) << source << ": " << r.Describe();
      servers.insert(Who(r));
    }
    HttpClient c(sluice.port(), source);
    ASSERT_TRUE(c.connected()) << c.error();
    for (int k = 0; k < 3; ++k) servers.insert(Who(c.Get("/")));
    ASSERT_EQ(servers.size(), 1u) << source << " moved between servers";
    ++clients_per_server[*servers.begin()];
  }
  EXPECT_GE(clients_per_server["a"], 8) << "a: " << clients_per_server["a"];
  EXPECT_GE(clients_per_server["b"], 8) << "b: " << clients_per_server["b"];
}

TEST(GatewayTest, HashUsesTheForwardedClientBehindTrustedProxies) {
  START_UPSTREAM(a, "a");
  START_UPSTREAM(b, "b");
  START_SLUICE(sluice, Config(std::string(kOpenRule) + fmt::format(R"(
clients:
  trusted_proxies: ["127.0.0.0/8"]
routes:
  - {{path_prefix: "/", upstream: app}}
upstreams:
  app:
    balance: hash
    servers: [{}, {}]
)",
                                                                   Server(a), Server(b))));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  std::map<std::string, std::string> server_of;
  std::map<std::string, int> clients_per_server;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 60; ++i) {
      // Interleaved on one connection from one peer: only the forwarded address differs.
      const std::string client = fmt::format("10.1.{}.{}", i / 10, i % 10 + 1);
      const HttpResponse r = c.Get("/", {{"X-Forwarded-For", client}});
      ASSERT_EQ(r.status, 200) << r.Describe();
      if (round == 0) {
        server_of[client] = Who(r);
        ++clients_per_server[Who(r)];
      } else {
        ASSERT_EQ(Who(r), server_of[client]) << client << " moved in round " << round;
      }
    }
  }
  EXPECT_GE(clients_per_server["a"], 10) << "a: " << clients_per_server["a"];
  EXPECT_GE(clients_per_server["b"], 10) << "b: " << clients_per_server["b"];
}

TEST(GatewayTest, RandomGivesEachServerAShare) {
  START_UPSTREAM(a, "a");
  START_UPSTREAM(b, "b");
  START_SLUICE(sluice, AppConfig(fmt::format(R"(
    balance: random
    servers: [{}, {}]
)",
                                             Server(a), Server(b))));
  const std::vector<std::string> seq = Sequence(sluice.port(), 200);
  const auto to_a = std::count(seq.begin(), seq.end(), "a");
  const auto to_b = std::count(seq.begin(), seq.end(), "b");
  EXPECT_EQ(to_a + to_b, 200);
  // Binomial(200, 1/2): 50 is more than 7 standard deviations off.
  EXPECT_GE(to_a, 50);
  EXPECT_GE(to_b, 50);
  // Not a disguised round robin (strict alternation has probability 2^-199).
  bool alternates = true;
  for (size_t i = 1; i < seq.size(); ++i) alternates = alternates && seq[i] != seq[i - 1];
  EXPECT_FALSE(alternates) << Joined(seq);
}

// --- 7. A server dies under load ---------------------------------------------------------------

TEST(GatewayTest, KilledServerIsRetriedOnTheSurvivorWithoutClientErrors) {
  START_UPSTREAM(a, "a");
  START_UPSTREAM(b, "b");
  START_SLUICE(sluice, AppConfig(fmt::format(R"(
    balance: round_robin
    servers: [{}, {}]
)",
                                             Server(a), Server(b))));
  struct Outcome {
    bool after_kill;
    int status;
    std::string who;
    std::string error;
  };
  constexpr int kThreads = 3;
  std::atomic<bool> killed{false};
  std::atomic<bool> stop{false};
  std::atomic<int> done_before{0}, done_after{0};
  std::vector<std::vector<Outcome>> outcomes(kThreads);
  std::atomic<int> running{kThreads};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      struct Done {
        std::atomic<int>& running;
        ~Done() { running.fetch_sub(1); }
      } done{running};
      HttpClient c(sluice.port());
      for (int i = 0; i < 2000 && !stop.load(); ++i) {
        const bool after = killed.load();
        const HttpResponse r = c.Get(i % 2 == 0 ? "/" : "/headers");
        outcomes[t].push_back({after, r.status, Who(r), r.error});
        (after ? done_after : done_before).fetch_add(1);
        if (r.status == 0) break;  // the connection is gone
      }
    });
  }
  // (The waits end early when every client has stopped on a failure.)
  const bool ran =
      WaitFor([&] { return done_before.load() >= 60 || running.load() == 0; }, Millis(10000));
  a.Kill();
  killed.store(true);
  const bool ran_after =
      WaitFor([&] { return done_after.load() >= 150 || running.load() == 0; }, Millis(10000));
  stop.store(true);
  for (std::thread& t : threads) t.join();
  ASSERT_TRUE(ran) << "the clients did not get going";
  ASSERT_TRUE(ran_after) << "the clients stalled after the kill";
  EXPECT_TRUE(sluice.running());

  int to_a_before = 0, to_b_before = 0, after = 0;
  for (const auto& list : outcomes) {
    for (const Outcome& o : list) {
      EXPECT_EQ(o.status, 200) << (o.after_kill ? "after" : "before") << " the kill: " << o.who
                               << " " << o.error;
      if (o.after_kill) {
        ++after;
        EXPECT_EQ(o.who, "b") << "a request sent after the kill";
      } else {
        (o.who == "a" ? to_a_before : to_b_before)++;
      }
    }
  }
  EXPECT_GT(to_a_before, 0);
  EXPECT_GT(to_b_before, 0);
  EXPECT_GE(after, 150);
}

// The state letter of /proc/<pid>/stat ('R', 'S', 'T' for stopped...), or 0.
char ProcessState(pid_t pid) {
  const std::string stat = ReadFileText(fmt::format("/proc/{}/stat", pid));
  const size_t paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() ? 0 : stat[paren + 2];
}

// The race behind the kill tests above, made to happen every time: sluice holds an idle
// keep-alive connection to a; while sluice is stopped, a dies (its end of that connection
// closes) and a client request arrives, so sluice wakes to both at once: the closed idle
// connection and a request that wants a connection to a. The request must still be
// answered (here by the fallback, once a's breaker opens), and sluice must live on.
TEST(GatewayTest, IdleConnectionClosedByADeadServerIsNotReused) {
  START_UPSTREAM(a, "a");
  START_UPSTREAM(b, "b");
  START_SLUICE(sluice, Config(std::string(kOpenRule) + fmt::format(R"(
routes:
  - {{path_prefix: "/", upstream: app}}
upstreams:
  app:
    servers: [{}]
    circuit_breaker: {{consecutive_failures: 1, open_ms: 60000}}
    fallback: spare
  spare:
    servers: [{}]
)",
                                                                   Server(a), Server(b))));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  HttpResponse r = c.Get("/");  // leaves an idle connection to a in sluice's pool
  ASSERT_EQ(Who(r), "a") << r.Describe();

  ASSERT_TRUE(sluice.Signal(SIGSTOP));
  struct Resume {
    SluiceProcess& p;
    ~Resume() { p.Signal(SIGCONT); }
  } resume{sluice};
  ASSERT_TRUE(WaitFor([&] { return ProcessState(sluice.pid()) == 'T'; }, Millis(5000)));
  a.Kill();  // the kernel closes a's sockets: sluice's idle connection gets its FIN
  ASSERT_TRUE(c.Send(BuildRequest("GET", "/")));
  ASSERT_TRUE(sluice.Signal(SIGCONT));

  r = c.ReadResponse();
  EXPECT_EQ(r.status, 200) << r.Describe();
  EXPECT_EQ(Who(r), "b");
  EXPECT_TRUE(sluice.running());
  r = FetchGet(sluice.port(), "/");
  EXPECT_EQ(r.status, 200) << r.Describe();
}

// --- 8. Circuit breaker ---------------------------------------------------------------------

TEST(GatewayTest, CircuitBreakerOpensProbesAndCloses) {
  START_UPSTREAM(a, "a");
  START_UPSTREAM(b, "b");
  constexpr int kOpenMs = 500;
  START_SLUICE(sluice, AppConfig(fmt::format(R"(
    balance: round_robin
    servers: [{}, {}]
    circuit_breaker: {{consecutive_failures: 3, open_ms: {}}}
)",
                                             Server(a), Server(b), kOpenMs)));
  const std::string gauge_a = CircuitLabels("app", a);
  const std::string gauge_b = CircuitLabels("app", b);
  EXPECT_EQ(Metric(sluice, "sluice_circuit_open", gauge_a), 0);
  EXPECT_EQ(Metric(sluice, "sluice_circuit_open", gauge_b), 0);

  // Through sluice, /healthz of a answers 503 (a breaker failure), b's 200.
  SetHealthy(a, false);
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  int failures = 0;
  Clock::time_point third_failure_sent;
  std::string previous;
  for (int i = 0; i < 10 && failures < 3; ++i) {
    const auto sent = Clock::now();
    const HttpResponse r = c.Get("/healthz");
    const std::string who = Who(r);
    ASSERT_NE(who, previous) << "round robin did not alternate before the breaker opened";
    previous = who;
    if (who == "a") {
      ASSERT_EQ(r.status, 503) << r.Describe();
      if (++failures == 3) third_failure_sent = sent;
    } else {
      ASSERT_EQ(r.status, 200) << r.Describe();
    }
  }
  ASSERT_EQ(failures, 3);
  EXPECT_EQ(Metric(sluice, "sluice_circuit_open", gauge_a), 1);
  EXPECT_EQ(Metric(sluice, "sluice_circuit_open", gauge_b), 0);

  // Open: a gets nothing. (Only requests that ended before the third failure was sent
  // plus open_ms are sure to have been picked while it was open.)
  // Requests until `until`; each that ended before it must have gone to b.
  auto only_b_until = [&](Clock::time_point until, const char* when) {
    int count = 0;
    while (true) {
      const HttpResponse r = c.Get("/healthz");
      if (Clock::now() >= until) break;
      ++count;
      EXPECT_EQ(Who(r), "b") << "a took a request " << when;
      EXPECT_EQ(r.status, 200);
    }
    EXPECT_GE(count, 3) << "the machine is too slow for this test's timing";
  };
  only_b_until(third_failure_sent + Millis(kOpenMs), "while its breaker was open");

  // Half-open: one probe reaches a; it fails, and the breaker opens again.
  Clock::time_point probe_sent;
  std::string probe_who;
  int probe_status = 0;
  // Requests until one goes elsewhere than b: the probe.
  auto wait_for_probe = [&] {
    return WaitFor(
        [&] {
          probe_sent = Clock::now();
          const HttpResponse r = c.Get("/healthz");
          probe_who = Who(r);
          probe_status = r.status;
          return probe_who != "b";
        },
        Millis(5000), Millis(0));
  };
  ASSERT_TRUE(wait_for_probe()) << "no probe went to a";
  ASSERT_EQ(probe_who, "a");
  EXPECT_EQ(probe_status, 503);
  EXPECT_EQ(Metric(sluice, "sluice_circuit_open", gauge_a), 1);
  only_b_until(probe_sent + Millis(kOpenMs), "after its failed probe");

  // a recovers: the next probe succeeds and the breaker closes.
  SetHealthy(a, true);
  ASSERT_TRUE(wait_for_probe()) << "no probe went to a";
  EXPECT_EQ(probe_who, "a");
  EXPECT_EQ(probe_status, 200);
  EXPECT_EQ(Metric(sluice, "sluice_circuit_open", gauge_a), 0);
  // And a is back in the rotation.
  const std::vector<std::string> seq = Sequence(sluice.port(), 10, "/healthz");
  for (size_t i = 1; i < seq.size(); ++i) {
    EXPECT_NE(seq[i], seq[i - 1]) << Joined(seq);
  }
}

TEST(GatewayTest, CircuitBreakerOpensForAServerThatIsDown) {
  START_UPSTREAM(a, "a");
  START_UPSTREAM(b, "b");
  START_SLUICE(sluice, AppConfig(fmt::format(R"(
    balance: round_robin
    servers: [{}, {}]
    circuit_breaker: {{consecutive_failures: 2, open_ms: 300}}
)",
                                             Server(a), Server(b))));
  const std::string gauge_a = CircuitLabels("app", a);
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  const std::vector<std::string> first = Sequence(sluice.port(), 2);
  EXPECT_EQ(std::set<std::string>(first.begin(), first.end()), (std::set<std::string>{"a", "b"}));
  a.Kill();
  // Every request still succeeds (retried on b), and a's failures open its breaker.
  for (int i = 0; i < 10; ++i) {
    const HttpResponse r = c.Get("/");
    ASSERT_EQ(r.status, 200) << "request " << i << ": " << r.Describe();
    EXPECT_EQ(Who(r), "b");
  }
  EXPECT_EQ(Metric(sluice, "sluice_circuit_open", gauge_a), 1);
  // a comes back on its port: after open_ms a probe finds it and the breaker closes.
  ASSERT_TRUE(a.Restart("a")) << a.error();
  ASSERT_TRUE(WaitFor([&] { return Who(c.Get("/")) == "a"; }, Millis(5000), Millis(0)))
      << "a never got traffic again";
  EXPECT_EQ(Metric(sluice, "sluice_circuit_open", gauge_a), 0);
}

// --- 9. Active health checks -----------------------------------------------------------------

TEST(GatewayTest, HealthChecksTakeAServerOutAndBringItBack) {
  START_UPSTREAM(a, "a");
  START_UPSTREAM(b, "b");
  START_SLUICE(sluice, AppConfig(fmt::format(R"(
    balance: round_robin
    servers: [{}, {}]
    health_check: {{path: "/healthz", interval_ms: 100, unhealthy_threshold: 3, healthy_threshold: 2}}
)",
                                             Server(a), Server(b))));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  auto alternates = [&](int n) {
    std::vector<std::string> seq;
    for (int i = 0; i < n; ++i) seq.push_back(Who(c.Get("/")));
    for (size_t i = 1; i < seq.size(); ++i) {
      if (seq[i] == seq[i - 1]) return ::testing::AssertionFailure() << Joined(seq);
    }
    return ::testing::AssertionSuccess();
  };
  EXPECT_TRUE(alternates(10));

  // a's checks fail from now on; its other paths still answer. Two requests in a row to
  // b cannot happen while both take traffic.
  const int64_t count_before = AnsweredBy(a);
  SetHealthy(a, false);
  int to_a = 0;
  std::string previous;
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string who = Who(c.Get("/"));
        to_a += who == "a";
        const bool twice_b = who == "b" && previous == "b";
        previous = who;
        return twice_b;
      },
      Millis(5000), Millis(5)))
      << "a was never taken out";
  const int64_t checks = AnsweredBy(a) - count_before - to_a;
  EXPECT_GE(checks, 3) << "a was taken out before unhealthy_threshold checks";
  for (int i = 0; i < 20; ++i) {
    const HttpResponse r = c.Get("/");
    EXPECT_EQ(r.status, 200) << r.Describe();
    EXPECT_EQ(Who(r), "b") << "a took traffic while its checks fail";
  }

  // Checks pass again: after healthy_threshold of them, a is back.
  SetHealthy(a, true);
  ASSERT_TRUE(WaitFor([&] { return Who(c.Get("/")) == "a"; }, Millis(5000), Millis(5)))
      << "a never came back";
  EXPECT_TRUE(alternates(10));
}

// --- 10. 502, 504, 503 and fallback ------------------------------------------------------------

TEST(GatewayTest, UnreachableUpstreamGets502) {
  DeadPort dead;
  ASSERT_NE(dead.port(), 0);
  START_SLUICE(sluice, AppConfig(fmt::format(R"(
    servers: [{{address: "{}"}}]
    circuit_breaker: {{consecutive_failures: 1000, open_ms: 1000}}
)",
                                             dead.address())));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  for (const std::string_view method : {"GET", "POST"}) {
    for (int i = 0; i < 3; ++i) {
      const HttpResponse r = c.Request(method, "/x", {}, method == "POST" ? "body" : "");
      EXPECT_EQ(r.status, 502) << method << ": " << r.Describe();
      EXPECT_EQ(r.body, "{\"error\":\"upstream_unavailable\"}\n");
      EXPECT_TRUE(IsHex32(r.Header("X-Request-Id").value_or(""))) << r.Describe();
      EXPECT_TRUE(r.Header("RateLimit")) << r.Describe();
    }
  }
}

// Upgrade is not proxied: the request goes up as a plain one (no Upgrade field, no
// upgrade token) and the client connection ends with the answer, whatever it is.
TEST(GatewayTest, UpgradeRequestsGoUpPlainAndCloseTheConnection) {
  START_UPSTREAM(a, "a");
  DeadPort dead;
  ASSERT_NE(dead.port(), 0);
  START_SLUICE(sluice, Config(fmt::format(R"(
routes:
  - {{path_prefix: "/dead/", upstream: dead}}
  - {{path_prefix: "/", upstream: app}}
upstreams:
  app:
    servers: [{}]
  dead:
    servers: [{{address: "{}"}}]
)",
                                          Server(a), dead.address())));
  const Headers upgrade = {{"Connection", "Upgrade"}, {"Upgrade", "websocket"}};
  {
    HttpClient c(sluice.port());
    ASSERT_TRUE(c.connected()) << c.error();
    const HttpResponse r = c.Get("/headers", upgrade);
    ASSERT_EQ(r.status, 200) << r.Describe();
    EXPECT_EQ(r.body.find("Upgrade"), std::string::npos) << r.body;
    EXPECT_EQ(r.body.find("pgrade"), std::string::npos) << r.body;  // nor the token
    EXPECT_EQ(r.Header("Connection"), "close") << r.Describe();
    std::string data;
    EXPECT_EQ(c.WaitClosed(Millis(2000), &data), HttpClient::CloseState::kClosed) << data;
  }
  {
    HttpClient c(sluice.port());
    ASSERT_TRUE(c.connected()) << c.error();
    const HttpResponse r = c.Get("/dead/x", upgrade);
    ASSERT_EQ(r.status, 502) << r.Describe();
    EXPECT_EQ(r.Header("Connection"), "close") << r.Describe();
    std::string data;
    EXPECT_EQ(c.WaitClosed(Millis(2000), &data), HttpClient::CloseState::kClosed) << data;
  }
}

TEST(GatewayTest, SlowFirstByteGets504) {
  START_UPSTREAM(a, "a");
  START_SLUICE(sluice, AppConfig(fmt::format(R"(
    servers: [{}]
    timeouts: {{connect_ms: 1000, first_byte_ms: 200, idle_ms: 1000}}
    circuit_breaker: {{consecutive_failures: 1000, open_ms: 1000}}
)",
                                             Server(a))));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  for (const std::string_view method : {"GET", "POST"}) {
    const auto start = Clock::now();
    const HttpResponse r = c.Request(method, "/delay/3000", {}, method == "POST" ? "body" : "");
    EXPECT_EQ(r.status, 504) << method << ": " << r.Describe();
    EXPECT_EQ(r.body, "{\"error\":\"upstream_timeout\"}\n");
    EXPECT_LT(MillisSince(start), 2500) << "sluice waited for the slow upstream";
  }
  // A response within the timeout still passes.
  const HttpResponse r = c.Get("/delay/20");
  EXPECT_EQ(r.status, 200) << r.Describe();
  EXPECT_EQ(Who(r), "a");
}

TEST(GatewayTest, NoEligibleServerGets503WithRetryAfter) {
  DeadPort dead;
  ASSERT_NE(dead.port(), 0);
  START_UPSTREAM(u, "u");
  START_SLUICE(sluice, Config(std::string(kOpenRule) + fmt::format(R"(
routes:
  - {{path_prefix: "/checked/", upstream: checked}}
  - {{path_prefix: "/", upstream: dead}}
upstreams:
  dead:
    servers: [{{address: "{}"}}]
    circuit_breaker: {{consecutive_failures: 1, open_ms: 60000}}
  checked:
    servers: [{}]
    health_check: {{path: "/healthz", interval_ms: 100, unhealthy_threshold: 1, healthy_threshold: 1}}
    circuit_breaker: {{consecutive_failures: 5, open_ms: 2000}}
)",
                                                                   dead.address(), Server(u))));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  // The one failure opens the breaker: 502 for that request, 503 after.
  HttpResponse r = c.Get("/x");
  EXPECT_EQ(r.status, 502) << r.Describe();
  for (int i = 0; i < 3; ++i) {
    r = c.Get("/x");
    EXPECT_EQ(r.status, 503) << r.Describe();
    EXPECT_EQ(r.Header("Retry-After"), "60") << r.Describe();
    EXPECT_EQ(r.body, "{\"error\":\"no_healthy_upstream\"}\n");
  }
  EXPECT_EQ(Metric(sluice, "sluice_circuit_open",
                   fmt::format("upstream=\"dead\",server=\"{}\"", dead.address())),
            1);

  // A server its health checks took out: 503 too, Retry-After from that group's open_ms.
  r = c.Get("/checked/x");
  EXPECT_EQ(r.status, 200) << r.Describe();
  SetHealthy(u, false);
  ASSERT_TRUE(WaitFor([&] { return (r = c.Get("/checked/x")).status == 503; }, Millis(5000)))
      << r.Describe();
  EXPECT_EQ(r.Header("Retry-After"), "2") << r.Describe();
  EXPECT_EQ(r.body, "{\"error\":\"no_healthy_upstream\"}\n");
  EXPECT_FALSE(r.Header("X-Upstream"));
  SetHealthy(u, true);
  ASSERT_TRUE(WaitFor([&] { return (r = c.Get("/checked/x")).status == 200; }, Millis(5000)))
      << r.Describe();
  EXPECT_EQ(Who(r), "u");
}

TEST(GatewayTest, FallbackServesWhenTheGroupIsDown) {
  START_UPSTREAM(p, "primary-1");
  START_UPSTREAM(q, "primary-2");
  START_UPSTREAM(backup, "backup-1");
  START_SLUICE(sluice,
               Config(std::string(kOpenRule) + fmt::format(R"(
routes:
  - {{path_prefix: "/", upstream: primary}}
upstreams:
  primary:
    servers: [{}, {}]
    circuit_breaker: {{consecutive_failures: 1, open_ms: 60000}}
    fallback: backup
  backup:
    servers: [{}]
)",
                                                           Server(p), Server(q), Server(backup))));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  std::set<std::string> before;
  for (int i = 0; i < 4; ++i) before.insert(Who(c.Get("/")));
  EXPECT_EQ(before, (std::set<std::string>{"primary-1", "primary-2"}));
  p.Kill();
  q.Kill();
  // The first request finds out: its attempt and its one retry (gateway.h) go to the two
  // dead servers, and each failure opens that server's breaker; with none left in the
  // group, it goes on to the fallback.
  const HttpResponse first = c.Get("/");
  EXPECT_EQ(first.status, 200) << first.Describe();
  EXPECT_EQ(Who(first), "backup-1") << first.Describe();
  // From then on the group has no eligible server, and the fallback answers every request.
  for (int i = 0; i < 10; ++i) {
    const HttpResponse r = c.Get(i % 2 == 0 ? "/" : "/status/201");
    ASSERT_EQ(r.status, i % 2 == 0 ? 200 : 201) << "request " << i << ": " << r.Describe();
    EXPECT_EQ(Who(r), "backup-1") << "request " << i;
  }
}

// A reload that changes a group while requests are in flight on it: they finish on the
// servers they started with (the old group lives until its last request is done, and
// is dropped from the loop, not from inside that request's callbacks); new requests go
// to the new servers; an unchanged group keeps its warm connections.
TEST(GatewayTest, ReloadChangesAGroupUnderRequestsInFlight) {
  START_UPSTREAM(a, "a");
  START_UPSTREAM(b, "b");
  START_UPSTREAM(s, "s");
  auto config = [&](const UpstreamProcess& app_server) {
    return Config(std::string(kOpenRule) + fmt::format(R"(
routes:
  - {{path_prefix: "/static/", upstream: static}}
  - {{path_prefix: "/", upstream: app}}
upstreams:
  app:
    servers: [{}]
  static:
    servers: [{}]
)",
                                                       Server(app_server), Server(s)));
  };
  START_SLUICE(sluice, config(a));
  HttpClient warm(sluice.port());
  ASSERT_TRUE(warm.connected()) << warm.error();
  ASSERT_EQ(Who(warm.Get("/static/x")), "s");
  // Slow requests on app (server a) in flight across the reload.
  std::vector<std::unique_ptr<HttpClient>> slow;
  for (int i = 0; i < 4; ++i) {
    slow.push_back(std::make_unique<HttpClient>(sluice.port()));
    ASSERT_TRUE(slow.back()->connected());
    ASSERT_TRUE(slow.back()->Send(BuildRequest("GET", "/delay/400")));
  }
  // Each is forwarded as soon as the rules have counted it (in the same call).
  ASSERT_TRUE(WaitFor(
      [&] {
        return Metric(sluice, "sluice_requests_total", "rule=\"all\",decision=\"allowed\"") >= 5;
      },
      Millis(3000)))
      << MetricsText(sluice);
  ASSERT_TRUE(sluice.RewriteConfig(config(b)));
  HttpClient admin(sluice.admin_port());
  ASSERT_TRUE(admin.connected());
  ASSERT_EQ(admin.Request("POST", "/v1/reload").status, 200);
  // New requests go to b at once.
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected());
  EXPECT_EQ(Who(c.Get("/x")), "b");
  // The slow ones finish on a.
  for (auto& client : slow) {
    const HttpResponse r = client->ReadResponse();
    EXPECT_EQ(r.status, 200) << r.Describe();
    EXPECT_EQ(Who(r), "a");
  }
  // The unchanged group still serves, on the connection it had.
  EXPECT_EQ(Who(warm.Get("/static/y")), "s");
  EXPECT_EQ(Who(c.Get("/y")), "b");
  EXPECT_TRUE(sluice.running());
}

// A group of one server that fails (its breaker still closed): the retry has no other
// server in the group, so it goes to the fallback.
TEST(GatewayTest, RetryOfASingleServerGroupGoesToTheFallback) {
  START_UPSTREAM(backup, "backup-1");
  DeadPort dead;
  ASSERT_NE(dead.port(), 0);
  START_SLUICE(sluice,
               Config(std::string(kOpenRule) + fmt::format(R"(
routes:
  - {{path_prefix: "/", upstream: primary}}
upstreams:
  primary:
    servers: [{{address: "{}"}}]
    fallback: backup
  backup:
    servers: [{}]
)",
                                                           dead.address(), Server(backup))));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  for (int i = 0; i < 3; ++i) {
    const HttpResponse r = c.Get("/");
    ASSERT_EQ(r.status, 200) << r.Describe();
    EXPECT_EQ(Who(r), "backup-1");
  }
  // A POST too, with a body: its connect failed, so nothing of it reached the dead
  // server, and the body, small enough to be kept, goes again.
  const HttpResponse post = c.Request("POST", "/upload", {}, "abc");
  EXPECT_EQ(post.status, 200) << post.Describe();
  EXPECT_EQ(Who(post), "backup-1");
  EXPECT_EQ(post.body.substr(0, 2), "3 ") << post.body;
  const HttpResponse chunked =
      c.Request("POST", "/upload", {{"Transfer-Encoding", "chunked"}}, "5\r\nhello\r\n0\r\n\r\n");
  EXPECT_EQ(chunked.status, 200) << chunked.Describe();
  EXPECT_EQ(chunked.body.substr(0, 2), "5 ") << chunked.body;
}

// An upstream that closes before answering: 502 (a GET after its one retry). One that
// closes mid-body: the client gets what came and then the connection closes, so it sees
// a truncated message and never a complete wrong one.
TEST(GatewayTest, UpstreamClosingEarlyGives502OrATruncatedBody) {
  START_UPSTREAM(a, "a");
  START_SLUICE(sluice,
               AppConfig(ServersLine({Server(a)}) +
                         "    circuit_breaker: {consecutive_failures: 1000, open_ms: 1000}\n"));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  for (const std::string_view method : {"GET", "POST"}) {
    const HttpResponse r = c.Request(method, "/close", {}, method == "POST" ? "body" : "");
    EXPECT_EQ(r.status, 502) << method << ": " << r.Describe();
    EXPECT_EQ(r.body, "{\"error\":\"upstream_unavailable\"}\n");
  }
  // sluice's own 502 keeps the client connection.
  HttpResponse r = c.Get("/");
  EXPECT_EQ(r.status, 200) << r.Describe();

  HttpClient mid(sluice.port());
  ASSERT_TRUE(mid.connected()) << mid.error();
  ASSERT_TRUE(mid.Send(BuildRequest("GET", "/close-mid-body")));
  const auto deadline = Clock::now() + Millis(5000);
  StreamReader reader(mid.fd());
  HttpResponse head;
  ASSERT_TRUE(reader.ReadHead(&head, deadline)) << reader.error();
  EXPECT_EQ(head.status, 200) << head.Describe();
  EXPECT_EQ(head.Header("Content-Length"), "100000") << head.Describe();
  std::string body;
  EXPECT_TRUE(reader.ReadToEof(&body, deadline)) << reader.error();
  EXPECT_EQ(body.size(), 1000u);
  EXPECT_TRUE(body == Pattern(0, body.size()));

  r = FetchGet(sluice.port(), "/");
  EXPECT_EQ(r.status, 200) << r.Describe();
}

// --- 11. Smuggling ----------------------------------------------------------------------------

TEST(GatewayTest, SmugglingAttemptsAreRefusedBeforeReachingTheUpstream) {
  START_UPSTREAM(a, "a");
  START_SLUICE(sluice, AppConfig(ServersLine({Server(a)})));
  const int64_t before = AnsweredBy(a);
  const std::string smuggled = "GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  const std::string chunked_smuggle = "0\r\n\r\n" + smuggled;
  const struct {
    std::string name;
    std::string request;
  } cases[] = {
      {"Content-Length with Transfer-Encoding",
       fmt::format("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n{}",
                   chunked_smuggle.size(), chunked_smuggle)},
      {"Transfer-Encoding with Content-Length",
       fmt::format("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                   "Content-Length: {}\r\n\r\n{}",
                   chunked_smuggle.size(), chunked_smuggle)},
      {"two different Content-Length",
       fmt::format("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
                   "Content-Length: {}\r\n\r\nhello{}",
                   5 + smuggled.size(), smuggled)},
      {"Transfer-Encoding: chunked, identity",
       "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n" +
           chunked_smuggle},
      {"space before the colon",
       fmt::format("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length : {}\r\n\r\n{}",
                   smuggled.size(), smuggled)},
      {"space before the colon of Transfer-Encoding",
       "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding : chunked\r\n\r\n" +
           chunked_smuggle},
  };
  for (const auto& t : cases) {
    HttpClient c(sluice.port());
    ASSERT_TRUE(c.connected()) << c.error();
    ASSERT_TRUE(c.Send(t.request)) << t.name << ": " << c.error();
    const HttpResponse r = c.ReadResponse();
    EXPECT_EQ(r.status, 400) << t.name << ": " << r.Describe();
    EXPECT_FALSE(r.Header("X-Upstream")) << t.name << ": " << r.Describe();
    // Nothing more is read from a connection whose framing is in doubt.
    std::string data;
    const HttpClient::CloseState state = c.WaitClosed(Millis(3000), &data);
    EXPECT_TRUE(state == HttpClient::CloseState::kClosed || state == HttpClient::CloseState::kReset)
        << t.name << ": connection still open (state " << static_cast<int>(state)
        << "), data: " << data;
    EXPECT_EQ(AnsweredBy(a), before) << t.name << ": the upstream answered something";
  }
  // One ordinary request afterwards reaches the upstream, and only it.
  const HttpResponse ok = FetchGet(sluice.port(), "/");
  EXPECT_EQ(ok.status, 200) << ok.Describe();
  EXPECT_EQ(AnsweredBy(a), before + 1);
}

TEST(GatewayTest, InvalidChunkSizeGets400AndClosesTheConnection) {
  START_UPSTREAM(a, "a");
  START_SLUICE(sluice, AppConfig(ServersLine({Server(a)})));
  const std::string head =
      "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const std::string& body :
       {std::string("5\r\nhello\r\nzz\r\nGET /smuggled HTTP/1.1\r\n\r\n"),
        std::string("-5\r\nhello\r\n0\r\n\r\n"), std::string("5\r\nhelloXX\r\n0\r\n\r\n")}) {
    // All at once, and the head first then the body, when the head may have gone out.
    for (const bool split : {false, true}) {
      HttpClient c(sluice.port());
      ASSERT_TRUE(c.connected()) << c.error();
      if (split) {
        ASSERT_TRUE(c.Send(head)) << c.error();
        ASSERT_TRUE(c.Send(body)) << c.error();
      } else {
        ASSERT_TRUE(c.Send(head + body)) << c.error();
      }
      const HttpResponse r = c.ReadResponse();
      EXPECT_EQ(r.status, 400) << body << ": " << r.Describe();
      ExpectClosed(c);
    }
  }
  // The upstream never got a complete request, so it answered none.
  EXPECT_EQ(AnsweredBy(a), 0);
  const HttpResponse ok = Fetch(sluice.port(), "POST", "/upload", {}, "hello");
  EXPECT_EQ(ok.status, 200) << ok.Describe();
  EXPECT_EQ(ok.body, fmt::format("5 {:016x}\n", Fnv1a(kFnvOffsetBasis, "hello")));
}

// --- 12. Metrics ------------------------------------------------------------------------------

TEST(GatewayTest, CountsUpstreamResponsesByCode) {
  START_UPSTREAM(a, "a");
  START_SLUICE(sluice, AppConfig(ServersLine({Server(a)})));
  EXPECT_FALSE(Metric(sluice, "sluice_upstream_requests_total", "upstream=\"app\",code=\"200\""));
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  for (int i = 0; i < 7; ++i) ASSERT_EQ(c.Get("/").status, 200);
  for (int i = 0; i < 2; ++i) ASSERT_EQ(c.Get("/status/404").status, 404);
  ASSERT_EQ(c.Get("/status/500").status, 500);
  const std::string text = MetricsText(sluice);
  EXPECT_EQ(MetricValue(text, "sluice_upstream_requests_total", "upstream=\"app\",code=\"200\""), 7)
      << text;
  EXPECT_EQ(MetricValue(text, "sluice_upstream_requests_total", "upstream=\"app\",code=\"404\""), 2)
      << text;
  EXPECT_EQ(MetricValue(text, "sluice_upstream_requests_total", "upstream=\"app\",code=\"500\""), 1)
      << text;
  EXPECT_EQ(MetricValue(text, "sluice_circuit_open", CircuitLabels("app", a)), 0) << text;
}

// --- 13. Clients that go away ---------------------------------------------------------------

TEST(GatewayTest, ClientClosingMidDownloadLeavesSluiceServing) {
  START_UPSTREAM(a, "a");
  START_SLUICE(sluice, AppConfig(ServersLine({Server(a)})));
  for (int round = 0; round < 4; ++round) {
    {
      HttpClient c(sluice.port());
      ASSERT_TRUE(c.connected()) << c.error();
      ASSERT_TRUE(c.Send(BuildRequest("GET", fmt::format("/bytes/{}", kHundredMiB))));
      const auto deadline = Clock::now() + std::chrono::seconds(10);
      StreamReader reader(c.fd());
      HttpResponse head;
      ASSERT_TRUE(reader.ReadHead(&head, deadline)) << reader.error();
      ASSERT_EQ(head.status, 200);
      std::vector<char> buffer(kPiece);
      uint64_t got = 0;
      while (got < (uint64_t{1} << 20)) {
        const ssize_t n = reader.Read(buffer.data(), buffer.size(), deadline);
        ASSERT_GT(n, 0) << reader.error();
        got += static_cast<uint64_t>(n);
      }
      // Goes away with unread data: the kernel resets the connection.
    }
    // sluice goes on: fresh requests, each answered by the right response (a pooled
    // upstream connection left mid-body would answer with the rest of that body).
    for (int i = 0; i < 5; ++i) {
      const HttpResponse r = FetchGet(sluice.port(), "/status/201");
      ASSERT_EQ(r.status, 201) << "round " << round << ": " << r.Describe();
      ASSERT_EQ(r.body, "201\n");
    }
    HttpClient c(sluice.port());
    ASSERT_TRUE(c.connected()) << c.error();
    const HttpResponse r = c.Get("/bytes/1048576", {}, Millis(10000));
    ASSERT_EQ(r.status, 200) << r.Describe();
    PatternCheck check;
    check.Feed(r.body);
    EXPECT_EQ(check.size(), 1048576u);
    EXPECT_FALSE(check.mismatch());
  }
  EXPECT_TRUE(sluice.running());
}

TEST(GatewayTest, ClientClosingBeforeTheUpstreamAnswersLeavesSluiceServing) {
  START_UPSTREAM(a, "a");
  START_SLUICE(sluice, AppConfig(ServersLine({Server(a)})));
  for (int round = 0; round < 5; ++round) {
    {
      HttpClient c(sluice.port());
      ASSERT_TRUE(c.connected()) << c.error();
      ASSERT_TRUE(c.Send(BuildRequest("GET", "/delay/300")));
      // Goes away at once: sluice sees the close while it decides or forwards.
    }
    {
      // The upstream has begun to answer (sluice sent the head on), then pauses.
      HttpClient c(sluice.port());
      ASSERT_TRUE(c.connected()) << c.error();
      ASSERT_TRUE(c.Send(BuildRequest("GET", "/chunked/2/10?gap_ms=300")));
      StreamReader reader(c.fd());
      HttpResponse head;
      ASSERT_TRUE(reader.ReadHead(&head, Clock::now() + Millis(5000))) << reader.error();
      ASSERT_EQ(head.status, 200);
    }
    // The abandoned upstream connection must not answer someone else's request: a
    // request here must get its own response, not the late one of /delay.
    for (int i = 0; i < 3; ++i) {
      const HttpResponse r = FetchGet(sluice.port(), "/status/201");
      ASSERT_EQ(r.status, 201) << "round " << round << ": " << r.Describe();
    }
  }
  // And after the delays ran out, too.
  HttpClient c(sluice.port());
  ASSERT_TRUE(c.connected()) << c.error();
  for (int i = 0; i < 10; ++i) {
    const HttpResponse r = c.Get(i % 2 == 0 ? "/delay/50" : "/status/202");
    ASSERT_EQ(r.status, i % 2 == 0 ? 200 : 202) << r.Describe();
  }
  EXPECT_TRUE(sluice.running());
}

}  // namespace
}  // namespace sluice::integration
