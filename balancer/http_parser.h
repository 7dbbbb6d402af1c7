#pragma once
// A strict, incremental HTTP/1.1 message-head parser and chunked-body framer (RFC 9112).
//
// Zero-copy: results are offsets into the caller's buffer (relative to where the head
// starts), so the caller may move the bytes (compact its buffer) between calls; views are
// materialised against the current base with `view()`. The parser only examines bytes it
// has not seen before, so feeding a head one byte at a time costs O(n) overall.
//
// Strictness is the point: everything that two HTTP implementations could frame differently
// (request smuggling, RFC 9112 §11.2) is an error, not a guess — bare CR or LF, obs-fold,
// whitespace before the colon, NUL and other controls, Content-Length together with
// Transfer-Encoding, conflicting or malformed lengths, unknown transfer codings, malformed
// chunk sizes and extensions. Pure logic: no I/O, no clock.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace halb::balancer::http {

enum class ParseStatus : uint8_t { Incomplete, Complete, Error };

// Why a message was refused; each maps to the status code the proxy answers with.
enum class ParseError : uint8_t {
  None,
  BadRequest,           // 400: malformed or ambiguous framing
  UriTooLong,           // 414: request line over the limit
  HeadersTooLarge,      // 431: header block or field count over the limit
  NotImplemented,       // 501: transfer coding other than chunked
  VersionNotSupported,  // 505
  BadMethod,            // 405 (CONNECT: halb is not a forward proxy)
};
const char* toString(ParseError e);
int statusFor(ParseError e);

// [off, off+len) relative to the start of the head.
struct Span {
  uint32_t off = 0;
  uint32_t len = 0;
  bool empty() const { return len == 0; }
};

// Headers the proxy treats specially; everything else is Other.
enum class FieldId : uint8_t {
  Other,
  ContentLength,
  TransferEncoding,
  Host,
  Connection,
  KeepAlive,
  ProxyConnection,
  Te,
  Upgrade,
  Expect,
  Trailer,
  XForwardedFor,
  XForwardedProto,
  Forwarded,
  Cookie,
  SetCookie,
};

struct Field {
  Span name;
  Span value;  // without surrounding whitespace
  FieldId id = FieldId::Other;
  bool hopByHop = false;  // remove when forwarding (RFC 9110 §7.6.1), incl. Connection-listed
};

struct ParseLimits {
  uint32_t requestLine = 8 * 1024;
  uint32_t headerBytes = 32 * 1024;
  uint32_t headerCount = 100;
};

enum class BodyKind : uint8_t { None, Length, Chunked, UntilClose };

class HeadParser {
 public:
  enum class Kind : uint8_t { Request, Response };

  HeadParser(Kind kind, ParseLimits limits);

  // Starts a new message; keeps allocated capacity.
  void reset();

  // `data` starts at the beginning of the head and holds everything received so far (a
  // prefix of it was seen by earlier calls, which must not have changed). Only new bytes
  // are scanned.
  ParseStatus feed(std::string_view data);

  ParseStatus status() const { return status_; }
  ParseError error() const { return error_; }
  const char* errorDetail() const { return detail_; }
  // Bytes of the whole head, including leading empty lines and the final CRLF.
  size_t headLength() const { return headLength_; }

  // --- results, valid once Complete ---
  std::string_view view(std::string_view base, Span s) const { return base.substr(s.off, s.len); }
  Span method() const { return method_; }
  // The start line's span (request-line or status-line, without CRLF).
  Span startLine() const { return startLine_; }
  Span target() const { return target_; }
  Span reason() const { return reason_; }
  int versionMinor() const { return versionMinor_; }  // 0 or 1
  int statusCode() const { return statusCode_; }
  const std::vector<Field>& fields() const { return fields_; }
  // Index into fields() of the (single) Host field, or -1.
  int hostIndex() const { return hostIndex_; }

  bool chunked() const { return chunked_; }
  bool hasContentLength() const { return hasContentLength_; }
  uint64_t contentLength() const { return contentLength_; }
  bool connectionClose() const { return connClose_; }
  bool connectionKeepAlive() const { return connKeepAlive_; }
  // Keep-alive as the sender intends it (RFC 9112 §9.3).
  bool keepAlive() const {
    return versionMinor_ == 1 ? !connClose_ : (connKeepAlive_ && !connClose_);
  }
  // Connection: upgrade together with an Upgrade field.
  bool upgrade() const { return upgrade_; }
  bool expectContinue() const { return expectContinue_; }
  bool methodIs(std::string_view base, std::string_view m) const {
    return view(base, method_) == m;
  }

  // Request body framing (RFC 9112 §6.3): chunked, Content-Length or none.
  BodyKind requestBody() const;
  // Response body framing, given the request method was HEAD or not.
  BodyKind responseBody(bool requestWasHead) const;

 private:
  bool fail(ParseError e, const char* detail);
  bool onLine(const char* base, uint32_t start, uint32_t end);
  bool parseRequestLine(const char* base, uint32_t start, uint32_t end);
  bool parseStatusLine(const char* base, uint32_t start, uint32_t end);
  bool parseField(const char* base, uint32_t start, uint32_t end);
  bool finish(const char* base);

  Kind kind_;
  ParseLimits limits_;
  ParseStatus status_ = ParseStatus::Incomplete;
  ParseError error_ = ParseError::None;
  const char* detail_ = "";
  uint32_t scanned_ = 0;    // bytes examined so far
  uint32_t lineStart_ = 0;  // start of the line being received
  uint32_t headStart_ = 0;  // after leading empty lines
  uint32_t fieldsStart_ = 0;
  size_t headLength_ = 0;
  bool sawStartLine_ = false;
  uint8_t leadingEmpty_ = 0;

  Span method_, target_, reason_, startLine_;
  int versionMinor_ = 1;
  int statusCode_ = 0;
  std::vector<Field> fields_;
  int hostIndex_ = -1;
  bool chunked_ = false;
  bool hasTransferEncoding_ = false;
  bool hasContentLength_ = false;
  uint64_t contentLength_ = 0;
  bool connClose_ = false;
  bool connKeepAlive_ = false;
  bool connUpgrade_ = false;
  bool upgrade_ = false;
  bool expectContinue_ = false;
};

// Frames a chunked body (RFC 9112 §7.1) without decoding it: the proxy forwards the raw
// bytes it consumed, and learns where the message ends. Validates sizes, extensions and
// trailer fields as strictly as the head parser.
class ChunkedFramer {
 public:
  explicit ChunkedFramer(uint32_t maxTrailerBytes = 32 * 1024) : maxTrailer_(maxTrailerBytes) {}
  void reset();

  struct Step {
    size_t consumed = 0;  // bytes of input that belong to this message
    bool done = false;    // the last chunk and trailer section ended within them
    bool error = false;
  };
  // Consumes as much of [p, p+n) as belongs to the body.
  Step feed(const char* p, size_t n);
  bool done() const { return state_ == State::Done; }
  // Payload bytes seen (without framing).
  uint64_t payloadBytes() const { return payload_; }

 private:
  enum class State : uint8_t {
    Size,     // hex digits
    SizeWs,   // BWS after the size
    ExtSemi,  // BWS after ';'
    ExtName,
    ExtNameWs,     // BWS after a name
    ExtEq,         // BWS after '='
    ExtValue,      // token
    ExtQuoted,     // inside quoted-string
    ExtQuotedEsc,  // after backslash
    ExtValueWs,    // BWS after a value
    SizeLf,        // after CR of the size line
    Data,
    DataCr,
    DataLf,
    TrailerStart,  // start of a trailer line (or the final CRLF)
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
    Error,
  };
  State state_ = State::Size;
  uint64_t remaining_ = 0;
  uint64_t payload_ = 0;
  uint32_t sizeDigits_ = 0;
  uint32_t lineBytes_ = 0;  // size-line length, to bound extensions
  uint32_t trailerBytes_ = 0;
  uint32_t maxTrailer_;
  bool trailerColon_ = false;
  bool trailerNameChars_ = false;
};

// Character classes of RFC 9110 §5.6.2 / §5.5.
bool isTchar(unsigned char c);
bool isFieldVchar(unsigned char c);  // VCHAR or obs-text
bool iequals(std::string_view a, std::string_view b);

}  // namespace halb::balancer::http
