#include "pipeline/buildspec.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <system_error>
#include <tuple>

#include "common/utf8.h"

namespace bluegreen::pipeline {
namespace {

// A buildspec is a page of YAML; anything far larger is a mistake or an attack.
constexpr size_t kMaxBytes = 1 << 20;
// A document can alias one large sequence many times; decoding stops after this many values.
constexpr size_t kMaxValues = 100'000;
// Past this many problems the rest are counted, not listed.
constexpr size_t kMaxReportedProblems = 100;
// ExpandArtifactPatterns gives up past this many files.
constexpr size_t kMaxArtifactFiles = 100'000;

// ---------------------------------------------------------------------------------------------
// Small text helpers. Quote, Field, Index, EditDistance, Problems, KindName, LineOf, the map and
// sequence decoding and DocumentCounter are copies of those in src/stack/stack_spec.cc, until
// both move to a common YAML decoder.

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[(c >> 4) & 0xf];
      out += kHex[c & 0xf];
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

std::string Field(const std::string& path, std::string_view key) {
  if (path.empty()) return std::string(key);
  return path + "." + std::string(key);
}

std::string Index(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// [A-Za-z_][A-Za-z0-9_]*
bool IsValidEnvName(std::string_view name) {
  if (name.empty() || (name.front() >= '0' && name.front() <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// Calls f for each '/'-separated segment of path (empty ones included).
template <typename F>
void ForEachSegment(std::string_view path, F f) {
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    f(path.substr(start, slash - start));
    start = slash + 1;
  }
}

// What is wrong with a path that must stay inside a directory (an artifact pattern or the base
// directory), or nullopt when nothing is.
std::optional<std::string> RelativePathProblem(std::string_view path) {
  if (path.empty()) return "must not be empty";
  if (!IsCleanUtf8(path)) return "must be valid UTF-8 without NUL characters";
  if (path.front() == '/') return "must be a relative path, got " + Quote(path);
  bool dot_dot = false;
  ForEachSegment(path, [&](std::string_view segment) { dot_dot |= segment == ".."; });
  if (dot_dot) return "must not contain \"..\", got " + Quote(path);
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Problems: every error found, reported together.

// The parent of "a.b[2].c" is "a.b[2]", whose parent is "a.b", then "a", then "".
std::string_view ParentPath(std::string_view path) {
  size_t cut = path.find_last_of(".[");
  return cut == std::string_view::npos ? std::string_view() : path.substr(0, cut);
}

class Problems {
 public:
  // line is 1-based; 0 means unknown. Unless covers_path is false, later problems at path or
  // below it are not reported: they would be consequences of this one.
  void Add(int line, const std::string& path, std::string what, bool covers_path = true) {
    problems_.push_back({line, path, std::move(what)});
    if (covers_path && !path.empty()) paths_.insert(path);
  }

  bool ReportedAt(std::string_view path) const {
    while (true) {
      if (paths_.find(path) != paths_.end()) return true;
      if (path.empty()) return false;
      path = ParentPath(path);
    }
  }

  bool empty() const { return problems_.empty(); }
  size_t size() const { return problems_.size(); }

  Status ToStatus() {
    std::stable_sort(problems_.begin(), problems_.end(),
                     [](const Problem& a, const Problem& b) { return a.line < b.line; });
    std::string message;
    size_t n = std::min(problems_.size(), kMaxReportedProblems);
    for (size_t i = 0; i < n; ++i) {
      const Problem& p = problems_[i];
      if (i > 0) message += '\n';
      if (p.line > 0) message += "line " + std::to_string(p.line) + ": ";
      if (!p.path.empty()) message += p.path + ": ";
      message += p.what;
    }
    if (problems_.size() > n) {
      message += "\n... and " + std::to_string(problems_.size() - n) + " more problems";
    }
    return InvalidArgument(std::move(message));
  }

 private:
  struct Problem {
    int line;
    std::string path;
    std::string what;
  };
  std::vector<Problem> problems_;
  std::set<std::string, std::less<>> paths_;
};

// ---------------------------------------------------------------------------------------------
// Decoding a YAML document into a BuildSpecFile, checking keys, types and values.

std::string_view KindName(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

int LineOf(const YAML::Node& n) {
  YAML::Mark mark = n.Mark();
  return mark.is_null() ? 0 : mark.line + 1;
}

enum class Phase { kInstall, kPreBuild, kBuild, kPostBuild };

class Decoder {
 public:
  explicit Decoder(Problems* problems) : problems_(problems) {}

  bool too_large() const { return values_ > kMaxValues; }

  void DecodeRoot(const YAML::Node& node, BuildSpecFile* spec) {
    const int line = LineOf(node);
    DecodeMap(
        node, "", line,
        {
            {"version", true,
             [&](const YAML::Node& v, const std::string& p, int l) {
               std::string text;
               if (!GetString(v, p, l, &text)) return;
               if (text != "0.2") {
                 Error(l, p,
                       "bluegreen supports only version 0.2 of the buildspec format, got " +
                           Quote(text));
                 return;
               }
               spec->version = std::move(text);
             }},
            {"run-as", false, Unsupported("builds run as the user that runs bluegreen"), false},
            {"env", false,
             [&](const YAML::Node& v, const std::string& p, int l) { DecodeEnv(v, p, l, spec); }},
            {"proxy", false, Unsupported("builds have no CodeBuild proxy server"), false},
            {"phases", true,
             [&](const YAML::Node& v, const std::string& p, int l) {
               const size_t before = problems_->size();
               DecodePhases(v, p, l, spec);
               // With a problem in phases, "no command" is likely a consequence of it.
               if (problems_->size() == before) phases_line_ = l;
             }},
            {"artifacts", false,
             [&](const YAML::Node& v, const std::string& p, int l) {
               DecodeArtifacts(v, p, l, spec);
             }},
            {"reports", false, Ignored()},
            {"cache", false, Ignored()},
            {"batch", false, Ignored()},
        },
        /*null_is_empty=*/false);

    if (phases_line_ > 0 && spec->install.empty() && spec->pre_build.empty() &&
        spec->build.empty() && spec->post_build.empty()) {
      Error(phases_line_, "phases",
            "at least one command is required (in install, pre_build, build or post_build "
            "commands)");
    }
  }

 private:
  using Handler = std::function<void(const YAML::Node& value, const std::string& path, int line)>;
  struct Key {
    std::string_view name;
    bool required;
    Handler handle;
    // Named in the "unknown key" message. Keys that are only recognized to be rejected are not.
    bool listed = true;
  };

  void Error(int line, const std::string& path, std::string what, bool covers_path = true) {
    problems_->Add(line, path, std::move(what), covers_path);
  }

  bool Visit(int line) {
    if (++values_ <= kMaxValues) return true;
    if (values_ == kMaxValues + 1) {
      Error(line, "",
            "the buildspec is too large (more than " + std::to_string(kMaxValues) + " values)");
    }
    return false;
  }

  // A map with the given keys. A null value stands for an empty map when null_is_empty.
  void DecodeMap(const YAML::Node& node, const std::string& path, int line,
                 const std::vector<Key>& keys, bool null_is_empty = true) {
    if (node.IsNull() && null_is_empty) {
      for (const Key& key : keys) {
        if (key.required) Error(line, Field(path, key.name), "missing required key");
      }
      return;
    }
    if (!node.IsMap()) {
      Error(line, path, "expected a map, got " + std::string(KindName(node)));
      return;
    }
    std::set<std::string, std::less<>> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key_node = it->first;  // copies: it-> yields a temporary
      const YAML::Node value = it->second;
      int key_line = LineOf(key_node);
      if (!Visit(key_line)) return;
      if (!key_node.IsScalar()) {
        Error(key_line, path, "keys must be strings, got " + std::string(KindName(key_node)),
              /*covers_path=*/false);
        continue;
      }
      const std::string& name = key_node.Scalar();
      const std::string key_path = Field(path, name);
      if (!seen.insert(name).second) {
        Error(key_line, key_path, "duplicate key");
        continue;
      }
      auto known =
          std::find_if(keys.begin(), keys.end(), [&](const Key& k) { return k.name == name; });
      if (known == keys.end()) {
        Error(key_line, key_path, UnknownKeyMessage(name, keys));
        continue;
      }
      // An empty value ("files:") is marked on the next line; the key's line is where it belongs.
      int value_line = value.IsNull() ? key_line : LineOf(value);
      if (value_line == 0) value_line = key_line;
      known->handle(value, key_path, value_line);
    }
    for (const Key& key : keys) {
      if (key.required && seen.find(key.name) == seen.end()) {
        Error(line, Field(path, key.name), "missing required key");
      }
    }
  }

  static std::string UnknownKeyMessage(std::string_view name, const std::vector<Key>& keys) {
    std::string_view best;
    size_t best_distance = std::numeric_limits<size_t>::max();
    for (const Key& key : keys) {
      size_t d = EditDistance(name, key.name);
      if (d < best_distance) {
        best_distance = d;
        best = key.name;
      }
    }
    if (best_distance <= 2 && best_distance < name.size()) {
      return "unknown key (did you mean \"" + std::string(best) + "\"?)";
    }
    std::string message = "unknown key (expected one of: ";
    bool first = true;
    for (const Key& key : keys) {
      if (!key.listed) continue;
      if (!first) message += ", ";
      message += key.name;
      first = false;
    }
    return message + ")";
  }

  // A sequence; null stands for an empty one.
  void DecodeSequence(const YAML::Node& node, const std::string& path, int line,
                      const Handler& element) {
    if (node.IsNull()) return;
    if (!node.IsSequence()) {
      Error(line, path, "expected a sequence, got " + std::string(KindName(node)));
      return;
    }
    size_t i = 0;
    for (auto it = node.begin(); it != node.end(); ++it, ++i) {
      const YAML::Node value = *it;
      int value_line = LineOf(value);
      if (value_line == 0) value_line = line;
      if (!Visit(value_line)) return;
      element(value, Index(path, i), value_line);
    }
  }

  // Any scalar, taken as its text.
  bool GetString(const YAML::Node& node, const std::string& path, int line, std::string* out) {
    if (!node.IsScalar()) {
      Error(line, path, "expected a string, got " + std::string(KindName(node)));
      return false;
    }
    *out = node.Scalar();
    return true;
  }

  // A key CodeBuild knows and bluegreen does not run: always an error.
  Handler Unsupported(std::string why) {
    return [this, why = std::move(why)](const YAML::Node&, const std::string& p, int l) {
      Error(l, p, "not supported by bluegreen (" + why + ")");
    };
  }

  // A key that does not change how bluegreen builds: accepted whatever its value.
  static Handler Ignored() {
    return [](const YAML::Node&, const std::string&, int) {};
  }

  void DecodeEnv(const YAML::Node& node, const std::string& path, int line, BuildSpecFile* spec) {
    DecodeMap(
        node, path, line,
        {
            {"variables", false,
             [&](const YAML::Node& v, const std::string& p, int l) {
               DecodeVariables(v, p, l, &spec->env);
             }},
            {"shell", false, Unsupported("commands run with sh"), false},
            {"parameter-store", false,
             Unsupported("there is no AWS Systems Manager Parameter Store; use env.variables"),
             false},
            {"secrets-manager", false,
             Unsupported("there is no AWS Secrets Manager; use env.variables"), false},
            {"exported-variables", false,
             Unsupported("variables are not passed on to later stages"), false},
            {"git-credential-helper", false,
             Unsupported("the repository is checked out before the build starts"), false},
        });
  }

  void DecodeVariables(const YAML::Node& node, const std::string& path, int line,
                       std::vector<std::pair<std::string, std::string>>* env) {
    if (node.IsNull()) return;
    if (!node.IsMap()) {
      Error(line, path, "expected a map of strings, got " + std::string(KindName(node)));
      return;
    }
    std::set<std::string, std::less<>> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key_node = it->first;
      const YAML::Node value = it->second;
      int key_line = LineOf(key_node);
      if (!Visit(key_line)) return;
      if (!key_node.IsScalar()) {
        Error(key_line, path, "keys must be strings, got " + std::string(KindName(key_node)),
              /*covers_path=*/false);
        continue;
      }
      const std::string& key = key_node.Scalar();
      const std::string env_path = Field(path, key);
      if (!seen.insert(key).second) {
        Error(key_line, env_path, "duplicate key");
        continue;
      }
      if (!IsValidEnvName(key)) {
        Error(key_line, IsCleanUtf8(key) ? env_path : path,
              "environment variable names must match [A-Za-z_][A-Za-z0-9_]*, got " + Quote(key),
              /*covers_path=*/false);
        continue;
      }
      if (!value.IsScalar()) {
        Error(key_line, env_path,
              "values must be strings, got " + std::string(KindName(value)) +
                  (value.IsNull() ? " (quote it: \"\")" : ""));
        continue;
      }
      if (!IsCleanUtf8(value.Scalar())) {
        Error(key_line, env_path, "values must be valid UTF-8 without NUL characters");
        continue;
      }
      env->emplace_back(key, value.Scalar());
    }
  }

  void DecodePhases(const YAML::Node& node, const std::string& path, int line,
                    BuildSpecFile* spec) {
    auto phase = [&](Phase which) -> Handler {
      return [this, which, spec](const YAML::Node& v, const std::string& p, int l) {
        DecodePhase(v, p, l, which, spec);
      };
    };
    DecodeMap(node, path, line,
              {
                  {"install", false, phase(Phase::kInstall)},
                  {"pre_build", false, phase(Phase::kPreBuild)},
                  {"build", false, phase(Phase::kBuild)},
                  {"post_build", false, phase(Phase::kPostBuild)},
              });
  }

  void DecodePhase(const YAML::Node& node, const std::string& path, int line, Phase which,
                   BuildSpecFile* spec) {
    if (node.IsSequence()) {
      Error(line, path,
            "expected a map, got a sequence (put the commands under " + Field(path, "commands") +
                ")");
      return;
    }
    std::vector<std::string>* commands = nullptr;
    OnFailure* on_failure = nullptr;
    switch (which) {
      case Phase::kInstall:
        commands = &spec->install;
        on_failure = &spec->install_on_failure;
        break;
      case Phase::kPreBuild:
        commands = &spec->pre_build;
        on_failure = &spec->pre_build_on_failure;
        break;
      case Phase::kBuild:
        commands = &spec->build;
        on_failure = &spec->build_on_failure;
        break;
      case Phase::kPostBuild:
        commands = &spec->post_build;
        on_failure = &spec->post_build_on_failure;
        break;
    }
    std::vector<Key> keys = {
        {"commands", false, CommandList(commands)},
        {"finally", false,
         which == Phase::kBuild ? CommandList(&spec->finally_build)
                                : Unsupported("only phases.build.finally is"),
         which == Phase::kBuild},
        {"on-failure", false, OnFailureValue(on_failure)},
        {"runtime-versions", false,
         which == Phase::kInstall
             ? Ignored()
             : Unsupported("runtime-versions belongs under phases.install, where it is ignored"),
         which == Phase::kInstall},
        {"run-as", false, Unsupported("builds run as the user that runs bluegreen"), false},
    };
    DecodeMap(node, path, line, keys);
  }

  Handler CommandList(std::vector<std::string>* out) {
    return [this, out](const YAML::Node& v, const std::string& p, int l) {
      DecodeSequence(v, p, l, [&](const YAML::Node& e, const std::string& ep, int el) {
        if (e.IsMap()) {
          // "- echo a: b" is a map; CodeBuild users meet this often.
          Error(el, ep, "expected a command, got a map (quote a command that contains \": \")");
          return;
        }
        if (!e.IsScalar()) {
          Error(el, ep, "expected a command, got " + std::string(KindName(e)));
          return;
        }
        const std::string& text = e.Scalar();
        if (text.empty()) {
          Error(el, ep, "must not be empty");
          return;
        }
        if (!IsCleanUtf8(text)) {
          Error(el, ep, "must be valid UTF-8 without NUL characters");
          return;
        }
        out->push_back(text);
      });
    };
  }

  Handler OnFailureValue(OnFailure* out) {
    return [this, out](const YAML::Node& v, const std::string& p, int l) {
      std::string text;
      if (!GetString(v, p, l, &text)) return;
      if (text == "ABORT") {
        *out = OnFailure::kAbort;
      } else if (text == "CONTINUE") {
        *out = OnFailure::kContinue;
      } else if (text.substr(0, 5) == "RETRY") {
        Error(l, p,
              "RETRY is not supported by bluegreen (use ABORT or CONTINUE), got " + Quote(text));
      } else {
        Error(l, p, "must be ABORT or CONTINUE, got " + Quote(text));
      }
    };
  }

  void DecodeArtifacts(const YAML::Node& node, const std::string& path, int line,
                       BuildSpecFile* spec) {
    DecodeMap(
        node, path, line,
        {
            {"files", true,
             [&](const YAML::Node& v, const std::string& p, int l) {
               auto add = [&](const YAML::Node& e, const std::string& ep, int el) {
                 std::string text;
                 if (!GetString(e, ep, el, &text)) return;
                 if (auto problem = RelativePathProblem(text)) {
                   Error(el, ep, *problem);
                   return;
                 }
                 spec->artifact_files.push_back(std::move(text));
               };
               const size_t before = problems_->size();
               if (v.IsScalar()) {
                 add(v, p, l);
               } else {
                 DecodeSequence(v, p, l, add);
               }
               if (spec->artifact_files.empty() && problems_->size() == before) {
                 Error(l, p, "must not be empty (leave artifacts out instead)");
               }
             }},
            {"name", false, Ignored()},
            {"base-directory", false,
             [&](const YAML::Node& v, const std::string& p, int l) {
               std::string text;
               if (!GetString(v, p, l, &text)) return;
               if (auto problem = RelativePathProblem(text)) {
                 Error(l, p, *problem);
                 return;
               }
               spec->base_directory = std::move(text);
             }},
            {"discard-paths", false,
             [&](const YAML::Node& v, const std::string& p, int l) {
               std::string text;
               if (!GetString(v, p, l, &text)) return;
               if (text == "yes" || text == "true") {
                 spec->discard_paths = true;
               } else if (text == "no" || text == "false") {
                 spec->discard_paths = false;
               } else {
                 Error(l, p, "must be yes, no, true or false, got " + Quote(text));
               }
             }},
            {"exclude-paths", false, Unsupported("list only the files to keep in files"), false},
            {"enable-symlinks", false, Unsupported("symbolic links are copied as files"), false},
            {"s3-prefix", false, Unsupported("artifacts are kept by bluegreen, not in S3"), false},
            {"secondary-artifacts", false,
             Unsupported("bluegreen keeps one set of artifacts per build"), false},
        });
  }

  Problems* problems_;
  size_t values_ = 0;
  int phases_line_ = 0;  // set when phases was decoded without problems
};

// Counts the documents of a stream. YAML::LoadAll is not used: yaml-cpp 0.7 loops forever on
// some malformed input (a stray ',' at the top level).
class DocumentCounter : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

  std::vector<YAML::Mark> starts;
};

std::string FormatLine(int line, std::string_view what) {
  if (line <= 0) return std::string(what);
  return "line " + std::to_string(line) + ": " + std::string(what);
}

// ---------------------------------------------------------------------------------------------
// Artifact patterns

struct Pattern {
  std::vector<std::string> segments;  // without "" and "." segments
  bool plain = true;                  // no wildcard: a directory it names means all under it
  bool directory_only = false;        // written with a trailing '/'
};

Pattern CompilePattern(std::string_view text) {
  Pattern pattern;
  ForEachSegment(text, [&](std::string_view segment) {
    if (segment.empty() || segment == ".") return;
    if (segment.find_first_of("*?") != std::string_view::npos) pattern.plain = false;
    pattern.segments.emplace_back(segment);
  });
  pattern.directory_only = !text.empty() && text.back() == '/';
  return pattern;
}

// The index after the UTF-8 character that starts at i.
size_t NextCharacter(std::string_view s, size_t i) {
  ++i;
  while (i < s.size() && (static_cast<unsigned char>(s[i]) & 0xc0) == 0x80) ++i;
  return i;
}

// Matches one path segment against one pattern segment: "*" any run, "?" one character.
bool MatchSegment(std::string_view pattern, std::string_view name) {
  size_t p = 0;
  size_t n = 0;
  size_t star = std::string_view::npos;  // the pattern index after the last '*'
  size_t star_n = 0;                     // where that '*' started matching in name
  while (n < name.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = ++p;
      star_n = n;
    } else if (p < pattern.size() && pattern[p] == '?') {
      ++p;
      n = NextCharacter(name, n);
    } else if (p < pattern.size() && pattern[p] == name[n]) {
      ++p;
      ++n;
    } else if (star != std::string_view::npos) {
      p = star;
      star_n = NextCharacter(name, star_n);
      n = star_n;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

// Where the walk stands in one pattern: segments[0, position) are matched.
struct MatchState {
  size_t pattern;
  size_t position;
  bool operator==(const MatchState&) const = default;
  bool operator<(const MatchState& other) const {
    return std::tie(pattern, position) < std::tie(other.pattern, other.position);
  }
};

class ArtifactWalker {
 public:
  ArtifactWalker(std::filesystem::path root, std::vector<Pattern> patterns)
      : root_(std::move(root)), patterns_(std::move(patterns)) {}

  Result<std::vector<std::string>> Walk() {
    std::vector<MatchState> start;
    for (size_t i = 0; i < patterns_.size(); ++i) start.push_back({i, 0});
    Close(&start);
    // A plain pattern with no segments left (".") names the root itself.
    bool all = std::any_of(start.begin(), start.end(), [&](const MatchState& s) {
      return AtEnd(s) && patterns_[s.pattern].plain;
    });
    std::vector<Directory> pending = {{root_, "", std::move(start), all}};
    while (!pending.empty()) {
      Directory dir = std::move(pending.back());
      pending.pop_back();
      BG_RETURN_IF_ERROR(Visit(dir, &pending));
    }
    return std::vector<std::string>(found_.begin(), found_.end());
  }

 private:
  struct Directory {
    std::filesystem::path path;
    std::string relative;            // "" for the root, else "a/b/"
    std::vector<MatchState> states;  // live states, none at the end of its pattern
    bool all;                        // every file under it matches
  };

  bool AtEnd(const MatchState& s) const {
    return s.position == patterns_[s.pattern].segments.size();
  }

  // Adds the states a "**" reaches by matching no segment; sorts and removes duplicates.
  void Close(std::vector<MatchState>* states) const {
    for (size_t i = 0; i < states->size(); ++i) {
      const MatchState s = (*states)[i];
      if (!AtEnd(s) && patterns_[s.pattern].segments[s.position] == "**") {
        states->push_back({s.pattern, s.position + 1});
      }
    }
    std::sort(states->begin(), states->end());
    states->erase(std::unique(states->begin(), states->end()), states->end());
  }

  // The states after matching one more segment, name.
  std::vector<MatchState> Step(const std::vector<MatchState>& states, std::string_view name) const {
    std::vector<MatchState> next;
    for (const MatchState& s : states) {
      if (AtEnd(s)) continue;
      const std::string& segment = patterns_[s.pattern].segments[s.position];
      if (segment == "**") {
        next.push_back(s);
      } else if (MatchSegment(segment, name)) {
        next.push_back({s.pattern, s.position + 1});
      }
    }
    Close(&next);
    return next;
  }

  enum class Kind { kFile, kDirectory, kSkip };

  // Symbolic links count only when they lead to a regular file inside the root.
  Kind KindOf(const std::filesystem::directory_entry& entry) const {
    std::error_code ec;
    const std::filesystem::file_status status = entry.symlink_status(ec);
    if (ec) return Kind::kSkip;
    if (std::filesystem::is_directory(status)) return Kind::kDirectory;
    if (std::filesystem::is_regular_file(status)) return Kind::kFile;
    if (!std::filesystem::is_symlink(status)) return Kind::kSkip;
    const std::filesystem::path target = std::filesystem::canonical(entry.path(), ec);
    if (ec || !IsInsideRoot(target)) return Kind::kSkip;
    return std::filesystem::is_regular_file(target, ec) && !ec ? Kind::kFile : Kind::kSkip;
  }

  bool IsInsideRoot(const std::filesystem::path& canonical) const {
    auto r = root_.begin();
    auto c = canonical.begin();
    for (; r != root_.end(); ++r, ++c) {
      if (c == canonical.end() || *r != *c) return false;
    }
    return true;
  }

  Status Visit(const Directory& dir, std::vector<Directory>* pending) {
    std::error_code ec;
    std::filesystem::directory_iterator it(dir.path, ec);
    for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      const std::filesystem::directory_entry& entry = *it;
      const std::string name = entry.path().filename().string();
      const Kind kind = KindOf(entry);
      if (kind == Kind::kSkip) continue;
      std::vector<MatchState> next = dir.all ? std::vector<MatchState>() : Step(dir.states, name);
      const std::string relative = dir.relative + name;
      if (kind == Kind::kFile) {
        bool match = dir.all || std::any_of(next.begin(), next.end(), [&](const MatchState& s) {
                       return AtEnd(s) && !patterns_[s.pattern].directory_only;
                     });
        if (!match) continue;
        found_.insert(relative);
        if (found_.size() > kMaxArtifactFiles) {
          return Status(
              StatusCode::kResourceExhausted,
              "artifacts.files matches more than " + std::to_string(kMaxArtifactFiles) + " files");
        }
        continue;
      }
      bool all = dir.all || std::any_of(next.begin(), next.end(), [&](const MatchState& s) {
                   return AtEnd(s) && patterns_[s.pattern].plain;
                 });
      next.erase(
          std::remove_if(next.begin(), next.end(), [&](const MatchState& s) { return AtEnd(s); }),
          next.end());
      if (all || !next.empty()) {
        pending->push_back({entry.path(), relative + "/", std::move(next), all});
      }
    }
    if (ec) {
      return Internal("cannot read the directory " + Quote(dir.path.string()) + ": " +
                      ec.message());
    }
    return Status::Ok();
  }

  std::filesystem::path root_;  // canonical
  std::vector<Pattern> patterns_;
  std::set<std::string> found_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public API

std::string_view OnFailureName(OnFailure f) {
  switch (f) {
    case OnFailure::kAbort:
      return "ABORT";
    case OnFailure::kContinue:
      return "CONTINUE";
  }
  return "unknown";
}

Result<BuildSpecFile> ParseBuildSpec(std::string_view yaml) {
  if (yaml.size() > kMaxBytes) {
    return InvalidArgument("the buildspec is too large (" + std::to_string(yaml.size()) +
                           " bytes; at most " + std::to_string(kMaxBytes) + ")");
  }
  if (const size_t bad = FindInvalidUtf8(yaml); bad != std::string_view::npos) {
    return InvalidArgument("the text is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  }
  BuildSpecFile spec;
  Problems problems;
  try {
    const std::string input(yaml);
    {
      std::istringstream stream(input);
      YAML::Parser parser(stream);
      DocumentCounter counter;
      while (counter.starts.size() < 2 && parser.HandleNextDocument(counter)) {
      }
      if (counter.starts.size() > 1) {
        const YAML::Mark& second = counter.starts[1];
        return InvalidArgument(FormatLine(second.is_null() ? 0 : second.line + 1,
                                          "expected one YAML document; another one starts here"));
      }
    }
    const YAML::Node root = YAML::Load(input);
    if (root.IsNull()) return InvalidArgument(FormatLine(1, "the buildspec is empty"));
    if (!root.IsMap()) {
      return InvalidArgument(FormatLine(
          LineOf(root), "the buildspec must be a map, got " + std::string(KindName(root))));
    }
    Decoder decoder(&problems);
    decoder.DecodeRoot(root, &spec);
    if (decoder.too_large()) return problems.ToStatus();
  } catch (const YAML::Exception& e) {
    return InvalidArgument(
        FormatLine(e.mark.is_null() ? 0 : e.mark.line + 1, "invalid YAML: " + e.msg));
  } catch (const std::exception& e) {
    return Internal(std::string("cannot read the buildspec: ") + e.what());
  }
  if (!problems.empty()) return problems.ToStatus();
  return spec;
}

std::vector<std::string> AllCommands(const BuildSpecFile& spec) {
  std::vector<std::string> out;
  for (const auto* phase :
       {&spec.install, &spec.pre_build, &spec.build, &spec.finally_build, &spec.post_build}) {
    out.insert(out.end(), phase->begin(), phase->end());
  }
  return out;
}

Result<std::vector<std::string>> ExpandArtifactPatterns(const std::string& root,
                                                        const std::vector<std::string>& patterns) {
  std::vector<Pattern> compiled;
  for (const std::string& text : patterns) {
    if (auto problem = RelativePathProblem(text)) {
      return InvalidArgument("artifact pattern " + Quote(text) + ": " + *problem);
    }
    compiled.push_back(CompilePattern(text));
  }
  try {
    std::error_code ec;
    std::filesystem::path canonical_root = std::filesystem::canonical(root, ec);
    if (ec || !std::filesystem::is_directory(canonical_root, ec) || ec) {
      return NotFound("the artifact directory " + Quote(root) + " is not a directory");
    }
    if (compiled.empty()) return std::vector<std::string>();
    return ArtifactWalker(std::move(canonical_root), std::move(compiled)).Walk();
  } catch (const std::exception& e) {  // std::bad_alloc, or filesystem_error from a path
    return Internal("cannot list the artifacts under " + Quote(root) + ": " + e.what());
  }
}

}  // namespace bluegreen::pipeline
