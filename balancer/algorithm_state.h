#pragma once
// What buildAlgorithmState (pool.h) precomputes on the control thread and stores in
// BackendView::algorithmState, shared read-only by every worker's selector. Only
// buildAlgorithmState creates it, so a selector may cast algorithmState back to this type.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "balancer/maglev.h"
#include "balancer/pool.h"
#include "config/config.h"

namespace halb::balancer {

struct AlgorithmState {
  config::Algorithm algorithm = config::Algorithm::RoundRobin;
  size_t serverCount = 0;  // BackendView::servers.size() it was built for
  // maglev
  MaglevTable maglev;
  // p2c, random: the servers that took new users when the snapshot was built, with
  // cumulative weights, so a weighted draw is a binary search instead of a scan.
  std::vector<uint32_t> index;
  std::vector<uint64_t> cumulative;
};

// The backend's state, or nullptr when none was built (or it does not fit the server list).
inline const AlgorithmState* algorithmStateOf(const BackendView& b) {
  const auto* s = static_cast<const AlgorithmState*>(b.algorithmState.get());
  return s && s->serverCount == b.servers.size() ? s : nullptr;
}

inline const MaglevTable* maglevTableOf(const BackendView& b) {
  const AlgorithmState* s = algorithmStateOf(b);
  return s && s->algorithm == config::Algorithm::Maglev ? &s->maglev : nullptr;
}

}  // namespace halb::balancer
