#pragma once
// Pure health logic: rise/fall hysteresis of active checks, passive outlier ejection with
// exponential back-off, and the slow-start weight ramp. Events and `now` in, state out; the
// checker (health_checker.h) and the pool manager (pool_manager.h) feed and read them.
//
// Start state (docs/configuration.md, "Health checks"): a server is `Unknown` until its first
// check, and that first result decides at once (one success: up, one failure: down);
// rise/fall hysteresis applies from then on. While Unknown:
//  - at process start, it counts as up: the alternative is a guaranteed 503 for everyone
//    until the first checks return, on a node that may have just become master; a dead
//    server costs a failed connect and a retry on another server meanwhile, and the first
//    check (run within the first 100 ms, spread) takes it out;
//  - when a reload adds it, it counts as down: the rest of the pool is serving, and a server
//    that appears during a rolling deploy is often not ready yet.
// This is HAProxy's default (`init-state up`) for the boot case and Envoy's "a new host must
// pass one check" for hosts added later.
#include <cstdint>
#include <string>

#include "common/time.h"
#include "config/config.h"

namespace halb::balancer {

enum class HealthStatus : uint8_t { Unknown, Up, Down };
const char* toString(HealthStatus s);

// One finished active check.
struct CheckResult {
  bool ok = false;
  std::string detail;  // "connected", "status 503", "connect: connection refused", "timeout"
  Duration latency{};
};

class HealthTracker {
 public:
  HealthTracker(uint32_t rise, uint32_t fall, bool unknownCountsAsUp)
      : rise_(rise ? rise : 1), fall_(fall ? fall : 1), unknownIsUp_(unknownCountsAsUp) {}
  // A tracker for a backend without active checks: always up.
  static HealthTracker alwaysUp() {
    HealthTracker t(1, 1, true);
    t.status_ = HealthStatus::Up;
    return t;
  }

  // Feeds one result; true when status() changed.
  bool onResult(bool ok);
  HealthStatus status() const { return status_; }
  bool up() const {
    return status_ == HealthStatus::Up || (status_ == HealthStatus::Unknown && unknownIsUp_);
  }
  // Consecutive results agreeing with the pending transition (for status pages).
  uint32_t streak() const { return streak_; }
  void setThresholds(uint32_t rise, uint32_t fall) {
    rise_ = rise ? rise : 1;
    fall_ = fall ? fall : 1;
  }

 private:
  uint32_t rise_, fall_;
  bool unknownIsUp_;
  HealthStatus status_ = HealthStatus::Unknown;
  uint32_t streak_ = 0;  // successes while Down, failures while Up
};

// Passive outlier detection for one server: ejected for base x 2^k (capped at max) where k
// counts recent ejections; k returns to 0 after the server has stayed un-ejected for
// max_ejection. An active check success does not end an ejection early: a server failing
// real traffic while answering its health URL is exactly what ejection is for (Envoy learnt
// this the hard way: envoy#28303, #32442).
class OutlierTracker {
 public:
  bool ejected(TimePoint now) const { return now < until_; }
  TimePoint ejectedUntil() const { return until_; }
  // Ejects from `now`; returns the ejection's length.
  Duration eject(TimePoint now, const config::OutlierDetection& cfg);
  uint64_t ejections() const { return total_; }
  uint32_t backoffLevel() const { return level_; }

 private:
  TimePoint until_{};
  uint32_t level_ = 0;  // k
  uint64_t total_ = 0;
};

// How many servers of a backend of `servers` may be ejected at once: max_ejected_percent of
// them, rounded down, but at least one when the percentage is not 0 and there are two or
// more servers (ejecting the only server turns its errors into 503s and helps nobody).
uint32_t maxEjected(size_t servers, uint32_t percent);

// The slow-start weight: ramps linearly from 1 to `weight` over `slowStart` after `since`
// (when the server came back). Outside a ramp: `weight`.
uint32_t slowStartWeight(uint32_t weight, TimePoint since, TimePoint now, Duration slowStart);

}  // namespace halb::balancer
