// HealthChecker: active HTTP health checks of every target, the way an Application Load Balancer
// does them (path, interval, timeout, healthy/unhealthy thresholds, status matcher). A target's
// first check runs as soon as it is added; one result decides its first state, after that the
// thresholds apply. Runs on the control thread's io_context; not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "proxy/config.h"
#include "proxy/snapshot.h"

namespace bluegreen::proxy {

struct CheckedTarget {
  uint32_t id = 0;
  Endpoint endpoint;
  HealthCheckConfig check;
};

class HealthChecker {
 public:
  // Called when a target's health changes (never for kInitial).
  using OnChange = std::function<void(uint32_t id, Health health)>;

  HealthChecker(boost::asio::io_context& io, OnChange on_change);
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // Replaces the set of checked targets. Targets that stay (same id) keep their state; a changed
  // check config applies from the next check on.
  void SetTargets(const std::vector<CheckedTarget>& targets);
  // kInitial for a target with no result yet or an unknown id.
  Health health(uint32_t id) const;
  // Seeds the state of a target before its first check (used after a restart).
  void Seed(uint32_t id, Health health);
  // True once every target has had at least one result.
  bool AllChecked() const;
  void Stop();

 private:
  struct Target;
  void Schedule(const std::shared_ptr<Target>& t, std::chrono::milliseconds delay);
  void RunCheck(const std::shared_ptr<Target>& t);
  void Record(const std::shared_ptr<Target>& t, bool ok);

  boost::asio::io_context& io_;
  OnChange on_change_;
  std::map<uint32_t, std::shared_ptr<Target>> targets_;
  std::shared_ptr<bool> alive_;
};

}  // namespace bluegreen::proxy
