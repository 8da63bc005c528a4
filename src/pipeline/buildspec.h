// BuildSpecFile: a repository's buildspec.yml, the build description of AWS CodeBuild (version
// 0.2), in the subset bluegreen runs: environment variables, the four command phases and the
// artifact file patterns. A stack whose `build` has neither `commands` nor `containerfile` is
// built from it. A BuildSpecFile is a plain value: safe to copy between threads. The functions
// here are thread-safe.
//
// Validation is part of parsing: ParseBuildSpec returns every problem it finds at once, each as
// "line N: key.path: what is wrong". Keys of CodeBuild that bluegreen does not run are rejected
// with a message that says so; a few that do not change the build (reports, cache, batch,
// artifacts.name, phases.install.runtime-versions) are accepted and ignored. docs/buildspec.md
// describes the format and how a build runs.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace bluegreen::pipeline {

// What happens when a command of a phase fails (the phase's `on-failure` key).
enum class OnFailure {
  kAbort,     // ABORT: the build fails at once; later phases do not run (the default)
  kContinue,  // CONTINUE: the next phase runs; the build still fails at the end
};

// The text form used in the buildspec: "ABORT" or "CONTINUE".
std::string_view OnFailureName(OnFailure f);

struct BuildSpecFile {
  std::string version;                                   // "0.2"
  std::vector<std::pair<std::string, std::string>> env;  // env.variables, in file order
  // phases.<name>.commands
  std::vector<std::string> install, pre_build, build, post_build;
  std::vector<std::string> finally_build;  // phases.build.finally: run after build's commands
                                           // whether they succeed or not
  // phases.<name>.on-failure
  OnFailure install_on_failure = OnFailure::kAbort;
  OnFailure pre_build_on_failure = OnFailure::kAbort;
  OnFailure build_on_failure = OnFailure::kAbort;
  OnFailure post_build_on_failure = OnFailure::kAbort;
  std::vector<std::string> artifact_files;  // artifacts.files: patterns such as "**/*", "out/*"
  std::string base_directory;               // artifacts.base-directory ("" = repository root)
  bool discard_paths = false;               // artifacts.discard-paths

  bool operator==(const BuildSpecFile&) const = default;
};

// Parses and validates the text of a buildspec.yml (one YAML document in UTF-8). On failure the
// status is InvalidArgument and its message lists every problem, one per line, in line order.
Result<BuildSpecFile> ParseBuildSpec(std::string_view yaml);

// Every command in the order a successful build runs them: install, pre_build, build,
// build's finally, post_build.
std::vector<std::string> AllCommands(const BuildSpecFile& spec);

// Expands artifacts.files patterns under `root` (the checkout directory joined with
// base-directory). Returns the paths, relative to root, of the regular files that match: sorted
// by byte value, without duplicates; no match at all gives an empty list.
//
// A pattern is a relative path of '/'-separated segments. In a segment, "*" matches any run of
// characters and "?" any one character ('/' never); a segment "**" matches any number of
// segments, none included. A pattern without wildcards that names a directory matches every file
// under it ("out" and "out/" alike); a trailing '/' matches directories only. "." segments and
// repeated '/' are ignored. Symbolic links to regular files inside root are listed like files;
// links that point outside root, dangling links and links to directories are skipped.
//
// Errors: InvalidArgument for an empty pattern, an absolute one or one with a ".." segment;
// NotFound when root is not a directory; ResourceExhausted past 100,000 matching files; Internal
// when a directory under root cannot be read.
Result<std::vector<std::string>> ExpandArtifactPatterns(const std::string& root,
                                                        const std::vector<std::string>& patterns);

}  // namespace bluegreen::pipeline
