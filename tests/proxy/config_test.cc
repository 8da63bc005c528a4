#include "proxy/config.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace bluegreen::proxy {
namespace {

using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

// Raw strings below start with a newline so that their first line is line 1 of the document.
std::string Doc(std::string_view text) {
  if (!text.empty() && text.front() == '\n') text.remove_prefix(1);
  return std::string(text);
}

// The message of a config that must fail to parse.
std::string ErrorOf(std::string_view text) {
  Result<ProxyConfig> config = ParseProxyConfig(Doc(text));
  EXPECT_FALSE(config.ok()) << "parsed:\n" << text;
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), StatusCode::kInvalidArgument);
  return config.status().message();
}

ProxyConfig ParseOk(std::string_view text) {
  Result<ProxyConfig> config = ParseProxyConfig(Doc(text));
  EXPECT_TRUE(config.ok()) << config.status().message();
  return config.ok() ? *config : ProxyConfig{};
}

// The example of the documentation.
constexpr std::string_view kExample = R"(
admin: 127.0.0.1:9901            # admin API; also accepts unix:/path/to/socket
state_file: /var/lib/bluegreen/proxy.json   # optional
workers: 2                       # default 0 = number of cores
listeners:
  - {name: production, port: 80, target_group: blue}
  - {name: test, port: 8080, target_group: green, allow: [127.0.0.0/8]}
target_groups:
  - name: blue
    targets: [127.0.0.1:9001, 127.0.0.1:9003]
    algorithm: round_robin
    health_check: {path: /, interval: 10s, timeout: 5s, healthy_threshold: 2, unhealthy_threshold: 2, matcher: "200-299"}
    deregistration_delay: 30s
    tags: {Identifier: Code1, Image: v1, IsProduction: "true"}
  - name: green
    targets: [127.0.0.1:9002]
    tags: {Identifier: Code2, Image: v1, IsProduction: "false"}
limits:
  client_header_timeout: 10s
  client_idle_timeout: 60s
  upstream_connect_timeout: 5s
  upstream_response_timeout: 60s
  upstream_idle_timeout: 30s
  drain_timeout: 30s
  max_request_line: 8192
  max_header_bytes: 32768
  max_headers: 100
)";

// A small valid config that error tests vary.
constexpr std::string_view kMinimal = R"(
listeners:
  - {name: production, port: 8000, target_group: blue}
target_groups:
  - name: blue
    targets: [127.0.0.1:9001]
)";

Endpoint Ep(std::string_view text) { return *ParseEndpoint(text); }

// ---------------------------------------------------------------------------------------------
// The example and defaults

TEST(ParseProxyConfigTest, ParsesTheExample) {
  ProxyConfig config = ParseOk(kExample);
  EXPECT_EQ(config.admin, "127.0.0.1:9901");
  EXPECT_EQ(config.state_file, "/var/lib/bluegreen/proxy.json");
  EXPECT_EQ(config.workers, 2);

  ASSERT_EQ(config.listeners.size(), 2u);
  const ListenerConfig& production = config.listeners[0];
  EXPECT_EQ(production.name, "production");
  EXPECT_EQ(production.address, "0.0.0.0");
  EXPECT_EQ(production.port, 80);
  EXPECT_EQ(production.target_group, "blue");
  EXPECT_TRUE(production.allow.empty());
  const ListenerConfig& test = config.listeners[1];
  EXPECT_EQ(test.name, "test");
  EXPECT_EQ(test.port, 8080);
  EXPECT_EQ(test.target_group, "green");
  ASSERT_EQ(test.allow.size(), 1u);
  EXPECT_EQ(test.allow[0], *ParseCidr("127.0.0.0/8"));

  ASSERT_EQ(config.target_groups.size(), 2u);
  const TargetGroupConfig& blue = config.target_groups[0];
  EXPECT_EQ(blue.name, "blue");
  EXPECT_EQ(blue.targets, (std::vector<Endpoint>{Ep("127.0.0.1:9001"), Ep("127.0.0.1:9003")}));
  EXPECT_EQ(blue.algorithm, Algorithm::kRoundRobin);
  EXPECT_EQ(blue.health_check.path, "/");
  EXPECT_EQ(blue.health_check.interval, seconds(10));
  EXPECT_EQ(blue.health_check.timeout, seconds(5));
  EXPECT_EQ(blue.health_check.healthy_threshold, 2);
  EXPECT_EQ(blue.health_check.unhealthy_threshold, 2);
  EXPECT_EQ(blue.health_check.matcher.ToString(), "200-299");
  EXPECT_EQ(blue.deregistration_delay, seconds(30));
  EXPECT_EQ(blue.tags, (std::map<std::string, std::string>{
                           {"Identifier", "Code1"}, {"Image", "v1"}, {"IsProduction", "true"}}));

  const TargetGroupConfig& green = config.target_groups[1];
  EXPECT_EQ(green.name, "green");
  EXPECT_EQ(green.targets, (std::vector<Endpoint>{Ep("127.0.0.1:9002")}));
  EXPECT_EQ(green.algorithm, Algorithm::kRoundRobin);
  EXPECT_EQ(green.health_check, HealthCheckConfig{});
  EXPECT_EQ(green.deregistration_delay, seconds(30));
  EXPECT_EQ(green.tags.at("IsProduction"), "false");

  const Limits& limits = config.limits;
  EXPECT_EQ(limits.client_header_timeout, seconds(10));
  EXPECT_EQ(limits.client_idle_timeout, seconds(60));
  EXPECT_EQ(limits.upstream_connect_timeout, seconds(5));
  EXPECT_EQ(limits.upstream_response_timeout, seconds(60));
  EXPECT_EQ(limits.upstream_idle_timeout, seconds(30));
  EXPECT_EQ(limits.drain_timeout, seconds(30));
  EXPECT_EQ(limits.max_request_line, 8192u);
  EXPECT_EQ(limits.max_header_bytes, 32768u);
  EXPECT_EQ(limits.max_headers, 100u);
}

TEST(ParseProxyConfigTest, DefaultsOfOmittedKeys) {
  ProxyConfig config = ParseOk(kMinimal);
  EXPECT_EQ(config.admin, "");
  EXPECT_EQ(config.state_file, "");
  EXPECT_EQ(config.workers, 0);
  ASSERT_EQ(config.listeners.size(), 1u);
  EXPECT_EQ(config.listeners[0].address, "0.0.0.0");
  ASSERT_EQ(config.target_groups.size(), 1u);
  const TargetGroupConfig& group = config.target_groups[0];
  EXPECT_EQ(group.algorithm, Algorithm::kRoundRobin);
  EXPECT_EQ(group.health_check.path, "/");
  EXPECT_EQ(group.health_check.interval, seconds(10));
  EXPECT_EQ(group.health_check.timeout, seconds(5));
  EXPECT_EQ(group.health_check.healthy_threshold, 2);
  EXPECT_EQ(group.health_check.unhealthy_threshold, 2);
  EXPECT_EQ(group.health_check.matcher.ranges, (std::vector<std::pair<int, int>>{{200, 299}}));
  EXPECT_EQ(group.deregistration_delay, seconds(30));
  EXPECT_TRUE(group.tags.empty());
  // Omitted limits take the defaults of config.h.
  EXPECT_EQ(config.limits, Limits{});
}

TEST(ParseProxyConfigTest, EveryOptionalKey) {
  ProxyConfig config = ParseOk(R"(
admin: unix:/run/bluegreen/admin.sock
workers: 256
listeners:
  - name: v6
    address: "::"
    port: 8000
    target_group: g.1
    allow: [10.0.0.0/8, "::1", 192.168.1.7]
target_groups:
  - name: g.1
    targets: ["[::1]:9001", localhost:9002]
    algorithm: least_outstanding_requests
    health_check:
      path: /healthz?full=1
      interval: 1m30s
      timeout: 1500ms
      healthy_threshold: 10
      unhealthy_threshold: 1
      matcher: 200-299, 404
    deregistration_delay: 0s
limits:
  upstream_idle_timeout: 1.5
  max_headers: 1
)");
  EXPECT_EQ(config.admin, "unix:/run/bluegreen/admin.sock");
  EXPECT_EQ(config.workers, 256);
  ASSERT_EQ(config.listeners.size(), 1u);
  EXPECT_EQ(config.listeners[0].address, "::");
  EXPECT_EQ(config.listeners[0].allow.size(), 3u);
  EXPECT_EQ(config.listeners[0].allow[1].ToString(), "::1/128");
  EXPECT_EQ(config.listeners[0].allow[2].ToString(), "192.168.1.7/32");
  const TargetGroupConfig& g = config.target_groups.at(0);
  EXPECT_EQ(g.targets, (std::vector<Endpoint>{Ep("[::1]:9001"), Ep("127.0.0.1:9002")}));
  EXPECT_EQ(g.algorithm, Algorithm::kLeastOutstandingRequests);
  EXPECT_EQ(g.health_check.path, "/healthz?full=1");
  EXPECT_EQ(g.health_check.interval, seconds(90));
  EXPECT_EQ(g.health_check.timeout, milliseconds(1500));
  EXPECT_EQ(g.health_check.healthy_threshold, 10);
  EXPECT_EQ(g.health_check.unhealthy_threshold, 1);
  EXPECT_EQ(g.health_check.matcher.ToString(), "200-299,404");
  EXPECT_EQ(g.deregistration_delay, milliseconds(0));
  EXPECT_EQ(config.limits.upstream_idle_timeout, milliseconds(1500));
  EXPECT_EQ(config.limits.max_headers, 1u);
  EXPECT_EQ(config.limits.drain_timeout, seconds(30));
}

TEST(ParseProxyConfigTest, DurationsMayBeNumbersOfSeconds) {
  ProxyConfig config = ParseOk(R"(
target_groups:
  - name: blue
    health_check: {interval: 20, timeout: 0.25}
    deregistration_delay: 0
limits: {drain_timeout: 120}
)");
  EXPECT_EQ(config.target_groups[0].health_check.interval, seconds(20));
  EXPECT_EQ(config.target_groups[0].health_check.timeout, milliseconds(250));
  EXPECT_EQ(config.target_groups[0].deregistration_delay, seconds(0));
  EXPECT_EQ(config.limits.drain_timeout, minutes(2));
}

TEST(ParseProxyConfigTest, TargetGroupMayHaveNoTargets) {
  ProxyConfig config = ParseOk(R"(
listeners: [{name: p, port: 8000, target_group: empty}]
target_groups:
  - {name: empty, targets: []}
  - {name: also_empty}
)");
  EXPECT_TRUE(config.target_groups[0].targets.empty());
  EXPECT_TRUE(config.target_groups[1].targets.empty());
}

TEST(ParseProxyConfigTest, EmptySectionsAreAllowed) {
  ProxyConfig config = ParseOk(R"(
listeners:
target_groups: []
limits:
)");
  EXPECT_TRUE(config.listeners.empty());
  EXPECT_TRUE(config.target_groups.empty());
  EXPECT_EQ(config.limits, Limits{});
  EXPECT_EQ(ParseOk("{}"), ProxyConfig{});
}

TEST(ParseProxyConfigTest, ScalarTagValuesAreTakenAsText) {
  ProxyConfig config = ParseOk(R"(
target_groups:
  - name: blue
    tags: {IsProduction: true, Weight: 1, Ratio: 0.50, Empty: "", Version: 1.10}
)");
  EXPECT_EQ(config.target_groups[0].tags,
            (std::map<std::string, std::string>{{"IsProduction", "true"},
                                                {"Weight", "1"},
                                                {"Ratio", "0.50"},
                                                {"Empty", ""},
                                                {"Version", "1.10"}}));
}

TEST(ParseProxyConfigTest, SameAddressOnDifferentPortsOrAddressesIsFine) {
  ParseOk(R"(
listeners:
  - {name: a, port: 8000, target_group: g}
  - {name: b, port: 8001, target_group: g}
  - {name: c, address: 127.0.0.1, port: 8000, target_group: g}
  - {name: d, address: "::", port: 8000, target_group: g}
target_groups: [{name: g}]
)");
}

// ---------------------------------------------------------------------------------------------
// JSON: input and the canonical output

TEST(ProxyConfigToJsonTest, RoundTripsTheExample) {
  ProxyConfig config = ParseOk(kExample);
  std::string json = ProxyConfigToJson(config);
  Result<ProxyConfig> back = ParseProxyConfig(json);
  ASSERT_TRUE(back.ok()) << back.status().message() << "\n" << json;
  EXPECT_EQ(*back, config);
  EXPECT_EQ(ProxyConfigToJson(*back), json);  // canonical: a fixed point
}

TEST(ProxyConfigToJsonTest, RoundTripsUnusualValues) {
  ProxyConfig config = ParseOk(R"(
admin: "[::1]:9901"
listeners:
  - {name: v6, address: "::1", port: 65535, target_group: g, allow: ["10.9.8.7/8", "fe80::/10"]}
target_groups:
  - name: g
    targets: ["[2001:db8::1]:1", 10.0.0.1:65535]
    algorithm: least_outstanding_requests
    health_check: {interval: 1h1ms, timeout: 1ms, matcher: "200,302,400-404"}
    deregistration_delay: 0
    tags: {"key with \"quotes\"": "caf\u00e9 \u2603", "tab\there": "line\nbreak"}
limits: {max_header_bytes: 1099511627776, upstream_response_timeout: 999999999h}
)");
  std::string json = ProxyConfigToJson(config);
  Result<ProxyConfig> back = ParseProxyConfig(json);
  ASSERT_TRUE(back.ok()) << back.status().message() << "\n" << json;
  EXPECT_EQ(*back, config);
}

TEST(ProxyConfigToJsonTest, RoundTripsDefaults) {
  ProxyConfig config;
  Result<ProxyConfig> back = ParseProxyConfig(ProxyConfigToJson(config));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, config);
}

TEST(ProxyConfigToJsonTest, IsValidJsonWithEveryField) {
  nlohmann::json json = nlohmann::json::parse(ProxyConfigToJson(ParseOk(kExample)));
  EXPECT_EQ(json["admin"], "127.0.0.1:9901");
  EXPECT_EQ(json["workers"], 2);
  EXPECT_EQ(json["listeners"][0]["port"], 80);
  EXPECT_EQ(json["listeners"][0]["address"], "0.0.0.0");
  EXPECT_EQ(json["listeners"][1]["allow"][0], "127.0.0.0/8");
  EXPECT_EQ(json["target_groups"][0]["targets"][1], "127.0.0.1:9003");
  EXPECT_EQ(json["target_groups"][0]["algorithm"], "round_robin");
  EXPECT_EQ(json["target_groups"][0]["health_check"]["interval"], "10s");
  EXPECT_EQ(json["target_groups"][0]["health_check"]["matcher"], "200-299");
  EXPECT_EQ(json["target_groups"][0]["deregistration_delay"], "30s");
  EXPECT_EQ(json["target_groups"][1]["tags"]["IsProduction"], "false");
  EXPECT_EQ(json["limits"]["upstream_response_timeout"], "1m");
  EXPECT_EQ(json["limits"]["max_header_bytes"], 32768);
}

TEST(ProxyConfigToJsonTest, OmitsEmptyAdminAndStateFile) {
  nlohmann::json json = nlohmann::json::parse(ProxyConfigToJson(ParseOk(kMinimal)));
  EXPECT_FALSE(json.contains("admin"));
  EXPECT_FALSE(json.contains("state_file"));
}

TEST(ParseProxyConfigTest, AcceptsHandWrittenJson) {
  ProxyConfig config = ParseOk(R"({
  "admin": "127.0.0.1:9901",
  "listeners": [{"name": "production", "port": 8000, "target_group": "blue"}],
  "target_groups": [{
    "name": "blue",
    "targets": ["127.0.0.1:9001"],
    "health_check": {"interval": 3, "timeout": "1s", "matcher": 200},
    "tags": {"IsProduction": "true"}
  }],
  "limits": {"max_headers": 50}
})");
  EXPECT_EQ(config.admin, "127.0.0.1:9901");
  EXPECT_EQ(config.listeners.at(0).port, 8000);
  EXPECT_EQ(config.target_groups.at(0).health_check.interval, seconds(3));
  EXPECT_EQ(config.target_groups.at(0).health_check.matcher.ToString(), "200");
  EXPECT_EQ(config.limits.max_headers, 50u);
}

TEST(ParseProxyConfigTest, JsonErrorsHaveLines) {
  EXPECT_EQ(ErrorOf(R"(
{
  "listeners": [
    {"name": "production", "port": "8000", "target_group": "blue"}
  ],
  "target_groups": [{"name": "blue"}]
}
)"),
            "line 3: listeners[0].port: expected an integer, got the quoted string \"8000\"");
}

// ---------------------------------------------------------------------------------------------
// Errors: documents

TEST(ParseProxyConfigErrorTest, EmptyDocument) {
  EXPECT_EQ(ErrorOf(""), "line 1: the config is empty");
  EXPECT_EQ(ErrorOf("# nothing but a comment\n"), "line 1: the config is empty");
  EXPECT_EQ(ErrorOf("---\n...\n"), "line 1: the config is empty");
  EXPECT_EQ(ErrorOf("~\n"), "line 1: the config is empty");
}

TEST(ParseProxyConfigErrorTest, RootMustBeAMap) {
  EXPECT_EQ(ErrorOf("- a\n- b\n"), "line 1: the config must be a map, got a sequence");
  EXPECT_EQ(ErrorOf("\n\njust text\n"), "line 2: the config must be a map, got a scalar");
}

TEST(ParseProxyConfigErrorTest, OnlyOneDocument) {
  EXPECT_EQ(ErrorOf(R"(
workers: 1
---
workers: 2
)"),
            "line 2: expected one YAML document; another one starts here");
}

TEST(ParseProxyConfigErrorTest, YamlSyntaxErrorHasItsLine) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - {name: production, port: 8000
target_groups: []
)"),
            "line 3: invalid YAML: end of map flow not found");
  EXPECT_EQ(ErrorOf("workers: 1\n  bad indentation: 2\n"),
            "line 2: invalid YAML: illegal map value");
  EXPECT_EQ(ErrorOf("a: [1\n"), "line 2: invalid YAML: end of sequence flow not found");
  EXPECT_EQ(ErrorOf("admin: *nowhere\n"),
            "line 1: invalid YAML: the referenced anchor is not defined");
}

TEST(ParseProxyConfigErrorTest, StrayCommaIsAnErrorNotAHang) {
  // yaml-cpp's LoadAll never returns on this input.
  EXPECT_EQ(ErrorOf(","), "line 1: expected one YAML document; another one starts here");
}

TEST(ParseProxyConfigErrorTest, DeepNestingIsAnErrorNotACrash) {
  std::string deep(100'000, '[');
  std::string message = ErrorOf(deep);
  EXPECT_EQ(message.rfind("line 1: invalid YAML: ", 0), 0u) << message;
}

TEST(ParseProxyConfigErrorTest, AliasBombIsBounded) {
  std::string text = "x: &t [";
  for (int i = 0; i < 500; ++i) text += (i ? ", 127.0.0.1:" : "127.0.0.1:") + std::to_string(i + 1);
  text += "]\ntarget_groups:\n";
  for (int i = 0; i < 500; ++i) text += "  - {name: g" + std::to_string(i) + ", targets: *t}\n";
  std::string message = ErrorOf(text);
  EXPECT_NE(message.find(": the config is too large (more than 100000 values)"), std::string::npos)
      << message.substr(0, 1000);
}

// ---------------------------------------------------------------------------------------------
// Errors: keys and types

TEST(ParseProxyConfigTest, CpuAffinityIsAutoOrNone) {
  EXPECT_EQ(ParseOk(kMinimal).cpu_affinity, "");  // the proxy reads "" as auto
  EXPECT_EQ(ParseOk(std::string("cpu_affinity: none\n").append(kMinimal)).cpu_affinity, "none");
  EXPECT_EQ(ParseOk(std::string("cpu_affinity: auto\n").append(kMinimal)).cpu_affinity, "auto");
  EXPECT_EQ(ErrorOf(std::string("cpu_affinity: fast\n").append(kMinimal)),
            "line 1: cpu_affinity: must be auto or none, got \"fast\"");
  ProxyConfig config = ParseOk(std::string("cpu_affinity: none\n").append(kMinimal));
  Result<ProxyConfig> back = ParseProxyConfig(ProxyConfigToJson(config));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->cpu_affinity, "none");
}

TEST(ParseProxyConfigErrorTest, UnknownKeysAreErrors) {
  EXPECT_EQ(ErrorOf(R"(
listners: []
)"),
            "line 1: listners: unknown key (did you mean \"listeners\"?)");
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: production
    prot: 8000
    port: 8000
    target_group: blue
target_groups: [{name: blue}]
)"),
            "line 3: listeners[0].prot: unknown key (did you mean \"port\"?)");
  EXPECT_EQ(ErrorOf(R"(
target_groups:
  - name: blue
    health_check: {path: /, colour: blue}
)"),
            "line 3: target_groups[0].health_check.colour: unknown key (expected one of: path, "
            "interval, timeout, healthy_threshold, unhealthy_threshold, matcher)");
  EXPECT_EQ(ErrorOf("limits: {max_header: 10}\n"),
            "line 1: limits.max_header: unknown key (did you mean \"max_headers\"?)");
}

TEST(ParseProxyConfigErrorTest, DuplicateKeys) {
  EXPECT_EQ(ErrorOf(R"(
workers: 1
workers: 2
)"),
            "line 2: workers: duplicate key");
  EXPECT_EQ(ErrorOf(R"(
target_groups:
  - name: blue
    tags:
      Image: v1
      Image: v2
)"),
            "line 5: target_groups[0].tags.Image: duplicate key");
}

TEST(ParseProxyConfigErrorTest, MissingRequiredKeysPointAtTheirMap) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: production
    target_group: blue
target_groups:
  - targets: [127.0.0.1:9001]
)"),
            "line 2: listeners[0].port: missing required key\n"
            "line 3: listeners[0].target_group: no target group named \"blue\"\n"
            "line 5: target_groups[0].name: missing required key");
}

TEST(ParseProxyConfigErrorTest, WrongTypes) {
  EXPECT_EQ(ErrorOf(R"(
workers: [1]
admin: {host: x}
listeners: {name: production}
target_groups:
  - name: blue
    targets: 127.0.0.1:9001
    tags: [a, b]
    health_check: /
limits: 5
)"),
            "line 1: workers: expected an integer, got a sequence\n"
            "line 2: admin: expected a string, got a map\n"
            "line 3: listeners: expected a sequence, got a map\n"
            "line 6: target_groups[0].targets: expected a sequence, got a scalar\n"
            "line 7: target_groups[0].tags: expected a map of strings, got a sequence\n"
            "line 8: target_groups[0].health_check: expected a map, got a scalar\n"
            "line 9: limits: expected a map, got a scalar");
}

TEST(ParseProxyConfigErrorTest, IntegersMustBePlainDecimal) {
  EXPECT_EQ(ErrorOf("workers: two\n"), "line 1: workers: expected an integer, got \"two\"");
  EXPECT_EQ(ErrorOf("workers: 1.5\n"), "line 1: workers: expected an integer, got \"1.5\"");
  EXPECT_EQ(ErrorOf("workers: 0x10\n"), "line 1: workers: expected an integer, got \"0x10\"");
  EXPECT_EQ(ErrorOf("workers: \"2\"\n"),
            "line 1: workers: expected an integer, got the quoted string \"2\"");
  EXPECT_EQ(ErrorOf("workers:\n"), "line 1: workers: expected an integer, got null");
  EXPECT_EQ(ErrorOf("workers: 99999999999999999999999\n"),
            "line 1: workers: must be between 0 and 256, got 99999999999999999999999");
  EXPECT_EQ(ErrorOf("workers: -9223372036854775808\n"),
            "line 1: workers: must be between 0 and 256, got -9223372036854775808");
  EXPECT_EQ(ParseOk("workers: !!int 3\n").workers, 3);
}

TEST(ParseProxyConfigErrorTest, ListElementsMustBeMaps) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - production
  - ~
target_groups:
  - [blue]
)"),
            "line 2: listeners[0]: expected a map, got a scalar\n"
            "line 3: listeners[1]: expected a map, got null\n"
            "line 5: target_groups[0]: expected a map, got a sequence");
}

// ---------------------------------------------------------------------------------------------
// Errors: values

TEST(ParseProxyConfigErrorTest, Workers) {
  EXPECT_EQ(ErrorOf("workers: 257\n"), "line 1: workers: must be between 0 and 256, got 257");
  EXPECT_EQ(ErrorOf("workers: -1\n"), "line 1: workers: must be between 0 and 256, got -1");
}

TEST(ParseProxyConfigErrorTest, Names) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - {name: "prod uction", port: 8000, target_group: blue}
target_groups:
  - name: blue
  - name: ""
  - name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
)"),
            "line 2: listeners[0].name: must be 1 to 64 characters of A-Z a-z 0-9 _ . -, got "
            "\"prod uction\"\n"
            "line 5: target_groups[1].name: must be 1 to 64 characters of A-Z a-z 0-9 _ . -, got "
            "\"\"\n"
            "line 6: target_groups[2].name: must be 1 to 64 characters of A-Z a-z 0-9 _ . -, got "
            "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"");
  // 64 characters are fine.
  ParseOk("target_groups: [{name: " + std::string(64, 'a') + "}]\n");
}

TEST(ParseProxyConfigErrorTest, DuplicateNames) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - {name: production, port: 8000, target_group: blue}
  - {name: production, port: 8001, target_group: blue}
target_groups:
  - name: blue
  - name: blue
)"),
            "line 3: listeners[1].name: duplicate listener name \"production\" (first used by "
            "listeners[0])\n"
            "line 6: target_groups[1].name: duplicate target group name \"blue\" (first used by "
            "target_groups[0])");
}

TEST(ParseProxyConfigErrorTest, DuplicateAddressAndPort) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - {name: a, port: 8000, target_group: blue}
  - {name: b, address: 0.0.0.0, port: 8000, target_group: blue}
  - {name: c, address: "::", port: 8000, target_group: blue}
  - {name: d, address: "0::0", port: 8000, target_group: blue}
target_groups: [{name: blue}]
)"),
            "line 3: listeners[1].port: 0.0.0.0:8000 is already used by listeners[0]\n"
            "line 5: listeners[3].port: [::]:8000 is already used by listeners[2]");
}

TEST(ParseProxyConfigErrorTest, Ports) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - {name: a, port: 0, target_group: blue}
  - {name: b, port: 65536, target_group: blue}
  - {name: c, port: -80, target_group: blue}
target_groups: [{name: blue}]
)"),
            "line 2: listeners[0].port: must be between 1 and 65535, got 0\n"
            "line 3: listeners[1].port: must be between 1 and 65535, got 65536\n"
            "line 4: listeners[2].port: must be between 1 and 65535, got -80");
}

TEST(ParseProxyConfigErrorTest, BindAddress) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - {name: a, address: localhost, port: 8000, target_group: blue}
  - {name: b, address: "[::]", port: 8000, target_group: blue}
target_groups: [{name: blue}]
)"),
            "line 2: listeners[0].address: must be a numeric IPv4 or IPv6 address, got "
            "\"localhost\"\n"
            "line 3: listeners[1].address: must be a numeric IPv4 or IPv6 address, got "
            "\"[::]\"");
}

TEST(ParseProxyConfigErrorTest, UnknownTargetGroup) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: production
    port: 8000
    target_group: bleu
target_groups: [{name: blue}]
)"),
            "line 4: listeners[0].target_group: no target group named \"bleu\"");
}

TEST(ParseProxyConfigErrorTest, Targets) {
  EXPECT_EQ(ErrorOf(R"(
target_groups:
  - name: blue
    targets:
      - 127.0.0.1:9001
      - 127.0.0.1:0
      - example.com:80
      - 127.0.0.1:9001
      - 127.0.0.1
      - [127.0.0.1]
      - localhost:9001
)"),
            "line 5: target_groups[0].targets[1]: port must be between 1 and 65535, got 0\n"
            "line 6: target_groups[0].targets[2]: invalid endpoint \"example.com:80\": not a "
            "numeric IP address (host names other than localhost are not resolved)\n"
            "line 7: target_groups[0].targets[3]: duplicate target 127.0.0.1:9001 (also "
            "target_groups[0].targets[0])\n"
            "line 8: target_groups[0].targets[4]: invalid endpoint \"127.0.0.1\": expected "
            "host:port\n"
            "line 9: target_groups[0].targets[5]: expected a string, got a sequence\n"
            "line 10: target_groups[0].targets[6]: duplicate target 127.0.0.1:9001 (also "
            "target_groups[0].targets[0])");
}

TEST(ParseProxyConfigErrorTest, SameTargetInTwoGroupsIsFine) {
  ParseOk(R"(
target_groups:
  - {name: blue, targets: [127.0.0.1:9001]}
  - {name: green, targets: [127.0.0.1:9001]}
)");
}

TEST(ParseProxyConfigErrorTest, Algorithm) {
  EXPECT_EQ(ErrorOf(R"(
target_groups:
  - name: blue
    algorithm: random
)"),
            "line 3: target_groups[0].algorithm: unknown algorithm \"random\" (expected "
            "round_robin or least_outstanding_requests)");
}

TEST(ParseProxyConfigErrorTest, HealthCheck) {
  EXPECT_EQ(ErrorOf(R"(
target_groups:
  - name: blue
    health_check:
      path: healthz
      interval: 0s
      timeout: -1s
      healthy_threshold: 0
      unhealthy_threshold: 11
      matcher: "200-100"
  - name: green
    health_check:
      path: /health check
      interval: 10s
      timeout: 11s
      matcher: "600"
  - name: red
    health_check: {interval: 5x, matcher: "200,,300"}
  - name: black
    health_check: {timeout: 0, matcher: abc}
)"),
            "line 4: target_groups[0].health_check.path: must start with '/' and contain no "
            "spaces or control characters, got \"healthz\"\n"
            "line 5: target_groups[0].health_check.interval: must be greater than 0, got 0s\n"
            "line 6: target_groups[0].health_check.timeout: invalid duration \"-1s\": must not "
            "be negative\n"
            "line 7: target_groups[0].health_check.healthy_threshold: must be between 1 and 10, "
            "got 0\n"
            "line 8: target_groups[0].health_check.unhealthy_threshold: must be between 1 and "
            "10, got 11\n"
            "line 9: target_groups[0].health_check.matcher: invalid status matcher \"200-100\": "
            "range \"200-100\" is backwards\n"
            "line 12: target_groups[1].health_check.path: must start with '/' and contain no "
            "spaces or control characters, got \"/health check\"\n"
            "line 14: target_groups[1].health_check.timeout: must not be longer than interval "
            "(10s), got 11s\n"
            "line 15: target_groups[1].health_check.matcher: invalid status matcher \"600\": "
            "status code 600 is not between 100 and 599\n"
            "line 17: target_groups[2].health_check.interval: invalid duration \"5x\": unknown "
            "unit \"x\" (expected ms, s, m or h)\n"
            "line 17: target_groups[2].health_check.matcher: invalid status matcher "
            "\"200,,300\": empty item\n"
            "line 19: target_groups[3].health_check.matcher: invalid status matcher \"abc\": "
            "\"abc\" is not a status code or a range such as 200-299\n"
            "line 19: target_groups[3].health_check.timeout: must be greater than 0, got 0s");
}

TEST(ParseProxyConfigErrorTest, TimeoutIsComparedWithTheDefaultInterval) {
  EXPECT_EQ(ErrorOf(R"(
target_groups:
  - name: blue
    health_check: {timeout: 15s}
)"),
            "line 3: target_groups[0].health_check.timeout: must not be longer than interval "
            "(10s), got 15s");
  // An interval that failed to parse is not compared.
  EXPECT_EQ(ErrorOf(R"(
target_groups:
  - name: blue
    health_check: {interval: soon, timeout: 15s}
)"),
            "line 3: target_groups[0].health_check.interval: invalid duration \"soon\": "
            "expected a number at \"soon\"");
}

TEST(ParseProxyConfigErrorTest, DeregistrationDelay) {
  EXPECT_EQ(ErrorOf(R"(
target_groups:
  - name: blue
    deregistration_delay: -30s
)"),
            "line 3: target_groups[0].deregistration_delay: invalid duration \"-30s\": must not "
            "be negative");
  EXPECT_EQ(ErrorOf(R"(
target_groups:
  - name: blue
    deregistration_delay: [30s]
)"),
            "line 3: target_groups[0].deregistration_delay: expected a duration such as \"10s\", "
            "got a sequence");
}

TEST(ParseProxyConfigErrorTest, Tags) {
  std::string long_key(129, 'k');
  std::string long_value(257, 'v');
  EXPECT_EQ(ErrorOf(R"(
target_groups:
  - name: blue
    tags:
      Identifier:
      Image: [v1]
      )" + long_key +
                    R"(: x
      Long: )" + long_value +
                    R"(
      Fine: )" + std::string(256, 'v') +
                    R"(
      ? [a]
      : b
)"),
            "line 4: target_groups[0].tags.Identifier: tag values must be strings, got null "
            "(quote it: \"\")\n"
            "line 5: target_groups[0].tags.Image: tag values must be strings, got a sequence\n"
            "line 6: target_groups[0].tags." +
                long_key +
                ": tag keys must be 1 to 128 characters, got 129\n"
                "line 7: target_groups[0].tags.Long: tag values must be at most 256 characters, "
                "got 257\n"
                "line 9: target_groups[0].tags: tag keys must be strings, got a sequence");
}

TEST(ParseProxyConfigErrorTest, Admin) {
  EXPECT_EQ(ErrorOf("admin: 9901\n"),
            "line 1: admin: must be IP:port or unix:/absolute/path, got \"9901\"");
  EXPECT_EQ(ErrorOf("admin: 127.0.0.1:0\n"),
            "line 1: admin: port must be between 1 and 65535, got 0");
  EXPECT_EQ(ErrorOf("admin: unix:relative.sock\n"),
            "line 1: admin: unix socket path must be absolute, got \"unix:relative.sock\"");
  EXPECT_EQ(ErrorOf("admin: unix:/" + std::string(107, 's') + "\n"),
            "line 1: admin: unix socket path must be at most 107 bytes, got 108");
  EXPECT_EQ(ParseOk("admin: \"[::1]:9901\"\n").admin, "[::1]:9901");
  EXPECT_EQ(ParseOk("admin: localhost:9901\n").admin, "localhost:9901");
  EXPECT_EQ(ParseOk("admin: unix:/tmp/admin.sock\n").admin, "unix:/tmp/admin.sock");
}

TEST(ParseProxyConfigErrorTest, Allow) {
  EXPECT_EQ(ErrorOf(R"(
listeners:
  - name: test
    port: 8001
    target_group: blue
    allow:
      - 127.0.0.0/8
      - 10.0.0.0/33
      - everyone
target_groups: [{name: blue}]
)"),
            "line 7: listeners[0].allow[1]: invalid CIDR \"10.0.0.0/33\": prefix length must be "
            "between 0 and 32\n"
            "line 8: listeners[0].allow[2]: invalid CIDR \"everyone\": not a numeric IP address");
}

TEST(ParseProxyConfigErrorTest, Limits) {
  EXPECT_EQ(ErrorOf(R"(
limits:
  client_header_timeout: 0s
  client_idle_timeout: 0
  upstream_connect_timeout: never
  drain_timeout: -5s
  max_request_line: 0
  max_header_bytes: -1
  max_headers: lots
)"),
            "line 2: limits.client_header_timeout: must be greater than 0, got 0s\n"
            "line 3: limits.client_idle_timeout: must be greater than 0, got 0s\n"
            "line 4: limits.upstream_connect_timeout: invalid duration \"never\": expected a "
            "number at \"never\"\n"
            "line 5: limits.drain_timeout: invalid duration \"-5s\": must not be negative\n"
            "line 6: limits.max_request_line: must be at least 1, got 0\n"
            "line 7: limits.max_header_bytes: must be at least 1, got -1\n"
            "line 8: limits.max_headers: expected an integer, got \"lots\"");
}

// ---------------------------------------------------------------------------------------------
// Errors: many at once

TEST(ParseProxyConfigErrorTest, ReportsEveryProblemSortedByLine) {
  EXPECT_EQ(ErrorOf(R"(
admin: nowhere
workers: 1000
listeners:
  - {name: production, port: 80000, target_group: blue}
  - {name: production, port: 8001, target_group: purple, allow: [10.0.0.0/40]}
target_groups:
  - name: blue
    targets: [127.0.0.1:9001, 127.0.0.1:9001]
    health_check: {interval: 1s, timeout: 2s, matcher: "99"}
    colour: blue
  - name: blue
limits: {max_headers: 0}
)"),
            "line 1: admin: must be IP:port or unix:/absolute/path, got \"nowhere\"\n"
            "line 2: workers: must be between 0 and 256, got 1000\n"
            "line 4: listeners[0].port: must be between 1 and 65535, got 80000\n"
            "line 5: listeners[1].allow[0]: invalid CIDR \"10.0.0.0/40\": prefix length must be "
            "between 0 and 32\n"
            "line 5: listeners[1].name: duplicate listener name \"production\" (first used by "
            "listeners[0])\n"
            "line 5: listeners[1].target_group: no target group named \"purple\"\n"
            "line 8: target_groups[0].targets[1]: duplicate target 127.0.0.1:9001 (also "
            "target_groups[0].targets[0])\n"
            "line 9: target_groups[0].health_check.matcher: invalid status matcher \"99\": "
            "status code 99 is not between 100 and 599\n"
            "line 9: target_groups[0].health_check.timeout: must not be longer than interval "
            "(1s), got 2s\n"
            "line 10: target_groups[0].colour: unknown key (expected one of: name, targets, "
            "algorithm, health_check, deregistration_delay, tags)\n"
            "line 11: target_groups[1].name: duplicate target group name \"blue\" (first used by "
            "target_groups[0])\n"
            "line 12: limits.max_headers: must be at least 1, got 0");
}

TEST(ParseProxyConfigErrorTest, ManyProblemsAreCapped) {
  std::string text = "target_groups:\n";
  for (int i = 0; i < 150; ++i) text += "  - {name: \"bad name\"}\n";
  std::string message = ErrorOf(text);
  EXPECT_EQ(std::count(message.begin(), message.end(), '\n'), 100);
  EXPECT_TRUE(message.ends_with("\n... and 50 more problems")) << message;
}

// ---------------------------------------------------------------------------------------------
// ValidateProxyConfig on configs built in code

ProxyConfig BuiltConfig() {
  ProxyConfig config;
  ListenerConfig listener;
  listener.name = "production";
  listener.port = 8000;
  listener.target_group = "blue";
  config.listeners.push_back(listener);
  TargetGroupConfig group;
  group.name = "blue";
  group.targets.push_back(Ep("127.0.0.1:9001"));
  config.target_groups.push_back(group);
  return config;
}

TEST(ValidateProxyConfigTest, AcceptsAValidConfig) {
  EXPECT_EQ(ValidateProxyConfig(BuiltConfig()), Status::Ok());
  EXPECT_EQ(ValidateProxyConfig(ProxyConfig{}), Status::Ok());
}

TEST(ValidateProxyConfigTest, ReportsProblemsWithoutLines) {
  ProxyConfig config = BuiltConfig();
  config.listeners.push_back(config.listeners[0]);
  config.listeners[1].target_group = "green";
  config.target_groups[0].targets.push_back(Ep("127.0.0.1:9001"));
  config.target_groups[0].health_check.matcher.ranges.clear();
  config.target_groups[0].deregistration_delay = milliseconds(-1);
  config.target_groups[0].tags[""] = "x";
  config.target_groups[0].tags["bad"] = std::string("\xff\xfe", 2);
  config.workers = -1;
  config.limits.max_headers = 0;
  config.limits.drain_timeout = milliseconds(0);
  Status status = ValidateProxyConfig(config);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "workers: must be between 0 and 256, got -1\n"
            "target_groups[0].targets[1]: duplicate target 127.0.0.1:9001 (also "
            "target_groups[0].targets[0])\n"
            "target_groups[0].health_check.matcher: invalid status matcher \"\": empty (expected "
            "codes such as \"200-299,404\")\n"
            "target_groups[0].deregistration_delay: must not be negative, got -1ms\n"
            "target_groups[0].tags.: tag keys must be 1 to 128 characters, got 0\n"
            "target_groups[0].tags.bad: tag values must be valid UTF-8 without NUL characters\n"
            "listeners[1].name: duplicate listener name \"production\" (first used by "
            "listeners[0])\n"
            "listeners[1].port: 0.0.0.0:8000 is already used by listeners[0]\n"
            "listeners[1].target_group: no target group named \"green\"\n"
            "limits.drain_timeout: must be greater than 0, got 0s\n"
            "limits.max_headers: must be at least 1, got 0");
}

TEST(ValidateProxyConfigTest, TargetsMustBeSet) {
  ProxyConfig config = BuiltConfig();
  config.target_groups[0].targets.push_back(Endpoint{});
  EXPECT_EQ(ValidateProxyConfig(config).message(),
            "target_groups[0].targets[1]: must be an IP:port endpoint");
}

// ---------------------------------------------------------------------------------------------
// Helpers

TEST(StatusMatcherTest, Matches) {
  StatusMatcher matcher = *ParseStatusMatcher("200-299,404");
  EXPECT_TRUE(matcher.Matches(200));
  EXPECT_TRUE(matcher.Matches(250));
  EXPECT_TRUE(matcher.Matches(299));
  EXPECT_TRUE(matcher.Matches(404));
  EXPECT_FALSE(matcher.Matches(199));
  EXPECT_FALSE(matcher.Matches(300));
  EXPECT_FALSE(matcher.Matches(403));
  EXPECT_FALSE(matcher.Matches(0));
  EXPECT_FALSE(StatusMatcher{}.Matches(200));
  EXPECT_TRUE(HealthCheckConfig{}.matcher.Matches(204));
}

TEST(StatusMatcherTest, ParseAndToString) {
  EXPECT_EQ(ParseStatusMatcher("200,302")->ranges,
            (std::vector<std::pair<int, int>>{{200, 200}, {302, 302}}));
  EXPECT_EQ(ParseStatusMatcher(" 200 - 299 , 404 ")->ToString(), "200-299,404");
  EXPECT_EQ(ParseStatusMatcher("100-599")->ToString(), "100-599");
  EXPECT_EQ(ParseStatusMatcher("200-200")->ToString(), "200");
  for (const char* text : {"200", "200,302", "200-299,404", "500-599,200-204,301"}) {
    Result<StatusMatcher> matcher = ParseStatusMatcher(text);
    ASSERT_TRUE(matcher.ok()) << text;
    EXPECT_EQ(matcher->ToString(), text);
    EXPECT_EQ(*ParseStatusMatcher(matcher->ToString()), *matcher);
  }
  for (const char* text : {"", " ", ",", "200,", "-", "200-", "-299", "2OO", "200-299-300", "1000",
                           "099", "600", "300-200", "200;404"}) {
    Result<StatusMatcher> matcher = ParseStatusMatcher(text);
    EXPECT_FALSE(matcher.ok()) << text;
    EXPECT_EQ(matcher.status().code(), StatusCode::kInvalidArgument) << text;
  }
}

TEST(AlgorithmTest, NamesRoundTrip) {
  EXPECT_EQ(AlgorithmName(Algorithm::kRoundRobin), "round_robin");
  EXPECT_EQ(AlgorithmName(Algorithm::kLeastOutstandingRequests), "least_outstanding_requests");
  for (Algorithm a : {Algorithm::kRoundRobin, Algorithm::kLeastOutstandingRequests}) {
    EXPECT_EQ(*ParseAlgorithm(AlgorithmName(a)), a);
  }
  EXPECT_EQ(ParseAlgorithm("RoundRobin").status().code(), StatusCode::kInvalidArgument);
}

TEST(ProxyConfigTest, FindHelpers) {
  ProxyConfig config = ParseOk(kExample);
  ASSERT_NE(config.FindTargetGroup("green"), nullptr);
  EXPECT_EQ(config.FindTargetGroup("green")->targets.size(), 1u);
  EXPECT_EQ(config.FindTargetGroup("purple"), nullptr);
  ASSERT_NE(config.FindListener("test"), nullptr);
  EXPECT_EQ(config.FindListener("test")->port, 8080);
  EXPECT_EQ(config.FindListener("blue"), nullptr);

  // The mutable overloads point into the config.
  config.FindListener("production")->target_group = "green";
  EXPECT_EQ(config.listeners[0].target_group, "green");
  config.FindTargetGroup("blue")->targets.clear();
  EXPECT_TRUE(config.target_groups[0].targets.empty());

  const ProxyConfig& const_config = config;
  EXPECT_EQ(const_config.FindListener("test"), &config.listeners[1]);
  EXPECT_EQ(const_config.FindTargetGroup("green"), &config.target_groups[1]);
}

// ---------------------------------------------------------------------------------------------
// The example shipped in examples/

TEST(ExampleConfigTest, ExamplesProxyYamlIsValid) {
  // BLUEGREEN_SOURCE_DIR comes from CMake: __FILE__ may be relative (ccache's base_dir).
  std::filesystem::path path = std::filesystem::path(BLUEGREEN_SOURCE_DIR) / "examples/proxy.yaml";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot open " << path;
  std::stringstream text;
  text << in.rdbuf();
  Result<ProxyConfig> config = ParseProxyConfig(text.str());
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_EQ(config->admin, "127.0.0.1:9901");
  ASSERT_NE(config->FindListener("production"), nullptr);
  EXPECT_EQ(config->FindListener("production")->port, 8000);
  EXPECT_EQ(config->FindListener("production")->target_group, "blue");
  ASSERT_NE(config->FindListener("test"), nullptr);
  EXPECT_EQ(config->FindListener("test")->port, 8001);
  EXPECT_EQ(config->FindListener("test")->target_group, "green");
  ASSERT_NE(config->FindTargetGroup("blue"), nullptr);
  EXPECT_EQ(config->FindTargetGroup("blue")->targets,
            (std::vector<Endpoint>{Ep("127.0.0.1:9001"), Ep("127.0.0.1:9003")}));
  ASSERT_NE(config->FindTargetGroup("green"), nullptr);
  EXPECT_EQ(config->FindTargetGroup("green")->targets,
            (std::vector<Endpoint>{Ep("127.0.0.1:9002")}));
}

}  // namespace
}  // namespace bluegreen::proxy

namespace bluegreen::proxy {
namespace {

TEST(ParseProxyConfigUtf8Test, InvalidUtf8IsRejectedBeforeParsing) {
  Result<ProxyConfig> r = ParseProxyConfig("admin: 127.0.0.1:9901\ntarget_groups:\n"
                                           "  - {name: g, tags: {Image: \"v\xff\"}}\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("not valid UTF-8 (byte "), std::string::npos)
      << r.status().message();
}

}  // namespace
}  // namespace bluegreen::proxy
