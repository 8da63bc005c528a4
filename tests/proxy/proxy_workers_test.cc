// How the proxy places its work on threads and CPUs: accepted connections are spread evenly over
// the workers (a worker hands a new connection to a peer holding two or more fewer), and with
// `cpu_affinity: auto` each worker runs on a CPU of its own. Real binary, real backends on
// loopback (see harness.h); the thread placement is read from /proc.

#include <dirent.h>

#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/posix.h"
#include "harness.h"

namespace bluegreen::proxy_test {
namespace {

class WorkersTest : public ProxyTest {
 protected:
  // Opens `n` keep-alive connections to production and has each answered once by blue, so that
  // every one of them has been accepted and is served by some worker.
  void OpenAndUse(uint16_t port, int n, std::vector<std::unique_ptr<HttpConnection>>* conns) {
    for (int i = 0; i < n; ++i) {
      BG_ASSERT_OK_AND_ASSIGN(auto c, HttpConnection::Connect(port));
      BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, c->Get("/"));
      ASSERT_EQ(r.status, 200) << r;
      ASSERT_EQ(r.body, "blue\n") << r;
      conns->push_back(std::move(c));
    }
  }

  // The connection count of each worker, from GET /v1/state.
  static std::vector<int64_t> ConnectionsPerWorker(const Json& state) {
    std::vector<int64_t> out;
    for (const Json& w : Field(state, "workers")) out.push_back(w.value("connections", -1));
    return out;
  }
};

// The CPUs each thread of `pid` may run on ("Cpus_allowed_list" of /proc/PID/task/TID/status).
std::vector<std::string> ThreadCpuLists(pid_t pid) {
  std::vector<std::string> lists;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return lists;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(dir + "/" + e->d_name + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("Cpus_allowed_list:", 0) == 0) {
        const size_t start = line.find_first_not_of(" \t", 18);
        lists.push_back(start == std::string::npos ? "" : line.substr(start));
      }
    }
  }
  ::closedir(d);
  return lists;
}

// The single CPUs that some thread is pinned to (lists naming exactly one CPU).
std::multiset<std::string> PinnedCpus(const std::vector<std::string>& lists) {
  std::multiset<std::string> pinned;
  for (const std::string& l : lists) {
    if (!l.empty() && l.find_first_of(",-") == std::string::npos) pinned.insert(l);
  }
  return pinned;
}

// With 200 connections, the kernel's SO_REUSEPORT hash alone leaves two workers within 2 of
// each other only about one time in six; the hand-off makes it every time.
TEST_F(WorkersTest, ConnectionsAreSpreadEvenlyOverTheWorkers) {
  for (int workers : {2, 3}) {
    SCOPED_TRACE("workers: " + std::to_string(workers));
    BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen([workers](ProxyConfigSpec& spec) {
                              spec.workers = workers;
                            }));
    const int n = 200;
    std::vector<std::unique_ptr<HttpConnection>> conns;
    OpenAndUse(bg.proxy->production_port(), n, &conns);
    if (HasFatalFailure()) return;
    BG_ASSERT_OK_AND_ASSIGN(Json state, bg.proxy->admin().State());
    const std::vector<int64_t> per_worker = ConnectionsPerWorker(state);
    ASSERT_EQ(per_worker.size(), static_cast<size_t>(workers)) << state.dump();
    int64_t total = 0;
    for (int64_t c : per_worker) total += c;
    EXPECT_EQ(total, n) << state.dump();
    const auto [lo, hi] = std::minmax_element(per_worker.begin(), per_worker.end());
    EXPECT_LE(*hi - *lo, 2) << "connections per worker: " << Field(state, "workers").dump();

    // Every connection still works, whichever worker serves it now.
    for (auto& c : conns) {
      BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, c->Get("/"));
      EXPECT_EQ(r.body, "blue\n") << r;
    }
    conns.clear();
    StopProxy(bg.proxy);
  }
}

TEST_F(WorkersTest, AutoAffinityGivesEachWorkerACpuOfItsOwn) {
  const std::vector<int> cpus = AllowedCpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs 2 or more CPUs, this process may use " << cpus.size();
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen([](ProxyConfigSpec& spec) {
                            spec.workers = 2;  // cpu_affinity not written: the default, auto
                          }));
  const std::multiset<std::string> pinned =
      PinnedCpus(ThreadCpuLists(bg.proxy->process().pid()));
  EXPECT_EQ(pinned, (std::multiset<std::string>{std::to_string(cpus[0]), std::to_string(cpus[1])}))
      << "the two workers should run on the first two allowed CPUs, one each";
  EXPECT_NE(bg.proxy->process().Stderr().find("2 workers (on CPUs " + std::to_string(cpus[0]) +
                                              "," + std::to_string(cpus[1]) + ")"),
            std::string::npos)
      << bg.proxy->process().Stderr();
}

TEST_F(WorkersTest, NoneOrMoreWorkersThanCpusLeavesPlacementToTheScheduler) {
  const std::vector<int> cpus = AllowedCpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs 2 or more CPUs, this process may use " << cpus.size();
  const struct {
    int workers;
    std::string affinity;
  } cases[] = {{2, "none"}, {static_cast<int>(cpus.size()) + 1, "auto"}};
  for (const auto& c : cases) {
    SCOPED_TRACE("workers: " + std::to_string(c.workers) + ", cpu_affinity: " + c.affinity);
    BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen([&c](ProxyConfigSpec& spec) {
                              spec.workers = c.workers;
                              spec.cpu_affinity = c.affinity;
                            }));
    EXPECT_TRUE(PinnedCpus(ThreadCpuLists(bg.proxy->process().pid())).empty());
    EXPECT_NE(bg.proxy->process().Stderr().find("workers (not pinned)"), std::string::npos)
        << bg.proxy->process().Stderr();
    BG_ASSERT_OK_AND_ASSIGN(HttpResponse r, FetchGet(bg.proxy->production_port(), "/"));
    EXPECT_EQ(r.body, "blue\n") << r;
    StopProxy(bg.proxy);
  }
}

TEST_F(WorkersTest, CpuAffinityChangesOnlyWithARestart) {
  BG_ASSERT_OK_AND_ASSIGN(BlueGreen bg, StartBlueGreen());
  ProxyConfigSpec next = bg.proxy->spec();
  next.cpu_affinity = "none";
  BG_ASSERT_OK_AND_ASSIGN(AdminResponse r, bg.proxy->admin().Put("/v1/config", next.ToYaml()));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("cpu_affinity"), std::string::npos) << r.body;
  next.cpu_affinity = "auto";  // what it runs with: accepted
  BG_ASSERT_OK_AND_ASSIGN(AdminResponse same, bg.proxy->admin().Put("/v1/config", next.ToYaml()));
  EXPECT_EQ(same.status, 200) << same.body;
}

}  // namespace
}  // namespace bluegreen::proxy_test
