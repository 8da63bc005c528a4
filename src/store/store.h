// Store: the control plane's state in one SQLite file (WAL journal, schema migrations by
// PRAGMA user_version). Every change serve makes is committed here before it takes effect, so a
// restarted serve knows what it had promised and what it had started.
//
// Records are plain structs; the store does not interpret them beyond keys and foreign keys.
// A write that fails because the state directory's disk is full or read-only returns
// kResourceExhausted with a message saying so; the store stays as it was before the call.
// Thread-safe: one connection, every call holds the store's mutex (calls are short).
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace bluegreen::store {

// Seconds and milliseconds since the epoch.
int64_t NowSeconds();
int64_t NowMillis();

struct StackRecord {
  std::string name;
  std::string spec_json;  // canonical JSON of the stack file (stack::StackSpecToJson)
  std::string spec_text;  // the file as the user gave it
  std::string live = "Code1";  // the service behind the production listener: Code1 or Code2
  bool deleting = false;       // `down` was asked; serve is removing it
  bool purge = false;          // with --purge
  int64_t created_at = 0;
  int64_t updated_at = 0;
  std::string last_commit;  // the branch head the pipeline saw last
};

// One run of the pipeline (or a rollback). Status and stage names are those of docs/pipeline.md.
struct ExecutionRecord {
  int64_t id = 0;
  std::string stack;
  int64_t number = 0;  // per stack, from 1; the build number
  std::string kind = "release";  // release | rollback
  std::string trigger;           // first | poll | webhook | release | rollback
  std::string commit;
  std::string commit_subject;
  std::string commit_author;
  std::string version;
  std::string status;  // InProgress WaitingForApproval Succeeded Failed Rejected Superseded
  std::string stage;   // Source Build Deploy Review Swap
  std::string stages;  // JSON: {"Build": {"status", "started_at", "ended_at"}, ...} (ms)
  std::string reason;  // why it failed, was rejected or superseded
  std::string deploy_services;  // "Code2", or "Code1,Code2" on the first run
  std::string swap_from;        // the live side when the swap was begun (its `expect`)
  std::string from_version;     // the production version before the swap
  std::string approved_by;
  std::string comment;
  std::string log_path;
  int64_t created_at = 0;  // ms
  int64_t updated_at = 0;  // ms
};

struct ServiceRecord {
  std::string stack;
  std::string identifier;  // Code1 or Code2
  std::optional<std::string> version;  // what it runs; none before the first deploy
  // A version being put on the service (rolling change), or the last one that failed.
  std::optional<std::string> rollout_version;
  std::string rollout_state;  // "", "in_progress", "failed"
  std::string rollout_error;
  int64_t rollout_started_at = 0;
};

struct VersionRecord {
  std::string stack;
  std::string version;
  std::string artifact_dir;  // process runtime
  std::string image;         // container runtimes
  int64_t created_at = 0;
};

struct TaskRecord {
  int64_t id = 0;
  std::string stack;
  std::string identifier;  // Code1 or Code2
  std::string version;
  std::string runtime;   // process, podman, docker
  std::string handle;    // runtime::TaskHandle::id; empty until started
  int port = 0;          // host port on 127.0.0.1
  std::string state;     // starting, running, draining, stopped, exited
  std::string log_path;
  int64_t started_at = 0;
  int64_t state_changed_at = 0;
};

struct EventRecord {
  int64_t id = 0;
  std::string stack;
  int64_t at = 0;
  std::string kind;
  std::string message;
};

// An API token (docs/api.md "Access"). The token itself is never stored, only its SHA-256.
struct TokenRecord {
  std::string name;     // unique; never "admin" (the bootstrap token's identity)
  std::string role;     // viewer | approver | admin
  std::string sha256;   // lowercase hex SHA-256 of the token
  int64_t created_at = 0;  // seconds; 0 = now (InsertToken)
  std::string created_by;  // the name of the token that created it
  std::optional<int64_t> last_used_at;  // seconds; none before its first use
};

class Store {
 public:
  // Opens (creating if needed) the database file and brings its schema up to date.
  static Result<std::unique_ptr<Store>> Open(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  int schema_version() const { return schema_version_; }

  // meta: small key/value facts (the bootstrap admin token's hash, ...).
  Result<std::optional<std::string>> GetMeta(const std::string& key);
  Status SetMeta(const std::string& key, const std::string& value);

  // Stacks. PutStack inserts or updates one stack and, for a new one, its two services.
  Status PutStack(const StackRecord& stack);
  Result<std::optional<StackRecord>> GetStack(const std::string& name);
  Result<std::vector<StackRecord>> ListStacks();
  Status MarkStackDeleting(const std::string& name, bool purge);
  Status SetLive(const std::string& name, const std::string& identifier);
  // Removes the stack, its services and tasks; with purge also its versions and events.
  Status DeleteStack(const std::string& name, bool purge);

  Result<std::vector<ServiceRecord>> ListServices(const std::string& stack);
  Status PutService(const ServiceRecord& service);

  // Versions. PutVersion returns kAlreadyExists if the version exists with other content.
  Status PutVersion(const VersionRecord& v);
  Result<std::optional<VersionRecord>> GetVersion(const std::string& stack,
                                                  const std::string& version);
  // Newest first.
  Result<std::vector<VersionRecord>> ListVersions(const std::string& stack);
  // Forgets one version (OK when there is no such version).
  Status DeleteVersion(const std::string& stack, const std::string& version);

  // Tasks. InsertTask assigns the id.
  Result<int64_t> InsertTask(const TaskRecord& task);
  Status UpdateTask(const TaskRecord& task);
  Status DeleteTask(int64_t id);
  // Every task not in state "stopped" (all stacks when stack is empty).
  Result<std::vector<TaskRecord>> ListTasks(const std::string& stack = "");

  Status AddEvent(const std::string& stack, const std::string& kind, const std::string& message);
  Result<std::vector<EventRecord>> ListEvents(const std::string& stack, int limit);


  // Executions. InsertExecution assigns id, number and times. With `last_commit`, the stack's
  // last_commit is set to it in the same transaction: a commit the poller or the webhook saw is
  // either recorded with its execution or not at all (a crash in between cannot build it twice);
  // AlreadyExists when it is the stack's last_commit already (the poller and the webhook saw the
  // same push: one execution).
  Result<ExecutionRecord> InsertExecution(const ExecutionRecord& e,
                                          const std::string* last_commit = nullptr);
  Status UpdateExecution(ExecutionRecord* e);
  Result<std::optional<ExecutionRecord>> GetExecution(const std::string& stack, int64_t number);
  // Newest first; all stacks when stack is empty; active = InProgress or WaitingForApproval.
  Result<std::vector<ExecutionRecord>> ListExecutions(const std::string& stack, int limit,
                                                      bool active_only = false);

  // API tokens. InsertToken returns kAlreadyExists when the name (or the hash) is taken;
  // DeleteToken kNotFound for an unknown name. ListTokens is sorted by name.
  Status InsertToken(const TokenRecord& t);
  Result<std::optional<TokenRecord>> FindTokenByHash(const std::string& sha256);
  Result<std::vector<TokenRecord>> ListTokens();
  Status DeleteToken(const std::string& name);
  Status SetTokenLastUsed(const std::string& name, int64_t at);

  // PRAGMA integrity_check: "ok" or the problems.
  Result<std::string> IntegrityCheck();

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  Status Migrate();
  Status Exec(const char* sql);
  // COMMIT; on failure the transaction is rolled back, never left open.
  Status Commit();

  std::mutex mu_;
  sqlite3* db_;
  int schema_version_ = 0;
};

}  // namespace bluegreen::store
