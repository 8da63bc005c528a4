// Test harness for the integration tests of the pipeline (issue 4): a ServeTest with a git
// repository the test commits to (a bare repository, which a stack polls, and a working clone,
// both under the test's temp dir), and the REST API calls and waits on executions the tests make.
// Used by pipeline_integration_test.cc (process runtime) and pipeline_container_test.cc.
//
// Same threading rules as serve_harness.h: call it from the test's main thread.
#pragma once

#include <sys/stat.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "serve_harness.h"

namespace bluegreen::serve_it {

inline constexpr Duration kExecTimeout = 60s;  // an execution reaching its next resting state

// ---------------------------------------------------------------------------------------------
// Small helpers

inline std::string Q(const std::string& s) {
  return Json(s).dump();
}  // a YAML double-quoted scalar

inline std::string Chomp(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
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

  // ---- stacks

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

}  // namespace bluegreen::serve_it
