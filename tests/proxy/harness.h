// Test harness for the proxy's integration tests: everything runs for real, on loopback.
//
// - PickFreePort, TempDir: isolation of each test.
// - Process: a child process (fork/exec) whose stdout and stderr are drained by a thread into
//   buffers the test can wait on; stopped with SIGTERM then SIGKILL when destroyed.
// - HttpConnection: a deliberately small raw-socket HTTP/1.1 client. It sends exactly the bytes it
// is
//   given (so tests can send malformed requests) and reads one response at a time with
//   Content-Length, chunked or until-close framing; every operation has a deadline (poll).
// - Backend (the `test_backend` program), ProxyProcess (`bluegreen proxy`), Admin (its JSON API),
//   ProxyConfigSpec (writes the YAML config), and the ProxyTest fixture that owns them.
//
// Nothing here is meant to be shared between threads, except that Process drains its pipes on a
// thread of its own (its buffers are guarded by a mutex). Processes must be started from the test's
// main thread: PR_SET_PDEATHSIG ties a child to the thread that forked it.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"

#ifndef BLUEGREEN_BINARY
#define BLUEGREEN_BINARY "bluegreen"
#endif
#ifndef TEST_BACKEND_BINARY
#define TEST_BACKEND_BINARY "test_backend"
#endif

#define BG_TEST_CONCAT_INNER(a, b) a##b
#define BG_TEST_CONCAT(a, b) BG_TEST_CONCAT_INNER(a, b)
#define BG_ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr)                 \
  auto tmp = (expr);                                                 \
  ASSERT_TRUE(tmp.ok()) << #expr << ": " << tmp.status().ToString(); \
  lhs = std::move(tmp).value()
// Evaluates a Result<T> expression; on error fails the test (fatally) with the status.
#define BG_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  BG_ASSERT_OK_AND_ASSIGN_IMPL(BG_TEST_CONCAT(bg_result_, __LINE__), lhs, expr)
#define BG_ASSERT_OK(expr)                                        \
  do {                                                            \
    const ::bluegreen::Status bg_st = (expr);                     \
    ASSERT_TRUE(bg_st.ok()) << #expr << ": " << bg_st.ToString(); \
  } while (0)
#define BG_EXPECT_OK(expr)                                        \
  do {                                                            \
    const ::bluegreen::Status bg_st = (expr);                     \
    EXPECT_TRUE(bg_st.ok()) << #expr << ": " << bg_st.ToString(); \
  } while (0)

namespace bluegreen::proxy_test {

using Clock = std::chrono::steady_clock;
using Duration = std::chrono::milliseconds;
using Json = nlohmann::json;
using namespace std::chrono_literals;

inline Status DeadlineExceeded(std::string msg) {
  return Status(StatusCode::kDeadlineExceeded, std::move(msg));
}

inline std::string ErrnoText(int err) { return std::string(std::strerror(err)); }

inline int MillisUntil(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<Duration>(deadline - Clock::now()).count();
  if (left < 0) return 0;
  return static_cast<int>(std::min<long long>(left, 1000 * 1000));
}

inline std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

inline bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && ToLower(a) == ToLower(b);
}

inline std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

inline std::vector<std::string> SplitList(std::string_view s, char sep = ',') {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string_view::npos) end = s.size();
    std::string_view item = Trim(s.substr(start, end - start));
    if (!item.empty()) out.emplace_back(item);
    start = end + 1;
  }
  return out;
}

inline bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// A deterministic, non-repeating-looking payload of `size` bytes (all printable, no CR/LF).
inline std::string MakePayload(size_t size, uint32_t seed = 1) {
  static constexpr char kAlphabet[] =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
  std::string out(size, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = kAlphabet[x & 63];
  }
  return out;
}

// Child pids alive right now, so a watchdog can kill them before aborting the test binary.
inline std::mutex& ChildRegistryMutex() {
  static std::mutex mu;
  return mu;
}
inline std::set<pid_t>& ChildRegistry() {
  static std::set<pid_t> pids;
  return pids;
}

// ---------------------------------------------------------------------------------------------
// Ports and directories

// A TCP port on 127.0.0.1 that was free a moment ago. Never hands out the same port twice within
// one test binary, so several ports picked in a row are distinct.
inline Result<uint16_t> PickFreePort() {
  static std::mutex mu;
  static std::set<uint16_t> handed_out;
  std::lock_guard<std::mutex> lock(mu);
  for (int attempt = 0; attempt < 100; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Unavailable("socket: " + ErrnoText(errno));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      int err = errno;
      ::close(fd);
      return Unavailable("bind: " + ErrnoText(err));
    }
    socklen_t len = sizeof(addr);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    uint16_t port = ntohs(addr.sin_port);
    if (handed_out.insert(port).second) return port;
  }
  return Unavailable("no free port found");
}

// A fresh directory under $TMPDIR (or /tmp), removed with its contents when destroyed.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern =
        std::string(base && *base ? base : "/tmp") + "/bluegreen_proxy_test.XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    char* made = ::mkdtemp(buf.data());
    if (made != nullptr) path_ = made;
  }
  ~TempDir() {
    if (!path_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  std::string File(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

inline Status WriteFile(const std::string& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return Internal("cannot open " + path);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  out.close();
  if (!out) return Internal("cannot write " + path);
  return Status::Ok();
}

inline Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---------------------------------------------------------------------------------------------
// Process

// A child process started with fork/exec. Its stdout and stderr go through pipes that a thread
// drains into buffers (so a chatty child never blocks on a full pipe); the test can wait for a line
// or a substring with a deadline. The destructor stops the child: SIGTERM, then SIGKILL after a
// grace period, and always reaps it.
class Process {
 public:
  static Result<std::unique_ptr<Process>> Start(const std::string& binary,
                                                const std::vector<std::string>& args) {
    std::unique_ptr<Process> p(new Process());
    p->description_ = binary;
    for (const auto& a : args) p->description_ += " " + a;

    int out_pipe[2];
    int err_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0) return Internal("pipe2: " + ErrnoText(errno));
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
      ::close(out_pipe[0]);
      ::close(out_pipe[1]);
      return Internal("pipe2: " + ErrnoText(errno));
    }
    // Everything the child needs is prepared before fork: only async-signal-safe calls after it.
    std::vector<std::string> argv_storage;
    argv_storage.push_back(binary);
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();

    pid_t pid = ::fork();
    if (pid < 0) {
      int err = errno;
      for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) ::close(fd);
      return Internal("fork: " + ErrnoText(err));
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(126);
      int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull >= 0) ::dup2(devnull, 0);
      ::dup2(out_pipe[1], 1);
      ::dup2(err_pipe[1], 2);
      ::syscall(SYS_close_range, 3u, ~0u, 0u);
      // Restore default signal dispositions and mask for the child.
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::signal(SIGPIPE, SIG_DFL);
      ::execv(argv[0], argv.data());
      static const char kMsg[] = "exec failed\n";
      ssize_t ignored = ::write(2, kMsg, sizeof(kMsg) - 1);
      (void)ignored;
      ::_exit(127);
    }
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    p->pid_ = pid;
    {
      std::lock_guard<std::mutex> lock(ChildRegistryMutex());
      ChildRegistry().insert(pid);
    }
    p->out_fd_ = out_pipe[0];
    p->err_fd_ = err_pipe[0];
    p->drainer_ = std::thread([raw = p.get()] { raw->Drain(); });
    return p;
  }

  ~Process() {
    Stop(5s);
    stop_drain_ = true;
    if (drainer_.joinable()) drainer_.join();
    if (out_fd_ >= 0) ::close(out_fd_);
    if (err_fd_ >= 0) ::close(err_fd_);
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& description() const { return description_; }

  // Sends a signal if the child has not been reaped yet.
  void Signal(int sig) {
    if (!exited_) ::kill(pid_, sig);
  }

  // True while the child has not exited (reaps it if it has).
  bool Running() {
    if (exited_) return false;
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) MarkExited(status);
    return !exited_;
  }

  // Waits for the child to exit; returns its wait status (use WIFEXITED/WEXITSTATUS), or nullopt
  // if it is still running at the deadline.
  std::optional<int> WaitExit(Duration timeout) {
    if (exited_) return wait_status_;
    const auto deadline = Clock::now() + timeout;
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    while (true) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        MarkExited(status);
        break;
      }
      if (r < 0 && errno != EINTR) break;
      if (Clock::now() >= deadline) break;
      if (pidfd >= 0) {
        pollfd pfd{pidfd, POLLIN, 0};
        ::poll(&pfd, 1, std::min(MillisUntil(deadline), 100));
      } else {
        std::this_thread::sleep_for(5ms);  // no pidfd: nothing to wait on but time
      }
    }
    if (pidfd >= 0) ::close(pidfd);
    if (exited_) return wait_status_;
    return std::nullopt;
  }

  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the wait status.
  std::optional<int> Stop(Duration grace) {
    if (exited_) return wait_status_;
    Signal(SIGTERM);
    auto st = WaitExit(grace);
    if (st) return st;
    Signal(SIGKILL);
    return WaitExit(10s);
  }

  // Waits for the first complete line on stdout (without its newline).
  Result<std::string> WaitForStdoutLine(Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    bool got = cv_.wait_for(
        lock, timeout, [&] { return stdout_.find('\n') != std::string::npos || stdout_closed_; });
    size_t nl = stdout_.find('\n');
    if (!got || nl == std::string::npos) {
      return DeadlineExceeded("no line on stdout of `" + description_ + "`; stderr: " + stderr_);
    }
    return stdout_.substr(0, nl);
  }

  // Waits until stderr contains `needle`, or the child closed its stderr, or the deadline.
  bool WaitForStderr(std::string_view needle, Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      return stderr_.find(needle) != std::string::npos || stderr_closed_;
    }) && stderr_.find(needle) != std::string::npos;
  }

  // Like WaitForStderr, but only looks at what was written after the first `from` bytes
  // (use StderrSize() before the action to check what it logged).
  bool WaitForStderrAfter(size_t from, std::string_view needle, Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    auto found = [&] {
      return stderr_.size() > from && stderr_.find(needle, from) != std::string::npos;
    };
    return cv_.wait_for(lock, timeout, [&] { return found() || stderr_closed_; }) && found();
  }
  size_t StderrSize() {
    std::lock_guard<std::mutex> lock(mu_);
    return stderr_.size();
  }

  // Waits until both pipes reached EOF (the child and anything it spawned closed them).
  bool WaitForOutputClosed(Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return stdout_closed_ && stderr_closed_; });
  }

  std::string Stdout() {
    std::lock_guard<std::mutex> lock(mu_);
    return stdout_;
  }
  std::string Stderr() {
    std::lock_guard<std::mutex> lock(mu_);
    return stderr_;
  }

 private:
  Process() = default;

  void MarkExited(int status) {
    exited_ = true;
    wait_status_ = status;
    std::lock_guard<std::mutex> lock(ChildRegistryMutex());
    ChildRegistry().erase(pid_);
  }

  void Drain() {
    static constexpr size_t kMaxKept = 8 << 20;  // keep the last 8 MiB of each stream
    char buf[16384];
    while (!stop_drain_) {
      pollfd fds[2];
      int n = 0;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!stdout_closed_) fds[n++] = {out_fd_, POLLIN, 0};
        if (!stderr_closed_) fds[n++] = {err_fd_, POLLIN, 0};
      }
      if (n == 0) return;
      int r = ::poll(fds, n, 100);
      if (r <= 0) continue;
      for (int i = 0; i < n; ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t got = ::read(fds[i].fd, buf, sizeof(buf));
        if (got < 0 && errno == EINTR) continue;
        std::lock_guard<std::mutex> lock(mu_);
        bool is_out = fds[i].fd == out_fd_;
        std::string& dst = is_out ? stdout_ : stderr_;
        if (got <= 0) {
          (is_out ? stdout_closed_ : stderr_closed_) = true;
        } else {
          dst.append(buf, static_cast<size_t>(got));
          if (dst.size() > kMaxKept) dst.erase(0, dst.size() - kMaxKept);
        }
        cv_.notify_all();
      }
    }
  }

  std::string description_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int wait_status_ = 0;
  int out_fd_ = -1;
  int err_fd_ = -1;
  std::thread drainer_;
  std::atomic<bool> stop_drain_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::string stdout_;          // GUARDED_BY(mu_)
  std::string stderr_;          // GUARDED_BY(mu_)
  bool stdout_closed_ = false;  // GUARDED_BY(mu_)
  bool stderr_closed_ = false;  // GUARDED_BY(mu_)
};

inline std::string DescribeWaitStatus(std::optional<int> st) {
  if (!st) return "still running";
  if (WIFEXITED(*st)) return "exit code " + std::to_string(WEXITSTATUS(*st));
  if (WIFSIGNALED(*st)) return "killed by signal " + std::to_string(WTERMSIG(*st));
  return "wait status " + std::to_string(*st);
}

// ---------------------------------------------------------------------------------------------
// HTTP client

struct HttpResponse {
  std::string version;  // "HTTP/1.1"
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // decoded (chunked framing removed)
  bool chunked = false;
  bool has_content_length = false;
  bool until_close = false;  // body was delimited by the server closing the connection
  std::string raw_head;

  // First value of the header (case-insensitive name), or "" when absent.
  std::string Header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (EqualsIgnoreCase(n, name)) return v;
    }
    return "";
  }
  bool HasHeader(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (EqualsIgnoreCase(n, name)) return true;
    }
    return false;
  }
  // Whether the server announced it will close the connection after this response.
  bool ConnectionClose() const {
    for (const auto& [n, v] : headers) {
      if (!EqualsIgnoreCase(n, "connection")) continue;
      for (const auto& t : SplitList(v)) {
        if (EqualsIgnoreCase(t, "close")) return true;
      }
    }
    return false;
  }
};

inline std::ostream& operator<<(std::ostream& os, const HttpResponse& r) {
  os << r.raw_head;
  if (r.body.size() <= 512) {
    os << r.body;
  } else {
    os << r.body.substr(0, 512) << "...(" << r.body.size() << " bytes)";
  }
  return os;
}

struct HttpRequest {
  std::string method = "GET";
  std::string target = "/";
  std::string version = "HTTP/1.1";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string host = "localhost";  // empty: no Host header added
  bool add_content_length = true;  // when body is non-empty (or method is POST/PUT)

  std::string Serialize() const {
    std::string out = method + " " + target + " " + version + "\r\n";
    if (!host.empty()) out += "Host: " + host + "\r\n";
    for (const auto& [n, v] : headers) out += n + ": " + v + "\r\n";
    bool explicit_framing = false;
    for (const auto& [n, v] : headers) {
      if (EqualsIgnoreCase(n, "content-length") || EqualsIgnoreCase(n, "transfer-encoding")) {
        explicit_framing = true;
      }
    }
    if (add_content_length && !explicit_framing &&
        (!body.empty() || method == "POST" || method == "PUT")) {
      out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    }
    out += "\r\n";
    out += body;
    return out;
  }
};

struct ReadOptions {
  Duration timeout = 10s;
  std::string_view request_method = "GET";  // a response to HEAD has no body
  bool return_interim = false;              // return 1xx (other than 101) instead of skipping it
  size_t max_head = 1 << 20;
};

// One client TCP connection to 127.0.0.1:port. Nonblocking; every call has a deadline.
class HttpConnection {
 public:
  static Result<std::unique_ptr<HttpConnection>> Connect(uint16_t port, Duration timeout = 5s) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return Unavailable("socket: " + ErrnoText(errno));
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    int r = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    if (r != 0 && errno != EINPROGRESS) {
      int err = errno;
      ::close(fd);
      return Unavailable("connect 127.0.0.1:" + std::to_string(port) + ": " + ErrnoText(err));
    }
    if (r != 0) {
      pollfd pfd{fd, POLLOUT, 0};
      int pr = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
      if (pr <= 0) {
        ::close(fd);
        return DeadlineExceeded("connect 127.0.0.1:" + std::to_string(port) + ": timeout");
      }
      int err = 0;
      socklen_t len = sizeof(err);
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        ::close(fd);
        return Unavailable("connect 127.0.0.1:" + std::to_string(port) + ": " + ErrnoText(err));
      }
    }
    return std::unique_ptr<HttpConnection>(new HttpConnection(fd));
  }

  ~HttpConnection() {
    if (fd_ >= 0) ::close(fd_);
  }
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  int fd() const { return fd_; }
  bool peer_closed() const { return eof_; }

  // Sends all bytes. While the kernel buffer is full it keeps reading what the peer sends (kept for
  // the next read), so a server that answers before reading the whole request cannot deadlock us.
  Status Send(std::string_view data, Duration timeout = 10s) {
    const auto deadline = Clock::now() + timeout;
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        return Unavailable("send: " + ErrnoText(errno));
      }
      if (Clock::now() >= deadline) return DeadlineExceeded("send: timeout");
      pollfd pfd{fd_, static_cast<short>(POLLOUT | (eof_ ? 0 : POLLIN)), 0};
      ::poll(&pfd, 1, std::min(MillisUntil(deadline), 100));
      if ((pfd.revents & POLLIN) && !eof_) {
        Status st = ReadOnce();
        (void)st;  // errors surface on the next send or read
      }
    }
    return Status::Ok();
  }

  // Half-closes the sending side (FIN), keeps reading possible.
  void ShutdownWrite() { ::shutdown(fd_, SHUT_WR); }

  // Sends a request and reads its response.
  Result<HttpResponse> RoundTrip(const HttpRequest& req, Duration timeout = 10s) {
    BG_RETURN_IF_ERROR(Send(req.Serialize(), timeout));
    ReadOptions opts;
    opts.timeout = timeout;
    opts.request_method = req.method;
    return ReadResponse(opts);
  }
  Result<HttpResponse> Get(std::string target, Duration timeout = 10s) {
    HttpRequest req;
    req.target = std::move(target);
    return RoundTrip(req, timeout);
  }

  // Reads one response (skipping 1xx interim responses unless opts.return_interim; a 101 is always
  // returned and the bytes after its head stay unread for ReadRaw).
  Result<HttpResponse> ReadResponse(const ReadOptions& opts = {}) {
    const auto deadline = Clock::now() + opts.timeout;
    while (true) {
      HttpResponse resp;
      size_t head_end = std::string::npos;
      while ((head_end = buf_.find("\r\n\r\n")) == std::string::npos) {
        if (buf_.size() > opts.max_head) return Internal("response head too long");
        BG_RETURN_IF_ERROR(Fill(deadline, "response head"));
      }
      resp.raw_head = buf_.substr(0, head_end + 4);
      buf_.erase(0, head_end + 4);
      BG_RETURN_IF_ERROR(ParseHead(&resp));
      if (resp.status >= 100 && resp.status < 200) {
        if (resp.status == 101 || opts.return_interim) return resp;
        continue;
      }
      BG_RETURN_IF_ERROR(ReadBody(&resp, opts.request_method, deadline));
      return resp;
    }
  }

  // Returns up to `max` bytes that arrive before the deadline (at least one, else an error).
  Result<std::string> ReadSome(Duration timeout, size_t max = 1 << 20) {
    const auto deadline = Clock::now() + timeout;
    if (buf_.empty()) BG_RETURN_IF_ERROR(Fill(deadline, "raw bytes"));
    std::string out = buf_.substr(0, std::min(max, buf_.size()));
    buf_.erase(0, out.size());
    return out;
  }

  // Reads exactly n raw bytes.
  Result<std::string> ReadExactly(size_t n, Duration timeout) {
    const auto deadline = Clock::now() + timeout;
    while (buf_.size() < n) BG_RETURN_IF_ERROR(Fill(deadline, "raw bytes"));
    std::string out = buf_.substr(0, n);
    buf_.erase(0, n);
    return out;
  }

  // Waits for the peer to close (EOF or reset). Bytes that arrive meanwhile are appended to
  // *unexpected (and consumed). Returns false if the connection is still open at the deadline.
  bool WaitForClose(Duration timeout, std::string* unexpected = nullptr) {
    const auto deadline = Clock::now() + timeout;
    while (!eof_) {
      Status st = Fill(deadline, "close");
      if (!st.ok() && st.code() == StatusCode::kDeadlineExceeded) break;
    }
    if (unexpected) *unexpected += buf_;
    buf_.clear();
    return eof_;
  }

  // Bytes received but not consumed by a read yet.
  const std::string& buffered() const { return buf_; }

 private:
  explicit HttpConnection(int fd) : fd_(fd) {}

  // Reads whatever is available now (nonblocking).
  Status ReadOnce() {
    char tmp[65536];
    while (true) {
      ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
      if (n > 0) {
        buf_.append(tmp, static_cast<size_t>(n));
        if (static_cast<size_t>(n) < sizeof(tmp)) return Status::Ok();
        continue;
      }
      if (n == 0) {
        eof_ = true;
        return Status::Ok();
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::Ok();
      eof_ = true;
      reset_ = true;
      return Unavailable("recv: " + ErrnoText(errno));
    }
  }

  // Waits for more bytes. Errors: kDeadlineExceeded, or kUnavailable when the peer closed.
  Status Fill(Clock::time_point deadline, std::string_view what) {
    const size_t before = buf_.size();
    while (buf_.size() == before) {
      if (eof_) {
        return Unavailable(std::string(reset_ ? "connection reset" : "connection closed") +
                           " while reading " + std::string(what) +
                           (buf_.empty() ? "" : "; buffered: " + buf_.substr(0, 200)));
      }
      int wait = MillisUntil(deadline);
      if (wait == 0 && Clock::now() >= deadline) {
        return DeadlineExceeded("timeout while reading " + std::string(what) +
                                (buf_.empty() ? "" : "; buffered: " + buf_.substr(0, 200)));
      }
      pollfd pfd{fd_, POLLIN, 0};
      int r = ::poll(&pfd, 1, wait);
      if (r < 0 && errno == EINTR) continue;
      if (r == 0) continue;  // loop re-checks the deadline
      Status st = ReadOnce();
      (void)st;  // a reset is reported as eof_ above once the buffered bytes are used up
    }
    return Status::Ok();
  }

  Status ParseHead(HttpResponse* resp) {
    std::string_view head(resp->raw_head);
    head.remove_suffix(4);
    size_t eol = head.find("\r\n");
    std::string_view status_line = head.substr(0, eol);
    // "HTTP/1.1 200 OK"
    size_t sp1 = status_line.find(' ');
    if (sp1 == std::string_view::npos || status_line.substr(0, 5) != "HTTP/") {
      return Internal("bad status line: " + std::string(status_line));
    }
    resp->version = std::string(status_line.substr(0, sp1));
    std::string_view rest = status_line.substr(sp1 + 1);
    size_t sp2 = rest.find(' ');
    std::string code(rest.substr(0, sp2));
    if (code.size() != 3 || !std::all_of(code.begin(), code.end(), ::isdigit)) {
      return Internal("bad status code: " + std::string(status_line));
    }
    resp->status = std::stoi(code);
    if (sp2 != std::string_view::npos) resp->reason = std::string(rest.substr(sp2 + 1));
    std::string_view lines = eol == std::string_view::npos ? "" : head.substr(eol + 2);
    while (!lines.empty()) {
      size_t e = lines.find("\r\n");
      std::string_view line = lines.substr(0, e);
      lines = e == std::string_view::npos ? "" : lines.substr(e + 2);
      size_t colon = line.find(':');
      if (colon == std::string_view::npos) return Internal("bad header line: " + std::string(line));
      resp->headers.emplace_back(std::string(line.substr(0, colon)),
                                 std::string(Trim(line.substr(colon + 1))));
    }
    return Status::Ok();
  }

  Status ReadBody(HttpResponse* resp, std::string_view method, Clock::time_point deadline) {
    if (method == "HEAD" || resp->status == 204 || resp->status == 304) return Status::Ok();
    std::string te = resp->Header("transfer-encoding");
    if (!te.empty()) {
      auto codings = SplitList(te);
      if (!codings.empty() && EqualsIgnoreCase(codings.back(), "chunked")) {
        resp->chunked = true;
        return ReadChunked(resp, deadline);
      }
    }
    if (resp->HasHeader("content-length")) {
      resp->has_content_length = true;
      std::string cl = resp->Header("content-length");
      if (cl.empty() || !std::all_of(cl.begin(), cl.end(), ::isdigit)) {
        return Internal("bad Content-Length in response: " + cl);
      }
      size_t n = std::stoull(cl);
      while (buf_.size() < n) BG_RETURN_IF_ERROR(Fill(deadline, "response body"));
      resp->body = buf_.substr(0, n);
      buf_.erase(0, n);
      return Status::Ok();
    }
    resp->until_close = true;
    while (!eof_) {
      Status st = Fill(deadline, "response body until close");
      if (!st.ok() && st.code() == StatusCode::kDeadlineExceeded) return st;
    }
    resp->body = std::move(buf_);
    buf_.clear();
    return Status::Ok();
  }

  Status ReadLine(Clock::time_point deadline, std::string* line) {
    size_t e;
    while ((e = buf_.find("\r\n")) == std::string::npos) {
      BG_RETURN_IF_ERROR(Fill(deadline, "chunk line"));
    }
    *line = buf_.substr(0, e);
    buf_.erase(0, e + 2);
    return Status::Ok();
  }

  Status ReadChunked(HttpResponse* resp, Clock::time_point deadline) {
    while (true) {
      std::string line;
      BG_RETURN_IF_ERROR(ReadLine(deadline, &line));
      std::string size_text(Trim(line.substr(0, line.find(';'))));
      if (size_text.empty() || size_text.size() > 15 ||
          !std::all_of(size_text.begin(), size_text.end(), ::isxdigit)) {
        return Internal("bad chunk size line in response: " + line);
      }
      size_t size = std::stoull(size_text, nullptr, 16);
      if (size == 0) {
        while (true) {  // trailers up to the empty line
          BG_RETURN_IF_ERROR(ReadLine(deadline, &line));
          if (line.empty()) return Status::Ok();
        }
      }
      while (buf_.size() < size + 2) BG_RETURN_IF_ERROR(Fill(deadline, "chunk data"));
      if (buf_.compare(size, 2, "\r\n") != 0) return Internal("chunk data not followed by CRLF");
      resp->body.append(buf_, 0, size);
      buf_.erase(0, size + 2);
    }
  }

  int fd_ = -1;
  std::string buf_;
  bool eof_ = false;
  bool reset_ = false;
};

// The bytes of "GET target HTTP/1.1" with Host: localhost.
inline std::string GetRequest(std::string target) {
  HttpRequest req;
  req.target = std::move(target);
  return req.Serialize();
}

// One request on a fresh connection.
inline Result<HttpResponse> Fetch(uint16_t port, const HttpRequest& req, Duration timeout = 10s) {
  auto conn = HttpConnection::Connect(port);
  if (!conn.ok()) return conn.status();
  return (*conn)->RoundTrip(req, timeout);
}
inline Result<HttpResponse> FetchGet(uint16_t port, std::string target, Duration timeout = 10s) {
  HttpRequest req;
  req.target = std::move(target);
  return Fetch(port, req, timeout);
}

// Encodes `body` with chunked framing, cut into chunks of the given sizes (cycled).
inline std::string ChunkEncode(std::string_view body,
                               std::vector<size_t> sizes = {1000, 7, 65536}) {
  std::string out;
  size_t i = 0;
  size_t k = 0;
  while (i < body.size()) {
    size_t n = std::min(sizes[k++ % sizes.size()], body.size() - i);
    char hex[32];
    std::snprintf(hex, sizeof(hex), "%zx", n);
    out += hex;
    out += "\r\n";
    out.append(body.substr(i, n));
    out += "\r\n";
    i += n;
  }
  out += "0\r\n\r\n";
  return out;
}

// Decodes a chunked body; nullopt when malformed.
inline std::optional<std::string> ChunkDecode(std::string_view s) {
  std::string out;
  while (true) {
    size_t e = s.find("\r\n");
    if (e == std::string_view::npos) return std::nullopt;
    std::string size_text(Trim(s.substr(0, std::min(e, s.find(';')))));
    if (size_text.empty() || size_text.size() > 15 ||
        !std::all_of(size_text.begin(), size_text.end(), ::isxdigit)) {
      return std::nullopt;
    }
    size_t n = std::stoull(size_text, nullptr, 16);
    s.remove_prefix(e + 2);
    if (n == 0) return out;
    if (s.size() < n + 2 || s.substr(n, 2) != "\r\n") return std::nullopt;
    out.append(s.substr(0, n));
    s.remove_prefix(n + 2);
  }
}

// What test_backend's /echo sends back: the request line, the header lines as received, a blank
// line, then the body. Accepts CRLF or LF line ends.
struct EchoDump {
  std::string request_line;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  std::vector<std::string> Values(std::string_view name) const {
    std::vector<std::string> out;
    for (const auto& [n, v] : headers) {
      if (EqualsIgnoreCase(n, name)) out.push_back(v);
    }
    return out;
  }
  bool Has(std::string_view name) const { return !Values(name).empty(); }
  std::string Value(std::string_view name) const {
    auto v = Values(name);
    return v.empty() ? "" : v.front();
  }
};

inline Result<EchoDump> ParseEcho(std::string_view text) {
  EchoDump dump;
  bool first = true;
  while (true) {
    size_t e = text.find('\n');
    if (e == std::string_view::npos) return Internal("echo dump has no blank line");
    std::string_view line = text.substr(0, e);
    text.remove_prefix(e + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (first) {
      dump.request_line = std::string(line);
      first = false;
      continue;
    }
    if (line.empty()) break;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos)
      return Internal("bad echo header line: " + std::string(line));
    dump.headers.emplace_back(std::string(line.substr(0, colon)),
                              std::string(Trim(line.substr(colon + 1))));
  }
  dump.body = std::string(text);
  return dump;
}

// ---------------------------------------------------------------------------------------------
// Admin API

struct AdminResponse {
  int status = 0;
  std::string body;
  Json json;  // discarded() when the body is not JSON
};

// A client of the proxy's admin API on 127.0.0.1:port. One connection per call.
class Admin {
 public:
  explicit Admin(uint16_t port = 0) : port_(port) {}
  uint16_t port() const { return port_; }

  Result<AdminResponse> Call(const std::string& method, const std::string& path,
                             const std::string& body = "",
                             const std::string& content_type = "application/json",
                             Duration timeout = 10s) const {
    HttpRequest req;
    req.method = method;
    req.target = path;
    req.host = "127.0.0.1:" + std::to_string(port_);
    req.headers.emplace_back("Connection", "close");
    if (!body.empty()) req.headers.emplace_back("Content-Type", content_type);
    req.body = body;
    auto resp = Fetch(port_, req, timeout);
    if (!resp.ok()) return resp.status();
    AdminResponse out;
    out.status = resp->status;
    out.body = resp->body;
    out.json = Json::parse(out.body, nullptr, /*allow_exceptions=*/false);
    return out;
  }
  Result<AdminResponse> Get(const std::string& path) const { return Call("GET", path); }
  Result<AdminResponse> Post(const std::string& path, const Json& body) const {
    return Call("POST", path, body.dump());
  }
  Result<AdminResponse> PostRaw(const std::string& path, const std::string& body) const {
    return Call("POST", path, body);
  }
  Result<AdminResponse> Put(const std::string& path, const std::string& body,
                            const std::string& content_type = "application/yaml") const {
    return Call("PUT", path, body, content_type);
  }
  Result<AdminResponse> Delete(const std::string& path) const { return Call("DELETE", path); }

  // GET /v1/state, which must answer 200 with JSON.
  Result<Json> State() const {
    auto r = Get("/v1/state");
    if (!r.ok()) return r.status();
    if (r->status != 200 || r->json.is_discarded()) {
      return Internal("GET /v1/state: " + std::to_string(r->status) + " " + r->body);
    }
    return r->json;
  }

  // POST /v1/swap of production and test.
  Result<AdminResponse> Swap(bool force = false) const {
    return Post("/v1/swap", Json{{"listeners", {"production", "test"}}, {"force", force}});
  }

  Result<std::string> Metrics() const {
    auto r = Get("/metrics");
    if (!r.ok()) return r.status();
    if (r->status != 200) return Internal("GET /metrics: " + std::to_string(r->status));
    return r->body;
  }

  // Polls GET /v1/state until `pred` holds. Returns the state that satisfied it.
  Result<Json> WaitForState(const std::function<bool(const Json&)>& pred, Duration timeout,
                            const std::string& what) const {
    const auto deadline = Clock::now() + timeout;
    std::string last;
    while (true) {
      auto st = State();
      if (st.ok()) {
        if (pred(*st)) return *st;
        last = st->dump();
      } else {
        last = st.status().ToString();
      }
      if (Clock::now() >= deadline) {
        return DeadlineExceeded("waiting for " + what + "; last state: " + last);
      }
      std::this_thread::sleep_for(20ms);  // polling interval of the admin API
    }
  }

 private:
  uint16_t port_;
};

// Accessors over the JSON of GET /v1/state; they return empty values when something is missing,
// so a test's EXPECT shows the difference instead of throwing.
inline Json Field(const Json& object, const std::string& key) {
  if (!object.is_object() || !object.contains(key)) return Json();
  return object[key];
}
inline Json FindByName(const Json& array, std::string_view key, std::string_view value) {
  if (!array.is_array()) return Json();
  for (const auto& item : array) {
    if (item.is_object() && item.contains(key) && item[std::string(key)].is_string() &&
        item[std::string(key)].get<std::string>() == value) {
      return item;
    }
  }
  return Json();
}
inline std::string ListenerGroup(const Json& state, std::string_view listener) {
  Json l = FindByName(Field(state, "listeners"), "name", listener);
  if (!l.is_object() || !l.contains("target_group") || !l["target_group"].is_string()) return "";
  return l["target_group"].get<std::string>();
}
inline Json TargetGroupState(const Json& state, std::string_view group) {
  return FindByName(Field(state, "target_groups"), "name", group);
}
inline std::string GroupTag(const Json& state, std::string_view group, const std::string& tag) {
  Json g = TargetGroupState(state, group);
  if (!g.is_object() || !g.contains("tags") || !g["tags"].is_object()) return "";
  const Json& tags = g["tags"];
  if (!tags.contains(tag) || !tags[tag].is_string()) return "";
  return tags[tag].get<std::string>();
}
inline Json TargetState(const Json& state, std::string_view group, std::string_view address) {
  Json g = TargetGroupState(state, group);
  if (!g.is_object()) return Json();
  return FindByName(Field(g, "targets"), "address", address);
}
// "healthy", "unhealthy", "initial", "draining", or "" when the target is not listed.
inline std::string TargetHealth(const Json& state, std::string_view group,
                                std::string_view address) {
  Json t = TargetState(state, group, address);
  if (!t.is_object() || !t.contains("health") || !t["health"].is_string()) return "";
  return t["health"].get<std::string>();
}
inline int64_t TargetInFlight(const Json& state, std::string_view group, std::string_view address) {
  Json t = TargetState(state, group, address);
  if (!t.is_object() || !t.contains("in_flight") || !t["in_flight"].is_number()) return -1;
  return t["in_flight"].get<int64_t>();
}
inline int64_t Generation(const Json& state) {
  if (!state.is_object() || !state.contains("generation") || !state["generation"].is_number()) {
    return -1;
  }
  return state["generation"].get<int64_t>();
}

// Sum of the samples of a Prometheus metric whose labels include all of `labels`; nullopt if no
// sample matches.
inline std::optional<double> MetricValue(std::string_view text, std::string_view name,
                                         const std::map<std::string, std::string>& labels = {}) {
  std::optional<double> sum;
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.compare(0, name.size(), name) != 0) continue;
    std::string_view rest = std::string_view(line).substr(name.size());
    std::map<std::string, std::string> got;
    if (!rest.empty() && rest[0] == '{') {
      size_t close = rest.find('}');
      if (close == std::string_view::npos) continue;
      std::string_view body = rest.substr(1, close - 1);
      rest = rest.substr(close + 1);
      while (!body.empty()) {
        size_t eq = body.find('=');
        if (eq == std::string_view::npos || eq + 1 >= body.size() || body[eq + 1] != '"') break;
        std::string key(Trim(body.substr(0, eq)));
        size_t end = eq + 2;
        std::string value;
        while (end < body.size() && body[end] != '"') {
          if (body[end] == '\\' && end + 1 < body.size()) ++end;
          value += body[end++];
        }
        got[key] = value;
        body = end + 1 < body.size() ? body.substr(end + 1) : std::string_view();
        if (!body.empty() && body[0] == ',') body.remove_prefix(1);
      }
    } else if (rest.empty() || rest[0] != ' ') {
      continue;  // another metric whose name starts with `name`
    }
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = got.find(k);
      if (it == got.end() || it->second != v) match = false;
    }
    if (!match) continue;
    std::string value_text(Trim(rest));
    value_text = value_text.substr(0, value_text.find(' '));  // drop a timestamp
    char* end = nullptr;
    double v = std::strtod(value_text.c_str(), &end);
    if (end == value_text.c_str()) continue;
    sum = sum.value_or(0) + v;
  }
  return sum;
}

// ---------------------------------------------------------------------------------------------
// Backends

// A running `test_backend`.
class Backend {
 public:
  struct Options {
    std::string name = "blue";
    int threads = 0;        // 0: the backend's default
    int idle_close_ms = 0;  // 0: never closes idle connections
    int health_status = 0;  // 0: the backend's default (200)
  };

  static Result<std::unique_ptr<Backend>> Start(const Options& opts) {
    std::vector<std::string> args = {"--listen", "127.0.0.1:0", "--name", opts.name};
    if (opts.threads > 0) args.insert(args.end(), {"--threads", std::to_string(opts.threads)});
    if (opts.idle_close_ms > 0) {
      args.insert(args.end(), {"--idle-close-ms", std::to_string(opts.idle_close_ms)});
    }
    if (opts.health_status > 0) {
      args.insert(args.end(), {"--health-status", std::to_string(opts.health_status)});
    }
    auto proc = Process::Start(TEST_BACKEND_BINARY, args);
    if (!proc.ok()) return proc.status();
    auto line = (*proc)->WaitForStdoutLine(10s);
    if (!line.ok()) return line.status();
    // "listening 127.0.0.1:PORT"
    static constexpr std::string_view kPrefix = "listening 127.0.0.1:";
    if (line->compare(0, kPrefix.size(), kPrefix) != 0) {
      return Internal("unexpected first line from test_backend: " + *line);
    }
    std::string port_text = std::string(Trim(std::string_view(*line).substr(kPrefix.size())));
    int port = std::atoi(port_text.c_str());
    if (port <= 0 || port > 65535) return Internal("bad port in: " + *line);
    std::unique_ptr<Backend> b(new Backend());
    b->name_ = opts.name;
    b->port_ = static_cast<uint16_t>(port);
    b->process_ = std::move(proc).value();
    return b;
  }

  const std::string& name() const { return name_; }
  uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  Process& process() { return *process_; }

  struct Stats {
    int64_t requests = 0;
    int64_t connections_accepted = 0;
    int64_t posts = 0;  // the POST requests among `requests`
  };
  // GET /control/stats, directly (not through the proxy).
  Result<Stats> GetStats() const {
    auto r = FetchGet(port_, "/control/stats");
    if (!r.ok()) return r.status();
    Json j = Json::parse(r->body, nullptr, false);
    if (r->status != 200 || !j.is_object() || !j.contains("requests")) {
      return Internal("bad /control/stats answer: " + r->body);
    }
    Stats s;
    s.requests = j.value("requests", int64_t{0});
    s.connections_accepted = j.value("connections_accepted", int64_t{0});
    s.posts = j.value("posts", int64_t{0});
    return s;
  }

  // Makes /health answer `status` from now on (GET /control/health/NNN, directly).
  Status SetHealth(int status) const {
    auto r = FetchGet(port_, "/control/health/" + std::to_string(status));
    if (!r.ok()) return r.status();
    if (r->status != 200) return Internal("/control/health: " + std::to_string(r->status));
    return Status::Ok();
  }

  // Makes every later ordinary request be answered as `mode` says ("none", "hang", "reset",
  // "slow-MS", "close-early"; GET /control/fault/MODE, directly). See test_backend.cc.
  Status SetFault(const std::string& mode) const {
    auto r = FetchGet(port_, "/control/fault/" + mode);
    if (!r.ok()) return r.status();
    if (r->status != 200) return Internal("/control/fault: " + std::to_string(r->status));
    return Status::Ok();
  }

  // Stops the backend hard (SIGKILL): its port refuses connections from now on.
  void Kill() {
    process_->Signal(SIGKILL);
    process_->WaitExit(5s);
  }

 private:
  Backend() = default;
  std::string name_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> process_;
};

// ---------------------------------------------------------------------------------------------
// Proxy config

struct HealthCheckSpec {
  std::string path = "/health";
  std::string interval = "250ms";
  std::string timeout = "200ms";
  int healthy_threshold = 2;
  int unhealthy_threshold = 2;
  std::string matcher = "200-299";
};

struct TargetGroupSpec {
  std::string name;
  std::vector<std::string> targets;  // "127.0.0.1:PORT"
  std::string algorithm = "round_robin";
  HealthCheckSpec health_check;
  std::string deregistration_delay = "30s";
  std::vector<std::pair<std::string, std::string>> tags;
};

struct ListenerSpec {
  std::string name;
  uint16_t port = 0;
  std::string target_group;
  std::vector<std::string> allow;
};

inline std::string YamlQuote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

// The proxy config a test runs with; ToYaml() writes the documented YAML format.
struct ProxyConfigSpec {
  uint16_t admin_port = 0;
  std::string state_file;  // empty: none
  int workers = 2;
  std::string cpu_affinity;  // empty: not written (the proxy's default, auto)
  std::vector<ListenerSpec> listeners;
  std::vector<TargetGroupSpec> target_groups;
  std::map<std::string, std::string> limits = {
      {"client_header_timeout", "10s"},   {"client_idle_timeout", "60s"},
      {"upstream_connect_timeout", "5s"}, {"upstream_response_timeout", "60s"},
      {"upstream_idle_timeout", "30s"},   {"max_request_line", "8192"},
      {"max_header_bytes", "32768"},      {"max_headers", "100"},
  };

  ListenerSpec* Listener(std::string_view name) {
    for (auto& l : listeners) {
      if (l.name == name) return &l;
    }
    return nullptr;
  }
  TargetGroupSpec* Group(std::string_view name) {
    for (auto& g : target_groups) {
      if (g.name == name) return &g;
    }
    return nullptr;
  }
  uint16_t Port(std::string_view listener) const {
    for (const auto& l : listeners) {
      if (l.name == listener) return l.port;
    }
    return 0;
  }

  std::string ToYaml() const {
    std::ostringstream y;
    y << "admin: 127.0.0.1:" << admin_port << "\n";
    if (!state_file.empty()) y << "state_file: " << YamlQuote(state_file) << "\n";
    y << "workers: " << workers << "\n";
    if (!cpu_affinity.empty()) y << "cpu_affinity: " << cpu_affinity << "\n";
    y << "listeners:\n";
    for (const auto& l : listeners) {
      y << "  - {name: " << l.name << ", port: " << l.port << ", target_group: " << l.target_group;
      if (!l.allow.empty()) {
        y << ", allow: [";
        for (size_t i = 0; i < l.allow.size(); ++i) y << (i ? ", " : "") << l.allow[i];
        y << "]";
      }
      y << "}\n";
    }
    y << "target_groups:\n";
    for (const auto& g : target_groups) {
      y << "  - name: " << g.name << "\n";
      y << "    targets: [";
      for (size_t i = 0; i < g.targets.size(); ++i) y << (i ? ", " : "") << g.targets[i];
      y << "]\n";
      y << "    algorithm: " << g.algorithm << "\n";
      const auto& h = g.health_check;
      y << "    health_check: {path: " << h.path << ", interval: " << h.interval
        << ", timeout: " << h.timeout << ", healthy_threshold: " << h.healthy_threshold
        << ", unhealthy_threshold: " << h.unhealthy_threshold
        << ", matcher: " << YamlQuote(h.matcher) << "}\n";
      y << "    deregistration_delay: " << g.deregistration_delay << "\n";
      if (!g.tags.empty()) {
        y << "    tags: {";
        for (size_t i = 0; i < g.tags.size(); ++i) {
          y << (i ? ", " : "") << g.tags[i].first << ": " << YamlQuote(g.tags[i].second);
        }
        y << "}\n";
      }
    }
    y << "limits: {";
    bool first = true;
    for (const auto& [k, v] : limits) {
      y << (first ? "" : ", ") << k << ": " << v;
      first = false;
    }
    y << "}\n";
    return y.str();
  }

  // The same config as JSON (which the proxy accepts too, JSON being YAML).
  Json ToJson() const {
    Json j = Json::object();
    j["admin"] = "127.0.0.1:" + std::to_string(admin_port);
    if (!state_file.empty()) j["state_file"] = state_file;
    j["workers"] = workers;
    if (!cpu_affinity.empty()) j["cpu_affinity"] = cpu_affinity;
    j["listeners"] = Json::array();
    for (const auto& l : listeners) {
      Json lj = {{"name", l.name}, {"port", l.port}, {"target_group", l.target_group}};
      if (!l.allow.empty()) lj["allow"] = l.allow;
      j["listeners"].push_back(lj);
    }
    j["target_groups"] = Json::array();
    for (const auto& g : target_groups) {
      const auto& h = g.health_check;
      Json gj = {{"name", g.name},
                 {"targets", g.targets},
                 {"algorithm", g.algorithm},
                 {"health_check",
                  {{"path", h.path},
                   {"interval", h.interval},
                   {"timeout", h.timeout},
                   {"healthy_threshold", h.healthy_threshold},
                   {"unhealthy_threshold", h.unhealthy_threshold},
                   {"matcher", h.matcher}}},
                 {"deregistration_delay", g.deregistration_delay}};
      Json tags = Json::object();
      for (const auto& [k, v] : g.tags) tags[k] = v;
      gj["tags"] = tags;
      j["target_groups"].push_back(gj);
    }
    Json limits_json = Json::object();
    for (const auto& [k, v] : limits) {
      bool numeric = !v.empty() && std::all_of(v.begin(), v.end(), ::isdigit);
      if (numeric) {
        limits_json[k] = std::stoll(v);
      } else {
        limits_json[k] = v;
      }
    }
    j["limits"] = limits_json;
    return j;
  }
};

// Measures how an action changes a backend's /control/stats counters, not counting the stats
// requests themselves (whether the backend counts a stats request before answering it or not).
class StatsProbe {
 public:
  explicit StatsProbe(const Backend* backend) : backend_(backend) {}

  // Reads the counters twice in a row: the difference is what one stats call costs.
  Status Begin() {
    auto a = backend_->GetStats();
    if (!a.ok()) return a.status();
    auto b = backend_->GetStats();
    if (!b.ok()) return b.status();
    self_.requests = b->requests - a->requests;
    self_.connections_accepted = b->connections_accepted - a->connections_accepted;
    self_.posts = b->posts - a->posts;
    before_ = *b;
    return Status::Ok();
  }
  // Counters now minus counters at Begin(), minus the cost of this stats call.
  Result<Backend::Stats> Delta() const {
    auto now = backend_->GetStats();
    if (!now.ok()) return now.status();
    Backend::Stats d;
    d.requests = now->requests - before_.requests - self_.requests;
    d.connections_accepted =
        now->connections_accepted - before_.connections_accepted - self_.connections_accepted;
    d.posts = now->posts - before_.posts - self_.posts;
    return d;
  }

 private:
  const Backend* backend_;
  Backend::Stats self_;
  Backend::Stats before_;
};

// The reference layout: production -> blue (Code1, IsProduction true), test -> green (Code2),
// test listener open to 127.0.0.0/8. Ports are picked here.
inline Result<ProxyConfigSpec> BlueGreenConfig(const std::vector<std::string>& blue_targets,
                                               const std::vector<std::string>& green_targets) {
  ProxyConfigSpec spec;
  auto admin = PickFreePort();
  auto prod = PickFreePort();
  auto test = PickFreePort();
  if (!admin.ok()) return admin.status();
  if (!prod.ok()) return prod.status();
  if (!test.ok()) return test.status();
  spec.admin_port = *admin;
  spec.listeners = {{"production", *prod, "blue", {}}, {"test", *test, "green", {"127.0.0.0/8"}}};
  TargetGroupSpec blue;
  blue.name = "blue";
  blue.targets = blue_targets;
  blue.tags = {{"Identifier", "Code1"}, {"Image", "v1"}, {"IsProduction", "true"}};
  TargetGroupSpec green;
  green.name = "green";
  green.targets = green_targets;
  green.tags = {{"Identifier", "Code2"}, {"Image", "v1"}, {"IsProduction", "false"}};
  spec.target_groups = {blue, green};
  return spec;
}

// ---------------------------------------------------------------------------------------------
// The proxy process

class ProxyProcess {
 public:
  // Writes the config to `config_path` and starts `bluegreen proxy --config config_path`, without
  // waiting for it to be ready.
  static Result<std::unique_ptr<ProxyProcess>> Launch(const std::string& config_path,
                                                      const ProxyConfigSpec& spec) {
    BG_RETURN_IF_ERROR(WriteFile(config_path, spec.ToYaml()));
    return LaunchWithExistingFile(config_path, spec);
  }
  static Result<std::unique_ptr<ProxyProcess>> LaunchWithExistingFile(
      const std::string& config_path, const ProxyConfigSpec& spec) {
    auto proc = Process::Start(BLUEGREEN_BINARY, {"proxy", "--config", config_path});
    if (!proc.ok()) return proc.status();
    std::unique_ptr<ProxyProcess> p(new ProxyProcess());
    p->spec_ = spec;
    p->config_path_ = config_path;
    p->admin_ = Admin(spec.admin_port);
    p->process_ = std::move(proc).value();
    return p;
  }

  // Ready: GET /v1/state answers 200 and every listener port accepts connections.
  Status WaitReady(Duration timeout = 15s) {
    const auto deadline = Clock::now() + timeout;
    std::string last = "nothing tried";
    while (true) {
      if (!process_->Running()) {
        return Unavailable("proxy exited (" + DescribeWaitStatus(process_->WaitExit(0ms)) +
                           ") before it was ready; stderr:\n" + process_->Stderr());
      }
      bool ready = false;
      auto st = admin_.Get("/v1/state");
      if (!st.ok()) {
        last = "admin: " + st.status().ToString();
      } else if (st->status != 200) {
        last = "admin: GET /v1/state -> " + std::to_string(st->status);
      } else {
        ready = true;
        for (const auto& l : spec_.listeners) {
          auto c = HttpConnection::Connect(l.port, 1s);
          if (!c.ok()) {
            ready = false;
            last = "listener " + l.name + ": " + c.status().ToString();
            break;
          }
        }
      }
      if (ready) return Status::Ok();
      if (Clock::now() >= deadline) {
        return DeadlineExceeded("proxy not ready: " + last + "; stderr:\n" + process_->Stderr());
      }
      std::this_thread::sleep_for(20ms);  // polling: the proxy offers no readiness notification
    }
  }

  const Admin& admin() const { return admin_; }
  const ProxyConfigSpec& spec() const { return spec_; }
  const std::string& config_path() const { return config_path_; }
  uint16_t port(std::string_view listener) const { return spec_.Port(listener); }
  uint16_t production_port() const { return port("production"); }
  uint16_t test_port() const { return port("test"); }
  Process& process() { return *process_; }

 private:
  ProxyProcess() = default;
  ProxyConfigSpec spec_;
  std::string config_path_;
  Admin admin_;
  std::unique_ptr<Process> process_;
};

// ---------------------------------------------------------------------------------------------
// Fixture

// Owns the temp dir, backends and proxies of one test; on failure prints the children's stderr.
// A watchdog aborts the binary (after killing the children) if one test runs far too long, so a
// hang never blocks CI; every I/O call also has its own deadline.
class ProxyTest : public ::testing::Test {
 protected:
  static constexpr Duration kWatchdog = 90s;

  void SetUp() override {
    ASSERT_TRUE(dir_.ok()) << "mkdtemp failed";
    watchdog_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(watchdog_mu_);
      if (!watchdog_cv_.wait_for(lock, kWatchdog, [this] { return test_done_; })) {
        std::fprintf(stderr, "watchdog: test ran longer than %lld s, aborting\n",
                     static_cast<long long>(
                         std::chrono::duration_cast<std::chrono::seconds>(kWatchdog).count()));
        std::lock_guard<std::mutex> reg(ChildRegistryMutex());
        for (pid_t pid : ChildRegistry()) ::kill(pid, SIGKILL);
        std::abort();
      }
    });
  }

  void TearDown() override {
    if (HasFailure()) {
      if (!logs_of_stopped_.empty()) {
        std::string err = logs_of_stopped_;
        if (err.size() > 16384) err = "..." + err.substr(err.size() - 16384);
        std::fprintf(stderr, "----- stderr of stopped proxies -----\n%s\n----- end -----\n",
                     err.c_str());
      }
      for (auto& p : proxies_) {
        if (p) DumpLog("proxy", p->process());
      }
      for (auto& b : backends_) {
        if (b) DumpLog("backend " + b->name(), b->process());
      }
    }
    proxies_.clear();
    backends_.clear();
    {
      std::lock_guard<std::mutex> lock(watchdog_mu_);
      test_done_ = true;
    }
    watchdog_cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
  }

  static void DumpLog(const std::string& who, Process& p) {
    std::string err = p.Stderr();
    if (err.size() > 16384) err = "..." + err.substr(err.size() - 16384);
    std::fprintf(stderr, "----- stderr of %s (%s) -----\n%s\n----- end -----\n", who.c_str(),
                 p.description().c_str(), err.c_str());
  }

  Result<Backend*> StartBackend(const std::string& name, int idle_close_ms = 0) {
    Backend::Options opts;
    opts.name = name;
    opts.idle_close_ms = idle_close_ms;
    return StartBackend(opts);
  }
  Result<Backend*> StartBackend(const Backend::Options& opts) {
    auto b = Backend::Start(opts);
    if (!b.ok()) return b.status();
    backends_.push_back(std::move(b).value());
    return backends_.back().get();
  }

  // Starts the proxy with `spec` (config file in the temp dir) and waits until it is ready.
  Result<ProxyProcess*> StartProxy(const ProxyConfigSpec& spec,
                                   const std::string& config_name = "proxy.yaml") {
    auto p = ProxyProcess::Launch(dir_.File(config_name), spec);
    if (!p.ok()) return p.status();
    proxies_.push_back(std::move(p).value());
    ProxyProcess* proxy = proxies_.back().get();
    BG_RETURN_IF_ERROR(proxy->WaitReady());
    return proxy;
  }

  // Stops a proxy started by this fixture (SIGTERM) and forgets it; returns its wait status.
  std::optional<int> StopProxy(ProxyProcess* proxy, Duration grace = 10s) {
    std::optional<int> st = proxy->process().Stop(grace);
    for (auto& p : proxies_) {
      if (p.get() == proxy) {
        logs_of_stopped_ += p->process().Stderr();
        p.reset();
      }
    }
    return st;
  }

  // The usual setup: a backend "blue" behind production, "green" behind test, the proxy ready and
  // every target healthy.
  struct BlueGreen {
    Backend* blue = nullptr;
    Backend* green = nullptr;
    ProxyProcess* proxy = nullptr;
  };
  Result<BlueGreen> StartBlueGreen(
      const std::function<void(ProxyConfigSpec&)>& customize = nullptr) {
    BlueGreen bg;
    auto blue = StartBackend("blue");
    if (!blue.ok()) return blue.status();
    auto green = StartBackend("green");
    if (!green.ok()) return green.status();
    bg.blue = *blue;
    bg.green = *green;
    auto spec = BlueGreenConfig({bg.blue->address()}, {bg.green->address()});
    if (!spec.ok()) return spec.status();
    if (customize) customize(*spec);
    auto proxy = StartProxy(*spec);
    if (!proxy.ok()) return proxy.status();
    bg.proxy = *proxy;
    BG_RETURN_IF_ERROR(WaitAllHealthy(*bg.proxy));
    return bg;
  }

  // Waits until every target of every group of `spec` shows "healthy" in the state.
  static Status WaitAllHealthy(const ProxyProcess& proxy, Duration timeout = 10s) {
    const ProxyConfigSpec spec = proxy.spec();
    auto st = proxy.admin().WaitForState(
        [&](const Json& s) {
          for (const auto& g : spec.target_groups) {
            for (const auto& t : g.targets) {
              if (TargetHealth(s, g.name, t) != "healthy") return false;
            }
          }
          return true;
        },
        timeout, "every target healthy");
    return st.ok() ? Status::Ok() : st.status();
  }

  static Status WaitHealth(const ProxyProcess& proxy, const std::string& group,
                           const std::string& address, const std::string& health,
                           Duration timeout = 10s) {
    auto st = proxy.admin().WaitForState(
        [&](const Json& s) { return TargetHealth(s, group, address) == health; }, timeout,
        group + "/" + address + " " + health);
    return st.ok() ? Status::Ok() : st.status();
  }

  TempDir dir_;
  std::vector<std::unique_ptr<Backend>> backends_;
  std::vector<std::unique_ptr<ProxyProcess>> proxies_;
  std::string logs_of_stopped_;

 private:
  std::thread watchdog_;
  std::mutex watchdog_mu_;
  std::condition_variable watchdog_cv_;
  bool test_done_ = false;
};

}  // namespace bluegreen::proxy_test
