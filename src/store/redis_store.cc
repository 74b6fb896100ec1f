#include "store/redis_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <optional>

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

// CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as Redis Cluster hashes keys.
constexpr std::array<uint16_t, 256> MakeCrc16Table() {
  std::array<uint16_t, 256> table{};
  for (int i = 0; i < 256; ++i) {
    uint16_t crc = static_cast<uint16_t>(i << 8);
    for (int bit = 0; bit < 8; ++bit)
      crc = static_cast<uint16_t>((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
    table[static_cast<size_t>(i)] = crc;
  }
  return table;
}
constexpr std::array<uint16_t, 256> kCrc16Table = MakeCrc16Table();

uint16_t Crc16(std::string_view data) {
  uint16_t crc = 0;
  for (const char c : data)
    crc = static_cast<uint16_t>((crc << 8) ^
                                kCrc16Table[((crc >> 8) ^ static_cast<unsigned char>(c)) & 0xff]);
  return crc;
}

// "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381": the target node.
std::optional<net::Endpoint> RedirectTarget(std::string_view error) {
  const size_t last_space = error.rfind(' ');
  if (last_space == std::string_view::npos) return std::nullopt;
  return net::Endpoint::Parse(error.substr(last_space + 1));
}

}  // namespace

int RedisStore::KeyHashSlot(std::string_view key) {
  // Only the hash tag counts when the key has a non-empty one: "{...}".
  const size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1)
      key = key.substr(open + 1, close - open - 1);
  }
  return Crc16(key) & (kSlots - 1);
}

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
  int slot = -1;  // cluster mode
  int redirects = 0;
  std::vector<Entry> entries;
  std::string store_keys;
  std::string redis_keys;
  std::string args;      // the entries' decision arguments, back to back
  Timestamp sent{};      // first sent: Redis decides no earlier
  Timestamp deadline{};  // its first decision's arrival plus command_timeout
  bool ever_sent = false;
  bool answered = false;  // by the policy, after a timeout: a late reply is dropped

  void Clear() {
    entries.clear();
    store_keys.clear();
    redis_keys.clear();
    args.clear();
    answered = false;
    ever_sent = false;
    slot = -1;
    redirects = 0;
  }
  // Takes over `other`'s decisions, after its own: batches queued behind a call
  // become one call.
  void Absorb(const Batch& other) {
    const auto store_base = static_cast<uint32_t>(store_keys.size());
    const auto redis_base = static_cast<uint32_t>(redis_keys.size());
    for (Entry e : other.entries) {
      e.store_key_offset += store_base;
      e.redis_key_offset += redis_base;
      entries.push_back(e);
    }
    store_keys.append(other.store_keys);
    redis_keys.append(other.redis_keys);
    deadline = std::min(deadline, other.deadline);
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
  enum class Kind { kScriptLoad, kBatch, kClusterSlots, kAsking };
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
  // Ring mode: the batch filling this turn. Sealed at the turn's end into `queued`,
  // which is sent when no batch of this node is waiting for its reply: while one is,
  // the next one grows, so the busier the node the larger its script calls.
  Batch* filling = nullptr;
  std::vector<Batch*> queued;
  int outstanding = 0;        // script calls sent and not replied to (timed out or not)
  bool dirty = false;         // in store.dirty_: something to seal, send or write
  std::vector<Batch*> lost_;  // scratch for OnDisconnected

  Node(RedisStore& s, size_t i, const net::Endpoint& endpoint)
      : store(s), index(i), name(endpoint.ToString()), connection(s.loop_, endpoint, *this) {}

  void OnConnected() override {
    // The probe: nothing else is sent until the script is loaded.
    const std::string_view script = RedisDecideScript();
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
  if (options_.cluster) {
    slot_owner_.assign(kSlots, -1);
    slot_batches_.assign(kSlots, nullptr);
    merge_targets_.assign(kSlots, nullptr);
  }
  SLUICE_CHECK(options_.on_failure != OnFailure::kLocal || options_.local != nullptr);
  for (size_t i = 0; i < options_.nodes.size(); ++i) {
    nodes_.push_back(std::make_unique<Node>(*this, i, options_.nodes[i]));
    Node& node = *nodes_.back();
    if (registry_ != nullptr) node.metric_slot = registry_->NodeSlot(node.name);
    SetUp(node, false);
    node.connection.Connect(options_.connect_timeout);
  }
  loop_.AddTurnHook([this] { Flush(); });
  // Cluster mode: the slot map is asked for when a node first answers, after MOVED,
  // when a node goes down, and every two seconds besides (failovers not seen here).
  if (options_.cluster) RefreshTick();
}

void RedisStore::RefreshTick() {
  refresh_timer_ = loop_.RunAt(loop_.now() + std::chrono::seconds(2), [this] {
    refresh_timer_ = net::EventLoop::kNoTimer;
    RefreshSlots();
    RefreshTick();
  });
}

RedisStore::~RedisStore() {
  if (refresh_timer_ != net::EventLoop::kNoTimer) loop_.Cancel(refresh_timer_);
  for (auto& node : nodes_) {
    if (node->retry_timer != net::EventLoop::kNoTimer) loop_.Cancel(node->retry_timer);
    if (node->timeout_timer != net::EventLoop::kNoTimer) loop_.Cancel(node->timeout_timer);
    node->connection.Close("shut down", /*notify=*/false);
  }
}

bool RedisStore::node_up(size_t node) const { return nodes_[node]->up; }

const std::string& RedisStore::node_name(size_t node) const { return nodes_[node]->name; }

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

void RedisStore::Count(metrics::StoreResult result, uint64_t decisions) {
  if (metrics_ != nullptr) metrics_->store_results[static_cast<size_t>(result)].Add(decisions);
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
  // Ring: the ring places the hash tag's content, so every instance agrees. Cluster:
  // the slot of the tag, and a batch per slot.
  const std::string_view tag(key_scratch_.data() + 8, key_scratch_.size() - 9);
  int slot = -1;
  Node* node;
  if (options_.cluster) {
    slot = KeyHashSlot(key_scratch_);
    const int owner = slot_owner_[static_cast<size_t>(slot)];
    node = owner >= 0 ? nodes_[static_cast<size_t>(owner)].get() : nullptr;
  } else {
    node = nodes_[ring_.NodeFor(tag)].get();
  }
  if (node == nullptr || !node->up) {
    Count(metrics::StoreResult::kUnavailable);
    ++stats_.by_policy;
    DecideByPolicy(request, now, done);
    return;
  }
  Batch*& filling = options_.cluster ? slot_batches_[static_cast<size_t>(slot)] : node->filling;
  if (filling == nullptr) {
    filling = NewBatch(node->index);
    filling->slot = slot;
    filling->deadline = loop_.now() + options_.command_timeout;
    if (options_.cluster) {
      touched_slots_.push_back(slot);
    } else {
      MarkDirty(*node);
    }
  }
  Batch& batch = *filling;
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
    filling = nullptr;
    Queue(*node, batch);
  }
}

void RedisStore::MarkDirty(Node& node) {
  if (node.dirty) return;
  node.dirty = true;
  dirty_.push_back(&node);
}

void RedisStore::Queue(Node& node, Batch& batch) {
  node.queued.push_back(&batch);
  MarkDirty(node);
  // While a call is outstanding the queued batch waits; its own deadline holds.
  ArmTimeout(node);
}

void RedisStore::Flush() {
  // Answering a decision here (from the deny cache, or by the policy for a node that
  // went down) can start new ones, the next pipelined request of a connection, so
  // this repeats until nothing new is left to seal or send.
  while (!dirty_.empty() || !touched_slots_.empty()) {
    for (const int slot : touched_slots_) {
      Batch*& batch = slot_batches_[static_cast<size_t>(slot)];
      if (batch == nullptr) continue;
      Batch* b = batch;
      batch = nullptr;
      Queue(*nodes_[b->node], *b);
    }
    touched_slots_.clear();
    flushing_.swap(dirty_);
    for (Node* node : flushing_) {
      node->dirty = false;
      if (node->filling != nullptr) {
        node->queued.push_back(node->filling);
        node->filling = nullptr;
        ArmTimeout(*node);
      }
    }
    for (Node* node : flushing_) {
      if (node->outstanding == 0 && !node->queued.empty()) SendQueued(*node);
      if (node->connection.connected() && node->connection.unsent_bytes() > 0)
        node->connection.Flush();
    }
    flushing_.clear();
  }
}

// Sends every queued batch of the node, less the decisions that the deny cache now
// answers: a key refused by the reply just received is not asked about again.
void RedisStore::SendQueued(Node& node) {
  sending_.swap(node.queued);
  // Batches that queued up behind the last call (one per loop turn, or per slot and
  // turn in cluster mode) go as few calls as max_batch allows. A batch joins the
  // latest one of its slot (ring mode: all are slot -1), so decisions of one key stay
  // in order; batches of different slots are independent.
  size_t kept = 0;
  Batch* ring_target = nullptr;
  for (size_t i = 0; i < sending_.size(); ++i) {
    Batch* next = sending_[i];
    Batch*& target =
        next->slot >= 0 ? merge_targets_[static_cast<size_t>(next->slot)] : ring_target;
    if (target != nullptr && target->entries.size() + next->entries.size() <= options_.max_batch) {
      target->Absorb(*next);
      Recycle(next);
    } else {
      sending_[kept++] = next;
      target = next;
    }
  }
  sending_.resize(kept);
  for (Batch* batch : sending_) {
    if (batch->slot >= 0) merge_targets_[static_cast<size_t>(batch->slot)] = nullptr;
  }
  const Timestamp now = loop_.now();
  for (Batch* batch : sending_) {
    auto& entries = batch->entries;
    size_t kept = 0;
    for (size_t i = 0; i < entries.size(); ++i) {
      if (!deny_cache_.empty() && DenyCached(batch->RequestOf(entries[i]), now, *entries[i].done))
        continue;
      entries[kept++] = entries[i];
    }
    entries.resize(kept);
    if (entries.empty()) {
      Recycle(batch);
    } else {
      Send(node, *batch);
    }
  }
  sending_.clear();
}

// Queues the batch's script call on `node`; the write happens in Flush. A batch sent
// again (NOSCRIPT, MOVED, ASK) keeps its first deadline.
void RedisStore::Send(Node& node, Batch& batch) {
  if (!node.up) {  // went down since the batch was started
    Count(metrics::StoreResult::kUnavailable, batch.entries.size());
    AnswerByPolicy(batch);
    Recycle(&batch);
    return;
  }
  batch.node = node.index;
  if (!batch.ever_sent) {
    batch.ever_sent = true;
    batch.sent = loop_.now();
  }
  // EVALSHA sha n key... "" decision...
  batch.args.clear();
  const size_t n = batch.entries.size();
  for (const Batch::Entry& e : batch.entries)
    AppendRedisDecisionArg(batch.args, e.algorithm, e.limit, e.cost);
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
  for (size_t i = 0; i < n; ++i)
    add(batch.args.data() + i * kRedisDecisionArgSize, kRedisDecisionArgSize);
  node.connection.Append(static_cast<int>(argv_.size()), argv_.data(), lengths_.data());
  node.in_flight.push_back({InFlight::Kind::kBatch, &batch, batch.deadline});
  ++node.outstanding;
  ++stats_.calls;
  stats_.largest_call = std::max<uint64_t>(stats_.largest_call, n);
  MarkDirty(node);
  ArmTimeout(node);
}

RedisStore::Node& RedisStore::NodeAt(const net::Endpoint& endpoint) {
  const std::string name = endpoint.ToString();
  for (auto& node : nodes_) {
    if (node->name == name) return *node;
  }
  nodes_.push_back(std::make_unique<Node>(*this, nodes_.size(), endpoint));
  Node& node = *nodes_.back();
  if (registry_ != nullptr) node.metric_slot = registry_->NodeSlot(node.name);
  SetUp(node, false);
  node.connection.Connect(options_.connect_timeout);
  return node;
}

void RedisStore::RefreshSlots() {
  // One request at a time; one unanswered for a second is given up on.
  if (!options_.cluster) return;
  if (refresh_pending_ && loop_.now() - refresh_sent_ < std::chrono::seconds(1)) return;
  refresh_pending_ = false;
  for (auto& node : nodes_) {
    if (!node->up) continue;
    const char* argv[] = {"CLUSTER", "SLOTS"};
    const size_t lengths[] = {7, 5};
    node->connection.Append(2, argv, lengths);
    node->in_flight.push_back(
        {InFlight::Kind::kClusterSlots, nullptr, loop_.now() + options_.command_timeout});
    MarkDirty(*node);
    refresh_pending_ = true;
    refresh_sent_ = loop_.now();
    return;
  }
}

// CLUSTER SLOTS: [[start, end, [ip, port, id...], replicas...], ...]. An empty ip
// means the node that answered.
void RedisStore::OnSlotsReply(Node& from, const RedisReply& reply) {
  refresh_pending_ = false;
  if (reply.type() != RedisReply::Type::kArray) return;
  ++stats_.slot_refreshes;
  for (size_t i = 0; i < reply.size(); ++i) {
    const RedisReply::Node range = reply.element(RedisReply::kRoot, i);
    if (reply.type(range) != RedisReply::Type::kArray || reply.size(range) < 3) continue;
    const long long first = reply.integer(reply.element(range, 0));
    const long long last = reply.integer(reply.element(range, 1));
    const RedisReply::Node primary = reply.element(range, 2);
    if (reply.type(primary) != RedisReply::Type::kArray || reply.size(primary) < 2) continue;
    const std::string_view host = reply.text(reply.element(primary, 0));
    const long long port = reply.integer(reply.element(primary, 1));
    std::optional<net::Endpoint> endpoint;
    if (host.empty()) {
      endpoint = from.connection.endpoint();
      endpoint->port = static_cast<uint16_t>(port);
    } else {
      endpoint = net::Endpoint::Parse(fmt::format("{}:{}", host, port));
    }
    if (!endpoint || first < 0 || last >= kSlots || first > last) continue;
    const int owner = static_cast<int>(NodeAt(*endpoint).index);
    for (long long slot = first; slot <= last; ++slot)
      slot_owner_[static_cast<size_t>(slot)] = owner;
  }
}

// MOVED: the slot has a new owner; ASK: this one key set is being imported by
// another node, which answers it after ASKING. Either way the batch goes there, with
// the time it has left.
bool RedisStore::FollowRedirect(Node& node, Batch& batch, const RedisReply& reply) {
  const bool moved = reply.text().starts_with("MOVED ");
  const bool ask = reply.text().starts_with("ASK ");
  if (!options_.cluster || (!moved && !ask)) return false;
  const std::optional<net::Endpoint> target = RedirectTarget(reply.text());
  if (!target || ++batch.redirects > 3) return false;
  Node& to = NodeAt(*target);
  if (moved) {
    ++stats_.moved;
    if (batch.slot >= 0) slot_owner_[static_cast<size_t>(batch.slot)] = static_cast<int>(to.index);
    RefreshSlots();
  } else {
    ++stats_.asked;
  }
  if (!to.up) return false;
  if (ask) {
    const char* argv[] = {"ASKING"};
    const size_t lengths[] = {6};
    to.connection.Append(1, argv, lengths);
    to.in_flight.push_back({InFlight::Kind::kAsking, nullptr, batch.deadline});
  }
  Send(to, batch);
  return true;
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
      store.RefreshSlots();
      return;
    case InFlight::Kind::kBatch:
      // The next batch may go now; Flush sends it at the end of this turn, after the
      // reply's denials are in the deny cache.
      if (--outstanding == 0 && !queued.empty()) store.MarkDirty(*this);
      store.OnBatchReply(*this, *expected.batch, reply);
      return;
    case InFlight::Kind::kClusterSlots:
      store.OnSlotsReply(*this, reply);
      return;
    case InFlight::Kind::kAsking:
      return;  // +OK; the batch that follows is what counts
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
      stats_.decided += n;
      Count(metrics::StoreResult::kOk, n);
      long long values[kRedisReplyPerDecision];
      for (size_t i = 0; i < n; ++i) {
        for (int v = 0; v < kRedisReplyPerDecision; ++v)
          values[v] =
              reply.integer(reply.element(RedisReply::kRoot, i * kRedisReplyPerDecision + v));
        const Batch::Entry& e = batch.entries[i];
        const Decision decision = DecisionFromRedisReply(values, e.algorithm, e.limit);
        if (!decision.allowed)
          RememberDenial(batch.StoreKey(e), batch.RequestOf(e), decision, batch.sent);
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
    Send(node, batch);
    return;
  }
  if (reply.is_error() && !late && FollowRedirect(node, batch, reply)) return;
  if (!late) {
    Count(metrics::StoreResult::kError, n);
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
  // Queued batches are answered by the policy when Flush finds the node down.
  outstanding = 0;
  if (!queued.empty()) store.MarkDirty(*this);
  for (Batch* batch : lost_) {
    if (!batch->answered) {
      store.Count(metrics::StoreResult::kError, batch->entries.size());
      store.AnswerByPolicy(*batch);
    }
    store.Recycle(batch);
  }
  lost_.clear();
  store.Reconnect(*this);
  store.RefreshSlots();  // cluster: a replica may be taking over
}

void RedisStore::ArmTimeout(Node& node) {
  if (node.timeout_timer != net::EventLoop::kNoTimer) return;
  // Answered batches stay in line for their replies; the deadline that matters is
  // the earliest of those still waiting, sent or queued. Not the first in line: a
  // batch keeps the deadline it got when it was started, so one that waited in the
  // queue, or was resent after NOSCRIPT or a redirection, can be behind commands
  // with later deadlines.
  std::optional<Timestamp> first;
  auto consider = [&first](Timestamp deadline) {
    if (!first || deadline < *first) first = deadline;
  };
  for (const InFlight& f : node.in_flight) {
    // CLUSTER SLOTS and ASKING have no deadline of their own: a batch behind them does.
    if (f.kind == InFlight::Kind::kClusterSlots || f.kind == InFlight::Kind::kAsking) continue;
    if (f.kind == InFlight::Kind::kBatch && f.batch->answered) continue;
    consider(f.deadline);
  }
  for (const Batch* batch : node.queued) consider(batch->deadline);
  if (!first) return;
  Node* n = &node;
  node.timeout_timer = loop_.RunAt(*first, [this, n] { OnTimeoutTimer(*n); });
}

void RedisStore::OnTimeoutTimer(Node& node) {
  node.timeout_timer = net::EventLoop::kNoTimer;
  const Timestamp now = loop_.now();
  bool probe_timed_out = false;
  // Marked first and answered after: an answer can lead to new decisions (the next
  // pipelined request of a connection), which may queue batches.
  timed_out_.clear();
  for (InFlight& f : node.in_flight) {
    // Every entry, not up to the first one not due: deadlines are not in line order
    // (ArmTimeout).
    if (f.deadline > now || f.kind == InFlight::Kind::kClusterSlots ||
        f.kind == InFlight::Kind::kAsking) {
      continue;
    }
    if (f.kind == InFlight::Kind::kScriptLoad) {
      probe_timed_out = true;
      continue;
    }
    if (f.kind != InFlight::Kind::kBatch || f.batch->answered) continue;
    f.batch->answered = true;
    timed_out_.push_back(f.batch);
  }
  // Queued batches that waited their whole time behind an unanswered call are not
  // sent at all; they are recycled here, having no reply to wait for.
  size_t unsent = 0;
  std::erase_if(node.queued, [&](Batch* batch) {
    if (batch->deadline > now) return false;
    timed_out_.push_back(batch);
    ++unsent;
    return true;
  });
  for (size_t i = 0; i < timed_out_.size(); ++i) {
    Batch* batch = timed_out_[i];
    ++stats_.timeouts;
    Count(metrics::StoreResult::kTimeout, batch->entries.size());
    AnswerByPolicy(*batch);
    if (i >= timed_out_.size() - unsent) Recycle(batch);
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
  Count(metrics::StoreResult::kDenyCached);
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
