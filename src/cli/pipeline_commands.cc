// The pipeline's client commands: release, approve, reject, rollback, executions, logs, watch
// and secret set (docs/cli.md), each a few calls to the API's "pipeline" endpoints (docs/api.md).
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <istream>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "cli/api_client.h"
#include "cli/cli.h"
#include "common/net.h"

namespace bluegreen::cli {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Serve sends at most this much of a log per call (docs/api.md); a full chunk means there may be
// more to read at once.
constexpr size_t kLogChunk = 1 << 20;
constexpr size_t kMaxSecretBytes = 4096;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string CommentBody(const std::string& comment) {
  json body = json::object();
  if (!comment.empty()) body["comment"] = comment;
  return Dump(body);
}

const json& Member(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

std::string StringMember(const json& j, const char* key) {
  const json& v = Member(j, key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer() || v.is_number_unsigned()) return std::to_string(v.get<int64_t>());
  return "";
}

// Reads one line from `in` without its line end; false at end of input with nothing read.
bool ReadLine(std::istream& in, std::string* line) {
  line->clear();
  if (!std::getline(in, *line) && line->empty()) return false;
  while (!line->empty() && (line->back() == '\r' || line->back() == '\n')) line->pop_back();
  return true;
}

// Turns off the echo of the terminal on stdin for its lifetime (a no-op when it is not one).
class NoEcho {
 public:
  NoEcho() {
    if (::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios quiet = saved_;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    active_ = ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
  }
  ~NoEcho() {
    if (active_) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_);
  }
  NoEcho(const NoEcho&) = delete;
  NoEcho& operator=(const NoEcho&) = delete;

 private:
  termios saved_{};
  bool active_ = false;
};

// approve and reject: the same call on two paths.
int RunReview(const ClientOptions& c, const ReviewOptions& o, const std::string& action) {
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;
  Answer a = api.Call("POST", StackPath(o.name) + "/" + action, CommentBody(o.comment));
  if (a.exit_code != kExitOk) return Report(c, api, a, action, o.name);
  if (c.json) {
    PrintJson(c, a.body);
  } else {
    *c.out << (action == "approve" ? FormatApproveAnswer(a.body, o.name)
                                   : FormatRejectAnswer(a.body, o.name));
  }
  return kExitOk;
}

}  // namespace

int RunRelease(const ClientOptions& c, const std::string& name) {
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;
  Answer a = api.Call("POST", StackPath(name) + "/release", "{}");
  if (a.exit_code != kExitOk) return Report(c, api, a, "release", name);
  if (c.json) {
    PrintJson(c, a.body);
  } else {
    *c.out << FormatReleaseAnswer(a.body, name);
  }
  return kExitOk;
}

int RunApprove(const ClientOptions& c, const ReviewOptions& o) {
  return RunReview(c, o, "approve");
}

int RunReject(const ClientOptions& c, const ReviewOptions& o) { return RunReview(c, o, "reject"); }

int RunRollback(const ClientOptions& c, const RollbackOptions& o) {
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;
  const std::string path = StackPath(o.name);

  // What will happen, said before it is asked for.
  Answer s = api.Call("GET", path);
  if (s.exit_code != kExitOk) return Report(c, api, s, "rollback", o.name);
  RollbackPreview preview = PreviewRollback(s.body, o.name);
  if (!preview.possible) {
    *c.err << "error: " << preview.text << "\n"
           << "hint: see the executions and what runs where: bluegreen executions " << o.name
           << "; bluegreen status " << o.name << "\n";
    return kExitConflict;
  }
  std::ostream& say = c.json ? *c.err : *c.out;  // --json keeps stdout for the JSON
  say << preview.text << "\n";
  say.flush();
  if (!o.yes) {
    if (!c.interactive) {
      *c.err << "error: add --yes to confirm (stdin is not a terminal to ask on); nothing was "
                "changed\n";
      return kExitBadInput;
    }
    *c.err << "roll back? [y/N] ";
    c.err->flush();
    std::string reply;
    ReadLine(*c.in, &reply);
    std::transform(reply.begin(), reply.end(), reply.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    if (reply != "y" && reply != "yes") {
      *c.err << "not rolled back: nothing was changed\n";
      return kExitFailed;
    }
  }

  Answer r = api.Call("POST", path + "/rollback", CommentBody(o.comment));
  if (r.exit_code != kExitOk) return Report(c, api, r, "rollback", o.name);
  json answer = std::move(r.body);
  json execution = Member(answer, "execution");
  const std::string id = StringMember(execution, "id");
  if (!o.wait || id.empty()) {
    if (c.json) {
      PrintJson(c, answer);
    } else {
      *c.out << "started the rollback: execution " << (id.empty() ? "?" : id)
             << " (follow it with: bluegreen executions " << o.name << ")\n";
    }
    return kExitOk;
  }
  if (!c.json) {
    *c.out << "rolling back: execution " << id << " swaps production to "
           << StringMember(execution, "version") << "...\n";
    c.out->flush();
  }

  const Clock::time_point deadline = Clock::now() + o.timeout;
  const std::string target = path + "/executions/" + EscapePathSegment(id);
  int failures = 0;
  bool timed_out = false;
  while (!ExecutionEnded(execution)) {
    Clock::time_point now = Clock::now();
    if (now >= deadline) {
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(c.poll_interval, deadline - now));
    Answer e = api.Call("GET", target);
    if (e.exit_code == kExitUnreachable && e.http_status == 0 && ++failures < kMaxPollFailures) {
      continue;
    }
    if (e.exit_code != kExitOk) return Report(c, api, e, "executions", o.name);
    failures = 0;
    execution = std::move(e.body);
  }
  if (c.json) {
    if (answer.is_object()) answer["execution"] = execution;
    PrintJson(c, answer);
  }
  if (timed_out) {
    *c.err << "error: timed out after " << FormatDuration(o.timeout)
           << " waiting for the rollback (" << ExecutionLine(execution) << ")\n"
           << "hint: the swap may still happen: follow it with: bluegreen executions " << o.name
           << "\n";
    return kExitFailed;
  }
  const std::string status = StringMember(execution, "status");
  const std::string reason = StringMember(execution, "reason");
  if (status != "Succeeded") {
    *c.err << "error: the rollback (execution " << id << ") ended " << status
           << (reason.empty() ? "" : ": " + reason) << "\n"
           << "hint: see what runs where: bluegreen status " << o.name << "\n";
    return kExitFailed;
  }
  if (!c.json) {
    *c.out << "rolled back " << o.name << (reason.empty() ? "" : ": " + reason) << "\n";
  }
  return kExitOk;
}

int RunExecutions(const ClientOptions& c, const ExecutionsOptions& o) {
  if (o.limit < 0) {
    *c.err << "error: --limit must be 0 (all) or more\n";
    return kExitBadInput;
  }
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;
  Answer a = api.Call("GET", StackPath(o.name) + "/executions");
  if (a.exit_code != kExitOk) return Report(c, api, a, "executions", o.name);
  const size_t limit = static_cast<size_t>(o.limit);
  if (c.json) {
    if (limit != 0 && a.body.is_object() && a.body.contains("executions") &&
        a.body["executions"].is_array() && a.body["executions"].size() > limit) {
      json& list = a.body["executions"];
      list.erase(list.begin() + static_cast<std::ptrdiff_t>(limit), list.end());
    }
    PrintJson(c, a.body);
  } else {
    *c.out << FormatExecutions(a.body, o.name, NowMillis(), limit);
  }
  return kExitOk;
}

int RunLogs(const ClientOptions& c, const LogsOptions& o) {
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;
  std::string execution = o.execution.empty() ? "latest" : o.execution;
  int64_t offset = 0;
  int failures = 0;
  for (;;) {
    std::string target = StackPath(o.name) + "/executions/" + EscapePathSegment(execution) + "/log";
    if (offset > 0) target += "?offset=" + std::to_string(offset);
    Answer a = api.CallText(target);
    if (o.follow && a.exit_code == kExitUnreachable && a.http_status == 0 &&
        ++failures < kMaxPollFailures) {
      std::this_thread::sleep_for(c.poll_interval);
      continue;
    }
    if (a.exit_code != kExitOk) return Report(c, api, a, "logs", o.name);
    failures = 0;
    *c.out << a.text;
    c.out->flush();

    // Follow the execution "latest" was, not a newer one that starts meanwhile.
    std::string_view pinned = a.Header("X-Execution");
    if (!pinned.empty()) execution = std::string(pinned);
    std::string_view next = a.Header("X-Log-Offset");
    int64_t parsed = 0;
    auto [end, ec] = std::from_chars(next.data(), next.data() + next.size(), parsed);
    offset = (ec == std::errc() && end == next.data() + next.size() && !next.empty())
                 ? parsed
                 : offset + static_cast<int64_t>(a.text.size());
    // Without the header (another server) there is no telling: stop.
    std::string_view complete_header = a.Header("X-Log-Complete");
    const bool complete = complete_header.empty() || complete_header == "true";
    const bool more_now = a.text.size() >= kLogChunk;
    if (more_now) continue;
    if (!o.follow || complete) break;
    std::this_thread::sleep_for(c.poll_interval);
  }
  return kExitOk;
}

int RunSecretSet(const ClientOptions& c, const SecretOptions& o) {
  if (!IsSecretKey(o.key)) {
    *c.err << "error: unknown secret \"" << o.key
           << "\": the secrets are git_token and webhook_secret\n";
    return kExitBadInput;
  }
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;

  std::string value;
  bool got = false;
  if (c.interactive) {
    *c.err << o.key << " of stack " << o.name << " (not shown as you type): ";
    c.err->flush();
    {
      NoEcho quiet;
      got = ReadLine(*c.in, &value);
    }
    *c.err << "\n";
  } else {
    got = ReadLine(*c.in, &value);
  }
  if (!got || value.empty()) {
    *c.err << "error: no value for " << o.key << " on stdin; nothing was changed\n"
           << "hint: type it when asked, or pipe it in: bluegreen secret set " << o.name << " "
           << o.key << " < FILE\n";
    return kExitBadInput;
  }
  if (value.size() > kMaxSecretBytes) {
    *c.err << "error: the value of " << o.key << " is " << value.size()
           << " bytes; the limit is 4096; nothing was changed\n";
    return kExitBadInput;
  }

  Answer a = api.Call("PUT", StackPath(o.name) + "/secrets/" + EscapePathSegment(o.key),
                      std::move(value), "text/plain");
  if (a.exit_code != kExitOk) return Report(c, api, a, "secret", o.name);
  if (c.json) {
    PrintJson(c, a.body);
  } else {
    *c.out << "set " << o.key << " of stack " << o.name << " (the value is not shown)\n";
  }
  return kExitOk;
}


int RunWatch(const ClientOptions& c, const WatchOptions& o) {
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;
  const Clock::time_point deadline = Clock::now() + o.timeout;
  std::string id = o.execution;
  if (id.empty()) {
    // The current execution; when the latest has ended, the next one to start (a push was just
    // made and the poller has not seen it yet, say).
    std::string ended;
    int failures = 0;
    for (;;) {
      Answer s = api.Call("GET", StackPath(o.name));
      if (s.exit_code == kExitUnreachable && s.http_status == 0 &&
          ++failures < kMaxPollFailures) {
        std::this_thread::sleep_for(c.poll_interval);
        continue;
      }
      if (s.exit_code != kExitOk) return Report(c, api, s, "watch", o.name);
      failures = 0;
      const json& current = Member(s.body, "execution");
      const std::string current_id = StringMember(current, "id");
      if (!current_id.empty() && !ExecutionEnded(current)) {
        id = current_id;
        break;
      }
      if (ended.empty()) {
        ended = current_id.empty() ? "-" : current_id;
        *c.err << (current_id.empty() ? "no execution of " + o.name + " yet"
                                      : "execution " + current_id + " of " + o.name +
                                            " has ended (" + StringMember(current, "status") +
                                            ")")
               << "; waiting for the next one: push a commit to its branch, or run bluegreen "
                  "release "
               << o.name << "\n";
      } else if (!current_id.empty() && current_id != ended) {
        id = current_id;  // started and ended between two polls: show how it ended
        break;
      }
      if (Clock::now() >= deadline) {
        *c.err << "error: no execution of " << o.name << " started within "
               << FormatDuration(o.timeout) << "\n";
        return kExitFailed;
      }
      std::this_thread::sleep_for(c.poll_interval);
    }
  }
  const std::string target = StackPath(o.name) + "/executions/" + EscapePathSegment(id);
  json last;
  size_t drawn_lines = 0;
  int failures = 0;
  bool timed_out = false;
  for (;;) {
    Answer e = api.Call("GET", target);
    if (e.exit_code == kExitUnreachable && e.http_status == 0 && ++failures < kMaxPollFailures) {
      std::this_thread::sleep_for(c.poll_interval);  // serve restarting: keep watching
      continue;
    }
    if (e.exit_code != kExitOk) return Report(c, api, e, "watch", o.name);
    failures = 0;
    const int64_t now = NowMillis();
    if (!c.json) {
      if (o.redraw) {
        // Back to the first line drawn last time, clear to the end of the screen, draw again.
        if (drawn_lines > 0) *c.out << "\x1b[" << drawn_lines << "F\x1b[J";
        // Cut to the terminal's width: a wrapped line would throw the redraw off.
        const std::string block = FitLines(FormatWatch(e.body, o.name, now), o.columns);
        drawn_lines = static_cast<size_t>(std::count(block.begin(), block.end(), '\n'));
        *c.out << block;
      } else {
        if (last.is_null()) *c.out << o.name << "  " << ExecutionLine(e.body) << "\n";
        for (const std::string& line : WatchChanges(last, e.body, now)) *c.out << line << "\n";
      }
      c.out->flush();
    }
    last = std::move(e.body);
    if (ExecutionEnded(last)) break;
    if (o.until_review && StringMember(last, "status") == "WaitingForApproval") break;
    const Clock::time_point t = Clock::now();
    if (t >= deadline) {
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(c.poll_interval, deadline - t));
  }
  if (c.json) PrintJson(c, last);
  const std::string status = StringMember(last, "status");
  if (timed_out) {
    *c.err << "error: timed out after " << FormatDuration(o.timeout) << " watching execution "
           << id << " of " << o.name << " (" << status << ")\n"
           << "hint: it goes on without you; watch it again with: bluegreen watch " << o.name
           << " " << id << "\n";
    return kExitFailed;
  }
  if (status == "Succeeded" || status == "WaitingForApproval") return kExitOk;
  return kExitFailed;  // Failed, Rejected or Superseded: the lines above said why
}

}  // namespace bluegreen::cli
