#include "serve/webhook.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <nlohmann/json.hpp>

namespace bluegreen::serve {

using json = nlohmann::json;

std::string WebhookSignature(std::string_view secret, std::string_view body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out = "sha256=";
  for (unsigned int i = 0; i < len; ++i) {
    out += kDigits[mac[i] >> 4];
    out += kDigits[mac[i] & 0xf];
  }
  return out;
}

bool WebhookSignatureMatches(std::string_view secret, std::string_view body,
                             std::string_view signature) {
  if (secret.empty()) return false;
  const std::string expected = WebhookSignature(secret, body);
  return signature.size() == expected.size() &&
         CRYPTO_memcmp(signature.data(), expected.data(), expected.size()) == 0;
}

Result<PushEvent> ParsePushEvent(std::string_view body) {
  // nlohmann's lexer takes a NUL byte for the end of the input; JSON text never holds one.
  if (body.find('\0') != std::string_view::npos) {
    return InvalidArgument("the payload is not a JSON object");
  }
  json payload = json::parse(body, nullptr, false);
  if (!payload.is_object()) return InvalidArgument("the payload is not a JSON object");
  auto ref = payload.find("ref");
  auto after = payload.find("after");
  if (ref == payload.end() || after == payload.end() || !ref->is_string() || !after->is_string()) {
    return InvalidArgument("a push event has string `ref` and `after`");
  }
  return PushEvent{ref->get<std::string>(), after->get<std::string>()};
}

Result<std::optional<std::string>> CommitToBuild(const PushEvent& event, std::string_view branch,
                                                 std::string_view last_commit) {
  if (event.ref != "refs/heads/" + std::string(branch)) return std::optional<std::string>();
  const std::string& after = event.after;
  if (after.size() != 40 || after.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return InvalidArgument("`after` is not a commit id");
  }
  if (after == std::string(40, '0') || after == last_commit) return std::optional<std::string>();
  return std::optional<std::string>(after);
}

}  // namespace bluegreen::serve
