// HttpServer's answers, plain and streaming (HttpResponse::Stream), seen from a raw TCP client on
// loopback: the bytes on the wire, chunked framing, the end of a stream from either side, the
// limit on open streams, and a client that does not read.
#include "common/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "common/net.h"

namespace bluegreen {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A blocking TCP client with a deadline on every read.
class RawClient {
 public:
  explicit RawClient(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~RawClient() { Close(); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return connected_; }
  void Send(const std::string& s) {
    ASSERT_EQ(::send(fd_, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
  }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // Reads until `received()` contains `needle` (true) or the peer closes or 5 s pass (false).
  bool ReadUntil(const std::string& needle) {
    const auto deadline = Clock::now() + 5s;
    while (received_.find(needle) == std::string::npos) {
      if (!ReadSome(deadline)) return false;
    }
    return true;
  }
  // Reads until the peer closes (true) or 5 s pass (false).
  bool ReadToEnd() {
    const auto deadline = Clock::now() + 5s;
    while (!eof_) {
      if (!ReadSome(deadline) && !eof_) return false;
    }
    return true;
  }
  const std::string& received() const { return received_; }
  // Drops what was read so far.
  void Consume() { received_.clear(); }

 private:
  bool ReadSome(Clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char buf[16384];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    received_.append(buf, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  bool eof_ = false;
  std::string received_;
};

class HttpServerTest : public ::testing::Test {
 protected:
  void StartServer(size_t max_streams = 64) {
    server_ = std::make_unique<HttpServer>(
        io_,
        [this](const HttpRequest& req, HttpServer::Respond respond) {
          if (req.path == "/plain") return respond(HttpResponse::Text(200, "plain\n"));
          if (req.path == "/unchanged") {
            HttpResponse r = HttpResponse::Text(304, "");
            r.headers.emplace_back("ETag", "\"x\"");
            return respond(std::move(r));
          }
          if (req.path == "/stream") {
            return respond(
                HttpResponse::Stream("text/event-stream", [this](std::shared_ptr<HttpStream> s) {
                  s->OnClose([this] {
                    ++closes_;
                    if (close_seen_) close_seen_->set_value();
                    close_seen_.reset();
                  });
                  stream_ = std::move(s);
                  if (opened_) opened_->set_value();
                  opened_.reset();
                }));
          }
          respond(HttpResponse::Text(404, "no\n"));
        },
        8 << 20, max_streams);
    ASSERT_TRUE(server_->Listen("127.0.0.1:0").ok());
    port_ = ParseEndpoint(server_->address())->port();
    thread_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    OnLoop([this] {
      stream_.reset();
      server_->Close();
    });
    work_.reset();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  // Runs `f` on the server's loop and waits for it.
  template <typename F>
  auto OnLoop(F f) -> decltype(f()) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    boost::asio::post(io_, [&task] { task(); });
    return result.get();
  }

  // Opens GET /stream and waits until the handler has the stream and the client has the head.
  void OpenStream(RawClient& c, const std::string& version = "HTTP/1.1") {
    std::promise<void> opened;
    auto f = opened.get_future();
    OnLoop([&] { opened_ = std::move(opened); });
    c.Send("GET /stream " + version + "\r\nHost: x\r\n\r\n");
    ASSERT_EQ(f.wait_for(5s), std::future_status::ready) << "the stream did not open";
    ASSERT_TRUE(c.ReadUntil("\r\n\r\n")) << c.received();
  }

  // A future that is ready once the current stream's OnClose ran.
  std::future<void> ExpectClose() {
    std::promise<void> p;
    auto f = p.get_future();
    OnLoop([&] { close_seen_ = std::move(p); });
    return f;
  }

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_ =
      boost::asio::make_work_guard(io_);
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  uint16_t port_ = 0;
  // Loop thread only:
  std::shared_ptr<HttpStream> stream_;
  std::optional<std::promise<void>> opened_;
  std::optional<std::promise<void>> close_seen_;
  int closes_ = 0;
};

TEST_F(HttpServerTest, PlainAnswersKeepTheConnection) {
  StartServer();
  RawClient c(port_);
  ASSERT_TRUE(c.connected());
  c.Send("GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(c.ReadUntil("plain\n")) << c.received();
  EXPECT_NE(c.received().find("Content-Length: 6\r\n"), std::string::npos) << c.received();
  EXPECT_EQ(c.received().find("Connection: close"), std::string::npos) << c.received();
  c.Consume();
  c.Send("GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(c.ReadUntil("plain\n")) << "second request on the same connection: " << c.received();
}

TEST_F(HttpServerTest, NotModifiedHasNoBodyLength) {
  StartServer();
  RawClient c(port_);
  c.Send("GET /unchanged HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(c.ReadUntil("\r\n\r\n")) << c.received();
  EXPECT_EQ(c.received().rfind("HTTP/1.1 304 Not Modified\r\n", 0), 0u) << c.received();
  EXPECT_EQ(c.received().find("Content-Length"), std::string::npos) << c.received();
  c.Consume();
  c.Send("GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(c.ReadUntil("plain\n")) << "the connection is reusable after a 304";
}

TEST_F(HttpServerTest, StreamSendsEachWriteAsAChunkAndEndsOnClose) {
  StartServer();
  RawClient c(port_);
  OpenStream(c);
  const std::string head = c.received();
  EXPECT_EQ(head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("Content-Type: text/event-stream\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("Transfer-Encoding: chunked\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.find("Content-Length"), std::string::npos) << head;
  c.Consume();

  EXPECT_TRUE(OnLoop([this] { return stream_->Write("data: 1\n\n"); }));
  ASSERT_TRUE(c.ReadUntil("data: 1\n\n\r\n")) << c.received();
  EXPECT_EQ(c.received(), "9\r\ndata: 1\n\n\r\n");
  c.Consume();
  EXPECT_TRUE(OnLoop([this] { return stream_->Write(std::string(300, 'x')); }));
  ASSERT_TRUE(c.ReadUntil(std::string(300, 'x') + "\r\n")) << c.received();
  EXPECT_EQ(c.received().rfind("12c\r\n", 0), 0u) << "chunk size in hex: " << c.received();
  c.Consume();

  auto closed = ExpectClose();
  OnLoop([this] { stream_->Close(); });
  EXPECT_TRUE(c.ReadToEnd());
  EXPECT_EQ(c.received(), "0\r\n\r\n");
  EXPECT_EQ(closed.wait_for(5s), std::future_status::ready);
  EXPECT_FALSE(OnLoop([this] { return stream_->Write("late"); }));
}

TEST_F(HttpServerTest, ClientDisconnectClosesTheStream) {
  StartServer();
  RawClient c(port_);
  OpenStream(c);
  EXPECT_EQ(OnLoop([this] { return server_->open_streams(); }), 1u);
  auto closed = ExpectClose();
  c.Close();
  ASSERT_EQ(closed.wait_for(5s), std::future_status::ready)
      << "the server did not notice that the client went away";
  EXPECT_TRUE(OnLoop([this] { return stream_->closed(); }));
  EXPECT_FALSE(OnLoop([this] { return stream_->Write("data: x\n\n"); }));
  EXPECT_EQ(OnLoop([this] { return server_->open_streams(); }), 0u);
  EXPECT_EQ(OnLoop([this] { return closes_; }), 1) << "OnClose runs once";
}

TEST_F(HttpServerTest, StreamsBeyondTheLimitGet429) {
  StartServer(/*max_streams=*/2);
  RawClient a(port_), b(port_), c(port_);
  OpenStream(a);
  OpenStream(b);
  c.Send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(c.ReadToEnd()) << c.received();
  EXPECT_EQ(c.received().rfind("HTTP/1.1 429 Too Many Requests\r\n", 0), 0u) << c.received();
  EXPECT_NE(c.received().find(R"("code":"too_many_streams")"), std::string::npos) << c.received();

  // A closed stream frees its place.
  auto closed = ExpectClose();
  a.Close();
  ASSERT_EQ(closed.wait_for(5s), std::future_status::ready);
  RawClient d(port_);
  OpenStream(d);
  EXPECT_EQ(d.received().rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << d.received();
}

TEST_F(HttpServerTest, Http10StreamIsDelimitedByTheClose) {
  StartServer();
  RawClient c(port_);
  OpenStream(c, "HTTP/1.0");
  EXPECT_EQ(c.received().find("Transfer-Encoding"), std::string::npos) << c.received();
  c.Consume();
  OnLoop([this] { return stream_->Write("data: 1\n\n"); });
  OnLoop([this] { stream_->Close(); });
  ASSERT_TRUE(c.ReadToEnd());
  EXPECT_EQ(c.received(), "data: 1\n\n");
}

TEST_F(HttpServerTest, ClientThatDoesNotReadIsCutOff) {
  StartServer();
  RawClient c(port_);
  OpenStream(c);
  auto closed = ExpectClose();
  // More than the queue limit at once: the client cannot have read it.
  EXPECT_FALSE(
      OnLoop([this] { return stream_->Write(std::string(HttpStream::kMaxQueued + 1, 'x')); }));
  EXPECT_EQ(closed.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(OnLoop([this] { return stream_->closed(); }));
}

TEST_F(HttpServerTest, ServerCloseEndsOpenStreams) {
  StartServer();
  RawClient c(port_);
  OpenStream(c);
  auto closed = ExpectClose();
  OnLoop([this] { server_->Close(); });
  EXPECT_TRUE(c.ReadToEnd()) << "the connection stays open after the server closed";
  EXPECT_EQ(closed.wait_for(5s), std::future_status::ready);
}

}  // namespace
}  // namespace bluegreen
