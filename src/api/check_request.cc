#include "api/check_request.h"

#include <fmt/format.h>
#include <simdjson.h>

#include "http/ascii.h"
#include "net/address.h"
#include "sluice/limiter.h"

namespace sluice::api {
namespace {

constexpr size_t kNoIndex = ~size_t{0};

std::string_view TypeName(simdjson::dom::element_type type) {
  using simdjson::dom::element_type;
  switch (type) {
    case element_type::ARRAY:
      return "an array";
    case element_type::OBJECT:
      return "an object";
    case element_type::INT64:
    case element_type::UINT64:
    case element_type::DOUBLE:
      return "a number";
    case element_type::STRING:
      return "a string";
    case element_type::BOOL:
      return "a boolean";
    case element_type::NULL_VALUE:
      return "null";
  }
  return "a value";
}

// Text from the body, quoted and cut short, for a message (the server escapes it).
std::string Shown(std::string_view text) {
  constexpr size_t kMax = 64;
  if (text.size() <= kMax) return fmt::format("\"{}\"", text);
  return fmt::format("\"{}...\"", text.substr(0, kMax));
}

}  // namespace

struct CheckRequestParser::Json {
  simdjson::dom::parser parser;

  bool ParseQuery(CheckRequestParser& out, simdjson::dom::element element, size_t index);
  bool ParseDescriptors(CheckRequestParser& out, simdjson::dom::object object, size_t index,
                        CheckQuery& query);
};

CheckRequestParser::CheckRequestParser() : json_(std::make_unique<Json>()) {}
CheckRequestParser::~CheckRequestParser() = default;

bool CheckRequestParser::Fail(size_t index, std::string message) {
  error_ = index == kNoIndex ? std::move(message) : fmt::format("query {}: {}", index, message);
  return false;
}

bool CheckRequestParser::Parse(std::string& body) {
  queries_.clear();
  descriptors_.clear();
  error_.clear();
  batch_ = false;
  // simdjson reads up to SIMDJSON_PADDING bytes past the end (never using them).
  if (body.capacity() < body.size() + simdjson::SIMDJSON_PADDING) {
    body.reserve(body.size() + simdjson::SIMDJSON_PADDING);
  }
  simdjson::dom::element root;
  if (const simdjson::error_code error =
          json_->parser.parse(body.data(), body.size(), /*realloc_if_needed=*/false).get(root);
      error != simdjson::SUCCESS) {
    return Fail(kNoIndex, fmt::format("malformed JSON: {}", simdjson::error_message(error)));
  }
  if (root.type() != simdjson::dom::element_type::ARRAY)
    return json_->ParseQuery(*this, root, kNoIndex);

  batch_ = true;
  simdjson::dom::array array;
  if (root.get_array().get(array) != simdjson::SUCCESS) return Fail(kNoIndex, "malformed JSON");
  const size_t size = array.size();
  if (size == 0) return Fail(kNoIndex, "an empty batch: expected at least one query");
  if (size > kMaxBatch) {
    return Fail(kNoIndex,
                fmt::format("a batch of {} queries; at most {} in one request", size, kMaxBatch));
  }
  size_t index = 0;
  for (const simdjson::dom::element element : array) {
    if (!json_->ParseQuery(*this, element, index++)) return false;
  }
  return true;
}

bool CheckRequestParser::Json::ParseQuery(CheckRequestParser& out, simdjson::dom::element element,
                                          size_t index) {
  simdjson::dom::object object;
  if (element.get_object().get(object) != simdjson::SUCCESS) {
    return out.Fail(index, fmt::format("expected an object with rule and key, or with "
                                       "descriptors; got {}",
                                       TypeName(element.type())));
  }
  CheckQuery query;
  bool has_rule = false, has_key = false, has_descriptors = false, has_cost = false;
  for (const simdjson::dom::key_value_pair field : object) {
    const std::string_view name = field.key;
    const simdjson::dom::element value = field.value;
    bool* seen = nullptr;
    if (name == "rule" || name == "key") {
      seen = name == "rule" ? &has_rule : &has_key;
      std::string_view text;
      if (value.get_string().get(text) != simdjson::SUCCESS) {
        return out.Fail(index,
                        fmt::format("{} must be a string, got {}", name, TypeName(value.type())));
      }
      if (text.empty()) return out.Fail(index, fmt::format("{} must not be empty", name));
      (name == "rule" ? query.rule : query.key) = text;
    } else if (name == "descriptors") {
      seen = &has_descriptors;
      simdjson::dom::object descriptors;
      if (value.get_object().get(descriptors) != simdjson::SUCCESS) {
        return out.Fail(index, fmt::format("descriptors must be an object of strings, got {}",
                                           TypeName(value.type())));
      }
      if (!ParseDescriptors(out, descriptors, index, query)) return false;
    } else if (name == "cost") {
      seen = &has_cost;
      uint64_t cost = 0;
      const bool whole = (value.type() == simdjson::dom::element_type::INT64 ||
                          value.type() == simdjson::dom::element_type::UINT64) &&
                         value.get_uint64().get(cost) == simdjson::SUCCESS;
      if (!whole || cost > kMaxQuantity) {
        return out.Fail(index, fmt::format("cost must be a whole number from 0 to {}, got {}",
                                           kMaxQuantity, simdjson::minify(value)));
      }
      query.cost = cost;
    } else {
      return out.Fail(index, fmt::format("unknown field {}; expected rule, key, descriptors "
                                         "or cost",
                                         Shown(name)));
    }
    if (*seen) return out.Fail(index, fmt::format("field {} given twice", name));
    *seen = true;
  }
  if (has_rule != has_key) {
    return out.Fail(index, has_rule ? "rule needs key: the client key to check it for"
                                    : "key needs rule: the rule to check it against");
  }
  if (has_rule && has_descriptors) {
    return out.Fail(index, "either rule and key, or descriptors, not both");
  }
  if (!has_rule && !has_descriptors) {
    return out.Fail(index, "expected rule and key, or descriptors");
  }
  query.by_rule = has_rule;
  out.queries_.push_back(query);
  return true;
}

bool CheckRequestParser::Json::ParseDescriptors(CheckRequestParser& out,
                                                simdjson::dom::object object, size_t index,
                                                CheckQuery& query) {
  query.first_descriptor = out.descriptors_.size();
  for (const simdjson::dom::key_value_pair field : object) {
    const std::string_view name = field.key;
    std::string error;
    // The quoted name is made only for the message: made for every descriptor, it
    // would be an allocation each (measured: 45% of a descriptor query's parse).
    const std::optional<config::KeyPartText> part = config::ParseKeyPartText(name, {}, &error);
    if (!part) {
      config::ParseKeyPartText(name, Shown(name), &error);
      return out.Fail(index, "descriptors: " + error);
    }
    std::string_view value;
    if (field.value.get_string().get(value) != simdjson::SUCCESS) {
      return out.Fail(index, fmt::format("descriptor {} must be a string, got {}", Shown(name),
                                         TypeName(field.value.type())));
    }
    if (part->kind == config::KeyPartKind::kIp && !net::IpAddress::Parse(value)) {
      return out.Fail(index, fmt::format("descriptor ip: {} is not an IP address", Shown(value)));
    }
    for (size_t i = query.first_descriptor; i < out.descriptors_.size(); ++i) {
      const Descriptor& other = out.descriptors_[i];
      const bool same_name = other.kind == config::KeyPartKind::kHeader
                                 ? http::EqualsIgnoreCase(other.name, part->name)
                                 : other.name == part->name;
      if (other.kind == part->kind && same_name) {
        return out.Fail(index, fmt::format("descriptor {} given twice", Shown(name)));
      }
    }
    out.descriptors_.push_back(Descriptor{part->kind, part->name, value});
  }
  query.descriptor_count = out.descriptors_.size() - query.first_descriptor;
  return true;
}

}  // namespace sluice::api
