// Runs a program to completion and captures what it writes: the way the control plane runs
// short-lived helpers (git, the quickstart's set-up). Not for tasks (src/runtime) or builds
// (src/pipeline/build_runner), which run long and stream their output to a log.
//
// Thread-safe: shares no state; several may run at once.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"

namespace bluegreen {

struct CapturedOutput {
  int exit_code = -1;  // 128 + signal number when killed by a signal
  bool timed_out = false;
  std::string out;  // at most 1 MiB of stdout; the rest is read and dropped
  std::string err;  // likewise of stderr
};

// Runs `argv` (argv[0] is looked up in this process's PATH) in `cwd`, in a session of its own
// with stdin on /dev/null and no descriptor beyond 0-2, until it exits or `deadline` passes; then
// its whole process group is killed (also any leftovers once it has exited). `env` is the child's
// whole environment; null means this process's. A non-zero exit is not an error here: look at
// exit_code. Errors: Internal when the program could not be started (the message names it).
Result<CapturedOutput> RunCaptured(const std::vector<std::string>& argv,
                                   const std::vector<std::string>* env, const std::string& cwd,
                                   std::chrono::steady_clock::time_point deadline);

// The path of this process's executable (/proc/self/exe), or "bluegreen" when it cannot be read:
// how serve starts the proxy and the quickstart starts serve.
std::string SelfExecutable();

}  // namespace bluegreen
