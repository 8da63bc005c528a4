#include "pipeline/build_runner.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <system_error>

#include "common/posix.h"

namespace bluegreen::pipeline {
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
constexpr const char* kShell = "/bin/sh";
constexpr std::chrono::milliseconds kCancelPoll{50};
constexpr std::chrono::milliseconds kTermGrace{5000};



void WriteAll(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a full disk must not stop the build's bookkeeping
    text.remove_prefix(static_cast<size_t>(n));
  }
}

std::string Seconds(Clock::duration d) {
  return fmt::format("{:.2f} s", std::chrono::duration<double>(d).count());
}

bool IsEnvName(std::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

std::vector<std::string> BuildEnvironment(const BuildRequest& req) {
  std::vector<std::pair<std::string, std::string>> vars;
  auto set = [&](const std::string& name, const std::string& value) {
    for (auto& [n, v] : vars) {
      if (n == name) {
        v = value;
        return;
      }
    }
    vars.emplace_back(name, value);
  };
  const char* path = std::getenv("PATH");  // NOLINT(concurrency-mt-unsafe)
  set("PATH", path != nullptr && *path != '\0' ? path : kDefaultPath);
  set("HOME", fs::path(req.workdir).lexically_normal().parent_path().string());
  set("LANG", "C.UTF-8");
  for (const auto& [name, value] : req.env) set(name, value);
  std::vector<std::string> env;
  env.reserve(vars.size());
  for (const auto& [name, value] : vars) env.push_back(fmt::format("{}={}", name, value));
  return env;
}

enum class Stop { kNone, kTimeout, kCancel };

struct CommandEnd {
  int exit_code = -1;
  Stop stopped = Stop::kNone;
};

// Waits for the command's shell to exit; stops its process group on the deadline or on cancel.
// Kills what the command left in its group and reaps the shell.
CommandEnd WaitForCommand(pid_t pid, int pidfd, Clock::time_point deadline,
                          std::atomic<bool>* cancel, int log_fd, const std::string& stop_note,
                          Clock::duration timeout) {
  CommandEnd end;
  auto exited_within = [&](Clock::time_point until) {
    while (true) {
      Clock::time_point now = Clock::now();
      auto wait = std::min<Clock::duration>(until - now, kCancelPoll);
      if (wait < Clock::duration::zero()) wait = Clock::duration::zero();
      pollfd pfd{pidfd, POLLIN, 0};
      int n = ::poll(&pfd, 1,
                     static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(wait).count()));
      if (n > 0) return true;
      if (n < 0 && errno != EINTR) return false;
      if (Clock::now() >= until) return false;
      if (end.stopped == Stop::kNone && cancel != nullptr && cancel->load()) return false;
    }
  };
  if (!exited_within(deadline)) {
    bool cancelled = cancel != nullptr && cancel->load();
    end.stopped = cancelled ? Stop::kCancel : Stop::kTimeout;
    WriteAll(log_fd, cancelled ? fmt::format("[bluegreen] cancelled; stopping {}\n", stop_note)
                               : fmt::format("[bluegreen] build timed out after {}; stopping {}\n",
                                             Seconds(timeout), stop_note));
    ::kill(-pid, SIGTERM);
    exited_within(Clock::now() + kTermGrace);
  }
  // The shell is not reaped yet (at worst a zombie), so its process group id cannot have been
  // reused: this reaches only what the command left behind, or everything after the grace.
  ::kill(-pid, SIGKILL);
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  end.exit_code = ExitCodeOf(wstatus);
  return end;
}

// Spawns `/bin/sh -e -c command` in workdir, in a new session, output to log_fd.
Result<pid_t> SpawnCommand(const std::string& command, const std::string& workdir, int log_fd,
                           const std::vector<std::string>& env) {
  SpawnFileActions actions;
  SpawnAttr attr;
  if (!PrepareSessionSpawn(attr, actions, log_fd, log_fd, workdir.c_str())) {
    return Internal("posix_spawn: cannot set up attributes");
  }

  std::vector<std::string> args = {"sh", "-e", "-c", command};
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_copy = env;
  std::vector<char*> envp;
  envp.reserve(env_copy.size() + 1);
  for (auto& e : env_copy) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_t pid = 0;
  int err = posix_spawn(&pid, kShell, actions.get(), attr.get(), argv.data(), envp.data());
  if (err != 0) return Internal(fmt::format("cannot run {}: {}", kShell, ErrnoText(err)));
  return pid;
}

// --- CopyArtifacts ---

bool IsWithin(const fs::path& p, const fs::path& base) {
  auto [b, q] = std::mismatch(base.begin(), base.end(), p.begin(), p.end());
  return b == base.end();
}

Status CheckArtifactPath(const std::string& p) {
  if (p.empty()) return InvalidArgument("artifact path is empty");
  if (p.front() == '/') {
    return InvalidArgument(fmt::format("artifact path \"{}\" is absolute", p));
  }
  for (unsigned char c : p) {
    if (c < 0x20 || c == 0x7f) {
      return InvalidArgument(fmt::format("artifact path \"{}\" has control characters", p));
    }
  }
  for (const auto& part : fs::path(p)) {
    if (part == "..") {
      return InvalidArgument(fmt::format("artifact path \"{}\" has a \"..\" component", p));
    }
  }
  return Status::Ok();
}

Status IoError(const std::string& what, const fs::path& path, const std::error_code& ec) {
  return Internal(fmt::format("cannot {} {}: {}", what, path.string(), ec.message()));
}

Status CopyFile(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::create_directories(to.parent_path(), ec);
  if (ec) return IoError("create", to.parent_path(), ec);
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return IoError("copy to " + to.string() + " the file", from, ec);
  return Status::Ok();
}

// Copies the directory `from` (a real directory inside croot) into `to`.
Status CopyTree(const fs::path& from, const fs::path& to, const fs::path& croot, bool skip_git) {
  std::error_code ec;
  fs::create_directories(to, ec);
  if (ec) return IoError("create", to, ec);
  fs::directory_iterator it(from, ec);
  if (ec) return IoError("read the directory", from, ec);
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const fs::path& src = it->path();
    const fs::path dst = to / src.filename();
    if (skip_git && src.filename() == ".git") continue;
    fs::file_status st = fs::symlink_status(src, ec);
    if (ec) return IoError("inspect", src, ec);
    if (fs::is_regular_file(st)) {
      BG_RETURN_IF_ERROR(CopyFile(src, dst));
    } else if (fs::is_directory(st)) {
      BG_RETURN_IF_ERROR(CopyTree(src, dst, croot, false));
    } else if (fs::is_symlink(st)) {
      std::error_code link_ec;
      fs::path target = fs::canonical(src, link_ec);
      if (link_ec || !IsWithin(target, croot)) continue;  // dangling or outside root
      if (fs::is_regular_file(fs::status(target, link_ec)) && !link_ec) {
        BG_RETURN_IF_ERROR(CopyFile(target, dst));
      }
    }
  }
  if (ec) return IoError("read the directory", from, ec);
  return Status::Ok();
}

// Copies one listed artifact path (checked by CheckArtifactPath) from root into tmp.
Status CopyListed(const std::string& listed, const fs::path& croot, const fs::path& tmp) {
  fs::path rel;
  for (const auto& part : fs::path(listed).lexically_normal()) {
    if (part.empty() || part == ".") continue;  // "out/" ends with an empty element
    rel /= part;
  }
  if (rel.empty()) return CopyTree(croot, tmp, croot, /*skip_git=*/true);  // "." = everything

  const fs::path src = croot / rel;
  std::error_code ec;
  fs::file_status lst = fs::symlink_status(src, ec);
  if (!fs::exists(lst)) {
    return NotFound(fmt::format("artifact \"{}\" does not exist in the build output", listed));
  }
  fs::path target = fs::canonical(src, ec);
  if (ec) {
    return NotFound(fmt::format("artifact \"{}\" is a dangling symbolic link", listed));
  }
  if (!IsWithin(target, croot)) {
    return InvalidArgument(fmt::format("artifact \"{}\" leads outside the build directory (to {})",
                                       listed, target.string()));
  }
  fs::file_status st = fs::status(target, ec);
  if (ec) return IoError("inspect", target, ec);
  if (fs::is_directory(st)) return CopyTree(target, tmp / rel, croot, false);
  if (fs::is_regular_file(st)) return CopyFile(target, tmp / rel);
  return InvalidArgument(
      fmt::format("artifact \"{}\" is neither a regular file nor a directory", listed));
}

}  // namespace

Status RunBuild(const BuildRequest& req, BuildResult* result) {
  const Clock::time_point start = Clock::now();
  BuildResult local;
  BuildResult& res = result != nullptr ? *result : local;
  res = BuildResult{};

  if (req.workdir.empty() || req.workdir.front() != '/') {
    return InvalidArgument(fmt::format("build workdir \"{}\" is not absolute", req.workdir));
  }
  std::error_code ec;
  if (!fs::is_directory(req.workdir, ec)) {
    return InvalidArgument(fmt::format("build workdir {} is not a directory", req.workdir));
  }
  if (req.timeout <= std::chrono::milliseconds::zero()) {
    return InvalidArgument("build timeout must be positive");
  }
  for (const auto& [name, value] : req.env) {
    if (!IsEnvName(name)) {
      return InvalidArgument(fmt::format("invalid environment variable name \"{}\"", name));
    }
    if (value.find('\0') != std::string::npos) {
      return InvalidArgument(fmt::format("environment variable {} contains a NUL byte", name));
    }
  }
  for (size_t i = 0; i < req.commands.size(); ++i) {
    if (req.commands[i].find('\0') != std::string::npos) {
      return InvalidArgument(fmt::format("command {} contains a NUL byte", i + 1));
    }
  }
  Fd log(::open(req.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
  if (log.get() < 0) {
    return Internal(fmt::format("cannot open build log {}: {}", req.log_path, ErrnoText(errno)));
  }

  const std::vector<std::string> env = BuildEnvironment(req);
  const Clock::time_point deadline = start + req.timeout;
  auto finish = [&](Status status) {
    res.duration = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    return status;
  };

  for (size_t i = 0; i < req.commands.size(); ++i) {
    const std::string& command = req.commands[i];
    const std::string which = fmt::format("command {} (`{}`)", i + 1, command);
    if (req.cancel != nullptr && req.cancel->load()) {
      WriteAll(log.get(), fmt::format("[bluegreen] cancelled before {}\n", which));
      res.failed_command = static_cast<int>(i);
      res.exit_code = -1;
      return finish(FailedPrecondition("cancelled"));
    }
    if (Clock::now() >= deadline) {
      WriteAll(log.get(), fmt::format("[bluegreen] build timed out after {} before {}\n",
                                      Seconds(req.timeout), which));
      res.failed_command = static_cast<int>(i);
      res.exit_code = -1;
      return finish(
          Status(StatusCode::kDeadlineExceeded,
                 fmt::format("build timed out after {} before {}", Seconds(req.timeout), which)));
    }

    WriteAll(log.get(), fmt::format("[bluegreen] $ {}\n", command));
    const Clock::time_point command_start = Clock::now();
    auto pid = SpawnCommand(command, req.workdir, log.get(), env);
    if (!pid.ok()) {
      res.failed_command = static_cast<int>(i);
      res.exit_code = -1;
      WriteAll(log.get(), fmt::format("[bluegreen] {}\n", pid.status().message()));
      return finish(pid.status());
    }
    Fd pidfd(PidfdOpen(*pid));
    if (pidfd.get() < 0) {
      int e = errno;
      ::kill(-*pid, SIGKILL);
      while (::waitpid(*pid, nullptr, 0) < 0 && errno == EINTR) {
      }
      res.failed_command = static_cast<int>(i);
      res.exit_code = -1;
      return finish(Internal("pidfd_open: " + ErrnoText(e)));
    }
    CommandEnd end =
        WaitForCommand(*pid, pidfd.get(), deadline, req.cancel, log.get(), which, req.timeout);
    WriteAll(log.get(), fmt::format("[bluegreen] exit status {} ({})\n", end.exit_code,
                                    Seconds(Clock::now() - command_start)));

    if (end.stopped != Stop::kNone || end.exit_code != 0) {
      res.failed_command = static_cast<int>(i);
      res.exit_code = end.exit_code;
    }
    switch (end.stopped) {
      case Stop::kTimeout:
        return finish(Status(
            StatusCode::kDeadlineExceeded,
            fmt::format("build timed out after {} while running {}", Seconds(req.timeout), which)));
      case Stop::kCancel:
        return finish(FailedPrecondition("cancelled"));
      case Stop::kNone:
        break;
    }
    if (end.exit_code != 0) {
      return finish(
          FailedPrecondition(fmt::format("{} exited with status {}", which, end.exit_code)));
    }
  }
  return finish(Status::Ok());
}

Status CopyArtifacts(const std::string& root, const std::vector<std::string>& paths,
                     const std::string& dest) {
  for (const auto& p : paths) BG_RETURN_IF_ERROR(CheckArtifactPath(p));
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return NotFound(fmt::format("build directory {} does not exist", root));
  }
  const fs::path croot = fs::canonical(root, ec);
  if (ec) return IoError("resolve", root, ec);
  if (dest.empty()) return InvalidArgument("artifact destination is empty");
  const fs::path dest_path = fs::absolute(dest, ec).lexically_normal();
  if (ec) return IoError("resolve", dest, ec);
  if (IsWithin(fs::weakly_canonical(dest_path, ec), croot)) {
    return InvalidArgument(
        fmt::format("artifact destination {} is inside the build directory {}", dest, root));
  }
  if (fs::exists(fs::symlink_status(dest_path, ec))) {
    return Status(StatusCode::kAlreadyExists, fmt::format("{} already exists", dest));
  }
  const fs::path tmp = dest_path.string() + ".tmp";
  fs::remove_all(tmp, ec);  // left by a crash
  if (ec) return IoError("remove", tmp, ec);
  fs::create_directories(dest_path.parent_path(), ec);
  if (ec) return IoError("create", dest_path.parent_path(), ec);
  if (!fs::create_directory(tmp, ec) || ec) return IoError("create", tmp, ec);

  auto copy = [&]() -> Status {
    if (paths.empty()) return CopyTree(croot, tmp, croot, /*skip_git=*/true);
    for (const auto& p : paths) BG_RETURN_IF_ERROR(CopyListed(p, croot, tmp));
    return Status::Ok();
  };
  Status status = copy();
  if (status.ok() &&
      ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest_path.c_str(), RENAME_NOREPLACE) != 0) {
    int e = errno;
    status =
        e == EEXIST
            ? Status(StatusCode::kAlreadyExists, fmt::format("{} already exists", dest))
            : Internal(fmt::format("cannot rename {} to {}: {}", tmp.string(), dest, ErrnoText(e)));
  }
  if (!status.ok()) fs::remove_all(tmp, ec);
  return status;
}

}  // namespace bluegreen::pipeline
