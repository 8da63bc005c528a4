#include "common/net.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

#include "common/posix.h"

namespace bluegreen {
namespace {

constexpr uint8_t kV4MappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// Decimal digits only (no sign, no spaces), value <= max.
std::optional<uint64_t> ParseDecimal(std::string_view text, uint64_t max) {
  if (text.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : text) {
    if (!IsDigit(c)) return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
    if (v > max) return std::nullopt;
  }
  return v;
}

// Parses a numeric IPv4 or IPv6 address (no brackets, no zone) into 4 or 16 bytes.
bool ParseAddress(std::string_view text, int* family, uint8_t bytes[16]) {
  // inet_pton needs a NUL-terminated string; addresses are short.
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return false;
  char buf[INET6_ADDRSTRLEN];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  std::memset(bytes, 0, 16);
  if (inet_pton(AF_INET, buf, bytes) == 1) {
    *family = AF_INET;
    return true;
  }
  if (inet_pton(AF_INET6, buf, bytes) == 1) {
    *family = AF_INET6;
    return true;
  }
  return false;
}

// True if the first prefix_len bits of a and b are equal.
bool PrefixEquals(const uint8_t* a, const uint8_t* b, int prefix_len) {
  int full = prefix_len / 8;
  if (std::memcmp(a, b, static_cast<size_t>(full)) != 0) return false;
  int rest = prefix_len % 8;
  if (rest == 0) return true;
  auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[full] & mask) == (b[full] & mask);
}

std::string AddressToString(int family, const void* bytes) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (inet_ntop(family, bytes, buf, sizeof(buf)) == nullptr) return "";
  return buf;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Endpoint

uint16_t Endpoint::port() const {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
  if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
  return 0;
}

std::string Endpoint::ToString() const {
  if (family() == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&addr);
    return AddressToString(AF_INET, &sin->sin_addr) + ":" + std::to_string(port());
  }
  if (family() == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    std::string out = "[";
    out += AddressToString(AF_INET6, &sin6->sin6_addr);
    out += "]:";
    out += std::to_string(port());
    return out;
  }
  return "";
}

bool Endpoint::operator==(const Endpoint& o) const {
  if (family() != o.family()) return false;
  if (family() == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    const auto* b = reinterpret_cast<const sockaddr_in*>(&o.addr);
    return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
  }
  if (family() == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    const auto* b = reinterpret_cast<const sockaddr_in6*>(&o.addr);
    return a->sin6_port == b->sin6_port && a->sin6_scope_id == b->sin6_scope_id &&
           std::memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0;
  }
  return true;  // both unset (or an unknown family)
}

Result<Endpoint> MakeEndpoint(std::string_view address, uint16_t port) {
  int family = 0;
  uint8_t bytes[16];
  if (!ParseAddress(address, &family, bytes)) {
    return InvalidArgument("invalid address \"" + std::string(address) +
                           "\": not a numeric IPv4 or IPv6 address");
  }
  Endpoint ep;
  if (family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ep.addr);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    std::memcpy(&sin->sin_addr, bytes, 4);
    ep.len = sizeof(sockaddr_in);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ep.addr);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    std::memcpy(&sin6->sin6_addr, bytes, 16);
    ep.len = sizeof(sockaddr_in6);
  }
  return ep;
}

Result<Endpoint> ParseEndpoint(std::string_view text) {
  auto invalid = [&](std::string_view why) {
    return InvalidArgument("invalid endpoint \"" + std::string(text) + "\": " + std::string(why));
  };
  if (text.empty()) return invalid("empty");

  std::string_view host;
  std::string_view port_text;
  bool bracketed = false;
  if (text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return invalid("missing ']'");
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') return invalid("expected ':port' after ']'");
    port_text = rest.substr(1);
    bracketed = true;
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return invalid("expected host:port");
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return invalid("IPv6 addresses must be in brackets, as in [::1]:9001");
    }
  }
  if (port_text.empty()) return invalid("missing port");
  std::optional<uint64_t> port = ParseDecimal(port_text, 65535);
  if (!port) return invalid("port must be a number between 0 and 65535");

  if (!bracketed && EqualsIgnoreCase(host, "localhost")) host = "127.0.0.1";
  int family = 0;
  uint8_t bytes[16];
  if (!ParseAddress(host, &family, bytes)) {
    return invalid("not a numeric IP address (host names other than localhost are not resolved)");
  }
  if (bracketed && family != AF_INET6) return invalid("only IPv6 addresses go in brackets");
  return MakeEndpoint(host, static_cast<uint16_t>(*port));
}

// ---------------------------------------------------------------------------------------------
// Cidr

bool Cidr::Contains(const sockaddr* addr) const {
  if (addr == nullptr) return false;
  uint8_t peer[16] = {};
  if (addr->sa_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(addr);
    if (family == AF_INET) {
      std::memcpy(peer, &sin->sin_addr, 4);
      return PrefixEquals(bytes, peer, prefix_len);
    }
    if (family == AF_INET6) {  // compare as ::ffff:a.b.c.d
      std::memcpy(peer, kV4MappedPrefix, 12);
      std::memcpy(peer + 12, &sin->sin_addr, 4);
      return PrefixEquals(bytes, peer, prefix_len);
    }
    return false;
  }
  if (addr->sa_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(addr);
    std::memcpy(peer, &sin6->sin6_addr, 16);
    if (family == AF_INET6) return PrefixEquals(bytes, peer, prefix_len);
    if (family == AF_INET && std::memcmp(peer, kV4MappedPrefix, 12) == 0) {
      return PrefixEquals(bytes, peer + 12, prefix_len);
    }
    return false;
  }
  return false;
}

std::string Cidr::ToString() const {
  return AddressToString(family, bytes) + "/" + std::to_string(prefix_len);
}

bool Cidr::operator==(const Cidr& o) const {
  if (family != o.family || prefix_len != o.prefix_len) return false;
  int max_len = family == AF_INET ? 32 : 128;
  if (prefix_len < 0 || prefix_len > max_len) return false;
  return PrefixEquals(bytes, o.bytes, prefix_len);
}

Result<Cidr> ParseCidr(std::string_view text) {
  auto invalid = [&](std::string_view why) {
    return InvalidArgument("invalid CIDR \"" + std::string(text) + "\": " + std::string(why));
  };
  std::string_view address = text;
  std::optional<std::string_view> prefix_text;
  if (size_t slash = text.find('/'); slash != std::string_view::npos) {
    address = text.substr(0, slash);
    prefix_text = text.substr(slash + 1);
  }
  Cidr cidr;
  if (!ParseAddress(address, &cidr.family, cidr.bytes)) return invalid("not a numeric IP address");
  int max_len = cidr.family == AF_INET ? 32 : 128;
  cidr.prefix_len = max_len;
  if (prefix_text) {
    std::optional<uint64_t> len = ParseDecimal(*prefix_text, static_cast<uint64_t>(max_len));
    if (!len) return invalid("prefix length must be between 0 and " + std::to_string(max_len));
    cidr.prefix_len = static_cast<int>(*len);
  }
  // Host bits beyond the prefix are cleared: "10.1.2.3/8" means 10.0.0.0/8.
  for (int bit = cidr.prefix_len; bit < 128; ++bit) {
    cidr.bytes[bit / 8] &= static_cast<uint8_t>(~(0x80 >> (bit % 8)));
  }
  return cidr;
}

// ---------------------------------------------------------------------------------------------
// Durations

Result<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  auto invalid = [&](std::string_view why) {
    return InvalidArgument("invalid duration \"" + std::string(text) + "\": " + std::string(why));
  };
  if (text.empty()) return invalid("empty");
  if (text.front() == '-') return invalid("must not be negative");

  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t total_ms = 0;
  size_t i = 0;
  while (i < text.size()) {
    // A number: digits, optionally a fraction.
    size_t start = i;
    uint64_t whole = 0;
    bool overflow = false;
    while (i < text.size() && IsDigit(text[i])) {
      auto digit = static_cast<uint64_t>(text[i] - '0');
      if (whole > (static_cast<uint64_t>(kMax) - digit) / 10) overflow = true;
      if (!overflow) whole = whole * 10 + digit;
      ++i;
    }
    size_t int_digits = i - start;
    std::string_view fraction;
    if (i < text.size() && text[i] == '.') {
      ++i;
      size_t frac_start = i;
      while (i < text.size() && IsDigit(text[i])) ++i;
      fraction = text.substr(frac_start, i - frac_start);
      if (fraction.empty()) return invalid("expected digits after '.'");
    }
    if (int_digits == 0 && fraction.empty()) {
      return invalid("expected a number at \"" + std::string(text.substr(start)) + "\"");
    }
    if (overflow) return invalid("too large");

    // The unit; none means seconds, but only for a bare number.
    size_t unit_start = i;
    while (i < text.size() && !IsDigit(text[i]) && text[i] != '.') ++i;
    std::string_view unit = text.substr(unit_start, i - unit_start);
    int64_t unit_ms;
    if (unit == "ms") {
      unit_ms = 1;
    } else if (unit == "s") {
      unit_ms = 1000;
    } else if (unit == "m") {
      unit_ms = 60 * 1000;
    } else if (unit == "h") {
      unit_ms = 60 * 60 * 1000;
    } else if (unit.empty()) {
      if (start != 0 || i != text.size()) return invalid("missing unit (ms, s, m or h)");
      unit_ms = 1000;
    } else {
      return invalid("unknown unit \"" + std::string(unit) + "\" (expected ms, s, m or h)");
    }

    // value = whole * unit_ms + fraction * unit_ms, exact to the millisecond.
    int64_t value;
    if (__builtin_mul_overflow(static_cast<int64_t>(whole), unit_ms, &value)) {
      return invalid("too large");
    }
    if (!fraction.empty()) {
      // unit_ms <= 3.6e6, so at most 7 significant fraction digits can matter; more must be 0.
      int64_t numerator = 0;
      int64_t denominator = 1;
      for (size_t k = 0; k < fraction.size(); ++k) {
        if (k < 12) {
          numerator = numerator * 10 + (fraction[k] - '0');
          denominator *= 10;
        } else if (fraction[k] != '0') {
          return invalid("finer than a millisecond");
        }
      }
      // numerator < 1e12 and unit_ms <= 3.6e6: the product fits in int64.
      int64_t scaled = numerator * unit_ms;
      if (scaled % denominator != 0) return invalid("finer than a millisecond");
      if (__builtin_add_overflow(value, scaled / denominator, &value)) return invalid("too large");
    }
    if (__builtin_add_overflow(total_ms, value, &total_ms)) return invalid("too large");
  }
  return std::chrono::milliseconds(total_ms);
}

std::string FormatDuration(std::chrono::milliseconds d) {
  int64_t ms = d.count();
  if (ms == 0) return "0s";
  if (ms < 0) {
    // Not a valid config value; shown for diagnostics only.
    if (ms == std::numeric_limits<int64_t>::min()) return std::to_string(ms) + "ms";
    std::string out = "-";
    out += FormatDuration(std::chrono::milliseconds(-ms));
    return out;
  }
  constexpr int64_t kSecond = 1000, kMinute = 60 * kSecond, kHour = 60 * kMinute;

  // Candidates: one unit that divides exactly ("90m"), or the full breakdown ("1h30m15s").
  std::string best;
  auto consider = [&](std::string candidate) {
    if (best.empty() || candidate.size() < best.size()) best = std::move(candidate);
  };
  for (auto [unit, suffix] :
       {std::pair<int64_t, const char*>{kHour, "h"}, {kMinute, "m"}, {kSecond, "s"}, {1, "ms"}}) {
    if (ms % unit == 0) consider(std::to_string(ms / unit) + suffix);
  }
  std::string breakdown;
  int64_t rest = ms;
  for (auto [unit, suffix] :
       {std::pair<int64_t, const char*>{kHour, "h"}, {kMinute, "m"}, {kSecond, "s"}, {1, "ms"}}) {
    if (rest >= unit) {
      breakdown += std::to_string(rest / unit) + suffix;
      rest %= unit;
    }
  }
  consider(std::move(breakdown));
  return best;
}

Status CheckPortBindable(uint16_t port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Unavailable("socket: " + ErrnoText(errno));
  const int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    return Unavailable(ErrnoText(errno));
  }
  return Status::Ok();
}

}  // namespace bluegreen
