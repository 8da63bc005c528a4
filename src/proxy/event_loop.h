// EventLoop: the event loop of one proxy worker thread. An epoll instance in which every socket is
// registered once, edge-triggered, for input, output and peer shutdown; a queue that other
// threads post work to; a list of work deferred to the end of the current turn; and a coarse
// periodic tick.
//
// Why not Asio here: an Asio readiness wait (`async_wait`) re-arms its descriptor with an
// epoll_ctl call every time, one or two system calls per request that HAProxy does not make. With
// edge-triggered registration and a readiness flag per direction kept by the connection, a
// socket costs one epoll_ctl in its whole life (and none at close: closing the last descriptor of
// a socket takes it out of the epoll set).
//
// Lifetime rule: an object registered with Add must stay allocated until the end of the turn in
// which its descriptor is closed, because events gathered before the close may still name it.
// Delete such objects through Defer, and ignore events that arrive after the close.
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace bluegreen::proxy {

class EventLoop {
 public:
  using Clock = std::chrono::steady_clock;

  // Receives the epoll event bits (EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLHUP, EPOLLERR) of one
  // registered descriptor.
  class Handler {
   public:
    // Called for every event of a batch before any OnEvents of the batch: records readiness that
    // a handler running earlier in the same batch may ask about (is this pooled connection still
    // quiet?). Must not do anything else.
    virtual void Note(uint32_t /*events*/) {}
    virtual void OnEvents(uint32_t events) = 0;

   protected:
    ~Handler() = default;
  };

  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // What sockets are registered for: input (and urgent data), output, peer shutdown.
  static constexpr uint32_t kSocketEvents = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP;

  // Loop thread (or before Run): registers fd, edge-triggered, for `events`. The events already
  // pending are reported by the next wait. Returns false (errno set) on failure.
  bool Add(int fd, Handler* handler, uint32_t events = kSocketEvents);

  // Any thread: runs fn on the loop thread, in posting order. Work still queued when the loop is
  // destroyed is destroyed without running (so what it owns is released).
  template <typename F>
  void Post(F&& fn) {
    PostTask(std::make_unique<TaskImpl<std::decay_t<F>>>(std::forward<F>(fn)));
  }

  // Loop thread: runs fn after the events of the current turn, before the loop waits again.
  // Work deferred while deferred work runs waits for the next turn.
  void Defer(std::function<void()> fn) { deferred_.push_back(std::move(fn)); }

  // Runs the loop on the calling thread until Stop. `on_tick` runs about every `interval`.
  void Run(Clock::duration interval, const std::function<void()>& on_tick);
  // Any thread: makes Run return soon.
  void Stop();
  // After Run returned: runs the deferred work left (deletions of closed objects).
  void RunDeferred();

 private:
  struct Task {
    virtual ~Task() = default;
    virtual void Run() = 0;
  };
  template <typename F>
  struct TaskImpl final : Task {
    explicit TaskImpl(F f) : fn(std::move(f)) {}
    void Run() override { fn(); }
    F fn;
  };

  // Wakes the loop through the eventfd; runs the posted tasks.
  class Waker final : public Handler {
   public:
    explicit Waker(EventLoop* loop) : loop_(loop) {}
    void OnEvents(uint32_t events) override;

   private:
    EventLoop* loop_;
  };

  void PostTask(std::unique_ptr<Task> task);
  void RunPosted();

  int epoll_fd_ = -1;
  int event_fd_ = -1;
  Waker waker_{this};
  std::atomic<bool> stop_{false};

  std::mutex mu_;
  std::vector<std::unique_ptr<Task>> posted_;  // guarded by mu_

  std::vector<std::function<void()>> deferred_;
};

}  // namespace bluegreen::proxy
