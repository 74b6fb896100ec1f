// Drives sluice's Redis store (src/store/redis_store.h) as hard as one event loop can,
// with no HTTP in front, so that the Redis server is the busy side: what a Redis core
// decides per second through the store, and what each decision costs it, can then be
// put next to redis-benchmark's one-key EVALSHA on the same server
// (bench/redis_capacity.sh reads the server's CPU and commandstats around this run).
//
// Closed loop: `--outstanding` decisions are asked at once, and each answer asks the
// next one, for a random key out of `--keyspace`, until `--seconds` have passed. The
// store batches exactly as in the server: per loop turn, one call in flight per node.
//
// Output, one line: decisions, seconds, decisions/s, script calls, decisions per
// call, largest call, answers by policy (must be 0), and this process's CPU µs per
// decision.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "net/address.h"
#include "net/event_loop.h"
#include "store/redis_store.h"

namespace {

using sluice::Algorithm;
using sluice::Decision;
using sluice::Limit;
using sluice::StoreRequest;
using sluice::Timestamp;
using sluice::store::RedisStore;

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// A store key as the gate makes it: rule name, 0x1f, 16 bytes of client hash.
std::string StoreKey(uint64_t client) {
  std::string key = "bench";
  key += '\x1f';
  for (int i = 0; i < 16; ++i) key += static_cast<char>(client >> (8 * (i % 8)) & 0xff);
  return key;
}

class Driver {
 public:
  struct Options {
    uint64_t keyspace = 100000;
    Limit limit;
    Algorithm algorithm = Algorithm::kTokenBucket;
    int outstanding = 256;
  };

  Driver(sluice::net::EventLoop& loop, RedisStore& store, Options options)
      : loop_(loop), store_(store), options_(options), slots_(options.outstanding) {
    for (uint64_t k = 0; k < options_.keyspace; ++k) keys_.push_back(StoreKey(k));
    for (Slot& slot : slots_) slot.driver = this;
  }

  void Start(Timestamp until) {
    until_ = until;
    for (Slot& slot : slots_) Ask(slot);
  }
  uint64_t decided() const { return decided_; }
  uint64_t allowed() const { return allowed_; }
  int in_flight() const { return in_flight_; }

 private:
  struct Slot final : sluice::Store::Completion {
    Driver* driver = nullptr;
    void OnDecision(const Decision& decision) override { driver->Answered(*this, decision); }
  };

  void Ask(Slot& slot) {
    StoreRequest request;
    request.key = keys_[random_() % keys_.size()];
    request.algorithm = options_.algorithm;
    request.limit = options_.limit;
    ++in_flight_;
    store_.Decide(request, loop_.now(), slot);
  }

  void Answered(Slot& slot, const Decision& decision) {
    --in_flight_;
    ++decided_;
    if (decision.allowed) ++allowed_;
    if (loop_.now() >= until_) return;
    // A refusal from the deny cache answers inside Decide; asking again from here
    // would recurse, so such answers ask again on the next turn.
    if (++depth_ > 1) {
      Slot* s = &slot;
      loop_.Post([this, s] { Ask(*s); });
    } else {
      Ask(slot);
    }
    --depth_;
  }

  sluice::net::EventLoop& loop_;
  RedisStore& store_;
  Options options_;
  std::vector<Slot> slots_;
  std::vector<std::string> keys_;
  std::mt19937_64 random_{42};
  Timestamp until_{};
  uint64_t decided_ = 0;
  uint64_t allowed_ = 0;
  int in_flight_ = 0;
  int depth_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Drive sluice's Redis store with random keys, no HTTP"};
  std::string redis = "127.0.0.1:6379";
  double seconds = 10;
  Driver::Options options;
  uint64_t limit = 1000;
  int64_t period_ms = 3'600'000;
  size_t max_batch = 64;
  app.add_option("--redis", redis, "host:port of the one node");
  app.add_option("--seconds", seconds, "how long to drive");
  app.add_option("--keyspace", options.keyspace, "distinct clients");
  app.add_option("--outstanding", options.outstanding, "decisions asked at any time");
  app.add_option("--limit", limit, "token bucket limit (burst the same)");
  app.add_option("--period-ms", period_ms, "the limit's period");
  app.add_option("--max-batch", max_batch, "decisions per script call at most");
  CLI11_PARSE(app, argc, argv);
  options.limit = Limit::PerPeriod(limit, std::chrono::milliseconds(period_ms));

  const auto endpoint = sluice::net::Endpoint::Parse(redis);
  if (!endpoint) {
    std::fprintf(stderr, "bad --redis %s\n", redis.c_str());
    return 2;
  }
  sluice::SteadyClock clock;
  sluice::net::EventLoop loop(clock);
  RedisStore::Options store_options;
  store_options.nodes = {*endpoint};
  store_options.on_failure = sluice::store::OnFailure::kDeny;
  store_options.command_timeout = std::chrono::milliseconds(200);
  store_options.max_batch = max_batch;
  RedisStore store(loop, store_options, nullptr, nullptr);
  Driver driver(loop, store, options);

  // Wait for the node (SCRIPT LOAD answered), then drive; stop when the time is up
  // and every decision asked has been answered.
  double cpu_before = 0;
  Timestamp started{};
  std::function<void()> wait_up = [&] {
    if (!store.node_up(0)) {
      if (loop.now() - started > std::chrono::seconds(5)) {
        std::fprintf(stderr, "redis %s did not come up\n", redis.c_str());
        loop.Stop();
        return;
      }
      loop.RunAt(loop.now() + std::chrono::milliseconds(5), wait_up);
      return;
    }
    cpu_before = CpuSeconds();
    started = loop.now();
    driver.Start(started + std::chrono::duration_cast<sluice::Duration>(
                               std::chrono::duration<double>(seconds)));
    std::function<void()>* check = new std::function<void()>;
    *check = [&, check] {
      if (driver.decided() > 0 && driver.in_flight() == 0) {
        loop.Stop();
        delete check;
        return;
      }
      loop.RunAt(loop.now() + std::chrono::milliseconds(10), *check);
    };
    loop.RunAt(loop.now() + std::chrono::milliseconds(10), *check);
  };
  started = loop.now();
  loop.Post(wait_up);
  loop.Run();
  if (!store.node_up(0) && driver.decided() == 0) return 1;
  const double elapsed = std::chrono::duration<double>(loop.ReadClock() - started).count();
  const double cpu = CpuSeconds() - cpu_before;
  const auto& stats = store.stats();
  const double decided = static_cast<double>(driver.decided());
  std::printf(
      "decisions %llu seconds %.3f decisions_per_s %.0f calls %llu decisions_per_call %.2f "
      "largest_call %llu allowed %llu by_policy %llu driver_cpu_us_per_decision %.3f\n",
      static_cast<unsigned long long>(driver.decided()), elapsed, decided / elapsed,
      static_cast<unsigned long long>(stats.calls),
      stats.calls ? static_cast<double>(stats.decided) / static_cast<double>(stats.calls) : 0.0,
      static_cast<unsigned long long>(stats.largest_call),
      static_cast<unsigned long long>(driver.allowed()),
      static_cast<unsigned long long>(stats.by_policy), cpu * 1e6 / decided);
  return stats.by_policy == 0 ? 0 : 1;
}
