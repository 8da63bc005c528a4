// Small RAII owners of POSIX resources, shared by the code that spawns processes and opens sockets:
// a file descriptor, posix_spawn's attribute and file-action objects, and errno as text. Each is
// owned by one scope (a descriptor may be moved to another owner); none is thread-safe (none needs
// to be).
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace bluegreen {

// Owns a file descriptor; -1 means none.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(other.Release()) {}
  Fd& operator=(Fd&&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership: returns the descriptor, which this object will no longer close.
  int Release() { return std::exchange(fd_, -1); }
  // Closes the descriptor now.
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// posix_spawn's attribute object, destroyed on every path.
class SpawnAttr {
 public:
  SpawnAttr() { ok_ = posix_spawnattr_init(&attr_) == 0; }
  ~SpawnAttr() {
    if (ok_) posix_spawnattr_destroy(&attr_);
  }
  SpawnAttr(const SpawnAttr&) = delete;
  SpawnAttr& operator=(const SpawnAttr&) = delete;
  bool ok() const { return ok_; }
  posix_spawnattr_t* get() { return &attr_; }

 private:
  posix_spawnattr_t attr_;
  bool ok_ = false;
};

// posix_spawn's file-actions object, destroyed on every path.
class SpawnFileActions {
 public:
  SpawnFileActions() { ok_ = posix_spawn_file_actions_init(&actions_) == 0; }
  ~SpawnFileActions() {
    if (ok_) posix_spawn_file_actions_destroy(&actions_);
  }
  SpawnFileActions(const SpawnFileActions&) = delete;
  SpawnFileActions& operator=(const SpawnFileActions&) = delete;
  bool ok() const { return ok_; }
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_;
  bool ok_ = false;
};

// Prepares a child that shares nothing with its parent but what is named: a session of its own
// (hence its own process group), an empty signal mask and default signal dispositions, stdin on
// /dev/null, stdout and stderr on `out_fd` and `err_fd`, no other descriptor, and `cwd` as its
// working directory (none when null). Returns false when an attribute cannot be set.
inline bool PrepareSessionSpawn(SpawnAttr& attr, SpawnFileActions& actions, int out_fd, int err_fd,
                                const char* cwd) {
  if (!attr.ok() || !actions.ok()) return false;
  sigset_t empty_mask;
  sigset_t all_signals;
  sigemptyset(&empty_mask);
  sigfillset(&all_signals);
  int rc = posix_spawnattr_setflags(
      attr.get(), POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  rc |= posix_spawnattr_setsigmask(attr.get(), &empty_mask);
  rc |= posix_spawnattr_setsigdefault(attr.get(), &all_signals);
  rc |= posix_spawn_file_actions_addopen(actions.get(), 0, "/dev/null", O_RDONLY, 0);
  rc |= posix_spawn_file_actions_adddup2(actions.get(), out_fd, 1);
  rc |= posix_spawn_file_actions_adddup2(actions.get(), err_fd, 2);
  rc |= posix_spawn_file_actions_addclosefrom_np(actions.get(), 3);
  if (cwd != nullptr) rc |= posix_spawn_file_actions_addchdir_np(actions.get(), cwd);
  return rc == 0;
}

// pidfd_open(2) through syscall(): glibc 2.36's <sys/pidfd.h> lacks extern "C" for C++.
inline int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// A wait status as one number: the exit code, or 128 + the signal that killed it; -1 otherwise.
inline int ExitCodeOf(int wstatus) {
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return -1;
}

// Raises the soft limit on open file descriptors to the hard limit (what a proxy holding many
// connections needs; systemd and most shells start programs with a soft limit of 1024). Returns
// the soft limit in force afterwards, and the one before in *before.
inline rlim_t RaiseFileLimit(rlim_t* before) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return 0;
  *before = lim.rlim_cur;
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) return raised.rlim_cur;
  }
  return lim.rlim_cur;
}

// The CPUs this process may run on (its affinity mask: taskset, a cgroup cpuset), in ascending
// order; empty if the mask cannot be read.
inline std::vector<int> AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int i = 0; i < CPU_SETSIZE; ++i) {
    if (CPU_ISSET(i, &set)) cpus.push_back(i);
  }
  return cpus;
}

// strerror(err) as a string.
inline std::string ErrnoText(int err) { return std::strerror(err); }  // NOLINT(concurrency-mt-unsafe)

}  // namespace bluegreen
