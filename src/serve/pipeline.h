// Pipeline: the stages of a release, per stack (docs/pipeline.md):
//   Source -> Build -> Deploy -> Review -> Swap -> Succeeded
// with Failed, Rejected and Superseded as the other ends, and rollback as a Swap of its own.
//
// Source and Build run on a thread per execution (they call git, the build's commands and, for a
// build.containerfile, the container engine's image build, which take time); they only write to
// the store. Deploy, Review and Swap advance in Advance(), which
// the reconciler calls on its own thread in every pass, before it syncs the proxy: the reconciler
// is the one writer to the proxy, so a swap and a config sync can never interleave. Every
// transition is committed to the store before it takes effect; after a crash, Start() resumes
// Source/Build from the beginning, and Advance() resumes the rest (a Swap is retried with the
// same `expect`, so it never swaps twice).
//
// Only one execution per stack is in Deploy, Review or Swap at a time. A newer build that is ready
// to deploy while an older execution waits in Review supersedes it.
//
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "serve/proxy_client.h"
#include "serve/reconciler.h"
#include "stack/stack_spec.h"
#include "store/store.h"

namespace bluegreen::serve {

// The JSON form of an execution (API and CLI).
nlohmann::json ExecutionToJson(const store::ExecutionRecord& e);

class Pipeline {
 public:
  // `keep_versions`: after each build, the build outputs (artifact directory or image) of the
  // stack's builds beyond the newest `keep_versions` are removed, with their versions, unless a
  // service, a task or an active execution uses them. 0 keeps every build.
  Pipeline(store::Store* store, Paths paths, std::function<void()> wake_reconciler,
           int keep_versions);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Resumes interrupted Source/Build stages and starts polling the stacks' repositories.
  void Start();
  void Stop();

  // Starts an execution of the stack's branch head (or of `sha` when given). With `seen_head`,
  // `sha` is the branch head the poller or the webhook saw: it is recorded as the stack's
  // last_commit with the execution, in one transaction.
  Result<store::ExecutionRecord> Release(const std::string& stack, const std::string& trigger,
                                         const std::string& sha = "", bool seen_head = false);
  Result<store::ExecutionRecord> Approve(const std::string& stack, const std::string& who,
                                         const std::string& comment);
  Result<store::ExecutionRecord> Reject(const std::string& stack, const std::string& who,
                                        const std::string& comment);
  Result<store::ExecutionRecord> Rollback(const std::string& stack, const std::string& who,
                                          const std::string& comment);
  // A GitHub push event: `signature` is the X-Hub-Signature-256 header. kUnauthenticated for a
  // missing or wrong signature (or no webhook secret set). Returns the execution started, or
  // nullopt when the push is for another branch or a commit already seen.
  Result<std::optional<store::ExecutionRecord>> Webhook(const std::string& stack,
                                                        const std::string& signature,
                                                        const std::string& body);

  // Called by the reconciler in every pass, on its thread.
  // Returns the stacks with a swap in flight: their listener routing belongs to the swap until it
  // is recorded, so the reconciler must not sync it from the store.
  std::set<std::string> Advance(const std::vector<store::StackRecord>& stacks,
                                const nlohmann::json& proxy_state, const ProxyClient& proxy);
  // A version put by hand on the test side (on both when no side has one), as POST .../deploy.
  // kFailedPrecondition while an execution of the stack is in Deploy, Review or Swap, or a
  // rollout is in progress. Returns the services it changes.
  Result<std::vector<std::string>> ManualDeploy(const std::string& stack, const std::string& version);
  // Ends every active execution of a stack that is being removed.
  void FailActive(const std::string& stack, const std::string& reason);
  // Called by the reconciler when a stack is removed: stops its builds.
  void CancelStack(const std::string& stack);

  std::string SecretPath(const std::string& stack, const std::string& key) const;

  // Calls `done` once the execution (by id) has ended, with its final record; at once if it has
  // ended already. `done` runs on whichever thread ends it and must not block.
  void OnFinished(int64_t id, std::function<void(const store::ExecutionRecord&)> done);

 private:
  struct Build {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> cancel;
    std::string stack;
    bool done = false;
  };

  void StartBuild(store::ExecutionRecord e);
  void RunSourceAndBuild(store::ExecutionRecord e, std::shared_ptr<std::atomic<bool>> cancel);
  void PollLoop();
  void AdvanceStack(const store::StackRecord& stack, const stack::StackSpec& spec,
                    const nlohmann::json& proxy_state, const ProxyClient& proxy);
  void DoSwap(store::ExecutionRecord e, const store::StackRecord& stack,
              const nlohmann::json& proxy_state, const ProxyClient& proxy);
  void Finish(store::ExecutionRecord* e, const std::string& status, const std::string& reason);
  std::string ReadSecret(const std::string& stack, const std::string& key) const;
  void Reap();
  // Removes the builds of `stack` that keep_versions_ does not keep (see the constructor).
  void PruneVersions(const std::string& stack, const stack::StackSpec& spec);

  store::Store* store_;
  Paths paths_;
  std::function<void()> wake_;
  const int keep_versions_;

  std::mutex exec_mu_;  // serializes read-modify-write of executions
  std::mutex waiters_mu_;
  std::multimap<int64_t, std::function<void(const store::ExecutionRecord&)>> waiters_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::map<int64_t, Build> builds_;  // by execution id; guarded by mu_
  std::map<std::string, std::chrono::steady_clock::time_point> next_poll_;  // poll thread only
  std::thread poller_;
};

}  // namespace bluegreen::serve
