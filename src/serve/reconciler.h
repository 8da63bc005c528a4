// Reconciler: makes the running world match the store, over and over (every 500 ms, or at once
// when notified). It owns every slow or blocking action of serve: starting, adopting and stopping
// the proxy process; starting, health-probing, registering, draining and stopping tasks;
// rolling a service to a new version; removing a stack. API handlers only commit intentions to
// the store and call Notify().
//
// Task states (store::TaskRecord::state):
//   starting  started; probed by serve until it answers the health check, then -> running
//   running   registered with the proxy (the proxy's own health checks decide if it gets traffic)
//   draining  deregistered; stopped once the proxy has no request in flight on it (or after the
//             target group's deregistration delay)
//   exited    it died or failed to start; the row is removed and the task replaced (with backoff)
//
// Everything the reconciler decides is written to the store before it acts, so a serve killed
// at any point is followed by one that continues from the store: tasks and the proxy outlive
// serve and are re-adopted by their stored handles.
//
// Thread-safety: Start/Stop/Notify/ProxyState/WaitStackRemoved may be called from any thread;
// the work itself runs on the reconciler's own thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "proxy/config.h"
#include "runtime/runtime.h"
#include "serve/proxy_client.h"
#include "stack/stack_spec.h"
#include "store/store.h"

namespace bluegreen::serve {

struct Paths {
  std::string state_dir;
  std::string install_id;  // random, per state directory: keeps container names of two serves apart
  std::string proxy_dir() const { return state_dir + "/proxy"; }
  std::string proxy_admin() const { return "unix:" + proxy_dir() + "/admin.sock"; }
  std::string logs_dir() const { return state_dir + "/logs"; }
  std::string artifacts_dir() const { return state_dir + "/artifacts"; }
};

// Names the proxy knows a stack's parts by.
std::string TargetGroupName(const std::string& stack, const std::string& identifier);
std::string ProxyListenerName(const std::string& stack, const std::string& listener);
std::string OtherSide(const std::string& identifier);

class Pipeline;

// How a container runtime answered the reconciler's last check (runtime::Runtime::CheckReachable).
struct RuntimeHealth {
  bool reachable = true;
  std::string error;  // why not, while unreachable
  int64_t since = 0;  // unix seconds: since when it has been so (its first check, or the change)
};

class Reconciler {
 public:
  Reconciler(store::Store* store, Paths paths, std::string self_binary, int proxy_workers);
  ~Reconciler();
  Reconciler(const Reconciler&) = delete;
  Reconciler& operator=(const Reconciler&) = delete;

  // The pipeline whose Deploy/Review/Swap stages advance in each pass (optional; set before
  // Start).
  void SetPipeline(Pipeline* pipeline) { pipeline_ = pipeline; }

  void Start();
  void Stop();
  // Runs a pass soon.
  void Notify();

  // The proxy's /v1/state from the last pass (null while the proxy is not reachable).
  nlohmann::json ProxyState() const;

  // The health of a container runtime ("podman", "docker") that some stack or task uses, as of
  // the last pass; nullopt for the process runtime and for runtimes no stack uses. While a
  // runtime is unreachable its tasks are left as they are (their state is unknown, not "gone"):
  // none is replaced, started or stopped until it answers again.
  std::optional<RuntimeHealth> RuntimeHealthOf(const std::string& runtime) const;

  // Calls `done` (on the reconciler's thread) once the stack is gone from the store, the proxy
  // and the runtime.
  void WaitStackRemoved(const std::string& name, std::function<void()> done);

 private:
  struct Backoff {
    int failures = 0;
    std::chrono::steady_clock::time_point next_start{};
  };

  struct RuntimeWatch {
    RuntimeHealth health;
    std::chrono::steady_clock::time_point changed{};   // when `health.reachable` last changed
    std::chrono::steady_clock::time_point last_log{};  // the last "still unreachable" line
  };

  void Loop();
  void Pass();
  runtime::Runtime* RuntimeFor(const std::string& name);
  // Checks every container runtime in use; logs (rate-limited) and records events when one
  // stops or starts answering.
  void CheckRuntimes(const std::vector<store::StackRecord>& stacks,
                     const std::vector<store::TaskRecord>& tasks);
  // False while the runtime did not answer this pass's check.
  bool Reachable(const std::string& runtime) const;

  // Proxy process.
  bool EnsureProxy(const proxy::ProxyConfig& desired);
  void StopProxy();
  proxy::ProxyConfig DesiredConfig(const std::vector<store::StackRecord>& stacks,
                                   const std::vector<store::TaskRecord>& tasks);
  // `frozen`: stacks with a swap in flight; their listeners' groups and IsProduction tags are
  // left as the proxy has them (only the pipeline's swap changes them).
  void SyncProxy(proxy::ProxyConfig desired, const std::set<std::string>& frozen);

  // Tasks.
  void CheckTasks(std::vector<store::TaskRecord>* tasks);
  void ReconcileService(const store::StackRecord& stack, const stack::StackSpec& spec,
                        store::ServiceRecord service, std::vector<store::TaskRecord>* tasks);
  void StartTask(const store::StackRecord& stack, const stack::StackSpec& spec,
                 const std::string& identifier, const std::string& version);
  bool Probe(const stack::StackSpec& spec, const store::TaskRecord& task);
  void RemoveStack(const store::StackRecord& stack, std::vector<store::TaskRecord>* tasks);
  std::string TargetHealth(const std::string& group, const std::string& address) const;
  std::string ContainerName(const store::TaskRecord& t) const;
  bool TargetKnown(const std::string& group, const std::string& address) const;
  // Stops the task and removes its row; false (row kept) when stopping failed.
  bool StopTaskChecked(store::TaskRecord task, std::chrono::milliseconds grace);
  void Event(const std::string& stack, const std::string& kind, const std::string& message);
  // Logs a failed store call (a full or read-only state directory fails every pass) at most
  // once per kStoreErrorLogInterval, saying how many were not logged in between.
  void StoreFailed(const std::string& what, const Status& st);

  store::Store* store_;
  Paths paths_;
  std::string self_binary_;
  int proxy_workers_;
  ProxyClient proxy_;
  Pipeline* pipeline_ = nullptr;
  std::map<std::string, std::unique_ptr<runtime::Runtime>> runtimes_;
  std::map<std::string, Backoff> backoff_;  // by "stack/identifier"
  std::map<int64_t, std::chrono::steady_clock::time_point> drain_deadline_;
  nlohmann::json state_;  // this pass's proxy state (reconciler thread only)
  std::map<std::string, RuntimeWatch> runtime_watch_;  // by runtime name (reconciler thread only)
  // Rows of tasks found dead whose removal from the store failed: retried each pass, without
  // reporting the task's exit again (reconciler thread only).
  std::set<int64_t> undeleted_tasks_;
  // The running proxy's handle when the store could not record it (reconciler thread only).
  std::string unrecorded_proxy_handle_;
  std::chrono::steady_clock::time_point store_error_logged_{};  // reconciler thread only
  int store_errors_unlogged_ = 0;                               // reconciler thread only

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool notified_ = false;
  bool stopping_ = false;
  nlohmann::json shared_state_;  // guarded by mu_
  std::map<std::string, RuntimeHealth> shared_runtime_health_;         // guarded by mu_
  std::multimap<std::string, std::function<void()>> removal_waiters_;  // guarded by mu_
  std::thread thread_;
};

}  // namespace bluegreen::serve
