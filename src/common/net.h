// Small network value types shared by every component: Endpoint (host:port), Cidr, and parsers for
// the textual forms users write in config files. All are plain values, safe to copy between threads.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace bluegreen {

// A numeric IPv4 or IPv6 address with a port. Host names are not resolved here.
struct Endpoint {
  sockaddr_storage addr{};
  socklen_t len = 0;

  int family() const { return addr.ss_family; }
  uint16_t port() const;
  // "127.0.0.1:9001" or "[::1]:9001".
  std::string ToString() const;
  bool operator==(const Endpoint& o) const;
  bool operator<(const Endpoint& o) const { return ToString() < o.ToString(); }
};

// Parses "127.0.0.1:9001", "[::1]:9001", or "localhost:9001" (localhost means 127.0.0.1).
Result<Endpoint> ParseEndpoint(std::string_view text);
// A numeric address without brackets ("0.0.0.0", "::1") and a port, e.g. a listener's bind
// address. Host names are not accepted.
Result<Endpoint> MakeEndpoint(std::string_view address, uint16_t port);

// An address block like "127.0.0.0/8" or "::1/128"; a bare address means a single host.
struct Cidr {
  int family = AF_INET;
  uint8_t bytes[16] = {};
  int prefix_len = 0;

  // IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) match IPv4 blocks.
  bool Contains(const sockaddr* addr) const;
  std::string ToString() const;
  bool operator==(const Cidr& o) const;
};
Result<Cidr> ParseCidr(std::string_view text);

// Parses durations as users write them: "250ms", "10s", "5m", "24h", "1h30m"; a bare number is
// seconds. Negative or overflowing values are errors.
Result<std::chrono::milliseconds> ParseDuration(std::string_view text);
// The shortest exact text for a duration, e.g. "10s", "250ms", "24h". Parses back to the same value.
std::string FormatDuration(std::chrono::milliseconds d);

// Whether a listener could bind TCP `port` on all IPv4 addresses now (with SO_REUSEADDR, as the
// proxy binds): Ok, or Unavailable with the reason ("Address already in use", "Permission
// denied" for a port below 1024 without the privilege).
Status CheckPortBindable(uint16_t port);

}  // namespace bluegreen
