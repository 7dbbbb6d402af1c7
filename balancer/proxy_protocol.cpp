#include "balancer/proxy_protocol.h"

#include <cstring>

namespace halb::balancer {

namespace {

constexpr uint8_t kSignature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr uint8_t kVersion2Proxy = 0x21;  // version 2, command PROXY
constexpr uint8_t kTcp4 = 0x11;           // AF_INET, STREAM
constexpr uint8_t kTcp6 = 0x21;           // AF_INET6, STREAM

void putV6(const IpAddress& a, uint8_t* out) {
  if (a.isV6()) {
    std::memcpy(out, a.data(), 16);
    return;
  }
  std::memset(out, 0, 10);  // ::ffff:a.b.c.d
  out[10] = out[11] = 0xff;
  std::memcpy(out + 12, a.data(), 4);
}

}  // namespace

size_t encodeProxyV2(const SocketAddress& client, const SocketAddress& destination,
                     ProxyV2Header& out) {
  std::memcpy(out.data(), kSignature, sizeof kSignature);
  out[12] = kVersion2Proxy;
  const bool v4 = client.ip.isV4() && destination.ip.isV4();
  out[13] = v4 ? kTcp4 : kTcp6;
  const uint16_t addrLen = v4 ? 12 : 36;
  out[14] = static_cast<uint8_t>(addrLen >> 8);
  out[15] = static_cast<uint8_t>(addrLen & 0xff);
  uint8_t* p = out.data() + 16;
  if (v4) {
    std::memcpy(p, client.ip.data(), 4);
    std::memcpy(p + 4, destination.ip.data(), 4);
    p += 8;
  } else {
    putV6(client.ip, p);
    putV6(destination.ip, p + 16);
    p += 32;
  }
  p[0] = static_cast<uint8_t>(client.port >> 8);
  p[1] = static_cast<uint8_t>(client.port & 0xff);
  p[2] = static_cast<uint8_t>(destination.port >> 8);
  p[3] = static_cast<uint8_t>(destination.port & 0xff);
  return 16u + addrLen;
}

}  // namespace halb::balancer
