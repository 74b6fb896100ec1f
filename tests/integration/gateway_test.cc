// Gateway mode end to end (issue 5): the real sluice binary in front of real
// sluice_test_upstream processes. Being written.
#include <gtest/gtest.h>

#include "integration/harness.h"
#include "upstream/upstream_process.h"
