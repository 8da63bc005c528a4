#include "common/subprocess.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include "common/posix.h"

extern char** environ;  // NOLINT(readability-identifier-naming)

namespace bluegreen {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxCapture = 1 << 20;  // per stream; the rest is read and dropped
// After the program exits, how long to keep reading what a leftover child of it still writes.
constexpr std::chrono::milliseconds kDrainAfterExit{200};



void Reap(pid_t pid, int* wstatus) {
  while (::waitpid(pid, wstatus, 0) < 0 && errno == EINTR) {
  }
}

// Appends what can be read now; false at end of file or on error.
bool ReadSome(int fd, std::string* sink) {
  char buf[16384];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno == EAGAIN;
    if (n == 0) return false;
    size_t room = kMaxCapture > sink->size() ? kMaxCapture - sink->size() : 0;
    sink->append(buf, std::min(room, static_cast<size_t>(n)));
    if (static_cast<size_t>(n) < sizeof(buf)) return true;
  }
}

}  // namespace

Result<CapturedOutput> RunCaptured(const std::vector<std::string>& argv_in,
                                   const std::vector<std::string>* env_in, const std::string& cwd,
                                   Clock::time_point deadline) {
  if (argv_in.empty()) return InvalidArgument("no program to run");
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    return Internal("pipe: " + ErrnoText(errno));
  }
  Fd out_read(out_pipe[0]), out_write(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    return Internal("pipe: " + ErrnoText(errno));
  }
  Fd err_read(err_pipe[0]), err_write(err_pipe[1]);

  SpawnFileActions actions;
  SpawnAttr attr;
  if (!PrepareSessionSpawn(attr, actions, out_write.get(), err_write.get(), cwd.c_str())) {
    return Internal("posix_spawn: cannot set up attributes");
  }

  std::vector<std::string> args = argv_in;
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env = env_in != nullptr ? *env_in : std::vector<std::string>();
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_t pid = 0;
  // posix_spawnp searches the PATH of this process.
  int err = posix_spawnp(&pid, argv[0], actions.get(), attr.get(), argv.data(),
                         env_in != nullptr ? envp.data() : environ);
  if (err != 0) return Internal(fmt::format("cannot run {}: {}", argv_in[0], ErrnoText(err)));
  out_write.Reset();
  err_write.Reset();

  Fd pidfd(PidfdOpen(pid));
  CapturedOutput result;
  if (pidfd.get() < 0) {
    int e = errno;
    ::kill(-pid, SIGKILL);
    int wstatus = 0;
    Reap(pid, &wstatus);
    return Internal("pidfd_open: " + ErrnoText(e));
  }

  bool out_open = true;
  bool err_open = true;
  bool exited = false;
  Clock::time_point drain_until{};
  while (out_open || err_open || !exited) {
    Clock::time_point now = Clock::now();
    Clock::time_point until = exited ? std::min(deadline, drain_until) : deadline;
    if (now >= until) {
      if (!exited) result.timed_out = true;
      break;
    }
    auto wait_ms = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
    pollfd fds[3] = {{out_open ? out_read.get() : -1, POLLIN, 0},
                     {err_open ? err_read.get() : -1, POLLIN, 0},
                     {exited ? -1 : pidfd.get(), POLLIN, 0}};
    int n = ::poll(fds, 3, static_cast<int>(std::min<int64_t>(wait_ms, 1000)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    if (fds[0].revents != 0) out_open = ReadSome(out_read.get(), &result.out);
    if (fds[1].revents != 0) err_open = ReadSome(err_read.get(), &result.err);
    if (fds[2].revents != 0 && !exited) {
      exited = true;
      drain_until = Clock::now() + kDrainAfterExit;
    }
  }
  // The leader is not reaped yet (at worst a zombie), so its process group id cannot have been
  // reused: this reaches only the program's own leftover children, or all of them after a
  // timeout.
  ::kill(-pid, SIGKILL);
  int wstatus = 0;
  Reap(pid, &wstatus);
  result.exit_code = ExitCodeOf(wstatus);
  return result;
}

std::string SelfExecutable() {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("bluegreen") : p.string();
}

}  // namespace bluegreen
