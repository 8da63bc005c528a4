// libFuzzer target: the REST API's JSON request bodies (serve/api_bodies.h), the code serve runs on
// every body of POST .../versions, .../deploy, .../approve|reject|rollback|release and /tokens.
// Any input must be accepted or rejected with kInvalidArgument and a message, never crash or hang.
// Besides that, it checks that:
//   - an accepted body is all JSON: no NUL byte (nlohmann's lexer would stop at one);
//   - the 400's message can be put in the API's error JSON (valid UTF-8 after escaping), so a
//     hostile body never turns a 400 into a 500;
//   - what is accepted is what the API documents: a valid version name and exactly one of
//     artifact_dir and image; a comment of at most 4096 bytes; a valid token name.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "serve/access.h"
#include "serve/api_bodies.h"

namespace {

using bluegreen::Status;
using bluegreen::StatusCode;
using nlohmann::json;

// The error body the API answers with (serve/api.cc Error()): it must serialize.
void CheckError(const Status& st) {
  FUZZ_CHECK(st.code() == StatusCode::kInvalidArgument);
  FUZZ_CHECK(!st.message().empty());
  try {
    const std::string out =
        json{{"error", {{"code", "bad_request"}, {"message", st.message()}}}}.dump();
    FUZZ_CHECK(!out.empty());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "the error message does not serialize: %s\n", e.what());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bluegreen::serve;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  bluegreen::Result<json> body = ParseJsonObject(text);
  if (!body.ok()) {
    CheckError(body.status());
    return 0;
  }
  FUZZ_CHECK(body->is_object());
  // Nothing after the object: a NUL byte must not end the input early.
  FUZZ_CHECK(text.find('\0') == std::string_view::npos);

  bluegreen::Result<VersionBody> version = ParseVersionBody(*body);
  if (version.ok()) {
    FUZZ_CHECK(ValidVersionName(version->version));
    FUZZ_CHECK(version->version != "." && version->version != "..");
    FUZZ_CHECK(version->artifact_dir.empty() != version->image.empty());
  } else {
    CheckError(version.status());
  }

  bluegreen::Result<std::string> deploy = ParseDeployBody(*body);
  if (deploy.ok()) {
    FUZZ_CHECK(body->contains("version") && (*body)["version"].is_string());
  } else {
    CheckError(deploy.status());
  }

  bluegreen::Result<std::string> comment = ParseCommentBody(*body);
  if (comment.ok()) {
    FUZZ_CHECK(comment->size() <= 4096);
  } else {
    CheckError(comment.status());
  }

  bluegreen::Result<TokenBody> token = ParseTokenBody(*body);
  if (token.ok()) {
    FUZZ_CHECK(ValidTokenName(token->name));
    FUZZ_CHECK(ParseRole(RoleName(token->role)) == token->role);
  } else {
    CheckError(token.status());
  }
  return 0;
}
