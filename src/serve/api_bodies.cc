#include "serve/api_bodies.h"

#include <fmt/format.h>

#include <cctype>
#include <exception>

namespace bluegreen::serve {

using json = nlohmann::json;

namespace {

// nlohmann's parse errors quote the bytes last read, which may be invalid UTF-8 and then could not
// be put in the error's JSON: every byte outside printable ASCII becomes '?'.
std::string PrintableAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

}  // namespace

Result<json> ParseJsonObject(std::string_view body) {
  // nlohmann's lexer takes a NUL byte for the end of the input, so "{...}\0garbage" would parse.
  // JSON text never holds a raw NUL (in a string it is escaped as \u0000).
  if (body.find('\0') != std::string_view::npos) {
    return InvalidArgument("malformed JSON: a NUL byte in the body");
  }
  try {
    json j = json::parse(body.empty() ? std::string_view("{}") : body);
    if (!j.is_object()) return InvalidArgument("the body must be a JSON object");
    return j;
  } catch (const std::exception& e) {
    return InvalidArgument("malformed JSON: " + PrintableAscii(e.what()));
  }
}

bool ValidVersionName(std::string_view n) {
  if (n.empty() || n.size() > 64 || n == "." || n == "..") return false;
  for (char c : n) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

Result<VersionBody> ParseVersionBody(const json& body) {
  VersionBody v;
  try {
    v.version = body.value("version", "");
    v.artifact_dir = body.value("artifact_dir", "");
    v.image = body.value("image", "");
  } catch (const std::exception&) {
    return InvalidArgument("version, artifact_dir and image must be strings");
  }
  if (!ValidVersionName(v.version)) {
    return InvalidArgument(fmt::format("bad version {:?}: use [A-Za-z0-9._-]{{1,64}}", v.version));
  }
  if (v.artifact_dir.empty() == v.image.empty()) {
    return InvalidArgument("give exactly one of artifact_dir and image");
  }
  return v;
}

Result<std::string> ParseDeployBody(const json& body) {
  auto it = body.find("version");
  if (it == body.end() || !it->is_string()) {
    return InvalidArgument("version (a string) is required");
  }
  return it->get<std::string>();
}

Result<std::string> ParseCommentBody(const json& body) {
  auto it = body.find("comment");
  if (it == body.end()) return std::string();
  if (!it->is_string()) return InvalidArgument("comment must be a string");
  std::string comment = it->get<std::string>();
  if (comment.size() > 4096) return InvalidArgument("comment is longer than 4096 bytes");
  return comment;
}

Result<TokenBody> ParseTokenBody(const json& body) {
  static const json kNull;
  auto field = [&body](const char* key) -> const json& {
    auto it = body.find(key);
    return it == body.end() ? kNull : *it;
  };
  const json& jn = field("name");
  const json& jr = field("role");
  if (!jn.is_string() || !ValidTokenName(jn.get<std::string>())) {
    return InvalidArgument(fmt::format("bad token name {}: use [a-z0-9][a-z0-9._-]{{0,63}}",
                                       jn.dump(-1, ' ', false, json::error_handler_t::replace)));
  }
  std::optional<Role> role = jr.is_string() ? ParseRole(jr.get<std::string>()) : std::nullopt;
  if (!role) {
    return InvalidArgument(fmt::format("bad role {}: use viewer, approver or admin",
                                       jr.dump(-1, ' ', false, json::error_handler_t::replace)));
  }
  return TokenBody{jn.get<std::string>(), *role};
}

}  // namespace bluegreen::serve
