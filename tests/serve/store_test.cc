// Unit tests of the SQLite state store on a real file.
#include "store/store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

namespace bluegreen::store {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bluegreen_store_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/bluegreen.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Store> Open() {
    Result<std::unique_ptr<Store>> s = Store::Open(path_);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : nullptr;
  }

  static StackRecord Stack(const std::string& name) {
    StackRecord r;
    r.name = name;
    r.spec_json = "{}";
    r.spec_text = "name: " + name;
    return r;
  }

  std::string dir_;
  std::string path_;
};

TEST_F(StoreTest, CreatesSchemaInWalModeAndReopens) {
  {
    auto s = Open();
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->schema_version(), 3);
    ASSERT_TRUE(s->SetMeta("k", "v").ok());
  }
  auto s = Open();
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->schema_version(), 3);
  auto v = s->GetMeta("k");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->value_or(""), "v");
  EXPECT_EQ(s->IntegrityCheck().value(), "ok");

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST_F(StoreTest, RefusesAStoreFromANewerVersion) {
  { ASSERT_NE(Open(), nullptr); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  Result<std::unique_ptr<Store>> s = Store::Open(path_);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("newer"), std::string::npos) << s.status().message();
}

TEST_F(StoreTest, StackGetsTwoServicesAndKeepsLiveSideOnUpdate) {
  auto s = Open();
  ASSERT_TRUE(s->PutStack(Stack("demo")).ok());
  ASSERT_TRUE(s->SetLive("demo", "Code2").ok());
  StackRecord again = Stack("demo");
  again.spec_text = "changed";
  ASSERT_TRUE(s->PutStack(again).ok());
  auto rec = s->GetStack("demo");
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->live, "Code2");
  EXPECT_EQ((*rec)->spec_text, "changed");
  auto services = s->ListServices("demo");
  ASSERT_TRUE(services.ok());
  ASSERT_EQ(services->size(), 2u);
  EXPECT_EQ((*services)[0].identifier, "Code1");
  EXPECT_EQ((*services)[1].identifier, "Code2");
  EXPECT_FALSE((*services)[0].version.has_value());
  // The live side is Code1 or Code2, nothing else.
  EXPECT_FALSE(s->SetLive("demo", "Code3").ok());
}

TEST_F(StoreTest, AnExecutionAndTheHeadItBuildsAreRecordedTogetherOnce) {
  auto s = Open();
  ASSERT_TRUE(s->PutStack(Stack("demo")).ok());
  ExecutionRecord e;
  e.stack = "demo";
  e.trigger = "poll";
  e.commit = std::string(40, 'a');
  e.status = "InProgress";
  const std::string head = e.commit;
  Result<ExecutionRecord> first = s->InsertExecution(e, &head);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->number, 1);
  auto rec = s->GetStack("demo");
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->last_commit, head);
  // The same head again (the webhook after the poller): refused, nothing inserted.
  Result<ExecutionRecord> again = s->InsertExecution(e, &head);
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists) << again.status().ToString();
  // Without a head (a release by hand) the same commit may be built again.
  Result<ExecutionRecord> release = s->InsertExecution(e);
  ASSERT_TRUE(release.ok()) << release.status().ToString();
  EXPECT_EQ(release->number, 2);
  auto all = s->ListExecutions("demo", 10);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 2u);
}

TEST_F(StoreTest, VersionsAreImmutable) {
  auto s = Open();
  ASSERT_TRUE(s->PutStack(Stack("demo")).ok());
  VersionRecord v{"demo", "v1", "/srv/a", "", 0};
  ASSERT_TRUE(s->PutVersion(v).ok());
  EXPECT_TRUE(s->PutVersion(v).ok());  // the same again is fine
  v.artifact_dir = "/srv/b";
  EXPECT_EQ(s->PutVersion(v).code(), StatusCode::kAlreadyExists);
  auto got = s->GetVersion("demo", "v1");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->artifact_dir, "/srv/a");
}

TEST_F(StoreTest, DeleteVersionForgetsOnlyThatVersion) {
  auto s = Open();
  ASSERT_TRUE(s->PutStack(Stack("demo")).ok());
  ASSERT_TRUE(s->PutStack(Stack("other")).ok());
  ASSERT_TRUE(s->PutVersion(VersionRecord{"demo", "v1", "/srv/1", "", 1}).ok());
  ASSERT_TRUE(s->PutVersion(VersionRecord{"demo", "v2", "/srv/2", "", 2}).ok());
  ASSERT_TRUE(s->PutVersion(VersionRecord{"other", "v1", "/srv/o", "", 1}).ok());
  ASSERT_TRUE(s->DeleteVersion("demo", "v1").ok());
  EXPECT_TRUE(s->DeleteVersion("demo", "v1").ok());  // gone already: fine
  auto left = s->ListVersions("demo");
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].version, "v2");
  auto other = s->GetVersion("other", "v1");
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->has_value());
  // The name can be registered again, with other content.
  EXPECT_TRUE(s->PutVersion(VersionRecord{"demo", "v1", "/srv/new", "", 3}).ok());
}

TEST_F(StoreTest, DeleteKeepsHistoryUnlessPurged) {
  auto s = Open();
  for (const char* name : {"keep", "purge"}) {
    ASSERT_TRUE(s->PutStack(Stack(name)).ok());
    ASSERT_TRUE(s->PutVersion(VersionRecord{name, "v1", "/srv", "", 0}).ok());
    ASSERT_TRUE(s->AddEvent(name, "test", "hello").ok());
    TaskRecord t;
    t.stack = name;
    t.identifier = "Code1";
    t.version = "v1";
    t.runtime = "process";
    t.state = "running";
    ASSERT_TRUE(s->InsertTask(t).ok());
  }
  ASSERT_TRUE(s->DeleteStack("keep", false).ok());
  ASSERT_TRUE(s->DeleteStack("purge", true).ok());
  for (const char* name : {"keep", "purge"}) {
    EXPECT_FALSE(s->GetStack(name)->has_value());
    EXPECT_TRUE(s->ListServices(name)->empty());
    EXPECT_TRUE(s->ListTasks(name)->empty());
  }
  EXPECT_EQ(s->ListVersions("keep")->size(), 1u);
  EXPECT_EQ(s->ListEvents("keep", 10)->size(), 1u);
  EXPECT_TRUE(s->ListVersions("purge")->empty());
  EXPECT_TRUE(s->ListEvents("purge", 10)->empty());
}

TEST_F(StoreTest, TasksRoundTrip) {
  auto s = Open();
  ASSERT_TRUE(s->PutStack(Stack("demo")).ok());
  TaskRecord t;
  t.stack = "demo";
  t.identifier = "Code2";
  t.version = "v3";
  t.runtime = "podman";
  t.port = 41000;
  t.state = "starting";
  auto id = s->InsertTask(t);
  ASSERT_TRUE(id.ok());
  t.id = *id;
  t.handle = "abc";
  t.state = "running";
  ASSERT_TRUE(s->UpdateTask(t).ok());
  auto all = s->ListTasks();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].handle, "abc");
  EXPECT_EQ((*all)[0].state, "running");
  EXPECT_EQ((*all)[0].port, 41000);
  ASSERT_TRUE(s->DeleteTask(t.id).ok());
  EXPECT_TRUE(s->ListTasks()->empty());
}

TEST_F(StoreTest, MigratesASchema2StoreToTokens) {
  // A store as bluegreen with schema 2 left it: no tokens table.
  {
    auto s = Open();
    ASSERT_TRUE(s->PutStack(Stack("demo")).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "DROP TABLE tokens; PRAGMA user_version=2", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto s = Open();
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->schema_version(), 3);
  EXPECT_TRUE(s->GetStack("demo")->has_value());
  EXPECT_TRUE(s->ListTokens()->empty());
  TokenRecord t{"ci", "viewer", std::string(64, 'a'), 0, "admin", std::nullopt};
  EXPECT_TRUE(s->InsertToken(t).ok());
}

TEST_F(StoreTest, TokensRoundTrip) {
  auto s = Open();
  const std::string hash_a(64, 'a');
  const std::string hash_b(64, 'b');
  TokenRecord ci{"ci", "approver", hash_a, 0, "admin", std::nullopt};
  ASSERT_TRUE(s->InsertToken(ci).ok());
  ASSERT_TRUE(s->InsertToken(TokenRecord{"alice", "viewer", hash_b, 1700000000, "ci", 42}).ok());

  auto found = s->FindTokenByHash(hash_a);
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->name, "ci");
  EXPECT_EQ((*found)->role, "approver");
  EXPECT_EQ((*found)->sha256, hash_a);
  EXPECT_EQ((*found)->created_by, "admin");
  EXPECT_GT((*found)->created_at, 0) << "0 means now";
  EXPECT_FALSE((*found)->last_used_at.has_value());
  auto none = s->FindTokenByHash(std::string(64, 'c'));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());

  // Sorted by name; the given times are kept.
  auto all = s->ListTokens();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "alice");
  EXPECT_EQ((*all)[0].created_at, 1700000000);
  EXPECT_EQ((*all)[0].last_used_at.value_or(-1), 42);
  EXPECT_EQ((*all)[1].name, "ci");

  ASSERT_TRUE(s->SetTokenLastUsed("ci", 1800000000).ok());
  EXPECT_EQ((*s->FindTokenByHash(hash_a))->last_used_at.value_or(-1), 1800000000);

  ASSERT_TRUE(s->DeleteToken("ci").ok());
  EXPECT_FALSE(s->FindTokenByHash(hash_a)->has_value());
  EXPECT_EQ(s->DeleteToken("ci").code(), StatusCode::kNotFound);
  EXPECT_EQ(s->ListTokens()->size(), 1u);
  // The name is free again.
  EXPECT_TRUE(s->InsertToken(ci).ok());
}

TEST_F(StoreTest, TokenNamesAndHashesAreUniqueAndRolesChecked) {
  auto s = Open();
  const std::string hash_a(64, 'a');
  ASSERT_TRUE(s->InsertToken(TokenRecord{"ci", "viewer", hash_a, 0, "admin", std::nullopt}).ok());
  Status same_name =
      s->InsertToken(TokenRecord{"ci", "admin", std::string(64, 'b'), 0, "admin", std::nullopt});
  EXPECT_EQ(same_name.code(), StatusCode::kAlreadyExists);
  EXPECT_NE(same_name.message().find("ci"), std::string::npos) << same_name.message();
  EXPECT_EQ(s->InsertToken(TokenRecord{"other", "viewer", hash_a, 0, "admin", std::nullopt}).code(),
            StatusCode::kAlreadyExists);
  // A role other than viewer, approver and admin never gets in.
  EXPECT_FALSE(
      s->InsertToken(TokenRecord{"root", "root", std::string(64, 'c'), 0, "admin", std::nullopt})
          .ok());
  auto all = s->ListTokens();
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].role, "viewer");
}

}  // namespace
}  // namespace bluegreen::store
