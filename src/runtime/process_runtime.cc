#include "runtime/process_runtime.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/posix.h"

extern char** environ;  // NOLINT(readability-identifier-naming)

namespace bluegreen::runtime {
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr std::chrono::milliseconds kPollInterval{20};
constexpr std::chrono::milliseconds kKillWait{2000};
constexpr const char* kDefaultPath = "/usr/local/bin:/usr/bin:/bin";

int PidfdSendSignal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// The fields of /proc/PID/stat that matter here.
struct ProcStat {
  char state = '?';
  pid_t pgrp = 0;
  uint64_t start_time = 0;  // clock ticks after boot
};

bool IsEnded(char state) { return state == 'Z' || state == 'X' || state == 'x'; }

template <typename T>
bool ParseNumber(std::string_view text, T* out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

// nullopt when the process does not exist (or its stat cannot be parsed).
std::optional<ProcStat> ReadProcStat(pid_t pid) {
  Fd fd(::open(fmt::format("/proc/{}/stat", pid).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return std::nullopt;
  std::string text;
  char buf[1024];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;  // ESRCH: the process went away after the open
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  // "PID (COMM) STATE PPID PGRP ...": COMM may contain spaces and parentheses, so the fields start
  // after the last ')'. Field 3 (state) is the first token after it.
  size_t close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::vector<std::string_view> fields;
  std::string_view rest(text);
  rest.remove_prefix(close + 1);
  while (!rest.empty() && fields.size() < 20) {
    size_t start = rest.find_first_not_of(" \n");
    if (start == std::string_view::npos) break;
    rest.remove_prefix(start);
    size_t end = rest.find_first_of(" \n");
    fields.push_back(rest.substr(0, end));
    rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
  }
  if (fields.size() < 20 || fields[0].size() != 1) return std::nullopt;
  ProcStat stat;
  stat.state = fields[0][0];
  if (!ParseNumber(fields[2], &stat.pgrp)) return std::nullopt;         // field 5
  if (!ParseNumber(fields[19], &stat.start_time)) return std::nullopt;  // field 22
  return stat;
}

struct ParsedHandle {
  pid_t pid = 0;
  uint64_t start_time = 0;
};

Result<ParsedHandle> ParseHandle(const TaskHandle& handle) {
  std::string_view id = handle.id;
  size_t colon = id.find(':');
  ParsedHandle parsed;
  if (colon == std::string_view::npos || !ParseNumber(id.substr(0, colon), &parsed.pid) ||
      !ParseNumber(id.substr(colon + 1), &parsed.start_time)) {
    return InvalidArgument(fmt::format("bad process task handle '{}': want PID:STARTTIME", id));
  }
  // Never 0 or 1: kill(-0, ...) and kill(-1, ...) reach far more than a task.
  if (parsed.pid <= 1) {
    return InvalidArgument(fmt::format("bad process task handle '{}': PID out of range", id));
  }
  return parsed;
}


// True while some process other than a zombie is in process group `pgid`.
bool GroupHasLiveMembers(pid_t pgid) {
  if (::kill(-pgid, 0) != 0 && errno == ESRCH) return false;
  // kill() also succeeds for a group that holds only zombies (a leader not reaped yet), so look
  // at the members' states.
  std::error_code ec;
  fs::directory_iterator it("/proc", ec);
  if (ec) return true;  // cannot tell: assume alive
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return true;
    pid_t pid = 0;
    if (!ParseNumber(it->path().filename().native(), &pid)) continue;
    auto stat = ReadProcStat(pid);
    if (stat && stat->pgrp == pgid && !IsEnded(stat->state)) return true;
  }
  return false;
}

Status CheckExecutable(const std::string& path, const std::string& shown) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return NotFound(fmt::format("program '{}' not found ({})", shown, path));
    }
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("program '{}' ({}): {}", shown, path, ErrnoText(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("program '{}' ({}) is not a regular file", shown, path));
  }
  if (::access(path.c_str(), X_OK) != 0) {
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("program '{}' ({}) is not executable", shown, path));
  }
  return Status::Ok();
}

// The absolute path of the program to run, resolved the way execvp would in `workdir`.
Result<std::string> ResolveProgram(const std::string& arg0, const fs::path& workdir,
                                   const std::string& search_path) {
  if (arg0.find('/') != std::string::npos) {
    std::string path = arg0[0] == '/' ? arg0 : (workdir / arg0).string();
    BG_RETURN_IF_ERROR(CheckExecutable(path, arg0));
    return path;
  }
  std::optional<Status> first_denied;
  std::string_view dirs = search_path;
  while (true) {
    size_t colon = dirs.find(':');
    std::string_view dir = dirs.substr(0, colon);
    // An empty PATH entry means the current directory, which for the task is its workdir.
    fs::path candidate = dir.empty() ? workdir / arg0 : workdir / fs::path(dir) / arg0;
    Status st = CheckExecutable(candidate.string(), arg0);
    if (st.ok()) return candidate.string();
    if (st.code() == StatusCode::kPermissionDenied && !first_denied) first_denied = st;
    if (colon == std::string_view::npos) break;
    dirs.remove_prefix(colon + 1);
  }
  if (first_denied) return *first_denied;
  return NotFound(fmt::format("program '{}' not found in PATH ({})", arg0, search_path));
}

// serve's environment, then `env`, then PORT; later entries win.
std::vector<std::string> BuildEnvironment(const TaskSpec& spec) {
  std::map<std::string, std::string> vars;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    size_t eq = entry.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    vars[std::string(entry.substr(0, eq))] = std::string(entry.substr(eq + 1));
  }
  for (const auto& [key, value] : spec.env) vars[key] = value;
  vars["PORT"] = std::to_string(spec.host_port);
  std::vector<std::string> out;
  out.reserve(vars.size());
  for (const auto& [key, value] : vars) out.push_back(fmt::format("{}={}", key, value));
  return out;
}

// The search path the task's argv[0] is looked up in: its own PATH if the spec sets one.
std::string SearchPath(const TaskSpec& spec) {
  if (auto it = spec.env.find("PATH"); it != spec.env.end()) return it->second;
  const char* path = std::getenv("PATH");  // NOLINT(concurrency-mt-unsafe)
  return path != nullptr ? path : kDefaultPath;
}

// Opens the task's log for appending (parent directories created), as an fd >= 3.
Result<int> OpenLog(const std::string& log_path) {
  std::string path = log_path.empty() ? "/dev/null" : log_path;
  if (!log_path.empty()) {
    fs::path parent = fs::path(log_path).parent_path();
    std::error_code ec;
    if (!parent.empty()) fs::create_directories(parent, ec);
    if (ec) {
      return Internal(
          fmt::format("cannot create log directory {}: {}", parent.string(), ec.message()));
    }
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
  if (fd < 0) return Internal(fmt::format("cannot open log {}: {}", path, ErrnoText(errno)));
  if (fd < 3) {
    // dup2 onto stdout/stderr must not be a no-op that keeps FD_CLOEXEC.
    int high = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int err = errno;
    ::close(fd);
    if (high < 0) return Internal(fmt::format("cannot dup log fd: {}", ErrnoText(err)));
    fd = high;
  }
  return fd;
}

}  // namespace

Result<TaskHandle> ProcessRuntime::Start(const TaskSpec& spec) {
  if (spec.command.empty() || spec.command[0].empty()) {
    return InvalidArgument(fmt::format("task {}: empty command", spec.name));
  }

  std::error_code ec;
  fs::path workdir = spec.workdir.empty() ? fs::current_path(ec) : fs::absolute(spec.workdir, ec);
  if (ec) {
    return Internal(fmt::format("task {}: cannot resolve workdir '{}': {}", spec.name, spec.workdir,
                                ec.message()));
  }
  struct stat st {};
  if (::stat(workdir.c_str(), &st) != 0) {
    return NotFound(fmt::format("task {}: workdir {} does not exist", spec.name, workdir.string()));
  }
  if (!S_ISDIR(st.st_mode)) {
    return FailedPrecondition(
        fmt::format("task {}: workdir {} is not a directory", spec.name, workdir.string()));
  }

  auto program = ResolveProgram(spec.command[0], workdir, SearchPath(spec));
  if (!program.ok()) {
    return Status(program.status().code(),
                  fmt::format("task {}: {}", spec.name, program.status().message()));
  }

  auto log_fd = OpenLog(spec.log_path);
  if (!log_fd.ok()) {
    return Status(log_fd.status().code(),
                  fmt::format("task {}: {}", spec.name, log_fd.status().message()));
  }
  Fd log(*log_fd);

  SpawnFileActions actions;
  SpawnAttr attr;
  // Its own session (hence its own process group), nothing of serve's signal state, and no
  // descriptor of serve (listening sockets, the store).
  if (!PrepareSessionSpawn(attr, actions, log.get(), log.get(), workdir.c_str())) {
    return Internal("posix_spawn: cannot set up attributes");
  }

  std::vector<std::string> env = BuildEnvironment(spec);
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = spec.command;
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_t pid = 0;
  // glibc reports a failed chdir or exec as the return value (and reaps the child).
  int err =
      posix_spawn(&pid, program->c_str(), actions.get(), attr.get(), argv.data(), envp.data());
  if (err != 0) {
    StatusCode code = err == ENOENT   ? StatusCode::kNotFound
                      : err == EACCES ? StatusCode::kPermissionDenied
                                      : StatusCode::kInternal;
    return Status(code,
                  fmt::format("task {}: cannot run {}: {}", spec.name, *program, ErrnoText(err)));
  }

  // Our unreaped child: its /proc entry stays (as a zombie at worst) until ReapIfChild.
  auto stat = ReadProcStat(pid);
  if (!stat) {
    ::kill(pid, SIGKILL);
    ::kill(-pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    return Internal(
        fmt::format("task {}: cannot read /proc/{}/stat of the new process", spec.name, pid));
  }
  {
    std::lock_guard lock(mu_);
    children_[pid] = Child{stat->start_time, std::nullopt};
  }
  return TaskHandle{fmt::format("{}:{}", pid, stat->start_time)};
}

std::optional<int> ProcessRuntime::ReapIfChild(pid_t pid, uint64_t start_time) {
  std::lock_guard lock(mu_);
  auto it = children_.find(pid);
  if (it == children_.end() || it->second.start_time != start_time) return std::nullopt;
  if (it->second.exit_code) return it->second.exit_code;
  int wstatus = 0;
  pid_t r;
  do {
    r = ::waitpid(pid, &wstatus, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid) {
    it->second.exit_code = ExitCodeOf(wstatus);
    return it->second.exit_code;
  }
  if (r < 0) children_.erase(it);  // ECHILD: reaped elsewhere (SIGCHLD ignored?); use /proc
  return std::nullopt;
}

void ProcessRuntime::Forget(pid_t pid, uint64_t start_time) {
  std::lock_guard lock(mu_);
  auto it = children_.find(pid);
  if (it != children_.end() && it->second.start_time == start_time) children_.erase(it);
}

Result<TaskStatus> ProcessRuntime::Inspect(const TaskHandle& handle) {
  auto parsed = ParseHandle(handle);
  if (!parsed.ok()) return parsed.status();
  const auto [pid, start_time] = *parsed;
  if (auto code = ReapIfChild(pid, start_time)) return TaskStatus{TaskState::kExited, *code};
  auto stat = ReadProcStat(pid);
  if (!stat || stat->start_time != start_time) return TaskStatus{TaskState::kGone, -1};
  if (IsEnded(stat->state)) return TaskStatus{TaskState::kExited, -1};
  return TaskStatus{TaskState::kRunning, -1};
}

Status ProcessRuntime::Stop(const TaskHandle& handle, std::chrono::milliseconds grace) {
  auto parsed = ParseHandle(handle);
  if (!parsed.ok()) return parsed.status();
  const pid_t pid = parsed->pid;  // plain variables: lambdas below capture them
  const uint64_t start_time = parsed->start_time;
  if (pid == ::getpid() || pid == ::getpgrp()) {
    return FailedPrecondition(fmt::format("handle {} designates serve itself", handle.id));
  }
  ReapIfChild(pid, start_time);

  // The pidfd pins the process that has the PID now; once /proc shows the handle's start time
  // for that PID (now or later), that process is the task, so signals sent through the pidfd can
  // never reach a process that reused the PID.
  Fd pidfd(PidfdOpen(pid));

  // While the task exists (even as a zombie) or any member of its group does, the kernel does not
  // hand out its PID again, so a PID held by a process with another start time means that
  // nothing of the task is left.
  enum class Leader { kRunning, kEnded, kReplaced };
  auto leader = [&] {
    auto stat = ReadProcStat(pid);
    if (!stat) return Leader::kEnded;
    if (stat->start_time != start_time) return Leader::kReplaced;
    return IsEnded(stat->state) ? Leader::kEnded : Leader::kRunning;
  };
  auto finished = [&] {
    ReapIfChild(pid, start_time);
    switch (leader()) {
      case Leader::kRunning:
        return false;
      case Leader::kReplaced:
        return true;
      case Leader::kEnded:
        return !GroupHasLiveMembers(pid);
    }
    return true;
  };
  auto signal_task = [&](int sig) {
    Leader state = leader();
    if (state == Leader::kReplaced) return;
    if (state == Leader::kRunning) {
      if (pidfd.valid()) {
        PidfdSendSignal(pidfd.get(), sig);
      } else {
        ::kill(pid, sig);  // no pidfd (old kernel): checked by leader() just before
      }
    }
    ::kill(-pid, sig);  // the whole group; it has the task's PID as its id (session leader)
  };
  auto wait_until = [&](Clock::time_point deadline) {
    while (true) {
      if (finished()) return true;
      auto now = Clock::now();
      if (now >= deadline) return false;
      std::this_thread::sleep_for(std::min<Clock::duration>(kPollInterval, deadline - now));
    }
  };

  if (finished()) {
    Forget(pid, start_time);
    return Status::Ok();
  }
  signal_task(SIGTERM);
  if (wait_until(Clock::now() + grace)) {
    Forget(pid, start_time);
    return Status::Ok();
  }
  signal_task(SIGKILL);
  if (wait_until(Clock::now() + kKillWait)) {
    Forget(pid, start_time);
    return Status::Ok();
  }
  return Status(StatusCode::kDeadlineExceeded,
                fmt::format("task {} (process group {}) still there {}ms after SIGKILL", handle.id,
                            pid, kKillWait.count()));
}

Result<uint16_t> PickFreePort() {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Unavailable(fmt::format("socket: {}", ErrnoText(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Unavailable(fmt::format("bind 127.0.0.1:0: {}", ErrnoText(errno)));
  }
  socklen_t len = sizeof(addr);
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Unavailable(fmt::format("getsockname: {}", ErrnoText(errno)));
  }
  return static_cast<uint16_t>(ntohs(addr.sin_port));
}

}  // namespace bluegreen::runtime
