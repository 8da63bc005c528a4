#include "proxy/connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <utility>


namespace bluegreen::proxy {
namespace {

using http::BodyFraming;
using http::Header;
using http::HeaderKind;

constexpr uint8_t Bit(int w) { return static_cast<uint8_t>(1u << w); }

// Appends text to a buffer; returns false when it does not fit.
class HeadWriter {
 public:
  explicit HeadWriter(Buffer* b) : b_(b) {}
  void Add(std::string_view s) {
    if (!ok_) return;
    if (s.size() > b_->space()) {
      ok_ = false;
      return;
    }
    std::memcpy(b_->data + b_->end, s.data(), s.size());
    b_->end += s.size();
  }
  void AddHeader(std::string_view name, std::string_view value) {
    Add(name);
    Add(": ");
    Add(value);
    Add("\r\n");
  }
  bool ok() const { return ok_; }

 private:
  Buffer* b_;
  bool ok_ = true;
};

std::string_view StatusText(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Error";
  }
}

bool IsIdempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" ||
         method == "OPTIONS" || method == "TRACE";
}

// Writes the peer's IP as text; returns its length. (glibc's inet_ntop formats IPv4 through
// sprintf, which shows up on the hot path.)
size_t FormatPeer(const sockaddr_in6& peer, char* out, size_t cap) {
  const auto* sa = reinterpret_cast<const sockaddr*>(&peer);
  if (sa->sa_family == AF_INET) {
    const auto* b = reinterpret_cast<const uint8_t*>(
        &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr);
    char* p = out;
    for (int i = 0; i < 4; ++i) {
      if (i > 0) *p++ = '.';
      p = std::to_chars(p, out + cap, b[i]).ptr;
    }
    return static_cast<size_t>(p - out);
  }
  if (sa->sa_family == AF_INET6 && inet_ntop(AF_INET6, &peer.sin6_addr, out, cap) != nullptr) {
    return std::strlen(out);
  }
  return 0;
}

bool WouldBlock(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

// Sends what is left of `head` (may be null) and then the first `body_len` bytes of `body` with
// one sendmsg, and advances both buffers past what went out. Returns the bytes sent (-1 with errno
// on error); *body_sent gets the part of them that came from `body`.
ssize_t SendHeadAndBody(int fd, Buffer* head, Buffer* body, size_t body_len, size_t* body_sent) {
  iovec iov[2];
  size_t n_iov = 0;
  const bool has_head = head != nullptr && !head->empty();
  if (has_head) iov[n_iov++] = {head->begin_ptr(), head->size()};
  if (body_len > 0) iov[n_iov++] = {body->begin_ptr(), body_len};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = n_iov;
  const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
  *body_sent = 0;
  if (n <= 0) return n;
  size_t left = static_cast<size_t>(n);
  if (has_head) {
    const size_t h = std::min(left, head->size());
    head->start += h;
    left -= h;
  }
  if (left > 0) body->start += left;
  *body_sent = left;
  return n;
}

}  // namespace

ClientConnection::ClientConnection(Worker* worker, int fd, uint32_t listener_id,
                                   const sockaddr* peer, socklen_t peer_len)
    : w_(worker), fd_(fd), listener_id_(listener_id) {
  std::memcpy(&peer_, peer, std::min<size_t>(peer_len, sizeof(peer_)));
}

// Normally Close() has released everything; at process exit a worker deletes the connections
// still open, and this releases what they hold.
ClientConnection::~ClientConnection() {
  delete up_;
  BufferPool& pool = w_->buffers();
  pool.Put(in_);
  pool.Put(up_head_);
  pool.Put(resp_);
  pool.Put(client_head_);
}

int ClientConnection::client_fd() { return fd_.get(); }
int ClientConnection::up_fd() { return up_->fd.get(); }

void ClientConnection::Start() {
  if (!w_->loop().Add(fd_.get(), this)) {
    Close();
    return;
  }
  SetDeadline(w_->current().limits.client_idle_timeout);
  Drive();
}

void ClientConnection::SetDeadline(Clock::duration d) { deadline_ = w_->now() + d; }

// ---------------------------------------------------------------------------------------------
// Readiness. Sockets are registered edge-triggered: an event says that something changed, once.
// So a direction is "ready" from its event until a call finds it drained (EAGAIN, or a read that
// returned less than it asked for) or full, and only then does the connection wait.

namespace {
constexpr uint32_t kReadEvents = EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR;
constexpr uint32_t kWriteEvents = EPOLLOUT | EPOLLHUP | EPOLLERR;
constexpr uint32_t kClosedEvents = EPOLLRDHUP | EPOLLHUP | EPOLLERR;

// The Wait bits an event wakes, for a socket whose directions are Waits `read` and `write`.
constexpr uint8_t WaitBits(uint32_t events, int read, int write) {
  uint8_t bits = 0;
  if (events & kReadEvents) bits |= Bit(read);
  if (events & kWriteEvents) bits |= Bit(write);
  return bits;
}
}  // namespace

void Readiness::Add(uint32_t events) {
  if (events & kReadEvents) bits_ |= kReadable;
  if (events & kWriteEvents) bits_ |= kWritable;
  if (events & kClosedEvents) bits_ |= kPeerClosed;
  if (events & EPOLLPRI) bits_ |= kUrgent;
}

// Before any handler of the batch runs, so that a connection taking this one from the pool
// earlier in the batch already sees that the server closed it or sent something.
void Upstream::Note(uint32_t events) {
  if (fd.valid()) ready.Add(events);
}

void Upstream::OnEvents(uint32_t events) {
  if (!fd.valid()) return;  // closed earlier in this turn
  if (owner != nullptr) owner->OnUpstreamEvents(events);
}

void ClientConnection::OnEvents(uint32_t events) {
  if (phase_ == Phase::kClosed) return;
  client_ready_.Add(events);
  OnReady(WaitBits(events, static_cast<int>(Wait::kClientRead),
                   static_cast<int>(Wait::kClientWrite)));
}

void ClientConnection::OnUpstreamEvents(uint32_t events) {
  if (phase_ == Phase::kClosed) return;
  OnReady(WaitBits(events, static_cast<int>(Wait::kUpRead), static_cast<int>(Wait::kUpWrite)));
}

Readiness* ClientConnection::ReadinessOf(Wait w) {
  if (w == Wait::kClientRead || w == Wait::kClientWrite) return &client_ready_;
  return up_ != nullptr ? &up_->ready : nullptr;
}

bool ClientConnection::IsReady(Wait w) {
  const Readiness* r = ReadinessOf(w);
  if (r == nullptr) return false;
  return w == Wait::kClientRead || w == Wait::kUpRead ? r->readable() : r->writable();
}

void ClientConnection::NotReady(Wait w) {
  Readiness* r = ReadinessOf(w);
  if (r == nullptr) return;
  if (w == Wait::kClientRead || w == Wait::kUpRead) {
    r->ReadBlocked();
  } else {
    r->WriteBlocked();
  }
}

void ClientConnection::Drained(Wait w) {
  if (Readiness* r = ReadinessOf(w)) r->ReadShort();
}

void ClientConnection::WaitFor(Wait w) {
  if (phase_ == Phase::kClosed) return;
  waiting_ |= Bit(static_cast<int>(w));
  // Ready already (an event came while nothing waited for it): no new edge will come.
  if (IsReady(w)) ScheduleRedrive();
}

void ClientConnection::ScheduleRedrive() {
  if (redrive_pending_ || phase_ == Phase::kClosed) return;
  redrive_pending_ = true;
  // Runs before the deferred delete of a Close() that comes after this point.
  w_->loop().Defer([this] {
    redrive_pending_ = false;
    const bool again = std::exchange(drive_again_, false);
    if (phase_ == Phase::kClosed || w_->stopped()) return;
    uint8_t bits = 0;
    for (Wait d : {Wait::kClientRead, Wait::kClientWrite, Wait::kUpRead, Wait::kUpWrite}) {
      if (IsReady(d)) bits |= Bit(static_cast<int>(d));
    }
    if ((waiting_ & bits) != 0) {
      OnReady(bits);
    } else if (again) {
      w_->UpdateNow();
      Drive();
    }
  });
}

void ClientConnection::OnReady(uint8_t bits) {
  const uint8_t woken = waiting_ & bits;
  if (woken == 0) return;  // remembered in the ready bits for the next call
  waiting_ &= static_cast<uint8_t>(~woken);
  w_->UpdateNow();
  if (up_connecting_ && (woken & Bit(static_cast<int>(Wait::kUpWrite)))) {
    OnUpstreamConnected();
    return;
  }
  Drive();
}

void ClientConnection::Drive() {
  for (int guard = 0; guard < 1000; ++guard) {
    bool progress = false;
    switch (phase_) {
      case Phase::kHead: progress = DriveHead(); break;
      case Phase::kProxy: progress = DriveProxy(); break;
      case Phase::kTunnel: progress = DriveTunnel(); break;
      case Phase::kLinger: progress = DriveLinger(); break;
      case Phase::kClosed: return;
    }
    if (!progress) return;
  }
  // Still going after 1000 steps (a long pipeline, a fast tunnel): let the other connections
  // run, then go on. Nothing waits for an event now, so only this brings the connection back.
  drive_again_ = true;
  ScheduleRedrive();
}

// ---------------------------------------------------------------------------------------------
// Reading a request head.

bool ClientConnection::DriveHead() {
  if (in_ != nullptr && !in_->empty()) {
    http::RequestHead& req = w_->scratch_request();
    const std::string_view data(in_->begin_ptr(), in_->size());
    const http::ParseResult r = parser_.ParseRequest(data, &req);
    if (r == http::ParseResult::kComplete) {
      Dispatch(req);
      return true;
    }
    if (r == http::ParseResult::kError) {
      Respond(parser_.error().status, /*close_after=*/true);
      return true;
    }
    // Incomplete: the first byte of a request starts the header timeout.
    if (in_->space() == 0) {
      if (in_->start > 0) {
        in_->Compact();
      } else {
        Respond(431, true);
        return true;
      }
    }
  }
  if (client_eof_) {
    Close();
    return false;
  }
  // Idle: hold no buffer while waiting.
  auto wait_for_bytes = [this] {
    if (in_ != nullptr && in_->empty()) {
      w_->buffers().Put(in_);
      in_ = nullptr;
    }
  };
  // The last read drained the socket (after a response: the client has not sent its next
  // request yet): wait for the edge instead of a read that would find nothing.
  if (!IsReady(Wait::kClientRead)) {
    wait_for_bytes();
    WaitFor(Wait::kClientRead);
    return false;
  }
  if (in_ == nullptr) in_ = w_->buffers().Get();
  in_->MakeRoom();
  const bool was_empty = in_->empty();
  if (was_empty) {
    const Limits& l = w_->current().limits;
    parser_ = http::HeadParser(http::Limits{
        l.max_request_line, std::min(l.max_header_bytes, Buffer::kSize), l.max_headers});
  }
  const size_t space = in_->space();
  const ssize_t n = ::recv(client_fd(), in_->data + in_->end, space, 0);
  if (n > 0) {
    if (static_cast<size_t>(n) < space) Drained(Wait::kClientRead);
    if (was_empty) {
      SetDeadline(w_->current().limits.client_header_timeout);
    }
    in_->end += static_cast<size_t>(n);
    return true;
  }
  if (n == 0) {
    client_eof_ = true;
    Close();
    return false;
  }
  if (WouldBlock(errno)) {
    wait_for_bytes();
    Blocked(Wait::kClientRead);
    return false;
  }
  Close();
  return false;
}

void ClientConnection::Dispatch(const http::RequestHead& req) {
  ws_ = w_->AcquireSnapshot();
  const Snapshot& snap = *ws_->snap;
  started_ = Clock::now();
  req_keep_alive_ = req.keep_alive && !w_->draining();
  req_is_head_ = req.method == "HEAD";
  req_idempotent_ = IsIdempotent(req.method);
  req_upgrade_ = req.upgrade;
  req_http10_ = req.version_minor == 0;
  retried_ = false;
  req_body_pending_ = 0;
  resp_started_ = resp_head_done_ = resp_sent_any_ = false;
  req_body_sent_ = up_bytes_sent_ = 0;
  resp_status_ = 0;
  up_eof_ = false;

  const size_t head_size = req.head_size;
  const bool has_body = req.framing != BodyFraming::kNone &&
                        !(req.framing == BodyFraming::kContentLength && req.content_length == 0);
  listener_ = snap.FindListener(listener_id_);
  if (listener_ == nullptr || listener_->group < 0) {
    in_->start += head_size;
    Respond(503, true);
    return;
  }
  if (!listener_->allow.empty()) {
    bool allowed = false;
    for (const Cidr& c : listener_->allow) {
      if (c.Contains(reinterpret_cast<const sockaddr*>(&peer_))) {
        allowed = true;
        break;
      }
    }
    if (!allowed) {
      in_->start += head_size;
      Respond(403, has_body);
      return;
    }
  }

  // Rewrite the head for the upstream.
  up_head_ = w_->buffers().Get();
  HeadWriter hw(up_head_);
  hw.Add(req.method);
  hw.Add(" ");
  hw.Add(req.path);
  hw.Add(req_http10_ ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");
  bool has_xff = false;
  for (const Header& h : req.headers) {
    if (h.hop_by_hop) continue;
    switch (h.kind) {
      case HeaderKind::kXForwardedFor:
        has_xff = true;  // joined into one line below, with the client appended
        continue;
      case HeaderKind::kXForwardedProto:
      case HeaderKind::kXForwardedPort:
        continue;  // set below from what this listener saw
      case HeaderKind::kHost:
        if (!req.authority.empty()) {
          hw.AddHeader("Host", req.authority);
          continue;
        }
        break;
      default:
        break;
    }
    hw.Add(h.name);
    hw.Add(": ");
    hw.Add(h.value);
    hw.Add("\r\n");
  }
  if (req.host.empty() && !req.authority.empty()) hw.AddHeader("Host", req.authority);
  char ip[INET6_ADDRSTRLEN];
  const size_t ip_len = FormatPeer(peer_, ip, sizeof(ip));
  hw.Add("X-Forwarded-For: ");
  if (has_xff) {
    for (const Header& h : req.headers) {
      if (h.kind != HeaderKind::kXForwardedFor || h.hop_by_hop || h.value.empty()) continue;
      hw.Add(h.value);
      hw.Add(", ");
    }
  }
  hw.Add(std::string_view(ip, ip_len));
  hw.Add("\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: ");
  hw.Add(listener_->port_text);
  hw.Add("\r\n");
  if (req.framing == BodyFraming::kChunked) hw.Add("Transfer-Encoding: chunked\r\n");
  if (req.upgrade) {
    for (const Header& h : req.headers) {
      if (h.kind == HeaderKind::kUpgrade) hw.AddHeader("Upgrade", h.value);
    }
    hw.Add("Connection: upgrade\r\n");
  } else if (req_http10_) {
    hw.Add("Connection: keep-alive\r\n");
  }
  hw.Add("\r\n");
  in_->start += head_size;
  if (!hw.ok()) {
    Respond(431, true);
    return;
  }

  req_body_.Start(req.framing, req.content_length);
  req_body_pending_ = req_body_.Consume(std::string_view(in_->begin_ptr(), in_->size()));
  if (req_body_.failed()) {
    Respond(400, true);
    return;
  }

  const TargetSnap* t = w_->PickTarget(snap, listener_->group, UINT32_MAX);
  if (t == nullptr) {
    Respond(503, has_body && !req_body_.done());
    return;
  }
  phase_ = Phase::kProxy;
  target_ = t;
  const bool replayable = req_idempotent_ && !has_body;
  Upstream* idle = w_->TakeIdleUpstream(t->id, replayable, &up_idle_for_);
  if (idle != nullptr) {
    up_ = idle;
    up_->owner = this;
    up_reused_ = true;
    up_connecting_ = false;
    w_->AddInFlight(t->id, 1);
    in_flight_counted_ = true;
    SetDeadline(snap.limits.upstream_response_timeout);
  } else {
    ConnectUpstream(*t);
  }
}

// ---------------------------------------------------------------------------------------------
// Upstream connection.

void ClientConnection::ConnectUpstream(const TargetSnap& target) {
  target_ = &target;
  up_reused_ = false;
  w_->AddInFlight(target.id, 1);
  in_flight_counted_ = true;
  const int fd = ::socket(target.endpoint.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    UpstreamFailed(false);
    return;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  up_ = new Upstream(fd);
  up_->target_id = target.id;
  up_->owner = this;
  const int r = ::connect(fd, reinterpret_cast<const sockaddr*>(&target.endpoint.addr),
                          target.endpoint.len);
  const int connect_errno = errno;
  SetDeadline(ws_->snap->limits.upstream_connect_timeout);
  // Registered after connect(): a socket not yet connecting polls as hung up.
  if ((r == 0 || connect_errno == EINPROGRESS) && !w_->loop().Add(fd, up_)) {
    UpstreamFailed(false);
    return;
  }
  if (r == 0) {
    up_connecting_ = false;
    up_->ready = Readiness(Readiness::kWritable);
    SetDeadline(ws_->snap->limits.upstream_response_timeout);
    return;  // Drive continues
  }
  if (connect_errno == EINPROGRESS) {
    up_connecting_ = true;
    WaitFor(Wait::kUpWrite);
    return;
  }
  w_->CountConnectError(target.id);
  UpstreamFailed(false);
}

void ClientConnection::OnUpstreamConnected() {
  int err = 0;
  socklen_t len = sizeof(err);
  if (::getsockopt(up_fd(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  up_connecting_ = false;
  if (err != 0) {
    w_->CountConnectError(target_->id);
    UpstreamFailed(false);
    Drive();
    return;
  }
  SetDeadline(ws_->snap->limits.upstream_response_timeout);
  Drive();
}

void ClientConnection::CloseUpstream() {
  if (up_ == nullptr) return;
  waiting_ &= static_cast<uint8_t>(~(Bit(static_cast<int>(Wait::kUpRead)) |
                                     Bit(static_cast<int>(Wait::kUpWrite))));
  w_->CloseUpstream(up_);
  up_ = nullptr;
  up_connecting_ = false;
}

// The upstream connection failed before any response byte (or timed out).
void ClientConnection::UpstreamFailed(bool timeout) {
  const bool was_reused = up_reused_;
  if (was_reused && !timeout && !resp_started_) {
    w_->LearnServerIdleClose(target_->id, up_idle_for_);
  }
  CloseUpstream();
  if (in_flight_counted_) {
    w_->AddInFlight(target_->id, -1);
    in_flight_counted_ = false;
  }
  // At most one retry, always on a fresh connection, never after upstream_response_timeout or a
  // response byte, and only when no byte of the request body has gone out:
  // - nothing was sent at all (the connect failed or timed out): any method, to another target
  //   where there is one;
  // - an idempotent request on a reused connection (the server may have closed it while it sat
  //   idle): to another target where there is one, else to the same one;
  // - an idempotent request on a fresh connection (the target reset or closed it: killed,
  //   crashing, overloaded): to another target only, as HAProxy's `retry-on conn-failure
  //   empty-response` and Envoy's `reset` do; the same target would most likely fail it again.
  const bool nothing_sent = up_bytes_sent_ == 0;
  const bool retry_ok = !retried_ && !timeout && req_body_sent_ == 0 &&
                        (nothing_sent || req_idempotent_) && !resp_started_;
  if (retry_ok) {
    const TargetSnap* t = w_->PickTarget(*ws_->snap, listener_->group, target_->id);
    const bool other_target_only = !nothing_sent && !was_reused;
    if (t != nullptr && !(other_target_only && t->id == target_->id)) {
      retried_ = true;
      w_->CountRetry();
      up_head_->start = 0;
      up_bytes_sent_ = 0;
      ConnectUpstream(*t);
      return;
    }
  }
  const bool body_done = req_body_.done();
  Respond(timeout ? 504 : 502, !body_done);
}

// ---------------------------------------------------------------------------------------------
// Proxying one exchange.

bool ClientConnection::DriveProxy() {
  bool progress = false;
  const int cfd = client_fd();
  // An action whose socket we already wait for is not tried: the wait's completion drives it.
  auto waiting = [this](Wait w) { return (waiting_ & Bit(static_cast<int>(w))) != 0; };

  // 1. Request bytes to the upstream.
  if (!own_response_ && up_ != nullptr && !up_connecting_) {
    const bool head_left = up_head_ != nullptr && !up_head_->empty() && !resp_started_;
    // More request body is needed from the client.
    const bool want_body = !head_left && req_body_pending_ == 0 && !req_body_.done() &&
                           !client_eof_ && !waiting(Wait::kClientRead);
    if ((head_left || req_body_pending_ > 0) && !waiting(Wait::kUpWrite)) {
      size_t body_sent = 0;
      const ssize_t n = SendHeadAndBody(up_fd(), head_left ? up_head_ : nullptr, in_,
                                        req_body_pending_, &body_sent);
      if (n > 0) {
        up_bytes_sent_ += static_cast<size_t>(n);
        req_body_pending_ -= body_sent;
        req_body_sent_ += body_sent;
        progress = true;
      } else if (n < 0 && WouldBlock(errno)) {
        Blocked(Wait::kUpWrite);
      } else {
        if (!resp_started_) {
          UpstreamFailed(false);
          return true;
        }
        // The upstream stopped reading the body but answered: finish the response, then close.
        close_after_ = true;
        req_body_pending_ = 0;
      }
    } else if (want_body && !IsReady(Wait::kClientRead)) {
      WaitFor(Wait::kClientRead);  // the socket was drained: wait for more request body
    } else if (want_body) {
      in_->MakeRoom();
      const size_t space = in_->space();
      const ssize_t n = ::recv(cfd, in_->data + in_->end, space, 0);
      if (n > 0) {
        const size_t got = static_cast<size_t>(n);
        if (got < space) Drained(Wait::kClientRead);
        const size_t body =
            req_body_.Consume(std::string_view(in_->data + in_->end, got));
        in_->end += got;
        req_body_pending_ += body;
        if (req_body_.failed()) {
          if (!resp_sent_any_) {
            CloseUpstream();
            Respond(400, true);
          } else {
            Close();
          }
          return true;
        }
        SetDeadline(ws_->snap->limits.upstream_response_timeout);
        progress = true;
      } else if (n == 0) {
        client_eof_ = true;  // the client gave up mid-body
        Close();
        return false;
      } else if (WouldBlock(errno)) {
        Blocked(Wait::kClientRead);
      } else {
        Close();
        return false;
      }
    }
  }

  // 2. Response bytes from the upstream (only when the last ones went out to the client). Right
  // after the request went out nothing can have arrived yet, so wait instead of trying a read.
  const bool want_response = !own_response_ && up_ != nullptr && !up_connecting_ &&
                             resp_body_pending_ == 0 && !waiting(Wait::kUpRead) &&
                             (client_head_ == nullptr || client_head_->empty()) &&
                             !(resp_head_done_ && resp_body_.done());
  if (just_sent_request_ && up_ != nullptr && !resp_started_) {
    just_sent_request_ = false;
    WaitFor(Wait::kUpRead);
  } else if (want_response && !IsReady(Wait::kUpRead)) {
    WaitFor(Wait::kUpRead);  // drained by the last read: wait for more of the response
  } else if (want_response) {
    if (resp_ == nullptr) resp_ = w_->buffers().Get();
    resp_->MakeRoom();
    const size_t space = resp_->space();
    const ssize_t n = ::recv(up_fd(), resp_->data + resp_->end, space, 0);
    if (n > 0) {
      if (static_cast<size_t>(n) < space) Drained(Wait::kUpRead);
      resp_started_ = true;
      resp_->end += static_cast<size_t>(n);
      SetDeadline(ws_->snap->limits.upstream_response_timeout);
      if (!resp_head_done_) {
        if (!ParseResponseHeads()) return true;
      } else {
        resp_body_pending_ =
            resp_body_.Consume(std::string_view(resp_->begin_ptr(), resp_->size()));
        if (resp_body_.failed()) {
          Close();  // a broken body cannot be reported any more
          return false;
        }
        if (resp_body_.done() && resp_body_pending_ < resp_->size()) {
          resp_keep_alive_ = false;  // bytes after the response: do not reuse
          resp_->end = resp_->start + resp_body_pending_;
        }
      }
      progress = true;
    } else if (n == 0) {
      up_eof_ = true;
      if (!resp_started_) {
        UpstreamFailed(false);
        return true;
      }
      if (resp_head_done_ && resp_body_.framing() == BodyFraming::kUntilClose) {
        resp_body_.FinishAtClose();
        resp_keep_alive_ = false;
        progress = true;
      } else {
        Close();  // truncated response: the client sees the connection close
        return false;
      }
    } else if (n < 0 && WouldBlock(errno)) {
      Blocked(Wait::kUpRead);
    } else if (n < 0) {
      if (!resp_started_) {
        UpstreamFailed(false);
        return true;
      }
      Close();
      return false;
    }
  }

  // 3. Response bytes to the client.
  const bool head_out = client_head_ != nullptr && !client_head_->empty();
  if ((head_out || resp_body_pending_ > 0) && !waiting(Wait::kClientWrite)) {
    size_t body_sent = 0;
    const ssize_t n =
        SendHeadAndBody(cfd, client_head_, resp_, resp_body_pending_, &body_sent);
    if (n > 0) {
      resp_sent_any_ = true;
      resp_body_pending_ -= body_sent;
      progress = true;
    } else if (n < 0 && WouldBlock(errno)) {
      Blocked(Wait::kClientWrite);
    } else {
      Close();
      return false;
    }
  }

  // 4. Done?
  const bool out_empty = (client_head_ == nullptr || client_head_->empty()) && resp_body_pending_ == 0;
  if (own_response_) {
    if (out_empty) {
      FinishRequest();
      return true;
    }
    return progress;
  }
  if (out_empty && resp_head_done_ && resp_body_.done()) {
    if (phase_ == Phase::kTunnel) return true;
    FinishRequest();
    return true;
  }
  return progress;
}

// Parses response heads in resp_: forwards 1xx interim responses, switches to a tunnel on 101,
// and prepares the final head. Returns false when it failed and already answered.
bool ClientConnection::ParseResponseHeads() {
  http::ResponseHead& resp = w_->scratch_response();
  while (true) {
    const std::string_view data(resp_->begin_ptr(), resp_->size());
    const http::ParseResult r = parser_.ParseResponse(data, req_is_head_ ? "HEAD" : "GET", &resp);
    if (r == http::ParseResult::kIncomplete) {
      if (resp_->space() == 0 && resp_->start == 0) {
        CloseUpstream();
        Respond(502, !req_body_.done());
        return false;
      }
      return true;
    }
    if (r == http::ParseResult::kError) {
      CloseUpstream();
      if (resp_sent_any_) {
        Close();
      } else {
        Respond(502, !req_body_.done());
      }
      return false;
    }
    parser_.Reset();
    if (up_head_ != nullptr) {
      w_->buffers().Put(up_head_);  // no retry once the upstream answered
      up_head_ = nullptr;
    }
    if (client_head_ == nullptr) client_head_ = w_->buffers().Get();
    if (client_head_->empty()) client_head_->start = client_head_->end = 0;
    HeadWriter hw(client_head_);
    const bool switching = resp.status == 101;
    if (resp.status >= 100 && resp.status < 200 && !switching) {
      // Interim response: forward to HTTP/1.1 clients, then read the final one.
      if (!req_http10_) hw.Add(std::string_view(resp_->begin_ptr(), resp.head_size));
      resp_->start += resp.head_size;
      if (!hw.ok()) {
        CloseUpstream();
        Close();
        return false;
      }
      if (resp_->empty()) return true;
      continue;
    }
    if (switching && !req_upgrade_) {
      CloseUpstream();
      Respond(502, true);
      return false;
    }
    resp_status_ = resp.status;
    resp_head_done_ = true;
    resp_keep_alive_ = resp.keep_alive;
    const bool until_close = resp.framing == BodyFraming::kUntilClose;
    if (until_close || !req_body_.done()) {
      // The response ends with the connection, or it came before the whole request body.
      close_after_ = close_after_ || until_close || !req_body_.done();
    }
    const bool client_keeps = req_keep_alive_ && !close_after_ && !w_->draining() && !switching;
    hw.Add(resp.version_minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ");
    char code[8];
    const auto cr = std::to_chars(code, code + sizeof(code), resp.status);
    hw.Add(std::string_view(code, static_cast<size_t>(cr.ptr - code)));
    hw.Add(" ");
    hw.Add(resp.reason);
    hw.Add("\r\n");
    for (const Header& h : resp.headers) {
      if (h.hop_by_hop && !(switching && h.kind == HeaderKind::kUpgrade)) continue;
      hw.Add(h.name);
      hw.Add(": ");
      hw.Add(h.value);
      hw.Add("\r\n");
    }
    if (resp.framing == BodyFraming::kChunked) hw.Add("Transfer-Encoding: chunked\r\n");
    if (switching) {
      hw.Add("Connection: upgrade\r\n");
    } else if (!client_keeps) {
      hw.Add("Connection: close\r\n");
      close_after_ = true;
    } else if (req_http10_) {
      hw.Add("Connection: keep-alive\r\n");
    }
    hw.Add("\r\n");
    resp_->start += resp.head_size;
    if (!hw.ok()) {
      CloseUpstream();
      client_head_->start = client_head_->end = 0;
      Respond(502, true);
      return false;
    }
    if (switching) {
      phase_ = Phase::kTunnel;
      resp_body_.Start(BodyFraming::kNone, 0);
      SetDeadline(ws_->snap->limits.client_idle_timeout);
      return true;
    }
    resp_body_.Start(resp.framing, resp.content_length);
    resp_body_pending_ = resp_body_.Consume(std::string_view(resp_->begin_ptr(), resp_->size()));
    if (resp_body_.failed()) {
      CloseUpstream();
      Close();
      return false;
    }
    if (resp_body_.done() && resp_body_pending_ < resp_->size()) {
      resp_keep_alive_ = false;
      resp_->end = resp_->start + resp_body_pending_;
    }
    return true;
  }
}

void ClientConnection::EndRequestAccounting(int status) {
  if (ws_ == nullptr) return;
  if (listener_ != nullptr) {
    const size_t li = static_cast<size_t>(listener_ - ws_->snap->listeners.data());
    RouteStats* rs = li < ws_->route_stats.size() ? ws_->route_stats[li] : nullptr;
    if (rs != nullptr) {
      const int cls = status / 100;
      ++rs->by_class[static_cast<size_t>(cls >= 0 && cls <= 5 ? cls : 0)];
      const double secs = std::chrono::duration<double>(Clock::now() - started_).count();
      size_t b = 0;
      while (b < kLatencyBuckets.size() && secs > kLatencyBuckets[b]) ++b;
      ++rs->latency[b];
      rs->latency_sum += secs;
      ++rs->latency_count;
    }
  }
  if (in_flight_counted_ && target_ != nullptr) {
    w_->AddInFlight(target_->id, -1);
    in_flight_counted_ = false;
  }
  w_->ReleaseSnapshot(ws_);
  ws_ = nullptr;
  listener_ = nullptr;
  target_ = nullptr;
}

void ClientConnection::FinishRequest() {
  EndRequestAccounting(resp_status_);
  if (up_ != nullptr) {
    const bool reusable = resp_keep_alive_ && req_body_.done() && req_body_pending_ == 0 &&
                          !up_eof_ && (resp_ == nullptr || resp_->empty()) && phase_ == Phase::kProxy &&
                          (waiting_ & (Bit(static_cast<int>(Wait::kUpRead)) |
                                       Bit(static_cast<int>(Wait::kUpWrite)))) == 0;
    if (reusable) {
      w_->ReleaseUpstream(up_);
      up_ = nullptr;
    } else {
      CloseUpstream();
    }
  }
  BufferPool& pool = w_->buffers();
  pool.Put(up_head_);
  up_head_ = nullptr;
  pool.Put(client_head_);
  client_head_ = nullptr;
  pool.Put(resp_);
  resp_ = nullptr;
  resp_body_pending_ = 0;
  own_response_ = false;
  parser_.Reset();
  if (client_eof_) {
    Close();
    return;
  }
  if (close_after_ || !req_keep_alive_ || w_->draining()) {
    Linger();
    return;
  }
  phase_ = Phase::kHead;
  SetDeadline(w_->current().limits.client_idle_timeout);
}

// Answers the current request with one of our own errors.
void ClientConnection::Respond(int status, bool close_after) {
  if (ws_ == nullptr) {
    ws_ = w_->AcquireSnapshot();
    started_ = Clock::now();
  }
  if (!req_body_.done()) close_after = true;
  close_after_ = close_after_ || close_after;
  if (in_ != nullptr) in_->start += req_body_pending_;  // an answered request's body is dropped
  req_body_pending_ = 0;
  resp_status_ = status;
  own_response_ = true;
  phase_ = Phase::kProxy;
  resp_body_pending_ = 0;
  if (client_head_ == nullptr) client_head_ = w_->buffers().Get();
  client_head_->start = client_head_->end = 0;
  HeadWriter hw(client_head_);
  char code[8];
  const auto cr = std::to_chars(code, code + sizeof(code), status);
  const std::string_view code_text(code, static_cast<size_t>(cr.ptr - code));
  const std::string_view reason = StatusText(status);
  char len[16];
  const auto lr = std::to_chars(len, len + sizeof(len), reason.size() + 1);
  hw.Add("HTTP/1.1 ");
  hw.Add(code_text);
  hw.Add(" ");
  hw.Add(reason);
  hw.Add("\r\nContent-Type: text/plain\r\nContent-Length: ");
  hw.Add(std::string_view(len, static_cast<size_t>(lr.ptr - len)));
  hw.Add(close_after_ || !req_keep_alive_ ? "\r\nConnection: close\r\n\r\n" : "\r\n\r\n");
  hw.Add(reason);
  hw.Add("\n");
  if (close_after_) {
    // Whatever the client sends after an error that closes is not read.
    CloseUpstream();
  }
}

// ---------------------------------------------------------------------------------------------
// Tunnel (after 101 Switching Protocols): bytes both ways until both sides closed.

// One direction of a tunnel: reads from `from` into the (empty) buffer; at EOF passes the
// half-close on to `to`. Returns false when the connection was closed.
bool ClientConnection::TunnelRead(int from, int to, Buffer** buf, bool* eof, Wait wait,
                                  bool* progress) {
  if (*buf == nullptr) *buf = w_->buffers().Get();
  (*buf)->start = (*buf)->end = 0;
  const ssize_t n = ::recv(from, (*buf)->data, Buffer::kSize, 0);
  if (n > 0) {
    (*buf)->end = static_cast<size_t>(n);
    *progress = true;
  } else if (n == 0) {
    *eof = true;
    ::shutdown(to, SHUT_WR);
    *progress = true;
  } else if (WouldBlock(errno)) {
    Blocked(wait);
  } else {
    Close();
    return false;
  }
  return true;
}

bool ClientConnection::DriveTunnel() {
  bool progress = false;
  // Leftover response head / bytes to the client first.
  const bool head_out = client_head_ != nullptr && !client_head_->empty();
  const size_t resp_bytes = resp_ != nullptr ? resp_->size() : 0;
  if (head_out || resp_bytes > 0) {
    size_t body_sent = 0;
    const ssize_t n = SendHeadAndBody(client_fd(), client_head_, resp_, resp_bytes, &body_sent);
    if (n > 0) {
      progress = true;
    } else if (n < 0 && WouldBlock(errno)) {
      Blocked(Wait::kClientWrite);
    } else {
      Close();
      return false;
    }
  } else if (!up_eof_) {
    if (!TunnelRead(up_fd(), client_fd(), &resp_, &up_eof_, Wait::kUpRead, &progress)) {
      return false;
    }
  }
  // Client to upstream.
  if (in_ != nullptr && !in_->empty()) {
    const ssize_t n = ::send(up_fd(), in_->begin_ptr(), in_->size(), MSG_NOSIGNAL);
    if (n > 0) {
      in_->start += static_cast<size_t>(n);
      progress = true;
    } else if (n < 0 && WouldBlock(errno)) {
      Blocked(Wait::kUpWrite);
    } else {
      Close();
      return false;
    }
  } else if (!client_eof_) {
    if (!TunnelRead(client_fd(), up_fd(), &in_, &client_eof_, Wait::kClientRead, &progress)) {
      return false;
    }
  }
  if (progress && ws_ != nullptr) SetDeadline(ws_->snap->limits.client_idle_timeout);
  if (client_eof_ && up_eof_ && (resp_ == nullptr || resp_->empty()) &&
      (in_ == nullptr || in_->empty())) {
    resp_status_ = 101;
    Close();
    return false;
  }
  return progress;
}

// ---------------------------------------------------------------------------------------------
// Lingering close: after the last response, send FIN and read (and drop) what the client still
// sends until it closes too. Closing a socket with unread bytes sends a reset, which can destroy
// the response before the client has read it.

constexpr auto kLingerTime = std::chrono::seconds(2);

void ClientConnection::Linger() {
  phase_ = Phase::kLinger;
  ::shutdown(client_fd(), SHUT_WR);
  w_->buffers().Put(in_);
  in_ = nullptr;
  deadline_ = w_->now() + kLingerTime;
}

bool ClientConnection::DriveLinger() {
  if (waiting_ & Bit(static_cast<int>(Wait::kClientRead))) return false;
  char sink[4096];
  for (int i = 0; i < 16; ++i) {
    const ssize_t n = ::recv(client_fd(), sink, sizeof(sink), 0);
    if (n > 0) continue;
    if (n < 0 && WouldBlock(errno)) {
      Blocked(Wait::kClientRead);
      return false;
    }
    Close();
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Timeouts, draining, closing.

void ClientConnection::OnTick(Clock::time_point now) {
  if (phase_ == Phase::kClosed || now < deadline_) return;
  switch (phase_) {
    case Phase::kHead:
      Close();  // idle or slow head: close silently, as the mature proxies do
      return;
    case Phase::kProxy:
      if (own_response_) {
        Close();
        return;
      }
      if (!resp_started_ && up_ != nullptr) {
        if (up_connecting_) {
          w_->CountConnectError(target_->id);
          UpstreamFailed(false);
        } else {
          UpstreamFailed(true);
        }
        Drive();
        return;
      }
      Close();
      return;
    case Phase::kTunnel:
    case Phase::kLinger:
      Close();
      return;
    case Phase::kClosed:
      return;
  }
}

void ClientConnection::Drain() {
  if (phase_ == Phase::kHead && (in_ == nullptr || in_->empty()) && !own_response_) {
    Close();
    return;
  }
  close_after_ = true;
}

void ClientConnection::AbortIfTarget(uint32_t target_id) {
  if (phase_ != Phase::kClosed && target_ != nullptr && target_->id == target_id &&
      up_ != nullptr) {
    Close();
  }
}

void ClientConnection::Close() {
  if (phase_ == Phase::kClosed) return;
  const int status = resp_status_ != 0 ? resp_status_ : 0;
  EndRequestAccounting(status);
  CloseUpstream();
  phase_ = Phase::kClosed;
  fd_.Reset();  // takes the socket out of the loop's epoll set
  BufferPool& pool = w_->buffers();
  pool.Put(in_);
  pool.Put(up_head_);
  pool.Put(resp_);
  pool.Put(client_head_);
  in_ = up_head_ = resp_ = client_head_ = nullptr;
  w_->Unlink(this);
  // Not now: Drive() may be on the stack, and events gathered earlier in this turn may name it.
  w_->loop().Defer([this] { delete this; });
}

}  // namespace bluegreen::proxy
