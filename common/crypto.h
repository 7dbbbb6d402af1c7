#pragma once
// The few cryptographic primitives halb needs, over OpenSSL: HMAC-SHA256 for VRRP and
// state-sync authentication and sticky cookies, SHA-256 for stable ids and fingerprints,
// constant-time comparison, and loading a shared key from a file.
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace halb {

using Sha256Digest = std::array<uint8_t, 32>;

Sha256Digest sha256(std::span<const uint8_t> data);
Sha256Digest sha256(std::string_view data);
Sha256Digest hmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data);
// HMAC over several parts, as if concatenated (no copy).
Sha256Digest hmacSha256(std::span<const uint8_t> key,
                        std::initializer_list<std::span<const uint8_t>> parts);
bool constantTimeEqual(std::span<const uint8_t> a, std::span<const uint8_t> b);
// Cryptographically random bytes (nonces, session ids).
void randomBytes(std::span<uint8_t> out);
std::string toHex(std::span<const uint8_t> data);

// A shared secret read from a file: the file's bytes with surrounding whitespace trimmed.
// Refuses files that cannot be read or hold fewer than 16 bytes.
Result<std::vector<uint8_t>> loadKeyFile(const std::string& path);
// Why a key file's permissions are unsafe (readable by group or others), or empty.
std::string keyFilePermissionProblem(const std::string& path);

// A stable 64-bit id for a name (server identity is derived from "backend/server", never
// from a position in the file, so both nodes and every restart agree on it).
uint64_t stableId(std::string_view name);

}  // namespace halb
