#include "rls/rls_service.h"

#include <absl/synchronization/mutex.h>
#include <fmt/format.h>
#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <unordered_map>
#include <vector>

#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "gate/gate.h"
#include "http/ascii.h"

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
// A worker's loop (with Redis) fills a call's answer, then sets the alarm that hands the
// call back to its poller; gRPC delivers the alarm after it was set, but through its
// own atomics, which ThreadSanitizer cannot see in Debian's uninstrumented build. These
// mark that order.
#define SLUICE_HANDED_OVER(p) __tsan_release(p)
#define SLUICE_TAKEN_BACK(p) __tsan_acquire(p)
#else
#define SLUICE_HANDED_OVER(p)
#define SLUICE_TAKEN_BACK(p)
#endif

namespace sluice::rls {
namespace {

using envoy::service::ratelimit::v3::RateLimitRequest;
using envoy::service::ratelimit::v3::RateLimitResponse;
using RateLimitDescriptor = envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;

// The store key's "rule" part: the store puts rule names and client keys apart with
// this byte, which no domain may then contain (it is replaced).
constexpr char kRuleSeparator = '\x1f';

RateLimitResponse::RateLimit::Unit ResponseUnit(Unit unit) {
  switch (unit) {
    case Unit::kSecond:
      return RateLimitResponse::RateLimit::SECOND;
    case Unit::kMinute:
      return RateLimitResponse::RateLimit::MINUTE;
    case Unit::kHour:
      return RateLimitResponse::RateLimit::HOUR;
    case Unit::kDay:
      return RateLimitResponse::RateLimit::DAY;
    case Unit::kWeek:
      return RateLimitResponse::RateLimit::WEEK;
    case Unit::kMonth:
      return RateLimitResponse::RateLimit::MONTH;
    case Unit::kYear:
      return RateLimitResponse::RateLimit::YEAR;
  }
  return RateLimitResponse::RateLimit::UNKNOWN;
}

// The override's unit (envoy.type.v3.RateLimitUnit has the same numbers); nullopt for
// UNKNOWN or a number this build does not know.
std::optional<Unit> OverrideUnit(int unit) {
  switch (unit) {
    case 1:
      return Unit::kSecond;
    case 2:
      return Unit::kMinute;
    case 3:
      return Unit::kHour;
    case 4:
      return Unit::kDay;
    case 5:
      return Unit::kMonth;
    case 6:
      return Unit::kYear;
    case 7:
      return Unit::kWeek;
    default:
      return std::nullopt;
  }
}

// What one descriptor is limited by: the config's limit, or the caller's override.
struct Applied {
  const RlsLimit* configured = nullptr;
  RlsLimit overridden;  // when the descriptor carries its own limit
  const RlsLimit* limit = nullptr;
};

constexpr size_t kNotDetailed = SIZE_MAX;

// Per thread, for the answer's header fields: grown to the largest answer and reused.
struct FieldScratch {
  std::string policy;
  std::string limit;
};

}  // namespace

// One call while the store decides it: each descriptor's limit, its counter's key and
// cost, and the store's answer. Made by Plan on the call's thread; asked and answered
// where the store runs (RlsStoreAccess).
struct RlsDecider::Call {
  struct Item final : Store::Completion {
    Applied applied;
    bool ask = false;  // limited (not unlimited, not replaced): the store decides it
    // Where the decision is counted when the limit has detailed_metric (else the
    // limit's own slot): the request's values name it.
    size_t detailed_slot = kNotDetailed;
    std::string key;
    uint64_t hits = 1;
    Decision decision;
    Call* call = nullptr;
    void OnDecision(const Decision& d) override {
      decision = d;
      call->OneAnswered();
    }
  };

  const RlsDecider* decider = nullptr;
  std::shared_ptr<const Loaded> loaded;  // the limits stay while in flight
  const RateLimitConfig* config = nullptr;
  const RateLimitRequest* request = nullptr;
  RateLimitResponse* response = nullptr;
  Done done;
  std::vector<Item> items;  // kept (with the items' keys) when the caller reuses the call
  int outstanding = 0;
  bool callers = false;  // the caller's state (DecideAsync's `state`), not deleted here

  void OneAnswered() {
    if (--outstanding > 0) return;
    decider->Answer(*this);
    End("");
  }

  // Hands the outcome to `done`; after that the call is the caller's again, or gone.
  void End(std::string error) {
    Done finish = std::move(done);
    loaded.reset();  // a reload's old limits are not held by an idle state
    if (!callers) delete this;
    finish(std::move(error));
  }
};

void RlsDecider::CallDeleter::operator()(Call* call) const { delete call; }

RlsDecider::CallState RlsDecider::NewCallState() {
  CallState state(new Call);
  state->callers = true;
  return state;
}

namespace {
std::atomic<uint64_t> next_decider_serial{1};
}  // namespace

RlsDecider::RlsDecider(RlsStoreAccess& access, const Clock& wall_clock, metrics::Registry* registry)
    : access_(access),
      wall_clock_(wall_clock),
      registry_(registry),
      serial_(next_decider_serial.fetch_add(1, std::memory_order_relaxed)) {
  if (registry_ != nullptr) metrics_ = &registry_->AddWorker();
}

size_t RlsDecider::DetailedSlot(std::string_view stats_key) const {
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Cache {
    uint64_t decider = 0;
    std::unordered_map<std::string, size_t, Hash, std::equal_to<>> slots;
  };
  thread_local Cache cache;
  if (cache.decider != serial_) {
    cache.decider = serial_;
    cache.slots.clear();
  }
  if (const auto it = cache.slots.find(stats_key); it != cache.slots.end()) return it->second;
  // Request values must not use up the rule series the registry has for everyone
  // (kMaxRuleSlots, shared with the HTTP rules): past kMaxDetailedNames, new values
  // count under their limit's own name. Nor may they grow the cache, which then
  // holds at most kMaxDetailedNames names per thread.
  if (detailed_names_.load(std::memory_order_relaxed) >= kMaxDetailedNames) {
    return kNotDetailed;
  }
  detailed_names_.fetch_add(1, std::memory_order_relaxed);
  const size_t slot = registry_->RuleSlot(stats_key);
  cache.slots.emplace(std::string(stats_key), slot);
  return slot;
}

void RlsDecider::SetConfig(std::shared_ptr<const RateLimitConfig> config) {
  auto loaded = std::make_shared<Loaded>();
  if (config != nullptr && registry_ != nullptr) {
    for (const RlsLimit& limit : config->limits()) {
      loaded->slots.push_back(
          registry_->RuleSlot(limit.name.empty() ? limit.full_key : limit.name));
    }
  }
  loaded->config = std::move(config);
  std::lock_guard lock(config_mutex_);
  loaded_ = std::move(loaded);
}

std::shared_ptr<const RlsDecider::Loaded> RlsDecider::loaded() const {
  std::lock_guard lock(config_mutex_);
  return loaded_;
}

std::shared_ptr<const RateLimitConfig> RlsDecider::config() const {
  const std::shared_ptr<const Loaded> l = loaded();
  return l == nullptr ? nullptr : l->config;
}

std::string RlsDecider::Decide(const RateLimitRequest& request, RateLimitResponse& response) const {
  std::string result = "not answered";
  DecideAsync(request, response, [&result](std::string error) { result = std::move(error); });
  return result;  // REQUIRES (tests): a store access that runs the work at once
}

void RlsDecider::DecideAsync(const RateLimitRequest& request, RateLimitResponse& response,
                             Done done, Call* state, RlsStoreAccess* access) const {
  response.Clear();
  // As envoyproxy/ratelimit: a call without these is an error, not an empty answer.
  if (request.domain().empty()) return done("rate limit domain must not be empty");
  if (request.descriptors_size() == 0) return done("rate limit descriptor list must not be empty");
  Call* call = state != nullptr ? state : new Call;
  call->decider = this;
  call->loaded = loaded();
  call->config = call->loaded == nullptr ? nullptr : call->loaded->config.get();
  call->request = &request;
  call->response = &response;
  call->done = std::move(done);
  RlsStoreAccess& store_access = access != nullptr ? *access : access_;
  if (std::string error = Plan(*call, store_access); !error.empty()) {
    return call->End(std::move(error));
  }
  store_access.Run([call](Store& store, Timestamp now) {
    // One high while asking: the memory store answers inside Decide.
    call->outstanding = 1;
    for (Call::Item& item : call->items) {
      if (!item.ask) continue;
      ++call->outstanding;
      const RlsLimit& limit = *item.applied.limit;
      store.Decide(StoreRequest{item.key, limit.algorithm, limit.limit, item.hits}, now, item);
    }
    call->OneAnswered();
  });
}

std::string RlsDecider::Plan(Call& call, const RlsStoreAccess& access) const {
  const RateLimitRequest& request = *call.request;
  const RateLimitConfig* config = call.config;
  const std::string& domain = request.domain();
  const size_t count = static_cast<size_t>(request.descriptors_size());
  thread_local std::vector<Entry> entries;
  thread_local std::vector<const RlsLimit*> matched;
  thread_local std::string counted;
  matched.assign(count, nullptr);
  call.items.resize(count);

  // Every descriptor's limit first: `replaces` reads the whole set.
  for (size_t i = 0; i < count; ++i) {
    const RateLimitDescriptor& descriptor = request.descriptors(static_cast<int>(i));
    Call::Item& item = call.items[i];
    item.call = &call;
    entries.clear();
    for (const RateLimitDescriptor::Entry& entry : descriptor.entries()) {
      entries.emplace_back(entry.key(), entry.value());
    }
    Applied& applied = item.applied;
    applied.configured = config == nullptr ? nullptr : config->Match(domain, entries);
    matched[i] = applied.configured;
    applied.limit = applied.configured;
    item.detailed_slot = kNotDetailed;
    if (metrics_ != nullptr && applied.configured != nullptr &&
        applied.configured->detailed_metric) {
      thread_local std::string stats_key;
      StatsKey(domain, entries, *applied.configured, stats_key);
      item.detailed_slot = DetailedSlot(stats_key);
    }
    if (descriptor.has_limit() && config != nullptr && config->HasDomain(domain)) {
      // The caller's limit for this descriptor, as the service applies it: its rate in
      // place of the configured one, unnamed, never in shadow mode, counted under the
      // same entries; in a domain the config does not know, nothing applies.
      const std::optional<Unit> unit = OverrideUnit(descriptor.limit().unit());
      if (unit) {
        RlsLimit& o = applied.overridden;
        o = applied.configured != nullptr ? *applied.configured : RlsLimit{};
        o.name.clear();
        o.replaces.clear();
        o.shadow_mode = false;
        o.unlimited = false;
        o.requests_per_unit = descriptor.limit().requests_per_unit();
        o.unit = *unit;
        o.algorithm = applied.configured != nullptr && !applied.configured->unlimited
                          ? applied.configured->algorithm
                          : Algorithm::kFixedWindow;
        o.limit = Limit::PerPeriod(o.requests_per_unit, UnitDuration(*unit));
        if (o.full_key.empty()) o.full_key = domain;
        if (!access.Decides(o.limit)) {
          return fmt::format(
              "descriptor {}: a limit of {} per {} is beyond what the store "
              "decides exactly",
              i, o.requests_per_unit, UnitName(o.unit));
        }
        applied.limit = &o;
      }
    }
    // The counter: the domain, then a hash of the entries (lengths included, so no two
    // lists of entries read alike).
    counted.clear();
    for (const Entry& e : entries) {
      http::AppendDecimal(counted, e.first.size());
      counted += ':';
      counted.append(e.first);
      counted += '=';
      http::AppendDecimal(counted, e.second.size());
      counted += ':';
      counted.append(e.second);
      counted += ';';
    }
    const XXH128_hash_t hash = XXH3_128bits(counted.data(), counted.size());
    item.key.assign("rls:");
    for (const char c : domain) item.key += c == kRuleSeparator ? '_' : c;
    item.key += kRuleSeparator;
    item.key.append(reinterpret_cast<const char*>(&hash), sizeof(hash));
  }

  const uint64_t request_hits = request.hits_addend() == 0 ? 1 : request.hits_addend();
  for (size_t i = 0; i < count; ++i) {
    Call::Item& item = call.items[i];
    const RlsLimit* limit = item.applied.limit;
    item.ask = limit != nullptr && !limit->unlimited &&
               !(limit == item.applied.configured && IsReplaced(matched, *limit));
    const RateLimitDescriptor& descriptor = request.descriptors(static_cast<int>(i));
    item.hits = descriptor.has_hits_addend()
                    ? std::min<uint64_t>(descriptor.hits_addend().value(), kMaxQuantity)
                    : request_hits;
  }
  return "";
}

void RlsDecider::Answer(const Call& call) const {
  thread_local FieldScratch fields;
  RateLimitResponse& response = *call.response;
  // Windows are on the Unix epoch, whatever clock the store decided with (Redis: its
  // own): the time to a fixed window's end is reckoned on the wall clock.
  const Timestamp wall_now = wall_clock_.Now();
  bool over = false;
  Duration retry_after{0};
  fields.policy.clear();
  fields.limit.clear();
  for (const Call::Item& item : call.items) {
    RateLimitResponse::DescriptorStatus* status = response.add_statuses();
    status->set_code(RateLimitResponse::OK);
    const RlsLimit* limit = item.applied.limit;
    if (limit != nullptr && limit->unlimited) {
      // The service's documented answer for an unlimited descriptor (README Example 5).
      status->set_limit_remaining(UINT32_MAX);
      continue;
    }
    if (!item.ask) continue;
    const Decision& d = item.decision;
    const bool limited = !d.allowed;
    status->set_code(limited && !limit->shadow_mode ? RateLimitResponse::OVER_LIMIT
                                                    : RateLimitResponse::OK);
    RateLimitResponse::RateLimit* current = status->mutable_current_limit();
    current->set_name(limit->name);
    current->set_requests_per_unit(limit->requests_per_unit);
    current->set_unit(ResponseUnit(limit->unit));
    status->set_limit_remaining(static_cast<uint32_t>(std::min<uint64_t>(d.remaining, UINT32_MAX)));
    // For a fixed window, the time to the window's end even when nothing is counted
    // in it yet (the algorithm calls a window with room for all "whole", reset 0); the
    // field is the window's, as the service reports it.
    Duration reset = d.reset_after;
    if (limit->algorithm == Algorithm::kFixedWindow && reset == Duration(0) &&
        limit->limit.period > Duration(0)) {
      const int64_t period = std::chrono::nanoseconds(limit->limit.period).count();
      reset = Duration(period - ToNanos(wall_now) % period);
    }
    const int64_t reset_ns = std::chrono::nanoseconds(reset).count();
    status->mutable_duration_until_reset()->set_seconds(reset_ns / 1'000'000'000);
    status->mutable_duration_until_reset()->set_nanos(
        static_cast<int32_t>(reset_ns % 1'000'000'000));
    if (limited && !limit->shadow_mode) {
      over = true;
      if (d.retry_after != Decision::kNever) retry_after = std::max(retry_after, d.retry_after);
    }
    if (metrics_ != nullptr) {
      // Counted under the configured limit (an override counts under the one it
      // replaced; an override of nothing, under no rule), or with detailed_metric under
      // the request's values.
      const RlsLimit* named = item.applied.configured;
      const std::vector<size_t>& slots = call.loaded->slots;
      const size_t index = named == nullptr
                               ? slots.size()
                               : static_cast<size_t>(named - call.config->limits().data());
      const size_t slot = item.detailed_slot != kNotDetailed ? item.detailed_slot
                          : index < slots.size()             ? slots[index]
                                                             : metrics::kSlotNoRule;
      const metrics::Outcome outcome = !limited             ? metrics::Outcome::kAllowed
                                       : limit->shadow_mode ? metrics::Outcome::kShadowLimited
                                                            : metrics::Outcome::kLimited;
      metrics_->requests[slot][static_cast<size_t>(outcome)].AddShared();
    }

    const std::string_view name = limit->name.empty() ? limit->full_key : limit->name;
    if (!fields.policy.empty()) {
      fields.policy += ", ";
      fields.limit += ", ";
    }
    gate::AppendPolicyItem(name, limit->limit, fields.policy);
    gate::AppendLimitItem(name, d.remaining, reset, fields.limit);
  }
  response.set_overall_code(over ? RateLimitResponse::OVER_LIMIT : RateLimitResponse::OK);
  if (!fields.policy.empty()) {
    auto* policy = response.add_response_headers_to_add();
    policy->set_key("RateLimit-Policy");
    policy->set_value(fields.policy);
    auto* limit = response.add_response_headers_to_add();
    limit->set_key("RateLimit");
    limit->set_value(fields.limit);
  }
  if (over && retry_after > Duration(0)) {
    auto* header = response.add_response_headers_to_add();
    header->set_key("Retry-After");
    fields.policy.clear();  // reused for the value
    gate::AppendRetryAfterValue(retry_after, fields.policy);
    header->set_value(fields.policy);
  }
}

// --- the gRPC server ---------------------------------------------------------------------

// gRPC's asynchronous API on completion queues, one per thread: a call is taken,
// decided and finished on the thread whose queue received it, with no hand-over between
// threads. (Measured against gRPC's callback API, whose calls run on gRPC's own pollers
// and executor: docs/benchmarks.md, "Envoy's rate limit API".)
class RlsServer::Service {
 public:
  using Async = envoy::service::ratelimit::v3::RateLimitService::AsyncService;
  explicit Service(RlsDecider& decider) : decider_(decider) {}
  Async& async() { return async_; }
  RlsDecider& decider() { return decider_; }

 private:
  RlsDecider& decider_;
  Async async_;
};

namespace {

// A finished call is kept for reuse unless this many wait already (the posted ones
// and a burst's worth more), or its request was larger than this (Envoy's are a few
// hundred bytes): reused messages keep their largest size.
constexpr size_t kMaxSpareCalls = 1024;
constexpr size_t kMaxKeptRequestBytes = 16 * 1024;

// One call's life on a queue: posted to receive a call, decided, finished, then kept
// for the next (its messages and decision state keep their buffers, so a steady stream
// of calls allocates little of sluice's own); its tag is itself. A call taken posts
// another first, so the queue always has slots.
class Call {
 public:
  Call(RlsServer::Service& service, RlsServer::Slots& slots)
      : service_(service), slots_(slots), state_(RlsDecider::NewCallState()) {}

  // Waits for the next call on the queue. (gRPC's context and writer are one call's
  // each: made anew.)
  void Post();

  // What the queue said about this call's last step; `ok` false: the server is
  // shutting down (a slot that never got a call) or the call broke.
  void Step(bool ok);

 private:
  enum class Phase { kWaiting, kDeciding, kFinishing };

  void Finish() {
    phase_ = Phase::kFinishing;
    responder_->Finish(response_,
                       error_.empty() ? grpc::Status::OK
                                      : grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, error_),
                       this);
  }

  RlsServer::Service& service_;
  RlsServer::Slots& slots_;
  std::optional<grpc::ServerContext> context_;
  std::optional<grpc::ServerAsyncResponseWriter<RateLimitResponse>> responder_;
  RateLimitRequest request_;
  RateLimitResponse response_;
  RlsDecider::CallState state_;
  grpc::Alarm alarm_;
  Phase phase_ = Phase::kWaiting;
  std::thread::id poller_;
  std::string error_;
};

}  // namespace

// A queue's calls, used by its poller's thread only: the finished ones wait here to be
// posted again.
struct RlsServer::Slots {
  Slots(Service& s, grpc::ServerCompletionQueue& q, HandOver& h)
      : service(s), queue(q), hand_over(h) {}
  ~Slots() {
    for (Call* call : spare) delete call;
  }
  Call* Take() {
    if (spare.empty()) return new Call(service, *this);
    Call* call = spare.back();
    spare.pop_back();
    return call;
  }

  Service& service;
  grpc::ServerCompletionQueue& queue;
  HandOver& hand_over;
  std::vector<Call*> spare;
};

namespace {

void Call::Post() {
  context_.emplace();
  responder_.emplace(&*context_);
  phase_ = Phase::kWaiting;
  error_.clear();
  service_.async().RequestShouldRateLimit(&*context_, &request_, &*responder_, &slots_.queue,
                                          &slots_.queue, this);
}

void Call::Step(bool ok) {
  SLUICE_TAKEN_BACK(this);
  switch (phase_) {
    case Phase::kWaiting:
      if (!ok) break;
      slots_.Take()->Post();
      phase_ = Phase::kDeciding;
      poller_ = std::this_thread::get_id();
      slots_.hand_over.deciding.fetch_add(1, std::memory_order_relaxed);
      // The memory store answers at once, here; a Redis decision is answered on a
      // worker's loop, which hands the call back to this queue (an alarm due now), so
      // that the answer is written and the call ends on its poller's thread.
      service_.decider().DecideAsync(
          request_, response_,
          [this](std::string error) {
            error_ = std::move(error);
            RlsServer::HandOver& hand_over = slots_.hand_over;
            if (std::this_thread::get_id() == poller_) {
              hand_over.deciding.fetch_sub(1, std::memory_order_release);
              Finish();
              return;
            }
            // Nothing of the call is read after the hand-over: the poller may end it as
            // soon as the alarm is set (the alarm's own state is reference-counted).
            grpc::Alarm& alarm = alarm_;
            grpc::ServerCompletionQueue* queue = &slots_.queue;
            void* tag = this;
            std::lock_guard lock(hand_over.mutex);
            if (!hand_over.open) {
              // The service stopped without it (its client was cancelled then): the
              // call is left as it is, at the process's end.
              hand_over.deciding.fetch_sub(1, std::memory_order_release);
              return;
            }
            SLUICE_HANDED_OVER(tag);
            alarm.Set(queue, gpr_now(GPR_CLOCK_MONOTONIC), tag);
          },
          state_.get());
      return;
    case Phase::kDeciding:  // back from a worker's loop
      slots_.hand_over.deciding.fetch_sub(1, std::memory_order_release);
      if (!ok) break;
      Finish();
      return;
    case Phase::kFinishing:
      if (!ok || slots_.spare.size() >= kMaxSpareCalls) break;
      // Done with gRPC: its call is released now, and the rest kept for a later one;
      // but not the buffers of an outsized call, which would stay at its size.
      responder_.reset();
      context_.reset();
      if (request_.ByteSizeLong() > kMaxKeptRequestBytes) {
        request_ = RateLimitRequest();
        response_ = RateLimitResponse();
        state_ = RlsDecider::NewCallState();
      }
      slots_.spare.push_back(this);
      return;
  }
  delete this;
}

// Calls waiting on each queue for a client: enough that a burst of new calls does not
// wait for a slot to be posted. A call that finds no slot is parked in gRPC's own
// pending list and matched later, which costs more: with 256 calls in flight, 64 slots
// gave 31,000 calls/s on one core and 512 slots 36,000-40,000 (docs/benchmarks.md).
// A slot is one Call (about 1.5 KB), so 512 a queue is under 1 MB.
constexpr int kPostedCalls = 512;

}  // namespace

RlsServer::RlsServer(RlsDecider& decider, int threads)
    : decider_(decider), threads_(std::max(1, threads)) {}

RlsServer::~RlsServer() { Stop(); }

std::string RlsServer::Start(const net::Endpoint& endpoint) {
  // Debian's abseil is built with absl::Mutex deadlock detection on, which keeps a
  // lock graph on every lock gRPC takes: measured at 3% of the server's CPU per call
  // (docs/benchmarks.md). sluice takes no absl locks of its own.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  service_ = std::make_unique<Service>(decider_);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(endpoint.ToString(), grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service_->async());
  for (int i = 0; i < threads_; ++i) queues_.push_back(builder.AddCompletionQueue());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port == 0) {
    server_.reset();
    for (auto& queue : queues_) queue->Shutdown();
    DrainQueues();
    return fmt::format("grpc_listen {}: cannot listen there", endpoint.ToString());
  }
  port_ = static_cast<uint16_t>(port);
  for (auto& queue : queues_) {
    grpc::ServerCompletionQueue* q = queue.get();
    slots_.push_back(std::make_unique<Slots>(*service_, *q, hand_over_));
    for (int i = 0; i < kPostedCalls; ++i) slots_.back()->Take()->Post();
    pollers_.emplace_back([q] {
      void* tag;
      bool ok;
      while (q->Next(&tag, &ok)) static_cast<Call*>(tag)->Step(ok);
    });
  }
  return "";
}

void RlsServer::DrainQueues() {
  for (auto& queue : queues_) {
    void* tag;
    bool ok;
    while (queue->Next(&tag, &ok)) static_cast<Call*>(tag)->Step(false);
  }
  queues_.clear();
}

void RlsServer::Stop() {
  if (server_ == nullptr) return;
  // The calls in flight finish (up to the grace), the posted slots come back with
  // ok == false, and then each queue ends its poller's loop.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  // A call still with the store (Redis waits up to its command timeout) comes back
  // through its queue, so the queues stay open for it, for a while; past that it is
  // left out (its client was cancelled by the shutdown anyway).
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (hand_over_.deciding.load(std::memory_order_acquire) > 0 &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  {
    std::lock_guard lock(hand_over_.mutex);
    hand_over_.open = false;
  }
  for (auto& queue : queues_) queue->Shutdown();
  for (std::thread& poller : pollers_) poller.join();
  pollers_.clear();
  slots_.clear();  // the spare calls, which hold nothing of gRPC's
  queues_.clear();
  server_.reset();
}

}  // namespace sluice::rls
