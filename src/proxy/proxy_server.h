// ProxyServer: the `bluegreen proxy` process. It owns the workers (data plane threads), the
// health checker, the admin API and the applied configuration, and it is the only writer of the
// routing table: every change (PUT /v1/config, a swap, a registration, a health transition, a
// SIGHUP) happens on its control thread, is written to the state file, and is published to every
// worker as a new immutable Snapshot.
//
// Thread-safety: construct, Start() and Run() from one thread; Run() then owns that thread until
// the process is asked to stop. Everything else happens on the control thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json_fwd.hpp>

#include "common/http_server.h"
#include "common/status.h"
#include "proxy/config.h"
#include "proxy/health_checker.h"
#include "proxy/worker.h"

namespace bluegreen::proxy {

class ProxyServer {
 public:
  explicit ProxyServer(std::string config_path);
  ~ProxyServer();
  ProxyServer(const ProxyServer&) = delete;
  ProxyServer& operator=(const ProxyServer&) = delete;

  // Reads the config file (and the state file it names, which wins when it exists), binds the
  // admin API and the listeners, starts the workers and the health checks. Listeners begin to
  // accept once every target had its first health check (bounded wait).
  Status Start();
  // Serves until SIGTERM or SIGINT, then drains and returns the exit code.
  int Run();

 private:
  using Done = std::function<void(Status)>;
  struct ListenerSockets {
    uint32_t id = 0;
    std::vector<int> fds;  // one per worker until handed over
    bool handed = false;
  };
  struct DrainingTarget {
    uint32_t id = 0;
    std::string group;
    std::string address;
    Clock::time_point deadline;
  };

  // Applies a complete new routing config atomically; `done` runs once every worker routes by it.
  void Apply(ProxyConfig next, Done done);
  Status OpenListeners(const ProxyConfig& next, std::vector<uint32_t>* opened);
  uint32_t TargetId(const std::string& group, const std::string& address);
  std::shared_ptr<const Snapshot> BuildSnapshot() const;
  void Publish(Done done);
  void SchedulePublish();
  Status WriteStateFile() const;
  void UpdateHealthTargets();
  void MaybeStartAccepting();
  void ForEachWorker(std::function<void(Worker&)> fn, std::function<void()> done);
  // Collects every worker's report. What the answer shows of health is already routed by: a
  // pending publish goes out first.
  void GatherReports(std::function<void(std::shared_ptr<std::vector<WorkerReport>>)> done,
                     int attempts = 3);
  void CheckDraining();
  void BeginShutdown();
  void PollShutdown(Clock::time_point deadline);
  void Reload();
  void WaitForSignal();

  // Admin API.
  void HandleAdmin(const HttpRequest& req, HttpServer::Respond respond);
  void HandleSwap(const HttpRequest& req, HttpServer::Respond respond);
  void HandleRegister(const std::string& group, const HttpRequest& req,
                      HttpServer::Respond respond);
  void HandleDeregister(const std::string& group, const std::string& address,
                        HttpServer::Respond respond);
  void RenderState(const std::vector<WorkerReport>& reports, nlohmann::json* out) const;
  std::string RenderMetrics(const std::vector<WorkerReport>& reports) const;

  std::string config_path_;
  boost::asio::io_context io_;
  boost::asio::signal_set signals_;
  boost::asio::steady_timer drain_timer_;
  boost::asio::steady_timer startup_timer_;
  std::unique_ptr<HttpServer> admin_;
  std::unique_ptr<HealthChecker> health_;
  std::vector<std::unique_ptr<Worker>> workers_;

  ProxyConfig config_;
  uint64_t generation_ = 0;
  std::map<std::pair<std::string, std::string>, uint32_t> target_ids_;
  uint32_t next_target_id_ = 0;
  std::map<std::pair<std::string, uint16_t>, ListenerSockets> listeners_;  // by (address, port)
  uint32_t next_listener_id_ = 0;
  std::vector<DrainingTarget> draining_;
  bool accepting_ = false;
  bool publish_pending_ = false;
  bool shutting_down_ = false;
  int exit_code_ = 0;
};

}  // namespace bluegreen::proxy
