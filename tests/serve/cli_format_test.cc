// Tests of the CLI's client commands (src/cli), the pipeline's included: the pure functions (exit
// codes, error texts, the text forms of API answers, the wait conditions) on literal JSON shaped
// as in docs/api.md, and the commands themselves against a fake serve that answers as docs/api.md
// says.
#include "cli/cli.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "common/http_server.h"
#include "common/utf8.h"

namespace bluegreen::cli {
namespace {

using nlohmann::json;

// A status as docs/api.md shows it, with both target groups and a rollout under way on Code2.
const json kStatus = json::parse(R"({
  "name": "demo", "runtime": "process", "live": "Code1",
  "listeners": [{"name": "production", "port": 8000, "target_group": "demo-blue"},
                {"name": "test", "port": 8001, "target_group": "demo-green"}],
  "target_groups": [
    {"name": "demo-blue", "tags": {"Identifier": "Code1", "Image": "v1", "IsProduction": "true"},
     "targets": [{"address": "127.0.0.1:41001", "health": "healthy"},
                 {"address": "127.0.0.1:41002", "health": "healthy"}]},
    {"name": "demo-green", "tags": {"Identifier": "Code2", "Image": "v2", "IsProduction": "false"},
     "targets": [{"address": "127.0.0.1:41003", "health": "healthy"},
                 {"address": "127.0.0.1:41004", "health": "unhealthy"}]}],
  "services": [
    {"name": "demo-code1", "identifier": "Code1", "version": "v1",
     "desired_count": 2, "running_count": 2, "rollout": null},
    {"name": "demo-code2", "identifier": "Code2", "version": "v2",
     "desired_count": 2, "running_count": 1,
     "rollout": {"version": "v3", "state": "in_progress", "error": "", "started_at": 1700000000}}],
  "tasks": [
    {"id": 7, "service": "Code1", "version": "v1", "address": "127.0.0.1:41001",
     "state": "running", "handle": "12345:678901", "log": "/var/lib/bluegreen/logs/demo/7.log"},
    {"id": 9, "service": "Code2", "version": "v1", "address": "127.0.0.1:41000",
     "state": "stopped", "handle": "12347:678903", "log": "/var/lib/bluegreen/logs/demo/9.log"},
    {"id": 11, "service": "Code2", "version": "v3", "address": "127.0.0.1:41005",
     "state": "starting", "handle": "12349:678905", "log": "/var/lib/bluegreen/logs/demo/11.log"}]
})");

// A stack just created: no version anywhere (tags.Image may be absent or empty).
const json kNewStatus = json::parse(R"({
  "name": "demo", "runtime": "process", "live": "Code1",
  "listeners": [{"name": "production", "port": 8000, "target_group": "demo-blue"},
                {"name": "test", "port": 8001, "target_group": "demo-green"}],
  "target_groups": [
    {"name": "demo-blue", "tags": {"Identifier": "Code1", "Image": "", "IsProduction": "true"},
     "targets": []},
    {"name": "demo-green", "tags": {"Identifier": "Code2", "IsProduction": "false"},
     "targets": []}],
  "services": [
    {"name": "demo-code1", "identifier": "Code1", "version": null,
     "desired_count": 2, "running_count": 0, "rollout": null},
    {"name": "demo-code2", "identifier": "Code2", "version": null,
     "desired_count": 2, "running_count": 0, "rollout": null}],
  "tasks": []
})");

// kStatus with Code2's rollout set to `rollout` and its fields changed by `patch`.
json WithCode2(const json& rollout, const json& patch = json::object()) {
  json s = kStatus;
  s["services"][1]["rollout"] = rollout;
  for (auto it = patch.begin(); it != patch.end(); ++it) s["services"][1][it.key()] = it.value();
  return s;
}

TEST(CliExitCodes, HttpStatus) {
  EXPECT_EQ(ExitCodeForHttpStatus(200), kExitOk);
  EXPECT_EQ(ExitCodeForHttpStatus(201), kExitOk);
  EXPECT_EQ(ExitCodeForHttpStatus(202), kExitOk);
  EXPECT_EQ(ExitCodeForHttpStatus(400), kExitBadInput);
  EXPECT_EQ(ExitCodeForHttpStatus(413), kExitBadInput);
  EXPECT_EQ(ExitCodeForHttpStatus(401), kExitUnauthorized);
  EXPECT_EQ(ExitCodeForHttpStatus(403), kExitUnauthorized);
  EXPECT_EQ(ExitCodeForHttpStatus(404), kExitNotFound);
  EXPECT_EQ(ExitCodeForHttpStatus(409), kExitConflict);
  EXPECT_EQ(ExitCodeForHttpStatus(500), kExitFailed);
  EXPECT_EQ(ExitCodeForHttpStatus(503), kExitFailed);
  EXPECT_EQ(ExitCodeForHttpStatus(405), kExitFailed);
  // The numbers are the contract of docs/cli.md.
  EXPECT_EQ(kExitOk, 0);
  EXPECT_EQ(kExitFailed, 1);
  EXPECT_EQ(kExitBadInput, 2);
  EXPECT_EQ(kExitNotFound, 3);
  EXPECT_EQ(kExitUnauthorized, 4);
  EXPECT_EQ(kExitUnreachable, 5);
  EXPECT_EQ(kExitConflict, 6);
}

TEST(CliExitCodes, TransportError) {
  EXPECT_EQ(ExitCodeForTransportError(Unavailable("connect: Connection refused")),
            kExitUnreachable);
  EXPECT_EQ(ExitCodeForTransportError(Status(StatusCode::kDeadlineExceeded, "timed out")),
            kExitUnreachable);
  EXPECT_EQ(ExitCodeForTransportError(Internal("not HTTP")), kExitUnreachable);
  EXPECT_EQ(ExitCodeForTransportError(InvalidArgument("bad address")), kExitBadInput);
  EXPECT_EQ(ExitCodeForTransportError(Status(StatusCode::kResourceExhausted, "too large")),
            kExitFailed);
}

TEST(CliErrors, ParseApiErrorOfTheDocumentedShape) {
  ApiError e = ParseApiError(
      400,
      R"({"error": {"code": "invalid_stack_file", "message": "line 4: service.desired_count: must be 0..100"}})");
  EXPECT_EQ(e.code, "invalid_stack_file");
  EXPECT_EQ(e.message, "line 4: service.desired_count: must be 0..100");
}

TEST(CliErrors, ParseApiErrorOfAnotherShape) {
  ApiError e = ParseApiError(502, "<html>\nBad Gateway\n</html>");
  EXPECT_EQ(e.code, "http_502");
  EXPECT_EQ(e.message, "serve answered HTTP 502: <html> Bad Gateway </html>");
  EXPECT_EQ(ParseApiError(404, "").message, "serve answered HTTP 404");
  EXPECT_EQ(ParseApiError(500, R"({"error": "boom"})").message, "boom");
  EXPECT_EQ(ParseApiError(500, R"({"error": {"code": 5}})").code, "http_500");
}

TEST(CliErrors, UnreachableSaysWhereAndHowToStartServe) {
  std::string m = UnreachableMessage("http://127.0.0.1:7070",
                                     Unavailable("connect to 127.0.0.1: Connection refused"),
                                     "/home/me/.local/state/bluegreen");
  EXPECT_EQ(m,
            "cannot reach bluegreen serve at http://127.0.0.1:7070 (connect to 127.0.0.1: "
            "Connection refused)\n"
            "is `bluegreen serve` running? start it with: bluegreen serve --state-dir "
            "/home/me/.local/state/bluegreen\n"
            "(or point the CLI at the right address with --api URL or BLUEGREEN_API)");
  // Another address: the command to start serve listens there.
  m = UnreachableMessage("127.0.0.1:9000", Status(StatusCode::kDeadlineExceeded, "timed out"),
                         "/srv/bg");
  EXPECT_NE(m.find("at 127.0.0.1:9000 (no answer in time)"), std::string::npos) << m;
  EXPECT_NE(m.find("bluegreen serve --state-dir /srv/bg --api 127.0.0.1:9000\n"), std::string::npos)
      << m;
}

TEST(CliErrors, Hints) {
  EXPECT_NE(HintForApiError("status", "demo", 401, "unauthenticated").find("BLUEGREEN_TOKEN"),
            std::string::npos);
  EXPECT_EQ(HintForApiError("status", "demo", 404, "not_found"),
            "list the stacks with: bluegreen stacks");
  EXPECT_NE(HintForApiError("deploy", "demo", 404, "not_found").find("--artifact DIR"),
            std::string::npos);
  EXPECT_EQ(HintForApiError("deploy", "demo", 409, "conflict"),
            "a rollout is in progress: follow it with: bluegreen status demo");
  EXPECT_NE(HintForApiError("up", "demo", 409, "conflict").find("port"), std::string::npos);
  EXPECT_NE(HintForApiError("versions", "demo", 409, "conflict").find("new version name"),
            std::string::npos);
  EXPECT_NE(HintForApiError("up", "demo", 503, "unavailable").find("committed"), std::string::npos);
  EXPECT_NE(HintForApiError("deploy", "demo", 503, "runtime_unavailable").find("podman.socket"),
            std::string::npos);
  EXPECT_EQ(HintForApiError("up", "demo", 400, "bad_request"), "");
}

TEST(CliText, PrefixLines) {
  EXPECT_EQ(PrefixLines("stack.yaml", "line 1: name: bad\nline 4: service.port: bad\n"),
            "stack.yaml: line 1: name: bad\nstack.yaml: line 4: service.port: bad\n");
  EXPECT_EQ(PrefixLines("f", "one\r\n\ntwo"), "f: one\nf: two\n");
  EXPECT_EQ(PrefixLines("f", ""), "");
}

TEST(CliText, EscapePathSegment) {
  EXPECT_EQ(EscapePathSegment("demo-1"), "demo-1");
  EXPECT_EQ(EscapePathSegment("a/b c?"), "a%2Fb%20c%3F");
  EXPECT_EQ(EscapePathSegment("../x"), "..%2Fx");
}

TEST(CliFormat, StatusShowsWhichSideIsLive) {
  EXPECT_EQ(FormatStatus(kStatus),
            "demo (runtime: process)\n"
            "  production  :8000  -> demo-blue   Code1  v1  LIVE\n"
            "  test        :8001  -> demo-green  Code2  v2\n"
            "  services\n"
            "    Code1  v1  2/2 running\n"
            "    Code2  v2  1/2 running  rollout v3: in_progress\n"
            "  targets\n"
            "    demo-blue   127.0.0.1:41001  healthy\n"
            "    demo-blue   127.0.0.1:41002  healthy\n"
            "    demo-green  127.0.0.1:41003  healthy\n"
            "    demo-green  127.0.0.1:41004  unhealthy\n"
            "  tasks\n"
            "    task 11  Code2  v3  starting  127.0.0.1:41005  log "
            "/var/lib/bluegreen/logs/demo/11.log\n");
}

TEST(CliFormat, StatusAfterASwap) {
  // After a swap production points at demo-green and Code2 is live.
  json s = kStatus;
  s["live"] = "Code2";
  s["listeners"][0]["target_group"] = "demo-green";
  s["listeners"][1]["target_group"] = "demo-blue";
  s["services"][1]["rollout"] = nullptr;
  s["tasks"] = json::array();
  std::string text = FormatStatus(s);
  EXPECT_NE(text.find("  production  :8000  -> demo-green  Code2  v2  LIVE\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("  test        :8001  -> demo-blue   Code1  v1\n"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("tasks"), std::string::npos) << text;
}

TEST(CliFormat, StatusBeforeTheFirstDeploy) {
  EXPECT_EQ(FormatStatus(kNewStatus),
            "demo (runtime: process)\n"
            "  production  :8000  -> demo-blue   Code1  -  LIVE\n"
            "  test        :8001  -> demo-green  Code2  -\n"
            "  services\n"
            "    Code1  -  0/2 running\n"
            "    Code2  -  0/2 running\n"
            "  targets\n"
            "    demo-blue   no targets\n"
            "    demo-green  no targets\n");
}

TEST(CliFormat, StatusWithAFailedRollout) {
  json s = WithCode2({{"version", "v3"},
                      {"state", "failed"},
                      {"error", "0 of 2 new tasks were healthy after 5m"},
                      {"started_at", 1700000000}});
  EXPECT_NE(FormatStatus(s).find("    Code2  v2  1/2 running  rollout v3: failed: 0 of 2 new "
                                 "tasks were healthy after 5m\n"),
            std::string::npos)
      << FormatStatus(s);
}

TEST(CliFormat, StatusWithAnUnreachableRuntime) {
  json s = kStatus;
  s["runtime"] = "podman";
  s["runtime_status"] = {{"reachable", true}, {"error", ""}, {"since", 1764358000}};
  EXPECT_EQ(FormatStatus(s).find("UNREACHABLE"), std::string::npos) << FormatStatus(s);
  s["runtime_status"] = {{"reachable", false},
                         {"error", "podman: the engine at /run/podman/podman.sock does not answer"},
                         {"since", 1764358210}};
  const std::string text = FormatStatus(s);
  EXPECT_NE(text.find("demo (runtime: podman)\n  RUNTIME UNREACHABLE since 2025-11-28 19:30:10 UTC: "
                      "podman: the engine at /run/podman/podman.sock does not answer\n    its tasks "
                      "are left as they are"),
            std::string::npos)
      << text;
  s["runtime_status"] = {{"reachable", false}, {"error", 7}, {"since", "x"}};
  EXPECT_NO_THROW(FormatStatus(s));
}

TEST(CliFormat, StatusOfUnexpectedShapesDoesNotThrow) {
  EXPECT_EQ(FormatStatus(json()), "? (runtime: ?)\n  no listeners\n");
  EXPECT_EQ(FormatStatus(json::array({1, 2})), "? (runtime: ?)\n  no listeners\n");
  json odd = json::parse(R"({"name": 5, "listeners": [7, {"port": "x"}], "services": [null],
                             "target_groups": {"a": 1}, "tasks": [{"state": 3}]})");
  EXPECT_NO_THROW(FormatStatus(odd));
}

TEST(CliFormat, Stacks) {
  json answer = json::parse(R"({"stacks": [
    {"name": "demo", "runtime": "process", "live": "Code1", "production_port": 8000,
     "test_port": 8001,
     "services": [{"identifier": "Code1", "version": "v1", "desired_count": 2, "running_count": 2},
                  {"identifier": "Code2", "version": "v2", "desired_count": 2, "running_count": 1}]},
    {"name": "shop", "runtime": "podman", "live": "Code2", "production_port": 80,
     "test_port": 8080,
     "services": [{"identifier": "Code1", "version": null, "desired_count": 1, "running_count": 0},
                  {"identifier": "Code2", "version": null, "desired_count": 1, "running_count": 0}]}
  ]})");
  EXPECT_EQ(FormatStacks(answer),
            "NAME  LIVE      PROD  TEST  SERVICES\n"
            "demo  Code1 v1  8000  8001  Code1 v1 2/2, Code2 v2 1/2\n"
            "shop  Code2     80    8080  Code1 - 0/1, Code2 - 0/1\n");
  // A stack whose container engine does not answer gets a line under the table; a reachable
  // one, or one from a serve that does not say, gets none.
  answer["stacks"][0]["runtime_status"] = {{"reachable", true}, {"error", ""}, {"since", nullptr}};
  answer["stacks"][1]["runtime_status"] = {
      {"reachable", false},
      {"error", "podman at unix:/run/podman/podman.sock does not answer: connection refused"},
      {"since", 1764392400}};
  EXPECT_EQ(FormatStacks(answer),
            "NAME  LIVE      PROD  TEST  SERVICES\n"
            "demo  Code1 v1  8000  8001  Code1 v1 2/2, Code2 v2 1/2\n"
            "shop  Code2     80    8080  Code1 - 0/1, Code2 - 0/1\n"
            "shop (runtime podman): RUNTIME UNREACHABLE since 2025-11-29 05:00:00 UTC: podman at "
            "unix:/run/podman/podman.sock does not answer: connection refused\n");
  EXPECT_EQ(FormatStacks(json::parse(R"({"stacks": []})")),
            "no stacks yet: create one with bluegreen up -f stack.yaml\n");
  EXPECT_EQ(FormatStacks(json()), "no stacks yet: create one with bluegreen up -f stack.yaml\n");
}

TEST(CliFormat, UpAnswer) {
  EXPECT_EQ(FormatUpAnswer(json::parse(R"({"name": "demo", "created": true,
      "changes": ["create listener production on port 8000 -> demo-blue",
                  "create listener test on port 8001 -> demo-green"], "status": {}})")),
            "created stack demo\n"
            "  + create listener production on port 8000 -> demo-blue\n"
            "  + create listener test on port 8001 -> demo-green\n");
  EXPECT_EQ(
      FormatUpAnswer(json::parse(
          R"({"name": "demo", "created": false, "changes": ["services: desired_count 2 -> 3"]})")),
      "updated stack demo\n  + services: desired_count 2 -> 3\n");
  EXPECT_EQ(FormatUpAnswer(json::parse(R"({"name": "demo", "created": false, "changes": []})")),
            "stack demo is up to date\n");
}

TEST(CliFormat, DownAnswer) {
  EXPECT_EQ(FormatDownAnswer(json::parse(R"({"name": "demo", "removed": true, "purged": false})")),
            "removed stack demo (history kept; --purge to delete it)\n");
  EXPECT_EQ(FormatDownAnswer(json::parse(R"({"name": "demo", "removed": true, "purged": true})")),
            "removed stack demo and its history (versions, events)\n");
}

TEST(CliWait, UpWithNoVersionHasNothingToWaitFor) {
  EXPECT_EQ(CheckUpDone(kNewStatus).state, WaitCheck::kNoVersion);
  EXPECT_TRUE(UpProgress(kNewStatus).empty());
}

TEST(CliWait, UpWaitsForCountsAndRollouts) {
  WaitCheck c = CheckUpDone(kStatus);
  EXPECT_EQ(c.state, WaitCheck::kWaiting);
  EXPECT_EQ(c.detail, "Code2: rollout of v3 in progress; Code2 v2: 1/2 running");
  EXPECT_EQ(UpProgress(kStatus),
            (std::vector<std::string>{"Code1 v1: 2/2 running",
                                      "Code2 v2: 1/2 running, rollout of v3 in progress"}));

  // Counts reached but the rollout still runs: waiting.
  c = CheckUpDone(WithCode2(kStatus["services"][1]["rollout"], {{"running_count", 2}}));
  EXPECT_EQ(c.state, WaitCheck::kWaiting);
  EXPECT_EQ(c.detail, "Code2: rollout of v3 in progress");

  EXPECT_EQ(CheckUpDone(WithCode2(nullptr, {{"running_count", 2}})).state, WaitCheck::kDone);
  // A failed rollout is over: the old version serves, which is what `up` waits for.
  json failed = {{"version", "v3"}, {"state", "failed"}, {"error", "x"}, {"started_at", 1}};
  EXPECT_EQ(CheckUpDone(WithCode2(failed, {{"running_count", 2}})).state, WaitCheck::kDone);

  // The first deploy under way: no version yet, but a rollout to wait for.
  json first = kNewStatus;
  for (json& svc : first["services"])
    svc["rollout"] = {{"version", "v1"}, {"state", "in_progress"}};
  EXPECT_EQ(CheckUpDone(first).state, WaitCheck::kWaiting);
  // One side failed, the other still tries: waiting.
  first["services"][0]["rollout"] = {{"version", "v1"}, {"state", "failed"}, {"error", "crashed"}};
  EXPECT_EQ(CheckUpDone(first).state, WaitCheck::kWaiting);
  // Both failed: nothing runs, and nothing will without a new deploy.
  first["services"][1]["rollout"] = {{"version", "v1"}, {"state", "failed"}, {"error", ""}};
  WaitCheck c2 = CheckUpDone(first);
  EXPECT_EQ(c2.state, WaitCheck::kFailed);
  EXPECT_EQ(c2.detail, "Code1: the rollout of v1 failed: crashed; Code2: the rollout of v1 failed");
}

TEST(CliWait, ProgressSaysWhenTheRuntimeDoesNotAnswer) {
  json down = kStatus;
  down["runtime_status"] = {{"reachable", false},
                            {"error", "podman: the engine at /run/podman/podman.sock does not answer"},
                            {"since", 1764392400}};
  const std::string line =
      "RUNTIME UNREACHABLE since 2025-11-29 05:00:00 UTC: podman: the engine at "
      "/run/podman/podman.sock does not answer (waiting for it)";
  EXPECT_EQ(UpProgress(down),
            (std::vector<std::string>{"Code1 v1: 2/2 running",
                                      "Code2 v2: 1/2 running, rollout of v3 in progress", line}));
  EXPECT_EQ(DeployProgress(down, {"Code2"}, "v3"),
            (std::vector<std::string>{"Code2 v3: 0/2 running, 1 starting", line}));
  // Reachable again: the line goes.
  down["runtime_status"] = {{"reachable", true}, {"error", ""}, {"since", 1764392460}};
  EXPECT_EQ(UpProgress(down).size(), 2u);
}

TEST(CliWait, DeployDoneWhenTheServicesRunTheVersion) {
  const std::vector<std::string> code2 = {"Code2"};
  WaitCheck c = CheckDeployDone(kStatus, code2, "v3");
  EXPECT_EQ(c.state, WaitCheck::kWaiting);
  EXPECT_EQ(c.detail, "Code2: rollout of v3 in progress");
  EXPECT_EQ(DeployProgress(kStatus, code2, "v3"),
            std::vector<std::string>{"Code2 v3: 0/2 running, 1 starting"});

  json done = WithCode2(nullptr, {{"version", "v3"}, {"running_count", 2}});
  EXPECT_EQ(CheckDeployDone(done, code2, "v3").state, WaitCheck::kDone);

  // Before serve has started the rollout: still the old version, no rollout.
  c = CheckDeployDone(WithCode2(nullptr), code2, "v3");
  EXPECT_EQ(c.state, WaitCheck::kWaiting);
  EXPECT_EQ(c.detail, "Code2: runs v2, not v3");

  // A service the status does not have.
  c = CheckDeployDone(kStatus, {"Code3"}, "v3");
  EXPECT_EQ(c.state, WaitCheck::kWaiting);
  EXPECT_EQ(c.detail, "Code3: not in the stack's status");
}

TEST(CliWait, DeployFailedWhenItsRolloutFailed) {
  const std::vector<std::string> code2 = {"Code2"};
  json failed = WithCode2({{"version", "v3"},
                           {"state", "failed"},
                           {"error", "0 of 2 new tasks were healthy"},
                           {"started_at", 1}});
  WaitCheck c = CheckDeployDone(failed, code2, "v3");
  EXPECT_EQ(c.state, WaitCheck::kFailed);
  EXPECT_EQ(c.detail, "Code2: 0 of 2 new tasks were healthy");
  EXPECT_EQ(DeployProgress(failed, code2, "v3"),
            std::vector<std::string>{"Code2 v3: 0/2 running, 1 starting, rollout failed"});
  // The failure of an older rollout is not this deploy's.
  EXPECT_EQ(CheckDeployDone(failed, code2, "v4").state, WaitCheck::kWaiting);
}

TEST(CliWait, FirstDeployPutsTheVersionOnBothServices) {
  const std::vector<std::string> both = {"Code1", "Code2"};
  json s = kNewStatus;
  for (json& svc : s["services"]) svc["rollout"] = {{"version", "v1"}, {"state", "in_progress"}};
  EXPECT_EQ(CheckDeployDone(s, both, "v1").state, WaitCheck::kWaiting);
  for (json& svc : s["services"]) {
    svc["rollout"] = nullptr;
    svc["version"] = "v1";
  }
  s["services"][0]["rollout"] = nullptr;
  EXPECT_EQ(CheckDeployDone(s, both, "v1").state, WaitCheck::kDone);
}

// An execution as docs/api.md shows it: waiting for approval.
const json kWaitingExecution = json::parse(R"({
  "id": 3, "stack": "demo", "kind": "release", "trigger": "poll",
  "commit": "9f1c2ab83d0e4c1b9a7f6e5d4c3b2a1908f7e6d5", "commit_message": "Make the background green",
  "author": "Ann", "version": "3-9f1c2ab", "status": "WaitingForApproval", "stage": "Review",
  "stages": {"Source": {"status": "Succeeded", "started_at": 1764330000000,
                        "ended_at": 1764330000400, "duration_ms": 400},
             "Review": {"status": "WaitingForApproval", "started_at": 1764330009000}},
  "reason": "", "deploy_services": "Code2", "from_version": "", "approved_by": "", "comment": "",
  "created_at": 1764330000000, "updated_at": 1764330009000
})");

TEST(CliPipelineFormat, StatusShowsTheExecutionWaitingForApproval) {
  json s = WithCode2(nullptr);
  s["tasks"] = json::array();
  s["execution"] = kWaitingExecution;
  EXPECT_EQ(FormatStatus(s),
            "demo (runtime: process)\n"
            "  production  :8000  -> demo-blue   Code1  v1  LIVE\n"
            "  test        :8001  -> demo-green  Code2  v2\n"
            "  execution 3  WaitingForApproval  Review  version 3-9f1c2ab  commit 9f1c2ab Make "
            "the background green\n"
            "    review it on the test listener :8001, then: bluegreen approve demo\n"
            "  services\n"
            "    Code1  v1  2/2 running\n"
            "    Code2  v2  1/2 running\n"
            "  targets\n"
            "    demo-blue   127.0.0.1:41001  healthy\n"
            "    demo-blue   127.0.0.1:41002  healthy\n"
            "    demo-green  127.0.0.1:41003  healthy\n"
            "    demo-green  127.0.0.1:41004  unhealthy\n");
}

TEST(CliPipelineFormat, StatusShowsWhyTheLastExecutionEnded) {
  json s = kStatus;
  json e = kWaitingExecution;
  e["status"] = "Failed";
  e["stage"] = "Build";
  e["version"] = "";
  e["reason"] = "build: command exited with status 2";
  s["execution"] = e;
  std::string text = FormatStatus(s);
  EXPECT_NE(text.find("  test        :8001  -> demo-green  Code2  v2\n"
                      "  execution 3  Failed  Build  version -  commit 9f1c2ab Make the "
                      "background green\n"
                      "    build: command exited with status 2\n"
                      "  services\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("bluegreen approve"), std::string::npos) << text;
  // Null (no execution yet) and odd shapes add nothing.
  s["execution"] = nullptr;
  EXPECT_EQ(FormatStatus(s).find("execution"), std::string::npos);
  s["execution"] = json::object();
  EXPECT_NO_THROW(FormatStatus(s));
  s["execution"] = {{"id", "x"}, {"status", 5}, {"commit", 7}};
  EXPECT_NO_THROW(FormatStatus(s));
}

TEST(CliPipelineFormat, ExecutionLine) {
  EXPECT_EQ(ExecutionLine(kWaitingExecution),
            "execution 3  WaitingForApproval  Review  version 3-9f1c2ab  commit 9f1c2ab Make the "
            "background green");
  json rollback = {{"id", 5},         {"kind", "rollback"}, {"status", "InProgress"},
                   {"stage", "Swap"}, {"version", "v1"},    {"commit", ""}};
  EXPECT_EQ(ExecutionLine(rollback), "execution 5 (rollback)  InProgress  Swap  version v1");
  EXPECT_EQ(ExecutionLine(json()), "execution ?  ?  ?  version -");
}

TEST(CliPipelineFormat, WatchShowsEachStageWithItsTime) {
  // Review started at ...9000; 65.2 s later it still waits.
  EXPECT_EQ(FormatWatch(kWaitingExecution, "demo", 1764330074200),
            "demo  execution 3  WaitingForApproval  Review  version 3-9f1c2ab  commit 9f1c2ab "
            "Make the background green\n"
            "  + Source  Succeeded  0.4s\n"
            "  o Build   -\n"
            "  o Deploy  -\n"
            "  > Review  WaitingForApproval  1m05s\n"
            "  o Swap    -\n"
            "  waiting for approval: bluegreen approve demo --comment TEXT (or bluegreen reject "
            "demo)\n");
  json failed = kWaitingExecution;
  failed["status"] = "Failed";
  failed["reason"] = "build: exit status 2";
  failed["stages"]["Review"] = json::object();
  failed["stages"]["Build"] = {
      {"status", "Failed"}, {"started_at", 1764330000400}, {"ended_at", 1764330012700}};
  const std::string text = FormatWatch(failed, "demo", 1764330099000);
  EXPECT_NE(text.find("  x Build   Failed  12.3s\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  o Review  -\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  Failed: build: exit status 2\n"), std::string::npos) << text;
  EXPECT_NO_THROW(FormatWatch(json(), "demo", 0));
  EXPECT_NO_THROW(FormatWatch(json{{"stages", 5}, {"status", json::array()}}, "demo", 0));
}

TEST(CliPipelineFormat, FitLinesCutsToTheTerminalWidth) {
  EXPECT_EQ(FitLines("abcdef\nab\n", 5), "abcd\nab\n");
  EXPECT_EQ(FitLines("abcdef", 0), "abcdef");
  // Never inside a UTF-8 sequence: "é" is 2 bytes at offsets 3-4.
  EXPECT_EQ(FitLines("abcé\n", 5), "abc\n");
  EXPECT_EQ(FitLines("abcé\n", 6), "abcé\n");
  EXPECT_EQ(FitLines("", 10), "");
}

TEST(CliPipelineFormat, WatchChangesSaysWhatChanged) {
  json before = kWaitingExecution;
  before["status"] = "InProgress";
  before["stage"] = "Deploy";
  before["stages"].erase("Review");
  before["stages"]["Deploy"] = {{"status", "InProgress"}, {"started_at", 1764330001000}};
  // From nothing: every stage that has a status.
  EXPECT_EQ(WatchChanges(json(), before, 1764330002000),
            (std::vector<std::string>{"Source Succeeded (0.4s)", "Deploy InProgress",
                                      "execution 3 InProgress"}));
  json after = kWaitingExecution;
  after["stages"]["Deploy"] = {
      {"status", "Succeeded"}, {"started_at", 1764330001000}, {"ended_at", 1764330008500}};
  EXPECT_EQ(WatchChanges(before, after, 1764330009000),
            (std::vector<std::string>{"Deploy Succeeded (7.5s)", "Review WaitingForApproval",
                                      "execution 3 WaitingForApproval"}));
  EXPECT_TRUE(WatchChanges(after, after, 1764330009000).empty());
}

TEST(CliPipelineFormat, ExecutionEnded) {
  for (const char* status : {"Succeeded", "Failed", "Rejected", "Superseded"}) {
    EXPECT_TRUE(ExecutionEnded({{"status", status}})) << status;
  }
  EXPECT_FALSE(ExecutionEnded({{"status", "InProgress"}}));
  EXPECT_FALSE(ExecutionEnded({{"status", "WaitingForApproval"}}));
  EXPECT_FALSE(ExecutionEnded(json()));
}

TEST(CliPipelineFormat, Answers) {
  json started = kWaitingExecution;
  started["id"] = 4;
  started["status"] = "InProgress";
  started["stage"] = "Source";
  EXPECT_EQ(FormatReleaseAnswer({{"execution", started}}, "demo"),
            "started execution 4 of demo (follow it: bluegreen executions demo; its build "
            "output: bluegreen logs demo 4 --follow)\n");
  EXPECT_EQ(FormatApproveAnswer({{"execution", kWaitingExecution}}, "demo"),
            "approved execution 3 (version 3-9f1c2ab): swapping production to it (see the "
            "result: bluegreen status demo)\n");
  EXPECT_EQ(FormatRejectAnswer({{"execution", kWaitingExecution}}, "demo"),
            "rejected execution 3 (version 3-9f1c2ab): production is unchanged\n");
  EXPECT_NO_THROW(FormatReleaseAnswer(json(), "demo"));
}

TEST(CliPipelineFormat, Age) {
  EXPECT_EQ(FormatAge(-5), "0s");
  EXPECT_EQ(FormatAge(59'999), "59s");
  EXPECT_EQ(FormatAge(60'000), "1m");
  EXPECT_EQ(FormatAge(3'599'000), "59m");
  EXPECT_EQ(FormatAge(3'600'000), "1h");
  EXPECT_EQ(FormatAge(47 * 3'600'000LL), "47h");
  EXPECT_EQ(FormatAge(48 * 3'600'000LL), "2d");
}

json ExecutionsAnswer() {
  json older = kWaitingExecution;
  older["id"] = 2;
  older["status"] = "Succeeded";
  older["stage"] = "Swap";
  older["version"] = "2-1a2b3c4";
  older["commit"] = "1a2b3c4d5e6f";
  older["commit_message"] = "A commit message that is much longer than the table has room for";
  older["approved_by"] = "admin";
  older["created_at"] = 1764330000000 - 2 * 3600 * 1000;
  json rollback = {{"id", 4},
                   {"kind", "rollback"},
                   {"status", "Succeeded"},
                   {"stage", "Swap"},
                   {"version", "2-1a2b3c4"},
                   {"commit", "1a2b3c4d5e6f"},
                   {"commit_message", "Fix"},
                   {"approved_by", "admin"},
                   {"created_at", 1764330000000 + 90 * 1000}};
  return {{"executions", {rollback, kWaitingExecution, older}}};
}

TEST(CliPipelineFormat, ExecutionsTable) {
  const int64_t now = 1764330000000 + 100 * 1000;
  EXPECT_EQ(FormatExecutions(ExecutionsAnswer(), "demo", now, 0),
            "ID  STATUS              STAGE   VERSION    COMMIT   MESSAGE                         "
            "         APPROVED-BY  AGE\n"
            "4   Succeeded           Swap    2-1a2b3c4  1a2b3c4  (rollback) Fix                  "
            "         admin        10s\n"
            "3   WaitingForApproval  Review  3-9f1c2ab  9f1c2ab  Make the background green       "
            "         -            1m\n"
            "2   Succeeded           Swap    2-1a2b3c4  1a2b3c4  A commit message that is much "
            "longer...  admin        2h\n");
  std::string two = FormatExecutions(ExecutionsAnswer(), "demo", now, 2);
  EXPECT_NE(two.find("\n3 "), std::string::npos) << two;
  EXPECT_EQ(two.find("\n2 "), std::string::npos) << two;
  EXPECT_NE(two.find("(the 2 newest of 3; --limit N for more)\n"), std::string::npos) << two;
  EXPECT_EQ(FormatExecutions(json::parse(R"({"executions": []})"), "demo", now, 20),
            "no executions of demo yet: push a commit to its branch, or start one with: "
            "bluegreen release demo\n");
  // Before the build, an execution has no version and may have no commit yet.
  json early = {{"executions",
                 {{{"id", 1},
                   {"status", "InProgress"},
                   {"stage", "Source"},
                   {"commit", ""},
                   {"version", ""},
                   {"created_at", now}}}}};
  EXPECT_EQ(FormatExecutions(early, "demo", now, 20),
            "ID  STATUS      STAGE   VERSION  COMMIT  MESSAGE  APPROVED-BY  AGE\n"
            "1   InProgress  Source  -        -       -        -            0s\n");
}

TEST(CliPipelineFormat, ExecutionsMessagesAreCutWithoutSplittingACharacter) {
  json e = {{"id", 1},
            {"status", "Succeeded"},
            {"commit_message", "Grüße aus Köln, Zürich und Malmö: ein längerer Text\tmit Tab"}};
  std::string text = FormatExecutions({{"executions", {e}}}, "demo", 0, 0);
  EXPECT_NE(text.find("Grüße aus Köln, Zürich und Malmö: ein...  "), std::string::npos) << text;
  EXPECT_TRUE(IsCleanUtf8(text));
}

TEST(CliPipelineFormat, RollbackPreviewNamesTheVersionThatBecomesLive) {
  // After a swap: production on Code2 (v2); Code1 still runs v1 behind the test listener.
  json s = kStatus;
  s["live"] = "Code2";
  s["services"][1]["rollout"] = nullptr;
  RollbackPreview p = PreviewRollback(s, "demo");
  EXPECT_TRUE(p.possible);
  EXPECT_EQ(p.text,
            "rolling back demo makes v1 live: production :8000 goes to Code1 (v1), and "
            "Code2 (v2, live now) moves behind the test listener :8001");

  // An execution waiting at Review holds the stack: serve would refuse; say so before asking.
  s["execution"] = kWaitingExecution;
  p = PreviewRollback(s, "demo");
  EXPECT_FALSE(p.possible);
  EXPECT_EQ(p.text,
            "execution 3 is in Review (WaitingForApproval): a rollback now could make a version "
            "live that nobody approved; reject it first (bluegreen reject demo)");
  s["execution"]["status"] = "Rejected";
  EXPECT_TRUE(PreviewRollback(s, "demo").possible);
  s["execution"]["status"] = "InProgress";
  s["execution"]["stage"] = "Build";  // a build does not hold the stack
  EXPECT_TRUE(PreviewRollback(s, "demo").possible);
  s["execution"]["stage"] = "Swap";
  EXPECT_EQ(PreviewRollback(s, "demo").text,
            "execution 3 is in Swap (InProgress): a rollback now could make a version live that "
            "nobody approved; wait until it has ended");

  json fresh = kNewStatus;
  p = PreviewRollback(fresh, "demo");
  EXPECT_FALSE(p.possible);
  EXPECT_EQ(p.text, "the test side (Code2) runs no version: there is nothing to roll back to");
  EXPECT_TRUE(PreviewRollback(json(), "demo").possible);  // serve decides
}

TEST(CliPipelineFormat, HintsForThePipeline) {
  EXPECT_EQ(HintForApiError("approve", "demo", 409, "conflict"),
            "see where the executions of demo are: bluegreen executions demo");
  EXPECT_EQ(HintForApiError("release", "demo", 409, "conflict"), "");
  EXPECT_NE(HintForApiError("rollback", "demo", 409, "conflict").find("bluegreen executions demo"),
            std::string::npos);
  EXPECT_NE(HintForApiError("logs", "demo", 404, "not_found").find("bluegreen executions demo"),
            std::string::npos);
  EXPECT_TRUE(IsSecretKey("git_token"));
  EXPECT_TRUE(IsSecretKey("webhook_secret"));
  EXPECT_FALSE(IsSecretKey("admin_token"));
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "bg-cli-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& text) const {
    std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }

 private:
  std::string path_;
};

TEST(CliToken, EnvironmentFirstThenTheFile) {
  TempDir dir;
  dir.Write("admin.token", "bg_filetoken\n");
  Result<std::string> t = LoadToken("  bg_envtoken \n", dir.path());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, "bg_envtoken");
  t = LoadToken("", dir.path());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, "bg_filetoken");
  t = LoadToken("   ", dir.path());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, "bg_filetoken");
}

TEST(CliToken, NeitherSaysBoth) {
  TempDir dir;
  Result<std::string> t = LoadToken("", dir.path());
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kUnauthenticated);
  EXPECT_NE(t.status().message().find("BLUEGREEN_TOKEN"), std::string::npos);
  EXPECT_NE(t.status().message().find(dir.path() + "/admin.token does not exist"),
            std::string::npos)
      << t.status().message();

  dir.Write("admin.token", " \n");
  t = LoadToken("", dir.path());
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("admin.token is empty"), std::string::npos);
}

// A stand-in for `bluegreen serve`: answers with `handler` on its own thread and records every
// request.
class FakeServe {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  explicit FakeServe(Handler handler)
      : handler_(std::move(handler)),
        server_(io_, [this](const HttpRequest& request, HttpServer::Respond respond) {
          {
            std::lock_guard<std::mutex> lock(mu_);
            requests_.push_back(request);
          }
          respond(handler_(request));
        }) {
    Status st = server_.Listen("127.0.0.1:0");
    EXPECT_TRUE(st.ok()) << st.message();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~FakeServe() {
    io_.stop();
    thread_.join();
  }

  std::string address() const { return "http://" + server_.address(); }
  std::vector<HttpRequest> requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  boost::asio::io_context io_;
  Handler handler_;
  HttpServer server_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<HttpRequest> requests_;
};

HttpResponse ApiErrorResponse(int status, const std::string& code, const std::string& message) {
  return HttpResponse::Json(status, json{{"error", {{"code", code}, {"message", message}}}}.dump());
}

constexpr char kStackFile[] = R"(name: demo
source:
  repo: /srv/git/demo.git
service:
  command: ["./server", "--port", "${PORT}"]
  desired_count: 2
load_balancer:
  production: {port: 8000}
  test: {port: 8001}
)";

class CliCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::setenv("BLUEGREEN_TOKEN", "bg_test", 1);
    client_.state_dir = dir_.path();
    client_.out = &out_;
    client_.err = &err_;
    client_.poll_interval = std::chrono::milliseconds(5);
    client_.request_timeout = std::chrono::seconds(5);
  }
  void TearDown() override { ::unsetenv("BLUEGREEN_TOKEN"); }

  TempDir dir_;
  ClientOptions client_;
  std::ostringstream out_;
  std::ostringstream err_;
};

TEST_F(CliCommandTest, StatusSendsTheTokenAndPrintsText) {
  FakeServe serve([](const HttpRequest&) { return HttpResponse::Json(200, kStatus.dump()); });
  client_.api = serve.address();
  EXPECT_EQ(RunStatus(client_, "demo"), kExitOk);
  EXPECT_EQ(out_.str(), FormatStatus(kStatus));
  std::vector<HttpRequest> r = serve.requests();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].method, "GET");
  EXPECT_EQ(r[0].target, "/api/v1/stacks/demo");
  EXPECT_EQ(r[0].Header("Authorization"), "Bearer bg_test");
}

TEST_F(CliCommandTest, StatusJsonIsTheServersJsonIndented) {
  FakeServe serve([](const HttpRequest&) { return HttpResponse::Json(200, kStatus.dump()); });
  client_.api = serve.address();
  client_.json = true;
  EXPECT_EQ(RunStatus(client_, "demo"), kExitOk);
  EXPECT_EQ(out_.str(), kStatus.dump(2) + "\n");
}

TEST_F(CliCommandTest, NotFoundIsExit3WithTheServersMessage) {
  FakeServe serve(
      [](const HttpRequest&) { return ApiErrorResponse(404, "not_found", "no stack named nope"); });
  client_.api = serve.address();
  EXPECT_EQ(RunStatus(client_, "nope"), kExitNotFound);
  EXPECT_EQ(err_.str(),
            "error: no stack named nope\nhint: list the stacks with: bluegreen stacks\n");
  EXPECT_EQ(out_.str(), "");
}

TEST_F(CliCommandTest, RefusedTokenIsExit4AndSaysWhereTheTokenCameFrom) {
  FakeServe serve([](const HttpRequest&) {
    return ApiErrorResponse(401, "unauthenticated", "a valid token is needed");
  });
  client_.api = serve.address();
  EXPECT_EQ(RunStacks(client_), kExitUnauthorized);
  EXPECT_NE(err_.str().find("error: a valid token is needed\n"), std::string::npos);
  EXPECT_NE(err_.str().find("hint: the token was read from $BLUEGREEN_TOKEN;"), std::string::npos)
      << err_.str();
}

TEST_F(CliCommandTest, NoTokenIsExit4WithoutACall) {
  FakeServe serve([](const HttpRequest&) { return HttpResponse::Json(200, "{}"); });
  client_.api = serve.address();
  ::unsetenv("BLUEGREEN_TOKEN");
  EXPECT_EQ(RunStacks(client_), kExitUnauthorized);
  EXPECT_NE(err_.str().find("BLUEGREEN_TOKEN is not set and " + dir_.path() + "/admin.token"),
            std::string::npos)
      << err_.str();
  EXPECT_TRUE(serve.requests().empty());
}

TEST_F(CliCommandTest, UnreachableIsExit5AndSaysHowToStartServe) {
  // A port nobody listens on: bind one, then close it.
  std::string address;
  {
    boost::asio::io_context io;
    HttpServer probe(io, [](const HttpRequest&, HttpServer::Respond) {});
    ASSERT_TRUE(probe.Listen("127.0.0.1:0").ok());
    address = probe.address();
    probe.Close();
  }
  client_.api = address;
  EXPECT_EQ(RunStacks(client_), kExitUnreachable);
  EXPECT_NE(err_.str().find("error: cannot reach bluegreen serve at " + address), std::string::npos)
      << err_.str();
  EXPECT_NE(err_.str().find("is `bluegreen serve` running? start it with: bluegreen serve "
                            "--state-dir " +
                            dir_.path()),
            std::string::npos)
      << err_.str();
}

TEST_F(CliCommandTest, StacksTable) {
  FakeServe serve([](const HttpRequest&) { return HttpResponse::Json(200, R"({"stacks": []})"); });
  client_.api = serve.address();
  EXPECT_EQ(RunStacks(client_), kExitOk);
  EXPECT_EQ(out_.str(), "no stacks yet: create one with bluegreen up -f stack.yaml\n");
  EXPECT_EQ(serve.requests().at(0).target, "/api/v1/stacks");
}

TEST_F(CliCommandTest, UpInvalidFileIsExit2WithoutACall) {
  FakeServe serve([](const HttpRequest&) { return HttpResponse::Json(500, "{}"); });
  client_.api = serve.address();
  std::string file = dir_.Write("stack.yaml", "name: Demo\n");
  EXPECT_EQ(RunUp(client_, UpOptions{file, true}), kExitBadInput);
  EXPECT_NE(err_.str().find(file + ": line 1: name: "), std::string::npos) << err_.str();
  EXPECT_NE(err_.str().find(file + ": line 1: load_balancer: "), std::string::npos) << err_.str();
  EXPECT_TRUE(serve.requests().empty());
}

TEST_F(CliCommandTest, UpMissingFileIsExit2WithThePath) {
  EXPECT_EQ(RunUp(client_, UpOptions{dir_.path() + "/nope.yaml", true}), kExitBadInput);
  EXPECT_EQ(err_.str(), "error: cannot read stack file " + dir_.path() +
                            "/nope.yaml: No such file or directory\n");
}

TEST_F(CliCommandTest, UpRefusedByServeShowsEachProblemWithTheFileName) {
  FakeServe serve([](const HttpRequest&) {
    return ApiErrorResponse(400, "invalid_stack_file",
                            "line 6: service.desired_count: too many\nline 8: x: bad");
  });
  client_.api = serve.address();
  std::string file = dir_.Write("stack.yaml", kStackFile);
  EXPECT_EQ(RunUp(client_, UpOptions{file, true}), kExitBadInput);
  EXPECT_NE(err_.str().find(file + ": line 6: service.desired_count: too many\n" + file +
                            ": line 8: x: bad\n"),
            std::string::npos)
      << err_.str();
}

TEST_F(CliCommandTest, UpPortConflictIsExit6) {
  FakeServe serve([](const HttpRequest&) {
    return ApiErrorResponse(409, "conflict", "port 8000 is already a listener of stack shop");
  });
  client_.api = serve.address();
  std::string file = dir_.Write("stack.yaml", kStackFile);
  EXPECT_EQ(RunUp(client_, UpOptions{file, true}), kExitConflict);
  EXPECT_NE(err_.str().find("error: port 8000 is already a listener of stack shop\nhint: "),
            std::string::npos)
      << err_.str();
}

TEST_F(CliCommandTest, UpPutsTheFileAndSaysThereIsNoVersionYet) {
  FakeServe serve([](const HttpRequest&) {
    json answer = {{"name", "demo"},
                   {"created", true},
                   {"changes", {"create listener production on port 8000 -> demo-blue"}},
                   {"status", kNewStatus}};
    return HttpResponse::Json(201, answer.dump());
  });
  client_.api = serve.address();
  std::string file = dir_.Write("stack.yaml", kStackFile);
  EXPECT_EQ(RunUp(client_, UpOptions{file, true}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(),
            "created stack demo\n"
            "  + create listener production on port 8000 -> demo-blue\n"
            "no version deployed yet: run `bluegreen deploy demo --version V --artifact DIR` (or "
            "push a commit when the pipeline is set up)\n");
  std::vector<HttpRequest> r = serve.requests();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].method, "PUT");
  EXPECT_EQ(r[0].target, "/api/v1/stacks/demo");
  EXPECT_EQ(r[0].body, kStackFile);
  EXPECT_EQ(r[0].Header("Content-Type"), "application/yaml");
}

TEST_F(CliCommandTest, UpWaitsUntilTheTasksRun) {
  std::atomic<int> polls{0};
  FakeServe serve([&polls](const HttpRequest& r) {
    json s = WithCode2(nullptr, {{"running_count", 0}});
    if (r.method == "PUT") {
      return HttpResponse::Json(
          200, json{{"name", "demo"}, {"created", false}, {"changes", json::array()}, {"status", s}}
                   .dump());
    }
    int n = ++polls;
    s["services"][1]["running_count"] = n >= 3 ? 2 : 1;
    return HttpResponse::Json(200, s.dump());
  });
  client_.api = serve.address();
  std::string file = dir_.Write("stack.yaml", kStackFile);
  EXPECT_EQ(RunUp(client_, UpOptions{file, true}), kExitOk) << err_.str();
  std::string out = out_.str();
  EXPECT_EQ(out.find("stack demo is up to date\nwaiting (up to 5m)...\n"
                     "  Code1 v1: 2/2 running\n"
                     "  Code2 v2: 0/2 running\n"
                     "  Code2 v2: 1/2 running\n"
                     "  Code2 v2: 2/2 running\n"
                     "demo (runtime: process)\n"),
            0u)
      << out;
  EXPECT_EQ(polls.load(), 3);
}

TEST_F(CliCommandTest, UpTimesOutSayingWhatIsMissing) {
  FakeServe serve([](const HttpRequest& r) {
    json s = WithCode2(nullptr, {{"running_count", 1}});
    if (r.method == "PUT") {
      return HttpResponse::Json(
          200, json{{"name", "demo"}, {"created", false}, {"changes", json::array()}, {"status", s}}
                   .dump());
    }
    return HttpResponse::Json(200, s.dump());
  });
  client_.api = serve.address();
  std::string file = dir_.Write("stack.yaml", kStackFile);
  UpOptions up{file, true, std::chrono::milliseconds(50)};
  EXPECT_EQ(RunUp(client_, up), kExitFailed);
  EXPECT_NE(err_.str().find("error: timed out after 50ms waiting for stack demo: Code2 v2: 1/2 "
                            "running\n"),
            std::string::npos)
      << err_.str();
}

TEST_F(CliCommandTest, UpJsonIsThePutAnswerWithTheLastStatus) {
  std::atomic<int> polls{0};
  FakeServe serve([&polls](const HttpRequest& r) {
    json s = WithCode2(nullptr, {{"running_count", 1}});
    if (r.method == "PUT") {
      return HttpResponse::Json(
          200, json{{"name", "demo"}, {"created", false}, {"changes", json::array()}, {"status", s}}
                   .dump());
    }
    ++polls;
    s["services"][1]["running_count"] = 2;
    return HttpResponse::Json(200, s.dump());
  });
  client_.api = serve.address();
  client_.json = true;
  std::string file = dir_.Write("stack.yaml", kStackFile);
  EXPECT_EQ(RunUp(client_, UpOptions{file, true}), kExitOk) << err_.str();
  json printed = json::parse(out_.str());
  EXPECT_EQ(printed["name"], "demo");
  EXPECT_EQ(printed["status"]["services"][1]["running_count"], 2);
  EXPECT_EQ(polls.load(), 1);
}

TEST_F(CliCommandTest, DownWithPurge) {
  FakeServe serve([](const HttpRequest&) {
    return HttpResponse::Json(200, R"({"name": "demo", "removed": true, "purged": true})");
  });
  client_.api = serve.address();
  EXPECT_EQ(RunDown(client_, DownOptions{"demo", true}), kExitOk);
  EXPECT_EQ(out_.str(),
            "removing stack demo (its tasks drain first)...\n"
            "removed stack demo and its history (versions, events)\n");
  std::vector<HttpRequest> r = serve.requests();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].method, "DELETE");
  EXPECT_EQ(r[0].target, "/api/v1/stacks/demo?purge=true");
}

// A serve that takes a version, starts a rollout of it on Code2 and reports `final_rollout`
// after two polls (null: done).
HttpResponse DeployServe(const HttpRequest& r, std::atomic<int>* polls, const json& final_rollout) {
  if (r.method == "POST" && r.path == "/api/v1/stacks/demo/versions") {
    json v = json::parse(r.body);
    v["image"] = "";
    return HttpResponse::Json(201, v.dump());
  }
  if (r.method == "POST" && r.path == "/api/v1/stacks/demo/deploy") {
    return HttpResponse::Json(
        202, json{{"name", "demo"}, {"version", "v3"}, {"services", {"Code2"}}}.dump());
  }
  json s = kStatus;
  if (++*polls >= 3) {
    s["services"][1]["rollout"] = final_rollout;
    if (final_rollout.is_null()) {
      s["services"][1]["version"] = "v3";
      s["tasks"][2]["state"] = "running";
    }
  }
  return HttpResponse::Json(200, s.dump());
}

TEST_F(CliCommandTest, DeployRegistersDeploysAndWaits) {
  std::atomic<int> polls{0};
  FakeServe serve([&polls](const HttpRequest& r) { return DeployServe(r, &polls, nullptr); });
  client_.api = serve.address();
  std::filesystem::create_directory(dir_.path() + "/build");
  std::filesystem::path cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir_.path());
  DeployOptions d;
  d.name = "demo";
  d.version = "v3";
  d.artifact_dir = "build/";
  int rc = RunDeploy(client_, d);
  std::filesystem::current_path(cwd);
  EXPECT_EQ(rc, kExitOk) << err_.str();

  std::vector<HttpRequest> r = serve.requests();
  ASSERT_GE(r.size(), 3u);
  EXPECT_EQ(r[0].target, "/api/v1/stacks/demo/versions");
  EXPECT_EQ(json::parse(r[0].body),
            (json{{"version", "v3"}, {"artifact_dir", dir_.path() + "/build"}}));
  EXPECT_EQ(r[0].Header("Content-Type"), "application/json");
  EXPECT_EQ(r[1].target, "/api/v1/stacks/demo/deploy");
  EXPECT_EQ(json::parse(r[1].body), (json{{"version", "v3"}}));
  EXPECT_EQ(r[2].method, "GET");
  EXPECT_EQ(r[2].target, "/api/v1/stacks/demo");

  std::string out = out_.str();
  EXPECT_EQ(out.find("registered version v3 (artifact " + dir_.path() +
                     "/build)\n"
                     "deploying v3 to Code2 (the side behind the test listener)\n"
                     "waiting (up to 10m)...\n"
                     "  Code2 v3: 0/2 running, 1 starting\n"
                     "  Code2 v3: 1/2 running\n"
                     "deployed v3 to Code2\n"
                     "demo (runtime: process)\n"),
            0u)
      << out;
}

TEST_F(CliCommandTest, DeployOfARegisteredVersionOnlyDeploys) {
  std::atomic<int> polls{0};
  FakeServe serve([&polls](const HttpRequest& r) { return DeployServe(r, &polls, nullptr); });
  client_.api = serve.address();
  DeployOptions d;
  d.name = "demo";
  d.version = "v3";
  d.wait = false;
  EXPECT_EQ(RunDeploy(client_, d), kExitOk) << err_.str();
  std::vector<HttpRequest> r = serve.requests();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].target, "/api/v1/stacks/demo/deploy");
  EXPECT_EQ(out_.str(),
            "deploying v3 to Code2 (the side behind the test listener)\n"
            "follow it with: bluegreen status demo\n");
}

TEST_F(CliCommandTest, DeployFailedRolloutIsExit1WithItsErrorAndLogs) {
  std::atomic<int> polls{0};
  json failed = {{"version", "v3"},
                 {"state", "failed"},
                 {"error", "0 of 2 new tasks were healthy after the deploy timeout (5m)"},
                 {"started_at", 1700000000}};
  FakeServe serve([&](const HttpRequest& r) { return DeployServe(r, &polls, failed); });
  client_.api = serve.address();
  DeployOptions d;
  d.name = "demo";
  d.version = "v3";
  d.image = "localhost/demo:v3";
  EXPECT_EQ(RunDeploy(client_, d), kExitFailed);
  EXPECT_EQ(err_.str(),
            "error: the deploy of v3 failed: Code2: 0 of 2 new tasks were healthy after the "
            "deploy timeout (5m)\n"
            "hint: the new tasks' logs: /var/lib/bluegreen/logs/demo/11.log\n");
  EXPECT_EQ(json::parse(serve.requests().at(0).body),
            (json{{"version", "v3"}, {"image", "localhost/demo:v3"}}));
}

TEST_F(CliCommandTest, DeployJsonIsTheDeployAnswerWithTheLastStatus) {
  std::atomic<int> polls{0};
  FakeServe serve([&polls](const HttpRequest& r) { return DeployServe(r, &polls, nullptr); });
  client_.api = serve.address();
  client_.json = true;
  DeployOptions d;
  d.name = "demo";
  d.version = "v3";
  EXPECT_EQ(RunDeploy(client_, d), kExitOk) << err_.str();
  json printed = json::parse(out_.str());
  EXPECT_EQ(printed["version"], "v3");
  EXPECT_EQ(printed["services"], json::array({"Code2"}));
  EXPECT_EQ(printed["status"]["services"][1]["version"], "v3");
}

TEST_F(CliCommandTest, DeployConflictIsExit6) {
  FakeServe serve([](const HttpRequest&) {
    return ApiErrorResponse(409, "conflict",
                            "Code2 is already rolling out version v2; wait for it");
  });
  client_.api = serve.address();
  DeployOptions d;
  d.name = "demo";
  d.version = "v3";
  EXPECT_EQ(RunDeploy(client_, d), kExitConflict);
  EXPECT_EQ(err_.str(),
            "error: Code2 is already rolling out version v2; wait for it\n"
            "hint: a rollout is in progress: follow it with: bluegreen status demo\n");
}

TEST_F(CliCommandTest, DeployTimesOut) {
  std::atomic<int> polls{0};
  FakeServe serve([&polls](const HttpRequest& r) {
    json in_progress = {{"version", "v3"}, {"state", "in_progress"}};
    return DeployServe(r, &polls, in_progress);
  });
  client_.api = serve.address();
  DeployOptions d;
  d.name = "demo";
  d.version = "v3";
  d.timeout = std::chrono::milliseconds(50);
  EXPECT_EQ(RunDeploy(client_, d), kExitFailed);
  EXPECT_NE(err_.str().find("error: timed out after 50ms waiting for the deploy of v3: Code2: "
                            "rollout of v3 in progress\n"),
            std::string::npos)
      << err_.str();
}

// ---------------------------------------------------------------------------------------------
// The pipeline's commands against a fake serve.

class CliPipelineCommandTest : public CliCommandTest {};

TEST_F(CliPipelineCommandTest, ReleaseStartsAnExecution) {
  FakeServe serve([](const HttpRequest&) {
    json e = kWaitingExecution;
    e["id"] = 4;
    e["status"] = "InProgress";
    e["stage"] = "Source";
    return HttpResponse::Json(202, json{{"execution", e}}.dump());
  });
  client_.api = serve.address();
  EXPECT_EQ(RunRelease(client_, "demo"), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(),
            "started execution 4 of demo (follow it: bluegreen executions demo; its build "
            "output: bluegreen logs demo 4 --follow)\n");
  std::vector<HttpRequest> r = serve.requests();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].method, "POST");
  EXPECT_EQ(r[0].target, "/api/v1/stacks/demo/release");
}

TEST_F(CliPipelineCommandTest, ReleaseOfAStackWithoutSourceIsExit6WithServesMessage) {
  FakeServe serve([](const HttpRequest&) {
    return ApiErrorResponse(409, "conflict",
                            "stack demo has no source: add source.repo to its stack file, or "
                            "deploy by hand with bluegreen deploy");
  });
  client_.api = serve.address();
  EXPECT_EQ(RunRelease(client_, "demo"), kExitConflict);
  EXPECT_EQ(err_.str(),
            "error: stack demo has no source: add source.repo to its stack file, or deploy by "
            "hand with bluegreen deploy\n");
}

TEST_F(CliPipelineCommandTest, ApproveSendsTheCommentAndSaysWhatHappens) {
  FakeServe serve([](const HttpRequest&) {
    json e = kWaitingExecution;
    e["status"] = "InProgress";
    e["stage"] = "Swap";
    e["approved_by"] = "admin";
    return HttpResponse::Json(200, json{{"execution", e}}.dump());
  });
  client_.api = serve.address();
  EXPECT_EQ(RunApprove(client_, ReviewOptions{"demo", "looks good"}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(),
            "approved execution 3 (version 3-9f1c2ab): swapping production to it (see the "
            "result: bluegreen status demo)\n");
  std::vector<HttpRequest> r = serve.requests();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].method, "POST");
  EXPECT_EQ(r[0].target, "/api/v1/stacks/demo/approve");
  EXPECT_EQ(json::parse(r[0].body), (json{{"comment", "looks good"}}));
}

TEST_F(CliPipelineCommandTest, ApproveWithNothingWaitingIsExit6) {
  FakeServe serve([](const HttpRequest&) {
    return ApiErrorResponse(409, "conflict", "no execution of demo is waiting for approval");
  });
  client_.api = serve.address();
  EXPECT_EQ(RunApprove(client_, ReviewOptions{"demo", ""}), kExitConflict);
  EXPECT_EQ(err_.str(),
            "error: no execution of demo is waiting for approval\n"
            "hint: see where the executions of demo are: bluegreen executions demo\n");
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(json::parse(serve.requests().at(0).body), json::object());
}

TEST_F(CliPipelineCommandTest, RejectJsonIsTheServersAnswer) {
  json e = kWaitingExecution;
  e["status"] = "Rejected";
  e["reason"] = "rejected by admin: broken header";
  FakeServe serve([&e](const HttpRequest&) {
    return HttpResponse::Json(200, json{{"execution", e}}.dump());
  });
  client_.api = serve.address();
  client_.json = true;
  EXPECT_EQ(RunReject(client_, ReviewOptions{"demo", "broken header"}), kExitOk);
  EXPECT_EQ(json::parse(out_.str()), (json{{"execution", e}}));
  EXPECT_EQ(serve.requests().at(0).target, "/api/v1/stacks/demo/reject");
}

// kStatus after a swap to Code2 (v2): Code1 still runs v1 behind the test listener.
json SwappedStatus() {
  json s = kStatus;
  s["live"] = "Code2";
  s["services"][1]["rollout"] = nullptr;
  s["execution"] = nullptr;
  return s;
}

// A serve that takes a rollback (execution 5) and reports it ended with `final_status` after
// two polls.
HttpResponse RollbackServe(const HttpRequest& r, std::atomic<int>* polls,
                           const std::string& final_status, const std::string& reason) {
  json e = {{"id", 5},
            {"stack", "demo"},
            {"kind", "rollback"},
            {"trigger", "rollback"},
            {"status", "InProgress"},
            {"stage", "Swap"},
            {"version", "v1"},
            {"reason", ""},
            {"approved_by", "admin"}};
  if (r.method == "GET" && r.path == "/api/v1/stacks/demo") {
    return HttpResponse::Json(200, SwappedStatus().dump());
  }
  if (r.method == "POST" && r.path == "/api/v1/stacks/demo/rollback") {
    return HttpResponse::Json(202, json{{"execution", e}}.dump());
  }
  if (r.method == "GET" && r.path == "/api/v1/stacks/demo/executions/5") {
    if (++*polls >= 2) {
      e["status"] = final_status;
      e["reason"] = reason;
    }
    return HttpResponse::Json(200, e.dump());
  }
  return ApiErrorResponse(404, "not_found", "no such path: " + r.path);
}

TEST_F(CliPipelineCommandTest, RollbackWithYesWaitsUntilItSucceeded) {
  std::atomic<int> polls{0};
  FakeServe serve([&polls](const HttpRequest& r) {
    return RollbackServe(r, &polls, "Succeeded", "v1 is live on Code1 (was v2)");
  });
  client_.api = serve.address();
  RollbackOptions o;
  o.name = "demo";
  o.comment = "errors after the release";
  o.yes = true;
  EXPECT_EQ(RunRollback(client_, o), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(),
            "rolling back demo makes v1 live: production :8000 goes to Code1 (v1), and "
            "Code2 (v2, live now) moves behind the test listener :8001\n"
            "rolling back: execution 5 swaps production to v1...\n"
            "rolled back demo: v1 is live on Code1 (was v2)\n");
  std::vector<HttpRequest> r = serve.requests();
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].method, "GET");
  EXPECT_EQ(r[0].target, "/api/v1/stacks/demo");
  EXPECT_EQ(r[1].method, "POST");
  EXPECT_EQ(r[1].target, "/api/v1/stacks/demo/rollback");
  EXPECT_EQ(json::parse(r[1].body), (json{{"comment", "errors after the release"}}));
  EXPECT_EQ(r[2].target, "/api/v1/stacks/demo/executions/5");
  EXPECT_EQ(r[3].target, "/api/v1/stacks/demo/executions/5");
  EXPECT_EQ(polls.load(), 2);
}

TEST_F(CliPipelineCommandTest, RollbackThatFailsIsExit1WithTheReason) {
  std::atomic<int> polls{0};
  FakeServe serve([&polls](const HttpRequest& r) {
    return RollbackServe(r, &polls, "Failed",
                         "the test side (Code1) has no healthy target; nothing was swapped");
  });
  client_.api = serve.address();
  RollbackOptions o;
  o.name = "demo";
  o.yes = true;
  EXPECT_EQ(RunRollback(client_, o), kExitFailed);
  EXPECT_EQ(err_.str(),
            "error: the rollback (execution 5) ended Failed: the test side (Code1) has no "
            "healthy target; nothing was swapped\n"
            "hint: see what runs where: bluegreen status demo\n");
}

TEST_F(CliPipelineCommandTest, RollbackJsonIsTheAnswerWithTheLastExecution) {
  std::atomic<int> polls{0};
  FakeServe serve([&polls](const HttpRequest& r) {
    return RollbackServe(r, &polls, "Succeeded", "v1 is live on Code1 (was v2)");
  });
  client_.api = serve.address();
  client_.json = true;
  RollbackOptions o;
  o.name = "demo";
  o.yes = true;
  EXPECT_EQ(RunRollback(client_, o), kExitOk) << err_.str();
  json printed = json::parse(out_.str());
  EXPECT_EQ(printed["execution"]["status"], "Succeeded");
  EXPECT_EQ(printed["execution"]["id"], 5);
  // The preview went to stderr, keeping stdout for the JSON.
  EXPECT_NE(err_.str().find("makes v1 live"), std::string::npos) << err_.str();
}

TEST_F(CliPipelineCommandTest, RollbackWithoutYesAndNoTerminalIsExit2WithoutARollback) {
  std::atomic<int> polls{0};
  FakeServe serve([&polls](const HttpRequest& r) { return RollbackServe(r, &polls, "", ""); });
  client_.api = serve.address();
  client_.interactive = false;
  EXPECT_EQ(RunRollback(client_, RollbackOptions{"demo", ""}), kExitBadInput);
  EXPECT_NE(err_.str().find("error: add --yes to confirm"), std::string::npos) << err_.str();
  std::vector<HttpRequest> r = serve.requests();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].method, "GET");
}

TEST_F(CliPipelineCommandTest, RollbackAsksOnATerminal) {
  std::atomic<int> polls{0};
  FakeServe serve([&polls](const HttpRequest& r) {
    return RollbackServe(r, &polls, "Succeeded", "v1 is live on Code1 (was v2)");
  });
  client_.api = serve.address();
  client_.interactive = true;

  std::istringstream no("n\n");
  client_.in = &no;
  EXPECT_EQ(RunRollback(client_, RollbackOptions{"demo", ""}), kExitFailed);
  EXPECT_EQ(err_.str(), "roll back? [y/N] not rolled back: nothing was changed\n");
  EXPECT_EQ(serve.requests().size(), 1u);

  err_.str("");
  out_.str("");
  std::istringstream yes("yes\n");
  client_.in = &yes;
  EXPECT_EQ(RunRollback(client_, RollbackOptions{"demo", ""}), kExitOk) << err_.str();
  EXPECT_EQ(err_.str(), "roll back? [y/N] ");
  EXPECT_NE(out_.str().find("rolled back demo: v1 is live on Code1 (was v2)\n"), std::string::npos)
      << out_.str();
}

TEST_F(CliPipelineCommandTest, RollbackWithNothingOnTheTestSideIsExit6WithoutACall) {
  FakeServe serve([](const HttpRequest&) { return HttpResponse::Json(200, kNewStatus.dump()); });
  client_.api = serve.address();
  RollbackOptions o;
  o.name = "demo";
  o.yes = true;
  EXPECT_EQ(RunRollback(client_, o), kExitConflict);
  EXPECT_NE(err_.str().find("error: the test side (Code2) runs no version: there is nothing to "
                            "roll back to\n"),
            std::string::npos)
      << err_.str();
  EXPECT_EQ(serve.requests().size(), 1u);
}

TEST_F(CliPipelineCommandTest, RollbackRefusedByServeIsExit6) {
  FakeServe serve([](const HttpRequest& r) {
    if (r.method == "GET") return HttpResponse::Json(200, SwappedStatus().dump());
    return ApiErrorResponse(409, "conflict",
                            "execution 6 is in Review (WaitingForApproval): a rollback now would "
                            "make an unapproved version live; reject it first (bluegreen reject "
                            "demo)");
  });
  client_.api = serve.address();
  RollbackOptions o;
  o.name = "demo";
  o.yes = true;
  EXPECT_EQ(RunRollback(client_, o), kExitConflict);
  EXPECT_NE(err_.str().find("error: execution 6 is in Review"), std::string::npos) << err_.str();
}

TEST_F(CliPipelineCommandTest, RollbackNoWaitReturnsOnceStarted) {
  std::atomic<int> polls{0};
  FakeServe serve([&polls](const HttpRequest& r) { return RollbackServe(r, &polls, "", ""); });
  client_.api = serve.address();
  RollbackOptions o;
  o.name = "demo";
  o.yes = true;
  o.wait = false;
  EXPECT_EQ(RunRollback(client_, o), kExitOk);
  EXPECT_NE(out_.str().find("started the rollback: execution 5 (follow it with: bluegreen "
                            "executions demo)\n"),
            std::string::npos)
      << out_.str();
  EXPECT_EQ(serve.requests().size(), 2u);
}

TEST_F(CliPipelineCommandTest, ExecutionsTableAndJson) {
  FakeServe serve(
      [](const HttpRequest&) { return HttpResponse::Json(200, ExecutionsAnswer().dump()); });
  client_.api = serve.address();
  EXPECT_EQ(RunExecutions(client_, ExecutionsOptions{"demo", 20}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str().find("ID  STATUS              STAGE   VERSION    COMMIT   MESSAGE"), 0u)
      << out_.str();
  EXPECT_EQ(serve.requests().at(0).target, "/api/v1/stacks/demo/executions");

  out_.str("");
  client_.json = true;
  EXPECT_EQ(RunExecutions(client_, ExecutionsOptions{"demo", 0}), kExitOk);
  EXPECT_EQ(json::parse(out_.str()), ExecutionsAnswer());
  out_.str("");
  EXPECT_EQ(RunExecutions(client_, ExecutionsOptions{"demo", 1}), kExitOk);
  json printed = json::parse(out_.str());
  ASSERT_EQ(printed["executions"].size(), 1u);
  EXPECT_EQ(printed["executions"][0]["id"], 4);
}

TEST_F(CliPipelineCommandTest, LogsWritesTheTextAsItIs) {
  FakeServe serve([](const HttpRequest&) {
    HttpResponse r = HttpResponse::Text(200, "$ make\nok\nno newline at the end");
    r.headers.emplace_back("X-Execution", "4");
    r.headers.emplace_back("X-Log-Offset", "34");
    r.headers.emplace_back("X-Log-Complete", "false");
    return r;
  });
  client_.api = serve.address();
  EXPECT_EQ(RunLogs(client_, LogsOptions{"demo"}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), "$ make\nok\nno newline at the end");
  std::vector<HttpRequest> r = serve.requests();
  ASSERT_EQ(r.size(), 1u);  // without --follow, one look
  EXPECT_EQ(r[0].target, "/api/v1/stacks/demo/executions/latest/log");
}

TEST_F(CliPipelineCommandTest, LogsFollowStitchesTheOffsetsUntilComplete) {
  // The log grows over four calls; the execution is pinned after "latest" is resolved.
  const std::string log = "[Source] 9f1c2ab\n[Build] $ make\ncc -o app app.c\n[Build] done\n";
  std::atomic<int> calls{0};
  FakeServe serve([&](const HttpRequest& req) {
    const int n = ++calls;
    size_t offset = 0;
    if (req.query.starts_with("offset=")) offset = std::stoul(req.query.substr(7));
    const size_t available = n == 1 ? 17 : n == 2 ? 17 : n == 3 ? 48 : log.size();
    HttpResponse r = HttpResponse::Text(200, log.substr(offset, available - offset));
    r.headers.emplace_back("X-Execution", "4");
    r.headers.emplace_back("X-Log-Offset", std::to_string(available));
    r.headers.emplace_back("X-Log-Complete", n >= 4 ? "true" : "false");
    return r;
  });
  client_.api = serve.address();
  LogsOptions o{"demo"};
  o.follow = true;
  EXPECT_EQ(RunLogs(client_, o), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), log);
  std::vector<HttpRequest> r = serve.requests();
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].target, "/api/v1/stacks/demo/executions/latest/log");
  EXPECT_EQ(r[1].target, "/api/v1/stacks/demo/executions/4/log?offset=17");
  EXPECT_EQ(r[2].target, "/api/v1/stacks/demo/executions/4/log?offset=17");
  EXPECT_EQ(r[3].target, "/api/v1/stacks/demo/executions/4/log?offset=48");
}

TEST_F(CliPipelineCommandTest, LogsOfNoExecutionIsExit3) {
  FakeServe serve([](const HttpRequest&) {
    return ApiErrorResponse(404, "not_found", "no execution 9 of demo");
  });
  client_.api = serve.address();
  EXPECT_EQ(RunLogs(client_, LogsOptions{"demo", "9"}), kExitNotFound);
  EXPECT_EQ(err_.str(),
            "error: no execution 9 of demo\n"
            "hint: list the executions with: bluegreen executions demo (and the stacks with: "
            "bluegreen stacks)\n");
  EXPECT_EQ(serve.requests().at(0).target, "/api/v1/stacks/demo/executions/9/log");
}

TEST_F(CliPipelineCommandTest, SecretSetSendsTheValueAndNeverPrintsIt) {
  FakeServe serve([](const HttpRequest&) {
    return HttpResponse::Json(200, R"({"name": "demo", "secret": "git_token", "set": true})");
  });
  client_.api = serve.address();
  std::istringstream in("ghp_s3cr3tV4lue\r\nsecond line\n");
  client_.in = &in;
  EXPECT_EQ(RunSecretSet(client_, SecretOptions{"demo", "git_token"}), kExitOk) << err_.str();
  std::vector<HttpRequest> r = serve.requests();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].method, "PUT");
  EXPECT_EQ(r[0].target, "/api/v1/stacks/demo/secrets/git_token");
  EXPECT_EQ(r[0].Header("Content-Type"), "text/plain");
  EXPECT_EQ(r[0].body, "ghp_s3cr3tV4lue");
  EXPECT_EQ(out_.str(), "set git_token of stack demo (the value is not shown)\n");
  EXPECT_EQ(out_.str().find("s3cr3t"), std::string::npos);
  EXPECT_EQ(err_.str().find("s3cr3t"), std::string::npos);

  // A refusal does not show it either.
  FakeServe refusing([](const HttpRequest&) {
    return ApiErrorResponse(400, "bad_request", "the secret must be 1 to 4096 bytes");
  });
  client_.api = refusing.address();
  std::istringstream again("ghp_s3cr3tV4lue\n");
  client_.in = &again;
  out_.str("");
  err_.str("");
  EXPECT_EQ(RunSecretSet(client_, SecretOptions{"demo", "webhook_secret"}), kExitBadInput);
  EXPECT_EQ(err_.str(), "error: the secret must be 1 to 4096 bytes\n");
  EXPECT_EQ(out_.str(), "");
}

TEST_F(CliPipelineCommandTest, SecretSetRefusesBadInputWithoutACall) {
  FakeServe serve([](const HttpRequest&) { return HttpResponse::Json(500, "{}"); });
  client_.api = serve.address();
  std::istringstream value("x\n");
  client_.in = &value;
  EXPECT_EQ(RunSecretSet(client_, SecretOptions{"demo", "admin_token"}), kExitBadInput);
  EXPECT_EQ(err_.str(),
            "error: unknown secret \"admin_token\": the secrets are git_token and "
            "webhook_secret\n");

  err_.str("");
  std::istringstream empty("");
  client_.in = &empty;
  EXPECT_EQ(RunSecretSet(client_, SecretOptions{"demo", "git_token"}), kExitBadInput);
  EXPECT_NE(err_.str().find("error: no value for git_token on stdin; nothing was changed\n"),
            std::string::npos)
      << err_.str();

  err_.str("");
  std::istringstream big(std::string(5000, 'a') + "\n");
  client_.in = &big;
  EXPECT_EQ(RunSecretSet(client_, SecretOptions{"demo", "git_token"}), kExitBadInput);
  EXPECT_NE(err_.str().find("is 5000 bytes; the limit is 4096"), std::string::npos) << err_.str();
  EXPECT_TRUE(serve.requests().empty());
}

// ---------------------------------------------------------------------------------------------
// Access: the token commands and the role hints.

TEST(CliErrors, ForbiddenHintNamesTheRoleToAskFor) {
  for (const char* command : {"approve", "reject", "rollback", "release"}) {
    EXPECT_EQ(HintForApiError(command, "demo", 403, "forbidden"),
              "ask an admin for a token with role approver (bluegreen token create NAME --role "
              "approver) and use it: set BLUEGREEN_TOKEN")
        << command;
  }
  for (const char* command : {"up", "down", "deploy", "versions", "secret", "token"}) {
    EXPECT_NE(HintForApiError(command, "demo", 403, "forbidden")
                  .find("ask an admin for a token with role admin"),
              std::string::npos)
        << command;
  }
  EXPECT_EQ(HintForApiError("token", "ci", 404, "not_found"),
            "list the tokens with: bluegreen token list");
  EXPECT_NE(HintForApiError("token", "ci", 409, "conflict").find("choose another name"),
            std::string::npos);
  EXPECT_NE(HintForApiError("status", "demo", 401, "unauthenticated").find("revoked"),
            std::string::npos);
}

TEST(CliText, Tokens) {
  const int64_t now_ms = 1764330000000;
  const json answer = json::parse(R"({"tokens": [
    {"name": "alice", "role": "viewer", "created_at": 1764157200, "created_by": "admin",
     "last_used_at": null},
    {"name": "ci", "role": "approver", "created_at": 1764312000, "created_by": "ops",
     "last_used_at": 1764329820}]})");
  EXPECT_EQ(FormatTokens(answer, now_ms),
            "NAME   ROLE      CREATED  CREATED-BY  LAST-USED\n"
            "alice  viewer    2d ago   admin       never\n"
            "ci     approver  5h ago   ops         3m ago\n");
  EXPECT_EQ(FormatTokens(json::parse(R"({"tokens": []})"), now_ms),
            "no tokens besides the admin token: create one with: bluegreen token create NAME "
            "--role viewer|approver|admin\n");
  // A shape it does not know prints dashes, never throws.
  EXPECT_EQ(FormatTokens(json::parse(R"({"tokens": [{"name": 7}]})"), now_ms),
            "NAME  ROLE  CREATED  CREATED-BY  LAST-USED\n"
            "-     -     -        -           never\n");
}

class CliTokenCommandTest : public CliCommandTest {};

TEST_F(CliTokenCommandTest, CreatePrintsTheTokenAloneOnStdout) {
  const json answer = {{"name", "ci"},
                       {"role", "approver"},
                       {"token", "bg_" + std::string(64, 'e')},
                       {"created_at", 1764330000}};
  FakeServe serve([&answer](const HttpRequest&) { return HttpResponse::Json(201, answer.dump()); });
  client_.api = serve.address();
  EXPECT_EQ(RunTokenCreate(client_, TokenCreateOptions{"ci", "approver"}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), "bg_" + std::string(64, 'e') + "\n");
  EXPECT_NE(err_.str().find("created token ci (role approver): it is shown only this once"),
            std::string::npos)
      << err_.str();
  std::vector<HttpRequest> r = serve.requests();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].method, "POST");
  EXPECT_EQ(r[0].target, "/api/v1/tokens");
  EXPECT_EQ(json::parse(r[0].body), (json{{"name", "ci"}, {"role", "approver"}}));

  out_.str("");
  err_.str("");
  client_.json = true;
  EXPECT_EQ(RunTokenCreate(client_, TokenCreateOptions{"ci", "approver"}), kExitOk);
  EXPECT_EQ(out_.str(), answer.dump(2) + "\n");
  EXPECT_EQ(err_.str(), "");
}

TEST_F(CliTokenCommandTest, CreateOfATakenNameIsExit6) {
  FakeServe serve([](const HttpRequest&) {
    return ApiErrorResponse(409, "conflict", "a token named ci exists");
  });
  client_.api = serve.address();
  EXPECT_EQ(RunTokenCreate(client_, TokenCreateOptions{"ci", "viewer"}), kExitConflict);
  EXPECT_EQ(err_.str(),
            "error: a token named ci exists\n"
            "hint: choose another name; the tokens are listed by: bluegreen token list\n");
  EXPECT_EQ(out_.str(), "");
}

TEST_F(CliTokenCommandTest, ForbiddenIsExit4WithTheRoleToAskFor) {
  FakeServe serve([](const HttpRequest&) {
    return ApiErrorResponse(
        403, "forbidden", "token \"alice\" has role viewer; POST /api/v1/tokens needs role admin");
  });
  client_.api = serve.address();
  EXPECT_EQ(RunTokenCreate(client_, TokenCreateOptions{"ci", "viewer"}), kExitUnauthorized);
  EXPECT_EQ(err_.str(),
            "error: token \"alice\" has role viewer; POST /api/v1/tokens needs role admin\n"
            "hint: the token was read from $BLUEGREEN_TOKEN; ask an admin for a token with role "
            "admin (bluegreen token create NAME --role admin) and use it: set BLUEGREEN_TOKEN\n");
  err_.str("");
  EXPECT_EQ(RunApprove(client_, ReviewOptions{"demo", ""}), kExitUnauthorized);
  EXPECT_NE(err_.str().find("ask an admin for a token with role approver"), std::string::npos)
      << err_.str();
}

TEST_F(CliTokenCommandTest, ListAndRevoke) {
  const json tokens = json::parse(R"({"tokens": [{"name": "ci", "role": "approver",
    "created_at": 1764330000, "created_by": "admin", "last_used_at": null}]})");
  FakeServe serve([&tokens](const HttpRequest& req) {
    if (req.method == "GET") return HttpResponse::Json(200, tokens.dump());
    if (req.target == "/api/v1/tokens/ci") {
      return HttpResponse::Json(200, R"({"name": "ci", "revoked": true})");
    }
    return ApiErrorResponse(404, "not_found", "no token named nope");
  });
  client_.api = serve.address();
  EXPECT_EQ(RunTokenList(client_), kExitOk) << err_.str();
  // The ages count to the real clock: only the columns are fixed.
  EXPECT_EQ(out_.str().rfind("NAME  ROLE      CREATED", 0), 0u) << out_.str();
  EXPECT_NE(out_.str().find("\nci    approver  "), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find(" ago  "), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("  admin       never\n"), std::string::npos) << out_.str();

  out_.str("");
  EXPECT_EQ(RunTokenRevoke(client_, "ci"), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), "revoked token ci: it no longer works\n");
  EXPECT_EQ(RunTokenRevoke(client_, "nope"), kExitNotFound);
  EXPECT_EQ(err_.str(),
            "error: no token named nope\nhint: list the tokens with: bluegreen token list\n");

  out_.str("");
  client_.json = true;
  EXPECT_EQ(RunTokenList(client_), kExitOk);
  EXPECT_EQ(out_.str(), tokens.dump(2) + "\n");
  std::vector<HttpRequest> r = serve.requests();
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].target, "/api/v1/tokens");
  EXPECT_EQ(r[1].method, "DELETE");
  EXPECT_EQ(r[1].target, "/api/v1/tokens/ci");
}

}  // namespace
}  // namespace bluegreen::cli
