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

#include <boost/asio/ip/tcp.hpp>

#include "common/http_parser.h"
#include "proxy/worker.h"

namespace bluegreen::proxy {

// An upstream (backend) connection: owned by a ClientConnection while it serves a request, else
// idle in its worker's pool.
struct Upstream {
  explicit Upstream(asio::io_context& io) : sock(io) {}
  asio::ip::tcp::socket sock;
  uint32_t target_id = 0;
  Clock::time_point idle_since{};
};

class ClientConnection {
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
  void WaitFor(Wait w);
  void OnWaitDone(Wait w, uint64_t up_seq, const boost::system::error_code& ec);
  int client_fd();
  int up_fd();
  void SetDeadline(Clock::duration d);
  void EndRequestAccounting(int status);

  Worker* w_;
  asio::ip::tcp::socket sock_;
  uint32_t listener_id_;
  sockaddr_in6 peer_{};  // IPv4 peers are stored as sockaddr_in in the same bytes

  Phase phase_ = Phase::kHead;
  int pending_ = 0;         // outstanding async waits
  uint8_t waiting_ = 0;     // bit per Wait
  uint64_t up_seq_ = 0;     // bumps when up_ changes, to ignore stale upstream events
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
