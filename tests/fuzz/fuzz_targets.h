// Fuzz targets. Each is an LLVMFuzzerTestOneInput-shaped function: libFuzzer drives
// them in `make fuzz` (clang), and tests/fuzz/replay_main.cc drives them with a fixed
// stream of pseudo-random inputs under ASan/UBSan in every `make test`.
#ifndef SLUICE_TESTS_FUZZ_FUZZ_TARGETS_H_
#define SLUICE_TESTS_FUZZ_FUZZ_TARGETS_H_

#include <cstddef>
#include <cstdint>

namespace sluice::fuzz {

// Any algorithm, any policy in the documented domain, any starting state bytes (as a
// reload or a bug could leave them), any sequence of times and costs: no crash, no
// undefined behaviour, and every Decision keeps its invariants.
int AlgorithmsOneInput(const uint8_t* data, size_t size);

// Any text: ParseDuration and ParseCount never misbehave, and what ParseDuration
// accepts, FormatDuration writes back to something that parses to the same value.
int DurationOneInput(const uint8_t* data, size_t size);

}  // namespace sluice::fuzz

#endif  // SLUICE_TESTS_FUZZ_FUZZ_TARGETS_H_
