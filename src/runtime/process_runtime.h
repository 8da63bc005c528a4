// ProcessRuntime: a task is a local process, the embedded default runtime.
//
// Start spawns the task's argv with posix_spawn in its own session (so it is the leader of its own
// process group, outlives serve and gets no signals from serve's terminal), in the version's
// working directory, with stdin from /dev/null, stdout and stderr appended to the task's log file,
// no file descriptor of serve inherited, the default signal mask and dispositions, and the
// environment of serve plus TaskSpec::env plus PORT=<host_port>.
//
// A task is identified by "PID:STARTTIME", STARTTIME being field 22 of /proc/PID/stat, so a handle
// stored before a restart of serve never designates another process that reused the PID: a
// process whose start time differs is reported kGone and is never signalled. A task started by
// this object is its child and is reaped here (its exit code is kept for later Inspect calls); a
// task re-adopted from an earlier serve is observed through /proc.
//
// Thread-safe: Start, Inspect and Stop may be called from any thread, concurrently. Linux only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "common/status.h"
#include "runtime/runtime.h"

namespace bluegreen::runtime {

class ProcessRuntime final : public Runtime {
 public:
  ProcessRuntime() = default;
  ProcessRuntime(const ProcessRuntime&) = delete;
  ProcessRuntime& operator=(const ProcessRuntime&) = delete;

  std::string name() const override { return "process"; }

  // argv[0] without a '/' is looked up in PATH (TaskSpec::env's PATH if given, else serve's);
  // with a '/' and not absolute, it is relative to `workdir`. An empty `workdir` means serve's
  // working directory; an empty `log_path` sends the output to /dev/null.
  // A relative `log_path` is relative to serve's working directory.
  // Errors: kInvalidArgument for an empty command, kNotFound for a missing workdir or program,
  // kFailedPrecondition for a workdir that is not a directory, kPermissionDenied for a program
  // that is not executable, kInternal when the log file cannot be opened or the spawn fails. On
  // error nothing is left running.
  Result<TaskHandle> Start(const TaskSpec& spec) override;

  // kExited with the exit code (128 + signal number for a signal) for a child of this object
  // that ended; kExited with exit_code -1 for a zombie of another parent; kGone when no process
  // with this PID and start time exists. kInvalidArgument for a malformed handle.
  Result<TaskStatus> Inspect(const TaskHandle& handle) override;

  // SIGTERM to the task's process group (and to the task itself), SIGKILL to the group after
  // `grace`, then waits up to 2s more. Returns once the task and the other members of its group
  // have ended (kDeadlineExceeded if they are still there after the SIGKILL wait). A task that is
  // already gone is OK; a process whose start time does not match the handle is never signalled.
  // Members of the group left behind by a task that exited by itself are stopped as well.
  Status Stop(const TaskHandle& handle, std::chrono::milliseconds grace) override;

  // Always OK: the runtime is this process.
  Status CheckReachable() override { return Status::Ok(); }

 private:
  struct Child {
    uint64_t start_time = 0;
    std::optional<int> exit_code;  // set once reaped
  };

  // For a child of this object with this start time: reaps it if it ended and returns its exit
  // code once known. nullopt for a process that is not such a child or still runs.
  std::optional<int> ReapIfChild(pid_t pid, uint64_t start_time);
  void Forget(pid_t pid, uint64_t start_time);

  std::mutex mu_;
  std::map<pid_t, Child> children_;  // Guarded by mu_.
};

// A TCP port that was free on 127.0.0.1 a moment ago: binds a socket to 127.0.0.1:0, reads the
// port the kernel chose and closes the socket. kUnavailable when no socket can be bound.
Result<uint16_t> PickFreePort();

}  // namespace bluegreen::runtime
