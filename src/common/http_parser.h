// A strict, incremental HTTP/1.1 message-head parser and body framer (RFC 9110 / RFC 9112), written
// for a reverse proxy: it never copies, it validates everything a request-smuggling attack could
// exploit, and it tells the caller exactly how the message body is framed.
//
// HeadParser parses a request or response head out of a buffer that grows as bytes arrive; the
// Header string_views point into that buffer. BodyDecoder walks a body (Content-Length, chunked, or
// until-close) and reports how many of the given bytes belong to it, so the caller can forward them
// verbatim and keep what follows (a pipelined request).
//
// Neither class is thread-safe; each instance belongs to one connection on one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace bluegreen::http {

// Headers the proxy treats specially, recognised case-insensitively while parsing.
enum class HeaderKind : uint8_t {
  kOther,
  kHost,
  kContentLength,
  kTransferEncoding,
  kConnection,
  kKeepAlive,
  kProxyConnection,
  kTe,
  kTrailer,
  kUpgrade,
  kExpect,
  kXForwardedFor,
  kXForwardedProto,
  kXForwardedPort,
};

struct Header {
  std::string_view name;   // as sent
  std::string_view value;  // leading and trailing OWS removed
  HeaderKind kind = HeaderKind::kOther;
  // Connection-specific: Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
  // Transfer-Encoding, Upgrade, and every field named in a Connection header. Never forwarded as is.
  bool hop_by_hop = false;
};

enum class BodyFraming : uint8_t {
  kNone,           // no body
  kContentLength,  // exactly content_length bytes (may be 0)
  kChunked,        // chunked transfer coding; forwarded as received after validation
  kUntilClose,     // responses only: the body ends when the server closes the connection
};

struct Limits {
  size_t max_request_line = 8 * 1024;  // request line (or status line) longer -> 414
  size_t max_header_bytes = 32 * 1024; // whole head longer -> 431
  size_t max_headers = 100;            // more header fields -> 431
};

struct RequestHead {
  std::string_view method;
  std::string_view target;     // request-target as sent
  std::string_view path;       // origin-form "/p?q" (for absolute-form: the part after authority,
                               // "/" when empty; for asterisk-form: "*"; authority-form: target)
  std::string_view authority;  // absolute-form only: the host[:port] of the target; else empty
  int version_minor = 1;       // HTTP/1.0 -> 0, HTTP/1.1 -> 1
  std::vector<Header> headers;
  std::string_view host;       // value of the Host header (empty if none, allowed for HTTP/1.0)
  BodyFraming framing = BodyFraming::kNone;
  uint64_t content_length = 0;
  bool keep_alive = true;      // HTTP/1.1 without "close"; HTTP/1.0 with "keep-alive"
  bool upgrade = false;        // "Connection: upgrade" and an Upgrade header are both present
  bool expect_continue = false;// "Expect: 100-continue"
  size_t head_size = 0;        // bytes of the head, including the final CRLF CRLF
};

struct ResponseHead {
  int version_minor = 1;
  int status = 0;
  std::string_view reason;
  std::vector<Header> headers;
  BodyFraming framing = BodyFraming::kNone;
  uint64_t content_length = 0;
  bool keep_alive = true;      // the server lets us reuse the connection after this response
  size_t head_size = 0;
};

enum class ParseResult { kIncomplete, kComplete, kError };

struct ParseError {
  int status = 400;               // for requests: 400, 414, 431 or 501; responses: always 502
  std::string_view reason;        // short, static text, e.g. "invalid Content-Length"
};

class HeadParser {
 public:
  explicit HeadParser(Limits limits = {}) : limits_(limits) {}

  // Forget progress; call before parsing a new message.
  void Reset() { scanned_ = 0; }

  // `data` holds every byte received so far for this message, starting at its first byte; each call
  // passes the same prefix again plus whatever arrived since (the buffer may have moved). Work is
  // resumed, not repeated: a slow sender costs O(total bytes). Returns kIncomplete until the whole
  // head is there, kComplete with `out` filled in, or kError with error() set: the connection must
  // then be answered with error().status and closed.
  ParseResult ParseRequest(std::string_view data, RequestHead* out);

  // Same for a response to a request with method `request_method` (a response to HEAD has no body).
  // 1xx responses are returned like any other; the caller forwards them and parses the next head.
  ParseResult ParseResponse(std::string_view data, std::string_view request_method,
                            ResponseHead* out);

  const ParseError& error() const { return error_; }

 private:
  // Offsets (from the first byte of the message) of the parts of a validated start line.
  struct StartLine {
    size_t begin = 0;            // first byte (a request may be preceded by empty lines)
    size_t end = 0;              // the CR that ends it
    size_t method_end = 0;       // request: the SP after the method
    size_t target_end = 0;       // request: the SP after the request-target
    size_t authority_begin = 0;  // request in absolute-form: host[:port]
    size_t authority_end = 0;
    size_t path_begin = 0;       // request: the path is [path_begin, target_end), "/" if empty
    int version_minor = 1;
    int status = 0;              // response
  };

  // Finds and validates the lines of the head; on kComplete sets *head_size and fills `headers`.
  // Errors carry the status a request would get; ParseResponse turns them into 502.
  ParseResult ScanHead(std::string_view data, bool request, size_t* head_size,
                       std::vector<Header>* headers);
  bool ParseRequestLine(std::string_view data, size_t begin, size_t end);
  bool ParseStatusLine(std::string_view data, size_t begin, size_t end);
  // Checks [begin, end), the start line received so far, for what already makes it invalid.
  bool CheckOpenStartLine(std::string_view data, size_t begin, size_t end, bool request);
  ParseResult Fail(int status, std::string_view reason);

  Limits limits_;
  size_t scanned_ = 0;  // bytes already checked to hold no complete head
  // Progress of the message being received; reinitialised whenever scanned_ is 0.
  size_t line_start_ = 0;      // first byte of the line not yet terminated
  size_t method_scanned_ = 0;  // request line still open: its method is valid up to here
  size_t fields_begin_ = 0;    // first byte after the start line
  size_t colon_ = 0;           // the colon of the field line being received; 0 before it
  size_t field_lines_ = 0;     // complete field lines
  bool start_line_done_ = false;
  StartLine start_line_;
  // Field lines completed during the current call, when it began at the first one; the usual case
  // (a whole head in one read) is then parsed in a single pass, and `out` is only touched on
  // kComplete. Its capacity is kept from message to message.
  std::vector<Header> fields_;
  ParseError error_;
};

class BodyDecoder {
 public:
  BodyDecoder() = default;

  void Start(BodyFraming framing, uint64_t content_length);

  // Looks at the next bytes of the stream and returns how many of them belong to the body (framing
  // bytes of chunked encoding included, so they can be forwarded verbatim). Returns fewer than
  // data.size() only when the body ended (done()) or an error was found (failed()).
  size_t Consume(std::string_view data);

  bool done() const { return state_ == State::kDone; }
  bool failed() const { return state_ == State::kError; }
  std::string_view error() const { return error_; }
  BodyFraming framing() const { return framing_; }
  // Body bytes still expected for kContentLength; 0 otherwise.
  uint64_t remaining() const { return framing_ == BodyFraming::kContentLength ? remaining_ : 0; }
  // For kUntilClose: the peer closed, so the body is complete.
  void FinishAtClose();

 private:
  enum class State : uint8_t {
    kDone,
    kError,
    kLength,         // content-length body
    kUntilClose,
    kChunkSize,      // reading hex digits
    kChunkExt,       // after ';' up to CR
    kChunkSizeLf,    // saw CR after size line, need LF
    kChunkData,
    kChunkDataCr,    // need CR after data
    kChunkDataLf,    // need LF after data
    kTrailerLineStart,
    kTrailerLine,
    kTrailerLineLf,
    kFinalLf,
  };
  State state_ = State::kDone;
  BodyFraming framing_ = BodyFraming::kNone;
  uint64_t remaining_ = 0;  // content-length bytes or current chunk bytes left
  uint32_t digits_ = 0;     // hex digits seen in the chunk size
  uint32_t line_bytes_ = 0; // bytes in the current extension or trailer line (bounded)
  uint32_t trailer_bytes_ = 0;
  bool ext_in_quotes_ = false;
  bool ext_escape_ = false;
  uint8_t sub_state_ = 0;   // position inside a chunk extension or a trailer field line
  std::string_view error_;

  // Enters kError with `reason`; returns `consumed` for Consume to pass on.
  size_t Fail(size_t consumed, std::string_view reason);
};

// Case-insensitive ASCII comparison.
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

}  // namespace bluegreen::http
