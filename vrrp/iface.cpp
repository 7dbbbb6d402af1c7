#include "vrrp/iface.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace halb::vrrp {

namespace {

bool ifreqCall(const std::string& name, unsigned long request, ifreq& ifr) {
  if (name.size() >= IFNAMSIZ) return false;
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  std::memset(&ifr, 0, sizeof ifr);
  std::memcpy(ifr.ifr_name, name.c_str(), name.size());
  bool ok = ::ioctl(fd, request, &ifr) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

unsigned interfaceIndex(const std::string& name) {
  return ::if_nametoindex(name.c_str());
}

std::optional<MacAddress> interfaceMac(const std::string& name) {
  ifreq ifr;
  if (!ifreqCall(name, SIOCGIFHWADDR, ifr)) return std::nullopt;
  MacAddress mac;
  std::memcpy(mac.data(), ifr.ifr_hwaddr.sa_data, mac.size());
  return mac;
}

bool interfaceRunning(const std::string& name) {
  ifreq ifr;
  if (!ifreqCall(name, SIOCGIFFLAGS, ifr)) return false;
  return (ifr.ifr_flags & IFF_UP) && (ifr.ifr_flags & IFF_RUNNING);
}

std::optional<IpAddress> interfaceSourceAddress(const std::string& name, IpAddress::Family family,
                                                const std::vector<IpAddress>& exclude) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return std::nullopt;
  std::optional<IpAddress> found;
  for (ifaddrs* i = list; i && !found; i = i->ifa_next) {
    if (!i->ifa_addr || name != i->ifa_name) continue;
    IpAddress a;
    if (family == IpAddress::Family::V4 && i->ifa_addr->sa_family == AF_INET) {
      a = IpAddress::fromIn4(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr);
    } else if (family == IpAddress::Family::V6 && i->ifa_addr->sa_family == AF_INET6) {
      a = IpAddress::fromIn6(reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr);
      if (!a.isLinkLocal()) continue;
    } else {
      continue;
    }
    if (std::find(exclude.begin(), exclude.end(), a) != exclude.end()) continue;
    found = a;
  }
  ::freeifaddrs(list);
  return found;
}

}  // namespace halb::vrrp
