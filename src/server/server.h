// The sluice process: worker threads with their listeners and connections, the
// admin listener, configuration reloads and signals.
//
// Workers are shared-nothing apart from the memory store: each has its own event loop,
// its own SO_REUSEPORT listener (the kernel spreads connections), its own metrics and
// scratch space. The current Policy is published under a mutex with a version number;
// a worker compares the version (one relaxed atomic load) before each request and
// copies the new pointer only when it changed, so reloads never stop the data path.
//
// Thread-safety: Start/Run from the main thread; Reload from any thread.
#ifndef SLUICE_SERVER_SERVER_H_
#define SLUICE_SERVER_SERVER_H_

#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "gate/gate.h"
#include "metrics/metrics.h"
#include "net/tls.h"
#include "rls/rls_service.h"
#include "store/memory_store.h"

namespace sluice::server {

class Worker;
class AdminServer;

// The access log's open file, shared by the workers that write to it; closed when the
// last one lets go after a reload moved the log elsewhere.
class LogFile {
 public:
  LogFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~LogFile();
  LogFile(const LogFile&) = delete;
  LogFile& operator=(const LogFile&) = delete;
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

 private:
  int fd_;
  std::string path_;
};

class Server {
 public:
  // `config_path` empty: the embedded quickstart (reloads re-read it).
  Server(std::shared_ptr<const config::Config> config, std::string config_path);
  ~Server();

  // Binds the listeners and starts the threads; returns an error message, or "".
  std::string Start();
  // Waits for SIGTERM/SIGINT (reloading on SIGHUP), then drains and stops. Returns the
  // process exit status. REQUIRES: Start() succeeded, and the signals are blocked in
  // every thread (BlockSignals() before Start()).
  int Run();
  static void BlockSignals();

  // Loads the config again and, when valid, switches every worker to it. Returns ""
  // or the errors, one per line. Settings that only a restart applies (listeners,
  // workers, store) keep their running values; the answer says so.
  std::string Reload();

  // For workers.
  uint64_t policy_version() const { return policy_version_.load(std::memory_order_acquire); }
  std::shared_ptr<const gate::Policy> policy() const;
  metrics::Registry& registry() { return registry_; }
  const config::Config& startup_config() const { return *startup_config_; }
  bool draining() const { return draining_.load(std::memory_order_relaxed); }
  std::atomic<int64_t>& connections() { return connections_; }
  // TLS on `listen`, or null.
  const net::TlsServerContext* tls() const { return tls_.get(); }
  // The access log of the current config, or null when it is off.
  std::shared_ptr<const LogFile> access_log() const;

 private:
  void Publish(std::shared_ptr<const config::Config> config);
  // The file for `config` (`current` again when the path is unchanged), null when off.
  static std::shared_ptr<const LogFile> OpenAccessLog(const config::AccessLogConfig& config,
                                                      std::shared_ptr<const LogFile> current,
                                                      std::string* error);

  std::string config_path_;
  std::shared_ptr<const config::Config> startup_config_;
  metrics::Registry registry_;
  std::unique_ptr<store::MemoryStore> store_;
  std::unique_ptr<net::TlsServerContext> tls_;

  mutable std::mutex policy_mutex_;
  std::shared_ptr<const gate::Policy> policy_;  // guarded by policy_mutex_
  std::atomic<uint64_t> policy_version_{0};
  std::mutex reload_mutex_;  // one reload at a time

  std::atomic<bool> draining_{false};
  std::atomic<int64_t> connections_{0};
  std::shared_ptr<const LogFile> access_log_;  // guarded by policy_mutex_

  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::unique_ptr<AdminServer> admin_;
  std::thread admin_thread_;

  // grpc_listen: Envoy's rate limit service on the envoy_ratelimit_configs limits. Its
  // own store: its counters run on wall-clock time (windows on the Unix epoch, as the
  // service's), and one store's expiry must not compare timestamps of two clocks.
  SystemClock rls_clock_;
  std::unique_ptr<store::MemoryStore> rls_store_;  // memory backend only
  std::unique_ptr<rls::RlsStoreAccess> rls_access_;
  std::unique_ptr<rls::RlsDecider> rls_decider_;
  std::unique_ptr<rls::RlsServer> rls_server_;
};

}  // namespace sluice::server

#endif  // SLUICE_SERVER_SERVER_H_
