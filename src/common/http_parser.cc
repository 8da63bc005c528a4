#include "common/http_parser.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace bluegreen::http {
namespace {

// ---------------------------------------------------------------------------------------------
// Character classes (RFC 9110 5.6.2 token, 5.5 field-value, 4.1 request-target).

enum : uint8_t {
  kToken = 1 << 0,      // tchar
  kVchar = 1 << 1,      // 0x21-0x7E
  kFieldChar = 1 << 2,  // field-value byte: HTAB, SP, VCHAR, obs-text
  kHostChar = 1 << 3,   // VCHAR except / ? # @
  kQdText = 1 << 4,     // quoted-string qdtext: HTAB, SP, VCHAR except " and \, obs-text
};

constexpr std::array<uint8_t, 256> kCharClass = [] {
  std::array<uint8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    uint8_t bits = 0;
    const bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (alnum ||
        std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos) {
      bits |= kToken;
    }
    if (c >= 0x21 && c <= 0x7E) bits |= kVchar;
    if (c == '\t' || c == ' ' || (c >= 0x21 && c <= 0x7E) || c >= 0x80) bits |= kFieldChar;
    if (c >= 0x21 && c <= 0x7E && c != '/' && c != '?' && c != '#' && c != '@') bits |= kHostChar;
    if ((bits & kFieldChar) && c != '"' && c != '\\') bits |= kQdText;
    t[c] = bits;
  }
  return t;
}();

constexpr std::array<int8_t, 256> kHexValue = [] {
  std::array<int8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[c] = c >= '0' && c <= '9'   ? static_cast<int8_t>(c - '0')
           : c >= 'a' && c <= 'f' ? static_cast<int8_t>(c - 'a' + 10)
           : c >= 'A' && c <= 'F' ? static_cast<int8_t>(c - 'A' + 10)
                                  : int8_t{-1};
  }
  return t;
}();

constexpr std::array<uint8_t, 256> kLower = [] {
  std::array<uint8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[c] = static_cast<uint8_t>(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
  }
  return t;
}();

inline uint8_t Byte(char c) { return static_cast<uint8_t>(c); }
inline bool Is(char c, uint8_t cls) { return (kCharClass[Byte(c)] & cls) != 0; }
inline bool IsOws(char c) { return c == ' ' || c == '\t'; }

// Eight bytes at a time: "some byte is below n" (exact as a yes/no for n <= 128) and "some byte
// equals v" (Bit Twiddling Hacks). A hit sends the caller to the byte loop, which decides.
constexpr uint64_t kOnes = 0x0101010101010101ULL;
constexpr uint64_t kHighs = 0x8080808080808080ULL;
inline uint64_t HasLess(uint64_t x, uint8_t n) { return (x - kOnes * n) & ~x & kHighs; }
inline uint64_t HasByte(uint64_t x, uint8_t v) {
  const uint64_t y = x ^ (kOnes * v);
  return (y - kOnes) & ~y & kHighs;
}
inline uint64_t Load8(const char* p) {
  uint64_t x;
  std::memcpy(&x, p, sizeof x);
  return x;
}

// Bytes before the first flagged one. Borrows only ever flag bytes above a true hit, so on a
// little-endian machine the lowest flag is exact.
inline int BytesBeforeHit(uint64_t mask) {
  if constexpr (std::endian::native == std::endian::little) {
    return std::countr_zero(mask) / 8;
  } else {
    return 0;
  }
}

#if defined(__SSE2__) && !defined(BLUEGREEN_HTTP_NO_SIMD)
#define BLUEGREEN_HTTP_SSE2 1
// Sixteen bytes at a time; bit i of the result says whether (p[i] | fold) is in [lo, hi], unsigned.
inline unsigned InRange16(const char* p, uint8_t lo, uint8_t hi, uint8_t fold) {
  __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (fold != 0) v = _mm_or_si128(v, _mm_set1_epi8(static_cast<char>(fold)));
  const __m128i shifted = _mm_sub_epi8(v, _mm_set1_epi8(static_cast<char>(lo)));
  // Unsigned shifted <= hi - lo  <=>  max(shifted, hi - lo) == hi - lo.
  const __m128i span = _mm_set1_epi8(static_cast<char>(hi - lo));
  const __m128i inside = _mm_cmpeq_epi8(_mm_max_epu8(shifted, span), span);
  return static_cast<unsigned>(_mm_movemask_epi8(inside));
}
#endif

// First byte in [p, end) that is not VCHAR, or end.
const char* SkipVchar(const char* p, const char* end) {
#ifdef BLUEGREEN_HTTP_SSE2
  while (end - p >= 16) {
    const unsigned hit = ~InRange16(p, 0x21, 0x7E, 0) & 0xFFFF;
    if (hit != 0) return p + std::countr_zero(hit);
    p += 16;
  }
#endif
  while (end - p >= 8) {
    const uint64_t x = Load8(p);
    const uint64_t hit = HasLess(x, 0x21) | HasByte(x, 0x7F) | (x & kHighs);
    if (hit != 0) {
      p += BytesBeforeHit(hit);
      break;
    }
    p += 8;
  }
  while (p < end && Is(*p, kVchar)) ++p;
  return p;
}

// First byte in [p, end) that may not appear in a field value, or end. (HTAB is flagged by the
// fast path and let through by the byte loop.)
const char* SkipFieldChars(const char* p, const char* end) {
#ifdef BLUEGREEN_HTTP_SSE2
  while (end - p >= 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    // Bad: below 0x20 (unsigned) or 0x7F. HTAB is let through by the byte loop.
    const __m128i low = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1F)), _mm_set1_epi8(0x1F));
    const __m128i del = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7F));
    const unsigned hit = static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(low, del)));
    if (hit != 0) {
      p += std::countr_zero(hit);
      if (*p != '\t') return p;
      ++p;
      continue;
    }
    p += 16;
  }
#endif
  while (true) {
    while (end - p >= 8) {
      const uint64_t x = Load8(p);
      const uint64_t hit = HasLess(x, 0x20) | HasByte(x, 0x7F);
      if (hit != 0) {
        p += BytesBeforeHit(hit);
        break;
      }
      p += 8;
    }
    if (p == end || !Is(*p, kFieldChar)) return p;
    if (end - p < 8) break;
    ++p;  // an HTAB: carry on eight at a time
  }
  while (p < end && Is(*p, kFieldChar)) ++p;
  return p;
}

const char* SkipToken(const char* p, const char* end) {
#ifdef BLUEGREEN_HTTP_SSE2
  // Field names and methods are almost always [A-Za-z0-9-]: test sixteen of those at a time, and
  // let the table decide about any other byte.
  while (end - p >= 16) {
    const unsigned other =
        InRange16(p, 'a', 'z', 0x20) | InRange16(p, '0', '9', 0) | InRange16(p, '-', '-', 0);
    const unsigned stop = ~other & 0xFFFF;
    if (stop == 0) {
      p += 16;
      continue;
    }
    p += std::countr_zero(stop);
    if (!Is(*p, kToken)) return p;
    ++p;
  }
#endif
  while (p < end && Is(*p, kToken)) ++p;
  return p;
}

bool IsToken(std::string_view s) {
  return !s.empty() && SkipToken(s.data(), s.data() + s.size()) == s.data() + s.size();
}

inline uint32_t Load4(const char* p) {
  uint32_t x;
  std::memcpy(&x, p, sizeof x);
  return x;
}

// Case-insensitive comparison with `lower`, made of lower-case letters, digits, '-', ':' and '/'.
// `s` must hold no control bytes but HTAB (true of names, values and targets once validated): then
// setting bit 0x20 folds case exactly, several bytes at a time.
bool EqualsLower(std::string_view s, std::string_view lower) {
  const size_t n = s.size();
  if (n != lower.size()) return false;
  const char* a = s.data();
  const char* b = lower.data();
  if (n >= 8) {
    for (size_t i = 0; i + 8 < n; i += 8) {
      if ((Load8(a + i) | kOnes * 0x20) != Load8(b + i)) return false;
    }
    return (Load8(a + n - 8) | kOnes * 0x20) == Load8(b + n - 8);
  }
  if (n >= 4) {
    constexpr uint32_t kFold = 0x20202020;
    return (Load4(a) | kFold) == Load4(b) && (Load4(a + n - 4) | kFold) == Load4(b + n - 4);
  }
  for (size_t i = 0; i < n; ++i) {
    if ((Byte(a[i]) | 0x20) != Byte(b[i])) return false;
  }
  return true;
}

std::string_view TrimOws(std::string_view s) {
  size_t b = 0;
  size_t e = s.size();
  while (b < e && IsOws(s[b])) ++b;
  while (e > b && IsOws(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// Calls fn(element) for each element of a comma-separated list, OWS trimmed, empty ones included.
template <typename Fn>
void ForEachListElement(std::string_view list, Fn&& fn) {
  size_t i = 0;
  while (true) {
    const size_t comma = list.find(',', i);
    const size_t stop = comma == std::string_view::npos ? list.size() : comma;
    fn(TrimOws(list.substr(i, stop - i)));
    if (comma == std::string_view::npos) return;
    i = comma + 1;
  }
}

HeaderKind Classify(std::string_view name) {
  switch (name.size()) {
    case 2:
      if (EqualsLower(name, "te")) return HeaderKind::kTe;
      break;
    case 4:
      if (EqualsLower(name, "host")) return HeaderKind::kHost;
      break;
    case 6:
      if (EqualsLower(name, "expect")) return HeaderKind::kExpect;
      break;
    case 7:
      if (EqualsLower(name, "upgrade")) return HeaderKind::kUpgrade;
      if (EqualsLower(name, "trailer")) return HeaderKind::kTrailer;
      break;
    case 10:
      if (EqualsLower(name, "connection")) return HeaderKind::kConnection;
      if (EqualsLower(name, "keep-alive")) return HeaderKind::kKeepAlive;
      break;
    case 14:
      if (EqualsLower(name, "content-length")) return HeaderKind::kContentLength;
      break;
    case 15:
      if (EqualsLower(name, "x-forwarded-for")) return HeaderKind::kXForwardedFor;
      break;
    case 16:
      if (EqualsLower(name, "proxy-connection")) return HeaderKind::kProxyConnection;
      if (EqualsLower(name, "x-forwarded-port")) return HeaderKind::kXForwardedPort;
      break;
    case 17:
      if (EqualsLower(name, "transfer-encoding")) return HeaderKind::kTransferEncoding;
      if (EqualsLower(name, "x-forwarded-proto")) return HeaderKind::kXForwardedProto;
      break;
    default:
      break;
  }
  return HeaderKind::kOther;
}

bool IsHopByHopKind(HeaderKind kind) {
  switch (kind) {
    case HeaderKind::kConnection:
    case HeaderKind::kKeepAlive:
    case HeaderKind::kProxyConnection:
    case HeaderKind::kTe:
    case HeaderKind::kTrailer:
    case HeaderKind::kTransferEncoding:
    case HeaderKind::kUpgrade:
      return true;
    default:
      return false;
  }
}

// 1*DIGIT, at most 2^63-1.
bool ParseContentLength(std::string_view v, uint64_t* out) {
  if (v.empty()) return false;
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (n > (kMax - d) / 10) return false;
    n = n * 10 + d;
  }
  *out = n;
  return true;
}

bool IsValidHost(std::string_view v) {
  if (v.empty()) return false;
  for (char c : v) {
    if (!Is(c, kHostChar)) return false;
  }
  return true;
}

// What the proxy needs to know about the field section, gathered in one pass.
struct FieldSummary {
  int host_count = 0;
  std::string_view host;
  int content_length_count = 0;
  std::string_view content_length;
  // Transfer-Encoding, all fields read as one list.
  bool te_present = false;
  bool te_invalid = false;       // an element that is not a token (or empty)
  int te_chunked = 0;            // how many times "chunked" appears
  bool te_last_chunked = false;  // the final coding is chunked
  bool te_other = false;         // some coding other than chunked
  // Connection options.
  bool close = false;
  bool keep_alive = false;
  bool upgrade_option = false;
  bool nominates_fields = false;  // a Connection option may name a field of this message
  bool upgrade_field = false;
  bool expect_continue = false;
};

void AddTransferCodings(std::string_view list, FieldSummary* s) {
  s->te_present = true;
  ForEachListElement(list, [s](std::string_view coding) {
    if (!IsToken(coding)) {
      s->te_invalid = true;
    } else if (EqualsLower(coding, "chunked")) {
      ++s->te_chunked;
      s->te_last_chunked = true;
    } else {
      s->te_other = true;
      s->te_last_chunked = false;
    }
  });
}

void AddConnectionOptions(std::string_view list, FieldSummary* s) {
  ForEachListElement(list, [s](std::string_view option) {
    if (option.empty()) return;
    if (EqualsLower(option, "keep-alive")) {
      s->keep_alive = true;  // names Keep-Alive, hop-by-hop anyway
    } else if (EqualsLower(option, "upgrade")) {
      s->upgrade_option = true;  // names Upgrade, hop-by-hop anyway
    } else {
      if (EqualsLower(option, "close")) s->close = true;
      s->nominates_fields = true;
    }
  });
}

// Marks the fields named by Connection options as hop-by-hop (never Host or Content-Length, which
// a client could otherwise use to make the proxy drop the message framing or routing).
void MarkNominatedFields(std::vector<Header>* headers) {
  for (const Header& connection : *headers) {
    if (connection.kind != HeaderKind::kConnection) continue;
    ForEachListElement(connection.value, [headers](std::string_view option) {
      if (option.empty()) return;
      for (Header& h : *headers) {
        if (h.hop_by_hop || h.kind == HeaderKind::kHost || h.kind == HeaderKind::kContentLength ||
            h.name.size() != option.size()) {
          continue;
        }
        if (EqualsIgnoreCase(h.name, option)) h.hop_by_hop = true;
      }
    });
  }
}

// Appends the field line [name, cr), already validated, whose colon is at `colon`.
void AddHeader(const char* name, const char* colon, const char* cr, std::vector<Header>* headers) {
  const char* vb = colon + 1;
  const char* ve = cr;
  while (vb < ve && IsOws(*vb)) ++vb;
  while (ve > vb && IsOws(ve[-1])) --ve;
  Header& h = headers->emplace_back();
  h.name = std::string_view(name, colon - name);
  h.value = std::string_view(vb, ve - vb);
  h.kind = Classify(h.name);
  h.hop_by_hop = IsHopByHopKind(h.kind);
}

// Splits the already validated field lines in [begin, end) of `base` into `headers`.
void SplitFields(const char* base, size_t begin, size_t end, std::vector<Header>* headers) {
  headers->clear();
  const char* p = base + begin;
  const char* const stop = base + end;
  while (p < stop) {
    const char* colon = static_cast<const char*>(std::memchr(p, ':', stop - p));
    const char* cr = static_cast<const char*>(std::memchr(colon, '\r', stop - colon));
    AddHeader(p, colon, cr, headers);
    p = cr + 2;
  }
}

// Gathers what the framing and connection handling need, and marks the fields named by
// Connection options as hop-by-hop.
void Summarize(std::vector<Header>* headers, FieldSummary* s) {
  for (const Header& h : *headers) {
    switch (h.kind) {
      case HeaderKind::kHost:
        ++s->host_count;
        s->host = h.value;
        break;
      case HeaderKind::kContentLength:
        ++s->content_length_count;
        s->content_length = h.value;
        break;
      case HeaderKind::kTransferEncoding:
        AddTransferCodings(h.value, s);
        break;
      case HeaderKind::kConnection:
        AddConnectionOptions(h.value, s);
        break;
      case HeaderKind::kUpgrade:
        s->upgrade_field = true;
        break;
      case HeaderKind::kExpect:
        if (EqualsLower(h.value, "100-continue")) s->expect_continue = true;
        break;
      default:
        break;
    }
  }
  if (s->nominates_fields) MarkNominatedFields(headers);
}

constexpr std::string_view kRootPath = "/";
constexpr uint32_t kMaxChunkExtensionBytes = 4096;
constexpr uint32_t kMaxTrailerBytes = 16 * 1024;

}  // namespace

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (kLower[Byte(a[i])] != kLower[Byte(b[i])]) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// HeadParser

ParseResult HeadParser::Fail(int status, std::string_view reason) {
  error_.status = status;
  error_.reason = reason;
  scanned_ = 0;  // a later call starts over
  return ParseResult::kError;
}

// Errors are reported in the order of the bytes that cause them, so that a message fed in pieces
// fails exactly as it does when parsed whole: a bad method byte within the first max_request_line
// bytes is a 400, a longer line a 414, and only then is the rest of the line looked at.
bool HeadParser::ParseRequestLine(std::string_view data, size_t begin, size_t end) {
  const char* const base = data.data();
  const char* const b = base + begin;
  const char* const e = base + end;
  const char* p = SkipToken(b, e);
  if (p == b || p == e || *p != ' ') {
    if (static_cast<size_t>(p - b) > limits_.max_request_line) {
      Fail(414, "request line too long");
    } else {
      Fail(400, p < e && *p == '\r' ? "bare CR in message head" : "invalid method");
    }
    return false;
  }
  if (end - begin > limits_.max_request_line) {
    Fail(414, "request line too long");
    return false;
  }
  const std::string_view method(b, p - b);
  const char* const t = p + 1;
  const char* q = SkipVchar(t, e);
  if (q == t || q == e || *q != ' ') {
    Fail(400, q < e && *q == '\r' ? "bare CR in message head" : "invalid request-target");
    return false;
  }
  const std::string_view version(q + 1, e - (q + 1));
  int minor;
  if (version == "HTTP/1.1") {
    minor = 1;
  } else if (version == "HTTP/1.0") {
    minor = 0;
  } else {
    Fail(400, "unsupported HTTP version");
    return false;
  }
  const std::string_view target(t, q - t);
  if (target.find('#') != std::string_view::npos) {
    Fail(400, "fragment in request-target");
    return false;
  }
  if (method == "CONNECT") {
    Fail(501, "CONNECT is not supported");
    return false;
  }

  StartLine& sl = start_line_;
  sl = StartLine();
  sl.begin = begin;
  sl.end = end;
  sl.method_end = p - base;
  sl.target_end = q - base;
  sl.version_minor = minor;
  if (target[0] == '/') {
    sl.path_begin = t - base;
  } else if (target == "*") {
    if (method != "OPTIONS") {
      Fail(400, "asterisk-form is only allowed with OPTIONS");
      return false;
    }
    sl.path_begin = t - base;
  } else {
    size_t scheme = 0;
    if (target.size() >= 7 && EqualsLower(target.substr(0, 7), "http://")) {
      scheme = 7;
    } else if (target.size() >= 8 && EqualsLower(target.substr(0, 8), "https://")) {
      scheme = 8;
    } else {
      Fail(400, "invalid request-target");
      return false;
    }
    const size_t a = scheme;
    size_t z = a;
    while (z < target.size() && target[z] != '/' && target[z] != '?') ++z;
    if (z < target.size() && target[z] == '?') {
      Fail(400, "absolute-form target without a path");
      return false;
    }
    if (!IsValidHost(target.substr(a, z - a))) {
      Fail(400, "invalid authority in request-target");
      return false;
    }
    sl.authority_begin = (t - base) + a;
    sl.authority_end = (t - base) + z;
    sl.path_begin = (t - base) + z;
  }
  return true;
}

bool HeadParser::ParseStatusLine(std::string_view data, size_t begin, size_t end) {
  const char* const b = data.data() + begin;
  const size_t len = end - begin;
  // Same order as the early checks in ScanHead: the protocol name, then the length.
  if (std::memcmp(b, "HTTP/1.", std::min<size_t>(len, 7)) != 0) {
    Fail(502, "invalid status line");
    return false;
  }
  if (len > limits_.max_request_line) {
    Fail(502, "status line too long");
    return false;
  }
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (len < 12 || (b[7] != '0' && b[7] != '1') || b[8] != ' ' || !digit(b[9]) || !digit(b[10]) ||
      !digit(b[11]) || (len > 12 && b[12] != ' ')) {
    Fail(502, "invalid status line");
    return false;
  }
  const int status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
  if (status < 100 || status > 599) {
    Fail(502, "invalid status code");
    return false;
  }
  if (len > 13 && SkipFieldChars(b + 13, b + len) != b + len) {
    Fail(502, "invalid reason phrase");
    return false;
  }
  StartLine& sl = start_line_;
  sl = StartLine();
  sl.begin = begin;
  sl.end = end;
  sl.version_minor = b[7] - '0';
  sl.status = status;
  return true;
}

bool HeadParser::CheckOpenStartLine(std::string_view data, size_t begin, size_t end, bool request) {
  // The same checks, in the same order, as ParseRequestLine / ParseStatusLine.
  const char* const base = data.data();
  const size_t pending = end - begin;
  if (request) {
    const char* p = SkipToken(base + std::max(method_scanned_, begin), base + end);
    method_scanned_ = p - base;
    const size_t method_len = method_scanned_ - begin;
    if (p < base + end && method_len <= limits_.max_request_line) {
      const bool method_done = *p == ' ' && method_len > 0;
      const bool maybe_line_end = *p == '\r' && p == base + end - 1;
      if (!method_done && !maybe_line_end) {
        Fail(400, *p == '\r' ? "bare CR in message head" : "invalid method");
        return false;
      }
    }
  } else if (std::memcmp(base + begin, "HTTP/1.", std::min<size_t>(pending, 7)) != 0) {
    Fail(502, "invalid status line");
    return false;
  }
  if (pending > limits_.max_request_line + 1 ||
      (pending == limits_.max_request_line + 1 && base[end - 1] != '\r')) {
    Fail(request ? 414 : 502, request ? "request line too long" : "status line too long");
    return false;
  }
  return true;
}

ParseResult HeadParser::ScanHead(std::string_view data, bool request, size_t* head_size,
                                 std::vector<Header>* headers) {
  if (scanned_ == 0 || scanned_ > data.size()) {
    scanned_ = 0;
    line_start_ = 0;
    method_scanned_ = 0;
    fields_begin_ = 0;
    colon_ = 0;
    field_lines_ = 0;
    start_line_done_ = false;
  }
  if (data.empty()) return ParseResult::kIncomplete;
  const char* const base = data.data();
  // A head never extends past max_header_bytes, so neither does the search for its end.
  const size_t limit = std::min(data.size(), limits_.max_header_bytes);

  // The start line (and, before a request line, empty lines): found with memchr, then validated.
  while (!start_line_done_) {
    const void* hit =
        scanned_ < limit ? std::memchr(base + scanned_, '\n', limit - scanned_) : nullptr;
    if (hit == nullptr) {
      scanned_ = limit;
      if (!CheckOpenStartLine(data, line_start_, limit, request)) return ParseResult::kError;
      if (data.size() > limits_.max_header_bytes) return Fail(431, "message head too large");
      return ParseResult::kIncomplete;
    }
    const size_t lf = static_cast<const char*>(hit) - base;
    const size_t begin = line_start_;
    scanned_ = line_start_ = lf + 1;
    if (lf == begin || base[lf - 1] != '\r') {
      // What was wrong before the LF is reported first, as when the line arrives in pieces.
      if (!CheckOpenStartLine(data, begin, lf, request)) return ParseResult::kError;
      return Fail(400, "bare LF in message head");
    }
    const size_t end = lf - 1;  // the CR
    if (end == begin) {
      if (request) continue;  // RFC 9112 2.2: ignore empty lines before a request-line
      return Fail(400, "invalid status line");
    }
    if (!(request ? ParseRequestLine(data, begin, end) : ParseStatusLine(data, begin, end))) {
      return ParseResult::kError;
    }
    start_line_done_ = true;
    fields_begin_ = line_start_;
  }

  // The field lines: every byte is looked at once and in order, so a message fails the same way
  // however it is split, and a slow sender costs O(n).
  const bool collecting = field_lines_ == 0;
  if (collecting) fields_.clear();
  size_t p = scanned_;
  while (true) {
    if (p == line_start_) {
      if (p >= limit) break;
      const char c = base[p];
      if (c == '\r') {
        if (p + 1 >= limit) break;
        if (base[p + 1] != '\n') return Fail(400, "bare CR in message head");
        *head_size = p + 2;
        if (collecting) {
          headers->assign(fields_.begin(), fields_.end());
        } else {
          SplitFields(base, fields_begin_, p, headers);
        }
        return ParseResult::kComplete;
      }
      if (c == '\n') return Fail(400, "bare LF in message head");
      if (IsOws(c)) return Fail(400, "obs-fold or whitespace before field name");
      if (field_lines_ >= limits_.max_headers) return Fail(431, "too many header fields");
      colon_ = 0;
    }
    if (colon_ == 0) {
      p = SkipToken(base + p, base + limit) - base;
      if (p == limit) break;
      const char c = base[p];
      if (c != ':') {
        if (IsOws(c)) return Fail(400, "whitespace before colon");
        if (c == '\n') return Fail(400, "bare LF in message head");
        if (c != '\r') return Fail(400, "invalid header name");
        if (p + 1 >= limit) break;
        return Fail(
            400, base[p + 1] == '\n' ? "missing colon in header field" : "bare CR in message head");
      }
      if (p == line_start_) return Fail(400, "empty header name");
      colon_ = p++;
    }
    p = SkipFieldChars(base + p, base + limit) - base;
    if (p == limit) break;
    if (base[p] != '\r') {
      return Fail(400, base[p] == '\n' ? "bare LF in message head" : "invalid header value");
    }
    if (p + 1 >= limit) break;
    if (base[p + 1] != '\n') return Fail(400, "bare CR in message head");
    if (collecting) AddHeader(base + line_start_, base + colon_, base + p, &fields_);
    ++field_lines_;
    p += 2;
    line_start_ = p;
  }
  scanned_ = p;
  if (data.size() > limits_.max_header_bytes) return Fail(431, "message head too large");
  return ParseResult::kIncomplete;
}

ParseResult HeadParser::ParseRequest(std::string_view data, RequestHead* out) {
  size_t head_size = 0;
  const ParseResult r = ScanHead(data, /*request=*/true, &head_size, &out->headers);
  if (r != ParseResult::kComplete) return r;
  scanned_ = 0;  // the next call starts a new message

  const StartLine& sl = start_line_;
  const char* const base = data.data();
  out->method = std::string_view(base + sl.begin, sl.method_end - sl.begin);
  out->target = std::string_view(base + sl.method_end + 1, sl.target_end - sl.method_end - 1);
  out->path = sl.path_begin == sl.target_end
                  ? kRootPath
                  : std::string_view(base + sl.path_begin, sl.target_end - sl.path_begin);
  out->authority = sl.authority_end == 0 ? std::string_view()
                                         : std::string_view(base + sl.authority_begin,
                                                            sl.authority_end - sl.authority_begin);
  out->version_minor = sl.version_minor;
  out->head_size = head_size;

  FieldSummary s;
  Summarize(&out->headers, &s);

  out->framing = BodyFraming::kNone;
  out->content_length = 0;
  if (s.content_length_count > 1) return Fail(400, "multiple Content-Length fields");
  if (s.content_length_count == 1 && !ParseContentLength(s.content_length, &out->content_length)) {
    return Fail(400, "invalid Content-Length");
  }
  if (s.te_present) {
    if (sl.version_minor == 0) return Fail(400, "Transfer-Encoding in an HTTP/1.0 request");
    if (s.content_length_count > 0) {
      return Fail(400, "both Transfer-Encoding and Content-Length");
    }
    if (s.te_invalid) return Fail(400, "invalid Transfer-Encoding");
    if (s.te_chunked > 1) return Fail(400, "chunked applied more than once");
    if (!s.te_last_chunked) return Fail(400, "chunked is not the final transfer coding");
    if (s.te_other) return Fail(501, "unsupported transfer coding");
    out->framing = BodyFraming::kChunked;
  } else if (s.content_length_count == 1) {
    out->framing = BodyFraming::kContentLength;
  }

  if (s.host_count > 1) return Fail(400, "multiple Host fields");
  if (s.host_count == 0 && sl.version_minor == 1) return Fail(400, "missing Host");
  if (s.host_count == 1 && !IsValidHost(s.host)) return Fail(400, "invalid Host");
  out->host = s.host_count == 1 ? s.host : std::string_view();

  if (sl.version_minor == 1) {
    out->keep_alive = !s.close;
    out->upgrade = s.upgrade_option && s.upgrade_field;
    out->expect_continue = s.expect_continue;
  } else {
    out->keep_alive = s.keep_alive && !s.close;
    out->upgrade = false;
    out->expect_continue = false;
  }
  return ParseResult::kComplete;
}

ParseResult HeadParser::ParseResponse(std::string_view data, std::string_view request_method,
                                      ResponseHead* out) {
  size_t head_size = 0;
  const ParseResult r = ScanHead(data, /*request=*/false, &head_size, &out->headers);
  if (r == ParseResult::kError) error_.status = 502;
  if (r != ParseResult::kComplete) return r;
  scanned_ = 0;

  const StartLine& sl = start_line_;
  const char* const base = data.data();
  out->version_minor = sl.version_minor;
  out->status = sl.status;
  const size_t reason_begin = std::min(sl.begin + 13, sl.end);
  out->reason = std::string_view(base + reason_begin, sl.end - reason_begin);
  out->head_size = head_size;

  FieldSummary s;
  Summarize(&out->headers, &s);

  uint64_t length = 0;
  if (s.content_length_count > 1) return Fail(502, "multiple Content-Length fields");
  if (s.content_length_count == 1 && !ParseContentLength(s.content_length, &length)) {
    return Fail(502, "invalid Content-Length");
  }
  if (s.te_present) {
    if (sl.version_minor == 0) return Fail(502, "Transfer-Encoding in an HTTP/1.0 response");
    if (s.content_length_count > 0) {
      return Fail(502, "both Transfer-Encoding and Content-Length");
    }
    if (s.te_invalid) return Fail(502, "invalid Transfer-Encoding");
    if (s.te_chunked > 1) return Fail(502, "chunked applied more than once");
  }

  // RFC 9112 6.3.
  out->content_length = 0;
  const int status = sl.status;
  if (request_method == "HEAD" || status < 200 || status == 204 || status == 304) {
    out->framing = BodyFraming::kNone;
  } else if (s.te_present) {
    out->framing = s.te_last_chunked ? BodyFraming::kChunked : BodyFraming::kUntilClose;
  } else if (s.content_length_count == 1) {
    out->framing = BodyFraming::kContentLength;
    out->content_length = length;
  } else {
    out->framing = BodyFraming::kUntilClose;
  }
  out->keep_alive = (sl.version_minor == 1 ? !s.close : s.keep_alive && !s.close) &&
                    out->framing != BodyFraming::kUntilClose;
  return ParseResult::kComplete;
}

// ---------------------------------------------------------------------------------------------
// BodyDecoder

namespace {

// Positions inside a chunk extension (sub_state_ in kChunkExt). Quoted values use
// ext_in_quotes_ / ext_escape_.
enum ExtState : uint8_t {
  kExtAfterItem,   // after the size, a name, or a value: ";", BWS, or CR
  kExtBws,         // whitespace, then ";" must follow
  kExtBeforeName,  // after ";"
  kExtName,
  kExtAfterName,    // whitespace after a name: ";" or "="
  kExtBeforeValue,  // after "="
  kExtTokenValue,
};

// Positions inside a trailer field line (sub_state_ in kTrailerLine).
enum TrailerState : uint8_t {
  kTrailerName,
  kTrailerValue,
};

}  // namespace

void BodyDecoder::Start(BodyFraming framing, uint64_t content_length) {
  framing_ = framing;
  remaining_ = 0;
  digits_ = 0;
  line_bytes_ = 0;
  trailer_bytes_ = 0;
  ext_in_quotes_ = false;
  ext_escape_ = false;
  sub_state_ = 0;
  error_ = {};
  switch (framing) {
    case BodyFraming::kNone:
      state_ = State::kDone;
      break;
    case BodyFraming::kContentLength:
      remaining_ = content_length;
      state_ = content_length == 0 ? State::kDone : State::kLength;
      break;
    case BodyFraming::kChunked:
      state_ = State::kChunkSize;
      break;
    case BodyFraming::kUntilClose:
      state_ = State::kUntilClose;
      break;
  }
}

size_t BodyDecoder::Fail(size_t consumed, std::string_view reason) {
  state_ = State::kError;
  error_ = reason;
  return consumed;
}

void BodyDecoder::FinishAtClose() {
  if (state_ == State::kUntilClose) {
    state_ = State::kDone;
  } else if (state_ != State::kDone && state_ != State::kError) {
    Fail(0, "connection closed before the end of the body");
  }
}

size_t BodyDecoder::Consume(std::string_view data) {
  const size_t n = data.size();
  switch (state_) {
    case State::kDone:
    case State::kError:
      return 0;
    case State::kLength: {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, n));
      remaining_ -= take;
      if (remaining_ == 0) state_ = State::kDone;
      return take;
    }
    case State::kUntilClose:
      return n;
    default:
      break;
  }

  const char* const p = data.data();
  size_t i = 0;
  while (i < n) {
    const char c = p[i];
    switch (state_) {
      case State::kChunkSize: {
        const int8_t v = kHexValue[Byte(c)];
        if (v >= 0) {
          if (digits_ == 16) return Fail(i, "invalid chunk size");
          remaining_ = (remaining_ << 4) | static_cast<uint64_t>(v);
          ++digits_;
          ++i;
        } else if (digits_ > 0 && c == '\r') {
          state_ = State::kChunkSizeLf;
          ++i;
        } else if (digits_ > 0 && (c == ';' || IsOws(c))) {
          state_ = State::kChunkExt;
          sub_state_ = kExtAfterItem;
          line_bytes_ = 0;
        } else {
          return Fail(i, "invalid chunk size");
        }
        break;
      }

      case State::kChunkExt: {
        if (c == '\r' && !ext_in_quotes_ &&
            (sub_state_ == kExtAfterItem || sub_state_ == kExtName ||
             sub_state_ == kExtTokenValue)) {
          state_ = State::kChunkSizeLf;
          ++i;
          break;
        }
        if (++line_bytes_ > kMaxChunkExtensionBytes) return Fail(i, "chunk extension too long");
        bool ok = false;
        if (ext_in_quotes_) {
          if (ext_escape_) {
            ok = Is(c, kFieldChar);  // quoted-pair: HTAB, SP, VCHAR, obs-text
            ext_escape_ = false;
          } else if (c == '"') {
            ok = true;
            ext_in_quotes_ = false;
            sub_state_ = kExtAfterItem;
          } else if (c == '\\') {
            ok = true;
            ext_escape_ = true;
          } else {
            ok = Is(c, kQdText);
          }
        } else {
          switch (sub_state_) {
            case kExtAfterItem:
            case kExtTokenValue:
              if (c == ';') {
                ok = true;
                sub_state_ = kExtBeforeName;
              } else if (IsOws(c)) {
                ok = true;
                sub_state_ = kExtBws;
              } else {
                ok = sub_state_ == kExtTokenValue && Is(c, kToken);
              }
              break;
            case kExtBws:
              ok = IsOws(c) || c == ';';
              if (c == ';') sub_state_ = kExtBeforeName;
              break;
            case kExtBeforeName:
              ok = IsOws(c) || Is(c, kToken);
              if (Is(c, kToken)) sub_state_ = kExtName;
              break;
            case kExtName:
            case kExtAfterName:
              if (c == ';') {
                ok = true;
                sub_state_ = kExtBeforeName;
              } else if (c == '=') {
                ok = true;
                sub_state_ = kExtBeforeValue;
              } else if (IsOws(c)) {
                ok = true;
                sub_state_ = kExtAfterName;
              } else {
                ok = sub_state_ == kExtName && Is(c, kToken);
              }
              break;
            case kExtBeforeValue:
              if (IsOws(c)) {
                ok = true;
              } else if (c == '"') {
                ok = true;
                ext_in_quotes_ = true;
              } else if (Is(c, kToken)) {
                ok = true;
                sub_state_ = kExtTokenValue;
              }
              break;
            default:
              break;
          }
        }
        if (!ok) return Fail(i, c == '\n' ? "bare LF in chunk" : "invalid chunk extension");
        ++i;
        break;
      }

      case State::kChunkSizeLf:
        if (c != '\n') return Fail(i, "bare CR in chunk size line");
        ++i;
        if (remaining_ == 0) {
          state_ = State::kTrailerLineStart;
          trailer_bytes_ = 0;
        } else {
          state_ = State::kChunkData;
        }
        break;

      case State::kChunkData: {
        const size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, n - i));
        i += take;
        remaining_ -= take;
        if (remaining_ == 0) state_ = State::kChunkDataCr;
        break;
      }

      case State::kChunkDataCr:
        if (c != '\r') return Fail(i, "missing CRLF after chunk");
        state_ = State::kChunkDataLf;
        ++i;
        break;

      case State::kChunkDataLf:
        if (c != '\n') return Fail(i, "missing CRLF after chunk");
        state_ = State::kChunkSize;
        digits_ = 0;
        remaining_ = 0;
        ++i;
        break;

      case State::kTrailerLineStart:
        if (++trailer_bytes_ > kMaxTrailerBytes) return Fail(i, "trailer section too large");
        if (c == '\r') {
          state_ = State::kFinalLf;
        } else if (IsOws(c)) {
          return Fail(i, "obs-fold in trailer section");
        } else if (Is(c, kToken)) {
          state_ = State::kTrailerLine;
          sub_state_ = kTrailerName;
        } else {
          return Fail(i, c == '\n' ? "bare LF in trailer section" : "invalid trailer field");
        }
        ++i;
        break;

      case State::kTrailerLine: {
        if (++trailer_bytes_ > kMaxTrailerBytes) return Fail(i, "trailer section too large");
        if (sub_state_ == kTrailerName) {
          if (c == ':') {
            sub_state_ = kTrailerValue;
          } else if (!Is(c, kToken)) {
            return Fail(i, "invalid trailer field");
          }
        } else if (c == '\r') {
          state_ = State::kTrailerLineLf;
        } else if (!Is(c, kFieldChar)) {
          return Fail(i, c == '\n' ? "bare LF in trailer section" : "invalid trailer field");
        }
        ++i;
        break;
      }

      case State::kTrailerLineLf:
        if (++trailer_bytes_ > kMaxTrailerBytes) return Fail(i, "trailer section too large");
        if (c != '\n') return Fail(i, "bare CR in trailer section");
        state_ = State::kTrailerLineStart;
        ++i;
        break;

      case State::kFinalLf:
        if (c != '\n') return Fail(i, "bare CR in trailer section");
        state_ = State::kDone;
        return i + 1;

      default:  // kDone, kError, kLength, kUntilClose are handled above
        return i;
    }
  }
  return n;
}

}  // namespace bluegreen::http
