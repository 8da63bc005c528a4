// Tests of ProcessRuntime with real processes (test_backend, /bin/sh, sleep), no mocks. Every task
// a test starts is stopped by a TaskGuard, so a failed assertion leaves nothing running.
#include "runtime/process_runtime.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/http_client.h"

#ifndef TEST_BACKEND_BINARY
#define TEST_BACKEND_BINARY "test_backend"
#endif

namespace bluegreen::runtime {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "bg-process-runtime-XXXXXX").string();
    char* made = ::mkdtemp(tmpl.data());
    EXPECT_NE(made, nullptr) << "mkdtemp failed";
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Stops a task when it goes out of scope (a no-op for a task already stopped).
class TaskGuard {
 public:
  TaskGuard(Runtime& runtime, TaskHandle handle) : runtime_(runtime), handle_(std::move(handle)) {}
  ~TaskGuard() { (void)runtime_.Stop(handle_, milliseconds(200)); }
  TaskGuard(const TaskGuard&) = delete;
  TaskGuard& operator=(const TaskGuard&) = delete;

 private:
  Runtime& runtime_;
  TaskHandle handle_;
};

bool WaitFor(const std::function<bool()>& condition, milliseconds timeout = milliseconds(5000)) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

pid_t PidOf(const TaskHandle& handle) {
  return std::stoi(handle.id.substr(0, handle.id.find(':')));
}

// The state letter of /proc/PID/stat, or nullopt when there is no such process.
std::optional<char> ProcState(pid_t pid) {
  std::string stat = ReadFile(fs::path("/proc") / std::to_string(pid) / "stat");
  size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return std::nullopt;
  return stat[close + 2];
}

bool IsAlive(pid_t pid) {
  auto state = ProcState(pid);
  return state && *state != 'Z' && *state != 'X';
}

// True when nothing listens on 127.0.0.1:port (SO_REUSEADDR: TIME_WAIT leftovers do not count).
bool PortIsFree(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

class ProcessRuntimeTest : public ::testing::Test {
 protected:
  TaskSpec Spec(const std::string& name, std::vector<std::string> command) {
    TaskSpec spec;
    spec.name = name;
    spec.command = std::move(command);
    spec.workdir = dir_.path().string();
    spec.log_path = (dir_.path() / "logs" / (name + ".log")).string();
    return spec;
  }

  TaskStatus InspectOk(const TaskHandle& handle) {
    auto status = runtime_.Inspect(handle);
    EXPECT_TRUE(status.ok()) << status.status().ToString();
    return status.ok() ? *status : TaskStatus{};
  }

  TempDir dir_;
  ProcessRuntime runtime_;
};

TEST_F(ProcessRuntimeTest, Name) { EXPECT_EQ(runtime_.name(), "process"); }

TEST_F(ProcessRuntimeTest, PickFreePortReturnsABindablePort) {
  auto port = PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status().ToString();
  EXPECT_NE(*port, 0);
  EXPECT_TRUE(PortIsFree(*port));
}

TEST_F(ProcessRuntimeTest, RunsBackendThatServesHttpUntilStopped) {
  auto port = PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status().ToString();
  std::string address = "127.0.0.1:" + std::to_string(*port);
  TaskSpec spec = Spec("demo-web-v1-1", {TEST_BACKEND_BINARY, "--listen", address, "--name", "v1"});
  spec.host_port = *port;

  auto handle = runtime_.Start(spec);
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  TaskGuard guard(runtime_, *handle);
  EXPECT_EQ(handle->id.find(std::to_string(PidOf(*handle)) + ":"), 0u) << handle->id;

  std::string body;
  ASSERT_TRUE(WaitFor([&] {
    auto response = HttpCall(address, HttpClientRequest{}, milliseconds(500));
    if (!response.ok() || response->status != 200) return false;
    body = response->body;
    return true;
  })) << "backend never answered on "
      << address;
  EXPECT_EQ(body, "v1\n");
  EXPECT_EQ(InspectOk(*handle).state, TaskState::kRunning);
  EXPECT_NE(ReadFile(spec.log_path).find("listening " + address), std::string::npos)
      << ReadFile(spec.log_path);
  // The log keeps owner read/write and group read only.
  struct stat st {};
  ASSERT_EQ(::stat(spec.log_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777 & ~0640, 0u);

  Status stopped = runtime_.Stop(*handle, milliseconds(2000));
  ASSERT_TRUE(stopped.ok()) << stopped.ToString();
  TaskState after = InspectOk(*handle).state;
  EXPECT_TRUE(after == TaskState::kExited || after == TaskState::kGone);
  EXPECT_FALSE(IsAlive(PidOf(*handle)));
  EXPECT_TRUE(PortIsFree(*port));
  // Stopping again is fine.
  EXPECT_TRUE(runtime_.Stop(*handle, milliseconds(100)).ok());
}

TEST_F(ProcessRuntimeTest, PassesEnvironmentAndRunsInWorkdir) {
  fs::create_directories(dir_.path() / "app");
  ASSERT_EQ(::setenv("BG_TEST_INHERITED", "from-serve", 1), 0);   // NOLINT(concurrency-mt-unsafe)
  ASSERT_EQ(::setenv("BG_TEST_OVERRIDDEN", "from-serve", 1), 0);  // NOLINT(concurrency-mt-unsafe)
  // "sh" without a '/': looked up in PATH.
  TaskSpec spec =
      Spec("env-check", {"sh", "-c",
                         "echo \"$PORT $GREETING $BG_TEST_INHERITED $BG_TEST_OVERRIDDEN $(pwd)\" "
                         "> out.tmp && mv out.tmp out.txt; exec sleep 30"});
  spec.workdir = (dir_.path() / "app").string();
  spec.host_port = 12345;
  spec.env = {{"GREETING", "hello"}, {"BG_TEST_OVERRIDDEN", "from-spec"}};

  auto handle = runtime_.Start(spec);
  ::unsetenv("BG_TEST_INHERITED");   // NOLINT(concurrency-mt-unsafe)
  ::unsetenv("BG_TEST_OVERRIDDEN");  // NOLINT(concurrency-mt-unsafe)
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  TaskGuard guard(runtime_, *handle);

  fs::path out = dir_.path() / "app" / "out.txt";
  ASSERT_TRUE(WaitFor([&] { return fs::exists(out); })) << ReadFile(spec.log_path);
  EXPECT_EQ(ReadFile(out), "12345 hello from-serve from-spec " +
                               fs::canonical(dir_.path() / "app").string() + "\n");
  EXPECT_EQ(InspectOk(*handle).state, TaskState::kRunning);
}

TEST_F(ProcessRuntimeTest, RelativeProgramPathIsResolvedInWorkdir) {
  fs::create_directories(dir_.path() / "app" / "bin");
  fs::path script = dir_.path() / "app" / "bin" / "run.sh";
  std::ofstream(script) << "#!/bin/sh\necho ran > ran.txt\nexec sleep 30\n";
  fs::permissions(script, fs::perms::owner_all);
  TaskSpec spec = Spec("relative", {"./bin/run.sh"});
  spec.workdir = (dir_.path() / "app").string();

  auto handle = runtime_.Start(spec);
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  TaskGuard guard(runtime_, *handle);
  EXPECT_TRUE(WaitFor([&] { return ReadFile(dir_.path() / "app" / "ran.txt") == "ran\n"; }));
}

TEST_F(ProcessRuntimeTest, ReportsExitCodeOfTaskThatEnds) {
  auto handle = runtime_.Start(Spec("exits", {"/bin/sh", "-c", "echo bye; exit 3"}));
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  TaskGuard guard(runtime_, *handle);

  ASSERT_TRUE(WaitFor([&] { return InspectOk(*handle).state == TaskState::kExited; }));
  TaskStatus status = InspectOk(*handle);
  EXPECT_EQ(status.state, TaskState::kExited);
  EXPECT_EQ(status.exit_code, 3);
  // Still known on a later call, after the process was reaped.
  EXPECT_FALSE(ProcState(PidOf(*handle)).has_value());
  status = InspectOk(*handle);
  EXPECT_EQ(status.state, TaskState::kExited);
  EXPECT_EQ(status.exit_code, 3);
  EXPECT_NE(ReadFile(dir_.path() / "logs" / "exits.log").find("bye"), std::string::npos);
  EXPECT_TRUE(runtime_.Stop(*handle, milliseconds(100)).ok());
}

TEST_F(ProcessRuntimeTest, AnotherInstanceReadoptsTask) {
  auto handle = runtime_.Start(Spec("readopt", {"sleep", "30"}));
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  TaskGuard guard(runtime_, *handle);

  ProcessRuntime next;  // as after a restart of serve: the task is not its child
  auto status = next.Inspect(*handle);
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(status->state, TaskState::kRunning);

  Status stopped = next.Stop(*handle, milliseconds(2000));
  ASSERT_TRUE(stopped.ok()) << stopped.ToString();
  EXPECT_FALSE(IsAlive(PidOf(*handle)));
  status = next.Inspect(*handle);
  ASSERT_TRUE(status.ok());
  // A zombie of this test process (the first instance has not reaped it yet) or gone.
  EXPECT_TRUE(status->state == TaskState::kExited || status->state == TaskState::kGone);
  // The parent instance reaps it and sees the SIGTERM.
  status = runtime_.Inspect(*handle);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->state, TaskState::kExited);
  EXPECT_EQ(status->exit_code, 128 + SIGTERM);
}

TEST_F(ProcessRuntimeTest, HandleWithOtherStartTimeIsGoneAndNeverSignalled) {
  auto handle = runtime_.Start(Spec("reuse", {"sleep", "30"}));
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  TaskGuard guard(runtime_, *handle);
  pid_t pid = PidOf(*handle);
  uint64_t start = std::stoull(handle->id.substr(handle->id.find(':') + 1));

  // The same PID, as if a stored handle outlived its process and the PID was reused.
  for (const TaskHandle& stale :
       {TaskHandle{std::to_string(pid) + ":" + std::to_string(start + 1)},
        TaskHandle{std::to_string(pid) + ":" + std::to_string(start - 1)}}) {
    ProcessRuntime other;
    for (Runtime* rt : {static_cast<Runtime*>(&runtime_), static_cast<Runtime*>(&other)}) {
      auto status = rt->Inspect(stale);
      ASSERT_TRUE(status.ok()) << status.status().ToString();
      EXPECT_EQ(status->state, TaskState::kGone) << stale.id;
      EXPECT_TRUE(rt->Stop(stale, milliseconds(0)).ok());
    }
  }
  EXPECT_TRUE(IsAlive(pid));
  EXPECT_EQ(InspectOk(*handle).state, TaskState::kRunning);
}

TEST_F(ProcessRuntimeTest, TaskHasItsOwnSessionAndStopEndsTheWholeGroup) {
  auto handle =
      runtime_.Start(Spec("group", {"/bin/sh", "-c",
                                    "sleep 100 & echo $! > child.tmp; mv child.tmp child.pid; "
                                    "wait"}));
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  TaskGuard guard(runtime_, *handle);
  pid_t pid = PidOf(*handle);
  EXPECT_EQ(::getsid(pid), pid);
  EXPECT_EQ(::getpgid(pid), pid);
  EXPECT_NE(::getsid(pid), ::getsid(0));

  fs::path child_file = dir_.path() / "child.pid";
  ASSERT_TRUE(WaitFor([&] { return fs::exists(child_file); }));
  pid_t child = std::stoi(ReadFile(child_file));
  EXPECT_EQ(::getpgid(child), pid);
  EXPECT_TRUE(IsAlive(child));

  Status stopped = runtime_.Stop(*handle, milliseconds(2000));
  ASSERT_TRUE(stopped.ok()) << stopped.ToString();
  EXPECT_FALSE(IsAlive(pid));
  EXPECT_FALSE(IsAlive(child));
}

TEST_F(ProcessRuntimeTest, StopCleansUpWhatAnExitedTaskLeftInItsGroup) {
  auto handle = runtime_.Start(Spec(
      "orphans", {"/bin/sh", "-c", "sleep 100 & echo $! > child.tmp; mv child.tmp child.pid"}));
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  TaskGuard guard(runtime_, *handle);
  fs::path child_file = dir_.path() / "child.pid";
  ASSERT_TRUE(WaitFor([&] { return fs::exists(child_file); }));
  pid_t child = std::stoi(ReadFile(child_file));
  ASSERT_TRUE(WaitFor([&] { return InspectOk(*handle).state == TaskState::kExited; }));
  EXPECT_EQ(InspectOk(*handle).exit_code, 0);
  EXPECT_TRUE(IsAlive(child));

  Status stopped = runtime_.Stop(*handle, milliseconds(2000));
  ASSERT_TRUE(stopped.ok()) << stopped.ToString();
  EXPECT_FALSE(IsAlive(child));
}

TEST_F(ProcessRuntimeTest, StopEscalatesToSigkillAfterGrace) {
  // The shell and its child ignore SIGTERM.
  auto handle = runtime_.Start(Spec("stubborn", {"/bin/sh", "-c",
                                                 "trap '' TERM; sleep 100 & echo ready > ready.txt;"
                                                 " wait"}));
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  TaskGuard guard(runtime_, *handle);
  ASSERT_TRUE(WaitFor([&] { return fs::exists(dir_.path() / "ready.txt"); }));

  auto start = Clock::now();
  Status stopped = runtime_.Stop(*handle, milliseconds(300));
  auto elapsed = Clock::now() - start;
  ASSERT_TRUE(stopped.ok()) << stopped.ToString();
  EXPECT_GE(elapsed, milliseconds(300));
  EXPECT_LT(elapsed, milliseconds(2500));
  EXPECT_FALSE(IsAlive(PidOf(*handle)));
}

TEST_F(ProcessRuntimeTest, SignalStateOfServeIsNotInherited) {
  // serve may block SIGTERM in its threads and ignore signals; the task must still die on SIGTERM.
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  sigset_t old_mask;
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &term, &old_mask), 0);
  struct sigaction ignore {};
  struct sigaction old_action {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGTERM, &ignore, &old_action), 0);
  auto handle = runtime_.Start(Spec("signals", {"sleep", "30"}));
  ::sigaction(SIGTERM, &old_action, nullptr);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  TaskGuard guard(runtime_, *handle);

  auto start = Clock::now();
  Status stopped = runtime_.Stop(*handle, milliseconds(5000));
  ASSERT_TRUE(stopped.ok()) << stopped.ToString();
  EXPECT_LT(Clock::now() - start, milliseconds(2000)) << "SIGTERM did not end the task";
  auto status = runtime_.Inspect(*handle);
  ASSERT_TRUE(status.ok());
  EXPECT_NE(status->state, TaskState::kRunning);
}

TEST_F(ProcessRuntimeTest, NoDescriptorOfServeLeaksIntoTask) {
  // A listening socket and a file opened without O_CLOEXEC, at a high and a low number.
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 16), 0);
  ASSERT_EQ(::dup2(listener, 57), 57);
  int file = ::open("/dev/zero", O_RDONLY);
  ASSERT_GE(file, 0);

  auto handle = runtime_.Start(Spec("fds", {"/bin/sh", "-c",
                                            "ls -l /proc/self/fd > fds.tmp; mv fds.tmp "
                                            "fds.txt; exec sleep 30"}));
  ::close(listener);
  ::close(57);
  ::close(file);
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  TaskGuard guard(runtime_, *handle);

  fs::path listing = dir_.path() / "fds.txt";
  ASSERT_TRUE(WaitFor([&] { return fs::exists(listing); }));
  std::istringstream lines(ReadFile(listing));
  std::set<int> fds;
  std::string line;
  while (std::getline(lines, line)) {
    size_t arrow = line.find(" -> ");
    if (arrow == std::string::npos) continue;  // "total 0"
    size_t space = line.rfind(' ', arrow - 1);
    int fd = std::stoi(line.substr(space + 1, arrow - space - 1));
    std::string target = line.substr(arrow + 4);
    fds.insert(fd);
    EXPECT_EQ(target.find("socket:"), std::string::npos) << line;
    if (fd == 0) {
      EXPECT_EQ(target, "/dev/null");
    } else if (fd == 2) {
      EXPECT_EQ(target, fs::canonical(dir_.path() / "logs" / "fds.log").string());
    } else if (fd > 2) {
      EXPECT_NE(target.find("/proc/"), std::string::npos) << "leaked: " << line;
    }
  }
  EXPECT_TRUE(fds.count(0) && fds.count(1) && fds.count(2));
  EXPECT_LE(fds.size(), 4u) << ReadFile(listing);
}

TEST_F(ProcessRuntimeTest, StartFailsForCommandThatCannotRun) {
  auto missing_path = runtime_.Start(Spec("missing", {"/nonexistent/bin/app"}));
  ASSERT_FALSE(missing_path.ok());
  EXPECT_EQ(missing_path.status().code(), StatusCode::kNotFound)
      << missing_path.status().ToString();
  EXPECT_NE(missing_path.status().message().find("/nonexistent/bin/app"), std::string::npos);

  auto missing_in_path = runtime_.Start(Spec("missing", {"bluegreen-no-such-program"}));
  ASSERT_FALSE(missing_in_path.ok());
  EXPECT_EQ(missing_in_path.status().code(), StatusCode::kNotFound)
      << missing_in_path.status().ToString();

  TaskSpec no_workdir = Spec("no-workdir", {"sleep", "30"});
  no_workdir.workdir = (dir_.path() / "does-not-exist").string();
  auto missing_workdir = runtime_.Start(no_workdir);
  ASSERT_FALSE(missing_workdir.ok());
  EXPECT_EQ(missing_workdir.status().code(), StatusCode::kNotFound)
      << missing_workdir.status().ToString();
  EXPECT_NE(missing_workdir.status().message().find("workdir"), std::string::npos);

  fs::path data = dir_.path() / "data.txt";
  std::ofstream(data) << "not a program\n";
  fs::permissions(data, fs::perms::owner_read | fs::perms::owner_write);
  auto not_executable = runtime_.Start(Spec("not-exec", {"./data.txt"}));
  ASSERT_FALSE(not_executable.ok());
  EXPECT_EQ(not_executable.status().code(), StatusCode::kPermissionDenied)
      << not_executable.status().ToString();

  auto directory = runtime_.Start(Spec("dir", {"/tmp"}));
  ASSERT_FALSE(directory.ok());
  EXPECT_EQ(directory.status().code(), StatusCode::kPermissionDenied);

  auto empty = runtime_.Start(Spec("empty", {}));
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ProcessRuntimeTest, MalformedHandleIsInvalidArgument) {
  for (const char* id : {"", "abc", "123", "123:", ":5", "12x:5", "123:5x", "0:5", "1:5", "-5:7"}) {
    auto status = runtime_.Inspect(TaskHandle{id});
    ASSERT_FALSE(status.ok()) << id;
    EXPECT_EQ(status.status().code(), StatusCode::kInvalidArgument) << id;
    EXPECT_EQ(runtime_.Stop(TaskHandle{id}, milliseconds(0)).code(), StatusCode::kInvalidArgument)
        << id;
  }
}

TEST_F(ProcessRuntimeTest, GoneProcessIsGoneAndStopIsOk) {
  // A PID far above pid_max's default that no process has.
  TaskHandle handle{"4194000:12345"};
  if (ProcState(4194000)) GTEST_SKIP() << "PID 4194000 exists";
  auto status = runtime_.Inspect(handle);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->state, TaskState::kGone);
  EXPECT_TRUE(runtime_.Stop(handle, milliseconds(0)).ok());
}

TEST_F(ProcessRuntimeTest, ConcurrentStartInspectStop) {
  constexpr int kThreads = 4;
  constexpr int kTasksPerThread = 3;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<TaskHandle> handles;
      for (int i = 0; i < kTasksPerThread; ++i) {
        auto handle = runtime_.Start(
            Spec("conc-" + std::to_string(t) + "-" + std::to_string(i), {"sleep", "30"}));
        if (!handle.ok()) {
          ++failures;
          continue;
        }
        handles.push_back(*handle);
      }
      for (const auto& h : handles) {
        auto status = runtime_.Inspect(h);
        if (!status.ok() || status->state != TaskState::kRunning) ++failures;
      }
      for (const auto& h : handles) {
        if (!runtime_.Stop(h, milliseconds(2000)).ok()) ++failures;
        auto status = runtime_.Inspect(h);
        if (!status.ok() || status->state == TaskState::kRunning) ++failures;
        if (IsAlive(PidOf(h))) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace bluegreen::runtime
