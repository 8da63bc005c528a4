#include "serve/live_updates.h"

#include <fstream>

#include "serve/pipeline.h"

namespace bluegreen::serve {
namespace {

using json = nlohmann::json;

constexpr auto kTick = std::chrono::milliseconds(500);
constexpr auto kKeepAlive = std::chrono::seconds(15);
constexpr int64_t kLogPiece = 256 << 10;  // the most of a log one event carries
constexpr int kExecutions = 100;          // as GET .../executions

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

bool Building(const store::ExecutionRecord& e) {
  return e.status == "InProgress" && (e.stage == "Source" || e.stage == "Build");
}

}  // namespace

size_t CompleteUtf8Prefix(std::string_view text) {
  const size_t n = text.size();
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(text[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? n - back : n;
  }
  return n;
}

LiveUpdates::LiveUpdates(boost::asio::io_context& io, store::Store* store, StatusFn status,
                         const MetricsSampler* metrics)
    : io_(io),
      store_(store),
      status_(std::move(status)),
      metrics_(metrics),
      timer_(io),
      alive_(std::make_shared<bool>(true)) {}

LiveUpdates::~LiveUpdates() { Stop(); }

void LiveUpdates::Stop() {
  *alive_ = false;
  timer_.cancel();
  for (auto& [id, w] : watchers_) w.stream->Close();
  watchers_.clear();
}

HttpResponse LiveUpdates::OpenStackStream(const std::string& stack) { return Open(stack); }

HttpResponse LiveUpdates::OpenOverviewStream() { return Open(""); }

HttpResponse LiveUpdates::Open(std::string stack) {
  auto alive = alive_;
  HttpResponse r = HttpResponse::Stream(
      "text/event-stream; charset=utf-8",
      [this, alive, stack = std::move(stack)](std::shared_ptr<HttpStream> stream) {
        if (!*alive) return stream->Close();
        const uint64_t id = next_id_++;
        stream->OnClose([this, alive, id] {
          if (*alive) watchers_.erase(id);
        });
        Watcher& w = watchers_[id];
        w.stream = std::move(stream);
        w.stack = stack;
        w.stream->Write(": connected\n\n");
        w.last_write = std::chrono::steady_clock::now();
        Snapshots cache;
        const std::string overview = stack.empty() ? OverviewText(&cache) : "";
        if (!Update(w, &cache, stack.empty() ? &overview : nullptr)) {
          w.stream->Close();
          watchers_.erase(id);
          return;
        }
        ScheduleTick();
      });
  r.headers.emplace_back("Cache-Control", "no-store");
  r.headers.emplace_back("X-Accel-Buffering", "no");
  return r;
}

json LiveUpdates::Metrics(const std::string& stack, int64_t after) const {
  json samples = json::array();
  if (metrics_ != nullptr) {
    for (const TrafficSample& s : metrics_->Samples(stack, after)) {
      samples.push_back(TrafficSampleToJson(s));
    }
  }
  const int64_t interval = metrics_ != nullptr ? metrics_->interval().count() : 1000;
  return {{"interval_ms", interval}, {"samples", samples}};
}

json LiveUpdates::StackSummary(const std::string& stack, const json& status,
                               const std::vector<store::ExecutionRecord>& executions) const {
  json out = status;
  json commits = json::object();
  for (const json& svc : status.value("services", json::array())) {
    const json v = svc.value("version", json());
    if (!v.is_string() || commits.contains(v.get<std::string>())) continue;
    for (const store::ExecutionRecord& e : executions) {  // newest first
      if (e.kind != "release" || e.version != v.get<std::string>()) continue;
      commits[e.version] = {{"commit", e.commit},
                            {"commit_message", e.commit_subject},
                            {"author", e.commit_author},
                            {"execution", e.number}};
      break;
    }
  }
  out["commits"] = std::move(commits);
  return out;
}

void LiveUpdates::ScheduleTick() {
  if (ticking_ || watchers_.empty() || !*alive_) return;
  ticking_ = true;
  timer_.expires_after(kTick);
  auto alive = alive_;
  timer_.async_wait([this, alive](const boost::system::error_code& ec) {
    if (ec || !*alive) return;
    ticking_ = false;
    Tick();
  });
}

void LiveUpdates::Tick() {
  Snapshots cache;
  std::string overview;
  for (const auto& [id, w] : watchers_) {
    if (w.stack.empty()) {
      overview = OverviewText(&cache);
      break;
    }
  }
  for (auto it = watchers_.begin(); it != watchers_.end();) {
    Watcher& w = it->second;
    if (Update(w, &cache, w.stack.empty() ? &overview : nullptr)) {
      ++it;
      continue;
    }
    w.stream->Close();
    it = watchers_.erase(it);
  }
  ScheduleTick();
}

const LiveUpdates::Snapshot& LiveUpdates::Read(const std::string& stack, Snapshots* cache) {
  auto found = cache->find(stack);
  if (found != cache->end()) return found->second;
  Snapshot& s = (*cache)[stack];
  s.status = status_(stack);
  if (!s.status.ok()) return s;
  Result<std::vector<store::ExecutionRecord>> es = store_->ListExecutions(stack, kExecutions);
  if (!es.ok()) {
    s.status = es.status();
    return s;
  }
  s.executions = std::move(*es);
  json list = json::array();
  for (const store::ExecutionRecord& e : s.executions) list.push_back(ExecutionToJson(e));
  s.executions_text = Dump(json{{"executions", list}});
  s.summary = StackSummary(stack, *s.status, s.executions);
  s.status_text = Dump(s.summary);
  return s;
}

std::string LiveUpdates::OverviewText(Snapshots* cache) {
  Result<std::vector<store::StackRecord>> stacks = store_->ListStacks();
  if (!stacks.ok()) return "";
  json list = json::array();
  for (const store::StackRecord& rec : *stacks) {
    if (rec.deleting) continue;
    const Snapshot& s = Read(rec.name, cache);
    if (!s.status.ok()) continue;
    list.push_back(s.summary);
  }
  return Dump(json{{"stacks", list}});
}

bool LiveUpdates::Update(Watcher& w, Snapshots* cache, const std::string* overview) {
  if (w.stream->closed()) return false;
  if (overview != nullptr) {
    if (!overview->empty() && *overview != w.last_status) {
      w.last_status = *overview;
      Send(w, "stacks", *overview);
    }
  } else {
    const Snapshot& snap = Read(w.stack, cache);
    if (!snap.status.ok()) {
      if (snap.status.status().code() != StatusCode::kNotFound) return true;  // try again
      Send(w, "error",
           Dump(json{
               {"error", {{"code", "not_found"}, {"message", snap.status.status().message()}}}}));
      return false;
    }
    if (snap.status_text != w.last_status) {
      w.last_status = snap.status_text;
      Send(w, "status", snap.status_text);
    }
    if (snap.executions_text != w.last_executions) {
      w.last_executions = snap.executions_text;
      Send(w, "executions", snap.executions_text);
    }
    SendLog(w, snap);
    json m = Metrics(w.stack, w.metrics_after);
    if (!w.metrics_sent || !m["samples"].empty()) {
      if (!m["samples"].empty()) w.metrics_after = m["samples"].back().value("t", int64_t{0});
      w.metrics_sent = true;
      Send(w, "metrics", Dump(m));
    }
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - w.last_write >= kKeepAlive) {
    w.stream->Write(": keep-alive\n\n");
    w.last_write = now;
  }
  return !w.stream->closed();
}

void LiveUpdates::SendLog(Watcher& w, const Snapshot& snap) {
  const json& current = (*snap.status)["execution"];
  if (!current.is_object()) return;
  const int64_t id = current.value("id", int64_t{0});
  bool reset = false;
  if (id != w.log_execution) {
    w.log_execution = id;
    w.log_offset = -1;
    w.log_complete = false;
    reset = true;
  }
  if (w.log_complete) return;
  const store::ExecutionRecord* e = nullptr;
  for (const store::ExecutionRecord& x : snap.executions) {
    if (x.number == id) e = &x;
  }
  if (e == nullptr) return;
  const bool ended = !Building(*e);
  std::string text;
  int64_t size = 0;
  std::ifstream in;
  if (!e->log_path.empty()) in.open(e->log_path, std::ios::binary | std::ios::ate);
  if (in) size = static_cast<int64_t>(in.tellg());
  bool truncated = false;
  if (w.log_offset < 0) {
    w.log_offset = size > kLogPiece ? size - kLogPiece : 0;
    truncated = w.log_offset > 0;
  }
  const int64_t start = w.log_offset;
  if (in && size > start) {
    text.resize(static_cast<size_t>(std::min(size - start, kLogPiece)));
    in.seekg(start);
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(in.gcount()));
  }
  const bool at_end = start + static_cast<int64_t>(text.size()) >= size;
  if (!(ended && at_end)) text.resize(CompleteUtf8Prefix(text));
  w.log_offset += static_cast<int64_t>(text.size());
  const bool complete = ended && w.log_offset >= size;
  if (text.empty() && !reset && !complete) return;
  w.log_complete = complete;
  Send(w, "log",
       Dump(json{{"execution", id},
                 {"offset", start},
                 {"text", text},
                 {"reset", reset},
                 {"truncated", truncated},
                 {"complete", complete}}));
}

bool LiveUpdates::Send(Watcher& w, std::string_view event, const std::string& data) {
  std::string out;
  out.reserve(data.size() + event.size() + 16);
  out += "event: ";
  out += event;
  out += "\ndata: ";
  out += data;
  out += "\n\n";
  w.last_write = std::chrono::steady_clock::now();
  return w.stream->Write(out);
}

}  // namespace bluegreen::serve
