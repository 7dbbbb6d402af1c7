#include "balancer/http_parser.h"

#include <cstring>

namespace halb::balancer::http {

namespace {

// RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
// "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
constexpr std::array<bool, 256> makeTchar() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr std::array<bool, 256> kTchar = makeTchar();

// Field values (RFC 9110 §5.5): VCHAR, obs-text, SP, HTAB. Excludes NUL, CR, LF, other
// controls and DEL.
constexpr std::array<bool, 256> makeValueChar() {
  std::array<bool, 256> t{};
  for (int c = 0x21; c <= 0x7e; ++c) t[c] = true;
  for (int c = 0x80; c <= 0xff; ++c) t[c] = true;
  t[' '] = true;
  t['\t'] = true;
  return t;
}
constexpr std::array<bool, 256> kValueChar = makeValueChar();

// request-target characters: visible ASCII only (RFC 9112 §3.2; no whitespace, no obs-text).
constexpr bool isTargetChar(unsigned char c) {
  return c > 0x20 && c < 0x7f;
}

inline char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
}

int hexValue(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

FieldId classify(std::string_view n) {
  switch (n.size()) {
    case 2:
      if (iequals(n, "te")) return FieldId::Te;
      break;
    case 4:
      if (iequals(n, "host")) return FieldId::Host;
      break;
    case 6:
      if (iequals(n, "expect")) return FieldId::Expect;
      if (iequals(n, "cookie")) return FieldId::Cookie;
      break;
    case 7:
      if (iequals(n, "upgrade")) return FieldId::Upgrade;
      if (iequals(n, "trailer")) return FieldId::Trailer;
      break;
    case 9:
      if (iequals(n, "forwarded")) return FieldId::Forwarded;
      break;
    case 10:
      if (iequals(n, "connection")) return FieldId::Connection;
      if (iequals(n, "keep-alive")) return FieldId::KeepAlive;
      if (iequals(n, "set-cookie")) return FieldId::SetCookie;
      break;
    case 14:
      if (iequals(n, "content-length")) return FieldId::ContentLength;
      break;
    case 15:
      if (iequals(n, "x-forwarded-for")) return FieldId::XForwardedFor;
      break;
    case 16:
      if (iequals(n, "proxy-connection")) return FieldId::ProxyConnection;
      break;
    case 17:
      if (iequals(n, "transfer-encoding")) return FieldId::TransferEncoding;
      if (iequals(n, "x-forwarded-proto")) return FieldId::XForwardedProto;
      break;
    default:
      break;
  }
  return FieldId::Other;
}

std::string_view trimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Calls fn(token) for each comma-separated element of a list field (RFC 9110 §5.6.1),
// skipping empty elements. Returns false if fn does.
template <class Fn>
bool forEachListElement(std::string_view v, Fn&& fn) {
  while (!v.empty()) {
    size_t comma = v.find(',');
    std::string_view el = trimOws(v.substr(0, comma));
    if (!el.empty() && !fn(el)) return false;
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
  return true;
}

// Field-value check, eight bytes at a time: a word is looked at byte by byte only when it
// holds a byte below 0x20 (HTAB is the one allowed) or a DEL. Values are most of a head's
// bytes, so this is the parser's inner loop.
bool validValue(const char* p, size_t n) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHigh = 0x8080808080808080ULL;
  size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    uint64_t x;
    std::memcpy(&x, p + k, 8);
    // Bytes < 0x20 (exact about whether any exists for bytes < 0x80; obs-text has the high
    // bit set and is masked out by ~x) and bytes == 0x7f.
    const uint64_t low = (x - kOnes * 0x20) & ~x & kHigh;
    const uint64_t y = x ^ (kOnes * 0x7f);
    const uint64_t del = (y - kOnes) & ~y & kHigh;
    if ((low | del) != 0) {
      for (size_t j = k; j < k + 8; ++j)
        if (!kValueChar[static_cast<unsigned char>(p[j])]) return false;
    }
  }
  for (; k < n; ++k)
    if (!kValueChar[static_cast<unsigned char>(p[k])]) return false;
  return true;
}

constexpr uint8_t kMaxLeadingEmptyLines = 4;
constexpr uint32_t kMaxChunkLine = 4096;      // size + extensions
constexpr uint32_t kMaxChunkSizeDigits = 15;  // < 2^60: no overflow, far above any real body

}  // namespace

bool isTchar(unsigned char c) {
  return kTchar[c];
}
bool isFieldVchar(unsigned char c) {
  return c != ' ' && c != '\t' && kValueChar[c];
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

const char* toString(ParseError e) {
  switch (e) {
    case ParseError::None:
      return "none";
    case ParseError::BadRequest:
      return "bad_request";
    case ParseError::UriTooLong:
      return "uri_too_long";
    case ParseError::HeadersTooLarge:
      return "headers_too_large";
    case ParseError::NotImplemented:
      return "not_implemented";
    case ParseError::VersionNotSupported:
      return "version_not_supported";
    case ParseError::BadMethod:
      return "bad_method";
  }
  return "?";
}

int statusFor(ParseError e) {
  switch (e) {
    case ParseError::None:
      return 200;
    case ParseError::BadRequest:
      return 400;
    case ParseError::UriTooLong:
      return 414;
    case ParseError::HeadersTooLarge:
      return 431;
    case ParseError::NotImplemented:
      return 501;
    case ParseError::VersionNotSupported:
      return 505;
    case ParseError::BadMethod:
      return 405;
  }
  return 400;
}

HeadParser::HeadParser(Kind kind, ParseLimits limits) : kind_(kind), limits_(limits) {
  fields_.reserve(32);
}

void HeadParser::reset() {
  status_ = ParseStatus::Incomplete;
  error_ = ParseError::None;
  detail_ = "";
  scanned_ = lineStart_ = headStart_ = fieldsStart_ = 0;
  headLength_ = 0;
  sawStartLine_ = false;
  leadingEmpty_ = 0;
  method_ = target_ = reason_ = startLine_ = Span{};
  versionMinor_ = 1;
  statusCode_ = 0;
  fields_.clear();
  hostIndex_ = -1;
  chunked_ = hasTransferEncoding_ = hasContentLength_ = false;
  contentLength_ = 0;
  connClose_ = connKeepAlive_ = connUpgrade_ = upgrade_ = expectContinue_ = false;
}

bool HeadParser::fail(ParseError e, const char* detail) {
  status_ = ParseStatus::Error;
  error_ = e;
  detail_ = detail;
  return false;
}

ParseStatus HeadParser::feed(std::string_view data) {
  if (status_ != ParseStatus::Incomplete) return status_;
  const char* base = data.data();
  const uint32_t size = static_cast<uint32_t>(std::min<size_t>(data.size(), UINT32_MAX / 2));
  while (scanned_ < size) {
    const void* lf = std::memchr(base + scanned_, '\n', size - scanned_);
    if (lf == nullptr) {
      // Bare CR is checked when the line completes; here only the limits.
      scanned_ = size;
      break;
    }
    uint32_t lfPos = static_cast<uint32_t>(static_cast<const char*>(lf) - base);
    scanned_ = lfPos + 1;
    // RFC 9112 §2.2: a bare LF as line terminator is refused (we never guess framing).
    if (lfPos == lineStart_ || base[lfPos - 1] != '\r') {
      fail(ParseError::BadRequest, "bare LF");
      return status_;
    }
    if (!onLine(base, lineStart_, lfPos - 1)) return status_;
    lineStart_ = lfPos + 1;
    if (status_ == ParseStatus::Complete) {
      headLength_ = lineStart_;
      return status_;
    }
  }
  // Limits on what is still incomplete.
  if (!sawStartLine_) {
    if (size - lineStart_ > limits_.requestLine + 2)
      fail(kind_ == Kind::Request ? ParseError::UriTooLong : ParseError::HeadersTooLarge,
           "start line too long");
  } else if (size - fieldsStart_ > limits_.headerBytes) {
    fail(ParseError::HeadersTooLarge, "header block too large");
  }
  return status_;
}

bool HeadParser::onLine(const char* base, uint32_t start, uint32_t end) {
  if (!sawStartLine_) {
    if (start == end) {
      // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the
      // request-line; a few are tolerated, more is noise.
      if (kind_ == Kind::Response || ++leadingEmpty_ > kMaxLeadingEmptyLines)
        return fail(ParseError::BadRequest, "empty start line");
      headStart_ = end + 2;
      return true;
    }
    if (end - start > limits_.requestLine)
      return fail(kind_ == Kind::Request ? ParseError::UriTooLong : ParseError::HeadersTooLarge,
                  "start line too long");
    sawStartLine_ = true;
    fieldsStart_ = end + 2;
    startLine_ = {start, end - start};
    return kind_ == Kind::Request ? parseRequestLine(base, start, end)
                                  : parseStatusLine(base, start, end);
  }
  if (end + 2 - fieldsStart_ > limits_.headerBytes)
    return fail(ParseError::HeadersTooLarge, "header block too large");
  if (start == end) {
    if (!finish(base)) return false;
    status_ = ParseStatus::Complete;
    return true;
  }
  return parseField(base, start, end);
}

bool HeadParser::parseRequestLine(const char* base, uint32_t start, uint32_t end) {
  // request-line = method SP request-target SP HTTP-version (RFC 9112 §3), exactly one SP.
  uint32_t i = start;
  while (i < end && kTchar[static_cast<unsigned char>(base[i])]) ++i;
  if (i == start || i >= end || base[i] != ' ') return fail(ParseError::BadRequest, "bad method");
  method_ = {start, i - start};
  uint32_t t = ++i;
  while (i < end && isTargetChar(static_cast<unsigned char>(base[i]))) ++i;
  if (i == t || i >= end || base[i] != ' ')
    return fail(ParseError::BadRequest, "bad request-target");
  target_ = {t, i - t};
  ++i;
  std::string_view version(base + i, end - i);
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
      version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
    return fail(ParseError::BadRequest, "bad version");
  if (version[5] != '1') return fail(ParseError::VersionNotSupported, "unsupported version");
  versionMinor_ = version[7] == '0' ? 0 : 1;  // HTTP/1.2+ is handled as 1.1 (RFC 9110 §2.5)
  std::string_view m(base + method_.off, method_.len);
  std::string_view target(base + target_.off, target_.len);
  if (m == "CONNECT") return fail(ParseError::BadMethod, "CONNECT is not supported");
  // origin-form, absolute-form, or asterisk-form for OPTIONS (RFC 9112 §3.2).
  if (target[0] != '/') {
    if (target == "*") {
      if (m != "OPTIONS") return fail(ParseError::BadRequest, "asterisk-form outside OPTIONS");
    } else if (!(target.size() > 7 &&
                 (iequals(target.substr(0, 7), "http://") ||
                  (target.size() > 8 && iequals(target.substr(0, 8), "https://"))))) {
      return fail(ParseError::BadRequest, "bad request-target form");
    }
  }
  return true;
}

bool HeadParser::parseStatusLine(const char* base, uint32_t start, uint32_t end) {
  // status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4)
  std::string_view line(base + start, end - start);
  if (line.size() < 12 || line.substr(0, 5) != "HTTP/" || line[5] != '1' || line[6] != '.' ||
      line[7] < '0' || line[7] > '9' || line[8] != ' ')
    return fail(ParseError::BadRequest, "bad status line");
  versionMinor_ = line[7] == '0' ? 0 : 1;
  int code = 0;
  for (int k = 9; k < 12; ++k) {
    if (line[k] < '0' || line[k] > '9') return fail(ParseError::BadRequest, "bad status code");
    code = code * 10 + (line[k] - '0');
  }
  if (code < 100) return fail(ParseError::BadRequest, "bad status code");
  statusCode_ = code;
  if (line.size() > 12) {
    if (line[12] != ' ') return fail(ParseError::BadRequest, "bad status line");
    for (size_t k = 13; k < line.size(); ++k)
      if (!kValueChar[static_cast<unsigned char>(line[k])])
        return fail(ParseError::BadRequest, "bad reason phrase");
    reason_ = {start + 13, static_cast<uint32_t>(line.size() - 13)};
  }
  return true;
}

bool HeadParser::parseField(const char* base, uint32_t start, uint32_t end) {
  // RFC 9112 §5.2: obs-fold in a request MUST be rejected (we reject it everywhere).
  if (base[start] == ' ' || base[start] == '\t') return fail(ParseError::BadRequest, "obs-fold");
  if (fields_.size() >= limits_.headerCount)
    return fail(ParseError::HeadersTooLarge, "too many header fields");
  uint32_t i = start;
  while (i < end && kTchar[static_cast<unsigned char>(base[i])]) ++i;
  // RFC 9112 §5.1: no whitespace between field name and colon — MUST reject with 400.
  if (i == start || i >= end || base[i] != ':')
    return fail(ParseError::BadRequest, "bad field name");
  Field f;
  f.name = {start, i - start};
  uint32_t v = i + 1;
  uint32_t ve = end;
  while (v < ve && (base[v] == ' ' || base[v] == '\t')) ++v;
  while (ve > v && (base[ve - 1] == ' ' || base[ve - 1] == '\t')) --ve;
  if (!validValue(base + v, ve - v))
    return fail(ParseError::BadRequest, "bad field value");  // NUL, bare CR, controls
  f.value = {v, ve - v};
  f.id = classify(std::string_view(base + f.name.off, f.name.len));
  fields_.push_back(f);
  return true;
}

bool HeadParser::finish(const char* base) {
  auto sv = [base](Span s) { return std::string_view(base + s.off, s.len); };
  std::array<std::string_view, 16> connectionListed;
  size_t nListed = 0;
  bool hasUpgradeField = false;
  for (size_t idx = 0; idx < fields_.size(); ++idx) {
    Field& f = fields_[idx];
    std::string_view value = sv(f.value);
    switch (f.id) {
      case FieldId::ContentLength: {
        // 1*DIGIT only (RFC 9110 §8.6); repeated fields must agree exactly.
        if (value.empty() || value.size() > 18)
          return fail(ParseError::BadRequest, "bad Content-Length");
        uint64_t n = 0;
        for (char c : value) {
          if (c < '0' || c > '9') return fail(ParseError::BadRequest, "bad Content-Length");
          n = n * 10 + static_cast<uint64_t>(c - '0');
        }
        if (hasContentLength_ && n != contentLength_)
          return fail(ParseError::BadRequest, "conflicting Content-Length");
        hasContentLength_ = true;
        contentLength_ = n;
        break;
      }
      case FieldId::TransferEncoding: {
        hasTransferEncoding_ = true;
        f.hopByHop = false;  // we forward the chunked framing unchanged
        bool ok = forEachListElement(value, [&](std::string_view coding) {
          if (chunked_) {
            // Nothing may follow chunked, and chunked may appear once (RFC 9112 §6.1).
            fail(ParseError::BadRequest, "coding after chunked");
            return false;
          }
          if (iequals(coding, "chunked")) {
            chunked_ = true;
            return true;
          }
          if (kind_ == Kind::Request) {
            fail(ParseError::NotImplemented, "unsupported transfer coding");
            return false;
          }
          return true;  // response: a coding we pass through; framing is then until close
        });
        if (!ok) return false;
        break;
      }
      case FieldId::Host:
        if (hostIndex_ >= 0) return fail(ParseError::BadRequest, "several Host fields");
        hostIndex_ = static_cast<int>(idx);
        break;
      case FieldId::Connection:
      case FieldId::ProxyConnection: {
        f.hopByHop = true;
        bool ok = forEachListElement(value, [&](std::string_view token) {
          if (iequals(token, "close")) {
            connClose_ = true;
          } else if (iequals(token, "keep-alive")) {
            connKeepAlive_ = true;
          } else if (iequals(token, "upgrade")) {
            connUpgrade_ = true;
          } else {
            if (nListed == connectionListed.size()) {
              fail(ParseError::BadRequest, "too many Connection options");
              return false;
            }
            connectionListed[nListed++] = token;
          }
          return true;
        });
        if (!ok) return false;
        break;
      }
      case FieldId::KeepAlive:
      case FieldId::Te:
        f.hopByHop = true;
        break;
      case FieldId::Upgrade:
        f.hopByHop = true;  // put back by the proxy when it tunnels
        hasUpgradeField = true;
        break;
      case FieldId::Expect:
        if (iequals(value, "100-continue")) expectContinue_ = true;
        break;
      default:
        break;
    }
  }
  if (hasTransferEncoding_) {
    // RFC 9112 §6.1: TE in HTTP/1.0 means the framing is faulty; TE with Content-Length is
    // the classic smuggling vector (§6.3 item 3 allows "remove CL", we refuse instead).
    if (versionMinor_ == 0) return fail(ParseError::BadRequest, "Transfer-Encoding in HTTP/1.0");
    if (hasContentLength_)
      return fail(ParseError::BadRequest, "Content-Length with Transfer-Encoding");
    if (kind_ == Kind::Request && !chunked_)
      return fail(ParseError::BadRequest, "chunked not final");
  }
  if (kind_ == Kind::Request) {
    if (versionMinor_ == 1 && hostIndex_ < 0) return fail(ParseError::BadRequest, "missing Host");
    if (hostIndex_ >= 0) {
      std::string_view host = sv(fields_[hostIndex_].value);
      for (char c : host)
        if (c == ' ' || c == '\t' || c == '/' || c == '@' || c == ',')
          return fail(ParseError::BadRequest, "bad Host");
    }
  }
  upgrade_ = connUpgrade_ && hasUpgradeField;
  if (nListed > 0) {
    for (Field& f : fields_) {
      if (f.hopByHop) continue;
      std::string_view name = sv(f.name);
      for (size_t k = 0; k < nListed; ++k) {
        if (iequals(name, connectionListed[k])) {
          // Framing fields cannot be made hop-by-hop (we forward the framing as is).
          if (f.id != FieldId::ContentLength && f.id != FieldId::TransferEncoding &&
              f.id != FieldId::Host)
            f.hopByHop = true;
          break;
        }
      }
    }
  }
  return true;
}

BodyKind HeadParser::requestBody() const {
  if (chunked_) return BodyKind::Chunked;
  if (hasContentLength_ && contentLength_ > 0) return BodyKind::Length;
  return BodyKind::None;
}

BodyKind HeadParser::responseBody(bool requestWasHead) const {
  // RFC 9112 §6.3 items 1-2 and 4-7.
  if (requestWasHead || statusCode_ < 200 || statusCode_ == 204 || statusCode_ == 304)
    return BodyKind::None;
  if (hasTransferEncoding_) return chunked_ ? BodyKind::Chunked : BodyKind::UntilClose;
  if (hasContentLength_) return contentLength_ > 0 ? BodyKind::Length : BodyKind::None;
  return BodyKind::UntilClose;
}

// ---------------------------------------------------------------------------------------

void ChunkedFramer::reset() {
  state_ = State::Size;
  remaining_ = payload_ = 0;
  sizeDigits_ = lineBytes_ = trailerBytes_ = 0;
  trailerColon_ = trailerNameChars_ = false;
}

ChunkedFramer::Step ChunkedFramer::feed(const char* p, size_t n) {
  Step st;
  size_t i = 0;
  auto error = [&]() {
    state_ = State::Error;
    st.error = true;
    st.consumed = i;
    return st;
  };
  if (state_ == State::Error) return error();
  while (i < n && state_ != State::Done) {
    if (state_ == State::Data) {
      uint64_t take = std::min<uint64_t>(remaining_, n - i);
      i += take;
      remaining_ -= take;
      payload_ += take;
      if (remaining_ == 0) state_ = State::DataCr;
      continue;
    }
    const unsigned char c = static_cast<unsigned char>(p[i++]);
    if (state_ <= State::SizeLf && ++lineBytes_ > kMaxChunkLine) return error();
    switch (state_) {
      case State::Size: {
        int h = hexValue(c);
        if (h >= 0) {
          // Leading zeros do not count towards the digit bound.
          if (remaining_ != 0 || h != 0) ++sizeDigits_;
          if (sizeDigits_ > kMaxChunkSizeDigits) return error();
          remaining_ = remaining_ * 16 + static_cast<uint64_t>(h);
          trailerNameChars_ = true;  // reused: "at least one digit seen"
          break;
        }
        if (!trailerNameChars_) return error();  // no digit
        if (c == ' ' || c == '\t')
          state_ = State::SizeWs;
        else if (c == ';')
          state_ = State::ExtSemi;
        else if (c == '\r')
          state_ = State::SizeLf;
        else
          return error();
        break;
      }
      case State::SizeWs:
        if (c == ' ' || c == '\t') break;
        if (c == ';')
          state_ = State::ExtSemi;
        else if (c == '\r')
          state_ = State::SizeLf;
        else
          return error();
        break;
      case State::ExtSemi:
        if (c == ' ' || c == '\t') break;
        if (!kTchar[c]) return error();
        state_ = State::ExtName;
        break;
      case State::ExtName:
        if (kTchar[c]) break;
        if (c == ' ' || c == '\t')
          state_ = State::ExtNameWs;
        else if (c == '=')
          state_ = State::ExtEq;
        else if (c == ';')
          state_ = State::ExtSemi;
        else if (c == '\r')
          state_ = State::SizeLf;
        else
          return error();
        break;
      case State::ExtNameWs:
        if (c == ' ' || c == '\t') break;
        if (c == '=')
          state_ = State::ExtEq;
        else if (c == ';')
          state_ = State::ExtSemi;
        else if (c == '\r')
          state_ = State::SizeLf;
        else
          return error();
        break;
      case State::ExtEq:
        if (c == ' ' || c == '\t') break;
        if (c == '"')
          state_ = State::ExtQuoted;
        else if (kTchar[c])
          state_ = State::ExtValue;
        else
          return error();
        break;
      case State::ExtValue:
        if (kTchar[c]) break;
        if (c == ' ' || c == '\t')
          state_ = State::ExtValueWs;
        else if (c == ';')
          state_ = State::ExtSemi;
        else if (c == '\r')
          state_ = State::SizeLf;
        else
          return error();
        break;
      case State::ExtQuoted:
        // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (RFC 9110 §5.6.4)
        if (c == '"')
          state_ = State::ExtValueWs;
        else if (c == '\\')
          state_ = State::ExtQuotedEsc;
        else if (!kValueChar[c])
          return error();
        break;
      case State::ExtQuotedEsc:
        if (!kValueChar[c]) return error();
        state_ = State::ExtQuoted;
        break;
      case State::ExtValueWs:
        if (c == ' ' || c == '\t') break;
        if (c == ';')
          state_ = State::ExtSemi;
        else if (c == '\r')
          state_ = State::SizeLf;
        else
          return error();
        break;
      case State::SizeLf:
        if (c != '\n') return error();
        lineBytes_ = 0;
        sizeDigits_ = 0;
        trailerNameChars_ = false;
        if (remaining_ == 0) {
          state_ = State::TrailerStart;
        } else {
          state_ = State::Data;
        }
        break;
      case State::DataCr:
        if (c != '\r') return error();
        state_ = State::DataLf;
        break;
      case State::DataLf:
        if (c != '\n') return error();
        state_ = State::Size;
        remaining_ = 0;
        break;
      case State::TrailerStart:
        if (++trailerBytes_ > maxTrailer_) return error();
        if (c == '\r') {
          state_ = State::FinalLf;
        } else if (kTchar[c]) {
          trailerColon_ = false;
          state_ = State::TrailerLine;
        } else {
          return error();  // obs-fold, bare LF, garbage
        }
        break;
      case State::TrailerLine:
        if (++trailerBytes_ > maxTrailer_) return error();
        if (!trailerColon_) {
          if (c == ':')
            trailerColon_ = true;
          else if (!kTchar[c])
            return error();
        } else if (c == '\r') {
          state_ = State::TrailerLf;
        } else if (!kValueChar[c]) {
          return error();
        }
        break;
      case State::TrailerLf:
        if (c != '\n') return error();
        state_ = State::TrailerStart;
        break;
      case State::FinalLf:
        if (c != '\n') return error();
        state_ = State::Done;
        break;
      default:
        return error();
    }
  }
  st.consumed = i;
  st.done = state_ == State::Done;
  return st;
}

}  // namespace halb::balancer::http
