// HttpCall: one blocking HTTP/1.1 request on a fresh connection, for control traffic (the CLI to
// serve, serve to the proxy's admin API and to the container engine, health probes of new tasks).
// Not for the data plane. Sends "Connection: close" and reads the response to its end:
// Content-Length, chunked (decoded) or close-delimited bodies; 1xx interim responses are skipped.
// Every step has the one deadline given. HttpCallStreaming is the same call for long answers that
// come bit by bit (a container engine's image build): it hands the body on as it arrives, and can
// be stopped. Thread-safe: they share nothing.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace bluegreen {

struct HttpClientRequest {
  std::string method = "GET";
  std::string target = "/";  // path and query
  std::vector<std::pair<std::string, std::string>> headers;  // Host and Content-Length are added
  std::string body;
};

struct HttpClientResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // First header with this name (case-insensitive), or empty.
  std::string_view Header(std::string_view name) const;
};

// `address` is "HOST:PORT", "http://HOST:PORT[/...]" (a path is ignored) or "unix:/path".
// HOST is numeric or "localhost". Errors: kInvalidArgument for a bad address, kUnavailable when
// the peer cannot be reached or closes early, kDeadlineExceeded on timeout, kInternal for a
// response that is not HTTP/1.x. `max_body` bounds the response body (kResourceExhausted).
Result<HttpClientResponse> HttpCall(const std::string& address, const HttpClientRequest& request,
                                    std::chrono::milliseconds timeout,
                                    size_t max_body = 64 << 20);

// HttpCall, but the response body is not collected: `on_body` gets each piece of it as it arrives
// (chunked bodies decoded), and the returned response's body is empty. `stop` (optional) is asked
// before every read and write and at least every 100 ms while the call waits; once it answers
// true the call ends with kFailedPrecondition "cancelled" and closes the connection, which is how
// the peer learns of it. `timeout` bounds the whole call, as for HttpCall.
Result<HttpClientResponse> HttpCallStreaming(const std::string& address,
                                             const HttpClientRequest& request,
                                             std::chrono::milliseconds timeout,
                                             const std::function<void(std::string_view)>& on_body,
                                             const std::function<bool()>& stop = {});

}  // namespace bluegreen
