#include "proxy/worker.h"

#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include <spdlog/spdlog.h>

#include "common/posix.h"
#include "proxy/connection.h"

namespace bluegreen::proxy {

constexpr auto kTickInterval = std::chrono::milliseconds(250);

// Linux's EEVDF scheduler (6.12 and later) lets a SCHED_OTHER thread ask for a shorter time slice
// through sched_setattr's sched_runtime: such a thread gets an earlier deadline and so runs soon
// after it wakes, instead of waiting out the slice of a CPU-bound neighbour (a load generator, a
// backend). Worth it for an event loop whose every wake-up is a request waiting. Older kernels
// ignore the value; failures are ignored.
namespace {
void RequestShortTimeSlice() {
  struct SchedAttr {  // the kernel's struct sched_attr (ABI v1)
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
  } attr{};
  attr.size = sizeof(attr);
  attr.sched_policy = SCHED_OTHER;
  attr.sched_runtime = 500'000;  // ns
  ::syscall(SYS_sched_setattr, 0, &attr, 0);
}
}  // namespace
constexpr size_t kMaxIdlePerTarget = 512;

// A listening socket of the worker.
struct Worker::Acceptor final : EventLoop::Handler {
  Acceptor(Worker* w, int f, uint32_t id) : worker(w), fd(f), listener_id(id) {}
  void OnEvents(uint32_t /*events*/) override {
    if (!closed()) worker->OnAcceptReady(this);
  }
  void Close() { fd.Reset(); }
  bool closed() const { return !fd.valid(); }
  Worker* worker;
  Fd fd;
  uint32_t listener_id;
  bool paused = false;  // accept failed (no descriptors): retried by the tick
  Clock::time_point warned_at{};
};

Worker::Worker(int index) : index_(index), buffers_(256), now_(Clock::now()) {}

Worker::~Worker() {
  Stop();
  for (auto& a : acceptors_) a->Close();
  loop_.RunDeferred();  // frees what was closed in the last turn
  while (conns_ != nullptr) {
    ClientConnection* c = conns_;
    Unlink(c);
    delete c;
  }
  for (TargetLocal& t : targets_) {
    for (Upstream* u : t.idle) delete u;
    t.idle.clear();
  }
}

void Worker::Start(int cpu) {
  thread_ = std::thread([this, cpu] {
    RequestShortTimeSlice();
    if (cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      if (const int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set); err != 0) {
        spdlog::warn("worker {}: cannot pin to CPU {}: {}", index_, cpu, ErrnoText(err));
      }
    }
    loop_.Run(kTickInterval, [this] { Tick(); });
  });
}

void Worker::Stop() {
  if (!thread_.joinable()) return;
  loop_.Stop();
  thread_.join();
  stopped_ = true;
}

void Worker::Post(std::function<void()> fn) { loop_.Post(std::move(fn)); }

void Worker::Install(std::shared_ptr<const Snapshot> snap,
                     std::vector<std::pair<uint32_t, int>> open, std::vector<uint32_t> close) {
  auto ws = std::make_unique<WorkerSnapshot>();
  ws->route_stats.reserve(snap->listeners.size());
  for (const ListenerSnap& l : snap->listeners) {
    const std::string group = l.group >= 0 ? snap->groups[static_cast<size_t>(l.group)].name : "";
    auto& slot = route_stats_[{l.name, group}];
    if (!slot) slot = std::make_unique<RouteStats>();
    ws->route_stats.push_back(slot.get());
  }
  ws->snap = std::move(snap);
  // retired_ owns every WorkerSnapshot still in use, the current one included.
  current_ = ws.get();
  installed_shared_.store(true, std::memory_order_release);
  retired_.push_back(std::move(ws));
  std::erase_if(retired_, [this](const std::unique_ptr<WorkerSnapshot>& w) {
    return w.get() != current_ && w->refs == 0;
  });
  rr_.assign(current_->snap->groups.size(), static_cast<uint32_t>(index_));

  for (uint32_t id : close) {
    for (auto it = acceptors_.begin(); it != acceptors_.end(); ++it) {
      if ((*it)->listener_id == id) {
        (*it)->Close();
        // Events gathered earlier in this turn may still name the acceptor.
        Acceptor* raw = it->release();
        acceptors_.erase(it);
        loop_.Defer([raw] { delete raw; });
        break;
      }
    }
  }
  for (auto [id, fd] : open) {
    auto a = std::make_unique<Acceptor>(this, fd, id);  // the control thread made it non-blocking
    // A draining worker accepts nothing more; the socket is only held until the worker ends.
    if (!draining_ && !loop_.Add(fd, a.get())) {
      spdlog::error("worker {}: cannot watch listener socket: {}", index_, ErrnoText(errno));
      continue;
    }
    acceptors_.push_back(std::move(a));
  }

  // Idle upstream connections to targets that left the routing table are closed.
  for (uint32_t id = 0; id < targets_.size(); ++id) {
    if (targets_[id].idle.empty() || TargetRoutable(id)) continue;
    for (Upstream* u : targets_[id].idle) CloseUpstream(u);
    targets_[id].idle.clear();
  }
}

bool Worker::TargetRoutable(uint32_t target_id) const {
  if (current_ == nullptr) return false;
  for (const TargetGroupSnap& g : current_->snap->groups) {
    for (const TargetSnap& t : g.routable) {
      if (t.id == target_id) return true;
    }
  }
  return false;
}

void Worker::OnAcceptReady(Acceptor* a) {
  UpdateNow();
  const int lfd = a->fd.get();
  for (int i = 0; i < 64; ++i) {
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    const int fd = ::accept4(lfd, reinterpret_cast<sockaddr*>(&peer), &len,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // the next edge wakes us
      if (errno == EINTR || errno == ECONNABORTED) continue;
      // Out of descriptors (or memory): the connections stay queued. Retrying at once would
      // spin, so the next tick retries (HAProxy pauses its listener the same way).
      if (now_ - a->warned_at >= std::chrono::seconds(10)) {
        spdlog::warn("worker {}: accept: {}; retrying every {} ms", index_, ErrnoText(errno),
                     kTickInterval.count());
        a->warned_at = now_;
      }
      a->paused = true;
      return;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (HandOff(fd, a->listener_id, peer, len)) continue;
    load_.fetch_add(1, std::memory_order_relaxed);
    Adopt(fd, a->listener_id, peer, len);
  }
  // More may be waiting (the listening socket is edge-triggered): go on after the other events.
  loop_.Defer([this, a] {
    if (!a->closed() && !draining_) OnAcceptReady(a);
  });
}

bool Worker::HandOff(int fd, uint32_t listener_id, const sockaddr_storage& peer, socklen_t len) {
  // SO_REUSEPORT spreads connections by a hash of their addresses, which leaves one worker with
  // noticeably more of a few dozen busy connections than another. As HAProxy does, a worker
  // passes a new connection to the least loaded one when the difference is two or more.
  Worker* best = nullptr;
  int64_t best_load = load_.load(std::memory_order_relaxed) - 1;
  for (Worker* p : peers_) {
    if (!p->installed_shared_.load(std::memory_order_acquire)) continue;  // cannot serve yet
    const int64_t l = p->load_.load(std::memory_order_relaxed);
    if (l < best_load) {
      best = p;
      best_load = l;
    }
  }
  if (best == nullptr) return false;
  // Counted first, checked second: Drain sets the flag first and reads the count second, so
  // either the peer sees this connection coming or this worker sees the peer draining.
  best->load_.fetch_add(1, std::memory_order_seq_cst);
  if (best->draining_shared_.load(std::memory_order_seq_cst)) {
    best->load_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  // The descriptor is closed if the hand-off never runs (the peer stopped first).
  best->loop_.Post([best, pending = Fd(fd), listener_id, peer, len]() mutable {
    best->Adopt(pending.Release(), listener_id, peer, len);
  });
  return true;
}

void Worker::Adopt(int fd, uint32_t listener_id, const sockaddr_storage& peer, socklen_t len) {
  auto* c = new ClientConnection(this, fd, listener_id, reinterpret_cast<const sockaddr*>(&peer),
                                 len);
  c->next_ = conns_;
  if (conns_ != nullptr) conns_->prev_ = c;
  conns_ = c;
  ++conn_count_;
  ++accepted_;
  c->Start();
}

void Worker::Unlink(ClientConnection* c) {
  if (c->prev_ != nullptr) {
    c->prev_->next_ = c->next_;
  } else if (conns_ == c) {
    conns_ = c->next_;
  }
  if (c->next_ != nullptr) c->next_->prev_ = c->prev_;
  c->prev_ = c->next_ = nullptr;
  --conn_count_;
  load_.fetch_sub(1, std::memory_order_relaxed);
  if (draining_) CheckDrained();
}

void Worker::Tick() {
  UpdateNow();
  const Clock::time_point now = now_;
  for (auto& a : acceptors_) {
    if (!a->paused) continue;
    a->paused = false;
    if (!a->closed() && !draining_) OnAcceptReady(a.get());
  }
  for (ClientConnection* c = conns_; c != nullptr;) {
    ClientConnection* next = c->next_;  // OnTick may unlink c
    c->OnTick(now);
    c = next;
  }
  if (current_ != nullptr) {
    const auto max_idle = current_->snap->limits.upstream_idle_timeout;
    for (TargetLocal& t : targets_) {
      // Oldest first: the vector is LIFO, so expired ones sit at the front.
      size_t expired = 0;
      while (expired < t.idle.size() && now - t.idle[expired]->idle_since >= max_idle) ++expired;
      for (size_t i = 0; i < expired; ++i) CloseUpstream(t.idle[i]);
      t.idle.erase(t.idle.begin(), t.idle.begin() + static_cast<long>(expired));
    }
  }
}

WorkerSnapshot* Worker::AcquireSnapshot() {
  ++current_->refs;
  return current_;
}

void Worker::ReleaseSnapshot(WorkerSnapshot* ws) {
  if (--ws->refs > 0 || ws == current_) return;
  std::erase_if(retired_, [ws](const std::unique_ptr<WorkerSnapshot>& w) { return w.get() == ws; });
}

Worker::TargetLocal& Worker::Local(uint32_t target_id) {
  if (target_id >= targets_.size()) targets_.resize(target_id + 1);
  return targets_[target_id];
}

const TargetSnap* Worker::PickTarget(const Snapshot& snap, int group, uint32_t exclude) {
  if (group < 0 || static_cast<size_t>(group) >= snap.groups.size()) return nullptr;
  const TargetGroupSnap& g = snap.groups[static_cast<size_t>(group)];
  const size_t n = g.routable.size();
  if (n == 0) return nullptr;
  if (n == 1) return &g.routable[0];  // excluded or not, it is the only one
  uint32_t& cursor = rr_[static_cast<size_t>(group)];
  if (g.algorithm == Algorithm::kLeastOutstandingRequests) {
    const TargetSnap* best = nullptr;
    int64_t best_load = 0;
    const size_t start = cursor++ % n;
    for (size_t i = 0; i < n; ++i) {
      const TargetSnap& t = g.routable[(start + i) % n];
      if (t.id == exclude) continue;
      const int64_t load = Local(t.id).in_flight;
      if (best == nullptr || load < best_load) {
        best = &t;
        best_load = load;
      }
    }
    return best;
  }
  for (size_t i = 0; i < n; ++i) {
    const TargetSnap& t = g.routable[cursor++ % n];
    if (t.id != exclude) return &t;
  }
  return &g.routable[0];
}

// Connections idle longer than this are not used for requests that cannot be retried.
constexpr auto kUnsafeReuseIdle = std::chrono::milliseconds(500);

Upstream* Worker::TakeIdleUpstream(uint32_t target_id, bool replayable,
                                   Clock::duration* idle_for) {
  TargetLocal& t = Local(target_id);
  // Connections this close to the server's observed idle timeout are about to be closed by it.
  const Clock::duration too_old = t.server_idle_close == Clock::duration::max()
                                      ? Clock::duration::max()
                                      : t.server_idle_close * 3 / 4;
  while (!t.idle.empty()) {
    Upstream* u = t.idle.back();
    const Clock::duration idle = now_ - u->idle_since;
    if (idle >= too_old) {
      t.idle.pop_back();
      CloseUpstream(u);
      continue;
    }
    // The newest connection is at the back: if it is too old for this request, all are.
    if (!replayable && idle >= kUnsafeReuseIdle) return nullptr;
    t.idle.pop_back();
    // Nothing arrived on the connection while it sat idle (no readiness event since its last
    // response was read to the end): it is reused without a system call. A request that could
    // not be retried still looks, in case the server's FIN arrived after this turn's events
    // were gathered.
    if (!u->ready.readable() && replayable) {
      *idle_for = idle;
      return u;
    }
    // A connection the server closed while it sat idle reads EOF (or data it should not have
    // sent): such a connection is not reused.
    char c;
    const ssize_t r = ::recv(u->fd.get(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      u->ready.ReadBlocked();
      *idle_for = idle;
      return u;
    }
    if (r == 0) LearnServerIdleClose(target_id, idle);
    CloseUpstream(u);
  }
  return nullptr;
}

void Worker::LearnServerIdleClose(uint32_t target_id, Clock::duration idle_for) {
  TargetLocal& t = Local(target_id);
  if (idle_for > std::chrono::milliseconds(10) && idle_for < t.server_idle_close) {
    t.server_idle_close = idle_for;
  }
}

void Worker::ReleaseUpstream(Upstream* up) {
  TargetLocal& t = Local(up->target_id);
  up->owner = nullptr;
  if (draining_ || t.idle.size() >= kMaxIdlePerTarget || !TargetRoutable(up->target_id)) {
    CloseUpstream(up);
    return;
  }
  up->idle_since = now_;
  t.idle.push_back(up);
}

void Worker::CloseUpstream(Upstream* up) {
  up->owner = nullptr;
  up->fd.Reset();
  loop_.Defer([up] { delete up; });
}

void Worker::AddInFlight(uint32_t target_id, int delta) { Local(target_id).in_flight += delta; }

void Worker::AbortTarget(uint32_t target_id) {
  for (ClientConnection* c = conns_; c != nullptr;) {
    ClientConnection* next = c->next_;
    c->AbortIfTarget(target_id);
    c = next;
  }
  if (target_id < targets_.size()) {
    for (Upstream* u : targets_[target_id].idle) CloseUpstream(u);
    targets_[target_id].idle.clear();
  }
}

void Worker::Drain(std::function<void()> done) {
  draining_ = true;
  draining_shared_.store(true, std::memory_order_seq_cst);
  drained_ = std::move(done);
  for (auto& a : acceptors_) a->Close();
  for (TargetLocal& t : targets_) {
    for (Upstream* u : t.idle) CloseUpstream(u);
    t.idle.clear();
  }
  for (ClientConnection* c = conns_; c != nullptr;) {
    ClientConnection* next = c->next_;
    c->Drain();
    c = next;
  }
  CheckDrained();
}

void Worker::CheckDrained() {
  // load_ also counts connections a peer is handing over: they are served before the worker ends.
  if (load_.load(std::memory_order_seq_cst) == 0 && drained_) {
    auto done = std::move(drained_);
    drained_ = nullptr;
    done();
  }
}

WorkerReport Worker::Report() const {
  WorkerReport r;
  for (const auto& [key, stats] : route_stats_) r.routes[key] = *stats;
  for (uint32_t id = 0; id < targets_.size(); ++id) {
    if (targets_[id].in_flight != 0) r.in_flight[id] = targets_[id].in_flight;
    r.idle_upstreams += targets_[id].idle.size();
  }
  r.connect_errors = connect_errors_;
  r.retries = retries_;
  r.active_connections = conn_count_;
  r.accepted = accepted_;
  return r;
}

}  // namespace bluegreen::proxy
