#include "vrrp/auth.h"

#include <algorithm>

#include "common/crypto.h"

namespace halb::vrrp {

namespace {
constexpr size_t kTrailerHead = 12;  // type, length, key id, counter
}

Authenticator::Authenticator(std::vector<uint8_t> key) : key_(std::move(key)) {
  Sha256Digest d = sha256(key_);
  keyId_ = static_cast<uint16_t>(d[0] << 8 | d[1]);
}

uint64_t Authenticator::nextCounter(uint64_t wallMicros) {
  lastSent_ = std::max(lastSent_ + 1, wallMicros);
  return lastSent_;
}

Sha256Digest Authenticator::mac(std::span<const uint8_t> message, std::span<const uint8_t> head,
                                const IpAddress& source) const {
  return hmacSha256(key_, {std::span<const uint8_t>(source.data(), source.size()), message, head});
}

std::vector<uint8_t> Authenticator::seal(const Advert& advert, const PacketContext& ctx,
                                         ChecksumForm form, uint64_t counter) const {
  std::vector<uint8_t> out = encodeUnchecked(advert);
  size_t messageLength = out.size();
  std::array<uint8_t, kTrailerHead> head{kAuthTrailerType, static_cast<uint8_t>(kAuthTrailerSize),
                                         static_cast<uint8_t>(keyId_ >> 8),
                                         static_cast<uint8_t>(keyId_ & 0xFF)};
  for (int i = 0; i < 8; ++i) head[4 + i] = static_cast<uint8_t>(counter >> (56 - 8 * i));
  Sha256Digest m = mac({out.data(), messageLength}, head, ctx.source);
  out.insert(out.end(), head.begin(), head.end());
  out.insert(out.end(), m.begin(), m.end());
  writeChecksum(out, ctx, form);
  return out;
}

std::optional<DropReason> Authenticator::verify(std::span<const uint8_t> payload,
                                                const Decoded& decoded, const PacketContext& ctx) {
  std::span<const uint8_t> t = decoded.trailer;
  if (t.size() != kAuthTrailerSize || t[0] != kAuthTrailerType || t[1] != kAuthTrailerSize)
    return DropReason::AuthMissing;
  uint16_t keyId = static_cast<uint16_t>(t[2] << 8 | t[3]);
  if (keyId != keyId_) return DropReason::AuthKeyId;
  uint64_t counter = 0;
  for (int i = 0; i < 8; ++i) counter = counter << 8 | t[4 + i];

  std::vector<uint8_t> message(payload.begin(), payload.begin() + decoded.messageLength);
  message[6] = 0;
  message[7] = 0;
  Sha256Digest expected = mac(message, t.first(kTrailerHead), ctx.source);
  if (!constantTimeEqual(expected, t.subspan(kTrailerHead))) return DropReason::AuthBadMac;

  uint64_t& floor = lastAccepted_[ctx.source];
  if (counter <= floor) return DropReason::AuthReplay;
  floor = counter;
  return std::nullopt;
}

}  // namespace halb::vrrp
