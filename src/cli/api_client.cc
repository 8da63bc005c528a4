// The CLI's calls to serve: the token, the answer's classification, error reports.
#include "cli/api_client.h"

#include <cstdlib>
#include <filesystem>

#include "common/http_client.h"

namespace bluegreen::cli {
namespace {

using nlohmann::json;

std::string TrimSpace(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
    char y = b[i] >= 'A' && b[i] <= 'Z' ? static_cast<char>(b[i] - 'A' + 'a') : b[i];
    if (x != y) return false;
  }
  return true;
}

}  // namespace

std::string_view Answer::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (EqualsIgnoreCase(key, name)) return value;
  }
  return {};
}

Answer ApiClient::CallWithTimeout(std::chrono::milliseconds timeout, const std::string& method,
                                  const std::string& target, std::string body,
                                  const std::string& content_type) const {
  return Send(timeout, method, target, std::move(body), content_type, /*json_answer=*/true);
}

Answer ApiClient::CallText(const std::string& target) const {
  return Send(options_.request_timeout, "GET", target, "", "", /*json_answer=*/false);
}

Answer ApiClient::Send(std::chrono::milliseconds timeout, const std::string& method,
                       const std::string& target, std::string body, const std::string& content_type,
                       bool json_answer) const {
  HttpClientRequest request;
  request.method = method;
  request.target = target;
  request.headers.emplace_back("Authorization", "Bearer " + token_);
  request.headers.emplace_back("Accept", json_answer ? "application/json" : "text/plain, */*");
  if (method == "PUT" || method == "POST") {
    request.headers.emplace_back("Content-Type", content_type);
  }
  request.body = std::move(body);

  Answer answer;
  Result<HttpClientResponse> response = HttpCall(options_.api, request, timeout);
  if (!response.ok()) {
    answer.transport = response.status();
    answer.exit_code = ExitCodeForTransportError(response.status());
    answer.error.code = "unreachable";
    if (answer.exit_code == kExitUnreachable) {
      answer.error.message =
          UnreachableMessage(options_.api, response.status(), options_.state_dir);
    } else if (answer.exit_code == kExitBadInput) {
      answer.error.message =
          "bad --api address \"" + options_.api + "\": " + response.status().message();
    } else {
      answer.error.message =
          "calling serve at " + options_.api + ": " + response.status().message();
    }
    return answer;
  }
  answer.http_status = response->status;
  answer.exit_code = ExitCodeForHttpStatus(response->status);
  if (answer.exit_code != kExitOk) {
    answer.error = ParseApiError(response->status, response->body);
    return answer;
  }
  answer.headers = std::move(response->headers);
  if (!json_answer) {
    answer.text = std::move(response->body);
    return answer;
  }
  answer.body = json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  if (answer.body.is_discarded()) {
    answer.exit_code = kExitFailed;
    answer.error = {"bad_answer", "serve answered HTTP " + std::to_string(response->status) +
                                      " with a body that is not JSON"};
  }
  return answer;
}

std::unique_ptr<ApiClient> Connect(const ClientOptions& c) {
  const char* env = std::getenv("BLUEGREEN_TOKEN");
  std::string env_token = env != nullptr ? env : "";
  Result<std::string> token = LoadToken(env_token, c.state_dir);
  if (!token.ok()) {
    *c.err << "error: " << token.status().message() << "\n";
    return nullptr;
  }
  std::string source = TrimSpace(env_token).empty()
                           ? (std::filesystem::path(c.state_dir) / "admin.token").string()
                           : "$BLUEGREEN_TOKEN";
  return std::make_unique<ApiClient>(c, *token, std::move(source));
}

int Report(const ClientOptions& c, const ApiClient& api, const Answer& a, std::string_view command,
           const std::string& name) {
  *c.err << "error: " << a.error.message << "\n";
  if (a.http_status != 0) {
    std::string hint = HintForApiError(command, name, a.http_status, a.error.code);
    if (a.http_status == 401 || a.http_status == 403) {
      hint = "the token was read from " + api.token_source() + "; " + hint;
    }
    if (!hint.empty()) *c.err << "hint: " << hint << "\n";
  }
  return a.exit_code;
}

void PrintJson(const ClientOptions& c, const json& j) {
  *c.out << j.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
}

int64_t NowMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string StackPath(const std::string& name) {
  return "/api/v1/stacks/" + EscapePathSegment(name);
}

}  // namespace bluegreen::cli
