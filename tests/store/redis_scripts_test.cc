// Differential test: the batch Lua script in a real redis-server against the C++
// algorithms, on the same random traces of batches of (key, cost) at one time each,
// every Decision field compared. Batches name the same key several times, so each
// decision must see the state the previous one in the batch left.
// The script counts whole microseconds; the C++ algorithms do not care about the unit,
// so they are fed the same microsecond values as if they were nanoseconds.
#include "store/redis_scripts.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/algorithms.h"
#include "redis/redis_process.h"

namespace sluice::store {
namespace {

using testing::RedisClient;
using testing::RedisProcess;
using testing::RedisReply;

struct Reference {
  Algorithm algorithm = Algorithm::kTokenBucket;
  core::FixedWindowState fixed;
  core::SlidingWindowCounterState sliding;
  core::TokenBucketState token;
  core::LeakyBucketState leaky;
  core::GcraState gcra;
  core::SlidingWindowLogState log;
  std::vector<int64_t> ring;
  Decision Decide(const Limit& limit, int64_t now_us, uint64_t cost) {
    const Timestamp now = FromNanos(now_us);  // microseconds as the unit
    switch (algorithm) {
      case Algorithm::kFixedWindow:
        return core::DecideFixedWindow(limit, fixed, now, cost);
      case Algorithm::kSlidingWindowCounter:
        return core::DecideSlidingWindowCounter(limit, sliding, now, cost);
      case Algorithm::kTokenBucket:
        return core::DecideTokenBucket(limit, token, now, cost);
      case Algorithm::kLeakyBucket:
        return core::DecideLeakyBucket(limit, leaky, now, cost);
      case Algorithm::kGcra:
        return core::DecideGcra(limit, gcra, now, cost);
      case Algorithm::kSlidingWindowLog:
        // The C++ log keeps one slot per unit of the limit, in a ring the caller owns.
        if (ring.size() != std::max<uint64_t>(limit.limit, 1)) {
          ring.assign(std::max<uint64_t>(limit.limit, 1), 0);
        }
        return core::DecideSlidingWindowLog(limit, log, ring, now, cost);
      default:
        ADD_FAILURE() << "no reference for " << AlgorithmName(algorithm);
        return {};
    }
  }
};

// A decision's argument, as the store sends it.
std::string Arg(Algorithm algorithm, uint64_t limit, int64_t period_us, uint64_t burst,
                uint64_t cost) {
  std::string out;
  AppendRedisDecisionArg(out, algorithm, Limit{limit, std::chrono::microseconds(period_us), burst},
                         cost);
  return out;
}

// The C++ decision (durations in microseconds counted as nanoseconds) as the store
// sees the script's: durations in real microseconds.
Decision InMicros(Decision d) {
  d.reset_after = std::chrono::microseconds(d.reset_after.count());
  if (d.retry_after != Decision::kNever)
    d.retry_after = std::chrono::microseconds(d.retry_after.count());
  return d;
}

std::string Describe(const Decision& d) {
  return "{allowed " + std::to_string(d.allowed) + " limit " + std::to_string(d.limit) +
         " remaining " + std::to_string(d.remaining) + " reset_after_ns " +
         std::to_string(d.reset_after.count()) + " retry_after_ns " +
         std::to_string(d.retry_after.count()) + "}";
}

// One key of a trace: its algorithm and policy (a key keeps both), and the C++ state.
struct TracedKey {
  std::string name;
  Algorithm algorithm = Algorithm::kTokenBucket;
  uint64_t limit = 0;  // the script's numbers
  uint64_t burst = 0;
  int64_t period_us = 0;
  Limit reference_limit;  // the same, with microseconds as the unit
  Reference reference;
};

// A policy within the script's exact range (FitsRedisArithmetic): small and large
// limits, periods from 1 ms to a day.
TracedKey RandomKey(std::mt19937_64& random, Algorithm algorithm, std::string name) {
  const uint64_t limits[] = {0, 1, 2, 3, 5, 10, 100, 1000, 100000};
  const int64_t periods_us[] = {1000, 250'000, 1'000'000, 60'000'000, 86'400'000'000};
  TracedKey key;
  key.name = std::move(name);
  key.algorithm = algorithm;
  key.reference.algorithm = algorithm;
  Limit limit;
  do {
    key.limit = limits[random() % std::size(limits)];
    key.period_us = periods_us[random() % std::size(periods_us)];
    // Bucket algorithms get a burst of their own: smaller, equal or larger.
    key.burst = !UsesBurst(algorithm)
                    ? key.limit
                    : std::max<uint64_t>(1, key.limit / 2 + random() % (key.limit + 2));
    limit = Limit{key.limit, std::chrono::microseconds(key.period_us), key.burst};
  } while (!FitsRedisArithmetic(limit));
  key.reference_limit = Limit{key.limit, Duration(key.period_us), key.burst};
  return key;
}

// A random cost: mostly within the capacity, sometimes past it, sometimes 0 (a query).
uint64_t RandomCost(std::mt19937_64& random, const TracedKey& key) {
  const uint64_t capacity = std::max(key.limit, key.burst);
  return random() % 10 == 0 ? capacity + 1 : random() % (capacity + 1);
}

// One entry of a batch: which key of the trace, and the request's cost.
struct Entry {
  size_t key;
  uint64_t cost;
};

// Decides `batch` in one call at `now_us`, and compares every decision with the C++
// algorithm's on the same key, in order. Returns the number compared (fewer when one
// differed: the rest of the batch is not checked). The script's decisions go to
// `decisions` when given.
int DecideAndCompare(RedisClient& client, const std::string& sha, std::vector<TracedKey>& keys,
                     const std::vector<Entry>& batch, int64_t now_us, const std::string& where,
                     std::vector<Decision>* decisions = nullptr) {
  std::vector<std::string> args = {"EVALSHA", sha, std::to_string(batch.size())};
  for (const Entry& e : batch) args.push_back(keys[e.key].name);
  args.push_back(std::to_string(now_us));
  for (const Entry& e : batch) {
    const TracedKey& k = keys[e.key];
    args.push_back(Arg(k.algorithm, k.limit, k.period_us, k.burst, e.cost));
  }
  const RedisReply got = client.CommandArgv(args);
  EXPECT_EQ(got.elements.size(), kRedisReplyPerDecision * batch.size()) << got.ToString();
  if (got.elements.size() != kRedisReplyPerDecision * batch.size()) return 0;
  int compared = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    TracedKey& k = keys[batch[i].key];
    const Decision want = k.reference.Decide(k.reference_limit, now_us, batch[i].cost);
    const RedisReply* three = &got.elements[kRedisReplyPerDecision * i];
    long long integers[kRedisReplyPerDecision];
    for (int j = 0; j < kRedisReplyPerDecision; ++j) {
      EXPECT_EQ(three[j].type, RedisReply::Type::kInteger) << three[j].ToString();
      integers[j] = three[j].integer;
    }
    const std::string at = where + " entry " + std::to_string(i) + " of " +
                           std::to_string(batch.size()) + ": key " + k.name + " (" +
                           std::string(AlgorithmName(k.algorithm)) + ") limit " +
                           std::to_string(k.limit) + " burst " + std::to_string(k.burst) +
                           " period_us " + std::to_string(k.period_us) + " cost " +
                           std::to_string(batch[i].cost) + " now_us " + std::to_string(now_us);
    // Every field, the limit included (which the store takes from the policy).
    const Decision decision = DecisionFromRedisReply(
        integers, k.algorithm, Limit{k.limit, std::chrono::microseconds(k.period_us), k.burst});
    const bool same = Describe(decision) == Describe(InMicros(want));
    EXPECT_TRUE(same) << at << "\n  script " << integers[0] << " " << integers[1] << " "
                      << integers[2] << " -> " << Describe(decision) << "\n  C++    "
                      << Describe(InMicros(want));
    if (decisions != nullptr) decisions->push_back(decision);
    if (!same) return compared;
    ++compared;
  }
  return compared;
}

class RedisScriptTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = new RedisProcess();
    ASSERT_TRUE(redis_->Start()) << "redis-server did not start";
  }
  static void TearDownTestSuite() {
    delete redis_;
    redis_ = nullptr;
  }
  void SetUp() override {
    client_ = std::make_unique<RedisClient>(redis_->port());
    ASSERT_TRUE(client_->connected()) << client_->error();
    const RedisReply loaded = client_->Command("SCRIPT", "LOAD", RedisDecideScript());
    ASSERT_FALSE(loaded.is_error()) << loaded.ToString();
    sha_ = loaded.text;
  }

  // Random traces over 1 to 4 keys whose algorithms `pick` chooses: batches of 1 to 20
  // entries at one time each, so most batches name a key several times. Times are near
  // today's clock (about 1.8e15 us) and move by steps from 0 to 2 periods of the trace's
  // first key (sometimes exactly one), sometimes backwards (which must count as no time
  // passing). Returns the number of decisions compared.
  template <typename PickAlgorithm>
  int RunTraces(uint64_t seed, const std::string& prefix, int traces, int batches,
                PickAlgorithm pick) {
    std::mt19937_64 random(seed);
    int compared = 0;
    for (int trace = 0; trace < traces; ++trace) {
      std::vector<TracedKey> keys;
      const size_t key_count = 1 + random() % 4;
      for (size_t k = 0; k < key_count; ++k) {
        keys.push_back(RandomKey(random, pick(random),
                                 prefix + ":" + std::to_string(trace) + ":" + std::to_string(k)));
      }
      const int64_t period_us = keys[0].period_us;
      int64_t now_us = 1'800'000'000'000'000 + static_cast<int64_t>(random() % 1'000'000'000);
      for (int b = 0; b < batches; ++b) {
        const uint64_t r = random() % 100;
        if (r < 5) {
          now_us -= static_cast<int64_t>(random() % 1000);
        } else if (r < 10) {
          now_us += period_us;  // exactly a period: the edges of windows and logs
        } else if (r < 60) {
          now_us += static_cast<int64_t>(random() % std::max<int64_t>(1, period_us / 8));
        } else if (r < 95) {
          now_us += static_cast<int64_t>(random() % (2 * period_us + 1));
        }
        std::vector<Entry> batch(1 + random() % 20);
        for (Entry& e : batch) {
          e.key = random() % keys.size();
          e.cost = RandomCost(random, keys[e.key]);
        }
        const std::string where =
            prefix + " trace " + std::to_string(trace) + " batch " + std::to_string(b);
        const int n = DecideAndCompare(*client_, sha_, keys, batch, now_us, where);
        compared += n;
        if (n != static_cast<int>(batch.size())) return compared;
      }
    }
    return compared;
  }

  static RedisProcess* redis_;
  std::unique_ptr<RedisClient> client_;
  std::string sha_;
};
RedisProcess* RedisScriptTest::redis_ = nullptr;

class RedisScriptPerAlgorithmTest : public RedisScriptTest,
                                    public ::testing::WithParamInterface<Algorithm> {};

TEST_P(RedisScriptPerAlgorithmTest, EveryDecisionOfEveryBatchMatchesTheCppAlgorithm) {
  const Algorithm algorithm = GetParam();
  const int compared = RunTraces(static_cast<uint64_t>(algorithm) * 7919 + 1,
                                 "t" + std::to_string(static_cast<int>(algorithm)), 40, 15,
                                 [&](std::mt19937_64&) { return algorithm; });
  EXPECT_GT(compared, 40 * 15 * 8);  // about 10.5 decisions a batch
  // Print the count so a run shows how much was compared.
  std::printf("%s: %d decisions compared\n", std::string(AlgorithmName(algorithm)).c_str(),
              compared);
}

// With the server's clock, a key lives only while its state differs from an empty one,
// and a key that ends a batch empty is deleted.
TEST_P(RedisScriptPerAlgorithmTest, RealTimeKeysExpireWhenTheirStateIsWhole) {
  const Algorithm algorithm = GetParam();
  const std::string key = "ttl:" + std::to_string(RedisAlgorithmCode(algorithm));
  const std::string one = Arg(algorithm, 5, 60'000'000, 5, 1);
  // The same key twice in one call: one TTL, that of the state the second left.
  const RedisReply got = client_->Command("EVALSHA", sha_, 2, key, key, "", one, one);
  ASSERT_EQ(got.elements.size(), 6u) << got.ToString();
  EXPECT_EQ(got.elements[0].integer, 4);  // allowed, 4 remaining
  EXPECT_EQ(got.elements[3].integer, 3);  // the second saw the first's state
  const long long reset_after_ms = got.elements[4].integer / 1000;
  const RedisReply ttl = client_->Command("PTTL", key);
  // At least the state's useful life, at most twice it (plus the margin of whole ms).
  EXPECT_GE(ttl.integer, reset_after_ms - 100);  // less the time this test took
  EXPECT_LE(ttl.integer, 2 * reset_after_ms + 3);
  // A query (cost 0) on a fresh key leaves nothing behind.
  client_->Command("EVALSHA", sha_, 1, key + ":q", "", Arg(algorithm, 5, 60'000'000, 5, 0));
  EXPECT_EQ(client_->Command("EXISTS", key + ":q").integer, 0);
  // A state left at a test time long ago is whole by the server's time: a query
  // deletes it.
  client_->Command("EVALSHA", sha_, 1, key + ":old", 1'000'000, one);
  ASSERT_EQ(client_->Command("EXISTS", key + ":old").integer, 1);
  EXPECT_EQ(client_->Command("PTTL", key + ":old").integer, -1);  // test times set no TTL
  client_->Command("EVALSHA", sha_, 1, key + ":old", "", Arg(algorithm, 5, 60'000'000, 5, 0));
  EXPECT_EQ(client_->Command("EXISTS", key + ":old").integer, 0);
}

// A write keeps the key's TTL while it lasts long enough for the new state (SET
// KEEPTTL), and sets a longer one when the state needs it (SET PX).
TEST_F(RedisScriptTest, TheTtlGrowsOnlyWhenTheStateOutlivesIt) {
  const std::string key = "ttl:grows";
  // Token bucket of 5 a minute: each token takes 12 s to come back.
  auto take = [&](uint64_t tokens) {
    const RedisReply got = client_->Command("EVALSHA", sha_, 1, key, "",
                                            Arg(Algorithm::kTokenBucket, 5, 60'000'000, 5, tokens));
    EXPECT_EQ(got.elements.size(), 3u) << got.ToString();
    return got.elements.size() == 3 ? got.elements[1].integer / 1000 : 0;  // reset_after ms
  };
  const long long first_reset = take(2);
  EXPECT_NEAR(first_reset, 24'000, 5);
  const long long first_ttl = client_->Command("PTTL", key).integer;
  EXPECT_GE(first_ttl, 24'000 - 100);
  EXPECT_LE(first_ttl, 2 * 24'000 + 3);
  // 36 s of useful life: within the first TTL (about 48 s), which is kept.
  const long long second_reset = take(1);
  EXPECT_NEAR(second_reset, 36'000, 100);
  const long long second_ttl = client_->Command("PTTL", key).integer;
  EXPECT_LE(second_ttl, first_ttl);
  EXPECT_GE(second_ttl, second_reset - 100);
  // 60 s: past it, so a new TTL, of up to twice that.
  const long long third_reset = take(2);
  EXPECT_NEAR(third_reset, 60'000, 100);
  const long long third_ttl = client_->Command("PTTL", key).integer;
  EXPECT_GE(third_ttl, third_reset - 100);
  EXPECT_LE(third_ttl, 2 * third_reset + 3);
  EXPECT_GT(third_ttl, second_ttl);
}

INSTANTIATE_TEST_SUITE_P(Scripts, RedisScriptPerAlgorithmTest,
                         ::testing::Values(Algorithm::kTokenBucket, Algorithm::kLeakyBucket,
                                           Algorithm::kFixedWindow,
                                           Algorithm::kSlidingWindowCounter, Algorithm::kGcra,
                                           Algorithm::kSlidingWindowLog),
                         [](const auto& info) { return std::string(AlgorithmName(info.param)); });

// Keys of different algorithms in one call, each decided by its own rules.
TEST_F(RedisScriptTest, MixedAlgorithmsInOneBatchMatchTheCpp) {
  const int compared = RunTraces(424242, "mixed", 60, 15, [](std::mt19937_64& random) {
    return kAllAlgorithms[random() % std::size(kAllAlgorithms)];
  });
  EXPECT_GT(compared, 60 * 15 * 8);
  std::printf("mixed: %d decisions compared\n", compared);
}

// One call with one key of each algorithm, each named three times, by hand.
TEST_F(RedisScriptTest, OneBatchOfEveryAlgorithm) {
  std::vector<TracedKey> keys;
  for (Algorithm algorithm : kAllAlgorithms) {
    TracedKey k;
    k.name = "every:" + std::string(AlgorithmName(algorithm));
    k.algorithm = algorithm;
    k.limit = 2;
    k.burst = 2;
    k.period_us = 1'000'000;
    k.reference_limit = Limit{2, Duration(1'000'000), 2};
    k.reference.algorithm = algorithm;
    keys.push_back(std::move(k));
  }
  std::vector<Entry> batch;
  for (int round = 0; round < 3; ++round) {  // allowed, allowed, denied
    for (size_t k = 0; k < keys.size(); ++k) batch.push_back({k, 1});
  }
  const int64_t now_us = 1'800'000'000'123'456;
  std::vector<Decision> decisions;
  EXPECT_EQ(DecideAndCompare(*client_, sha_, keys, batch, now_us, "every", &decisions), 18);
  ASSERT_EQ(decisions.size(), 18u);
  // Under every algorithm, two allowed and the third denied: each entry saw the ones
  // before it on its key, and none saw another key's.
  for (size_t i = 0; i < decisions.size(); ++i) {
    const Algorithm algorithm = keys[batch[i].key].algorithm;
    EXPECT_EQ(decisions[i].allowed, i < 2 * keys.size()) << AlgorithmName(algorithm) << " " << i;
    EXPECT_EQ(decisions[i].remaining, i < keys.size() ? 1u : 0u) << AlgorithmName(algorithm);
  }
}

// The point of the batch: one MGET for the call and one write per distinct key,
// whatever the number of decisions.
TEST_F(RedisScriptTest, EachKeyIsReadOnceAndWrittenOnce) {
  std::vector<std::string> args = {"EVALSHA", sha_, "16"};
  for (int i = 0; i < 16; ++i) args.push_back("once:" + std::to_string(i % 4));
  args.push_back("");
  for (int i = 0; i < 16; ++i) args.push_back(Arg(Algorithm::kTokenBucket, 100, 1'000'000, 100, 1));
  ASSERT_FALSE(client_->Command("CONFIG", "RESETSTAT").is_error());
  const RedisReply got = client_->CommandArgv(args);
  ASSERT_EQ(got.elements.size(), 48u) << got.ToString();
  EXPECT_EQ(got.elements[45].integer, 96);  // the fourth on its key: 100 - 4 remaining
  const std::string stats = client_->Command("INFO", "commandstats").text;
  EXPECT_NE(stats.find("cmdstat_mget:calls=1,"), std::string::npos) << stats;
  EXPECT_NE(stats.find("cmdstat_set:calls=4,"), std::string::npos) << stats;
  EXPECT_NE(stats.find("cmdstat_time:calls=1,"), std::string::npos) << stats;
  EXPECT_EQ(stats.find("cmdstat_get:"), std::string::npos) << stats;
  EXPECT_EQ(stats.find("cmdstat_pexpire:"), std::string::npos) << stats;
}

// A key of another type (the per-algorithm scripts kept hashes) reads as no state.
TEST_F(RedisScriptTest, AKeyOfAnotherTypeCountsAsEmptyAndIsReplaced) {
  ASSERT_FALSE(client_->Command("HSET", "old:format", "l", 1, "k", 2).is_error());
  const std::string two = Arg(Algorithm::kFixedWindow, 5, 1'000'000, 5, 2);
  RedisReply got = client_->Command("EVALSHA", sha_, 1, "old:format", 1'000'000, two);
  ASSERT_EQ(got.elements.size(), 3u) << got.ToString();
  EXPECT_EQ(got.elements[0].integer, 3);  // allowed, 3 remaining: no state was read
  EXPECT_EQ(client_->Command("TYPE", "old:format").text, "string");
  // So does a string of another size: the format before states carried their expiry
  // ({last, count}, 16 bytes).
  ASSERT_FALSE(client_->Command("SET", "old:size", std::string(16, '\x7f')).is_error());
  got = client_->Command("EVALSHA", sha_, 1, "old:size", 1'000'000, two);
  ASSERT_EQ(got.elements.size(), 3u) << got.ToString();
  EXPECT_EQ(got.elements[0].integer, 3);
}

// A rule whose algorithm a reload changed finds the old state under the same key: it
// reads as none (each state carries its algorithm), and never as a corrupt one.
TEST_F(RedisScriptTest, AStateOfAnotherAlgorithmReadsAsNone) {
  const int64_t now_us = 1'800'000'000'000'000;
  for (const Algorithm first : kAllAlgorithms) {
    for (const Algorithm then : kAllAlgorithms) {
      if (first == then) continue;
      const std::string key =
          "swap:" + std::string(AlgorithmName(first)) + ":" + std::string(AlgorithmName(then));
      // Three of five used under the first algorithm.
      RedisReply got =
          client_->Command("EVALSHA", sha_, 1, key, now_us, Arg(first, 5, 60'000'000, 5, 3));
      ASSERT_EQ(got.elements.size(), 3u) << got.ToString();
      ASSERT_EQ(got.elements[0].integer, 2) << AlgorithmName(first);
      // Under the second, a fresh state: a cost of 4 passes with 1 left.
      got = client_->Command("EVALSHA", sha_, 1, key, now_us, Arg(then, 5, 60'000'000, 5, 4));
      ASSERT_EQ(got.elements.size(), 3u) << got.ToString();
      EXPECT_EQ(got.elements[0].integer, 1)
          << AlgorithmName(first) << " then " << AlgorithmName(then);
    }
  }
}

// A cost past what the script's numbers hold is refused for ever, not read as negative.
TEST_F(RedisScriptTest, AHugeCostIsRefusedForEver) {
  const RedisReply got =
      client_->Command("EVALSHA", sha_, 1, "huge", 1'000'000,
                       Arg(Algorithm::kTokenBucket, 5, 1'000'000, 5, ~uint64_t{0}));
  ASSERT_EQ(got.elements.size(), 3u) << got.ToString();
  EXPECT_EQ(got.elements[0].integer, -1 - 5);  // refused, the bucket untouched
  EXPECT_EQ(got.elements[2].integer, -1);      // never
}

// Writes come after every decision, so a bad entry fails the call with no effect.
TEST_F(RedisScriptTest, AnUnknownAlgorithmFailsTheWholeCall) {
  std::string unknown = Arg(Algorithm::kFixedWindow, 5, 1'000'000, 5, 1);
  unknown[0] = 9;
  const RedisReply got =
      client_->Command("EVALSHA", sha_, 2, "bad:1", "bad:2", 1'000'000,
                       Arg(Algorithm::kFixedWindow, 5, 1'000'000, 5, 1), unknown);
  EXPECT_TRUE(got.IsErrorStartingWith("sluice: unknown algorithm code 9")) << got.ToString();
  EXPECT_EQ(client_->Command("EXISTS", "bad:1").integer, 0);
  // An argument of the wrong size is refused the same way.
  const RedisReply short_arg =
      client_->Command("EVALSHA", sha_, 1, "bad:1", 1'000'000, "2 5 1 5 1");
  EXPECT_TRUE(short_arg.IsErrorStartingWith("sluice: bad decision argument 1"))
      << short_arg.ToString();
}

TEST_F(RedisScriptTest, AnEmptyBatchAnswersAnEmptyArray) {
  const RedisReply got = client_->Command("EVALSHA", sha_, 0, "");
  EXPECT_EQ(got.type, RedisReply::Type::kArray) << got.ToString();
  EXPECT_TRUE(got.elements.empty());
}

TEST(RedisReplyTest, DecisionFromTheThreeIntegers) {
  using std::chrono::milliseconds;
  const Limit per_second{10, std::chrono::seconds(1), 20};
  const long long allowed[] = {7, 1'500'000, 0};
  const Decision a = DecisionFromRedisReply(allowed, Algorithm::kTokenBucket, per_second);
  EXPECT_TRUE(a.allowed);
  EXPECT_EQ(a.limit, 20u);  // a bucket's capacity is its burst
  EXPECT_EQ(a.remaining, 7u);
  EXPECT_EQ(a.reset_after, milliseconds(1500));
  EXPECT_EQ(a.retry_after, Duration(0));
  EXPECT_EQ(DecisionFromRedisReply(allowed, Algorithm::kFixedWindow, per_second).limit, 10u);
  const long long denied[] = {-1 - 2, 2'000, 1'000};  // refused with 2 remaining
  const Decision d = DecisionFromRedisReply(denied, Algorithm::kFixedWindow, per_second);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.remaining, 2u);
  EXPECT_EQ(d.retry_after, milliseconds(1));
  const long long never[] = {-1, 0, -1};
  const Limit zero{0, std::chrono::seconds(1), 5};
  const Decision n = DecisionFromRedisReply(never, Algorithm::kGcra, zero);
  EXPECT_FALSE(n.allowed);
  EXPECT_EQ(n.remaining, 0u);
  EXPECT_EQ(n.retry_after, Decision::kNever);
  EXPECT_EQ(n.limit, 0u);  // a limit of 0 reports 0, whatever the burst
}

TEST(RedisArithmeticTest, PoliciesPastTheExactRangeAreRefused) {
  using std::chrono::hours;
  using std::chrono::nanoseconds;
  EXPECT_TRUE(FitsRedisArithmetic(Limit{26'000, hours(24), 26'000}));   // 2.246e15 < 2^51
  EXPECT_FALSE(FitsRedisArithmetic(Limit{27'000, hours(24), 27'000}));  // 2.333e15 > 2^51
  EXPECT_TRUE(FitsRedisArithmetic(Limit{600'000, hours(1), 600'000}));  // 2.16e15
  EXPECT_FALSE(FitsRedisArithmetic(Limit{10, hours(24), 1'000'000}));   // the burst counts
  EXPECT_FALSE(FitsRedisArithmetic(Limit{10, nanoseconds(1500), 10}));  // not whole us
  EXPECT_TRUE(FitsRedisArithmetic(Limit{0, hours(24), 0}));
}

}  // namespace
}  // namespace sluice::store
