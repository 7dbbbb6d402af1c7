#include "balancer/sticky_cookie.h"

#include <array>
#include <cstring>

#include "common/crypto.h"

namespace halb::balancer {
namespace {

constexpr std::string_view kTagLabel = "halb-sticky-v1";
constexpr std::string_view kKeyLabel = "halb sticky cookie key v1";
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
constexpr size_t kRawBytes = 8 + StickyCookie::kTagBytes;

void putBe64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
uint64_t getBe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

std::array<uint8_t, StickyCookie::kTagBytes> tag(std::span<const uint8_t> key, uint64_t backendId,
                                                 uint64_t serverId) {
  std::array<uint8_t, 16> ids;
  putBe64(ids.data(), backendId);
  putBe64(ids.data() + 8, serverId);
  auto label = std::span(reinterpret_cast<const uint8_t*>(kTagLabel.data()), kTagLabel.size());
  Sha256Digest d = hmacSha256(key, {label, ids});
  std::array<uint8_t, StickyCookie::kTagBytes> t;
  std::memcpy(t.data(), d.data(), t.size());
  return t;
}

int decode6(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

}  // namespace

const char* toString(CookieVerdict v) {
  switch (v) {
    case CookieVerdict::Ok:
      return "ok";
    case CookieVerdict::Absent:
      return "absent";
    case CookieVerdict::Malformed:
      return "malformed";
    case CookieVerdict::BadTag:
      return "bad_tag";
    case CookieVerdict::UnknownServer:
      return "unknown_server";
    case CookieVerdict::Unavailable:
      return "unavailable";
  }
  return "?";
}

StickyCookie::StickyCookie(std::vector<std::vector<uint8_t>> keys) : keys_(std::move(keys)) {}

std::string StickyCookie::encode(uint64_t backendId, uint64_t serverId) const {
  std::array<uint8_t, kRawBytes> raw{};
  putBe64(raw.data(), serverId);
  if (!keys_.empty()) {
    auto t = tag(keys_[0], backendId, serverId);
    std::memcpy(raw.data() + 8, t.data(), t.size());
  }
  std::string out;
  out.reserve(kValueChars);
  uint32_t acc = 0;
  int bits = 0;
  for (uint8_t b : raw) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 63]);
  return out;
}

CookieVerdict StickyCookie::decode(uint64_t backendId, std::string_view value,
                                   uint64_t& serverId) const {
  if (value.size() != kValueChars) return CookieVerdict::Malformed;
  std::array<uint8_t, kRawBytes> raw{};
  uint32_t acc = 0;
  int bits = 0;
  size_t n = 0;
  for (char c : value) {
    int v = decode6(c);
    if (v < 0) return CookieVerdict::Malformed;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (n < raw.size()) raw[n++] = static_cast<uint8_t>(acc >> bits);
    }
  }
  // 27 chars carry 162 bits: 160 of data and 2 that a canonical encoder leaves at zero.
  if (n != raw.size() || (acc & ((1u << bits) - 1)) != 0) return CookieVerdict::Malformed;
  const uint64_t id = getBe64(raw.data());
  const auto got = std::span(raw).subspan(8);
  for (const auto& key : keys_) {
    auto want = tag(key, backendId, id);
    if (constantTimeEqual(got, want)) {
      serverId = id;
      return CookieVerdict::Ok;
    }
  }
  return CookieVerdict::BadTag;
}

const ServerView* StickyCookie::resolve(const BackendView& backend,
                                        std::optional<std::string_view> value,
                                        CookieVerdict& verdict) const {
  if (!value) {
    verdict = CookieVerdict::Absent;
    return nullptr;
  }
  uint64_t id = 0;
  verdict = decode(backend.id, *value, id);
  if (verdict != CookieVerdict::Ok) return nullptr;
  const ServerView* s = backend.findServer(id);
  if (!s) {
    verdict = CookieVerdict::UnknownServer;
    return nullptr;
  }
  if (!s->acceptsSticky()) {
    verdict = CookieVerdict::Unavailable;
    return nullptr;
  }
  return s;
}

std::string StickyCookie::setCookieHeader(std::string_view name, std::string_view value,
                                          bool secure) {
  std::string h;
  h.reserve(name.size() + value.size() + 48);
  h.append(name).append("=").append(value).append("; Path=/; HttpOnly; SameSite=Lax");
  if (secure) h.append("; Secure");
  return h;
}

std::vector<uint8_t> deriveCookieKey(std::span<const uint8_t> secret) {
  auto label = std::span(reinterpret_cast<const uint8_t*>(kKeyLabel.data()), kKeyLabel.size());
  Sha256Digest d = hmacSha256(secret, label);
  return {d.begin(), d.end()};
}

Result<std::vector<uint8_t>> loadCookieKey(const config::Config& config,
                                           const config::Backend& backend,
                                           std::span<const uint8_t> fallback) {
  const std::string& file = !backend.sticky.keyFile.empty() ? backend.sticky.keyFile
                            : config.statesync.enabled      ? config.statesync.keyFile
                                                            : backend.sticky.keyFile;
  if (file.empty()) {
    if (fallback.empty()) return Error{"no sticky cookie key: no key file and no fallback"};
    return deriveCookieKey(fallback);
  }
  auto secret = loadKeyFile(file);
  if (!secret) return Error{file + ": " + secret.error()};
  return deriveCookieKey(*secret);
}

}  // namespace halb::balancer
