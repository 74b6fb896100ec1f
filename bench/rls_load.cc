// A load client for Envoy's rate limit API (bench/rls.sh): keeps --concurrency
// ShouldRateLimit calls in flight on one channel for --duration, each with one
// descriptor whose value cycles over --keys distinct values, and prints calls/s and
// latency percentiles. gRPC's callback API: a finished call starts the next from its
// completion, so the client spends no thread per call.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"

namespace {

using envoy::service::ratelimit::v3::RateLimitRequest;
using envoy::service::ratelimit::v3::RateLimitResponse;
using envoy::service::ratelimit::v3::RateLimitService;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string target = "127.0.0.1:8081";
  std::string domain = "bench";
  std::string key = "remote_address";
  int concurrency = 64;
  int descriptors = 1;  // per call: remote_address, then path, then user
  int keys = 10000;
  double duration_s = 8;
};

class Load {
 public:
  explicit Load(const Options& options)
      : options_(options),
        stub_(RateLimitService::NewStub(
            grpc::CreateChannel(options.target, grpc::InsecureChannelCredentials()))) {}

  int Run() {
    start_ = Clock::now();
    end_ = start_ + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(options_.duration_s));
    in_flight_ = options_.concurrency;
    for (int i = 0; i < options_.concurrency; ++i) Issue();
    std::unique_lock lock(mutex_);
    // Every call object gone too: the last one is destroyed by gRPC after its callback
    // returned, and the process must not exit under it (that corrupted the heap at exit).
    done_.wait(lock, [&] { return in_flight_ == 0 && live_calls_ == 0; });
    const double seconds = std::chrono::duration<double>(last_ - start_).count();
    std::sort(latencies_us_.begin(), latencies_us_.end());
    const auto at = [&](double q) {
      return latencies_us_.empty()
                 ? 0u
                 : latencies_us_[std::min(latencies_us_.size() - 1,
                                          static_cast<size_t>(q * latencies_us_.size()))];
    };
    fmt::print(
        "calls {} failed {} over_limit {} seconds {:.3f} calls_per_s {:.0f} p50_us {} "
        "p99_us {} max_us {}\n",
        ok_, failed_, over_, seconds, ok_ / seconds, at(0.5), at(0.99),
        latencies_us_.empty() ? 0u : latencies_us_.back());
    return failed_ == 0 && ok_ > 0 ? 0 : 1;
  }

 private:
  // Counts the calls alive; the first member of a Call, so it is destroyed last, after
  // the call's gRPC context.
  struct Alive {
    explicit Alive(Load& l) : load(l) {
      std::lock_guard lock(load.mutex_);
      ++load.live_calls_;
    }
    ~Alive() {
      std::lock_guard lock(load.mutex_);
      if (--load.live_calls_ == 0) load.done_.notify_all();
    }
    Load& load;
  };
  struct Call {
    explicit Call(Load& l) : alive(l) {}
    Alive alive;
    grpc::ClientContext context;
    RateLimitRequest request;
    RateLimitResponse response;
    Clock::time_point started;
  };

  void Issue() {
    auto call = std::make_shared<Call>(*this);
    call->request.set_domain(options_.domain);
    auto* entry = call->request.add_descriptors()->add_entries();
    entry->set_key(options_.key);
    const int k = next_key_.fetch_add(1, std::memory_order_relaxed) % options_.keys;
    entry->set_value(fmt::format("10.{}.{}.{}", k / 65536 % 256, k / 256 % 256, k % 256));
    // More descriptors, as Envoy sends one per rate limit action of the route.
    static constexpr const char* kMoreKeys[] = {"path", "user"};
    for (int d = 1; d < options_.descriptors && d <= 2; ++d) {
      auto* more = call->request.add_descriptors()->add_entries();
      more->set_key(kMoreKeys[d - 1]);
      more->set_value(fmt::format("/api/{}", k % 1000));
    }
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    call->started = Clock::now();
    stub_->async()->ShouldRateLimit(&call->context, &call->request, &call->response,
                                    [this, call](grpc::Status status) { Done(*call, status); });
  }

  void Done(Call& call, const grpc::Status& status) {
    const Clock::time_point now = Clock::now();
    bool again;
    {
      std::lock_guard lock(mutex_);
      if (status.ok()) {
        ++ok_;
        if (call.response.overall_code() == RateLimitResponse::OVER_LIMIT) ++over_;
        latencies_us_.push_back(static_cast<uint32_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(now - call.started).count()));
      } else {
        ++failed_;
        if (failed_ <= 3) fmt::print(stderr, "call failed: {}\n", status.error_message());
      }
      last_ = now;
      again = now < end_ && failed_ < 100;
      if (!again && --in_flight_ == 0) done_.notify_all();
    }
    if (again) Issue();
  }

  const Options options_;
  std::unique_ptr<RateLimitService::Stub> stub_;
  Clock::time_point start_, end_, last_;
  std::mutex mutex_;
  std::condition_variable done_;
  int in_flight_ = 0;
  int live_calls_ = 0;  // Call objects not yet destroyed
  std::atomic<int> next_key_{0};
  uint64_t ok_ = 0, failed_ = 0, over_ = 0;
  std::vector<uint32_t> latencies_us_;
};

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app("Load for Envoy's rate limit API (ShouldRateLimit)");
  app.add_option("--target", options.target, "host:port of the service");
  app.add_option("--domain", options.domain);
  app.add_option("--key", options.key, "The descriptor entry's key");
  app.add_option("--concurrency", options.concurrency, "Calls in flight");
  app.add_option("--keys", options.keys, "Distinct descriptor values, cycled");
  app.add_option("--descriptors", options.descriptors, "Descriptors per call (1 to 3)");
  app.add_option("--duration", options.duration_s, "Seconds");
  CLI11_PARSE(app, argc, argv);
  return Load(options).Run();
}
