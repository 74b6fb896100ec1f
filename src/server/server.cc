#include "server/server.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <google/protobuf/stubs/logging.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <unordered_map>

#include "api/check_request.h"
#include "api/check_response.h"
#include "api/decision_request.h"
#include "api/json_text.h"
#include "core/check.h"
#include "net/event_loop.h"
#include "net/tls.h"
#include "proxy/gateway.h"
#include "rls/grpc_connection.h"
#include "store/redis_scripts.h"
#include "store/redis_store.h"

namespace sluice::server {
namespace {

using namespace std::chrono_literals;

// How long a shutdown waits for requests in flight (held ones included).
constexpr Duration kDrainGrace = 10s;

std::string Errno(std::string_view what) { return fmt::format("{}: {}", what, strerror(errno)); }

// A non-blocking listening socket on `endpoint`; SO_REUSEPORT lets every worker bind
// the same address and the kernel spread new connections among them.
int Listen(const net::Endpoint& endpoint, bool reuse_port, std::string* error) {
  sockaddr_storage address;
  const socklen_t length = endpoint.ToSockaddr(&address);
  const int fd = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = Errno("socket");
    return -1;
  }
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), length) != 0) {
    *error = Errno(fmt::format("bind {}", endpoint.ToString()));
    close(fd);
    return -1;
  }
  if (listen(fd, 4096) != 0) {
    *error = Errno(fmt::format("listen {}", endpoint.ToString()));
    close(fd);
    return -1;
  }
  return fd;
}

uint16_t BoundPort(int fd) {
  sockaddr_storage address;
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  if (address.ss_family == AF_INET)
    return ntohs(reinterpret_cast<sockaddr_in*>(&address)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&address)->sin6_port);
}

// Who serves grpc_listen: the config's choice, unless SLUICE_GRPC_SERVER (native or
// grpc-cpp) says otherwise (the test suite runs its gRPC tests against both).
config::Config::GrpcServer GrpcServerOf(const config::Config& config) {
  const char* set = getenv("SLUICE_GRPC_SERVER");
  const std::string_view env = set != nullptr ? set : "";
  if (env == "grpc-cpp") return config::Config::GrpcServer::kGrpcCpp;
  if (env == "native") return config::Config::GrpcServer::kNative;
  return config.grpc_server;
}

// The envoyproxy/ratelimit configs that `config` names; false with every error, one per
// line, in `errors`. No paths: no limits (every descriptor is answered OK).
bool LoadRlsConfig(const config::Config& config,
                   std::shared_ptr<const rls::RateLimitConfig>* loaded, std::string* errors) {
  if (config.envoy_ratelimit_configs.empty()) {
    const rls::LoadResult none = rls::RateLimitConfig::Load({});
    *loaded = none.config;
    return true;
  }
  rls::LoadResult result = rls::RateLimitConfig::LoadPaths(config.envoy_ratelimit_configs);
  if (result.errors.empty() && config.store.backend == config::StoreConfig::Backend::kRedis) {
    result.errors = rls::RedisLimitErrors(*result.config);
  }
  if (!result.errors.empty()) {
    for (const config::ConfigError& e : result.errors) *errors += e.ToString() + "\n";
    errors->pop_back();
    return false;
  }
  *loaded = std::move(result.config);
  return true;
}

http::ProtocolLimits LimitsOf(const config::Config& config) {
  http::ProtocolLimits limits;
  limits.max_header_bytes = config.http.max_header_bytes;
  limits.max_body_bytes = config.http.max_body_bytes;
  limits.header_timeout = config.http.header_timeout;
  limits.idle_timeout = config.http.idle_timeout;
  return limits;
}

using api::AppendJsonString;

void AppendHex64(std::string& out, uint64_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 15; i >= 0; --i) out += kHex[(v >> (4 * i)) & 0xf];
}

// Accepts connections on one listener for its owner.
class Acceptor final : public net::IoHandler {
 public:
  Acceptor(int fd, std::function<void(int, const sockaddr_storage&)> on_accept)
      : fd_(fd), on_accept_(std::move(on_accept)) {}
  void OnIoEvent(uint32_t events) override {
    for (int i = 0; i < 64; ++i) {
      sockaddr_storage address;
      socklen_t length = sizeof(address);
      const int fd = accept4(fd_, reinterpret_cast<sockaddr*>(&address), &length,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or a transient error (EMFILE): try again later
      on_accept_(fd, address);
    }
  }
  int fd() const { return fd_; }
  void Reset(int fd) { fd_ = fd; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
  std::function<void(int, const sockaddr_storage&)> on_accept_;
};

}  // namespace

// --- Worker ---------------------------------------------------------------------------

// A request whose answer is not known when its head is parsed: the store answers
// later (Redis), or a delay rule holds it. Kept with what its answer and log line
// need; pooled, so that a worker allocates none once warm.
struct HeldRequest {
  std::shared_ptr<const gate::Policy> policy;
  gate::Evaluation evaluation;
  http::ServerConnection* connection = nullptr;  // null once the client has gone
  Timestamp arrived;
  int64_t decided_ns = 0;        // time spent deciding in earlier phases, not waiting
  int64_t phase_started_ns = 0;  // when the current decision phase began
  net::EventLoop::TimerId timer = net::EventLoop::kNoTimer;
  std::string method;
  std::string path;
  std::string request_id;
  // Gateway mode: the forwarding prepared for it, until the proxied request is over.
  proxy::ProxyRequest* proxy = nullptr;
  bool counted_held = false;  // in sluice_requests_held while its decision is awaited

  // What the request asks (docs/decision-api.md): to be decided (and forwarded), a
  // decision about the request a proxy holds (GET /v1/auth), or answers to the
  // queries of a POST /v1/check.
  enum class Kind { kRequest, kAuth, kCheck };
  Kind kind = Kind::kRequest;
  int refuse_status = 0;  // /v1/auth?refuse_status=: a refusal answers with it
  // /v1/check: the body as it is read, then one evaluation per query: `evaluation`
  // for the first, `more` for the rest of a batch (kept for the next batch, so a
  // worker allocates none once warm), and how many the store has still to answer.
  std::string body;
  std::vector<std::unique_ptr<gate::Evaluation>> more;
  size_t queries = 0;
  bool batch = false;
  int outstanding = 0;

  gate::Evaluation& QueryEvaluation(size_t i) { return i == 0 ? evaluation : *more[i - 1]; }
  // The store still holds a pointer into it.
  bool StoreAnswering() const {
    return kind == Kind::kCheck ? outstanding > 0 : evaluation.verdict == gate::Verdict::kPending;
  }
};

class Worker final : public http::RequestHandler,
                     public http::StreamHandler,
                     public gate::EvaluationListener,
                     public proxy::ProxyListener,
                     public rls::GrpcConnectionOwner {
 public:
  Worker(Server& server, Store& shared_store, int listen_fd, uint64_t seed)
      : server_(server),
        loop_(clock_),
        metrics_(server.registry().AddWorker()),
        redis_store_(MakeRedisStore(server, loop_, metrics_, shared_store)),
        evaluator_(redis_store_ ? *redis_store_ : shared_store, metrics_, this),
        gateway_(loop_, server.registry(), metrics_, *this, seed ^ 0x5bd1e995u),
        ids_(seed),
        acceptor_(listen_fd, [this](int fd, const sockaddr_storage& a) { OnAccept(fd, a); }) {
    RefreshPolicy();
    loop_.Add(listen_fd, EPOLLIN, &acceptor_);
    loop_.AddTurnHook([this] { OnTurnEnd(); });
    response_headers_.reserve(1024);
    response_body_.reserve(512);
    log_.reserve(kLogFlushBytes + 1024);
  }

  ~Worker() {
    while (connections_ != nullptr) DestroyConnection(connections_);
    // A call still with the Redis store is not answered: the store, closed after this,
    // tells nobody.
    while (grpc_connections_ != nullptr) {
      rls::GrpcConnection* c = grpc_connections_;
      UnlinkGrpc(c);
      delete c;
    }
    DeleteClosed();
    if (acceptor_.fd() >= 0) close(acceptor_.fd());
    if (grpc_acceptor_.fd() >= 0) close(grpc_acceptor_.fd());
  }

  // Before Run: Envoy's rate limit service on `fd` (this worker's grpc_listen socket),
  // deciding with `decider`; `shared_access` is the memory store's access, or null to
  // use this worker's Redis store.
  void ServeGrpc(int fd, const rls::RlsDecider& decider, rls::RlsStoreAccess* shared_access) {
    rls_decider_ = &decider;
    rls_access_ = shared_access != nullptr ? shared_access : &own_store_access_;
    grpc_acceptor_.Reset(fd);
    loop_.Add(fd, EPOLLIN, &grpc_acceptor_);
  }

  void Run() { loop_.Run(); }
  net::EventLoop& loop() { return loop_; }

  // From any thread: runs `work` on this worker's loop with its Redis store (Envoy's
  // rate limit service, with store.backend redis).
  void RunWithStore(std::function<void(Store&, Timestamp)> work) {
    loop_.Post([this, work = std::move(work)] { work(*redis_store_, loop_.now()); });
  }

  // From the main thread: stop accepting, finish what is in flight, then stop.
  void BeginDrain() {
    loop_.Post([this] {
      draining_ = true;
      drain_deadline_ns_ = ToNanos(loop_.now()) + std::chrono::nanoseconds(kDrainGrace).count();
      // Closed, not just unwatched: the kernel then refuses new connections at once
      // instead of queueing them for a process that will not accept them.
      loop_.Remove(acceptor_.fd());
      acceptor_.Close();
      if (grpc_acceptor_.fd() >= 0) {
        loop_.Remove(grpc_acceptor_.fd());
        grpc_acceptor_.Close();
      }
      for (rls::GrpcConnection *c = grpc_connections_, *next; c != nullptr; c = next) {
        next = c->owner_next;
        c->Drain();
      }
      // The next one is taken first: Drain closes an idle connection, which unlinks it
      // (and clears its owner_next), and the walk would end there.
      for (http::ServerConnection *c = connections_, *next; c != nullptr; c = next) {
        next = c->owner_next;
        c->Drain();
      }
    });
  }

  // http::RequestHandler
  void OnRequest(http::ServerConnection& connection, const http::Request& request) override {
    RefreshPolicy();
    if (decision_api_ && request.path == "/v1/check") {
      StartCheck(connection, request);
      return;
    }
    if (decision_api_ && request.path == "/v1/auth") {
      Authorize(connection, request);
      return;
    }
    HeldRequest& r = NewHeld();
    r.phase_started_ns = ToNanos(clock_.Now());
    r.decided_ns = 0;
    if (gateway_.enabled()) {
      // Routed (and checked for smuggling) before the rules count it: a request that
      // cannot be forwarded is refused whatever its limits say.
      const proxy::Gateway::Prepared prepared =
          gateway_.Prepare(connection, request, policy_->config().trusted_proxies, &r);
      if (prepared.request == nullptr) {
        RespondError(connection, prepared.status, prepared.error);
        Recycle(r);
        return;
      }
      r.proxy = prepared.request;
    }
    evaluator_.Evaluate(*policy_, request, loop_.now(), r.evaluation);
    const gate::Verdict verdict = r.evaluation.verdict;
    if (verdict != gate::Verdict::kPending && verdict != gate::Verdict::kHold) {
      if (r.proxy != nullptr && verdict == gate::Verdict::kAllow) {
        KeepForAnswer(r, connection, request);
        Forward(r, r.phase_started_ns);
        return;
      }
      CancelProxy(r);
      Answer(connection, *policy_, r.evaluation, request.method, request.path, request.request_id,
             r.phase_started_ns);
      Recycle(r);
      return;
    }
    AnswerLater(r, connection, request);
  }

  // Keeps what the answer to a request decided later needs.
  void AnswerLater(HeldRequest& r, http::ServerConnection& connection,
                   const http::Request& request) {
    KeepForAnswer(r, connection, request);
    connection.Hold();
    r.counted_held = true;
    metrics_.requests_held.fetch_add(1, std::memory_order_relaxed);
    if (r.evaluation.verdict == gate::Verdict::kHold) ScheduleRecheck(r);
  }

  // GET /v1/auth: a proxy asks about the request it holds (forward-auth). Decided as
  // that request would be, held by a delay rule as it would be, and answered as in
  // decision mode: 200, or 429/403/400 (or refuse_status for proxies that only
  // understand some), with X-Sluice-Decision saying which.
  void Authorize(http::ServerConnection& connection, const http::Request& request) {
    int refuse_status = 0;
    if (const std::optional<std::string_view> asked =
            gate::QueryParam(request.query, "refuse_status")) {
      if (*asked == "401" || *asked == "403" || *asked == "429") {
        refuse_status = (*asked)[2] == '1' ? 401 : (*asked)[2] == '3' ? 403 : 429;
      } else {
        RespondBadRequest(connection, "refuse_status must be 401, 403 or 429");
        return;
      }
    }
    HeldRequest& r = NewHeld();
    r.kind = HeldRequest::Kind::kAuth;
    r.refuse_status = refuse_status;
    r.phase_started_ns = ToNanos(clock_.Now());
    r.decided_ns = 0;
    const http::Request& original = decision_request_.FromForwardAuth(request);
    evaluator_.Evaluate(*policy_, original, loop_.now(), r.evaluation);
    const gate::Verdict verdict = r.evaluation.verdict;
    if (verdict != gate::Verdict::kPending && verdict != gate::Verdict::kHold) {
      Answer(connection, *policy_, r.evaluation, original.method, original.path,
             original.request_id, r.phase_started_ns, &r);
      Recycle(r);
      return;
    }
    AnswerLater(r, connection, original);
  }

  // POST /v1/check: the body is read first (http.max_body_bytes bounds it), then
  // CheckBody answers.
  void StartCheck(http::ServerConnection& connection, const http::Request& request) {
    if (request.method != "POST") {
      metrics_.CountResponse(405);
      connection.Respond(405, "Allow: POST\r\n", "application/json",
                         "{\"error\":\"method_not_allowed\",\"message\":\"POST a JSON query "
                         "to /v1/check\"}\n");
      return;
    }
    HeldRequest& r = NewHeld();
    r.kind = HeldRequest::Kind::kCheck;
    r.phase_started_ns = ToNanos(clock_.Now());
    r.decided_ns = 0;
    r.body.clear();
    r.evaluation.Clear();
    r.outstanding = 0;
    KeepForAnswer(r, connection, request);
    connection.Hold();
    connection.StreamBody(*this);
    connection.ResumeBody();
  }

  // http::StreamHandler: a /v1/check body.
  void OnRequestBody(http::ServerConnection& connection, std::string_view bytes) override {
    static_cast<HeldRequest*>(connection.pending)->body.append(bytes);
  }
  void OnRequestBodyComplete(http::ServerConnection& connection) override {
    CheckBody(*static_cast<HeldRequest*>(connection.pending));
  }
  void OnResponseDrained(http::ServerConnection&) override {}

  void CheckBody(HeldRequest& r) {
    http::ServerConnection& connection = *r.connection;
    r.phase_started_ns = ToNanos(clock_.Now());
    if (!check_parser_.Parse(r.body)) {
      connection.pending = nullptr;
      RespondBadRequest(connection, check_parser_.error());
      Recycle(r);
      return;
    }
    const std::span<const api::CheckQuery> queries = check_parser_.queries();
    // Every rule named must exist before any is charged: a malformed batch takes nothing.
    // (Looked up once: check_rules_[i] is query i's rule, null for descriptors.)
    check_rules_.assign(queries.size(), nullptr);
    for (size_t i = 0; i < queries.size(); ++i) {
      if (!queries[i].by_rule) continue;
      check_rules_[i] = policy_->FindRule(queries[i].rule);
      if (check_rules_[i] != nullptr) continue;
      connection.pending = nullptr;
      std::string message =
          check_parser_.batch() ? fmt::format("query {}: unknown rule ", i) : "unknown rule ";
      AppendJsonString(message, queries[i].rule);
      RespondBadRequest(connection, message);
      Recycle(r);
      return;
    }
    r.policy = policy_;
    r.batch = check_parser_.batch();
    r.queries = queries.size();
    while (r.more.size() + 1 < r.queries) r.more.push_back(std::make_unique<gate::Evaluation>());
    r.outstanding = 1;  // one high until every query is asked: answers may come meanwhile
    const Timestamp now = loop_.now();
    for (size_t i = 0; i < queries.size(); ++i) {
      const api::CheckQuery& query = queries[i];
      gate::Evaluation& evaluation = r.QueryEvaluation(i);
      evaluation.owner = &r;
      if (query.by_rule) {
        evaluator_.EvaluateRule(*check_rules_[i], query.key, query.cost, now, evaluation);
      } else {
        evaluator_.Evaluate(*policy_,
                            decision_request_.FromDescriptors(check_parser_.descriptors(query)),
                            now, evaluation, query.cost);
      }
      if (evaluation.verdict == gate::Verdict::kPending) ++r.outstanding;
    }
    if (--r.outstanding == 0) {
      AnswerCheck(r);
      return;
    }
    r.counted_held = true;
    metrics_.requests_held.fetch_add(1, std::memory_order_relaxed);
  }

  void AnswerCheck(HeldRequest& r) {
    http::ServerConnection& connection = *r.connection;
    if (r.counted_held) metrics_.requests_held.fetch_sub(1, std::memory_order_relaxed);
    r.counted_held = false;
    response_headers_.clear();
    response_body_.clear();
    int status = 200;
    if (r.batch) {
      // Each query has its own answer; the batch as a whole was understood.
      response_body_ += '[';
      for (size_t i = 0; i < r.queries; ++i) {
        if (i > 0) response_body_ += ',';
        api::AppendCheckAnswer(r.QueryEvaluation(i), response_body_);
      }
      response_body_ += ']';
    } else {
      const gate::Evaluation& evaluation = r.evaluation;
      status = api::CheckStatus(evaluation);
      api::AppendCheckAnswer(evaluation, response_body_);
      if (status == 200 || status == 429) {
        gate::AppendRateLimitHeaders(evaluation, legacy_headers_, response_headers_);
      }
      const Duration wait = api::CheckRetryAfter(evaluation);
      if (status == 429 && wait != Decision::kNever) {
        gate::AppendRetryAfter(wait, response_headers_);
      }
    }
    response_body_ += '\n';
    const int64_t finished = ToNanos(clock_.Now());
    metrics_.request_duration.Observe(finished - r.phase_started_ns);
    metrics_.CountResponse(status);
    if (access_log_) {
      LogRequest(r.evaluation, r.method, r.path, r.request_id, status,
                 ToNanos(loop_.now()) - ToNanos(r.arrived));
    }
    connection.pending = nullptr;
    connection.Respond(status, response_headers_, "application/json", response_body_);
    Recycle(r);
  }

  void RespondBadRequest(http::ServerConnection& connection, std::string_view message) {
    metrics_.CountResponse(400);
    response_body_ = "{\"error\":\"bad_request\",\"message\":";
    AppendJsonString(response_body_, message);
    response_body_ += "}\n";
    connection.Respond(400, "", "application/json", response_body_);
  }

  // proxy::ProxyListener: a proxied request is over.
  void OnProxyDone(void* owner, int status) override {
    HeldRequest& r = *static_cast<HeldRequest*>(owner);
    r.proxy = nullptr;
    if (r.connection != nullptr) r.connection->pending = nullptr;
    metrics_.CountResponse(status);
    if (access_log_) {
      LogRequest(r.evaluation, r.method, r.path, r.request_id, status,
                 ToNanos(loop_.now()) - ToNanos(r.arrived));
    }
    Recycle(r);
  }

  void OnClose(http::ServerConnection& connection) override {
    if (connection.pending != nullptr) {
      HeldRequest& r = *static_cast<HeldRequest*>(connection.pending);
      connection.pending = nullptr;
      if (r.counted_held) metrics_.requests_held.fetch_sub(1, std::memory_order_relaxed);
      r.counted_held = false;
      CancelProxy(r);
      r.connection = nullptr;
      // Still with the store: it will answer into r, which is recycled then.
      if (!r.StoreAnswering()) {
        loop_.Cancel(r.timer);
        Recycle(r);
      }
    }
    Unlink(&connection);
    closed_.push_back(&connection);
    metrics_.connections_active.fetch_sub(1, std::memory_order_relaxed);
    server_.connections().fetch_sub(1, std::memory_order_relaxed);
  }

  // gate::EvaluationListener: the store answered a pending evaluation.
  void OnEvaluated(gate::Evaluation& evaluation) override {
    HeldRequest& r = *static_cast<HeldRequest*>(evaluation.owner);
    if (r.kind == HeldRequest::Kind::kCheck) {
      if (--r.outstanding > 0) return;  // more of the batch to come
      if (r.connection == nullptr) {
        Recycle(r);
      } else {
        AnswerCheck(r);
      }
      return;
    }
    if (r.connection == nullptr) {  // the client went away meanwhile
      Recycle(r);
      return;
    }
    if (evaluation.verdict == gate::Verdict::kHold) {
      r.decided_ns += ToNanos(clock_.Now()) - r.phase_started_ns;
      ScheduleRecheck(r);
      return;
    }
    Finish(r);
  }

  void OnProtocolError(http::ServerConnection& connection, int status) override {
    metrics_.CountResponse(status);
    // A streamed body that turned out bad (a broken chunk, too large) or stalled: its
    // upstream request is abandoned; the connection answers and closes.
    if (connection.pending != nullptr) CancelProxy(*static_cast<HeldRequest*>(connection.pending));
  }

 private:
  static constexpr size_t kLogFlushBytes = 3584;  // below PIPE_BUF: lines never interleave

  void RefreshPolicy() {
    const uint64_t version = server_.policy_version();
    if (version == policy_version_) return;
    policy_ = server_.policy();
    policy_version_ = version;
    limits_ = LimitsOf(policy_->config());
    legacy_headers_ = policy_->config().legacy_headers;
    decision_api_ = policy_->config().decision_api;
    FlushLog();  // what was logged so far goes to the file it was meant for
    log_file_ = server_.access_log();
    access_log_ = log_file_ != nullptr;
    max_connections_ = static_cast<int64_t>(policy_->config().http.max_connections);
    gateway_.Configure(policy_->config());
  }

  void KeepForAnswer(HeldRequest& r, http::ServerConnection& connection,
                     const http::Request& request) {
    r.policy = policy_;
    r.connection = &connection;
    r.arrived = loop_.now();
    r.method = request.method;
    r.path = request.path;
    r.request_id = request.request_id;
    connection.pending = &r;
  }

  // The rules allowed a routed request: it goes upstream, with its RateLimit fields on
  // the response. OnProxyDone follows (perhaps before this returns).
  void Forward(HeldRequest& r, int64_t started_ns) {
    metrics_.request_duration.Observe(ToNanos(clock_.Now()) - started_ns);
    response_headers_.clear();
    gate::AppendRateLimitHeaders(r.evaluation, legacy_headers_, response_headers_);
    gateway_.Start(*r.proxy, gate::ClientIpHash(r.evaluation.client_ip), response_headers_);
  }

  void CancelProxy(HeldRequest& r) {
    if (r.proxy == nullptr) return;
    gateway_.Cancel(*r.proxy);
    r.proxy = nullptr;
  }

  void RespondError(http::ServerConnection& connection, int status, std::string_view error) {
    metrics_.CountResponse(status);
    response_body_ = "{\"error\":\"";
    response_body_ += error;
    response_body_ += "\"}\n";
    connection.Respond(status, "", "application/json", response_body_);
  }

  // A new connection of either listener, counted against max_connections (of the
  // current config); false when refused (the descriptor is closed).
  bool Admit(int fd) {
    RefreshPolicy();
    if (server_.connections().fetch_add(1, std::memory_order_relaxed) >= max_connections_) {
      server_.connections().fetch_sub(1, std::memory_order_relaxed);
      metrics_.connections_refused.Add();
      close(fd);
      return false;
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return true;
  }

  void OnAccept(int fd, const sockaddr_storage& address) {
    const std::optional<net::IpAddress> peer =
        net::IpAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&address));
    if (!peer) {
      metrics_.connections_refused.Add();
      close(fd);
      return;
    }
    if (!Admit(fd)) return;
    SSL* tls = nullptr;
    if (server_.tls() != nullptr) {
      tls = server_.tls()->NewSession(fd);
      if (tls == nullptr) {
        server_.connections().fetch_sub(1, std::memory_order_relaxed);
        close(fd);
        return;
      }
    }
    auto* connection =
        new http::ServerConnection(loop_, fd, *peer, *this, ids_, limits_, timeouts_, tls);
    LinkFirst(connections_, connection);
    metrics_.connections_accepted.Add();
    metrics_.connections_active.fetch_add(1, std::memory_order_relaxed);
    connection->Start();
  }

  void OnGrpcAccept(int fd) {
    if (!Admit(fd)) return;
    auto* connection = new rls::GrpcConnection(loop_, fd, *rls_decider_, *rls_access_, *this);
    LinkFirst(grpc_connections_, connection);
    metrics_.connections_accepted.Add();
    metrics_.connections_active.fetch_add(1, std::memory_order_relaxed);
    connection->Start();
    if (draining_) connection->Drain();
  }

  // rls::GrpcConnectionOwner
  void OnGrpcConnectionDone(rls::GrpcConnection& connection) override {
    UnlinkGrpc(&connection);
    grpc_closed_.push_back(&connection);
    metrics_.connections_active.fetch_sub(1, std::memory_order_relaxed);
    server_.connections().fetch_sub(1, std::memory_order_relaxed);
  }

  // The connections' intrusive lists (owner_prev, owner_next), newest first.
  template <typename Connection>
  static void LinkFirst(Connection*& head, Connection* c) {
    c->owner_next = head;
    if (head != nullptr) head->owner_prev = c;
    head = c;
  }
  template <typename Connection>
  static void UnlinkFrom(Connection*& head, Connection* c) {
    if (c->owner_prev != nullptr) {
      c->owner_prev->owner_next = c->owner_next;
    } else if (head == c) {
      head = c->owner_next;
    }
    if (c->owner_next != nullptr) c->owner_next->owner_prev = c->owner_prev;
    c->owner_prev = c->owner_next = nullptr;
  }
  void UnlinkGrpc(rls::GrpcConnection* c) { UnlinkFrom(grpc_connections_, c); }
  void Unlink(http::ServerConnection* c) { UnlinkFrom(connections_, c); }

  void DestroyConnection(http::ServerConnection* c) {
    Unlink(c);
    delete c;
  }

  void DeleteClosed() {
    for (http::ServerConnection* c : closed_) delete c;
    closed_.clear();
    for (rls::GrpcConnection* c : grpc_closed_) delete c;
    grpc_closed_.clear();
  }

  void OnTurnEnd() {
    const int64_t now = ToNanos(loop_.now());
    // Output that goes out is progress: before a deadline is judged, the turn's output
    // is sent (otherwise it goes with the next turn's wait, in one system call).
    if (timeouts_.header.Due(now) || timeouts_.idle.Due(now)) loop_.RunDeferredSends();
    timeouts_.header.Expire(now);
    timeouts_.idle.Expire(now);
    DeleteClosed();
    FlushLog();
    if (draining_ &&
        ((connections_ == nullptr && grpc_connections_ == nullptr) || now >= drain_deadline_ns_)) {
      loop_.Stop();
    }
  }

  // The Redis store is per worker (its connections belong to this loop); null with
  // the memory store, which all workers share.
  static std::unique_ptr<store::RedisStore> MakeRedisStore(Server& server, net::EventLoop& loop,
                                                           metrics::WorkerMetrics& metrics,
                                                           Store& memory) {
    const config::StoreConfig& config = server.startup_config().store;
    if (config.backend != config::StoreConfig::Backend::kRedis) return nullptr;
    store::RedisStore::Options options;
    options.nodes = config.redis.nodes;
    options.cluster = config.redis.mode == config::RedisConfig::Mode::kCluster;
    options.connect_timeout = config.redis.connect_timeout;
    options.command_timeout = config.redis.command_timeout;
    switch (config.on_failure) {
      case config::StoreConfig::OnFailure::kAllow:
        options.on_failure = store::OnFailure::kAllow;
        break;
      case config::StoreConfig::OnFailure::kDeny:
        options.on_failure = store::OnFailure::kDeny;
        break;
      case config::StoreConfig::OnFailure::kLocal:
        options.on_failure = store::OnFailure::kLocal;
        break;
    }
    options.local = &memory;
    return std::make_unique<store::RedisStore>(loop, std::move(options), &server.registry(),
                                               &metrics);
  }

  HeldRequest& NewHeld() {
    if (free_held_.empty()) {
      held_pool_.push_back(std::make_unique<HeldRequest>());
      free_held_.push_back(held_pool_.back().get());
      free_held_.back()->evaluation.owner = free_held_.back();
    }
    HeldRequest* r = free_held_.back();
    free_held_.pop_back();
    return *r;
  }

  void Recycle(HeldRequest& r) {
    r.policy.reset();
    r.kind = HeldRequest::Kind::kRequest;
    r.refuse_status = 0;
    r.outstanding = 0;
    r.connection = nullptr;
    r.proxy = nullptr;
    r.counted_held = false;
    r.timer = net::EventLoop::kNoTimer;
    free_held_.push_back(&r);
  }

  void ScheduleRecheck(HeldRequest& r) {
    HeldRequest* p = &r;
    r.timer = loop_.RunAt(loop_.now() + r.evaluation.hold_for, [this, p] { Recheck(*p); });
  }

  void Recheck(HeldRequest& r) {
    r.timer = net::EventLoop::kNoTimer;
    const Timestamp now = loop_.now();
    r.phase_started_ns = ToNanos(clock_.Now());
    evaluator_.Recheck(r.evaluation, now, now - r.arrived);
    switch (r.evaluation.verdict) {
      case gate::Verdict::kPending:
        return;  // OnEvaluated follows
      case gate::Verdict::kHold:
        r.decided_ns += ToNanos(clock_.Now()) - r.phase_started_ns;
        ScheduleRecheck(r);
        return;
      default:
        Finish(r);
    }
  }

  // Answers a request that was held (by the store or a delay rule) and recycles it.
  void Finish(HeldRequest& r) {
    http::ServerConnection& connection = *r.connection;
    if (r.counted_held) metrics_.requests_held.fetch_sub(1, std::memory_order_relaxed);
    r.counted_held = false;
    // The histogram measures deciding, not the wait a delay rule imposes.
    const int64_t started = r.phase_started_ns - r.decided_ns;
    if (r.proxy != nullptr && (r.evaluation.verdict == gate::Verdict::kAllow ||
                               r.evaluation.verdict == gate::Verdict::kHold)) {
      Forward(r, started);
      return;
    }
    connection.pending = nullptr;
    CancelProxy(r);
    // The answer may go on to the connection's next pipelined request, which takes
    // another HeldRequest; this one is recycled once its answer is written.
    Answer(connection, *r.policy, r.evaluation, r.method, r.path, r.request_id, started, &r);
    Recycle(r);
  }

  void Answer(http::ServerConnection& connection, const gate::Policy& policy,
              const gate::Evaluation& evaluation, std::string_view method, std::string_view path,
              std::string_view request_id, int64_t started_ns, const HeldRequest* held = nullptr) {
    response_headers_.clear();
    response_body_.clear();
    int status = 200;
    const gate::RuleResult* deciding = evaluation.deciding;
    switch (evaluation.verdict) {
      case gate::Verdict::kDenied:
        status = 403;
        response_body_ = "{\"error\":\"forbidden\"}\n";
        break;
      case gate::Verdict::kMissingKey:
        status = 400;
        response_body_ = "{\"error\":\"missing_key\",\"rule\":";
        AppendJsonString(response_body_, deciding->rule->rule->name);
        response_body_ += "}\n";
        break;
      case gate::Verdict::kLimited: {
        status = 429;
        gate::AppendRateLimitHeaders(evaluation, legacy_headers_, response_headers_);
        response_body_ = "{\"error\":\"rate_limited\",\"rule\":";
        AppendJsonString(response_body_, deciding->rule->rule->name);
        if (evaluation.retry_after == Decision::kNever) {
          // Never within this policy (a zero limit): no Retry-After to promise.
          response_body_ += ",\"retry_after_ms\":null}\n";
        } else {
          const int64_t ms =
              (std::chrono::nanoseconds(evaluation.retry_after).count() + 999'999) / 1'000'000;
          gate::AppendRetryAfter(evaluation.retry_after, response_headers_);
          fmt::format_to(std::back_inserter(response_body_), ",\"retry_after_ms\":{}}}\n", ms);
        }
        break;
      }
      case gate::Verdict::kPending:  // answered only once the store has
        SLUICE_CHECK(false && "answering a request the store has not decided");
        break;
      case gate::Verdict::kAllow:
      case gate::Verdict::kHold:
        gate::AppendRateLimitHeaders(evaluation, legacy_headers_, response_headers_);
        response_body_ = "{\"allowed\":true,\"rules\":[";
        for (size_t i = 0; i < evaluation.results.size(); ++i) {
          if (i > 0) response_body_ += ',';
          AppendJsonString(response_body_, evaluation.results[i].rule->rule->name);
        }
        response_body_ += "]}\n";
        break;
    }
    if (held != nullptr && held->kind == HeldRequest::Kind::kAuth) {
      // For the proxy that asked: which answer this is whatever the status says (nginx
      // auth_request only passes 2xx, 401 and 403 on), and the status it wants for a
      // refusal.
      response_headers_ += status == 200   ? "X-Sluice-Decision: allowed\r\n"
                           : status == 429 ? "X-Sluice-Decision: limited\r\n"
                           : status == 403 ? "X-Sluice-Decision: denied\r\n"
                                           : "X-Sluice-Decision: missing_key\r\n";
      if (held->refuse_status != 0 && status != 200) status = held->refuse_status;
    }
    const int64_t finished = ToNanos(clock_.Now());
    metrics_.request_duration.Observe(finished - started_ns);
    metrics_.CountResponse(status);
    if (access_log_)
      LogRequest(evaluation, method, path, request_id, status, finished - started_ns);
    connection.Respond(status, response_headers_, "application/json", response_body_);
  }

  void LogRequest(const gate::Evaluation& evaluation, std::string_view method,
                  std::string_view path, std::string_view request_id, int status,
                  int64_t latency_ns) {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tm utc;
    gmtime_r(&ts.tv_sec, &utc);
    char time_text[40];
    const size_t n = strftime(time_text, sizeof(time_text), "%Y-%m-%dT%H:%M:%S", &utc);
    log_ += "{\"time\":\"";
    log_.append(time_text, n);
    fmt::format_to(std::back_inserter(log_), ".{:03d}Z\",\"request_id\":", ts.tv_nsec / 1'000'000);
    AppendJsonString(log_, request_id);
    log_ += ",\"client\":\"";
    AppendHex64(log_, gate::ClientIpHash(evaluation.client_ip));
    log_ += "\",\"method\":";
    AppendJsonString(log_, method);
    log_ += ",\"path\":";
    AppendJsonString(log_, path);
    fmt::format_to(std::back_inserter(log_), ",\"status\":{}", status);
    const gate::RuleResult* shown = evaluation.deciding;
    if (shown == nullptr && !evaluation.results.empty()) shown = &evaluation.results.front();
    std::string_view decision = evaluation.allow_listed ? "allow_listed" : "allowed";
    if (evaluation.verdict == gate::Verdict::kDenied) decision = "denied";
    if (shown != nullptr) {
      log_ += ",\"rule\":";
      AppendJsonString(log_, shown->rule->rule->name);
      log_ += ",\"key\":\"";
      AppendHex64(log_, shown->client_hash);
      log_ += '"';
      decision = metrics::OutcomeName(shown->outcome);
      for (const gate::RuleResult& r : evaluation.results) {
        if (r.outcome == metrics::Outcome::kShadowLimited && evaluation.deciding == nullptr) {
          decision = "shadow_limited";
        }
      }
    }
    log_ += ",\"decision\":\"";
    log_ += decision;
    fmt::format_to(std::back_inserter(log_), "\",\"latency_us\":{}}}\n", latency_ns / 1000);
    if (log_.size() >= kLogFlushBytes) FlushLog();
  }

  void FlushLog() {
    if (log_.empty()) return;
    // Whole lines only, each write below PIPE_BUF so workers' lines never mix.
    size_t start = 0;
    while (start < log_.size()) {
      size_t end = std::min(log_.size(), start + kLogFlushBytes);
      if (end < log_.size()) {
        const size_t newline = log_.rfind('\n', end - 1);
        end = newline != std::string::npos && newline >= start ? newline + 1 : end;
      }
      [[maybe_unused]] ssize_t written = write(log_file_->fd(), log_.data() + start, end - start);
      start = end;
    }
    log_.clear();
  }

  Server& server_;
  SteadyClock clock_;
  net::EventLoop loop_;
  metrics::WorkerMetrics& metrics_;
  std::unique_ptr<store::RedisStore> redis_store_;
  gate::Evaluator evaluator_;
  proxy::Gateway gateway_;
  http::RequestIdSource ids_;
  Acceptor acceptor_;
  http::ConnectionTimeouts timeouts_;
  http::ProtocolLimits limits_;

  std::shared_ptr<const gate::Policy> policy_;
  std::shared_ptr<const LogFile> log_file_;  // null: access log off
  uint64_t policy_version_ = UINT64_MAX;
  bool legacy_headers_ = false;
  bool decision_api_ = true;
  bool access_log_ = false;
  int64_t max_connections_ = 0;

  // grpc_listen served here (Config::GrpcServer::kNative); null otherwise.
  const rls::RlsDecider* rls_decider_ = nullptr;
  rls::RlsStoreAccess* rls_access_ = nullptr;
  // This worker's Redis store, on this loop, for the calls this worker takes.
  class OwnStoreAccess final : public rls::RlsStoreAccess {
   public:
    explicit OwnStoreAccess(Worker& worker) : worker_(worker) {}
    void Run(std::function<void(Store&, Timestamp)> work) override {
      work(*worker_.redis_store_, worker_.loop_.now());
    }
    bool Decides(const Limit& limit) const override { return store::FitsRedisArithmetic(limit); }

   private:
    Worker& worker_;
  };
  OwnStoreAccess own_store_access_{*this};
  Acceptor grpc_acceptor_{-1, [this](int fd, const sockaddr_storage&) { OnGrpcAccept(fd); }};
  rls::GrpcConnection* grpc_connections_ = nullptr;  // intrusive list of open ones
  std::vector<rls::GrpcConnection*> grpc_closed_;    // deleted at the end of the turn

  http::ServerConnection* connections_ = nullptr;        // intrusive list of open ones
  std::vector<http::ServerConnection*> closed_;          // deleted at the end of the turn
  std::vector<std::unique_ptr<HeldRequest>> held_pool_;  // every one made
  std::vector<HeldRequest*> free_held_;
  std::string response_headers_;
  std::string response_body_;
  std::string log_;
  api::CheckRequestParser check_parser_;
  std::vector<const gate::CompiledRule*> check_rules_;  // CheckBody's, reused
  api::DecisionRequestBuilder decision_request_;
  bool draining_ = false;
  int64_t drain_deadline_ns_ = 0;
};

// Envoy's rate limit service with the Redis store: each call's decisions go to a worker's
// loop, in turn, where that worker's Redis connections batch them with its own. The
// loop's time is passed on: Redis decides on its own clock, and the fallback of
// on_failure: local is the memory store the workers share, which runs on theirs.
class WorkerStoreAccess final : public rls::RlsStoreAccess {
 public:
  explicit WorkerStoreAccess(const std::vector<std::unique_ptr<Worker>>& workers)
      : workers_(workers) {}
  void Run(std::function<void(Store&, Timestamp)> work) override {
    const size_t i = next_.fetch_add(1, std::memory_order_relaxed) % workers_.size();
    workers_[i]->RunWithStore(std::move(work));
  }
  bool Decides(const Limit& limit) const override { return store::FitsRedisArithmetic(limit); }

 private:
  const std::vector<std::unique_ptr<Worker>>& workers_;
  std::atomic<size_t> next_{0};
};

// --- Admin ----------------------------------------------------------------------------

class AdminServer final : public http::RequestHandler {
 public:
  AdminServer(Server& server, int listen_fd, const http::ProtocolLimits& limits)
      : server_(server),
        loop_(clock_),
        ids_(std::random_device{}()),
        limits_(limits),
        acceptor_(listen_fd, [this](int fd, const sockaddr_storage& a) { OnAccept(fd, a); }) {
    loop_.Add(listen_fd, EPOLLIN, &acceptor_);
    loop_.AddTurnHook([this] {
      const int64_t now = ToNanos(loop_.now());
      timeouts_.header.Expire(now);
      timeouts_.idle.Expire(now);
      for (http::ServerConnection* c : closed_) delete c;
      closed_.clear();
    });
  }
  ~AdminServer() {
    for (auto* c : open_) delete c;
    for (auto* c : closed_) delete c;
    close(acceptor_.fd());
  }
  void Run() { loop_.Run(); }
  net::EventLoop& loop() { return loop_; }

  // Ready while not draining. A Redis node that is down does not make the instance
  // unready: its requests are decided by on_failure, and taking every instance out of
  // the load balancer would turn a Redis outage into a whole one. The body says which
  // nodes are up, for the operator and for probes that want to know.
  std::string ReadyBody() {
    std::string body = "{\"status\":\"ready\",\"store\":{\"backend\":";
    AppendJsonString(body, server_.registry().store_backend());
    const auto nodes = server_.registry().StoreNodes();
    if (!nodes.empty()) {
      body += ",\"nodes\":[";
      for (size_t i = 0; i < nodes.size(); ++i) {
        if (i > 0) body += ',';
        body += "{\"node\":";
        AppendJsonString(body, nodes[i].name);
        body += nodes[i].up ? ",\"up\":true}" : ",\"up\":false}";
      }
      body += ']';
    }
    body += "}}\n";
    return body;
  }

  void OnRequest(http::ServerConnection& c, const http::Request& r) override {
    const bool get = r.method == "GET" || r.method == "HEAD";
    if (r.path == "/metrics" && get) {
      c.Respond(200, "", "text/plain; version=0.0.4", server_.registry().Render());
    } else if (r.path == "/healthz" && get) {
      c.Respond(200, "", "application/json", "{\"status\":\"ok\"}\n");
    } else if (r.path == "/readyz" && get) {
      if (server_.draining()) {
        c.Respond(503, "", "application/json", "{\"status\":\"draining\"}\n");
      } else {
        c.Respond(200, "", "application/json", ReadyBody());
      }
    } else if (r.path == "/v1/reload" && r.method == "POST") {
      const std::string errors = server_.Reload();
      std::string body;
      if (errors.empty()) {
        body = "{\"reloaded\":true}\n";
      } else {
        body = "{\"reloaded\":false,\"errors\":[";
        size_t start = 0;
        bool first = true;
        while (start < errors.size()) {
          size_t end = errors.find('\n', start);
          if (end == std::string::npos) end = errors.size();
          if (!first) body += ',';
          AppendJsonString(body, std::string_view(errors).substr(start, end - start));
          first = false;
          start = end + 1;
        }
        body += "]}\n";
      }
      c.Respond(errors.empty() ? 200 : 400, "", "application/json", body);
    } else if (r.path == "/metrics" || r.path == "/healthz" || r.path == "/readyz" ||
               r.path == "/v1/reload") {
      c.Respond(405, "", "application/json", "{\"error\":\"method_not_allowed\"}\n");
    } else {
      c.Respond(404, "", "application/json", "{\"error\":\"not_found\"}\n");
    }
  }
  void OnClose(http::ServerConnection& c) override {
    open_.erase(std::find(open_.begin(), open_.end(), &c));
    closed_.push_back(&c);
  }
  void OnProtocolError(http::ServerConnection&, int) override {}

 private:
  void OnAccept(int fd, const sockaddr_storage& address) {
    const std::optional<net::IpAddress> peer =
        net::IpAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&address));
    if (!peer || open_.size() >= 256) {  // the admin port is for operators and scrapers
      close(fd);
      return;
    }
    auto* c = new http::ServerConnection(loop_, fd, *peer, *this, ids_, limits_, timeouts_);
    open_.push_back(c);
    c->Start();
  }

  Server& server_;
  SteadyClock clock_;
  net::EventLoop loop_;
  http::RequestIdSource ids_;
  http::ProtocolLimits limits_;
  http::ConnectionTimeouts timeouts_;
  Acceptor acceptor_;
  std::vector<http::ServerConnection*> open_;
  std::vector<http::ServerConnection*> closed_;
};

// --- Server ---------------------------------------------------------------------------

Server::Server(std::shared_ptr<const config::Config> config, std::string config_path)
    : config_path_(std::move(config_path)), startup_config_(std::move(config)) {}

Server::~Server() {
  for (auto& w : workers_) w->loop().Stop();
  if (admin_) admin_->loop().Stop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  if (admin_thread_.joinable()) admin_thread_.join();
  workers_.clear();
  admin_.reset();
}

// The signals the main thread waits for; every other thread blocks them.
sigset_t ControlSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}

void Server::BlockSignals() {
  const sigset_t set = ControlSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

std::shared_ptr<const gate::Policy> Server::policy() const {
  std::lock_guard lock(policy_mutex_);
  return policy_;
}

std::shared_ptr<const LogFile> Server::access_log() const {
  std::lock_guard lock(policy_mutex_);
  return access_log_;
}

LogFile::~LogFile() {
  if (fd_ > STDERR_FILENO) close(fd_);
}

std::shared_ptr<const LogFile> Server::OpenAccessLog(const config::AccessLogConfig& config,
                                                     std::shared_ptr<const LogFile> current,
                                                     std::string* error) {
  if (!config.enabled) return nullptr;
  const std::string& path = config.path;
  if (current != nullptr && current->path() == path) return current;  // keep the open file
  if (path == "stdout" || path == "-") return std::make_shared<LogFile>(STDOUT_FILENO, path);
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    *error = Errno(fmt::format("access_log.path {}", path));
    return nullptr;
  }
  return std::make_shared<LogFile>(fd, path);
}

void Server::Publish(std::shared_ptr<const config::Config> config) {
  std::shared_ptr<const gate::Policy> policy = gate::Policy::Compile(std::move(config), registry_);
  std::lock_guard lock(policy_mutex_);
  policy_ = std::move(policy);
  policy_version_.fetch_add(1, std::memory_order_release);
}

std::string Server::Start() {
  const config::Config& config = *startup_config_;
  if (!config.tls.cert_file.empty()) {
    std::string tls_error;
    tls_ = net::TlsServerContext::Load(config.tls.cert_file, config.tls.key_file, &tls_error);
    if (tls_ == nullptr) return tls_error;
  }
  std::shared_ptr<const rls::RateLimitConfig> rls_config;
  if (config.grpc_listen) {
    std::string errors;
    if (!LoadRlsConfig(config, &rls_config, &errors)) return errors;
  }

  std::string error;
  access_log_ = OpenAccessLog(config.access_log, nullptr, &error);
  if (!error.empty()) return error;

  store::MemoryStore::Options store_options;
  store_options.max_keys = config.store.max_keys;
  store_ = std::make_unique<store::MemoryStore>(store_options);
  registry_.SetStoreBackend(
      config.store.backend == config::StoreConfig::Backend::kRedis ? "redis" : "memory");
  registry_.reloads_succeeded.Add();
  Publish(startup_config_);

  unsigned worker_count = config.workers;
  if (worker_count == 0) worker_count = std::max(1u, std::thread::hardware_concurrency());

  net::Endpoint listen_at = config.listen;
  std::vector<int> fds;
  for (unsigned i = 0; i < worker_count; ++i) {
    const int fd = Listen(listen_at, true, &error);
    if (fd < 0) {
      for (int f : fds) close(f);
      return error;
    }
    if (i == 0) listen_at.port = BoundPort(fd);  // port 0: the others join the chosen one
    fds.push_back(fd);
  }
  net::Endpoint admin_at = config.admin_listen;
  const int admin_fd = Listen(admin_at, false, &error);
  if (admin_fd < 0) {
    for (int f : fds) close(f);
    return error;
  }
  admin_at.port = BoundPort(admin_fd);

  std::random_device random;
  for (unsigned i = 0; i < worker_count; ++i) {
    const uint64_t seed = (uint64_t{random()} << 32) ^ random();
    workers_.push_back(std::make_unique<Worker>(*this, *store_, fds[i], seed));
  }
  std::string grpc_at;
  if (config.grpc_listen) {
    if (config.store.backend == config::StoreConfig::Backend::kRedis) {
      // Each worker's Redis store, on its loop: the calls are spread over the workers.
      rls_access_ = std::make_unique<WorkerStoreAccess>(workers_);
    } else {
      rls_store_ = std::make_unique<store::MemoryStore>(store_options);
      rls_access_ = std::make_unique<rls::InlineStoreAccess>(*rls_store_, rls_clock_);
    }
    // protobuf logs every string field that is not UTF-8 when a message is parsed: a
    // client could fill the log with that. The call is refused with INTERNAL instead.
    google::protobuf::SetLogHandler(nullptr);
    rls_decider_ = std::make_unique<rls::RlsDecider>(*rls_access_, rls_clock_, &registry_);
    rls_decider_->SetConfig(std::move(rls_config));
    net::Endpoint bound = *config.grpc_listen;
    if (GrpcServerOf(config) == config::Config::GrpcServer::kNative) {
      // Each worker's own listener and loop, like `listen`'s; with Redis, a call is
      // decided by the Redis store of the worker that took it.
      rls::RlsStoreAccess* shared = config.store.backend == config::StoreConfig::Backend::kRedis
                                        ? nullptr
                                        : rls_access_.get();
      for (auto& worker : workers_) {
        const int fd = Listen(bound, true, &error);
        if (fd < 0) {
          close(admin_fd);
          return fmt::format("grpc_listen {}", error);  // the workers close what they have
        }
        if (bound.port == 0) bound.port = BoundPort(fd);
        worker->ServeGrpc(fd, *rls_decider_, shared);
      }
    } else {
      // One completion queue and poller per worker: the gRPC service scales with the
      // cores the HTTP side is given.
      rls_server_ = std::make_unique<rls::RlsServer>(*rls_decider_, static_cast<int>(worker_count));
      if (std::string rls_error = rls_server_->Start(*config.grpc_listen); !rls_error.empty()) {
        close(admin_fd);
        return rls_error;  // the workers close their listeners when destroyed
      }
      bound.port = rls_server_->port();
    }
    grpc_at = fmt::format("grpc on {}, ", bound.ToString());
  }
  admin_ = std::make_unique<AdminServer>(*this, admin_fd, LimitsOf(config));
  for (auto& w : workers_) threads_.emplace_back([worker = w.get()] { worker->Run(); });
  admin_thread_ = std::thread([this] { admin_->Run(); });

  // Tests and scripts read this line to learn the ports chosen for port 0.
  fmt::print(stderr, "sluice: listening on {} ({} workers), admin on {}, {}config {}\n",
             listen_at.ToString(), worker_count, admin_at.ToString(), grpc_at, config.source);
  return "";
}

std::string Server::Reload() {
  std::lock_guard lock(reload_mutex_);
  config::LoadResult loaded =
      config_path_.empty()
          ? config::LoadConfigText(config::EmbeddedQuickstart(), config::kEmbeddedQuickstartName)
          : config::LoadConfigFile(config_path_);
  if (!loaded.errors.empty()) {
    registry_.reloads_failed.Add();
    std::string errors;
    for (const config::ConfigError& e : loaded.errors) errors += e.ToString() + "\n";
    errors.pop_back();
    fmt::print(stderr, "sluice: reload refused, the running config stays:\n{}\n", errors);
    return errors;
  }
  const config::Config& old_config = policy()->config();
  const config::Config& next = *loaded.config;
  if (next.listen.ToString() != old_config.listen.ToString() ||
      next.admin_listen.ToString() != old_config.admin_listen.ToString() ||
      next.workers != old_config.workers || next.store.max_keys != old_config.store.max_keys ||
      next.store.backend != old_config.store.backend ||
      next.grpc_listen.has_value() != old_config.grpc_listen.has_value() ||
      (next.grpc_listen && next.grpc_listen->ToString() != old_config.grpc_listen->ToString()) ||
      next.grpc_server != old_config.grpc_server) {
    fmt::print(stderr,
               "sluice: reload: listen, admin_listen, grpc_listen, grpc_server, workers and store "
               "settings take effect on restart; the rest applies now\n");
  }
  std::shared_ptr<const rls::RateLimitConfig> rls_config;
  if (rls_decider_ != nullptr) {
    std::string errors;
    if (!LoadRlsConfig(next, &rls_config, &errors)) {
      registry_.reloads_failed.Add();
      fmt::print(stderr, "sluice: reload refused, the running config stays:\n{}\n", errors);
      return errors;
    }
  }
  std::string error;
  std::shared_ptr<const LogFile> log = OpenAccessLog(next.access_log, access_log(), &error);
  if (!error.empty()) {
    registry_.reloads_failed.Add();
    fmt::print(stderr, "sluice: reload refused, the running config stays:\n{}\n", error);
    return error;
  }
  {
    std::lock_guard lock(policy_mutex_);
    access_log_ = std::move(log);  // workers switch when they see the new policy version
  }
  Publish(loaded.config);
  if (rls_decider_ != nullptr) rls_decider_->SetConfig(std::move(rls_config));
  registry_.reloads_succeeded.Add();
  fmt::print(stderr, "sluice: reloaded {} ({} rules)\n", next.source, next.rules.size());
  return "";
}

int Server::Run() {
  const sigset_t set = ControlSignals();
  while (true) {
    int signal_number = 0;
    if (sigwait(&set, &signal_number) != 0) continue;
    if (signal_number == SIGHUP) {
      Reload();
      continue;
    }
    break;
  }
  fmt::print(stderr, "sluice: shutting down: finishing requests in flight\n");
  // The gRPC service first: its calls in flight may wait on the workers' Redis stores.
  if (rls_server_ != nullptr) rls_server_->Stop();
  draining_.store(true, std::memory_order_relaxed);
  for (auto& w : workers_) w->BeginDrain();
  for (auto& t : threads_) t.join();
  threads_.clear();
  admin_->loop().Stop();
  admin_thread_.join();
  fmt::print(stderr, "sluice: stopped\n");
  return 0;
}

}  // namespace sluice::server
