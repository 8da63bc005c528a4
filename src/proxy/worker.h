// Worker: one event-loop thread of the data plane. It owns its listening sockets (one
// SO_REUSEPORT socket per listener), every client connection it serves, its pools of idle
// upstream connections and its I/O buffers. Nothing of a worker is shared with another thread:
// the control thread talks to a worker only by posting work to its loop (Post), and the worker
// answers by posting back. The exceptions are Stop(), which may be called from any thread, and
// the connection count (load_), which the other workers read when they balance connections.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/http_parser.h"
#include "proxy/buffer_pool.h"
#include "proxy/event_loop.h"
#include "proxy/snapshot.h"

namespace bluegreen::proxy {

using Clock = std::chrono::steady_clock;

class ClientConnection;
struct Upstream;

// Latency buckets of bluegreen_request_duration_seconds (upper bounds, seconds).
inline constexpr std::array<double, 12> kLatencyBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0};

// Counters of one (listener, target group) route on one worker.
struct RouteStats {
  std::array<uint64_t, 6> by_class{};  // index = status / 100 (0 = no response)
  std::array<uint64_t, kLatencyBuckets.size() + 1> latency{};  // last = +Inf
  double latency_sum = 0;
  uint64_t latency_count = 0;
};

// What a worker reports when asked (copied on the worker's thread, read on the control thread).
struct WorkerReport {
  std::map<std::pair<std::string, std::string>, RouteStats> routes;  // (listener, group)
  std::map<uint32_t, int64_t> in_flight;                             // target id -> requests
  std::map<uint32_t, uint64_t> connect_errors;                       // target id -> count
  uint64_t retries = 0;
  uint64_t active_connections = 0;
  uint64_t accepted = 0;
  uint64_t idle_upstreams = 0;
};

// A worker's handle on a snapshot: the worker counts the requests that hold it, without atomics.
struct WorkerSnapshot {
  std::shared_ptr<const Snapshot> snap;
  std::vector<RouteStats*> route_stats;  // per listener index of snap
  int refs = 0;
};

class Worker {
 public:
  explicit Worker(int index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // The other workers, to which this one hands accepted connections when it holds more than they
  // do. Set before Start, never changed afterwards.
  void SetPeers(std::vector<Worker*> peers) { peers_ = std::move(peers); }
  // Starts the thread, pinned to `cpu` unless it is negative. The worker serves nothing until the
  // first Install.
  void Start(int cpu);
  // Asks the loop to finish and joins the thread. Safe from any thread but the worker's own.
  void Stop();

  // Runs fn on the worker's thread.
  void Post(std::function<void()> fn);

  // Called on the worker's thread (through Post): makes `snap` current; adopts the listening
  // sockets in `open` (listener id -> fd, ownership passes to the worker) and closes those in
  // `close`.
  void Install(std::shared_ptr<const Snapshot> snap, std::vector<std::pair<uint32_t, int>> open,
               std::vector<uint32_t> close);
  // Worker thread: closes the connections (idle and in flight) to a target whose
  // deregistration delay ended.
  void AbortTarget(uint32_t target_id);
  // Worker thread: stops accepting, closes idle connections, and marks the others to close after
  // their current response. `done` runs on the worker thread once no client connection is left.
  void Drain(std::function<void()> done);
  // Worker thread: copies the counters.
  WorkerReport Report() const;

  int index() const { return index_; }

  // --- for ClientConnection (worker thread only) ---
  EventLoop& loop() { return loop_; }
  BufferPool& buffers() { return buffers_; }
  // The current snapshot, held (counted) until ReleaseSnapshot.
  WorkerSnapshot* AcquireSnapshot();
  void ReleaseSnapshot(WorkerSnapshot* ws);
  // The current snapshot, for a look that does not outlive the current event.
  const Snapshot& current() const { return *current_->snap; }
  bool installed() const { return current_ != nullptr; }
  // Picks a routable target of `group` for a new request; skips `exclude` when another exists.
  const TargetSnap* PickTarget(const Snapshot& snap, int group, uint32_t exclude);
  // A pooled, still-open upstream connection to the target, or nullptr. A request that could not
  // be retried (`replayable` false) only gets a connection that has been idle briefly, so it is
  // not sent just as the server closes the connection for being idle. `idle_for` receives how
  // long the connection was idle.
  Upstream* TakeIdleUpstream(uint32_t target_id, bool replayable, Clock::duration* idle_for);
  // A reused connection that was idle for `idle_for` turned out to be closed by the server: the
  // worker learns that this target closes connections about that idle, and stops reusing
  // connections that are nearly as old.
  void LearnServerIdleClose(uint32_t target_id, Clock::duration idle_for);
  // Returns a reusable upstream connection to the pool (or closes it when the pool is full or the
  // target left the routing table).
  void ReleaseUpstream(Upstream* up);
  // Closes the connection now and frees it at the end of the loop's turn (events gathered for it
  // earlier in the turn may still name it).
  void CloseUpstream(Upstream* up);
  void AddInFlight(uint32_t target_id, int delta);
  void CountConnectError(uint32_t target_id) { ++connect_errors_[target_id]; }
  void CountRetry() { ++retries_; }
  void Unlink(ClientConnection* c);
  bool draining() const { return draining_; }
  // The loop thread has ended: work deferred by it and run afterwards does no more I/O.
  bool stopped() const { return stopped_; }
  http::RequestHead& scratch_request() { return scratch_request_; }
  http::ResponseHead& scratch_response() { return scratch_response_; }
  Clock::time_point now() const { return now_; }
  void UpdateNow() { now_ = Clock::now(); }

 private:
  struct Acceptor;
  struct TargetLocal {
    std::vector<Upstream*> idle;  // LIFO
    int64_t in_flight = 0;
    // Shortest idle time after which the server was seen to close a connection.
    Clock::duration server_idle_close = Clock::duration::max();
  };

  void OnAcceptReady(Acceptor* a);
  // Gives an accepted connection to the peer with the fewest connections when that peer has at
  // least two fewer than this worker; false if this worker keeps it.
  bool HandOff(int fd, uint32_t listener_id, const sockaddr_storage& peer, socklen_t len);
  // Starts serving an accepted connection on this worker's thread.
  void Adopt(int fd, uint32_t listener_id, const sockaddr_storage& peer, socklen_t len);
  void Tick();
  void CheckDrained();
  TargetLocal& Local(uint32_t target_id);
  bool TargetRoutable(uint32_t target_id) const;

  int index_;
  EventLoop loop_;
  std::thread thread_;
  BufferPool buffers_;
  Clock::time_point now_;

  WorkerSnapshot* current_ = nullptr;
  std::vector<std::unique_ptr<WorkerSnapshot>> retired_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<RouteStats>> route_stats_;
  std::vector<std::unique_ptr<Acceptor>> acceptors_;
  std::vector<TargetLocal> targets_;  // indexed by target id
  std::vector<uint32_t> rr_;          // round-robin cursor per group index of the current snapshot
  std::map<uint32_t, uint64_t> connect_errors_;
  uint64_t retries_ = 0;
  uint64_t accepted_ = 0;

  ClientConnection* conns_ = nullptr;  // intrusive list of live client connections
  uint64_t conn_count_ = 0;
  // conn_count_ plus the connections peers have handed to this worker that it has not adopted
  // yet. Written by this worker (-1 when a connection ends) and by a peer (+1 before it posts a
  // hand-off); read by peers to pick where a connection goes, and by CheckDrained.
  std::atomic<int64_t> load_{0};
  // Set by Drain; a peer that sees it keeps the connection it meant to hand over.
  std::atomic<bool> draining_shared_{false};
  // Set by the first Install; until then a peer hands this worker nothing (it has no snapshot
  // to serve a connection with).
  std::atomic<bool> installed_shared_{false};
  bool stopped_ = false;  // the loop thread has ended
  std::vector<Worker*> peers_;
  bool draining_ = false;
  std::function<void()> drained_;

  http::RequestHead scratch_request_;
  http::ResponseHead scratch_response_;
};

}  // namespace bluegreen::proxy
