// The body of POST /v1/check: one query, or a batch (a JSON array of queries, answered
// in order). A query names a rule and a client key,
//   {"rule": "api-per-key", "key": "k-123", "cost": 1}
// or describes the request it stands for, and every rule that matches it is evaluated:
//   {"descriptors": {"ip": "203.0.113.7", "header:x-api-key": "k-123", "path": "/api/x"},
//    "cost": 1}
// Descriptor names are the key parts of the config (ip, authorization, path, method,
// host, header:NAME, query:NAME). `cost` (default 1, 0 to look without taking) is how
// much of each rule's quota the query takes.
//
// Parsed with simdjson's DOM parser: the queries view the parser's own buffers, so a
// parse allocates nothing once the parser has grown to the largest body seen. Any
// problem (malformed JSON, a wrong type, an unknown field or descriptor, a missing or
// conflicting field) fails the whole body with a message naming it, and the position
// in a batch.
//
// Thread-safety: one parser per thread.
#ifndef SLUICE_API_CHECK_REQUEST_H_
#define SLUICE_API_CHECK_REQUEST_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace sluice::api {

struct Descriptor {
  config::KeyPartKind kind = config::KeyPartKind::kIp;
  std::string_view name;  // kHeader: the field name as written; kQuery: the parameter
  std::string_view value;
};

struct CheckQuery {
  bool by_rule = false;  // the {"rule", "key"} form
  std::string_view rule;
  std::string_view key;
  // The {"descriptors"} form: CheckRequestParser::descriptors(query).
  size_t first_descriptor = 0;
  size_t descriptor_count = 0;
  uint64_t cost = 1;
};

class CheckRequestParser {
 public:
  // Larger batches are refused: a caller with more splits them, and one request
  // cannot hold a worker for long.
  static constexpr size_t kMaxBatch = 1000;

  CheckRequestParser();
  ~CheckRequestParser();
  CheckRequestParser(const CheckRequestParser&) = delete;
  CheckRequestParser& operator=(const CheckRequestParser&) = delete;

  // Parses `body`, growing its capacity for the padding simdjson reads past the end
  // (so keep one buffer per connection or worker and it stops growing). On false,
  // error() says why. The queries stay valid until the next Parse.
  bool Parse(std::string& body);

  const std::string& error() const { return error_; }
  // The body was an array: answer with an array.
  bool batch() const { return batch_; }
  std::span<const CheckQuery> queries() const { return queries_; }
  std::span<const Descriptor> descriptors(const CheckQuery& query) const {
    return std::span<const Descriptor>(descriptors_)
        .subspan(query.first_descriptor, query.descriptor_count);
  }

 private:
  struct Json;
  bool Fail(size_t index, std::string message);

  std::unique_ptr<Json> json_;
  std::vector<CheckQuery> queries_;
  std::vector<Descriptor> descriptors_;
  std::string error_;
  bool batch_ = false;
};

}  // namespace sluice::api

#endif  // SLUICE_API_CHECK_REQUEST_H_
