#include "pipeline/git.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <system_error>
#include <utility>

namespace bluegreen::pipeline {
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr const char* kDefaultPath = "/usr/local/bin:/usr/bin:/bin";
constexpr size_t kMaxCapture = 1 << 20;  // per stream; the rest is read and dropped
// After git itself exits, how long to keep reading what a leftover child of it still writes.
constexpr std::chrono::milliseconds kDrainAfterExit{200};

// The calling process's variables a git child may see: what ssh, proxies and TLS need.
constexpr std::array<const char*, 14> kPassThrough = {
    "PATH",       "HOME",          "SSH_AUTH_SOCK", "http_proxy",     "https_proxy",
    "HTTP_PROXY", "HTTPS_PROXY",   "no_proxy",      "NO_PROXY",       "all_proxy",
    "ALL_PROXY",  "SSL_CERT_FILE", "SSL_CERT_DIR",  "GIT_SSL_CAINFO",
};

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

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

std::string ErrnoText(int err) { return std::strerror(err); }  // NOLINT(concurrency-mt-unsafe)

// Through syscall(): glibc 2.36's <sys/pidfd.h> lacks extern "C" for C++.
int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

bool HasControlCharacters(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

bool IsHttps(std::string_view repo) { return StartsWith(repo, "https://"); }

// "user@host:path" (scp-like ssh syntax): a ':' before any '/', with an '@' before it.
bool IsScpLike(std::string_view repo) {
  size_t colon = repo.find(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  std::string_view host = repo.substr(0, colon);
  return host.find('/') == std::string_view::npos && host.find('@') != std::string_view::npos &&
         colon + 1 < repo.size();
}

Status ValidateRepo(const std::string& repo) {
  if (repo.empty()) return InvalidArgument("repository is empty");
  if (HasControlCharacters(repo)) return InvalidArgument("repository contains control characters");
  for (std::string_view scheme : {"file://", "https://", "http://", "ssh://", "git://"}) {
    if (StartsWith(repo, scheme) && repo.size() > scheme.size()) return Status::Ok();
  }
  if (repo.front() == '/') return Status::Ok();
  if (repo.front() != '-' && IsScpLike(repo)) return Status::Ok();
  return InvalidArgument(
      "repository must be an absolute path or a file://, https://, http://, ssh:// or "
      "user@host:path URL");
}

// The rules of git check-ref-format for a branch name, enough to keep it one plain argument.
Status ValidateBranch(const std::string& branch) {
  auto bad = [&](std::string_view why) {
    return InvalidArgument(fmt::format("invalid branch name \"{}\": {}", branch, why));
  };
  if (branch.empty()) return InvalidArgument("branch is empty");
  if (HasControlCharacters(branch)) return InvalidArgument("branch contains control characters");
  if (branch.front() == '-') return bad("starts with '-'");
  if (branch.front() == '/' || branch.back() == '/') return bad("starts or ends with '/'");
  if (branch.back() == '.') return bad("ends with '.'");
  if (branch.find("..") != std::string::npos) return bad("contains \"..\"");
  if (branch.find("//") != std::string::npos) return bad("contains \"//\"");
  if (branch.find("@{") != std::string::npos) return bad("contains \"@{\"");
  if (branch == "@") return bad("is \"@\"");
  if (branch.find_first_of(" ~^:?*[\\") != std::string::npos) {
    return bad("contains one of space ~ ^ : ? * [ \\");
  }
  const std::string_view name = branch;
  size_t start = 0;
  while (start <= name.size()) {
    size_t slash = name.find('/', start);
    if (slash == std::string_view::npos) slash = name.size();
    std::string_view part = name.substr(start, slash - start);
    if (StartsWith(part, ".")) return bad("a component starts with '.'");
    if (part.size() >= 5 && part.substr(part.size() - 5) == ".lock") {
      return bad("a component ends with \".lock\"");
    }
    start = slash + 1;
  }
  return Status::Ok();
}

bool IsHexSha(std::string_view sha) {
  if (sha.size() != 40 && sha.size() != 64) return false;
  for (char c : sha) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// The password of a URL's userinfo ("https://user:PASSWORD@host/..."), or "".
std::string UrlPassword(std::string_view repo) {
  size_t scheme = repo.find("://");
  if (scheme == std::string_view::npos) return "";
  std::string_view rest = repo.substr(scheme + 3);
  size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  size_t at = authority.rfind('@');
  if (at == std::string_view::npos) return "";
  std::string_view userinfo = authority.substr(0, at);
  size_t colon = userinfo.find(':');
  if (colon == std::string_view::npos) return "";
  return std::string(userinfo.substr(colon + 1));
}

std::string RedactAll(std::string text, const std::vector<std::string>& secrets) {
  for (const auto& s : secrets) text = Redact(std::move(text), s);
  return text;
}

std::string Base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  auto byte = [&](size_t i) -> uint32_t { return i < in.size() ? static_cast<uint8_t>(in[i]) : 0; };
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kAlphabet[v & 63] : '=';
  }
  return out;
}

const char* TrueProgram() {
  for (const char* p : {"/bin/true", "/usr/bin/true"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "true";
}

struct ProcessOutput {
  int exit_code = -1;  // 128 + signal number when killed by a signal
  bool timed_out = false;
  std::string out;
  std::string err;
};

int ExitCodeOf(int wstatus) {
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return -1;
}

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

// Runs cmd in `cwd` (its own session, stdin /dev/null, no descriptor beyond 0-2), capturing
// stdout and stderr, until it exits or `deadline` passes (then its whole process group is
// killed). Leftover processes of the group are killed once git itself has exited.
Result<ProcessOutput> RunProcess(const detail::GitCommand& cmd, const std::string& cwd,
                                 Clock::time_point deadline) {
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
  if (!actions.ok() || !attr.ok()) return Internal("posix_spawn: cannot initialize attributes");
  sigset_t empty_mask;
  sigset_t all_signals;
  sigemptyset(&empty_mask);
  sigfillset(&all_signals);
  int rc = 0;
  rc |= posix_spawnattr_setflags(
      attr.get(), POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  rc |= posix_spawnattr_setsigmask(attr.get(), &empty_mask);
  rc |= posix_spawnattr_setsigdefault(attr.get(), &all_signals);
  rc |= posix_spawn_file_actions_addopen(actions.get(), 0, "/dev/null", O_RDONLY, 0);
  rc |= posix_spawn_file_actions_adddup2(actions.get(), out_write.get(), 1);
  rc |= posix_spawn_file_actions_adddup2(actions.get(), err_write.get(), 2);
  rc |= posix_spawn_file_actions_addclosefrom_np(actions.get(), 3);
  rc |= posix_spawn_file_actions_addchdir_np(actions.get(), cwd.c_str());
  if (rc != 0) return Internal("posix_spawn: cannot set up attributes");

  std::vector<std::string> args = cmd.argv;
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env = cmd.env;
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_t pid = 0;
  // posix_spawnp searches the PATH of this process for "git".
  int err = posix_spawnp(&pid, argv[0], actions.get(), attr.get(), argv.data(), envp.data());
  if (err != 0) return Internal(fmt::format("cannot run git: {}", ErrnoText(err)));
  out_write.Reset();
  err_write.Reset();

  Fd pidfd(PidfdOpen(pid));
  ProcessOutput result;
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
  // reused: this reaches only git's own leftover children, or all of them after a timeout.
  ::kill(-pid, SIGKILL);
  int wstatus = 0;
  Reap(pid, &wstatus);
  result.exit_code = ExitCodeOf(wstatus);
  return result;
}

// The last few lines of git's stderr worth showing: no hints, no blank lines, and not the
// boilerplate git adds after the real reason when a remote cannot be read.
std::string Reason(const std::string& err, const std::vector<std::string>& secrets) {
  static constexpr std::string_view kBoilerplate[] = {
      "fatal: Could not read from remote repository.",
      "Please make sure you have the correct access rights",
      "and the repository exists.",
  };
  std::vector<std::string_view> lines;
  std::vector<std::string_view> boilerplate;
  std::string_view rest(err);
  while (!rest.empty()) {
    size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty() || StartsWith(line, "hint:")) continue;
    bool is_boilerplate =
        std::find(std::begin(kBoilerplate), std::end(kBoilerplate), line) != std::end(kBoilerplate);
    (is_boilerplate ? boilerplate : lines).push_back(line);
  }
  if (lines.empty()) lines = std::move(boilerplate);
  std::string out;
  size_t first = lines.size() > 3 ? lines.size() - 3 : 0;
  for (size_t i = first; i < lines.size(); ++i) {
    if (!out.empty()) out += "; ";
    out += lines[i];
  }
  if (out.size() > 600) out = out.substr(0, 600) + "...";
  if (out.empty()) out = "no error output";
  return RedactAll(std::move(out), secrets);
}

std::string Seconds(std::chrono::milliseconds d) {
  return fmt::format("{:.3g} s", std::chrono::duration<double>(d).count());
}

// One git command in a checkout being made; the state Checkout shares between its steps.
struct GitRun {
  const std::string& repo;
  const GitCredentials& cred;
  std::vector<std::string> secrets;
  Clock::time_point deadline;
  std::chrono::milliseconds timeout;

  // git ARGS in cwd. A non-zero exit is an error of `code`, described as `what`.
  Result<ProcessOutput> Run(const std::vector<std::string>& args, const std::string& cwd,
                            StatusCode code, const std::string& what) const {
    auto out = RunProcess(detail::MakeGitCommand(args, repo, cred), cwd, deadline);
    if (!out.ok()) return out.status();
    if (out->timed_out) {
      return Status(StatusCode::kDeadlineExceeded,
                    fmt::format("{}: timed out after {}", what, Seconds(timeout)));
    }
    if (out->exit_code != 0) {
      return Status(code, fmt::format("{}: {}", what, Reason(out->err, secrets)));
    }
    return out;
  }
};

Result<CommitInfo> ParseCommitInfo(const std::string& out) {
  // "%H%x00%s%x00%an%x00%ct\n"
  std::vector<std::string_view> fields;
  std::string_view rest(out);
  while (!rest.empty() && (rest.back() == '\n')) rest.remove_suffix(1);
  while (true) {
    size_t nul = rest.find('\0');
    fields.push_back(rest.substr(0, nul));
    if (nul == std::string_view::npos) break;
    rest.remove_prefix(nul + 1);
  }
  if (fields.size() != 4) return Internal("cannot parse the output of git log");
  CommitInfo info;
  info.sha = std::string(fields[0]);
  info.subject = std::string(fields[1]);
  info.author = std::string(fields[2]);
  auto [end, ec] =
      std::from_chars(fields[3].data(), fields[3].data() + fields[3].size(), info.time);
  if (ec != std::errc() || end != fields[3].data() + fields[3].size()) {
    return Internal("cannot parse the commit time in the output of git log");
  }
  return info;
}

// Removes what a failed checkout left in dir: dir itself when it did not exist before.
void CleanUp(const fs::path& dir, bool existed) {
  std::error_code ec;
  if (!existed) {
    fs::remove_all(dir, ec);
    return;
  }
  for (const auto& entry : fs::directory_iterator(dir, ec)) fs::remove_all(entry.path(), ec);
}

}  // namespace

std::string DisplayRepo(const std::string& repo) { return Redact(repo, UrlPassword(repo)); }

std::string Redact(std::string text, const std::string& secret) {
  if (secret.empty()) return text;
  size_t pos = 0;
  while ((pos = text.find(secret, pos)) != std::string::npos) {
    text.replace(pos, secret.size(), "***");
    pos += 3;
  }
  return text;
}

namespace detail {

std::string BasicAuthHeaderValue(const std::string& token) {
  return "Basic " + Base64("x-access-token:" + token);
}

std::vector<std::string> SecretsOf(const std::string& repo, const GitCredentials& cred) {
  std::vector<std::string> secrets;
  if (!cred.token.empty()) {
    secrets.push_back(BasicAuthHeaderValue(cred.token));  // before the token it contains
    secrets.push_back(Base64("x-access-token:" + cred.token));
    secrets.push_back(cred.token);
  }
  std::string password = UrlPassword(repo);
  if (!password.empty()) secrets.push_back(password);
  return secrets;
}

GitCommand MakeGitCommand(const std::vector<std::string>& args, const std::string& repo,
                          const GitCredentials& cred) {
  GitCommand cmd;
  cmd.argv = {"git", "-c", "protocol.file.allow=always"};
  cmd.argv.insert(cmd.argv.end(), args.begin(), args.end());

  bool has_ssh_command = false;
  for (const char* name : kPassThrough) {
    const char* value = std::getenv(name);  // NOLINT(concurrency-mt-unsafe)
    if (value == nullptr) continue;
    cmd.env.push_back(fmt::format("{}={}", name, value));
  }
  if (const char* ssh = std::getenv("GIT_SSH_COMMAND")) {  // NOLINT(concurrency-mt-unsafe)
    cmd.env.push_back(fmt::format("GIT_SSH_COMMAND={}", ssh));
    has_ssh_command = true;
  }
  if (std::getenv("PATH") == nullptr) {  // NOLINT(concurrency-mt-unsafe)
    cmd.env.push_back(fmt::format("PATH={}", kDefaultPath));
  }
  if (!has_ssh_command) cmd.env.emplace_back("GIT_SSH_COMMAND=ssh -o BatchMode=yes");
  cmd.env.emplace_back("LC_ALL=C");
  cmd.env.emplace_back("GIT_CONFIG_NOSYSTEM=1");
  cmd.env.emplace_back("GIT_CONFIG_GLOBAL=/dev/null");
  cmd.env.emplace_back("GIT_TERMINAL_PROMPT=0");
  cmd.env.push_back(fmt::format("GIT_ASKPASS={}", TrueProgram()));

  std::vector<std::pair<std::string, std::string>> config = {
      {"credential.helper", ""},  // an empty value clears the list
      {"core.hooksPath", "/dev/null"}, {"gc.auto", "0"},
      {"maintenance.auto", "false"},   {"advice.detachedHead", "false"},
      {"init.defaultBranch", "main"},
  };
  if (!cred.token.empty() && IsHttps(repo)) {
    config.emplace_back("http.extraHeader", "Authorization: " + BasicAuthHeaderValue(cred.token));
  }
  cmd.env.push_back(fmt::format("GIT_CONFIG_COUNT={}", config.size()));
  for (size_t i = 0; i < config.size(); ++i) {
    cmd.env.push_back(fmt::format("GIT_CONFIG_KEY_{}={}", i, config[i].first));
    cmd.env.push_back(fmt::format("GIT_CONFIG_VALUE_{}={}", i, config[i].second));
  }
  return cmd;
}

}  // namespace detail

Result<std::string> ResolveBranchHead(const std::string& repo, const std::string& branch,
                                      const GitCredentials& cred,
                                      std::chrono::milliseconds timeout) {
  BG_RETURN_IF_ERROR(ValidateRepo(repo));
  BG_RETURN_IF_ERROR(ValidateBranch(branch));
  const std::string ref = "refs/heads/" + branch;
  GitRun git{repo, cred, detail::SecretsOf(repo, cred), Clock::now() + timeout, timeout};
  // In "/": never in a repository whose configuration git would read.
  auto out =
      git.Run({"ls-remote", "--", repo, ref}, "/", StatusCode::kUnavailable,
              fmt::format("cannot read branch {} of repository {}", branch, DisplayRepo(repo)));
  if (!out.ok()) return out.status();
  // "SHA\tREF\n" per line; the pattern also matches refs that merely end in "/" + ref.
  std::string_view rest(out->out);
  while (!rest.empty()) {
    size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
    size_t tab = line.find('\t');
    if (tab == std::string_view::npos || line.substr(tab + 1) != ref) continue;
    std::string_view sha = line.substr(0, tab);
    if (!IsHexSha(sha)) {
      return Internal(
          fmt::format("git ls-remote of {} printed an invalid object name", DisplayRepo(repo)));
    }
    return std::string(sha);
  }
  return NotFound(fmt::format("branch {} not found in repository {}", branch, DisplayRepo(repo)));
}

Result<CommitInfo> Checkout(const std::string& repo, const std::string& branch,
                            const std::string& sha, const std::string& dir,
                            const GitCredentials& cred, std::chrono::milliseconds timeout) {
  BG_RETURN_IF_ERROR(ValidateRepo(repo));
  BG_RETURN_IF_ERROR(ValidateBranch(branch));
  if (!IsHexSha(sha)) {
    return InvalidArgument(
        fmt::format("invalid commit \"{}\": want 40 or 64 lower-case hex digits", sha));
  }
  if (dir.empty() || dir.front() != '/') {
    return InvalidArgument(fmt::format("checkout directory \"{}\" is not absolute", dir));
  }

  const fs::path path(dir);
  std::error_code ec;
  bool existed = fs::exists(path, ec);
  if (ec) return Internal(fmt::format("cannot inspect {}: {}", dir, ec.message()));
  if (existed) {
    if (!fs::is_directory(path, ec)) {
      return FailedPrecondition(fmt::format("checkout directory {} is not a directory", dir));
    }
    if (!fs::is_empty(path, ec) || ec) {
      return FailedPrecondition(fmt::format("checkout directory {} is not empty", dir));
    }
  } else if (!fs::create_directories(path, ec) || ec) {
    return Internal(fmt::format("cannot create {}: {}", dir, ec.message()));
  }

  GitRun git{repo, cred, detail::SecretsOf(repo, cred), Clock::now() + timeout, timeout};
  auto checkout = [&]() -> Result<CommitInfo> {
    auto init =
        git.Run({"init", "-q"}, dir, StatusCode::kInternal, fmt::format("git init in {}", dir));
    if (!init.ok()) return init.status();

    const std::string where = fmt::format("commit {} of repository {}", sha, DisplayRepo(repo));
    auto by_sha = git.Run({"fetch", "-q", "--no-tags", "--depth", "1", "--", repo, sha}, dir,
                          StatusCode::kUnavailable, "cannot fetch " + where);
    std::string target = "FETCH_HEAD";
    if (!by_sha.ok()) {
      if (by_sha.status().code() == StatusCode::kDeadlineExceeded) return by_sha.status();
      // The server may refuse a commit that no ref names: fetch the branch and look for it.
      auto whole = git.Run({"fetch", "-q", "--no-tags", "--", repo, "refs/heads/" + branch}, dir,
                           StatusCode::kUnavailable, "cannot fetch " + where);
      if (!whole.ok()) return whole.status();
      auto has = git.Run({"cat-file", "-e", sha + "^{commit}"}, dir, StatusCode::kNotFound,
                         fmt::format("{} is not on branch {}", where, branch));
      if (!has.ok()) {
        if (has.status().code() != StatusCode::kNotFound) return has.status();
        return NotFound(fmt::format("{} is not on branch {}", where, branch));
      }
      target = sha;
    }
    auto co = git.Run({"checkout", "-q", "--detach", target}, dir, StatusCode::kInternal,
                      fmt::format("cannot check out {} in {}", where, dir));
    if (!co.ok()) return co.status();
    auto log = git.Run({"log", "-1", "--no-show-signature", "--format=%H%x00%s%x00%an%x00%ct"}, dir,
                       StatusCode::kInternal, fmt::format("git log in {}", dir));
    if (!log.ok()) return log.status();
    auto info = ParseCommitInfo(log->out);
    if (!info.ok()) return info.status();
    if (info->sha != sha) {
      return Internal(fmt::format("checkout of {} in {} gave commit {}", where, dir, info->sha));
    }
    return info;
  };
  auto info = checkout();
  if (!info.ok()) CleanUp(path, existed);
  return info;
}

}  // namespace bluegreen::pipeline
