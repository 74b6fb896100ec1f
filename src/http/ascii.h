// ASCII helpers for HTTP text: header names compare case-insensitively, and values
// carry optional white space (RFC 9110 5.5, 5.6.3) around them.
//
// Thread-safety: pure functions.
#ifndef SLUICE_HTTP_ASCII_H_
#define SLUICE_HTTP_ASCII_H_

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

namespace sluice::http {

inline char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

inline bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (AsciiLower(a[i]) != AsciiLower(b[i])) return false;
  }
  return true;
}

// Without the spaces and tabs at either end.
inline std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// `value` in decimal digits at the end of `out`.
inline void AppendDecimal(std::string& out, uint64_t value) {
  char digits[20];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), value);
  out.append(digits, static_cast<size_t>(end - digits));
}

}  // namespace sluice::http

#endif  // SLUICE_HTTP_ASCII_H_
