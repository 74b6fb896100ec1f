#include "store/redis_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>

#include "core/check.h"
#include "store/key_hash.h"
#include "store/redis_scripts.h"

namespace sluice::store {
namespace {

// The rule name ends at the first 0x1f of a store key (rule names cannot hold one);
// the client part is 16 raw bytes of hash (src/gate/gate.cc).
constexpr char kRuleSeparator = '\x1f';

std::vector<std::string> NodeNames(const std::vector<net::Endpoint>& nodes) {
  std::vector<std::string> names;
  for (const net::Endpoint& node : nodes) names.push_back(node.ToString());
  return names;
}

void AppendNumber(std::string& out, uint64_t value) {
  char digits[20];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), value);
  out.append(digits, static_cast<size_t>(end - digits));
}

}  // namespace

// The decisions one script call carries, in order, with what is needed to answer
// them: by the reply, or by the policy when there is none.
struct RedisStore::Batch {
  struct Entry {
    Completion* done = nullptr;
    Algorithm algorithm = Algorithm::kTokenBucket;
    Limit limit;
    uint64_t cost = 1;
    uint32_t store_key_offset = 0;  // in store_keys
    uint32_t store_key_length = 0;
    uint32_t redis_key_offset = 0;  // in redis_keys
    uint32_t redis_key_length = 0;
  };
  size_t node = 0;
  std::vector<Entry> entries;
  std::string store_keys;
  std::string redis_keys;
  std::string args;  // ARGV[1] and five numbers per entry, back to back
  std::vector<uint32_t> arg_ends;
  Timestamp sent{};
  bool answered = false;  // by the policy, after a timeout: a late reply is dropped

  void Clear() {
    entries.clear();
    store_keys.clear();
    redis_keys.clear();
    args.clear();
    arg_ends.clear();
    answered = false;
  }
  std::string_view StoreKey(const Entry& e) const {
    return {store_keys.data() + e.store_key_offset, e.store_key_length};
  }
  StoreRequest RequestOf(const Entry& e) const {
    StoreRequest request;
    request.key = StoreKey(e);
    request.algorithm = e.algorithm;
    request.limit = e.limit;
    request.cost = e.cost;
    return request;
  }
};

// What is expected back on a node's connection, in the order it was sent.
struct RedisStore::InFlight {
  enum class Kind { kScriptLoad, kBatch };
  Kind kind;
  RedisStore::Batch* batch = nullptr;  // kBatch
  Timestamp deadline{};
};

struct RedisStore::Node final : RedisConnection::Handler {
  RedisStore& store;
  size_t index;
  std::string name;
  size_t metric_slot = 0;
  RedisConnection connection;
  bool up = false;  // breaker closed: the script is loaded and the node answers
  bool ever_up = false;
  int failures = 0;
  Duration backoff{0};
  net::EventLoop::TimerId retry_timer = net::EventLoop::kNoTimer;
  net::EventLoop::TimerId timeout_timer = net::EventLoop::kNoTimer;
  std::deque<InFlight> in_flight;
  Batch* filling = nullptr;   // this turn's batch
  std::vector<Batch*> lost_;  // scratch for OnDisconnected

  Node(RedisStore& s, size_t i, const net::Endpoint& endpoint)
      : store(s), index(i), name(endpoint.ToString()), connection(s.loop_, endpoint, *this) {}

  void OnConnected() override {
    // The probe: nothing else is sent until the script is loaded.
    const std::string_view script = RedisScriptText();
    const char* argv[] = {"SCRIPT", "LOAD", script.data()};
    const size_t lengths[] = {6, 4, script.size()};
    connection.Append(3, argv, lengths);
    in_flight.push_back(
        {InFlight::Kind::kScriptLoad, nullptr, store.loop_.now() + store.options_.command_timeout});
    connection.Flush();
    store.ArmTimeout(*this);
  }
  void OnReply(const RedisReply& reply) override;
  void OnDisconnected(std::string_view why) override;
  static std::string_view RedisScriptText() { return RedisDecideScript(); }
};

struct RedisStore::DenyEntry {
  Timestamp until{};
  Timestamp reset_at{};
  Algorithm algorithm = Algorithm::kTokenBucket;
  Limit limit;
  uint64_t cost = 0;
  uint64_t capacity = 0;
};

RedisStore::RedisStore(net::EventLoop& loop, Options options, metrics::Registry* registry,
                       metrics::WorkerMetrics* metrics)
    : loop_(loop),
      options_(std::move(options)),
      registry_(registry),
      metrics_(metrics),
      ring_(NodeNames(options_.nodes)),
      random_state_(RandomSeed() | 1) {
  SLUICE_CHECK(!options_.nodes.empty());
  SLUICE_CHECK(options_.on_failure != OnFailure::kLocal || options_.local != nullptr);
  for (size_t i = 0; i < options_.nodes.size(); ++i) {
    nodes_.push_back(std::make_unique<Node>(*this, i, options_.nodes[i]));
    Node& node = *nodes_.back();
    if (registry_ != nullptr) node.metric_slot = registry_->NodeSlot(node.name);
    SetUp(node, false);
    node.connection.Connect(options_.connect_timeout);
  }
  loop_.AddTurnHook([this] { Flush(); });
}

RedisStore::~RedisStore() {
  for (auto& node : nodes_) {
    if (node->retry_timer != net::EventLoop::kNoTimer) loop_.Cancel(node->retry_timer);
    if (node->timeout_timer != net::EventLoop::kNoTimer) loop_.Cancel(node->timeout_timer);
    node->connection.Close("shut down", /*notify=*/false);
  }
}

bool RedisStore::node_up(size_t node) const { return nodes_[node]->up; }

void RedisStore::RedisKey(std::string_view store_key, std::string& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.assign("sluice:{");
  const size_t separator = store_key.find(kRuleSeparator);
  std::string_view client = store_key;
  if (separator != std::string_view::npos) {
    out.append(store_key.substr(0, separator));
    out += ':';
    client = store_key.substr(separator + 1);
  }
  for (const char c : client) {
    const auto byte = static_cast<unsigned char>(c);
    out += kHex[byte >> 4];
    out += kHex[byte & 15];
  }
  out += '}';
}

void RedisStore::SetUp(Node& node, bool up) {
  node.up = up;
  if (metrics_ != nullptr)
    metrics_->node_up[node.metric_slot].store(up ? 1 : 0, std::memory_order_relaxed);
}

RedisStore::Batch* RedisStore::NewBatch(size_t node) {
  Batch* batch;
  if (free_batches_.empty()) {
    batches_.push_back(std::make_unique<Batch>());
    batch = batches_.back().get();
  } else {
    batch = free_batches_.back();
    free_batches_.pop_back();
  }
  batch->Clear();
  batch->node = node;
  return batch;
}

void RedisStore::Recycle(Batch* batch) { free_batches_.push_back(batch); }

void RedisStore::Decide(const StoreRequest& request, Timestamp now, Completion& done) {
  if (DenyCached(request, now, done)) return;
  RedisKey(request.key, key_scratch_);
  // The ring places the hash tag's content, so every instance agrees.
  const std::string_view tag(key_scratch_.data() + 8, key_scratch_.size() - 9);
  Node& node = *nodes_[ring_.NodeFor(tag)];
  if (!node.up) {
    if (metrics_ != nullptr)
      metrics_->store_results[static_cast<size_t>(metrics::StoreResult::kUnavailable)].Add();
    ++stats_.by_policy;
    DecideByPolicy(request, now, done);
    return;
  }
  if (node.filling == nullptr) {
    node.filling = NewBatch(node.index);
    to_flush_.push_back(&node);
  }
  Batch& batch = *node.filling;
  Batch::Entry& entry = batch.entries.emplace_back();
  entry.done = &done;
  entry.algorithm = request.algorithm;
  entry.limit = request.limit;
  entry.cost = request.cost;
  entry.store_key_offset = static_cast<uint32_t>(batch.store_keys.size());
  entry.store_key_length = static_cast<uint32_t>(request.key.size());
  batch.store_keys.append(request.key);
  entry.redis_key_offset = static_cast<uint32_t>(batch.redis_keys.size());
  entry.redis_key_length = static_cast<uint32_t>(key_scratch_.size());
  batch.redis_keys.append(key_scratch_);
  if (batch.entries.size() >= options_.max_batch) {
    node.filling = nullptr;
    Send(node, batch);
  }
}

void RedisStore::Flush() {
  for (Node* node : to_flush_) {
    if (node->filling != nullptr) {
      Batch* batch = node->filling;
      node->filling = nullptr;
      Send(*node, *batch);
    }
    node->connection.Flush();
  }
  to_flush_.clear();
}

void RedisStore::Send(Node& node, Batch& batch) {
  if (!node.up) {  // went down since the batch was started
    AnswerByPolicy(batch);
    Recycle(&batch);
    return;
  }
  // EVALSHA sha n key... "" (algorithm limit period_us burst cost)...
  const size_t n = batch.entries.size();
  for (const Batch::Entry& e : batch.entries) {
    AppendNumber(batch.args, static_cast<uint64_t>(RedisAlgorithmCode(e.algorithm)));
    batch.arg_ends.push_back(static_cast<uint32_t>(batch.args.size()));
    AppendNumber(batch.args, e.limit.limit);
    batch.arg_ends.push_back(static_cast<uint32_t>(batch.args.size()));
    AppendNumber(batch.args,
                 static_cast<uint64_t>(std::chrono::nanoseconds(e.limit.period).count() / 1000));
    batch.arg_ends.push_back(static_cast<uint32_t>(batch.args.size()));
    AppendNumber(batch.args, e.limit.burst);
    batch.arg_ends.push_back(static_cast<uint32_t>(batch.args.size()));
    AppendNumber(batch.args, e.cost);
    batch.arg_ends.push_back(static_cast<uint32_t>(batch.args.size()));
  }
  char count[20];
  const size_t count_length =
      static_cast<size_t>(std::to_chars(count, count + sizeof(count), n).ptr - count);
  argv_.clear();
  lengths_.clear();
  auto add = [this](const char* data, size_t length) {
    argv_.push_back(data);
    lengths_.push_back(length);
  };
  add("EVALSHA", 7);
  add(sha_.data(), sha_.size());
  add(count, count_length);
  for (const Batch::Entry& e : batch.entries)
    add(batch.redis_keys.data() + e.redis_key_offset, e.redis_key_length);
  add("", 0);  // ARGV[1]: the server's TIME
  uint32_t start = 0;
  for (const uint32_t end : batch.arg_ends) {
    add(batch.args.data() + start, end - start);
    start = end;
  }
  node.connection.Append(static_cast<int>(argv_.size()), argv_.data(), lengths_.data());
  batch.sent = loop_.now();
  node.in_flight.push_back({InFlight::Kind::kBatch, &batch, batch.sent + options_.command_timeout});
  ++stats_.calls;
  ArmTimeout(node);
}

void RedisStore::Node::OnReply(const RedisReply& reply) {
  SLUICE_CHECK(!in_flight.empty());
  const InFlight expected = in_flight.front();
  in_flight.pop_front();
  switch (expected.kind) {
    case InFlight::Kind::kScriptLoad:
      if (reply.type() != RedisReply::Type::kString) {
        store.OpenBreaker(*this, reply.is_error() ? reply.text() : "SCRIPT LOAD failed");
        return;
      }
      store.sha_.assign(reply.text());
      failures = 0;
      backoff = Duration(0);
      if (!up && ever_up) fmt::print(stderr, "sluice: redis {}: up again\n", name);
      ever_up = true;
      store.SetUp(*this, true);
      return;
    case InFlight::Kind::kBatch:
      store.OnBatchReply(*this, *expected.batch, reply);
      return;
  }
}

void RedisStore::OnBatchReply(Node& node, Batch& batch, const RedisReply& reply) {
  const bool late = batch.answered;
  if (!late && metrics_ != nullptr)
    metrics_->store_latency.Observe(ToNanos(loop_.now()) - ToNanos(batch.sent));
  const size_t n = batch.entries.size();
  if (reply.type() == RedisReply::Type::kArray &&
      reply.size() == n * static_cast<size_t>(kRedisReplyPerDecision)) {
    node.failures = 0;
    if (!late) {
      long long values[kRedisReplyPerDecision];
      for (size_t i = 0; i < n; ++i) {
        for (int v = 0; v < kRedisReplyPerDecision; ++v)
          values[v] =
              reply.integer(reply.element(RedisReply::kRoot, i * kRedisReplyPerDecision + v));
        const Decision decision = DecisionFromRedisReply(values);
        const Batch::Entry& e = batch.entries[i];
        if (!decision.allowed)
          RememberDenial(batch.StoreKey(e), batch.RequestOf(e), decision, batch.sent);
        ++stats_.decided;
        if (metrics_ != nullptr)
          metrics_->store_results[static_cast<size_t>(metrics::StoreResult::kOk)].Add();
        e.done->OnDecision(decision);
      }
    }
    Recycle(&batch);
    return;
  }
  // An error reply. NOSCRIPT (the script cache was flushed, or a new primary took
  // over): load it again and send the batch once more, if there is time left.
  if (reply.is_error() && reply.text().starts_with("NOSCRIPT") && !late) {
    node.OnConnected();  // queues SCRIPT LOAD; it is answered before the resent batch
    batch.args.clear();
    batch.arg_ends.clear();
    const Timestamp sent = batch.sent;
    Send(node, batch);
    batch.sent = sent;
    node.in_flight.back().deadline = sent + options_.command_timeout;
    node.connection.Flush();
    return;
  }
  if (!late) {
    if (metrics_ != nullptr)
      metrics_->store_results[static_cast<size_t>(metrics::StoreResult::kError)].Add(n);
    AnswerByPolicy(batch);
    RecordFailure(node, reply.is_error() ? reply.text() : "unexpected reply");
  }
  Recycle(&batch);
}

void RedisStore::Node::OnDisconnected(std::string_view why) {
  // Said once when a node that was up goes, not at every failed attempt to return.
  if (up) {
    fmt::print(stderr, "sluice: redis {}: down ({}); on_failure decides until it is back\n", name,
               why);
  }
  // Down first, so that decisions made while the lost ones are answered (the next
  // pipelined request of a connection) go to the policy, not to this connection.
  store.SetUp(*this, false);
  if (timeout_timer != net::EventLoop::kNoTimer) store.loop_.Cancel(timeout_timer);
  timeout_timer = net::EventLoop::kNoTimer;
  lost_.clear();
  for (const InFlight& f : in_flight) {
    if (f.kind == InFlight::Kind::kBatch) lost_.push_back(f.batch);
  }
  in_flight.clear();
  for (Batch* batch : lost_) {
    if (!batch->answered) {
      if (store.metrics_ != nullptr)
        store.metrics_->store_results[static_cast<size_t>(metrics::StoreResult::kError)].Add(
            batch->entries.size());
      store.AnswerByPolicy(*batch);
    }
    store.Recycle(batch);
  }
  lost_.clear();
  store.Reconnect(*this);
}

void RedisStore::ArmTimeout(Node& node) {
  if (node.timeout_timer != net::EventLoop::kNoTimer) return;
  // Answered batches stay in line for their replies; the deadline that matters is
  // the first one still waiting.
  for (const InFlight& f : node.in_flight) {
    if (f.kind == InFlight::Kind::kBatch && f.batch->answered) continue;
    Node* n = &node;
    node.timeout_timer = loop_.RunAt(f.deadline, [this, n] { OnTimeoutTimer(*n); });
    return;
  }
}

void RedisStore::OnTimeoutTimer(Node& node) {
  node.timeout_timer = net::EventLoop::kNoTimer;
  const Timestamp now = loop_.now();
  bool probe_timed_out = false;
  // Marked first and answered after: an answer can lead to new decisions (the next
  // pipelined request of a connection), which may add to in_flight.
  timed_out_.clear();
  for (InFlight& f : node.in_flight) {
    if (f.deadline > now) break;
    if (f.kind == InFlight::Kind::kScriptLoad) {
      probe_timed_out = true;
      continue;
    }
    if (f.batch->answered) continue;
    f.batch->answered = true;
    timed_out_.push_back(f.batch);
  }
  for (Batch* batch : timed_out_) {
    ++stats_.timeouts;
    if (metrics_ != nullptr)
      metrics_->store_results[static_cast<size_t>(metrics::StoreResult::kTimeout)].Add(
          batch->entries.size());
    AnswerByPolicy(*batch);
  }
  const bool any_timed_out = !timed_out_.empty();
  timed_out_.clear();
  // Then the breaker, which may close the connection (its batches, answered now,
  // are recycled there).
  if (probe_timed_out) {
    OpenBreaker(node, "SCRIPT LOAD timed out");
  } else if (any_timed_out) {
    RecordFailure(node, "command timed out");
  }
  if (node.connection.closed()) return;
  ArmTimeout(node);
}

void RedisStore::RecordFailure(Node& node, std::string_view why) {
  if (++node.failures >= options_.failures_to_open) OpenBreaker(node, why);
}

void RedisStore::OpenBreaker(Node& node, std::string_view why) {
  // Closing answers whatever is still in flight and schedules the next attempt.
  if (!node.connection.closed()) {
    node.connection.Close(why);
  } else {
    SetUp(node, false);
  }
}

void RedisStore::Reconnect(Node& node) {
  if (node.retry_timer != net::EventLoop::kNoTimer) return;
  node.backoff = node.backoff == Duration(0) ? options_.min_backoff
                                             : std::min(options_.max_backoff, node.backoff * 2);
  // +-20% jitter, so that the workers and instances of a fleet do not knock on a
  // returning node all at once.
  random_state_ ^= random_state_ << 13;
  random_state_ ^= random_state_ >> 7;
  random_state_ ^= random_state_ << 17;
  const int64_t base = std::chrono::nanoseconds(node.backoff).count();
  const int64_t jitter = static_cast<int64_t>(random_state_ % 401) - 200;  // per mille
  const Duration wait(base + base / 1000 * jitter);
  Node* n = &node;
  node.retry_timer = loop_.RunAt(loop_.now() + wait, [this, n] {
    n->retry_timer = net::EventLoop::kNoTimer;
    if (n->connection.closed()) n->connection.Connect(options_.connect_timeout);
  });
}

void RedisStore::AnswerByPolicy(Batch& batch) {
  batch.answered = true;
  stats_.by_policy += batch.entries.size();
  const Timestamp now = loop_.now();
  for (const Batch::Entry& e : batch.entries) DecideByPolicy(batch.RequestOf(e), now, *e.done);
}

void RedisStore::DecideByPolicy(const StoreRequest& request, Timestamp now, Completion& done) {
  const uint64_t capacity = Capacity(request.algorithm, request.limit);
  switch (options_.on_failure) {
    case OnFailure::kAllow: {
      Decision decision;
      decision.allowed = true;
      decision.limit = capacity;
      decision.remaining = capacity;
      done.OnDecision(decision);
      return;
    }
    case OnFailure::kDeny: {
      // Ask again in a second: by then the node may be back.
      Decision decision;
      decision.limit = capacity;
      decision.reset_after = std::chrono::seconds(1);
      decision.retry_after = std::chrono::seconds(1);
      done.OnDecision(decision);
      return;
    }
    case OnFailure::kLocal:
      options_.local->Decide(request, now, done);
      return;
  }
}

bool RedisStore::DenyCached(const StoreRequest& request, Timestamp now, Completion& done) {
  if (deny_cache_.empty()) return false;
  const auto it = deny_cache_.find(request.key);
  if (it == deny_cache_.end()) return false;
  const DenyEntry& entry = it->second;
  if (now >= entry.until) {
    deny_cache_.erase(it);
    return false;
  }
  // Only a request that is refused for certain: the same policy, at least the cost.
  if (entry.algorithm != request.algorithm || !(entry.limit == request.limit) ||
      request.cost < entry.cost) {
    return false;
  }
  Decision decision;
  decision.limit = entry.capacity;
  decision.retry_after = entry.until - now;
  decision.reset_after = std::max(entry.reset_at - now, decision.retry_after);
  ++stats_.deny_cached;
  if (metrics_ != nullptr)
    metrics_->store_results[static_cast<size_t>(metrics::StoreResult::kDenyCached)].Add();
  done.OnDecision(decision);
  return true;
}

void RedisStore::RememberDenial(std::string_view store_key, const StoreRequest& request,
                                const Decision& decision, Timestamp sent) {
  // Never: the limit itself refuses the cost; a reload may change that, so ask.
  if (decision.retry_after == Decision::kNever ||
      decision.retry_after < std::chrono::milliseconds(1)) {
    return;
  }
  if (deny_cache_.size() >= options_.deny_cache_entries) {
    const Timestamp now = loop_.now();
    std::erase_if(deny_cache_, [now](const auto& item) { return item.second.until <= now; });
    if (deny_cache_.size() >= options_.deny_cache_entries) return;
  }
  DenyEntry& entry = deny_cache_[std::string(store_key)];
  // From when the batch was sent: Redis decided later than that, so the real time
  // of release is no earlier than this.
  entry.until = sent + decision.retry_after;
  entry.reset_at = sent + decision.reset_after;
  entry.algorithm = request.algorithm;
  entry.limit = request.limit;
  entry.cost = request.cost;
  entry.capacity = decision.limit;
}

}  // namespace sluice::store
