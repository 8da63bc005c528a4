// HttpServer: a small HTTP/1.1 server for control traffic (the proxy's admin API, the control
// plane's REST API): keep-alive, bodies buffered up to a limit, answers produced asynchronously.
// Not for the data plane's hot path. Listens on TCP ("127.0.0.1:9901") or a unix socket
// ("unix:/path"). All of it runs on the io_context given at construction; not thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>

#include "common/status.h"

namespace bluegreen {

struct HttpRequest {
  std::string method;
  std::string target;  // path and query as sent
  std::string path;    // target without the query, percent-decoding not applied
  std::string query;   // after '?', without it
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string peer;    // "127.0.0.1:5555" or "unix"

  // First header with this name (case-insensitive), or empty.
  std::string_view Header(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;

  static HttpResponse Json(int status, std::string body);
  static HttpResponse Text(int status, std::string body);
};

class HttpServer {
 public:
  using Respond = std::function<void(HttpResponse)>;
  // A handler must call `respond` exactly once, now or later, on the server's io_context.
  using Handler = std::function<void(const HttpRequest&, Respond respond)>;

  HttpServer(boost::asio::io_context& io, Handler handler, size_t max_body = 8 << 20);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts accepting. `address` is "HOST:PORT" or "unix:/path" (a stale socket file
  // is replaced).
  Status Listen(const std::string& address);
  // The bound address (with the real port when 0 was asked).
  std::string address() const { return bound_; }
  void Close();

 private:
  class Session;
  void Accept();

  boost::asio::io_context& io_;
  Handler handler_;
  size_t max_body_;
  std::unique_ptr<boost::asio::basic_socket_acceptor<boost::asio::generic::stream_protocol>> acceptor_;
  std::string bound_;
  std::string unix_path_;
  unsigned long unix_inode_ = 0;  // of the socket file we bound
  std::shared_ptr<bool> alive_;
};

// Parses "HOST:PORT" or "unix:/path" into a generic endpoint.
Result<boost::asio::generic::stream_protocol::endpoint> ParseListenAddress(const std::string& a);

}  // namespace bluegreen
