#include "http/head_parser.h"

#include <http_parser.h>

#include <array>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <cstring>
#include <string_view>

#include "http/ascii.h"

namespace sluice::http {
namespace {

enum CharClass : uint8_t {
  kToken = 1,   // RFC 9110 tchar: a header name's characters
  kValue = 2,   // VCHAR, SP, HTAB: a field value's (obs-text is left to the slow path)
  kTarget = 4,  // RFC 3986 pchar, "/" and "?": an origin-form target's
  kReason = 8,  // VCHAR, SP, HTAB: a reason phrase's
};

constexpr std::array<uint8_t, 256> MakeClasses() {
  std::array<uint8_t, 256> classes{};
  for (int c = 0x21; c <= 0x7e; ++c) classes[c] |= kValue | kReason;
  for (const char c : {' ', '\t'}) classes[static_cast<uint8_t>(c)] |= kValue | kReason;
  for (int c = '0'; c <= '9'; ++c) classes[c] |= kToken | kTarget;
  for (int c = 'a'; c <= 'z'; ++c) classes[c] |= kToken | kTarget;
  for (int c = 'A'; c <= 'Z'; ++c) classes[c] |= kToken | kTarget;
  for (const char c : std::string_view("!#$%&'*+-.^_`|~"))
    classes[static_cast<uint8_t>(c)] |= kToken;
  for (const char c : std::string_view("-._~!$&'()*+,;=:@/?%")) {
    classes[static_cast<uint8_t>(c)] |= kTarget;
  }
  return classes;
}

constexpr std::array<uint8_t, 256> kClasses = MakeClasses();

bool Is(char c, CharClass cls) { return (kClasses[static_cast<uint8_t>(c)] & cls) != 0; }

bool StartsWith(const char* p, const char* end, std::string_view prefix) {
  return static_cast<size_t>(end - p) >= prefix.size() &&
         std::memcmp(p, prefix.data(), prefix.size()) == 0;
}

struct KnownMethod {
  std::string_view with_space;
  http_method method;
};

constexpr KnownMethod kMethods[] = {
    {"GET ", HTTP_GET},     {"POST ", HTTP_POST},     {"HEAD ", HTTP_HEAD},
    {"PUT ", HTTP_PUT},     {"DELETE ", HTTP_DELETE}, {"OPTIONS ", HTTP_OPTIONS},
    {"PATCH ", HTTP_PATCH},
};

// "HTTP/1.1" or "HTTP/1.0" at p: the minor version, or -1.
int ScanVersion(const char* p, const char* end) {
  if (!StartsWith(p, end, "HTTP/1.")) return -1;
  if (end - p < 8 || (p[7] != '0' && p[7] != '1')) return -1;
  return p[7] - '0';
}

// Whether `text` starts with `lower` (lower-case letters and '-') in any case. Setting
// bit 5 lowers a letter and leaves '-' as it is; no other byte of a token or a value
// becomes a lower-case letter or '-' that way but the letter's own upper case.
bool StartsWithLower(std::string_view text, std::string_view lower) {
  if (text.size() < lower.size()) return false;
  for (size_t i = 0; i < lower.size(); ++i) {
    if ((text[i] | 0x20) != lower[i]) return false;
  }
  return true;
}

bool AtLineEnd(const char* p, const char* end) {
  return end - p >= 2 && p[0] == '\r' && p[1] == '\n';
}

// The first byte at or after p that is not a field value's (VCHAR, SP, HTAB), or end.
// Values are most of a head's bytes; SSE2 (part of x86-64) checks 16 at a time.
const char* SkipValueBytes(const char* p, const char* end) {
#if defined(__SSE2__)
  const __m128i space = _mm_set1_epi8(0x20);
  const __m128i del = _mm_set1_epi8(0x7f);
  while (end - p >= 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    // Below 0x20 as signed bytes: the controls, and obs-text (0x80 and above). HTAB is
    // one of them but a value byte: it is stepped over.
    const __m128i stops = _mm_or_si128(_mm_cmplt_epi8(bytes, space), _mm_cmpeq_epi8(bytes, del));
    const int mask = _mm_movemask_epi8(stops);
    if (mask != 0) {
      p += __builtin_ctz(static_cast<unsigned>(mask));
      if (*p != '\t') return p;
      ++p;
      continue;
    }
    p += 16;
  }
#endif
  while (p < end && Is(*p, kValue)) ++p;
  return p;
}

}  // namespace

size_t ScanStartLine(MessageKind kind, const char* base, size_t begin, size_t end,
                     SimpleHead& head) {
  const char* p = base + begin;
  const char* const stop = base + end;
  if (kind == MessageKind::kRequest) {
    const KnownMethod* known = nullptr;
    for (const KnownMethod& m : kMethods) {
      if (StartsWith(p, stop, m.with_space)) {
        known = &m;
        break;
      }
    }
    if (known == nullptr) return 0;
    p += known->with_space.size();
    head.method = known->method;
    if (p == stop || *p != '/') return 0;
    const char* const target = p;
    while (p < stop && Is(*p, kTarget)) ++p;
    if (p == stop || *p != ' ') return 0;
    head.target = {static_cast<size_t>(target - base), static_cast<size_t>(p - target)};
    ++p;
    head.version_minor = ScanVersion(p, stop);
    if (head.version_minor < 0) return 0;
    p += 8;
  } else {
    head.version_minor = ScanVersion(p, stop);
    if (head.version_minor < 0) return 0;
    p += 8;
    // " DDD ": final statuses 200-599 only. 1xx, 204 and 304 have body rules of their
    // own, which the slow path applies.
    if (stop - p < 5 || p[0] != ' ' || p[4] != ' ' || p[1] < '2' || p[1] > '5' || p[2] < '0' ||
        p[2] > '9' || p[3] < '0' || p[3] > '9') {
      return 0;
    }
    head.status = (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
    if (head.status == 204 || head.status == 304) return 0;
    p += 5;
    const char* const reason = p;
    while (p < stop && Is(*p, kReason)) ++p;
    if (p == reason) return 0;  // an empty reason phrase: the slow path's to judge
    head.reason = {static_cast<size_t>(reason - base), static_cast<size_t>(p - reason)};
  }
  if (!AtLineEnd(p, stop)) return 0;
  return static_cast<size_t>(p + 2 - base);
}

HeaderLine ScanHeaderLine(const char* base, size_t begin, size_t end) {
  HeaderLine line;
  const char* p = base + begin;
  const char* const stop = base + end;
  if (AtLineEnd(p, stop)) {
    line.kind = HeaderLine::Kind::kEnd;
    line.next = begin + 2;
    return line;
  }
  const char* const name = p;
  while (p < stop && Is(*p, kToken)) ++p;
  if (p == name || p == stop || *p != ':') return line;
  line.name = {begin, static_cast<size_t>(p - name)};
  ++p;
  while (p < stop && (*p == ' ' || *p == '\t')) ++p;
  const char* const value = p;
  p = SkipValueBytes(p, stop);
  // White space at the value's end is left to the slow path (which keeps it).
  if (!AtLineEnd(p, stop) || (p > value && (p[-1] == ' ' || p[-1] == '\t'))) return line;
  const char* const value_end = p;
  line.value = {static_cast<size_t>(value - base), static_cast<size_t>(value_end - value)};
  line.next = static_cast<size_t>(p + 2 - base);
  line.kind = HeaderLine::Kind::kField;
  return line;
}

bool NoteFramingField(const char* base, const HeaderLine& line, SimpleHead& head,
                      bool& seen_connection) {
  const std::string_view name(base + line.name.offset, line.name.length);
  const std::string_view value(base + line.value.offset, line.value.length);
  // Names are compared as prefixes: libhttp-parser 2.9.4 takes any name that starts
  // with "Transfer-Encoding" for one ("Transfer-Encodingx: chunked" sets its
  // uses_transfer_encoding), so such a name goes to the slow path, as do the other
  // framing names with anything after them.
  switch (name.front() | 0x20) {
    case 't':
      return !StartsWithLower(name, "transfer-encoding");
    case 'u':
      return !StartsWithLower(name, "upgrade");
    case 'p':
      return !StartsWithLower(name, "proxy-connection");
    default:
      break;
  }
  if (StartsWithLower(name, "connection")) {
    if (name.size() != 10 || seen_connection) return false;
    seen_connection = true;
    if (value.size() == 5 && StartsWithLower(value, "close")) {
      head.connection_close = true;
      return true;
    }
    if (value.size() == 10 && StartsWithLower(value, "keep-alive")) {
      head.connection_keep_alive = true;
      return true;
    }
    return false;
  }
  if (StartsWithLower(name, "content-length")) {
    // 1 to 18 digits: no sign, no list, no overflow.
    if (name.size() != 14 || head.content_length || value.empty() || value.size() > 18) {
      return false;
    }
    uint64_t length = 0;
    for (const char c : value) {
      if (c < '0' || c > '9') return false;
      length = length * 10 + static_cast<uint64_t>(c - '0');
    }
    head.content_length = length;
  }
  return true;
}

}  // namespace sluice::http
