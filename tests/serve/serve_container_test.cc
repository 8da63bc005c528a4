// Integration tests of `bluegreen serve` with the container runtime: the real binary drives real
// Podman containers through Podman's Docker-compatible API service, which the test starts itself
// (scripts/podman-service.sh). Skipped when podman is not installed.
//
// Images cannot be pulled here: each version's image is imported from a root filesystem that
// holds the test backend and the shared libraries it needs, with an ENTRYPOINT that names the
// version (so a request shows which version answered).
#include <sys/stat.h>

#include <cstdio>
#include <regex>

#include <fmt/format.h>

#include "../proxy/harness.h"

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

}  // namespace
}  // namespace bluegreen::proxy_test
