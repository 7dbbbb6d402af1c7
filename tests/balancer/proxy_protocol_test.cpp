#include "balancer/proxy_protocol.h"

#include <gtest/gtest.h>

#include <cstring>

namespace halb::balancer {
namespace {

SocketAddress addr(const char* s) {
  return *SocketAddress::parse(s);
}

TEST(ProxyProtocolV2, Ipv4GoldenBytes) {
  ProxyV2Header h;
  size_t n = encodeProxyV2(addr("192.0.2.1:51000"), addr("198.51.100.7:443"), h);
  const uint8_t want[] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55,
                          0x49, 0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C,     // v2 PROXY, TCP4, 12 bytes
                          192,  0,    2,    1,    198,  51,   100,  7,  // src, dst
                          0xC7, 0x38, 0x01, 0xBB};                      // 51000, 443
  ASSERT_EQ(n, sizeof want);
  EXPECT_EQ(0, std::memcmp(h.data(), want, n));
}

TEST(ProxyProtocolV2, Ipv6AndMixed) {
  ProxyV2Header h;
  size_t n = encodeProxyV2(addr("[2001:db8::1]:1000"), addr("[2001:db8::2]:80"), h);
  EXPECT_EQ(n, 16u + 36u);
  EXPECT_EQ(h[13], 0x21);
  EXPECT_EQ(h[15], 36);
  EXPECT_EQ(h[16], 0x20);
  EXPECT_EQ(h[16 + 15], 0x01);
  // Mixed families: IPv4-mapped IPv6.
  n = encodeProxyV2(addr("192.0.2.1:1000"), addr("[2001:db8::2]:80"), h);
  EXPECT_EQ(n, 52u);
  EXPECT_EQ(h[16 + 10], 0xff);
  EXPECT_EQ(h[16 + 11], 0xff);
  EXPECT_EQ(h[16 + 12], 192);
}

}  // namespace
}  // namespace halb::balancer
