// One connection to one Redis node, on one worker's event loop.
//
// RESP is hiredis's: commands are encoded by redisFormatCommandArgv and replies
// decoded by its reader. The connection does the rest: a non-blocking connect with a
// time limit, an output buffer that every command of a loop turn is appended to and
// that goes out in one write when the turn ends (automatic pipelining), and replies
// handed over in the order the commands were sent, which is how Redis answers them.
//
// Replies are read into a RedisReply, a tree kept in flat arrays that are reused
// from reply to reply, so reading allocates nothing once warm (hiredis's own reply
// objects cost a malloc per element).
//
// Thread-safety: everything on the loop's thread.
#ifndef SLUICE_STORE_REDIS_CONNECTION_H_
#define SLUICE_STORE_REDIS_CONNECTION_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "net/address.h"
#include "net/event_loop.h"

struct redisReader;

namespace sluice::store {

// One decoded reply: node 0 is the top value; arrays list their elements' nodes.
class RedisReply {
 public:
  enum class Type : uint8_t { kString, kArray, kInteger, kNil, kStatus, kError };
  using Node = uint32_t;
  static constexpr Node kRoot = 0;

  Type type(Node n = kRoot) const { return nodes_[n].type; }
  bool is_error(Node n = kRoot) const { return type(n) == Type::kError; }
  long long integer(Node n = kRoot) const { return nodes_[n].integer; }
  // Strings, status and error text.
  std::string_view text(Node n = kRoot) const {
    return {text_.data() + nodes_[n].text_offset, nodes_[n].text_length};
  }
  size_t size(Node n = kRoot) const { return nodes_[n].elements; }
  Node element(Node array, size_t i) const { return children_[nodes_[array].first_child + i]; }

 private:
  friend class RedisReplyBuilder;
  friend class RedisConnection;
  struct Value {
    Type type = Type::kNil;
    long long integer = 0;
    uint32_t text_offset = 0;
    uint32_t text_length = 0;
    uint32_t elements = 0;
    uint32_t first_child = 0;  // in children_
  };
  void Clear() {
    nodes_.clear();
    text_.clear();
    children_.clear();
  }
  std::vector<Value> nodes_;
  std::string text_;
  std::vector<Node> children_;
};

class RedisConnection final : public net::IoHandler {
 public:
  class Handler {
   public:
    // The connection is up; commands appended from now on are sent.
    virtual void OnConnected() = 0;
    // The reply to the oldest command not yet answered.
    virtual void OnReply(const RedisReply& reply) = 0;
    // The connection failed or was closed: every command not yet answered is lost.
    // Not called from Close() when `notify` is false.
    virtual void OnDisconnected(std::string_view why) = 0;

   protected:
    ~Handler() = default;
  };

  RedisConnection(net::EventLoop& loop, const net::Endpoint& endpoint, Handler& handler);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Starts a non-blocking connect; OnConnected or OnDisconnected follows, the latter
  // at the latest after `timeout`. REQUIRES: closed.
  void Connect(Duration timeout);
  // Closes the socket and drops unsent output; tells the handler unless asked not to.
  void Close(std::string_view why, bool notify = true);

  bool connected() const { return state_ == State::kConnected; }
  bool closed() const { return state_ == State::kClosed; }
  const net::Endpoint& endpoint() const { return endpoint_; }

  // Appends one command to the output; it is written by the next Flush().
  void Append(int argc, const char* const* argv, const size_t* lengths);
  // Writes what was appended. The rest of a partial write goes when the socket
  // is writable again.
  void Flush();
  size_t unsent_bytes() const { return output_.size() - output_sent_; }

  // net::IoHandler
  void OnIoEvent(uint32_t events) override;

 private:
  enum class State { kClosed, kConnecting, kConnected };
  void FinishConnect();
  void ReadReplies();
  void WatchWritable(bool on);

  net::EventLoop& loop_;
  net::Endpoint endpoint_;
  Handler& handler_;
  State state_ = State::kClosed;
  int fd_ = -1;
  bool watching_writable_ = false;
  net::EventLoop::TimerId connect_timer_ = net::EventLoop::kNoTimer;
  std::string output_;
  size_t output_sent_ = 0;
  redisReader* reader_ = nullptr;
  RedisReply reply_;
  // Bumped by Close: a handler callback that closed the connection (or closed and
  // reconnected it) ends the read loop that called it.
  uint64_t generation_ = 0;
};

}  // namespace sluice::store

#endif  // SLUICE_STORE_REDIS_CONNECTION_H_
