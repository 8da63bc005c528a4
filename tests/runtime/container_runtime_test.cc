// Tests of ContainerRuntime against a real Podman service, no mocks.
//
// Each test starts its own `podman system service` under a temporary directory
// (scripts/podman-service.sh) and runs test_backend in containers made from an image imported
// from a root filesystem (the binary, the shared libraries ldd lists and the dynamic loader), as
// no registry is reachable. The image is imported once per test binary run, and not at all when
// the stored image was made from the same files. Tests are skipped when podman is not installed.
//
// Containers are named "bgtest-<pid>-<what>", so test binaries can run concurrently; TearDown
// removes every container a test named, also after a failure, then stops the service.
#include "runtime/container_runtime.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/http_client.h"
#include "common/status.h"

#ifndef BLUEGREEN_SOURCE_DIR
#error "BLUEGREEN_SOURCE_DIR must name the repository root"
#endif
#ifndef TEST_BACKEND_BINARY
#error "TEST_BACKEND_BINARY must name the test_backend program"
#endif

namespace bluegreen::runtime {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr char kImage[] = "localhost/bluegreen-test-backend:latest";
constexpr char kBinaryLabel[] = "io.bluegreen.test-backend-digest";
constexpr uint16_t kContainerPort = 8080;

#define BG_ASSERT_OK(expr)                                        \
  do {                                                            \
    const ::bluegreen::Status bg_st = (expr);                     \
    ASSERT_TRUE(bg_st.ok()) << #expr << ": " << bg_st.ToString(); \
  } while (0)

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

// Runs `command` with /bin/sh; collects its output.
CommandResult RunShell(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) result.output.append(buf.data(), n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string ShellQuote(std::string_view s) {
  std::string out = "'";
  for (const char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string TrimNewlines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// A listening socket on 127.0.0.1:port; -1 when the port is taken.
int ListenOn(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 8) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

uint16_t PickFreePort() {
  const int fd = ListenOn(0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool PortIsFree(uint16_t port) {
  const int fd = ListenOn(port);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

std::string UrlEncode(std::string_view s) {
  std::string out;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", u);
      out += buf;
    }
  }
  return out;
}

// Makes kImage from test_backend unless the stored kImage was made from the same files.
// `env` is the environment prefix for podman commands ("CONTAINERS_CONF=... ").
Status ImportTestImage(const std::string& env, const fs::path& work_dir) {
  const CommandResult ldd = RunShell("ldd " + ShellQuote(TEST_BACKEND_BINARY));
  if (ldd.exit_code != 0) return Internal("ldd " TEST_BACKEND_BINARY ": " + ldd.output);
  std::vector<fs::path> files = {TEST_BACKEND_BINARY};
  std::istringstream lines(ldd.output);
  std::string word;
  while (lines >> word) {
    if (word.starts_with("/")) files.emplace_back(word);
  }
  std::string file_list;
  for (const fs::path& f : files) file_list += " " + ShellQuote(f.string());

  const CommandResult digest = RunShell("cat" + file_list + " | sha256sum | cut -c1-64");
  if (digest.exit_code != 0) return Internal("sha256sum: " + digest.output);
  const std::string want = TrimNewlines(digest.output);
  const CommandResult have = RunShell(env + "podman image inspect --format '{{index .Labels \"" +
                                      kBinaryLabel + "\"}}' " + kImage);
  if (have.exit_code == 0 && TrimNewlines(have.output) == want) return Status::Ok();

  const fs::path rootfs = work_dir / "rootfs";
  std::error_code ec;
  fs::create_directories(rootfs, ec);
  if (ec) return Internal("mkdir " + rootfs.string() + ": " + ec.message());
  fs::copy_file(TEST_BACKEND_BINARY, rootfs / "test_backend", ec);
  if (ec) return Internal("copy test_backend: " + ec.message());
  for (size_t i = 1; i < files.size(); ++i) {  // libraries and the loader, at their own paths
    const fs::path target = rootfs / files[i].relative_path();
    fs::create_directories(target.parent_path(), ec);
    if (!ec) fs::copy_file(files[i], target, fs::copy_options::overwrite_existing, ec);
    if (ec) return Internal("copy " + files[i].string() + ": " + ec.message());
  }
  const CommandResult import =
      RunShell("tar -C " + ShellQuote(rootfs.string()) + " -c . | " + env +
               "podman import --change 'ENTRYPOINT [\"/test_backend\"]' --change 'LABEL " +
               kBinaryLabel + "=" + want + "' - " + kImage);
  if (import.exit_code != 0) return Internal("podman import: " + import.output);
  return Status::Ok();
}

class ContainerRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (RunShell("command -v podman").exit_code != 0) {
      GTEST_SKIP() << "podman is not installed (apt-get install -y podman runc); the container "
                      "runtime tests need it";
    }
    char dir_template[] = "/tmp/bg-ctr-XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    dir_ = dir_template;

    const auto service_start = Clock::now();
    const CommandResult started = RunShell(Script() + " start " + ShellQuote(dir_.string()));
    ASSERT_EQ(started.exit_code, 0) << "podman-service.sh start: " << started.output;
    service_running_ = true;
    socket_ = TrimNewlines(started.output);
    if (const size_t nl = socket_.rfind('\n'); nl != std::string::npos) {
      socket_ = socket_.substr(nl + 1);
    }
    std::printf("podman service started in %lld ms\n",
                static_cast<long long>((Clock::now() - service_start) / 1ms));

    static bool image_ready = false;
    if (!image_ready) {
      const auto import_start = Clock::now();
      BG_ASSERT_OK(ImportTestImage(PodmanEnv(), dir_));
      image_ready = true;
      std::printf("test image ready in %lld ms\n",
                  static_cast<long long>((Clock::now() - import_start) / 1ms));
    }
    runtime_ = std::make_unique<ContainerRuntime>(socket_, "podman");
  }

  void TearDown() override {
    if (!socket_.empty()) {
      for (const std::string& name : names_) {
        HttpClientRequest req;
        req.method = "DELETE";
        req.target = "/v1.41/containers/" + name + "?force=true";
        (void)HttpCall("unix:" + socket_, req, 30s);
      }
      for (const std::string& image : images_) {
        HttpClientRequest req;
        req.method = "DELETE";
        req.target = "/v1.41/images/" + image + "?force=true";
        (void)HttpCall("unix:" + socket_, req, 30s);
      }
    }
    if (service_running_) {
      const CommandResult stopped = RunShell(Script() + " stop " + ShellQuote(dir_.string()));
      EXPECT_EQ(stopped.exit_code, 0) << stopped.output;
    }
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }

  static std::string Script() {
    return ShellQuote(std::string(BLUEGREEN_SOURCE_DIR) + "/scripts/podman-service.sh");
  }
  std::string PodmanEnv() const {
    return "CONTAINERS_CONF=" + ShellQuote((dir_ / "containers.conf").string()) + " ";
  }

  // A container name unique to this process; TearDown removes it.
  std::string TaskName(std::string_view what) {
    names_.push_back("bgtest-" + std::to_string(::getpid()) + "-" + std::string(what));
    return names_.back();
  }

  // An image name unique to this process; TearDown removes the image.
  std::string ImageName(std::string_view what) {
    images_.push_back("localhost/bgtest-" + std::to_string(::getpid()) + ":" + std::string(what));
    return images_.back();
  }

  // Writes `files` (relative path -> content) under a fresh build context directory.
  fs::path BuildContext(const std::string& name, const std::map<std::string, std::string>& files) {
    const fs::path context = dir_ / name;
    for (const auto& [path, content] : files) {
      fs::create_directories((context / path).parent_path());
      std::ofstream(context / path) << content;
    }
    return context;
  }

  // A request to build ImageName(what) from `containerfile` in `context`; its output goes to
  // build_output_.
  ImageBuildRequest BuildRequest(const fs::path& context, const std::string& containerfile,
                                 std::string_view what) {
    ImageBuildRequest req;
    req.context_dir = context.string();
    req.containerfile = containerfile;
    req.tag = ImageName(what);
    req.timeout = 120s;
    req.output = [this](std::string_view text) { build_output_ += text; };
    return req;
  }

  TaskSpec BackendSpec(const std::string& name, uint16_t host_port, const std::string& greeting) {
    TaskSpec spec;
    spec.name = name;
    spec.image = kImage;
    spec.command = {"--listen", "0.0.0.0:" + std::to_string(kContainerPort), "--name", greeting};
    spec.container_port = kContainerPort;
    spec.host_port = host_port;
    return spec;
  }

  // GET on the engine's API; the parsed JSON body of a 200 answer, else null.
  json EngineGet(const std::string& target) {
    HttpClientRequest req;
    req.target = "/v1.41" + target;
    Result<HttpClientResponse> r = HttpCall("unix:" + socket_, req, 30s);
    if (!r.ok() || r->status != 200) return nullptr;
    return json::parse(r->body, nullptr, false);
  }

  // Ids of the containers labelled as task `name`, running or not.
  std::vector<std::string> ContainersOfTask(const std::string& name) {
    const json filters = {{"label", {"io.bluegreen.task=" + name}}};
    const json list = EngineGet("/containers/json?all=true&filters=" + UrlEncode(filters.dump()));
    std::vector<std::string> ids;
    if (!list.is_array()) {
      ADD_FAILURE() << "cannot list containers";
      return ids;
    }
    for (const json& c : list) ids.push_back(c.value("Id", ""));
    return ids;
  }

  // Polls GET / on 127.0.0.1:port until it answers `body`.
  static bool WaitForBody(uint16_t port, const std::string& body, std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    HttpClientRequest req;
    while (Clock::now() < deadline) {
      Result<HttpClientResponse> r = HttpCall("127.0.0.1:" + std::to_string(port), req, 1s);
      if (r.ok() && r->status == 200 && r->body == body) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  // Polls Inspect until the task is in `state`; the last status seen.
  TaskStatus WaitForState(const TaskHandle& handle, TaskState state, std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    TaskStatus last;
    while (Clock::now() < deadline) {
      Result<TaskStatus> s = runtime_->Inspect(handle);
      if (s.ok()) {
        last = *s;
        if (last.state == state) break;
      }
      std::this_thread::sleep_for(50ms);
    }
    return last;
  }

  fs::path dir_;
  std::string socket_;
  bool service_running_ = false;
  std::vector<std::string> names_;
  std::vector<std::string> images_;
  std::string build_output_;
  std::unique_ptr<ContainerRuntime> runtime_;
};

TEST_F(ContainerRuntimeTest, PingAndName) {
  Result<std::string> pong = ContainerRuntime::Ping(socket_);
  ASSERT_TRUE(pong.ok()) << pong.status().ToString();
  EXPECT_EQ(*pong, "OK");
  EXPECT_EQ(runtime_->name(), "podman");
  EXPECT_EQ(ContainerRuntime(socket_, "docker").name(), "docker");

  Result<std::string> none = ContainerRuntime::Ping((dir_ / "no-such.sock").string());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kUnavailable) << none.status().ToString();
}

TEST_F(ContainerRuntimeTest, StartServesOnHostPortAndStopRemovesIt) {
  const std::string name = TaskName("serve");
  const uint16_t port = PickFreePort();
  ASSERT_NE(port, 0);
  TaskSpec spec = BackendSpec(name, port, "c1");
  spec.env = {{"GREETING", "hello"}, {"PORT", "1"}};
  Result<TaskHandle> handle = runtime_->Start(spec);
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  EXPECT_FALSE(handle->id.empty());

  EXPECT_TRUE(WaitForBody(port, "c1\n", 20s)) << "no answer on 127.0.0.1:" << port;
  Result<TaskStatus> status = runtime_->Inspect(*handle);
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(status->state, TaskState::kRunning);

  const json info = EngineGet("/containers/" + handle->id + "/json");
  ASSERT_TRUE(info.is_object());
  std::string container_name = info.value("Name", "");
  if (container_name.starts_with("/")) container_name.erase(0, 1);  // Docker's form
  EXPECT_EQ(container_name, name);
  std::vector<std::string> env = info["Config"]["Env"].get<std::vector<std::string>>();
  EXPECT_EQ(std::count(env.begin(), env.end(), "PORT=8080"), 1) << info["Config"]["Env"].dump();
  EXPECT_EQ(std::count(env.begin(), env.end(), "PORT=1"), 0) << info["Config"]["Env"].dump();
  EXPECT_EQ(std::count(env.begin(), env.end(), "GREETING=hello"), 1)
      << info["Config"]["Env"].dump();
  EXPECT_EQ(info["Config"]["Labels"]["io.bluegreen.task"], name);
  EXPECT_EQ(info["HostConfig"]["RestartPolicy"]["Name"], "no");
  EXPECT_EQ(ContainersOfTask(name), std::vector<std::string>{handle->id});

  const auto stop_start = Clock::now();
  BG_ASSERT_OK(runtime_->Stop(*handle, 5s));
  // test_backend exits on SIGTERM at once: no wait for the grace period.
  EXPECT_LT(Clock::now() - stop_start, 5s);
  status = runtime_->Inspect(*handle);
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(status->state, TaskState::kGone);
  EXPECT_TRUE(PortIsFree(port));
  EXPECT_TRUE(ContainersOfTask(name).empty());

  // Stopping again, and stopping what never existed, are fine.
  BG_ASSERT_OK(runtime_->Stop(*handle, 1s));
  BG_ASSERT_OK(runtime_->Stop(TaskHandle{"0123456789abcdef0123456789abcdef"}, 1s));
}

TEST_F(ContainerRuntimeTest, ExitedTaskReportsItsExitCode) {
  const std::string name = TaskName("exits");
  TaskSpec spec = BackendSpec(name, PickFreePort(), "x");
  spec.command = {"--no-such-flag", "1"};  // test_backend's usage error: exit status 2
  Result<TaskHandle> handle = runtime_->Start(spec);
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();

  const TaskStatus status = WaitForState(*handle, TaskState::kExited, 20s);
  EXPECT_EQ(status.state, TaskState::kExited);
  EXPECT_EQ(status.exit_code, 2);

  // An exited container is still there until Stop removes it.
  EXPECT_EQ(ContainersOfTask(name).size(), 1u);
  BG_ASSERT_OK(runtime_->Stop(*handle, 1s));
  Result<TaskStatus> gone = runtime_->Inspect(*handle);
  ASSERT_TRUE(gone.ok()) << gone.status().ToString();
  EXPECT_EQ(gone->state, TaskState::kGone);
  EXPECT_TRUE(ContainersOfTask(name).empty());
}

TEST_F(ContainerRuntimeTest, MissingImageIsNotFoundAndLeavesNoContainer) {
  const std::string name = TaskName("noimage");
  TaskSpec spec = BackendSpec(name, PickFreePort(), "x");
  spec.image = "localhost/bluegreen-no-such-image:latest";
  Result<TaskHandle> handle = runtime_->Start(spec);
  ASSERT_FALSE(handle.ok());
  EXPECT_EQ(handle.status().code(), StatusCode::kNotFound) << handle.status().ToString();
  EXPECT_NE(handle.status().message().find(spec.image), std::string::npos)
      << handle.status().ToString();
  EXPECT_TRUE(ContainersOfTask(name).empty());
}

TEST_F(ContainerRuntimeTest, StartFailureRemovesTheCreatedContainer) {
  // The host port is taken, so the engine creates the container but cannot start it.
  const int taken = ListenOn(0);
  ASSERT_GE(taken, 0);
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  ::getsockname(taken, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string name = TaskName("portbusy");
  Result<TaskHandle> handle = runtime_->Start(BackendSpec(name, ntohs(addr.sin_port), "x"));
  ::close(taken);
  ASSERT_FALSE(handle.ok());
  EXPECT_EQ(handle.status().code(), StatusCode::kUnavailable) << handle.status().ToString();
  EXPECT_NE(handle.status().message().find("start container " + name), std::string::npos)
      << handle.status().ToString();
  EXPECT_TRUE(ContainersOfTask(name).empty());
}

TEST_F(ContainerRuntimeTest, AnotherRuntimeReadoptsTheTask) {
  const std::string name = TaskName("readopt");
  const uint16_t port = PickFreePort();
  Result<TaskHandle> handle = runtime_->Start(BackendSpec(name, port, "c1"));
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  ASSERT_TRUE(WaitForBody(port, "c1\n", 20s));

  // As after a restart of serve: a new runtime object, with only the stored handle.
  ContainerRuntime later(socket_, "podman");
  const TaskHandle stored{handle->id};
  Result<TaskStatus> status = later.Inspect(stored);
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(status->state, TaskState::kRunning);
  BG_ASSERT_OK(later.Stop(stored, 2s));
  status = runtime_->Inspect(*handle);
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(status->state, TaskState::kGone);
  EXPECT_TRUE(PortIsFree(port));
}

TEST_F(ContainerRuntimeTest, StartReplacesAContainerOfTheSameName) {
  const std::string name = TaskName("replace");
  const uint16_t first_port = PickFreePort();
  Result<TaskHandle> first = runtime_->Start(BackendSpec(name, first_port, "c1"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_TRUE(WaitForBody(first_port, "c1\n", 20s));

  const uint16_t second_port = PickFreePort();
  Result<TaskHandle> second = runtime_->Start(BackendSpec(name, second_port, "c2"));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_NE(second->id, first->id);
  EXPECT_TRUE(WaitForBody(second_port, "c2\n", 20s));

  Result<TaskStatus> old_status = runtime_->Inspect(*first);
  ASSERT_TRUE(old_status.ok()) << old_status.status().ToString();
  EXPECT_EQ(old_status->state, TaskState::kGone);
  EXPECT_TRUE(PortIsFree(first_port));
  EXPECT_EQ(ContainersOfTask(name), std::vector<std::string>{second->id});
  BG_ASSERT_OK(runtime_->Stop(*second, 1s));
}

TEST_F(ContainerRuntimeTest, ConcurrentStartsAndStops) {
  constexpr int kTasks = 3;
  std::vector<std::string> names;
  std::vector<uint16_t> ports;
  for (int i = 0; i < kTasks; ++i) {
    names.push_back(TaskName("concurrent" + std::to_string(i)));
    ports.push_back(PickFreePort());
  }
  std::vector<Result<TaskHandle>> handles(kTasks, Result<TaskHandle>(Internal("not started")));
  {
    std::vector<std::thread> threads;
    threads.reserve(kTasks);
    for (int i = 0; i < kTasks; ++i) {
      threads.emplace_back(
          [&, i] { handles[i] = runtime_->Start(BackendSpec(names[i], ports[i], names[i])); });
    }
    for (std::thread& t : threads) t.join();
  }
  for (int i = 0; i < kTasks; ++i) {
    ASSERT_TRUE(handles[i].ok()) << handles[i].status().ToString();
    EXPECT_TRUE(WaitForBody(ports[i], names[i] + "\n", 20s)) << names[i];
  }
  std::vector<Status> stopped(kTasks);
  {
    std::vector<std::thread> threads;
    threads.reserve(kTasks);
    for (int i = 0; i < kTasks; ++i) {
      threads.emplace_back([&, i] { stopped[i] = runtime_->Stop(*handles[i], 2s); });
    }
    for (std::thread& t : threads) t.join();
  }
  for (int i = 0; i < kTasks; ++i) {
    EXPECT_TRUE(stopped[i].ok()) << stopped[i].ToString();
    EXPECT_TRUE(ContainersOfTask(names[i]).empty()) << names[i];
  }
}

TEST_F(ContainerRuntimeTest, IncompleteSpecIsInvalid) {
  TaskSpec spec = BackendSpec(TaskName("invalid"), 0, "x");
  Result<TaskHandle> no_port = runtime_->Start(spec);
  ASSERT_FALSE(no_port.ok());
  EXPECT_EQ(no_port.status().code(), StatusCode::kInvalidArgument);
  spec.host_port = PickFreePort();
  spec.image.clear();
  Result<TaskHandle> no_image = runtime_->Start(spec);
  ASSERT_FALSE(no_image.ok());
  EXPECT_EQ(no_image.status().code(), StatusCode::kInvalidArgument);

  Result<TaskStatus> empty = runtime_->Inspect(TaskHandle{});
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ContainerRuntimeTest, BuildImageFromADirectoryAndRunIt) {
  const std::string long_dir(120, 'd');
  const fs::path context = BuildContext(
      "context",
      {{"Containerfile",
        std::string("FROM ") + kImage + "\nCOPY greeting.txt /greeting.txt\nCOPY " + long_dir +
            "/f.txt /f.txt\nCMD [\"--listen\", \"0.0.0.0:8080\", \"--name\", \"built\"]\n"},
       {"greeting.txt", "hello\n"},
       {long_dir + "/f.txt", "a name longer than ustar's 100 bytes\n"}});
  const ImageBuildRequest req = BuildRequest(context, "Containerfile", "built");
  Result<std::string> id = runtime_->BuildImage(req);
  ASSERT_TRUE(id.ok()) << id.status().ToString() << "\noutput:\n" << build_output_;
  EXPECT_TRUE(id->starts_with("sha256:")) << *id;
  EXPECT_NE(build_output_.find("COPY greeting.txt /greeting.txt"), std::string::npos)
      << build_output_;
  const json image = EngineGet("/images/" + req.tag + "/json");
  ASSERT_TRUE(image.is_object()) << "no image " << req.tag;
  EXPECT_EQ(image.value("Id", ""), *id);

  // The image runs with its own CMD (the task gives no command).
  const uint16_t port = PickFreePort();
  TaskSpec spec = BackendSpec(TaskName("built"), port, "unused");
  spec.image = req.tag;
  spec.command.clear();
  Result<TaskHandle> handle = runtime_->Start(spec);
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  EXPECT_TRUE(WaitForBody(port, "built\n", 30s));

  // An image a container uses is not removed; once the container is gone it is, and then the
  // engine does not know it.
  Status removed = runtime_->RemoveImage(req.tag);
  EXPECT_FALSE(removed.ok()) << "removed an image in use";
  EXPECT_TRUE(EngineGet("/images/" + req.tag + "/json").is_object()) << removed.ToString();
  BG_ASSERT_OK(runtime_->Stop(*handle, 1s));
  BG_ASSERT_OK(runtime_->RemoveImage(req.tag));
  EXPECT_TRUE(EngineGet("/images/" + req.tag + "/json").is_null()) << "the image is still there";
  removed = runtime_->RemoveImage(req.tag);
  EXPECT_EQ(removed.code(), StatusCode::kNotFound) << removed.ToString();
}

TEST_F(ContainerRuntimeTest, FailedImageBuildCarriesTheEnginesMessage) {
  const fs::path context =
      BuildContext("failing", {{"docker/Containerfile", "FROM scratch\nCOPY missing.txt /m\n"},
                               {"docker/git.Containerfile", "FROM scratch\nCOPY .git/HEAD /\n"},
                               {".git/HEAD", "ref: refs/heads/main\n"}});
  ImageBuildRequest req = BuildRequest(context, "docker/Containerfile", "failing");
  Result<std::string> id = runtime_->BuildImage(req);
  ASSERT_FALSE(id.ok()) << *id;
  EXPECT_EQ(id.status().code(), StatusCode::kFailedPrecondition) << id.status().ToString();
  EXPECT_NE(id.status().message().find("build of image " + req.tag + " failed: "),
            std::string::npos)
      << id.status().ToString();
  EXPECT_NE(id.status().message().find("missing.txt"), std::string::npos) << id.status().ToString();
  EXPECT_TRUE(EngineGet("/images/" + req.tag + "/json").is_null()) << "a failed build tagged it";
  std::printf("the failed build: %s\n", id.status().message().c_str());

  // The context is sent without its .git.
  req.containerfile = "docker/git.Containerfile";
  id = runtime_->BuildImage(req);
  ASSERT_FALSE(id.ok()) << "COPY .git/HEAD worked: .git was in the build context";
  EXPECT_NE(id.status().message().find(".git/HEAD"), std::string::npos) << id.status().ToString();
}

TEST_F(ContainerRuntimeTest, ImageBuildRequestsThatCannotWork) {
  const fs::path context = BuildContext("bad", {{"Containerfile", "FROM scratch\n"}});
  const ImageBuildRequest req = BuildRequest(context, "Containerfile", "bad");

  ImageBuildRequest no_file = req;
  no_file.containerfile = "Dockerfile";
  EXPECT_EQ(runtime_->BuildImage(no_file).status().code(), StatusCode::kNotFound);
  ImageBuildRequest outside = req;
  outside.containerfile = "../Containerfile";
  EXPECT_EQ(runtime_->BuildImage(outside).status().code(), StatusCode::kInvalidArgument);
  ImageBuildRequest relative = req;
  relative.context_dir = "context";
  EXPECT_EQ(runtime_->BuildImage(relative).status().code(), StatusCode::kInvalidArgument);

  const std::atomic<bool> cancelled{true};
  ImageBuildRequest stopped = req;
  stopped.cancel = &cancelled;
  Result<std::string> r = runtime_->BuildImage(stopped);
  EXPECT_EQ(r.status(), FailedPrecondition("cancelled"));

  ContainerRuntime nowhere((dir_ / "no-such.sock").string(), "podman");
  r = nowhere.BuildImage(req);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
}

}  // namespace
}  // namespace bluegreen::runtime
