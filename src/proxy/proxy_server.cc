#include "proxy/proxy_server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/posix.h"

namespace bluegreen::proxy {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

constexpr auto kStartupHealthWait = std::chrono::seconds(3);
constexpr auto kDrainCheckInterval = std::chrono::milliseconds(200);

std::string ErrorJson(std::string_view code, std::string_view message) {
  json j;
  j["error"] = {{"code", code}, {"message", message}};
  return j.dump();
}

HttpResponse Error(int status, std::string_view code, std::string_view message) {
  return HttpResponse::Json(status, ErrorJson(code, message));
}

// A change Apply refused for a reason other than the config itself: 507 when the state file
// could not be written (full or read-only disk), else 500.
HttpResponse ApplyError(const Status& st) {
  if (st.code() == StatusCode::kResourceExhausted) {
    return Error(507, "insufficient_storage", st.message());
  }
  return Error(500, "internal", st.message());
}

// The Status of a failed write of `what`: a full or read-only disk is kResourceExhausted.
Status WriteError(const std::string& what, int err) {
  const StatusCode code = err == ENOSPC || err == EDQUOT || err == EROFS
                              ? StatusCode::kResourceExhausted
                              : StatusCode::kUnavailable;
  return Status(code, what + ": " + std::strerror(err));
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot read " + path + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes a file atomically: temp file in the same directory, fsync, rename, fsync the directory.
Status WriteFileAtomically(const std::string& path, const std::string& data) {
  const std::filesystem::path p(path);
  const std::filesystem::path dir = p.has_parent_path() ? p.parent_path() : ".";
  const std::string tmp = (dir / ("." + p.filename().string() + ".tmp")).string();
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return WriteError("cannot write " + tmp, errno);
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return WriteError("cannot write " + tmp, err);
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return WriteError("cannot fsync " + tmp, err);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return WriteError("cannot rename " + tmp, err);
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

Result<int> OpenListenSocket(const std::string& address, uint16_t port) {
  std::string host = address;
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  Result<Endpoint> ep = ParseEndpoint(host + ":" + std::to_string(port));
  if (!ep.ok()) return ep.status();
  const int fd = ::socket(ep->family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Unavailable(std::string("socket: ") + std::strerror(errno));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&ep->addr), ep->len) != 0 ||
      ::listen(fd, 65535) != 0) {
    const std::string err = std::strerror(errno);
    ::close(fd);
    return Unavailable(fmt::format("cannot listen on {}: {}", ep->ToString(), err));
  }
  return fd;
}

void MergeProcessSettings(const ProxyConfig& from, ProxyConfig* into) {
  into->admin = from.admin;
  into->state_file = from.state_file;
  into->workers = from.workers;
  into->cpu_affinity = from.cpu_affinity;
}

}  // namespace

ProxyServer::ProxyServer(std::string config_path)
    : config_path_(std::move(config_path)),
      io_(1),
      signals_(io_),
      drain_timer_(io_),
      startup_timer_(io_) {}

ProxyServer::~ProxyServer() {
  if (health_) health_->Stop();
  for (auto& w : workers_) w->Stop();
  for (auto& [key, ls] : listeners_) {
    for (int fd : ls.fds) ::close(fd);
  }
}

Status ProxyServer::Start() {
  Result<std::string> text = ReadFile(config_path_);
  if (!text.ok()) return text.status();
  Result<ProxyConfig> parsed = ParseProxyConfig(*text);
  if (!parsed.ok()) {
    return InvalidArgument(config_path_ + ":\n" + parsed.status().message());
  }
  ProxyConfig cfg = std::move(parsed).value();
  if (!cfg.state_file.empty() && std::filesystem::exists(cfg.state_file)) {
    Result<std::string> state = ReadFile(cfg.state_file);
    Result<ProxyConfig> from_state =
        state.ok() ? ParseProxyConfig(*state) : Result<ProxyConfig>(state.status());
    if (from_state.ok()) {
      MergeProcessSettings(cfg, &from_state.value());
      cfg = std::move(from_state).value();
      spdlog::info("serving the last applied config from the state file {}", cfg.state_file);
    } else {
      spdlog::warn("ignoring the state file {}: {}", cfg.state_file,
                   from_state.status().message());
    }
  }

  const std::vector<int> cpus = AllowedCpus();
  int n_workers = cfg.workers;
  if (n_workers <= 0) {
    n_workers = !cpus.empty() ? static_cast<int>(cpus.size())
                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  cfg.workers = n_workers;
  if (cfg.cpu_affinity.empty()) cfg.cpu_affinity = "auto";
  // cpu_affinity auto: worker i runs on the i-th CPU the process may use, so that two workers
  // never queue behind each other on one CPU while the other CPU runs something else. Only when
  // there is a CPU for every worker; otherwise the scheduler places them.
  const bool pin = cfg.cpu_affinity == "auto" && cpus.size() > 1 &&
                   static_cast<size_t>(n_workers) <= cpus.size();

  if (!cfg.admin.empty()) {
    admin_ = std::make_unique<HttpServer>(
        io_, [this](const HttpRequest& req, HttpServer::Respond respond) {
          HandleAdmin(req, std::move(respond));
        });
    BG_RETURN_IF_ERROR(admin_->Listen(cfg.admin));
  }

  health_ = std::make_unique<HealthChecker>(io_, [this](uint32_t id, Health h) {
    spdlog::debug("target {} is {}", id, HealthName(h));
    SchedulePublish();
    MaybeStartAccepting();
  });

  for (int i = 0; i < n_workers; ++i) workers_.push_back(std::make_unique<Worker>(i));

  std::vector<uint32_t> opened;
  BG_RETURN_IF_ERROR(OpenListeners(cfg, &opened));
  config_ = std::move(cfg);
  // The config being served is already on disk (the config file or the state file): a state
  // file that cannot be written now (full or read-only disk) must not keep the proxy down.
  if (Status st = WriteStateFile(); !st.ok()) {
    spdlog::warn("serving without updating the state file: {}", st.message());
  }
  generation_ = 1;
  UpdateHealthTargets();
  for (auto& w : workers_) {
    std::vector<Worker*> peers;
    for (auto& o : workers_) {
      if (o != w) peers.push_back(o.get());
    }
    w->SetPeers(std::move(peers));
  }
  for (size_t i = 0; i < workers_.size(); ++i) workers_[i]->Start(pin ? cpus[i] : -1);
  Publish([](Status) {});

  startup_timer_.expires_after(kStartupHealthWait);
  startup_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || accepting_) return;
    spdlog::warn("some targets had no health check result after {}s; accepting anyway",
                 std::chrono::duration_cast<std::chrono::seconds>(kStartupHealthWait).count());
    accepting_ = true;
    Publish([](Status) {});
  });
  MaybeStartAccepting();

  signals_.add(SIGTERM);
  signals_.add(SIGINT);
  signals_.add(SIGHUP);
  WaitForSignal();

  std::string placement = "not pinned";
  if (pin) placement = fmt::format("on CPUs {}", fmt::join(cpus.begin(), cpus.begin() + n_workers, ","));
  spdlog::info("bluegreen proxy: {} workers ({}), {} listeners, {} target groups, admin {}",
               n_workers, placement, config_.listeners.size(), config_.target_groups.size(),
               admin_ ? admin_->address() : "off");
  return Status::Ok();
}

void ProxyServer::WaitForSignal() {
  signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      Reload();
      WaitForSignal();
      return;
    }
    BeginShutdown();
  });
}

int ProxyServer::Run() {
  io_.run();
  return exit_code_;
}

void ProxyServer::MaybeStartAccepting() {
  if (accepting_ || !health_->AllChecked()) return;
  accepting_ = true;
  startup_timer_.cancel();
  SchedulePublish();
}

uint32_t ProxyServer::TargetId(const std::string& group, const std::string& address) {
  auto [it, inserted] = target_ids_.try_emplace({group, address}, next_target_id_);
  if (inserted) ++next_target_id_;
  return it->second;
}

Status ProxyServer::OpenListeners(const ProxyConfig& next, std::vector<uint32_t>* opened) {
  std::vector<std::pair<std::string, uint16_t>> created;
  for (const ListenerConfig& l : next.listeners) {
    const auto key = std::make_pair(l.address, l.port);
    if (listeners_.count(key) > 0) continue;
    ListenerSockets ls;
    ls.id = next_listener_id_;
    for (size_t i = 0; i < workers_.size(); ++i) {
      Result<int> fd = OpenListenSocket(l.address, l.port);
      if (!fd.ok()) {
        for (int f : ls.fds) ::close(f);
        for (const auto& k : created) {
          for (int f : listeners_[k].fds) ::close(f);
          listeners_.erase(k);
        }
        return InvalidArgument(fmt::format("listener {}: {}", l.name, fd.status().message()));
      }
      ls.fds.push_back(*fd);
    }
    ++next_listener_id_;
    opened->push_back(ls.id);
    listeners_[key] = std::move(ls);
    created.push_back(key);
  }
  return Status::Ok();
}

std::shared_ptr<const Snapshot> ProxyServer::BuildSnapshot() const {
  auto snap = std::make_shared<Snapshot>();
  snap->generation = generation_;
  snap->limits = config_.limits;
  for (const TargetGroupConfig& g : config_.target_groups) {
    TargetGroupSnap gs;
    gs.name = g.name;
    gs.algorithm = g.algorithm;
    for (const Endpoint& e : g.targets) {
      const std::string addr = e.ToString();
      const uint32_t id = target_ids_.at({g.name, addr});
      if (health_->health(id) != Health::kHealthy) continue;
      gs.routable.push_back(TargetSnap{id, e, addr});
    }
    snap->groups.push_back(std::move(gs));
  }
  for (const ListenerConfig& l : config_.listeners) {
    ListenerSnap ls;
    ls.id = listeners_.at({l.address, l.port}).id;
    ls.name = l.name;
    ls.port = l.port;
    ls.port_text = std::to_string(l.port);
    ls.allow = l.allow;
    for (size_t i = 0; i < config_.target_groups.size(); ++i) {
      if (config_.target_groups[i].name == l.target_group) ls.group = static_cast<int>(i);
    }
    snap->listeners.push_back(std::move(ls));
  }
  return snap;
}

void ProxyServer::UpdateHealthTargets() {
  std::vector<CheckedTarget> targets;
  for (const TargetGroupConfig& g : config_.target_groups) {
    for (const Endpoint& e : g.targets) {
      targets.push_back(CheckedTarget{TargetId(g.name, e.ToString()), e, g.health_check});
    }
  }
  health_->SetTargets(targets);
}

void ProxyServer::ForEachWorker(std::function<void(Worker&)> fn, std::function<void()> done) {
  auto remaining = std::make_shared<size_t>(workers_.size());
  for (auto& w : workers_) {
    Worker* wp = w.get();
    wp->Post([this, wp, fn, remaining, done] {
      fn(*wp);
      asio::post(io_, [remaining, done] {
        if (--*remaining == 0) done();
      });
    });
  }
}

void ProxyServer::GatherReports(
    std::function<void(std::shared_ptr<std::vector<WorkerReport>>)> done, int attempts) {
  // A health change not yet posted to the workers is posted first: a worker runs what is posted
  // to it in order, so once its report is back it routes by every health the answer shows. A
  // change that arrives while the reports are gathered is posted and gathered again (bounded, for
  // a target that flaps faster than a round trip).
  if (publish_pending_ && !shutting_down_) Publish([](Status) {});
  auto reports = std::make_shared<std::vector<WorkerReport>>(workers_.size());
  ForEachWorker([reports](Worker& w) { (*reports)[static_cast<size_t>(w.index())] = w.Report(); },
                [this, reports, done, attempts] {
                  if (publish_pending_ && !shutting_down_ && attempts > 1) {
                    GatherReports(done, attempts - 1);
                    return;
                  }
                  done(reports);
                });
}

// Posts the current routing table to every worker; `done` runs when all of them installed it.
void ProxyServer::Publish(Done done) {
  publish_pending_ = false;
  auto snap = BuildSnapshot();
  // Listening sockets: hand over those not handed yet (once accepting), close the removed ones.
  std::vector<std::vector<std::pair<uint32_t, int>>> opens(workers_.size());
  std::vector<uint32_t> closes;
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    bool wanted = false;
    for (const ListenerConfig& l : config_.listeners) {
      if (std::make_pair(l.address, l.port) == it->first) wanted = true;
    }
    if (!wanted) {
      if (it->second.handed) {
        closes.push_back(it->second.id);
      } else {
        for (int fd : it->second.fds) ::close(fd);
      }
      it = listeners_.erase(it);
      continue;
    }
    if (accepting_ && !it->second.handed) {
      for (size_t i = 0; i < workers_.size(); ++i) {
        opens[i].emplace_back(it->second.id, it->second.fds[i]);
      }
      it->second.fds.clear();
      it->second.handed = true;
    }
    ++it;
  }
  auto remaining = std::make_shared<size_t>(workers_.size());
  for (size_t i = 0; i < workers_.size(); ++i) {
    Worker* w = workers_[i].get();
    w->Post([this, w, snap, open = std::move(opens[i]), closes, remaining, done]() mutable {
      w->Install(snap, std::move(open), closes);
      asio::post(io_, [remaining, done] {
        if (--*remaining == 0) done(Status::Ok());
      });
    });
  }
}

void ProxyServer::SchedulePublish() {
  if (publish_pending_) return;
  publish_pending_ = true;
  asio::post(io_, [this] {
    if (publish_pending_ && !shutting_down_) Publish([](Status) {});
  });
}

Status ProxyServer::WriteStateFile() const {
  if (config_.state_file.empty()) return Status::Ok();
  ProxyConfig saved = config_;
  return WriteFileAtomically(config_.state_file, ProxyConfigToJson(saved));
}

void ProxyServer::Apply(ProxyConfig next, Done done) {
  // Process settings belong to the process: they change only with a restart.
  if ((!next.admin.empty() && next.admin != config_.admin) ||
      (!next.state_file.empty() && next.state_file != config_.state_file) ||
      (next.workers != 0 && next.workers != config_.workers) ||
      (!next.cpu_affinity.empty() && next.cpu_affinity != config_.cpu_affinity)) {
    done(InvalidArgument(
        "admin, state_file, workers and cpu_affinity can only be changed by a restart"));
    return;
  }
  MergeProcessSettings(config_, &next);
  std::vector<uint32_t> opened;
  Status st = OpenListeners(next, &opened);
  if (!st.ok()) {
    done(st);
    return;
  }
  ProxyConfig previous = std::move(config_);
  config_ = std::move(next);
  st = WriteStateFile();
  if (!st.ok()) {
    // Nothing changes: undo the sockets we opened for this config.
    config_ = std::move(previous);
    for (auto it = listeners_.begin(); it != listeners_.end();) {
      if (std::find(opened.begin(), opened.end(), it->second.id) != opened.end()) {
        for (int fd : it->second.fds) ::close(fd);
        it = listeners_.erase(it);
      } else {
        ++it;
      }
    }
    spdlog::error("a config change was refused, nothing changed: {}", st.message());
    done(Status(
        st.code() == StatusCode::kResourceExhausted ? st.code() : StatusCode::kInternal,
        "the config was not applied (the state file could not be written): " + st.message()));
    return;
  }
  ++generation_;
  // Targets that are routed again stop draining.
  std::erase_if(draining_, [this](const DrainingTarget& d) {
    const TargetGroupConfig* g = config_.FindTargetGroup(d.group);
    if (g == nullptr) return false;
    for (const Endpoint& e : g->targets) {
      if (e.ToString() == d.address) return true;
    }
    return false;
  });
  UpdateHealthTargets();
  Publish(std::move(done));
}

void ProxyServer::Reload() {
  spdlog::info("SIGHUP: reloading {}", config_path_);
  Result<std::string> text = ReadFile(config_path_);
  Result<ProxyConfig> parsed =
      text.ok() ? ParseProxyConfig(*text) : Result<ProxyConfig>(text.status());
  if (!parsed.ok()) {
    spdlog::error("reload failed, keeping the current config: {}", parsed.status().message());
    return;
  }
  ProxyConfig next = std::move(parsed).value();
  if (next.workers == 0) next.workers = config_.workers;
  Apply(std::move(next), [](Status st) {
    if (st.ok()) {
      spdlog::info("reload applied");
    } else {
      spdlog::error("reload failed, keeping the current config: {}", st.message());
    }
  });
}

void ProxyServer::CheckDraining() {
  if (draining_.empty() || shutting_down_) return;
  GatherReports([this](std::shared_ptr<std::vector<WorkerReport>> reports) {
    const auto now = Clock::now();
    std::vector<uint32_t> abort;
    std::erase_if(draining_, [&](const DrainingTarget& d) {
      int64_t in_flight = 0;
      for (const WorkerReport& r : *reports) {
        auto it = r.in_flight.find(d.id);
        if (it != r.in_flight.end()) in_flight += it->second;
      }
      if (in_flight <= 0) {
        spdlog::info("target {} of {} drained", d.address, d.group);
        return true;
      }
      if (now >= d.deadline) {
        spdlog::warn("target {} of {}: deregistration delay ended with {} requests in flight",
                     d.address, d.group, in_flight);
        abort.push_back(d.id);
        return true;
      }
      return false;
    });
    for (uint32_t id : abort) {
      for (auto& w : workers_) {
        Worker* wp = w.get();
        wp->Post([wp, id] { wp->AbortTarget(id); });
      }
    }
    if (!draining_.empty()) {
      drain_timer_.expires_after(kDrainCheckInterval);
      drain_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) CheckDraining();
      });
    }
  });
}

void ProxyServer::BeginShutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  spdlog::info("stopping: no new connections; finishing requests in flight");
  startup_timer_.cancel();
  drain_timer_.cancel();
  health_->Stop();
  ForEachWorker([](Worker& w) { w.Drain([] {}); }, [] {});
  PollShutdown(Clock::now() + config_.limits.drain_timeout);
}

// Waits until no worker has a client connection left (or the deadline), then stops.
void ProxyServer::PollShutdown(Clock::time_point deadline) {
  GatherReports([this, deadline](std::shared_ptr<std::vector<WorkerReport>> reports) {
    uint64_t active = 0;
    for (const WorkerReport& w : *reports) active += w.active_connections;
    if (active > 0 && Clock::now() < deadline) {
      drain_timer_.expires_after(std::chrono::milliseconds(50));
      drain_timer_.async_wait([this, deadline](const boost::system::error_code&) {
        PollShutdown(deadline);
      });
      return;
    }
    if (active > 0) spdlog::warn("drain timeout: closing {} connections", active);
    if (admin_) admin_->Close();
    signals_.cancel();
    for (auto& w : workers_) w->Stop();
    io_.stop();
  });
}

// ---------------------------------------------------------------------------------------------
// Admin API.

void ProxyServer::HandleAdmin(const HttpRequest& req, HttpServer::Respond respond) {
  const std::string& path = req.path;
  const std::string& m = req.method;
  if (shutting_down_ && m != "GET") {
    respond(Error(503, "shutting_down", "the proxy is stopping"));
    return;
  }
  if (path == "/healthz" && m == "GET") {
    respond(HttpResponse::Text(200, "ok\n"));
    return;
  }
  if (path == "/v1/state" && m == "GET") {
    GatherReports([this, respond](std::shared_ptr<std::vector<WorkerReport>> reports) {
      json j;
      RenderState(*reports, &j);
      respond(HttpResponse::Json(200, j.dump(2)));
    });
    return;
  }
  if (path == "/v1/config" && m == "GET") {
    respond(HttpResponse::Json(200, ProxyConfigToJson(config_)));
    return;
  }
  if (path == "/v1/config" && m == "PUT") {
    Result<ProxyConfig> parsed = ParseProxyConfig(req.body);
    if (!parsed.ok()) {
      respond(Error(400, "invalid_config", parsed.status().message()));
      return;
    }
    Apply(std::move(parsed).value(), [this, respond](Status st) {
      if (!st.ok()) {
        if (st.code() == StatusCode::kInvalidArgument) {
          respond(Error(400, "invalid_config", st.message()));
        } else {
          respond(ApplyError(st));
        }
        return;
      }
      respond(HttpResponse::Json(200, json{{"generation", generation_}}.dump()));
    });
    return;
  }
  if (path == "/v1/swap" && m == "POST") {
    HandleSwap(req, std::move(respond));
    return;
  }
  if (path == "/metrics" && m == "GET") {
    GatherReports([this, respond](std::shared_ptr<std::vector<WorkerReport>> reports) {
      HttpResponse r = HttpResponse::Text(200, RenderMetrics(*reports));
      r.content_type = "text/plain; version=0.0.4";
      respond(std::move(r));
    });
    return;
  }
  static const std::string kTg = "/v1/target_groups/";
  if (path.rfind(kTg, 0) == 0) {
    const std::string rest = path.substr(kTg.size());
    const size_t slash = rest.find('/');
    const std::string group = rest.substr(0, slash);
    const std::string tail = slash == std::string::npos ? "" : rest.substr(slash);
    if (tail == "/targets" && m == "POST") {
      HandleRegister(group, req, std::move(respond));
      return;
    }
    if (tail.rfind("/targets/", 0) == 0 && m == "DELETE") {
      HandleDeregister(group, tail.substr(9), std::move(respond));
      return;
    }
  }
  respond(Error(404, "not_found", "no such endpoint: " + m + " " + path));
}

void ProxyServer::HandleSwap(const HttpRequest& req, HttpServer::Respond respond) {
  json body;
  try {
    body = json::parse(req.body.empty() ? "{}" : req.body);
  } catch (const json::exception& e) {
    respond(Error(400, "invalid_json", std::string("malformed JSON: ") + e.what()));
    return;
  }
  std::vector<std::string> names;
  bool force = false;
  json expect;
  if (!body.is_object()) {
    respond(Error(400, "invalid_request", "the body must be a JSON object"));
    return;
  }
  if (body.contains("listeners")) {
    const json& l = body["listeners"];
    if (!l.is_array() || l.size() != 2 || !l[0].is_string() || !l[1].is_string()) {
      respond(Error(400, "invalid_request", "\"listeners\" must name exactly two listeners"));
      return;
    }
    names = {l[0].get<std::string>(), l[1].get<std::string>()};
  } else {
    names = {"production", "test"};
  }
  if (body.contains("force")) {
    if (!body["force"].is_boolean()) {
      respond(Error(400, "invalid_request", "\"force\" must be true or false"));
      return;
    }
    force = body["force"].get<bool>();
  }
  if (body.contains("expect")) {
    expect = body["expect"];
    if (!expect.is_object()) {
      respond(Error(400, "invalid_request",
                    "\"expect\" must map listener names to the target groups they route to now"));
      return;
    }
  }
  if (names[0] == names[1]) {
    respond(Error(400, "invalid_request", "a swap needs two different listeners"));
    return;
  }
  ProxyConfig next = config_;
  ListenerConfig* a = next.FindListener(names[0]);
  ListenerConfig* b = next.FindListener(names[1]);
  if (a == nullptr || b == nullptr) {
    respond(Error(400, "unknown_listener",
                  "no listener named " + (a == nullptr ? names[0] : names[1])));
    return;
  }
  // Idempotence for callers that retry: `expect` names where each listener routes before the swap.
  if (!expect.is_null()) {
    bool matches_before = true;
    bool matches_after = true;
    for (auto& [listener, group] : expect.items()) {
      const ListenerConfig* l = next.FindListener(listener);
      if (l == nullptr || !group.is_string()) {
        respond(Error(400, "invalid_request", "\"expect\" names an unknown listener: " + listener));
        return;
      }
      if (l->target_group != group.get<std::string>()) matches_before = false;
      const ListenerConfig* other = l == a ? b : (l == b ? a : nullptr);
      if (other == nullptr || other->target_group != group.get<std::string>()) {
        matches_after = false;
      }
    }
    if (!matches_before) {
      if (matches_after) {
        json j = {{"generation", generation_}, {"swapped", false}, {"already", true}};
        respond(HttpResponse::Json(200, j.dump()));
      } else {
        respond(Error(409, "unexpected_state",
                      "the listeners do not route as \"expect\" says; nothing was changed"));
      }
      return;
    }
  }
  auto healthy = [this](const std::string& group) {
    const TargetGroupConfig* g = config_.FindTargetGroup(group);
    if (g == nullptr) return 0;
    int n = 0;
    for (const Endpoint& e : g->targets) {
      auto it = target_ids_.find({group, e.ToString()});
      if (it != target_ids_.end() && health_->health(it->second) == Health::kHealthy) ++n;
    }
    return n;
  };
  const int ha = healthy(a->target_group);
  const int hb = healthy(b->target_group);
  if (!force && ((hb == 0 && ha > 0) || (ha == 0 && hb > 0))) {
    const std::string& bad = hb == 0 ? b->target_group : a->target_group;
    const std::string& where = hb == 0 ? a->name : b->name;
    respond(Error(409, "unhealthy_target_group",
                  fmt::format("target group {} has no healthy target; it will not be put behind "
                              "listener {} (use \"force\": true to swap anyway)",
                              bad, where)));
    return;
  }
  TargetGroupConfig* ga = next.FindTargetGroup(a->target_group);
  TargetGroupConfig* gb = next.FindTargetGroup(b->target_group);
  std::swap(a->target_group, b->target_group);
  if (ga != nullptr && gb != nullptr && ga != gb) {
    auto ia = ga->tags.find("IsProduction");
    auto ib = gb->tags.find("IsProduction");
    std::optional<std::string> va, vb;
    if (ia != ga->tags.end()) va = ia->second;
    if (ib != gb->tags.end()) vb = ib->second;
    if (vb) ga->tags["IsProduction"] = *vb; else ga->tags.erase("IsProduction");
    if (va) gb->tags["IsProduction"] = *va; else gb->tags.erase("IsProduction");
  }
  std::vector<std::string> listener_names = names;
  Apply(std::move(next), [this, respond, listener_names](Status st) {
    if (!st.ok()) {
      respond(ApplyError(st));
      return;
    }
    json ls = json::array();
    for (const std::string& n : listener_names) {
      const ListenerConfig* l = config_.FindListener(n);
      ls.push_back({{"name", n}, {"target_group", l ? l->target_group : ""}});
    }
    spdlog::info("swapped {} and {}: generation {}", listener_names[0], listener_names[1],
                 generation_);
    respond(HttpResponse::Json(
        200, json{{"generation", generation_}, {"swapped", true}, {"listeners", ls}}.dump()));
  });
}

void ProxyServer::HandleRegister(const std::string& group, const HttpRequest& req,
                                 HttpServer::Respond respond) {
  json body;
  try {
    body = json::parse(req.body);
  } catch (const json::exception& e) {
    respond(Error(400, "invalid_json", std::string("malformed JSON: ") + e.what()));
    return;
  }
  if (!body.is_object() || !body.contains("address") || !body["address"].is_string()) {
    respond(Error(400, "invalid_request", "the body must be {\"address\": \"IP:PORT\"}"));
    return;
  }
  Result<Endpoint> ep = ParseEndpoint(body["address"].get<std::string>());
  if (!ep.ok() || ep->port() == 0) {
    respond(Error(400, "invalid_address",
                  "invalid target address: " + body["address"].get<std::string>()));
    return;
  }
  ProxyConfig next = config_;
  TargetGroupConfig* g = next.FindTargetGroup(group);
  if (g == nullptr) {
    respond(Error(404, "unknown_target_group", "no target group named " + group));
    return;
  }
  for (const Endpoint& e : g->targets) {
    if (e == *ep) {
      respond(HttpResponse::Json(200, json{{"generation", generation_}, {"changed", false}}.dump()));
      return;
    }
  }
  g->targets.push_back(*ep);
  Apply(std::move(next), [this, respond](Status st) {
    if (!st.ok()) {
      respond(ApplyError(st));
      return;
    }
    respond(HttpResponse::Json(200, json{{"generation", generation_}, {"changed", true}}.dump()));
  });
}

void ProxyServer::HandleDeregister(const std::string& group, const std::string& address,
                                   HttpServer::Respond respond) {
  ProxyConfig next = config_;
  TargetGroupConfig* g = next.FindTargetGroup(group);
  if (g == nullptr) {
    respond(Error(404, "unknown_target_group", "no target group named " + group));
    return;
  }
  Result<Endpoint> ep = ParseEndpoint(address);
  if (!ep.ok()) {
    respond(Error(400, "invalid_address", "invalid target address: " + address));
    return;
  }
  auto it = std::find(g->targets.begin(), g->targets.end(), *ep);
  if (it == g->targets.end()) {
    respond(Error(404, "unknown_target", "target group " + group + " has no target " + address));
    return;
  }
  const std::string addr = ep->ToString();
  g->targets.erase(it);
  const Duration delay = g->deregistration_delay;
  Apply(std::move(next), [this, respond, group, addr, delay](Status st) {
    if (!st.ok()) {
      respond(ApplyError(st));
      return;
    }
    draining_.push_back(DrainingTarget{TargetId(group, addr), group, addr, Clock::now() + delay});
    CheckDraining();
    respond(HttpResponse::Json(200, json{{"generation", generation_}, {"changed", true},
                                         {"draining", addr}}.dump()));
  });
}

void ProxyServer::RenderState(const std::vector<WorkerReport>& reports, json* out) const {
  auto in_flight = [&reports](uint32_t id) {
    int64_t n = 0;
    for (const WorkerReport& r : reports) {
      auto it = r.in_flight.find(id);
      if (it != r.in_flight.end()) n += it->second;
    }
    return n;
  };
  json& j = *out;
  j["generation"] = generation_;
  j["accepting"] = accepting_;
  j["workers"] = json::array();
  for (size_t i = 0; i < reports.size(); ++i) {
    j["workers"].push_back({{"index", i},
                            {"connections", reports[i].active_connections},
                            {"accepted", reports[i].accepted},
                            {"idle_upstreams", reports[i].idle_upstreams}});
  }
  j["listeners"] = json::array();
  for (const ListenerConfig& l : config_.listeners) {
    json allow = json::array();
    for (const Cidr& c : l.allow) allow.push_back(c.ToString());
    j["listeners"].push_back({{"name", l.name},
                              {"address", l.address},
                              {"port", l.port},
                              {"target_group", l.target_group},
                              {"allow", allow}});
  }
  j["target_groups"] = json::array();
  for (const TargetGroupConfig& g : config_.target_groups) {
    json targets = json::array();
    for (const Endpoint& e : g.targets) {
      const std::string addr = e.ToString();
      const uint32_t id = target_ids_.at({g.name, addr});
      targets.push_back({{"address", addr},
                         {"health", HealthName(health_->health(id))},
                         {"in_flight", in_flight(id)}});
    }
    for (const DrainingTarget& d : draining_) {
      if (d.group != g.name) continue;
      targets.push_back({{"address", d.address},
                         {"health", HealthName(Health::kDraining)},
                         {"in_flight", in_flight(d.id)}});
    }
    json listeners = json::array();
    for (const ListenerConfig& l : config_.listeners) {
      if (l.target_group == g.name) listeners.push_back(l.name);
    }
    j["target_groups"].push_back({{"name", g.name},
                                  {"algorithm", AlgorithmName(g.algorithm)},
                                  {"tags", g.tags},
                                  {"listeners", listeners},
                                  {"targets", targets}});
  }
}

std::string ProxyServer::RenderMetrics(const std::vector<WorkerReport>& reports) const {
  std::map<std::pair<std::string, std::string>, RouteStats> routes;
  uint64_t retries = 0, active = 0, accepted = 0, idle = 0;
  std::map<uint32_t, uint64_t> connect_errors;
  for (const WorkerReport& r : reports) {
    for (const auto& [key, s] : r.routes) {
      RouteStats& t = routes[key];
      for (size_t i = 0; i < t.by_class.size(); ++i) t.by_class[i] += s.by_class[i];
      for (size_t i = 0; i < t.latency.size(); ++i) t.latency[i] += s.latency[i];
      t.latency_sum += s.latency_sum;
      t.latency_count += s.latency_count;
    }
    for (const auto& [id, n] : r.connect_errors) connect_errors[id] += n;
    retries += r.retries;
    active += r.active_connections;
    accepted += r.accepted;
    idle += r.idle_upstreams;
  }
  std::string out;
  out += "# HELP bluegreen_requests_total Requests by listener, target group and status class.\n";
  out += "# TYPE bluegreen_requests_total counter\n";
  static const char* kClass[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
  for (const auto& [key, s] : routes) {
    for (size_t c = 0; c < s.by_class.size(); ++c) {
      if (s.by_class[c] == 0 && c != 2) continue;
      out += fmt::format(
          "bluegreen_requests_total{{listener=\"{}\",target_group=\"{}\",code_class=\"{}\"}} {}\n",
          key.first, key.second, kClass[c], s.by_class[c]);
    }
  }
  out += "# HELP bluegreen_request_duration_seconds Time from request head to response end.\n";
  out += "# TYPE bluegreen_request_duration_seconds histogram\n";
  for (const auto& [key, s] : routes) {
    uint64_t cum = 0;
    const std::string labels =
        fmt::format("listener=\"{}\",target_group=\"{}\"", key.first, key.second);
    for (size_t b = 0; b < kLatencyBuckets.size(); ++b) {
      cum += s.latency[b];
      out += fmt::format("bluegreen_request_duration_seconds_bucket{{{},le=\"{}\"}} {}\n", labels,
                         kLatencyBuckets[b], cum);
    }
    cum += s.latency.back();
    out += fmt::format("bluegreen_request_duration_seconds_bucket{{{},le=\"+Inf\"}} {}\n", labels,
                       cum);
    out += fmt::format("bluegreen_request_duration_seconds_sum{{{}}} {}\n", labels, s.latency_sum);
    out += fmt::format("bluegreen_request_duration_seconds_count{{{}}} {}\n", labels,
                       s.latency_count);
  }
  std::map<uint32_t, std::pair<std::string, std::string>> by_id;
  for (const auto& [key, id] : target_ids_) by_id[id] = key;
  out += "# HELP bluegreen_upstream_connect_errors_total Failed connections to targets.\n";
  out += "# TYPE bluegreen_upstream_connect_errors_total counter\n";
  uint64_t total_errors = 0;
  for (const auto& [id, n] : connect_errors) {
    total_errors += n;
    const auto& key = by_id[id];
    out += fmt::format(
        "bluegreen_upstream_connect_errors_total{{target_group=\"{}\",target=\"{}\"}} {}\n",
        key.first, key.second, n);
  }
  if (connect_errors.empty()) out += "bluegreen_upstream_connect_errors_total 0\n";
  (void)total_errors;
  out += "# HELP bluegreen_upstream_retries_total Requests retried on a fresh connection.\n";
  out += "# TYPE bluegreen_upstream_retries_total counter\n";
  out += fmt::format("bluegreen_upstream_retries_total {}\n", retries);
  out += "# HELP bluegreen_target_healthy 1 when the target passes its health checks.\n";
  out += "# TYPE bluegreen_target_healthy gauge\n";
  for (const TargetGroupConfig& g : config_.target_groups) {
    for (const Endpoint& e : g.targets) {
      const std::string addr = e.ToString();
      const Health h = health_->health(target_ids_.at({g.name, addr}));
      out += fmt::format("bluegreen_target_healthy{{target_group=\"{}\",target=\"{}\"}} {}\n",
                         g.name, addr, h == Health::kHealthy ? 1 : 0);
    }
  }
  out += "# HELP bluegreen_active_connections Client connections open now.\n";
  out += "# TYPE bluegreen_active_connections gauge\n";
  out += fmt::format("bluegreen_active_connections {}\n", active);
  out += "# HELP bluegreen_accepted_connections_total Client connections accepted.\n";
  out += "# TYPE bluegreen_accepted_connections_total counter\n";
  out += fmt::format("bluegreen_accepted_connections_total {}\n", accepted);
  out += "# HELP bluegreen_idle_upstream_connections Pooled upstream connections.\n";
  out += "# TYPE bluegreen_idle_upstream_connections gauge\n";
  out += fmt::format("bluegreen_idle_upstream_connections {}\n", idle);
  out += "# HELP bluegreen_config_generation Generation of the applied routing table.\n";
  out += "# TYPE bluegreen_config_generation gauge\n";
  out += fmt::format("bluegreen_config_generation {}\n", generation_);
  return out;
}

std::string_view HealthName(Health h) {
  switch (h) {
    case Health::kInitial: return "initial";
    case Health::kHealthy: return "healthy";
    case Health::kUnhealthy: return "unhealthy";
    case Health::kDraining: return "draining";
  }
  return "unknown";
}

}  // namespace bluegreen::proxy
