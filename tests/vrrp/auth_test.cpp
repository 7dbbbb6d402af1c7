#include "vrrp/auth.h"

#include <gtest/gtest.h>

#include <string>

namespace halb::vrrp {
namespace {

IpAddress ip(const char* s) {
  return IpAddress::parse(s).value();
}

std::vector<uint8_t> key(const char* text) {
  std::string s(text);
  return {s.begin(), s.end()};
}

const Advert kAdvert{
    .vrid = 51, .priority = 150, .intervalCs = 10, .addresses = {ip("192.0.2.100")}};
const PacketContext kCtx{.source = ip("192.0.2.11"), .destination = ip("224.0.0.18")};

class AuthTest : public ::testing::Test {
 protected:
  Authenticator sender_{key("0123456789abcdef-shared")};
  Authenticator receiver_{key("0123456789abcdef-shared")};

  std::optional<DropReason> receive(const std::vector<uint8_t>& wire,
                                    const PacketContext& ctx = kCtx) {
    DecodeResult r = decode(wire, ctx, 51);
    if (!r.ok()) return r.drop;
    return receiver_.verify(wire, r.packet, ctx);
  }
};

TEST_F(AuthTest, SealedAdvertIsStandardHeaderPlusTrailer) {
  std::vector<uint8_t> w = sender_.seal(kAdvert, kCtx, ChecksumForm::PseudoHeader, 1000);
  ASSERT_EQ(w.size(), 12 + kAuthTrailerSize);
  // A standard VRRPv3 receiver sees the same header and address list as without auth.
  DecodeResult r = decode(w, kCtx, 51);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.packet.advert, kAdvert);
  EXPECT_EQ(r.packet.trailer.size(), kAuthTrailerSize);
  EXPECT_EQ(r.packet.trailer[0], kAuthTrailerType);
  EXPECT_EQ(r.packet.trailer[1], kAuthTrailerSize);
  // Counter, big-endian at trailer offset 4.
  EXPECT_EQ(r.packet.trailer[10], 1000 >> 8);
  EXPECT_EQ(r.packet.trailer[11], 1000 & 0xFF);
}

TEST_F(AuthTest, AcceptsGenuineAdverts) {
  EXPECT_EQ(receive(sender_.seal(kAdvert, kCtx, ChecksumForm::PseudoHeader, 1)), std::nullopt);
  EXPECT_EQ(receive(sender_.seal(kAdvert, kCtx, ChecksumForm::MessageOnly, 2)), std::nullopt);
}

TEST_F(AuthTest, DropsReplays) {
  std::vector<uint8_t> a = sender_.seal(kAdvert, kCtx, ChecksumForm::PseudoHeader, 10);
  std::vector<uint8_t> b = sender_.seal(kAdvert, kCtx, ChecksumForm::PseudoHeader, 11);
  EXPECT_EQ(receive(a), std::nullopt);
  EXPECT_EQ(receive(a), DropReason::AuthReplay);
  EXPECT_EQ(receive(b), std::nullopt);
  EXPECT_EQ(receive(a), DropReason::AuthReplay);  // older than the floor
  EXPECT_EQ(receive(b), DropReason::AuthReplay);
}

TEST_F(AuthTest, ReplayFloorsArePerSource) {
  PacketContext other{.source = ip("192.0.2.12"), .destination = ip("224.0.0.18")};
  EXPECT_EQ(receive(sender_.seal(kAdvert, kCtx, ChecksumForm::PseudoHeader, 50)), std::nullopt);
  EXPECT_EQ(receive(sender_.seal(kAdvert, other, ChecksumForm::PseudoHeader, 5), other),
            std::nullopt);
}

TEST_F(AuthTest, DropsForgeries) {
  std::vector<uint8_t> w = sender_.seal(kAdvert, kCtx, ChecksumForm::PseudoHeader, 7);
  // Raise the priority and fix the checksum, as an attacker without the key would.
  w[2] = 254;
  writeChecksum(w, kCtx, ChecksumForm::PseudoHeader);
  EXPECT_EQ(receive(w), DropReason::AuthBadMac);
  // The forgery did not move the replay floor: the genuine counter 7 still passes.
  EXPECT_EQ(receive(sender_.seal(kAdvert, kCtx, ChecksumForm::PseudoHeader, 7)), std::nullopt);
}

TEST_F(AuthTest, MacBindsTheSourceAddress) {
  std::vector<uint8_t> w = sender_.seal(kAdvert, kCtx, ChecksumForm::PseudoHeader, 7);
  PacketContext spoofed{.source = ip("192.0.2.99"), .destination = ip("224.0.0.18")};
  writeChecksum(w, spoofed, ChecksumForm::PseudoHeader);
  EXPECT_EQ(receive(w, spoofed), DropReason::AuthBadMac);
}

TEST_F(AuthTest, DropsCounterTampering) {
  std::vector<uint8_t> w = sender_.seal(kAdvert, kCtx, ChecksumForm::PseudoHeader, 7);
  w[12 + 11] = 8;  // counter low byte
  writeChecksum(w, kCtx, ChecksumForm::PseudoHeader);
  EXPECT_EQ(receive(w), DropReason::AuthBadMac);
}

TEST_F(AuthTest, DropsUnauthenticatedAndOtherKey) {
  EXPECT_EQ(receive(encode(kAdvert, kCtx)), DropReason::AuthMissing);
  std::vector<uint8_t> junk(kAuthTrailerSize - 1, 0xA1);
  EXPECT_EQ(receive(encode(kAdvert, kCtx, ChecksumForm::PseudoHeader, junk)),
            DropReason::AuthMissing);
  Authenticator stranger(key("another-key-of-16+bytes"));
  EXPECT_EQ(receive(stranger.seal(kAdvert, kCtx, ChecksumForm::PseudoHeader, 1)),
            DropReason::AuthKeyId);
}

TEST_F(AuthTest, CounterIsMonotonicAcrossClockSteps) {
  EXPECT_EQ(sender_.nextCounter(1000), 1000u);
  EXPECT_EQ(sender_.nextCounter(1000), 1001u);
  EXPECT_EQ(sender_.nextCounter(500), 1002u);  // the wall clock stepped back
  EXPECT_EQ(sender_.nextCounter(5000), 5000u);
}

}  // namespace
}  // namespace halb::vrrp
