#include "http/head_parser.h"

#include <http_parser.h>

#include <array>
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

bool AtLineEnd(const char* p, const char* end) {
  return end - p >= 2 && p[0] == '\r' && p[1] == '\n';
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
  const char* value_end = p;
  for (; p < stop && Is(*p, kValue); ++p) {
    if (*p != ' ' && *p != '\t') value_end = p + 1;
  }
  // White space at the value's end is left to the slow path (which keeps it).
  if (value_end != p || !AtLineEnd(p, stop)) return line;
  line.value = {static_cast<size_t>(value - base), static_cast<size_t>(value_end - value)};
  line.next = static_cast<size_t>(p + 2 - base);
  line.kind = HeaderLine::Kind::kField;
  return line;
}

bool NoteFramingField(const char* base, const HeaderLine& line, SimpleHead& head,
                      bool& seen_connection) {
  const std::string_view name(base + line.name.offset, line.name.length);
  const std::string_view value(base + line.value.offset, line.value.length);
  const char first = AsciiLower(name.front());
  if (first != 'c' && first != 't' && first != 'u' && first != 'p') return true;
  // Names are compared as prefixes: libhttp-parser 2.9.4 takes any name that starts
  // with "Transfer-Encoding" for one ("Transfer-Encodingx: chunked" sets its
  // uses_transfer_encoding), so such a name goes to the slow path, as do the other
  // framing names with anything after them.
  const auto starts_with = [name](std::string_view known) {
    return name.size() >= known.size() && EqualsIgnoreCase(name.substr(0, known.size()), known);
  };
  if (starts_with("transfer-encoding") || starts_with("upgrade") ||
      starts_with("proxy-connection")) {
    return false;
  }
  if (starts_with("connection")) {
    if (name.size() != 10 || seen_connection) return false;
    seen_connection = true;
    if (EqualsIgnoreCase(value, "close")) {
      head.connection_close = true;
      return true;
    }
    if (EqualsIgnoreCase(value, "keep-alive")) {
      head.connection_keep_alive = true;
      return true;
    }
    return false;
  }
  if (starts_with("content-length")) {
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
