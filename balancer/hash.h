#pragma once
// Deterministic 64-bit hashing for consistent balancing (source_hash, maglev). Both nodes of
// a pair, and every restart, must map a client to the same server, so these functions never
// use a per-process seed (unlike std::hash) and read bytes in a fixed (little-endian) order.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "common/net.h"

namespace halb::balancer {

// The splitmix64 / murmur3 finaliser: a bijective mixer with full avalanche.
constexpr uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// Hashes bytes with a seed; stable across platforms and releases (it is part of how both
// nodes agree, so changing it remaps every hashed client once).
uint64_t hashBytes(std::span<const uint8_t> data, uint64_t seed = 0);
inline uint64_t hashString(std::string_view s, uint64_t seed = 0) {
  return hashBytes({reinterpret_cast<const uint8_t*>(s.data()), s.size()}, seed);
}
// The client address alone (not the port): all connections of a client land together.
uint64_t hashAddress(const IpAddress& a);
// Two values combined (e.g. a key hash and a server id for rendezvous hashing).
constexpr uint64_t hashCombine(uint64_t a, uint64_t b) {
  return mix64(a ^ mix64(b + 0x9e3779b97f4a7c15ULL));
}

}  // namespace halb::balancer
