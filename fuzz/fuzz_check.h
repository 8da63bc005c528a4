// FUZZ_CHECK(cond): aborts with the file, line and condition when `cond` is false, so libFuzzer
// (and the corpus replay under ctest) reports a broken invariant as a crash. For fuzz targets only.
#pragma once

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                            \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)
