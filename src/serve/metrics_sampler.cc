#include "serve/metrics_sampler.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <set>

#include "common/http_client.h"
#include "serve/reconciler.h"

namespace bluegreen::serve {
namespace {

constexpr std::string_view kProduction = "-production";
constexpr std::string_view kTest = "-test";

double Round3(double v) { return std::abs(v) < 1e12 ? std::round(v * 1000) / 1000 : v; }

// "app-production" -> {"app", true}; "app-test" -> {"app", false}; else {"", false}.
std::pair<std::string, bool> SplitListener(std::string_view listener) {
  if (listener.size() > kProduction.size() && listener.ends_with(kProduction)) {
    return {std::string(listener.substr(0, listener.size() - kProduction.size())), true};
  }
  if (listener.size() > kTest.size() && listener.ends_with(kTest)) {
    return {std::string(listener.substr(0, listener.size() - kTest.size())), false};
  }
  return {"", false};
}

std::string IdentifierOf(const std::string& stack, const std::string& group) {
  for (const char* side : {"Code1", "Code2"}) {
    if (group == TargetGroupName(stack, side)) return side;
  }
  return "";
}

// Requests and 5xx answers per target group, over one listener, in one interval.
struct GroupCounts {
  std::map<std::string, double> requests;
  double errors = 0;
};

ListenerTraffic Summarize(const std::string& stack, const GroupCounts& c, double seconds,
                          const std::string& routed_to) {
  ListenerTraffic t;
  double total = 0;
  double most = 0;
  for (const auto& [group, n] : c.requests) {
    total += n;
    if (n > most) {
      most = n;
      t.target_group = group;
    }
  }
  if (t.target_group.empty()) t.target_group = routed_to;
  t.identifier = IdentifierOf(stack, t.target_group);
  if (!std::isfinite(total) || !std::isfinite(c.errors)) return t;  // absurd counters: no figure
  t.rps = seconds > 0 ? Round3(total / seconds) : 0;
  t.error_rate = total > 0 ? Round3(c.errors / total) : 0;
  return t;
}

nlohmann::json ListenerJson(const ListenerTraffic& t) {
  return {{"rps", t.rps},
          {"error_rate", t.error_rate},
          {"target_group", t.target_group},
          {"identifier", t.identifier}};
}

}  // namespace

nlohmann::json TrafficSampleToJson(const TrafficSample& s) {
  return {{"t", s.t}, {"production", ListenerJson(s.production)}, {"test", ListenerJson(s.test)}};
}

RequestCounts RequestCountsFrom(const std::vector<PromSample>& samples) {
  RequestCounts out;
  for (const PromSample& s : samples) {
    if (s.name != "bluegreen_requests_total" || !std::isfinite(s.value)) continue;
    out[{std::string(s.Label("listener")), std::string(s.Label("target_group")),
         std::string(s.Label("code_class"))}] += s.value;
  }
  return out;
}

std::map<std::string, TrafficSample> ComputeTraffic(
    const RequestCounts& before, const RequestCounts& now, double seconds, int64_t t,
    const std::map<std::string, std::string>& routing) {
  // Per stack: production and test counts.
  std::map<std::string, std::pair<GroupCounts, GroupCounts>> per_stack;
  for (const auto& [listener, group] : routing) {
    auto [stack, production] = SplitListener(listener);
    if (!stack.empty()) per_stack[stack];
  }
  for (const auto& [key, value] : now) {
    const auto& [listener, group, code_class] = key;
    auto [stack, production] = SplitListener(listener);
    if (stack.empty()) continue;
    const auto prev = before.find(key);
    double delta = value;
    if (prev != before.end() && value >= prev->second) delta = value - prev->second;
    GroupCounts& c = production ? per_stack[stack].first : per_stack[stack].second;
    c.requests[group] += delta;
    if (code_class == "5xx") c.errors += delta;
  }
  std::map<std::string, TrafficSample> out;
  for (const auto& [name, counts] : per_stack) {
    const std::string& stack = name;  // clang 14 cannot capture a structured binding
    auto routed = [&](std::string_view suffix) {
      auto it = routing.find(stack + std::string(suffix));
      return it == routing.end() ? std::string() : it->second;
    };
    TrafficSample& s = out[stack];
    s.t = t;
    s.production = Summarize(stack, counts.first, seconds, routed(kProduction));
    s.test = Summarize(stack, counts.second, seconds, routed(kTest));
  }
  return out;
}

MetricsSampler::MetricsSampler(std::string admin_address,
                               std::function<nlohmann::json()> proxy_state,
                               std::chrono::milliseconds interval, size_t capacity)
    : admin_address_(std::move(admin_address)),
      proxy_state_(std::move(proxy_state)),
      interval_(interval),
      capacity_(capacity) {}

MetricsSampler::~MetricsSampler() { Stop(); }

void MetricsSampler::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void MetricsSampler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::vector<TrafficSample> MetricsSampler::Samples(const std::string& stack, int64_t after) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<TrafficSample> out;
  auto it = rings_.find(stack);
  if (it == rings_.end()) return out;
  for (const TrafficSample& s : it->second) {
    if (s.t > after) out.push_back(s);
  }
  return out;
}

void MetricsSampler::Loop() {
  auto next = std::chrono::steady_clock::now();
  while (true) {
    next += interval_;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_until(lock, next, [this] { return stopping_; })) return;
    }
    // Keep the cadence, but do not try to catch up after a stall.
    if (next < std::chrono::steady_clock::now() - interval_)
      next = std::chrono::steady_clock::now();
    SampleOnce();
  }
}

void MetricsSampler::SampleOnce() {
  const nlohmann::json state = proxy_state_();
  if (!state.is_object()) {
    have_last_ = false;
    return;
  }
  std::map<std::string, std::string> routing;
  for (const nlohmann::json& l : state.value("listeners", nlohmann::json::array())) {
    routing[l.value("name", "")] = l.value("target_group", "");
  }
  HttpClientRequest req;
  req.target = "/metrics";
  const auto read_at = std::chrono::steady_clock::now();
  Result<HttpClientResponse> resp = HttpCall(admin_address_, req, interval_);
  if (!resp.ok() || resp->status != 200) {
    have_last_ = false;
    return;
  }
  Result<std::vector<PromSample>> samples = ParsePrometheusText(resp->body);
  if (!samples.ok()) {
    spdlog::warn("the proxy's /metrics: {}", samples.status().message());
    have_last_ = false;
    return;
  }
  RequestCounts counts = RequestCountsFrom(*samples);
  const int64_t t = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  if (have_last_) {
    const double seconds = std::chrono::duration<double>(read_at - last_read_).count();
    std::map<std::string, TrafficSample> traffic =
        ComputeTraffic(last_counts_, counts, seconds, t, routing);
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = rings_.begin(); it != rings_.end();) {
      it = traffic.count(it->first) ? std::next(it) : rings_.erase(it);  // a removed stack
    }
    for (auto& [stack, sample] : traffic) {
      std::deque<TrafficSample>& ring = rings_[stack];
      ring.push_back(std::move(sample));
      while (ring.size() > capacity_) ring.pop_front();
    }
  }
  last_counts_ = std::move(counts);
  last_read_ = read_at;
  have_last_ = true;
}

}  // namespace bluegreen::serve
