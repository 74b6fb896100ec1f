#include "integration/harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#ifndef SLUICE_BINARY
#error "SLUICE_BINARY must name the sluice binary under test"
#endif

namespace sluice::integration {
namespace {

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

int RemainingMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(left + 1, 60'000));
}

// Printable text for failure messages: control bytes escaped, long input cut.
std::string Printable(std::string_view s, size_t max = 600) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n\n";
    } else if (c < 0x20 || c >= 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max) out += fmt::format("... ({} bytes in all)", s.size());
  return out;
}

ExitStatus FromWaitStatus(int status) {
  ExitStatus s;
  if (WIFEXITED(status)) {
    s.exited = true;
    s.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    s.signal = WTERMSIG(status);
  }
  return s;
}

// fork + exec of SLUICE_BINARY with `args`; stdin from /dev/null, stdout and stderr
// to the given files. Only async-signal-safe calls happen between fork and exec.
pid_t Spawn(const std::vector<std::string>& args, const std::string& out_path,
            const std::string& err_path, std::string* error) {
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int out_fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const int err_fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (null_fd < 0 || out_fd < 0 || err_fd < 0) {
    *error = fmt::format("cannot open output files: {}", strerror(errno));
    for (int fd : {null_fd, out_fd, err_fd}) {
      if (fd >= 0) close(fd);
    }
    return -1;
  }
  std::vector<std::string> argv_strings;
  argv_strings.emplace_back(SLUICE_BINARY);
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid == 0) {
    // The child dies with the test process, so a crashed test leaves no server behind.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    dup2(null_fd, STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  const int saved_errno = errno;
  close(null_fd);
  close(out_fd);
  close(err_fd);
  if (pid < 0) *error = fmt::format("fork: {}", strerror(saved_errno));
  return pid;
}

// Waits for `pid` up to `timeout`; the status when it exited.
std::optional<ExitStatus> WaitPid(pid_t pid, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return FromWaitStatus(status);
    if (r < 0 && errno != EINTR) return ExitStatus{};  // not our child any more
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(Millis(2));  // polling a condition, bounded above
  }
}

// "127.0.0.1:PORT" -> PORT
std::optional<uint16_t> PortOf(std::string_view endpoint) {
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const std::string digits(endpoint.substr(colon + 1));
  if (digits.empty() || digits.size() > 5) return std::nullopt;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  const int port = std::stoi(digits);
  if (port <= 0 || port > 65535) return std::nullopt;
  return static_cast<uint16_t>(port);
}

}  // namespace

std::string ExitStatus::ToString() const {
  if (exited) return fmt::format("exited with status {}", code);
  if (signal != 0) return fmt::format("killed by signal {} ({})", signal, strsignal(signal));
  return "unknown";
}

// --- Files ----------------------------------------------------------------------------

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "sluice-it-XXXXXX").string();
  if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string TempDir::File(std::string_view name) const { return path_ + "/" + std::string(name); }

std::string ReadFileText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool WriteFileText(const std::string& path, std::string_view text) {
  // Write a new file and rename it over the old one, so a reload never reads half.
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) return false;
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!out) return false;
  }
  return rename(temporary.c_str(), path.c_str()) == 0;
}

bool WaitFor(const std::function<bool()>& condition, Millis timeout, Millis interval) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(interval);  // polling a condition, bounded above
  }
}

CommandResult RunSluice(const std::vector<std::string>& args, Millis timeout) {
  CommandResult result;
  TempDir dir;
  std::string error;
  const pid_t pid = Spawn(args, dir.File("stdout"), dir.File("stderr"), &error);
  if (pid < 0) {
    result.err = error;
    return result;
  }
  result.status = WaitPid(pid, timeout);
  if (!result.status) {
    kill(pid, SIGKILL);
    WaitPid(pid, Millis(5000));
  }
  result.out = ReadFileText(dir.File("stdout"));
  result.err = ReadFileText(dir.File("stderr"));
  return result;
}

// --- SluiceProcess --------------------------------------------------------------------

SluiceProcess::SluiceProcess(std::string_view config_yaml, Millis start_timeout) {
  if (dir_.path().empty()) {
    error_ = "cannot create a temporary directory";
    return;
  }
  config_path_ = dir_.File("sluice.yaml");
  stdout_path_ = dir_.File("stdout.log");
  stderr_path_ = dir_.File("stderr.log");
  if (!WriteFileText(config_path_, config_yaml)) {
    error_ = "cannot write " + config_path_;
    return;
  }
  pid_ = Spawn({"serve", "--config", config_path_}, stdout_path_, stderr_path_, &error_);
  if (pid_ < 0) return;

  const auto deadline = Clock::now() + start_timeout;
  while (true) {
    const std::string err = Stderr();
    const size_t at = err.find("listening on ");
    if (at != std::string::npos && err.find('\n', at) != std::string::npos) {
      // sluice: listening on 127.0.0.1:PORT (N workers), admin on 127.0.0.1:PORT, config F
      const std::string_view line = std::string_view(err).substr(at, err.find('\n', at) - at);
      const size_t listen_start = std::string_view("listening on ").size();
      const size_t listen_end = line.find(" (");
      const size_t admin_at = line.find("admin on ");
      const size_t admin_end =
          admin_at == std::string_view::npos ? admin_at : line.find(',', admin_at);
      std::optional<uint16_t> port, admin;
      if (listen_end != std::string_view::npos && admin_end != std::string_view::npos) {
        port = PortOf(line.substr(listen_start, listen_end - listen_start));
        const size_t admin_start = admin_at + std::string_view("admin on ").size();
        admin = PortOf(line.substr(admin_start, admin_end - admin_start));
      }
      if (!port || !admin) {
        error_ = "cannot parse the start-up line: " + std::string(line);
        return;
      }
      port_ = *port;
      admin_port_ = *admin;
      // "grpc on 127.0.0.1:PORT, " when grpc_listen is set.
      if (const size_t grpc_at = line.find("grpc on "); grpc_at != std::string_view::npos) {
        const size_t grpc_start = grpc_at + std::string_view("grpc on ").size();
        const std::optional<uint16_t> grpc =
            PortOf(line.substr(grpc_start, line.find(',', grpc_start) - grpc_start));
        if (!grpc) {
          error_ = "cannot parse the start-up line: " + std::string(line);
          return;
        }
        grpc_port_ = *grpc;
      }
      started_ = true;
      return;
    }
    if (!running()) {
      error_ = fmt::format("sluice {} before listening; stderr:\n{}",
                           exit_ ? exit_->ToString() : "ended", Stderr());
      return;
    }
    if (Clock::now() >= deadline) {
      error_ = "no \"listening on\" line in time; stderr:\n" + Stderr();
      return;
    }
    std::this_thread::sleep_for(Millis(5));  // polling a condition, bounded above
  }
}

SluiceProcess::~SluiceProcess() {
  if (pid_ <= 0 || exit_) return;
  kill(pid_, SIGTERM);
  if (WaitExit(Millis(5000))) return;
  kill(pid_, SIGKILL);
  WaitExit(Millis(5000));
}

bool SluiceProcess::RewriteConfig(std::string_view config_yaml) {
  return WriteFileText(config_path_, config_yaml);
}

bool SluiceProcess::Signal(int signal) {
  if (pid_ <= 0 || exit_) return false;
  return kill(pid_, signal) == 0;
}

std::optional<ExitStatus> SluiceProcess::WaitExit(Millis timeout) {
  if (exit_) return exit_;
  if (pid_ <= 0) return std::nullopt;
  exit_ = WaitPid(pid_, timeout);
  return exit_;
}

bool SluiceProcess::running() {
  if (pid_ <= 0 || exit_) return false;
  return !WaitExit(Millis(0));
}

std::string SluiceProcess::Stdout() const { return ReadFileText(stdout_path_); }
std::string SluiceProcess::Stderr() const { return ReadFileText(stderr_path_); }

// --- HTTP -----------------------------------------------------------------------------

std::optional<std::string> HttpResponse::Header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (EqualsIgnoreCase(n, name)) return v;
  }
  return std::nullopt;
}

size_t HttpResponse::HeaderCount(std::string_view name) const {
  size_t count = 0;
  for (const auto& [n, v] : headers) count += EqualsIgnoreCase(n, name) ? 1 : 0;
  return count;
}

std::string HttpResponse::Describe() const {
  if (!ok()) return "no response: " + error;
  std::string out = fmt::format("{} {} {}\n", version, status, reason);
  for (const auto& [n, v] : headers) out += fmt::format("{}: {}\n", n, v);
  out += "\n" + Printable(body);
  return out;
}

std::string BuildRequest(std::string_view method, std::string_view target, const Headers& headers,
                         std::string_view body, std::string_view version) {
  std::string out = fmt::format("{} {} {}\r\n", method, target, version);
  bool has_host = false, has_length = false;
  for (const auto& [n, v] : headers) {
    has_host = has_host || EqualsIgnoreCase(n, "host");
    has_length = has_length || EqualsIgnoreCase(n, "content-length") ||
                 EqualsIgnoreCase(n, "transfer-encoding");
  }
  if (!has_host) out += "Host: 127.0.0.1\r\n";
  for (const auto& [n, v] : headers) out += fmt::format("{}: {}\r\n", n, v);
  if (!body.empty() && !has_length) out += fmt::format("Content-Length: {}\r\n", body.size());
  out += "\r\n";
  out += body;
  return out;
}

HttpClient::HttpClient(uint16_t port, std::string_view source_address, Millis timeout)
    : port_(port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error_ = fmt::format("socket: {}", strerror(errno));
    return;
  }
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (!source_address.empty()) {
    sockaddr_in source{};
    source.sin_family = AF_INET;
    source.sin_port = 0;
    const std::string text(source_address);
    if (inet_pton(AF_INET, text.c_str(), &source.sin_addr) != 1 ||
        bind(fd, reinterpret_cast<sockaddr*>(&source), sizeof(source)) != 0) {
      error_ = fmt::format("bind {}: {}", text, strerror(errno));
      close(fd);
      return;
    }
  }
  sockaddr_in server{};
  server.sin_family = AF_INET;
  server.sin_port = htons(port);
  server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&server), sizeof(server)) != 0) {
    if (errno != EINPROGRESS) {
      error_ = fmt::format("connect 127.0.0.1:{}: {}", port, strerror(errno));
      close(fd);
      return;
    }
    pollfd p{fd, POLLOUT, 0};
    const int ready = poll(&p, 1, static_cast<int>(timeout.count()));
    int so_error = 0;
    socklen_t length = sizeof(so_error);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &length);
    if (ready != 1 || so_error != 0) {
      error_ = fmt::format("connect 127.0.0.1:{}: {}", port,
                           ready != 1 ? "timed out" : strerror(so_error));
      close(fd);
      return;
    }
  }
  fd_ = fd;
}

HttpClient::~HttpClient() { Close(); }

void HttpClient::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

bool HttpClient::Send(std::string_view bytes, Millis timeout) {
  if (fd_ < 0) {
    if (error_.empty()) error_ = "not connected";
    return false;
  }
  const auto deadline = Clock::now() + timeout;
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd_, POLLOUT, 0};
      if (poll(&p, 1, RemainingMs(deadline)) <= 0) {
        error_ = fmt::format("send: timed out after {} of {} bytes", sent, bytes.size());
        return false;
      }
      continue;
    }
    error_ = fmt::format("send: {}", strerror(errno));
    return false;
  }
  return true;
}

bool HttpClient::Fill(Clock::time_point deadline) {
  if (fd_ < 0) {
    error_ = "not connected";
    return false;
  }
  if (eof_) {
    error_ = "connection closed by the server";
    return false;
  }
  while (true) {
    char chunk[65536];
    const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n > 0) {
      buffer_.append(chunk, static_cast<size_t>(n));
      return true;
    }
    if (n == 0) {
      eof_ = true;
      error_ = "connection closed by the server";
      return false;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      error_ = fmt::format("recv: {}", strerror(errno));
      return false;
    }
    pollfd p{fd_, POLLIN, 0};
    const int ready = poll(&p, 1, RemainingMs(deadline));
    if (ready == 0) {
      error_ = "timed out waiting for the server";
      return false;
    }
    if (ready < 0 && errno != EINTR) {
      error_ = fmt::format("poll: {}", strerror(errno));
      return false;
    }
  }
}

HttpResponse HttpClient::ReadResponse(Millis timeout, bool head_request) {
  HttpResponse response;
  const auto deadline = Clock::now() + timeout;
  auto fail = [&](std::string why) {
    response.status = 0;
    response.error = fmt::format("{} (buffered: \"{}\")", why, Printable(buffer_, 300));
    return response;
  };
  size_t head_end;
  while ((head_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
    if (buffer_.size() > 1 << 20) return fail("response head over 1 MiB");
    if (!Fill(deadline)) return fail(error_ + " before a complete response head");
  }
  const std::string head = buffer_.substr(0, head_end);
  size_t line_end = head.find("\r\n");
  const std::string status_line = head.substr(0, line_end);
  // HTTP-version SP 3DIGIT SP reason-phrase
  if (status_line.size() < 13 || !status_line.starts_with("HTTP/1.") || status_line[8] != ' ' ||
      status_line[12] != ' ') {
    return fail("malformed status line \"" + status_line + "\"");
  }
  response.version = status_line.substr(0, 8);
  for (int i = 9; i < 12; ++i) {
    if (status_line[i] < '0' || status_line[i] > '9') return fail("bad status code");
  }
  const int status = std::stoi(status_line.substr(9, 3));
  response.reason = status_line.substr(13);
  size_t at = line_end == std::string::npos ? head.size() : line_end + 2;
  while (at < head.size()) {
    size_t end = head.find("\r\n", at);
    if (end == std::string::npos) end = head.size();
    const std::string_view line = std::string_view(head).substr(at, end - at);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return fail("malformed header line \"" + std::string(line) + "\"");
    }
    const std::string_view name = line.substr(0, colon);
    for (char c : name) {
      if (c <= ' ' || c >= 0x7f) return fail("bad header name \"" + std::string(name) + "\"");
    }
    response.headers.emplace_back(std::string(name), std::string(TrimOws(line.substr(colon + 1))));
    at = end + 2;
  }
  size_t body_length = 0;
  const bool bodiless = head_request || status < 200 || status == 204 || status == 304;
  if (!bodiless) {
    if (response.HeaderCount("content-length") != 1) {
      return fail(fmt::format("expected one Content-Length, got {}",
                              response.HeaderCount("content-length")));
    }
    const std::string length_text = *response.Header("content-length");
    if (length_text.empty() || length_text.size() > 12 ||
        length_text.find_first_not_of("0123456789") != std::string::npos) {
      return fail("bad Content-Length \"" + length_text + "\"");
    }
    body_length = std::stoull(length_text);
  }
  const size_t total = head_end + 4 + body_length;
  while (buffer_.size() < total) {
    if (!Fill(deadline)) return fail(error_ + " before the end of the body");
  }
  response.body = buffer_.substr(head_end + 4, body_length);
  buffer_.erase(0, total);
  response.status = status;
  return response;
}

std::vector<HttpResponse> HttpClient::ReadResponses(size_t count, Millis timeout) {
  std::vector<HttpResponse> responses;
  const auto deadline = Clock::now() + timeout;
  for (size_t i = 0; i < count; ++i) {
    const auto left =
        std::max(Millis(0), std::chrono::duration_cast<Millis>(deadline - Clock::now()));
    responses.push_back(ReadResponse(left));
    if (!responses.back().ok()) break;
  }
  return responses;
}

HttpResponse HttpClient::Request(std::string_view method, std::string_view target,
                                 const Headers& headers, std::string_view body, Millis timeout) {
  if (!Send(BuildRequest(method, target, headers, body), timeout)) {
    HttpResponse failed;
    failed.error = error_;
    return failed;
  }
  return ReadResponse(timeout, method == "HEAD");
}

HttpClient::CloseState HttpClient::WaitClosed(Millis timeout, std::string* data) {
  if (!buffer_.empty()) {
    if (data != nullptr) *data += buffer_;
    return CloseState::kData;
  }
  if (eof_) return CloseState::kClosed;
  const auto deadline = Clock::now() + timeout;
  while (true) {
    char chunk[4096];
    const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n > 0) {
      buffer_.append(chunk, static_cast<size_t>(n));
      if (data != nullptr) data->append(chunk, static_cast<size_t>(n));
      return CloseState::kData;
    }
    if (n == 0) {
      eof_ = true;
      return CloseState::kClosed;
    }
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) return CloseState::kReset;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return CloseState::kReset;
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, RemainingMs(deadline)) == 0) return CloseState::kOpen;
  }
}

HttpResponse Fetch(uint16_t port, std::string_view method, std::string_view target,
                   const Headers& headers, std::string_view body, std::string_view source_address,
                   Millis timeout) {
  HttpClient client(port, source_address, timeout);
  if (!client.connected()) {
    HttpResponse failed;
    failed.error = client.error();
    return failed;
  }
  return client.Request(method, target, headers, body, timeout);
}

// --- Prometheus -----------------------------------------------------------------------

std::optional<double> MetricValue(std::string_view text, std::string_view name,
                                  std::string_view labels) {
  const std::string prefix =
      labels.empty() ? fmt::format("{} ", name) : fmt::format("{}{{{}}} ", name, labels);
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(at, end - at);
    if (line.starts_with(prefix)) {
      const std::string value(line.substr(prefix.size()));
      char* parsed_end = nullptr;
      const double v = std::strtod(value.c_str(), &parsed_end);
      if (parsed_end == value.c_str()) return std::nullopt;
      return v;
    }
    at = end + 1;
  }
  return std::nullopt;
}

// --- RFC 9651 -------------------------------------------------------------------------

namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsLcAlpha(char c) { return c >= 'a' && c <= 'z'; }
bool IsAlpha(char c) { return IsLcAlpha(c) || (c >= 'A' && c <= 'Z'); }
bool IsTchar(char c) {
  return IsAlpha(c) || IsDigit(c) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// A recursive-descent parser over the field value, following RFC 9651 section 4.2.
class SfParser {
 public:
  explicit SfParser(std::string_view input) : in_(input), total_(input.size()) {}

  std::optional<std::vector<SfItem>> List(std::string* error) {
    std::vector<SfItem> members;
    while (in_.size() > 0 && in_.front() == ' ') in_.remove_prefix(1);  // leading SP
    while (!in_.empty()) {
      if (in_.front() == '(') return Fail(error, "inner lists are not expected here");
      SfItem item;
      if (!Item(item)) return Fail(error, error_);
      members.push_back(std::move(item));
      DiscardOws();
      if (in_.empty()) return members;
      if (in_.front() != ',') return Fail(error, "expected ',' between list members");
      in_.remove_prefix(1);
      DiscardOws();
      if (in_.empty()) return Fail(error, "trailing ',' at the end of the list");
    }
    return members;
  }

 private:
  std::optional<std::vector<SfItem>> Fail(std::string* error, std::string why) {
    if (error != nullptr) {
      *error = fmt::format("{} at offset {} (\"{}\")", why, consumed(), std::string(in_));
    }
    return std::nullopt;
  }
  size_t consumed() const { return total_ - in_.size(); }

  void DiscardOws() {
    while (!in_.empty() && (in_.front() == ' ' || in_.front() == '\t')) in_.remove_prefix(1);
  }

  bool Error(std::string why) {
    error_ = std::move(why);
    return false;
  }

  bool Item(SfItem& item) {
    if (!BareItem(item.value)) return false;
    return Parameters(item.parameters);
  }

  bool Parameters(std::vector<std::pair<std::string, SfBareItem>>& parameters) {
    while (!in_.empty() && in_.front() == ';') {
      in_.remove_prefix(1);
      while (!in_.empty() && in_.front() == ' ') in_.remove_prefix(1);
      std::string key;
      if (!Key(key)) return false;
      SfBareItem value;
      value.type = SfBareItem::Type::kBoolean;
      value.boolean = true;
      if (!in_.empty() && in_.front() == '=') {
        in_.remove_prefix(1);
        if (!BareItem(value)) return false;
      }
      for (const auto& [k, v] : parameters) {
        // RFC 9651 lets a later value win; no server of ours should ever repeat one.
        if (k == key) return Error("duplicate parameter \"" + key + "\"");
      }
      parameters.emplace_back(std::move(key), std::move(value));
    }
    return true;
  }

  bool Key(std::string& key) {
    if (in_.empty() || !(IsLcAlpha(in_.front()) || in_.front() == '*')) {
      return Error("a key must start with a lower-case letter or '*'");
    }
    while (!in_.empty()) {
      const char c = in_.front();
      if (!(IsLcAlpha(c) || IsDigit(c) || c == '_' || c == '-' || c == '.' || c == '*')) break;
      key += c;
      in_.remove_prefix(1);
    }
    return true;
  }

  bool BareItem(SfBareItem& value) {
    if (in_.empty()) return Error("expected an item, found the end");
    const char c = in_.front();
    if (c == '-' || IsDigit(c)) return Number(value);
    if (c == '"') return String(value);
    if (IsAlpha(c) || c == '*') return Token(value);
    if (c == ':') return ByteSequence(value);
    if (c == '?') return Boolean(value);
    return Error(fmt::format("unexpected '{}' where an item starts", c));
  }

  bool Number(SfBareItem& value) {
    bool negative = false;
    if (in_.front() == '-') {
      negative = true;
      in_.remove_prefix(1);
    }
    if (in_.empty() || !IsDigit(in_.front())) return Error("a number needs a digit");
    std::string digits;
    bool decimal = false;
    while (!in_.empty()) {
      const char c = in_.front();
      if (IsDigit(c)) {
        digits += c;
      } else if (c == '.' && !decimal) {
        if (digits.size() > 12) return Error("decimal integer part longer than 12 digits");
        digits += c;
        decimal = true;
      } else {
        break;
      }
      in_.remove_prefix(1);
      if (!decimal && digits.size() > 15) return Error("integer longer than 15 digits");
      if (decimal && digits.size() > 16) return Error("decimal longer than 16 characters");
    }
    if (!decimal) {
      value.type = SfBareItem::Type::kInteger;
      value.integer = std::stoll(digits) * (negative ? -1 : 1);
      return true;
    }
    if (digits.back() == '.') return Error("a decimal ends with a digit");
    if (digits.size() - digits.find('.') - 1 > 3) return Error("more than 3 fraction digits");
    value.type = SfBareItem::Type::kDecimal;
    value.decimal = std::stod(digits) * (negative ? -1 : 1);
    return true;
  }

  bool String(SfBareItem& value) {
    in_.remove_prefix(1);  // '"'
    value.type = SfBareItem::Type::kString;
    while (!in_.empty()) {
      const char c = in_.front();
      in_.remove_prefix(1);
      if (c == '\\') {
        if (in_.empty() || (in_.front() != '"' && in_.front() != '\\')) {
          return Error("a string escapes only '\"' and '\\'");
        }
        value.text += in_.front();
        in_.remove_prefix(1);
      } else if (c == '"') {
        return true;
      } else if (c < 0x20 || c > 0x7e) {
        return Error("control or non-ASCII byte in a string");
      } else {
        value.text += c;
      }
    }
    return Error("unterminated string");
  }

  bool Token(SfBareItem& value) {
    value.type = SfBareItem::Type::kToken;
    while (!in_.empty() && (IsTchar(in_.front()) || in_.front() == ':' || in_.front() == '/')) {
      value.text += in_.front();
      in_.remove_prefix(1);
    }
    return true;
  }

  bool ByteSequence(SfBareItem& value) {
    in_.remove_prefix(1);
    value.type = SfBareItem::Type::kByteSequence;
    const size_t end = in_.find(':');
    if (end == std::string_view::npos) return Error("unterminated byte sequence");
    for (char c : in_.substr(0, end)) {
      if (!(IsAlpha(c) || IsDigit(c) || c == '+' || c == '/' || c == '=')) {
        return Error("bad base64 in a byte sequence");
      }
    }
    value.text = std::string(in_.substr(0, end));
    in_.remove_prefix(end + 1);
    return true;
  }

  bool Boolean(SfBareItem& value) {
    in_.remove_prefix(1);
    if (in_.empty() || (in_.front() != '0' && in_.front() != '1')) {
      return Error("a boolean is ?0 or ?1");
    }
    value.type = SfBareItem::Type::kBoolean;
    value.boolean = in_.front() == '1';
    in_.remove_prefix(1);
    return true;
  }

  std::string_view in_;
  size_t total_;
  std::string error_;
};

}  // namespace

std::optional<std::vector<SfItem>> ParseSfList(std::string_view field, std::string* error) {
  // The field value as HTTP delivers it has no surrounding OWS; trailing SP is refused
  // by the list grammar like any other stray byte.
  return SfParser(field).List(error);
}

std::optional<std::vector<RateLimitEntry>> ParseRateLimitField(std::string_view field,
                                                               std::string* error) {
  std::string ignored;
  if (error == nullptr) error = &ignored;
  const std::optional<std::vector<SfItem>> list = ParseSfList(field, error);
  if (!list) return std::nullopt;
  std::vector<RateLimitEntry> entries;
  for (const SfItem& item : *list) {
    if (item.value.type != SfBareItem::Type::kString) {
      *error = "a member is not a string item";
      return std::nullopt;
    }
    RateLimitEntry entry;
    entry.policy = item.value.text;
    for (const auto& [key, value] : item.parameters) {
      if (value.type != SfBareItem::Type::kInteger) {
        *error = fmt::format("parameter {} of \"{}\" is not an integer", key, entry.policy);
        return std::nullopt;
      }
      entry.params[key] = value.integer;
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

}  // namespace sluice::integration
