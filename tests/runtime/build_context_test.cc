// Tests of TarDirectory: the archive it writes is read back by the system's tar (GNU tar), the
// reference reader, and the extracted tree is compared with the original.
#include "runtime/build_context.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace bluegreen::runtime {
namespace {

namespace fs = std::filesystem;

class TarDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/bg-tar-XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    src_ = dir_ / "src";
    fs::create_directories(src_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void Write(const std::string& rel, const std::string& content,
             fs::perms perms = fs::perms(0644)) {
    const fs::path p = src_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << content;
    fs::permissions(p, perms);
  }

  static std::string Read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  // Writes `archive` to a file and runs `tar ARGS -f FILE`; its exit status and output.
  std::pair<int, std::string> Tar(const std::string& archive, const std::string& args) {
    const fs::path file = dir_ / "context.tar";
    std::ofstream(file, std::ios::binary) << archive;
    const fs::path out = dir_ / "tar.out";
    const std::string cmd = "tar " + args + " -f " + file.string() + " >" + out.string() + " 2>&1";
    const int st = std::system(cmd.c_str());  // NOLINT(concurrency-mt-unsafe)
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, Read(out)};
  }

  fs::path dir_;
  fs::path src_;
};

TEST_F(TarDirectoryTest, SystemTarExtractsTheSameTree) {
  const std::string long_dir(120, 'd');
  const std::string long_target = "../" + std::string(150, 't');
  Write("run.sh", "#!/bin/sh\necho hi\n", fs::perms(0755));
  Write("data/a.txt", "a\n");
  Write(long_dir + "/f.txt", "deep\n");
  Write(".git/config", "[core]\n");
  Write("sub/.git/kept", "only the top-level .git is left out\n");
  fs::create_directories(src_ / "empty");
  fs::create_symlink("data/a.txt", src_ / "link");
  fs::create_symlink(long_target, src_ / "dangling");
  ASSERT_EQ(::mkfifo((src_ / "fifo").c_str(), 0644), 0);

  Result<std::string> tar = TarDirectory(src_.string(), {".git"}, 1 << 20);
  ASSERT_TRUE(tar.ok()) << tar.status().ToString();
  EXPECT_EQ(tar->size() % 512, 0u);

  auto [rc, listing] = Tar(*tar, "-t");
  ASSERT_EQ(rc, 0) << listing;
  EXPECT_EQ(listing, "dangling\ndata/\ndata/a.txt\n" + long_dir + "/\n" + long_dir +
                         "/f.txt\nempty/\nlink\nrun.sh\nsub/\nsub/.git/\nsub/.git/kept\n");

  const fs::path out = dir_ / "out";
  fs::create_directories(out);
  std::string output;
  std::tie(rc, output) = Tar(*tar, "-x -C " + out.string());
  ASSERT_EQ(rc, 0) << output;
  EXPECT_EQ(Read(out / "run.sh"), "#!/bin/sh\necho hi\n");
  EXPECT_EQ(fs::status(out / "run.sh").permissions() & fs::perms::all, fs::perms(0755));
  EXPECT_EQ(fs::status(out / "data/a.txt").permissions() & fs::perms::all, fs::perms(0644));
  EXPECT_EQ(Read(out / long_dir / "f.txt"), "deep\n");
  EXPECT_EQ(Read(out / "sub/.git/kept"), "only the top-level .git is left out\n");
  EXPECT_TRUE(fs::is_directory(out / "empty"));
  EXPECT_EQ(fs::read_symlink(out / "link"), "data/a.txt");
  EXPECT_EQ(fs::read_symlink(out / "dangling"), long_target);
  EXPECT_FALSE(fs::exists(out / ".git"));
  EXPECT_FALSE(fs::exists(fs::symlink_status(out / "fifo")));
  struct stat in_st {
  }, out_st{};
  ASSERT_EQ(::stat((src_ / "data/a.txt").c_str(), &in_st), 0);
  ASSERT_EQ(::stat((out / "data/a.txt").c_str(), &out_st), 0);
  EXPECT_EQ(out_st.st_mtime, in_st.st_mtime) << "modification times are kept (to the second)";
}

TEST_F(TarDirectoryTest, SameTreeSameArchive) {
  Write("b.txt", "b\n");
  Write("a/c.txt", "c\n");
  Result<std::string> first = TarDirectory(src_.string(), {}, 1 << 20);
  Result<std::string> second = TarDirectory(src_.string(), {}, 1 << 20);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(*first, *second);
}

TEST_F(TarDirectoryTest, Errors) {
  Result<std::string> missing = TarDirectory((dir_ / "none").string(), {}, 1 << 20);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().ToString();

  Write("big", std::string(4096, 'x'));
  Result<std::string> big = TarDirectory(src_.string(), {}, 2048);
  EXPECT_EQ(big.status().code(), StatusCode::kResourceExhausted) << big.status().ToString();
}

}  // namespace
}  // namespace bluegreen::runtime
