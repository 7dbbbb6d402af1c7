#pragma once
// Facts about a network interface, read from the kernel when needed (not cached: interfaces
// come and go under a running daemon).
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/net.h"

namespace halb::vrrp {

using MacAddress = std::array<uint8_t, 6>;

// 0 when there is no such interface.
unsigned interfaceIndex(const std::string& name);
std::optional<MacAddress> interfaceMac(const std::string& name);
// Administratively up and with carrier (IFF_UP and IFF_RUNNING).
bool interfaceRunning(const std::string& name);
// The advert source for a family: the first IPv4 address of the interface that is not one of
// `exclude` (the VIPs), or its IPv6 link-local address (RFC 9568 §5.1.2.1).
std::optional<IpAddress> interfaceSourceAddress(const std::string& name, IpAddress::Family family,
                                                const std::vector<IpAddress>& exclude);

}  // namespace halb::vrrp
