#include "vrrp/transport.h"

#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "common/uv.h"

namespace halb::vrrp {

namespace {

// DSCP CS6 (network control), as keepalived and routers mark VRRP.
constexpr int kTosNetworkControl = 0xc0;
constexpr size_t kBufferSize = 64 * 1024;  // a whole IP datagram, whatever arrives

std::string sysError(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

template <class T>
bool setOpt(int fd, int level, int name, const T& value) {
  return ::setsockopt(fd, level, name, &value, sizeof value) == 0;
}

}  // namespace

Transport::Transport(Options options, Handler handler)
    : options_(std::move(options)), handler_(std::move(handler)), buffer_(kBufferSize) {}

Transport::~Transport() {
  poll_.reset();
  if (fd_ >= 0) ::close(fd_);
}

std::vector<IpAddress> Transport::destinations() const {
  if (options_.unicast) return options_.peers;
  return {multicastGroup(options_.source.family())};
}

Result<std::unique_ptr<Transport>> Transport::open(uv::Loop& loop, Options options,
                                                   Handler handler) {
  std::unique_ptr<Transport> t(new Transport(std::move(options), std::move(handler)));
  const Options& o = t->options_;
  const bool v4 = o.source.isV4();
  t->ifindex_ = ::if_nametoindex(o.interface.c_str());
  if (t->ifindex_ == 0) return Error{"no interface " + o.interface};
  t->fd_ = ::socket(v4 ? AF_INET : AF_INET6, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, kIpProtocol);
  if (t->fd_ < 0) return Error{sysError("raw socket for protocol 112 (needs CAP_NET_RAW)")};
  int fd = t->fd_;
  // Only packets that arrived on the VRRP interface: a VRID is per interface (§7.1).
  if (::setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, o.interface.c_str(),
                   static_cast<socklen_t>(o.interface.size())) != 0)
    return Error{sysError("SO_BINDTODEVICE")};
  const int ttl = kRequiredTtl, off = 0, on = 1;
  if (v4) {
    ip_mreqn mreq{};
    mreq.imr_multiaddr = multicastGroup(IpAddress::Family::V4).toIn4();
    mreq.imr_ifindex = static_cast<int>(t->ifindex_);
    bool ok = setOpt(fd, IPPROTO_IP, IP_TTL, ttl) &&
              setOpt(fd, IPPROTO_IP, IP_MULTICAST_TTL, ttl) &&
              setOpt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, off) &&
              setOpt(fd, IPPROTO_IP, IP_TOS, kTosNetworkControl) &&
              setOpt(fd, IPPROTO_IP, IP_MULTICAST_IF, mreq);
    if (!ok) return Error{sysError("IPv4 socket options")};
    if (!o.unicast && !setOpt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, mreq))
      return Error{sysError("joining 224.0.0.18")};
  } else {
    int ifindex = static_cast<int>(t->ifindex_);
    ipv6_mreq mreq{};
    mreq.ipv6mr_multiaddr = multicastGroup(IpAddress::Family::V6).toIn6();
    mreq.ipv6mr_interface = t->ifindex_;
    bool ok = setOpt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, ttl) &&
              setOpt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, ttl) &&
              setOpt(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, off) &&
              setOpt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, ifindex) &&
              setOpt(fd, IPPROTO_IPV6, IPV6_TCLASS, kTosNetworkControl) &&
              setOpt(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, on) &&
              setOpt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, on);
    if (!ok) return Error{sysError("IPv6 socket options")};
    if (!o.unicast && !setOpt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, mreq))
      return Error{sysError("joining ff02::12")};
  }
  t->poll_ = std::make_unique<uv::Poll>(loop, fd);
  Transport* self = t.get();
  t->poll_->start(UV_READABLE, [self](int status, int) {
    if (status == 0) self->onReadable();
  });
  return t;
}

bool Transport::sendTo(const IpAddress& dst, std::span<const uint8_t> bytes) {
  sockaddr_storage ss{};
  socklen_t slen = SocketAddress{dst, 0}.toSockaddr(ss);
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_name = &ss;
  msg.msg_namelen = slen;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  // The source address goes in ancillary data: binding the socket to it would also filter
  // what we receive to packets addressed to it, losing the multicast adverts.
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(in6_pktinfo))] = {};
  msg.msg_control = control;
  cmsghdr* c = reinterpret_cast<cmsghdr*>(control);
  if (dst.isV4()) {
    in_pktinfo pi{};
    pi.ipi_ifindex = static_cast<int>(ifindex_);
    pi.ipi_spec_dst = options_.source.toIn4();
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof pi);
    std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
    msg.msg_controllen = CMSG_SPACE(sizeof pi);
  } else {
    in6_pktinfo pi{};
    pi.ipi6_ifindex = ifindex_;
    pi.ipi6_addr = options_.source.toIn6();
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof pi);
    std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
    msg.msg_controllen = CMSG_SPACE(sizeof pi);
  }
  ssize_t n = ::sendmsg(fd_, &msg, MSG_DONTWAIT);
  if (n == static_cast<ssize_t>(bytes.size())) {
    ++counters_.sent;
    return true;
  }
  ++counters_.sendErrors;
  HALB_LOG_EVERY(Warn, "vrrp", std::chrono::seconds(5))
      << "sending advert to " << dst.toString() << " on "
      << options_.interface << " failed: " << std::strerror(errno);
  return false;
}

int Transport::send(const std::function<std::vector<uint8_t>(const PacketContext&)>& build) {
  int failed = 0;
  for (const IpAddress& dst : destinations()) {
    PacketContext ctx{.source = options_.source, .destination = dst, .ttl = kRequiredTtl};
    std::vector<uint8_t> bytes = build(ctx);
    if (!sendTo(dst, bytes)) ++failed;
  }
  return failed;
}

void Transport::onReadable() {
  // Drain what is queued, but bounded: a flood must not monopolise the control loop.
  for (int i = 0; i < 64; ++i) {
    sockaddr_storage from{};
    iovec iov{buffer_.data(), buffer_.size()};
    alignas(cmsghdr) char control[256];
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(fd_, &msg, MSG_DONTWAIT);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        HALB_LOG_EVERY(Warn, "vrrp", std::chrono::seconds(5))
            << "recvmsg: " << std::strerror(errno);
      }
      return;
    }
    if (msg.msg_flags & MSG_TRUNC) {
      ++counters_.malformed;
      continue;
    }
    std::span<const uint8_t> data(buffer_.data(), static_cast<size_t>(n));
    PacketContext ctx;
    std::span<const uint8_t> payload;
    if (options_.source.isV4()) {
      // The IPv4 header comes with the datagram on a raw socket.
      if (data.size() < 20 || (data[0] >> 4) != 4) {
        ++counters_.malformed;
        continue;
      }
      size_t ihl = size_t{data[0] & 0x0Fu} * 4;
      size_t total = size_t{data[2]} << 8 | data[3];
      if (ihl < 20 || total < ihl || total > data.size() || data[9] != kIpProtocol) {
        ++counters_.malformed;
        continue;
      }
      ctx.ttl = data[8];
      ctx.source = IpAddress::fromBytes(data.data() + 12, 4);
      ctx.destination = IpAddress::fromBytes(data.data() + 16, 4);
      payload = data.subspan(ihl, total - ihl);
    } else {
      ctx.ttl = -1;
      ctx.source = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&from)).ip;
      ctx.destination = IpAddress::anyV6();
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != IPPROTO_IPV6) continue;
        if (c->cmsg_type == IPV6_HOPLIMIT && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
          int hl;
          std::memcpy(&hl, CMSG_DATA(c), sizeof hl);
          ctx.ttl = hl;
        } else if (c->cmsg_type == IPV6_PKTINFO && c->cmsg_len >= CMSG_LEN(sizeof(in6_pktinfo))) {
          in6_pktinfo pi;
          std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
          ctx.destination = IpAddress::fromIn6(pi.ipi6_addr);
        }
      }
      payload = data;
    }
    ++counters_.received;
    handler_(payload, ctx);
  }
}

}  // namespace halb::vrrp
