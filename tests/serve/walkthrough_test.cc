// The README's walkthrough, end to end, through the CLI (and git) only, as a newcomer runs it:
// `bluegreen quickstart` -> commit the colour change -> `bluegreen watch --until-review` (the test
// URL shows green, production the old colour) -> `bluegreen approve` while a load generator runs
// on the production URL (production turns green, zero failed requests) -> `bluegreen rollback
// --yes` (the old colour, zero failed requests) -> `bluegreen quickstart --cleanup` leaves no
// process and no listener behind.
//
// Differences from the README, for a test that runs next to others: the state directory and the
// API address are the test's own (BLUEGREEN_STATE_DIR, BLUEGREEN_API, as a user may set them), and
// the two listener ports are picked free and passed with --production-port and --test-port.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "common/net.h"
#include "serve_harness.h"

namespace bluegreen::serve_it {
namespace {

constexpr char kBlue[] = "#1E90FF";
constexpr char kGreen[] = "#20E941";

class WalkthroughTest : public ServeTest {
 protected:
  bool StartsServe() const override { return false; }  // the quickstart starts it

  // The page's colour: "blue", "green", or what came instead.
  static std::string Colour(const std::string& body) {
    if (body.find(std::string("background-color: ") + kGreen) != std::string::npos) {
      return "green";
    }
    if (body.find(std::string("background-color: ") + kBlue) != std::string::npos) return "blue";
    return "other: " + body.substr(0, 200);
  }

  // `n` fresh GETs: all of them `colour`, or what came instead.
  static bool AllColour(uint16_t port, const std::string& colour, int n, std::string* got) {
    for (int i = 0; i < n; ++i) {
      const std::string c = Colour(FetchBody(port));
      if (c != colour) {
        *got = "request " + std::to_string(i) + ": " + c;
        return false;
      }
    }
    return true;
  }

  // The load's answers by colour.
  static std::map<std::string, int64_t> ByColour(const LoadGenerator::Totals& t) {
    std::map<std::string, int64_t> out;
    for (const auto& [body, n] : t.bodies) out[Colour(body)] += n;
    return out;
  }

  static std::string Describe(const std::map<std::string, int64_t>& m) {
    std::string out;
    for (const auto& [k, n] : m) out += k.substr(0, 40) + "=" + std::to_string(n) + " ";
    return out;
  }

  // Runs the CLI command `args` (an approve or a rollback) while 4 threads load the production
  // port: no request fails, and after the command has answered production is `to` (at most one
  // request per thread, sent before the answer, may still come back `from`).
  void SwapUnderLoad(const std::vector<std::string>& args, uint16_t production,
                     const std::string& from, const std::string& to) {
    LoadGenerator load("production", production);
    load.Start();
    ASSERT_TRUE(load.WaitForMore({}, 300, 20s)) << load.Snapshot().ToString();
    CliResult r = Cli(args);
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    const LoadGenerator::Totals at_answer = load.Snapshot();
    ASSERT_TRUE(load.WaitForMore(at_answer, 500, 20s)) << load.Snapshot().ToString();
    load.Stop();
    const LoadGenerator::Totals all = load.Snapshot();
    std::map<std::string, int64_t> after = ByColour(all.Minus(at_answer));
    std::fprintf(stderr, "[walkthrough] production during `%s`: %lld requests, %lld failed; by "
                 "colour: %s; sent after it answered: %s\n",
                 args[0].c_str(), static_cast<long long>(all.requests),
                 static_cast<long long>(all.failures), Describe(ByColour(all)).c_str(),
                 Describe(after).c_str());
    EXPECT_EQ(all.failures, 0) << all.ToString();
    EXPECT_GT(ByColour(all)[from], 0) << "the load started before the swap";
    EXPECT_LE(after[from], 4) << Describe(after);
    EXPECT_GT(after[to], 400) << Describe(after);
  }

  // `git ARGS` in `dir`; the exit status.
  static int Git(const std::string& dir, const std::string& args) {
    return std::system(("git -C '" + dir + "' " + args + " >/dev/null 2>&1").c_str());
  }
};

TEST_F(WalkthroughTest, QuickstartApproveRollbackCleanup) {
  BG_ASSERT_OK_AND_ASSIGN(uint16_t production, PickFreePort());
  BG_ASSERT_OK_AND_ASSIGN(uint16_t test, PickFreePort());
  const std::string dir = root_ + "/quickstart";

  // 1. The quickstart: the sample app, its stack, serve, the first release.
  CliResult qs = Cli({"quickstart", "--dir", dir, "--production-port", std::to_string(production),
                      "--test-port", std::to_string(test)},
                     180s);
  ASSERT_EQ(qs.exit_code, 0) << qs.Describe();
  std::fprintf(stderr, "[walkthrough] quickstart said:\n%s\n", qs.out.c_str());
  EXPECT_NE(qs.out.find("http://127.0.0.1:" + std::to_string(production) + "/"),
            std::string::npos)
      << qs.out;
  EXPECT_NE(qs.out.find("http://127.0.0.1:" + std::to_string(test) + "/"), std::string::npos)
      << qs.out;
  EXPECT_NE(qs.out.find("console     http://" + ApiAddress() + "/"), std::string::npos) << qs.out;
  EXPECT_NE(qs.out.find("token       bg_"), std::string::npos) << qs.out;
  std::string got;
  EXPECT_TRUE(AllColour(production, "blue", 5, &got)) << "production: " << got;
  EXPECT_TRUE(AllColour(test, "blue", 5, &got)) << "test: " << got;

  // Running it again is safe: nothing is created twice, nothing changes.
  CliResult again = Cli({"quickstart", "--dir", dir}, 120s);
  ASSERT_EQ(again.exit_code, 0) << again.Describe();
  EXPECT_NE(again.out.find("the sample app is there"), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("stack quickstart is up to date"), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("serve answers at"), std::string::npos) << again.out;
  EXPECT_TRUE(AllColour(production, "blue", 5, &got)) << "production: " << got;

  // 2. Make it green and commit (the README's sed and git commit).
  const std::string app = dir + "/app";
  {
    std::ifstream in(app + "/index.html");
    std::stringstream text;
    text << in.rdbuf();
    std::string page = text.str();
    const size_t at = page.find(kBlue);
    ASSERT_NE(at, std::string::npos) << "index.html has no " << kBlue;
    page.replace(at, std::string(kBlue).size(), kGreen);
    std::ofstream(app + "/index.html", std::ios::trunc) << page;
  }
  ASSERT_EQ(Git(app, "commit -qam 'Make the background green'"), 0);

  // 3. The pipeline builds it and deploys it to the test side; it waits for approval.
  CliResult watch = Cli({"watch", "quickstart", "--until-review"}, 180s);
  ASSERT_EQ(watch.exit_code, 0) << watch.Describe();
  EXPECT_NE(watch.out.find("Review WaitingForApproval"), std::string::npos) << watch.Describe();
  EXPECT_TRUE(AllColour(test, "green", 10, &got)) << "test: " << got;
  EXPECT_TRUE(AllColour(production, "blue", 10, &got)) << "production: " << got;

  // 4. Approve while a load generator runs on the production URL.
  SwapUnderLoad({"approve", "quickstart", "--comment", "Looks good"}, production, "blue", "green");
  EXPECT_TRUE(AllColour(production, "green", 10, &got)) << "production: " << got;
  EXPECT_TRUE(AllColour(test, "blue", 10, &got)) << "test: " << got;
  CliResult executions = Cli({"executions", "quickstart"});
  EXPECT_NE(executions.out.find("Make the background green"), std::string::npos)
      << executions.Describe();

  // 5. Roll back: one swap, under load again.
  SwapUnderLoad({"rollback", "quickstart", "--yes"}, production, "green", "blue");
  EXPECT_TRUE(AllColour(production, "blue", 10, &got)) << "production: " << got;

  // 6. Clean up: no process and no listener left.
  CliResult cleanup = Cli({"quickstart", "--cleanup", "--dir", dir}, 120s);
  ASSERT_EQ(cleanup.exit_code, 0) << cleanup.Describe();
  std::vector<ProcEntry> left;
  EXPECT_TRUE(WaitUntil(
      [&] {
        left = ProcessesOf(root_);
        return left.empty();
      },
      10s))
      << "processes left after the cleanup: " << (left.empty() ? "" : left[0].Describe());
  for (uint16_t port : {production, test, api_port_}) {
    EXPECT_TRUE(CheckPortBindable(port).ok()) << "port " << port << " is still in use";
  }
}

}  // namespace
}  // namespace bluegreen::serve_it
