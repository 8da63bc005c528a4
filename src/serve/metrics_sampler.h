// Traffic of each stack as the web console charts it: requests per second and the share of 5xx
// answers on the production and the test listener, one sample a second, for the last minutes.
//
// MetricsSampler reads the proxy's GET /metrics (Prometheus text, docs/proxy.md) about every
// second on a thread of its own, and turns the deltas of
// bluegreen_requests_total{listener,target_group,code_class} into a TrafficSample per stack, kept
// in a ring buffer per stack. Which target group a listener routes to when it had no request in a
// second comes from the proxy's state as the reconciler last saw it.
//
// Thread-safety: Start/Stop/Samples may be called from any thread; the sampling runs on the
// sampler's own thread. The free functions are pure.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "serve/prometheus_text.h"

namespace bluegreen::serve {

struct ListenerTraffic {
  double rps = 0;            // requests answered per second
  double error_rate = 0;     // share of them with a 5xx status, 0..1 (0 when there were none)
  std::string target_group;  // the group that had most of them, or else the listener's group now
  std::string identifier;    // that group's side: Code1 or Code2 (empty when unknown)
};

struct TrafficSample {
  int64_t t = 0;  // ms since the epoch, when the proxy was read
  ListenerTraffic production;
  ListenerTraffic test;
};

// {"t", "production": {"rps", "error_rate", "target_group", "identifier"}, "test": {...}}
nlohmann::json TrafficSampleToJson(const TrafficSample& s);

// bluegreen_requests_total by (proxy listener, target group, code class).
using RequestCounts = std::map<std::tuple<std::string, std::string, std::string>, double>;
RequestCounts RequestCountsFrom(const std::vector<PromSample>& samples);

// The traffic of each stack between two readings `seconds` apart. `routing` maps each proxy
// listener ("STACK-production", "STACK-test") to the group it routes to now; a stack is in the
// answer when either of its listeners is in `routing` or in `now`. A counter that went down (the
// proxy restarted) counts from zero.
std::map<std::string, TrafficSample> ComputeTraffic(
    const RequestCounts& before, const RequestCounts& now, double seconds, int64_t t,
    const std::map<std::string, std::string>& routing);

class MetricsSampler {
 public:
  // `admin_address`: the proxy's admin API ("unix:/path"). `proxy_state`: the proxy's /v1/state
  // as last seen (null while the proxy is not reachable: nothing is read then).
  MetricsSampler(std::string admin_address, std::function<nlohmann::json()> proxy_state,
                 std::chrono::milliseconds interval = std::chrono::seconds(1),
                 size_t capacity = 300);
  ~MetricsSampler();
  MetricsSampler(const MetricsSampler&) = delete;
  MetricsSampler& operator=(const MetricsSampler&) = delete;

  void Start();
  void Stop();

  std::chrono::milliseconds interval() const { return interval_; }
  // The stack's samples with `t` > `after`, oldest first.
  std::vector<TrafficSample> Samples(const std::string& stack, int64_t after = 0) const;

 private:
  void Loop();
  void SampleOnce();

  const std::string admin_address_;
  const std::function<nlohmann::json()> proxy_state_;
  const std::chrono::milliseconds interval_;
  const size_t capacity_;

  // Sampler thread only.
  RequestCounts last_counts_;
  std::chrono::steady_clock::time_point last_read_{};
  bool have_last_ = false;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;                                   // guarded by mu_
  std::map<std::string, std::deque<TrafficSample>> rings_;  // guarded by mu_
  std::thread thread_;
};

}  // namespace bluegreen::serve
