// ProxyClient: serve's side of the proxy's admin API (docs/proxy.md), over its unix socket.
// Each call is one blocking request with a short deadline. Thread-safe: it holds no state but
// the address.
#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "proxy/config.h"

namespace bluegreen::serve {

class ProxyClient {
 public:
  explicit ProxyClient(std::string admin_address) : address_(std::move(admin_address)) {}

  const std::string& address() const { return address_; }

  Status Healthz() const;
  // GET /v1/state as JSON.
  Result<nlohmann::json> State() const;
  // GET /v1/config, parsed.
  Result<proxy::ProxyConfig> Config() const;
  // PUT /v1/config; answers once every worker routes by it.
  Status PutConfig(const proxy::ProxyConfig& config) const;
  // POST /v1/target_groups/GROUP/targets (idempotent).
  Status Register(const std::string& group, const std::string& address) const;
  // POST /v1/swap of two listeners, idempotent through `expect` (listener -> its group before the
  // swap): returns true when this call swapped, false when the listeners already routed the
  // swapped way. kFailedPrecondition (409) when the proxy refuses: a group with no healthy target,
  // or a state that is neither the expected one nor the swapped one.
  Result<bool> Swap(const std::string& production_listener, const std::string& test_listener,
                    const std::string& production_group, const std::string& test_group) const;
  // DELETE /v1/target_groups/GROUP/targets/ADDRESS: the target drains.
  Status Deregister(const std::string& group, const std::string& address) const;

 private:
  Result<std::string> Call(const std::string& method, const std::string& target,
                           const std::string& body,
                           std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

  std::string address_;
};

}  // namespace bluegreen::serve
