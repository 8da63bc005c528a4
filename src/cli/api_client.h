// The CLI's side of the REST API (docs/api.md), shared by the command files of src/cli and not
// used outside it: one HttpCall per request with the token, the answer sorted into what the
// commands need (a parsed 2xx JSON body, or an exit code with the error to report), and the
// reporting of a failed call as "error: ..." and "hint: ...".
//
// An ApiClient holds a reference to its ClientOptions and nothing mutable: it may be used from
// several threads while the options live.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cli/cli.h"
#include "common/status.h"

namespace bluegreen::cli {

// One API call's outcome: a 2xx answer (exit_code 0), or what went wrong.
struct Answer {
  int exit_code = kExitOk;
  int http_status = 0;                                       // 0 when serve gave no answer
  Status transport;                                          // why there was no answer
  nlohmann::json body;                                       // the parsed 2xx body (Call only)
  std::string text;                                          // the raw 2xx body (CallText only)
  std::vector<std::pair<std::string, std::string>> headers;  // of a 2xx answer
  ApiError error;                                            // set when exit_code != 0

  // First header of the answer with this name (case-insensitive), or empty.
  std::string_view Header(std::string_view name) const;
};

class ApiClient {
 public:
  ApiClient(const ClientOptions& options, std::string token, std::string token_source)
      : options_(options), token_(std::move(token)), token_source_(std::move(token_source)) {}

  // Where the token came from: "$BLUEGREEN_TOKEN" or the admin.token path.
  const std::string& token_source() const { return token_source_; }
  const ClientOptions& options() const { return options_; }

  // A call whose 2xx answer is JSON (a body that is not is exit 1, "bad_answer").
  Answer Call(const std::string& method, const std::string& target, std::string body = "",
              const std::string& content_type = "application/json") const {
    return CallWithTimeout(options_.request_timeout, method, target, std::move(body), content_type);
  }
  Answer CallWithTimeout(std::chrono::milliseconds timeout, const std::string& method,
                         const std::string& target, std::string body = "",
                         const std::string& content_type = "application/json") const;

  // A GET whose 2xx answer is kept as text with its headers (the build log).
  Answer CallText(const std::string& target) const;

 private:
  Answer Send(std::chrono::milliseconds timeout, const std::string& method,
              const std::string& target, std::string body, const std::string& content_type,
              bool json_answer) const;

  const ClientOptions& options_;
  std::string token_;
  std::string token_source_;
};

// A client with the token, or null after saying why there is no token (exit 4).
std::unique_ptr<ApiClient> Connect(const ClientOptions& c);

// Prints "error: MESSAGE" and a hint for a failed call of `command` on stack `name`; returns its
// exit code.
int Report(const ClientOptions& c, const ApiClient& api, const Answer& a, std::string_view command,
           const std::string& name);

// `j` on c.out, indented by 2 spaces.
void PrintJson(const ClientOptions& c, const nlohmann::json& j);

// "/api/v1/stacks/NAME", NAME escaped.
std::string StackPath(const std::string& name);

// Milliseconds since the epoch (the API's execution times; ages are counted to it).
int64_t NowMillis();

// Consecutive failed polls tolerated while waiting (serve restarting), before giving up.
inline constexpr int kMaxPollFailures = 20;

}  // namespace bluegreen::cli
