// The pure half of the CLI: exit codes, error texts and the text forms of API answers.
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include "cli/cli.h"

namespace bluegreen::cli {
namespace {

using nlohmann::json;

// The member `key` of `j`, or null when `j` is not an object or has no such member.
const json& Get(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

// A scalar as people read it; `absent` for null or a missing member.
std::string Text(const json& j, std::string_view absent = "-") {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_number_integer() || j.is_number_unsigned()) return std::to_string(j.get<int64_t>());
  if (j.is_boolean()) return j.get<bool>() ? "true" : "false";
  if (j.is_null()) return std::string(absent);
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

int64_t Int(const json& j) {
  return (j.is_number_integer() || j.is_number_unsigned()) ? j.get<int64_t>() : 0;
}

const json& Array(const json& j) {
  static const json kEmpty = json::array();
  return j.is_array() ? j : kEmpty;
}

// The service of `status` whose identifier is `identifier`, or null.
const json& FindService(const json& status, std::string_view identifier) {
  static const json kNull;
  for (const json& s : Array(Get(status, "services"))) {
    if (Text(Get(s, "identifier"), "") == identifier) return s;
  }
  return kNull;
}

const json& FindTargetGroup(const json& status, std::string_view name) {
  static const json kNull;
  for (const json& g : Array(Get(status, "target_groups"))) {
    if (Text(Get(g, "name"), "") == name) return g;
  }
  return kNull;
}

// Rows padded to column widths and joined by two spaces; the last column is not padded and
// trailing spaces are cut. Every line starts with `indent` and ends in '\n'.
std::string Table(const std::vector<std::vector<std::string>>& rows, std::string_view indent) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line(indent);
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(width[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  }
  return out;
}

std::string Join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += sep;
    out += parts[i];
  }
  return out;
}

// "rollout v3: in_progress", "rollout v3: failed: new tasks not healthy", or "" for no rollout.
std::string RolloutText(const json& rollout) {
  if (!rollout.is_object()) return "";
  std::string text =
      "rollout " + Text(Get(rollout, "version")) + ": " + Text(Get(rollout, "state"));
  std::string error = Text(Get(rollout, "error"), "");
  if (!error.empty()) text += ": " + error;
  return text;
}

bool RolloutInProgress(const json& rollout) {
  return rollout.is_object() && Text(Get(rollout, "state"), "") == "in_progress";
}

std::string RunningText(const json& service) {
  return std::to_string(Int(Get(service, "running_count"))) + "/" +
         std::to_string(Int(Get(service, "desired_count"))) + " running";
}

std::string Trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

// "127.0.0.1:7070" for "http://127.0.0.1:7070/" (what `serve --api` takes).
std::string ListenForm(std::string_view api) {
  if (api.substr(0, 7) == "http://") {
    api.remove_prefix(7);
    size_t slash = api.find('/');
    if (slash != std::string_view::npos) api = api.substr(0, slash);
  }
  return std::string(api);
}

// `s` cut to `max_chars` code points (the last three being "..." when cut), control characters
// as spaces; a UTF-8 sequence is never split.
std::string Truncate(std::string_view s, size_t max_chars) {
  std::string clean;
  for (char ch : s) clean += (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ? ' ' : ch;
  auto chars = [](std::string_view t) {
    size_t n = 0;
    for (char ch : t) n += (static_cast<unsigned char>(ch) & 0xC0) != 0x80;
    return n;
  };
  if (chars(clean) <= max_chars) return clean;
  const size_t keep = max_chars > 3 ? max_chars - 3 : 0;
  size_t n = 0;
  size_t i = 0;
  for (; i < clean.size(); ++i) {
    if ((static_cast<unsigned char>(clean[i]) & 0xC0) != 0x80) {
      if (n == keep) break;
      ++n;
    }
  }
  std::string kept = clean.substr(0, i);
  while (!kept.empty() && kept.back() == ' ') kept.pop_back();
  return kept + "...";
}

// A string member, or `absent` when it is missing, not a string or empty.
std::string NonEmpty(const json& j, std::string_view absent = "-") {
  std::string text = j.is_string() ? j.get<std::string>() : "";
  return text.empty() ? std::string(absent) : text;
}

// The port of the listener named `name` ("production", "test"), or "?".
std::string ListenerPort(const json& status, std::string_view name) {
  for (const json& l : Array(Get(status, "listeners"))) {
    if (Text(Get(l, "name"), "") == name) return Text(Get(l, "port"), "?");
  }
  return "?";
}

// "execution 3 (version 3-9f1c2ab)" for the execution of an approve/reject/release answer.
std::string ExecutionName(const json& e) {
  std::string out = "execution " + Text(Get(e, "id"), "?");
  std::string version = NonEmpty(Get(e, "version"), "");
  if (!version.empty()) out += " (version " + version + ")";
  return out;
}

}  // namespace

int ExitCodeForHttpStatus(int http_status) {
  if (http_status >= 200 && http_status < 300) return kExitOk;
  switch (http_status) {
    case 400:
    case 413:
      return kExitBadInput;
    case 401:
    case 403:
      return kExitUnauthorized;
    case 404:
      return kExitNotFound;
    case 409:
      return kExitConflict;
    default:
      return kExitFailed;
  }
}

int ExitCodeForTransportError(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk:
      return kExitOk;
    case StatusCode::kInvalidArgument:
      return kExitBadInput;
    case StatusCode::kResourceExhausted:
      return kExitFailed;
    default:
      return kExitUnreachable;
  }
}

ApiError ParseApiError(int http_status, std::string_view body) {
  json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  const json& error = Get(doc, "error");
  if (error.is_object() && Get(error, "message").is_string()) {
    return {Text(Get(error, "code"), ""), Get(error, "message").get<std::string>()};
  }
  if (error.is_string()) return {"", error.get<std::string>()};
  ApiError e;
  e.code = "http_" + std::to_string(http_status);
  e.message = "serve answered HTTP " + std::to_string(http_status);
  std::string excerpt = Trim(body.substr(0, 200));
  std::replace(excerpt.begin(), excerpt.end(), '\n', ' ');
  std::replace(excerpt.begin(), excerpt.end(), '\r', ' ');
  if (!excerpt.empty()) e.message += ": " + excerpt;
  return e;
}

std::string UnreachableMessage(const std::string& api, const Status& status,
                               const std::string& state_dir) {
  std::string cause =
      status.code() == StatusCode::kDeadlineExceeded ? "no answer in time" : status.message();
  std::string start = "bluegreen serve --state-dir " + (state_dir.empty() ? "DIR" : state_dir);
  std::string listen = ListenForm(api);
  if (listen != ListenForm(kDefaultApi)) start += " --api " + listen;
  return "cannot reach bluegreen serve at " + api + " (" + cause + ")\n" +
         "is `bluegreen serve` running? start it with: " + start + "\n" +
         "(or point the CLI at the right address with --api URL or BLUEGREEN_API)";
}

std::string HintForApiError(std::string_view command, const std::string& name, int http_status,
                            std::string_view code) {
  switch (http_status) {
    case 401:
      return "use a valid token of this serve (a revoked one no longer works): set "
             "BLUEGREEN_TOKEN, or pass --state-dir with the directory serve was started with (its "
             "admin.token is read)";
    case 403: {
      const bool approver = command == "approve" || command == "reject" ||
                            command == "rollback" || command == "release";
      const std::string role = approver ? "approver" : "admin";
      return "ask an admin for a token with role " + role + " (bluegreen token create NAME " +
             "--role " + role + ") and use it: set BLUEGREEN_TOKEN";
    }
    case 404:
      if (command == "token") return "list the tokens with: bluegreen token list";
      if (command == "logs") {
        return "list the executions with: bluegreen executions " + name +
               " (and the stacks with: bluegreen stacks)";
      }
      if (command == "deploy" || command == "versions") {
        return "a version is registered by deploying it with --artifact DIR or --image IMAGE; "
               "the stacks are listed by: bluegreen stacks";
      }
      return "list the stacks with: bluegreen stacks";
    case 409:
      if (command == "up") {
        return "a listener port in the stack file may be used by another stack (see: bluegreen "
               "stacks), or a rollout is in progress (see: bluegreen status " +
               name + ")";
      }
      if (command == "versions") {
        return "give this build a new version name, or deploy the registered one without "
               "--artifact/--image";
      }
      if (command == "release") return "";  // serve's message says what the stack lacks
      if (command == "token") {
        return "choose another name; the tokens are listed by: bluegreen token list";
      }
      if (command == "approve" || command == "reject") {
        return "see where the executions of " + name + " are: bluegreen executions " + name;
      }
      if (command == "rollback") {
        return "see the executions and what runs where: bluegreen executions " + name +
               "; bluegreen status " + name;
      }
      return "a rollout is in progress: follow it with: bluegreen status " + name;
    case 413:
      return "the request body is over the API's limit of 8 MiB";
    case 500:
      return "serve failed and nothing was changed; see serve's log";
    case 503:
      if (code == "runtime_unavailable") {
        return "start the container engine's API service again (systemd: systemctl start "
               "podman.socket); `bluegreen status " +
               name + "` shows when serve sees it answer";
      }
      return "the change is committed and will be applied when the proxy is back; see serve's log";
    case 507:
      return "nothing was changed: free space in serve's state directory (or make it writable), "
             "then run the command again; serve needs no restart";
    default:
      break;
  }
  (void)code;
  return "";
}

std::string PrefixLines(std::string_view prefix, std::string_view text) {
  std::string out;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) {
      out.append(prefix);
      out += ": ";
      out.append(line);
      out += '\n';
    }
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return out;
}

std::string EscapePathSegment(std::string_view segment) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : segment) {
    bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

namespace {

// "RUNTIME UNREACHABLE since 2026-11-29 05:00:00 UTC: <error>" when a `runtime_status` says the
// runtime does not answer; "" otherwise (reachable, or absent as from an older serve).
std::string RuntimeUnreachable(const json& runtime_status) {
  const json& reachable = Get(runtime_status, "reachable");
  if (!reachable.is_boolean() || reachable.get<bool>()) return "";
  const json& since = Get(runtime_status, "since");
  std::string when;
  if (since.is_number_integer()) {
    when = fmt::format(" since {:%Y-%m-%d %H:%M:%S} UTC",
                       fmt::gmtime(static_cast<std::time_t>(since.get<int64_t>())));
  }
  return "RUNTIME UNREACHABLE" + when + ": " + Text(Get(runtime_status, "error"), "?");
}

// The progress line of `up` and `deploy` while the stack's runtime does not answer: its tasks
// cannot start, so the wait would otherwise look stuck without a reason.
void AddRuntimeWait(const json& status, std::vector<std::string>* lines) {
  std::string unreachable = RuntimeUnreachable(Get(status, "runtime_status"));
  if (!unreachable.empty()) lines->push_back(unreachable + " (waiting for it)");
}

}  // namespace

std::string FormatStatus(const json& status) {
  std::string out =
      Text(Get(status, "name"), "?") + " (runtime: " + Text(Get(status, "runtime"), "?") + ")\n";
  if (std::string unreachable = RuntimeUnreachable(Get(status, "runtime_status"));
      !unreachable.empty()) {
    out += "  " + unreachable +
           "\n    its tasks are left as they are (they keep serving; serve cannot see them); no "
           "task is started, stopped or replaced, and deploys are refused until it answers\n";
  }
  const json& live = Get(status, "live");

  std::vector<std::vector<std::string>> listeners;
  for (const json& l : Array(Get(status, "listeners"))) {
    std::string group = Text(Get(l, "target_group"));
    const json& tags = Get(FindTargetGroup(status, group), "tags");
    std::string identifier = Text(Get(tags, "Identifier"));
    std::string version = Text(Get(tags, "Image"), "");
    if (version.empty()) version = Text(Get(FindService(status, identifier), "version"));
    bool is_live = live.is_string() ? identifier == live.get<std::string>()
                                    : Text(Get(tags, "IsProduction"), "") == "true";
    listeners.push_back({Text(Get(l, "name")), ":" + Text(Get(l, "port")), "-> " + group,
                         identifier, version, is_live ? "LIVE" : ""});
  }
  if (listeners.empty()) {
    out += "  no listeners\n";
  } else {
    out += Table(listeners, "  ");
  }

  const json& execution = Get(status, "execution");
  if (execution.is_object()) {
    out += "  " + ExecutionLine(execution) + "\n";
    const std::string state = Text(Get(execution, "status"), "");
    const std::string reason = Text(Get(execution, "reason"), "");
    if (state == "WaitingForApproval") {
      out += "    review it on the test listener :" + ListenerPort(status, "test") +
             ", then: bluegreen approve " + Text(Get(status, "name"), "NAME") + "\n";
    } else if (ExecutionEnded(execution) && !reason.empty()) {
      out += "    " + Truncate(reason, 200) + "\n";
    }
  }

  std::vector<std::vector<std::string>> services;
  for (const json& s : Array(Get(status, "services"))) {
    services.push_back({Text(Get(s, "identifier")), Text(Get(s, "version")), RunningText(s),
                        RolloutText(Get(s, "rollout"))});
  }
  if (!services.empty()) out += "  services\n" + Table(services, "    ");

  std::vector<std::vector<std::string>> targets;
  for (const json& g : Array(Get(status, "target_groups"))) {
    std::string group = Text(Get(g, "name"));
    const json& list = Array(Get(g, "targets"));
    if (list.empty()) targets.push_back({group, "no targets", ""});
    for (const json& t : list) {
      targets.push_back({group, Text(Get(t, "address")), Text(Get(t, "health"))});
    }
  }
  if (!targets.empty()) out += "  targets\n" + Table(targets, "    ");

  // Running tasks are the targets above and stopped ones are history: show the others (starting,
  // draining, exited), with their logs, which is where a stuck or failed rollout is explained.
  std::vector<std::vector<std::string>> tasks;
  for (const json& t : Array(Get(status, "tasks"))) {
    std::string state = Text(Get(t, "state"));
    if (state == "running" || state == "stopped") continue;
    std::string log = Text(Get(t, "log"), "");
    tasks.push_back({"task " + Text(Get(t, "id")), Text(Get(t, "service")), Text(Get(t, "version")),
                     state, Text(Get(t, "address")), log.empty() ? "" : "log " + log});
  }
  if (!tasks.empty()) out += "  tasks\n" + Table(tasks, "    ");
  return out;
}

std::string FormatStacks(const json& answer) {
  const json& stacks = Array(Get(answer, "stacks"));
  if (stacks.empty()) return "no stacks yet: create one with bluegreen up -f stack.yaml\n";
  std::vector<std::vector<std::string>> rows = {{"NAME", "LIVE", "PROD", "TEST", "SERVICES"}};
  std::string notes;  // one line per stack whose runtime does not answer, under the table
  for (const json& st : stacks) {
    std::string live = Text(Get(st, "live"));
    std::vector<std::string> services;
    for (const json& s : Array(Get(st, "services"))) {
      std::string identifier = Text(Get(s, "identifier"));
      std::string version = Text(Get(s, "version"));
      if (identifier == live && version != "-") live += " " + version;
      services.push_back(identifier + " " + version + " " +
                         std::to_string(Int(Get(s, "running_count"))) + "/" +
                         std::to_string(Int(Get(s, "desired_count"))));
    }
    rows.push_back({Text(Get(st, "name")), live, Text(Get(st, "production_port")),
                    Text(Get(st, "test_port")), services.empty() ? "-" : Join(services, ", ")});
    if (std::string unreachable = RuntimeUnreachable(Get(st, "runtime_status"));
        !unreachable.empty()) {
      notes += Text(Get(st, "name")) + " (runtime " + Text(Get(st, "runtime")) + "): " +
               unreachable + "\n";
    }
  }
  return Table(rows, "") + notes;
}

std::string FormatUpAnswer(const json& answer) {
  std::string name = Text(Get(answer, "name"), "?");
  const json& changes = Array(Get(answer, "changes"));
  std::string out;
  if (Get(answer, "created") == json(true)) {
    out = "created stack " + name + "\n";
  } else if (changes.empty()) {
    out = "stack " + name + " is up to date\n";
  } else {
    out = "updated stack " + name + "\n";
  }
  for (const json& c : changes) out += "  + " + Text(c) + "\n";
  return out;
}

std::string FormatDownAnswer(const json& answer) {
  std::string name = Text(Get(answer, "name"), "?");
  if (Get(answer, "purged") == json(true)) {
    return "removed stack " + name + " and its history (versions, events)\n";
  }
  return "removed stack " + name + " (history kept; --purge to delete it)\n";
}

WaitCheck CheckUpDone(const json& status) {
  bool any_version = false;
  bool any_rollout = false;
  std::vector<std::string> missing;
  std::vector<std::string> failed;
  for (const json& s : Array(Get(status, "services"))) {
    std::string identifier = Text(Get(s, "identifier"));
    const json& rollout = Get(s, "rollout");
    if (!Get(s, "version").is_string() && rollout.is_object() &&
        Text(Get(rollout, "state"), "") == "failed") {
      std::string error = Text(Get(rollout, "error"), "");
      failed.push_back(identifier + ": the rollout of " + Text(Get(rollout, "version")) +
                       " failed" + (error.empty() ? "" : ": " + error));
    }
    if (RolloutInProgress(rollout)) {
      any_rollout = true;
      missing.push_back(identifier + ": rollout of " + Text(Get(rollout, "version")) +
                        " in progress");
    }
    if (!Get(s, "version").is_string()) continue;
    any_version = true;
    if (Int(Get(s, "running_count")) != Int(Get(s, "desired_count"))) {
      missing.push_back(identifier + " " + Text(Get(s, "version")) + ": " + RunningText(s));
    }
  }
  if (!failed.empty() && !any_rollout) return {WaitCheck::kFailed, Join(failed, "; ")};
  if (!any_version && !any_rollout) return {WaitCheck::kNoVersion, ""};
  if (missing.empty()) return {WaitCheck::kDone, ""};
  return {WaitCheck::kWaiting, Join(missing, "; ")};
}

WaitCheck CheckDeployDone(const json& status, const std::vector<std::string>& services,
                          std::string_view version) {
  std::vector<std::string> missing;
  std::vector<std::string> failed;
  for (const std::string& identifier : services) {
    const json& s = FindService(status, identifier);
    if (!s.is_object()) {
      missing.push_back(identifier + ": not in the stack's status");
      continue;
    }
    const json& rollout = Get(s, "rollout");
    std::string rollout_version = Text(Get(rollout, "version"), "");
    bool ours = rollout_version.empty() || rollout_version == version;
    if (rollout.is_object() && ours && Text(Get(rollout, "state"), "") == "failed") {
      std::string error = Text(Get(rollout, "error"), "");
      failed.push_back(identifier + ": " + (error.empty() ? "the rollout failed" : error));
      continue;
    }
    if (rollout.is_null() && Text(Get(s, "version"), "") == version) continue;
    if (RolloutInProgress(rollout)) {
      missing.push_back(identifier + ": rollout of " + Text(Get(rollout, "version")) +
                        " in progress");
    } else {
      missing.push_back(identifier + ": runs " + Text(Get(s, "version")) + ", not " +
                        std::string(version));
    }
  }
  if (!failed.empty()) return {WaitCheck::kFailed, Join(failed, "; ")};
  if (!missing.empty()) return {WaitCheck::kWaiting, Join(missing, "; ")};
  return {WaitCheck::kDone, ""};
}

std::vector<std::string> UpProgress(const json& status) {
  std::vector<std::string> lines;
  for (const json& s : Array(Get(status, "services"))) {
    const json& rollout = Get(s, "rollout");
    bool has_version = Get(s, "version").is_string();
    if (!has_version && !RolloutInProgress(rollout)) continue;
    std::string line =
        Text(Get(s, "identifier")) + " " + Text(Get(s, "version")) + ": " + RunningText(s);
    if (RolloutInProgress(rollout)) {
      line += ", rollout of " + Text(Get(rollout, "version")) + " in progress";
    }
    lines.push_back(std::move(line));
  }
  AddRuntimeWait(status, &lines);
  return lines;
}

std::vector<std::string> DeployProgress(const json& status,
                                        const std::vector<std::string>& services,
                                        std::string_view version) {
  std::vector<std::string> lines;
  for (const std::string& identifier : services) {
    const json& s = FindService(status, identifier);
    std::map<std::string, int> by_state;
    for (const json& t : Array(Get(status, "tasks"))) {
      if (Text(Get(t, "service"), "") != identifier) continue;
      if (Text(Get(t, "version"), "") != version) continue;
      ++by_state[Text(Get(t, "state"))];
    }
    std::string line = identifier + " " + std::string(version) + ": " +
                       std::to_string(by_state["running"]) + "/" +
                       std::to_string(Int(Get(s, "desired_count"))) + " running";
    for (const char* state : {"starting", "exited"}) {
      if (by_state[state] > 0) line += ", " + std::to_string(by_state[state]) + " " + state;
    }
    const json& rollout = Get(s, "rollout");
    if (rollout.is_object() && Text(Get(rollout, "state"), "") == "failed") {
      line += ", rollout failed";
    }
    lines.push_back(std::move(line));
  }
  AddRuntimeWait(status, &lines);
  return lines;
}

std::string ExecutionLine(const json& e) {
  std::string line = "execution " + Text(Get(e, "id"), "?");
  if (Text(Get(e, "kind"), "") == "rollback") line += " (rollback)";
  line += "  " + Text(Get(e, "status"), "?") + "  " + Text(Get(e, "stage"), "?") + "  version " +
          NonEmpty(Get(e, "version"));
  std::string commit = NonEmpty(Get(e, "commit"), "");
  if (!commit.empty()) {
    line += "  commit " + commit.substr(0, 7);
    std::string message = NonEmpty(Get(e, "commit_message"), "");
    if (!message.empty()) line += " " + Truncate(message, 60);
  }
  return line;
}

bool ExecutionEnded(const json& e) {
  const std::string status = Text(Get(e, "status"), "");
  return !status.empty() && status != "InProgress" && status != "WaitingForApproval";
}

std::string FormatReleaseAnswer(const json& answer, const std::string& name) {
  const std::string id = Text(Get(Get(answer, "execution"), "id"), "?");
  return "started execution " + id + " of " + name + " (follow it: bluegreen executions " + name +
         "; its build output: bluegreen logs " + name + " " + id + " --follow)\n";
}

std::string FormatApproveAnswer(const json& answer, const std::string& name) {
  const json& e = Get(answer, "execution");
  return "approved " + ExecutionName(e) +
         ": swapping production to it (see the result: " + "bluegreen status " + name + ")\n";
}

std::string FormatRejectAnswer(const json& answer, const std::string& name) {
  const json& e = Get(answer, "execution");
  (void)name;
  return "rejected " + ExecutionName(e) + ": production is unchanged\n";
}

std::string FormatAge(int64_t ms) {
  if (ms < 0) ms = 0;
  const int64_t s = ms / 1000;
  if (s < 60) return std::to_string(s) + "s";
  if (s < 60 * 60) return std::to_string(s / 60) + "m";
  if (s < 48 * 60 * 60) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

std::string FormatExecutions(const json& answer, const std::string& name, int64_t now_ms,
                             size_t limit) {
  const json& list = Array(Get(answer, "executions"));
  if (list.empty()) {
    return "no executions of " + name +
           " yet: push a commit to its branch, or start one with: " + "bluegreen release " + name +
           "\n";
  }
  std::vector<std::vector<std::string>> rows = {
      {"ID", "STATUS", "STAGE", "VERSION", "COMMIT", "MESSAGE", "APPROVED-BY", "AGE"}};
  size_t shown = 0;
  for (const json& e : list) {
    if (limit != 0 && shown == limit) break;
    ++shown;
    std::string message = NonEmpty(Get(e, "commit_message"), "");
    if (Text(Get(e, "kind"), "") == "rollback") {
      message = message.empty() ? "(rollback)" : "(rollback) " + message;
    }
    const json& created = Get(e, "created_at");
    rows.push_back(
        {Text(Get(e, "id")), NonEmpty(Get(e, "status")), NonEmpty(Get(e, "stage")),
         NonEmpty(Get(e, "version")), NonEmpty(Get(e, "commit")).substr(0, 7),
         message.empty() ? "-" : Truncate(message, 40), NonEmpty(Get(e, "approved_by")),
         created.is_number() && Int(created) > 0 ? FormatAge(now_ms - Int(created)) : "-"});
  }
  std::string out = Table(rows, "");
  if (shown < list.size()) {
    out += "(the " + std::to_string(shown) + " newest of " + std::to_string(list.size()) +
           "; --limit N for more)\n";
  }
  return out;
}

RollbackPreview PreviewRollback(const json& status, const std::string& name) {
  const std::string live = Text(Get(status, "live"), "");
  const json* live_service = nullptr;
  const json* test_service = nullptr;
  for (const json& s : Array(Get(status, "services"))) {
    const std::string identifier = Text(Get(s, "identifier"), "");
    if (identifier.empty()) continue;
    if (identifier == live) {
      live_service = &s;
    } else if (test_service == nullptr) {
      test_service = &s;
    }
  }
  RollbackPreview p;
  // Serve refuses while an execution holds the stack (docs/api.md): say so before asking.
  const json& execution = Get(status, "execution");
  const std::string stage = Text(Get(execution, "stage"), "");
  if (execution.is_object() && !ExecutionEnded(execution) &&
      (stage == "Deploy" || stage == "Review" || stage == "Swap")) {
    p.text = "execution " + Text(Get(execution, "id"), "?") + " is in " + stage + " (" +
             Text(Get(execution, "status"), "?") + "): a rollback now could make a version " +
             "live that nobody approved; " +
             (stage == "Review" ? "reject it first (bluegreen reject " + name + ")"
                                : "wait until it has ended");
    return p;
  }
  if (test_service == nullptr) {
    p.possible = true;  // a shape we do not know: let serve decide
    p.text = "rolling back " + name + " swaps production to the side behind the test listener";
    return p;
  }
  const std::string test_id = Text(Get(*test_service, "identifier"));
  const std::string test_version = NonEmpty(Get(*test_service, "version"), "");
  if (test_version.empty()) {
    p.text = "the test side (" + test_id + ") runs no version: there is nothing to roll back to";
    return p;
  }
  p.possible = true;
  std::string live_part = live.empty() ? "the live side (" : live + " (";
  if (live_service != nullptr) live_part += NonEmpty(Get(*live_service, "version")) + ", ";
  p.text = "rolling back " + name + " makes " + test_version +
           " live: production :" + ListenerPort(status, "production") + " goes to " + test_id +
           " (" + test_version + "), and " + live_part +
           "live now) moves behind the test listener :" + ListenerPort(status, "test");
  return p;
}

bool IsSecretKey(std::string_view key) { return key == "git_token" || key == "webhook_secret"; }


namespace {

constexpr const char* kStages[] = {"Source", "Build", "Deploy", "Review", "Swap"};

// One stage's status, or "" when it has not started.
std::string StageStatusOf(const json& execution, const char* stage) {
  return Text(Get(Get(Get(execution, "stages"), stage), "status"), "");
}

// "12.3s", "4m05s": a stage's duration, precise enough to watch it grow.
std::string StageDuration(int64_t ms) {
  if (ms < 0) ms = 0;
  char buf[32];
  if (ms < 60'000) {
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
  } else {
    const int64_t s = ms / 1000;
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return buf;
}

// How long a stage took (ended) or has taken so far (running); "" when it has not started.
std::string StageTime(const json& stage, int64_t now_ms) {
  const json& started = Get(stage, "started_at");
  if (!started.is_number()) return "";
  const json& ended = Get(stage, "ended_at");
  return StageDuration((ended.is_number() ? Int(ended) : now_ms) - Int(started));
}

std::string StageMark(std::string_view status) {
  if (status.empty()) return "o";
  if (status == "Succeeded" || status == "Approved") return "+";
  if (status == "Failed" || status == "Rejected") return "x";
  if (status == "Superseded") return "-";
  return ">";  // InProgress, Waiting, WaitingForApproval
}

}  // namespace

std::string FormatWatch(const json& execution, const std::string& name, int64_t now_ms) {
  std::string out = name + "  " + ExecutionLine(execution) + "\n";
  for (const char* stage : kStages) {
    const std::string status = StageStatusOf(execution, stage);
    const std::string time = StageTime(Get(Get(execution, "stages"), stage), now_ms);
    std::string line = std::string("  ") + StageMark(status) + " " + stage;
    line.append(8 - std::string_view(stage).size(), ' ');
    line += status.empty() ? "-" : status;
    if (!time.empty()) line += "  " + time;
    out += line + "\n";
  }
  const std::string status = Text(Get(execution, "status"), "");
  const std::string reason = NonEmpty(Get(execution, "reason"), "");
  if (status == "WaitingForApproval") {
    out += "  waiting for approval: bluegreen approve " + name +
           " --comment TEXT (or bluegreen reject " + name + ")\n";
  } else if (ExecutionEnded(execution) && !reason.empty()) {
    out += "  " + status + ": " + reason + "\n";
  }
  return out;
}

std::vector<std::string> WatchChanges(const json& before, const json& after, int64_t now_ms) {
  std::vector<std::string> lines;
  for (const char* stage : kStages) {
    const std::string was = StageStatusOf(before, stage);
    const std::string is = StageStatusOf(after, stage);
    if (is.empty() || is == was) continue;
    std::string line = std::string(stage) + " " + is;
    const json& s = Get(Get(after, "stages"), stage);
    if (Get(s, "ended_at").is_number()) line += " (" + StageTime(s, now_ms) + ")";
    lines.push_back(line);
  }
  const std::string was = Text(Get(before, "status"), "");
  const std::string is = Text(Get(after, "status"), "");
  if (is != was && !is.empty()) {
    const std::string reason = NonEmpty(Get(after, "reason"), "");
    lines.push_back("execution " + Text(Get(after, "id"), "?") + " " + is +
                    (reason.empty() ? "" : ": " + reason));
  }
  return lines;
}

std::string FitLines(std::string_view text, int columns) {
  if (columns <= 1) return std::string(text);
  const size_t limit = static_cast<size_t>(columns - 1);
  std::string out;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    if (line.size() > limit) {
      size_t cut = limit;
      while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
      line = line.substr(0, cut);
    }
    out += line;
    if (nl == std::string_view::npos) break;
    out += '\n';
    text.remove_prefix(nl + 1);
  }
  return out;
}

std::string FormatTokens(const json& answer, int64_t now_ms) {
  const json& list = Array(Get(answer, "tokens"));
  if (list.empty()) {
    return "no tokens besides the admin token: create one with: bluegreen token create NAME "
           "--role viewer|approver|admin\n";
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "ROLE", "CREATED", "CREATED-BY", "LAST-USED"}};
  auto ago = [now_ms](const json& seconds, const char* never) {
    return seconds.is_number() && Int(seconds) > 0
               ? FormatAge(now_ms - Int(seconds) * 1000) + " ago"
               : std::string(never);
  };
  for (const json& t : list) {
    rows.push_back({NonEmpty(Get(t, "name")), NonEmpty(Get(t, "role")),
                    ago(Get(t, "created_at"), "-"), NonEmpty(Get(t, "created_by")),
                    ago(Get(t, "last_used_at"), "never")});
  }
  return Table(rows, "");
}

}  // namespace bluegreen::cli
