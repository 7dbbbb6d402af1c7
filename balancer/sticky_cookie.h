#pragma once
// Sticky cookie codec: the cookie a client carries names its server by the server's stable
// id (config::Server::id, from "backend/server") and is authenticated with a truncated
// HMAC-SHA256, so
//  - no table is needed: the cookie itself is the state, and it survives failover, reload
//    and restart, because both nodes derive the same key and the same server ids;
//  - a client cannot choose a server of its liking (to pile onto one, or to reach one that
//    the operator drains): it can only replay a cookie it was given.
//
// Value: base64url(serverId[8, big endian] || tag[12]), 27 characters, where
// tag = HMAC-SHA256(key, "halb-sticky-v1" || backendId[8] || serverId[8])[0..12). 96 bits of
// tag make forging one server's cookie a 2^96 online guess; binding the backend id keeps a
// cookie of one backend from meaning anything in another.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "balancer/pool.h"
#include "common/result.h"
#include "config/config.h"

namespace halb::balancer {

enum class CookieVerdict : uint8_t {
  Ok,             // a server of this backend that may keep its sticky users
  Absent,         // no cookie: balance, then set one
  Malformed,      // not a cookie we could have written
  BadTag,         // forged, tampered, or written under another key
  UnknownServer,  // authentic, but the server is no longer in the backend (removed)
  Unavailable,    // authentic, but the server is down or in maintenance: rebalance
};
const char* toString(CookieVerdict v);

class StickyCookie {
 public:
  static constexpr size_t kTagBytes = 12;
  static constexpr size_t kValueChars = 27;  // base64url of 20 bytes, unpadded

  // `keys[0]` signs; every key verifies (key rotation: add the new key first, remove the
  // old one after cookies have turned over). Keys are derived secrets (deriveCookieKey).
  explicit StickyCookie(std::vector<std::vector<uint8_t>> keys);

  std::string encode(uint64_t backendId, uint64_t serverId) const;
  // The server id when the value is authentic; verdict Malformed or BadTag otherwise.
  CookieVerdict decode(uint64_t backendId, std::string_view value, uint64_t& serverId) const;
  // decode + lookup in the snapshot's backend: the server to use when Ok, else nullptr.
  const ServerView* resolve(const BackendView& backend, std::optional<std::string_view> value,
                            CookieVerdict& verdict) const;

  // "NAME=VALUE; Path=/; HttpOnly; SameSite=Lax[; Secure]". A session cookie (no Max-Age):
  // stickiness lasts as long as the browser session, like HAProxy's `cookie insert`.
  static std::string setCookieHeader(std::string_view name, std::string_view value, bool secure);

 private:
  std::vector<std::vector<uint8_t>> keys_;
};

// A cookie key from a shared secret, HKDF-expand style: HMAC(secret, label). Separate labels
// keep the cookie key independent of the state-sync key it may be derived from: a leaked
// cookie key reveals nothing about the state-sync key.
std::vector<uint8_t> deriveCookieKey(std::span<const uint8_t> secret);

// The key for a backend's cookies, in order of preference:
//  1. backends[].sticky.key_file, when set;
//  2. statesync.key_file (a pair shares it already, so both nodes honour each other's
//     cookies with no extra configuration);
//  3. `fallback`: a standalone node without key files passes a random per-process secret
//     (cookies then survive reloads but not a restart; users are rebalanced once).
// Reads the key files (control thread, at start and reload).
Result<std::vector<uint8_t>> loadCookieKey(const config::Config& config,
                                           const config::Backend& backend,
                                           std::span<const uint8_t> fallback);

}  // namespace halb::balancer
