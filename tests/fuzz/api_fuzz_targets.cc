// The decision APIs' request parser: any bytes as a POST /v1/check body.
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "api/check_request.h"
#include "api/decision_request.h"
#include "config/config.h"
#include "fuzz/fuzz_targets.h"
#include "fuzz/fuzz_util.h"
#include "gate/gate.h"
#include "http/server_connection.h"
#include "net/address.h"
#include "sluice/limiter.h"

namespace sluice::fuzz {
namespace {

using config::KeyPartKind;

bool IsHeaderNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool SameName(const api::Descriptor& a, const api::Descriptor& b) {
  if (a.kind != b.kind) return false;
  return a.kind == KeyPartKind::kHeader ? EqualsIgnoreCase(a.name, b.name) : a.name == b.name;
}

// What the parser read, as text, to compare two parses of one body.
std::string Summary(const api::CheckRequestParser& parser, bool ok) {
  if (!ok) return "error " + parser.error();
  std::string s = parser.batch() ? "batch" : "single";
  for (const api::CheckQuery& q : parser.queries()) {
    s += q.by_rule ? "|rule " : "|descriptors ";
    s += std::to_string(q.cost);
    s += ' ';
    s += std::to_string(q.rule.size()) + ":" + std::string(q.rule);
    s += std::to_string(q.key.size()) + ":" + std::string(q.key);
    for (const api::Descriptor& d : parser.descriptors(q)) {
      s += " " + std::to_string(static_cast<int>(d.kind));
      s += std::to_string(d.name.size()) + ":" + std::string(d.name);
      s += std::to_string(d.value.size()) + ":" + std::string(d.value);
    }
  }
  return s;
}

void CheckDescriptors(std::span<const api::Descriptor> descriptors) {
  for (size_t i = 0; i < descriptors.size(); ++i) {
    const api::Descriptor& d = descriptors[i];
    switch (d.kind) {
      case KeyPartKind::kIp:
        Require(d.name.empty(), "ip has no name");
        Require(net::IpAddress::Parse(d.value).has_value(), "an ip descriptor is an address");
        break;
      case KeyPartKind::kAuthorization:
      case KeyPartKind::kPath:
      case KeyPartKind::kMethod:
      case KeyPartKind::kHost:
        Require(d.name.empty(), "plain descriptors have no name");
        break;
      case KeyPartKind::kHeader:
        Require(!d.name.empty(), "a header descriptor names its field");
        for (const char c : d.name) Require(IsHeaderNameChar(c), "a header name is a token");
        break;
      case KeyPartKind::kQuery:
        Require(!d.name.empty(), "a query descriptor names its parameter");
        Require(d.name.find_first_of("&=# \t") == std::string_view::npos,
                "a query name has no & = # or white space");
        break;
      default:
        Require(false, "a known descriptor kind");
    }
    for (size_t j = 0; j < i; ++j) {
      Require(!SameName(d, descriptors[j]), "no descriptor twice in one query");
    }
  }
}

// The request built from the descriptors carries each of them where the gate reads it.
void CheckBuiltRequest(api::DecisionRequestBuilder& builder,
                       std::span<const api::Descriptor> descriptors) {
  const http::Request& r = builder.FromDescriptors(descriptors);
  const api::Descriptor* ip = nullptr;
  size_t fields = 0;
  std::string scratch;
  for (const api::Descriptor& d : descriptors) {
    switch (d.kind) {
      case KeyPartKind::kIp:
        ip = &d;
        break;
      case KeyPartKind::kMethod:
        Require(r.method == d.value, "the method is the descriptor's");
        break;
      case KeyPartKind::kPath:
        Require(r.target == d.value, "the target is the path as given");
        Require(r.path == http::CanonicalPath(d.value, scratch), "the path is canonical");
        break;
      case KeyPartKind::kHost:
        Require(r.host == http::HostWithoutPort(d.value), "the host is without port");
        break;
      case KeyPartKind::kAuthorization: {
        ++fields;
        const std::optional<std::string_view> value = r.FindHeader("authorization");
        Require(value.has_value(), "authorization is a field");
        break;
      }
      case KeyPartKind::kHeader: {
        ++fields;
        const std::optional<std::string_view> value = r.FindHeader(d.name);
        Require(value.has_value(), "a header descriptor is a field");
        // Another descriptor can name the same field only as authorization.
        if (!EqualsIgnoreCase(d.name, "authorization")) {
          Require(*value == d.value, "a header field has the descriptor's value");
        }
        break;
      }
      case KeyPartKind::kQuery: {
        std::string escaped;
        for (const char c : d.value) escaped += c == '&' ? std::string("%26") : std::string(1, c);
        const std::optional<std::string_view> value = gate::QueryParam(r.query, d.name);
        Require(value.has_value() && *value == escaped, "a query parameter reads back");
        break;
      }
    }
  }
  Require(r.headers.size() == fields, "one field per header or authorization descriptor");
  Require((r.peer != nullptr) == (ip != nullptr), "a peer exactly when ip is given");
  if (ip != nullptr) Require(*r.peer == *net::IpAddress::Parse(ip->value), "the peer is the ip");
}

}  // namespace

int CheckRequestOneInput(const uint8_t* data, size_t size) {
  // One parser and builder for every input, as a worker keeps them, and a fresh parser
  // that must read the body the same way.
  static api::CheckRequestParser& parser = *new api::CheckRequestParser();
  static api::DecisionRequestBuilder& builder = *new api::DecisionRequestBuilder();
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::string body = text;
  const bool ok = parser.Parse(body);
  Require(body == text, "Parse leaves the body unchanged");

  if (!ok) {
    Require(!parser.error().empty(), "a refusal says why");
  } else {
    Require(parser.error().empty(), "no error after a success");
    const std::span<const api::CheckQuery> queries = parser.queries();
    Require(!queries.empty(), "a body has at least one query");
    Require(queries.size() <= api::CheckRequestParser::kMaxBatch, "a batch is at most kMaxBatch");
    Require(parser.batch() || queries.size() == 1, "a single query is one query");
    size_t next_descriptor = 0;
    for (const api::CheckQuery& q : queries) {
      Require(q.cost <= kMaxQuantity, "cost <= kMaxQuantity");
      if (q.by_rule) {
        Require(!q.rule.empty() && !q.key.empty(), "rule and key are not empty");
        Require(q.descriptor_count == 0, "a rule query has no descriptors");
        continue;
      }
      Require(q.rule.empty() && q.key.empty(), "a descriptors query has no rule or key");
      // The queries' descriptors lie back to back, in order, so each span is in bounds.
      Require(q.first_descriptor == next_descriptor, "descriptor spans are back to back");
      next_descriptor += q.descriptor_count;
      const std::span<const api::Descriptor> descriptors = parser.descriptors(q);
      Require(descriptors.size() == q.descriptor_count, "the span has the query's descriptors");
      CheckDescriptors(descriptors);
      CheckBuiltRequest(builder, descriptors);
    }
  }

  api::CheckRequestParser fresh;
  std::string again = text;
  const bool fresh_ok = fresh.Parse(again);
  Require(fresh_ok == ok, "a reused parser accepts what a fresh one does");
  Require(Summary(fresh, fresh_ok) == Summary(parser, ok), "a reused parser reads the same");
  return 0;
}

}  // namespace sluice::fuzz
