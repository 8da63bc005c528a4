// Runtime: where a service's tasks run. One interface, two implementations:
//   ProcessRuntime   (process_runtime.h)   - a local process per task, the embedded default;
//   ContainerRuntime (container_runtime.h) - a container per task through the Docker Engine API
//                                            over a unix socket (Podman's compatible service or
//                                            Docker).
//
// A task outlives the process that started it: serve can die and start again, and re-adopt its
// tasks from the TaskHandle it stored (Inspect works on a handle from an earlier process).
// Implementations are thread-safe: the supervisor may start, inspect and stop tasks from any
// thread, concurrently.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace bluegreen::runtime {

struct TaskSpec {
  std::string name;                    // unique and stable, e.g. "demo-code2-v3-17"; [a-z0-9-.]
  std::vector<std::string> command;    // process: argv (already ${PORT}-expanded);
                                       // container: optional command override
  std::string workdir;                 // process: the version's artifact directory
  std::string image;                   // container: the image reference
  uint16_t container_port = 0;         // container: the port the app listens on in the container
  uint16_t host_port = 0;              // where the task is reachable on 127.0.0.1 (process: the
                                       // port it listens on; container: the published port)
  std::map<std::string, std::string> env;  // PORT is added by the runtime
  std::string log_path;                // process: stdout and stderr are appended here
};

// What identifies a running task across restarts of serve. Stored as text in the state store.
struct TaskHandle {
  std::string id;  // process: "PID:STARTTIME" (STARTTIME from /proc/PID/stat, guards against
                   // PID reuse); container: the container id
  bool operator==(const TaskHandle&) const = default;
};

enum class TaskState {
  kRunning,
  kExited,  // it ended (exit code known or not); Stop/Remove still clean up its leftovers
  kGone,    // nothing is known of it (a process that is not there, a removed container)
};

struct TaskStatus {
  TaskState state = TaskState::kGone;
  int exit_code = -1;  // when known
};

class Runtime {
 public:
  virtual ~Runtime() = default;

  // "process", "podman" or "docker".
  virtual std::string name() const = 0;

  // Starts a task. Returns once it was started (not once it is healthy; health is the
  // supervisor's business). On error nothing is left running.
  virtual Result<TaskHandle> Start(const TaskSpec& spec) = 0;

  // The task's state now. Works for a handle returned by an earlier process (re-adoption).
  virtual Result<TaskStatus> Inspect(const TaskHandle& handle) = 0;

  // Stops the task: SIGTERM (for a process: to its whole process group), then SIGKILL after
  // `grace`, and removes what it leaves behind (a container). Returns when it is gone.
  // Stopping a task that is already gone is OK.
  virtual Status Stop(const TaskHandle& handle, std::chrono::milliseconds grace) = 0;

  // Whether the runtime answers now: OK, or why not (kUnavailable, kDeadlineExceeded). Cheap and
  // bounded (a few seconds at most). A runtime that does not answer knows nothing of its tasks:
  // they are in an unknown state, not gone (a container keeps running under its conmon while the
  // engine's API service is down).
  virtual Status CheckReachable() = 0;
};

}  // namespace bluegreen::runtime
