// The Source stage's access to git: the head commit of a branch, and a fresh checkout of one
// commit. Both run the git command-line tool as a child process (argv, never a shell), each in its
// own session with stdin on /dev/null, a time limit, and an environment built from scratch: no
// system or global git configuration, no hooks, no terminal or askpass prompts (ssh runs with
// BatchMode=yes), and of the calling process's variables only PATH, HOME, SSH_AUTH_SOCK, the
// proxy and CA-file ones, GIT_SSL_CAINFO and GIT_SSH_COMMAND. A credential reaches git only
// through the child's environment (never argv, so it is not visible in ps) and is redacted from
// every message these functions return.
//
// The functions are thread-safe: they share no state, and several may run at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace bluegreen::pipeline {

// Credentials for https:// repositories; ignored for every other kind of URL (ssh uses the
// calling user's keys and agent; local paths need none).
struct GitCredentials {
  // A GitHub-style access token, sent as "Authorization: Basic base64(x-access-token:TOKEN)".
  // Empty = none.
  std::string token;
};

struct CommitInfo {
  std::string sha;      // full hex object name
  std::string subject;  // first line of the message
  std::string author;   // author name
  int64_t time = 0;     // commit time, seconds since the epoch
};

// The commit at the head of `branch` of `repo` (an absolute local path, or a file://, https://,
// http://, ssh:// or scp-like user@host:path URL), from `git ls-remote REPO refs/heads/BRANCH`.
// Errors: InvalidArgument for a malformed repo or branch name; NotFound when the branch does not
// exist; Unavailable when the repository cannot be read (the message names the repository and
// carries git's own reason, never a credential); DeadlineExceeded when git did not finish within
// `timeout`.
Result<std::string> ResolveBranchHead(const std::string& repo, const std::string& branch,
                                      const GitCredentials& cred,
                                      std::chrono::milliseconds timeout);

// A fresh checkout of exactly `sha` (40 or 64 hex digits) into `dir`, which must not exist or be
// an empty directory: git init, git fetch --depth 1 REPO SHA, git checkout --detach. When the
// server refuses to serve a commit by its name (protocol v0 servers without
// uploadpack.allowReachableSHA1InWant), falls back to fetching the whole branch. `timeout` covers
// all of it. The checkout holds no credential (.git/config names no token).
// Errors: InvalidArgument for a malformed argument; FailedPrecondition when dir is not empty;
// NotFound when the commit is not on the branch; Unavailable when the repository cannot be read;
// DeadlineExceeded; Internal for local failures. On error, what was written under dir is removed.
Result<CommitInfo> Checkout(const std::string& repo, const std::string& branch,
                            const std::string& sha, const std::string& dir,
                            const GitCredentials& cred, std::chrono::milliseconds timeout);

// `text` with every occurrence of `secret` replaced by "***". An empty secret changes nothing.
std::string Redact(std::string text, const std::string& secret);
// The repository as it may be shown: a password in an https:// URL replaced by "***".
std::string DisplayRepo(const std::string& repo);

namespace detail {

// One git invocation as it is spawned: argv[0] is "git"; env is the child's whole environment.
struct GitCommand {
  std::vector<std::string> argv;
  std::vector<std::string> env;
};

// The command for `git ARGS` run against `repo`. The token, when there is one and repo is https,
// goes into env as GIT_CONFIG_COUNT / GIT_CONFIG_KEY_n=http.extraHeader / GIT_CONFIG_VALUE_n, and
// nowhere else.
GitCommand MakeGitCommand(const std::vector<std::string>& args, const std::string& repo,
                          const GitCredentials& cred);

// The secrets to redact from git's output for this repo and these credentials: the token, the
// encoded header that carries it, and a password written into the URL itself.
std::vector<std::string> SecretsOf(const std::string& repo, const GitCredentials& cred);

// "Basic " + base64("x-access-token:" + token).
std::string BasicAuthHeaderValue(const std::string& token);

}  // namespace detail
}  // namespace bluegreen::pipeline
