// Tests of HttpCall and HttpCallStreaming against a real server on a loopback socket: a thread
// that accepts one connection, reads the request head and then writes what the test scripted, in
// separate writes (so a body arrives in pieces), optionally keeping the connection open after.
#include "common/http_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace bluegreen {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class ScriptedServer {
 public:
  // `writes` are sent one by one, 20 ms apart, after the request head has arrived; then the
  // connection is closed, or with `hold`, kept open until the client closes it.
  ScriptedServer(std::vector<std::string> writes, bool hold)
      : writes_(std::move(writes)), hold_(hold) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listener_, 1), 0);
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedServer() {
    thread_.join();
    ::close(listener_);
  }
  ScriptedServer(const ScriptedServer&) = delete;
  ScriptedServer& operator=(const ScriptedServer&) = delete;

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& request() const { return request_; }  // after the call

 private:
  void Serve() {
    const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    char buf[4096];
    while (request_.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      request_.append(buf, static_cast<size_t>(n));
    }
    for (const std::string& w : writes_) {
      std::this_thread::sleep_for(20ms);  // separate pieces on the wire
      if (::send(fd, w.data(), w.size(), MSG_NOSIGNAL) < 0) break;
    }
    if (hold_) {
      while (::recv(fd, buf, sizeof buf, 0) > 0) {
      }
    }
    ::close(fd);
  }

  const std::vector<std::string> writes_;
  const bool hold_;
  int listener_ = -1;
  uint16_t port_ = 0;
  std::string request_;
  std::thread thread_;
};

constexpr char kChunkedHead[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

TEST(HttpCallTest, ReadsEachKindOfBodyInPieces) {
  struct Case {
    std::vector<std::string> writes;
    std::string body;
  };
  const std::vector<Case> cases = {
      {{kChunkedHead, "5\r\nhel", "lo\r\n", "6;ext=1\r\n world\r\n0\r\n\r\n"}, "hello world"},
      {{"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello", " world"}, "hello world"},
      {{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nhello", " world"}, "hello world"},
  };
  for (const Case& c : cases) {
    ScriptedServer server(c.writes, /*hold=*/false);
    HttpClientRequest req;
    req.method = "POST";
    req.body = "{}";
    Result<HttpClientResponse> r = HttpCall(server.address(), req, 5s);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, c.body) << c.writes[0];
  }
  ScriptedServer big({"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"}, false);
  Result<HttpClientResponse> r = HttpCall(big.address(), HttpClientRequest{}, 5s, 10);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
}

TEST(HttpCallStreamingTest, HandsOnPiecesAsTheyArrive) {
  ScriptedServer server({kChunkedHead, "6\r\nline1\n\r\n", "6\r\nline2\n\r\n0\r\n\r\n"}, false);
  std::vector<std::string> pieces;
  HttpClientRequest req;
  req.method = "POST";
  req.headers.emplace_back("Content-Type", "application/x-tar");
  req.body = std::string(100000, 'x');
  Result<HttpClientResponse> r = HttpCallStreaming(
      server.address(), req, 5s, [&](std::string_view p) { pieces.emplace_back(p); });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "");
  EXPECT_EQ(pieces, (std::vector<std::string>{"line1\n", "line2\n"}));
  EXPECT_NE(server.request().find("Content-Type: application/x-tar\r\n"), std::string::npos)
      << server.request();
  EXPECT_NE(server.request().find("Content-Length: 100000\r\n"), std::string::npos);
}

TEST(HttpCallStreamingTest, StopsWhenAskedWhileTheAnswerGoesOn) {
  // The server sends a first piece, then keeps the connection open without an end.
  ScriptedServer server({kChunkedHead, "6\r\nline1\n\r\n"}, /*hold=*/true);
  std::atomic<bool> stop{false};
  std::string got;
  const auto start = Clock::now();
  Result<HttpClientResponse> r = HttpCallStreaming(
      server.address(), HttpClientRequest{}, 30s,
      [&](std::string_view p) {
        got += p;
        stop = true;
      },
      [&] { return stop.load(); });
  EXPECT_EQ(r.status(), FailedPrecondition("cancelled"));
  EXPECT_EQ(got, "line1\n");
  EXPECT_LT(Clock::now() - start, 5s);
}

TEST(HttpCallStreamingTest, TimesOut) {
  ScriptedServer server({kChunkedHead}, /*hold=*/true);
  Result<HttpClientResponse> r =
      HttpCallStreaming(server.address(), HttpClientRequest{}, 300ms, [](std::string_view) {});
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
}

// An error names the address that was asked for: the socket path, not the Host header sent on it.
TEST(HttpCallTest, UnreachableUnixSocketIsNamedInTheError) {
  const std::string path = "/tmp/bluegreen-http-client-test-" + std::to_string(::getpid()) + ".sock";
  ::unlink(path.c_str());
  Result<HttpClientResponse> r = HttpCall("unix:" + path, HttpClientRequest{}, 1000ms);
  ASSERT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_NE(r.status().message().find("connect to unix:" + path + ": "), std::string::npos)
      << r.status().ToString();
}

}  // namespace
}  // namespace bluegreen
