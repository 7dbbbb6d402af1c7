#include "vrrp/announce.h"

#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace halb::vrrp {

namespace {

void put16(std::vector<uint8_t>& v, uint16_t x) {
  v.push_back(static_cast<uint8_t>(x >> 8));
  v.push_back(static_cast<uint8_t>(x & 0xFF));
}

uint16_t inetChecksum(std::span<const uint8_t> data, uint32_t sum) {
  for (size_t i = 0; i + 1 < data.size(); i += 2) sum += (uint32_t{data[i]} << 8) | data[i + 1];
  if (data.size() % 2) sum += uint32_t{data.back()} << 8;
  while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

const IpAddress kAllNodes = IpAddress::parse("ff02::1").value();

}  // namespace

std::vector<uint8_t> buildGratuitousArp(const MacAddress& mac, const IpAddress& vip) {
  std::vector<uint8_t> p;
  p.reserve(28);
  put16(p, 1);       // hardware type: Ethernet
  put16(p, 0x0800);  // protocol type: IPv4
  p.push_back(6);
  p.push_back(4);
  put16(p, 1);  // request (an RFC 5227 announcement)
  p.insert(p.end(), mac.begin(), mac.end());
  p.insert(p.end(), vip.data(), vip.data() + 4);
  p.insert(p.end(), 6, 0);  // target hardware address: unknown
  p.insert(p.end(), vip.data(), vip.data() + 4);
  return p;
}

std::vector<uint8_t> buildUnsolicitedNa(const MacAddress& mac, const IpAddress& vip) {
  constexpr uint16_t kIcmpLen = 32;  // NA (24) + target link-layer address option (8)
  std::vector<uint8_t> p;
  p.reserve(40 + kIcmpLen);
  // IPv6 header
  p.insert(p.end(), {0x60, 0, 0, 0});
  put16(p, kIcmpLen);
  p.push_back(58);   // ICMPv6
  p.push_back(255);  // hop limit (RFC 4861 §7.1.2 requires 255)
  p.insert(p.end(), vip.data(), vip.data() + 16);
  p.insert(p.end(), kAllNodes.data(), kAllNodes.data() + 16);
  // ICMPv6 neighbour advertisement
  size_t icmp = p.size();
  p.insert(p.end(), {136, 0, 0, 0});               // type, code, checksum
  p.insert(p.end(), {0x20, 0, 0, 0});              // flags: Override
  p.insert(p.end(), vip.data(), vip.data() + 16);  // target
  p.insert(p.end(), {2, 1});                       // option: target link-layer address, 8 bytes
  p.insert(p.end(), mac.begin(), mac.end());
  // Checksum over the pseudo-header (src, dst, length, next header) and the ICMPv6 message.
  uint32_t sum = 0;
  for (size_t i = 8; i < 40; i += 2) sum += (uint32_t{p[i]} << 8) | p[i + 1];
  sum += kIcmpLen + 58;
  uint16_t c = inetChecksum({p.data() + icmp, kIcmpLen}, sum);
  p[icmp + 2] = static_cast<uint8_t>(c >> 8);
  p[icmp + 3] = static_cast<uint8_t>(c & 0xFF);
  return p;
}

Result<std::unique_ptr<Announcer>> Announcer::open(const std::string& interface) {
  std::unique_ptr<Announcer> a(new Announcer());
  a->interface_ = interface;
  // Protocol 0: send-only sockets, nothing is queued for reading.
  a->arpFd_ = ::socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  a->ipv6Fd_ = ::socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (a->arpFd_ < 0 || a->ipv6Fd_ < 0)
    return Error{std::string("packet socket (needs CAP_NET_RAW): ") + std::strerror(errno)};
  return a;
}

Announcer::~Announcer() {
  if (arpFd_ >= 0) ::close(arpFd_);
  if (ipv6Fd_ >= 0) ::close(ipv6Fd_);
}

std::string Announcer::announce(const IpAddress& vip) {
  unsigned ifindex = interfaceIndex(interface_);
  std::optional<MacAddress> mac = interfaceMac(interface_);
  if (ifindex == 0 || !mac) {
    ++errors_;
    return "interface " + interface_ + " is gone";
  }
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_ifindex = static_cast<int>(ifindex);
  to.sll_halen = 6;
  std::vector<uint8_t> frame;
  int fd;
  if (vip.isV4()) {
    to.sll_protocol = htons(ETH_P_ARP);
    std::memset(to.sll_addr, 0xFF, 6);
    frame = buildGratuitousArp(*mac, vip);
    fd = arpFd_;
  } else {
    to.sll_protocol = htons(ETH_P_IPV6);
    const uint8_t allNodesMac[6] = {0x33, 0x33, 0, 0, 0, 1};
    std::memcpy(to.sll_addr, allNodesMac, 6);
    frame = buildUnsolicitedNa(*mac, vip);
    fd = ipv6Fd_;
  }
  ssize_t n =
      ::sendto(fd, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  if (n != static_cast<ssize_t>(frame.size())) {
    ++errors_;
    return std::string("announcing ") + vip.toString() + ": " + std::strerror(errno);
  }
  ++sent_;
  return {};
}

}  // namespace halb::vrrp
