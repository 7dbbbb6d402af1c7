#pragma once
// Traffic shifting on a route, pure: which backend of a split serves a request (with the
// user kept on the side they got), and which requests are mirrored to a shadow backend.
// One RouteTraffic per route and worker (no sharing, no atomics); the data plane calls it
// after the router picked the route.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "balancer/router.h"
#include "config/config.h"

namespace halb::balancer {

struct SplitPick {
  size_t target = 0;                     // index into route.split; 0 without a split
  const std::string* backend = nullptr;  // the backend's name (points into the config)
  // cookie pinning: the response must set route.pin.name = *backend (the request had no
  // valid pin cookie).
  bool setPinCookie = false;
  bool pinned = false;  // the side came from the user's cookie or header
};

class RouteTraffic {
 public:
  // `route` must outlive this object (it lives in the configuration snapshot).
  explicit RouteTraffic(const config::Route& route);

  // The backend for one request.
  //  - no split: route.backend.
  //  - pin header present: the side follows from a hash of the header value alone, so every
  //    worker and both nodes agree without state, and raising the last target's weight only
  //    moves users towards it (the targets occupy consecutive ranges of the hash space).
  //  - pin cookie naming a target with weight > 0: that target (setting a weight to 0 sends
  //    its pinned users back to the others).
  //  - otherwise: smooth weighted round-robin over the targets (exact shares per worker),
  //    and with a cookie pin the response sets the cookie.
  SplitPick pick(const RequestView& request);

  // Whether this request is mirrored: exactly `perMillion` out of every million requests,
  // spread evenly (an accumulator, not a coin: no variance over small counts).
  bool sampleMirror();

  const config::Route& route() const { return route_; }

 private:
  size_t byHash(uint64_t h) const;
  size_t roundRobin();

  const config::Route& route_;
  uint64_t totalWeight_ = 0;
  std::vector<int64_t> current_;  // smooth weighted round-robin state
  uint64_t mirrorAcc_ = 0;
};

// The Set-Cookie value that pins a user: "NAME=backend; Path=/; HttpOnly[; Secure]".
std::string pinCookieHeader(std::string_view name, std::string_view backend, bool secure);

}  // namespace halb::balancer
