// Test harness for the pipeline's integration tests (tests/serve/*_test.cc that drive
// `bluegreen serve` from commits): PipelineStack (a stack file with a git source), App (the
// application a commit holds: run.sh starting test_backend answering a colour) and the
// PipelineHarness fixture (PipelineTest is it as it is), a ServeTest with a bare git repository
// and a working clone under the test's temp dir, commits pushed to it, and helpers that follow
// executions through the REST API.
//
// Like serve_harness.h, used from the test's main thread only.
#pragma once

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>

#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "serve_harness.h"

namespace bluegreen::serve_it {

inline constexpr Duration kExecTimeout = 60s;  // an execution reaching its next resting state

// ---------------------------------------------------------------------------------------------
// Small helpers

// `s` as a YAML double-quoted scalar.
inline std::string Q(const std::string& s) { return Json(s).dump(); }

inline std::string Chomp(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

inline std::string HmacSha256Hex(const std::string& key, const std::string& data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len);
  std::string out;
  char buf[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", mac[i]);
    out += buf;
  }
  return out;
}

inline bool Terminal(const std::string& status) {
  return status == "Succeeded" || status == "Failed" || status == "Rejected" ||
         status == "Superseded";
}

inline std::string StageStatus(const Json& e, const std::string& stage) {
  const Json stages = e.value("stages", Json::object());
  if (!stages.is_object() || !stages.contains(stage) || !stages[stage].is_object()) return "";
  return stages[stage].value("status", "");
}

inline std::string Short(const Json& e) {
  return "execution " + std::to_string(e.value("id", int64_t{0})) + " " + e.value("status", "?") +
         " in " + e.value("stage", "?") + " (version " + e.value("version", "?") + ", reason '" +
         e.value("reason", "") + "')";
}

inline std::set<std::string> Keys(const Json& object) {
  std::set<std::string> out;
  if (object.is_object()) {
    for (auto it = object.begin(); it != object.end(); ++it) out.insert(it.key());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The stack file of a pipeline stack

struct PipelineStack {
  std::string name = "app";
  std::string repo;  // the bare repository
  std::string branch = "main";
  std::string poll_interval = "1s";
  std::vector<std::string> build_commands = {"./build.sh"};  // empty: the repo's buildspec.yml
  std::string build_timeout = "2m";
  uint16_t production_port = 0;
  uint16_t test_port = 0;
  int desired_count = 2;
  std::string deploy_timeout;  // empty: the default
  std::string deregistration_delay = "2s";
  std::string approval_mode = "manual";
  std::string approval_timeout;  // empty: the default
  std::string on_timeout;        // empty: the default

  std::string ToYaml() const {
    std::string y = "name: " + name + "\n";
    y += "source: {repo: " + Q(repo) + ", branch: " + branch + ", poll_interval: " + poll_interval +
         "}\n";
    y += "build:\n";
    if (!build_commands.empty()) {
      y += "  commands: [";
      for (size_t i = 0; i < build_commands.size(); ++i) {
        y += (i ? ", " : "") + Q(build_commands[i]);
      }
      y += "]\n";
    }
    y += "  timeout: " + build_timeout + "\n";
    y += ServiceAndListenersYaml(desired_count, deploy_timeout, production_port, test_port,
                                 deregistration_delay);
    y += "approval:\n";
    y += "  mode: " + approval_mode + "\n";
    if (!approval_timeout.empty()) y += "  timeout: " + approval_timeout + "\n";
    if (!on_timeout.empty()) y += "  on_timeout: " + on_timeout + "\n";
    return y;
  }
};

// The application of a commit: run.sh starts test_backend answering `colour`.
struct App {
  App(const char* c) : colour(c) {}  // NOLINT(google-explicit-constructor): App{"blue"}

  std::string colour;
  std::string backend_args;  // extra test_backend arguments, e.g. "--health-status 503"
  int start_delay_s = 0;     // run.sh sleeps this long before starting the backend
  std::string build_sh = "#!/bin/sh\necho \"building $BLUEGREEN_VERSION\"\n";
};

inline std::string RunScript(const App& app) {
  std::string s = "#!/bin/sh\n";
  if (app.start_delay_s > 0) s += "sleep " + std::to_string(app.start_delay_s) + "\n";
  s += std::string("exec ") + TEST_BACKEND_BINARY +
       " --listen 127.0.0.1:$PORT --name \"$(cat name.txt)\"";
  if (!app.backend_args.empty()) s += " " + app.backend_args;
  return s + "\n";
}

// ---------------------------------------------------------------------------------------------
// The fixture

class PipelineHarness : public ServeTest {
 protected:
  void SetUp() override {
    ServeTest::SetUp();
    if (HasFatalFailure()) return;
    bare_ = root_ + "/repo.git";
    work_ = root_ + "/clone";
  }

  // ---- git

  // `git ARGS` (with a committer identity) in `dir`; its stdout, or an error with its output.
  Result<std::string> Git(const std::vector<std::string>& args, const std::string& dir) {
    std::vector<std::string> argv = {"git", "-C", dir};
    for (const char* c : {"user.name=T", "user.email=t@example.com", "init.defaultBranch=main"}) {
      argv.insert(argv.end(), {"-c", c});
    }
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = Process::Start("/usr/bin/env", argv);
    if (!p.ok()) return p.status();
    std::optional<int> st = (*p)->WaitExit(60s);
    (*p)->WaitForOutputClosed(5s);
    std::string cmd = "git";
    for (const auto& a : args) cmd += " " + a;
    if (!st || !WIFEXITED(*st) || WEXITSTATUS(*st) != 0) {
      return Internal("`" + cmd + "` in " + dir + " failed (" + proxy_test::DescribeWaitStatus(st) +
                      "): " + (*p)->Stdout() + (*p)->Stderr());
    }
    return (*p)->Stdout();
  }

  // The bare repository and its working clone (branch main), empty.
  Status InitRepo() {
    std::error_code ec;
    std::filesystem::create_directories(bare_, ec);
    std::filesystem::create_directories(work_, ec);
    if (ec) return Internal("mkdir: " + ec.message());
    BG_RETURN_IF_ERROR(Git({"init", "-q", "--bare", "-b", "main"}, bare_).status());
    BG_RETURN_IF_ERROR(Git({"init", "-q", "-b", "main"}, work_).status());
    BG_RETURN_IF_ERROR(Git({"remote", "add", "origin", bare_}, work_).status());
    return Status::Ok();
  }

  // Writes `files` (relative path -> content; names ending in ".sh" are made executable) into the
  // clone, commits everything with `message`, pushes to `branch` of the bare repository and
  // returns the commit's full SHA.
  Result<std::string> CommitAndPush(const std::map<std::string, std::string>& files,
                                    const std::string& message,
                                    const std::string& branch = "main") {
    for (const auto& [path, content] : files) {
      const std::string full = work_ + "/" + path;
      std::error_code ec;
      std::filesystem::create_directories(std::filesystem::path(full).parent_path(), ec);
      BG_RETURN_IF_ERROR(WriteFile(full, content));
      if (path.size() > 3 && path.substr(path.size() - 3) == ".sh" &&
          ::chmod(full.c_str(), 0755) != 0) {
        return Internal("chmod " + full);
      }
    }
    BG_RETURN_IF_ERROR(Git({"add", "-A"}, work_).status());
    BG_RETURN_IF_ERROR(Git({"commit", "-q", "--allow-empty", "-m", message}, work_).status());
    BG_RETURN_IF_ERROR(Git({"push", "-q", "origin", "HEAD:refs/heads/" + branch}, work_).status());
    auto sha = Git({"rev-parse", "HEAD"}, work_);
    if (!sha.ok()) return sha.status();
    return Chomp(*sha);
  }

  Result<std::string> CommitApp(const App& app, const std::string& message = "") {
    return CommitAndPush(
        {{"run.sh", RunScript(app)}, {"name.txt", app.colour + "\n"}, {"build.sh", app.build_sh}},
        message.empty() ? "Make it " + app.colour : message);
  }

  // ---- stacks

  Result<PipelineStack> NewPipelineStack(const std::string& name = "app") {
    PipelineStack f;
    f.name = name;
    f.repo = bare_;
    BG_RETURN_IF_ERROR(PickListenerPorts(&f));
    return f;
  }

  // PUT /api/v1/stacks/NAME with the stack file; 200 or 201.
  Status PutStack(const PipelineStack& f) { return PutStackYaml(f.name, f.ToYaml()); }

  // PUT /api/v1/stacks/NAME with the stack file `yaml`; 200 or 201. TearDown removes the stack.
  Status PutStackYaml(const std::string& name, const std::string& yaml) {
    stacks_.insert(name);
    (void)WriteText(name + ".yaml", yaml);  // for a person reading a kept test dir
    auto r = Api("PUT", "/api/v1/stacks/" + name, yaml);
    if (!r.ok()) return r.status();
    if (r->status != 200 && r->status != 201) {
      return Internal("PUT stack: " + std::to_string(r->status) + " " + r->body + "\n" + yaml);
    }
    return Status::Ok();
  }

  // ---- executions

  Result<Json> Executions(const std::string& stack) {
    auto r = Api("GET", "/api/v1/stacks/" + stack + "/executions");
    if (!r.ok()) return r.status();
    if (r->status != 200 || !r->json.is_object() || !r->json.contains("executions") ||
        !r->json["executions"].is_array()) {
      return Internal("GET executions: " + std::to_string(r->status) + " " + r->body);
    }
    return r->json["executions"];
  }

  Result<Json> Execution(const std::string& stack, int64_t id) {
    auto r = Api("GET", "/api/v1/stacks/" + stack + "/executions/" + std::to_string(id));
    if (!r.ok()) return r.status();
    if (r->status != 200 || !r->json.is_object()) {
      return Status(
          r->status == 404 ? StatusCode::kNotFound : StatusCode::kInternal,
          "GET execution " + std::to_string(id) + ": " + std::to_string(r->status) + " " + r->body);
    }
    return r->json;
  }

  // Polls execution `id` until `pred` holds. Fails early when the execution reaches a terminal
  // status that does not satisfy `pred`.
  Result<Json> WaitExecution(const std::string& stack, int64_t id,
                             const std::function<bool(const Json&)>& pred, Duration timeout,
                             const std::string& what) {
    const auto deadline = Clock::now() + timeout;
    std::string last = "none yet";
    while (true) {
      auto e = Execution(stack, id);
      if (e.ok()) {
        if (pred(*e)) return *e;
        last = e->dump();
        if (Terminal(e->value("status", ""))) {
          return Internal("execution " + std::to_string(id) + " ended without " + what + ": " +
                          last);
        }
      } else {
        last = e.status().ToString();
      }
      if (Clock::now() >= deadline) {
        return proxy_test::DeadlineExceeded("waiting for execution " + std::to_string(id) + " " +
                                            what + "; last: " + last);
      }
      std::this_thread::sleep_for(100ms);  // serve offers no change notification
    }
  }
  Result<Json> WaitExecutionStatus(const std::string& stack, int64_t id, const std::string& status,
                                   Duration timeout = kExecTimeout) {
    return WaitExecution(
        stack, id, [&](const Json& e) { return e.value("status", "") == status; }, timeout,
        "to be " + status);
  }

  // The newest release execution of `sha` (waits until one exists).
  Result<Json> WaitExecutionOf(const std::string& stack, const std::string& sha,
                               Duration timeout = 30s) {
    const auto deadline = Clock::now() + timeout;
    std::string last;
    while (true) {
      auto list = Executions(stack);
      if (list.ok()) {
        for (const Json& e : *list) {
          if (e.value("commit", "") == sha && e.value("kind", "") == "release") return e;
        }
        last = list->dump();
      } else {
        last = list.status().ToString();
      }
      if (Clock::now() >= deadline) {
        return proxy_test::DeadlineExceeded("no execution of commit " + sha +
                                            "; executions: " + last);
      }
      std::this_thread::sleep_for(100ms);  // serve offers no change notification
    }
  }

  // Every execution reaches a terminal status or WaitingForApproval within `timeout` (none is
  // stuck in Source, Build, Deploy or Swap). Returns the list.
  Result<Json> WaitNoneStuck(const std::string& stack, Duration timeout = kExecTimeout) {
    const auto deadline = Clock::now() + timeout;
    std::string stuck;
    while (true) {
      auto list = Executions(stack);
      if (list.ok()) {
        stuck.clear();
        for (const Json& e : *list) {
          const std::string s = e.value("status", "");
          if (!Terminal(s) && s != "WaitingForApproval") stuck += "\n  " + Short(e);
        }
        if (stuck.empty()) return *list;
      } else {
        stuck = list.status().ToString();
      }
      if (Clock::now() >= deadline) {
        return proxy_test::DeadlineExceeded("executions still in progress:" + stuck);
      }
      std::this_thread::sleep_for(100ms);  // serve offers no change notification
    }
  }

  // POST /api/v1/stacks/NAME/ACTION with an optional comment.
  Result<ApiAnswer> Action(const std::string& stack, const std::string& action,
                           const std::string& comment = "") {
    const std::string body = comment.empty() ? "" : Json{{"comment", comment}}.dump();
    return Api("POST", "/api/v1/stacks/" + stack + "/" + action, body);
  }

  // ---- common paths

  // The repository with `app`, the stack put, and the first execution Succeeded with both
  // services on its version and the stack settled. Returns the first execution.
  Result<Json> FirstRun(const PipelineStack& f, const App& app) {
    BG_RETURN_IF_ERROR(InitRepo());
    auto sha = CommitApp(app);
    if (!sha.ok()) return sha.status();
    BG_RETURN_IF_ERROR(PutStack(f));
    auto e = WaitExecutionOf(f.name, *sha);
    if (!e.ok()) return e.status();
    auto done = WaitExecutionStatus(f.name, e->value("id", int64_t{0}), "Succeeded");
    if (!done.ok()) return done.status();
    auto settled = WaitSettled(f.name);
    if (!settled.ok()) return settled.status();
    return done;
  }

  // A commit of `app`, its execution waiting for approval. Returns the execution.
  Result<Json> PushAndWaitForApproval(const PipelineStack& f, const App& app) {
    auto sha = CommitApp(app);
    if (!sha.ok()) return sha.status();
    auto e = WaitExecutionOf(f.name, *sha);
    if (!e.ok()) return e.status();
    return WaitExecution(
        f.name, e->value("id", int64_t{0}),
        [](const Json& x) { return x.value("status", "") == "WaitingForApproval"; }, kExecTimeout,
        "to wait for approval");
  }

  // A normal release of `app` (commit, approval, swap), settled. Returns the execution.
  Result<Json> Release(const PipelineStack& f, const App& app) {
    auto waiting = PushAndWaitForApproval(f, app);
    if (!waiting.ok()) return waiting.status();
    auto a = Action(f.name, "approve");
    if (!a.ok()) return a.status();
    if (a->status != 200) return Internal("approve: " + std::to_string(a->status) + " " + a->body);
    auto done = WaitExecutionStatus(f.name, waiting->value("id", int64_t{0}), "Succeeded");
    if (!done.ok()) return done.status();
    auto settled = WaitSettled(f.name);
    if (!settled.ok()) return settled.status();
    return done;
  }

  std::string ServiceVersion(const Json& status, const std::string& identifier) {
    const Json v = Service(status, identifier).value("version", Json());
    return v.is_string() ? v.get<std::string>() : "(none)";
  }
  std::string LiveVersion(const Json& status) {
    return ServiceVersion(status, status.value("live", "?"));
  }
  std::string TestVersion(const Json& status) {
    return ServiceVersion(status, status.value("live", "") == "Code1" ? "Code2" : "Code1");
  }

  std::string bare_;  // the bare repository the stack polls
  std::string work_;  // the working clone the test commits in
};

// The fixture of the pipeline's integration tests (tests/serve/pipeline_integration_test.cc).
class PipelineTest : public PipelineHarness {};

}  // namespace bluegreen::serve_it
