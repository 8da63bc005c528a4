// Integration tests of access to the REST API (issue 5, docs/api.md "Access: tokens and roles"):
// the real `bluegreen serve` and the real CLI over real HTTP.
//
// - Every endpoint of docs/api.md (the routes of src/serve/api.cc) refuses no token, a wrong token
//   and a token of another scheme with 401, and answers each role as the role table says: 403 for
//   a role too low, anything else (the call reached its handler) for a role high enough.
// - A refused call changes nothing: the stack, its versions, events, executions, secrets and the
//   tokens are the same after every mutating call of a viewer and every admin call of an approver.
// - whoami for each role; the token endpoints (create, list, revoke) with their errors; tokens
//   survive a restart of serve; a revoked token is refused at once.
// - The webhook still authenticates by its signature only.
// - The name of the approver's token is what executions and events record.
// - The CLI's `token` commands, and its exit code and hint for a 403.
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "pipeline_harness.h"

namespace bluegreen::serve_it {
namespace {

// One endpoint of the API, with a request that changes nothing when it is allowed (a stack that
// does not exist, a bad body, a waiting execution there is not).
struct Endpoint {
  std::string method;
  std::string path;
  std::string body;
  std::string role;  // the lowest role allowed

  std::string Describe() const { return method + " " + path; }
};

int Rank(const std::string& role) {
  if (role == "viewer") return 0;
  if (role == "approver") return 1;
  return 2;
}

// Every endpoint that needs a token, on stack `s`.
std::vector<Endpoint> Endpoints(const std::string& s) {
  const std::string st = "/api/v1/stacks/" + s;
  return {
      {"GET", "/api/v1/whoami", "", "viewer"},
      {"GET", "/api/v1/stacks", "", "viewer"},
      {"GET", st, "", "viewer"},
      {"PUT", st, "name: " + s + "\n", "admin"},
      {"DELETE", st, "", "admin"},
      {"GET", st + "/versions", "", "viewer"},
      {"POST", st + "/versions", "{}", "admin"},
      {"GET", st + "/events", "", "viewer"},
      {"POST", st + "/deploy", "{}", "admin"},
      {"GET", st + "/executions", "", "viewer"},
      {"GET", st + "/executions/1", "", "viewer"},
      {"GET", st + "/executions/latest/log", "", "viewer"},
      {"POST", st + "/release", "{}", "approver"},
      {"POST", st + "/approve", "{}", "approver"},
      {"POST", st + "/reject", "{}", "approver"},
      {"POST", st + "/rollback", "{}", "approver"},
      {"PUT", st + "/secrets/git_token", "", "admin"},
      {"GET", "/api/v1/tokens", "", "admin"},
      {"POST", "/api/v1/tokens", "{}", "admin"},
      {"DELETE", "/api/v1/tokens/nope", "", "admin"},
  };
}

// `key` ("code", "message") of an error answer {"error": {"code", "message"}}, or "".
std::string ErrorField(const ApiAnswer& a, const char* key) {
  if (!a.json.is_object() || !a.json.contains("error") || !a.json["error"].is_object()) return "";
  return a.json["error"].value(key, "");
}
std::string ErrorCode(const ApiAnswer& a) { return ErrorField(a, "code"); }
std::string ErrorMessage(const ApiAnswer& a) { return ErrorField(a, "message"); }

class AuthTest : public PipelineTest {
 protected:
  void SetUp() override {
    PipelineTest::SetUp();
    if (HasFatalFailure()) return;
    for (const char* role : {"viewer", "approver", "admin"}) {
      BG_ASSERT_OK_AND_ASSIGN(tokens_[role], CreateToken(std::string("t-") + role, role));
    }
  }

  // POST /api/v1/tokens with the bootstrap admin token (or `as`); the new token.
  Result<std::string> CreateToken(const std::string& name, const std::string& role,
                                  std::optional<std::string> as = std::nullopt) {
    auto r = Api("POST", "/api/v1/tokens", Json{{"name", name}, {"role", role}}.dump(), as);
    if (!r.ok()) return r.status();
    if (r->status != 201 || !r->json.is_object() || !r->json.value("token", Json()).is_string()) {
      return Internal("POST /api/v1/tokens: " + std::to_string(r->status) + " " + r->body);
    }
    return r->json["token"].get<std::string>();
  }

  // Token names and roles (not their last use, which a refused call does update).
  std::set<std::string> TokenNames() {
    std::set<std::string> out;
    for (const Json& t : Get("/api/v1/tokens").value("tokens", Json::array())) {
      out.insert(t.value("name", "?") + ":" + t.value("role", "?") + ":" +
                 t.value("created_by", "?"));
    }
    return out;
  }

  // Everything a mutating call on stack `s` could change, as seen through the API and the state
  // dir.
  Json Snapshot(const std::string& s) {
    Json snap;
    snap["status"] = WithoutHealth(Get("/api/v1/stacks/" + s));
    snap["versions"] = Get("/api/v1/stacks/" + s + "/versions");
    snap["events"] = Get("/api/v1/stacks/" + s + "/events");
    snap["executions"] = Get("/api/v1/stacks/" + s + "/executions");
    std::error_code ec;
    snap["secrets"] = std::filesystem::exists(state_dir_ + "/secrets/" + s, ec);
    const std::set<std::string> names = TokenNames();
    snap["tokens"] = Json(std::vector<std::string>(names.begin(), names.end()));
    return snap;
  }

  // `a` is a 403 forbidden that names the token, its role and the role needed.
  static void ExpectForbidden(const ApiAnswer& a, const std::string& role,
                              const std::string& what) {
    EXPECT_EQ(a.status, 403) << what << ": " << a.body;
    EXPECT_EQ(ErrorCode(a), "forbidden") << what << ": " << a.body;
    const std::string m = ErrorMessage(a);
    EXPECT_NE(m.find("token \"t-" + role + "\" has role " + role), std::string::npos)
        << what << ": " << m;
    EXPECT_NE(m.find("needs role "), std::string::npos) << what << ": " << m;
  }

  std::map<std::string, std::string> tokens_;  // role -> the token of "t-ROLE"
};

const std::string kWrongToken = "bg_" + std::string(64, '0');

// ---------------------------------------------------------------------------------------------

TEST_F(AuthTest, NoTokenOrAWrongOneIs401OnEveryEndpoint) {
  for (const Endpoint& e : Endpoints("demo")) {
    for (const std::string& token : {std::string(), kWrongToken, std::string("t-admin")}) {
      BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Api(e.method, e.path, e.body, token));
      EXPECT_EQ(a.status, 401) << e.Describe() << " with token '" << token << "': " << a.body;
      EXPECT_EQ(ErrorCode(a), "unauthenticated") << e.Describe() << ": " << a.body;
      EXPECT_FALSE(ErrorMessage(a).empty()) << e.Describe() << ": " << a.body;
    }
    // Another scheme than Bearer, with the right token.
    HttpClientRequest req;
    req.method = e.method;
    req.target = e.path;
    req.body = e.body;
    req.headers.emplace_back("Authorization", "Basic " + token_);
    auto r = HttpCall(ApiAddress(), req, 10s);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 401) << e.Describe() << " with Basic: " << r->body;
  }
  // The message says how to send a token and never echoes the one sent.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer none, Api("GET", "/api/v1/stacks", "", ""));
  EXPECT_NE(ErrorMessage(none).find("Authorization: Bearer TOKEN"), std::string::npos) << none.body;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer wrong, Api("GET", "/api/v1/stacks", "", kWrongToken));
  EXPECT_EQ(wrong.body.find(kWrongToken), std::string::npos) << wrong.body;
  // healthz needs none.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer health, Api("GET", "/api/v1/healthz", "", ""));
  EXPECT_EQ(health.status, 200) << health.body;
  // The bootstrap token, with the scheme in another case, is accepted.
  HttpClientRequest req;
  req.target = "/api/v1/whoami";
  req.headers.emplace_back("Authorization", "bearer " + token_);
  auto r = HttpCall(ApiAddress(), req, 10s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST_F(AuthTest, EachRoleGetsWhatTheRoleTableSays) {
  // On a stack that does not exist, an allowed call reaches its handler and fails there (404,
  // 400, 409) or answers 200: anything but 401 and 403.
  for (const Endpoint& e : Endpoints("nostack")) {
    for (const std::string role : {"viewer", "approver", "admin"}) {
      BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Api(e.method, e.path, e.body, tokens_[role]));
      if (Rank(role) < Rank(e.role)) {
        ExpectForbidden(a, role, role + " " + e.Describe());
        const std::string needed = e.role == "approver" ? "role approver or admin" : "role admin";
        EXPECT_NE(ErrorMessage(a).find("needs " + needed), std::string::npos)
            << role << " " << e.Describe() << ": " << a.body;
      } else {
        EXPECT_NE(a.status, 401) << role << " " << e.Describe() << ": " << a.body;
        EXPECT_NE(a.status, 403) << role << " " << e.Describe() << ": " << a.body;
        EXPECT_TRUE(a.json.is_object() || e.path.ends_with("/log"))
            << role << " " << e.Describe() << ": " << a.body;
      }
    }
    // The bootstrap admin token may do everything.
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Api(e.method, e.path, e.body));
    EXPECT_NE(a.status, 401) << "admin.token " << e.Describe() << ": " << a.body;
    EXPECT_NE(a.status, 403) << "admin.token " << e.Describe() << ": " << a.body;
  }
  // The approve message of the issue, word for word.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a,
                          Api("POST", "/api/v1/stacks/demo/approve", "{}", tokens_["viewer"]));
  EXPECT_EQ(ErrorMessage(a),
            "token \"t-viewer\" has role viewer; approve needs role approver or "
            "admin");
  // A path that is not listed is admin-only: a viewer cannot probe with other methods.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer probe,
                          Api("PATCH", "/api/v1/stacks/demo", "{}", tokens_["viewer"]));
  EXPECT_EQ(probe.status, 403) << probe.body;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer unknown, Api("GET", "/api/v1/nothing", "", tokens_["viewer"]));
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  for (const char* path : {"/api/v1/whoami/t-viewer", "/api/v1/tokens/t-viewer/x"}) {
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer extra, Api("DELETE", path));
    EXPECT_EQ(extra.status, 404) << path << ": " << extra.body;
  }
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer still, Api("GET", "/api/v1/whoami", "", tokens_["viewer"]));
  EXPECT_EQ(still.status, 200) << "a DELETE of another path revoked the token: " << still.body;
}

TEST_F(AuthTest, RefusedCallsChangeNothing) {
  BG_ASSERT_OK_AND_ASSIGN(StackFile f, NewStackFile("demo", 1));
  stacks_.insert(f.name);
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer put, Api("PUT", "/api/v1/stacks/demo", f.ToYaml()));
  ASSERT_EQ(put.status, 201) << put.body;
  BG_ASSERT_OK_AND_ASSIGN(std::string v1, MakeVersion("v1"));
  BG_ASSERT_OK_AND_ASSIGN(std::string v2, MakeVersion("v2"));
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer reg, Api("POST", "/api/v1/stacks/demo/versions",
                                             Json{{"version", "v1"}, {"artifact_dir", v1}}.dump()));
  ASSERT_EQ(reg.status, 201) << reg.body;
  const Json before = Snapshot("demo");

  StackFile changed = f;
  changed.desired_count = 3;
  const std::vector<Endpoint> admin_calls = {
      {"PUT", "/api/v1/stacks/demo", changed.ToYaml(), "admin"},
      {"DELETE", "/api/v1/stacks/demo?purge=true", "", "admin"},
      {"POST", "/api/v1/stacks/demo/versions", Json{{"version", "v2"}, {"artifact_dir", v2}}.dump(),
       "admin"},
      {"POST", "/api/v1/stacks/demo/deploy", Json{{"version", "v1"}}.dump(), "admin"},
      {"PUT", "/api/v1/stacks/demo/secrets/git_token", "s3cret", "admin"},
      {"PUT", "/api/v1/stacks/demo/secrets/webhook_secret", "s3cret", "admin"},
      {"POST", "/api/v1/tokens", Json{{"name", "mine"}, {"role", "admin"}}.dump(), "admin"},
      {"DELETE", "/api/v1/tokens/t-admin", "", "admin"},
      {"DELETE", "/api/v1/tokens/t-viewer", "", "admin"},
      {"DELETE", "/api/v1/tokens/t-approver", "", "admin"},
  };
  const std::vector<Endpoint> approver_calls = {
      {"POST", "/api/v1/stacks/demo/release", "{}", "approver"},
      {"POST", "/api/v1/stacks/demo/approve", Json{{"comment", "ok"}}.dump(), "approver"},
      {"POST", "/api/v1/stacks/demo/reject", Json{{"comment", "no"}}.dump(), "approver"},
      {"POST", "/api/v1/stacks/demo/rollback", "{}", "approver"},
  };
  for (const Endpoint& e : admin_calls) {
    for (const std::string role : {"viewer", "approver"}) {
      BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Api(e.method, e.path, e.body, tokens_[role]));
      ExpectForbidden(a, role, role + " " + e.Describe());
    }
  }
  for (const Endpoint& e : approver_calls) {
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Api(e.method, e.path, e.body, tokens_["viewer"]));
    ExpectForbidden(a, "viewer", "viewer " + e.Describe());
  }
  // A body that would be refused anyway is not even read: the role comes first.
  BG_ASSERT_OK_AND_ASSIGN(
      ApiAnswer bad, Api("POST", "/api/v1/stacks/demo/deploy", "{not json", tokens_["viewer"]));
  ExpectForbidden(bad, "viewer", "viewer deploy with a malformed body");

  const Json after = Snapshot("demo");
  EXPECT_EQ(after, before) << "before:\n" << before.dump(1) << "\nafter:\n" << after.dump(1);
  // The tokens still work.
  for (const std::string role : {"viewer", "approver", "admin"}) {
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer w, Api("GET", "/api/v1/whoami", "", tokens_[role]));
    EXPECT_EQ(w.status, 200) << role << ": " << w.body;
  }
}

TEST_F(AuthTest, WhoAmIForEachRole) {
  const std::map<std::string, Json> want = {
      {"viewer", {{"read", true}, {"approve", false}, {"admin", false}}},
      {"approver", {{"read", true}, {"approve", true}, {"admin", false}}},
      {"admin", {{"read", true}, {"approve", true}, {"admin", true}}},
  };
  for (const auto& [role, can] : want) {
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Api("GET", "/api/v1/whoami", "", tokens_[role]));
    ASSERT_EQ(a.status, 200) << a.body;
    EXPECT_EQ(a.json, (Json{{"name", "t-" + role}, {"role", role}, {"can", can}})) << a.body;
  }
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer boot, Api("GET", "/api/v1/whoami"));
  EXPECT_EQ(boot.json, (Json{{"name", "admin"}, {"role", "admin"}, {"can", want.at("admin")}}))
      << boot.body;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer post, Api("POST", "/api/v1/whoami", "{}"));
  EXPECT_EQ(post.status, 405) << post.body;
}

TEST_F(AuthTest, TokenCreateListRevoke) {
  // Create: the token is shown once, in the answer.
  BG_ASSERT_OK_AND_ASSIGN(
      ApiAnswer c,
      Api("POST", "/api/v1/tokens", Json{{"name", "ci.deploy_1"}, {"role", "approver"}}.dump()));
  ASSERT_EQ(c.status, 201) << c.body;
  EXPECT_EQ(Keys(c.json), (std::set<std::string>{"name", "role", "token", "created_at"})) << c.body;
  EXPECT_EQ(c.json.value("name", ""), "ci.deploy_1");
  EXPECT_EQ(c.json.value("role", ""), "approver");
  const std::string token = c.json.value("token", "");
  EXPECT_TRUE(std::regex_match(token, std::regex("bg_[0-9a-f]{64}"))) << token;
  const int64_t created_at = c.json.value("created_at", int64_t{0});
  EXPECT_GT(created_at, 1700000000) << c.body;

  // The token works, with its role.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer w, Api("GET", "/api/v1/whoami", "", token));
  EXPECT_EQ(w.json.value("name", ""), "ci.deploy_1") << w.body;
  EXPECT_EQ(w.json.value("role", ""), "approver") << w.body;

  // A token made by a created admin token records that one as its creator.
  BG_ASSERT_OK_AND_ASSIGN(std::string by_admin, CreateToken("made-by", "viewer", tokens_["admin"]));

  // List: sorted by name, never a token or a hash; the last use is recorded.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer l, Api("GET", "/api/v1/tokens"));
  ASSERT_EQ(l.status, 200) << l.body;
  ASSERT_EQ(Keys(l.json), (std::set<std::string>{"tokens"})) << l.body;
  std::vector<std::string> names;
  for (const Json& t : l.json["tokens"]) {
    names.push_back(t.value("name", ""));
    EXPECT_EQ(Keys(t),
              (std::set<std::string>{"name", "role", "created_at", "created_by", "last_used_at"}))
        << t.dump();
  }
  EXPECT_EQ(names, (std::vector<std::string>{"ci.deploy_1", "made-by", "t-admin", "t-approver",
                                             "t-viewer"}));
  EXPECT_EQ(l.body.find(token), std::string::npos) << "a token in the list: " << l.body;
  EXPECT_EQ(l.body.find(token.substr(3)), std::string::npos) << l.body;
  const Json ci = FindNamed(l.json["tokens"], "name", "ci.deploy_1");
  EXPECT_EQ(ci.value("created_by", ""), "admin");
  EXPECT_EQ(ci.value("created_at", int64_t{0}), created_at);
  EXPECT_TRUE(ci.value("last_used_at", Json()).is_number_integer()) << ci.dump();
  EXPECT_EQ(FindNamed(l.json["tokens"], "name", "made-by").value("created_by", ""), "t-admin");
  EXPECT_TRUE(
      FindNamed(l.json["tokens"], "name", "made-by").value("last_used_at", Json(0)).is_null())
      << l.body;

  // Errors: a name in use (or the bootstrap token's), a bad name, a bad role.
  struct Bad {
    Json body;
    int status;
  };
  const std::vector<Bad> bad = {
      {{{"name", "ci.deploy_1"}, {"role", "viewer"}}, 409},
      {{{"name", "admin"}, {"role", "viewer"}}, 409},
      {{{"name", "ci"}, {"role", "root"}}, 400},
      {{{"name", "ci"}, {"role", "Viewer"}}, 400},
      {{{"name", "ci"}}, 400},
      {{{"name", "Ci"}, {"role", "viewer"}}, 400},
      {{{"name", "-ci"}, {"role", "viewer"}}, 400},
      {{{"name", "c i"}, {"role", "viewer"}}, 400},
      {{{"name", "ci/x"}, {"role", "viewer"}}, 400},
      {{{"name", ""}, {"role", "viewer"}}, 400},
      {{{"name", std::string(65, 'a')}, {"role", "viewer"}}, 400},
      {{{"name", 7}, {"role", "viewer"}}, 400},
      {{{"role", "viewer"}}, 400},
  };
  for (const Bad& b : bad) {
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Api("POST", "/api/v1/tokens", b.body.dump()));
    EXPECT_EQ(a.status, b.status) << b.body.dump() << ": " << a.body;
    EXPECT_EQ(ErrorCode(a), b.status == 409 ? "conflict" : "bad_request") << a.body;
  }
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer malformed, Api("POST", "/api/v1/tokens", "{"));
  EXPECT_EQ(malformed.status, 400) << malformed.body;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer max,
                          Api("POST", "/api/v1/tokens",
                              Json{{"name", std::string(64, 'a')}, {"role", "viewer"}}.dump()));
  EXPECT_EQ(max.status, 201) << max.body;
  EXPECT_EQ(TokenNames().size(), 6u) << "a refused create made a token";

  // Tokens live in the store: a restarted serve knows them.
  ASSERT_TRUE(serve_->Stop(10s).has_value());
  BG_ASSERT_OK(StartServe());
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer again, Api("GET", "/api/v1/whoami", "", token));
  EXPECT_EQ(again.json.value("name", ""), "ci.deploy_1") << again.body;

  // Revoke: the token is refused at its next call; the others keep working.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer r, Api("DELETE", "/api/v1/tokens/ci.deploy_1"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json, (Json{{"name", "ci.deploy_1"}, {"revoked", true}})) << r.body;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer refused, Api("GET", "/api/v1/whoami", "", token));
  EXPECT_EQ(refused.status, 401) << refused.body;
  EXPECT_EQ(ErrorCode(refused), "unauthenticated") << refused.body;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer others, Api("GET", "/api/v1/whoami", "", by_admin));
  EXPECT_EQ(others.status, 200) << others.body;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer twice, Api("DELETE", "/api/v1/tokens/ci.deploy_1"));
  EXPECT_EQ(twice.status, 404) << twice.body;
  EXPECT_EQ(ErrorCode(twice), "not_found") << twice.body;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer boot, Api("DELETE", "/api/v1/tokens/admin"));
  EXPECT_EQ(boot.status, 400) << boot.body;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer still, Api("GET", "/api/v1/whoami"));
  EXPECT_EQ(still.status, 200) << "the bootstrap token stopped working: " << still.body;
  // The name is free again; the new token is another one.
  BG_ASSERT_OK_AND_ASSIGN(std::string renewed, CreateToken("ci.deploy_1", "viewer"));
  EXPECT_NE(renewed, token);
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer old, Api("GET", "/api/v1/whoami", "", token));
  EXPECT_EQ(old.status, 401) << old.body;

  // serve never logs a token.
  std::string log = serve_->Stderr();
  for (const auto& old_serve : old_serves_) log += old_serve->Stderr();
  EXPECT_NE(log.find("token ci.deploy_1 (role approver) created by admin"), std::string::npos)
      << log;
  for (const std::string& t : {token, renewed, by_admin}) {
    EXPECT_EQ(log.find(t.substr(3)), std::string::npos) << "a token in serve's log";
  }
}

TEST_F(AuthTest, WebhookAuthenticatesBySignatureOnly) {
  BG_ASSERT_OK_AND_ASSIGN(StackFile f, NewStackFile("hooked", 1));
  stacks_.insert(f.name);
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer put, Api("PUT", "/api/v1/stacks/hooked", f.ToYaml()));
  ASSERT_EQ(put.status, 201) << put.body;
  BG_ASSERT_OK_AND_ASSIGN(
      ApiAnswer set, Api("PUT", "/api/v1/stacks/hooked/secrets/webhook_secret", "hook-secret"));
  ASSERT_EQ(set.status, 200) << set.body;
  const std::string body =
      R"({"ref": "refs/heads/elsewhere", "after": ")" + std::string(40, 'a') + R"("})";
  auto hook = [&](const std::string& signature, const std::string& token) {
    HttpClientRequest req;
    req.method = "POST";
    req.target = "/api/v1/stacks/hooked/webhook";
    req.body = body;
    req.headers.emplace_back("Content-Type", "application/json");
    if (!signature.empty()) req.headers.emplace_back("X-Hub-Signature-256", signature);
    if (!token.empty()) req.headers.emplace_back("Authorization", "Bearer " + token);
    auto r = HttpCall(ApiAddress(), req, 10s);
    return r.ok() ? r->status : -1;
  };
  const std::string good = "sha256=" + HmacSha256Hex("hook-secret", body);
  EXPECT_EQ(hook(good, ""), 200) << "a signed push needs no token";
  EXPECT_EQ(hook("", ""), 401);
  EXPECT_EQ(hook("", token_), 401) << "a token does not replace the signature";
  EXPECT_EQ(hook("sha256=" + std::string(64, '0'), tokens_["admin"]), 401);
  EXPECT_EQ(hook(good, kWrongToken), 200) << "the token is not looked at";
}

TEST_F(AuthTest, TheApproversNameIsRecorded) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK(FirstRun(f, {"blue"}).status());
  BG_ASSERT_OK_AND_ASSIGN(Json waiting, PushAndWaitForApproval(f, {"green"}));
  const int64_t id = waiting.value("id", int64_t{0});
  const std::string stack = "/api/v1/stacks/" + f.name;

  // A viewer can neither approve, reject, roll back nor release: nothing changes.
  BG_ASSERT_OK_AND_ASSIGN(Json executions_before, Executions(f.name));
  for (const char* action : {"approve", "reject", "rollback", "release"}) {
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a,
                            Api("POST", stack + "/" + action, "{}", tokens_["viewer"]));
    ExpectForbidden(a, "viewer", std::string("viewer ") + action);
  }
  BG_ASSERT_OK_AND_ASSIGN(Json executions_after, Executions(f.name));
  EXPECT_EQ(executions_after, executions_before);
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer viewed, Api("GET", stack + "/executions/" + std::to_string(id),
                                                "", tokens_["viewer"]));
  EXPECT_EQ(viewed.json.value("status", ""), "WaitingForApproval") << viewed.body;

  // The approver approves: approved_by and the event say who.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer approve,
                          Api("POST", stack + "/approve", Json{{"comment", "looks green"}}.dump(),
                              tokens_["approver"]));
  ASSERT_EQ(approve.status, 200) << approve.body;
  EXPECT_EQ(approve.json["execution"].value("approved_by", ""), "t-approver") << approve.body;
  BG_ASSERT_OK_AND_ASSIGN(Json done, WaitExecutionStatus(f.name, id, "Succeeded"));
  EXPECT_EQ(done.value("approved_by", ""), "t-approver") << done.dump(2);
  EXPECT_EQ(done.value("comment", ""), "looks green") << done.dump(2);
  auto has_event = [&](const std::string& kind, const std::string& text) {
    for (const Json& e : Get(stack + "/events").value("events", Json::array())) {
      if (e.value("kind", "") == kind && e.value("message", "").find(text) != std::string::npos) {
        return true;
      }
    }
    return false;
  };
  EXPECT_TRUE(has_event("approved", "approved by t-approver: looks green"));
  BG_ASSERT_OK(WaitSettled(f.name).status());

  // The approver rolls back.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer rollback,
                          Api("POST", stack + "/rollback", "{}", tokens_["approver"]));
  ASSERT_EQ(rollback.status, 200) << rollback.body;
  EXPECT_EQ(rollback.json["execution"].value("kind", ""), "rollback") << rollback.body;
  EXPECT_EQ(rollback.json["execution"].value("approved_by", ""), "t-approver") << rollback.body;
  EXPECT_TRUE(has_event("rollback", "asked by t-approver"));
  BG_ASSERT_OK(WaitSettled(f.name).status());

  // The approver rejects the next one.
  BG_ASSERT_OK_AND_ASSIGN(Json next, PushAndWaitForApproval(f, {"red"}));
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer reject,
                          Api("POST", stack + "/reject", "{}", tokens_["approver"]));
  ASSERT_EQ(reject.status, 200) << reject.body;
  EXPECT_EQ(reject.json["execution"].value("approved_by", ""), "t-approver") << reject.body;
  EXPECT_EQ(reject.json["execution"].value("reason", ""), "rejected by t-approver") << reject.body;

  // The approver releases: the events say who.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer release,
                          Api("POST", stack + "/release", "{}", tokens_["approver"]));
  ASSERT_EQ(release.status, 202) << release.body;
  const int64_t released = release.json["execution"].value("id", int64_t{0});
  EXPECT_TRUE(
      has_event("release", "execution " + std::to_string(released) + " released by t-approver"));
  // Leave nothing running: reject it once it waits.
  BG_ASSERT_OK(WaitExecution(
                   f.name, released,
                   [](const Json& x) { return x.value("status", "") == "WaitingForApproval"; },
                   kExecTimeout, "to wait for approval")
                   .status());
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer last, Api("POST", stack + "/reject", "{}"));
  EXPECT_EQ(last.json["execution"].value("approved_by", ""), "admin") << last.body;

  // The CLI shows the names in APPROVED-BY.
  CliResult list = Cli({"executions", f.name}, 30s, {"BLUEGREEN_TOKEN=" + tokens_["viewer"]});
  ASSERT_EQ(list.exit_code, 0) << list.Describe();
  EXPECT_NE(list.out.find("t-approver"), std::string::npos) << list.out;
}

TEST_F(AuthTest, CliTokenCommands) {
  // create: the token alone on stdout, the note on stderr.
  CliResult c = Cli({"token", "create", "alice", "--role", "viewer"});
  ASSERT_EQ(c.exit_code, 0) << c.Describe();
  EXPECT_TRUE(std::regex_match(c.out, std::regex("bg_[0-9a-f]{64}\n"))) << c.Describe();
  EXPECT_NE(c.err.find("shown only this once"), std::string::npos) << c.Describe();
  const std::string alice = Chomp(c.out);
  const std::vector<std::string> as_alice = {"BLUEGREEN_TOKEN=" + alice};

  CliResult j = Cli({"token", "create", "bob", "--role", "approver", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.Describe();
  Json created = Json::parse(j.out, nullptr, false);
  EXPECT_EQ(created.value("name", ""), "bob") << j.out;
  EXPECT_EQ(j.err, "");

  // list
  CliResult l = Cli({"token", "list"});
  ASSERT_EQ(l.exit_code, 0) << l.Describe();
  EXPECT_NE(l.out.find("alice"), std::string::npos) << l.out;
  EXPECT_NE(l.out.find("approver"), std::string::npos) << l.out;
  EXPECT_EQ(l.out.find(alice), std::string::npos) << l.out;
  CliResult lj = Cli({"token", "list", "--json"});
  ASSERT_EQ(lj.exit_code, 0) << lj.Describe();
  EXPECT_EQ(Json::parse(lj.out, nullptr, false).value("tokens", Json::array()).size(), 5u)
      << lj.out;

  // A viewer reads, and is told what to ask for when it tries more (exit 4).
  CliResult stacks = Cli({"stacks"}, 30s, as_alice);
  EXPECT_EQ(stacks.exit_code, 0) << stacks.Describe();
  CliResult approve = Cli({"approve", "demo"}, 30s, as_alice);
  EXPECT_EQ(approve.exit_code, 4) << approve.Describe();
  EXPECT_NE(approve.err.find("error: token \"alice\" has role viewer; approve needs role approver "
                             "or admin\n"),
            std::string::npos)
      << approve.Describe();
  EXPECT_NE(approve.err.find("hint: the token was read from $BLUEGREEN_TOKEN; ask an admin for a "
                             "token with role approver"),
            std::string::npos)
      << approve.Describe();
  CliResult create = Cli({"token", "create", "eve", "--role", "admin"}, 30s, as_alice);
  EXPECT_EQ(create.exit_code, 4) << create.Describe();
  EXPECT_EQ(create.out, "");

  // Errors: a taken name (6), a bad name (2), a bad role (2, before any call), an unknown token
  // (3).
  EXPECT_EQ(Cli({"token", "create", "alice", "--role", "viewer"}).exit_code, 6);
  EXPECT_EQ(Cli({"token", "create", "Alice", "--role", "viewer"}).exit_code, 2);
  EXPECT_EQ(Cli({"token", "create", "carol", "--role", "root"}).exit_code, 2);
  EXPECT_EQ(Cli({"token", "revoke", "nobody"}).exit_code, 3);

  // revoke: the token stops working.
  CliResult r = Cli({"token", "revoke", "alice"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "revoked token alice: it no longer works\n");
  CliResult after = Cli({"stacks"}, 30s, as_alice);
  EXPECT_EQ(after.exit_code, 4) << after.Describe();
  EXPECT_NE(after.err.find("revoked"), std::string::npos) << after.Describe();

  // --help has an example.
  for (const char* sub : {"create", "list", "revoke"}) {
    CliResult h = Cli({"token", sub, "--help"});
    EXPECT_EQ(h.exit_code, 0) << h.Describe();
    EXPECT_NE(h.out.find(std::string("Example:\n  bluegreen token ") + sub), std::string::npos)
        << h.Describe();
  }
}

}  // namespace
}  // namespace bluegreen::serve_it
