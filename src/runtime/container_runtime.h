// ContainerRuntime: runs each task as a container through the Docker Engine REST API (v1.41) on a
// unix socket. The same code drives Podman's compatible service
// (`podman system service --time=0 unix:///PATH/podman.sock`) and Docker's daemon.
//
// A task is one container named after TaskSpec::name and labelled io.bluegreen.task=<name>. Its
// container port is published on 127.0.0.1:<host_port>, PORT=<container_port> is added to its
// environment (replacing a PORT in TaskSpec::env), and its restart policy is "no": restarting is
// the supervisor's business. The TaskHandle is the container id, so a new ContainerRuntime (after
// serve restarts) can inspect and stop the containers an earlier one started.
//
// Errors carry the engine's own message. Engine answers map to codes as: 400 kInvalidArgument,
// 404 kNotFound (e.g. a missing image), 409 kAlreadyExists, anything else kUnavailable (Podman
// answers 500 to most failures, e.g. a host port in use); an answer that cannot be understood is
// kInternal; a socket that cannot be reached gives HttpCall's code (kUnavailable,
// kDeadlineExceeded).
//
// Thread-safe: a ContainerRuntime holds only immutable configuration and every call is a fresh
// HTTP request, so any number of threads may call it concurrently.
#pragma once

#include <chrono>
#include <string>

#include "common/status.h"
#include "runtime/runtime.h"

namespace bluegreen::runtime {

class ContainerRuntime final : public Runtime {
 public:
  // `socket_path` is the engine's unix socket, e.g. /run/podman/podman.sock or
  // /var/run/docker.sock. `flavor` is "podman" or "docker"; it only names the runtime.
  ContainerRuntime(std::string socket_path, std::string flavor);

  ContainerRuntime(const ContainerRuntime&) = delete;
  ContainerRuntime& operator=(const ContainerRuntime&) = delete;

  // GET /_ping on the engine at `socket_path`: its answer ("OK") when it is up.
  static Result<std::string> Ping(const std::string& socket_path);

  std::string name() const override { return flavor_; }

  // Creates and starts a container from spec.image (spec.command, when not empty, replaces the
  // image's CMD; the image's ENTRYPOINT stays). A container that already has spec.name is removed
  // first (forcibly: it is the stale leftover of an earlier attempt). Needs spec.name, spec.image,
  // spec.container_port and spec.host_port. If the container cannot be started it is removed.
  Result<TaskHandle> Start(const TaskSpec& spec) override;

  // kRunning while the container runs; kExited once it stopped (exit_code set when the engine
  // reports the container as exited, -1 for one that was created but never ran); kGone when the
  // engine does not know the container.
  Result<TaskStatus> Inspect(const TaskHandle& handle) override;

  // Stops the container (the engine sends SIGTERM, then SIGKILL after `grace` rounded up to whole
  // seconds, at least 1) and removes it. OK when the container is already stopped or gone.
  Status Stop(const TaskHandle& handle, std::chrono::milliseconds grace) override;

 private:
  const std::string address_;  // "unix:" + socket path, for HttpCall
  const std::string flavor_;
};

}  // namespace bluegreen::runtime
