#include "common/http_server.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "common/http_parser.h"
#include "common/net.h"

namespace bluegreen {

namespace asio = boost::asio;
using generic_stream = asio::generic::stream_protocol;

std::string_view HttpRequest::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (http::EqualsIgnoreCase(k, name)) return v;
  }
  return {};
}

HttpResponse HttpResponse::Json(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  if (r.body.empty() || r.body.back() != '\n') r.body += '\n';
  return r;
}

HttpResponse HttpResponse::Text(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(body);
  return r;
}

HttpResponse HttpResponse::Stream(std::string content_type,
                                  std::function<void(std::shared_ptr<HttpStream>)> on_open) {
  HttpResponse r;
  r.content_type = std::move(content_type);
  r.on_stream = std::move(on_open);
  return r;
}

namespace {

std::string_view Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Content Too Large";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Status";
  }
}

// The status line, Content-Type and extra headers of a response, without the empty line.
std::string HeadStart(const HttpResponse& resp) {
  std::string out = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\n", resp.status,
                                Reason(resp.status), resp.content_type);
  for (const auto& [k, v] : resp.headers) out += fmt::format("{}: {}\r\n", k, v);
  return out;
}

}  // namespace

HttpStream::HttpStream(Socket socket, bool chunked)
    : socket_(std::move(socket)), chunked_(chunked) {}

HttpStream::~HttpStream() {
  boost::system::error_code ignored;
  socket_.close(ignored);
}

void HttpStream::Start() { ReadUntilClosed(); }

void HttpStream::ReadUntilClosed() {
  // The client sends nothing more that we use; a read that ends means it closed or reset.
  auto self = shared_from_this();
  socket_.async_read_some(asio::buffer(read_buf_),
                          [this, self](const boost::system::error_code& ec, size_t) {
                            if (ec) {
                              if (!finishing_) Abort();
                              return;
                            }
                            if (!closed_ || finishing_) ReadUntilClosed();
                          });
}

bool HttpStream::Write(std::string_view data) {
  if (closed_) return false;
  if (data.empty()) return true;
  if (chunked_) {
    queued_ += fmt::format("{:x}\r\n", data.size());
    queued_ += data;
    queued_ += "\r\n";
  } else {
    queued_ += data;
  }
  if (queued_.size() > kMaxQueued) {
    spdlog::warn("closing a stream: the client does not read ({} bytes queued)", queued_.size());
    Abort();
    return false;
  }
  Flush();
  return true;
}

void HttpStream::Close() {
  if (closed_) return;
  closed_ = true;
  finishing_ = true;
  if (chunked_) queued_ += "0\r\n\r\n";
  Flush();
}

void HttpStream::Flush() {
  if (writing_ || !socket_.is_open()) return;
  if (queued_.empty()) {
    if (finishing_) {
      boost::system::error_code ignored;
      socket_.shutdown(generic_stream::socket::shutdown_both, ignored);
      socket_.close(ignored);
      NotifyClosed();
    }
    return;
  }
  writing_ = true;
  in_flight_.swap(queued_);
  queued_.clear();
  auto self = shared_from_this();
  asio::async_write(socket_, asio::buffer(in_flight_),
                    [this, self](const boost::system::error_code& ec, size_t) {
                      writing_ = false;
                      in_flight_.clear();
                      if (ec) {
                        Abort();
                        return;
                      }
                      Flush();
                    });
}

void HttpStream::Abort() {
  closed_ = true;
  queued_.clear();
  boost::system::error_code ignored;
  socket_.close(ignored);
  NotifyClosed();
}

void HttpStream::NotifyClosed() {
  if (notified_) return;
  notified_ = true;
  if (!on_close_) return;
  // Posted: the owner may be inside Write() right now.
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    std::function<void()> done = std::move(self->on_close_);
    self->on_close_ = nullptr;
    if (done) done();
  });
}

Result<generic_stream::endpoint> ParseListenAddress(const std::string& a) {
  if (a.rfind("unix:", 0) == 0) {
    const std::string path = a.substr(5);
    if (path.empty() || path.size() >= sizeof(sockaddr_un::sun_path)) {
      return InvalidArgument("unix socket path is empty or too long: " + a);
    }
    return generic_stream::endpoint(asio::local::stream_protocol::endpoint(path));
  }
  Result<Endpoint> ep = ParseEndpoint(a);
  if (!ep.ok()) return ep.status();
  return generic_stream::endpoint(&ep->addr, ep->len, IPPROTO_TCP);
}

class HttpServer::Session : public std::enable_shared_from_this<HttpServer::Session> {
 public:
  Session(HttpServer* server, generic_stream::socket sock, std::string peer)
      : server_(server), alive_(server->alive_), sock_(std::move(sock)), peer_(std::move(peer)) {}

  void Start() { Read(); }

 private:
  void Read() {
    auto self = shared_from_this();
    if (buf_.size() - used_ < 4096) buf_.resize(std::max<size_t>(buf_.size() * 2, 8192));
    sock_.async_read_some(asio::buffer(buf_.data() + used_, buf_.size() - used_),
                          [this, self](const boost::system::error_code& ec, size_t n) {
                            if (ec || !*alive_) return;
                            used_ += n;
                            Process();
                          });
  }

  void Process() {
    const std::string_view data(buf_.data(), used_);
    if (!head_done_) {
      const http::ParseResult r = parser_.ParseRequest(data, &head_);
      if (r == http::ParseResult::kIncomplete) {
        Read();
        return;
      }
      if (r == http::ParseResult::kError) {
        HttpResponse resp = HttpResponse::Json(
            parser_.error().status, std::string(R"({"error":{"code":"bad_request","message":")") +
                                        std::string(parser_.error().reason) + "\"}}");
        close_after_ = true;
        Write(std::move(resp));
        return;
      }
      head_done_ = true;
      req_ = HttpRequest{};
      req_.method = std::string(head_.method);
      req_.target = std::string(head_.path);
      const size_t q = req_.target.find('?');
      req_.path = req_.target.substr(0, q);
      if (q != std::string::npos) req_.query = req_.target.substr(q + 1);
      for (const http::Header& h : head_.headers) {
        req_.headers.emplace_back(std::string(h.name), std::string(h.value));
      }
      req_.peer = peer_;
      keep_alive_ = head_.keep_alive;
      head_size_ = head_.head_size;
      if (head_.framing == http::BodyFraming::kContentLength &&
          head_.content_length > server_->max_body_) {
        close_after_ = true;
        Write(HttpResponse::Json(
            413, R"({"error":{"code":"too_large","message":"request body too large"}})"));
        return;
      }
      body_.Start(head_.framing, head_.content_length);
      consumed_ = head_size_;
    }
    // Decode the body into req_.body (chunked framing is removed).
    while (!body_.done() && consumed_ < used_) {
      const std::string_view rest(buf_.data() + consumed_, used_ - consumed_);
      const size_t n = body_.Consume(rest);
      if (body_.failed()) {
        close_after_ = true;
        Write(HttpResponse::Json(400,
                                 R"({"error":{"code":"bad_request","message":"malformed body"}})"));
        return;
      }
      AppendBody(rest.substr(0, n));
      consumed_ += n;
      if (req_.body.size() > server_->max_body_) {
        close_after_ = true;
        Write(HttpResponse::Json(
            413, R"({"error":{"code":"too_large","message":"request body too large"}})"));
        return;
      }
    }
    if (!body_.done()) {
      Read();
      return;
    }
    // Keep pipelined bytes for the next request.
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<long>(consumed_));
    used_ -= consumed_;
    consumed_ = 0;
    head_done_ = false;
    parser_.Reset();
    auto self = shared_from_this();
    server_->handler_(req_, [this, self](HttpResponse resp) {
      if (!*alive_) return;
      Write(std::move(resp));
    });
  }

  // Hands the connection over to an HttpStream, which writes the head and then the body as it
  // comes. The connection is not reused after the stream.
  void OpenStream(const HttpResponse& resp) {
    if (server_->open_streams() >= server_->max_streams_) {
      close_after_ = true;
      Write(HttpResponse::Json(
          429, fmt::format(R"({{"error":{{"code":"too_many_streams","message":"{} streams are )"
                           R"(open, the most this server keeps"}}}})",
                           server_->max_streams_)));
      return;
    }
    const bool chunked = head_.version_minor >= 1;
    std::string head = HeadStart(resp);
    head += chunked ? "Transfer-Encoding: chunked\r\n" : "";
    head += "Connection: close\r\n\r\n";
    auto stream = std::make_shared<HttpStream>(std::move(sock_), chunked);
    server_->streams_.push_back(stream);
    stream->queued_ = std::move(head);
    stream->Flush();
    stream->Start();
    resp.on_stream(stream);
  }

  // Chunked bodies arrive with their framing; strip it.
  void AppendBody(std::string_view raw) {
    if (body_.framing() != http::BodyFraming::kChunked) {
      req_.body.append(raw);
      return;
    }
    for (char c : raw) chunk_raw_.push_back(c);
    // Decode whole chunks from chunk_raw_ (already validated by BodyDecoder).
    size_t pos = 0;
    while (true) {
      const size_t eol = chunk_raw_.find("\r\n", pos);
      if (eol == std::string::npos) break;
      const std::string line = chunk_raw_.substr(pos, eol - pos);
      const size_t size = std::strtoull(line.c_str(), nullptr, 16);
      if (size == 0) {
        pos = chunk_raw_.size();
        break;
      }
      if (chunk_raw_.size() < eol + 2 + size + 2) break;
      req_.body.append(chunk_raw_, eol + 2, size);
      pos = eol + 2 + size + 2;
    }
    chunk_raw_.erase(0, pos);
  }

  void Write(HttpResponse resp) {
    if (resp.on_stream) {
      OpenStream(resp);
      return;
    }
    std::string out = HeadStart(resp);
    out.reserve(out.size() + resp.body.size() + 64);
    if (resp.status == 304 || resp.status == 204) {
      resp.body.clear();
    } else {
      out += "Content-Length: ";
      out += std::to_string(resp.body.size());
      out += "\r\n";
    }
    if (close_after_ || !keep_alive_) out += "Connection: close\r\n";
    out += "\r\n";
    out += resp.body;
    auto data = std::make_shared<std::string>(std::move(out));
    auto self = shared_from_this();
    asio::async_write(sock_, asio::buffer(*data),
                      [this, self, data](const boost::system::error_code& ec, size_t) {
                        if (ec || !*alive_) return;
                        if (close_after_ || !keep_alive_) {
                          boost::system::error_code ignored;
                          sock_.shutdown(generic_stream::socket::shutdown_send, ignored);
                          return;
                        }
                        req_.body.clear();
                        if (used_ > 0) {
                          Process();
                        } else {
                          Read();
                        }
                      });
  }

  HttpServer* server_;
  std::shared_ptr<bool> alive_;
  generic_stream::socket sock_;
  std::string peer_;
  std::vector<char> buf_;
  size_t used_ = 0;
  size_t consumed_ = 0;
  size_t head_size_ = 0;
  bool head_done_ = false;
  bool keep_alive_ = true;
  bool close_after_ = false;
  http::HeadParser parser_;
  http::RequestHead head_;
  http::BodyDecoder body_;
  std::string chunk_raw_;
  HttpRequest req_;
};

HttpServer::HttpServer(asio::io_context& io, Handler handler, size_t max_body, size_t max_streams)
    : io_(io),
      handler_(std::move(handler)),
      max_body_(max_body),
      max_streams_(max_streams),
      alive_(std::make_shared<bool>(true)) {}

size_t HttpServer::open_streams() {
  streams_.remove_if([](const std::weak_ptr<HttpStream>& w) {
    std::shared_ptr<HttpStream> s = w.lock();
    return !s || s->closed();
  });
  return streams_.size();
}

HttpServer::~HttpServer() { Close(); }

Status HttpServer::Listen(const std::string& address) {
  Result<generic_stream::endpoint> ep = ParseListenAddress(address);
  if (!ep.ok()) return ep.status();
  const bool is_unix = address.rfind("unix:", 0) == 0;
  if (is_unix) {
    unix_path_ = address.substr(5);
    struct stat st {};
    if (::lstat(unix_path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(unix_path_.c_str());
  }
  boost::system::error_code ec;
  acceptor_ = std::make_unique<asio::basic_socket_acceptor<generic_stream>>(io_);
  acceptor_->open(ep->protocol(), ec);
  if (!ec && !is_unix) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_->bind(*ep, ec);
  if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    acceptor_.reset();
    return Unavailable("cannot listen on " + address + ": " + ec.message());
  }
  if (is_unix) {
    ::chmod(unix_path_.c_str(), 0660);
    struct stat st {};
    if (::stat(unix_path_.c_str(), &st) == 0) unix_inode_ = st.st_ino;
    bound_ = address;
  } else {
    const auto local = acceptor_->local_endpoint(ec);
    Endpoint e;
    std::memcpy(&e.addr, local.data(), local.size());
    e.len = static_cast<socklen_t>(local.size());
    bound_ = e.ToString();
  }
  Accept();
  return Status::Ok();
}

void HttpServer::Accept() {
  auto alive = alive_;
  acceptor_->async_accept(
      [this, alive](const boost::system::error_code& ec, generic_stream::socket sock) {
        if (!*alive) return;
        if (!ec) {
          std::string peer = "unix";
          boost::system::error_code ec2;
          const auto remote = sock.remote_endpoint(ec2);
          if (!ec2 && remote.size() >= sizeof(sockaddr_in) &&
              (remote.data()->sa_family == AF_INET || remote.data()->sa_family == AF_INET6)) {
            Endpoint e;
            std::memcpy(&e.addr, remote.data(), remote.size());
            e.len = static_cast<socklen_t>(remote.size());
            peer = e.ToString();
          }
          std::make_shared<Session>(this, std::move(sock), std::move(peer))->Start();
        }
        if (acceptor_ && acceptor_->is_open()) Accept();
      });
}

void HttpServer::Close() {
  if (alive_) *alive_ = false;
  for (const std::weak_ptr<HttpStream>& w : streams_) {
    if (std::shared_ptr<HttpStream> s = w.lock()) s->Abort();
  }
  streams_.clear();
  if (acceptor_) {
    boost::system::error_code ec;
    acceptor_->close(ec);
    acceptor_.reset();
  }
  if (!unix_path_.empty()) {
    // Only our own socket file: another process may have bound the path since.
    struct stat st {};
    if (::stat(unix_path_.c_str(), &st) == 0 && st.st_ino == unix_inode_) {
      ::unlink(unix_path_.c_str());
    }
    unix_path_.clear();
  }
}

}  // namespace bluegreen
