// One worker's event loop: epoll readiness, one-shot timers, a queue of work posted
// from other threads, and the turn's socket calls run as one batch (io_batch.h).
// Modelled on Redis's ae: small, single-threaded, no allocation per event.
//
// Each loop turn reads the clock once (`now()`), so everything handled in one turn
// sees the same time, as the algorithms expect.
//
// Thread-safety: everything runs on the thread that calls Run(), except Post() and
// Stop(), which any thread may call.
#ifndef SLUICE_NET_EVENT_LOOP_H_
#define SLUICE_NET_EVENT_LOOP_H_

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

#include "net/io_batch.h"
#include "sluice/clock.h"

namespace sluice::net {

// Receives readiness for one file descriptor.
class IoHandler {
 public:
  // `events` is a mask of EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLRDHUP.
  virtual void OnIoEvent(uint32_t events) = 0;

  // Called for every ready descriptor of a turn before any OnIoEvent of that turn: a
  // handler that will read may queue its receive in `batch`, which runs before the
  // OnIoEvent calls (and then knows its result). Nothing else runs in between, so the
  // buffer given stays put.
  virtual void BeforeIoEvent(uint32_t events, IoBatch& batch) {}

 protected:
  ~IoHandler() = default;
};

// Output that waits for the end of the loop turn, so that what a turn produced for one
// socket goes out in one send, and the sends of all sockets in one batch.
class DeferredSender {
 public:
  // Queues the send of what is waiting (or nothing).
  virtual void QueueDeferredSend(IoBatch& batch) = 0;
  // After the batch ran (and told this sender its result): finishes the flush.
  virtual void FinishDeferredSend() = 0;

 protected:
  ~DeferredSender() = default;
};

class EventLoop {
 public:
  using TimerId = uint64_t;
  static constexpr TimerId kNoTimer = 0;

  explicit EventLoop(const Clock& clock);
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Registers `fd` for `events` (level-triggered). REQUIRES: handler outlives the
  // registration.
  void Add(int fd, uint32_t events, IoHandler* handler);
  void Modify(int fd, uint32_t events, IoHandler* handler);
  void Remove(int fd);

  // Runs `callback` once, on this loop, at or after `when`. Timers due in the same
  // turn run in order of their time, then of scheduling.
  TimerId RunAt(Timestamp when, std::function<void()> callback);
  void Cancel(TimerId id);

  // Runs `callback` on the loop thread soon. Safe from any thread.
  void Post(std::function<void()> callback);

  // Called once per loop turn, after events and timers: flushing buffered output,
  // checking connection deadlines. The loop wakes at least every `tick` so deadlines
  // kept outside the timer map are honoured within that precision.
  // Hooks run in the order they were added.
  void AddTurnHook(std::function<void()> hook) { turn_hooks_.push_back(std::move(hook)); }
  static constexpr Duration kTick = std::chrono::milliseconds(50);

  // Has `sender` flushed at the end of this turn (after the turn hooks). A sender asks
  // once a turn (it keeps its own flag: a second ask would flush it twice).
  // The sends are made with the next turn's wait for events, in the same system call
  // where the kernel allows (IoBatch::RunAndBeginEpollWait), and the senders finish
  // before that wait blocks; otherwise they are made and finished at the turn's end.
  // A finish runs after the next wait may already have its events, so a handler that
  // a finish closes may still be named in them: handlers are freed after the turn's
  // events (a turn hook, a timer due now), never in a finish.
  // REQUIRES: `sender` stays alive or calls CancelSendAtTurnEnd.
  void SendAtTurnEnd(DeferredSender* sender);
  void CancelSendAtTurnEnd(DeferredSender* sender);
  // Flushes the senders waiting now, at once (a turn hook that needs the output out
  // before it looks at the connections).
  void RunDeferredSends();

  // Runs until Stop(); returns after the turn in which Stop() was seen. A loop runs
  // once: after Stop() it does not start again.
  void Run();
  void Stop();  // Safe from any thread.

  // The time read at the start of this turn.
  Timestamp now() const { return now_; }
  // Reads the clock again (for latency measurement within a turn).
  Timestamp ReadClock() const { return clock_.Now(); }

 private:
  void DrainPosted();
  void RunDueTimers();
  int PollTimeoutMs() const;
  // The turn's wait: makes the sends queued at the previous turn's end (in the same
  // enter when it can), finishes their senders, then waits. Returns the events.
  int WaitForEvents(epoll_event* events, int max_events);
  void FinishQueuedSenders();

  const Clock& clock_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: Post and Stop wake a blocked epoll_wait
  Timestamp now_{};
  bool stopping_ = false;
  TimerId next_timer_id_ = 1;
  // (deadline, id) -> callback; id keeps equal deadlines in scheduling order.
  std::map<std::pair<int64_t, TimerId>, std::function<void()>> timers_;
  std::map<TimerId, int64_t> timer_deadlines_;
  std::vector<std::function<void()>> turn_hooks_;
  IoBatch batch_;
  std::vector<DeferredSender*> send_soon_;
  std::vector<DeferredSender*> sending_;  // the round RunDeferredSends is flushing
  // Queued in batch_ at the end of the turn, to go with the next wait.
  std::vector<DeferredSender*> queued_senders_;

  std::mutex posted_mutex_;
  std::vector<std::function<void()>> posted_;  // guarded by posted_mutex_
  bool stop_requested_ = false;                // guarded by posted_mutex_
};

}  // namespace sluice::net

#endif  // SLUICE_NET_EVENT_LOOP_H_
