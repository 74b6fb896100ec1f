#include "store/redis_connection.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/check.h"

namespace sluice::store {

// hiredis's reader builds replies through these functions; they append to the
// RedisReply in the reader's privdata and name a value by its node number + 1
// (a null object would mean "out of memory" to hiredis).
class RedisReplyBuilder {
 public:
  static redisReplyObjectFunctions* Functions() {
    static redisReplyObjectFunctions functions = {CreateString, CreateArray, CreateInteger,
                                                  CreateNil, FreeObject};
    return &functions;
  }

 private:
  using Type = RedisReply::Type;

  static RedisReply& ReplyOf(const redisReadTask* task) {
    return *static_cast<RedisReply*>(task->privdata);
  }
  static void* Add(const redisReadTask* task, RedisReply::Value value) {
    RedisReply& reply = ReplyOf(task);
    const auto node = static_cast<RedisReply::Node>(reply.nodes_.size());
    reply.nodes_.push_back(value);
    if (task->parent != nullptr) {
      const auto parent =
          static_cast<RedisReply::Node>(reinterpret_cast<uintptr_t>(task->parent->obj) - 1);
      reply.children_[reply.nodes_[parent].first_child + static_cast<size_t>(task->idx)] = node;
    }
    return reinterpret_cast<void*>(static_cast<uintptr_t>(node) + 1);
  }
  static void* CreateString(const redisReadTask* task, char* text, size_t length) {
    RedisReply& reply = ReplyOf(task);
    RedisReply::Value value;
    value.type = task->type == REDIS_REPLY_ERROR    ? Type::kError
                 : task->type == REDIS_REPLY_STATUS ? Type::kStatus
                                                    : Type::kString;
    value.text_offset = static_cast<uint32_t>(reply.text_.size());
    value.text_length = static_cast<uint32_t>(length);
    reply.text_.append(text, length);
    return Add(task, value);
  }
  static void* CreateArray(const redisReadTask* task, int elements) {
    RedisReply& reply = ReplyOf(task);
    RedisReply::Value value;
    value.type = Type::kArray;
    value.elements = static_cast<uint32_t>(elements);
    value.first_child = static_cast<uint32_t>(reply.children_.size());
    reply.children_.resize(reply.children_.size() + static_cast<size_t>(elements));
    return Add(task, value);
  }
  static void* CreateInteger(const redisReadTask* task, long long integer) {
    RedisReply::Value value;
    value.type = Type::kInteger;
    value.integer = integer;
    return Add(task, value);
  }
  static void* CreateNil(const redisReadTask* task) { return Add(task, RedisReply::Value{}); }
  // The values live in the RedisReply, which is cleared after each reply is handled.
  static void FreeObject(void*) {}
};

RedisConnection::RedisConnection(net::EventLoop& loop, const net::Endpoint& endpoint,
                                 Handler& handler)
    : loop_(loop), endpoint_(endpoint), handler_(handler) {}

RedisConnection::~RedisConnection() { Close("shut down", /*notify=*/false); }

void RedisConnection::Connect(Duration timeout) {
  SLUICE_CHECK(state_ == State::kClosed);
  sockaddr_storage address;
  const socklen_t length = endpoint_.ToSockaddr(&address);
  fd_ = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    handler_.OnDisconnected(std::strerror(errno));
    return;
  }
  const int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  reader_ = redisReaderCreateWithFunctions(RedisReplyBuilder::Functions());
  SLUICE_CHECK(reader_ != nullptr);
  reader_->privdata = &reply_;
  reply_.Clear();
  state_ = State::kConnecting;
  loop_.Add(fd_, EPOLLOUT, this);
  watching_writable_ = true;
  if (connect(fd_, reinterpret_cast<const sockaddr*>(&address), length) != 0 &&
      errno != EINPROGRESS) {
    Close(std::strerror(errno));
    return;
  }
  const uint64_t generation = generation_;
  connect_timer_ = loop_.RunAt(loop_.now() + timeout, [this, generation] {
    connect_timer_ = net::EventLoop::kNoTimer;
    if (generation == generation_ && state_ == State::kConnecting) Close("connect timed out");
  });
}

void RedisConnection::Close(std::string_view why, bool notify) {
  if (state_ == State::kClosed) return;
  ++generation_;
  loop_.Remove(fd_);
  close(fd_);
  fd_ = -1;
  state_ = State::kClosed;
  watching_writable_ = false;
  if (connect_timer_ != net::EventLoop::kNoTimer) loop_.Cancel(connect_timer_);
  connect_timer_ = net::EventLoop::kNoTimer;
  output_.clear();
  output_sent_ = 0;
  redisReaderFree(reader_);
  reader_ = nullptr;
  if (notify) handler_.OnDisconnected(why);
}

void RedisConnection::Append(int argc, const char* const* argv, const size_t* lengths) {
  char* command = nullptr;
  // hiredis takes `const char**`; it does not write through it.
  const int length =
      redisFormatCommandArgv(&command, argc, const_cast<const char**>(argv), lengths);
  SLUICE_CHECK(length > 0);
  output_.append(command, static_cast<size_t>(length));
  std::free(command);
}

void RedisConnection::Flush() {
  if (state_ != State::kConnected || output_sent_ == output_.size()) return;
  while (output_sent_ < output_.size()) {
    const ssize_t n =
        send(fd_, output_.data() + output_sent_, output_.size() - output_sent_, MSG_NOSIGNAL);
    if (n > 0) {
      output_sent_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      WatchWritable(true);
      return;
    }
    Close(n < 0 ? std::strerror(errno) : "write failed");
    return;
  }
  output_.clear();
  output_sent_ = 0;
  WatchWritable(false);
}

void RedisConnection::WatchWritable(bool on) {
  if (on == watching_writable_ || state_ != State::kConnected) return;
  watching_writable_ = on;
  loop_.Modify(fd_, on ? EPOLLIN | EPOLLOUT : EPOLLIN, this);
}

void RedisConnection::OnIoEvent(uint32_t events) {
  if (state_ == State::kClosed) return;  // an event for a socket closed earlier this turn
  if (state_ == State::kConnecting) {
    FinishConnect();
    return;
  }
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
    const uint64_t generation = generation_;
    ReadReplies();
    if (generation != generation_) return;
  }
  if (events & EPOLLOUT) Flush();
}

void RedisConnection::FinishConnect() {
  int error = 0;
  socklen_t length = sizeof(error);
  if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
  if (error != 0) {
    Close(std::strerror(error));
    return;
  }
  loop_.Cancel(connect_timer_);
  connect_timer_ = net::EventLoop::kNoTimer;
  state_ = State::kConnected;
  watching_writable_ = false;
  loop_.Modify(fd_, EPOLLIN, this);
  handler_.OnConnected();
}

void RedisConnection::ReadReplies() {
  const uint64_t generation = generation_;
  char buffer[64 * 1024];
  for (;;) {
    const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
    if (n == 0) {
      Close("closed by the server");
      return;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      Close(std::strerror(errno));
      return;
    }
    if (redisReaderFeed(reader_, buffer, static_cast<size_t>(n)) != REDIS_OK) {
      Close("reply buffer exhausted");
      return;
    }
    for (;;) {
      void* object = nullptr;
      if (redisReaderGetReply(reader_, &object) != REDIS_OK) {
        Close(std::string("protocol error: ") + reader_->errstr);
        return;
      }
      if (object == nullptr) break;  // the rest of a reply has not arrived yet
      handler_.OnReply(reply_);
      if (generation != generation_) return;
      reply_.Clear();
    }
    if (static_cast<size_t>(n) < sizeof(buffer)) return;  // drained; epoll says when more
  }
}

}  // namespace sluice::store
