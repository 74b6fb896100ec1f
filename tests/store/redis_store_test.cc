// The Redis store against real redis-server processes (tests/redis/redis_process.h):
// decisions, batching, the deny cache, the ring, and each on_failure policy when a
// node is killed, frozen and brought back.
#include "store/redis_store.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/hash_ring.h"
#include "redis/redis_process.h"
#include "store/memory_store.h"
#include "testing/loop_thread.h"

namespace sluice::store {
namespace {

using namespace std::chrono_literals;
using sluice::testing::LoopThread;
using sluice::testing::RedisClient;
using sluice::testing::RedisCluster;
using sluice::testing::RedisProcess;

// Records one answer and when it came (loop thread only).
struct Answer final : Store::Completion {
  bool done = false;
  Decision decision;
  std::chrono::steady_clock::time_point at;
  void OnDecision(const Decision& d) override {
    decision = d;
    done = true;
    at = std::chrono::steady_clock::now();
  }
};

// A store key as the gate makes it: rule name, 0x1f, 16 bytes of client hash.
std::string StoreKey(std::string_view rule, int client) {
  std::string key(rule);
  key += '\x1f';
  std::string client_bytes(16, '\0');
  for (int i = 0; i < 4; ++i)
    client_bytes[static_cast<size_t>(i)] = static_cast<char>(client >> (8 * i));
  return key + client_bytes;
}

StoreRequest Request(const std::string& key, Algorithm algorithm, uint64_t limit, Duration period) {
  StoreRequest request;
  request.key = key;
  request.algorithm = algorithm;
  request.limit = Limit::PerPeriod(limit, period);
  return request;
}

net::Endpoint EndpointOf(const RedisProcess& redis) {
  return *net::Endpoint::Parse(redis.address());
}

// Asks for every request in one loop turn, then waits for all answers.
void DecideAllOn(LoopThread& loop, std::unique_ptr<RedisStore>& store,
                 const std::vector<StoreRequest>& requests, std::vector<Answer>& answers) {
  answers.assign(requests.size(), Answer());
  loop.Call([&] {
    for (size_t i = 0; i < requests.size(); ++i)
      store->Decide(requests[i], loop.loop().now(), answers[i]);
  });
  ASSERT_TRUE(loop.WaitFor([&] {
    for (const Answer& a : answers)
      if (!a.done) return false;
    return true;
  }));
}

class RedisStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(redis_.Start()) << redis_.error(); }
  void TearDown() override {
    if (store_) loop_.Call([&] { store_.reset(); });
  }

  void MakeStore(RedisStore::Options options) {
    if (options.nodes.empty()) options.nodes.push_back(EndpointOf(redis_));
    if (options.local == nullptr) options.local = &memory_;
    loop_.Call(
        [&] { store_ = std::make_unique<RedisStore>(loop_.loop(), options, nullptr, nullptr); });
  }
  bool WaitUp(size_t node = 0) {
    return loop_.WaitFor([&] { return store_->node_up(node); });
  }
  bool WaitDown(size_t node = 0) {
    return loop_.WaitFor([&] { return !store_->node_up(node); });
  }
  void DecideAll(const std::vector<StoreRequest>& requests, std::vector<Answer>& answers) {
    DecideAllOn(loop_, store_, requests, answers);
  }
  RedisStore::Stats Stats() {
    return loop_.Call([&] { return store_->stats(); });
  }

  RedisProcess redis_;
  MemoryStore memory_{MemoryStore::Options{}};
  LoopThread loop_{5s, 5ms};  // WaitFor: 5 s, polled every 5 ms
  std::unique_ptr<RedisStore> store_;
};

TEST_F(RedisStoreTest, DecidesInOrderInOneCallPerBatch) {
  RedisStore::Options options;
  options.max_batch = 64;
  MakeStore(options);
  ASSERT_TRUE(WaitUp());
  const std::string key = StoreKey("api", 7);
  std::vector<StoreRequest> requests(100, Request(key, Algorithm::kFixedWindow, 50, 1min));
  std::vector<Answer> answers;
  DecideAll(requests, answers);
  for (size_t i = 0; i < answers.size(); ++i) {
    EXPECT_EQ(answers[i].decision.allowed, i < 50) << i;
    EXPECT_EQ(answers[i].decision.limit, 50u);
    if (i >= 50) {
      EXPECT_GT(answers[i].decision.retry_after, 0ns);
      EXPECT_LE(answers[i].decision.retry_after, 1min);
    }
  }
  EXPECT_EQ(answers[49].decision.remaining, 0u);
  EXPECT_EQ(answers[0].decision.remaining, 49u);
  // 100 decisions in one loop turn: one call of 64 and one of 36.
  EXPECT_EQ(Stats().calls, 2u);
  EXPECT_EQ(Stats().decided, 100u);

  // The key as the contract names it, with a TTL of at least the state's useful life
  // (to the window's end) and at most twice it, as the first call set it (the second
  // call, a moment later, keeps it).
  std::string redis_key;
  RedisStore::RedisKey(key, redis_key);
  EXPECT_EQ(redis_key, "sluice:{api:07000000000000000000000000000000}");
  RedisClient client(redis_.port());
  const auto ttl = client.Command("PTTL", redis_key);
  auto ms = [](Duration d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  };
  EXPECT_GE(ttl.integer, ms(answers[99].decision.reset_after) - 1000);  // less the time since
  EXPECT_LE(ttl.integer, 2 * ms(answers[0].decision.reset_after) + 3);
}

TEST_F(RedisStoreTest, DenyCacheAnswersAtOnceUntilTheRetryTime) {
  MakeStore({});
  ASSERT_TRUE(WaitUp());
  const std::string key = StoreKey("login", 1);
  std::vector<Answer> answers;
  DecideAll(std::vector<StoreRequest>(3, Request(key, Algorithm::kFixedWindow, 2, 1min)), answers);
  ASSERT_FALSE(answers[2].decision.allowed);
  const uint64_t calls = Stats().calls;

  // Refused locally: answered before Decide returns, and Redis is not asked.
  Answer cached;
  const bool at_once = loop_.Call([&] {
    store_->Decide(Request(key, Algorithm::kFixedWindow, 2, 1min), loop_.loop().now(), cached);
    return cached.done;
  });
  EXPECT_TRUE(at_once);
  EXPECT_FALSE(cached.decision.allowed);
  EXPECT_GT(cached.decision.retry_after, 0ns);
  EXPECT_LE(cached.decision.retry_after, answers[2].decision.retry_after);
  EXPECT_EQ(Stats().deny_cached, 1u);
  EXPECT_EQ(Stats().calls, calls);

  // Another policy for the key (a reload) is not refused from the cache: Redis decides.
  std::vector<Answer> other;
  DecideAll({Request(key, Algorithm::kFixedWindow, 10, 1min)}, other);
  EXPECT_TRUE(other[0].decision.allowed);
  EXPECT_EQ(Stats().calls, calls + 1);
}

// While a node's call is outstanding, the decisions of later loop turns wait and go
// together as one call when its reply is in.
TEST_F(RedisStoreTest, DecisionsWaitingBehindACallGoAsOneCall) {
  RedisStore::Options options;
  options.command_timeout = 5s;  // the node is frozen on purpose for a moment
  MakeStore(options);
  ASSERT_TRUE(WaitUp());
  ASSERT_TRUE(redis_.Pause());
  std::vector<Answer> first(1), second(10), third(10);
  loop_.Call([&] {
    store_->Decide(Request(StoreKey("wait", 0), Algorithm::kTokenBucket, 100, 1s),
                   loop_.loop().now(), first[0]);
  });
  for (auto* answers : {&second, &third}) {
    const int base = answers == &second ? 1 : 11;
    loop_.Call([&] {  // one loop turn each
      for (int i = 0; i < 10; ++i)
        store_->Decide(Request(StoreKey("wait", base + i), Algorithm::kTokenBucket, 100, 1s),
                       loop_.loop().now(), (*answers)[static_cast<size_t>(i)]);
    });
  }
  EXPECT_EQ(Stats().calls, 1u);  // the first; the rest wait for its reply
  ASSERT_TRUE(redis_.Resume());
  ASSERT_TRUE(loop_.WaitFor([&] {
    for (const auto* answers : {&first, &second, &third})
      for (const Answer& a : *answers)
        if (!a.done) return false;
    return true;
  }));
  for (const auto* answers : {&first, &second, &third})
    for (const Answer& a : *answers) EXPECT_TRUE(a.decision.allowed);
  EXPECT_EQ(Stats().calls, 2u);
  EXPECT_EQ(Stats().largest_call, 20u);
  EXPECT_EQ(Stats().decided, 21u);
}

// A flood on one key: the requests that queued behind the call that refused the key
// are answered from the deny cache when its reply comes, without asking again.
TEST_F(RedisStoreTest, RequestsQueuedBehindARefusalAreAnsweredByTheDenyCache) {
  RedisStore::Options options;
  options.command_timeout = 5s;
  MakeStore(options);
  ASSERT_TRUE(WaitUp());
  const std::string key = StoreKey("flood", 1);
  ASSERT_TRUE(redis_.Pause());
  std::vector<Answer> sent(5), queued(10);
  loop_.Call([&] {
    for (Answer& a : sent)
      store_->Decide(Request(key, Algorithm::kFixedWindow, 3, 1min), loop_.loop().now(), a);
  });
  loop_.Call([&] {
    for (Answer& a : queued)
      store_->Decide(Request(key, Algorithm::kFixedWindow, 3, 1min), loop_.loop().now(), a);
  });
  ASSERT_TRUE(redis_.Resume());
  ASSERT_TRUE(loop_.WaitFor([&] {
    for (const auto* answers : {&sent, &queued})
      for (const Answer& a : *answers)
        if (!a.done) return false;
    return true;
  }));
  for (size_t i = 0; i < sent.size(); ++i) EXPECT_EQ(sent[i].decision.allowed, i < 3) << i;
  for (const Answer& a : queued) {
    EXPECT_FALSE(a.decision.allowed);
    EXPECT_GT(a.decision.retry_after, 0ns);
  }
  EXPECT_EQ(Stats().calls, 1u);
  EXPECT_EQ(Stats().decided, 5u);
  EXPECT_EQ(Stats().deny_cached, 10u);
}

TEST_F(RedisStoreTest, LoadsTheScriptAgainAfterScriptFlush) {
  MakeStore({});
  ASSERT_TRUE(WaitUp());
  const std::string key = StoreKey("flush", 1);
  std::vector<Answer> answers;
  DecideAll({Request(key, Algorithm::kTokenBucket, 5, 1s)}, answers);
  EXPECT_TRUE(answers[0].decision.allowed);
  RedisClient client(redis_.port());
  ASSERT_TRUE(client.Command("SCRIPT", "FLUSH").Is("OK"));
  DecideAll({Request(key, Algorithm::kTokenBucket, 5, 1s)}, answers);
  EXPECT_TRUE(answers[0].decision.allowed);
  EXPECT_EQ(answers[0].decision.remaining, 3u);  // the second of five, decided by Redis
  EXPECT_EQ(Stats().by_policy, 0u);
}

TEST_F(RedisStoreTest, RingPlacesEachKeyOnItsNode) {
  RedisProcess second;
  ASSERT_TRUE(second.Start()) << second.error();
  RedisStore::Options options;
  options.nodes = {EndpointOf(redis_), EndpointOf(second)};
  MakeStore(options);
  ASSERT_TRUE(WaitUp(0));
  ASSERT_TRUE(WaitUp(1));
  std::vector<std::string> keys;
  for (int i = 0; i < 400; ++i) keys.push_back(StoreKey("spread", i));
  std::vector<StoreRequest> requests;
  for (const std::string& k : keys) requests.push_back(Request(k, Algorithm::kGcra, 10, 1s));
  std::vector<Answer> answers;
  DecideAll(requests, answers);
  for (const Answer& a : answers) EXPECT_TRUE(a.decision.allowed);

  const core::HashRing ring({redis_.address(), second.address()});
  RedisClient first_client(redis_.port());
  RedisClient second_client(second.port());
  int on_first = 0;
  for (const std::string& k : keys) {
    std::string redis_key;
    RedisStore::RedisKey(k, redis_key);
    const std::string tag = redis_key.substr(8, redis_key.size() - 9);
    RedisClient& owner = ring.NodeFor(tag) == 0 ? first_client : second_client;
    RedisClient& other = ring.NodeFor(tag) == 0 ? second_client : first_client;
    EXPECT_EQ(owner.Command("EXISTS", redis_key).integer, 1) << redis_key;
    EXPECT_EQ(other.Command("EXISTS", redis_key).integer, 0) << redis_key;
    on_first += ring.NodeFor(tag) == 0 ? 1 : 0;
  }
  EXPECT_GT(on_first, 120);
  EXPECT_LT(on_first, 280);
}

// --- Cluster mode: a real 3-primary Redis Cluster --------------------------------------

class RedisClusterStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(cluster_.Start()) << cluster_.error(); }
  void TearDown() override {
    if (store_) loop_.Call([&] { store_.reset(); });
  }
  // Seeded with one node only: the others are learnt from CLUSTER SLOTS.
  void MakeStore() {
    RedisStore::Options options;
    options.cluster = true;
    options.nodes = {*net::Endpoint::Parse(cluster_.Addresses()[0])};
    options.on_failure = OnFailure::kDeny;
    options.command_timeout = 500ms;  // slot moves make a 2-core machine busy
    loop_.Call(
        [&] { store_ = std::make_unique<RedisStore>(loop_.loop(), options, nullptr, nullptr); });
    ASSERT_TRUE(loop_.WaitFor([&] {
      for (int slot = 0; slot < RedisStore::kSlots; ++slot) {
        const int owner = store_->slot_owner(slot);
        if (owner < 0 || !store_->node_up(static_cast<size_t>(owner))) return false;
      }
      return true;
    })) << "the slot map was not learnt";
  }
  void DecideAll(const std::vector<StoreRequest>& requests, std::vector<Answer>& answers) {
    DecideAllOn(loop_, store_, requests, answers);
  }
  RedisStore::Stats Stats() {
    return loop_.Call([&] { return store_->stats(); });
  }

  RedisCluster cluster_;
  LoopThread loop_{5s, 5ms};  // WaitFor: 5 s, polled every 5 ms
  std::unique_ptr<RedisStore> store_;
};

TEST_F(RedisClusterStoreTest, LearnsTheSlotMapAndRoutesEachKeyToItsSlotsPrimary) {
  MakeStore();
  EXPECT_EQ(loop_.Call([&] { return store_->node_count(); }), 3u);
  std::vector<std::string> keys;
  std::vector<StoreRequest> requests;
  for (int i = 0; i < 300; ++i) keys.push_back(StoreKey("slots", i));
  for (const std::string& k : keys) requests.push_back(Request(k, Algorithm::kTokenBucket, 10, 1h));
  std::vector<Answer> answers;
  DecideAll(requests, answers);
  for (const Answer& a : answers) EXPECT_TRUE(a.decision.allowed);
  const RedisStore::Stats stats = Stats();
  EXPECT_EQ(stats.by_policy, 0u);
  EXPECT_EQ(stats.moved, 0u);
  EXPECT_EQ(stats.decided, 300u);
  for (const std::string& k : keys) {
    std::string redis_key;
    RedisStore::RedisKey(k, redis_key);
    const int slot = RedisStore::KeyHashSlot(redis_key);
    EXPECT_EQ(slot, sluice::testing::KeyHashSlot(redis_key));
    const std::optional<size_t> owner = cluster_.PrimaryForSlot(slot);
    ASSERT_TRUE(owner);
    RedisClient client(cluster_.node(*owner).port());
    EXPECT_EQ(client.Command("EXISTS", redis_key).integer, 1) << redis_key;
  }
}

// One key's slot moves to another primary while its client keeps asking: the store
// follows ASK during the move and MOVED after it, Redis decides every request, and
// the limit stays exact across the move (the state moves with the key).
TEST_F(RedisClusterStoreTest, SlotMigrationWhileRequestsFlowKeepsTheLimitExact) {
  MakeStore();
  const std::string key = StoreKey("moving", 42);
  std::string redis_key;
  RedisStore::RedisKey(key, redis_key);
  const int slot = RedisStore::KeyHashSlot(redis_key);
  const size_t from = *cluster_.PrimaryForSlot(slot);
  const size_t to = (from + 1) % 3;
  constexpr int kLimit = 1000;  // not reached while the slot moves: no deny cache
  const StoreRequest request = Request(key, Algorithm::kFixedWindow, kLimit, 1h);

  std::atomic<bool> stop{false};
  std::atomic<int> allowed{0}, refused{0};
  std::thread client([&] {
    while (!stop.load()) {
      std::vector<Answer> answers;
      DecideAll({request, request}, answers);
      for (const Answer& a : answers) (a.decision.allowed ? allowed : refused)++;
      std::this_thread::sleep_for(2ms);
    }
  });
  const auto wait_some = [&](int n) {
    const int target = allowed.load() + refused.load() + n;
    return loop_.WaitFor([&] { return allowed.load() + refused.load() >= target; });
  };
  ASSERT_TRUE(wait_some(10));
  ASSERT_TRUE(cluster_.BeginSlotMigration(slot, from, to)) << cluster_.error();
  ASSERT_TRUE(wait_some(10));
  ASSERT_TRUE(cluster_.MigrateSlotKeys(slot, from, to)) << cluster_.error();
  ASSERT_TRUE(wait_some(10));  // ASK: the key is on `to` now, the slot not yet
  ASSERT_TRUE(cluster_.FinishSlotMigration(slot, from, to)) << cluster_.error();
  ASSERT_TRUE(wait_some(20));  // MOVED, then straight to `to`
  stop = true;
  client.join();

  const RedisStore::Stats stats = Stats();
  EXPECT_EQ(stats.by_policy, 0u) << "every request should have been decided by Redis";
  EXPECT_GE(stats.asked, 1u);
  EXPECT_GE(stats.moved, 1u);
  const std::string owner = loop_.Call([&] {
    const int index = store_->slot_owner(slot);
    return index < 0 ? std::string() : store_->node_name(static_cast<size_t>(index));
  });
  EXPECT_EQ(owner, cluster_.node(to).address());
  EXPECT_EQ(refused.load(), 0);
  // The count moved with the key: what is left of the limit is exactly what was not
  // used before and during the move.
  const int left = kLimit - allowed.load();
  ASSERT_GT(left, 0);
  std::vector<Answer> rest;
  DecideAll(std::vector<StoreRequest>(static_cast<size_t>(left) + 5, request), rest);
  for (size_t i = 0; i < rest.size(); ++i)
    EXPECT_EQ(rest[i].decision.allowed, i < static_cast<size_t>(left)) << i;
  RedisClient target(cluster_.node(to).port());
  EXPECT_EQ(target.Command("EXISTS", redis_key).integer, 1);
}

struct PolicyCase {
  OnFailure policy;
  const char* name;
};

class RedisStoreFailureTest : public RedisStoreTest,
                              public ::testing::WithParamInterface<PolicyCase> {};

// A killed node: the connection breaks, requests are decided by the policy at once,
// and the store reconnects by itself when the node is back.
TEST_P(RedisStoreFailureTest, KilledNodeIsDecidedByThePolicyAndRecovers) {
  RedisStore::Options options;
  options.on_failure = GetParam().policy;
  options.command_timeout = 100ms;
  MakeStore(options);
  ASSERT_TRUE(WaitUp());
  ASSERT_TRUE(redis_.Kill());
  ASSERT_TRUE(WaitDown());

  const std::string key = StoreKey("down", 1);
  std::vector<Answer> answers;
  DecideAll(std::vector<StoreRequest>(3, Request(key, Algorithm::kFixedWindow, 2, 1min)), answers);
  switch (GetParam().policy) {
    case OnFailure::kAllow:
      for (const Answer& a : answers) EXPECT_TRUE(a.decision.allowed);
      break;
    case OnFailure::kDeny:
      for (const Answer& a : answers) {
        EXPECT_FALSE(a.decision.allowed);
        EXPECT_EQ(a.decision.retry_after, 1s);
      }
      break;
    case OnFailure::kLocal:  // the memory store's limit of 2
      EXPECT_TRUE(answers[0].decision.allowed);
      EXPECT_TRUE(answers[1].decision.allowed);
      EXPECT_FALSE(answers[2].decision.allowed);
      break;
  }
  EXPECT_EQ(Stats().by_policy, 3u);

  // Back on the same port: the breaker closes by itself and Redis decides again,
  // from an empty state (the killed server kept nothing).
  ASSERT_TRUE(redis_.Start()) << redis_.error();
  ASSERT_TRUE(WaitUp());
  DecideAll(std::vector<StoreRequest>(3, Request(key, Algorithm::kFixedWindow, 2, 1min)), answers);
  EXPECT_TRUE(answers[0].decision.allowed);
  EXPECT_TRUE(answers[1].decision.allowed);
  EXPECT_FALSE(answers[2].decision.allowed);
  EXPECT_EQ(Stats().decided, 3u);
}

// A frozen node (SIGSTOP) keeps its connections open and answers nothing: each
// request is decided by the policy when command_timeout passes, the breaker opens
// after three timeouts, and the node is used again once it answers.
TEST_P(RedisStoreFailureTest, FrozenNodeTimesOutOpensTheBreakerAndRecovers) {
  RedisStore::Options options;
  options.on_failure = GetParam().policy;
  options.command_timeout = 100ms;
  options.min_backoff = 50ms;
  options.max_backoff = 200ms;
  MakeStore(options);
  ASSERT_TRUE(WaitUp());
  ASSERT_TRUE(redis_.Pause());

  const std::string key = StoreKey("frozen", 1);
  for (int round = 0; round < 3; ++round) {
    std::vector<Answer> answers;
    const auto asked = std::chrono::steady_clock::now();
    DecideAll({Request(key, Algorithm::kTokenBucket, 100, 1s)}, answers);
    // Within the command timeout and a margin for a loaded test machine.
    EXPECT_LT(answers[0].at - asked, 100ms + 400ms) << round;
    EXPECT_EQ(answers[0].decision.allowed, GetParam().policy != OnFailure::kDeny);
  }
  EXPECT_EQ(Stats().timeouts, 3u);
  ASSERT_TRUE(WaitDown());
  // Breaker open: answered at once, without waiting for a timeout.
  Answer at_once;
  EXPECT_TRUE(loop_.Call([&] {
    store_->Decide(Request(key, Algorithm::kTokenBucket, 100, 1s), loop_.loop().now(), at_once);
    return at_once.done;
  }));

  ASSERT_TRUE(redis_.Resume());
  ASSERT_TRUE(WaitUp());
  const uint64_t decided = Stats().decided;
  std::vector<Answer> answers;
  DecideAll({Request(key, Algorithm::kTokenBucket, 100, 1s)}, answers);
  EXPECT_TRUE(answers[0].decision.allowed);
  EXPECT_EQ(Stats().decided, decided + 1);
}

INSTANTIATE_TEST_SUITE_P(Policies, RedisStoreFailureTest,
                         ::testing::Values(PolicyCase{OnFailure::kAllow, "allow"},
                                           PolicyCase{OnFailure::kDeny, "deny"},
                                           PolicyCase{OnFailure::kLocal, "local"}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace sluice::store
