// The GitHub-compatible push webhook (docs/api.md "Webhook"): the signature check and the reading
// of a push event, apart from the store and the pipeline.
//
// Pipeline::Webhook and the libFuzzer target fuzz/webhook_fuzz.cc call the same functions. They
// are pure functions: safe to call from any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace bluegreen::serve {

// The X-Hub-Signature-256 value GitHub sends for `body`: "sha256=" and the lowercase hex
// HMAC-SHA256 of the body keyed by the webhook secret.
std::string WebhookSignature(std::string_view secret, std::string_view body);

// Whether `signature` is WebhookSignature(secret, body), compared in constant time. An empty
// secret matches nothing.
bool WebhookSignatureMatches(std::string_view secret, std::string_view body,
                             std::string_view signature);

// The fields of a push event bluegreen reads.
struct PushEvent {
  std::string ref;    // "refs/heads/BRANCH"
  std::string after;  // the commit the branch points to now
};

// kInvalidArgument unless `body` is a JSON object (and nothing else: no NUL byte) with string
// `ref` and `after`.
Result<PushEvent> ParsePushEvent(std::string_view body);

// The commit a push to `branch` asks to build: nullopt when the push is for another branch, deletes
// the branch (`after` all zeros) or names `last_commit` (already seen); kInvalidArgument when
// `after` is not a 40-digit lowercase hex commit id.
Result<std::optional<std::string>> CommitToBuild(const PushEvent& event, std::string_view branch,
                                                 std::string_view last_commit);

}  // namespace bluegreen::serve
