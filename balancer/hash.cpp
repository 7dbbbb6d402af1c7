#include "balancer/hash.h"

namespace halb::balancer {
namespace {

uint64_t load64le(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace

uint64_t hashBytes(std::span<const uint8_t> data, uint64_t seed) {
  // 8 bytes at a time through the mixer; the length goes in first so that "a" and "a\0"
  // differ. Not cryptographic: keys are hashed to spread load, not to resist collisions
  // chosen by an attacker (a client can only choose its own server this way, which
  // source_hash lets it do anyway).
  uint64_t h = mix64(seed ^ (0x9e3779b97f4a7c15ULL * (data.size() + 1)));
  size_t i = 0;
  for (; i + 8 <= data.size(); i += 8)
    h = mix64(h ^ load64le(data.data() + i, 8)) * 0xff51afd7ed558ccdULL;
  if (i < data.size())
    h = mix64(h ^ load64le(data.data() + i, data.size() - i)) * 0xc4ceb9fe1a85ec53ULL;
  return mix64(h);
}

uint64_t hashAddress(const IpAddress& a) {
  return hashBytes({a.data(), a.size()}, a.isV4() ? 4 : 6);
}

}  // namespace halb::balancer
