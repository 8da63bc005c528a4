// ClientConnection: one accepted client connection and the HTTP/1.1 exchanges on it, from the
// first byte of each request to the last byte of its response, including the upstream connection
// that serves it. It lives on one worker for its whole life and is not thread-safe.
//
// The connection is driven, not scripted: every readiness event calls Drive(), which looks at the
// state and does all the non-blocking I/O it can (read request, write upstream, read response,
// write client), then waits for whichever socket blocked. Idle connections hold no buffer.
#pragma once

#include <netinet/in.h>

#include <cstdint>

#include "common/http_parser.h"
#include "common/posix.h"
#include "proxy/event_loop.h"
#include "proxy/worker.h"

namespace bluegreen::proxy {

class ClientConnection;

// What the edge-triggered events of one socket have said and no call has contradicted since. A
// direction is ready from its event until a call finds it drained or full.
class Readiness {
 public:
  static constexpr uint8_t kReadable = 1;
  static constexpr uint8_t kWritable = 2;
  // The peer shut down or reset: sticky, since a read of the data before the FIN leaves the EOF
  // to read and no new edge will announce it.
  static constexpr uint8_t kPeerClosed = 4;
  // TCP urgent data arrived: a read stops short in front of it, so a short read does not mean
  // drained until a read found nothing.
  static constexpr uint8_t kUrgent = 8;

  explicit Readiness(uint8_t bits = 0) : bits_(bits) {}
  // Records an event's bits (EPOLLIN, EPOLLOUT, ...).
  void Add(uint32_t events);
  bool readable() const { return (bits_ & (kReadable | kPeerClosed)) != 0; }
  bool writable() const { return (bits_ & kWritable) != 0; }
  // A read or write would block (EAGAIN).
  void ReadBlocked() { bits_ &= static_cast<uint8_t>(~(kReadable | kUrgent)); }
  void WriteBlocked() { bits_ &= static_cast<uint8_t>(~kWritable); }
  // A read returned less than it asked for: drained, unless urgent data cut it short.
  void ReadShort() {
    if ((bits_ & kUrgent) == 0) bits_ &= static_cast<uint8_t>(~kReadable);
  }

 private:
  uint8_t bits_;
};

// An upstream (backend) connection: owned by a ClientConnection while it serves a request, else
// idle in its worker's pool. Registered with the worker's loop once, when it connects; its
// events go to its owner, or only mark it while it is idle.
struct Upstream final : EventLoop::Handler {
  explicit Upstream(int f) : fd(f) {}
  void Note(uint32_t events) override;
  void OnEvents(uint32_t events) override;

  Fd fd;
  uint32_t target_id = 0;
  Clock::time_point idle_since{};
  ClientConnection* owner = nullptr;  // null while idle in the pool
  Readiness ready;
};

class ClientConnection final : public EventLoop::Handler {
 public:
  ClientConnection(Worker* worker, int fd, uint32_t listener_id, const sockaddr* peer,
                   socklen_t peer_len);
  ~ClientConnection();
  ClientConnection(const ClientConnection&) = delete;
  ClientConnection& operator=(const ClientConnection&) = delete;

  void Start();
  // Called by the worker's tick with a coarse clock.
  void OnTick(Clock::time_point now);
  // The worker is draining: close now if idle, else after the current response.
  void Drain();
  // Closes the connection if its current request is served by `target_id`.
  void AbortIfTarget(uint32_t target_id);

  // Events of the client socket, and of the upstream connection it owns.
  void OnEvents(uint32_t events) override;
  void OnUpstreamEvents(uint32_t events);

  // Intrusive list links of the worker.
  ClientConnection* prev_ = nullptr;
  ClientConnection* next_ = nullptr;

 private:
  enum class Phase : uint8_t { kHead, kProxy, kTunnel, kLinger, kClosed };
  enum class Wait : uint8_t { kClientRead, kClientWrite, kUpRead, kUpWrite };

  void Drive();
  bool DriveHead();      // returns true if progress was made
  bool DriveProxy();
  bool DriveTunnel();
  bool TunnelRead(int from, int to, Buffer** buf, bool* eof, Wait wait, bool* progress);
  bool DriveLinger();
  void Linger();
  void Dispatch(const http::RequestHead& req);
  void ConnectUpstream(const TargetSnap& target);
  void OnUpstreamConnected();
  void UpstreamFailed(bool timeout);
  bool ParseResponseHeads();  // false on error (already handled)
  void FinishRequest();
  void Respond(int status, bool close_after);
  void Close();
  void CloseUpstream();
  // Waits for the next readiness event of w's socket and direction. If an event already said
  // the socket is ready (and nothing since found it not ready), no new edge will come: Drive
  // runs again at the end of the loop's turn instead.
  void WaitFor(Wait w);
  // Drives the connection again at the end of the loop's turn.
  void ScheduleRedrive();
  // A call on w's socket would block (EAGAIN, or a read that drained it): wait for the next edge.
  void Blocked(Wait w) {
    NotReady(w);
    WaitFor(w);
  }
  bool IsReady(Wait w);
  // A call found the socket drained (EAGAIN) or full.
  void NotReady(Wait w);
  // A read (w is kClientRead or kUpRead) returned less than it asked for.
  void Drained(Wait w);
  // The readiness of w's socket: the client's, or the upstream's (null without one).
  Readiness* ReadinessOf(Wait w);
  // Readiness `bits` (one per Wait) arrived: resumes Drive when it waits for one of them.
  void OnReady(uint8_t bits);
  int client_fd();
  int up_fd();
  void SetDeadline(Clock::duration d);
  void EndRequestAccounting(int status);

  Worker* w_;
  Fd fd_;
  uint32_t listener_id_;
  sockaddr_in6 peer_{};  // IPv4 peers are stored as sockaddr_in in the same bytes

  Phase phase_ = Phase::kHead;
  uint8_t waiting_ = 0;  // bit per Wait
  // The client socket's (the upstream's is in Upstream). Unknown at first, so the first calls
  // are tried.
  Readiness client_ready_{Readiness::kReadable | Readiness::kWritable};
  bool redrive_pending_ = false;  // a Drive is deferred to the end of the turn
  bool drive_again_ = false;      // ... and it must run even if no direction is ready
  Clock::time_point deadline_{};

  Buffer* in_ = nullptr;           // client -> proxy
  Buffer* up_head_ = nullptr;      // rewritten request head, kept until the first response byte
  Buffer* resp_ = nullptr;         // upstream -> proxy
  Buffer* client_head_ = nullptr;  // rewritten response head or our own error response

  http::HeadParser parser_;
  http::BodyDecoder req_body_;
  http::BodyDecoder resp_body_;

  // The request being served.
  WorkerSnapshot* ws_ = nullptr;
  const ListenerSnap* listener_ = nullptr;
  const TargetSnap* target_ = nullptr;
  Upstream* up_ = nullptr;
  Clock::time_point started_{};
  Clock::duration up_idle_for_{};  // how long the reused upstream connection had been idle
  size_t req_body_pending_ = 0;    // body bytes at in_->start not yet sent upstream
  uint64_t req_body_sent_ = 0;
  uint64_t up_bytes_sent_ = 0;
  size_t resp_body_pending_ = 0;   // response bytes at resp_->start not yet sent to the client
  int resp_status_ = 0;
  bool up_connecting_ = false;
  bool up_reused_ = false;
  bool retried_ = false;
  bool resp_started_ = false;      // a response byte came from upstream
  bool resp_head_done_ = false;
  bool resp_sent_any_ = false;     // a response byte went to the client
  bool resp_keep_alive_ = false;
  bool req_keep_alive_ = true;
  bool req_is_head_ = false;
  bool req_idempotent_ = false;
  bool req_upgrade_ = false;
  bool req_http10_ = false;
  bool close_after_ = false;       // close the client connection once the response is written
  bool own_response_ = false;      // client_head_ holds our own error response
  bool client_eof_ = false;
  bool up_eof_ = false;
  bool in_flight_counted_ = false;
  bool just_sent_request_ = false;  // the last write emptied the request: no response yet
};

}  // namespace bluegreen::proxy
