#include "pipeline/git.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace bluegreen::pipeline {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

constexpr milliseconds kTimeout{20000};

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs a fixed shell snippet of the test itself (no outside input) and returns its stdout.
std::string Sh(const std::string& script) {
  std::string cmd =
      "export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME='Ada Lovelace' "
      "GIT_AUTHOR_EMAIL=ada@example.com GIT_COMMITTER_NAME='Ada Lovelace' "
      "GIT_COMMITTER_EMAIL=ada@example.com; set -e; " +
      script;
  FILE* p = ::popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int rc = ::pclose(p);
  EXPECT_EQ(rc, 0) << script;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Sets an environment variable of this process for a scope (the tests are single-threaded), for
// the variables git children inherit from it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    ::setenv(name, value.c_str(), 1);  // NOLINT(concurrency-mt-unsafe)
  }
  ~ScopedEnv() { ::unsetenv(name_); }  // NOLINT(concurrency-mt-unsafe)
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

// A bare repository "origin.git" with two commits on main, pushed from a working clone.
class GitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bg-git-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    bare_ = (root_ / "origin.git").string();
    Sh("cd " + root_.string() +
       " && git init -q --bare -b main origin.git"
       " && git init -q -b main work && cd work"
       " && echo first > app.txt && git add app.txt && git commit -q -m 'first commit'"
       " && git remote add origin ../origin.git && git push -q origin main");
    sha1_ = Sh("cd " + root_.string() + "/work && git rev-parse HEAD");
    Sh("cd " + root_.string() +
       "/work && echo second > app.txt && git commit -q -am 'second commit'"
       " && git push -q origin main");
    sha2_ = Sh("cd " + root_.string() + "/work && git rev-parse HEAD");
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  fs::path root_;
  std::string bare_;
  std::string sha1_;
  std::string sha2_;
};

TEST_F(GitTest, ResolveBranchHeadReturnsTheNewestCommit) {
  auto head = ResolveBranchHead(bare_, "main", {}, kTimeout);
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(*head, sha2_);
  EXPECT_NE(sha1_, sha2_);
}

TEST_F(GitTest, ResolveBranchHeadMatchesTheBranchExactly) {
  // ls-remote's pattern also matches refs that end in "/refs/heads/main".
  Sh("cd " + root_.string() + "/work && git push -q origin HEAD~1:refs/heads/x/refs/heads/main");
  auto head = ResolveBranchHead(bare_, "main", {}, kTimeout);
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(*head, sha2_);
}

TEST_F(GitTest, MissingBranchIsNotFound) {
  auto head = ResolveBranchHead(bare_, "release", {}, kTimeout);
  ASSERT_FALSE(head.ok());
  EXPECT_EQ(head.status().code(), StatusCode::kNotFound);
  EXPECT_NE(head.status().message().find("release"), std::string::npos);
}

TEST_F(GitTest, MissingRepositoryIsUnavailableAndNamed) {
  std::string missing = (root_ / "nope.git").string();
  auto head = ResolveBranchHead(missing, "main", {}, kTimeout);
  ASSERT_FALSE(head.ok());
  EXPECT_EQ(head.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(head.status().message().find(missing), std::string::npos) << head.status().message();
}

TEST_F(GitTest, CheckoutOfAnOlderCommit) {
  fs::path dir = root_ / "checkout";
  auto info = Checkout(bare_, "main", sha1_, dir.string(), {}, kTimeout);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->sha, sha1_);
  EXPECT_EQ(info->subject, "first commit");
  EXPECT_EQ(info->author, "Ada Lovelace");
  int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  EXPECT_GT(info->time, now - 3600);
  EXPECT_LE(info->time, now + 60);
  EXPECT_EQ(ReadFile(dir / "app.txt"), "first\n");
  EXPECT_EQ(Sh("cd " + dir.string() + " && git rev-parse HEAD"), sha1_);
  // Detached, and shallow: only the one commit was fetched.
  EXPECT_EQ(Sh("cd " + dir.string() + " && git symbolic-ref -q HEAD || echo detached"), "detached");
  EXPECT_EQ(Sh("cd " + dir.string() + " && git rev-list --count HEAD"), "1");
}

TEST_F(GitTest, FileUrlWorks) {
  std::string url = "file://" + bare_;
  auto head = ResolveBranchHead(url, "main", {}, kTimeout);
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(*head, sha2_);
  fs::path dir = root_ / "checkout";
  auto info = Checkout(url, "main", sha2_, dir.string(), {}, kTimeout);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->subject, "second commit");
  EXPECT_EQ(ReadFile(dir / "app.txt"), "second\n");
}

TEST_F(GitTest, CheckoutIntoAnExistingEmptyDirectory) {
  fs::path dir = root_ / "empty";
  fs::create_directory(dir);
  auto info = Checkout(bare_, "main", sha2_, dir.string(), {}, kTimeout);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(ReadFile(dir / "app.txt"), "second\n");
}

TEST_F(GitTest, CheckoutIntoANonEmptyDirectoryFails) {
  fs::path dir = root_ / "busy";
  fs::create_directory(dir);
  std::ofstream(dir / "keep.txt") << "mine";
  auto info = Checkout(bare_, "main", sha2_, dir.string(), {}, kTimeout);
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadFile(dir / "keep.txt"), "mine");
  EXPECT_FALSE(fs::exists(dir / ".git"));
}

TEST_F(GitTest, CheckoutOfAnUnknownCommitIsNotFoundAndLeavesNothing) {
  fs::path dir = root_ / "checkout";
  auto info = Checkout(bare_, "main", std::string(40, 'a'), dir.string(), {}, kTimeout);
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), StatusCode::kNotFound) << info.status().ToString();
  EXPECT_FALSE(fs::exists(dir));
}

TEST_F(GitTest, MalformedArgumentsAreRejectedBeforeGitRuns) {
  fs::path dir = root_ / "checkout";
  EXPECT_EQ(ResolveBranchHead("--upload-pack=touch /tmp/x", "main", {}, kTimeout).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveBranchHead("relative/path", "main", {}, kTimeout).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveBranchHead("ext::sh -c touch% /tmp/x", "main", {}, kTimeout).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveBranchHead(bare_, "--all", {}, kTimeout).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveBranchHead(bare_, "a..b", {}, kTimeout).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Checkout(bare_, "main", "HEAD", dir.string(), {}, kTimeout).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Checkout(bare_, "main", "--upload-pack=x", dir.string(), {}, kTimeout).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Checkout(bare_, "main", sha1_, "relative", {}, kTimeout).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dir));
}

TEST(RedactTest, ReplacesEveryOccurrence) {
  EXPECT_EQ(Redact("a tok b tok", "tok"), "a *** b ***");
  EXPECT_EQ(Redact("toktok", "tok"), "******");
  EXPECT_EQ(Redact("nothing here", "tok"), "nothing here");
  EXPECT_EQ(Redact("empty secret", ""), "empty secret");
  EXPECT_EQ(Redact("", "tok"), "");
}

constexpr const char* kToken = "ghp_FakeTokenForTests0123456789";

TEST(GitCommandTest, TheTokenTravelsOnlyInTheEnvironment) {
  detail::GitCommand cmd;
  {
    ScopedEnv git_dir("GIT_DIR", "/should/not/leak");
    cmd = detail::MakeGitCommand({"ls-remote", "--", "https://example.com/r.git", "refs/x"},
                                 "https://example.com/r.git", GitCredentials{kToken});
  }
  for (const auto& a : cmd.argv) {
    EXPECT_EQ(a.find(kToken), std::string::npos) << a;
    EXPECT_EQ(a.find(detail::BasicAuthHeaderValue(kToken)), std::string::npos) << a;
  }
  EXPECT_EQ(cmd.argv[0], "git");
  auto has = [&](const std::string& var) {
    return std::find(cmd.env.begin(), cmd.env.end(), var) != cmd.env.end();
  };
  // The header is one GIT_CONFIG_KEY_n / GIT_CONFIG_VALUE_n pair, counted in GIT_CONFIG_COUNT.
  int count = -1;
  int header_index = -1;
  for (const auto& e : cmd.env) {
    if (e.rfind("GIT_CONFIG_COUNT=", 0) == 0) count = std::stoi(e.substr(17));
  }
  ASSERT_GT(count, 0);
  for (int i = 0; i < count; ++i) {
    if (has("GIT_CONFIG_KEY_" + std::to_string(i) + "=http.extraHeader")) header_index = i;
  }
  ASSERT_GE(header_index, 0);
  // base64("x-access-token:ghp_FakeTokenForTests0123456789")
  EXPECT_EQ(detail::BasicAuthHeaderValue(kToken),
            "Basic eC1hY2Nlc3MtdG9rZW46Z2hwX0Zha2VUb2tlbkZvclRlc3RzMDEyMzQ1Njc4OQ==");
  EXPECT_TRUE(has("GIT_CONFIG_VALUE_" + std::to_string(header_index) +
                  "=Authorization: " + detail::BasicAuthHeaderValue(kToken)));
  EXPECT_TRUE(has("GIT_TERMINAL_PROMPT=0"));
  EXPECT_TRUE(has("GIT_CONFIG_NOSYSTEM=1"));
  EXPECT_TRUE(has("GIT_CONFIG_GLOBAL=/dev/null"));
  for (const auto& e : cmd.env) EXPECT_NE(e.rfind("GIT_DIR=", 0), 0u) << e;
  bool askpass = std::any_of(cmd.env.begin(), cmd.env.end(),
                             [](const std::string& e) { return e.rfind("GIT_ASKPASS=/", 0) == 0; });
  EXPECT_TRUE(askpass);
}

TEST(GitCommandTest, NoHeaderForOtherSchemesOrWithoutAToken) {
  for (const std::string repo :
       {"/srv/r.git", "file:///srv/r.git", "ssh://git@host/r.git", "http://example.com/r.git"}) {
    auto cmd = detail::MakeGitCommand({"ls-remote"}, repo, GitCredentials{kToken});
    for (const auto& e : cmd.env) EXPECT_EQ(e.find("extraHeader"), std::string::npos) << repo;
  }
  auto cmd = detail::MakeGitCommand({"ls-remote"}, "https://example.com/r.git", {});
  for (const auto& e : cmd.env) EXPECT_EQ(e.find("extraHeader"), std::string::npos);
}

TEST(GitCommandTest, SecretsIncludeTheTokenItsEncodingAndAUrlPassword) {
  auto secrets = detail::SecretsOf("https://bob:hunter2@example.com/r.git", GitCredentials{kToken});
  auto has = [&](const std::string& s) {
    return std::find(secrets.begin(), secrets.end(), s) != secrets.end();
  };
  EXPECT_TRUE(has(kToken));
  EXPECT_TRUE(has("hunter2"));
  EXPECT_TRUE(has(detail::BasicAuthHeaderValue(kToken)));
  EXPECT_TRUE(detail::SecretsOf("/srv/r.git", {}).empty());
}

TEST(GitSecretsTest, TheTokenNeverAppearsInAnError) {
  // Nothing listens on port 1: git fails at once.
  const std::string repo = "https://127.0.0.1:1/repo.git";
  auto head = ResolveBranchHead(repo, "main", GitCredentials{kToken}, kTimeout);
  ASSERT_FALSE(head.ok());
  EXPECT_EQ(head.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(head.status().message().find(repo), std::string::npos) << head.status().message();
  EXPECT_EQ(head.status().message().find(kToken), std::string::npos);
  EXPECT_EQ(head.status().message().find("eC1hY2Nlc3MtdG9r"), std::string::npos);

  char tmpl[] = "/tmp/bg-git-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = std::string(tmpl) + "/checkout";
  auto info = Checkout(repo, "main", std::string(40, 'b'), dir, GitCredentials{kToken}, kTimeout);
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(info.status().message().find(kToken), std::string::npos);
  EXPECT_EQ(info.status().message().find("eC1hY2Nlc3MtdG9r"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir));
  fs::remove_all(tmpl);
}

// A one-request HTTPS server (Python's ssl module) records what git sends: the token arrives as
// the documented Authorization header.
TEST(GitSecretsTest, TheTokenReachesAnHttpsServerAsABasicAuthorizationHeader) {
  // NOLINTNEXTLINE(concurrency-mt-unsafe)
  if (std::system("command -v python3 >/dev/null && command -v openssl >/dev/null") != 0) {
    GTEST_SKIP() << "needs python3 and openssl";
  }
  char tmpl[] = "/tmp/bg-git-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const fs::path dir = tmpl;
  Sh("cd " + dir.string() +
     " && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 1"
     " -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null");
  std::ofstream(dir / "server.py") << R"(
import os, socket, ssl
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain('cert.pem', 'key.pem')
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen(1)
s.settimeout(20)
open('port.tmp', 'w').write(str(s.getsockname()[1]))
os.rename('port.tmp', 'port')
c, _ = s.accept()
t = ctx.wrap_socket(c, server_side=True)
data = b''
while b'\r\n\r\n' not in data:
    d = t.recv(4096)
    if not d:
        break
    data += d
open('request.tmp', 'wb').write(data)
os.rename('request.tmp', 'request')
t.sendall(b'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
t.close()
)";
  Sh("cd " + dir.string() + " && (python3 server.py </dev/null >/dev/null 2>&1 &)");
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!fs::exists(dir / "port") && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_TRUE(fs::exists(dir / "port"));
  const std::string repo = "https://127.0.0.1:" + ReadFile(dir / "port") + "/repo.git";

  Result<std::string> head = Unavailable("not run");
  {
    ScopedEnv ca("GIT_SSL_CAINFO", (dir / "cert.pem").string());  // passed through to git
    head = ResolveBranchHead(repo, "main", GitCredentials{kToken}, kTimeout);
  }
  ASSERT_FALSE(head.ok());
  EXPECT_EQ(head.status().code(), StatusCode::kUnavailable) << head.status().ToString();
  EXPECT_EQ(head.status().message().find(kToken), std::string::npos);
  std::string request = ReadFile(dir / "request");
  EXPECT_NE(request.find("\r\nAuthorization: " + detail::BasicAuthHeaderValue(kToken) + "\r\n"),
            std::string::npos)
      << request;
  fs::remove_all(dir);
}

TEST(GitSecretsTest, APasswordInTheUrlIsRedacted) {
  const std::string repo = "https://bob:hunter2@127.0.0.1:1/repo.git";
  auto head = ResolveBranchHead(repo, "main", {}, kTimeout);
  ASSERT_FALSE(head.ok());
  EXPECT_EQ(head.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(head.status().message().find("hunter2"), std::string::npos) << head.status().message();
  EXPECT_NE(head.status().message().find("https://bob:***@127.0.0.1:1/repo.git"), std::string::npos)
      << head.status().message();
}

TEST(GitTimeoutTest, AHangingTransportIsKilledAtTheDeadline) {
  // git runs GIT_SSH_COMMAND (passed through from this process) for ssh:// URLs; this one hangs.
  ScopedEnv ssh("GIT_SSH_COMMAND", "sleep 30; :");
  auto start = std::chrono::steady_clock::now();
  auto head =
      ResolveBranchHead("ssh://git@example.invalid/repo.git", "main", {}, milliseconds(300));
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(head.ok());
  EXPECT_EQ(head.status().code(), StatusCode::kDeadlineExceeded) << head.status().ToString();
  EXPECT_LT(took, std::chrono::seconds(3));
}

}  // namespace
}  // namespace bluegreen::pipeline
