#include "vrrp/packet.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace halb::vrrp {
namespace {

IpAddress ip(const char* s) {
  return IpAddress::parse(s).value();
}

// A golden vector: an advert, the IP layer around it, and its exact bytes on the wire.
struct Golden {
  const char* name;
  Advert advert;
  const char* source;
  const char* destination;
  ChecksumForm form = ChecksumForm::PseudoHeader;
  std::vector<uint8_t> wire;
};

// What keepalived 2.2.7 sends with `vrrp_version 3`, virtual_router_id 51, priority 150,
// advert_int 0.1 and one VIP 192.0.2.100 from 192.0.2.11. Derived from the RFC 9568 §5.2
// layout: 0x31 = version 3 | type 1; 0x33 = VRID 51; 0x96 = priority 150; 0x01 = one
// address; 0x000a = 10 centiseconds; then the checksum; then c0.00.02.64 = 192.0.2.100.
// The checksum is RFC 5798's, over the IPv4 pseudo-header (src c000 020b, dst e000 0012,
// 0x0070 = zero|protocol 112, 0x000c = VRRP length 12) plus the message:
//   c000+020b+e000+0012+0070+000c + 3133+9601+000a+0000+c000+0264 = 0x32c3b
//   fold: 0x2c3b + 0x3 = 0x2c3e; one's complement: 0xd3c1.
// A capture of keepalived 2.2.7 on this kernel shows exactly these bytes (IP payload of
// "IP 192.0.2.11 > 224.0.0.18: VRRPv3, Advertisement, vrid 51, prio 150, intvl 10cs").
const Golden kKeepalivedV4{
    .name = "keepalived_v4",
    .advert = {.vrid = 51, .priority = 150, .intervalCs = 10, .addresses = {ip("192.0.2.100")}},
    .source = "192.0.2.11",
    .destination = "224.0.0.18",
    .wire = {0x31, 0x33, 0x96, 0x01, 0x00, 0x0a, 0xd3, 0xc1, 0xc0, 0x00, 0x02, 0x64},
};

// The same advert with RFC 9568's IPv4 checksum (message only, no pseudo-header):
//   3133+9601+000a+0000+c000+0264 = 0x189a2 → 0x89a3 → ~ = 0x765c.
const Golden kRfc9568V4{
    .name = "rfc9568_message_only_v4",
    .advert = {.vrid = 51, .priority = 150, .intervalCs = 10, .addresses = {ip("192.0.2.100")}},
    .source = "192.0.2.11",
    .destination = "224.0.0.18",
    .form = ChecksumForm::MessageOnly,
    .wire = {0x31, 0x33, 0x96, 0x01, 0x00, 0x0a, 0x76, 0x5c, 0xc0, 0x00, 0x02, 0x64},
};

// Priority 0 (shutdown), two VIPs, 1 s interval (100 cs = 0x064), unicast destination.
//   pseudo: c000+020c+c000+020b+0070+0010 = 0x18497
//   msg:    3107+0002+0064+0000+c000+0264+c000+0265 = 0x1b636 (sum 0x33acd)
//   fold: 0x3acd + 0x3 = 0x3ad0; ~ = 0xc52f.
const Golden kShutdownUnicastV4{
    .name = "shutdown_unicast_v4",
    .advert = {.vrid = 7,
               .priority = 0,
               .intervalCs = 100,
               .addresses = {ip("192.0.2.100"), ip("192.0.2.101")}},
    .source = "192.0.2.12",
    .destination = "192.0.2.11",
    .wire = {0x31, 0x07, 0x00, 0x02, 0x00, 0x64, 0xc5, 0x2f, 0xc0, 0x00, 0x02, 0x64, 0xc0, 0x00,
             0x02, 0x65},
};

// IPv6 (RFC 8200 §8.1 pseudo-header: src, dst, 32-bit length 0x18, next header 112), from a
// link-local source to ff02::12, priority 100, 10 ms interval (1 cs), VIP 2001:db8::100.
//   src fe80::1: fe80+0001; dst ff02::12: ff02+0012; length 0018; next header 0070
//   pseudo: fe80+0001+ff02+0012+0018+0070 = 0x1fe1d
//   msg: 3101+6401+0001+0000+2001+0db8+0100 = 0xc3bc (the address's other words are zero)
//   sum = 0x2c1d9 → 0xc1db → ~ = 0x3e24.
const Golden kV6{
    .name = "ipv6",
    .advert = {.vrid = 1, .priority = 100, .intervalCs = 1, .addresses = {ip("2001:db8::100")}},
    .source = "fe80::1",
    .destination = "ff02::12",
    .wire = {0x31, 0x01, 0x64, 0x01, 0x00, 0x01, 0x3e, 0x24, 0x20, 0x01, 0x0d, 0xb8,
             0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00},
};

class GoldenTest : public ::testing::TestWithParam<Golden> {};

TEST_P(GoldenTest, EncodesExactBytes) {
  const Golden& g = GetParam();
  PacketContext ctx{.source = ip(g.source), .destination = ip(g.destination)};
  EXPECT_EQ(encode(g.advert, ctx, g.form), g.wire);
}

TEST_P(GoldenTest, DecodesBackToTheAdvert) {
  const Golden& g = GetParam();
  PacketContext ctx{.source = ip(g.source), .destination = ip(g.destination)};
  DecodeResult r = decode(g.wire, ctx, g.advert.vrid);
  ASSERT_TRUE(r.ok()) << toString(*r.drop);
  EXPECT_EQ(r.packet.advert, g.advert);
  EXPECT_EQ(r.packet.form, g.form);
  EXPECT_TRUE(r.packet.trailer.empty());
}

INSTANTIATE_TEST_SUITE_P(Vectors, GoldenTest,
                         ::testing::Values(kKeepalivedV4, kRfc9568V4, kShutdownUnicastV4, kV6),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(PacketTest, MulticastGroups) {
  EXPECT_EQ(multicastGroup(IpAddress::Family::V4).toString(), "224.0.0.18");
  EXPECT_EQ(multicastGroup(IpAddress::Family::V6).toString(), "ff02::12");
}

TEST(PacketTest, Centiseconds) {
  EXPECT_EQ(toCentiseconds(std::chrono::milliseconds(10)), 1);
  EXPECT_EQ(toCentiseconds(std::chrono::milliseconds(100)), 10);
  EXPECT_EQ(toCentiseconds(std::chrono::milliseconds(40950)), 4095);
  EXPECT_EQ(toCentiseconds(std::chrono::seconds(100)), 4095);  // clamped to 12 bits
  EXPECT_EQ(toCentiseconds(std::chrono::milliseconds(1)), 1);  // never 0
  EXPECT_EQ((Advert{.intervalCs = 10, .addresses = {}}.interval()), std::chrono::milliseconds(100));
}

TEST(PacketTest, ReservedBitsIgnoredOnReceive) {
  // §5.2.6: the 4 reserved bits are zero on transmit and ignored on receive.
  PacketContext ctx{.source = ip("192.0.2.11"), .destination = ip("224.0.0.18")};
  std::vector<uint8_t> w = kKeepalivedV4.wire;
  w[4] |= 0xF0;
  writeChecksum(w, ctx, ChecksumForm::PseudoHeader);
  DecodeResult r = decode(w, ctx, 51);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.packet.advert.intervalCs, 10);
}

TEST(PacketTest, TrailerIsReturnedAndChecksummed) {
  PacketContext ctx{.source = ip("192.0.2.11"), .destination = ip("224.0.0.18")};
  std::vector<uint8_t> extra{1, 2, 3, 4};
  std::vector<uint8_t> w = encode(kKeepalivedV4.advert, ctx, ChecksumForm::PseudoHeader, extra);
  ASSERT_EQ(w.size(), 16u);
  DecodeResult r = decode(w, ctx, 51);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.packet.messageLength, 12u);
  EXPECT_EQ(std::vector<uint8_t>(r.packet.trailer.begin(), r.packet.trailer.end()), extra);
  w[15] ^= 1;  // the checksum covers the trailer
  EXPECT_EQ(decode(w, ctx, 51).drop, DropReason::BadChecksum);
}

// Each rejection, with the exact reason it is counted under.
struct Rejection {
  const char* name;
  std::vector<uint8_t> wire;  // before the checksum is fixed up (if fixChecksum)
  bool fixChecksum = true;
  int ttl = 255;
  const char* source = "192.0.2.11";
  const char* destination = "224.0.0.18";
  uint8_t expectedVrid = 51;
  DropReason reason;
};

std::vector<uint8_t> base() {
  return kKeepalivedV4.wire;
}
std::vector<uint8_t> with(std::vector<uint8_t> w, size_t i, uint8_t v) {
  w[i] = v;
  return w;
}

class RejectionTest : public ::testing::TestWithParam<Rejection> {};

TEST_P(RejectionTest, Drops) {
  const Rejection& c = GetParam();
  PacketContext ctx{.source = ip(c.source), .destination = ip(c.destination), .ttl = c.ttl};
  std::vector<uint8_t> w = c.wire;
  if (c.fixChecksum) writeChecksum(w, ctx, ChecksumForm::PseudoHeader);
  DecodeResult r = decode(w, ctx, c.expectedVrid);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(*r.drop, c.reason) << toString(*r.drop);
}

INSTANTIATE_TEST_SUITE_P(
    Reasons, RejectionTest,
    ::testing::Values(
        Rejection{
            .name = "empty", .wire = {}, .fixChecksum = false, .reason = DropReason::Truncated},
        Rejection{.name = "seven_bytes",
                  .wire = {0x31, 0x33, 0x96, 0x01, 0x00, 0x0a, 0xd3},
                  .fixChecksum = false,
                  .reason = DropReason::Truncated},
        Rejection{
            .name = "version2", .wire = with(base(), 0, 0x21), .reason = DropReason::BadVersion},
        Rejection{.name = "type2", .wire = with(base(), 0, 0x32), .reason = DropReason::BadType},
        Rejection{.name = "ttl254", .wire = base(), .ttl = 254, .reason = DropReason::BadTtl},
        Rejection{.name = "ttl1", .wire = base(), .ttl = 1, .reason = DropReason::BadTtl},
        Rejection{.name = "other_vrid",
                  .wire = base(),
                  .expectedVrid = 52,
                  .reason = DropReason::WrongVrid},
        Rejection{
            .name = "count0", .wire = with(base(), 3, 0), .reason = DropReason::BadAddressCount},
        Rejection{.name = "count_exceeds_length",
                  .wire = with(base(), 3, 2),
                  .reason = DropReason::BadAddressCount},
        Rejection{.name = "v6_count_vs_v4_length",
                  .wire = base(),
                  .source = "fe80::1",
                  .destination = "ff02::12",
                  .reason = DropReason::BadAddressCount},
        Rejection{.name = "checksum",
                  .wire = with(base(), 7, 0xc2),
                  .fixChecksum = false,
                  .reason = DropReason::BadChecksum},
        Rejection{.name = "checksum_wrong_destination",
                  .wire = base(),
                  .fixChecksum = false,
                  .destination = "224.0.0.19",
                  .reason = DropReason::BadChecksum},
        Rejection{.name = "interval0",
                  .wire = with(with(base(), 4, 0xF0), 5, 0),  // reserved bits only
                  .reason = DropReason::ZeroInterval},
        Rejection{.name = "multicast_source",
                  .wire = base(),
                  .source = "224.0.0.1",
                  .reason = DropReason::BadSource},
        Rejection{.name = "unspecified_source",
                  .wire = base(),
                  .source = "0.0.0.0",
                  .reason = DropReason::BadSource},
        Rejection{.name = "mixed_families",
                  .wire = base(),
                  .destination = "ff02::12",
                  .reason = DropReason::BadSource}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(PacketTest, V6NeverAcceptsMessageOnlyChecksum) {
  PacketContext ctx{.source = ip("fe80::1"), .destination = ip("ff02::12")};
  std::vector<uint8_t> w = kV6.wire;
  // Recompute as if the IPv4 RFC 9568 rule applied to IPv6.
  w[6] = w[7] = 0;
  uint32_t sum = 0;
  for (size_t i = 0; i < w.size(); i += 2) sum += (w[i] << 8) | w[i + 1];
  while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
  uint16_t c = static_cast<uint16_t>(~sum);
  w[6] = static_cast<uint8_t>(c >> 8);
  w[7] = static_cast<uint8_t>(c);
  EXPECT_EQ(decode(w, ctx, 1).drop, DropReason::BadChecksum);
}

TEST(PacketTest, EveryDropReasonHasAName) {
  for (size_t i = 0; i < kDropReasonCount; ++i)
    EXPECT_NE(std::string(toString(static_cast<DropReason>(i))), "unknown") << i;
}

}  // namespace
}  // namespace halb::vrrp
