// `bluegreen quickstart`: the reference architecture's walkthrough on one machine. Creates the
// sample application (a git repository the pipeline builds with the machine's C compiler), its
// stack file, starts serve when none answers, runs `up`, waits for the first execution, and says
// where everything is and what to do next. Safe to run again: what exists is kept.
// `--cleanup` takes it down again. docs/quickstart.md is the user's guide.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "cli/api_client.h"
#include "cli/cli.h"
#include "common/http_client.h"
#include "common/net.h"
#include "common/posix.h"
#include "common/subprocess.h"
#include "stack/stack_spec.h"

extern char** environ;  // NOLINT(readability-identifier-naming)

namespace bluegreen::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr char kStackName[] = "quickstart";
constexpr char kBlue[] = "#1E90FF";
constexpr char kGreen[] = "#20E941";

// The sample application's files, written once into DIR/app.
constexpr char kAppC[] = R"APP(/* The bluegreen quickstart's sample application: a small HTTP/1.1 server that answers every
 * request with index.html, its {{VERSION}} replaced by the version this binary was built as.
 * Built by the pipeline's build stage with the machine's C compiler:
 *   cc -O2 -DVERSION="\"$BLUEGREEN_VERSION\"" -o app app.c
 * Run as `./app PORT` (or with PORT in the environment). Keep-alive, many connections, no
 * threads: poll() over every open connection. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef VERSION
#define VERSION "dev"
#endif

enum { kMaxConns = 1024, kBufSize = 16384 };

struct conn {
  int fd;
  size_t len;
  char buf[kBufSize];
};

static char *response;     /* headers and page of a GET */
static size_t response_len;
static size_t headers_len; /* of a HEAD: the headers only */

static char *read_page(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  size_t cap = 4096, n = 0;
  char *s = malloc(cap);
  size_t got;
  while (s != NULL && (got = fread(s + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) s = realloc(s, cap *= 2);
  }
  fclose(f);
  *len = n;
  return s;
}

/* index.html with every {{VERSION}} replaced, behind the response headers. */
static int build_response(void) {
  size_t page_len = 0;
  char *page = read_page("index.html", &page_len);
  if (page == NULL) {
    perror("index.html");
    return -1;
  }
  const char *mark = "{{VERSION}}";
  size_t mark_len = strlen(mark), version_len = strlen(VERSION);
  size_t marks = 0;
  for (size_t i = 0; i + mark_len <= page_len; ++i) marks += memcmp(page + i, mark, mark_len) == 0;
  char *body = malloc(page_len + marks * version_len + 1);
  size_t body_len = 0;
  for (size_t i = 0; i < page_len;) {
    if (page_len - i >= mark_len && memcmp(page + i, mark, mark_len) == 0) {
      memcpy(body + body_len, VERSION, version_len);
      body_len += version_len;
      i += mark_len;
    } else {
      body[body_len++] = page[i++];
    }
  }
  free(page);
  char head[256];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                   "Content-Length: %zu\r\nCache-Control: no-store\r\n\r\n",
                   body_len);
  headers_len = (size_t)n;
  response_len = headers_len + body_len;
  response = malloc(response_len);
  memcpy(response, head, headers_len);
  memcpy(response + headers_len, body, body_len);
  free(body);
  return 0;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      struct pollfd pfd = {fd, POLLOUT, 0};
      if (poll(&pfd, 1, 5000) <= 0) return -1;
      continue;
    }
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Answers every complete request in c->buf; -1 when the connection must close. */
static int serve_requests(struct conn *c) {
  for (;;) {
    char *end = NULL;
    for (size_t i = 0; i + 3 < c->len; ++i) {
      if (memcmp(c->buf + i, "\r\n\r\n", 4) == 0) {
        end = c->buf + i + 4;
        break;
      }
    }
    if (end == NULL) return c->len == kBufSize ? -1 : 0;
    int head = c->len >= 5 && memcmp(c->buf, "HEAD ", 5) == 0;
    char *line_end = memchr(c->buf, '\r', c->len);
    int http10 = line_end != NULL && line_end - c->buf >= 8 && memcmp(line_end - 8, "HTTP/1.0", 8) == 0;
    if (write_all(c->fd, response, head ? headers_len : response_len) != 0) return -1;
    if (http10) return -1;
    size_t used = (size_t)(end - c->buf);
    memmove(c->buf, end, c->len - used);
    c->len -= used;
  }
}

int main(int argc, char **argv) {
  const char *port_text = argc > 1 ? argv[1] : getenv("PORT");
  int port = port_text != NULL ? atoi(port_text) : 0;
  if (port <= 0 || port > 65535) {
    fprintf(stderr, "usage: %s PORT (or PORT in the environment)\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if (build_response() != 0) return 1;
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {0};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons((unsigned short)port);
  if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 511) != 0) {
    perror("listen");
    return 1;
  }
  printf("sample app %s listening on port %d\n", VERSION, port);
  fflush(stdout);

  static struct conn *conns[kMaxConns];
  static struct pollfd fds[kMaxConns + 1];
  int n = 0;
  for (;;) {
    fds[0].fd = listener;
    fds[0].events = n < kMaxConns ? POLLIN : 0;
    for (int i = 0; i < n; ++i) {
      fds[i + 1].fd = conns[i]->fd;
      fds[i + 1].events = POLLIN;
    }
    if (poll(fds, (nfds_t)n + 1, -1) < 0) {
      if (errno == EINTR) continue;
      perror("poll");
      return 1;
    }
    for (int i = n - 1; i >= 0; --i) {
      if (fds[i + 1].revents == 0) continue;
      struct conn *c = conns[i];
      ssize_t r = read(c->fd, c->buf + c->len, kBufSize - c->len);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0 || (c->len += (size_t)r, serve_requests(c) != 0)) {
        close(c->fd);
        free(c);
        conns[i] = conns[--n];
      }
    }
    if (fds[0].revents & POLLIN) {
      int fd = accept(listener, NULL, NULL);
      if (fd >= 0) {
        struct conn *c = calloc(1, sizeof *c);
        c->fd = fd;
        conns[n++] = c;
      }
    }
  }
}
)APP";

constexpr char kIndexHtml[] = R"APP(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bluegreen sample app {{VERSION}}</title>
<style>
  body {
    margin: 0;
    min-height: 100vh;
    display: flex;
    align-items: center;
    justify-content: center;
    font-family: system-ui, -apple-system, "Segoe UI", sans-serif;
    color: #ffffff;
    background-color: #1E90FF;
  }
  main { text-align: center; padding: 2rem; }
  h1 { font-size: 2.5rem; margin: 0 0 0.5rem; }
  p { font-size: 1.25rem; margin: 0; opacity: 0.9; }
</style>
</head>
<body>
<main>
  <h1>Hello from bluegreen</h1>
  <p>version {{VERSION}}</p>
</main>
</body>
</html>
)APP";

constexpr char kGitignore[] = "/app\n";

// The stack file, with the repository's path and the two ports.
std::string StackFile(const std::string& repo, uint16_t production, uint16_t test) {
  return fmt::format(R"(# The quickstart's stack (docs/stack-file.md): the sample app in {repo},
# built by the pipeline on every commit to main, deployed to the side behind the test listener,
# made live when someone approves.
name: quickstart
source:
  repo: {repo}
  branch: main
  poll_interval: 2s
build:
  commands:
    - 'cc -O2 -Wall -DVERSION="\"$BLUEGREEN_VERSION\"" -o app app.c'
  artifacts: [app, index.html]
  timeout: 5m
service:
  runtime: process
  command: ["./app", "${{PORT}}"]
  desired_count: 2
  health_check: {{path: /, interval: 1s, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 2}}
  deploy_timeout: 1m
load_balancer:
  production: {{port: {production}}}
  test: {{port: {test}, allow: [127.0.0.0/8, "::1/128"]}}
  deregistration_delay: 3s
approval:
  mode: manual
)",
                     fmt::arg("repo", repo), fmt::arg("production", production),
                     fmt::arg("test", test));
}

Status WriteFile(const fs::path& path, std::string_view text, fs::perms perms) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Internal("cannot write " + path.string());
  std::error_code ec;
  fs::permissions(path, perms, ec);
  return Status::Ok();
}

// git ARGS in `dir`; the error carries git's own words.
Status Git(const std::vector<std::string>& args, const fs::path& dir) {
  std::vector<std::string> argv = {"git"};
  argv.insert(argv.end(), args.begin(), args.end());
  Result<CapturedOutput> r =
      RunCaptured(argv, nullptr, dir.string(), Clock::now() + std::chrono::seconds(30));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0 || r->timed_out) {
    std::string err = r->err.empty() ? r->out : r->err;
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return Unavailable(fmt::format("git {} failed: {}", args.empty() ? "" : args[0], err));
  }
  return Status::Ok();
}

// DIR/app as a git repository with one commit of the sample app; kept when it exists.
Result<bool> EnsureAppRepository(const fs::path& app) {
  std::error_code ec;
  if (fs::exists(app / ".git", ec)) return false;
  if (fs::exists(app, ec) && !fs::is_empty(app, ec)) {
    return FailedPrecondition(app.string() +
                              " exists and is not a git repository: move it away, or pass "
                              "another --dir");
  }
  fs::create_directories(app, ec);
  if (ec) return Internal("cannot create " + app.string() + ": " + ec.message());
  const fs::perms file = fs::perms::owner_read | fs::perms::owner_write |
                         fs::perms::group_read | fs::perms::others_read;
  for (const auto& [name, text] : {std::pair{"app.c", std::string_view(kAppC)},
                                   std::pair{"index.html", std::string_view(kIndexHtml)},
                                   std::pair{".gitignore", std::string_view(kGitignore)}}) {
    if (Status st = WriteFile(app / name, text, file); !st.ok()) return st;
  }
  if (Status st = Git({"init", "-q", "-b", "main"}, app); !st.ok()) return st;
  // Commits need an identity; a machine without one gets a local one for this repository.
  Result<CapturedOutput> who = RunCaptured({"git", "config", "user.email"}, nullptr, app.string(),
                                           Clock::now() + std::chrono::seconds(10));
  if (!who.ok() || who->exit_code != 0 || who->out.empty()) {
    if (Status st = Git({"config", "user.name", "bluegreen quickstart"}, app); !st.ok()) return st;
    if (Status st = Git({"config", "user.email", "quickstart@localhost"}, app); !st.ok()) {
      return st;
    }
  }
  if (Status st = Git({"add", "-A"}, app); !st.ok()) return st;
  if (Status st = Git({"commit", "-q", "-m", "The sample app: a blue page"}, app); !st.ok()) {
    return st;
  }
  return true;
}

// The two listener ports: the stack file's when it exists, the flags' when given, else 80 and
// 8080 for root and 8000 and 8080 for other users, else free ports near them.
struct Ports {
  uint16_t production = 0;
  uint16_t test = 0;
  std::string note;  // why they are not the reference architecture's 80 and 8080
};

Result<Ports> ChoosePorts(const QuickstartOptions& o) {
  Ports p;
  const bool root = ::geteuid() == 0;
  p.production = o.production_port != 0 ? o.production_port : (root ? 80 : 8000);
  p.test = o.test_port != 0 ? o.test_port : 8080;
  auto pick = [](uint16_t* port, uint16_t avoid, bool given, const char* which) -> Status {
    if (CheckPortBindable(*port).ok() && *port != avoid) return Status::Ok();
    if (given) {
      return Unavailable(fmt::format("the {} port {} cannot be used: {}", which, *port,
                                     CheckPortBindable(*port).message()));
    }
    for (uint16_t candidate = *port < 1024 ? 8000 : static_cast<uint16_t>(*port + 1);
         candidate < 65000; ++candidate) {
      if (candidate != avoid && CheckPortBindable(candidate).ok()) {
        *port = candidate;
        return Status::Ok();
      }
    }
    return Unavailable(fmt::format("no free port for the {} listener", which));
  };
  const uint16_t wanted_production = p.production;
  const uint16_t wanted_test = p.test;
  if (Status st = pick(&p.production, 0, o.production_port != 0, "production"); !st.ok()) {
    return st;
  }
  if (Status st = pick(&p.test, p.production, o.test_port != 0, "test"); !st.ok()) return st;
  if (!root && o.production_port == 0) {
    p.note = "not root: the production listener is on " + std::to_string(p.production) +
             " instead of 80";
  }
  if (p.production != wanted_production && root) {
    p.note = fmt::format("port {} is taken: production is on {}", wanted_production, p.production);
  }
  if (p.test != wanted_test) {
    p.note += fmt::format("{}port {} is taken: test is on {}", p.note.empty() ? "" : "; ",
                          wanted_test, p.test);
  }
  return p;
}

// The ports of an existing stack file (a second run keeps them).
std::optional<Ports> PortsOf(const fs::path& stack_file) {
  std::ifstream in(stack_file);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  Result<stack::StackSpec> spec = stack::ParseStackSpec(text.str());
  if (!spec.ok()) return std::nullopt;
  return Ports{spec->load_balancer.production.port, spec->load_balancer.test.port, ""};
}

// serve's --api value for the CLI's --api ("http://127.0.0.1:7070" -> "127.0.0.1:7070").
std::string ServeListenAddress(const std::string& api) {
  std::string a = api;
  if (a.rfind("http://", 0) == 0) a = a.substr(7);
  while (!a.empty() && a.back() == '/') a.pop_back();
  return a;
}

// The console's address for people ("http://127.0.0.1:7070/").
std::string ConsoleUrl(const std::string& api) {
  const std::string a = ServeListenAddress(api);
  if (a.rfind("unix:", 0) == 0) return "(serve listens on " + a + ": no browser URL)";
  return "http://" + a + "/";
}

bool ServeAnswers(const std::string& api) {
  HttpClientRequest req;
  req.target = "/api/v1/healthz";
  Result<HttpClientResponse> r = HttpCall(api, req, std::chrono::seconds(2));
  return r.ok() && r->status == 200;
}

// Starts `bluegreen serve` in a session of its own (it outlives this command), its output
// appended to `log`; waits until it answers. Returns its pid.
Result<pid_t> StartServe(const ClientOptions& c, const fs::path& log) {
  std::error_code ec;
  fs::create_directories(c.state_dir, ec);
  ::chmod(c.state_dir.c_str(), 0700);
  SpawnAttr attr;
  SpawnFileActions actions;
  if (!attr.ok() || !actions.ok()) return Internal("posix_spawn: cannot initialize");
  int rc = posix_spawnattr_setflags(attr.get(), POSIX_SPAWN_SETSID);
  rc |= posix_spawn_file_actions_addopen(actions.get(), 0, "/dev/null", O_RDONLY, 0);
  rc |= posix_spawn_file_actions_addopen(actions.get(), 1, log.c_str(),
                                         O_WRONLY | O_CREAT | O_APPEND, 0600);
  rc |= posix_spawn_file_actions_adddup2(actions.get(), 1, 2);
  rc |= posix_spawn_file_actions_addclosefrom_np(actions.get(), 3);
  if (rc != 0) return Internal("posix_spawn: cannot set up");
  std::vector<std::string> args = {SelfExecutable(), "serve", "--state-dir", c.state_dir, "--api",
                                   ServeListenAddress(c.api)};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (int err = posix_spawn(&pid, argv[0], actions.get(), attr.get(), argv.data(), environ);
      err != 0) {
    return Internal("cannot start serve: " + ErrnoText(err));
  }
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline) {
    if (ServeAnswers(c.api)) return pid;
    int wstatus = 0;
    if (::waitpid(pid, &wstatus, WNOHANG) == pid) {
      return Unavailable("serve exited at start; its log: " + log.string());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Unavailable("serve did not answer within 20 s; its log: " + log.string());
}

// The pid in DIR/serve.pid when it still names a running `bluegreen serve`.
std::optional<pid_t> OurServe(const fs::path& pid_file) {
  std::ifstream in(pid_file);
  long pid = 0;
  if (!(in >> pid) || pid <= 1) return std::nullopt;
  std::ifstream cmdline("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
  if (args.find("bluegreen") == std::string::npos ||
      args.find(std::string("\0serve\0", 7)) == std::string::npos) {
    return std::nullopt;
  }
  return static_cast<pid_t>(pid);
}

int Cleanup(const ClientOptions& c, const QuickstartOptions& o, const fs::path& dir) {
  std::ostream& say = c.json ? *c.err : *c.out;
  json result = {{"stack", kStackName}, {"removed", false}, {"serve_stopped", false}};
  if (ServeAnswers(c.api)) {
    std::unique_ptr<ApiClient> client = Connect(c);
    if (client == nullptr) return kExitUnauthorized;
    Answer a = client->CallWithTimeout(o.timeout, "DELETE",
                                       StackPath(kStackName) + "?purge=true");
    if (a.exit_code == kExitOk) {
      say << "removed stack " << kStackName << ": its tasks, listeners and history\n";
      result["removed"] = true;
    } else if (a.http_status == 404) {
      say << "no stack " << kStackName << " to remove\n";
    } else {
      return Report(c, *client, a, "down", kStackName);
    }
  } else {
    say << "serve does not answer at " << c.api << ": no stack to remove\n";
  }
  const fs::path pid_file = dir / "serve.pid";
  if (std::optional<pid_t> pid = OurServe(pid_file)) {
    ::kill(*pid, SIGTERM);
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < deadline && ::kill(*pid, 0) == 0) {
      std::ifstream stat("/proc/" + std::to_string(*pid) + "/stat");
      std::string pid_text, comm, state;
      stat >> pid_text >> comm >> state;
      if (state == "Z") break;  // exited; its parent (not us) reaps it
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    say << "stopped the serve the quickstart started (pid " << *pid << ")\n";
    result["serve_stopped"] = true;
  }
  std::error_code ec;
  fs::remove(pid_file, ec);
  say << dir.string() << " is left as it is (your commits are in " << (dir / "app").string()
      << "); remove it with: rm -rf " << dir.string() << "\n";
  if (c.json) PrintJson(c, result);
  return kExitOk;
}

std::string ServiceVersion(const json& status, std::string_view identifier) {
  for (const json& s : status.value("services", json::array())) {
    if (s.value("identifier", "") == identifier) {
      const json& v = s.contains("version") ? s["version"] : json();
      return v.is_string() ? v.get<std::string>() : "-";
    }
  }
  return "-";
}

}  // namespace

int RunQuickstart(const ClientOptions& c, const QuickstartOptions& o) {
  std::error_code ec;
  const fs::path dir = fs::absolute(o.dir, ec).lexically_normal();
  if (o.cleanup) return Cleanup(c, o, dir);
  std::ostream& say = c.json ? *c.err : *c.out;  // --json keeps stdout for the JSON

  // 1. The sample app and its stack file.
  fs::create_directories(dir, ec);
  if (ec) {
    *c.err << "error: cannot create " << dir.string() << ": " << ec.message() << "\n";
    return kExitFailed;
  }
  const fs::path app = dir / "app";
  Result<bool> created = EnsureAppRepository(app);
  if (!created.ok()) {
    *c.err << "error: " << created.status().message() << "\n";
    return created.status().code() == StatusCode::kFailedPrecondition ? kExitConflict
                                                                        : kExitFailed;
  }
  say << (*created ? "created the sample app: " : "the sample app is there: ") << app.string()
      << " (a git repository, branch main)\n";
  const fs::path stack_file = dir / "stack.yaml";
  std::optional<Ports> ports = PortsOf(stack_file);
  if (!ports) {
    Result<Ports> chosen = ChoosePorts(o);
    if (!chosen.ok()) {
      *c.err << "error: " << chosen.status().message() << "\n"
             << "hint: pick free ports with --production-port and --test-port\n";
      return kExitConflict;
    }
    ports = *chosen;
    const fs::perms file = fs::perms::owner_read | fs::perms::owner_write |
                           fs::perms::group_read | fs::perms::others_read;
    if (Status st = WriteFile(stack_file, StackFile(app.string(), ports->production, ports->test),
                              file);
        !st.ok()) {
      *c.err << "error: " << st.message() << "\n";
      return kExitFailed;
    }
    say << "wrote its stack file: " << stack_file.string() << "\n";
    if (!ports->note.empty()) say << "  (" << ports->note << ")\n";
  } else {
    say << "its stack file is there: " << stack_file.string() << "\n";
  }

  // 2. serve.
  bool started_serve = false;
  if (!ServeAnswers(c.api)) {
    say << "starting bluegreen serve (state " << c.state_dir << ", API " << c.api << ")...\n";
    say.flush();
    const fs::path log = dir / "serve.log";
    Result<pid_t> pid = StartServe(c, log);
    if (!pid.ok()) {
      *c.err << "error: " << pid.status().message() << "\n";
      return kExitUnreachable;
    }
    (void)WriteFile(dir / "serve.pid", std::to_string(*pid) + "\n",
                    fs::perms::owner_read | fs::perms::owner_write);
    started_serve = true;
    say << "serve runs (pid " << *pid << ", log " << log.string() << ")\n";
  } else {
    say << "serve answers at " << c.api << "\n";
  }

  // 3. up, then the first execution.
  ClientOptions quiet = c;
  std::ostringstream discard;
  quiet.json = false;
  quiet.out = c.json ? &discard : c.out;
  UpOptions up;
  up.file = stack_file.string();
  up.wait = false;
  if (int rc = RunUp(quiet, up); rc != kExitOk) return rc;
  std::unique_ptr<ApiClient> client = Connect(c);
  if (client == nullptr) return kExitUnauthorized;
  const Clock::time_point deadline = Clock::now() + o.timeout;
  std::string execution;
  while (execution.empty()) {
    Answer s = client->Call("GET", StackPath(kStackName));
    if (s.exit_code != kExitOk) return Report(c, *client, s, "status", kStackName);
    const json& e = s.body.value("execution", json());
    if (e.is_object() && e.contains("id")) execution = std::to_string(e.value("id", int64_t{0}));
    if (execution.empty()) {
      if (Clock::now() >= deadline) {
        *c.err << "error: no execution started within " << FormatDuration(o.timeout) << "\n";
        return kExitFailed;
      }
      std::this_thread::sleep_for(c.poll_interval);
    }
  }
  say << "the pipeline builds and deploys the app (execution " << execution << "):\n";
  say.flush();
  WatchOptions watch;
  watch.name = kStackName;
  watch.execution = execution;
  watch.until_review = true;
  watch.redraw = !c.json && ::isatty(STDOUT_FILENO) == 1;
  winsize size{};
  if (watch.redraw && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0) watch.columns = size.ws_col;
  watch.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::max(deadline - Clock::now(), Clock::duration(std::chrono::seconds(1))));
  if (int rc = RunWatch(quiet, watch); rc != kExitOk) {
    *c.err << "hint: see its build log: bluegreen logs " << kStackName << " " << execution << "\n";
    return rc;
  }

  // 4. Where everything is.
  Answer s = client->Call("GET", StackPath(kStackName));
  if (s.exit_code != kExitOk) return Report(c, *client, s, "status", kStackName);
  const std::string live = s.body.value("live", "Code1");
  const std::string idle = live == "Code1" ? "Code2" : "Code1";
  const char* env = std::getenv("BLUEGREEN_TOKEN");
  Result<std::string> token = LoadToken(env != nullptr ? env : "", c.state_dir);
  auto url = [](uint16_t port) {
    return port == 80 ? std::string("http://127.0.0.1/") : fmt::format("http://127.0.0.1:{}/", port);
  };
  const std::string production_url = url(ports->production);
  const std::string test_url = url(ports->test);
  if (c.json) {
    PrintJson(c, json{{"stack", kStackName},
                      {"dir", dir.string()},
                      {"repo", app.string()},
                      {"stack_file", stack_file.string()},
                      {"state_dir", c.state_dir},
                      {"production_url", production_url},
                      {"test_url", test_url},
                      {"console_url", ConsoleUrl(c.api)},
                      {"token", token.ok() ? *token : ""},
                      {"serve_started", started_serve},
                      {"status", s.body}});
    return kExitOk;
  }
  const std::string cd = "cd " + app.string();
  *c.out << "\nbluegreen quickstart is ready.\n\n"
         << "  production  " << production_url << "  " << live << ", version "
         << ServiceVersion(s.body, live) << "\n"
         << "  test        " << test_url << "  " << idle << ", version "
         << ServiceVersion(s.body, idle) << "\n"
         << "  console     " << ConsoleUrl(c.api) << "  (sign in with the token)\n"
         << "  token       " << (token.ok() ? *token : "(" + token.status().message() + ")")
         << "\n"
         << "  app         " << app.string() << "\n\n"
         << "Next steps (the walkthrough):\n"
         << "  1. Open the production URL: the sample app on a blue background.\n"
         << "  2. Make it green and commit:\n"
         << "       " << cd << "\n"
         << "       sed -i 's/" << kBlue << "/" << kGreen << "/' index.html\n"
         << "       git commit -am 'Make the background green'\n"
         << "  3. Watch the pipeline build it and deploy it to the test side:\n"
         << "       bluegreen watch " << kStackName << " --until-review\n"
         << "  4. The test URL is green, production still blue. Approve (or press Approve in the "
            "console):\n"
         << "       bluegreen approve " << kStackName << " --comment 'Looks good'\n"
         << "  5. Production is green. Roll back with one swap, and forward again the same way:\n"
         << "       bluegreen rollback " << kStackName << " --yes\n"
         << "  6. Clean up: bluegreen quickstart --cleanup" 
         << (o.dir == "bluegreen-quickstart" ? "" : " --dir " + dir.string()) << "\n";
  return kExitOk;
}

}  // namespace bluegreen::cli
