// Fuzz target for the VRRP codec, the HMAC trailer check and the state machine's advert path.
// Input: one selector byte (bit 0: IPv6; bit 1: TTL 255, else the byte itself is the TTL),
// then the VRRP message as it would arrive in an IP payload.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "vrrp/auth.h"
#include "vrrp/machine.h"
#include "vrrp/packet.h"

using namespace halb;
using namespace halb::vrrp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t sel = data[0];
  std::span<const uint8_t> payload(data + 1, size - 1);
  const bool v6 = sel & 1;
  PacketContext ctx{
      .source = IpAddress::parse(v6 ? "fe80::2" : "192.0.2.12").value(),
      .destination = multicastGroup(v6 ? IpAddress::Family::V6 : IpAddress::Family::V4),
      .ttl = (sel & 2) ? 255 : sel,
  };
  const uint8_t vrid = payload.size() > 1 ? payload[1] : 1;
  DecodeResult r = decode(payload, ctx, vrid);
  if (!r.ok()) return 0;

  const Decoded& d = r.packet;
  // Invariants of an accepted packet.
  if (d.advert.addresses.empty() || d.advert.intervalCs == 0 || d.messageLength > payload.size() ||
      d.messageLength + d.trailer.size() != payload.size())
    std::abort();
  for (const IpAddress& a : d.advert.addresses)
    if (a.family() != ctx.source.family()) std::abort();

  // Round trip: re-encoding in the form it arrived in must decode to the same advert.
  std::vector<uint8_t> again = encode(d.advert, ctx, d.form, d.trailer);
  DecodeResult r2 = decode(again, ctx, vrid);
  if (!r2.ok() || !(r2.packet.advert == d.advert)) std::abort();

  // Authentication must reject anything not sealed with its key, and never crash.
  static Authenticator auth(std::vector<uint8_t>(32, 0x42));
  if (!auth.verify(payload, d, ctx)) {
    // Only a correctly sealed advert may pass; a fuzzer cannot forge HMAC-SHA256.
    if (d.trailer.size() != kAuthTrailerSize) std::abort();
  }

  // The machine takes any accepted advert in any state without misbehaving.
  MachineConfig mc;
  mc.vrid = vrid;
  mc.primaryAddress = IpAddress::parse(v6 ? "fe80::1" : "192.0.2.11").value();
  Machine m(mc);
  TimePoint t{};
  m.start(t);
  Actions a = m.onAdvert(d.advert, ctx.source, t + std::chrono::milliseconds(1));
  if (!a.nextDeadline) std::abort();
  m.onTimer(*a.nextDeadline);
  m.onAdvert(d.advert, ctx.source, *a.nextDeadline + std::chrono::milliseconds(1));
  m.shutdown(*a.nextDeadline + std::chrono::milliseconds(2));
  return 0;
}
