// load_tool: steady HTTP load at a fixed rate (or as fast as it goes), for long runs: counts every
// failed request and prints a line per interval, so a soak shows when something went wrong.
//
//   load_tool --connect 127.0.0.1:PORT [--clients 16] [--close-clients 0] [--rate 0]
//             [--seconds 60] [--report-every 10] [--path /] [--timeout-ms 5000]
//
// --clients threads with blocking sockets, one request at a time each; --close-clients of them
// send "Connection: close" (a new connection per request), the others keep one keep-alive
// connection and open a new one only when the server closed it (not a failure when the server said
// "Connection: close"). Every request is "GET --path".
//
// --rate R (requests per second, all clients together; 0 = no limit): each client sends on its own
// schedule of R/clients per second. A client that falls behind sends at once and does not catch up
// with a burst. Latency is measured from the time the request was due (as wrk2 does), so a stall
// shows in the percentiles instead of hiding behind the fixed schedule ("coordinated omission").
//
// A request fails on a connect error, a send error, a connection closed or reset before the whole
// response, a timeout (--timeout-ms without a byte), a malformed response or a status outside
// 200-399. Each line "t=S requests=N failed=F rate=R/s" covers one interval; the last lines give the
// totals, latency percentiles and the failures by kind. Exits 0 only if no request failed.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
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

using Clock = std::chrono::steady_clock;

struct Options {
  bench::Address target;
  uint64_t clients = 16;
  uint64_t close_clients = 0;
  uint64_t rate = 0;
  uint64_t seconds = 60;
  uint64_t report_every = 10;
  std::string path = "/";
  int timeout_ms = 5000;
};

[[noreturn]] void Usage(const char* error) {
  std::fprintf(stderr,
               "load_tool: %s\n"
               "usage: load_tool --connect HOST:PORT [--clients 16] [--close-clients 0]\n"
               "                 [--rate 0] [--seconds 60] [--report-every 10] [--path /]\n"
               "                 [--timeout-ms 5000]\n",
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
    auto number = [&](uint64_t max, uint64_t* out) {
      if (!bench::ParseUint(value, max, out)) Usage("bad number");
    };
    uint64_t n = 0;
    if (flag == "--connect") {
      if (!bench::ParseAddress(value, &o.target)) Usage("bad --connect address");
      have_target = true;
    } else if (flag == "--clients") {
      number(4096, &o.clients);
    } else if (flag == "--close-clients") {
      number(4096, &o.close_clients);
    } else if (flag == "--rate") {
      number(10'000'000, &o.rate);
    } else if (flag == "--seconds") {
      number(7 * 86400, &o.seconds);
    } else if (flag == "--report-every") {
      number(86400, &o.report_every);
    } else if (flag == "--path") {
      if (!value.starts_with("/")) Usage("--path must start with /");
      o.path = value;
    } else if (flag == "--timeout-ms") {
      number(600'000, &n);
      o.timeout_ms = static_cast<int>(n);
    } else {
      Usage("unknown flag");
    }
  }
  if (!have_target) Usage("--connect is required");
  if (o.clients == 0 || o.close_clients > o.clients) {
    Usage("need 1 <= --clients and --close-clients <= --clients");
  }
  if (o.seconds == 0 || o.report_every == 0 || o.timeout_ms <= 0) Usage("bad duration");
  return o;
}

// Latency histogram: 1 µs buckets below 10 ms, 100 µs buckets up to 10 s, then one overflow.
class Histogram {
 public:
  void Add(uint64_t micros) {
    if (micros < kFine) {
      ++fine_[micros];
    } else if (micros < kFine + kCoarse * kCoarseWidth) {
      ++coarse_[(micros - kFine) / kCoarseWidth];
    } else {
      ++over_;
    }
    ++count_;
    max_ = std::max(max_, micros);
  }
  void Merge(const Histogram& h) {
    for (size_t i = 0; i < kFine; ++i) fine_[i] += h.fine_[i];
    for (size_t i = 0; i < kCoarse; ++i) coarse_[i] += h.coarse_[i];
    over_ += h.over_;
    count_ += h.count_;
    max_ = std::max(max_, h.max_);
  }
  // The smallest bucket bound that holds at least p of the samples, in milliseconds.
  double PercentileMs(double p) const {
    if (count_ == 0) return 0;
    const auto want = static_cast<uint64_t>(std::ceil(p * static_cast<double>(count_)));
    uint64_t seen = 0;
    for (size_t i = 0; i < kFine; ++i) {
      seen += fine_[i];
      if (seen >= want) return static_cast<double>(i) / 1000.0;
    }
    for (size_t i = 0; i < kCoarse; ++i) {
      seen += coarse_[i];
      if (seen >= want) return static_cast<double>(kFine + (i + 1) * kCoarseWidth) / 1000.0;
    }
    return static_cast<double>(max_) / 1000.0;
  }
  double MaxMs() const { return static_cast<double>(max_) / 1000.0; }

 private:
  static constexpr size_t kFine = 10'000;
  static constexpr size_t kCoarse = 100'000;
  static constexpr size_t kCoarseWidth = 100;
  std::vector<uint64_t> fine_ = std::vector<uint64_t>(kFine);
  std::vector<uint64_t> coarse_ = std::vector<uint64_t>(kCoarse);
  uint64_t over_ = 0, count_ = 0, max_ = 0;
};

enum Failure { kConnect, kSend, kClosed, kTimeout, kMalformed, kStatus, kFailureKinds };
constexpr std::array<const char*, kFailureKinds> kFailureNames = {
    "connect", "send", "closed", "timeout", "malformed", "status"};

std::atomic<bool> g_stop{false};
std::atomic<uint64_t> g_done{0};
std::atomic<uint64_t> g_failed{0};
std::array<std::atomic<uint64_t>, kFailureKinds> g_failures{};

Clock::time_point g_start;  // written before the clients start

// Counts a failure and describes the first 20 on stderr: when, which client, how many requests
// its connection had carried, and errno.
void CountFailure(Failure kind, uint64_t client, bool close_each, uint64_t on_connection) {
  const int err = errno;
  g_failures[kind].fetch_add(1, std::memory_order_relaxed);
  if (g_failed.fetch_add(1, std::memory_order_relaxed) < 20) {
    std::fprintf(stderr, "failure at t=%.3fs: %s, client %llu (%s), request %llu on its connection, "
                 "errno %d (%s)\n",
                 std::chrono::duration<double>(Clock::now() - g_start).count(), kFailureNames[kind],
                 static_cast<unsigned long long>(client), close_each ? "close" : "keep-alive",
                 static_cast<unsigned long long>(on_connection + 1), err, std::strerror(err));
  }
}

void Client(const Options& o, uint64_t index, bool close_each, double interval_s,
            Clock::time_point start, Histogram* hist) {
  const std::string request = "GET " + o.path + " HTTP/1.1\r\nHost: " + o.target.text +
                              "\r\nUser-Agent: load_tool\r\n" +
                              (close_each ? "Connection: close\r\n" : "") + "\r\n";
  int fd = -1;
  bench::ResponseReader reader;
  bench::Response response;
  uint64_t sent = 0;
  uint64_t on_connection = 0;  // requests answered on the current connection
  while (!g_stop.load(std::memory_order_relaxed)) {
    Clock::time_point due = Clock::now();
    if (interval_s > 0) {
      due = start + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(interval_s * static_cast<double>(sent)));
      const Clock::time_point now = Clock::now();
      if (due > now) {
        std::this_thread::sleep_until(due);
      } else if (now - due > std::chrono::seconds(1)) {
        // Far behind (a long stall): restart the schedule rather than send a burst.
        start = now - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                          interval_s * static_cast<double>(sent)));
        due = now;
      }
      if (g_stop.load(std::memory_order_relaxed)) break;
    }
    ++sent;
    if (fd < 0) {
      fd = bench::Connect(o.target, o.timeout_ms);
      reader.Reset();
      on_connection = 0;
      if (fd < 0) {
        CountFailure(kConnect, index, close_each, on_connection);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
    }
    if (!bench::SendAll(fd, request)) {
      CountFailure(kSend, index, close_each, on_connection);
      close(fd);
      fd = -1;
      continue;
    }
    errno = 0;  // an EOF leaves errno alone: 0 then means "closed by the peer"
    const bench::ReadResult r = reader.Read(fd, &response);
    const Clock::time_point end = Clock::now();
    if (r != bench::ReadResult::kOk) {
      CountFailure(r == bench::ReadResult::kTimeout     ? kTimeout
                   : r == bench::ReadResult::kMalformed ? kMalformed
                                                        : kClosed,
                   index, close_each, on_connection);
      close(fd);
      fd = -1;
      continue;
    }
    ++on_connection;
    if (response.status < 200 || response.status >= 400) {
      CountFailure(kStatus, index, close_each, on_connection - 1);
    } else {
      g_done.fetch_add(1, std::memory_order_relaxed);
      hist->Add(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(end - due).count()));
    }
    if (close_each || response.close) {
      close(fd);
      fd = -1;
    }
  }
  if (fd >= 0) close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseOptions(argc, argv);
  rlim_t before = 0;
  bluegreen::RaiseFileLimit(&before);

  const double interval_s =
      o.rate == 0 ? 0 : static_cast<double>(o.clients) / static_cast<double>(o.rate);
  const Clock::time_point start = Clock::now();
  g_start = start;
  std::vector<Histogram> hists(o.clients);
  std::vector<std::thread> threads;
  threads.reserve(o.clients);
  for (uint64_t i = 0; i < o.clients; ++i) {
    // Spread the clients' schedules over one interval so they do not send in step.
    const Clock::time_point client_start =
        start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                    interval_s * static_cast<double>(i) / static_cast<double>(o.clients)));
    threads.emplace_back(Client, std::cref(o), i, i < o.close_clients, interval_s, client_start,
                         &hists[i]);
  }

  uint64_t last_done = 0, last_failed = 0;
  for (uint64_t t = o.report_every;; t += o.report_every) {
    const uint64_t at = std::min(t, o.seconds);
    std::this_thread::sleep_until(start + std::chrono::seconds(at));
    const uint64_t done = g_done.load(), failed = g_failed.load();
    std::printf("t=%llus requests=%llu failed=%llu rate=%.0f/s\n",
                static_cast<unsigned long long>(at),
                static_cast<unsigned long long>(done - last_done),
                static_cast<unsigned long long>(failed - last_failed),
                static_cast<double>(done - last_done) /
                    static_cast<double>(at - (t - o.report_every)));
    std::fflush(stdout);
    last_done = done;
    last_failed = failed;
    if (at >= o.seconds) break;
  }
  g_stop.store(true);
  for (std::thread& th : threads) th.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  Histogram all;
  for (const Histogram& h : hists) all.Merge(h);
  const uint64_t done = g_done.load(), failed = g_failed.load();
  std::printf("total requests=%llu failed=%llu seconds=%.1f rate=%.0f/s target_rate=%llu/s\n",
              static_cast<unsigned long long>(done), static_cast<unsigned long long>(failed),
              elapsed, static_cast<double>(done) / elapsed, static_cast<unsigned long long>(o.rate));
  std::printf("latency_ms p50=%.3f p90=%.3f p99=%.3f p99.9=%.3f max=%.3f\n",
              all.PercentileMs(0.50), all.PercentileMs(0.90), all.PercentileMs(0.99),
              all.PercentileMs(0.999), all.MaxMs());
  std::printf("failures");
  for (int k = 0; k < kFailureKinds; ++k) {
    std::printf(" %s=%llu", kFailureNames[k], static_cast<unsigned long long>(g_failures[k].load()));
  }
  std::printf("\n");
  return failed == 0 ? 0 : 1;
}
