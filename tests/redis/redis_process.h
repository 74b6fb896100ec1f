// Real redis-server processes for the Redis store's tests: never a mock.
//
// RedisProcess runs one `redis-server` as a child of the test (fork + exec, no shell) on
// 127.0.0.1 and a free port, with its own temporary directory, no persistence, and its
// stdout and stderr in a log file there. Tests stop it, kill it, freeze it (SIGSTOP) and
// bring it back on the same port, to see what the store does when a node fails and returns.
// RedisCluster starts N such processes as cluster nodes, joins them with
// `redis-cli --cluster create`, and moves slots between them for MOVED/ASK tests.
// RedisClient is a small blocking hiredis connection for the tests' own checks.
//
// Nothing here waits without a bound: starting waits for PING at most `start_timeout`,
// stopping escalates to SIGKILL after `stop_timeout`, every client call has a timeout,
// and cluster formation and slot moves have deadlines. Waits are polls of a condition
// every few milliseconds, never a sleep standing in for one.
//
// A child redis-server gets PR_SET_PDEATHSIG(SIGKILL): it dies when the thread that
// started it exits, so a crashed test leaves no server behind. Hence start processes
// from the test's own thread, not from a short-lived helper thread.
//
// The first RedisClient ignores SIGPIPE for the whole test process: hiredis 0.14 write()s
// to its socket, and a write to a connection that a killed server reset would otherwise
// end the test with SIGPIPE instead of an error reply.
//
// Thread-safety: an object belongs to one thread at a time; distinct objects (say, one
// RedisClient per load thread, while the test thread stops and restarts the
// RedisProcess) may be used from distinct threads.
#ifndef SLUICE_TESTS_REDIS_REDIS_PROCESS_H_
#define SLUICE_TESTS_REDIS_REDIS_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

struct redisContext;

namespace sluice::testing {

using Millis = std::chrono::milliseconds;

inline constexpr char kRedisHost[] = "127.0.0.1";

// --- Client ---------------------------------------------------------------------------

// One reply, copied out of hiredis (RESP2: hiredis 0.14 knows no RESP3 types).
struct RedisReply {
  enum class Type {
    kString,
    kStatus,  // +OK
    kError,   // -ERR ..., -MOVED ..., -ASK ... (the server answered)
    kInteger,
    kNil,
    kArray,
    kIoError,  // no answer: timeout, reset, refused, not connected (see `text`)
  };
  Type type = Type::kIoError;
  std::string text;  // string, status or error text; the I/O error's description
  long long integer = 0;
  std::vector<RedisReply> elements;
  bool timed_out = false;  // kIoError because the command timeout passed

  bool is_io_error() const { return type == Type::kIoError; }
  bool is_error() const { return type == Type::kError; }
  bool is_nil() const { return type == Type::kNil; }
  // A string, status or error reply whose text is `s`.
  bool Is(std::string_view s) const {
    return (type == Type::kString || type == Type::kStatus || type == Type::kError) && text == s;
  }
  // The error text starts with `prefix` ("MOVED", "ASK", "NOSCRIPT").
  bool IsErrorStartingWith(std::string_view prefix) const {
    return type == Type::kError && std::string_view(text).substr(0, prefix.size()) == prefix;
  }
  // The whole reply in a readable form, for failure messages.
  std::string ToString() const;
};

// A blocking connection to one Redis server.
//
// Once a command fails with an I/O error (timeout, reset) the connection is closed, as
// hiredis cannot resynchronise a blocking context; later commands return kIoError until
// Reconnect(). Replies of the server (including -ERR, -MOVED) leave it usable.
class RedisClient {
 public:
  static constexpr Millis kDefaultTimeout{2000};

  // Connects to host:port within `connect_timeout`; each command then waits at most
  // `command_timeout` for its reply. Check connected() and error().
  RedisClient(std::string host, int port, Millis connect_timeout = kDefaultTimeout,
              Millis command_timeout = kDefaultTimeout);
  explicit RedisClient(int port, Millis timeout = kDefaultTimeout)
      : RedisClient(kRedisHost, port, timeout, timeout) {}
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  bool connected() const { return context_ != nullptr; }
  // Why the connection failed or was closed.
  const std::string& error() const { return error_; }
  int port() const { return port_; }
  // Closes the connection (if open) and connects again with the same timeouts.
  bool Reconnect();

  // Sends one command and waits for its reply. Arguments are strings or integers.
  template <typename... Args>
  RedisReply Command(const Args&... args) {
    return CommandArgv({ToArg(args)...});
  }
  RedisReply CommandArgv(const std::vector<std::string>& args);

 private:
  template <typename T>
  static std::string ToArg(const T& value) {
    if constexpr (std::is_integral_v<T>) {
      return std::to_string(value);
    } else {
      return std::string(std::string_view(value));
    }
  }
  void Close();

  std::string host_;
  int port_ = 0;
  Millis connect_timeout_;
  Millis command_timeout_;
  redisContext* context_ = nullptr;
  std::string error_;
};

// --- One server -----------------------------------------------------------------------

struct RedisProcessOptions {
  // Appended to the harness's own redis-server arguments ("--maxmemory", "10mb"); a later
  // option overrides an earlier one.
  std::vector<std::string> extra_args;
  // Run as a cluster node: --cluster-enabled yes, --cluster-config-file <dir>/nodes.conf,
  // --cluster-node-timeout, and the cluster bus on a free port of its own
  // (--cluster-port), since the default PORT+10000 is past 65535 for half the ephemeral
  // range.
  bool cluster_enabled = false;
  int cluster_node_timeout_ms = 2000;
  Millis start_timeout{5000};  // spawn until PING answers PONG
  Millis stop_timeout{3000};   // SIGTERM until SIGKILL
};

// One redis-server child process. Not copyable or movable (the child is tied to it).
class RedisProcess {
 public:
  explicit RedisProcess(RedisProcessOptions options = {});
  // Stops the server (as Stop()) and removes its directory.
  ~RedisProcess();
  RedisProcess(const RedisProcess&) = delete;
  RedisProcess& operator=(const RedisProcess&) = delete;

  // Starts redis-server and waits until PING answers PONG. The first successful Start()
  // picks the port (and bus port): a port the kernel hands out for 127.0.0.1:0, tried
  // again with another one when the server fails to bind it. Later calls (after Stop,
  // Kill, or a crash) reuse the same ports and directory, so clients reconnect to the
  // same address; the data is gone (no RDB, no AOF), but a cluster node keeps its
  // nodes.conf and so its identity and slots. False with error() when it did not start.
  // REQUIRES: not running.
  bool Start();
  // SIGTERM (and SIGCONT, were it paused), then SIGKILL after stop_timeout; reaps it.
  // True when it is not running afterwards, including when it was not running.
  bool Stop();
  // SIGKILL and reap: a crash, with no shutdown work.
  bool Kill();
  // SIGSTOP / SIGCONT: a hung node. Connections stay open and the kernel still accepts
  // new ones into the listen backlog, but nothing is answered until Resume().
  bool Pause();
  bool Resume();

  // Whether the child is alive (reaps it if it died by itself). Non-const for that.
  bool running();
  bool paused() const { return paused_; }
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  int cluster_bus_port() const { return bus_port_; }
  std::string address() const;  // "127.0.0.1:PORT"
  const std::string& dir() const { return dir_; }
  std::string log_path() const;
  // Everything the server printed, over all its starts (the harness marks each start).
  std::string Log() const;
  const std::string& error() const { return error_; }
  // How the last run ended ("exited with status 0", "killed by signal 9"), for messages.
  const std::string& last_exit() const { return last_exit_; }

 private:
  enum class Launch { kReady, kExited, kTimedOut, kSpawnFailed };
  Launch LaunchOnce(std::chrono::steady_clock::time_point deadline, size_t* log_offset);
  bool WaitForExit(Millis timeout);
  std::vector<std::string> Arguments() const;

  RedisProcessOptions options_;
  std::string dir_;
  int port_ = 0;
  int bus_port_ = 0;
  bool ports_fixed_ = false;  // set by the first successful Start()
  pid_t pid_ = -1;
  bool paused_ = false;
  int starts_ = 0;
  std::string error_;
  std::string last_exit_;
};

// --- Cluster --------------------------------------------------------------------------

// The hash slot of `key` as Redis Cluster computes it (CRC16/XMODEM of the key, or of
// the first non-empty {hash tag}, modulo 16384). An implementation independent of the
// store's, so a test can check one against the other and both against CLUSTER KEYSLOT.
int KeyHashSlot(std::string_view key);
// The first "<prefix>N" (N = 0, 1, ...) whose slot is `slot`; empty if `slot` is not in
// [0, 16384).
std::string KeyInSlot(int slot, std::string_view prefix = "key:");

struct RedisClusterOptions {
  int primaries = 3;
  int replicas_per_primary = 0;
  int node_timeout_ms = 2000;
  std::vector<std::string> extra_args;  // for every node
  Millis form_timeout{15000};           // redis-cli --cluster create until all nodes ok
};

// A Redis Cluster of primaries (and optionally replicas) on loopback.
class RedisCluster {
 public:
  static constexpr int kSlots = 16384;

  explicit RedisCluster(RedisClusterOptions options = {});
  ~RedisCluster();
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  // Starts the nodes, runs `redis-cli --cluster create ... --cluster-yes`, and waits
  // until every node reports cluster_state:ok with all 16384 slots ok and every replica
  // has its link to its primary up. False with error() otherwise.
  bool Start();
  const std::string& error() const { return error_; }

  size_t size() const { return nodes_.size(); }
  RedisProcess& node(size_t i) { return *nodes_[i]; }
  // "127.0.0.1:PORT" of every node, in node order (seed addresses for a store).
  std::vector<std::string> Addresses() const;
  // The node's cluster id (CLUSTER MYID, read once the cluster formed).
  const std::string& NodeId(size_t i) const { return node_ids_[i]; }
  bool IsPrimary(size_t i) const { return is_primary_[i]; }
  std::vector<size_t> Primaries() const;
  // The index of the node whose port is `port`, if any.
  std::optional<size_t> IndexOfPort(int port) const;

  // Polls every running node until each reports cluster_state:ok, all slots assigned
  // and ok, and (replicas) master_link_status:up.
  bool WaitUntilHealthy(Millis timeout);
  // The primary serving `slot` as node `seen_by` tells it (CLUSTER SLOTS); empty when
  // that node cannot say.
  std::optional<size_t> PrimaryForSlot(int slot, size_t seen_by);
  // As seen by the first running node.
  std::optional<size_t> PrimaryForSlot(int slot);

  // Moving one slot, in the steps of the Redis Cluster specification, so a test can
  // look in between (ASK while keys are moving, MOVED after):
  // 1. CLUSTER SETSLOT slot IMPORTING <from> on `to`, then MIGRATING <to> on `from`.
  bool BeginSlotMigration(int slot, size_t from, size_t to);
  // 2. MIGRATE every key of the slot from `from` to `to`.
  bool MigrateSlotKeys(int slot, size_t from, size_t to);
  // 3. CLUSTER SETSLOT slot NODE <to> on `to`, `from` and the other primaries, then
  //    wait until every running node sees `to` as the slot's owner.
  bool FinishSlotMigration(int slot, size_t from, size_t to);
  // All three.
  bool MigrateSlot(int slot, size_t from, size_t to);

 private:
  bool Fail(std::string message);

  RedisClusterOptions options_;
  std::vector<std::unique_ptr<RedisProcess>> nodes_;
  std::vector<std::string> node_ids_;
  std::vector<bool> is_primary_;
  std::string error_;
};

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_REDIS_REDIS_PROCESS_H_
