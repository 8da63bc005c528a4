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

#include "common/posix.h"
#include "common/subprocess.h"

namespace bluegreen::pipeline {
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr const char* kDefaultPath = "/usr/local/bin:/usr/bin:/bin";

// The calling process's variables a git child may see: what ssh, proxies and TLS need.
constexpr std::array<const char*, 14> kPassThrough = {
    "PATH",       "HOME",          "SSH_AUTH_SOCK", "http_proxy",     "https_proxy",
    "HTTP_PROXY", "HTTPS_PROXY",   "no_proxy",      "NO_PROXY",       "all_proxy",
    "ALL_PROXY",  "SSL_CERT_FILE", "SSL_CERT_DIR",  "GIT_SSL_CAINFO",
};

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
  Result<CapturedOutput> Run(const std::vector<std::string>& args, const std::string& cwd,
                            StatusCode code, const std::string& what) const {
    const detail::GitCommand cmd = detail::MakeGitCommand(args, repo, cred);
    auto out = RunCaptured(cmd.argv, &cmd.env, cwd, deadline);
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
