// Integration tests of how `bluegreen proxy` reads client requests: malformed and smuggling
// attempts (RFC 9112), limits, pipelining, HTTP/1.0, absolute-form targets and client timeouts.
// Each bad request must get the documented status, a 400 must close the connection, and nothing of
// a rejected request may reach the backend. Real binary, real backend on loopback (see harness.h).

#include <chrono>
#include <string>
#include <vector>

#include "harness.h"

namespace bluegreen::proxy_test {
namespace {

// One backend behind production. Health checks are far apart so the backend's request counter
// moves only because of what the test sends.
class ClientSideTest : public ProxyTest {
 protected:
  void SetUp() override {
    ProxyTest::SetUp();
    if (HasFatalFailure()) return;
    BG_ASSERT_OK_AND_ASSIGN(bg_, StartBlueGreen([this](ProxyConfigSpec& spec) {
                              for (auto& g : spec.target_groups) {
                                g.health_check.interval = "60s";
                                g.health_check.timeout = "2s";
                              }
                              Customize(spec);
                            }));
    port_ = bg_.proxy->production_port();
  }
  virtual void Customize(ProxyConfigSpec& spec) {}

  BlueGreen bg_;
  uint16_t port_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Rejected requests

struct BadRequest {
  std::string name;
  std::string request;
  int status;
  // The error is in the body: the head may already have been forwarded (the proxy streams), so at
  // most one request may reach the backend, and never the smuggled one behind it.
  bool body_error = false;
};

std::ostream& operator<<(std::ostream& os, const BadRequest& c) { return os << c.name; }

const char kSmuggled[] = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

std::vector<BadRequest> BadRequests() {
  using namespace std::string_literals;
  const std::string s = kSmuggled;
  std::vector<BadRequest> cases = {
      // Content-Length and Transfer-Encoding.
      {"ContentLengthAndTransferEncoding",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
       "0\r\n\r\n" +
           s,
       400},
      {"TransferEncodingAndContentLength",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n"
       "0\r\n\r\n" +
           s,
       400},
      {"DuplicateContentLengthDifferent",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhello" + s,
       400},
      {"DuplicateContentLengthSame",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400},
      {"ContentLengthPlusSign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
       400},
      {"ContentLengthTwoNumbers", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello",
       400},
      {"ContentLengthHex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", 400},
      {"ContentLengthNegative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
      {"ContentLengthOverflow",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 184467440737095516170\r\n\r\nhello", 400},
      {"ContentLengthSpaceBeforeColon",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello", 400},
      // Transfer-Encoding.
      {"ChunkedTwice",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400},
      {"ChunkedTwiceInTwoFields",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
       "\r\n0\r\n\r\n",
       400},
      {"XChunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
       400},
      {"ChunkedNotLast",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400},
      {"TransferEncodingSpaceBeforeColon",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + s, 400},
      {"TransferEncodingInHttp10",
       "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
      // Chunked bodies.
      {"ChunkSizeNotHex",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n" +
           s,
       400, true},
      {"ChunkSizeTooLong",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
       "fffffffffffffffff1\r\nhello\r\n0\r\n\r\n" +
           s,
       400, true},
      {"ChunkDataWithoutCrlf",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n" + s,
       400, true},
      {"ChunkSizeBareLf",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n" + s,
       400, true},
      // Header syntax.
      {"ObsFold", "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n", 400},
      {"BareLfLineEnds", "GET / HTTP/1.1\nHost: a\n\n", 400},
      {"BareLfInHeaders", "GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400},
      {"BareCrInHeader", "GET / HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n", 400},
      {"BareCrInValue", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400},
      {"SpaceBeforeColon", "GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400},
      {"NulInHeaderValue", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n"s, 400},
      {"HeaderWithoutColon", "GET / HTTP/1.1\r\nHost: a\r\nX-A b\r\n\r\n", 400},
      {"MissingHostInHttp11", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400},
      {"TwoHosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      {"GarbageRequestLine", "HELLO\r\n\r\n", 400},
      // Limits and unsupported codings.
      {"RequestLineTooLong", "GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n",
       414},
      {"HeaderTooBig",
       "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(40000, 'b') + "\r\n\r\n", 431},
      {"GzipChunked",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
  };
  std::string many = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 150; ++i) many += "X-H" + std::to_string(i) + ": v\r\n";
  cases.push_back({"TooManyHeaders", many + "\r\n", 431});
  return cases;
}

class BadRequestTest : public ClientSideTest, public ::testing::WithParamInterface<BadRequest> {};

TEST_P(BadRequestTest, IsRejectedAndNeverReachesTheBackend) {
  const BadRequest& c = GetParam();
  StatsProbe probe(bg_.blue);
  BG_ASSERT_OK(probe.Begin());

  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(port_));
  // The proxy may answer and close before reading everything: a failed send is not an error here.
  (void)conn->Send(c.request, 5s);
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse resp, conn->ReadResponse(ReadOptions{.timeout = 5s}));
  EXPECT_EQ(resp.status, c.status) << resp;
  EXPECT_FALSE(resp.body.empty()) << "error responses carry a short text body";
  EXPECT_FALSE(resp.HasHeader("X-Backend")) << "the answer came from the backend: " << resp;
  if (c.status == 400) {
    std::string extra;
    EXPECT_TRUE(conn->WaitForClose(5s, &extra)) << "connection left open after 400";
    EXPECT_TRUE(extra.empty()) << "more bytes after the 400: " << extra;
  }

  BG_ASSERT_OK_AND_ASSIGN(Backend::Stats delta, probe.Delta());
  if (c.body_error) {
    EXPECT_LE(delta.requests, 1) << "the smuggled request reached the backend";
  } else {
    EXPECT_EQ(delta.requests, 0) << "a rejected request reached the backend";
  }

  // The proxy is fine afterwards.
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse ok, FetchGet(port_, "/"));
  EXPECT_EQ(ok.body, "blue\n");
}

INSTANTIATE_TEST_SUITE_P(Smuggling, BadRequestTest, ::testing::ValuesIn(BadRequests()),
                         [](const ::testing::TestParamInfo<BadRequest>& info) {
                           return info.param.name;
                         });

// ---------------------------------------------------------------------------------------------
// Accepted forms

TEST_F(ClientSideTest, PipelinedRequestsAreAnsweredInOrder) {
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(port_));
  std::string batch;
  for (int i = 1; i <= 3; ++i) {
    batch += "GET /echo?n=" + std::to_string(i) + " HTTP/1.1\r\nHost: a\r\n\r\n";
  }
  batch += "POST /echo?n=4 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
  batch += "GET /echo?n=5 HTTP/1.1\r\nHost: a\r\n\r\n";
  BG_ASSERT_OK(conn->Send(batch));
  for (int i = 1; i <= 5; ++i) {
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, conn->ReadResponse());
    ASSERT_EQ(r.status, 200) << r;
    BG_ASSERT_OK_AND_ASSIGN(EchoDump echo, ParseEcho(r.body));
    const std::string method = i == 4 ? "POST" : "GET";
    EXPECT_EQ(echo.request_line, method + " /echo?n=" + std::to_string(i) + " HTTP/1.1");
    if (i == 4) {
      EXPECT_EQ(echo.body, "hello");
    }
  }
  EXPECT_TRUE(conn->buffered().empty());
}

TEST_F(ClientSideTest, Http10ClosesUnlessKeepAliveAndIsNeverChunked) {
  {  // Plain HTTP/1.0, no Host: answered, then closed.
    BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(port_));
    BG_ASSERT_OK(conn->Send("GET / HTTP/1.0\r\n\r\n"));
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, conn->ReadResponse());
    EXPECT_EQ(r.status, 200) << r;
    EXPECT_EQ(r.body, "blue\n");
    EXPECT_TRUE(conn->WaitForClose(5s)) << "HTTP/1.0 connection without keep-alive left open";
  }
  {  // HTTP/1.0 with keep-alive: two requests on one connection.
    BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(port_));
    for (int i = 0; i < 2; ++i) {
      BG_ASSERT_OK(conn->Send("GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"));
      BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, conn->ReadResponse());
      EXPECT_EQ(r.status, 200) << r;
      EXPECT_EQ(r.body, "blue\n");
      EXPECT_FALSE(r.until_close) << "keep-alive response must have a length";
    }
  }
  {  // A chunked upstream response must reach an HTTP/1.0 client unchunked.
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse direct, FetchGet(bg_.blue->port(), "/chunked/4"));
    BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(port_));
    BG_ASSERT_OK(conn->Send("GET /chunked/4 HTTP/1.0\r\nHost: a\r\n\r\n"));
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, conn->ReadResponse());
    EXPECT_EQ(r.status, 200) << r;
    EXPECT_FALSE(r.chunked) << "chunked sent to an HTTP/1.0 client";
    EXPECT_EQ(r.body, direct.body);
  }
}

TEST_F(ClientSideTest, AbsoluteFormTargetIsAccepted) {
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(port_));
  BG_ASSERT_OK(
      conn->Send("GET http://example.test/echo?q=1 HTTP/1.1\r\nHost: example.test\r\n\r\n"));
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, conn->ReadResponse());
  ASSERT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.Header("X-Backend"), "blue");
  BG_ASSERT_OK_AND_ASSIGN(EchoDump echo, ParseEcho(r.body));
  EXPECT_NE(echo.request_line.find("/echo?q=1"), std::string::npos) << echo.request_line;
  EXPECT_EQ(echo.Value("Host"), "example.test");
}

// Long but valid heads pass (sizes kept small enough for any backend).
TEST_F(ClientSideTest, LongButValidHeadsAreAccepted) {
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(port_));
  HttpRequest req;
  req.target = "/" + std::string(2000, 'p');
  req.headers = {{"X-Big", std::string(4000, 'b')}};
  for (int i = 0; i < 50; ++i) req.headers.emplace_back("X-H" + std::to_string(i), "v");
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, conn->RoundTrip(req));
  EXPECT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.body, "blue\n");
}

// ---------------------------------------------------------------------------------------------
// Client timeouts

class ClientTimeoutTest : public ClientSideTest {
 protected:
  void Customize(ProxyConfigSpec& spec) override {
    spec.limits["client_header_timeout"] = "1s";
    spec.limits["client_idle_timeout"] = "1s";
  }
};

TEST_F(ClientTimeoutTest, SlowRequestHeadIsCutOff) {
  StatsProbe probe(bg_.blue);
  BG_ASSERT_OK(probe.Begin());
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(port_));
  const auto start = Clock::now();
  BG_ASSERT_OK(conn->Send("GET / HTTP/1.1\r\nHo"));
  std::string answer;  // a 408 is allowed before the close
  EXPECT_TRUE(conn->WaitForClose(6s, &answer)) << "connection with an incomplete head kept open";
  EXPECT_GE(Clock::now() - start, 900ms);
  if (!answer.empty()) {
    EXPECT_EQ(answer.rfind("HTTP/1.1 408", 0), 0u) << answer;
  }
  BG_ASSERT_OK_AND_ASSIGN(Backend::Stats delta, probe.Delta());
  EXPECT_EQ(delta.requests, 0);
}

TEST_F(ClientTimeoutTest, IdleKeepAliveConnectionIsClosed) {
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(port_));
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, conn->Get("/"));
  EXPECT_EQ(r.body, "blue\n");
  const auto start = Clock::now();
  std::string extra;
  EXPECT_TRUE(conn->WaitForClose(6s, &extra)) << "idle connection kept open";
  EXPECT_GE(Clock::now() - start, 900ms);
  EXPECT_TRUE(extra.empty()) << extra;
}

}  // namespace
}  // namespace bluegreen::proxy_test
