// Test harness for the integration tests of `bluegreen serve` with the process runtime: the real
// `bluegreen` binary (serve, the CLI, the proxy serve starts) and real tasks (test_backend behind
// a `run.sh` per version), all on loopback.
//
// - ProcEntry, ListProcesses, KillLeftovers: a view of /proc. Tasks and the proxy deliberately
//   outlive serve (their own sessions), so the cleanup finds them by the test's unique directory in
//   their command line (the proxy: `bluegreen proxy --config STATE/proxy/proxy.json`) or their
//   working directory (tasks run in a version's artifact directory). A zombie counts as dead.
// - StackFile, WriteVersion: the stack file and the artifact directory of a version.
// - LoadGenerator: threads doing GET / on keep-alive connections, counting answers and failures.
// - ServeTest: the fixture. Owns a temp dir (state dir, artifacts), a `bluegreen serve` process,
//   runs the CLI with BLUEGREEN_API and BLUEGREEN_STATE_DIR set for the child only, and calls the
//   REST API directly with HttpCall. TearDown runs `bluegreen down` for the stacks the test made
//   (when serve is up), stops serve, then kills whatever of the test is still running.
//
// Reuses tests/proxy/harness.h (Process, PickFreePort, HttpConnection, WriteFile). Processes are
// started from the test's main thread only (PR_SET_PDEATHSIG ties a child to the forking thread);
// LoadGenerator's counters are the only state shared between threads (guarded by its mutex).
#pragma once

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../proxy/harness.h"
#include "common/http_client.h"

namespace bluegreen::serve_it {

using proxy_test::Clock;
using proxy_test::Duration;
using proxy_test::HttpConnection;
using proxy_test::Json;
using proxy_test::PickFreePort;
using proxy_test::Process;
using proxy_test::ReadFile;
using proxy_test::WriteFile;
using namespace std::chrono_literals;

inline double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// ---------------------------------------------------------------------------------------------
// /proc

struct ProcEntry {
  pid_t pid = 0;
  char state = '?';
  uint64_t start_time = 0;  // field 22 of /proc/PID/stat
  std::string cmdline;      // arguments joined with spaces
  std::string cwd;          // empty when unreadable

  bool dead() const { return state == 'Z' || state == 'X' || state == 'x'; }
  std::string Describe() const {
    return std::to_string(pid) + " [" + std::string(1, state) + "] cwd=" + cwd + " " + cmdline;
  }
};

inline std::optional<ProcEntry> ReadProc(pid_t pid) {
  const std::string base = "/proc/" + std::to_string(pid);
  auto stat = ReadFile(base + "/stat");
  if (!stat.ok()) return std::nullopt;
  size_t close = stat->rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::vector<std::string> fields;
  std::string rest = stat->substr(close + 1);
  size_t i = 0;
  while (i < rest.size() && fields.size() < 20) {
    size_t s = rest.find_first_not_of(" \n", i);
    if (s == std::string::npos) break;
    size_t e = rest.find_first_of(" \n", s);
    fields.push_back(rest.substr(s, e == std::string::npos ? std::string::npos : e - s));
    i = e == std::string::npos ? rest.size() : e;
  }
  if (fields.size() < 20 || fields[0].empty()) return std::nullopt;
  ProcEntry p;
  p.pid = pid;
  p.state = fields[0][0];
  p.start_time = std::strtoull(fields[19].c_str(), nullptr, 10);
  auto cmd = ReadFile(base + "/cmdline");
  if (cmd.ok()) {
    std::string c = *cmd;
    while (!c.empty() && c.back() == '\0') c.pop_back();
    std::replace(c.begin(), c.end(), '\0', ' ');
    p.cmdline = c;
  }
  std::error_code ec;
  auto cwd = std::filesystem::read_symlink(base + "/cwd", ec);
  if (!ec) p.cwd = cwd.string();
  return p;
}

inline std::vector<ProcEntry> ListProcesses() {
  std::vector<ProcEntry> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || pid <= 0) continue;
    if (auto p = ReadProc(static_cast<pid_t>(pid))) out.push_back(std::move(*p));
  }
  ::closedir(d);
  return out;
}

// Live processes (not zombies, not this test) whose command line contains `dir` or whose working
// directory is `dir` or under it.
inline std::vector<ProcEntry> ProcessesOf(const std::string& dir) {
  std::vector<ProcEntry> out;
  if (dir.empty()) return out;
  for (ProcEntry& p : ListProcesses()) {
    if (p.pid == ::getpid() || p.dead()) continue;
    const bool in_cwd = p.cwd == dir || p.cwd.rfind(dir + "/", 0) == 0;
    if (in_cwd || p.cmdline.find(dir) != std::string::npos) out.push_back(std::move(p));
  }
  return out;
}

// SIGKILLs every process of `dir` (see ProcessesOf) until none is left alive (5 s at most).
// Returns what it found the first time.
inline std::vector<ProcEntry> KillLeftovers(const std::string& dir) {
  std::vector<ProcEntry> first = ProcessesOf(dir);
  const auto deadline = Clock::now() + 5s;
  for (std::vector<ProcEntry> now = first; !now.empty() && Clock::now() < deadline;
       now = ProcessesOf(dir)) {
    for (const ProcEntry& p : now) ::kill(p.pid, SIGKILL);
    std::this_thread::sleep_for(50ms);  // nothing to wait on for processes we did not fork
  }
  return first;
}

// "PID:STARTTIME" (a process task handle) -> PID, or 0.
inline pid_t HandlePid(const std::string& handle) {
  return static_cast<pid_t>(std::strtol(handle.c_str(), nullptr, 10));
}

// True while the process of a task handle exists with the handle's start time and is no zombie.
inline bool HandleAlive(const std::string& handle) {
  const pid_t pid = HandlePid(handle);
  if (pid <= 1) return false;
  auto p = ReadProc(pid);
  const size_t colon = handle.find(':');
  if (!p || colon == std::string::npos) return false;
  return !p->dead() && p->start_time == std::strtoull(handle.c_str() + colon + 1, nullptr, 10);
}

// Polls `pred` every 50 ms until it holds or `timeout` passes; returns its last value.
inline bool WaitUntil(const std::function<bool()>& pred, Duration timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);  // polling: none of these conditions can be waited on
  }
}

// True when nothing listens on 127.0.0.1:port (the connect is refused).
inline bool ConnectRefused(uint16_t port) {
  auto c = HttpConnection::Connect(port, 2s);
  return !c.ok() && c.status().message().find("refused") != std::string::npos;
}

// ---------------------------------------------------------------------------------------------
// Stack files and versions

// The `service` and `load_balancer` sections of a stack file: `./run.sh` on the process runtime
// with fast health checks, the test listener open to loopback.
inline std::string ServiceAndListenersYaml(int desired_count, const std::string& deploy_timeout,
                                           uint16_t production_port, uint16_t test_port,
                                           const std::string& deregistration_delay) {
  std::string y;
  y += "service:\n";
  y += "  runtime: process\n";
  y += "  command: [\"./run.sh\"]\n";
  y += "  desired_count: " + std::to_string(desired_count) + "\n";
  y += "  health_check: {path: /health, interval: 1s, timeout: 1s, healthy_threshold: 2, "
       "unhealthy_threshold: 2}\n";
  if (!deploy_timeout.empty()) y += "  deploy_timeout: " + deploy_timeout + "\n";
  y += "load_balancer:\n";
  y += "  production: {port: " + std::to_string(production_port) + "}\n";
  y += "  test: {port: " + std::to_string(test_port) + ", allow: [127.0.0.0/8]}\n";
  y += "  deregistration_delay: " + deregistration_delay + "\n";
  return y;
}

// A stack file with fast health checks, for the process runtime and `./run.sh`.
struct StackFile {
  std::string name = "demo";
  uint16_t production_port = 0;
  uint16_t test_port = 0;
  int desired_count = 2;
  std::string deploy_timeout;  // empty: the default
  std::string deregistration_delay = "2s";

  std::string ToYaml() const {
    return "name: " + name + "\n" +
           ServiceAndListenersYaml(desired_count, deploy_timeout, production_port, test_port,
                                   deregistration_delay);
  }
};

// Creates DIR/run.sh (`exec test_backend --listen 127.0.0.1:$PORT --name "$(cat name.txt)"` plus
// `extra_args`) and DIR/name.txt (`answer`), so each version answers GET / with "answer\n".
inline Status WriteVersion(const std::string& dir, const std::string& answer,
                           const std::string& extra_args = "") {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Internal("mkdir " + dir + ": " + ec.message());
  const std::string script = std::string("#!/bin/sh\nexec ") + TEST_BACKEND_BINARY +
                             " --listen 127.0.0.1:$PORT --name \"$(cat name.txt)\"" +
                             (extra_args.empty() ? "" : " " + extra_args) + "\n";
  BG_RETURN_IF_ERROR(WriteFile(dir + "/run.sh", script));
  if (::chmod((dir + "/run.sh").c_str(), 0755) != 0) return Internal("chmod run.sh");
  return WriteFile(dir + "/name.txt", answer + "\n");
}

// ---------------------------------------------------------------------------------------------
// Load generator

// `threads` threads, each with a keep-alive connection to 127.0.0.1:port doing GET / in a loop
// (with `pause` between requests) until Stop(). A request fails on a connect error, a reset or
// close, a status other than 200, or no answer within 5 s; its connection is then re-opened for
// the next request. Thread-safe: Snapshot() and WaitForMore() may be called while it runs.
class LoadGenerator {
 public:
  struct Totals {
    int64_t requests = 0;
    int64_t failures = 0;
    std::map<std::string, int64_t> bodies;   // successful answers by body
    std::map<std::string, int64_t> reasons;  // failures by reason
    std::vector<std::string> samples;        // the first failures, with their time

    int64_t Body(const std::string& b) const {
      auto it = bodies.find(b);
      return it == bodies.end() ? 0 : it->second;
    }
    // The answers other than `body`, as text ("" when there is none).
    std::string Others(const std::string& body) const {
      std::string out;
      for (const auto& [b, n] : bodies) {
        if (b != body) out += "'" + b + "': " + std::to_string(n) + " ";
      }
      return out;
    }
    Totals Minus(const Totals& before) const {
      Totals d;
      d.requests = requests - before.requests;
      d.failures = failures - before.failures;
      for (const auto& [b, n] : bodies) {
        int64_t x = n - before.Body(b);
        if (x != 0) d.bodies[b] = x;
      }
      for (const auto& [r, n] : reasons) {
        auto it = before.reasons.find(r);
        int64_t x = n - (it == before.reasons.end() ? 0 : it->second);
        if (x != 0) d.reasons[r] = x;
      }
      return d;
    }
    std::string ToString() const {
      std::string out =
          std::to_string(requests) + " requests, " + std::to_string(failures) + " failed; answers:";
      for (const auto& [b, n] : bodies) {
        std::string shown = b;
        while (!shown.empty() && shown.back() == '\n') shown.pop_back();
        out += " " + shown + "=" + std::to_string(n);
      }
      for (const auto& [r, n] : reasons) out += "\n    failure x" + std::to_string(n) + ": " + r;
      for (const auto& s : samples) out += "\n    sample: " + s;
      return out;
    }
  };

  LoadGenerator(std::string label, uint16_t port, int threads = 4, Duration pause = 1ms)
      : label_(std::move(label)), port_(port), threads_(threads), pause_(pause) {}
  ~LoadGenerator() { Stop(); }
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  void Start() {
    start_ = Clock::now();
    stop_ = false;
    for (int i = 0; i < threads_; ++i) workers_.emplace_back([this, i] { Run(i); });
  }

  void Stop() {
    stop_ = true;
    for (auto& t : workers_) {
      if (t.joinable()) t.join();
    }
    workers_.clear();
  }

  Totals Snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    return totals_;
  }

  // Waits until at least `n` more requests than in `from` completed (successful or not).
  bool WaitForMore(const Totals& from, int64_t n, Duration timeout) const {
    return WaitUntil([&] { return Snapshot().requests >= from.requests + n; }, timeout);
  }

  const std::string& label() const { return label_; }

 private:
  void Run(int index) {
    std::unique_ptr<HttpConnection> conn;
    while (!stop_) {
      std::string failure;
      std::string body;
      if (!conn) {
        auto c = HttpConnection::Connect(port_, 5s);
        if (!c.ok()) {
          failure = "connect: " + c.status().message();
        } else {
          conn = std::move(c).value();
        }
      }
      if (conn) {
        auto r = conn->Get("/", 5s);
        if (!r.ok()) {
          failure = "GET /: " + r.status().message();
          conn.reset();
        } else {
          if (r->status != 200) {
            std::string b = r->body.substr(0, 80);
            std::replace(b.begin(), b.end(), '\n', ' ');
            failure = "GET /: status " + std::to_string(r->status) + " " + b;
          } else {
            body = r->body;
          }
          if (r->ConnectionClose()) conn.reset();
        }
      }
      Record(index, body, failure);
      if (!failure.empty()) {
        std::this_thread::sleep_for(10ms);  // do not spin on a refusing port
      } else if (pause_.count() > 0) {
        std::this_thread::sleep_for(pause_);
      }
    }
  }

  void Record(int index, const std::string& body, const std::string& failure) {
    std::lock_guard<std::mutex> lock(mu_);
    ++totals_.requests;
    if (failure.empty()) {
      ++totals_.bodies[body];
      return;
    }
    ++totals_.failures;
    // Port numbers vary; keep the reason short enough to group.
    ++totals_.reasons[failure.substr(0, 120)];
    if (totals_.samples.size() < 20) {
      char when[32];
      std::snprintf(when, sizeof when, "t+%.3fs", SecondsSince(start_));
      totals_.samples.push_back(std::string(when) + " thread " + std::to_string(index) + ": " +
                                failure);
    }
  }

  const std::string label_;
  const uint16_t port_;
  const int threads_;
  const Duration pause_;
  Clock::time_point start_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> workers_;
  mutable std::mutex mu_;
  Totals totals_;  // GUARDED_BY(mu_)
};

// ---------------------------------------------------------------------------------------------
// The fixture

struct CliResult {
  int exit_code = -1;  // -1: did not exit in time (killed), or killed by a signal
  std::string out;
  std::string err;
  std::string command;

  std::string Describe() const {
    return "`" + command + "` exited " + std::to_string(exit_code) + "\n--- stdout:\n" + out +
           "--- stderr:\n" + err + "---";
  }
};

struct ApiAnswer {
  int status = 0;
  std::string body;
  Json json;  // discarded() when not JSON
};

// The status document without what naturally changes from one call to the next (target health).
inline Json WithoutHealth(Json status) {
  if (status.is_object() && status.contains("target_groups") &&
      status["target_groups"].is_array()) {
    for (Json& g : status["target_groups"]) {
      if (!g.is_object() || !g.contains("targets") || !g["targets"].is_array()) continue;
      for (Json& t : g["targets"]) {
        if (t.is_object()) t.erase("health");
      }
    }
  }
  return status;
}

// Accessors over a stack's status JSON; empty values when something is missing.
inline Json FindNamed(const Json& array, const std::string& key, const std::string& value) {
  if (!array.is_array()) return Json();
  for (const Json& item : array) {
    if (item.is_object() && item.contains(key) && item[key].is_string() &&
        item[key].get<std::string>() == value) {
      return item;
    }
  }
  return Json();
}
inline Json Service(const Json& status, const std::string& identifier) {
  return status.is_object()
             ? FindNamed(status.value("services", Json::array()), "identifier", identifier)
             : Json();
}
inline Json Group(const Json& status, const std::string& name) {
  return status.is_object() ? FindNamed(status.value("target_groups", Json::array()), "name", name)
                            : Json();
}
inline Json Listener(const Json& status, const std::string& name) {
  return status.is_object() ? FindNamed(status.value("listeners", Json::array()), "name", name)
                            : Json();
}
// Tasks of a service (all versions), or of one version.
inline std::vector<Json> Tasks(const Json& status, const std::string& identifier,
                               const std::string& version = "") {
  std::vector<Json> out;
  if (!status.is_object() || !status.contains("tasks") || !status["tasks"].is_array()) return out;
  for (const Json& t : status["tasks"]) {
    if (t.value("service", "") != identifier) continue;
    if (!version.empty() && t.value("version", "") != version) continue;
    out.push_back(t);
  }
  return out;
}
// "id:handle" of every task, sorted: equal sets mean no task was restarted or replaced.
inline std::set<std::string> TaskIdentities(const Json& status) {
  std::set<std::string> out;
  if (!status.is_object() || !status.contains("tasks") || !status["tasks"].is_array()) return out;
  for (const Json& t : status["tasks"]) {
    out.insert(std::to_string(t.value("id", int64_t{0})) + ":" + t.value("handle", ""));
  }
  return out;
}
inline std::string SetToString(const std::set<std::string>& s) {
  std::string out;
  for (const auto& x : s) out += x + " ";
  return out;
}

// Every service that has a version runs desired_count healthy tasks of it, no rollout is in
// progress, every task is running and every target is healthy. `why` says what is missing.
inline bool Settled(const Json& status, std::string* why) {
  if (!status.is_object()) {
    *why = "no status";
    return false;
  }
  for (const Json& s : status.value("services", Json::array())) {
    const std::string id = s.value("identifier", "?");
    if (s.contains("rollout") && s["rollout"].is_object() &&
        s["rollout"].value("state", "") == "in_progress") {
      *why = id + " has a rollout in progress";
      return false;
    }
    if (!s.contains("version") || !s["version"].is_string()) continue;
    if (s.value("running_count", -1) != s.value("desired_count", -2)) {
      *why = id + " runs " + std::to_string(s.value("running_count", -1)) + " of " +
             std::to_string(s.value("desired_count", -2));
      return false;
    }
    if (static_cast<int>(Tasks(status, id).size()) != s.value("desired_count", -2)) {
      *why = id + " has " + std::to_string(Tasks(status, id).size()) + " tasks";
      return false;
    }
  }
  for (const Json& t : status.value("tasks", Json::array())) {
    if (t.value("state", "") != "running") {
      *why = "task " + std::to_string(t.value("id", 0)) + " is " + t.value("state", "?");
      return false;
    }
  }
  for (const Json& g : status.value("target_groups", Json::array())) {
    for (const Json& t : g.value("targets", Json::array())) {
      if (t.value("health", "") != "healthy") {
        *why =
            g.value("name", "?") + " " + t.value("address", "?") + " is " + t.value("health", "?");
        return false;
      }
    }
  }
  return true;
}

class ServeTest : public ::testing::Test {
 protected:
  static constexpr Duration kWatchdog = 150s;

  // How long one test may run before the watchdog kills its processes and aborts the binary (a
  // fixture with longer tests overrides it).
  virtual Duration WatchdogTimeout() const { return kWatchdog; }
  // Whether SetUp starts serve (a test whose command starts serve itself says no).
  virtual bool StartsServe() const { return true; }
  // More arguments of `bluegreen serve` (a fixture sets them in its constructor).
  std::vector<std::string> serve_args_;

  void SetUp() override {
    start_ = Clock::now();
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/bluegreen_serve_it.XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    ASSERT_NE(::mkdtemp(buf.data()), nullptr) << "mkdtemp: " << std::strerror(errno);
    root_ = buf.data();
    state_dir_ = root_ + "/state";
    art_dir_ = root_ + "/artifacts";
    std::filesystem::create_directories(art_dir_);
    StartWatchdog();
    BG_ASSERT_OK_AND_ASSIGN(api_port_, PickFreePort());
    if (!StartsServe()) return;
    BG_ASSERT_OK(StartServe());
    auto token = ReadFile(state_dir_ + "/admin.token");
    ASSERT_TRUE(token.ok()) << token.status().ToString();
    token_ = std::string(proxy_test::Trim(*token));
    while (!token_.empty() && (token_.back() == '\n' || token_.back() == '\r')) token_.pop_back();
  }

  void TearDown() override {
    const bool failed = HasFailure();
    if (failed) DumpDiagnostics();
    // 1. `bluegreen down` for every stack the test made, while serve is up.
    bool downs_ok = true;
    if (serve_ && serve_->Running()) {
      for (const std::string& name : stacks_) {
        CliResult r = Cli({"down", name}, 60s);
        if (r.exit_code != 0 && r.exit_code != 3) {
          downs_ok = false;
          ADD_FAILURE() << "cleanup: " << r.Describe();
        }
      }
    } else {
      downs_ok = stacks_.empty();
    }
    // 2. Serve stops (SIGTERM).
    if (serve_) {
      std::optional<int> st = serve_->Stop(10s);
      if (!st || !WIFEXITED(*st) || WEXITSTATUS(*st) != 0) {
        ADD_FAILURE() << "serve did not stop cleanly on SIGTERM: "
                      << proxy_test::DescribeWaitStatus(st);
      }
      serve_.reset();
    }
    old_serves_.clear();
    // 3. Last resort: whatever of this test still runs. After a clean `down` of every stack
    // nothing may be left: that is a bug of serve, reported as such.
    std::vector<ProcEntry> left = KillLeftovers(root_);
    if (!left.empty()) {
      std::string list;
      for (const ProcEntry& p : left) list += "\n  " + p.Describe();
      if (downs_ok && !failed) {
        ADD_FAILURE() << "processes left behind after `bluegreen down` of every stack and serve "
                         "stopped (killed now):"
                      << list;
      } else {
        std::fprintf(stderr, "cleanup: killed leftovers:%s\n", list.c_str());
      }
    }
    {
      std::lock_guard<std::mutex> lock(watchdog_mu_);
      test_done_ = true;
    }
    watchdog_cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    std::fprintf(stderr, "[timing] %s: %.1f s\n",
                 ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                 SecondsSince(start_));
    if (!root_.empty() && !getenv("BLUEGREEN_KEEP_TEST_DIR")) {
      std::error_code ec;
      std::filesystem::remove_all(root_, ec);
    }
  }

  // ---- serve

  // Starts `bluegreen serve` on the test's state dir and API port; waits until healthz answers.
  // `env` adds variables ("NAME=VALUE"), e.g. BLUEGREEN_FAILPOINTS.
  Status StartServe(const std::vector<std::string>& env = {}) {
    if (serve_) old_serves_.push_back(std::move(serve_));
    std::vector<std::string> argv = env;
    argv.insert(argv.end(), {BLUEGREEN_BINARY, "serve", "--state-dir", state_dir_, "--api",
                             "127.0.0.1:" + std::to_string(api_port_), "--proxy-workers", "2"});
    argv.insert(argv.end(), serve_args_.begin(), serve_args_.end());
    auto p = Process::Start("/usr/bin/env", argv);
    if (!p.ok()) return p.status();
    serve_ = std::move(p).value();
    const auto deadline = Clock::now() + 15s;
    std::string last;
    while (Clock::now() < deadline) {
      if (!serve_->Running()) {
        return Unavailable("serve exited at start: " + serve_->Stderr());
      }
      HttpClientRequest req;
      req.target = "/api/v1/healthz";
      auto r = HttpCall(ApiAddress(), req, 2s);
      if (r.ok() && r->status == 200) return Status::Ok();
      last = r.ok() ? "status " + std::to_string(r->status) : r.status().message();
      std::this_thread::sleep_for(20ms);  // serve offers no readiness notification
    }
    return proxy_test::DeadlineExceeded("serve not ready: " + last + "; stderr:\n" +
                                        serve_->Stderr());
  }

  // SIGKILL to serve; waits until it is reaped.
  void KillServe() {
    ASSERT_TRUE(serve_ != nullptr);
    serve_->Signal(SIGKILL);
    ASSERT_TRUE(serve_->WaitExit(10s).has_value()) << "serve survived SIGKILL";
  }

  // Waits until serve exits by itself (a failpoint), up to `timeout`; false if it still runs.
  bool WaitServeExit(Duration timeout) {
    return serve_ != nullptr && serve_->WaitExit(timeout).has_value();
  }

  std::string ApiAddress() const { return "127.0.0.1:" + std::to_string(api_port_); }

  // ---- the CLI

  // Runs `bluegreen ARGS` with BLUEGREEN_API and BLUEGREEN_STATE_DIR set for it (and
  // BLUEGREEN_TOKEN unset). `env` adds or overrides variables ("NAME=VALUE").
  CliResult Cli(const std::vector<std::string>& args, Duration timeout = 60s,
                const std::vector<std::string>& env = {}) {
    std::unique_ptr<Process> p = StartCli(args, env);
    CliResult r;
    r.command = "bluegreen";
    for (const auto& a : args) r.command += " " + a;
    if (!p) {
      r.err = "could not start the CLI";
      return r;
    }
    std::optional<int> st = p->WaitExit(timeout);
    if (!st) {
      p->Signal(SIGKILL);
      st = p->WaitExit(5s);
      r.err = "(killed: no exit within the timeout)\n";
      r.exit_code = -1;
    } else if (WIFEXITED(*st)) {
      r.exit_code = WEXITSTATUS(*st);
    }
    p->WaitForOutputClosed(5s);
    r.out = p->Stdout();
    r.err += p->Stderr();
    return r;
  }

  // Starts the CLI without waiting (see Cli); null when it cannot be started.
  std::unique_ptr<Process> StartCli(const std::vector<std::string>& args,
                                    const std::vector<std::string>& env = {}) {
    std::vector<std::string> argv = {"-u", "BLUEGREEN_TOKEN",
                                     "BLUEGREEN_API=http://" + ApiAddress(),
                                     "BLUEGREEN_STATE_DIR=" + state_dir_};
    argv.insert(argv.end(), env.begin(), env.end());
    argv.push_back(BLUEGREEN_BINARY);
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = Process::Start("/usr/bin/env", argv);
    if (!p.ok()) return nullptr;
    return std::move(p).value();
  }

  // `bluegreen status NAME --json`, parsed.
  Result<Json> CliStatus(const std::string& name) {
    CliResult r = Cli({"status", name, "--json"});
    if (r.exit_code != 0) return Internal(r.Describe());
    Json j = Json::parse(r.out, nullptr, false);
    if (j.is_discarded()) return Internal("status --json printed no JSON: " + r.Describe());
    return j;
  }

  // ---- the REST API

  // One call; `token` nullopt sends the admin token, "" sends no Authorization header.
  Result<ApiAnswer> Api(const std::string& method, const std::string& path,
                        const std::string& body = "",
                        std::optional<std::string> token = std::nullopt, Duration timeout = 30s) {
    HttpClientRequest req;
    req.method = method;
    req.target = path;
    req.body = body;
    const std::string t = token.value_or(token_);
    if (!t.empty()) req.headers.emplace_back("Authorization", "Bearer " + t);
    if (!body.empty()) req.headers.emplace_back("Content-Type", "application/json");
    auto r = HttpCall(ApiAddress(), req, timeout);
    if (!r.ok()) return r.status();
    ApiAnswer a;
    a.status = r->status;
    a.body = r->body;
    a.json = Json::parse(a.body, nullptr, false);
    return a;
  }

  // GET PATH as admin; its JSON (a test failure unless it answers 200).
  Json Get(const std::string& path) {
    auto r = Api("GET", path);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return Json();
    EXPECT_EQ(r->status, 200) << path << ": " << r->body;
    return r->json;
  }

  // GET /api/v1/stacks/NAME, which must answer 200 with JSON.
  Result<Json> ApiStatus(const std::string& name) {
    auto r = Api("GET", "/api/v1/stacks/" + name);
    if (!r.ok()) return r.status();
    if (r->status != 200 || r->json.is_discarded()) {
      return Internal("GET /api/v1/stacks/" + name + ": " + std::to_string(r->status) + " " +
                      r->body);
    }
    return r->json;
  }

  // Polls the stack's status (API) until `pred` holds; returns that status.
  Result<Json> WaitForStatus(const std::string& name, const std::function<bool(const Json&)>& pred,
                             Duration timeout, const std::string& what) {
    const auto deadline = Clock::now() + timeout;
    std::string last;
    while (true) {
      auto st = ApiStatus(name);
      if (st.ok()) {
        if (pred(*st)) return *st;
        last = st->dump();
      } else {
        last = st.status().ToString();
      }
      if (Clock::now() >= deadline) {
        return proxy_test::DeadlineExceeded("waiting for " + what + "; last status: " + last);
      }
      std::this_thread::sleep_for(100ms);  // serve offers no change notification
    }
  }

  // Waits until the stack has settled (see Settled).
  Result<Json> WaitSettled(const std::string& name, Duration timeout = 30s) {
    std::string why;
    auto st = WaitForStatus(
        name, [&](const Json& s) { return Settled(s, &why); }, timeout, "a settled stack");
    if (!st.ok()) return Status(st.status().code(), why + "; " + st.status().message());
    return st;
  }

  // ---- stacks and versions

  std::string WriteStack(const StackFile& f, const std::string& file_name = "stack.yaml") {
    const std::string path = root_ + "/" + file_name;
    EXPECT_TRUE(WriteFile(path, f.ToYaml()).ok());
    return path;
  }
  std::string WriteText(const std::string& file_name, const std::string& text) {
    const std::string path = root_ + "/" + file_name;
    EXPECT_TRUE(WriteFile(path, text).ok());
    return path;
  }

  // A version's artifact directory (see WriteVersion), under the test's artifacts dir.
  Result<std::string> MakeVersion(const std::string& version, const std::string& extra_args = "") {
    const std::string dir = art_dir_ + "/" + version;
    BG_RETURN_IF_ERROR(WriteVersion(dir, version, extra_args));
    return dir;
  }

  // Fresh production_port and test_port of a stack file (StackFile, PipelineStack, ...).
  template <typename StackFileType>
  static Status PickListenerPorts(StackFileType* f) {
    auto p = PickFreePort();
    if (!p.ok()) return p.status();
    auto t = PickFreePort();
    if (!t.ok()) return t.status();
    f->production_port = *p;
    f->test_port = *t;
    return Status::Ok();
  }

  // A stack file with fresh ports.
  Result<StackFile> NewStackFile(const std::string& name = "demo", int desired_count = 2) {
    StackFile f;
    f.name = name;
    f.desired_count = desired_count;
    BG_RETURN_IF_ERROR(PickListenerPorts(&f));
    return f;
  }

  // `up` of `f`, then `deploy` of `version` (made with MakeVersion), then waits until settled.
  Result<Json> UpAndDeploy(const StackFile& f, const std::string& version) {
    stacks_.insert(f.name);
    CliResult up = Cli({"up", "-f", WriteStack(f)});
    if (up.exit_code != 0) return Internal(up.Describe());
    auto dir = MakeVersion(version);
    if (!dir.ok()) return dir.status();
    CliResult d = Cli({"deploy", f.name, "--version", version, "--artifact", *dir});
    if (d.exit_code != 0) return Internal(d.Describe());
    return WaitSettled(f.name);
  }

  // The proxy serve started for this state dir (`bluegreen proxy --config STATE/proxy/...`).
  std::optional<ProcEntry> ProxyProcess() {
    const std::string config = state_dir_ + "/proxy/proxy.json";
    for (ProcEntry& p : ListProcesses()) {
      if (p.dead()) continue;
      if (p.cmdline.find(" proxy ") != std::string::npos &&
          p.cmdline.find(config) != std::string::npos) {
        return p;
      }
    }
    return std::nullopt;
  }

  // A body from a fresh connection to the port, or the error.
  static std::string FetchBody(uint16_t port) {
    auto r = proxy_test::FetchGet(port, "/", 5s);
    if (!r.ok()) return "error: " + r.status().message();
    if (r->status != 200) return "status " + std::to_string(r->status) + ": " + r->body;
    return r->body;
  }
  // `n` fresh requests that all answer `body`; false (with what came instead) otherwise.
  static bool AllAnswer(uint16_t port, const std::string& body, int n, std::string* got) {
    for (int i = 0; i < n; ++i) {
      std::string b = FetchBody(port);
      if (b != body) {
        *got = "request " + std::to_string(i) + " answered '" + b + "'";
        return false;
      }
    }
    return true;
  }
  // Waits until `n` fresh requests in a row answer `body`.
  static bool WaitAllAnswer(uint16_t port, const std::string& body, int n, Duration timeout,
                            std::string* got) {
    return WaitUntil([&] { return AllAnswer(port, body, n, got); }, timeout);
  }

  void DumpDiagnostics() {
    auto tail = [](std::string s, size_t n) {
      return s.size() > n ? "..." + s.substr(s.size() - n) : s;
    };
    for (auto& s : old_serves_) {
      std::fprintf(stderr, "----- stderr of an earlier serve -----\n%s\n-----\n",
                   tail(s->Stderr(), 12000).c_str());
    }
    if (serve_) {
      std::fprintf(stderr, "----- stderr of serve -----\n%s\n-----\n",
                   tail(serve_->Stderr(), 16000).c_str());
    }
    auto proxy_log = ReadFile(state_dir_ + "/proxy/proxy.log");
    if (proxy_log.ok()) {
      std::fprintf(stderr, "----- proxy.log -----\n%s\n-----\n", tail(*proxy_log, 6000).c_str());
    }
    if (serve_ && serve_->Running()) {
      for (const std::string& name : stacks_) {
        auto ev = Api("GET", "/api/v1/stacks/" + name + "/events", "", std::nullopt, 5s);
        if (ev.ok()) {
          std::fprintf(stderr, "----- events of %s -----\n%s\n-----\n", name.c_str(),
                       tail(ev->json.is_discarded() ? ev->body : ev->json.dump(1), 8000).c_str());
        }
      }
    }
  }

  std::string root_;       // the test's own temp dir: everything of the test is under it
  std::string state_dir_;  // serve's --state-dir
  std::string art_dir_;    // versions' artifact dirs
  uint16_t api_port_ = 0;
  std::string token_;
  std::unique_ptr<Process> serve_;
  std::vector<std::unique_ptr<Process>> old_serves_;  // killed ones, kept for their logs
  std::set<std::string> stacks_;                      // `down` in TearDown
  Clock::time_point start_;

 private:
  void StartWatchdog() {
    const std::string root = root_;
    const Duration timeout = WatchdogTimeout();
    watchdog_ = std::thread([this, root, timeout] {
      std::unique_lock<std::mutex> lock(watchdog_mu_);
      if (!watchdog_cv_.wait_for(lock, timeout, [this] { return test_done_; })) {
        std::fprintf(stderr, "watchdog: test ran longer than %lld s; killing its processes\n",
                     static_cast<long long>(
                         std::chrono::duration_cast<std::chrono::seconds>(timeout).count()));
        {
          std::lock_guard<std::mutex> reg(proxy_test::ChildRegistryMutex());
          for (pid_t pid : proxy_test::ChildRegistry()) ::kill(pid, SIGKILL);
        }
        KillLeftovers(root);
        std::abort();
      }
    });
  }

  std::thread watchdog_;
  std::mutex watchdog_mu_;
  std::condition_variable watchdog_cv_;
  bool test_done_ = false;
};

}  // namespace bluegreen::serve_it
