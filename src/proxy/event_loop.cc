#include "proxy/event_loop.h"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>

#include "common/posix.h"

namespace bluegreen::proxy {

EventLoop::EventLoop() {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  // Input only: reading the eventfd makes it writable again, which would be one more edge.
  if (epoll_fd_ < 0 || event_fd_ < 0 || !Add(event_fd_, &waker_, EPOLLIN)) {
    // Without them a worker cannot run at all; this only happens when descriptors ran out at start.
    spdlog::critical("event loop: cannot create epoll/eventfd: {}", ErrnoText(errno));
    std::abort();
  }
}

EventLoop::~EventLoop() {
  ::close(event_fd_);
  ::close(epoll_fd_);
}

bool EventLoop::Add(int fd, Handler* handler, uint32_t events) {
  epoll_event ev{};
  ev.events = events | EPOLLET;
  ev.data.ptr = handler;
  return ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) == 0;
}

void EventLoop::PostTask(std::unique_ptr<Task> task) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake = posted_.empty();
    posted_.push_back(std::move(task));
  }
  // Only the post that finds the queue empty writes: the loop empties the queue after it has
  // read the eventfd, so a later post either is taken along or writes again.
  if (wake) {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(event_fd_, &one, sizeof(one));
  }
}

void EventLoop::Waker::OnEvents(uint32_t /*events*/) {
  uint64_t count;
  [[maybe_unused]] const ssize_t n = ::read(loop_->event_fd_, &count, sizeof(count));
  loop_->RunPosted();
}

void EventLoop::RunPosted() {
  std::vector<std::unique_ptr<Task>> tasks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks.swap(posted_);
  }
  for (auto& t : tasks) t->Run();
}

void EventLoop::Stop() {
  stop_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(event_fd_, &one, sizeof(one));
}

void EventLoop::RunDeferred() {
  std::vector<std::function<void()>> run;
  run.swap(deferred_);
  for (auto& fn : run) fn();
}

void EventLoop::Run(Clock::duration interval, const std::function<void()>& on_tick) {
  std::array<epoll_event, 256> events;
  Clock::time_point next_tick = Clock::now() + interval;
  while (!stop_.load(std::memory_order_acquire)) {
    int timeout_ms = 0;
    if (deferred_.empty()) {
      const auto left = next_tick - Clock::now();
      timeout_ms =
          left <= Clock::duration::zero()
              ? 0
              : static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
    }
    const int n =
        ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), timeout_ms);
    if (n < 0 && errno != EINTR) {
      spdlog::critical("event loop: epoll_wait: {}", ErrnoText(errno));
      std::abort();
    }
    for (int i = 0; i < n; ++i) {
      static_cast<Handler*>(events[static_cast<size_t>(i)].data.ptr)
          ->Note(events[static_cast<size_t>(i)].events);
    }
    for (int i = 0; i < n; ++i) {
      static_cast<Handler*>(events[static_cast<size_t>(i)].data.ptr)
          ->OnEvents(events[static_cast<size_t>(i)].events);
    }
    RunDeferred();
    if (Clock::now() >= next_tick) {
      on_tick();
      next_tick = Clock::now() + interval;
    }
  }
}

}  // namespace bluegreen::proxy
