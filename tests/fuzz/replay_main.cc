// Runs the fuzz targets on a fixed stream of pseudo-random inputs, so every `make test`
// exercises them under ASan/UBSan without needing clang or a corpus.
// usage: fuzz_replay [inputs per target]
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "fuzz/fuzz_targets.h"

int main(int argc, char** argv) {
  const long inputs = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 20000;
  std::mt19937_64 rng(20261122);
  std::vector<uint8_t> buffer;
  for (long i = 0; i < inputs; ++i) {
    buffer.resize(rng() % 1024);
    for (uint8_t& b : buffer) b = static_cast<uint8_t>(rng());
    sluice::fuzz::AlgorithmsOneInput(buffer.data(), buffer.size());
    // Durations: mostly text that looks like one, sometimes noise.
    static const std::string kAlphabet = "0123456789nsumhd -+.x";
    std::string text;
    const size_t len = rng() % 24;
    for (size_t k = 0; k < len; ++k) text += kAlphabet[rng() % kAlphabet.size()];
    sluice::fuzz::DurationOneInput(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  }
  std::printf("fuzz_replay: %ld inputs per target, all invariants held\n", inputs);
  return 0;
}
