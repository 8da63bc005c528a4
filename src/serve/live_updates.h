// LiveUpdates: the server-sent event streams of the web console (docs/console.md).
//
//   GET /api/v1/stream              the overview: event `stacks` whenever any stack changes
//   GET /api/v1/stacks/NAME/stream  one stack: events `status`, `executions`, `log` (the current
//                                   execution's build log as it grows) and `metrics` (traffic
//                                   samples), each sent when it changed
//
// Each event is `event: NAME` and one `data:` line of JSON. The first events of a stream carry
// the whole state (the metrics event: every sample kept); later ones only what changed. A comment
// line (": keep-alive") goes out when a stream was quiet for 15 s, so proxies and clients keep it.
// When the stack is removed the stream sends `error` ({"error":{"code":"not_found",...}}) and ends.
//
// The state is compared every 500 ms on a timer of the API's io_context (the store has no change
// notifications); the work is done once per stack per tick, whatever the number of streams.
//
// Thread-safety: none; everything runs on the io_context given at construction, like the Api.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/http_server.h"
#include "serve/metrics_sampler.h"
#include "store/store.h"

namespace bluegreen::serve {

class LiveUpdates {
 public:
  // `status` answers the status document of a stack (as GET /api/v1/stacks/NAME).
  using StatusFn = std::function<Result<nlohmann::json>(const std::string& stack)>;

  LiveUpdates(boost::asio::io_context& io, store::Store* store, StatusFn status,
              const MetricsSampler* metrics);
  ~LiveUpdates();
  LiveUpdates(const LiveUpdates&) = delete;
  LiveUpdates& operator=(const LiveUpdates&) = delete;

  // The streaming answer to GET /api/v1/stacks/NAME/stream; the caller has checked that the
  // stack exists.
  HttpResponse OpenStackStream(const std::string& stack);
  // The streaming answer to GET /api/v1/stream.
  HttpResponse OpenOverviewStream();
  // GET /api/v1/stacks/NAME/metrics: {"interval_ms", "samples": [...]}.
  nlohmann::json Metrics(const std::string& stack, int64_t after = 0) const;
  // Ends every stream and the timer.
  void Stop();

  size_t streams() const { return watchers_.size(); }

  // The status document plus "commits": for each version the services run, the commit it was
  // built from ({"commit", "commit_message", "author", "execution"}), when an execution built it.
  nlohmann::json StackSummary(const std::string& stack, const nlohmann::json& status,
                              const std::vector<store::ExecutionRecord>& executions) const;

 private:
  struct Watcher {
    std::shared_ptr<HttpStream> stream;
    std::string stack;  // empty: the overview
    std::string last_status;
    std::string last_executions;
    int64_t log_execution = -1;
    int64_t log_offset = 0;
    bool log_complete = false;
    bool metrics_sent = false;
    int64_t metrics_after = 0;
    std::chrono::steady_clock::time_point last_write;
  };
  // What one tick read, per stack, so that several streams of a stack share it.
  struct Snapshot {
    Result<nlohmann::json> status = Status(StatusCode::kInternal, "not read");
    nlohmann::json summary;  // StackSummary
    std::string status_text;
    std::string executions_text;
    std::vector<store::ExecutionRecord> executions;
  };
  using Snapshots = std::map<std::string, Snapshot>;

  HttpResponse Open(std::string stack);
  void Tick();
  void ScheduleTick();
  const Snapshot& Read(const std::string& stack, Snapshots* cache);
  std::string OverviewText(Snapshots* cache);
  // Sends what changed for `w`; false when the stream is finished.
  bool Update(Watcher& w, Snapshots* cache, const std::string* overview);
  void SendLog(Watcher& w, const Snapshot& snap);
  bool Send(Watcher& w, std::string_view event, const std::string& data);

  boost::asio::io_context& io_;
  store::Store* store_;
  StatusFn status_;
  const MetricsSampler* metrics_;
  boost::asio::steady_timer timer_;
  bool ticking_ = false;
  uint64_t next_id_ = 1;
  std::map<uint64_t, Watcher> watchers_;
  std::shared_ptr<bool> alive_;
};

// The longest prefix of `text` that does not end inside a UTF-8 sequence (a log read in pieces
// may cut one); invalid bytes elsewhere are left for the JSON encoder to replace.
size_t CompleteUtf8Prefix(std::string_view text);

}  // namespace bluegreen::serve
