// The strict HTTP/1.1 head parser and chunked framer on arbitrary bytes: never a crash, a
// hang or an out-of-bounds view; feeding in pieces must give the same verdict as feeding the
// whole input at once (the parser is incremental), and every span of a complete head must
// lie inside it.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "balancer/http_parser.h"

using namespace halb::balancer::http;

namespace {

void checkHead(const HeadParser& p, std::string_view data) {
  if (p.status() != ParseStatus::Complete) return;
  if (p.headLength() > data.size()) __builtin_trap();
  auto inside = [&](Span s) {
    if (static_cast<size_t>(s.off) + s.len > p.headLength()) __builtin_trap();
  };
  inside(p.startLine());
  inside(p.method());
  inside(p.target());
  for (const Field& f : p.fields()) {
    inside(f.name);
    inside(f.value);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const bool response = data[0] & 1;
  const size_t step = 1 + data[1] % 17;  // piece size for the incremental run
  std::string_view in(reinterpret_cast<const char*>(data + 2), size - 2);
  ParseLimits limits{.requestLine = 512, .headerBytes = 2048, .headerCount = 16};
  auto kind = response ? HeadParser::Kind::Response : HeadParser::Kind::Request;

  HeadParser whole(kind, limits);
  whole.feed(in);
  checkHead(whole, in);

  HeadParser pieces(kind, limits);
  for (size_t n = std::min(step, in.size());; n = std::min(n + step, in.size())) {
    if (pieces.feed(in.substr(0, n)) != ParseStatus::Incomplete || n == in.size()) break;
  }
  checkHead(pieces, in);
  // Same verdict either way (the kind of error may differ: a limit can trip before a later
  // syntax error is reached, or the other way round).
  if (whole.status() != pieces.status()) __builtin_trap();
  if (whole.status() == ParseStatus::Complete && whole.headLength() != pieces.headLength())
    __builtin_trap();

  // The body framer on what follows the head (or the whole input).
  size_t bodyStart = whole.status() == ParseStatus::Complete ? whole.headLength() : 0;
  std::string_view body = in.substr(bodyStart);
  ChunkedFramer a(256), b(256);
  auto sa = a.feed(body.data(), body.size());
  if (sa.consumed > body.size()) __builtin_trap();
  size_t consumed = 0;
  bool err = false, done = false;
  for (size_t off = 0; off < body.size() && !err && !done; off += step) {
    size_t n = std::min(step, body.size() - off);
    auto sb = b.feed(body.data() + off, n);
    consumed += sb.consumed;
    err = sb.error;
    done = sb.done;
    if (sb.consumed < n && !sb.error && !sb.done) __builtin_trap();
  }
  if (sa.error != err || sa.done != done) __builtin_trap();
  if (!sa.error && sa.consumed != consumed) __builtin_trap();
  return 0;
}
