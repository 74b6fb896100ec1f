// sluice_test_upstream (tests/upstream/test_upstream.cc) as a child process for tests:
// started with `--listen listen --name name`, its port read from the start-up line it
// prints ("listening 127.0.0.1:<port>"), killed by the destructor at the latest. stdout
// is on a pipe kept open while it runs; stderr is shared with the test, so its complaints
// show in the test output. The child gets SIGKILL if the test process dies
// (PR_SET_PDEATHSIG), so nothing outlives the suite.
//
// Compile upstream_process.cc into the test binary with SLUICE_TEST_UPSTREAM_BINARY
// defined as the path of sluice_test_upstream (see CMakeLists.txt).
#ifndef SLUICE_TESTS_UPSTREAM_UPSTREAM_PROCESS_H_
#define SLUICE_TESTS_UPSTREAM_UPSTREAM_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace sluice::testing {

class UpstreamProcess {
 public:
  static constexpr std::chrono::milliseconds kStartTimeout{5000};

  UpstreamProcess() = default;
  ~UpstreamProcess() { Kill(); }
  UpstreamProcess(const UpstreamProcess&) = delete;
  UpstreamProcess& operator=(const UpstreamProcess&) = delete;

  // Starts `--listen listen --name name` (after killing a running one) and waits for
  // the "listening" line. False with error() (and early_exit() if it exited) if none came.
  bool Start(const std::string& name, const std::string& listen = "127.0.0.1:0",
             std::chrono::milliseconds timeout = kStartTimeout);
  // Kills the running one and starts `name` on the same port.
  bool Restart(const std::string& name);

  // Sends `signal` and waits for the exit; the wait status, or empty if it did not exit
  // in time (then it is killed).
  std::optional<int> Stop(int signal, std::chrono::milliseconds timeout = kStartTimeout);
  // SIGKILL and reap: the kernel closes the upstream's sockets.
  void Kill();

  pid_t pid() const { return pid_; }
  // The wait status of a child that exited by itself while starting.
  std::optional<int> early_exit() const { return early_exit_; }
  uint16_t port() const { return port_; }
  // The start-up line, without its newline.
  const std::string& line() const { return line_; }
  const std::string& error() const { return error_; }

 private:
  void ReapExited(std::chrono::steady_clock::time_point deadline);
  bool Fail(std::string message);
  void Forget();

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  uint16_t port_ = 0;
  std::optional<int> early_exit_;
  std::string output_;
  std::string line_;
  std::string error_;
};

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_UPSTREAM_UPSTREAM_PROCESS_H_
