#include "stack/stack_spec.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace bluegreen::stack {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

// Raw strings below start with a newline so that their first line is line 1 of the document.
std::string Doc(std::string_view text) {
  if (!text.empty() && text.front() == '\n') text.remove_prefix(1);
  return std::string(text);
}

std::string ErrorOf(std::string_view text) {
  Result<StackSpec> spec = ParseStackSpec(Doc(text));
  EXPECT_FALSE(spec.ok()) << "parsed:\n" << text;
  if (spec.ok()) return "";
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  return spec.status().message();
}

StackSpec ParseOk(std::string_view text) {
  Result<StackSpec> spec = ParseStackSpec(Doc(text));
  EXPECT_TRUE(spec.ok()) << spec.status().message();
  return spec.ok() ? *spec : StackSpec{};
}

// The example of docs/stack-file.md.
constexpr std::string_view kExample = R"(
name: demo
source:
  repo: /srv/git/demo.git
  branch: main
  poll_interval: 10s
build:
  commands: ["make"]
  artifacts: [out/]
  timeout: 30m
service:
  runtime: process
  command: ["./server", "--port", "${PORT}"]
  desired_count: 2
  env: {GREETING: hello}
  health_check: {path: /healthz, interval: 10s, timeout: 5s, healthy_threshold: 2, unhealthy_threshold: 3, matcher: "200-299"}
  deploy_timeout: 5m
load_balancer:
  production: {port: 80}
  test: {port: 8080, allow: [127.0.0.0/8]}
  deregistration_delay: 30s
approval:
  mode: manual
  timeout: 24h
  on_timeout: reject
)";

// The smallest valid stack file: every default applies.
constexpr std::string_view kMinimal = R"(
name: demo
source:
  repo: /srv/git/demo.git
service:
  command: [./server]
load_balancer:
  production: {port: 80}
  test: {port: 8080}
)";

TEST(StackSpecTest, ParsesExample) {
  StackSpec spec = ParseOk(kExample);
  EXPECT_EQ(spec.name, "demo");
  EXPECT_EQ(spec.source.repo, "/srv/git/demo.git");
  EXPECT_EQ(spec.source.branch, "main");
  EXPECT_EQ(spec.source.poll_interval, seconds(10));
  EXPECT_EQ(spec.build.commands, std::vector<std::string>{"make"});
  EXPECT_EQ(spec.build.containerfile, "");
  EXPECT_EQ(spec.build.artifacts, std::vector<std::string>{"out/"});
  EXPECT_EQ(spec.build.timeout, minutes(30));
  EXPECT_EQ(spec.service.runtime, Runtime::kProcess);
  EXPECT_EQ(spec.service.command, (std::vector<std::string>{"./server", "--port", "${PORT}"}));
  EXPECT_EQ(spec.service.image, "");
  EXPECT_EQ(spec.service.port, 0);
  EXPECT_EQ(spec.service.desired_count, 2);
  EXPECT_EQ(spec.service.env, (std::map<std::string, std::string>{{"GREETING", "hello"}}));
  EXPECT_EQ(spec.service.health_check.path, "/healthz");
  EXPECT_EQ(spec.service.health_check.interval, seconds(10));
  EXPECT_EQ(spec.service.health_check.timeout, seconds(5));
  EXPECT_EQ(spec.service.health_check.healthy_threshold, 2);
  EXPECT_EQ(spec.service.health_check.unhealthy_threshold, 3);
  EXPECT_EQ(spec.service.health_check.matcher, "200-299");
  EXPECT_EQ(spec.service.deploy_timeout, minutes(5));
  EXPECT_EQ(spec.load_balancer.production.port, 80);
  EXPECT_TRUE(spec.load_balancer.production.allow.empty());
  EXPECT_EQ(spec.load_balancer.test.port, 8080);
  ASSERT_EQ(spec.load_balancer.test.allow.size(), 1u);
  EXPECT_EQ(spec.load_balancer.test.allow[0].ToString(), "127.0.0.0/8");
  EXPECT_EQ(spec.load_balancer.deregistration_delay, seconds(30));
  EXPECT_EQ(spec.approval.mode, ApprovalMode::kManual);
  EXPECT_EQ(spec.approval.timeout, hours(24));
  EXPECT_EQ(spec.approval.on_timeout, TimeoutAction::kReject);
}

TEST(StackSpecTest, AppliesDefaults) {
  StackSpec spec = ParseOk(kMinimal);
  EXPECT_EQ(spec.source.branch, "main");
  EXPECT_EQ(spec.source.poll_interval, seconds(10));
  EXPECT_TRUE(spec.build.commands.empty());
  EXPECT_TRUE(spec.build.containerfile.empty());
  EXPECT_TRUE(spec.build.artifacts.empty());
  EXPECT_EQ(spec.build.timeout, minutes(30));
  EXPECT_EQ(spec.service.runtime, Runtime::kProcess);
  EXPECT_EQ(spec.service.desired_count, 1);
  EXPECT_TRUE(spec.service.env.empty());
  EXPECT_EQ(spec.service.health_check, HealthCheckSpec{});
  EXPECT_EQ(spec.service.health_check.path, "/");
  EXPECT_EQ(spec.service.health_check.matcher, "200-299");
  EXPECT_EQ(spec.service.deploy_timeout, minutes(5));
  EXPECT_EQ(spec.load_balancer.deregistration_delay, seconds(30));
  EXPECT_EQ(spec.approval, ApprovalSpec{});
  EXPECT_EQ(spec.approval.mode, ApprovalMode::kManual);
  EXPECT_EQ(spec.approval.timeout, hours(24));
  EXPECT_EQ(spec.approval.on_timeout, TimeoutAction::kReject);
}

TEST(StackSpecTest, ParsesContainerRuntimes) {
  StackSpec spec = ParseOk(R"(
name: web-1
source: {repo: "https://example.com/web.git", branch: release/v2}
build: {containerfile: Containerfile}
service: {runtime: podman, port: 8080, desired_count: 64}
load_balancer: {production: {port: 80}, test: {port: 8081}}
approval: {mode: auto, on_timeout: approve, timeout: 1h30m}
)");
  EXPECT_EQ(spec.service.runtime, Runtime::kPodman);
  EXPECT_EQ(spec.service.port, 8080);
  EXPECT_EQ(spec.build.containerfile, "Containerfile");
  EXPECT_EQ(spec.source.branch, "release/v2");
  EXPECT_EQ(spec.approval.mode, ApprovalMode::kAuto);
  EXPECT_EQ(spec.approval.on_timeout, TimeoutAction::kApprove);
  EXPECT_EQ(spec.approval.timeout, minutes(90));

  spec = ParseOk(R"(
name: web
source: {repo: "ssh://git@example.com/web.git"}
service: {runtime: docker, image: "docker.io/library/nginx:1.27", port: 80}
load_balancer: {production: {port: 80}, test: {port: 8080}}
)");
  EXPECT_EQ(spec.service.runtime, Runtime::kDocker);
  EXPECT_EQ(spec.service.image, "docker.io/library/nginx:1.27");
}

TEST(StackSpecTest, AcceptsRepoForms) {
  for (std::string_view repo : {"/srv/git/demo.git", "file:///srv/git/demo.git",
                                "https://example.com/demo.git", "ssh://git@example.com/demo"}) {
    std::string text = Doc(kMinimal);
    text.replace(text.find("/srv/git/demo.git"), 17, repo);
    EXPECT_TRUE(ParseStackSpec(text).ok()) << repo;
  }
}

TEST(StackSpecTest, JsonRoundTrip) {
  for (std::string_view text : {kExample, kMinimal}) {
    StackSpec spec = ParseOk(text);
    std::string json = StackSpecToJson(spec);
    Result<StackSpec> back = ParseStackSpec(json);
    ASSERT_TRUE(back.ok()) << back.status().message() << "\n" << json;
    EXPECT_EQ(*back, spec);
    EXPECT_EQ(StackSpecToJson(*back), json);
  }
  StackSpec container = ParseOk(R"(
name: web
source: {repo: /srv/web}
build: {commands: [make static], containerfile: docker/Containerfile}
service: {runtime: docker, port: 80, env: {A: "1", b_2: ""}, health_check: {matcher: "200, 301-302"}}
load_balancer: {production: {port: 80, allow: ["::1/128"]}, test: {port: 8080}}
)");
  EXPECT_EQ(container.service.health_check.matcher, "200,301-302");
  EXPECT_EQ(container.build.commands, std::vector<std::string>{"make static"});
  EXPECT_EQ(container.build.containerfile, "docker/Containerfile");
  Result<StackSpec> back = ParseStackSpec(StackSpecToJson(container));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, container);
}

TEST(StackSpecTest, ReportsUnknownKeys) {
  EXPECT_EQ(ErrorOf(R"(
name: demo
source: {repo: /srv/git/demo.git}
service:
  command: [./server]
  replicas: 3
load_balancer:
  production: {port: 80}
  test: {port: 8080}
)"),
            "line 5: service.replicas: unknown key (expected one of: runtime, command, image, "
            "port, desired_count, env, health_check, deploy_timeout)");
  EXPECT_EQ(ErrorOf(R"(
name: demo
source: {repo: /srv/git/demo.git, brnach: dev}
service: {command: [./server]}
load_balancer: {production: {port: 80}, test: {port: 8080}}
)"),
            "line 2: source.brnach: unknown key (did you mean \"branch\"?)");
  EXPECT_EQ(ErrorOf(R"(
name: demo
version: 2
source: {repo: /srv/git/demo.git}
service: {command: [./server]}
load_balancer: {production: {port: 80}, test: {port: 8080}}
)"),
            "line 2: version: unknown key (expected one of: name, source, build, service, "
            "load_balancer, approval)");
}

TEST(StackSpecTest, ReportsMissingRequiredKeys) {
  EXPECT_EQ(ErrorOf("name: demo\n"),
            "line 1: service: missing required key\n"
            "line 1: load_balancer: missing required key");
  EXPECT_EQ(ErrorOf(R"(
name: demo
source: {branch: main}
service: {command: [./server]}
load_balancer:
  production: {port: 80}
)"),
            "line 2: source.repo: missing required key\n"
            "line 5: load_balancer.test: missing required key");
}

TEST(StackSpecTest, SourceIsOptional) {
  Result<StackSpec> spec = ParseStackSpec(R"(
name: manual
service: {command: [./server, "${PORT}"]}
load_balancer: {production: {port: 80}, test: {port: 8080}}
)");
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  EXPECT_FALSE(spec->has_source());
  // The canonical JSON leaves it out and reads back to the same spec.
  const std::string json = StackSpecToJson(*spec);
  EXPECT_EQ(json.find("\"source\""), std::string::npos) << json;
  Result<StackSpec> again = ParseStackSpec(json);
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(*again, *spec);
}

TEST(StackSpecTest, ReportsTypeAndValueErrors) {
  auto with = [](std::string_view from, std::string_view to) {
    std::string text = Doc(kExample);
    size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    Result<StackSpec> spec = ParseStackSpec(text);
    EXPECT_FALSE(spec.ok()) << to;
    return spec.ok() ? std::string() : spec.status().message();
  };
  EXPECT_EQ(with("name: demo", "name: Demo_App"),
            "line 1: name: must be 1 to 32 characters of a-z 0-9 -, got \"Demo_App\"");
  EXPECT_EQ(with("name: demo", "name: " + std::string(33, 'a')),
            "line 1: name: must be 1 to 32 characters of a-z 0-9 -, got \"" + std::string(33, 'a') +
                "\"");
  EXPECT_EQ(with("repo: /srv/git/demo.git", "repo: \"\""),
            "line 3: source.repo: must not be empty");
  EXPECT_EQ(with("repo: /srv/git/demo.git", "repo: ftp://x/y"),
            "line 3: source.repo: must be an absolute path or a file://, https:// or ssh:// URL, "
            "got \"ftp://x/y\"");
  EXPECT_EQ(with("branch: main", "branch: a..b"),
            "line 4: source.branch: must be a valid git branch name, got \"a..b\"");
  EXPECT_EQ(with("poll_interval: 10s", "poll_interval: soon"),
            "line 5: source.poll_interval: " + ParseDuration("soon").status().message());
  EXPECT_EQ(with("poll_interval: 10s", "poll_interval: 0s"),
            "line 5: source.poll_interval: must be greater than 0, got 0s");
  EXPECT_EQ(with("artifacts: [out/]", "artifacts: [../out]"),
            "line 8: build.artifacts[0]: must be a relative path inside the repository, got "
            "\"../out\"");
  EXPECT_EQ(with("commands: [\"make\"]", "commands: []"),
            "line 7: build.commands: must not be empty (leave the key out instead)");
  EXPECT_EQ(with("commands: [\"make\"]", "commands: make"),
            "line 7: build.commands: expected a sequence, got a scalar");
  EXPECT_EQ(with("runtime: process", "runtime: kvm"),
            "line 11: service.runtime: must be process, podman or docker, got \"kvm\"");
  EXPECT_EQ(with("desired_count: 2", "desired_count: 65"),
            "line 13: service.desired_count: must be between 1 and 64, got 65");
  EXPECT_EQ(with("desired_count: 2", "desired_count: \"2\""),
            "line 13: service.desired_count: expected an integer, got the quoted string \"2\"");
  EXPECT_EQ(with("desired_count: 2", "desired_count: two"),
            "line 13: service.desired_count: expected an integer, got \"two\"");
  EXPECT_EQ(with("GREETING: hello", "1GREETING: hello"),
            "line 14: service.env.1GREETING: environment variable names must match "
            "[A-Za-z_][A-Za-z0-9_]*");
  EXPECT_EQ(with("GREETING: hello", "GREETING: [a]"),
            "line 14: service.env.GREETING: values must be strings, got a sequence");
  EXPECT_EQ(with("matcher: \"200-299\"", "matcher: \"299-200\""),
            "line 15: service.health_check.matcher: invalid status matcher \"299-200\": range "
            "\"299-200\" is backwards");
  EXPECT_EQ(with("timeout: 5s", "timeout: 20s"),
            "line 15: service.health_check.timeout: must not be longer than interval (10s), got "
            "20s");
  EXPECT_EQ(with("healthy_threshold: 2", "healthy_threshold: 11"),
            "line 15: service.health_check.healthy_threshold: must be between 1 and 10, got 11");
  EXPECT_EQ(with("path: /healthz", "path: healthz"),
            "line 15: service.health_check.path: must start with '/' and contain no spaces or "
            "control characters, got \"healthz\"");
  EXPECT_EQ(with("production: {port: 80}", "production: {port: 0}"),
            "line 18: load_balancer.production.port: must be between 1 and 65535, got 0");
  EXPECT_EQ(with("production: {port: 80}", "production: {port: 65536}"),
            "line 18: load_balancer.production.port: must be between 1 and 65535, got 65536");
  EXPECT_EQ(with("127.0.0.0/8", "127.0.0.0/33"), "line 19: load_balancer.test.allow[0]: " +
                                                     ParseCidr("127.0.0.0/33").status().message());
  EXPECT_EQ(with("deregistration_delay: 30s", "deregistration_delay: [30s]"),
            "line 20: load_balancer.deregistration_delay: expected a duration such as \"10s\", got "
            "a sequence");
  EXPECT_EQ(with("mode: manual", "mode: automatic"),
            "line 22: approval.mode: must be manual or auto, got \"automatic\"");
  EXPECT_EQ(with("on_timeout: reject", "on_timeout: ignore"),
            "line 24: approval.on_timeout: must be reject or approve, got \"ignore\"");
  EXPECT_EQ(with("  timeout: 24h", "  timeout: 0s"),
            "line 23: approval.timeout: must be greater than 0, got 0s");
}

TEST(StackSpecTest, ReportsCrossFieldErrors) {
  EXPECT_EQ(ErrorOf(R"(
name: demo
source: {repo: /srv/git/demo.git}
service: {command: [./server]}
load_balancer:
  production: {port: 8080}
  test: {port: 8080}
)"),
            "line 6: load_balancer.test.port: must differ from load_balancer.production.port "
            "(8080)");
  EXPECT_EQ(ErrorOf(R"(
name: demo
source: {repo: /srv/git/demo.git}
service:
  runtime: process
load_balancer: {production: {port: 80}, test: {port: 8080}}
)"),
            "line 4: service.command: required for runtime process (a non-empty list)");
  EXPECT_EQ(ErrorOf(R"(
name: demo
source: {repo: /srv/git/demo.git}
service: {command: []}
load_balancer: {production: {port: 80}, test: {port: 8080}}
)"),
            "line 3: service.command: must not be empty (leave the key out instead)");
  EXPECT_EQ(ErrorOf(R"(
name: demo
source: {repo: /srv/git/demo.git}
service:
  runtime: docker
load_balancer: {production: {port: 80}, test: {port: 8080}}
)"),
            "line 4: service.port: required for runtime docker\n"
            "line 4: service.image: required for runtime docker unless build.containerfile is "
            "set");
  EXPECT_EQ(ErrorOf(R"(
name: demo
source: {repo: /srv/git/demo.git}
build:
  commands: [make]
  containerfile: Containerfile
  artifacts: [out/]
service: {runtime: podman, port: 8080}
load_balancer: {production: {port: 80}, test: {port: 8081}}
)"),
            "line 6: build.artifacts: not used with build.containerfile: the image is the build's "
            "output (its Containerfile COPYs what it needs from the checkout); remove "
            "build.artifacts");
  EXPECT_EQ(ErrorOf(R"(
name: demo
source: {repo: /srv/git/demo.git}
service:
  command: [./server]
  image: nginx
  port: 8080
load_balancer: {production: {port: 80}, test: {port: 8081}}
)"),
            "line 5: service.image: only for container runtimes (podman, docker), not runtime "
            "process\n"
            "line 6: service.port: only for container runtimes (podman, docker); a process gets "
            "its port in ${PORT}");
}

TEST(StackSpecTest, ReportsSeveralErrorsTogetherInLineOrder) {
  EXPECT_EQ(
      ErrorOf(R"(
name: Demo
source:
  repo: /srv/git/demo.git
  poll_interval: -1s
service:
  command: [./server]
  desired_count: 0
  colour: blue
load_balancer:
  production: {port: 80}
  test: {port: 80}
approval: {mode: later}
)"),
      "line 1: name: must be 1 to 32 characters of a-z 0-9 -, got \"Demo\"\n"
      "line 4: source.poll_interval: " +
          ParseDuration("-1s").status().message() +
          "\n"
          "line 7: service.desired_count: must be between 1 and 64, got 0\n"
          "line 8: service.colour: unknown key (expected one of: runtime, command, image, port, "
          "desired_count, env, health_check, deploy_timeout)\n"
          "line 11: load_balancer.test.port: must differ from load_balancer.production.port "
          "(80)\n"
          "line 12: approval.mode: must be manual or auto, got \"later\"");
}

TEST(StackSpecTest, ReportsDocumentLevelErrors) {
  EXPECT_EQ(ErrorOf(""), "line 1: the stack file is empty");
  EXPECT_EQ(ErrorOf("- a\n- b\n"), "line 1: the stack file must be a map, got a sequence");
  EXPECT_EQ(ErrorOf("name: demo\n---\nname: other\n"),
            "line 2: expected one YAML document; another one starts here");
  EXPECT_EQ(ErrorOf("name: demo\nname: demo\nsource: {repo: /r}\nservice: {command: [x]}\n"
                    "load_balancer: {production: {port: 1}, test: {port: 2}}\n"),
            "line 2: name: duplicate key");
  std::string message = ErrorOf("name: [demo\n");
  EXPECT_EQ(message.rfind("line ", 0), 0u) << message;
  EXPECT_NE(message.find("invalid YAML"), std::string::npos) << message;
}

}  // namespace
}  // namespace bluegreen::stack
