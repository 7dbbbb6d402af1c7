#include "common/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <sstream>

namespace halb {

Sha256Digest sha256(std::span<const uint8_t> data) {
  Sha256Digest out{};
  unsigned len = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

Sha256Digest sha256(std::string_view data) {
  return sha256(std::span(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
}

Sha256Digest hmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data) {
  return hmacSha256(key, {data});
}

Sha256Digest hmacSha256(std::span<const uint8_t> key,
                        std::initializer_list<std::span<const uint8_t>> parts) {
  Sha256Digest out{};
  // The one-shot EVP_MAC API would fetch the algorithm on each call; HMAC_CTX is deprecated
  // in OpenSSL 3, so use EVP_MAC with a cached fetch.
  static EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end()};
  size_t len = 0;
  if (ctx && EVP_MAC_init(ctx, key.data(), key.size(), params) == 1) {
    bool ok = true;
    for (auto p : parts) ok = ok && EVP_MAC_update(ctx, p.data(), p.size()) == 1;
    if (ok) EVP_MAC_final(ctx, out.data(), &len, out.size());
  }
  EVP_MAC_CTX_free(ctx);
  return out;
}

bool constantTimeEqual(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void randomBytes(std::span<uint8_t> out) {
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) {
    // RAND_bytes only fails when the entropy source is broken; a zero nonce would be unsafe.
    std::abort();
  }
}

std::string toHex(std::span<const uint8_t> data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (uint8_t b : data) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

Result<std::vector<uint8_t>> loadKeyFile(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0)
    return Error{"cannot read key file '" + path + "': " + std::strerror(errno)};
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{"cannot read key file '" + path + "'"};
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  auto notSpace = [](char c) { return c != ' ' && c != '\n' && c != '\r' && c != '\t'; };
  size_t b = 0, e = s.size();
  while (b < e && !notSpace(s[b])) ++b;
  while (e > b && !notSpace(s[e - 1])) --e;
  if (e - b < 16) return Error{"key file '" + path + "' holds fewer than 16 bytes"};
  return std::vector<uint8_t>(s.begin() + static_cast<long>(b), s.begin() + static_cast<long>(e));
}

std::string keyFilePermissionProblem(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return {};
  if (st.st_mode & (S_IRWXG | S_IRWXO))
    return "key file '" + path + "' is accessible by group or others (chmod 600 it)";
  return {};
}

uint64_t stableId(std::string_view name) {
  Sha256Digest d = sha256(name);
  uint64_t id = 0;
  for (int i = 0; i < 8; ++i) id = (id << 8) | d[static_cast<size_t>(i)];
  return id;
}

}  // namespace halb
