// Faults of the state directory (issue 7): its disk full, or read-only. serve's state directory
// is a small tmpfs of the test's own (root only: the tests skip, saying why, when they cannot
// mount one), under a stack that is deployed, live and loaded on its production listener.
//
// Expected (docs/reliability.md "Faults", docs/operating.md): every API call that must write is
// refused with 507 insufficient_storage and a message saying the disk is full or read-only;
// reads still answer; production traffic does not fail; once the directory takes writes again
// the same calls succeed without restarting serve, and SQLite's integrity check says ok. serve
// started on a full or read-only state directory exits 1 with one message naming it.
//
// Figures (requests, failures, the error messages seen) are printed on stderr with "[load]" and
// "[fault]" prefixes.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "serve_harness.h"

namespace bluegreen::serve_it {
namespace {

std::string TextOf(const std::string& path) {
  auto r = ReadFile(path);
  return r.ok() ? *r : std::string();
}

void PrintLoad(const std::string& what, const LoadGenerator::Totals& t) {
  std::fprintf(stderr, "[load] %s: %s\n", what.c_str(), t.ToString().c_str());
}

// PRAGMA integrity_check of the database at `path`, through a connection of the test's own.
std::string IntegrityCheck(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return "cannot open: " + msg;
  }
  sqlite3_busy_timeout(db, 5000);
  std::string out;
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, nullptr) != SQLITE_OK) {
    out = std::string("prepare: ") + sqlite3_errmsg(db);
  } else {
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      if (!out.empty()) out += "\n";
      out += reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    }
    if (rc != SQLITE_DONE) out += std::string(" step: ") + sqlite3_errmsg(db);
  }
  sqlite3_finalize(s);
  sqlite3_close(db);
  return out;
}

// Empties the WAL of the database at `path` (a checkpoint that truncates it), so that serve's
// next write has to grow the file: on a full disk it fails at once rather than after the space
// the WAL already holds is used up.
Status TruncateWal(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return Internal("cannot open " + path);
  }
  sqlite3_busy_timeout(db, 5000);
  int rc = SQLITE_BUSY;
  for (int i = 0; i < 50 && rc != SQLITE_OK; ++i) {
    rc = sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
    if (rc != SQLITE_OK) std::this_thread::sleep_for(20ms);  // a reader of serve's is in the way
  }
  std::string msg = sqlite3_errmsg(db);
  sqlite3_close(db);
  if (rc != SQLITE_OK) return Internal("checkpoint: " + msg);
  return Status::Ok();
}

class StateDirFaultTest : public ServeTest {
 protected:
  static constexpr const char* kTmpfsOptions = "size=16m,mode=0700";

  bool StartsServe() const override { return false; }

  void SetUp() override {
    ServeTest::SetUp();
    if (HasFatalFailure()) return;
    if (::geteuid() != 0) {
      GTEST_SKIP() << "needs root: the state directory is put on a tmpfs of the test's own";
    }
    std::filesystem::create_directories(state_dir_);
    if (::mount("tmpfs", state_dir_.c_str(), "tmpfs", 0, kTmpfsOptions) != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs on " << state_dir_ << ": " << std::strerror(errno);
    }
    mounted_ = true;
  }

  void TearDown() override {
    // `down` and serve's stop need a writable directory with room.
    if (mounted_) {
      RemoveFiller();
      if (read_only_) (void)SetReadOnly(false);
    }
    ServeTest::TearDown();
    if (mounted_) {
      if (::umount2(state_dir_.c_str(), 0) != 0) {
        ADD_FAILURE() << "umount " << state_dir_ << ": " << std::strerror(errno)
                      << " (detached instead)";
        ::umount2(state_dir_.c_str(), MNT_DETACH);
      }
      std::error_code ec;
      if (!getenv("BLUEGREEN_KEEP_TEST_DIR")) std::filesystem::remove_all(root_, ec);
    }
  }

  // Starts serve (see ServeTest::StartServe) and reads the admin token.
  Status StartServeWithToken() {
    BG_RETURN_IF_ERROR(StartServe());
    auto token = ReadFile(state_dir_ + "/admin.token");
    if (!token.ok()) return token.status();
    token_ = std::string(proxy_test::Trim(*token));
    while (!token_.empty() && (token_.back() == '\n' || token_.back() == '\r')) token_.pop_back();
    return Status::Ok();
  }

  // Writes STATE/filler until the tmpfs has no byte left; returns how many bytes it took.
  Result<int64_t> FillDisk() {
    const std::string path = state_dir_ + "/filler";
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return Internal("open " + path + ": " + std::strerror(errno));
    filler_ = true;
    const std::string chunk(1 << 20, 'x');
    int64_t total = 0;
    for (size_t size : {chunk.size(), size_t{4096}, size_t{1}}) {
      for (;;) {
        const ssize_t n = ::write(fd, chunk.data(), size);
        if (n > 0) {
          total += n;
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != ENOSPC) {
          const int err = errno;
          ::close(fd);
          return Internal("write " + path + ": " + std::strerror(err));
        }
        break;
      }
    }
    ::close(fd);
    return total;
  }

  void RemoveFiller() {
    if (!filler_) return;
    ::unlink((state_dir_ + "/filler").c_str());
    filler_ = false;
  }

  // remount,ro or remount,rw of the test's tmpfs.
  Status SetReadOnly(bool ro) {
    const unsigned long flags = MS_REMOUNT | (ro ? MS_RDONLY : 0);
    if (::mount("tmpfs", state_dir_.c_str(), "tmpfs", flags, kTmpfsOptions) != 0) {
      return Unavailable(std::string("remount,") + (ro ? "ro" : "rw") + " " + state_dir_ + ": " +
                         std::strerror(errno));
    }
    read_only_ = ro;
    return Status::Ok();
  }

  // One call that must be refused because the state directory cannot be written: 507 with the
  // error shape and a message containing `says`. The message is kept for the report.
  void ExpectRefused(const std::string& method, const std::string& path, const std::string& body,
                     const std::string& says) {
    SCOPED_TRACE(method + " " + path);
    auto r = Api(method, path, body);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 507) << r->body;
    ASSERT_FALSE(r->json.is_discarded()) << r->body;
    const Json error = r->json.value("error", Json::object());
    EXPECT_EQ(error.value("code", ""), "insufficient_storage") << r->body;
    const std::string message = error.value("message", "");
    EXPECT_NE(message.find(says), std::string::npos) << r->body;
    seen_.push_back(method + " " + path + " -> " + std::to_string(r->status) + " " + message);
  }

  // A call that must succeed now with `status`.
  void ExpectStatus(const std::string& method, const std::string& path, const std::string& body,
                    int status) {
    auto r = Api(method, path, body);
    ASSERT_TRUE(r.ok()) << method << " " << path << ": " << r.status().ToString();
    EXPECT_EQ(r->status, status) << method << " " << path << ": " << r->body;
  }

  // The reads an operator needs while the directory cannot be written: all answer 200.
  void ExpectReadsWork(const std::string& stack) {
    for (const std::string& path :
         {std::string("/api/v1/stacks"), "/api/v1/stacks/" + stack,
          "/api/v1/stacks/" + stack + "/versions", "/api/v1/stacks/" + stack + "/events",
          "/api/v1/stacks/" + stack + "/executions", std::string("/api/v1/tokens"),
          std::string("/api/v1/whoami")}) {
      ExpectStatus("GET", path, "", 200);
    }
    CliResult st = Cli({"status", stack});
    EXPECT_EQ(st.exit_code, 0) << st.Describe();
  }

  // The proxy's config as serve's proxy has it now (its admin socket).
  Result<Json> ProxyConfig() {
    HttpClientRequest req;
    req.target = "/v1/config";
    auto r = HttpCall("unix:" + state_dir_ + "/proxy/admin.sock", req, 5s);
    if (!r.ok()) return r.status();
    if (r->status != 200) return Internal("GET /v1/config: " + r->body);
    return Json::parse(r->body);
  }

  // The calls that write, in the order the test makes them, while the state directory cannot
  // be written; `says` is what each refusal's message must contain.
  void RefuseEveryWrite(const StackFile& changed, const std::string& v3_dir,
                        const std::string& says) {
    ExpectRefused("POST", "/api/v1/tokens", R"({"name": "while-faulty", "role": "viewer"})", says);
    ExpectRefused("DELETE", "/api/v1/tokens/before", "", says);
    ExpectRefused("PUT", "/api/v1/stacks/demo/secrets/webhook_secret", "s3cret-value", says);
    ExpectRefused("POST", "/api/v1/stacks/demo/versions",
                  Json{{"version", "v3"}, {"artifact_dir", v3_dir}}.dump(), says);
    ExpectRefused("POST", "/api/v1/stacks/demo/deploy", R"({"version": "v2"})", says);
    ExpectRefused("PUT", "/api/v1/stacks/demo", changed.ToYaml(), says);
    // The CLI shows the same message and fails.
    CliResult up = Cli({"up", "-f", WriteStack(changed, "changed.yaml")});
    EXPECT_NE(up.exit_code, 0) << up.Describe();
    EXPECT_NE(up.err.find(says), std::string::npos) << up.Describe();
    seen_.push_back("CLI `bluegreen up -f changed.yaml` -> exit " + std::to_string(up.exit_code) +
                    ": " + std::string(proxy_test::Trim(up.err)));
    // No half-written secret is left.
    std::error_code ec;
    EXPECT_FALSE(std::filesystem::exists(state_dir_ + "/secrets/demo/webhook_secret.tmp", ec));
    EXPECT_FALSE(std::filesystem::exists(state_dir_ + "/secrets/demo/webhook_secret", ec));
  }

  // The same calls succeed once the directory takes writes again; the deploy of v2 completes.
  void EveryWriteWorks(const StackFile& changed, const std::string& v3_dir) {
    ExpectStatus("POST", "/api/v1/tokens", R"({"name": "while-faulty", "role": "viewer"})", 201);
    ExpectStatus("DELETE", "/api/v1/tokens/before", "", 200);
    ExpectStatus("PUT", "/api/v1/stacks/demo/secrets/webhook_secret", "s3cret-value", 200);
    ExpectStatus("POST", "/api/v1/stacks/demo/versions",
                 Json{{"version", "v3"}, {"artifact_dir", v3_dir}}.dump(), 201);
    auto up = Api("PUT", "/api/v1/stacks/demo", changed.ToYaml());
    ASSERT_TRUE(up.ok()) << up.status().ToString();
    EXPECT_EQ(up->status, 200) << up->body;
    EXPECT_FALSE(up->json.value("changes", Json::array()).empty()) << up->body;
    ExpectStatus("POST", "/api/v1/stacks/demo/deploy", R"({"version": "v2"})", 202);
    std::string why;
    auto done = WaitForStatus(
        "demo",
        [&](const Json& s) {
          return Service(s, "Code2").value("version", Json()) == "v2" && Settled(s, &why);
        },
        40s, "v2 on Code2, settled");
    EXPECT_TRUE(done.ok()) << why << "; " << done.status().ToString();
  }

  // No execution is active (none can be stuck), no rollout is in progress or failed.
  void ExpectNothingStuck() {
    Json es = Get("/api/v1/stacks/demo/executions");
    for (const Json& e : es.value("executions", Json::array())) {
      const std::string status = e.value("status", "");
      EXPECT_TRUE(status != "InProgress" && status != "WaitingForApproval") << e.dump();
    }
    Json st = Get("/api/v1/stacks/demo");
    for (const Json& s : st.value("services", Json::array())) {
      EXPECT_TRUE(s.value("rollout", Json()).is_null()) << s.dump();
    }
  }

  void PrintSeen(const std::string& fault) {
    for (const std::string& s : seen_) {
      std::fprintf(stderr, "[fault] %s: %s\n", fault.c_str(), s.c_str());
    }
    seen_.clear();
  }

  // serve's stderr lines from byte `from` on that contain `needle`.
  std::vector<std::string> ServeLogLines(size_t from, const std::string& needle) {
    std::vector<std::string> out;
    const std::string err = serve_->Stderr();
    size_t at = std::min(from, err.size());
    while (at < err.size()) {
      size_t nl = err.find('\n', at);
      if (nl == std::string::npos) nl = err.size();
      std::string line = err.substr(at, nl - at);
      if (line.find(needle) != std::string::npos) out.push_back(line);
      at = nl + 1;
    }
    return out;
  }

  // Up and deploy of v1 (on both sides, production live), v2 registered, a token "before"; load
  // on production. Returns the stack file.
  Result<StackFile> LiveStackUnderLoad(std::unique_ptr<LoadGenerator>* load) {
    BG_RETURN_IF_ERROR(StartServeWithToken());
    auto f = NewStackFile("demo", 2);
    if (!f.ok()) return f.status();
    auto settled = UpAndDeploy(*f, "v1");
    if (!settled.ok()) return settled.status();
    auto v2 = MakeVersion("v2");
    if (!v2.ok()) return v2.status();
    auto reg = Api("POST", "/api/v1/stacks/demo/versions",
                   Json{{"version", "v2"}, {"artifact_dir", *v2}}.dump());
    if (!reg.ok() || reg->status != 201) return Internal("register v2 failed");
    auto tok = Api("POST", "/api/v1/tokens", R"({"name": "before", "role": "viewer"})");
    if (!tok.ok() || tok->status != 201) return Internal("token create failed");
    *load = std::make_unique<LoadGenerator>("production", f->production_port, 4);
    (*load)->Start();
    if (!(*load)->WaitForMore({}, 200, 10s))
      return Internal("no load: " + (*load)->Snapshot().ToString());
    return f;
  }

  bool mounted_ = false;
  bool filler_ = false;
  bool read_only_ = false;
  std::vector<std::string> seen_;  // the refusals, for the report
};

TEST_F(StateDirFaultTest, DiskFullUnderLoad) {
  std::unique_ptr<LoadGenerator> prod;
  BG_ASSERT_OK_AND_ASSIGN(StackFile f, LiveStackUnderLoad(&prod));
  BG_ASSERT_OK_AND_ASSIGN(std::string v3, MakeVersion("v3"));
  StackFile changed = f;
  changed.deregistration_delay = "3s";
  std::optional<ProcEntry> proxy = ProxyProcess();
  ASSERT_TRUE(proxy.has_value());
  BG_ASSERT_OK_AND_ASSIGN(Json proxy_before, ProxyConfig());

  BG_ASSERT_OK(TruncateWal(state_dir_ + "/bluegreen.db"));
  const size_t log_from = serve_->StderrSize();
  const LoadGenerator::Totals at_fault = prod->Snapshot();
  BG_ASSERT_OK_AND_ASSIGN(int64_t filled, FillDisk());
  std::fprintf(stderr, "[fault] disk full: the filler took %lld bytes\n",
               static_cast<long long>(filled));

  RefuseEveryWrite(changed, v3, "disk is full");
  ExpectReadsWork("demo");
  // The proxy refuses a change it cannot persist, and changes nothing.
  {
    HttpClientRequest req;
    req.method = "POST";
    req.target = "/v1/swap";
    req.body = R"({"listeners": ["demo-production", "demo-test"]})";
    auto r = HttpCall("unix:" + state_dir_ + "/proxy/admin.sock", req, 10s);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 507) << r->body;
    EXPECT_NE(r->body.find("No space left on device"), std::string::npos) << r->body;
    seen_.push_back("proxy POST /v1/swap -> " + std::to_string(r->status) + " " + r->body);
    BG_ASSERT_OK_AND_ASSIGN(Json proxy_now, ProxyConfig());
    EXPECT_EQ(proxy_now, proxy_before) << "the proxy changed its config on a refused swap";
  }
  // Some seconds of the fault: serve's loops keep running, production keeps flowing.
  ASSERT_TRUE(prod->WaitForMore(prod->Snapshot(), 1000, 20s));
  std::this_thread::sleep_for(3s);  // what serve's reconciler does meanwhile is the point
  EXPECT_TRUE(serve_->Running()) << serve_->Stderr();
  std::optional<ProcEntry> proxy_now = ProxyProcess();
  ASSERT_TRUE(proxy_now.has_value()) << "the proxy died";
  EXPECT_EQ(proxy_now->pid, proxy->pid);
  const LoadGenerator::Totals during = prod->Snapshot().Minus(at_fault);
  const std::vector<std::string> log_lines = ServeLogLines(log_from, "");
  std::fprintf(stderr, "[fault] disk full: serve logged %zu lines while the disk was full\n",
               log_lines.size());
  for (const std::string& l : log_lines) std::fprintf(stderr, "[fault]   %s\n", l.c_str());

  RemoveFiller();
  const LoadGenerator::Totals at_recovery = prod->Snapshot();
  EveryWriteWorks(changed, v3);
  ExpectNothingStuck();
  EXPECT_EQ(IntegrityCheck(state_dir_ + "/bluegreen.db"), "ok");
  std::string got;
  EXPECT_TRUE(AllAnswer(f.test_port, "v2\n", 5, &got)) << got;

  ASSERT_TRUE(prod->WaitForMore(prod->Snapshot(), 200, 10s));
  prod->Stop();
  const LoadGenerator::Totals total = prod->Snapshot();
  PrintSeen("disk full");
  PrintLoad("production while the disk was full", during);
  PrintLoad("production after the filler was removed", total.Minus(at_recovery));
  PrintLoad("production (whole test)", total);
  EXPECT_EQ(total.failures, 0) << total.ToString();
  EXPECT_EQ(total.Others("v1\n"), "");
}

// The proxy SIGKILLed while the disk is full: serve starts a new one, which serves its state file
// although it cannot rewrite it (it used to exit at start), from a config file serve did not
// replace with a truncated one (it used to).
TEST_F(StateDirFaultTest, ProxyKilledWhileDiskIsFull) {
  std::unique_ptr<LoadGenerator> prod;
  BG_ASSERT_OK_AND_ASSIGN(StackFile f, LiveStackUnderLoad(&prod));
  std::optional<ProcEntry> proxy = ProxyProcess();
  ASSERT_TRUE(proxy.has_value());
  BG_ASSERT_OK(TruncateWal(state_dir_ + "/bluegreen.db"));
  BG_ASSERT_OK_AND_ASSIGN(int64_t filled, FillDisk());
  std::fprintf(stderr, "[fault] disk full: the filler took %lld bytes\n",
               static_cast<long long>(filled));
  const size_t log_from = serve_->StderrSize();

  ASSERT_EQ(::kill(proxy->pid, SIGKILL), 0);
  const auto killed = Clock::now();
  const LoadGenerator::Totals at_kill = prod->Snapshot();
  std::optional<ProcEntry> replaced;
  ASSERT_TRUE(WaitUntil(
      [&] {
        replaced = ProxyProcess();
        return replaced && replaced->pid != proxy->pid && FetchBody(f.production_port) == "v1\n";
      },
      20s))
      << "no new proxy serving production; serve's stderr:\n"
      << serve_->Stderr() << "\nproxy.log:\n"
      << TextOf(state_dir_ + "/proxy/proxy.log");
  const double back_s = SecondsSince(killed);
  const LoadGenerator::Totals at_back = prod->Snapshot();
  ASSERT_TRUE(prod->WaitForMore(at_back, 1000, 20s));
  std::this_thread::sleep_for(2s);  // serve's passes with the new proxy: no second one started
  std::optional<ProcEntry> still = ProxyProcess();
  ASSERT_TRUE(still.has_value());
  EXPECT_EQ(still->pid, replaced->pid) << "serve started the proxy again";
  const LoadGenerator::Totals after_back = prod->Snapshot().Minus(at_back);
  const std::vector<std::string> lines = ServeLogLines(log_from, "");
  Json config = Json::parse(TextOf(state_dir_ + "/proxy/proxy.json"), nullptr, false);
  EXPECT_FALSE(config.is_discarded()) << "proxy.json is not JSON";
  ExpectReadsWork("demo");

  RemoveFiller();
  ExpectStatus("POST", "/api/v1/tokens", R"({"name": "after", "role": "viewer"})", 201);
  BG_ASSERT_OK_AND_ASSIGN(Json settled, WaitSettled("demo", 30s));
  (void)settled;
  EXPECT_EQ(IntegrityCheck(state_dir_ + "/bluegreen.db"), "ok");
  // The handle serve could not record while the disk was full is recorded now: a restarted
  // serve adopts this proxy (it does not start another).
  serve_->Stop(10s);
  BG_ASSERT_OK(StartServeWithToken());
  BG_ASSERT_OK_AND_ASSIGN(Json resettled, WaitSettled("demo", 30s));
  (void)resettled;
  std::optional<ProcEntry> adopted = ProxyProcess();
  ASSERT_TRUE(adopted.has_value());
  EXPECT_EQ(adopted->pid, replaced->pid) << "the restarted serve did not adopt the proxy";

  prod->Stop();
  const LoadGenerator::Totals total = prod->Snapshot();
  std::fprintf(stderr, "[fault] proxy killed, disk full: production answered again after %.2f s\n",
               back_s);
  std::fprintf(stderr, "[fault] serve logged %zu lines from the kill to 2 s after\n", lines.size());
  for (const std::string& l : lines) std::fprintf(stderr, "[fault]   %s\n", l.c_str());
  PrintLoad("production from the kill until it answered again", at_back.Minus(at_kill));
  PrintLoad("production after it answered again (disk still full, then freed)",
            total.Minus(at_back));
  PrintLoad("production (whole test)", total);
  EXPECT_EQ(after_back.failures, 0) << after_back.ToString();
  EXPECT_EQ(total.Minus(at_back).failures, 0) << total.Minus(at_back).ToString();
  EXPECT_EQ(total.Others("v1\n"), "");
}

// The state directory remounted read-only under load. Linux refuses `remount,ro` of a
// filesystem with files open for writing (EBUSY), and serve (its store), the proxy (its log) and
// every task (its log) keep theirs open: the test checks that, and that the attempt changes
// nothing. A directory that is read-only when serve starts is StartRefusedOnFullOrReadOnlyStateDir.
TEST_F(StateDirFaultTest, ReadOnlyRemountUnderLoadIsRefusedByTheKernel) {
  std::unique_ptr<LoadGenerator> prod;
  BG_ASSERT_OK_AND_ASSIGN(StackFile f, LiveStackUnderLoad(&prod));
  Status ro = SetReadOnly(true);
  if (ro.ok()) {
    // A kernel that allows it: the same expectations as for a full disk.
    BG_ASSERT_OK_AND_ASSIGN(std::string v3, MakeVersion("v3"));
    StackFile changed = f;
    changed.deregistration_delay = "3s";
    RefuseEveryWrite(changed, v3, "read-only");
    ExpectReadsWork("demo");
    BG_ASSERT_OK(SetReadOnly(false));
    EveryWriteWorks(changed, v3);
  } else {
    EXPECT_NE(ro.message().find("busy"), std::string::npos) << ro.ToString();
    seen_.push_back(ro.message());
    ExpectReadsWork("demo");
    ExpectStatus("POST", "/api/v1/tokens", R"({"name": "after-remount", "role": "viewer"})", 201);
  }
  ExpectNothingStuck();
  EXPECT_EQ(IntegrityCheck(state_dir_ + "/bluegreen.db"), "ok");
  ASSERT_TRUE(prod->WaitForMore(prod->Snapshot(), 200, 10s));
  prod->Stop();
  const LoadGenerator::Totals total = prod->Snapshot();
  PrintSeen("read-only remount under load");
  PrintLoad("production (whole test)", total);
  EXPECT_EQ(total.failures, 0) << total.ToString();
  EXPECT_EQ(total.Others("v1\n"), "");
}

TEST_F(StateDirFaultTest, StartRefusedOnFullOrReadOnlyStateDir) {
  BG_ASSERT_OK(StartServeWithToken());
  const std::string token = token_;
  {
    std::optional<int> st = serve_->Stop(10s);
    ASSERT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0);
    serve_.reset();
  }
  // serve on the directory as it is now; returns its exit code and stderr.
  auto start = [this](const std::string& what, std::string* err) -> int {
    auto p = Process::Start(BLUEGREEN_BINARY, {"serve", "--state-dir", state_dir_, "--api",
                                               "127.0.0.1:" + std::to_string(api_port_)});
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    if (!p.ok()) return -1;
    std::optional<int> st = (*p)->WaitExit(20s);
    (*p)->WaitForOutputClosed(5s);
    *err = (*p)->Stderr();
    std::fprintf(stderr, "[fault] serve started on a %s state directory: %s; stderr:\n%s",
                 what.c_str(), proxy_test::DescribeWaitStatus(st).c_str(), err->c_str());
    if (!st) {
      ADD_FAILURE() << "serve did not exit on a " << what << " state directory";
      (*p)->Signal(SIGKILL);
      return -1;
    }
    return WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
  };
  auto one_clear_line = [this](const std::string& err, const std::string& says) {
    EXPECT_NE(err.find(state_dir_), std::string::npos) << err;
    EXPECT_NE(err.find(says), std::string::npos) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_EQ(err.find("terminate"), std::string::npos) << err;
  };

  BG_ASSERT_OK_AND_ASSIGN(int64_t filled, FillDisk());
  std::fprintf(stderr, "[fault] disk full: the filler took %lld bytes\n",
               static_cast<long long>(filled));
  std::string err;
  EXPECT_EQ(start("full", &err), 1);
  one_clear_line(err, "is full");
  RemoveFiller();

  BG_ASSERT_OK(SetReadOnly(true));
  EXPECT_EQ(start("read-only", &err), 1);
  one_clear_line(err, "is read-only");
  BG_ASSERT_OK(SetReadOnly(false));

  // Writable again: serve starts on the same store, with the same admin token.
  BG_ASSERT_OK(StartServeWithToken());
  EXPECT_EQ(token_, token);
  ExpectStatus("POST", "/api/v1/tokens", R"({"name": "after", "role": "viewer"})", 201);
  EXPECT_EQ(IntegrityCheck(state_dir_ + "/bluegreen.db"), "ok");
}

}  // namespace
}  // namespace bluegreen::serve_it
