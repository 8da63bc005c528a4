// idle_conns_tool: opens N keep-alive connections to an HTTP server, sends one GET on each and
// reads its response (so every connection is established and has been used), then holds them all
// open and idle for S seconds. Used by bench/compare to measure a proxy's memory per idle client
// connection.
//
//   idle_conns_tool --connect 127.0.0.1:8080 [--conns 10000] [--hold 20] [--path /]
//                   [--timeout-ms 5000]
//
// Raises RLIMIT_NOFILE to its hard limit first. Prints "ready N" (flushed) once N connections are
// open and used, then after the hold "done held=N closed_by_peer=K". Exits 0 only if every
// connection was opened, answered 2xx with keep-alive, and still open at the end.
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/posix.h"
#include "http_client.h"

namespace {

struct Options {
  bench::Address target;
  uint64_t conns = 10000;
  uint64_t hold_seconds = 20;
  std::string path = "/";
  int timeout_ms = 5000;
};

[[noreturn]] void Usage(const char* error) {
  std::fprintf(stderr,
               "idle_conns_tool: %s\n"
               "usage: idle_conns_tool --connect HOST:PORT [--conns 10000] [--hold 20] [--path /]\n"
               "                       [--timeout-ms 5000]\n",
               error);
  std::exit(2);
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  bool have_target = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (i + 1 >= argc) Usage("missing value for a flag");
    const std::string_view value = argv[++i];
    uint64_t n = 0;
    if (flag == "--connect") {
      if (!bench::ParseAddress(value, &o.target)) Usage("bad --connect address");
      have_target = true;
    } else if (flag == "--conns") {
      if (!bench::ParseUint(value, 1'000'000, &o.conns) || o.conns == 0) Usage("bad --conns");
    } else if (flag == "--hold") {
      if (!bench::ParseUint(value, 86400, &o.hold_seconds)) Usage("bad --hold");
    } else if (flag == "--path") {
      if (!value.starts_with("/")) Usage("--path must start with /");
      o.path = value;
    } else if (flag == "--timeout-ms") {
      if (!bench::ParseUint(value, 600'000, &n) || n == 0) Usage("bad --timeout-ms");
      o.timeout_ms = static_cast<int>(n);
    } else {
      Usage("unknown flag");
    }
  }
  if (!have_target) Usage("--connect is required");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseOptions(argc, argv);

  rlim_t before = 0;
  const rlim_t limit = bluegreen::RaiseFileLimit(&before);
  if (limit < o.conns + 32) {
    std::fprintf(stderr, "idle_conns_tool: RLIMIT_NOFILE is %llu, need %llu\n",
                 static_cast<unsigned long long>(limit),
                 static_cast<unsigned long long>(o.conns + 32));
    return 2;
  }

  const std::string request = "GET " + o.path + " HTTP/1.1\r\nHost: " + o.target.text +
                              "\r\nUser-Agent: idle_conns_tool\r\n\r\n";
  const auto start = std::chrono::steady_clock::now();
  std::vector<int> fds;
  fds.reserve(o.conns);
  uint64_t failed = 0;
  bench::Response response;
  // One connection at a time: the proxy never needs more than one upstream connection for this,
  // so what is measured is the cost of the idle client connections.
  for (uint64_t i = 0; i < o.conns; ++i) {
    const int fd = bench::Connect(o.target, o.timeout_ms);
    if (fd < 0) {
      if (failed++ < 5) std::fprintf(stderr, "connect: %s\n", std::strerror(errno));
      continue;
    }
    bench::ResponseReader reader;
    bench::ReadResult r = bench::ReadResult::kError;
    if (bench::SendAll(fd, request)) r = reader.Read(fd, &response);
    if (r != bench::ReadResult::kOk || response.status / 100 != 2 || response.close) {
      if (failed++ < 5) {
        std::fprintf(stderr, "request %llu: %s status=%d close=%d\n",
                     static_cast<unsigned long long>(i), bench::ReadResultName(r), response.status,
                     response.close ? 1 : 0);
      }
      close(fd);
      continue;
    }
    fds.push_back(fd);
  }
  const double setup_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("ready %zu failed=%llu setup=%.2fs\n", fds.size(),
              static_cast<unsigned long long>(failed), setup_s);
  std::fflush(stdout);

  std::this_thread::sleep_for(std::chrono::seconds(o.hold_seconds));

  // Which connections did the peer close (or reset) while they were idle?
  std::vector<pollfd> polls;
  polls.reserve(fds.size());
  for (int fd : fds) polls.push_back(pollfd{fd, POLLIN | POLLRDHUP, 0});
  poll(polls.data(), polls.size(), 0);
  uint64_t closed = 0;
  for (const pollfd& p : polls) {
    if (p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) ++closed;
  }
  std::printf("done held=%zu closed_by_peer=%llu\n", fds.size(),
              static_cast<unsigned long long>(closed));
  std::fflush(stdout);
  for (int fd : fds) close(fd);
  return failed == 0 && closed == 0 ? 0 : 1;
}
