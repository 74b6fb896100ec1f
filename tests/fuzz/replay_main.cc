// Runs the fuzz targets on a fixed stream of pseudo-random inputs, so every `make test`
// exercises them under ASan/UBSan without needing clang or a corpus. Each target has a
// generator that makes inputs shaped like what the target parses (HTTP requests, YAML
// from the examples, addresses) and then damages some of them.
//
// usage: fuzz_replay [inputs per target] [target name] [files...]
//   The count is scaled per target (the HTTP connection target runs a socketpair and
//   an event loop per input, so it gets fewer). With a target name, only that target
//   runs; with files too, each file is one input for it (a crash from `make fuzz`).
#include <cstdio>
#include <cstdlib>
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

std::string HttpRequest(Rng& rng) {
  static const char* const kMethods[] = {"GET", "GET",  "HEAD",    "POST",   "PUT",
                                         "DELETE", "OPTIONS", "CONNECT", "PATCH", "get"};
  static const char* const kTargets[] = {"/",
                                         "/api/items?x=1&y=2",
                                         "/%61pi/../x/./y",
                                         "//a//b/",
                                         "*",
                                         "http://example.com/api/x",
                                         "/a%2Fb%zz%4",
                                         "/?",
                                         "/x?%00",
                                         "host:443"};
  static const char* const kVersions[] = {"HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.1",
                                          "HTTP/1.0", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", "HTTP/0.9"};
  const std::string eol = OneIn(rng, 10) ? "\n" : "\r\n";
  std::string target = Pick(rng, kTargets);
  if (OneIn(rng, 12)) target = "/" + std::string(980 + rng() % 100, 'p');  // near 1024
  std::string r = std::string(Pick(rng, kMethods)) + " " + target + " " + Pick(rng, kVersions) + eol;
  if (!OneIn(rng, 20)) r += "Host: example.com" + eol;
  std::string body;
  const int headers = static_cast<int>(rng() % 4);
  for (int h = 0; h < headers; ++h) {
    // Mostly fields a server must take; one time in six, one it may refuse.
    switch (OneIn(rng, 6) ? 9 + rng() % 5 : rng() % 9) {
      case 0:
      case 1: {
        static const char* const kLengths[] = {"0", "5", "10", "4096", "4097", "100000", "-1", "x"};
        const std::string length = Pick(rng, kLengths);
        r += "Content-Length: " + length + eol;
        const size_t n = length[0] >= '0' && length[0] <= '9' ? std::stoul(length) : 0;
        body = std::string(std::min<size_t>(n, 5000), 'B');
        if (OneIn(rng, 4)) body.resize(body.size() / 2);
        break;
      }
      case 2:
        r += "Transfer-Encoding: chunked" + eol;
        body = "5\r\nhello\r\n";
        if (OneIn(rng, 3)) body += "1000\r\n" + std::string(4096, 'c') + "\r\n";
        if (OneIn(rng, 4)) body += "ffffffffffffffff\r\n";
        body += "0\r\n\r\n";
        break;
      case 3:
        r += (OneIn(rng, 2) ? "Expect: 100-continue" : "expect: 100-CONTINUE") + eol;
        break;
      case 4:
        r += std::string("Connection: ") + Pick(rng, {"close", "keep-alive", "Upgrade"}) + eol;
        break;
      case 5:
        r += "Upgrade: websocket" + eol;
        break;
      case 6:
        r += std::string("X-Request-Id: ") +
             Pick(rng, {"abc-123", "has space", "a\tb", "x/y+z=", "\"quoted\"", ""}) + eol;
        break;
      case 7:
        r += "X-Request-Id: " + std::string(100 + rng() % 60, 'i') + eol;
        break;
      case 8:
        r += "X-Forwarded-For: 203.0.113.9, 10.0.0.1" + eol;
        break;
      case 9:
        r += "X-Big: " + std::string(900 + rng() % 200, 'v') + eol;
        break;
      case 10:
        for (int i = 0; i < 101; ++i) r += "A: b" + eol;
        break;
      case 11:
        r += "X-Folded: one" + eol + " two" + eol;
        break;
      case 12:
        r += "Bad Header: x" + eol;
        break;
      case 13:
        r += "X-Empty:" + eol;
        break;
    }
  }
  r += eol + body;
  return r;
}

Bytes GenerateHttp(Rng& rng) {
  std::string payload;
  const int requests = 1 + static_cast<int>(rng() % 5);
  for (int i = 0; i < requests; ++i) payload += HttpRequest(rng);
  if (OneIn(rng, 3)) Damage(rng, payload, 1 + static_cast<int>(rng() % 3));
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
  static const char* const kValues[] = {
      "0",     "-1",    "1e309",  "18446744073709551616", "9223372036854775807", "0s",
      "1x",    "1.5s",  "-5m",    "~",                    "null",                "[]",
      "{}",    "\"\"",  "yes",    "*anchor",              "&a x",                "!!binary x",
      "[a, b", "{a: }", "\"\\0\"", "10.0.0.0/33",         "[::1]:99999",         "'"};
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
                    Pick(rng, {':', '-', '[', ']', '{', '}', '&', '*', '!', '|', '>', '\'', '"',
                               '%', '@', '`', '#', ',', '?', '\t'}));
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
  static const char* const kPieces[] = {
      "1.2.3.4",         "10.0.0.1",     "192.168.1.1",  "256.1.1.1",     "1.2.3",
      "01.2.3.4",        "::1",          "2001:db8::1",  "::ffff:10.0.0.1", "fd00::5",
      "fe80::1%eth0",    "[::1]:80",     "[::1]",        "1.2.3.4:8080",  ":8080",
      "*:80",            "localhost:1",  "10.0.0.0/8",   "10.1.0.0/8",    "::/0",
      "0.0.0.0/0",       "1.2.3.4/33",   "2001:db8::/129", "1.2.3.4/",    "::ffff:1.2.3.4/104",
      "1:2:3:4:5:6:7:8", "1::2::3",      "[fd00::1]:443", "unknown",      "",
      " 10.0.0.2 ",      "198.51.100.7", "1.2.3.4:99999"};
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

struct Generator {
  std::string_view target;
  Bytes (*generate)(Rng& rng);
  long divisor;  // inputs = count / divisor: keeps the whole run in about 20 s
};

constexpr Generator kGenerators[] = {
    {"AlgorithmsOneInput", &GenerateAlgorithms, 1},
    {"DurationOneInput", &GenerateDuration, 1},
    {"HttpConnectionOneInput", &GenerateHttp, 100},
    {"CanonicalPathOneInput", &GeneratePath, 1},
    {"ConfigOneInput", &GenerateConfig, 50},
    {"AddressOneInput", &GenerateAddress, 4},
};

int Run(const sluice::fuzz::Target& target, const Bytes& input) {
  return target.run(input.data(), input.size());
}

}  // namespace

int main(int argc, char** argv) {
  const long inputs = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 20000;
  const std::string_view only = argc > 2 ? argv[2] : "";
  LoadConfigSeeds();
  for (const sluice::fuzz::Target& target : sluice::fuzz::kTargets) {
    if (!only.empty() && target.name != only) continue;
    if (argc > 3) {
      for (int i = 3; i < argc; ++i) {
        std::ifstream file(argv[i], std::ios::binary);
        const Bytes input{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
        std::printf("fuzz_replay: %.*s on %s (%zu bytes)\n", static_cast<int>(target.name.size()),
                    target.name.data(), argv[i], input.size());
        Run(target, input);
      }
      return 0;
    }
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
    for (long i = 0; i < count; ++i) {
      Bytes in = generator->generate(rng);
      if (getenv("DUMP") && i < 50) { std::ofstream f(std::string(getenv("DUMP")) + "/" + std::to_string(i), std::ios::binary); f.write((const char*)in.data(), in.size()); }
      Run(target, in);
    }
    std::printf("fuzz_replay: %-24.*s %7ld inputs, all invariants held\n",
                static_cast<int>(target.name.size()), target.name.data(), count);
  }
  return 0;
}
