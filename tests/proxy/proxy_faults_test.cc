// Backend faults under load: production's target group has two test_backend targets, a and b;
// several client threads send keep-alive requests through the real proxy while b is switched into
// a fault (/control/fault/MODE: reset, close-early, slow-MS, hang). Each test asserts what
// docs/reliability.md ("Faults") promises for that fault and prints the counts it saw, which the
// document quotes. No assertion is about speed.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace bluegreen::proxy_test {
namespace {

// What one request of the load got.
struct Outcome {
  Clock::time_point start;
  Clock::time_point end;
  bool post = false;
  int status = 0;       // 0: no response (connect, send or read failed)
  std::string backend;  // X-Backend of the answer
  std::string error;    // when status is 0
};

// Keep-alive load on one listener from `threads` client threads, until Stop(). Each thread keeps
// one connection and opens a new one after a failure or a "Connection: close". With post_every N
// (> 0), every Nth request of a thread is a POST with a small body; the others are GET /.
class Load {
 public:
  Load(uint16_t port, int threads, int post_every) {
    results_.resize(static_cast<size_t>(threads));
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, port, t, post_every] { Run(port, t, post_every); });
    }
  }
  ~Load() { Stop(); }

  void Stop() {
    stop_.store(true);
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  // Every outcome of every thread (call after Stop()).
  std::vector<Outcome> Outcomes() const {
    std::vector<Outcome> all;
    for (const auto& r : results_) all.insert(all.end(), r.begin(), r.end());
    return all;
  }

 private:
  void Run(uint16_t port, int thread, int post_every) {
    std::vector<Outcome>& out = results_[static_cast<size_t>(thread)];
    std::unique_ptr<HttpConnection> conn;
    for (uint64_t n = 0; !stop_.load(); ++n) {
      Outcome o;
      o.start = Clock::now();
      o.post = post_every > 0 &&
               n % static_cast<uint64_t>(post_every) == static_cast<uint64_t>(post_every) - 1;
      if (conn == nullptr) {
        auto c = HttpConnection::Connect(port, 5s);
        if (!c.ok()) {
          o.end = Clock::now();
          o.error = "connect: " + c.status().ToString();
          out.push_back(std::move(o));
          std::this_thread::sleep_for(10ms);  // do not spin on a listener that refuses
          continue;
        }
        conn = std::move(c).value();
      }
      HttpRequest req;
      if (o.post) {
        req.method = "POST";
        req.target = "/orders";
        req.body = "thread=" + std::to_string(thread) + "&n=" + std::to_string(n);
      }
      auto resp = conn->RoundTrip(req, 15s);
      o.end = Clock::now();
      if (!resp.ok()) {
        o.error = resp.status().ToString();
        conn.reset();
      } else {
        o.status = resp->status;
        o.backend = resp->Header("X-Backend");
        if (resp->ConnectionClose() || conn->peer_closed()) conn.reset();
      }
      out.push_back(std::move(o));
    }
  }

  std::atomic<bool> stop_{false};
  std::vector<std::vector<Outcome>> results_;  // one per thread, written by that thread only
  std::vector<std::thread> threads_;
};

// Counts over a part of the outcomes.
struct Tally {
  int gets = 0;
  int posts = 0;
  int failed_gets = 0;
  int failed_posts = 0;
  std::map<std::string, int> answered_by;  // 2xx answers per X-Backend
  std::map<int, int> failures_by_status;   // 0: no response
  Duration slowest_b = Duration::zero();
  Duration fastest_b = Duration::max();

  static bool Failed(const Outcome& o) { return o.status < 200 || o.status >= 300; }

  void Add(const Outcome& o) {
    (o.post ? posts : gets) += 1;
    if (Failed(o)) {
      (o.post ? failed_posts : failed_gets) += 1;
      failures_by_status[o.status] += 1;
      return;
    }
    answered_by[o.backend] += 1;
    if (o.backend == "b") {
      const auto took = std::chrono::duration_cast<Duration>(o.end - o.start);
      slowest_b = std::max(slowest_b, took);
      fastest_b = std::min(fastest_b, took);
    }
  }

  std::string ToString() const {
    std::string s = std::to_string(gets) + " GETs (" + std::to_string(failed_gets) + " failed), " +
                    std::to_string(posts) + " POSTs (" + std::to_string(failed_posts) +
                    " failed); answered by";
    for (const auto& [name, n] : answered_by) s += " " + name + "=" + std::to_string(n);
    if (!failures_by_status.empty()) {
      s += "; failures by status";
      for (const auto& [status, n] : failures_by_status) {
        s += " " + std::to_string(status) + "=" + std::to_string(n);
      }
    }
    return s;
  }
};

long long Millis(std::chrono::nanoseconds d) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

class BackendFaultTest : public ProxyTest {
 protected:
  static constexpr int kLoadThreads = 4;
  static constexpr Duration kWarmUp = 500ms;       // load before the fault
  static constexpr Duration kUnderFault = 2500ms;  // load after it

  // Backends a and b behind production (round robin), green behind test; `customize` edits the
  // proxy config before it starts.
  void StartStack(const std::function<void(ProxyConfigSpec&)>& customize = nullptr) {
    BG_ASSERT_OK_AND_ASSIGN(a_, StartBackend("a"));
    BG_ASSERT_OK_AND_ASSIGN(b_, StartBackend("b"));
    BG_ASSERT_OK_AND_ASSIGN(Backend * green, StartBackend("green"));
    BG_ASSERT_OK_AND_ASSIGN(ProxyConfigSpec spec,
                            BlueGreenConfig({a_->address(), b_->address()}, {green->address()}));
    if (customize) customize(spec);
    BG_ASSERT_OK_AND_ASSIGN(proxy_, StartProxy(spec));
    BG_ASSERT_OK(WaitAllHealthy(*proxy_));
  }

  double Retries() {
    auto m = proxy_->admin().Metrics();
    return m.ok() ? MetricValue(*m, "bluegreen_upstream_retries_total").value_or(0) : -1;
  }

  // Prints a line for the record (the docs quote it) and keeps it as a test property.
  void Report(const std::string& key, const std::string& text) {
    std::printf("[ fault    ] %s: %s\n", key.c_str(), text.c_str());
    std::fflush(stdout);
    RecordProperty(key, text);
  }

  Backend* a_ = nullptr;
  Backend* b_ = nullptr;
  ProxyProcess* proxy_ = nullptr;
};

// b resets every request (RST, no answer): GETs move to a through the proxy's retry; a POST b
// received fails with 502 and is never sent again.
TEST_F(BackendFaultTest, ResetUnderLoadFailsNoGetAndReplaysNoPost) {
  StartStack();
  if (HasFatalFailure()) return;
  StatsProbe probe_a(a_), probe_b(b_);
  BG_ASSERT_OK(probe_a.Begin());
  BG_ASSERT_OK(probe_b.Begin());
  const double retries_before = Retries();

  Load load(proxy_->production_port(), kLoadThreads, /*post_every=*/10);
  std::this_thread::sleep_for(kWarmUp);  // load for a while: the time is the point
  const auto fault_at = Clock::now();
  BG_ASSERT_OK(b_->SetFault("reset"));
  std::this_thread::sleep_for(kUnderFault);
  load.Stop();

  const std::vector<Outcome> outcomes = load.Outcomes();
  Tally before, during;
  for (const Outcome& o : outcomes) (o.start < fault_at ? before : during).Add(o);
  BG_ASSERT_OK_AND_ASSIGN(Backend::Stats delta_a, probe_a.Delta());
  BG_ASSERT_OK_AND_ASSIGN(Backend::Stats delta_b, probe_b.Delta());
  const double retries = Retries() - retries_before;
  const int posts_sent = before.posts + during.posts;
  const int failed_posts = before.failed_posts + during.failed_posts;

  Report("before_fault", before.ToString());
  Report("under_reset", during.ToString());
  Report("backend_counts",
         "a: " + std::to_string(delta_a.requests) + " requests, " + std::to_string(delta_a.posts) +
             " POSTs; b: " + std::to_string(delta_b.requests) + " requests, " +
             std::to_string(delta_b.posts) + " POSTs; POSTs sent " + std::to_string(posts_sent) +
             "; proxy retries " + std::to_string(static_cast<long long>(retries)));

  EXPECT_EQ(before.failed_gets + during.failed_gets, 0) << during.ToString();
  EXPECT_GT(during.gets, 0);
  EXPECT_GT(retries, 0) << "no request was ever sent to b during the fault";
  // A failed POST is a 502 for a POST b received (one sent just before the switch may be among
  // them); none was sent a second time, to either target.
  for (const Tally* t : {&before, &during}) {
    for (const auto& [status, n] : t->failures_by_status) {
      EXPECT_EQ(status, 502) << n << " requests failed with " << status;
    }
  }
  EXPECT_LE(delta_a.posts + delta_b.posts, posts_sent) << "a POST was replayed";
  EXPECT_LE(failed_posts, delta_b.posts);
}

// b answers, then closes each connection right away (keep-alive announced, no
// "Connection: close"): a pooled connection to b may be taken for the next request before b's FIN
// arrives. A GET that loses this race is retried (reused connection); a POST is not (its bytes
// went out), so it may fail with 502, and it is never replayed.
TEST_F(BackendFaultTest, CloseEarlyUnderLoadFailsNoGetAndReplaysNoPost) {
  StartStack();
  if (HasFatalFailure()) return;
  StatsProbe probe_a(a_), probe_b(b_);
  BG_ASSERT_OK(probe_a.Begin());
  BG_ASSERT_OK(probe_b.Begin());
  const double retries_before = Retries();

  Load load(proxy_->production_port(), kLoadThreads, /*post_every=*/10);
  std::this_thread::sleep_for(kWarmUp);
  const auto fault_at = Clock::now();
  BG_ASSERT_OK(b_->SetFault("close-early"));
  std::this_thread::sleep_for(kUnderFault);
  load.Stop();

  Tally before, during;
  for (const Outcome& o : load.Outcomes()) (o.start < fault_at ? before : during).Add(o);
  BG_ASSERT_OK_AND_ASSIGN(Backend::Stats delta_a, probe_a.Delta());
  BG_ASSERT_OK_AND_ASSIGN(Backend::Stats delta_b, probe_b.Delta());
  const int posts_sent = before.posts + during.posts;
  Report("before_fault", before.ToString());
  Report("under_close_early", during.ToString());
  Report("backend_counts", "a: " + std::to_string(delta_a.requests) + " requests, " +
                               std::to_string(delta_a.posts) +
                               " POSTs; b: " + std::to_string(delta_b.requests) + " requests on " +
                               std::to_string(delta_b.connections_accepted) + " connections, " +
                               std::to_string(delta_b.posts) + " POSTs; POSTs sent " +
                               std::to_string(posts_sent) + "; proxy retries " +
                               std::to_string(static_cast<long long>(Retries() - retries_before)));

  EXPECT_EQ(before.failed_gets + during.failed_gets, 0) << during.ToString();
  for (const Tally* t : {&before, &during}) {
    for (const auto& [status, n] : t->failures_by_status) {
      EXPECT_EQ(status, 502) << n << " requests failed with " << status;
    }
  }
  EXPECT_LE(delta_a.posts + delta_b.posts, posts_sent) << "a POST was replayed";
  EXPECT_GT(during.answered_by["b"], 0) << "b answered nothing under the fault";
}

// b answers every request 200 ms late (far below upstream_response_timeout): nothing fails.
TEST_F(BackendFaultTest, SlowBackendUnderLoadFailsNothing) {
  StartStack();
  if (HasFatalFailure()) return;
  Load load(proxy_->production_port(), kLoadThreads, /*post_every=*/10);
  std::this_thread::sleep_for(kWarmUp);
  BG_ASSERT_OK(b_->SetFault("slow-200"));
  const auto fault_set = Clock::now();  // requests started from now on are all slowed on b
  std::this_thread::sleep_for(kUnderFault);
  load.Stop();

  Tally before, during;
  for (const Outcome& o : load.Outcomes()) (o.start < fault_set ? before : during).Add(o);
  Report("before_fault", before.ToString());
  Report("under_slow_200ms", during.ToString() + "; b's answers took " +
                                 std::to_string(Millis(during.fastest_b)) + " to " +
                                 std::to_string(Millis(during.slowest_b)) + " ms");

  EXPECT_EQ(before.failed_gets + before.failed_posts, 0) << before.ToString();
  EXPECT_EQ(during.failed_gets + during.failed_posts, 0) << during.ToString();
  ASSERT_GT(during.answered_by["b"], 0) << "b answered nothing under the fault";
  EXPECT_GE(Millis(during.fastest_b), 190) << "an answer from b was not slowed";
}

// b stops answering anything, health checks included: the requests it already had get 504 at
// upstream_response_timeout (1 s here), the health check takes it out, and from then on nothing
// fails.
TEST_F(BackendFaultTest, HangingBackendIsTakenOutAndNothingFailsAfterwards) {
  StartStack([](ProxyConfigSpec& spec) {
    spec.limits["upstream_response_timeout"] = "1s";
    // An ordinary path: a hung process answers no health check either.
    spec.Group("blue")->health_check.path = "/";
  });
  if (HasFatalFailure()) return;
  Load load(proxy_->production_port(), kLoadThreads, /*post_every=*/0);
  std::this_thread::sleep_for(kWarmUp);
  const auto fault_at = Clock::now();
  BG_ASSERT_OK(b_->SetFault("hang"));
  BG_ASSERT_OK(WaitHealth(*proxy_, "blue", b_->address(), "unhealthy", 20s));
  const auto marked_down = Clock::now();  // observed through the admin API: a little late
  std::this_thread::sleep_for(kUnderFault);
  load.Stop();

  Tally before, window, after;
  Duration slowest_failure = Duration::zero();
  for (const Outcome& o : load.Outcomes()) {
    if (o.start < fault_at) {
      before.Add(o);
    } else if (o.start < marked_down) {
      window.Add(o);
    } else {
      after.Add(o);
    }
    if (Tally::Failed(o)) {
      slowest_failure =
          std::max(slowest_failure, std::chrono::duration_cast<Duration>(o.end - o.start));
    }
  }
  Report("before_fault", before.ToString());
  Report("fault_to_mark_down", std::to_string(Millis(marked_down - fault_at)) + " ms; " +
                                   window.ToString() + "; slowest failure took " +
                                   std::to_string(Millis(slowest_failure)) + " ms");
  Report("after_mark_down", after.ToString());

  // Requests that started before the fault but reached b after it hang too: only 504s, and only
  // for requests that started before the mark-down.
  for (const Tally* t : {&before, &window}) {
    for (const auto& [status, n] : t->failures_by_status) {
      EXPECT_EQ(status, 504) << n << " requests failed with " << status;
    }
  }
  EXPECT_EQ(after.failed_gets, 0) << after.ToString();
  EXPECT_GT(after.answered_by["a"], 0);
  EXPECT_EQ(after.answered_by["b"], 0) << "b answered after it hung";
}

}  // namespace
}  // namespace bluegreen::proxy_test
