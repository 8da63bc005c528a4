// Failpoints: named places in the code where a test can make this process die by SIGKILL, so
// crash safety is tested at an exact point (between recording a swap and applying it, say)
// instead of at whatever point a timed kill happens to hit.
//
// A failpoint fires when its name is listed in the environment variable BLUEGREEN_FAILPOINTS
// (comma-separated) of the process. Unset, a failpoint costs one load and a branch. Operators
// never set it; it is documented in docs/reliability.md for people testing bluegreen.
#pragma once

#include <string_view>

namespace bluegreen {

// Dies by SIGKILL (no destructors, no flush, like `kill -9`) when `name` is listed in
// BLUEGREEN_FAILPOINTS; returns otherwise. Writes one line to stderr before dying.
void Failpoint(std::string_view name);

}  // namespace bluegreen
