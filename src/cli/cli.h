// The client commands of the bluegreen CLI: `up`, `down`, `status`, `stacks` and `deploy`, the
// pipeline's `release`, `approve`, `reject`, `rollback`, `executions`, `logs` and `secret set`,
// and `token create|list|revoke`.
// Each is a few calls to the REST API of `bluegreen serve` (docs/api.md) made with HttpCall,
// printing text for people by default and the server's JSON with --json. docs/cli.md is the user's
// reference; its exit codes (below) and its --json output are a contract that scripts rely on.
//
// The Run* functions block (HTTP calls, polling) and write to the streams of their ClientOptions
// (and read its `in` where they ask for input); they share no state, so several may run at once on
// different streams. The Format*/Check* functions below them are pure and thread-safe; they take
// the server's JSON as parsed and never throw on a shape they do not expect (a missing field
// prints as "-" or is skipped).
#pragma once

#include <chrono>
#include <cstdint>
#include <iostream>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace bluegreen::cli {

// Exit codes of the client commands (docs/cli.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;        // the operation failed: a rollout, a timeout, a 5xx
inline constexpr int kExitBadInput = 2;      // bad flags, an invalid stack file, HTTP 400 or 413
inline constexpr int kExitNotFound = 3;      // HTTP 404
inline constexpr int kExitUnauthorized = 4;  // no token, HTTP 401 or 403 (a role too low)
inline constexpr int kExitUnreachable = 5;   // serve cannot be reached (refused, timeout)
inline constexpr int kExitConflict = 6;      // HTTP 409

inline constexpr char kDefaultApi[] = "http://127.0.0.1:7070";

// How to reach serve and where to write. Filled by main from flags and the environment.
struct ClientOptions {
  std::string api = kDefaultApi;  // "http://HOST:PORT", "HOST:PORT" or "unix:/path"
  std::string state_dir;          // admin.token is read here when BLUEGREEN_TOKEN is not set
  bool json = false;              // print the server's JSON (2-space indent) instead of text
  std::chrono::milliseconds request_timeout = std::chrono::seconds(30);  // per HTTP call
  std::chrono::milliseconds poll_interval = std::chrono::milliseconds(500);
  std::ostream* out = &std::cout;  // results
  std::ostream* err = &std::cerr;  // errors, hints, prompts and (with --json) nothing else
  std::istream* in = &std::cin;    // answers to prompts, `secret set`'s value
  bool interactive = false;        // `in` is a terminal: main sets it from isatty(0)
};

// $BLUEGREEN_API when set and not blank, else kDefaultApi.
std::string DefaultApiAddress();

// The API token: `env_token` (the value of $BLUEGREEN_TOKEN) when not blank, else the trimmed
// text of STATE_DIR/admin.token. kUnauthenticated when there is neither, with a message that
// names both places and why the file could not be used.
Result<std::string> LoadToken(std::string_view env_token, const std::string& state_dir);

// `bluegreen up -f FILE`: validates FILE locally, PUTs it, then (with `wait`) polls the stack
// until every service that has a version runs all its tasks and no rollout is in progress.
struct UpOptions {
  std::string file;
  bool wait = true;
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
};
int RunUp(const ClientOptions& client, const UpOptions& options);

// `bluegreen down NAME [--purge]`. Serve answers once the tasks have drained and stopped, so
// the call may take as long as the stack's deregistration_delay and more.
struct DownOptions {
  std::string name;
  bool purge = false;
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
};
int RunDown(const ClientOptions& client, const DownOptions& options);

// `bluegreen status NAME`.
int RunStatus(const ClientOptions& client, const std::string& name);

// `bluegreen stacks`.
int RunStacks(const ClientOptions& client);

// `bluegreen deploy NAME --version V [--artifact DIR | --image IMAGE]`: registers the version
// when an artifact or image is given, starts the deploy, then (with `wait`) polls the stack until
// every service the deploy answer names runs V with no rollout, or the rollout fails.
struct DeployOptions {
  std::string name;
  std::string version;
  std::string artifact_dir;  // made absolute before it is sent; empty = none
  std::string image;         // empty = none; at most one of artifact_dir and image
  bool wait = true;
  std::chrono::milliseconds timeout = std::chrono::minutes(10);
};
int RunDeploy(const ClientOptions& client, const DeployOptions& options);

// The pipeline (docs/api.md "The pipeline"; src/cli/pipeline_commands.cc).

// `bluegreen release NAME`: starts an execution on the stack's branch head.
int RunRelease(const ClientOptions& client, const std::string& name);

// `bluegreen approve NAME` and `bluegreen reject NAME`: act on the execution waiting for
// approval (exit 6 when none waits).
struct ReviewOptions {
  std::string name;
  std::string comment;  // empty = none
};
int RunApprove(const ClientOptions& client, const ReviewOptions& options);
int RunReject(const ClientOptions& client, const ReviewOptions& options);

// `bluegreen rollback NAME`: reads the stack's status and says which version becomes live, asks
// for confirmation unless `yes` (without `yes`, a stdin that is not a terminal is exit 2), starts
// the rollback, then (with `wait`) polls its execution until it has ended: exit 0 when it
// Succeeded, else 1 with its reason.
struct RollbackOptions {
  std::string name;
  std::string comment;
  bool yes = false;
  bool wait = true;
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
};
int RunRollback(const ClientOptions& client, const RollbackOptions& options);

// `bluegreen executions NAME`: the newest `limit` executions (0 = all serve gives, at most 100).
struct ExecutionsOptions {
  std::string name;
  int limit = 20;
};
int RunExecutions(const ClientOptions& client, const ExecutionsOptions& options);

// `bluegreen logs NAME [EXECUTION]`: the build log on `out`, as it is; with `follow`, polls for
// more every poll_interval until serve says the build has ended.
struct LogsOptions {
  std::string name;
  std::string execution = "latest";  // a number or "latest"
  bool follow = false;
};
int RunLogs(const ClientOptions& client, const LogsOptions& options);

// `bluegreen watch NAME [EXECUTION]`: follows an execution (by default the stack's current one,
// or when the latest has ended, the next one to start) until it has ended, showing its stages with their status and durations: redrawn in place when
// `out` is a terminal (`redraw`), else one line per change. Exit 0 when it Succeeded, 1 when it
// ended otherwise or the wait timed out; with `until_review`, also 0 as soon as it waits for
// approval. With --json, prints the execution as last seen, once.
struct WatchOptions {
  std::string name;
  std::string execution;  // a number; empty = the stack's current execution
  bool until_review = false;
  bool redraw = false;
  int columns = 0;  // with redraw: the terminal's width; lines are cut to fit (0 = no limit)
  std::chrono::milliseconds timeout = std::chrono::minutes(30);
};
int RunWatch(const ClientOptions& client, const WatchOptions& options);

// `bluegreen secret set NAME KEY`: reads one line from `in` (without echo on a terminal) and
// sends it as the secret KEY of the stack. Never prints the value.
struct SecretOptions {
  std::string name;
  std::string key;  // git_token or webhook_secret
};
int RunSecretSet(const ClientOptions& client, const SecretOptions& options);

// `bluegreen quickstart [--dir DIR]` (src/cli/quickstart.cc, docs/quickstart.md): creates the
// sample app as a git repository in DIR/app and its stack file DIR/stack.yaml (both kept when
// they exist), starts serve (detached, log DIR/serve.log, pid DIR/serve.pid) when none answers
// at client.api, runs `up`, watches the first execution, then prints the URLs, the token and the
// walkthrough's next steps. With `cleanup`: removes the stack (purged) and stops the serve the
// quickstart started; DIR is kept.
struct QuickstartOptions {
  std::string dir = "bluegreen-quickstart";
  uint16_t production_port = 0;  // 0 = 80 for root, 8000 for others (or a free one near)
  uint16_t test_port = 0;        // 0 = 8080 (or a free one near)
  bool cleanup = false;
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
};
int RunQuickstart(const ClientOptions& client, const QuickstartOptions& options);

// Access (docs/cli.md "Access"; src/cli/token_commands.cc). All three need an admin token.

// `bluegreen token create NAME --role ROLE`: the new token is shown this once: in text, alone on
// its line on `out` (a note on `err` says it will not be shown again); with --json, the answer.
struct TokenCreateOptions {
  std::string name;
  std::string role;  // viewer, approver or admin
};
int RunTokenCreate(const ClientOptions& client, const TokenCreateOptions& options);
// `bluegreen token list`.
int RunTokenList(const ClientOptions& client);
// `bluegreen token revoke NAME`: the token stops working at once.
int RunTokenRevoke(const ClientOptions& client, const std::string& name);

// ---------------------------------------------------------------------------------------------
// Pure functions behind the commands (unit-tested in tests/serve/cli_format_test.cc).

// The exit code for an HTTP answer: 2xx -> 0, 400/413 -> 2, 401/403 -> 4, 404 -> 3, 409 -> 6,
// anything else -> 1.
int ExitCodeForHttpStatus(int http_status);
// The exit code for an HttpCall that got no answer: kInvalidArgument (a bad --api address) -> 2,
// kResourceExhausted (an answer too large) -> 1, anything else (refused, timeout, not HTTP) -> 5.
int ExitCodeForTransportError(const Status& status);

// An error answer of the API. For a body that is not {"error": {"code", "message"}} (another
// server, a proxy in between), code is "http_STATUS" and message says what came back.
struct ApiError {
  std::string code;
  std::string message;
};
ApiError ParseApiError(int http_status, std::string_view body);

// What to tell the user when serve could not be reached at `api` (exit 5): the address tried,
// the cause, and how to start serve with `state_dir`. Several lines, no trailing newline.
std::string UnreachableMessage(const std::string& api, const Status& status,
                               const std::string& state_dir);

// What to do next after an API error in `command` ("up", "down", "status", "stacks", "deploy",
// "versions", "release", "approve", "reject", "rollback", "executions", "logs", "secret",
// "token") on stack `name`; empty when there is nothing useful to add. A 403 names the role to
// ask an admin for.
std::string HintForApiError(std::string_view command, const std::string& name, int http_status,
                            std::string_view code);

// `watch`: the execution as a block of lines: the execution line, then one line per stage (mark,
// name, status, duration so far or in all), then what to do when it waits for approval or why it
// ended. `now_ms` is ms since the epoch, for the running stage's duration.
std::string FormatWatch(const nlohmann::json& execution, const std::string& name, int64_t now_ms);
// `watch` without a terminal: one line per stage whose status changed from `before` to `after`
// ("Build Succeeded (12.3s)"), then "execution N STATUS[: reason]" when its status changed.
std::vector<std::string> WatchChanges(const nlohmann::json& before, const nlohmann::json& after,
                                      int64_t now_ms);

// `text` with every line cut to at most `columns` - 1 bytes (never inside a UTF-8 sequence), so
// that no line wraps on a terminal that wide; unchanged when columns <= 1.
std::string FitLines(std::string_view text, int columns);

// `text` with `prefix` and ": " in front of every non-empty line, each line ending in '\n'.
// Used to show stack file problems as "stack.yaml: line 4: key: what is wrong".
std::string PrefixLines(std::string_view prefix, std::string_view text);

// A stack name or other value made safe as one path segment (RFC 3986 percent-encoding).
std::string EscapePathSegment(std::string_view segment);

// Text forms of API answers, each ending in '\n'.
// GET /api/v1/stacks/NAME: listeners with the side behind them and which one is LIVE, the
// pipeline's current execution (with what to do when it waits for approval), then the services,
// the targets and the tasks that are neither running nor stopped.
std::string FormatStatus(const nlohmann::json& status);
// GET /api/v1/stacks: a table NAME LIVE PROD TEST SERVICES, or how to create a first stack.
std::string FormatStacks(const nlohmann::json& stacks);
// PUT /api/v1/stacks/NAME: "created stack NAME" / "updated stack NAME" / "stack NAME is up to
// date", then "  + change" lines.
std::string FormatUpAnswer(const nlohmann::json& answer);
// DELETE /api/v1/stacks/NAME.
std::string FormatDownAnswer(const nlohmann::json& answer);

// Where a wait stands after one status poll.
struct WaitCheck {
  enum State {
    kWaiting,   // not there yet; `detail` says what is missing
    kDone,      // there
    kFailed,    // will not get there (a rollout failed); `detail` says why
    kNoVersion  // `up` only: no service has a version and no rollout runs: nothing to wait for
  };
  State state = kWaiting;
  std::string detail;
};

// `up`: done when every service whose version is not null has running_count == desired_count
// and no service has a rollout in progress; failed when, with no rollout in progress, a service
// has no version because its first rollout failed (e.g. the stack's image did not start).
WaitCheck CheckUpDone(const nlohmann::json& status);
// `deploy`: done when every service in `services` (identifiers) has version == `version` and no
// rollout; failed when one of them has a failed rollout of `version`.
WaitCheck CheckDeployDone(const nlohmann::json& status, const std::vector<std::string>& services,
                          std::string_view version);

// Progress lines, one per service, without indent: "Code1 v1: 1/2 running". For `up`, every
// service with a version or a rollout; for `deploy`, the services deployed, counting their tasks
// of `version` ("Code2 v2: 1/2 running, 1 starting").
std::vector<std::string> UpProgress(const nlohmann::json& status);
std::vector<std::string> DeployProgress(const nlohmann::json& status,
                                        const std::vector<std::string>& services,
                                        std::string_view version);

// The pipeline's answers.
// An execution in one line: "execution 3  WaitingForApproval  Review  version 3-9f1c2ab  commit
// 9f1c2ab Make the background green" (no trailing newline).
std::string ExecutionLine(const nlohmann::json& execution);
// True when an execution has ended: its status is neither InProgress nor WaitingForApproval.
bool ExecutionEnded(const nlohmann::json& execution);
// POST .../release of stack `name`: "started execution N of NAME (follow it: ...)".
std::string FormatReleaseAnswer(const nlohmann::json& answer, const std::string& name);
// POST .../approve and .../reject.
std::string FormatApproveAnswer(const nlohmann::json& answer, const std::string& name);
std::string FormatRejectAnswer(const nlohmann::json& answer, const std::string& name);
// GET .../executions: a table ID STATUS STAGE VERSION COMMIT MESSAGE APPROVED-BY AGE of the
// newest `limit` (0 = all), ages counted to `now_ms` (ms since the epoch); or how to start one.
std::string FormatExecutions(const nlohmann::json& answer, const std::string& name, int64_t now_ms,
                             size_t limit);
// GET /api/v1/tokens: a table NAME ROLE CREATED CREATED-BY LAST-USED (ages to `now_ms`, ms
// since the epoch; the API's times are seconds), or how to create a first token.
std::string FormatTokens(const nlohmann::json& answer, int64_t now_ms);
// A time span as an age: "42s", "5m", "3h", "2d"; "0s" for a negative one.
std::string FormatAge(int64_t ms);

// What `rollback` would do, from the stack's status: the side behind the test listener (and its
// version) becomes live. `possible` is false, and `text` says why, when that side runs no version
// or when the stack's current execution is in Deploy, Review or Swap (serve would refuse).
struct RollbackPreview {
  bool possible = false;
  std::string text;  // one line, no trailing newline
};
RollbackPreview PreviewRollback(const nlohmann::json& status, const std::string& name);

// The keys `secret set` takes: git_token, webhook_secret.
bool IsSecretKey(std::string_view key);

}  // namespace bluegreen::cli
