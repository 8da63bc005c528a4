// Access: who calls the REST API and what they may do (docs/api.md "Access: tokens and roles").
//
// Every API token has a role, viewer < approver < admin. The bootstrap admin token
// (STATE_DIR/admin.token; its SHA-256 is in the store's meta) is the identity "admin" with role
// admin; the others are made with POST /api/v1/tokens and kept in the store as their SHA-256
// only. Access authenticates a request's bearer token (hash it, find the row by hash, compare the
// hashes in constant time) and RequiredRole says which role a request needs, before its body is
// read or anything changes.
//
// Access holds no mutable state of its own: it is as thread-safe as the store it reads.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "store/store.h"

namespace bluegreen::serve {

enum class Role { kViewer = 0, kApprover = 1, kAdmin = 2 };

// "viewer", "approver", "admin"; ParseRole is its inverse (nullopt for anything else).
std::string_view RoleName(Role role);
std::optional<Role> ParseRole(std::string_view name);

// The name of the bootstrap admin token; no created token may take it.
inline constexpr char kBootstrapTokenName[] = "admin";

// A token's name: [a-z0-9][a-z0-9._-]{0,63}.
bool ValidTokenName(std::string_view name);

// A new API token: "bg_" and 64 hex digits from a CSPRNG (32 random bytes).
Result<std::string> NewToken();

// Lowercase hex SHA-256.
std::string Sha256Hex(std::string_view data);

// The caller of an authenticated request.
struct Identity {
  std::string name;  // the token's name; "admin" for the bootstrap token
  Role role = Role::kViewer;
};

// What a request needs: the lowest role allowed, and the request in words for a 403 message
// ("approve", "PUT /api/v1/stacks/demo").
struct Requirement {
  Role role = Role::kAdmin;
  std::string action;
};

// The role a request needs. `parts` is its path split on '/' ("api", "v1", ...). Every GET needs
// viewer, except GET /api/v1/tokens (admin); POST .../stacks/NAME/{approve,reject,rollback,release}
// needs approver; anything else needs admin, so a route added later is closed until it is listed.
Requirement RequiredRole(std::string_view method, const std::vector<std::string>& parts,
                         std::string_view path);

// Null when `who` may do what `need` says; else the message of the 403, which names the token,
// its role and the role needed.
std::optional<std::string> Denied(const Identity& who, const Requirement& need);

class Access {
 public:
  // `admin_token_sha256`: the lowercase hex SHA-256 of the bootstrap admin token.
  Access(store::Store* store, std::string admin_token_sha256)
      : store_(store), admin_hash_(std::move(admin_token_sha256)) {}

  // The identity of the request whose Authorization header is `authorization`.
  // kUnauthenticated (its message meant for the 401) for no bearer token, or one that is wrong or
  // was revoked; another code when the store fails. Records the token's last use (at most once a
  // minute per token, to spare the store a write per request).
  Result<Identity> Authenticate(std::string_view authorization);

 private:
  store::Store* store_;
  const std::string admin_hash_;
};

}  // namespace bluegreen::serve
