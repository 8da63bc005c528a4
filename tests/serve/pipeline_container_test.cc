// Integration test of the pipeline with a container stack and `build.containerfile` (issue 4): the
// real `bluegreen serve` builds each commit's image through Podman's Docker-compatible API service,
// which the test starts itself (scripts/podman-service.sh), deploys it to the test side and, once
// approved, swaps it into production. Skipped when podman is not installed.
//
// No image can be pulled here: the application's image is `FROM scratch` with a static
// test_backend, which the stack's build.commands compile in the checkout (g++ -static, from
// tests/support/test_backend.cc committed to the repository), so every commit goes through the
// whole Build stage: the commands, then the image build. The Containerfile's ENTRYPOINT names the
// colour of the commit, so a request shows which image answered.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "pipeline_harness.h"

namespace bluegreen::serve_it {
namespace {

constexpr Duration kBuildTimeout = 180s;  // an execution with a compile and an image build

class PipelineContainerTest : public PipelineHarness {
 protected:
  // Keep one build: step 5 of the test sees an image that nothing uses removed.
  PipelineContainerTest() { serve_args_ = {"--keep-versions", "1"}; }

  Duration WatchdogTimeout() const override { return 400s; }

  void SetUp() override {
    if (Sh("command -v podman").first != 0) {
      GTEST_SKIP() << "podman is not installed (apt-get install -y podman runc)";
    }
    char dir[] = "/tmp/bg-pipeline-podman-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    podman_dir_ = dir;
    auto [rc, out] =
        Sh(std::string(BLUEGREEN_SOURCE_DIR) + "/scripts/podman-service.sh start " + podman_dir_);
    ASSERT_EQ(rc, 0) << out;
    const std::string sock = Chomp(out.substr(out.rfind('\n', out.size() - 2) + 1));
    podman_ = "env CONTAINERS_CONF=" + podman_dir_ + "/containers.conf podman";
    ::setenv("DOCKER_HOST", ("unix://" + sock).c_str(), 1);  // serve inherits it
    stack_ = "ctr-" + std::to_string(::getpid());
    PipelineHarness::SetUp();
    if (HasFatalFailure()) return;
    BG_ASSERT_OK_AND_ASSIGN(production_port_, PickFreePort());
    BG_ASSERT_OK_AND_ASSIGN(test_port_, PickFreePort());
    auto source = ReadFile(std::string(BLUEGREEN_SOURCE_DIR) + "/tests/support/test_backend.cc");
    ASSERT_TRUE(source.ok()) << source.status().ToString();
    backend_source_ = *source;
  }

  void TearDown() override {
    PipelineHarness::TearDown();  // `down` of the stack: its containers go
    if (podman_dir_.empty()) return;
    Sh(podman_ + " ps -aq --filter name=-" + stack_ + "-code | xargs -r " + podman_ + " rm -f");
    Sh(podman_ + " images -q --filter reference=localhost/bluegreen/" + stack_ + " | xargs -r " +
       podman_ + " rmi -f");
    Sh(std::string(BLUEGREEN_SOURCE_DIR) + "/scripts/podman-service.sh stop " + podman_dir_);
    std::error_code ec;
    std::filesystem::remove_all(podman_dir_, ec);
    ::unsetenv("DOCKER_HOST");
  }

  // `sh -c COMMAND`: its exit status and output (stdout, then stderr).
  std::pair<int, std::string> Sh(const std::string& command) {
    auto p = Process::Start("/bin/sh", {"-c", command});
    if (!p.ok()) return {-1, p.status().ToString()};
    std::optional<int> st = (*p)->WaitExit(120s);
    (*p)->WaitForOutputClosed(5s);
    const int rc = st && WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
    return {rc, (*p)->Stdout() + (*p)->Stderr()};
  }

  std::string StackYaml() const {
    return fmt::format(R"(name: {name}
source: {{repo: {repo}, branch: main, poll_interval: 1s}}
build:
  commands: ["g++ -std=c++20 -O1 -static -pthread -o app test_backend.cc"]
  containerfile: docker/Containerfile
  timeout: 3m
service:
  runtime: podman
  port: 8080
  command: ["--listen", "0.0.0.0:${{PORT}}"]
  desired_count: 1
  health_check: {{path: /health, interval: 1s, timeout: 1s}}
load_balancer:
  production: {{port: {production}}}
  test: {{port: {test}, allow: [127.0.0.0/8]}}
  deregistration_delay: 1s
)",
                       fmt::arg("name", stack_), fmt::arg("repo", Q(bare_)),
                       fmt::arg("production", production_port_), fmt::arg("test", test_port_));
  }

  // The repository's files for an application answering `colour`.
  std::map<std::string, std::string> App(const std::string& colour) const {
    return {{"test_backend.cc", backend_source_},
            {"docker/Containerfile",
             "FROM scratch\nCOPY app /app\nENTRYPOINT [\"/app\", "
             "\"--name\", \"" +
                 colour + "\"]\n"}};
  }

  std::string ImageOf(const std::string& version) const {
    return "localhost/bluegreen/" + stack_ + ":" + version;
  }
  bool ImageExists(const std::string& image) {
    return Sh(podman_ + " image exists " + image).first == 0;
  }

  Result<std::string> Log(int64_t id) {
    auto log =
        Api("GET", "/api/v1/stacks/" + stack_ + "/executions/" + std::to_string(id) + "/log");
    if (!log.ok()) return log.status();
    if (log->status != 200) return Internal("GET log: " + std::to_string(log->status));
    return log->body;
  }

  // The registered versions of the stack, by name.
  // Commits and pushes `files`; returns the execution of that commit once it waits for approval
  // (its image built and deployed on the test side).
  Result<Json> PushAndWaitForApproval(const std::map<std::string, std::string>& files,
                                      const std::string& message) {
    Result<std::string> sha = CommitAndPush(files, message);
    if (!sha.ok()) return sha.status();
    Result<Json> e = WaitExecutionOf(stack_, *sha);
    if (!e.ok()) return e.status();
    return WaitExecution(
        stack_, e->value("id", int64_t{0}),
        [](const Json& x) { return x.value("status", "") == "WaitingForApproval"; },
        kBuildTimeout, "to wait for approval");
  }

  Result<Json> Version(const std::string& version) {
    auto r = Api("GET", "/api/v1/stacks/" + stack_ + "/versions");
    if (!r.ok()) return r.status();
    return FindNamed(r->json.value("versions", Json::array()), "version", version);
  }

  std::string podman_dir_;
  std::string podman_;  // the podman command with the service's configuration (also for xargs)
  std::string stack_;   // unique per test process: containers and images are named after it
  uint16_t production_port_ = 0;
  uint16_t test_port_ = 0;
  std::string backend_source_;
};

TEST_F(PipelineContainerTest, BuildsDeploysAndReleasesImages) {
  // 1. The first commit: compiled, built into an image, on both sides.
  BG_ASSERT_OK(InitRepo());
  BG_ASSERT_OK_AND_ASSIGN(std::string sha1, CommitAndPush(App("blue"), "First: blue"));
  BG_ASSERT_OK(PutStackYaml(stack_, StackYaml()));
  BG_ASSERT_OK_AND_ASSIGN(Json first, WaitExecutionOf(stack_, sha1));
  BG_ASSERT_OK_AND_ASSIGN(Json done, WaitExecutionStatus(stack_, first.value("id", int64_t{0}),
                                                         "Succeeded", kBuildTimeout));
  const std::string v1 = "1-" + sha1.substr(0, 7);
  EXPECT_EQ(done.value("version", ""), v1) << done.dump(2);
  BG_ASSERT_OK_AND_ASSIGN(Json version, Version(v1));
  EXPECT_EQ(version.value("image", ""), ImageOf(v1)) << version.dump(2);
  EXPECT_EQ(version.value("artifact_dir", ""), "") << version.dump(2);
  EXPECT_TRUE(ImageExists(ImageOf(v1)));
  BG_ASSERT_OK_AND_ASSIGN(std::string log, Log(1));
  EXPECT_NE(log.find("[bluegreen] $ g++ "), std::string::npos) << log;
  EXPECT_NE(log.find("[bluegreen] $ build image " + ImageOf(v1) + " from docker/Containerfile"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("COPY app /app"), std::string::npos) << "the engine's output: " << log;
  EXPECT_NE(log.find("[bluegreen] built image " + ImageOf(v1)), std::string::npos) << log;
  BG_ASSERT_OK_AND_ASSIGN(Json before, WaitSettled(stack_));
  std::string got;
  EXPECT_TRUE(AllAnswer(production_port_, "blue\n", 5, &got)) << "production: " << got;
  EXPECT_TRUE(AllAnswer(test_port_, "blue\n", 5, &got)) << "test: " << got;

  // 2. A Containerfile that fails: the execution fails with the engine's message; nothing is
  // tagged, registered or deployed.
  BG_ASSERT_OK_AND_ASSIGN(
      std::string sha2,
      CommitAndPush({{"docker/Containerfile", "FROM scratch\nCOPY no-such-file /app\n"}},
                    "Break the image"));
  BG_ASSERT_OK_AND_ASSIGN(Json second, WaitExecutionOf(stack_, sha2));
  const int64_t id2 = second.value("id", int64_t{0});
  BG_ASSERT_OK_AND_ASSIGN(Json failed, WaitExecutionStatus(stack_, id2, "Failed", kBuildTimeout));
  const std::string v2 = failed.value("version", "");
  EXPECT_EQ(failed.value("stage", ""), "Build") << failed.dump(2);
  EXPECT_EQ(StageStatus(failed, "Deploy"), "") << failed.dump(2);
  const std::string reason = failed.value("reason", "");
  EXPECT_NE(reason.find("build: podman: build of image " + ImageOf(v2) + " failed: "),
            std::string::npos)
      << reason;
  EXPECT_NE(reason.find("no-such-file"), std::string::npos)
      << "not the engine's message: " << reason;
  BG_ASSERT_OK_AND_ASSIGN(log, Log(id2));
  EXPECT_NE(log.find("[bluegreen] the image build failed"), std::string::npos) << log;
  EXPECT_NE(log.find("no-such-file"), std::string::npos) << log;
  EXPECT_FALSE(ImageExists(ImageOf(v2)));
  BG_ASSERT_OK_AND_ASSIGN(version, Version(v2));
  EXPECT_TRUE(version.is_null()) << "the failed build registered a version: " << version.dump(2);
  BG_ASSERT_OK_AND_ASSIGN(Json st, WaitSettled(stack_));
  EXPECT_EQ(TaskIdentities(st), TaskIdentities(before)) << "tasks changed after a failed build";
  EXPECT_TRUE(AllAnswer(production_port_, "blue\n", 5, &got)) << "production: " << got;
  EXPECT_TRUE(AllAnswer(test_port_, "blue\n", 5, &got)) << "test: " << got;

  // 3. The next image goes to the test side, waits for approval, and is swapped in.
  BG_ASSERT_OK_AND_ASSIGN(Json waiting, PushAndWaitForApproval(App("green"), "Make it green"));
  const int64_t id3 = waiting.value("id", int64_t{0});
  const std::string v3 = waiting.value("version", "");
  BG_ASSERT_OK_AND_ASSIGN(st, WaitSettled(stack_));
  EXPECT_EQ(TestVersion(st), v3) << st.dump(2);
  EXPECT_EQ(LiveVersion(st), v1) << st.dump(2);
  EXPECT_TRUE(AllAnswer(test_port_, "green\n", 5, &got)) << "test: " << got;
  EXPECT_TRUE(AllAnswer(production_port_, "blue\n", 5, &got)) << "production: " << got;

  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer approved, Action(stack_, "approve", "ship the image"));
  ASSERT_EQ(approved.status, 200) << approved.body;
  BG_ASSERT_OK(WaitExecutionStatus(stack_, id3, "Succeeded").status());
  EXPECT_TRUE(AllAnswer(production_port_, "green\n", 5, &got)) << "production: " << got;
  EXPECT_TRUE(AllAnswer(test_port_, "blue\n", 5, &got))
      << "the previous production image keeps running on the test side: " << got;
  // With --keep-versions 1, v3's build removed nothing: v1, older, runs on the test side.
  EXPECT_TRUE(ImageExists(ImageOf(v1)));

  // 4. Another release: production v4, test v3; v1 runs nowhere now.
  BG_ASSERT_OK_AND_ASSIGN(Json waiting4, PushAndWaitForApproval(App("red"), "Make it red"));
  const int64_t id4 = waiting4.value("id", int64_t{0});
  const std::string v4 = waiting4.value("version", "");
  BG_ASSERT_OK_AND_ASSIGN(approved, Action(stack_, "approve"));
  ASSERT_EQ(approved.status, 200) << approved.body;
  BG_ASSERT_OK(WaitExecutionStatus(stack_, id4, "Succeeded").status());
  EXPECT_TRUE(ImageExists(ImageOf(v1))) << "removed by the build that still found it in use";

  // 5. The next build removes v1's image, and only it: v3 runs on the test side, v4 in
  // production.
  BG_ASSERT_OK(PushAndWaitForApproval(App("yellow"), "Make it yellow").status());
  EXPECT_FALSE(ImageExists(ImageOf(v1))) << "the image that nothing uses is still there";
  BG_ASSERT_OK_AND_ASSIGN(version, Version(v1));
  EXPECT_TRUE(version.is_null()) << version.dump(2);
  for (const std::string& v : {v3, v4}) EXPECT_TRUE(ImageExists(ImageOf(v))) << v;
  bool said = false;
  for (const Json& ev : Get("/api/v1/stacks/" + stack_ + "/events").value("events", Json::array())) {
    said |= ev.value("kind", "") == "version_removed" &&
            ev.value("message", "").find("image " + ImageOf(v1)) != std::string::npos;
  }
  EXPECT_TRUE(said) << "no version_removed event for " << ImageOf(v1);
  EXPECT_TRUE(AllAnswer(production_port_, "red\n", 5, &got)) << "production: " << got;
}

}  // namespace
}  // namespace bluegreen::serve_it
