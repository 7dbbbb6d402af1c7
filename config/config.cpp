#include "config/config.h"

#include <sstream>

#include "common/units.h"
#include "config/loader.h"

namespace halb::config {

const char* toString(Mode m) { return m == Mode::Tcp ? "tcp" : "http"; }

const char* toString(Algorithm a) {
  switch (a) {
    case Algorithm::RoundRobin: return "round_robin";
    case Algorithm::WeightedRoundRobin: return "weighted_round_robin";
    case Algorithm::LeastConn: return "least_conn";
    case Algorithm::P2C: return "p2c";
    case Algorithm::Random: return "random";
    case Algorithm::SourceHash: return "source_hash";
    case Algorithm::Maglev: return "maglev";
  }
  return "?";
}

const char* toString(HealthType t) {
  switch (t) {
    case HealthType::None: return "none";
    case HealthType::Tcp: return "tcp";
    case HealthType::Http: return "http";
  }
  return "?";
}

const char* toString(StickyMode m) {
  switch (m) {
    case StickyMode::None: return "none";
    case StickyMode::Cookie: return "cookie";
    case StickyMode::Source: return "source";
    case StickyMode::AppCookie: return "app_cookie";
    case StickyMode::Header: return "header";
  }
  return "?";
}

const char* toString(VrrpAuth a) { return a == VrrpAuth::Hmac ? "hmac" : "none"; }
const char* toString(ProxyProtocol p) { return p == ProxyProtocol::V2 ? "v2" : "none"; }

std::string describe(const Config& c) {
  std::ostringstream o;
  auto d = [](Duration x) { return formatDuration(x); };
  o << "node: " << c.self.name;
  if (c.self.address) o << " (" << c.self.address->toString() << ")";
  o << "\n";
  for (const auto& p : c.peers)
    o << "peer: " << p.name << (p.address ? " (" + p.address->toString() + ")" : std::string()) << "\n";
  o << "workers: " << (c.workers == 0 ? std::string("auto") : std::to_string(c.workers)) << "\n";
  o << "vips:";
  if (c.vips.empty()) o << " none";
  o << "\n";
  for (const auto& v : c.vips) o << "  - " << v.address.toString() << " dev " << v.interface << "\n";
  const Vrrp& v = c.vrrp;
  if (v.enabled) {
    o << "vrrp: interface " << v.interface << ", vrid " << v.virtualRouterId << ", priority " << v.priority
      << ", advert_interval " << d(v.advertInterval) << ", preempt " << (v.preempt ? "on" : "off");
    if (v.preempt && v.preemptDelay.count()) o << " after " << d(v.preemptDelay);
    o << ", " << (v.unicast ? "unicast" : "multicast");
    for (const auto& p : v.unicastPeers) o << " " << p.toString();
    if (v.sourceAddress) o << ", source " << v.sourceAddress->toString();
    o << ", auth " << toString(v.auth) << ", vip_lifetime " << d(v.vipLifetime) << ", handover_hold "
      << d(v.handoverHold) << "\n";
  } else {
    o << "vrrp: off (standalone node: always serves, manages no VIP)\n";
  }
  if (c.statesync.enabled)
    o << "statesync: listen " << c.statesync.listen.toString() << ", peer "
      << (c.statesync.peer ? c.statesync.peer->toString() : std::string("-")) << "\n";
  else
    o << "statesync: off\n";
  o << "admin: " << c.admin.listen.toString() << "\n";
  o << "logging: " << log::toString(c.logging.level) << ", " << log::toString(c.logging.format) << "\n";
  o << "frontends:\n";
  for (const auto& f : c.frontends) {
    o << "  " << f.name << ": " << toString(f.mode) << (f.tls ? "+tls" : "") << " on";
    for (const auto& b : f.bind) o << " " << b.toString();
    if (!f.defaultBackend.empty()) o << " -> " << f.defaultBackend;
    if (f.continuity) o << " (continuity)";
    o << "\n";
    for (const auto& r : f.routes) o << "    route " << r.name << " -> " << r.backend << "\n";
  }
  o << "backends:\n";
  for (const auto& b : c.backends) {
    o << "  " << b.name << ": " << toString(b.algorithm) << ", health " << toString(b.health.type);
    if (b.health.type != HealthType::None)
      o << " every " << d(b.health.interval) << " rise " << b.health.rise << " fall " << b.health.fall;
    if (b.sticky.mode != StickyMode::None) o << ", sticky " << toString(b.sticky.mode);
    o << "\n";
    for (const auto& s : b.servers)
      o << "    " << s.name << " " << s.address.toString() << " weight " << s.weight << "\n";
  }
  return o.str();
}

}  // namespace halb::config
