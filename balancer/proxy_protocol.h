#pragma once
// PROXY protocol version 2 header (haproxy doc/proxy-protocol.txt §2.2): tells a server the
// original client and destination addresses of a proxied TCP connection. Pure encoder.
#include <array>
#include <cstddef>
#include <cstdint>

#include "common/net.h"

namespace halb::balancer {

// Large enough for the IPv6 form (16-byte preamble + 36 bytes of addresses).
using ProxyV2Header = std::array<uint8_t, 52>;

// Encodes a PROXY (not LOCAL) command for TCP from `client` to `destination` (the address the
// client connected to). Mixed families are sent as IPv6 with IPv4-mapped addresses.
// Returns the number of bytes used in `out`.
size_t encodeProxyV2(const SocketAddress& client, const SocketAddress& destination,
                     ProxyV2Header& out);

}  // namespace halb::balancer
