// Checks a head that http::ParseSimpleHead accepted against libhttp-parser's reading of
// the same bytes: the unit tests and the differential fuzz target (HeadParserOneInput)
// share it, so the fast path's one promise (agree with the slow path on every head it
// takes) is tested the same way in both.
#ifndef SLUICE_TESTS_HTTP_HEAD_PARSER_REFERENCE_H_
#define SLUICE_TESTS_HTTP_HEAD_PARSER_REFERENCE_H_

#include <http_parser.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/head_parser.h"

namespace sluice::http::testing {

// libhttp-parser's view of one head.
struct ReferenceHead {
  bool headers_complete = false;
  http_errno error = HPE_OK;
  size_t parsed = 0;
  int method = -1;
  int major = -1;
  int minor = -1;
  int status = -1;
  unsigned flags = 0;
  uint64_t content_length = 0;
  bool upgrade = false;
  bool keep_alive = false;
  std::string target;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> fields;
};

inline ReferenceHead ParseWithHttpParser(MessageKind kind, std::string_view bytes) {
  struct Run {
    http_parser parser;
    ReferenceHead head;
    bool last_was_value = false;
  } run;
  http_parser_settings settings;
  http_parser_settings_init(&settings);
  settings.on_url = [](http_parser* p, const char* at, size_t n) {
    static_cast<Run*>(p->data)->head.target.append(at, n);
    return 0;
  };
  settings.on_status = [](http_parser* p, const char* at, size_t n) {
    static_cast<Run*>(p->data)->head.reason.append(at, n);
    return 0;
  };
  settings.on_header_field = [](http_parser* p, const char* at, size_t n) {
    Run* r = static_cast<Run*>(p->data);
    if (r->last_was_value || r->head.fields.empty()) r->head.fields.emplace_back();
    r->head.fields.back().first.append(at, n);
    r->last_was_value = false;
    return 0;
  };
  settings.on_header_value = [](http_parser* p, const char* at, size_t n) {
    Run* r = static_cast<Run*>(p->data);
    r->head.fields.back().second.append(at, n);
    r->last_was_value = true;
    return 0;
  };
  settings.on_headers_complete = [](http_parser* p) {
    ReferenceHead& h = static_cast<Run*>(p->data)->head;
    h.headers_complete = true;
    h.method = static_cast<int>(p->method);
    h.major = p->http_major;
    h.minor = p->http_minor;
    h.status = static_cast<int>(p->status_code);
    h.flags = p->flags;
    h.content_length = p->content_length;
    h.upgrade = p->upgrade != 0 || p->uses_transfer_encoding != 0;
    h.keep_alive = http_should_keep_alive(p) != 0;
    return 1;  // no body: only the head is compared
  };
  http_parser_init(&run.parser, kind == MessageKind::kRequest ? HTTP_REQUEST : HTTP_RESPONSE);
  run.parser.data = &run;
  run.head.parsed = http_parser_execute(&run.parser, &settings, bytes.data(), bytes.size());
  run.head.error = HTTP_PARSER_ERRNO(&run.parser);
  return run.head;
}

// Empty when libhttp-parser reads base[begin, begin + head.length) as the same head that
// ParseSimpleHead reported in `head` and `spans`; otherwise what differs.
template <size_t N>
std::string DifferenceFromHttpParser(MessageKind kind, const char* base, size_t begin,
                                     const SimpleHead& head, const HeaderSpans<N>& spans) {
  const ReferenceHead ref = ParseWithHttpParser(kind, {base + begin, head.length});
  if (ref.error != HPE_OK) {
    return std::string("libhttp-parser refuses it: ") + http_errno_name(ref.error);
  }
  if (!ref.headers_complete || ref.parsed != head.length) {
    return "libhttp-parser ends the head elsewhere (" + std::to_string(ref.parsed) + " of " +
           std::to_string(head.length) + " bytes)";
  }
  if (ref.major != 1 || ref.minor != head.version_minor) return "version differs";
  if (ref.upgrade) return "libhttp-parser sees an upgrade or a transfer coding";
  if ((ref.flags & F_CHUNKED) != 0) return "libhttp-parser sees chunked";
  const bool ref_has_length = (ref.flags & F_CONTENTLENGTH) != 0;
  if (ref_has_length != head.content_length.has_value() ||
      (ref_has_length && ref.content_length != *head.content_length)) {
    return "Content-Length differs";
  }
  if (((ref.flags & F_CONNECTION_CLOSE) != 0) != head.connection_close ||
      ((ref.flags & F_CONNECTION_KEEP_ALIVE) != 0) != head.connection_keep_alive) {
    return "Connection differs";
  }
  if (kind == MessageKind::kRequest) {
    if (ref.method != head.method) return "method differs";
    if (ref.target != std::string_view(base + head.target.offset, head.target.length)) {
      return "target differs: " + ref.target;
    }
  } else {
    if (ref.status != head.status) return "status differs";
    if (ref.reason != std::string_view(base + head.reason.offset, head.reason.length)) {
      return "reason differs: " + ref.reason;
    }
  }
  std::vector<Header> views(spans.size());
  spans.Views(base, views.data());
  if (ref.fields.size() != views.size()) return "field count differs";
  for (size_t i = 0; i < views.size(); ++i) {
    if (ref.fields[i].first != views[i].name) return "name differs: " + ref.fields[i].first;
    if (ref.fields[i].second != views[i].value) {
      return "value differs: '" + ref.fields[i].second + "' against '" +
             std::string(views[i].value) + "'";
    }
  }
  return {};
}

}  // namespace sluice::http::testing

#endif  // SLUICE_TESTS_HTTP_HEAD_PARSER_REFERENCE_H_
