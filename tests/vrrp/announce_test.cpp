#include "vrrp/announce.h"

#include <gtest/gtest.h>

namespace halb::vrrp {
namespace {

IpAddress ip(const char* s) {
  return IpAddress::parse(s).value();
}
const MacAddress kMac{0x02, 0x00, 0x5e, 0x10, 0x20, 0x30};

TEST(AnnounceTest, GratuitousArpIsAnRfc5227Announcement) {
  std::vector<uint8_t> expected{
      0x00, 0x01,                          // Ethernet
      0x08, 0x00,                          // IPv4
      6,    4,                             // address lengths
      0x00, 0x01,                          // request
      0x02, 0x00, 0x5e, 0x10, 0x20, 0x30,  // sender MAC
      192,  0,    2,    100,               // sender IP = VIP
      0,    0,    0,    0,    0,    0,     // target MAC unknown
      192,  0,    2,    100,               // target IP = VIP
  };
  EXPECT_EQ(buildGratuitousArp(kMac, ip("192.0.2.100")), expected);
}

TEST(AnnounceTest, UnsolicitedNeighbourAdvertisement) {
  std::vector<uint8_t> f = buildUnsolicitedNa(kMac, ip("2001:db8::100"));
  ASSERT_EQ(f.size(), 40u + 32u);
  // IPv6 header: version 6, payload 32, next header ICMPv6, hop limit 255 (RFC 4861 §7.1.2).
  EXPECT_EQ(f[0], 0x60);
  EXPECT_EQ(f[4], 0);
  EXPECT_EQ(f[5], 32);
  EXPECT_EQ(f[6], 58);
  EXPECT_EQ(f[7], 255);
  EXPECT_EQ(IpAddress::fromBytes(&f[8], 16), ip("2001:db8::100"));
  EXPECT_EQ(IpAddress::fromBytes(&f[24], 16), ip("ff02::1"));
  // ICMPv6: type 136, code 0, checksum (computed independently), flags = Override only.
  std::vector<uint8_t> icmp(f.begin() + 40, f.end());
  std::vector<uint8_t> expected{136, 0, 0x78, 0xed, 0x20, 0, 0, 0};
  auto target = ip("2001:db8::100");
  expected.insert(expected.end(), target.data(), target.data() + 16);
  expected.insert(expected.end(), {2, 1, 0x02, 0x00, 0x5e, 0x10, 0x20, 0x30});
  EXPECT_EQ(icmp, expected);
}

}  // namespace
}  // namespace halb::vrrp
