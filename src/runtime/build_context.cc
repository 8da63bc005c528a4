#include "runtime/build_context.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <system_error>

namespace bluegreen::runtime {
namespace {

namespace fs = std::filesystem;

constexpr size_t kBlock = 512;
constexpr size_t kNameField = 100;  // ustar's name and linkname fields
constexpr char kRegular = '0';
constexpr char kSymlink = '2';
constexpr char kDirectory = '5';
constexpr char kPaxHeader = 'x';

std::string ErrnoText(int err) { return std::strerror(err); }  // NOLINT(concurrency-mt-unsafe)

// Writes `value` in octal into the `width`-byte field at `field`: zero-padded, NUL-terminated.
void PutOctal(char* field, size_t width, uint64_t value) {
  const std::string text = fmt::format("{:0{}o}", value, width - 1);
  std::copy_n(text.data(), std::min(text.size(), width - 1), field);
}

// A pax record "LEN key=value\n", where LEN counts the whole record, its own digits included.
std::string PaxRecord(std::string_view key, std::string_view value) {
  const size_t base = key.size() + value.size() + 3;  // ' ', '=', '\n'
  size_t len = base + 1;
  while (std::to_string(len).size() + base != len) ++len;
  return fmt::format("{} {}={}\n", len, key, value);
}

class TarWriter {
 public:
  explicit TarWriter(size_t max_bytes) : max_bytes_(max_bytes) {}

  // One entry's header (and, first, a pax header when its name or link target is too long).
  Status Header(const std::string& name, char type, const struct stat& st, uint64_t size,
                const std::string& link = "") {
    std::string pax;
    if (name.size() > kNameField) pax += PaxRecord("path", name);
    if (link.size() > kNameField) pax += PaxRecord("linkpath", link);
    if (!pax.empty()) {
      BG_RETURN_IF_ERROR(
          Block(Truncated("PaxHeaders/" + name), kPaxHeader, 0644, 0, pax.size(), ""));
      BG_RETURN_IF_ERROR(Data(pax));
      BG_RETURN_IF_ERROR(Pad());
    }
    return Block(Truncated(name), type, st.st_mode & 07777, st.st_mtime, size, Truncated(link));
  }

  Status Data(std::string_view bytes) {
    if (out_.size() + bytes.size() > max_bytes_) return TooLarge();
    out_.append(bytes);
    return Status::Ok();
  }

  // Zeros up to the next block boundary (after an entry's data).
  Status Pad() {
    const size_t rest = out_.size() % kBlock;
    return rest == 0 ? Status::Ok() : Data(std::string(kBlock - rest, '\0'));
  }

  // The end of the archive: two zero blocks.
  Result<std::string> Finish() {
    BG_RETURN_IF_ERROR(Data(std::string(2 * kBlock, '\0')));
    return std::move(out_);
  }

 private:
  static std::string Truncated(const std::string& s) { return s.substr(0, kNameField); }

  Status TooLarge() const {
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("the build context is larger than {} MiB", max_bytes_ >> 20));
  }

  Status Block(const std::string& name, char type, uint32_t mode, int64_t mtime, uint64_t size,
               const std::string& link) {
    char h[kBlock] = {};
    std::copy(name.begin(), name.end(), h);
    PutOctal(h + 100, 8, mode);
    PutOctal(h + 108, 8, 0);  // uid
    PutOctal(h + 116, 8, 0);  // gid
    PutOctal(h + 124, 12, size);
    PutOctal(h + 136, 12, static_cast<uint64_t>(std::max<int64_t>(0, mtime)));
    h[156] = type;
    std::copy(link.begin(), link.end(), h + 157);
    constexpr std::string_view kMagic("ustar\0" "00", 8);  // magic with its NUL, then version
    std::copy(kMagic.begin(), kMagic.end(), h + 257);
    // The checksum is computed with its own field as spaces, and written as 6 digits, NUL, space.
    std::memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (const char c : h) sum += static_cast<unsigned char>(c);
    PutOctal(h + 148, 7, sum);
    return Data(std::string_view(h, kBlock));
  }

  const size_t max_bytes_;
  std::string out_;
};

Status AddFile(TarWriter* tar, const fs::path& path, const std::string& name,
               const struct stat& st) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return Internal(fmt::format("cannot read {}: {}", path.string(), ErrnoText(errno)));
  const auto size = static_cast<uint64_t>(st.st_size);
  Status status = tar->Header(name, kRegular, st, size);
  char buf[65536];
  uint64_t left = size;
  while (status.ok() && left > 0) {
    const ssize_t n = ::read(fd, buf, std::min<uint64_t>(sizeof buf, left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      status = Internal(fmt::format("cannot read {}: {}", path.string(),
                                    n < 0 ? ErrnoText(errno) : "it became shorter while read"));
      break;
    }
    status = tar->Data(std::string_view(buf, static_cast<size_t>(n)));
    left -= static_cast<uint64_t>(n);
  }
  ::close(fd);
  if (!status.ok()) return status;
  return tar->Pad();
}

// Adds the entries of directory `dir`, named `prefix` + their name, and their contents.
Status AddDirectory(TarWriter* tar, const fs::path& dir, const std::string& prefix,
                    const std::vector<std::string>& exclude) {
  std::error_code ec;
  std::vector<std::string> names;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (std::find(exclude.begin(), exclude.end(), name) == exclude.end()) {
      names.push_back(std::move(name));
    }
  }
  if (ec)
    return Internal(fmt::format("cannot read the directory {}: {}", dir.string(), ec.message()));
  std::sort(names.begin(), names.end());
  for (const std::string& entry : names) {
    const fs::path path = dir / entry;
    const std::string name = prefix + entry;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      return Internal(fmt::format("cannot inspect {}: {}", path.string(), ErrnoText(errno)));
    }
    if (S_ISDIR(st.st_mode)) {
      BG_RETURN_IF_ERROR(tar->Header(name + "/", kDirectory, st, 0));
      BG_RETURN_IF_ERROR(AddDirectory(tar, path, name + "/", {}));
    } else if (S_ISREG(st.st_mode)) {
      BG_RETURN_IF_ERROR(AddFile(tar, path, name, st));
    } else if (S_ISLNK(st.st_mode)) {
      const fs::path target = fs::read_symlink(path, ec);
      if (ec)
        return Internal(fmt::format("cannot read the link {}: {}", path.string(), ec.message()));
      BG_RETURN_IF_ERROR(tar->Header(name, kSymlink, st, 0, target.string()));
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::string> TarDirectory(const std::string& dir, const std::vector<std::string>& exclude,
                                 size_t max_bytes) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound(fmt::format("{} is not a directory", dir));
  TarWriter tar(max_bytes);
  BG_RETURN_IF_ERROR(AddDirectory(&tar, dir, "", exclude));
  return tar.Finish();
}

}  // namespace bluegreen::runtime
