// Hostile input to the REST API (issue 7, docs/reliability.md "Hostile input"): the real
// `bluegreen serve` over real HTTP.
//
// - Malformed JSON, JSON of the wrong shape and invalid UTF-8 on every endpoint that reads a JSON
//   body: 400 bad_request with the error shape, and nothing changes.
// - A body over the limit (8 MiB): 413 too_large, and nothing changes.
// - Odd names in every path parameter ("..", "%2e%2e", "a/b", NUL, very long, ...): 400 or 404,
//   nothing changes and no file appears anywhere under the test's directory.
// - No secret in any log: a pipeline flow with a git token, a webhook secret, a repository URL
//   with a password and created API tokens, then every file of the state dir (but the secrets
//   and admin.token, where they belong) and serve's stderr are searched for each of them.
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "pipeline_harness.h"

namespace bluegreen::serve_it {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;

std::string ErrorField(const ApiAnswer& a, const char* key) {
  if (!a.json.is_object() || !a.json.contains("error") || !a.json["error"].is_object()) return "";
  return a.json["error"].value(key, "");
}

// `a` is the API's error answer with `status` and `code` and a message.
void ExpectError(const ApiAnswer& a, int status, const std::string& code, const std::string& what) {
  EXPECT_EQ(a.status, status) << what << ": " << a.body;
  EXPECT_EQ(ErrorField(a, "code"), code) << what << ": " << a.body;
  EXPECT_FALSE(ErrorField(a, "message").empty()) << what << ": " << a.body;
}

// Every regular file under `dir` (relative path -> size), skipping `skip` (relative paths of
// directories or files).
std::map<std::string, uintmax_t> Files(const std::string& dir,
                                       const std::set<std::string>& skip = {}) {
  std::map<std::string, uintmax_t> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    const std::string rel = fs::relative(it->path(), dir).string();
    if (skip.contains(rel)) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) out[rel] = it->file_size();
  }
  return out;
}

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class HostileApiTest : public PipelineTest {
 protected:
  // Everything a call on stack `s` could change, as the API shows it, plus the secrets on disk.
  Json Snapshot(const std::string& s) {
    Json snap;
    snap["stacks"] = Get("/api/v1/stacks");
    snap["status"] = WithoutHealth(Get("/api/v1/stacks/" + s));
    snap["versions"] = Get("/api/v1/stacks/" + s + "/versions");
    snap["events"] = Get("/api/v1/stacks/" + s + "/events");
    snap["executions"] = Get("/api/v1/stacks/" + s + "/executions");
    Json tokens = Get("/api/v1/tokens");
    for (Json& t : tokens["tokens"]) t.erase("last_used_at");
    snap["tokens"] = tokens;
    Json secrets = Json::object();
    for (const auto& [path, size] : Files(state_dir_ + "/secrets")) secrets[path] = size;
    snap["secrets"] = secrets;
    return snap;
  }

  // Stack "demo" (one task) with version v1 registered and nothing deployed.
  void MakeDemo() {
    BG_ASSERT_OK_AND_ASSIGN(StackFile f, NewStackFile("demo", 1));
    stacks_.insert(f.name);
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer put, Api("PUT", "/api/v1/stacks/demo", f.ToYaml()));
    ASSERT_EQ(put.status, 201) << put.body;
    BG_ASSERT_OK_AND_ASSIGN(std::string v1, MakeVersion("v1"));
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer reg,
                            Api("POST", "/api/v1/stacks/demo/versions",
                                Json{{"version", "v1"}, {"artifact_dir", v1}}.dump()));
    ASSERT_EQ(reg.status, 201) << reg.body;
  }
};

// The endpoints that read a JSON body.
const std::vector<std::string> kJsonEndpoints = {
    "/api/v1/stacks/demo/versions",
    "/api/v1/stacks/demo/deploy",
    "/api/v1/stacks/demo/release",
    "/api/v1/stacks/demo/approve",
    "/api/v1/stacks/demo/reject",
    "/api/v1/stacks/demo/rollback",
    "/api/v1/tokens",
};

TEST_F(HostileApiTest, MalformedJsonIsRefusedOnEveryJsonEndpoint) {
  MakeDemo();
  if (HasFatalFailure()) return;
  const Json before = Snapshot("demo");

  const std::vector<std::string> bodies = {
      "{",
      "{\"version\": ",
      "{\"version\": \"v1\",}",
      "{'version': 'v1'}",
      "{\"version\": \"v1\"} {\"version\": \"v2\"}",
      "{\"comment\": \"\xff\xfe\"}",
      "{\"name\": \"a\xc0\xaf\", \"role\": \"admin\"}",
      "{\"version\": \"v1\"}\0garbage"s,
      "null",
      "[]",
      "\"v1\"",
      "42",
      std::string(100000, '[') + std::string(100000, ']'),
      std::string(100000, '['),
  };
  for (const std::string& path : kJsonEndpoints) {
    for (const std::string& body : bodies) {
      const std::string what =
          "POST " + path + " with " +
          Json(body.substr(0, 40)).dump(-1, ' ', false, Json::error_handler_t::replace);
      BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Api("POST", path, body));
      ExpectError(a, 400, "bad_request", what);
    }
  }

  // Valid JSON, wrong shape: 400 too, with the field named.
  struct Shape {
    std::string path;
    Json body;
    std::string mentions;
  };
  const std::vector<Shape> shapes = {
      {"/api/v1/stacks/demo/versions", {{"version", 1}, {"image", "x"}}, "must be strings"},
      {"/api/v1/stacks/demo/versions", {{"version", "v2"}, {"image", {"x"}}}, "must be strings"},
      {"/api/v1/stacks/demo/versions", {{"version", "../../x"}, {"image", "x"}}, "bad version"},
      {"/api/v1/stacks/demo/versions",
       {{"version", ".."}, {"artifact_dir", "/tmp"}},
       "bad version"},
      {"/api/v1/stacks/demo/versions",
       {{"version", "v2"}, {"artifact_dir", "../../etc"}},
       "artifact_dir"},
      {"/api/v1/stacks/demo/versions", {{"version", "v2"}}, "exactly one"},
      {"/api/v1/stacks/demo/deploy", {{"version", nullptr}}, "version"},
      {"/api/v1/stacks/demo/deploy", {{"version", {{"a", 1}}}}, "version"},
      {"/api/v1/stacks/demo/approve", {{"comment", 5}}, "comment"},
      {"/api/v1/stacks/demo/reject", {{"comment", std::string(4097, 'c')}}, "4096"},
      {"/api/v1/tokens", {{"name", "../x"}, {"role", "viewer"}}, "bad token name"},
      {"/api/v1/tokens", {{"name", "x"}, {"role", "root"}}, "bad role"},
      {"/api/v1/tokens", {{"name", std::string(65, 'a')}, {"role", "viewer"}}, "bad token name"},
      {"/api/v1/tokens", {{"name", "a\nb"}, {"role", "viewer"}}, "bad token name"},
  };
  for (const Shape& s : shapes) {
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Api("POST", s.path, s.body.dump()));
    ExpectError(a, 400, "bad_request", "POST " + s.path + " " + s.body.dump());
    EXPECT_NE(ErrorField(a, "message").find(s.mentions), std::string::npos)
        << s.path << " " << s.body.dump() << ": " << a.body;
  }

  const Json after = Snapshot("demo");
  EXPECT_EQ(after, before) << "before:\n" << before.dump(1) << "\nafter:\n" << after.dump(1);
}

TEST_F(HostileApiTest, BodyOverTheLimitIs413AndChangesNothing) {
  MakeDemo();
  if (HasFatalFailure()) return;
  const Json before = Snapshot("demo");
  // serve answers as soon as it knows the body is too large and closes, so the calls go over a
  // raw connection that sends what it can and then reads the answer.
  auto send_and_read = [&](const std::string& method, const std::string& path,
                           const std::string& framing, const std::string& body) {
    auto conn = proxy_test::HttpConnection::Connect(api_port_);
    EXPECT_TRUE(conn.ok()) << conn.status().ToString();
    if (!conn.ok()) return ApiAnswer{};
    (void)(*conn)->Send(method + " " + path + " HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " +
                            token_ + "\r\n" + framing + "\r\n" + body,
                        10s);
    auto r = (*conn)->ReadResponse(proxy_test::ReadOptions{.timeout = 10s});
    EXPECT_TRUE(r.ok()) << method << " " << path << ": " << r.status().ToString();
    if (!r.ok()) return ApiAnswer{};
    ApiAnswer a;
    a.status = r->status;
    a.body = r->body;
    a.json = Json::parse(a.body, nullptr, false);
    return a;
  };
  const size_t over = (8u << 20) + 1;
  // A chunked body of `over` bytes in 64 KiB chunks.
  std::string chunked;
  for (size_t left = over; left > 0;) {
    const size_t n = std::min<size_t>(left, 64 << 10);
    chunked += fmt::format("{:x}\r\n", n) + std::string(n, 'x') + "\r\n";
    left -= n;
  }
  chunked += "0\r\n\r\n";
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"POST", "/api/v1/stacks/demo/versions"},
           {"POST", "/api/v1/stacks/demo/approve"},
           {"POST", "/api/v1/tokens"},
           {"PUT", "/api/v1/stacks/demo"},
           {"PUT", "/api/v1/stacks/demo/secrets/git_token"},
       }) {
    // Announced by Content-Length: refused from the head.
    ExpectError(send_and_read(method, path, "Content-Length: " + std::to_string(over) + "\r\n",
                              "{\"comment\": \"xxxx"),
                413, "too_large", method + " " + path + " with Content-Length");
    // Chunked: refused once the body passes the limit.
    ExpectError(send_and_read(method, path, "Transfer-Encoding: chunked\r\n", chunked), 413,
                "too_large", method + " " + path + " chunked");
  }
  // Under the limit but over what a field allows: 400.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer secret, Api("PUT", "/api/v1/stacks/demo/secrets/git_token",
                                                std::string(4097, 's')));
  ExpectError(secret, 400, "bad_request", "a 4097-byte secret");
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer ok, Api("GET", "/api/v1/healthz"));
  EXPECT_EQ(ok.status, 200) << "serve is not well after the big bodies: " << ok.body;
  const Json after = Snapshot("demo");
  EXPECT_EQ(after, before) << "before:\n" << before.dump(1) << "\nafter:\n" << after.dump(1);
}

TEST_F(HostileApiTest, OddNamesInPathsAreRefusedAndTouchNoFile) {
  MakeDemo();
  if (HasFatalFailure()) return;
  const Json before = Snapshot("demo");
  // Logs grow and the proxy rewrites its files: everything else under the test dir must not move.
  const std::set<std::string> moving = {"state/logs", "state/proxy", "state/bluegreen.db",
                                        "state/bluegreen.db-wal", "state/bluegreen.db-shm"};
  const std::map<std::string, uintmax_t> files_before = Files(root_, moving);

  const std::vector<std::string> names = {
      "..",     "%2e%2e", "%2E%2E%2Fx",
      "..%2fx", "a%2fb",  "%00",
      "a%00b",  ".",      "~",
      "x\\..",  "DEMO",   std::string(300, 'a'),
      "%2fetc", "%20",    "demo%0d%0aX-A:%20b",
  };
  const std::vector<std::string> slashed = {"../x", "a/b", "../../etc/passwd", "./demo", "x/.."};
  for (const std::string& n : names) {
    const std::vector<std::pair<std::string, std::string>> calls = {
        {"GET", "/api/v1/stacks/" + n},
        {"PUT", "/api/v1/stacks/" + n},
        {"DELETE", "/api/v1/stacks/" + n},
        {"POST", "/api/v1/stacks/" + n + "/versions"},
        {"POST", "/api/v1/stacks/" + n + "/approve"},
        {"GET", "/api/v1/stacks/" + n + "/executions"},
        {"PUT", "/api/v1/stacks/" + n + "/secrets/git_token"},
        {"PUT", "/api/v1/stacks/demo/secrets/" + n},
        {"GET", "/api/v1/stacks/demo/executions/" + n},
        {"GET", "/api/v1/stacks/demo/executions/" + n + "/log"},
        {"DELETE", "/api/v1/tokens/" + n},
        {"POST", "/api/v1/stacks/" + n + "/webhook"},
    };
    for (const auto& [method, path] : calls) {
      const std::string body = method == "GET" || method == "DELETE" ? "" : "x";
      BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Api(method, path, body));
      EXPECT_TRUE(a.status == 400 || a.status == 404)
          << method << " " << path << ": " << a.status << " " << a.body;
      EXPECT_TRUE(a.json.is_object()) << method << " " << path << ": " << a.body;
    }
  }
  for (const std::string& n : slashed) {
    for (const std::string& path :
         {"/api/v1/stacks/" + n + "/secrets/git_token", "/api/v1/stacks/demo/secrets/" + n,
          "/api/v1/tokens/" + n, "/api/v1/stacks/" + n}) {
      BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Api("PUT", path, "x"));
      EXPECT_TRUE(a.status == 400 || a.status == 404)
          << "PUT " << path << ": " << a.status << " " << a.body;
    }
  }
  // A raw NUL in the target is a bad request line.
  BG_ASSERT_OK_AND_ASSIGN(auto conn, proxy_test::HttpConnection::Connect(api_port_));
  (void)conn->Send(
      "PUT /api/v1/stacks/demo/secrets/a\0b HTTP/1.1\r\nHost: a\r\n"
      "Authorization: Bearer "s +
      token_ + "\r\nContent-Length: 1\r\n\r\nx");
  auto raw = conn->ReadResponse(proxy_test::ReadOptions{.timeout = 5s});
  if (raw.ok()) {
    EXPECT_EQ(raw->status, 400) << *raw;
  }

  const Json after = Snapshot("demo");
  EXPECT_EQ(after, before) << "before:\n" << before.dump(1) << "\nafter:\n" << after.dump(1);
  EXPECT_EQ(Files(root_, moving), files_before) << "a file appeared or changed";
  std::error_code ec;
  EXPECT_FALSE(fs::exists(state_dir_ + "/x", ec));
  EXPECT_FALSE(fs::exists(state_dir_ + "/secrets/x", ec));
  EXPECT_FALSE(fs::exists(root_ + "/x", ec));
}

TEST_F(HostileApiTest, NoSecretInAnyLogLine) {
  // API tokens of each role, used below.
  std::map<std::string, std::string> tokens;
  for (const char* role : {"viewer", "approver"}) {
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer t,
                            Api("POST", "/api/v1/tokens",
                                Json{{"name", std::string("t-") + role}, {"role", role}}.dump()));
    ASSERT_EQ(t.status, 201) << t.body;
    tokens[role] = t.json.value("token", "");
  }
  const std::string git_token = "ghp_GitTokenThatMustNotLeak0123456789";
  const std::string hook_secret = "whsec-HookSecretThatMustNotLeak";
  const std::string url_password = "UrlPasswordThatMustNotLeak";

  // A pipeline that runs: first release by polling, the next by a signed webhook.
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack("leaky"));
  BG_ASSERT_OK(FirstRun(f, {"blue"}).status());
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"git_token", git_token}, {"webhook_secret", hook_secret}}) {
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer s, Api("PUT", "/api/v1/stacks/leaky/secrets/" + key, value));
    ASSERT_EQ(s.status, 200) << s.body;
    EXPECT_EQ(s.body.find(value), std::string::npos) << s.body;
  }
  BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitApp({"green"}));
  const std::string push =
      Json{{"ref", "refs/heads/main"}, {"after", sha}, {"pusher", {{"name", "x"}}}}.dump();
  auto hook = [&](const std::string& signature) {
    HttpClientRequest req;
    req.method = "POST";
    req.target = "/api/v1/stacks/leaky/webhook";
    req.body = push;
    req.headers.emplace_back("X-Hub-Signature-256", signature);
    auto r = HttpCall(ApiAddress(), req, 10s);
    return r.ok() ? r->status : -1;
  };
  EXPECT_EQ(hook("sha256=" + std::string(64, '0')), 401);
  const int signed_status = hook("sha256=" + HmacSha256Hex(hook_secret, push));
  EXPECT_TRUE(signed_status == 202 || signed_status == 200) << signed_status;
  BG_ASSERT_OK_AND_ASSIGN(Json e, WaitExecutionOf(f.name, sha));
  const int64_t id = e.value("id", int64_t{0});
  BG_ASSERT_OK(WaitExecution(
                   f.name, id,
                   [](const Json& x) { return x.value("status", "") == "WaitingForApproval"; },
                   kExecTimeout, "to wait for approval")
                   .status());
  BG_ASSERT_OK_AND_ASSIGN(
      ApiAnswer approve, Api("POST", "/api/v1/stacks/leaky/approve", Json{{"comment", "ok"}}.dump(),
                             tokens["approver"]));
  ASSERT_EQ(approve.status, 200) << approve.body;
  BG_ASSERT_OK(WaitExecutionStatus(f.name, id, "Succeeded").status());
  BG_ASSERT_OK_AND_ASSIGN(
      ApiAnswer viewed, Api("GET", "/api/v1/stacks/leaky/executions/" + std::to_string(id) + "/log",
                            "", tokens["viewer"]));
  EXPECT_EQ(viewed.status, 200) << viewed.body;

  // A repository over https that cannot be reached, with the token and a password in its URL:
  // every poll fails and logs why.
  BG_ASSERT_OK_AND_ASSIGN(uint16_t closed, PickFreePort());
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack remote, NewPipelineStack("remote"));
  remote.repo = "https://user:" + url_password + "@127.0.0.1:" + std::to_string(closed) + "/r.git";
  BG_ASSERT_OK(PutStack(remote));
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer rs,
                          Api("PUT", "/api/v1/stacks/remote/secrets/git_token", git_token));
  ASSERT_EQ(rs.status, 200) << rs.body;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer release, Api("POST", "/api/v1/stacks/remote/release", "{}"));
  const int64_t failed = release.json.is_object() && release.json.contains("execution")
                             ? release.json["execution"].value("id", int64_t{0})
                             : 0;
  if (failed > 0) {
    BG_ASSERT_OK(WaitExecution(
                     remote.name, failed,
                     [](const Json& x) { return Terminal(x.value("status", "")); }, kExecTimeout,
                     "to fail")
                     .status());
  }
  // Wait for the poller to have logged a failure of the remote repository.
  const auto deadline = Clock::now() + 30s;
  while (serve_->Stderr().find("remote") == std::string::npos && Clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);  // serve logs to stderr; there is nothing to wait on
  }

  // What must never be written anywhere but the secrets and admin.token.
  std::map<std::string, std::string> needles = {
      {"admin token", token_},
      {"viewer token", tokens["viewer"]},
      {"approver token", tokens["approver"]},
      {"git token", git_token},
      {"webhook secret", hook_secret},
      {"URL password", url_password},
  };
  std::map<std::string, std::string> haystacks;
  haystacks["serve stderr"] = serve_->Stderr();
  haystacks["serve stdout"] = serve_->Stdout();
  // The store keeps the stack file as written, password in its repository URL included (docs
  // recommend the git_token secret instead): it is state, not a log, and is not searched.
  const std::map<std::string, uintmax_t> files =
      Files(state_dir_,
            {"secrets", "admin.token", "bluegreen.db", "bluegreen.db-wal", "bluegreen.db-shm"});
  EXPECT_TRUE(std::any_of(files.begin(), files.end(), [](const auto& kv) {
    return kv.first.rfind("logs/", 0) == 0;
  })) << "no log file to search";
  for (const auto& [path, size] : files) haystacks[path] = Slurp(state_dir_ + "/" + path);
  for (const char* path : {"status", "executions", "events"}) {
    for (const char* stack : {"leaky", "remote"}) {
      auto r = Api("GET", "/api/v1/stacks/" + std::string(stack) +
                              (std::string(path) == "status" ? "" : "/" + std::string(path)));
      if (r.ok()) haystacks["GET " + std::string(stack) + " " + path] = r->body;
    }
  }
  for (const auto& [what, needle] : needles) {
    ASSERT_GE(needle.size(), 16u) << what;
    for (const auto& [where, text] : haystacks) {
      EXPECT_EQ(text.find(needle), std::string::npos) << "the " << what << " is in " << where;
    }
  }
}

}  // namespace
}  // namespace bluegreen::serve_it
