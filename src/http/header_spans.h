// The header fields of one HTTP/1.x message head, collected from http_parser's
// on_header_field / on_header_value callbacks as offsets into the connection's read
// buffer, so they survive the buffer being compacted while the head is still arriving.
// A name or a value may come in several callbacks when the head arrives in pieces; they
// are joined here. Shared by ServerConnection (requests) and UpstreamConnection
// (responses); fixed capacity, no allocation, everything inline (the server's hot path).
#ifndef SLUICE_HTTP_HEADER_SPANS_H_
#define SLUICE_HTTP_HEADER_SPANS_H_

#include <array>
#include <cstddef>
#include <string_view>

namespace sluice::http {

struct Header {
  std::string_view name;  // as sent
  std::string_view value;
};

// Bytes [offset, offset + length) of a read buffer.
struct Span {
  size_t offset = 0;
  size_t length = 0;
};

template <size_t kCapacity>
class HeaderSpans {
 public:
  // From on_header_field: bytes [offset, offset + length) of a field name. False when
  // it would start field kCapacity + 1 (too_many() then holds); the caller stops parsing.
  bool AddName(size_t offset, size_t length) {
    if (last_was_value_ || count_ == 0) {
      if (count_ == kCapacity) {
        too_many_ = true;
        return false;
      }
      fields_[count_++] = {{offset, length}, {offset + length, 0}};
      last_was_value_ = false;
      return true;
    }
    Span& name = fields_[count_ - 1].name;
    name.length = offset + length - name.offset;
    return true;
  }

  // From on_header_value: bytes [offset, offset + length) of the last field's value.
  // REQUIRES: AddName came first (http_parser guarantees it).
  void AddValue(size_t offset, size_t length) {
    Span& value = fields_[count_ - 1].value;
    if (!last_was_value_) value.offset = offset;
    value.length = offset + length - value.offset;
    last_was_value_ = true;
  }

  // Forgets the fields, for the next message head.
  void Clear() {
    count_ = 0;
    last_was_value_ = false;
    too_many_ = false;
  }

  // The read buffer dropped its first `delta` bytes (all before every field).
  void Shift(size_t delta) {
    for (size_t i = 0; i < count_; ++i) {
      fields_[i].name.offset -= delta;
      fields_[i].value.offset -= delta;
    }
  }

  // Writes the fields as views into `base` (the read buffer) to out[0, size()).
  void Views(const char* base, Header* out) const {
    for (size_t i = 0; i < count_; ++i) {
      out[i] = {{base + fields_[i].name.offset, fields_[i].name.length},
                {base + fields_[i].value.offset, fields_[i].value.length}};
    }
  }

  size_t size() const { return count_; }
  bool too_many() const { return too_many_; }

 private:
  struct Field {
    Span name;
    Span value;
  };
  std::array<Field, kCapacity> fields_;
  size_t count_ = 0;
  bool last_was_value_ = false;
  bool too_many_ = false;
};

}  // namespace sluice::http

#endif  // SLUICE_HTTP_HEADER_SPANS_H_
