#include "proxy/config.h"

#include "common/utf8.h"

#include <sys/un.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <functional>
#include <istream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace bluegreen::proxy {
namespace {

// A document can alias one large sequence many times; decoding stops after this many values.
constexpr size_t kMaxValues = 100'000;
// Past this many problems the rest are counted, not listed.
constexpr size_t kMaxReportedProblems = 100;

constexpr size_t kMaxNameLength = 64;
constexpr size_t kMaxTagKeyLength = 128;
constexpr size_t kMaxTagValueLength = 256;
constexpr int64_t kMaxWorkers = 256;
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
  std::string out = path;
  out += '.';
  out += key;
  return out;
}

std::string Index(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

std::string RangeError(int64_t lo, int64_t hi, std::string_view got) {
  if (hi == std::numeric_limits<int64_t>::max()) {
    return "must be at least " + std::to_string(lo) + ", got " + std::string(got);
  }
  return "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
         std::string(got);
}

bool IsValidName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

std::string NameError(std::string_view name) {
  return "must be 1 to 64 characters of A-Z a-z 0-9 _ . -, got " + Quote(name);
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

// ---------------------------------------------------------------------------------------------
// Problems: every error found, reported together.

// Line numbers by key path, as recorded while decoding the document.
using LineMap = std::map<std::string, int, std::less<>>;

// The parent of "a.b[2].c" is "a.b[2]", whose parent is "a.b", then "a", then "".
std::string_view ParentPath(std::string_view path) {
  size_t cut = path.find_last_of(".[");
  return cut == std::string_view::npos ? std::string_view() : path.substr(0, cut);
}

class Problems {
 public:
  // line is 1-based; 0 means unknown. path is empty for problems with the document as a whole.
  // Unless covers_path is false, later problems at path or below it are not reported: they
  // would be consequences of this one.
  void Add(int line, const std::string& path, std::string what, bool covers_path = true) {
    problems_.push_back({line, path, std::move(what)});
    if (covers_path && !path.empty()) paths_.insert(path);
  }

  // Whether a problem was already reported at path or at one of its parents. A value that failed
  // to decode keeps its default, which validation should not report a second time.
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
// Validation of a decoded (or programmatically built) config.

class Validator {
 public:
  // lines may be null (a config that did not come from text).
  Validator(const LineMap* lines, Problems* problems) : lines_(lines), problems_(problems) {}

  void Validate(const ProxyConfig& config) {
    ValidateAdmin(config.admin);
    if (!config.state_file.empty() && !IsCleanUtf8(config.state_file)) {
      Report("state_file", "must be valid UTF-8 without NUL characters");
    }
    if (config.workers < 0 || config.workers > kMaxWorkers) {
      Report("workers", RangeError(0, kMaxWorkers, std::to_string(config.workers)));
    }
    if (!config.cpu_affinity.empty() && config.cpu_affinity != "auto" &&
        config.cpu_affinity != "none") {
      Report("cpu_affinity", "must be auto or none, got " + Quote(config.cpu_affinity));
    }

    std::map<std::string, size_t> group_index;
    for (size_t i = 0; i < config.target_groups.size(); ++i) {
      const std::string path = Index("target_groups", i);
      const TargetGroupConfig& group = config.target_groups[i];
      if (!IsValidName(group.name)) {
        Report(Field(path, "name"), NameError(group.name));
      } else if (auto [it, inserted] = group_index.emplace(group.name, i); !inserted) {
        Report(Field(path, "name"), "duplicate target group name " + Quote(group.name) +
                                        " (first used by " + Index("target_groups", it->second) +
                                        ")");
      }
      ValidateTargetGroup(group, path);
    }

    std::map<std::string, size_t> listener_index;
    std::map<std::string, size_t> bind_index;
    for (size_t i = 0; i < config.listeners.size(); ++i) {
      const std::string path = Index("listeners", i);
      const ListenerConfig& listener = config.listeners[i];
      if (!IsValidName(listener.name)) {
        Report(Field(path, "name"), NameError(listener.name));
      } else if (auto [it, inserted] = listener_index.emplace(listener.name, i); !inserted) {
        Report(Field(path, "name"), "duplicate listener name " + Quote(listener.name) +
                                        " (first used by " + Index("listeners", it->second) + ")");
      }
      Result<Endpoint> bind = MakeEndpoint(listener.address, listener.port);
      if (!bind.ok() || listener.address.find('%') != std::string::npos) {
        Report(Field(path, "address"),
               "must be a numeric IPv4 or IPv6 address, got " + Quote(listener.address));
      }
      if (listener.port == 0) {
        Report(Field(path, "port"), RangeError(1, 65535, "0"));
      } else if (bind.ok()) {
        auto [it, inserted] = bind_index.emplace(bind->ToString(), i);
        if (!inserted) {
          Report(Field(path, "port"),
                 bind->ToString() + " is already used by " + Index("listeners", it->second));
        }
      }
      if (group_index.find(listener.target_group) == group_index.end()) {
        Report(Field(path, "target_group"),
               "no target group named " + Quote(listener.target_group));
      }
      for (size_t j = 0; j < listener.allow.size(); ++j) {
        const Cidr& cidr = listener.allow[j];
        int max_len = cidr.family == AF_INET6 ? 128 : 32;
        if ((cidr.family != AF_INET && cidr.family != AF_INET6) || cidr.prefix_len < 0 ||
            cidr.prefix_len > max_len) {
          Report(Index(Field(path, "allow"), j), "invalid address block");
        }
      }
    }

    const Limits& limits = config.limits;
    ValidatePositive("limits.client_header_timeout", limits.client_header_timeout);
    ValidatePositive("limits.client_idle_timeout", limits.client_idle_timeout);
    ValidatePositive("limits.upstream_connect_timeout", limits.upstream_connect_timeout);
    ValidatePositive("limits.upstream_response_timeout", limits.upstream_response_timeout);
    ValidatePositive("limits.upstream_idle_timeout", limits.upstream_idle_timeout);
    ValidatePositive("limits.drain_timeout", limits.drain_timeout);
    ValidatePositive("limits.max_request_line", limits.max_request_line);
    ValidatePositive("limits.max_header_bytes", limits.max_header_bytes);
    ValidatePositive("limits.max_headers", limits.max_headers);
  }

 private:
  void Report(const std::string& path, std::string what) {
    if (problems_->ReportedAt(path)) return;
    problems_->Add(LineOf(path), path, std::move(what));
  }

  // The line of path, or of its nearest recorded parent (a missing key: the map that lacks it).
  int LineOf(std::string_view path) const {
    if (lines_ == nullptr) return 0;
    while (true) {
      if (auto it = lines_->find(path); it != lines_->end()) return it->second;
      if (path.empty()) return 0;
      path = ParentPath(path);
    }
  }

  void ValidateAdmin(const std::string& admin) {
    if (admin.empty()) return;
    constexpr std::string_view kUnix = "unix:";
    if (admin.compare(0, kUnix.size(), kUnix) == 0) {
      std::string_view path = std::string_view(admin).substr(kUnix.size());
      constexpr size_t kMaxSocketPath = sizeof(sockaddr_un::sun_path) - 1;
      if (path.empty() || path.front() != '/') {
        Report("admin", "unix socket path must be absolute, got " + Quote(admin));
      } else if (path.size() > kMaxSocketPath) {
        Report("admin", "unix socket path must be at most " + std::to_string(kMaxSocketPath) +
                            " bytes, got " + std::to_string(path.size()));
      } else if (!IsCleanUtf8(path)) {
        Report("admin", "unix socket path must be valid UTF-8 without NUL characters");
      }
      return;
    }
    Result<Endpoint> endpoint = ParseEndpoint(admin);
    if (!endpoint.ok()) {
      Report("admin", "must be IP:port or unix:/absolute/path, got " + Quote(admin));
    } else if (endpoint->port() == 0) {
      Report("admin", "port " + RangeError(1, 65535, "0"));
    }
  }

  void ValidateTargetGroup(const TargetGroupConfig& group, const std::string& path) {
    std::map<std::string, size_t> seen;
    for (size_t j = 0; j < group.targets.size(); ++j) {
      const std::string target_path = Index(Field(path, "targets"), j);
      const Endpoint& target = group.targets[j];
      if (target.family() != AF_INET && target.family() != AF_INET6) {
        Report(target_path, "must be an IP:port endpoint");
        continue;
      }
      if (target.port() == 0) {
        Report(target_path, "port " + RangeError(1, 65535, "0"));
        continue;
      }
      auto [it, inserted] = seen.emplace(target.ToString(), j);
      if (!inserted) {
        Report(target_path, "duplicate target " + target.ToString() + " (also " +
                                Index(Field(path, "targets"), it->second) + ")");
      }
    }

    if (group.algorithm != Algorithm::kRoundRobin &&
        group.algorithm != Algorithm::kLeastOutstandingRequests) {
      Report(Field(path, "algorithm"), "unknown algorithm");
    }

    const std::string hc = Field(path, "health_check");
    const HealthCheckConfig& check = group.health_check;
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
    if (Result<StatusMatcher> m = ParseStatusMatcher(check.matcher.ToString()); !m.ok()) {
      Report(Field(hc, "matcher"), m.status().message());
    }

    if (group.deregistration_delay.count() < 0) {
      Report(Field(path, "deregistration_delay"),
             "must not be negative, got " + FormatDuration(group.deregistration_delay));
    }

    for (const auto& [key, value] : group.tags) {
      const std::string tag_path = Field(Field(path, "tags"), key);
      if (key.empty() || key.size() > kMaxTagKeyLength) {
        Report(tag_path, "tag keys must be 1 to " + std::to_string(kMaxTagKeyLength) +
                             " characters, got " + std::to_string(key.size()));
      } else if (!IsCleanUtf8(key)) {
        Report(tag_path, "tag keys must be valid UTF-8 without NUL characters");
      }
      if (value.size() > kMaxTagValueLength) {
        Report(tag_path, "tag values must be at most " + std::to_string(kMaxTagValueLength) +
                             " characters, got " + std::to_string(value.size()));
      } else if (!IsCleanUtf8(value)) {
        Report(tag_path, "tag values must be valid UTF-8 without NUL characters");
      }
    }
  }

  bool ValidatePositive(const std::string& path, Duration d) {
    if (d.count() > 0) return true;
    Report(path, "must be greater than 0, got " + FormatDuration(d));
    return false;
  }

  void ValidatePositive(const std::string& path, size_t n) {
    if (n > 0) return;
    Report(path, RangeError(1, std::numeric_limits<int64_t>::max(), "0"));
  }

  void ValidateThreshold(const std::string& path, int n) {
    if (n >= kMinThreshold && n <= kMaxThreshold) return;
    Report(path, RangeError(kMinThreshold, kMaxThreshold, std::to_string(n)));
  }

  const LineMap* lines_;
  Problems* problems_;
};

// ---------------------------------------------------------------------------------------------
// Decoding a YAML document into a ProxyConfig, checking keys and types.

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

  // Decoding stopped early; the config is incomplete and not worth validating.
  bool too_large() const { return values_ > kMaxValues; }

  // node is the map at the root of the document.
  void DecodeRoot(const YAML::Node& node, ProxyConfig* config) {
    (*lines_)[""] = LineOf(node);
    DecodeMap(node, "", LineOf(node),
              {
                  {"admin", false,
                   [&](const YAML::Node& v, const std::string& p, int line) {
                     GetString(v, p, line, &config->admin);
                   }},
                  {"state_file", false,
                   [&](const YAML::Node& v, const std::string& p, int line) {
                     GetString(v, p, line, &config->state_file);
                   }},
                  {"workers", false,
                   [&](const YAML::Node& v, const std::string& p, int line) {
                     if (auto n = GetInteger(v, p, line, 0, kMaxWorkers)) {
                       config->workers = static_cast<int>(*n);
                     }
                   }},
                  {"cpu_affinity", false,
                   [&](const YAML::Node& v, const std::string& p, int line) {
                     GetString(v, p, line, &config->cpu_affinity);
                   }},
                  {"listeners", false,
                   [&](const YAML::Node& v, const std::string& p, int line) {
                     DecodeSequence(v, p, line,
                                    [&](const YAML::Node& e, const std::string& ep, int eline) {
                                      config->listeners.emplace_back();
                                      DecodeListener(e, ep, eline, &config->listeners.back());
                                    });
                   }},
                  {"target_groups", false,
                   [&](const YAML::Node& v, const std::string& p, int line) {
                     DecodeSequence(
                         v, p, line, [&](const YAML::Node& e, const std::string& ep, int eline) {
                           config->target_groups.emplace_back();
                           DecodeTargetGroup(e, ep, eline, &config->target_groups.back());
                         });
                   }},
                  {"limits", false,
                   [&](const YAML::Node& v, const std::string& p, int line) {
                     DecodeLimits(v, p, line, &config->limits);
                   }},
              });
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

  // Counts one more value; false once the document is too large to decode.
  bool Visit(int line) {
    if (++values_ <= kMaxValues) return true;
    if (values_ == kMaxValues + 1) {
      Error(line, "",
            "the config is too large (more than " + std::to_string(kMaxValues) + " values)");
    }
    return false;
  }

  // A map with the given keys. A null value stands for an empty map when the map is optional.
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

  // A plain decimal integer in [lo, hi].
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
    // Accumulate as a negative number so that the minimum int64 is representable.
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

  void GetDuration(const YAML::Node& node, const std::string& path, int line, Duration* out) {
    if (!node.IsScalar()) {
      Error(line, path, "expected a duration such as \"10s\", got " + std::string(KindName(node)));
      return;
    }
    Result<Duration> d = ParseDuration(node.Scalar());
    if (!d.ok()) {
      Error(line, path, d.status().message());
      return;
    }
    *out = *d;
  }

  void GetSize(const YAML::Node& node, const std::string& path, int line, size_t* out) {
    if (auto n = GetInteger(node, path, line, 1, std::numeric_limits<int64_t>::max())) {
      *out = static_cast<size_t>(*n);
    }
  }

  void DecodeListener(const YAML::Node& node, const std::string& path, int line,
                      ListenerConfig* listener) {
    DecodeMap(node, path, line,
              {
                  {"name", true,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     GetString(v, p, l, &listener->name);
                   }},
                  {"address", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     GetString(v, p, l, &listener->address);
                   }},
                  {"port", true,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     if (auto n = GetInteger(v, p, l, 1, 65535)) {
                       listener->port = static_cast<uint16_t>(*n);
                     }
                   }},
                  {"target_group", true,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     GetString(v, p, l, &listener->target_group);
                   }},
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

  void DecodeTargetGroup(const YAML::Node& node, const std::string& path, int line,
                         TargetGroupConfig* group) {
    DecodeMap(node, path, line,
              {
                  {"name", true,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     GetString(v, p, l, &group->name);
                   }},
                  {"targets", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     DecodeSequence(
                         v, p, l, [&](const YAML::Node& e, const std::string& ep, int el) {
                           std::string text;
                           if (!GetString(e, ep, el, &text)) {
                             group->targets.emplace_back();  // keeps indices of later targets right
                             return;
                           }
                           Result<Endpoint> endpoint = ParseEndpoint(text);
                           if (!endpoint.ok()) {
                             Error(el, ep, endpoint.status().message());
                             group->targets.emplace_back();
                             return;
                           }
                           group->targets.push_back(*endpoint);
                         });
                   }},
                  {"algorithm", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     std::string text;
                     if (!GetString(v, p, l, &text)) return;
                     Result<Algorithm> algorithm = ParseAlgorithm(text);
                     if (!algorithm.ok()) {
                       Error(l, p, algorithm.status().message());
                       return;
                     }
                     group->algorithm = *algorithm;
                   }},
                  {"health_check", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     DecodeHealthCheck(v, p, l, &group->health_check);
                   }},
                  {"deregistration_delay", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     GetDuration(v, p, l, &group->deregistration_delay);
                   }},
                  {"tags", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     DecodeTags(v, p, l, &group->tags);
                   }},
              },
              /*null_is_empty=*/false);
  }

  void DecodeHealthCheck(const YAML::Node& node, const std::string& path, int line,
                         HealthCheckConfig* check) {
    DecodeMap(node, path, line,
              {
                  {"path", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     GetString(v, p, l, &check->path);
                   }},
                  {"interval", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     GetDuration(v, p, l, &check->interval);
                   }},
                  {"timeout", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     GetDuration(v, p, l, &check->timeout);
                   }},
                  {"healthy_threshold", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     if (auto n = GetInteger(v, p, l, kMinThreshold, kMaxThreshold)) {
                       check->healthy_threshold = static_cast<int>(*n);
                     }
                   }},
                  {"unhealthy_threshold", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     if (auto n = GetInteger(v, p, l, kMinThreshold, kMaxThreshold)) {
                       check->unhealthy_threshold = static_cast<int>(*n);
                     }
                   }},
                  {"matcher", false,
                   [&](const YAML::Node& v, const std::string& p, int l) {
                     std::string text;
                     if (!GetString(v, p, l, &text)) return;
                     Result<StatusMatcher> matcher = ParseStatusMatcher(text);
                     if (!matcher.ok()) {
                       Error(l, p, matcher.status().message());
                       return;
                     }
                     check->matcher = *matcher;
                   }},
              });
  }

  void DecodeTags(const YAML::Node& node, const std::string& path, int line,
                  std::map<std::string, std::string>* tags) {
    if (node.IsNull()) return;
    if (!node.IsMap()) {
      Error(line, path, "expected a map of strings, got " + std::string(KindName(node)));
      return;
    }
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key_node = it->first;  // copies: it-> yields a temporary
      const YAML::Node value = it->second;
      int key_line = LineOf(key_node);
      if (!Visit(key_line)) return;
      if (!key_node.IsScalar()) {
        Error(key_line, path, "tag keys must be strings, got " + std::string(KindName(key_node)),
              /*covers_path=*/false);
        continue;
      }
      const std::string& key = key_node.Scalar();
      const std::string tag_path = Field(path, key);
      (*lines_)[tag_path] = key_line;
      if (tags->count(key) != 0) {
        Error(key_line, tag_path, "duplicate key");
        continue;
      }
      if (!value.IsScalar()) {
        Error(key_line, tag_path,
              "tag values must be strings, got " + std::string(KindName(value)) +
                  (value.IsNull() ? " (quote it: \"\")" : ""));
        continue;
      }
      (*tags)[key] = value.Scalar();
    }
  }

  void DecodeLimits(const YAML::Node& node, const std::string& path, int line, Limits* limits) {
    auto duration = [&](std::string_view name, Duration* out) {
      return Key{name, false, [this, out](const YAML::Node& v, const std::string& p, int l) {
                   GetDuration(v, p, l, out);
                 }};
    };
    auto size = [&](std::string_view name, size_t* out) {
      return Key{name, false, [this, out](const YAML::Node& v, const std::string& p, int l) {
                   GetSize(v, p, l, out);
                 }};
    };
    DecodeMap(node, path, line,
              {
                  duration("client_header_timeout", &limits->client_header_timeout),
                  duration("client_idle_timeout", &limits->client_idle_timeout),
                  duration("upstream_connect_timeout", &limits->upstream_connect_timeout),
                  duration("upstream_response_timeout", &limits->upstream_response_timeout),
                  duration("upstream_idle_timeout", &limits->upstream_idle_timeout),
                  duration("drain_timeout", &limits->drain_timeout),
                  size("max_request_line", &limits->max_request_line),
                  size("max_header_bytes", &limits->max_header_bytes),
                  size("max_headers", &limits->max_headers),
              });
  }

  LineMap* lines_;
  Problems* problems_;
  size_t values_ = 0;
};

// Counts the documents of a stream and remembers where each starts. YAML::LoadAll is not used:
// yaml-cpp 0.7 loops forever on some malformed input (a stray ',' at the top level).
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

std::string_view AlgorithmName(Algorithm a) {
  switch (a) {
    case Algorithm::kRoundRobin:
      return "round_robin";
    case Algorithm::kLeastOutstandingRequests:
      return "least_outstanding_requests";
  }
  return "unknown";
}

Result<Algorithm> ParseAlgorithm(std::string_view name) {
  for (Algorithm a : {Algorithm::kRoundRobin, Algorithm::kLeastOutstandingRequests}) {
    if (name == AlgorithmName(a)) return a;
  }
  return InvalidArgument("unknown algorithm " + Quote(name) +
                         " (expected round_robin or least_outstanding_requests)");
}

bool StatusMatcher::Matches(int status) const {
  return std::any_of(ranges.begin(), ranges.end(), [status](const std::pair<int, int>& r) {
    return status >= r.first && status <= r.second;
  });
}

std::string StatusMatcher::ToString() const {
  std::string out;
  for (const auto& [lo, hi] : ranges) {
    if (!out.empty()) out += ',';
    out += std::to_string(lo);
    if (hi != lo) out += "-" + std::to_string(hi);
  }
  return out;
}

Result<StatusMatcher> ParseStatusMatcher(std::string_view text) {
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
  StatusMatcher matcher;
  if (Trim(text).empty()) return invalid("empty (expected codes such as \"200-299,404\")");
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
    matcher.ranges.emplace_back(*lo, *hi);
  }
  return matcher;
}

const TargetGroupConfig* ProxyConfig::FindTargetGroup(std::string_view name) const {
  for (const TargetGroupConfig& group : target_groups) {
    if (group.name == name) return &group;
  }
  return nullptr;
}

TargetGroupConfig* ProxyConfig::FindTargetGroup(std::string_view name) {
  return const_cast<TargetGroupConfig*>(std::as_const(*this).FindTargetGroup(name));
}

const ListenerConfig* ProxyConfig::FindListener(std::string_view name) const {
  for (const ListenerConfig& listener : listeners) {
    if (listener.name == name) return &listener;
  }
  return nullptr;
}

ListenerConfig* ProxyConfig::FindListener(std::string_view name) {
  return const_cast<ListenerConfig*>(std::as_const(*this).FindListener(name));
}

Result<ProxyConfig> ParseProxyConfig(std::string_view text) {
  if (const size_t bad = FindInvalidUtf8(text); bad != std::string_view::npos) {
    return InvalidArgument("the text is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  }
  ProxyConfig config;
  Problems problems;
  LineMap lines;
  try {
    const std::string input(text);
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
    if (root.IsNull()) return InvalidArgument(FormatLine(1, "the config is empty"));
    if (!root.IsMap()) {
      return InvalidArgument(
          FormatLine(LineOf(root), "the config must be a map, got " + std::string(KindName(root))));
    }
    Decoder decoder(&lines, &problems);
    decoder.DecodeRoot(root, &config);
    if (decoder.too_large()) return problems.ToStatus();
  } catch (const YAML::Exception& e) {
    return InvalidArgument(
        FormatLine(e.mark.is_null() ? 0 : e.mark.line + 1, "invalid YAML: " + e.msg));
  } catch (const std::exception& e) {
    return Internal(std::string("cannot read the config: ") + e.what());
  }
  Validator(&lines, &problems).Validate(config);
  if (!problems.empty()) return problems.ToStatus();
  return config;
}

Status ValidateProxyConfig(const ProxyConfig& config) {
  Problems problems;
  Validator(nullptr, &problems).Validate(config);
  if (!problems.empty()) return problems.ToStatus();
  return Status::Ok();
}

std::string ProxyConfigToJson(const ProxyConfig& config) {
  using Json = nlohmann::ordered_json;
  Json root = Json::object();
  if (!config.admin.empty()) root["admin"] = config.admin;
  if (!config.state_file.empty()) root["state_file"] = config.state_file;
  root["workers"] = config.workers;
  if (!config.cpu_affinity.empty()) root["cpu_affinity"] = config.cpu_affinity;

  Json listeners = Json::array();
  for (const ListenerConfig& l : config.listeners) {
    Json allow = Json::array();
    for (const Cidr& cidr : l.allow) allow.push_back(cidr.ToString());
    listeners.push_back(Json{{"name", l.name},
                             {"address", l.address},
                             {"port", l.port},
                             {"target_group", l.target_group},
                             {"allow", std::move(allow)}});
  }
  root["listeners"] = std::move(listeners);

  Json groups = Json::array();
  for (const TargetGroupConfig& g : config.target_groups) {
    Json targets = Json::array();
    for (const Endpoint& t : g.targets) targets.push_back(t.ToString());
    const HealthCheckConfig& hc = g.health_check;
    Json tags = Json::object();
    for (const auto& [key, value] : g.tags) tags[key] = value;
    groups.push_back(Json{{"name", g.name},
                          {"targets", std::move(targets)},
                          {"algorithm", AlgorithmName(g.algorithm)},
                          {"health_check", Json{{"path", hc.path},
                                                {"interval", FormatDuration(hc.interval)},
                                                {"timeout", FormatDuration(hc.timeout)},
                                                {"healthy_threshold", hc.healthy_threshold},
                                                {"unhealthy_threshold", hc.unhealthy_threshold},
                                                {"matcher", hc.matcher.ToString()}}},
                          {"deregistration_delay", FormatDuration(g.deregistration_delay)},
                          {"tags", std::move(tags)}});
  }
  root["target_groups"] = std::move(groups);

  const Limits& limits = config.limits;
  root["limits"] = Json{
      {"client_header_timeout", FormatDuration(limits.client_header_timeout)},
      {"client_idle_timeout", FormatDuration(limits.client_idle_timeout)},
      {"upstream_connect_timeout", FormatDuration(limits.upstream_connect_timeout)},
      {"upstream_response_timeout", FormatDuration(limits.upstream_response_timeout)},
      {"upstream_idle_timeout", FormatDuration(limits.upstream_idle_timeout)},
      {"drain_timeout", FormatDuration(limits.drain_timeout)},
      {"max_request_line", limits.max_request_line},
      {"max_header_bytes", limits.max_header_bytes},
      {"max_headers", limits.max_headers},
  };
  // Invalid UTF-8 cannot come from a validated config; replacing it keeps this from throwing.
  return root.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace bluegreen::proxy
