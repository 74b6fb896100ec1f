// Envoy's rate limit service on sluice's own HTTP/2 (rls::GrpcConnection): any bytes
// from a client, in chunks, with a drain in between, on a real socket.
//
// GrpcConnectionOneInput's input:
//   byte 0   flags: bit 0 the input follows a valid client preface and SETTINGS (so
//            most inputs reach the frame layer); bit 1 Drain after the first chunk;
//            bit 2 the client closes before the last chunk is read; bits 4-7 the
//            chunk size (kChunkSizes)
//   then     the bytes the client sends
// The connection's own calls run as the event loop would make them (OnIoEvent for
// input, FinishDeferredSend for the turn's output). Invariants: no crash or undefined
// behaviour; the owner hears the connection is done exactly once, and only once it is
// closed; whatever the client sends, a client that then closes its end ends the
// connection.
#include <google/protobuf/stubs/logging.h>
#include <nghttp2/nghttp2.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <span>
#include <string>

#include "envoy/service/ratelimit/v3/rls.pb.h"
#include "fuzz/fuzz_targets.h"
#include "fuzz/fuzz_util.h"
#include "net/event_loop.h"
#include "rls/grpc_connection.h"
#include "rls/ratelimit_config.h"
#include "rls/rls_service.h"
#include "store/memory_store.h"

namespace sluice::fuzz {
namespace {

using rls::InlineStoreAccess;
using rls::LoadResult;
using rls::RateLimitConfig;
using rls::RlsDecider;
using rls::Source;

constexpr size_t kChunkSizes[16] = {1,   3,   7,    9,    16,   24,   64,    100,
                                    256, 512, 1024, 2048, 4096, 8192, 16384, 65536};

constexpr std::string_view kLimits = R"(domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: path
    value: "/api/*"
    rate_limit: {name: api, unit: hour, requests_per_unit: 5, algorithm: token_bucket}
  - key: client
    detailed_metric: true
    rate_limit: {unit: second, requests_per_unit: 10}
)";

// What every input shares: the limits, a store and a decider (an input's counts stay
// for the next, as a long-running server's would).
struct Service {
  ManualClock clock{FromNanos(1'700'000'000'000'000'000)};
  store::MemoryStore store{store::MemoryStore::Options{}};
  InlineStoreAccess access{store, clock};
  RlsDecider decider{access, clock};
  Service() {
    google::protobuf::SetLogHandler(nullptr);  // a bad string field is logged otherwise
    const Source source{kLimits, "edge.yaml"};
    LoadResult loaded = RateLimitConfig::Load(std::span<const Source>(&source, 1));
    Require(loaded.errors.empty(), "the fuzz target's limits load");
    decider.SetConfig(loaded.config);
  }
};

struct Owner final : rls::GrpcConnectionOwner {
  int done = 0;
  rls::GrpcConnection* connection = nullptr;
  void OnGrpcConnectionDone(rls::GrpcConnection& c) override {
    Require(&c == connection, "the owner hears of its own connection");
    Require(c.closed(), "a connection is done only once closed");
    ++done;
  }
};

// A valid client's first bytes: the preface and an empty SETTINGS frame.
std::string ClientPreface() {
  std::string preface(NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
  preface.append("\x00\x00\x00\x04\x00\x00\x00\x00\x00", 9);
  return preface;
}

void DrainPeer(int fd) {
  char sink[65536];
  while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0) {
  }
}

}  // namespace

int GrpcConnectionOneInput(const uint8_t* data, size_t size) {
  static Service* service = new Service;
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  std::string payload = (flags & 1) ? ClientPreface() : std::string();
  payload.append(reinterpret_cast<const char*>(data + 1), size - 1);
  const size_t chunk = kChunkSizes[flags >> 4];

  int fds[2];
  Require(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0,
          "socketpair");
  // A loop per input: the connection registers with it, and what it asks of the loop
  // (a flush at the turn's end) is done here by hand.
  auto loop = std::make_unique<net::EventLoop>(service->clock);
  Owner owner;
  auto* connection =
      new rls::GrpcConnection(*loop, fds[0], service->decider, service->access, owner);
  owner.connection = connection;
  connection->Start();
  connection->FinishDeferredSend();

  size_t sent = 0;
  bool peer_open = true;
  for (int step = 0; sent < payload.size() && !connection->closed(); ++step) {
    const bool last = sent + chunk >= payload.size();
    if (last && (flags & 4)) {
      close(fds[1]);
      peer_open = false;
      connection->OnIoEvent(EPOLLIN);
      break;
    }
    const ssize_t n =
        send(fds[1], payload.data() + sent, std::min(chunk, payload.size() - sent), MSG_NOSIGNAL);
    if (n > 0) sent += static_cast<size_t>(n);
    connection->OnIoEvent(n > 0 ? EPOLLIN : EPOLLOUT);
    if (!connection->closed()) connection->FinishDeferredSend();
    if (step == 0 && (flags & 2)) {
      connection->Drain();
      connection->FinishDeferredSend();
    }
    service->clock.Advance(std::chrono::milliseconds(step % 3));
    DrainPeer(fds[1]);
  }
  // The client goes away: whatever state the session is in, the connection ends.
  if (peer_open) close(fds[1]);
  if (!connection->closed()) connection->OnIoEvent(EPOLLIN | EPOLLRDHUP);
  Require(connection->closed(), "a connection whose client closed is closed");
  Require(owner.done == 1, "the owner hears the connection is done exactly once");
  delete connection;
  return 0;
}

std::string GrpcSessionSeed(uint64_t seed) {
  // A client session's real bytes: the preface, SETTINGS and a few ShouldRateLimit
  // calls (some with a grpc-timeout or another path), encoded by nghttp2's client.
  nghttp2_session_callbacks* callbacks;
  nghttp2_session_callbacks_new(&callbacks);
  nghttp2_session* client;
  nghttp2_session_client_new(&client, callbacks, nullptr);
  nghttp2_session_callbacks_del(callbacks);
  nghttp2_submit_settings(client, NGHTTP2_FLAG_NONE, nullptr, 0);
  uint64_t x = seed;
  auto next = [&x] {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return x >> 33;
  };
  struct Body {
    std::string bytes;
    size_t read = 0;
  };
  std::vector<std::unique_ptr<Body>> bodies;
  const int calls = 1 + static_cast<int>(next() % 4);
  for (int i = 0; i < calls; ++i) {
    envoy::service::ratelimit::v3::RateLimitRequest request;
    request.set_domain(next() % 8 == 0 ? "other" : "edge");
    const int descriptors = static_cast<int>(next() % 3);
    for (int d = 0; d < descriptors; ++d) {
      auto* entry = request.add_descriptors()->add_entries();
      static const char* const kKeys[] = {"remote_address", "path", "client", "none"};
      entry->set_key(kKeys[next() % 4]);
      entry->set_value(next() % 2 ? "/api/v1" : "10.0.0." + std::to_string(next() % 4));
    }
    if (next() % 4 == 0) request.set_hits_addend(next() % 5);
    const std::string message = request.SerializeAsString();
    auto body = std::make_unique<Body>();
    body->bytes.push_back(next() % 16 == 0 ? 1 : 0);
    for (int shift = 24; shift >= 0; shift -= 8) {
      body->bytes.push_back(static_cast<char>((message.size() >> shift) & 0xff));
    }
    body->bytes += message;
    std::vector<nghttp2_nv> headers;
    auto add = [&headers](const char* name, const char* value) {
      headers.push_back(nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name)),
                                   reinterpret_cast<uint8_t*>(const_cast<char*>(value)),
                                   strlen(name), strlen(value), NGHTTP2_NV_FLAG_NONE});
    };
    add(":method", "POST");
    add(":scheme", "http");
    add(":authority", "sluice");
    add(":path", next() % 8 == 0 ? "/other.Service/Call"
                                 : "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit");
    add("content-type", next() % 8 == 0 ? "text/plain" : "application/grpc");
    add("te", "trailers");
    if (next() % 3 == 0) add("grpc-timeout", "20m");
    if (next() % 8 == 0) add("grpc-encoding", "gzip");
    nghttp2_data_provider provider;
    provider.source.ptr = body.get();
    provider.read_callback = [](nghttp2_session*, int32_t, uint8_t* buffer, size_t length,
                                uint32_t* flags, nghttp2_data_source* source, void*) -> ssize_t {
      auto* b = static_cast<Body*>(source->ptr);
      const size_t n = std::min(length, b->bytes.size() - b->read);
      memcpy(buffer, b->bytes.data() + b->read, n);
      b->read += n;
      if (b->read == b->bytes.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
      return static_cast<ssize_t>(n);
    };
    nghttp2_submit_request(client, nullptr, headers.data(), headers.size(), &provider, nullptr);
    bodies.push_back(std::move(body));
  }
  std::string out;
  const uint8_t* bytes;
  for (ssize_t n; (n = nghttp2_session_mem_send(client, &bytes)) > 0;) {
    out.append(reinterpret_cast<const char*>(bytes), static_cast<size_t>(n));
  }
  nghttp2_session_del(client);
  return out;
}

}  // namespace sluice::fuzz
