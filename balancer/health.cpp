#include "balancer/health.h"

#include <algorithm>

namespace halb::balancer {

const char* toString(HealthStatus s) {
  switch (s) {
    case HealthStatus::Unknown:
      return "unknown";
    case HealthStatus::Up:
      return "up";
    case HealthStatus::Down:
      return "down";
  }
  return "?";
}

bool HealthTracker::onResult(bool ok) {
  switch (status_) {
    case HealthStatus::Unknown:
      status_ = ok ? HealthStatus::Up : HealthStatus::Down;
      streak_ = 0;
      return true;
    case HealthStatus::Up:
      if (ok) {
        streak_ = 0;
        return false;
      }
      if (++streak_ < fall_) return false;
      status_ = HealthStatus::Down;
      streak_ = 0;
      return true;
    case HealthStatus::Down:
      if (!ok) {
        streak_ = 0;
        return false;
      }
      if (++streak_ < rise_) return false;
      status_ = HealthStatus::Up;
      streak_ = 0;
      return true;
  }
  return false;
}

Duration OutlierTracker::eject(TimePoint now, const config::OutlierDetection& cfg) {
  // Back-off decays: a server that stayed in for max_ejection since its last ejection ended
  // starts again from base_ejection.
  if (total_ > 0 && now - until_ >= cfg.maxEjection) level_ = 0;
  Duration d = cfg.baseEjection;
  for (uint32_t i = 0; i < level_ && d < cfg.maxEjection; ++i) d *= 2;
  d = std::min(d, cfg.maxEjection);
  until_ = now + d;
  if (d < cfg.maxEjection) ++level_;
  ++total_;
  return d;
}

uint32_t maxEjected(size_t servers, uint32_t percent) {
  if (percent == 0 || servers == 0) return 0;
  uint64_t n = servers * uint64_t{std::min<uint32_t>(percent, 100)} / 100;
  if (n == 0 && servers >= 2) n = 1;
  return static_cast<uint32_t>(n);
}

uint32_t slowStartWeight(uint32_t weight, TimePoint since, TimePoint now, Duration slowStart) {
  if (weight == 0 || slowStart <= Duration::zero() || now >= since + slowStart) return weight;
  if (now <= since) return 1;
  // Rounded up so the ramp reaches `weight` exactly at its end and never drops to 0
  // (which would mean "drain").
  auto elapsed = (now - since).count();
  uint64_t w = (uint64_t{weight} * static_cast<uint64_t>(elapsed) +
                static_cast<uint64_t>(slowStart.count()) - 1) /
               static_cast<uint64_t>(slowStart.count());
  return static_cast<uint32_t>(std::clamp<uint64_t>(w, 1, weight));
}

}  // namespace halb::balancer
