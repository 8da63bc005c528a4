// swap_under_load_tool: load on the production listener while the target groups are swapped over
// and over; checks that no request fails and that no request reaches the old group once a swap has
// been acknowledged (DESIGN.md invariants 1-3).
//
//   swap_under_load_tool --proxy 127.0.0.1:PORT --admin 127.0.0.1:PORT
//       [--clients 16] [--close-clients 4] [--requests 100000] [--swaps 200]
//       [--swap-interval-ms 10] [--post-percent 30] [--max-seconds 300] [--timeout-ms 5000]
//       [--listeners production,test]
//
// Clients: --clients threads with blocking sockets, each one request at a time; --close-clients of
// them send "Connection: close" (a new connection per request), the others reuse one keep-alive
// connection. Each request is a GET, or with --post-percent probability a POST with a 16-byte body.
// The backends are test_backend processes: a response body starts with the backend's name, which is
// the name of its group ("blue\n", or "blue 16\n" for a POST).
//
// Swapper: one thread calls POST /v1/swap {"listeners": [...]} on the admin API, waits for the
// answer, pauses --swap-interval-ms, and again. --swaps 0 disables it (to test the plumbing against
// any proxy: then every response must come from the group that answered the first probe).
//
// Correctness: a single atomic word holds (sequence, live group). The swapper makes the sequence
// odd before it sends a swap and even again, with the new live group, after the 200. A client reads
// the word before sending a request and again after the response. If both reads are equal and even,
// no swap was in flight or acknowledged during the whole request, so the request was sent after the
// acknowledgement of the last swap and before the next one started: the response must come from
// the live group, and one from the other group counts as wrong_group. Requests that overlap a swap
// may legitimately get either group; they are counted as "unchecked". (Recording only an epoch
// incremented after each 200 is not enough: a request sent while a swap is in flight may see the
// new table before the acknowledgement arrives, which is correct behaviour.)
//
// The run ends when at least --requests requests completed and --swaps swaps were acknowledged, or
// after --max-seconds (then it is incomplete). Prints the totals; exits 0 only if the run is
// complete with no failed request (socket error, timeout, non-2xx, unexpected body), no refused
// swap and no wrong_group response.
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "http_client.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  bench::Address proxy;
  bench::Address admin;
  uint64_t clients = 16;
  uint64_t close_clients = 4;
  uint64_t requests = 100000;
  uint64_t swaps = 200;
  uint64_t swap_interval_ms = 10;
  uint64_t post_percent = 30;
  uint64_t max_seconds = 300;
  int timeout_ms = 5000;
  std::string listeners = "production,test";
};

[[noreturn]] void Usage(const char* error) {
  std::fprintf(stderr,
               "swap_under_load_tool: %s\n"
               "usage: swap_under_load_tool --proxy HOST:PORT --admin HOST:PORT [--clients 16]\n"
               "       [--close-clients 4] [--requests 100000] [--swaps 200]\n"
               "       [--swap-interval-ms 10] [--post-percent 30] [--max-seconds 300]\n"
               "       [--timeout-ms 5000] [--listeners production,test]\n",
               error);
  std::exit(2);
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  bool have_proxy = false, have_admin = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (i + 1 >= argc) Usage("missing value for a flag");
    const std::string_view value = argv[++i];
    auto number = [&](uint64_t max, uint64_t* out) {
      if (!bench::ParseUint(value, max, out)) Usage("bad number");
    };
    uint64_t n = 0;
    if (flag == "--proxy") {
      if (!bench::ParseAddress(value, &o.proxy)) Usage("bad --proxy address");
      have_proxy = true;
    } else if (flag == "--admin") {
      if (!bench::ParseAddress(value, &o.admin)) Usage("bad --admin address");
      have_admin = true;
    } else if (flag == "--clients") {
      number(4096, &o.clients);
    } else if (flag == "--close-clients") {
      number(4096, &o.close_clients);
    } else if (flag == "--requests") {
      number(uint64_t{1} << 40, &o.requests);
    } else if (flag == "--swaps") {
      number(1'000'000, &o.swaps);
    } else if (flag == "--swap-interval-ms") {
      number(600'000, &o.swap_interval_ms);
    } else if (flag == "--post-percent") {
      number(100, &o.post_percent);
    } else if (flag == "--max-seconds") {
      number(86400, &o.max_seconds);
    } else if (flag == "--timeout-ms") {
      number(600'000, &n);
      o.timeout_ms = static_cast<int>(n);
    } else if (flag == "--listeners") {
      o.listeners = value;
    } else {
      Usage("unknown flag");
    }
  }
  if (!have_proxy) Usage("--proxy is required");
  if (!have_admin && o.swaps > 0) Usage("--admin is required unless --swaps 0");
  if (o.clients == 0 || o.close_clients > o.clients)
    Usage("need 0 <= --close-clients <= --clients");
  if (o.timeout_ms <= 0) Usage("bad --timeout-ms");
  if (o.max_seconds == 0) Usage("bad --max-seconds");
  return o;
}

// (sequence << 1) | live: sequence is odd while a swap is in flight; live indexes g_groups.
std::atomic<uint64_t> g_state{0};
std::string g_groups[2];  // written before the clients start, read-only after
std::atomic<bool> g_stop{false};
std::atomic<uint64_t> g_requests_done{0};
std::atomic<uint64_t> g_swaps_done{0};
std::atomic<bool> g_swapper_failed{false};

uint64_t Seq(uint64_t state) { return state >> 1; }
int Live(uint64_t state) { return static_cast<int>(state & 1); }
uint64_t MakeState(uint64_t seq, int live) { return (seq << 1) | static_cast<uint64_t>(live); }

// Prints at most a few examples of each problem, to stderr.
std::mutex g_log_mu;
int g_log_budget = 20;  // GUARDED_BY(g_log_mu)
template <typename... Args>
void LogProblem(const char* fmt, Args... args) {
  std::lock_guard<std::mutex> lock(g_log_mu);
  if (g_log_budget <= 0) return;
  --g_log_budget;
  std::fprintf(stderr, fmt, args...);
  if (g_log_budget == 0) std::fprintf(stderr, "(further problems not shown)\n");
}

// The group name a test_backend body starts with ("blue\n", "blue 16\n").
std::string_view GroupOf(std::string_view body) {
  return body.substr(0, body.find_first_of(" \n"));
}

// One request on a new connection (Connection: close). Returns the status, or -1 on a socket
// error; *body gets the response body.
int RequestOnce(const bench::Address& to, const std::string& request, int timeout_ms,
                std::string* body) {
  const int fd = bench::Connect(to, timeout_ms);
  if (fd < 0) return -1;
  bench::ResponseReader reader;
  bench::Response response;
  bench::ReadResult r = bench::ReadResult::kError;
  if (bench::SendAll(fd, request)) r = reader.Read(fd, &response);
  close(fd);
  if (r != bench::ReadResult::kOk) return -1;
  *body = std::move(response.body);
  return response.status;
}

std::string SwapRequest(const Options& o) {
  std::string json = "{\"listeners\": [";
  std::string_view names = o.listeners;
  bool first = true;
  while (!names.empty()) {
    const size_t comma = names.find(',');
    if (!first) json += ", ";
    json += "\"" + std::string(names.substr(0, comma)) + "\"";
    first = false;
    if (comma == std::string_view::npos) break;
    names.remove_prefix(comma + 1);
  }
  json += "]}";
  return "POST /v1/swap HTTP/1.1\r\nHost: " + o.admin.text +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(json.size()) +
         "\r\nConnection: close\r\n\r\n" + json;
}

std::string ProbeRequest(const Options& o) {
  return "GET /swap-probe HTTP/1.1\r\nHost: " + o.proxy.text + "\r\nConnection: close\r\n\r\n";
}

// Which group answers the production listener now; retries until `deadline`. Empty on failure.
std::string Probe(const Options& o, Clock::time_point deadline) {
  const std::string request = ProbeRequest(o);
  std::string body;
  for (;;) {
    const int status = RequestOnce(o.proxy, request, o.timeout_ms, &body);
    if (status == 200 && !GroupOf(body).empty()) return std::string(GroupOf(body));
    if (Clock::now() >= deadline) {
      std::fprintf(stderr, "probe of %s failed (status %d)\n", o.proxy.text.c_str(), status);
      return "";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

double Percentile(std::vector<uint32_t>* v, double p) {
  if (v->empty()) return 0;
  const size_t k = std::min(v->size() - 1, static_cast<size_t>(p * static_cast<double>(v->size())));
  std::nth_element(v->begin(), v->begin() + static_cast<ptrdiff_t>(k), v->end());
  return (*v)[k] / 1000.0;  // microseconds -> milliseconds
}

struct ClientStats {
  uint64_t requests = 0;  // completed with a 2xx and a well-formed body
  uint64_t failed = 0;
  uint64_t connect_errors = 0;
  uint64_t send_errors = 0;
  uint64_t closed = 0;  // connection closed or reset before the whole response
  uint64_t timeouts = 0;
  uint64_t malformed = 0;
  uint64_t bad_status = 0;
  uint64_t bad_body = 0;
  uint64_t wrong_group = 0;
  uint64_t checked = 0;
  uint64_t per_group[2] = {0, 0};
  std::vector<uint32_t> latency_us;
};

void RunClient(const Options& o, int index, bool close_each, ClientStats* stats) {
  std::minstd_rand rng(static_cast<uint32_t>(index) * 7919 + 1);
  const std::string host = "Host: " + o.proxy.text + "\r\n";
  const std::string connection = close_each ? "Connection: close\r\n" : "";
  const std::string get = "GET /swap-test?client=" + std::to_string(index) + " HTTP/1.1\r\n" +
                          host + connection + "\r\n";
  const std::string_view post_body = "0123456789abcdef";
  const std::string post =
      "POST /swap-test?client=" + std::to_string(index) + " HTTP/1.1\r\n" + host + connection +
      "Content-Type: text/plain\r\nContent-Length: " + std::to_string(post_body.size()) +
      "\r\n\r\n" + std::string(post_body);
  const std::string post_suffix = " " + std::to_string(post_body.size()) + "\n";
  stats->latency_us.reserve(o.requests / o.clients + 1024);

  int fd = -1;
  bench::ResponseReader reader;
  bench::Response response;
  auto drop = [&] {
    if (fd >= 0) close(fd);
    fd = -1;
    reader.Reset();
  };
  while (!g_stop.load(std::memory_order_relaxed)) {
    const bool is_post = rng() % 100 < o.post_percent;
    if (fd < 0) {
      fd = bench::Connect(o.proxy, o.timeout_ms);
      if (fd < 0) {
        ++stats->failed, ++stats->connect_errors;
        LogProblem("client %d: connect: %s\n", index, std::strerror(errno));
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
    }
    const uint64_t before = g_state.load(std::memory_order_acquire);
    const auto t0 = Clock::now();
    if (!bench::SendAll(fd, is_post ? post : get)) {
      ++stats->failed, ++stats->send_errors;
      LogProblem("client %d: send: %s\n", index, std::strerror(errno));
      drop();
      continue;
    }
    const bench::ReadResult r = reader.Read(fd, &response);
    const uint64_t after = g_state.load(std::memory_order_acquire);
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0);
    if (r != bench::ReadResult::kOk) {
      ++stats->failed;
      if (r == bench::ReadResult::kTimeout) {
        ++stats->timeouts;
      } else if (r == bench::ReadResult::kMalformed) {
        ++stats->malformed;
      } else {
        ++stats->closed;
      }
      LogProblem("client %d: %s %s\n", index, is_post ? "POST" : "GET", bench::ReadResultName(r));
      drop();
      continue;
    }
    g_requests_done.fetch_add(1, std::memory_order_relaxed);
    stats->latency_us.push_back(static_cast<uint32_t>(std::min<int64_t>(us.count(), UINT32_MAX)));
    if (close_each || response.close) drop();
    if (response.status / 100 != 2) {
      ++stats->failed, ++stats->bad_status;
      LogProblem("client %d: status %d body %.80s\n", index, response.status,
                 response.body.c_str());
      continue;
    }
    const std::string_view group = GroupOf(response.body);
    const std::string expected_body =
        std::string(group) + (is_post ? post_suffix : std::string("\n"));
    int index_of_group = -1;
    for (int g = 0; g < 2; ++g) {
      if (!g_groups[g].empty() && group == g_groups[g]) index_of_group = g;
    }
    if (response.body != expected_body || (index_of_group < 0 && !g_groups[1].empty())) {
      ++stats->failed, ++stats->bad_body;
      LogProblem("client %d: unexpected body %.80s\n", index, response.body.c_str());
      continue;
    }
    ++stats->requests;
    if (index_of_group >= 0) ++stats->per_group[index_of_group];
    if (before == after && Seq(before) % 2 == 0) {
      ++stats->checked;
      if (index_of_group != Live(before)) {
        ++stats->wrong_group;
        LogProblem("client %d: wrong group: %.*s answered after swap #%llu made %s live\n", index,
                   static_cast<int>(group.size()), group.data(),
                   static_cast<unsigned long long>(Seq(before) / 2),
                   g_groups[Live(before)].c_str());
      }
    }
  }
  drop();
}

struct SwapStats {
  uint64_t swaps = 0;
  uint64_t refused = 0;  // answered, but not 200
  uint64_t errors = 0;   // no answer (socket error, timeout)
  std::vector<uint32_t> latency_us;
};

// Sends one swap and waits for its answer; returns the status, -1 on a socket error.
int Swap(const Options& o, const std::string& request, std::string* body) {
  return RequestOnce(o.admin, request, o.timeout_ms, body);
}

void RunSwapper(const Options& o, uint64_t seq, int live, SwapStats* stats) {
  const std::string request = SwapRequest(o);
  std::string body;
  int consecutive_failures = 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    const auto pause_until = Clock::now() + std::chrono::milliseconds(o.swap_interval_ms);
    while (Clock::now() < pause_until && !g_stop.load(std::memory_order_relaxed)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (g_stop.load(std::memory_order_relaxed)) break;
    g_state.store(MakeState(++seq, live), std::memory_order_release);  // odd: in flight
    const auto t0 = Clock::now();
    const int status = Swap(o, request, &body);
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0);
    if (status == 200) {
      live ^= 1;
      ++stats->swaps;
      g_swaps_done.fetch_add(1, std::memory_order_relaxed);
      stats->latency_us.push_back(static_cast<uint32_t>(std::min<int64_t>(us.count(), UINT32_MAX)));
      consecutive_failures = 0;
    } else {
      // The outcome is uncertain: learn which group is live now, while the sequence is still odd.
      if (status < 0) {
        ++stats->errors;
      } else {
        ++stats->refused;
      }
      LogProblem("swap: status %d body %.200s\n", status, body.c_str());
      const std::string now_live = Probe(o, Clock::now() + std::chrono::seconds(10));
      if (now_live == g_groups[0] || now_live == g_groups[1]) live = now_live == g_groups[1];
      if (++consecutive_failures >= 10 || now_live.empty()) {
        g_swapper_failed.store(true);
        g_state.store(MakeState(++seq, live), std::memory_order_release);
        break;
      }
    }
    g_state.store(MakeState(++seq, live), std::memory_order_release);  // even: settled
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseOptions(argc, argv);
  const auto start = Clock::now();
  const auto setup_deadline = start + std::chrono::seconds(30);

  // Which group serves production now; with swaps, do the first one before the load starts (it
  // retries while the proxy refuses, e.g. until health checks pass) and learn the other group.
  g_groups[0] = Probe(o, setup_deadline);
  if (g_groups[0].empty()) return 1;
  uint64_t seq = 0;
  int live = 0;
  SwapStats swap_stats;
  if (o.swaps > 0) {
    const std::string request = SwapRequest(o);
    std::string body;
    int status;
    while ((status = Swap(o, request, &body)) != 200) {
      if (Clock::now() >= setup_deadline) {
        std::fprintf(stderr, "first swap failed: status %d body %.200s\n", status, body.c_str());
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    g_groups[1] = Probe(o, setup_deadline);
    if (g_groups[1].empty() || g_groups[1] == g_groups[0]) {
      std::fprintf(stderr, "swap acknowledged, but production still answers from %s\n",
                   g_groups[0].c_str());
      return 1;
    }
    ++swap_stats.swaps;
    g_swaps_done.store(1);
    seq = 2;
    live = 1;
  }
  g_state.store(MakeState(seq, live));
  std::fprintf(stderr, "production serves %s; %s\n", g_groups[live].c_str(),
               o.swaps > 0 ? ("swapping with " + g_groups[live ^ 1]).c_str() : "no swaps");

  const auto load_start = Clock::now();
  std::vector<ClientStats> stats(o.clients);
  std::vector<std::thread> threads;
  for (uint64_t i = 0; i < o.clients; ++i) {
    threads.emplace_back(RunClient, std::cref(o), static_cast<int>(i), i < o.close_clients,
                         &stats[i]);
  }
  std::thread swapper;
  if (o.swaps > 0) swapper = std::thread(RunSwapper, std::cref(o), seq, live, &swap_stats);

  bool complete = false;
  auto next_report = load_start + std::chrono::seconds(5);
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const auto now = Clock::now();
    if (g_requests_done.load() >= o.requests && g_swaps_done.load() >= o.swaps) {
      complete = true;
      break;
    }
    if (g_swapper_failed.load() || now - load_start >= std::chrono::seconds(o.max_seconds)) break;
    if (now >= next_report) {
      std::fprintf(stderr, "... %llu requests, %llu swaps\n",
                   static_cast<unsigned long long>(g_requests_done.load()),
                   static_cast<unsigned long long>(g_swaps_done.load()));
      next_report += std::chrono::seconds(5);
    }
  }
  g_stop.store(true);
  for (auto& t : threads) t.join();
  if (swapper.joinable()) swapper.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - load_start).count();

  ClientStats total;
  for (ClientStats& s : stats) {
    total.requests += s.requests;
    total.failed += s.failed;
    total.connect_errors += s.connect_errors;
    total.send_errors += s.send_errors;
    total.closed += s.closed;
    total.timeouts += s.timeouts;
    total.malformed += s.malformed;
    total.bad_status += s.bad_status;
    total.bad_body += s.bad_body;
    total.wrong_group += s.wrong_group;
    total.checked += s.checked;
    total.per_group[0] += s.per_group[0];
    total.per_group[1] += s.per_group[1];
    total.latency_us.insert(total.latency_us.end(), s.latency_us.begin(), s.latency_us.end());
  }
  const uint64_t answered = total.requests + total.bad_status + total.bad_body;
  std::printf("requests      %llu (%s %llu, %s %llu)\n",
              static_cast<unsigned long long>(total.requests), g_groups[0].c_str(),
              static_cast<unsigned long long>(total.per_group[0]),
              g_groups[1].empty() ? "-" : g_groups[1].c_str(),
              static_cast<unsigned long long>(total.per_group[1]));
  std::printf("swaps         %llu (refused %llu, errors %llu)\n",
              static_cast<unsigned long long>(swap_stats.swaps),
              static_cast<unsigned long long>(swap_stats.refused),
              static_cast<unsigned long long>(swap_stats.errors));
  std::printf(
      "failed        %llu (connect %llu, send %llu, closed %llu, timeout %llu, "
      "malformed %llu, non-2xx %llu, bad body %llu)\n",
      static_cast<unsigned long long>(total.failed),
      static_cast<unsigned long long>(total.connect_errors),
      static_cast<unsigned long long>(total.send_errors),
      static_cast<unsigned long long>(total.closed),
      static_cast<unsigned long long>(total.timeouts),
      static_cast<unsigned long long>(total.malformed),
      static_cast<unsigned long long>(total.bad_status),
      static_cast<unsigned long long>(total.bad_body));
  std::printf("wrong_group   %llu (of %llu checked; %llu overlapped a swap and were not checked)\n",
              static_cast<unsigned long long>(total.wrong_group),
              static_cast<unsigned long long>(total.checked),
              static_cast<unsigned long long>(total.requests - total.checked));
  std::printf("req/s         %.0f over %.2fs (%llu clients, %llu with Connection: close)\n",
              static_cast<double>(answered) / seconds, seconds,
              static_cast<unsigned long long>(o.clients),
              static_cast<unsigned long long>(o.close_clients));
  std::printf("latency ms    p50 %.3f  p99 %.3f  max %.3f\n", Percentile(&total.latency_us, 0.5),
              Percentile(&total.latency_us, 0.99), Percentile(&total.latency_us, 1.0));
  if (o.swaps > 0) {
    std::printf("swap ms       p50 %.3f  p99 %.3f  max %.3f\n",
                Percentile(&swap_stats.latency_us, 0.5), Percentile(&swap_stats.latency_us, 0.99),
                Percentile(&swap_stats.latency_us, 1.0));
  }
  const bool ok = complete && total.failed == 0 && total.wrong_group == 0 &&
                  swap_stats.refused == 0 && swap_stats.errors == 0;
  if (!complete) {
    std::printf("INCOMPLETE: stopped before %llu requests and %llu swaps\n",
                static_cast<unsigned long long>(o.requests),
                static_cast<unsigned long long>(o.swaps));
  }
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
