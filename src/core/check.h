// SLUICE_CHECK: for states that must be impossible. Prints where and aborts; on in
// every build, because continuing past a broken invariant in a limiter would admit
// or refuse traffic wrongly and silently.
#ifndef SLUICE_CORE_CHECK_H_
#define SLUICE_CORE_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define SLUICE_CHECK(condition)                                                          \
  do {                                                                                   \
    if (!(condition)) [[unlikely]] {                                                     \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (false)

#endif  // SLUICE_CORE_CHECK_H_
