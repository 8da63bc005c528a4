// libFuzzer target: the proxy config parser (config files, PUT /v1/config bodies, the state
// file). Any input must parse or be rejected with a message; an accepted config must survive the
// JSON round trip unchanged.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "proxy/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = bluegreen::proxy::ParseProxyConfig(text);
  if (!config.ok()) {
    if (config.status().message().empty()) std::abort();
    return 0;
  }
  auto again = bluegreen::proxy::ParseProxyConfig(bluegreen::proxy::ProxyConfigToJson(*config));
  if (!again.ok() || !(*again == *config)) {
    std::fprintf(stderr, "round trip changed the config\n");
    std::abort();
  }
  return 0;
}
