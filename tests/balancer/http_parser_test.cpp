#include "balancer/http_parser.h"

#include <gtest/gtest.h>

#include <string>

namespace halb::balancer::http {
namespace {

ParseLimits smallLimits() {
  return ParseLimits{.requestLine = 64, .headerBytes = 256, .headerCount = 8};
}

HeadParser parseRequest(std::string_view text, ParseLimits limits = ParseLimits{}) {
  HeadParser p(HeadParser::Kind::Request, limits);
  p.feed(text);
  return p;
}

ParseError requestError(std::string_view text, ParseLimits limits = ParseLimits{}) {
  HeadParser p = parseRequest(text, limits);
  EXPECT_EQ(p.status(), ParseStatus::Error) << text;
  return p.error();
}

TEST(HttpParser, SimpleGet) {
  std::string t = "GET /a/b?x=1 HTTP/1.1\r\nHost: Example.com:8080\r\nUser-Agent: t\r\n\r\nNEXT";
  HeadParser p = parseRequest(t);
  ASSERT_EQ(p.status(), ParseStatus::Complete);
  EXPECT_EQ(p.headLength(), t.size() - 4);
  EXPECT_EQ(p.view(t, p.method()), "GET");
  EXPECT_EQ(p.view(t, p.target()), "/a/b?x=1");
  EXPECT_EQ(p.versionMinor(), 1);
  ASSERT_EQ(p.fields().size(), 2u);
  EXPECT_EQ(p.view(t, p.fields()[0].name), "Host");
  EXPECT_EQ(p.view(t, p.fields()[0].value), "Example.com:8080");
  EXPECT_EQ(p.hostIndex(), 0);
  EXPECT_TRUE(p.keepAlive());
  EXPECT_EQ(p.requestBody(), BodyKind::None);
  EXPECT_EQ(p.view(t, p.startLine()), "GET /a/b?x=1 HTTP/1.1");
}

TEST(HttpParser, ByteByByteEqualsOneShot) {
  std::string t =
      "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: keep-alive, X-Foo\r\n"
      "X-Foo: 1\r\n\r\nhello";
  HeadParser p(HeadParser::Kind::Request, ParseLimits{});
  for (size_t i = 1; i <= t.size(); ++i) {
    ParseStatus st = p.feed(std::string_view(t).substr(0, i));
    if (st != ParseStatus::Incomplete) {
      ASSERT_EQ(st, ParseStatus::Complete);
      EXPECT_EQ(i, t.size() - 5);
      break;
    }
  }
  ASSERT_EQ(p.status(), ParseStatus::Complete);
  EXPECT_EQ(p.requestBody(), BodyKind::Length);
  EXPECT_EQ(p.contentLength(), 5u);
  // Connection and the field it names are hop-by-hop.
  EXPECT_TRUE(p.fields()[2].hopByHop);
  EXPECT_TRUE(p.fields()[3].hopByHop);
  EXPECT_FALSE(p.fields()[1].hopByHop);
}

TEST(HttpParser, ResetReusesParser) {
  HeadParser p(HeadParser::Kind::Request, ParseLimits{});
  ASSERT_EQ(p.feed("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), ParseStatus::Complete);
  p.reset();
  ASSERT_EQ(p.feed("GET /x HTTP/1.0\r\n\r\n"), ParseStatus::Complete);
  EXPECT_EQ(p.versionMinor(), 0);
  EXPECT_FALSE(p.keepAlive());  // HTTP/1.0 without keep-alive
}

TEST(HttpParser, LeadingEmptyLinesTolerated) {
  std::string t = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
  HeadParser p = parseRequest(t);
  ASSERT_EQ(p.status(), ParseStatus::Complete);
  EXPECT_EQ(p.view(t, p.method()), "GET");
  EXPECT_EQ(p.headLength(), t.size());
}

TEST(HttpParser, Http10KeepAlive) {
  HeadParser p = parseRequest("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
  ASSERT_EQ(p.status(), ParseStatus::Complete);
  EXPECT_TRUE(p.keepAlive());
}

TEST(HttpParser, ConnectionClose) {
  HeadParser p = parseRequest("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  ASSERT_EQ(p.status(), ParseStatus::Complete);
  EXPECT_FALSE(p.keepAlive());
}

TEST(HttpParser, Upgrade) {
  std::string t =
      "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Key: x\r\n\r\n";
  HeadParser p = parseRequest(t);
  ASSERT_EQ(p.status(), ParseStatus::Complete);
  EXPECT_TRUE(p.upgrade());
  HeadParser q = parseRequest("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
  EXPECT_FALSE(q.upgrade());  // Upgrade without Connection: upgrade is not an upgrade
}

TEST(HttpParser, ExpectContinue) {
  HeadParser p = parseRequest(
      "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
  ASSERT_EQ(p.status(), ParseStatus::Complete);
  EXPECT_TRUE(p.expectContinue());
}

TEST(HttpParser, ChunkedRequest) {
  HeadParser p = parseRequest("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
  ASSERT_EQ(p.status(), ParseStatus::Complete);
  EXPECT_EQ(p.requestBody(), BodyKind::Chunked);
}

// --- smuggling vectors: each one is refused ---

TEST(HttpParserSmuggling, ContentLengthWithTransferEncoding) {
  EXPECT_EQ(
      requestError(
          "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"),
      ParseError::BadRequest);
  EXPECT_EQ(
      requestError(
          "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"),
      ParseError::BadRequest);
}

TEST(HttpParserSmuggling, ConflictingContentLength) {
  EXPECT_EQ(
      requestError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"),
      ParseError::BadRequest);
  // Identical repeats carry no ambiguity (RFC 9110 §8.6).
  HeadParser p =
      parseRequest("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n");
  EXPECT_EQ(p.status(), ParseStatus::Complete);
}

TEST(HttpParserSmuggling, InvalidContentLength) {
  for (const char* v :
       {"", "+4", "-1", "4 4", "4,4", "0x10", "1e3", "99999999999999999999", " 4a"}) {
    std::string t = std::string("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ") + v + "\r\n\r\n";
    EXPECT_EQ(requestError(t), ParseError::BadRequest) << v;
  }
}

TEST(HttpParserSmuggling, TransferEncodingVariants) {
  auto te = [](const char* v) {
    return std::string("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ") + v + "\r\n\r\n";
  };
  EXPECT_EQ(requestError(te("chunked, chunked")), ParseError::BadRequest);
  EXPECT_EQ(requestError(te("chunked, gzip")), ParseError::BadRequest);
  EXPECT_EQ(requestError(te("gzip")), ParseError::NotImplemented);
  EXPECT_EQ(requestError(te("gzip, chunked")), ParseError::NotImplemented);
  EXPECT_EQ(requestError(te("xchunked")), ParseError::NotImplemented);
  EXPECT_EQ(requestError(te("chunked\x0b")), ParseError::BadRequest);  // VT is a control
  // Two fields are one list: "chunked" then "chunked" again.
  EXPECT_EQ(requestError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n"),
            ParseError::BadRequest);
  // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
  EXPECT_EQ(requestError("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ParseError::BadRequest);
}

TEST(HttpParserSmuggling, BareLfAndCr) {
  EXPECT_EQ(requestError("GET / HTTP/1.1\nHost: a\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\n\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nX: a\rb\r\nHost: a\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::BadRequest);
}

TEST(HttpParserSmuggling, ObsFold) {
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n"),
            ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n"),
            ParseError::BadRequest);
}

TEST(HttpParserSmuggling, InvalidFieldNames) {
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"),
            ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nno-colon\r\n\r\n"), ParseError::BadRequest);
}

TEST(HttpParserSmuggling, NulAndControls) {
  EXPECT_EQ(requestError(std::string("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 34)),
            ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError(std::string("GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n", 28)),
            ParseError::BadRequest);
}

TEST(HttpParserSmuggling, ControlAtEveryPositionOfALongValue) {
  // The value check works eight bytes at a time: a bad byte must be caught wherever it sits.
  const std::string good = "abc\tdef ghi\x80\xff-0123456789-ABCDEFGHIJ";  // HTAB, obs-text ok
  HeadParser ok = parseRequest("GET / HTTP/1.1\r\nHost: a\r\nX: " + good + "\r\n\r\n");
  ASSERT_EQ(ok.status(), ParseStatus::Complete);
  for (char bad : {'\0', '\x01', '\x1f', '\x7f', '\r'}) {
    for (size_t pos = 0; pos < good.size(); ++pos) {
      std::string v = good;
      v[pos] = bad;
      if (pos == 0 && bad == '\r') continue;  // would end the line early: a different error
      EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nX: z" + v + "\r\n\r\n"), ParseError::BadRequest)
          << "byte " << int(bad) << " at " << pos;
    }
  }
}

TEST(HttpParserSmuggling, HostRules) {
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nX: a\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n"), ParseError::BadRequest);
}

TEST(HttpParserSmuggling, RequestLineShape) {
  EXPECT_EQ(requestError("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / http/1.1\r\nHost: a\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/1.1x\r\nHost: a\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("G@T / HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET x HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::BadRequest);
  EXPECT_EQ(requestError("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), ParseError::VersionNotSupported);
  EXPECT_EQ(requestError("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::BadMethod);
  EXPECT_EQ(requestError("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ParseError::BadRequest);
  HeadParser p = parseRequest("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(p.status(), ParseStatus::Complete);
  HeadParser q = parseRequest("GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n");
  EXPECT_EQ(q.status(), ParseStatus::Complete);
}

TEST(HttpParserSmuggling, ConnectionCannotStripFraming) {
  std::string t =
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: content-length\r\n\r\n";
  HeadParser p = parseRequest(t);
  ASSERT_EQ(p.status(), ParseStatus::Complete);
  EXPECT_FALSE(p.fields()[1].hopByHop);
}

// --- limits ---

TEST(HttpParserLimits, RequestLineTooLong) {
  std::string t = "GET /" + std::string(100, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n";
  EXPECT_EQ(requestError(t, smallLimits()), ParseError::UriTooLong);
  // Detected before the line ends, too.
  EXPECT_EQ(requestError("GET /" + std::string(100, 'a'), smallLimits()), ParseError::UriTooLong);
}

TEST(HttpParserLimits, HeaderBlockTooLarge) {
  std::string t = "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(300, 'b') + "\r\n\r\n";
  EXPECT_EQ(requestError(t, smallLimits()), ParseError::HeadersTooLarge);
  EXPECT_EQ(requestError("GET / HTTP/1.1\r\nX: " + std::string(300, 'b'), smallLimits()),
            ParseError::HeadersTooLarge);
}

TEST(HttpParserLimits, TooManyFields) {
  std::string t = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 8; ++i) t += "X" + std::to_string(i) + ": v\r\n";
  t += "\r\n";
  EXPECT_EQ(requestError(t, smallLimits()), ParseError::HeadersTooLarge);
}

TEST(HttpParserLimits, StatusCodes) {
  EXPECT_EQ(statusFor(ParseError::BadRequest), 400);
  EXPECT_EQ(statusFor(ParseError::UriTooLong), 414);
  EXPECT_EQ(statusFor(ParseError::HeadersTooLarge), 431);
  EXPECT_EQ(statusFor(ParseError::NotImplemented), 501);
  EXPECT_EQ(statusFor(ParseError::VersionNotSupported), 505);
}

// --- responses ---

HeadParser parseResponse(std::string_view t) {
  HeadParser p(HeadParser::Kind::Response, ParseLimits{});
  p.feed(t);
  return p;
}

TEST(HttpParserResponse, StatusAndBodies) {
  std::string t = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n";
  HeadParser p = parseResponse(t);
  ASSERT_EQ(p.status(), ParseStatus::Complete);
  EXPECT_EQ(p.statusCode(), 200);
  EXPECT_EQ(p.view(t, p.reason()), "OK");
  EXPECT_EQ(p.responseBody(false), BodyKind::Length);
  EXPECT_EQ(p.responseBody(true), BodyKind::None);  // HEAD
  EXPECT_EQ(parseResponse("HTTP/1.1 204 No Content\r\n\r\n").responseBody(false), BodyKind::None);
  EXPECT_EQ(
      parseResponse("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n").responseBody(false),
      BodyKind::None);
  EXPECT_EQ(parseResponse("HTTP/1.1 200 OK\r\n\r\n").responseBody(false), BodyKind::UntilClose);
  EXPECT_EQ(
      parseResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").responseBody(false),
      BodyKind::Chunked);
  EXPECT_EQ(parseResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").responseBody(false),
            BodyKind::UntilClose);
  EXPECT_EQ(parseResponse("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").responseBody(false),
            BodyKind::None);
  EXPECT_EQ(parseResponse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").keepAlive(), false);
}

TEST(HttpParserResponse, Invalid) {
  for (const char* t :
       {"HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 abc OK\r\n\r\n", "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\nX: y\r\n\r\n", "\r\nHTTP/1.1 200 OK\r\n\r\n"}) {
    EXPECT_EQ(parseResponse(t).status(), ParseStatus::Error) << t;
  }
}

// --- chunked framing ---

ChunkedFramer::Step frame(std::string_view body, ChunkedFramer& f) {
  return f.feed(body.data(), body.size());
}

TEST(ChunkedFramer, ValidBodies) {
  struct Case {
    std::string body;
    uint64_t payload;
  };
  for (const Case& c : std::vector<Case>{
           {"5\r\nhello\r\n0\r\n\r\n", 5},
           {"5;name=val\r\nhello\r\n0\r\n\r\n", 5},
           {"5 ; a = \"q\\\"x\" ; b\r\nhello\r\n0\r\n\r\n", 5},
           {"000A\r\n0123456789\r\n0\r\n\r\n", 10},
           {"1\r\na\r\n2\r\nbc\r\n0\r\nX-Trailer: yes\r\nY: z\r\n\r\n", 3},
           {"0\r\n\r\n", 0},
       }) {
    ChunkedFramer f;
    auto st = frame(c.body + "NEXT", f);
    EXPECT_FALSE(st.error) << c.body;
    EXPECT_TRUE(st.done) << c.body;
    EXPECT_EQ(st.consumed, c.body.size()) << c.body;
    EXPECT_EQ(f.payloadBytes(), c.payload);
    // Same result one byte at a time.
    ChunkedFramer g;
    size_t total = 0;
    for (char ch : c.body) {
      auto s = g.feed(&ch, 1);
      ASSERT_FALSE(s.error) << c.body;
      total += s.consumed;
    }
    EXPECT_TRUE(g.done());
    EXPECT_EQ(total, c.body.size());
  }
}

TEST(ChunkedFramer, InvalidBodies) {
  for (const char* b : {
           "\r\nhello\r\n0\r\n\r\n",     // no size
           "g\r\n",                      // not hex
           "-5\r\n",                     // sign
           "0x5\r\nhello\r\n0\r\n\r\n",  // prefix
           "5\nhello\r\n0\r\n\r\n",      // bare LF after size
           "5\rhello\r\n",               // bare CR
           "5\r\nhelloX\r\n",            // data longer than size
           "5\r\nhello\n0\r\n\r\n",      // bare LF after data
           "5;\r\nhello\r\n",            // empty extension name
           "5;a=\r\nhello\r\n",          // empty extension value
           "5;a=\"x\r\nhello\r\n",       // CR in quoted string
           "5;a\nb\r\n",                 // LF in extension
           "5;a=b c\r\n",                // garbage after value
           "1000000000000000000\r\n",    // size overflow
           "0\r\nX : y\r\n\r\n",         // bad trailer name
           "0\r\n y\r\n\r\n",            // obs-fold in trailers
           "0\r\nX: \x01\r\n\r\n",       // control in trailer value
           "0\r\n\n",                    // bare LF at the end
       }) {
    ChunkedFramer f;
    auto st = frame(b, f);
    EXPECT_TRUE(st.error) << b;
  }
}

TEST(ChunkedFramer, ExtensionLineBounded) {
  ChunkedFramer f;
  std::string b = "5;" + std::string(5000, 'a') + "\r\n";
  EXPECT_TRUE(frame(b, f).error);
}

TEST(ChunkedFramer, TrailerBounded) {
  ChunkedFramer f(64);
  std::string b = "0\r\nX: " + std::string(100, 'a') + "\r\n\r\n";
  EXPECT_TRUE(frame(b, f).error);
}

TEST(ChunkedFramer, LargeChunkSkipsData) {
  ChunkedFramer f;
  std::string body = "100000\r\n";  // 1 MiB
  auto st = frame(body, f);
  EXPECT_EQ(st.consumed, body.size());
  std::string data(1 << 20, 'x');
  st = frame(data, f);
  EXPECT_EQ(st.consumed, data.size());
  EXPECT_FALSE(st.done);
  st = frame("\r\n0\r\n\r\n", f);
  EXPECT_TRUE(st.done);
  EXPECT_EQ(f.payloadBytes(), 1u << 20);
}

}  // namespace
}  // namespace halb::balancer::http
