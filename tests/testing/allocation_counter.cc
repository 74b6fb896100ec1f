#include "testing/allocation_counter.h"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<uint64_t> g_allocations{0};
}  // namespace

namespace sluice::testing {

uint64_t AllocationCount() { return g_allocations.load(std::memory_order_relaxed); }

}  // namespace sluice::testing

void* operator new(size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
// Not inlined: GCC 12 otherwise may see free() meet `new TestClass` in GoogleTest's
// factories and warn of a mismatch (-Wmismatched-new-delete) that is not one.
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, size_t) noexcept { std::free(p); }
