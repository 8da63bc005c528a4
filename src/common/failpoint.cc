#include "common/failpoint.h"

#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <string>
#include <vector>

namespace bluegreen {
namespace {

// Read once: the environment does not change after start.
const std::vector<std::string>& Armed() {
  static const std::vector<std::string> armed = [] {
    std::vector<std::string> names;
    const char* env = std::getenv("BLUEGREEN_FAILPOINTS");
    if (env == nullptr) return names;
    std::string_view rest(env);
    while (!rest.empty()) {
      const size_t comma = rest.find(',');
      std::string_view name = rest.substr(0, comma);
      if (!name.empty()) names.emplace_back(name);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    return names;
  }();
  return armed;
}

}  // namespace

void Failpoint(std::string_view name) {
  const std::vector<std::string>& armed = Armed();
  if (armed.empty()) return;
  for (const std::string& a : armed) {
    if (a != name) continue;
    const std::string line = "failpoint " + std::string(name) + ": SIGKILL\n";
    (void)!write(STDERR_FILENO, line.data(), line.size());
    raise(SIGKILL);
  }
}

}  // namespace bluegreen
