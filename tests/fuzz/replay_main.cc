// Runs the fuzz targets on a fixed stream of pseudo-random inputs, so every `make test`
// exercises them under ASan/UBSan without needing clang or a corpus. Each target has a
// generator that makes inputs shaped like what the target parses (HTTP requests, YAML
// from the examples, addresses, /v1/check bodies) and then damages some of them. Before
// that, every file of tests/fuzz/crashes/ runs through its target.
//
// usage: fuzz_replay [inputs per target] [target name] [files...]
//   The count is scaled per target (the HTTP connection and config targets cost more
//   per input, so they get fewer). With a target name, only that target runs; with
//   files too, each file is one input for it (a crash from `make fuzz`; for the HTTP
//   target, SLUICE_FUZZ_TRACE=1 prints the session step by step).
//   SLUICE_FUZZ_WRITE_INPUTS=DIR also writes each generated input into DIR.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_targets.h"

namespace {

using Bytes = std::vector<uint8_t>;
using Rng = std::mt19937_64;

template <typename T, size_t N>
const T& Pick(Rng& rng, const T (&choices)[N]) {
  return choices[rng() % N];
}

bool OneIn(Rng& rng, int n) { return rng() % n == 0; }

std::string RandomBytes(Rng& rng, size_t max) {
  std::string s(rng() % (max + 1), '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// Flips, inserts, deletes, duplicates or truncates, `count` times.
void Damage(Rng& rng, std::string& s, int count) {
  for (int i = 0; i < count; ++i) {
    const size_t at = s.empty() ? 0 : rng() % s.size();
    switch (rng() % 6) {
      case 0:
        if (!s.empty()) s[at] = static_cast<char>(rng());
        break;
      case 1:
        s.insert(s.begin() + at, static_cast<char>(rng()));
        break;
      case 2:
        s.erase(at, rng() % 8);
        break;
      case 3:
        s.insert(at, s.substr(at, rng() % 32));
        break;
      case 4:
        s.resize(at);
        break;
      case 5:
        if (!s.empty()) s[at] = Pick(rng, {'\r', '\n', ':', ' ', '0', '%', '/', '.', '\0'});
        break;
    }
  }
}

Bytes ToBytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

// --- HTTP -------------------------------------------------------------------------------

// One request, valid most of the time: a session stops at the first request the server
// refuses, so a bad one (one time in eight) is best near the end.
std::string HttpRequest(Rng& rng) {
  const bool bad = OneIn(rng, 8);
  static const char* const kMethods[] = {"GET", "GET",    "HEAD",    "POST",
                                         "PUT", "DELETE", "OPTIONS", "PATCH"};
  static const char* const kTargets[] = {"/",
                                         "/api/items?x=1&y=2",
                                         "/%61pi/../x/./y",
                                         "//a//b/",
                                         "http://example.com/api/x",
                                         "/a%2Fb%zz%4",
                                         "/?",
                                         "/x?%00"};
  const std::string eol = OneIn(rng, 10) ? "\n" : "\r\n";
  std::string method = Pick(rng, kMethods);
  std::string target = Pick(rng, kTargets);
  std::string version = OneIn(rng, 4) ? "HTTP/1.0" : "HTTP/1.1";
  if (OneIn(rng, 12)) target = "/" + std::string(900 + rng() % 200, 'p');  // near 1024
  if (method == "OPTIONS" && OneIn(rng, 2)) target = "*";
  if (OneIn(rng, 30)) {
    method = "CONNECT";
    target = "example.com:443";
  }
  if (bad) {
    switch (rng() % 5) {
      case 0:
        method = Pick(rng, {"get", "G ET", "BREW"});
        break;
      case 1:
        version = Pick(rng, {"HTTP/2.0", "HTTP/1.1x", "HTTP/0.9", "HTTP/1"});
        break;
      case 2:
        target = Pick(rng, {"host:443", "/a b", ""});
        break;
      default:
        break;  // a bad header field, below
    }
  }
  std::string r = method + " " + target + " " + version + eol;
  if (!OneIn(rng, 40)) r += "Host: example.com" + eol;
  std::string body;
  switch (rng() % 6) {  // framing
    case 0:
    case 1: {
      static const size_t kLengths[] = {0, 5, 10, 100, 4096, 4097, 100000};
      const size_t length = Pick(rng, kLengths);
      r += "Content-Length: " + std::to_string(length) + eol;
      body = std::string(std::min<size_t>(length, 5000), 'B');
      if (OneIn(rng, 6)) body.resize(body.size() / 2);
      break;
    }
    case 2:
      r += "Transfer-Encoding: chunked" + eol;
      body = "5\r\nhello\r\n";
      if (OneIn(rng, 3)) body += "1000\r\n" + std::string(4096, 'c') + "\r\n";
      if (OneIn(rng, 8)) body += "ffffffffffffffff\r\n";
      body += "0\r\n\r\n";
      break;
    default:
      break;
  }
  const int headers = static_cast<int>(rng() % 4);
  for (int h = 0; h < headers; ++h) {
    switch (rng() % 8) {
      case 0:
        r += (OneIn(rng, 2) ? "Expect: 100-continue" : "expect: 100-CONTINUE") + eol;
        break;
      case 1:
        r += std::string("Connection: ") + Pick(rng, {"close", "keep-alive", "keep-alive"}) + eol;
        break;
      case 2:
        r += std::string("X-Request-Id: ") +
             Pick(rng, {"abc-123", "has space", "a\tb", "x/y+z=", "\"quoted\"", ""}) + eol;
        break;
      case 3:
        r += "X-Request-Id: " + std::string(100 + rng() % 60, 'i') + eol;
        break;
      case 4:
        r += "X-Forwarded-For: 203.0.113.9, 10.0.0.1" + eol;
        break;
      case 5:
        r += "X-Big: " + std::string(OneIn(rng, 2) ? 300 : 900 + rng() % 200, 'v') + eol;
        break;
      case 6:
        for (int i = 0, n = OneIn(rng, 2) ? 20 : 99 + rng() % 4; i < n; ++i) r += "A: b" + eol;
        break;
      case 7:
        r += "X-Empty:" + eol;
        break;
    }
  }
  if (bad && rng() % 5 >= 3) {
    r += Pick(rng,
              {"Bad Header: x", "X-Folded: one\r\n two", "Content-Length: 5\r\nContent-Length: 6",
               "Connection: Upgrade\r\nUpgrade: websocket", "Host: second", "Content-Length: -1",
               "Transfer-Encoding: chunked\r\nContent-Length: 3"}) +
         eol;
  }
  r += eol + body;
  return r;
}

Bytes GenerateHttp(Rng& rng) {
  std::string payload;
  const int requests = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < requests; ++i) payload += HttpRequest(rng);
  if (OneIn(rng, 5)) Damage(rng, payload, 1 + static_cast<int>(rng() % 3));
  if (OneIn(rng, 20)) payload = RandomBytes(rng, 300);
  std::string controls(OneIn(rng, 4) ? 0 : rng() % (OneIn(rng, 8) ? 256 : 24), '\0');
  for (char& c : controls) {
    c = static_cast<char>(rng());
    if (!OneIn(rng, 4)) c &= ~0x70;  // mostly small clock jumps
    if (!OneIn(rng, 4)) c &= ~0x80;  // mostly read every step
  }
  std::string input;
  input += static_cast<char>(rng());
  input += static_cast<char>(controls.size());
  return ToBytes(input + payload + controls);
}

// One response head as upstreams write them, often damaged.
std::string HttpResponseHead(Rng& rng) {
  static const char* const kStatusLines[] = {"HTTP/1.1 200 OK",       "HTTP/1.1 404 Not Found",
                                             "HTTP/1.0 200 OK",       "HTTP/1.1 204 No Content",
                                             "HTTP/1.1 100 Continue", "HTTP/1.1 503 Busy Now",
                                             "HTTP/1.1 200 ",         "HTTP/1.1 599 x"};
  static const char* const kFields[] = {"Server: nginx/1.22.1",
                                        "Date: Sun, 22 Nov 2026 10:00:00 GMT",
                                        "Content-Type: text/plain",
                                        "Content-Length: 2",
                                        "Content-Length: 0",
                                        "content-length:  12345 ",
                                        "Connection: keep-alive",
                                        "Connection: close",
                                        "Connection: Upgrade",
                                        "Transfer-Encoding: chunked",
                                        "X-Empty:",
                                        "X-Tab:\tv\tw",
                                        "Set-Cookie: a=b; Path=/"};
  const std::string eol = OneIn(rng, 10) ? "\n" : "\r\n";
  std::string r = std::string(Pick(rng, kStatusLines)) + eol;
  const int fields = static_cast<int>(rng() % 6);
  for (int i = 0; i < fields; ++i) r += std::string(Pick(rng, kFields)) + eol;
  return r + eol + "ok";
}

// Byte 0 picks request or response (bit 0) and the size limit; then one head, damaged
// half of the time.
Bytes GenerateHead(Rng& rng) {
  const uint8_t control = static_cast<uint8_t>(rng());
  std::string text = (control & 1) != 0 ? HttpResponseHead(rng) : HttpRequest(rng);
  if (OneIn(rng, 2)) Damage(rng, text, 1 + static_cast<int>(rng() % 3));
  return ToBytes(std::string(1, static_cast<char>(control)) + text);
}

Bytes GeneratePath(Rng& rng) {
  static const std::string_view kAlphabet = "//..%%2eE46153aAfF?:x~-_";
  std::string path = OneIn(rng, 5) ? "" : "/";
  if (OneIn(rng, 10)) path = Pick(rng, {"http://h", "https://h/", "a://", "x:/"});
  const size_t length = rng() % 40;
  for (size_t i = 0; i < length; ++i) {
    path += OneIn(rng, 30) ? static_cast<char>(rng()) : kAlphabet[rng() % kAlphabet.size()];
  }
  return ToBytes(path);
}

// --- Config -----------------------------------------------------------------------------

std::vector<std::string>& ConfigSeeds() {
  static std::vector<std::string> seeds;
  return seeds;
}

void LoadConfigSeeds() {
  for (const char* name : {"examples/quickstart.yaml", "examples/full.yaml"}) {
    const std::string path = std::string(SLUICE_SOURCE_DIR) + "/" + name;
    std::ifstream file(path, std::ios::binary);
    if (!file) {
      std::fprintf(stderr, "fuzz_replay: cannot read %s\n", path.c_str());
      std::exit(2);
    }
    ConfigSeeds().emplace_back(std::istreambuf_iterator<char>(file),
                               std::istreambuf_iterator<char>());
  }
  ConfigSeeds().push_back("listen: \":8080\"\nrules: []\n");
  ConfigSeeds().push_back("rules:\n  - {name: a, limit: 1, period: 1s}\n");
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

Bytes GenerateConfig(Rng& rng) {
  const std::vector<std::string>& seeds = ConfigSeeds();
  std::vector<std::string> lines = Lines(seeds[rng() % seeds.size()]);
  static const char* const kValues[] = {"0",
                                        "-1",
                                        "1e309",
                                        "18446744073709551616",
                                        "9223372036854775807",
                                        "0s",
                                        "1x",
                                        "1.5s",
                                        "-5m",
                                        "~",
                                        "null",
                                        "[]",
                                        "{}",
                                        "\"\"",
                                        "yes",
                                        "*anchor",
                                        "&a x",
                                        "!!binary x",
                                        "[a, b",
                                        "{a: }",
                                        "\"\\0\"",
                                        "10.0.0.0/33",
                                        "[::1]:99999",
                                        "'"};
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits && !lines.empty(); ++e) {
    const size_t at = rng() % lines.size();
    std::string& line = lines[at];
    switch (rng() % 8) {
      case 0:
        lines.erase(lines.begin() + at);
        break;
      case 1:
        lines.insert(lines.begin() + at, line);
        break;
      case 2:
        std::swap(line, lines[rng() % lines.size()]);
        break;
      case 3:
        line = OneIn(rng, 2) ? "  " + line : line.substr(std::min<size_t>(line.size(), 2));
        break;
      case 4:
      case 5: {  // a value replaced
        const size_t colon = line.find(": ");
        if (colon != std::string::npos) line = line.substr(0, colon + 2) + Pick(rng, kValues);
        break;
      }
      case 6:
        line.insert(line.begin() + (line.empty() ? 0 : rng() % line.size()),
                    Pick(rng, {':', '-',  '[', ']', '{', '}', '&', '*', '!', '|',
                               '>', '\'', '"', '%', '@', '`', '#', ',', '?', '\t'}));
        break;
      case 7:
        lines.resize(at);
        break;
    }
  }
  std::string text;
  for (const std::string& line : lines) text += line + "\n";
  if (OneIn(rng, 10)) Damage(rng, text, 1 + static_cast<int>(rng() % 4));
  return ToBytes(text);
}

// --- Addresses --------------------------------------------------------------------------

std::string AddressText(Rng& rng) {
  static const char* const kPieces[] = {"1.2.3.4",
                                        "10.0.0.1",
                                        "192.168.1.1",
                                        "256.1.1.1",
                                        "1.2.3",
                                        "01.2.3.4",
                                        "::1",
                                        "2001:db8::1",
                                        "::ffff:10.0.0.1",
                                        "fd00::5",
                                        "fe80::1%eth0",
                                        "[::1]:80",
                                        "[::1]",
                                        "1.2.3.4:8080",
                                        ":8080",
                                        "*:80",
                                        "localhost:1",
                                        "10.0.0.0/8",
                                        "10.1.0.0/8",
                                        "::/0",
                                        "0.0.0.0/0",
                                        "1.2.3.4/33",
                                        "2001:db8::/129",
                                        "1.2.3.4/",
                                        "::ffff:1.2.3.4/104",
                                        "1:2:3:4:5:6:7:8",
                                        "1::2::3",
                                        "[fd00::1]:443",
                                        "unknown",
                                        "",
                                        " 10.0.0.2 ",
                                        "198.51.100.7",
                                        "1.2.3.4:99999"};
  std::string s = Pick(rng, kPieces);
  if (OneIn(rng, 4)) s += std::string(Pick(rng, {", ", ",", " ,", ",,"})) + Pick(rng, kPieces);
  if (OneIn(rng, 6)) Damage(rng, s, 1);
  return s;
}

Bytes GenerateAddress(Rng& rng) {
  std::string text = AddressText(rng);
  const int lines = static_cast<int>(rng() % 4);
  for (int i = 0; i < lines; ++i) {
    text += '\n';
    text += Pick(rng, {"", "", "X-Forwarded-For: ", "x-forwarded-for: ", "X-Real-IP: "});
    text += AddressText(rng);
  }
  return ToBytes(text);
}

// --- Decision API ---------------------------------------------------------------------

// `text` as a JSON string: control characters escaped as they must be, and now and then
// a printable one too (the parser must decode "\u0061" as "a", also in names).
std::string JsonString(Rng& rng, std::string_view text) {
  static const char kHex[] = "0123456789abcdef";
  std::string s = "\"";
  for (const char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      s += '\\';
      s += c;
    } else if (u < 0x20 || (u < 0x7f && OneIn(rng, 12))) {
      s += "\\u00";
      s += kHex[u >> 4];
      s += kHex[u & 0xf];
    } else {
      s += c;
    }
  }
  return s + "\"";
}

// One query of either form. A `valid` one has each field and descriptor once, with
// values that pass; any other may be of both forms or neither, with any values.
std::string CheckQueryText(Rng& rng, bool valid) {
  static const std::string_view kRules[] = {"api-per-key", "per-ip", "a\"b", "r\xc3\xa9", ""};
  static const std::string_view kKeys[] = {"k-123", "premium-123", "x\ny", "\xf0\x9f\x98\x80", ""};
  // The first five are accepted.
  static const char* const kCosts[] = {"0",
                                       "1",
                                       "2",
                                       "4611686018427387904",
                                       "-0",
                                       "-1",
                                       "1.5",
                                       "1e3",
                                       "4611686018427387905",
                                       "\"1\"",
                                       "null",
                                       "18446744073709551616"};
  // The first nine are accepted, once each (header names case-insensitively).
  static const std::string_view kNames[] = {"ip",
                                            "authorization",
                                            "path",
                                            "method",
                                            "host",
                                            "header:x-a",
                                            "header:Authorization",
                                            "query:api_key",
                                            "query:page",
                                            "header:X-A",
                                            "header:",
                                            "header:a b",
                                            "query:",
                                            "query:a=b",
                                            "user",
                                            "IP",
                                            "rule"};
  static const std::string_view kAddresses[] = {"203.0.113.7", "2001:db8::1", "::ffff:10.0.0.1"};
  static const std::string_view kValues[] = {
      "/api/x",         "/a/../b",  "/%2e%2e/x", "GET",
      "Bearer t",       "Basic",    "",          "a&b=c",
      "k-123",          "%26",      "\x01",      std::string_view("v\0w", 3),
      "h.example:8080", "[::1]:80", "256.1.1.1", "203.0.113.7",
      "\xc3\xa9"};
  const size_t good_names = 9, good_costs = 5;
  std::vector<std::string> fields;
  const int form = static_cast<int>(rng() % 8);
  const bool by_rule = valid ? form < 3 : (form < 3 || form == 7);  // 7: both forms
  if (by_rule) {
    const size_t n = valid ? std::size(kRules) - 1 : std::size(kRules);
    if (valid || !OneIn(rng, 12)) {
      fields.push_back("\"rule\":" + JsonString(rng, kRules[rng() % n]));
    }
    if (valid || !OneIn(rng, 12)) {
      fields.push_back("\"key\":" + JsonString(rng, kKeys[rng() % n]));
    }
  }
  if (valid ? !by_rule : form >= 3) {
    std::string d = "{";
    std::vector<size_t> names(valid ? good_names : std::size(kNames));
    for (size_t i = 0; i < names.size(); ++i) names[i] = valid ? i : rng() % std::size(kNames);
    std::shuffle(names.begin(), names.end(), rng);
    names.resize(rng() % (valid ? good_names + 1 : 6));
    for (size_t i = 0; i < names.size(); ++i) {
      if (i > 0) d += ',';
      const std::string_view name = kNames[names[i]];
      d += JsonString(rng, name) + ":";
      if (!valid && OneIn(rng, 15)) {
        d += Pick(rng, {"1", "null", "[]", "{}"});
      } else if (name == "ip" && (valid || !OneIn(rng, 4))) {
        d += JsonString(rng, Pick(rng, kAddresses));
      } else {
        d += JsonString(rng, Pick(rng, kValues));
      }
    }
    fields.push_back("\"descriptors\":" + d + "}");
  }
  if (OneIn(rng, 2)) {
    fields.push_back(std::string("\"cost\":") +
                     kCosts[rng() % (valid ? good_costs : std::size(kCosts))]);
  }
  if (!valid && OneIn(rng, 20)) {
    fields.push_back(std::string(Pick(rng, {"\"x\"", "\"rule\"", "\"cost\""})) + ":1");
  }
  std::shuffle(fields.begin(), fields.end(), rng);
  std::string query = "{";
  for (size_t i = 0; i < fields.size(); ++i) query += (i > 0 ? "," : "") + fields[i];
  return query + "}";
}

// A /v1/check body: one query, or a batch (rarely one around kMaxBatch); most bodies
// are valid, a third have some invalid queries, and some are damaged.
Bytes GenerateCheck(Rng& rng) {
  const bool all_valid = !OneIn(rng, 3);
  std::string body;
  if (OneIn(rng, 3)) {
    body = CheckQueryText(rng, all_valid);
  } else {
    size_t n = rng() % 5;
    if (OneIn(rng, 200)) n = 999 + rng() % 3;
    body = "[";
    for (size_t i = 0; i < n; ++i) {
      body += (i > 0 ? "," : "") + CheckQueryText(rng, all_valid || !OneIn(rng, 3));
    }
    body += "]";
  }
  if (OneIn(rng, 6)) Damage(rng, body, 1 + static_cast<int>(rng() % 3));
  if (OneIn(rng, 30)) body = RandomBytes(rng, 200);
  return ToBytes(body);
}

// --- The existing targets' inputs -------------------------------------------------------

Bytes GenerateAlgorithms(Rng& rng) {
  Bytes buffer(rng() % 1024);
  for (uint8_t& b : buffer) b = static_cast<uint8_t>(rng());
  return buffer;
}

// Durations: mostly text that looks like one, sometimes noise.
Bytes GenerateDuration(Rng& rng) {
  static const std::string kAlphabet = "0123456789nsumhd -+.x";
  std::string text;
  const size_t len = rng() % 24;
  for (size_t k = 0; k < len; ++k) text += kAlphabet[rng() % kAlphabet.size()];
  return ToBytes(text);
}

// A client session of Envoy's rate limit API (real HTTP/2 from nghttp2's client),
// sometimes damaged, sometimes noise; the flags byte in front (grpc_fuzz_targets.cc)
// never adds a second preface to a session that has its own.
Bytes GenerateGrpc(Rng& rng) {
  std::string session = sluice::fuzz::GrpcSessionSeed(rng());
  auto flags = static_cast<uint8_t>(rng() & 0xFE);
  if (OneIn(rng, 3)) Damage(rng, session, 1 + static_cast<int>(rng() % 4));
  if (OneIn(rng, 10)) {
    session = RandomBytes(rng, 300);
    flags |= 1;
  }
  return ToBytes(std::string(1, static_cast<char>(flags)) + session);
}

struct Generator {
  std::string_view target;
  Bytes (*generate)(Rng& rng);
  long divisor;  // inputs = count / divisor: `fuzz_replay 100000` takes ~12 s in all
};

constexpr Generator kGenerators[] = {
    {"AlgorithmsOneInput", &GenerateAlgorithms, 1}, {"DurationOneInput", &GenerateDuration, 1},
    {"HttpConnectionOneInput", &GenerateHttp, 5},   {"CanonicalPathOneInput", &GeneratePath, 1},
    {"ConfigOneInput", &GenerateConfig, 10},        {"AddressOneInput", &GenerateAddress, 1},
    {"HeadParserOneInput", &GenerateHead, 1},       {"CheckRequestOneInput", &GenerateCheck, 4},
    {"GrpcConnectionOneInput", &GenerateGrpc, 10},
};

Bytes ReadFile(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

const sluice::fuzz::Target* FindTarget(std::string_view name) {
  for (const sluice::fuzz::Target& target : sluice::fuzz::kTargets) {
    if (target.name == name) return &target;
  }
  return nullptr;
}

// Each file of tests/fuzz/crashes/ is an input that once broke its target (the name
// says which, up to the first '-'): kept so that the bug stays fixed.
void ReplayCrashes(std::string_view only) {
  const std::filesystem::path directory =
      std::filesystem::path(SLUICE_SOURCE_DIR) / "tests/fuzz/crashes";
  if (!std::filesystem::is_directory(directory)) return;
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(directory))
    files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  for (const std::filesystem::path& file : files) {
    const std::string name = file.filename().string();
    const sluice::fuzz::Target* target =
        FindTarget(std::string_view(name).substr(0, name.find('-')));
    if (target == nullptr || (!only.empty() && target->name != only)) continue;
    std::printf("fuzz_replay: tests/fuzz/crashes/%s\n", name.c_str());
    std::fflush(stdout);  // names the input if it still crashes
    const Bytes input = ReadFile(file);
    target->run(input.data(), input.size());
  }
}

}  // namespace

int main(int argc, char** argv) {
  const long inputs = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 20000;
  const std::string_view only = argc > 2 ? argv[2] : "";
  if (!only.empty() && FindTarget(only) == nullptr) {
    std::fprintf(stderr, "fuzz_replay: no target %s\n", argv[2]);
    return 2;
  }
  if (argc > 3) {
    for (int i = 3; i < argc; ++i) {
      const Bytes input = ReadFile(argv[i]);
      std::printf("fuzz_replay: %s on %s (%zu bytes)\n", argv[2], argv[i], input.size());
      std::fflush(stdout);
      FindTarget(only)->run(input.data(), input.size());
    }
    return 0;
  }
  ReplayCrashes(only);
  LoadConfigSeeds();
  for (const sluice::fuzz::Target& target : sluice::fuzz::kTargets) {
    if (!only.empty() && target.name != only) continue;
    const Generator* generator = nullptr;
    for (const Generator& g : kGenerators) {
      if (g.target == target.name) generator = &g;
    }
    if (generator == nullptr) {
      std::fprintf(stderr, "fuzz_replay: no generator for %.*s\n",
                   static_cast<int>(target.name.size()), target.name.data());
      return 2;
    }
    Rng rng(20261122);
    const long count = std::max(1L, inputs / generator->divisor);
    // SLUICE_FUZZ_WRITE_INPUTS=DIR keeps every input as DIR/<target>-<n>: seeds for a
    // libFuzzer run (scripts/fuzz.sh) that start where the generator's shapes are.
    const char* keep = std::getenv("SLUICE_FUZZ_WRITE_INPUTS");
    for (long i = 0; i < count; ++i) {
      const Bytes input = generator->generate(rng);
      if (keep != nullptr) {
        std::ofstream(
            std::filesystem::path(keep) / (std::string(target.name) + "-" + std::to_string(i)),
            std::ios::binary)
            .write(reinterpret_cast<const char*>(input.data()),
                   static_cast<std::streamsize>(input.size()));
      }
      target.run(input.data(), input.size());
    }
    std::printf("fuzz_replay: %-24.*s %7ld inputs, all invariants held\n",
                static_cast<int>(target.name.size()), target.name.data(), count);
  }
  return 0;
}
