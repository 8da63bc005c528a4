#include "serve/api.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include <filesystem>
#include <fstream>
#include <set>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "serve/api_bodies.h"

namespace bluegreen::serve {
namespace {

using json = nlohmann::json;

HttpResponse Error(int status, std::string_view code, std::string_view message) {
  return HttpResponse::Json(
      status, json{{"error", {{"code", code}, {"message", message}}}}.dump());
}

// A failed store call. A full or read-only state directory (kResourceExhausted) is 507
// Insufficient Storage: nothing was changed, reads still work, the same call succeeds once
// the directory takes writes again.
HttpResponse StoreError(const Status& st) {
  spdlog::error("state store: {}", st.message());
  if (st.code() == StatusCode::kResourceExhausted) {
    return Error(507, "insufficient_storage", st.message() + "; nothing was changed");
  }
  if (st.code() == StatusCode::kUnavailable) return Error(503, "unavailable", st.message());
  return Error(500, "internal", "the state store failed: " + st.message());
}

bool ValidStackName(std::string_view n) {
  if (n.empty() || n.size() > 32) return false;
  for (char c : n) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

std::optional<json> ParseBody(const HttpRequest& req, HttpResponse* error) {
  Result<json> j = ParseJsonObject(req.body);
  if (!j.ok()) {
    *error = Error(400, "bad_request", j.status().message());
    return std::nullopt;
  }
  return std::move(*j);
}

json OptString(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }

std::vector<std::string> SplitPath(std::string_view path) {
  std::vector<std::string> parts;
  while (!path.empty()) {
    const size_t slash = path.find('/');
    if (slash != 0) parts.emplace_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

// "localhost/app:v1" -> "v1"; "app" -> "latest"; characters outside [A-Za-z0-9._-] become '-'.
std::string ImageVersionName(std::string_view image) {
  std::string_view tag = "latest";
  const size_t at = image.find('@');
  const size_t slash = image.rfind('/');
  const size_t colon = image.rfind(':');
  if (at != std::string_view::npos) {
    tag = image.substr(at + 1);
  } else if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    tag = image.substr(colon + 1);
  }
  std::string out;
  for (char c : tag.substr(0, 64)) {
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-') ? c
                                                                                            : '-';
  }
  return out.empty() || out == "." || out == ".." ? "latest" : out;
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : " ") + s;
  return out;
}

std::string AllowText(const std::vector<Cidr>& allow) {
  if (allow.empty()) return "everyone";
  std::string out;
  for (const Cidr& c : allow) out += (out.empty() ? "" : ",") + c.ToString();
  return out;
}

// "2026-11-28 19:40:01 UTC" for unix seconds.
std::string FormatUtc(int64_t unix_seconds) {
  return fmt::format("{:%Y-%m-%d %H:%M:%S} UTC",
                     fmt::gmtime(static_cast<std::time_t>(unix_seconds)));
}

// The status document's `runtime_status`: the reconciler's last check of the stack's runtime.
// The process runtime (nothing to check) and a container runtime not checked yet are reachable,
// with `since` null.
json RuntimeStatusJson(const std::optional<RuntimeHealth>& h) {
  if (!h) return {{"reachable", true}, {"error", ""}, {"since", nullptr}};
  return {{"reachable", h->reachable}, {"error", h->error}, {"since", h->since}};
}

}  // namespace

std::vector<std::string> DescribeChanges(const stack::StackSpec* before,
                                         const stack::StackSpec& after) {
  std::vector<std::string> c;
  const std::string& n = after.name;
  if (before == nullptr) {
    c.push_back(fmt::format("create listener production on port {} -> {} (Code1)",
                            after.load_balancer.production.port, TargetGroupName(n, "Code1")));
    c.push_back(fmt::format("create listener test on port {} -> {} (Code2), open to {}",
                            after.load_balancer.test.port, TargetGroupName(n, "Code2"),
                            AllowText(after.load_balancer.test.allow)));
    c.push_back(fmt::format("create target groups {} and {} (health check {} every {})",
                            TargetGroupName(n, "Code1"), TargetGroupName(n, "Code2"),
                            after.service.health_check.path,
                            FormatDuration(after.service.health_check.interval)));
    c.push_back(fmt::format("create services Code1 and Code2 ({} runtime, {} task{} each)",
                            stack::RuntimeName(after.service.runtime), after.service.desired_count,
                            after.service.desired_count == 1 ? "" : "s"));
    return c;
  }
  const stack::StackSpec& b = *before;
  auto port_change = [&](const char* which, const stack::ListenerSpec& x,
                         const stack::ListenerSpec& y) {
    if (x.port != y.port) {
      c.push_back(fmt::format("listener {}: port {} -> {}", which, x.port, y.port));
    }
    if (!(x.allow == y.allow)) {
      c.push_back(fmt::format("listener {}: open to {} -> {}", which, AllowText(x.allow),
                              AllowText(y.allow)));
    }
  };
  port_change("production", b.load_balancer.production, after.load_balancer.production);
  port_change("test", b.load_balancer.test, after.load_balancer.test);
  if (b.load_balancer.deregistration_delay != after.load_balancer.deregistration_delay) {
    c.push_back(fmt::format("deregistration delay {} -> {}",
                            FormatDuration(b.load_balancer.deregistration_delay),
                            FormatDuration(after.load_balancer.deregistration_delay)));
  }
  const stack::ServiceSpec& s0 = b.service;
  const stack::ServiceSpec& s1 = after.service;
  if (s0.desired_count != s1.desired_count) {
    c.push_back(fmt::format("services: desired_count {} -> {}", s0.desired_count,
                            s1.desired_count));
  }
  if (!(s0.health_check == s1.health_check)) c.push_back("target groups: health check changed");
  if (s0.runtime != s1.runtime) {
    c.push_back(fmt::format("services: runtime {} -> {} (for tasks started from now on)",
                            stack::RuntimeName(s0.runtime), stack::RuntimeName(s1.runtime)));
  }
  if (s0.command != s1.command) {
    c.push_back(fmt::format("services: command [{}] -> [{}] (for tasks started from now on)",
                            Join(s0.command), Join(s1.command)));
  }
  if (s0.env != s1.env) c.push_back("services: env changed (for tasks started from now on)");
  if (s0.port != s1.port || s0.image != s1.image) {
    c.push_back("services: container settings changed (for tasks started from now on)");
  }
  if (s0.deploy_timeout != s1.deploy_timeout) {
    c.push_back(fmt::format("services: deploy_timeout {} -> {}", FormatDuration(s0.deploy_timeout),
                            FormatDuration(s1.deploy_timeout)));
  }
  if (!(b.source == after.source)) c.push_back("source changed");
  if (!(b.build == after.build)) c.push_back("build changed");
  if (!(b.approval == after.approval)) c.push_back("approval changed");
  return c;
}

Api::Api(boost::asio::io_context& io, store::Store* store, Reconciler* reconciler,
         Pipeline* pipeline, std::string admin_token_sha256)
    : io_(io),
      store_(store),
      reconciler_(reconciler),
      pipeline_(pipeline),
      access_(store, std::move(admin_token_sha256)) {}

void Api::Handle(const HttpRequest& req, HttpServer::Respond respond) {
  const std::vector<std::string> p = SplitPath(req.path);
  const std::string& m = req.method;
  if (p.size() < 2 || p[0] != "api" || p[1] != "v1") {
    respond(Error(404, "not_found", fmt::format("no such path: {}", req.path)));
    return;
  }
  if (p.size() == 3 && p[2] == "healthz" && m == "GET") {
    respond(HttpResponse::Json(200, json{{"status", "ok"}, {"version", "0.1.0"}}.dump()));
    return;
  }
  try {
    // The webhook authenticates by its HMAC signature, not by a token.
    if (p.size() == 5 && p[2] == "stacks" && p[4] == "webhook" && m == "POST") {
      if (!ValidStackName(p[3])) return respond(Error(404, "not_found", "no such stack"));
      return respond(Webhook(p[3], req));
    }
    Route(p, req, respond);
  } catch (const std::exception& e) {
    spdlog::error("{} {}: {}", req.method, req.path, e.what());
    respond(Error(500, "internal", "internal error; see serve's log"));
  }
}

void Api::Route(const std::vector<std::string>& p, const HttpRequest& req,
                HttpServer::Respond respond) {
  const std::string& m = req.method;
  // Who calls, and whether their role allows the request: before any body is read.
  Result<Identity> who = access_.Authenticate(req.Header("Authorization"));
  if (!who.ok()) {
    if (who.status().code() != StatusCode::kUnauthenticated) {
      return respond(StoreError(who.status()));
    }
    return respond(Error(401, "unauthenticated", who.status().message()));
  }
  if (std::optional<std::string> denied = Denied(*who, RequiredRole(m, p, req.path))) {
    return respond(Error(403, "forbidden", *denied));
  }
  if (p.size() >= 3 && (p[2] == "whoami" || p[2] == "tokens")) {
    return respond(TokenRoute(p, req, *who));
  }
  // ---- The web console's live routes (docs/console.md); authorized like the other GETs. ----
  if (live_ != nullptr) {
    if (p.size() == 3 && p[2] == "stream") {
      if (m == "GET") return respond(live_->OpenOverviewStream());
      return respond(Error(405, "method_not_allowed", "use GET"));
    }
    if (p.size() == 5 && p[2] == "stacks" && (p[4] == "stream" || p[4] == "metrics")) {
      if (m != "GET") return respond(Error(405, "method_not_allowed", "use GET"));
      if (!ValidStackName(p[3])) return respond(Error(404, "not_found", "no such stack"));
      Result<json> s = StackStatus(p[3]);
      if (!s.ok()) {
        return respond(s.status().code() == StatusCode::kNotFound
                           ? Error(404, "not_found", s.status().message())
                           : StoreError(s.status()));
      }
      if (p[4] == "stream") return respond(live_->OpenStackStream(p[3]));
      return respond(HttpResponse::Json(200, live_->Metrics(p[3]).dump()));
    }
  }
  // ---- End of the console's routes. ----
  if (p.size() == 3 && p[2] == "stacks") {
    if (m == "GET") return respond(ListStacks());
    return respond(Error(405, "method_not_allowed", "use GET"));
  }
  if (p.size() >= 4 && p[2] == "stacks") {
    const std::string& name = p[3];
    if (!ValidStackName(name)) {
      return respond(Error(400, "bad_request",
                           fmt::format("bad stack name {:?}: use [a-z0-9-]{{1,32}}", name)));
    }
    if (p.size() == 4) {
      if (m == "GET") {
        Result<json> s = StackStatus(name);
        if (!s.ok()) {
          return respond(s.status().code() == StatusCode::kNotFound
                             ? Error(404, "not_found", s.status().message())
                             : StoreError(s.status()));
        }
        return respond(HttpResponse::Json(200, s->dump()));
      }
      if (m == "PUT") return PutStack(name, req, std::move(respond));
      if (m == "DELETE") return DeleteStack(name, req, std::move(respond));
      return respond(Error(405, "method_not_allowed", "use GET, PUT or DELETE"));
    }
    if (p.size() == 5 && p[4] == "versions") {
      if (m == "GET") return respond(ListVersions(name));
      if (m == "POST") return PostVersion(name, req, std::move(respond));
      return respond(Error(405, "method_not_allowed", "use GET or POST"));
    }
    if (p.size() == 5 && p[4] == "deploy") {
      if (m == "POST") return PostDeploy(name, req, std::move(respond));
      return respond(Error(405, "method_not_allowed", "use POST"));
    }
    if (p.size() == 5 && (p[4] == "release" || p[4] == "approve" || p[4] == "reject" ||
                          p[4] == "rollback")) {
      if (m == "POST") return PipelineAction(name, p[4], *who, req, std::move(respond));
      return respond(Error(405, "method_not_allowed", "use POST"));
    }
    if (p.size() == 5 && p[4] == "executions") {
      if (m == "GET") return respond(ListExecutions(name));
      return respond(Error(405, "method_not_allowed", "use GET"));
    }
    if (p.size() == 6 && p[4] == "executions") {
      if (m == "GET") return respond(GetExecution(name, p[5]));
      return respond(Error(405, "method_not_allowed", "use GET"));
    }
    if (p.size() == 7 && p[4] == "executions" && p[6] == "log") {
      if (m == "GET") return respond(GetLog(name, p[5], req));
      return respond(Error(405, "method_not_allowed", "use GET"));
    }
    if (p.size() == 6 && p[4] == "secrets") {
      if (m == "PUT") return respond(PutSecret(name, p[5], req));
      return respond(Error(405, "method_not_allowed", "use PUT"));
    }
    if (p.size() == 5 && p[4] == "events") {
      if (m == "GET") return respond(ListEvents(name));
      return respond(Error(405, "method_not_allowed", "use GET"));
    }
  }
  respond(Error(404, "not_found", fmt::format("no such path: {}", req.path)));
}

Result<json> Api::StackStatus(const std::string& name) {
  Result<std::optional<store::StackRecord>> rec = store_->GetStack(name);
  if (!rec.ok()) return rec.status();
  if (!rec->has_value() || (*rec)->deleting) {
    return NotFound(fmt::format("no stack named {}", name));
  }
  const store::StackRecord& s = **rec;
  Result<stack::StackSpec> spec = stack::ParseStackSpec(s.spec_json);
  if (!spec.ok()) return Internal("stored stack file is invalid: " + spec.status().message());
  Result<std::vector<store::ServiceRecord>> services = store_->ListServices(name);
  if (!services.ok()) return services.status();
  Result<std::vector<store::TaskRecord>> tasks = store_->ListTasks(name);
  if (!tasks.ok()) return tasks.status();
  const json proxy_state = reconciler_->ProxyState();

  auto health_of = [&](const std::string& group, const std::string& address) -> std::string {
    if (!proxy_state.is_object()) return "unknown";
    for (const json& g : proxy_state.value("target_groups", json::array())) {
      if (g.value("name", "") != group) continue;
      for (const json& t : g.value("targets", json::array())) {
        if (t.value("address", "") == address) return t.value("health", "unknown");
      }
    }
    return "unregistered";
  };

  json out;
  out["name"] = name;
  out["runtime"] = stack::RuntimeName(spec->service.runtime);
  out["runtime_status"] = RuntimeStatusJson(
      reconciler_->RuntimeHealthOf(std::string(stack::RuntimeName(spec->service.runtime))));
  out["live"] = s.live;
  out["listeners"] = json::array(
      {{{"name", "production"},
        {"port", spec->load_balancer.production.port},
        {"target_group", TargetGroupName(name, s.live)}},
       {{"name", "test"},
        {"port", spec->load_balancer.test.port},
        {"target_group", TargetGroupName(name, OtherSide(s.live))}}});
  out["target_groups"] = json::array();
  out["services"] = json::array();
  for (const store::ServiceRecord& svc : *services) {
    const std::string group = TargetGroupName(name, svc.identifier);
    json targets = json::array();
    std::set<std::string> seen;
    int running = 0;
    for (const store::TaskRecord& t : *tasks) {
      if (t.identifier != svc.identifier) continue;
      const std::string addr = fmt::format("127.0.0.1:{}", t.port);
      if (t.state != "running" && t.state != "draining") continue;
      std::string h = health_of(group, addr);
      if (t.state == "draining" && h == "unregistered") continue;
      targets.push_back({{"address", addr}, {"health", h}});
      seen.insert(addr);
      if (t.state == "running" && svc.version && t.version == *svc.version && h == "healthy") {
        ++running;
      }
    }
    // Targets the proxy has that serve has no task for (left over from a crash).
    if (proxy_state.is_object()) {
      for (const json& g : proxy_state.value("target_groups", json::array())) {
        if (g.value("name", "") != group) continue;
        for (const json& t : g.value("targets", json::array())) {
          const std::string addr = t.value("address", "");
          if (seen.insert(addr).second) {
            targets.push_back({{"address", addr}, {"health", t.value("health", "unknown")}});
          }
        }
      }
    }
    out["target_groups"].push_back(
        {{"name", group},
         {"tags",
          {{"Identifier", svc.identifier},
           {"Image", svc.version.value_or("")},
           {"IsProduction", s.live == svc.identifier ? "true" : "false"}}},
         {"targets", targets}});
    json rollout = nullptr;
    if (!svc.rollout_state.empty()) {
      rollout = {{"version", OptString(svc.rollout_version)},
                 {"state", svc.rollout_state},
                 {"error", svc.rollout_error},
                 {"started_at", svc.rollout_started_at}};
    }
    out["services"].push_back({{"name", fmt::format("{}-{}", name, svc.identifier == "Code1"
                                                                       ? "code1"
                                                                       : "code2")},
                               {"identifier", svc.identifier},
                               {"version", OptString(svc.version)},
                               {"desired_count", spec->service.desired_count},
                               {"running_count", running},
                               {"rollout", rollout}});
  }
  // The current (or else the latest) execution of the pipeline.
  out["execution"] = nullptr;
  Result<std::vector<store::ExecutionRecord>> execs = store_->ListExecutions(name, 1, true);
  if (execs.ok() && execs->empty()) execs = store_->ListExecutions(name, 1);
  if (execs.ok() && !execs->empty()) out["execution"] = ExecutionToJson(execs->front());
  out["tasks"] = json::array();
  for (const store::TaskRecord& t : *tasks) {
    out["tasks"].push_back({{"id", t.id},
                            {"service", t.identifier},
                            {"version", t.version},
                            {"address", fmt::format("127.0.0.1:{}", t.port)},
                            {"state", t.state},
                            {"handle", t.handle},
                            {"log", t.log_path}});
  }
  return out;
}

HttpResponse Api::ListStacks() {
  Result<std::vector<store::StackRecord>> stacks = store_->ListStacks();
  if (!stacks.ok()) return StoreError(stacks.status());
  json list = json::array();
  for (const store::StackRecord& s : *stacks) {
    if (s.deleting) continue;
    Result<json> st = StackStatus(s.name);
    if (!st.ok()) continue;
    json services = json::array();
    for (const json& svc : (*st)["services"]) {
      services.push_back({{"identifier", svc["identifier"]},
                          {"version", svc["version"]},
                          {"desired_count", svc["desired_count"]},
                          {"running_count", svc["running_count"]}});
    }
    list.push_back({{"name", s.name},
                    {"runtime", (*st)["runtime"]},
                    {"runtime_status", (*st)["runtime_status"]},
                    {"live", s.live},
                    {"production_port", (*st)["listeners"][0]["port"]},
                    {"test_port", (*st)["listeners"][1]["port"]},
                    {"services", services}});
  }
  return HttpResponse::Json(200, json{{"stacks", list}}.dump());
}

void Api::PutStack(const std::string& name, const HttpRequest& req, HttpServer::Respond respond) {
  Result<stack::StackSpec> spec = stack::ParseStackSpec(req.body);
  if (!spec.ok()) {
    return respond(Error(400, "invalid_stack_file", spec.status().message()));
  }
  if (spec->name != name) {
    return respond(Error(400, "bad_request",
                         fmt::format("the stack file is named {:?}, the URL says {:?}",
                                     spec->name, name)));
  }
  Result<std::vector<store::StackRecord>> all = store_->ListStacks();
  if (!all.ok()) return respond(StoreError(all.status()));
  std::optional<stack::StackSpec> before;
  for (const store::StackRecord& other : *all) {
    if (other.name == name) {
      if (other.deleting) {
        return respond(Error(409, "conflict",
                             fmt::format("stack {} is being removed; try again when "
                                         "`bluegreen down` has finished",
                                         name)));
      }
      Result<stack::StackSpec> b = stack::ParseStackSpec(other.spec_json);
      if (b.ok()) before = *b;
      continue;
    }
    Result<stack::StackSpec> o = stack::ParseStackSpec(other.spec_json);
    if (!o.ok()) continue;
    for (uint16_t port : {spec->load_balancer.production.port, spec->load_balancer.test.port}) {
      if (port == o->load_balancer.production.port || port == o->load_balancer.test.port) {
        return respond(Error(409, "conflict",
                             fmt::format("port {} is already a listener of stack {}", port,
                                         other.name)));
      }
    }
  }
  // A new listener port must be free on this machine, or the proxy could not open it.
  for (uint16_t port : {spec->load_balancer.production.port, spec->load_balancer.test.port}) {
    const bool ours = before && (port == before->load_balancer.production.port ||
                                 port == before->load_balancer.test.port);
    if (ours) continue;
    if (Status free = CheckPortBindable(port); !free.ok()) {
      return respond(Error(409, "conflict",
                           fmt::format("port {} cannot be a listener: {}", port, free.message())));
    }
  }
  const std::string canonical = stack::StackSpecToJson(*spec);
  std::vector<std::string> changes = DescribeChanges(before ? &*before : nullptr, *spec);
  if (before && changes.empty() && !(*before == *spec)) changes.push_back("stack file changed");
  if (!before || !changes.empty()) {
    store::StackRecord rec;
    rec.name = name;
    rec.spec_json = canonical;
    rec.spec_text = req.body;
    Status st = store_->PutStack(rec);
    if (!st.ok()) return respond(StoreError(st));
    (void)store_->AddEvent(name, before ? "stack_updated" : "stack_created",
                           before ? "stack updated: " + Join(changes) : "stack created");
    reconciler_->Notify();
  }
  // Idempotent; also after a crash between the stack's commit and this.
  if (std::optional<std::string> v = DeployStackImage(name, *spec)) {
    changes.push_back(fmt::format("deploy image {} as version {} to Code1 and Code2",
                                  spec->service.image, *v));
    reconciler_->Notify();
  }
  Result<json> status = StackStatus(name);
  json out{{"name", name}, {"created", !before}, {"changes", changes}};
  if (status.ok()) out["status"] = *status;
  respond(HttpResponse::Json(before ? 200 : 201, out.dump()));
}

std::optional<std::string> Api::DeployStackImage(const std::string& name,
                                                 const stack::StackSpec& spec) {
  if (spec.service.image.empty() || spec.service.runtime == stack::Runtime::kProcess) {
    return std::nullopt;
  }
  Result<std::vector<store::ServiceRecord>> services = store_->ListServices(name);
  if (!services.ok()) return std::nullopt;
  for (const store::ServiceRecord& s : *services) {
    if (s.version || !s.rollout_state.empty()) return std::nullopt;
  }
  store::VersionRecord v;
  v.stack = name;
  v.image = spec.service.image;
  v.version = ImageVersionName(spec.service.image);
  Status st = store_->PutVersion(v);
  if (st.code() == StatusCode::kAlreadyExists) {
    v.version = "image-" + Sha256Hex(v.image).substr(0, 12);
    st = store_->PutVersion(v);
  }
  if (!st.ok()) {
    spdlog::error("{}: cannot register the stack's image: {}", name, st.message());
    return std::nullopt;
  }
  for (store::ServiceRecord s : *services) {
    s.rollout_version = v.version;
    s.rollout_state = "in_progress";
    s.rollout_started_at = store::NowSeconds();
    if (!store_->PutService(s).ok()) return std::nullopt;
  }
  (void)store_->AddEvent(name, "rollout_started",
                         fmt::format("putting the stack's image {} (version {}) on Code1 and Code2",
                                     v.image, v.version));
  return v.version;
}

void Api::DeleteStack(const std::string& name, const HttpRequest& req,
                      HttpServer::Respond respond) {
  Result<std::optional<store::StackRecord>> rec = store_->GetStack(name);
  if (!rec.ok()) return respond(StoreError(rec.status()));
  if (!rec->has_value()) return respond(Error(404, "not_found", "no stack named " + name));
  const bool purge = req.query.find("purge=true") != std::string::npos ||
                     req.query.find("purge=1") != std::string::npos;
  Status st = store_->MarkStackDeleting(name, purge || (*rec)->purge);
  if (!st.ok()) return respond(StoreError(st));
  boost::asio::io_context& io = io_;
  reconciler_->WaitStackRemoved(name, [&io, respond, name, purge]() {
    boost::asio::post(io, [respond, name, purge] {
      respond(HttpResponse::Json(
          200, json{{"name", name}, {"removed", true}, {"purged", purge}}.dump()));
    });
  });
}

void Api::PostVersion(const std::string& name, const HttpRequest& req,
                      HttpServer::Respond respond) {
  HttpResponse error;
  std::optional<json> body = ParseBody(req, &error);
  if (!body) return respond(error);
  Result<std::optional<store::StackRecord>> rec = store_->GetStack(name);
  if (!rec.ok()) return respond(StoreError(rec.status()));
  if (!rec->has_value()) return respond(Error(404, "not_found", "no stack named " + name));
  Result<VersionBody> fields = ParseVersionBody(*body);
  if (!fields.ok()) return respond(Error(400, "bad_request", fields.status().message()));
  store::VersionRecord v;
  v.stack = name;
  v.version = std::move(fields->version);
  v.artifact_dir = std::move(fields->artifact_dir);
  v.image = std::move(fields->image);
  if (!v.artifact_dir.empty()) {
    std::error_code ec;
    if (v.artifact_dir[0] != '/' || !std::filesystem::is_directory(v.artifact_dir, ec)) {
      return respond(Error(400, "bad_request",
                           fmt::format("artifact_dir {:?} is not an absolute path to a directory",
                                       v.artifact_dir)));
    }
  }
  Result<std::optional<store::VersionRecord>> existing = store_->GetVersion(name, v.version);
  if (!existing.ok()) return respond(StoreError(existing.status()));
  Status st = store_->PutVersion(v);
  if (st.code() == StatusCode::kAlreadyExists) return respond(Error(409, "conflict", st.message()));
  if (!st.ok()) return respond(StoreError(st));
  if (!existing->has_value()) {
    (void)store_->AddEvent(name, "version_registered", "version " + v.version + " registered");
  }
  respond(HttpResponse::Json(existing->has_value() ? 200 : 201,
                             json{{"version", v.version},
                                  {"artifact_dir", v.artifact_dir},
                                  {"image", v.image}}
                                 .dump()));
}

void Api::PostDeploy(const std::string& name, const HttpRequest& req,
                     HttpServer::Respond respond) {
  HttpResponse error;
  std::optional<json> body = ParseBody(req, &error);
  if (!body) return respond(error);
  Result<std::string> field = ParseDeployBody(*body);
  if (!field.ok()) return respond(Error(400, "bad_request", field.status().message()));
  const std::string version = std::move(*field);
  Result<std::optional<store::StackRecord>> rec = store_->GetStack(name);
  if (!rec.ok()) return respond(StoreError(rec.status()));
  if (!rec->has_value() || (*rec)->deleting) {
    return respond(Error(404, "not_found", "no stack named " + name));
  }
  Result<std::optional<store::VersionRecord>> v = store_->GetVersion(name, version);
  if (!v.ok()) return respond(StoreError(v.status()));
  if (!v->has_value()) {
    return respond(Error(404, "not_found",
                         fmt::format("version {} of {} is not registered: register it first "
                                     "(bluegreen deploy {} --version {} --artifact DIR)",
                                     version, name, name, version)));
  }
  // A runtime that does not answer could start no task: refuse now rather than start a rollout
  // that can only time out.
  if (Result<stack::StackSpec> spec = stack::ParseStackSpec((*rec)->spec_json); spec.ok()) {
    const std::string runtime(stack::RuntimeName(spec->service.runtime));
    if (std::optional<RuntimeHealth> h = reconciler_->RuntimeHealthOf(runtime);
        h && !h->reachable) {
      return respond(
          Error(503, "runtime_unavailable",
                fmt::format("cannot deploy {} to {} now: {} (since {}); nothing was changed, the "
                            "running tasks keep serving; deploy again once it answers",
                            version, name, h->error, FormatUtc(h->since))));
    }
  }
  Result<std::vector<std::string>> targets = pipeline_->ManualDeploy(name, version);
  if (!targets.ok()) {
    const Status& st = targets.status();
    if (st.code() == StatusCode::kFailedPrecondition) return respond(Error(409, "conflict", st.message()));
    if (st.code() == StatusCode::kInvalidArgument) return respond(Error(400, "bad_request", st.message()));
    if (st.code() == StatusCode::kNotFound) return respond(Error(404, "not_found", st.message()));
    return respond(StoreError(st));
  }
  respond(HttpResponse::Json(
      202, json{{"name", name}, {"version", version}, {"services", *targets}}.dump()));
}

HttpResponse Api::ListVersions(const std::string& name) {
  Result<std::vector<store::VersionRecord>> vs = store_->ListVersions(name);
  if (!vs.ok()) return StoreError(vs.status());
  json list = json::array();
  for (const store::VersionRecord& v : *vs) {
    list.push_back({{"version", v.version},
                    {"artifact_dir", v.artifact_dir},
                    {"image", v.image},
                    {"created_at", v.created_at}});
  }
  return HttpResponse::Json(200, json{{"versions", list}}.dump());
}

namespace {

HttpResponse StatusError(const Status& st) {
  switch (st.code()) {
    case StatusCode::kNotFound: return Error(404, "not_found", st.message());
    case StatusCode::kFailedPrecondition: return Error(409, "conflict", st.message());
    case StatusCode::kInvalidArgument: return Error(400, "bad_request", st.message());
    case StatusCode::kUnauthenticated: return Error(401, "unauthenticated", st.message());
    case StatusCode::kResourceExhausted:
    case StatusCode::kUnavailable: return StoreError(st);
    default: return Error(500, "internal", st.message());
  }
}

std::optional<int64_t> ParseNumber(std::string_view s) {
  if (s.empty() || s.size() > 15) return std::nullopt;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace

void Api::PipelineAction(const std::string& name, const std::string& action,
                         const Identity& caller, const HttpRequest& req,
                         HttpServer::Respond respond) {
  HttpResponse error;
  std::optional<json> body = ParseBody(req, &error);
  if (!body) return respond(error);
  Result<std::string> comment_field = ParseCommentBody(*body);
  if (!comment_field.ok()) {
    return respond(Error(400, "bad_request", comment_field.status().message()));
  }
  const std::string comment = std::move(*comment_field);
  const std::string& who = caller.name;
  Result<store::ExecutionRecord> e = Status(StatusCode::kInternal, "unknown action");
  if (action == "release") {
    e = pipeline_->Release(name, "release");
    if (e.ok()) {
      (void)store_->AddEvent(name, "release",
                             fmt::format("execution {} released by {}", e->number, who));
    }
  }
  if (action == "approve") e = pipeline_->Approve(name, who, comment);
  if (action == "reject") e = pipeline_->Reject(name, who, comment);
  if (action == "rollback") e = pipeline_->Rollback(name, who, comment);
  if (!e.ok()) return respond(StatusError(e.status()));
  if (action != "approve" && action != "rollback") {
    return respond(HttpResponse::Json(action == "release" ? 202 : 200,
                                      json{{"execution", ExecutionToJson(*e)}}.dump()));
  }
  // Approve and rollback answer once the swap is applied (read your writes): 200 with the
  // execution Succeeded (production serves the version) or Failed (with the reason). If that
  // takes longer than 60 s, 202 with the execution as it is.
  auto once = std::make_shared<std::atomic<bool>>(false);
  auto timer = std::make_shared<boost::asio::steady_timer>(io_, std::chrono::seconds(60));
  boost::asio::io_context& io = io_;
  pipeline_->OnFinished(e->id, [&io, respond, once, timer](const store::ExecutionRecord& fin) {
    json out{{"execution", ExecutionToJson(fin)}};
    boost::asio::post(io, [respond, once, timer, out = std::move(out)] {
      if (once->exchange(true)) return;
      timer->cancel();
      respond(HttpResponse::Json(200, out.dump(-1, ' ', false, json::error_handler_t::replace)));
    });
  });
  const store::ExecutionRecord started = *e;
  timer->async_wait([respond, once, started](const boost::system::error_code& ec) {
    if (ec || once->exchange(true)) return;
    respond(HttpResponse::Json(202, json{{"execution", ExecutionToJson(started)}}.dump()));
  });
}

HttpResponse Api::ListExecutions(const std::string& name) {
  Result<std::vector<store::ExecutionRecord>> es = store_->ListExecutions(name, 100);
  if (!es.ok()) return StoreError(es.status());
  json list = json::array();
  for (const store::ExecutionRecord& e : *es) list.push_back(ExecutionToJson(e));
  return HttpResponse::Json(200, json{{"executions", list}}.dump());
}

HttpResponse Api::GetExecution(const std::string& name, const std::string& id) {
  std::optional<int64_t> n = ParseNumber(id);
  if (!n) return Error(400, "bad_request", "an execution id is a number");
  Result<std::optional<store::ExecutionRecord>> e = store_->GetExecution(name, *n);
  if (!e.ok()) return StoreError(e.status());
  if (!e->has_value()) return Error(404, "not_found", fmt::format("no execution {} of {}", id, name));
  return HttpResponse::Json(200, ExecutionToJson(**e).dump());
}

HttpResponse Api::GetLog(const std::string& name, const std::string& id, const HttpRequest& req) {
  std::optional<int64_t> n;
  if (id == "latest") {
    Result<std::vector<store::ExecutionRecord>> es = store_->ListExecutions(name, 1);
    if (!es.ok()) return StoreError(es.status());
    if (!es->empty()) n = es->front().number;
  } else {
    n = ParseNumber(id);
  }
  if (!n) return Error(404, "not_found", "no such execution");
  Result<std::optional<store::ExecutionRecord>> e = store_->GetExecution(name, *n);
  if (!e.ok()) return StoreError(e.status());
  if (!e->has_value()) return Error(404, "not_found", fmt::format("no execution {} of {}", id, name));
  int64_t offset = 0;
  const size_t at = req.query.find("offset=");
  if (at != std::string::npos) {
    std::string_view v = std::string_view(req.query).substr(at + 7);
    v = v.substr(0, v.find('&'));
    offset = ParseNumber(v).value_or(0);
  }
  std::string text;
  if (!(*e)->log_path.empty()) {
    std::ifstream in((*e)->log_path, std::ios::binary);
    if (in) {
      in.seekg(offset);
      std::string chunk(1 << 20, '\0');
      in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      chunk.resize(static_cast<size_t>(in.gcount()));
      text = std::move(chunk);
    }
  }
  const bool building = (*e)->status == "InProgress" &&
                        ((*e)->stage == "Source" || (*e)->stage == "Build");
  HttpResponse r = HttpResponse::Text(200, std::move(text));
  r.headers.emplace_back("X-Execution", std::to_string(*n));
  r.headers.emplace_back("X-Log-Offset", std::to_string(offset + static_cast<int64_t>(r.body.size())));
  r.headers.emplace_back("X-Log-Complete", building ? "false" : "true");
  return r;
}

HttpResponse Api::Webhook(const std::string& name, const HttpRequest& req) {
  Result<std::optional<store::ExecutionRecord>> e =
      pipeline_->Webhook(name, std::string(req.Header("X-Hub-Signature-256")), req.body);
  if (!e.ok()) return StatusError(e.status());
  if (!e->has_value()) return HttpResponse::Json(200, json{{"ignored", true}}.dump());
  return HttpResponse::Json(202, json{{"execution", ExecutionToJson(**e)}}.dump());
}

HttpResponse Api::PutSecret(const std::string& name, const std::string& key,
                            const HttpRequest& req) {
  if (key != "git_token" && key != "webhook_secret") {
    return Error(400, "bad_request", "the secrets are git_token and webhook_secret");
  }
  Result<std::optional<store::StackRecord>> rec = store_->GetStack(name);
  if (!rec.ok()) return StoreError(rec.status());
  if (!rec->has_value()) return Error(404, "not_found", "no stack named " + name);
  std::string value = req.body;
  while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
  if (value.empty() || value.size() > 4096) {
    return Error(400, "bad_request", "the secret must be 1 to 4096 bytes");
  }
  const std::string path = pipeline_->SecretPath(name, key);
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  const std::string tmp = path + ".tmp";
  // The secret file is replaced whole or not at all; the error names the file, never the value.
  auto failed = [&](int err) {
    ::unlink(tmp.c_str());
    const std::string why = fmt::format("cannot write {}: {}", path, std::strerror(err));
    if (err == ENOSPC || err == EDQUOT || err == EROFS) {
      return StoreError(Status(StatusCode::kResourceExhausted,
                               (err == EROFS ? "the state directory is read-only: "
                                             : "the state directory's disk is full: ") +
                                   why));
    }
    spdlog::error("{}", why);
    return Error(500, "internal", why);
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return failed(errno);
  int err = 0;
  if (::write(fd, value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    err = errno != 0 ? errno : ENOSPC;
  } else if (::fsync(fd) != 0) {
    err = errno;
  }
  ::close(fd);
  if (err != 0) return failed(err);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return failed(errno);
  (void)store_->AddEvent(name, "secret_set", key + " set");  // never the value
  return HttpResponse::Json(200, json{{"name", name}, {"secret", key}, {"set", true}}.dump());
}

HttpResponse Api::ListEvents(const std::string& name) {
  Result<std::vector<store::EventRecord>> es = store_->ListEvents(name, 200);
  if (!es.ok()) return StoreError(es.status());
  json list = json::array();
  for (const store::EventRecord& e : *es) {
    list.push_back({{"id", e.id}, {"at", e.at}, {"kind", e.kind}, {"message", e.message}});
  }
  return HttpResponse::Json(200, json{{"events", list}}.dump());
}

HttpResponse Api::TokenRoute(const std::vector<std::string>& p, const HttpRequest& req,
                             const Identity& who) {
  const std::string& m = req.method;
  if (p.size() == 3 && p[2] == "whoami") {
    if (m != "GET") return Error(405, "method_not_allowed", "use GET");
    return HttpResponse::Json(200, json{{"name", who.name},
                                        {"role", RoleName(who.role)},
                                        {"can",
                                         {{"read", true},
                                          {"approve", who.role >= Role::kApprover},
                                          {"admin", who.role >= Role::kAdmin}}}}
                                       .dump());
  }
  if (p.size() == 3 && p[2] == "tokens") {
    if (m == "POST") return CreateToken(req, who);
    if (m != "GET") return Error(405, "method_not_allowed", "use GET or POST");
    Result<std::vector<store::TokenRecord>> tokens = store_->ListTokens();
    if (!tokens.ok()) return StoreError(tokens.status());
    json list = json::array();
    for (const store::TokenRecord& t : *tokens) {
      list.push_back({{"name", t.name},
                      {"role", t.role},
                      {"created_at", t.created_at},
                      {"created_by", t.created_by},
                      {"last_used_at", t.last_used_at ? json(*t.last_used_at) : json(nullptr)}});
    }
    return HttpResponse::Json(200, json{{"tokens", list}}.dump());
  }
  if (p.size() == 4 && p[2] == "tokens") {
    if (m != "DELETE") return Error(405, "method_not_allowed", "use DELETE");
    const std::string& name = p[3];
    if (name == kBootstrapTokenName) {
      return Error(400, "bad_request",
                   "the bootstrap admin token cannot be revoked: to replace it, stop serve, "
                   "delete STATE_DIR/admin.token and start serve again");
    }
    Status st = store_->DeleteToken(name);
    if (st.code() == StatusCode::kNotFound) return Error(404, "not_found", st.message());
    if (!st.ok()) return StoreError(st);
    spdlog::info("token {} revoked by {}", name, who.name);
    return HttpResponse::Json(200, json{{"name", name}, {"revoked", true}}.dump());
  }
  return Error(404, "not_found", fmt::format("no such path: {}", req.path));
}

HttpResponse Api::CreateToken(const HttpRequest& req, const Identity& who) {
  HttpResponse error;
  std::optional<json> body = ParseBody(req, &error);
  if (!body) return error;
  Result<TokenBody> fields = ParseTokenBody(*body);
  if (!fields.ok()) return Error(400, "bad_request", fields.status().message());
  store::TokenRecord t;
  t.name = fields->name;
  t.role = std::string(RoleName(fields->role));
  t.created_by = who.name;
  t.created_at = store::NowSeconds();
  if (t.name == kBootstrapTokenName) {
    return Error(409, "conflict",
                 "the name admin is the bootstrap admin token's; choose another");
  }
  Result<std::string> token = NewToken();
  if (!token.ok()) return Error(500, "internal", token.status().message());
  t.sha256 = Sha256Hex(*token);
  Status st = store_->InsertToken(t);
  if (st.code() == StatusCode::kAlreadyExists) return Error(409, "conflict", st.message());
  if (!st.ok()) return StoreError(st);
  spdlog::info("token {} (role {}) created by {}", t.name, t.role, who.name);  // never the token
  return HttpResponse::Json(201, json{{"name", t.name},
                                      {"role", t.role},
                                      {"token", *token},
                                      {"created_at", t.created_at}}
                                     .dump());
}

}  // namespace bluegreen::serve
