#pragma once
// Optional authentication of VRRP adverts between halb nodes (config vrrp.auth: hmac).
//
// VRRPv3 removed VRRPv2's authentication (RFC 9568 §9); its only guard is the TTL-255 check.
// halb-only pairs can add an HMAC trailer after the address list:
//
//    0                   1                   2                   3
//   +---------------+---------------+-------------------------------+
//   | Type = 0xA1   | Length = 44   |            Key id             |
//   +---------------+---------------+-------------------------------+
//   |                  Counter (64 bits, big-endian)                |
//   +---------------------------------------------------------------+
//   |              HMAC-SHA256 (32 bytes)                           |
//
// Why this shape: the VRRP header and the address count are untouched, so a standard VRRPv3
// receiver still parses the header and the addresses (it sees 44 extra bytes after the list,
// which §7.1 does not forbid; the checksum covers them exactly as it covers the whole IP
// payload). The HMAC covers the sender's IP source address, the whole VRRP message with a zero
// checksum field (so it can be computed before the checksum, which then covers the MAC), and
// the trailer up to the MAC. The key id (first two bytes of SHA-256 of the key) tells a key
// mismatch apart from a forgery in the counters.
//
// The counter is strictly increasing per sender: the sender uses max(last + 1, wall-clock
// microseconds), so it keeps increasing across restarts without stored state. A receiver
// accepts an advert only when its counter is greater than the last one it accepted from that
// source. Limitation: the replay window lives in memory, so right after the *receiver*
// restarts it accepts one replayed advert per source until the live sender's next advert
// raises the window; a replayed advert is a stale copy of a real one, so the worst it does is
// what the real master said a moment before.
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "common/crypto.h"
#include "common/net.h"
#include "vrrp/packet.h"

namespace halb::vrrp {

inline constexpr uint8_t kAuthTrailerType = 0xA1;
inline constexpr size_t kAuthTrailerSize = 44;

class Authenticator {
 public:
  explicit Authenticator(std::vector<uint8_t> key);

  // Encodes and signs an advert. `counter` must come from nextCounter().
  std::vector<uint8_t> seal(const Advert& advert, const PacketContext& ctx, ChecksumForm form,
                            uint64_t counter) const;
  // The next counter to send, given the wall clock in microseconds since the epoch.
  uint64_t nextCounter(uint64_t wallMicros);

  // Verifies a packet the codec accepted (`decoded` refers into `payload`). On success the
  // counter becomes the new replay floor for that source.
  std::optional<DropReason> verify(std::span<const uint8_t> payload, const Decoded& decoded,
                                   const PacketContext& ctx);

  uint16_t keyId() const { return keyId_; }

 private:
  Sha256Digest mac(std::span<const uint8_t> messageZeroChecksum,
                   std::span<const uint8_t> trailerHead, const IpAddress& source) const;

  std::vector<uint8_t> key_;
  uint16_t keyId_ = 0;
  uint64_t lastSent_ = 0;
  // Replay floors per source. Only sources that proved knowledge of the key get an entry, so
  // its size is bounded by the number of real peers.
  std::map<IpAddress, uint64_t> lastAccepted_;
};

}  // namespace halb::vrrp
