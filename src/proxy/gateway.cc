#include "proxy/gateway.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "core/check.h"
#include "http/ascii.h"
#include "http/balancer.h"
#include "http/proxy_headers.h"
#include "http/upstream_connection.h"
#include "http/upstream_health.h"
#include "http/upstream_pool.h"

namespace sluice::proxy {
namespace {

constexpr size_t kNone = SIZE_MAX;

// Everything that defines a group: a reload that leaves it unchanged keeps the group's
// health state, breakers and warm connections.
std::string Fingerprint(const config::Upstream& u) {
  std::string out =
      fmt::format("{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|", u.name, static_cast<int>(u.balance),
                  u.health_check_path, u.health_check_interval.count(), u.unhealthy_threshold,
                  u.healthy_threshold, u.circuit_consecutive_failures, u.circuit_open.count(),
                  u.fallback, u.tls, u.connect_timeout.count(), u.first_byte_timeout.count(),
                  u.idle_timeout.count(), u.max_idle_connections);
  for (const config::UpstreamServer& s : u.servers) {
    out += s.address.ToString();
    out += '*';
    out += std::to_string(s.weight);
    out += ',';
  }
  return out;
}

// RFC 9110 9.2.2, as nginx's proxy_next_upstream counts them (and TRACE).
bool IsIdempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" ||
         method == "OPTIONS" || method == "TRACE";
}

// An active health check of one server: GET <path>, passed on a 2xx or 3xx in time
// (HAProxy's httpchk rule).
class HealthCheck;

}  // namespace

// One upstream group as one worker sees it.
struct Group {
  Group(net::EventLoop& loop, metrics::Registry& registry, metrics::WorkerMetrics& metrics,
        const config::Upstream& config, uint64_t seed);
  ~Group();

  void ScheduleChecks();
  void RunDueChecks();
  void OnCheckDone(size_t server, bool passed);
  // Reports an attempt's outcome to the breaker and keeps the gauge in step.
  void Report(size_t server, http::AttemptOutcome outcome);

  net::EventLoop& loop;
  metrics::WorkerMetrics& metrics;
  std::string name;
  std::string fingerprint;
  size_t metrics_slot;
  std::vector<net::Endpoint> endpoints;
  std::vector<std::string> server_names;
  std::vector<size_t> circuit_slots;
  http::Balancer balancer;
  http::UpstreamHealth health;
  std::vector<http::ServerStatus> statuses;
  http::UpstreamPool pool;
  // A 503 for "no server eligible" says when to come back: when an open breaker lets
  // its probe through.
  int64_t retry_after_seconds;
  // Active checks: their own pool (short timeouts), one in flight per server at most.
  std::string check_path;
  std::unique_ptr<http::UpstreamPool> check_pool;
  std::vector<std::unique_ptr<HealthCheck>> checks;
  net::EventLoop::TimerId check_timer = net::EventLoop::kNoTimer;
  bool retired = false;  // a reload replaced it; requests in flight finish on it
};

struct Route {
  std::string host;  // "" = any
  std::string path_prefix;
  size_t group;
};

// The routes and groups of one config, shared by the requests that started under it.
struct Routing {
  std::vector<Route> routes;  // most specific first: a named host, then longer prefixes
  std::vector<std::shared_ptr<Group>> groups;
  std::vector<size_t> fallback;  // per group: the fallback group's index, or kNone

  size_t Match(std::string_view host, std::string_view path) const {
    for (const Route& r : routes) {
      if (!r.host.empty() && !http::EqualsIgnoreCase(r.host, host)) continue;
      if (path.substr(0, r.path_prefix.size()) == r.path_prefix) return r.group;
    }
    return kNone;
  }
};

namespace {

class HealthCheck final : public http::UpstreamConnection::Handler {
 public:
  HealthCheck(Group& group, size_t server) : group_(group), server_(server) {
    head_ = fmt::format(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice-health-check\r\nAccept: */*\r\n\r\n",
        group.check_path, group.server_names[server]);
  }
  ~HealthCheck() {
    if (connection_ != nullptr) group_.check_pool->Release(*connection_);
  }

  void Start() {
    passed_ = false;
    connection_ = &group_.check_pool->Acquire(group_.endpoints[server_], *this);
    connection_->StartRequest(*this, {head_, {}, false});
  }

  void OnResponseHead(http::UpstreamConnection&, const http::ResponseHead& head) override {
    passed_ = head.status >= 200 && head.status < 400;
  }
  void OnResponseBody(http::UpstreamConnection&, std::string_view) override {}
  void OnResponseComplete(http::UpstreamConnection&) override { End(passed_); }
  void OnRequestBodyDrained(http::UpstreamConnection&) override {}
  void OnUpstreamError(http::UpstreamConnection&, const http::UpstreamError&) override {
    End(false);
  }

 private:
  void End(bool passed) {
    group_.check_pool->Release(*connection_);
    connection_ = nullptr;
    group_.OnCheckDone(server_, passed);
  }

  Group& group_;
  const size_t server_;
  std::string head_;
  http::UpstreamConnection* connection_ = nullptr;
  bool passed_ = false;
};

http::UpstreamHealthOptions HealthOptionsOf(const config::Upstream& c, uint64_t seed) {
  http::UpstreamHealthOptions o;
  o.circuit_consecutive_failures = c.circuit_consecutive_failures;
  o.circuit_open = c.circuit_open;
  o.active_checks = !c.health_check_path.empty();
  o.check_interval = c.health_check_interval;
  o.unhealthy_threshold = c.unhealthy_threshold;
  o.healthy_threshold = c.healthy_threshold;
  o.jitter_seed = seed;
  return o;
}

http::UpstreamPool::Options PoolOptionsOf(const config::Upstream& c) {
  http::UpstreamPool::Options o;
  o.max_idle_per_server = c.max_idle_connections;
  o.connection.timeouts.connect = c.connect_timeout;
  o.connection.timeouts.first_byte = c.first_byte_timeout;
  o.connection.timeouts.idle = c.idle_timeout;
  if (c.tls) o.connection.tls = &net::TlsClientContext::Shared();
  return o;
}

std::vector<http::BalancerServer> BalancerServersOf(const config::Upstream& c) {
  std::vector<http::BalancerServer> servers;
  for (const config::UpstreamServer& s : c.servers) {
    servers.push_back({s.address.ToString(), s.weight});
  }
  return servers;
}

}  // namespace

Group::Group(net::EventLoop& loop, metrics::Registry& registry, metrics::WorkerMetrics& metrics,
             const config::Upstream& config, uint64_t seed)
    : loop(loop),
      metrics(metrics),
      name(config.name),
      fingerprint(Fingerprint(config)),
      metrics_slot(registry.UpstreamSlot(config.name)),
      balancer(config.balance, BalancerServersOf(config), seed),
      health(config.servers.size(), HealthOptionsOf(config, seed ^ 0x9e3779b97f4a7c15ULL),
             loop.now()),
      statuses(config.servers.size()),
      pool(loop, PoolOptionsOf(config)),
      retry_after_seconds(std::max<int64_t>(
          1, std::chrono::ceil<std::chrono::seconds>(config.circuit_open).count())),
      check_path(config.health_check_path) {
  for (const config::UpstreamServer& s : config.servers) {
    endpoints.push_back(s.address);
    server_names.push_back(s.address.ToString());
    circuit_slots.push_back(registry.CircuitSlot(name, server_names.back()));
    metrics.circuit_open[circuit_slots.back()].store(0, std::memory_order_relaxed);
  }
  if (!check_path.empty()) {
    // A check that takes longer than its interval has failed (HAProxy's `timeout
    // check` defaults to `inter` as well).
    http::UpstreamPool::Options o;
    o.max_idle_per_server = 1;
    const Duration timeout =
        std::min<Duration>(config.health_check_interval, std::chrono::seconds(5));
    o.connection.timeouts = {timeout, timeout, timeout};
    if (config.tls) o.connection.tls = &net::TlsClientContext::Shared();
    check_pool = std::make_unique<http::UpstreamPool>(loop, o);
    for (size_t i = 0; i < endpoints.size(); ++i) {
      checks.push_back(std::make_unique<HealthCheck>(*this, i));
    }
    ScheduleChecks();
  }
}

Group::~Group() {
  loop.Cancel(check_timer);
  checks.clear();  // before the pool their connections come from
}

void Group::ScheduleChecks() {
  loop.Cancel(check_timer);
  check_timer = net::EventLoop::kNoTimer;
  const std::optional<http::UpstreamHealth::DueCheck> due = health.NextCheck();
  if (!due) return;
  check_timer = loop.RunAt(std::max(due->at, loop.now()), [this] {
    check_timer = net::EventLoop::kNoTimer;
    RunDueChecks();
  });
}

void Group::RunDueChecks() {
  const Timestamp now = loop.now();
  for (auto due = health.NextCheck(); due && due->at <= now; due = health.NextCheck()) {
    health.StartCheck(due->server, now);
    checks[due->server]->Start();
  }
  ScheduleChecks();
}

void Group::OnCheckDone(size_t server, bool passed) {
  const http::HealthTransition t = health.ReportCheck(server, passed, loop.now());
  if (t != http::HealthTransition::kNone) {
    fmt::print(stderr, "sluice: upstream {} server {} marked {} by its health check\n", name,
               server_names[server], t == http::HealthTransition::kMarkedDown ? "down" : "up");
  }
  ScheduleChecks();
}

void Group::Report(size_t server, http::AttemptOutcome outcome) {
  const http::CircuitTransition t = health.Report(server, outcome, loop.now());
  if (t == http::CircuitTransition::kNone || retired) return;
  const bool open = t != http::CircuitTransition::kClosed;
  metrics.circuit_open[circuit_slots[server]].store(open ? 1 : 0, std::memory_order_relaxed);
  if (t != http::CircuitTransition::kReopened) {
    fmt::print(stderr, "sluice: upstream {} server {}: circuit breaker {}\n", name,
               server_names[server], open ? "opened" : "closed");
  }
}

// --- ProxyRequest ---------------------------------------------------------------------

class ProxyRequest final : public http::StreamHandler, public http::UpstreamConnection::Handler {
 public:
  explicit ProxyRequest(Gateway& gateway) : gateway_(gateway) {
    head_.reserve(1024);
    scratch_.reserve(1024);
  }

  // Prepare's part.
  void Init(http::ServerConnection& client, std::shared_ptr<Routing> routing, size_t group,
            const http::Request& request, const http::BodyFraming& body,
            const net::CidrList& trusted_proxies, void* owner) {
    client_ = &client;
    routing_ = std::move(routing);
    group_index_ = group;
    group_ = routing_->groups[group].get();
    owner_ = owner;
    body_ = body;
    head_method_ = request.head_method;
    idempotent_ = IsIdempotent(request.method);
    client_minor_ = request.version_minor;
    // A body small enough is kept as it goes, so that a retry can send it again.
    body_kept_ = body_.kind == http::BodyKind::kChunked ||
                 (body_.kind == http::BodyKind::kContentLength && body_.length <= kMaxKeptBody);
    // An Upgrade request goes up as a plain one; what may follow its head on the
    // client connection is not HTTP/1.1 that sluice speaks, so it closes after.
    force_close_ = request.FindHeader("upgrade").has_value();
    head_.clear();
    http::UpstreamRequestOptions options;
    options.trusted_proxies = &trusted_proxies;
    options.https = client.tls();
    // The Host nginx sends by default ($proxy_host) when the client named none.
    options.upstream_authority = group_->name;
    http::AppendUpstreamRequestHead(request, body_, options, head_);
  }

  void Start(uint64_t client_key, std::string_view response_lines) {
    std::memcpy(client_key_, &client_key, sizeof(client_key_));
    response_lines_.assign(response_lines);
    started_ = true;
    Attempt(std::nullopt);
  }

  void Cancel() {
    if (upstream_ == nullptr) return;
    EndAttempt(verdict_given_ ? std::nullopt : std::optional(http::AttemptOutcome::kAbandoned));
  }

  void Reset() {
    ++generation_;
    client_ = nullptr;
    gateway_.Release(routing_);
    group_ = nullptr;
    owner_ = nullptr;
    upstream_ = nullptr;
    started_ = false;
    attempts_ = 0;
    body_taken_ = 0;
    kept_body_.clear();
    body_resumed_ = false;
    body_complete_ = false;
    used_fallback_ = false;
    verdict_given_ = false;
    chunked_ = false;
    status_ = 0;
  }

  bool started() const { return started_; }

  // http::StreamHandler (the client side)
  void OnRequestBody(http::ServerConnection&, std::string_view bytes) override {
    body_taken_ += bytes.size();
    if (body_kept_) {
      if (kept_body_.size() + bytes.size() <= kMaxKeptBody) {
        kept_body_.append(bytes);
      } else {  // a chunked body that turned out large
        body_kept_ = false;
        kept_body_.clear();
      }
    }
    if (upstream_ == nullptr) return;
    if (!upstream_->SendBody(bytes)) client_->PauseBody();
  }
  void OnRequestBodyComplete(http::ServerConnection&) override {
    body_complete_ = true;
    if (upstream_ != nullptr && body_.kind != http::BodyKind::kNone) upstream_->FinishBody();
  }
  void OnResponseDrained(http::ServerConnection&) override {
    if (upstream_ != nullptr) upstream_->ResumeReading();
  }

  // http::UpstreamConnection::Handler (the upstream side)
  void OnResponseHead(http::UpstreamConnection&, const http::ResponseHead& head) override {
    status_ = head.status;
    group_->metrics.CountUpstream(group_->metrics_slot, head.status);
    verdict_given_ = true;
    group_->Report(server_, http::ClassifyUpstreamStatus(head.status));

    http::BodyFraming framing = head.body;
    if (head_method_ || head.body.kind == http::BodyKind::kNone) {
      // No body follows; a Content-Length still describes the representation (HEAD,
      // 304), except where none may be sent.
      framing = {};
      if (head.content_length && head.status >= 200 && head.status != 204) {
        framing = {http::BodyKind::kContentLength, *head.content_length};
      }
    } else if (head.body.kind != http::BodyKind::kContentLength) {
      // Chunked or close-delimited upstream: chunked to an HTTP/1.1 client, and until
      // close to an HTTP/1.0 one, which knows no chunks.
      framing.kind = client_minor_ >= 1 ? http::BodyKind::kChunked : http::BodyKind::kUntilClose;
    }
    chunked_ = framing.kind == http::BodyKind::kChunked && !head_method_;
    const bool close = force_close_ || framing.kind == http::BodyKind::kUntilClose ||
                       client_->closes_after_response();
    http::ClientResponseOptions options;
    options.client_version_minor = client_minor_;
    options.close = close;
    options.request_id = client_->request_id();
    options.date_line = http::CurrentDateLine();
    options.extra_lines = response_lines_;
    scratch_.clear();
    http::AppendClientResponseHead(head, framing, options, scratch_);
    const uint64_t generation = generation_;
    client_->StartResponse(scratch_, close);
    if (generation != generation_) return;  // the client went away
  }

  void OnResponseBody(http::UpstreamConnection&, std::string_view bytes) override {
    if (bytes.empty()) return;
    const uint64_t generation = generation_;
    bool more;
    if (chunked_) {
      char size_line[24];
      const int n = snprintf(size_line, sizeof(size_line), "%zx\r\n", bytes.size());
      more = client_->WriteResponse(std::string_view(size_line, static_cast<size_t>(n)), bytes,
                                    "\r\n");
    } else {
      more = client_->WriteResponse(bytes);
    }
    if (generation != generation_) return;
    if (!more && upstream_ != nullptr) upstream_->PauseReading();
  }

  void OnResponseComplete(http::UpstreamConnection&) override {
    const uint64_t generation = generation_;
    if (chunked_) client_->WriteResponse("0\r\n\r\n");
    if (generation != generation_) return;
    EndAttempt(std::nullopt);
    http::ServerConnection* client = client_;
    Finish(status_);
    client->EndResponse();
  }

  void OnRequestBodyDrained(http::UpstreamConnection&) override {
    if (client_ != nullptr) client_->ResumeBody();
  }

  void OnUpstreamError(http::UpstreamConnection&, const http::UpstreamError& error) override {
    const int status = error.timeout() ? 504 : 502;
    const bool had_verdict = verdict_given_;
    if (!had_verdict) group_->metrics.CountUpstream(group_->metrics_slot, status);
    EndAttempt(had_verdict ? std::nullopt : std::optional(http::AttemptOutcome::kFailure));
    if (client_->response_started()) {
      // Mid-body: the client's message cannot be completed, nor sent again.
      http::ServerConnection* client = client_;
      Finish(status_);
      client->AbortResponse();
      return;
    }
    const bool nothing_sent = error.kind == http::UpstreamErrorKind::kConnectFailed ||
                              error.kind == http::UpstreamErrorKind::kConnectTimeout;
    const bool retriable = !error.response_started && (body_taken_ == 0 || body_kept_) &&
                           (idempotent_ || nothing_sent);
    // One retry in the group; beyond it, the fallback once the group has no server
    // left to try (as nginx moves on to its backup servers).
    if (retriable && (attempts_ < 2 || FallbackReady(gateway_.loop_.now()))) {
      failed_status_ = status;
      Attempt(server_);
      return;
    }
    Answer(status);
  }

 private:
  // Picks a server (not `exclude`) and sends the request to it.
  void Attempt(std::optional<size_t> exclude) {
    const Timestamp now = gateway_.loop_.now();
    std::optional<size_t> picked = Pick(now, exclude);
    // The balancer gives the failed server back when it is the group's only eligible
    // one (a retry on a fresh connection covers a keep-alive connection the server had
    // closed); a fallback is the better second try.
    if (picked && picked == exclude && FallbackAvailable(now)) picked.reset();
    if (!picked && FallbackAvailable(now)) {
      // The group has no server to give (down, open, or the one that just failed).
      used_fallback_ = true;
      group_index_ = routing_->fallback[group_index_];
      group_ = routing_->groups[group_index_].get();
      picked = Pick(now, std::nullopt);
    }
    if (!picked) {
      Answer(exclude ? failed_status_ : 503);
      return;
    }
    server_ = *picked;
    group_->health.OnPicked(server_, now);
    ++group_->statuses[server_].active;
    ++attempts_;
    verdict_given_ = false;
    upstream_ = &group_->pool.Acquire(group_->endpoints[server_], *this);
    upstream_->StartRequest(*this, {head_, body_, head_method_});
    // A retry: what the client sent so far goes again (kept, as it is small), then the
    // rest as it comes. The client's body is resumed last: that may deliver the rest,
    // and its end, before it returns.
    const bool more = body_taken_ == 0 || upstream_->SendBody(kept_body_);
    if (body_.kind != http::BodyKind::kNone && body_complete_) {
      upstream_->FinishBody();
    } else if (!more) {
      client_->PauseBody();
    } else if (body_resumed_) {
      client_->ResumeBody();  // it may have been paused for the failed upstream
    }
    if (!body_resumed_) {
      // The body (or, without one, the end of the message) is read from now on. This
      // may deliver what is buffered before it returns.
      body_resumed_ = true;
      client_->ResumeBody();
    }
  }

  std::optional<size_t> Pick(Timestamp now, std::optional<size_t> exclude) {
    if (!group_->health.AnyEligible(now)) return std::nullopt;
    group_->health.FillEligibility(now, group_->statuses);
    return group_->balancer.Pick(
        {group_->statuses, std::string_view(client_key_, sizeof(client_key_)), exclude});
  }

  // The group has a fallback, not tried yet, with a server to give.
  bool FallbackAvailable(Timestamp now) const {
    const size_t fallback = routing_->fallback[group_index_];
    return fallback != kNone && !used_fallback_ &&
           routing_->groups[fallback]->health.AnyEligible(now);
  }
  // ... and the group itself has no server eligible: worth an attempt beyond the retry.
  bool FallbackReady(Timestamp now) const {
    return FallbackAvailable(now) && !group_->health.AnyEligible(now);
  }

  // The current attempt is over: its connection goes back to the pool (kept when
  // idle, closed otherwise) and, when `outcome` is given, the breaker hears it.
  void EndAttempt(std::optional<http::AttemptOutcome> outcome) {
    --group_->statuses[server_].active;
    if (outcome) group_->Report(server_, *outcome);
    http::UpstreamConnection* upstream = upstream_;
    upstream_ = nullptr;
    group_->pool.Release(*upstream);
  }

  // sluice answers for the upstream: 502, 503 or 504.
  void Answer(int status) {
    http::ServerConnection* client = client_;
    std::string headers = response_lines_;
    std::string_view body = "{\"error\":\"upstream_unavailable\"}\n";
    if (status == 503) {
      headers += fmt::format("Retry-After: {}\r\n", group_->retry_after_seconds);
      body = "{\"error\":\"no_healthy_upstream\"}\n";
    } else if (status == 504) {
      body = "{\"error\":\"upstream_timeout\"}\n";
    }
    const bool close = force_close_;
    Finish(status);
    // After an Upgrade request the connection ends with its answer, as after a
    // proxied one (StartResponse's `close`).
    if (close) client->Drain();
    client->Respond(status, headers, "application/json", body);
  }

  // Tells the listener and recycles this request; the caller then ends the client's
  // response, which may start the connection's next request (and reuse this object).
  void Finish(int status) {
    void* owner = owner_;
    Gateway& gateway = gateway_;
    --gateway.active_;
    gateway.Recycle(*this);
    gateway.listener_.OnProxyDone(owner, status);
  }

  Gateway& gateway_;
  // Bumped on every recycle: a call into the client that may have ended this request
  // (the client closing, or its next request reusing this object) is detected by it.
  uint64_t generation_ = 0;
  http::ServerConnection* client_ = nullptr;
  std::shared_ptr<Routing> routing_;
  size_t group_index_ = 0;
  Group* group_ = nullptr;
  void* owner_ = nullptr;

  std::string head_;  // the upstream request head
  http::BodyFraming body_;
  bool head_method_ = false;
  bool idempotent_ = false;
  bool force_close_ = false;
  int client_minor_ = 1;
  char client_key_[8] = {};
  std::string response_lines_;

  bool started_ = false;
  http::UpstreamConnection* upstream_ = nullptr;
  size_t server_ = 0;
  int attempts_ = 0;
  int failed_status_ = 502;
  bool used_fallback_ = false;
  bool verdict_given_ = false;  // the breaker heard this attempt's outcome
  uint64_t body_taken_ = 0;     // request body bytes read from the client
  // Up to kMaxKeptBody of them, for a retry (nginx keeps bodies in a buffer, or a file).
  static constexpr size_t kMaxKeptBody = 64 * 1024;
  std::string kept_body_;
  bool body_kept_ = false;
  bool body_resumed_ = false;
  bool body_complete_ = false;

  int status_ = 0;
  bool chunked_ = false;  // framing the response body in chunks for the client
  std::string scratch_;
};

// --- Gateway --------------------------------------------------------------------------

Gateway::Gateway(net::EventLoop& loop, metrics::Registry& registry, metrics::WorkerMetrics& metrics,
                 ProxyListener& listener, uint64_t seed)
    : loop_(loop), registry_(registry), metrics_(metrics), listener_(listener), seed_(seed) {}

Gateway::~Gateway() {
  loop_.Cancel(retire_timer_);
  requests_.clear();  // (each holds a routing) before the routings go
}

void Gateway::Release(std::shared_ptr<Routing>& routing) {
  if (routing == nullptr) return;
  if (routing.use_count() > 1) {
    routing.reset();
    return;
  }
  retired_.push_back(std::move(routing));
  if (retire_timer_ == net::EventLoop::kNoTimer) {
    retire_timer_ = loop_.RunAt(loop_.now(), [this] {
      retire_timer_ = net::EventLoop::kNoTimer;
      std::vector<std::shared_ptr<Routing>> retired;
      retired.swap(retired_);
    });
  }
}

bool Gateway::enabled() const { return routing_ != nullptr && !routing_->routes.empty(); }

void Gateway::Configure(const config::Config& config) {
  auto routing = std::make_shared<Routing>();
  for (const config::Upstream& upstream : config.upstreams) {
    std::shared_ptr<Group> group;
    if (routing_ != nullptr) {
      const std::string fingerprint = Fingerprint(upstream);
      for (const auto& old : routing_->groups) {
        if (old->fingerprint == fingerprint) group = old;
      }
    }
    if (group == nullptr) {
      group = std::make_shared<Group>(loop_, registry_, metrics_, upstream,
                                      seed_ + routing->groups.size() * 0x9e3779b97f4a7c15ULL);
    }
    routing->groups.push_back(std::move(group));
  }
  auto index_of = [&](std::string_view name) {
    for (size_t i = 0; i < config.upstreams.size(); ++i) {
      if (config.upstreams[i].name == name) return i;
    }
    return kNone;
  };
  for (const config::Upstream& upstream : config.upstreams) {
    routing->fallback.push_back(upstream.fallback.empty() ? kNone : index_of(upstream.fallback));
  }
  for (const config::Route& route : config.routes) {
    const size_t group = index_of(route.upstream);
    if (group != kNone) routing->routes.push_back({route.host, route.path_prefix, group});
  }
  std::stable_sort(routing->routes.begin(), routing->routes.end(),
                   [](const Route& a, const Route& b) {
                     if (a.host.empty() != b.host.empty()) return !a.host.empty();
                     return a.path_prefix.size() > b.path_prefix.size();
                   });
  // Servers no group has any more leave the circuit gauge.
  if (routing_ != nullptr) {
    for (const auto& old : routing_->groups) {
      for (size_t slot : old->circuit_slots) {
        bool kept = false;
        for (const auto& g : routing->groups) {
          kept = kept || std::find(g->circuit_slots.begin(), g->circuit_slots.end(), slot) !=
                             g->circuit_slots.end();
        }
        if (!kept) metrics_.circuit_open[slot].store(-1, std::memory_order_relaxed);
      }
    }
    // Groups left behind by this reload no longer speak for the gauge; the requests
    // still on them finish without writing it.
    for (const auto& old : routing_->groups) {
      if (std::find(routing->groups.begin(), routing->groups.end(), old) == routing->groups.end()) {
        old->retired = true;
      }
    }
  }
  Release(routing_);
  routing_ = std::move(routing);
}

Gateway::Prepared Gateway::Prepare(http::ServerConnection& connection, const http::Request& request,
                                   const net::CidrList& trusted_proxies, void* owner) {
  if (request.method == "CONNECT") return {nullptr, 405, "method_not_allowed"};
  const size_t group = routing_->Match(request.host, request.path);
  if (group == kNone) return {nullptr, 404, "no_route"};
  const http::RequestFraming framing = http::CheckRequestFraming(request);
  if (!framing.ok()) {
    return {nullptr, http::RefusalStatus(framing.refusal), http::RefusalName(framing.refusal)};
  }
  ProxyRequest& r = NewRequest();
  r.Init(connection, routing_, group, request, framing.body, trusted_proxies, owner);
  connection.Hold();
  connection.StreamBody(r);
  return {&r, 0, {}};
}

void Gateway::Start(ProxyRequest& request, uint64_t client_key, std::string_view response_lines) {
  ++active_;
  request.Start(client_key, response_lines);
}

void Gateway::Cancel(ProxyRequest& request) {
  request.Cancel();
  if (request.started()) --active_;
  Recycle(request);
}

ProxyRequest& Gateway::NewRequest() {
  if (free_.empty()) {
    requests_.push_back(std::make_unique<ProxyRequest>(*this));
    free_.push_back(requests_.back().get());
  }
  ProxyRequest* r = free_.back();
  free_.pop_back();
  return *r;
}

void Gateway::Recycle(ProxyRequest& request) {
  request.Reset();
  free_.push_back(&request);
}

}  // namespace sluice::proxy
