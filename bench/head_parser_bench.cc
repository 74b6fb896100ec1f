// The fast head path (src/http/head_parser.h) against libhttp-parser on the heads the
// gateway benchmark sends: wrk's request and nginx's response. The libhttp-parser side
// does what the connections did with it: callbacks that record the target and the
// header fields as spans, a pause at the end of the head.
//
//   build/head_parser_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>
#include <http_parser.h>

#include <string>

#include "http/head_parser.h"

namespace sluice::http {
namespace {

const std::string kRequest = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
const std::string kCurlRequest =
    "GET /api/items?page=2 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/7.88.1\r\n"
    "Accept: */*\r\nX-Api-Key: 0123456789abcdef\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n";
const std::string kResponse =
    "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 10:00:00 GMT\r\n"
    "Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";

struct Collector {
  http_parser parser;
  const char* base = nullptr;
  Span url;
  HeaderSpans<100> spans;
};

int OnUrl(http_parser* p, const char* at, size_t n) {
  Collector* c = static_cast<Collector*>(p->data);
  c->url = {static_cast<size_t>(at - c->base), n};
  return 0;
}
int OnField(http_parser* p, const char* at, size_t n) {
  Collector* c = static_cast<Collector*>(p->data);
  return c->spans.AddName(static_cast<size_t>(at - c->base), n) ? 0 : 1;
}
int OnValue(http_parser* p, const char* at, size_t n) {
  Collector* c = static_cast<Collector*>(p->data);
  c->spans.AddValue(static_cast<size_t>(at - c->base), n);
  return 0;
}
int OnHeadersComplete(http_parser* p) {
  http_parser_pause(p, 1);
  return 0;
}

void BM_LibhttpParser(benchmark::State& state, MessageKind kind, const std::string& text) {
  http_parser_settings settings;
  http_parser_settings_init(&settings);
  settings.on_url = &OnUrl;
  settings.on_header_field = &OnField;
  settings.on_header_value = &OnValue;
  settings.on_headers_complete = &OnHeadersComplete;
  Collector c;
  c.base = text.data();
  for (auto _ : state) {
    http_parser_init(&c.parser, kind == MessageKind::kRequest ? HTTP_REQUEST : HTTP_RESPONSE);
    c.parser.data = &c;
    c.spans.Clear();
    const size_t n = http_parser_execute(&c.parser, &settings, text.data(), text.size());
    benchmark::DoNotOptimize(n);
    benchmark::DoNotOptimize(c.spans.size());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

void BM_SimpleHead(benchmark::State& state, MessageKind kind, const std::string& text) {
  HeaderSpans<100> spans;
  SimpleHead head;
  for (auto _ : state) {
    const bool taken = ParseSimpleHead(kind, text.data(), 0, text.size(), SIZE_MAX, spans, head);
    benchmark::DoNotOptimize(taken);
    benchmark::DoNotOptimize(head.length);
  }
  if (!ParseSimpleHead(kind, text.data(), 0, text.size(), SIZE_MAX, spans, head)) {
    state.SkipWithError("the fast path did not take the head");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

BENCHMARK_CAPTURE(BM_LibhttpParser, wrk_request, MessageKind::kRequest, kRequest);
BENCHMARK_CAPTURE(BM_SimpleHead, wrk_request, MessageKind::kRequest, kRequest);
BENCHMARK_CAPTURE(BM_LibhttpParser, curl_request, MessageKind::kRequest, kCurlRequest);
BENCHMARK_CAPTURE(BM_SimpleHead, curl_request, MessageKind::kRequest, kCurlRequest);
BENCHMARK_CAPTURE(BM_LibhttpParser, nginx_response, MessageKind::kResponse, kResponse);
BENCHMARK_CAPTURE(BM_SimpleHead, nginx_response, MessageKind::kResponse, kResponse);

}  // namespace
}  // namespace sluice::http

BENCHMARK_MAIN();
