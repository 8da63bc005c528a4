#include "stack/stack_spec.h"

#include "common/utf8.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

namespace bluegreen::stack {
namespace {

// A document can alias one large sequence many times; decoding stops after this many values.
constexpr size_t kMaxValues = 100'000;
// Past this many problems the rest are counted, not listed.
constexpr size_t kMaxReportedProblems = 100;

constexpr size_t kMaxStackNameLength = 32;
constexpr int64_t kMinDesiredCount = 1;
constexpr int64_t kMaxDesiredCount = 64;
constexpr int64_t kMinThreshold = 1;
constexpr int64_t kMaxThreshold = 10;
constexpr int kMinStatus = 100;
constexpr int kMaxStatus = 599;

// ---------------------------------------------------------------------------------------------
// Small text helpers

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

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string Field(const std::string& path, std::string_view key) {
  if (path.empty()) return std::string(key);
  return path + "." + std::string(key);
}

std::string Index(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

std::string RangeError(int64_t lo, int64_t hi, std::string_view got) {
  return "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
         std::string(got);
}

bool HasPrefix(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

bool HasControlCharacters(std::string_view s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
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

bool IsValidStackName(std::string_view name) {
  if (name.empty() || name.size() > kMaxStackNameLength) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

// [A-Za-z_][A-Za-z0-9_]*
bool IsValidEnvName(std::string_view name) {
  if (name.empty() || (name.front() >= '0' && name.front() <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// An absolute local path or a file://, https:// or ssh:// URL with something after the scheme.
bool IsValidRepo(std::string_view repo) {
  if (HasControlCharacters(repo) || !IsCleanUtf8(repo)) return false;
  if (HasPrefix(repo, "/")) return true;
  for (std::string_view scheme : {"file://", "https://", "ssh://"}) {
    if (HasPrefix(repo, scheme)) return repo.size() > scheme.size();
  }
  return false;
}

// The rules of git check-ref-format that matter for a branch name typed by hand.
bool IsValidBranch(std::string_view branch) {
  if (branch.empty() || branch.front() == '-' || branch.front() == '/' || branch.back() == '/' ||
      branch.back() == '.' || HasControlCharacters(branch) || !IsCleanUtf8(branch)) {
    return false;
  }
  if (branch.find("..") != std::string_view::npos || branch.find("@{") != std::string_view::npos ||
      branch.find("//") != std::string_view::npos) {
    return false;
  }
  return std::none_of(branch.begin(), branch.end(), [](char c) {
    return c == ' ' || c == '~' || c == '^' || c == ':' || c == '?' || c == '*' || c == '[' ||
           c == '\\';
  });
}

// A path inside the repository: relative, no ".." component.
bool IsValidRepoPath(std::string_view path) {
  if (path.empty() || path.front() == '/' || HasControlCharacters(path) || !IsCleanUtf8(path)) {
    return false;
  }
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    if (path.substr(start, slash - start) == "..") return false;
    start = slash + 1;
  }
  return true;
}

// Parses a status matcher such as "200-299,404" to its canonical text.
Result<std::string> CanonicalMatcher(std::string_view text) {
  auto invalid = [&](std::string_view why) {
    return InvalidArgument("invalid status matcher " + Quote(text) + ": " + std::string(why));
  };
  auto parse_code = [](std::string_view s) -> std::optional<int> {
    s = Trim(s);
    if (s.empty() || s.size() > 3) return std::nullopt;
    int v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + (c - '0');
    }
    return v;
  };
  if (Trim(text).empty()) return invalid("empty (expected codes such as \"200-299,404\")");
  std::string out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view item = Trim(text.substr(start, comma - start));
    start = comma + 1;
    if (item.empty()) return invalid("empty item");
    size_t dash = item.find('-');
    std::optional<int> lo = parse_code(item.substr(0, dash));
    std::optional<int> hi = dash == std::string_view::npos ? lo : parse_code(item.substr(dash + 1));
    if (!lo || !hi) {
      return invalid(Quote(item) + " is not a status code or a range such as 200-299");
    }
    for (int code : {*lo, *hi}) {
      if (code < kMinStatus || code > kMaxStatus) {
        return invalid("status code " + std::to_string(code) + " is not between " +
                       std::to_string(kMinStatus) + " and " + std::to_string(kMaxStatus));
      }
    }
    if (*lo > *hi) return invalid("range " + Quote(item) + " is backwards");
    if (!out.empty()) out += ',';
    out += std::to_string(*lo);
    if (*hi != *lo) out += "-" + std::to_string(*hi);
  }
  return out;
}

template <typename E, size_t N>
std::optional<E> EnumFromName(std::string_view name, const E (&values)[N],
                              std::string_view (*name_of)(E)) {
  for (E v : values) {
    if (name == name_of(v)) return v;
  }
  return std::nullopt;
}

template <typename E, size_t N>
std::string EnumChoices(const E (&values)[N], std::string_view (*name_of)(E)) {
  std::string out;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) out += (i + 1 == N) ? " or " : ", ";
    out += name_of(values[i]);
  }
  return out;
}

constexpr Runtime kRuntimes[] = {Runtime::kProcess, Runtime::kPodman, Runtime::kDocker};
constexpr ApprovalMode kApprovalModes[] = {ApprovalMode::kManual, ApprovalMode::kAuto};
constexpr TimeoutAction kTimeoutActions[] = {TimeoutAction::kReject, TimeoutAction::kApprove};

// ---------------------------------------------------------------------------------------------
// Problems: every error found, reported together.

using LineMap = std::map<std::string, int, std::less<>>;

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
// Validation of a decoded spec: value rules and cross-field rules.

class Validator {
 public:
  Validator(const LineMap* lines, Problems* problems) : lines_(lines), problems_(problems) {}

  void Validate(const StackSpec& spec) {
    if (!IsValidStackName(spec.name)) {
      Report("name", "must be 1 to 32 characters of a-z 0-9 -, got " + Quote(spec.name));
    }

    const SourceSpec& source = spec.source;
    if (source.repo.empty()) {
      // No source at all is fine (versions then come from `bluegreen deploy`); an empty repo is
      // not.
      if (lines_->count("source.repo") != 0) Report("source.repo", "must not be empty");
    } else if (!IsValidRepo(source.repo)) {
      Report("source.repo", "must be an absolute path or a file://, https:// or ssh:// URL, got " +
                                Quote(source.repo));
    }
    if (!IsValidBranch(source.branch)) {
      Report("source.branch", "must be a valid git branch name, got " + Quote(source.branch));
    }
    ValidatePositive("source.poll_interval", source.poll_interval);

    const BuildSpec& build = spec.build;
    for (size_t i = 0; i < build.commands.size(); ++i) {
      if (build.commands[i].empty() || !IsCleanUtf8(build.commands[i])) {
        Report(Index("build.commands", i), "must be a non-empty UTF-8 string");
      }
    }
    if (!build.containerfile.empty() && !IsValidRepoPath(build.containerfile)) {
      Report("build.containerfile",
             "must be a relative path inside the repository, got " + Quote(build.containerfile));
    }
    if (!build.containerfile.empty() && !build.artifacts.empty()) {
      Report("build.artifacts",
             "not used with build.containerfile: the image is the build's output (its "
             "Containerfile COPYs what it needs from the checkout); remove build.artifacts");
    }
    for (size_t i = 0; i < build.artifacts.size(); ++i) {
      if (!IsValidRepoPath(build.artifacts[i])) {
        Report(Index("build.artifacts", i),
               "must be a relative path inside the repository, got " + Quote(build.artifacts[i]));
      }
    }
    ValidatePositive("build.timeout", build.timeout);

    ValidateService(spec.service, build);

    const LoadBalancerSpec& lb = spec.load_balancer;
    ValidateListener(lb.production, "load_balancer.production");
    ValidateListener(lb.test, "load_balancer.test");
    if (lb.production.port != 0 && lb.production.port == lb.test.port) {
      Report("load_balancer.test.port", "must differ from load_balancer.production.port (" +
                                            std::to_string(lb.production.port) + ")");
    }
    if (lb.deregistration_delay.count() < 0) {
      Report("load_balancer.deregistration_delay",
             "must not be negative, got " + FormatDuration(lb.deregistration_delay));
    }

    ValidatePositive("approval.timeout", spec.approval.timeout);
  }

 private:
  void ValidateService(const ServiceSpec& service, const BuildSpec& build) {
    const std::string runtime = "runtime " + std::string(RuntimeName(service.runtime));
    for (size_t i = 0; i < service.command.size(); ++i) {
      if (!IsCleanUtf8(service.command[i])) {
        Report(Index("service.command", i), "must be valid UTF-8 without NUL characters");
      }
    }
    if (!service.image.empty() &&
        (HasControlCharacters(service.image) || service.image.find(' ') != std::string::npos)) {
      Report("service.image", "must be an image reference, got " + Quote(service.image));
    }
    if (service.runtime == Runtime::kProcess) {
      if (service.command.empty() || service.command.front().empty()) {
        Report("service.command", "required for " + runtime + " (a non-empty list)");
      }
      if (!service.image.empty()) {
        Report("service.image", "only for container runtimes (podman, docker), not " + runtime);
      }
      if (service.port != 0) {
        Report("service.port",
               "only for container runtimes (podman, docker); a process gets "
               "its port in ${PORT}");
      }
      if (!build.containerfile.empty()) {
        Report("build.containerfile",
               "only for container runtimes (podman, docker), not service." + runtime);
      }
    } else {
      if (service.port == 0) Report("service.port", "required for " + runtime);
      if (service.image.empty() && build.containerfile.empty()) {
        Report("service.image", "required for " + runtime + " unless build.containerfile is set");
      }
    }
    if (service.desired_count < kMinDesiredCount || service.desired_count > kMaxDesiredCount) {
      Report("service.desired_count",
             RangeError(kMinDesiredCount, kMaxDesiredCount, std::to_string(service.desired_count)));
    }
    for (const auto& [key, value] : service.env) {
      const std::string env_path = Field("service.env", key);
      if (!IsValidEnvName(key)) {
        Report(env_path, "environment variable names must match [A-Za-z_][A-Za-z0-9_]*");
      } else if (!IsCleanUtf8(value)) {
        Report(env_path, "values must be valid UTF-8 without NUL characters");
      }
    }

    const std::string hc = "service.health_check";
    const HealthCheckSpec& check = service.health_check;
    bool path_ok = !check.path.empty() && check.path.front() == '/' &&
                   std::all_of(check.path.begin(), check.path.end(),
                               [](char c) { return c > 0x20 && c < 0x7f; });
    if (!path_ok) {
      Report(Field(hc, "path"),
             "must start with '/' and contain no spaces or control characters, got " +
                 Quote(check.path));
    }
    bool interval_ok = ValidatePositive(Field(hc, "interval"), check.interval);
    bool timeout_ok = ValidatePositive(Field(hc, "timeout"), check.timeout);
    if (interval_ok && timeout_ok && check.timeout > check.interval &&
        !problems_->ReportedAt(Field(hc, "interval"))) {
      Report(Field(hc, "timeout"), "must not be longer than interval (" +
                                       FormatDuration(check.interval) + "), got " +
                                       FormatDuration(check.timeout));
    }
    ValidateThreshold(Field(hc, "healthy_threshold"), check.healthy_threshold);
    ValidateThreshold(Field(hc, "unhealthy_threshold"), check.unhealthy_threshold);
    if (Result<std::string> m = CanonicalMatcher(check.matcher); !m.ok()) {
      Report(Field(hc, "matcher"), m.status().message());
    }
    ValidatePositive("service.deploy_timeout", service.deploy_timeout);
  }

  void ValidateListener(const ListenerSpec& listener, const std::string& path) {
    if (listener.port == 0) Report(Field(path, "port"), RangeError(1, 65535, "0"));
    for (size_t j = 0; j < listener.allow.size(); ++j) {
      const Cidr& cidr = listener.allow[j];
      int max_len = cidr.family == AF_INET6 ? 128 : 32;
      if ((cidr.family != AF_INET && cidr.family != AF_INET6) || cidr.prefix_len < 0 ||
          cidr.prefix_len > max_len) {
        Report(Index(Field(path, "allow"), j), "invalid address block");
      }
    }
  }

  void Report(const std::string& path, std::string what) {
    if (problems_->ReportedAt(path)) return;
    problems_->Add(LineOf(path), path, std::move(what));
  }

  // The line of path, or of its nearest recorded parent (a missing key: the map that lacks it).
  int LineOf(std::string_view path) const {
    while (true) {
      if (auto it = lines_->find(path); it != lines_->end()) return it->second;
      if (path.empty()) return 0;
      path = ParentPath(path);
    }
  }

  bool ValidatePositive(const std::string& path, Duration d) {
    if (d.count() > 0) return true;
    Report(path, "must be greater than 0, got " + FormatDuration(d));
    return false;
  }

  void ValidateThreshold(const std::string& path, int n) {
    if (n >= kMinThreshold && n <= kMaxThreshold) return;
    Report(path, RangeError(kMinThreshold, kMaxThreshold, std::to_string(n)));
  }

  const LineMap* lines_;
  Problems* problems_;
};

// ---------------------------------------------------------------------------------------------
// Decoding a YAML document into a StackSpec, checking keys and types.

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

// Plain (unquoted) scalars are typed by their text; quoted ones are strings.
bool IsPlainOrIntTagged(const YAML::Node& n) {
  return n.Tag() == "?" || n.Tag() == "tag:yaml.org,2002:int";
}

class Decoder {
 public:
  Decoder(LineMap* lines, Problems* problems) : lines_(lines), problems_(problems) {}

  bool too_large() const { return values_ > kMaxValues; }

  void DecodeRoot(const YAML::Node& node, StackSpec* spec) {
    (*lines_)[""] = LineOf(node);
    DecodeMap(node, "", LineOf(node),
              {
                  {"name", true, String(&spec->name)},
                  {"source", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     DecodeSource(v, p, l, &spec->source);
                   }},
                  {"build", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     DecodeBuild(v, p, l, &spec->build);
                   }},
                  {"service", true,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     DecodeService(v, p, l, &spec->service);
                   }},
                  {"load_balancer", true,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     DecodeLoadBalancer(v, p, l, &spec->load_balancer);
                   }},
                  {"approval", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     DecodeApproval(v, p, l, &spec->approval);
                   }},
              },
              /*null_is_empty=*/false);
  }

 private:
  using Handler = std::function<void(const YAML::Node& value, const std::string& path, int line)>;
  struct Key {
    std::string_view name;
    bool required;
    Handler handle;
  };

  void Error(int line, const std::string& path, std::string what, bool covers_path = true) {
    problems_->Add(line, path, std::move(what), covers_path);
  }

  bool Visit(int line) {
    if (++values_ <= kMaxValues) return true;
    if (values_ == kMaxValues + 1) {
      Error(line, "",
            "the stack file is too large (more than " + std::to_string(kMaxValues) + " values)");
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
      // An empty value ("port:") is marked on the next line; the key's line is where it belongs.
      int value_line = value.IsNull() ? key_line : LineOf(value);
      if (value_line == 0) value_line = key_line;
      (*lines_)[key_path] = value_line;
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
    for (size_t i = 0; i < keys.size(); ++i) {
      if (i > 0) message += ", ";
      message += keys[i].name;
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
      const std::string element_path = Index(path, i);
      (*lines_)[element_path] = value_line;
      element(value, element_path, value_line);
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

  Handler String(std::string* out) {
    return
        [this, out](const YAML::Node& v, const std::string& p, int l) { GetString(v, p, l, out); };
  }

  // A non-empty string (the key is present, so an empty value is a mistake, not "unset").
  Handler NonEmptyString(std::string* out) {
    return [this, out](const YAML::Node& v, const std::string& p, int l) {
      std::string text;
      if (!GetString(v, p, l, &text)) return;
      if (text.empty()) {
        Error(l, p, "must not be empty (leave the key out instead)");
        return;
      }
      *out = std::move(text);
    };
  }

  // A sequence of strings; when non_empty, an explicitly empty sequence is an error.
  Handler StringList(std::vector<std::string>* out, bool non_empty) {
    return [this, out, non_empty](const YAML::Node& v, const std::string& p, int l) {
      DecodeSequence(v, p, l, [&](const YAML::Node& e, const std::string& ep, int el) {
        std::string text;
        if (!GetString(e, ep, el, &text)) return;
        out->push_back(std::move(text));
      });
      if (non_empty && out->empty() && !problems_->ReportedAt(p)) {
        Error(l, p, "must not be empty (leave the key out instead)");
      }
    };
  }

  std::optional<int64_t> GetInteger(const YAML::Node& node, const std::string& path, int line,
                                    int64_t lo, int64_t hi) {
    if (!node.IsScalar()) {
      Error(line, path, "expected an integer, got " + std::string(KindName(node)));
      return std::nullopt;
    }
    const std::string& text = node.Scalar();
    std::string_view digits = text;
    bool negative = !digits.empty() && digits.front() == '-';
    if (negative) digits.remove_prefix(1);
    bool syntax_ok = !digits.empty() && std::all_of(digits.begin(), digits.end(),
                                                    [](char c) { return c >= '0' && c <= '9'; });
    if (!syntax_ok) {
      Error(line, path, "expected an integer, got " + Quote(text));
      return std::nullopt;
    }
    if (!IsPlainOrIntTagged(node)) {
      Error(line, path, "expected an integer, got the quoted string " + Quote(text));
      return std::nullopt;
    }
    int64_t value = 0;
    bool overflow = false;
    for (char c : digits) {
      if (__builtin_mul_overflow(value, 10, &value) ||
          __builtin_sub_overflow(value, static_cast<int64_t>(c - '0'), &value)) {
        overflow = true;
        break;
      }
    }
    if (!negative && !overflow) {
      if (value == std::numeric_limits<int64_t>::min()) {
        overflow = true;
      } else {
        value = -value;
      }
    }
    if (overflow || value < lo || value > hi) {
      Error(line, path, RangeError(lo, hi, text));
      return std::nullopt;
    }
    return value;
  }

  Handler Port(uint16_t* out) {
    return [this, out](const YAML::Node& v, const std::string& p, int l) {
      if (auto n = GetInteger(v, p, l, 1, 65535)) *out = static_cast<uint16_t>(*n);
    };
  }

  Handler Integer(int* out, int64_t lo, int64_t hi) {
    return [this, out, lo, hi](const YAML::Node& v, const std::string& p, int l) {
      if (auto n = GetInteger(v, p, l, lo, hi)) *out = static_cast<int>(*n);
    };
  }

  Handler DurationValue(Duration* out) {
    return [this, out](const YAML::Node& v, const std::string& p, int l) {
      if (!v.IsScalar()) {
        Error(l, p, "expected a duration such as \"10s\", got " + std::string(KindName(v)));
        return;
      }
      Result<Duration> d = ParseDuration(v.Scalar());
      if (!d.ok()) {
        Error(l, p, d.status().message());
        return;
      }
      *out = *d;
    };
  }

  template <typename E, size_t N>
  Handler Enum(E* out, const E (&values)[N], std::string_view (*name_of)(E)) {
    return [this, out, &values, name_of](const YAML::Node& v, const std::string& p, int l) {
      std::string text;
      if (!GetString(v, p, l, &text)) return;
      std::optional<E> e = EnumFromName(text, values, name_of);
      if (!e) {
        Error(l, p, "must be " + EnumChoices(values, name_of) + ", got " + Quote(text));
        return;
      }
      *out = *e;
    };
  }

  void DecodeSource(const YAML::Node& node, const std::string& path, int line, SourceSpec* s) {
    DecodeMap(node, path, line,
              {
                  {"repo", true, String(&s->repo)},
                  {"branch", false, String(&s->branch)},
                  {"poll_interval", false, DurationValue(&s->poll_interval)},
              },
              /*null_is_empty=*/false);
  }

  void DecodeBuild(const YAML::Node& node, const std::string& path, int line, BuildSpec* b) {
    DecodeMap(node, path, line,
              {
                  {"commands", false, StringList(&b->commands, /*non_empty=*/true)},
                  {"containerfile", false, NonEmptyString(&b->containerfile)},
                  {"artifacts", false, StringList(&b->artifacts, /*non_empty=*/false)},
                  {"timeout", false, DurationValue(&b->timeout)},
              });
  }

  void DecodeService(const YAML::Node& node, const std::string& path, int line, ServiceSpec* s) {
    DecodeMap(node, path, line,
              {
                  {"runtime", false, Enum(&s->runtime, kRuntimes, RuntimeName)},
                  {"command", false, StringList(&s->command, /*non_empty=*/true)},
                  {"image", false, NonEmptyString(&s->image)},
                  {"port", false, Port(&s->port)},
                  {"desired_count", false,
                   Integer(&s->desired_count, kMinDesiredCount, kMaxDesiredCount)},
                  {"env", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     DecodeEnv(v, p, l, &s->env);
                   }},
                  {"health_check", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     DecodeHealthCheck(v, p, l, &s->health_check);
                   }},
                  {"deploy_timeout", false, DurationValue(&s->deploy_timeout)},
              },
              /*null_is_empty=*/false);
  }

  void DecodeEnv(const YAML::Node& node, const std::string& path, int line,
                 std::map<std::string, std::string>* env) {
    if (node.IsNull()) return;
    if (!node.IsMap()) {
      Error(line, path, "expected a map of strings, got " + std::string(KindName(node)));
      return;
    }
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
      (*lines_)[env_path] = key_line;
      if (env->count(key) != 0) {
        Error(key_line, env_path, "duplicate key");
        continue;
      }
      if (!value.IsScalar()) {
        Error(key_line, env_path,
              "values must be strings, got " + std::string(KindName(value)) +
                  (value.IsNull() ? " (quote it: \"\")" : ""));
        continue;
      }
      (*env)[key] = value.Scalar();
    }
  }

  void DecodeHealthCheck(const YAML::Node& node, const std::string& path, int line,
                         HealthCheckSpec* check) {
    DecodeMap(node, path, line,
              {
                  {"path", false, String(&check->path)},
                  {"interval", false, DurationValue(&check->interval)},
                  {"timeout", false, DurationValue(&check->timeout)},
                  {"healthy_threshold", false,
                   Integer(&check->healthy_threshold, kMinThreshold, kMaxThreshold)},
                  {"unhealthy_threshold", false,
                   Integer(&check->unhealthy_threshold, kMinThreshold, kMaxThreshold)},
                  {"matcher", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     std::string text;
                     if (!GetString(v, p, l, &text)) return;
                     Result<std::string> matcher = CanonicalMatcher(text);
                     if (!matcher.ok()) {
                       Error(l, p, matcher.status().message());
                       return;
                     }
                     check->matcher = *matcher;
                   }},
              });
  }

  void DecodeListener(const YAML::Node& node, const std::string& path, int line,
                      ListenerSpec* listener) {
    DecodeMap(node, path, line,
              {
                  {"port", true, Port(&listener->port)},
                  {"allow", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     DecodeSequence(v, p, l,
                                    [&](const YAML::Node& e, const std::string& ep, int el) {
                                      std::string text;
                                      if (!GetString(e, ep, el, &text)) return;
                                      Result<Cidr> cidr = ParseCidr(text);
                                      if (!cidr.ok()) {
                                        Error(el, ep, cidr.status().message());
                                        return;
                                      }
                                      listener->allow.push_back(*cidr);
                                    });
                   }},
              },
              /*null_is_empty=*/false);
  }

  void DecodeLoadBalancer(const YAML::Node& node, const std::string& path, int line,
                          LoadBalancerSpec* lb) {
    DecodeMap(node, path, line,
              {
                  {"production", true,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     DecodeListener(v, p, l, &lb->production);
                   }},
                  {"test", true,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     DecodeListener(v, p, l, &lb->test);
                   }},
                  {"deregistration_delay", false, DurationValue(&lb->deregistration_delay)},
              },
              /*null_is_empty=*/false);
  }

  void DecodeApproval(const YAML::Node& node, const std::string& path, int line,
                      ApprovalSpec* approval) {
    DecodeMap(
        node, path, line,
        {
            {"mode", false, Enum(&approval->mode, kApprovalModes, ApprovalModeName)},
            {"timeout", false, DurationValue(&approval->timeout)},
            {"on_timeout", false, Enum(&approval->on_timeout, kTimeoutActions, TimeoutActionName)},
        });
  }

  LineMap* lines_;
  Problems* problems_;
  size_t values_ = 0;
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

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public API

std::string_view RuntimeName(Runtime r) {
  switch (r) {
    case Runtime::kProcess:
      return "process";
    case Runtime::kPodman:
      return "podman";
    case Runtime::kDocker:
      return "docker";
  }
  return "unknown";
}

std::string_view ApprovalModeName(ApprovalMode m) {
  switch (m) {
    case ApprovalMode::kManual:
      return "manual";
    case ApprovalMode::kAuto:
      return "auto";
  }
  return "unknown";
}

std::string_view TimeoutActionName(TimeoutAction a) {
  switch (a) {
    case TimeoutAction::kReject:
      return "reject";
    case TimeoutAction::kApprove:
      return "approve";
  }
  return "unknown";
}

Result<StackSpec> ParseStackSpec(std::string_view yaml) {
  if (const size_t bad = FindInvalidUtf8(yaml); bad != std::string_view::npos) {
    return InvalidArgument("the text is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  }
  StackSpec spec;
  Problems problems;
  LineMap lines;
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
    if (root.IsNull()) return InvalidArgument(FormatLine(1, "the stack file is empty"));
    if (!root.IsMap()) {
      return InvalidArgument(FormatLine(
          LineOf(root), "the stack file must be a map, got " + std::string(KindName(root))));
    }
    Decoder decoder(&lines, &problems);
    decoder.DecodeRoot(root, &spec);
    if (decoder.too_large()) return problems.ToStatus();
  } catch (const YAML::Exception& e) {
    return InvalidArgument(
        FormatLine(e.mark.is_null() ? 0 : e.mark.line + 1, "invalid YAML: " + e.msg));
  } catch (const std::exception& e) {
    return Internal(std::string("cannot read the stack file: ") + e.what());
  }
  Validator(&lines, &problems).Validate(spec);
  if (!problems.empty()) return problems.ToStatus();
  return spec;
}

std::string StackSpecToJson(const StackSpec& spec) {
  using Json = nlohmann::ordered_json;
  auto strings = [](const std::vector<std::string>& v) {
    Json out = Json::array();
    for (const std::string& s : v) out.push_back(s);
    return out;
  };
  auto listener = [](const ListenerSpec& l) {
    Json allow = Json::array();
    for (const Cidr& cidr : l.allow) allow.push_back(cidr.ToString());
    return Json{{"port", l.port}, {"allow", std::move(allow)}};
  };

  Json root = Json::object();
  root["name"] = spec.name;
  if (spec.has_source()) {
    root["source"] = Json{{"repo", spec.source.repo},
                          {"branch", spec.source.branch},
                          {"poll_interval", FormatDuration(spec.source.poll_interval)}};
  }

  const BuildSpec& b = spec.build;
  Json build = Json::object();
  if (!b.commands.empty()) build["commands"] = strings(b.commands);
  if (!b.containerfile.empty()) build["containerfile"] = b.containerfile;
  build["artifacts"] = strings(b.artifacts);
  build["timeout"] = FormatDuration(b.timeout);
  root["build"] = std::move(build);

  const ServiceSpec& s = spec.service;
  Json service = Json::object();
  service["runtime"] = RuntimeName(s.runtime);
  if (!s.command.empty()) service["command"] = strings(s.command);
  if (!s.image.empty()) service["image"] = s.image;
  if (s.port != 0) service["port"] = s.port;
  service["desired_count"] = s.desired_count;
  Json env = Json::object();
  for (const auto& [key, value] : s.env) env[key] = value;
  service["env"] = std::move(env);
  const HealthCheckSpec& hc = s.health_check;
  service["health_check"] = Json{{"path", hc.path},
                                 {"interval", FormatDuration(hc.interval)},
                                 {"timeout", FormatDuration(hc.timeout)},
                                 {"healthy_threshold", hc.healthy_threshold},
                                 {"unhealthy_threshold", hc.unhealthy_threshold},
                                 {"matcher", hc.matcher}};
  service["deploy_timeout"] = FormatDuration(s.deploy_timeout);
  root["service"] = std::move(service);

  const LoadBalancerSpec& lb = spec.load_balancer;
  root["load_balancer"] = Json{{"production", listener(lb.production)},
                               {"test", listener(lb.test)},
                               {"deregistration_delay", FormatDuration(lb.deregistration_delay)}};

  root["approval"] = Json{{"mode", ApprovalModeName(spec.approval.mode)},
                          {"timeout", FormatDuration(spec.approval.timeout)},
                          {"on_timeout", TimeoutActionName(spec.approval.on_timeout)}};
  // Invalid UTF-8 cannot come from a validated spec; replacing it keeps this from throwing.
  return root.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace bluegreen::stack
