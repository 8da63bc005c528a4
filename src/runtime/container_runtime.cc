#include "runtime/container_runtime.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string_view>
#include <thread>
#include <utility>

#include "common/http_client.h"

namespace bluegreen::runtime {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr std::string_view kApi = "/v1.41";
constexpr std::string_view kTaskLabel = "io.bluegreen.task";
// Engine calls that do not wait for the container itself (create, start, inspect, remove).
constexpr milliseconds kCallTimeout = seconds(60);
// How long Stop waits beyond the grace period for the engine to answer.
constexpr milliseconds kStopSlack = seconds(60);
// How long a removal that the engine reports as already in progress is waited for.
constexpr milliseconds kRemovalWait = seconds(10);
constexpr size_t kMaxMessage = 500;

// Percent-encodes everything but RFC 3986's unreserved characters.
std::string UrlEncode(std::string_view s) {
  std::string out;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
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
    : address_("unix:" + std::move(socket_path)), flavor_(std::move(flavor)) {}

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

}  // namespace bluegreen::runtime
