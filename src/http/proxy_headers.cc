#include "http/proxy_headers.h"

#include <array>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "core/check.h"
#include "http/ascii.h"

namespace sluice::http {
namespace {

// The fields this file treats specially; everything else is kOther.
enum class Field : uint8_t {
  kOther,
  kHopByHop,  // Keep-Alive, Proxy-Connection, Proxy-Authenticate, Proxy-Authorization,
              // TE, Trailer, Upgrade
  kConnection,
  kContentLength,
  kTransferEncoding,
  kHost,
  kExpect,
  kXForwardedFor,
  kXForwardedProto,
  kXForwardedHost,
  kForwarded,
  kXRequestId,
  kDate,
};

// By length first: most names fall out at the switch without a comparison.
Field Classify(std::string_view name) {
  auto is = [name](std::string_view lower) { return EqualsIgnoreCase(name, lower); };
  switch (name.size()) {
    case 2:
      return is("te") ? Field::kHopByHop : Field::kOther;
    case 4:
      if (is("host")) return Field::kHost;
      return is("date") ? Field::kDate : Field::kOther;
    case 6:
      return is("expect") ? Field::kExpect : Field::kOther;
    case 7:
      return is("upgrade") || is("trailer") ? Field::kHopByHop : Field::kOther;
    case 9:
      return is("forwarded") ? Field::kForwarded : Field::kOther;
    case 10:
      if (is("connection")) return Field::kConnection;
      return is("keep-alive") ? Field::kHopByHop : Field::kOther;
    case 12:
      return is("x-request-id") ? Field::kXRequestId : Field::kOther;
    case 14:
      return is("content-length") ? Field::kContentLength : Field::kOther;
    case 15:
      return is("x-forwarded-for") ? Field::kXForwardedFor : Field::kOther;
    case 16:
      if (is("x-forwarded-host")) return Field::kXForwardedHost;
      return is("proxy-connection") ? Field::kHopByHop : Field::kOther;
    case 17:
      if (is("transfer-encoding")) return Field::kTransferEncoding;
      return is("x-forwarded-proto") ? Field::kXForwardedProto : Field::kOther;
    case 18:
      return is("proxy-authenticate") ? Field::kHopByHop : Field::kOther;
    case 19:
      return is("proxy-authorization") ? Field::kHopByHop : Field::kOther;
    default:
      return Field::kOther;
  }
}

// tchar of RFC 9110 5.6.2.
constexpr std::array<bool, 256> kTokenChars = [] {
  std::array<bool, 256> table{};
  for (int c = '0'; c <= '9'; ++c) table[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) table[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) table[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) table[static_cast<unsigned char>(c)] = true;
  return table;
}();

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!kTokenChars[static_cast<unsigned char>(c)]) return false;
  }
  return true;
}

bool HasLineBreak(std::string_view value) {
  if (value.empty()) return false;  // memchr must not see a default view's null pointer
  return std::memchr(value.data(), '\n', value.size()) != nullptr ||
         std::memchr(value.data(), '\r', value.size()) != nullptr;
}

// The name without the white space some senders put before the colon; empty when
// what is left is not a token (white space inside it, or first on the line).
std::string_view FieldName(std::string_view name) {
  while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
  return IsToken(name) ? name : std::string_view();
}

// Calls `f(element)` for each comma-separated element of a list value, OWS-trimmed,
// empty ones included; stops early when `f` returns false.
template <typename F>
bool ForEachListElement(std::string_view list, F&& f) {
  while (true) {
    const size_t comma = list.find(',');
    if (!f(TrimOws(list.substr(0, comma)))) return false;
    if (comma == std::string_view::npos) return true;
    list.remove_prefix(comma + 1);
  }
}

// A head's fields, each name cleaned (FieldName) and classified once, with the options
// of every Connection field (RFC 9110 7.6.1) gathered so that deciding whether a field
// is named costs a few comparisons. Heads from the server connection have at most 100
// fields; the fields past kCached, if any, are worked out again at each look. A sender
// that lists more than kMaxConnectionOptions options is answered by scanning the
// Connection fields for each field: correct, but slow enough that CheckRequestFraming
// refuses such a request.
class FieldTable {
 public:
  explicit FieldTable(std::span<const Header> headers) : headers_(headers) {
    for (size_t i = 0; i < headers.size(); ++i) {
      const std::string_view name = FieldName(headers[i].name);
      const Field field = name.empty() ? Field::kOther : Classify(name);
      if (i < kCached) cached_[i] = {name.data(), name.size(), field};
      if (field != Field::kConnection) continue;
      if (first_connection_ == kNone) first_connection_ = i;
      ForEachListElement(headers[i].value, [this](std::string_view token) {
        if (token.empty()) return true;
        if (options_ == tokens_.size()) {
          overflow_ = true;
          return false;
        }
        tokens_[options_++] = token;
        return true;
      });
    }
  }

  size_t size() const { return headers_.size(); }
  // Empty for a field to drop: white space inside or first on the line, or a
  // character outside the token set.
  std::string_view name(size_t i) const {
    return i < kCached ? std::string_view(cached_[i].name, cached_[i].name_size)
                       : FieldName(headers_[i].name);
  }
  Field field(size_t i) const {
    if (i < kCached) return cached_[i].field;
    const std::string_view n = name(i);
    return n.empty() ? Field::kOther : Classify(n);
  }
  std::string_view value(size_t i) const { return headers_[i].value; }

  // Whether a Connection field names `name` among its options.
  bool NamedByConnection(std::string_view name) const {
    if (first_connection_ == kNone) return false;
    if (!overflow_) {
      for (size_t i = 0; i < options_; ++i) {
        if (EqualsIgnoreCase(tokens_[i], name)) return true;
      }
      return false;
    }
    for (size_t i = first_connection_; i < size(); ++i) {
      if (field(i) != Field::kConnection) continue;
      const bool named = !ForEachListElement(
          value(i), [name](std::string_view token) { return !EqualsIgnoreCase(token, name); });
      if (named) return true;
    }
    return false;
  }

 private:
  static constexpr size_t kCached = 128;
  static constexpr size_t kNone = ~size_t{0};

  // Plain data, so that the table is not cleared on each construction (2 KB).
  struct Cached {
    const char* name;
    size_t name_size;
    Field field;
  };

  std::span<const Header> headers_;
  std::array<Cached, kCached> cached_;  // the first min(size, kCached) are set
  std::array<std::string_view, kMaxConnectionOptions> tokens_;
  size_t options_ = 0;
  size_t first_connection_ = kNone;
  bool overflow_ = false;
};

void Append(std::string& out, std::string_view s) { out.append(s.data(), s.size()); }

// Copies a value with any CR or LF (an obs-fold, RFC 9112 5.2) written as a space: a
// field must not end early, nor smuggle a line into the head it is copied into. One
// pass, 16 bytes at a time: most heads have no line break in a value, but looking for
// one first (two memchr calls) costs more than replacing while copying.
char* CopyValue(char* p, std::string_view value) {
  const char* s = value.data();
  size_t n = value.size();
#if defined(__SSE2__)
  const __m128i cr = _mm_set1_epi8('\r');
  const __m128i lf = _mm_set1_epi8('\n');
  const __m128i space = _mm_set1_epi8(' ');
  for (; n >= 16; n -= 16, s += 16, p += 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
    const __m128i breaks = _mm_or_si128(_mm_cmpeq_epi8(bytes, cr), _mm_cmpeq_epi8(bytes, lf));
    const __m128i copied =
        _mm_or_si128(_mm_andnot_si128(breaks, bytes), _mm_and_si128(breaks, space));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), copied);
  }
#endif
  for (; n > 0; --n, ++s) *p++ = *s == '\r' || *s == '\n' ? ' ' : *s;
  return p;
}

void AppendValue(std::string& out, std::string_view value) {
  const size_t at = out.size();
  out.resize(at + value.size());
  CopyValue(out.data() + at, value);
}

// "name: value\r\n", in one resize of `out`.
void AppendField(std::string& out, std::string_view name, std::string_view value) {
  value = TrimOws(value);
  const size_t at = out.size();
  out.resize(at + name.size() + value.size() + 4);
  char* p = out.data() + at;
  if (!name.empty()) std::memcpy(p, name.data(), name.size());
  p += name.size();
  *p++ = ':';
  *p++ = ' ';
  p = CopyValue(p, value);
  *p++ = '\r';
  *p = '\n';
}

void AppendFraming(std::string& out, const BodyFraming& body) {
  if (body.kind == BodyKind::kContentLength) {
    Append(out, "Content-Length: ");
    AppendDecimal(out, body.length);
    Append(out, "\r\n");
  } else if (body.kind == BodyKind::kChunked) {
    Append(out, "Transfer-Encoding: chunked\r\n");
  }
}

void AppendVia(std::string& out, int received_minor) {
  Append(out, received_minor == 0 ? "Via: 1.0 sluice\r\n" : "Via: 1.1 sluice\r\n");
}

// A plain decimal (1*DIGIT) that fits in 64 bits.
bool ParseContentLength(std::string_view text, uint64_t& value) {
  if (text.empty()) return false;
  value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (UINT64_MAX - digit) / 10) return false;
    value = value * 10 + digit;
  }
  return true;
}

// A transfer-coding other than chunked: a token, optionally with parameters
// (RFC 9112 7); the parameters are not looked into, as such a coding is refused anyway.
bool IsOtherTransferCoding(std::string_view element) {
  return IsToken(TrimOws(element.substr(0, element.find(';'))));
}

}  // namespace

int RefusalStatus(RequestRefusal refusal) {
  return refusal == RequestRefusal::kUnsupportedTransferCoding ? 501 : 400;
}

std::string_view RefusalName(RequestRefusal refusal) {
  switch (refusal) {
    case RequestRefusal::kNone:
      return "none";
    case RequestRefusal::kInvalidFieldName:
      return "invalid_field_name";
    case RequestRefusal::kTooManyConnectionOptions:
      return "too_many_connection_options";
    case RequestRefusal::kInvalidFieldValue:
      return "invalid_field_value";
    case RequestRefusal::kContentLengthAndTransferEncoding:
      return "content_length_and_transfer_encoding";
    case RequestRefusal::kTransferEncodingInHttp10:
      return "transfer_encoding_in_http10";
    case RequestRefusal::kRepeatedContentLength:
      return "repeated_content_length";
    case RequestRefusal::kInvalidContentLength:
      return "invalid_content_length";
    case RequestRefusal::kInvalidTransferEncoding:
      return "invalid_transfer_encoding";
    case RequestRefusal::kUnsupportedTransferCoding:
      return "unsupported_transfer_coding";
  }
  return "unknown";
}

RequestFraming CheckRequestFraming(const Request& request) {
  RequestFraming result;
  size_t content_lengths = 0;
  size_t transfer_encodings = 0;
  size_t connection_options = 0;
  std::string_view content_length;
  // One pass: refuse a malformed field at once; count the framing fields.
  for (const Header& header : request.headers) {
    // Not FieldName(): white space before the colon is refused here, not trimmed.
    if (!IsToken(header.name)) {
      result.refusal = RequestRefusal::kInvalidFieldName;
      return result;
    }
    if (HasLineBreak(header.value)) {
      result.refusal = RequestRefusal::kInvalidFieldValue;
      return result;
    }
    const Field field = Classify(header.name);
    if (field == Field::kContentLength) {
      ++content_lengths;
      content_length = header.value;
    } else if (field == Field::kTransferEncoding) {
      ++transfer_encodings;
    } else if (field == Field::kConnection) {
      ForEachListElement(header.value, [&connection_options](std::string_view token) {
        if (!token.empty()) ++connection_options;
        return connection_options <= kMaxConnectionOptions;
      });
      if (connection_options > kMaxConnectionOptions) {
        result.refusal = RequestRefusal::kTooManyConnectionOptions;
        return result;
      }
    }
  }

  if (content_lengths > 0 && transfer_encodings > 0) {
    result.refusal = RequestRefusal::kContentLengthAndTransferEncoding;
    return result;
  }
  if (transfer_encodings > 0 && request.version_minor == 0) {
    result.refusal = RequestRefusal::kTransferEncodingInHttp10;
    return result;
  }
  if (content_lengths > 1) {
    result.refusal = RequestRefusal::kRepeatedContentLength;
    return result;
  }
  if (content_lengths == 1) {
    if (!ParseContentLength(TrimOws(content_length), result.body.length)) {
      result.refusal = RequestRefusal::kInvalidContentLength;
      result.body.length = 0;
      return result;
    }
    result.body.kind = BodyKind::kContentLength;
    return result;
  }
  if (transfer_encodings == 0) return result;  // no body

  // The codings of every Transfer-Encoding field, in order, as one list (RFC 9110
  // 5.3): chunked must be the last and appear once; an empty element is refused, as
  // libhttp-parser refuses it.
  size_t chunked = 0;
  bool last_is_chunked = false;
  bool malformed = false;
  bool other_codings = false;
  for (const Header& header : request.headers) {
    if (Classify(header.name) != Field::kTransferEncoding) continue;
    ForEachListElement(header.value, [&](std::string_view element) {
      last_is_chunked = EqualsIgnoreCase(element, "chunked");
      if (last_is_chunked) {
        ++chunked;
      } else if (IsOtherTransferCoding(element)) {
        other_codings = true;
      } else {
        malformed = true;
      }
      return true;
    });
  }
  if (malformed || chunked != 1 || !last_is_chunked) {
    result.refusal = RequestRefusal::kInvalidTransferEncoding;
  } else if (other_codings) {
    result.refusal = RequestRefusal::kUnsupportedTransferCoding;
  } else {
    result.body.kind = BodyKind::kChunked;
  }
  return result;
}

void AppendUpstreamRequestHead(const Request& request, const BodyFraming& body,
                               const UpstreamRequestOptions& options, std::string& out) {
  SLUICE_CHECK(request.peer != nullptr && body.kind != BodyKind::kUntilClose);
  const bool peer_trusted = options.trusted_proxies != nullptr &&
                            !options.trusted_proxies->empty() &&
                            options.trusted_proxies->Contains(*request.peer);
  const FieldTable fields(request.headers);
  // The host the client asked for (RFC 9112 3.2.2): an absolute-form target's
  // authority wins over the Host field.
  const std::string_view target_authority = AbsoluteFormAuthority(request.target).value_or("");
  std::string_view client_host = target_authority;

  Append(out, request.method);
  out.push_back(' ');
  Append(out, request.target);
  Append(out, " HTTP/1.1\r\n");

  bool host_written = false;
  bool forwarded_for = false;  // a trusted X-Forwarded-For to extend
  for (size_t i = 0; i < fields.size(); ++i) {
    const std::string_view name = fields.name(i);
    if (name.empty()) continue;
    switch (fields.field(i)) {
      case Field::kHost:
        if (host_written) continue;  // the server refuses a second Host; never send two
        host_written = true;
        if (target_authority.empty()) client_host = TrimOws(fields.value(i));
        if (options.rewrite_host) {
          AppendField(out, name, options.upstream_authority);
        } else {
          AppendField(out, name, target_authority.empty() ? fields.value(i) : target_authority);
        }
        continue;  // kept whatever Connection names: every HTTP/1.1 request needs one
      case Field::kHopByHop:
      case Field::kConnection:
      case Field::kContentLength:
      case Field::kTransferEncoding:
      case Field::kExpect:
      case Field::kXForwardedProto:
      case Field::kXForwardedHost:
      case Field::kXRequestId:
        continue;
      case Field::kXForwardedFor:
        forwarded_for = forwarded_for || peer_trusted;
        continue;  // written below, as one field
      case Field::kForwarded:
        if (!peer_trusted) continue;
        break;
      case Field::kDate:
      case Field::kOther:
        break;
    }
    if (fields.NamedByConnection(name)) continue;
    AppendField(out, name, fields.value(i));
  }

  if (!host_written) {
    Append(out, "Host: ");
    Append(out, options.rewrite_host || target_authority.empty() ? options.upstream_authority
                                                                 : target_authority);
    Append(out, "\r\n");
  }
  AppendFraming(out, body);

  Append(out, "X-Forwarded-For: ");
  // The trusted proxy's list, every field in order, unless a Connection token made it
  // hop-by-hop (then that hop's list is not for us to pass on).
  if (forwarded_for && !fields.NamedByConnection("x-forwarded-for")) {
    for (size_t i = 0; i < fields.size(); ++i) {
      if (fields.field(i) != Field::kXForwardedFor) continue;
      const std::string_view list = TrimOws(fields.value(i));
      if (list.empty()) continue;
      AppendValue(out, list);
      Append(out, ", ");
    }
  }
  if (!request.peer_text.empty()) {
    Append(out, request.peer_text);
  } else {
    char address[net::IpAddress::kMaxTextLength];
    Append(out, {address, request.peer->Format(address)});
  }
  Append(out,
         options.https ? "\r\nX-Forwarded-Proto: https\r\n" : "\r\nX-Forwarded-Proto: http\r\n");
  if (!client_host.empty()) AppendField(out, "X-Forwarded-Host", client_host);
  if (!request.request_id.empty()) AppendField(out, "X-Request-Id", request.request_id);
  if (options.via) AppendVia(out, request.version_minor);
  Append(out, options.extra_lines);
  Append(out, "\r\n");
}

void AppendClientResponseHead(const UpstreamResponse& response, const BodyFraming& body,
                              const ClientResponseOptions& options, std::string& out) {
  SLUICE_CHECK(response.status >= 100 && response.status <= 999);
  SLUICE_CHECK(!(body.kind == BodyKind::kChunked && options.client_version_minor == 0));
  const FieldTable fields(response.headers);

  Append(out, "HTTP/1.1 ");
  AppendDecimal(out, static_cast<uint64_t>(response.status));
  out.push_back(' ');  // sent even when the reason is empty (RFC 9112 4)
  AppendValue(out, response.reason);
  Append(out, "\r\n");

  bool has_date = false;
  for (size_t i = 0; i < fields.size(); ++i) {
    const std::string_view name = fields.name(i);
    if (name.empty()) continue;
    const Field field = fields.field(i);
    switch (field) {
      case Field::kHopByHop:
      case Field::kConnection:
      case Field::kContentLength:
      case Field::kTransferEncoding:
        continue;
      case Field::kXRequestId:
        if (!options.request_id.empty()) continue;
        break;
      default:
        break;
    }
    if (fields.NamedByConnection(name)) continue;
    AppendField(out, name, fields.value(i));
    has_date = has_date || field == Field::kDate;
  }

  AppendFraming(out, body);
  if (!has_date) Append(out, options.date_line);
  if (!options.request_id.empty()) AppendField(out, "X-Request-Id", options.request_id);
  if (options.close || body.kind == BodyKind::kUntilClose) {
    Append(out, "Connection: close\r\n");
  } else if (options.client_version_minor == 0) {
    Append(out, "Connection: keep-alive\r\n");
  }
  if (options.via) AppendVia(out, response.version_minor);
  Append(out, options.extra_lines);
  Append(out, "\r\n");
}

}  // namespace sluice::http
