// Access: `token create`, `token list` and `token revoke` (docs/cli.md "Access"), each one call
// to the API's token endpoints (docs/api.md "Access: tokens and roles").
#include <memory>
#include <string>

#include "cli/api_client.h"
#include "cli/cli.h"

namespace bluegreen::cli {

using nlohmann::json;

int RunTokenCreate(const ClientOptions& c, const TokenCreateOptions& o) {
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;
  const json request = {{"name", o.name}, {"role", o.role}};
  Answer a = api.Call("POST", "/api/v1/tokens",
                      request.dump(-1, ' ', false, json::error_handler_t::replace));
  if (a.exit_code != kExitOk) return Report(c, api, a, "token", o.name);
  if (c.json) {
    PrintJson(c, a.body);
    return kExitOk;
  }
  const json token = a.body.is_object() ? a.body.value("token", json()) : json();
  if (!token.is_string()) {
    *c.err << "error: serve's answer has no token\n";
    return kExitFailed;
  }
  // The token alone on stdout, so that `$(bluegreen token create ...)` is the token.
  *c.out << token.get<std::string>() << "\n";
  c.out->flush();
  *c.err << "created token " << o.name << " (role " << o.role
         << "): it is shown only this once and cannot be read back; keep it now (a client "
            "uses it as BLUEGREEN_TOKEN)\n";
  return kExitOk;
}

int RunTokenList(const ClientOptions& c) {
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;
  Answer a = api.Call("GET", "/api/v1/tokens");
  if (a.exit_code != kExitOk) return Report(c, api, a, "token", "");
  if (c.json) {
    PrintJson(c, a.body);
  } else {
    *c.out << FormatTokens(a.body, NowMillis());
  }
  return kExitOk;
}

int RunTokenRevoke(const ClientOptions& c, const std::string& name) {
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const ApiClient& api = *client;
  Answer a = api.Call("DELETE", "/api/v1/tokens/" + EscapePathSegment(name));
  if (a.exit_code != kExitOk) return Report(c, api, a, "token", name);
  if (c.json) {
    PrintJson(c, a.body);
  } else {
    *c.out << "revoked token " << name << ": it no longer works\n";
  }
  return kExitOk;
}

}  // namespace bluegreen::cli
