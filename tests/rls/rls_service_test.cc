// Envoy's rate limit service as sluice serves it: RlsDecider against the memory store
// with an injected clock (every figure exact), then the real binary on grpc_listen with
// a C++ gRPC client generated from the same protos (tests/rls/rls_conformance.py does
// the same from Python, decoding with Envoy-numbered classes of its own).
#include "rls/rls_service.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "integration/harness.h"
#include "redis/redis_process.h"
#include "store/memory_store.h"

namespace sluice::rls {
namespace {

using envoy::service::ratelimit::v3::RateLimitRequest;
using envoy::service::ratelimit::v3::RateLimitResponse;
using RateLimitDescriptor = envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
using namespace std::chrono_literals;

constexpr std::string_view kConfig = R"(domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: remote_address
    value: 10.0.0.1
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: path
    value: "/api/*"
    rate_limit: {name: api, unit: hour, requests_per_unit: 5, algorithm: token_bucket}
  - key: tenant
    value: acme
    descriptors:
      - key: plan
        rate_limit: {unit: second, requests_per_unit: 2}
  - key: health
    rate_limit: {unlimited: true}
  - key: open
  - key: shadowed
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: user
    rate_limit: {name: per_user, unit: minute, requests_per_unit: 1}
  - key: vip
    rate_limit: {unit: minute, requests_per_unit: 100, replaces: [{name: per_user}]}
  - key: client
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 10}
)";

RateLimitDescriptor Descriptor(std::vector<std::pair<std::string, std::string>> entries) {
  RateLimitDescriptor d;
  for (auto& [key, value] : entries) {
    auto* e = d.add_entries();
    e->set_key(key);
    e->set_value(value);
  }
  return d;
}

RateLimitRequest Request(std::string domain, std::vector<RateLimitDescriptor> descriptors,
                         uint32_t hits = 0) {
  RateLimitRequest r;
  r.set_domain(std::move(domain));
  for (auto& d : descriptors) *r.add_descriptors() = std::move(d);
  r.set_hits_addend(hits);
  return r;
}

std::string Header(const RateLimitResponse& response, std::string_view name) {
  for (const auto& h : response.response_headers_to_add()) {
    if (h.key() == name) return h.value();
  }
  return "";
}

class RlsDeciderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Source source{kConfig, "edge.yaml"};
    LoadResult loaded = RateLimitConfig::Load(std::span<const Source>(&source, 1));
    ASSERT_TRUE(loaded.errors.empty()) << loaded.errors[0].ToString();
    decider_.SetConfig(loaded.config);
  }
  RateLimitResponse Ask(const RateLimitRequest& request) {
    RateLimitResponse response;
    decider_.Decide(request, response);
    return response;
  }

  // On a whole hour of the clock: fixed windows start there.
  ManualClock clock_{Timestamp{} + 1000h};
  store::MemoryStore store_{store::MemoryStore::Options{}};
  InlineStoreAccess access_{store_, clock_};
  RlsDecider decider_{access_, clock_};
};

// detailed_metric names series after request values only up to a budget, so that
// clients cannot use up the rule series the HTTP rules share: later values count under
// the limit's own name.
TEST_F(RlsDeciderTest, DetailedMetricNamesAreBoundedAndLaterValuesCountUnderTheLimit) {
  metrics::Registry registry;
  RlsDecider counted(access_, clock_, &registry);
  counted.SetConfig(decider_.config());
  constexpr int kValues = 300;
  for (int i = 0; i < kValues; ++i) {
    RateLimitResponse response;
    counted.Decide(Request("edge", {Descriptor({{"client", fmt::format("c{}", i)}})}), response);
  }
  const std::string text = registry.Render();
  const auto allowed = [&](std::string_view rule) {
    return integration::MetricValue(text, "sluice_requests_total",
                                    fmt::format(R"(rule="{}",decision="allowed")", rule))
        .value_or(0);
  };
  EXPECT_EQ(allowed("edge.client_c0"), 1) << text.substr(0, 2000);
  EXPECT_EQ(allowed("edge.client_c255"), 1);
  EXPECT_EQ(allowed("edge.client_c256"), 0);
  EXPECT_EQ(allowed("edge.client"), kValues - 256);
}

TEST_F(RlsDeciderTest, KeyOnlyLimitCountsEachValueOnItsOwnAndAnswersOverLimit) {
  for (int i = 1; i <= 4; ++i) {
    const RateLimitResponse r = Ask(Request("edge", {Descriptor({{"remote_address", "1.2.3.4"}})}));
    ASSERT_EQ(r.statuses_size(), 1);
    const auto& s = r.statuses(0);
    EXPECT_EQ(s.current_limit().requests_per_unit(), 3u);
    EXPECT_EQ(s.current_limit().unit(), RateLimitResponse::RateLimit::MINUTE);
    EXPECT_EQ(s.limit_remaining(), static_cast<uint32_t>(std::max(0, 3 - i)));
    EXPECT_EQ(s.duration_until_reset().seconds(), 60);
    EXPECT_EQ(s.code(), i <= 3 ? RateLimitResponse::OK : RateLimitResponse::OVER_LIMIT);
    EXPECT_EQ(r.overall_code(), s.code());
    EXPECT_EQ(Header(r, "RateLimit-Policy"), "\"edge.remote_address\";q=3;w=60");
    EXPECT_EQ(Header(r, "RateLimit"),
              fmt::format("\"edge.remote_address\";r={};t=60", std::max(0, 3 - i)));
    EXPECT_EQ(Header(r, "Retry-After"), i <= 3 ? "" : "60");
  }
  // Another value, another counter; the window's end is the same for both.
  clock_.Advance(15s);
  const RateLimitResponse other =
      Ask(Request("edge", {Descriptor({{"remote_address", "5.6.7.8"}})}));
  EXPECT_EQ(other.statuses(0).limit_remaining(), 2u);
  EXPECT_EQ(other.statuses(0).duration_until_reset().seconds(), 45);
  // A minute on, the window is new.
  clock_.Advance(45s);
  EXPECT_EQ(Ask(Request("edge", {Descriptor({{"remote_address", "1.2.3.4"}})})).overall_code(),
            RateLimitResponse::OK);
}

TEST_F(RlsDeciderTest, KeyAndValueWinsOverKeyOnlyAndWildcardsMatchPrefixes) {
  const RateLimitResponse exact =
      Ask(Request("edge", {Descriptor({{"remote_address", "10.0.0.1"}})}));
  EXPECT_EQ(exact.statuses(0).current_limit().requests_per_unit(), 1u);
  const RateLimitResponse api = Ask(Request("edge", {Descriptor({{"path", "/api/orders"}})}));
  EXPECT_EQ(api.statuses(0).current_limit().name(), "api");
  EXPECT_EQ(api.statuses(0).current_limit().unit(), RateLimitResponse::RateLimit::HOUR);
  EXPECT_EQ(api.statuses(0).limit_remaining(), 4u);
  // A path outside the wildcard has no limit: OK, no current_limit, not counted.
  const RateLimitResponse web = Ask(Request("edge", {Descriptor({{"path", "/web"}})}));
  EXPECT_EQ(web.statuses(0).code(), RateLimitResponse::OK);
  EXPECT_FALSE(web.statuses(0).has_current_limit());
  EXPECT_TRUE(web.response_headers_to_add().empty());
}

TEST_F(RlsDeciderTest, NestedDescriptorsLimitOnlyWhenEveryEntryMatches) {
  const auto nested = [&] {
    return Ask(Request("edge", {Descriptor({{"tenant", "acme"}, {"plan", "gold"}})}));
  };
  EXPECT_EQ(nested().statuses(0).limit_remaining(), 1u);
  EXPECT_EQ(nested().statuses(0).limit_remaining(), 0u);
  EXPECT_EQ(nested().overall_code(), RateLimitResponse::OVER_LIMIT);
  // The parent alone has no limit; another tenant matches nothing.
  EXPECT_FALSE(
      Ask(Request("edge", {Descriptor({{"tenant", "acme"}})})).statuses(0).has_current_limit());
  EXPECT_FALSE(Ask(Request("edge", {Descriptor({{"tenant", "other"}, {"plan", "gold"}})}))
                   .statuses(0)
                   .has_current_limit());
  clock_.Advance(1s);
  EXPECT_EQ(nested().overall_code(), RateLimitResponse::OK);
}

TEST_F(RlsDeciderTest, UnlimitedNoLimitAndUnknownDomainAreOkWithoutCounting) {
  for (int i = 0; i < 5; ++i) {
    const RateLimitResponse r =
        Ask(Request("edge", {Descriptor({{"health", "x"}}), Descriptor({{"open", "y"}})}));
    EXPECT_EQ(r.overall_code(), RateLimitResponse::OK);
    EXPECT_FALSE(r.statuses(0).has_current_limit());
    EXPECT_FALSE(r.statuses(1).has_current_limit());
    // The service's documented answer for unlimited: all remains (README Example 5);
    // for no limit at all, 0.
    EXPECT_EQ(r.statuses(0).limit_remaining(), UINT32_MAX);
    EXPECT_EQ(r.statuses(1).limit_remaining(), 0u);
  }
  const RateLimitResponse unknown =
      Ask(Request("nowhere", {Descriptor({{"remote_address", "1.2.3.4"}})}));
  EXPECT_EQ(unknown.overall_code(), RateLimitResponse::OK);
  EXPECT_FALSE(unknown.statuses(0).has_current_limit());
}

TEST_F(RlsDeciderTest, NoDomainOrNoDescriptorsIsAnErrorAsInTheService) {
  RateLimitResponse response;
  EXPECT_EQ(decider_.Decide(Request("", {Descriptor({{"remote_address", "1"}})}), response),
            "rate limit domain must not be empty");
  EXPECT_EQ(decider_.Decide(Request("edge", {}), response),
            "rate limit descriptor list must not be empty");
  EXPECT_EQ(decider_.Decide(Request("edge", {Descriptor({{"remote_address", "1"}})}), response),
            "");
}

TEST_F(RlsDeciderTest, AFixedWindowReportsTheTimeToItsEndEvenBeforeAnythingIsCounted) {
  clock_.Advance(20s);
  RateLimitDescriptor look = Descriptor({{"remote_address", "fresh"}});
  look.mutable_hits_addend()->set_value(0);
  const RateLimitResponse r = Ask(Request("edge", {look}));
  EXPECT_EQ(r.statuses(0).limit_remaining(), 3u);
  EXPECT_EQ(r.statuses(0).duration_until_reset().seconds(), 40);
  EXPECT_EQ(Header(r, "RateLimit"), "\"edge.remote_address\";r=3;t=40");
}

TEST_F(RlsDeciderTest, ShadowModeCountsButAnswersOk) {
  for (int i = 0; i < 3; ++i) {
    const RateLimitResponse r = Ask(Request("edge", {Descriptor({{"shadowed", "s"}})}));
    EXPECT_EQ(r.overall_code(), RateLimitResponse::OK);
    EXPECT_EQ(r.statuses(0).code(), RateLimitResponse::OK);
    EXPECT_EQ(r.statuses(0).limit_remaining(), 0u);  // counted: the first took the one
    EXPECT_EQ(Header(r, "Retry-After"), "");
  }
}

TEST_F(RlsDeciderTest, ReplacesDropsTheNamedLimitOfTheSameRequest) {
  // Alone, per_user allows one a minute.
  EXPECT_EQ(Ask(Request("edge", {Descriptor({{"user", "u1"}})})).overall_code(),
            RateLimitResponse::OK);
  EXPECT_EQ(Ask(Request("edge", {Descriptor({{"user", "u1"}})})).overall_code(),
            RateLimitResponse::OVER_LIMIT);
  // With vip matched too, per_user is replaced: not checked, not counted.
  for (int i = 0; i < 3; ++i) {
    const RateLimitResponse r =
        Ask(Request("edge", {Descriptor({{"user", "u1"}}), Descriptor({{"vip", "yes"}})}));
    EXPECT_EQ(r.overall_code(), RateLimitResponse::OK);
    EXPECT_FALSE(r.statuses(0).has_current_limit());
    EXPECT_EQ(r.statuses(1).limit_remaining(), static_cast<uint32_t>(99 - i));
  }
}

TEST_F(RlsDeciderTest, HitsAddendFromTheRequestOrTheDescriptorAndZeroOnlyLooks) {
  const RateLimitResponse two = Ask(Request("edge", {Descriptor({{"path", "/api/a"}})}, 2));
  EXPECT_EQ(two.statuses(0).limit_remaining(), 3u);
  RateLimitDescriptor look = Descriptor({{"path", "/api/a"}});
  look.mutable_hits_addend()->set_value(0);
  EXPECT_EQ(Ask(Request("edge", {look}, 2)).statuses(0).limit_remaining(), 3u);
  RateLimitDescriptor three = Descriptor({{"path", "/api/a"}});
  three.mutable_hits_addend()->set_value(3);
  EXPECT_EQ(Ask(Request("edge", {three})).statuses(0).limit_remaining(), 0u);
  EXPECT_EQ(Ask(Request("edge", {Descriptor({{"path", "/api/a"}})})).overall_code(),
            RateLimitResponse::OVER_LIMIT);
}

TEST_F(RlsDeciderTest, ADescriptorsOwnLimitOverridesTheConfiguredOne) {
  RateLimitDescriptor d = Descriptor({{"remote_address", "9.9.9.9"}});
  d.mutable_limit()->set_requests_per_unit(10);
  d.mutable_limit()->set_unit(envoy::type::v3::HOUR);
  const RateLimitResponse r = Ask(Request("edge", {d}));
  EXPECT_EQ(r.statuses(0).current_limit().requests_per_unit(), 10u);
  EXPECT_EQ(r.statuses(0).current_limit().unit(), RateLimitResponse::RateLimit::HOUR);
  EXPECT_EQ(r.statuses(0).limit_remaining(), 9u);
  EXPECT_EQ(r.statuses(0).current_limit().name(), "") << "an override is unnamed";
  // In a domain the config does not know, nothing applies, override or not.
  RateLimitDescriptor elsewhere = d;
  EXPECT_FALSE(Ask(Request("nowhere", {elsewhere})).statuses(0).has_current_limit());
  // Where the config has no limit for the entries, the override is the limit.
  RateLimitDescriptor free = Descriptor({{"anything", "x"}});
  free.mutable_limit()->set_requests_per_unit(1);
  free.mutable_limit()->set_unit(envoy::type::v3::DAY);
  EXPECT_EQ(Ask(Request("edge", {free})).overall_code(), RateLimitResponse::OK);
  EXPECT_EQ(Ask(Request("edge", {free})).overall_code(), RateLimitResponse::OVER_LIMIT);
}

TEST_F(RlsDeciderTest, AnyLimitedDescriptorMakesTheAnswerOverLimitAndEachKeepsItsStatus) {
  Ask(Request("edge", {Descriptor({{"remote_address", "10.0.0.1"}})}));  // its one
  const RateLimitResponse r = Ask(
      Request("edge", {Descriptor({{"path", "/api/b"}}),
                       Descriptor({{"remote_address", "10.0.0.1"}}), Descriptor({{"open", "z"}})}));
  EXPECT_EQ(r.overall_code(), RateLimitResponse::OVER_LIMIT);
  ASSERT_EQ(r.statuses_size(), 3);
  EXPECT_EQ(r.statuses(0).code(), RateLimitResponse::OK);
  EXPECT_EQ(r.statuses(1).code(), RateLimitResponse::OVER_LIMIT);
  EXPECT_EQ(r.statuses(2).code(), RateLimitResponse::OK);
  EXPECT_EQ(Header(r, "RateLimit-Policy"),
            "\"api\";q=5;w=3600, \"edge.remote_address_10.0.0.1\";q=1;w=60");
}

// --- the real binary, a C++ gRPC client -----------------------------------------------------

TEST(RlsServerTest, TheBinaryServesEnvoysApiOnGrpcListenAndReloadsItsLimits) {
  integration::TempDir dir;
  ASSERT_TRUE(integration::WriteFileText(dir.File("edge.yaml"), kConfig));
  const std::string config = fmt::format(R"(listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
grpc_listen: "127.0.0.1:0"
workers: 1
envoy_ratelimit_configs: ["{}"]
rules: []
)",
                                         dir.File("edge.yaml"));
  integration::SluiceProcess sluice(config);
  ASSERT_TRUE(sluice.started()) << sluice.error();
  ASSERT_NE(sluice.grpc_port(), 0) << sluice.Stderr();
  auto channel = grpc::CreateChannel(fmt::format("127.0.0.1:{}", sluice.grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = envoy::service::ratelimit::v3::RateLimitService::NewStub(channel);
  const auto ask = [&](const RateLimitRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 5s);
    RateLimitResponse response;
    const grpc::Status status = stub->ShouldRateLimit(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  };
  const RateLimitRequest gold = Request("edge", {Descriptor({{"path", "/api/x"}})});
  for (int i = 1; i <= 6; ++i) {
    const RateLimitResponse r = ask(gold);
    EXPECT_EQ(r.overall_code(), i <= 5 ? RateLimitResponse::OK : RateLimitResponse::OVER_LIMIT);
    EXPECT_EQ(r.statuses(0).limit_remaining(), static_cast<uint32_t>(std::max(0, 5 - i)));
  }
  // Counted as the HTTP rules are, under the limit's name.
  const integration::HttpResponse metrics = integration::FetchGet(sluice.admin_port(), "/metrics");
  EXPECT_EQ(integration::MetricValue(metrics.body, "sluice_requests_total",
                                     R"(rule="api",decision="allowed")"),
            5);
  EXPECT_EQ(integration::MetricValue(metrics.body, "sluice_requests_total",
                                     R"(rule="api",decision="limited")"),
            1)
      << metrics.body;
  // detailed_metric: counted per request value, under the service's stats key.
  for (const char* client : {"a", "a", "b"})
    ask(Request("edge", {Descriptor({{"client", client}})}));
  const integration::HttpResponse detailed = integration::FetchGet(sluice.admin_port(), "/metrics");
  EXPECT_EQ(integration::MetricValue(detailed.body, "sluice_requests_total",
                                     R"(rule="edge.client_a",decision="allowed")"),
            2)
      << detailed.body;
  EXPECT_EQ(integration::MetricValue(detailed.body, "sluice_requests_total",
                                     R"(rule="edge.client_b",decision="allowed")"),
            1);
  EXPECT_EQ(detailed.body.find(R"(rule="edge.client")"), std::string::npos);

  // A new limit in the file takes effect on SIGHUP, counted afresh under the new rate.
  std::string changed(kConfig);
  changed.replace(changed.find("requests_per_unit: 5"), 20, "requests_per_unit: 50");
  ASSERT_TRUE(integration::WriteFileText(dir.File("edge.yaml"), changed));
  ASSERT_TRUE(sluice.Signal(SIGHUP));
  EXPECT_TRUE(integration::WaitFor(
      [&] { return ask(gold).statuses(0).current_limit().requests_per_unit() == 50; },
      integration::Millis(5000)))
      << sluice.Stderr();

  // A broken file is refused on reload, and the running limits stay.
  ASSERT_TRUE(integration::WriteFileText(dir.File("edge.yaml"), "domain: edge\ndescriptors: 7\n"));
  ASSERT_TRUE(sluice.Signal(SIGHUP));
  EXPECT_TRUE(integration::WaitFor(
      [&] { return sluice.Stderr().find("reload refused") != std::string::npos; },
      integration::Millis(5000)));
  EXPECT_NE(sluice.Stderr().find("edge.yaml:2:"), std::string::npos) << sluice.Stderr();
  EXPECT_EQ(ask(gold).statuses(0).current_limit().requests_per_unit(), 50u);

  ASSERT_TRUE(sluice.Signal(SIGTERM));
  const auto exit = sluice.WaitExit(integration::Millis(10000));
  ASSERT_TRUE(exit);
  EXPECT_TRUE(exit->exited && exit->code == 0) << exit->ToString();
}

TEST(RlsServerTest, ABadEnvoyConfigStopsTheStartWithItsPlace) {
  integration::TempDir dir;
  ASSERT_TRUE(integration::WriteFileText(dir.File("bad.yaml"),
                                         "domain: d\ndescriptors:\n  - key: k\n    rate_limit: "
                                         "{unit: fortnight, requests_per_unit: 1}\n"));
  integration::SluiceProcess sluice(fmt::format(R"(listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
grpc_listen: "127.0.0.1:0"
envoy_ratelimit_configs: ["{}"]
rules: []
)",
                                                dir.File("bad.yaml")),
                                    integration::Millis(5000));
  EXPECT_FALSE(sluice.started());
  EXPECT_NE(sluice.Stderr().find("bad.yaml:4:"), std::string::npos) << sluice.Stderr();
}

// With store.backend redis: each worker's Redis store decides, so instances share the
// counts; limits beyond the scripts' exact range are refused at start with their place.
// A call whose store answers only after the service began to stop (a Redis slower
// than the shutdown's grace) comes back before the queues close: no hand-over to a
// closed queue, and Stop returns once it is back.
TEST(RlsServerTest, StopWaitsForACallStillWithTheStore) {
  // A store access that keeps the work for the test to run, on its own thread.
  struct HeldAccess final : RlsStoreAccess {
    std::mutex mutex;
    std::function<void(Store&, Timestamp)> held;
    void Run(std::function<void(Store&, Timestamp)> work) override {
      std::lock_guard lock(mutex);
      held = std::move(work);
    }
    bool Holding() {
      std::lock_guard lock(mutex);
      return held != nullptr;
    }
  };
  ManualClock clock{Timestamp{} + 1000h};
  store::MemoryStore store{store::MemoryStore::Options{}};
  HeldAccess access;
  RlsDecider decider(access, clock);
  const Source source{kConfig, "edge.yaml"};
  LoadResult loaded = RateLimitConfig::Load(std::span<const Source>(&source, 1));
  ASSERT_TRUE(loaded.errors.empty());
  decider.SetConfig(loaded.config);
  RlsServer server(decider, 1);
  ASSERT_EQ(server.Start(*net::Endpoint::Parse("127.0.0.1:0")), "");
  auto stub = envoy::service::ratelimit::v3::RateLimitService::NewStub(grpc::CreateChannel(
      fmt::format("127.0.0.1:{}", server.port()), grpc::InsecureChannelCredentials()));
  grpc::Status status;
  std::thread caller([&] {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 20s);
    RateLimitResponse response;
    status = stub->ShouldRateLimit(&context, Request("edge", {Descriptor({{"path", "/api/x"}})}),
                                   &response);
  });
  ASSERT_TRUE(integration::WaitFor([&] { return access.Holding(); }, integration::Millis(5000)));
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    server.Stop();
    stopped = true;
  });
  std::this_thread::sleep_for(2500ms);  // past the shutdown's grace of 2 s
  EXPECT_FALSE(stopped);                // still waiting for the call
  std::thread([&] {                     // the store answers, from another thread
    std::function<void(Store&, Timestamp)> work;
    {
      std::lock_guard lock(access.mutex);
      work = std::move(access.held);
    }
    work(store, clock.Now());
  })
      .join();
  stopper.join();
  caller.join();
  EXPECT_TRUE(stopped);
  // The shutdown cancelled the client's call at the end of the grace.
  EXPECT_FALSE(status.ok());
}

TEST(RlsServerTest, WithRedisTwoInstancesShareTheCountsAndTooLargeLimitsAreRefused) {
  sluice::testing::RedisProcess redis;
  ASSERT_TRUE(redis.Start()) << redis.error();
  integration::TempDir dir;
  ASSERT_TRUE(integration::WriteFileText(dir.File("edge.yaml"), kConfig));
  const auto config_for = [&](const std::string& envoy_file) {
    return fmt::format(R"(listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
grpc_listen: "127.0.0.1:0"
workers: 2
store:
  backend: redis
  redis: {{mode: ring, nodes: ["{}"], connect_timeout_ms: 500, command_timeout_ms: 500}}
  on_failure: deny
envoy_ratelimit_configs: ["{}"]
rules: []
)",
                       redis.address(), envoy_file);
  };
  integration::SluiceProcess a(config_for(dir.File("edge.yaml")));
  integration::SluiceProcess b(config_for(dir.File("edge.yaml")));
  ASSERT_TRUE(a.started()) << a.error();
  ASSERT_TRUE(b.started()) << b.error();
  const auto ask = [](uint16_t port, const RateLimitRequest& request) {
    auto stub = envoy::service::ratelimit::v3::RateLimitService::NewStub(
        grpc::CreateChannel(fmt::format("127.0.0.1:{}", port), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 5s);
    RateLimitResponse response;
    const grpc::Status status = stub->ShouldRateLimit(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  };
  // The token bucket of 5 an hour for /api/*, taken in turn on both instances (and so
  // on several workers of each): 5 pass, whichever instance answers.
  const RateLimitRequest api = Request("edge", {Descriptor({{"path", "/api/redis"}})});
  std::vector<uint32_t> remaining;
  for (int i = 0; i < 6; ++i) {
    const RateLimitResponse r = ask(i % 2 == 0 ? a.grpc_port() : b.grpc_port(), api);
    EXPECT_EQ(r.overall_code(), i < 5 ? RateLimitResponse::OK : RateLimitResponse::OVER_LIMIT);
    remaining.push_back(r.statuses(0).limit_remaining());
  }
  EXPECT_EQ(remaining, (std::vector<uint32_t>{4, 3, 2, 1, 0, 0}));

  // Calls at once from several threads, spread over both workers' loops: each counted
  // once (what ThreadSanitizer runs this for: answers handed back from the loops).
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const RateLimitResponse r =
            ask(a.grpc_port(), Request("edge", {Descriptor({{"user", fmt::format("u{}", t)}})}));
        if (r.statuses_size() == 1 && r.statuses(0).has_current_limit()) ++ok;
      }
    });
  }
  for (std::thread& c : clients) c.join();
  EXPECT_EQ(ok.load(), 200);

  // An override beyond the Redis scripts' range is refused, not decided inexactly.
  RateLimitDescriptor huge = Descriptor({{"remote_address", "1.1.1.1"}});
  huge.mutable_limit()->set_requests_per_unit(4'000'000'000u);
  huge.mutable_limit()->set_unit(envoy::type::v3::SECOND);
  {
    auto stub = envoy::service::ratelimit::v3::RateLimitService::NewStub(grpc::CreateChannel(
        fmt::format("127.0.0.1:{}", a.grpc_port()), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 5s);
    RateLimitResponse response;
    const grpc::Status status = stub->ShouldRateLimit(&context, Request("edge", {huge}), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("beyond what the store decides exactly"),
              std::string::npos)
        << status.error_message();
  }

  // A configured limit beyond it stops the start, naming its place.
  ASSERT_TRUE(integration::WriteFileText(
      dir.File("big.yaml"),
      "domain: big\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, requests_per_unit: "
      "1000000}\n"));
  integration::SluiceProcess refused(config_for(dir.File("big.yaml")), integration::Millis(5000));
  EXPECT_FALSE(refused.started());
  EXPECT_NE(refused.Stderr().find("big.yaml:4:"), std::string::npos) << refused.Stderr();
  EXPECT_NE(refused.Stderr().find("too many for store.backend redis"), std::string::npos)
      << refused.Stderr();
}

}  // namespace
}  // namespace sluice::rls
