// libFuzzer target: the buildspec.yml parser. Any input must parse or be rejected with a message,
// never crash or hang; an accepted buildspec must hold what the parser promises (version 0.2, at
// least one command, clean UTF-8, artifact paths that stay inside the checkout), and parsing must
// be deterministic.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/utf8.h"
#include "pipeline/buildspec.h"

namespace {

void Fail(const char* what) {
  std::fprintf(stderr, "buildspec invariant broken: %s\n", what);
  std::abort();
}

bool StaysInside(std::string_view path) {
  if (path.empty() || path.front() == '/' || !bluegreen::IsCleanUtf8(path)) return false;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    if (path.substr(start, slash - start) == "..") return false;
    start = slash + 1;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto spec = bluegreen::pipeline::ParseBuildSpec(text);
  if (!spec.ok()) {
    if (spec.status().message().empty()) Fail("an error without a message");
    return 0;
  }
  if (spec->version != "0.2") Fail("version is not 0.2");
  if (spec->install.empty() && spec->pre_build.empty() && spec->build.empty() &&
      spec->post_build.empty()) {
    Fail("no command");
  }
  for (const std::string& command : bluegreen::pipeline::AllCommands(*spec)) {
    if (command.empty() || !bluegreen::IsCleanUtf8(command)) Fail("a bad command");
  }
  for (const auto& [name, value] : spec->env) {
    bool name_ok = !name.empty() && !(name[0] >= '0' && name[0] <= '9') &&
                   std::all_of(name.begin(), name.end(), [](char c) {
                     return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                            (c >= '0' && c <= '9') || c == '_';
                   });
    if (!name_ok || !bluegreen::IsCleanUtf8(value)) Fail("a bad environment variable");
  }
  for (const std::string& pattern : spec->artifact_files) {
    if (!StaysInside(pattern)) Fail("an artifact pattern that leaves the checkout");
  }
  if (!spec->base_directory.empty() && !StaysInside(spec->base_directory)) {
    Fail("a base directory that leaves the checkout");
  }
  auto again = bluegreen::pipeline::ParseBuildSpec(text);
  if (!again.ok() || !(*again == *spec)) Fail("a second parse differs");
  return 0;
}
