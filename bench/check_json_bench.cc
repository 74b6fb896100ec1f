// POST /v1/check body parsing: sluice's simdjson parser (src/api/check_request.h, the real
// code, one parser reused) against the same parse-and-validate written with nlohmann-json,
// on the same bodies, in the same binary and run. docs/architecture.md ("Decision APIs")
// chose simdjson because nlohmann builds a heap tree per body; this measures the claim.
//
// The nlohmann side is NlohmannCheckParser below: nlohmann::json::parse without exceptions,
// then the same walk as CheckRequestParser (types, empty strings, unknown fields, the
// descriptor names through config::ParseKeyPartText, ip values through IpAddress::Parse,
// duplicate descriptors, batch limits), filling the same CheckQuery/Descriptor structs. The
// parsed tree is kept until the next parse, so the queries hold string_views into its
// strings, as sluice's hold views into simdjson's tape: no copies on either side. What it
// cannot check: a JSON object field written twice. nlohmann's object is a std::map and the
// parse keeps the last value, so "field rule given twice" passes there (it does less work,
// not more). Its descriptors come out in name order, not body order; the result check
// below compares them sorted.
//
// Allocations: this file replaces the global operator new with one that counts (single
// threaded; the aligned forms are not replaced, so not counted). Each benchmark reads the
// count just before and after its timed loop and reports the difference per body.
//
//   taskset -c 0 build/check_json_bench --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "api/check_request.h"
#include "config/config.h"
#include "http/ascii.h"
#include "net/address.h"
#include "sluice/limiter.h"

namespace {
// Plain counters: the benchmarks run on one thread.
uint64_t g_allocations = 0;
uint64_t g_allocated_bytes = 0;
}  // namespace

void* operator new(size_t size) {
  ++g_allocations;
  g_allocated_bytes += size;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace sluice::api {
namespace {

constexpr size_t kNoIndex = ~size_t{0};

// As check_request.cc's, for the same messages (and the same allocations).
std::string Shown(std::string_view text) {
  constexpr size_t kMax = 64;
  if (text.size() <= kMax) return fmt::format("\"{}\"", text);
  return fmt::format("\"{}...\"", text.substr(0, kMax));
}

std::string_view TypeName(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::array:
      return "an array";
    case nlohmann::json::value_t::object:
      return "an object";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_float:
      return "a number";
    case nlohmann::json::value_t::string:
      return "a string";
    case nlohmann::json::value_t::boolean:
      return "a boolean";
    case nlohmann::json::value_t::null:
      return "null";
    default:
      return "a value";
  }
}

// CheckRequestParser's contract, written with nlohmann-json's DOM.
class NlohmannCheckParser {
 public:
  bool Parse(const std::string& body) {
    queries_.clear();
    descriptors_.clear();
    error_.clear();
    batch_ = false;
    document_ = nlohmann::json::parse(body, /*cb=*/nullptr, /*allow_exceptions=*/false);
    if (document_.is_discarded()) return Fail(kNoIndex, "malformed JSON");
    if (!document_.is_array()) return ParseQuery(document_, kNoIndex);

    batch_ = true;
    const size_t size = document_.size();
    if (size == 0) return Fail(kNoIndex, "an empty batch: expected at least one query");
    if (size > CheckRequestParser::kMaxBatch) {
      return Fail(kNoIndex, fmt::format("a batch of {} queries; at most {} in one request", size,
                                        CheckRequestParser::kMaxBatch));
    }
    size_t index = 0;
    for (const nlohmann::json& element : document_) {
      if (!ParseQuery(element, index++)) return false;
    }
    return true;
  }

  const std::string& error() const { return error_; }
  bool batch() const { return batch_; }
  std::span<const CheckQuery> queries() const { return queries_; }
  std::span<const Descriptor> descriptors(const CheckQuery& query) const {
    return std::span<const Descriptor>(descriptors_)
        .subspan(query.first_descriptor, query.descriptor_count);
  }

 private:
  bool Fail(size_t index, std::string message) {
    error_ = index == kNoIndex ? std::move(message) : fmt::format("query {}: {}", index, message);
    return false;
  }

  bool ParseQuery(const nlohmann::json& element, size_t index) {
    if (!element.is_object()) {
      return Fail(index, fmt::format("expected an object with rule and key, or with "
                                     "descriptors; got {}",
                                     TypeName(element)));
    }
    CheckQuery query;
    bool has_rule = false, has_key = false, has_descriptors = false, has_cost = false;
    for (const auto& [key, value] : element.items()) {
      const std::string_view name = key;  // the std::map's key string, alive with the tree
      bool* seen = nullptr;
      if (name == "rule" || name == "key") {
        seen = name == "rule" ? &has_rule : &has_key;
        if (!value.is_string()) {
          return Fail(index, fmt::format("{} must be a string, got {}", name, TypeName(value)));
        }
        const std::string_view text = value.get_ref<const std::string&>();
        if (text.empty()) return Fail(index, fmt::format("{} must not be empty", name));
        (name == "rule" ? query.rule : query.key) = text;
      } else if (name == "descriptors") {
        seen = &has_descriptors;
        if (!value.is_object()) {
          return Fail(index, fmt::format("descriptors must be an object of strings, got {}",
                                         TypeName(value)));
        }
        if (!ParseDescriptors(value, index, query)) return false;
      } else if (name == "cost") {
        seen = &has_cost;
        // nlohmann stores every non-negative integer as number_unsigned.
        if (!value.is_number_unsigned() ||
            value.get_ref<const nlohmann::json::number_unsigned_t&>() > kMaxQuantity) {
          return Fail(index, fmt::format("cost must be a whole number from 0 to {}, got {}",
                                         kMaxQuantity, value.dump()));
        }
        query.cost = value.get_ref<const nlohmann::json::number_unsigned_t&>();
      } else {
        return Fail(index, fmt::format("unknown field {}; expected rule, key, descriptors "
                                       "or cost",
                                       Shown(name)));
      }
      if (*seen) return Fail(index, fmt::format("field {} given twice", name));  // never
      *seen = true;
    }
    if (has_rule != has_key) {
      return Fail(index, has_rule ? "rule needs key: the client key to check it for"
                                  : "key needs rule: the rule to check it against");
    }
    if (has_rule && has_descriptors) {
      return Fail(index, "either rule and key, or descriptors, not both");
    }
    if (!has_rule && !has_descriptors) return Fail(index, "expected rule and key, or descriptors");
    query.by_rule = has_rule;
    queries_.push_back(query);
    return true;
  }

  bool ParseDescriptors(const nlohmann::json& object, size_t index, CheckQuery& query) {
    query.first_descriptor = descriptors_.size();
    for (const auto& [key, value] : object.items()) {
      const std::string_view name = key;
      std::string error;
      // As sluice does: the quoted name only for a message.
      const std::optional<config::KeyPartText> part = config::ParseKeyPartText(name, {}, &error);
      if (!part) {
        config::ParseKeyPartText(name, Shown(name), &error);
        return Fail(index, "descriptors: " + error);
      }
      if (!value.is_string()) {
        return Fail(index, fmt::format("descriptor {} must be a string, got {}", Shown(name),
                                       TypeName(value)));
      }
      const std::string_view text = value.get_ref<const std::string&>();
      if (part->kind == config::KeyPartKind::kIp && !net::IpAddress::Parse(text)) {
        return Fail(index, fmt::format("descriptor ip: {} is not an IP address", Shown(text)));
      }
      for (size_t i = query.first_descriptor; i < descriptors_.size(); ++i) {
        const Descriptor& other = descriptors_[i];
        const bool same_name = other.kind == config::KeyPartKind::kHeader
                                   ? http::EqualsIgnoreCase(other.name, part->name)
                                   : other.name == part->name;
        if (other.kind == part->kind && same_name) {
          return Fail(index, fmt::format("descriptor {} given twice", Shown(name)));
        }
      }
      descriptors_.push_back(Descriptor{part->kind, part->name, text});
    }
    query.descriptor_count = descriptors_.size() - query.first_descriptor;
    return true;
  }

  nlohmann::json document_;  // the queries view its strings until the next Parse
  std::vector<CheckQuery> queries_;
  std::vector<Descriptor> descriptors_;
  std::string error_;
  bool batch_ = false;
};

// The bodies.
std::string RuleQuery(int i) {
  return fmt::format(R"({{"rule":"api-per-key","key":"k-{}","cost":1}})", i);
}
std::string DescriptorQuery(int i) {
  return fmt::format(
      R"({{"descriptors":{{"ip":"203.0.{}.{}","header:x-api-key":"k-{}","path":"/api/items",)"
      R"("method":"GET"}},"cost":1}})",
      i / 256, i % 256, i);
}
std::string Batch(std::string (*query)(int), int count) {
  std::string body = "[";
  for (int i = 0; i < count; ++i) {
    if (i > 0) body += ',';
    body += query(i);
  }
  return body + "]";
}

struct Body {
  const char* name;
  std::string text;
  size_t queries;
};

std::vector<Body> Bodies() {
  return {
      {"single", R"({"rule":"api-per-key","key":"k-123","cost":1})", 1},
      {"descriptors4", DescriptorQuery(123), 1},
      {"batch100_rule", Batch(&RuleQuery, 100), 100},
      {"batch100_descriptors", Batch(&DescriptorQuery, 100), 100},
  };
}

// A parse's result, descriptors sorted (nlohmann gives them in name order), for comparing.
template <typename Parser>
std::vector<std::string> Canonical(const Parser& parser) {
  std::vector<std::string> out;
  out.push_back(parser.batch() ? "batch" : "single");
  for (const CheckQuery& q : parser.queries()) {
    std::vector<std::string> descriptors;
    for (const Descriptor& d : parser.descriptors(q)) {
      descriptors.push_back(fmt::format("{}:{}={}", static_cast<int>(d.kind), d.name, d.value));
    }
    std::sort(descriptors.begin(), descriptors.end());
    out.push_back(fmt::format("{}|{}|{}|{}|{}", q.by_rule, q.rule, q.key, q.cost,
                              fmt::join(descriptors, ",")));
  }
  return out;
}

// Both parsers accept the benchmark bodies with the same result and refuse the same bad
// ones; otherwise the comparison would be of different work.
bool SameContract() {
  CheckRequestParser simd;
  NlohmannCheckParser nlohmann;
  bool same = true;
  for (const Body& body : Bodies()) {
    std::string text = body.text;
    if (!simd.Parse(text) || !nlohmann.Parse(text) || simd.queries().size() != body.queries ||
        Canonical(simd) != Canonical(nlohmann)) {
      std::fprintf(stderr, "%s: the parsers differ: [%s] [%s]\n", body.name, simd.error().c_str(),
                   nlohmann.error().c_str());
      same = false;
    }
  }
  const std::vector<std::string> refused = {
      "",
      "{",
      "[]",
      "42",
      "[1]",
      R"({"rule":"r"})",
      R"({"key":"k"})",
      R"({"rule":"","key":"k"})",
      R"({"rule":1,"key":"k"})",
      R"({"rule":"r","key":"k","cost":-1})",
      R"({"rule":"r","key":"k","cost":1.5})",
      R"({"rule":"r","key":"k","cost":4611686018427387905})",
      R"({"rule":"r","key":"k","extra":1})",
      R"({"rule":"r","key":"k","descriptors":{"ip":"1.2.3.4"}})",
      R"({"descriptors":[]})",
      R"({"descriptors":{"ip":"nope"}})",
      R"({"descriptors":{"ip":1}})",
      R"({"descriptors":{"cookie":"x"}})",
      R"({"descriptors":{"header:":"x"}})",
      R"({"descriptors":{"header:X-Key":"a","header:x-key":"b"}})",
      R"([{"rule":"r","key":"k"},{"rule":"r"}])",
      Batch(&RuleQuery, 1001),
  };
  for (const std::string& bad : refused) {
    std::string text = bad;
    const bool simd_ok = simd.Parse(text);
    const bool nlohmann_ok = nlohmann.Parse(text);
    if (simd_ok || nlohmann_ok) {
      std::fprintf(stderr, "%.60s: simdjson %s, nlohmann %s (both should refuse)\n", bad.c_str(),
                   simd_ok ? "accepts" : "refuses", nlohmann_ok ? "accepts" : "refuses");
      same = false;
    }
  }
  return same;
}

void Report(benchmark::State& state, uint64_t allocations, uint64_t bytes, size_t queries) {
  using benchmark::Counter;
  state.counters["allocs/body"] =
      Counter(static_cast<double>(allocations), Counter::kAvgIterations);
  state.counters["bytes/body"] = Counter(static_cast<double>(bytes), Counter::kAvgIterations);
  // Seconds per query, shown as e.g. "25.1ns".
  state.counters["per_query"] =
      Counter(static_cast<double>(queries), Counter::kIsIterationInvariantRate | Counter::kInvert);
}

void BM_Simdjson(benchmark::State& state, const Body& body) {
  CheckRequestParser parser;
  std::string text = body.text;
  if (!parser.Parse(text)) {  // also the warm-up: the parser and the padding grow here
    state.SkipWithError(parser.error().c_str());
    return;
  }
  const uint64_t allocations = g_allocations, bytes = g_allocated_bytes;
  for (auto _ : state) {
    const bool ok = parser.Parse(text);
    benchmark::DoNotOptimize(ok);
    benchmark::DoNotOptimize(parser.queries().data());
  }
  Report(state, g_allocations - allocations, g_allocated_bytes - bytes, body.queries);
}

void BM_Nlohmann(benchmark::State& state, const Body& body) {
  NlohmannCheckParser parser;
  const std::string text = body.text;
  if (!parser.Parse(text)) {  // the warm-up: the query vectors grow here
    state.SkipWithError(parser.error().c_str());
    return;
  }
  const uint64_t allocations = g_allocations, bytes = g_allocated_bytes;
  for (auto _ : state) {
    const bool ok = parser.Parse(text);
    benchmark::DoNotOptimize(ok);
    benchmark::DoNotOptimize(parser.queries().data());
  }
  Report(state, g_allocations - allocations, g_allocated_bytes - bytes, body.queries);
}

}  // namespace
}  // namespace sluice::api

int main(int argc, char** argv) {
  using namespace sluice::api;
  if (!SameContract()) return 1;
  static const std::vector<Body> bodies = Bodies();
  for (const Body& body : bodies) {  // each body's pair side by side
    benchmark::RegisterBenchmark(fmt::format("simdjson/{}", body.name).c_str(), BM_Simdjson,
                                 std::cref(body));
    benchmark::RegisterBenchmark(fmt::format("nlohmann/{}", body.name).c_str(), BM_Nlohmann,
                                 std::cref(body));
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
