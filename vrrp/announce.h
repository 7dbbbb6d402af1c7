#pragma once
// Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6) for the VIPs, sent on
// an AF_PACKET socket so they leave with the interface's MAC whatever the routing says.
//
// ARP: an announcement in RFC 5227 §2.3 form (request, sender = target = VIP) to the
// broadcast MAC; Linux neighbours with arp_accept=0 update an existing entry from it, which is
// what a failover needs. NA: RFC 4861 §7.2.6, to ff02::1 with the Override flag and the
// target link-layer address option, hop limit 255, source = the VIP.
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/net.h"
#include "common/result.h"
#include "vrrp/iface.h"

namespace halb::vrrp {

// The frames themselves, pure, for tests and the fuzzer's benefit.
std::vector<uint8_t> buildGratuitousArp(const MacAddress& mac, const IpAddress& vip);
std::vector<uint8_t> buildUnsolicitedNa(const MacAddress& mac,
                                        const IpAddress& vip);  // IPv6 + ICMPv6

class Announcer {
 public:
  static Result<std::unique_ptr<Announcer>> open(const std::string& interface);
  ~Announcer();
  Announcer(const Announcer&) = delete;
  Announcer& operator=(const Announcer&) = delete;

  // One announcement for the VIP; empty string on success. Re-reads the MAC each time (a
  // bond or a VM migration may change it).
  std::string announce(const IpAddress& vip);
  uint64_t sent() const { return sent_; }
  uint64_t errors() const { return errors_; }

 private:
  Announcer() = default;
  std::string interface_;
  int arpFd_ = -1;
  int ipv6Fd_ = -1;
  uint64_t sent_ = 0, errors_ = 0;
};

}  // namespace halb::vrrp
