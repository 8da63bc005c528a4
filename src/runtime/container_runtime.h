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
// BuildImage builds an image from a directory and a Containerfile (POST /build), for the pipeline's
// Build stage; it is not part of the Runtime interface, as only a container engine builds images.
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

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "runtime/runtime.h"

namespace bluegreen::runtime {

struct ImageBuildRequest {
  std::string context_dir;    // an absolute path; sent to the engine as a tar, without its .git
  std::string containerfile;  // the Containerfile's path relative to context_dir
  std::string tag;            // the image's name, e.g. "localhost/bluegreen/app:3-1a2b3c4"
  std::chrono::milliseconds timeout{0};  // for the whole build
  // Gets the build's output as the engine sends it (its "stream" and "status" text), whole lines.
  std::function<void(std::string_view)> output;
  // Optional: set to true (from any thread) to stop the build. Looked at every 100 ms.
  const std::atomic<bool>* cancel = nullptr;
};

class ContainerRuntime final : public Runtime {
 public:
  // `socket_path` is the engine's unix socket, e.g. /run/podman/podman.sock or
  // /var/run/docker.sock. `flavor` is "podman" or "docker"; it only names the runtime.
  ContainerRuntime(std::string socket_path, std::string flavor);

  ContainerRuntime(const ContainerRuntime&) = delete;
  ContainerRuntime& operator=(const ContainerRuntime&) = delete;

  // GET /_ping on the engine at `socket_path`: its answer ("OK") when it is up.
  static Result<std::string> Ping(const std::string& socket_path);

  // The engine's socket for a runtime named `flavor` ("podman" or "docker"): $DOCKER_HOST when it
  // is a unix:// URL, else $BLUEGREEN_CONTAINER_SOCKET, else /run/podman/podman.sock (podman) or
  // /var/run/docker.sock (docker).
  static std::string SocketFor(const std::string& flavor);

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

  // GET /_ping with a 2 s timeout. Errors: "FLAVOR: the engine at SOCKET does not answer: WHY"
  // (kUnavailable for a socket nobody listens on, kDeadlineExceeded for one that hangs), or the
  // engine's answer when it is not "OK".
  Status CheckReachable() override;

  // Builds the image req.tag from req.containerfile with req.context_dir as its build context
  // (POST /build; intermediate containers are removed, also when the build fails), streaming the
  // engine's output to req.output as it comes. Returns the image's id ("sha256:...").
  // Errors: InvalidArgument for a relative context_dir, an empty tag or a containerfile path that
  // is absolute or has ".."; NotFound when the context has no such Containerfile;
  // ResourceExhausted for a context over 1 GiB; FailedPrecondition "build of image TAG failed:
  // MESSAGE" with the engine's message for a failed build, and "cancelled" when req.cancel was
  // set; DeadlineExceeded when req.timeout passed; the engine call's errors otherwise.
  Result<std::string> BuildImage(const ImageBuildRequest& req);

  // Removes the image `tag` (DELETE /images/TAG; not forced, so an image that a container still
  // uses stays and this fails with the engine's message). NotFound when the engine does not know
  // the image.
  Status RemoveImage(const std::string& tag);

 private:
  const std::string socket_path_;
  const std::string address_;  // "unix:" + socket path, for HttpCall
  const std::string flavor_;
};

}  // namespace bluegreen::runtime
