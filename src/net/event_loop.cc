#include "net/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/check.h"

namespace sluice::net {
namespace {

// Marks the wake-up eventfd in epoll's user data; handlers are never at this address.
IoHandler* const kWakeMarker = nullptr;

}  // namespace

EventLoop::EventLoop(const Clock& clock) : clock_(clock) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  SLUICE_CHECK(epoll_fd_ >= 0);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  SLUICE_CHECK(wake_fd_ >= 0);
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.ptr = kWakeMarker;
  SLUICE_CHECK(epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &event) == 0);
  now_ = clock_.Now();
}

EventLoop::~EventLoop() {
  close(wake_fd_);
  close(epoll_fd_);
}

void EventLoop::Add(int fd, uint32_t events, IoHandler* handler) {
  epoll_event event{};
  event.events = events;
  event.data.ptr = handler;
  SLUICE_CHECK(epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) == 0);
}

void EventLoop::Modify(int fd, uint32_t events, IoHandler* handler) {
  epoll_event event{};
  event.events = events;
  event.data.ptr = handler;
  SLUICE_CHECK(epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &event) == 0);
}

void EventLoop::Remove(int fd) { epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr); }

EventLoop::TimerId EventLoop::RunAt(Timestamp when, std::function<void()> callback) {
  const TimerId id = next_timer_id_++;
  const int64_t deadline = ToNanos(when);
  timers_.emplace(std::make_pair(deadline, id), std::move(callback));
  timer_deadlines_.emplace(id, deadline);
  return id;
}

void EventLoop::Cancel(TimerId id) {
  const auto it = timer_deadlines_.find(id);
  if (it == timer_deadlines_.end()) return;
  timers_.erase(std::make_pair(it->second, id));
  timer_deadlines_.erase(it);
}

void EventLoop::SendAtTurnEnd(DeferredSender* sender) { send_soon_.push_back(sender); }

void EventLoop::CancelSendAtTurnEnd(DeferredSender* sender) {
  std::erase(send_soon_, sender);
  for (std::vector<DeferredSender*>* senders : {&sending_, &queued_senders_}) {
    std::replace(senders->begin(), senders->end(), sender, static_cast<DeferredSender*>(nullptr));
  }
}

void EventLoop::FinishQueuedSenders() {
  // A finish may queue more (answers to pipelined requests): RunDeferredSends takes
  // them right after, as it takes its own rounds'.
  for (size_t i = 0; i < queued_senders_.size(); ++i) {
    if (queued_senders_[i] != nullptr) queued_senders_[i]->FinishDeferredSend();
  }
  queued_senders_.clear();
}

int EventLoop::WaitForEvents(epoll_event* events, int max_events) {
  if (!queued_senders_.empty()) {
    const bool on_ring =
        !batch_.empty() && batch_.RunAndBeginEpollWait(epoll_fd_, events, max_events);
    if (!on_ring) batch_.Run();  // (the sends, when the ring did not take them)
    FinishQueuedSenders();
    RunDeferredSends();
    if (on_ring) {
      // The timeout is known only now: the finishes may have set timers or left output.
      const int ready = batch_.FinishEpollWait(PollTimeoutMs());
      if (ready >= 0) return ready;
    }
  }
  const int ready = epoll_wait(epoll_fd_, events, max_events, PollTimeoutMs());
  if (ready < 0 && errno != EINTR) SLUICE_CHECK(false && "epoll_wait failed");
  return std::max(ready, 0);
}

void EventLoop::RunDeferredSends() {
  // A finish that produces more output (a response completing another request) asks
  // again; a few rounds take that, and what still waits goes at the next turn's end.
  for (int round = 0; round < 4 && !send_soon_.empty(); ++round) {
    sending_.swap(send_soon_);
    for (DeferredSender* sender : sending_) sender->QueueDeferredSend(batch_);
    batch_.Run();
    for (size_t i = 0; i < sending_.size(); ++i) {
      if (sending_[i] != nullptr) sending_[i]->FinishDeferredSend();
    }
    sending_.clear();
  }
}

void EventLoop::Post(std::function<void()> callback) {
  {
    std::lock_guard lock(posted_mutex_);
    posted_.push_back(std::move(callback));
  }
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
}

void EventLoop::Stop() {
  {
    std::lock_guard lock(posted_mutex_);
    stop_requested_ = true;
  }
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
}

void EventLoop::DrainPosted() {
  uint64_t count;
  [[maybe_unused]] ssize_t n = read(wake_fd_, &count, sizeof(count));
  std::vector<std::function<void()>> work;
  {
    std::lock_guard lock(posted_mutex_);
    work.swap(posted_);
    if (stop_requested_) stopping_ = true;
  }
  for (auto& callback : work) callback();
}

void EventLoop::RunDueTimers() {
  const int64_t now = ToNanos(now_);
  while (!timers_.empty() && timers_.begin()->first.first <= now) {
    auto node = timers_.extract(timers_.begin());
    timer_deadlines_.erase(node.key().second);
    node.mapped()();
  }
}

int EventLoop::PollTimeoutMs() const {
  // Output still waiting (RunDeferredSends stops after a few rounds): no sleeping.
  if (!send_soon_.empty()) return 0;
  int64_t wait_ns = std::chrono::nanoseconds(kTick).count();
  if (!timers_.empty()) {
    wait_ns = std::min(wait_ns, timers_.begin()->first.first - ToNanos(clock_.Now()));
  }
  if (wait_ns <= 0) return 0;
  return static_cast<int>((wait_ns + 999'999) / 1'000'000);  // round up: never wake early
}

void EventLoop::Run() {
  constexpr int kMaxEvents = 256;
  epoll_event events[kMaxEvents];
  batch_.Open();  // on this thread, which submits
  send_soon_.reserve(kMaxEvents);
  sending_.reserve(kMaxEvents);
  queued_senders_.reserve(kMaxEvents);
  while (!stopping_) {
    const int ready = WaitForEvents(events, kMaxEvents);
    now_ = clock_.Now();
    // The turn's receives first, all in one batch, then the events.
    for (int i = 0; i < ready; ++i) {
      auto* handler = static_cast<IoHandler*>(events[i].data.ptr);
      if (handler != kWakeMarker) handler->BeforeIoEvent(events[i].events, batch_);
    }
    batch_.Run();
    bool wake = false;
    for (int i = 0; i < ready; ++i) {
      auto* handler = static_cast<IoHandler*>(events[i].data.ptr);
      if (handler == kWakeMarker) {
        wake = true;
        continue;
      }
      handler->OnIoEvent(events[i].events);
    }
    if (wake) DrainPosted();
    RunDueTimers();
    for (const std::function<void()>& hook : turn_hooks_) hook();
    // The turn's output: queued now, sent with the next turn's wait.
    queued_senders_.swap(send_soon_);
    for (DeferredSender* sender : queued_senders_) sender->QueueDeferredSend(batch_);
  }
  // Stopped: what the last turn queued goes out now.
  batch_.Run();
  FinishQueuedSenders();
  RunDeferredSends();
}

}  // namespace sluice::net
