#include "redis/redis_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

namespace sluice::testing {
namespace {

using SteadyClock = std::chrono::steady_clock;

// How often a bounded wait looks at its condition again.
constexpr Millis kPollInterval{5};
// Ports tried by a first Start() when redis-server cannot bind the one it was given.
constexpr int kPortAttempts = 5;
// How long a health probe waits for one node, so one hung node cannot eat a whole wait.
constexpr Millis kProbeTimeout{200};

Millis Remaining(SteadyClock::time_point deadline) {
  const auto left = std::chrono::duration_cast<Millis>(deadline - SteadyClock::now());
  return std::max(left, Millis(0));
}

// Polls `condition` until it holds or `deadline` passes; true when it held.
bool PollUntil(SteadyClock::time_point deadline, const std::function<bool()>& condition) {
  while (true) {
    if (condition()) return true;
    if (SteadyClock::now() >= deadline) return false;
    std::this_thread::sleep_for(kPollInterval);  // polling a condition, bounded above
  }
}

timeval ToTimeval(Millis ms) {
  // hiredis reads a zero timeval as "no timeout": never hand it one.
  const int64_t total = std::max<int64_t>(ms.count(), 1);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(total / 1000);
  tv.tv_usec = static_cast<suseconds_t>((total % 1000) * 1000);
  return tv;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return fmt::format("killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  }
  return fmt::format("wait status {:#x}", status);
}

std::string ReadFileFrom(const std::string& path, size_t offset = 0) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  in.seekg(static_cast<std::streamoff>(offset));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The last `max` bytes of a log, for failure messages.
std::string Tail(const std::string& text, size_t max = 3000) {
  if (text.size() <= max) return text;
  return "...\n" + text.substr(text.size() - max);
}

// `name` in a PATH directory, else /usr/bin/`name`. Resolved before fork, since execvp
// is not async-signal-safe.
std::string FindExecutable(const std::string& name) {
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::string_view dirs(path);
    while (!dirs.empty()) {
      const size_t colon = dirs.find(':');
      const std::string_view dir = dirs.substr(0, colon);
      dirs = colon == std::string_view::npos ? std::string_view() : dirs.substr(colon + 1);
      if (dir.empty()) continue;
      std::string candidate = std::string(dir) + "/" + name;
      if (access(candidate.c_str(), X_OK) == 0) return candidate;
    }
  }
  return "/usr/bin/" + name;
}

// `count` distinct ports free on 127.0.0.1 now: bound to port 0 together (so the kernel
// hands out distinct ones), read back, closed. Linux gives bind(0) ports of the other
// parity than the source ports of connect(), so the many client connections a test
// makes rarely take one of these between this call and the server's bind.
bool PickFreePorts(size_t count, std::vector<int>* ports, std::string* error) {
  std::vector<int> fds;
  ports->clear();
  bool ok = true;
  for (size_t i = 0; i < count && ok; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      *error = fmt::format("socket: {}", strerror(errno));
      ok = false;
      break;
    }
    fds.push_back(fd);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      *error = fmt::format("bind 127.0.0.1:0: {}", strerror(errno));
      ok = false;
      break;
    }
    ports->push_back(ntohs(addr.sin_port));
  }
  for (int fd : fds) close(fd);
  return ok;
}

// fork + exec of `path` with `args`: stdin from /dev/null, stdout and stderr appended to
// `out_fd`, no other descriptor inherited, default signal handling, and SIGKILL when
// the parent (thread) dies. Only async-signal-safe calls between fork and exec, as the
// test may run other threads.
pid_t SpawnChild(const std::string& path, const std::vector<std::string>& args, int out_fd,
                 std::string* error) {
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    *error = fmt::format("open /dev/null: {}", strerror(errno));
    return -1;
  }
  std::vector<std::string> argv_strings;
  argv_strings.push_back(path);
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  rlimit files{};
  const int max_fd = getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY
                         ? static_cast<int>(std::min<rlim_t>(files.rlim_cur, 65536))
                         : 65536;
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the parent died before prctl took effect
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
    }
    dup2(null_fd, STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(out_fd, STDERR_FILENO);
    // The test's own sockets (hiredis connections, listeners) must not live on in the
    // server: a connection the test closes would otherwise never reach EOF.
    if (close_range(3, ~0U, 0) != 0) {
      for (int fd = 3; fd < max_fd; ++fd) close(fd);
    }
    execv(argv[0], argv.data());
    static constexpr char kMessage[] = "sluice test harness: execv failed\n";
    [[maybe_unused]] const ssize_t ignored = write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
    _exit(127);
  }
  const int saved_errno = errno;
  close(null_fd);
  if (pid < 0) *error = fmt::format("fork: {}", strerror(saved_errno));
  return pid;
}

// The state letter of /proc/<pid>/stat ('R', 'S', 'T' for stopped, ...), or 0.
char ProcessState(pid_t pid) {
  const std::string stat = ReadFileFrom(fmt::format("/proc/{}/stat", pid));
  const size_t paren = stat.rfind(')');  // the command name may hold spaces and parens
  if (paren == std::string::npos || paren + 2 >= stat.size()) return 0;
  return stat[paren + 2];
}

void IgnoreSigpipeOnce() {
  static const bool ignored = [] {
    signal(SIGPIPE, SIG_IGN);
    return true;
  }();
  (void)ignored;
}

RedisReply CopyReply(const redisReply* reply) {
  RedisReply out;
  switch (reply->type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.text.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.text.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::kError;
      out.text.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = reply->integer;
      break;
    case REDIS_REPLY_NIL:
      out.type = RedisReply::Type::kNil;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      out.elements.reserve(reply->elements);
      for (size_t i = 0; i < reply->elements; ++i) {
        out.elements.push_back(CopyReply(reply->element[i]));
      }
      break;
    default:
      out.type = RedisReply::Type::kIoError;
      out.text = fmt::format("unknown hiredis reply type {}", reply->type);
  }
  return out;
}

// "key:value" lines (INFO, CLUSTER INFO) as a map.
std::map<std::string, std::string, std::less<>> ParseInfo(std::string_view text) {
  std::map<std::string, std::string, std::less<>> fields;
  while (!text.empty()) {
    const size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const size_t colon = line.find(':');
    if (line.empty() || line[0] == '#' || colon == std::string_view::npos) continue;
    fields.emplace(line.substr(0, colon), line.substr(colon + 1));
  }
  return fields;
}

std::string Field(const std::map<std::string, std::string, std::less<>>& fields,
                  std::string_view name) {
  const auto it = fields.find(name);
  return it == fields.end() ? std::string("(absent)") : it->second;
}

uint16_t Crc16Xmodem(std::string_view data) {
  uint16_t crc = 0;
  for (const unsigned char c : data) {
    crc ^= static_cast<uint16_t>(c << 8);
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021)
                           : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc;
}

}  // namespace

// --- RedisReply / RedisClient ---------------------------------------------------------

std::string RedisReply::ToString() const {
  switch (type) {
    case Type::kString:
      return fmt::format("\"{}\"", text);
    case Type::kStatus:
      return text;
    case Type::kError:
      return "(error) " + text;
    case Type::kInteger:
      return fmt::format("(integer) {}", integer);
    case Type::kNil:
      return "(nil)";
    case Type::kArray: {
      std::string out = "[";
      for (size_t i = 0; i < elements.size(); ++i) {
        if (i > 0) out += ", ";
        out += elements[i].ToString();
      }
      return out + "]";
    }
    case Type::kIoError:
      return "(io error) " + text;
  }
  return "?";
}

RedisClient::RedisClient(std::string host, int port, Millis connect_timeout, Millis command_timeout)
    : host_(std::move(host)),
      port_(port),
      connect_timeout_(connect_timeout),
      command_timeout_(command_timeout) {
  IgnoreSigpipeOnce();
  Reconnect();
}

RedisClient::~RedisClient() { Close(); }

void RedisClient::Close() {
  if (context_ != nullptr) redisFree(context_);
  context_ = nullptr;
}

bool RedisClient::Reconnect() {
  Close();
  redisContext* c = redisConnectWithTimeout(host_.c_str(), port_, ToTimeval(connect_timeout_));
  if (c == nullptr) {
    error_ = "cannot allocate a hiredis context";
    return false;
  }
  if (c->err != 0) {
    error_ = fmt::format("connect to {}:{}: {}", host_, port_, c->errstr);
    redisFree(c);
    return false;
  }
  // hiredis 0.14 applies the connect timeout to connect() only; replies need their own.
  if (redisSetTimeout(c, ToTimeval(command_timeout_)) != REDIS_OK) {
    error_ = fmt::format("set timeout on {}:{}: {}", host_, port_, c->errstr);
    redisFree(c);
    return false;
  }
  context_ = c;
  error_.clear();
  return true;
}

RedisReply RedisClient::CommandArgv(const std::vector<std::string>& args) {
  RedisReply result;
  if (context_ == nullptr) {
    result.text = "not connected: " + error_;
    return result;
  }
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (const std::string& arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  errno = 0;
  void* raw =
      redisCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data());
  if (raw == nullptr) {
    const int saved_errno = errno;
    // hiredis 0.14 reports an expired SO_RCVTIMEO as the read's EAGAIN.
    result.timed_out =
        context_->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK ||
                                          std::string_view(context_->errstr) == strerror(EAGAIN));
    result.text = result.timed_out ? fmt::format("no reply within {} ms ({})",
                                                 command_timeout_.count(), context_->errstr)
                                   : std::string(context_->errstr);
    error_ = result.text;
    Close();
    return result;
  }
  result = CopyReply(static_cast<redisReply*>(raw));
  freeReplyObject(raw);
  return result;
}

// --- RedisProcess ---------------------------------------------------------------------

RedisProcess::RedisProcess(RedisProcessOptions options) : options_(std::move(options)) {}

RedisProcess::~RedisProcess() {
  Stop();
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

std::string RedisProcess::address() const { return fmt::format("{}:{}", kRedisHost, port_); }

std::string RedisProcess::log_path() const { return dir_ + "/redis.log"; }

std::string RedisProcess::Log() const { return dir_.empty() ? "" : ReadFileFrom(log_path()); }

std::vector<std::string> RedisProcess::Arguments() const {
  std::vector<std::string> args;
  auto option = [&args](std::string name, std::string value) {
    args.push_back(std::move(name));
    args.push_back(std::move(value));
  };
  option("--port", std::to_string(port_));
  option("--bind", kRedisHost);
  option("--dir", dir_);
  option("--save", "");  // no RDB snapshots, not even at shutdown
  option("--appendonly", "no");
  option("--protected-mode", "no");
  option("--daemonize", "no");  // stay our child, so signals and waitpid reach it
  // A replica's first sync would otherwise wait 5 s for more replicas to share the
  // diskless transfer.
  option("--repl-diskless-sync-delay", "0");
  if (options_.cluster_enabled) {
    option("--cluster-enabled", "yes");
    option("--cluster-config-file", dir_ + "/nodes.conf");
    option("--cluster-node-timeout", std::to_string(options_.cluster_node_timeout_ms));
    option("--cluster-port", std::to_string(bus_port_));
  }
  args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
  return args;
}

bool RedisProcess::Start() {
  if (running()) {
    error_ = fmt::format("redis-server on {} is already running (pid {})", address(), pid_);
    return false;
  }
  if (dir_.empty()) {
    std::string pattern = (std::filesystem::temp_directory_path() / "sluice-redis-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      error_ = fmt::format("mkdtemp {}: {}", pattern, strerror(errno));
      return false;
    }
    dir_ = pattern;
  }
  const auto deadline = SteadyClock::now() + options_.start_timeout;
  const int attempts = ports_fixed_ ? 1 : kPortAttempts;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    if (!ports_fixed_) {
      std::vector<int> ports;
      if (!PickFreePorts(options_.cluster_enabled ? 2 : 1, &ports, &error_)) return false;
      port_ = ports[0];
      bus_port_ = options_.cluster_enabled ? ports[1] : 0;
    }
    size_t log_offset = 0;
    const Launch launch = LaunchOnce(deadline, &log_offset);
    if (launch == Launch::kReady) {
      ports_fixed_ = true;
      error_.clear();
      return true;
    }
    if (launch == Launch::kSpawnFailed) return false;
    const std::string log = ReadFileFrom(log_path(), log_offset);
    // Another process took the port between PickFreePorts and the server's bind.
    const bool port_taken = log.find("Address already in use") != std::string::npos;
    if (launch == Launch::kExited && port_taken && !ports_fixed_ && attempt < attempts) continue;
    error_ = fmt::format("redis-server on {} {}; its output:\n{}", address(),
                         launch == Launch::kExited
                             ? "exited (" + last_exit_ + ") before answering PING"
                             : fmt::format("did not answer PING within {} ms (killed)",
                                           options_.start_timeout.count()),
                         Tail(log));
    return false;
  }
  return false;  // not reached: the last attempt returns
}

RedisProcess::Launch RedisProcess::LaunchOnce(SteadyClock::time_point deadline,
                                              size_t* log_offset) {
  const int log_fd = open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    error_ = fmt::format("open {}: {}", log_path(), strerror(errno));
    return Launch::kSpawnFailed;
  }
  ++starts_;
  const std::string marker = fmt::format(
      "--- sluice test harness: start #{} of redis-server on {} ---\n", starts_, address());
  [[maybe_unused]] const ssize_t written = write(log_fd, marker.data(), marker.size());
  const off_t end = lseek(log_fd, 0, SEEK_END);
  *log_offset = end > 0 ? static_cast<size_t>(end) : 0;
  pid_ = SpawnChild(FindExecutable("redis-server"), Arguments(), log_fd, &error_);
  close(log_fd);
  if (pid_ < 0) return Launch::kSpawnFailed;
  paused_ = false;

  const pid_t child = pid_;
  Launch outcome = Launch::kTimedOut;
  PollUntil(deadline, [&] {
    if (!running()) {
      outcome = Launch::kExited;
      return true;
    }
    const Millis timeout = std::clamp(Remaining(deadline), Millis(10), kProbeTimeout);
    RedisClient client(kRedisHost, port_, timeout, timeout);
    if (!client.connected() || !client.Command("PING").Is("PONG")) return false;
    // The PONG must come from our child, not from a server that took the port first
    // (our child then fails to bind and exits, but may not have yet).
    const RedisReply info = client.Command("INFO", "server");
    if (info.type != RedisReply::Type::kString) return false;
    if (Field(ParseInfo(info.text), "process_id") != std::to_string(child)) return false;
    outcome = Launch::kReady;
    return true;
  });
  if (outcome == Launch::kTimedOut) Kill();
  return outcome;
}

bool RedisProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == 0) return true;
  last_exit_ = r == pid_ ? DescribeWaitStatus(status) : "gone (not our child any more)";
  pid_ = -1;
  paused_ = false;
  return false;
}

bool RedisProcess::WaitForExit(Millis timeout) {
  return PollUntil(SteadyClock::now() + timeout, [this] { return !running(); });
}

bool RedisProcess::Stop() {
  if (!running()) return true;
  kill(pid_, SIGTERM);
  // A stopped process keeps SIGTERM pending until it runs again.
  if (paused_) kill(pid_, SIGCONT);
  paused_ = false;
  if (WaitForExit(options_.stop_timeout)) return true;
  return Kill();
}

bool RedisProcess::Kill() {
  if (!running()) return true;
  kill(pid_, SIGKILL);
  if (WaitForExit(Millis(5000))) return true;
  error_ = fmt::format("redis-server pid {} did not exit after SIGKILL", pid_);
  return false;
}

bool RedisProcess::Pause() {
  if (!running()) {
    error_ = "Pause: redis-server is not running";
    return false;
  }
  kill(pid_, SIGSTOP);
  // kill() only queues the signal: wait until the process is really stopped, so the
  // next command a test sends is certain to go unanswered.
  const bool stopped =
      PollUntil(SteadyClock::now() + Millis(2000), [this] { return ProcessState(pid_) == 'T'; });
  paused_ = true;
  if (!stopped) error_ = fmt::format("Pause: pid {} did not stop", pid_);
  return stopped;
}

bool RedisProcess::Resume() {
  if (!running()) {
    error_ = "Resume: redis-server is not running";
    return false;
  }
  kill(pid_, SIGCONT);
  paused_ = false;
  const bool resumed =
      PollUntil(SteadyClock::now() + Millis(2000), [this] { return ProcessState(pid_) != 'T'; });
  if (!resumed) error_ = fmt::format("Resume: pid {} is still stopped", pid_);
  return resumed;
}

// --- Cluster --------------------------------------------------------------------------

int KeyHashSlot(std::string_view key) {
  const size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close != open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return Crc16Xmodem(key) & (RedisCluster::kSlots - 1);
}

std::string KeyInSlot(int slot, std::string_view prefix) {
  // Every slot turns up within some 10^5 candidates; the bound only keeps a bad `slot`
  // from spinning forever.
  for (int n = 0; n < 10'000'000; ++n) {
    std::string key = fmt::format("{}{}", prefix, n);
    if (KeyHashSlot(key) == slot) return key;
  }
  return {};
}

RedisCluster::RedisCluster(RedisClusterOptions options) : options_(std::move(options)) {}

RedisCluster::~RedisCluster() {
  // A throwaway cluster needs no orderly shutdown; SIGKILL spares waiting up to 100 ms
  // per node for the serverCron that acts on SIGTERM.
  for (auto& node : nodes_) node->Kill();
}

bool RedisCluster::Fail(std::string message) {
  error_ = std::move(message);
  return false;
}

std::vector<std::string> RedisCluster::Addresses() const {
  std::vector<std::string> out;
  for (const auto& node : nodes_) out.push_back(node->address());
  return out;
}

std::vector<size_t> RedisCluster::Primaries() const {
  std::vector<size_t> out;
  for (size_t i = 0; i < is_primary_.size(); ++i) {
    if (is_primary_[i]) out.push_back(i);
  }
  return out;
}

std::optional<size_t> RedisCluster::IndexOfPort(int port) const {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i]->port() == port) return i;
  }
  return std::nullopt;
}

bool RedisCluster::Start() {
  if (!nodes_.empty()) return Fail("RedisCluster::Start called twice");
  if (options_.primaries < 3) return Fail("redis-cli --cluster create needs 3 primaries or more");
  const auto deadline = SteadyClock::now() + options_.form_timeout;
  const int total = options_.primaries * (1 + options_.replicas_per_primary);
  for (int i = 0; i < total; ++i) {
    RedisProcessOptions node_options;
    node_options.cluster_enabled = true;
    node_options.cluster_node_timeout_ms = options_.node_timeout_ms;
    node_options.extra_args = options_.extra_args;
    nodes_.push_back(std::make_unique<RedisProcess>(std::move(node_options)));
    if (!nodes_.back()->Start()) return Fail(fmt::format("node {}: {}", i, nodes_.back()->error()));
  }

  // redis-cli makes the first `primaries` addresses primaries (one host, so no
  // anti-affinity reordering) and the rest their replicas; ROLE below says for sure.
  std::vector<std::string> args = {"--cluster", "create"};
  for (const auto& node : nodes_) args.push_back(node->address());
  args.insert(args.end(), {"--cluster-replicas", std::to_string(options_.replicas_per_primary),
                           "--cluster-yes"});
  const std::string log_path = nodes_[0]->dir() + "/cluster-create.log";
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) return Fail(fmt::format("open {}: {}", log_path, strerror(errno)));
  std::string spawn_error;
  const pid_t cli = SpawnChild(FindExecutable("redis-cli"), args, log_fd, &spawn_error);
  close(log_fd);
  if (cli < 0) return Fail("redis-cli: " + spawn_error);
  int status = 0;
  const bool exited = PollUntil(deadline, [&] {
    const pid_t r = waitpid(cli, &status, WNOHANG);
    return r == cli || (r < 0 && errno != EINTR);
  });
  if (!exited) {
    kill(cli, SIGKILL);
    waitpid(cli, &status, 0);
    return Fail(fmt::format("redis-cli --cluster create did not finish in {} ms:\n{}",
                            options_.form_timeout.count(), Tail(ReadFileFrom(log_path))));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Fail(fmt::format("redis-cli --cluster create {}:\n{}", DescribeWaitStatus(status),
                            Tail(ReadFileFrom(log_path))));
  }

  if (!WaitUntilHealthy(Remaining(deadline))) return false;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    RedisClient client(nodes_[i]->port());
    const RedisReply id = client.Command("CLUSTER", "MYID");
    const RedisReply role = client.Command("ROLE");
    if (id.type != RedisReply::Type::kString || role.type != RedisReply::Type::kArray ||
        role.elements.empty()) {
      return Fail(
          fmt::format("node {}: CLUSTER MYID {}, ROLE {}", i, id.ToString(), role.ToString()));
    }
    node_ids_.push_back(id.text);
    is_primary_.push_back(role.elements[0].Is("master"));
  }
  return true;
}

bool RedisCluster::WaitUntilHealthy(Millis timeout) {
  std::string why = "not checked";
  const bool healthy = PollUntil(SteadyClock::now() + timeout, [&] {
    for (size_t i = 0; i < nodes_.size(); ++i) {
      RedisProcess& node = *nodes_[i];
      if (!node.running()) continue;
      RedisClient client(node.port(), kProbeTimeout);
      const RedisReply info = client.Command("CLUSTER", "INFO");
      if (info.type != RedisReply::Type::kString) {
        why = fmt::format("node {} ({}): CLUSTER INFO {}", i, node.address(), info.ToString());
        return false;
      }
      const auto fields = ParseInfo(info.text);
      const std::string all_slots = std::to_string(kSlots);
      if (Field(fields, "cluster_state") != "ok" ||
          Field(fields, "cluster_slots_assigned") != all_slots ||
          Field(fields, "cluster_slots_ok") != all_slots ||
          Field(fields, "cluster_known_nodes") != std::to_string(nodes_.size())) {
        why = fmt::format(
            "node {} ({}): cluster_state:{} slots_assigned:{} slots_ok:{} "
            "known_nodes:{}",
            i, node.address(), Field(fields, "cluster_state"),
            Field(fields, "cluster_slots_assigned"), Field(fields, "cluster_slots_ok"),
            Field(fields, "cluster_known_nodes"));
        return false;
      }
      const RedisReply replication = client.Command("INFO", "replication");
      const auto repl = ParseInfo(replication.text);
      if (Field(repl, "role") == "slave" && Field(repl, "master_link_status") != "up") {
        why = fmt::format("replica {} ({}): master_link_status:{}", i, node.address(),
                          Field(repl, "master_link_status"));
        return false;
      }
    }
    return true;
  });
  if (!healthy) {
    Fail(fmt::format("cluster not healthy within {} ms: {}", timeout.count(), why));
  }
  return healthy;
}

std::optional<size_t> RedisCluster::PrimaryForSlot(int slot, size_t seen_by) {
  RedisClient client(nodes_[seen_by]->port(), kProbeTimeout * 5);
  const RedisReply slots = client.Command("CLUSTER", "SLOTS");
  if (slots.type != RedisReply::Type::kArray) return std::nullopt;
  // Each entry: [first slot, last slot, [ip, port, id, ...] of the primary, replicas...]
  for (const RedisReply& range : slots.elements) {
    if (range.elements.size() < 3 || range.elements[2].elements.size() < 2) continue;
    if (range.elements[0].integer <= slot && slot <= range.elements[1].integer) {
      return IndexOfPort(static_cast<int>(range.elements[2].elements[1].integer));
    }
  }
  return std::nullopt;
}

std::optional<size_t> RedisCluster::PrimaryForSlot(int slot) {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i]->running()) return PrimaryForSlot(slot, i);
  }
  return std::nullopt;
}

bool RedisCluster::BeginSlotMigration(int slot, size_t from, size_t to) {
  RedisClient target(nodes_[to]->port());
  RedisClient source(nodes_[from]->port());
  // Importing first: from the moment the source says ASK, the target must accept.
  const RedisReply importing =
      target.Command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_ids_[from]);
  if (!importing.Is("OK")) {
    return Fail(fmt::format("SETSLOT {} IMPORTING on node {}: {}", slot, to, importing.ToString()));
  }
  const RedisReply migrating =
      source.Command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_ids_[to]);
  if (!migrating.Is("OK")) {
    return Fail(
        fmt::format("SETSLOT {} MIGRATING on node {}: {}", slot, from, migrating.ToString()));
  }
  return true;
}

bool RedisCluster::MigrateSlotKeys(int slot, size_t from, size_t to) {
  constexpr int kBatch = 100;
  constexpr Millis kMigrateTimeout{2000};
  RedisClient source(kRedisHost, nodes_[from]->port(), RedisClient::kDefaultTimeout,
                     kMigrateTimeout * 2);
  const auto deadline = SteadyClock::now() + Millis(10000);
  while (SteadyClock::now() < deadline) {
    const RedisReply keys = source.Command("CLUSTER", "GETKEYSINSLOT", slot, kBatch);
    if (keys.type != RedisReply::Type::kArray) {
      return Fail(fmt::format("GETKEYSINSLOT {} on node {}: {}", slot, from, keys.ToString()));
    }
    if (keys.elements.empty()) return true;
    std::vector<std::string> migrate = {
        "MIGRATE", kRedisHost, std::to_string(nodes_[to]->port()),
        "",        "0",        std::to_string(kMigrateTimeout.count()),
        "KEYS"};
    for (const RedisReply& key : keys.elements) migrate.push_back(key.text);
    const RedisReply moved = source.CommandArgv(migrate);
    if (!moved.Is("OK") && !moved.Is("NOKEY")) {
      return Fail(
          fmt::format("MIGRATE slot {} node {} -> {}: {}", slot, from, to, moved.ToString()));
    }
  }
  return Fail(fmt::format("slot {} still had keys on node {} after 10 s", slot, from));
}

bool RedisCluster::FinishSlotMigration(int slot, size_t from, size_t to) {
  // The target first, so it owns the slot (and bumps its epoch) before the source stops
  // redirecting with ASK; then everyone else, rather than waiting for gossip.
  std::vector<size_t> order = {to, from};
  for (size_t i : Primaries()) {
    if (i != to && i != from) order.push_back(i);
  }
  for (size_t i : order) {
    if (!nodes_[i]->running()) continue;
    RedisClient client(nodes_[i]->port());
    const RedisReply r = client.Command("CLUSTER", "SETSLOT", slot, "NODE", node_ids_[to]);
    if (!r.Is("OK")) {
      return Fail(fmt::format("SETSLOT {} NODE on node {}: {}", slot, i, r.ToString()));
    }
  }
  std::string why;
  const bool agreed = PollUntil(SteadyClock::now() + Millis(5000), [&] {
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (!nodes_[i]->running()) continue;
      const std::optional<size_t> owner = PrimaryForSlot(slot, i);
      if (owner != to) {
        why = fmt::format("node {} sees node {} as its owner", i,
                          owner ? std::to_string(*owner) : "none");
        return false;
      }
    }
    return true;
  });
  if (!agreed) return Fail(fmt::format("slot {} not on node {} everywhere: {}", slot, to, why));
  return true;
}

bool RedisCluster::MigrateSlot(int slot, size_t from, size_t to) {
  return BeginSlotMigration(slot, from, to) && MigrateSlotKeys(slot, from, to) &&
         FinishSlotMigration(slot, from, to);
}

}  // namespace sluice::testing
