#include "serve/reconciler.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/http_client.h"
#include "runtime/container_runtime.h"
#include "runtime/process_runtime.h"
#include "serve/pipeline.h"

namespace bluegreen::serve {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::seconds kStoreErrorLogInterval(30);
using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr auto kPassInterval = std::chrono::milliseconds(500);
constexpr auto kStopGrace = std::chrono::seconds(10);
constexpr auto kMaxBackoff = std::chrono::seconds(30);
constexpr const char* kProxyHandleKey = "proxy_handle";
// While a runtime does not answer, the reconciler says so once, then once a minute.
constexpr auto kUnreachableLogInterval = std::chrono::seconds(60);

std::string ExpandPort(const std::string& arg, int port) {
  std::string out = arg;
  const std::string key = "${PORT}";
  for (size_t pos = out.find(key); pos != std::string::npos; pos = out.find(key, pos)) {
    out.replace(pos, key.size(), std::to_string(port));
  }
  return out;
}

// GCC 12 reports a false maybe-uninitialized for the default StatusMatcher of a
// HealthCheckConfig built here; the matcher is always assigned below. (Clang has no such warning.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
proxy::HealthCheckConfig ToProxyCheck(const stack::HealthCheckSpec& h) {
  proxy::HealthCheckConfig c;
  c.path = h.path;
  c.interval = h.interval;
  c.timeout = h.timeout;
  c.healthy_threshold = h.healthy_threshold;
  c.unhealthy_threshold = h.unhealthy_threshold;
  Result<proxy::StatusMatcher> m = proxy::ParseStatusMatcher(h.matcher);
  if (m.ok()) c.matcher = *m;
  return c;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

std::string Address(const store::TaskRecord& t) { return fmt::format("127.0.0.1:{}", t.port); }

// "PID:STARTTIME" of the process listening on a unix socket (SO_PEERCRED).
Result<std::string> PeerHandle(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Unavailable("socket");
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  ucred cred{};
  socklen_t len = sizeof cred;
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
  ::close(fd);
  if (!ok || cred.pid <= 1) return Unavailable("no peer on " + path);
  std::ifstream in(fmt::format("/proc/{}/stat", cred.pid));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return Unavailable("no /proc entry");
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i) {
    if (i == 22) return fmt::format("{}:{}", cred.pid, field);
  }
  return Unavailable("bad /proc stat");
}

}  // namespace

std::string TargetGroupName(const std::string& stack, const std::string& identifier) {
  return stack + (identifier == "Code1" ? "-blue" : "-green");
}
std::string ProxyListenerName(const std::string& stack, const std::string& listener) {
  return stack + "-" + listener;
}
std::string OtherSide(const std::string& identifier) {
  return identifier == "Code1" ? "Code2" : "Code1";
}

Reconciler::Reconciler(store::Store* store, Paths paths, std::string self_binary,
                       int proxy_workers)
    : store_(store),
      paths_(std::move(paths)),
      self_binary_(std::move(self_binary)),
      proxy_workers_(proxy_workers),
      proxy_(paths_.proxy_admin()) {}

Reconciler::~Reconciler() { Stop(); }

void Reconciler::Start() {
  // One pass before anyone asks: the proxy adopted or started, its state known.
  try {
    Pass();
  } catch (const std::exception& e) {
    spdlog::error("reconcile pass failed: {}", e.what());
  }
  thread_ = std::thread([this] { Loop(); });
}

void Reconciler::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Reconciler::Notify() {
  {
    std::lock_guard lock(mu_);
    notified_ = true;
  }
  cv_.notify_all();
}

json Reconciler::ProxyState() const {
  std::lock_guard lock(mu_);
  return shared_state_;
}

std::optional<RuntimeHealth> Reconciler::RuntimeHealthOf(const std::string& runtime) const {
  std::lock_guard lock(mu_);
  auto it = shared_runtime_health_.find(runtime);
  if (it == shared_runtime_health_.end()) return std::nullopt;
  return it->second;
}

void Reconciler::WaitStackRemoved(const std::string& name, std::function<void()> done) {
  {
    std::lock_guard lock(mu_);
    removal_waiters_.emplace(name, std::move(done));
  }
  Notify();
}

void Reconciler::Loop() {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, kPassInterval, [this] { return notified_ || stopping_; });
      if (stopping_) return;
      notified_ = false;
    }
    try {
      Pass();
    } catch (const std::exception& e) {
      spdlog::error("reconcile pass failed: {}", e.what());
    }
  }
}

runtime::Runtime* Reconciler::RuntimeFor(const std::string& name) {
  auto it = runtimes_.find(name);
  if (it != runtimes_.end()) return it->second.get();
  std::unique_ptr<runtime::Runtime> r;
  if (name == "process") {
    r = std::make_unique<runtime::ProcessRuntime>();
  } else {
    r = std::make_unique<runtime::ContainerRuntime>(runtime::ContainerRuntime::SocketFor(name),
                                                    name);
  }
  runtime::Runtime* raw = r.get();
  runtimes_[name] = std::move(r);
  return raw;
}

bool Reconciler::Reachable(const std::string& runtime) const {
  auto it = runtime_watch_.find(runtime);
  return it == runtime_watch_.end() || it->second.health.reachable;
}

void Reconciler::CheckRuntimes(const std::vector<store::StackRecord>& stacks,
                               const std::vector<store::TaskRecord>& tasks) {
  // The container runtimes in use, and which stacks use each (for their events).
  std::map<std::string, std::set<std::string>> used;
  std::map<std::pair<std::string, std::string>, int> task_count;  // by (runtime, stack)
  for (const store::StackRecord& s : stacks) {
    Result<stack::StackSpec> spec = stack::ParseStackSpec(s.spec_json);
    if (!spec.ok() || spec->service.runtime == stack::Runtime::kProcess) continue;
    used[std::string(stack::RuntimeName(spec->service.runtime))].insert(s.name);
  }
  for (const store::TaskRecord& t : tasks) {
    if (t.runtime == "process") continue;
    used[t.runtime].insert(t.stack);
    ++task_count[{t.runtime, t.stack}];
  }
  std::erase_if(runtime_watch_, [&](const auto& w) { return !used.contains(w.first); });

  const auto now = Clock::now();
  for (const auto& [name, stack_names] : used) {
    const Status st = RuntimeFor(name)->CheckReachable();
    auto [it, first] = runtime_watch_.try_emplace(name);
    RuntimeWatch& w = it->second;
    const bool was = first || w.health.reachable;
    int n = 0;  // its tasks, all stacks
    for (const std::string& s : stack_names) n += task_count[{name, s}];
    if (st.ok()) {
      if (!first && !was) {
        const std::string down_for =
            FormatDuration(std::chrono::duration_cast<std::chrono::milliseconds>(now - w.changed));
        for (const std::string& s : stack_names) {
          Event(s, "runtime_reachable",
                fmt::format("the {} engine answers again after {} unreachable; its tasks are "
                            "checked again",
                            name, down_for));
        }
      }
      if (first || !was) {
        w.health = RuntimeHealth{true, "", store::NowSeconds()};
        w.changed = now;
      }
      continue;
    }
    if (was) {
      w.health = RuntimeHealth{false, st.message(), store::NowSeconds()};
      w.changed = now;
      w.last_log = now;
      spdlog::warn(
          "{}; its {} task{} are left as they are (their state is unknown: nothing is "
          "replaced, started or stopped on it until it answers)",
          st.message(), n, n == 1 ? "" : "s");
      for (const std::string& s : stack_names) {
        const int mine = task_count[{name, s}];
        Status recorded = store_->AddEvent(
            s, "runtime_unreachable",
            fmt::format("{}; the stack's {} task{} are left as they are until it answers",
                        st.message(), mine, mine == 1 ? "" : "s"));
        if (!recorded.ok()) spdlog::warn("cannot record an event: {}", recorded.message());
      }
      continue;
    }
    w.health.error = st.message();
    if (now - w.last_log >= kUnreachableLogInterval) {
      w.last_log = now;
      spdlog::warn(
          "{} (for {} now); its {} task{} are left as they are", st.message(),
          FormatDuration(std::chrono::duration_cast<std::chrono::milliseconds>(now - w.changed)), n,
          n == 1 ? "" : "s");
    }
  }
  std::lock_guard lock(mu_);
  shared_runtime_health_.clear();
  for (const auto& [name, w] : runtime_watch_) shared_runtime_health_[name] = w.health;
}

void Reconciler::Event(const std::string& stack, const std::string& kind,
                       const std::string& message) {
  spdlog::info("{}: {}", stack, message);
  Status st = store_->AddEvent(stack, kind, message);
  if (!st.ok()) StoreFailed("cannot record an event", st);
}

void Reconciler::StoreFailed(const std::string& what, const Status& st) {
  const auto now = Clock::now();
  if (store_error_logged_ != Clock::time_point{} &&
      now - store_error_logged_ < kStoreErrorLogInterval) {
    ++store_errors_unlogged_;
    return;
  }
  if (store_errors_unlogged_ > 0) {
    spdlog::error(
        "{}: {} (and {} more failed store calls in the last {} s)", what, st.message(),
        store_errors_unlogged_,
        std::chrono::duration_cast<std::chrono::seconds>(now - store_error_logged_).count());
  } else {
    spdlog::error("{}: {}", what, st.message());
  }
  store_error_logged_ = now;
  store_errors_unlogged_ = 0;
}

// ---------------------------------------------------------------------------------------------
// The proxy process.

proxy::ProxyConfig Reconciler::DesiredConfig(const std::vector<store::StackRecord>& stacks,
                                             const std::vector<store::TaskRecord>& tasks) {
  proxy::ProxyConfig c;
  c.admin = paths_.proxy_admin();
  c.state_file = paths_.proxy_dir() + "/state.json";
  c.workers = proxy_workers_;
  for (const store::StackRecord& s : stacks) {
    if (s.deleting) continue;
    Result<stack::StackSpec> spec = stack::ParseStackSpec(s.spec_json);
    if (!spec.ok()) continue;
    Result<std::vector<store::ServiceRecord>> services = store_->ListServices(s.name);
    for (const char* id : {"Code1", "Code2"}) {
      proxy::TargetGroupConfig g;
      g.name = TargetGroupName(s.name, id);
      g.health_check = ToProxyCheck(spec->service.health_check);
      g.deregistration_delay = spec->load_balancer.deregistration_delay;
      std::string image;
      if (services.ok()) {
        for (const store::ServiceRecord& r : *services) {
          if (r.identifier == id && r.version) image = *r.version;
        }
      }
      g.tags = {{"Identifier", id},
                {"Image", image},
                {"IsProduction", s.live == id ? "true" : "false"}};
      for (const store::TaskRecord& t : tasks) {
        if (t.stack == s.name && t.identifier == id && t.state == "running") {
          Result<Endpoint> e = ParseEndpoint(Address(t));
          if (e.ok()) g.targets.push_back(*e);
        }
      }
      c.target_groups.push_back(std::move(g));
    }
    proxy::ListenerConfig prod;
    prod.name = ProxyListenerName(s.name, "production");
    prod.port = spec->load_balancer.production.port;
    prod.allow = spec->load_balancer.production.allow;
    prod.target_group = TargetGroupName(s.name, s.live);
    proxy::ListenerConfig test;
    test.name = ProxyListenerName(s.name, "test");
    test.port = spec->load_balancer.test.port;
    test.allow = spec->load_balancer.test.allow;
    test.target_group = TargetGroupName(s.name, OtherSide(s.live));
    c.listeners.push_back(std::move(prod));
    c.listeners.push_back(std::move(test));
  }
  return c;
}

bool Reconciler::EnsureProxy(const proxy::ProxyConfig& desired) {
  runtime::Runtime* rt = RuntimeFor("process");
  Result<std::optional<std::string>> stored = store_->GetMeta(kProxyHandleKey);
  // A handle that could not be recorded (a full or read-only state directory) is recorded as
  // soon as the store takes it, and used meanwhile: the proxy is not started or adopted again.
  if (!unrecorded_proxy_handle_.empty()) {
    Status st = store_->SetMeta(kProxyHandleKey, unrecorded_proxy_handle_);
    if (st.ok()) {
      unrecorded_proxy_handle_.clear();
    } else {
      StoreFailed("cannot record the proxy's handle", st);
      stored = std::optional<std::string>(unrecorded_proxy_handle_);
    }
  }
  if (stored.ok() && stored->has_value() && !(*stored)->empty()) {
    Result<runtime::TaskStatus> st = rt->Inspect(runtime::TaskHandle{**stored});
    if (st.ok() && st->state == runtime::TaskState::kRunning) {
      if (proxy_.Healthz().ok()) return true;
      return false;  // starting or stuck: try again next pass
    }
    spdlog::warn("the proxy ({}) is not running; starting it again", **stored);
  }
  // A proxy that answers on our admin socket but is not the one on record (serve died between
  // starting it and recording it): adopt it rather than start a second one on the same ports.
  if (proxy_.Healthz().ok()) {
    Result<std::string> handle = PeerHandle(paths_.proxy_dir() + "/admin.sock");
    if (handle.ok()) {
      spdlog::warn("adopting the proxy {} that answers on {}", *handle, proxy_.address());
      if (Status st = store_->SetMeta(kProxyHandleKey, *handle); !st.ok()) {
        unrecorded_proxy_handle_ = *handle;
        StoreFailed("cannot record the proxy's handle", st);
      }
      return true;
    }
  }
  // Start it. Its state file (if any) wins over the config file at start; the next sync fixes
  // any difference.
  std::error_code ec;
  fs::create_directories(paths_.proxy_dir(), ec);
  const std::string config_path = paths_.proxy_dir() + "/proxy.json";
  {
    // A config file that cannot be written whole (full or read-only disk) is not put in place:
    // a truncated one would keep the proxy from starting, and its state file wins anyway.
    std::ofstream out(config_path + ".tmp", std::ios::trunc);
    out << proxy::ProxyConfigToJson(desired);
    out.close();
    if (out) {
      fs::rename(config_path + ".tmp", config_path, ec);
    } else {
      fs::remove(config_path + ".tmp", ec);
      spdlog::error(
          "cannot write {} (is the state directory full or read-only?); starting the "
          "proxy with the config there",
          config_path);
    }
  }
  runtime::TaskSpec spec;
  spec.name = "bluegreen-proxy";
  spec.command = {self_binary_, "proxy", "--config", config_path};
  spec.workdir = paths_.proxy_dir();
  spec.log_path = paths_.proxy_dir() + "/proxy.log";
  Result<runtime::TaskHandle> handle = rt->Start(spec);
  if (!handle.ok()) {
    spdlog::error("cannot start the proxy: {}", handle.status().message());
    return false;
  }
  if (Status st = store_->SetMeta(kProxyHandleKey, handle->id); !st.ok()) {
    unrecorded_proxy_handle_ = handle->id;
    StoreFailed("cannot record the proxy's handle", st);
  }
  spdlog::info("started the proxy ({}), admin {}", handle->id, proxy_.address());
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {
    if (proxy_.Healthz().ok()) return true;
    Result<runtime::TaskStatus> s = rt->Inspect(*handle);
    if (s.ok() && s->state != runtime::TaskState::kRunning) {
      spdlog::error("the proxy exited at start; see {}", spec.log_path);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void Reconciler::StopProxy() {
  Result<std::optional<std::string>> stored = store_->GetMeta(kProxyHandleKey);
  if (!stored.ok() || !stored->has_value() || (*stored)->empty()) return;
  spdlog::info("no stack left: stopping the proxy");
  Status st = RuntimeFor("process")->Stop(runtime::TaskHandle{**stored}, kStopGrace);
  if (!st.ok()) {
    spdlog::warn("stopping the proxy: {}", st.message());
    return;
  }
  (void)store_->SetMeta(kProxyHandleKey, "");
  std::error_code ec;
  fs::remove(paths_.proxy_dir() + "/state.json", ec);
}

void Reconciler::SyncProxy(proxy::ProxyConfig desired, const std::set<std::string>& frozen) {
  Result<proxy::ProxyConfig> actual = proxy_.Config();
  if (!actual.ok()) {
    spdlog::warn("{}", actual.status().message());
    return;
  }
  for (const std::string& stack : frozen) {
    for (const char* l : {"production", "test"}) {
      proxy::ListenerConfig* w = desired.FindListener(ProxyListenerName(stack, l));
      const proxy::ListenerConfig* a = actual->FindListener(ProxyListenerName(stack, l));
      if (w != nullptr && a != nullptr) w->target_group = a->target_group;
    }
    for (const char* id : {"Code1", "Code2"}) {
      proxy::TargetGroupConfig* w = desired.FindTargetGroup(TargetGroupName(stack, id));
      const proxy::TargetGroupConfig* a = actual->FindTargetGroup(TargetGroupName(stack, id));
      if (w == nullptr || a == nullptr) continue;
      auto it = a->tags.find("IsProduction");
      if (it != a->tags.end()) w->tags["IsProduction"] = it->second;
    }
  }
  // Structure (listeners, groups, tags, checks): one atomic PUT. It carries the targets the
  // proxy has now that are still wanted, so registration and draining below stay explicit.
  proxy::ProxyConfig want = desired;
  for (proxy::TargetGroupConfig& g : want.target_groups) {
    const proxy::TargetGroupConfig* cur = actual->FindTargetGroup(g.name);
    std::vector<Endpoint> keep;
    if (cur != nullptr) {
      for (const Endpoint& e : cur->targets) {
        if (std::find(g.targets.begin(), g.targets.end(), e) != g.targets.end()) keep.push_back(e);
      }
    }
    g.targets = std::move(keep);
  }
  proxy::ProxyConfig cmp = *actual;
  for (proxy::TargetGroupConfig& g : cmp.target_groups) {
    const proxy::TargetGroupConfig* w = want.FindTargetGroup(g.name);
    if (w != nullptr) g.targets = w->targets;  // compare structure only
  }
  cmp.admin = want.admin;
  cmp.state_file = want.state_file;
  cmp.workers = want.workers;
  if (!(cmp.listeners == want.listeners) || !(cmp.target_groups == want.target_groups)) {
    // Groups that lose targets by this PUT would lose them without draining: deregister those
    // first.
    for (const proxy::TargetGroupConfig& g : actual->target_groups) {
      const proxy::TargetGroupConfig* w = want.FindTargetGroup(g.name);
      if (w == nullptr) continue;
      for (const Endpoint& e : g.targets) {
        if (std::find(w->targets.begin(), w->targets.end(), e) == w->targets.end()) {
          (void)proxy_.Deregister(g.name, e.ToString());
        }
      }
    }
    Status st = proxy_.PutConfig(want);
    if (st.ok()) {
      spdlog::info("applied a new proxy config ({} listeners, {} target groups)",
                   want.listeners.size(), want.target_groups.size());
      actual = want;
    } else {
      // Registration below still runs against what the proxy has: one stack's bad listener
      // must not keep the others' new tasks out.
      spdlog::error("cannot apply the proxy config: {}", st.message());
      Result<proxy::ProxyConfig> now = proxy_.Config();
      if (!now.ok()) return;
      actual = std::move(now);
    }
  }
  // Targets: register what is wanted, deregister (drain) what is not.
  for (const proxy::TargetGroupConfig& g : desired.target_groups) {
    const proxy::TargetGroupConfig* cur = actual->FindTargetGroup(g.name);
    if (cur == nullptr) continue;  // the proxy does not have the group (its PUT failed)
    for (const Endpoint& e : g.targets) {
      if (cur && std::find(cur->targets.begin(), cur->targets.end(), e) != cur->targets.end()) {
        continue;
      }
      Status st = proxy_.Register(g.name, e.ToString());
      if (!st.ok()) spdlog::warn("register {} in {}: {}", e.ToString(), g.name, st.message());
    }
    if (cur == nullptr) continue;
    for (const Endpoint& e : cur->targets) {
      if (std::find(g.targets.begin(), g.targets.end(), e) != g.targets.end()) continue;
      Status st = proxy_.Deregister(g.name, e.ToString());
      if (!st.ok()) spdlog::warn("deregister {} from {}: {}", e.ToString(), g.name, st.message());
    }
  }
}

std::string Reconciler::ContainerName(const store::TaskRecord& t) const {
  return fmt::format("bg-{}-{}-{}-{}", paths_.install_id, t.stack,
                     t.identifier == "Code1" ? "code1" : "code2", t.id);
}

std::string Reconciler::TargetHealth(const std::string& group, const std::string& address) const {
  if (!state_.is_object()) return "unknown";
  for (const json& g : state_.value("target_groups", json::array())) {
    if (g.value("name", "") != group) continue;
    for (const json& t : g.value("targets", json::array())) {
      if (t.value("address", "") == address) return t.value("health", "unknown");
    }
  }
  return "";
}

bool Reconciler::TargetKnown(const std::string& group, const std::string& address) const {
  return !TargetHealth(group, address).empty();
}

// ---------------------------------------------------------------------------------------------
// Tasks.

void Reconciler::CheckTasks(std::vector<store::TaskRecord>* tasks) {
  for (store::TaskRecord& t : *tasks) {
    if (t.state == "exited" || t.state == "stopped") continue;
    if (undeleted_tasks_.count(t.id) != 0) {  // found dead already; its row goes now
      Status st = store_->DeleteTask(t.id);
      if (st.ok()) {
        undeleted_tasks_.erase(t.id);
      } else {
        StoreFailed(fmt::format("cannot remove task {}", t.id), st);
      }
      t.state = "exited";
      continue;
    }
    // A runtime that does not answer knows nothing of its tasks: unknown is not dead. They are
    // left as they are (and keep serving) until it answers again.
    if (!Reachable(t.runtime)) continue;
    bool dead = t.handle.empty();
    int code = -1;
    if (!dead) {
      Result<runtime::TaskStatus> st = RuntimeFor(t.runtime)->Inspect(runtime::TaskHandle{t.handle});
      if (!st.ok()) {
        spdlog::warn("task {}: cannot inspect: {}", t.id, st.status().message());
        continue;
      }
      dead = st->state != runtime::TaskState::kRunning;
      code = st->exit_code;
    }
    if (!dead) continue;
    if (t.state != "draining") {
      Event(t.stack, "task_exited",
            fmt::format("task {} ({} {}, {}) exited{}; it will be replaced", t.id, t.identifier,
                        t.version, Address(t),
                        code >= 0 ? fmt::format(" with status {}", code) : ""));
      Backoff& b = backoff_[t.stack + "/" + t.identifier];
      ++b.failures;
      const auto delay = std::min<Clock::duration>(
          kMaxBackoff, std::chrono::milliseconds(500) * (1 << std::min(b.failures - 1, 8)));
      b.next_start = Clock::now() + delay;
    }
    // Leftovers (a stopped container) go; the row goes. Its target, if registered, is
    // deregistered by the next sync (it is no longer "running"). A row without a handle is a
    // task serve died while starting: a container of it is found by its name.
    std::string leftover = t.handle;
    if (leftover.empty() && t.runtime != "process") leftover = ContainerName(t);
    if (!leftover.empty()) {
      (void)RuntimeFor(t.runtime)->Stop(runtime::TaskHandle{leftover}, std::chrono::seconds(1));
    }
    t.state = "exited";
    if (Status st = store_->DeleteTask(t.id); !st.ok()) {
      undeleted_tasks_.insert(t.id);
      StoreFailed(fmt::format("cannot remove task {}", t.id), st);
    }
  }
  std::erase_if(*tasks, [](const store::TaskRecord& t) { return t.state == "exited"; });
}

bool Reconciler::Probe(const stack::StackSpec& spec, const store::TaskRecord& task) {
  HttpClientRequest req;
  req.target = spec.service.health_check.path;
  const auto timeout = std::min<std::chrono::milliseconds>(spec.service.health_check.timeout,
                                                          std::chrono::seconds(2));
  Result<HttpClientResponse> resp = HttpCall(Address(task), req, timeout, 1 << 20);
  if (!resp.ok()) return false;
  Result<proxy::StatusMatcher> m = proxy::ParseStatusMatcher(spec.service.health_check.matcher);
  return m.ok() && m->Matches(resp->status);
}

void Reconciler::StartTask(const store::StackRecord& stack, const stack::StackSpec& spec,
                           const std::string& identifier, const std::string& version) {
  Backoff& b = backoff_[stack.name + "/" + identifier];
  if (Clock::now() < b.next_start) return;
  Result<std::optional<store::VersionRecord>> v = store_->GetVersion(stack.name, version);
  if (!v.ok() || !v->has_value()) {
    spdlog::error("{}: version {} is not registered", stack.name, version);
    b.next_start = Clock::now() + kMaxBackoff;
    return;
  }
  Result<uint16_t> port = runtime::PickFreePort();
  if (!port.ok()) {
    spdlog::error("no free port: {}", port.status().message());
    return;
  }
  const std::string rt_name(stack::RuntimeName(spec.service.runtime));
  if (!Reachable(rt_name)) return;  // waits for it (a rollout fails at its deploy timeout)
  store::TaskRecord t;
  t.stack = stack.name;
  t.identifier = identifier;
  t.version = version;
  t.runtime = rt_name;
  t.port = *port;
  t.state = "starting";
  // The row exists before the task does: a serve that dies in between leaves a row with no
  // handle, which the next serve removes.
  Result<int64_t> id = store_->InsertTask(t);
  if (!id.ok()) {
    StoreFailed("cannot record a new task", id.status());
    return;
  }
  t.id = *id;
  t.log_path = fmt::format("{}/{}/task-{}.log", paths_.logs_dir(), stack.name, t.id);

  runtime::TaskSpec ts;
  ts.name = ContainerName(t);
  ts.host_port = t.port;
  ts.env = spec.service.env;
  ts.log_path = t.log_path;
  if (spec.service.runtime == stack::Runtime::kProcess) {
    for (const std::string& arg : spec.service.command) ts.command.push_back(ExpandPort(arg, t.port));
    ts.workdir = (*v)->artifact_dir;
  } else {
    const int cport = spec.service.port ? spec.service.port : 8080;
    for (const std::string& arg : spec.service.command) ts.command.push_back(ExpandPort(arg, cport));
    ts.image = (*v)->image;
    ts.container_port = static_cast<uint16_t>(cport);
  }
  Result<runtime::TaskHandle> h = RuntimeFor(rt_name)->Start(ts);
  if (!h.ok()) {
    Event(stack.name, "task_failed",
          fmt::format("task {} ({} {}) could not start: {}", t.id, identifier, version,
                      h.status().message()));
    (void)store_->DeleteTask(t.id);
    ++b.failures;
    b.next_start = Clock::now() + std::min<Clock::duration>(
        kMaxBackoff, std::chrono::milliseconds(500) * (1 << std::min(b.failures - 1, 8)));
    return;
  }
  t.handle = h->id;
  Status st = store_->UpdateTask(t);
  if (!st.ok()) StoreFailed(fmt::format("cannot record task {}", t.id), st);
  spdlog::info("{}: started task {} ({} {}) on {}", stack.name, t.id, identifier, version,
               Address(t));
}

bool Reconciler::StopTaskChecked(store::TaskRecord task, std::chrono::milliseconds grace) {
  if (!Reachable(task.runtime)) return false;  // tried again once it answers
  if (!task.handle.empty()) {
    Status st = RuntimeFor(task.runtime)->Stop(runtime::TaskHandle{task.handle}, grace);
    if (!st.ok()) {
      spdlog::warn("task {}: stop: {}", task.id, st.message());
      return false;
    }
  }
  drain_deadline_.erase(task.id);
  (void)store_->DeleteTask(task.id);
  spdlog::info("{}: stopped task {} ({} {})", task.stack, task.id, task.identifier, task.version);
  return true;
}

void Reconciler::ReconcileService(const store::StackRecord& stack, const stack::StackSpec& spec,
                                  store::ServiceRecord svc, std::vector<store::TaskRecord>* tasks) {
  const std::string group = TargetGroupName(stack.name, svc.identifier);
  const bool rolling = svc.rollout_state == "in_progress" && svc.rollout_version.has_value();
  const std::optional<std::string> want = rolling ? svc.rollout_version : svc.version;
  const int count = spec.service.desired_count;
  const auto now_s = store::NowSeconds();

  std::vector<store::TaskRecord*> mine;
  for (store::TaskRecord& t : *tasks) {
    if (t.stack == stack.name && t.identifier == svc.identifier) mine.push_back(&t);
  }

  // Starting tasks of the wanted version: probe; healthy ones are registered.
  for (store::TaskRecord* t : mine) {
    if (t->state != "starting") continue;
    if (!want || t->version != *want) continue;
    if (Probe(spec, *t)) {
      t->state = "running";
      (void)store_->UpdateTask(*t);
      backoff_[stack.name + "/" + svc.identifier] = Backoff{};
      spdlog::info("{}: task {} ({} {}) answers its health check; registering {}", stack.name,
                   t->id, t->identifier, t->version, Address(*t));
    } else if (now_s - t->started_at >
               std::chrono::duration_cast<std::chrono::seconds>(spec.service.deploy_timeout).count()) {
      Event(stack.name, "task_unhealthy",
            fmt::format("task {} ({} {}) did not pass its health check within {}; stopping it",
                        t->id, t->identifier, t->version,
                        FormatDuration(spec.service.deploy_timeout)));
      t->state = "draining";
      (void)store_->UpdateTask(*t);
    }
  }

  int active = 0;   // tasks of the wanted version, starting or running
  int healthy = 0;  // of them: registered and healthy in the proxy
  for (store::TaskRecord* t : mine) {
    if (!want || t->version != *want) continue;
    if (t->state == "starting" || t->state == "running") ++active;
    if (t->state == "running" && TargetHealth(group, Address(*t)) == "healthy") ++healthy;
  }

  // Rollout: done when the new version is healthy at full count; failed after the deploy
  // timeout.
  if (rolling) {
    // Done when the new version is healthy at full count and the old tasks are out of the
    // proxy: they are drained in this pass, and the version is committed in the next one, so a
    // deploy never answers "done" while the test listener still routes to the old version.
    bool old_registered = false;
    if (healthy >= count) {
      for (store::TaskRecord* t : mine) {
        if (t->version == *want || t->state == "draining") continue;
        t->state = "draining";
        (void)store_->UpdateTask(*t);
        old_registered = true;
        spdlog::info("{}: draining task {} ({} {})", stack.name, t->id, t->identifier, t->version);
      }
    }
    if (healthy >= count && old_registered) {
      // Next pass.
    } else if (healthy >= count) {
      Event(stack.name, "rollout_done",
            fmt::format("{} now runs {} ({} healthy tasks)", svc.identifier, *want, healthy));
      svc.version = want;
      svc.rollout_state.clear();
      svc.rollout_error.clear();
      svc.rollout_version.reset();
      (void)store_->PutService(svc);
    } else if (now_s - svc.rollout_started_at >
               std::chrono::duration_cast<std::chrono::seconds>(spec.service.deploy_timeout).count()) {
      svc.rollout_state = "failed";
      svc.rollout_error = fmt::format(
          "{} of {} new tasks were healthy after the deploy timeout ({}); the old tasks keep "
          "serving",
          healthy, count, FormatDuration(spec.service.deploy_timeout));
      const std::string rt_name(stack::RuntimeName(spec.service.runtime));
      if (auto w = runtime_watch_.find(rt_name);
          w != runtime_watch_.end() && !w->second.health.reachable) {
        svc.rollout_error += "; " + w->second.health.error;
      }
      Event(stack.name, "rollout_failed",
            fmt::format("putting {} on {} failed: {}", *want, svc.identifier, svc.rollout_error));
      (void)store_->PutService(svc);
      for (store::TaskRecord* t : mine) {
        if (t->version == *want && t->state != "draining") {
          t->state = "draining";
          (void)store_->UpdateTask(*t);
        }
      }
      return;
    }
  }
  const bool still_rolling = svc.rollout_state == "in_progress";
  const std::optional<std::string> target = still_rolling ? svc.rollout_version : svc.version;

  // Start what is missing.
  if (target) {
    for (int i = active; i < count; ++i) StartTask(stack, spec, svc.identifier, *target);
  }

  // Drain what is not wanted: other versions (once no rollout is in progress), and extras.
  int kept = 0;
  for (store::TaskRecord* t : mine) {
    if (t->state == "draining") continue;
    bool drop = false;
    if (!target) {
      drop = true;
    } else if (t->version != *target) {
      drop = !still_rolling;
    } else if (++kept > count) {
      drop = true;
    }
    if (!drop) continue;
    t->state = "draining";
    (void)store_->UpdateTask(*t);
    spdlog::info("{}: draining task {} ({} {})", stack.name, t->id, t->identifier, t->version);
  }

  // Draining tasks are stopped once the proxy no longer has them (drained), or after the
  // deregistration delay.
  for (store::TaskRecord* t : mine) {
    if (t->state != "draining") continue;
    auto [it, fresh] = drain_deadline_.try_emplace(
        t->id, Clock::now() + spec.load_balancer.deregistration_delay + std::chrono::seconds(2));
    const std::string health = TargetHealth(group, Address(*t));
    // Gone from the proxy: drained. At the deadline, stop it only if the proxy is known to
    // route nothing new to it (draining or gone); a target still registered (a failed
    // deregistration, an unreachable proxy) waits for the sync to deregister it first.
    const bool known = state_.is_object();
    if ((known && health.empty() && !fresh) ||
        (known && Clock::now() >= it->second && (health == "draining" || health.empty()))) {
      if (StopTaskChecked(*t, kStopGrace)) t->state = "exited";
    }
  }
}

void Reconciler::RemoveStack(const store::StackRecord& stack,
                             std::vector<store::TaskRecord>* tasks) {
  if (pipeline_ != nullptr) {
    pipeline_->CancelStack(stack.name);
    pipeline_->FailActive(stack.name, "the stack was removed");
  }
  bool all_stopped = true;
  for (store::TaskRecord& t : *tasks) {
    if (t.stack != stack.name) continue;
    if (StopTaskChecked(t, std::chrono::seconds(5))) {
      t.state = "exited";
    } else {
      all_stopped = false;
    }
  }
  std::erase_if(*tasks, [](const store::TaskRecord& t) { return t.state == "exited"; });
  const bool waiting_for_runtime = std::any_of(
      tasks->begin(), tasks->end(),
      [&](const store::TaskRecord& t) { return t.stack == stack.name && !Reachable(t.runtime); });
  if (!all_stopped) {
    // A runtime that does not answer is logged by CheckRuntimes, not on every pass.
    if (!waiting_for_runtime) {
      spdlog::warn("{}: some tasks could not be stopped; trying again", stack.name);
    }
    return;
  }
  Status st = store_->DeleteStack(stack.name, stack.purge);
  if (!st.ok()) {
    StoreFailed(fmt::format("{}: cannot remove", stack.name), st);
    return;
  }
  if (stack.purge) {
    std::error_code ec;
    fs::remove_all(paths_.logs_dir() + "/" + stack.name, ec);
    fs::remove_all(paths_.artifacts_dir() + "/" + stack.name, ec);
    fs::remove_all(paths_.state_dir + "/secrets/" + stack.name, ec);
    fs::remove_all(paths_.state_dir + "/work/" + stack.name, ec);
  } else {
    (void)store_->AddEvent(stack.name, "stack_removed", "stack removed (history kept)");
  }
  spdlog::info("{}: removed{}", stack.name, stack.purge ? " and purged" : "");
}

// ---------------------------------------------------------------------------------------------

void Reconciler::Pass() {
  Result<std::vector<store::StackRecord>> stacks = store_->ListStacks();
  Result<std::vector<store::TaskRecord>> tasks_or = store_->ListTasks();
  if (!stacks.ok() || !tasks_or.ok()) {
    StoreFailed("cannot read the store", !stacks.ok() ? stacks.status() : tasks_or.status());
    return;
  }
  std::vector<store::TaskRecord> tasks = std::move(tasks_or).value();
  CheckRuntimes(*stacks, tasks);
  CheckTasks(&tasks);

  bool any_live = false;
  for (const store::StackRecord& s : *stacks) any_live |= !s.deleting;

  // The proxy runs while some stack exists.
  bool proxy_up = false;
  if (any_live) {
    proxy_up = EnsureProxy(DesiredConfig(*stacks, tasks));
    if (proxy_up) {
      Result<json> st = proxy_.State();
      state_ = st.ok() ? *st : json();
    } else {
      state_ = json();
    }
  } else {
    state_ = json();
  }

  // The pipeline's Deploy/Review/Swap stages. A swap changes the live side: read the stacks
  // again, so the config synced below is the swapped one.
  std::set<std::string> frozen;
  if (pipeline_ != nullptr && proxy_up) {
    frozen = pipeline_->Advance(*stacks, state_, proxy_);
    stacks = store_->ListStacks();
    if (!stacks.ok()) return;
  }

  for (const store::StackRecord& s : *stacks) {
    if (s.deleting) continue;
    Result<stack::StackSpec> spec = stack::ParseStackSpec(s.spec_json);
    if (!spec.ok()) {
      spdlog::error("{}: stored stack file is invalid: {}", s.name, spec.status().message());
      continue;
    }
    Result<std::vector<store::ServiceRecord>> services = store_->ListServices(s.name);
    if (!services.ok()) continue;
    for (const store::ServiceRecord& svc : *services) {
      ReconcileService(s, *spec, svc, &tasks);
    }
    std::erase_if(tasks, [](const store::TaskRecord& t) { return t.state == "exited"; });
  }

  // Removals: first out of the proxy (one PUT without the stack), then tasks and rows.
  std::vector<store::StackRecord> removing;
  for (const store::StackRecord& s : *stacks) {
    if (s.deleting) removing.push_back(s);
  }
  if (proxy_up) SyncProxy(DesiredConfig(*stacks, tasks), frozen);
  for (const store::StackRecord& s : removing) RemoveStack(s, &tasks);
  if (!any_live) {
    // Tasks of no stack (left from a crash) and the proxy go.
    for (const store::TaskRecord& t : tasks) (void)StopTaskChecked(t, std::chrono::seconds(5));
    StopProxy();
  }

  std::vector<std::function<void()>> done;
  {
    std::lock_guard lock(mu_);
    shared_state_ = state_;
    for (auto it = removal_waiters_.begin(); it != removal_waiters_.end();) {
      Result<std::optional<store::StackRecord>> s = store_->GetStack(it->first);
      if (s.ok() && !s->has_value()) {
        done.push_back(std::move(it->second));
        it = removal_waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& f : done) f();
}

}  // namespace bluegreen::serve
