#pragma once
// VRRPv3 advertisement codec (RFC 9568 §5, formerly RFC 5798 §5) for IPv4 and IPv6.
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |(rsvd) |     Max Adver Int     |          Checksum             |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                 IPvX Address(es) (4 or 16 bytes each)         |
//
// The codec is pure: bytes and the IP-layer facts the transport saw (source, destination,
// TTL / hop limit) in, a validated Advert or the reason for the drop out. It never throws and
// never reads past the span it was given, whatever arrived from the network.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/net.h"
#include "common/time.h"

namespace halb::vrrp {

inline constexpr uint8_t kIpProtocol = 112;       // IANA protocol number (RFC 9568 §5.1.1.4)
inline constexpr uint8_t kVersion = 3;            // §5.2.1
inline constexpr uint8_t kTypeAdvertisement = 1;  // §5.2.2, the only type
inline constexpr uint8_t kRequiredTtl = 255;      // §5.1.1.3 (TTL) and §5.1.2.3 (hop limit)
inline constexpr size_t kHeaderSize = 8;
inline constexpr uint16_t kMaxIntervalCs = 0x0FFF;  // 12 bits of centiseconds (§5.2.7)
inline constexpr uint8_t kPriorityShutdown = 0;     // §6.4.3: the master is leaving
inline constexpr uint8_t kPriorityOwner = 255;      // §6.1: the address owner

// 224.0.0.18 (§5.1.1.2) or ff02::12 (§5.1.2.2).
IpAddress multicastGroup(IpAddress::Family family);

struct Advert {
  uint8_t vrid = 0;
  uint8_t priority = 0;
  uint16_t intervalCs = 0;  // Max Adver Int, centiseconds
  std::vector<IpAddress> addresses;

  Duration interval() const { return std::chrono::milliseconds(10) * intervalCs; }
  bool operator==(const Advert&) const = default;
};

// Which checksum an IPv4 advert carries. RFC 5798 §5.2.8 covers an IPv4 pseudo-header; RFC
// 9568 §5.2.8 dropped it for IPv4 ("message only"). keepalived and the deployed base send and
// expect the pseudo-header form, so halb transmits that and accepts both. IPv6 always uses the
// pseudo-header (RFC 8200 §8.1); MessageOnly is never valid there.
enum class ChecksumForm : uint8_t { PseudoHeader, MessageOnly };
const char* toString(ChecksumForm f);

// Why a received packet was dropped. The transport and the authenticator add their own reasons
// to the codec's so one counter family covers every drop (metric label = toString()).
enum class DropReason : uint8_t {
  Truncated,        // shorter than the fixed header
  BadVersion,       // §5.2.1: version != 3
  BadType,          // §5.2.2: type != ADVERTISEMENT
  BadTtl,           // §5.1.1.3 / §5.1.2.3: TTL or hop limit != 255 (possibly off-link)
  WrongVrid,        // §7.1: no virtual router with that VRID here
  BadAddressCount,  // §5.2.5: count 0, or the packet is shorter than count addresses
  BadChecksum,      // §5.2.8: matches neither checksum form
  ZeroInterval,     // §5.2.7: Max Adver Int 0 would make Master_Down_Interval 0
  BadSource,        // source address of the wrong family, multicast or unspecified
  OwnPacket,        // our own advert looped back
  NotPeer,          // unicast mode: source is not a configured peer
  AuthMissing,      // auth: hmac configured, no (well-formed) trailer
  AuthKeyId,        // trailer made with another key
  AuthBadMac,       // HMAC does not verify: forged or corrupted
  AuthReplay,       // counter not newer than the last accepted one from that source
  Count
};
const char* toString(DropReason r);
inline constexpr size_t kDropReasonCount = static_cast<size_t>(DropReason::Count);

// What the IP layer told us about a received packet (or will put on a sent one).
struct PacketContext {
  IpAddress source;
  IpAddress destination;
  int ttl = kRequiredTtl;  // TTL (IPv4) or hop limit (IPv6)
};

struct Decoded {
  Advert advert;
  ChecksumForm form = ChecksumForm::PseudoHeader;
  size_t messageLength = 0;          // header + addresses
  std::span<const uint8_t> trailer;  // bytes after the address list (halb auth), may be empty
};

struct DecodeResult {
  std::optional<DropReason> drop;  // set: the packet must be discarded
  Decoded packet;
  bool ok() const { return !drop.has_value(); }
};

// Validates a received VRRP message (the IP payload) as RFC 9568 §7.1 asks. `expectedVrid`
// is the VRID configured on the interface it arrived on. Bytes after the address list are not
// an error (§7.1 asks for the *complete* packet, not an exact length); they are returned as
// `trailer` and covered by the checksum, as every implementation computes it over the whole
// IP payload.
DecodeResult decode(std::span<const uint8_t> payload, const PacketContext& ctx,
                    uint8_t expectedVrid);

// Encodes an advert for the wire from `ctx.source` to `ctx.destination`, with `trailer`
// appended after the addresses and covered by the checksum. IPv4 uses `form`; IPv6 always the
// pseudo-header. Addresses must all be of the source's family (the config guarantees it).
std::vector<uint8_t> encode(const Advert& advert, const PacketContext& ctx,
                            ChecksumForm form = ChecksumForm::PseudoHeader,
                            std::span<const uint8_t> trailer = {});

// Encodes header and addresses with a zero checksum field (the authenticator signs this).
std::vector<uint8_t> encodeUnchecked(const Advert& advert);
// (Re)computes the checksum field of a complete message in place.
void writeChecksum(std::span<uint8_t> message, const PacketContext& ctx, ChecksumForm form);
// True when the message (checksum field included) verifies in `form`.
bool checksumValid(std::span<const uint8_t> message, const PacketContext& ctx, ChecksumForm form);

// Centiseconds for a duration, rounded down and clamped to the 12-bit field (at least 1).
uint16_t toCentiseconds(Duration d);

}  // namespace halb::vrrp
