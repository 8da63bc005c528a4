// The console's traffic figures: the Prometheus text reader, the rates computed from counter
// deltas, and MetricsSampler reading a real HTTP endpoint (an HttpServer on loopback serving
// /metrics text that the test changes between readings).
#include "serve/metrics_sampler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cmath>
#include <mutex>
#include <thread>

#include "common/http_server.h"
#include "serve/prometheus_text.h"

namespace bluegreen::serve {
namespace {

using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------
// ParsePrometheusText

TEST(PrometheusTextTest, ReadsSamplesAndSkipsCommentsAndBlankLines) {
  auto r = ParsePrometheusText(
      "# HELP bluegreen_requests_total Requests.\n"
      "# TYPE bluegreen_requests_total counter\n"
      "\n"
      "bluegreen_requests_total{listener=\"app-production\",target_group=\"app-blue\","
      "code_class=\"2xx\"} 1027\n"
      "bluegreen_upstream_retries_total 3\r\n"
      "bluegreen_request_duration_seconds_bucket{le=\"+Inf\"} 7 1700000000000\n"
      "  bluegreen_config_generation   12  \n");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 4u);
  EXPECT_EQ((*r)[0].name, "bluegreen_requests_total");
  EXPECT_EQ((*r)[0].Label("listener"), "app-production");
  EXPECT_EQ((*r)[0].Label("target_group"), "app-blue");
  EXPECT_EQ((*r)[0].Label("code_class"), "2xx");
  EXPECT_EQ((*r)[0].Label("missing"), "");
  EXPECT_EQ((*r)[0].value, 1027);
  EXPECT_EQ((*r)[1].name, "bluegreen_upstream_retries_total");
  EXPECT_TRUE((*r)[1].labels.empty());
  EXPECT_EQ((*r)[1].value, 3);
  EXPECT_EQ((*r)[2].Label("le"), "+Inf");
  EXPECT_EQ((*r)[2].value, 7) << "the timestamp is not the value";
  EXPECT_EQ((*r)[3].value, 12);
}

TEST(PrometheusTextTest, ValuesAndEscapes) {
  auto r = ParsePrometheusText(
      "a{x=\"q\\\"uote\",y=\"back\\\\slash\",z=\"new\\nline\",} 1.5e3\n"
      "b +Inf\nc -Inf\nd NaN\ne{} -0.25\n");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 5u);
  EXPECT_EQ((*r)[0].Label("x"), "q\"uote");
  EXPECT_EQ((*r)[0].Label("y"), "back\\slash");
  EXPECT_EQ((*r)[0].Label("z"), "new\nline");
  EXPECT_EQ((*r)[0].value, 1500);
  EXPECT_TRUE(std::isinf((*r)[1].value) && (*r)[1].value > 0);
  EXPECT_TRUE(std::isinf((*r)[2].value) && (*r)[2].value < 0);
  EXPECT_TRUE(std::isnan((*r)[3].value));
  EXPECT_EQ((*r)[4].value, -0.25);
}

TEST(PrometheusTextTest, MalformedLinesAreErrorsWithTheirLineNumber) {
  const std::pair<const char*, const char*> cases[] = {
      {"ok 1\n{x=\"1\"} 2\n", "line 2: expected a metric name"},
      {"a{x=1} 2\n", "line 1: expected '\"'"},
      {"a{x=\"1} 2\n", "line 1: unterminated label value"},
      {"a{x=\"\\t\"} 2\n", "line 1: unknown escape in a label value"},
      {"a{x=\"1\" y=\"2\"} 2\n", "line 1: expected ',' or '}' after a label"},
      {"a{=\"1\"} 2\n", "line 1: expected a label name"},
      {"a{x\"1\"} 2\n", "line 1: expected '='"},
      {"a\n", "line 1: expected a space before the value"},
      {"a 12abc\n", "line 1: bad value \"12abc\""},
      {"a 1 2 3\n", "line 1: unexpected text after the value"},
  };
  for (const auto& [text, error] : cases) {
    auto r = ParsePrometheusText(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << text;
    EXPECT_EQ(r.status().message(), error) << text;
  }
}

// ---------------------------------------------------------------------------------------------
// ComputeTraffic

RequestCounts Counts(std::initializer_list<std::pair<const char*, double>> entries) {
  // "listener/group/class" -> value
  RequestCounts out;
  for (const auto& [key, v] : entries) {
    const std::string k = key;
    const size_t a = k.find('/');
    const size_t b = k.find('/', a + 1);
    out[{k.substr(0, a), k.substr(a + 1, b - a - 1), k.substr(b + 1)}] = v;
  }
  return out;
}

const std::map<std::string, std::string> kRouting = {{"app-production", "app-blue"},
                                                     {"app-test", "app-green"}};

TEST(ComputeTrafficTest, RatesAndErrorShareFromCounterDeltas) {
  const RequestCounts before = Counts({{"app-production/app-blue/2xx", 100},
                                       {"app-production/app-blue/5xx", 10},
                                       {"app-test/app-green/2xx", 5}});
  const RequestCounts now = Counts({{"app-production/app-blue/2xx", 190},
                                    {"app-production/app-blue/5xx", 20},
                                    {"app-test/app-green/2xx", 9},
                                    {"app-test/app-green/4xx", 1}});
  auto t = ComputeTraffic(before, now, 2.0, 1234, kRouting);
  ASSERT_EQ(t.size(), 1u);
  const TrafficSample& s = t.at("app");
  EXPECT_EQ(s.t, 1234);
  EXPECT_DOUBLE_EQ(s.production.rps, 50);  // (90 + 10) / 2 s
  EXPECT_DOUBLE_EQ(s.production.error_rate, 0.1);
  EXPECT_EQ(s.production.target_group, "app-blue");
  EXPECT_EQ(s.production.identifier, "Code1");
  EXPECT_DOUBLE_EQ(s.test.rps, 2.5);
  EXPECT_DOUBLE_EQ(s.test.error_rate, 0) << "4xx are the client's errors, not the service's";
  EXPECT_EQ(s.test.target_group, "app-green");
  EXPECT_EQ(s.test.identifier, "Code2");
  EXPECT_EQ(TrafficSampleToJson(s).dump(),
            R"({"production":{"error_rate":0.1,"identifier":"Code1","rps":50.0,)"
            R"("target_group":"app-blue"},"t":1234,"test":{"error_rate":0.0,)"
            R"("identifier":"Code2","rps":2.5,"target_group":"app-green"}})");
}

TEST(ComputeTrafficTest, DuringASwapTheGroupWithMostRequestsIsShown) {
  const RequestCounts before = Counts({{"app-production/app-blue/2xx", 1000}});
  const RequestCounts now =
      Counts({{"app-production/app-blue/2xx", 1010}, {"app-production/app-green/2xx", 30}});
  const std::map<std::string, std::string> swapped = {{"app-production", "app-green"},
                                                      {"app-test", "app-blue"}};
  const TrafficSample s = ComputeTraffic(before, now, 1.0, 1, swapped).at("app");
  EXPECT_DOUBLE_EQ(s.production.rps, 40);
  EXPECT_EQ(s.production.target_group, "app-green");
  EXPECT_EQ(s.production.identifier, "Code2");
}

TEST(ComputeTrafficTest, IdleListenersShowTheirGroupNow) {
  const TrafficSample s = ComputeTraffic({}, {}, 1.0, 1, kRouting).at("app");
  EXPECT_EQ(s.production.rps, 0);
  EXPECT_EQ(s.production.error_rate, 0) << "no requests is no error";
  EXPECT_EQ(s.production.target_group, "app-blue");
  EXPECT_EQ(s.test.target_group, "app-green");
}

TEST(ComputeTrafficTest, ACounterThatWentDownCountsFromZero) {
  const RequestCounts before = Counts({{"app-production/app-blue/2xx", 5000}});
  const RequestCounts now = Counts({{"app-production/app-blue/2xx", 7}});
  EXPECT_DOUBLE_EQ(ComputeTraffic(before, now, 1.0, 1, kRouting).at("app").production.rps, 7);
}

TEST(ComputeTrafficTest, StacksAreSeparatedAndOtherListenersIgnored) {
  const RequestCounts now =
      Counts({{"a-b-production/a-b-blue/2xx", 3}, {"a-test/a-green/5xx", 2}, {"admin/x/2xx", 99}});
  auto t = ComputeTraffic({}, now, 1.0, 1, {});
  ASSERT_EQ(t.size(), 2u);
  EXPECT_DOUBLE_EQ(t.at("a-b").production.rps, 3);
  EXPECT_EQ(t.at("a-b").production.identifier, "Code1");
  EXPECT_DOUBLE_EQ(t.at("a").test.error_rate, 1);
  EXPECT_EQ(t.at("a").production.rps, 0);
}

TEST(ComputeTrafficTest, RequestCountsKeepOnlyTheRequestCounter) {
  auto parsed = ParsePrometheusText(
      "bluegreen_requests_total{listener=\"app-production\",target_group=\"app-blue\","
      "code_class=\"2xx\"} 4\n"
      "bluegreen_request_duration_seconds_count{listener=\"app-production\","
      "target_group=\"app-blue\"} 4\n"
      "bluegreen_requests_total{listener=\"app-production\",target_group=\"app-blue\","
      "code_class=\"5xx\"} 1\n");
  ASSERT_TRUE(parsed.ok());
  const RequestCounts c = RequestCountsFrom(*parsed);
  EXPECT_EQ(c, Counts({{"app-production/app-blue/2xx", 4}, {"app-production/app-blue/5xx", 1}}));
}

// ---------------------------------------------------------------------------------------------
// MetricsSampler against a real HTTP endpoint

class MetricsSamplerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<HttpServer>(
        io_, [this](const HttpRequest& req, HttpServer::Respond respond) {
          std::lock_guard<std::mutex> lock(mu_);
          ++reads_;
          respond(HttpResponse::Text(200,
                                     "bluegreen_requests_total{listener=\"app-production\","
                                     "target_group=\"app-blue\",code_class=\"2xx\"} " +
                                         std::to_string(total_) + "\n"));
        });
    ASSERT_TRUE(server_->Listen("127.0.0.1:0").ok());
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    work_.reset();
    boost::asio::post(io_, [this] { server_->Close(); });
    io_.stop();
    thread_.join();
  }

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_ =
      boost::asio::make_work_guard(io_);
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  std::mutex mu_;
  int64_t total_ = 0;  // guarded by mu_
  int reads_ = 0;      // guarded by mu_
};

TEST_F(MetricsSamplerTest, KeepsARingOfSamplesFromTheProxysCounters) {
  std::atomic<bool> proxy_up{true};
  MetricsSampler sampler(
      server_->address(),
      [&] {
        if (!proxy_up) return nlohmann::json();
        return nlohmann::json::parse(
            R"({"listeners":[{"name":"app-production","target_group":"app-blue"},)"
            R"({"name":"app-test","target_group":"app-green"}]})");
      },
      50ms, /*capacity=*/5);
  sampler.Start();
  // 100 more requests before each reading: every sample after the first shows traffic.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (sampler.Samples("app").size() < 5 && std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      total_ += 100;
    }
    std::this_thread::sleep_for(10ms);  // the sampler reads on its own clock
  }
  std::vector<TrafficSample> all = sampler.Samples("app");
  ASSERT_EQ(all.size(), 5u) << "the ring holds `capacity` samples";
  for (size_t i = 1; i < all.size(); ++i) EXPECT_GT(all[i].t, all[i - 1].t);
  EXPECT_GT(all.back().production.rps, 0);
  EXPECT_EQ(all.back().production.target_group, "app-blue");
  EXPECT_EQ(all.back().test.rps, 0);
  EXPECT_EQ(all.back().test.target_group, "app-green");
  EXPECT_EQ(sampler.Samples("app", all[2].t).size(), 2u) << "only the samples after `after`";
  EXPECT_TRUE(sampler.Samples("other").empty());

  // While the proxy is not reachable nothing is read.
  proxy_up = false;
  std::this_thread::sleep_for(150ms);  // let a reading in flight finish
  int reads = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reads = reads_;
  }
  std::this_thread::sleep_for(300ms);  // several intervals in which nothing may happen
  {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_EQ(reads_, reads);
  }
  sampler.Stop();
}

}  // namespace
}  // namespace bluegreen::serve
