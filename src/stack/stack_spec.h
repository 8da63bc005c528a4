// StackSpec: what `bluegreen up -f FILE` deploys. One stack is one service built from one
// repository, run behind a production and a test listener, and released by a blue/green swap
// after an approval. A StackSpec is a plain value: safe to copy between threads.
//
// Validation is part of parsing: ParseStackSpec returns every problem it finds, each with the
// line and key where it was found. The keys and their defaults are documented in
// docs/stack-file.md; docs/stack.schema.json is the same contract as a JSON Schema.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/net.h"
#include "common/status.h"

namespace bluegreen::stack {

using Duration = std::chrono::milliseconds;

enum class Runtime { kProcess, kPodman, kDocker };
enum class ApprovalMode { kManual, kAuto };
enum class TimeoutAction { kReject, kApprove };

// The text forms used in the stack file: "process", "manual", "reject", ...
std::string_view RuntimeName(Runtime r);
std::string_view ApprovalModeName(ApprovalMode m);
std::string_view TimeoutActionName(TimeoutAction a);

struct SourceSpec {
  std::string repo;  // absolute local path, file://, https:// or ssh:// URL
  std::string branch = "main";
  Duration poll_interval = std::chrono::seconds(10);

  bool operator==(const SourceSpec&) const = default;
};

// The build's commands run first: `commands`, else the repository's buildspec.yml (required
// without a containerfile, optional with one). Then, with a containerfile, the image is built from
// the checkout; artifacts are not used with a containerfile.
struct BuildSpec {
  std::vector<std::string> commands;
  std::string containerfile;           // path in the repository; empty = none
  std::vector<std::string> artifacts;  // relative paths in the repository
  Duration timeout = std::chrono::minutes(30);

  bool operator==(const BuildSpec&) const = default;
};

// Same fields, rules and defaults as the proxy's HealthCheckConfig (bg_stack does not depend on
// bg_proxy). matcher is held in canonical text form, e.g. "200-299,404".
struct HealthCheckSpec {
  std::string path = "/";
  Duration interval = std::chrono::seconds(10);
  Duration timeout = std::chrono::seconds(5);
  int healthy_threshold = 2;
  int unhealthy_threshold = 2;
  std::string matcher = "200-299";

  bool operator==(const HealthCheckSpec&) const = default;
};

struct ServiceSpec {
  Runtime runtime = Runtime::kProcess;
  std::vector<std::string> command;  // required for kProcess; "${PORT}" is substituted
  std::string image;                 // container runtimes only; empty = none
  uint16_t port = 0;                 // container port, container runtimes only; 0 = none
  int desired_count = 1;
  std::map<std::string, std::string> env;
  HealthCheckSpec health_check;
  Duration deploy_timeout = std::chrono::minutes(5);

  bool operator==(const ServiceSpec&) const = default;
};

struct ListenerSpec {
  uint16_t port = 0;
  std::vector<Cidr> allow;  // empty = everyone

  bool operator==(const ListenerSpec&) const = default;
};

struct LoadBalancerSpec {
  ListenerSpec production;
  ListenerSpec test;
  Duration deregistration_delay = std::chrono::seconds(30);

  bool operator==(const LoadBalancerSpec&) const = default;
};

struct ApprovalSpec {
  ApprovalMode mode = ApprovalMode::kManual;
  Duration timeout = std::chrono::hours(24);
  TimeoutAction on_timeout = TimeoutAction::kReject;

  bool operator==(const ApprovalSpec&) const = default;
};

struct StackSpec {
  std::string name;  // [a-z0-9-]{1,32}
  SourceSpec source;  // source.repo empty = no source: versions come from `bluegreen deploy`
  BuildSpec build;
  ServiceSpec service;
  LoadBalancerSpec load_balancer;
  ApprovalSpec approval;

  bool has_source() const { return !source.repo.empty(); }

  bool operator==(const StackSpec&) const = default;
};

// Parses a stack file (YAML; JSON is accepted too). On error the Status is kInvalidArgument and
// its message lists every problem, one per line, as "line N: key.path: what is wrong".
Result<StackSpec> ParseStackSpec(std::string_view yaml);

// Canonical JSON text of a valid spec, every key written out (defaults included, optional fields
// that are unset left out). ParseStackSpec reads it back to an equal spec.
std::string StackSpecToJson(const StackSpec& spec);

}  // namespace bluegreen::stack
