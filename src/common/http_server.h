// HttpServer: a small HTTP/1.1 server for control traffic (the proxy's admin API, the control
// plane's REST API and web console): keep-alive, bodies buffered up to a limit, answers produced
// asynchronously, and streaming answers (server-sent events) whose body is written piece by piece
// until either side closes. Not for the data plane's hot path. Listens on TCP ("127.0.0.1:9901")
// or a unix socket ("unix:/path"). All of it, HttpStream included, runs on the io_context given
// at construction; not thread-safe: other threads post to that io_context.
#pragma once

#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace bluegreen {

struct HttpRequest {
  std::string method;
  std::string target;  // path and query as sent
  std::string path;    // target without the query, percent-decoding not applied
  std::string query;   // after '?', without it
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string peer;  // "127.0.0.1:5555" or "unix"

  // First header with this name (case-insensitive), or empty.
  std::string_view Header(std::string_view name) const;
};

class HttpStream;

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Set for a streaming answer (see Stream()); `body` is then unused.
  std::function<void(std::shared_ptr<HttpStream>)> on_stream;

  static HttpResponse Json(int status, std::string body);
  static HttpResponse Text(int status, std::string body);
  // A 200 whose body is written later: once the head is sent, `on_open` gets the stream to write
  // to. The body is chunked (HTTP/1.0 clients: delimited by the close) and the connection closes
  // when the stream ends. When the server already has its limit of open streams the client gets
  // 429 {"error":{"code":"too_many_streams",...}} instead and `on_open` is never called.
  static HttpResponse Stream(std::string content_type,
                             std::function<void(std::shared_ptr<HttpStream>)> on_open);
};

// The body of a streaming answer, written as it is produced. Use it from the server's io_context
// only. It closes when its owner calls Close(), when the client closes or resets the connection
// (noticed at once: the server keeps reading), when a write fails, when the client does not read
// and more than the buffer limit is queued, or when the server closes.
class HttpStream : public std::enable_shared_from_this<HttpStream> {
 public:
  using Socket = boost::asio::generic::stream_protocol::socket;
  static constexpr size_t kMaxQueued = 4 << 20;

  HttpStream(Socket socket, bool chunked);
  ~HttpStream();
  HttpStream(const HttpStream&) = delete;
  HttpStream& operator=(const HttpStream&) = delete;

  // Queues `data` (one chunk; empty data is ignored). False once the stream is closed.
  bool Write(std::string_view data);
  // Sends what is queued and the end of the body, then closes the connection.
  void Close();
  bool closed() const { return closed_; }
  // `done` runs once, on the io_context, after the stream closed for whatever reason (never from
  // inside Write or Close). Set it right after the stream is opened.
  void OnClose(std::function<void()> done) { on_close_ = std::move(done); }

 private:
  friend class HttpServer;
  void Start();
  void ReadUntilClosed();
  void Flush();
  // Closes the socket now, dropping what is queued.
  void Abort();
  void NotifyClosed();

  Socket socket_;
  const bool chunked_;
  bool closed_ = false;     // no more writes accepted
  bool finishing_ = false;  // Close() was called: end the body once the queue is sent
  bool writing_ = false;
  bool notified_ = false;
  std::string queued_;
  std::string in_flight_;
  char read_buf_[512];
  std::function<void()> on_close_;
};

class HttpServer {
 public:
  using Respond = std::function<void(HttpResponse)>;
  // A handler must call `respond` exactly once, now or later, on the server's io_context.
  using Handler = std::function<void(const HttpRequest&, Respond respond)>;

  HttpServer(boost::asio::io_context& io, Handler handler, size_t max_body = 8 << 20,
             size_t max_streams = 64);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts accepting. `address` is "HOST:PORT" or "unix:/path" (a stale socket file
  // is replaced).
  Status Listen(const std::string& address);
  // The bound address (with the real port when 0 was asked).
  std::string address() const { return bound_; }
  // Stops accepting and closes the open streams.
  void Close();
  // Streaming answers open now.
  size_t open_streams();

 private:
  class Session;
  void Accept();

  boost::asio::io_context& io_;
  Handler handler_;
  size_t max_body_;
  size_t max_streams_;
  std::list<std::weak_ptr<HttpStream>> streams_;
  std::unique_ptr<boost::asio::basic_socket_acceptor<boost::asio::generic::stream_protocol>>
      acceptor_;
  std::string bound_;
  std::string unix_path_;
  unsigned long unix_inode_ = 0;  // of the socket file we bound
  std::shared_ptr<bool> alive_;
};

// Parses "HOST:PORT" or "unix:/path" into a generic endpoint.
Result<boost::asio::generic::stream_protocol::endpoint> ParseListenAddress(const std::string& a);

}  // namespace bluegreen
