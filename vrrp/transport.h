#pragma once
// Raw IPPROTO_VRRP (112) socket on the control loop (RFC 9568 §5.1). Multicast to 224.0.0.18
// or ff02::12 on one interface, or unicast to configured peers (keepalived's extension for
// networks without multicast). Sends with TTL / hop limit 255 and reports what the IP layer
// saw on receipt (source, destination, TTL / hop limit) so the codec can check it.
//
// IPv4 raw sockets deliver the IP header, so TTL and destination come from it directly (no
// IP_RECVTTL needed). IPv6 raw sockets do not: the hop limit and destination come from
// IPV6_RECVHOPLIMIT and IPV6_RECVPKTINFO ancillary data.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/net.h"
#include "common/result.h"
#include "vrrp/packet.h"

namespace halb::uv {
class Loop;
class Poll;
}  // namespace halb::uv

namespace halb::vrrp {

class Transport {
 public:
  struct Options {
    std::string interface;
    IpAddress source;  // our advert source (its family selects IPv4 or IPv6)
    bool unicast = false;
    std::vector<IpAddress> peers;  // unicast destinations
  };
  struct Counters {
    uint64_t sent = 0;
    uint64_t sendErrors = 0;
    uint64_t received = 0;   // packets handed to the handler
    uint64_t malformed = 0;  // not even a well-formed IP packet of protocol 112
  };
  // Called for each packet from someone else, with the VRRP message and its IP facts.
  using Handler = std::function<void(std::span<const uint8_t> payload, const PacketContext& ctx)>;

  static Result<std::unique_ptr<Transport>> open(uv::Loop& loop, Options options, Handler handler);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Sends one advert to every destination; `build` encodes it for each one (the checksum
  // depends on the destination). Returns the number of destinations that failed.
  int send(const std::function<std::vector<uint8_t>(const PacketContext&)>& build);

  const Counters& counters() const { return counters_; }
  const Options& options() const { return options_; }
  std::vector<IpAddress> destinations() const;

 private:
  Transport(Options options, Handler handler);
  void onReadable();
  bool sendTo(const IpAddress& dst, std::span<const uint8_t> bytes);

  Options options_;
  Handler handler_;
  int fd_ = -1;
  unsigned ifindex_ = 0;
  std::unique_ptr<uv::Poll> poll_;
  Counters counters_;
  std::vector<uint8_t> buffer_;
};

}  // namespace halb::vrrp
