#include "common/http_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>

#include <fmt/format.h>

#include "common/net.h"
#include "common/posix.h"

namespace bluegreen {
namespace {

using Clock = std::chrono::steady_clock;

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

int RemainingMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(left.count());
}

// How often a call that can be stopped asks whether it should stop while it waits.
constexpr int kStopPollMs = 100;

// The deadline of a call and, optionally, what asks it to stop.
struct Limits {
  Clock::time_point deadline;
  const std::function<bool()>* stop = nullptr;

  Status Check() const {
    if (stop != nullptr && (*stop)()) return FailedPrecondition("cancelled");
    return Status::Ok();
  }
};

// Waits for `events` on fd until the deadline, or until asked to stop.
Status WaitFor(int fd, short events, const Limits& limits) {
  for (;;) {
    BG_RETURN_IF_ERROR(limits.Check());
    pollfd p{fd, events, 0};
    int ms = RemainingMs(limits.deadline);
    if (ms == 0) return Status(StatusCode::kDeadlineExceeded, "timed out");
    if (limits.stop != nullptr) ms = std::min(ms, kStopPollMs);
    const int n = ::poll(&p, 1, ms);
    if (n > 0) return Status::Ok();
    if (n < 0 && errno != EINTR) return Unavailable(std::string("poll: ") + std::strerror(errno));
  }
}

struct Target {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string host;  // for the Host header
  std::string name;  // for error messages: "unix:/path" or HOST:PORT
};

Result<Target> ResolveAddress(std::string_view address) {
  Target t;
  if (address.starts_with("unix:")) {
    const std::string_view path = address.substr(5);
    auto* un = reinterpret_cast<sockaddr_un*>(&t.addr);
    if (path.empty() || path.size() >= sizeof(un->sun_path)) {
      return InvalidArgument(fmt::format("bad unix socket path in {:?}", std::string(address)));
    }
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, path.data(), path.size());
    t.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    t.host = "localhost";
    t.name = std::string(address);
    return t;
  }
  if (address.starts_with("http://")) {
    address.remove_prefix(7);
    const size_t slash = address.find('/');
    if (slash != std::string_view::npos) address = address.substr(0, slash);
  }
  Result<Endpoint> ep = ParseEndpoint(address);
  if (!ep.ok()) return ep.status();
  t.addr = ep->addr;
  t.len = ep->len;
  t.host = std::string(address);
  t.name = t.host;
  return t;
}

Result<int> ConnectTo(const Target& t, const Limits& limits) {
  const int fd = ::socket(t.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Unavailable(std::string("socket: ") + std::strerror(errno));
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&t.addr), t.len) != 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) {
      const int err = errno;
      ::close(fd);
      return Unavailable(fmt::format("connect to {}: {}", t.name, std::strerror(err)));
    }
    Status st = WaitFor(fd, POLLOUT, limits);
    if (!st.ok()) {
      ::close(fd);
      return st;
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      ::close(fd);
      return Unavailable(fmt::format("connect to {}: {}", t.name, std::strerror(err)));
    }
  }
  if (t.addr.ss_family != AF_UNIX) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

Status SendAll(int fd, std::string_view data, const Limits& limits) {
  while (!data.empty()) {
    BG_RETURN_IF_ERROR(limits.Check());
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      BG_RETURN_IF_ERROR(WaitFor(fd, POLLOUT, limits));
      continue;
    }
    return Unavailable(std::string("send: ") + std::strerror(errno));
  }
  return Status::Ok();
}

// Reads more bytes into `buf`. Returns false on end of stream.
Result<bool> ReadMore(int fd, std::string* buf, const Limits& limits) {
  char chunk[16384];
  BG_RETURN_IF_ERROR(limits.Check());
  for (;;) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      buf->append(chunk, static_cast<size_t>(n));
      return true;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      BG_RETURN_IF_ERROR(WaitFor(fd, POLLIN, limits));
      continue;
    }
    if (errno == ECONNRESET) return false;
    return Unavailable(std::string("recv: ") + std::strerror(errno));
  }
}

bool ParseHex(std::string_view s, size_t* out) {
  size_t v = 0;
  if (s.empty() || s.size() > 15) return false;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return false;
    v = v * 16 + static_cast<size_t>(d);
  }
  *out = v;
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string_view HttpClientResponse::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (EqualsIgnoreCase(k, name)) return v;
  }
  return {};
}

namespace {

// Where the body of a response goes, piece by piece as it arrives; an error ends the call.
using BodySink = std::function<Status(std::string_view)>;

// One request and its response, whose body goes to `sink` (the response's own body stays empty).
Result<HttpClientResponse> Exchange(const std::string& address, const HttpClientRequest& request,
                                    const Limits& limits, const BodySink& sink) {
  Result<Target> target = ResolveAddress(address);
  if (!target.ok()) return target.status();
  Result<int> fd_or = ConnectTo(*target, limits);
  if (!fd_or.ok()) return fd_or.status();
  Fd fd(*fd_or);

  std::string head = fmt::format("{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
                                 request.method, request.target, target->host);
  bool has_type = false;
  for (const auto& [k, v] : request.headers) {
    head += fmt::format("{}: {}\r\n", k, v);
    if (EqualsIgnoreCase(k, "Content-Type")) has_type = true;
  }
  if (!request.body.empty() || request.method == "POST" || request.method == "PUT" ||
      request.method == "PATCH") {
    if (!has_type && !request.body.empty()) head += "Content-Type: application/json\r\n";
    head += fmt::format("Content-Length: {}\r\n", request.body.size());
  }
  head += "\r\n";
  BG_RETURN_IF_ERROR(SendAll(fd.get(), head, limits));
  BG_RETURN_IF_ERROR(SendAll(fd.get(), request.body, limits));

  std::string buf;
  size_t pos = 0;  // start of the unread part of buf
  auto read_more = [&]() -> Result<bool> { return ReadMore(fd.get(), &buf, limits); };
  // Drops what was read already, so a long stream does not pile up in buf.
  auto compact = [&] {
    buf.erase(0, pos);
    pos = 0;
  };
  HttpClientResponse resp;
  size_t head_end;
  for (;;) {
    // Read a complete head, skipping 1xx interim responses.
    while ((head_end = buf.find("\r\n\r\n", pos)) == std::string::npos) {
      if (buf.size() - pos > 64 * 1024) return Internal("response head too large");
      Result<bool> more = read_more();
      if (!more.ok()) return more.status();
      if (!*more) return Unavailable(fmt::format("{} closed the connection before answering",
                                                 target->host));
    }
    std::string_view head_text(buf.data() + pos, head_end - pos);
    const size_t eol = head_text.find("\r\n");
    std::string_view status_line = head_text.substr(0, eol);
    if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12) {
      return Internal(fmt::format("not an HTTP/1.x response: {:?}",
                                  std::string(status_line.substr(0, 80))));
    }
    int code = 0;
    for (char c : status_line.substr(9, 3)) {
      if (c < '0' || c > '9') return Internal("bad status code in response");
      code = code * 10 + (c - '0');
    }
    resp.status = code;
    resp.headers.clear();
    std::string_view rest = eol == std::string_view::npos ? "" : head_text.substr(eol + 2);
    while (!rest.empty()) {
      const size_t e = rest.find("\r\n");
      std::string_view line = rest.substr(0, e);
      rest = e == std::string_view::npos ? "" : rest.substr(e + 2);
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos) continue;
      resp.headers.emplace_back(std::string(line.substr(0, colon)),
                                std::string(Trim(line.substr(colon + 1))));
    }
    pos = head_end + 4;
    if (code >= 100 && code < 200) continue;
    break;
  }
  compact();

  // Hands the next `len` bytes of the stream to the sink as they arrive.
  auto pass_on = [&](size_t len, std::string_view closed) -> Status {
    while (len > 0) {
      if (pos == buf.size()) {
        compact();
        Result<bool> more = read_more();
        if (!more.ok()) return more.status();
        if (!*more) return Unavailable(std::string(closed));
      }
      const size_t n = std::min(len, buf.size() - pos);
      BG_RETURN_IF_ERROR(sink(std::string_view(buf).substr(pos, n)));
      pos += n;
      len -= n;
    }
    return Status::Ok();
  };

  const bool no_body = request.method == "HEAD" || resp.status == 204 || resp.status == 304;
  if (no_body) return resp;
  std::string_view te = resp.Header("Transfer-Encoding");
  std::string_view cl = resp.Header("Content-Length");
  if (!te.empty() && te.find("chunked") != std::string_view::npos) {
    // Chunked: decode as the bytes arrive.
    constexpr std::string_view kClosedInChunk = "connection closed inside a chunked body";
    for (;;) {
      size_t line_end;
      while ((line_end = buf.find("\r\n", pos)) == std::string::npos) {
        if (buf.size() - pos > 1024) return Internal("bad chunk size in response");
        Result<bool> more = read_more();
        if (!more.ok()) return more.status();
        if (!*more) return Unavailable(std::string(kClosedInChunk));
      }
      std::string_view size_text(buf.data() + pos, line_end - pos);
      const size_t semi = size_text.find(';');
      if (semi != std::string_view::npos) size_text = size_text.substr(0, semi);
      size_t size = 0;
      if (!ParseHex(Trim(size_text), &size)) return Internal("bad chunk size in response");
      pos = line_end + 2;
      if (size == 0) break;  // trailers are not needed; the connection closes anyway
      BG_RETURN_IF_ERROR(pass_on(size, kClosedInChunk));
      while (buf.size() < pos + 2) {  // the CRLF after the chunk's data
        Result<bool> more = read_more();
        if (!more.ok()) return more.status();
        if (!*more) return Unavailable(std::string(kClosedInChunk));
      }
      pos += 2;
      compact();
    }
    return resp;
  }
  if (!cl.empty()) {
    size_t len = 0;
    for (char c : cl) {
      if (c < '0' || c > '9' || len > (size_t{1} << 48)) {
        return Internal("bad Content-Length in response");
      }
      len = len * 10 + static_cast<size_t>(c - '0');
    }
    BG_RETURN_IF_ERROR(pass_on(len, "connection closed inside the response body"));
    return resp;
  }
  // Close-delimited.
  for (;;) {
    if (pos < buf.size()) BG_RETURN_IF_ERROR(sink(std::string_view(buf).substr(pos)));
    buf.clear();
    pos = 0;
    Result<bool> more = read_more();
    if (!more.ok()) return more.status();
    if (!*more) break;
  }
  return resp;
}

}  // namespace

Result<HttpClientResponse> HttpCall(const std::string& address, const HttpClientRequest& request,
                                    std::chrono::milliseconds timeout, size_t max_body) {
  std::string body;
  Result<HttpClientResponse> resp =
      Exchange(address, request, Limits{Clock::now() + timeout}, [&](std::string_view piece) {
        if (body.size() + piece.size() > max_body) {
          return Status(StatusCode::kResourceExhausted, "response body too large");
        }
        body.append(piece);
        return Status::Ok();
      });
  if (resp.ok()) resp->body = std::move(body);
  return resp;
}

Result<HttpClientResponse> HttpCallStreaming(const std::string& address,
                                             const HttpClientRequest& request,
                                             std::chrono::milliseconds timeout,
                                             const std::function<void(std::string_view)>& on_body,
                                             const std::function<bool()>& stop) {
  const Limits limits{Clock::now() + timeout, stop ? &stop : nullptr};
  return Exchange(address, request, limits, [&](std::string_view piece) {
    on_body(piece);
    return Status::Ok();
  });
}

}  // namespace bluegreen
