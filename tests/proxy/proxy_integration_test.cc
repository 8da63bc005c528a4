// Integration tests of `bluegreen proxy`: routing, header handling, streamed bodies, WebSocket,
// Expect: 100-continue, allow lists, upstream timeouts and failures, retries, and the upstream
// keep-alive race. Everything runs against the real binary and real test_backend processes on
// loopback (see harness.h).

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace bluegreen::proxy_test {
namespace {

class RoutingTest : public ProxyTest {};

// ---------------------------------------------------------------------------------------------
// Routing and headers

TEST_F(RoutingTest, ListenersRouteToTheirTargetGroups) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());

  BG_ASSERT_OK_AND_ASSIGN(HttpResponse prod, FetchGet(bg.proxy->production_port(), "/"));
  EXPECT_EQ(prod.status, 200) << prod;
  EXPECT_EQ(prod.body, "blue\n");
  EXPECT_EQ(prod.Header("X-Backend"), "blue");

  BG_ASSERT_OK_AND_ASSIGN(HttpResponse test, FetchGet(bg.proxy->test_port(), "/"));
  EXPECT_EQ(test.status, 200) << test;
  EXPECT_EQ(test.body, "green\n");
  EXPECT_EQ(test.Header("X-Backend"), "green");

  BG_ASSERT_OK_AND_ASSIGN(Json state, bg.proxy->admin().State());
  EXPECT_EQ(ListenerGroup(state, "production"), "blue") << state.dump();
  EXPECT_EQ(ListenerGroup(state, "test"), "green") << state.dump();
  EXPECT_EQ(GroupTag(state, "blue", "IsProduction"), "true");
  EXPECT_EQ(GroupTag(state, "green", "IsProduction"), "false");
  EXPECT_EQ(GroupTag(state, "blue", "Identifier"), "Code1");
  EXPECT_EQ(GroupTag(state, "green", "Identifier"), "Code2");
  EXPECT_EQ(TargetHealth(state, "blue", bg.blue->address()), "healthy");
  EXPECT_GE(Generation(state), 0);
}

TEST_F(RoutingTest, ForwardedHeadersAppendedHopByHopRemovedHostKept) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());
  const uint16_t port = bg.proxy->production_port();
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(port));

  HttpRequest req;
  req.target = "/echo?x=1";
  req.host = "example.test:1234";
  req.headers = {
      {"X-Forwarded-For", "10.1.2.3"},    {"Connection", "keep-alive, X-Custom-Hop"},
      {"X-Custom-Hop", "secret"},         {"Keep-Alive", "timeout=5"},
      {"Proxy-Connection", "keep-alive"}, {"TE", "trailers"},
      {"Trailer", "X-Checksum"},          {"Upgrade", "h2c"},
      {"X-End-To-End", "kept"},
  };
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse resp, conn->RoundTrip(req));
  ASSERT_EQ(resp.status, 200) << resp;
  BG_ASSERT_OK_AND_ASSIGN(EchoDump echo, ParseEcho(resp.body));

  EXPECT_EQ(echo.request_line, "GET /echo?x=1 HTTP/1.1");
  ASSERT_EQ(echo.Values("Host").size(), 1u) << resp.body;
  EXPECT_EQ(echo.Value("Host"), "example.test:1234");

  // X-Forwarded-For: the client's value kept, the client address appended.
  std::string xff;
  for (const auto& v : echo.Values("X-Forwarded-For")) xff += (xff.empty() ? "" : ",") + v;
  EXPECT_EQ(SplitList(xff), (std::vector<std::string>{"10.1.2.3", "127.0.0.1"})) << resp.body;
  EXPECT_EQ(echo.Values("X-Forwarded-Proto"), std::vector<std::string>{"http"}) << resp.body;
  EXPECT_EQ(echo.Values("X-Forwarded-Port"), std::vector<std::string>{std::to_string(port)})
      << resp.body;

  for (const char* hop :
       {"X-Custom-Hop", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade"}) {
    EXPECT_FALSE(echo.Has(hop)) << hop << " was forwarded:\n" << resp.body;
  }
  for (const auto& v : echo.Values("Connection")) {
    EXPECT_EQ(ToLower(v).find("x-custom-hop"), std::string::npos) << resp.body;
  }
  EXPECT_EQ(echo.Value("X-End-To-End"), "kept");

  // Same connection, no X-Forwarded-For from the client: exactly the client address.
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse second, conn->Get("/echo"));
  ASSERT_EQ(second.status, 200) << second;
  BG_ASSERT_OK_AND_ASSIGN(EchoDump echo2, ParseEcho(second.body));
  EXPECT_EQ(echo2.Values("X-Forwarded-For"), std::vector<std::string>{"127.0.0.1"});
  EXPECT_EQ(echo2.Value("Host"), "localhost");

  // Several X-Forwarded-For lines: all kept, in order, in one line with the client appended.
  HttpRequest multi;
  multi.target = "/echo";
  multi.headers = {{"X-Forwarded-For", "10.0.0.1"}, {"X-Forwarded-For", "10.0.0.2, 10.0.0.3"}};
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse multi_resp, conn->RoundTrip(multi));
  ASSERT_EQ(multi_resp.status, 200) << multi_resp;
  BG_ASSERT_OK_AND_ASSIGN(EchoDump echo_multi, ParseEcho(multi_resp.body));
  EXPECT_EQ(echo_multi.Values("X-Forwarded-For"),
            std::vector<std::string>{"10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"})
      << multi_resp.body;

  // The test listener reports its own port.
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse on_test, FetchGet(bg.proxy->test_port(), "/echo"));
  ASSERT_EQ(on_test.status, 200) << on_test;
  BG_ASSERT_OK_AND_ASSIGN(EchoDump echo3, ParseEcho(on_test.body));
  EXPECT_EQ(echo3.Value("X-Forwarded-Port"), std::to_string(bg.proxy->test_port()));
}

// ---------------------------------------------------------------------------------------------
// Bodies

TEST_F(RoutingTest, RequestBodiesArriveIntactWithContentLengthAndChunked) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());
  const std::string payload = MakePayload(1 << 20, 7);
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(bg.proxy->production_port()));

  // Content-Length: the backend counts the bytes, and /echo returns them.
  HttpRequest upload;
  upload.method = "POST";
  upload.target = "/upload";
  upload.body = payload;
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse counted, conn->RoundTrip(upload, 20s));
  EXPECT_EQ(counted.status, 200) << counted;
  EXPECT_EQ(counted.body, "blue 1048576\n");

  HttpRequest echo = upload;
  echo.target = "/echo";
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse echoed, conn->RoundTrip(echo, 20s));
  ASSERT_EQ(echoed.status, 200) << echoed;
  BG_ASSERT_OK_AND_ASSIGN(EchoDump dump, ParseEcho(echoed.body));
  EXPECT_EQ(dump.request_line, "POST /echo HTTP/1.1");
  EXPECT_EQ(dump.body.size(), payload.size());
  EXPECT_TRUE(dump.body == payload) << "CL body differs";

  // Chunked, in chunks of varied sizes.
  HttpRequest chunked;
  chunked.method = "PUT";
  chunked.target = "/upload";
  chunked.headers = {{"Transfer-Encoding", "chunked"}};
  chunked.body = ChunkEncode(payload, {1, 4096, 70000, 13});
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse chunk_counted, conn->RoundTrip(chunked, 20s));
  EXPECT_EQ(chunk_counted.status, 200) << chunk_counted;
  EXPECT_EQ(chunk_counted.body, "blue 1048576\n");

  chunked.method = "POST";
  chunked.target = "/echo";
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse chunk_echoed, conn->RoundTrip(chunked, 20s));
  ASSERT_EQ(chunk_echoed.status, 200) << chunk_echoed;
  BG_ASSERT_OK_AND_ASSIGN(EchoDump chunk_dump, ParseEcho(chunk_echoed.body));
  // The echo may show the body decoded or with its chunked framing; either way the bytes match.
  std::optional<std::string> decoded = ChunkDecode(chunk_dump.body);
  EXPECT_TRUE(chunk_dump.body == payload || (decoded && *decoded == payload))
      << "chunked body differs; echo body starts with: " << chunk_dump.body.substr(0, 64);

  // The connection is still usable afterwards.
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse after, conn->Get("/"));
  EXPECT_EQ(after.body, "blue\n");
}

TEST_F(RoutingTest, LargeAndChunkedResponsesArriveComplete) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(bg.proxy->production_port()));

  BG_ASSERT_OK_AND_ASSIGN(HttpResponse big, conn->Get("/big/5000000", 20s));
  ASSERT_EQ(big.status, 200) << big.raw_head;
  EXPECT_EQ(big.body.size(), 5000000u);
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse big_direct, FetchGet(bg.blue->port(), "/big/5000000", 20s));
  EXPECT_TRUE(big.body == big_direct.body) << "proxied /big differs from the backend's";

  BG_ASSERT_OK_AND_ASSIGN(HttpResponse chunked, conn->Get("/chunked/5"));
  ASSERT_EQ(chunked.status, 200) << chunked;
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse chunked_direct, FetchGet(bg.blue->port(), "/chunked/5"));
  EXPECT_TRUE(chunked_direct.chunked) << "test_backend's /chunked is not chunked";
  EXPECT_FALSE(chunked.body.empty());
  EXPECT_EQ(chunked.body, chunked_direct.body);
  EXPECT_FALSE(chunked.until_close) << "HTTP/1.1 client got a close-delimited body";

  // Keep-alive survived both.
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse after, conn->Get("/"));
  EXPECT_EQ(after.body, "blue\n");
}

TEST_F(RoutingTest, BackendStatusCodesPassThrough) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(bg.proxy->production_port()));
  // 204 and 304 have no body: the next response on the connection must not be eaten by them.
  for (int code : {201, 204, 304, 404, 500, 503}) {
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, conn->Get("/status/" + std::to_string(code)));
    EXPECT_EQ(r.status, code) << r;
    EXPECT_EQ(r.Header("X-Backend"), "blue") << "status " << code << " not from the backend";
  }
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse after, conn->Get("/"));
  EXPECT_EQ(after.body, "blue\n") << after;
  EXPECT_TRUE(conn->buffered().empty()) << conn->buffered();
}

TEST_F(RoutingTest, HeadResponsesHaveNoBodyAndKeepTheConnectionInStep) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(bg.proxy->production_port()));
  for (const char* target : {"/", "/big/100000"}) {
    HttpRequest head;
    head.method = "HEAD";
    head.target = target;
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, conn->RoundTrip(head));
    EXPECT_EQ(r.status, 200) << r;
    EXPECT_TRUE(r.body.empty());
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse next, conn->Get("/"));
    EXPECT_EQ(next.body, "blue\n") << "after HEAD " << target << ": " << next;
  }
}

// The backend closes its side after /close: the proxy must not reuse that upstream connection, and
// the client's connection to the proxy stays open.
TEST_F(RoutingTest, UpstreamConnectionCloseDoesNotAffectTheClient) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg,
                          StartBlueGreen([](ProxyConfigSpec& spec) { spec.workers = 1; }));
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(bg.proxy->production_port()));
  for (int i = 0; i < 3; ++i) {
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse closing, conn->Get("/close"));
    EXPECT_EQ(closing.status, 200) << closing;
    EXPECT_EQ(closing.body, "blue\n");
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse next, conn->Get("/"));
    EXPECT_EQ(next.status, 200) << next;
    EXPECT_EQ(next.body, "blue\n");
  }
  EXPECT_FALSE(conn->peer_closed());
}

TEST_F(RoutingTest, ClientConnectionCloseIsHonoured) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(bg.proxy->production_port()));
  HttpRequest req;
  req.headers = {{"Connection", "close"}};
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, conn->RoundTrip(req));
  EXPECT_EQ(r.status, 200) << r;
  EXPECT_EQ(r.body, "blue\n");
  std::string extra;
  EXPECT_TRUE(conn->WaitForClose(5s, &extra)) << "connection kept open after Connection: close";
  EXPECT_TRUE(extra.empty()) << extra;
}

// ---------------------------------------------------------------------------------------------
// WebSocket and Expect

TEST_F(RoutingTest, WebSocketUpgradeIsTunnelledBothWays) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(bg.proxy->production_port()));
  HttpRequest req;
  req.target = "/ws";
  req.headers = {{"Connection", "Upgrade"},
                 {"Upgrade", "websocket"},
                 {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
                 {"Sec-WebSocket-Version", "13"}};
  BG_ASSERT_OK(conn->Send(req.Serialize()));
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse resp, conn->ReadResponse());
  ASSERT_EQ(resp.status, 101) << resp;
  EXPECT_TRUE(EqualsIgnoreCase(resp.Header("Upgrade"), "websocket")) << resp;

  // Small message, a large one, and bytes that look like HTTP (the tunnel must not parse them).
  const std::vector<std::string> messages = {"hello through the proxy", MakePayload(200 * 1024, 3),
                                             "GET / HTTP/1.1\r\nHost: x\r\n\r\n"};
  for (const auto& m : messages) {
    BG_ASSERT_OK(conn->Send(m));
    BG_ASSERT_OK_AND_ASSIGN(std::string back, conn->ReadExactly(m.size(), 10s));
    EXPECT_TRUE(back == m) << "echoed bytes differ for a message of " << m.size() << " bytes";
  }

  // Nothing but the echoes came back.
  EXPECT_TRUE(conn->buffered().empty()) << conn->buffered();

  // The proxy still serves ordinary requests.
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse after, FetchGet(bg.proxy->production_port(), "/"));
  EXPECT_EQ(after.body, "blue\n");
}

TEST_F(RoutingTest, ExpectContinueGets100BeforeTheBody) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(bg.proxy->production_port()));
  const std::string body = MakePayload(100000, 5);
  BG_ASSERT_OK(conn->Send("POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\nExpect: 100-continue\r\n\r\n"));
  ReadOptions interim;
  interim.return_interim = true;
  interim.timeout = 5s;
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse cont, conn->ReadResponse(interim));
  ASSERT_EQ(cont.status, 100) << cont;

  BG_ASSERT_OK(conn->Send(body));
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse final_resp, conn->ReadResponse());
  EXPECT_EQ(final_resp.status, 200) << final_resp;
  EXPECT_EQ(final_resp.body, "blue 100000\n");

  BG_ASSERT_OK_AND_ASSIGN(HttpResponse after, conn->Get("/"));
  EXPECT_EQ(after.body, "blue\n");
}

// ---------------------------------------------------------------------------------------------
// Allow list

TEST_F(RoutingTest, AllowListRejectsClientsOutsideIt) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen([](ProxyConfigSpec& spec) {
                            spec.Listener("test")->allow = {"10.0.0.0/8"};
                          }));
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse denied, FetchGet(bg.proxy->test_port(), "/"));
  EXPECT_EQ(denied.status, 403) << denied;
  EXPECT_FALSE(denied.body.empty());
  EXPECT_NE(denied.Header("X-Backend"), "green") << "the request reached the backend";

  BG_ASSERT_OK_AND_ASSIGN(Json state, bg.proxy->admin().State());
  Json test_listener = FindByName(Field(state, "listeners"), "name", "test");
  EXPECT_EQ(Field(test_listener, "allow"), Json::array({"10.0.0.0/8"})) << state.dump();

  // The production listener has no allow list.
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse allowed, FetchGet(bg.proxy->production_port(), "/"));
  EXPECT_EQ(allowed.status, 200) << allowed;
}

// ---------------------------------------------------------------------------------------------
// Upstream failures

TEST_F(RoutingTest, UpstreamResponseTimeoutIs504) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen([](ProxyConfigSpec& spec) {
                            spec.limits["upstream_response_timeout"] = "1s";
                          }));
  const auto start = Clock::now();
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse resp, FetchGet(bg.proxy->production_port(), "/hang", 15s));
  const auto elapsed = Clock::now() - start;
  EXPECT_EQ(resp.status, 504) << resp;
  EXPECT_FALSE(resp.body.empty());
  EXPECT_GE(elapsed, 900ms);
  EXPECT_LT(elapsed, 8s);

  BG_ASSERT_OK_AND_ASSIGN(HttpResponse after, FetchGet(bg.proxy->production_port(), "/"));
  EXPECT_EQ(after.status, 200) << after;
}

// A target that is healthy as far as the proxy knows (its next check is far away) but refuses
// connections: the request gets 502 and the connect error is counted.
TEST_F(RoutingTest, RefusedConnectionToHealthyTargetIs502) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen([](ProxyConfigSpec& spec) {
                            spec.Group("blue")->health_check.interval = "60s";
                            spec.Group("blue")->health_check.timeout = "2s";
                          }));
  bg.blue->Kill();
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse resp, FetchGet(bg.proxy->production_port(), "/"));
  EXPECT_EQ(resp.status, 502) << resp;
  EXPECT_FALSE(resp.body.empty());

  BG_ASSERT_OK_AND_ASSIGN(std::string metrics, bg.proxy->admin().Metrics());
  EXPECT_GE(MetricValue(metrics, "bluegreen_upstream_connect_errors_total").value_or(0), 1)
      << metrics;
  // The other listener is unaffected.
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse test, FetchGet(bg.proxy->test_port(), "/"));
  EXPECT_EQ(test.body, "green\n");
}

// Decision: a target whose first health check fails is unhealthy (not "initial" forever), so its
// group has no healthy target and the proxy answers 503 itself; it never tries the dead port (502).
TEST_F(RoutingTest, TargetFailingItsFirstHealthCheckGets503) {
  BG_ASSERT_OK_AND_ASSIGN(Backend * green, StartBackend("green"));
  BG_ASSERT_OK_AND_ASSIGN(uint16_t dead_port, PickFreePort());
  const std::string dead = "127.0.0.1:" + std::to_string(dead_port);
  BG_ASSERT_OK_AND_ASSIGN(ProxyConfigSpec spec, BlueGreenConfig({dead}, {green->address()}));
  BG_ASSERT_OK_AND_ASSIGN(ProxyProcess * proxy, StartProxy(spec));

  // Listeners open after the first round of checks, in which the dead target failed.
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse resp, FetchGet(proxy->production_port(), "/"));
  EXPECT_EQ(resp.status, 503) << resp;
  EXPECT_FALSE(resp.body.empty());
  BG_EXPECT_OK(WaitHealth(*proxy, "blue", dead, "unhealthy", 5s));

  BG_ASSERT_OK_AND_ASSIGN(std::string metrics, proxy->admin().Metrics());
  EXPECT_EQ(MetricValue(metrics, "bluegreen_target_healthy",
                        {{"target_group", "blue"}, {"target", dead}}),
            0.0)
      << metrics;

  BG_ASSERT_OK(WaitHealth(*proxy, "green", green->address(), "healthy"));
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse test, FetchGet(proxy->test_port(), "/"));
  EXPECT_EQ(test.body, "green\n");
}

// ---------------------------------------------------------------------------------------------
// Retries

// Every test here uses one worker (so the upstream pool is shared by all requests) and health
// checks far apart (so the backend's counters only move because of the test's requests).
class RetryTest : public ProxyTest {
 protected:
  void SetUp() override {
    ProxyTest::SetUp();
    if (HasFatalFailure()) return;
    BG_ASSERT_OK_AND_ASSIGN(bg_, StartBlueGreen([](ProxyConfigSpec& spec) {
                              spec.workers = 1;
                              for (auto& g : spec.target_groups) {
                                g.health_check.interval = "60s";
                                g.health_check.timeout = "2s";
                              }
                            }));
    // Put a connection to blue in the pool: the next request reuses it.
    BG_ASSERT_OK_AND_ASSIGN(conn_, HttpConnection::Connect(bg_.proxy->production_port()));
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse warm, conn_->Get("/"));
    ASSERT_EQ(warm.body, "blue\n");
  }
  double Retries() {
    auto m = bg_.proxy->admin().Metrics();
    return m.ok() ? MetricValue(*m, "bluegreen_upstream_retries_total").value_or(0) : -1;
  }

  BlueGreen bg_;
  std::unique_ptr<HttpConnection> conn_;
};

TEST_F(RetryTest, PostThatReachedTheBackendIsNeverReplayed) {
  StatsProbe probe(bg_.blue);
  BG_ASSERT_OK(probe.Begin());
  const double retries_before = Retries();

  HttpRequest post;
  post.method = "POST";
  post.target = "/reset";
  post.body = "amount=100";
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse resp, conn_->RoundTrip(post));
  EXPECT_EQ(resp.status, 502) << resp;

  BG_ASSERT_OK_AND_ASSIGN(Backend::Stats delta, probe.Delta());
  EXPECT_EQ(delta.requests, 1) << "the POST reached the backend " << delta.requests << " times";
  EXPECT_LE(delta.connections_accepted, 1);
  EXPECT_EQ(Retries(), retries_before);
}

TEST_F(RetryTest, IdempotentRequestIsRetriedOnceOnAFreshConnection) {
  StatsProbe probe(bg_.blue);
  BG_ASSERT_OK(probe.Begin());
  const double retries_before = Retries();

  // /reset fails on the reused connection, and again on the fresh one: no third attempt.
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse resp, conn_->Get("/reset"));
  EXPECT_EQ(resp.status, 502) << resp;

  BG_ASSERT_OK_AND_ASSIGN(Backend::Stats delta, probe.Delta());
  EXPECT_EQ(delta.requests, 2);
  EXPECT_EQ(delta.connections_accepted, 1) << "the retry must use a fresh connection";
  EXPECT_EQ(Retries(), retries_before + 1);
}

// A request that fails on a fresh connection to the only target is not sent there again.
TEST_F(RetryTest, IdempotentRequestResetOnAFreshConnectionToTheOnlyTargetIs502) {
  // The test listener's group has one target, green, and no pooled connection to it yet.
  StatsProbe probe(bg_.green);
  BG_ASSERT_OK(probe.Begin());
  const double retries_before = Retries();

  BG_ASSERT_OK_AND_ASSIGN(HttpResponse resp, FetchGet(bg_.proxy->test_port(), "/reset"));
  EXPECT_EQ(resp.status, 502) << resp;

  BG_ASSERT_OK_AND_ASSIGN(Backend::Stats delta, probe.Delta());
  EXPECT_EQ(delta.requests, 1) << "sent again to the target that reset it";
  EXPECT_EQ(Retries(), retries_before);
}

// Production's group has two targets, a and b; b resets every ordinary request
// (/control/fault/reset), as a crashing or killed process does. One worker, round robin, health
// checks far apart, no pooled connection when a test starts.
class TwoTargetRetryTest : public ProxyTest {
 protected:
  void SetUp() override {
    ProxyTest::SetUp();
    if (HasFatalFailure()) return;
    BG_ASSERT_OK_AND_ASSIGN(a_, StartBackend("a"));
    BG_ASSERT_OK_AND_ASSIGN(b_, StartBackend("b"));
    BG_ASSERT_OK_AND_ASSIGN(Backend * green, StartBackend("green"));
    BG_ASSERT_OK_AND_ASSIGN(ProxyConfigSpec spec,
                            BlueGreenConfig({a_->address(), b_->address()}, {green->address()}));
    spec.workers = 1;
    for (auto& g : spec.target_groups) {
      g.health_check.interval = "60s";
      g.health_check.timeout = "2s";
    }
    BG_ASSERT_OK_AND_ASSIGN(proxy_, StartProxy(spec));
    BG_ASSERT_OK(WaitAllHealthy(*proxy_));
    BG_ASSERT_OK(b_->SetFault("reset"));
  }
  double Retries() {
    auto m = proxy_->admin().Metrics();
    return m.ok() ? MetricValue(*m, "bluegreen_upstream_retries_total").value_or(0) : -1;
  }

  Backend* a_ = nullptr;
  Backend* b_ = nullptr;
  ProxyProcess* proxy_ = nullptr;
};

TEST_F(TwoTargetRetryTest, IdempotentRequestResetOnAFreshConnectionIsRetriedOnTheOtherTarget) {
  StatsProbe probe_a(a_), probe_b(b_);
  BG_ASSERT_OK(probe_a.Begin());
  BG_ASSERT_OK(probe_b.Begin());
  const double retries_before = Retries();

  // Round robin sends every other request to b, each time on a fresh connection (b's reset
  // connections never go back to the pool). Each client connection is new too.
  constexpr int kRequests = 6;
  for (int i = 0; i < kRequests; ++i) {
    HttpRequest req;
    req.method = i % 3 == 2 ? "HEAD" : "GET";
    req.target = "/item/" + std::to_string(i);
    BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(proxy_->production_port()));
    BG_ASSERT_OK(conn->Send(req.Serialize()));
    ReadOptions opts;
    opts.request_method = req.method;
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse resp, conn->ReadResponse(opts));
    EXPECT_EQ(resp.status, 200) << req.method << " " << req.target << ": " << resp;
    EXPECT_EQ(resp.Header("X-Backend"), "a") << resp;
  }

  BG_ASSERT_OK_AND_ASSIGN(Backend::Stats delta_a, probe_a.Delta());
  BG_ASSERT_OK_AND_ASSIGN(Backend::Stats delta_b, probe_b.Delta());
  EXPECT_EQ(delta_a.requests, kRequests);
  EXPECT_GE(delta_b.requests, 1) << "round robin never picked b";
  EXPECT_EQ(delta_b.connections_accepted, delta_b.requests) << "b got a reused connection";
  EXPECT_EQ(Retries(), retries_before + static_cast<double>(delta_b.requests));
  RecordProperty("requests_reset_by_b", std::to_string(delta_b.requests));
}

TEST_F(TwoTargetRetryTest, PostResetOnAFreshConnectionIsNotRetried) {
  StatsProbe probe_a(a_), probe_b(b_);
  BG_ASSERT_OK(probe_a.Begin());
  BG_ASSERT_OK(probe_b.Begin());
  const double retries_before = Retries();

  constexpr int kRequests = 6;
  int bad_gateway = 0;
  for (int i = 0; i < kRequests; ++i) {
    HttpRequest post;
    post.method = "POST";
    post.target = "/orders";
    post.body = "amount=" + std::to_string(100 + i);
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse resp, Fetch(proxy_->production_port(), post));
    if (resp.status == 502) {
      ++bad_gateway;
      EXPECT_FALSE(resp.HasHeader("X-Backend")) << resp;
    } else {
      EXPECT_EQ(resp.status, 200) << resp;
      EXPECT_EQ(resp.body, "a " + std::to_string(post.body.size()) + "\n") << resp;
    }
  }

  BG_ASSERT_OK_AND_ASSIGN(Backend::Stats delta_a, probe_a.Delta());
  BG_ASSERT_OK_AND_ASSIGN(Backend::Stats delta_b, probe_b.Delta());
  EXPECT_GE(bad_gateway, 1) << "round robin never picked b";
  EXPECT_EQ(delta_b.posts, bad_gateway) << "a POST reset by b was sent again";
  EXPECT_EQ(delta_a.posts, kRequests - bad_gateway) << "a POST reset by b was replayed on a";
  EXPECT_EQ(Retries(), retries_before);
}

// ---------------------------------------------------------------------------------------------
// Upstream keep-alive race

// The backend closes connections idle for 1 s; requests come about 1 s apart, so the proxy keeps
// finding pooled connections that are closing or just closed. No client may see an error.
TEST_F(RoutingTest, BackendClosingIdleConnectionsCausesNoClientErrors) {
  BG_ASSERT_OK_AND_ASSIGN(Backend * blue, StartBackend("blue", /*idle_close_ms=*/1000));
  BG_ASSERT_OK_AND_ASSIGN(Backend * green, StartBackend("green"));
  BG_ASSERT_OK_AND_ASSIGN(ProxyConfigSpec spec,
                          BlueGreenConfig({blue->address()}, {green->address()}));
  spec.Group("blue")->health_check.interval = "5s";  // health checks are not what is tested here
  spec.Group("blue")->health_check.timeout = "1s";
  BG_ASSERT_OK_AND_ASSIGN(ProxyProcess * proxy, StartProxy(spec));
  BG_ASSERT_OK(WaitAllHealthy(*proxy));

  const std::vector<int> gaps_ms = {1000, 1005, 995,  1000, 1010, 990,  1002, 998,  1000,
                                    1007, 993,  1000, 1001, 999,  1004, 996,  1000, 1000};
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(proxy->production_port()));
  int failures = 0;
  auto next = Clock::now();
  for (size_t i = 0; i < gaps_ms.size() + 1; ++i) {
    if (i > 0) {
      next += std::chrono::milliseconds(gaps_ms[i - 1]);
      std::this_thread::sleep_until(next);  // the spacing is what this test is about
    }
    if (i % 5 == 4) {  // now and then a new client connection
      BG_ASSERT_OK_AND_ASSIGN(conn, HttpConnection::Connect(proxy->production_port()));
    }
    HttpRequest req;
    std::string expected = "blue\n";
    if (i % 2 == 1) {
      req.method = "POST";
      req.target = "/submit";
      req.body = "n=" + std::to_string(i);
      expected = "blue " + std::to_string(req.body.size()) + "\n";
    }
    auto resp = conn->RoundTrip(req, 10s);
    if (!resp.ok()) {
      ++failures;
      ADD_FAILURE() << "request " << i << " (" << req.method << "): " << resp.status().ToString();
      BG_ASSERT_OK_AND_ASSIGN(conn, HttpConnection::Connect(proxy->production_port()));
      continue;
    }
    if (resp->status != 200 || resp->body != expected) {
      ++failures;
      ADD_FAILURE() << "request " << i << " (" << req.method << "): " << *resp;
    }
  }
  EXPECT_EQ(failures, 0);
  auto metrics = proxy->admin().Metrics();
  if (metrics.ok()) {  // for the record: how often the proxy met a closing connection
    RecordProperty(
        "upstream_retries",
        std::to_string(MetricValue(*metrics, "bluegreen_upstream_retries_total").value_or(-1)));
  }
}

}  // namespace
}  // namespace bluegreen::proxy_test
