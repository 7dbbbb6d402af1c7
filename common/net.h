#pragma once
// IP addresses, socket addresses and prefixes as plain values: parsed once (config, wire),
// compared and hashed cheaply, converted to sockaddr only at the socket boundary.
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace halb {

class IpAddress {
 public:
  enum class Family : uint8_t { V4 = 4, V6 = 6 };

  IpAddress() = default;  // 0.0.0.0
  static IpAddress fromV4(uint32_t hostOrder);
  static IpAddress fromIn4(const in_addr& a);
  static IpAddress fromIn6(const in6_addr& a);
  // IPv4 from 4 bytes or IPv6 from 16, in network order.
  static IpAddress fromBytes(const uint8_t* data, size_t len);
  static IpAddress anyV4() { return IpAddress(); }
  static IpAddress anyV6() { return fromBytes(std::array<uint8_t, 16>{}.data(), 16); }
  static Result<IpAddress> parse(std::string_view text);

  Family family() const { return family_; }
  bool isV4() const { return family_ == Family::V4; }
  bool isV6() const { return family_ == Family::V6; }
  int af() const { return isV4() ? AF_INET : AF_INET6; }
  const uint8_t* data() const { return bytes_.data(); }
  size_t size() const { return isV4() ? 4 : 16; }
  uint32_t v4HostOrder() const;
  in_addr toIn4() const;
  in6_addr toIn6() const;

  bool isUnspecified() const;
  bool isLoopback() const;
  bool isMulticast() const;
  bool isLinkLocal() const;

  std::string toString() const;
  size_t hash() const;

  auto operator<=>(const IpAddress&) const = default;
  bool operator==(const IpAddress&) const = default;

 private:
  std::array<uint8_t, 16> bytes_{};  // IPv4 uses the first 4 bytes
  Family family_ = Family::V4;
};

struct SocketAddress {
  IpAddress ip;
  uint16_t port = 0;

  // "192.0.2.1:80", "[2001:db8::1]:443", "*:80" or ":80" (all IPv4 addresses).
  static Result<SocketAddress> parse(std::string_view text);
  static SocketAddress fromSockaddr(const sockaddr* sa);
  // Fills `out`, returns the length to pass to bind/connect.
  socklen_t toSockaddr(sockaddr_storage& out) const;
  std::string toString() const;
  size_t hash() const { return ip.hash() * 31 + port; }

  auto operator<=>(const SocketAddress&) const = default;
  bool operator==(const SocketAddress&) const = default;
};

struct Prefix {
  IpAddress address;
  uint8_t length = 32;

  // "10.0.0.100/24"; without "/len" a host prefix (/32 or /128).
  static Result<Prefix> parse(std::string_view text);
  bool contains(const IpAddress& a) const;
  std::string toString() const;
  bool operator==(const Prefix&) const = default;
};

}  // namespace halb

template <>
struct std::hash<halb::IpAddress> {
  size_t operator()(const halb::IpAddress& a) const noexcept { return a.hash(); }
};
template <>
struct std::hash<halb::SocketAddress> {
  size_t operator()(const halb::SocketAddress& a) const noexcept { return a.hash(); }
};
