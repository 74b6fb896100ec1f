// Fuzz targets. Each is an LLVMFuzzerTestOneInput-shaped function: libFuzzer drives
// them in `make fuzz` (clang), and tests/fuzz/replay_main.cc drives them with a fixed
// stream of pseudo-random inputs under ASan/UBSan in every `make test`.
//
// kTargets names them all; scripts/fuzz.sh builds one libFuzzer binary per name, and
// the replay also runs every file of tests/fuzz/crashes/<name>-* through its target.
#ifndef SLUICE_TESTS_FUZZ_FUZZ_TARGETS_H_
#define SLUICE_TESTS_FUZZ_FUZZ_TARGETS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sluice::fuzz {

// Any algorithm, any policy in the documented domain, any starting state bytes (as a
// reload or a bug could leave them), any sequence of times and costs: no crash, no
// undefined behaviour, and every Decision keeps its invariants.
int AlgorithmsOneInput(const uint8_t* data, size_t size);

// Any text: ParseDuration and ParseCount never misbehave, and what ParseDuration
// accepts, FormatDuration writes back to something that parses to the same value.
int DurationOneInput(const uint8_t* data, size_t size);

// A real http::ServerConnection on one end of a socketpair, fed the input's bytes in
// chunks with loop turns, clock jumps, held and pipelined requests in between (the
// layout is described in http_fuzz_targets.cc). Everything written back is
// well-formed HTTP/1.1, in request order, one answer per request plus at most one
// protocol error, with the body and Content-Length the handler asked for.
int HttpConnectionOneInput(const uint8_t* data, size_t size);

// Any request path: http::CanonicalPath is idempotent, keeps a leading '/', and leaves
// no empty, "." or ".." segment.
int CanonicalPathOneInput(const uint8_t* data, size_t size);

// Any text as a configuration file: LoadConfigText yields a Config or at least one
// error, each with a line and column >= 0 and a message.
int ConfigOneInput(const uint8_t* data, size_t size);

// Each line as an address, a CIDR block and an endpoint (what parses formats back to
// the same value), and the lines as a peer and X-Forwarded-For headers for
// gate::ResolveClientIp (an untrusted peer is the client; an untrusted hop added to
// the right is the client; nothing is believed left of the first untrusted hop).
int AddressOneInput(const uint8_t* data, size_t size);

// Any bytes as a request or response head (byte 0 says which, and the size limit): when
// http::ParseSimpleHead takes a head, libhttp-parser reads the same bytes as the same
// head (a differential test of the fast path against the slow one), and no shorter
// prefix is taken; when it does not, it leaves no header fields behind.
int HeadParserOneInput(const uint8_t* data, size_t size);

// Any bytes as a POST /v1/check body: api::CheckRequestParser accepts it or says why,
// what it accepts keeps its invariants (non-empty rule and key, or descriptors that
// parse as key parts, once each, with a valid ip; cost <= kMaxQuantity; one query
// unless a batch), a reused parser reads it as a fresh one does, and the request
// DecisionRequestBuilder::FromDescriptors builds carries each descriptor where the gate
// reads it.
int CheckRequestOneInput(const uint8_t* data, size_t size);

// Any bytes from a client of Envoy's rate limit service on sluice's own HTTP/2
// (rls::GrpcConnection, on one end of a socketpair), in chunks, with a drain between
// (the layout is described in grpc_fuzz_targets.cc): no crash or undefined behaviour,
// and the connection ends, its owner told once, when the client goes away.
int GrpcConnectionOneInput(const uint8_t* data, size_t size);
// A valid client session's bytes (preface, SETTINGS, some ShouldRateLimit calls, a
// few of them odd) for GrpcConnectionOneInput's generator, from `seed`.
std::string GrpcSessionSeed(uint64_t seed);

struct Target {
  std::string_view name;
  int (*run)(const uint8_t* data, size_t size);
};

inline constexpr Target kTargets[] = {
    {"AlgorithmsOneInput", &AlgorithmsOneInput},
    {"DurationOneInput", &DurationOneInput},
    {"HttpConnectionOneInput", &HttpConnectionOneInput},
    {"CanonicalPathOneInput", &CanonicalPathOneInput},
    {"ConfigOneInput", &ConfigOneInput},
    {"AddressOneInput", &AddressOneInput},
    {"HeadParserOneInput", &HeadParserOneInput},
    {"CheckRequestOneInput", &CheckRequestOneInput},
    {"GrpcConnectionOneInput", &GrpcConnectionOneInput},
};

}  // namespace sluice::fuzz

#endif  // SLUICE_TESTS_FUZZ_FUZZ_TARGETS_H_
