// The real sluice binary with `store.backend: redis`, against real redis-server
// processes: several instances enforce one limit together, and each on_failure policy
// holds while a Redis node is stopped and restarted under load.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness.h"
#include "redis/redis_process.h"

namespace sluice::integration {
namespace {

using sluice::testing::RedisProcess;

std::string RedisConfig(const std::vector<const RedisProcess*>& nodes, std::string_view on_failure,
                        std::string_view rules, int workers = 2, int command_timeout_ms = 50) {
  std::string list;
  for (const RedisProcess* node : nodes) {
    if (!list.empty()) list += ", ";
    list += fmt::format("\"{}\"", node->address());
  }
  return fmt::format(R"(listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
workers: {}
access_log: {{enabled: false}}
store:
  backend: redis
  redis:
    mode: ring
    nodes: [{}]
    connect_timeout_ms: 200
    command_timeout_ms: {}
  on_failure: {}
rules:
{})",
                     workers, list, command_timeout_ms, on_failure, rules);
}

#define START_SLUICE(name, yaml) \
  SluiceProcess name(yaml);      \
  ASSERT_TRUE(name.started()) << name.error()

// Waits until every worker of `p` has its connection to every node up.
bool WaitStoreUp(const SluiceProcess& p, const std::vector<const RedisProcess*>& nodes) {
  return WaitFor(
      [&] {
        const HttpResponse r = FetchGet(p.admin_port(), "/metrics");
        if (r.status != 200) return false;
        for (const RedisProcess* node : nodes) {
          if (MetricValue(r.body, "sluice_store_node_up",
                          fmt::format(R"(node="{}")", node->address())) != 1) {
            return false;
          }
        }
        return true;
      },
      Millis(5000), Millis(20));
}

// Hour-long fixed windows start on the hour of Redis's clock (this host's): a test
// that counts within one window keeps clear of the turn.
void AvoidHourBoundary(int seconds_needed) {
  const std::time_t now = std::time(nullptr);
  const int into_hour = static_cast<int>(now % 3600);
  if (3600 - into_hour < seconds_needed) {
    std::this_thread::sleep_for(std::chrono::seconds(3600 - into_hour + 1));
  }
}

struct Tally {
  std::atomic<int> allowed{0};
  std::atomic<int> limited{0};
  std::atomic<int> other{0};
  std::string first_failure;
  std::mutex mutex;
  void Count(const HttpResponse& r) {
    if (r.status == 200) {
      ++allowed;
    } else if (r.status == 429) {
      ++limited;
    } else {
      ++other;
      std::lock_guard lock(mutex);
      if (first_failure.empty()) first_failure = r.Describe();
    }
  }
};

// kThreads threads, each with one connection to every instance, send `per_thread`
// requests for one key, going round the instances.
void Hammer(const std::vector<const SluiceProcess*>& instances, std::string_view target,
            const Headers& headers, int threads, int per_thread, Tally& tally) {
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::vector<std::unique_ptr<HttpClient>> connections;
      for (const SluiceProcess* p : instances)
        connections.push_back(std::make_unique<HttpClient>(p->port()));
      for (int i = 0; i < per_thread; ++i) {
        HttpClient& c = *connections[static_cast<size_t>(i + t) % connections.size()];
        tally.Count(c.Get(target, headers));
      }
    });
  }
  for (std::thread& w : workers) w.join();
}

// Two instances with two workers each share one Redis (and, in the second case, a
// ring of two): 16 connections on one key get exactly the limit, for every algorithm.
class SharedLimitTest : public ::testing::TestWithParam<int> {};

TEST_P(SharedLimitTest, TwoInstancesAdmitExactlyTheCapacityTogether) {
  const int node_count = GetParam();
  std::vector<std::unique_ptr<RedisProcess>> redis;
  std::vector<const RedisProcess*> nodes;
  for (int i = 0; i < node_count; ++i) {
    redis.push_back(std::make_unique<RedisProcess>());
    ASSERT_TRUE(redis.back()->Start()) << redis.back()->error();
    nodes.push_back(redis.back().get());
  }
  constexpr int kLimit = 100;
  const char* algorithms[] = {"fixed_window", "sliding_window_log", "sliding_window_counter",
                              "token_bucket", "leaky_bucket",       "gcra"};
  std::string rules;
  for (const char* algorithm : algorithms) {
    // An hour-long period: nothing refills while the test runs.
    rules += fmt::format(R"(  - name: {0}
    match: {{path_prefix: "/{0}"}}
    key: ["header:x-api-key"]
    algorithm: {0}
    limit: {1}
    period: 1h
)",
                         algorithm, kLimit);
  }
  START_SLUICE(a, RedisConfig(nodes, "deny", rules));
  START_SLUICE(b, RedisConfig(nodes, "deny", rules));
  ASSERT_TRUE(WaitStoreUp(a, nodes)) << FetchGet(a.admin_port(), "/metrics").body;
  ASSERT_TRUE(WaitStoreUp(b, nodes));
  AvoidHourBoundary(30);

  for (const char* algorithm : algorithms) {
    SCOPED_TRACE(algorithm);
    Tally tally;
    constexpr int kThreads = 8, kPerThread = 40;
    Hammer({&a, &b}, fmt::format("/{}", algorithm), {{"X-API-Key", "shared"}}, kThreads, kPerThread,
           tally);
    EXPECT_TRUE(tally.first_failure.empty()) << tally.first_failure;
    EXPECT_EQ(tally.allowed.load(), kLimit);
    EXPECT_EQ(tally.limited.load(), kThreads * kPerThread - kLimit);
  }
  // Nothing was decided by the failure policy: every answer came from Redis or from
  // a denial Redis had made.
  for (const SluiceProcess* p : {&a, &b}) {
    const std::string metrics = FetchGet(p->admin_port(), "/metrics").body;
    EXPECT_GT(
        MetricValue(metrics, "sluice_store_operations_total", R"(backend="redis",result="ok")")
            .value_or(0),
        kLimit / 4);
    EXPECT_EQ(
        MetricValue(metrics, "sluice_store_operations_total", R"(backend="redis",result="error")"),
        0);
    EXPECT_EQ(MetricValue(metrics, "sluice_store_operations_total",
                          R"(backend="redis",result="timeout")"),
              0);
    EXPECT_EQ(MetricValue(metrics, "sluice_store_operations_total",
                          R"(backend="redis",result="unavailable")"),
              0);
  }
}

INSTANTIATE_TEST_SUITE_P(Nodes, SharedLimitTest, ::testing::Values(1, 2),
                         [](const auto& info) { return fmt::format("{}_nodes", info.param); });

// Stopping and restarting Redis under load: nothing crashes, every answer comes within
// the command timeout and a margin, the policy decides while Redis is away, and the
// limit is exact again once it is back.
class FailurePolicyTest : public ::testing::TestWithParam<const char*> {};

TEST_P(FailurePolicyTest, RedisStoppedAndRestartedUnderLoad) {
  const std::string policy = GetParam();
  RedisProcess redis;
  ASSERT_TRUE(redis.Start()) << redis.error();
  START_SLUICE(sluice, RedisConfig({&redis}, policy, R"(  - name: wide
    match: {path_prefix: "/wide"}
    key: ["header:x-client"]
    algorithm: token_bucket
    limit: 1000000
    period: 1s
  - name: exact
    match: {path_prefix: "/exact"}
    key: ["header:x-client"]
    algorithm: fixed_window
    limit: 5
    period: 1h
)"));
  ASSERT_TRUE(WaitStoreUp(sluice, {&redis}));
  AvoidHourBoundary(30);

  // Load: 4 threads, each on its own connection and key, until told to stop.
  std::atomic<bool> stop{false};
  std::atomic<bool> redis_down{false};
  std::atomic<int> during_outage_200{0}, during_outage_429{0}, answered{0}, slow{0};
  std::atomic<int64_t> slowest_ms{0};
  Tally tally;
  std::vector<std::thread> load;
  for (int t = 0; t < 4; ++t) {
    load.emplace_back([&, t] {
      HttpClient c(sluice.port());
      while (!stop.load()) {
        const auto start = Clock::now();
        const HttpResponse r = c.Get("/wide", {{"X-Client", fmt::format("load-{}", t)}});
        const int64_t ms = std::chrono::duration_cast<Millis>(Clock::now() - start).count();
        if (ms > slowest_ms.load()) slowest_ms = ms;
        // 50 ms command timeout; the margin is for a loaded 2-core test machine.
        if (ms > 50 + 450) ++slow;
        ++answered;
        if (r.status != 200 && r.status != 429) tally.Count(r);
        if (redis_down.load()) (r.status == 200 ? during_outage_200 : during_outage_429)++;
      }
    });
  }
  std::this_thread::sleep_for(Millis(300));
  ASSERT_TRUE(redis.Stop());
  redis_down = true;
  // Still ready (on_failure decides), and /readyz says the node is down.
  const std::string node_down = fmt::format(R"({{"node":"{}","up":false}})", redis.address());
  std::string ready_body;
  EXPECT_TRUE(WaitFor(
      [&] {
        const HttpResponse r = FetchGet(sluice.admin_port(), "/readyz");
        ready_body = r.body;
        return r.status == 200 && r.body.find(node_down) != std::string::npos;
      },
      Millis(900)))
      << ready_body;
  std::this_thread::sleep_for(Millis(300));
  redis_down = false;
  ASSERT_TRUE(redis.Start()) << redis.error();
  ASSERT_TRUE(WaitStoreUp(sluice, {&redis}));
  EXPECT_EQ(
      FetchGet(sluice.admin_port(), "/readyz").body,
      fmt::format(
          R"({{"status":"ready","store":{{"backend":"redis","nodes":[{{"node":"{}","up":true}}]}}}})"
          "\n",
          redis.address()));
  std::this_thread::sleep_for(Millis(300));
  stop = true;
  for (std::thread& t : load) t.join();

  EXPECT_TRUE(sluice.running()) << sluice.Stderr();
  EXPECT_EQ(tally.other.load(), 0) << tally.first_failure;
  EXPECT_EQ(slow.load(), 0) << "slowest answer: " << slowest_ms.load() << " ms";
  EXPECT_GT(answered.load(), 100);
  if (policy == "deny") {
    EXPECT_GT(during_outage_429.load(), 0);
    EXPECT_EQ(during_outage_200.load(), 0);
  } else {  // allow, and local with a limit far above the load
    EXPECT_GT(during_outage_200.load(), 0);
    EXPECT_EQ(during_outage_429.load(), 0);
  }

  // Back to exact: five 200s, then 429, decided by Redis.
  HttpClient c(sluice.port());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(c.Get("/exact", {{"X-Client", "after"}}).status, 200) << i;
  EXPECT_EQ(c.Get("/exact", {{"X-Client", "after"}}).status, 429);
  const std::string metrics = FetchGet(sluice.admin_port(), "/metrics").body;
  EXPECT_GT(MetricValue(metrics, "sluice_store_operations_total", R"(backend="redis",result="ok")")
                .value_or(0),
            0);
  EXPECT_EQ(
      MetricValue(metrics, "sluice_store_node_up", fmt::format(R"(node="{}")", redis.address())), 1)
      << metrics;
}

INSTANTIATE_TEST_SUITE_P(Policies, FailurePolicyTest, ::testing::Values("allow", "deny", "local"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace sluice::integration
