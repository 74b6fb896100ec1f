// An event loop on its own thread, for tests that drive loop-owned objects (connections,
// stores) from the test thread: Call hands the loop work and waits for its result;
// WaitFor polls a condition on the loop until it holds or a timeout passes.
#ifndef SLUICE_TESTS_TESTING_LOOP_THREAD_H_
#define SLUICE_TESTS_TESTING_LOOP_THREAD_H_

#include <chrono>
#include <functional>
#include <future>
#include <thread>
#include <type_traits>

#include "net/event_loop.h"
#include "sluice/clock.h"

namespace sluice::testing {

class LoopThread {
 public:
  // `wait_timeout` and `poll_interval` are WaitFor's defaults.
  explicit LoopThread(std::chrono::milliseconds wait_timeout = std::chrono::seconds(10),
                      std::chrono::milliseconds poll_interval = std::chrono::milliseconds(1))
      : wait_timeout_(wait_timeout),
        poll_interval_(poll_interval),
        thread_([this] { loop_.Run(); }) {}
  ~LoopThread() { Stop(); }
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;

  net::EventLoop& loop() { return loop_; }

  // Stops and joins the loop thread; the loop object stays for the teardown.
  void Stop() {
    if (!thread_.joinable()) return;
    loop_.Stop();
    thread_.join();
  }

  // Runs `f` on the loop and returns its result. REQUIRES: the loop is running.
  template <typename F>
  auto Call(F f) -> decltype(f()) {
    using R = decltype(f());
    std::promise<R> promise;
    std::future<R> future = promise.get_future();
    loop_.Post([&] {
      if constexpr (std::is_void_v<R>) {
        f();
        promise.set_value();
      } else {
        promise.set_value(f());
      }
    });
    return future.get();
  }

  // Evaluates `condition` on the loop every poll interval until it holds or `timeout`
  // passes (then once more).
  bool WaitFor(const std::function<bool()>& condition) { return WaitFor(condition, wait_timeout_); }
  bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (Call(condition)) return true;
      std::this_thread::sleep_for(poll_interval_);  // polling, bounded by the deadline
    }
    return Call(condition);
  }

 private:
  const std::chrono::milliseconds wait_timeout_;
  const std::chrono::milliseconds poll_interval_;
  SteadyClock clock_;
  net::EventLoop loop_{clock_};
  std::thread thread_;  // last: it starts running the loop once the rest is built
};

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_TESTING_LOOP_THREAD_H_
