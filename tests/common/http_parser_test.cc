#include "common/http_parser.h"

#include <gtest/gtest.h>

#include <cctype>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bluegreen::http {
namespace {

using namespace std::string_literals;

struct RequestParse {
  ParseResult result = ParseResult::kIncomplete;
  RequestHead head;
  ParseError error;
};

// `text` must outlive the returned views.
RequestParse ParseReq(std::string_view text, Limits limits = {}) {
  HeadParser parser(limits);
  RequestParse r;
  r.result = parser.ParseRequest(text, &r.head);
  r.error = parser.error();
  return r;
}

struct ResponseParse {
  ParseResult result = ParseResult::kIncomplete;
  ResponseHead head;
  ParseError error;
};

ResponseParse ParseResp(std::string_view text, std::string_view method = "GET",
                        Limits limits = {}) {
  HeadParser parser(limits);
  ResponseParse r;
  r.result = parser.ParseResponse(text, method, &r.head);
  r.error = parser.error();
  return r;
}

// A request with the given header lines (each without CRLF) after "GET / HTTP/1.1".
std::string Req(const std::vector<std::string>& fields,
                const std::string& start = "GET / HTTP/1.1") {
  std::string s = start + "\r\n";
  for (const auto& f : fields) s += f + "\r\n";
  return s + "\r\n";
}

std::string Resp(const std::vector<std::string>& fields,
                 const std::string& start = "HTTP/1.1 200 OK") {
  return Req(fields, start);
}

void ExpectRequestError(const std::string& text, int status, std::string_view reason = {}) {
  SCOPED_TRACE(testing::Message() << "request: " << testing::PrintToString(text));
  RequestParse r = ParseReq(text);
  ASSERT_EQ(r.result, ParseResult::kError);
  EXPECT_EQ(r.error.status, status);
  if (!reason.empty()) {
    EXPECT_EQ(r.error.reason, reason);
  }
}

void ExpectResponseError(const std::string& text, std::string_view reason = {},
                         std::string_view method = "GET") {
  SCOPED_TRACE(testing::Message() << "response: " << testing::PrintToString(text));
  ResponseParse r = ParseResp(text, method);
  ASSERT_EQ(r.result, ParseResult::kError);
  EXPECT_EQ(r.error.status, 502);
  if (!reason.empty()) {
    EXPECT_EQ(r.error.reason, reason);
  }
}

const Header* Find(const std::vector<Header>& headers, std::string_view name) {
  for (const Header& h : headers) {
    if (EqualsIgnoreCase(h.name, name)) return &h;
  }
  return nullptr;
}

// ------------------------------------------------------------------------------------------------
// Request line

TEST(HttpRequestTest, SimpleGet) {
  const std::string msg =
      "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n";
  RequestParse r = ParseReq(msg);
  ASSERT_EQ(r.result, ParseResult::kComplete);
  const RequestHead& h = r.head;
  EXPECT_EQ(h.method, "GET");
  EXPECT_EQ(h.target, "/index.html?q=1");
  EXPECT_EQ(h.path, "/index.html?q=1");
  EXPECT_EQ(h.authority, "");
  EXPECT_EQ(h.version_minor, 1);
  EXPECT_EQ(h.host, "example.com");
  EXPECT_EQ(h.framing, BodyFraming::kNone);
  EXPECT_EQ(h.content_length, 0u);
  EXPECT_TRUE(h.keep_alive);
  EXPECT_FALSE(h.upgrade);
  EXPECT_FALSE(h.expect_continue);
  EXPECT_EQ(h.head_size, msg.size());
  ASSERT_EQ(h.headers.size(), 2u);
  EXPECT_EQ(h.headers[0].name, "Host");
  EXPECT_EQ(h.headers[0].value, "example.com");
  EXPECT_EQ(h.headers[0].kind, HeaderKind::kHost);
  EXPECT_FALSE(h.headers[0].hop_by_hop);
  EXPECT_EQ(h.headers[1].name, "User-Agent");
  EXPECT_EQ(h.headers[1].kind, HeaderKind::kOther);
}

TEST(HttpRequestTest, ViewsPointIntoTheBuffer) {
  const std::string msg = "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX-A:  v \r\n\r\nabc";
  RequestParse r = ParseReq(msg);
  ASSERT_EQ(r.result, ParseResult::kComplete);
  auto inside = [&](std::string_view v) {
    return v.data() >= msg.data() && v.data() + v.size() <= msg.data() + r.head.head_size;
  };
  EXPECT_TRUE(inside(r.head.method));
  EXPECT_TRUE(inside(r.head.target));
  EXPECT_TRUE(inside(r.head.path));
  EXPECT_TRUE(inside(r.head.host));
  for (const Header& h : r.head.headers) {
    EXPECT_TRUE(inside(h.name));
    EXPECT_TRUE(inside(h.value));
  }
  EXPECT_EQ(r.head.head_size, msg.size() - 3);
}

TEST(HttpRequestTest, Http10WithoutHost) {
  const std::string msg = "GET / HTTP/1.0\r\n\r\n";
  RequestParse r = ParseReq(msg);
  ASSERT_EQ(r.result, ParseResult::kComplete);
  EXPECT_EQ(r.head.version_minor, 0);
  EXPECT_EQ(r.head.host, "");
  EXPECT_FALSE(r.head.keep_alive);
  EXPECT_TRUE(r.head.headers.empty());
}

TEST(HttpRequestTest, ExtensionMethodsAreTokens) {
  for (std::string method : {"PURGE", "get", "M-SEARCH", "X!#$%&'*+.^_`|~1"}) {
    const std::string msg = Req({"Host: h"}, method + " / HTTP/1.1");
    RequestParse r = ParseReq(msg);
    ASSERT_EQ(r.result, ParseResult::kComplete) << method;
    EXPECT_EQ(r.head.method, method);
  }
}

TEST(HttpRequestTest, InvalidRequestLines) {
  struct Case {
    std::string line;
    std::string_view reason;
  };
  const Case cases[] = {
      {"GET  / HTTP/1.1", "invalid request-target"},
      {"GET / HTTP/1.1 ", "unsupported HTTP version"},
      {" GET / HTTP/1.1", "invalid method"},
      {"GET\t/ HTTP/1.1", "invalid method"},
      {"G(T / HTTP/1.1", "invalid method"},
      {"GET", "invalid method"},
      {"GET /", "invalid request-target"},
      {"GET / ", "unsupported HTTP version"},
      {"GET /\t HTTP/1.1", "invalid request-target"},
      {"GET /a b HTTP/1.1", "unsupported HTTP version"},
      {"GET / HTTP/2.0", "unsupported HTTP version"},
      {"GET / HTTP/1.2", "unsupported HTTP version"},
      {"GET / HTTP/0.9", "unsupported HTTP version"},
      {"GET / http/1.1", "unsupported HTTP version"},
      {"GET / HTTP/1.10", "unsupported HTTP version"},
      {"GET / HTTP/1", "unsupported HTTP version"},
      {"GET /\x7f HTTP/1.1", "invalid request-target"},
      {"GET /\x80 HTTP/1.1", "invalid request-target"},
      {"GET /\x01 HTTP/1.1", "invalid request-target"},
      {"GET /a#frag HTTP/1.1", "fragment in request-target"},
      {"GET foo HTTP/1.1", "invalid request-target"},
      {"GET * HTTP/1.1", "asterisk-form is only allowed with OPTIONS"},
      {"GET ** HTTP/1.1", "invalid request-target"},
      {"GET http://h?x=1 HTTP/1.1", "absolute-form target without a path"},
      {"GET http:///p HTTP/1.1", "invalid authority in request-target"},
      {"GET http:// HTTP/1.1", "invalid authority in request-target"},
      {"GET http://user@h/ HTTP/1.1", "invalid authority in request-target"},
      {"GET ftp://h/ HTTP/1.1", "invalid request-target"},
      {"GET http:/h/ HTTP/1.1", "invalid request-target"},
      {"GET example.com:80 HTTP/1.1", "invalid request-target"},
  };
  for (const Case& c : cases) ExpectRequestError(Req({"Host: h"}, c.line), 400, c.reason);
}

TEST(HttpRequestTest, ConnectIsNotImplemented) {
  ExpectRequestError(Req({"Host: h:443"}, "CONNECT h:443 HTTP/1.1"), 501,
                     "CONNECT is not supported");
}

TEST(HttpRequestTest, AsteriskFormWithOptions) {
  const std::string msg = Req({"Host: h"}, "OPTIONS * HTTP/1.1");
  RequestParse r = ParseReq(msg);
  ASSERT_EQ(r.result, ParseResult::kComplete);
  EXPECT_EQ(r.head.target, "*");
  EXPECT_EQ(r.head.path, "*");
  EXPECT_EQ(r.head.authority, "");
}

TEST(HttpRequestTest, AbsoluteForm) {
  {
    const std::string msg = Req({"Host: other"}, "GET http://example.com:8080/a/b?c=d HTTP/1.1");
    RequestParse r = ParseReq(msg);
    ASSERT_EQ(r.result, ParseResult::kComplete);
    EXPECT_EQ(r.head.target, "http://example.com:8080/a/b?c=d");
    EXPECT_EQ(r.head.authority, "example.com:8080");
    EXPECT_EQ(r.head.path, "/a/b?c=d");
    EXPECT_EQ(r.head.host, "other");
  }
  {
    const std::string msg = Req({"Host: example.com"}, "GET HTTPS://Example.com HTTP/1.1");
    RequestParse r = ParseReq(msg);
    ASSERT_EQ(r.result, ParseResult::kComplete);
    EXPECT_EQ(r.head.authority, "Example.com");
    EXPECT_EQ(r.head.path, "/");
  }
  {
    const std::string msg = Req({"Host: [::1]:80"}, "GET http://[::1]:80/ HTTP/1.1");
    RequestParse r = ParseReq(msg);
    ASSERT_EQ(r.result, ParseResult::kComplete);
    EXPECT_EQ(r.head.authority, "[::1]:80");
    EXPECT_EQ(r.head.path, "/");
  }
}

TEST(HttpRequestTest, EmptyLinesBeforeRequestLineAreIgnored) {
  const std::string msg = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
  RequestParse r = ParseReq(msg);
  ASSERT_EQ(r.result, ParseResult::kComplete);
  EXPECT_EQ(r.head.method, "GET");
  EXPECT_EQ(r.head.head_size, msg.size());
  ExpectRequestError("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bare LF in message head");
}

// ------------------------------------------------------------------------------------------------
// Limits

TEST(HttpRequestTest, RequestLineLimit) {
  Limits limits;
  limits.max_request_line = 64;
  // "GET " + target + " HTTP/1.1" is exactly 64 bytes: allowed.
  const std::string ok_line = "GET /" + std::string(64 - 4 - 9 - 1, 'a') + " HTTP/1.1";
  ASSERT_EQ(ok_line.size(), 64u);
  const std::string ok = Req({"Host: h"}, ok_line);
  EXPECT_EQ(ParseReq(ok, limits).result, ParseResult::kComplete);

  const std::string too_long = Req({"Host: h"}, "GET /" + std::string(60, 'a') + " HTTP/1.1");
  RequestParse r = ParseReq(too_long, limits);
  ASSERT_EQ(r.result, ParseResult::kError);
  EXPECT_EQ(r.error.status, 414);
}

TEST(HttpRequestTest, RequestLineLimitIsDetectedBeforeTheLineEnds) {
  Limits limits;
  limits.max_request_line = 64;
  HeadParser parser(limits);
  RequestHead head;
  std::string buf = "GET /" + std::string(59, 'a');  // 64 bytes, no CRLF yet
  EXPECT_EQ(parser.ParseRequest(buf, &head), ParseResult::kIncomplete);
  buf += '\r';  // could still be a 64-byte line
  EXPECT_EQ(parser.ParseRequest(buf, &head), ParseResult::kIncomplete);

  HeadParser parser2(limits);
  std::string buf2 = "GET /" + std::string(60, 'a');  // 65 bytes without CRLF
  EXPECT_EQ(parser2.ParseRequest(buf2, &head), ParseResult::kError);
  EXPECT_EQ(parser2.error().status, 414);
}

TEST(HttpRequestTest, HeadSizeLimit) {
  Limits limits;
  limits.max_header_bytes = 256;
  std::string base = "GET / HTTP/1.1\r\nHost: h\r\nX: ";
  // A head of exactly 256 bytes is allowed.
  std::string exact = base + std::string(256 - base.size() - 4, 'v') + "\r\n\r\n";
  ASSERT_EQ(exact.size(), 256u);
  EXPECT_EQ(ParseReq(exact, limits).result, ParseResult::kComplete);
  std::string over = base + std::string(256 - base.size() - 3, 'v') + "\r\n\r\n";
  RequestParse r = ParseReq(over, limits);
  ASSERT_EQ(r.result, ParseResult::kError);
  EXPECT_EQ(r.error.status, 431);

  // Detected before the head ends.
  HeadParser parser(limits);
  RequestHead head;
  std::string partial = base + std::string(256 - base.size(), 'v');
  EXPECT_EQ(parser.ParseRequest(partial, &head), ParseResult::kIncomplete);
  partial += 'v';
  EXPECT_EQ(parser.ParseRequest(partial, &head), ParseResult::kError);
  EXPECT_EQ(parser.error().status, 431);
}

TEST(HttpRequestTest, HeaderCountLimit) {
  Limits limits;
  limits.max_headers = 3;
  EXPECT_EQ(ParseReq(Req({"Host: h", "A: 1", "B: 2"}), limits).result, ParseResult::kComplete);
  const std::string four = Req({"Host: h", "A: 1", "B: 2", "C: 3"});
  RequestParse r = ParseReq(four, limits);
  ASSERT_EQ(r.result, ParseResult::kError);
  EXPECT_EQ(r.error.status, 431);
  EXPECT_EQ(r.error.reason, "too many header fields");
  // Detected as soon as the extra line is complete.
  HeadParser parser(limits);
  RequestHead head;
  EXPECT_EQ(parser.ParseRequest("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n", &head),
            ParseResult::kError);
  EXPECT_EQ(parser.error().status, 431);
}

// ------------------------------------------------------------------------------------------------
// Line endings and field syntax

TEST(HttpRequestTest, BareLineEndings) {
  ExpectRequestError("GET / HTTP/1.1\nHost: h\r\n\r\n", 400, "bare LF in message head");
  ExpectRequestError("GET / HTTP/1.1\r\nHost: h\n\r\n", 400, "bare LF in message head");
  ExpectRequestError("GET / HTTP/1.1\r\nHost: h\r\n\n", 400, "bare LF in message head");
  ExpectRequestError("GET / HTTP/1.1\r\nHost: h\r\nA: b\rc\r\n\r\n", 400,
                     "bare CR in message head");
  ExpectRequestError("GET / HTTP/1.1\r\nHost: h\r\nA\r: b\r\n\r\n", 400, "bare CR in message head");
  ExpectRequestError("GET / HTTP/1.1\r\nHost: h\r\nA: b\r\r\n\r\n", 400, "bare CR in message head");
  ExpectRequestError("GET / HTTP/1.1\r\r\nHost: h\r\n\r\n", 400);
  ExpectRequestError("GET /\r HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bare CR in message head");
  ExpectRequestError("GET / HTTP/1.1\r\nHost: h\r\n\r\r\n", 400);
}

TEST(HttpRequestTest, ObsFoldIsRejected) {
  ExpectRequestError("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400,
                     "obs-fold or whitespace before field name");
  ExpectRequestError("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", 400,
                     "obs-fold or whitespace before field name");
  // Whitespace between the start line and the first field (RFC 9112 2.2).
  ExpectRequestError("GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400,
                     "obs-fold or whitespace before field name");
}

TEST(HttpRequestTest, FieldNameSyntax) {
  ExpectRequestError(Req({"Host: h", "Content-Length : 5"}), 400, "whitespace before colon");
  ExpectRequestError(Req({"Host: h", "X\t: 5"}), 400, "whitespace before colon");
  ExpectRequestError(Req({"Host: h", ": v"}), 400, "empty header name");
  ExpectRequestError(Req({"Host: h", "X(Y: v"}), 400, "invalid header name");
  ExpectRequestError(Req({"Host: h", "X\x80: v"}), 400, "invalid header name");
  ExpectRequestError(Req({"Host: h", "NoColon"}), 400, "missing colon in header field");
  ExpectRequestError(Req({"Host: h", "X Y: v"}), 400, "whitespace before colon");
}

TEST(HttpRequestTest, FieldValueSyntax) {
  ExpectRequestError(Req({"Host: h", "X: a\x01"}), 400, "invalid header value");
  ExpectRequestError(Req({"Host: h", "X: a\x7f"}), 400, "invalid header value");
  ExpectRequestError(Req({"Host: h", "X: a\x1f"}), 400, "invalid header value");
  ExpectRequestError(Req({"Host: h", "X: abcdefghijklmnop\x0bq"}), 400, "invalid header value");
  ExpectRequestError(Req({"Host: h", "X: a"s + '\0' + "b"}), 400, "invalid header value");

  const std::string msg = Req({"Host: h", "A: \t v1 \t ", "B:v2", "C:", "D: caf\xc3\xa9 x\ty",
                               "E:    ", "F: abcdefghijklmnopqrstuvwxyz0123456789 end"});
  RequestParse r = ParseReq(msg);
  ASSERT_EQ(r.result, ParseResult::kComplete);
  ASSERT_EQ(r.head.headers.size(), 7u);
  EXPECT_EQ(r.head.headers[1].value, "v1");
  EXPECT_EQ(r.head.headers[2].value, "v2");
  EXPECT_EQ(r.head.headers[3].value, "");
  EXPECT_EQ(r.head.headers[4].value, "caf\xc3\xa9 x\ty");
  EXPECT_EQ(r.head.headers[5].value, "");
  EXPECT_EQ(r.head.headers[6].value, "abcdefghijklmnopqrstuvwxyz0123456789 end");
}

// The scanners look at 8 or 16 bytes at a time: put the byte that matters in every position.
TEST(HttpRequestTest, EveryPositionOfAValueIsChecked) {
  for (size_t i = 0; i < 40; ++i) {
    for (char bad : {'\0', '\x01', '\x08', '\x0b', '\x1f', '\x7f', '\r', '\n'}) {
      std::string value(40, 'v');
      value[i] = bad;
      const std::string msg = Req({"Host: h", "X: " + value + "x"});
      RequestParse r = ParseReq(msg);
      ASSERT_EQ(r.result, ParseResult::kError) << i << " " << static_cast<int>(bad);
      EXPECT_EQ(r.error.status, 400);
    }
    for (char good : {'\t', ' ', '\x80', '\xff', '~', '!'}) {
      std::string value(40, 'v');
      value[i] = good;
      const std::string msg = Req({"Host: h", "X: v" + value + "v"});
      RequestParse r = ParseReq(msg);
      ASSERT_EQ(r.result, ParseResult::kComplete) << i << " " << static_cast<int>(good);
      EXPECT_EQ(r.head.headers[1].value, "v" + value + "v");
    }
  }
}

TEST(HttpRequestTest, EveryPositionOfANameIsChecked) {
  for (size_t i = 0; i < 40; ++i) {
    for (char bad : {'\x80', '(', '@', '[', '{', '"', '/', '\x7f', '\x01'}) {
      std::string name(40, 'n');
      name[i] = bad;
      ExpectRequestError(Req({"Host: h", name + ": v"}), 400, "invalid header name");
    }
    for (char good : {'_', '.', '!', '~', '`', '|', '^', 'Z', '9', '-'}) {
      std::string name(40, 'n');
      name[i] = good;
      const std::string msg = Req({"Host: h", name + ": v"});
      RequestParse r = ParseReq(msg);
      ASSERT_EQ(r.result, ParseResult::kComplete) << i << " " << good;
      EXPECT_EQ(r.head.headers[1].name, name);
    }
  }
}

TEST(HttpRequestTest, EveryPositionOfATargetIsChecked) {
  for (size_t i = 1; i < 40; ++i) {
    for (char bad : {'\x80', '\x7f', '\x01', '\t', '#'}) {
      std::string target = "/" + std::string(39, 't');
      target[i] = bad;
      RequestParse r = ParseReq(Req({"Host: h"}, "GET " + target + " HTTP/1.1"));
      EXPECT_EQ(r.result, ParseResult::kError) << i;
    }
    std::string method(40, 'M');
    method[i] = '\x80';
    RequestParse r = ParseReq(Req({"Host: h"}, method + " / HTTP/1.1"));
    ASSERT_EQ(r.result, ParseResult::kError) << i;
    EXPECT_EQ(r.error.reason, "invalid method");
  }
}

TEST(HttpRequestTest, FieldNamesAreRecognisedExactly) {
  const std::pair<std::string, HeaderKind> names[] = {
      {"host", HeaderKind::kHost},
      {"content-length", HeaderKind::kContentLength},
      {"transfer-encoding", HeaderKind::kTransferEncoding},
      {"connection", HeaderKind::kConnection},
      {"keep-alive", HeaderKind::kKeepAlive},
      {"proxy-connection", HeaderKind::kProxyConnection},
      {"te", HeaderKind::kTe},
      {"trailer", HeaderKind::kTrailer},
      {"upgrade", HeaderKind::kUpgrade},
      {"expect", HeaderKind::kExpect},
      {"x-forwarded-for", HeaderKind::kXForwardedFor},
      {"x-forwarded-proto", HeaderKind::kXForwardedProto},
      {"x-forwarded-port", HeaderKind::kXForwardedPort},
  };
  auto kind_of = [](const std::string& name) {
    // A response: "1" is a valid value for every field recognised.
    const std::string msg = "HTTP/1.1 200 OK\r\n" + name + ": 1\r\n\r\n";
    ResponseParse r = ParseResp(msg);
    EXPECT_EQ(r.result, ParseResult::kComplete) << name;
    return r.head.headers.empty() ? HeaderKind::kOther : r.head.headers[0].kind;
  };
  for (const auto& [name, kind] : names) {
    for (size_t i = 0; i < name.size(); ++i) {
      std::string upper = name;
      upper[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(upper[i])));
      EXPECT_EQ(kind_of(upper), kind) << upper;
      for (char other : {'x', 'X', '_', '.', '`', '^', '0'}) {
        std::string changed = name;
        if (std::tolower(static_cast<unsigned char>(changed[i])) == std::tolower(other)) continue;
        changed[i] = other;
        EXPECT_EQ(kind_of(changed), HeaderKind::kOther) << changed;
      }
    }
    EXPECT_EQ(kind_of(name + "x"), HeaderKind::kOther);
    EXPECT_EQ(kind_of(name.substr(1)), HeaderKind::kOther);
  }
}

// ------------------------------------------------------------------------------------------------
// Content-Length and Transfer-Encoding (request smuggling)

TEST(HttpRequestTest, ValidContentLength) {
  struct Case {
    std::string value;
    uint64_t length;
  };
  const Case cases[] = {{"0", 0},
                        {"42", 42},
                        {"007", 7},
                        {" 12 ", 12},
                        {"9223372036854775807", 9223372036854775807ULL}};
  for (const Case& c : cases) {
    const std::string msg = Req({"Host: h", "Content-Length: " + c.value}, "POST / HTTP/1.1");
    RequestParse r = ParseReq(msg);
    ASSERT_EQ(r.result, ParseResult::kComplete) << c.value;
    EXPECT_EQ(r.head.framing, BodyFraming::kContentLength) << c.value;
    EXPECT_EQ(r.head.content_length, c.length);
  }
}

TEST(HttpRequestTest, InvalidContentLength) {
  for (std::string value :
       {"", "-1", "+1", "1 2", "0x10", "1.0", "abc", "1,1", "1, 1", "5,", "9223372036854775808",
        "18446744073709551616", "99999999999999999999999", "\xef\xbc\x91"}) {
    ExpectRequestError(Req({"Host: h", "Content-Length: " + value}, "POST / HTTP/1.1"), 400,
                       "invalid Content-Length");
  }
}

TEST(HttpRequestTest, DuplicateContentLength) {
  ExpectRequestError(Req({"Host: h", "Content-Length: 5", "Content-Length: 5"}), 400,
                     "multiple Content-Length fields");
  ExpectRequestError(Req({"Host: h", "Content-Length: 5", "content-length: 6"}), 400,
                     "multiple Content-Length fields");
}

TEST(HttpRequestTest, ChunkedRequest) {
  for (std::string value : {"chunked", "Chunked", "CHUNKED", "  chunked\t"}) {
    const std::string msg = Req({"Host: h", "Transfer-Encoding: " + value}, "POST / HTTP/1.1");
    RequestParse r = ParseReq(msg);
    ASSERT_EQ(r.result, ParseResult::kComplete) << value;
    EXPECT_EQ(r.head.framing, BodyFraming::kChunked);
    EXPECT_EQ(r.head.content_length, 0u);
    const Header* te = Find(r.head.headers, "Transfer-Encoding");
    ASSERT_NE(te, nullptr);
    EXPECT_EQ(te->kind, HeaderKind::kTransferEncoding);
    EXPECT_TRUE(te->hop_by_hop);
  }
}

TEST(HttpRequestTest, TransferEncodingAttacks) {
  struct Case {
    std::vector<std::string> fields;
    int status;
    std::string_view reason;
  };
  const Case cases[] = {
      {{"Transfer-Encoding: chunked", "Content-Length: 5"},
       400,
       "both Transfer-Encoding and Content-Length"},
      {{"Content-Length: 5", "Transfer-Encoding: chunked"},
       400,
       "both Transfer-Encoding and Content-Length"},
      {{"Content-Length: 0", "Transfer-Encoding: gzip, chunked"},
       400,
       "both Transfer-Encoding and Content-Length"},
      {{"Transfer-Encoding: chunked, chunked"}, 400, "chunked applied more than once"},
      {{"Transfer-Encoding: chunked", "Transfer-Encoding: chunked"},
       400,
       "chunked applied more than once"},
      {{"Transfer-Encoding: chunked, gzip"}, 400, "chunked is not the final transfer coding"},
      {{"Transfer-Encoding: chunked", "Transfer-Encoding: identity"},
       400,
       "chunked is not the final transfer coding"},
      {{"Transfer-Encoding: gzip"}, 400, "chunked is not the final transfer coding"},
      {{"Transfer-Encoding: xchunked"}, 400, "chunked is not the final transfer coding"},
      {{"Transfer-Encoding: chunkedx"}, 400, "chunked is not the final transfer coding"},
      {{"Transfer-Encoding: gzip, chunked"}, 501, "unsupported transfer coding"},
      {{"Transfer-Encoding: identity, chunked"}, 501, "unsupported transfer coding"},
      {{"Transfer-Encoding: gzip", "Transfer-Encoding: chunked"},
       501,
       "unsupported transfer coding"},
      {{"Transfer-Encoding: chun ked"}, 400, "invalid Transfer-Encoding"},
      {{"Transfer-Encoding: \"chunked\""}, 400, "invalid Transfer-Encoding"},
      {{"Transfer-Encoding: chunked,"}, 400, "invalid Transfer-Encoding"},
      {{"Transfer-Encoding: ,chunked"}, 400, "invalid Transfer-Encoding"},
      {{"Transfer-Encoding: gzip,,chunked"}, 400, "invalid Transfer-Encoding"},
      {{"Transfer-Encoding:"}, 400, "invalid Transfer-Encoding"},
      {{"Transfer-Encoding: chunked;q=1"}, 400, "invalid Transfer-Encoding"},
      {{"Transfer-Encoding: gzip;q=1, chunked"}, 400, "invalid Transfer-Encoding"},
      {{"Transfer-Encoding: chunked\x0b"}, 400, "invalid header value"},
      {{"Transfer-Encoding: \013chunked"}, 400, "invalid header value"},
      {{"Transfer-Encoding: chunked\x01"}, 400, "invalid header value"},
      {{"Transfer-Encoding : chunked"}, 400, "whitespace before colon"},
      {{"Transfer-Encoding\t: chunked"}, 400, "whitespace before colon"},
      {{" Transfer-Encoding: chunked"}, 400, "obs-fold or whitespace before field name"},
      {{"X: y", " Transfer-Encoding: chunked"}, 400, "obs-fold or whitespace before field name"},
      {{"Transfer-Encoding:", " chunked"}, 400, "obs-fold or whitespace before field name"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> fields = {"Host: h"};
    fields.insert(fields.end(), c.fields.begin(), c.fields.end());
    ExpectRequestError(Req(fields, "POST / HTTP/1.1"), c.status, c.reason);
  }
}

TEST(HttpRequestTest, TransferEncodingInHttp10) {
  ExpectRequestError(Req({"Transfer-Encoding: chunked"}, "POST / HTTP/1.0"), 400,
                     "Transfer-Encoding in an HTTP/1.0 request");
}

TEST(HttpRequestTest, LookalikeFieldNamesAreNotFraming) {
  const std::string msg = Req({"Host: h", "Transfer_Encoding: chunked", "Content-Length_: 5",
                               "XTransfer-Encoding: chunked"},
                              "POST / HTTP/1.1");
  RequestParse r = ParseReq(msg);
  ASSERT_EQ(r.result, ParseResult::kComplete);
  EXPECT_EQ(r.head.framing, BodyFraming::kNone);
  for (size_t i = 1; i < r.head.headers.size(); ++i) {
    EXPECT_EQ(r.head.headers[i].kind, HeaderKind::kOther);
  }
}

// ------------------------------------------------------------------------------------------------
// Host

TEST(HttpRequestTest, HostRules) {
  ExpectRequestError(Req({}), 400, "missing Host");
  ExpectRequestError(Req({"Host: a", "Host: a"}), 400, "multiple Host fields");
  ExpectRequestError(Req({"Host: a", "host: b"}, "GET / HTTP/1.0"), 400, "multiple Host fields");
  for (std::string value : {"", "a b", "a/b", "a@b", "a?b", "a#b", "a\tb", "caf\xc3\xa9"}) {
    ExpectRequestError(Req({"Host: " + value}), 400, "invalid Host");
  }
  for (std::string value : {"example.com", "example.com:8080", "[::1]:80", "10.0.0.1"}) {
    const std::string msg = Req({"Host: " + value});
    RequestParse r = ParseReq(msg);
    ASSERT_EQ(r.result, ParseResult::kComplete) << value;
    EXPECT_EQ(r.head.host, value);
  }
  const std::string msg = Req({"Host: \t h:1 \t"}, "GET / HTTP/1.0");
  RequestParse r = ParseReq(msg);
  ASSERT_EQ(r.result, ParseResult::kComplete);
  EXPECT_EQ(r.head.host, "h:1");
}

// ------------------------------------------------------------------------------------------------
// Connection, Upgrade, Expect and hop-by-hop fields

TEST(HttpRequestTest, KeepAlive) {
  struct Case {
    std::string version;
    std::vector<std::string> fields;
    bool keep_alive;
  };
  const Case cases[] = {
      {"HTTP/1.1", {}, true},
      {"HTTP/1.1", {"Connection: close"}, false},
      {"HTTP/1.1", {"Connection: CLOSE"}, false},
      {"HTTP/1.1", {"Connection: keep-alive"}, true},
      {"HTTP/1.1", {"Connection: keep-alive, close"}, false},
      {"HTTP/1.1", {"Connection: x", "Connection: close"}, false},
      {"HTTP/1.1", {"Connection: closed"}, true},
      {"HTTP/1.1", {"Connection: ,, close ,"}, false},
      {"HTTP/1.0", {}, false},
      {"HTTP/1.0", {"Connection: keep-alive"}, true},
      {"HTTP/1.0", {"Connection: Keep-Alive"}, true},
      {"HTTP/1.0", {"Connection: foo,keep-alive"}, true},
      {"HTTP/1.0", {"Connection: keep-alive", "Connection: close"}, false},
      {"HTTP/1.0", {"Keep-Alive: timeout=5"}, false},
  };
  for (const Case& c : cases) {
    std::vector<std::string> fields = {"Host: h"};
    fields.insert(fields.end(), c.fields.begin(), c.fields.end());
    const std::string msg = Req(fields, "GET / " + c.version);
    RequestParse r = ParseReq(msg);
    ASSERT_EQ(r.result, ParseResult::kComplete) << msg;
    EXPECT_EQ(r.head.keep_alive, c.keep_alive) << msg;
  }
}

TEST(HttpRequestTest, Upgrade) {
  struct Case {
    std::string version;
    std::vector<std::string> fields;
    bool upgrade;
  };
  const Case cases[] = {
      {"HTTP/1.1", {"Connection: Upgrade", "Upgrade: websocket"}, true},
      {"HTTP/1.1", {"Connection: keep-alive, upgrade", "Upgrade: h2c"}, true},
      {"HTTP/1.1", {"Upgrade: websocket"}, false},
      {"HTTP/1.1", {"Connection: upgrade"}, false},
      {"HTTP/1.0", {"Connection: upgrade", "Upgrade: websocket"}, false},
  };
  for (const Case& c : cases) {
    std::vector<std::string> fields = {"Host: h"};
    fields.insert(fields.end(), c.fields.begin(), c.fields.end());
    const std::string msg = Req(fields, "GET / " + c.version);
    RequestParse r = ParseReq(msg);
    ASSERT_EQ(r.result, ParseResult::kComplete) << msg;
    EXPECT_EQ(r.head.upgrade, c.upgrade) << msg;
  }
}

TEST(HttpRequestTest, ExpectContinue) {
  struct Case {
    std::string version;
    std::string expect;
    bool expect_continue;
  };
  const Case cases[] = {
      {"HTTP/1.1", "100-continue", true},     {"HTTP/1.1", "100-Continue", true},
      {"HTTP/1.1", " 100-continue ", true},   {"HTTP/1.1", "200-ok", false},
      {"HTTP/1.1", "100-continue, x", false}, {"HTTP/1.0", "100-continue", false},
  };
  for (const Case& c : cases) {
    const std::string msg =
        Req({"Host: h", "Content-Length: 1", "Expect: " + c.expect}, "POST / " + c.version);
    RequestParse r = ParseReq(msg);
    ASSERT_EQ(r.result, ParseResult::kComplete) << msg;
    EXPECT_EQ(r.head.expect_continue, c.expect_continue) << msg;
  }
}

TEST(HttpRequestTest, HeaderKindsAndHopByHop) {
  const std::string msg = Req(
      {"host: h", "CONTENT-LENGTH: 1",
       "connection: keep-alive, X-Secret, Content-Length, Host, x-ff", "Keep-Alive: timeout=5",
       "Proxy-Connection: keep-alive", "TE: trailers", "Trailer: X-Checksum", "Upgrade: websocket",
       "Expect: 100-continue", "X-Forwarded-For: 1.2.3.4", "X-Forwarded-Proto: https",
       "X-Forwarded-Port: 443", "X-Secret: s", "X-Other: o", "X-FF: ff"},
      "POST / HTTP/1.1");
  RequestParse r = ParseReq(msg);
  ASSERT_EQ(r.result, ParseResult::kComplete);
  struct Expected {
    std::string_view name;
    HeaderKind kind;
    bool hop_by_hop;
  };
  const Expected expected[] = {
      {"host", HeaderKind::kHost, false},
      {"CONTENT-LENGTH", HeaderKind::kContentLength, false},
      {"connection", HeaderKind::kConnection, true},
      {"Keep-Alive", HeaderKind::kKeepAlive, true},
      {"Proxy-Connection", HeaderKind::kProxyConnection, true},
      {"TE", HeaderKind::kTe, true},
      {"Trailer", HeaderKind::kTrailer, true},
      {"Upgrade", HeaderKind::kUpgrade, true},
      {"Expect", HeaderKind::kExpect, false},
      {"X-Forwarded-For", HeaderKind::kXForwardedFor, false},
      {"X-Forwarded-Proto", HeaderKind::kXForwardedProto, false},
      {"X-Forwarded-Port", HeaderKind::kXForwardedPort, false},
      {"X-Secret", HeaderKind::kOther, true},
      {"X-Other", HeaderKind::kOther, false},
      {"X-FF", HeaderKind::kOther, true},
  };
  ASSERT_EQ(r.head.headers.size(), std::size(expected));
  for (size_t i = 0; i < std::size(expected); ++i) {
    EXPECT_EQ(r.head.headers[i].name, expected[i].name);
    EXPECT_EQ(r.head.headers[i].kind, expected[i].kind) << expected[i].name;
    EXPECT_EQ(r.head.headers[i].hop_by_hop, expected[i].hop_by_hop) << expected[i].name;
  }
  EXPECT_EQ(r.head.framing, BodyFraming::kContentLength);
  EXPECT_EQ(r.head.host, "h");
  EXPECT_TRUE(r.head.expect_continue);
  EXPECT_TRUE(r.head.keep_alive);
  EXPECT_FALSE(r.head.upgrade);
}

// ------------------------------------------------------------------------------------------------
// Incremental parsing

void ExpectSameHeads(const RequestHead& a, const RequestHead& b) {
  EXPECT_EQ(a.method, b.method);
  EXPECT_EQ(a.target, b.target);
  EXPECT_EQ(a.path, b.path);
  EXPECT_EQ(a.authority, b.authority);
  EXPECT_EQ(a.version_minor, b.version_minor);
  EXPECT_EQ(a.host, b.host);
  EXPECT_EQ(a.framing, b.framing);
  EXPECT_EQ(a.content_length, b.content_length);
  EXPECT_EQ(a.keep_alive, b.keep_alive);
  EXPECT_EQ(a.upgrade, b.upgrade);
  EXPECT_EQ(a.expect_continue, b.expect_continue);
  EXPECT_EQ(a.head_size, b.head_size);
  ASSERT_EQ(a.headers.size(), b.headers.size());
  for (size_t i = 0; i < a.headers.size(); ++i) {
    EXPECT_EQ(a.headers[i].name, b.headers[i].name);
    EXPECT_EQ(a.headers[i].value, b.headers[i].value);
    EXPECT_EQ(a.headers[i].kind, b.headers[i].kind);
    EXPECT_EQ(a.headers[i].hop_by_hop, b.headers[i].hop_by_hop);
  }
}

// Feeds `text` `step` bytes at a time, each time from a freshly allocated copy (the caller's
// buffer may move), and checks the result equals parsing it in one call.
void ExpectIncrementalMatchesOneShot(const std::string& text, size_t step) {
  SCOPED_TRACE(testing::Message() << "step " << step << ": " << testing::PrintToString(text));
  RequestParse whole = ParseReq(text);
  HeadParser parser;
  RequestHead head;
  ParseResult result = ParseResult::kIncomplete;
  std::vector<std::string> buffers;  // keeps the views of the last call alive
  for (size_t n = 0; n <= text.size() && result == ParseResult::kIncomplete;) {
    n = std::min(text.size(), n + step);
    buffers.push_back(text.substr(0, n));
    result = parser.ParseRequest(buffers.back(), &head);
    if (n == text.size()) break;
  }
  ASSERT_EQ(result, whole.result);
  if (result == ParseResult::kError) {
    EXPECT_EQ(parser.error().status, whole.error.status);
    EXPECT_EQ(parser.error().reason, whole.error.reason);
  } else if (result == ParseResult::kComplete) {
    ExpectSameHeads(head, whole.head);
  }
}

TEST(HttpRequestTest, IncrementalMatchesOneShot) {
  const std::string messages[] = {
      "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
      "\r\nPOST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"s +
          "Connection: close, X-A\r\nX-A: 1\r\n\r\n",
      "GET http://h/x HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 10\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nA: b\rc\r\n\r\n",
      "GET / HTTP/9.9\r\nHost: h\r\n\r\n",
      "G@T / HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\n",  // incomplete
  };
  for (const std::string& m : messages) {
    for (size_t step : {1, 2, 3, 5, 7, 16, 1000}) ExpectIncrementalMatchesOneShot(m, step);
  }
}

TEST(HttpRequestTest, GarbageIsRejectedBeforeAnyLineEnds) {
  HeadParser parser;
  RequestHead head;
  // A TLS ClientHello sent to the plain-text port.
  EXPECT_EQ(parser.ParseRequest("\x16\x03\x01\x02\x00"s, &head), ParseResult::kError);
  EXPECT_EQ(parser.error().status, 400);
  parser.Reset();
  EXPECT_EQ(parser.ParseRequest("GE", &head), ParseResult::kIncomplete);
  EXPECT_EQ(parser.ParseRequest("GET", &head), ParseResult::kIncomplete);
  EXPECT_EQ(parser.ParseRequest("GET /", &head), ParseResult::kIncomplete);
  parser.Reset();
  EXPECT_EQ(parser.ParseRequest("GET\t", &head), ParseResult::kError);
  EXPECT_EQ(parser.error().reason, "invalid method");
  parser.Reset();
  EXPECT_EQ(parser.ParseRequest("\r", &head), ParseResult::kIncomplete);
  EXPECT_EQ(parser.ParseRequest("\r\n", &head), ParseResult::kIncomplete);
  EXPECT_EQ(parser.ParseRequest("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", &head),
            ParseResult::kComplete);
}

TEST(HttpRequestTest, SlowSenderOfALargeHead) {
  // 1 byte per call for a ~30 KiB head: linear work keeps this fast even under sanitizers.
  std::string text = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 90; ++i)
    text += "X-Field-" + std::to_string(i) + ": " + std::string(300, 'v') + "\r\n";
  text += "\r\n";
  ASSERT_LT(text.size(), Limits().max_header_bytes);
  HeadParser parser;
  RequestHead head;
  ParseResult result = ParseResult::kIncomplete;
  for (size_t n = 1; n <= text.size(); ++n) {
    result = parser.ParseRequest(std::string_view(text.data(), n), &head);
    if (n < text.size()) {
      ASSERT_EQ(result, ParseResult::kIncomplete) << n;
    }
  }
  ASSERT_EQ(result, ParseResult::kComplete);
  EXPECT_EQ(head.headers.size(), 91u);
  EXPECT_EQ(head.head_size, text.size());
}

TEST(HttpRequestTest, ReuseAfterResetAndPipelining) {
  const std::string stream =
      "GET /a HTTP/1.1\r\nHost: h\r\nX-1: 1\r\nX-2: 2\r\n\r\n"
      "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
      "GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
  HeadParser parser;
  RequestHead head;
  std::string_view rest = stream;
  ASSERT_EQ(parser.ParseRequest(rest, &head), ParseResult::kComplete);
  EXPECT_EQ(head.path, "/a");
  EXPECT_EQ(head.headers.size(), 3u);
  const size_t capacity = head.headers.capacity();
  rest.remove_prefix(head.head_size);

  parser.Reset();
  ASSERT_EQ(parser.ParseRequest(rest, &head), ParseResult::kComplete);
  EXPECT_EQ(head.path, "/b");
  EXPECT_EQ(head.method, "POST");
  EXPECT_EQ(head.headers.size(), 2u);  // cleared, not appended to
  EXPECT_EQ(head.headers.capacity(), capacity);
  EXPECT_EQ(head.framing, BodyFraming::kContentLength);
  rest.remove_prefix(head.head_size + head.content_length);

  parser.Reset();
  ASSERT_EQ(parser.ParseRequest(rest, &head), ParseResult::kComplete);
  EXPECT_EQ(head.path, "/c");
  EXPECT_EQ(head.framing, BodyFraming::kNone);
  EXPECT_EQ(head.head_size, rest.size());
}

TEST(HttpRequestTest, ResetForgetsAPartialMessage) {
  HeadParser parser;
  RequestHead head;
  EXPECT_EQ(parser.ParseRequest("GET /first HTTP/1.1\r\nHost: a\r\nX: 1\r\n", &head),
            ParseResult::kIncomplete);
  parser.Reset();
  ASSERT_EQ(parser.ParseRequest("PUT /x HTTP/1.1\r\nHost: b\r\n\r\n", &head),
            ParseResult::kComplete);
  EXPECT_EQ(head.method, "PUT");
  EXPECT_EQ(head.host, "b");
}

// ------------------------------------------------------------------------------------------------
// Responses

TEST(HttpResponseTest, SimpleResponse) {
  const std::string msg = Resp({"Content-Length: 5", "Content-Type: text/plain"});
  ResponseParse r = ParseResp(msg);
  ASSERT_EQ(r.result, ParseResult::kComplete);
  EXPECT_EQ(r.head.version_minor, 1);
  EXPECT_EQ(r.head.status, 200);
  EXPECT_EQ(r.head.reason, "OK");
  EXPECT_EQ(r.head.framing, BodyFraming::kContentLength);
  EXPECT_EQ(r.head.content_length, 5u);
  EXPECT_TRUE(r.head.keep_alive);
  EXPECT_EQ(r.head.head_size, msg.size());
  ASSERT_EQ(r.head.headers.size(), 2u);
  EXPECT_EQ(r.head.headers[0].kind, HeaderKind::kContentLength);
}

TEST(HttpResponseTest, StatusLineForms) {
  struct Case {
    std::string line;
    int status;
    std::string_view reason;
    int minor;
  };
  const Case cases[] = {
      {"HTTP/1.1 200", 200, "", 1},
      {"HTTP/1.1 200 ", 200, "", 1},
      {"HTTP/1.0 404 Not Found", 404, "Not Found", 0},
      {"HTTP/1.1 599 x\ty \xe9t\xe9", 599, "x\ty \xe9t\xe9", 1},
      {"HTTP/1.1 100 Continue", 100, "Continue", 1},
  };
  for (const Case& c : cases) {
    const std::string msg = Resp({"Content-Length: 0"}, c.line);
    ResponseParse r = ParseResp(msg);
    ASSERT_EQ(r.result, ParseResult::kComplete) << c.line;
    EXPECT_EQ(r.head.status, c.status);
    EXPECT_EQ(r.head.reason, c.reason);
    EXPECT_EQ(r.head.version_minor, c.minor);
  }
}

TEST(HttpResponseTest, InvalidStatusLines) {
  for (std::string line : {"HTTP/1.1 20 OK", "HTTP/1.1 2000 OK", "HTTP/1.1  200 OK",
                           "HTTP/1.1 20x OK", "HTTP/2 200 OK", "HTTP/1.2 200 OK", "http/1.1 200 OK",
                           "HTTP/1.1", "HTTP/1.1 ", "ICY 200 OK", "HTTP/1.1 200 O\x01K",
                           "HTTP/1.1 200 O\x7fK", " HTTP/1.1 200 OK", "HTTP/1.1 200\tOK"}) {
    ExpectResponseError(Resp({"Content-Length: 0"}, line));
  }
  ExpectResponseError(Resp({}, "HTTP/1.1 099 Low"), "invalid status code");
  ExpectResponseError(Resp({}, "HTTP/1.1 600 High"), "invalid status code");
  ExpectResponseError("\r\nHTTP/1.1 200 OK\r\n\r\n", "invalid status line");
}

TEST(HttpResponseTest, Framing) {
  struct Case {
    std::string line;
    std::string method;
    std::vector<std::string> fields;
    BodyFraming framing;
    uint64_t length;
    bool keep_alive;
  };
  const Case cases[] = {
      {"HTTP/1.1 200 OK", "GET", {"Content-Length: 7"}, BodyFraming::kContentLength, 7, true},
      {"HTTP/1.1 200 OK", "GET", {"Content-Length: 0"}, BodyFraming::kContentLength, 0, true},
      {"HTTP/1.1 200 OK", "HEAD", {"Content-Length: 7"}, BodyFraming::kNone, 0, true},
      {"HTTP/1.1 200 OK", "HEAD", {"Transfer-Encoding: chunked"}, BodyFraming::kNone, 0, true},
      {"HTTP/1.1 200 OK", "HEAD", {}, BodyFraming::kNone, 0, true},
      {"HTTP/1.1 100 Continue", "POST", {}, BodyFraming::kNone, 0, true},
      {"HTTP/1.1 101 Switching",
       "GET",
       {"Upgrade: websocket", "Connection: upgrade"},
       BodyFraming::kNone,
       0,
       true},
      {"HTTP/1.1 204 No Content", "GET", {"Content-Length: 7"}, BodyFraming::kNone, 0, true},
      {"HTTP/1.1 304 Not Modified", "GET", {"Content-Length: 7"}, BodyFraming::kNone, 0, true},
      {"HTTP/1.1 200 OK", "GET", {"Transfer-Encoding: chunked"}, BodyFraming::kChunked, 0, true},
      {"HTTP/1.1 200 OK",
       "GET",
       {"Transfer-Encoding: gzip, chunked"},
       BodyFraming::kChunked,
       0,
       true},
      {"HTTP/1.1 200 OK", "GET", {"Transfer-Encoding: gzip"}, BodyFraming::kUntilClose, 0, false},
      {"HTTP/1.1 200 OK",
       "GET",
       {"Transfer-Encoding: chunked, gzip"},
       BodyFraming::kUntilClose,
       0,
       false},
      {"HTTP/1.1 200 OK", "GET", {}, BodyFraming::kUntilClose, 0, false},
      {"HTTP/1.1 200 OK",
       "GET",
       {"Connection: close", "Content-Length: 1"},
       BodyFraming::kContentLength,
       1,
       false},
      {"HTTP/1.0 200 OK", "GET", {"Content-Length: 1"}, BodyFraming::kContentLength, 1, false},
      {"HTTP/1.0 200 OK",
       "GET",
       {"Connection: keep-alive", "Content-Length: 1"},
       BodyFraming::kContentLength,
       1,
       true},
      {"HTTP/1.0 200 OK", "GET", {"Connection: keep-alive"}, BodyFraming::kUntilClose, 0, false},
  };
  for (const Case& c : cases) {
    const std::string msg = Resp(c.fields, c.line);
    ResponseParse r = ParseResp(msg, c.method);
    ASSERT_EQ(r.result, ParseResult::kComplete) << msg;
    EXPECT_EQ(r.head.framing, c.framing) << c.method << " " << msg;
    EXPECT_EQ(r.head.content_length, c.length) << msg;
    EXPECT_EQ(r.head.keep_alive, c.keep_alive) << msg;
  }
}

TEST(HttpResponseTest, FramingErrors) {
  ExpectResponseError(Resp({"Transfer-Encoding: chunked", "Content-Length: 5"}),
                      "both Transfer-Encoding and Content-Length");
  ExpectResponseError(Resp({"Content-Length: 5", "Content-Length: 5"}),
                      "multiple Content-Length fields");
  ExpectResponseError(Resp({"Content-Length: 5,5"}), "invalid Content-Length");
  ExpectResponseError(Resp({"Content-Length: -5"}), "invalid Content-Length");
  ExpectResponseError(Resp({"Transfer-Encoding: chunked, chunked"}),
                      "chunked applied more than once");
  ExpectResponseError(Resp({"Transfer-Encoding: \"chunked\""}), "invalid Transfer-Encoding");
  ExpectResponseError(Resp({"Transfer-Encoding: chunked"}, "HTTP/1.0 200 OK"),
                      "Transfer-Encoding in an HTTP/1.0 response");
  // Framing fields are validated even where they do not decide the framing.
  ExpectResponseError(Resp({"Content-Length: x"}, "HTTP/1.1 204 No Content"),
                      "invalid Content-Length");
  ExpectResponseError(Resp({"Content-Length: x"}), "invalid Content-Length", "HEAD");
}

TEST(HttpResponseTest, SyntaxErrorsAre502) {
  ExpectResponseError("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "bare LF in message head");
  ExpectResponseError(Resp({"X: a", " b"}), "obs-fold or whitespace before field name");
  ExpectResponseError(Resp({"Content-Length : 0"}), "whitespace before colon");
  ExpectResponseError(Resp({"X: \x01"}), "invalid header value");

  Limits limits;
  limits.max_headers = 1;
  ResponseParse r = ParseResp(Resp({"A: 1", "B: 2"}), "GET", limits);
  ASSERT_EQ(r.result, ParseResult::kError);
  EXPECT_EQ(r.error.status, 502);

  limits = Limits();
  limits.max_request_line = 16;
  r = ParseResp("HTTP/1.1 200 OK but too long", "GET", limits);
  ASSERT_EQ(r.result, ParseResult::kError);
  EXPECT_EQ(r.error.status, 502);

  limits = Limits();
  limits.max_header_bytes = 64;
  r = ParseResp("HTTP/1.1 200 OK\r\nX: " + std::string(64, 'a'), "GET", limits);
  ASSERT_EQ(r.result, ParseResult::kError);
  EXPECT_EQ(r.error.status, 502);
}

TEST(HttpResponseTest, NonHttpBytesAreRejectedEarly) {
  HeadParser parser;
  ResponseHead head;
  EXPECT_EQ(parser.ParseResponse("HTT", "GET", &head), ParseResult::kIncomplete);
  EXPECT_EQ(parser.ParseResponse("HTTP/1.1 2", "GET", &head), ParseResult::kIncomplete);
  parser.Reset();
  EXPECT_EQ(parser.ParseResponse("<html>", "GET", &head), ParseResult::kError);
  EXPECT_EQ(parser.error().status, 502);
}

TEST(HttpResponseTest, IncrementalAndHopByHop) {
  const std::string msg =
      "HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: t=1\r\n"
      "Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n";
  HeadParser parser;
  ResponseHead head;
  ParseResult result = ParseResult::kIncomplete;
  for (size_t n = 1; n <= msg.size(); ++n) {
    result = parser.ParseResponse(std::string_view(msg.data(), n), "GET", &head);
    if (n < msg.size()) {
      ASSERT_EQ(result, ParseResult::kIncomplete);
    }
  }
  ASSERT_EQ(result, ParseResult::kComplete);
  EXPECT_EQ(head.framing, BodyFraming::kChunked);
  ASSERT_EQ(head.headers.size(), 5u);
  for (const Header& h : head.headers) EXPECT_TRUE(h.hop_by_hop) << h.name;
}

// ------------------------------------------------------------------------------------------------
// BodyDecoder

TEST(BodyDecoderTest, NoBody) {
  BodyDecoder d;
  d.Start(BodyFraming::kNone, 0);
  EXPECT_TRUE(d.done());
  EXPECT_EQ(d.Consume("GET / HTTP/1.1"), 0u);
  d.Start(BodyFraming::kContentLength, 0);
  EXPECT_TRUE(d.done());
  EXPECT_EQ(d.framing(), BodyFraming::kContentLength);
  EXPECT_EQ(d.Consume("x"), 0u);
}

TEST(BodyDecoderTest, ContentLength) {
  BodyDecoder d;
  d.Start(BodyFraming::kContentLength, 10);
  EXPECT_EQ(d.remaining(), 10u);
  EXPECT_EQ(d.Consume("abcd"), 4u);
  EXPECT_FALSE(d.done());
  EXPECT_EQ(d.remaining(), 6u);
  EXPECT_EQ(d.Consume(""), 0u);
  EXPECT_EQ(d.Consume("efghijGET /"), 6u);
  EXPECT_TRUE(d.done());
  EXPECT_EQ(d.remaining(), 0u);
  EXPECT_EQ(d.Consume("more"), 0u);
}

TEST(BodyDecoderTest, HugeContentLength) {
  BodyDecoder d;
  d.Start(BodyFraming::kContentLength, 9223372036854775807ULL);
  EXPECT_EQ(d.Consume(std::string(1000, 'x')), 1000u);
  EXPECT_EQ(d.remaining(), 9223372036854775807ULL - 1000);
}

TEST(BodyDecoderTest, UntilClose) {
  BodyDecoder d;
  d.Start(BodyFraming::kUntilClose, 0);
  EXPECT_FALSE(d.done());
  EXPECT_EQ(d.Consume("anything at all\r\n0\r\n\r\n"), 22u);
  EXPECT_EQ(d.remaining(), 0u);
  d.FinishAtClose();
  EXPECT_TRUE(d.done());
  EXPECT_FALSE(d.failed());
}

TEST(BodyDecoderTest, CloseBeforeTheEndIsAnError) {
  BodyDecoder d;
  d.Start(BodyFraming::kContentLength, 5);
  EXPECT_EQ(d.Consume("ab"), 2u);
  d.FinishAtClose();
  EXPECT_TRUE(d.failed());
  d.Start(BodyFraming::kChunked, 0);
  EXPECT_EQ(d.Consume("5\r\nab"), 5u);
  d.FinishAtClose();
  EXPECT_TRUE(d.failed());
}

struct ChunkedRun {
  size_t consumed = 0;
  bool done = false;
  bool failed = false;
  std::string_view error;
};

ChunkedRun RunChunked(std::string_view data, size_t step = std::string_view::npos) {
  BodyDecoder d;
  d.Start(BodyFraming::kChunked, 0);
  ChunkedRun run;
  while (run.consumed < data.size()) {
    const std::string_view piece = data.substr(run.consumed, step);
    const size_t n = d.Consume(piece);
    EXPECT_LE(n, piece.size());
    run.consumed += n;
    if (n < piece.size()) {
      EXPECT_TRUE(d.done() || d.failed());
      break;
    }
    if (d.done() || d.failed()) break;
  }
  run.done = d.done();
  run.failed = d.failed();
  run.error = d.error();
  return run;
}

// Checks the body is valid, ends exactly where `body` ends, whatever the read sizes.
void ExpectValidChunked(const std::string& body) {
  const std::string stream = body + "GET / HTTP/1.1\r\n";
  for (size_t step : {size_t{1}, size_t{2}, size_t{3}, size_t{7}, std::string_view::npos}) {
    ChunkedRun run = RunChunked(stream, step);
    EXPECT_TRUE(run.done) << testing::PrintToString(body) << " step " << step << " " << run.error;
    EXPECT_EQ(run.consumed, body.size()) << testing::PrintToString(body) << " step " << step;
  }
}

void ExpectInvalidChunked(const std::string& body, std::string_view reason) {
  for (size_t step : {size_t{1}, size_t{4}, std::string_view::npos}) {
    ChunkedRun run = RunChunked(body, step);
    EXPECT_TRUE(run.failed) << testing::PrintToString(body) << " step " << step;
    EXPECT_EQ(run.error, reason) << testing::PrintToString(body);
  }
}

TEST(BodyDecoderTest, ValidChunkedBodies) {
  ExpectValidChunked("0\r\n\r\n");
  ExpectValidChunked("5\r\nhello\r\n0\r\n\r\n");
  ExpectValidChunked("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  ExpectValidChunked("A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n");
  ExpectValidChunked("0005\r\nhello\r\n000\r\n\r\n");
  ExpectValidChunked("000000000000000A\r\n0123456789\r\n0\r\n\r\n");
  ExpectValidChunked("3\r\n\r\n\r\r\n0\r\n\r\n");  // chunk data is opaque
}

TEST(BodyDecoderTest, ChunkExtensions) {
  for (std::string ext :
       {";a", ";a=b", ";a=b;c", " ; a = b", "\t;\ta\t=\tb", ";a=\"\"", ";a=\"q \\\"x\\\\ y\"",
        ";a=\"caf\xc3\xa9\"", ";a;b=c;d=\"e;f=g\"", "; a ; b", ";!#$%&'*+-.^_`|~=x"}) {
    std::string body = "5";
    body.append(ext).append("\r\nhello\r\n0").append(ext).append("\r\n\r\n");
    ExpectValidChunked(body);
  }
  for (std::string ext : {";", ";=b", ";a=", ";a=\"x", ";a=b c", ";a\x01", ";a=\"\x01\"",
                          ";a=\"\\\x01\"", "; ", ";a ", ";a=b ", " ", ";a=\"x\"y", ";a==b", ";a,b",
                          ";a=\"x\" ", ";a=b=c", ";a=\"x\"\"y\"", ";\x80"}) {
    ExpectInvalidChunked("5" + ext + "\r\nhello\r\n0\r\n\r\n", "invalid chunk extension");
  }
  ExpectInvalidChunked("5;a\nhello\r\n0\r\n\r\n", "bare LF in chunk");
}

TEST(BodyDecoderTest, ChunkExtensionLengthIsBounded) {
  ExpectValidChunked("1;a=" + std::string(4000, 'x') + "\r\nx\r\n0\r\n\r\n");
  ExpectInvalidChunked("1;a=" + std::string(5000, 'x') + "\r\nx\r\n0\r\n\r\n",
                       "chunk extension too long");
}

TEST(BodyDecoderTest, InvalidChunkSizes) {
  for (std::string size : {"", "-1", "+1", " 5", "0x5", "g", "5 5", "5\t", "00000000000000001",
                           "10000000000000000", "ffffffffffffffffff"}) {
    SCOPED_TRACE(size);
    ChunkedRun run = RunChunked(size + "\r\nhello\r\n0\r\n\r\n");
    EXPECT_TRUE(run.failed);
  }
  ExpectInvalidChunked("00000000000000001\r\nx\r\n0\r\n\r\n", "invalid chunk size");
  ExpectInvalidChunked("x\r\n", "invalid chunk size");
  ExpectInvalidChunked("\r\n", "invalid chunk size");
}

TEST(BodyDecoderTest, LargestChunkSize) {
  BodyDecoder d;
  d.Start(BodyFraming::kChunked, 0);
  EXPECT_EQ(d.Consume("ffffffffffffffff\r\nabc"), 21u);
  EXPECT_FALSE(d.done());
  EXPECT_FALSE(d.failed());
  EXPECT_EQ(d.remaining(), 0u);  // only meaningful for kContentLength
}

TEST(BodyDecoderTest, ChunkLineEndings) {
  ExpectInvalidChunked("5\nhello\r\n0\r\n\r\n", "invalid chunk size");
  ExpectInvalidChunked("5\rhello\r\n0\r\n\r\n", "bare CR in chunk size line");
  ExpectInvalidChunked("5\r\nhelloX\r\n0\r\n\r\n", "missing CRLF after chunk");
  ExpectInvalidChunked("5\r\nhello\n0\r\n\r\n", "missing CRLF after chunk");
  ExpectInvalidChunked("5\r\nhello\rX0\r\n\r\n", "missing CRLF after chunk");
  ExpectInvalidChunked("3\r\nhello\r\n0\r\n\r\n", "missing CRLF after chunk");
  ExpectInvalidChunked("0\r\n\n", "bare LF in trailer section");
  ExpectInvalidChunked("0\r\n\rX", "bare CR in trailer section");
  ExpectInvalidChunked("0\n\r\n", "invalid chunk size");
}

TEST(BodyDecoderTest, Trailers) {
  ExpectValidChunked("0\r\nExpires: never\r\n\r\n");
  ExpectValidChunked("5\r\nhello\r\n0\r\nA: 1\r\nB:\r\nC: x\ty \xe9\r\n\r\n");
  ExpectInvalidChunked("0\r\nA: 1\r\n continued\r\n\r\n", "obs-fold in trailer section");
  ExpectInvalidChunked("0\r\n\tA: 1\r\n\r\n", "obs-fold in trailer section");
  ExpectInvalidChunked("0\r\nA : 1\r\n\r\n", "invalid trailer field");
  ExpectInvalidChunked("0\r\nA\r\n\r\n", "invalid trailer field");
  ExpectInvalidChunked("0\r\n:1\r\n\r\n", "invalid trailer field");
  ExpectInvalidChunked("0\r\nA: \x01\r\n\r\n", "invalid trailer field");
  ExpectInvalidChunked("0\r\nA: 1\n\r\n", "bare LF in trailer section");
  ExpectInvalidChunked("0\r\nA: 1\rB: 2\r\n\r\n", "bare CR in trailer section");
}

TEST(BodyDecoderTest, TrailerSectionIsBounded) {
  std::string ok = "0\r\n";
  while (ok.size() + 200 < 3 + 16 * 1024) ok += "X: " + std::string(195, 'v') + "\r\n";
  ok += "\r\n";
  ExpectValidChunked(ok);
  std::string big = "0\r\n";
  for (int i = 0; i < 100; ++i) big += "X: " + std::string(195, 'v') + "\r\n";
  big += "\r\n";
  ExpectInvalidChunked(big, "trailer section too large");
}

TEST(BodyDecoderTest, StopsAtTheEndOfTheBody) {
  BodyDecoder d;
  d.Start(BodyFraming::kChunked, 0);
  const std::string stream = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
  EXPECT_EQ(d.Consume(stream), 13u);
  EXPECT_TRUE(d.done());
  EXPECT_EQ(d.Consume("GET"), 0u);
}

TEST(BodyDecoderTest, ErrorsAreSticky) {
  BodyDecoder d;
  d.Start(BodyFraming::kChunked, 0);
  EXPECT_EQ(d.Consume("5\r\nab"), 5u);
  EXPECT_EQ(d.Consume("cdeXX"), 3u);
  EXPECT_TRUE(d.failed());
  EXPECT_EQ(d.error(), "missing CRLF after chunk");
  EXPECT_EQ(d.Consume("\r\n0\r\n\r\n"), 0u);
  EXPECT_TRUE(d.failed());
  // Start begins afresh.
  d.Start(BodyFraming::kChunked, 0);
  EXPECT_FALSE(d.failed());
  EXPECT_EQ(d.error(), "");
  EXPECT_EQ(d.Consume("0\r\n\r\n"), 5u);
  EXPECT_TRUE(d.done());
}

// ------------------------------------------------------------------------------------------------

TEST(EqualsIgnoreCaseTest, AsciiOnly) {
  EXPECT_TRUE(EqualsIgnoreCase("Content-Length", "content-LENGTH"));
  EXPECT_TRUE(EqualsIgnoreCase("", ""));
  EXPECT_FALSE(EqualsIgnoreCase("Host", "Hos"));
  EXPECT_FALSE(EqualsIgnoreCase("Host", "Hosu"));
  EXPECT_FALSE(EqualsIgnoreCase("[", "{"));  // 0x5B / 0x7B
  EXPECT_FALSE(EqualsIgnoreCase("@", "`"));  // 0x40 / 0x60
  EXPECT_FALSE(EqualsIgnoreCase("\xc0", "\xe0"));
  EXPECT_FALSE(EqualsIgnoreCase("K", "\xe2\x84\xaa"));  // KELVIN SIGN
  EXPECT_TRUE(EqualsIgnoreCase("\xc0", "\xc0"));
}

}  // namespace
}  // namespace bluegreen::http
