// Entry point for libFuzzer builds (make fuzz): one binary per target, chosen at
// compile time with -DSLUICE_FUZZ_TARGET=<a name from kTargets in fuzz_targets.h>.
#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return sluice::fuzz::SLUICE_FUZZ_TARGET(data, size);
}
