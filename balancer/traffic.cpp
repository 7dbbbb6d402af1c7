#include "balancer/traffic.h"

#include "balancer/hash.h"

namespace halb::balancer {

namespace {
constexpr uint64_t kMillion = 1'000'000;
constexpr uint64_t kPinSeed = 0x70696e;  // "pin": fixed, so both nodes agree
}  // namespace

RouteTraffic::RouteTraffic(const config::Route& route) : route_(route) {
  for (const auto& t : route.split) totalWeight_ += t.weight;
  current_.assign(route.split.size(), 0);
}

size_t RouteTraffic::byHash(uint64_t h) const {
  // Multiply-shift maps the hash onto [0, total) without modulo bias.
  uint64_t point = static_cast<uint64_t>((static_cast<unsigned __int128>(h) * totalWeight_) >> 64);
  uint64_t acc = 0;
  for (size_t i = 0; i < route_.split.size(); ++i) {
    acc += route_.split[i].weight;
    if (point < acc) return i;
  }
  return route_.split.size() - 1;
}

size_t RouteTraffic::roundRobin() {
  // Smooth weighted round-robin (nginx): every target gains its weight, the richest is
  // picked and pays the total. Over any `total` consecutive picks each target gets exactly
  // its weight, interleaved rather than in bursts.
  size_t best = 0;
  for (size_t i = 0; i < current_.size(); ++i) {
    current_[i] += route_.split[i].weight;
    if (current_[i] > current_[best]) best = i;
  }
  current_[best] -= static_cast<int64_t>(totalWeight_);
  return best;
}

SplitPick RouteTraffic::pick(const RequestView& request) {
  SplitPick p;
  if (route_.split.empty() || totalWeight_ == 0) {
    p.backend = &route_.backend;
    return p;
  }
  switch (route_.pin.kind) {
    case config::PinKind::Header:
      if (auto v = request.header(route_.pin.name); v && !v->empty()) {
        p.target = byHash(hashString(*v, kPinSeed));
        p.backend = &route_.split[p.target].backend;
        p.pinned = true;
        return p;
      }
      break;
    case config::PinKind::Cookie:
      if (auto v = request.cookie(route_.pin.name)) {
        for (size_t i = 0; i < route_.split.size(); ++i) {
          if (route_.split[i].weight > 0 && route_.split[i].backend == *v) {
            p.target = i;
            p.backend = &route_.split[i].backend;
            p.pinned = true;
            return p;
          }
        }
      }
      p.setPinCookie = true;
      break;
    case config::PinKind::None:
      break;
  }
  p.target = roundRobin();
  p.backend = &route_.split[p.target].backend;
  return p;
}

bool RouteTraffic::sampleMirror() {
  if (!route_.mirror || route_.mirror->perMillion == 0) return false;
  mirrorAcc_ += route_.mirror->perMillion;
  if (mirrorAcc_ < kMillion) return false;
  mirrorAcc_ -= kMillion;
  return true;
}

std::string pinCookieHeader(std::string_view name, std::string_view backend, bool secure) {
  std::string s;
  s.reserve(name.size() + backend.size() + 32);
  s.append(name).append("=").append(backend).append("; Path=/; HttpOnly");
  if (secure) s.append("; Secure");
  return s;
}

}  // namespace halb::balancer
