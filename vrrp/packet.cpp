#include "vrrp/packet.h"

#include <algorithm>

namespace halb::vrrp {

namespace {

// One's-complement sum of 16-bit big-endian words (RFC 1071), without the final fold.
uint32_t sumWords(std::span<const uint8_t> data, uint32_t sum = 0) {
  size_t i = 0;
  for (; i + 1 < data.size(); i += 2) sum += (uint32_t{data[i]} << 8) | data[i + 1];
  if (i < data.size()) sum += uint32_t{data[i]} << 8;  // odd length: pad with a zero byte
  return sum;
}

uint16_t fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

// The pseudo-header contribution: IPv4 per RFC 768 layout (src, dst, zero, protocol, length),
// IPv6 per RFC 8200 §8.1 (src, dst, 32-bit length, zeros, next header). Word order does not
// change a one's-complement sum, so only the contents matter.
uint32_t pseudoHeaderSum(const PacketContext& ctx, size_t length) {
  uint32_t sum = sumWords({ctx.source.data(), ctx.source.size()});
  sum = sumWords({ctx.destination.data(), ctx.destination.size()}, sum);
  sum += kIpProtocol;
  sum += static_cast<uint32_t>(length & 0xFFFF);
  sum += static_cast<uint32_t>(length >> 16);  // IPv6 upper-layer length is 32 bits
  return sum;
}

uint16_t messageSum(std::span<const uint8_t> message, const PacketContext& ctx, ChecksumForm form) {
  uint32_t sum = 0;
  if (ctx.source.isV6() || form == ChecksumForm::PseudoHeader)
    sum = pseudoHeaderSum(ctx, message.size());
  return fold(sumWords(message, sum));
}

}  // namespace

IpAddress multicastGroup(IpAddress::Family family) {
  if (family == IpAddress::Family::V4) return IpAddress::fromV4(0xE0000012);  // 224.0.0.18
  std::array<uint8_t, 16> b{0xff, 0x02};
  b[15] = 0x12;  // ff02::12
  return IpAddress::fromBytes(b.data(), b.size());
}

const char* toString(ChecksumForm f) {
  return f == ChecksumForm::PseudoHeader ? "pseudo_header" : "message_only";
}

const char* toString(DropReason r) {
  switch (r) {
    case DropReason::Truncated:
      return "truncated";
    case DropReason::BadVersion:
      return "version";
    case DropReason::BadType:
      return "type";
    case DropReason::BadTtl:
      return "ttl";
    case DropReason::WrongVrid:
      return "vrid";
    case DropReason::BadAddressCount:
      return "address_count";
    case DropReason::BadChecksum:
      return "checksum";
    case DropReason::ZeroInterval:
      return "interval";
    case DropReason::BadSource:
      return "source";
    case DropReason::OwnPacket:
      return "own";
    case DropReason::NotPeer:
      return "not_peer";
    case DropReason::AuthMissing:
      return "auth_missing";
    case DropReason::AuthKeyId:
      return "auth_key_id";
    case DropReason::AuthBadMac:
      return "auth_mac";
    case DropReason::AuthReplay:
      return "auth_replay";
    case DropReason::Count:
      break;
  }
  return "unknown";
}

uint16_t toCentiseconds(Duration d) {
  auto cs = std::chrono::duration_cast<std::chrono::milliseconds>(d).count() / 10;
  return static_cast<uint16_t>(std::clamp<int64_t>(cs, 1, kMaxIntervalCs));
}

std::vector<uint8_t> encodeUnchecked(const Advert& a) {
  std::vector<uint8_t> out;
  size_t alen = a.addresses.empty() ? 4 : a.addresses.front().size();
  out.reserve(kHeaderSize + a.addresses.size() * alen);
  out.push_back(static_cast<uint8_t>(kVersion << 4 | kTypeAdvertisement));
  out.push_back(a.vrid);
  out.push_back(a.priority);
  out.push_back(static_cast<uint8_t>(std::min<size_t>(a.addresses.size(), 255)));
  uint16_t iv = a.intervalCs & kMaxIntervalCs;  // the 4 reserved bits stay zero (§5.2.6)
  out.push_back(static_cast<uint8_t>(iv >> 8));
  out.push_back(static_cast<uint8_t>(iv & 0xFF));
  out.push_back(0);
  out.push_back(0);
  for (size_t i = 0; i < a.addresses.size() && i < 255; ++i)
    out.insert(out.end(), a.addresses[i].data(), a.addresses[i].data() + a.addresses[i].size());
  return out;
}

void writeChecksum(std::span<uint8_t> message, const PacketContext& ctx, ChecksumForm form) {
  if (message.size() < kHeaderSize) return;
  message[6] = 0;
  message[7] = 0;
  uint16_t c = static_cast<uint16_t>(~messageSum(message, ctx, form));
  message[6] = static_cast<uint8_t>(c >> 8);
  message[7] = static_cast<uint8_t>(c & 0xFF);
}

bool checksumValid(std::span<const uint8_t> message, const PacketContext& ctx, ChecksumForm form) {
  // Summing a message that carries its own checksum gives all ones when it is intact.
  return messageSum(message, ctx, form) == 0xFFFF;
}

std::vector<uint8_t> encode(const Advert& advert, const PacketContext& ctx, ChecksumForm form,
                            std::span<const uint8_t> trailer) {
  std::vector<uint8_t> out = encodeUnchecked(advert);
  out.insert(out.end(), trailer.begin(), trailer.end());
  writeChecksum(out, ctx, form);
  return out;
}

DecodeResult decode(std::span<const uint8_t> p, const PacketContext& ctx, uint8_t expectedVrid) {
  DecodeResult r;
  auto drop = [&r](DropReason why) {
    r.drop = why;
    return r;
  };
  if (p.size() < kHeaderSize) return drop(DropReason::Truncated);
  if ((p[0] >> 4) != kVersion) return drop(DropReason::BadVersion);
  if ((p[0] & 0x0F) != kTypeAdvertisement) return drop(DropReason::BadType);
  // §7.1: the TTL check comes first among the semantic ones; an off-link sender must not even
  // learn whether its VRID guess was right from our counters.
  if (ctx.ttl != kRequiredTtl) return drop(DropReason::BadTtl);
  const IpAddress& src = ctx.source;
  if (src.isUnspecified() || src.isMulticast() || ctx.destination.family() != src.family())
    return drop(DropReason::BadSource);
  if (p[1] != expectedVrid) return drop(DropReason::WrongVrid);
  size_t count = p[3];
  size_t alen = src.size();  // IPv4 and IPv6 are never mixed (§5.2.5): the family is the IP's
  if (count == 0 || p.size() < kHeaderSize + count * alen) return drop(DropReason::BadAddressCount);

  ChecksumForm form = ChecksumForm::PseudoHeader;
  if (!checksumValid(p, ctx, ChecksumForm::PseudoHeader)) {
    if (src.isV6() || !checksumValid(p, ctx, ChecksumForm::MessageOnly))
      return drop(DropReason::BadChecksum);
    form = ChecksumForm::MessageOnly;
  }
  uint16_t interval = static_cast<uint16_t>(((p[4] << 8) | p[5]) & kMaxIntervalCs);
  if (interval == 0) return drop(DropReason::ZeroInterval);

  Decoded& d = r.packet;
  d.advert.vrid = p[1];
  d.advert.priority = p[2];
  d.advert.intervalCs = interval;
  d.advert.addresses.reserve(count);
  for (size_t i = 0; i < count; ++i)
    d.advert.addresses.push_back(IpAddress::fromBytes(p.data() + kHeaderSize + i * alen, alen));
  d.form = form;
  d.messageLength = kHeaderSize + count * alen;
  d.trailer = p.subspan(d.messageLength);
  return r;
}

}  // namespace halb::vrrp
