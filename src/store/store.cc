#include "store/store.h"

#include <cerrno>
#include <chrono>
#include <memory>

#include <fmt/format.h>

namespace bluegreen::store {
namespace {

// The schema, one step per version. A step runs once, in a transaction, and is never edited
// after it shipped: new steps are appended.
constexpr const char* kMigrations[] = {
    // 1: stacks, services, versions, tasks, events, meta.
    R"sql(
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE stacks (
  name TEXT PRIMARY KEY,
  spec_json TEXT NOT NULL,
  spec_text TEXT NOT NULL,
  live TEXT NOT NULL DEFAULT 'Code1' CHECK (live IN ('Code1', 'Code2')),
  deleting INTEGER NOT NULL DEFAULT 0,
  purge INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE services (
  stack TEXT NOT NULL REFERENCES stacks(name) ON DELETE CASCADE,
  identifier TEXT NOT NULL CHECK (identifier IN ('Code1', 'Code2')),
  version TEXT,
  rollout_version TEXT,
  rollout_state TEXT NOT NULL DEFAULT '',
  rollout_error TEXT NOT NULL DEFAULT '',
  rollout_started_at INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (stack, identifier)
);
CREATE TABLE versions (
  stack TEXT NOT NULL,
  version TEXT NOT NULL,
  artifact_dir TEXT NOT NULL DEFAULT '',
  image TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  PRIMARY KEY (stack, version)
);
CREATE TABLE tasks (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  stack TEXT NOT NULL,
  identifier TEXT NOT NULL,
  version TEXT NOT NULL,
  runtime TEXT NOT NULL,
  handle TEXT NOT NULL DEFAULT '',
  port INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL,
  log_path TEXT NOT NULL DEFAULT '',
  started_at INTEGER NOT NULL DEFAULT 0,
  state_changed_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_by_stack ON tasks(stack, state);
CREATE TABLE events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  stack TEXT NOT NULL,
  at INTEGER NOT NULL,
  kind TEXT NOT NULL,
  message TEXT NOT NULL
);
CREATE INDEX events_by_stack ON events(stack, id);
)sql",
    // 2: pipeline executions; the last commit seen per stack.
    R"sql(
CREATE TABLE executions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  stack TEXT NOT NULL,
  number INTEGER NOT NULL,
  kind TEXT NOT NULL DEFAULT 'release' CHECK (kind IN ('release', 'rollback')),
  trigger TEXT NOT NULL DEFAULT '',
  commit_sha TEXT NOT NULL DEFAULT '',
  commit_subject TEXT NOT NULL DEFAULT '',
  commit_author TEXT NOT NULL DEFAULT '',
  version TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL,
  stage TEXT NOT NULL,
  stages TEXT NOT NULL DEFAULT '{}',
  reason TEXT NOT NULL DEFAULT '',
  deploy_services TEXT NOT NULL DEFAULT '',
  swap_from TEXT NOT NULL DEFAULT '',
  from_version TEXT NOT NULL DEFAULT '',
  approved_by TEXT NOT NULL DEFAULT '',
  comment TEXT NOT NULL DEFAULT '',
  log_path TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX executions_by_stack ON executions(stack, id);
ALTER TABLE stacks ADD COLUMN last_commit TEXT NOT NULL DEFAULT '';
)sql",
    // 3: API tokens with roles; only the SHA-256 of a token is kept, indexed for the look-up.
    R"sql(
CREATE TABLE tokens (
  name TEXT PRIMARY KEY,
  role TEXT NOT NULL CHECK (role IN ('viewer', 'approver', 'admin')),
  sha256 TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  created_by TEXT NOT NULL DEFAULT '',
  last_used_at INTEGER
);
)sql",
};

// The Status of a failed SQLite call. A disk that is full or read-only (the state directory's
// filesystem) is kResourceExhausted with a message that says so, naming the database file: the
// API answers it with 507. Other I/O errors are kUnavailable; the rest kInternal.
Status SqliteError(sqlite3* db, int rc) {
  const int primary = rc & 0xff;
  const char* file = sqlite3_db_filename(db, "main");
  const std::string path = file != nullptr && *file != '\0' ? file : "the state store";
  const std::string detail = sqlite3_errmsg(db);
  const bool io = primary == SQLITE_FULL || primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN ||
                  primary == SQLITE_READONLY;
  const int err = io ? sqlite3_system_errno(db) : 0;
  if (primary == SQLITE_FULL || err == ENOSPC || err == EDQUOT) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("the state directory's disk is full: cannot write {} (sqlite: {})",
                              path, detail));
  }
  if (primary == SQLITE_READONLY || err == EROFS) {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("the state directory is read-only: cannot write {} (sqlite: {})",
                              path, detail));
  }
  if (io) {
    return Unavailable(fmt::format("cannot read or write {}: {}{}", path, detail,
                                   err != 0 ? fmt::format(" ({})", std::strerror(err)) : ""));
  }
  return Internal(fmt::format("sqlite: {}", detail));
}

// A prepared statement, finalized on destruction.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Status status() const {
    if (rc_ == SQLITE_OK) return Status::Ok();
    return SqliteError(db_, rc_);
  }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, const std::optional<std::string>& v) {
    if (v) return Bind(i, *v);
    sqlite3_bind_null(stmt_, i);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& Bind(int i, const std::optional<int64_t>& v) {
    if (v) return Bind(i, *v);
    sqlite3_bind_null(stmt_, i);
    return *this;
  }
  // SQLITE_ROW: true; SQLITE_DONE: false; else an error.
  Result<bool> Step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_, rc);
  }
  Status Run() {
    Result<bool> r = Step();
    return r.ok() ? Status::Ok() : r.status();
  }
  std::string Text(int col) const {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }
  std::optional<std::string> OptText(int col) const {
    if (sqlite3_column_type(stmt_, col) == SQLITE_NULL) return std::nullopt;
    return Text(col);
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::optional<int64_t> OptInt(int col) const {
    if (sqlite3_column_type(stmt_, col) == SQLITE_NULL) return std::nullopt;
    return Int(col);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

#define BG_PREPARE(var, sql)              \
  Stmt var(db_, sql);                     \
  BG_RETURN_IF_ERROR(var.status())

StackRecord ReadStack(const Stmt& s) {
  StackRecord r;
  r.name = s.Text(0);
  r.spec_json = s.Text(1);
  r.spec_text = s.Text(2);
  r.live = s.Text(3);
  r.deleting = s.Int(4) != 0;
  r.purge = s.Int(5) != 0;
  r.created_at = s.Int(6);
  r.updated_at = s.Int(7);
  r.last_commit = s.Text(8);
  return r;
}

constexpr const char* kExecutionColumns =
    "id, stack, number, kind, trigger, commit_sha, commit_subject, commit_author, version, "
    "status, stage, stages, reason, deploy_services, swap_from, from_version, approved_by, "
    "comment, log_path, created_at, updated_at";

ExecutionRecord ReadExecution(const Stmt& s) {
  ExecutionRecord e;
  e.id = s.Int(0);
  e.stack = s.Text(1);
  e.number = s.Int(2);
  e.kind = s.Text(3);
  e.trigger = s.Text(4);
  e.commit = s.Text(5);
  e.commit_subject = s.Text(6);
  e.commit_author = s.Text(7);
  e.version = s.Text(8);
  e.status = s.Text(9);
  e.stage = s.Text(10);
  e.stages = s.Text(11);
  e.reason = s.Text(12);
  e.deploy_services = s.Text(13);
  e.swap_from = s.Text(14);
  e.from_version = s.Text(15);
  e.approved_by = s.Text(16);
  e.comment = s.Text(17);
  e.log_path = s.Text(18);
  e.created_at = s.Int(19);
  e.updated_at = s.Int(20);
  return e;
}
constexpr const char* kStackColumns =
    "name, spec_json, spec_text, live, deleting, purge, created_at, updated_at, last_commit";

TaskRecord ReadTask(const Stmt& s) {
  TaskRecord t;
  t.id = s.Int(0);
  t.stack = s.Text(1);
  t.identifier = s.Text(2);
  t.version = s.Text(3);
  t.runtime = s.Text(4);
  t.handle = s.Text(5);
  t.port = static_cast<int>(s.Int(6));
  t.state = s.Text(7);
  t.log_path = s.Text(8);
  t.started_at = s.Int(9);
  t.state_changed_at = s.Int(10);
  return t;
}

constexpr const char* kTokenColumns =
    "name, role, sha256, created_at, created_by, last_used_at";

TokenRecord ReadToken(const Stmt& s) {
  TokenRecord t;
  t.name = s.Text(0);
  t.role = s.Text(1);
  t.sha256 = s.Text(2);
  t.created_at = s.Int(3);
  t.created_by = s.Text(4);
  t.last_used_at = s.OptInt(5);
  return t;
}

}  // namespace

int64_t NowMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                     SQLITE_OPEN_FULLMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    Status st = db ? SqliteError(db, rc) : Internal("out of memory");
    sqlite3_close(db);
    return Status(st.code(), fmt::format("cannot open the state store {}: {}", path, st.message()));
  }
  if (sqlite3_db_readonly(db, "main") == 1) {  // SQLite fell back to read-only
    sqlite3_close(db);
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("cannot open the state store {} for writing: its directory is "
                              "read-only or not writable",
                              path));
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<Store> store(new Store(db));
  BG_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL"));
  BG_RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=FULL"));
  BG_RETURN_IF_ERROR(store->Exec("PRAGMA foreign_keys=ON"));
  BG_RETURN_IF_ERROR(store->Migrate());
  return store;
}

Store::~Store() { sqlite3_close(db_); }

Status Store::Exec(const char* sql) {
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db_, rc);
  return Status::Ok();
}

Status Store::Commit() {
  Status st = Exec("COMMIT");
  // A COMMIT that fails (a full disk) may leave the transaction open; every later statement
  // would then run inside it and never be committed.
  if (!st.ok() && sqlite3_get_autocommit(db_) == 0) (void)Exec("ROLLBACK");
  return st;
}

Status Store::Migrate() {
  std::lock_guard lock(mu_);
  {
    BG_PREPARE(s, "PRAGMA user_version");
    Result<bool> row = s.Step();
    if (!row.ok()) return row.status();
    schema_version_ = static_cast<int>(s.Int(0));
  }
  const int latest = static_cast<int>(std::size(kMigrations));
  if (schema_version_ > latest) {
    return FailedPrecondition(fmt::format(
        "the state store has schema version {}, newer than this bluegreen knows ({}); "
        "run a newer bluegreen",
        schema_version_, latest));
  }
  for (int v = schema_version_; v < latest; ++v) {
    BG_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status st = Exec(kMigrations[v]);
    if (st.ok()) st = Exec(fmt::format("PRAGMA user_version={}", v + 1).c_str());
    if (!st.ok()) {
      (void)Exec("ROLLBACK");
      return Internal(fmt::format("schema migration {} failed: {}", v + 1, st.message()));
    }
    BG_RETURN_IF_ERROR(Commit());
    schema_version_ = v + 1;
  }
  return Status::Ok();
}

Result<std::optional<std::string>> Store::GetMeta(const std::string& key) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "SELECT value FROM meta WHERE key = ?");
  s.Bind(1, key);
  Result<bool> row = s.Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(s.Text(0));
}

Status Store::SetMeta(const std::string& key, const std::string& value) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "INSERT INTO meta(key, value) VALUES(?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value");
  s.Bind(1, key).Bind(2, value);
  return s.Run();
}

Status Store::PutStack(const StackRecord& r) {
  std::lock_guard lock(mu_);
  BG_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  Status st = [&]() -> Status {
    BG_PREPARE(s, "INSERT INTO stacks(name, spec_json, spec_text, live, deleting, purge, "
                  "created_at, updated_at) VALUES(?, ?, ?, ?, 0, 0, ?, ?) "
                  "ON CONFLICT(name) DO UPDATE SET spec_json = excluded.spec_json, "
                  "spec_text = excluded.spec_text, updated_at = excluded.updated_at");
    const int64_t now = NowSeconds();
    s.Bind(1, r.name).Bind(2, r.spec_json).Bind(3, r.spec_text).Bind(4, r.live);
    s.Bind(5, now).Bind(6, now);
    BG_RETURN_IF_ERROR(s.Run());
    for (const char* id : {"Code1", "Code2"}) {
      BG_PREPARE(svc, "INSERT OR IGNORE INTO services(stack, identifier) VALUES(?, ?)");
      svc.Bind(1, r.name).Bind(2, std::string(id));
      BG_RETURN_IF_ERROR(svc.Run());
    }
    return Status::Ok();
  }();
  if (!st.ok()) {
    (void)Exec("ROLLBACK");
    return st;
  }
  return Commit();
}

Result<std::optional<StackRecord>> Store::GetStack(const std::string& name) {
  std::lock_guard lock(mu_);
  const std::string sql = fmt::format("SELECT {} FROM stacks WHERE name = ?", kStackColumns);
  BG_PREPARE(s, sql.c_str());
  s.Bind(1, name);
  Result<bool> row = s.Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<StackRecord>();
  return std::optional<StackRecord>(ReadStack(s));
}

Result<std::vector<StackRecord>> Store::ListStacks() {
  std::lock_guard lock(mu_);
  const std::string sql = fmt::format("SELECT {} FROM stacks ORDER BY name", kStackColumns);
  BG_PREPARE(s, sql.c_str());
  std::vector<StackRecord> out;
  for (;;) {
    Result<bool> row = s.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    out.push_back(ReadStack(s));
  }
  return out;
}

Status Store::MarkStackDeleting(const std::string& name, bool purge) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "UPDATE stacks SET deleting = 1, purge = ?, updated_at = ? WHERE name = ?");
  s.Bind(1, static_cast<int64_t>(purge ? 1 : 0)).Bind(2, NowSeconds()).Bind(3, name);
  return s.Run();
}

Status Store::SetLive(const std::string& name, const std::string& identifier) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "UPDATE stacks SET live = ?, updated_at = ? WHERE name = ?");
  s.Bind(1, identifier).Bind(2, NowSeconds()).Bind(3, name);
  return s.Run();
}

Status Store::DeleteStack(const std::string& name, bool purge) {
  std::lock_guard lock(mu_);
  BG_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  Status st = [&]() -> Status {
    std::vector<const char*> sqls = {"DELETE FROM tasks WHERE stack = ?",
                                     "DELETE FROM services WHERE stack = ?",
                                     "DELETE FROM stacks WHERE name = ?"};
    if (purge) {
      sqls.push_back("DELETE FROM versions WHERE stack = ?");
      sqls.push_back("DELETE FROM events WHERE stack = ?");
      sqls.push_back("DELETE FROM executions WHERE stack = ?");
    }
    for (const char* sql : sqls) {
      BG_PREPARE(s, sql);
      s.Bind(1, name);
      BG_RETURN_IF_ERROR(s.Run());
    }
    return Status::Ok();
  }();
  if (!st.ok()) {
    (void)Exec("ROLLBACK");
    return st;
  }
  return Commit();
}

Result<std::vector<ServiceRecord>> Store::ListServices(const std::string& stack) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "SELECT stack, identifier, version, rollout_version, rollout_state, "
                "rollout_error, rollout_started_at FROM services WHERE stack = ? "
                "ORDER BY identifier");
  s.Bind(1, stack);
  std::vector<ServiceRecord> out;
  for (;;) {
    Result<bool> row = s.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    ServiceRecord r;
    r.stack = s.Text(0);
    r.identifier = s.Text(1);
    r.version = s.OptText(2);
    r.rollout_version = s.OptText(3);
    r.rollout_state = s.Text(4);
    r.rollout_error = s.Text(5);
    r.rollout_started_at = s.Int(6);
    out.push_back(std::move(r));
  }
  return out;
}

Status Store::PutService(const ServiceRecord& r) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "UPDATE services SET version = ?, rollout_version = ?, rollout_state = ?, "
                "rollout_error = ?, rollout_started_at = ? WHERE stack = ? AND identifier = ?");
  s.Bind(1, r.version).Bind(2, r.rollout_version).Bind(3, r.rollout_state);
  s.Bind(4, r.rollout_error).Bind(5, r.rollout_started_at).Bind(6, r.stack).Bind(7, r.identifier);
  return s.Run();
}

Status Store::PutVersion(const VersionRecord& v) {
  std::lock_guard lock(mu_);
  BG_PREPARE(q, "SELECT artifact_dir, image FROM versions WHERE stack = ? AND version = ?");
  q.Bind(1, v.stack).Bind(2, v.version);
  Result<bool> row = q.Step();
  if (!row.ok()) return row.status();
  if (*row) {
    if (q.Text(0) == v.artifact_dir && q.Text(1) == v.image) return Status::Ok();
    return Status(StatusCode::kAlreadyExists,
                  fmt::format("version {} of {} exists with other content", v.version, v.stack));
  }
  BG_PREPARE(s, "INSERT INTO versions(stack, version, artifact_dir, image, created_at) "
                "VALUES(?, ?, ?, ?, ?)");
  s.Bind(1, v.stack).Bind(2, v.version).Bind(3, v.artifact_dir).Bind(4, v.image);
  s.Bind(5, v.created_at ? v.created_at : NowSeconds());
  return s.Run();
}

Result<std::optional<VersionRecord>> Store::GetVersion(const std::string& stack,
                                                        const std::string& version) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "SELECT stack, version, artifact_dir, image, created_at FROM versions "
                "WHERE stack = ? AND version = ?");
  s.Bind(1, stack).Bind(2, version);
  Result<bool> row = s.Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<VersionRecord>();
  return std::optional<VersionRecord>(
      VersionRecord{s.Text(0), s.Text(1), s.Text(2), s.Text(3), s.Int(4)});
}

Status Store::DeleteVersion(const std::string& stack, const std::string& version) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "DELETE FROM versions WHERE stack = ? AND version = ?");
  s.Bind(1, stack).Bind(2, version);
  return s.Run();
}

Result<std::vector<VersionRecord>> Store::ListVersions(const std::string& stack) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "SELECT stack, version, artifact_dir, image, created_at FROM versions "
                "WHERE stack = ? ORDER BY created_at DESC, rowid DESC");
  s.Bind(1, stack);
  std::vector<VersionRecord> out;
  for (;;) {
    Result<bool> row = s.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    out.push_back(VersionRecord{s.Text(0), s.Text(1), s.Text(2), s.Text(3), s.Int(4)});
  }
  return out;
}

Result<int64_t> Store::InsertTask(const TaskRecord& t) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "INSERT INTO tasks(stack, identifier, version, runtime, handle, port, state, "
                "log_path, started_at, state_changed_at) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  const int64_t now = NowSeconds();
  s.Bind(1, t.stack).Bind(2, t.identifier).Bind(3, t.version).Bind(4, t.runtime);
  s.Bind(5, t.handle).Bind(6, static_cast<int64_t>(t.port)).Bind(7, t.state);
  s.Bind(8, t.log_path).Bind(9, t.started_at ? t.started_at : now).Bind(10, now);
  BG_RETURN_IF_ERROR(s.Run());
  return static_cast<int64_t>(sqlite3_last_insert_rowid(db_));
}

Status Store::UpdateTask(const TaskRecord& t) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "UPDATE tasks SET handle = ?, port = ?, state = ?, log_path = ?, "
                "state_changed_at = ? WHERE id = ?");
  s.Bind(1, t.handle).Bind(2, static_cast<int64_t>(t.port)).Bind(3, t.state);
  s.Bind(4, t.log_path).Bind(5, NowSeconds()).Bind(6, t.id);
  return s.Run();
}

Status Store::DeleteTask(int64_t id) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "DELETE FROM tasks WHERE id = ?");
  s.Bind(1, id);
  return s.Run();
}

Result<std::vector<TaskRecord>> Store::ListTasks(const std::string& stack) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "SELECT id, stack, identifier, version, runtime, handle, port, state, log_path, "
                "started_at, state_changed_at FROM tasks WHERE state != 'stopped' "
                "AND (? = '' OR stack = ?) ORDER BY id");
  s.Bind(1, stack).Bind(2, stack);
  std::vector<TaskRecord> out;
  for (;;) {
    Result<bool> row = s.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    out.push_back(ReadTask(s));
  }
  return out;
}

Status Store::AddEvent(const std::string& stack, const std::string& kind,
                       const std::string& message) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "INSERT INTO events(stack, at, kind, message) VALUES(?, ?, ?, ?)");
  s.Bind(1, stack).Bind(2, NowSeconds()).Bind(3, kind).Bind(4, message);
  return s.Run();
}

Result<std::vector<EventRecord>> Store::ListEvents(const std::string& stack, int limit) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "SELECT id, stack, at, kind, message FROM events WHERE stack = ? "
                "ORDER BY id DESC LIMIT ?");
  s.Bind(1, stack).Bind(2, static_cast<int64_t>(limit));
  std::vector<EventRecord> out;
  for (;;) {
    Result<bool> row = s.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    out.push_back(EventRecord{s.Int(0), s.Text(1), s.Int(2), s.Text(3), s.Text(4)});
  }
  return out;
}

Result<ExecutionRecord> Store::InsertExecution(const ExecutionRecord& in,
                                               const std::string* last_commit) {
  std::lock_guard lock(mu_);
  ExecutionRecord e = in;
  BG_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  Status st = [&]() -> Status {
    if (last_commit != nullptr) {
      BG_PREPARE(q, "SELECT last_commit FROM stacks WHERE name = ?");
      q.Bind(1, e.stack);
      Result<bool> row = q.Step();
      if (!row.ok()) return row.status();
      if (*row && q.Text(0) == *last_commit) {
        return Status(StatusCode::kAlreadyExists,
                      "an execution of commit " + *last_commit + " was started already");
      }
    }
    {
      BG_PREPARE(q, "SELECT COALESCE(MAX(number), 0) + 1 FROM executions WHERE stack = ?");
      q.Bind(1, e.stack);
      Result<bool> row = q.Step();
      if (!row.ok()) return row.status();
      e.number = q.Int(0);
    }
    BG_PREPARE(s, "INSERT INTO executions(stack, number, kind, trigger, commit_sha, "
                  "commit_subject, commit_author, version, status, stage, stages, reason, "
                  "deploy_services, swap_from, from_version, approved_by, comment, log_path, "
                  "created_at, updated_at) "
                  "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    e.created_at = e.updated_at = NowMillis();
    s.Bind(1, e.stack).Bind(2, e.number).Bind(3, e.kind).Bind(4, e.trigger).Bind(5, e.commit);
    s.Bind(6, e.commit_subject).Bind(7, e.commit_author).Bind(8, e.version).Bind(9, e.status);
    s.Bind(10, e.stage).Bind(11, e.stages).Bind(12, e.reason).Bind(13, e.deploy_services);
    s.Bind(14, e.swap_from).Bind(15, e.from_version).Bind(16, e.approved_by).Bind(17, e.comment);
    s.Bind(18, e.log_path).Bind(19, e.created_at).Bind(20, e.updated_at);
    BG_RETURN_IF_ERROR(s.Run());
    e.id = static_cast<int64_t>(sqlite3_last_insert_rowid(db_));
    if (last_commit != nullptr) {
      BG_PREPARE(u, "UPDATE stacks SET last_commit = ? WHERE name = ?");
      u.Bind(1, *last_commit).Bind(2, e.stack);
      BG_RETURN_IF_ERROR(u.Run());
    }
    return Status::Ok();
  }();
  if (!st.ok()) {
    (void)Exec("ROLLBACK");
    return st;
  }
  BG_RETURN_IF_ERROR(Commit());
  return e;
}

Status Store::UpdateExecution(ExecutionRecord* e) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "UPDATE executions SET commit_sha = ?, commit_subject = ?, commit_author = ?, "
                "version = ?, status = ?, stage = ?, stages = ?, reason = ?, deploy_services = ?, "
                "swap_from = ?, from_version = ?, approved_by = ?, comment = ?, log_path = ?, "
                "updated_at = ? WHERE id = ?");
  e->updated_at = NowMillis();
  s.Bind(1, e->commit).Bind(2, e->commit_subject).Bind(3, e->commit_author).Bind(4, e->version);
  s.Bind(5, e->status).Bind(6, e->stage).Bind(7, e->stages).Bind(8, e->reason);
  s.Bind(9, e->deploy_services).Bind(10, e->swap_from).Bind(11, e->from_version);
  s.Bind(12, e->approved_by).Bind(13, e->comment).Bind(14, e->log_path).Bind(15, e->updated_at);
  s.Bind(16, e->id);
  return s.Run();
}

Result<std::optional<ExecutionRecord>> Store::GetExecution(const std::string& stack,
                                                            int64_t number) {
  std::lock_guard lock(mu_);
  const std::string sql = fmt::format(
      "SELECT {} FROM executions WHERE stack = ? AND number = ?", kExecutionColumns);
  BG_PREPARE(s, sql.c_str());
  s.Bind(1, stack).Bind(2, number);
  Result<bool> row = s.Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<ExecutionRecord>();
  return std::optional<ExecutionRecord>(ReadExecution(s));
}

Result<std::vector<ExecutionRecord>> Store::ListExecutions(const std::string& stack, int limit,
                                                           bool active_only) {
  std::lock_guard lock(mu_);
  const std::string sql = fmt::format(
      "SELECT {} FROM executions WHERE (? = '' OR stack = ?) {} ORDER BY id DESC LIMIT ?",
      kExecutionColumns,
      active_only ? "AND status IN ('InProgress', 'WaitingForApproval')" : "");
  BG_PREPARE(s, sql.c_str());
  s.Bind(1, stack).Bind(2, stack).Bind(3, static_cast<int64_t>(limit));
  std::vector<ExecutionRecord> out;
  for (;;) {
    Result<bool> row = s.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    out.push_back(ReadExecution(s));
  }
  return out;
}

Status Store::InsertToken(const TokenRecord& t) {
  std::lock_guard lock(mu_);
  BG_PREPARE(q, "SELECT name = ? FROM tokens WHERE name = ? OR sha256 = ?");
  q.Bind(1, t.name).Bind(2, t.name).Bind(3, t.sha256);
  Result<bool> row = q.Step();
  if (!row.ok()) return row.status();
  if (*row) {
    return Status(StatusCode::kAlreadyExists,
                  q.Int(0) != 0 ? fmt::format("a token named {} exists", t.name)
                                : std::string("a token with this secret exists"));
  }
  BG_PREPARE(s, "INSERT INTO tokens(name, role, sha256, created_at, created_by, last_used_at) "
                "VALUES(?, ?, ?, ?, ?, ?)");
  s.Bind(1, t.name).Bind(2, t.role).Bind(3, t.sha256);
  s.Bind(4, t.created_at ? t.created_at : NowSeconds()).Bind(5, t.created_by);
  s.Bind(6, t.last_used_at);
  return s.Run();
}

Result<std::optional<TokenRecord>> Store::FindTokenByHash(const std::string& sha256) {
  std::lock_guard lock(mu_);
  const std::string sql = fmt::format("SELECT {} FROM tokens WHERE sha256 = ?", kTokenColumns);
  BG_PREPARE(s, sql.c_str());
  s.Bind(1, sha256);
  Result<bool> row = s.Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<TokenRecord>();
  return std::optional<TokenRecord>(ReadToken(s));
}

Result<std::vector<TokenRecord>> Store::ListTokens() {
  std::lock_guard lock(mu_);
  const std::string sql = fmt::format("SELECT {} FROM tokens ORDER BY name", kTokenColumns);
  BG_PREPARE(s, sql.c_str());
  std::vector<TokenRecord> out;
  for (;;) {
    Result<bool> row = s.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    out.push_back(ReadToken(s));
  }
  return out;
}

Status Store::DeleteToken(const std::string& name) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "DELETE FROM tokens WHERE name = ?");
  s.Bind(1, name);
  BG_RETURN_IF_ERROR(s.Run());
  if (sqlite3_changes(db_) == 0) return NotFound(fmt::format("no token named {}", name));
  return Status::Ok();
}

Status Store::SetTokenLastUsed(const std::string& name, int64_t at) {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "UPDATE tokens SET last_used_at = ? WHERE name = ?");
  s.Bind(1, at).Bind(2, name);
  return s.Run();
}

Result<std::string> Store::IntegrityCheck() {
  std::lock_guard lock(mu_);
  BG_PREPARE(s, "PRAGMA integrity_check");
  std::string out;
  for (;;) {
    Result<bool> row = s.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    if (!out.empty()) out += "\n";
    out += s.Text(0);
  }
  return out;
}

}  // namespace bluegreen::store
