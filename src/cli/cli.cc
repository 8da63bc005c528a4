// The client commands: HTTP calls to serve, error reporting and the polling loops of up/deploy.
#include "cli/cli.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cli/api_client.h"
#include "common/net.h"
#include "stack/stack_spec.h"

namespace bluegreen::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string TrimSpace(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

struct WaitOutcome {
  int exit_code = kExitOk;  // != 0 only for an API error (already reported)
  bool timed_out = false;
  WaitCheck check;
  json status;
};

// Polls the stack's status every poll_interval until `check` is no longer kWaiting or `timeout`
// has passed. `first` is a status already in hand (null for none). Progress lines that changed
// since the last poll are printed (text mode only).
WaitOutcome WaitFor(const ClientOptions& c, const ApiClient& api, const std::string& name,
                    std::chrono::milliseconds timeout, json first,
                    const std::function<WaitCheck(const json&)>& check,
                    const std::function<std::vector<std::string>(const json&)>& progress) {
  const Clock::time_point deadline = Clock::now() + timeout;
  WaitOutcome outcome;
  outcome.status = std::move(first);
  std::set<std::string> shown;
  bool announced = false;
  int failures = 0;
  for (;;) {
    if (outcome.status.is_null()) {
      Answer a = api.Call("GET", StackPath(name));
      if (a.exit_code == kExitUnreachable && a.http_status == 0 && ++failures < kMaxPollFailures &&
          Clock::now() < deadline) {
        std::this_thread::sleep_for(c.poll_interval);
        continue;
      }
      if (a.exit_code != kExitOk) {
        outcome.exit_code = Report(c, api, a, "status", name);
        return outcome;
      }
      failures = 0;
      outcome.status = std::move(a.body);
    }
    outcome.check = check(outcome.status);
    const bool over = outcome.check.state != WaitCheck::kWaiting;
    // Done at the first look: nothing to show. Otherwise the progress, to its last state.
    if (over && !announced) return outcome;
    if (!c.json) {
      if (!announced) {
        *c.out << "waiting (up to " << FormatDuration(timeout) << ")...\n";
      }
      std::set<std::string> now_shown;
      for (std::string& line : progress(outcome.status)) {
        if (!shown.contains(line)) *c.out << "  " << line << "\n";
        now_shown.insert(std::move(line));
      }
      shown = std::move(now_shown);
      c.out->flush();
    }
    announced = true;
    if (over) return outcome;
    Clock::time_point now = Clock::now();
    if (now >= deadline) {
      outcome.timed_out = true;
      return outcome;
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(c.poll_interval, deadline - now));
    outcome.status = json();
  }
}

// Log files of the tasks of `version` of `services`, for the hint after a failed rollout.
std::vector<std::string> TaskLogs(const json& status, const std::vector<std::string>& services,
                                  const std::string& version) {
  std::vector<std::string> logs;
  if (!status.is_object() || !status.contains("tasks") || !status["tasks"].is_array()) {
    return logs;
  }
  for (const json& t : status["tasks"]) {
    if (!t.is_object()) continue;
    auto str = [&t](const char* key) {
      auto it = t.find(key);
      return it != t.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    if (str("version") != version || str("log").empty()) continue;
    if (std::find(services.begin(), services.end(), str("service")) == services.end()) continue;
    logs.push_back(str("log"));
    if (logs.size() == 4) break;
  }
  return logs;
}

std::vector<std::string> StringList(const json& j) {
  std::vector<std::string> out;
  if (!j.is_array()) return out;
  for (const json& e : j) {
    if (e.is_string()) out.push_back(e.get<std::string>());
  }
  return out;
}

}  // namespace

std::string DefaultApiAddress() {
  const char* env = std::getenv("BLUEGREEN_API");
  std::string api = env != nullptr ? TrimSpace(env) : "";
  return api.empty() ? kDefaultApi : api;
}

Result<std::string> LoadToken(std::string_view env_token, const std::string& state_dir) {
  std::string token = TrimSpace(env_token);
  if (!token.empty()) return token;
  std::string path = (std::filesystem::path(state_dir) / "admin.token").string();
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  std::string why;
  if (!in) {
    int err = errno != 0 ? errno : EIO;
    why = err == ENOENT ? path + " does not exist (serve writes it on its first start)"
                        : path + " cannot be read (" + std::strerror(err) + ")";
  } else {
    std::stringstream text;
    text << in.rdbuf();
    token = TrimSpace(text.str());
    if (!token.empty()) return token;
    why = path + " is empty";
  }
  return Status(StatusCode::kUnauthenticated,
                "no API token: BLUEGREEN_TOKEN is not set and " + why +
                    "\nhint: set BLUEGREEN_TOKEN, or pass --state-dir DIR (or set "
                    "BLUEGREEN_STATE_DIR) with the state directory `bluegreen serve` runs with");
}

int RunUp(const ClientOptions& c, const UpOptions& o) {
  std::error_code ec;
  if (std::filesystem::is_directory(o.file, ec)) {
    *c.err << "error: cannot read stack file " << o.file << ": it is a directory\n";
    return kExitBadInput;
  }
  errno = 0;
  std::ifstream in(o.file, std::ios::binary);
  if (!in) {
    *c.err << "error: cannot read stack file " << o.file << ": "
           << (errno != 0 ? std::strerror(errno) : "cannot open it") << "\n";
    return kExitBadInput;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();

  Result<stack::StackSpec> spec = stack::ParseStackSpec(text);
  if (!spec.ok()) {
    *c.err << PrefixLines(o.file, spec.status().message());
    *c.err << "error: " << o.file << " is not a valid stack file (see docs/stack-file.md); "
           << "nothing was sent to serve\n";
    return kExitBadInput;
  }
  const std::string name = spec->name;

  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;

  Answer a = api.Call("PUT", StackPath(name), std::move(text), "application/yaml");
  if (a.exit_code != kExitOk) {
    if (a.http_status == 400 && a.error.code == "invalid_stack_file") {
      *c.err << PrefixLines(o.file, a.error.message);
      *c.err << "error: serve refused " << o.file << " as a stack file; nothing was changed\n";
      return kExitBadInput;
    }
    return Report(c, api, a, "up", name);
  }
  json answer = std::move(a.body);
  if (!c.json) {
    *c.out << FormatUpAnswer(answer);
    c.out->flush();
  }
  if (!o.wait) {
    if (c.json) PrintJson(c, answer);
    return kExitOk;
  }

  json first = answer.is_object() && answer.contains("status") && answer["status"].is_object()
                   ? answer["status"]
                   : json();
  WaitOutcome w = WaitFor(c, api, name, o.timeout, std::move(first), CheckUpDone, UpProgress);
  if (w.exit_code != kExitOk) return w.exit_code;
  if (c.json) {
    if (answer.is_object()) answer["status"] = w.status;
    PrintJson(c, answer);
  }
  if (w.timed_out) {
    *c.err << "error: timed out after " << FormatDuration(o.timeout) << " waiting for stack "
           << name << ": " << w.check.detail << "\n"
           << "hint: see what the tasks are doing (their logs are listed there): bluegreen status "
           << name << "\n";
    return kExitFailed;
  }
  if (w.check.state == WaitCheck::kFailed) {
    *c.err << "error: stack " << name << " has no version running: " << w.check.detail << "\n"
           << "hint: after fixing the cause, deploy again: bluegreen deploy " << name
           << " --version V (see: bluegreen status " << name << ")\n";
    return kExitFailed;
  }
  if (w.check.state == WaitCheck::kNoVersion) {
    if (!c.json) {
      *c.out << "no version deployed yet: run `bluegreen deploy " << name
             << " --version V --artifact DIR` (or push a commit when the pipeline is set up)\n";
    }
    return kExitOk;
  }
  if (!c.json) *c.out << FormatStatus(w.status);
  return kExitOk;
}

int RunDown(const ClientOptions& c, const DownOptions& o) {
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;
  if (!c.json) {
    *c.out << "removing stack " << o.name << " (its tasks drain first)...\n";
    c.out->flush();
  }
  Answer a =
      api.CallWithTimeout(o.timeout, "DELETE", StackPath(o.name) + (o.purge ? "?purge=true" : ""));
  if (a.transport.code() == StatusCode::kDeadlineExceeded) {
    *c.err << "error: serve did not finish removing stack " << o.name << " within "
           << FormatDuration(o.timeout) << "\n"
           << "hint: the removal goes on in serve; check with: bluegreen stacks\n";
    return kExitFailed;
  }
  if (a.exit_code != kExitOk) return Report(c, api, a, "down", o.name);
  if (c.json) {
    PrintJson(c, a.body);
  } else {
    *c.out << FormatDownAnswer(a.body);
  }
  return kExitOk;
}

int RunStatus(const ClientOptions& c, const std::string& name) {
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;
  Answer a = api.Call("GET", StackPath(name));
  if (a.exit_code != kExitOk) return Report(c, api, a, "status", name);
  if (c.json) {
    PrintJson(c, a.body);
  } else {
    *c.out << FormatStatus(a.body);
  }
  return kExitOk;
}

int RunStacks(const ClientOptions& c) {
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;
  Answer a = api.Call("GET", "/api/v1/stacks");
  if (a.exit_code != kExitOk) return Report(c, api, a, "stacks", "");
  if (c.json) {
    PrintJson(c, a.body);
  } else {
    *c.out << FormatStacks(a.body);
  }
  return kExitOk;
}

int RunDeploy(const ClientOptions& c, const DeployOptions& o) {
  if (!o.artifact_dir.empty() && !o.image.empty()) {
    *c.err << "error: give --artifact or --image, not both\n";
    return kExitBadInput;
  }
  if (o.version.empty()) {
    *c.err << "error: --version is empty\n";
    return kExitBadInput;
  }
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;
  const std::string path = StackPath(o.name);

  if (!o.artifact_dir.empty() || !o.image.empty()) {
    json version = {{"version", o.version}};
    std::string what;
    if (!o.artifact_dir.empty()) {
      std::error_code ec;
      std::filesystem::path dir = std::filesystem::absolute(o.artifact_dir, ec);
      if (ec) {
        *c.err << "error: --artifact " << o.artifact_dir << ": " << ec.message() << "\n";
        return kExitBadInput;
      }
      std::string abs = dir.lexically_normal().string();
      while (abs.size() > 1 && abs.back() == '/') abs.pop_back();
      version["artifact_dir"] = abs;
      what = "artifact " + abs;
    } else {
      version["image"] = o.image;
      what = "image " + o.image;
    }
    Answer r = api.Call("POST", path + "/versions",
                        version.dump(-1, ' ', false, json::error_handler_t::replace));
    if (r.exit_code != kExitOk) return Report(c, api, r, "versions", o.name);
    if (!c.json) {
      *c.out << (r.http_status == 201 ? "registered version " : "version ") << o.version
             << (r.http_status == 201 ? "" : " is already registered") << " (" << what << ")\n";
    }
  }

  json request = {{"version", o.version}};
  Answer d = api.Call("POST", path + "/deploy",
                      request.dump(-1, ' ', false, json::error_handler_t::replace));
  if (d.exit_code != kExitOk) return Report(c, api, d, "deploy", o.name);
  json answer = std::move(d.body);
  std::vector<std::string> services =
      StringList(answer.is_object() && answer.contains("services") ? answer["services"] : json());
  if (services.empty()) {
    // Serve had nothing to change: the version already runs where a deploy would put it.
    if (c.json) {
      PrintJson(c, answer);
    } else {
      *c.out << o.version << " is already deployed: nothing to change\n";
    }
    return kExitOk;
  }
  if (!c.json) {
    std::string list;
    for (const std::string& s : services) list += (list.empty() ? "" : ", ") + s;
    *c.out << "deploying " << o.version << " to " << (list.empty() ? "?" : list)
           << (services.size() == 1 ? " (the side behind the test listener)"
                                    : " (no version was deployed yet: both sides)")
           << "\n";
    c.out->flush();
  }
  if (!o.wait) {
    if (c.json) {
      PrintJson(c, answer);
    } else {
      *c.out << "follow it with: bluegreen status " << o.name << "\n";
    }
    return kExitOk;
  }

  auto check = [&](const json& status) { return CheckDeployDone(status, services, o.version); };
  auto progress = [&](const json& status) { return DeployProgress(status, services, o.version); };
  WaitOutcome w = WaitFor(c, api, o.name, o.timeout, json(), check, progress);
  if (w.exit_code != kExitOk) return w.exit_code;
  if (c.json) {
    if (answer.is_object()) answer["status"] = w.status;
    PrintJson(c, answer);
  }
  if (w.timed_out) {
    *c.err << "error: timed out after " << FormatDuration(o.timeout)
           << " waiting for the deploy of " << o.version << ": " << w.check.detail << "\n"
           << "hint: the rollout may still finish: follow it with: bluegreen status " << o.name
           << "\n";
    return kExitFailed;
  }
  if (w.check.state == WaitCheck::kFailed) {
    *c.err << "error: the deploy of " << o.version << " failed: " << w.check.detail << "\n";
    std::string hint;
    std::vector<std::string> logs = TaskLogs(w.status, services, o.version);
    if (!logs.empty()) {
      hint = "the new tasks' logs:";
      for (const std::string& log : logs) hint += " " + log;
    } else {
      hint = "see: bluegreen status " + o.name;
    }
    *c.err << "hint: " << hint << "\n";
    return kExitFailed;
  }
  if (!c.json) {
    std::string list;
    for (const std::string& s : services) list += (list.empty() ? "" : ", ") + s;
    *c.out << "deployed " << o.version << " to " << list << "\n" << FormatStatus(w.status);
  }
  return kExitOk;
}

}  // namespace bluegreen::cli
