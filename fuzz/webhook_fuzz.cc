// libFuzzer target: the push webhook (serve/webhook.h), the code serve runs on every
// POST /api/v1/stacks/NAME/webhook: the X-Hub-Signature-256 check, then the push event.
//
// The input is the request body. Any input must be accepted or rejected, never crash or hang.
// Besides that, it checks that:
//   - the body's own signature matches, and no other signature does: one hex digit changed, the
//     uppercase form, a prefix, the input itself (unless it is the signature), an empty secret;
//   - a push event that asks for a build names a 40-digit lowercase hex commit, not all zeros and
//     not the last commit seen, on the stack's branch.
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "serve/webhook.h"

namespace {

constexpr std::string_view kSecret = "it's a secret to everybody";
constexpr std::string_view kBranch = "main";
constexpr std::string_view kLastCommit = "0123456789abcdef0123456789abcdef01234567";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bluegreen::serve;
  const std::string_view body(reinterpret_cast<const char*>(data), size);

  const std::string signature = WebhookSignature(kSecret, body);
  FUZZ_CHECK(signature.size() == 7 + 64 && signature.starts_with("sha256="));
  FUZZ_CHECK(WebhookSignatureMatches(kSecret, body, signature));
  FUZZ_CHECK(!WebhookSignatureMatches("", body, signature));
  FUZZ_CHECK(!WebhookSignatureMatches(kSecret, body, ""));
  FUZZ_CHECK(!WebhookSignatureMatches(kSecret, body, signature.substr(0, signature.size() - 1)));
  std::string changed = signature;
  const size_t at = 7 + size % 64;
  changed[at] = changed[at] == '0' ? '1' : '0';
  FUZZ_CHECK(!WebhookSignatureMatches(kSecret, body, changed));
  std::string upper = signature;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  FUZZ_CHECK(!WebhookSignatureMatches(kSecret, body, upper));
  FUZZ_CHECK(WebhookSignatureMatches(kSecret, body, body) == (body == signature));

  bluegreen::Result<PushEvent> event = ParsePushEvent(body);
  if (!event.ok()) {
    FUZZ_CHECK(event.status().code() == bluegreen::StatusCode::kInvalidArgument);
    FUZZ_CHECK(!event.status().message().empty());
    return 0;
  }
  FUZZ_CHECK(body.find('\0') == std::string_view::npos);
  bluegreen::Result<std::optional<std::string>> commit =
      CommitToBuild(*event, kBranch, kLastCommit);
  if (!commit.ok()) {
    FUZZ_CHECK(commit.status().code() == bluegreen::StatusCode::kInvalidArgument);
    FUZZ_CHECK(event->ref == "refs/heads/main");
    return 0;
  }
  if (commit->has_value()) {
    const std::string& sha = **commit;
    FUZZ_CHECK(event->ref == "refs/heads/main");
    FUZZ_CHECK(sha == event->after && sha.size() == 40);
    FUZZ_CHECK(sha.find_first_not_of("0123456789abcdef") == std::string::npos);
    FUZZ_CHECK(sha != std::string(40, '0') && sha != kLastCommit);
  }
  return 0;
}
