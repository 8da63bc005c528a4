// The bluegreen executable: flag parsing and dispatch to the components. The only code here that
// is not shared with the tests.
#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cli/cli.h"
#include "common/net.h"
#include "common/posix.h"
#include "proxy/config.h"
#include "proxy/proxy_server.h"
#include "serve/serve.h"

namespace {

constexpr const char* kVersion = "0.1.0";

int RunProxy(const std::string& config_path, bool check_only) {
  if (check_only) {
    std::ifstream in(config_path);
    if (!in) {
      std::cerr << "error: cannot read " << config_path << "\n";
      return 2;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    auto cfg = bluegreen::proxy::ParseProxyConfig(ss.str());
    if (!cfg.ok()) {
      std::cerr << config_path << ": invalid config:\n" << cfg.status().message() << "\n";
      return 2;
    }
    std::cout << config_path << ": ok (" << cfg->listeners.size() << " listeners, "
              << cfg->target_groups.size() << " target groups)\n";
    return 0;
  }
  std::signal(SIGPIPE, SIG_IGN);
  // Every client connection costs a descriptor, and an upstream one while it is proxied.
  rlim_t fd_limit_before = 0;
  const rlim_t fd_limit = bluegreen::RaiseFileLimit(&fd_limit_before);
  if (fd_limit != fd_limit_before) {
    spdlog::info("file descriptor limit raised from {} to {}", fd_limit_before, fd_limit);
  }
  bluegreen::proxy::ProxyServer server(config_path);
  bluegreen::Status st = server.Start();
  if (!st.ok()) {
    std::cerr << "error: " << st.message() << "\n";
    return st.code() == bluegreen::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return server.Run();
}

// The options every client command takes: where serve is, where its token is, --json (unless
// the command prints no JSON).
void AddClientFlags(CLI::App* command, bluegreen::cli::ClientOptions* options,
                    bool with_json = true) {
  command->add_option("--api", options->api,
                      "address of bluegreen serve: http://HOST:PORT, HOST:PORT or unix:/path "
                      "(default: $BLUEGREEN_API, else http://127.0.0.1:7070)");
  command->add_option("--state-dir", options->state_dir,
                      "state directory of serve; its admin.token is the API token when "
                      "$BLUEGREEN_TOKEN is not set (default: $BLUEGREEN_STATE_DIR, else "
                      "/var/lib/bluegreen for root, ~/.local/state/bluegreen for others)");
  if (with_json) {
    command->add_flag("--json", options->json, "print the server's JSON instead of text");
  }
}

// "5m" -> milliseconds; false (after saying why) for a bad duration.
bool ParseTimeout(const std::string& text, std::chrono::milliseconds* out) {
  auto d = bluegreen::ParseDuration(text);
  if (!d.ok()) {
    std::cerr << "error: --timeout " << text << ": " << d.status().message() << "\n";
    return false;
  }
  *out = *d;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bluegreen: blue/green continuous delivery with a built-in load balancer"};
  app.require_subcommand(1);
  app.set_version_flag("--version", kVersion);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();

  std::string config_path;
  bool check_only = false;
  CLI::App* proxy = app.add_subcommand(
      "proxy",
      "Run the data plane: listeners, target groups, health checks, swaps.\n"
      "Example: bluegreen proxy --config examples/proxy.yaml");
  proxy->add_option("-c,--config", config_path, "proxy config file (YAML)")->required();
  proxy->add_flag("--check", check_only, "validate the config file and exit");

  CLI::App* version = app.add_subcommand("version", "Print the version");

  // `bluegreen serve`: the control plane.
  bluegreen::serve::ServeOptions serve_options;
  CLI::App* serve = app.add_subcommand(
      "serve", "Run the control plane: stacks, tasks, the REST API the other commands use");
  serve->footer(
      "Example:\n"
      "  bluegreen serve --state-dir ~/.local/state/bluegreen --api 127.0.0.1:7070");
  serve->add_option("--state-dir", serve_options.state_dir,
                    "state directory, created if missing (default: $BLUEGREEN_STATE_DIR, else "
                    "/var/lib/bluegreen for root, ~/.local/state/bluegreen for others)");
  serve->add_option("--api", serve_options.api, "REST API listen address: HOST:PORT or unix:/path")
      ->capture_default_str();
  serve
      ->add_option("--proxy-workers", serve_options.proxy_workers,
                   "worker threads of the proxy (0 = one per core)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  serve
      ->add_option("--keep-versions", serve_options.keep_versions,
                   "builds of each stack whose artifacts or images are kept: older ones are "
                   "removed after each build, except those in use (0 = keep all)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000000));

  // The client commands (docs/cli.md).
  bluegreen::cli::ClientOptions client;
  client.api = bluegreen::cli::DefaultApiAddress();

  bluegreen::cli::UpOptions up_options;
  bool up_no_wait = false;
  std::string up_timeout = "5m";
  CLI::App* up = app.add_subcommand(
      "up", "Create or update a stack from a stack file and wait until its services run");
  up->footer(
      "Example:\n"
      "  bluegreen up -f stack.yaml\n"
      "  bluegreen up -f stack.yaml --no-wait --json");
  up->add_option("-f,--file", up_options.file, "stack file (YAML or JSON)")->required();
  up->add_flag("--no-wait", up_no_wait, "return once serve has taken the file");
  up->add_option("--timeout", up_timeout, "how long to wait for the services")
      ->capture_default_str();
  AddClientFlags(up, &client);

  bluegreen::cli::DownOptions down_options;
  CLI::App* down = app.add_subcommand(
      "down", "Remove a stack: stop its tasks, remove its listeners and target groups");
  down->footer(
      "Example:\n"
      "  bluegreen down demo\n"
      "  bluegreen down demo --purge");
  down->add_option("name", down_options.name, "stack name")->required();
  down->add_flag("--purge", down_options.purge, "delete its history too (versions, events)");
  std::string down_timeout = "5m";
  down->add_option("--timeout", down_timeout, "how long to wait for the tasks to drain and stop")
      ->capture_default_str();
  AddClientFlags(down, &client);

  std::string status_name;
  CLI::App* status =
      app.add_subcommand("status", "Show a stack: which side is live, services, targets, rollouts");
  status->footer(
      "Example:\n"
      "  bluegreen status demo\n"
      "  bluegreen status demo --json");
  status->add_option("name", status_name, "stack name")->required();
  AddClientFlags(status, &client);

  CLI::App* stacks = app.add_subcommand("stacks", "List the stacks");
  stacks->footer(
      "Example:\n"
      "  bluegreen stacks\n"
      "  bluegreen stacks --json");
  AddClientFlags(stacks, &client);

  bluegreen::cli::DeployOptions deploy_options;
  bool deploy_no_wait = false;
  std::string deploy_timeout = "10m";
  CLI::App* deploy = app.add_subcommand(
      "deploy", "Put a version on the side behind the test listener and wait for the rollout");
  deploy->footer(
      "Example:\n"
      "  bluegreen deploy demo --version v2 --artifact ./build/v2\n"
      "  bluegreen deploy demo --version v2 --image localhost/demo:v2 --no-wait\n"
      "  bluegreen deploy demo --version v1        (a version registered before)");
  deploy->add_option("name", deploy_options.name, "stack name")->required();
  deploy->add_option("--version", deploy_options.version, "version name, [A-Za-z0-9._-]{1,64}")
      ->required();
  CLI::Option* artifact = deploy->add_option(
      "--artifact", deploy_options.artifact_dir,
      "register the version from this directory first (process runtime; made absolute)");
  CLI::Option* image = deploy->add_option(
      "--image", deploy_options.image,
      "register the version as this container image first (podman/docker runtimes)");
  artifact->excludes(image);
  deploy->add_flag("--no-wait", deploy_no_wait, "return once the deploy has started");
  deploy->add_option("--timeout", deploy_timeout, "how long to wait for the rollout")
      ->capture_default_str();
  AddClientFlags(deploy, &client);

  // The pipeline (docs/cli.md "The pipeline").
  std::string release_name;
  CLI::App* release = app.add_subcommand(
      "release", "Start a pipeline execution on the branch head now (\"Release change\")");
  release->footer(
      "Example:\n"
      "  bluegreen release demo\n"
      "  bluegreen release demo --json");
  release->add_option("name", release_name, "stack name")->required();
  AddClientFlags(release, &client);

  bluegreen::cli::ReviewOptions review_options;
  CLI::App* approve = app.add_subcommand(
      "approve", "Approve the execution waiting for approval: swap production to it");
  approve->footer(
      "Example:\n"
      "  bluegreen approve demo\n"
      "  bluegreen approve demo --comment \"checked on :8001\"");
  CLI::App* reject = app.add_subcommand(
      "reject", "Reject the execution waiting for approval: production stays as it is");
  reject->footer(
      "Example:\n"
      "  bluegreen reject demo --comment \"the header is broken\"");
  for (CLI::App* command : {approve, reject}) {
    command->add_option("name", review_options.name, "stack name")->required();
    command->add_option("--comment", review_options.comment,
                        "recorded with the decision (at most 4096 bytes)");
    AddClientFlags(command, &client);
  }

  bluegreen::cli::RollbackOptions rollback_options;
  bool rollback_no_wait = false;
  std::string rollback_timeout = "5m";
  CLI::App* rollback = app.add_subcommand(
      "rollback",
      "Swap production back to the version it ran before the last swap (still running on the "
      "test side)");
  rollback->footer(
      "Example:\n"
      "  bluegreen rollback demo\n"
      "  bluegreen rollback demo --yes --comment \"errors after the release\"");
  rollback->add_option("name", rollback_options.name, "stack name")->required();
  rollback->add_option("--comment", rollback_options.comment, "recorded with the rollback");
  rollback->add_flag("-y,--yes", rollback_options.yes,
                     "do not ask for confirmation (needed when stdin is not a terminal)");
  rollback->add_flag("--no-wait", rollback_no_wait, "return once the rollback has started");
  rollback->add_option("--timeout", rollback_timeout, "how long to wait for the swap")
      ->capture_default_str();
  AddClientFlags(rollback, &client);

  bluegreen::cli::ExecutionsOptions executions_options;
  CLI::App* executions =
      app.add_subcommand("executions", "List the pipeline's executions of a stack, newest first");
  executions->footer(
      "Example:\n"
      "  bluegreen executions demo\n"
      "  bluegreen executions demo --limit 5 --json");
  executions->add_option("name", executions_options.name, "stack name")->required();
  executions
      ->add_option("--limit", executions_options.limit,
                   "show the N newest (0 = all serve keeps, at most 100)")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  AddClientFlags(executions, &client);

  bluegreen::cli::LogsOptions logs_options;
  CLI::App* logs = app.add_subcommand("logs", "Print the build log of an execution");
  logs->footer(
      "Example:\n"
      "  bluegreen logs demo               (the latest execution)\n"
      "  bluegreen logs demo 3 --follow");
  logs->add_option("name", logs_options.name, "stack name")->required();
  logs->add_option("execution", logs_options.execution, "execution number, or latest")
      ->capture_default_str();
  logs->add_flag("-f,--follow", logs_options.follow,
                 "keep printing the log as it grows, until the build has ended");
  AddClientFlags(logs, &client, /*with_json=*/false);

  bluegreen::cli::WatchOptions watch_options;
  std::string watch_timeout = "30m";
  CLI::App* watch = app.add_subcommand(
      "watch", "Follow an execution stage by stage until it has ended (or waits for approval)");
  watch->footer(
      "Exit status: 0 when the execution Succeeded (or, with --until-review, waits for\n"
      "approval); 1 when it Failed, was Rejected or Superseded, or the wait timed out.\n"
      "Example:\n"
      "  bluegreen watch demo                  (the current execution)\n"
      "  bluegreen watch demo 7 --until-review && bluegreen approve demo");
  watch->add_option("name", watch_options.name, "stack name")->required();
  watch->add_option("execution", watch_options.execution,
                    "execution number (default: the stack's current execution)");
  watch->add_flag("--until-review", watch_options.until_review,
                  "stop (exit 0) once the execution waits for approval");
  watch->add_option("--timeout", watch_timeout, "how long to watch at most")
      ->capture_default_str();
  AddClientFlags(watch, &client);

  bluegreen::cli::QuickstartOptions quickstart_options;
  std::string quickstart_timeout = "5m";
  CLI::App* quickstart = app.add_subcommand(
      "quickstart",
      "Set up the walkthrough: a sample app in a git repository, its stack, serve, the first "
      "release");
  quickstart->footer(
      "Creates DIR/app (a git repository with a small web page built by the pipeline with the\n"
      "machine's C compiler) and DIR/stack.yaml, starts `bluegreen serve` if none answers at\n"
      "--api, runs `up`, waits for the first release, and prints the production, test and\n"
      "console URLs, the token and the next steps. Running it again is safe: what exists is kept.\n"
      "Without root, production listens on 8000 instead of 80 (test on 8080); it says so.\n"
      "Example:\n"
      "  bluegreen quickstart\n"
      "  bluegreen quickstart --dir /tmp/demo --production-port 9000 --test-port 9001\n"
      "  bluegreen quickstart --cleanup        (removes the stack, stops the serve it started)");
  quickstart->add_option("--dir", quickstart_options.dir, "where the sample app and stack go")
      ->capture_default_str();
  quickstart->add_option("--production-port", quickstart_options.production_port,
                         "production listener port (default: 80 as root, else 8000)");
  quickstart->add_option("--test-port", quickstart_options.test_port,
                         "test listener port (default: 8080)");
  quickstart->add_flag("--cleanup", quickstart_options.cleanup,
                       "take the quickstart down: remove its stack, stop the serve it started");
  quickstart->add_option("--timeout", quickstart_timeout, "how long to wait for the first release")
      ->capture_default_str();
  AddClientFlags(quickstart, &client);

  CLI::App* secret = app.add_subcommand("secret", "Manage the secrets of a stack");
  secret->require_subcommand(1);
  bluegreen::cli::SecretOptions secret_options;
  CLI::App* secret_set = secret->add_subcommand(
      "set", "Set a secret of a stack from stdin (asked for without echo on a terminal)");
  secret_set->footer(
      "KEY is git_token (for https repositories) or webhook_secret (checks the webhook's "
      "signature).\n"
      "Example:\n"
      "  bluegreen secret set demo git_token                (asks for it)\n"
      "  bluegreen secret set demo webhook_secret < secret.txt");
  secret_set->add_option("name", secret_options.name, "stack name")->required();
  secret_set->add_option("key", secret_options.key, "git_token or webhook_secret")->required();
  AddClientFlags(secret_set, &client);

  // Access (docs/cli.md "Access").
  CLI::App* token = app.add_subcommand("token", "Manage the API tokens and their roles (admin)");
  token->require_subcommand(1);
  token->footer(
      "Roles: viewer (read), approver (also approve, reject, rollback, release), admin "
      "(everything).");
  bluegreen::cli::TokenCreateOptions token_create_options;
  CLI::App* token_create = token->add_subcommand(
      "create", "Create a token; it is printed this once (serve keeps only its hash)");
  token_create->footer(
      "Example:\n"
      "  bluegreen token create ci --role approver\n"
      "  export BLUEGREEN_TOKEN=$(bluegreen token create alice --role viewer)");
  token_create
      ->add_option("name", token_create_options.name, "token name, [a-z0-9][a-z0-9._-]{0,63}")
      ->required();
  token_create->add_option("--role", token_create_options.role, "viewer, approver or admin")
      ->required()
      ->check(CLI::IsMember({"viewer", "approver", "admin"}));
  AddClientFlags(token_create, &client);
  CLI::App* token_list = token->add_subcommand("list", "List the tokens (never their secrets)");
  token_list->footer(
      "Example:\n"
      "  bluegreen token list\n"
      "  bluegreen token list --json");
  AddClientFlags(token_list, &client);
  std::string token_revoke_name;
  CLI::App* token_revoke =
      token->add_subcommand("revoke", "Revoke a token: it stops working at once");
  token_revoke->footer(
      "Example:\n"
      "  bluegreen token revoke ci");
  token_revoke->add_option("name", token_revoke_name, "token name")->required();
  AddClientFlags(token_revoke, &client);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every bad flag is bad input (exit 2, docs/cli.md).
    int code = app.exit(e);
    return code == 0 ? 0 : bluegreen::cli::kExitBadInput;
  }

  auto logger = spdlog::stderr_color_mt("bluegreen");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  if (version->parsed()) {
    std::cout << "bluegreen " << kVersion << "\n";
    return 0;
  }
  if (proxy->parsed()) return RunProxy(config_path, check_only);
  if (serve->parsed()) {
    if (serve_options.state_dir.empty()) {
      serve_options.state_dir = bluegreen::serve::DefaultStateDir();
    }
    return bluegreen::serve::RunServe(serve_options);
  }

  if (client.state_dir.empty()) client.state_dir = bluegreen::serve::DefaultStateDir();
  client.interactive = ::isatty(STDIN_FILENO) == 1;
  if (up->parsed()) {
    up_options.wait = !up_no_wait;
    if (!ParseTimeout(up_timeout, &up_options.timeout)) return bluegreen::cli::kExitBadInput;
    return bluegreen::cli::RunUp(client, up_options);
  }
  if (down->parsed()) {
    if (!ParseTimeout(down_timeout, &down_options.timeout)) return bluegreen::cli::kExitBadInput;
    return bluegreen::cli::RunDown(client, down_options);
  }
  if (status->parsed()) return bluegreen::cli::RunStatus(client, status_name);
  if (stacks->parsed()) return bluegreen::cli::RunStacks(client);
  if (deploy->parsed()) {
    deploy_options.wait = !deploy_no_wait;
    if (!ParseTimeout(deploy_timeout, &deploy_options.timeout)) {
      return bluegreen::cli::kExitBadInput;
    }
    return bluegreen::cli::RunDeploy(client, deploy_options);
  }
  if (release->parsed()) return bluegreen::cli::RunRelease(client, release_name);
  if (approve->parsed()) return bluegreen::cli::RunApprove(client, review_options);
  if (reject->parsed()) return bluegreen::cli::RunReject(client, review_options);
  if (rollback->parsed()) {
    rollback_options.wait = !rollback_no_wait;
    if (!ParseTimeout(rollback_timeout, &rollback_options.timeout)) {
      return bluegreen::cli::kExitBadInput;
    }
    return bluegreen::cli::RunRollback(client, rollback_options);
  }
  if (executions->parsed()) return bluegreen::cli::RunExecutions(client, executions_options);
  if (logs->parsed()) return bluegreen::cli::RunLogs(client, logs_options);
  if (quickstart->parsed()) {
    if (!ParseTimeout(quickstart_timeout, &quickstart_options.timeout)) {
      return bluegreen::cli::kExitBadInput;
    }
    return bluegreen::cli::RunQuickstart(client, quickstart_options);
  }
  if (watch->parsed()) {
    if (!ParseTimeout(watch_timeout, &watch_options.timeout)) return bluegreen::cli::kExitBadInput;
    watch_options.redraw = ::isatty(STDOUT_FILENO) == 1;
    winsize size{};
    if (watch_options.redraw && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0) {
      watch_options.columns = size.ws_col;
    }
    return bluegreen::cli::RunWatch(client, watch_options);
  }
  if (secret_set->parsed()) return bluegreen::cli::RunSecretSet(client, secret_options);
  if (token_create->parsed()) {
    return bluegreen::cli::RunTokenCreate(client, token_create_options);
  }
  if (token_list->parsed()) return bluegreen::cli::RunTokenList(client);
  if (token_revoke->parsed()) return bluegreen::cli::RunTokenRevoke(client, token_revoke_name);
  return 2;
}
