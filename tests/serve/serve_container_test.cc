// Integration tests of `bluegreen serve` with the container runtime: the real binary drives real
// Podman containers through Podman's Docker-compatible API service, which the test starts itself
// (scripts/podman-service.sh). Skipped when podman is not installed.
//
// Images cannot be pulled here: each version's image is imported from a root filesystem that
// holds the test backend and the shared libraries it needs, with an ENTRYPOINT that names the
// version (so a request shows which version answered).
#include <signal.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <regex>

#include <fmt/format.h>

#include "../proxy/harness.h"
#include "serve_harness.h"

namespace bluegreen::proxy_test {
namespace {

constexpr const char* kImage = "localhost/bluegreen-serve-test";

// Runs a shell command; returns its exit status and stdout.
std::pair<int, std::string> Shell(const std::string& cmd) {
  std::string out;
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) return {-1, ""};
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  const int st = ::pclose(f);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

bool HavePodman() { return Shell("command -v podman >/dev/null 2>&1").first == 0; }

class ServeContainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HavePodman()) GTEST_SKIP() << "podman is not installed (scripts/install-deps.sh installs it)";
    ASSERT_TRUE(dir_.ok());
    podman_dir_ = dir_.File("podman");
    auto [rc, sock] = Shell(std::string(BLUEGREEN_SOURCE_DIR) + "/scripts/podman-service.sh start " +
                            podman_dir_ + " 2>&1");
    ASSERT_EQ(rc, 0) << sock;
    sock_ = std::string(Trim(sock));
    while (!sock_.empty() && (sock_.back() == '\n' || sock_.back() == '\r')) sock_.pop_back();
    podman_ = "CONTAINERS_CONF=" + podman_dir_ + "/containers.conf podman";
    for (const char* v : {"v1", "v2"}) ASSERT_NO_FATAL_FAILURE(MakeImage(v));

    BG_ASSERT_OK_AND_ASSIGN(api_port_, PickFreePort());
    BG_ASSERT_OK_AND_ASSIGN(prod_port_, PickFreePort());
    BG_ASSERT_OK_AND_ASSIGN(test_port_, PickFreePort());
    state_ = dir_.File("state");
    stack_ = fmt::format("ctr{}", ::getpid());
    ::setenv("DOCKER_HOST", ("unix://" + sock_).c_str(), 1);
    ::setenv("BLUEGREEN_API", fmt::format("http://127.0.0.1:{}", api_port_).c_str(), 1);
    ::setenv("BLUEGREEN_STATE_DIR", state_.c_str(), 1);
    ::unsetenv("BLUEGREEN_TOKEN");
    ASSERT_NO_FATAL_FAILURE(StartServe());
  }

  void TearDown() override {
    if (serve_ != nullptr) {
      Cli({"down", stack_}, 60s);
      serve_->Stop(5s);
    }
    // Last resort: containers of this test and the proxy of this state dir.
    Shell(podman_ + " ps -aq --filter name=-" + stack_ + "-code | xargs -r " + podman_ +
          " rm -f >/dev/null 2>&1");
    Shell("pkill -9 -f 'proxy --config " + state_ + "/' >/dev/null 2>&1");
    if (!podman_dir_.empty()) {
      Shell(std::string(BLUEGREEN_SOURCE_DIR) + "/scripts/podman-service.sh stop " + podman_dir_ +
            " >/dev/null 2>&1");
    }
  }

  void MakeImage(const std::string& version) {
    const std::string root = dir_.File("rootfs-" + version);
    const std::string script = fmt::format(
        R"(set -e
mkdir -p {root}
cp {bin} {root}/test_backend
for lib in $(ldd {bin} | grep -o '/[^ ]*'); do mkdir -p {root}$(dirname $lib); cp -L $lib {root}$lib; done
tar -C {root} -c . | {podman} import --change 'ENTRYPOINT ["/test_backend", "--name", "{v}"]' - {image}:{v} >/dev/null)",
        fmt::arg("root", root), fmt::arg("bin", TEST_BACKEND_BINARY), fmt::arg("podman", podman_),
        fmt::arg("v", version), fmt::arg("image", kImage));
    auto [rc, out] = Shell("bash -c '" + std::regex_replace(script, std::regex("'"), "'\\''") +
                           "' 2>&1");
    ASSERT_EQ(rc, 0) << out;
  }

  void StartServe() {
    BG_ASSERT_OK_AND_ASSIGN(serve_,
                            Process::Start(BLUEGREEN_BINARY,
                                           {"serve", "--state-dir", state_, "--api",
                                            fmt::format("127.0.0.1:{}", api_port_),
                                            "--proxy-workers", "2"}));
    ASSERT_TRUE(serve_->WaitForStderr("API http://", 10s)) << serve_->Stderr();
  }

  // Runs the CLI; returns its exit code and stdout+stderr.
  std::pair<int, std::string> Cli(const std::vector<std::string>& args, Duration timeout = 120s) {
    auto p = Process::Start(BLUEGREEN_BINARY, args);
    if (!p.ok()) return {-1, p.status().ToString()};
    std::optional<int> st = (*p)->WaitExit(timeout);
    (*p)->WaitForOutputClosed(2s);
    const std::string out = (*p)->Stdout() + (*p)->Stderr();
    if (!st) return {-1, "timed out: " + out};
    return {WIFEXITED(*st) ? WEXITSTATUS(*st) : -1, out};
  }

  Json Status() {
    auto [rc, out] = Cli({"status", stack_, "--json"});
    if (rc != 0) return Json();
    return Json::parse(out, nullptr, false);
  }

  std::string StackFile(int count) {
    return fmt::format(R"(name: {name}
service:
  runtime: podman
  image: {image}:v1
  command: ["--listen", "0.0.0.0:${{PORT}}"]
  port: 8080
  desired_count: {count}
  health_check: {{path: /health, interval: 1s, timeout: 1s}}
load_balancer:
  production: {{port: {prod}}}
  test: {{port: {test}}}
  deregistration_delay: 2s
)",
                       fmt::arg("name", stack_), fmt::arg("image", kImage), fmt::arg("count", count),
                       fmt::arg("prod", prod_port_), fmt::arg("test", test_port_));
  }

  std::string Get(uint16_t port) {
    auto c = HttpConnection::Connect(port, 2s);
    if (!c.ok()) return "connect failed";
    auto r = (*c)->Get("/", 5s);
    return r.ok() ? r->body : "request failed";
  }

  int Containers() {
    auto [rc, out] = Shell(podman_ + " ps -aq --filter name=-" + stack_ + "-code 2>/dev/null | wc -l");
    return rc == 0 ? std::atoi(out.c_str()) : -1;
  }

  TempDir dir_;
  std::string podman_dir_, sock_, podman_, state_;
  std::string stack_;  // unique per test process: containers are named after it
  uint16_t api_port_ = 0, prod_port_ = 0, test_port_ = 0;
  std::unique_ptr<Process> serve_;
};

TEST_F(ServeContainerTest, UpDeployCrashScaleDown) {
  const std::string file = dir_.File("stack.yaml");
  BG_ASSERT_OK(WriteFile(file, StackFile(2)));

  // up: the stack's image is its first version, on both sides.
  auto [rc, out] = Cli({"up", "-f", file});
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("deploy image " + std::string(kImage) + ":v1 as version v1"),
            std::string::npos)
      << out;
  Json st = Status();
  ASSERT_TRUE(st.is_object()) << out;
  EXPECT_EQ(st["runtime"], "podman");
  for (const Json& s : st["services"]) {
    EXPECT_EQ(s["version"], "v1") << st.dump();
    EXPECT_EQ(s["running_count"], 2) << st.dump();
  }
  EXPECT_EQ(Get(prod_port_), "v1\n");
  EXPECT_EQ(Get(test_port_), "v1\n");
  EXPECT_EQ(Containers(), 4);

  // A new version goes to the test side only, as a rolling change.
  std::tie(rc, out) = Cli({"deploy", stack_, "--version", "v2", "--image",
                           std::string(kImage) + ":v2"});
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(Get(test_port_), "v2\n");
  EXPECT_EQ(Get(prod_port_), "v1\n");
  st = Status();
  EXPECT_EQ(st["services"][0]["version"], "v1");
  EXPECT_EQ(st["services"][1]["version"], "v2");
  // The old Code2 containers drain and go.
  const auto deadline = Clock::now() + 30s;
  while (Containers() != 4 && Clock::now() < deadline) std::this_thread::sleep_for(200ms);
  EXPECT_EQ(Containers(), 4);

  // A container that dies is replaced.
  st = Status();
  std::string victim;
  for (const Json& t : st["tasks"]) {
    if (t["service"] == "Code1" && t["state"] == "running") victim = t["handle"];
  }
  ASSERT_FALSE(victim.empty()) << st.dump();
  Shell(podman_ + " kill " + victim + " >/dev/null 2>&1");
  bool replaced = false;
  for (auto until = Clock::now() + 30s; Clock::now() < until && !replaced;) {
    std::this_thread::sleep_for(300ms);
    Json now = Status();
    if (!now.is_object()) continue;
    bool victim_gone = true;
    int running = 0;
    for (const Json& t : now["tasks"]) {
      if (t["handle"] == victim) victim_gone = false;
      if (t["service"] == "Code1" && t["state"] == "running") ++running;
    }
    replaced = victim_gone && now["services"][0]["running_count"] == 2 && running == 2;
  }
  EXPECT_TRUE(replaced) << Status().dump();
  EXPECT_EQ(Get(prod_port_), "v1\n");

  // Scale down with `up`.
  BG_ASSERT_OK(WriteFile(file, StackFile(1)));
  std::tie(rc, out) = Cli({"up", "-f", file});
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("desired_count 2 -> 1"), std::string::npos) << out;
  const auto until = Clock::now() + 30s;
  while (Containers() != 2 && Clock::now() < until) std::this_thread::sleep_for(200ms);
  EXPECT_EQ(Containers(), 2);

  // down: no container, no listener.
  std::tie(rc, out) = Cli({"down", stack_});
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(Containers(), 0);
  EXPECT_FALSE(HttpConnection::Connect(prod_port_, 1s).ok());
  EXPECT_FALSE(HttpConnection::Connect(test_port_, 1s).ok());
  std::tie(rc, out) = Cli({"status", stack_});
  EXPECT_EQ(rc, 3) << out;
}

// SIGKILL of the podman API service under load (issue 7's faults). The containers run under
// their conmon and keep serving; serve must take the engine's silence for "unknown", not for
// "the tasks are gone": no task is replaced or deregistered, `status` says the runtime is
// unreachable, a deploy is refused with a clear error and changes nothing, and the outage is
// logged once (not on every pass). The service is then started again on the same socket: serve
// sees it by itself, the same containers are still the tasks, and a deploy works. Production
// must not lose a request at any point. The figures are printed for docs/reliability.md.
TEST_F(ServeContainerTest, PodmanServiceSigkillUnderLoad) {
  using serve_it::LoadGenerator;
  using serve_it::SecondsSince;
  using serve_it::WaitUntil;
  const std::string file = dir_.File("stack.yaml");
  BG_ASSERT_OK(WriteFile(file, StackFile(2)));
  auto [rc, out] = Cli({"up", "-f", file});
  ASSERT_EQ(rc, 0) << out;

  // The tasks: id -> container id, all running, 2 per side.
  auto handles = [&](const Json& st) {
    std::map<int64_t, std::string> h;
    if (!st.is_object()) return h;
    for (const Json& t : st["tasks"]) {
      h[t["id"].get<int64_t>()] =
          t["state"].get<std::string>() + " " + t["handle"].get<std::string>();
    }
    return h;
  };
  auto running_counts = [](const Json& st) {
    std::string out;
    if (!st.is_object()) return std::string("no status");
    for (const Json& s : st["services"]) {
      out += s["identifier"].get<std::string>() + "=" + s["version"].dump() + "/" +
             s["running_count"].dump() + " ";
    }
    return out;
  };
  auto reachable = [](const Json& st) -> std::optional<bool> {
    if (!st.is_object() || !st.contains("runtime_status")) return std::nullopt;
    return st["runtime_status"].value("reachable", true);
  };
  const std::string settled = "Code1=\"v1\"/2 Code2=\"v1\"/2 ";
  Json before;
  ASSERT_TRUE(WaitUntil(
      [&] {
        before = Status();
        return running_counts(before) == settled;
      },
      60s))
      << before.dump();
  const std::map<int64_t, std::string> tasks_before = handles(before);
  ASSERT_EQ(tasks_before.size(), 4u) << before.dump();
  for (const auto& [id, h] : tasks_before) ASSERT_TRUE(h.starts_with("running ")) << h;
  ASSERT_EQ(reachable(before), std::optional<bool>(true)) << before.dump();
  EXPECT_EQ(Get(prod_port_), "v1\n");

  // The service's pid, from the script's pid file.
  std::ifstream pid_in(podman_dir_ + "/podman.pid");
  pid_t podman_pid = 0;
  pid_in >> podman_pid;
  ASSERT_GT(podman_pid, 1);

  LoadGenerator prod("production", prod_port_, 4);
  prod.Start();
  ASSERT_TRUE(prod.WaitForMore({}, 200, 10s)) << prod.Snapshot().ToString();

  const size_t log_mark = serve_->StderrSize();
  const LoadGenerator::Totals at_kill = prod.Snapshot();
  const auto killed = Clock::now();
  ASSERT_EQ(::kill(podman_pid, SIGKILL), 0);
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::ifstream stat(fmt::format("/proc/{}/stat", podman_pid));
        std::string pid, comm, state;
        return !(stat >> pid >> comm >> state) || state == "Z";
      },
      10s))
      << "the podman service did not die";

  // serve says so in `status` (JSON and text), and keeps answering.
  Json down;
  ASSERT_TRUE(WaitUntil(
      [&] {
        down = Status();
        return reachable(down) == std::optional<bool>(false);
      },
      20s))
      << "status never said that the runtime is unreachable: " << down.dump();
  const double seen_down_s = SecondsSince(killed);
  const std::string error = down["runtime_status"].value("error", "");
  EXPECT_NE(error.find("podman"), std::string::npos) << error;
  EXPECT_NE(error.find(sock_), std::string::npos) << error;
  EXPECT_NE(error.find("does not answer"), std::string::npos) << error;
  EXPECT_TRUE(down["runtime_status"]["since"].is_number_integer()) << down.dump();
  std::tie(rc, out) = Cli({"status", stack_});
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("RUNTIME UNREACHABLE"), std::string::npos) << out;
  EXPECT_NE(out.find(sock_), std::string::npos) << out;
  const std::string status_text = out;
  // So does the list of stacks (GET /api/v1/stacks and `bluegreen stacks`).
  std::tie(rc, out) = Cli({"stacks", "--json"});
  ASSERT_EQ(rc, 0) << out;
  const Json list = Json::parse(out, nullptr, false);
  bool listed = false;
  for (const Json& st : list.value("stacks", Json::array())) {
    if (st.value("name", "") != stack_) continue;
    listed = true;
    EXPECT_EQ(reachable(st), std::optional<bool>(false)) << st.dump();
    EXPECT_EQ(st["runtime_status"].value("error", ""), error) << st.dump();
  }
  EXPECT_TRUE(listed) << out;
  std::tie(rc, out) = Cli({"stacks"});
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find(stack_ + " (runtime podman): RUNTIME UNREACHABLE"), std::string::npos) << out;

  // A deploy is refused with a clear error, and changes nothing.
  std::tie(rc, out) =
      Cli({"deploy", stack_, "--version", "v2", "--image", std::string(kImage) + ":v2"});
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("cannot deploy v2"), std::string::npos) << out;
  EXPECT_NE(out.find("does not answer"), std::string::npos) << out;
  EXPECT_NE(out.find("nothing was changed"), std::string::npos) << out;
  EXPECT_NE(out.find("podman.socket"), std::string::npos) << out;  // the hint
  const std::string deploy_text = out;
  Json after_deploy = Status();
  EXPECT_EQ(running_counts(after_deploy), settled) << after_deploy.dump();
  for (const Json& s : after_deploy["services"]) EXPECT_TRUE(s["rollout"].is_null()) << s.dump();

  // 20 passes of the reconciler with the engine gone: nothing is replaced or deregistered.
  std::this_thread::sleep_for(10s);
  Json still = Status();
  EXPECT_EQ(handles(still), tasks_before)
      << "BUG: tasks changed while the engine was unreachable: " << still.dump();
  EXPECT_EQ(running_counts(still), settled) << still.dump();
  for (const Json& g : still["target_groups"]) {
    EXPECT_EQ(g["targets"].size(), 2u) << g.dump();
    for (const Json& t : g["targets"]) EXPECT_EQ(t["health"], "healthy") << g.dump();
  }
  const LoadGenerator::Totals while_down = prod.Snapshot().Minus(at_kill);
  const double down_checked_s = SecondsSince(killed);
  EXPECT_GT(while_down.requests, 100) << "traffic stopped while the podman service was down";
  EXPECT_EQ(while_down.failures, 0) << while_down.ToString();

  // The outage is logged once, not on every pass (the reminder comes once a minute).
  const std::string log_down = serve_->Stderr().substr(log_mark);
  int outage_lines = 0, inspect_lines = 0;
  for (size_t at = 0; (at = log_down.find("does not answer", at)) != std::string::npos; ++at) {
    ++outage_lines;
  }
  for (size_t at = 0; (at = log_down.find("cannot inspect", at)) != std::string::npos; ++at) {
    ++inspect_lines;
  }
  EXPECT_EQ(outage_lines, 1) << log_down;
  EXPECT_EQ(inspect_lines, 0) << log_down;
  EXPECT_EQ(log_down.find("exited"), std::string::npos) << log_down;

  // The service again, on the same socket: serve sees it by itself.
  auto [start_rc, start_out] = Shell(std::string(BLUEGREEN_SOURCE_DIR) +
                                     "/scripts/podman-service.sh start " + podman_dir_ + " 2>&1");
  ASSERT_EQ(start_rc, 0) << start_out;
  const auto back = Clock::now();
  const double gap_s = std::chrono::duration<double>(back - killed).count();
  Json up;
  ASSERT_TRUE(WaitUntil(
      [&] {
        up = Status();
        return reachable(up) == std::optional<bool>(true);
      },
      20s))
      << "serve did not see the podman service back: " << up.dump();
  const double seen_back_s = SecondsSince(back);
  EXPECT_EQ(up["runtime_status"].value("error", "x"), "") << up.dump();
  std::tie(rc, out) = Cli({"status", stack_});
  EXPECT_EQ(out.find("RUNTIME UNREACHABLE"), std::string::npos) << out;
  // A few passes with the engine back: the same containers are the tasks.
  std::this_thread::sleep_for(2s);
  Json readopted = Status();
  EXPECT_EQ(handles(readopted), tasks_before) << readopted.dump();
  EXPECT_EQ(running_counts(readopted), settled) << readopted.dump();
  EXPECT_EQ(Containers(), 4);

  // The events say what happened, once each.
  std::ifstream token_in(state_ + "/admin.token");
  std::string token;
  token_in >> token;
  HttpClientRequest events_req;
  events_req.target = "/api/v1/stacks/" + stack_ + "/events";
  events_req.headers.emplace_back("Authorization", "Bearer " + token);
  Result<HttpClientResponse> events_answer =
      HttpCall(fmt::format("127.0.0.1:{}", api_port_), events_req, 5s);
  ASSERT_TRUE(events_answer.ok()) << events_answer.status().ToString();
  const Json events = Json::parse(events_answer->body, nullptr, false);
  int unreachable_events = 0, reachable_events = 0, exited_events = 0;
  for (const Json& e : events["events"]) {
    const std::string kind = e.value("kind", "");
    unreachable_events += kind == "runtime_unreachable";
    reachable_events += kind == "runtime_reachable";
    exited_events += kind == "task_exited";
  }
  EXPECT_EQ(unreachable_events, 1) << events.dump(1);
  EXPECT_EQ(reachable_events, 1) << events.dump(1);
  EXPECT_EQ(exited_events, 0) << events.dump(1);

  // A deploy to the test side works again; production is untouched.
  std::tie(rc, out) = Cli({"deploy", stack_, "--version", "v2"});
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(Get(test_port_), "v2\n");
  EXPECT_EQ(Get(prod_port_), "v1\n");
  Json deployed = Status();
  std::map<int64_t, std::string> live_before, live_after;
  const std::string live = before["live"].get<std::string>();
  for (const Json& t : before["tasks"]) {
    if (t["service"] == live) live_before[t["id"].get<int64_t>()] = t["handle"].get<std::string>();
  }
  for (const Json& t : deployed["tasks"]) {
    if (t["service"] == live) live_after[t["id"].get<int64_t>()] = t["handle"].get<std::string>();
  }
  EXPECT_EQ(live_after, live_before) << "production's tasks changed: " << deployed.dump();

  prod.Stop();
  const LoadGenerator::Totals total = prod.Snapshot();
  EXPECT_EQ(total.failures, 0) << total.ToString();
  EXPECT_EQ(total.Others("v1\n"), "") << total.ToString();
  std::fprintf(stderr,
               "[podman-kill] `bluegreen status` while it was down:\n%s"
               "[podman-kill] `bluegreen deploy` while it was down:\n%s",
               status_text.c_str(), deploy_text.c_str());
  std::fprintf(stderr,
               "[podman-kill] service down %.2f s; serve reported it unreachable %.2f s after the "
               "kill; saw it back %.2f s after it answered again\n"
               "[podman-kill] production from the kill to %.1f s after it: %s\n"
               "[podman-kill] production, whole test (kill, refused deploy, restart, deploy of "
               "v2): %s\n",
               gap_s, seen_down_s, seen_back_s, down_checked_s, while_down.ToString().c_str(),
               total.ToString().c_str());
}

}  // namespace
}  // namespace bluegreen::proxy_test
