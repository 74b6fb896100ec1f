// What the integration tests need to drive the real sluice binary over real sockets:
// a child process running `sluice serve` on a temporary config (ports chosen by the
// kernel and read back from its start-up line), a small blocking HTTP/1.1 client for
// loopback with a timeout on every wait, and a strict parser for the RFC 9651 lists
// that the RateLimit and RateLimit-Policy fields are.
//
// Nothing here sleeps to synchronise: waits are bounded polls for a condition, and
// every blocking call has a deadline, so a broken server fails a test instead of
// hanging the run.
//
// Thread-safety: a SluiceProcess or an HttpClient belongs to one thread at a time;
// distinct objects may be used from distinct threads.
#ifndef SLUICE_TESTS_INTEGRATION_HARNESS_H_
#define SLUICE_TESTS_INTEGRATION_HARNESS_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::integration {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

// Default bound for a single network wait.
inline constexpr Millis kIoTimeout{5000};

// How a child ended: exited with `code`, or was killed by `signal`.
struct ExitStatus {
  bool exited = false;
  int code = -1;
  int signal = 0;
  std::string ToString() const;
};

// Runs SLUICE_BINARY with `args`, waits up to `timeout` (then kills it) and returns
// its status with what it printed.
struct CommandResult {
  std::optional<ExitStatus> status;  // empty: timed out (the child was killed)
  std::string out;
  std::string err;
};
CommandResult RunSluice(const std::vector<std::string>& args, Millis timeout = Millis(10000));

// A temporary directory, removed with its contents when destroyed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // path()/name
  std::string File(std::string_view name) const;

 private:
  std::string path_;
};

std::string ReadFileText(const std::string& path);
bool WriteFileText(const std::string& path, std::string_view text);

// `sluice serve --config FILE` as a child process.
//
// The constructor writes `config_yaml` to a file in a fresh temporary directory,
// starts the binary with stdout and stderr going to files there (so the access log,
// which goes to stdout by default, stays readable), and waits up to `start_timeout`
// for the "listening on" line. started() says whether that worked; error() says why
// not. The destructor sends SIGTERM, then SIGKILL if the process has not exited
// within a few seconds, and reaps it.
class SluiceProcess {
 public:
  explicit SluiceProcess(std::string_view config_yaml, Millis start_timeout = Millis(10000));
  ~SluiceProcess();
  SluiceProcess(const SluiceProcess&) = delete;
  SluiceProcess& operator=(const SluiceProcess&) = delete;

  bool started() const { return started_; }
  const std::string& error() const { return error_; }
  pid_t pid() const { return pid_; }
  uint16_t port() const { return port_; }
  uint16_t admin_port() const { return admin_port_; }
  uint16_t grpc_port() const { return grpc_port_; }  // 0 without grpc_listen
  const std::string& config_path() const { return config_path_; }
  const TempDir& dir() const { return dir_; }

  // Replaces the config file (for reload tests).
  bool RewriteConfig(std::string_view config_yaml);
  // kill(pid, signal); false when the process is gone.
  bool Signal(int signal);
  // Waits for the process to exit; empty on timeout (the process is left running).
  std::optional<ExitStatus> WaitExit(Millis timeout);
  bool running();

  std::string Stdout() const;
  std::string Stderr() const;

 private:
  TempDir dir_;
  std::string config_path_;
  std::string stdout_path_;
  std::string stderr_path_;
  pid_t pid_ = -1;
  std::optional<ExitStatus> exit_;
  bool started_ = false;
  std::string error_;
  uint16_t port_ = 0;
  uint16_t admin_port_ = 0;
  uint16_t grpc_port_ = 0;
};

// Polls `condition` every few milliseconds until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& condition, Millis timeout, Millis interval = Millis(10));

// --- HTTP -----------------------------------------------------------------------------

struct HttpResponse {
  int status = 0;  // 0: no (complete) response; see error
  std::string error;
  std::string version;  // "HTTP/1.1"
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;  // in order, as sent
  std::string body;

  bool ok() const { return status != 0; }
  // The first header with this name (ASCII case-insensitive).
  std::optional<std::string> Header(std::string_view name) const;
  size_t HeaderCount(std::string_view name) const;
  // Status line, headers and body, for failure messages.
  std::string Describe() const;
};

// What a request adds to its head besides the request line and Host.
using Headers = std::vector<std::pair<std::string, std::string>>;

// "METHOD target VERSION\r\nHost: ...\r\n<headers>[Content-Length]\r\n\r\n<body>".
// A Content-Length is added when `body` is not empty and `headers` has none.
std::string BuildRequest(std::string_view method, std::string_view target,
                         const Headers& headers = {}, std::string_view body = {},
                         std::string_view version = "HTTP/1.1");

// A blocking client connection to 127.0.0.1:`port`, optionally bound to a source
// address in 127.0.0.0/8 first (127.0.0.2, 127.0.0.3: distinct peers on loopback).
class HttpClient {
 public:
  // Connects; check connected() and error().
  explicit HttpClient(uint16_t port, std::string_view source_address = {},
                      Millis timeout = kIoTimeout);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  bool connected() const { return fd_ >= 0; }
  const std::string& error() const { return error_; }
  int fd() const { return fd_; }

  // Writes all of `bytes` (bounded by `timeout`).
  bool Send(std::string_view bytes, Millis timeout = kIoTimeout);
  // Reads one response. `head_request`: the response has no body whatever its
  // Content-Length says. A 1xx response is returned like any other.
  HttpResponse ReadResponse(Millis timeout = kIoTimeout, bool head_request = false);
  // Reads `count` responses in order; stops at the first failure (whose response,
  // with its error, is the last element).
  std::vector<HttpResponse> ReadResponses(size_t count, Millis timeout = kIoTimeout);

  // Sends a request and reads its response.
  HttpResponse Request(std::string_view method, std::string_view target,
                       const Headers& headers = {}, std::string_view body = {},
                       Millis timeout = kIoTimeout);
  HttpResponse Get(std::string_view target, const Headers& headers = {},
                   Millis timeout = kIoTimeout) {
    return Request("GET", target, headers, {}, timeout);
  }

  enum class CloseState { kClosed, kReset, kOpen, kData };
  // Waits up to `timeout` for the server to close: kClosed (EOF), kReset, kOpen
  // (still open at the deadline) or kData (bytes arrived instead; they are kept in
  // the buffer and appended to `*data` when given).
  CloseState WaitClosed(Millis timeout, std::string* data = nullptr);

  // Bytes read but not yet consumed by ReadResponse.
  const std::string& buffered() const { return buffer_; }
  void Close();

 private:
  // Reads more into buffer_; false at EOF, error or deadline (error_ says which).
  bool Fill(Clock::time_point deadline);

  int fd_ = -1;
  uint16_t port_ = 0;
  std::string buffer_;
  std::string error_;
  bool eof_ = false;
};

// One request on a fresh connection (closed afterwards).
HttpResponse Fetch(uint16_t port, std::string_view method, std::string_view target,
                   const Headers& headers = {}, std::string_view body = {},
                   std::string_view source_address = {}, Millis timeout = kIoTimeout);
inline HttpResponse FetchGet(uint16_t port, std::string_view target, const Headers& headers = {},
                             std::string_view source_address = {}) {
  return Fetch(port, "GET", target, headers, {}, source_address);
}

// --- Prometheus text ------------------------------------------------------------------

// The value of the sample `name{labels}` exactly as written (labels in the order the
// server renders them, e.g. `rule="a",decision="allowed"`; empty for none), or empty
// when the series is absent.
std::optional<double> MetricValue(std::string_view metrics_text, std::string_view name,
                                  std::string_view labels = {});

// --- RFC 9651 structured fields ---------------------------------------------------------

struct SfBareItem {
  enum class Type { kInteger, kDecimal, kString, kToken, kByteSequence, kBoolean };
  Type type = Type::kInteger;
  int64_t integer = 0;
  double decimal = 0;
  std::string text;  // string, token, byte sequence (still base64)
  bool boolean = false;
};

struct SfItem {
  SfBareItem value;
  std::vector<std::pair<std::string, SfBareItem>> parameters;  // in order, keys unique
};

// Parses a List field value (RFC 9651 section 4.2.1) whose members are all items (an
// inner list is refused). Empty on any syntax error, with the reason in `*error`.
std::optional<std::vector<SfItem>> ParseSfList(std::string_view field, std::string* error);

// One member of RateLimit or RateLimit-Policy: a string item naming the policy, with
// integer parameters (q, w, r, t, ...).
struct RateLimitEntry {
  std::string policy;
  std::map<std::string, int64_t> params;
  std::optional<int64_t> Param(const std::string& key) const {
    const auto it = params.find(key);
    if (it == params.end()) return std::nullopt;
    return it->second;
  }
};

// Strict: the field must be a valid RFC 9651 list, every member a string item, every
// parameter an integer, no duplicate parameter. Empty otherwise, with `*error` set.
std::optional<std::vector<RateLimitEntry>> ParseRateLimitField(std::string_view field,
                                                               std::string* error);

}  // namespace sluice::integration

#endif  // SLUICE_TESTS_INTEGRATION_HARNESS_H_
