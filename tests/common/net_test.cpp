#include "common/net.h"

#include <gtest/gtest.h>

namespace halb {
namespace {

TEST(IpAddress, ParsesAndFormatsBothFamilies) {
  auto v4 = IpAddress::parse("192.0.2.10");
  ASSERT_TRUE(v4);
  EXPECT_TRUE(v4->isV4());
  EXPECT_EQ(v4->toString(), "192.0.2.10");
  EXPECT_EQ(v4->v4HostOrder(), 0xC000020Au);
  auto v6 = IpAddress::parse("2001:db8::1");
  ASSERT_TRUE(v6);
  EXPECT_TRUE(v6->isV6());
  EXPECT_EQ(v6->toString(), "2001:db8::1");
  EXPECT_NE(*v4, *v6);
}

TEST(IpAddress, RejectsNonAddresses) {
  for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "example.com", "::g", "1.2.3.4 "})
    EXPECT_FALSE(IpAddress::parse(bad)) << bad;
}

TEST(IpAddress, Classifies) {
  EXPECT_TRUE(IpAddress::parse("127.0.0.5")->isLoopback());
  EXPECT_TRUE(IpAddress::parse("::1")->isLoopback());
  EXPECT_TRUE(IpAddress::parse("224.0.0.18")->isMulticast());
  EXPECT_TRUE(IpAddress::parse("ff02::12")->isMulticast());
  EXPECT_TRUE(IpAddress::parse("fe80::1")->isLinkLocal());
  EXPECT_TRUE(IpAddress::parse("0.0.0.0")->isUnspecified());
  EXPECT_FALSE(IpAddress::parse("10.0.0.1")->isUnspecified());
}

TEST(SocketAddress, ParsesForms) {
  auto a = SocketAddress::parse("10.0.0.1:80");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->port, 80);
  EXPECT_EQ(a->toString(), "10.0.0.1:80");
  auto b = SocketAddress::parse("[2001:db8::5]:443");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->toString(), "[2001:db8::5]:443");
  auto c = SocketAddress::parse("*:8080");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->ip.isUnspecified());
  EXPECT_EQ(c->port, 8080);
  EXPECT_TRUE(SocketAddress::parse(":9"));
}

TEST(SocketAddress, RejectsBadForms) {
  EXPECT_FALSE(SocketAddress::parse("10.0.0.1"));
  EXPECT_FALSE(SocketAddress::parse("10.0.0.1:"));
  EXPECT_FALSE(SocketAddress::parse("10.0.0.1:65536"));
  EXPECT_FALSE(SocketAddress::parse("10.0.0.1:8x"));
  EXPECT_FALSE(SocketAddress::parse("2001:db8::1:80"));  // needs brackets
  EXPECT_FALSE(SocketAddress::parse("[2001:db8::1]"));
  auto e = SocketAddress::parse("2001:db8::1:80");
  EXPECT_NE(e.error().find("brackets"), std::string::npos);
}

TEST(SocketAddress, SockaddrRoundTrip) {
  for (const char* s : {"10.1.2.3:1234", "[::1]:9", "[fe80::1:2]:65535"}) {
    auto a = SocketAddress::parse(s);
    ASSERT_TRUE(a);
    sockaddr_storage ss;
    a->toSockaddr(ss);
    EXPECT_EQ(SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss)), *a) << s;
  }
}

TEST(SocketAddress, MappedV6BecomesV4) {
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(80);
  in6.sin6_addr = IpAddress::parse("10.0.0.7")->toIn6();
  EXPECT_EQ(SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&in6)).toString(), "10.0.0.7:80");
}

TEST(Prefix, ParsesAndContains) {
  auto p = Prefix::parse("10.0.0.100/24");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->length, 24);
  EXPECT_TRUE(p->contains(*IpAddress::parse("10.0.0.7")));
  EXPECT_FALSE(p->contains(*IpAddress::parse("10.0.1.7")));
  EXPECT_EQ(Prefix::parse("10.0.0.1")->length, 32);
  EXPECT_EQ(Prefix::parse("2001:db8::1")->length, 128);
  auto p6 = Prefix::parse("2001:db8::/33");
  ASSERT_TRUE(p6);
  EXPECT_TRUE(p6->contains(*IpAddress::parse("2001:db8:7fff::1")));
  EXPECT_FALSE(p6->contains(*IpAddress::parse("2001:db8:8000::1")));
  EXPECT_FALSE(Prefix::parse("10.0.0.1/33"));
  EXPECT_FALSE(Prefix::parse("10.0.0.1/"));
}

}  // namespace
}  // namespace halb
