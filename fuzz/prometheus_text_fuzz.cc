// libFuzzer target: the Prometheus text reader that serve runs on the proxy's GET /metrics. Any
// input must parse or be rejected with a message naming a line, never crash or hang; the traffic
// computed from what parses must be finite (JSON has no Inf or NaN).
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "serve/metrics_sampler.h"
#include "serve/prometheus_text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto samples = bluegreen::serve::ParsePrometheusText(text);
  if (!samples.ok()) {
    if (samples.status().message().rfind("line ", 0) != 0) std::abort();
    return 0;
  }
  const bluegreen::serve::RequestCounts counts = bluegreen::serve::RequestCountsFrom(*samples);
  for (const auto& [stack, s] :
       bluegreen::serve::ComputeTraffic({}, counts, 1.0, 0, {{"app-production", "app-blue"}})) {
    for (double v : {s.production.rps, s.production.error_rate, s.test.rps, s.test.error_rate}) {
      if (!std::isfinite(v)) std::abort();
    }
  }
  return 0;
}
