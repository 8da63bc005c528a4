// 10,000 client connections held open through swaps (issue 7, "Long runs"): every connection is
// used once, stays open and idle while production is swapped, and its next request reaches the
// new group; none is closed or fails. Real binary, real backends on loopback (see harness.h).

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/posix.h"
#include "harness.h"

namespace bluegreen::proxy_test {
namespace {

class ScaleTest : public ProxyTest {};

// VmRSS of a process in KiB, 0 when unreadable.
long RssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

struct Round {
  int ok = 0;
  int wrong_group = 0;
  int failed = 0;
  std::string first_problem;
};

// Sends GET / on every connection, in batches so the proxy never needs more than `batch` upstream
// connections at once, and checks each answer comes from `group` on a connection kept open.
Round RequestOnAll(std::vector<std::unique_ptr<HttpConnection>>& conns, const std::string& group,
                   size_t batch) {
  Round round;
  auto problem = [&](const std::string& what) {
    ++round.failed;
    if (round.first_problem.empty()) round.first_problem = what;
  };
  HttpRequest req;
  req.target = "/";
  const std::string wire = req.Serialize();
  for (size_t start = 0; start < conns.size(); start += batch) {
    const size_t end = std::min(conns.size(), start + batch);
    std::vector<bool> sent(end - start, false);
    for (size_t i = start; i < end; ++i) {
      Status st = conns[i]->Send(wire);
      if (!st.ok()) {
        problem("connection " + std::to_string(i) + ": " + st.ToString());
        continue;
      }
      sent[i - start] = true;
    }
    for (size_t i = start; i < end; ++i) {
      if (!sent[i - start]) continue;
      Result<HttpResponse> r = conns[i]->ReadResponse();
      if (!r.ok()) {
        problem("connection " + std::to_string(i) + ": " + r.status().ToString());
      } else if (r->status != 200) {
        problem("connection " + std::to_string(i) + ": status " + std::to_string(r->status));
      } else if (r->body != group + "\n") {
        ++round.wrong_group;
      } else if (EqualsIgnoreCase(r->Header("Connection"), "close")) {
        problem("connection " + std::to_string(i) + ": the proxy closes it");
      } else {
        ++round.ok;
      }
    }
  }
  return round;
}

TEST_F(ScaleTest, TenThousandConnectionsHeldThroughSwaps) {
  constexpr size_t kConns = 10000;
  rlimit lim{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
  if (lim.rlim_max < kConns + 500) {
    GTEST_SKIP() << "the hard limit on open files is " << lim.rlim_max << ", below the "
                 << kConns + 500 << " this test needs";
  }
  // The proxy starts with the soft limit most systems give (1024): it must raise its own.
  rlimit low = lim;
  low.rlim_cur = 1024;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  auto started = StartBlueGreen();
  rlim_t before = 0;
  ASSERT_GE(RaiseFileLimit(&before), kConns + 500);
  BG_ASSERT_OK(started.status());
  BlueGreen bg = *started;
  const Admin& admin = bg.proxy->admin();
  const pid_t proxy_pid = bg.proxy->process().pid();
  const long idle_rss = RssKiB(proxy_pid);

  // Open and use every connection, one at a time: each answered by blue, kept alive.
  const auto open_start = Clock::now();
  std::vector<std::unique_ptr<HttpConnection>> conns;
  conns.reserve(kConns);
  for (size_t i = 0; i < kConns; ++i) {
    auto c = HttpConnection::Connect(bg.proxy->production_port());
    ASSERT_TRUE(c.ok()) << "connection " << i << ": " << c.status().ToString();
    conns.push_back(std::move(c).value());
  }
  Round first = RequestOnAll(conns, "blue", 500);
  const double open_s = std::chrono::duration<double>(Clock::now() - open_start).count();
  ASSERT_EQ(first.ok, static_cast<int>(kConns))
      << "failed " << first.failed << " (" << first.first_problem << "), wrong group "
      << first.wrong_group;
  BG_ASSERT_OK_AND_ASSIGN(std::string metrics, admin.Metrics());
  const std::optional<double> active = MetricValue(metrics, "bluegreen_active_connections");
  ASSERT_TRUE(active.has_value());
  EXPECT_GE(*active, static_cast<double>(kConns));
  const long loaded_rss = RssKiB(proxy_pid);

  // Swap with every connection open, then use every connection again; twice (there and back).
  const std::string groups[] = {"green", "blue"};
  for (const std::string& group : groups) {
    const auto swap_start = Clock::now();
    BG_ASSERT_OK_AND_ASSIGN(AdminResponse swap, admin.Swap());
    const double swap_ms =
        std::chrono::duration<double, std::milli>(Clock::now() - swap_start).count();
    ASSERT_EQ(swap.status, 200) << swap.body;
    const auto round_start = Clock::now();
    Round r = RequestOnAll(conns, group, 500);
    const double round_s = std::chrono::duration<double>(Clock::now() - round_start).count();
    std::printf("swap to %s with %zu connections open: acknowledged in %.1f ms; then %d of %zu "
                "connections answered by %s in %.2f s, %d by the other group, %d failed\n",
                group.c_str(), kConns, swap_ms, r.ok, kConns, group.c_str(), round_s,
                r.wrong_group, r.failed);
    EXPECT_EQ(r.failed, 0) << r.first_problem;
    EXPECT_EQ(r.wrong_group, 0) << "routing is per request: the next request on a connection "
                                   "opened before the swap goes to the new group";
    EXPECT_EQ(r.ok, static_cast<int>(kConns));
  }
  std::printf("%zu connections opened and used in %.2f s; proxy RSS %ld KiB idle, %ld KiB with "
              "them open (%.2f KiB per connection), %ld KiB at the end\n",
              kConns, open_s, idle_rss, loaded_rss,
              static_cast<double>(loaded_rss - idle_rss) / static_cast<double>(kConns),
              RssKiB(proxy_pid));
  std::fflush(stdout);
  // The proxy closed none of them.
  int closed = 0;
  for (auto& c : conns) {
    if (c->peer_closed()) ++closed;
  }
  EXPECT_EQ(closed, 0);
}

}  // namespace
}  // namespace bluegreen::proxy_test
