// test_backend: a small, fast HTTP/1.1 origin server on loopback, the real backend behind the proxy
// in integration tests and benchmarks.
//
//   test_backend --listen 127.0.0.1:0 --name blue [--threads 1] [--idle-close-ms N]
//                [--health-status 200]
//
// Prints exactly one line "listening HOST:PORT" on stdout once its sockets accept, then serves
// until SIGTERM or SIGINT (exit status 0). Each of the --threads threads runs one epoll loop
// (edge-triggered, non-blocking) on its own SO_REUSEPORT listening socket; a connection lives on
// one loop for its whole life. The simple GET is answered from a prebuilt response without
// allocating.
//
// HTTP/1.1: keep-alive, pipelining (answers in order), Content-Length and chunked request bodies,
// "Expect: 100-continue". HTTP/1.0 requests get an HTTP/1.1 answer with Content-Length and keep
// the connection only with "Connection: keep-alive". Bad requests get 400 (431 for a head over
// 64 KiB) and the connection closes. Connections close gracefully: the write side is shut down
// and the input drained (up to 2s), so a pipelined request never turns the close into a reset.
//
// Endpoints (the query string is ignored; every response carries "X-Backend: <name>"; the special
// paths answer any method, after reading the request body):
//   GET any other path      200 text/plain "<name>\n"   (HEAD: same head, no body)
//   other methods, any other path
//                           reads the whole body, 200 "<name> <body length>\n"
//   /echo, /echo/...        200, body: the request line, each header line as received, an empty
//                           line, then the (de-chunked) request body. Lines of the dump end in "\n"
//                           (the CR of each CRLF is dropped).
//   /status/NNN             status NNN (200..599), body "<name>\n"; no body for 204 and 304
//   /delay/MS               "<name>\n" after MS milliseconds (a timer of the loop)
//   /health                 status from --health-status (default 200), body "<name>\n"
//   /control/health/NNN     sets the /health status to NNN (200..599) for every thread; 200 "ok"
//   /control/stats          200 application/json {"requests": N, "connections_accepted": M,
//                           "health_checks": H, "connections_total": T, "posts": P}
//                           N counts every request except /health and /control/* (counted when
//                           its head has arrived); M counts the connections that carried at least
//                           one such request, so health checks and stats calls leave N and M
//                           alone; H counts /health requests; T every accepted connection; P the
//                           POST requests among N
//   /control/fault/MODE     200 "ok"; from now on every thread answers each ordinary request
//                           (any request but /health and /control/*; counted in N as usual), once
//                           its head and body have arrived, according to MODE:
//                             none         as described here (the default)
//                             hang         never answers; the connection stays open
//                             reset        closes with RST (SO_LINGER 0) without answering
//                             slow-MS      answers as usual, MS milliseconds (0..3600000) late
//                             close-early  answers as usual, keep-alive and without
//                                          "Connection: close", then closes the connection
//                                          gracefully right after the answer
//                           Requests already answered or waiting are not affected; /health and
//                           /control/* keep working in every mode.
//   /chunked/N              chunked response, N chunks of "<name>\n" (HTTP/1.0: Content-Length)
//   /big/BYTES              Content-Length response of BYTES bytes; byte i is 'a' + i % 26
//   /close                  200 "<name>\n" with "Connection: close", then closes
//   /reset                  closes with RST (SO_LINGER 0) without answering
//   /hang                   never answers; the connection stays open until the client closes it
//   /ws + "Upgrade: websocket"
//                           101 Switching Protocols (Sec-WebSocket-Accept computed from the key),
//                           then echoes every byte it receives, raw, until the client closes
//
// --idle-close-ms N closes a keep-alive connection that stayed idle (no request in progress,
// nothing to send) for N ms, to reproduce the race of a proxy reusing a connection the upstream is
// closing.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

constexpr size_t kReadChunk = 16 * 1024;
constexpr size_t kMaxHeadBytes = 64 * 1024;         // larger heads get 431
constexpr size_t kMaxBufferedInput = 1024 * 1024;   // stop reading while this much is unprocessed
constexpr size_t kMaxPendingOutput = 256 * 1024;    // stop answering while this much is unsent
constexpr size_t kMaxEchoBody = 256 * 1024 * 1024;  // /echo keeps the body in memory
constexpr int64_t kLingerMs = 2000;                 // graceful close: bound on draining input
constexpr size_t kMaxChunkLine = 4096;              // chunk extension or trailer line

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "test_backend: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

// ---------------------------------------------------------------------------------------------
// SHA-1 (FIPS 180-4) and base64, only for Sec-WebSocket-Accept.

std::array<uint8_t, 20> Sha1(std::string_view data) {
  uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  auto rol = [](uint32_t x, int n) { return (x << n) | (x >> (32 - n)); };
  std::string msg(data);
  const uint64_t bit_len = static_cast<uint64_t>(data.size()) * 8;
  msg.push_back(static_cast<char>(0x80));
  while (msg.size() % 64 != 56) msg.push_back('\0');
  for (int i = 7; i >= 0; --i) msg.push_back(static_cast<char>((bit_len >> (i * 8)) & 0xff));
  for (size_t off = 0; off < msg.size(); off += 64) {
    uint32_t w[80];
    for (int i = 0; i < 16; ++i) {
      const auto* p = reinterpret_cast<const uint8_t*>(msg.data() + off + i * 4);
      w[i] = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    }
    for (int i = 16; i < 80; ++i) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; ++i) {
      uint32_t f, k;
      if (i < 20) {
        f = (b & c) | (~b & d), k = 0x5A827999;
      } else if (i < 40) {
        f = b ^ c ^ d, k = 0x6ED9EBA1;
      } else if (i < 60) {
        f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
      } else {
        f = b ^ c ^ d, k = 0xCA62C1D6;
      }
      const uint32_t t = rol(a, 5) + f + e + k + w[i];
      e = d, d = c, c = rol(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
  }
  std::array<uint8_t, 20> out;
  for (int i = 0; i < 20; ++i) out[i] = static_cast<uint8_t>(h[i / 4] >> (24 - 8 * (i % 4)));
  return out;
}

std::string Base64(const uint8_t* p, size_t n) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t v = (uint32_t{p[i]} << 16) | (i + 1 < n ? uint32_t{p[i + 1]} << 8 : 0) |
                       (i + 2 < n ? uint32_t{p[i + 2]} : 0);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < n ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back(i + 2 < n ? kAlphabet[v & 63] : '=');
  }
  return out;
}

std::string WebSocketAccept(std::string_view key) {
  std::string s(key);
  s += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  const auto digest = Sha1(s);
  return Base64(digest.data(), digest.size());
}

// ---------------------------------------------------------------------------------------------
// Small text helpers.

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Calls fn(token) for each comma-separated, trimmed, non-empty token of a header value.
template <typename Fn>
void ForEachToken(std::string_view value, Fn fn) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    const std::string_view token = Trim(value.substr(0, comma));
    if (!token.empty()) fn(token);
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
}

// Strict decimal: digits only, no sign, no overflow past `max`.
bool ParseDecimal(std::string_view s, uint64_t max, uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return false;
    v = v * 10 + static_cast<uint64_t>(ch - '0');
  }
  if (v > max) return false;
  *out = v;
  return true;
}

int HexValue(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

std::string_view ReasonPhrase(int status) {
  static constexpr std::pair<int, std::string_view> kPhrases[] = {
      {100, "Continue"},
      {101, "Switching Protocols"},
      {200, "OK"},
      {201, "Created"},
      {202, "Accepted"},
      {204, "No Content"},
      {206, "Partial Content"},
      {301, "Moved Permanently"},
      {302, "Found"},
      {303, "See Other"},
      {304, "Not Modified"},
      {307, "Temporary Redirect"},
      {308, "Permanent Redirect"},
      {400, "Bad Request"},
      {401, "Unauthorized"},
      {403, "Forbidden"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {408, "Request Timeout"},
      {409, "Conflict"},
      {413, "Content Too Large"},
      {429, "Too Many Requests"},
      {431, "Request Header Fields Too Large"},
      {500, "Internal Server Error"},
      {501, "Not Implemented"},
      {502, "Bad Gateway"},
      {503, "Service Unavailable"},
      {504, "Gateway Timeout"},
  };
  for (const auto& [code, phrase] : kPhrases) {
    if (code == status) return phrase;
  }
  return "Status";
}

// A growable byte queue: bytes are appended at the end and consumed from the front. Memory is kept
// across requests and connections, so steady-state traffic does not allocate.
class Buffer {
 public:
  const char* data() const { return buf_.get() + begin_; }
  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }
  std::string_view view() const { return {data(), size()}; }

  void Consume(size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  void Clear() { begin_ = end_ = 0; }

  // At least n writable bytes at the end; Commit(k) makes k of them part of the buffer.
  char* Reserve(size_t n) {
    if (cap_ - end_ >= n) return buf_.get() + end_;
    const size_t used = size();
    if (used + n <= cap_ && begin_ >= cap_ / 2) {
      std::memmove(buf_.get(), data(), used);
    } else {
      const size_t cap = std::max({cap_ * 2, used + n, size_t{4096}});
      std::unique_ptr<char[]> fresh(new char[cap]);
      if (used > 0) std::memcpy(fresh.get(), data(), used);
      buf_ = std::move(fresh);
      cap_ = cap;
    }
    begin_ = 0;
    end_ = used;
    return buf_.get() + end_;
  }
  size_t Writable() const { return cap_ - end_; }
  void Commit(size_t n) { end_ += n; }

  void Append(std::string_view s) {
    if (s.empty()) return;
    std::memcpy(Reserve(s.size()), s.data(), s.size());
    end_ += s.size();
  }
  void AppendNumber(uint64_t v) {
    char* p = Reserve(20);
    end_ = static_cast<size_t>(std::to_chars(p, p + 20, v).ptr - buf_.get());
  }
  void AppendHex(uint64_t v) {
    char* p = Reserve(16);
    end_ = static_cast<size_t>(std::to_chars(p, p + 16, v, 16).ptr - buf_.get());
  }

  // Frees the memory of a buffer that grew large (a /big or /echo connection) once it is empty.
  void ShrinkIfLarge() {
    if (empty() && cap_ > 256 * 1024) {
      buf_.reset();
      cap_ = begin_ = end_ = 0;
    }
  }

 private:
  std::unique_ptr<char[]> buf_;
  size_t cap_ = 0;
  size_t begin_ = 0;
  size_t end_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Requests.

enum class Route : uint8_t {
  kDefault,
  kEcho,
  kStatus,
  kDelay,
  kHealth,
  kControlHealth,
  kControlStats,
  kControlFault,
  kChunked,
  kBig,
  kClose,
  kReset,
  kHang,
  kWebSocket,
};

enum class BodyKind : uint8_t { kNone, kLength, kChunked };

// How ordinary requests are answered (/control/fault/MODE).
enum class Fault : uint8_t { kNone, kHang, kReset, kSlow, kCloseEarly };

// "none", "hang", "reset", "slow-MS", "close-early"; *ms gets MS for slow.
bool ParseFault(std::string_view mode, Fault* fault, uint64_t* ms) {
  *ms = 0;
  if (mode == "none") {
    *fault = Fault::kNone;
  } else if (mode == "hang") {
    *fault = Fault::kHang;
  } else if (mode == "reset") {
    *fault = Fault::kReset;
  } else if (mode == "close-early") {
    *fault = Fault::kCloseEarly;
  } else if (mode.starts_with("slow-")) {
    if (!ParseDecimal(mode.substr(5), 3600 * 1000, ms)) return false;
    *fault = Fault::kSlow;
  } else {
    return false;
  }
  return true;
}

enum class ChunkState : uint8_t {
  kSize,
  kExt,
  kSizeLf,
  kData,
  kDataCr,
  kDataLf,
  kTrailerStart,
  kTrailer,
  kFinalLf,
};

struct Request {
  Route route = Route::kDefault;
  uint64_t arg = 0;            // NNN, MS, N or BYTES of the route
  Fault fault = Fault::kNone;  // the MODE of /control/fault/MODE
  bool get = false;            // GET or HEAD
  bool head = false;
  bool post = false;
  bool http10 = false;
  bool keep_alive = true;
  bool expect_continue = false;
  bool upgrade_websocket = false;
  BodyKind body = BodyKind::kNone;
  uint64_t remaining = 0;  // Content-Length bytes, or bytes of the current chunk
  uint64_t body_length = 0;
  ChunkState chunk_state = ChunkState::kSize;
  uint32_t chunk_digits = 0;
  uint32_t line_bytes = 0;
  uint8_t ws_key_len = 0;
  char ws_key[64];
};

// Maps a path (query removed) to its route; false for a malformed number.
bool ResolveRoute(std::string_view path, Request* req) {
  auto number = [&](std::string_view prefix, uint64_t max, Route route) {
    if (!ParseDecimal(path.substr(prefix.size()), max, &req->arg)) return false;
    req->route = route;
    return true;
  };
  req->route = Route::kDefault;
  if (path == "/echo" || path.starts_with("/echo/")) {
    req->route = Route::kEcho;
  } else if (path.starts_with("/status/")) {
    return number("/status/", 599, Route::kStatus) && req->arg >= 200;
  } else if (path.starts_with("/delay/")) {
    return number("/delay/", 3600 * 1000, Route::kDelay);
  } else if (path == "/health") {
    req->route = Route::kHealth;
  } else if (path.starts_with("/control/health/")) {
    return number("/control/health/", 599, Route::kControlHealth) && req->arg >= 200;
  } else if (path == "/control/stats") {
    req->route = Route::kControlStats;
  } else if (path.starts_with("/control/fault/")) {
    if (!ParseFault(path.substr(std::string_view("/control/fault/").size()), &req->fault,
                    &req->arg)) {
      return false;
    }
    req->route = Route::kControlFault;
  } else if (path.starts_with("/chunked/")) {
    return number("/chunked/", 10'000'000, Route::kChunked);
  } else if (path.starts_with("/big/")) {
    return number("/big/", uint64_t{1} << 40, Route::kBig);
  } else if (path == "/close") {
    req->route = Route::kClose;
  } else if (path == "/reset") {
    req->route = Route::kReset;
  } else if (path == "/hang") {
    req->route = Route::kHang;
  } else if (path == "/ws") {
    req->route = Route::kWebSocket;
  }
  return true;
}

enum class ParseStatus { kIncomplete, kComplete, kError };

// Parses the request head at the start of `data` into *req. For /echo, appends the dump of the
// head to *echo. On kComplete, *head_len is the size of the head including the empty line.
ParseStatus ParseHead(std::string_view data, Request* req, std::string* echo, size_t* head_len) {
  const size_t end = data.find("\r\n\r\n");
  if (end == std::string_view::npos) return ParseStatus::kIncomplete;
  *head_len = end + 4;
  std::string_view head = data.substr(0, end + 2);  // every line ends in CRLF

  *req = Request{};
  size_t eol = head.find("\r\n");
  const std::string_view line = head.substr(0, eol);
  head.remove_prefix(eol + 2);

  const size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos || sp1 == 0) return ParseStatus::kError;
  const size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return ParseStatus::kError;
  const std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (version == "HTTP/1.1") {
    req->http10 = false;
  } else if (version == "HTTP/1.0") {
    req->http10 = true;
    req->keep_alive = false;
  } else {
    return ParseStatus::kError;
  }
  req->head = method == "HEAD";
  req->get = req->head || method == "GET";
  req->post = method == "POST";

  if (target.starts_with("http://") || target.starts_with("https://")) {
    const size_t authority = target.find("//") + 2;
    const size_t slash = target.find('/', authority);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  std::string_view path = target.substr(0, target.find('?'));
  if (!ResolveRoute(path, req)) return ParseStatus::kError;
  const bool dump = req->route == Route::kEcho;
  if (dump) {
    echo->append(line);
    echo->push_back('\n');
  }

  bool have_length = false;
  bool chunked = false;
  bool connection_upgrade = false;
  std::string_view ws_key;
  while (!head.empty()) {
    eol = head.find("\r\n");
    const std::string_view field = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    if (field.empty() || field[0] == ' ' || field[0] == '\t') return ParseStatus::kError;
    const size_t colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0) return ParseStatus::kError;
    const std::string_view name = field.substr(0, colon);
    if (name.find_first_of(" \t") != std::string_view::npos) return ParseStatus::kError;
    const std::string_view value = Trim(field.substr(colon + 1));
    if (dump) {
      echo->append(field);
      echo->push_back('\n');
    }
    switch (name.size()) {
      case 14:
        if (EqualsIgnoreCase(name, "content-length")) {
          uint64_t n;
          if (!ParseDecimal(value, uint64_t{1} << 50, &n)) return ParseStatus::kError;
          if (have_length && n != req->remaining) return ParseStatus::kError;
          have_length = true;
          req->remaining = n;
        }
        break;
      case 17:
        if (EqualsIgnoreCase(name, "transfer-encoding")) {
          std::string_view last;
          ForEachToken(value, [&](std::string_view t) { last = t; });
          if (!EqualsIgnoreCase(last, "chunked") || req->http10) return ParseStatus::kError;
          chunked = true;
        } else if (EqualsIgnoreCase(name, "sec-websocket-key")) {
          ws_key = value;
        }
        break;
      case 10:
        if (EqualsIgnoreCase(name, "connection")) {
          ForEachToken(value, [&](std::string_view t) {
            if (EqualsIgnoreCase(t, "close")) req->keep_alive = false;
            if (EqualsIgnoreCase(t, "keep-alive") && req->http10) req->keep_alive = true;
            if (EqualsIgnoreCase(t, "upgrade")) connection_upgrade = true;
          });
        }
        break;
      case 7:
        if (EqualsIgnoreCase(name, "upgrade")) {
          ForEachToken(value, [&](std::string_view t) {
            if (EqualsIgnoreCase(t, "websocket")) req->upgrade_websocket = true;
          });
        }
        break;
      case 6:
        if (EqualsIgnoreCase(name, "expect") && EqualsIgnoreCase(value, "100-continue")) {
          req->expect_continue = !req->http10;
        }
        break;
      default:
        break;
    }
  }
  if (have_length && chunked) return ParseStatus::kError;
  if (chunked) {
    req->body = BodyKind::kChunked;
    req->remaining = 0;
  } else if (have_length && req->remaining > 0) {
    req->body = BodyKind::kLength;
  }
  if (req->route == Route::kWebSocket && req->upgrade_websocket) {
    (void)connection_upgrade;  // not required: some clients send only "Upgrade"
    if (ws_key.size() > sizeof(req->ws_key)) return ParseStatus::kError;
    std::memcpy(req->ws_key, ws_key.data(), ws_key.size());
    req->ws_key_len = static_cast<uint8_t>(ws_key.size());
  }
  if (dump) echo->push_back('\n');
  return ParseStatus::kComplete;
}

// ---------------------------------------------------------------------------------------------
// The server: shared, read-only configuration plus the few values every loop may touch.

class Loop;

struct Server {
  std::string name;
  int64_t idle_close_ms = 0;
  std::atomic<int> health_status{200};
  std::atomic<uint64_t> fault{0};  // Fault in the low 8 bits, slow-MS's MS above them
  std::vector<Loop*> loops;        // written before the loops start

  std::string backend_header;  // "X-Backend: <name>\r\n"
  std::string ok_keep_alive;   // full answers to a simple GET
  std::string ok_close;
  std::string ok_keep_alive_10;
};

enum class Phase : uint8_t {
  kHead,    // waiting for (more of) a request head
  kBody,    // reading the request body
  kDelay,   // /delay: the answer is due at a timer
  kHang,    // /hang: never answers
  kTunnel,  // after 101: echo bytes back
  kLinger,  // answered with close: flush, shut down the write side, drain input, close
};

struct Conn {
  int fd = -1;
  uint64_t gen = 0;  // increments when the connection closes; timers carry it
  Phase phase = Phase::kHead;
  bool peer_closed = false;
  bool read_blocked = false;  // stopped reading at kMaxBufferedInput
  bool write_shut = false;
  bool idle_timer_pending = false;
  bool counted = false;        // carried a request counted in requests_, and counted in accepted_
  bool fault_delayed = false;  // in kDelay because of slow-MS: the timer answers the request
  int64_t last_active = 0;
  uint64_t big_remaining = 0;
  uint64_t big_sent = 0;
  Request req;
  Buffer in;
  Buffer out;
  std::string echo;
};

enum class TimerKind : uint8_t { kDelay, kIdle, kLinger };

struct Timer {
  int64_t when;
  Conn* conn;
  uint64_t gen;
  TimerKind kind;
  bool operator>(const Timer& o) const { return when > o.when; }
};

// Bytes of /big bodies: byte i is 'a' + i % 26; a send starts at offset (sent % 26).
constexpr size_t kFillerSend = 26 * 2520;
char g_filler[kFillerSend + 26];

// One event loop on one thread. Stop() may be called from any thread; stats are read from any
// thread through the relaxed atomics (each written by the owning loop only).
class Loop {
 public:
  Loop(Server* server, int listen_fd) : server_(server), listen_fd_(listen_fd) {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) Die("epoll_create1");
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) Die("eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &listen_tag_;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) != 0) Die("epoll_ctl listen");
    ev.data.ptr = &wake_tag_;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) Die("epoll_ctl eventfd");
  }

  void Run() {
    epoll_event events[256];
    while (!stop_.load(std::memory_order_relaxed)) {
      int timeout = -1;
      if (!timers_.empty()) {
        timeout = static_cast<int>(std::clamp<int64_t>(timers_.front().when - NowMs(), 0, 60000));
      }
      const int n = epoll_wait(epoll_fd_, events, 256, timeout);
      if (n < 0 && errno != EINTR) Die("epoll_wait");
      now_ = NowMs();
      for (int i = 0; i < n; ++i) {
        void* tag = events[i].data.ptr;
        if (tag == &listen_tag_) {
          AcceptAll();
        } else if (tag == &wake_tag_) {
          uint64_t v;
          [[maybe_unused]] ssize_t r = read(wake_fd_, &v, sizeof v);
        } else {
          Conn* c = static_cast<Conn*>(tag);
          if (c->fd >= 0) HandleEvent(c, events[i].events);
        }
      }
      RunTimers();
      // Connections closed in this batch become reusable only now, so a stale event of the same
      // batch can never reach a new connection.
      for (Conn* c : closed_) free_.push_back(c);
      closed_.clear();
    }
  }

  void Stop() {
    stop_.store(true, std::memory_order_relaxed);
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t r = write(wake_fd_, &one, sizeof one);
  }

  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }
  uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
  uint64_t health_checks() const { return health_checks_.load(std::memory_order_relaxed); }
  uint64_t connections() const { return connections_.load(std::memory_order_relaxed); }
  uint64_t posts() const { return posts_.load(std::memory_order_relaxed); }

 private:
  enum class Progress { kNeedInput, kOutputFull, kWaiting };
  enum class BodyResult { kMore, kDone, kError };

  static void Bump(std::atomic<uint64_t>& counter) {
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  void AcceptAll() {
    for (;;) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          std::fprintf(stderr, "test_backend: accept: %s\n", std::strerror(errno));
        }
        return;
      }
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      Conn* c;
      if (free_.empty()) {
        conns_.push_back(std::make_unique<Conn>());
        c = conns_.back().get();
      } else {
        c = free_.back();
        free_.pop_back();
      }
      c->fd = fd;
      c->phase = Phase::kHead;
      c->peer_closed = c->read_blocked = c->write_shut = c->idle_timer_pending = false;
      c->counted = false;
      c->fault_delayed = false;
      c->last_active = now_;
      c->big_remaining = c->big_sent = 0;
      c->in.Clear();
      c->out.Clear();
      c->echo.clear();
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.ptr = c;
      if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) Die("epoll_ctl add");
      Bump(connections_);
      ArmIdleTimer(c);
    }
  }

  void Close(Conn* c, bool reset = false) {
    if (reset) {
      const linger lin{1, 0};
      setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lin, sizeof lin);
    }
    close(c->fd);
    c->fd = -1;
    ++c->gen;
    c->in.Clear();
    c->out.Clear();
    c->in.ShrinkIfLarge();
    c->out.ShrinkIfLarge();
    if (c->echo.capacity() > 256 * 1024) std::string().swap(c->echo);
    closed_.push_back(c);
  }

  void AddTimer(int64_t when, Conn* c, TimerKind kind) {
    timers_.push_back(Timer{when, c, c->gen, kind});
    std::push_heap(timers_.begin(), timers_.end(), std::greater<>());
  }

  // The idle timer is lazy: at most one is pending per connection, and when it fires it checks
  // how long the connection has really been idle.
  void ArmIdleTimer(Conn* c) {
    if (server_->idle_close_ms <= 0 || c->idle_timer_pending) return;
    c->idle_timer_pending = true;
    AddTimer(c->last_active + server_->idle_close_ms, c, TimerKind::kIdle);
  }

  bool Idle(const Conn* c) const {
    return c->phase == Phase::kHead && c->in.empty() && c->out.empty() && c->big_remaining == 0;
  }

  void RunTimers() {
    while (!timers_.empty() && timers_.front().when <= now_) {
      std::pop_heap(timers_.begin(), timers_.end(), std::greater<>());
      const Timer t = timers_.back();
      timers_.pop_back();
      Conn* c = t.conn;
      if (c->fd < 0 || c->gen != t.gen) continue;
      switch (t.kind) {
        case TimerKind::kDelay:
          if (c->phase == Phase::kDelay) {
            if (c->fault_delayed) {
              c->fault_delayed = false;
              Respond(c);
            } else {
              Answer(c, 200, "text/plain", NameBody());
              Finish(c);
            }
            if (c->fd >= 0) Drive(c);
          }
          break;
        case TimerKind::kIdle:
          c->idle_timer_pending = false;
          if (!Idle(c)) break;
          if (now_ - c->last_active >= server_->idle_close_ms) {
            Close(c);
          } else {
            ArmIdleTimer(c);
          }
          break;
        case TimerKind::kLinger:
          if (c->phase == Phase::kLinger) Close(c);
          break;
      }
    }
  }

  void HandleEvent(Conn* c, uint32_t events) {
    if (events & EPOLLERR) {
      Close(c);
      return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) {
      if (!Read(c, (events & (EPOLLRDHUP | EPOLLHUP)) != 0)) return;
    }
    Drive(c);
  }

  // Reads what the socket has (up to kMaxBufferedInput). Returns false if the connection closed.
  bool Read(Conn* c, bool until_eof) {
    c->read_blocked = false;
    while (!c->peer_closed) {
      if (c->in.size() >= kMaxBufferedInput) {
        c->read_blocked = true;
        break;
      }
      char* p = c->in.Reserve(kReadChunk);
      const size_t room = c->in.Writable();
      const ssize_t n = recv(c->fd, p, room, 0);
      if (n > 0) {
        c->in.Commit(static_cast<size_t>(n));
        c->last_active = now_;
        // A short read drained the socket (epoll(7)); no need for a read that returns EAGAIN.
        if (static_cast<size_t>(n) < room && !until_eof) break;
      } else if (n == 0) {
        c->peer_closed = true;
      } else if (errno == EINTR) {
        continue;
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        break;
      } else {
        Close(c);
        return false;
      }
    }
    return true;
  }

  // Sends pending output. Returns false if the connection closed.
  bool Flush(Conn* c) {
    bool sent = false;
    while (!c->out.empty()) {
      const ssize_t n = send(c->fd, c->out.data(), c->out.size(), MSG_NOSIGNAL);
      if (n > 0) {
        c->out.Consume(static_cast<size_t>(n));
        sent = true;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else {
        Close(c);
        return false;
      }
    }
    while (c->out.empty() && c->big_remaining > 0) {
      const size_t len = static_cast<size_t>(std::min<uint64_t>(c->big_remaining, kFillerSend));
      const ssize_t n = send(c->fd, g_filler + c->big_sent % 26, len, MSG_NOSIGNAL);
      if (n > 0) {
        c->big_remaining -= static_cast<uint64_t>(n);
        c->big_sent += static_cast<uint64_t>(n);
        sent = true;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else {
        Close(c);
        return false;
      }
    }
    if (sent) c->last_active = now_;
    return true;
  }

  // Makes all the progress possible without waiting: answers complete requests, sends, closes.
  void Drive(Conn* c) {
    for (;;) {
      const Progress progress = Process(c);
      if (c->fd < 0 || !Flush(c)) return;
      if (!c->out.empty() || c->big_remaining > 0) return;  // EPOLLOUT brings us back
      if (c->phase == Phase::kLinger) {
        if (!c->write_shut) {
          shutdown(c->fd, SHUT_WR);
          c->write_shut = true;
          AddTimer(now_ + kLingerMs, c, TimerKind::kLinger);
        }
        c->in.Clear();
        if (c->read_blocked && !Read(c, false)) return;
        if (c->peer_closed) {
          Close(c);
        } else if (c->read_blocked) {
          continue;
        }
        return;
      }
      if (progress == Progress::kOutputFull) continue;
      if (c->read_blocked && c->in.size() < kMaxBufferedInput) {
        const size_t before = c->in.size();
        if (!Read(c, false)) return;
        if (c->in.size() != before || c->peer_closed) continue;
      }
      if (c->peer_closed && c->phase != Phase::kDelay) {
        Close(c);
        return;
      }
      if (Idle(c)) ArmIdleTimer(c);
      return;
    }
  }

  Progress Process(Conn* c) {
    for (;;) {
      if (c->out.size() >= kMaxPendingOutput || c->big_remaining > 0) return Progress::kOutputFull;
      switch (c->phase) {
        case Phase::kHead: {
          while (c->in.size() >= 2 && c->in.data()[0] == '\r' && c->in.data()[1] == '\n') {
            c->in.Consume(2);  // empty lines before a request line are ignored (RFC 9112 2.2)
          }
          if (c->in.empty()) return Progress::kNeedInput;
          size_t head_len = 0;
          c->echo.clear();
          const ParseStatus status = ParseHead(c->in.view(), &c->req, &c->echo, &head_len);
          if (status == ParseStatus::kIncomplete) {
            if (c->in.size() > kMaxHeadBytes) Fail(c, 431);
            if (c->phase == Phase::kHead) return Progress::kNeedInput;
            break;
          }
          if (status == ParseStatus::kError || head_len > kMaxHeadBytes) {
            Fail(c, status == ParseStatus::kError ? 400 : 431);
            break;
          }
          c->in.Consume(head_len);
          StartRequest(c);
          break;
        }
        case Phase::kBody: {
          const BodyResult r =
              c->req.body == BodyKind::kLength ? ConsumeLength(c) : ConsumeChunked(c);
          if (r == BodyResult::kError) {
            Fail(c, 400);
            break;
          }
          if (r == BodyResult::kMore) return Progress::kNeedInput;
          Complete(c);
          if (c->fd < 0) return Progress::kWaiting;
          break;
        }
        case Phase::kTunnel:
          c->out.Append(c->in.view());
          c->in.Clear();
          return Progress::kNeedInput;
        case Phase::kLinger:
          c->in.Clear();
          return Progress::kNeedInput;
        case Phase::kDelay:
        case Phase::kHang:
          return Progress::kWaiting;
      }
    }
  }

  void StartRequest(Conn* c) {
    Request& r = c->req;
    if (r.route == Route::kHealth) {
      Bump(health_checks_);
    } else if (r.route != Route::kControlHealth && r.route != Route::kControlStats &&
               r.route != Route::kControlFault) {
      Bump(requests_);
      if (r.post) Bump(posts_);
      if (!c->counted) {
        c->counted = true;
        Bump(accepted_);
      }
    }
    if (r.route == Route::kWebSocket && r.upgrade_websocket) {
      c->out.Append(
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
      if (r.ws_key_len > 0) {
        c->out.Append("Sec-WebSocket-Accept: ");
        c->out.Append(WebSocketAccept(std::string_view(r.ws_key, r.ws_key_len)));
        c->out.Append("\r\n");
      }
      c->out.Append(server_->backend_header);
      c->out.Append("\r\n");
      c->phase = Phase::kTunnel;
      return;
    }
    if (r.body == BodyKind::kNone) {
      Complete(c);
      return;
    }
    if (r.expect_continue) c->out.Append("HTTP/1.1 100 Continue\r\n\r\n");
    c->phase = Phase::kBody;
  }

  BodyResult ConsumeLength(Conn* c) {
    Request& r = c->req;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(r.remaining, c->in.size()));
    if (!TakeBody(c, n)) return BodyResult::kError;
    r.remaining -= n;
    return r.remaining == 0 ? BodyResult::kDone : BodyResult::kMore;
  }

  // Consumes n body bytes from the input (kept for /echo).
  bool TakeBody(Conn* c, size_t n) {
    if (c->req.route == Route::kEcho) {
      if (c->echo.size() + n > kMaxEchoBody) return false;
      c->echo.append(c->in.data(), n);
    }
    c->req.body_length += n;
    c->in.Consume(n);
    return true;
  }

  BodyResult ConsumeChunked(Conn* c) {
    Request& r = c->req;
    while (!c->in.empty()) {
      const char* p = c->in.data();
      const size_t n = c->in.size();
      switch (r.chunk_state) {
        case ChunkState::kSize: {
          size_t i = 0;
          for (; i < n; ++i) {
            const int d = HexValue(p[i]);
            if (d < 0) break;
            if (++r.chunk_digits > 15) return BodyResult::kError;
            r.remaining = r.remaining * 16 + static_cast<uint64_t>(d);
          }
          if (i == n) {
            c->in.Consume(n);
            break;
          }
          const char ch = p[i];
          c->in.Consume(i + 1);
          if (r.chunk_digits == 0) return BodyResult::kError;
          if (ch == ';' || ch == ' ' || ch == '\t') {
            r.chunk_state = ChunkState::kExt;
            r.line_bytes = 0;
          } else if (ch == '\r') {
            r.chunk_state = ChunkState::kSizeLf;
          } else {
            return BodyResult::kError;
          }
          break;
        }
        case ChunkState::kExt: {
          const void* cr = std::memchr(p, '\r', n);
          const size_t len = cr ? static_cast<size_t>(static_cast<const char*>(cr) - p) : n;
          r.line_bytes += static_cast<uint32_t>(std::min<size_t>(len, kMaxChunkLine + 1));
          if (r.line_bytes > kMaxChunkLine) return BodyResult::kError;
          c->in.Consume(cr ? len + 1 : len);
          if (cr) r.chunk_state = ChunkState::kSizeLf;
          break;
        }
        case ChunkState::kSizeLf:
          if (p[0] != '\n') return BodyResult::kError;
          c->in.Consume(1);
          r.chunk_digits = 0;
          r.chunk_state = r.remaining == 0 ? ChunkState::kTrailerStart : ChunkState::kData;
          break;
        case ChunkState::kData: {
          const size_t take = static_cast<size_t>(std::min<uint64_t>(r.remaining, n));
          if (!TakeBody(c, take)) return BodyResult::kError;
          r.remaining -= take;
          if (r.remaining == 0) r.chunk_state = ChunkState::kDataCr;
          break;
        }
        case ChunkState::kDataCr:
          if (p[0] != '\r') return BodyResult::kError;
          c->in.Consume(1);
          r.chunk_state = ChunkState::kDataLf;
          break;
        case ChunkState::kDataLf:
          if (p[0] != '\n') return BodyResult::kError;
          c->in.Consume(1);
          r.chunk_state = ChunkState::kSize;
          break;
        case ChunkState::kTrailerStart:
          if (p[0] == '\r') {
            c->in.Consume(1);
            r.chunk_state = ChunkState::kFinalLf;
          } else {
            r.chunk_state = ChunkState::kTrailer;
            r.line_bytes = 0;
          }
          break;
        case ChunkState::kTrailer: {
          const void* lf = std::memchr(p, '\n', n);
          const size_t len = lf ? static_cast<size_t>(static_cast<const char*>(lf) - p) + 1 : n;
          r.line_bytes += static_cast<uint32_t>(std::min<size_t>(len, kMaxChunkLine + 1));
          if (r.line_bytes > kMaxChunkLine) return BodyResult::kError;
          c->in.Consume(len);
          if (lf) r.chunk_state = ChunkState::kTrailerStart;
          break;
        }
        case ChunkState::kFinalLf:
          if (p[0] != '\n') return BodyResult::kError;
          c->in.Consume(1);
          return BodyResult::kDone;
      }
    }
    return BodyResult::kMore;
  }

  std::string_view NameBody() const {
    return std::string_view(server_->ok_close)
        .substr(server_->ok_close.size() - server_->name.size() - 1);
  }

  // Appends a response head with the connection header the request calls for.
  void AnswerHead(Conn* c, int status, std::string_view content_type, bool chunked,
                  uint64_t content_length) {
    Buffer& out = c->out;
    out.Append("HTTP/1.1 ");
    out.AppendNumber(static_cast<uint64_t>(status));
    out.Append(" ");
    out.Append(ReasonPhrase(status));
    out.Append("\r\n");
    if (!content_type.empty()) {
      out.Append("Content-Type: ");
      out.Append(content_type);
      out.Append("\r\n");
    }
    out.Append(server_->backend_header);
    if (chunked) {
      out.Append("Transfer-Encoding: chunked\r\n");
    } else if (status != 204 && status != 304) {
      out.Append("Content-Length: ");
      out.AppendNumber(content_length);
      out.Append("\r\n");
    }
    if (!c->req.keep_alive) {
      out.Append("Connection: close\r\n");
    } else if (c->req.http10) {
      out.Append("Connection: keep-alive\r\n");
    }
    out.Append("\r\n");
  }

  void Answer(Conn* c, int status, std::string_view content_type, std::string_view body) {
    const bool no_body = status == 204 || status == 304;
    AnswerHead(c, status, no_body ? std::string_view() : content_type, false, body.size());
    if (!no_body && !c->req.head) c->out.Append(body);
  }

  // Answers an unparseable request and closes the connection.
  void Fail(Conn* c, int status) {
    c->req.keep_alive = false;
    c->req.head = false;
    Answer(c, status, "text/plain", status == 431 ? "header too large\n" : "bad request\n");
    c->in.Clear();
    c->phase = Phase::kLinger;
  }

  // After an answer: the next request, or a graceful close.
  void Finish(Conn* c) { c->phase = c->req.keep_alive ? Phase::kHead : Phase::kLinger; }

  // The request (head and body) is complete: answer it as the fault mode says.
  void Complete(Conn* c) {
    const Route route = c->req.route;
    const bool ordinary = route != Route::kHealth && route != Route::kControlHealth &&
                          route != Route::kControlStats && route != Route::kControlFault;
    const uint64_t fault = ordinary ? server_->fault.load(std::memory_order_relaxed) : 0;
    switch (static_cast<Fault>(fault & 0xff)) {
      case Fault::kNone:
        Respond(c);
        return;
      case Fault::kHang:
        c->phase = Phase::kHang;
        return;
      case Fault::kReset:
        Close(c, /*reset=*/true);
        return;
      case Fault::kSlow:
        c->phase = Phase::kDelay;
        c->fault_delayed = true;
        AddTimer(now_ + static_cast<int64_t>(fault >> 8), c, TimerKind::kDelay);
        return;
      case Fault::kCloseEarly:
        Respond(c);
        if (c->fd >= 0 && c->phase == Phase::kHead) c->phase = Phase::kLinger;
        return;
    }
  }

  // Answers the complete request as its route says.
  void Respond(Conn* c) {
    Request& r = c->req;
    switch (r.route) {
      case Route::kDefault:
      case Route::kWebSocket:  // without "Upgrade: websocket": a plain request
        if (r.get && !r.head) {
          c->out.Append(!r.keep_alive ? server_->ok_close
                        : r.http10    ? server_->ok_keep_alive_10
                                      : server_->ok_keep_alive);
        } else if (r.get) {
          Answer(c, 200, "text/plain", NameBody());
        } else {
          char body[256];
          const std::string_view name = server_->name;
          std::memcpy(body, name.data(), name.size());
          body[name.size()] = ' ';
          char* end =
              std::to_chars(body + name.size() + 1, body + sizeof body - 1, r.body_length).ptr;
          *end++ = '\n';
          Answer(c, 200, "text/plain", std::string_view(body, static_cast<size_t>(end - body)));
        }
        break;
      case Route::kEcho:
        Answer(c, 200, "text/plain", c->echo);
        c->echo.clear();
        break;
      case Route::kStatus:
        Answer(c, static_cast<int>(r.arg), "text/plain", NameBody());
        break;
      case Route::kDelay:
        c->phase = Phase::kDelay;
        AddTimer(now_ + static_cast<int64_t>(r.arg), c, TimerKind::kDelay);
        return;
      case Route::kHealth:
        Answer(c, server_->health_status.load(std::memory_order_relaxed), "text/plain", NameBody());
        break;
      case Route::kControlHealth:
        server_->health_status.store(static_cast<int>(r.arg), std::memory_order_relaxed);
        Answer(c, 200, "text/plain", "ok");
        break;
      case Route::kControlFault:
        server_->fault.store(static_cast<uint64_t>(r.fault) | (r.arg << 8),
                             std::memory_order_relaxed);
        Answer(c, 200, "text/plain", "ok");
        break;
      case Route::kControlStats: {
        uint64_t requests = 0, accepted = 0, health = 0, total = 0, posts = 0;
        for (const Loop* loop : server_->loops) {
          requests += loop->requests();
          posts += loop->posts();
          accepted += loop->accepted();
          health += loop->health_checks();
          total += loop->connections();
        }
        const std::string json = "{\"requests\": " + std::to_string(requests) +
                                 ", \"connections_accepted\": " + std::to_string(accepted) +
                                 ", \"health_checks\": " + std::to_string(health) +
                                 ", \"connections_total\": " + std::to_string(total) +
                                 ", \"posts\": " + std::to_string(posts) + "}\n";
        Answer(c, 200, "application/json", json);
        break;
      }
      case Route::kChunked: {
        const std::string_view piece = NameBody();
        if (r.http10) {
          AnswerHead(c, 200, "text/plain", false, r.arg * piece.size());
          for (uint64_t i = 0; i < r.arg && !r.head; ++i) c->out.Append(piece);
          break;
        }
        AnswerHead(c, 200, "text/plain", true, 0);
        if (r.head) break;
        for (uint64_t i = 0; i < r.arg; ++i) {
          c->out.AppendHex(piece.size());
          c->out.Append("\r\n");
          c->out.Append(piece);
          c->out.Append("\r\n");
        }
        c->out.Append("0\r\n\r\n");
        break;
      }
      case Route::kBig:
        AnswerHead(c, 200, "application/octet-stream", false, r.arg);
        if (!r.head) {
          c->big_remaining = r.arg;
          c->big_sent = 0;
        }
        break;
      case Route::kClose:
        r.keep_alive = false;
        Answer(c, 200, "text/plain", NameBody());
        break;
      case Route::kReset:
        Close(c, /*reset=*/true);
        return;
      case Route::kHang:
        c->phase = Phase::kHang;
        return;
    }
    Finish(c);
  }

  Server* server_;
  const int listen_fd_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  char listen_tag_ = 0;
  char wake_tag_ = 0;
  int64_t now_ = NowMs();
  std::atomic<bool> stop_{false};
  std::vector<std::unique_ptr<Conn>> conns_;  // every connection object this loop made
  std::vector<Conn*> free_;
  std::vector<Conn*> closed_;  // closed in the current batch
  std::vector<Timer> timers_;  // min-heap on `when`
  alignas(64) std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> health_checks_{0};
  std::atomic<uint64_t> connections_{0};
  std::atomic<uint64_t> posts_{0};
};

// ---------------------------------------------------------------------------------------------
// Command line and startup.

struct Options {
  std::string listen = "127.0.0.1:0";
  std::string name = "backend";
  int threads = 1;
  int64_t idle_close_ms = 0;
  int health_status = 200;
};

[[noreturn]] void Usage(const char* error) {
  std::fprintf(stderr,
               "test_backend: %s\n"
               "usage: test_backend --listen 127.0.0.1:0 --name NAME [--threads 1]\n"
               "                    [--idle-close-ms N] [--health-status 200]\n",
               error);
  std::exit(2);
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    if (const size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (arg == "--help" || arg == "-h") {
      Usage("help");
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      Usage("missing value for a flag");
    }
    uint64_t n = 0;
    if (arg == "--listen") {
      o.listen = value;
    } else if (arg == "--name") {
      if (value.empty() || value.size() > 200) Usage("--name must be 1..200 characters");
      o.name = value;
    } else if (arg == "--threads") {
      if (!ParseDecimal(value, 256, &n) || n == 0) Usage("--threads must be 1..256");
      o.threads = static_cast<int>(n);
    } else if (arg == "--idle-close-ms") {
      if (!ParseDecimal(value, 86'400'000, &n)) Usage("bad --idle-close-ms");
      o.idle_close_ms = static_cast<int64_t>(n);
    } else if (arg == "--health-status") {
      if (!ParseDecimal(value, 599, &n) || n < 200) Usage("--health-status must be 200..599");
      o.health_status = static_cast<int>(n);
    } else {
      Usage("unknown flag");
    }
  }
  return o;
}

// "127.0.0.1:0" or "[::1]:0" -> address; *host gets the host part as printed back.
bool ParseListen(const std::string& text, sockaddr_storage* addr, socklen_t* len,
                 std::string* host) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  std::string h = text.substr(0, colon);
  uint64_t port;
  if (!ParseDecimal(std::string_view(text).substr(colon + 1), 65535, &port)) return false;
  *addr = {};
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') {
    auto* a6 = reinterpret_cast<sockaddr_in6*>(addr);
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, h.substr(1, h.size() - 2).c_str(), &a6->sin6_addr) != 1) return false;
    *len = sizeof(sockaddr_in6);
  } else {
    if (h == "localhost") h = "127.0.0.1";
    auto* a4 = reinterpret_cast<sockaddr_in*>(addr);
    a4->sin_family = AF_INET;
    a4->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, h.c_str(), &a4->sin_addr) != 1) return false;
    *len = sizeof(sockaddr_in);
  }
  *host = h;
  return true;
}

int Listen(const sockaddr_storage& addr, socklen_t len) {
  const int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) Die("socket");
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) Die("bind");
  if (listen(fd, 4096) != 0) Die("listen");
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  sockaddr_storage addr;
  socklen_t addr_len;
  std::string host;
  if (!ParseListen(options.listen, &addr, &addr_len, &host)) Usage("bad --listen address");

  for (size_t i = 0; i < sizeof g_filler; ++i) g_filler[i] = static_cast<char>('a' + i % 26);

  // Signals are taken by sigwait in main; the loops never see them.
  signal(SIGPIPE, SIG_IGN);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  Server server;
  server.name = options.name;
  server.idle_close_ms = options.idle_close_ms;
  server.health_status.store(options.health_status);
  server.backend_header = "X-Backend: " + options.name + "\r\n";
  const std::string head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" +
                           server.backend_header +
                           "Content-Length: " + std::to_string(options.name.size() + 1) + "\r\n";
  const std::string body = options.name + "\n";
  server.ok_keep_alive = head + "\r\n" + body;
  server.ok_close = head + "Connection: close\r\n\r\n" + body;
  server.ok_keep_alive_10 = head + "Connection: keep-alive\r\n\r\n" + body;

  // The first socket picks the port (it may be 0); the others join it through SO_REUSEPORT.
  std::vector<int> listen_fds;
  listen_fds.push_back(Listen(addr, addr_len));
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  if (getsockname(listen_fds[0], reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0) {
    Die("getsockname");
  }
  for (int i = 1; i < options.threads; ++i) listen_fds.push_back(Listen(bound, bound_len));
  const uint16_t port =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);

  std::vector<std::unique_ptr<Loop>> loops;
  for (int fd : listen_fds) {
    loops.push_back(std::make_unique<Loop>(&server, fd));
    server.loops.push_back(loops.back().get());
  }
  std::vector<std::thread> threads;
  for (auto& loop : loops) threads.emplace_back([&loop] { loop->Run(); });

  std::printf("listening %s:%u\n", host.c_str(), static_cast<unsigned>(port));
  std::fflush(stdout);

  int sig = 0;
  while (sigwait(&stop_signals, &sig) != 0) {
  }
  for (auto& loop : loops) loop->Stop();
  for (auto& t : threads) t.join();
  return 0;
}
