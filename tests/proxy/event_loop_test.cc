// EventLoop, the proxy worker's loop: posting from other threads, edge-triggered events on real
// sockets, deferred work, the tick, and what happens to posted work that never ran.
#include "proxy/event_loop.h"

#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "common/posix.h"

namespace bluegreen::proxy {
namespace {

using namespace std::chrono_literals;

// Runs a loop on a thread of its own for the test's lifetime.
class LoopThread {
 public:
  explicit LoopThread(
      EventLoop::Clock::duration tick = 1h, std::function<void()> on_tick = [] {})
      : thread_([this, tick, on_tick] { loop.Run(tick, on_tick); }) {}
  ~LoopThread() {
    loop.Stop();
    thread_.join();
  }
  // Runs fn on the loop thread and waits for it.
  void RunOnLoop(const std::function<void()>& fn) {
    std::atomic<bool> done{false};
    loop.Post([&] {
      fn();
      done = true;
    });
    WaitUntil([&] { return done.load(); });
  }
  static bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds limit = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(1ms);
    }
    return true;
  }

  EventLoop loop;

 private:
  std::thread thread_;
};

// Counts the events of one descriptor; only touched on the loop thread, read after a RunOnLoop.
struct Recorder final : EventLoop::Handler {
  void OnEvents(uint32_t events) override {
    ++calls;
    if (events & EPOLLIN) ++inputs;
    if (events & EPOLLRDHUP) ++peer_shutdowns;
  }
  int calls = 0;
  int inputs = 0;
  int peer_shutdowns = 0;
};

TEST(EventLoopTest, PostedWorkRunsOnTheLoopThreadInOrder) {
  LoopThread t;
  std::vector<int> order;
  std::atomic<std::thread::id> ran_on{};
  std::thread poster([&] {
    for (int i = 0; i < 1000; ++i) {
      t.loop.Post([&order, &ran_on, i] {
        order.push_back(i);
        ran_on = std::this_thread::get_id();
      });
    }
  });
  poster.join();
  std::thread::id loop_id;
  t.RunOnLoop([&] { loop_id = std::this_thread::get_id(); });
  ASSERT_EQ(order.size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(order[static_cast<size_t>(i)], i);
  EXPECT_EQ(ran_on.load(), loop_id);
  EXPECT_NE(loop_id, std::this_thread::get_id());
}

// Registered once, edge-triggered: one event per arrival, none while nothing new arrives, and the
// peer's shutdown is reported.
TEST(EventLoopTest, ReportsEachNewArrivalOnceAndThePeersShutdown) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  Fd ours(sv[0]), peer(sv[1]);
  LoopThread t;
  Recorder rec;
  bool added = false;
  t.RunOnLoop([&] { added = t.loop.Add(ours.get(), &rec); });
  ASSERT_TRUE(added);

  auto inputs = [&] {
    int n = 0;
    t.RunOnLoop([&] { n = rec.inputs; });
    return n;
  };
  ASSERT_EQ(::write(peer.get(), "a", 1), 1);
  ASSERT_TRUE(LoopThread::WaitUntil([&] { return inputs() == 1; }));
  // Nothing read, nothing new: no second event (level-triggered would report it again).
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(inputs(), 1);
  ASSERT_EQ(::write(peer.get(), "b", 1), 1);
  ASSERT_TRUE(LoopThread::WaitUntil([&] { return inputs() == 2; }));

  ASSERT_EQ(::shutdown(peer.get(), SHUT_WR), 0);
  int shutdowns = 0;
  ASSERT_TRUE(LoopThread::WaitUntil([&] {
    t.RunOnLoop([&] { shutdowns = rec.peer_shutdowns; });
    return shutdowns == 1;
  }));
  // Closing our descriptor takes it out of the epoll set: the peer's close reports nothing more.
  int calls = 0;
  t.RunOnLoop([&] {
    ours.Reset();
    calls = rec.calls;
  });
  peer.Reset();
  std::this_thread::sleep_for(50ms);
  int calls_after = 0;
  t.RunOnLoop([&] { calls_after = rec.calls; });
  EXPECT_EQ(calls_after, calls);
}

// Deferred work runs after the current turn, and work deferred by deferred work waits for the
// next turn instead of keeping the loop from waiting (a deferred retry cannot starve the loop).
TEST(EventLoopTest, DeferredWorkRunsAfterTheTurnAndCannotStarveTheLoop) {
  LoopThread t;
  std::vector<std::string> log;
  std::atomic<int> rearms{0};
  t.RunOnLoop([&] {
    t.loop.Defer([&] { log.push_back("deferred"); });
    log.push_back("posted");
  });
  std::function<void()> again = [&] {
    if (++rearms < 100) t.loop.Defer(again);
  };
  t.RunOnLoop([&] { t.loop.Defer(again); });
  ASSERT_TRUE(LoopThread::WaitUntil([&] { return rearms.load() == 100; }));
  // Posted work still ran while the chain re-deferred itself.
  bool ran = false;
  t.RunOnLoop([&] { ran = true; });
  EXPECT_TRUE(ran);
  std::vector<std::string> seen;
  t.RunOnLoop([&] { seen = log; });
  EXPECT_EQ(seen, (std::vector<std::string>{"posted", "deferred"}));
}

TEST(EventLoopTest, TicksWhileIdle) {
  std::atomic<int> ticks{0};
  LoopThread t(20ms, [&] { ++ticks; });
  EXPECT_TRUE(LoopThread::WaitUntil([&] { return ticks.load() >= 5; }, 5s)) << ticks.load();
}

// Work posted but never run (the loop stopped first) is destroyed with the loop, so what it owns
// is released: here a descriptor, whose peer then reads EOF.
TEST(EventLoopTest, WorkThatNeverRanReleasesWhatItOwns) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  Fd reader(sv[0]);
  {
    EventLoop loop;  // never run
    loop.Post([owned = Fd(sv[1])] { FAIL() << "ran"; });
  }
  char c;
  EXPECT_EQ(::read(reader.get(), &c, 1), 0);  // EOF: the write end was closed
}

}  // namespace
}  // namespace bluegreen::proxy
