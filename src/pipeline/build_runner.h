// The Build stage's runner: a build's shell commands, one after another, in a checkout, with a
// time limit and a log; and the copy of the build's artifacts out of the checkout.
//
// Each command runs as `/bin/sh -e -c COMMAND` in a session (hence a process group) of its own,
// stdin on /dev/null, stdout and stderr appended straight to the build log, no other descriptor
// of the calling process, and an environment built from scratch. When a command ends, whatever it
// left running in its process group is killed, so nothing of one command outlives it.
//
// RunBuild and CopyArtifacts are thread-safe: they share no state, and several builds may run at
// once (each with its own log and directories).
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace bluegreen::pipeline {

struct BuildRequest {
  std::string workdir;                // the checkout; an absolute path
  std::vector<std::string> commands;  // each run as /bin/sh -e -c COMMAND, in order, in workdir
  // Added to the minimal environment (PATH of the calling process, HOME = workdir's parent
  // directory, LANG=C.UTF-8), overriding it for the same name. The caller passes the build's own
  // variables here: BLUEGREEN_COMMIT, BLUEGREEN_BUILD_NUMBER, CODEBUILD_RESOLVED_SOURCE_VERSION,
  // CODEBUILD_SRC_DIR and the stack's or buildspec's variables.
  std::vector<std::pair<std::string, std::string>> env;
  // Every command's output is appended here as it comes (the file is created when missing). Each
  // command is announced first as "[bluegreen] $ COMMAND\n" and its end as
  // "[bluegreen] exit status N (1.23 s)\n" (N is 128 + the signal number for a command killed by
  // a signal); a timeout or cancellation adds a line saying so.
  std::string log_path;
  // For the whole build. On expiry the running command's process group gets SIGTERM, and SIGKILL
  // 5 s later if the command has not ended by then.
  std::chrono::milliseconds timeout{0};
  // Optional: set to true (from any thread) to stop the build like a timeout. Looked at every
  // 50 ms.
  std::atomic<bool>* cancel = nullptr;
};

struct BuildResult {
  int failed_command = -1;  // index in commands of the command that failed or was stopped
  int exit_code = 0;        // its exit status (128 + signal number when killed by a signal)
  std::chrono::milliseconds duration{};  // of the whole build
};

// Runs req.commands in order; the first that exits non-zero stops the build and nothing after it
// runs. No commands at all is a successful build. `result` (optional) is always filled in.
// Errors:
//   FailedPrecondition "command N (`CMD`) exited with status X" for a failed command; N counts
//     from 1 (the first command is command 1), unlike result->failed_command, an index.
//   DeadlineExceeded "build timed out after T while running command N (`CMD`)".
//   FailedPrecondition "cancelled" when req.cancel was set.
//   InvalidArgument for a relative or missing workdir, a non-positive timeout or a bad env name;
//   Internal when the log cannot be opened or a process cannot be started.
Status RunBuild(const BuildRequest& req, BuildResult* result);

// Copies a build's artifacts from `root` (the checkout) into `dest`, which is created and must
// not exist (its parent is created when missing). Each of `paths` is relative to root and names a
// file or a directory (copied recursively), as listed in the stack file's build.artifacts (e.g.
// "out/" or "server"); it keeps its relative path under dest. An empty list copies everything
// under root except the top-level .git directory. File modes are kept.
//
// Symbolic links are followed when they point inside root: a link to a file is copied as that
// file; a link to a directory is followed only when it is one of `paths` itself (inside a copied
// directory such links are skipped, as are links that point outside root, dangling links and
// special files).
//
// Atomic: everything is copied into dest + ".tmp" (a leftover one is removed first), which is
// then renamed to dest; on any error dest does not exist afterwards.
// Errors: InvalidArgument for an absolute path, a ".." component or an empty path, and for a
// listed path that leads outside root; NotFound when root or a listed path does not exist;
// AlreadyExists when dest exists; Internal for I/O errors.
Status CopyArtifacts(const std::string& root, const std::vector<std::string>& paths,
                     const std::string& dest);

}  // namespace bluegreen::pipeline
