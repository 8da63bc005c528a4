// A small blocking HTTP/1.1 client for the bench tools: numeric addresses, connect with a timeout,
// and a response reader that understands Content-Length, chunked and close-delimited bodies, skips
// 1xx interim responses, and keeps the bytes that follow a response for the next one (keep-alive).
//
// Header-only and self-contained (libc and the C++ standard library) so every bench/*_tool.cc can
// include it. Nothing here is shared between threads: use one ResponseReader per connection.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace bench {

// "127.0.0.1:8080", "[::1]:8080" or "localhost:8080".
struct Address {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string text;  // as given, for Host headers and messages
};

inline bool ParseUint(std::string_view s, uint64_t max, uint64_t* out) {
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

inline bool ParseAddress(std::string_view text, Address* out) {
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return false;
  std::string host(text.substr(0, colon));
  uint64_t port = 0;
  if (!ParseUint(text.substr(colon + 1), 65535, &port) || port == 0) return false;
  *out = Address{};
  out->text = std::string(text);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    auto* a6 = reinterpret_cast<sockaddr_in6*>(&out->addr);
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a6->sin6_addr) != 1) {
      return false;
    }
    out->len = sizeof(sockaddr_in6);
    return true;
  }
  if (host == "localhost") host = "127.0.0.1";
  auto* a4 = reinterpret_cast<sockaddr_in*>(&out->addr);
  a4->sin_family = AF_INET;
  a4->sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &a4->sin_addr) != 1) return false;
  out->len = sizeof(sockaddr_in);
  return true;
}

// A blocking TCP connection to `a`, with TCP_NODELAY and send/receive timeouts of timeout_ms.
// Returns the descriptor, or -1 with errno set (ETIMEDOUT when the connect took too long).
inline int Connect(const Address& a, int timeout_ms) {
  const int fd = socket(a.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&a.addr), a.len) != 0) {
    if (errno != EINPROGRESS) {
      const int saved = errno;
      close(fd);
      errno = saved;
      return -1;
    }
    pollfd p{fd, POLLOUT, 0};
    int r;
    do {
      r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    int err = 0;
    socklen_t len = sizeof err;
    if (r == 0) {
      err = ETIMEDOUT;
    } else if (r < 0) {
      err = errno;
    } else {
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    }
    if (err != 0) {
      close(fd);
      errno = err;
      return -1;
    }
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

// Writes all of data. False on error or timeout (errno set).
inline bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

inline bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

inline bool ContainsTokenIgnoreCase(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    std::string_view t = value.substr(0, comma);
    while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
    while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
    if (EqualsIgnoreCase(t, token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

struct Response {
  int status = 0;
  bool close = false;  // the server will close the connection after this response
  std::string body;    // de-chunked
};

enum class ReadResult {
  kOk,
  kClosed,     // the connection closed (or was reset) before a complete response
  kTimeout,    // no byte for the receive timeout
  kError,      // another socket error
  kMalformed,  // not a valid HTTP/1.x response
};

inline const char* ReadResultName(ReadResult r) {
  switch (r) {
    case ReadResult::kOk:
      return "ok";
    case ReadResult::kClosed:
      return "closed";
    case ReadResult::kTimeout:
      return "timeout";
    case ReadResult::kError:
      return "error";
    case ReadResult::kMalformed:
      return "malformed";
  }
  return "?";
}

// Reads responses from one connection. Bytes received past the end of a response are kept for
// the next Read, so pipelined or back-to-back responses are not lost.
class ResponseReader {
 public:
  // Reads one final (non-1xx) response. `head_request`: the request was HEAD (no body follows).
  ReadResult Read(int fd, Response* out, bool head_request = false) {
    out->status = 0;
    out->close = false;
    out->body.clear();
    for (;;) {
      size_t head_end;
      while ((head_end = buf_.find("\r\n\r\n", pos_)) == std::string::npos) {
        if (buf_.size() - pos_ > 64 * 1024) return ReadResult::kMalformed;
        if (ReadResult r = Fill(fd); r != ReadResult::kOk) return r;
      }
      const std::string_view head(buf_.data() + pos_, head_end + 2 - pos_);
      pos_ = head_end + 4;
      bool chunked = false, has_length = false, http10 = false, keep_alive_10 = false;
      uint64_t length = 0;
      if (!ParseHead(head, out, &chunked, &has_length, &length, &http10, &keep_alive_10)) {
        return ReadResult::kMalformed;
      }
      if (out->status >= 100 && out->status < 200 && out->status != 101) continue;  // interim
      if (http10 && !keep_alive_10) out->close = true;
      if (head_request || out->status == 204 || out->status == 304 || out->status == 101) {
        Compact();
        return ReadResult::kOk;
      }
      ReadResult r;
      if (chunked) {
        r = ReadChunked(fd, &out->body);
      } else if (has_length) {
        r = ReadExactly(fd, length, &out->body);
      } else {
        out->close = true;
        r = ReadUntilClose(fd, &out->body);
      }
      Compact();
      return r;
    }
  }

  // Forgets buffered bytes; call when the connection is replaced.
  void Reset() {
    buf_.clear();
    pos_ = 0;
  }

 private:
  static bool ParseHead(std::string_view head, Response* out, bool* chunked, bool* has_length,
                        uint64_t* length, bool* http10, bool* keep_alive_10) {
    size_t eol = head.find("\r\n");
    const std::string_view status_line = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    if (status_line.size() < 12 || !status_line.starts_with("HTTP/1.")) return false;
    *http10 = status_line[7] == '0';
    uint64_t status = 0;
    if (status_line[8] != ' ' || !ParseUint(status_line.substr(9, 3), 999, &status)) return false;
    out->status = static_cast<int>(status);
    *chunked = *has_length = *keep_alive_10 = false;
    out->close = false;
    while (!head.empty()) {
      eol = head.find("\r\n");
      const std::string_view line = head.substr(0, eol);
      head.remove_prefix(eol + 2);
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos) return false;
      const std::string_view name = line.substr(0, colon);
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
        value.remove_prefix(1);
      }
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
        value.remove_suffix(1);
      if (EqualsIgnoreCase(name, "content-length")) {
        if (!ParseUint(value, uint64_t{1} << 40, length)) return false;
        *has_length = true;
      } else if (EqualsIgnoreCase(name, "transfer-encoding")) {
        *chunked = ContainsTokenIgnoreCase(value, "chunked");
      } else if (EqualsIgnoreCase(name, "connection")) {
        if (ContainsTokenIgnoreCase(value, "close")) out->close = true;
        if (ContainsTokenIgnoreCase(value, "keep-alive")) *keep_alive_10 = true;
      }
    }
    return true;
  }

  ReadResult Fill(int fd) {
    char tmp[16384];
    for (;;) {
      const ssize_t n = recv(fd, tmp, sizeof tmp, 0);
      if (n > 0) {
        buf_.append(tmp, static_cast<size_t>(n));
        return ReadResult::kOk;
      }
      if (n == 0) return ReadResult::kClosed;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return ReadResult::kTimeout;
      if (errno == ECONNRESET || errno == EPIPE) return ReadResult::kClosed;
      return ReadResult::kError;
    }
  }

  ReadResult ReadExactly(int fd, uint64_t n, std::string* body) {
    while (buf_.size() - pos_ < n) {
      if (ReadResult r = Fill(fd); r != ReadResult::kOk) return r;
    }
    body->append(buf_, pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return ReadResult::kOk;
  }

  ReadResult ReadUntilClose(int fd, std::string* body) {
    for (;;) {
      const ReadResult r = Fill(fd);
      if (r == ReadResult::kClosed) break;
      if (r != ReadResult::kOk) return r;
    }
    body->append(buf_, pos_);
    pos_ = buf_.size();
    return ReadResult::kOk;
  }

  ReadResult ReadLine(int fd, std::string_view* line) {
    size_t eol;
    while ((eol = buf_.find("\r\n", pos_)) == std::string::npos) {
      if (buf_.size() - pos_ > 16 * 1024) return ReadResult::kMalformed;
      if (ReadResult r = Fill(fd); r != ReadResult::kOk) return r;
    }
    *line = std::string_view(buf_).substr(pos_, eol - pos_);
    pos_ = eol + 2;
    return ReadResult::kOk;
  }

  ReadResult ReadChunked(int fd, std::string* body) {
    for (;;) {
      std::string_view line;
      if (ReadResult r = ReadLine(fd, &line); r != ReadResult::kOk) return r;
      uint64_t size = 0;
      size_t digits = 0;
      for (char ch : line) {
        int d;
        if (ch >= '0' && ch <= '9') {
          d = ch - '0';
        } else if (ch >= 'a' && ch <= 'f') {
          d = ch - 'a' + 10;
        } else if (ch >= 'A' && ch <= 'F') {
          d = ch - 'A' + 10;
        } else {
          break;
        }
        if (++digits > 15) return ReadResult::kMalformed;
        size = size * 16 + static_cast<uint64_t>(d);
      }
      if (digits == 0) return ReadResult::kMalformed;
      if (size == 0) {
        for (;;) {  // trailers up to the empty line
          if (ReadResult r = ReadLine(fd, &line); r != ReadResult::kOk) return r;
          if (line.empty()) return ReadResult::kOk;
        }
      }
      if (ReadResult r = ReadExactly(fd, size, body); r != ReadResult::kOk) return r;
      if (ReadResult r = ReadLine(fd, &line); r != ReadResult::kOk) return r;
      if (!line.empty()) return ReadResult::kMalformed;
    }
  }

  void Compact() {
    if (pos_ == buf_.size()) {
      buf_.clear();
      pos_ = 0;
    } else if (pos_ > 64 * 1024) {
      buf_.erase(0, pos_);
      pos_ = 0;
    }
  }

  std::string buf_;
  size_t pos_ = 0;
};

}  // namespace bench
