// A reader of the Prometheus text exposition format (version 0.0.4), as the proxy's admin API
// serves it on GET /metrics (docs/proxy.md): one sample per line, `name{label="value",...} value
// [timestamp]`, with `#` lines (HELP, TYPE, comments) and blank lines skipped. Label values may
// hold the escapes \\, \" and \n. Pure functions: safe from any thread.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace bluegreen::serve {

struct PromSample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;  // in the order written
  double value = 0;

  // The value of a label, or empty when the sample has none by that name.
  std::string_view Label(std::string_view label) const;
};

// Every sample of `text`, in order. kInvalidArgument names the first malformed line
// ("line N: ...") and nothing is returned.
Result<std::vector<PromSample>> ParsePrometheusText(std::string_view text);

}  // namespace bluegreen::serve
