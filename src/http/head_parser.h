// A fast path in front of libhttp-parser for the message heads nearly all traffic
// sends: a complete HTTP/1.0 or 1.1 head, in one buffer, framed by Content-Length or with
// no body, and strictly well-formed. Both connections (ServerConnection for requests,
// UpstreamConnection for responses) try it on each new message and hand everything else
// to libhttp-parser from the message's first byte, as before: a head still arriving,
// Transfer-Encoding, Upgrade, a method or status this path does not know, obs-fold, a
// bare LF, obs-text, white space at a value's end, a head over the size limit, and any
// malformed input. So this path only has to agree with libhttp-parser on the heads it
// accepts, and it refuses nothing itself: errors (400, 431, ...) keep coming from the
// slow path with the same status and wording as before.
//
// Why: the gateway's profile put libhttp-parser at a quarter of sluice's own CPU per
// proxied request (two heads, request and response, byte by byte through a state
// machine with a callback per piece). This path reads a head in one pass with table
// lookups; bench/head_parser_bench.cc measures both, and the differential fuzz target
// HeadParserOneInput checks that they agree (docs/architecture.md, "HTTP parsing").
//
// Thread-safety: pure functions.
#ifndef SLUICE_HTTP_HEAD_PARSER_H_
#define SLUICE_HTTP_HEAD_PARSER_H_

#include <cstddef>
#include <cstdint>
#include <optional>

#include "http/header_spans.h"

namespace sluice::http {

enum class MessageKind { kRequest, kResponse };

// What a simple head says, beyond its header fields.
struct SimpleHead {
  size_t length = 0;      // bytes of the head, the blank line included
  int version_minor = 1;  // HTTP/1.<minor>
  // Requests.
  int method = 0;  // an http_method (libhttp-parser's numbering)
  Span target;     // origin-form: starts with '/'
  // Responses.
  int status = 0;
  Span reason;
  // The body's framing: no Transfer-Encoding, so a Content-Length or no body (requests;
  // a response without Content-Length is left to the slow path).
  std::optional<uint64_t> content_length;
  bool connection_close = false;       // `Connection: close`
  bool connection_keep_alive = false;  // `Connection: keep-alive`
};

// One line of a head's header section, as ScanHeaderLine reads it.
struct HeaderLine {
  enum class Kind { kField, kEnd, kOther } kind = Kind::kOther;
  Span name;
  Span value;       // without the white space around it
  size_t next = 0;  // offset of the next line
};

// Reads the start line at base[begin, end). Returns the offset of the first header line,
// or 0 when the line is not one this path takes (or is incomplete).
size_t ScanStartLine(MessageKind kind, const char* base, size_t begin, size_t end,
                     SimpleHead& head);

// Reads the header line (or the blank line) at base[begin, end).
HeaderLine ScanHeaderLine(const char* base, size_t begin, size_t end);

// Whether a field name starting with `first` may be one that frames the message: only
// those go to NoteFramingField.
inline bool MayFrame(char first) {
  first = static_cast<char>(first | 0x20);  // lower case, for letters
  return first == 'c' || first == 't' || first == 'u' || first == 'p';
}

// Applies a field to `head` if it is one that frames the message (Content-Length,
// Connection). False when the field asks for the slow path (Transfer-Encoding, Upgrade,
// Proxy-Connection, an odd or repeated Content-Length or Connection).
bool NoteFramingField(const char* base, const HeaderLine& line, SimpleHead& head,
                      bool& seen_connection);

// True when base[begin, end) starts with a complete simple head of `kind`, of at most
// `max_length` bytes and at most N fields: `head` and `spans` then describe it (offsets
// into base). False otherwise, with `spans` cleared, so the slow path can start.
template <size_t N>
bool ParseSimpleHead(MessageKind kind, const char* base, size_t begin, size_t end,
                     size_t max_length, HeaderSpans<N>& spans, SimpleHead& head) {
  if (end - begin > max_length) end = begin + max_length;
  head = {};
  spans.Clear();
  size_t at = ScanStartLine(kind, base, begin, end, head);
  if (at == 0) return false;
  bool seen_connection = false;
  for (;;) {
    const HeaderLine line = ScanHeaderLine(base, at, end);
    if (line.kind == HeaderLine::Kind::kEnd) {
      // A response without Content-Length (read to the close) is the slow path's.
      if (kind == MessageKind::kResponse && !head.content_length) break;
      head.length = line.next - begin;
      return true;
    }
    if (line.kind != HeaderLine::Kind::kField ||
        (MayFrame(base[line.name.offset]) &&
         !NoteFramingField(base, line, head, seen_connection)) ||
        !spans.AddName(line.name.offset, line.name.length)) {
      break;
    }
    spans.AddValue(line.value.offset, line.value.length);
    at = line.next;
  }
  spans.Clear();
  return false;
}

}  // namespace sluice::http

#endif  // SLUICE_HTTP_HEAD_PARSER_H_
