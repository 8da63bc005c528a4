#include "pipeline/build_runner.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

namespace bluegreen::pipeline {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// True when no process `pid` runs any more (gone, or a zombie about to be reaped by init).
bool ProcessEnds(pid_t pid, milliseconds within) {
  auto until = Clock::now() + within;
  while (true) {
    std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
    if (stat.empty()) return true;
    size_t close = stat.rfind(')');
    if (close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z') {
      return true;
    }
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(milliseconds(20));
  }
}

class BuildRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bg-build-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    workdir_ = root_ / "src";
    fs::create_directory(workdir_);
    log_ = root_ / "build.log";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  BuildRequest Request(std::vector<std::string> commands) const {
    BuildRequest req;
    req.workdir = workdir_.string();
    req.commands = std::move(commands);
    req.log_path = log_.string();
    req.timeout = milliseconds(20000);
    return req;
  }

  fs::path root_;
  fs::path workdir_;
  fs::path log_;
};

TEST_F(BuildRunnerTest, CommandsRunInOrderAndTheLogShowsEach) {
  BuildResult result;
  Status st = RunBuild(Request({"echo one", "echo two >&2; pwd"}), &result);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(result.failed_command, -1);
  EXPECT_EQ(result.exit_code, 0);
  std::regex expected(
      "\\[bluegreen\\] \\$ echo one\n"
      "one\n"
      "\\[bluegreen\\] exit status 0 \\([0-9]+\\.[0-9]{2} s\\)\n"
      "\\[bluegreen\\] \\$ echo two >&2; pwd\n"
      "two\n" +
      workdir_.string() +
      "\n"
      "\\[bluegreen\\] exit status 0 \\([0-9]+\\.[0-9]{2} s\\)\n");
  std::string log = ReadFile(log_);
  EXPECT_TRUE(std::regex_match(log, expected)) << log;
}

TEST_F(BuildRunnerTest, TheLogIsAppendedTo) {
  WriteFile(log_, "before\n");
  ASSERT_TRUE(RunBuild(Request({"echo after"}), nullptr).ok());
  EXPECT_EQ(ReadFile(log_).rfind("before\n[bluegreen] $ echo after\nafter\n", 0), 0u);
}

TEST_F(BuildRunnerTest, EnvironmentReachesTheCommands) {
  ::setenv("BG_TEST_SHOULD_NOT_LEAK", "leak", 1);  // NOLINT(concurrency-mt-unsafe)
  BuildRequest req =
      Request({"echo \"$BLUEGREEN_COMMIT $CODEBUILD_SRC_DIR $HOME $LANG "
               "${BG_TEST_SHOULD_NOT_LEAK:-clean} $EXTRA\" > env.txt",
               "command -v sh > path.txt"});
  req.env = {{"BLUEGREEN_COMMIT", "abc123"},
             {"CODEBUILD_SRC_DIR", workdir_.string()},
             {"EXTRA", "with space"}};
  Status st = RunBuild(req, nullptr);
  ::unsetenv("BG_TEST_SHOULD_NOT_LEAK");  // NOLINT(concurrency-mt-unsafe)
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(workdir_ / "env.txt"),
            "abc123 " + workdir_.string() + " " + root_.string() + " C.UTF-8 clean with space\n");
  EXPECT_FALSE(ReadFile(workdir_ / "path.txt").empty());
}

TEST_F(BuildRunnerTest, TheCallersEnvOverridesTheDefaults) {
  BuildRequest req = Request({"echo \"$HOME $LANG\" > env.txt"});
  req.env = {{"HOME", "/nowhere"}, {"LANG", "en_US.UTF-8"}};
  ASSERT_TRUE(RunBuild(req, nullptr).ok());
  EXPECT_EQ(ReadFile(workdir_ / "env.txt"), "/nowhere en_US.UTF-8\n");
}

TEST_F(BuildRunnerTest, AFailingCommandStopsTheBuild) {
  BuildResult result;
  Status st = RunBuild(Request({"true", "echo failing; exit 3", "touch third-ran"}), &result);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(st.message(), "command 2 (`echo failing; exit 3`) exited with status 3");
  EXPECT_EQ(result.failed_command, 1);
  EXPECT_EQ(result.exit_code, 3);
  EXPECT_FALSE(fs::exists(workdir_ / "third-ran"));
  std::string log = ReadFile(log_);
  EXPECT_NE(log.find("failing\n[bluegreen] exit status 3 ("), std::string::npos) << log;
  EXPECT_EQ(log.find("touch third-ran"), std::string::npos) << log;
}

TEST_F(BuildRunnerTest, ShellRunsWithErrexit) {
  BuildResult result;
  Status st = RunBuild(Request({"false; touch after-false"}), &result);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_FALSE(fs::exists(workdir_ / "after-false"));
}

TEST_F(BuildRunnerTest, ATimeoutKillsTheWholeProcessGroup) {
  BuildRequest req = Request({"echo $$ > shell.pid; sleep 30 & echo $! > child.pid; wait"});
  req.timeout = milliseconds(500);
  BuildResult result;
  auto start = Clock::now();
  Status st = RunBuild(req, &result);
  auto took = Clock::now() - start;
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(st.message().find("command 1 (`echo $$ > shell.pid"), std::string::npos)
      << st.message();
  EXPECT_EQ(result.failed_command, 0);
  EXPECT_EQ(result.exit_code, 128 + SIGTERM);
  EXPECT_LT(took, std::chrono::seconds(6));
  pid_t child = std::stoi(ReadFile(workdir_ / "child.pid"));
  EXPECT_TRUE(ProcessEnds(child, milliseconds(2000)));
  std::string log = ReadFile(log_);
  EXPECT_NE(log.find("[bluegreen] build timed out after 0.50 s; stopping command 1"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("[bluegreen] exit status 143 ("), std::string::npos) << log;
}

TEST_F(BuildRunnerTest, ACommandThatIgnoresSigtermIsKilledAfterTheGrace) {
  // Ignored signals stay ignored across exec: neither the shell nor sleep dies of SIGTERM.
  BuildRequest req = Request({"trap '' TERM; sleep 30 & echo $! > child.pid; wait"});
  req.timeout = milliseconds(200);
  BuildResult result;
  auto start = Clock::now();
  Status st = RunBuild(req, &result);
  auto took = Clock::now() - start;
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded);
  EXPECT_GE(took, std::chrono::milliseconds(5000));
  EXPECT_LT(took, std::chrono::milliseconds(6500));
  EXPECT_EQ(result.exit_code, 128 + SIGKILL);
  EXPECT_TRUE(ProcessEnds(std::stoi(ReadFile(workdir_ / "child.pid")), milliseconds(2000)));
}

TEST_F(BuildRunnerTest, TheTimeoutCoversTheWholeBuild) {
  BuildRequest req = Request({"sleep 0.3", "sleep 0.3", "sleep 30"});
  req.timeout = milliseconds(900);
  BuildResult result;
  Status st = RunBuild(req, &result);
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(result.failed_command, 2);
  EXPECT_NE(st.message().find("command 3 (`sleep 30`)"), std::string::npos) << st.message();
}

TEST_F(BuildRunnerTest, CancelStopsTheBuild) {
  std::atomic<bool> cancel{false};
  BuildRequest req = Request({"sleep 30", "touch second-ran"});
  req.cancel = &cancel;
  std::thread canceller([&] {
    std::this_thread::sleep_for(milliseconds(300));
    cancel = true;
  });
  BuildResult result;
  auto start = Clock::now();
  Status st = RunBuild(req, &result);
  auto took = Clock::now() - start;
  canceller.join();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(st.message(), "cancelled");
  EXPECT_EQ(result.failed_command, 0);
  EXPECT_LT(took, std::chrono::seconds(3));
  EXPECT_FALSE(fs::exists(workdir_ / "second-ran"));
  EXPECT_NE(ReadFile(log_).find("[bluegreen] cancelled; stopping command 1 (`sleep 30`)"),
            std::string::npos);
}

TEST_F(BuildRunnerTest, ABuildCancelledBeforeItStartsRunsNothing) {
  std::atomic<bool> cancel{true};
  BuildRequest req = Request({"touch ran"});
  req.cancel = &cancel;
  Status st = RunBuild(req, nullptr);
  EXPECT_EQ(st, FailedPrecondition("cancelled"));
  EXPECT_FALSE(fs::exists(workdir_ / "ran"));
}

TEST_F(BuildRunnerTest, WhatACommandLeavesRunningIsKilledWhenItEnds) {
  BuildResult result;
  Status st = RunBuild(Request({"sleep 30 > /dev/null 2>&1 & echo $! > child.pid"}), &result);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(ProcessEnds(std::stoi(ReadFile(workdir_ / "child.pid")), milliseconds(2000)));
}

TEST_F(BuildRunnerTest, NoDescriptorLeaksIntoCommands) {
  int leaky = ::open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC
  ASSERT_GE(leaky, 3);
  Status st = RunBuild(Request({"ls /proc/self/fd > fds.txt"}), nullptr);
  ::close(leaky);
  ASSERT_TRUE(st.ok()) << st.ToString();
  std::set<std::string> fds;
  std::istringstream in(ReadFile(workdir_ / "fds.txt"));
  for (std::string line; std::getline(in, line);) fds.insert(line);
  // 0-2, plus the one ls opened to read the directory, plus the redirection (fds.txt is 1).
  EXPECT_EQ(fds, (std::set<std::string>{"0", "1", "2", "3"}));
  // stdin is /dev/null.
  ASSERT_TRUE(RunBuild(Request({"readlink /proc/self/fd/0 > stdin.txt"}), nullptr).ok());
  EXPECT_EQ(ReadFile(workdir_ / "stdin.txt"), "/dev/null\n");
}

TEST_F(BuildRunnerTest, EachCommandHasItsOwnSession) {
  ASSERT_TRUE(RunBuild(Request({"ps -o sid= -p $$ > sid1.txt; echo $$ > pid1.txt",
                                "ps -o sid= -p $$ > sid2.txt; echo $$ > pid2.txt"}),
                       nullptr)
                  .ok());
  auto num = [&](const char* f) { return std::stol(ReadFile(workdir_ / f)); };
  EXPECT_EQ(num("sid1.txt"), num("pid1.txt"));
  EXPECT_EQ(num("sid2.txt"), num("pid2.txt"));
  EXPECT_NE(num("sid1.txt"), ::getsid(0));
}

TEST_F(BuildRunnerTest, BadRequestsAreRejected) {
  BuildRequest req = Request({"true"});
  req.workdir = "relative";
  EXPECT_EQ(RunBuild(req, nullptr).code(), StatusCode::kInvalidArgument);
  req = Request({"true"});
  req.workdir = (root_ / "missing").string();
  EXPECT_EQ(RunBuild(req, nullptr).code(), StatusCode::kInvalidArgument);
  req = Request({"true"});
  req.env = {{"BAD=NAME", "x"}};
  EXPECT_EQ(RunBuild(req, nullptr).code(), StatusCode::kInvalidArgument);
  req = Request({"true"});
  req.timeout = milliseconds(0);
  EXPECT_EQ(RunBuild(req, nullptr).code(), StatusCode::kInvalidArgument);
  req = Request({"true"});
  req.log_path = (root_ / "no" / "such" / "dir" / "log").string();
  EXPECT_EQ(RunBuild(req, nullptr).code(), StatusCode::kInternal);
  EXPECT_TRUE(RunBuild(Request({}), nullptr).ok());
}

// --- CopyArtifacts ---

class CopyArtifactsTest : public BuildRunnerTest {
 protected:
  void SetUp() override {
    BuildRunnerTest::SetUp();
    WriteFile(workdir_ / "server", "#!/bin/sh\n");
    fs::permissions(workdir_ / "server", static_cast<fs::perms>(0755));
    WriteFile(workdir_ / "out/a.txt", "a");
    WriteFile(workdir_ / "out/sub/b.txt", "b");
    WriteFile(workdir_ / "src/main.c", "int main;");
    WriteFile(workdir_ / ".git/HEAD", "ref: refs/heads/main\n");
    WriteFile(workdir_ / ".gitignore", "out/\n");
    WriteFile(root_ / "outside.txt", "secret");
    dest_ = root_ / "artifacts" / "v1";
  }

  fs::path dest_;
};

TEST_F(CopyArtifactsTest, CopiesListedFilesAndDirectories) {
  Status st = CopyArtifacts(workdir_.string(), {"out/", "server"}, dest_.string());
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(dest_ / "out/a.txt"), "a");
  EXPECT_EQ(ReadFile(dest_ / "out/sub/b.txt"), "b");
  EXPECT_EQ(ReadFile(dest_ / "server"), "#!/bin/sh\n");
  EXPECT_EQ(fs::status(dest_ / "server").permissions() & fs::perms::all,
            static_cast<fs::perms>(0755));
  EXPECT_FALSE(fs::exists(dest_ / "src"));
  EXPECT_FALSE(fs::exists(dest_.string() + ".tmp"));
}

TEST_F(CopyArtifactsTest, KeepsNestedRelativePaths) {
  Status st = CopyArtifacts(workdir_.string(), {"out/sub/b.txt", "./src"}, dest_.string());
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(dest_ / "out/sub/b.txt"), "b");
  EXPECT_FALSE(fs::exists(dest_ / "out/a.txt"));
  EXPECT_EQ(ReadFile(dest_ / "src/main.c"), "int main;");
}

TEST_F(CopyArtifactsTest, AnEmptyListCopiesEverythingButGit) {
  Status st = CopyArtifacts(workdir_.string(), {}, dest_.string());
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFile(dest_ / "out/sub/b.txt"), "b");
  EXPECT_EQ(ReadFile(dest_ / "server"), "#!/bin/sh\n");
  EXPECT_EQ(ReadFile(dest_ / "src/main.c"), "int main;");
  EXPECT_EQ(ReadFile(dest_ / ".gitignore"), "out/\n");
  EXPECT_FALSE(fs::exists(dest_ / ".git"));
}

TEST_F(CopyArtifactsTest, RejectsPathsOutsideTheRoot) {
  for (const std::string bad : {"../outside.txt", "out/../../outside.txt", "/etc/passwd", ""}) {
    Status st = CopyArtifacts(workdir_.string(), {bad}, dest_.string());
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_FALSE(fs::exists(dest_)) << bad;
  }
}

TEST_F(CopyArtifactsTest, SymlinksThatEscapeTheRootAreNotFollowed) {
  fs::create_symlink(root_ / "outside.txt", workdir_ / "out/escape.txt");
  fs::create_symlink(root_, workdir_ / "out/escape-dir");
  fs::create_symlink("a.txt", workdir_ / "out/inside.txt");
  fs::create_symlink("missing", workdir_ / "out/dangling");
  fs::create_symlink(root_, workdir_ / "up");
  Status st = CopyArtifacts(workdir_.string(), {"out"}, dest_.string());
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_FALSE(fs::exists(fs::symlink_status(dest_ / "out/escape.txt")));
  EXPECT_FALSE(fs::exists(fs::symlink_status(dest_ / "out/escape-dir")));
  EXPECT_FALSE(fs::exists(fs::symlink_status(dest_ / "out/dangling")));
  EXPECT_EQ(ReadFile(dest_ / "out/inside.txt"), "a");
  EXPECT_FALSE(fs::is_symlink(dest_ / "out/inside.txt"));

  // Listed by name, a link that leads outside is an error, also through a parent directory.
  fs::path dest2 = root_ / "artifacts" / "v2";
  EXPECT_EQ(CopyArtifacts(workdir_.string(), {"out/escape.txt"}, dest2.string()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(CopyArtifacts(workdir_.string(), {"up/outside.txt"}, dest2.string()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dest2));
}

TEST_F(CopyArtifactsTest, IsAtomic) {
  Status st = CopyArtifacts(workdir_.string(), {"out", "missing"}, dest_.string());
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("missing"), std::string::npos);
  EXPECT_FALSE(fs::exists(dest_));
  EXPECT_FALSE(fs::exists(dest_.string() + ".tmp"));

  // A .tmp left by a crash is replaced.
  WriteFile(dest_.string() + ".tmp/stale", "x");
  ASSERT_TRUE(CopyArtifacts(workdir_.string(), {"out"}, dest_.string()).ok());
  EXPECT_FALSE(fs::exists(dest_ / "stale"));
  EXPECT_TRUE(fs::exists(dest_ / "out/a.txt"));
}

TEST_F(CopyArtifactsTest, TheDestinationMustNotExist) {
  fs::create_directories(dest_);
  EXPECT_EQ(CopyArtifacts(workdir_.string(), {"out"}, dest_.string()).code(),
            StatusCode::kAlreadyExists);
  EXPECT_TRUE(fs::is_empty(dest_));
}

TEST_F(CopyArtifactsTest, TheDestinationMustNotBeInsideTheRoot) {
  EXPECT_EQ(CopyArtifacts(workdir_.string(), {}, (workdir_ / "dist").string()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(workdir_ / "dist"));
}

TEST_F(CopyArtifactsTest, AMissingRootIsNotFound) {
  EXPECT_EQ(CopyArtifacts((root_ / "nope").string(), {}, dest_.string()).code(),
            StatusCode::kNotFound);
}

}  // namespace
}  // namespace bluegreen::pipeline
