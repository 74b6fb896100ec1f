#include "net/io_batch.h"

#include <liburing.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <thread>

#include "core/check.h"

namespace sluice::net {

// Submission slots: a turn with more calls runs them in several submissions.
constexpr unsigned kRingEntries = 256;

// IORING_OP_EPOLL_WAIT (Linux 6.15): Debian 12's headers and liburing 2.3 predate it.
// Its entry is that of a read: the epoll descriptor, the events array as the address,
// their number as the length.
constexpr uint8_t kOpEpollWait = 59;

// Completion tags beside the queued calls' indexes (UINT64_MAX is liburing's own, for
// the timeouts it may submit).
constexpr uint64_t kEpollTag = UINT64_MAX - 2;
constexpr uint64_t kCancelTag = UINT64_MAX - 3;

struct IoBatch::Ring {
  io_uring ring{};
  bool open = false;
  // The kernel takes an epoll wait on the ring, and waits with a timeout in one enter
  // (IORING_FEAT_EXT_ARG: no timeout entry of its own).
  bool epoll_wait = false;

  ~Ring() {
    if (open) io_uring_queue_exit(&ring);
  }

  // The ring, or null when io_uring cannot be used here.
  static std::unique_ptr<Ring> Open() {
    if (const char* setting = std::getenv("SLUICE_IO_URING");
        setting != nullptr && std::string_view(setting) == "0") {
      return nullptr;
    }
    auto ring = std::make_unique<Ring>();
    // Single issuer and cooperative task running: this thread alone submits, and the
    // kernel need not interrupt it to post completions. Both came with 6.0; so did the
    // rest this relies on (a recv or send with MSG_DONTWAIT on a socket that cannot
    // proceed completes at once with -EAGAIN instead of waiting), so an older kernel,
    // which refuses the flags, gets the direct calls.
    const int error = io_uring_queue_init(kRingEntries, &ring->ring,
                                          IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN);
    if (error < 0) return nullptr;
    ring->open = true;
    // Each enter then skips looking the ring's descriptor up (registered for this
    // thread, the only one that submits).
    io_uring_register_ring_fd(&ring->ring);
    io_uring_probe* probe = io_uring_get_probe_ring(&ring->ring);
    const bool supported = probe != nullptr && io_uring_opcode_supported(probe, IORING_OP_RECV) &&
                           io_uring_opcode_supported(probe, IORING_OP_SEND);
    ring->epoll_wait = supported && io_uring_opcode_supported(probe, kOpEpollWait) &&
                       io_uring_opcode_supported(probe, IORING_OP_ASYNC_CANCEL) &&
                       (ring->ring.features & IORING_FEAT_EXT_ARG) != 0;
    if (const char* setting = std::getenv("SLUICE_IO_URING_EPOLL");
        setting != nullptr && std::string_view(setting) == "0") {
      ring->epoll_wait = false;
    }
    if (probe != nullptr) io_uring_free_probe(probe);
    if (!supported) return nullptr;  // (the destructor closes the ring)
    return ring;
  }
};

IoBatch::IoBatch(size_t min_calls_for_ring) : min_calls_for_ring_(min_calls_for_ring) {
  queued_.reserve(kRingEntries);
}

IoBatch::~IoBatch() = default;

bool IoBatch::uses_io_uring() const { return ring_ != nullptr; }

void IoBatch::BreakRingForTesting() {
  if (ring_ == nullptr) return;
  io_uring_unregister_ring_fd(&ring_->ring);
  close(ring_->ring.ring_fd);  // the next enter fails with EBADF
  ring_->ring.ring_fd = -1;
}

void IoBatch::QueueReceive(int fd, char* buffer, size_t length, Client* client) {
  Queue(Op::kReceive, fd, buffer, length, client);
}

void IoBatch::QueueSend(int fd, const char* buffer, size_t length, Client* client) {
  Queue(Op::kSend, fd, const_cast<char*>(buffer), length, client);
}

void IoBatch::Queue(Op op, int fd, char* buffer, size_t length, Client* client) {
  queued_.push_back(Call{op, fd, buffer, length, client, 0, false});
}

void IoBatch::Open() {
  if (ring_tried_) return;
  ring_tried_ = true;
  ring_ = Ring::Open();
  owner_ = std::this_thread::get_id();
  // For the tests that run the server's suites with every batch through the ring.
  if (const char* setting = std::getenv("SLUICE_IO_URING_MIN_CALLS"); setting != nullptr) {
    min_calls_for_ring_ = std::max<size_t>(1, std::strtoul(setting, nullptr, 10));
  }
}

void IoBatch::Run() {
  if (queued_.empty()) return;
  Open();
  // The ring takes submissions from the thread that made it only.
  if (ring_ != nullptr && queued_.size() >= min_calls_for_ring_ &&
      std::this_thread::get_id() == owner_) {
    RunOnRing();
  } else {
    RunDirect(0);
  }
  TellClients();
}

void IoBatch::TellClients() {
  // Clients are told after every call ran; one that queues another call meanwhile
  // gets it run by the next Run().
  const size_t count = queued_.size();
  for (size_t i = 0; i < count; ++i) {
    const Call& call = queued_[i];
    if (call.op == Op::kReceive) {
      call.client->OnBatchedReceive(call.result);
    } else {
      call.client->OnBatchedSend(call.result);
    }
  }
  queued_.erase(queued_.begin(), queued_.begin() + static_cast<ptrdiff_t>(count));
}

void IoBatch::RunDirect(size_t from, size_t to) {
  to = std::min(to, queued_.size());
  for (size_t i = from; i < to; ++i) {
    Call& call = queued_[i];
    ssize_t n;
    do {
      n = call.op == Op::kReceive
              ? recv(call.fd, call.buffer, call.length, MSG_DONTWAIT)
              : send(call.fd, call.buffer, call.length, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    call.result = n >= 0 ? n : -errno;
    call.done = true;
  }
}

void IoBatch::PrepareOnRing(size_t index) {
  Call& call = queued_[index];
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_->ring);
  SLUICE_CHECK(sqe != nullptr);  // the ring holds kRingEntries and is empty here
  // MSG_DONTWAIT: a socket with nothing to give or no room completes at once with
  // -EAGAIN, as a non-blocking call would, instead of waiting in the kernel.
  if (call.op == Op::kReceive) {
    io_uring_prep_recv(sqe, call.fd, call.buffer, call.length, MSG_DONTWAIT);
  } else {
    io_uring_prep_send(sqe, call.fd, call.buffer, call.length, MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  io_uring_sqe_set_data64(sqe, index);
}

void IoBatch::RunOnRing() {
  const size_t end = queued_.size();
  size_t from = 0;
  while (from < end) {
    const size_t chunk_end = std::min(end, from + kRingEntries);
    for (size_t i = from; i < chunk_end; ++i) PrepareOnRing(i);
    if (!SubmitAndReap(chunk_end - from)) return;
    from = chunk_end;
  }
}

bool IoBatch::SubmitAndReap(size_t pending) {
  while (pending > 0) {
    const int submitted = io_uring_submit_and_wait(&ring_->ring, 1);
    if (submitted < 0 && submitted != -EINTR && submitted != -EAGAIN && submitted != -EBUSY) {
      DropBrokenRing(std::strerror(-submitted));
      return false;
    }
    pending -= ReapCompletions();
  }
  return true;
}

void IoBatch::DropBrokenRing(const char* why) {
  // The ring is unusable (out of memory, say). An enter that fails took none of the
  // calls it was given, so the calls without a result were never made: they are made
  // directly, and so is every later batch. (Tearing the ring down drops the entries it
  // never took, and cancels an epoll wait under way: the loop then waits itself.)
  std::fprintf(stderr, "sluice: io_uring failed (%s); socket calls go direct from now\n", why);
  ReapCompletions();
  ring_.reset();
  epoll_pending_ = cancel_pending_ = false;
  epoll_result_ = -1;
  for (size_t i = 0; i < queued_.size(); ++i) {
    if (!queued_[i].done) RunDirect(i, i + 1);
  }
}

bool IoBatch::RunAndBeginEpollWait(int epoll_fd, epoll_event* events, int max_events) {
  Open();
  if (ring_ == nullptr || !ring_->epoll_wait || std::this_thread::get_id() != owner_ ||
      queued_.size() >= kRingEntries) {
    Run();
    return false;
  }
  SLUICE_CHECK(!epoll_pending_ && !cancel_pending_ && max_events > 0);
  for (size_t i = 0; i < queued_.size(); ++i) PrepareOnRing(i);
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_->ring);
  SLUICE_CHECK(sqe != nullptr);
  // The kernel writes the events into the batch's own array, copied out when the wait
  // completes: a wait that a broken ring leaves to the kernel's teardown can never
  // write into the caller's array while the caller waits on it by itself.
  ring_events_.resize(std::max(ring_events_.size(), static_cast<size_t>(max_events)));
  io_uring_prep_rw(kOpEpollWait, sqe, epoll_fd, ring_events_.data(),
                   static_cast<unsigned>(max_events), 0);
  io_uring_sqe_set_data64(sqe, kEpollTag);
  epoll_events_ = events;
  epoll_pending_ = true;
  epoll_result_ = 0;
  // The sends and receives complete during the enter (MSG_DONTWAIT); so does the wait
  // when events are ready, as they are on a busy loop. Otherwise it stays under way.
  bool ring_ok = true;
  if (queued_.empty()) {
    const int submitted = io_uring_submit(&ring_->ring);
    if (submitted < 0) {
      DropBrokenRing(std::strerror(-submitted));
      ring_ok = false;
    }
  } else {
    ring_ok = SubmitAndReap(queued_.size());
  }
  TellClients();
  return ring_ok;
}

int IoBatch::FinishEpollWait(int timeout_ms) {
  if (ring_ == nullptr) return -1;
  io_uring& ring = ring_->ring;
  if (epoll_pending_ && timeout_ms != 0) {
    // A negative timeout waits for as long as it takes, as epoll_wait's does.
    __kernel_timespec timeout{};
    timeout.tv_sec = timeout_ms / 1000;
    timeout.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1'000'000;
    io_uring_cqe* cqe;
    // One completion, or the time is up (-ETIME), or a signal (-EINTR: like
    // epoll_wait, the turn goes on without events), or a full completion queue
    // (-EBUSY, -EAGAIN: reaped below): whatever has not come then is cancelled.
    const int waited =
        io_uring_wait_cqes(&ring, &cqe, 1, timeout_ms < 0 ? nullptr : &timeout, nullptr);
    if (waited < 0 && waited != -ETIME && waited != -EINTR && waited != -EBUSY &&
        waited != -EAGAIN) {
      DropBrokenRing(std::strerror(-waited));
      return -1;
    }
    ReapCompletions();
  }
  if (epoll_pending_) {
    // Not now: the wait is cancelled (it may still have found events meanwhile).
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    SLUICE_CHECK(sqe != nullptr);
    io_uring_prep_cancel64(sqe, kEpollTag, 0);
    io_uring_sqe_set_data64(sqe, kCancelTag);
    cancel_pending_ = true;
    while (epoll_pending_ || cancel_pending_) {
      const int submitted = io_uring_submit_and_wait(&ring, 1);
      if (submitted < 0 && submitted != -EINTR && submitted != -EAGAIN && submitted != -EBUSY) {
        DropBrokenRing(std::strerror(-submitted));
        return -1;
      }
      ReapCompletions();
    }
  }
  if (epoll_result_ >= 0) return epoll_result_;
  if (epoll_result_ == -ECANCELED || epoll_result_ == -EINTR) return 0;
  // Refused by the kernel after all: the loop waits itself from now on.
  ring_->epoll_wait = false;
  return -1;
}

size_t IoBatch::ReapCompletions() {
  io_uring& ring = ring_->ring;
  unsigned head;
  unsigned seen = 0;
  io_uring_cqe* cqe;
  unsigned calls = 0;
  io_uring_for_each_cqe(&ring, head, cqe) {
    ++seen;
    const uint64_t tag = io_uring_cqe_get_data64(cqe);
    if (tag == kEpollTag) {
      epoll_pending_ = false;
      epoll_result_ = cqe->res;
      if (epoll_result_ > 0) {
        std::memcpy(epoll_events_, ring_events_.data(),
                    static_cast<size_t>(epoll_result_) * sizeof(epoll_event));
      }
    } else if (tag == kCancelTag) {
      cancel_pending_ = false;
    } else {
      Call& call = queued_[tag];
      call.result = cqe->res;
      call.done = true;
      ++calls;
    }
  }
  io_uring_cq_advance(&ring, seen);
  return calls;
}

}  // namespace sluice::net
