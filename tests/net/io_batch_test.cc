// IoBatch against real loopback TCP sockets, once through io_uring and once with the
// direct calls it falls back to: the results must be those of non-blocking recv/send.
#include "net/io_batch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "net/event_loop.h"
#include "sluice/clock.h"

namespace sluice::net {
namespace {

// A connected loopback TCP pair, both ends non-blocking.
struct Pair {
  int a = -1;
  int b = -1;
  ~Pair() {
    if (a >= 0) close(a);
    if (b >= 0) close(b);
  }
};

class Listener {
 public:
  Listener() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    socklen_t length = sizeof(address);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
    address_ = address;
    EXPECT_EQ(listen(fd_, 512), 0);
  }
  ~Listener() { close(fd_); }

  void Connect(Pair& pair) {
    pair.a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(connect(pair.a, reinterpret_cast<sockaddr*>(&address_), sizeof(address_)), 0);
    pair.b = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    ASSERT_GE(pair.b, 0);
    for (int fd : {pair.a, pair.b}) {
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
  }

 private:
  int fd_;
  sockaddr_in address_{};
};

// What arrives on `fd` within about 100 ms, up to `size` bytes.
std::string ReceiveUpTo(int fd, size_t size) {
  char buffer[64];
  std::string got;
  for (int i = 0; i < 100 && got.size() < size; ++i) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n > 0) got.append(buffer, static_cast<size_t>(n));
    if (n <= 0) usleep(1000);
  }
  return got;
}

struct Recorder : IoBatch::Client {
  std::vector<ssize_t>* order = nullptr;  // shared: the order clients were told in
  int id = 0;
  ssize_t received = -1000;
  ssize_t sent = -1000;
  void OnBatchedReceive(ssize_t result) override {
    received = result;
    if (order != nullptr) order->push_back(id);
  }
  void OnBatchedSend(ssize_t result) override {
    sent = result;
    if (order != nullptr) order->push_back(id);
  }
};

// The parameter: whether io_uring is wanted (SLUICE_IO_URING unset) or turned off.
class IoBatchTest : public testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam()) {
      unsetenv("SLUICE_IO_URING");
    } else {
      setenv("SLUICE_IO_URING", "0", 1);
    }
    batch_.Open();
    // Where io_uring is not available (kernel or seccomp) the io_uring variant runs on
    // the direct calls too: the same results are due either way. (Not a skip: the
    // suite's last line stays ctest's summary.)
    if (GetParam() && !batch_.uses_io_uring()) {
      std::fprintf(stderr, "io_uring is not available here: this variant runs direct\n");
    }
    if (!GetParam()) {
      EXPECT_FALSE(batch_.uses_io_uring());
    }
  }
  void TearDown() override { unsetenv("SLUICE_IO_URING"); }

  IoBatch batch_{1};  // even one call through the ring, when it is there
  Listener listener_;
};

TEST_P(IoBatchTest, SendsAndReceivesOnManySocketsInOneRun) {
  // More sockets than one submission holds, so the run takes several.
  constexpr int kPairs = 300;
  std::vector<Pair> pairs(kPairs);
  for (Pair& p : pairs) ASSERT_NO_FATAL_FAILURE(listener_.Connect(p));
  std::vector<std::string> payloads;
  std::vector<Recorder> senders(kPairs);
  for (int i = 0; i < kPairs; ++i) {
    payloads.push_back("request " + std::to_string(i) + std::string(static_cast<size_t>(i), 'x'));
  }
  for (int i = 0; i < kPairs; ++i) {
    batch_.QueueSend(pairs[i].a, payloads[i].data(), payloads[i].size(), &senders[i]);
  }
  EXPECT_FALSE(batch_.empty());
  batch_.Run();
  EXPECT_TRUE(batch_.empty());
  for (int i = 0; i < kPairs; ++i) {
    EXPECT_EQ(senders[i].sent, static_cast<ssize_t>(payloads[i].size())) << i;
  }
  // Loopback delivers at once: each peer has its payload to receive.
  std::vector<std::string> buffers(kPairs, std::string(4096, '\0'));
  std::vector<Recorder> receivers(kPairs);
  for (int i = 0; i < kPairs; ++i) {
    batch_.QueueReceive(pairs[i].b, buffers[i].data(), buffers[i].size(), &receivers[i]);
  }
  batch_.Run();
  for (int i = 0; i < kPairs; ++i) {
    ASSERT_EQ(receivers[i].received, static_cast<ssize_t>(payloads[i].size())) << i;
    EXPECT_EQ(buffers[i].substr(0, payloads[i].size()), payloads[i]) << i;
  }
}

TEST_P(IoBatchTest, NothingToReceiveIsEagainNotAWait) {
  Pair p;
  ASSERT_NO_FATAL_FAILURE(listener_.Connect(p));
  char buffer[64];
  Recorder r;
  batch_.QueueReceive(p.b, buffer, sizeof(buffer), &r);
  alarm(10);     // a receive that waited would hang the test: SIGALRM ends it instead
  batch_.Run();  // would hang here if the receive waited
  alarm(0);
  EXPECT_EQ(r.received, -EAGAIN);
}

TEST_P(IoBatchTest, AFullSocketIsEagainAndAPartialSendCountsWhatWent) {
  Pair p;
  ASSERT_NO_FATAL_FAILURE(listener_.Connect(p));
  const int size = 4096;
  setsockopt(p.a, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  setsockopt(p.b, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  const std::string chunk(1 << 20, 'y');
  Recorder first;
  batch_.QueueSend(p.a, chunk.data(), chunk.size(), &first);
  batch_.Run();
  ASSERT_GT(first.sent, 0);
  EXPECT_LT(first.sent, static_cast<ssize_t>(chunk.size()));  // took what fitted
  // Nobody reads: after what the buffers take (they grow a little as the peer's ACKs
  // come), the socket is full, and a send says so at once.
  ssize_t last = first.sent;
  for (int i = 0; i < 1000 && last > 0; ++i) {
    Recorder next;
    batch_.QueueSend(p.a, chunk.data(), chunk.size(), &next);
    batch_.Run();
    last = next.sent;
  }
  EXPECT_EQ(last, -EAGAIN);
}

TEST_P(IoBatchTest, EndOfInputIsZeroAndAResetPeerIsAnErrorWithoutSigpipe) {
  Pair p;
  ASSERT_NO_FATAL_FAILURE(listener_.Connect(p));
  shutdown(p.a, SHUT_WR);
  char buffer[64];
  Recorder eof;
  batch_.QueueReceive(p.b, buffer, sizeof(buffer), &eof);
  batch_.Run();
  EXPECT_EQ(eof.received, 0);

  // The peer is gone: a send fails with an error instead of raising SIGPIPE (which
  // would end this test process).
  close(p.b);
  p.b = -1;
  Recorder failed;
  const std::string bytes = "x";
  for (int i = 0; i < 5; ++i) {  // the first send may go before the reset comes back
    batch_.QueueSend(p.a, bytes.data(), bytes.size(), &failed);
    batch_.Run();
    if (failed.sent == -EPIPE || failed.sent == -ECONNRESET) break;
    usleep(1000);
  }
  EXPECT_TRUE(failed.sent == -EPIPE || failed.sent == -ECONNRESET) << failed.sent;
}

TEST_P(IoBatchTest, ClientsAreToldInQueueOrderAndACallQueuedMeanwhileWaitsForTheNextRun) {
  Pair one;
  Pair two;
  ASSERT_NO_FATAL_FAILURE(listener_.Connect(one));
  ASSERT_NO_FATAL_FAILURE(listener_.Connect(two));
  std::vector<ssize_t> order;
  const std::string bytes = "abc";
  char buffer[16];

  // The first client, told of its send, queues a receive of what it sent.
  struct Requeuer : Recorder {
    IoBatch* batch = nullptr;
    int fd = -1;
    char* buffer = nullptr;
    Recorder* next = nullptr;
    void OnBatchedSend(ssize_t result) override {
      Recorder::OnBatchedSend(result);
      batch->QueueReceive(fd, buffer, 16, next);
    }
  };
  Recorder later;
  later.order = &order;
  later.id = 9;
  Requeuer first;
  first.order = &order;
  first.id = 1;
  first.batch = &batch_;
  first.fd = one.b;
  first.buffer = buffer;
  first.next = &later;
  Recorder second;
  second.order = &order;
  second.id = 2;
  batch_.QueueSend(one.a, bytes.data(), bytes.size(), &first);
  batch_.QueueSend(two.a, bytes.data(), bytes.size(), &second);
  batch_.Run();
  EXPECT_EQ(order, (std::vector<ssize_t>{1, 2}));
  EXPECT_FALSE(batch_.empty());  // the receive queued by the first client
  batch_.Run();
  EXPECT_EQ(order, (std::vector<ssize_t>{1, 2, 9}));
  EXPECT_EQ(later.received, 3);
  EXPECT_EQ(std::string(buffer, 3), "abc");
}

// The ring takes submissions from the thread that opened it only: a batch run on
// another thread makes its calls directly, with the same results.
TEST_P(IoBatchTest, ABatchRunOnAnotherThreadStillWorks) {
  std::vector<Pair> pairs(4);
  for (Pair& p : pairs) ASSERT_NO_FATAL_FAILURE(listener_.Connect(p));
  const std::string bytes = "hello";
  std::vector<Recorder> senders(pairs.size());
  std::thread other([&] {
    for (size_t i = 0; i < pairs.size(); ++i) {
      batch_.QueueSend(pairs[i].a, bytes.data(), bytes.size(), &senders[i]);
    }
    batch_.Run();
  });
  other.join();
  for (const Recorder& r : senders) EXPECT_EQ(r.sent, 5);
  char buffer[16];
  for (const Pair& p : pairs) EXPECT_EQ(recv(p.b, buffer, sizeof(buffer), 0), 5);
}

// A ring that fails (the kernel refuses the submission) costs nothing but the ring:
// the calls it did not take are made directly, once, and later batches go direct.
TEST_P(IoBatchTest, ARingThatFailsFallsBackToDirectCallsWithoutLosingOrRepeatingAny) {
  // (Direct: there is no ring to break, and the same results are due.)
  std::vector<Pair> pairs(3);
  for (Pair& p : pairs) ASSERT_NO_FATAL_FAILURE(listener_.Connect(p));
  batch_.BreakRingForTesting();
  const std::string bytes = "once";
  std::vector<Recorder> senders(pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    batch_.QueueSend(pairs[i].a, bytes.data(), bytes.size(), &senders[i]);
  }
  batch_.Run();
  EXPECT_FALSE(batch_.uses_io_uring());
  for (const Recorder& r : senders) EXPECT_EQ(r.sent, 4);
  char buffer[16];
  for (const Pair& p : pairs) {
    EXPECT_EQ(recv(p.b, buffer, sizeof(buffer), 0), 4);  // sent once, not twice
  }
  // And the next batch works, directly.
  Recorder again;
  batch_.QueueSend(pairs[0].a, bytes.data(), bytes.size(), &again);
  batch_.Run();
  EXPECT_EQ(again.sent, 4);
}

// The loop's wait with its sends: an epoll descriptor watching one socket for input.
class Watch {
 public:
  explicit Watch(int fd) {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = 42;
    EXPECT_EQ(epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event), 0);
  }
  ~Watch() { close(epoll_fd_); }
  int fd() const { return epoll_fd_; }

  // Begins the wait with the batch's calls, then ends it as the event loop does:
  // through the ring when the batch took the wait, else with epoll_wait.
  int Wait(IoBatch& batch, int timeout_ms, bool* on_ring = nullptr,
           const std::function<void()>& meanwhile = {}) {
    const bool ring = batch.RunAndBeginEpollWait(epoll_fd_, events_, 8);
    if (on_ring != nullptr) *on_ring = ring;
    if (meanwhile) meanwhile();
    int ready = ring ? batch.FinishEpollWait(timeout_ms) : -1;
    if (ready < 0) {
      do {
        ready = epoll_wait(epoll_fd_, events_, 8, timeout_ms);
      } while (ready < 0 && errno == EINTR);
      if (ready < 0) std::perror("epoll_wait");
    }
    return ready;
  }
  const epoll_event& event(int i) const { return events_[i]; }

 private:
  int epoll_fd_ = -1;
  epoll_event events_[8]{};
};

// A socket pair whose far end an epoll descriptor watches for input, and another to
// send on.
struct WatchedPair {
  Pair watched;
  Pair other;
  std::optional<Watch> watch;
};

void ConnectWatched(Listener& listener, WatchedPair& pairs) {
  ASSERT_NO_FATAL_FAILURE(listener.Connect(pairs.watched));
  ASSERT_NO_FATAL_FAILURE(listener.Connect(pairs.other));
  pairs.watch.emplace(pairs.watched.b);
}

// Linux 6.15 or later: IORING_OP_EPOLL_WAIT is there.
bool KernelHasEpollWaitOnRing() {
  utsname name{};
  if (uname(&name) != 0) return false;
  int major = 0;
  int minor = 0;
  if (std::sscanf(name.release, "%d.%d", &major, &minor) != 2) return false;
  return major > 6 || (major == 6 && minor >= 15);
}

// The sends go out and the wait finds what is ready, in one enter where the kernel
// has IORING_OP_EPOLL_WAIT (6.15); directly otherwise, with the same results.
TEST_P(IoBatchTest, SendsWithTheWaitGoOutAndTheWaitFindsWhatIsReady) {
  Pair p;
  ASSERT_NO_FATAL_FAILURE(listener_.Connect(p));
  Watch watch(p.b);
  const std::string bytes = "hello";
  Recorder sender;
  batch_.QueueSend(p.a, bytes.data(), bytes.size(), &sender);
  bool on_ring = true;
  // The send itself makes the watched socket readable: the wait sees it.
  const int ready = watch.Wait(batch_, 5000, &on_ring);
  EXPECT_EQ(sender.sent, 5);
  ASSERT_EQ(ready, 1);
  EXPECT_EQ(watch.event(0).data.u64, 42u);
  EXPECT_TRUE(watch.event(0).events & EPOLLIN);
  if (!GetParam()) {
    EXPECT_FALSE(on_ring);
  } else if (KernelHasEpollWaitOnRing() && batch_.uses_io_uring()) {
    EXPECT_TRUE(on_ring);  // not a silent fall-back where the kernel has the opcode
  }
  std::fprintf(stderr, "epoll wait on the ring: %s\n", on_ring ? "yes" : "no");
  char buffer[16];
  EXPECT_EQ(recv(p.b, buffer, sizeof(buffer), 0), 5);
}

// Nothing ready: a zero timeout does not wait, a short one ends with no events, and
// the batch works afterwards (the cancelled wait left nothing behind on the ring).
TEST_P(IoBatchTest, AWaitWithNothingReadyEndsWithNoEventsAndTheBatchGoesOn) {
  WatchedPair pairs;
  ASSERT_NO_FATAL_FAILURE(ConnectWatched(listener_, pairs));
  const std::string bytes = "x";
  for (int timeout_ms : {0, 10, 0}) {
    Recorder sender;
    batch_.QueueSend(pairs.other.a, bytes.data(), bytes.size(), &sender);
    EXPECT_EQ(pairs.watch->Wait(batch_, timeout_ms), 0) << timeout_ms;
    EXPECT_EQ(sender.sent, 1);
  }
  char buffer[16];
  EXPECT_EQ(recv(pairs.other.b, buffer, sizeof(buffer), 0), 3);
  Recorder again;
  batch_.QueueSend(pairs.other.a, bytes.data(), bytes.size(), &again);
  batch_.Run();
  EXPECT_EQ(again.sent, 1);
}

// Input that arrives after the wait began (while the loop finishes its senders) is
// found by the wait, and a batch run meanwhile does not disturb it.
TEST_P(IoBatchTest, InputThatArrivesAfterTheWaitBeganIsFound) {
  WatchedPair pairs;
  ASSERT_NO_FATAL_FAILURE(ConnectWatched(listener_, pairs));
  const std::string bytes = "late";
  Recorder first;
  Recorder meanwhile;
  batch_.QueueSend(pairs.other.a, bytes.data(), bytes.size(), &first);
  const int ready = pairs.watch->Wait(batch_, 5000, nullptr, [&] {
    batch_.QueueSend(pairs.other.a, bytes.data(), bytes.size(), &meanwhile);
    batch_.Run();
    ASSERT_EQ(send(pairs.watched.a, bytes.data(), bytes.size(), 0), 4);
  });
  ASSERT_EQ(ready, 1);
  EXPECT_EQ(pairs.watch->event(0).data.u64, 42u);
  EXPECT_EQ(first.sent, 4);
  EXPECT_EQ(meanwhile.sent, 4);
}

// With nothing queued the wait is still submitted: what is ready is found at once, not
// when the timeout runs out (the bound is far above any scheduling delay).
TEST_P(IoBatchTest, AWaitWithNothingQueuedFindsWhatIsReadyAtOnce) {
  Pair p;
  ASSERT_NO_FATAL_FAILURE(listener_.Connect(p));
  Watch watch(p.b);
  ASSERT_EQ(send(p.a, "x", 1, 0), 1);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(watch.Wait(batch_, 20'000), 1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

// A negative timeout waits as long as it takes, as epoll_wait's does: here until
// another thread sends.
TEST_P(IoBatchTest, AWaitWithoutATimeoutEndsWhenInputComesFromAnotherThread) {
  WatchedPair pairs;
  ASSERT_NO_FATAL_FAILURE(ConnectWatched(listener_, pairs));
  Recorder sender;
  batch_.QueueSend(pairs.other.a, "y", 1, &sender);
  std::thread writer;
  const int ready = pairs.watch->Wait(batch_, -1, nullptr, [&] {
    writer = std::thread([&] {
      usleep(20'000);
      EXPECT_EQ(send(pairs.watched.a, "z", 1, 0), 1);
    });
  });
  writer.join();
  EXPECT_EQ(ready, 1);
  EXPECT_EQ(sender.sent, 1);
}

// A ring that breaks while the wait is under way: the caller is told to wait itself,
// and finds what came.
TEST_P(IoBatchTest, ARingThatBreaksDuringTheWaitLeavesItToTheCaller) {
  WatchedPair pairs;
  ASSERT_NO_FATAL_FAILURE(ConnectWatched(listener_, pairs));
  Recorder sender;
  batch_.QueueSend(pairs.other.a, "w", 1, &sender);
  const int ready = pairs.watch->Wait(batch_, 5000, nullptr, [&] {
    batch_.BreakRingForTesting();
    EXPECT_EQ(send(pairs.watched.a, "v", 1, 0), 1);
  });
  EXPECT_EQ(ready, 1);
  EXPECT_EQ(pairs.watch->event(0).data.u64, 42u);
  EXPECT_EQ(sender.sent, 1);
}

// A ring that breaks at the wait's enter: the calls are made directly, once, and the
// caller is told to wait itself.
TEST_P(IoBatchTest, ARingThatFailsAtTheWaitMakesTheCallsDirectlyAndLeavesTheWaitToTheCaller) {
  Pair p;
  ASSERT_NO_FATAL_FAILURE(listener_.Connect(p));
  Watch watch(p.b);
  batch_.BreakRingForTesting();
  const std::string bytes = "once";
  Recorder sender;
  batch_.QueueSend(p.a, bytes.data(), bytes.size(), &sender);
  bool on_ring = true;
  EXPECT_EQ(watch.Wait(batch_, 5000, &on_ring), 1);
  EXPECT_FALSE(on_ring);
  EXPECT_EQ(sender.sent, 4);
  char buffer[16];
  EXPECT_EQ(recv(p.b, buffer, sizeof(buffer), 0), 4);  // sent once, not twice
}

INSTANTIATE_TEST_SUITE_P(Backends, IoBatchTest, testing::Values(true, false),
                         [](const testing::TestParamInfo<bool>& info) {
                           return info.param ? "IoUring" : "Direct";
                         });

// The loop's end-of-turn sends: each sender queues, the batch runs (through the ring
// where there is one: three calls or more), each finishes; one cancelled before the
// round, or destroyed by another's finish during it, is not called.
TEST(EventLoopDeferredSendTest, SendersQueueThenFinishAndCancelledOnesAreSkipped) {
  SteadyClock clock;
  EventLoop loop(clock);
  Listener listener;
  Pair p;
  ASSERT_NO_FATAL_FAILURE(listener.Connect(p));

  struct Sender : DeferredSender, IoBatch::Client {
    EventLoop* loop = nullptr;
    int fd = -1;
    std::string out;
    ssize_t result = -1000;
    int finished = 0;
    std::unique_ptr<Sender>* destroys = nullptr;  // destroys another in its finish
    int* finishes = nullptr;                      // counted outside, when set
    void QueueDeferredSend(IoBatch& batch) override {
      batch.QueueSend(fd, out.data(), out.size(), this);
    }
    void FinishDeferredSend() override {
      ++finished;
      if (finishes != nullptr) ++*finishes;
      if (destroys != nullptr) destroys->reset();
    }
    void OnBatchedSend(ssize_t r) override { result = r; }
    ~Sender() { loop->CancelSendAtTurnEnd(this); }
  };
  auto make = [&](std::string out) {
    auto s = std::make_unique<Sender>();
    s->loop = &loop;
    s->fd = p.a;
    s->out = std::move(out);
    return s;
  };
  std::unique_ptr<Sender> one = make("one ");
  std::unique_ptr<Sender> cancelled = make("never ");
  std::unique_ptr<Sender> two = make("two ");
  std::unique_ptr<Sender> destroyed = make("three");
  int destroyed_finished = 0;
  one->destroys = &destroyed;
  destroyed->finishes = &destroyed_finished;
  loop.SendAtTurnEnd(one.get());
  loop.SendAtTurnEnd(cancelled.get());
  loop.SendAtTurnEnd(two.get());
  loop.SendAtTurnEnd(destroyed.get());
  loop.CancelSendAtTurnEnd(cancelled.get());
  loop.RunDeferredSends();  // one's finish destroys `destroyed` before its own finish
  EXPECT_EQ(destroyed, nullptr);
  EXPECT_EQ(destroyed_finished, 0);
  EXPECT_EQ(one->result, 4);
  EXPECT_EQ(two->result, 4);
  EXPECT_EQ(one->finished, 1);
  EXPECT_EQ(two->finished, 1);
  EXPECT_EQ(cancelled->finished, 0);
  EXPECT_EQ(cancelled->result, -1000);
  // Its send was made (in the batch, before the finishes); only its finish is skipped.
  EXPECT_EQ(ReceiveUpTo(p.b, 13), "one two three");
}

// Output that a sender's finish produces (the answer to a pipelined request) goes out
// before the loop sleeps: it does not wait for the next event or tick, even though the
// turn's sends went with the wait.
TEST(EventLoopDeferredSendTest, OutputProducedByAFinishGoesOutBeforeTheLoopSleeps) {
  SteadyClock clock;
  EventLoop loop(clock);
  Listener listener;
  Pair p;
  ASSERT_NO_FATAL_FAILURE(listener.Connect(p));
  int turns = 0;
  loop.AddTurnHook([&] { ++turns; });

  struct Sender : DeferredSender, IoBatch::Client {
    EventLoop* loop = nullptr;
    int fd = -1;
    std::string out;
    Sender* then = nullptr;  // asks for this one's send in its finish
    int finished_at_turn = -1;
    int* turns = nullptr;
    void QueueDeferredSend(IoBatch& batch) override {
      batch.QueueSend(fd, out.data(), out.size(), this);
    }
    void FinishDeferredSend() override {
      finished_at_turn = *turns;
      if (then != nullptr) loop->SendAtTurnEnd(std::exchange(then, nullptr));
      if (out == "second") loop->Stop();
    }
  };
  Sender second;
  second.loop = &loop;
  second.fd = p.a;
  second.out = "second";
  second.turns = &turns;
  Sender first = second;
  first.out = "first ";
  first.then = &second;
  loop.Post([&] { loop.SendAtTurnEnd(&first); });
  std::thread runner([&] { loop.Run(); });
  runner.join();
  EXPECT_GE(first.finished_at_turn, 1);
  EXPECT_EQ(second.finished_at_turn, first.finished_at_turn);
  EXPECT_EQ(ReceiveUpTo(p.b, 12), "first second");
}

}  // namespace
}  // namespace sluice::net
