// ProxyConfig: the whole configuration of the data plane (listeners, target groups, limits),
// as read from the YAML config file, from a PUT /v1/config body (JSON or YAML), or from the
// state file. A ProxyConfig is a plain value: safe to copy between threads.
//
// Validation is part of parsing: ParseProxyConfig returns every problem it finds, each with the
// line and key where it was found, and an invalid config is never partly applied.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/net.h"
#include "common/status.h"

namespace bluegreen::proxy {

using Duration = std::chrono::milliseconds;

enum class Algorithm { kRoundRobin, kLeastOutstandingRequests };
std::string_view AlgorithmName(Algorithm a);
// Inverse of AlgorithmName: "round_robin" or "least_outstanding_requests".
Result<Algorithm> ParseAlgorithm(std::string_view name);

// Status codes that count as healthy, e.g. "200-299" or "200,301" or "200-299,404".
struct StatusMatcher {
  std::vector<std::pair<int, int>> ranges;  // inclusive
  bool Matches(int status) const;
  std::string ToString() const;  // canonical text, parses back to the same matcher
  bool operator==(const StatusMatcher&) const = default;
};
// Parses the text form, e.g. "200-299,404". Checks syntax and that codes are 100..599, lo <= hi.
Result<StatusMatcher> ParseStatusMatcher(std::string_view text);

struct HealthCheckConfig {
  std::string path = "/";
  Duration interval = std::chrono::seconds(10);
  Duration timeout = std::chrono::seconds(5);
  int healthy_threshold = 2;
  int unhealthy_threshold = 2;
  StatusMatcher matcher{{{200, 299}}};

  bool operator==(const HealthCheckConfig&) const = default;
};

struct TargetGroupConfig {
  std::string name;
  std::vector<Endpoint> targets;  // TCP endpoints, no duplicates
  Algorithm algorithm = Algorithm::kRoundRobin;
  HealthCheckConfig health_check;
  Duration deregistration_delay = std::chrono::seconds(30);
  std::map<std::string, std::string> tags;

  bool operator==(const TargetGroupConfig&) const = default;
};

struct ListenerConfig {
  std::string name;
  std::string address = "0.0.0.0";  // bind address; "::" for IPv6
  uint16_t port = 0;
  std::string target_group;
  std::vector<Cidr> allow;  // empty = everyone

  bool operator==(const ListenerConfig&) const = default;
};

// Timeouts and limits of the HTTP engine. Defaults are those of the mature proxies.
struct Limits {
  Duration client_header_timeout = std::chrono::seconds(10);
  Duration client_idle_timeout = std::chrono::seconds(60);
  Duration upstream_connect_timeout = std::chrono::seconds(5);
  Duration upstream_response_timeout = std::chrono::seconds(60);
  Duration upstream_idle_timeout = std::chrono::seconds(30);  // pooled connections older are closed
  Duration drain_timeout = std::chrono::seconds(30);          // SIGTERM: bound for in-flight work
  size_t max_request_line = 8 * 1024;                          // -> 414
  size_t max_header_bytes = 16 * 1024;  // whole head -> 431; at most 16384 (one I/O buffer)
  size_t max_headers = 100;                                    // header count -> 431

  bool operator==(const Limits&) const = default;
};

struct ProxyConfig {
  std::string admin;                 // "127.0.0.1:9901" or "unix:/path"; empty = no admin API
  std::string state_file;            // empty = none
  int workers = 0;                   // 0 = number of CPUs the process may use
  std::string cpu_affinity;          // "auto" (empty = auto) or "none"
  std::vector<ListenerConfig> listeners;
  std::vector<TargetGroupConfig> target_groups;
  Limits limits;

  const TargetGroupConfig* FindTargetGroup(std::string_view name) const;
  TargetGroupConfig* FindTargetGroup(std::string_view name);
  const ListenerConfig* FindListener(std::string_view name) const;
  ListenerConfig* FindListener(std::string_view name);

  bool operator==(const ProxyConfig&) const = default;
};

// Parses YAML (JSON is accepted too: it is YAML). On error the Status is kInvalidArgument and its
// message lists every problem, one per line, as "line N: key.path: what is wrong".
Result<ProxyConfig> ParseProxyConfig(std::string_view text);

// Checks cross-references and uniqueness (listener names and ports, target group names, each
// listener's target_group exists). ParseProxyConfig already calls it.
Status ValidateProxyConfig(const ProxyConfig& config);

// Canonical JSON text of the config: what the state file holds and what ParseProxyConfig reads
// back to an equal config.
std::string ProxyConfigToJson(const ProxyConfig& config);

}  // namespace bluegreen::proxy
