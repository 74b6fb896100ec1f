// A loop turn's socket receives and sends, run together: one io_uring_enter for all
// of them instead of one system call each.
//
// Why: a proxied request costs four socket calls (the client's request in, the
// upstream's request out, its response in, the client's response out). On this
// project's machines a system call's entry, exit and descriptor lookup cost about as
// much as sluice's own code for the request (docs/architecture.md, "Batched socket
// I/O"); submitting the calls of a turn as one io_uring batch pays that once.
//
// The batch is synchronous: Run() returns when every queued call has finished and
// its client has been told the result, before anything else on the loop runs. So a
// buffer handed to Queue* only has to stay put until Run() returns, and the callers'
// logic stays that of a plain non-blocking recv/send: each call is made with
// MSG_DONTWAIT and reports EAGAIN instead of waiting.
//
// Without io_uring (a kernel before 6.0, a seccomp profile that forbids it, or
// SLUICE_IO_URING=0 in the environment), for a batch of fewer than
// kMinCallsForRing calls, or on a thread other than the one that opened the ring,
// Run() makes the same calls one by one, with the same results.
//
// Thread-safety: one loop thread; not shared.
#ifndef SLUICE_NET_IO_BATCH_H_
#define SLUICE_NET_IO_BATCH_H_

#include <sys/epoll.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

namespace sluice::net {

class IoBatch {
 public:
  // Told the result of its queued call: bytes moved (0 for a receive: end of input),
  // or -errno.
  class Client {
   public:
    virtual void OnBatchedReceive(ssize_t result) {}
    virtual void OnBatchedSend(ssize_t result) {}

   protected:
    ~Client() = default;
  };

  // Fewer calls than this go direct even with io_uring: one io_uring_enter for one
  // call costs more than the call itself (measured on loopback TCP, a send and a
  // receive per socket: one socket per batch 9.6 us against 8.3 us direct, two about
  // even, four 7.7 against 8.4; docs/architecture.md, "Batched socket I/O").
  static constexpr size_t kMinCallsForRing = 3;

  explicit IoBatch(size_t min_calls_for_ring = kMinCallsForRing);
  ~IoBatch();
  IoBatch(const IoBatch&) = delete;
  IoBatch& operator=(const IoBatch&) = delete;

  // REQUIRES: `buffer` stays valid, and is not otherwise written (receive) or changed
  // (send), until Run() returns; `client` outlives Run().
  void QueueReceive(int fd, char* buffer, size_t length, Client* client);
  void QueueSend(int fd, const char* buffer, size_t length, Client* client);

  // Sets up io_uring on the calling thread (the one that will Run(): the ring takes
  // submissions from one thread only). Run() does it when nobody did.
  void Open();

  // Runs every queued call, then tells each client, in queue order.
  void Run();

  // Runs the queued calls as Run() does, and in the same io_uring_enter begins an
  // epoll_wait on `epoll_fd` for up to `max_events` into `events`: the event loop's
  // end-of-turn sends and its next wait cost one system call instead of two (kernel
  // 6.15's IORING_OP_EPOLL_WAIT). True: the wait is under way (it may already have
  // its events), and FinishEpollWait must end it before the batch is used again, with
  // `events` left alone meanwhile. False: no such wait here (no io_uring, an older
  // kernel, another thread): the calls ran anyway and the caller waits itself.
  bool RunAndBeginEpollWait(int epoll_fd, struct epoll_event* events, int max_events);

  // Ends the wait begun: gives it up to `timeout_ms` (0: no waiting; negative: no
  // limit) and returns how many events it wrote into `events` (0 when none came in
  // time), or -1 when the ring could not wait after all; then the caller waits itself,
  // and later waits are left to it.
  int FinishEpollWait(int timeout_ms);

  bool empty() const { return queued_.empty(); }

  // Whether the calls go through io_uring (known after Open() or the first Run()).
  bool uses_io_uring() const;

  // For tests: makes the ring's next submission fail, as a broken ring would (the
  // batch then goes direct for good).
  void BreakRingForTesting();

 private:
  enum class Op : unsigned char { kReceive, kSend };
  struct Call {
    Op op;
    int fd;
    char* buffer;
    size_t length;
    Client* client;
    ssize_t result;
    bool done;  // result is set
  };
  struct Ring;

  void Queue(Op op, int fd, char* buffer, size_t length, Client* client);
  void RunDirect(size_t from, size_t to = SIZE_MAX);
  void RunOnRing();
  void PrepareOnRing(size_t call);  // the call's submission entry
  // Submits what was prepared and waits until `pending` queued calls completed; false
  // (after making the calls without a result directly) when the ring broke.
  bool SubmitAndReap(size_t pending);
  void DropBrokenRing(const char* why);
  void TellClients();
  // Of the ring's completions ready now: records them; returns how many were queued
  // calls (not the epoll wait or its cancellation).
  size_t ReapCompletions();

  std::vector<Call> queued_;
  size_t min_calls_for_ring_;
  // Where the kernel writes an epoll wait's events: before ring_, so that it outlives
  // the ring (a wait under way ends with the ring).
  std::vector<epoll_event> ring_events_;
  std::unique_ptr<Ring> ring_;  // null until Open(), or when io_uring is out
  std::thread::id owner_;       // the thread that opened the ring
  bool ring_tried_ = false;
  // The epoll wait on the ring: submitted and not yet completed; its result; a
  // cancellation of it submitted and not yet completed.
  bool epoll_pending_ = false;
  int epoll_result_ = 0;
  bool cancel_pending_ = false;
  epoll_event* epoll_events_ = nullptr;  // the caller's array, filled when it completes
};

}  // namespace sluice::net

#endif  // SLUICE_NET_IO_BATCH_H_
