#include "http/upstream_pool.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "core/check.h"

namespace sluice::http {

size_t UpstreamPool::ServerKeyHash::operator()(const ServerKey& key) const {
  // FNV-1a over the 18 bytes: a worker talks to a handful of servers.
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (const uint8_t byte : key.address) hash = (hash ^ byte) * 0x100000001b3ULL;
  hash = (hash ^ (key.port & 0xff)) * 0x100000001b3ULL;
  hash = (hash ^ (key.port >> 8)) * 0x100000001b3ULL;
  return static_cast<size_t>(hash);
}

UpstreamPool::ServerKey UpstreamPool::KeyOf(const net::Endpoint& server) {
  return ServerKey{server.address.bytes(), server.port};
}

std::vector<UpstreamConnection*>& UpstreamPool::IdleOf(const net::Endpoint& server) {
  // A worker mostly talks to the same server again (one per group, or a few): the last
  // list found is kept. Entries of idle_ are never erased, so the pointer stays valid.
  const ServerKey key = KeyOf(server);
  if (last_idle_ == nullptr || !(key == last_key_)) {
    last_idle_ = &idle_[key];
    last_key_ = key;
  }
  return *last_idle_;
}

UpstreamPool::UpstreamPool(net::EventLoop& loop, const Options& options)
    : loop_(loop), options_(options) {}

UpstreamPool::~UpstreamPool() {
  if (free_timer_ != net::EventLoop::kNoTimer) loop_.Cancel(free_timer_);
  if (purge_timer_ != net::EventLoop::kNoTimer) loop_.Cancel(purge_timer_);
  idle_.clear();
  last_idle_ = nullptr;
  connections_.clear();  // each closes its socket and cancels its timers
  closed_.clear();
}

UpstreamConnection& UpstreamPool::Acquire(const net::Endpoint& server,
                                          UpstreamConnection::Handler& handler) {
  std::vector<UpstreamConnection*>& idle = IdleOf(server);
  while (!idle.empty()) {
    UpstreamConnection* connection = idle.back();
    idle.pop_back();
    if (!connection->idle()) {
      // It failed earlier in this loop turn (the server closed it) and its report,
      // which drops it from this list, has not run yet: drop it now.
      ++stats_.closed_while_idle;
      Free(connection);
      continue;
    }
    connection->set_handler(handler);
    ++stats_.reuses;
    return *connection;
  }
  auto connection =
      std::make_unique<UpstreamConnection>(loop_, server, options_.connection, handler);
  connection->pool_slot_ = connections_.size();
  connections_.push_back(std::move(connection));
  ++stats_.connects;
  UpstreamConnection& made = *connections_.back();
  made.Connect();
  return made;
}

void UpstreamPool::Release(UpstreamConnection& connection) {
  SLUICE_CHECK(connection.pool_slot_ < connections_.size() &&
               connections_[connection.pool_slot_].get() == &connection);
  if (!connection.idle() || options_.max_idle_per_server == 0) {
    Free(&connection);
    return;
  }
  std::vector<UpstreamConnection*>& idle = IdleOf(connection.server());
  SLUICE_CHECK(std::find(idle.begin(), idle.end(), &connection) == idle.end());
  if (idle.size() >= 4 * options_.max_idle_per_server) {  // the hard cap
    UpstreamConnection* oldest = idle.front();
    idle.erase(idle.begin());
    ++stats_.evicted;
    Free(oldest);
  }
  connection.set_handler(*this);
  connection.idle_since_ = loop_.now();
  idle.push_back(&connection);
  if (idle.size() > options_.max_idle_per_server) {
    ArmPurge(idle.front()->idle_since_ + options_.surplus_linger);
  }
}

size_t UpstreamPool::idle_count(const net::Endpoint& server) const {
  const auto it = idle_.find(KeyOf(server));
  return it == idle_.end() ? 0 : it->second.size();
}

size_t UpstreamPool::idle_count() const {
  size_t count = 0;
  for (const auto& [key, idle] : idle_) count += idle.size();
  return count;
}

void UpstreamPool::OnUpstreamError(UpstreamConnection& connection, const UpstreamError& error) {
  // Only idle connections have the pool as their handler.
  const auto it = idle_.find(KeyOf(connection.server()));
  if (it != idle_.end()) {
    std::vector<UpstreamConnection*>& idle = it->second;
    const auto found = std::find(idle.begin(), idle.end(), &connection);
    if (found != idle.end()) idle.erase(found);
  }
  ++stats_.closed_while_idle;
  Free(&connection);
}

void UpstreamPool::ArmPurge(Timestamp at) {
  if (purge_timer_ != net::EventLoop::kNoTimer) {
    if (purge_at_ <= at) return;  // an earlier purge comes first and re-arms
    loop_.Cancel(purge_timer_);
  }
  purge_at_ = at;
  purge_timer_ = loop_.RunAt(at, [this] {
    purge_timer_ = net::EventLoop::kNoTimer;
    PurgeSurplus();
  });
}

void UpstreamPool::PurgeSurplus() {
  const Timestamp now = loop_.now();
  std::optional<Timestamp> next;
  for (auto& [key, idle] : idle_) {
    // The least recently released first: they are at the front.
    while (idle.size() > options_.max_idle_per_server &&
           idle.front()->idle_since_ + options_.surplus_linger <= now) {
      UpstreamConnection* oldest = idle.front();
      idle.erase(idle.begin());
      ++stats_.evicted;
      Free(oldest);
    }
    if (idle.size() > options_.max_idle_per_server) {
      const Timestamp at = idle.front()->idle_since_ + options_.surplus_linger;
      if (!next || at < *next) next = at;
    }
  }
  if (next) ArmPurge(*next);
}

void UpstreamPool::Free(UpstreamConnection* connection) {
  connection->Close();
  const size_t slot = connection->pool_slot_;
  SLUICE_CHECK(slot < connections_.size() && connections_[slot].get() == connection);
  closed_.push_back(std::move(connections_[slot]));
  if (slot + 1 != connections_.size()) {
    connections_[slot] = std::move(connections_.back());
    connections_[slot]->pool_slot_ = slot;
  }
  connections_.pop_back();
  // Freed from the loop, after whatever callback of the connection is on the stack and
  // after any event of this turn that still names it.
  if (free_timer_ == net::EventLoop::kNoTimer) {
    free_timer_ = loop_.RunAt(loop_.now(), [this] {
      free_timer_ = net::EventLoop::kNoTimer;
      closed_.clear();
    });
  }
}

}  // namespace sluice::http
