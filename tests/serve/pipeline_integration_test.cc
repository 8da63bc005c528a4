// Integration tests of the pipeline (issue 4, docs/api.md "The pipeline"): the real `bluegreen
// serve`, real git repositories made by the test (a bare repository and a working clone under the
// test's temp dir), real builds (the stack's build.commands or a buildspec.yml), real tasks
// (test_backend behind the repository's run.sh) and the real proxy, all on loopback.
//
// Every path of the execution state machine is driven from commits: the first run, a normal
// release under load, reject, approval timeouts, auto approval, superseding, a failing build, a
// buildspec build, an unhealthy version, rollback under load, the webhook, release, the health
// and version gates of the swap, and SIGKILL of serve in each stage and while an approve is in
// flight. The pipeline is driven through the REST API only (the CLI's pipeline commands are a
// client of it); the last test is a smoke test of the CLI.
//
// Approve and rollback answer once the swap is done (docs/api.md): the load tests check that
// every request sent after the answer reaches the new side, with a TimedLoad that keeps the send
// time of every response.
//
// Load figures (requests, failures, answers) are printed on stderr with a "[load]" prefix.
#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "pipeline_harness.h"

namespace bluegreen::serve_it {
namespace {

// An execution has the fields of docs/api.md, with their types; every stage has its status and
// start, and an ended one its end and duration.
void ExpectExecutionShape(const Json& e) {
  EXPECT_EQ(Keys(e), (std::set<std::string>{
                         "id", "stack", "kind", "trigger", "commit", "commit_message", "author",
                         "version", "status", "stage", "stages", "reason", "deploy_services",
                         "from_version", "approved_by", "comment", "created_at", "updated_at"}))
      << e.dump(2);
  for (const char* k : {"id", "created_at", "updated_at"}) {
    EXPECT_TRUE(e.value(k, Json()).is_number_integer()) << k << ": " << e.dump(2);
  }
  for (const char* k :
       {"stack", "kind", "trigger", "commit", "commit_message", "author", "version", "status",
        "stage", "reason", "deploy_services", "from_version", "approved_by", "comment"}) {
    EXPECT_TRUE(e.value(k, Json()).is_string()) << k << ": " << e.dump(2);
  }
  const Json stages = e.value("stages", Json());
  ASSERT_TRUE(stages.is_object()) << e.dump(2);
  static const std::set<std::string> kStages = {"Source", "Build", "Deploy", "Review", "Swap"};
  for (const auto& [name, st] : stages.items()) {
    EXPECT_TRUE(kStages.count(name)) << "unknown stage " << name << ": " << e.dump(2);
    EXPECT_TRUE(st.value("status", Json()).is_string()) << name << ": " << e.dump(2);
    EXPECT_TRUE(st.value("started_at", Json()).is_number_integer()) << name << ": " << e.dump(2);
    if (st.contains("ended_at")) {
      EXPECT_GE(st.value("duration_ms", int64_t{-1}), 0) << name << ": " << e.dump(2);
    }
  }
  EXPECT_TRUE(stages.contains(e.value("stage", "?")))
      << "the current stage has no entry: " << e.dump(2);
}

void PrintLoad(const std::string& what, const LoadGenerator::Totals& t) {
  std::fprintf(stderr, "[load] %s: %s\n", what.c_str(), t.ToString().c_str());
}

// ---------------------------------------------------------------------------------------------
// A load generator that keeps every response with the times it was sent and answered, so a test
// can tell which answers came from requests sent after a given moment (an API call answering).
// `threads` threads, each with one keep-alive connection doing GET / (re-opened after a failure or
// a close). Only the counters are shared while it runs; Samples() after Stop().

class TimedLoad {
 public:
  struct Sample {
    Clock::time_point sent;
    Clock::time_point done;
    std::string body;     // on success
    std::string failure;  // empty on success
  };

  TimedLoad(std::string label, uint16_t port, int threads = 4, Duration pause = 1ms)
      : label_(std::move(label)), port_(port), threads_(threads), pause_(pause) {}
  ~TimedLoad() { Stop(); }
  TimedLoad(const TimedLoad&) = delete;
  TimedLoad& operator=(const TimedLoad&) = delete;

  void Start() {
    start_ = Clock::now();
    per_thread_.assign(threads_, {});
    for (int i = 0; i < threads_; ++i) workers_.emplace_back([this, i] { Run(i); });
  }
  void Stop() {
    stop_ = true;
    for (auto& t : workers_) {
      if (t.joinable()) t.join();
    }
    workers_.clear();
  }
  int64_t Count() const { return count_.load(); }
  bool WaitForMore(int64_t n, Duration timeout) const {
    const int64_t from = Count();
    return WaitUntil([&] { return Count() >= from + n; }, timeout);
  }
  // Every sample, by the time it was sent. Only after Stop().
  std::vector<Sample> Samples() const {
    std::vector<Sample> all;
    for (const auto& v : per_thread_) all.insert(all.end(), v.begin(), v.end());
    std::sort(all.begin(), all.end(),
              [](const Sample& a, const Sample& b) { return a.sent < b.sent; });
    return all;
  }
  const std::string& label() const { return label_; }

 private:
  void Run(int index) {
    std::unique_ptr<HttpConnection> conn;
    std::vector<Sample>& out = per_thread_[index];
    out.reserve(200000);
    while (!stop_) {
      Sample s;
      s.sent = Clock::now();
      if (!conn) {
        auto c = HttpConnection::Connect(port_, 5s);
        if (!c.ok()) {
          s.failure = "connect: " + c.status().message();
        } else {
          conn = std::move(c).value();
        }
      }
      if (conn) {
        auto r = conn->Get("/", 5s);
        if (!r.ok()) {
          s.failure = "GET /: " + r.status().message();
          conn.reset();
        } else {
          if (r->status != 200) {
            s.failure = "GET /: status " + std::to_string(r->status) + " " + r->body.substr(0, 60);
          } else {
            s.body = r->body;
          }
          if (r->ConnectionClose()) conn.reset();
        }
      }
      s.done = Clock::now();
      const bool failed = !s.failure.empty();
      out.push_back(std::move(s));
      ++count_;
      if (failed) {
        std::this_thread::sleep_for(10ms);  // do not spin on a refusing port
      } else if (pause_.count() > 0) {
        std::this_thread::sleep_for(pause_);
      }
    }
  }

  const std::string label_;
  const uint16_t port_;
  const int threads_;
  const Duration pause_;
  Clock::time_point start_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> count_{0};
  std::vector<std::thread> workers_;
  std::vector<std::vector<Sample>> per_thread_;  // each written by its own thread only
};

// What a TimedLoad saw, relative to moments of the test.
struct LoadReport {
  int64_t requests = 0;
  int64_t failures = 0;
  std::map<std::string, int64_t> bodies;
  std::vector<std::string> failure_samples;  // the first few, with their time relative to `ref`
  // Requests sent at or after each reference moment, and those of them that did not answer
  // `want` (with the latest such one, in ms after the moment).
  struct After {
    std::string what;
    int64_t sent = 0;
    int64_t wrong = 0;
    double last_wrong_ms = -1;
    std::string last_wrong_body;
  };
  std::vector<After> after;

  std::string ToString() const {
    std::string out =
        std::to_string(requests) + " requests, " + std::to_string(failures) + " failed; answers:";
    for (const auto& [b, n] : bodies) out += " " + Chomp(b) + "=" + std::to_string(n);
    for (const After& a : after) {
      out += "\n    sent after " + a.what + ": " + std::to_string(a.sent) +
             ", not the new side: " + std::to_string(a.wrong);
      if (a.wrong > 0) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.1f", a.last_wrong_ms);
        out += " (the last one sent " + std::string(buf) + " ms after, answered '" +
               Chomp(a.last_wrong_body) + "')";
      }
    }
    for (const auto& s : failure_samples) out += "\n    failure: " + s;
    return out;
  }
};

LoadReport Analyze(const std::vector<TimedLoad::Sample>& samples, Clock::time_point ref,
                   const std::string& want,
                   const std::vector<std::pair<std::string, Clock::time_point>>& moments) {
  LoadReport r;
  for (const auto& [what, t] : moments) {
    r.after.emplace_back();
    r.after.back().what = what;
  }
  for (const TimedLoad::Sample& s : samples) {
    ++r.requests;
    if (!s.failure.empty()) {
      ++r.failures;
      if (r.failure_samples.size() < 10) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%+.1f ms: ",
                      std::chrono::duration<double, std::milli>(s.sent - ref).count());
        r.failure_samples.push_back(buf + s.failure);
      }
      continue;
    }
    ++r.bodies[s.body];
    for (size_t i = 0; i < moments.size(); ++i) {
      if (s.sent < moments[i].second) continue;
      LoadReport::After& a = r.after[i];
      ++a.sent;
      if (s.body != want) {
        ++a.wrong;
        a.last_wrong_ms =
            std::chrono::duration<double, std::milli>(s.sent - moments[i].second).count();
        a.last_wrong_body = s.body;
      }
    }
  }
  return r;
}


// ---------------------------------------------------------------------------------------------
// 1. The first run

TEST_F(PipelineTest, FirstRunDeploysBothSides) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK(InitRepo());
  BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitApp({"blue"}, "First: blue"));
  BG_ASSERT_OK(PutStack(f));

  BG_ASSERT_OK_AND_ASSIGN(Json e, WaitExecutionOf(f.name, sha));
  EXPECT_EQ(e.value("id", int64_t{0}), 1) << e.dump(2);
  EXPECT_EQ(e.value("trigger", ""), "first") << e.dump(2);
  EXPECT_EQ(e.value("kind", ""), "release") << e.dump(2);
  BG_ASSERT_OK_AND_ASSIGN(Json done, WaitExecutionStatus(f.name, 1, "Succeeded"));
  const std::string version = done.value("version", "");
  EXPECT_EQ(version, "1-" + sha.substr(0, 7)) << done.dump(2);
  EXPECT_EQ(done.value("commit", ""), sha);
  EXPECT_EQ(done.value("commit_message", ""), "First: blue");
  EXPECT_EQ(done.value("author", ""), "T");
  EXPECT_EQ(done.value("stage", ""), "Deploy")
      << "the first run ends after Deploy: " << done.dump(2);
  EXPECT_EQ(done.value("deploy_services", ""), "Code1,Code2") << done.dump(2);
  for (const char* stage : {"Source", "Build", "Deploy"}) {
    EXPECT_EQ(StageStatus(done, stage), "Succeeded") << stage << ": " << done.dump(2);
  }
  EXPECT_EQ(StageStatus(done, "Review"), "") << "the first run has no review: " << done.dump(2);
  EXPECT_EQ(StageStatus(done, "Swap"), "") << "the first run has no swap: " << done.dump(2);
  ExpectExecutionShape(done);
  for (const char* stage : {"Source", "Build", "Deploy"}) {
    EXPECT_TRUE(done["stages"][stage].contains("ended_at")) << stage << ": " << done.dump(2);
  }

  BG_ASSERT_OK_AND_ASSIGN(Json st, WaitSettled(f.name));
  EXPECT_EQ(st.value("live", ""), "Code1") << st.dump(2);
  EXPECT_EQ(ServiceVersion(st, "Code1"), version) << st.dump(2);
  EXPECT_EQ(ServiceVersion(st, "Code2"), version) << st.dump(2);
  EXPECT_EQ(Tasks(st, "Code1", version).size(), 2u) << st.dump(2);
  EXPECT_EQ(Tasks(st, "Code2", version).size(), 2u) << st.dump(2);
  EXPECT_EQ(Group(st, f.name + "-blue").value("tags", Json()).value("Image", ""), version);
  EXPECT_EQ(Group(st, f.name + "-green").value("tags", Json()).value("Image", ""), version);
  ASSERT_TRUE(st.contains("execution")) << "GET stack has no `execution`: " << st.dump(2);
  EXPECT_EQ(st["execution"].value("id", int64_t{0}), 1) << st.dump(2);
  std::string got;
  EXPECT_TRUE(AllAnswer(f.production_port, "blue\n", 10, &got)) << "production: " << got;
  EXPECT_TRUE(AllAnswer(f.test_port, "blue\n", 10, &got)) << "test: " << got;

  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer missing,
                          Api("GET", "/api/v1/stacks/" + f.name + "/executions/99"));
  EXPECT_EQ(missing.status, 404) << missing.body;

  // The build log has the build's output.
  auto log = Api("GET", "/api/v1/stacks/" + f.name + "/executions/1/log");
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_EQ(log->status, 200);
  EXPECT_NE(log->body.find("building " + version), std::string::npos) << log->body;

  // The commit is not built again by the next polls.
  std::this_thread::sleep_for(2500ms);  // two poll intervals: nothing to wait for
  BG_ASSERT_OK_AND_ASSIGN(Json list, Executions(f.name));
  EXPECT_EQ(list.size(), 1u) << list.dump(2);
}

// ---------------------------------------------------------------------------------------------
// 2. A normal release under load

TEST_F(PipelineTest, NormalReleaseUnderLoad) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::string v1 = first.value("version", "");

  TimedLoad prod("production", f.production_port);
  LoadGenerator test_load("test", f.test_port, 2, 2ms);
  prod.Start();
  test_load.Start();
  ASSERT_TRUE(prod.WaitForMore(200, 10s));

  BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitApp({"green"}));
  BG_ASSERT_OK_AND_ASSIGN(Json e, WaitExecutionOf(f.name, sha));
  const int64_t id = e.value("id", int64_t{0});
  EXPECT_EQ(e.value("trigger", ""), "poll") << e.dump(2);
  BG_ASSERT_OK_AND_ASSIGN(
      Json waiting,
      WaitExecution(
          f.name, id, [](const Json& x) { return x.value("status", "") == "WaitingForApproval"; },
          kExecTimeout, "to wait for approval"));
  const std::string v2 = waiting.value("version", "");
  EXPECT_EQ(waiting.value("stage", ""), "Review") << waiting.dump(2);
  EXPECT_EQ(StageStatus(waiting, "Review"), "WaitingForApproval") << waiting.dump(2);
  EXPECT_EQ(StageStatus(waiting, "Deploy"), "Succeeded") << waiting.dump(2);
  EXPECT_EQ(waiting.value("deploy_services", ""), "Code2") << waiting.dump(2);
  std::string got;
  EXPECT_TRUE(AllAnswer(f.test_port, "green\n", 10, &got))
      << "the test listener does not serve the version waiting for approval: " << got;
  EXPECT_TRUE(AllAnswer(f.production_port, "blue\n", 10, &got))
      << "production changed before the approval: " << got;
  BG_ASSERT_OK_AND_ASSIGN(Json st, ApiStatus(f.name));
  EXPECT_EQ(st.value("live", ""), "Code1");
  EXPECT_EQ(ServiceVersion(st, "Code1"), v1) << st.dump(2);
  EXPECT_EQ(ServiceVersion(st, "Code2"), v2) << st.dump(2);

  // Approve under load.
  ASSERT_TRUE(prod.WaitForMore(200, 10s));
  const auto approve_sent = Clock::now();
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Action(f.name, "approve", "ship it: looks green"));
  const auto approve_answered = Clock::now();
  const std::string right_after = FetchBody(f.production_port);
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.json["execution"].value("id", int64_t{0}), id) << a.body;
  // docs/api.md: approve answers once the swap is done (read your writes).
  EXPECT_EQ(a.json["execution"].value("status", ""), "Succeeded") << a.body;
  EXPECT_EQ(right_after, "green\n") << "a fresh GET on production right after the approve "
                                       "answered";
  BG_ASSERT_OK_AND_ASSIGN(Json done, WaitExecutionStatus(f.name, id, "Succeeded", 30s));
  const auto succeeded_seen = Clock::now();
  ASSERT_TRUE(prod.WaitForMore(500, 10s));
  std::this_thread::sleep_for(500ms);  // more load after the swap: nothing to wait for
  prod.Stop();
  test_load.Stop();

  EXPECT_EQ(done.value("approved_by", ""), "admin") << done.dump(2);
  EXPECT_EQ(done.value("comment", ""), "ship it: looks green") << done.dump(2);
  EXPECT_EQ(done.value("stage", ""), "Swap") << done.dump(2);
  EXPECT_EQ(StageStatus(done, "Review"), "Approved") << done.dump(2);
  EXPECT_EQ(StageStatus(done, "Swap"), "Succeeded") << done.dump(2);
  EXPECT_EQ(done.value("from_version", ""), v1) << done.dump(2);
  EXPECT_TRUE(AllAnswer(f.production_port, "green\n", 20, &got)) << "production: " << got;

  const LoadReport r = Analyze(prod.Samples(), approve_sent, "green\n",
                               {{"the approve answered", approve_answered},
                                {"the execution was seen Succeeded", succeeded_seen}});
  std::fprintf(stderr, "[load] production during the approval: %s\n", r.ToString().c_str());
  PrintLoad("test listener during deploy and approval", test_load.Snapshot());
  EXPECT_EQ(r.failures, 0) << r.ToString();
  EXPECT_GT(r.bodies.count("blue\n") ? r.bodies.at("blue\n") : 0, 0) << r.ToString();
  EXPECT_GT(r.after[1].sent, 100) << r.ToString();
  EXPECT_EQ(r.after[1].wrong, 0)
      << "production answered the old version to requests sent after the swap was recorded: "
      << r.ToString();
  EXPECT_EQ(r.after[0].wrong, 0)
      << "production answered the old version to requests sent after POST /approve answered "
         "(docs/api.md: approve answers once the swap is done): "
      << r.ToString();
  EXPECT_EQ(test_load.Snapshot().failures, 0)
      << "the test listener failed requests during the deploy: " << test_load.Snapshot().ToString();

  // The old version still runs, behind the test listener: a rollback is possible.
  BG_ASSERT_OK_AND_ASSIGN(st, WaitSettled(f.name));
  EXPECT_EQ(st.value("live", ""), "Code2") << st.dump(2);
  EXPECT_EQ(ServiceVersion(st, "Code2"), v2) << st.dump(2);
  EXPECT_EQ(ServiceVersion(st, "Code1"), v1) << st.dump(2);
  EXPECT_EQ(Tasks(st, "Code1", v1).size(), 2u) << st.dump(2);
  EXPECT_TRUE(AllAnswer(f.test_port, "blue\n", 10, &got)) << "test: " << got;
  EXPECT_EQ(Group(st, f.name + "-green").value("tags", Json()).value("IsProduction", ""), "true")
      << st.dump(2);
  EXPECT_EQ(Listener(st, "production").value("target_group", ""), f.name + "-green") << st.dump(2);
  // One swap: the two listeners on different groups, the tags say which one is production.
  EXPECT_EQ(Listener(st, "test").value("target_group", ""), f.name + "-blue") << st.dump(2);
  EXPECT_EQ(Group(st, f.name + "-blue").value("tags", Json()).value("IsProduction", ""), "false")
      << st.dump(2);
  EXPECT_EQ(Group(st, f.name + "-green").value("tags", Json()).value("Image", ""), v2)
      << st.dump(2);
  EXPECT_EQ(Group(st, f.name + "-blue").value("tags", Json()).value("Image", ""), v1) << st.dump(2);
}

// ---------------------------------------------------------------------------------------------
// 3. Reject

TEST_F(PipelineTest, RejectKeepsProduction) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK(FirstRun(f, {"blue"}).status());
  // One swap happened (v2 live, v1 on the test side), so a rollback would be possible...
  BG_ASSERT_OK_AND_ASSIGN(Json second, Release(f, {"green"}));
  const std::string v2 = second.value("version", "");

  // ...until a new version waits for approval and is rejected: the test side now runs it.
  BG_ASSERT_OK_AND_ASSIGN(Json waiting, PushAndWaitForApproval(f, {"red"}));
  const int64_t id = waiting.value("id", int64_t{0});
  const std::string v3 = waiting.value("version", "");
  BG_ASSERT_OK_AND_ASSIGN(Json before, WaitSettled(f.name));
  {
    // Bad input changes nothing (invariant 8): a malformed body, a comment that is too long or
    // not a string.
    for (const std::string& body :
         {std::string("not json"), std::string("[1]"), Json{{"comment", 7}}.dump(),
          Json{{"comment", std::string(5000, 'c')}}.dump()}) {
      BG_ASSERT_OK_AND_ASSIGN(ApiAnswer bad,
                              Api("POST", "/api/v1/stacks/" + f.name + "/approve", body));
      EXPECT_EQ(bad.status, 400) << body.substr(0, 40) << ": " << bad.body;
      EXPECT_EQ(bad.json.value("error", Json()).value("code", ""), "bad_request") << bad.body;
    }
    BG_ASSERT_OK_AND_ASSIGN(Json still, Execution(f.name, id));
    EXPECT_EQ(still.value("status", ""), "WaitingForApproval") << still.dump(2);
  }
  {
    // While v3 waits for approval, a rollback would bypass it: refused.
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer rb, Action(f.name, "rollback"));
    EXPECT_EQ(rb.status, 409) << "a rollback while an execution waits for approval: " << rb.body;
  }
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer r, Action(f.name, "reject", "too red"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["execution"].value("status", ""), "Rejected") << r.body;
  BG_ASSERT_OK_AND_ASSIGN(Json e, Execution(f.name, id));
  EXPECT_EQ(e.value("status", ""), "Rejected") << e.dump(2);
  EXPECT_EQ(e.value("stage", ""), "Review") << e.dump(2);
  EXPECT_EQ(StageStatus(e, "Review"), "Rejected") << e.dump(2);
  EXPECT_EQ(e.value("approved_by", ""), "admin") << e.dump(2);
  EXPECT_EQ(e.value("comment", ""), "too red") << e.dump(2);
  EXPECT_NE(e.value("reason", "").find("too red"), std::string::npos) << e.dump(2);

  // Production unchanged, the rejected version still on the test side, no task replaced.
  std::this_thread::sleep_for(1500ms);  // a few reconciler passes: nothing to wait for
  BG_ASSERT_OK_AND_ASSIGN(Json st, WaitSettled(f.name));
  EXPECT_EQ(st.value("live", ""), before.value("live", "")) << st.dump(2);
  EXPECT_EQ(LiveVersion(st), v2) << st.dump(2);
  EXPECT_EQ(TestVersion(st), v3) << st.dump(2);
  EXPECT_EQ(TaskIdentities(st), TaskIdentities(before))
      << "tasks changed after the reject: before " << SetToString(TaskIdentities(before))
      << ", after " << SetToString(TaskIdentities(st));
  std::string got;
  EXPECT_TRUE(AllAnswer(f.production_port, "green\n", 10, &got)) << "production: " << got;
  EXPECT_TRUE(AllAnswer(f.test_port, "red\n", 10, &got)) << "test: " << got;

  // A second reject, an approve: nothing waits.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer again, Action(f.name, "reject"));
  EXPECT_EQ(again.status, 409) << again.body;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer approve, Action(f.name, "approve"));
  EXPECT_EQ(approve.status, 409) << approve.body;

  // A rollback would make v3 (rejected) live, or would need v1, which no longer runs: refused.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer rb, Action(f.name, "rollback"));
  EXPECT_EQ(rb.status, 409) << rb.body;
  EXPECT_EQ(rb.json.value("error", Json()).value("code", ""), "conflict") << rb.body;
  BG_ASSERT_OK_AND_ASSIGN(Json list, Executions(f.name));
  EXPECT_EQ(list.size(), 3u) << "the refused rollback left an execution: " << list.dump(2);
  BG_ASSERT_OK_AND_ASSIGN(st, ApiStatus(f.name));
  EXPECT_EQ(LiveVersion(st), v2) << st.dump(2);
  EXPECT_TRUE(AllAnswer(f.production_port, "green\n", 10, &got)) << "production: " << got;
}

// ---------------------------------------------------------------------------------------------
// 4. Approval timeouts

TEST_F(PipelineTest, ApprovalTimeout) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  f.approval_timeout = "3s";
  f.on_timeout = "reject";
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::string v1 = first.value("version", "");

  // on_timeout: reject.
  BG_ASSERT_OK_AND_ASSIGN(Json waiting, PushAndWaitForApproval(f, {"green"}));
  const int64_t id2 = waiting.value("id", int64_t{0});
  BG_ASSERT_OK_AND_ASSIGN(Json rejected, WaitExecutionStatus(f.name, id2, "Rejected", 20s));
  EXPECT_EQ(rejected.value("approved_by", ""), "timeout") << rejected.dump(2);
  EXPECT_NE(rejected.value("reason", "").find("timed out"), std::string::npos) << rejected.dump(2);
  const Json review = rejected["stages"].value("Review", Json::object());
  EXPECT_GE(review.value("duration_ms", int64_t{0}), 3000)
      << "rejected before the 3 s approval timeout: " << rejected.dump(2);
  EXPECT_LT(review.value("duration_ms", int64_t{0}), 8000) << rejected.dump(2);
  BG_ASSERT_OK_AND_ASSIGN(Json st, ApiStatus(f.name));
  EXPECT_EQ(LiveVersion(st), v1) << st.dump(2);
  std::string got;
  EXPECT_TRUE(AllAnswer(f.production_port, "blue\n", 10, &got)) << "production: " << got;

  // on_timeout: approve (the same stack, `up` again with the other action).
  f.on_timeout = "approve";
  BG_ASSERT_OK(PutStack(f));
  BG_ASSERT_OK_AND_ASSIGN(std::string sha3, CommitApp({"yellow"}));
  BG_ASSERT_OK_AND_ASSIGN(Json e3, WaitExecutionOf(f.name, sha3));
  const int64_t id3 = e3.value("id", int64_t{0});
  BG_ASSERT_OK_AND_ASSIGN(Json done, WaitExecutionStatus(f.name, id3, "Succeeded", kExecTimeout));
  EXPECT_EQ(done.value("approved_by", ""), "timeout") << done.dump(2);
  EXPECT_EQ(StageStatus(done, "Review"), "Approved") << done.dump(2);
  EXPECT_GE(done["stages"].value("Review", Json::object()).value("duration_ms", int64_t{0}), 3000)
      << "approved before the 3 s approval timeout: " << done.dump(2);
  EXPECT_TRUE(WaitAllAnswer(f.production_port, "yellow\n", 10, 5s, &got)) << "production: " << got;
}

// ---------------------------------------------------------------------------------------------
// 5. Auto approval

TEST_F(PipelineTest, AutoApproval) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  f.approval_mode = "auto";
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::string v1 = first.value("version", "");

  TimedLoad prod("production", f.production_port, 2);
  prod.Start();
  BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitApp({"green"}));
  BG_ASSERT_OK_AND_ASSIGN(Json e, WaitExecutionOf(f.name, sha));
  const int64_t id = e.value("id", int64_t{0});
  bool ever_waited = false;
  BG_ASSERT_OK_AND_ASSIGN(Json done, WaitExecution(
                                         f.name, id,
                                         [&](const Json& x) {
                                           ever_waited |=
                                               x.value("status", "") == "WaitingForApproval";
                                           return x.value("status", "") == "Succeeded";
                                         },
                                         kExecTimeout, "to succeed"));
  const auto succeeded_seen = Clock::now();
  ASSERT_TRUE(prod.WaitForMore(200, 10s));
  prod.Stop();
  EXPECT_FALSE(ever_waited) << "an auto-approved execution waited for approval";
  EXPECT_EQ(done.value("approved_by", ""), "auto") << done.dump(2);
  EXPECT_EQ(StageStatus(done, "Review"), "Approved") << done.dump(2);
  EXPECT_EQ(StageStatus(done, "Swap"), "Succeeded") << done.dump(2);
  EXPECT_EQ(done.value("from_version", ""), v1) << done.dump(2);
  std::string got;
  EXPECT_TRUE(AllAnswer(f.production_port, "green\n", 10, &got)) << "production: " << got;
  const LoadReport r =
      Analyze(prod.Samples(), succeeded_seen, "green\n", {{"Succeeded was seen", succeeded_seen}});
  std::fprintf(stderr, "[load] production during the auto release: %s\n", r.ToString().c_str());
  EXPECT_EQ(r.failures, 0) << r.ToString();
  EXPECT_EQ(r.after[0].wrong, 0) << r.ToString();
  BG_ASSERT_OK_AND_ASSIGN(Json st, WaitSettled(f.name));
  EXPECT_EQ(TestVersion(st), v1) << st.dump(2);
}

// ---------------------------------------------------------------------------------------------
// Retention: serve --keep-versions

class PipelineRetentionTest : public PipelineHarness {
 protected:
  PipelineRetentionTest() { serve_args_ = {"--keep-versions", "2"}; }
};

// With --keep-versions 2, each build removes the builds beyond the newest two, unless a service
// runs them; a version registered by hand is never touched. A removed version is gone from the
// API with its artifact directory, says so in the events, and can no longer be deployed.
TEST_F(PipelineRetentionTest, KeepsTheNewestBuildsAndThoseInUse) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::string v1 = first.value("version", "");
  // A version registered by hand, older than every later build.
  const std::string manual_dir = art_dir_ + "/manual";
  std::filesystem::create_directories(manual_dir);
  BG_ASSERT_OK_AND_ASSIGN(
      ApiAnswer reg, Api("POST", "/api/v1/stacks/" + f.name + "/versions",
                         Json{{"version", "by-hand"}, {"artifact_dir", manual_dir}}.dump()));
  ASSERT_EQ(reg.status, 201) << reg.body;
  // One registered by hand inside the pipeline's own directory: not a build either.
  const std::string stack_dir = state_dir_ + "/artifacts/" + f.name;
  BG_ASSERT_OK_AND_ASSIGN(
      reg, Api("POST", "/api/v1/stacks/" + f.name + "/versions",
               Json{{"version", "whole-dir"}, {"artifact_dir", stack_dir + "/."}}.dump()));
  ASSERT_EQ(reg.status, 201) << reg.body;

  auto versions = [&] {
    std::map<std::string, std::string> out;  // version -> artifact_dir
    for (const Json& v : Get("/api/v1/stacks/" + f.name + "/versions").value("versions", Json::array())) {
      out[v.value("version", "")] = v.value("artifact_dir", "");
    }
    return out;
  };
  BG_ASSERT_OK_AND_ASSIGN(Json r2, Release(f, {"green"}));
  const std::string v2 = r2.value("version", "");
  const std::string v1_dir = versions()[v1];
  ASSERT_FALSE(v1_dir.empty());
  ASSERT_TRUE(std::filesystem::is_directory(v1_dir)) << v1_dir;
  // A version registered by hand with v2's build directory (spelt differently): v2 stays while
  // it does.
  const std::string v2_dir = versions()[v2];
  BG_ASSERT_OK_AND_ASSIGN(
      reg, Api("POST", "/api/v1/stacks/" + f.name + "/versions",
               Json{{"version", "alias-of-v2"}, {"artifact_dir", v2_dir + "/."}}.dump()));
  ASSERT_EQ(reg.status, 201) << reg.body;

  // v3's build: v1 is beyond the newest two builds but still runs on the test side: kept.
  BG_ASSERT_OK_AND_ASSIGN(Json r3, Release(f, {"red"}));
  const std::string v3 = r3.value("version", "");
  EXPECT_TRUE(versions().contains(v1));
  EXPECT_TRUE(std::filesystem::is_directory(v1_dir)) << v1_dir;

  // v4's build: v1 runs nowhere now (production v3, test v2): removed, with its directory.
  BG_ASSERT_OK_AND_ASSIGN(Json r4, Release(f, {"yellow"}));
  const std::string v4 = r4.value("version", "");
  const std::map<std::string, std::string> left = versions();
  EXPECT_FALSE(left.contains(v1)) << v1;
  EXPECT_FALSE(std::filesystem::exists(v1_dir)) << v1_dir;
  for (const std::string& v : {v2, v3, v4}) {
    ASSERT_TRUE(left.contains(v)) << v;
    EXPECT_TRUE(std::filesystem::is_directory(left.at(v))) << left.at(v);
  }
  for (const char* v : {"by-hand", "whole-dir", "alias-of-v2"}) EXPECT_TRUE(left.contains(v)) << v;
  EXPECT_TRUE(std::filesystem::is_directory(manual_dir));
  // No half-removed directory is left behind.
  for (const auto& entry : std::filesystem::directory_iterator(stack_dir)) {
    EXPECT_FALSE(entry.path().filename().string().starts_with(".removing-")) << entry.path();
  }

  bool said = false;
  for (const Json& ev : Get("/api/v1/stacks/" + f.name + "/events").value("events", Json::array())) {
    const std::string m = ev.value("message", "");
    if (ev.value("kind", "") == "version_removed" && m.find(v1) != std::string::npos &&
        m.find(v1_dir) != std::string::npos) {
      said = true;
    }
  }
  EXPECT_TRUE(said) << "no version_removed event for " << v1;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer deploy, Api("POST", "/api/v1/stacks/" + f.name + "/deploy",
                                                Json{{"version", v1}}.dump()));
  EXPECT_EQ(deploy.status, 404) << deploy.body;
  // Production still serves, and a rollback (to v3, on the test side) still works.
  std::string got;
  EXPECT_TRUE(AllAnswer(f.production_port, "yellow\n", 5, &got)) << got;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer rb, Action(f.name, "rollback"));
  EXPECT_EQ(rb.status, 200) << rb.body;
  EXPECT_TRUE(AllAnswer(f.production_port, "red\n", 5, &got)) << got;

  // v5's build: v2 runs nowhere (production v3, test v4) but alias-of-v2 names its directory.
  BG_ASSERT_OK_AND_ASSIGN(Json r5, Release(f, {"blue"}));
  EXPECT_TRUE(versions().contains(v2));
  EXPECT_TRUE(std::filesystem::is_directory(v2_dir)) << v2_dir;
}

// ---------------------------------------------------------------------------------------------
// 6. Superseding

TEST_F(PipelineTest, Superseding) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::string v1 = first.value("version", "");

  BG_ASSERT_OK_AND_ASSIGN(Json n, PushAndWaitForApproval(f, {"green"}));
  const int64_t id_n = n.value("id", int64_t{0});
  std::string got;
  EXPECT_TRUE(AllAnswer(f.test_port, "green\n", 5, &got)) << "test: " << got;

  BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitApp({"yellow"}));
  BG_ASSERT_OK_AND_ASSIGN(Json next, WaitExecutionOf(f.name, sha));
  const int64_t id_next = next.value("id", int64_t{0});
  EXPECT_EQ(id_next, id_n + 1);
  BG_ASSERT_OK_AND_ASSIGN(Json superseded, WaitExecutionStatus(f.name, id_n, "Superseded"));
  EXPECT_NE(superseded.value("reason", "").find("execution " + std::to_string(id_next)),
            std::string::npos)
      << "the reason does not name execution " << id_next << ": " << superseded.dump(2);
  EXPECT_EQ(StageStatus(superseded, "Review"), "Superseded") << superseded.dump(2);
  BG_ASSERT_OK_AND_ASSIGN(
      Json waiting, WaitExecution(
                        f.name, id_next,
                        [](const Json& x) { return x.value("status", "") == "WaitingForApproval"; },
                        kExecTimeout, "to wait for approval"));
  const std::string v3 = waiting.value("version", "");
  BG_ASSERT_OK_AND_ASSIGN(Json st, ApiStatus(f.name));
  EXPECT_EQ(TestVersion(st), v3) << st.dump(2);
  EXPECT_EQ(LiveVersion(st), v1) << st.dump(2);
  EXPECT_TRUE(AllAnswer(f.test_port, "yellow\n", 10, &got)) << "test: " << got;
  EXPECT_TRUE(AllAnswer(f.production_port, "blue\n", 10, &got)) << "production: " << got;

  // Approving acts on N+1, which goes live; N stays Superseded.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Action(f.name, "approve"));
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.json["execution"].value("id", int64_t{0}), id_next) << a.body;
  BG_ASSERT_OK_AND_ASSIGN(Json done, WaitExecutionStatus(f.name, id_next, "Succeeded"));
  EXPECT_EQ(done.value("from_version", ""), v1) << done.dump(2);
  EXPECT_TRUE(WaitAllAnswer(f.production_port, "yellow\n", 10, 5s, &got)) << "production: " << got;
  BG_ASSERT_OK_AND_ASSIGN(Json n_after, Execution(f.name, id_n));
  EXPECT_EQ(n_after.value("status", ""), "Superseded") << n_after.dump(2);
  BG_ASSERT_OK_AND_ASSIGN(st, WaitSettled(f.name));
  EXPECT_EQ(LiveVersion(st), v3) << st.dump(2);
  EXPECT_EQ(TestVersion(st), v1) << st.dump(2);
}

// ---------------------------------------------------------------------------------------------
// The original's bug: the deploy of the next build decided its side outside the deploy/approve/
// swap lock, so it could land on the side that had just become live. Here execution N is approved
// while N+1 builds; N+1 then deploys to the side N left, behind the test listener, and production
// keeps serving N.

TEST_F(PipelineTest, ApproveWhileNextBuilds) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK(FirstRun(f, {"blue"}).status());
  BG_ASSERT_OK_AND_ASSIGN(Json n, PushAndWaitForApproval(f, {"green"}));
  const int64_t id_n = n.value("id", int64_t{0});

  LoadGenerator prod("production", f.production_port, 2, 2ms);
  prod.Start();
  App next{"yellow"};
  next.build_sh = "#!/bin/sh\necho \"building $BLUEGREEN_VERSION slowly\"\nsleep 2\n";
  BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitApp(next));
  BG_ASSERT_OK_AND_ASSIGN(Json e, WaitExecutionOf(f.name, sha));
  const int64_t id_next = e.value("id", int64_t{0});
  BG_ASSERT_OK(WaitExecution(
                   f.name, id_next, [](const Json& x) { return x.value("stage", "") == "Build"; },
                   20s, "to be building")
                   .status());
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Action(f.name, "approve"));
  ASSERT_EQ(a.status, 200) << a.body;
  BG_ASSERT_OK_AND_ASSIGN(Json done, WaitExecutionStatus(f.name, id_n, "Succeeded"));
  const auto swapped = prod.Snapshot();
  BG_ASSERT_OK_AND_ASSIGN(
      Json waiting, WaitExecution(
                        f.name, id_next,
                        [](const Json& x) { return x.value("status", "") == "WaitingForApproval"; },
                        kExecTimeout, "to wait for approval"));
  BG_ASSERT_OK_AND_ASSIGN(Json st, WaitSettled(f.name));
  ASSERT_TRUE(prod.WaitForMore(prod.Snapshot(), 100, 10s));
  prod.Stop();
  const auto after_swap = prod.Snapshot().Minus(swapped);
  PrintLoad("production while the next build deployed after a swap", prod.Snapshot());
  EXPECT_EQ(prod.Snapshot().failures, 0) << prod.Snapshot().ToString();
  EXPECT_EQ(prod.Snapshot().Body("yellow\n"), 0)
      << "the unapproved build reached production: " << prod.Snapshot().ToString();
  EXPECT_EQ(after_swap.Others("green\n"), "") << after_swap.ToString();
  EXPECT_EQ(st.value("live", ""), "Code2") << st.dump(2);
  EXPECT_EQ(waiting.value("deploy_services", ""), "Code1") << waiting.dump(2);
  EXPECT_EQ(LiveVersion(st), done.value("version", "")) << st.dump(2);
  EXPECT_EQ(TestVersion(st), waiting.value("version", "")) << st.dump(2);
  std::string got;
  EXPECT_TRUE(AllAnswer(f.production_port, "green\n", 10, &got)) << "production: " << got;
  EXPECT_TRUE(AllAnswer(f.test_port, "yellow\n", 10, &got)) << "test: " << got;
}

// ---------------------------------------------------------------------------------------------
// 7. A failing build

TEST_F(PipelineTest, FailingBuild) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::string v1 = first.value("version", "");
  BG_ASSERT_OK_AND_ASSIGN(Json before, WaitSettled(f.name));

  App broken{"green"};
  broken.build_sh =
      "#!/bin/sh\necho \"compiling the green one\"\necho \"error: BROKEN-BUILD-4711\" >&2\n"
      "exit 1\n";
  BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitApp(broken, "Break the build"));
  BG_ASSERT_OK_AND_ASSIGN(Json e, WaitExecutionOf(f.name, sha));
  const int64_t id = e.value("id", int64_t{0});
  BG_ASSERT_OK_AND_ASSIGN(Json failed, WaitExecutionStatus(f.name, id, "Failed"));
  EXPECT_EQ(failed.value("stage", ""), "Build") << failed.dump(2);
  EXPECT_EQ(StageStatus(failed, "Build"), "Failed") << failed.dump(2);
  EXPECT_EQ(StageStatus(failed, "Deploy"), "") << failed.dump(2);
  EXPECT_NE(failed.value("reason", "").find("./build.sh"), std::string::npos)
      << "the reason does not name the command: " << failed.dump(2);
  EXPECT_NE(failed.value("reason", "").find("status 1"), std::string::npos) << failed.dump(2);

  auto log = Api("GET", "/api/v1/stacks/" + f.name + "/executions/" + std::to_string(id) + "/log");
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_EQ(log->status, 200) << log->body;
  EXPECT_NE(log->body.find("compiling the green one"), std::string::npos) << log->body;
  EXPECT_NE(log->body.find("error: BROKEN-BUILD-4711"), std::string::npos) << log->body;
  auto latest = Api("GET", "/api/v1/stacks/" + f.name + "/executions/latest/log");
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->body, log->body);
  {
    // The follow protocol: X-Execution, X-Log-Offset, X-Log-Complete, ?offset=.
    HttpClientRequest req;
    req.target = "/api/v1/stacks/" + f.name + "/executions/" + std::to_string(id) + "/log?offset=5";
    req.headers.emplace_back("Authorization", "Bearer " + token_);
    auto part = HttpCall(ApiAddress(), req, 10s);
    ASSERT_TRUE(part.ok()) << part.status().ToString();
    EXPECT_EQ(part->status, 200);
    EXPECT_EQ(part->body, log->body.substr(5));
    EXPECT_EQ(part->Header("X-Execution"), std::to_string(id));
    EXPECT_EQ(part->Header("X-Log-Offset"), std::to_string(log->body.size()));
    EXPECT_EQ(part->Header("X-Log-Complete"), "true");
  }

  // Nothing deployed: same versions, same tasks, no rollout; no version registered.
  std::this_thread::sleep_for(1500ms);  // a few reconciler passes: nothing to wait for
  BG_ASSERT_OK_AND_ASSIGN(Json st, WaitSettled(f.name));
  EXPECT_EQ(ServiceVersion(st, "Code1"), v1) << st.dump(2);
  EXPECT_EQ(ServiceVersion(st, "Code2"), v1) << st.dump(2);
  EXPECT_EQ(TaskIdentities(st), TaskIdentities(before))
      << "tasks changed after a failed build: before " << SetToString(TaskIdentities(before))
      << ", after " << SetToString(TaskIdentities(st));
  auto versions = Api("GET", "/api/v1/stacks/" + f.name + "/versions");
  ASSERT_TRUE(versions.ok());
  EXPECT_EQ(versions->body.find(failed.value("version", "?")), std::string::npos)
      << "the failed build registered a version: " << versions->body;
  std::string got;
  EXPECT_TRUE(AllAnswer(f.production_port, "blue\n", 10, &got)) << "production: " << got;
  EXPECT_TRUE(AllAnswer(f.test_port, "blue\n", 10, &got)) << "test: " << got;

  // A fixed build goes on.
  BG_ASSERT_OK_AND_ASSIGN(Json fixed, PushAndWaitForApproval(f, {"green"}));
  EXPECT_EQ(fixed.value("id", int64_t{0}), id + 1);
}

// ---------------------------------------------------------------------------------------------
// 8. A buildspec.yml build

TEST_F(PipelineTest, BuildspecBuild) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  f.build_commands.clear();
  BG_ASSERT_OK(InitRepo());
  const std::string buildspec =
      "version: 0.2\n"
      "env:\n"
      "  variables:\n"
      "    COLOUR: teal\n"
      "    SUFFIX: \"-from-buildspec\"\n"
      "phases:\n"
      "  install:\n"
      "    commands:\n"
      "      - mkdir -p out\n"
      "  pre_build:\n"
      "    commands:\n"
      "      - echo \"pre_build of $CODEBUILD_RESOLVED_SOURCE_VERSION\"\n"
      "  build:\n"
      "    commands:\n"
      "      - cp src/run.sh out/run.sh\n"
      "      - echo \"${COLOUR}${SUFFIX}-$CODEBUILD_BUILD_NUMBER\" > out/name.txt\n"
      "  post_build:\n"
      "    commands:\n"
      "      - chmod 755 out/run.sh\n"
      "      - echo post_build done\n"
      "artifacts:\n"
      "  files:\n"
      "    - '**/*'\n"
      "  base-directory: out\n";
  BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitAndPush({{"buildspec.yml", buildspec},
                                                          {"src/run.sh", RunScript({"unused"})}},
                                                         "Build with a buildspec"));
  BG_ASSERT_OK(PutStack(f));
  BG_ASSERT_OK_AND_ASSIGN(Json e, WaitExecutionOf(f.name, sha));
  BG_ASSERT_OK_AND_ASSIGN(Json done,
                          WaitExecutionStatus(f.name, e.value("id", int64_t{0}), "Succeeded"));
  BG_ASSERT_OK_AND_ASSIGN(Json st, WaitSettled(f.name));
  const std::string version = done.value("version", "");
  EXPECT_EQ(ServiceVersion(st, "Code1"), version);
  EXPECT_EQ(ServiceVersion(st, "Code2"), version);
  std::string got;
  EXPECT_TRUE(AllAnswer(f.production_port, "teal-from-buildspec-1\n", 10, &got))
      << "production: " << got;
  EXPECT_TRUE(AllAnswer(f.test_port, "teal-from-buildspec-1\n", 10, &got)) << "test: " << got;

  // The artifact is base-directory's content only.
  auto versions = Api("GET", "/api/v1/stacks/" + f.name + "/versions");
  ASSERT_TRUE(versions.ok());
  const Json v = FindNamed(versions->json.value("versions", Json::array()), "version", version);
  ASSERT_TRUE(v.is_object()) << versions->body;
  std::set<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(v.value("artifact_dir", "/none"))) {
    files.insert(entry.path().filename().string());
  }
  EXPECT_EQ(files, (std::set<std::string>{"run.sh", "name.txt"})) << SetToString(files);

  auto log = Api("GET", "/api/v1/stacks/" + f.name + "/executions/1/log");
  ASSERT_TRUE(log.ok());
  EXPECT_NE(log->body.find("pre_build of " + sha), std::string::npos) << log->body;
  EXPECT_NE(log->body.find("post_build done"), std::string::npos) << log->body;
}

// ---------------------------------------------------------------------------------------------
// 9. An unhealthy version fails the deploy

TEST_F(PipelineTest, UnhealthyVersionFailsDeploy) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  f.deploy_timeout = "5s";
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::string v1 = first.value("version", "");
  BG_ASSERT_OK_AND_ASSIGN(Json before, WaitSettled(f.name));

  LoadGenerator prod("production", f.production_port, 2, 2ms);
  prod.Start();
  App sick{"green"};
  sick.backend_args = "--health-status 503";
  BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitApp(sick, "A version that never gets healthy"));
  BG_ASSERT_OK_AND_ASSIGN(Json e, WaitExecutionOf(f.name, sha));
  const int64_t id = e.value("id", int64_t{0});
  BG_ASSERT_OK_AND_ASSIGN(Json failed, WaitExecutionStatus(f.name, id, "Failed", 40s));
  EXPECT_EQ(failed.value("stage", ""), "Deploy") << failed.dump(2);
  EXPECT_EQ(StageStatus(failed, "Deploy"), "Failed") << failed.dump(2);
  EXPECT_EQ(StageStatus(failed, "Review"), "") << failed.dump(2);
  EXPECT_NE(failed.value("reason", "").find("deploy"), std::string::npos) << failed.dump(2);
  std::string got;
  EXPECT_TRUE(AllAnswer(f.production_port, "blue\n", 10, &got)) << "production: " << got;

  // The test side still runs the previous version: the old tasks kept serving.
  BG_ASSERT_OK_AND_ASSIGN(Json st, WaitSettled(f.name));
  prod.Stop();
  PrintLoad("production during the failed deploy", prod.Snapshot());
  EXPECT_EQ(prod.Snapshot().failures, 0) << prod.Snapshot().ToString();
  EXPECT_EQ(prod.Snapshot().Others("blue\n"), "") << prod.Snapshot().ToString();
  EXPECT_EQ(st.value("live", ""), "Code1") << st.dump(2);
  EXPECT_EQ(ServiceVersion(st, "Code1"), v1) << st.dump(2);
  EXPECT_EQ(ServiceVersion(st, "Code2"), v1) << st.dump(2);
  EXPECT_EQ(Tasks(st, "Code2", failed.value("version", "?")).size(), 0u)
      << "tasks of the failed version are left: " << st.dump(2);
  EXPECT_EQ(TaskIdentities(st), TaskIdentities(before))
      << "the old tasks did not keep serving: before " << SetToString(TaskIdentities(before))
      << ", after " << SetToString(TaskIdentities(st));
  EXPECT_TRUE(AllAnswer(f.test_port, "blue\n", 10, &got)) << "test: " << got;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Action(f.name, "approve"));
  EXPECT_EQ(a.status, 409) << a.body;

  // The next good commit deploys normally.
  BG_ASSERT_OK_AND_ASSIGN(Json next, PushAndWaitForApproval(f, {"yellow"}));
  EXPECT_TRUE(AllAnswer(f.test_port, "yellow\n", 10, &got)) << "test: " << got;
}

// ---------------------------------------------------------------------------------------------
// 10. Rollback under load

TEST_F(PipelineTest, RollbackUnderLoad) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::string v1 = first.value("version", "");
  BG_ASSERT_OK_AND_ASSIGN(Json second, Release(f, {"green"}));
  const std::string v2 = second.value("version", "");
  std::string got;
  ASSERT_TRUE(AllAnswer(f.production_port, "green\n", 5, &got)) << got;

  for (const auto& [to_version, to_colour] :
       {std::pair{v1, std::string("blue\n")}, std::pair{v2, std::string("green\n")}}) {
    SCOPED_TRACE("rollback to " + to_version);
    TimedLoad prod("production", f.production_port);
    prod.Start();
    ASSERT_TRUE(prod.WaitForMore(300, 10s));
    const auto sent = Clock::now();
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Action(f.name, "rollback", "back to " + to_version));
    const auto answered = Clock::now();
    const std::string right_after = FetchBody(f.production_port);
    // docs/api.md: like approve, a rollback answers once the swap is done (202 only after 60 s).
    ASSERT_EQ(a.status, 200) << a.body;
    const Json& ex = a.json["execution"];
    EXPECT_EQ(ex.value("status", ""), "Succeeded") << a.body;
    EXPECT_EQ(right_after, to_colour) << "a fresh GET on production right after the rollback "
                                         "answered";
    EXPECT_EQ(ex.value("kind", ""), "rollback") << a.body;
    EXPECT_EQ(ex.value("trigger", ""), "rollback") << a.body;
    EXPECT_EQ(ex.value("version", ""), to_version) << a.body;
    const int64_t id = ex.value("id", int64_t{0});
    BG_ASSERT_OK_AND_ASSIGN(Json done, WaitExecutionStatus(f.name, id, "Succeeded", 30s));
    const auto succeeded_seen = Clock::now();
    ASSERT_TRUE(prod.WaitForMore(500, 10s));
    std::this_thread::sleep_for(300ms);  // more load after the swap: nothing to wait for
    prod.Stop();
    EXPECT_EQ(done.value("approved_by", ""), "admin") << done.dump(2);
    EXPECT_EQ(done.value("comment", ""), "back to " + to_version) << done.dump(2);
    EXPECT_EQ(StageStatus(done, "Swap"), "Succeeded") << done.dump(2);
    EXPECT_TRUE(AllAnswer(f.production_port, to_colour, 20, &got)) << "production: " << got;

    const LoadReport r = Analyze(prod.Samples(), sent, to_colour,
                                 {{"the rollback answered", answered},
                                  {"the execution was seen Succeeded", succeeded_seen}});
    std::fprintf(stderr, "[load] production during the rollback to %s: %s\n", to_version.c_str(),
                 r.ToString().c_str());
    EXPECT_EQ(r.failures, 0) << r.ToString();
    EXPECT_GT(r.after[1].sent, 100) << r.ToString();
    EXPECT_EQ(r.after[1].wrong, 0)
        << "production answered the old version after the rollback was recorded: " << r.ToString();
    EXPECT_EQ(r.after[0].wrong, 0)
        << "production answered the old version to requests sent after POST /rollback answered: "
        << r.ToString();
    BG_ASSERT_OK_AND_ASSIGN(Json st, WaitSettled(f.name));
    EXPECT_EQ(LiveVersion(st), to_version) << st.dump(2);
    EXPECT_EQ(TestVersion(st), to_version == v1 ? v2 : v1) << st.dump(2);
  }
}

// ---------------------------------------------------------------------------------------------
// 11. The webhook

TEST_F(PipelineTest, Webhook) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  f.poll_interval = "1h";  // the first poll happens at `up`; then only the webhook starts builds
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::string secret = "wh-s3cret-Q7f9zK2pXv";
  {
    // No secret set yet: every webhook call is refused, signed or not.
    const std::string body =
        R"({"ref": "refs/heads/main", "after": ")" + std::string(40, 'a') + R"("})";
    HttpClientRequest req;
    req.method = "POST";
    req.target = "/api/v1/stacks/" + f.name + "/webhook";
    req.body = body;
    req.headers.emplace_back("X-Hub-Signature-256", "sha256=" + HmacSha256Hex("", body));
    auto r = HttpCall(ApiAddress(), req, 10s);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 401) << "a webhook call without a secret set: " << r->body;
  }
  BG_ASSERT_OK_AND_ASSIGN(
      ApiAnswer put, Api("PUT", "/api/v1/stacks/" + f.name + "/secrets/webhook_secret", secret));
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(put.body.find(secret), std::string::npos) << put.body;
  struct stat sb {};
  ASSERT_EQ(::stat((state_dir_ + "/secrets/" + f.name + "/webhook_secret").c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);

  BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitApp({"green"}));
  auto payload = [&](const std::string& ref, const std::string& after) {
    return Json{{"ref", ref},
                {"before", std::string(40, '0')},
                {"after", after},
                {"repository", {{"full_name", "example/app"}}},
                {"pusher", {{"name", "T"}}},
                {"head_commit", {{"id", after}, {"message", "Make it green"}}}}
        .dump();
  };
  auto hook = [&](const std::string& body,
                  std::optional<std::string> signature) -> Result<HttpClientResponse> {
    HttpClientRequest req;
    req.method = "POST";
    req.target = "/api/v1/stacks/" + f.name + "/webhook";
    req.body = body;
    req.headers.emplace_back("Content-Type", "application/json");
    req.headers.emplace_back("X-GitHub-Event", "push");
    if (signature) req.headers.emplace_back("X-Hub-Signature-256", *signature);
    return HttpCall(ApiAddress(), req, 10s);
  };
  const std::string good = payload("refs/heads/main", sha);
  auto count_executions = [&]() -> size_t {
    auto l = Executions(f.name);
    return l.ok() ? l->size() : 0;
  };
  ASSERT_EQ(count_executions(), 1u);

  // Missing, wrong, and signed with another key: 401, nothing started.
  BG_ASSERT_OK_AND_ASSIGN(HttpClientResponse none, hook(good, std::nullopt));
  EXPECT_EQ(none.status, 401) << none.body;
  BG_ASSERT_OK_AND_ASSIGN(HttpClientResponse wrong, hook(good, "sha256=" + std::string(64, 'a')));
  EXPECT_EQ(wrong.status, 401) << wrong.body;
  BG_ASSERT_OK_AND_ASSIGN(HttpClientResponse other_key,
                          hook(good, "sha256=" + HmacSha256Hex("not-the-secret", good)));
  EXPECT_EQ(other_key.status, 401) << other_key.body;
  BG_ASSERT_OK_AND_ASSIGN(
      HttpClientResponse tampered,
      hook(payload("refs/heads/main", sha) + " ", "sha256=" + HmacSha256Hex(secret, good)));
  EXPECT_EQ(tampered.status, 401) << "a body that is not the signed one: " << tampered.body;
  BG_ASSERT_OK_AND_ASSIGN(HttpClientResponse bare_hex, hook(good, HmacSha256Hex(secret, good)));
  EXPECT_EQ(bare_hex.status, 401) << "a signature without `sha256=`: " << bare_hex.body;
  std::this_thread::sleep_for(1500ms);  // an execution would show up at once: nothing to wait for
  EXPECT_EQ(count_executions(), 1u) << "a bad signature started an execution";

  // A push to another branch: 200, ignored.
  const std::string other_branch = payload("refs/heads/feature", sha);
  BG_ASSERT_OK_AND_ASSIGN(HttpClientResponse ignored,
                          hook(other_branch, "sha256=" + HmacSha256Hex(secret, other_branch)));
  EXPECT_EQ(ignored.status, 200) << ignored.body;
  EXPECT_EQ(Json::parse(ignored.body, nullptr, false), (Json{{"ignored", true}})) << ignored.body;
  EXPECT_EQ(count_executions(), 1u);

  // The good one: 202 and an execution of that commit, triggered by the webhook.
  BG_ASSERT_OK_AND_ASSIGN(HttpClientResponse ok,
                          hook(good, "sha256=" + HmacSha256Hex(secret, good)));
  ASSERT_EQ(ok.status, 202) << ok.body;
  const Json okj = Json::parse(ok.body, nullptr, false);
  ASSERT_TRUE(okj.is_object() && okj.contains("execution")) << ok.body;
  EXPECT_EQ(okj["execution"].value("trigger", ""), "webhook") << ok.body;
  EXPECT_EQ(okj["execution"].value("commit", ""), sha) << ok.body;
  const int64_t id = okj["execution"].value("id", int64_t{0});
  EXPECT_EQ(id, 2);
  BG_ASSERT_OK_AND_ASSIGN(
      Json waiting,
      WaitExecution(
          f.name, id, [](const Json& x) { return x.value("status", "") == "WaitingForApproval"; },
          kExecTimeout, "to wait for approval"));
  EXPECT_EQ(waiting.value("version", ""), std::to_string(id) + "-" + sha.substr(0, 7));
  std::string got;
  EXPECT_TRUE(AllAnswer(f.test_port, "green\n", 5, &got)) << "test: " << got;

  // The same push again (GitHub redelivers): ignored, no second execution.
  BG_ASSERT_OK_AND_ASSIGN(HttpClientResponse again,
                          hook(good, "sha256=" + HmacSha256Hex(secret, good)));
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(count_executions(), 2u);

  // The secret appears nowhere.
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer events, Api("GET", "/api/v1/stacks/" + f.name + "/events"));
  EXPECT_EQ(events.body.find(secret), std::string::npos) << events.body;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer execs, Api("GET", "/api/v1/stacks/" + f.name + "/executions"));
  EXPECT_EQ(execs.body.find(secret), std::string::npos);
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer status, Api("GET", "/api/v1/stacks/" + f.name));
  EXPECT_EQ(status.body.find(secret), std::string::npos);
  EXPECT_EQ(serve_->Stderr().find(secret), std::string::npos) << "serve logged the secret";
  auto log = Api("GET", "/api/v1/stacks/" + f.name + "/executions/2/log");
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(log->body.find(secret), std::string::npos) << log->body;
}

// ---------------------------------------------------------------------------------------------
// GitHub sends a push event with "deleted": true and "after" = 40 zeros when a branch is
// deleted. That is no new commit: ignored, nothing started.

TEST_F(PipelineTest, WebhookIgnoresBranchDeletion) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  f.poll_interval = "1h";
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::string secret = "another-webhook-secret";
  BG_ASSERT_OK_AND_ASSIGN(
      ApiAnswer put, Api("PUT", "/api/v1/stacks/" + f.name + "/secrets/webhook_secret", secret));
  ASSERT_EQ(put.status, 200) << put.body;
  const std::string body = Json{
      {"ref", "refs/heads/main"},
      {"before", first.value("commit", "")},
      {"after", std::string(40, '0')},
      {"created", false},
      {"deleted", true},
      {"head_commit", nullptr}}.dump();
  HttpClientRequest req;
  req.method = "POST";
  req.target = "/api/v1/stacks/" + f.name + "/webhook";
  req.body = body;
  req.headers.emplace_back("X-GitHub-Event", "push");
  req.headers.emplace_back("X-Hub-Signature-256", "sha256=" + HmacSha256Hex(secret, body));
  auto r = HttpCall(ApiAddress(), req, 10s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::this_thread::sleep_for(1500ms);  // an execution would show up at once: nothing to wait for
  BG_ASSERT_OK_AND_ASSIGN(Json list, Executions(f.name));
  EXPECT_EQ(r->status, 200) << "a branch deletion started an execution: " << r->body
                            << "\nexecutions: " << list.dump(2);
  EXPECT_EQ(list.size(), 1u) << list.dump(2);
}

// ---------------------------------------------------------------------------------------------
// 12. SIGKILL of serve in each stage

TEST_F(PipelineTest, CrashInEachStage) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  f.build_commands = {"./build.sh", "sleep 3"};
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::string v1 = first.value("version", "");
  std::string got;

  auto restart = [&](const std::string& what) {
    KillServe();
    std::fprintf(stderr, "[crash] serve killed %s\n", what.c_str());
    BG_EXPECT_OK(StartServe());
  };

  // Build: the execution starts its build again and goes on to Review.
  int64_t id2 = 0;
  std::string v2;
  {
    SCOPED_TRACE("crash in Build");
    BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitApp({"green"}));
    BG_ASSERT_OK_AND_ASSIGN(Json e, WaitExecutionOf(f.name, sha));
    id2 = e.value("id", int64_t{0});
    BG_ASSERT_OK(WaitExecution(
                     f.name, id2,
                     [](const Json& x) {
                       return x.value("stage", "") == "Build" &&
                              StageStatus(x, "Build") == "InProgress";
                     },
                     30s, "to be building")
                     .status());
    // Into the `sleep 3`, so the kill hits a running command.
    const std::string log_path =
        state_dir_ + "/logs/" + f.name + "/execution-" + std::to_string(id2) + ".log";
    ASSERT_TRUE(WaitUntil(
        [&] {
          auto log = ReadFile(log_path);
          return log.ok() && log->find("$ sleep 3") != std::string::npos;
        },
        20s))
        << "the build never reached `sleep 3`";
    BG_ASSERT_OK_AND_ASSIGN(Json at_kill, Execution(f.name, id2));
    ASSERT_EQ(at_kill.value("stage", ""), "Build") << at_kill.dump(2);
    restart("in Build");
    BG_ASSERT_OK_AND_ASSIGN(
        Json waiting,
        WaitExecution(
            f.name, id2,
            [](const Json& x) { return x.value("status", "") == "WaitingForApproval"; },
            kExecTimeout, "to wait for approval after restart"));
    v2 = waiting.value("version", "");
    BG_ASSERT_OK_AND_ASSIGN(Json list, WaitNoneStuck(f.name));
    EXPECT_EQ(list.size(), 2u) << "the restart started another execution: " << list.dump(2);
    auto log =
        Api("GET", "/api/v1/stacks/" + f.name + "/executions/" + std::to_string(id2) + "/log");
    ASSERT_TRUE(log.ok());
    size_t runs = 0;
    for (size_t pos = log->body.find("$ ./build.sh"); pos != std::string::npos;
         pos = log->body.find("$ ./build.sh", pos + 1)) {
      ++runs;
    }
    EXPECT_EQ(runs, 2u) << "the build did not run again after the restart: " << log->body;
    EXPECT_TRUE(AllAnswer(f.test_port, "green\n", 10, &got)) << "test: " << got;
    EXPECT_TRUE(AllAnswer(f.production_port, "blue\n", 10, &got)) << "production: " << got;
  }

  // Review: still waiting after the restart; approve works.
  {
    SCOPED_TRACE("crash in Review");
    restart("in Review");
    std::this_thread::sleep_for(1500ms);  // a few reconciler passes: nothing to wait for
    BG_ASSERT_OK_AND_ASSIGN(Json e, Execution(f.name, id2));
    EXPECT_EQ(e.value("status", ""), "WaitingForApproval") << e.dump(2);
    EXPECT_EQ(e.value("stage", ""), "Review") << e.dump(2);
    BG_ASSERT_OK_AND_ASSIGN(Json list, WaitNoneStuck(f.name));
    BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Action(f.name, "approve", "after a crash"));
    ASSERT_EQ(a.status, 200) << a.body;
    BG_ASSERT_OK_AND_ASSIGN(Json done, WaitExecutionStatus(f.name, id2, "Succeeded", 30s));
    EXPECT_TRUE(WaitAllAnswer(f.production_port, "green\n", 10, 5s, &got)) << "production: " << got;
    BG_ASSERT_OK(WaitSettled(f.name).status());
  }

  // Swap: too quick to hit; after a successful swap a restart must not swap again.
  {
    SCOPED_TRACE("crash after Swap");
    BG_ASSERT_OK_AND_ASSIGN(Json before, ApiStatus(f.name));
    restart("after Swap");
    TimedLoad prod("production", f.production_port, 2);
    prod.Start();
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(5s);  // watching production for 5 s: nothing to wait for
    prod.Stop();
    const LoadReport r = Analyze(prod.Samples(), t0, "green\n", {{"the restart", t0}});
    std::fprintf(stderr, "[load] production after a restart following the swap: %s\n",
                 r.ToString().c_str());
    EXPECT_EQ(r.failures, 0) << r.ToString();
    EXPECT_EQ(r.after[0].wrong, 0) << "production changed after the restart: " << r.ToString();
    EXPECT_GT(r.after[0].sent, 100) << r.ToString();
    BG_ASSERT_OK_AND_ASSIGN(Json e, Execution(f.name, id2));
    EXPECT_EQ(e.value("status", ""), "Succeeded") << e.dump(2);
    BG_ASSERT_OK_AND_ASSIGN(Json st, ApiStatus(f.name));
    EXPECT_EQ(st.value("live", ""), before.value("live", "")) << st.dump(2);
    EXPECT_EQ(LiveVersion(st), v2) << st.dump(2);
    EXPECT_EQ(TestVersion(st), v1) << st.dump(2);
    EXPECT_EQ(TaskIdentities(st), TaskIdentities(before))
        << "tasks were replaced by the restart: before " << SetToString(TaskIdentities(before))
        << ", after " << SetToString(TaskIdentities(st));
    BG_ASSERT_OK_AND_ASSIGN(Json list, WaitNoneStuck(f.name));
    EXPECT_EQ(list.size(), 2u) << list.dump(2);
  }

  // Deploy: slow to get healthy (run.sh sleeps); the rollout completes after the restart.
  {
    SCOPED_TRACE("crash in Deploy");
    App slow{"yellow"};
    slow.start_delay_s = 2;
    BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitApp(slow));
    BG_ASSERT_OK_AND_ASSIGN(Json e, WaitExecutionOf(f.name, sha));
    const int64_t id3 = e.value("id", int64_t{0});
    BG_ASSERT_OK(WaitExecution(
                     f.name, id3,
                     [](const Json& x) {
                       return x.value("stage", "") == "Deploy" &&
                              StageStatus(x, "Deploy") == "InProgress";
                     },
                     30s, "to be deploying")
                     .status());
    std::this_thread::sleep_for(500ms);  // let the new tasks start: a kill mid-rollout
    BG_ASSERT_OK_AND_ASSIGN(Json mid, ApiStatus(f.name));
    BG_ASSERT_OK_AND_ASSIGN(Json at_kill, Execution(f.name, id3));
    ASSERT_EQ(at_kill.value("stage", ""), "Deploy") << at_kill.dump(2);
    ASSERT_EQ(StageStatus(at_kill, "Deploy"), "InProgress") << at_kill.dump(2);
    restart("in Deploy");
    BG_ASSERT_OK_AND_ASSIGN(
        Json waiting,
        WaitExecution(
            f.name, id3,
            [](const Json& x) { return x.value("status", "") == "WaitingForApproval"; },
            kExecTimeout, "to wait for approval after restart"));
    BG_ASSERT_OK_AND_ASSIGN(Json list, WaitNoneStuck(f.name));
    EXPECT_EQ(list.size(), 3u) << list.dump(2);
    BG_ASSERT_OK_AND_ASSIGN(Json st, WaitSettled(f.name));
    EXPECT_EQ(TestVersion(st), waiting.value("version", "")) << st.dump(2);
    EXPECT_EQ(LiveVersion(st), v2) << st.dump(2);
    EXPECT_TRUE(AllAnswer(f.test_port, "yellow\n", 10, &got)) << "test: " << got;
    EXPECT_TRUE(AllAnswer(f.production_port, "green\n", 10, &got)) << "production: " << got;
    std::fprintf(stderr, "[crash] stack when serve was killed in Deploy:\n%s\n",
                 mid.value("services", Json()).dump().c_str());
  }
}

// ---------------------------------------------------------------------------------------------
// POST .../release: an execution of the branch head now, even of a commit built before.

TEST_F(PipelineTest, ReleaseBuildsTheHeadAgain) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Action(f.name, "release"));
  ASSERT_EQ(a.status, 202) << a.body;
  const Json& e = a.json["execution"];
  EXPECT_EQ(e.value("trigger", ""), "release") << a.body;
  EXPECT_EQ(e.value("kind", ""), "release") << a.body;
  const int64_t id = e.value("id", int64_t{0});
  EXPECT_EQ(id, 2) << a.body;
  BG_ASSERT_OK_AND_ASSIGN(
      Json waiting,
      WaitExecution(
          f.name, id, [](const Json& x) { return x.value("status", "") == "WaitingForApproval"; },
          kExecTimeout, "to wait for approval"));
  const std::string sha = first.value("commit", "");
  EXPECT_EQ(waiting.value("commit", ""), sha) << waiting.dump(2);
  EXPECT_EQ(waiting.value("version", ""), "2-" + sha.substr(0, 7)) << waiting.dump(2);
  ExpectExecutionShape(waiting);
  BG_ASSERT_OK_AND_ASSIGN(Json st, WaitSettled(f.name));
  EXPECT_EQ(TestVersion(st), waiting.value("version", "")) << st.dump(2);
  EXPECT_EQ(LiveVersion(st), first.value("version", "")) << st.dump(2);
  std::string got;
  EXPECT_TRUE(AllAnswer(f.production_port, "blue\n", 5, &got)) << got;

  // A stack without source has no pipeline: 409.
  StackFile plain;
  plain.name = "plain";
  BG_ASSERT_OK_AND_ASSIGN(plain.production_port, PickFreePort());
  BG_ASSERT_OK_AND_ASSIGN(plain.test_port, PickFreePort());
  stacks_.insert(plain.name);
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer put, Api("PUT", "/api/v1/stacks/plain", plain.ToYaml()));
  ASSERT_EQ(put.status, 201) << put.body;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer no_source, Action("plain", "release"));
  EXPECT_EQ(no_source.status, 409) << no_source.body;
}

// ---------------------------------------------------------------------------------------------
// SIGKILL of serve while POST /approve is in flight (it answers once the swap is done), at delays
// that fall before the approval is recorded, between it and the swap, and after the swap. After
// the restart the execution is either still waiting (the approval was lost: approve again) or
// goes on to Succeeded; production serves the approved version, and the swap happened once.

TEST_F(PipelineTest, CrashDuringApprove) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::vector<std::string> colours = {"green", "yellow", "red", "white", "black"};
  const std::vector<int> delays_us = {0, 2000, 5000, 10000, 30000};
  std::string live_colour = "blue";
  std::string live_side = "Code1";
  for (size_t i = 0; i < colours.size(); ++i) {
    SCOPED_TRACE("kill " + std::to_string(delays_us[i]) + " us after sending the approve");
    BG_ASSERT_OK_AND_ASSIGN(Json waiting, PushAndWaitForApproval(f, App(colours[i].c_str())));
    const int64_t id = waiting.value("id", int64_t{0});
    BG_ASSERT_OK(WaitSettled(f.name).status());
    std::string approve_result;
    HttpClientRequest req;
    req.method = "POST";
    req.target = "/api/v1/stacks/" + f.name + "/approve";
    req.headers.emplace_back("Authorization", "Bearer " + token_);
    const std::string address = ApiAddress();
    std::thread approver([&approve_result, req, address] {
      auto r = HttpCall(address, req, 20s);
      approve_result = r.ok() ? std::to_string(r->status) : r.status().ToString();
    });
    if (delays_us[i] > 0) std::this_thread::sleep_for(std::chrono::microseconds(delays_us[i]));
    KillServe();
    approver.join();
    const std::string seen_at_kill = FetchBody(f.production_port);
    BG_ASSERT_OK(StartServe());
    BG_ASSERT_OK_AND_ASSIGN(Json list, WaitNoneStuck(f.name));
    BG_ASSERT_OK_AND_ASSIGN(Json after, Execution(f.name, id));
    const std::string outcome = after.value("status", "");
    std::fprintf(stderr,
                 "[crash] killed %d us after sending the approve (its answer: %s): production "
                 "answered '%s'; after the restart the execution is %s\n",
                 delays_us[i], approve_result.c_str(), Chomp(seen_at_kill).c_str(),
                 outcome.c_str());
    std::string got;
    if (outcome == "WaitingForApproval") {
      EXPECT_TRUE(AllAnswer(f.production_port, live_colour + "\n", 10, &got))
          << "the approval was lost, yet production changed: " << got;
      BG_ASSERT_OK_AND_ASSIGN(ApiAnswer again, Action(f.name, "approve"));
      ASSERT_EQ(again.status, 200) << again.body;
    } else {
      ASSERT_TRUE(outcome == "Succeeded" || outcome == "InProgress") << after.dump(2);
    }
    BG_ASSERT_OK_AND_ASSIGN(Json done, WaitExecutionStatus(f.name, id, "Succeeded", 30s));
    const std::string new_side = live_side == "Code1" ? "Code2" : "Code1";
    EXPECT_TRUE(WaitAllAnswer(f.production_port, colours[i] + "\n", 10, 5s, &got))
        << "production: " << got << " (when serve was killed it answered '" << Chomp(seen_at_kill)
        << "')";
    std::this_thread::sleep_for(1500ms);  // a few reconciler passes: a second swap would show
    EXPECT_TRUE(AllAnswer(f.production_port, colours[i] + "\n", 10, &got))
        << "production changed again after the restart: " << got;
    EXPECT_TRUE(AllAnswer(f.test_port, live_colour + "\n", 10, &got)) << "test: " << got;
    BG_ASSERT_OK_AND_ASSIGN(Json st, ApiStatus(f.name));
    EXPECT_EQ(st.value("live", ""), new_side) << st.dump(2);
    EXPECT_EQ(Listener(st, "production").value("target_group", ""),
              f.name + (new_side == "Code1" ? "-blue" : "-green"))
        << st.dump(2);
    EXPECT_EQ(done.value("from_version", ""), ServiceVersion(st, live_side)) << done.dump(2);
    live_colour = colours[i];
    live_side = new_side;
  }
}

// ---------------------------------------------------------------------------------------------
// SIGKILL at exact points, by failpoint (src/common/failpoint.h): in the Source stage, and in each
// window of the swap: after its `expect` is recorded but before the proxy is asked; after the
// proxy swapped but before the store says so; after the store says so but before the execution
// is finished. Production is under load throughout: not one request fails, and after the restart
// production serves the approved version, swapped exactly once.

TEST_F(PipelineTest, CrashInSourceStage) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  KillServe();
  BG_ASSERT_OK(StartServe({"BLUEGREEN_FAILPOINTS=pipeline.source"}));
  BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitApp({"green"}));
  ASSERT_TRUE(WaitServeExit(kExecTimeout)) << "serve never reached the Source stage";
  std::fprintf(stderr, "[crash] serve killed itself in the Source stage of commit %s\n",
               sha.substr(0, 12).c_str());
  BG_ASSERT_OK(StartServe());
  BG_ASSERT_OK_AND_ASSIGN(Json e, WaitExecutionOf(f.name, sha));
  const int64_t id = e.value("id", int64_t{0});
  BG_ASSERT_OK_AND_ASSIGN(
      Json waiting,
      WaitExecution(
          f.name, id, [](const Json& x) { return x.value("status", "") == "WaitingForApproval"; },
          kExecTimeout, "to wait for approval after the restart"));
  EXPECT_EQ(waiting.value("commit", ""), sha) << waiting.dump(2);
  BG_ASSERT_OK_AND_ASSIGN(Json list, WaitNoneStuck(f.name));
  EXPECT_EQ(list.size(), 2u) << "one execution per commit, also across the crash: "
                             << list.dump(2);
  BG_ASSERT_OK(WaitSettled(f.name).status());
  std::string got;
  EXPECT_TRUE(AllAnswer(f.test_port, "green\n", 10, &got)) << "test: " << got;
  EXPECT_TRUE(AllAnswer(f.production_port, "blue\n", 10, &got)) << "production: " << got;
}

TEST_F(PipelineTest, CrashInEachSwapWindow) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  struct Window {
    const char* failpoint;
    const char* colour;
    bool proxy_swapped_at_crash;
  };
  const Window windows[] = {{"pipeline.swap.recorded", "green", false},
                            {"pipeline.swap.applied", "yellow", true},
                            {"pipeline.swap.live_recorded", "red", true}};
  std::string live_colour = "blue";
  std::string live_side = "Code1";
  for (const Window& w : windows) {
    SCOPED_TRACE(std::string("failpoint ") + w.failpoint);
    BG_ASSERT_OK_AND_ASSIGN(Json waiting, PushAndWaitForApproval(f, App(w.colour)));
    const int64_t id = waiting.value("id", int64_t{0});
    BG_ASSERT_OK(WaitSettled(f.name).status());
    KillServe();
    BG_ASSERT_OK(StartServe({std::string("BLUEGREEN_FAILPOINTS=") + w.failpoint}));

    TimedLoad prod("production", f.production_port);
    prod.Start();
    ASSERT_TRUE(prod.WaitForMore(200, 10s));
    // The approve never answers: serve dies in the middle of it.
    HttpClientRequest req;
    req.method = "POST";
    req.target = "/api/v1/stacks/" + f.name + "/approve";
    req.headers.emplace_back("Authorization", "Bearer " + token_);
    req.headers.emplace_back("Content-Type", "application/json");
    req.body = R"({"comment":"crash test"})";
    auto answer = HttpCall(ApiAddress(), req, 20s);
    ASSERT_TRUE(WaitServeExit(20s)) << "the failpoint did not fire; approve answered "
                                    << (answer.ok() ? std::to_string(answer->status)
                                                    : answer.status().ToString());
    const auto died = Clock::now();
    const std::string at_crash = FetchBody(f.production_port);
    EXPECT_EQ(at_crash, (w.proxy_swapped_at_crash ? std::string(w.colour) : live_colour) + "\n")
        << "production when serve died";
    ASSERT_TRUE(prod.WaitForMore(300, 10s));  // production serves while serve is dead
    BG_ASSERT_OK(StartServe());
    const auto restarted = Clock::now();
    BG_ASSERT_OK_AND_ASSIGN(Json done, WaitExecutionStatus(f.name, id, "Succeeded", 30s));
    const auto succeeded_seen = Clock::now();
    std::this_thread::sleep_for(1500ms);  // a few reconciler passes: a second swap would show
    ASSERT_TRUE(prod.WaitForMore(300, 10s));
    prod.Stop();
    const std::string colour = std::string(w.colour) + "\n";
    const LoadReport r = Analyze(prod.Samples(), died, colour,
                                 {{"serve died", died},
                                  {"serve restarted", restarted},
                                  {"the execution was seen Succeeded", succeeded_seen}});
    std::fprintf(stderr, "[load] production across a crash at %s: %s\n", w.failpoint,
                 r.ToString().c_str());
    EXPECT_EQ(r.failures, 0) << r.ToString();
    EXPECT_EQ(r.after[2].wrong, 0) << "production was not (or not only) the approved version "
                                      "once the execution succeeded: "
                                   << r.ToString();
    if (w.proxy_swapped_at_crash) {
      EXPECT_EQ(r.after[0].wrong, 0) << "the proxy had swapped, yet production answered the old "
                                        "version after serve died: "
                                     << r.ToString();
    }
    std::string got;
    EXPECT_TRUE(AllAnswer(f.production_port, colour, 10, &got)) << "production: " << got;
    EXPECT_TRUE(AllAnswer(f.test_port, live_colour + "\n", 10, &got)) << "test: " << got;
    const std::string new_side = live_side == "Code1" ? "Code2" : "Code1";
    BG_ASSERT_OK_AND_ASSIGN(Json st, ApiStatus(f.name));
    EXPECT_EQ(st.value("live", ""), new_side) << st.dump(2);
    EXPECT_EQ(Listener(st, "production").value("target_group", ""),
              f.name + (new_side == "Code1" ? "-blue" : "-green"))
        << st.dump(2);
    EXPECT_EQ(done.value("approved_by", ""), "admin") << done.dump(2);
    EXPECT_EQ(done.value("comment", ""), "crash test") << done.dump(2);
    EXPECT_EQ(done.value("from_version", ""), ServiceVersion(st, live_side)) << done.dump(2);
    BG_ASSERT_OK_AND_ASSIGN(Json list, WaitNoneStuck(f.name));
    live_colour = w.colour;
    live_side = new_side;
  }
}

// ---------------------------------------------------------------------------------------------
// The swap is health-gated: an approved version whose tasks stopped answering is not made live.

TEST_F(PipelineTest, ApproveRefusedWhenTestSideUnhealthy) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::string v1 = first.value("version", "");
  BG_ASSERT_OK_AND_ASSIGN(Json waiting, PushAndWaitForApproval(f, {"green"}));
  const int64_t id = waiting.value("id", int64_t{0});
  const std::string v2 = waiting.value("version", "");
  BG_ASSERT_OK_AND_ASSIGN(Json st, WaitSettled(f.name));

  // Freeze the test side's tasks: the proxy's health checks time out.
  std::vector<pid_t> frozen;
  for (const Json& t : Tasks(st, "Code2", v2)) {
    const pid_t pid = HandlePid(t.value("handle", ""));
    ASSERT_GT(pid, 1) << t.dump();
    ASSERT_EQ(::kill(pid, SIGSTOP), 0);
    frozen.push_back(pid);
  }
  ASSERT_EQ(frozen.size(), 2u) << st.dump(2);
  auto thaw = [&] {
    for (pid_t pid : frozen) ::kill(pid, SIGCONT);
  };
  auto unhealthy = WaitForStatus(
      f.name,
      [&](const Json& s) {
        const Json targets = Group(s, f.name + "-green").value("targets", Json::array());
        if (targets.empty()) return false;
        for (const Json& t : targets) {
          if (t.value("health", "") != "unhealthy") return false;
        }
        return true;
      },
      20s, "the test side's targets to be unhealthy");
  if (!unhealthy.ok()) thaw();
  BG_ASSERT_OK(unhealthy.status());

  LoadGenerator prod("production", f.production_port, 2, 2ms);
  prod.Start();
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Action(f.name, "approve", "approved, but it is down"));
  auto failed = WaitExecutionStatus(f.name, id, "Failed", 20s);
  ASSERT_TRUE(prod.WaitForMore(prod.Snapshot(), 200, 10s));
  prod.Stop();
  thaw();
  EXPECT_EQ(a.status, 200) << a.body;
  BG_ASSERT_OK(failed.status());
  EXPECT_EQ(failed->value("stage", ""), "Swap") << failed->dump(2);
  EXPECT_NE(failed->value("reason", "").find("healthy"), std::string::npos) << failed->dump(2);
  PrintLoad("production while the swap to an unhealthy side was refused", prod.Snapshot());
  EXPECT_EQ(prod.Snapshot().failures, 0) << prod.Snapshot().ToString();
  EXPECT_EQ(prod.Snapshot().Others("blue\n"), "") << prod.Snapshot().ToString();
  BG_ASSERT_OK_AND_ASSIGN(st, ApiStatus(f.name));
  EXPECT_EQ(st.value("live", ""), "Code1") << st.dump(2);
  EXPECT_EQ(LiveVersion(st), v1) << st.dump(2);
  std::string got;
  EXPECT_TRUE(AllAnswer(f.production_port, "blue\n", 10, &got)) << "production: " << got;
}

// ---------------------------------------------------------------------------------------------
// The swap checks that the test side runs exactly the approved version: a version put on the
// test side by hand (POST .../deploy) while an execution waits for approval is never made live
// by approving that execution.

TEST_F(PipelineTest, SwapChecksTheApprovedVersion) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::string v1 = first.value("version", "");
  BG_ASSERT_OK_AND_ASSIGN(Json waiting, PushAndWaitForApproval(f, {"green"}));
  const int64_t id = waiting.value("id", int64_t{0});
  const std::string v2 = waiting.value("version", "");

  BG_ASSERT_OK_AND_ASSIGN(std::string dir, MakeVersion("manual-x"));
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer reg,
                          Api("POST", "/api/v1/stacks/" + f.name + "/versions",
                              Json{{"version", "manual-x"}, {"artifact_dir", dir}}.dump()));
  ASSERT_EQ(reg.status, 201) << reg.body;
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer dep, Api("POST", "/api/v1/stacks/" + f.name + "/deploy",
                                             Json{{"version", "manual-x"}}.dump()));
  std::fprintf(stderr, "[info] POST deploy while execution %lld waits for approval: %d %s\n",
               static_cast<long long>(id), dep.status, dep.body.c_str());
  std::string got;
  if (dep.status == 409) {
    // Refused: the version under review stays on the test side.
    EXPECT_TRUE(AllAnswer(f.test_port, "green\n", 10, &got)) << "test: " << got;
    return;
  }
  ASSERT_EQ(dep.status, 202) << dep.body;
  BG_ASSERT_OK_AND_ASSIGN(Json st, WaitForStatus(
                                       f.name,
                                       [&](const Json& s) {
                                         std::string why;
                                         return TestVersion(s) == "manual-x" && Settled(s, &why);
                                       },
                                       30s, "manual-x on the test side"));
  BG_ASSERT_OK_AND_ASSIGN(ApiAnswer a, Action(f.name, "approve"));
  if (a.status == 200) {
    BG_ASSERT_OK_AND_ASSIGN(Json failed, WaitExecutionStatus(f.name, id, "Failed", 20s));
    EXPECT_NE(failed.value("reason", "").find("manual-x"), std::string::npos) << failed.dump(2);
    EXPECT_NE(failed.value("reason", "").find(v2), std::string::npos) << failed.dump(2);
  } else {
    EXPECT_EQ(a.status, 409) << a.body;
  }
  std::this_thread::sleep_for(1s);  // a swap would have happened by now: nothing to wait for
  BG_ASSERT_OK_AND_ASSIGN(st, ApiStatus(f.name));
  EXPECT_EQ(LiveVersion(st), v1) << st.dump(2);
  EXPECT_TRUE(AllAnswer(f.production_port, "blue\n", 10, &got))
      << "a version nobody approved went live: " << got;
}

// ---------------------------------------------------------------------------------------------
// After SIGKILL of serve in Build, the build starts again in the new serve. The command the old
// serve was running must not go on by itself next to it (it runs in a session of its own, so
// nothing stops it when serve dies), writing into the execution's log after the fact.

TEST_F(PipelineTest, CrashInBuildStopsTheOldBuild) {
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  const std::string marker = root_ + "/first-attempt";
  App slow_once{"green"};
  slow_once.build_sh =
      "#!/bin/sh\n"
      "if [ ! -e " +
      marker +
      " ]; then\n"
      "  touch " +
      marker +
      "\n"
      "  echo 'first attempt: slow'\n"
      "  sleep 6\n"
      "  echo 'ORPHAN: the first attempt went on after serve was killed'\n"
      "fi\n"
      "echo \"building $BLUEGREEN_VERSION\"\n";
  BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitApp(slow_once));
  BG_ASSERT_OK_AND_ASSIGN(Json e, WaitExecutionOf(f.name, sha));
  const int64_t id = e.value("id", int64_t{0});
  const std::string log_path =
      state_dir_ + "/logs/" + f.name + "/execution-" + std::to_string(id) + ".log";
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto log = ReadFile(log_path);
        return log.ok() && log->find("first attempt: slow") != std::string::npos;
      },
      30s));
  const std::string work = state_dir_ + "/work/" + f.name + "/" + std::to_string(id);
  const std::vector<ProcEntry> old_build = ProcessesOf(work);
  ASSERT_FALSE(old_build.empty()) << "no process of the build runs in " << work;
  BG_ASSERT_OK_AND_ASSIGN(Json at_kill, Execution(f.name, id));
  ASSERT_EQ(at_kill.value("stage", ""), "Build") << at_kill.dump(2);
  KillServe();
  BG_ASSERT_OK(StartServe());
  BG_ASSERT_OK_AND_ASSIGN(
      Json waiting,
      WaitExecution(
          f.name, id, [](const Json& x) { return x.value("status", "") == "WaitingForApproval"; },
          kExecTimeout, "to wait for approval after restart"));
  auto alive = [&] {
    std::string out;
    for (const ProcEntry& p : old_build) {
      auto now = ReadProc(p.pid);
      if (now && !now->dead() && now->start_time == p.start_time) out += "\n  " + p.Describe();
    }
    return out;
  };
  const bool stopped = WaitUntil([&] { return alive().empty(); }, 3s);
  EXPECT_TRUE(stopped)
      << "the build command of the killed serve still runs after the restart, next to the "
         "resumed build:"
      << alive();
  // Whatever it does from now on lands in the execution's log, after the resumed build.
  WaitUntil([&] { return alive().empty(); }, 10s);
  auto log = Api("GET", "/api/v1/stacks/" + f.name + "/executions/" + std::to_string(id) + "/log");
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(log->body.find("ORPHAN"), std::string::npos)
      << "the killed serve's build wrote into the log after the restart:\n"
      << log->body;
  std::string got;
  EXPECT_TRUE(AllAnswer(f.test_port, "green\n", 10, &got)) << "test: " << got;
}

// ---------------------------------------------------------------------------------------------
// The CLI's pipeline commands, once (a client of the API above).

TEST_F(PipelineTest, CliSmoke) {
  CliResult help = Cli({"approve", "--help"}, 10s);
  if (help.exit_code != 0) GTEST_SKIP() << "no `bluegreen approve` yet: " << help.Describe();
  BG_ASSERT_OK_AND_ASSIGN(PipelineStack f, NewPipelineStack());
  BG_ASSERT_OK_AND_ASSIGN(Json first, FirstRun(f, {"blue"}));
  BG_ASSERT_OK_AND_ASSIGN(Json waiting, PushAndWaitForApproval(f, {"green"}));
  const int64_t id = waiting.value("id", int64_t{0});

  CliResult execs = Cli({"executions", f.name, "--json"});
  ASSERT_EQ(execs.exit_code, 0) << execs.Describe();
  Json ej = Json::parse(execs.out, nullptr, false);
  ASSERT_FALSE(ej.is_discarded()) << execs.Describe();
  const Json list = ej.is_array() ? ej : ej.value("executions", Json::array());
  ASSERT_FALSE(list.empty()) << execs.Describe();
  EXPECT_EQ(list[0].value("id", int64_t{0}), id) << execs.Describe();
  EXPECT_EQ(list[0].value("status", ""), "WaitingForApproval") << execs.Describe();

  CliResult logs = Cli({"logs", f.name, std::to_string(id)});
  EXPECT_EQ(logs.exit_code, 0) << logs.Describe();
  EXPECT_NE(logs.out.find("building " + waiting.value("version", "?")), std::string::npos)
      << logs.Describe();

  CliResult until_review = Cli({"watch", f.name, "--until-review"});
  EXPECT_EQ(until_review.exit_code, 0) << until_review.Describe();
  EXPECT_NE(until_review.out.find("Review WaitingForApproval"), std::string::npos)
      << until_review.Describe();

  // `watch` follows the execution through the approval to its end.
  CliResult watched;
  std::thread watcher([&] { watched = Cli({"watch", f.name, std::to_string(id)}); });
  std::this_thread::sleep_for(1s);  // let it print the waiting state first
  CliResult approve = Cli({"approve", f.name, "--comment", "from the CLI"});
  watcher.join();
  ASSERT_EQ(approve.exit_code, 0) << approve.Describe();
  EXPECT_EQ(watched.exit_code, 0) << watched.Describe();
  const size_t waited_at = watched.out.find("Review WaitingForApproval");
  const size_t swapped_at = watched.out.find("Swap Succeeded");
  EXPECT_NE(waited_at, std::string::npos) << watched.Describe();
  EXPECT_NE(swapped_at, std::string::npos) << watched.Describe();
  EXPECT_LT(waited_at, swapped_at) << watched.Describe();
  EXPECT_NE(watched.out.find("execution " + std::to_string(id) + " Succeeded"), std::string::npos)
      << watched.Describe();
  CliResult watch_json = Cli({"watch", f.name, std::to_string(id), "--json"});
  EXPECT_EQ(watch_json.exit_code, 0) << watch_json.Describe();
  EXPECT_EQ(Json::parse(watch_json.out, nullptr, false).value("status", ""), "Succeeded")
      << watch_json.Describe();
  BG_ASSERT_OK_AND_ASSIGN(Json done, WaitExecutionStatus(f.name, id, "Succeeded", 30s));
  EXPECT_EQ(done.value("comment", ""), "from the CLI") << done.dump(2);
  std::string got;
  EXPECT_TRUE(WaitAllAnswer(f.production_port, "green\n", 10, 5s, &got)) << got;

  CliResult rollback = Cli({"rollback", f.name, "--yes", "--comment", "CLI rollback"});
  ASSERT_EQ(rollback.exit_code, 0) << rollback.Describe();
  // `rollback` waits for the swap (its --no-wait says so): production serves v1 when it returns.
  EXPECT_TRUE(AllAnswer(f.production_port, "blue\n", 10, &got)) << got;
  BG_ASSERT_OK_AND_ASSIGN(Json latest, Executions(f.name));
  EXPECT_EQ(latest[0].value("kind", ""), "rollback") << latest.dump(2);
  EXPECT_EQ(latest[0].value("status", ""), "Succeeded") << latest.dump(2);
  EXPECT_EQ(latest[0].value("comment", ""), "CLI rollback") << latest.dump(2);

  // `watch` with nothing running waits for the next execution: the walkthrough's
  // `git commit && bluegreen watch NAME --until-review`, before the poller has seen the commit.
  CliResult next;
  std::thread next_watcher([&] { next = Cli({"watch", f.name, "--until-review"}); });
  std::this_thread::sleep_for(700ms);  // let it see that the latest execution has ended
  BG_ASSERT_OK_AND_ASSIGN(std::string sha, CommitApp({"yellow"}));
  next_watcher.join();
  EXPECT_EQ(next.exit_code, 0) << next.Describe();
  EXPECT_NE(next.err.find("waiting for the next one"), std::string::npos) << next.Describe();
  EXPECT_NE(next.out.find("commit " + sha.substr(0, 7)), std::string::npos) << next.Describe();
  EXPECT_NE(next.out.find("Review WaitingForApproval"), std::string::npos) << next.Describe();
}

}  // namespace
}  // namespace bluegreen::serve_it
