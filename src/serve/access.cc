#include "serve/access.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

namespace bluegreen::serve {
namespace {

// Seconds between two records of a token's last use.
constexpr int64_t kLastUsedResolution = 60;

// True when the two hashes are equal; the time taken depends on their length only.
bool SameHash(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view BearerToken(std::string_view authorization) {
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size()) return {};
  for (size_t i = 0; i < kScheme.size(); ++i) {
    const char c = authorization[i];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != kScheme[i]) return {};
  }
  std::string_view token = authorization.substr(kScheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  return token;
}

// "role approver or admin": the roles at or above `needed`.
std::string RolesAllowed(Role needed) {
  if (needed == Role::kViewer) return "any role";
  return needed == Role::kApprover ? "role approver or admin" : "role admin";
}

}  // namespace

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kViewer:
      return "viewer";
    case Role::kApprover:
      return "approver";
    case Role::kAdmin:
      return "admin";
  }
  return "viewer";
}

std::optional<Role> ParseRole(std::string_view name) {
  for (Role r : {Role::kViewer, Role::kApprover, Role::kAdmin}) {
    if (RoleName(r) == name) return r;
  }
  return std::nullopt;
}

bool ValidTokenName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) return false;
  }
  return true;
}

Result<std::string> NewToken() {
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1) return Internal("no random bytes for a token");
  std::string token = "bg_";
  for (unsigned char c : raw) token += fmt::format("{:02x}", c);
  return token;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  std::string out;
  for (unsigned char c : digest) out += fmt::format("{:02x}", c);
  return out;
}

Requirement RequiredRole(std::string_view method, const std::vector<std::string>& parts,
                         std::string_view path) {
  const bool tokens = parts.size() >= 3 && parts[2] == "tokens";
  if (method == "GET" && !tokens) return {Role::kViewer, fmt::format("GET {}", path)};
  if (method == "POST" && parts.size() == 5 && parts[2] == "stacks" &&
      (parts[4] == "approve" || parts[4] == "reject" || parts[4] == "rollback" ||
       parts[4] == "release")) {
    return {Role::kApprover, parts[4]};
  }
  return {Role::kAdmin, fmt::format("{} {}", method, path)};
}

std::optional<std::string> Denied(const Identity& who, const Requirement& need) {
  if (who.role >= need.role) return std::nullopt;
  return fmt::format("token \"{}\" has role {}; {} needs {}", who.name, RoleName(who.role),
                     need.action, RolesAllowed(need.role));
}

Result<Identity> Access::Authenticate(std::string_view authorization) {
  const std::string_view token = BearerToken(authorization);
  if (token.empty()) {
    return Status(StatusCode::kUnauthenticated,
                  "no token: send Authorization: Bearer TOKEN (the admin token is in "
                  "STATE_DIR/admin.token; an admin makes others with bluegreen token create)");
  }
  const std::string hash = Sha256Hex(token);
  if (SameHash(hash, admin_hash_)) return Identity{kBootstrapTokenName, Role::kAdmin};
  Result<std::optional<store::TokenRecord>> rec = store_->FindTokenByHash(hash);
  if (!rec.ok()) return rec.status();
  std::optional<Role> role = rec->has_value() ? ParseRole((*rec)->role) : std::nullopt;
  if (!rec->has_value() || !SameHash(hash, (*rec)->sha256) || !role) {
    return Status(StatusCode::kUnauthenticated,
                  "the token is not valid: it is wrong or was revoked");
  }
  const int64_t now = store::NowSeconds();
  if (!(*rec)->last_used_at || now - *(*rec)->last_used_at >= kLastUsedResolution) {
    (void)store_->SetTokenLastUsed((*rec)->name, now);  // a record, not a condition of access
  }
  return Identity{(*rec)->name, *role};
}

}  // namespace bluegreen::serve
