// Integration tests of `bluegreen proxy` as a process that is configured and operated: config
// replacement over the admin API, config file errors, SIGHUP, restart from the state file, SIGTERM
// with work in flight, and the metrics. Real binary, real backends on loopback (see harness.h).

#include <chrono>
#include <string>
#include <vector>

#include "harness.h"

namespace bluegreen::proxy_test {
namespace {

class ConfigChangeTest : public ProxyTest {};

// The reason of an admin API error: {"error": "reason"} or {"error": {"message": "reason", ...}}.
std::string ErrorOf(const AdminResponse& r) {
  Json error = Field(r.json, "error");
  if (error.is_string()) return error.get<std::string>();
  Json message = Field(error, "message");
  if (message.is_string()) return message.get<std::string>();
  return "";
}

// 1-based number of the first line of `text` containing `needle`, or 0.
int LineOf(const std::string& text, const std::string& needle) {
  size_t pos = text.find(needle);
  if (pos == std::string::npos) return 0;
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + pos, '\n'));
}

TEST_F(ConfigChangeTest, InvalidConfigIsRejectedWithItsReasonAndChangesNothing) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());
  const Admin& admin = bg.proxy->admin();
  BG_ASSERT_OK_AND_ASSIGN(auto conn, HttpConnection::Connect(bg.proxy->production_port()));
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse first, conn->Get("/"));
  ASSERT_EQ(first.body, "blue\n");
  BG_ASSERT_OK_AND_ASSIGN(Json before, admin.State());

  {  // A listener pointing at a target group that does not exist.
    ProxyConfigSpec bad = bg.proxy->spec();
    bad.Listener("production")->target_group = "nope";
    BG_ASSERT_OK_AND_ASSIGN(AdminResponse r, admin.Put("/v1/config", bad.ToYaml()));
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_NE(ErrorOf(r).find("nope"), std::string::npos) << "reason should name it: " << r.body;
  }
  {  // Two listeners on one port.
    ProxyConfigSpec bad = bg.proxy->spec();
    bad.Listener("test")->port = bad.Listener("production")->port;
    BG_ASSERT_OK_AND_ASSIGN(AdminResponse r, admin.Put("/v1/config", bad.ToYaml()));
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_FALSE(ErrorOf(r).empty()) << r.body;
  }
  {  // A bad value in JSON form.
    Json bad = bg.proxy->spec().ToJson();
    bad["target_groups"][0]["algorithm"] = "fastest";
    BG_ASSERT_OK_AND_ASSIGN(AdminResponse r,
                            admin.Put("/v1/config", bad.dump(), "application/json"));
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_NE(ErrorOf(r).find("algorithm"), std::string::npos) << r.body;
  }
  {  // Not YAML at all.
    BG_ASSERT_OK_AND_ASSIGN(AdminResponse r, admin.Put("/v1/config", "listeners: [\n  - {name: "));
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_FALSE(ErrorOf(r).empty()) << r.body;
  }

  BG_ASSERT_OK_AND_ASSIGN(Json after, admin.State());
  EXPECT_EQ(Generation(after), Generation(before));
  EXPECT_EQ(ListenerGroup(after, "production"), "blue");
  EXPECT_EQ(ListenerGroup(after, "test"), "green");
  EXPECT_EQ(GroupTag(after, "blue", "Identifier"), "Code1");
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse still, conn->Get("/"));
  EXPECT_EQ(still.body, "blue\n") << still;
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse test, FetchGet(bg.proxy->test_port(), "/"));
  EXPECT_EQ(test.body, "green\n") << test;
}

TEST_F(ConfigChangeTest, ValidConfigWithANewTargetGroupIsApplied) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());
  BG_ASSERT_OK_AND_ASSIGN(Backend * canary, StartBackend("canary"));
  const Admin& admin = bg.proxy->admin();
  BG_ASSERT_OK_AND_ASSIGN(auto prod, HttpConnection::Connect(bg.proxy->production_port()));
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse first, prod->Get("/"));
  ASSERT_EQ(first.body, "blue\n");
  BG_ASSERT_OK_AND_ASSIGN(Json before, admin.State());

  ProxyConfigSpec next = bg.proxy->spec();
  TargetGroupSpec group;
  group.name = "canary";
  group.targets = {canary->address()};
  group.tags = {{"Identifier", "Code3"}, {"Image", "v2"}, {"IsProduction", "false"}};
  next.target_groups.push_back(group);
  next.Listener("test")->target_group = "canary";
  BG_ASSERT_OK_AND_ASSIGN(AdminResponse put, admin.Put("/v1/config", next.ToYaml()));
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_GT(Generation(put.json), Generation(before)) << put.body;

  BG_ASSERT_OK_AND_ASSIGN(Json applied, admin.State());
  EXPECT_EQ(Generation(applied), Generation(put.json));
  EXPECT_EQ(ListenerGroup(applied, "test"), "canary") << applied.dump();
  EXPECT_EQ(ListenerGroup(applied, "production"), "blue");
  EXPECT_EQ(GroupTag(applied, "canary", "Image"), "v2");
  BG_ASSERT_OK(WaitHealth(*bg.proxy, "canary", canary->address(), "healthy"));
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse on_test, FetchGet(bg.proxy->test_port(), "/"));
  EXPECT_EQ(on_test.body, "canary\n") << on_test;
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse on_prod, prod->Get("/"));
  EXPECT_EQ(on_prod.body, "blue\n") << on_prod;

  // The same through a JSON body: the test listener back to green, canary removed.
  Json back = bg.proxy->spec().ToJson();
  BG_ASSERT_OK_AND_ASSIGN(AdminResponse put_json,
                          admin.Put("/v1/config", back.dump(), "application/json"));
  ASSERT_EQ(put_json.status, 200) << put_json.body;
  EXPECT_GT(Generation(put_json.json), Generation(put.json));
  BG_ASSERT_OK_AND_ASSIGN(Json reverted, admin.State());
  EXPECT_TRUE(TargetGroupState(reverted, "canary").is_null()) << reverted.dump();
  BG_ASSERT_OK(WaitAllHealthy(*bg.proxy));
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse green, FetchGet(bg.proxy->test_port(), "/"));
  EXPECT_EQ(green.body, "green\n") << green;
}

TEST_F(ConfigChangeTest, InvalidConfigFileAtStartExitsNonZeroNamingTheLine) {
  BG_ASSERT_OK_AND_ASSIGN(ProxyConfigSpec spec, BlueGreenConfig({"127.0.0.1:9"}, {"127.0.0.1:10"}));
  spec.Group("green")->algorithm = "fastest";
  const std::string yaml = spec.ToYaml();
  const int line = LineOf(yaml, "algorithm: fastest");
  ASSERT_GT(line, 0);
  BG_ASSERT_OK_AND_ASSIGN(auto proxy, ProxyProcess::Launch(dir_.File("bad.yaml"), spec));
  std::optional<int> st = proxy->process().WaitExit(10s);
  ASSERT_TRUE(st.has_value()) << "the proxy kept running with an invalid config";
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) != 0) << DescribeWaitStatus(st);
  ASSERT_TRUE(proxy->process().WaitForOutputClosed(5s));
  const std::string err = proxy->process().Stderr();
  EXPECT_NE(err.find("line " + std::to_string(line)), std::string::npos)
      << "expected \"line " << line << "\" in stderr:\n"
      << err;
  EXPECT_NE(err.find("algorithm"), std::string::npos) << err;
}

TEST_F(ConfigChangeTest, UnparsableConfigFileAtStartExitsNonZeroNamingTheLine) {
  const std::string path = dir_.File("broken.yaml");
  BG_ASSERT_OK(WriteFile(path,
                         "admin: 127.0.0.1:1\n"
                         "workers: 1\n"
                         "listeners:\n"
                         "  - {name: production, port: 1, target_group: blue\n"
                         "target_groups: [\n"));
  BG_ASSERT_OK_AND_ASSIGN(auto proc, Process::Start(BLUEGREEN_BINARY, {"proxy", "--config", path}));
  std::optional<int> st = proc->WaitExit(10s);
  ASSERT_TRUE(st.has_value()) << "the proxy kept running with a broken config";
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) != 0) << DescribeWaitStatus(st);
  ASSERT_TRUE(proc->WaitForOutputClosed(5s));
  EXPECT_NE(proc->Stderr().find("line "), std::string::npos) << proc->Stderr();

  // A missing file is an error too.
  BG_ASSERT_OK_AND_ASSIGN(
      auto missing, Process::Start(BLUEGREEN_BINARY, {"proxy", "--config", dir_.File("none")}));
  std::optional<int> st2 = missing->WaitExit(10s);
  ASSERT_TRUE(st2.has_value());
  EXPECT_TRUE(WIFEXITED(*st2) && WEXITSTATUS(*st2) != 0) << DescribeWaitStatus(st2);
}

TEST_F(ConfigChangeTest, SighupReloadsTheConfigFileAndKeepsTheOldOneIfInvalid) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());
  const Admin& admin = bg.proxy->admin();
  BG_ASSERT_OK_AND_ASSIGN(Json before, admin.State());

  // Valid: production and test exchange their groups.
  ProxyConfigSpec next = bg.proxy->spec();
  next.Listener("production")->target_group = "green";
  next.Listener("test")->target_group = "blue";
  BG_ASSERT_OK(WriteFile(bg.proxy->config_path(), next.ToYaml()));
  bg.proxy->process().Signal(SIGHUP);
  BG_ASSERT_OK_AND_ASSIGN(Json reloaded, admin.WaitForState(
                                             [&](const Json& s) {
                                               return Generation(s) > Generation(before) &&
                                                      ListenerGroup(s, "production") == "green";
                                             },
                                             10s, "the reloaded config"));
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, FetchGet(bg.proxy->production_port(), "/"));
  EXPECT_EQ(r.body, "green\n") << r;

  // Invalid: reported on stderr, nothing changes, the proxy keeps running.
  ProxyConfigSpec bad = next;
  bad.Listener("production")->target_group = "nope";
  BG_ASSERT_OK(WriteFile(bg.proxy->config_path(), bad.ToYaml()));
  const size_t log_size = bg.proxy->process().StderrSize();
  bg.proxy->process().Signal(SIGHUP);
  EXPECT_TRUE(bg.proxy->process().WaitForStderrAfter(log_size, "nope", 10s))
      << "the rejected reload was not reported; stderr:\n"
      << bg.proxy->process().Stderr();
  EXPECT_TRUE(bg.proxy->process().Running());
  BG_ASSERT_OK_AND_ASSIGN(Json kept, admin.State());
  EXPECT_EQ(Generation(kept), Generation(reloaded));
  EXPECT_EQ(ListenerGroup(kept, "production"), "green");
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse r2, FetchGet(bg.proxy->production_port(), "/"));
  EXPECT_EQ(r2.body, "green\n") << r2;
}

// ---------------------------------------------------------------------------------------------
// Process lifecycle

class LifecycleTest : public ProxyTest {};

TEST_F(LifecycleTest, RestartServesTheLastAppliedStateFromTheStateFile) {
  const std::string state_file = dir_.File("proxy-state.json");
  BG_ASSERT_OK_AND_ASSIGN(
      BlueGreen bg, StartBlueGreen([&](ProxyConfigSpec& spec) { spec.state_file = state_file; }));
  BG_ASSERT_OK_AND_ASSIGN(Backend * blue2, StartBackend("blue2"));
  const ProxyConfigSpec spec = bg.proxy->spec();

  BG_ASSERT_OK_AND_ASSIGN(AdminResponse swap, bg.proxy->admin().Swap());
  ASSERT_EQ(swap.status, 200) << swap.body;
  BG_ASSERT_OK_AND_ASSIGN(AdminResponse reg,
                          bg.proxy->admin().Post("/v1/target_groups/blue/targets",
                                                 Json{{"address", blue2->address()}}));
  ASSERT_EQ(reg.status, 200) << reg.body;

  BG_ASSERT_OK_AND_ASSIGN(std::string saved, ReadFile(state_file));
  EXPECT_FALSE(Json::parse(saved, nullptr, false).is_discarded()) << saved;

  std::optional<int> st = StopProxy(bg.proxy);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << DescribeWaitStatus(st);

  // Same config file (it still says production -> blue), but the state file wins.
  BG_ASSERT_OK_AND_ASSIGN(ProxyProcess * again, StartProxy(spec));
  BG_ASSERT_OK_AND_ASSIGN(Json state,
                          again->admin().WaitForState(
                              [&](const Json& s) {
                                return TargetHealth(s, "green", bg.green->address()) == "healthy" &&
                                       TargetHealth(s, "blue", blue2->address()) == "healthy";
                              },
                              10s, "targets healthy after the restart"));
  EXPECT_EQ(ListenerGroup(state, "production"), "green") << state.dump();
  EXPECT_EQ(ListenerGroup(state, "test"), "blue");
  EXPECT_EQ(GroupTag(state, "green", "IsProduction"), "true");
  EXPECT_EQ(GroupTag(state, "blue", "IsProduction"), "false");
  BG_ASSERT_OK_AND_ASSIGN(HttpResponse prod, FetchGet(again->production_port(), "/"));
  EXPECT_EQ(prod.body, "green\n") << prod;
}

TEST_F(LifecycleTest, SigtermFinishesTheRequestInFlightAndExitsZero) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());
  BG_ASSERT_OK_AND_ASSIGN(auto slow, HttpConnection::Connect(bg.proxy->production_port()));
  BG_ASSERT_OK(slow->Send(GetRequest("/delay/1500")));
  BG_ASSERT_OK(
      bg.proxy->admin()
          .WaitForState(
              [&](const Json& s) { return TargetInFlight(s, "blue", bg.blue->address()) >= 1; }, 5s,
              "the slow request in flight")
          .status());

  bg.proxy->process().Signal(SIGTERM);
  // It stops accepting while the request is still running.
  bool refused = false;
  const auto deadline = Clock::now() + 1s;
  while (!refused && Clock::now() < deadline) {
    refused = !HttpConnection::Connect(bg.proxy->production_port(), 200ms).ok();
    if (!refused) std::this_thread::sleep_for(20ms);  // polling for the listener to close
  }
  EXPECT_TRUE(refused) << "the listener still accepts connections after SIGTERM";

  BG_ASSERT_OK_AND_ASSIGN(HttpResponse resp, slow->ReadResponse());
  EXPECT_EQ(resp.status, 200) << resp;
  EXPECT_EQ(resp.body, "blue\n") << resp;
  std::optional<int> st = bg.proxy->process().WaitExit(10s);
  ASSERT_TRUE(st.has_value()) << "the proxy did not exit after SIGTERM";
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << DescribeWaitStatus(st);
}

// ---------------------------------------------------------------------------------------------
// Metrics

TEST_F(LifecycleTest, MetricsCountRequestsByListenerGroupAndClass) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());
  BG_ASSERT_OK_AND_ASSIGN(auto prod, HttpConnection::Connect(bg.proxy->production_port()));
  for (int i = 0; i < 7; ++i) {
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, prod->Get("/"));
    ASSERT_EQ(r.status, 200);
  }
  for (int i = 0; i < 2; ++i) {
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, prod->Get("/status/404"));
    ASSERT_EQ(r.status, 404);
  }
  for (int i = 0; i < 3; ++i) {
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, FetchGet(bg.proxy->test_port(), "/"));
    ASSERT_EQ(r.status, 200);
  }

  BG_ASSERT_OK_AND_ASSIGN(std::string m, bg.proxy->admin().Metrics());
  EXPECT_GE(
      MetricValue(m, "bluegreen_requests_total",
                  {{"listener", "production"}, {"target_group", "blue"}, {"code_class", "2xx"}})
          .value_or(-1),
      7)
      << m;
  EXPECT_GE(
      MetricValue(m, "bluegreen_requests_total",
                  {{"listener", "production"}, {"target_group", "blue"}, {"code_class", "4xx"}})
          .value_or(-1),
      2)
      << m;
  EXPECT_GE(MetricValue(m, "bluegreen_requests_total",
                        {{"listener", "test"}, {"target_group", "green"}, {"code_class", "2xx"}})
                .value_or(-1),
            3)
      << m;
  EXPECT_EQ(MetricValue(m, "bluegreen_target_healthy",
                        {{"target_group", "blue"}, {"target", bg.blue->address()}}),
            1.0)
      << m;
  EXPECT_GE(MetricValue(m, "bluegreen_request_duration_seconds_count").value_or(-1), 12) << m;
  EXPECT_TRUE(MetricValue(m, "bluegreen_request_duration_seconds_bucket", {{"le", "+Inf"}})) << m;
  // The keep-alive connection is open while the metrics are read.
  EXPECT_GE(MetricValue(m, "bluegreen_active_connections").value_or(-1), 1) << m;
  EXPECT_TRUE(MetricValue(m, "bluegreen_upstream_connect_errors_total")) << m;
  EXPECT_TRUE(MetricValue(m, "bluegreen_upstream_retries_total")) << m;
}

}  // namespace
}  // namespace bluegreen::proxy_test
