#include "proxy/health_checker.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "common/http_parser.h"

namespace bluegreen::proxy {

namespace asio = boost::asio;

struct HealthChecker::Target {
  explicit Target(asio::io_context& io) : timer(io) {}
  CheckedTarget cfg;
  asio::steady_timer timer;
  Health health = Health::kInitial;
  int successes = 0;  // consecutive
  int failures = 0;   // consecutive
  bool removed = false;
  uint64_t round = 0;  // bumps per check, to ignore late results
};

namespace {

// One probe: connect, send a GET, read the status line, decide.
struct Probe : std::enable_shared_from_this<Probe> {
  Probe(asio::io_context& io, std::function<void(bool)> done)
      : sock(io), timer(io), done(std::move(done)) {}

  void Start(const CheckedTarget& t) {
    request = "GET " + t.check.path + " HTTP/1.1\r\nHost: " + t.endpoint.ToString() +
              "\r\nUser-Agent: bluegreen-health-check\r\nConnection: close\r\n\r\n";
    matcher = t.check.matcher;
    auto self = shared_from_this();
    timer.expires_after(t.check.timeout);
    timer.async_wait([self](const boost::system::error_code& ec) {
      if (!ec) self->Finish(false);
    });
    asio::ip::tcp::endpoint ep;
    std::memcpy(ep.data(), &t.endpoint.addr, t.endpoint.len);
    ep.resize(t.endpoint.len);
    sock.async_connect(ep, [self](const boost::system::error_code& ec) {
      if (ec) return self->Finish(false);
      asio::async_write(self->sock, asio::buffer(self->request),
                        [self](const boost::system::error_code& ec2, size_t) {
                          if (ec2) return self->Finish(false);
                          self->Read();
                        });
    });
  }

  void Read() {
    auto self = shared_from_this();
    if (buf.size() - used < 1024) buf.resize(buf.size() + 4096);
    sock.async_read_some(asio::buffer(buf.data() + used, buf.size() - used),
                         [self](const boost::system::error_code& ec, size_t n) {
                           if (ec) return self->Finish(false);
                           self->used += n;
                           http::ResponseHead head;
                           const auto r = self->parser.ParseResponse(
                               std::string_view(self->buf.data(), self->used), "GET", &head);
                           if (r == http::ParseResult::kComplete) {
                             return self->Finish(self->matcher.Matches(head.status));
                           }
                           if (r == http::ParseResult::kError || self->used > 64 * 1024) {
                             return self->Finish(false);
                           }
                           self->Read();
                         });
  }

  void Finish(bool ok) {
    if (finished) return;
    finished = true;
    boost::system::error_code ec;
    timer.cancel();
    sock.close(ec);
    done(ok);
  }

  asio::ip::tcp::socket sock;
  asio::steady_timer timer;
  std::function<void(bool)> done;
  std::string request;
  StatusMatcher matcher;
  std::vector<char> buf;
  size_t used = 0;
  http::HeadParser parser;
  bool finished = false;
};

}  // namespace

HealthChecker::HealthChecker(asio::io_context& io, OnChange on_change)
    : io_(io), on_change_(std::move(on_change)), alive_(std::make_shared<bool>(true)) {}

HealthChecker::~HealthChecker() { Stop(); }

void HealthChecker::Stop() {
  *alive_ = false;
  for (auto& [id, t] : targets_) {
    t->removed = true;
    t->timer.cancel();
  }
  targets_.clear();
}

void HealthChecker::SetTargets(const std::vector<CheckedTarget>& targets) {
  std::map<uint32_t, std::shared_ptr<Target>> next;
  for (const CheckedTarget& c : targets) {
    auto it = targets_.find(c.id);
    if (it != targets_.end()) {
      it->second->cfg = c;
      next[c.id] = it->second;
      targets_.erase(it);
      continue;
    }
    auto t = std::make_shared<Target>(io_);
    t->cfg = c;
    next[c.id] = t;
    Schedule(t, std::chrono::milliseconds(0));
  }
  for (auto& [id, t] : targets_) {
    t->removed = true;
    t->timer.cancel();
  }
  targets_ = std::move(next);
}

Health HealthChecker::health(uint32_t id) const {
  auto it = targets_.find(id);
  return it == targets_.end() ? Health::kInitial : it->second->health;
}

void HealthChecker::Seed(uint32_t id, Health health) {
  auto it = targets_.find(id);
  if (it != targets_.end() && it->second->health == Health::kInitial) it->second->health = health;
}

bool HealthChecker::AllChecked() const {
  for (const auto& [id, t] : targets_) {
    if (t->round == 0) return false;
  }
  return true;
}

void HealthChecker::Schedule(const std::shared_ptr<Target>& t, std::chrono::milliseconds delay) {
  auto alive = alive_;
  t->timer.expires_after(delay);
  t->timer.async_wait([this, alive, t](const boost::system::error_code& ec) {
    if (ec || !*alive || t->removed) return;
    RunCheck(t);
  });
}

void HealthChecker::RunCheck(const std::shared_ptr<Target>& t) {
  auto alive = alive_;
  auto probe = std::make_shared<Probe>(io_, [this, alive, t](bool ok) {
    if (!*alive || t->removed) return;
    Record(t, ok);
    Schedule(t, t->cfg.check.interval);
  });
  probe->Start(t->cfg);
}

void HealthChecker::Record(const std::shared_ptr<Target>& t, bool ok) {
  const bool first = t->round == 0;
  ++t->round;
  if (ok) {
    ++t->successes;
    t->failures = 0;
  } else {
    ++t->failures;
    t->successes = 0;
  }
  Health next = t->health;
  if (first && t->health == Health::kInitial) {
    next = ok ? Health::kHealthy : Health::kUnhealthy;
  } else if (ok && t->successes >= t->cfg.check.healthy_threshold) {
    next = Health::kHealthy;
  } else if (!ok && t->failures >= t->cfg.check.unhealthy_threshold) {
    next = Health::kUnhealthy;
  }
  if (next != t->health) {
    t->health = next;
    on_change_(t->cfg.id, next);
  } else if (first) {
    on_change_(t->cfg.id, next);  // the first result is news even if it matches a seeded state
  }
}

}  // namespace bluegreen::proxy
