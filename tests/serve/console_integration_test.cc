// Integration tests of the web console's server side (docs/console.md), against the real
// `bluegreen serve`, proxy and tasks: the embedded files (types, ETag, CSP), and the live routes
// read as a client reads them: GET /api/v1/stream and /api/v1/stacks/NAME/stream (chunked
// server-sent events) and GET /api/v1/stacks/NAME/metrics. The browser test (tests/browser)
// drives the same routes from Chromium.
#include <map>
#include <string>

#include "serve/live_updates.h"
#include "serve_harness.h"

namespace bluegreen::serve_it {
namespace {

// A client of one event stream: sends the GET, then decodes the chunked body into events.
class EventStream {
 public:
  struct Event {
    std::string name;
    Json data;
  };

  static Result<std::unique_ptr<EventStream>> Open(uint16_t port, const std::string& path,
                                                   const std::string& token) {
    auto c = HttpConnection::Connect(port, 5s);
    if (!c.ok()) return c.status();
    auto s = std::unique_ptr<EventStream>(new EventStream(std::move(c).value()));
    BG_RETURN_IF_ERROR(s->conn_->Send(
        "GET " + path + " HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + token + "\r\n\r\n"));
    const auto deadline = Clock::now() + 10s;
    while (s->raw_.find("\r\n\r\n") == std::string::npos) {
      if (Clock::now() > deadline) return proxy_test::DeadlineExceeded("no head: " + s->raw_);
      auto more = s->conn_->ReadSome(5s);
      if (!more.ok()) return Unavailable("reading the head: " + more.status().message());
      s->raw_ += *more;
    }
    const size_t end = s->raw_.find("\r\n\r\n");
    s->head_ = s->raw_.substr(0, end + 4);
    s->raw_.erase(0, end + 4);
    return s;
  }

  const std::string& head() const { return head_; }
  bool ended() const { return ended_; }

  // The next event named `name` (others are skipped), or an error after `timeout`.
  Result<Event> Next(const std::string& name, Duration timeout = 20s) {
    return NextWhere(
        name, [](const Json&) { return true; }, timeout);
  }
  Result<Event> NextWhere(const std::string& name, const std::function<bool(const Json&)>& pred,
                          Duration timeout = 20s) {
    const auto deadline = Clock::now() + timeout;
    std::string seen;
    while (true) {
      while (auto e = Pop()) {
        if (e->name == name && pred(e->data)) return *e;
        seen += e->name + " ";
      }
      if (ended_) return Unavailable("the stream ended; events seen: " + seen);
      if (Clock::now() > deadline) {
        return proxy_test::DeadlineExceeded("no " + name + " event; events seen: " + seen);
      }
      ReadMore();
    }
  }

  // Reads until the server ends the body (the last chunk) or closes; true when it did.
  bool WaitEnd(Duration timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!ended_ && Clock::now() < deadline) ReadMore();
    return ended_;
  }

 private:
  explicit EventStream(std::unique_ptr<HttpConnection> c) : conn_(std::move(c)) {}

  // Waits up to a second for more of the body.
  void ReadMore() {
    auto more = conn_->ReadSome(1s);
    if (more.ok()) {
      raw_ += *more;
      Dechunk();
    } else if (conn_->peer_closed()) {
      ended_ = true;
    }
  }

  void Dechunk() {
    while (true) {
      const size_t eol = raw_.find("\r\n");
      if (eol == std::string::npos) return;
      const size_t size = std::strtoull(raw_.substr(0, eol).c_str(), nullptr, 16);
      if (size == 0) {
        ended_ = true;
        return;
      }
      if (raw_.size() < eol + 2 + size + 2) return;
      body_ += raw_.substr(eol + 2, size);
      raw_.erase(0, eol + 2 + size + 2);
    }
  }

  std::optional<Event> Pop() {
    while (true) {
      const size_t end = body_.find("\n\n");
      if (end == std::string::npos) return std::nullopt;
      const std::string block = body_.substr(0, end);
      body_.erase(0, end + 2);
      Event e;
      std::string data;
      for (size_t pos = 0; pos < block.size();) {
        size_t nl = block.find('\n', pos);
        if (nl == std::string::npos) nl = block.size();
        const std::string line = block.substr(pos, nl - pos);
        pos = nl + 1;
        if (line.rfind("event: ", 0) == 0) e.name = line.substr(7);
        if (line.rfind("data: ", 0) == 0) data += line.substr(6);
      }
      if (e.name.empty()) continue;  // a comment (": keep-alive")
      e.data = Json::parse(data, nullptr, false);
      return e;
    }
  }

  std::unique_ptr<HttpConnection> conn_;
  std::string raw_;   // undecoded chunked bytes
  std::string body_;  // decoded event text
  std::string head_;
  bool ended_ = false;
};

// The version a service runs, or "" (also while it has none: null).
std::string VersionOf(const Json& status, const std::string& identifier) {
  const Json v = Service(status, identifier).value("version", Json());
  return v.is_string() ? v.get<std::string>() : "";
}

class ConsoleTest : public ServeTest {
 protected:
  Result<std::unique_ptr<EventStream>> OpenStream(const std::string& path) {
    return EventStream::Open(api_port_, path, token_);
  }

  // A raw GET; the whole response.
  Result<proxy_test::HttpResponse> Get(
      const std::string& path,
      const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    auto c = HttpConnection::Connect(api_port_, 5s);
    if (!c.ok()) return c.status();
    proxy_test::HttpRequest req;
    req.target = path;
    for (const auto& h : headers) req.headers.push_back(h);
    return (*c)->RoundTrip(req, 10s);
  }
};

TEST_F(ConsoleTest, FilesAreServedWithTypesEtagsAndAStrictCsp) {
  auto index = Get("/");
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_EQ(index->status, 200);
  EXPECT_EQ(index->Header("Content-Type"), "text/html; charset=utf-8");
  const std::string csp(index->Header("Content-Security-Policy"));
  EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("script-src 'self'"), std::string::npos) << csp;
  EXPECT_EQ(csp.find("unsafe-inline"), std::string::npos) << csp;
  EXPECT_EQ(index->Header("X-Content-Type-Options"), "nosniff");
  EXPECT_NE(index->body.find("<script type=\"module\" src=\"/console/app.js\"></script>"),
            std::string::npos)
      << index->body;
  // No inline script: every <script> has a src.
  for (size_t at = index->body.find("<script"); at != std::string::npos;
       at = index->body.find("<script", at + 1)) {
    EXPECT_NE(index->body.substr(at, index->body.find('>', at) - at).find(" src="),
              std::string::npos)
        << "an inline script in index.html";
  }

  for (const auto& [path, type] :
       std::map<std::string, std::string>{{"/console/app.js", "text/javascript; charset=utf-8"},
                                          {"/console/style.css", "text/css; charset=utf-8"},
                                          {"/console/icon.svg", "image/svg+xml"}}) {
    auto r = Get(path);
    ASSERT_TRUE(r.ok()) << path << ": " << r.status().ToString();
    EXPECT_EQ(r->status, 200) << path;
    EXPECT_EQ(r->Header("Content-Type"), type) << path;
    EXPECT_EQ(r->Header("Cache-Control"), "no-cache") << path;
    const std::string etag(r->Header("ETag"));
    ASSERT_FALSE(etag.empty()) << path;
    auto again = Get(path, {{"If-None-Match", etag}});
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->status, 304) << path;
    EXPECT_TRUE(again->body.empty()) << path;
  }

  auto missing = Get("/console/nope.js");
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(Json::parse(missing->body, nullptr, false)["error"]["code"], "not_found")
      << missing->body;
}

TEST_F(ConsoleTest, LiveRoutesNeedATokenAndAStack) {
  auto r = Api("GET", "/api/v1/stacks/demo/stream", "", std::string());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->json["error"]["code"], "unauthenticated") << r->body;
  r = Api("GET", "/api/v1/stream", "", std::string("bg_wrong"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 401);
  r = Api("GET", "/api/v1/stacks/demo/stream");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->json["error"]["code"], "not_found") << r->body;
  r = Api("GET", "/api/v1/stacks/demo/metrics");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->json["error"]["code"], "not_found") << r->body;
  r = Api("POST", "/api/v1/stacks/demo/stream", "{}");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->json["error"]["code"], "method_not_allowed") << r->body;
}

TEST_F(ConsoleTest, StackStreamFollowsTheStackUntilItIsRemoved) {
  BG_ASSERT_OK_AND_ASSIGN(StackFile f, NewStackFile("demo", 1));
  BG_ASSERT_OK(UpAndDeploy(f, "v1").status());

  BG_ASSERT_OK_AND_ASSIGN(auto stream, OpenStream("/api/v1/stacks/demo/stream"));
  EXPECT_NE(stream->head().find("Content-Type: text/event-stream"), std::string::npos)
      << stream->head();
  EXPECT_NE(stream->head().find("Transfer-Encoding: chunked"), std::string::npos);
  EXPECT_NE(stream->head().find("Cache-Control: no-store"), std::string::npos);

  // The whole state first.
  BG_ASSERT_OK_AND_ASSIGN(auto status, stream->Next("status"));
  EXPECT_EQ(status.data.value("name", ""), "demo");
  EXPECT_EQ(status.data.value("live", ""), "Code1");
  EXPECT_EQ(VersionOf(status.data, "Code1"), "v1");
  EXPECT_TRUE(status.data["commits"].is_object()) << "no execution built v1: no commits";
  BG_ASSERT_OK_AND_ASSIGN(auto execs, stream->Next("executions"));
  EXPECT_EQ(execs.data, Json::parse(R"({"executions":[]})"));
  BG_ASSERT_OK_AND_ASSIGN(auto metrics, stream->Next("metrics"));
  EXPECT_EQ(metrics.data.value("interval_ms", 0), 1000);
  ASSERT_TRUE(metrics.data["samples"].is_array());

  // Traffic on the production listener shows up in a sample.
  std::atomic<bool> stop{false};
  std::thread load([&] {
    while (!stop) {
      (void)FetchBody(f.production_port);
      std::this_thread::sleep_for(20ms);  // a steady trickle, not a load test
    }
  });
  auto busy = stream->NextWhere("metrics", [](const Json& m) {
    for (const Json& s : m["samples"]) {
      if (s["production"].value("rps", 0.0) > 0) return true;
    }
    return false;
  });
  stop = true;
  load.join();
  ASSERT_TRUE(busy.ok()) << busy.status().ToString();
  const Json sample = busy->data["samples"].back();
  EXPECT_EQ(sample["production"].value("target_group", ""), "demo-blue") << sample.dump();
  EXPECT_EQ(sample["production"].value("identifier", ""), "Code1") << sample.dump();
  EXPECT_EQ(sample["test"].value("target_group", ""), "demo-green") << sample.dump();
  EXPECT_EQ(sample["production"].value("error_rate", -1.0), 0) << sample.dump();
  EXPECT_GT(sample.value("t", int64_t{0}), 0);

  // The same samples over plain GET.
  auto m = Api("GET", "/api/v1/stacks/demo/metrics");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->status, 200);
  EXPECT_EQ(m->json.value("interval_ms", 0), 1000);
  EXPECT_FALSE(m->json["samples"].empty()) << m->body;

  // A change reaches the stream without asking: a deploy on the test side.
  BG_ASSERT_OK_AND_ASSIGN(std::string dir, MakeVersion("v2"));
  CliResult d = Cli({"deploy", "demo", "--version", "v2", "--artifact", dir});
  ASSERT_EQ(d.exit_code, 0) << d.Describe();
  auto deployed =
      stream->NextWhere("status", [](const Json& s) { return VersionOf(s, "Code2") == "v2"; });
  ASSERT_TRUE(deployed.ok()) << deployed.status().ToString();
  EXPECT_EQ(VersionOf(deployed->data, "Code1"), "v1") << "production kept v1";

  // The stack goes: the stream says so and ends.
  CliResult down = Cli({"down", "demo"});
  ASSERT_EQ(down.exit_code, 0) << down.Describe();
  stacks_.erase("demo");
  auto gone = stream->Next("error");
  ASSERT_TRUE(gone.ok()) << gone.status().ToString();
  EXPECT_EQ(gone->data["error"]["code"], "not_found") << gone->data.dump();
  EXPECT_TRUE(stream->WaitEnd(5s)) << "the stream stays open after its stack was removed";
}

TEST_F(ConsoleTest, OverviewStreamListsTheStacks) {
  BG_ASSERT_OK_AND_ASSIGN(auto stream, OpenStream("/api/v1/stream"));
  BG_ASSERT_OK_AND_ASSIGN(auto first, stream->Next("stacks"));
  EXPECT_EQ(first.data, Json::parse(R"({"stacks":[]})"));

  BG_ASSERT_OK_AND_ASSIGN(StackFile f, NewStackFile("demo", 1));
  BG_ASSERT_OK(UpAndDeploy(f, "v1").status());
  auto listed = stream->NextWhere("stacks", [](const Json& d) {
    return d["stacks"].size() == 1 && VersionOf(d["stacks"][0], "Code1") == "v1";
  });
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  const Json& s = listed->data["stacks"][0];
  EXPECT_EQ(s.value("name", ""), "demo");
  EXPECT_EQ(Listener(s, "production").value("port", 0), f.production_port);
  EXPECT_TRUE(s.contains("execution"));
}

TEST(CompleteUtf8PrefixTest, CutsOnlyATrailingIncompleteSequence) {
  using serve::CompleteUtf8Prefix;
  EXPECT_EQ(CompleteUtf8Prefix(""), 0u);
  EXPECT_EQ(CompleteUtf8Prefix("abc"), 3u);
  const std::string euro = "\xE2\x82\xAC";  // three bytes
  EXPECT_EQ(CompleteUtf8Prefix("a" + euro), 4u);
  EXPECT_EQ(CompleteUtf8Prefix("a" + euro.substr(0, 2)), 1u);
  EXPECT_EQ(CompleteUtf8Prefix("a" + euro.substr(0, 1)), 1u);
  const std::string smile = "\xF0\x9F\x98\x80";  // four bytes
  EXPECT_EQ(CompleteUtf8Prefix(smile), 4u);
  EXPECT_EQ(CompleteUtf8Prefix("x" + smile.substr(0, 3)), 1u);
  EXPECT_EQ(CompleteUtf8Prefix("\xC3\xA9"), 2u);
  EXPECT_EQ(CompleteUtf8Prefix("ab\xC3"), 2u);
  EXPECT_EQ(CompleteUtf8Prefix("ab\x80\x80\x80\x80"), 6u) << "stray continuation bytes stay";
}

}  // namespace
}  // namespace bluegreen::serve_it
