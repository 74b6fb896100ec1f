// Counts every heap allocation of a test binary, so that a test can show that a path
// allocates nothing ("no heap allocation per request after warm-up").
//
// allocation_counter.cc replaces the global operator new (and the matching deletes)
// with one that counts and calls malloc. The replacement is for the whole binary, so
// compile allocation_counter.cc into each test binary that needs the count (see
// CMakeLists.txt), and only into those. The array forms are the standard library's,
// which call the replaced operator new; the aligned forms are not replaced, so not
// counted.
//
// Thread-safety: the count is a relaxed atomic, so allocations from any thread are
// counted; read it on the thread whose allocations you mean to see.
#ifndef SLUICE_TESTS_TESTING_ALLOCATION_COUNTER_H_
#define SLUICE_TESTS_TESTING_ALLOCATION_COUNTER_H_

#include <cstdint>

namespace sluice::testing {

// The number of operator new calls since the binary started.
uint64_t AllocationCount();

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_TESTING_ALLOCATION_COUNTER_H_
