#include "serve/prometheus_text.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>

namespace bluegreen::serve {
namespace {

bool NameStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}
bool NameChar(char c) { return NameStart(c) || (c >= '0' && c <= '9'); }

void SkipBlanks(std::string_view s, size_t* i) {
  while (*i < s.size() && (s[*i] == ' ' || s[*i] == '\t')) ++*i;
}

// A metric or label name at `*i`; empty when there is none.
std::string_view ReadName(std::string_view s, size_t* i, bool metric) {
  const size_t start = *i;
  if (*i >= s.size() || !NameStart(s[*i]) || (!metric && s[*i] == ':')) return {};
  while (*i < s.size() && NameChar(s[*i]) && (metric || s[*i] != ':')) ++*i;
  return s.substr(start, *i - start);
}

// A Go-style float: digits, exponents, "+Inf", "-Inf", "NaN".
bool ParseValue(std::string_view text, double* out) {
  if (text == "+Inf" || text == "Inf") {
    *out = HUGE_VAL;
    return true;
  }
  if (text == "-Inf") {
    *out = -HUGE_VAL;
    return true;
  }
  if (text == "NaN") {
    *out = std::nan("");
    return true;
  }
  if (text.empty() || text.size() > 64) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')) {
      return false;
    }
  }
  const std::string copy(text);
  char* end = nullptr;
  *out = std::strtod(copy.c_str(), &end);
  return end == copy.c_str() + copy.size();
}

Status LineError(size_t line, std::string_view what) {
  return InvalidArgument(fmt::format("line {}: {}", line, what));
}

}  // namespace

std::string_view PromSample::Label(std::string_view label) const {
  for (const auto& [k, v] : labels) {
    if (k == label) return v;
  }
  return {};
}

Result<std::vector<PromSample>> ParsePrometheusText(std::string_view text) {
  std::vector<PromSample> out;
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t i = 0;
    SkipBlanks(line, &i);
    if (i == line.size() || line[i] == '#') continue;

    PromSample sample;
    const std::string_view name = ReadName(line, &i, /*metric=*/true);
    if (name.empty()) return LineError(line_no, "expected a metric name");
    sample.name = std::string(name);
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (true) {
        SkipBlanks(line, &i);
        if (i < line.size() && line[i] == '}') {
          ++i;
          break;
        }
        const std::string_view key = ReadName(line, &i, /*metric=*/false);
        if (key.empty()) return LineError(line_no, "expected a label name");
        SkipBlanks(line, &i);
        if (i >= line.size() || line[i] != '=') return LineError(line_no, "expected '='");
        ++i;
        SkipBlanks(line, &i);
        if (i >= line.size() || line[i] != '"') return LineError(line_no, "expected '\"'");
        ++i;
        std::string value;
        bool closed = false;
        while (i < line.size()) {
          const char c = line[i++];
          if (c == '"') {
            closed = true;
            break;
          }
          if (c != '\\') {
            value += c;
            continue;
          }
          if (i >= line.size()) break;
          const char e = line[i++];
          if (e == 'n') {
            value += '\n';
          } else if (e == '\\' || e == '"') {
            value += e;
          } else {
            return LineError(line_no, "unknown escape in a label value");
          }
        }
        if (!closed) return LineError(line_no, "unterminated label value");
        sample.labels.emplace_back(std::string(key), std::move(value));
        SkipBlanks(line, &i);
        if (i < line.size() && line[i] == ',') {
          ++i;
          continue;
        }
        if (i < line.size() && line[i] == '}') {
          ++i;
          break;
        }
        return LineError(line_no, "expected ',' or '}' after a label");
      }
    }
    if (i >= line.size() || (line[i] != ' ' && line[i] != '\t')) {
      return LineError(line_no, "expected a space before the value");
    }
    SkipBlanks(line, &i);
    const size_t value_end = line.find_first_of(" \t", i);
    const std::string_view value = line.substr(i, value_end - i);
    if (!ParseValue(value, &sample.value)) {
      return LineError(line_no, fmt::format("bad value {:?}", std::string(value)));
    }
    if (value_end != std::string_view::npos) {
      // An optional timestamp (ms); nothing else may follow.
      size_t j = value_end;
      SkipBlanks(line, &j);
      std::string_view rest = line.substr(j);
      while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t')) rest.remove_suffix(1);
      if (!rest.empty() && rest.front() == '-') rest.remove_prefix(1);
      for (char c : rest) {
        if (c < '0' || c > '9') return LineError(line_no, "unexpected text after the value");
      }
    }
    out.push_back(std::move(sample));
  }
  return out;
}

}  // namespace bluegreen::serve
