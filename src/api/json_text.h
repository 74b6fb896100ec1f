// JSON text for answers and log lines, written without a library: the shapes are
// fixed and small, and appending to a reused string allocates nothing once warm.
#ifndef SLUICE_API_JSON_TEXT_H_
#define SLUICE_API_JSON_TEXT_H_

#include <string>
#include <string_view>

namespace sluice::api {

// A JSON string: quotes, backslashes and control characters escaped, and bytes above
// 0x7e written as \u00XX, so the text is valid JSON (and ASCII) whatever a client sent.
void AppendJsonString(std::string& out, std::string_view s);

}  // namespace sluice::api

#endif  // SLUICE_API_JSON_TEXT_H_
