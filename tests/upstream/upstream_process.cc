#include "upstream/upstream_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#ifndef SLUICE_TEST_UPSTREAM_BINARY
#error "SLUICE_TEST_UPSTREAM_BINARY must name the sluice_test_upstream binary"
#endif

namespace sluice::testing {
namespace {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

int RemainingMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left + 1, 60'000));
}

}  // namespace

bool UpstreamProcess::Start(const std::string& name, const std::string& listen, Millis timeout) {
  Kill();
  output_.clear();
  line_.clear();
  error_.clear();
  early_exit_.reset();
  port_ = 0;
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return Fail(std::string("pipe: ") + std::strerror(errno));
  std::vector<std::string> args = {SLUICE_TEST_UPSTREAM_BINARY, "--listen", listen, "--name", name};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  pid_ = fork();
  if (pid_ == 0) {
    // Only async-signal-safe calls from here to exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    dup2(null_fd, STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  if (pid_ < 0) {
    close(out[0]);
    return Fail(std::string("fork: ") + std::strerror(errno));
  }
  stdout_fd_ = out[0];

  const auto deadline = Clock::now() + timeout;
  while (output_.find('\n') == std::string::npos) {
    pollfd p{stdout_fd_, POLLIN, 0};
    const int ready = poll(&p, 1, RemainingMs(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return Fail("no start-up line within the timeout; got: " + output_);
    char buffer[256];
    const ssize_t got = read(stdout_fd_, buffer, sizeof(buffer));
    if (got <= 0) {
      ReapExited(deadline);
      return Fail("stdout closed before the start-up line; got: " + output_);
    }
    output_.append(buffer, static_cast<size_t>(got));
  }
  line_ = output_.substr(0, output_.find('\n'));
  const std::string prefix = "listening ";
  const size_t colon = line_.rfind(':');
  int port = 0;
  if (line_.rfind(prefix, 0) != 0 || colon == std::string::npos ||
      std::from_chars(line_.data() + colon + 1, line_.data() + line_.size(), port).ec !=
          std::errc() ||
      port <= 0 || port > 65535) {
    return Fail("unexpected start-up line: " + line_);
  }
  port_ = static_cast<uint16_t>(port);
  return true;
}

bool UpstreamProcess::Restart(const std::string& name) {
  const uint16_t port = port_;
  Kill();
  return Start(name, "127.0.0.1:" + std::to_string(port));
}

std::optional<int> UpstreamProcess::Stop(int signal, Millis timeout) {
  if (pid_ <= 0) return std::nullopt;
  kill(pid_, signal);
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      Forget();
      return status;
    }
    std::this_thread::sleep_for(Millis(2));  // polling for the exit, bounded above
  }
  Kill();
  return std::nullopt;
}

void UpstreamProcess::Kill() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  Forget();
}

// The child closed its stdout: it is exiting; reap it for its status.
void UpstreamProcess::ReapExited(Clock::time_point deadline) {
  while (true) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      early_exit_ = status;
      pid_ = -1;
      return;
    }
    if (Clock::now() >= deadline) return;
    std::this_thread::sleep_for(Millis(2));  // polling for the exit, bounded above
  }
}

bool UpstreamProcess::Fail(std::string message) {
  error_ = std::move(message);
  Kill();
  return false;
}

void UpstreamProcess::Forget() {
  if (stdout_fd_ >= 0) close(stdout_fd_);
  stdout_fd_ = -1;
  pid_ = -1;
}

}  // namespace sluice::testing
