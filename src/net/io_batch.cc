#include "net/io_batch.h"

#include <liburing.h>
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

struct IoBatch::Ring {
  io_uring ring{};
  bool open = false;

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

void IoBatch::RunOnRing() {
  io_uring& ring = ring_->ring;
  const size_t end = queued_.size();
  size_t from = 0;
  while (from < end) {
    const size_t chunk_end = std::min(end, from + kRingEntries);
    for (size_t i = from; i < chunk_end; ++i) {
      Call& call = queued_[i];
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      SLUICE_CHECK(sqe != nullptr);  // the ring holds kRingEntries and is empty here
      // MSG_DONTWAIT: a socket with nothing to give or no room completes at once with
      // -EAGAIN, as a non-blocking call would, instead of waiting in the kernel.
      if (call.op == Op::kReceive) {
        io_uring_prep_recv(sqe, call.fd, call.buffer, call.length, MSG_DONTWAIT);
      } else {
        io_uring_prep_send(sqe, call.fd, call.buffer, call.length, MSG_DONTWAIT | MSG_NOSIGNAL);
      }
      io_uring_sqe_set_data64(sqe, i);
    }
    size_t pending = chunk_end - from;
    while (pending > 0) {
      const int submitted = io_uring_submit_and_wait(&ring, 1);
      if (submitted < 0 && submitted != -EINTR && submitted != -EAGAIN && submitted != -EBUSY) {
        // The ring is unusable (out of memory, say). An enter that fails took none of
        // the calls it was given, so the calls without a result were never made: they
        // are made directly, and so is every later batch. (Tearing the ring down drops
        // the entries it never took.)
        std::fprintf(stderr, "sluice: io_uring failed (%s); socket calls go direct from now\n",
                     std::strerror(-submitted));
        ReapCompletions();
        ring_.reset();
        for (size_t i = 0; i < end; ++i) {
          if (!queued_[i].done) RunDirect(i, i + 1);
        }
        return;
      }
      pending -= ReapCompletions();
    }
    from = chunk_end;
  }
}

size_t IoBatch::ReapCompletions() {
  io_uring& ring = ring_->ring;
  unsigned head;
  unsigned seen = 0;
  io_uring_cqe* cqe;
  io_uring_for_each_cqe(&ring, head, cqe) {
    Call& call = queued_[io_uring_cqe_get_data64(cqe)];
    call.result = cqe->res;
    call.done = true;
    ++seen;
  }
  io_uring_cq_advance(&ring, seen);
  return seen;
}

}  // namespace sluice::net
