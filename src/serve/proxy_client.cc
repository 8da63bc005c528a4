#include "serve/proxy_client.h"

#include <fmt/format.h>

#include "common/http_client.h"

namespace bluegreen::serve {

Result<std::string> ProxyClient::Call(const std::string& method, const std::string& target,
                                      const std::string& body,
                                      std::chrono::milliseconds timeout) const {
  HttpClientRequest req;
  req.method = method;
  req.target = target;
  req.body = body;
  Result<HttpClientResponse> resp = HttpCall(address_, req, timeout);
  if (!resp.ok()) {
    return Unavailable(fmt::format("proxy admin API {}: {}", address_, resp.status().message()));
  }
  if (resp->status / 100 != 2) {
    std::string message = resp->body;
    try {
      message = nlohmann::json::parse(resp->body).at("error").at("message").get<std::string>();
    } catch (const std::exception&) {
    }
    const StatusCode code = resp->status == 404   ? StatusCode::kNotFound
                            : resp->status == 400 ? StatusCode::kInvalidArgument
                            : resp->status == 409 ? StatusCode::kFailedPrecondition
                                                  : StatusCode::kInternal;
    return Status(code, fmt::format("proxy: {} {}: {} {}", method, target, resp->status, message));
  }
  return std::move(resp->body);
}

Status ProxyClient::Healthz() const {
  Result<std::string> r = Call("GET", "/healthz", "", std::chrono::seconds(2));
  return r.ok() ? Status::Ok() : r.status();
}

Result<nlohmann::json> ProxyClient::State() const {
  Result<std::string> r = Call("GET", "/v1/state", "");
  if (!r.ok()) return r.status();
  try {
    return nlohmann::json::parse(*r);
  } catch (const std::exception& e) {
    return Internal(fmt::format("proxy: bad /v1/state JSON: {}", e.what()));
  }
}

Result<proxy::ProxyConfig> ProxyClient::Config() const {
  Result<std::string> r = Call("GET", "/v1/config", "");
  if (!r.ok()) return r.status();
  return proxy::ParseProxyConfig(*r);
}

Status ProxyClient::PutConfig(const proxy::ProxyConfig& config) const {
  proxy::ProxyConfig routing = config;
  routing.admin.clear();
  routing.state_file.clear();
  routing.workers = 0;
  Result<std::string> r = Call("PUT", "/v1/config", proxy::ProxyConfigToJson(routing));
  return r.ok() ? Status::Ok() : r.status();
}

Status ProxyClient::Register(const std::string& group, const std::string& address) const {
  Result<std::string> r = Call("POST", fmt::format("/v1/target_groups/{}/targets", group),
                               nlohmann::json{{"address", address}}.dump());
  return r.ok() ? Status::Ok() : r.status();
}

Result<bool> ProxyClient::Swap(const std::string& production_listener,
                               const std::string& test_listener,
                               const std::string& production_group,
                               const std::string& test_group) const {
  nlohmann::json body{{"listeners", {production_listener, test_listener}},
                      {"expect", {{production_listener, production_group},
                                  {test_listener, test_group}}}};
  Result<std::string> r = Call("POST", "/v1/swap", body.dump(), std::chrono::seconds(30));
  if (!r.ok()) return r.status();
  try {
    return nlohmann::json::parse(*r).value("swapped", false);
  } catch (const std::exception& e) {
    return Internal(fmt::format("proxy: bad /v1/swap answer: {}", e.what()));
  }
}

Status ProxyClient::Deregister(const std::string& group, const std::string& address) const {
  Result<std::string> r =
      Call("DELETE", fmt::format("/v1/target_groups/{}/targets/{}", group, address), "");
  if (!r.ok() && r.status().code() == StatusCode::kNotFound) return Status::Ok();
  return r.ok() ? Status::Ok() : r.status();
}

}  // namespace bluegreen::serve
