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
    EXPECT_EQ(s->schema_version(), 2);
    ASSERT_TRUE(s->SetMeta("k", "v").ok());
  }
  auto s = Open();
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->schema_version(), 2);
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

}  // namespace
}  // namespace bluegreen::store
