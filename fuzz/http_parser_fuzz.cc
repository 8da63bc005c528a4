// libFuzzer target for the HTTP/1.1 head parser and body decoder (common/http_parser.h).
//
// Each input is parsed as a stream of pipelined requests and as a stream of responses, once whole
// and once in pieces whose sizes are derived from the input bytes (every piece is a fresh heap copy
// of the prefix, as when the caller's buffer moves, so reads past the prefix are caught by ASan).
// Bodies go through BodyDecoder the same two ways. Besides "never crash", it checks that:
//   - splitting never changes a result: same kind, same error status and reason, same head;
//   - head_size <= the bytes given, the head ends in CRLF CRLF, and every view points into it;
//   - error statuses are the documented ones (400/414/431/501 for requests, 502 for responses);
//   - Consume never returns more than given, and returns less only when done or failed.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "common/http_parser.h"
#include "fuzz_check.h"

namespace {

using bluegreen::http::BodyDecoder;
using bluegreen::http::BodyFraming;
using bluegreen::http::EqualsIgnoreCase;
using bluegreen::http::Header;
using bluegreen::http::HeaderKind;
using bluegreen::http::HeadParser;
using bluegreen::http::Limits;
using bluegreen::http::ParseError;
using bluegreen::http::ParseResult;
using bluegreen::http::RequestHead;
using bluegreen::http::ResponseHead;

constexpr int kMaxMessages = 8;

// Piece sizes derived from the input: an xorshift generator seeded with a hash of the bytes.
class Splitter {
 public:
  explicit Splitter(std::string_view data) {
    uint64_t h = 1469598103934665603ULL;
    for (unsigned char c : data) h = (h ^ c) * 1099511628211ULL;
    state_ = h | 1;
  }
  uint64_t Next() {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return state_;
  }
  // Mostly small pieces, sometimes single bytes, sometimes large ones.
  size_t Piece() {
    const uint64_t r = Next();
    switch (r % 8) {
      case 0:
      case 1:
        return 1;
      case 7:
        return 1 + (r >> 8) % 512;
      default:
        return 1 + (r >> 8) % 24;
    }
  }

 private:
  uint64_t state_;
};

// A heap copy of exactly the first n bytes: reading past them is a heap-buffer-overflow.
struct Prefix {
  std::unique_ptr<char[]> bytes;
  std::string_view view;
  Prefix(std::string_view data, size_t n) : bytes(new char[n > 0 ? n : 1]) {
    if (n > 0) std::memcpy(bytes.get(), data.data(), n);
    view = std::string_view(bytes.get(), n);
  }
};

bool Inside(std::string_view v, std::string_view buf) {
  if (v.empty()) return true;
  return v.data() >= buf.data() && v.data() + v.size() <= buf.data() + buf.size();
}

void CheckHeaders(const std::vector<Header>& headers, std::string_view head) {
  for (const Header& h : headers) {
    FUZZ_CHECK(!h.name.empty());
    FUZZ_CHECK(Inside(h.name, head));
    FUZZ_CHECK(Inside(h.value, head));
    if (!h.value.empty()) {
      FUZZ_CHECK(h.value.front() != ' ' && h.value.front() != '\t');
      FUZZ_CHECK(h.value.back() != ' ' && h.value.back() != '\t');
    }
    for (char c : h.value) FUZZ_CHECK(c != '\r' && c != '\n' && c != '\0');
    FUZZ_CHECK((h.kind == HeaderKind::kHost) == EqualsIgnoreCase(h.name, "host"));
    FUZZ_CHECK((h.kind == HeaderKind::kContentLength) ==
               EqualsIgnoreCase(h.name, "content-length"));
    FUZZ_CHECK((h.kind == HeaderKind::kTransferEncoding) ==
               EqualsIgnoreCase(h.name, "transfer-encoding"));
    if (h.kind == HeaderKind::kConnection || h.kind == HeaderKind::kTransferEncoding) {
      FUZZ_CHECK(h.hop_by_hop);
    }
    if (h.kind == HeaderKind::kHost || h.kind == HeaderKind::kContentLength) {
      FUZZ_CHECK(!h.hop_by_hop);
    }
  }
}

bool SameHeaders(const std::vector<Header>& a, const std::vector<Header>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].value != b[i].value || a[i].kind != b[i].kind ||
        a[i].hop_by_hop != b[i].hop_by_hop) {
      return false;
    }
  }
  return true;
}

bool SameError(const ParseError& a, const ParseError& b, const Limits& limits) {
  if (a.status == b.status && a.reason == b.reason) return true;
  std::fprintf(stderr, "in pieces: %d %.*s; whole: %d %.*s (limits %zu/%zu/%zu)\n", a.status,
               static_cast<int>(a.reason.size()), a.reason.data(), b.status,
               static_cast<int>(b.reason.size()), b.reason.data(), limits.max_request_line,
               limits.max_header_bytes, limits.max_headers);
  return false;
}

void CheckHead(std::string_view data, size_t head_size) {
  FUZZ_CHECK(head_size <= data.size());
  FUZZ_CHECK(head_size >= 4);
  FUZZ_CHECK(data.substr(head_size - 4, 4) == "\r\n\r\n");
}

// The body: decoded whole and in pieces; returns how many bytes belong to it, or -1 if it is
// incomplete or invalid (nothing follows it then).
long DecodeBody(std::string_view body, BodyFraming framing, uint64_t content_length,
                Splitter* split) {
  BodyDecoder whole;
  whole.Start(framing, content_length);
  FUZZ_CHECK(whole.framing() == framing);
  const size_t n = whole.Consume(body);
  FUZZ_CHECK(n <= body.size());
  if (n < body.size()) FUZZ_CHECK(whole.done() || whole.failed());
  if (whole.done()) FUZZ_CHECK(whole.Consume(body.substr(n)) == 0);
  if (whole.failed()) FUZZ_CHECK(!whole.error().empty());
  if (framing == BodyFraming::kContentLength) {
    FUZZ_CHECK(n == std::min<uint64_t>(content_length, body.size()));
  }
  if (framing == BodyFraming::kNone) FUZZ_CHECK(whole.done() && n == 0);

  BodyDecoder pieces;
  pieces.Start(framing, content_length);
  size_t total = 0;
  while (total < body.size() && !pieces.done() && !pieces.failed()) {
    const Prefix piece(body.substr(total), std::min(split->Piece(), body.size() - total));
    const size_t m = pieces.Consume(piece.view);
    FUZZ_CHECK(m <= piece.view.size());
    if (m < piece.view.size()) FUZZ_CHECK(pieces.done() || pieces.failed());
    total += m;
  }
  FUZZ_CHECK(total == n);
  FUZZ_CHECK(pieces.done() == whole.done());
  FUZZ_CHECK(pieces.failed() == whole.failed());
  FUZZ_CHECK(pieces.error() == whole.error());
  FUZZ_CHECK(pieces.remaining() == whole.remaining());

  if (framing == BodyFraming::kUntilClose) {
    FUZZ_CHECK(n == body.size() && !whole.done());
    whole.FinishAtClose();
    FUZZ_CHECK(whole.done());
  }
  return whole.done() ? static_cast<long>(n) : -1;
}

// Parses one request head whole and in pieces; returns its size, or 0 if none.
size_t FuzzRequest(std::string_view data, const Limits& limits, Splitter* split,
                   RequestHead* head) {
  HeadParser whole_parser(limits);
  const ParseResult whole = whole_parser.ParseRequest(data, head);

  HeadParser parser(limits);
  RequestHead piece_head;
  ParseResult result = ParseResult::kIncomplete;
  std::unique_ptr<Prefix> buffer;
  size_t n = 0;
  do {
    n = std::min(data.size(), n + split->Piece());
    buffer = std::make_unique<Prefix>(data, n);
    result = parser.ParseRequest(buffer->view, &piece_head);
  } while (result == ParseResult::kIncomplete && n < data.size());

  FUZZ_CHECK(result == whole);
  if (whole == ParseResult::kError) {
    const int s = whole_parser.error().status;
    FUZZ_CHECK(s == 400 || s == 414 || s == 431 || s == 501);
    FUZZ_CHECK(!whole_parser.error().reason.empty());
    FUZZ_CHECK(SameError(parser.error(), whole_parser.error(), limits));
    return 0;
  }
  if (whole == ParseResult::kIncomplete) {
    FUZZ_CHECK(data.size() <= limits.max_header_bytes);
    return 0;
  }

  CheckHead(data, head->head_size);
  FUZZ_CHECK(head->head_size <= limits.max_header_bytes);
  FUZZ_CHECK(head->headers.size() <= limits.max_headers);
  const std::string_view bytes = data.substr(0, head->head_size);
  FUZZ_CHECK(Inside(head->method, bytes) && !head->method.empty());
  FUZZ_CHECK(Inside(head->target, bytes) && !head->target.empty());
  FUZZ_CHECK(Inside(head->path, bytes) || head->path == "/");
  FUZZ_CHECK(Inside(head->authority, bytes));
  FUZZ_CHECK(Inside(head->host, bytes));
  FUZZ_CHECK(head->version_minor == 0 || head->version_minor == 1);
  FUZZ_CHECK(head->target.size() <= limits.max_request_line);
  FUZZ_CHECK(head->target.find('#') == std::string_view::npos);
  FUZZ_CHECK(head->path.front() == '/' || head->path == "*");
  if (head->version_minor == 1) FUZZ_CHECK(!head->host.empty());
  if (head->version_minor == 0) {
    FUZZ_CHECK(head->framing != BodyFraming::kChunked && !head->upgrade && !head->expect_continue);
  }
  FUZZ_CHECK(head->framing != BodyFraming::kUntilClose);
  if (head->framing != BodyFraming::kContentLength) FUZZ_CHECK(head->content_length == 0);
  CheckHeaders(head->headers, bytes);

  const std::string_view piece_bytes = buffer->view.substr(0, piece_head.head_size);
  FUZZ_CHECK(piece_head.head_size == head->head_size);
  FUZZ_CHECK(Inside(piece_head.method, piece_bytes));
  FUZZ_CHECK(piece_head.method == head->method && piece_head.target == head->target &&
             piece_head.path == head->path && piece_head.authority == head->authority &&
             piece_head.host == head->host && piece_head.version_minor == head->version_minor &&
             piece_head.framing == head->framing &&
             piece_head.content_length == head->content_length &&
             piece_head.keep_alive == head->keep_alive && piece_head.upgrade == head->upgrade &&
             piece_head.expect_continue == head->expect_continue);
  FUZZ_CHECK(SameHeaders(piece_head.headers, head->headers));
  return head->head_size;
}

size_t FuzzResponse(std::string_view data, std::string_view method, const Limits& limits,
                    Splitter* split, ResponseHead* head) {
  HeadParser whole_parser(limits);
  const ParseResult whole = whole_parser.ParseResponse(data, method, head);

  HeadParser parser(limits);
  ResponseHead piece_head;
  ParseResult result = ParseResult::kIncomplete;
  std::unique_ptr<Prefix> buffer;
  size_t n = 0;
  do {
    n = std::min(data.size(), n + split->Piece());
    buffer = std::make_unique<Prefix>(data, n);
    result = parser.ParseResponse(buffer->view, method, &piece_head);
  } while (result == ParseResult::kIncomplete && n < data.size());

  FUZZ_CHECK(result == whole);
  if (whole == ParseResult::kError) {
    FUZZ_CHECK(whole_parser.error().status == 502);
    FUZZ_CHECK(!whole_parser.error().reason.empty());
    FUZZ_CHECK(SameError(parser.error(), whole_parser.error(), limits));
    return 0;
  }
  if (whole == ParseResult::kIncomplete) return 0;

  CheckHead(data, head->head_size);
  const std::string_view bytes = data.substr(0, head->head_size);
  FUZZ_CHECK(head->status >= 100 && head->status <= 599);
  FUZZ_CHECK(head->version_minor == 0 || head->version_minor == 1);
  FUZZ_CHECK(Inside(head->reason, bytes));
  if (head->framing == BodyFraming::kUntilClose) FUZZ_CHECK(!head->keep_alive);
  if (method == "HEAD" || head->status < 200 || head->status == 204 || head->status == 304) {
    FUZZ_CHECK(head->framing == BodyFraming::kNone);
  }
  if (head->framing != BodyFraming::kContentLength) FUZZ_CHECK(head->content_length == 0);
  CheckHeaders(head->headers, bytes);

  FUZZ_CHECK(piece_head.head_size == head->head_size && piece_head.status == head->status &&
             piece_head.reason == head->reason && piece_head.version_minor == head->version_minor &&
             piece_head.framing == head->framing &&
             piece_head.content_length == head->content_length &&
             piece_head.keep_alive == head->keep_alive);
  FUZZ_CHECK(SameHeaders(piece_head.headers, head->headers));
  return head->head_size;
}

void FuzzRequestStream(std::string_view data, const Limits& limits, Splitter* split) {
  RequestHead head;
  for (int i = 0; i < kMaxMessages && !data.empty(); ++i) {
    const size_t head_size = FuzzRequest(data, limits, split, &head);
    if (head_size == 0) return;
    const long body = DecodeBody(data.substr(head_size), head.framing, head.content_length, split);
    if (body < 0) return;
    data.remove_prefix(head_size + static_cast<size_t>(body));
  }
}

void FuzzResponseStream(std::string_view data, std::string_view method, const Limits& limits,
                        Splitter* split) {
  ResponseHead head;
  for (int i = 0; i < kMaxMessages && !data.empty(); ++i) {
    const size_t head_size = FuzzResponse(data, method, limits, split, &head);
    if (head_size == 0) return;
    const long body = DecodeBody(data.substr(head_size), head.framing, head.content_length, split);
    if (body < 0) return;
    data.remove_prefix(head_size + static_cast<size_t>(body));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  const std::string_view data(reinterpret_cast<const char*>(bytes), size);
  Splitter split(data);

  // Default limits, and small ones (chosen from the input) to reach the 414/431 paths.
  const Limits defaults;
  Limits small;
  const uint64_t r = split.Next();
  small.max_request_line = 8 + r % 120;
  small.max_header_bytes = 16 + (r >> 8) % 1024;
  small.max_headers = (r >> 24) % 12;

  FuzzRequestStream(data, defaults, &split);
  FuzzRequestStream(data, small, &split);
  static constexpr std::string_view kMethods[] = {"GET", "HEAD", "POST", "CONNECT"};
  const std::string_view method = kMethods[(r >> 32) % 4];
  FuzzResponseStream(data, method, defaults, &split);
  FuzzResponseStream(data, method, small, &split);
  // The chunked decoder on its own, whatever precedes it.
  DecodeBody(data, BodyFraming::kChunked, 0, &split);
  return 0;
}
