// The header work of the gateway proxy, as pure functions: the framing checks that
// refuse a client request which could smuggle a second request past sluice, the head
// sent upstream for a client request, and the head sent back to the client for an
// upstream's response.
//
// Both heads are appended to a buffer the caller owns and reuses across requests;
// once it has grown to the largest head, building one allocates nothing. Everything
// else is read in place from the views the parsers hand over.
//
// What is removed, in both directions (RFC 9110 7.6.1, and what nginx's proxy module
// removes): `Connection` and every field its tokens name (all Connection fields,
// tokens compared without case), `Keep-Alive`, `Proxy-Connection`,
// `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`, `Transfer-Encoding`,
// `Upgrade`, and `Content-Length`: the framing fields are written by sluice from the
// caller's `BodyFraming`, since the caller re-frames the body (the server's parser
// de-chunks it). A field sluice writes itself cannot be removed through a Connection
// token, since those are written after the client's fields are filtered.
//
// Upgrade is not supported: the `Upgrade` field (and the `upgrade` Connection token)
// is dropped and the request goes upstream as a plain request, which the upstream
// answers as such (RFC 9110 7.8 lets a server ignore Upgrade; nginx does the same
// unless told to pass it). libhttp-parser stops at the end of an Upgrade request's
// head, so the caller closes the client connection after that response (the server
// connection answers 400 to anything that follows such a head). CONNECT is not
// proxied: the caller refuses it before it gets here.
//
// Field order is kept. The fields sluice writes follow the client's (or upstream's)
// remaining fields, in a fixed order, so a Via or X-Forwarded-For that sluice adds
// comes after any the sender had, as a list element appended to theirs.
//
// Thread-safety: pure functions over their arguments.
#ifndef SLUICE_HTTP_PROXY_HEADERS_H_
#define SLUICE_HTTP_PROXY_HEADERS_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "http/server_connection.h"
#include "net/address.h"

namespace sluice::http {

// How a message body is delimited on the wire (RFC 9112 6.3).
enum class BodyKind : uint8_t {
  // No framing field. A request without a body; a response that has none (1xx, 204)
  // or whose length is unknown and that has none (HEAD, 304 without Content-Length).
  kNone,
  // `Content-Length: <length>`. For HEAD and 304 responses, pass the upstream's
  // Content-Length here too: it describes the representation, and the client knows
  // no body follows.
  kContentLength,
  // `Transfer-Encoding: chunked`; the caller writes the chunks.
  kChunked,
  // Responses only: no framing field, the body ends when the connection closes (for
  // HTTP/1.0 clients when the length is not known in advance). Implies
  // `Connection: close`.
  kUntilClose,
};

struct BodyFraming {
  BodyKind kind = BodyKind::kNone;
  uint64_t length = 0;  // kContentLength only
};

// Why a request is refused before it is forwarded. A request with several faults is
// refused for the first found: the fields' syntax in field order, then the framing
// rules in the order listed.
enum class RequestRefusal : uint8_t {
  kNone,
  // A field name with white space in it or around it ("Content-Length : 5",
  // " Transfer-Encoding: chunked" as the first line), or another character outside
  // the token set. An upstream that trims the name would read a framing field that
  // sluice did not see (RFC 9112 5.1, 2.2).
  kInvalidFieldName,
  // More than kMaxConnectionOptions tokens over the Connection fields. No client needs
  // more than a few ("keep-alive, Upgrade, HTTP2-Settings"), and a head full of them
  // would make removing the named fields cost time in proportion to fields x tokens.
  kTooManyConnectionOptions,
  // A line break inside a field value: obs-fold ("X-A: one\r\n two"), which
  // libhttp-parser accepts and hands over inside the value view. Forwarding it would
  // let an upstream that unfolds differently see another field (RFC 9112 5.2).
  kInvalidFieldValue,
  // Both Content-Length and Transfer-Encoding (RFC 9112 6.3 rule 3).
  kContentLengthAndTransferEncoding,
  // Transfer-Encoding in an HTTP/1.0 request: the framing is faulty (RFC 9112 6.1).
  kTransferEncodingInHttp10,
  // Several Content-Length fields, even with identical values (see the definition).
  kRepeatedContentLength,
  // A Content-Length that is not a plain decimal ("+5", "0x5", "5, 5", "") or that
  // overflows 64 bits.
  kInvalidContentLength,
  // A Transfer-Encoding whose final coding is not exactly `chunked` ("chunked,
  // identity", "xchunked", "chunked;x=1"), that names chunked twice (in one field or
  // over several), or that has an empty or malformed element (RFC 9112 6.3 rule 4,
  // 6.1).
  kInvalidTransferEncoding,
  // A well-formed Transfer-Encoding ending in chunked with other codings before it
  // ("gzip, chunked"): sluice does not decode transfer codings, and forwarding the
  // de-chunked body without them would change it. Answered 501 (RFC 9112 6.1).
  kUnsupportedTransferCoding,
};

// The most Connection options (tokens, over all Connection fields) a request may list.
inline constexpr size_t kMaxConnectionOptions = 16;

// The status a refused request is answered with: 501 for kUnsupportedTransferCoding,
// 400 for the others.
int RefusalStatus(RequestRefusal refusal);
// A short snake_case name for logs and metric labels ("repeated_content_length").
std::string_view RefusalName(RequestRefusal refusal);

struct RequestFraming {
  RequestRefusal refusal = RequestRefusal::kNone;
  // How the client's body is framed, when refusal is kNone: kContentLength with the
  // parsed length, kChunked, or kNone (no body: RFC 9112 6.3 rule 7).
  BodyFraming body;
  bool ok() const { return refusal == RequestRefusal::kNone; }
};

// The request smuggling checks, run on a client request before anything of it is
// forwarded. What libhttp-parser 2.9.4 (run by the server connection) does with the
// same shapes, as tests/http/proxy_headers_test.cc pins down:
// - Refused before the head is dispatched: Content-Length with Transfer-Encoding, any
//   repeated Content-Length, a Content-Length that is not a plain decimal (and, by a
//   quirk, any field whose name starts with "Transfer-Encoding" next to a
//   Content-Length); the connection itself refuses white space before the colon.
// - Refused only after the head is dispatched, since the parser checks it after
//   on_headers_complete, where the connection pauses to hand the head over: a
//   Transfer-Encoding that does not end in chunked ("chunked, identity", "xchunked",
//   "chunked, chunked"). Without this check the proxy would have sent the head on.
// - Let through: chunked in two fields ("chunked" twice, or "identity" then
//   "chunked"), "gzip, chunked", Transfer-Encoding in HTTP/1.0 (de-chunked), white
//   space before or inside a field name when it is not before the colon (" X: 1" as
//   the first line, "X A: 1"), and obs-fold, whose CRLF stays inside the value view.
// Invalid chunk sizes are not seen here: the server connection's parser refuses them
// while it reads the body (HPE_INVALID_CHUNK_SIZE, then 400), which may be after the
// head went upstream; the proxy then abandons the upstream request and does not reuse
// that connection. Since the proxy re-frames the body, a bad chunk never reaches an
// upstream as framing.
//
// Repeated Content-Length with identical values is refused too. RFC 9110 8.6 allows
// either refusing it or merging it into one; libhttp-parser and llhttp both refuse
// it, as does nginx, so such a request never reaches the proxy today, and refusing
// it here keeps one rule whatever parser is in front.
[[nodiscard]] RequestFraming CheckRequestFraming(const Request& request);

struct UpstreamRequestOptions {
  // Peers whose X-Forwarded-For (and Forwarded) are kept and extended; null or empty:
  // none. The same list that gate's ResolveClientIp trusts (`clients.trusted_proxies`).
  const net::CidrList* trusted_proxies = nullptr;
  bool https = false;  // the listener's scheme, for X-Forwarded-Proto
  bool via = false;    // add `Via: 1.<client minor> sluice`
  // The chosen server's address ("10.0.0.7:8080"): the Host sent when rewrite_host
  // is set, or when the client gave no host at all (HTTP/1.0 without Host).
  std::string_view upstream_authority;
  bool rewrite_host = false;
  // Complete lines ("Name: value\r\n") appended after sluice's own fields, e.g.
  // "Connection: close\r\n" for a connection the pool is about to retire.
  std::string_view extra_lines;
};

// Appends the head sent upstream for `request`:
//
//   <method> <target as received> HTTP/1.1
//   <the client's fields in order, less hop-by-hop ones, Content-Length,
//    Transfer-Encoding, Expect, X-Forwarded-For/-Proto/-Host, X-Request-Id, and
//    Forwarded from an untrusted peer; Host in its place>
//   Host                  only if the client sent none
//   Content-Length: N     or Transfer-Encoding: chunked, from `body`
//   X-Forwarded-For       <the trusted peer's list, >the peer's address
//   X-Forwarded-Proto     http | https
//   X-Forwarded-Host      the host the client asked for
//   X-Request-Id          request.request_id
//   Via                   when options.via
//   <options.extra_lines>
//
// Host: as the client sent it, or options.upstream_authority when rewrite_host. For
// an absolute-form target ("GET http://a.example/x") it is the target's authority,
// which RFC 9112 3.2.2 makes the request's host and which the rules matched on.
//
// X-Forwarded-For follows nginx's $proxy_add_x_forwarded_for when the socket peer is
// a trusted proxy: its X-Forwarded-For fields (several joined with ", ") with the
// peer's address appended. From any other peer the client's X-Forwarded-For and
// Forwarded are dropped and X-Forwarded-For is the peer's address alone, so a client
// cannot plant addresses an upstream might believe. IPv6 addresses are written
// without brackets, IPv4-mapped ones as dotted quads (net::IpAddress::Format).
// X-Forwarded-Proto and X-Forwarded-Host are always sluice's, never the client's.
//
// Expect is dropped, as nginx drops it: the server connection answers `100-continue`
// itself, so the upstream's own 100 would only be a second one for the proxy to
// discard; without Expect the upstream just reads the body.
//
// `body` is how sluice frames the body it sends: usually CheckRequestFraming's `body`
// (a Content-Length body keeps its length, a chunked one is sent chunked again);
// kChunked for a body of unknown length; kContentLength after buffering a small
// chunked body, for an upstream that takes no chunked requests.
//
// REQUIRES: CheckRequestFraming(request).ok(); request.peer != nullptr;
// body.kind != kUntilClose.
void AppendUpstreamRequestHead(const Request& request, const BodyFraming& body,
                               const UpstreamRequestOptions& options, std::string& out);

// An upstream's response head, as the caller's libhttp-parser hands it over.
struct UpstreamResponse {
  int status = 200;         // REQUIRES: 100 to 999 (anything else is the caller's 502)
  std::string_view reason;  // may be empty
  int version_minor = 1;    // HTTP/1.<minor> of the upstream's status line, for Via
  std::span<const Header> headers;
};

struct ClientResponseOptions {
  int client_version_minor = 1;  // HTTP/1.<minor> of the client's request
  // The client connection closes after this response (`Connection: close`). An
  // HTTP/1.0 client kept open gets `Connection: keep-alive`.
  bool close = false;
  bool via = false;  // add `Via: 1.<upstream minor> sluice`
  // The X-Request-Id the client gets (the request's, as every sluice response
  // carries); it replaces the upstream's. Empty: the upstream's field stays.
  std::string_view request_id;
  // A complete "Date: ...\r\n" line, written when the upstream sent no Date (RFC 9110
  // 6.6.1: a recipient with a clock adds one). Empty: none added.
  std::string_view date_line;
  // Complete lines ("Name: value\r\n") appended after sluice's own fields: the
  // RateLimit fields, for instance. The caller avoids names the upstream may send.
  std::string_view extra_lines;
};

// Appends the head sent to the client for an upstream response:
//
//   HTTP/1.1 <status> <reason>
//   <the upstream's fields in order, less hop-by-hop ones, Content-Length and
//    Transfer-Encoding (and X-Request-Id when options.request_id is set)>
//   Content-Length: N     or Transfer-Encoding: chunked, from `body`
//   Date                  options.date_line, if the upstream sent no Date
//   X-Request-Id          options.request_id
//   Connection            close, or keep-alive for an HTTP/1.0 client kept open
//   Via                   when options.via
//   <options.extra_lines>
//
// `body` is the framing towards the client: kContentLength passes the upstream's
// length on; kChunked for an upstream body that was chunked or close-delimited when
// the client speaks HTTP/1.1; kUntilClose for such a body when the client speaks
// HTTP/1.0 (chunked is HTTP/1.1 only).
//
// The upstream's fields are cleaned on the way, as RFC 9112 asks of a proxy: white
// space between a name and its colon is removed (5.1), a field whose name has white
// space elsewhere or another non-token character is dropped (2.2), and an obs-fold in
// a value is replaced by spaces (5.2).
//
// REQUIRES: body.kind != kChunked when options.client_version_minor == 0.
void AppendClientResponseHead(const UpstreamResponse& response, const BodyFraming& body,
                              const ClientResponseOptions& options, std::string& out);

}  // namespace sluice::http

#endif  // SLUICE_HTTP_PROXY_HEADERS_H_
