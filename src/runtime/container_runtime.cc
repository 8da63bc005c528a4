#include "runtime/container_runtime.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string_view>
#include <thread>
#include <utility>

#include "common/http_client.h"
#include "runtime/build_context.h"

namespace bluegreen::runtime {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr std::string_view kApi = "/v1.41";
constexpr std::string_view kTaskLabel = "io.bluegreen.task";
// Engine calls that do not wait for the container itself (create, start, inspect, remove).
constexpr milliseconds kCallTimeout = seconds(60);
// CheckReachable: short, as the reconciler asks before every pass.
constexpr milliseconds kPingTimeout = seconds(2);
// How long Stop waits beyond the grace period for the engine to answer.
constexpr milliseconds kStopSlack = seconds(60);
// How long a removal that the engine reports as already in progress is waited for.
constexpr milliseconds kRemovalWait = seconds(10);
constexpr size_t kMaxMessage = 500;
// The largest build context BuildImage sends (it is held in memory).
constexpr size_t kMaxBuildContext = size_t{1} << 30;

// Percent-encodes everything but RFC 3986's unreserved characters and those in `keep`.
std::string UrlEncode(std::string_view s, std::string_view keep = "") {
  std::string out;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~' || keep.find(c) != std::string_view::npos) {
      out += c;
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", u);
      out += buf;
    }
  }
  return out;
}

// The engine's error text: its JSON "message", else the start of the raw body.
std::string EngineMessage(const HttpClientResponse& r) {
  const json body = json::parse(r.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_object()) {
    const auto it = body.find("message");
    if (it != body.end() && it->is_string()) return it->get<std::string>();
  }
  std::string raw = r.body.substr(0, kMaxMessage);
  while (!raw.empty() && (raw.back() == '\n' || raw.back() == '\r')) raw.pop_back();
  return raw.empty() ? "(no message)" : raw;
}

StatusCode CodeForHttpStatus(int status) {
  switch (status) {
    case 400:
      return StatusCode::kInvalidArgument;
    case 404:
      return StatusCode::kNotFound;
    case 409:
      return StatusCode::kAlreadyExists;
    default:
      return StatusCode::kUnavailable;
  }
}

// Docker answers 409 to a create whose name is taken; Podman 4.3's compatible API answers 500
// with "... is already in use ...".
bool IsNameConflict(const HttpClientResponse& r) {
  return r.status == 409 ||
         (r.status == 500 && EngineMessage(r).find("already in use") != std::string::npos);
}

// json::dump throws on invalid UTF-8; replace such bytes instead (names and env come from users).
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// The calls of one ContainerRuntime operation; borrows the runtime's configuration.
class EngineClient {
 public:
  EngineClient(const std::string& address, const std::string& flavor)
      : address_(address), flavor_(flavor) {}

  // One API call; `target` is under the version prefix unless it starts with "/_".
  Result<HttpClientResponse> Call(std::string_view what, std::string method, std::string target,
                                  std::string body = {},
                                  milliseconds timeout = kCallTimeout) const {
    HttpClientRequest req;
    req.method = std::move(method);
    req.target = target.starts_with("/_") ? std::move(target) : std::string(kApi) + target;
    if (!body.empty()) req.headers.emplace_back("Content-Type", "application/json");
    req.body = std::move(body);
    Result<HttpClientResponse> r = HttpCall(address_, req, timeout);
    if (!r.ok()) {
      return Status(r.status().code(), fmt::format("{}: {}: engine at {}: {}", flavor_, what,
                                                   address_, r.status().message()));
    }
    return r;
  }

  Status Error(std::string_view what, const HttpClientResponse& r) const {
    return Status(CodeForHttpStatus(r.status),
                  fmt::format("{}: {}: {} (HTTP {})", flavor_, what, EngineMessage(r), r.status));
  }

  // Removes a container by id or name, killing it if it runs. A container that does not exist is
  // fine. Returns once the engine no longer knows it.
  Status Remove(const std::string& ref) const {
    const std::string what = fmt::format("remove container {}", ref);
    const std::string target = fmt::format("/containers/{}?force=true&v=true", UrlEncode(ref));
    Result<HttpClientResponse> r = Call(what, "DELETE", target);
    if (!r.ok()) return r.status();
    if (r->status == 200 || r->status == 204 || r->status == 404) return Status::Ok();
    if (r->status != 409) return Error(what, *r);
    // 409: a removal is already in progress (Docker). Wait for it to finish.
    const auto deadline = std::chrono::steady_clock::now() + kRemovalWait;
    while (std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(100));
      Result<HttpClientResponse> probe =
          Call(what, "GET", fmt::format("/containers/{}/json", UrlEncode(ref)));
      if (!probe.ok()) return probe.status();
      if (probe->status == 404) return Status::Ok();
    }
    return Error(what, *r);
  }

 private:
  const std::string& address_;
  const std::string& flavor_;
};

}  // namespace

ContainerRuntime::ContainerRuntime(std::string socket_path, std::string flavor)
    : socket_path_(std::move(socket_path)),
      address_("unix:" + socket_path_),
      flavor_(std::move(flavor)) {}

std::string ContainerRuntime::SocketFor(const std::string& flavor) {
  // NOLINTBEGIN(concurrency-mt-unsafe): nothing in serve sets the environment.
  if (const char* host = std::getenv("DOCKER_HOST");
      host != nullptr && std::string_view(host).starts_with("unix://")) {
    return std::string(host + 7);
  }
  if (const char* s = std::getenv("BLUEGREEN_CONTAINER_SOCKET"); s != nullptr && *s != '\0') {
    return s;
  }
  // NOLINTEND(concurrency-mt-unsafe)
  return flavor == "docker" ? "/var/run/docker.sock" : "/run/podman/podman.sock";
}

Result<std::string> ContainerRuntime::Ping(const std::string& socket_path) {
  const std::string address = "unix:" + socket_path;
  HttpClientRequest req;
  req.target = "/_ping";
  Result<HttpClientResponse> r = HttpCall(address, req, seconds(5));
  if (!r.ok()) {
    return Status(r.status().code(),
                  fmt::format("ping engine at {}: {}", socket_path, r.status().message()));
  }
  if (r->status != 200) {
    return Status(
        CodeForHttpStatus(r->status),
        fmt::format("ping engine at {}: {} (HTTP {})", socket_path, EngineMessage(*r), r->status));
  }
  return std::move(r->body);
}

Status ContainerRuntime::CheckReachable() {
  HttpClientRequest req;
  req.target = "/_ping";
  Result<HttpClientResponse> r = HttpCall(address_, req, kPingTimeout);
  if (!r.ok()) {
    return Status(r.status().code(), fmt::format("{}: the engine at {} does not answer: {}",
                                                 flavor_, socket_path_, r.status().message()));
  }
  if (r->status != 200) {
    return Status(CodeForHttpStatus(r->status),
                  fmt::format("{}: the engine at {} answers its ping with: {} (HTTP {})", flavor_,
                              socket_path_, EngineMessage(*r), r->status));
  }
  return Status::Ok();
}

Result<TaskHandle> ContainerRuntime::Start(const TaskSpec& spec) {
  if (spec.name.empty() || spec.image.empty()) {
    return InvalidArgument(fmt::format("{}: a task needs a name and an image", flavor_));
  }
  if (spec.container_port == 0 || spec.host_port == 0) {
    return InvalidArgument(
        fmt::format("{}: task {} needs a container port and a host port", flavor_, spec.name));
  }
  const EngineClient engine(address_, flavor_);
  const std::string port_key = fmt::format("{}/tcp", spec.container_port);

  json env = json::array();
  for (const auto& [key, value] : spec.env) {
    if (key != "PORT") env.push_back(fmt::format("{}={}", key, value));
  }
  env.push_back(fmt::format("PORT={}", spec.container_port));
  json config = {
      {"Image", spec.image},
      {"Env", std::move(env)},
      {"ExposedPorts", {{port_key, json::object()}}},
      {"Labels", {{std::string(kTaskLabel), spec.name}}},
      {"HostConfig",
       {{"PortBindings",
         {{port_key, json::array({{{"HostIp", "127.0.0.1"},
                                   {"HostPort", std::to_string(spec.host_port)}}})}}},
        {"RestartPolicy", {{"Name", "no"}}}}},
  };
  if (!spec.command.empty()) config["Cmd"] = spec.command;
  const std::string body = Dump(config);

  const std::string create_what =
      fmt::format("create container {} from image {}", spec.name, spec.image);
  const std::string create_target = "/containers/create?name=" + UrlEncode(spec.name);
  Result<HttpClientResponse> created = engine.Call(create_what, "POST", create_target, body);
  if (!created.ok()) return created.status();
  if (IsNameConflict(*created)) {
    // A container of this name is the leftover of an earlier attempt at this very task.
    spdlog::info("{}: replacing existing container {}", flavor_, spec.name);
    BG_RETURN_IF_ERROR(engine.Remove(spec.name));
    created = engine.Call(create_what, "POST", create_target, body);
    if (!created.ok()) return created.status();
  }
  if (created->status != 201 && created->status != 200) return engine.Error(create_what, *created);

  const json answer = json::parse(created->body, nullptr, /*allow_exceptions=*/false);
  const auto id_it = answer.is_object() ? answer.find("Id") : answer.end();
  if (!answer.is_object() || id_it == answer.end() || !id_it->is_string() ||
      id_it->get<std::string>().empty()) {
    // Nothing to clean up by id; the name still identifies what may have been created.
    (void)engine.Remove(spec.name);
    return Internal(fmt::format("{}: {}: no container id in the answer: {}", flavor_, create_what,
                                created->body.substr(0, kMaxMessage)));
  }
  TaskHandle handle{id_it->get<std::string>()};

  const std::string start_what = fmt::format("start container {} ({})", spec.name, handle.id);
  Result<HttpClientResponse> started =
      engine.Call(start_what, "POST", fmt::format("/containers/{}/start", UrlEncode(handle.id)));
  Status start_status;
  if (!started.ok()) {
    start_status = started.status();
  } else if (started->status != 204 && started->status != 304) {
    start_status = engine.Error(start_what, *started);
  }
  if (!start_status.ok()) {
    const Status removed = engine.Remove(handle.id);
    if (!removed.ok()) {
      return Status(start_status.code(),
                    fmt::format("{}; and then: {}", start_status.message(), removed.message()));
    }
    return start_status;
  }
  return handle;
}

Result<TaskStatus> ContainerRuntime::Inspect(const TaskHandle& handle) {
  if (handle.id.empty()) return InvalidArgument(fmt::format("{}: empty container id", flavor_));
  const EngineClient engine(address_, flavor_);
  const std::string what = fmt::format("inspect container {}", handle.id);
  Result<HttpClientResponse> r =
      engine.Call(what, "GET", fmt::format("/containers/{}/json", UrlEncode(handle.id)));
  if (!r.ok()) return r.status();
  if (r->status == 404) return TaskStatus{TaskState::kGone, -1};
  if (r->status != 200) return engine.Error(what, *r);

  const json info = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
  const auto state_it = info.is_object() ? info.find("State") : info.end();
  if (!info.is_object() || state_it == info.end() || !state_it->is_object()) {
    return Internal(fmt::format("{}: {}: no State in the answer", flavor_, what));
  }
  const json& state = *state_it;
  const auto running = state.find("Running");
  if (running != state.end() && running->is_boolean() && running->get<bool>()) {
    return TaskStatus{TaskState::kRunning, -1};
  }
  TaskStatus status{TaskState::kExited, -1};
  const auto phase = state.find("Status");
  const bool never_ran =
      phase != state.end() && phase->is_string() && (*phase == "created" || *phase == "configured");
  const auto code = state.find("ExitCode");
  if (!never_ran && code != state.end() && code->is_number_integer()) {
    status.exit_code = code->get<int>();
  }
  return status;
}

Status ContainerRuntime::Stop(const TaskHandle& handle, milliseconds grace) {
  if (handle.id.empty()) return InvalidArgument(fmt::format("{}: empty container id", flavor_));
  const EngineClient engine(address_, flavor_);
  const int64_t grace_s = std::max<int64_t>(1, (grace.count() + 999) / 1000);
  const std::string what = fmt::format("stop container {}", handle.id);
  Result<HttpClientResponse> r = engine.Call(
      what, "POST", fmt::format("/containers/{}/stop?t={}", UrlEncode(handle.id), grace_s), {},
      seconds(grace_s) + kStopSlack);
  if (!r.ok()) return r.status();
  // 204 stopped, 304 already stopped, 404 gone. Any other answer: the forced removal below
  // still kills it, and its result is what counts.
  if (r->status != 204 && r->status != 304 && r->status != 404) {
    spdlog::warn("{}", engine.Error(what, *r).message());
  }
  return engine.Remove(handle.id);
}

namespace {

// The JSON lines of an image build's answer, as they arrive: their text goes to `output`, the
// first error is kept. A line that is not JSON is passed on as it is.
class BuildStream {
 public:
  explicit BuildStream(const std::function<void(std::string_view)>& output) : output_(output) {}

  void Feed(std::string_view piece) {
    if (raw_.size() < kMaxMessage) raw_.append(piece.substr(0, kMaxMessage - raw_.size()));
    pending_.append(piece);
    const std::string_view all = pending_;
    size_t start = 0;
    for (size_t eol; (eol = all.find('\n', start)) != std::string_view::npos; start = eol + 1) {
      Line(all.substr(start, eol - start));
    }
    pending_.erase(0, start);
  }

  // After the answer ended: a last line without its newline.
  void Flush() {
    if (!pending_.empty()) Line(pending_);
    pending_.clear();
  }

  const std::string& error() const { return error_; }
  // The start of the answer as it came, for an answer that is not a build stream.
  const std::string& raw() const { return raw_; }

 private:
  void Line(std::string_view line) {
    if (line.empty() || line == "\r") return;
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) {
      Output(std::string(line) + "\n");
      return;
    }
    for (const char* key : {"stream", "status"}) {
      const auto it = j.find(key);
      if (it != j.end() && it->is_string()) Output(it->get<std::string>());
    }
    if (!error_.empty() || (!j.contains("error") && !j.contains("errorDetail"))) return;
    const json detail = j.value("errorDetail", json::object());
    const json message = detail.is_object() ? detail.value("message", json()) : json();
    const json error = j.value("error", json());
    if (message.is_string()) {
      error_ = message.get<std::string>();
    } else if (error.is_string()) {
      error_ = error.get<std::string>();
    }
    while (!error_.empty() && (error_.back() == '\n' || error_.back() == '\r')) error_.pop_back();
    if (error_.empty()) error_ = "(no message)";
  }

  void Output(const std::string& text) {
    if (output_ && !text.empty()) output_(text.back() == '\n' ? text : text + "\n");
  }

  const std::function<void(std::string_view)>& output_;
  std::string pending_;  // the start of a line whose end has not arrived yet
  std::string error_;
  std::string raw_;
};

std::string Seconds(std::chrono::milliseconds d) {
  return fmt::format("{:.1f} s", std::chrono::duration<double>(d).count());
}

}  // namespace

Result<std::string> ContainerRuntime::BuildImage(const ImageBuildRequest& req) {
  namespace fs = std::filesystem;
  if (req.context_dir.empty() || req.context_dir.front() != '/') {
    return InvalidArgument(fmt::format("{}: the build context \"{}\" is not an absolute path",
                                       flavor_, req.context_dir));
  }
  if (req.tag.empty())
    return InvalidArgument(fmt::format("{}: an image build needs a tag", flavor_));
  const fs::path containerfile(req.containerfile);
  if (req.containerfile.empty() || containerfile.is_absolute() ||
      std::any_of(containerfile.begin(), containerfile.end(),
                  [](const fs::path& part) { return part == ".."; })) {
    return InvalidArgument(
        fmt::format("{}: the Containerfile \"{}\" must be a relative path inside the build context",
                    flavor_, req.containerfile));
  }
  std::error_code ec;
  if (!fs::is_regular_file(fs::path(req.context_dir) / containerfile, ec)) {
    return NotFound(fmt::format("{}: there is no file {} in the build context {}", flavor_,
                                req.containerfile, req.context_dir));
  }
  Result<std::string> context = TarDirectory(req.context_dir, {".git"}, kMaxBuildContext);
  if (!context.ok()) {
    return Status(context.status().code(),
                  fmt::format("{}: build context {}: {}", flavor_, req.context_dir,
                              context.status().message()));
  }

  const std::string what = fmt::format("build of image {}", req.tag);
  HttpClientRequest http;
  http.method = "POST";
  http.target = fmt::format("{}/build?t={}&dockerfile={}&rm=1&forcerm=1", kApi, UrlEncode(req.tag),
                            UrlEncode(req.containerfile));
  http.headers.emplace_back("Content-Type", "application/x-tar");
  http.body = std::move(*context);
  BuildStream stream(req.output);
  const std::atomic<bool>* cancel = req.cancel;
  Result<HttpClientResponse> r = HttpCallStreaming(
      address_, http, req.timeout, [&](std::string_view piece) { stream.Feed(piece); },
      [cancel] { return cancel != nullptr && cancel->load(); });
  stream.Flush();
  if (!r.ok()) {
    if (r.status().code() == StatusCode::kDeadlineExceeded) {
      return Status(StatusCode::kDeadlineExceeded,
                    fmt::format("{}: {} timed out after {}", flavor_, what, Seconds(req.timeout)));
    }
    if (cancel != nullptr && cancel->load()) return FailedPrecondition("cancelled");
    return Status(r.status().code(), fmt::format("{}: {}: engine at {}: {}", flavor_, what,
                                                 address_, r.status().message()));
  }
  if (r->status != 200) {
    HttpClientResponse answer = std::move(*r);
    answer.body = stream.raw();
    return EngineClient(address_, flavor_).Error(what, answer);
  }
  if (!stream.error().empty()) {
    return FailedPrecondition(fmt::format("{}: {} failed: {}", flavor_, what, stream.error()));
  }

  // The engine said nothing went wrong: the tag must name an image now.
  const EngineClient engine(address_, flavor_);
  const std::string inspect_what = fmt::format("inspect image {}", req.tag);
  Result<HttpClientResponse> image =
      engine.Call(inspect_what, "GET", fmt::format("/images/{}/json", UrlEncode(req.tag, "/:")));
  if (!image.ok()) return image.status();
  if (image->status != 200) return engine.Error(inspect_what + " after its build", *image);
  const json info = json::parse(image->body, nullptr, /*allow_exceptions=*/false);
  if (!info.is_object() || !info.contains("Id") || !info["Id"].is_string()) {
    return Internal(fmt::format("{}: {}: no Id in the answer", flavor_, inspect_what));
  }
  return info["Id"].get<std::string>();
}

Status ContainerRuntime::RemoveImage(const std::string& tag) {
  const EngineClient engine(address_, flavor_);
  const std::string what = fmt::format("remove image {}", tag);
  Result<HttpClientResponse> r =
      engine.Call(what, "DELETE", fmt::format("/images/{}", UrlEncode(tag, "/:")));
  if (!r.ok()) return r.status();
  if (r->status == 200) return Status::Ok();
  if (r->status == 404) return NotFound(fmt::format("{}: no image {}", flavor_, tag));
  return engine.Error(what, *r);
}

}  // namespace bluegreen::runtime
