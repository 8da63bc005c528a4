// The REST API's request bodies: parsing and validation, apart from the store and the network.
//
// Serve's handlers (serve/api.cc) and the libFuzzer target fuzz/api_bodies_fuzz.cc call the same
// functions. Each returns the body's fields or kInvalidArgument with the message of the 400
// bad_request the API answers. They are pure functions: safe to call from any thread.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/status.h"
#include "serve/access.h"

namespace bluegreen::serve {

// A body as a JSON object; an empty body is {}. Any other JSON value, malformed JSON, invalid
// UTF-8 or a NUL byte anywhere is kInvalidArgument ("the body must be a JSON object",
// "malformed JSON: ..."); the message is printable ASCII.
Result<nlohmann::json> ParseJsonObject(std::string_view body);

// A version's name: [A-Za-z0-9._-]{1,64}, but not "." or "..".
bool ValidVersionName(std::string_view name);

// POST /api/v1/stacks/NAME/versions: a valid version and exactly one of artifact_dir and image.
// Whether artifact_dir is a directory is the caller's to check.
struct VersionBody {
  std::string version;
  std::string artifact_dir;
  std::string image;
};
Result<VersionBody> ParseVersionBody(const nlohmann::json& body);

// POST /api/v1/stacks/NAME/deploy: the version, a string (not checked further: it is looked up).
Result<std::string> ParseDeployBody(const nlohmann::json& body);

// POST .../approve, reject, rollback, release: the optional comment, at most 4096 bytes.
Result<std::string> ParseCommentBody(const nlohmann::json& body);

// POST /api/v1/tokens: a valid token name and a role.
struct TokenBody {
  std::string name;
  Role role = Role::kViewer;
};
Result<TokenBody> ParseTokenBody(const nlohmann::json& body);

}  // namespace bluegreen::serve
