#include "common/net.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace halb {

IpAddress IpAddress::fromV4(uint32_t hostOrder) {
  IpAddress a;
  a.bytes_[0] = static_cast<uint8_t>(hostOrder >> 24);
  a.bytes_[1] = static_cast<uint8_t>(hostOrder >> 16);
  a.bytes_[2] = static_cast<uint8_t>(hostOrder >> 8);
  a.bytes_[3] = static_cast<uint8_t>(hostOrder);
  return a;
}

IpAddress IpAddress::fromIn4(const in_addr& in) {
  return fromBytes(reinterpret_cast<const uint8_t*>(&in.s_addr), 4);
}

IpAddress IpAddress::fromIn6(const in6_addr& in) { return fromBytes(in.s6_addr, 16); }

IpAddress IpAddress::fromBytes(const uint8_t* data, size_t len) {
  IpAddress a;
  if (len == 16) {
    a.family_ = Family::V6;
    std::memcpy(a.bytes_.data(), data, 16);
  } else {
    std::memcpy(a.bytes_.data(), data, 4);
  }
  return a;
}

Result<IpAddress> IpAddress::parse(std::string_view text) {
  if (text.empty() || text.size() > INET6_ADDRSTRLEN) return Error{"not an IP address"};
  char buf[INET6_ADDRSTRLEN + 1];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  in_addr a4{};
  if (inet_pton(AF_INET, buf, &a4) == 1) return fromIn4(a4);
  in6_addr a6{};
  if (inet_pton(AF_INET6, buf, &a6) == 1) return fromIn6(a6);
  return Error{"'" + std::string(text) + "' is not an IPv4 or IPv6 address"};
}

uint32_t IpAddress::v4HostOrder() const {
  return (uint32_t{bytes_[0]} << 24) | (uint32_t{bytes_[1]} << 16) | (uint32_t{bytes_[2]} << 8) |
         bytes_[3];
}

in_addr IpAddress::toIn4() const {
  in_addr a{};
  std::memcpy(&a.s_addr, bytes_.data(), 4);
  return a;
}

in6_addr IpAddress::toIn6() const {
  in6_addr a{};
  if (isV6()) {
    std::memcpy(a.s6_addr, bytes_.data(), 16);
  } else {  // IPv4-mapped, for dual-stack sockets
    a.s6_addr[10] = a.s6_addr[11] = 0xff;
    std::memcpy(a.s6_addr + 12, bytes_.data(), 4);
  }
  return a;
}

bool IpAddress::isUnspecified() const {
  for (size_t i = 0; i < size(); ++i)
    if (bytes_[i] != 0) return false;
  return true;
}

bool IpAddress::isLoopback() const {
  if (isV4()) return bytes_[0] == 127;
  for (size_t i = 0; i < 15; ++i)
    if (bytes_[i] != 0) return false;
  return bytes_[15] == 1;
}

bool IpAddress::isMulticast() const {
  return isV4() ? (bytes_[0] & 0xf0) == 0xe0 : bytes_[0] == 0xff;
}

bool IpAddress::isLinkLocal() const {
  return isV4() ? (bytes_[0] == 169 && bytes_[1] == 254)
                : (bytes_[0] == 0xfe && (bytes_[1] & 0xc0) == 0x80);
}

std::string IpAddress::toString() const {
  char buf[INET6_ADDRSTRLEN];
  if (isV4()) {
    in_addr a = toIn4();
    inet_ntop(AF_INET, &a, buf, sizeof buf);
  } else {
    in6_addr a = toIn6();
    inet_ntop(AF_INET6, &a, buf, sizeof buf);
  }
  return buf;
}

size_t IpAddress::hash() const {
  // FNV-1a: stable across runs and processes, so it can also seed source hashing.
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < size(); ++i) {
    h ^= bytes_[i];
    h *= 1099511628211ULL;
  }
  return static_cast<size_t>(h);
}

static Result<uint16_t> parsePort(std::string_view s) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v > 65535)
    return Error{"invalid port '" + std::string(s) + "' (must be 0..65535)"};
  return static_cast<uint16_t>(v);
}

Result<SocketAddress> SocketAddress::parse(std::string_view text) {
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return Error{"expected '[ipv6]:port', got '" + std::string(text) + "'"};
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return Error{"expected 'address:port', got '" + std::string(text) + "'"};
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return Error{"IPv6 addresses need brackets: '[" + std::string(host) + "]:" +
                   std::string(port) + "'"};
  }
  auto p = parsePort(port);
  if (!p) return Error{p.error()};
  SocketAddress out;
  out.port = *p;
  if (host.empty() || host == "*") return out;
  auto ip = IpAddress::parse(host);
  if (!ip) return Error{ip.error()};
  out.ip = *ip;
  return out;
}

SocketAddress SocketAddress::fromSockaddr(const sockaddr* sa) {
  SocketAddress out;
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    out.ip = IpAddress::fromIn4(in->sin_addr);
    out.port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    const uint8_t* b = in6->sin6_addr.s6_addr;
    static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    out.ip = std::memcmp(b, kMapped, 12) == 0 ? IpAddress::fromBytes(b + 12, 4)
                                              : IpAddress::fromIn6(in6->sin6_addr);
    out.port = ntohs(in6->sin6_port);
  }
  return out;
}

socklen_t SocketAddress::toSockaddr(sockaddr_storage& out) const {
  std::memset(&out, 0, sizeof out);
  if (ip.isV4()) {
    auto* in = reinterpret_cast<sockaddr_in*>(&out);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    in->sin_addr = ip.toIn4();
    return sizeof(sockaddr_in);
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(port);
  in6->sin6_addr = ip.toIn6();
  return sizeof(sockaddr_in6);
}

std::string SocketAddress::toString() const {
  if (ip.isV6()) return "[" + ip.toString() + "]:" + std::to_string(port);
  return ip.toString() + ":" + std::to_string(port);
}

Result<Prefix> Prefix::parse(std::string_view text) {
  auto slash = text.find('/');
  auto ip = IpAddress::parse(text.substr(0, slash));
  if (!ip) return Error{ip.error()};
  Prefix p{*ip, static_cast<uint8_t>(ip->isV4() ? 32 : 128)};
  if (slash != std::string_view::npos) {
    std::string_view len = text.substr(slash + 1);
    unsigned v = 0;
    auto [end, ec] = std::from_chars(len.data(), len.data() + len.size(), v);
    unsigned max = ip->isV4() ? 32 : 128;
    if (len.empty() || ec != std::errc() || end != len.data() + len.size() || v > max)
      return Error{"invalid prefix length '/" + std::string(len) + "' (must be 0.." +
                   std::to_string(max) + ")"};
    p.length = static_cast<uint8_t>(v);
  }
  return p;
}

bool Prefix::contains(const IpAddress& a) const {
  if (a.family() != address.family()) return false;
  unsigned full = length / 8, rest = length % 8;
  if (std::memcmp(a.data(), address.data(), full) != 0) return false;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a.data()[full] & mask) == (address.data()[full] & mask);
}

std::string Prefix::toString() const {
  return address.toString() + "/" + std::to_string(length);
}

}  // namespace halb
